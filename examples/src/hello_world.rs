//! The seed workflow: two steps, the second one greeting the input's name.

use workflows_runtime::prelude::*;

#[step]
async fn step_1() -> Result<String, StepError> {
    Ok("Hello from step one!".into())
}

/// The input of [`hello_world()`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloInput {
    /// Who to greet.
    pub name: String,
}

#[step]
async fn step_2(input: HelloInput) -> Result<String, StepError> {
    Ok(format!("Hello {} from step two!", input.name))
}

/// The output of [`hello_world()`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The greeting.
    pub message: String,
}

/// Runs `step_1`, then `step_2` with the input, and returns step two's greeting.
#[workflow]
pub async fn hello_world(wf: &Workflow, input: HelloInput) -> Result<Message, WorkflowError> {
    let _str1 = step_1(wf).await?;
    let str2 = step_2(wf, input).await?;
    Ok(Message { message: str2 })
}
