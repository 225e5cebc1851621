//! Step outputs flow through a workflow; the generated entry points; the container.

use workflows_examples::hello_world::{HelloInput, Message, hello_world};
use workflows_examples::product_count::{ProductCount, ProductService, product_count};
use workflows_runtime::prelude::*;
use workflows_runtime::{ExecutionState, FailureKind, Registry};

#[tokio::test]
async fn hello_world_returns_the_seed_message() {
    let engine = Engine::builder().memory().start().await.unwrap();
    let output = hello_world::run(&engine, HelloInput { name: "John".into() }).await.unwrap();
    assert_eq!(output, Message { message: "Hello John from step two!".into() });
    assert_eq!(serde_json::to_string(&output).unwrap(), r#"{"message":"Hello John from step two!"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_returns_a_handle_with_the_execution_id() {
    let engine = Engine::builder().memory().start().await.unwrap();
    let handle = hello_world::start_with(&engine, HelloInput { name: "Ada".into() }, RunOptions::new().id("greet-ada"))
        .await
        .unwrap();
    assert_eq!(handle.id().as_str(), "greet-ada");
    assert_eq!(handle.await.unwrap().message, "Hello Ada from step two!");

    let record = engine.execution(&"greet-ada".into()).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Completed);
    assert_eq!(record.workflow, "hello_world");
    assert_eq!(record.input.get(), r#"{"name":"Ada"}"#);
    assert_eq!(record.result.unwrap().get(), r#"{"message":"Hello Ada from step two!"}"#);
    assert_eq!(record.fingerprint, hello_world::definition().fingerprint());
    assert_eq!(engine.running(), 0);
}

#[tokio::test]
async fn a_step_resolves_services_from_the_container() {
    let products = ProductService::new(["a", "b", "c", "d"]);
    let engine = Engine::builder().memory().container(Container::new().with(products)).start().await.unwrap();
    assert_eq!(product_count::run(&engine, ()).await.unwrap(), ProductCount { count: 4 });

    // A per-run container comes first.
    let options = RunOptions::new().container(Container::new().with(ProductService::new(["x"])));
    assert_eq!(product_count::run_with(&engine, (), options).await.unwrap(), ProductCount { count: 1 });
}

#[tokio::test]
async fn a_missing_service_is_an_error_naming_the_type() {
    let engine = Engine::builder().memory().container(Container::new().with(5u32)).start().await.unwrap();
    let error = product_count::run(&engine, ()).await.unwrap_err();
    let failure = error.failure().expect("the step failure");
    assert_eq!(failure.kind, FailureKind::Step);
    assert_eq!(failure.step.as_deref(), Some("count_products"));
    assert!(
        failure.message.contains("no service of type `workflows_examples::product_count::ProductService`"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("registered: u32"), "{}", failure.message);
}

#[step(name = "custom.step-name")]
async fn renamed(ctx: &StepContext, a: u32, b: String) -> Result<String, StepError> {
    Ok(format!("{}:{a}:{b}:{}", ctx.step_name(), ctx.attempt()))
}

#[workflow(name = "custom.workflow", version = 3)]
async fn renamed_workflow(wf: &Workflow, input: (u32, String)) -> Result<String, WorkflowError> {
    let key = wf.id().to_string();
    let out = renamed(wf, input.0, input.1).await?;
    Ok(format!("{out}@{}", key.len()))
}

#[tokio::test]
async fn names_versions_and_several_inputs() {
    let engine = Engine::builder().memory().start().await.unwrap();
    let out = renamed_workflow::run_with(&engine, (7, "x".into()), RunOptions::new().id("abc")).await.unwrap();
    assert_eq!(out, "custom.step-name:7:x:1@3");
    let record = engine.execution(&"abc".into()).await.unwrap().unwrap();
    assert_eq!(record.workflow, "custom.workflow");
    assert_eq!(record.version, 3);
    let journal = engine.journal(&"abc".into()).await.unwrap();
    assert_eq!(journal[0].event.step().1.to_string(), "custom.step-name#1");
}

#[tokio::test]
async fn the_registry_lists_definitions_with_their_source_locations() {
    let registry = Registry::global().unwrap();
    let workflow = registry.workflow("hello_world").unwrap();
    assert_eq!(workflow.location().module_path, "workflows_examples::hello_world");
    assert!(workflow.location().file.ends_with("hello_world.rs"), "{}", workflow.location().file);
    assert!(workflow.location().line > 1);
    assert_eq!(workflow.input_type(), "HelloInput");
    assert_eq!(workflow.output_type(), "Message");
    assert_eq!(workflow.calls(), ["step_1", "step_2"]);
    assert_eq!(workflow.fingerprint().len(), 16);

    let step = registry.step("reserve_stock").unwrap();
    assert_eq!(step.compensation().map(|c| c.name()), Some("release_stock"));
    assert!(registry.step("step_1").unwrap().compensation().is_none());
    assert_eq!(registry.similar_workflows("helo_world"), ["hello_world"]);
}

#[derive(Serialize, Deserialize)]
struct Unserializable(std::collections::BTreeMap<Vec<u8>, u8>);

#[tokio::test]
async fn input_that_cannot_be_json_is_refused_before_anything_is_stored() {
    #[workflow]
    async fn takes_map(_wf: &Workflow, input: Unserializable) -> Result<usize, WorkflowError> {
        Ok(input.0.len())
    }
    let engine = Engine::builder().memory().start().await.unwrap();
    let input = Unserializable([(vec![1u8], 1u8)].into_iter().collect());
    let error = takes_map::run(&engine, input).await.unwrap_err();
    assert!(matches!(error, RunError::Input { .. }), "{error}");
    assert!(error.to_string().contains("input of workflow `takes_map` could not be serialized"), "{error}");
    assert!(engine.executions(&Default::default()).await.unwrap().iter().all(|r| r.workflow != "takes_map"));
}

#[tokio::test]
async fn shut_down_engines_start_nothing() {
    let engine = Engine::builder().memory().start().await.unwrap();
    engine.shutdown().await;
    let error = hello_world::run(&engine, HelloInput { name: "x".into() }).await.unwrap_err();
    assert!(matches!(error, RunError::ShutDown), "{error}");
}

mod facade {
    pub use workflows_runtime::*;
}

#[facade::step(crate = "crate::facade")]
async fn through_facade(n: u32) -> Result<u32, facade::StepError> {
    Ok(n + 1)
}

#[facade::workflow(crate = "crate::facade")]
async fn facade_workflow(wf: &facade::Workflow, n: u32) -> Result<u32, facade::WorkflowError> {
    Ok(through_facade(wf, n).await?)
}

#[tokio::test]
async fn the_crate_option_routes_generated_code_through_a_reexport() {
    let engine = facade::Engine::builder().memory().start().await.unwrap();
    assert_eq!(facade_workflow::run(&engine, 1).await.unwrap(), 2);
}

macro_rules! generated_step {
    ($name:ident = $registered:literal, compensate = $undo:path) => {
        #[step(name = $registered, compensate = $undo)]
        async fn $name(n: u32) -> Result<u32, StepError> {
            Ok(n * 2)
        }
    };
}

async fn undo_generated(_ctx: &StepContext, _n: u32) -> Result<(), StepError> {
    Ok(())
}

generated_step!(doubled = "generated-double", compensate = undo_generated);

#[tokio::test]
async fn options_passed_through_macro_rules_fragments_are_accepted() {
    let registry = workflows_runtime::Registry::global().unwrap();
    let step = registry.step("generated-double").expect("registered under the literal's value");
    assert_eq!(step.fn_name(), "doubled");
    assert!(step.compensation().is_some());
}
