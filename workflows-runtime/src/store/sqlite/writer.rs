//! The single writer: one thread owns the write connection and commits the pending writes of
//! all executions in one transaction per fsync (group commit).
//!
//! Commands arrive over a channel in the order they were submitted. The thread takes every
//! command waiting, applies each inside its own savepoint (one failing command does not undo
//! the others), commits once, and only then answers them. Lazy appends wait for the next
//! durable command, or for `lazy_delay`, so that "attempt started" records ride along with the
//! next commit instead of costing an fsync of their own.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::checksum;
use super::error::backend;
use super::queries;
use super::rows::{self, ACTIVE_STATES};
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::store::commands::{Applied, Command, Failed, apply_nothing, remember_failed};
use crate::store::{
    AppendBatch, Claim, CreateOutcome, Delivered, Delivery, NewExecution, Purge, Renewal, Renewals, Renewed, Reopen,
    Reopened, Reopening, StoreError, Suspend, Suspended,
};
use crate::time::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

/// At most this many commands go into one transaction.
const MAX_BATCH: usize = 4096;

/// The writer thread's loop; returns when every sender is gone, after a last commit.
pub(super) fn run(mut conn: Connection, commands: Receiver<Command>, lazy_delay: Duration) {
    let mut queue: Vec<Command> = Vec::new();
    let mut failed = Failed::new();
    // When the oldest uncommitted lazy command arrived.
    let mut lazy_since: Option<Instant> = None;
    loop {
        let (received, closed) = match lazy_since {
            None => match commands.recv() {
                Ok(command) => (Some(command), false),
                Err(_) => (None, true),
            },
            Some(since) => {
                match commands.recv_timeout((since + lazy_delay).saturating_duration_since(Instant::now())) {
                    Ok(command) => (Some(command), false),
                    Err(RecvTimeoutError::Timeout) => (None, false),
                    Err(RecvTimeoutError::Disconnected) => (None, true),
                }
            }
        };
        queue.extend(received);
        // Everything already waiting goes into the same transaction.
        while queue.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => queue.push(command),
                Err(_) => break,
            }
        }
        let lazy_due = lazy_since.is_some_and(|since| since.elapsed() >= lazy_delay);
        if !closed && !lazy_due && queue.iter().all(Command::is_lazy) {
            if !queue.is_empty() {
                lazy_since.get_or_insert_with(Instant::now);
            }
            continue;
        }
        // A purge batch commits on its own, after the writes that wait with it: the engine's
        // writes never share a transaction with it, so each waits behind one batch at most.
        let (purges, writes): (Vec<Command>, Vec<Command>) = std::mem::take(&mut queue)
            .into_iter()
            .partition(|c| matches!(c, Command::Purge(..) | Command::PurgeEvents(..)));
        if !writes.is_empty() {
            commit(&mut conn, writes, &mut failed);
        }
        for purge in purges {
            commit(&mut conn, vec![purge], &mut failed);
        }
        lazy_since = None;
        if closed {
            return;
        }
    }
}

