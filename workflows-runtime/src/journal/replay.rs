//! Replay: an execution's progress, rebuilt from its journal and kept up to date as it runs.
//!
//! Every step call gets a position (`seq`, program order) and a key (`name#occurrence`).
//! A call whose slot is completed returns the stored output without running; a call that
//! meets a different key, or the same key with another input hash, is non-determinism.
//! Lookups are by position in a `Vec`, so the cost per step does not grow with history.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::task::Waker;

use serde_json::value::RawValue;

use super::{CallKey, JournalEntry, JournalEvent};
use crate::failure::Failure;
use crate::time::Timestamp;

/// What a step call must do, decided from the journal.
pub(crate) enum Decision {
    /// Run the step body: this is attempt number `attempt`, not before `not_before` (a
    /// retry's backoff that was under way). An async step's attempt waits for the first
    /// completion delivered at inbox position `inbox_from` or later. The attempts up to
    /// `base` came before an operator's retry: the attempt budget counts from there.
    Run { attempt: u32, not_before: Option<Timestamp>, inbox_from: u64, base: u32 },
    /// The step was skipped before: return `None`.
    Skipped,
    /// An async step's attempt `attempt` ran its body (which sent its request) and waits for
    /// its completion (at inbox position `position` or later) until `deadline`: wait, do not
    /// run the body again.
    AwaitCompletion { attempt: u32, started_at: Timestamp, deadline: Option<Timestamp>, position: u64, base: u32 },
    /// A timer, event wait or child is under way: wait until `until` (a timer's wake time or a
    /// wait's deadline), or for the child; an event wait waits for inbox position `position`.
    Wait { until: Option<Timestamp>, child: Option<crate::execution::ExecutionId>, position: u64 },
    /// The wait timed out before.
    TimedOut,
    /// The step completed before: return this output without running.
    Completed(Box<RawValue>),
    /// The step failed for good before: return this failure without running.
    Failed(Failure),
    /// The journal has something else at this position.
    Mismatch(Mismatch),
}

/// What a patch check (`wf.patched`) finds at the body's current point.
#[derive(Debug)]
pub(crate) enum Patch {
    /// The journal recorded the patch here: its branch was taken.
    Recorded,
    /// The journal went past this point without it: the old branch.
    Before,
    /// The journal has nothing here or later: the patch's branch is taken now, at this
    /// position and key (to journal).
    New(u32, CallKey),
}

/// The journal and the workflow disagree about a step call.
#[derive(Debug, Clone)]
pub(crate) struct Mismatch {
    pub seq: u32,
    /// What the journal recorded at this position (`None`: nothing, the call is missing).
    pub recorded: Option<(CallKey, Option<u64>)>,
    /// What the workflow does now (`None`: it did not make this call).
    pub called: Option<(CallKey, u64)>,
    /// The workflow is waiting for something else instead of making the recorded call (it
    /// did not finish).
    pub waiting: bool,
}

impl Mismatch {
    /// Describes the difference, naming the keys.
    pub fn describe(&self) -> String {
        let seq = self.seq;
        if let Some((recorded, _)) = &self.recorded
            && let Some(patch) = recorded.name().strip_prefix("@patch:")
        {
            return format!(
                "the journal recorded that the execution took patch `{patch}` at call #{seq}, but the code no longer \
                 checks it there (keep `wf.patched(\"{patch}\")`, or `wf.deprecate_patch(\"{patch}\")`, until the \
                 executions that took it finish)"
            );
        }
        match (&self.recorded, &self.called) {
            (Some((recorded, _)), Some((called, _))) if recorded != called => {
                format!("step call #{seq} is `{called}` now, but the journal recorded `{recorded}` at that position")
            }
            (Some((recorded, Some(old))), Some((_, new))) => format!(
                "step `{recorded}` (call #{seq}) is called with a different input now (input hash {new:016x}, journal has {old:016x})"
            ),
            (Some((recorded, _)), None) if self.waiting => format!(
                "the workflow waits for something else instead of calling step `{recorded}` (call #{seq}), which the \
                 journal recorded next"
            ),
            (Some((recorded, _)), None) => format!(
                "the workflow finished without calling step `{recorded}` (call #{seq}), which the journal recorded"
            ),
            (_, Some((called, _))) => format!("step `{called}` (call #{seq}) does not match the journal"),
            (None, None) => format!("step call #{seq} does not match the journal"),
        }
    }
}

