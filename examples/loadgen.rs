//! Load generator and fault tester for `rerank serve`.
//!
//! The default scenario (`--scenario bench`, also what a plain invocation runs): for each
//! concurrency level, that many clients (one keep-alive HTTP/1 connection each) send rerank
//! requests back to back for a fixed time; reports requests/s, pairs/s and p50/p90/p99 latency.
//! Requests are built from a fixed vocabulary with a seeded generator, so runs are comparable.
//!
//! The other scenarios (`--scenario soak|fairness|flood|drain`) count every outcome instead of
//! stopping at the first error: HTTP statuses by code, connection errors by kind (`refused`,
//! `closed`, `reset`, ...), client-side timeouts (`--request-timeout-s`, so the tool never hangs)
//! and abandoned requests. Latency percentiles are of successful (2xx) requests; for probes, of
//! every answered probe whatever its status.
//!
//! - `soak`: mixed load for `--duration` s. Each request picks (seeded) the TEI or the Cohere
//!   API, 1-8 documents (50%), 9-50 (35%) or 51-200 (15%) (`--soak-docs 8,50,200`), each of
//!   `--words` (default 20-500) words. Concurrency follows `--soak-levels` (default 1,4,8,16,32) cycled in equal slices of
//!   `--slice-s` seconds (default 30): client i sends only while i < the current level, and
//!   closes its connection while idle. `--disconnect-fraction` of the requests are abandoned:
//!   the connection is dropped after a random delay (5-95% of that client's running latency of
//!   the same size bucket) and the next request reconnects. Reports overall, per size bucket
//!   (1, 2-8, 9-50, 51+ documents) and per concurrency level; with `--server-pid`, the
//!   server's VmRSS every `--rss-interval-s` seconds (start, middle, end, min, max, series).
//! - `fairness`: `--big-clients` clients send `--big-docs` x `--big-words` requests back to back,
//!   one client sends one-document (`--small-words`) requests back to back, and every
//!   `--probe-paths` path is polled every `--probe-interval-ms`.
//! - `flood`: `--flood-clients` clients GET the probe paths in a tight loop while the first
//!   `--concurrency` value of clients send requests as in `bench`.
//! - `drain`: `--concurrency` clients send requests as in `bench`; after `--signal-after` s,
//!   `kill -TERM --server-pid`; from then on every request opens a new connection, for
//!   `--after-signal` s. Reports the requests in flight at the signal, the outcomes of the new
//!   ones, and when the server process exited (became a zombie or vanished).
//!
//! ```sh
//! cargo build --release --bin rerank --example loadgen
//! ./target/release/rerank serve --model tests/fixtures/tiny --port 8080 &
//! ./target/release/examples/loadgen --url http://127.0.0.1:8080 --concurrency 1,4,16
//! ./target/release/examples/loadgen --url http://127.0.0.1:8080 --scenario soak --duration 600 \
//!     --server-pid $! --json
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Load generator for `rerank serve`.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Server base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// What to run (see the module documentation).
    #[arg(long, value_enum, default_value_t = Scenario::Bench)]
    scenario: Scenario,
    /// Which API to call (bench, flood, drain, fairness; soak mixes both).
    #[arg(long, value_enum, default_value_t = Api::Tei)]
    api: Api,
    /// Concurrent clients, one run per value (flood: the first value, default 4; drain: the
    /// first value, default 4) [default: 1,4,16].
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each run's measurement starts (not in drain).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Documents per request, cycled request by request (mixed sizes) [default: 1,8,32;
    /// drain: 8,16,32].
    #[arg(long, value_delimiter = ',')]
    docs: Option<Vec<usize>>,
    /// Words per document: each document gets a length drawn between these two
    /// [default: 10,120; soak: 20,500; drain: 50,150].
    #[arg(long, value_delimiter = ',')]
    words: Option<Vec<usize>>,
    /// Words per query.
    #[arg(long, default_value_t = 8)]
    query_words: usize,
    /// Bearer key when the server has --api-key.
    #[arg(long, env = "RERANK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
    /// Seed of the request generator.
    #[arg(long, default_value_t = 0x9e37_79b9_7f4a_7c15)]
    seed: u64,
    /// Client-side limit of one request (connect, send, whole answer), seconds.
    #[arg(long, default_value_t = 600.0)]
    request_timeout_s: f64,
    /// soak: fraction of requests abandoned before the answer (connection dropped).
    #[arg(long, default_value_t = 0.05)]
    disconnect_fraction: f64,
    /// soak: documents per request are drawn from 1..=A (50%), A+1..=B (35%) or B+1..=C (15%).
    #[arg(long, value_delimiter = ',', default_value = "8,50,200")]
    soak_docs: Vec<usize>,
    /// soak: concurrency levels, cycled in equal slices.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16,32")]
    soak_levels: Vec<usize>,
    /// soak: seconds per concurrency slice.
    #[arg(long, default_value_t = 30.0)]
    slice_s: f64,
    /// Server process whose VmRSS is sampled (soak) or which gets SIGTERM (drain).
    #[arg(long)]
    server_pid: Option<u32>,
    /// soak: seconds between RSS samples.
    #[arg(long, default_value_t = 10.0)]
    rss_interval_s: f64,
    /// fairness: clients sending big requests.
    #[arg(long, default_value_t = 1)]
    big_clients: usize,
    /// fairness: documents per big request.
    #[arg(long, default_value_t = 200)]
    big_docs: usize,
    /// fairness: words per document of a big request (range).
    #[arg(long, value_delimiter = ',', default_value = "200,500")]
    big_words: Vec<usize>,
    /// fairness: words of the one document of a small request (range).
    #[arg(long, value_delimiter = ',', default_value = "20,50")]
    small_words: Vec<usize>,
    /// fairness, flood: GET paths polled.
    #[arg(long, value_delimiter = ',', default_value = "/health,/live,/ready")]
    probe_paths: Vec<String>,
    /// fairness: milliseconds between two polls of each probe path.
    #[arg(long, default_value_t = 100)]
    probe_interval_ms: u64,
    /// flood: clients polling the probe paths in a tight loop.
    #[arg(long, default_value_t = 32)]
    flood_clients: usize,
    /// flood: milliseconds between two polls of one flood client (0: a tight loop, which on a
    /// machine shared with the server measures CPU contention as much as the server).
    #[arg(long, default_value_t = 0)]
    flood_interval_ms: u64,
    /// drain: seconds of load before SIGTERM.
    #[arg(long, default_value_t = 5.0)]
    signal_after: f64,
    /// drain: seconds of load after SIGTERM.
    #[arg(long, default_value_t = 5.0)]
    after_signal: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Fixed-concurrency runs, one per --concurrency value (the default).
    Bench,
    /// Long mixed load with varying concurrency and abandoned requests; RSS of the server.
    Soak,
    /// Latency of small requests and probes next to big requests.
    Fairness,
    /// Probe flood next to normal load.
    Flood,
    /// SIGTERM under load.
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    /// POST /rerank (text-embeddings-inference)
    Tei,
    /// POST /v1/rerank (Cohere/Jina)
    Cohere,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Tei => "/rerank",
            Api::Cohere => "/v1/rerank",
        }
    }
}

