//! `rerank rank`: rank passages for one query and print them best first,
//! `[0.9213] ██████████████████▍  passage`, then the elapsed time.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct RankArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The query.
    #[arg(long, short)]
    pub query: String,
    /// Passages to rank. Without them, passages are read one per line from
    /// --passages FILE, or else from standard input.
    #[arg(value_name = "PASSAGE", conflicts_with = "passages")]
    pub texts: Vec<String>,
    /// File with one passage per line (- for standard input); blank lines are skipped.
    #[arg(long, short)]
    pub passages: Option<PathBuf>,
    /// Print only the K best passages.
    #[arg(long, short = 'k', value_name = "K", value_parser = parse_top_k)]
    pub top_k: Option<usize>,
    /// Print only a JSON array [{"index", "score", "text"}], best first
    /// ("index" is the passage's position in the input; with --long-documents chunk a
    /// split passage also has "window": {"index", "count", "start", "end"}, the
    /// winning window's character span).
    #[arg(long)]
    pub json: bool,
}

fn parse_top_k(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(k) => Ok(k),
        Err(_) => Err(format!("{s:?} is not a positive integer")),
    }
}

#[derive(Serialize)]
struct JsonRanked<'a> {
    index: usize,
    score: f32,
    text: &'a str,
    /// The winning window of a chunked passage (characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<rerank::chunk::Window>,
}

pub fn run(args: &RankArgs) -> Result<()> {
    let passages = read_passages(args)?;
    let reranker = args.model.load()?;
    let start = Instant::now();
    let ranked = reranker.rank_documents(&args.query, &passages, args.top_k)?;
    let elapsed = start.elapsed();
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let items: Vec<JsonRanked> = ranked
            .iter()
            .map(|r| JsonRanked {
                index: r.index,
                score: r.score,
                text: &passages[r.index],
                window: r.window.clone(),
            })
            .collect();
        serde_json::to_writer(&mut out, &items)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        let raw = reranker.options().raw_scores;
        let mut lines: Vec<String> = ranked
            .iter()
            .map(|r| super::ranked_line(r.score, raw, &passages[r.index]))
            .collect();
        let n = passages.len();
        let shown = if ranked.len() < n {
            format!("; showing the best {}", ranked.len())
        } else {
            String::new()
        };
        lines.push(format!(
            "{n} passage{} ranked in {} ({:.1} passages/s){shown}",
            if n == 1 { "" } else { "s" },
            super::fmt_duration(elapsed),
            n as f64 / elapsed.as_secs_f64().max(1e-9),
        ));
        lines.iter().try_for_each(|l| writeln!(out, "{l}"))
    };
    super::ignore_broken_pipe(
        written
            .and_then(|()| out.flush())
            .context("cannot write to standard output"),
    )
}

/// Passages from the arguments, else `--passages FILE`, else standard input.
fn read_passages(args: &RankArgs) -> Result<Vec<String>> {
    let passages = if !args.texts.is_empty() {
        args.texts.clone()
    } else {
        match &args.passages {
            Some(path) if path.as_os_str() != "-" => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read passages file {}", path.display()))?;
                lines(&bytes, &path.display().to_string())?
            }
            _ => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    eprintln!(
                        "reading passages from standard input, one per line (end with Ctrl-D)"
                    );
                }
                let mut bytes = Vec::new();
                stdin
                    .lock()
                    .read_to_end(&mut bytes)
                    .context("cannot read standard input")?;
                lines(&bytes, "standard input")?
            }
        }
    };
    if passages.is_empty() {
        bail!(
            "no passages to rank: give them as arguments after the query, in a file with --passages FILE (one per line), or on standard input"
        );
    }
    Ok(passages)
}

/// Non-blank lines of UTF-8 text; `name` names the source in errors.
fn lines(bytes: &[u8], name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            bail!(
                "{name}: line {} is not valid UTF-8; convert the file to UTF-8 (e.g. iconv -f GBK -t UTF-8)",
                n + 1
            );
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.trim().is_empty() {
            out.push(line.to_string());
        }
    }
    Ok(out)
}
