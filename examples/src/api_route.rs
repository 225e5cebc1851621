//! An HTTP route that runs a workflow: `GET /workflow` runs [`hello_world`](crate::hello_world)
//! and answers `{"message":"Hello John from step two!"}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use workflows_runtime::Engine;

use crate::hello_world::{HelloInput, hello_world};

/// The application's routes, with the engine as state.
pub fn router(engine: Engine) -> Router {
    Router::new().route("/workflow", get(run_hello_world)).with_state(engine)
}

async fn run_hello_world(State(engine): State<Engine>) -> Response {
    match hello_world::run(&engine, HelloInput { name: "John".into() }).await {
        Ok(message) => Json(message).into_response(),
        Err(error) => {
            let body = Json(serde_json::json!({ "error": error.to_string() }));
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}