fn commit(conn: &mut Connection, commands: Vec<Command>, failed: &mut Failed) {
    let mut applied = Vec::with_capacity(commands.len());
    // The executions that wrote in this batch, in case it does not commit.
    let mut writers = Vec::new();
    let mut commands = commands.into_iter();
    let outcome = match exec(conn, "BEGIN IMMEDIATE") {
        Ok(()) => {
            let mut rolled_back = None;
            for command in commands.by_ref() {
                let writer = match &command {
                    Command::Append(batch, _) => Some((batch.execution.clone(), batch.epoch)),
                    _ => None,
                };
                let done = match (&writer, command) {
                    (Some((id, epoch)), Command::Append(_, reply)) if failed.get(id) == Some(epoch) => {
                        Applied::Unit(reply, Err(StoreError::earlier_write_failed(id)))
                    }
                    (_, command) => apply(conn, command),
                };
                if let Some((id, epoch)) = writer {
                    if done.error().is_some() {
                        remember_failed(failed, id.clone(), epoch);
                    }
                    writers.push((id, epoch));
                }
                // On a full disk or an I/O error SQLite rolls the whole transaction back by
                // itself: every command of this batch is lost, and that error is the cause.
                if conn.is_autocommit() {
                    rolled_back = Some(done.error().unwrap_or_else(|| "the write transaction was rolled back".into()));
                    applied.push(done);
                    break;
                }
                applied.push(done);
            }
            match rolled_back {
                Some(cause) => Err(cause),
                None => exec(conn, "COMMIT").map_err(|e| {
                    // A failed COMMIT may leave the transaction open: undo it.
                    if !conn.is_autocommit() {
                        let _ = exec(conn, "ROLLBACK");
                    }
                    e.to_string()
                }),
            }
        }
        Err(e) => Err(format!("cannot start a write transaction: {e}")),
    };
    let rest: Vec<Command> = commands.collect();
    if outcome.is_err() {
        // Nothing of this batch landed: the executions that wrote in it are failed.
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

/// Runs a statement without parameters, prepared once per connection: transaction control
/// runs several times per commit.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn apply(conn: &Connection, command: Command) -> Applied {
    match command {
        Command::Create(new, reply) => Applied::Create(reply, in_savepoint(conn, |c| create(c, new))),
        Command::Append(batch, reply) => Applied::Unit(reply, in_savepoint(conn, |c| append(c, batch))),
        Command::Claim(claim, reply) => Applied::Records(reply, in_savepoint(conn, |c| claim_orphans(c, &claim))),
        Command::Renew(renewal, reply) => Applied::Renewed(reply, in_savepoint(conn, |c| renew(c, &renewal))),
        Command::Release(owner, reply) => Applied::Count(reply, in_savepoint(conn, |c| release(c, &owner))),
        Command::ReleaseOne(id, epoch, reply) => {
            Applied::Flag(reply, in_savepoint(conn, |c| release_one(c, &id, epoch)))
        }
        Command::RequestCancel(id, retain_until, reply) => {
            Applied::Flag(reply, in_savepoint(conn, |c| request_cancel(c, &id, retain_until)))
        }
        Command::DefineQueues(defined, reply) => {
            Applied::Unit(reply, in_savepoint(conn, |c| super::queues::define(c, &defined)))
        }
        Command::Schedules(names, now, reply) => {
            Applied::Schedules(reply, in_savepoint(conn, |c| super::schedules::states(c, &names, now)))
        }
        Command::AdvanceSchedule(advance, reply) => {
            Applied::Flag(reply, in_savepoint(conn, |c| super::schedules::advance(c, &advance)))
        }
        Command::PauseSchedule(name, paused, reply) => {
            Applied::Flag(reply, in_savepoint(conn, |c| super::schedules::pause(c, &name, paused)))
        }
        Command::RecordEvent(event, reply) => {
            Applied::Flag(reply, in_savepoint(conn, |c| super::events::record(c, &event)))
        }
        Command::MarkDispatched(ids, reply) => {
            Applied::Unit(reply, in_savepoint(conn, |c| super::events::mark(c, &ids)))
        }
        Command::PurgeEvents(before, limit, reply) => {
            Applied::Count(reply, in_savepoint(conn, |c| super::events::purge(c, before, limit)))
        }
        Command::RecordUndelivered(undelivered, reply) => {
            Applied::Unit(reply, in_savepoint(conn, |c| super::events::record_undelivered(c, &undelivered)))
        }
        Command::ForgetUndelivered(event, subscriber, reply) => Applied::Count(
            reply,
            in_savepoint(conn, |c| super::events::forget_undelivered(c, &event, subscriber.as_deref())),
        ),
        Command::Acquire(id, epoch, reply) => Applied::Flag(reply, in_savepoint(conn, |c| acquire(c, &id, epoch))),
        Command::Purge(purge, reply) => Applied::Count(reply, in_savepoint(conn, |c| purge_finished(c, &purge))),
        Command::Deliver(delivery, reply) => Applied::Delivered(reply, in_savepoint(conn, |c| deliver(c, &delivery))),
        Command::Suspend(suspend, reply) => Applied::Suspended(reply, in_savepoint(conn, |c| suspend_one(c, &suspend))),
        Command::Reopen(reopen, reply) => Applied::Reopened(reply, in_savepoint(conn, |c| reopen_one(c, &reopen))),
    }
}

/// Runs `f` in a savepoint: a failed command leaves no trace, and the others still commit.
fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
    exec(conn, "SAVEPOINT command").map_err(|e| backend("cannot open a savepoint", e))?;
    let result = f(conn);
    if conn.is_autocommit() {
        // SQLite already rolled the whole transaction back (see `commit`).
        return result;
    }
    if result.is_err() {
        exec(conn, "ROLLBACK TO command").map_err(|e| backend("cannot roll back a failed write", e))?;
    }
    exec(conn, "RELEASE command").map_err(|e| backend("cannot release a savepoint", e))?;
    result
}

