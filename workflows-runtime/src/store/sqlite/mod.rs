//! The embedded store: one SQLite file in WAL mode.
//!
//! One writer thread owns the write connection and group-commits the writes of all executions
//! (one transaction, so one fsync, for everything that is waiting); readers use connections of
//! their own. Several processes may share one file: SQLite's locks serialize their writes, and
//! executions are owned through leases fenced by epochs (see [`Store`]).

mod busy;
mod check;
mod checksum;
mod error;
mod events;
#[cfg(test)]
mod plans;
mod queries;
pub(super) mod queues;
mod rows;
mod schedules;
mod schema;
mod session;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params_from_iter};
use tokio::sync::oneshot;

pub(crate) use schema::SCHEMA_VERSION;

use self::error::backend;
use self::rows::{ACTIVE_STATES, read_journal};
use super::{
    AppendBatch, CheckReport, Claim, CreateOutcome, DamagedExecution, Delivered, Delivery, Durability, ExecutionList,
    ExecutionQuery, InboxEntry, InboxKind, NewExecution, OwnerLeases, Purge, Renewal, Renewals, Reopen, Reopened,
    Store, StoreAck, StoreError, StoreFuture, Suspend, Suspended, WriteAck,
};
use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::JournalEntry;
use crate::store::commands::Command;
use crate::time::Timestamp;

/// How many idle read connections are kept.
const READERS: usize = 32;

/// How an [`SqliteStore`] is opened.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    durability: Durability,
    max_size: Option<u64>,
    busy_timeout: Duration,
    lazy_delay: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            max_size: None,
            busy_timeout: Duration::from_secs(5),
            lazy_delay: Duration::from_millis(20),
        }
    }
}

impl SqliteOptions {
    /// Default options: [`Durability::Full`], no size limit, a 5 s busy timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// What a commit promises: [`Durability::Full`] (the default) fsyncs every commit;
    /// [`Durability::Process`] survives a crash of the process but not of the machine.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Refuses writes that would make the file larger than `bytes` (rounded down to pages).
    /// Writes past it fail with "database or disk is full", like a full disk.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// How long a write waits for another process's write lock before failing (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

/// A store in one SQLite file. Cheap to clone; clones share the file's writer.
///
/// ```no_run
/// use workflows_runtime::{Durability, SqliteOptions, SqliteStore};
///
/// let store = SqliteStore::open("workflows.db")?;
/// let fast = SqliteStore::open_with("scratch.db", SqliteOptions::new().durability(Durability::Process))?;
/// # Ok::<(), workflows_runtime::StoreError>(())
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    /// This process's use of the file (see [`session`]).
    session: Mutex<Option<session::Session>>,
    /// The integrity check run in the background because the store was opened after an
    /// unclean shutdown, if it was.
    startup_check: Mutex<Option<JoinHandle<Result<CheckReport, StoreError>>>>,
    startup_report: Mutex<Option<Result<CheckReport, String>>>,
}

impl SqliteStore {
    /// The schema version this build writes (SQLite's `user_version`); a file of a newer one is
    /// refused, an older one migrated when opened.
    pub const SCHEMA_VERSION: i64 = SCHEMA_VERSION;

