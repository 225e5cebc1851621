//! The PostgreSQL store: many processes on many machines share one database.
//!
//! Writes go through one writer task per process that commits the writes of all its executions
//! together (see [`writer`]); reads use a small pool of connections. Everything lives in a
//! PostgreSQL schema of its own (`workflows` unless configured), versioned and migrated under
//! an advisory lock (see [`schema`]).

mod error;
pub(super) mod events;
mod leases;
mod listener;
mod pipeline;
#[cfg(test)]
mod plans;
mod queries;
pub(super) mod queues;
mod rows;
pub(super) mod schedules;
mod schema;
mod writer;
#[cfg(test)]
mod writer_tests;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::types::ToSql;

use self::error::{backend, chain};
use self::rows::{ACTIVE_STATES, EXECUTION_COLUMNS};
use self::writer::query;
use super::commands::Command;
use super::{
    AppendBatch, CheckReport, Claim, CreateOutcome, DamagedExecution, Delivered, Delivery, ExecutionList,
    ExecutionQuery, InboxEntry, InboxKind, NewExecution, Notice, OwnerLeases, Purge, Renewal, Renewals, Reopen,
    Reopened, Store, StoreAck, StoreError, StoreFuture, Suspend, Suspended, WriteAck,
};
use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::JournalEntry;
use crate::time::Timestamp;

#[cfg(test)]
pub(crate) use schema::SCHEMA_VERSION;

/// How a [`PostgresStore`] connects.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    schema: String,
    pool_size: usize,
    connect_timeout: Duration,
    idle_transaction_timeout: Duration,
    operation_timeout: Duration,
    listen: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "workflows".into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            idle_transaction_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(30),
            listen: true,
        }
    }
}

impl PostgresOptions {
    /// Default options: schema `workflows`, at most 8 connections, a 10 s connect timeout, a
    /// 5 s idle-transaction timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// The PostgreSQL schema the store's tables live in (created if missing): a lower-case
    /// identifier (`[a-z_][a-z0-9_]*`). A URL's `?schema=NAME` sets it too.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections this store opens: one for its writer, the rest for reads (at
    /// least 2 in all).
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(2);
        self
    }

    /// How long connecting may take before it fails.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the server lets a transaction of this process sit idle before it ends the
    /// session (PostgreSQL's `idle_in_transaction_session_timeout`). A process stopped inside
    /// a write transaction (SIGSTOP, a paused VM) holds the row locks of the executions it
    /// writes; this gives them back, so that other workers can take those executions over when
    /// their leases end. Keep it well under the engine's lease (the default, 5 s, is a sixth of
    /// the default 30 s lease); the writer's own transactions last milliseconds.
    pub fn idle_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.idle_transaction_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one operation on a pooled connection (a read, a claim, a renewal) may take
    /// before it fails (default 30 s): a server that stopped answering, or a network that
    /// lost every packet, delays a worker's claims by this much at most and never stops it.
    /// (Connections also give up on data the server does not acknowledge within 10 s:
    /// `TCP_USER_TIMEOUT`, where the platform has it.)
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Whether the store listens for other processes' notices (`LISTEN/NOTIFY`, on by
    /// default). Off, its engine finds new work and results by polling only: every half lease,
    /// every second (the fleet benchmark compares both).
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }
}

/// A workflows store in a PostgreSQL database, shared by every process that connects to it.
///
/// Cheap to clone: clones share the connections and the writer.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL without its password, and the schema: for messages.
    describe: String,
    /// The PostgreSQL schema the tables live in.
    schema: String,
    pool: Pool,
    commands: UnboundedSender<Command>,
    notices: tokio::sync::broadcast::Sender<Notice>,
    _listener: Option<listener::AbortOnDrop>,
    operation_timeout: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("store", &self.inner.describe).finish()
    }
}