fn create(conn: &Connection, new: NewExecution) -> Result<CreateOutcome, StoreError> {
    let context = || format!("cannot create execution {}", new.id);
    let mut state = ExecutionState::Running;
    if let Some(key) = &new.exclusive_key {
        let sql = format!(
            "SELECT id FROM executions WHERE exclusive_key = ?1 AND (state IN {ACTIVE_STATES} OR state IN ('waiting', 'blocked', 'paused'))
             ORDER BY created_at, id LIMIT 1"
        );
        let holder: Option<String> = conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(|e| backend(context(), e))?;
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
    let inserted = conn
        .prepare_cached(
            "INSERT INTO executions (id, workflow, fingerprint, version, input, state, result, failure,
                                     created_at, updated_at, owner, lease_until, epoch, exclusive_key, rerun_of,
                                     parent_id, parent_key, deadline, checksum, queue)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7, ?7, ?8, ?9, ?16, ?10, ?11, ?12, ?13, ?14, ?15, ?17)
             ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                new.id.as_str(),
                new.workflow,
                new.fingerprint,
                new.version,
                new.input.get(),
                state.as_str(),
                new.now.as_micros(),
                owner,
                owner.is_some().then(|| new.lease_until.as_micros()),
                new.exclusive_key,
                new.rerun_of.as_ref().map(|id| id.as_str()),
                new.parent.as_ref().map(|(id, _)| id.as_str()),
                new.parent.as_ref().map(|(_, key)| key.as_str()),
                new.deadline.map(Timestamp::as_micros),
                checksum::content(&checksum::Content {
                    id: new.id.as_str(),
                    workflow: new.workflow,
                    fingerprint: new.fingerprint,
                    version: i64::from(new.version),
                    input: new.input.get(),
                    created_at: new.now.as_micros(),
                    exclusive_key: new.exclusive_key.as_deref(),
                    rerun_of: new.rerun_of.as_ref().map(|id| id.as_str()),
                    parent_id: new.parent.as_ref().map(|(id, _)| id.as_str()),
                    parent_key: new.parent.as_ref().map(|(_, key)| key.as_str()),
                    deadline: new.deadline.map(Timestamp::as_micros),
                    queue: new.queue.as_deref(),
                }),
                if new.queue.is_some() { 0 } else { 1 },
                new.queue,
            ])
        })
        .map_err(|e| backend(context(), e))?;
    if inserted == 1 {
        return Ok(if state == ExecutionState::Pending { CreateOutcome::Queued } else { CreateOutcome::Created });
    }
    let existing = read_execution(conn, &new.id)?.ok_or_else(|| StoreError::NotFound(new.id.clone()))?;
    Ok(CreateOutcome::Exists(Box::new(existing)))
}

pub(super) fn read_execution(conn: &Connection, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
    let sql = format!("SELECT {} FROM executions WHERE id = ?1", rows::EXECUTION_COLUMNS);
    let mut statement = conn.prepare_cached(&sql).map_err(|e| backend("cannot read an execution", e))?;
    let mut found = statement.query([id.as_str()]).map_err(|e| backend("cannot read an execution", e))?;
    match found.next().map_err(|e| backend("cannot read an execution", e))? {
        Some(row) => rows::execution(row).map(Some),
        None => Ok(None),
    }
}

