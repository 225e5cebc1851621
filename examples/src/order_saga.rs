//! A saga: reserve stock, charge the payment, create the shipment. When the shipment cannot
//! be created, the payment is refunded and the stock released, in reverse order.

use std::sync::Mutex;

use workflows_runtime::prelude::*;

/// An order to fulfil.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub id: String,
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The price in cents.
    pub amount_cents: u64,
}

/// A stock reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    /// The reservation's id, which releasing it needs.
    pub id: String,
    /// The product.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
}

/// The order's fulfilment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fulfilment {
    /// The reservation id.
    pub reservation: String,
    /// The payment id.
    pub payment: String,
    /// The shipment id.
    pub shipment: String,
}

/// Stands in for the stock, payment and shipping systems: records what was done to them.
#[derive(Default)]
pub struct Backends {
    log: Mutex<Vec<String>>,
    /// When true, the carrier refuses shipments.
    pub carrier_down: bool,
}

impl Backends {
    /// Backends whose carrier refuses every shipment when `$CARRIER_DOWN` is `1` (for trying
    /// failures and retries with the `workflows` binary).
    pub fn from_env() -> Self {
        if std::env::var("CARRIER_DOWN").is_ok_and(|v| v == "1") { Self::with_carrier_down() } else { Self::default() }
    }

    /// Backends whose carrier refuses every shipment.
    pub fn with_carrier_down() -> Self {
        Self { carrier_down: true, ..Self::default() }
    }

    fn record(&self, line: String) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }

    /// What was done, in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Reserves the stock; compensated by [`release_stock`] with the reservation id.
#[step(compensate = release_stock)]
async fn reserve_stock(ctx: &StepContext, order: Order) -> Result<StepResponse<Reservation, String>, StepError> {
    let backends = ctx.resolve::<Backends>()?;
    let reservation = Reservation { id: format!("res-{}", order.id), sku: order.sku, quantity: order.quantity };
    backends
        .record(format!("reserve_stock: reserved {} x {} ({})", reservation.quantity, reservation.sku, reservation.id));
    let id = reservation.id.clone();
    Ok(StepResponse::new(reservation).compensate_with(id))
}

async fn release_stock(ctx: &StepContext, reservation_id: String) -> Result<(), StepError> {
    ctx.resolve::<Backends>()?.record(format!("release_stock: released {reservation_id}"));
    Ok(())
}

/// Charges the payment; the payment id it returns is also what [`refund_payment`] receives.
#[step(compensate = refund_payment)]
async fn charge_payment(ctx: &StepContext, order: Order) -> Result<String, StepError> {
    let payment = format!("pay-{}", order.id);
    // The idempotency key makes a retried charge a no-op at the payment provider.
    let key = ctx.idempotency_key();
    ctx.resolve::<Backends>()?
        .record(format!("charge_payment: charged {} cents ({payment}, key {key})", order.amount_cents));
    Ok(payment)
}

async fn refund_payment(ctx: &StepContext, payment: String) -> Result<(), StepError> {
    ctx.resolve::<Backends>()?.record(format!("refund_payment: refunded {payment}"));
    Ok(())
}

#[step]
pub async fn create_shipment(ctx: &StepContext, reservation: Reservation) -> Result<String, StepError> {
    let backends = ctx.resolve::<Backends>()?;
    if backends.carrier_down {
        backends.record("create_shipment: the carrier is unavailable".to_owned());
        return Err(StepError::permanent("the carrier is unavailable"));
    }
    let shipment = format!("ship-{}", reservation.id);
    backends.record(format!("create_shipment: created {shipment}"));
    Ok(shipment)
}

/// Reserves stock, charges the payment and ships; on failure, compensates in reverse order.
#[workflow]
pub async fn order_saga(wf: &Workflow, order: Order) -> Result<Fulfilment, WorkflowError> {
    let reservation = reserve_stock(wf, order.clone()).await?;
    let payment = charge_payment(wf, order).await?;
    let reservation_id = reservation.id.clone();
    let shipment = create_shipment(wf, reservation).await?;
    Ok(Fulfilment { reservation: reservation_id, payment, shipment })
}