impl PostgresStore {
    /// Connects to the database a URL names (`postgres://user:password@host:port/db`, or
    /// `key=value` pairs), creates or migrates the store's schema, and starts its writer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects with options (the schema, the pool size).
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let (url, schema) = split_schema(url, options.schema.clone());
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::Unavailable(format!("`{}` is not a PostgreSQL URL: {e}", redact(&url))))?;
        let describe = format!("{} (schema {schema})", describe(&config));
        if !schema::valid_name(&schema) {
            return Err(StoreError::Unavailable(format!(
                "`{schema}` cannot name the store's PostgreSQL schema: use lower-case letters, digits and `_`"
            )));
        }
        config.connect_timeout(options.connect_timeout);
        config.options(session_options(&schema, options.idle_transaction_timeout));
        config.application_name("workflows");
        // A connection to a server that went silent (a partition, a black hole) is found dead
        // within about 10 s, not the system's two hours.
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        // Data the server does not acknowledge (a network that drops every packet while a
        // request is in flight, when keepalives do not run) fails the connection too.
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        config.tcp_user_timeout(Duration::from_secs(10));
        let listening = config.clone();
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .wait_timeout(Some(options.connect_timeout * 3))
            .build()
            .map_err(|e| backend(format!("cannot set up connections to {describe}"), e))?;
        let unreachable = |e: deadpool_postgres::PoolError| {
            StoreError::Unavailable(format!("cannot connect to PostgreSQL at {describe}: {}", chain(&e)))
        };
        {
            let mut client = pool.get().await.map_err(unreachable)?;
            schema::migrate(&mut client, &schema, &describe).await?;
        }
        let (commands, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(writer::run(pool.clone(), receiver));
        let (notices, _) = tokio::sync::broadcast::channel(listener::CAPACITY);
        let listener = match options.listen {
            true => {
                Some(listener::AbortOnDrop(tokio::spawn(listener::listen(listening, schema.clone(), notices.clone()))))
            }
            false => None,
        };
        let operation_timeout = options.operation_timeout;
        Ok(Self {
            inner: Arc::new(Inner {
                describe,
                schema,
                pool,
                commands,
                notices,
                _listener: listener,
                operation_timeout,
            }),
        })
    }

    fn send<T>(&self, command: impl FnOnce(super::commands::Reply<T>) -> Command) -> StoreAck<T> {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        if self.inner.commands.send(command(reply)).is_err() {
            return StoreAck::ready(Err(StoreError::Unavailable(format!(
                "the store {}'s writer stopped",
                self.inner.describe
            ))));
        }
        StoreAck::pending(receiver)
    }

    /// Runs `operation` within the operation timeout (see
    /// [`PostgresOptions::operation_timeout`]): a single statement on a pooled connection can
    /// be dropped half-way (the connection reads and discards its answer).
    fn bounded<'a, T: Send + 'a>(
        &'a self,
        operation: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let timeout = self.inner.operation_timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, operation).await.unwrap_or_else(|_| Err(self.timed_out(timeout)))
        })
    }

    fn timed_out(&self, timeout: Duration) -> StoreError {
        StoreError::Unavailable(format!(
            "PostgreSQL at {} did not answer within {timeout:?} (PostgresOptions::operation_timeout)",
            self.inner.describe
        ))
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(|e| {
            StoreError::Unavailable(format!("cannot connect to PostgreSQL at {}: {}", self.inner.describe, chain(&e)))
        })
    }

    /// Of the executions a claim took before its commit went unanswered, those it holds: a
    /// read on another connection that waits for the claim's transaction if the server still
    /// has it open (until it commits, or ends with its session: the idle-transaction timeout).
    async fn claimed_after_all(
        &self,
        claim: &Claim,
        records: Vec<ExecutionRecord>,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let context = "cannot read back what a claim took";
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let sql = "SELECT id, epoch FROM executions WHERE id = ANY($1) AND owner = $2 FOR SHARE";
        let held = self.read(|| context.into(), sql, &[&ids, &claim.owner]).await?;
        let held: std::collections::HashMap<String, i64> =
            held.iter().map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1))).collect();
        let kept: Vec<ExecutionRecord> =
            records.into_iter().filter(|r| held.get(r.id.as_str()) == Some(&(r.epoch as i64))).collect();
        tracing::info!(claimed = kept.len(), "the claim had landed");
        Ok(kept)
    }

    /// Runs a read and returns its rows.
    async fn read(
        &self,
        context: impl Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        query(&client, sql, params).await.map_err(|e| backend(context(), e))
    }
}

