//! Prometheus metrics (the `prometheus` crate, text format on `GET /metrics`).
//! Requests are counted by one middleware; the model thread reports batches
//! through the scheduler's observer.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use crate::cache::{CacheStats, ScoreCache};
use crate::scheduler::{BatchReport, Scheduler};

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub request_pairs: Histogram,
    pub queue_size: IntGauge,
    pub reserved_pairs: IntGauge,
    pub batch_pairs: Histogram,
    pub batch_tokens: Histogram,
    pub batch_padded_tokens: Histogram,
    pub batch_failures: IntCounter,
    pub tokenization_seconds: Histogram,
    pub queue_seconds: HistogramVec,
    pub inference_seconds: Histogram,
    pub model_busy_seconds: Counter,
    pub probe_passes: IntCounterVec,
    pub probes: IntCounterVec,
    pub pass_token_cap: IntGauge,
    pub model_thread_alive: IntGauge,
    pub pass_running_seconds: Gauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_evictions: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    /// The cache's counters as last exported: each render adds what they
    /// gained since (the cache keeps its own counters, for `/info` too).
    cache_exported: Mutex<CacheStats>,
    pub oom_splits: IntCounter,
}

/// The request-size buckets of the queue-wait histogram (documents per request).
pub const SIZE_BUCKETS: &[(usize, &str)] = &[
    (1, "1"),
    (8, "2-8"),
    (32, "9-32"),
    (128, "33-128"),
    (usize::MAX, "129+"),
];

fn size_label(docs: usize) -> &'static str {
    SIZE_BUCKETS
        .iter()
        .find(|(max, _)| docs <= *max)
        .map_or("129+", |(_, label)| label)
}

const TIME_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

