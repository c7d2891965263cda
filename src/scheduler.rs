//! Cross-request batching: the queue between the HTTP server and the model.
//!
//! Requests hand over their tokenized pairs; one model thread takes, whenever
//! it is free, the most deserving waiting pair plus the waiting pairs closest
//! to it in length, under a padded-token budget (pairs × longest pair), runs
//! one forward pass and answers every request through a one-shot channel once
//! all its pairs are scored. So concurrent small requests share forward passes
//! and a large request does not hold the model for all of its pairs at once.
//!
//! - **Fairness.** The next pass is anchored on the request with the
//!   highest response ratio: the time it was held back (passes run while it
//!   had pairs waiting together with other waiting requests, or with none of
//!   its pairs in the pass) per token it still has queued; ties go to the
//!   least work left, then to the earlier arrival (see [`priority`]). A
//!   one-pair request that arrives while a 1000-pair one is being scored is in
//!   the next pass (alone in the queue the big one did not age, and from then
//!   on both age alike over very different amounts of work); among requests that wait, short
//!   ones go first after a short wait; requests of equal size are served in
//!   arrival order (not interleaved, so the first finishes first); a long
//!   request left out of passes gains steadily on fresh arrivals, so none
//!   starves. The rest of a pass is filled with the pairs closest in length,
//!   whichever request they belong to.
//! - **Bounded passes.** With [`SchedulerConfig::max_pass_time`] set, the
//!   padded tokens of a pass are also capped by the measured cost per token,
//!   so one pass holds the model for about that long (a single pair longer
//!   than the cap still runs, alone).
//! - **Probes read, they do not queue.** [`Scheduler::health`] reads atomics
//!   the model thread keeps up to date (a heartbeat, the current pass, the last
//!   outcome), so it answers at once whatever the load; [`Scheduler::probe`]
//!   queues one real forward pass only when asked, at most one at a time.
//! - The model runs on its own OS thread, never on an async runtime worker;
//!   a [`Ticket`] is a plain future (no runtime needed) resolving to the logits.
//! - Backpressure is a type: [`Scheduler::try_reserve`] fails with
//!   [`ScheduleError::Overloaded`] when too many pairs are waiting.
//! - Dropping a [`Ticket`] (the client went away) removes its pairs from the
//!   queue before they cost compute.
//! - A failing or panicking forward pass fails only the requests with pairs in
//!   that batch; the thread goes on with the next batch. Should the thread
//!   itself die, every waiting request is answered with an error and
//!   [`Health::model_thread_alive`] turns false.
//!
//! The contract with the model is [`Backend`] (in [`crate::backend`]): one
//! synchronous forward pass over a flat batch of token-id lists; batches are
//! chosen by [`BatchBudget::pick`].

use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
    /// About how long one forward pass may hold the model: the padded tokens
    /// of a pass are capped at this time divided by the measured time per
    /// padded token. `None`: only `max_batch_tokens` bounds a pass.
    pub max_pass_time: Option<Duration>,
}

impl SchedulerConfig {
    /// The limits of one forward pass, before the time cap.
    pub fn budget(&self) -> BatchBudget {
        BatchBudget {
            max_pairs: self.max_batch_pairs,
            max_tokens: self.max_batch_tokens,
        }
    }
}

/// The token cap of the first passes under [`SchedulerConfig::max_pass_time`],
/// before any pass has been measured: small, so that no pass runs long on a
/// guess; it grows to the measured rate within a few passes.
pub const COLD_PASS_TOKENS: usize = 512;

/// How often an idle model thread shows it is alive.
const BEAT: Duration = Duration::from_millis(500);

/// What one forward pass did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchReport {
    pub pairs: usize,
    /// Real tokens in the batch.
    pub tokens: usize,
    /// Pairs × longest pair: what the token budget counts.
    pub padded_tokens: usize,
    /// The padded-token cap this pass was picked under.
    pub token_cap: usize,
    /// Time in [`Backend::predict`].
    pub duration: Duration,
    /// Whether the forward pass succeeded.
    pub ok: bool,
    /// Whether it was a health probe's pass (no request's pairs).
    pub probe: bool,
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