/// The settings of every session the store opens: its schema first on the search path; the
/// idle-transaction timeout (see [`PostgresOptions::idle_transaction_timeout`]); and no plan
/// that reads a whole table where an index can answer. A connection keeps its prepared
/// statements for its whole life, and the server soon settles on one generic plan per
/// statement, made once: on a fresh schema (whose tables no one analyzed yet — on a server
/// with autovacuum off, never) reading the whole, then tiny, table looks cheapest, and that
/// plan would be kept while the table grows to a million rows. With sequential scans priced
/// out, every hot statement reads its index whatever the statistics say (`plans.rs` checks
/// it); planning each execution anew instead (`plan_cache_mode = force_custom_plan`) was
/// measured to cost a journal write more than the write.
fn session_options(schema: &str, idle_transaction_timeout: Duration) -> String {
    format!(
        "-c search_path={schema} -c idle_in_transaction_session_timeout={} -c enable_seqscan=off",
        idle_transaction_timeout.as_millis()
    )
}

/// Takes a `schema=NAME` parameter out of a URL (tokio-postgres does not know it).
fn split_schema(url: &str, default: String) -> (String, String) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), default) };
    let mut schema = default;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("schema=") {
            Some(name) => {
                schema = name.to_owned();
                false
            }
            None => true,
        })
        .collect();
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (url, schema)
}

/// The connection a config names, without its password: `postgres://user@host:port/db`.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().map(|user| format!("{user}@")).unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{host}:{port}/{db}")
}

