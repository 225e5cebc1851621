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
///
/// The fence locks the execution's row `FOR SHARE` (until the commit: a takeover's update
/// waits for it) and changes it only when the state changes: a step's completion adds journal
/// rows and writes no new version of the execution's row, whose eleven indexes would all take
/// it. The first entry must follow the journal's last (its key's last entry, read backwards).
pub(super) const APPEND: &str = "
WITH fence AS (
    SELECT e.id, (e.exclusive_key IS NOT NULL OR e.queue IS NOT NULL) AS keyed FROM executions e
    WHERE e.id = $1 AND e.epoch = $2
      AND ($10::bigint IS NULL
           OR $10 = (SELECT COALESCE(MAX(j.idx) + 1, 0) FROM journal j WHERE j.execution_id = $1))
    FOR SHARE
), changed AS (
    UPDATE executions SET
        state = $4::text,
        result = $5::text,
        failure = $6::text,
        updated_at = $7,
        owner = CASE WHEN $8 THEN NULL ELSE owner END,
        lease_until = CASE WHEN $8 THEN NULL ELSE lease_until END,
        retain_until = $9::bigint
    WHERE id = $1 AND $4::text IS NOT NULL AND id IN (SELECT id FROM fence)
    RETURNING 1
), entries AS (
    INSERT INTO journal (execution_id, idx, at, kind, call_key, event)
    SELECT $1, e.idx, e.at, e.kind, e.call_key, e.event
    FROM UNNEST($11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::text[]) AS e(idx, at, kind, call_key, event)
    WHERE EXISTS (SELECT 1 FROM fence)
    RETURNING 1
), finished AS (
    SELECT pg_notify(current_schema(), 'finished ' || $1::text) FROM fence WHERE $8
), released AS (
    SELECT pg_notify(current_schema(), 'work') FROM fence WHERE $8 AND fence.keyed
), published AS (
    UPDATE events SET held_by = (SELECT parent_id FROM executions WHERE id = $1)
    WHERE held_by = $1 AND $8 AND $4::text = 'completed' AND EXISTS (SELECT 1 FROM fence)
    RETURNING 1
), dropped AS (
    DELETE FROM events WHERE held_by = $1 AND $8 AND $4::text <> 'completed' AND EXISTS (SELECT 1 FROM fence)
    RETURNING 1
)
SELECT (SELECT COUNT(*) FROM fence), (SELECT COUNT(*) FROM changed), (SELECT COUNT(*) FROM entries) = $3,
       (SELECT COUNT(*) FROM finished), (SELECT COUNT(*) FROM released), (SELECT COUNT(*) FROM published),
       (SELECT COUNT(*) FROM dropped)";

/// Journal writes of several executions (one each) in one statement: the same as [`APPEND`]
/// for each, from arrays; returns the position (`ord`) of each write that passed its fence.
pub(super) const APPEND_MANY: &str = "
WITH input AS (
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                         $8::bool[], $9::bigint[], $10::bigint[], $11::int[])
        AS i(id, epoch, added, state, result, failure, now, finished, retain_until, first, ord)
), fence AS (
    -- Each execution found by its key, in the order of the ids (the writer sorted them: rows
    -- are locked in one order in every process).
    SELECT f.id, i.ord, i.finished, f.keyed FROM (SELECT * FROM input ORDER BY id) i
    CROSS JOIN LATERAL (
        SELECT e.id, (e.exclusive_key IS NOT NULL OR e.queue IS NOT NULL) AS keyed FROM executions e
        WHERE e.id = i.id AND e.epoch = i.epoch
          AND (i.first IS NULL
               OR i.first = (SELECT COALESCE(MAX(j.idx) + 1, 0) FROM journal j WHERE j.execution_id = e.id))
        FOR SHARE OF e
    ) AS f
), changed AS (
    UPDATE executions e SET
        state = i.state,
        result = i.result,
        failure = i.failure,
        updated_at = i.now,
        owner = CASE WHEN i.finished THEN NULL ELSE e.owner END,
        lease_until = CASE WHEN i.finished THEN NULL ELSE e.lease_until END,
        retain_until = i.retain_until
    FROM input i
    WHERE e.id = ANY(ARRAY(SELECT f.id FROM fence f JOIN input x ON x.ord = f.ord WHERE x.state IS NOT NULL))
      AND e.id = i.id
    RETURNING 1
), entries AS (
    INSERT INTO journal (execution_id, idx, at, kind, call_key, event)
    SELECT j.id, j.idx, j.at, j.kind, j.call_key, j.event
    FROM UNNEST($12::text[], $13::bigint[], $14::bigint[], $15::text[], $16::text[], $17::text[])
        AS j(id, idx, at, kind, call_key, event)
    WHERE j.id IN (SELECT id FROM fence)
    RETURNING 1
), finished AS (
    SELECT pg_notify(current_schema(), 'finished ' || id) FROM fence WHERE finished
), released AS (
    SELECT pg_notify(current_schema(), 'work') FROM fence WHERE finished AND keyed
), published AS (
    UPDATE events e SET held_by = (SELECT x.parent_id FROM executions x WHERE x.id = e.held_by)
    WHERE e.held_by = ANY(ARRAY(
        SELECT f.id FROM fence f JOIN input i ON i.ord = f.ord WHERE i.finished AND i.state = 'completed'))
    RETURNING 1
), dropped AS (
    DELETE FROM events e
    WHERE e.held_by = ANY(ARRAY(
        SELECT f.id FROM fence f JOIN input i ON i.ord = f.ord WHERE i.finished AND i.state <> 'completed'))
    RETURNING 1
)
SELECT f.ord, (SELECT COUNT(*) FROM changed), (SELECT COUNT(*) FROM entries), (SELECT COUNT(*) FROM finished),
       (SELECT COUNT(*) FROM released), (SELECT COUNT(*) FROM published), (SELECT COUNT(*) FROM dropped)