/// What waiting requests are told if the model thread itself dies.
pub const THREAD_DIED_MESSAGE: &str =
    "internal error: the model thread stopped (details are in the server log); the server must be restarted";

/// The model thread's state as the probes see it: a snapshot of atomics,
/// taken without waiting for anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// False once the model thread has exited (after [`Scheduler::shutdown`],
    /// or because it died).
    pub model_thread_alive: bool,
    /// Since the model thread last showed progress: it beats every
    /// half-second when idle and at the start and end of every pass, so this
    /// is the length of the current pass when busy.
    pub since_beat: Duration,
    /// How long the current forward pass has been running; `None` when idle.
    pub busy_for: Option<Duration>,
    /// Whether the most recent forward pass succeeded (`None` before the first).
    pub last_pass_ok: Option<bool>,
    /// Since the most recent successful forward pass (`None`: none yet).
    pub since_success: Option<Duration>,
    /// Whether a probe's forward pass is queued or running.
    pub probe_in_flight: bool,
    /// Pairs waiting in the queue (not counting the pass being computed).
    pub queued_pairs: usize,
    /// Pairs held by reservations (waiting, queued or being computed).
    pub reserved_pairs: usize,
    /// The padded-token cap the next pass is picked under.
    pub pass_token_cap: usize,
    /// Total time spent in forward passes.
    pub busy_total: Duration,
    /// Whether [`Scheduler::shutdown`] was called.
    pub closed: bool,
}

impl Health {
    /// The liveness rule: the model thread runs and has shown progress within
    /// `stuck_after` (one pass running longer counts as stuck).
    pub fn is_live(&self, stuck_after: Duration) -> bool {
        self.model_thread_alive && self.since_beat <= stuck_after
    }
}

/// Instants as milliseconds since the scheduler started, shifted by one so
/// that 0 can mean "never".
struct Clock(Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }
    fn since(&self, stamp: u64) -> Option<Duration> {
        (stamp != 0).then(|| Duration::from_millis(self.now().saturating_sub(stamp)))
    }
}

/// What the model thread publishes for [`Scheduler::health`].
struct Pulse {
    clock: Clock,
    alive: AtomicBool,
    closed: AtomicBool,
    beat: AtomicU64,
    busy_since: AtomicU64,
    /// 0: no pass yet, 1: the last one succeeded, 2: it failed.
    outcome: AtomicU8,
    last_success: AtomicU64,
    busy_nanos: AtomicU64,
    probe_in_flight: AtomicBool,
    last_probe: AtomicU64,
    queued: AtomicUsize,
    reserved: AtomicUsize,
    token_cap: AtomicUsize,
}

/// A waiting pair.
struct Entry {
    job: u64,
    /// Position of the pair in its request.
    index: usize,
    ids: Vec<u32>,
}

/// A request with pairs still queued or being computed.
struct Job {
    reply: oneshot::Sender<Reply>,
    logits: Vec<f32>,
    remaining: usize,
    /// Tokens of its pairs still in the queue (not yet in a pass).
    queued_tokens: usize,
    /// Time of the passes that ran while it had pairs waiting, together with
    /// other waiting requests or with none of its pairs in the pass.
    held_back: Duration,
    submitted: Instant,
    started: Option<Instant>,
    /// A health probe's job: nobody waits on `reply`; it goes first.
    probe: bool,
}

/// The rank of a request when the next pass is picked: its response ratio,
/// the time it was held back (passes that ran while it had pairs waiting
/// together with other waiting requests, or with none of its pairs in the
/// pass) per token it still has queued; higher goes first, ties to the least
/// queued tokens, then to the earlier arrival. Highest response ratio next: a
/// request alone in the queue does not age, so a small newcomer outranks it
/// after one pass; among requests that wait, all age alike, so short ones go
/// first and of two equal ones the earlier keeps its lead (served in arrival
/// order, not interleaved); a long one left out of passes gains steadily on
/// fresh arrivals, so none starves. Needs no estimate of the model's speed.
pub fn priority(queued_tokens: usize, held_back: Duration) -> f64 {
    held_back.as_secs_f64() / queued_tokens.max(1) as f64
}

#[derive(Default)]
struct State {
    queue: Vec<Entry>,
    jobs: HashMap<u64, Job>,
    /// Pairs held by live [`Permit`]s.
    reserved: usize,
    next_job: u64,
    closed: bool,
    /// Seconds per padded token, smoothed over recent passes.
    secs_per_token: Option<f64>,
}

