//! The `workflows` helper binary over the example workflows:
//! `cargo run -p workflows-examples --bin workflows -- list`.

// Links the crate that defines the workflows: without a use, Rust would not link it, and
// its workflows would not be registered.
use workflows_examples as _;

fn main() -> std::process::ExitCode {
    workflows_runtime::cli::main_with(workflows_examples::services)
}
