//! The `rerank` binary on the tiny fixture model: output formats, scores equal
//! to the library's, every user mistake as a one-line error with the right exit
//! code, and `--model` resolution (directory → Hugging Face cache → download).
//!
//! No test reaches beyond the loopback interface: every command runs with
//! HF_ENDPOINT on 127.0.0.1 (a closed port, or a fake hub served by the test)
//! and without proxy variables.

use crate::fixtures::fixture_dir;
use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use rerank::{Reranker, RerankerOptions};
use serde_json::Value;
use tempfile::TempDir;

pub(crate) const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
pub(crate) const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
/// A loopback port nothing listens on: downloads fail at once.
pub(crate) const UNREACHABLE: &str = "http://127.0.0.1:9";

pub(crate) fn fixture() -> String {
    fixture_dir().display().to_string()
}

/// The binary with a clean environment: no RERANK_* / HF_* / proxy
/// variables, HF_HOME in `home`, an unreachable loopback hub.
pub(crate) fn rerank(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("rerank").unwrap();
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy().to_ascii_uppercase();
        // The kernel choices (RERANK_*_KERNEL) stay: the binary must run the
        // kernels the library in this test process runs.
        if (k.starts_with("RERANK_") && !k.ends_with("_KERNEL"))
            || k.starts_with("HF_")
            || k.starts_with("HUGGING")
            || k.ends_with("_PROXY")
            || k == "XDG_CACHE_HOME"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HF_HOME", home)
        .env("HF_ENDPOINT", UNREACHABLE)
        .env("RUST_BACKTRACE", "1");
    cmd
}

pub(crate) fn library(options: RerankerOptions) -> Reranker {
    Reranker::load(fixture_dir(), options).unwrap()
}

pub(crate) const QUERY: &str = "中国的首都是哪里？";
pub(crate) const PASSAGES: [&str; 5] = [
    "北京是中国的政治中心和首都。",
    "首都机场很大。",
    "hi",
    "The giant panda is a bear native to China.",
    "上海是中国的经济中心和最大的城市，有很多高楼大厦和历史建筑。",
];

pub(crate) fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Runs and expects success; panics with the command's stderr otherwise.
pub(crate) fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs and expects a runtime error: exit 1, one `error: …` line on stderr
/// containing every `needles` string, no panic.
pub(crate) fn expect_error(cmd: &mut Command, needles: &[&str]) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    err
}

/// Parses `[0.9213] ████▍   text` into (score, bar, text).
fn parse_ranked_line(line: &str) -> (f32, String, String) {
    let rest = line.strip_prefix('[').expect(line);
    let (score, rest) = rest.split_once("] ").expect(line);
    let bar: String = rest.chars().take(20).collect();
    let text: String = rest.chars().skip(21).collect();
    assert!(
        bar.chars().all(|c| " ▏▎▍▌▋▊▉█".contains(c)),
        "bar {bar:?} in {line}"
    );
    (score.parse().expect(line), bar, text)
}

#[test]
fn rank_prints_sorted_lines_with_bars_then_timing() {
    let home = TempDir::new().unwrap();
    let out = rerank(home.path())
        .args(["rank", "--model", &fixture(), "--query", QUERY])
        .args(PASSAGES)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), PASSAGES.len() + 1, "{text}");
    let expected = library(RerankerOptions::default())
        .rank(QUERY, &PASSAGES, None)
        .unwrap();
    let mut prev = f32::INFINITY;
    for (line, want) in lines.iter().zip(&expected) {
        let (score, bar, passage) = parse_ranked_line(line);
        assert!(score <= prev, "not sorted: {text}");
        prev = score;
        assert_eq!(passage, PASSAGES[want.index], "{text}");
        assert_eq!(format!("{score:.4}"), format!("{:.4}", want.score));
        // The bar is proportional to the score.
        let full = bar.chars().filter(|&c| c == '█').count();
        assert_eq!(
            full,
            (want.score * 20.0 * 8.0).round() as usize / 8,
            "{line}"
        );
    }
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("5 passages ranked in ") && last.contains("passages/s"),
        "{last}"
    );
}

