//! Group commit: concurrent callers' writes of one kind run together, one batch (one
//! transaction) at a time, instead of one transaction each.
//!
//! A caller queues its item and then waits for whichever comes first: its answer, or its turn.
//! The caller that gets the turn takes up to [`MAX_BATCH`] queued items (its own and those that
//! arrived while the previous batch ran) and starts them as one batch on a task of its own, which
//! holds the turn until the batch's work ends (or hands it on earlier, below). An idle system
//! runs batches of one, with no added wait; under load the batch grows with the queue, so the
//! per-transaction costs (round trips to the database, the commit itself) are shared.
//!
//! A batch may hand the turn on before it ends ([`Turn`]): on SQLite, as soon as it holds the
//! one writing connection, so that the next batch forms and queues for that connection while
//! this one runs, and the connection goes from one batch to the next without waiting for the
//! answers to be delivered. PostgreSQL's batches keep it until their statement has committed.
//!
//! The batch runs on its own task so that a caller that goes away (its client hung up) never
//! cancels the other callers' work; an abandoned item still runs, like a request whose client
//! hangs up after its write. Two items with the same [`BatchItem::key`] never share a batch: the
//! later one waits for the next, so it sees the earlier one's effect. (Where a failed batch
//! reruns its items one by one, the next batch may run between them: its items were submitted
//! while they were pending, concurrently, so no order between them was promised.)

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use latchkey_core::ports::StoreError;
use tokio::sync::oneshot;

/// The most items one batch takes.
pub(crate) const MAX_BATCH: usize = 64;

/// An item of a batch.
pub(crate) trait BatchItem: Send + 'static {
    /// Items with equal keys run in separate batches, in the order they were submitted (see the
    /// module documentation for a failed batch rerun item by item).
    type Key: Eq + Hash;
    /// This item's key.
    fn key(&self) -> Self::Key;
}

/// A queued item and where its answer goes. Batch failures are shared by every item of the
/// batch, so they travel as text.
struct Pending<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O, Arc<str>>>,
}

/// Runs submitted items in batches, one batch at a time (see the module documentation).
pub(crate) struct Batcher<I, O> {
    queue: Mutex<Vec<Pending<I, O>>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = self.queue.lock().map_or(0, |q| q.len());
        f.debug_struct("Batcher").field("queued", &queued).finish()
    }
}

impl<I, O> Default for Batcher<I, O> {
    fn default() -> Self {
        Self { queue: Mutex::new(Vec::new()), turn: Arc::new(tokio::sync::Mutex::new(())) }
    }
}

/// The right to form the next batch, given to each batch's `run`. The next batch forms when it
/// is dropped: at the latest when `run`'s future ends, earlier where nothing that the next
/// batch does can then overtake this one (on SQLite, once this batch holds the one writing
/// connection, which the next batch must then wait for).
pub(crate) struct Turn(#[allow(dead_code, reason = "held for its drop")] tokio::sync::OwnedMutexGuard<()>);

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Turn")
    }
}

/// The error every caller of a failed batch gets.
#[derive(Debug, thiserror::Error)]
#[error("batched write failed: {0}")]
struct BatchFailed(Arc<str>);

