//! Patches: what `wf.patched(..)` and `wf.deprecate_patch(..)` do. The first time an execution
//! reaches a patch check in code that has it, the check is journaled and answers true; replay
//! answers what the journal says — true where it recorded the check, false where the execution
//! went past this point before the patch existed — so an execution never changes branch.

use super::core::{Abort, LiveExecution};
use crate::failure::{Failure, FailureKind};
use crate::journal::JournalEvent;
use crate::journal::replay::Patch;
use crate::store::WriteMode;

/// `wf.patched(id)`.
pub(crate) fn patched(live: &LiveExecution, id: &str) -> bool {
    match live.with_progress(|p| p.patch(format!("@patch:{id}").into())) {
        Patch::Recorded => true,
        Patch::Before => false,
        Patch::New(seq, key) => {
            // Lazy: lost in a crash, it is lost with everything after it (writes land in
            // order), and the execution takes the patch again at the same point.
            let event = JournalEvent::Patched { seq, key: key.clone() };
            drop(live.append([event], None, WriteMode::Lazy, |p| p.patched(seq, key)));
            true
        }
    }
}

/// `wf.deprecate_patch(id)`: takes the journal's record of the patch where there is one,
/// journals nothing for new executions, and blocks an execution that went past this point
/// before the patch existed (its old branch is gone from the code). Never resolves then.
pub(crate) async fn deprecate(live: &LiveExecution, id: &str) {
    let before = live.with_progress(|p| match p.patch(format!("@patch:{id}").into()) {
        Patch::Recorded => None,
        Patch::New(_, key) => {
            p.undo_call(&key);
            None
        }
        Patch::Before => {
            let seq = p.calls();
            Some((seq, p.recorded(seq).map(|(key, _)| key.to_string())))
        }
    });
    let Some((seq, recorded)) = before else { return };
    let there = recorded.map_or_else(|| "a later call".to_owned(), |key| format!("`{key}`"));
    let mut failure = Failure::new(
        FailureKind::NonDeterminism,
        format!(
            "execution {} of workflow `{}` went past patch `{id}` before the patch existed (its journal has {there} \
             at call #{seq}), and this code no longer has the old branch (`wf.deprecate_patch(\"{id}\")`): run it \
             with a build that still checks `wf.patched(\"{id}\")`, or cancel it",
            live.id,
            live.definition.name()
        ),
    );
    failure.key = Some(format!("@patch:{id}"));
    live.abort(Abort::Block(failure));
    std::future::pending::<()>().await;
}
