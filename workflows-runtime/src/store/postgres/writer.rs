//! The writer: one task owns a write connection and commits the pending writes of all the
//! process's executions in one transaction (group commit: one WAL flush for many steps), as
//! the SQLite writer does. Each command runs inside its own savepoint, so a fenced or failed
//! write fails only its own execution's command, not the others in the batch. A batch of lazy
//! writes only ("attempt started" records) commits without waiting for the WAL flush.
//!
//! Writes from other processes are serialized by row locks: a journal write locks its
//! execution's row (`FOR UPDATE`), a claim skips the rows other transactions hold (`SKIP
//! LOCKED`), and starting or acquiring an exclusive key takes an advisory lock on the key.

use deadpool_postgres::{Object, Pool};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::error::backend;
use super::rows::{self, ACTIVE_STATES, EXECUTION_COLUMNS};
use super::{pipeline, queries};
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::store::commands::{Applied, Command, Failed, apply_nothing, in_lock_order, remember_failed};
use crate::store::{
    AppendBatch, Claim, CreateOutcome, Delivered, Delivery, NewExecution, Purge, Reopen, Reopened, Reopening,
    StoreError, Suspend, Suspended,
};
use crate::time::Timestamp;

/// At most this many commands go into one transaction.
const MAX_BATCH: usize = 1024;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// How long lazy writes (an attempt's start) wait for a durable write to commit with, as on
/// SQLite (`SqliteOptions::lazy_delay`'s default): a step's start then rides on the commit of
/// the write before or after it, instead of a round trip of its own that the step's
/// completion would queue behind.
const LAZY_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer task's loop; returns when every sender is gone, after the last commit.
pub(super) async fn run(pool: Pool, mut commands: UnboundedReceiver<Command>) {
    let mut failed = Failed::new();
    let mut connection: Option<Object> = None;
    let mut queue: Vec<Command> = Vec::new();
    // When the oldest lazy command that waits arrived.
    let mut lazy_since: Option<tokio::time::Instant> = None;
    loop {
        let (received, closed) = match lazy_since {
            None => match commands.recv().await {
                Some(command) => (Some(command), false),
                None => (None, true),
            },
            Some(since) => match tokio::time::timeout_at(since + LAZY_DELAY, commands.recv()).await {
                Ok(Some(command)) => (Some(command), false),
                Ok(None) => (None, true),
                Err(_) => (None, false),
            },
        };
        queue.extend(received);
        while queue.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => queue.push(command),
                Err(_) => break,
            }
        }
        let lazy_due = lazy_since.is_some_and(|since| since.elapsed() >= LAZY_DELAY);
        if !closed && !lazy_due && queue.iter().all(Command::is_lazy) {
            if !queue.is_empty() {
                lazy_since.get_or_insert_with(tokio::time::Instant::now);
            }
            continue;
        }
        // A purge batch commits on its own, after the writes that wait with it (as on SQLite).
        let (purges, writes): (Vec<Command>, Vec<Command>) = std::mem::take(&mut queue)
            .into_iter()
            .partition(|c| matches!(c, Command::Purge(..) | Command::PurgeEvents(..)));
        if !writes.is_empty() {
            commit(&pool, &mut connection, writes, &mut failed).await;
        }
        for purge in purges {
            commit(&pool, &mut connection, vec![purge], &mut failed).await;
        }
        lazy_since = None;
        if closed {
            return;
        }
    }
}