/// Where a step's compensation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Compensation {
    /// Not started.
    Pending,
    /// Started (and maybe interrupted): it runs again.
    Started,
    /// Completed.
    Done,
    /// Failed.
    Failed(Box<Failure>),
}

enum Status {
    /// An attempt started and neither completed nor failed for good; the next attempt is
    /// due at the time, if a retry was scheduled.
    Running { retry_at: Option<Timestamp> },
    /// An async step's attempt waits for its completion.
    AwaitingCompletion { started_at: Timestamp, deadline: Option<Timestamp>, position: u64 },
    /// A timer, an event wait or a child under way.
    Waiting { until: Option<Timestamp>, child: Option<crate::execution::ExecutionId> },
    /// A wait that timed out.
    TimedOut,
    /// Skipped after failing for good.
    Skipped,
    /// Completed; the output is kept only when loaded from the journal, until replay takes it.
    Completed { output: Option<Box<RawValue>> },
    /// Failed for good.
    Failed(Box<Failure>),
}

struct Slot {
    key: CallKey,
    input_hash: Option<u64>,
    attempts: u32,
    status: Status,
    /// The compensation input, for completed steps that have a compensation.
    compensation_input: Option<Box<RawValue>>,
    /// The child execution, for a child workflow: compensated as a unit.
    child: Option<crate::execution::ExecutionId>,
    /// For an async step: the inbox position its next attempt waits from.
    inbox_next: u64,
    /// The attempts made before an operator retried the step (the budget counts after them).
    base: u32,
    compensation: Compensation,
}

/// A compensation to run.
pub(crate) struct PlannedCompensation {
    pub seq: u32,
    pub key: CallKey,
    pub target: Compensate,
}

/// What a planned compensation undoes.
pub(crate) enum Compensate {
    /// A step, with its compensation's input.
    Step(Box<RawValue>),
    /// A completed child execution, as a unit.
    Child(crate::execution::ExecutionId),
}

/// JSON `null`.
pub(crate) fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("`null` is JSON"))
}

/// An execution's progress: step calls made so far, and what the journal says about each.
#[derive(Default)]
pub(crate) struct Progress {
    next_seq: u32,
    /// Calls so far per step name. A workflow calls few distinct steps, and names are
    /// `&'static` (usually pointer-equal), so a linear scan beats hashing.
    occurrences: Vec<(Cow<'static, str>, u32)>,
    slots: Vec<Option<Slot>>,
    completion_order: Vec<u32>,
    next_index: u64,
    /// The outcomes the journal recorded (completions, final failures, skips, fired timers,
    /// received events, finished children), by sequence number, in journal order. Replay
    /// resolves them in this order (see [`Progress::turn`]).
    replay_order: VecDeque<u32>,
    /// Futures waiting for their turn (`None`: for the end of replay), with their wakers.
    turn_waiters: Vec<(Option<u32>, Waker)>,
    /// Per event wait key name (`@event:NAME`): the inbox position the next wait takes.
    event_positions: Vec<(String, u64)>,
}

impl Progress {
    /// The progress of a new execution that will make about `calls` step calls.
    pub fn new(calls: usize) -> Self {
        Self {
            slots: Vec::with_capacity(calls),
            occurrences: Vec::with_capacity(calls),
            completion_order: Vec::with_capacity(calls),
            ..Self::default()
        }
    }

    /// The progress recorded in a journal.
    pub fn from_journal(entries: Vec<JournalEntry>) -> Self {
        let mut progress = Self::default();
        for entry in entries {
            progress.next_index = progress.next_index.max(entry.index + 1);
            progress.apply(entry.event);
        }
        progress
    }

