// The context the README's Rust snippets are compiled in (`tests/tests/readme.rs`): what a
// snippet names without defining it — the application's own types and services, and the
// headers of the functions that statement snippets (`body`) are placed in. A fence names the
// chunks it needs: ```rust with=types body=engine. Chunks start at a `// == name` line.

// == types
// The application's own types and services, as the README's snippets use them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub lines: Vec<String>,
    pub amount_cents: u64,
}

impl Order {
    pub fn parcel(&self) -> Parcel {
        Parcel { order: self.id.clone() }
    }

    pub fn total(&self) -> u64 {
        self.amount_cents
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Parcel {
    pub order: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Payment {
    pub amount_cents: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub shipment: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cart {
    pub id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErpId(pub String);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Discount(pub u32);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageId(pub String);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invoice(pub String);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
}

#[derive(Debug)]
pub struct BackendError;

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the backend failed")
    }
}

impl std::error::Error for BackendError {}

pub struct Inventory;

impl Inventory {
    pub async fn reserve(&self, order: &Order, _key: &str) -> Result<Reservation, BackendError> {
        Ok(Reservation { id: order.id.clone() })
    }

    pub async fn release(&self, _id: &str) -> Result<(), BackendError> {
        Ok(())
    }
}

pub struct ProductService;

impl ProductService {
    pub async fn connect() -> Result<Self, BackendError> {
        Ok(Self)
    }

    pub fn count(&self) -> usize {
        3
    }
}

pub struct PaymentGateway;

impl PaymentGateway {
    pub async fn charge(&self, _payment: &Payment, key: &str) -> Result<Receipt, BackendError> {
        Ok(Receipt { shipment: key.to_owned() })
    }
}

pub struct Erp;

impl Erp {
    pub async fn connect() -> Result<Self, BackendError> {
        Ok(Self)
    }

    pub async fn create_order(&self, cart: &Cart) -> Result<ErpId, BackendError> {
        Ok(ErpId(cart.id.clone()))
    }
}

pub struct Coupons;

impl Coupons {
    pub async fn connect() -> Result<Self, BackendError> {
        Ok(Self)
    }

    pub async fn redeem(&self, _code: &str) -> Result<Discount, BackendError> {
        Ok(Discount(10))
    }
}

pub struct Newsletter;

impl Newsletter {
    pub async fn connect() -> Result<Self, BackendError> {
        Ok(Self)
    }

    pub async fn send(&self, email: &str) -> Result<MessageId, BackendError> {
        Ok(MessageId(email.to_owned()))
    }
}

pub mod mailer {
    pub async fn send_approval_request(_order: &super::Order, _token: String) -> Result<(), super::BackendError> {
        Ok(())
    }
}

// == capture
#[workflow]
async fn capture_payment(wf: &Workflow, cart: Cart) -> Result<Receipt, WorkflowError> {
    let _ = wf;
    Ok(Receipt { shipment: cart.id })
}

// == invoicing
#[step]
async fn issue_invoice(order: Order) -> Result<Invoice, StepError> {
    Ok(Invoice(order.id))
}

// == order-parts
#[workflow]
async fn ship_parcel(wf: &Workflow, parcel: Parcel) -> Result<String, WorkflowError> {
    let _ = wf;
    Ok(parcel.order)
}

#[step]
async fn charge(cents: u64) -> Result<(), StepError> {
    let _ = cents;
    Ok(())
}

// == fraud-check
#[step]
async fn fraud_check(order: Order) -> Result<(), StepError> {
    let _ = order;
    Ok(())
}

// == reserve-line
#[step]
async fn reserve(line: String) -> Result<u32, StepError> {
    Ok(line.len() as u32)
}

// == axum
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

// == time
use std::time::{Duration, SystemTime};

// == my-app
mod my_app {}

// == body
async fn readme_snippet() -> Result<(), Box<dyn std::error::Error>> {

// == body=engine
async fn readme_snippet(engine: Engine) -> Result<(), Box<dyn std::error::Error>> {

// == body=engine-cart
async fn readme_snippet(engine: Engine, cart: Cart) -> Result<(), Box<dyn std::error::Error>> {

// == body=engine-execution
async fn readme_snippet(engine: Engine, execution_id: ExecutionId) -> Result<(), Box<dyn std::error::Error>> {

// == body=workflow
#[workflow]
async fn readme_snippet(wf: &Workflow, order: Order) -> Result<(), WorkflowError> {
    let deadline = std::time::SystemTime::now();