async fn commit(pool: &Pool, connection: &mut Option<Object>, mut commands: Vec<Command>, failed: &mut Failed) {
    in_lock_order(&mut commands);
    if connection.as_ref().is_some_and(|c| c.is_closed()) {
        *connection = None;
    }
    let client = match connection {
        Some(client) => client,
        None => match pool.get().await {
            Ok(client) => connection.insert(client),
            Err(error) => {
                let cause = format!("cannot connect to PostgreSQL: {}", super::error::chain(&error));
                fail_all(commands, failed, &cause);
                return;
            }
        },
    };
    let lazy = commands.iter().all(Command::is_lazy);
    if pipeline::fits(&commands, failed) {
        match pipeline::run(client, &commands, lazy).await {
            Ok(said) => return answer_pipelined(client, commands, said, failed).await,
            // Nothing landed; the careful way below tells each write its own outcome.
            Err(cause) => tracing::debug!(cause, "a pipelined batch failed; writing it again one write at a time"),
        }
    }
    let mut applied = Vec::with_capacity(commands.len());
    let mut writers = Vec::new();
    let mut commands = commands.into_iter();
    let begin = if lazy { "BEGIN; SET LOCAL synchronous_commit = off" } else { "BEGIN" };
    let outcome = match client.batch_execute(begin).await {
        Err(e) => Err(format!("cannot start a write transaction: {}", super::error::chain(&e))),
        Ok(()) => {
            let mut broken = None;
            for command in commands.by_ref() {
                let writer = match &command {
                    Command::Append(batch, _) => Some((batch.execution.clone(), batch.epoch)),
                    _ => None,
                };
                let done = match (&writer, command) {
                    (Some((id, epoch)), Command::Append(_, reply)) if failed.get(id) == Some(epoch) => {
                        Applied::Unit(reply, Err(StoreError::earlier_write_failed(id)))
                    }
                    (_, command) => match in_savepoint(client, command).await {
                        Ok(done) => done,
                        Err((done, cause)) => {
                            broken = Some(cause);
                            applied.push(done);
                            break;
                        }
                    },
                };
                if let Some((id, epoch)) = writer {
                    if done.error().is_some() {
                        remember_failed(failed, id.clone(), epoch);
                    }
                    writers.push((id, epoch));
                }
                applied.push(done);
            }
            match broken {
                Some(cause) => Err(cause),
                None => client.batch_execute("COMMIT").await.map_err(|e| super::error::chain(&e)),
            }
        }
    };
    let rest: Vec<Command> = commands.collect();
    if outcome.is_err() {
        if client.is_closed() || client.batch_execute("ROLLBACK").await.is_err() {
            *connection = None;
        }
        for command in &rest {
            if let Command::Append(batch, _) = command {
                remember_failed(failed, batch.execution.clone(), batch.epoch);
            }
        }
        for (id, epoch) in writers {
            remember_failed(failed, id, epoch);
        }
    }
    applied.extend(rest.into_iter().map(apply_nothing));
    for done in applied {
        done.answer(&outcome);
    }
}

/// Answers the writes of a pipelined batch that committed: each as it did, a refused one with
/// why (read after the commit: it changed nothing).
async fn answer_pipelined(client: &Object, commands: Vec<Command>, said: Vec<pipeline::Said>, failed: &mut Failed) {
    for (command, said) in commands.into_iter().zip(said) {
        let done = match (command, said) {
            (Command::Append(_, reply), pipeline::Said::Appended(true)) => Applied::Unit(reply, Ok(())),
            (Command::Append(batch, reply), _) => {
                remember_failed(failed, batch.execution.clone(), batch.epoch);
                Applied::Unit(reply, Err(refused(client, &batch).await))
            }
            (Command::Create(_, reply), pipeline::Said::Created(true)) => {
                Applied::Create(reply, Ok(CreateOutcome::Created))
            }
            (Command::Create(new, reply), _) => {
                let existing = read_execution(client, &new.id).await.and_then(|found| {
                    found
                        .map(|r| CreateOutcome::Exists(Box::new(r)))
                        .ok_or_else(|| StoreError::NotFound(new.id.clone()))
                });
                Applied::Create(reply, existing)
            }
            (other, _) => apply_nothing(other),
        };
        done.answer(&Ok(()));
    }
}

/// Why a journal write changed nothing: its execution is gone, another engine owns it, or its
/// first entry does not follow the journal.
async fn refused(client: &Object, batch: &AppendBatch) -> StoreError {
    let id = &batch.execution;
    let sql = "SELECT epoch, (SELECT COALESCE(MAX(idx) + 1, 0) FROM journal WHERE execution_id = $1)
               FROM executions WHERE id = $1";
    let current = match query(client, sql, &[&id.as_str()]).await {
        Ok(rows) => rows,
        Err(e) => return backend(format!("cannot write to the journal of execution {id}"), e),
    };
    let Some(row) = current.first() else { return StoreError::NotFound(id.clone()) };
    let (epoch, length) = (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64);
    match batch.entries.iter().next() {
        _ if epoch != batch.epoch => {
            StoreError::Fenced { execution: id.clone(), current: epoch, attempted: batch.epoch }
        }
        Some(first) => StoreError::OutOfSequence { execution: id.clone(), expected: length, got: first.index },
        None => StoreError::Unavailable(format!("the write to execution {id} changed nothing")),
    }
}

/// Answers every command with `cause`: nothing of them was applied.
fn fail_all(commands: Vec<Command>, failed: &mut Failed, cause: &str) {
    let outcome = Err(cause.to_owned());
    for command in commands {
        if let Command::Append(batch, _) = &command {
            remember_failed(failed, batch.execution.clone(), batch.epoch);
        }
        apply_nothing(command).answer(&outcome);
    }
}

