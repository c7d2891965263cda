//! Load generator for `rerank serve`.
//!
//! For each concurrency level, that many clients (one keep-alive HTTP/1
//! connection each) send rerank requests back to back for a fixed time;
//! reports requests/s, pairs/s and p50/p90/p99 latency. Requests are built
//! from a fixed vocabulary with a seeded generator, so runs are comparable.
//!
//! ```sh
//! cargo build --release
//! ./target/release/rerank serve --model tests/fixtures/tiny --port 8080 &
//! ./target/release/loadgen --url http://127.0.0.1:8080 --concurrency 1,4,16
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Load generator for `rerank serve`.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Server base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Which API to call.
    #[arg(long, value_enum, default_value_t = Api::Tei)]
    api: Api,
    /// Concurrent clients, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each run's measurement starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Documents per request, cycled request by request (mixed sizes).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    docs: Vec<usize>,
    /// Words per document: each document gets a length drawn between these two.
    #[arg(long, value_delimiter = ',', default_value = "10,120")]
    words: Vec<usize>,
    /// Words per query.
    #[arg(long, default_value_t = 8)]
    query_words: usize,
    /// Bearer key when the server has --api-key.
    #[arg(long, env = "RERANK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Api {
    /// POST /rerank (text-embeddings-inference)
    Tei,
    /// POST /v1/rerank (Cohere/Jina)
    Cohere,
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
    fn text(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| WORDS[self.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One request body and its number of documents.
fn make_request(args: &Args, rng: &mut Rng, n: usize) -> (Bytes, usize) {
    let docs_n = args.docs[n % args.docs.len()];
    let (lo, hi) = match args.words.as_slice() {
        [w] => (*w, *w),
        [lo, hi, ..] => (*lo.min(hi), *lo.max(hi)),
        [] => (50, 50),
    };
    let query = rng.text(args.query_words);
    let docs: Vec<String> = (0..docs_n)
        .map(|_| {
            let w = lo + rng.below(hi - lo + 1);
            rng.text(w)
        })
        .collect();
    let body = match args.api {
        Api::Tei => serde_json::json!({"query": query, "texts": docs}),
        Api::Cohere => serde_json::json!({"query": query, "documents": docs, "model": "loadgen"}),
    };
    (Bytes::from(body.to_string()), docs_n)
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
    let authority = args
        .url
        .strip_prefix("http://")
        .context("--url must start with http://")?
        .trim_end_matches('/')
        .to_string();
    let path = match args.api {
        Api::Tei => "/rerank",
        Api::Cohere => "/v1/rerank",
    };
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
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
        sender.ready().await?;
        let start = Instant::now();
        let response = sender.send_request(req).await?;
        let status = response.status();
        response.into_body().collect().await?;
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

#[tokio::main]
async fn main() -> Result<()> {
    let args: &'static Args = Box::leak(Box::new(Args::parse()));
    if args.docs.is_empty() || args.docs.contains(&0) {
        bail!("--docs needs positive numbers");
    }
    if !args.json {
        println!(
            "api {:?}, docs per request {:?}, words per doc {:?}, {} s per run",
            args.api, args.docs, args.words, args.duration
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
    for &c in &args.concurrency {
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
                serde_json::json!({
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
