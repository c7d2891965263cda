//! Long documents: chunked scoring against PyTorch's scores of the windows
//! (`tests/fixtures/golden_chunk.json`, from `tests/fixtures/generate_chunk.py`),
//! bit-identical scores for pairs that fit, and bounded work for a 1 MB passage.

use std::path::Path;

use rerank::chunk::{ChunkParams, LongDocuments};
use rerank::{Reranker, RerankerOptions};
use serde::Deserialize;

use crate::fixtures::fixture_dir;

#[derive(Deserialize)]
struct Golden {
    query: String,
    max_length: usize,
    chunk_tokens: usize,
    chunk_overlap: usize,
    needle: String,
    needle_logit: f32,
    needle_ids: Vec<u32>,
    needle_start: usize,
    long_passage: String,
    distractor: String,
    distractor_logit: f32,
    truncated_logit: f32,
    truncated_ids: Vec<u32>,
}

fn golden() -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_chunk.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(long_documents: LongDocuments, max_length: usize, chunking: ChunkParams) -> Reranker {
    Reranker::load(
        fixture_dir(),
        RerankerOptions {
            max_length: Some(max_length),
            raw_scores: true,
            long_documents,
            chunking,
            ..RerankerOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn a_needle_past_the_budget_wins_only_with_chunking() {
    let g = golden();
    let chunking = ChunkParams {
        chunk_tokens: Some(g.chunk_tokens),
        overlap: g.chunk_overlap,
        max_chunks: 10,
    };
    let passages = [g.long_passage.as_str(), g.distractor.as_str()];

    let truncating = load(LongDocuments::Truncate, g.max_length, chunking);
    let q = truncating.encoder().text_ids(&g.query).unwrap();
    assert_eq!(
        truncating.encoder().text_ids(&g.needle).unwrap(),
        g.needle_ids
    );
    let encoded = truncating
        .encode_pairs(&[(&g.query, &g.long_passage)])
        .unwrap();
    assert_eq!(encoded[0].ids, g.truncated_ids, "PyTorch's truncation");
    let ranked = truncating.rank(&g.query, &passages, None).unwrap();
    assert_eq!(ranked[0].index, 1, "truncated, the distractor wins");
    assert!((ranked[0].score - g.distractor_logit).abs() < 1e-4);
    assert!((ranked[1].score - g.truncated_logit).abs() < 1e-4);

    let chunked = load(LongDocuments::Chunk, g.max_length, chunking);
    let docs = chunked
        .encoder()
        .encode_chunked(&q, &g.long_passage, chunked.truncation(), &chunking, None)
        .unwrap();
    // The last window is the needle alone, as the generator built it.
    let last = docs.windows.last().unwrap();
    let tpl = chunked.encoder().template();
    let needle_pair: Vec<u32> =
        [&tpl.prefix[..], &q, &tpl.middle, &g.needle_ids, &tpl.suffix].concat();
    assert_eq!(last.ids, needle_pair);
    let ranked = chunked.rank_documents(&g.query, &passages, None).unwrap();
    assert_eq!(ranked[0].index, 0, "chunked, the long passage wins");
    assert!(
        (ranked[0].score - g.needle_logit).abs() < 1e-4,
        "{} vs PyTorch {}",
        ranked[0].score,
        g.needle_logit
    );
    assert!((ranked[1].score - g.distractor_logit).abs() < 1e-4);
    let window = ranked[0]
        .window
        .clone()
        .expect("the long passage was split");
    assert_eq!(window.count, docs.windows.len());
    assert_eq!(window.index, window.count - 1);
    let chars: Vec<char> = g.long_passage.chars().collect();
    assert_eq!(window.start, g.needle_start);
    assert_eq!(
        chars[window.start..window.end].iter().collect::<String>(),
        g.needle
    );
    assert_eq!(ranked[1].window, None, "a passage that fits is not split");
}

#[test]
fn pairs_that_fit_score_bit_identically_with_chunking_on() {
    let cases = crate::fixtures::golden();
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .filter(|c| c.max_length == 128)
        .map(|c| (c.query.as_str(), c.passage.as_str()))
        .collect();
    let truncating = load(LongDocuments::Truncate, 128, ChunkParams::default());
    let chunked = load(LongDocuments::Chunk, 128, ChunkParams::default());
    let fit: Vec<(&str, &str)> = pairs
        .iter()
        .zip(truncating.encode_pairs(&pairs).unwrap())
        .filter(|(_, e)| !e.truncated())
        .map(|(p, _)| *p)
        .collect();
    assert!(fit.len() >= 10, "too few short pairs: {}", fit.len());
    let a = truncating.score(&fit).unwrap();
    let b = chunked.score(&fit).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
    let docs = chunked.score_documents(&fit).unwrap();
    assert!(docs.iter().all(|d| d.window.is_none()));
}

#[test]
fn a_1_mb_passage_makes_at_most_max_chunks_windows() {
    let passage = "The river flows to the sea. ".repeat((1 << 20) / 28 + 1);
    assert!(passage.len() >= 1 << 20);
    let chunking = ChunkParams {
        max_chunks: 3,
        ..ChunkParams::default()
    };
    let rr = load(LongDocuments::Chunk, 128, chunking);
    let q = rr.encoder().text_ids("where does the river go?").unwrap();
    let docs = rr
        .encoder()
        .encode_chunked(&q, &passage, rr.truncation(), &chunking, None)
        .unwrap();
    assert_eq!(docs.windows.len(), 3);
    assert!(docs
        .windows
        .iter()
        .all(|w| w.ids.len() <= 128 && !w.truncated()));
    let ranked = rr
        .rank_documents(
            "where does the river go?",
            &[passage.as_str(), "short"],
            None,
        )
        .unwrap();
    let long = ranked.iter().find(|r| r.index == 0).unwrap();
    let w = long.window.clone().unwrap();
    assert_eq!(w.count, 3);
    assert!(w.end <= 2000, "only the beginning is scored: {w:?}");
}

#[test]
fn chunk_options_are_checked() {
    for chunking in [
        ChunkParams {
            max_chunks: 0,
            ..ChunkParams::default()
        },
        ChunkParams {
            chunk_tokens: Some(0),
            ..ChunkParams::default()
        },
    ] {
        let e = Reranker::load(
            fixture_dir(),
            RerankerOptions {
                long_documents: LongDocuments::Chunk,
                chunking,
                ..RerankerOptions::default()
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("must be at least 1"), "{e}");
    }
}