/// Runs one command in a savepoint: a failed command leaves no trace, and the others still
/// commit. `Err` when the transaction itself broke (the connection was lost): nothing commits.
async fn in_savepoint(client: &Object, command: Command) -> Result<Applied, (Applied, String)> {
    if let Err(e) = client.batch_execute("SAVEPOINT command").await {
        return Err((apply_nothing(command), format!("cannot open a savepoint: {}", super::error::chain(&e))));
    }
    let done = apply(client, command).await;
    let end = if done.error().is_some() { "ROLLBACK TO SAVEPOINT command" } else { "RELEASE SAVEPOINT command" };
    match client.batch_execute(end).await {
        Ok(()) => Ok(done),
        Err(e) => Err((done, format!("the write transaction broke: {}", super::error::chain(&e)))),
    }
}

async fn apply(client: &Object, command: Command) -> Applied {
    match command {
        Command::Create(new, reply) => Applied::Create(reply, create(client, new).await),
        Command::Append(batch, reply) => Applied::Unit(reply, append(client, &batch).await),
        Command::Claim(claim, reply) => Applied::Records(reply, claim_orphans(client, &claim).await),
        Command::Renew(renewal, reply) => Applied::Renewed(reply, super::leases::renew(client, &renewal).await),
        Command::Release(owner, reply) => Applied::Count(reply, release(client, &owner).await),
        Command::ReleaseOne(id, epoch, reply) => Applied::Flag(reply, release_one(client, &id, epoch).await),
        Command::RequestCancel(id, retain_until, reply) => {
            Applied::Flag(reply, request_cancel(client, &id, retain_until).await)
        }
        Command::DefineQueues(defined, reply) => Applied::Unit(reply, super::queues::define(client, &defined).await),
        Command::Schedules(names, now, reply) => {
            Applied::Schedules(reply, super::schedules::states(client, &names, now).await)
        }
        Command::AdvanceSchedule(advance, reply) => {
            Applied::Flag(reply, super::schedules::advance(client, &advance).await)
        }
        Command::PauseSchedule(name, paused, reply) => {
            Applied::Flag(reply, super::schedules::pause(client, &name, paused).await)
        }
        Command::RecordEvent(event, reply) => Applied::Flag(reply, super::events::record(client, &event).await),
        Command::MarkDispatched(ids, reply) => Applied::Unit(reply, super::events::mark(client, &ids).await),
        Command::PurgeEvents(before, limit, reply) => {
            Applied::Count(reply, super::events::purge(client, before, limit).await)
        }
        Command::RecordUndelivered(undelivered, reply) => {
            Applied::Unit(reply, super::events::record_undelivered(client, &undelivered).await)
        }
        Command::ForgetUndelivered(event, subscriber, reply) => {
            Applied::Count(reply, super::events::forget_undelivered(client, &event, subscriber.as_deref()).await)
        }
        Command::Acquire(id, epoch, reply) => Applied::Flag(reply, acquire(client, &id, epoch).await),
        Command::Purge(purge, reply) => Applied::Count(reply, purge_finished(client, &purge).await),
        Command::Deliver(delivery, reply) => Applied::Delivered(reply, deliver(client, &delivery).await),
        Command::Suspend(suspend, reply) => Applied::Suspended(reply, suspend_one(client, &suspend).await),
        Command::Reopen(reopen, reply) => Applied::Reopened(reply, reopen_one(client, &reopen).await),
    }
}