fn append(conn: &Connection, batch: AppendBatch) -> Result<(), StoreError> {
    let id = &batch.execution;
    let context = || format!("cannot write to the journal of execution {id}");
    let found: Option<(i64, i64)> = conn
        .prepare_cached("SELECT epoch, journal_len FROM executions WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(|e| backend(context(), e))?;
    let (epoch, length) = found.ok_or_else(|| StoreError::NotFound(id.clone()))?;
    if epoch as u64 != batch.epoch {
        return Err(StoreError::Fenced { execution: id.clone(), current: epoch as u64, attempted: batch.epoch });
    }
    let first = length as u64;
    if !batch.entries.is_empty() {
        // The journal's length is what a journal read back is checked against (see `checksum`).
        // (No `RETURNING` here: it costs SQLite a temporary table per statement.)
        conn.prepare_cached("UPDATE executions SET journal_len = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id.as_str(), length + batch.entries.len() as i64]))
            .map_err(|e| backend(context(), e))?;
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO journal (execution_id, idx, at, kind, call_key, event, checksum)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(|e| backend(context(), e))?;
        for (offset, entry) in batch.entries.iter().enumerate() {
            let expected = first + offset as u64;
            if entry.index != expected {
                return Err(StoreError::OutOfSequence { execution: id.clone(), expected, got: entry.index });
            }
            let event = rows::event_json(&entry.event)?;
            let call_key = entry.event.step().1.to_string();
            let (index, at, kind) = (entry.index as i64, entry.at.as_micros(), entry.event.kind());
            let sum = checksum::journal_entry(id.as_str(), index, at, kind, &call_key, &event);
            insert
                .execute(params![id.as_str(), index, at, kind, call_key, event, sum])
                .map_err(|e| backend(context(), e))?;
        }
    }
    if let Some(transition) = &batch.transition {
        let failure = transition.failure.as_ref().map(rows::failure_json).transpose()?;
        conn.prepare_cached(
            "UPDATE executions SET state = ?2, result = ?3, failure = ?4, updated_at = ?5,
                 owner = CASE WHEN ?6 THEN NULL ELSE owner END,
                 lease_until = CASE WHEN ?6 THEN NULL ELSE lease_until END,
                 retain_until = ?7, result_checksum = ?8, blocked_by = COALESCE(?9, blocked_by)
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                id.as_str(),
                transition.state.as_str(),
                transition.result.as_deref().map(|r| r.get()),
                failure,
                Timestamp::now().as_micros(),
                transition.state.releases_owner(),
                transition.retain_until.map(Timestamp::as_micros),
                transition.result.as_deref().map(|result| checksum::result(result.get())),
                crate::store::blocked_by_text(transition),
            ])
        })
        .map_err(|e| backend(context(), e))?;
    }
    if let Some(delivery) = &batch.deliver {
        deliver(conn, delivery)?;
    }
    let finished = batch.transition.as_ref().map(|t| t.state).filter(|s| s.is_finished());
    super::events::with_write(conn, &batch.execution, &batch.events, finished)?;
    Ok(())
}