impl Args {
    /// Fills the per-scenario defaults and checks the values.
    fn resolve(&mut self) -> Result<()> {
        let drain = self.scenario == Scenario::Drain;
        let one = matches!(self.scenario, Scenario::Flood | Scenario::Drain);
        self.concurrency
            .get_or_insert_with(|| if one { vec![4] } else { vec![1, 4, 16] });
        self.docs.get_or_insert_with(|| {
            if drain {
                vec![8, 16, 32]
            } else {
                vec![1, 8, 32]
            }
        });
        let scenario = self.scenario;
        self.words.get_or_insert_with(|| match scenario {
            Scenario::Soak => vec![20, 500],
            Scenario::Drain => vec![50, 150],
            _ => vec![10, 120],
        });
        if self.docs().is_empty() || self.docs().contains(&0) {
            bail!("--docs needs positive numbers");
        }
        if self.concurrency().is_empty() {
            bail!("--concurrency needs a value");
        }
        if !matches!(self.soak_docs.as_slice(), [a, b, c] if 0 < *a && a < b && b < c) {
            bail!("--soak-docs needs three increasing positive numbers A,B,C");
        }
        if self.soak_levels.is_empty() || self.soak_levels.contains(&0) {
            bail!("--soak-levels needs positive numbers");
        }
        if self.slice_s <= 0.0 || self.request_timeout_s <= 0.0 || self.rss_interval_s <= 0.0 {
            bail!("--slice-s, --request-timeout-s and --rss-interval-s must be positive");
        }
        if !(0.0..=1.0).contains(&self.disconnect_fraction) {
            bail!("--disconnect-fraction must be between 0 and 1");
        }
        if self.probe_paths.iter().any(|p| !p.starts_with('/')) {
            bail!("--probe-paths must start with /");
        }
        Ok(())
    }
    fn concurrency(&self) -> &[usize] {
        self.concurrency.as_deref().unwrap_or_default()
    }
    fn docs(&self) -> &[usize] {
        self.docs.as_deref().unwrap_or_default()
    }
    fn words(&self) -> &[usize] {
        self.words.as_deref().unwrap_or_default()
    }
    fn authority(&self) -> Result<String> {
        Ok(self
            .url
            .strip_prefix("http://")
            .context("--url must start with http://")?
            .trim_end_matches('/')
            .to_string())
    }
    fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_s)
    }
}

const WORDS: &[&str] = &[
    "the",
    "giant",
    "panda",
    "is",
    "a",
    "bear",
    "species",
    "endemic",
    "to",
    "china",
    "beijing",
    "capital",
    "city",
    "political",
    "center",
    "economy",
    "shanghai",
    "river",
    "mountain",
    "artificial",
    "intelligence",
    "development",
    "trend",
    "model",
    "language",
    "search",
    "rank",
    "document",
    "query",
    "relevance",
    "北京",
    "首都",
    "人工智能",
    "发展",
    "趋势",
    "熊猫",
    "東京",
    "日本",
    "القاهرة",
    "عاصمة",
    "🐼",
    "network",
    "deep",
    "learning",
    "transformer",
    "attention",
];

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn text(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| WORDS[self.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }
    /// `n` documents of `lo..=hi` words each.
    fn docs(&mut self, n: usize, (lo, hi): (usize, usize)) -> Vec<String> {
        (0..n)
            .map(|_| {
                let w = lo + self.below(hi - lo + 1);
                self.text(w)
            })
            .collect()
    }
}

/// The generator of client `id` (the bench scenario's, for the default seed, as before).
fn client_rng(seed: u64, id: usize, salt: u64) -> Rng {
    let mut x = seed ^ (id as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1) ^ salt;
    if x == 0 {
        x = 1;
    }
    Rng(x)
}

/// `[lo, hi]` of a words flag.
fn range(words: &[usize]) -> (usize, usize) {
    match words {
        [w] => (*w, *w),
        [lo, hi, ..] => (*lo.min(hi), *lo.max(hi)),
        [] => (50, 50),
    }
}