#[test]
fn rank_json_shape_and_scores_equal_the_library() {
    let home = TempDir::new().unwrap();
    for (raw, top_k) in [(false, None), (true, None), (false, Some(2))] {
        let mut cmd = rerank(home.path());
        cmd.args(["rank", "--json", "--model", &fixture(), "--query", QUERY])
            .args(PASSAGES);
        if raw {
            cmd.arg("--raw");
        }
        if let Some(k) = top_k {
            cmd.args(["--top-k", &k.to_string()]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let items: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
        let want = library(RerankerOptions {
            raw_scores: raw,
            ..Default::default()
        })
        .rank(QUERY, &PASSAGES, top_k)
        .unwrap();
        assert_eq!(items.len(), want.len());
        for (item, want) in items.iter().zip(&want) {
            let obj = item.as_object().unwrap();
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, ["index", "score", "text"]);
            assert_eq!(obj["index"].as_u64().unwrap() as usize, want.index);
            assert_eq!(
                obj["score"].as_f64().unwrap() as f32,
                want.score,
                "raw {raw}"
            );
            assert_eq!(obj["text"], PASSAGES[want.index]);
        }
    }
}

#[test]
fn rank_reads_a_passages_file_or_stdin() {
    let home = TempDir::new().unwrap();
    let json = |cmd: &mut Command| -> Value {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let from_args = json(
        rerank(home.path())
            .args(["rank", "--json", "--model", &fixture(), "-q", QUERY])
            .args(PASSAGES),
    );
    // CRLF line ends and blank lines are tolerated.
    let file = home.path().join("passages.txt");
    std::fs::write(&file, format!("{}\r\n\n\n", PASSAGES.join("\r\n"))).unwrap();
    let from_file = json(
        rerank(home.path())
            .args(["rank", "--json", "--model", &fixture(), "-q", QUERY])
            .arg("--passages")
            .arg(&file),
    );
    let from_stdin = json(
        rerank(home.path())
            .args(["rank", "--json", "--model", &fixture(), "-q", QUERY])
            .write_stdin(PASSAGES.join("\n")),
    );
    assert_eq!(from_args, from_file);
    assert_eq!(from_args, from_stdin);
}

#[test]
fn rank_raw_shows_logits_with_sigmoid_bars() {
    let home = TempDir::new().unwrap();
    let out = rerank(home.path())
        .args(["rank", "--raw", "--model", &fixture(), "-q", QUERY])
        .args(PASSAGES)
        .output()
        .unwrap();
    assert!(out.status.success());
    let want = library(RerankerOptions {
        raw_scores: true,
        ..Default::default()
    })
    .rank(QUERY, &PASSAGES, None)
    .unwrap();
    for (line, want) in stdout(&out).lines().zip(&want) {
        let (score, bar, _) = parse_ranked_line(line);
        assert!(line.starts_with("[+") || line.starts_with("[-"), "{line}");
        assert_eq!(format!("{score:+.4}"), format!("{:+.4}", want.score));
        let sig = rerank::backend::sigmoid(want.score);
        let full = bar.chars().filter(|&c| c == '█').count();
        assert_eq!(full, (sig * 160.0).round() as usize / 8, "{line}");
    }
}

fn pairs_jsonl() -> (Vec<(String, String)>, String) {
    let mut pairs = Vec::new();
    for (i, p) in PASSAGES.iter().enumerate() {
        pairs.push((QUERY.to_string(), p.to_string()));
        // Long passages that are truncated, in several batches.
        pairs.push(("what is panda?".to_string(), p.repeat(3 + 10 * i)));
    }
    let jsonl: String = pairs
        .iter()
        .map(|(q, p)| serde_json::json!({"query": q, "passage": p}).to_string() + "\n")
        .collect();
    (pairs, jsonl)
}

#[test]
fn score_keeps_input_order_and_equals_the_library() {
    let home = TempDir::new().unwrap();
    let (pairs, jsonl) = pairs_jsonl();
    for batch in ["16", "3"] {
        let out = rerank(home.path())
            .args(["score", "--model", &fixture(), "--input", "-"])
            .args(["--batch-size", batch])
            .write_stdin(jsonl.clone())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let want = library(RerankerOptions {
            batch_size: batch.parse().unwrap(),
            ..Default::default()
        })
        .score(&pairs)
        .unwrap();
        let text = stdout(&out);
        assert_eq!(text.lines().count(), pairs.len());
        for (i, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["index"].as_u64(), Some(i as u64), "{line}");
            assert_eq!(v["score"].as_f64().unwrap() as f32, want[i], "{line}");
            assert_eq!(v.as_object().unwrap().len(), 2);
        }
    }
}

#[test]
fn score_writes_the_output_file() {
    let home = TempDir::new().unwrap();
    let (_, jsonl) = pairs_jsonl();
    let input = home.path().join("pairs.jsonl");
    let output = home.path().join("scores.jsonl");
    std::fs::write(&input, &jsonl).unwrap();
    let to_stdout = rerank(home.path())
        .args(["score", "--model", &fixture(), "-i"])
        .arg(&input)
        .output()
        .unwrap();
    rerank(home.path())
        .args(["score", "--model", &fixture(), "-i"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .assert()
        .success()
        .stdout("");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        stdout(&to_stdout)
    );
}

#[test]
fn demo_runs_the_guides_two_scripts_first_then_ours() {
    let home = TempDir::new().unwrap();
    let out = rerank(home.path())
        .args(["demo", "--model", &fixture()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    // The guide's texts, exactly (MODEL.md), each printed as `[0.9213] passage`
    // best first (test.py) or with `耗时` and bars (test2.py), with the
    // library's scores.
    let guide: [(&str, &str, &[&str]); 2] = [
        (
            "demo 1 (the guide's test.py): 人工智能的发展趋势",
            "人工智能的发展趋势",
            &[
                "机器学习是人工智能的一个分支。",
                "苹果是一种水果，富含维生素C。",
                "深度神经网络推动了AI技术进步。",
            ],
        ),
        (
            "demo 2 (the guide's test2.py): 中国的首都是哪里？",
            "中国的首都是哪里？",
            &[
                "北京是中国的政治中心和首都。",
                "上海是中国最大的城市，经济发达。",
                "首都机场位于北京，是中国重要交通枢纽。",
                "杭州有西湖，是著名的旅游城市。",
                "首都医科大学位于北京市丰台区。",
            ],
        ),
    ];
    let rr = rerank::Reranker::load(fixture(), rerank::RerankerOptions::default()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (n, (title, query, passages)) in guide.iter().enumerate() {
        let at = lines
            .iter()
            .position(|l| l == title)
            .unwrap_or_else(|| panic!("{title:?} not in {text}"));
        let mut next = at + 1;
        if n == 1 {
            assert!(
                lines[next].starts_with("耗时: ") && lines[next].ends_with('s'),
                "{text}"
            );
            next += 1;
        }
        let ranked = rr.rank(query, passages, None).unwrap();
        for (line, r) in lines[next..next + passages.len()].iter().zip(&ranked) {
            let passage = passages[r.index];
            let want = if n == 0 {
                format!("[{:.4}] {passage}", r.score)
            } else {
                format!("[{:.4}] ", r.score)
            };
            assert!(
                line.starts_with(&want) && line.ends_with(passage),
                "{line:?} vs {want:?}"
            );
        }
    }
    // The guide's two come first; ours follow.
    let titles: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("demo "))
        .collect();
    assert_eq!(titles.len(), 4, "{text}");
    assert_eq!(titles[0], guide[0].0);
    assert_eq!(titles[1], guide[1].0);
    assert!(
        titles[2].contains("(ours") && titles[3].contains("(ours"),
        "{text}"
    );
    assert_eq!(text.matches("\ncheck: the ").count(), 4, "{text}");
    assert_eq!(
        text.matches("check: passages sharing only the keyword 首都 rank below it: ")
            .count(),
        2
    );
    let ranked = text.lines().filter(|l| l.starts_with('[')).count();
    assert_eq!(ranked, 3 + 5 + 3 + 5, "{text}");
    // --check fails exactly when a demo's check does not hold.
    let all_passed = text.contains("checks passed in 4 of 4 demos");
    let check = rerank(home.path())
        .args(["demo", "--check", "--model", &fixture()])
        .output()
        .unwrap();
    assert_eq!(check.status.success(), all_passed);
}

// ---------------------------------------------------------------- errors

#[test]
fn missing_model_directory_and_files() {
    let home = TempDir::new().unwrap();
    expect_error(
        rerank(home.path()).args(["rank", "--model", "/nonexistent/model", "-q", "q", "p"]),
        &["/nonexistent/model", "not found", "config.json"],
    );
    let dir = TempDir::new().unwrap();
    for f in MODEL_FILES {
        std::fs::copy(fixture_dir().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    expect_error(
        rerank(home.path())
            .args(["rank", "-q", "q", "p", "--model"])
            .arg(dir.path()),
        &["tokenizer.json not found"],
    );
}

/// A mistyped kernel switch is an error naming the variable and the allowed
/// values, whichever implementation would run (here the hand-written f32
/// model and candle's f16); `--help` lists the switches.
#[test]
fn an_unknown_kernel_switch_is_an_error_naming_it() {
    let home = TempDir::new().unwrap();
    let input = home.path().join("pairs.jsonl");
    std::fs::write(&input, "{\"query\": \"a\", \"passage\": \"b\"}\n").unwrap();
    for (var, dtype, allowed) in [
        ("RERANK_I8_KERNEL", "f32", "amx, vnni, avx2, portable"),
        (
            "RERANK_BF16_KERNEL",
            "f16",
            "amx, avx512bf16, avx2, portable",
        ),
        ("RERANK_SMALL_F32", "int8", "RERANK_SMALL_F32"),
    ] {
        expect_error(
            rerank(home.path())
                .env(var, "bogus")
                .args(["score", "--model", &fixture(), "--dtype", dtype, "-i"])
                .arg(&input),
            &[var, "\"bogus\"", allowed],
        );
    }
    let help = run_ok(rerank(home.path()).arg("--help"));
    let help = stdout(&help);
    for var in ["RERANK_I8_KERNEL", "RERANK_BF16_KERNEL", "RERANK_SMALL_F32"] {
        assert!(help.contains(var), "{var} not in --help");
    }
}

#[test]
fn bad_json_names_the_line() {
    let home = TempDir::new().unwrap();
    let input = home.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        "{\"query\": \"a\", \"passage\": \"b\"}\n\n{\"query\": \"a\", \"passage\": }\n",
    )
    .unwrap();
    expect_error(
        rerank(home.path())
            .args(["score", "--model", &fixture(), "-i"])
            .arg(&input),
        &["pairs.jsonl: line 3", "\"query\""],
    );
    expect_error(
        rerank(home.path())
            .args(["score", "--model", &fixture(), "-i", "-"])
            .write_stdin("{\"query\": \"a\"}\n"),
        &["standard input: line 1", "missing field `passage`"],
    );
}

#[test]
fn a_missing_input_file_is_named() {
    let home = TempDir::new().unwrap();
    expect_error(
        rerank(home.path()).args(["score", "--model", &fixture(), "-i", "/no/such/pairs.jsonl"]),
        &["/no/such/pairs.jsonl", "cannot read"],
    );
    expect_error(
        rerank(home.path()).args([
            "rank",
            "--model",
            &fixture(),
            "-q",
            "q",
            "-p",
            "/no/such/p.txt",
        ]),
        &["/no/such/p.txt", "cannot read"],
    );
}

#[test]
fn non_utf8_input_names_the_line() {
    let home = TempDir::new().unwrap();
    let mut bytes = b"{\"query\": \"a\", \"passage\": \"b\"}\n{\"query\": \"".to_vec();
    bytes.extend_from_slice(&[0xd6, 0xd0, 0xce, 0xc4]); // "中文" in GBK
    bytes.extend_from_slice(b"\", \"passage\": \"b\"}\n");
    expect_error(
        rerank(home.path())
            .args(["score", "--model", &fixture(), "-i", "-"])
            .write_stdin(bytes.clone()),
        &["line 2 is not valid UTF-8"],
    );
    expect_error(
        rerank(home.path())
            .args(["rank", "--model", &fixture(), "-q", "q"])
            .write_stdin(b"fine\n\xff\xfe\n".to_vec()),
        &["standard input: line 2 is not valid UTF-8"],
    );
}

#[test]
fn max_length_above_the_model_limit_states_the_limit() {
    let home = TempDir::new().unwrap();
    expect_error(
        rerank(home.path()).args([
            "rank",
            "--model",
            &fixture(),
            "--max-length",
            "200",
            "-q",
            "q",
            "p",
        ]),
        &["max_length 200", "limit of 128", "--max-length 128"],
    );
    // The env var is read the same way.
    expect_error(
        rerank(home.path()).env("RERANK_MAX_LENGTH", "129").args([
            "rank",
            "--model",
            &fixture(),
            "-q",
            "q",
            "p",
        ]),
        &["limit of 128"],
    );
}

#[test]
fn an_empty_passage_list_is_refused() {
    let home = TempDir::new().unwrap();
    expect_error(
        rerank(home.path())
            .args(["rank", "--model", &fixture(), "-q", "q"])
            .write_stdin("\n  \n"),
        &["no passages to rank", "--passages FILE"],
    );
    let empty = home.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    expect_error(
        rerank(home.path())
            .args(["rank", "--model", &fixture(), "-q", "q", "-p"])
            .arg(&empty),
        &["no passages to rank"],
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_get_it() {
    let home = TempDir::new().unwrap();
    expect_error(
        rerank(home.path()).args([
            "rank",
            "--model",
            &fixture(),
            "--device",
            "cuda",
            "-q",
            "q",
            "p",
        ]),
        &["no CUDA support", "--features cuda"],
    );
}

#[test]
fn usage_errors_exit_2() {
    let home = TempDir::new().unwrap();
    for args in [
        vec!["rank", "p"],                                 // no --query
        vec!["rank", "-q", "q", "--top-k", "0", "p"],      // k < 1
        vec!["rank", "-q", "q", "--truncation", "middle"], // unknown strategy
        vec!["rank", "-q", "q", "--dtype", "int4"],        // unknown dtype
        vec!["rank", "-q", "q", "-p", "f.txt", "p"],       // both sources
        vec!["score"],                                     // no --input
        vec!["frobnicate"],                                // no such command
    ] {
        rerank(home.path())
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("error:"))
            .stderr(predicate::str::contains("panicked").not());
    }
}

#[test]
fn rank_with_int8_and_bf16_equals_the_library_and_unknown_dtypes_are_usage_errors() {
    let home = TempDir::new().unwrap();
    for dtype in [rerank::Dtype::Int8, rerank::Dtype::Bf16] {
        let out = rerank(home.path())
            .args(["rank", "--json", "--model", &fixture(), "--query", QUERY])
            .args(["--dtype", &dtype.to_string()])
            .args(PASSAGES)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let items: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
        let want = library(RerankerOptions {
            dtype: Some(dtype),
            ..Default::default()
        })
        .rank(QUERY, &PASSAGES, None)
        .unwrap();
        assert_eq!(items.len(), want.len());
        for (item, want) in items.iter().zip(&want) {
            assert_eq!(item["index"].as_u64().unwrap() as usize, want.index);
            let got = item["score"].as_f64().unwrap() as f32;
            assert!(
                (got - want.score).abs() <= 1e-6,
                "{dtype}: {got} vs {}",
                want.score
            );
        }
    }
    let out = rerank(home.path())
        .args([
            "rank",
            "--model",
            &fixture(),
            "--dtype",
            "int4",
            "--query",
            QUERY,
        ])
        .args(PASSAGES)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("int8"));
}

#[test]
fn bench_runs_0_only_writes_the_workloads() {
    let home = TempDir::new().unwrap();
    let dump = home.path().join("wl");
    let out = run_ok(
        rerank(home.path())
            .args(["bench", "--model", &fixture(), "-w", "rag-50"])
            .args(["--runs", "0", "--dump"])
            .arg(&dump),
    );
    let text = std::fs::read_to_string(dump.join("rag-50.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 50);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["query"].is_string() && v["passage"].is_string(), "{line}");
    }
    // Nothing was scored: no result row for the workload.
    assert!(
        !stdout(&out).lines().any(|l| l.starts_with("rag-50")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bench_f16_reports_its_gap_to_f32() {
    let home = TempDir::new().unwrap();
    let out = run_ok(
        rerank(home.path())
            .args(["bench", "--model", &fixture(), "--dtype", "f16"])
            .args(["-w", "seed-512x10", "--runs", "1", "--no-warmup"]),
    );
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("vs f32: max relative L2 error"))
        .unwrap_or_else(|| panic!("no accuracy line in:\n{text}"));
    let diff: f32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(diff > 0.0 && diff < 0.05, "{line}");
}
