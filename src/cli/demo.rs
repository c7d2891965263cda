//! `rerank demo`: the deployment guide's two scripts (see MODEL.md), with
//! their exact texts and output format, so the output can be set beside the
//! guide's line by line: test.py ranks three passages for "人工智能的发展趋势"
//! (the apple passage must come last) and test2.py five for "中国的首都是哪里？"
//! (北京 first, the passages that only share the keyword 首都 below it, with
//! `耗时` and score bars). Two harder demos of ours follow, never instead.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Exit with status 1 unless every demo's check holds (the guide's: the
    /// apple passage last, 北京 first; ours: the answer first). A smoke test for
    /// a real model; an untrained model fails it.
    #[arg(long)]
    pub check: bool,
}

/// What a demo expects of the ranking.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This passage ranks first.
    First(usize),
    /// This passage ranks last.
    Last(usize),
}

/// How a demo prints its ranked list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// test.py: `[0.9213] passage`.
    Plain,
    /// test2.py: `耗时: 0.87s`, then `[0.9832] ████ passage`.
    Timed,
    /// Ours: bars, then how long it took.
    Bars,
}

struct Demo {
    title: &'static str,
    query: &'static str,
    passages: &'static [&'static str],
    expect: Expect,
    /// A keyword that distractors share with the answer, if that is the point.
    keyword: Option<&'static str>,
    style: Style,
}

const DEMOS: [Demo; 4] = [
    Demo {
        title: "the guide's test.py",
        query: "人工智能的发展趋势",
        passages: &[
            "机器学习是人工智能的一个分支。",
            "苹果是一种水果，富含维生素C。",
            "深度神经网络推动了AI技术进步。",
        ],
        expect: Expect::Last(1),
        keyword: None,
        style: Style::Plain,
    },
    Demo {
        title: "the guide's test2.py",
        query: "中国的首都是哪里？",
        passages: &[
            "北京是中国的政治中心和首都。",
            "上海是中国最大的城市，经济发达。",
            "首都机场位于北京，是中国重要交通枢纽。",
            "杭州有西湖，是著名的旅游城市。",
            "首都医科大学位于北京市丰台区。",
        ],
        expect: Expect::First(0),
        keyword: Some("首都"),
        style: Style::Timed,
    },
    Demo {
        title: "ours: on topic, related, unrelated",
        query: "人工智能的发展趋势",
        passages: &[
            // About the query: where AI is heading.
            "人工智能正朝着大模型、多模态和通用人工智能的方向快速发展，并将深刻改变医疗、教育和制造等行业。",
            // Related: about AI, not about its trends.
            "机器学习是人工智能的一个分支，研究计算机如何从数据中学习规律。",
            // Unrelated.
            "今天天气晴朗，适合去公园散步。",
        ],
        expect: Expect::First(0),
        keyword: None,
        style: Style::Bars,
    },
    Demo {
        title: "ours: the keyword trap, harder",
        query: "中国的首都是哪里？",
        passages: &[
            "首都机场是北京最大的国际机场，每天有大量航班起降。",
            "上海是中国的经济中心和最大的城市。",
            "北京是中国的政治中心和首都。",
            "首都师范大学是一所位于北京的综合性师范大学。",
            "华盛顿是美国的首都。",
        ],
        expect: Expect::First(2),
        keyword: Some("首都"),
        style: Style::Bars,
    },
];

/// A passage on one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `yes`, or where the passage ranked instead.
fn verdict(ok: bool, place: usize, of: usize) -> String {
    if ok {
        "yes".into()
    } else {
        format!("NO, it ranks {place} of {of}")
    }
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let start = Instant::now();
    let reranker = args.model.load()?;
    let raw = reranker.options().raw_scores;
    let mut text = format!(
        "model: {} (loaded in {})\n",
        args.model.model,
        super::fmt_duration(start.elapsed())
    );
    let mut passed = 0;
    for (n, demo) in DEMOS.iter().enumerate() {
        let t = Instant::now();
        let ranked = reranker.rank(demo.query, demo.passages, None)?;
        let elapsed = t.elapsed();
        let _ = writeln!(text, "\ndemo {} ({}): {}", n + 1, demo.title, demo.query);
        if demo.style == Style::Timed {
            let _ = writeln!(text, "耗时: {:.2}s", elapsed.as_secs_f64());
        }
        for r in &ranked {
            let passage = demo.passages[r.index];
            let line = match demo.style {
                Style::Plain if raw => format!("[{:+.4}] {}", r.score, one_line(passage)),
                Style::Plain => format!("[{:.4}] {}", r.score, one_line(passage)),
                Style::Timed | Style::Bars => super::ranked_line(r.score, raw, passage),
            };
            let _ = writeln!(text, "{line}");
        }
        if demo.style == Style::Bars {
            let _ = writeln!(
                text,
                "{} passages ranked in {}",
                demo.passages.len(),
                super::fmt_duration(elapsed)
            );
        }
        let place = |i: usize| {
            ranked
                .iter()
                .position(|r| r.index == i)
                .map_or(0, |p| p + 1)
        };
        let (ok, line) = match demo.expect {
            Expect::First(i) => {
                let ok = place(i) == 1;
                let v = verdict(ok, place(i), ranked.len());
                (
                    ok,
                    format!("the answer ranks first: {v} ({})", demo.passages[i]),
                )
            }
            Expect::Last(i) => {
                let ok = place(i) == ranked.len();
                let v = verdict(ok, place(i), ranked.len());
                (
                    ok,
                    format!(
                        "the off-topic passage ranks last: {v} ({})",
                        demo.passages[i]
                    ),
                )
            }
        };
        passed += usize::from(ok);
        let _ = writeln!(text, "check: {line}");
        if let (Some(keyword), Expect::First(answer)) = (demo.keyword, demo.expect) {
            let sharing: Vec<usize> = (0..demo.passages.len())
                .filter(|&i| i != answer && demo.passages[i].contains(keyword))
                .collect();
            let below = sharing
                .iter()
                .filter(|&&i| place(i) > place(answer))
                .count();
            let _ = writeln!(
                text,
                "check: passages sharing only the keyword {keyword} rank below it: {below} of {}",
                sharing.len()
            );
        }
    }
    let _ = writeln!(
        text,
        "\nchecks passed in {passed} of {} demos{}",
        DEMOS.len(),
        if passed < DEMOS.len() {
            " (an untrained or random model, such as the test fixture, is not expected to pass)"
        } else {
            ""
        }
    );
    let mut out = std::io::stdout().lock();
    super::ignore_broken_pipe(
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write to standard output"),
    )?;
    if args.check && passed < DEMOS.len() {
        bail!(
            "the demos' checks passed in only {passed} of {}",
            DEMOS.len()
        );
    }
    Ok(())
}
