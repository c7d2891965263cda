//! Long documents: a passage whose pair would exceed `max_length` is cut into
//! overlapping windows on token boundaries, each window is scored with the
//! query, and the passage's score is the best window's (Cohere's rerank
//! semantics: `max_chunks_per_doc`).
//!
//! A pair that fits is encoded exactly as without chunking (one window, the
//! same ids), so short inputs score bit-identically. The passage is
//! tokenized once, with byte offsets; a window ends, where it can, after a
//! token that closes a sentence, so windows rarely split one. At most
//! `max_chunks` windows are made: work and memory per passage are bounded
//! whatever its length (a 1 MB passage makes `max_chunks` pairs).

use std::ops::Range;

use crate::error::{Error, Result};
use crate::tokenize::{EncodedPair, PairEncoder, Truncation, TruncationParams};

/// Default most windows per passage (Cohere's `max_chunks_per_doc` default).
pub const DEFAULT_MAX_CHUNKS: usize = 10;
/// Default tokens two neighbouring windows share.
pub const DEFAULT_OVERLAP: usize = 32;

/// How passages longer than the pair budget are windowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// Passage tokens per window. `None`: what `max_length` leaves after the
    /// query and the special tokens. A larger value is lowered to that, so a
    /// window is never truncated.
    pub chunk_tokens: Option<usize>,
    /// Tokens shared by neighbouring windows; at most half a window is used.
    pub overlap: usize,
    /// Most windows per passage; the rest of a longer passage is not scored.
    pub max_chunks: usize,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self {
            chunk_tokens: None,
            overlap: DEFAULT_OVERLAP,
            max_chunks: DEFAULT_MAX_CHUNKS,
        }
    }
}

impl ChunkParams {
    /// Rejects settings that cannot make a window.
    pub fn check(&self) -> Result<()> {
        if self.max_chunks == 0 {
            return Err(Error::InvalidOption(
                "max_chunks_per_doc must be at least 1".into(),
            ));
        }
        if self.chunk_tokens == Some(0) {
            return Err(Error::InvalidOption(
                "chunk_tokens must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// How long passages are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongDocuments {
    /// Cut the pair to `max_length` (the reference tools' behaviour).
    #[default]
    Truncate,
    /// Score windows of the passage and keep the best.
    Chunk,
}

impl std::str::FromStr for LongDocuments {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "truncate" => Ok(Self::Truncate),
            "chunk" => Ok(Self::Chunk),
            _ => Err(Error::InvalidOption(format!(
                "unknown long-documents mode {s:?}; use truncate or chunk"
            ))),
        }
    }
}

/// A passage as the pairs the model scores: one window when it fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    pub windows: Vec<EncodedPair>,
    /// Each window's span in the passage, in characters (Unicode scalar
    /// values), end exclusive.
    pub spans: Vec<Range<usize>>,
}

impl Chunked {
    /// A passage scored whole, as one pair.
    pub fn whole(pair: EncodedPair, passage: &str) -> Self {
        let span = 0..passage.chars().count();
        Self {
            windows: vec![pair],
            spans: vec![span],
        }
    }

    /// Whether the passage was split (more than one window).
    pub fn is_split(&self) -> bool {
        self.windows.len() > 1
    }
}

/// Which window won and where it is in the passage (characters).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// The window's number, from 0.
    pub index: usize,
    /// Windows the passage was scored in.
    pub count: usize,
    /// First character of the window in the passage.
    pub start: usize,
    /// One past its last character.
    pub end: usize,
}

/// The best of a passage's window logits: its index and value (the first on ties).
pub fn best_window(logits: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > best.1 {
            best = (i, l);
        }
    }
    best
}

/// Whether the text a token covers ends a sentence.
fn ends_sentence(text: &str, (start, end): (usize, usize)) -> bool {
    let piece = text.get(start..end).unwrap_or("");
    let after = text.get(end..).and_then(|s| s.chars().next());
    piece
        .trim_end()
        .ends_with(['.', '!', '?', '。', '！', '？', '…', ';', '；'])
        || matches!(after, Some('\n'))
}

/// Token ranges of the windows of a passage of `n` tokens (`offsets` are
/// its tokens' byte spans in `text`), each at most `w` tokens.
pub fn window_ranges(
    n: usize,
    offsets: &[(usize, usize)],
    text: &str,
    w: usize,
    params: &ChunkParams,
) -> Vec<Range<usize>> {
    let w = w.max(1);
    let overlap = params.overlap.min(w / 2);
    let mut out = Vec::new();
    let mut start = 0;
    while out.len() < params.max_chunks {
        let mut end = (start + w).min(n);
        if end < n {
            // The last sentence end in the second half of the window, if any.
            if let Some(i) = (start + w / 2..end)
                .rev()
                .find(|&i| offsets.get(i).is_some_and(|&o| ends_sentence(text, o)))
            {
                end = i + 1;
            }
        }
        out.push(start..end);
        if end >= n {
            break;
        }
        start = end.saturating_sub(overlap).max(start + 1);
    }
    out
}