/// Runs a statement (prepared once per connection) and returns its rows.
pub(super) async fn query(client: &Object, sql: &str, params: Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// Runs a statement (prepared once per connection) and returns how many rows it changed.
async fn execute(client: &Object, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

/// Tells the engines listening on this store (see `listener`) what happened, when the
/// transaction commits: `work`, or `finished ID`. PostgreSQL delivers one of identical
/// notices per transaction, so a group commit of many new executions wakes each worker once.
async fn notify(client: &Object, notice: &str) -> Result<(), tokio_postgres::Error> {
    query(client, "SELECT pg_notify(current_schema(), $1)", &[&notice]).await.map(drop)
}

/// Serializes the writers of one exclusive key across processes until the commit.
async fn lock_key(client: &Object, key: &str) -> Result<(), tokio_postgres::Error> {
    query(client, "SELECT pg_advisory_xact_lock(hashtext('workflows key ' || $1::text))", &[&key]).await.map(drop)
}

async fn create(client: &Object, new: NewExecution) -> Result<CreateOutcome, StoreError> {
    let context = || format!("cannot create execution {}", new.id);
    let mut state = ExecutionState::Running;
    if let Some(key) = &new.exclusive_key {
        lock_key(client, key).await.map_err(|e| backend(context(), e))?;
        let sql = format!(
            "SELECT id FROM executions WHERE exclusive_key = $1 AND (state IN {ACTIVE_STATES} OR state IN ('waiting', 'blocked', 'paused'))
             ORDER BY created_at, id LIMIT 1"
        );
        let holder: Option<String> =
            query(client, &sql, &[key]).await.map_err(|e| backend(context(), e))?.first().map(|row| row.get(0));
        match holder {
            // The id may be this very execution's, started again: that is not a conflict.
            Some(holder) if holder != new.id.as_str() && new.fail_if_held => {
                return Ok(CreateOutcome::KeyHeld(ExecutionId::from(holder)));
            }
            Some(holder) if holder != new.id.as_str() => state = ExecutionState::Pending,
            _ => {}
        }
    }
    if new.queue.is_some() {
        // Unowned, at epoch 0, until its queue admits it (its key is taken then).
        state = ExecutionState::Queued;
    }
    let owner = new.owner.as_deref().filter(|_| new.queue.is_none());
    let inserted = execute(
        client,
        "INSERT INTO executions (id, workflow, fingerprint, version, input, state, created_at, updated_at, owner,
                                 lease_until, epoch, exclusive_key, rerun_of, parent_id, parent_key, deadline, queue)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $15, $10, $11, $12, $13, $14, $16)
         ON CONFLICT (id) DO NOTHING",
        &[
            &new.id.as_str(),
            &new.workflow,
            &new.fingerprint,
            &i64::from(new.version),
            &new.input.get(),
            &state.as_str(),
            &new.now.as_micros(),
            &owner,
            &owner.is_some().then(|| new.lease_until.as_micros()),
            &new.exclusive_key,
            &new.rerun_of.as_ref().map(|id| id.as_str()),
            &new.parent.as_ref().map(|(id, _)| id.as_str()),
            &new.parent.as_ref().map(|(_, key)| key.as_str()),
            &new.deadline.map(Timestamp::as_micros),
            &(if new.queue.is_some() { 0i64 } else { 1i64 }),
            &new.queue,
        ],
    )
    .await
    .map_err(|e| backend(context(), e))?;
    if inserted == 1 {
        if owner.is_none() {
            // Started by a client-only engine: a worker takes it.
            notify(client, "work").await.map_err(|e| backend(context(), e))?;
        }
        return Ok(if state == ExecutionState::Pending { CreateOutcome::Queued } else { CreateOutcome::Created });
    }
    let existing = read_execution(client, &new.id).await?.ok_or_else(|| StoreError::NotFound(new.id.clone()))?;
    Ok(CreateOutcome::Exists(Box::new(existing)))
}

pub(super) async fn read_execution(client: &Object, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
    let sql = format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1");
    let found = query(client, &sql, &[&id.as_str()]).await.map_err(|e| backend("cannot read an execution", e))?;
    found.first().map(rows::execution).transpose()
}

