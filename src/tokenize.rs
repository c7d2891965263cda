//! Pair encoding with the checkpoint's own pair template (`<s> q </s></s> p </s>`
//! for XLM-R, `[CLS] q [SEP] p [SEP]` for BERT) and the truncation strategies
//! of the reference tools.
//!
//! Query and passage are tokenized separately without special tokens (exactly
//! what the `tokenizers` library does inside a pair encoding), truncated here,
//! then joined with the template that `tokenizer.json`'s post-processor adds
//! (read once, by encoding a probe pair: see [`PairTemplate`]). Doing the
//! truncation on id vectors lets one `Tokenizer` serve every strategy and
//! direction, and lets a query shared by many passages be tokenized once.

use std::path::Path;

use rayon::prelude::*;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Special tokens XLM-R's template adds to every pair: `<s>`, `</s></s>`
/// between, `</s>` at the end (the synthetic benchmark models' tokenizer);
/// a loaded model's count is [`PairTemplate::special_tokens`].
pub const SPECIAL_TOKENS_PER_PAIR: usize = 4;

/// The special tokens the post-processor of `tokenizer.json` puts before,
/// between and after the two texts of a pair, and their token types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairTemplate {
    pub prefix: Vec<u32>,
    pub middle: Vec<u32>,
    pub suffix: Vec<u32>,
    /// Whether the passage and the suffix have token type 1 (BERT's template;
    /// everything before has type 0). Otherwise every token has type 0.
    pub typed_passage: bool,
}

impl PairTemplate {
    /// Special tokens per pair.
    pub fn special_tokens(&self) -> usize {
        self.prefix.len() + self.middle.len() + self.suffix.len()
    }

    /// Reads the template by encoding the probe pair ("a", "b") with and
    /// without special tokens.
    fn of(tokenizer: &Tokenizer, origin: &Path) -> Result<Self> {
        let unsupported = |why: String| Error::UnsupportedModel {
            path: origin.to_path_buf(),
            found: format!("a tokenizer whose pair template cannot be read ({why})"),
            supported: crate::config::SUPPORTED,
        };
        let plain = |t: &str| -> Result<Vec<u32>> {
            Ok(tokenizer
                .encode_fast(t, false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec())
        };
        let (a, b) = (plain("a")?, plain("b")?);
        let pair = tokenizer
            .encode_fast(("a", "b"), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let (ids, types) = (pair.get_ids(), pair.get_type_ids());
        let find = |needle: &[u32], from: usize| {
            (from..=ids.len().saturating_sub(needle.len()))
                .find(|&i| !needle.is_empty() && ids[i..i + needle.len()] == *needle)
        };
        let i = find(&a, 0).ok_or_else(|| unsupported("the query is not in the pair".into()))?;
        let j = find(&b, i + a.len())
            .ok_or_else(|| unsupported("the passage is not in the pair".into()))?;
        let second = j;
        if types[..second].iter().any(|&t| t != 0) {
            return Err(unsupported(format!(
                "token types {types:?} before the passage"
            )));
        }
        let passage_type = types[second];
        if passage_type > 1 || types[second..].iter().any(|&t| t != passage_type) {
            return Err(unsupported(format!("token types {types:?}")));
        }
        Ok(Self {
            prefix: ids[..i].to_vec(),
            middle: ids[i + a.len()..j].to_vec(),
            suffix: ids[j + b.len()..].to_vec(),
            typed_passage: passage_type == 1,
        })
    }
}

/// How a pair longer than `max_length` is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Cut the longer text first, as sentence-transformers and
    /// text-embeddings-inference do (the `tokenizers` `longest_first` rule).
    #[default]
    LongestFirst,
    /// FlagEmbedding's FlagReranker: the query is cut to `query_max_length`,
    /// then only the passage is cut.
    OnlySecond,
}

impl std::str::FromStr for Truncation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.replace('_', "-").as_str() {
            "longest-first" => Ok(Self::LongestFirst),
            "only-second" => Ok(Self::OnlySecond),
            _ => Err(Error::InvalidOption(format!(
                "unknown truncation {s:?}; use longest-first or only-second"
            ))),
        }
    }
}

/// Which end of a text loses tokens when it is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Side {
    /// Keep the beginning (the default everywhere).
    #[default]
    Right,
    /// Keep the end.
    Left,
}

/// Each token's byte span `(start, end)` in its text.
pub type Offsets = Vec<(usize, usize)>;

/// A pair ready for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    /// Token ids with the special tokens.
    pub ids: Vec<u32>,
    /// Length the pair would have had without truncation.
    pub untruncated_len: usize,
}

impl AsRef<[u32]> for EncodedPair {
    fn as_ref(&self) -> &[u32] {
        &self.ids
    }
}

impl EncodedPair {
    /// Whether truncation removed tokens.
    pub fn truncated(&self) -> bool {
        self.untruncated_len > self.ids.len()
    }
}

/// Truncation settings, validated against the model by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncationParams {
    /// Most tokens per pair, special tokens included.
    pub max_length: usize,
    pub strategy: Truncation,
    /// For [`Truncation::OnlySecond`]: most query tokens (specials excluded).
    pub query_max_length: usize,
    pub side: Side,
}

/// Tokenizer plus the pair template.
pub struct PairEncoder {
    tokenizer: Tokenizer,
    template: PairTemplate,
}