fn claim_orphans(conn: &Connection, claim: &Claim) -> Result<Vec<ExecutionRecord>, StoreError> {
    let context = "cannot claim orphaned executions";
    let sql = queries::claim(queries::Claiming::of(claim));
    let workflows = serde_json::to_string(&claim.workflows).map_err(|e| backend(context, e))?;
    let mut statement = conn.prepare_cached(&sql).map_err(|e| backend(context, e))?;
    let all = params![
        claim.owner,
        claim.lease_until.as_micros(),
        claim.now.as_micros(),
        workflows,
        claim.limit as i64,
        claim.only.as_ref().map(ExecutionId::as_str),
        claim.unblock.as_deref(),
    ];
    // The build (`?7`) only for a claim of blocked executions, the only kind that reads it.
    let taken = if claim.unblock.is_some() { all } else { &all[..6] };
    let mut claimed = statement.query(taken).map_err(|e| backend(context, e))?;
    let mut records = Vec::new();
    let mut corrupt = Vec::new();
    while let Some(row) = claimed.next().map_err(|e| backend(context, e))? {
        let raw_id = rows::raw_id(row)?;
        match rows::execution(row) {
            Ok(record) => records.push(record),
            Err(StoreError::Corrupt { execution, what, detail }) => corrupt.push((raw_id, execution, what, detail)),
            Err(other) => return Err(other),
        }
    }
    drop(claimed);
    drop(statement);
    // A row that cannot be decoded cannot be resumed: fail that execution, not the engine. Its
    // data stays as stored (only its state and failure change), for whoever repairs it.
    for (raw_id, execution, what, detail) in corrupt {
        let message = format!("execution {execution} cannot be resumed: {what} cannot be decoded: {detail}");
        tracing::error!(%execution, "{message}");
        let failure = rows::failure_json(&Failure::new(FailureKind::Decode, message))?;
        conn.execute(
            "UPDATE executions SET state = ?2, failure = ?3, owner = NULL, lease_until = NULL, updated_at = ?4
             WHERE id = ?1",
            params![rows::id_param(&raw_id), ExecutionState::Failed.as_str(), failure, Timestamp::now().as_micros()],
        )
        .map_err(|e| backend(context, e))?;
    }
    if claim.only.is_none() && claim.unblock.is_none() && records.len() < claim.limit {
        let left = claim.limit - records.len();
        records.extend(super::queues::admit(conn, claim, left)?);
    }
    Ok(records)
}