FROM fence f";

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
            // A move to `blocked` or `paused` (rare) gives up the lease: the careful way.
            batch.deliver.is_none()
                && batch.events.is_empty()
                && batch.transition.as_ref().is_none_or(|t| !t.state.is_parked())
                && failed.get(&batch.execution) != Some(&batch.epoch)
                && batch.entries.iter().enumerate().all(|(offset, e)| Some(e.index) == first.map(|f| f + offset as u64))
        }
        Command::Create(new, _) => new.exclusive_key.is_none() && new.queue.is_none(),
        _ => false,
    })
}

/// The parameters of one statement, owned, so that every statement of the pipeline can
/// borrow its own while they are all in flight.
enum Params {
    Append(AppendParams),
    Create(CreateParams),
}

/// The parameters of [`APPEND`], in its order.
struct AppendParams {
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
}

/// The parameters of [`CREATE`], in its order.
struct CreateParams {
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
}

impl Params {
    fn append(batch: &AppendBatch) -> Result<Self, StoreError> {
        let transition = batch.transition.as_ref();
        let mut events = Vec::with_capacity(batch.entries.len());
        for entry in batch.entries.iter() {
            events.push(rows::event_json(&entry.event)?);
        }
        Ok(Self::Append(AppendParams {
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
        }))
    }

    fn create(new: &NewExecution) -> Self {
        Self::Create(CreateParams {
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
        })
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Self::Append(p) => vec![
                &p.id,
                &p.epoch,
                &p.added,
                &p.state,
                &p.result,
                &p.failure,
                &p.now,
                &p.finished,
                &p.retain_until,
                &p.first,
                &p.indexes,
                &p.times,
                &p.kinds,
                &p.keys,
                &p.events,
            ],
            Self::Create(p) => vec![
                &p.id,
                &p.workflow,
                &p.fingerprint,
                &p.version,
                &p.input,
                &p.now,
                &p.owner,
                &p.lease_until,
                &p.rerun_of,
                &p.parent_id,
                &p.parent_key,
                &p.deadline,
            ],
        }
    }
}

/// The arrays of [`APPEND_MANY`], from the journal writes of a group (see [`group`]).
#[derive(Default)]
struct ManyParams {
    ids: Vec<String>,
    epochs: Vec<i64>,
    added: Vec<i64>,
    states: Vec<Option<&'static str>>,
    results: Vec<Option<String>>,
    failures: Vec<Option<String>>,
    nows: Vec<i64>,
    finished: Vec<bool>,
    retain_until: Vec<Option<i64>>,
    firsts: Vec<Option<i64>>,
    ords: Vec<i32>,
    entry_ids: Vec<String>,
    indexes: Vec<i64>,
    times: Vec<i64>,
    kinds: Vec<&'static str>,
    keys: Vec<String>,
    events: Vec<String>,
}

impl ManyParams {
    /// Takes the writes at `positions` out of `params` (they are not sent alone).
    fn take(positions: &[usize], params: &mut [Option<Params>]) -> Self {
        let mut many = ManyParams::default();
        for (ord, &position) in positions.iter().enumerate() {
            let Some(Params::Append(p)) = params[position].take() else { continue };
            many.entry_ids.extend(std::iter::repeat_n(p.id.clone(), p.indexes.len()));
            many.ids.push(p.id);
            many.epochs.push(p.epoch);
            many.added.push(p.added);
            many.states.push(p.state);
            many.results.push(p.result);
            many.failures.push(p.failure);
            many.nows.push(p.now);
            many.finished.push(p.finished);
            many.retain_until.push(p.retain_until);
            many.firsts.push(p.first);
            many.ords.push(ord as i32);
            many.indexes.extend(p.indexes);
            many.times.extend(p.times);
            many.kinds.extend(p.kinds);
            many.keys.extend(p.keys);
            many.events.extend(p.events);
        }
        many
    }

