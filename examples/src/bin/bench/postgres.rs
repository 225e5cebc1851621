//! The bench's PostgreSQL side: the server's commit latency (what a durable step costs at
//! least), and the throw-away schema a run uses.

use std::time::Instant;

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The median of 200 one-row INSERTs, each its own transaction (one round trip, committed
/// with a WAL flush: a logged table, not a temporary one), in µs: one durable commit on this
/// server, measured in the same run as the workloads.
pub async fn commit_median_us(url: &str) -> Result<f64, String> {
    let client = connect(url).await?;
    let error = |e: tokio_postgres::Error| format!("commit probe: {e}");
    let table = format!("commit_probe_{}", uuid::Uuid::now_v7().simple());
    client.batch_execute(&format!("CREATE TABLE {table} (n BIGINT)")).await.map_err(error)?;
    let insert = client.prepare(&format!("INSERT INTO {table} VALUES ($1)")).await.map_err(error)?;
    let mut samples = Vec::with_capacity(200);
    for n in 0..200i64 {
        let started = Instant::now();
        client.execute(&insert, &[&n]).await.map_err(error)?;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    client.batch_execute(&format!("DROP TABLE {table}")).await.map_err(error)?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// A run's schema, dropped at the end.
pub struct Schema {
    pub url: String,
    pub name: String,
}

impl Schema {
    pub async fn drop(self) {
        if let Ok(client) = connect(&self.url).await {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)).await;
        }
    }
}