fn body(api: Api, query: String, docs: Vec<String>) -> Bytes {
    let body = match api {
        Api::Tei => json!({"query": query, "texts": docs}),
        Api::Cohere => json!({"query": query, "documents": docs, "model": "loadgen"}),
    };
    Bytes::from(body.to_string())
}

/// One request body and its number of documents.
fn make_request(args: &Args, rng: &mut Rng, n: usize) -> (Bytes, usize) {
    let docs_n = args.docs()[n % args.docs().len()];
    let query = rng.text(args.query_words);
    let docs = rng.docs(docs_n, range(args.words()));
    (body(args.api, query, docs), docs_n)
}

#[derive(Default)]
struct ClientStats {
    /// Latencies of successful requests finished in the measured window.
    latencies: Vec<Duration>,
    pairs: usize,
    errors: usize,
    overloaded: usize,
}

async fn client(
    args: &Args,
    id: usize,
    warm_until: Instant,
    until: Instant,
) -> Result<ClientStats> {
    let authority = args.authority()?;
    let path = args.api.path();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut rng = client_rng(args.seed, id, 0);
    let mut stats = ClientStats::default();
    let mut n = id;
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let (body, docs) = make_request(args, &mut rng, n);
        n += 1;
        let mut req = Request::post(path)
            .header("host", &authority)
            .header("content-type", "application/json");
        if let Some(key) = &args.api_key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let req = req.body(Full::new(body))?;
        let (status, start) = tokio::time::timeout(args.request_timeout(), async {
            sender.ready().await?;
            let start = Instant::now();
            let response = sender.send_request(req).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, start))
        })
        .await
        .context("request timed out (--request-timeout-s)")??;
        let end = Instant::now();
        if start < warm_until {
            continue;
        }
        if status.is_success() {
            stats.latencies.push(end - start);
            stats.pairs += docs;
        } else if status.as_u16() == 429 {
            stats.overloaded += 1;
        } else {
            stats.errors += 1;
        }
    }
    Ok(stats)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The default scenario: one fixed-concurrency run per `--concurrency` value.
