//! `rerank::eval` against pytrec_eval, ir_measures and scipy: the values of
//! `tests/fixtures/eval/golden.json` (written by
//! `tests/fixtures/eval/generate_eval.py`), to 1e-6.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rerank::eval::{evaluate, paired_t_test, parse_measures, Measure, Qrels, Queries, Run};
use serde::Deserialize;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

#[derive(Deserialize)]
struct Values {
    per_query: BTreeMap<String, BTreeMap<String, f64>>,
    mean: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct Case {
    qrels: String,
    run: String,
    pytrec_eval: Values,
    ir_measures: Values,
}

#[derive(Deserialize)]
struct TTest {
    a: String,
    b: String,
    measure: String,
    n: usize,
    t: Option<f64>,
    p: Option<f64>,
}

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
    ttests: Vec<TTest>,
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(dir().join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks every value of `expected` (the measures it has), and that the
/// same queries are evaluated.
fn compare(label: &str, expected: &Values, qrels: &Qrels, run: &Run, queries: Queries) {
    let names: Vec<&String> = expected.mean.keys().collect();
    let measures: Vec<Measure> = names.iter().map(|n| n.parse().unwrap()).collect();
    let got = evaluate(qrels, run, &measures, queries);
    assert_eq!(
        got.per_query.keys().collect::<Vec<_>>(),
        expected.per_query.keys().collect::<Vec<_>>(),
        "{label}: evaluated queries"
    );
    for (i, name) in names.iter().enumerate() {
        let want = expected.mean[*name];
        assert!(
            (got.mean[i] - want).abs() < 1e-6,
            "{label}: mean {name}: {} vs {want}",
            got.mean[i]
        );
        for (q, values) in &expected.per_query {
            let (g, w) = (got.per_query[q][i], values[*name]);
            assert!((g - w).abs() < 1e-6, "{label}: {q} {name}: {g} vs {w}");
        }
    }
}

#[test]
fn measures_equal_pytrec_eval_and_ir_measures() {
    let golden = golden();
    assert_eq!(golden.cases.len(), 4);
    for case in &golden.cases {
        let qrels = Qrels::from_file(&dir().join(&case.qrels)).unwrap();
        let run = Run::from_file(&dir().join(&case.run)).unwrap();
        compare(
            &format!("{} pytrec_eval", case.run),
            &case.pytrec_eval,
            &qrels,
            &run,
            Queries::Judged,
        );
        // ir_measures averages over every judged query, a missing one as 0.
        compare(
            &format!("{} ir_measures", case.run),
            &case.ir_measures,
            &qrels,
            &run,
            Queries::All,
        );
    }
}

#[test]
fn beir_tsv_qrels_read_as_the_trec_file() {
    let trec = Qrels::from_file(&dir().join("qrels.txt")).unwrap();
    let beir = Qrels::from_file(&dir().join("qrels.tsv")).unwrap();
    assert_eq!(trec, beir);
    assert_eq!(trec.0["q1"]["d9"], -1);
}

#[test]
fn paired_t_test_equals_scipy_ttest_rel() {
    let golden = golden();
    assert_eq!(golden.ttests.len(), 8);
    for t in &golden.ttests {
        let qrels_file = if t.a.starts_with("random") {
            "random_qrels.txt"
        } else {
            "qrels.txt"
        };
        let qrels = Qrels::from_file(&dir().join(qrels_file)).unwrap();
        let measures = parse_measures(&t.measure).unwrap();
        let eval = |f: &str| {
            let run = Run::from_file(&dir().join(f)).unwrap();
            evaluate(&qrels, &run, &measures, Queries::Judged)
        };
        let got = paired_t_test(&eval(&t.a), &eval(&t.b), 0);
        assert_eq!(got.n, t.n, "{} {}", t.b, t.measure);
        let close = |g: Option<f64>, w: Option<f64>| match (g, w) {
            (Some(g), Some(w)) => (g - w).abs() < 1e-6,
            (g, w) => g == w,
        };
        assert!(
            close(got.t, t.t),
            "{} t: {:?} vs {:?}",
            t.measure,
            got.t,
            t.t
        );
        assert!(
            close(got.p, t.p),
            "{} p: {:?} vs {:?}",
            t.measure,
            got.p,
            t.p
        );
    }
}

#[test]
fn identical_runs_have_no_t_statistic() {
    let qrels = Qrels::from_file(&dir().join("qrels.txt")).unwrap();
    let run = Run::from_file(&dir().join("run_a.txt")).unwrap();
    let m = parse_measures("ndcg@10").unwrap();
    let e = evaluate(&qrels, &run, &m, Queries::Judged);
    let t = paired_t_test(&e, &e, 0);
    assert_eq!((t.delta, t.t, t.p), (0.0, None, None));
}

#[test]
fn malformed_files_name_the_line() {
    let p = Path::new("x.run");
    let e = Run::parse("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n", p).unwrap_err();
    assert!(e.to_string().starts_with("x.run:2: score \"high\""), "{e}");
    let e = Run::parse("q1 Q0 d1 1 0.5\n", p).unwrap_err();
    assert!(e.to_string().contains("x.run:1: expected 6 fields"), "{e}");
    let e = Run::parse("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", p).unwrap_err();
    assert!(
        e.to_string()
            .contains("x.run:2: document d1 is retrieved twice"),
        "{e}"
    );
    let e = Run::parse("q1 Q0 d1 1 NaN t\n", p).unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");
    assert!(Run::parse("\n\n", p)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    let q = Path::new("q.txt");
    let e = Qrels::parse("q1 0 d1 1\nq1 0 d2 yes\n", q).unwrap_err();
    assert!(
        e.to_string().starts_with("q.txt:2: relevance \"yes\""),
        "{e}"
    );
    let e = Qrels::parse("q1 d1\n", q).unwrap_err();
    assert!(e.to_string().contains("q.txt:1: expected"), "{e}");
    let e = Qrels::parse("q1 0 d1 1\nq1 0 d1 2\n", q).unwrap_err();
    assert!(e.to_string().contains("judged twice"), "{e}");
    for bad in ["ndcg", "ndcg@0", "ndcg@x", "bleu", "map@5"] {
        let e = parse_measures(bad).unwrap_err();
        assert!(e.to_string().contains("unknown measure"), "{bad}: {e}");
    }
    assert!(parse_measures(" , ").is_err());
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.run");
    std::fs::write(&path, b"q1 Q0 d1 1 0.5 t\nq1 Q0 d\xff 2 0.4 t\n").unwrap();
    let e = Run::from_file(&path).unwrap_err().to_string();
    assert!(
        e.ends_with(
            "bad.run:2: not valid UTF-8; convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)"
        ),
        "{e}"
    );
}
