//! A PostgreSQL schema per test on the server `WORKFLOWS_TEST_POSTGRES` names (`.ci/run` sets
//! it): tests run in parallel and leave nothing behind. Without the variable a test that needs
//! the server returns at once, and the binary says once how to run it; with it, a server that
//! cannot be reached fails the test.

/// The environment variable naming the test server.
pub const ENV: &str = "WORKFLOWS_TEST_POSTGRES";

/// A schema of its own for one test, dropped (with everything in it) when this is dropped.
pub struct TestSchema {
    server: String,
    name: String,
}

impl TestSchema {
    /// A new schema name on the test server, or `None` when `WORKFLOWS_TEST_POSTGRES` is not
    /// set. Panics if it is set and the server cannot be reached.
    pub async fn new() -> Option<Self> {
        static SAID: std::sync::Once = std::sync::Once::new();
        let server = match std::env::var(ENV) {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                // Straight to stderr: the test harness captures `eprintln!`.
                SAID.call_once(|| {
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "PostgreSQL tests skipped: set {ENV}=postgres://USER@HOST:PORT/DB to run them (`.ci/run` does)"
                    );
                });
                return None;
            }
        };
        if let Err(error) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await {
            panic!("{ENV} is set, and the server cannot be reached: {error:?}");
        }
        Some(Self { server, name: format!("test_{}", uuid::Uuid::now_v7().simple()) })
    }

    /// The store URL: the server, in this schema.
    pub fn url(&self) -> String {
        let separator = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{separator}schema={}", self.server, self.name)
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain connection to the server, for what a test checks or changes behind the engine.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.server, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Its own thread and runtime: this may run inside a runtime, or after one ended.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await.ok()
            })
        });
        let _ = dropped.join();
    }
}