async fn bench(args: &'static Args) -> Result<()> {
    if !args.json {
        println!(
            "api {:?}, docs per request {:?}, words per doc {:?}, {} s per run",
            args.api,
            args.docs(),
            args.words(),
            args.duration
        );
        println!(
            "{:>7} {:>9} {:>7} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "clients",
            "requests",
            "errors",
            "429s",
            "req/s",
            "pairs/s",
            "p50 ms",
            "p90 ms",
            "p99 ms"
        );
    }
    for &c in args.concurrency() {
        let start = Instant::now();
        let warm_until = start + Duration::from_secs_f64(args.warmup);
        let until = warm_until + Duration::from_secs_f64(args.duration);
        let tasks: Vec<_> = (0..c)
            .map(|id| tokio::spawn(client(args, id, warm_until, until)))
            .collect();
        let mut all = ClientStats::default();
        for t in tasks {
            let s = t.await??;
            all.latencies.extend(s.latencies);
            all.pairs += s.pairs;
            all.errors += s.errors;
            all.overloaded += s.overloaded;
        }
        // The measured window ends when the last request that started in it ends.
        let window = (Instant::now() - warm_until).as_secs_f64();
        all.latencies.sort();
        let requests = all.latencies.len();
        let (p50, p90, p99) = (
            percentile(&all.latencies, 50.0),
            percentile(&all.latencies, 90.0),
            percentile(&all.latencies, 99.0),
        );
        if args.json {
            println!(
                "{}",
                json!({
                    "clients": c, "requests": requests, "errors": all.errors, "overloaded": all.overloaded,
                    "seconds": window, "requests_per_s": requests as f64 / window,
                    "pairs_per_s": all.pairs as f64 / window,
                    "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
                })
            );
        } else {
            println!(
                "{:>7} {:>9} {:>7} {:>6} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1}",
                c,
                requests,
                all.errors,
                all.overloaded,
                requests as f64 / window,
                all.pairs as f64 / window,
                p50,
                p90,
                p99
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The scenarios' client: every outcome is counted, none stops the run.

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive connection; dropping it closes the socket (its driver task is aborted).
struct Conn {
    sender: Sender,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where and how the scenario clients send.
#[derive(Clone)]
struct Target {
    authority: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl Target {
    fn new(args: &Args) -> Result<Self> {
        Ok(Self {
            authority: args.authority()?,
            api_key: args.api_key.clone(),
            timeout: args.request_timeout(),
        })
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An answer, whole body read.
    Status(u16),
    /// No answer: the connection failed (`refused`, `closed`, `reset`, ...).
    Conn(&'static str),
    /// No answer within `--request-timeout-s`.
    Timeout,
    /// Given up on purpose (soak's `--disconnect-fraction`).
    Abandoned,
}

impl Outcome {
    fn ok(self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(&s))
    }
}

async fn connect(authority: &str) -> Result<Conn, &'static str> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| io_kind(&e, "connect"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| classify(&e))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender, task })
}

fn io_kind(e: &std::io::Error, other: &'static str) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "refused",
        ConnectionReset => "reset",
        ConnectionAborted => "aborted",
        BrokenPipe => "broken_pipe",
        UnexpectedEof => "closed",
        _ => other,
    }
}

fn classify(e: &hyper::Error) -> &'static str {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_kind(io, "io");
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        "closed"
    } else if e.is_parse() {
        "parse"
    } else {
        "other"
    }
}

/// One request on `slot`'s connection (opened first if there is none or it is closed). Any
/// failure, timeout or abandonment drops the connection, so the next request reconnects.
async fn exchange(
    slot: &mut Option<Conn>,
    target: &Target,
    path: &str,
    body: Option<Bytes>,
    abandon: Option<Duration>,
) -> Outcome {
    let s = &mut *slot;
    let send = async move {
        if s.as_ref().is_some_and(|c| c.sender.is_closed()) {
            *s = None;
        }
        if s.is_none() {
            *s = Some(connect(&target.authority).await?);
        }
        let conn = s.as_mut().expect("connected");
        let mut req = match body {
            Some(_) => Request::post(path).header("content-type", "application/json"),
            None => Request::get(path),
        }
        .header("host", &target.authority);
        if let Some(key) = &target.api_key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| "request")?;
        conn.sender.ready().await.map_err(|e| classify(&e))?;
        let response = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| classify(&e))?;
        Ok::<_, &'static str>(status)
    };
    let give_up = async {
        match abandon {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        r = send => match r {
            Ok(status) => Outcome::Status(status),
            Err(kind) => Outcome::Conn(kind),
        },
        _ = tokio::time::sleep(target.timeout) => Outcome::Timeout,
        _ = give_up => Outcome::Abandoned,
    };
    if !matches!(outcome, Outcome::Status(_)) {
        *slot = None;
    }
    outcome
}

/// Outcomes of a set of requests.
#[derive(Default, Clone)]
struct Stats {
    /// Probes: latency of every answer, not only of the 2xx ones.
    probe: bool,
    /// Latencies (sorted by `finish`).
    lat: Vec<Duration>,
    sent: usize,
    ok: usize,
    pairs: usize,
    statuses: BTreeMap<u16, usize>,
    conn: BTreeMap<&'static str, usize>,
    timeouts: usize,
    abandoned: usize,
}

impl Stats {
    fn probes() -> Self {
        Self {
            probe: true,
            ..Self::default()
        }
    }
    fn record(&mut self, outcome: Outcome, latency: Duration, docs: usize) {
        self.sent += 1;
        match outcome {
            Outcome::Status(s) => {
                *self.statuses.entry(s).or_default() += 1;
                if outcome.ok() {
                    self.ok += 1;
                    self.pairs += docs;
                }
                if outcome.ok() || self.probe {
                    self.lat.push(latency);
                }
            }
            Outcome::Conn(kind) => *self.conn.entry(kind).or_default() += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Abandoned => self.abandoned += 1,
        }
    }
    fn merge(&mut self, other: &Stats) {
        self.lat.extend_from_slice(&other.lat);
        self.sent += other.sent;
        self.ok += other.ok;
        self.pairs += other.pairs;
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &other.conn {
            *self.conn.entry(k).or_default() += v;
        }
        self.timeouts += other.timeouts;
        self.abandoned += other.abandoned;
    }
    fn finish(&mut self) {
        self.lat.sort();
    }
    fn failed_statuses(&self) -> BTreeMap<u16, usize> {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(s, n)| (*s, *n))
            .collect()
    }
    /// Non-2xx answers, connection errors and timeouts (not abandoned requests).
    fn errors(&self) -> usize {
        self.failed_statuses().values().sum::<usize>()
            + self.conn.values().sum::<usize>()
            + self.timeouts
    }
    fn p(&self, p: f64) -> f64 {
        percentile(&self.lat, p)
    }
    fn max_ms(&self) -> f64 {
        self.lat.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }
    fn json(&self, seconds: f64) -> Value {
        let answered = if self.probe { self.lat.len() } else { self.ok };
        json!({
            "sent": self.sent,
            "ok": self.ok,
            "requests_per_s": answered as f64 / seconds,
            "pairs_per_s": self.pairs as f64 / seconds,
            "p50_ms": self.p(50.0), "p95_ms": self.p(95.0), "p99_ms": self.p(99.0),
            "max_ms": self.max_ms(),
            "errors": self.errors(),
            "statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "conn_errors": self.conn,
            "timeouts": self.timeouts,
            "abandoned": self.abandoned,
        })
    }
    fn error_text(&self) -> String {
        let mut parts: Vec<String> = self
            .failed_statuses()
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        parts.extend(self.conn.iter().map(|(k, n)| format!("{k}:{n}")));
        if self.timeouts > 0 {
            parts.push(format!("timeout:{}", self.timeouts));
        }
        if self.abandoned > 0 {
            parts.push(format!("abandoned:{}", self.abandoned));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }
    fn row(&self, label: &str, seconds: f64) -> String {
        let answered = if self.probe { self.lat.len() } else { self.ok };
        format!(
            "{:>14} {:>8} {:>8} {:>8.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}  {}",
            label,
            self.sent,
            self.ok,
            answered as f64 / seconds,
            self.pairs as f64 / seconds,
            self.p(50.0),
            self.p(95.0),
            self.p(99.0),
            self.max_ms(),
            self.error_text()
        )
    }
}

fn table_header() -> String {
    format!(
        "{:>14} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}  {}",
        "", "sent", "ok", "req/s", "pairs/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"
    )
}

/// What a worker sends next: path, body (`None`: GET) and documents.
type Next<'a> = Box<dyn FnMut() -> (&'static str, Option<Bytes>, usize) + Send + 'a>;

/// Sends `next()` requests back to back (or one per `pace`) on one connection until `until`;
/// records those started at or after `warm_until`, by path.
async fn worker(
    target: Target,
    warm_until: Instant,
    until: Instant,
    pace: Option<Duration>,
    probe: bool,
    mut next: Next<'static>,
) -> BTreeMap<&'static str, Stats> {
    let mut stats: BTreeMap<&'static str, Stats> = BTreeMap::new();
    let mut slot = None;
    let mut tick = pace.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        if Instant::now() >= until {
            break;
        }
        let (path, body, docs) = next();
        let start = Instant::now();
        let outcome = exchange(&mut slot, &target, path, body, None).await;
        let latency = start.elapsed();
        if start >= warm_until {
            stats
                .entry(path)
                .or_insert_with(|| {
                    if probe {
                        Stats::probes()
                    } else {
                        Stats::default()
                    }
                })
                .record(outcome, latency, docs);
        }
        if matches!(outcome, Outcome::Conn(_)) {
            // do not spin on a refused connection
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stats
}

async fn join_workers(
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<&'static str, Stats>>>,
) -> Result<BTreeMap<&'static str, Stats>> {
    let mut all: BTreeMap<&'static str, Stats> = BTreeMap::new();
    for t in tasks {
        for (path, s) in t.await? {
            let probe = s.probe;
            all.entry(path)
                .or_insert_with(|| Stats {
                    probe,
                    ..Stats::default()
                })
                .merge(&s);
        }
    }
    for s in all.values_mut() {
        s.finish();
    }
    Ok(all)
}

