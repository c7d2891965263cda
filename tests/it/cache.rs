//! The score cache in the engine: a cached logit is the computed one, bit
//! for bit; one cache shared by several models and options never hands one
//! of them another's logit.

use std::path::Path;
use std::sync::Arc;

use crate::fixtures::{fixture_dir, golden};
use rerank::{Dtype, Reranker, RerankerOptions, ScoreCache, Truncation};

fn load(dir: &Path, options: RerankerOptions) -> Reranker {
    Reranker::load(dir, options).expect("the fixture loads")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn tiny_bert() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

#[test]
fn a_cached_logit_is_the_computed_one_bit_for_bit() {
    let cases = golden();
    let ids: Vec<&[u32]> = cases.iter().map(|c| c.input_ids.as_slice()).collect();
    let cached = load(
        &fixture_dir(),
        RerankerOptions {
            cache_size: 1024,
            ..RerankerOptions::default()
        },
    );
    let plain = load(&fixture_dir(), RerankerOptions::default());
    let computed = cached.logits(&ids).expect("first pass");
    let stats = cached.cache().unwrap().stats();
    assert_eq!(
        (stats.hits, stats.misses),
        (0, ids.len() as u64),
        "{stats:?}"
    );
    // Every pair a miss: the same batches as without a cache, the same bits.
    assert_eq!(bits(&computed), bits(&plain.logits(&ids).unwrap()));
    // …and PyTorch's logits (the golden file) within the usual tolerance.
    for (c, l) in cases.iter().zip(&computed) {
        assert!((c.logit - l).abs() < 1e-4, "{}: {l} vs {}", c.name, c.logit);
    }
    let again = cached.logits(&ids).expect("from the cache");
    let stats = cached.cache().unwrap().stats();
    assert_eq!(stats.hits, ids.len() as u64, "{stats:?}");
    assert_eq!(bits(&again), bits(&computed));
    // Half cached, half new, in one call: the cached ones keep their bits.
    let mut mixed: Vec<&[u32]> = ids.iter().step_by(2).copied().collect();
    let fresh: Vec<Vec<u32>> = ids
        .iter()
        .skip(1)
        .step_by(2)
        .map(|p| {
            let mut p = p.to_vec();
            p.swap(1, 2);
            p
        })
        .collect();
    mixed.extend(fresh.iter().map(|p| p.as_slice()));
    let got = cached.logits(&mixed).unwrap();
    let n_old = ids.len().div_ceil(2);
    let old: Vec<f32> = computed.iter().step_by(2).copied().collect();
    assert_eq!(
        bits(&got[..n_old]),
        bits(&old),
        "cached pairs keep the first pass's bits"
    );
    // The new ones are computed (in other batches than alone: within 1e-5).
    let want = plain.logits(&mixed).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    // score() and rank() go through the same cache.
    let pairs = [("what is panda?", "The giant panda is a bear.")];
    let first = cached.score(&pairs).unwrap();
    let hits = cached.cache().unwrap().stats().hits;
    assert_eq!(bits(&cached.score(&pairs).unwrap()), bits(&first));
    assert_eq!(cached.cache().unwrap().stats().hits, hits + 1);
}

#[test]
fn a_shared_cache_never_crosses_models_dtypes_or_options() {
    let cache = Arc::new(ScoreCache::new(1024).unwrap());
    let long = "the giant panda is a bear that eats bamboo ".repeat(20);
    let pairs = [("what is panda?", long.as_str()), ("q", "short")];
    let variants = [
        (fixture_dir(), RerankerOptions::default()),
        (
            fixture_dir(),
            RerankerOptions {
                dtype: Some(Dtype::Int8),
                ..RerankerOptions::default()
            },
        ),
        (
            fixture_dir(),
            RerankerOptions {
                max_length: Some(48),
                ..RerankerOptions::default()
            },
        ),
        (
            fixture_dir(),
            RerankerOptions {
                max_length: Some(48),
                truncation: Truncation::OnlySecond,
                ..RerankerOptions::default()
            },
        ),
        (
            fixture_dir(),
            RerankerOptions {
                portable: true,
                ..RerankerOptions::default()
            },
        ),
        (tiny_bert(), RerankerOptions::default()),
    ];
    for (i, (dir, options)) in variants.iter().enumerate() {
        let own = load(dir, options.clone()).score(&pairs).unwrap();
        let shared = load(dir, options.clone()).with_cache(Some(cache.clone()));
        let got = shared.score(&pairs).unwrap();
        assert_eq!(bits(&got), bits(&own), "variant {i}: {options:?}");
        let stats = cache.stats();
        // Each variant adds its own two entries, found by nobody before it.
        assert_eq!(stats.entries, 2 * (i + 1), "variant {i}: {stats:?}");
        assert_eq!(stats.hits, 0, "variant {i}: {stats:?}");
    }
    // Loaded again, the same model and options find their entries.
    let again = load(&fixture_dir(), RerankerOptions::default()).with_cache(Some(cache.clone()));
    again.score(&pairs).unwrap();
    assert_eq!(cache.stats().hits, 2);
}
