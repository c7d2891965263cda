//! `rerank trec` and `rerank eval` end to end on the README's sample
//! (examples/trec-sample), against the reference flow of
//! `examples/trec-sample/make_sample.py`: sentence-transformers' CrossEncoder
//! (PyTorch) on BEIR's title + text, then pytrec_eval
//! (tests/fixtures/trec_sample_golden.json).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use predicates::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;

use crate::cli::{fixture, rerank};

#[derive(Deserialize)]
struct Golden {
    reranked: BTreeMap<String, HashMap<String, f64>>,
    eval_bm25: BTreeMap<String, f64>,
    eval_reranked: BTreeMap<String, f64>,
}

fn golden() -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trec_sample_golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The README's commands, run from the repository root.
#[test]
fn readme_trec_then_eval_on_the_sample() {
    let home = TempDir::new().unwrap();
    let golden = golden();
    let out = rerank(home.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["trec", "--model", &fixture()])
        .args(["--queries", "examples/trec-sample/queries.jsonl"])
        .args(["--corpus", "examples/trec-sample/corpus.jsonl"])
        .args(["--run", "examples/trec-sample/bm25.run", "--top-k", "100"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut seen: BTreeMap<String, Vec<(u64, String, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 6, "{line}");
        assert_eq!((f[1], f[5]), ("Q0", "rerank"), "{line}");
        seen.entry(f[0].into()).or_default().push((
            f[3].parse().unwrap(),
            f[2].into(),
            f[4].parse().unwrap(),
        ));
    }
    assert_eq!(seen.len(), golden.reranked.len());
    for (q, rows) in &seen {
        let want = &golden.reranked[q];
        assert_eq!(rows.len(), want.len(), "{q}: every document of the top 100");
        for (i, (rank, doc, score)) in rows.iter().enumerate() {
            assert_eq!(*rank, i as u64 + 1);
            let w = want[doc];
            assert!(
                (score - w).abs() < 1e-5,
                "{q} {doc}: {score} vs PyTorch {w}"
            );
            if i > 0 {
                assert!(rows[i - 1].2 >= *score, "{q}: best first");
            }
        }
    }

    let dir = TempDir::new().unwrap();
    let reranked = dir.path().join("reranked.run");
    std::fs::write(&reranked, &text).unwrap();
    let out = rerank(home.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "--qrels", "examples/trec-sample/qrels/test.tsv"])
        .arg("examples/trec-sample/bm25.run")
        .arg(&reranked)
        .args([
            "--metrics",
            "ndcg@10,recall@100,map,p@10",
            "--json",
            "--per-query",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bm25 = &j["examples/trec-sample/bm25.run"];
    let ours = &j[reranked.display().to_string()];
    for (m, want) in &golden.eval_bm25 {
        assert!((bm25[m].as_f64().unwrap() - want).abs() < 1e-6, "bm25 {m}");
    }
    // Our scores are PyTorch's to 1e-5, so the order (and every measure) too.
    for (m, want) in &golden.eval_reranked {
        assert!(
            (ours[m].as_f64().unwrap() - want).abs() < 1e-6,
            "reranked {m}"
        );
    }
    assert_eq!(bm25["per_query"].as_object().unwrap().len(), 8);
    let t = &ours["paired_t_test"];
    assert_eq!(t["baseline"], "examples/trec-sample/bm25.run");
    assert_eq!(t["queries"], 8);
    let delta = t["ndcg@10"]["delta"].as_f64().unwrap();
    assert!((delta - (golden.eval_reranked["ndcg@10"] - golden.eval_bm25["ndcg@10"])).abs() < 1e-6);
    assert!(t["ndcg@10"]["p"].as_f64().unwrap() > 0.0);
    assert!(bm25.get("paired_t_test").is_none());

    // The table: a header, both runs, the difference and its p-value.
    rerank(home.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "--qrels", "examples/trec-sample/qrels/test.tsv"])
        .arg("examples/trec-sample/bm25.run")
        .arg(&reranked)
        .assert()
        .success()
        .stdout(predicate::str::contains("ndcg@10").and(predicate::str::contains("p (paired t)")))
        .stdout(predicate::str::contains(format!(
            "{:.4}",
            golden.eval_bm25["ndcg@10"]
        )));
}

#[test]
fn trec_and_eval_errors_name_the_file_and_line() {
    let home = TempDir::new().unwrap();
    let dir = TempDir::new().unwrap();
    let write = |name: &str, text: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let queries = write("q.tsv", b"q1\twhat is a river delta\n");
    let corpus = write(
        "c.tsv",
        b"d1\tA delta forms where a river meets the sea.\nd2\tBread.\n",
    );
    let trec = |run: &Path, queries: &Path, corpus: &Path| {
        let mut cmd = rerank(home.path());
        cmd.args(["trec", "--model", &fixture(), "--run"])
            .arg(run)
            .arg("--queries")
            .arg(queries)
            .arg("--corpus")
            .arg(corpus);
        cmd
    };
    let bad_run = write("bad.run", b"q1 Q0 d1 1 0.5 bm25\nq1 Q0 d2 2 x bm25\n");
    trec(&bad_run, &queries, &corpus)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "bad.run:2: score \"x\" is not a number",
        ));
    let run = write("ok.run", b"q1 Q0 d1 1 0.5 bm25\nq1 Q0 d2 2 0.4 bm25\n");
    let bad_q = write("bad_q.tsv", b"q1 no tab here\n");
    trec(&run, &bad_q, &corpus)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "bad_q.tsv:1: expected `qid<TAB>text`",
        ));
    let bad_c = write(
        "bad.jsonl",
        b"{\"_id\": \"d1\", \"text\": \"ok\"}\n{\"_id\": \"d2\", \"text\": 5}\n",
    );
    trec(&run, &queries, &bad_c)
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad.jsonl:2, column"));
    let utf8 = write("u.tsv", b"d1\tfine\nd2\t\xff\n");
    trec(&run, &queries, &utf8)
        .assert()
        .failure()
        .stderr(predicate::str::contains("u.tsv:2: not valid UTF-8"));
    let missing = write("m.tsv", b"d1\tonly one\n");
    trec(&run, &queries, &missing).assert().failure().stderr(
        predicate::str::contains("document d2 (query q1 of the run")
            .and(predicate::str::contains("is not in the corpus")),
    );

    // A well-formed TSV flow: two lines, reranked with the tag `rerank`.
    let out = trec(&run, &queries, &corpus).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text
        .lines()
        .all(|l| l.ends_with(" rerank") && l.starts_with("q1 Q0 d")));

    let qrels = write("qrels.txt", b"q1 0 d1 1\n");
    rerank(home.path())
        .args(["eval", "--qrels"])
        .arg(&qrels)
        .arg(&run)
        .args(["--metrics", "ndcg@10,bleu"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown measure \"bleu\""));
    let other = write("other.run", b"q9 Q0 d1 1 0.5 bm25\n");
    rerank(home.path())
        .args(["eval", "--qrels"])
        .arg(&qrels)
        .arg(&other)
        .assert()
        .failure()
        .stderr(predicate::str::contains("none of its queries is in"));
}