impl State {
    fn set_reserved(&mut self, pulse: &Pulse, reserved: usize) {
        self.reserved = reserved;
        pulse.reserved.store(reserved, Ordering::Relaxed);
    }
    fn published(&self, pulse: &Pulse) {
        pulse.queued.store(self.queue.len(), Ordering::Relaxed);
    }
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    config: SchedulerConfig,
    pulse: Pulse,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; recover rather than cascade.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The padded-token cap of the next pass.
    fn token_cap(&self, state: &State) -> usize {
        let max = self.config.max_batch_tokens;
        match (self.config.max_pass_time, state.secs_per_token) {
            (None, _) => max,
            (Some(_), None) => COLD_PASS_TOKENS.min(max),
            (Some(t), Some(spt)) => ((t.as_secs_f64() / spt) as usize).clamp(1, max),
        }
    }

    /// Learns the cost per token of the pass cap from a pass that filled at
    /// least half its cap or left work waiting (smaller passes would overstate
    /// it: a pass has a fixed part, reading the weights), or from any pass
    /// before the first estimate, so the cap soon leaves its cold guess.
    fn learn(&self, state: &mut State, padded: usize, cap: usize, left: bool, took: Duration) {
        let full = 2 * padded >= cap || left;
        if self.config.max_pass_time.is_none()
            || padded == 0
            || (!full && state.secs_per_token.is_some())
        {
            return;
        }
        let sample = took.as_secs_f64() / padded as f64;
        state.secs_per_token = Some(match state.secs_per_token {
            None => sample,
            Some(old) => 0.5 * old + 0.5 * sample,
        });
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
        if config.max_pass_time == Some(Duration::ZERO) {
            return Err(crate::Error::InvalidOption(
                "max-pass-time must be positive (leave it out for no time cap)".into(),
            ));
        }
        let clock = Clock(Instant::now());
        let beat = clock.now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            config,
            pulse: Pulse {
                clock,
                alive: AtomicBool::new(true),
                closed: AtomicBool::new(false),
                beat: AtomicU64::new(beat),
                busy_since: AtomicU64::new(0),
                outcome: AtomicU8::new(0),
                last_success: AtomicU64::new(0),
                busy_nanos: AtomicU64::new(0),
                probe_in_flight: AtomicBool::new(false),
                last_probe: AtomicU64::new(0),
                queued: AtomicUsize::new(0),
                reserved: AtomicUsize::new(0),
                token_cap: AtomicUsize::new(0),
            },
        });
        {
            let state = shared.lock();
            let cap = shared.token_cap(&state);
            shared.pulse.token_cap.store(cap, Ordering::Relaxed);
        }
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("rerank-model".into())
            .spawn(move || {
                let _guard = LoopGuard(&thread_shared);
                model_loop(&thread_shared, backend.as_ref(), observer.as_deref());
            })
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
        let reserved = state.reserved + pairs;
        state.set_reserved(&self.shared.pulse, reserved);
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
        let (tx, rx) = oneshot::channel();
        let job = self.enqueue(pairs, tx, false)?;
        Ok(Ticket {
            rx,
            job,
            shared: Arc::clone(&self.shared),
            _permit: Some(permit),
            done: false,
        })
    }

    /// Queues a one-pair forward pass ahead of everything waiting, outside
    /// the reservation limit, to learn whether the model still computes; its
    /// outcome shows in [`Health::last_pass_ok`]. Does nothing (and returns
    /// false) while another probe is queued or running, or when the last one
    /// was queued less than `interval` ago.
    pub fn probe(&self, pair: Vec<u32>, interval: Duration) -> bool {
        let pulse = &self.shared.pulse;
        if pulse
            .clock
            .since(pulse.last_probe.load(Ordering::Relaxed))
            .is_some_and(|d| d < interval)
        {
            return false;
        }
        if pulse
            .probe_in_flight
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        pulse.last_probe.store(pulse.clock.now(), Ordering::Relaxed);
        // Nobody waits on the reply: the model thread publishes the outcome.
        let (tx, _rx) = oneshot::channel();
        if self.enqueue(vec![pair], tx, true).is_err() {
            pulse.probe_in_flight.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Runs one probe pair ahead of everything waiting and blocks the calling
    /// thread until its outcome (also published in [`Health`]): the start-up
    /// check that the model computes.
    pub fn probe_now(&self, pair: Vec<u32>) -> Result<(), ScheduleError> {
        let (tx, rx) = oneshot::channel();
        let job = self.enqueue(vec![pair], tx, true)?;
        let ticket = Ticket {
            rx,
            job,
            shared: Arc::clone(&self.shared),
            _permit: None,
            done: false,
        };
        block_on(ticket).map(|_| ())
    }

    fn enqueue(
        &self,
        pairs: Vec<Vec<u32>>,
        reply: oneshot::Sender<Reply>,
        probe: bool,
    ) -> Result<u64, ScheduleError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(ScheduleError::Closed);
        }
        let job = state.next_job;
        state.next_job += 1;
        if pairs.is_empty() {
            let _ = reply.send(Ok(Scored {
                logits: Vec::new(),
                queue_time: Duration::ZERO,
                inference_time: Duration::ZERO,
            }));
            return Ok(job);
        }
        let n = pairs.len();
        let queued_tokens = pairs.iter().map(Vec::len).sum();
        for (index, ids) in pairs.into_iter().enumerate() {
            state.queue.push(Entry { job, index, ids });
        }
        state.jobs.insert(
            job,
            Job {
                reply,
                logits: vec![0.0; n],
                remaining: n,
                queued_tokens,
                held_back: Duration::ZERO,
                submitted: Instant::now(),
                started: None,
                probe,
            },
        );
        state.published(&self.shared.pulse);
        self.shared.work.notify_one();
        Ok(job)
    }

    /// The model thread's state, read without waiting: what the probes answer from.
    pub fn health(&self) -> Health {
        let p = &self.shared.pulse;
        let busy_since = p.busy_since.load(Ordering::Relaxed);
        Health {
            model_thread_alive: p.alive.load(Ordering::Acquire),
            since_beat: p
                .clock
                .since(p.beat.load(Ordering::Relaxed))
                .unwrap_or_default(),
            busy_for: p.clock.since(busy_since),
            last_pass_ok: match p.outcome.load(Ordering::Acquire) {
                0 => None,
                1 => Some(true),
                _ => Some(false),
            },
            since_success: p.clock.since(p.last_success.load(Ordering::Relaxed)),
            probe_in_flight: p.probe_in_flight.load(Ordering::Relaxed),
            queued_pairs: p.queued.load(Ordering::Relaxed),
            reserved_pairs: p.reserved.load(Ordering::Relaxed),
            pass_token_cap: p.token_cap.load(Ordering::Relaxed),
            busy_total: Duration::from_nanos(p.busy_nanos.load(Ordering::Relaxed)),
            closed: p.closed.load(Ordering::Relaxed),
        }
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
        self.health().last_pass_ok
    }

    /// Whether [`Scheduler::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Takes no new work; what is queued is still computed and answered.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.pulse.closed.store(true, Ordering::Relaxed);
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
        let reserved = state.reserved.saturating_sub(self.pairs);
        state.set_reserved(&self.shared.pulse, reserved);
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
            state.published(&self.shared.pulse);
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("job", &self.job).finish()
    }
}

