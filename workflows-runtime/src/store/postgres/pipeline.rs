//! The writer's fast path: a batch made only of journal writes and plain creations — the
//! writes of running workflows — goes to the server as one pipeline: `BEGIN`, one statement
//! per write, `COMMIT`, sent together and answered together. One round trip and one WAL flush
//! for the whole batch, where the careful path (`writer::commit`) pays a few round trips per
//! write.
//!
//! Each write is one statement that cannot fail for a reason the contract expects: a journal
//! write whose epoch is stale or whose first entry does not follow the journal changes nothing
//! (its fence matches no row) and says so; a creation of an id that exists inserts nothing.
//! Such a write is refused after the commit, alone, with the same errors as on the careful
//! path. If a statement fails anyway (a lost connection, a constraint), the server rolls the
//! whole transaction back and the writer runs the batch again the careful way, each write in
//! a savepoint of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use deadpool_postgres::Object;
use futures_util::future::{MaybeDone, maybe_done};
use tokio_postgres::types::ToSql;

use super::rows;
use crate::store::commands::{Command, Failed};
use crate::store::{AppendBatch, NewExecution, StoreError};
use crate::time::Timestamp;

/// A journal write: the fence, the entries, the state change and its notices, in one statement.
const APPEND: &str = "
WITH fence AS (
    UPDATE executions SET
        journal_len = journal_len + $3,
        state = COALESCE($4::text, state),
        result = CASE WHEN $4::text IS NULL THEN result ELSE $5::text END,
        failure = CASE WHEN $4::text IS NULL THEN failure ELSE $6::text END,
        updated_at = CASE WHEN $4::text IS NULL THEN updated_at ELSE $7 END,
        owner = CASE WHEN $8 THEN NULL ELSE owner END,
        lease_until = CASE WHEN $8 THEN NULL ELSE lease_until END,
        retain_until = CASE WHEN $4::text IS NULL THEN retain_until ELSE $9::bigint END
    WHERE id = $1 AND epoch = $2 AND ($10::bigint IS NULL OR journal_len = $10)
    RETURNING exclusive_key IS NOT NULL AS keyed
), entries AS (
    INSERT INTO journal (execution_id, idx, at, kind, call_key, event)
    SELECT $1, e.idx, e.at, e.kind, e.call_key, e.event
    FROM UNNEST($11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::text[]) AS e(idx, at, kind, call_key, event)
    WHERE EXISTS (SELECT 1 FROM fence)
), finished AS (
    SELECT pg_notify(current_schema(), 'finished ' || $1::text) FROM fence WHERE $8
), released AS (
    SELECT pg_notify(current_schema(), 'work') FROM fence WHERE $8 AND fence.keyed
)
SELECT (SELECT COUNT(*) FROM fence), (SELECT COUNT(*) FROM finished), (SELECT COUNT(*) FROM released)";

/// A creation without an exclusive key (it runs at once), and its notice if it is for the
/// workers.
const CREATE: &str = "
WITH created AS (
    INSERT INTO executions (id, workflow, fingerprint, version, input, state, created_at, updated_at, owner,
                            lease_until, epoch, rerun_of, parent_id, parent_key, deadline)
    VALUES ($1, $2, $3, $4, $5, 'running', $6, $6, $7, $8, 1, $9, $10, $11, $12)
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
), work AS (
    SELECT pg_notify(current_schema(), 'work') FROM created WHERE $7::text IS NULL
)
SELECT (SELECT COUNT(*) FROM created), (SELECT COUNT(*) FROM work)";

/// True if every command of the batch can go in the pipeline.
pub(super) fn fits(commands: &[Command], failed: &Failed) -> bool {
    commands.iter().all(|command| match command {
        Command::Append(batch, _) => {
            let first = batch.entries.iter().next().map(|e| e.index);
            batch.deliver.is_none()
                && failed.get(&batch.execution) != Some(&batch.epoch)
                && batch.entries.iter().enumerate().all(|(offset, e)| Some(e.index) == first.map(|f| f + offset as u64))
        }
        Command::Create(new, _) => new.exclusive_key.is_none(),
        _ => false,
    })
}

/// The parameters of one statement, owned, so that every statement of the pipeline can
/// borrow its own while they are all in flight.
enum Params {
    Append {
        id: String,
        epoch: i64,
        added: i64,
        state: Option<&'static str>,
        result: Option<String>,
        failure: Option<String>,
        now: i64,
        finished: bool,
        retain_until: Option<i64>,
        first: Option<i64>,
        indexes: Vec<i64>,
        times: Vec<i64>,
        kinds: Vec<&'static str>,
        keys: Vec<String>,
        events: Vec<String>,
    },
    Create {
        id: String,
        workflow: &'static str,
        fingerprint: &'static str,
        version: i64,
        input: String,
        now: i64,
        owner: Option<String>,
        lease_until: Option<i64>,
        rerun_of: Option<String>,
        parent_id: Option<String>,
        parent_key: Option<String>,
        deadline: Option<i64>,
    },
}

impl Params {
    fn append(batch: &AppendBatch) -> Result<Self, StoreError> {
        let transition = batch.transition.as_ref();
        let mut events = Vec::with_capacity(batch.entries.len());
        for entry in batch.entries.iter() {
            events.push(rows::event_json(&entry.event)?);
        }
        Ok(Self::Append {
            id: batch.execution.as_str().to_owned(),
            epoch: batch.epoch as i64,
            added: batch.entries.len() as i64,
            state: transition.map(|t| t.state.as_str()),
            result: transition.and_then(|t| t.result.as_deref()).map(|r| r.get().to_owned()),
            failure: transition.and_then(|t| t.failure.as_ref()).map(rows::failure_json).transpose()?,
            now: Timestamp::now().as_micros(),
            finished: transition.is_some_and(|t| t.state.is_finished()),
            retain_until: transition.and_then(|t| t.retain_until).map(Timestamp::as_micros),
            first: batch.entries.iter().next().map(|e| e.index as i64),
            indexes: batch.entries.iter().map(|e| e.index as i64).collect(),
            times: batch.entries.iter().map(|e| e.at.as_micros()).collect(),
            kinds: batch.entries.iter().map(|e| e.event.kind()).collect(),
            keys: batch.entries.iter().map(|e| e.event.step().1.to_string()).collect(),
            events,
        })
    }

