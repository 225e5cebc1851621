//! Checksums of what the store keeps, written with the data and verified on every read, so
//! that damage SQLite itself cannot see — a bit flipped inside a value, a row lost from a page,
//! a hand edit — is reported as damage naming the execution, never replayed as if it were true.
//!
//! - each journal entry has a checksum of its execution, index, time, kind, key and event;
//! - each execution records how many journal entries were written (`journal_len`): a journal
//!   read back shorter, longer or with a gap is damaged;
//! - each execution row has a checksum of what never changes after its creation (id, workflow,
//!   fingerprint, version, input, creation time, exclusive key, re-run, parent, deadline, queue), and
//!   one of its result once it has one.
//!
//! Leases, owners, states and timestamps that change all the time are not covered: a damaged
//! state does not parse, and the rest is coordination the engine re-establishes.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A field as hashed: its kind and its value, length-prefixed, so that no two different rows
/// hash the same bytes.
#[derive(Clone, Copy)]
pub(super) enum Field<'a> {
    Null,
    Text(&'a str),
    Int(i64),
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(text: &'a str) -> Self {
        Field::Text(text)
    }
}

impl<'a> From<Option<&'a str>> for Field<'a> {
    fn from(text: Option<&'a str>) -> Self {
        text.map_or(Field::Null, Field::Text)
    }
}

impl From<i64> for Field<'_> {
    fn from(n: i64) -> Self {
        Field::Int(n)
    }
}

impl From<Option<i64>> for Field<'_> {
    fn from(n: Option<i64>) -> Self {
        n.map_or(Field::Null, Field::Int)
    }
}

/// The checksum of `fields`, as stored (SQLite integers are signed). Each field is hashed with
/// the hash so far as its seed, so fields keep their boundaries without a streaming state to
/// set up (this runs for every journal entry written and read).
pub(super) fn of(fields: &[Field<'_>]) -> i64 {
    let mut hash: u64 = 0x5746_4c57;
    for field in fields {
        hash = match field {
            Field::Null => xxh3_64_with_seed(&[0], hash),
            Field::Text(text) => xxh3_64_with_seed(text.as_bytes(), hash ^ 0x9e37_79b9_7f4a_7c15),
            Field::Int(n) => xxh3_64_with_seed(&n.to_le_bytes(), hash ^ 0xc2b2_ae3d_27d4_eb4f),
        };
    }
    hash as i64
}

/// The checksum of a journal row.
pub(super) fn journal_entry(execution: &str, index: i64, at: i64, kind: &str, call_key: &str, event: &str) -> i64 {
    of(&[execution.into(), index.into(), at.into(), kind.into(), call_key.into(), event.into()])
}

/// The parts of an execution row that never change after its creation.
pub(super) struct Content<'a> {
    pub id: &'a str,
    pub workflow: &'a str,
    pub fingerprint: &'a str,
    pub version: i64,
    pub input: &'a str,
    pub created_at: i64,
    pub exclusive_key: Option<&'a str>,
    pub rerun_of: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    pub parent_key: Option<&'a str>,
    pub deadline: Option<i64>,
    /// Hashed only when set, so that the rows written before queues existed keep their checksums.
    pub queue: Option<&'a str>,
}

/// The checksum of an execution row's content.
pub(super) fn content(c: &Content<'_>) -> i64 {
    let fields = [
        c.id.into(),
        c.workflow.into(),
        c.fingerprint.into(),
        c.version.into(),
        c.input.into(),
        c.created_at.into(),
        c.exclusive_key.into(),
        c.rerun_of.into(),
        c.parent_id.into(),
        c.parent_key.into(),
        c.deadline.into(),
    ];
    match c.queue {
        None => of(&fields),
        Some(queue) => {
            let mut with_queue = fields.to_vec();
            with_queue.push(Field::Text("queue"));
            with_queue.push(queue.into());
            of(&with_queue)
        }
    }
}

/// The checksum of an execution's result.
pub(super) fn result(result: &str) -> i64 {
    of(&[result.into()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_delimited_and_typed() {
        assert_ne!(of(&["ab".into(), "c".into()]), of(&["a".into(), "bc".into()]));
        assert_ne!(of(&[Field::Null]), of(&["".into()]));
        assert_ne!(of(&[Field::Int(1)]), of(&["1".into()]));
        assert_eq!(journal_entry("e", 0, 5, "k", "s#1", "{}"), journal_entry("e", 0, 5, "k", "s#1", "{}"));
        assert_ne!(journal_entry("e", 0, 5, "k", "s#1", "{}"), journal_entry("e", 1, 5, "k", "s#1", "{}"));
    }
}