/// Runs when the model thread ends, normally or not: marks it dead and
/// answers whatever still waits, so no request hangs on a dead thread.
struct LoopGuard<'a>(&'a Shared);

impl Drop for LoopGuard<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        let mut state = shared.lock();
        state.closed = true;
        shared.pulse.closed.store(true, Ordering::Relaxed);
        shared.pulse.alive.store(false, Ordering::Release);
        if std::thread::panicking() {
            tracing::error!("the model thread died; failing every waiting request");
        }
        state.queue.clear();
        state.published(&shared.pulse);
        for (_, job) in state.jobs.drain() {
            let _ = job
                .reply
                .send(Err(ScheduleError::Backend(THREAD_DIED_MESSAGE.into())));
        }
        shared.pulse.probe_in_flight.store(false, Ordering::Release);
    }
}

/// The model thread: wait for work, take a batch, run it, answer.
fn model_loop(
    shared: &Shared,
    backend: &dyn Backend,
    observer: Option<&(dyn Fn(&BatchReport) + Send + Sync)>,
) {
    let config = shared.config;
    let pulse = &shared.pulse;
    loop {
        let (batch, cap, left, probe_pass) = {
            let mut state = shared.lock();
            loop {
                pulse.beat.store(pulse.clock.now(), Ordering::Relaxed);
                if !state.queue.is_empty() {
                    break;
                }
                if state.closed {
                    return;
                }
                state = shared
                    .work
                    .wait_timeout(state, BEAT)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let cap = shared.token_cap(&state);
            let picked = {
                // Rank the requests, then hand the pairs to the planner as
                // (length, rank among requests, position in the request).
                // (probes first, ratio descending, queued tokens, arrival)
                let mut order: Vec<(bool, f64, usize, u64)> = state
                    .jobs
                    .iter()
                    .map(|(&id, j)| {
                        let ratio = priority(j.queued_tokens, j.held_back);
                        (!j.probe, -ratio, j.queued_tokens, id)
                    })
                    .collect();
                order.sort_by(|a, b| {
                    a.0.cmp(&b.0)
                        .then(a.1.total_cmp(&b.1))
                        .then(a.2.cmp(&b.2))
                        .then(a.3.cmp(&b.3))
                });
                let rank: HashMap<u64, u64> = order
                    .iter()
                    .enumerate()
                    .map(|(r, &(_, _, _, id))| (id, r as u64))
                    .collect();
                let keys: Vec<(usize, u64)> = state
                    .queue
                    .iter()
                    .map(|e| (e.ids.len(), (rank[&e.job] << 32) | e.index as u64))
                    .collect();
                BatchBudget {
                    max_tokens: cap,
                    ..config.budget()
                }
                .pick(&keys)
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
                    job.queued_tokens -= e.ids.len();
                }
            }
            state.published(pulse);
            let probe_pass = batch
                .iter()
                .all(|e| state.jobs.get(&e.job).is_some_and(|j| j.probe));
            (batch, cap, !state.queue.is_empty(), probe_pass)
        };

        let ids: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
        let start = Instant::now();
        pulse.beat.store(pulse.clock.now(), Ordering::Relaxed);
        pulse.busy_since.store(pulse.clock.now(), Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| backend.predict(&ids)));
        let duration = start.elapsed();
        pulse.busy_since.store(0, Ordering::Relaxed);
        pulse.beat.store(pulse.clock.now(), Ordering::Relaxed);
        pulse
            .busy_nanos
            .fetch_add(duration.as_nanos() as u64, Ordering::Relaxed);
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
        let longest = ids.iter().map(|p| p.len()).max().unwrap_or(0);
        let padded = longest * ids.len();
        let report = BatchReport {
            pairs: ids.len(),
            tokens: ids.iter().map(|p| p.len()).sum(),
            padded_tokens: padded,
            token_cap: cap,
            duration,
            ok: result.is_ok(),
            probe: probe_pass,
        };
        drop(ids);
        // Before the replies, so that a client that got its answer sees its
        // pass in the metrics; outside the lock, so that an observer that
        // panics (killing the thread) leaves the guard able to answer.
        if let Some(observe) = observer {
            observe(&report);
        }

        let mut state = shared.lock();
        // Ageing: while two or more requests have pairs waiting, every one of
        // them was held back for this pass, whether or not some of its pairs
        // were in it (so an earlier request keeps its lead over an equal one
        // however long the passes take); a request waiting alone was held back
        // only if none of its pairs were in the pass.
        {
            let mut in_pass: Vec<u64> = batch.iter().map(|e| e.job).collect();
            in_pass.sort_unstable();
            let waiting = state.jobs.values().filter(|j| j.queued_tokens > 0).count();
            for (id, job) in state.jobs.iter_mut() {
                let served = in_pass.binary_search(id).is_ok();
                if job.queued_tokens > 0 && (waiting > 1 || !served) {
                    job.held_back += duration;
                }
            }
        }
        pulse
            .outcome
            .store(if result.is_ok() { 1 } else { 2 }, Ordering::Release);
        let mut probe_done = false;
        match result {
            Ok(logits) => {
                pulse
                    .last_success
                    .store(pulse.clock.now(), Ordering::Relaxed);
                shared.learn(&mut state, padded, cap, left, duration);
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
                        probe_done |= job.probe;
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
                        probe_done |= job.probe;
                        let _ = job.reply.send(Err(ScheduleError::Backend(message.clone())));
                    }
                }
                state
                    .queue
                    .retain(|e| failed.binary_search(&e.job).is_err());
            }
        }
        if probe_done {
            pulse.probe_in_flight.store(false, Ordering::Release);
        }
        let next_cap = shared.token_cap(&state);
        pulse.token_cap.store(next_cap, Ordering::Relaxed);
        state.published(pulse);
    }
}

