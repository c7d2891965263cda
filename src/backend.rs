//! The contract every layer reads downward: what a forward pass takes
//! ([`PackedBatch`], checked when built), what computes it ([`Backend`]), how
//! pairs are grouped into forward passes ([`BatchBudget`], the one batch
//! planner of the engine and the server's scheduler), and how raw logits become
//! the scores users see ([`ScoreTransform`], [`check_logits`], [`rank_scores`]).
//!
//! Nothing here knows a model implementation: the engine, the scheduler and
//! the HTTP routes import this module, and the models implement it.

use crate::error::{Error, Result};

/// The token-id space of a model, against which a [`PackedBatch`] is checked
/// and by which its positions and token types are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpace {
    /// The first position id of a pair (`pad_token_id + 1` for RoBERTa, 0 for BERT).
    pub position_offset: u32,
    /// Every id must be below it.
    pub vocab_size: usize,
    /// Most tokens per pair (what the position embeddings allow).
    pub max_tokens: usize,
    /// Where the passage segment (token type 1) starts; `None`: every token
    /// has type 0 (RoBERTa).
    pub passage_types: Option<SegmentRule>,
}

/// BERT's token types, read off the ids: type 0 through the first
/// occurrence of `separator` after the `prefix_len` template tokens (the
/// query's `[SEP]`), type 1 after it. A query holding the separator's own
/// text (a literal `[SEP]`, which the tokenizer turns into the special token,
/// as transformers' does) would start the passage types early: transformers
/// types by segment instead. Nothing else differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRule {
    pub prefix_len: usize,
    pub separator: Vec<u32>,
}

impl TokenSpace {
    /// The token space of a validated model config, every token of type 0.
    pub fn of(config: &crate::config::ModelConfig) -> Self {
        Self {
            position_offset: config.position_offset(),
            vocab_size: config.vocab_size,
            max_tokens: config.max_tokens(),
            passage_types: None,
        }
    }

    /// With the token types of the checkpoint's pair template.
    pub fn with_template(mut self, template: &crate::tokenize::PairTemplate) -> Self {
        self.passage_types = template.typed_passage.then(|| SegmentRule {
            prefix_len: template.prefix.len(),
            separator: template.middle.clone(),
        });
        self
    }

    /// The token type of each token of `pair`.
    fn types_of(&self, pair: &[u32], out: &mut Vec<u32>) {
        let start = out.len();
        out.resize(start + pair.len(), 0);
        let Some(rule) = &self.passage_types else {
            return;
        };
        let sep = rule.separator.as_slice();
        if sep.is_empty() || pair.len() < rule.prefix_len + sep.len() {
            return;
        }
        let split = (rule.prefix_len..=pair.len() - sep.len())
            .find(|&i| pair[i..i + sep.len()] == *sep)
            .map(|i| i + sep.len());
        if let Some(split) = split {
            out[start + split..].iter_mut().for_each(|t| *t = 1);
        }
    }
}

/// Pairs laid end to end, ready for a forward pass: the linear layers (nearly
/// all of the work) never see a padding token and need no attention mask;
/// attention runs per pair. This removes the padding waste of length-mixed
/// batches and makes a pair's score independent of the batch it is in.
#[derive(Debug, Clone)]
pub struct PackedBatch {
    /// All token ids, pair after pair.
    pub ids: Vec<u32>,
    /// Position ids: `position_offset + i` within each pair.
    pub positions: Vec<u32>,
    /// Token type ids (0, or 1 in BERT's passage segment).
    pub types: Vec<u32>,
    /// Start of each pair in `ids`, plus the total length at the end.
    pub offsets: Vec<usize>,
}