impl<I: BatchItem, O: Send + 'static> Batcher<I, O> {
    /// Runs `item` in a batch and returns its result. `run` is called (by whichever caller
    /// gets the turn) with up to [`MAX_BATCH`] items and the [`Turn`], and must return one
    /// result per item, in order.
    ///
    /// # Errors
    /// The batch's error (every item of a failed batch gets it, as [`StoreError::Backend`]),
    /// or [`StoreError::Backend`] if the batch's task ended without answering (a panic).
    pub(crate) async fn submit<F, Fut>(&self, item: I, run: F) -> Result<O, StoreError>
    where
        F: Fn(Vec<I>, Turn) -> Fut,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        self.lock_queue().push(Pending { item, reply });
        loop {
            let turn = tokio::select! {
                biased;
                answer = &mut answer => return Self::unpack(answer),
                turn = self.turn.clone().lock_owned() => turn,
            };
            let batch = self.take();
            if batch.is_empty() {
                // Whoever held the turn before answered this item; the next loop returns it.
                continue;
            }
            let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().map(|p| (p.item, p.reply)).unzip();
            let work = run(items, Turn(turn));
            tokio::spawn(async move {
                let results = work.await;
                match results {
                    Ok(results) if results.len() == replies.len() => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            // The caller may have gone away; its item ran all the same.
                            let _ = reply.send(Ok(result));
                        }
                    }
                    Ok(results) => {
                        let error: Arc<str> =
                            format!("{} results for a batch of {}", results.len(), replies.len()).into();
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                    Err(e) => {
                        let error: Arc<str> = chain(&e).into();
                        tracing::error!(error = %error, "a batched write failed");
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            });
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Pending<I, O>>> {
        // The queue is only pushed to and drained; a panic elsewhere cannot leave it torn.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes up to [`MAX_BATCH`] queued items with distinct keys, oldest first; the rest stay
    /// queued in their order.
    fn take(&self) -> Vec<Pending<I, O>> {
        let mut queue = self.lock_queue();
        let mut keys = HashSet::new();
        let mut taken = Vec::new();
        let mut left = Vec::new();
        for pending in queue.drain(..) {
            if taken.len() < MAX_BATCH && keys.insert(pending.item.key()) {
                taken.push(pending);
            } else {
                left.push(pending);
            }
        }
        *queue = left;
        taken
    }

    fn unpack(answer: Result<Result<O, Arc<str>>, oneshot::error::RecvError>) -> Result<O, StoreError> {
        match answer {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(StoreError::Backend(Box::new(BatchFailed(error)))),
            Err(_) => Err(StoreError::Backend(Box::new(BatchFailed("the batch ended without an answer".into())))),
        }
    }
}

/// A batch's work as [`each_alone_on_failure`] runs it: one result per item, in order.
pub(crate) type BatchRun<'a, O> = std::pin::Pin<Box<dyn Future<Output = Result<Vec<O>, StoreError>> + Send + 'a>>;

/// Runs `items` as one batch with `run`, and if that batch fails as a whole, runs each item as
/// a batch of its own, so that one item's failure stays its own: the answer has one result per
/// item, in order, and an item that its rerun committed gets its result even if another
/// item's rerun failed. `turn` goes to the whole batch; the reruns run without one (see the
/// module documentation for what may then run between them).
///
/// # Errors
/// None of its own: every failure is in the item's result.
pub(crate) async fn each_alone_on_failure<I, O>(
    items: &[I],
    turn: Turn,
    run: impl for<'a> Fn(&'a [I], Option<Turn>) -> BatchRun<'a, O>,
) -> Result<Vec<Result<O, StoreError>>, StoreError> {
    match run(items, Some(turn)).await {
        Ok(results) => Ok(results.into_iter().map(Ok).collect()),
        Err(e) if items.len() > 1 => {
            tracing::warn!(error = %e, items = items.len(), "a batch failed; running its items one by one");
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                let alone = run(std::slice::from_ref(item), None).await;
                results.push(alone.and_then(|mut one| match (one.pop(), one.is_empty()) {
                    (Some(result), true) => Ok(result),
                    _ => Err(StoreError::Backend("a batch of one gave other than one result".into())),
                }));
            }
            Ok(results)
        }
        Err(e) => Ok(vec![Err(e)]),
    }
}

