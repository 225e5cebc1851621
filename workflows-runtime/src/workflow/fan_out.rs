//! `wf.fan_out(items, limit, f)`: the same work for N items, at most `limit` at once.

use std::future::Future;

use futures_util::stream::{self, StreamExt};

use super::context::Workflow;

impl Workflow {
    /// Runs `f` for every item, at most `limit` at once, and returns the outputs in the order
    /// of the items; the first error is returned at once (the step bodies still running finish
    /// by themselves, and `?` then compensates what completed, those included). For a fixed set
    /// of different steps,
    /// use `tokio::try_join!`.
    ///
    /// Deterministic on replay: each call gets its call keys when it starts, and after a
    /// restart the recorded outcomes come back in the order they first happened, so the calls
    /// start in the same order with the same keys.
    ///
    /// ```no_run
    /// # use workflows_runtime::prelude::*;
    /// # #[step] async fn reserve(sku: String) -> Result<u32, StepError> { Ok(1) }
    /// #[workflow]
    /// async fn reserve_all(wf: &Workflow, skus: Vec<String>) -> Result<u32, WorkflowError> {
    ///     let reserved = wf.fan_out(skus, 4, |sku| reserve(wf, sku)).await?;
    ///     Ok(reserved.iter().sum())
    /// }
    /// ```
    pub async fn fan_out<I, T, E, F, Fut>(&self, items: I, limit: usize, mut f: F) -> Result<Vec<T>, E>
    where
        I: IntoIterator,
        F: FnMut(I::Item) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let items = items.into_iter();
        let mut outputs: Vec<(usize, T)> = Vec::with_capacity(items.size_hint().0);
        // Calls are made (and get their keys) only when a slot is free, in item order.
        let calls = stream::iter(items.enumerate()).map(|(index, item)| {
            let call = f(item);
            async move { (index, call.await) }
        });
        let mut running = std::pin::pin!(calls.buffer_unordered(limit.max(1)));
        while let Some((index, result)) = running.next().await {
            outputs.push((index, result?));
        }
        outputs.sort_unstable_by_key(|(index, _)| *index);
        Ok(outputs.into_iter().map(|(_, output)| output).collect())
    }
}
