//! The api_route example end to end over a real loopback socket.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use workflows_examples::api_route::router;
use workflows_runtime::Engine;

async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test]
async fn get_workflow_answers_the_seed_message() {
    let engine = Engine::builder().memory().start().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router(engine)).await });

    let (status, body) = get(addr, "/workflow").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, r#"{"message":"Hello John from step two!"}"#);

    // Each request is its own execution.
    let (status, _) = get(addr, "/workflow").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, _) = get(addr, "/nope").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    server.abort();
}

/// The approval example's routes, called with a real HTTP client: the completion token goes
/// into the URL path as it is, and the answer says what happened.
#[tokio::test]
async fn an_async_step_is_completed_through_a_real_http_request_with_its_token_in_the_path() {
    use std::sync::Arc;
    use workflows_examples::approval::{ApprovalDesk, Decision, Payment, PendingOrder, approval, router};
    use workflows_examples::http::post_json;
    use workflows_runtime::{Container, RunOptions};

    let desk = Arc::new(ApprovalDesk::default());
    let engine = Engine::builder().memory().container(Container::new().with(desk.clone())).start().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(axum::serve(listener, router(engine.clone())).into_future());

    // An id with characters a path would not keep as they are, were they not encoded.
    let order =
        PendingOrder { id: "order/77#b".into(), sku: "lamp".into(), amount_cents: 900, payment_timeout_ms: 60_000 };
    let run = approval::start_with(&engine, order.clone(), RunOptions::new().id(&order.id)).await.unwrap();
    let token =
        workflows_tests::eventually(std::time::Duration::from_secs(5), || async { desk.token_for(&order.id) }).await;
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "URL-safe: {token}");

    let decision = Decision { approved: true, by: "ada".into() };
    let (status, body) = post_json(&format!("{server}/approvals/{token}"), &decision).await.unwrap();
    assert_eq!((status, body.as_str()), (202, "accepted"));
    let (status, body) = post_json(&format!("{server}/approvals/{token}"), &decision).await.unwrap();
    assert_eq!(status, 409, "{body}");
    // A token made up from the execution's id is refused.
    let forged = "order%2F77%23b%2Fapproval.request_approval%231";
    let (status, body) = post_json(&format!("{server}/approvals/{forged}"), &decision).await.unwrap();
    assert_eq!(status, 400, "{body}");

    let payment = Payment { payment_id: "pay_1".into(), amount_cents: 900 };
    let (status, _) = post_json(&format!("{server}/webhooks/payment/order%2F77%23b"), &payment).await.unwrap();
    assert_eq!(status, 202);
    assert_eq!(run.await.unwrap().payment_id, "pay_1");
    serving.abort();
}