    fn refs(&self) -> [&(dyn ToSql + Sync); 17] {
        [
            &self.ids,
            &self.epochs,
            &self.added,
            &self.states,
            &self.results,
            &self.failures,
            &self.nows,
            &self.finished,
            &self.retain_until,
            &self.firsts,
            &self.ords,
            &self.entry_ids,
            &self.indexes,
            &self.times,
            &self.kinds,
            &self.keys,
            &self.events,
        ]
    }
}

/// How the batch's writes go into statements: one each, or journal writes of distinct
/// executions together (a repeated execution starts a new group: its writes stay in order).
fn group(commands: &[Command]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut executions = std::collections::HashSet::new();
    for (position, command) in commands.iter().enumerate() {
        match command {
            Command::Append(batch, _) if executions.insert(batch.execution.as_str()) => current.push(position),
            Command::Append(batch, _) => {
                groups.push(std::mem::take(&mut current));
                executions.clear();
                executions.insert(batch.execution.as_str());
                current.push(position);
            }
            _ => {
                groups.push(std::mem::take(&mut current));
                executions.clear();
                groups.push(vec![position]);
            }
        }
    }
    groups.push(current);
    groups.retain(|group| !group.is_empty());
    groups
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
    let chain = |e: tokio_postgres::Error| super::error::chain(&e);
    let append = client.prepare_cached(APPEND).await.map_err(chain)?;
    let append_many = client.prepare_cached(APPEND_MANY).await.map_err(chain)?;
    let create = client.prepare_cached(CREATE).await.map_err(chain)?;
    let mut params = Vec::with_capacity(commands.len());
    for command in commands {
        params.push(Some(match command {
            Command::Append(batch, _) => Params::append(batch).map_err(|e| e.to_string())?,
            Command::Create(new, _) => Params::create(new),
            _ => return Err("not a pipelined write".into()),
        }));
    }
    let groups = group(commands);
    let many: Vec<ManyParams> =
        groups.iter().filter(|g| g.len() > 1).map(|g| ManyParams::take(g, &mut params)).collect();
    // What is left goes alone.
    let singles: Vec<Option<Vec<&(dyn ToSql + Sync)>>> = params.iter().map(|p| p.as_ref().map(Params::refs)).collect();
    let many_refs: Vec<[&(dyn ToSql + Sync); 17]> = many.iter().map(ManyParams::refs).collect();
    // One durable statement alone is its own transaction: no BEGIN, no COMMIT to send.
    let alone = groups.len() == 1 && !lazy;
    let begin = if lazy { "BEGIN; SET LOCAL synchronous_commit = off" } else { "BEGIN" };
    type Rows = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>;
    let mut futures: Vec<Boxed<'_, Rows>> = Vec::with_capacity(groups.len() + 2);
    if !alone {
        futures.push(Box::pin(maybe_done(Box::pin(async { client.batch_execute(begin).await.map(|()| Vec::new()) }))));
    }
    let mut next_many = many_refs.iter();
    for group in &groups {
        let future: Pin<Box<dyn Future<Output = Rows> + Send + '_>> = match group.as_slice() {
            [position] => {
                let statement = if matches!(commands[*position], Command::Append(..)) { &append } else { &create };
                let refs = singles[*position].as_deref().expect("a write sent alone");
                Box::pin(async move { client.query(statement, refs).await })
            }
            _ => {
                let refs = next_many.next().expect("a group of several journal writes");
                let statement = &append_many;
                Box::pin(async move { client.query(statement, refs).await })
            }
        };
        futures.push(Box::pin(maybe_done(future)));
    }
    if !alone {
        futures
            .push(Box::pin(maybe_done(Box::pin(async { client.batch_execute("COMMIT").await.map(|()| Vec::new()) }))));
    }
    send_in_order(&mut futures);
    futures_util::future::join_all(futures.iter_mut().map(|future| future.as_mut())).await;
    let mut answers: Vec<Vec<tokio_postgres::Row>> = Vec::with_capacity(futures.len());
    for future in &mut futures {
        answers.push(future.as_mut().take_output().expect("awaited above").map_err(chain)?);
    }
    let statements = if alone { &answers[..] } else { &answers[1..answers.len() - 1] };
    let mut said: Vec<Option<Said>> = (0..commands.len()).map(|_| None).collect();
    for (group, rows) in groups.iter().zip(statements) {
        match group.as_slice() {
            [position] => {
                let done = match rows.first() {
                    Some(row) => row.try_get::<_, i64>(0).map_err(chain)? > 0,
                    None => false,
                };
                said[*position] = Some(match commands[*position] {
                    Command::Append(..) => Said::Appended(done),
                    _ => Said::Created(done),
                });
            }
            positions => {
                let mut passed = vec![false; positions.len()];
                for row in rows {
                    passed[row.try_get::<_, i32>(0).map_err(chain)? as usize] = true;
                }
                for (ord, position) in positions.iter().enumerate() {
                    said[*position] = Some(Said::Appended(passed[ord]));
                }
            }
        }
    }
    Ok(said.into_iter().map(|s| s.expect("every write answered")).collect())
}