async fn append(client: &Object, batch: &AppendBatch) -> Result<(), StoreError> {
    let id = &batch.execution;
    let context = || format!("cannot write to the journal of execution {id}");
    // The fence: the row stays locked until the commit (a takeover's update waits for it), and
    // the journal's next index, read backwards from its key.
    let current = query(
        client,
        "SELECT epoch, (SELECT COALESCE(MAX(idx) + 1, 0) FROM journal WHERE execution_id = $1)
         FROM executions WHERE id = $1 FOR SHARE",
        &[&id.as_str()],
    )
    .await
    .map_err(|e| backend(context(), e))?;
    let Some(row) = current.first() else { return Err(StoreError::NotFound(id.clone())) };
    let epoch = row.get::<_, i64>(0) as u64;
    if epoch != batch.epoch {
        return Err(StoreError::Fenced { execution: id.clone(), current: epoch, attempted: batch.epoch });
    }
    let first = row.get::<_, i64>(1) as u64;
    if !batch.entries.is_empty() {
        let (mut indexes, mut times, mut kinds, mut keys, mut events) = (vec![], vec![], vec![], vec![], vec![]);
        for (offset, entry) in batch.entries.iter().enumerate() {
            let expected = first + offset as u64;
            if entry.index != expected {
                return Err(StoreError::OutOfSequence { execution: id.clone(), expected, got: entry.index });
            }
            indexes.push(entry.index as i64);
            times.push(entry.at.as_micros());
            kinds.push(entry.event.kind());
            keys.push(entry.event.step().1.to_string());
            events.push(rows::event_json(&entry.event)?);
        }
        execute(
            client,
            "INSERT INTO journal (execution_id, idx, at, kind, call_key, event)
             SELECT $1::text, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[])",
            &[&id.as_str(), &indexes, &times, &kinds, &keys, &events],
        )
        .await
        .map_err(|e| backend(context(), e))?;
    }
    if let Some(transition) = &batch.transition {
        let failure = transition.failure.as_ref().map(rows::failure_json).transpose()?;
        let keyed = query(
            client,
            "UPDATE executions SET state = $2, result = $3, failure = $4, updated_at = $5,
                 owner = CASE WHEN $6 THEN NULL ELSE owner END,
                 lease_until = CASE WHEN $6 THEN NULL ELSE lease_until END,
                 retain_until = $7, blocked_by = COALESCE($8, blocked_by)
             WHERE id = $1
             RETURNING exclusive_key IS NOT NULL OR queue IS NOT NULL",
            &[
                &id.as_str(),
                &transition.state.as_str(),
                &transition.result.as_deref().map(|r| r.get()),
                &failure,
                &Timestamp::now().as_micros(),
                &transition.state.releases_owner(),
                &transition.retain_until.map(Timestamp::as_micros),
                &crate::store::blocked_by_text(transition),
            ],
        )
        .await
        .map_err(|e| backend(context(), e))?
        .first()
        .is_some_and(|row| row.get::<_, bool>(0));
        if transition.state.is_finished() {
            // Whoever waits for its result elsewhere; and the next of its key or its queue.
            notify(client, &format!("finished {id}")).await.map_err(|e| backend(context(), e))?;
            if keyed {
                notify(client, "work").await.map_err(|e| backend(context(), e))?;
            }
        }
    }
    if let Some(delivery) = &batch.deliver {
        deliver(client, delivery).await?;
    }
    super::events::record_emitted(client, id.as_str(), &batch.events).await?;
    if let Some(state) = batch.transition.as_ref().map(|t| t.state).filter(|s| s.is_finished()) {
        super::events::release_held(client, id.as_str(), state == ExecutionState::Completed).await?;
    }
    Ok(())
}

pub(super) async fn claim_orphans(client: &Object, claim: &Claim) -> Result<Vec<ExecutionRecord>, StoreError> {
    let context = "cannot claim orphaned executions";
    let only = claim.only.as_ref().map(ExecutionId::as_str).unwrap_or_default();
    let limit = claim.limit as i64;
    let (owner, until, now) = (&claim.owner, claim.lease_until.as_micros(), claim.now.as_micros());
    let (sql, params): (String, Vec<&(dyn ToSql + Sync)>) = match (&claim.only, &claim.unblock) {
        (Some(_), _) => (queries::claim(true), vec![owner, &until, &now, &claim.workflows, &limit, &only]),
        (None, Some(build)) => (queries::unblock(), vec![owner, &until, &claim.workflows, &limit, build]),
        (None, None) => (queries::claim(false), vec![owner, &until, &now, &claim.workflows, &limit]),
    };
    let claimed = query(client, &sql, &params).await.map_err(|e| backend(context, e))?;
    let mut records = Vec::with_capacity(claimed.len());
    for row in &claimed {
        match rows::execution(row) {
            Ok(record) => records.push(record),
            // A row that cannot be decoded cannot be resumed: fail that execution, not the
            // engine. Its data stays as stored (only its state and failure change).
            Err(StoreError::Corrupt { execution, what, detail }) => {
                let message = format!("execution {execution} cannot be resumed: {what} cannot be decoded: {detail}");
                tracing::error!(%execution, "{message}");
                let failure = rows::failure_json(&Failure::new(FailureKind::Decode, message))?;
                execute(
                    client,
                    "UPDATE executions SET state = $2, failure = $3, owner = NULL, lease_until = NULL,
                         updated_at = $4
                     WHERE id = $1",
                    &[&execution.as_str(), &ExecutionState::Failed.as_str(), &failure, &Timestamp::now().as_micros()],
                )
                .await
                .map_err(|e| backend(context, e))?;
            }
            Err(other) => return Err(other),
        }
    }
    if claim.only.is_none() && claim.unblock.is_none() && records.len() < claim.limit {
        let left = claim.limit - records.len();
        records.extend(super::queues::admit(client, claim, left).await?);
    }
    Ok(records)
}

