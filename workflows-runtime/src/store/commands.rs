//! The writes a store's writer applies in shared transactions (group commit), as the SQLite
//! and PostgreSQL writers receive them, and their answers, held until the commit.

use tokio::sync::oneshot;

use crate::execution::{ExecutionId, ExecutionRecord};
use crate::store::{
    AppendBatch, Claim, CreateOutcome, Delivered, Delivery, NewEvent, NewExecution, Purge, Renewal, Renewals, Reopen,
    Reopened, ScheduleAdvance, ScheduleState, StoreError, Suspend, Suspended, Undelivered, WriteMode,
};
use crate::time::Timestamp;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write for a store's writer.
pub(crate) enum Command {
    Create(NewExecution, Reply<CreateOutcome>),
    Append(AppendBatch, Reply<()>),
    Claim(Claim, Reply<Vec<ExecutionRecord>>),
    Renew(Renewal, Reply<Renewals>),
    Release(String, Reply<u64>),
    ReleaseOne(ExecutionId, u64, Reply<bool>),
    RequestCancel(ExecutionId, Timestamp, Reply<bool>),
    DefineQueues(Vec<crate::queue::Queue>, Reply<()>),
    Schedules(Vec<String>, Timestamp, Reply<Vec<ScheduleState>>),
    AdvanceSchedule(ScheduleAdvance, Reply<bool>),
    PauseSchedule(String, bool, Reply<bool>),
    RecordEvent(NewEvent, Reply<bool>),
    MarkDispatched(Vec<String>, Reply<()>),
    PurgeEvents(Timestamp, usize, Reply<u64>),
    RecordUndelivered(Box<Undelivered>, Reply<()>),
    ForgetUndelivered(String, Option<String>, Reply<u64>),
    Acquire(ExecutionId, u64, Reply<bool>),
    Purge(Purge, Reply<u64>),
    Deliver(Delivery, Reply<Delivered>),
    Suspend(Suspend, Reply<Suspended>),
    Reopen(Reopen, Reply<Reopened>),
}

impl Command {
    pub(crate) fn is_lazy(&self) -> bool {
        matches!(self, Command::Append(batch, _) if batch.mode == WriteMode::Lazy)
    }

    /// The execution whose row the command locks (first), if it locks one.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn locks(&self) -> Option<&str> {
        match self {
            Command::Append(batch, _) => Some(batch.execution.as_str()),
            Command::Create(new, _) => Some(new.id.as_str()),
            Command::Deliver(delivery, _) => Some(delivery.execution.as_str()),
            Command::Suspend(suspend, _) => Some(suspend.execution.as_str()),
            Command::Reopen(reopen, _) => Some(reopen.execution.as_str()),
            Command::ReleaseOne(id, ..) | Command::RequestCancel(id, ..) | Command::Acquire(id, ..) => {
                Some(id.as_str())
            }
            _ => None,
        }
    }
}

/// Orders a batch so that its transaction locks execution rows in the order of their ids, as
/// every other process's batches do: two transactions that lock rows in one order can wait for
/// each other, but never both at once (a deadlock, which the server breaks by failing one).
/// The sort is stable: the writes of one execution keep their order.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn in_lock_order(commands: &mut [Command]) {
    commands.sort_by(|a, b| a.locks().cmp(&b.locks()));
}