impl PackedBatch {
    /// Packs pairs of token ids. Position ids follow
    /// `create_position_ids_from_input_ids` for RoBERTa (real tokens get
    /// `pad + 1 + index`) and count from 0 for BERT; token types follow
    /// [`TokenSpace::passage_types`].
    ///
    /// Every pair must hold at least one token, at most `space.max_tokens`,
    /// each below `space.vocab_size`: the models index embeddings with them
    /// and divide by pair lengths, so a bad id list is refused here.
    pub fn new<S: AsRef<[u32]>>(pairs: &[S], space: &TokenSpace) -> Result<Self> {
        for (i, p) in pairs.iter().enumerate() {
            let p = p.as_ref();
            if p.is_empty() {
                return Err(Error::InvalidBatch(format!(
                    "pair {i} has no tokens; a pair needs at least its special tokens (encode it with the model's tokenizer)"
                )));
            }
            if p.len() > space.max_tokens {
                return Err(Error::MaxLengthTooLarge {
                    requested: p.len(),
                    limit: space.max_tokens,
                });
            }
            if let Some(&id) = p.iter().find(|&&id| id as usize >= space.vocab_size) {
                return Err(Error::InvalidBatch(format!(
                    "pair {i} has token id {id}, outside this model's vocabulary of {} ids; the ids come from another tokenizer",
                    space.vocab_size
                )));
            }
        }
        let total = pairs.iter().map(|p| p.as_ref().len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut types = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(pairs.len() + 1);
        for p in pairs {
            let p = p.as_ref();
            offsets.push(ids.len());
            ids.extend_from_slice(p);
            positions.extend((0..p.len() as u32).map(|i| space.position_offset + i));
            space.types_of(p, &mut types);
        }
        offsets.push(ids.len());
        Ok(Self {
            ids,
            positions,
            types,
            offsets,
        })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the batch holds no pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start and length of pair `i` in [`Self::ids`].
    pub fn pair(&self, i: usize) -> (usize, usize) {
        (self.offsets[i], self.offsets[i + 1] - self.offsets[i])
    }
}

/// One forward pass over a flat batch of pairs (token ids with special
/// tokens), returning one raw logit per pair, in order. Synchronous: the
/// scheduler calls it from its own thread. [`crate::Reranker`] implements it;
/// tests use fakes.
pub trait Backend: Send + Sync + 'static {
    fn predict(&self, pairs: &[&[u32]]) -> Result<Vec<f32>>;
}

/// Refuses what a backend must never hand on: a logit count that does not
/// match the pairs, or a logit that is not finite (a NaN would rank first and
/// be written as `null`).
pub fn check_logits(logits: &[f32], pairs: usize) -> Result<()> {
    if logits.len() != pairs {
        return Err(Error::BadOutput(format!(
            "the model returned {} logits for {pairs} pairs",
            logits.len()
        )));
    }
    if let Some(i) = logits.iter().position(|l| !l.is_finite()) {
        return Err(Error::BadOutput(format!(
            "the model produced a non-finite logit ({}) for pair {i} of {pairs}; the weights may be corrupt (re-download the model) or the dtype may overflow (try --dtype f32)",
            logits[i]
        )));
    }
    Ok(())
}

/// Limits of one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBudget {
    /// Most pairs per forward pass.
    pub max_pairs: usize,
    /// Most padded tokens (pairs × longest pair) per forward pass; a single
    /// pair longer than this still runs, alone.
    pub max_tokens: usize,
}

impl BatchBudget {
    /// Whether `pairs` pairs whose longest has `longest` tokens fit.
    pub fn fits(&self, pairs: usize, longest: usize) -> bool {
        pairs <= self.max_pairs.max(1) && pairs * longest <= self.max_tokens
    }

    /// The next batch from waiting pairs given as `(length, age)`: the oldest
    /// pair (smallest age) first, so that no pair waits forever, then the
    /// pairs closest to it in length (oldest first among equals) while the
    /// batch [`fits`](Self::fits). Returns indices into `waiting`; the oldest
    /// pair is always taken, alone if it is over the budget by itself.
    pub fn pick(&self, waiting: &[(usize, u64)]) -> Vec<usize> {
        let Some(anchor) = (0..waiting.len()).min_by_key(|&i| (waiting[i].1, i)) else {
            return Vec::new();
        };
        let anchor_len = waiting[anchor].0;
        let mut others: Vec<usize> = (0..waiting.len()).filter(|&i| i != anchor).collect();
        others.sort_by_key(|&i| (waiting[i].0.abs_diff(anchor_len), waiting[i].1, i));
        let mut picked = vec![anchor];
        let mut longest = anchor_len;
        for i in others {
            if picked.len() >= self.max_pairs.max(1) {
                break;
            }
            let new_longest = longest.max(waiting[i].0);
            if self.fits(picked.len() + 1, new_longest) {
                picked.push(i);
                longest = new_longest;
            }
        }
        picked
    }

