//! Step doubles (the `testing` feature): a step's body, or its compensation, replaced in one
//! engine by a closure, journaled like the real step. The public face is
//! [`crate::testing::Double`]; the engine looks doubles up by step type here.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::StepError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::step::{Outcome, Step, StepCall, StepFn, StepResponse};
use crate::workflow::Workflow;

/// A `#[step]` function, seen through the type of its call: `Args` are its arguments after
/// the workflow, as a tuple. Implemented for every step function; what [`Double::of`] takes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[step]` function taking `{Args}`",
    label = "a double replaces a `#[step]` function: pass the function itself, e.g. `Double::of(charge_card, ..)`"
)]
pub trait StepFunction<Args> {
    /// The step.
    type Step: 'static;
    /// The step's output.
    type Output;
    /// The input of the step's compensation.
    type Compensation;
}

/// A double's body for a step taking `Args`: a closure of the step's arguments (after the
/// workflow) returning `Result<R, StepError>`.
#[diagnostic::on_unimplemented(
    message = "this double does not fit the step: it must take the step's arguments `{Args}` and return `Result<{Output}, StepError>`",
    label = "a double takes the same arguments as the step (without the workflow) and returns what its body would"
)]
pub trait DoubleFn<Args, Output>: Send + Sync + 'static {
    /// Runs the double.
    fn call(&self, args: Args) -> Result<Output, StepError>;
}

macro_rules! arities {
    ($(($($arg:ident),*)),* $(,)?) => {$(
        impl<F, Fut, $($arg,)*> StepFunction<($($arg,)*)> for F
        where
            F: Fn(&'static Workflow, $($arg),*) -> Fut,
            Fut: StepCall<Input = ($($arg,)*)>,
        {
            type Step = Fut::Step;
            type Output = Fut::Output;
            type Compensation = Fut::Compensation;
        }

        impl<F, Output, $($arg,)*> DoubleFn<($($arg,)*), Output> for F
        where
            F: Fn($($arg),*) -> Result<Output, StepError> + Send + Sync + 'static,
        {
            #[allow(non_snake_case)]
            fn call(&self, ($($arg,)*): ($($arg,)*)) -> Result<Output, StepError> {
                self($($arg),*)
            }
        }
    )*};
}

arities!((), (A1), (A1, A2), (A1, A2, A3), (A1, A2, A3, A4), (A1, A2, A3, A4, A5), (A1, A2, A3, A4, A5, A6));

/// What a double returns: the step's output (its compensation then gets the output, as the real
/// step's would by default), or a whole [`StepResponse`] for a step whose compensation takes
/// another type.
#[diagnostic::on_unimplemented(
    message = "this double returns `{Self}`, but the step's output is `{T}`",
    label = "a double returns what the step's body would: `Ok` of a `{T}` (or of a `StepResponse<{T}, {C}>`)"
)]
pub trait DoubleOutput<T, C> {
    #[doc(hidden)]
    fn into_outcome(self) -> Outcome<T, C>;
}

impl<T> DoubleOutput<T, T> for T {
    fn into_outcome(self) -> Outcome<T, T> {
        Outcome::Done(StepResponse::new(self))
    }
}

impl<T, C> DoubleOutput<T, C> for StepResponse<T, C> {
    fn into_outcome(self) -> Outcome<T, C> {
        Outcome::Done(self)
    }
}

/// One call of a double: the step's arguments, and which attempt it was.
#[derive(Clone, Debug, PartialEq)]
pub struct DoubleCall<Args> {
    /// The step's arguments (after the workflow), as a tuple.
    pub input: Args,
    /// The attempt (1 for the first).
    pub attempt: u32,
}

type Body<I, O, C> = dyn Fn(I) -> Result<Outcome<O, C>, StepError> + Send + Sync;
type CompensationBody<C> = dyn Fn(C) -> Result<(), StepError> + Send + Sync;

/// A step replaced by a closure in one test engine (see [`crate::testing`]).
///
/// Made with [`Double::of`] from the `#[step]` function itself, so the compiler checks the
/// closure against the step's arguments and output; given to the engine with
/// [`EngineBuilder::double`](crate::EngineBuilder::double). The engine runs it instead of the
/// step's body, with the step's retries, timeout and journaling: its output is journaled as the
/// step's, replayed after a restart, and handed to the step's compensation (or to the doubled
/// compensation, [`compensate_with`](Double::compensate_with)). Each call is recorded for the
/// test's assertions ([`calls`](Double::calls)); the attempt's `step_started` event says
/// `double: true` (so does `workflows run`'s timeline), and its tracing span `double = true`.
/// Clones share the record of calls.
pub struct Double<I, O, C> {
    step: TypeId,
    state: Arc<DoubleState<I, O, C>>,
}

struct DoubleState<I, O, C> {
    step_name: &'static str,
    body: Box<Body<I, O, C>>,
    compensation: Mutex<Option<Arc<CompensationBody<C>>>>,
    calls: Mutex<Vec<DoubleCall<serde_json::Value>>>,
    compensations: Mutex<Vec<serde_json::Value>>,
}

impl<I, O, C> Clone for Double<I, O, C> {
    fn clone(&self) -> Self {
        Self { step: self.step, state: self.state.clone() }
    }
}

impl<I, O, C> std::fmt::Debug for Double<I, O, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Double")
            .field("step", &self.state.step_name)
            .field("calls", &self.state.calls.lock().len())
            .finish()
    }
}

