//! A FIFO batch, processed per message group: the records of one group strictly in order, different groups
//! concurrently, and a record that must be retried hands back itself and the later records *of its own group*
//! only (Powertools' `SqsFifoPartialProcessor(skip_group_on_error=True)`).
//!
//! Why this keeps SQS FIFO's guarantee: order is defined per message group (one Komet PO), never across
//! groups. SQS hands out no later message of a group while an earlier one is in flight or waiting to be
//! redelivered, and a group's first failure ends that group's share of the batch, so no update to a PO
//! overtakes an earlier one of the same PO. Records of other groups have nothing to wait for. Versions that
//! still meet out of order (a redrive, a replay) are sorted out by the version ledger.
//!
//! No I/O: the caller's `process` does the work.

use futures_util::StreamExt;
use std::future::Future;

/// A record's message group, from its `MessageGroupId` attribute. Records without one (not from a FIFO queue)
/// all share one group, so they keep the strict stop-at-the-first-failure order.
pub fn group_key(group_id: Option<&str>) -> &str {
    group_id.unwrap_or_default()
}

/// What became of a record in [`by_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled<R> {
    /// `process` ran; `R` says whether the record is done or must be retried.
    Processed(R),
    /// Not started: an earlier record of its group must be retried.
    Skipped,
}

/// Runs `process` over `records` (in batch order, each with its group key), the records of a group one after
/// another, at most `concurrency` groups at once. After the first record of a group for which `must_retry`
/// holds, that group's later records are [`Handled::Skipped`]. Returns one result per record, in batch order.
pub async fn by_group<T, R, F, Fut>(
    records: Vec<(String, T)>,
    concurrency: usize,
    process: F,
    must_retry: impl Fn(&R) -> bool,
) -> Vec<Handled<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    let count = records.len();
    let mut groups: Vec<(String, Vec<(usize, T)>)> = Vec::new();
    for (index, (group, record)) in records.into_iter().enumerate() {
        match groups.iter_mut().find(|(key, _)| *key == group) {
            Some((_, members)) => members.push((index, record)),
            None => groups.push((group, vec![(index, record)])),
        }
    }
    let (process, must_retry) = (&process, &must_retry);
    let done: Vec<Vec<(usize, Handled<R>)>> = futures_util::stream::iter(groups)
        .map(|(_, members)| async move {
            let mut handled = Vec::with_capacity(members.len());
            let mut stopped = false;
            for (index, record) in members {
                if stopped {
                    handled.push((index, Handled::Skipped));
                    continue;
                }
                let result = process(record).await;
                stopped = must_retry(&result);
                handled.push((index, Handled::Processed(result)));
            }
            handled
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut results: Vec<Option<Handled<R>>> = (0..count).map(|_| None).collect();
    for (index, handled) in done.into_iter().flatten() {
        results[index] = Some(handled);
    }
    results.into_iter().map(|r| r.unwrap_or(Handled::Skipped)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn batch(groups: &[&str]) -> Vec<(String, usize)> {
        groups.iter().enumerate().map(|(i, g)| (g.to_string(), i)).collect()
    }

    fn summary(handled: &[Handled<(usize, bool)>]) -> Vec<&'static str> {
        handled
            .iter()
            .map(|h| match h {
                Handled::Processed((_, false)) => "done",
                Handled::Processed((_, true)) => "retry",
                Handled::Skipped => "skipped",
            })
            .collect()
    }

    async fn run(groups: &[&str], failing: &[usize], concurrency: usize) -> (Vec<&'static str>, Vec<usize>) {
        let order = Mutex::new(Vec::new());
        let handled = by_group(
            batch(groups),
            concurrency,
            |i| {
                order.lock().unwrap().push(i);
                async move {
                    tokio::task::yield_now().await;
                    (i, failing.contains(&i))
                }
            },
            |(_, retry)| *retry,
        )
        .await;
        (summary(&handled), order.into_inner().unwrap())
    }

    #[tokio::test]
    async fn a_failure_hands_back_only_the_rest_of_its_own_group() {
        // X1 fails: X2 is skipped, the Y records are processed and consumed.
        let (handled, _) = run(&["x", "y", "x", "y"], &[0], 4).await;
        assert_eq!(handled, ["retry", "done", "skipped", "done"]);
        // A later failure in a group hands back that record and its later group-mates, not the earlier ones.
        let (handled, _) = run(&["x", "x", "x", "y"], &[1], 1).await;
        assert_eq!(handled, ["done", "retry", "skipped", "done"]);
    }

    #[tokio::test]
    async fn records_without_a_group_keep_the_strict_batch_rule() {
        let records: Vec<(String, usize)> = (0..3).map(|i| (group_key(None).to_owned(), i)).collect();
        let handled = by_group(records, 10, |i| async move { (i, i == 0) }, |(_, r)| *r).await;
        assert_eq!(summary(&handled), ["retry", "skipped", "skipped"]);
    }

    #[tokio::test]
    async fn each_group_runs_in_batch_order() {
        let (handled, order) = run(&["a", "b", "a", "c", "b", "a"], &[], 1).await;
        assert_eq!(handled, ["done"; 6]);
        // One group at a time here, so the order is group by group, each in batch order.
        assert_eq!(order, [0, 2, 5, 1, 4, 3]);
        let (_, order) = run(&["a", "b", "a", "c", "b", "a"], &[], 3).await;
        let of = |members: &[usize]| order.iter().filter(|i| members.contains(i)).copied().collect::<Vec<_>>();
        assert_eq!((of(&[0, 2, 5]), of(&[1, 4]), of(&[3])), (vec![0, 2, 5], vec![1, 4], vec![3]));
    }

    #[tokio::test(start_paused = true)]
    async fn groups_wait_concurrently_up_to_the_bound() {
        let started = tokio::time::Instant::now();
        let sleep = |_| async { tokio::time::sleep(Duration::from_millis(300)).await };
        let nine = batch(&["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        by_group(nine.clone(), 9, sleep, |_| false).await;
        assert_eq!(started.elapsed(), Duration::from_millis(300), "nine groups at once");
        let started = tokio::time::Instant::now();
        by_group(nine, 5, sleep, |_| false).await;
        assert_eq!(started.elapsed(), Duration::from_millis(600), "five, then four");
        let started = tokio::time::Instant::now();
        by_group(batch(&["a", "a", "a"]), 5, sleep, |_| false).await;
        assert_eq!(started.elapsed(), Duration::from_millis(900), "one group's records one after another");
    }
}