fn renew(conn: &Connection, renewal: &Renewal) -> Result<Renewals, StoreError> {
    let context = "cannot renew leases";
    // One row at a time, by its key: only the executions the engine drives, at their epochs.
    let sql = format!(
        "UPDATE executions SET lease_until = MAX(COALESCE(lease_until, 0), ?4)
         WHERE id = ?1 AND epoch = ?2 AND owner = ?3 AND state IN {ACTIVE_STATES}
         RETURNING cancel_requested"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(|e| backend(context, e))?;
    let mut renewed = Vec::with_capacity(renewal.held.len());
    for (id, epoch) in &renewal.held {
        let requested: Option<i64> = statement
            .query_row(params![id.as_str(), *epoch as i64, renewal.owner, renewal.lease_until.as_micros()], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| backend(context, e))?;
        if let Some(requested) = requested {
            renewed.push(Renewed { execution: id.clone(), epoch: *epoch, cancel_requested: requested != 0 });
        }
    }
    Ok(Renewals { renewed, busy: Vec::new() })
}

fn request_cancel(conn: &Connection, id: &ExecutionId, retain_until: Timestamp) -> Result<bool, StoreError> {
    // A queued execution never started: nothing to compensate.
    let cancelled = conn
        .prepare_cached(
            "UPDATE executions SET state = 'cancelled', cancel_requested = 1, updated_at = ?2, retain_until = ?3
             WHERE id = ?1 AND state = 'queued'",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), Timestamp::now().as_micros(), retain_until.as_micros()]))
        .map_err(|e| backend(format!("cannot cancel queued execution {id}"), e))?;
    if cancelled == 1 {
        return Ok(true);
    }
    // A blocked one becomes an orphan: the next claim takes it and compensates it, without
    // replaying its body (which this code could not).
    conn.prepare_cached(
        "UPDATE executions SET state = 'running', cancel_requested = 1, owner = NULL, lease_until = NULL,
             updated_at = ?2
         WHERE id = ?1 AND state IN ('blocked', 'paused')",
    )
    .and_then(|mut s| s.execute(params![id.as_str(), Timestamp::now().as_micros()]))
    .map_err(|e| backend(format!("cannot cancel blocked execution {id}"), e))?;
    // A waiting execution is woken, so that an engine takes it over and cancels it.
    let sql = format!(
        "UPDATE executions SET cancel_requested = 1, updated_at = ?2,
             wake_at = CASE WHEN state = 'waiting' THEN ?2 ELSE wake_at END
         WHERE id = ?1 AND (state IN {ACTIVE_STATES} OR state = 'waiting')"
    );
    conn.execute(&sql, params![id.as_str(), Timestamp::now().as_micros()])
        .map(|n| n == 1)
        .map_err(|e| backend(format!("cannot request the cancellation of execution {id}"), e))
}

fn acquire(conn: &Connection, id: &ExecutionId, epoch: u64) -> Result<bool, StoreError> {
    // The oldest pending execution of a key runs once no execution holds the key.
    conn.prepare_cached(
        "UPDATE executions SET state = 'running', updated_at = ?3
         WHERE id = ?1 AND epoch = ?2 AND state = 'pending'
           AND NOT EXISTS (
               SELECT 1 FROM executions AS other
               WHERE other.exclusive_key = executions.exclusive_key
                 AND other.state IN ('running', 'compensating', 'waiting', 'blocked', 'paused'))
           AND id = (
               SELECT other.id FROM executions AS other
               WHERE other.exclusive_key = executions.exclusive_key AND other.state = 'pending'
               ORDER BY other.created_at, other.id LIMIT 1)",
    )
    .and_then(|mut s| s.execute(params![id.as_str(), epoch as i64, Timestamp::now().as_micros()]))
    .map(|n| n == 1)
    .map_err(|e| backend(format!("cannot start queued execution {id}"), e))
}

fn purge_finished(conn: &Connection, purge: &Purge) -> Result<u64, StoreError> {
    let context = "cannot purge finished executions";
    let select = |sql: &str, before: Timestamp, limit: usize| -> rusqlite::Result<Vec<String>> {
        conn.prepare_cached(sql)?.query_map(params![before.as_micros(), limit as i64], |r| r.get(0))?.collect()
    };
    let mut due = match purge.retained_before {
        Some(before) => select(&queries::purge_retained(), before, purge.limit).map_err(|e| backend(context, e))?,
        None => Vec::new(),
    };
    if let Some(before) = purge.finished_before.filter(|_| due.len() < purge.limit) {
        let more = select(&queries::purge_finished_before(), before, purge.limit - due.len())
            .map_err(|e| backend(context, e))?;
        // Both conditions may select one execution.
        for id in more {
            if !due.contains(&id) {
                due.push(id);
            }
        }
    }
    for id in &due {
        conn.prepare_cached("DELETE FROM journal WHERE execution_id = ?1")
            .and_then(|mut s| s.execute([id]))
            .and_then(|_| conn.prepare_cached("DELETE FROM inbox WHERE execution_id = ?1")?.execute([id]))
            .and_then(|_| conn.prepare_cached("DELETE FROM executions WHERE id = ?1")?.execute([id]))
            .map_err(|e| backend(context, e))?;
    }
    Ok(due.len() as u64)
}

fn release(conn: &Connection, owner: &str) -> Result<u64, StoreError> {
    let sql =
        format!("UPDATE executions SET owner = NULL, lease_until = NULL WHERE owner = ?1 AND state IN {ACTIVE_STATES}");
    conn.execute(&sql, params![owner]).map(|n| n as u64).map_err(|e| backend("cannot release executions", e))
}

fn release_one(conn: &Connection, id: &ExecutionId, epoch: u64) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE executions SET owner = NULL, lease_until = NULL WHERE id = ?1 AND epoch = ?2 AND state IN {ACTIVE_STATES}"
    );
    conn.execute(&sql, params![id.as_str(), epoch as i64])
        .map(|n| n == 1)
        .map_err(|e| backend(format!("cannot release execution {id}"), e))
}