impl<I, O, C> Double<I, O, C>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Send + 'static,
    C: Serialize + DeserializeOwned + Send + 'static,
{
    /// A double of `step` (the `#[step]` function itself) that runs `body` — a closure of the
    /// step's arguments returning `Result<output, StepError>` (or a [`StepResponse`], for a step
    /// whose compensation takes another type) — instead of the step's body.
    ///
    /// ```
    /// use workflows_runtime::prelude::*;
    /// use workflows_runtime::testing::Double;
    ///
    /// #[step]
    /// async fn charge_card_for_doc(customer: String, cents: u64) -> Result<String, StepError> {
    ///     Err(StepError::new(format!("the payment provider is not reachable from tests ({customer}, {cents})")))
    /// }
    ///
    /// let charge = Double::of(charge_card_for_doc, |customer: String, cents: u64| {
    ///     Ok(format!("receipt-{customer}-{cents}"))
    /// });
    /// # let _ = charge;
    /// ```
    pub fn of<Function, Returned>(step: Function, body: impl DoubleFn<I, Returned>) -> Self
    where
        Function: StepFunction<I, Output = O, Compensation = C>,
        Returned: DoubleOutput<O, C>,
    {
        let _ = step;
        Self::new::<Function>(Box::new(move |input: I| body.call(input).map(DoubleOutput::into_outcome)))
    }

    /// A double of `step` that returns `output` every time.
    pub fn returning<Function>(step: Function, output: O) -> Self
    where
        Function: StepFunction<I, Output = O, Compensation = C>,
        O: DoubleOutput<O, C> + Clone + Sync,
    {
        let _ = step;
        Self::new::<Function>(Box::new(move |_: I| Ok(output.clone().into_outcome())))
    }

    fn new<Function: StepFunction<I>>(body: Box<Body<I, O, C>>) -> Self {
        let state = DoubleState {
            step_name: std::any::type_name::<Function>(),
            body,
            compensation: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
            compensations: Mutex::new(Vec::new()),
        };
        Self { step: TypeId::of::<Function::Step>(), state: Arc::new(state) }
    }

    /// Replaces the step's compensation too, by `compensate` (a closure of the compensation's
    /// input: by default the step's output).
    pub fn compensate_with(self, compensate: impl Fn(C) -> Result<(), StepError> + Send + Sync + 'static) -> Self {
        *self.state.compensation.lock() = Some(Arc::new(compensate));
        self
    }

    /// Every call of the double so far, in order: the step's arguments and the attempt.
    pub fn calls(&self) -> Vec<DoubleCall<I>> {
        let calls = self.state.calls.lock();
        calls.iter().map(|call| DoubleCall { input: decode(&call.input), attempt: call.attempt }).collect()
    }

    /// The inputs the doubled compensation ran with, in order (empty unless
    /// [`compensate_with`](Self::compensate_with) replaced it).
    pub fn compensations(&self) -> Vec<C> {
        self.state.compensations.lock().iter().map(decode).collect()
    }

    pub(crate) fn register(&self, doubles: &mut Doubles) {
        doubles.0.insert(self.step, Arc::new(self.clone()));
    }

    fn run(&self, input: I, attempt: u32) -> Result<Outcome<O, C>, StepError> {
        let recorded = serde_json::to_value(&input).unwrap_or(serde_json::Value::Null);
        self.state.calls.lock().push(DoubleCall { input: recorded, attempt });
        (self.state.body)(input)
    }
}

/// A recorded value, decoded: it was encoded from the same type.
fn decode<T: DeserializeOwned>(value: &serde_json::Value) -> T {
    serde_json::from_value(value.clone()).expect("a recorded value decodes as the type it was encoded from")
}

/// What began: a step's body (or its double), or its compensation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Began {
    Step,
    Compensation,
}

/// Told of every step body (or double) and compensation that begins: its execution and call.
pub(crate) type BodyObserver =
    Arc<dyn Fn(&crate::execution::ExecutionId, &crate::journal::CallKey, Began) + Send + Sync>;

/// What a step's body (or its double) returns.
type StepOutcome<S> = Result<Outcome<<S as StepFn>::Output, <S as StepFn>::Compensation>, StepError>;

/// The doubles of one engine, by step type.
#[derive(Default)]
pub(crate) struct Doubles(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl Doubles {
    /// The double of step `S`: registered under `S`'s type, and of `S`'s types (the ones the
    /// step function's signature named), so the downcast holds.
    fn get<S: Step>(&self) -> Option<&Double<S::Input, S::Output, S::Compensation>> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&TypeId::of::<S>())?.downcast_ref()
    }

    /// True if step `S` is doubled here.
    pub(crate) fn doubles<S: Step>(&self) -> bool {
        self.get::<S>().is_some()
    }

    /// The double's outcome for this attempt of step `S`, if `S` is doubled here.
    pub(crate) fn run<S: Step>(&self, input: S::Input, attempt: u32) -> Result<StepOutcome<S>, S::Input> {
        match self.get::<S>() {
            Some(double) => Ok(double.run(input, attempt)),
            None => Err(input),
        }
    }

    /// The doubled compensation of step `S`, if there is one.
    pub(crate) fn compensate<S: Step>(&self, input: S::Compensation) -> Result<Result<(), StepError>, S::Compensation> {
        let Some(double) = self.get::<S>() else { return Err(input) };
        let Some(compensate) = double.state.compensation.lock().clone() else { return Err(input) };
        let recorded = serde_json::to_value(&input).unwrap_or(serde_json::Value::Null);
        double.state.compensations.lock().push(recorded);
        Ok(compensate(input))
    }
}
