//! Waiting for another process's write lock: short, even polls.
//!
//! SQLite's own busy handler backs off (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms
//! between attempts): a writer that has waited a few milliseconds sleeps 10 to 25 ms more even
//! if the lock is free a millisecond later, and behind another process that writes in short
//! batches (a purge, a busy worker) it keeps missing the gaps between them. The writer thread
//! polls every millisecond instead — a failed attempt costs one lock call — until its busy
//! timeout.

use std::cell::Cell;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Between two attempts to take the write lock.
const POLL: Duration = Duration::from_millis(1);

thread_local! {
    /// This thread's busy timeout, and when the current wait began.
    static WAIT: Cell<(Duration, Option<Instant>)> = const { Cell::new((Duration::ZERO, None)) };
}

/// Makes `conn` poll for a busy lock every millisecond for up to `timeout`. The connection must
/// be used on this thread from here on (the store's writer thread calls it first thing).
pub(super) fn poll_on_this_thread(conn: &mut Connection, timeout: Duration) -> rusqlite::Result<()> {
    WAIT.with(|wait| wait.set((timeout, None)));
    conn.busy_handler(Some(retry))
}

/// SQLite's busy callback: `attempts` is 0 on the first call of each wait. True: try again.
fn retry(attempts: i32) -> bool {
    WAIT.with(|wait| {
        let (timeout, began) = wait.get();
        let now = Instant::now();
        let began = if attempts == 0 { now } else { began.unwrap_or(now) };
        wait.set((timeout, Some(began)));
        if now.duration_since(began) >= timeout {
            return false;
        }
        std::thread::sleep(POLL);
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_writer_gets_the_lock_once_it_is_released_and_gives_up_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x)").unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (took, took_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            let mut conn = Connection::open(&path).unwrap();
            poll_on_this_thread(&mut conn, Duration::from_secs(30)).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT").unwrap();
            took.send(()).unwrap();
            release_rx.recv().unwrap();
            // The lock is held again, for longer than this timeout.
            poll_on_this_thread(&mut conn, Duration::from_millis(50)).unwrap();
            let began = Instant::now();
            let error = conn.execute_batch("BEGIN IMMEDIATE").unwrap_err();
            (began.elapsed(), error)
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(took_rx.try_recv().is_err(), "the lock was held");
        holder.execute_batch("COMMIT").unwrap();
        took_rx.recv().unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        release.send(()).unwrap();
        let (waited, error) = waiter.join().unwrap();
        holder.execute_batch("COMMIT").unwrap();
        assert_eq!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy), "{error}");
        assert!(waited >= Duration::from_millis(50), "gave up after {waited:?}, before its timeout");
    }

    #[test]
    fn each_wait_is_timed_from_its_first_attempt() {
        WAIT.with(|wait| wait.set((Duration::from_millis(20), None)));
        assert!(retry(0));
        std::thread::sleep(Duration::from_millis(25));
        assert!(!retry(7), "past the timeout");
        assert!(retry(0), "a new wait starts its own clock");
    }
}