    /// Every batch for a set of pairs known at once (`lens[i]`: pair i's
    /// length): the same rule as [`pick`](Self::pick) with the longest pair as
    /// the oldest, which reduces to sorting by length (longest first, ties in
    /// input order) and cutting where the next pair no longer fits. Linear
    /// after the sort, where repeated `pick`s would be quadratic.
    pub fn plan(&self, lens: &[usize]) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        let mut batches = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        for i in order {
            // Sorted descending: the first pair of a batch is its longest.
            let longest = current.first().map_or(lens[i], |&f| lens[f]);
            if !current.is_empty() && !self.fits(current.len() + 1, longest) {
                batches.push(std::mem::take(&mut current));
            }
            current.push(i);
        }
        if !current.is_empty() {
            batches.push(current);
        }
        batches
    }
}

/// What users get from a logit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoreTransform {
    /// `sigmoid(logit)`, a score in (0, 1): the reference tools' default
    /// (`normalize=True`, sentence-transformers' `Sigmoid` activation).
    #[default]
    Sigmoid,
    /// The raw logit.
    Raw,
}

impl ScoreTransform {
    /// [`Self::Raw`] when `raw` is set.
    pub fn raw_if(raw: bool) -> Self {
        if raw {
            Self::Raw
        } else {
            Self::Sigmoid
        }
    }

    /// The score of one logit.
    pub fn apply(self, logit: f32) -> f32 {
        match self {
            Self::Sigmoid => sigmoid(logit),
            Self::Raw => logit,
        }
    }

    /// The scores of many logits, in place.
    pub fn apply_all(self, mut logits: Vec<f32>) -> Vec<f32> {
        if self == Self::Sigmoid {
            logits.iter_mut().for_each(|x| *x = sigmoid(*x));
        }
        logits
    }
}

/// The logistic function that turns a logit into a score in (0, 1).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One ranked passage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Position of the passage in the input.
    pub index: usize,
    pub score: f32,
}

