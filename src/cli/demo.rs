//! `rerank demo`: the two checks users of the seed guide run after a
//! deployment (see MODEL.md): an AI-trends query over three passages, and
//! "中国的首都是哪里？" where passages that merely share the keyword 首都 must
//! rank below the real answer. Prints each ranked list with score bars and
//! the elapsed time, and whether the expected passage ranked first.

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
    /// Exit with status 1 unless the expected passage ranks first in every demo
    /// (a smoke test for a real model; an untrained model fails it).
    #[arg(long)]
    pub check: bool,
}

struct Demo {
    query: &'static str,
    passages: &'static [&'static str],
    /// Index of the passage that must rank first.
    expected: usize,
    /// A keyword that distractors share with the answer, if that is the point.
    keyword: Option<&'static str>,
}

const DEMOS: [Demo; 2] = [
    Demo {
        query: "人工智能的发展趋势",
        passages: &[
            // About the query: where AI is heading.
            "人工智能正朝着大模型、多模态和通用人工智能的方向快速发展，并将深刻改变医疗、教育和制造等行业。",
            // Related: about AI, not about its trends.
            "机器学习是人工智能的一个分支，研究计算机如何从数据中学习规律。",
            // Unrelated.
            "今天天气晴朗，适合去公园散步。",
        ],
        expected: 0,
        keyword: None,
    },
    Demo {
        query: "中国的首都是哪里？",
        passages: &[
            "首都机场是北京最大的国际机场，每天有大量航班起降。",
            "上海是中国的经济中心和最大的城市。",
            "北京是中国的政治中心和首都。",
            "首都师范大学是一所位于北京的综合性师范大学。",
            "华盛顿是美国的首都。",
        ],
        expected: 2,
        keyword: Some("首都"),
    },
];

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
        let _ = writeln!(text, "\ndemo {}: query {}", n + 1, demo.query);
        for r in &ranked {
            let line = super::ranked_line(r.score, raw, demo.passages[r.index]);
            let _ = writeln!(text, "{line}");
        }
        let _ = writeln!(
            text,
            "{} passages ranked in {}",
            demo.passages.len(),
            super::fmt_duration(elapsed)
        );
        let place = ranked
            .iter()
            .position(|r| r.index == demo.expected)
            .map_or(0, |p| p + 1);
        let answer = demo.passages[demo.expected];
        if place == 1 {
            passed += 1;
            let _ = writeln!(text, "expected passage ranked first: yes ({answer})");
        } else {
            let _ = writeln!(
                text,
                "expected passage ranked first: NO, it ranked {place} of {} ({answer})",
                ranked.len()
            );
        }
        if let Some(keyword) = demo.keyword {
            let sharing: Vec<usize> = (0..demo.passages.len())
                .filter(|&i| i != demo.expected && demo.passages[i].contains(keyword))
                .collect();
            let below = ranked
                .iter()
                .skip(place)
                .filter(|r| sharing.contains(&r.index))
                .count();
            let _ = writeln!(
                text,
                "passages sharing only the keyword {keyword} ranked below it: {below} of {}",
                sharing.len()
            );
        }
    }
    let _ = writeln!(
        text,
        "\nexpected passage first in {passed} of {} demos{}",
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
            "the expected passage ranked first in only {passed} of {} demos",
            DEMOS.len()
        );
    }
    Ok(())
}
