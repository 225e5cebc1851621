use workflows_runtime::prelude::*;
use workflows_runtime::testing::Double;

#[step]
async fn charge_card(customer: String, cents: u64) -> Result<String, StepError> {
    Ok(format!("receipt for {customer}: {cents}"))
}

fn main() {
    // The step returns a `String` receipt; this double returns a number.
    let _ = Double::of(charge_card, |_customer: String, cents: u64| Ok(cents));
    // The step takes two arguments; this double takes one.
    let _ = Double::of(charge_card, |customer: String| Ok(customer));
}