async fn request_cancel(client: &Object, id: &ExecutionId, retain_until: Timestamp) -> Result<bool, StoreError> {
    // A queued execution never started: nothing to compensate.
    let cancelled = execute(
        client,
        "UPDATE executions SET state = 'cancelled', cancel_requested = true, updated_at = $2, retain_until = $3
         WHERE id = $1 AND state = 'queued'",
        &[&id.as_str(), &Timestamp::now().as_micros(), &retain_until.as_micros()],
    )
    .await
    .map_err(|e| backend(format!("cannot cancel queued execution {id}"), e))?;
    if cancelled == 1 {
        notify(client, &format!("finished {id}"))
            .await
            .map_err(|e| backend(format!("cannot cancel queued execution {id}"), e))?;
        return Ok(true);
    }
    // A blocked one becomes an orphan: the next claim takes it and compensates it, without
    // replaying its body (which this code could not).
    let context = || format!("cannot cancel blocked execution {id}");
    let unblocked = execute(
        client,
        "UPDATE executions SET state = 'running', cancel_requested = true, owner = NULL, lease_until = NULL,
             updated_at = $2
         WHERE id = $1 AND state IN ('blocked', 'paused')",
        &[&id.as_str(), &Timestamp::now().as_micros()],
    )
    .await
    .map_err(|e| backend(context(), e))?;
    if unblocked == 1 {
        notify(client, "work").await.map_err(|e| backend(context(), e))?;
        return Ok(true);
    }
    // A waiting execution is woken, so that an engine takes it over and cancels it.
    let sql = format!(
        "UPDATE executions SET cancel_requested = true, updated_at = $2,
             wake_at = CASE WHEN state = 'waiting' THEN $2 ELSE wake_at END
         WHERE id = $1 AND (state IN {ACTIVE_STATES} OR state = 'waiting')"
    );
    let sql = format!("{sql} RETURNING state = 'waiting'");
    let context = || format!("cannot request the cancellation of execution {id}");
    let updated =
        query(client, &sql, &[&id.as_str(), &Timestamp::now().as_micros()]).await.map_err(|e| backend(context(), e))?;
    if updated.first().is_some_and(|row| row.get::<_, bool>(0)) {
        // Woken: a worker takes it over and cancels it.
        notify(client, "work").await.map_err(|e| backend(context(), e))?;
    }
    Ok(!updated.is_empty())
}

async fn acquire(client: &Object, id: &ExecutionId, epoch: u64) -> Result<bool, StoreError> {
    let context = || format!("cannot start queued execution {id}");
    let key = query(client, "SELECT exclusive_key FROM executions WHERE id = $1", &[&id.as_str()])
        .await
        .map_err(|e| backend(context(), e))?;
    let Some(key) = key.first().and_then(|row| row.get::<_, Option<String>>(0)) else { return Ok(false) };
    lock_key(client, &key).await.map_err(|e| backend(context(), e))?;
    // The oldest pending execution of a key runs once no execution holds the key.
    execute(
        client,
        "UPDATE executions SET state = 'running', updated_at = $3
         WHERE id = $1 AND epoch = $2 AND state = 'pending'
           AND NOT EXISTS (
               SELECT 1 FROM executions AS other
               WHERE other.exclusive_key = executions.exclusive_key
                 AND other.state IN ('running', 'compensating', 'waiting', 'blocked', 'paused'))
           AND id = (
               SELECT other.id FROM executions AS other
               WHERE other.exclusive_key = executions.exclusive_key AND other.state = 'pending'
               ORDER BY other.created_at, other.id LIMIT 1)",
        &[&id.as_str(), &(epoch as i64), &Timestamp::now().as_micros()],
    )
    .await
    .map(|n| n == 1)
    .map_err(|e| backend(context(), e))
}

async fn purge_finished(client: &Object, purge: &Purge) -> Result<u64, StoreError> {
    let context = "cannot purge finished executions";
    let limit = purge.limit as i64;
    let mut due: Vec<String> = Vec::new();
    if let Some(before) = purge.retained_before {
        let found = query(client, &queries::purge_retained(), &[&before.as_micros(), &limit])
            .await
            .map_err(|e| backend(context, e))?;
        due.extend(found.iter().map(|row| row.get::<_, String>(0)));
    }
    if let Some(before) = purge.finished_before.filter(|_| due.len() < purge.limit) {
        let more = (purge.limit - due.len()) as i64;
        let found = query(client, &queries::purge_finished_before(), &[&before.as_micros(), &more])
            .await
            .map_err(|e| backend(context, e))?;
        // Both conditions may select one execution.
        for id in found.iter().map(|row| row.get::<_, String>(0)) {
            if !due.contains(&id) {
                due.push(id);
            }
        }
    }
    if due.is_empty() {
        return Ok(0);
    }
    execute(client, "DELETE FROM journal WHERE execution_id = ANY($1)", &[&due])
        .await
        .map_err(|e| backend(context, e))?;
    execute(client, "DELETE FROM inbox WHERE execution_id = ANY($1)", &[&due])
        .await
        .map_err(|e| backend(context, e))?;
    // Another process purging at once deleted some first: count what this one deleted.
    execute(client, "DELETE FROM executions WHERE id = ANY($1)", &[&due]).await.map_err(|e| backend(context, e))
}

