//! Options of one run.

use crate::container::Container;
use crate::execution::ExecutionId;

/// Options of one run: its id, an exclusive key, services for this run only.
///
/// ```
/// use workflows_runtime::prelude::*;
///
/// #[step]
/// async fn capture_cart(cart: String) -> Result<String, StepError> {
///     Ok(format!("captured {cart}"))
/// }
///
/// #[workflow]
/// async fn checkout_cart(wf: &Workflow, cart: String) -> Result<String, WorkflowError> {
///     Ok(capture_cart(wf, cart).await?)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().memory().start().await?;
/// // A caller-chosen id (a second start returns the first one's result), and at most one
/// // running execution per cart.
/// let options = RunOptions::new().id("checkout-cart-123").exclusive_key("cart:123");
/// assert_eq!(checkout_cart::run_with(&engine, "cart-123".into(), options).await?, "captured cart-123");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub(crate) id: Option<ExecutionId>,
    pub(crate) container: Option<Container>,
    pub(crate) exclusive_key: Option<String>,
    pub(crate) fail_if_held: bool,
    pub(crate) queue: Option<String>,
    pub(crate) rerun_of: Option<ExecutionId>,
    /// For a child workflow: its parent execution and the parent's key for it.
    pub(crate) parent: Option<(ExecutionId, String)>,
}

impl RunOptions {
    /// Default options: a new UUIDv7 id, the engine's container, no exclusive key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs under this execution id. If an execution with this id exists, no new one starts:
    /// the run returns that execution's result (waiting for it if it is still running), or a
    /// [`RunError::Conflict`](crate::RunError::Conflict) if it is another workflow or had a
    /// different input. Starting the same id from many places at once creates one execution.
    pub fn id(mut self, id: impl Into<ExecutionId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Services for this run only, consulted before the engine's container. They are not
    /// stored: if the execution resumes in another process, only the engine's container is there.
    pub fn container(mut self, container: Container) -> Self {
        self.container = Some(container);
        self
    }

    /// At most one execution holding `key` runs at any time, across every process sharing the
    /// store: an execution started while another holds the key waits (`pending`), in start
    /// order, until the key is free. Use it for work that must not overlap, such as capturing
    /// the payment of one cart: `exclusive_key(format!("cart:{id}"))`.
    pub fn exclusive_key(mut self, key: impl Into<String>) -> Self {
        self.exclusive_key = Some(key.into());
        self
    }

    /// With an [`exclusive_key`](Self::exclusive_key): fail at once with
    /// [`RunError::KeyHeld`](crate::RunError::KeyHeld) instead of waiting when the key is held.
    pub fn fail_if_key_held(mut self) -> Self {
        self.fail_if_held = true;
        self
    }

    /// Starts the execution on a queue the engine defines ([`EngineBuilder::queue`](crate::EngineBuilder::queue)):
    /// it is stored `queued` and starts when the queue's limits allow, oldest first, on
    /// whichever worker sharing the store admits it (this engine, if it is a worker). The
    /// caller's `run` or handle waits for its result as for any other execution.
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = Some(name.into());
        self
    }

    pub(crate) fn rerun_of(mut self, id: ExecutionId) -> Self {
        self.rerun_of = Some(id);
        self
    }

    pub(crate) fn parent(mut self, parent: ExecutionId, key: String) -> Self {
        self.parent = Some((parent, key));
        self
    }
}