fn merged<'a>(parts: impl IntoIterator<Item = &'a Stats>) -> Stats {
    let mut all = Stats::default();
    for s in parts {
        all.probe = s.probe;
        all.merge(s);
    }
    all.finish();
    all
}

/// Requests as in the bench scenario: `--api`, `--docs` cycled, `--words`.
fn bench_requests(args: &'static Args, id: usize, salt: u64) -> Next<'static> {
    let mut rng = client_rng(args.seed, id, salt);
    let mut n = id;
    Box::new(move || {
        let (body, docs) = make_request(args, &mut rng, n);
        n += 1;
        (args.api.path(), Some(body), docs)
    })
}

/// GETs of the probe paths, round robin from `id`.
fn probe_requests(args: &'static Args, id: usize) -> Next<'static> {
    let mut n = id;
    Box::new(move || {
        let path = args.probe_paths[n % args.probe_paths.len()].as_str();
        n += 1;
        (path, None, 0)
    })
}

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}

// ---------------------------------------------------------------------------------------------
// fairness, flood

async fn fairness(args: &'static Args) -> Result<()> {
    let target = Target::new(args)?;
    let start = Instant::now();
    let warm_until = start + secs(args.warmup);
    let until = warm_until + secs(args.duration);
    let big_words = range(&args.big_words);
    let small_words = range(&args.small_words);
    let big: Vec<_> = (0..args.big_clients)
        .map(|id| {
            let mut rng = client_rng(args.seed, id, 0xb16);
            let next: Next = Box::new(move || {
                let query = rng.text(args.query_words);
                let docs = rng.docs(args.big_docs, big_words);
                (
                    args.api.path(),
                    Some(body(args.api, query, docs)),
                    args.big_docs,
                )
            });
            tokio::spawn(worker(target.clone(), warm_until, until, None, false, next))
        })
        .collect();
    let mut rng = client_rng(args.seed, 0, 0x5a11);
    let next: Next = Box::new(move || {
        let query = rng.text(args.query_words);
        let docs = rng.docs(1, small_words);
        (args.api.path(), Some(body(args.api, query, docs)), 1)
    });
    let small = vec![tokio::spawn(worker(
        target.clone(),
        warm_until,
        until,
        None,
        false,
        next,
    ))];
    let pace = Duration::from_millis(args.probe_interval_ms.max(1));
    let probes: Vec<_> = args
        .probe_paths
        .iter()
        .map(|p| {
            let p = p.as_str();
            let next: Next = Box::new(move || (p, None, 0));
            tokio::spawn(worker(
                target.clone(),
                warm_until,
                until,
                Some(pace),
                true,
                next,
            ))
        })
        .collect();
    let big = merged(join_workers(big).await?.values());
    let small = merged(join_workers(small).await?.values());
    let probes = join_workers(probes).await?;
    let seconds = (Instant::now() - warm_until).as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": "fairness", "seconds": seconds, "api": format!("{:?}", args.api),
                "big_clients": args.big_clients, "big_docs": args.big_docs, "big_words": args.big_words,
                "small_words": args.small_words, "probe_interval_ms": args.probe_interval_ms,
                "small": small.json(seconds), "big": big.json(seconds),
                "probes": probes.iter().map(|(p, s)| (p.to_string(), s.json(seconds))).collect::<serde_json::Map<_, _>>(),
            })
        );
    } else {
        println!(
            "fairness: {} big client(s) x {} docs of {:?} words, 1 small client (1 doc of {:?} words), probes every {} ms; {:.1} s",
            args.big_clients, args.big_docs, args.big_words, args.small_words, args.probe_interval_ms, seconds
        );
        println!("{}", table_header());
        println!("{}", small.row("small (1 doc)", seconds));
        println!("{}", big.row("big", seconds));
        for (p, s) in &probes {
            println!("{}", s.row(p, seconds));
        }
    }
    Ok(())
}