/// A URL with its password (if any) replaced, for a message about a URL that does not parse.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn create_execution(&self, new: NewExecution) -> StoreAck<CreateOutcome> {
        self.send(|reply| Command::Create(new, reply))
    }

    fn append(&self, batch: AppendBatch) -> WriteAck {
        self.send(|reply| Command::Append(batch, reply))
    }

    fn execution<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Option<ExecutionRecord>> {
        self.bounded(async move { writer::read_execution(&self.client().await?, id).await })
    }

    fn journal<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.bounded(async move {
            // PostgreSQL checks its own pages; a journal with a gap was changed by hand.
            let sql = queries::journal();
            let found =
                self.read(|| format!("cannot read the journal of execution {id}"), &sql, &[&id.as_str()]).await?;
            let mut entries = Vec::with_capacity(found.len());
            for row in &found {
                let entry = rows::journal_entry(row, id)?;
                if entry.index != entries.len() as u64 {
                    return Err(StoreError::Corrupt {
                        execution: id.clone(),
                        what: format!("its journal (entry {} is missing)", entries.len()),
                        detail: "the journal was changed outside the engine".into(),
                    });
                }
                entries.push(entry);
            }
            Ok(entries)
        })
    }

    fn list_executions<'a>(&'a self, query: &'a ExecutionQuery) -> StoreFuture<'a, ExecutionList> {
        self.bounded(async move {
            let (sql, values) = queries::list(query);
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
            let found = self.read(|| "cannot list executions".into(), &sql, &params).await?;
            let mut list = ExecutionList::default();
            for row in &found {
                match rows::execution(row) {
                    Ok(record) => list.records.push(record),
                    Err(StoreError::Corrupt { execution, what, detail }) => {
                        list.damaged.push(DamagedExecution { id: execution, problem: format!("{what}: {detail}") });
                    }
                    Err(other) => return Err(other),
                }
            }
            Ok(list)
        })
    }

    fn claim_orphans<'a>(&'a self, claim: &'a Claim) -> StoreFuture<'a, Vec<ExecutionRecord>> {
        // In a transaction of its own on a pooled connection, not in the writer's batches: a
        // claim is not a write of a running workflow, and in a batch it would send every
        // journal write beside it the careful way (see `pipeline`). Its commit is durable, as
        // every write that grants a lease is: a claim lost in a server crash would let another
        // worker run the bodies this one started.
        Box::pin(async move {
            let client = self.client().await?;
            let context = "cannot claim executions";
            let timeout = self.inner.operation_timeout;
            let claimed = tokio::time::timeout(timeout, async {
                client.batch_execute("BEGIN").await.map_err(|e| backend(context, e))?;
                writer::claim_orphans(&client, claim).await
            })
            .await;
            let records = match claimed {
                Ok(Ok(records)) => records,
                Ok(Err(error)) => {
                    // A connection that cannot roll back is closed, and the pool drops it.
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(error);
                }
                // Cut off inside its transaction: the connection is closed (never back in the
                // pool with a transaction open), and the server rolls the claim back.
                Err(_) => {
                    drop(Object::take(client));
                    return Err(self.timed_out(timeout));
                }
            };
            match tokio::time::timeout(timeout, client.batch_execute("COMMIT")).await {
                Ok(Ok(())) => Ok(records),
                // The commit may have landed with its answer lost: what it claimed is read
                // back, so that it is driven rather than left to expire.
                unanswered => {
                    let why = match unanswered {
                        Ok(Err(error)) => error::chain(&error),
                        _ => format!("no answer within {timeout:?}"),
                    };
                    tracing::warn!(error = %why, "a claim's commit was not answered; reading back what it took");
                    drop(Object::take(client));
                    self.bounded(self.claimed_after_all(claim, records)).await
                }
            }
        })
    }

    fn renew_leases<'a>(&'a self, renewal: &'a Renewal) -> StoreFuture<'a, Renewals> {
        // On a pooled connection, not in the writer's batches (see `leases`).
        self.bounded(async move { leases::renew(&self.client().await?, renewal).await })
    }

    fn release<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(self.send(|reply| Command::Release(owner.to_owned(), reply)))
    }

    fn owners(&self) -> StoreFuture<'_, Vec<OwnerLeases>> {
        self.bounded(async move {
            let sql = format!(
                "SELECT owner, COUNT(*), MAX(lease_until), MIN(lease_until) FROM executions
                 WHERE owner IS NOT NULL AND state IN {ACTIVE_STATES} GROUP BY owner"
            );
            let found = self.read(|| "cannot list the owners of executions".into(), &sql, &[]).await?;
            Ok(found
                .iter()
                .map(|row| OwnerLeases {
                    owner: row.get(0),
                    executions: row.get::<_, i64>(1) as u64,
                    lease_until: row.get::<_, Option<i64>>(2).map(Timestamp::from_micros),
                    earliest_lease_until: row.get::<_, Option<i64>>(3).map(Timestamp::from_micros),
                })
                .collect())
        })
    }

    fn release_execution<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        Box::pin(self.send(|reply| Command::ReleaseOne(id.clone(), epoch, reply)))
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId, retain_until: Timestamp) -> StoreFuture<'a, bool> {
        Box::pin(self.send(|reply| Command::RequestCancel(id.clone(), retain_until, reply)))
    }

    fn acquire<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        Box::pin(self.send(|reply| Command::Acquire(id.clone(), epoch, reply)))
    }

    fn purge<'a>(&'a self, purge: &'a Purge) -> StoreFuture<'a, u64> {
        Box::pin(self.send(|reply| Command::Purge(purge.clone(), reply)))
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> StoreFuture<'a, Delivered> {
        Box::pin(self.send(|reply| Command::Deliver(delivery.clone(), reply)))
    }

    fn inbox<'a>(
        &'a self,
        id: &'a ExecutionId,
        kind: InboxKind,
        name: &'a str,
        position: u64,
    ) -> StoreFuture<'a, Option<InboxEntry>> {
        self.bounded(async move {
            let sql = queries::inbox_entry();
            let found = self
                .read(
                    || format!("cannot read the inbox of execution {id}"),
                    &sql,
                    &[&id.as_str(), &kind.as_str(), &name, &(position as i64)],
                )
                .await?;
            found.first().map(|row| rows::inbox_entry(row, id)).transpose()
        })
    }

    fn suspend<'a>(&'a self, suspend: &'a Suspend) -> StoreFuture<'a, Suspended> {
        Box::pin(self.send(|reply| Command::Suspend(suspend.clone(), reply)))
    }

    fn next_wake(&self) -> StoreFuture<'_, Option<Timestamp>> {
        self.bounded(async move {
            let client = self.client().await?;
            let found = query(&client, queries::NEXT_WAKE, &[])
                .await
                .map_err(|e| backend("cannot read the next wake-up time", e))?;
            let timer = found.first().and_then(|row| row.get::<_, Option<i64>>(0)).map(Timestamp::from_micros);
            let reopening = queues::next_reopening(&client, Timestamp::now()).await?;
            Ok(timer.into_iter().chain(reopening).min())
        })
    }

    fn define_queues<'a>(&'a self, defined: &'a [crate::queue::Queue]) -> StoreFuture<'a, ()> {
        Box::pin(self.send(|reply| Command::DefineQueues(defined.to_vec(), reply)))
    }

    fn queues(&self, now: Timestamp) -> StoreFuture<'_, Vec<crate::queue::QueueStatus>> {
        self.bounded(async move { queues::statuses(&self.client().await?, now).await })
    }

    // Schedules are written on a pooled connection, each statement its own transaction: they
    // are not writes of running workflows, and the compare-and-set is one statement.
    fn schedules<'a>(&'a self, names: &'a [String], now: Timestamp) -> StoreFuture<'a, Vec<super::ScheduleState>> {
        self.bounded(async move { schedules::states(&self.client().await?, names, now).await })
    }

    fn stored_schedules(&self) -> StoreFuture<'_, Vec<super::ScheduleState>> {
        self.bounded(async move { schedules::stored(&self.client().await?).await })
    }

    fn advance_schedule<'a>(&'a self, advance: &'a super::ScheduleAdvance) -> StoreFuture<'a, bool> {
        self.bounded(async move { schedules::advance(&self.client().await?, advance).await })
    }

    fn pause_schedule<'a>(&'a self, name: &'a str, paused: bool) -> StoreFuture<'a, bool> {
        self.bounded(async move { schedules::pause(&self.client().await?, name, paused).await })
    }

    fn record_event(&self, event: super::NewEvent) -> StoreFuture<'_, bool> {
        self.bounded(async move { events::record(&self.client().await?, &event).await })
    }

    fn undispatched_events(&self, limit: usize) -> StoreFuture<'_, Vec<super::NewEvent>> {
        self.bounded(async move { events::undispatched(&self.client().await?, limit).await })
    }

    fn mark_dispatched<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        self.bounded(async move { events::mark(&self.client().await?, ids).await })
    }

    fn purge_events(&self, before: Timestamp, limit: usize) -> StoreFuture<'_, u64> {
        self.bounded(async move { events::purge(&self.client().await?, before, limit).await })
    }

    fn record_undelivered<'a>(&'a self, undelivered: &'a super::Undelivered) -> StoreFuture<'a, ()> {
        self.bounded(async move { events::record_undelivered(&self.client().await?, undelivered).await })
    }

    fn undelivered(&self, due: Option<Timestamp>, limit: usize) -> StoreFuture<'_, Vec<super::Undelivered>> {
        self.bounded(async move { events::undelivered(&self.client().await?, due, limit).await })
    }

    fn forget_undelivered<'a>(&'a self, event: &'a str, subscriber: Option<&'a str>) -> StoreFuture<'a, u64> {
        self.bounded(async move { events::forget_undelivered(&self.client().await?, event, subscriber).await })
    }

    fn token_key(&self) -> StoreFuture<'_, [u8; 32]> {
        self.bounded(async move {
            let context = || "cannot read the completion-token key".to_owned();
            let found = self.read(context, "SELECT value FROM secrets WHERE name = $1", &[&schema::TOKEN_KEY]).await?;
            let key: Vec<u8> = found.first().map(|row| row.get(0)).unwrap_or_default();
            key.try_into().map_err(|key: Vec<u8>| StoreError::Backend {
                context: context(),
                source: format!(
                    "the stored key has {} bytes, not 32: the store was changed outside the engine",
                    key.len()
                )
                .into(),
            })
        })
    }

    fn check(&self, _full: bool) -> StoreFuture<'_, CheckReport> {
        // PostgreSQL checks its own pages; this reads every row back through the decoders.
        Box::pin(async move {
            let mut report = CheckReport::default();
            let sql = format!("SELECT {EXECUTION_COLUMNS} FROM executions ORDER BY id");
            let executions = self.read(|| "cannot check the executions".into(), &sql, &[]).await?;
            for row in &executions {
                report.executions += 1;
                let id = ExecutionId::from(row.get::<_, String>(0));
                let problem = match rows::execution(row) {
                    Ok(_) => match self.journal(&id).await {
                        Ok(entries) => {
                            report.journal_entries += entries.len() as u64;
                            continue;
                        }
                        Err(error) => error,
                    },
                    Err(error) => error,
                };
                let problem = match problem {
                    StoreError::Corrupt { what, detail, .. } => format!("{what}: {detail}"),
                    other => return Err(other),
                };
                report.damaged.push(DamagedExecution { id, problem });
            }
            Ok(report)
        })
    }

    fn reopen<'a>(&'a self, reopen: &'a Reopen) -> StoreFuture<'a, Reopened> {
        Box::pin(self.send(|reply| Command::Reopen(reopen.clone(), reply)))
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        Some(self.inner.notices.subscribe())
    }

    fn postgres_schema(&self) -> Option<&str> {
        Some(&self.inner.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_parameter_is_taken_out_of_the_url() {
        let (url, schema) = split_schema("postgres://u@h/db?schema=tenant_a&sslmode=disable", "workflows".into());
        assert_eq!((url.as_str(), schema.as_str()), ("postgres://u@h/db?sslmode=disable", "tenant_a"));
        let (url, schema) = split_schema("postgres://u@h/db", "workflows".into());
        assert_eq!((url.as_str(), schema.as_str()), ("postgres://u@h/db", "workflows"));
    }

    #[test]
    fn passwords_never_reach_a_message() {
        let config = tokio_postgres::Config::from_str("postgres://app:secret@db.internal:6543/orders").unwrap();
        assert_eq!(describe(&config), "postgres://app@db.internal:6543/orders");
        assert_eq!(redact("postgres://app:secret@db/x"), "postgres://app:***@db/x");
    }

    /// What tokio-postgres logs (the server's notices, at `info`), captured for the whole test
    /// binary.
    struct Captured(parking_lot::Mutex<Vec<String>>);

    impl log::Log for Captured {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            self.0.lock().push(record.args().to_string());
        }
        fn flush(&self) {}
    }

    fn captured() -> &'static Captured {
        static CAPTURED: std::sync::OnceLock<&'static Captured> = std::sync::OnceLock::new();
        CAPTURED.get_or_init(|| {
            let captured: &'static Captured = Box::leak(Box::new(Captured(parking_lot::Mutex::new(Vec::new()))));
            let _ = log::set_logger(captured);
            log::set_max_level(log::LevelFilter::Info);
            captured
        })
    }

    /// Opening a store whose schema exists says nothing: no "schema ... already exists,
    /// skipping" notice in the application's log at every start.
    #[tokio::test]
    async fn opening_an_existing_store_logs_no_notice() {
        let captured = captured();
        let Some((store, schema)) = crate::store::conformance::postgres_server::fresh_store().await else { return };
        drop(store);
        let url = crate::store::conformance::postgres_server::url().unwrap();
        let again = PostgresStore::connect_with(&url, PostgresOptions::new().schema(schema.name()).pool_size(2));
        drop(again.await.unwrap());
        let noticed: Vec<String> =
            captured.0.lock().iter().filter(|line| line.contains(schema.name())).cloned().collect();
        assert!(noticed.is_empty(), "{noticed:?}");
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(schema::valid_name("workflows"));
        assert!(schema::valid_name("tenant_2"));
        assert!(!schema::valid_name("Workflows"));
        assert!(!schema::valid_name("a; DROP TABLE x"));
        assert!(!schema::valid_name(""));
    }
}
