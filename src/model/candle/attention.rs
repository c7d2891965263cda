//! Which pairs of a batch go through attention together, planned once per
//! forward pass: pairs attended alone, or short pairs padded to the longest
//! with masked keys.

use candle_core::{DType, Device, Tensor};

use crate::backend::PackedBatch;

/// Most attention-score elements (heads × query rows × keys) held at once:
/// 32 Mi elements = 128 MiB in f32. Long pairs are processed in blocks of
/// query rows so an 8192-token pair never materializes all heads'
/// 8192×8192 score matrices (16 × 256 MiB).
pub(super) const ATTENTION_BLOCK_ELEMENTS: usize = 32 << 20;

/// Pairs up to this many tokens have their attention computed together,
/// padded to the longest (see [`AttentionPlan`]); longer pairs one by one.
/// On a GPU the padded path is bound by fewer launches for short pairs, but
/// its gather, masked broadcast add and unpad copies grow with len² and lose
/// for long ones (measured on an H200: see BENCHMARKS.md).
const PADDED_ATTENTION_MAX_LEN: usize = 256;

/// Row index of each pair's `<s>` token in a packed batch.
pub(super) fn first_rows(batch: &PackedBatch, device: &Device) -> candle_core::Result<Tensor> {
    let firsts: Vec<u32> = batch.offsets[..batch.len()]
        .iter()
        .map(|&o| o as u32)
        .collect();
    Tensor::new(firsts.as_slice(), device)
}

/// Which pairs of a batch go through attention together: the same in every
/// layer, so the groups and their index and mask tensors are built (and
/// uploaded to the device) once per forward pass, not once per layer.
pub(super) struct AttentionPlan {
    pub(super) groups: Vec<Group>,
    /// Only each pair's `<s>` row is computed (the last layer).
    pub(super) first_only: bool,
}

pub(super) enum Group {
    /// Pair `i` of the batch, attended alone.
    Alone(usize),
    /// Consecutive pairs padded to the longest (`Layer::attention_padded`).
    Padded(Padded),
}

pub(super) struct Padded {
    pub(super) pairs: usize,
    pub(super) longest: usize,
    /// Row p·longest + t is token t of pair p; padding repeats the pair's
    /// first token.
    pub(super) gather: Tensor,
    /// (1, pairs, 1, longest): 0 for real keys, -inf for padding.
    pub(super) mask: Tensor,
    /// The real rows of the padded context, when some pair is shorter (and
    /// every row is computed).
    pub(super) keep: Option<Tensor>,
}

impl AttentionPlan {
    /// Groups consecutive pairs of up to [`PADDED_ATTENTION_MAX_LEN`] tokens
    /// as long as their padded scores fit one block of
    /// [`ATTENTION_BLOCK_ELEMENTS`]; every other pair goes alone.
    pub(super) fn new(
        batch: &PackedBatch,
        heads: usize,
        first_only: bool,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let rows = |len: usize| if first_only { 1 } else { len };
        let mut groups = Vec::new();
        let mut i = 0;
        while i < batch.len() {
            let mut longest = batch.pair(i).1;
            let mut end = i + 1;
            while end < batch.len() {
                let l = longest.max(batch.pair(end).1);
                if l > PADDED_ATTENTION_MAX_LEN
                    || (end + 1 - i) * heads * rows(l) * l > ATTENTION_BLOCK_ELEMENTS
                {
                    break;
                }
                longest = l;
                end += 1;
            }
            groups.push(if end - i == 1 {
                Group::Alone(i)
            } else {
                let rows = i..end;
                Group::Padded(Padded::new(
                    batch, rows, longest, first_only, dtype, device,
                )?)
            });
            i = end;
        }
        Ok(Self { groups, first_only })
    }
}

impl Padded {
    fn new(
        batch: &PackedBatch,
        pairs: std::ops::Range<usize>,
        longest: usize,
        first_only: bool,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let spans: Vec<(usize, usize)> = pairs.map(|i| batch.pair(i)).collect();
        let n = spans.len();
        let mut gather = Vec::with_capacity(n * longest);
        let mut mask = Vec::with_capacity(n * longest);
        for &(start, len) in &spans {
            for t in 0..longest {
                gather.push((start + if t < len { t } else { 0 }) as u32);
                mask.push(if t < len { 0f32 } else { f32::NEG_INFINITY });
            }
        }
        let keep = if first_only || spans.iter().all(|&(_, len)| len == longest) {
            None
        } else {
            let keep: Vec<u32> = spans
                .iter()
                .enumerate()
                .flat_map(|(p, &(_, len))| (0..len).map(move |t| (p * longest + t) as u32))
                .collect();
            Some(Tensor::new(keep.as_slice(), device)?)
        };
        Ok(Self {
            pairs: n,
            longest,
            gather: Tensor::new(gather.as_slice(), device)?,
            mask: Tensor::from_vec(mask, (1, n, 1, longest), device)?.to_dtype(dtype)?,
            keep,
        })
    }
}