fn deliver(conn: &Connection, delivery: &Delivery) -> Result<Delivered, StoreError> {
    let id = &delivery.execution;
    let context = || format!("cannot deliver to execution {id}");
    let found: Option<(String, Option<i64>)> = conn
        .prepare_cached("SELECT state, deadline FROM executions WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(|e| backend(context(), e))?;
    let Some((state, deadline)) = found else { return Ok(Delivered::NotFound) };
    let state: ExecutionState = state.parse().map_err(|e| StoreError::Corrupt {
        execution: id.clone(),
        what: "its state".into(),
        detail: format!("{e}"),
    })?;
    if state.is_finished() {
        return Ok(Delivered::Finished(state));
    }
    if let Some(deadline) = deadline.map(Timestamp::from_micros).filter(|d| *d <= delivery.at) {
        return Ok(Delivered::PastDeadline(deadline));
    }
    let kind = delivery.kind.as_str();
    let attempt = match delivery.for_async_step {
        true => match async_step_attempt(conn, delivery)? {
            Ok(attempt) => Some(attempt),
            Err(refused) => return Ok(refused),
        },
        false => None,
    };
    let position: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(position) + 1, 0) FROM inbox WHERE execution_id = ?1 AND kind = ?2 AND name = ?3",
        )
        .and_then(|mut s| s.query_row(params![id.as_str(), kind, delivery.name], |r| r.get(0)))
        .map_err(|e| backend(context(), e))?;
    let failure = delivery.failure.as_ref().map(rows::failure_json).transpose()?;
    conn.prepare_cached(
        "INSERT INTO inbox (execution_id, kind, name, position, payload, failure, at, attempt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.as_str(),
            kind,
            delivery.name,
            position,
            delivery.payload.as_deref().map(|p| p.get()),
            failure,
            delivery.at.as_micros(),
            attempt
        ])
    })
    .map_err(|e| backend(context(), e))?;
    // Counted in all cases (see `Store::suspend`); a waiting execution is due now: the next
    // claim (of any engine that runs its workflow) resumes it.
    conn.prepare_cached(
        "UPDATE executions SET wakeups = wakeups + 1,
             wake_at = CASE WHEN state = 'waiting' THEN MIN(COALESCE(wake_at, ?2), ?2) ELSE wake_at END
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id.as_str(), delivery.at.as_micros()]))
    .map_err(|e| backend(context(), e))?;
    Ok(Delivered::Stored { woke: state == ExecutionState::Waiting })
}

