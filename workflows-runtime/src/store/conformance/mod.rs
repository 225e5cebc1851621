//! The [`Store`] conformance suite: one test per rule of each operation's contract, run for
//! every store, so that a listing shows each store's result (`conformance::memory::…`,
//! `conformance::sqlite::…`). A new store joins by adding a module to the [`conformance!`]
//! call below; rules that apply to one kind of store only (schema versions, for files) are
//! tested beside it.

use std::sync::Arc;

use super::contract::Store;
use super::{MemoryStore, SqliteStore};

mod cases;
pub(crate) mod fixture;

/// A store a case runs on, with what keeps it alive (a temporary directory).
pub(super) struct Subject {
    pub(super) store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Subject {
    Subject { store: Arc::new(MemoryStore::new()), _dir: None }
}

fn sqlite() -> Subject {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("conformance.db")).expect("a new SQLite store");
    Subject { store: Arc::new(store), _dir: Some(dir) }
}

/// For each store, a module with a test per case of [`cases`], named after it.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        on_store!(memory; $($case),*);
        on_store!(sqlite; $($case),*);
    };
}

macro_rules! on_store {
    ($store:ident; $($case:ident),*) => {
        mod $store {
            $(
                #[tokio::test]
                async fn $case() {
                    let subject = super::$store();
                    super::cases::$case(&*subject.store).await;
                }
            )*
        }
    };
}

conformance!(
    create_is_idempotent,
    a_claim_takes_only_executions_whose_lease_expired,
    a_claim_takes_only_the_workflows_it_names_and_no_more_than_its_limit,
    fencing_refuses_a_stale_epoch_atomically,
    appends_follow_the_journal_without_gaps_or_repeats,
    a_transition_is_written_with_its_entries,
    renewal_extends_leases_and_release_gives_them_up,
    releasing_one_execution_checks_its_epoch,
    a_suspended_execution_is_woken_by_a_delivery,
    a_suspend_behind_a_delivery_is_refused,
    a_suspend_with_a_stale_epoch_is_fenced,
    deliveries_are_kept_in_order_per_name,
    wake_up_times_come_due,
    exclusive_keys_queue_and_hand_over,
    a_key_held_refuses_a_start_that_asks_not_to_queue,
    cancellation_requests_reach_the_owner_and_stop_a_suspend,
    cancelling_a_waiting_execution_wakes_it,
    purge_deletes_finished_executions_past_their_retention,
    purge_by_finish_time_and_within_its_limit,
    deliveries_to_finished_unknown_or_timed_out_executions_are_refused,
    an_async_step_takes_one_delivery_per_attempt,
    a_delivery_written_with_an_append_lands_with_it,
    reopen_takes_a_completed_execution_into_compensation,
    the_token_key_is_made_once,
    listing_filters_and_pages_newest_first,
    a_fresh_store_checks_clean,
);

/// The rules of file stores: a store written by a newer schema is refused, and left as it was.
mod sqlite_files {
    #[test]
    fn a_store_of_a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        drop(super::SqliteStore::open(&path).unwrap());
        let newer = crate::store::SCHEMA_VERSION + 1;
        rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", newer).unwrap();
        let before = std::fs::read(&path).unwrap();
        let error = super::SqliteStore::open(&path).err().expect("refused");
        let message = error.to_string();
        assert!(matches!(error, crate::StoreError::NewerSchema { found, .. } if found == newer), "{message}");
        assert!(message.contains("upgrade workflows-runtime"), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file is untouched");
    }
}
