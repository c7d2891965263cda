//! `rerank score`: JSONL pairs in, one `{"index", "score"}` line per pair out,
//! in input order (the CrossEncoder.predict / FlagReranker.compute_score job).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rerank::Reranker;
use serde::{Deserialize, Serialize};

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL file with one {"query": ..., "passage": ...} per line; - for stdin.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Write the scores to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    query: String,
    passage: String,
}

#[derive(Serialize)]
struct Scored {
    index: usize,
    score: f32,
}

/// How an input path is named in messages.
fn input_name(input: &Path) -> String {
    if input.as_os_str() == "-" {
        "standard input".into()
    } else {
        input.display().to_string()
    }
}

/// Reads and validates every line before any scoring starts.
pub fn read_pairs(input: &Path) -> Result<Vec<(String, String)>> {
    let name = input_name(input);
    let mut bytes = Vec::new();
    if input.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
    } else {
        bytes = std::fs::read(input)
            .with_context(|| format!("cannot read input file {}", input.display()))?;
    }
    let mut pairs = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = n + 1;
        let Ok(line) = std::str::from_utf8(line) else {
            bail!("{name}: line {line_no} is not valid UTF-8; convert the file to UTF-8 (e.g. iconv -f GBK -t UTF-8)");
        };
        if line.trim().is_empty() {
            continue;
        }
        let pair: Pair = serde_json::from_str(line).map_err(|e| {
            // serde's own position is within the line; name the file's line.
            let msg = e.to_string();
            let msg = msg.rsplit_once(" at line ").map_or(msg.as_str(), |(m, _)| m);
            anyhow::anyhow!(
                "{name}: line {line_no}, column {}: {msg}; each line must be {{\"query\": \"...\", \"passage\": \"...\"}}",
                e.column()
            )
        })?;
        pairs.push((pair.query, pair.passage));
    }
    Ok(pairs)
}

pub fn run(args: &ScoreArgs) -> Result<()> {
    let pairs = read_pairs(&args.input)?;
    // Fail on an unwritable output before the (possibly long) scoring.
    let output = match &args.output {
        Some(path) => Some(
            File::create(path)
                .with_context(|| format!("cannot create output file {}", path.display()))?,
        ),
        None => None,
    };
    let reranker = args.model.load()?;
    let scores = score_with_progress(&reranker, &pairs)?;
    // The process ends next: freeing the tokenizer's 250 k-entry tables and
    // the model's buffers one by one would only delay its exit (~0.05 s).
    std::mem::forget(reranker);
    match output {
        Some(file) => write_scores(BufWriter::new(file), &scores).with_context(|| {
            format!(
                "cannot write output file {}",
                args.output.as_deref().unwrap_or(Path::new("")).display()
            )
        }),
        None => super::ignore_broken_pipe(
            write_scores(BufWriter::new(std::io::stdout().lock()), &scores)
                .context("cannot write to standard output"),
        ),
    }
}

fn write_scores(mut out: impl Write, scores: &[f32]) -> Result<()> {
    for (index, &score) in scores.iter().enumerate() {
        serde_json::to_writer(&mut out, &Scored { index, score })?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Scores like [`Reranker::score`], one planned batch at a time so that a
/// progress bar (on stderr, when it is a terminal) can follow. The batches
/// are the engine's own plan, so the scores are the same as in one call.
fn score_with_progress(reranker: &Reranker, pairs: &[(String, String)]) -> Result<Vec<f32>> {
    let docs = reranker.encode_documents(pairs)?;
    let windows: Vec<&[u32]> = docs
        .iter()
        .flat_map(|d| d.windows.iter().map(|w| w.ids.as_slice()))
        .collect();
    let bar = if std::io::stderr().is_terminal() && !pairs.is_empty() {
        let style = ProgressStyle::with_template(
            "scoring [{bar:30}] {pos}/{len} pairs ({elapsed} elapsed, {eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> ");
        ProgressBar::new(windows.len() as u64).with_style(style)
    } else {
        ProgressBar::hidden()
    };
    let lens: Vec<usize> = windows.iter().map(|w| w.len()).collect();
    let mut logits = vec![0f32; windows.len()];
    for batch in reranker.budget().plan(&lens) {
        let ids: Vec<&[u32]> = batch.iter().map(|&i| windows[i]).collect();
        for (&i, logit) in batch.iter().zip(reranker.logits(&ids)?) {
            logits[i] = logit;
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(reranker
        .document_scores(&docs, &logits)
        .into_iter()
        .map(|d| d.score)
        .collect())
}