/// A command applied, waiting for the commit before its answer is sent.
pub(crate) enum Applied {
    Create(Reply<CreateOutcome>, Result<CreateOutcome, StoreError>),
    Unit(Reply<()>, Result<(), StoreError>),
    Records(Reply<Vec<ExecutionRecord>>, Result<Vec<ExecutionRecord>, StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
    Flag(Reply<bool>, Result<bool, StoreError>),
    Renewed(Reply<Renewals>, Result<Renewals, StoreError>),
    Delivered(Reply<Delivered>, Result<Delivered, StoreError>),
    Suspended(Reply<Suspended>, Result<Suspended, StoreError>),
    Reopened(Reply<Reopened>, Result<Reopened, StoreError>),
    Schedules(Reply<Vec<ScheduleState>>, Result<Vec<ScheduleState>, StoreError>),
}

impl Applied {
    /// The command's error message, if it failed.
    pub(crate) fn error(&self) -> Option<String> {
        let message = |e: &StoreError| Some(e.to_string());
        match self {
            Applied::Create(_, Err(e))
            | Applied::Unit(_, Err(e))
            | Applied::Records(_, Err(e))
            | Applied::Count(_, Err(e))
            | Applied::Flag(_, Err(e))
            | Applied::Renewed(_, Err(e))
            | Applied::Delivered(_, Err(e))
            | Applied::Suspended(_, Err(e))
            | Applied::Reopened(_, Err(e))
            | Applied::Schedules(_, Err(e)) => message(e),
            _ => None,
        }
    }

    /// Answers with the command's result, or with the commit's error if the commit failed.
    pub(crate) fn answer(self, commit: &Result<(), String>) {
        let failed = |message: &String| StoreError::Backend {
            context: "the store could not commit the write".into(),
            source: message.clone().into(),
        };
        // A receiver that is gone (a lazy write nobody waits for) is fine.
        match (self, commit) {
            (Applied::Create(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Unit(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Records(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Count(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Flag(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Renewed(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Delivered(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Suspended(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Reopened(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Schedules(reply, result), Ok(())) => drop(reply.send(result)),
            (Applied::Create(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Unit(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Records(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Count(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Flag(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Renewed(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Delivered(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Suspended(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Reopened(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
            (Applied::Schedules(reply, _), Err(e)) => drop(reply.send(Err(failed(e)))),
        }
    }
}

/// Executions (with the lease epoch) one of whose journal writes failed. Their later writes at
/// that epoch are refused: an execution's writes land in order or not at all, so a state change
/// submitted before an earlier write's failure was known never lands without it. A takeover
/// writes at a new epoch.
pub(crate) type Failed = std::collections::HashMap<ExecutionId, u64>;

/// How many failed executions are remembered (older entries are forgotten first: by then their
/// engines have long stopped writing).
const MAX_FAILED: usize = 10_000;

pub(crate) fn remember_failed(failed: &mut Failed, id: ExecutionId, epoch: u64) {
    if failed.len() >= MAX_FAILED {
        failed.clear();
    }
    failed.insert(id, epoch);
}

/// The answer slot of a command that could not run (its result is replaced by the error).
pub(crate) fn apply_nothing(command: Command) -> Applied {
    fn never<T>() -> Result<T, StoreError> {
        Err(StoreError::Unavailable("not applied".into()))
    }
    match command {
        Command::Create(_, reply) => Applied::Create(reply, never()),
        Command::Append(_, reply)
        | Command::DefineQueues(_, reply)
        | Command::MarkDispatched(_, reply)
        | Command::RecordUndelivered(_, reply) => Applied::Unit(reply, never()),
        Command::Claim(_, reply) => Applied::Records(reply, never()),
        Command::Renew(_, reply) => Applied::Renewed(reply, never()),
        Command::Release(_, reply)
        | Command::Purge(_, reply)
        | Command::PurgeEvents(_, _, reply)
        | Command::ForgetUndelivered(_, _, reply) => Applied::Count(reply, never()),
        Command::ReleaseOne(_, _, reply)
        | Command::RequestCancel(_, _, reply)
        | Command::Acquire(_, _, reply)
        | Command::AdvanceSchedule(_, reply)
        | Command::PauseSchedule(_, _, reply)
        | Command::RecordEvent(_, reply) => Applied::Flag(reply, never()),
        Command::Deliver(_, reply) => Applied::Delivered(reply, never()),
        Command::Suspend(_, reply) => Applied::Suspended(reply, never()),
        Command::Reopen(_, reply) => Applied::Reopened(reply, never()),
        Command::Schedules(_, _, reply) => Applied::Schedules(reply, never()),
    }
}
