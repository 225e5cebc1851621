use workflows_runtime::prelude::*;

// An option of a schedule without a schedule, and an overlap policy that does not exist.
#[workflow(tz = "Europe/Paris")]
async fn unscheduled(_wf: &Workflow, input: u32) -> Result<u32, WorkflowError> {
    Ok(input)
}

#[workflow(schedule = "0 * * * *", overlap = "wait")]
async fn bad_overlap(_wf: &Workflow, _: ()) -> Result<(), WorkflowError> {
    Ok(())
}

fn main() {}