    fn apply(&mut self, event: JournalEvent) {
        match event {
            JournalEvent::StepStarted { seq, key, input_hash, attempt, .. } => {
                self.started(seq, key, input_hash, attempt)
            }
            JournalEvent::StepCompleted { seq, key, attempt, input_hash, output, compensation, .. } => {
                self.started(seq, key, input_hash, attempt);
                self.completed(seq, Some(output), compensation);
                self.replay_order.push_back(seq);
            }
            JournalEvent::StepFailed { seq, key, attempt, input_hash, error, retry_at, consumed, .. } => {
                let slot = self.slot_or_insert(seq, key.clone());
                if let Some(position) = consumed {
                    slot.inbox_next = slot.inbox_next.max(position + 1);
                }
                self.started(seq, key, input_hash, attempt);
                match retry_at {
                    None => {
                        self.failed(seq, *error);
                        self.replay_order.push_back(seq);
                    }
                    Some(at) => self.retry_scheduled(seq, at),
                }
            }
            JournalEvent::StepSkipped { seq, key, attempt, input_hash, .. } => {
                self.started(seq, key, input_hash, attempt);
                self.skipped(seq);
                self.replay_order.push_back(seq);
            }
            JournalEvent::StepWaiting { seq, key, attempt, input_hash, started_at, deadline, position, .. } => {
                self.started(seq, key, input_hash, attempt);
                self.awaiting(seq, started_at, deadline, position);
            }
            JournalEvent::TimerStarted { seq, key, wake_at } => self.waiting(seq, key, Some(wake_at), None),
            JournalEvent::EventAwaited { seq, key, deadline, position } => {
                self.event_awaited(seq, key, deadline, position)
            }
            JournalEvent::ChildStarted { seq, key, child } => self.waiting(seq, key, None, Some(child)),
            JournalEvent::TimerFired { seq, key } => {
                self.slot_or_insert(seq, key);
                self.completed(seq, Some(null()), None);
                self.replay_order.push_back(seq);
            }
            JournalEvent::EventReceived { seq, key, payload }
            | JournalEvent::ChildCompleted { seq, key, output: payload } => {
                self.slot_or_insert(seq, key);
                self.completed(seq, Some(payload), None);
                self.replay_order.push_back(seq);
            }
            JournalEvent::WaitTimedOut { seq, key } => {
                self.slot_or_insert(seq, key);
                self.timed_out(seq);
                self.replay_order.push_back(seq);
            }
            JournalEvent::ChildFailed { seq, key, error } => {
                self.slot_or_insert(seq, key);
                self.failed(seq, *error);
                self.replay_order.push_back(seq);
            }
            JournalEvent::Patched { seq, key } => self.patched(seq, key),
            JournalEvent::StepRetried { seq, key, .. } => {
                let slot = self.slot_or_insert(seq, key);
                slot.base = slot.attempts;
                slot.status = Status::Running { retry_at: None };
                // Its final failure took a turn; the next attempt's outcome takes it now.
                if let Some(index) = self.replay_order.iter().position(|&s| s == seq) {
                    self.replay_order.remove(index);
                }
            }
            JournalEvent::CompensationStarted { seq, key } => {
                self.slot_or_insert(seq, key).compensation = Compensation::Started
            }
            JournalEvent::CompensationCompleted { seq, key } => {
                self.slot_or_insert(seq, key).compensation = Compensation::Done
            }
            JournalEvent::CompensationFailed { seq, key, error } => {
                self.slot_or_insert(seq, key).compensation = Compensation::Failed(error)
            }
        }
    }

    fn slot_or_insert(&mut self, seq: u32, key: CallKey) -> &mut Slot {
        let index = seq as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index].get_or_insert(Slot {
            key,
            input_hash: None,
            attempts: 0,
            status: Status::Running { retry_at: None },
            compensation_input: None,
            child: None,
            inbox_next: 0,
            base: 0,
            compensation: Compensation::Pending,
        })
    }

    /// The journal index the next event gets.
    pub fn take_index(&mut self) -> u64 {
        let index = self.next_index;
        self.next_index += 1;
        index
    }

