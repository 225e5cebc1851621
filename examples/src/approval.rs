//! A long-running order: stock is reserved, a manager approves the order (an async step,
//! completed later through its token, here from an HTTP handler), and the payment provider's
//! webhook confirms the payment (an event). If the payment does not arrive in time, the wait
//! times out and the stock reservation is released. While it waits, the execution is
//! suspended: no task, no memory, also across restarts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use workflows_runtime::prelude::*;

/// An order waiting for approval and payment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingOrder {
    /// The order's id.
    pub id: String,
    /// The product.
    pub sku: String,
    /// The amount to be paid, in cents.
    pub amount_cents: u64,
    /// How long the payment may take once the order is approved, in milliseconds.
    pub payment_timeout_ms: u64,
}

/// The manager's answer, delivered with `engine.complete_step(token, decision)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the order may go ahead.
    pub approved: bool,
    /// Who decided.
    pub by: String,
}

/// The payment provider's webhook payload, delivered with `engine.send_event(id, "payment", ..)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    /// The provider's payment id.
    pub payment_id: String,
    /// The amount paid, in cents.
    pub amount_cents: u64,
}

/// What the workflow returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The order's id.
    pub order: String,
    /// Who approved it.
    pub approved_by: String,
    /// The payment's id.
    pub payment_id: String,
}

/// Where approval requests go (an email or a chat message in a real application): each has
/// the order's id and the token that answers it.
#[derive(Default)]
pub struct ApprovalDesk {
    requests: Mutex<Vec<(String, String)>>,
    /// What the steps did, for the example's output.
    pub log: Mutex<Vec<String>>,
}

impl ApprovalDesk {
    /// The token of the approval request sent for `order`, if one was sent.
    pub fn token_for(&self, order: &str) -> Option<String> {
        let requests = self.requests.lock().unwrap();
        requests.iter().find(|(id, _)| id == order).map(|(_, token)| token.clone())
    }

    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

#[step(name = "approval.reserve_stock", compensate = release_stock)]
async fn reserve_stock(ctx: &StepContext, order: PendingOrder) -> Result<String, StepError> {
    ctx.resolve::<Arc<ApprovalDesk>>()?.note(format!("reserved {} for order {}", order.sku, order.id));
    Ok(format!("reservation-{}", order.id))
}

async fn release_stock(ctx: &StepContext, reservation: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<ApprovalDesk>>()?.note(format!("released {reservation}"));
    Ok(())
}

/// Sends the approval request with the step's completion token; a manager answers it days
/// later, from any process.
#[step(name = "approval.request_approval", async, timeout = "2d")]
async fn request_approval(ctx: &StepContext, order: PendingOrder) -> Result<Completion<Decision>, StepError> {
    let desk = ctx.resolve::<Arc<ApprovalDesk>>()?;
    desk.requests.lock().unwrap().push((order.id.clone(), ctx.completion_token()));
    desk.note(format!("asked for approval of order {}", order.id));
    Ok(Completion::later())
}

#[step(name = "approval.ship")]
async fn ship(ctx: &StepContext, order: PendingOrder) -> Result<(), StepError> {
    ctx.resolve::<Arc<ApprovalDesk>>()?.note(format!("shipped order {}", order.id));
    Ok(())
}

/// The order workflow.
#[workflow]
pub async fn approval(wf: &Workflow, order: PendingOrder) -> Result<Confirmation, WorkflowError> {
    reserve_stock(wf, order.clone()).await?;
    let decision = request_approval(wf, order.clone()).await?;
    if !decision.approved {
        return Err(WorkflowError::new(format!("order {} was declined by {}", order.id, decision.by)));
    }
    let payment: Payment =
        wf.wait_for_event("payment").timeout(Duration::from_millis(order.payment_timeout_ms)).await?;
    if payment.amount_cents != order.amount_cents {
        return Err(WorkflowError::new(format!(
            "paid {} cents, {} were due",
            payment.amount_cents, order.amount_cents
        )));
    }
    ship(wf, order.clone()).await?;
    Ok(Confirmation { order: order.id, approved_by: decision.by, payment_id: payment.payment_id })
}

/// The HTTP side: `POST /approvals/{token}` with a [`Decision`] completes the approval step;
/// `POST /webhooks/payment/{execution}` with a [`Payment`] sends the `payment` event.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/approvals/{token}", post(approve))
        .route("/webhooks/payment/{execution}", post(payment_webhook))
        .with_state(engine)
}

/// Completes the approval step whose token is in the path.
pub async fn approve(
    State(engine): State<Engine>,
    Path(token): Path<String>,
    Json(decision): Json<Decision>,
) -> (StatusCode, String) {
    answer(engine.complete_step(&token, decision).await)
}

/// Delivers the payment provider's confirmation to the order's execution.
pub async fn payment_webhook(
    State(engine): State<Engine>,
    Path(execution): Path<String>,
    Json(payment): Json<Payment>,
) -> (StatusCode, String) {
    answer(engine.send_event(&execution.into(), "payment", payment).await)
}

fn answer(result: Result<(), DeliveryError>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::ACCEPTED, "accepted".into()),
        Err(error @ (DeliveryError::InvalidToken { .. } | DeliveryError::Output { .. })) => {
            (StatusCode::BAD_REQUEST, error.to_string())
        }
        Err(error @ DeliveryError::NotFound { .. }) => (StatusCode::NOT_FOUND, error.to_string()),
        Err(
            error @ (DeliveryError::Finished { .. }
            | DeliveryError::TimedOut { .. }
            | DeliveryError::AlreadyCompleted { .. }
            | DeliveryError::AlreadyFailed { .. }
            | DeliveryError::NotStarted { .. }),
        ) => (StatusCode::CONFLICT, error.to_string()),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}