/// The attempt of an async step a completion from outside goes to (see
/// [`crate::store::stored_step_attempt`]), or why it is refused: one delivery per attempt.
fn async_step_attempt(conn: &Connection, delivery: &Delivery) -> Result<Result<u32, Delivered>, StoreError> {
    let id = &delivery.execution;
    let context = || format!("cannot deliver to execution {id}");
    let latest: Option<(i64, String, i64)> = conn
        .prepare_cached(
            "SELECT idx, event, at FROM journal
             WHERE execution_id = ?1 AND call_key = ?2
               AND kind IN ('step_started', 'step_waiting', 'step_completed', 'step_failed', 'step_skipped')
             ORDER BY idx DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![id.as_str(), delivery.name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
        })
        .map_err(|e| backend(context(), e))?;
    let key_made: Option<i64> = match delivery.legacy_token {
        true => Some(
            conn.prepare_cached("SELECT created_at FROM secrets WHERE name = ?1")
                .and_then(|mut s| s.query_row([super::schema::TOKEN_KEY], |r| r.get(0)))
                .map_err(|e| backend(context(), e))?,
        ),
        false => None,
    };
    let attempt = match crate::store::stored_step_attempt(delivery, latest, key_made)? {
        Ok(attempt) => attempt,
        Err(refused) => return Ok(Err(refused)),
    };
    // What the step's inbox holds from outside: a completion (of any attempt), a delivery to
    // this attempt.
    let (completed, this_attempt): (bool, bool) = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(failure IS NULL), 0), COALESCE(MAX(attempt = ?3), 0) FROM inbox
             WHERE execution_id = ?1 AND kind = 'completion' AND name = ?2 AND attempt IS NOT NULL",
        )
        .and_then(|mut s| s.query_row(params![id.as_str(), delivery.name, attempt], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(|e| backend(context(), e))?;
    Ok(match crate::store::refused_by_earlier(completed, this_attempt) {
        None => Ok(attempt),
        Some(refused) => Err(refused),
    })
}

fn suspend_one(conn: &Connection, suspend: &Suspend) -> Result<Suspended, StoreError> {
    let id = &suspend.execution;
    let context = || format!("cannot suspend execution {id}");
    let suspended = conn
        .prepare_cached(
            "UPDATE executions SET state = 'waiting', wake_at = ?3, owner = NULL, lease_until = NULL, updated_at = ?5
             WHERE id = ?1 AND epoch = ?2 AND wakeups = ?4 AND state = 'running' AND cancel_requested = 0",
        )
        .and_then(|mut s| {
            s.execute(params![
                id.as_str(),
                suspend.epoch as i64,
                suspend.wake_at.map(Timestamp::as_micros),
                suspend.observed_wakeups as i64,
                Timestamp::now().as_micros()
            ])
        })
        .map_err(|e| backend(context(), e))?;
    if suspended == 1 {
        return Ok(Suspended::Yes);
    }
    let current: Option<(i64, i64, i64)> = conn
        .prepare_cached("SELECT epoch, wakeups, cancel_requested FROM executions WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(|e| backend(context(), e))?;
    match current {
        None => Err(StoreError::NotFound(id.clone())),
        Some((epoch, _, _)) if epoch as u64 != suspend.epoch => {
            Err(StoreError::Fenced { execution: id.clone(), current: epoch as u64, attempted: suspend.epoch })
        }
        Some((_, _, cancel)) if cancel != 0 => Ok(Suspended::Cancelled),
        Some((_, wakeups, _)) => Ok(Suspended::Woken(wakeups as u64)),
    }
}

fn reopen_one(conn: &Connection, reopen: &Reopen) -> Result<Reopened, StoreError> {
    let id = &reopen.execution;
    let context = || format!("cannot compensate execution {id}");
    let failure = rows::failure_json(&reopen.failure)?;
    let sql = if reopen.purpose == Reopening::OperatorRetries {
        format!(
            "UPDATE executions SET owner = ?2, lease_until = ?3, epoch = epoch + 1, updated_at = ?4, failure = NULL,
                 state = 'running'
             WHERE id = ?1 AND state = 'paused'
             RETURNING {}",
            rows::EXECUTION_COLUMNS
        )
    } else {
        format!(
            "UPDATE executions SET owner = ?2, lease_until = ?3, epoch = epoch + 1, updated_at = ?4,
             failure = CASE WHEN state = 'compensating' THEN failure ELSE ?5 END,
             retain_until = CASE WHEN state = 'compensating' THEN retain_until ELSE NULL END,
             state = 'compensating'
         WHERE id = ?1
           AND (state = 'completed' OR (?6 AND state IN ('failed', 'blocked', 'paused'))
                OR (state = 'compensating' AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?4)))
         RETURNING {}",
            rows::EXECUTION_COLUMNS
        )
    };
    let mut statement = conn.prepare_cached(&sql).map_err(|e| backend(context(), e))?;
    let all = params![
        id.as_str(),
        reopen.owner,
        reopen.lease_until.as_micros(),
        reopen.now.as_micros(),
        failure,
        reopen.purpose == Reopening::OperatorCompensates
    ];
    // A retry sets no failure and takes only paused executions: it reads the first four.
    let taken = if reopen.purpose == Reopening::OperatorRetries { &all[..4] } else { all };
    let mut updated = statement.query(taken).map_err(|e| backend(context(), e))?;
    if let Some(row) = updated.next().map_err(|e| backend(context(), e))? {
        return Ok(Reopened::Yes(Box::new(rows::execution(row)?)));
    }
    drop(updated);
    drop(statement);
    match read_execution(conn, id)? {
        Some(record) => Ok(Reopened::No(record.state)),
        None => Ok(Reopened::NotFound),
    }
}
