//! Example workflows for `workflows-runtime`, shared by the runnable examples (`examples/`),
//! the benchmark binary and the tests.

pub mod api_route;
pub mod approval;
pub mod hello_world;
pub mod order_saga;
pub mod product_count;

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