/// Byte offset → character offset.
fn char_index(text: &str, byte: usize) -> usize {
    let byte = byte.min(text.len());
    // Offsets from the tokenizer are on char boundaries; round down if not.
    let mut b = byte;
    while !text.is_char_boundary(b) {
        b -= 1;
    }
    text[..b].chars().count()
}

impl PairEncoder {
    /// Encodes one passage against an already tokenized query: one pair,
    /// identical to [`PairEncoder::encode`]'s, when it fits `t.max_length`;
    /// else the windows of [`window_ranges`]. `max_passage_tokens` first cuts
    /// the passage to its first tokens (Cohere's `max_tokens_per_doc`).
    pub fn encode_chunked(
        &self,
        query_ids: &[u32],
        passage: &str,
        t: &TruncationParams,
        params: &ChunkParams,
        max_passage_tokens: Option<usize>,
    ) -> Result<Chunked> {
        params.check()?;
        let (mut ids, mut offsets) = self.text_ids_with_offsets(passage)?;
        if let Some(cap) = max_passage_tokens {
            ids.truncate(cap);
            offsets.truncate(cap);
        }
        let specials = self.template().special_tokens();
        let budget = t.max_length.saturating_sub(specials);
        let n = ids.len();
        let whole_span = |offsets: &[(usize, usize)]| {
            let end = offsets.last().map_or(passage.len(), |o| o.1);
            0..char_index(passage, end)
        };
        if query_ids.len() + n <= budget {
            return Ok(Chunked {
                windows: vec![self.join_ids(query_ids, &ids, t)],
                spans: vec![whole_span(&offsets)],
            });
        }
        // What a window may hold so that the pair is never truncated.
        let room = match t.strategy {
            // Longest-first cuts the query to half the budget at most.
            Truncation::LongestFirst => budget - query_ids.len().min(budget / 2),
            Truncation::OnlySecond => budget - query_ids.len().min(t.query_max_length),
        };
        let w = params.chunk_tokens.map_or(room, |c| c.min(room)).max(1);
        let ranges = window_ranges(n, &offsets, passage, w, params);
        let mut windows = Vec::with_capacity(ranges.len());
        let mut spans = Vec::with_capacity(ranges.len());
        for r in ranges {
            windows.push(self.join_ids(query_ids, &ids[r.clone()], t));
            let start = offsets.get(r.start).map_or(0, |o| o.0);
            let end = offsets.get(r.end - 1).map_or(start, |o| o.1);
            spans.push(char_index(passage, start)..char_index(passage, end));
        }
        Ok(Chunked { windows, spans })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_passage_with_overlap_and_a_cap() {
        let text = "x".repeat(100);
        let offsets: Vec<(usize, usize)> = (0..100).map(|i| (i, i + 1)).collect();
        let p = ChunkParams {
            chunk_tokens: None,
            overlap: 4,
            max_chunks: 100,
        };
        let r = window_ranges(100, &offsets, &text, 30, &p);
        assert_eq!(r, vec![0..30, 26..56, 52..82, 78..100]);
        let capped = window_ranges(
            100,
            &offsets,
            &text,
            30,
            &ChunkParams { max_chunks: 2, ..p },
        );
        assert_eq!(capped, vec![0..30, 26..56]);
        // Overlap is at most half a window, so windows always advance.
        let r = window_ranges(10, &offsets, &text, 4, &ChunkParams { overlap: 9, ..p });
        assert_eq!(r, vec![0..4, 2..6, 4..8, 6..10]);
    }

    #[test]
    fn windows_end_at_sentence_ends_when_they_can() {
        // Tokens: words of 2 chars with a space; token 11 ends with '.'.
        let text = "aa aa aa aa aa aa aa aa aa aa aa a. aa aa aa aa aa aa aa aa";
        let offsets: Vec<(usize, usize)> = (0..20).map(|i| (3 * i, 3 * i + 2)).collect();
        let p = ChunkParams {
            chunk_tokens: None,
            overlap: 0,
            max_chunks: 10,
        };
        assert_eq!(
            window_ranges(20, &offsets, text, 16, &p),
            vec![0..12, 12..20]
        );
        // A sentence end in the first half of a window is not used.
        assert_eq!(window_ranges(20, &offsets, text, 30, &p), vec![0..20]);
        assert_eq!(window_ranges(20, &offsets, text, 8, &p)[0], 0..8);
    }

    #[test]
    fn best_window_takes_the_first_maximum() {
        assert_eq!(best_window(&[0.1, 0.7, 0.7, -1.0]), (1, 0.7));
        assert_eq!(best_window(&[-3.0]), (0, -3.0));
    }
}