    /// Assigns the next step call its position and key.
    ///
    /// Borrowed names are registered step names (unique texts, see the registry) and the
    /// engine's `@sleep`, each always passed from the same `&'static str`: they are found by
    /// address. Owned names (`@child:...`, `@event:...`) are built per call and found by
    /// text; the two kinds never share a text (step names cannot start with `@`).
    pub fn next_call(&mut self, name: impl Into<Cow<'static, str>>) -> (u32, CallKey) {
        let name = name.into();
        let seq = self.next_seq;
        self.next_seq += 1;
        let found = match &name {
            Cow::Borrowed(name) => self
                .occurrences
                .iter()
                .position(|(known, _)| std::ptr::eq(known.as_ptr(), name.as_ptr()) && known.len() == name.len()),
            Cow::Owned(name) => {
                self.occurrences.iter().position(|(known, _)| matches!(known, Cow::Owned(known) if known == name))
            }
        };
        let occurrence = match found {
            Some(index) => {
                self.occurrences[index].1 += 1;
                self.occurrences[index].1
            }
            None => {
                self.occurrences.push((name.clone(), 1));
                1
            }
        };
        (seq, CallKey::new(name, occurrence))
    }

    /// What `wf.patched(id)` answers at the body's current point (`name` is `@patch:ID`):
    /// true where the journal recorded the patch here, false where it recorded something else
    /// here or later (the execution went past this point without the patch), and — at the
    /// journal's end — true, the call taking the next position (the caller journals it).
    pub fn patch(&mut self, name: Cow<'static, str>) -> Patch {
        let seq = self.next_seq;
        let (at, key) = self.next_call(name);
        debug_assert_eq!(at, seq);
        match self.slots.get(seq as usize) {
            Some(Some(slot)) if slot.key == key => Patch::Recorded,
            // Recorded something else here or later: the old code ran on past this point.
            _ if self.slots.len() > seq as usize => {
                self.undo_call(&key);
                Patch::Before
            }
            _ => Patch::New(seq, key),
        }
    }

    /// Takes back the latest call, of `key` (a patch check that did not take a position).
    pub fn undo_call(&mut self, key: &CallKey) {
        self.next_seq -= 1;
        if let Some((_, count)) = self.occurrences.iter_mut().find(|(name, _)| name.as_ref() == key.name()) {
            *count -= 1;
        }
    }

    /// The call whose key is `key` if it failed for good: its position (for `retry_step`).
    pub fn failed_for_good(&self, key: &str) -> Option<(u32, CallKey)> {
        self.slots.iter().enumerate().find_map(|(seq, slot)| {
            let slot = slot.as_ref()?;
            (matches!(slot.status, Status::Failed(_)) && slot.key.to_string() == key)
                .then(|| (seq as u32, slot.key.clone()))
        })
    }

    /// The calls that failed for good, by key (for an error that names them).
    pub fn failed_keys(&self) -> Vec<String> {
        self.slots
            .iter()
            .flatten()
            .filter(|slot| matches!(slot.status, Status::Failed(_)))
            .map(|slot| slot.key.to_string())
            .collect()
    }

    /// Records that the body took a patch's branch at `seq`.
    pub fn patched(&mut self, seq: u32, key: CallKey) {
        self.slot_or_insert(seq, key).status = Status::Completed { output: None };
    }

    /// What the step call at `seq` must do.
    pub fn decide(&mut self, seq: u32, key: &CallKey, input_hash: u64) -> Decision {
        let Some(Some(slot)) = self.slots.get_mut(seq as usize) else {
            return Decision::Run { attempt: 1, not_before: None, inbox_from: 0, base: 0 };
        };
        let hash_differs = slot.input_hash.is_some_and(|h| h != input_hash);
        if slot.key != *key || hash_differs {
            return Decision::Mismatch(Mismatch {
                seq,
                recorded: Some((slot.key.clone(), slot.input_hash)),
                called: Some((key.clone(), input_hash)),
                waiting: false,
            });
        }
        match &mut slot.status {
            Status::Running { retry_at } => Decision::Run {
                attempt: slot.attempts + 1,
                not_before: *retry_at,
                inbox_from: slot.inbox_next,
                base: slot.base,
            },
            Status::AwaitingCompletion { started_at, deadline, position } => Decision::AwaitCompletion {
                attempt: slot.attempts,
                started_at: *started_at,
                deadline: *deadline,
                position: *position,
                base: slot.base,
            },
            Status::Waiting { until, child } => {
                Decision::Wait { until: *until, child: child.clone(), position: slot.inbox_next }
            }
            Status::TimedOut => Decision::TimedOut,
            Status::Skipped => Decision::Skipped,
            Status::Failed(failure) => Decision::Failed((**failure).clone()),
            Status::Completed { output } => match output.take() {
                Some(output) => Decision::Completed(output),
                // Reached twice in one run: cannot happen with assigned positions.
                None => Decision::Mismatch(Mismatch {
                    seq,
                    recorded: None,
                    called: Some((key.clone(), input_hash)),
                    waiting: false,
                }),
            },
        }
    }

