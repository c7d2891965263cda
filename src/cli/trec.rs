//! `rerank trec`: queries + corpus + a first-stage TREC run in, the top-k of
//! each query reranked, a TREC run out (tag `rerank`) on standard output.
//!
//! The corpus is streamed once and only the documents the run's top-k need
//! are kept. A document's text is BEIR's: `(title + " " + text).strip()`
//! (beir/reranking/rerank.py). Each query's top-k are taken as BEIR takes
//! them: by first-stage score, highest first, ties in file order.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rerank::eval::parse_run_line;
use rerank::Reranker;
use serde::Deserialize;

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct TrecArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Queries: TSV (`qid<TAB>text`) or BEIR queries.jsonl (`{"_id", "text"}`).
    #[arg(long)]
    pub queries: PathBuf,
    /// Corpus: BEIR corpus.jsonl (`{"_id", "title", "text"}`) or TSV (`docid<TAB>text`).
    #[arg(long)]
    pub corpus: PathBuf,
    /// First-stage TREC run (`qid Q0 docid rank score tag`).
    #[arg(long)]
    pub run: PathBuf,
    /// Rerank the K best documents of each query (by first-stage score); the
    /// others are left out of the output.
    #[arg(long, value_name = "K", default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub top_k: usize,
    /// Show the progress bar (queries, pairs/s, ETA) on stderr even when it is not a
    /// terminal [default: only on a terminal].
    #[arg(long)]
    pub progress: bool,
}

/// A file's lines as UTF-8, numbered from 1, blank ones skipped; an error names `path:line`.
fn for_each_line(path: &Path, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let Ok(line) = std::str::from_utf8(&buf) else {
            bail!(
                "{}:{line_no}: not valid UTF-8; convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)",
                path.display()
            );
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.trim().is_empty() {
            f(line_no, line)?;
        }
    }
}

/// JSON Lines when the name says so (`.jsonl`, `.json`), else TSV.
fn is_jsonl(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"))
}

#[derive(Deserialize)]
struct BeirQuery {
    #[serde(rename = "_id")]
    id: IdValue,
    text: String,
}