impl PairEncoder {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                hint: "the fast tokenizer file is required; download the model again or copy tokenizer.json from its hub repository".into(),
            });
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_tokenizer(tokenizer, path)
    }

    /// Wraps a tokenizer; `origin` names it in errors.
    pub fn from_tokenizer(mut tokenizer: Tokenizer, origin: &Path) -> Result<Self> {
        // Settings saved in the file must not interfere with ours.
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let template = PairTemplate::of(&tokenizer, origin)?;
        Ok(Self {
            tokenizer,
            template,
        })
    }

    /// The special tokens of a pair, as the checkpoint's post-processor adds them.
    pub fn template(&self) -> &PairTemplate {
        &self.template
    }

    /// Number of entries in the vocabulary (with added tokens).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of one text, without special tokens.
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of one text with each token's byte span in it (the same
    /// ids as [`PairEncoder::text_ids`]).
    pub fn text_ids_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Offsets)> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Truncates and joins already tokenized texts, as [`PairEncoder::encode`] does.
    pub fn join_ids(&self, query: &[u32], passage: &[u32], t: &TruncationParams) -> EncodedPair {
        self.join(query, passage, t)
    }

    /// Encodes one pair.
    pub fn encode(&self, query: &str, passage: &str, t: &TruncationParams) -> Result<EncodedPair> {
        let q = self.text_ids(query)?;
        let p = self.text_ids(passage)?;
        Ok(self.join(&q, &p, t))
    }

    /// Encodes one query against many passages; the query is tokenized once
    /// and the passages in parallel.
    pub fn encode_passages<S: AsRef<str> + Sync>(
        &self,
        query: &str,
        passages: &[S],
        t: &TruncationParams,
    ) -> Result<Vec<EncodedPair>> {
        let q = self.text_ids(query)?;
        passages
            .par_iter()
            .map(|p| Ok(self.join(&q, &self.text_ids(p.as_ref())?, t)))
            .collect()
    }

    /// Encodes many independent pairs in parallel.
    pub fn encode_pairs<Q, P>(
        &self,
        pairs: &[(Q, P)],
        t: &TruncationParams,
    ) -> Result<Vec<EncodedPair>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        pairs
            .par_iter()
            .map(|(q, p)| self.encode(q.as_ref(), p.as_ref(), t))
            .collect()
    }

    /// Truncates the two id lists and joins them with the template
    /// (`<s> q </s></s> p </s>`, `[CLS] q [SEP] p [SEP]`).
    fn join(&self, q: &[u32], p: &[u32], t: &TruncationParams) -> EncodedPair {
        let tpl = &self.template;
        let specials = tpl.special_tokens();
        let untruncated_len = q.len() + p.len() + specials;
        let budget = t.max_length.saturating_sub(specials);
        let (nq, np) = match t.strategy {
            Truncation::LongestFirst => longest_first(q.len(), p.len(), budget),
            Truncation::OnlySecond => {
                // FlagReranker: query cut to query_max_length, passage to
                // max_length, then the passage again so the pair fits.
                let nq = q.len().min(t.query_max_length);
                let np = p.len().min(t.max_length).min(budget.saturating_sub(nq));
                (nq, np)
            }
        };
        let mut ids = Vec::with_capacity(nq + np + specials);
        ids.extend_from_slice(&tpl.prefix);
        ids.extend_from_slice(cut(q, nq, t.side));
        ids.extend_from_slice(&tpl.middle);
        ids.extend_from_slice(cut(p, np, t.side));
        ids.extend_from_slice(&tpl.suffix);
        EncodedPair {
            ids,
            untruncated_len,
        }
    }
}

fn cut(ids: &[u32], n: usize, side: Side) -> &[u32] {
    let n = n.min(ids.len());
    match side {
        Side::Right => &ids[..n],
        Side::Left => &ids[ids.len() - n..],
    }
}

/// Lengths kept by the `tokenizers` library's `LongestFirst` rule
/// (`utils/truncation.rs`, `truncate_encodings`), which Python's fast
/// tokenizers and therefore sentence-transformers use. `budget` excludes the
/// special tokens.
pub fn longest_first(n_query: usize, n_passage: usize, budget: usize) -> (usize, usize) {
    if n_query + n_passage <= budget {
        return (n_query, n_passage);
    }
    let swap = n_query > n_passage;
    // n1 is the shorter one. Only the longer is cut while it can absorb the excess.
    let mut n1 = n_query.min(n_passage);
    let mut n2 = if n1 > budget { n1 } else { n1.max(budget - n1) };
    if n1 + n2 > budget {
        n1 = budget / 2;
        n2 = n1 + budget % 2;
    }
    if swap {
        (n2, n1)
    } else {
        (n1, n2)
    }
}

#[cfg(test)]
mod tests {
    use super::longest_first;

    #[test]
    fn longest_first_cuts_the_longer_text_then_both() {
        assert_eq!(longest_first(3, 4, 10), (3, 4));
        assert_eq!(longest_first(3, 20, 10), (3, 7));
        assert_eq!(longest_first(20, 3, 10), (7, 3));
        assert_eq!(longest_first(8, 9, 10), (5, 5));
        assert_eq!(longest_first(8, 9, 11), (5, 6));
        assert_eq!(longest_first(9, 8, 11), (6, 5));
    }
}