async fn release(client: &Object, owner: &str) -> Result<u64, StoreError> {
    let sql =
        format!("UPDATE executions SET owner = NULL, lease_until = NULL WHERE owner = $1 AND state IN {ACTIVE_STATES}");
    let released = execute(client, &sql, &[&owner]).await.map_err(|e| backend("cannot release executions", e))?;
    if released > 0 {
        // Given back by an engine that stops: another takes them at once.
        notify(client, "work").await.map_err(|e| backend("cannot release executions", e))?;
    }
    Ok(released)
}

async fn release_one(client: &Object, id: &ExecutionId, epoch: u64) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE executions SET owner = NULL, lease_until = NULL WHERE id = $1 AND epoch = $2 AND state IN {ACTIVE_STATES}"
    );
    let context = || format!("cannot release execution {id}");
    let released = execute(client, &sql, &[&id.as_str(), &(epoch as i64)]).await.map_err(|e| backend(context(), e))?;
    if released == 1 {
        notify(client, "work").await.map_err(|e| backend(context(), e))?;
    }
    Ok(released == 1)
}

async fn deliver(client: &Object, delivery: &Delivery) -> Result<Delivered, StoreError> {
    let id = &delivery.execution;
    let context = || format!("cannot deliver to execution {id}");
    // Locked until the commit: deliveries to one execution take their positions in turn.
    let found = query(client, queries::DELIVERY_LOCK, &[&id.as_str()]).await.map_err(|e| backend(context(), e))?;
    let Some(row) = found.first() else { return Ok(Delivered::NotFound) };
    let state: ExecutionState = row.get::<_, String>(0).parse().map_err(|e| StoreError::Corrupt {
        execution: id.clone(),
        what: "its state".into(),
        detail: format!("{e}"),
    })?;
    if state.is_finished() {
        return Ok(Delivered::Finished(state));
    }
    if let Some(deadline) = row.get::<_, Option<i64>>(1).map(Timestamp::from_micros).filter(|d| *d <= delivery.at) {
        return Ok(Delivered::PastDeadline(deadline));
    }
    let kind = delivery.kind.as_str();
    let attempt = match delivery.for_async_step {
        true => match async_step_attempt(client, delivery).await? {
            Ok(attempt) => Some(i64::from(attempt)),
            Err(refused) => return Ok(refused),
        },
        false => None,
    };
    let failure = delivery.failure.as_ref().map(rows::failure_json).transpose()?;
    execute(
        client,
        queries::DELIVERY_INSERT,
        &[
            &id.as_str(),
            &kind,
            &delivery.name,
            &delivery.payload.as_deref().map(|p| p.get()),
            &failure,
            &delivery.at.as_micros(),
            &attempt,
        ],
    )
    .await
    .map_err(|e| backend(context(), e))?;
    // Counted in all cases (see `Store::suspend`); a waiting execution is due now.
    execute(client, queries::DELIVERY_WAKE, &[&id.as_str(), &delivery.at.as_micros()])
        .await
        .map_err(|e| backend(context(), e))?;
    if state == ExecutionState::Waiting {
        // Due now: a worker resumes it.
        notify(client, "work").await.map_err(|e| backend(context(), e))?;
    }
    Ok(Delivered::Stored { woke: state == ExecutionState::Waiting })
}