/// `e` and its sources, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Item(u32);
    impl BatchItem for Item {
        type Key = u32;
        fn key(&self) -> u32 {
            self.0
        }
    }

    /// Records the batches it runs; each takes a while so that others queue behind it.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u32>>>>);

    impl Recorder {
        fn run(
            &self,
            items: Vec<Item>,
            turn: Turn,
        ) -> impl Future<Output = Result<Vec<u32>, StoreError>> + Send + 'static {
            let seen = self.0.clone();
            async move {
                let _turn = turn;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let keys: Vec<u32> = items.iter().map(|i| i.0).collect();
                seen.lock().unwrap_or_else(PoisonError::into_inner).push(keys.clone());
                Ok(keys.into_iter().map(|k| k * 10).collect())
            }
        }

        fn batches(&self) -> Vec<Vec<u32>> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }
    }

    #[tokio::test]
    async fn a_lone_item_runs_at_once_in_a_batch_of_one() {
        let batcher = Batcher::<Item, u32>::default();
        let recorder = Recorder::default();
        assert_eq!(batcher.submit(Item(7), |items, turn| recorder.run(items, turn)).await.ok(), Some(70));
        assert_eq!(recorder.batches(), vec![vec![7]]);
    }

    #[tokio::test]
    async fn items_that_arrive_during_a_batch_share_the_next_and_each_gets_its_own_answer() {
        let batcher = Arc::new(Batcher::<Item, u32>::default());
        let recorder = Recorder::default();
        let tasks: Vec<_> = (0..20u32)
            .map(|i| {
                let (batcher, recorder) = (batcher.clone(), recorder.clone());
                tokio::spawn(async move { batcher.submit(Item(i), |items, turn| recorder.run(items, turn)).await.ok() })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.ok().flatten(), Some(i as u32 * 10));
        }
        let batches = recorder.batches();
        assert!(batches.len() < 20, "20 concurrent items ran in {} batches", batches.len());
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 20);
    }

    #[tokio::test]
    async fn items_with_the_same_key_never_share_a_batch() {
        let batcher = Arc::new(Batcher::<Item, u32>::default());
        let recorder = Recorder::default();
        let tasks: Vec<_> = [1u32, 2, 1, 1, 3]
            .into_iter()
            .map(|i| {
                let (batcher, recorder) = (batcher.clone(), recorder.clone());
                tokio::spawn(async move { batcher.submit(Item(i), |items, turn| recorder.run(items, turn)).await.ok() })
            })
            .collect();
        for task in tasks {
            assert!(task.await.ok().flatten().is_some());
        }
        for batch in recorder.batches() {
            let distinct: HashSet<_> = batch.iter().collect();
            assert_eq!(distinct.len(), batch.len(), "a batch held one key twice: {batch:?}");
        }
        assert_eq!(recorder.batches().iter().flatten().filter(|&&k| k == 1).count(), 3);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_cancel_the_others() {
        let batcher = Arc::new(Batcher::<Item, u32>::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let run = {
            let ran = ran.clone();
            move |items: Vec<Item>, _turn: Turn| {
                let ran = ran.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ran.fetch_add(items.len(), Ordering::SeqCst);
                    Ok(items.into_iter().map(|i| i.0).collect::<Vec<_>>())
                }
            }
        };
        // The first caller starts a batch and is then dropped while it runs.
        let first = tokio::spawn({
            let (batcher, run) = (batcher.clone(), run.clone());
            async move { batcher.submit(Item(1), run).await.ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = tokio::spawn({
            let (batcher, run) = (batcher.clone(), run.clone());
            async move { batcher.submit(Item(2), run).await.ok() }
        });
        first.abort();
        assert_eq!(second.await.ok().flatten(), Some(2));
        assert_eq!(ran.load(Ordering::SeqCst), 2, "the abandoned item and the other both ran");
    }

    /// Runs two items submitted 10 ms apart through batches that take 50 ms each, and returns
    /// the most batches that ran at once.
    async fn most_batches_at_once(release_early: bool) -> usize {
        let batcher = Arc::new(Batcher::<Item, u32>::default());
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let run = {
            let (running, most) = (running.clone(), most.clone());
            move |items: Vec<Item>, turn: Turn| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let kept = if release_early {
                        drop(turn);
                        None
                    } else {
                        Some(turn)
                    };
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    drop(kept);
                    Ok(items.into_iter().map(|i| i.0).collect::<Vec<_>>())
                }
            }
        };
        let first = tokio::spawn({
            let (batcher, run) = (batcher.clone(), run.clone());
            async move { batcher.submit(Item(1), run).await.ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = batcher.submit(Item(2), run).await.ok();
        assert_eq!(first.await.ok().flatten(), Some(1));
        assert_eq!(second, Some(2));
        most.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn the_next_batch_forms_when_the_running_one_gives_up_its_turn_and_not_before() {
        assert_eq!(most_batches_at_once(false).await, 1, "a batch that keeps its turn runs alone");
        assert_eq!(most_batches_at_once(true).await, 2, "a batch that gives up its turn lets the next one start");
    }

    #[tokio::test]
    async fn when_a_batch_fails_its_items_run_alone_and_only_the_failing_one_fails() {
        let batcher = Batcher::<Item, u32>::default();
        let items = [Item(1), Item(2), Item(3)];
        let runs = Mutex::new(Vec::new());
        let results = each_alone_on_failure(&items, turn_of(&batcher).await, |items: &[Item], _turn| {
            let keys: Vec<u32> = items.iter().map(|i| i.0).collect();
            runs.lock().unwrap_or_else(PoisonError::into_inner).push(keys.clone());
            if keys.len() > 1 || keys == [2] {
                return Box::pin(async move { Err(StoreError::Backend(format!("cannot write {keys:?}").into())) });
            }
            Box::pin(async move { Ok(keys.into_iter().map(|k| k * 10).collect()) })
        })
        .await;
        let Ok(results) = results else { panic!("the batch as a whole failed: {results:?}") };
        let shown: Vec<Result<u32, String>> = results.into_iter().map(|r| r.map_err(|e| chain(&e))).collect();
        assert_eq!(
            shown,
            vec![Ok(10), Err("storage backend failure: cannot write [2]".to_owned()), Ok(30)],
            "items 1 and 3 committed alone and must get their results",
        );
        assert_eq!(
            runs.into_inner().unwrap_or_else(PoisonError::into_inner),
            vec![vec![1, 2, 3], vec![1], vec![2], vec![3]]
        );
    }

    /// The turn of an idle batcher.
    async fn turn_of(batcher: &Batcher<Item, u32>) -> Turn {
        Turn(batcher.turn.clone().lock_owned().await)
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_callers() {
        let batcher = Batcher::<Item, u32>::default();
        let failed = batcher.submit(Item(1), |_, _| async { Err(StoreError::Backend("disk on fire".into())) }).await;
        let Err(StoreError::Backend(e)) = failed else { panic!("expected a backend error, got {failed:?}") };
        assert_eq!(e.to_string(), "batched write failed: storage backend failure: disk on fire");
    }
}