#[derive(Deserialize)]
struct BeirDoc {
    #[serde(rename = "_id")]
    id: IdValue,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// BEIR ids are strings, but some exports write numbers.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or a number")]
enum IdValue {
    Text(String),
    Number(serde_json::Number),
}

impl IdValue {
    fn into_string(self) -> String {
        match self {
            Self::Text(t) => t,
            Self::Number(n) => n.to_string(),
        }
    }
}

fn json_error(path: &Path, line_no: usize, e: &serde_json::Error, shape: &str) -> anyhow::Error {
    let msg = e.to_string();
    let msg = msg
        .rsplit_once(" at line ")
        .map_or(msg.as_str(), |(m, _)| m);
    anyhow::anyhow!(
        "{}:{line_no}, column {}: {msg}; each line must be {shape}",
        path.display(),
        e.column()
    )
}

fn read_queries(path: &Path, wanted: &HashSet<&str>) -> Result<HashMap<String, String>> {
    let mut queries = HashMap::new();
    let jsonl = is_jsonl(path);
    for_each_line(path, |line_no, line| {
        let (id, text) = if jsonl {
            let q: BeirQuery = serde_json::from_str(line).map_err(|e| {
                json_error(path, line_no, &e, "{\"_id\": \"...\", \"text\": \"...\"}")
            })?;
            (q.id.into_string(), q.text)
        } else {
            let Some((id, text)) = line.split_once('\t') else {
                bail!(
                    "{}:{line_no}: expected `qid<TAB>text` (or give a BEIR queries.jsonl)",
                    path.display()
                );
            };
            (id.trim().to_string(), text.to_string())
        };
        if wanted.contains(id.as_str()) && queries.insert(id.clone(), text).is_some() {
            bail!("{}:{line_no}: query {id} appears twice", path.display());
        }
        Ok(())
    })?;
    Ok(queries)
}

/// Streams the corpus and keeps the `wanted` documents' texts.
fn read_corpus(path: &Path, wanted: &HashSet<&str>) -> Result<HashMap<String, String>> {
    let mut docs = HashMap::new();
    let jsonl = is_jsonl(path);
    for_each_line(path, |line_no, line| {
        let (id, text) = if jsonl {
            let d: BeirDoc = serde_json::from_str(line).map_err(|e| {
                json_error(
                    path,
                    line_no,
                    &e,
                    "{\"_id\": \"...\", \"title\": \"...\", \"text\": \"...\"}",
                )
            })?;
            let id = d.id.into_string();
            if !wanted.contains(id.as_str()) {
                return Ok(());
            }
            // BEIR's join (beir/reranking/rerank.py).
            let text = format!(
                "{} {}",
                d.title.unwrap_or_default(),
                d.text.unwrap_or_default()
            )
            .trim()
            .to_string();
            (id, text)
        } else {
            let Some((id, text)) = line.split_once('\t') else {
                bail!(
                    "{}:{line_no}: expected `docid<TAB>text` (or give a BEIR corpus.jsonl)",
                    path.display()
                );
            };
            let id = id.trim();
            if !wanted.contains(id) {
                return Ok(());
            }
            (id.to_string(), text.trim().to_string())
        };
        if docs.insert(id.clone(), text).is_some() {
            bail!("{}:{line_no}: document {id} appears twice", path.display());
        }
        Ok(())
    })?;
    Ok(docs)
}

/// The first-stage run: query ids in file order, each with its top-k docids.
fn read_run(path: &Path, top_k: usize) -> Result<Vec<(String, Vec<String>)>> {
    let mut order: Vec<String> = Vec::new();
    let mut by_query: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for_each_line(path, |line_no, line| {
        let l = parse_run_line(line)
            .map_err(|e| anyhow::anyhow!("{}:{line_no}: {e}", path.display()))?;
        if !seen.insert((l.qid.to_string(), l.docid.to_string())) {
            bail!(
                "{}:{line_no}: document {} is retrieved twice for query {}",
                path.display(),
                l.docid,
                l.qid
            );
        }
        let docs = by_query.entry(l.qid.to_string()).or_insert_with(|| {
            order.push(l.qid.to_string());
            Vec::new()
        });
        docs.push((l.docid.to_string(), l.score));
        Ok(())
    })?;
    if order.is_empty() {
        bail!(
            "{}: the run is empty (expected lines `qid Q0 docid rank score tag`)",
            path.display()
        );
    }
    Ok(order
        .into_iter()
        .map(|q| {
            let mut docs = by_query.remove(&q).unwrap_or_default();
            // Stable: ties keep file order, as BEIR's sorted() does.
            docs.sort_by(|a, b| b.1.total_cmp(&a.1));
            docs.truncate(top_k);
            (q, docs.into_iter().map(|(d, _)| d).collect())
        })
        .collect())
}

/// Pairs scored per round: enough to fill many batches, few enough to keep
/// memory small whatever the run's size.
const PAIRS_PER_ROUND: usize = 4096;

pub fn run(args: &TrecArgs) -> Result<()> {
    let run = read_run(&args.run, args.top_k)?;
    let (queries, corpus) = {
        let qids: HashSet<&str> = run.iter().map(|(q, _)| q.as_str()).collect();
        let docids: HashSet<&str> = run
            .iter()
            .flat_map(|(_, d)| d.iter().map(|s| s.as_str()))
            .collect();
        (
            read_queries(&args.queries, &qids)?,
            read_corpus(&args.corpus, &docids)?,
        )
    };
    for (q, docs) in &run {
        if !queries.contains_key(q) {
            bail!(
                "query {q} of the run {} is not in {}; check that the files belong together",
                args.run.display(),
                args.queries.display()
            );
        }
        if let Some(d) = docs.iter().find(|d| !corpus.contains_key(*d)) {
            bail!(
                "document {d} (query {q} of the run {}) is not in the corpus {}; check that the files belong together",
                args.run.display(),
                args.corpus.display()
            );
        }
    }
    let reranker = args.model.load()?;
    let total: usize = run.iter().map(|(_, d)| d.len()).sum();
    let bar = if args.progress || std::io::stderr().is_terminal() {
        let style = ProgressStyle::with_template(
            "reranking [{bar:30}] {msg} queries, {pos}/{len} pairs ({per_sec}, {eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> ");
        ProgressBar::new(total as u64).with_style(style)
    } else {
        ProgressBar::hidden()
    };
    bar.set_message(format!("0/{}", run.len()));
    let mut out = BufWriter::new(std::io::stdout().lock());
    let written = rerank_all(&reranker, &run, &queries, &corpus, &bar, &mut out);
    bar.finish_and_clear();
    super::ignore_broken_pipe(written)
}

fn rerank_all(
    reranker: &Reranker,
    run: &[(String, Vec<String>)],
    queries: &HashMap<String, String>,
    corpus: &HashMap<String, String>,
    bar: &ProgressBar,
    out: &mut impl Write,
) -> Result<()> {
    let mut done = 0;
    let mut start = 0;
    while start < run.len() {
        // A round of whole queries, at least one.
        let mut end = start;
        let mut pairs = 0;
        while end < run.len() && (end == start || pairs + run[end].1.len() <= PAIRS_PER_ROUND) {
            pairs += run[end].1.len();
            end += 1;
        }
        let round = &run[start..end];
        let texts: Vec<(&str, &str)> = round
            .iter()
            .flat_map(|(q, docs)| {
                docs.iter()
                    .map(move |d| (queries[q].as_str(), corpus[d].as_str()))
            })
            .collect();
        let docs = reranker.encode_documents(&texts)?;
        let windows: Vec<&[u32]> = docs
            .iter()
            .flat_map(|d| d.windows.iter().map(|w| w.ids.as_slice()))
            .collect();
        // Progress counts pairs the model scores: a chunked document adds its windows.
        bar.inc_length((windows.len() - texts.len()) as u64);
        let lens: Vec<usize> = windows.iter().map(|w| w.len()).collect();
        let mut logits = vec![0f32; windows.len()];
        for batch in reranker.budget().plan(&lens) {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| windows[i]).collect();
            for (&i, l) in batch.iter().zip(reranker.logits(&ids)?) {
                logits[i] = l;
            }
            bar.inc(batch.len() as u64);
        }
        let scores = reranker.document_scores(&docs, &logits);
        let mut at = 0;
        for (q, docids) in round {
            let these: Vec<f32> = scores[at..at + docids.len()]
                .iter()
                .map(|d| d.score)
                .collect();
            at += docids.len();
            for (rank, r) in rerank::backend::rank_scores(&these, None)
                .iter()
                .enumerate()
            {
                writeln!(
                    out,
                    "{q} Q0 {} {} {} rerank",
                    docids[r.index],
                    rank + 1,
                    r.score
                )
                .context("cannot write to standard output")?;
            }
            done += 1;
            bar.set_message(format!("{done}/{}", run.len()));
        }
        start = end;
    }
    out.flush().context("cannot write to standard output")
}