    /// Opens (creating it if needed) the store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating it if needed) the store at `path`. Applies schema migrations; refuses a
    /// file written by a newer schema version, or a SQLite file that is not a workflows store.
    /// Blocking: call it before the runtime, or through `spawn_blocking` (as the engine does).
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let mut conn = Connection::open(&path).map_err(|e| {
            backend(
                format!("cannot open the workflows store {}: check the path and its permissions", path.display()),
                e,
            )
        })?;
        configure(&conn, &options, &path)?;
        schema::migrate(&mut conn, &path)?;
        let (session, unclean) = match session::Session::begin(&path) {
            Ok((session, unclean)) => (Some(session), unclean),
            // A read-only directory, say: the store works, without crash detection.
            Err(error) => {
                tracing::warn!(%error, "cannot tell whether the store was shut down cleanly; no integrity check at open");
                (None, false)
            }
        };
        let (sender, receiver) = mpsc::channel();
        let (lazy_delay, busy_timeout) = (options.lazy_delay, options.busy_timeout);
        let writer = std::thread::Builder::new()
            .name("workflows-sqlite-writer".into())
            .spawn(crate::time::on_this_clock(move || {
                let mut conn = conn;
                if let Err(error) = busy::poll_on_this_thread(&mut conn, busy_timeout) {
                    // SQLite's own handler (set by `configure`) stays: slower to notice a free lock.
                    tracing::warn!(%error, "cannot set the store's busy handler");
                }
                writer::run(conn, receiver, lazy_delay)
            }))
            .map_err(|e| backend("cannot start the store's writer thread", e))?;
        let store = Self {
            inner: Arc::new(Inner {
                path,
                options,
                commands: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(Vec::new()),
                session: Mutex::new(session),
                startup_check: Mutex::new(None),
                startup_report: Mutex::new(None),
            }),
        };
        if unclean {
            store.check_in_background();
        }
        Ok(store)
    }

    /// Checks the store after an unclean shutdown, off the caller's thread: the engine starts at
    /// once; what the check finds is logged (each damaged execution named) and kept for
    /// [`SqliteStore::startup_check`]. Reads verify checksums anyway: nothing damaged is used.
    fn check_in_background(&self) {
        let inner = self.inner.clone();
        let name = format!("sqlite:{}", inner.path.display());
        tracing::warn!(store = %name, "the store was not closed cleanly last time; checking its integrity in the background");
        let checking = std::thread::Builder::new().name("workflows-sqlite-check".into()).spawn(move || {
            let conn = inner.reader()?;
            let report = check::run(&conn, false);
            match &report {
                Ok(report) => check::log(report, &name),
                Err(error) => tracing::error!(store = %name, %error, "the integrity check could not run"),
            }
            report
        });
        match checking {
            Ok(handle) => *self.inner.startup_check.lock() = Some(handle),
            Err(error) => tracing::error!(%error, "cannot start the integrity check"),
        }
    }

    /// Checks the whole store: SQLite's own check of the file (`integrity_check` with `full`,
    /// else the faster `quick_check`), then every execution and journal entry against its
    /// checksums. Blocking; reads only, through a connection of its own.
    pub fn check(&self, full: bool) -> Result<CheckReport, StoreError> {
        check::run(&self.inner.reader()?, full)
    }

    /// The integrity check this store ran because it was opened after an unclean shutdown
    /// (waiting for it to end), or `None` if the last process closed it cleanly.
    pub fn startup_check(&self) -> Option<Result<CheckReport, String>> {
        let running = self.inner.startup_check.lock().take();
        let mut report = self.inner.startup_report.lock();
        if let Some(running) = running {
            *report = Some(match running.join() {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("the integrity check panicked".into()),
            });
        }
        report.clone()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The durability commits have.
    pub fn durability(&self) -> Durability {
        self.inner.options.durability
    }

    /// Stops the writer after it committed everything submitted so far. Later writes fail.
    /// Dropping the last clone does the same.
    pub fn close(&self) {
        self.inner.close();
    }

    fn send<T: Send + 'static>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> StoreAck<T> {
        let (reply, receiver) = oneshot::channel();
        let sent = match &*self.inner.commands.lock() {
            Some(commands) => commands.send(command(reply)).is_ok(),
            None => false,
        };
        if !sent {
            return StoreAck::ready(Err(StoreError::Unavailable(format!(
                "the store {} is closed",
                self.inner.path.display()
            ))));
        }
        #[cfg(feature = "testing")]
        if crate::time::virtual_clock::current().is_some() {
            return StoreAck::pending(wait_blocking(receiver));
        }
        StoreAck::pending(receiver)
    }

    /// Runs `read` on a read connection, off the async threads.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(crate::time::on_this_clock(move || {
                let conn = inner.reader()?;
                let result = read(&conn);
                let mut idle = inner.readers.lock();
                if idle.len() < READERS {
                    idle.push(conn);
                }
                result
            }))
            .await
            .map_err(|e| backend("a store read was cancelled", e))?
        })
    }
}

/// Under a test clock, the wait for the writer's answer, on a blocking thread: Tokio moves a
/// paused clock on when its runtime has nothing to do, unless a blocking task runs — and the
/// clock must not jump ahead while a commit is under way (a lease would seem to run out).
#[cfg(feature = "testing")]
fn wait_blocking<T: Send + 'static>(
    answer: oneshot::Receiver<Result<T, StoreError>>,
) -> oneshot::Receiver<Result<T, StoreError>> {
    let (forward, forwarded) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        if let Ok(answer) = answer.blocking_recv() {
            let _ = forward.send(answer);
        }
    });
    forwarded
}

