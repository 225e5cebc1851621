//! Example workflows for `workflows-runtime`, shared by the runnable examples (`examples/`),
//! the benchmark binary and the tests.

pub mod api_route;
pub mod approval;
pub mod hello_world;
pub mod http;
pub mod order_saga;
pub mod product_count;

/// The services the example workflows' steps resolve, for the `workflows` binary: the
/// order backends (whose carrier is down when `$CARRIER_DOWN=1`), the approval desk and the
/// product catalogue.
pub fn services(engine: workflows_runtime::EngineBuilder) -> workflows_runtime::EngineBuilder {
    let container = workflows_runtime::Container::new()
        .with(order_saga::Backends::from_env())
        .with(std::sync::Arc::new(approval::ApprovalDesk::default()))
        .with(product_count::ProductService::new(["t-shirt", "mug", "poster"]));
    engine.container(container)
}

/// The exit code of an example: on error, the error is printed for a person (not `Debug`).
pub fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