async fn flood(args: &'static Args) -> Result<()> {
    let target = Target::new(args)?;
    let start = Instant::now();
    let warm_until = start + secs(args.warmup);
    let until = warm_until + secs(args.duration);
    let clients = args.concurrency()[0];
    let load: Vec<_> = (0..clients)
        .map(|id| {
            let next = bench_requests(args, id, 0);
            tokio::spawn(worker(target.clone(), warm_until, until, None, false, next))
        })
        .collect();
    let flood: Vec<_> = (0..args.flood_clients)
        .map(|id| {
            let next = probe_requests(args, id);
            let pace =
                (args.flood_interval_ms > 0).then(|| Duration::from_millis(args.flood_interval_ms));
            tokio::spawn(worker(target.clone(), warm_until, until, pace, true, next))
        })
        .collect();
    let load = merged(join_workers(load).await?.values());
    let probes = join_workers(flood).await?;
    let all_probes = merged(probes.values());
    let seconds = (Instant::now() - warm_until).as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": "flood", "seconds": seconds, "api": format!("{:?}", args.api),
                "clients": clients, "docs": args.docs(), "words": args.words(),
                "flood_clients": args.flood_clients,
                "load": load.json(seconds), "probes": all_probes.json(seconds),
                "probe_paths": probes.iter().map(|(p, s)| (p.to_string(), s.json(seconds))).collect::<serde_json::Map<_, _>>(),
            })
        );
    } else {
        println!(
            "flood: {} client(s) of {:?} docs x {:?} words next to {} probe client(s) on {:?}; {:.1} s",
            clients,
            args.docs(),
            args.words(),
            args.flood_clients,
            args.probe_paths,
            seconds
        );
        println!("{}", table_header());
        println!("{}", load.row("load", seconds));
        if args.flood_clients > 0 {
            println!("{}", all_probes.row("probes", seconds));
            for (p, s) in &probes {
                println!("{}", s.row(p, seconds));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// soak

/// The soak's size buckets, by documents per request.
const BUCKETS: [&str; 4] = ["1", "2-8", "9-50", "51+"];

fn bucket(docs: usize) -> usize {
    match docs {
        0 | 1 => 0,
        2..=8 => 1,
        9..=50 => 2,
        _ => 3,
    }
}

/// A soak request: API, documents (by default 50% 1-8, 35% 9-50, 15% 51-200), body.
fn soak_request(args: &Args, rng: &mut Rng) -> (Api, usize, Bytes) {
    let api = if rng.below(2) == 0 {
        Api::Tei
    } else {
        Api::Cohere
    };
    let [a, b, c] = [args.soak_docs[0], args.soak_docs[1], args.soak_docs[2]];
    let r = rng.below(100);
    let docs = if r < 50 {
        1 + rng.below(a)
    } else if r < 85 {
        a + 1 + rng.below(b - a)
    } else {
        b + 1 + rng.below(c - b)
    };
    let query = rng.text(args.query_words);
    let texts = rng.docs(docs, range(args.words()));
    (api, docs, body(api, query, texts))
}

/// The concurrency level at `t` seconds into the soak.
fn level_at(args: &Args, t: f64) -> usize {
    let k = (t / args.slice_s) as usize;
    args.soak_levels[k % args.soak_levels.len()]
}

static SOAK_OK: AtomicUsize = AtomicUsize::new(0);
static SOAK_ERR: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct SoakStats {
    buckets: [Stats; 4],
    levels: BTreeMap<usize, Stats>,
    abandon_late: usize,
}

async fn soak_client(
    args: &'static Args,
    target: Target,
    id: usize,
    start: Instant,
    warm_until: Instant,
    until: Instant,
) -> SoakStats {
    let mut rng = client_rng(args.seed, id, 0x50a6);
    let mut stats = SoakStats::default();
    let mut slot = None;
    // running latency per bucket: where an abandoned request's delay is drawn from
    let mut typical = [Duration::from_millis(100); 4];
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let t = (now - start).as_secs_f64();
        let level = level_at(args, t);
        if id >= level {
            slot = None;
            let next_slice = start + secs(((t / args.slice_s) as usize + 1) as f64 * args.slice_s);
            tokio::time::sleep_until(next_slice.min(until).into()).await;
            continue;
        }
        let (api, docs, body) = soak_request(args, &mut rng);
        let b = bucket(docs);
        let abandon = (rng.unit() < args.disconnect_fraction)
            .then(|| typical[b].mul_f64(0.05 + 0.9 * rng.unit()));
        let begin = Instant::now();
        let outcome = exchange(&mut slot, &target, api.path(), Some(body), abandon).await;
        let latency = begin.elapsed();
        if outcome.ok() {
            typical[b] = typical[b].mul_f64(0.8) + latency.mul_f64(0.2);
            SOAK_OK.fetch_add(1, Ordering::Relaxed);
        } else if outcome != Outcome::Abandoned {
            SOAK_ERR.fetch_add(1, Ordering::Relaxed);
        }
        if begin >= warm_until {
            if abandon.is_some() && outcome != Outcome::Abandoned {
                stats.abandon_late += 1;
            }
            stats.buckets[b].record(outcome, latency, docs);
            stats
                .levels
                .entry(level)
                .or_default()
                .record(outcome, latency, docs);
        }
        if matches!(outcome, Outcome::Conn(_)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stats
}

/// VmRSS of `pid` in kB (`None` once it has exited).
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples of (seconds since `start`, VmRSS kB) every `every` until `until`.
async fn sample_rss(pid: u32, start: Instant, until: Instant, every: Duration) -> Vec<(f64, u64)> {
    let mut series = Vec::new();
    loop {
        let now = Instant::now();
        if let Some(kb) = rss_kb(pid) {
            series.push(((now - start).as_secs_f64(), kb));
        }
        if now >= until {
            break;
        }
        tokio::time::sleep_until((now + every).min(until).into()).await;
    }
    series
}

async fn soak(args: &'static Args) -> Result<()> {
    let target = Target::new(args)?;
    let start = Instant::now();
    let warm_until = start + secs(args.warmup);
    let until = warm_until + secs(args.duration);
    if let Some(pid) = args.server_pid {
        if rss_kb(pid).is_none() {
            bail!("--server-pid {pid}: no VmRSS in /proc/{pid}/status");
        }
    }
    let sampler = args
        .server_pid
        .map(|pid| tokio::spawn(sample_rss(pid, start, until, secs(args.rss_interval_s))));
    let progress = tokio::spawn(async move {
        let every = secs(args.slice_s.clamp(5.0, 60.0));
        let mut t = start;
        loop {
            t += every;
            if t >= until {
                break;
            }
            tokio::time::sleep_until(t.into()).await;
            let s = (t - start).as_secs_f64();
            let rss = args
                .server_pid
                .and_then(rss_kb)
                .map_or("-".into(), |kb| format!("{:.0} MiB", kb as f64 / 1024.0));
            eprintln!(
                "[soak {s:>6.0} s] level {:>2}, ok {}, errors {}, server rss {rss}",
                level_at(args, s),
                SOAK_OK.load(Ordering::Relaxed),
                SOAK_ERR.load(Ordering::Relaxed)
            );
        }
    });
    let max_clients = *args.soak_levels.iter().max().expect("checked");
    let tasks: Vec<_> = (0..max_clients)
        .map(|id| {
            tokio::spawn(soak_client(
                args,
                target.clone(),
                id,
                start,
                warm_until,
                until,
            ))
        })
        .collect();
    let mut buckets: [Stats; 4] = Default::default();
    let mut levels: BTreeMap<usize, Stats> = BTreeMap::new();
    let mut abandon_late = 0;
    for t in tasks {
        let s = t.await?;
        for (all, one) in buckets.iter_mut().zip(&s.buckets) {
            all.merge(one);
        }
        for (l, one) in &s.levels {
            levels.entry(*l).or_default().merge(one);
        }
        abandon_late += s.abandon_late;
    }
    let end = Instant::now();
    progress.abort();
    let mut rss = match sampler {
        Some(s) => s.await?,
        None => Vec::new(),
    };
    if let Some(kb) = args.server_pid.and_then(rss_kb) {
        rss.push(((end - start).as_secs_f64(), kb));
    }
    for s in buckets.iter_mut().chain(levels.values_mut()) {
        s.finish();
    }
    let overall = merged(buckets.iter());
    let seconds = (end - warm_until).as_secs_f64();
    // seconds of the measured window spent at each level
    let mut level_s: BTreeMap<usize, f64> = BTreeMap::new();
    let (w0, w1) = (
        (warm_until - start).as_secs_f64(),
        (end - start).as_secs_f64(),
    );
    let mut k = 0usize;
    while (k as f64) * args.slice_s < w1 {
        let (a, b) = (k as f64 * args.slice_s, (k + 1) as f64 * args.slice_s);
        let overlap = b.min(w1) - a.max(w0);
        if overlap > 0.0 {
            *level_s
                .entry(args.soak_levels[k % args.soak_levels.len()])
                .or_default() += overlap;
        }
        k += 1;
    }
    let rss_json = (!rss.is_empty()).then(|| {
        let at = |t: f64| {
            rss.iter()
                .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
                .map(|s| s.1)
        };
        json!({
            "pid": args.server_pid,
            "start_kb": rss.first().map(|s| s.1),
            "middle_kb": at((end - start).as_secs_f64() / 2.0),
            "end_kb": rss.last().map(|s| s.1),
            "min_kb": rss.iter().map(|s| s.1).min(),
            "max_kb": rss.iter().map(|s| s.1).max(),
            "series": rss.iter().map(|(t, kb)| json!([(t * 10.0).round() / 10.0, kb])).collect::<Vec<_>>(),
        })
    });
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": "soak", "seconds": seconds, "duration_s": args.duration,
                "seed": args.seed, "words": args.words(), "levels": args.soak_levels,
                "slice_s": args.slice_s, "soak_docs": args.soak_docs, "disconnect_fraction": args.disconnect_fraction,
                "abandon_late": abandon_late,
                "overall": overall.json(seconds),
                "buckets": BUCKETS.iter().zip(&buckets).map(|(n, s)| (n.to_string(), s.json(seconds))).collect::<serde_json::Map<_, _>>(),
                "per_level": levels.iter().map(|(l, s)| {
                    let t = level_s.get(l).copied().unwrap_or(f64::NAN);
                    let mut v = s.json(t);
                    v["seconds"] = json!(t);
                    (l.to_string(), v)
                }).collect::<serde_json::Map<_, _>>(),
                "rss": rss_json,
            })
        );
    } else {
        println!(
            "soak: {:.1} s, levels {:?} x {} s, words {:?}, disconnect fraction {} ({} abandoned requests answered first)",
            seconds,
            args.soak_levels,
            args.slice_s,
            args.words(),
            args.disconnect_fraction,
            abandon_late
        );
        println!("{}", table_header());
        println!("{}", overall.row("all", seconds));
        for (n, s) in BUCKETS.iter().zip(&buckets) {
            println!("{}", s.row(&format!("{n} docs"), seconds));
        }
        for (l, s) in &levels {
            let t = level_s.get(l).copied().unwrap_or(f64::NAN);
            println!("{}", s.row(&format!("{l} clients"), t));
        }
        if let Some(r) = &rss_json {
            let mib = |v: &Value| v.as_f64().map_or(f64::NAN, |kb| kb / 1024.0);
            println!(
                "server rss MiB: start {:.1}, middle {:.1}, end {:.1}, min {:.1}, max {:.1}",
                mib(&r["start_kb"]),
                mib(&r["middle_kb"]),
                mib(&r["end_kb"]),
                mib(&r["min_kb"]),
                mib(&r["max_kb"])
            );
            let series: Vec<String> = rss
                .iter()
                .map(|(t, kb)| format!("{t:.0}s:{:.1}", *kb as f64 / 1024.0))
                .collect();
            println!("server rss series (MiB): {}", series.join(" "));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// drain

/// When SIGTERM was sent.
static SIGNALED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

struct Rec {
    start: Instant,
    end: Instant,
    outcome: Outcome,
    docs: usize,
}

/// Bench-style requests until `until`; once SIGTERM is sent, each on a new connection.
async fn drain_client(args: &'static Args, target: Target, id: usize, until: Instant) -> Vec<Rec> {
    let mut next = bench_requests(args, id, 0xd4a1);
    let mut slot = None;
    let mut recs = Vec::new();
    loop {
        let start = Instant::now();
        if start >= until {
            break;
        }
        if SIGNALED.get().is_some() {
            slot = None;
        }
        let (path, body, docs) = next();
        let outcome = exchange(&mut slot, &target, path, body, None).await;
        let end = Instant::now();
        recs.push(Rec {
            start,
            end,
            outcome,
            docs,
        });
        if matches!(outcome, Outcome::Conn(_)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    recs
}

/// Whether `pid` has exited (gone, or a zombie waiting for its parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(s) => s
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|st| st.trim_start().starts_with(['Z', 'X'])),
    }
}

async fn drain(args: &'static Args) -> Result<()> {
    let pid = args
        .server_pid
        .context("--scenario drain needs --server-pid")?;
    if exited(pid) {
        bail!("--server-pid {pid} is not running");
    }
    let target = Target::new(args)?;
    let start = Instant::now();
    let signal_at = start + secs(args.signal_after);
    let until = signal_at + secs(args.after_signal);
    let clients = args.concurrency()[0];
    let tasks: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(drain_client(args, target.clone(), id, until)))
        .collect();
    tokio::time::sleep_until(signal_at.into()).await;
    let sig = Instant::now();
    let _ = SIGNALED.set(sig);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let kill_ok = matches!(&kill, Ok(s) if s.success());
    if !kill_ok {
        eprintln!("drain: kill -TERM {pid} failed: {kill:?}");
    }
    // watch for the exit for the load's remaining time and at most 30 s more
    let watch_until = until + Duration::from_secs(30);
    let watcher = tokio::spawn(async move {
        loop {
            if exited(pid) {
                return Some(sig.elapsed().as_secs_f64());
            }
            if Instant::now() >= watch_until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut recs = Vec::new();
    for t in tasks {
        recs.extend(t.await?);
    }
    let exit_s = watcher.await?;
    let (mut before, mut in_flight, mut after) =
        (Stats::default(), Stats::default(), Stats::default());
    let since = |t: Instant| (t.max(sig) - sig).as_secs_f64();
    let (mut first_503, mut first_refused, mut last_ok): (Option<f64>, Option<f64>, Option<f64>) =
        (None, None, None);
    for r in &recs {
        let latency = r.end - r.start;
        if r.start < sig && r.end < sig {
            before.record(r.outcome, latency, r.docs);
            continue;
        }
        if r.start < sig {
            in_flight.record(r.outcome, latency, r.docs);
        } else {
            after.record(r.outcome, latency, r.docs);
        }
        let t = since(r.end);
        let earliest = |v: &mut Option<f64>| *v = Some(v.map_or(t, |x| x.min(t)));
        match r.outcome {
            Outcome::Status(503) if r.start >= sig => earliest(&mut first_503),
            Outcome::Conn("refused") => earliest(&mut first_refused),
            o if o.ok() => last_ok = Some(last_ok.map_or(t, |x| x.max(t))),
            _ => {}
        }
    }
    for s in [&mut before, &mut in_flight, &mut after] {
        s.finish();
    }
    let before_s = (sig - start).as_secs_f64();
    let after_s = (Instant::now().min(until).max(sig) - sig).as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": "drain", "clients": clients, "docs": args.docs(), "words": args.words(),
                "server_pid": pid, "signal_after_s": before_s, "kill_ok": kill_ok,
                "before_signal": before.json(before_s),
                "in_flight_at_signal": in_flight.json(after_s),
                "after_signal": after.json(after_s),
                "first_503_after_signal_s": first_503,
                "first_refused_after_signal_s": first_refused,
                "last_ok_after_signal_s": last_ok,
                "server_exited_after_signal_s": exit_s,
            })
        );
    } else {
        let opt = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.3} s"));
        println!(
            "drain: {} client(s) of {:?} docs x {:?} words; SIGTERM to {pid} after {:.1} s ({}), new connections for {:.1} s after it",
            clients,
            args.docs(),
            args.words(),
            before_s,
            if kill_ok { "sent" } else { "kill failed" },
            args.after_signal
        );
        println!("{}", table_header());
        println!("{}", before.row("before signal", before_s));
        println!("{}", in_flight.row("in flight", after_s));
        println!("{}", after.row("after signal", after_s));
        println!(
            "after the signal: first 503 {}, first refused {}, last 200 {}, server exited {}",
            opt(first_503),
            opt(first_refused),
            opt(last_ok),
            opt(exit_s)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    args.resolve()?;
    let args: &'static Args = Box::leak(Box::new(args));
    match args.scenario {
        Scenario::Bench => bench(args).await,
        Scenario::Soak => soak(args).await,
        Scenario::Fairness => fairness(args).await,
        Scenario::Flood => flood(args).await,
        Scenario::Drain => drain(args).await,
    }
}
