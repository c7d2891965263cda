//! Cross-request batching: the queue between the HTTP server and the model.
//!
//! Requests hand over their tokenized pairs; one model thread takes, whenever
//! it is free, the oldest waiting pair plus the waiting pairs closest to it in
//! length, under a padded-token budget (pairs × longest pair), runs one forward
//! pass and answers every request through a one-shot channel once all its
//! pairs are scored. So concurrent small requests share forward passes and a
//! large request does not hold the model for all of its pairs at once.
//!
//! - The model runs on its own OS thread, never on an async runtime worker;
//!   a [`Ticket`] is a plain future (no runtime needed) resolving to the logits.
//! - Backpressure is a type: [`Scheduler::try_reserve`] fails with
//!   [`ScheduleError::Overloaded`] when too many pairs are waiting.
//! - Dropping a [`Ticket`] (the client went away) removes its pairs from the
//!   queue before they cost compute.
//! - A failing or panicking forward pass fails only the requests with pairs in
//!   that batch; the thread goes on with the next batch.
//!
//! The contract with the model is [`Backend`] (in [`crate::backend`]): one
//! synchronous forward pass over a flat batch of token-id lists; batches are
//! chosen by [`BatchBudget::pick`].

use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::backend::{check_logits, Backend, BatchBudget};

/// Limits of the queue and of each forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most padded tokens (pairs × longest pair) per forward pass; a single
    /// pair longer than this still runs, alone.
    pub max_batch_tokens: usize,
    /// Most pairs per forward pass.
    pub max_batch_pairs: usize,
    /// Most pairs reserved at once (waiting for tokenization, queued or being
    /// computed); beyond it [`Scheduler::try_reserve`] reports overload.
    pub max_queued_pairs: usize,
}

impl SchedulerConfig {
    /// The limits of one forward pass.
    pub fn budget(&self) -> BatchBudget {
        BatchBudget {
            max_pairs: self.max_batch_pairs,
            max_tokens: self.max_batch_tokens,
        }
    }
}

/// What one forward pass did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchReport {
    pub pairs: usize,
    /// Real tokens in the batch.
    pub tokens: usize,
    /// Pairs × longest pair: what the token budget counts.
    pub padded_tokens: usize,
    /// Time in [`Backend::predict`].
    pub duration: Duration,
    /// Whether the forward pass succeeded.
    pub ok: bool,
}

/// Called by the model thread after every forward pass.
pub type Observer = Arc<dyn Fn(&BatchReport) + Send + Sync>;

/// Why a request got no scores.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Too many pairs are waiting; the caller should retry later.
    #[error("overloaded: {waiting} pairs are already waiting and this request adds {requested}, above the limit of {limit}; retry later")]
    Overloaded {
        waiting: usize,
        requested: usize,
        limit: usize,
    },
    /// The request alone has more pairs than the queue can ever hold.
    #[error("{requested} pairs in one request exceed the queue's capacity of {limit} pairs")]
    TooLarge { requested: usize, limit: usize },
    /// The scheduler was shut down and takes no more work.
    #[error("the scheduler is shutting down and takes no new work")]
    Closed,
    /// The forward pass of a batch with pairs of this request failed or panicked.
    #[error("the forward pass failed: {0}")]
    Backend(String),
}

/// Scores of one request, in the order its pairs were submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Raw logits.
    pub logits: Vec<f32>,
    /// From submission to the start of the first forward pass with its pairs.
    pub queue_time: Duration,
    /// From the start of its first forward pass to the end of its last one.
    pub inference_time: Duration,
}

type Reply = Result<Scored, ScheduleError>;

/// What the requests of a batch whose forward pass panicked are told (the
/// panic's own message goes to the log).
pub const PANIC_MESSAGE: &str =
    "internal error: the forward pass panicked (details are in the server log)";

/// A waiting pair.
struct Entry {
    job: u64,
    /// Position of the pair in its request.
    index: usize,
    /// Age: the oldest entry anchors the next batch; probes get 0.
    seq: u64,
    ids: Vec<u32>,
}

