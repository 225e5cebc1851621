//! Two steps (and two workflows) registered under one name make engine start fail with a
//! message naming both source locations. (Its own test binary: the registry is per process.)

use workflows_runtime::EngineError;
use workflows_runtime::prelude::*;

mod billing {
    use workflows_runtime::prelude::*;

    #[step]
    pub async fn charge(amount: u32) -> Result<u32, StepError> {
        Ok(amount)
    }

    #[workflow(name = "checkout")]
    pub async fn checkout_v1(wf: &Workflow, amount: u32) -> Result<u32, WorkflowError> {
        Ok(charge(wf, amount).await?)
    }
}

mod payments {
    use workflows_runtime::prelude::*;

    #[step(name = "charge")]
    pub async fn charge_card(amount: u32) -> Result<u32, StepError> {
        Ok(amount * 2)
    }

    #[workflow(name = "checkout")]
    pub async fn checkout_v2(wf: &Workflow, amount: u32) -> Result<u32, WorkflowError> {
        Ok(charge_card(wf, amount).await?)
    }
}

#[tokio::test]
async fn duplicate_names_fail_engine_start_naming_both_locations() {
    let error = Engine::builder().memory().start().await.unwrap_err();
    let EngineError::Registry(registry_error) = &error else { panic!("{error}") };
    assert_eq!(registry_error.names(), [("step", "charge"), ("workflow", "checkout")]);
    let message = error.to_string();
    let this_file = file!();
    for needle in [
        "two steps are registered as `charge`",
        "two workflows are registered as `checkout`",
        "(duplicate_names::billing)",
        "(duplicate_names::payments)",
        this_file,
        "#[step(name = \"...\")]",
    ] {
        assert!(message.contains(needle), "`{needle}` missing from: {message}");
    }
    // Both locations are given with their lines.
    assert!(message.contains(&format!("{this_file}:11 ")), "{message}");
    assert!(message.contains(&format!("{this_file}:25 ")), "{message}");
}