    /// The key and input hash the journal recorded at `seq`, if any.
    pub fn recorded(&self, seq: u32) -> Option<(CallKey, Option<u64>)> {
        let slot = self.slots.get(seq as usize)?.as_ref()?;
        Some((slot.key.clone(), slot.input_hash))
    }

    /// Records that an attempt started.
    pub fn started(&mut self, seq: u32, key: CallKey, input_hash: u64, attempt: u32) {
        let slot = self.slot_or_insert(seq, key);
        slot.input_hash = Some(input_hash);
        slot.attempts = slot.attempts.max(attempt);
        slot.status = Status::Running { retry_at: None };
    }

    /// Records that an async step's attempt waits for its completion.
    pub fn awaiting(&mut self, seq: u32, started_at: Timestamp, deadline: Option<Timestamp>, position: u64) {
        if let Some(Some(slot)) = self.slots.get_mut(seq as usize) {
            slot.status = Status::AwaitingCompletion { started_at, deadline, position };
        }
    }

    /// Records that an async step's attempt consumed the delivered failure at `position`.
    pub fn consumed(&mut self, seq: u32, position: u64) {
        if let Some(Some(slot)) = self.slots.get_mut(seq as usize) {
            slot.inbox_next = slot.inbox_next.max(position + 1);
        }
    }

    /// Records that a timer, event wait or child began.
    pub fn waiting(
        &mut self,
        seq: u32,
        key: CallKey,
        until: Option<Timestamp>,
        child: Option<crate::execution::ExecutionId>,
    ) {
        let slot = self.slot_or_insert(seq, key);
        slot.child = child.clone();
        slot.status = Status::Waiting { until, child };
    }

    /// Records that a wait for an event began, for the event at inbox `position`.
    pub fn event_awaited(&mut self, seq: u32, key: CallKey, deadline: Option<Timestamp>, position: u64) {
        let next = self.event_position(key.name());
        *next = (*next).max(position + 1);
        self.waiting(seq, key, deadline, None);
        if let Some(Some(slot)) = self.slots.get_mut(seq as usize) {
            slot.inbox_next = position;
        }
    }

    /// The inbox position the next wait for the event its key names will wait for.
    pub fn next_event_position(&mut self, key_name: &str) -> u64 {
        *self.event_position(key_name)
    }

    fn event_position(&mut self, key_name: &str) -> &mut u64 {
        let index = match self.event_positions.iter().position(|(name, _)| name == key_name) {
            Some(index) => index,
            None => {
                self.event_positions.push((key_name.to_owned(), 0));
                self.event_positions.len() - 1
            }
        };
        &mut self.event_positions[index].1
    }

    /// Records that a wait timed out. An event wait's position goes back to the next wait for
    /// that event, unless a later wait took the next one already.
    pub fn timed_out(&mut self, seq: u32) {
        let Some(Some(slot)) = self.slots.get_mut(seq as usize) else { return };
        let was_event_wait =
            matches!(slot.status, Status::Waiting { child: None, .. }) && slot.key.name().starts_with("@event:");
        slot.status = Status::TimedOut;
        let (name, position) = (slot.key.name().to_owned(), slot.inbox_next);
        if was_event_wait {
            let next = self.event_position(&name);
            if *next == position + 1 {
                *next = position;
            }
        }
    }