impl Inner {
    fn reader(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.readers.lock().pop() {
            return Ok(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags)
            .map_err(|e| backend(format!("cannot open {} for reading", self.path.display()), e))?;
        conn.busy_timeout(self.options.busy_timeout).map_err(|e| backend("cannot configure a read connection", e))?;
        Ok(conn)
    }

    fn close(&self) {
        // Dropping the sender lets the writer commit what it has and exit.
        self.commands.lock().take();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
        // Everything is committed: if this was the last process, the store was closed cleanly.
        if let Some(session) = self.session.lock().take() {
            session.end();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

fn configure(conn: &Connection, options: &SqliteOptions, path: &Path) -> Result<(), StoreError> {
    let context = || format!("cannot configure the workflows store {}", path.display());
    conn.busy_timeout(options.busy_timeout).map_err(|e| backend(context(), e))?;
    // Read first: a file in WAL already (every store after its first open) needs no change.
    // Both statements may meet a lock SQLite refuses at once, without its busy handler (WAL
    // recovery after a killed process, a mode change while another process writes): tried
    // again within the busy timeout.
    let began = std::time::Instant::now();
    let journal_mode = |sql: &str| loop {
        match conn.query_row(sql, [], |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy && began.elapsed() < options.busy_timeout =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            answer => return answer.map_err(|e| backend(context(), e)),
        }
    };
    let mut mode = journal_mode("PRAGMA journal_mode")?;
    if !mode.eq_ignore_ascii_case("wal") {
        mode = journal_mode("PRAGMA journal_mode = WAL")?;
    }
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{} cannot use write-ahead logging (journal mode is {mode}); use a file on a local disk",
            path.display()
        )));
    }
    // WAL with FULL syncs the log on every commit; NORMAL only at checkpoints.
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Process => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous).map_err(|e| backend(context(), e))?;
    if let Some(bytes) = options.max_size {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(|e| backend(context(), e))?;
        let pages = (bytes as i64 / page_size).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| backend(context(), e))?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }

    fn create_execution(&self, new: NewExecution) -> StoreAck<CreateOutcome> {
        self.send(|reply| Command::Create(new, reply))
    }

    fn append(&self, batch: AppendBatch) -> WriteAck {
        self.send(|reply| Command::Append(batch, reply))
    }

    fn execution<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Option<ExecutionRecord>> {
        let id = id.clone();
        self.read(move |conn| writer::read_execution(conn, &id))
    }

    fn journal<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Vec<JournalEntry>> {
        let id = id.clone();
        self.read(move |conn| read_journal(conn, &id))
    }

    fn list_executions<'a>(&'a self, query: &'a ExecutionQuery) -> StoreFuture<'a, ExecutionList> {
        let query = query.clone();
        self.read(move |conn| {
            let (sql, values) = queries::list(&query);
            let context = "cannot list executions";
            let mut statement = conn.prepare_cached(&sql).map_err(|e| backend(context, e))?;
            let mut found = statement.query(params_from_iter(values)).map_err(|e| backend(context, e))?;
            let mut list = ExecutionList::default();
            while let Some(row) = found.next().map_err(|e| backend(context, e))? {
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
        let ack = self.send(|reply| Command::Claim(claim.clone(), reply));
        Box::pin(ack)
    }

    fn renew_leases<'a>(&'a self, renewal: &'a Renewal) -> StoreFuture<'a, Renewals> {
        let ack = self.send(|reply| Command::Renew(renewal.clone(), reply));
        Box::pin(ack)
    }

    fn release<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        let ack = self.send(|reply| Command::Release(owner.to_owned(), reply));
        Box::pin(ack)
    }

    fn owners(&self) -> StoreFuture<'_, Vec<OwnerLeases>> {
        self.read(|conn| {
            let context = "cannot list the owners of executions";
            let sql = format!(
                "SELECT owner, COUNT(*), MAX(lease_until), MIN(lease_until) FROM executions
                 WHERE owner IS NOT NULL AND state IN {ACTIVE_STATES} GROUP BY owner"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(|e| backend(context, e))?;
            let found = statement
                .query_map([], |r| {
                    Ok(OwnerLeases {
                        owner: r.get(0)?,
                        executions: r.get::<_, i64>(1)? as u64,
                        lease_until: r.get::<_, Option<i64>>(2)?.map(Timestamp::from_micros),
                        earliest_lease_until: r.get::<_, Option<i64>>(3)?.map(Timestamp::from_micros),
                    })
                })
                .map_err(|e| backend(context, e))?;
            found.collect::<Result<_, _>>().map_err(|e| backend(context, e))
        })
    }

    fn release_execution<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        let ack = self.send(|reply| Command::ReleaseOne(id.clone(), epoch, reply));
        Box::pin(ack)
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
        let (id, name) = (id.clone(), name.to_owned());
        self.read(move |conn| {
            let context = || format!("cannot read the inbox of execution {id}");
            let mut statement = conn.prepare_cached(queries::INBOX_ENTRY).map_err(|e| backend(context(), e))?;
            let mut found = statement
                .query(rusqlite::params![id.as_str(), kind.as_str(), name, position as i64])
                .map_err(|e| backend(context(), e))?;
            match found.next().map_err(|e| backend(context(), e))? {
                Some(row) => rows::inbox_entry(row, &id).map(Some),
                None => Ok(None),
            }
        })
    }

    fn suspend<'a>(&'a self, suspend: &'a Suspend) -> StoreFuture<'a, Suspended> {
        Box::pin(self.send(|reply| Command::Suspend(suspend.clone(), reply)))
    }

    fn reopen<'a>(&'a self, reopen: &'a Reopen) -> StoreFuture<'a, Reopened> {
        Box::pin(self.send(|reply| Command::Reopen(reopen.clone(), reply)))
    }

    fn token_key(&self) -> StoreFuture<'_, [u8; 32]> {
        self.read(|conn| {
            let context = "cannot read the completion-token key";
            let key: Vec<u8> = conn
                .query_row("SELECT value FROM secrets WHERE name = ?1", [schema::TOKEN_KEY], |r| r.get(0))
                .map_err(|e| backend(context, e))?;
            key.try_into().map_err(|key: Vec<u8>| StoreError::Backend {
                context: context.into(),
                source: format!("the stored key has {} bytes, not 32: the store is damaged", key.len()).into(),
            })
        })
    }

    fn check(&self, full: bool) -> StoreFuture<'_, CheckReport> {
        self.read(move |conn| check::run(conn, full))
    }

    fn next_wake(&self) -> StoreFuture<'_, Option<Timestamp>> {
        self.read(|conn| {
            let timer = conn
                .prepare_cached(queries::NEXT_WAKE)
                .and_then(|mut s| s.query_row([], |r| r.get::<_, Option<i64>>(0)))
                .map(|next| next.map(Timestamp::from_micros))
                .map_err(|e| backend("cannot read the next wake-up time", e))?;
            let reopening = queues::next_reopening(conn, Timestamp::now())?;
            Ok(timer.into_iter().chain(reopening).min())
        })
    }

    fn define_queues<'a>(&'a self, defined: &'a [crate::queue::Queue]) -> StoreFuture<'a, ()> {
        Box::pin(self.send(|reply| Command::DefineQueues(defined.to_vec(), reply)))
    }

    fn queues(&self, now: Timestamp) -> StoreFuture<'_, Vec<crate::queue::QueueStatus>> {
        self.read(move |conn| queues::statuses(conn, now))
    }

    fn schedules<'a>(&'a self, names: &'a [String], now: Timestamp) -> StoreFuture<'a, Vec<super::ScheduleState>> {
        Box::pin(self.send(|reply| Command::Schedules(names.to_vec(), now, reply)))
    }

    fn stored_schedules(&self) -> StoreFuture<'_, Vec<super::ScheduleState>> {
        self.read(schedules::stored)
    }

    fn advance_schedule<'a>(&'a self, advance: &'a super::ScheduleAdvance) -> StoreFuture<'a, bool> {
        Box::pin(self.send(|reply| Command::AdvanceSchedule(advance.clone(), reply)))
    }

    fn pause_schedule<'a>(&'a self, name: &'a str, paused: bool) -> StoreFuture<'a, bool> {
        Box::pin(self.send(|reply| Command::PauseSchedule(name.to_owned(), paused, reply)))
    }

    fn record_event(&self, event: super::NewEvent) -> StoreFuture<'_, bool> {
        Box::pin(self.send(|reply| Command::RecordEvent(event, reply)))
    }

    fn undispatched_events(&self, limit: usize) -> StoreFuture<'_, Vec<super::NewEvent>> {
        self.read(move |conn| events::undispatched(conn, limit))
    }

    fn mark_dispatched<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(self.send(|reply| Command::MarkDispatched(ids.to_vec(), reply)))
    }

    fn purge_events(&self, before: Timestamp, limit: usize) -> StoreFuture<'_, u64> {
        Box::pin(self.send(|reply| Command::PurgeEvents(before, limit, reply)))
    }

    fn record_undelivered<'a>(&'a self, undelivered: &'a super::Undelivered) -> StoreFuture<'a, ()> {
        Box::pin(self.send(|reply| Command::RecordUndelivered(Box::new(undelivered.clone()), reply)))
    }

    fn undelivered(&self, due: Option<Timestamp>, limit: usize) -> StoreFuture<'_, Vec<super::Undelivered>> {
        self.read(move |conn| events::undelivered(conn, due, limit))
    }

    fn forget_undelivered<'a>(&'a self, event: &'a str, subscriber: Option<&'a str>) -> StoreFuture<'a, u64> {
        let subscriber = subscriber.map(str::to_owned);
        Box::pin(self.send(|reply| Command::ForgetUndelivered(event.to_owned(), subscriber, reply)))
    }
}
