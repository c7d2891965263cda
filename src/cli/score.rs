//! `rerank score`: JSONL pairs in, one `{"index", "score"}` line per pair out,
//! in input order (the CrossEncoder.predict / FlagReranker.compute_score job).

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL file with one {"query": ..., "passage": ...} per line; - for stdin.
    #[arg(long, short)]
    pub input: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    query: String,
    passage: String,
}

/// Reads and validates every line before any scoring starts.
pub fn read_pairs(input: &std::path::Path) -> Result<Vec<(String, String)>> {
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
            bail!("{}: line {line_no} is not valid UTF-8", input.display());
        };
        if line.trim().is_empty() {
            continue;
        }
        let pair: Pair = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: line {line_no} is not {{\"query\": string, \"passage\": string}}",
                input.display()
            )
        })?;
        pairs.push((pair.query, pair.passage));
    }
    Ok(pairs)
}

pub fn run(args: &ScoreArgs) -> Result<()> {
    let pairs = read_pairs(&args.input)?;
    let reranker = args.model.load()?;
    let scores = reranker.score(&pairs)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (index, score) in scores.iter().enumerate() {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"index": index, "score": score}),
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