fn counts(max: f64) -> Vec<f64> {
    let mut b = vec![1.0];
    while *b.last().expect("non-empty") < max {
        let next = b.last().expect("non-empty") * 2.0;
        b.push(next);
    }
    b
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let time = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(TIME_BUCKETS.to_vec()))
                .expect("valid histogram")
        };
        let count = |name: &str, help: &str, max: f64| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(counts(max)))
                .expect("valid histogram")
        };
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new("rerank_requests_total", "HTTP requests by route and status"),
                &["route", "status"],
            )
            .expect("valid counter"),
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "rerank_request_duration_seconds",
                    "HTTP request time, by route",
                )
                .buckets(TIME_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid histogram"),
            request_pairs: count(
                "rerank_request_pairs",
                "Pairs (documents) per rerank request",
                4096.0,
            ),
            queue_size: IntGauge::new("rerank_queue_size", "Pairs waiting for a forward pass")
                .expect("valid gauge"),
            reserved_pairs: IntGauge::new(
                "rerank_reserved_pairs",
                "Pairs admitted and not yet answered (tokenizing, queued or computing)",
            )
            .expect("valid gauge"),
            batch_pairs: count("rerank_batch_pairs", "Pairs per forward pass", 1024.0),
            batch_tokens: count(
                "rerank_batch_tokens",
                "Real tokens per forward pass",
                65536.0,
            ),
            batch_padded_tokens: count(
                "rerank_batch_padded_tokens",
                "Padded tokens (pairs x longest) per forward pass",
                65536.0,
            ),
            batch_failures: IntCounter::new(
                "rerank_batch_failures_total",
                "Forward passes that failed or panicked",
            )
            .expect("valid counter"),
            tokenization_seconds: time(
                "rerank_tokenization_duration_seconds",
                "Tokenization time per request",
            ),
            queue_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "rerank_queue_duration_seconds",
                    "Time from queueing to the first forward pass, per request, by documents per request",
                )
                .buckets(TIME_BUCKETS.to_vec()),
                &["docs"],
            )
            .expect("valid histogram"),
            inference_seconds: time(
                "rerank_inference_duration_seconds",
                "Time of one forward pass",
            ),
            model_busy_seconds: Counter::new(
                "rerank_model_busy_seconds_total",
                "Time the model thread spent in forward passes",
            )
            .expect("valid counter"),
            probe_passes: IntCounterVec::new(
                Opts::new(
                    "rerank_probe_passes_total",
                    "One-pair forward passes run for the probes (start-up, or no recent success), by result",
                ),
                &["result"],
            )
            .expect("valid counter"),
            probes: IntCounterVec::new(
                Opts::new(
                    "rerank_probes_total",
                    "Answers of /live, /ready and /health, by probe and result",
                ),
                &["probe", "result"],
            )
            .expect("valid counter"),
            pass_token_cap: IntGauge::new(
                "rerank_pass_token_cap",
                "Padded tokens the next forward pass may take (--max-pass-time over the measured cost per token)",
            )
            .expect("valid gauge"),
            model_thread_alive: IntGauge::new(
                "rerank_model_thread_alive",
                "1 while the model thread runs",
            )
            .expect("valid gauge"),
            pass_running_seconds: Gauge::new(
                "rerank_pass_running_seconds",
                "How long the forward pass in progress has run (0 when idle)",
            )
            .expect("valid gauge"),
            cache_hits: IntCounter::new(
                "rerank_cache_hits_total",
                "Pairs whose logit came from the score cache (no forward pass)",
            )
            .expect("valid counter"),
            cache_misses: IntCounter::new(
                "rerank_cache_misses_total",
                "Pairs looked up in the score cache and not found",
            )
            .expect("valid counter"),
            cache_evictions: IntCounter::new(
                "rerank_cache_evictions_total",
                "Score cache entries pushed out to make room (least recently used first)",
            )
            .expect("valid counter"),
            cache_entries: IntGauge::new("rerank_cache_entries", "Pairs in the score cache")
                .expect("valid gauge"),
            cache_bytes: IntGauge::new(
                "rerank_cache_bytes",
                "Estimated memory of the score cache's entries",
            )
            .expect("valid gauge"),
            cache_exported: Mutex::new(CacheStats::default()),
            oom_splits: IntCounter::new(
                "rerank_oom_splits_total",
                "Batches split in two and retried after a device out-of-memory error (CUDA)",
            )
            .expect("valid counter"),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.requests.clone())).expect("unique");
        r.register(Box::new(m.request_duration.clone()))
            .expect("unique");
        r.register(Box::new(m.request_pairs.clone()))
            .expect("unique");
        r.register(Box::new(m.queue_size.clone())).expect("unique");
        r.register(Box::new(m.reserved_pairs.clone()))
            .expect("unique");
        r.register(Box::new(m.batch_pairs.clone())).expect("unique");
        r.register(Box::new(m.batch_tokens.clone()))
            .expect("unique");
        r.register(Box::new(m.batch_padded_tokens.clone()))
            .expect("unique");
        r.register(Box::new(m.batch_failures.clone()))
            .expect("unique");
        r.register(Box::new(m.tokenization_seconds.clone()))
            .expect("unique");
        r.register(Box::new(m.queue_seconds.clone()))
            .expect("unique");
        r.register(Box::new(m.inference_seconds.clone()))
            .expect("unique");
        r.register(Box::new(m.model_busy_seconds.clone()))
            .expect("unique");
        r.register(Box::new(m.probe_passes.clone()))
            .expect("unique");
        r.register(Box::new(m.probes.clone())).expect("unique");
        r.register(Box::new(m.pass_token_cap.clone()))
            .expect("unique");
        r.register(Box::new(m.model_thread_alive.clone()))
            .expect("unique");
        r.register(Box::new(m.pass_running_seconds.clone()))
            .expect("unique");
        for c in [
            &m.cache_hits,
            &m.cache_misses,
            &m.cache_evictions,
            &m.oom_splits,
        ] {
            r.register(Box::new(c.clone())).expect("unique");
        }
        for g in [&m.cache_entries, &m.cache_bytes] {
            r.register(Box::new(g.clone())).expect("unique");
        }
        m
    }

    /// Records one forward pass (called on the model thread).
    pub fn observe_batch(&self, b: &BatchReport) {
        self.batch_pairs.observe(b.pairs as f64);
        self.batch_tokens.observe(b.tokens as f64);
        self.batch_padded_tokens.observe(b.padded_tokens as f64);
        self.inference_seconds.observe(b.duration.as_secs_f64());
        self.model_busy_seconds.inc_by(b.duration.as_secs_f64());
        if !b.ok {
            self.batch_failures.inc();
        }
        if b.probe {
            let result = if b.ok { "ok" } else { "failed" };
            self.probe_passes.with_label_values(&[result]).inc();
        }
    }

    /// Records how long a request of `docs` documents waited for its first pass.
    pub fn observe_queue_wait(&self, docs: usize, wait: Duration) {
        self.queue_seconds
            .with_label_values(&[size_label(docs)])
            .observe(wait.as_secs_f64());
    }

    /// Records one probe answer.
    pub fn observe_probe(&self, probe: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.probes.with_label_values(&[probe, result]).inc();
    }

    /// Records one answered HTTP request.
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// Brings the cache metrics up to the cache's own counters.
    fn export_cache(&self, cache: &ScoreCache) {
        let now = cache.stats();
        let mut last = self
            .cache_exported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.cache_hits.inc_by(now.hits.saturating_sub(last.hits));
        self.cache_misses
            .inc_by(now.misses.saturating_sub(last.misses));
        self.cache_evictions
            .inc_by(now.evictions.saturating_sub(last.evictions));
        self.cache_entries.set(now.entries as i64);
        self.cache_bytes.set(now.bytes as i64);
        *last = now;
    }

    /// The text exposition, with the queue gauges and the cache read now.
    pub fn render(
        &self,
        scheduler: &Scheduler,
        cache: Option<&ScoreCache>,
        oom_splits: u64,
    ) -> String {
        if let Some(cache) = cache {
            self.export_cache(cache);
        }
        {
            // Under the cache's lock too: two renders never add the same splits.
            let _exported = self
                .cache_exported
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.oom_splits
                .inc_by(oom_splits.saturating_sub(self.oom_splits.get()));
        }
        let h = scheduler.health();
        self.queue_size.set(h.queued_pairs as i64);
        self.reserved_pairs.set(h.reserved_pairs as i64);
        self.pass_token_cap.set(h.pass_token_cap as i64);
        self.model_thread_alive.set(i64::from(h.model_thread_alive));
        self.pass_running_seconds
            .set(h.busy_for.map_or(0.0, |d| d.as_secs_f64()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of valid metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
