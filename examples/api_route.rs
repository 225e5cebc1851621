//! An axum server whose `GET /workflow` runs hello_world:
//! `cargo run -p workflows-examples --example api_route -- 3000` (or `PORT=3000`), then
//! `curl http://127.0.0.1:3000/workflow`

use workflows_examples::api_route::router;
use workflows_runtime::Engine;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    workflows_examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1).or_else(|| std::env::var("PORT").ok()) {
        Some(port) => port.parse().map_err(|_| format!("`{port}` is not a port number"))?,
        None => 3000,
    };
    let engine = Engine::builder().start().await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}/workflow", listener.local_addr()?);
    axum::serve(listener, router(engine)).await?;
    Ok(())
}