    /// The children started whose outcome the execution has not taken, with their calls'
    /// positions and keys: to cancel (or compensate) when the parent stops.
    pub fn running_children(&self) -> Vec<(u32, CallKey, crate::execution::ExecutionId)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(seq, slot)| match slot.as_ref()?.status {
                Status::Waiting { child: Some(ref child), .. } => {
                    Some((seq as u32, slot.as_ref()?.key.clone(), child.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Records that the next attempt is due at `at`.
    pub fn retry_scheduled(&mut self, seq: u32, at: Timestamp) {
        if let Some(Some(slot)) = self.slots.get_mut(seq as usize) {
            slot.status = Status::Running { retry_at: Some(at) };
        }
    }

    /// Records that the step was skipped.
    pub fn skipped(&mut self, seq: u32) {
        if let Some(Some(slot)) = self.slots.get_mut(seq as usize) {
            slot.status = Status::Skipped;
        }
    }

    /// Records a completion. `output` is kept only for replay (it is `None` when live).
    pub fn completed(&mut self, seq: u32, output: Option<Box<RawValue>>, compensation: Option<Box<RawValue>>) {
        if let Some(Some(slot)) = self.slots.get_mut(seq as usize) {
            slot.status = Status::Completed { output };
            slot.compensation_input = compensation;
            self.completion_order.push(seq);
        }
    }

    /// Records a final failure.
    pub fn failed(&mut self, seq: u32, failure: Failure) {
        if let Some(Some(slot)) = self.slots.get_mut(seq as usize) {
            slot.status = Status::Failed(Box::new(failure));
        }
    }

    /// Records where a compensation is.
    pub fn compensation(&mut self, seq: u32, state: Compensation) {
        if let Some(Some(slot)) = self.slots.get_mut(seq as usize) {
            slot.compensation = state;
        }
    }

    /// A journal entry the finished workflow never reached (`calls` step calls were made):
    /// whatever the journal recorded for a later call — an outcome, or only an attempt that
    /// was under way (a crash interrupted it) — the body took another path than before.
    pub fn unreached(&self, calls: u32) -> Option<Mismatch> {
        self.slots.iter().enumerate().skip(calls as usize).find_map(|(seq, slot)| {
            let slot = slot.as_ref()?;
            Some(Mismatch {
                seq: seq as u32,
                recorded: Some((slot.key.clone(), slot.input_hash)),
                called: None,
                waiting: false,
            })
        })
    }

    /// How many step calls the workflow made so far in this run.
    pub fn calls(&self) -> u32 {
        self.next_seq
    }

    /// True while outcomes recorded in the journal remain to be replayed.
    pub fn replaying(&self) -> bool {
        !self.replay_order.is_empty()
    }

    /// Takes a turn to resolve a call: `Some(seq)` for an outcome recorded in the journal,
    /// `None` for one that happened live. Returns false (and keeps `waker`) while it is not
    /// the call's turn; wakers of calls whose turn comes are pushed to `wake`.
    ///
    /// Replayed calls resolve at once, in any order the workflow's futures are polled; but
    /// the workflow assigns sequence numbers in the order its branches go on, so replayed
    /// outcomes must resolve in the order they first happened (`try_join!(async { a; b },
    /// async { c; d })` where `c` finished before `a`), and live outcomes after all of them.
    pub fn turn(&mut self, seq: Option<u32>, waker: &Waker, wake: &mut Vec<Waker>) -> bool {
        let ready = match (seq, self.replay_order.front()) {
            (_, None) => return true,
            (Some(seq), Some(&front)) if seq == front => true,
            // Not a recorded outcome: nothing orders it.
            (Some(seq), Some(_)) if !self.replay_order.contains(&seq) => return true,
            _ => false,
        };
        if !ready {
            match self.turn_waiters.iter_mut().find(|(s, _)| *s == seq) {
                Some((_, known)) if known.will_wake(waker) => {}
                Some((_, known)) => known.clone_from(waker),
                None => self.turn_waiters.push((seq, waker.clone())),
            }
            return false;
        }
        self.replay_order.pop_front();
        self.turn_waiters.retain(|(s, _)| *s != seq);
        let next = self.replay_order.front().copied();
        let mut index = 0;
        while index < self.turn_waiters.len() {
            let (waits_for, _) = &self.turn_waiters[index];
            if next.is_none() || *waits_for == next {
                wake.push(self.turn_waiters.swap_remove(index).1);
            } else {
                index += 1;
            }
        }
        true
    }

    /// Forgets the recorded outcome of the call at `seq`, whose future was dropped before it
    /// took its turn (a `select!` took another branch): the calls after it are not left waiting
    /// for that turn. Wakers of calls whose turn comes are pushed to `wake`.
    pub fn forget_turn(&mut self, seq: u32, wake: &mut Vec<Waker>) {
        let Some(index) = self.replay_order.iter().position(|&s| s == seq) else { return };
        self.replay_order.remove(index);
        self.turn_waiters.retain(|(s, _)| *s != Some(seq));
        if index == 0 {
            let next = self.replay_order.front().copied();
            let mut i = 0;
            while i < self.turn_waiters.len() {
                if next.is_none() || self.turn_waiters[i].0 == next {
                    wake.push(self.turn_waiters.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// The recorded call the workflow did not make although it is that call's turn: the body
    /// waits for something else (non-determinism), or it would wait forever.
    pub fn stuck(&self) -> Option<Mismatch> {
        let &front = self.replay_order.front()?;
        if front < self.next_seq || self.turn_waiters.iter().any(|(s, _)| *s == Some(front)) {
            return None;
        }
        let slot = self.slots.get(front as usize)?.as_ref()?;
        Some(Mismatch { seq: front, recorded: Some((slot.key.clone(), slot.input_hash)), called: None, waiting: true })
    }

    /// The compensations still to run, in reverse completion order, and the failures of
    /// compensations that already failed.
    pub fn compensation_plan(&self) -> (Vec<PlannedCompensation>, Vec<Failure>) {
        let mut plan = Vec::new();
        let mut failed = Vec::new();
        for &seq in self.completion_order.iter().rev() {
            let Some(Some(slot)) = self.slots.get(seq as usize) else { continue };
            let target = match (&slot.compensation_input, &slot.child) {
                (Some(input), _) => Compensate::Step(input.clone()),
                (None, Some(child)) => Compensate::Child(child.clone()),
                (None, None) => continue,
            };
            match &slot.compensation {
                Compensation::Pending | Compensation::Started => {
                    plan.push(PlannedCompensation { seq, key: slot.key.clone(), target })
                }
                Compensation::Done => {}
                Compensation::Failed(failure) => failed.push((**failure).clone()),
            }
        }
        (plan, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn completed(
        seq: u32,
        name: &'static str,
        input_hash: u64,
        output: &str,
        compensation: Option<&str>,
    ) -> JournalEvent {
        JournalEvent::StepCompleted {
            seq,
            key: CallKey::new(name, 1),
            attempt: 1,
            input_hash,
            started_at: Timestamp::now(),
            output: raw(output),
            compensation: compensation.map(raw),
            by: None,
        }
    }

    fn journal(events: Vec<JournalEvent>) -> Vec<JournalEntry> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| JournalEntry { index: i as u64, at: Timestamp::now(), event })
            .collect()
    }

    #[test]
    fn occurrences_count_per_name_whether_static_or_built() {
        static STEP: &str = "step";
        let mut p = Progress::default();
        let mut call = |name: Cow<'static, str>| p.next_call(name).1.to_string();
        assert_eq!(call(STEP.into()), "step#1");
        assert_eq!(call(format!("@event:{}", "paid").into()), "@event:paid#1");
        assert_eq!(call(STEP.into()), "step#2");
        assert_eq!(call(format!("@event:{}", "paid").into()), "@event:paid#2");
        assert_eq!(call(format!("@event:{}", "shipped").into()), "@event:shipped#1");
        assert_eq!(call(STEP.into()), "step#3");
    }

    #[test]
    fn completed_steps_replay_and_the_next_one_runs() {
        let mut p = Progress::from_journal(journal(vec![
            completed(0, "a", 7, "1", None),
            JournalEvent::StepStarted { seq: 1, key: CallKey::new("b", 1), input_hash: 8, attempt: 1, by: None },
        ]));
        let (seq, key) = p.next_call("a");
        assert!(matches!(p.decide(seq, &key, 7), Decision::Completed(o) if o.get() == "1"));
        let (seq, key) = p.next_call("b");
        assert!(matches!(p.decide(seq, &key, 8), Decision::Run { attempt: 2, not_before: None, .. }));
        let (seq, key) = p.next_call("c");
        assert!(matches!(p.decide(seq, &key, 9), Decision::Run { attempt: 1, not_before: None, .. }));
        assert_eq!(p.take_index(), 2);
    }

    #[test]
    fn a_different_step_or_input_is_a_mismatch() {
        let events = vec![completed(0, "a", 7, "1", None)];
        let mut p = Progress::from_journal(journal(events.clone()));
        let (seq, key) = p.next_call("b");
        let Decision::Mismatch(m) = p.decide(seq, &key, 7) else { panic!("expected a mismatch") };
        assert_eq!(m.describe(), "step call #0 is `b#1` now, but the journal recorded `a#1` at that position");

        let mut p = Progress::from_journal(journal(events));
        let (seq, key) = p.next_call("a");
        let Decision::Mismatch(m) = p.decide(seq, &key, 99) else { panic!("expected a mismatch") };
        assert!(m.describe().contains("different input"), "{}", m.describe());
        assert!(p.unreached(0).is_some());
    }

    #[test]
    fn a_patch_is_taken_where_the_journal_ends_or_recorded_it_and_not_where_it_went_past() {
        let patch = || Cow::Borrowed("@patch:p");
        // The journal ends here: taken, at the next position.
        let mut p = Progress::from_journal(journal(vec![completed(0, "a", 7, "1", None)]));
        let (seq, key) = p.next_call("a");
        assert!(matches!(p.decide(seq, &key, 7), Decision::Completed(_)));
        let Patch::New(seq, key) = p.patch(patch()) else { panic!("the patch is new here") };
        assert_eq!((seq, key.to_string().as_str()), (1, "@patch:p#1"));
        p.patched(seq, key.clone());

        // Replayed from a journal that recorded it: taken again, and the next call follows it.
        let mut events = vec![completed(0, "a", 7, "1", None), JournalEvent::Patched { seq: 1, key }];
        events.push(completed(2, "b", 8, "2", None));
        let mut p = Progress::from_journal(journal(events));
        p.next_call("a");
        assert!(matches!(p.patch(patch()), Patch::Recorded));
        let (seq, key) = p.next_call("b");
        assert!(matches!(p.decide(seq, &key, 8), Decision::Completed(_)), "b at position 2");

        // Replayed from a journal the old code wrote: not taken, and it takes no position.
        let mut p =
            Progress::from_journal(journal(vec![completed(0, "a", 7, "1", None), completed(1, "b", 8, "2", None)]));
        p.next_call("a");
        assert!(matches!(p.patch(patch()), Patch::Before));
        let (seq, key) = p.next_call("b");
        assert_eq!(seq, 1);
        assert!(matches!(p.decide(seq, &key, 8), Decision::Completed(_)));
        assert!(matches!(p.patch(patch()), Patch::New(2, _)), "past the journal's end, a check is new again");
    }

    #[test]
    fn a_recorded_patch_the_code_no_longer_checks_is_named_as_one() {
        let key = CallKey::new("@patch:fraud-check", 1);
        let p = Progress::from_journal(journal(vec![JournalEvent::Patched { seq: 0, key }]));
        let mismatch = p.unreached(0).expect("unreached");
        assert!(mismatch.describe().contains("took patch `fraud-check` at call #0"), "{}", mismatch.describe());
    }

    #[test]
    fn compensation_plan_is_reverse_completion_order_and_skips_done() {
        let mut events = Vec::new();
        for (seq, name) in ["a", "b", "c"].iter().enumerate() {
            let key = CallKey::new(*name, 1);
            events.push(JournalEvent::StepStarted {
                seq: seq as u32,
                key: key.clone(),
                input_hash: 0,
                attempt: 1,
                by: None,
            });
        }
        // Completion order c, a, b (parallel steps).
        for seq in [2u32, 0, 1] {
            events.push(completed(seq, ["a", "b", "c"][seq as usize], 0, "0", Some("0")));
        }
        events.push(JournalEvent::CompensationCompleted { seq: 1, key: CallKey::new("b", 1) });
        events.push(JournalEvent::CompensationFailed {
            seq: 0,
            key: CallKey::new("a", 1),
            error: Box::new(Failure::new(FailureKind::Compensation, "nope")),
        });
        let p = Progress::from_journal(journal(events));
        let (plan, failed) = p.compensation_plan();
        let keys: Vec<_> = plan.iter().map(|c| c.key.to_string()).collect();
        assert!(plan.iter().all(|c| matches!(c.target, Compensate::Step(_))));
        assert_eq!(keys, ["c#1"]);
        assert_eq!(failed.len(), 1);
    }
}