    fn create(new: &NewExecution) -> Self {
        Self::Create {
            id: new.id.as_str().to_owned(),
            workflow: new.workflow,
            fingerprint: new.fingerprint,
            version: i64::from(new.version),
            input: new.input.get().to_owned(),
            now: new.now.as_micros(),
            owner: new.owner.as_deref().map(str::to_owned),
            lease_until: new.owner.is_some().then(|| new.lease_until.as_micros()),
            rerun_of: new.rerun_of.as_ref().map(|id| id.as_str().to_owned()),
            parent_id: new.parent.as_ref().map(|(id, _)| id.as_str().to_owned()),
            parent_key: new.parent.as_ref().map(|(_, key)| key.clone()),
            deadline: new.deadline.map(Timestamp::as_micros),
        }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Self::Append {
                id,
                epoch,
                added,
                state,
                result,
                failure,
                now,
                finished,
                retain_until,
                first,
                indexes,
                times,
                kinds,
                keys,
                events,
            } => vec![
                id,
                epoch,
                added,
                state,
                result,
                failure,
                now,
                finished,
                retain_until,
                first,
                indexes,
                times,
                kinds,
                keys,
                events,
            ],
            Self::Create {
                id,
                workflow,
                fingerprint,
                version,
                input,
                now,
                owner,
                lease_until,
                rerun_of,
                parent_id,
                parent_key,
                deadline,
            } => vec![
                id,
                workflow,
                fingerprint,
                version,
                input,
                now,
                owner,
                lease_until,
                rerun_of,
                parent_id,
                parent_key,
                deadline,
            ],
        }
    }
}

/// What one write of the pipeline did: a journal write passed its fence (or not), a creation
/// inserted its execution (or found one with its id).
pub(super) enum Said {
    Appended(bool),
    Created(bool),
}

type Boxed<'a, T> = Pin<Box<MaybeDone<Pin<Box<dyn Future<Output = T> + Send + 'a>>>>>;

/// Polls each future once, in order: tokio-postgres sends a request when its future is first
/// polled, so this puts them on the wire in the batch's order (the server runs them so).
fn send_in_order<T>(futures: &mut [Boxed<'_, T>]) {
    let mut context = Context::from_waker(Waker::noop());
    for future in futures.iter_mut() {
        // A future ready at once keeps its output (`MaybeDone`); the others are awaited below.
        let _: Poll<()> = future.as_mut().poll(&mut context);
    }
}

/// Runs the batch as one pipeline. `Ok` once it committed, with what each write did, in order;
/// `Err` if any statement failed (nothing landed: the transaction rolled back) or a write
/// cannot be encoded.
pub(super) async fn run(client: &Object, commands: &[Command], lazy: bool) -> Result<Vec<Said>, String> {
    let append = client.prepare_cached(APPEND).await.map_err(|e| super::error::chain(&e))?;
    let create = client.prepare_cached(CREATE).await.map_err(|e| super::error::chain(&e))?;
    let mut params = Vec::with_capacity(commands.len());
    for command in commands {
        params.push(match command {
            Command::Append(batch, _) => Params::append(batch).map_err(|e| e.to_string())?,
            Command::Create(new, _) => Params::create(new),
            _ => return Err("not a pipelined write".into()),
        });
    }
    let refs: Vec<Vec<&(dyn ToSql + Sync)>> = params.iter().map(Params::refs).collect();
    // One durable write alone is its own transaction: no BEGIN, no COMMIT to send.
    let alone = commands.len() == 1 && !lazy;
    let begin = if lazy { "BEGIN; SET LOCAL synchronous_commit = off" } else { "BEGIN" };
    // The futures do not all produce the same type: each yields what is checked afterwards.
    let mut futures: Vec<Boxed<'_, Result<Option<tokio_postgres::Row>, tokio_postgres::Error>>> =
        Vec::with_capacity(commands.len() + 2);
    if !alone {
        futures.push(Box::pin(maybe_done(Box::pin(async { client.batch_execute(begin).await.map(|()| None) }))));
    }
    for (command, refs) in commands.iter().zip(&refs) {
        let statement = if matches!(command, Command::Append(..)) { &append } else { &create };
        futures.push(Box::pin(maybe_done(Box::pin(async move { client.query_one(statement, refs).await.map(Some) }))));
    }
    if !alone {
        futures.push(Box::pin(maybe_done(Box::pin(async { client.batch_execute("COMMIT").await.map(|()| None) }))));
    }
    send_in_order(&mut futures);
    futures_util::future::join_all(futures.iter_mut().map(|future| future.as_mut())).await;
    let answers = futures.iter_mut().map(|future| future.as_mut().take_output().expect("awaited above"));
    let mut said = Vec::with_capacity(commands.len());
    for answer in answers {
        let row = answer.map_err(|e| super::error::chain(&e))?;
        if let Some(row) = row {
            let done = row.try_get::<_, i64>(0).map_err(|e| super::error::chain(&e))? > 0;
            said.push(match commands[said.len()] {
                Command::Append(..) => Said::Appended(done),
                _ => Said::Created(done),
            });
        }
    }
    Ok(said)
}
