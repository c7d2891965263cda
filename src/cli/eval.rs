//! `rerank eval`: qrels + TREC runs → trec_eval's measures per run (and per
//! query), as a table or JSON; every run after the first is compared with
//! the first by a paired t-test.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rerank::eval::{self, Evaluation, Measure, PairedTest, Qrels, Queries, Run};
use serde_json::{json, Map, Value};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Judgments: TREC qrels (`qid 0 docid relevance`) or BEIR qrels/*.tsv
    /// (`query-id<TAB>corpus-id<TAB>score`, header optional).
    #[arg(long)]
    pub qrels: PathBuf,
    /// TREC runs (`qid Q0 docid rank score tag`); the first is the baseline
    /// the others are compared with.
    #[arg(value_name = "RUN", required = true)]
    pub runs: Vec<PathBuf>,
    /// Comma-separated measures: ndcg@K (trec_eval ndcg_cut_K), mrr
    /// (recip_rank), mrr@K (ir_measures RR@K), recall@K (recall_K), p@K (P_K), map.
    #[arg(long, short, default_value = eval::DEFAULT_MEASURES)]
    pub metrics: String,
    /// Also print each query's values.
    #[arg(long)]
    pub per_query: bool,
    /// Print JSON keyed by run file name instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Average over every query of the qrels, a query missing from the run
    /// scoring 0 (trec_eval -c, ir_measures). Default: over the queries in both
    /// the qrels and the run (trec_eval, pytrec_eval).
    #[arg(long)]
    pub all_queries: bool,
}

struct Evaluated {
    name: String,
    eval: Evaluation,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let measures = eval::parse_measures(&args.metrics)?;
    let qrels = Qrels::from_file(&args.qrels)?;
    let queries = if args.all_queries {
        Queries::All
    } else {
        Queries::Judged
    };
    let mut runs: Vec<Evaluated> = Vec::new();
    for path in &args.runs {
        let name = path.display().to_string();
        if runs.iter().any(|r| r.name == name) {
            bail!("the run {name} is given twice");
        }
        let run = Run::from_file(path)?;
        let eval = eval::evaluate(&qrels, &run, &measures, queries);
        if eval.per_query.is_empty() {
            bail!(
                "{name}: none of its queries is in {}; check that both files use the same query ids",
                args.qrels.display()
            );
        }
        runs.push(Evaluated { name, eval });
    }
    let tests: Vec<Vec<PairedTest>> = runs
        .iter()
        .skip(1)
        .map(|r| {
            (0..measures.len())
                .map(|i| eval::paired_t_test(&runs[0].eval, &r.eval, i))
                .collect()
        })
        .collect();
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&to_json(&runs, &tests, args.per_query))?;
        s.push('\n');
        s
    } else {
        table(&runs, &tests, &measures, args.per_query)
    };
    super::ignore_broken_pipe(
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write to standard output"),
    )
}

/// NaN-free JSON: an undefined statistic is `null`.
fn number(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |x| json!(x))
}

fn to_json(runs: &[Evaluated], tests: &[Vec<PairedTest>], per_query: bool) -> Value {
    let mut out = Map::new();
    for (r, run) in runs.iter().enumerate() {
        let e = &run.eval;
        let mut obj = Map::new();
        for (m, v) in e.measures.iter().zip(&e.mean) {
            obj.insert(m.to_string(), json!(v));
        }
        if per_query {
            let pq: BTreeMap<&String, Map<String, Value>> = e
                .per_query
                .iter()
                .map(|(q, vals)| {
                    let row = e
                        .measures
                        .iter()
                        .zip(vals)
                        .map(|(m, v)| (m.to_string(), json!(v)))
                        .collect();
                    (q, row)
                })
                .collect();
            obj.insert("per_query".into(), json!(pq));
        }
        if r > 0 {
            let mut t = Map::new();
            t.insert("baseline".into(), json!(runs[0].name));
            t.insert("queries".into(), json!(tests[r - 1][0].n));
            for (m, test) in e.measures.iter().zip(&tests[r - 1]) {
                t.insert(
                    m.to_string(),
                    json!({"delta": test.delta, "t": number(test.t), "p": number(test.p)}),
                );
            }
            obj.insert("paired_t_test".into(), Value::Object(t));
        }
        out.insert(run.name.clone(), Value::Object(obj));
    }
    Value::Object(out)
}

fn table(
    runs: &[Evaluated],
    tests: &[Vec<PairedTest>],
    measures: &[Measure],
    per_query: bool,
) -> String {
    let names: Vec<String> = measures.iter().map(|m| m.to_string()).collect();
    let width = names.iter().map(|n| n.len().max(7)).collect::<Vec<_>>();
    let first = runs
        .iter()
        .map(|r| r.name.chars().count())
        .chain([3, 16])
        .max()
        .unwrap_or(3);
    let mut out = String::new();
    let mut row = |label: &str, queries: String, cells: Vec<String>| {
        out.push_str(&format!("{label:<first$}  {queries:>7}"));
        for (cell, w) in cells.iter().zip(&width) {
            out.push_str(&format!("  {cell:>w$}"));
        }
        out.push('\n');
    };
    row("run", "queries".into(), names.clone());
    for (r, run) in runs.iter().enumerate() {
        let e = &run.eval;
        row(
            &run.name,
            e.per_query.len().to_string(),
            e.mean.iter().map(|v| format!("{v:.4}")).collect(),
        );
        if r > 0 {
            let t = &tests[r - 1];
            row(
                "  Δ vs first run",
                t[0].n.to_string(),
                t.iter().map(|t| format!("{:+.4}", t.delta)).collect(),
            );
            row(
                "  p (paired t)",
                String::new(),
                t.iter()
                    .map(|t| t.p.map_or("-".into(), |p| format!("{p:.4}")))
                    .collect(),
            );
        }
    }
    if per_query {
        for run in runs {
            out.push_str(&format!("\n{}\n", run.name));
            let e = &run.eval;
            let qw = e
                .per_query
                .keys()
                .map(|q| q.chars().count())
                .max()
                .unwrap_or(3)
                .max(5);
            out.push_str(&format!("{:<qw$}", "query"));
            for (n, w) in names.iter().zip(&width) {
                out.push_str(&format!("  {n:>w$}"));
            }
            out.push('\n');
            for (q, vals) in &e.per_query {
                out.push_str(&format!("{q:<qw$}"));
                for (v, w) in vals.iter().zip(&width) {
                    out.push_str(&format!("  {:>w$}", format!("{v:.4}")));
                }
                out.push('\n');
            }
        }
    }
    out
}