/// The attempt of an async step a completion from outside goes to, or why it is refused: one
/// delivery per attempt (see [`crate::store::stored_step_attempt`]).
async fn async_step_attempt(client: &Object, delivery: &Delivery) -> Result<Result<u32, Delivered>, StoreError> {
    let id = &delivery.execution;
    let context = || format!("cannot deliver to execution {id}");
    let latest = query(client, queries::STEP_LATEST, &[&id.as_str(), &delivery.name])
        .await
        .map_err(|e| backend(context(), e))?;
    let latest = latest.first().map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1), row.get::<_, i64>(2)));
    let key_made = match delivery.legacy_token {
        true => query(client, "SELECT created_at FROM secrets WHERE name = $1", &[&super::schema::TOKEN_KEY])
            .await
            .map_err(|e| backend(context(), e))?
            .first()
            .map(|row| row.get::<_, i64>(0)),
        false => None,
    };
    let attempt = match crate::store::stored_step_attempt(delivery, latest, key_made)? {
        Ok(attempt) => attempt,
        Err(refused) => return Ok(Err(refused)),
    };
    // What the step's inbox holds from outside: a completion (of any attempt), a delivery to
    // this attempt.
    let delivered = query(client, queries::STEP_DELIVERED, &[&id.as_str(), &delivery.name, &i64::from(attempt)])
        .await
        .map_err(|e| backend(context(), e))?;
    let (completed, this_attempt) = delivered.first().map_or((false, false), |row| (row.get(0), row.get(1)));
    Ok(match crate::store::refused_by_earlier(completed, this_attempt) {
        None => Ok(attempt),
        Some(refused) => Err(refused),
    })
}

async fn suspend_one(client: &Object, suspend: &Suspend) -> Result<Suspended, StoreError> {
    let id = &suspend.execution;
    let context = || format!("cannot suspend execution {id}");
    let suspended = execute(
        client,
        queries::SUSPEND,
        &[
            &id.as_str(),
            &(suspend.epoch as i64),
            &suspend.wake_at.map(Timestamp::as_micros),
            &(suspend.observed_wakeups as i64),
            &Timestamp::now().as_micros(),
            &ExecutionState::Running.as_str(),
        ],
    )
    .await
    .map_err(|e| backend(context(), e))?;
    if suspended == 1 {
        return Ok(Suspended::Yes);
    }
    let current =
        query(client, "SELECT epoch, wakeups, cancel_requested FROM executions WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(|e| backend(context(), e))?;
    let Some(row) = current.first() else { return Err(StoreError::NotFound(id.clone())) };
    let (epoch, wakeups, cancel) = (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64, row.get::<_, bool>(2));
    if epoch != suspend.epoch {
        return Err(StoreError::Fenced { execution: id.clone(), current: epoch, attempted: suspend.epoch });
    }
    Ok(if cancel { Suspended::Cancelled } else { Suspended::Woken(wakeups) })
}

async fn reopen_one(client: &Object, reopen: &Reopen) -> Result<Reopened, StoreError> {
    let id = &reopen.execution;
    let context = || format!("cannot compensate execution {id}");
    let failure = rows::failure_json(&reopen.failure)?;
    let sql = if reopen.purpose == Reopening::OperatorRetries {
        format!(
            "UPDATE executions SET owner = $2, lease_until = $3, epoch = epoch + 1, updated_at = $4, failure = NULL,
                 state = 'running'
             WHERE id = $1 AND state = 'paused'
             RETURNING {EXECUTION_COLUMNS}"
        )
    } else {
        format!(
            "UPDATE executions SET owner = $2, lease_until = $3, epoch = epoch + 1, updated_at = $4,
             failure = CASE WHEN state = 'compensating' THEN failure ELSE $5 END,
             retain_until = CASE WHEN state = 'compensating' THEN retain_until ELSE NULL END,
             state = 'compensating'
         WHERE id = $1
           AND (state = 'completed' OR ($6 AND state IN ('failed', 'blocked', 'paused'))
                OR (state = 'compensating' AND (owner IS NULL OR lease_until IS NULL OR lease_until < $4)))
         RETURNING {EXECUTION_COLUMNS}"
        )
    };
    let operator = reopen.purpose == Reopening::OperatorCompensates;
    let (lease_until, now) = (reopen.lease_until.as_micros(), reopen.now.as_micros());
    let all: [&(dyn ToSql + Sync); 6] = [&id.as_str(), &reopen.owner, &lease_until, &now, &failure, &operator];
    // A retry sets no failure and takes only paused executions: it reads the first four.
    let taken = if reopen.purpose == Reopening::OperatorRetries { &all[..4] } else { &all[..] };
    let updated = query(client, &sql, taken).await.map_err(|e| backend(context(), e))?;
    if let Some(row) = updated.first() {
        return Ok(Reopened::Yes(Box::new(rows::execution(row)?)));
    }
    match read_execution(client, id).await? {
        Some(record) => Ok(Reopened::No(record.state)),
        None => Ok(Reopened::NotFound),
    }
}
