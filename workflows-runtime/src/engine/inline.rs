//! Running an execution in the caller's task.
//!
//! `run` (start and wait for the result) polls the execution's driver from the task that
//! awaits it, instead of spawning a task and waiting for it to send the result: no task to
//! allocate, no future to copy into it, no wake-up across tasks (on a multi-threaded runtime,
//! often across threads). The execution does not depend on its caller, though: if the caller
//! stops waiting (its future is dropped, say an HTTP client went away), the execution moves
//! to a task of its own and goes on. Shutdown stops it like a spawned one, through its
//! abort handle.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{AbortHandle, Abortable};

use super::panic::catch_unwind;

/// An execution's task, polled by its caller until it ends or the caller gives up on it.
pub(super) struct Inline<F: Future<Output = ()> + Send + 'static> {
    /// `None` once it ended.
    task: Option<Pin<Box<Abortable<F>>>>,
    /// Where the task moves if the caller stops waiting.
    runtime: tokio::runtime::Handle,
}

impl<F: Future<Output = ()> + Send + 'static> Inline<F> {
    /// `task`, with the handle that stops it (the engine keeps it, see `Engine::shutdown`).
    pub(super) fn new(task: F, runtime: tokio::runtime::Handle) -> (Self, AbortHandle) {
        let (handle, registration) = AbortHandle::new_pair();
        (Self { task: Some(Box::pin(Abortable::new(task, registration))), runtime }, handle)
    }
}

impl<F: Future<Output = ()> + Send + 'static> Future for Inline<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(task) = &mut self.task else { return Poll::Ready(()) };
        // Workflow and step code cannot panic through here (the driver catches that); a panic
        // in the engine itself ends the task, as it would in a spawned one, and the caller
        // hears that the execution was interrupted instead of unwinding.
        // Aborted (shutdown) is an end too: the task was dropped where it stood.
        if let Err(message) = std::task::ready!(Pin::new(&mut catch_unwind(task.as_mut())).poll(cx)) {
            tracing::error!(%message, "the engine panicked while driving an execution");
        }
        self.task = None;
        Poll::Ready(())
    }
}

impl<F: Future<Output = ()> + Send + 'static> Drop for Inline<F> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // The caller stopped waiting: the execution goes on by itself. On a runtime that
            // is shutting down, the task is dropped at once; its lease then expires and
            // another engine resumes it.
            drop(self.runtime.spawn(task));
        }
    }
}