/// Waits for a future on the calling thread (its wakers unpark it): enough
/// for a [`Ticket`], which the model thread completes.
fn block_on<F: Future>(f: F) -> F::Output {
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
            max_pass_time: None,
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
        /// First token of every pair, pass by pass.
        batches: Mutex<Vec<Vec<u32>>>,
    }

    impl Backend for Gate {
        fn predict(&self, pairs: &[&[u32]]) -> crate::Result<Vec<f32>> {
            let _ = self.entered.lock().unwrap().send(());
            // A closed gate (test over) lets everything through.
            let _ = self.go.lock().unwrap().recv();
            self.seen.lock().unwrap().extend(pairs.iter().map(|p| p[0]));
            self.batches
                .lock()
                .unwrap()
                .push(pairs.iter().map(|p| p[0]).collect());
            Ok(vec![0.0; pairs.len()])
        }
    }

    fn gate() -> (Arc<Gate>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            entered: Mutex::new(entered_tx),
            go: Mutex::new(go_rx),
            seen: Mutex::new(Vec::new()),
            batches: Mutex::new(Vec::new()),
        });
        (gate, entered, go)
    }

    #[test]
    fn a_dropped_ticket_leaves_the_queue_before_compute() {
        let (gate, entered, go) = gate();
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

    #[test]
    fn a_small_request_is_not_stuck_behind_a_big_one_and_equals_go_in_order() {
        let (gate, entered, go) = gate();
        let config = SchedulerConfig {
            max_queued_pairs: 1000,
            ..config()
        };
        let s = Scheduler::new(gate.clone(), config, None).unwrap();
        // The model is busy with a first request while the others arrive.
        let first = s.submit(vec![vec![1]], s.try_reserve(1).unwrap()).unwrap();
        entered.recv().unwrap();
        // Passes hold 6 pairs of 10 tokens (budget 64).
        let big = s
            .submit(vec![vec![2; 10]; 60], s.try_reserve(60).unwrap())
            .unwrap();
        let small = s
            .submit(vec![vec![3; 10]], s.try_reserve(1).unwrap())
            .unwrap();
        let medium = s
            .submit(vec![vec![4; 10]; 24], s.try_reserve(24).unwrap())
            .unwrap();
        let twin = s
            .submit(vec![vec![5; 10]; 24], s.try_reserve(24).unwrap())
            .unwrap();
        go.send(()).unwrap(); // the first pass ends
                              // The second pass (small and part of medium) lasts far longer than
                              // the others waited before it: medium must keep its lead on its twin
                              // however long its passes take.
        entered.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(go); // let every pass through
        for t in [first, small, big, medium, twin] {
            block_on(t).unwrap();
        }
        let batches = gate.batches.lock().unwrap().clone();
        assert_eq!(batches[0], vec![1]);
        // Arrival order would have served all 60 pairs of `big` first.
        assert!(batches[1].contains(&3), "{batches:?}");
        // Least work first, equals in arrival order: medium, its twin, big.
        let order: Vec<u32> = batches[1..].concat();
        let last = |id| order.iter().rposition(|&x| x == id).unwrap();
        let first = |id| order.iter().position(|&x| x == id).unwrap();
        assert!(last(4) < first(5) && last(5) < first(2), "{batches:?}");
    }

    #[test]
    fn a_newcomer_is_in_the_pass_after_it_arrives_at_a_big_request_alone() {
        let (gate, entered, go) = gate();
        let config = SchedulerConfig {
            max_queued_pairs: 1000,
            ..config()
        };
        let s = Scheduler::new(gate.clone(), config, None).unwrap();
        // 60 pairs of 10 tokens, 6 per pass, alone in the queue for 3 slow passes.
        let big = s
            .submit(vec![vec![2; 10]; 60], s.try_reserve(60).unwrap())
            .unwrap();
        for _ in 0..3 {
            entered.recv().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            go.send(()).unwrap();
        }
        entered.recv().unwrap(); // the fourth pass is running
        let small = s
            .submit(vec![vec![3; 10]], s.try_reserve(1).unwrap())
            .unwrap();
        drop(go);
        block_on(small).unwrap();
        block_on(big).unwrap();
        let batches = gate.batches.lock().unwrap().clone();
        assert!(batches[..4].iter().all(|b| !b.contains(&3)), "{batches:?}");
        assert!(batches[4].contains(&3), "{batches:?}");
    }

    #[test]
    fn the_response_ratio_favours_short_waits_and_grows_with_the_wait() {
        let ms = Duration::from_millis;
        // Held back equally long: the shorter request first.
        assert!(priority(10, ms(100)) > priority(600, ms(100)));
        // Never held back (its pairs fill every pass): 0, the lowest.
        assert_eq!(priority(90_000, ms(0)), 0.0);
        // A long request held back 7 passes of 10 ms outranks a short one
        // held back for one.
        assert!(priority(60, ms(70)) > priority(10, ms(10)));
    }

    #[test]
    fn a_request_left_out_of_passes_ages_and_is_not_starved() {
        let (gate, entered, go) = gate();
        let config = SchedulerConfig {
            max_queued_pairs: 1000,
            ..config()
        };
        let s = Scheduler::new(gate.clone(), config, None).unwrap();
        let blocker = s.submit(vec![vec![1]], s.try_reserve(1).unwrap()).unwrap();
        // A 60-token pair that never shares a pass with 10-token ones (budget
        // 64) and is always more work than a fresh one: with one arriving in
        // every pass, shortest-first alone would serve it after all of them.
        let long = s
            .submit(vec![vec![7; 60]], s.try_reserve(1).unwrap())
            .unwrap();
        let mut small = Vec::new();
        for _ in 0..20 {
            entered.recv().unwrap();
            small.push(
                s.submit(vec![vec![9; 10]], s.try_reserve(1).unwrap())
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(10)); // each pass lasts ≥ 10 ms
            go.send(()).unwrap();
        }
        drop(go);
        block_on(blocker).unwrap();
        block_on(long).unwrap();
        for t in small {
            block_on(t).unwrap();
        }
        let batches = gate.batches.lock().unwrap().clone();
        let at = batches.iter().position(|b| b.contains(&7)).unwrap();
        // Held back 7 passes of ≥ 10 ms, its ratio beats a fresh one's.
        assert!(at <= 12, "{batches:?}");
    }

    /// Sleeps 1 ms per padded token; records each pass's size and first tokens.
    struct Slow {
        passes: Mutex<Vec<usize>>,
        batches: Mutex<Vec<Vec<u32>>>,
    }

    impl Backend for Slow {
        fn predict(&self, pairs: &[&[u32]]) -> crate::Result<Vec<f32>> {
            let padded = pairs.iter().map(|p| p.len()).max().unwrap_or(0) * pairs.len();
            self.passes.lock().unwrap().push(padded);
            self.batches
                .lock()
                .unwrap()
                .push(pairs.iter().map(|p| p[0]).collect());
            std::thread::sleep(Duration::from_millis(padded as u64));
            Ok(vec![0.0; pairs.len()])
        }
    }

    #[test]
    fn a_pass_is_capped_by_its_measured_cost() {
        let slow = Arc::new(Slow {
            passes: Mutex::new(Vec::new()),
            batches: Mutex::new(Vec::new()),
        });
        let config = SchedulerConfig {
            max_batch_tokens: 100_000,
            max_batch_pairs: 1000,
            max_queued_pairs: 1000,
            // 40 tokens' worth at 1 ms per token.
            max_pass_time: Some(Duration::from_millis(40)),
        };
        let s = Scheduler::new(slow.clone(), config, None).unwrap();
        assert_eq!(s.health().pass_token_cap, COLD_PASS_TOKENS);
        let t = s
            .submit(vec![vec![5; 10]; 120], s.try_reserve(120).unwrap())
            .unwrap();
        block_on(t).unwrap();
        let passes = slow.passes.lock().unwrap().clone();
        // Without the time cap it would have been one pass of 1200 tokens.
        assert!(passes[0] <= COLD_PASS_TOKENS, "{passes:?}");
        // Sleeping only ever overshoots, so the learned cap is at most 40.
        assert!(passes[1..].iter().all(|&p| p <= 40), "{passes:?}");
        assert!(s.health().pass_token_cap <= 40);
        assert!(s.health().busy_total >= Duration::from_millis(1200));
    }

    #[test]
    fn health_answers_while_a_pass_runs_and_tells_busy_from_stuck() {
        let (gate, entered, go) = gate();
        let s = Scheduler::new(gate, config(), None).unwrap();
        let idle = s.health();
        assert!(idle.model_thread_alive && idle.busy_for.is_none());
        assert_eq!(idle.last_pass_ok, None);
        let t = s.submit(vec![vec![1]], s.try_reserve(1).unwrap()).unwrap();
        entered.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // The pass is blocked: this would hang if health waited for the model.
        let busy = s.health();
        assert!(busy.busy_for.unwrap() >= Duration::from_millis(50));
        assert!(busy.since_beat >= Duration::from_millis(50));
        assert!(busy.is_live(Duration::from_secs(600)));
        assert!(
            !busy.is_live(Duration::from_millis(10)),
            "stuck after 10 ms"
        );
        go.send(()).unwrap();
        block_on(t).unwrap();
        let done = s.health();
        assert_eq!(done.last_pass_ok, Some(true));
        assert!(done.since_success.is_some() && done.busy_for.is_none());
        // Idle, the thread keeps beating.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(s.health().since_beat < Duration::from_millis(1500));
    }

    #[test]
    fn a_dead_model_thread_fails_waiting_requests_and_is_not_live() {
        let echo = Arc::new(Echo {
            seen: Mutex::new(Vec::new()),
        });
        let observer: Observer = Arc::new(|_: &BatchReport| panic!("observer bug"));
        let s = Scheduler::new(echo, config(), Some(observer)).unwrap();
        let t = s.submit(vec![vec![1]], s.try_reserve(1).unwrap()).unwrap();
        assert!(matches!(block_on(t), Err(ScheduleError::Backend(m)) if m == THREAD_DIED_MESSAGE));
        let h = s.health();
        assert!(!h.model_thread_alive && !h.is_live(Duration::from_secs(600)));
        assert!(matches!(s.try_reserve(1), Err(ScheduleError::Closed)));
    }

    #[test]
    fn probes_run_one_at_a_time_and_at_most_once_per_interval() {
        let (gate, entered, go) = gate();
        let s = Scheduler::new(gate.clone(), config(), None).unwrap();
        assert!(s.probe(vec![9], Duration::ZERO));
        entered.recv().unwrap();
        assert!(s.health().probe_in_flight);
        assert!(!s.probe(vec![9], Duration::ZERO), "one in flight");
        go.send(()).unwrap();
        // The probe's pass is the only one; wait for its outcome.
        while s.health().probe_in_flight {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(s.last_batch_ok(), Some(true));
        assert!(!s.probe(vec![9], Duration::from_secs(3600)), "too soon");
        assert!(s.probe(vec![9], Duration::ZERO));
        drop(go);
        while s.health().probe_in_flight {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(*gate.seen.lock().unwrap(), vec![9, 9]);
        assert_eq!(s.reserved(), 0, "probes hold no reservation");
    }

    #[test]
    fn a_probe_of_a_failing_model_is_reported_and_clears() {
        struct Failing;
        impl Backend for Failing {
            fn predict(&self, _: &[&[u32]]) -> crate::Result<Vec<f32>> {
                Err(crate::Error::InvalidOption("broken".into()))
            }
        }
        let s = Scheduler::new(Arc::new(Failing), config(), None).unwrap();
        assert!(s.probe(vec![9], Duration::ZERO));
        while s.health().probe_in_flight {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(s.health().last_pass_ok, Some(false));
        assert_eq!(s.health().since_success, None);
    }
}
