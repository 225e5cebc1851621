//! A small HTTP client (hyper's), for the examples and tests that call the example servers
//! over a real socket, as a browser, a webhook sender or a manager's e-mail client would.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// An error of the client: the message says what failed.
pub type Error = Box<dyn std::error::Error>;

/// `POST url` with `body` as JSON; the response's status code and body.
pub async fn post_json(url: &str, body: &impl serde::Serialize) -> Result<(u16, String), Error> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