/// Indices sorted by score, best first, ties in input order, cut to `top_k`.
pub fn rank_scores(scores: &[f32], top_k: Option<usize>) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| Ranked { index, score })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked.truncate(top_k.unwrap_or(usize::MAX));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPACE: TokenSpace = TokenSpace {
        position_offset: 2,
        vocab_size: 10,
        max_tokens: 6,
        passage_types: None,
    };

    #[test]
    fn a_packed_batch_lays_pairs_end_to_end_with_roberta_positions() {
        let b = PackedBatch::new(&[vec![0u32, 5, 2], vec![0, 2]], &SPACE).unwrap();
        assert_eq!(b.ids, [0, 5, 2, 0, 2]);
        assert_eq!(b.positions, [2, 3, 4, 2, 3]);
        assert_eq!(b.types, [0; 5]);
        assert_eq!(b.offsets, [0, 3, 5]);
        assert_eq!((b.len(), b.pair(1)), (2, (3, 2)));
    }

    #[test]
    fn bert_positions_start_at_0_and_the_passage_has_type_1() {
        // [CLS]=1 q [SEP]=2 p [SEP]=2; the query holds no separator.
        let space = TokenSpace {
            position_offset: 0,
            passage_types: Some(SegmentRule {
                prefix_len: 1,
                separator: vec![2],
            }),
            ..SPACE
        };
        let b = PackedBatch::new(&[vec![1u32, 5, 2, 6, 7, 2], vec![1, 2, 2]], &space).unwrap();
        assert_eq!(b.positions, [0, 1, 2, 3, 4, 5, 0, 1, 2]);
        assert_eq!(b.types, [0, 0, 0, 1, 1, 1, 0, 0, 1]);
    }

    #[test]
    fn a_packed_batch_refuses_empty_pairs_unknown_ids_and_overlong_pairs() {
        let empty = PackedBatch::new(&[vec![0u32, 2], vec![]], &SPACE).unwrap_err();
        assert!(matches!(&empty, Error::InvalidBatch(m) if m.contains("pair 1 has no tokens")));
        let unknown = PackedBatch::new(&[vec![0u32, 10, 2]], &SPACE).unwrap_err();
        assert!(
            matches!(&unknown, Error::InvalidBatch(m) if m.contains("token id 10")),
            "{unknown}"
        );
        let long = PackedBatch::new(&[vec![0u32; 7]], &SPACE).unwrap_err();
        assert!(matches!(
            long,
            Error::MaxLengthTooLarge {
                requested: 7,
                limit: 6
            }
        ));
    }

    #[test]
    fn non_finite_or_missing_logits_are_refused() {
        assert!(check_logits(&[0.5, -3.0], 2).is_ok());
        for bad in [f32::NAN, f32::INFINITY] {
            let e = check_logits(&[0.5, bad], 2).unwrap_err();
            assert!(
                matches!(&e, Error::BadOutput(m) if m.contains("pair 1")),
                "{e}"
            );
        }
        assert!(matches!(check_logits(&[0.5], 2), Err(Error::BadOutput(_))));
    }

    #[test]
    fn pick_takes_the_oldest_then_similar_lengths_under_the_budget() {
        // (len, age)
        let waiting = [(10, 5), (3, 1), (4, 2), (30, 3), (3, 4)];
        let budget = |max_tokens, max_pairs| BatchBudget {
            max_pairs,
            max_tokens,
        };
        // Anchor: age 1 (len 3); then len 3 and 4: 3 × 4 = 12 tokens.
        assert_eq!(budget(12, 8).pick(&waiting), vec![1, 4, 2]);
        assert_eq!(budget(1000, 2).pick(&waiting), vec![1, 4]);
        // An anchor over the budget goes alone.
        assert_eq!(budget(10, 8).pick(&[(50, 0), (1, 1)]), vec![0]);
        assert!(budget(10, 8).pick(&[]).is_empty());
    }

    #[test]
    fn plan_is_pick_with_the_longest_pair_as_the_oldest() {
        let mut rng = crate::synthetic::SplitMix64(3);
        for round in 0..200 {
            let n = 1 + rng.below(40);
            let lens: Vec<usize> = (0..n).map(|_| 1 + rng.below(60)).collect();
            let budget = BatchBudget {
                max_pairs: 1 + rng.below(10),
                max_tokens: 1 + rng.below(200),
            };
            // Age = rank in (longest first, input order).
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
            let mut age = vec![0u64; n];
            for (rank, &i) in order.iter().enumerate() {
                age[i] = rank as u64;
            }
            let mut left: Vec<usize> = (0..n).collect();
            let mut picked = Vec::new();
            while !left.is_empty() {
                let waiting: Vec<(usize, u64)> = left.iter().map(|&i| (lens[i], age[i])).collect();
                let mut batch: Vec<usize> =
                    budget.pick(&waiting).into_iter().map(|k| left[k]).collect();
                left.retain(|i| !batch.contains(i));
                batch.sort_by_key(|&i| age[i]);
                picked.push(batch);
            }
            assert_eq!(
                budget.plan(&lens),
                picked,
                "round {round}: {lens:?} {budget:?}"
            );
        }
    }

    #[test]
    fn plan_respects_both_limits_and_sends_an_overlong_pair_alone() {
        let budget = BatchBudget {
            max_pairs: 2,
            max_tokens: 20,
        };
        assert_eq!(
            budget.plan(&[5, 30, 9, 9, 4]),
            vec![vec![1], vec![2, 3], vec![0, 4]]
        );
    }

    #[test]
    fn scores_are_sigmoid_or_raw_and_rank_best_first_with_stable_ties() {
        assert_eq!(ScoreTransform::Raw.apply(2.5), 2.5);
        assert!((ScoreTransform::Sigmoid.apply(0.0) - 0.5).abs() < 1e-7);
        assert_eq!(
            ScoreTransform::raw_if(false).apply_all(vec![0.0]),
            vec![0.5]
        );
        let ranked = rank_scores(&[0.1, 0.9, 0.1, 0.5], Some(3));
        let order: Vec<usize> = ranked.iter().map(|r| r.index).collect();
        assert_eq!(order, [1, 3, 0]);
    }
}