/// A request with pairs still queued or being computed.
struct Job {
    reply: oneshot::Sender<Reply>,
    logits: Vec<f32>,
    remaining: usize,
    submitted: Instant,
    started: Option<Instant>,
}

#[derive(Default)]
struct State {
    queue: Vec<Entry>,
    jobs: HashMap<u64, Job>,
    /// Pairs held by live [`Permit`]s.
    reserved: usize,
    next_job: u64,
    next_seq: u64,
    closed: bool,
    /// Whether the last forward pass succeeded (`None`: none has run yet).
    last_ok: Option<bool>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    config: SchedulerConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; recover rather than cascade.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The batching queue and its model thread. Dropping it finishes the queued
/// work, then stops the thread.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the model thread. Every limit must be at least 1.
    pub fn new(
        backend: Arc<dyn Backend>,
        config: SchedulerConfig,
        observer: Option<Observer>,
    ) -> crate::Result<Self> {
        for (name, value) in [
            ("max-batch-tokens", config.max_batch_tokens),
            ("max-batch-pairs (batch size)", config.max_batch_pairs),
            ("max-queued-pairs", config.max_queued_pairs),
        ] {
            if value == 0 {
                return Err(crate::Error::InvalidOption(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            config,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("rerank-model".into())
            .spawn(move || model_loop(&thread_shared, backend.as_ref(), observer.as_deref()))
            .map_err(|e| {
                crate::Error::Unavailable(format!("cannot start the model thread: {e}"))
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> SchedulerConfig {
        self.shared.config
    }

    /// Reserves room for `pairs` pairs, before any work is spent on them.
    pub fn try_reserve(&self, pairs: usize) -> Result<Permit, ScheduleError> {
        let limit = self.shared.config.max_queued_pairs;
        if pairs > limit {
            return Err(ScheduleError::TooLarge {
                requested: pairs,
                limit,
            });
        }
        let mut state = self.shared.lock();
        if state.closed {
            return Err(ScheduleError::Closed);
        }
        if state.reserved + pairs > limit {
            return Err(ScheduleError::Overloaded {
                waiting: state.reserved,
                requested: pairs,
                limit,
            });
        }
        state.reserved += pairs;
        Ok(Permit {
            shared: Arc::clone(&self.shared),
            pairs,
        })
    }

    /// Queues the pairs of one request. The permit is held until the ticket
    /// resolves or is dropped.
    pub fn submit(&self, pairs: Vec<Vec<u32>>, permit: Permit) -> Result<Ticket, ScheduleError> {
        debug_assert!(
            pairs.len() <= permit.pairs,
            "submit more pairs than reserved"
        );
        self.enqueue(pairs, Some(permit), false)
    }

    /// Queues one pair ahead of everything waiting, outside the reservation
    /// limit: a health check that the model still computes.
    pub fn probe(&self, pair: Vec<u32>) -> Result<Ticket, ScheduleError> {
        self.enqueue(vec![pair], None, true)
    }

    fn enqueue(
        &self,
        pairs: Vec<Vec<u32>>,
        permit: Option<Permit>,
        priority: bool,
    ) -> Result<Ticket, ScheduleError> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.shared.lock();
        if state.closed {
            return Err(ScheduleError::Closed);
        }
        let job = state.next_job;
        state.next_job += 1;
        if pairs.is_empty() {
            let _ = tx.send(Ok(Scored {
                logits: Vec::new(),
                queue_time: Duration::ZERO,
                inference_time: Duration::ZERO,
            }));
        } else {
            let n = pairs.len();
            for (index, ids) in pairs.into_iter().enumerate() {
                let seq = if priority {
                    0
                } else {
                    state.next_seq += 1;
                    state.next_seq
                };
                state.queue.push(Entry {
                    job,
                    index,
                    seq,
                    ids,
                });
            }
            state.jobs.insert(
                job,
                Job {
                    reply: tx,
                    logits: vec![0.0; n],
                    remaining: n,
                    submitted: Instant::now(),
                    started: None,
                },
            );
            self.shared.work.notify_one();
        }
        drop(state);
        Ok(Ticket {
            rx,
            job,
            shared: Arc::clone(&self.shared),
            _permit: permit,
            done: false,
        })
    }

    /// Pairs waiting in the queue (not counting the batch being computed).
    pub fn queue_size(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Pairs held by reservations (waiting, queued or being computed).
    pub fn reserved(&self) -> usize {
        self.shared.lock().reserved
    }

    /// Whether the most recent forward pass succeeded (`None` before the first).
    pub fn last_batch_ok(&self) -> Option<bool> {
        self.shared.lock().last_ok
    }

    /// Whether [`Scheduler::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Takes no new work; what is queued is still computed and answered.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Room for some pairs in the queue, given back on drop.
pub struct Permit {
    shared: Arc<Shared>,
    pairs: usize,
}

impl Permit {
    /// Pairs reserved.
    pub fn pairs(&self) -> usize {
        self.pairs
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.reserved = state.reserved.saturating_sub(self.pairs);
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("pairs", &self.pairs)
            .finish()
    }
}

/// The pending scores of one request: a future resolving once all its pairs
/// are computed. Dropping it withdraws the request's queued pairs.
pub struct Ticket {
    rx: oneshot::Receiver<Reply>,
    job: u64,
    shared: Arc<Shared>,
    _permit: Option<Permit>,
    done: bool,
}

impl Future for Ticket {
    type Output = Reply;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(reply) => {
                self.done = true;
                // A dropped sender means the model thread is gone.
                Poll::Ready(reply.unwrap_or(Err(ScheduleError::Closed)))
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        if state.jobs.remove(&self.job).is_some() {
            let job = self.job;
            state.queue.retain(|e| e.job != job);
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("job", &self.job).finish()
    }
}

/// The model thread: wait for work, take a batch, run it, answer.
fn model_loop(
    shared: &Shared,
    backend: &dyn Backend,
    observer: Option<&(dyn Fn(&BatchReport) + Send + Sync)>,
) {
    let config = shared.config;
    loop {
        let batch: Vec<Entry> = {
            let mut state = shared.lock();
            loop {
                if !state.queue.is_empty() {
                    break;
                }
                if state.closed {
                    return;
                }
                state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            let picked = {
                let keys: Vec<(usize, u64)> =
                    state.queue.iter().map(|e| (e.ids.len(), e.seq)).collect();
                config.budget().pick(&keys)
            };
            let mut batch = Vec::with_capacity(picked.len());
            // Descending indices keep the remaining ones valid under swap_remove.
            let mut picked = picked;
            picked.sort_unstable_by(|a, b| b.cmp(a));
            for i in picked {
                batch.push(state.queue.swap_remove(i));
            }
            let now = Instant::now();
            for e in &batch {
                if let Some(job) = state.jobs.get_mut(&e.job) {
                    job.started.get_or_insert(now);
                }
            }
            batch
        };

        let ids: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| backend.predict(&ids)));
        let duration = start.elapsed();
        let result = match outcome {
            Ok(Ok(logits)) => match check_logits(&logits, batch.len()) {
                Ok(()) => Ok(logits),
                Err(e) => Err(e.to_string()),
            },
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => {
                // The panic's text is for the operator's log, not for clients.
                tracing::error!(
                    "the forward pass over {} pairs panicked: {}",
                    batch.len(),
                    panic_message(&*panic)
                );
                Err(PANIC_MESSAGE.to_string())
            }
        };
        if let Some(observe) = observer {
            let longest = ids.iter().map(|p| p.len()).max().unwrap_or(0);
            observe(&BatchReport {
                pairs: ids.len(),
                tokens: ids.iter().map(|p| p.len()).sum(),
                padded_tokens: longest * ids.len(),
                duration,
                ok: result.is_ok(),
            });
        }
        drop(ids);

        let mut state = shared.lock();
        state.last_ok = Some(result.is_ok());
        match result {
            Ok(logits) => {
                let end = Instant::now();
                for (entry, logit) in batch.iter().zip(logits) {
                    // A job missing here was withdrawn or failed meanwhile.
                    let Some(job) = state.jobs.get_mut(&entry.job) else {
                        continue;
                    };
                    job.logits[entry.index] = logit;
                    job.remaining -= 1;
                    if job.remaining == 0 {
                        let job = state.jobs.remove(&entry.job).expect("job present");
                        let started = job.started.unwrap_or(end);
                        let _ = job.reply.send(Ok(Scored {
                            logits: job.logits,
                            queue_time: started - job.submitted,
                            inference_time: end - started,
                        }));
                    }
                }
            }
            Err(message) => {
                tracing::error!("forward pass over {} pairs failed: {message}", batch.len());
                let mut failed: Vec<u64> = batch.iter().map(|e| e.job).collect();
                failed.sort_unstable();
                failed.dedup();
                for id in &failed {
                    if let Some(job) = state.jobs.remove(id) {
                        let _ = job.reply.send(Err(ScheduleError::Backend(message.clone())));
                    }
                }
                state
                    .queue
                    .retain(|e| failed.binary_search(&e.job).is_err());
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Logit = first token id; records every batch it sees.
    struct Echo {
        seen: Mutex<Vec<Vec<u32>>>,
    }

    impl Backend for Echo {
        fn predict(&self, pairs: &[&[u32]]) -> crate::Result<Vec<f32>> {
            self.seen
                .lock()
                .unwrap()
                .extend(pairs.iter().map(|p| p.to_vec()));
            if pairs.iter().any(|p| p[0] == 666) {
                panic!("boom");
            }
            // 777 scores NaN, as a broken model would.
            Ok(pairs
                .iter()
                .map(|p| if p[0] == 777 { f32::NAN } else { p[0] as f32 })
                .collect())
        }
    }

    fn config() -> SchedulerConfig {
        SchedulerConfig {
            max_batch_tokens: 64,
            max_batch_pairs: 8,
            max_queued_pairs: 100,
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        // A minimal executor: the tests' futures complete from the model thread.
        struct ThreadWaker(std::thread::Thread);
        impl std::task::Wake for ThreadWaker {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Arc::new(ThreadWaker(std::thread::current())).into();
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    #[test]
    fn requests_get_their_own_logits_in_order() {
        let echo = Arc::new(Echo {
            seen: Mutex::new(Vec::new()),
        });
        let s = Scheduler::new(echo, config(), None).unwrap();
        let tickets: Vec<Ticket> = (0..10u32)
            .map(|r| {
                let pairs: Vec<Vec<u32>> =
                    (0..=r).map(|i| vec![r * 100 + i; 1 + i as usize]).collect();
                let permit = s.try_reserve(pairs.len()).unwrap();
                s.submit(pairs, permit).unwrap()
            })
            .collect();
        for (r, t) in tickets.into_iter().enumerate() {
            let scored = block_on(t).unwrap();
            let expect: Vec<f32> = (0..=r as u32)
                .map(|i| (r as u32 * 100 + i) as f32)
                .collect();
            assert_eq!(scored.logits, expect);
        }
        assert_eq!(s.reserved(), 0);
        assert_eq!(s.queue_size(), 0);
    }

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let echo = Arc::new(Echo {
            seen: Mutex::new(Vec::new()),
        });
        let s = Scheduler::new(echo, config(), None).unwrap();
        let a = s.try_reserve(60).unwrap();
        assert!(matches!(
            s.try_reserve(41),
            Err(ScheduleError::Overloaded {
                waiting: 60,
                requested: 41,
                limit: 100
            })
        ));
        assert!(matches!(
            s.try_reserve(101),
            Err(ScheduleError::TooLarge { .. })
        ));
        drop(a);
        assert!(s.try_reserve(100).is_ok());
    }

    #[test]
    fn a_panicking_batch_fails_only_its_requests() {
        let echo = Arc::new(Echo {
            seen: Mutex::new(Vec::new()),
        });
        let s = Scheduler::new(echo, config(), None).unwrap();
        let p = s.try_reserve(1).unwrap();
        let bad = s.submit(vec![vec![666]], p).unwrap();
        // The panic's text stays in the log: clients get a generic message.
        assert!(matches!(block_on(bad), Err(ScheduleError::Backend(m)) if m == PANIC_MESSAGE));
        let p = s.try_reserve(1).unwrap();
        let good = s.submit(vec![vec![7]], p).unwrap();
        assert_eq!(block_on(good).unwrap().logits, vec![7.0]);
        assert_eq!(s.last_batch_ok(), Some(true));
    }

    #[test]
    fn a_nan_score_fails_its_requests_instead_of_ranking_first() {
        let echo = Arc::new(Echo {
            seen: Mutex::new(Vec::new()),
        });
        let s = Scheduler::new(echo, config(), None).unwrap();
        let bad = s
            .submit(vec![vec![3], vec![777]], s.try_reserve(2).unwrap())
            .unwrap();
        assert!(
            matches!(block_on(bad), Err(ScheduleError::Backend(m)) if m.contains("non-finite")),
        );
        assert_eq!(s.last_batch_ok(), Some(false));
    }

    #[test]
    fn zero_limits_are_refused_not_rounded_up() {
        for config in [
            SchedulerConfig {
                max_batch_tokens: 0,
                ..config()
            },
            SchedulerConfig {
                max_batch_pairs: 0,
                ..config()
            },
            SchedulerConfig {
                max_queued_pairs: 0,
                ..config()
            },
        ] {
            let echo = Arc::new(Echo {
                seen: Mutex::new(Vec::new()),
            });
            let err = Scheduler::new(echo, config, None).unwrap_err();
            assert!(err.to_string().contains("must be at least 1"), "{err}");
        }
    }

    /// Blocks in predict until told to go on.
    struct Gate {
        entered: Mutex<mpsc::Sender<()>>,
        go: Mutex<mpsc::Receiver<()>>,
        seen: Mutex<Vec<u32>>,
    }

    impl Backend for Gate {
        fn predict(&self, pairs: &[&[u32]]) -> crate::Result<Vec<f32>> {
            self.entered.lock().unwrap().send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
            self.seen.lock().unwrap().extend(pairs.iter().map(|p| p[0]));
            Ok(vec![0.0; pairs.len()])
        }
    }

    #[test]
    fn a_dropped_ticket_leaves_the_queue_before_compute() {
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            entered: Mutex::new(entered_tx),
            go: Mutex::new(go_rx),
            seen: Mutex::new(Vec::new()),
        });
        let s = Scheduler::new(gate.clone(), config(), None).unwrap();
        let first = s.submit(vec![vec![1]], s.try_reserve(1).unwrap()).unwrap();
        entered.recv().unwrap(); // the model is busy with `first`
        let gone = s
            .submit(vec![vec![2], vec![2]], s.try_reserve(2).unwrap())
            .unwrap();
        let kept = s.submit(vec![vec![3]], s.try_reserve(1).unwrap()).unwrap();
        assert_eq!(s.queue_size(), 3);
        drop(gone);
        assert_eq!(s.queue_size(), 1);
        assert_eq!(s.reserved(), 2);
        go.send(()).unwrap();
        block_on(first).unwrap();
        entered.recv().unwrap();
        go.send(()).unwrap();
        block_on(kept).unwrap();
        assert_eq!(*gate.seen.lock().unwrap(), vec![1, 3]);
    }

    #[test]
    fn shutdown_finishes_queued_work_and_refuses_new() {
        let echo = Arc::new(Echo {
            seen: Mutex::new(Vec::new()),
        });
        let s = Scheduler::new(echo, config(), None).unwrap();
        let t = s
            .submit(vec![vec![5]; 20], s.try_reserve(20).unwrap())
            .unwrap();
        s.shutdown();
        assert!(matches!(s.try_reserve(1), Err(ScheduleError::Closed)));
        assert_eq!(block_on(t).unwrap().logits, vec![5.0; 20]);
        drop(s); // joins the model thread
    }
}
