//! Self-attention of the CPU model, per (pair, head) in parallel,
//! flash-attention style: tiles of query rows × keys with an online softmax
//! across key tiles, so an 8192-token pair needs a few hundred KiB of scores
//! per thread instead of 4 GiB. Each head's context is written straight into
//! its columns of the context buffer: no permute or concat copies.
//!
//! Q·Kᵀ and P·V run in f32 (`gemm`) or, for bf16 and int8 models where it
//! is faster (`plan.rs`), in bf16 with f32 accumulation ([`kernels::bf16`])
//! or in 16-bit integers with exact i32 sums ([`kernels::i16`], int8 models
//! without a fast bf16 kernel): each head's keys and values are quantized
//! (rounded) and packed once per key block, straight from the Q/K/V buffer;
//! the scale, the softmax and the running sums stay f32.

use gemm::Parallelism;
use rayon::prelude::*;

use super::plan::AttentionKernel;
use crate::backend::PackedBatch;
use crate::model::kernels::bf16::{self, PackedBf16};
use crate::model::kernels::i16::{self, I16Kernel, PackedI16, QuantRows16};
use crate::model::kernels::{self, SharedMut};

/// Query rows × keys per attention tile: 128 × 512 scores = 256 KiB, half a
/// core's L2 on the machines measured, so scores are written, exponentiated
/// and read back from cache; longer pairs go through several key tiles with
/// an online softmax, so memory does not grow with len².
const ROW_BLOCK: usize = 128;
const KEY_BLOCK: usize = 512;

/// Self-attention of every pair: `ctx` row r (or, with `first_only`,
/// row i = pair i's `<s>`) gets softmax(q·kᵀ/√d)·v for every head; its two
/// products in f32, or with `fast = Some((kernel, min_len))` in bf16 or
/// int16 on `kernel` for pairs of at least `min_len` tokens. The choice is
/// per pair, by its own length, so a pair scores the same alone and in any batch.
pub(super) fn attention(
    qkv: &[f32],
    ctx: &mut [f32],
    batch: &PackedBatch,
    (hidden, heads): (usize, usize),
    first_only: bool,
    fast: Option<(AttentionKernel, usize)>,
) {
    let h = hidden;
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    assert!(qkv.len() >= batch.ids.len() * 3 * h);
    let out_rows = if first_only {
        batch.len()
    } else {
        batch.ids.len()
    };
    assert!(ctx.len() >= out_rows * h);
    let out = SharedMut(ctx.as_mut_ptr());
    let tasks: Vec<(usize, usize)> = (0..batch.len())
        .flat_map(|pair| (0..heads).map(move |head| (pair, head)))
        .collect();
    // Per thread: this head's K and V made contiguous (len × d) for f32, or
    // packed for bf16 or int16, and a score block.
    let init = || {
        let packed = (Bf16Scratch::default(), I16Scratch::default());
        (
            Vec::<f32>::new(),
            Vec::<f32>::new(),
            packed,
            Online::default(),
        )
    };
    tasks.into_par_iter().for_each_init(
        init,
        |(k, v, (bf16_scratch, i16_scratch), online), (pair, head)| {
            let start = batch.offsets[pair];
            let len = batch.offsets[pair + 1] - start;
            let rows = if first_only { 1 } else { len };
            let pair_qkv = &qkv[start * 3 * h..(start + len) * 3 * h];
            let out_row = if first_only { pair } else { start };
            let cols = (h + head * d, 2 * h + head * d);
            let q = (&pair_qkv[head * d..], 3 * h, rows, d, scale);
            // SAFETY (both fast branches): as in the f32 branch below: each
            // task writes only its own rows and its head's columns of `ctx`.
            let dst = unsafe { out.ptr().add(out_row * h + head * d) };
            match fast.filter(|&(_, min_len)| len >= min_len) {
                Some((AttentionKernel::Bf16(kernel), _)) => {
                    bf16_scratch.pack_head(pair_qkv, 3 * h, cols, d, KEY_BLOCK);
                    let packed = &mut (kernel, &mut *bf16_scratch);
                    // SAFETY: see above.
                    unsafe { head_attention_packed(packed, q, dst, h, online, ROW_BLOCK) };
                    return;
                }
                Some((AttentionKernel::Int16(kernel), _)) => {
                    i16_scratch.pack_head(pair_qkv, 3 * h, cols, d, KEY_BLOCK);
                    let packed = &mut (kernel, &mut *i16_scratch);
                    // SAFETY: see above.
                    unsafe { head_attention_packed(packed, q, dst, h, online, ROW_BLOCK) };
                    return;
                }
                None => {}
            }
            let scratch = &mut online.f32;
            // Gathering K and V once per head makes every block's matmul
            // read dense memory instead of 64 floats out of each 3H row.
            k.clear();
            v.clear();
            for (t, row) in pair_qkv.chunks_exact(3 * h).enumerate() {
                let ahead = (t + AHEAD) * 3 * h;
                kernels::prefetch_floats(pair_qkv, ahead + h + head * d, d);
                kernels::prefetch_floats(pair_qkv, ahead + 2 * h + head * d, d);
                k.extend_from_slice(&row[h + head * d..h + (head + 1) * d]);
                v.extend_from_slice(&row[2 * h + head * d..2 * h + (head + 1) * d]);
            }
            // SAFETY: Q rows 0..rows of this pair lie in `pair_qkv` (row
            // stride 3H); each task writes only its own rows and its
            // head's columns of `ctx` (asserted large enough above), so
            // writes never overlap.
            unsafe {
                head_attention(
                    HeadInput {
                        q: pair_qkv.as_ptr().add(head * d),
                        q_rs: 3 * h,
                        k,
                        v,
                        rows,
                        d,
                        scale,
                    },
                    dst,
                    h,
                    scratch,
                    (ROW_BLOCK, KEY_BLOCK),
                );
            }
        },
    );
}

/// Rows of the Q/K/V buffer ahead that attention's gathers prefetch.
const AHEAD: usize = 4;

/// One head of one pair, for [`head_attention`].
struct HeadInput<'a> {
    /// Query row 0, element 0; rows `q_rs` floats apart.
    q: *const f32,
    q_rs: usize,
    /// Keys and values, contiguous (len × d).
    k: &'a [f32],
    v: &'a [f32],
    /// Query rows to compute.
    rows: usize,
    d: usize,
    scale: f32,
}

/// Per-thread buffers of the attention.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    /// Per query row of a tile: running max, running sum, correction.
    stats: Vec<f32>,
}

/// softmax(scale · q kᵀ) v for `rows` query rows, written to `out` (row
/// stride `out_rs`), tile by tile: for each block of query rows, key blocks
/// in turn with an online softmax that rescales what earlier key blocks
/// added. With one key block this is the plain softmax.
///
/// # Safety
/// `input.q` must point to `rows` rows of `d` floats `q_rs` apart, and `out`
/// to `rows` rows of `d` writable floats `out_rs` apart that nobody else
/// touches meanwhile.
unsafe fn head_attention(
    input: HeadInput,
    out: *mut f32,
    out_rs: usize,
    scratch: &mut Scratch,
    (row_block, key_block): (usize, usize),
) {
    let HeadInput {
        q,
        q_rs,
        k,
        v,
        rows,
        d,
        scale,
    } = input;
    let len = k.len() / d;
    let mut r0 = 0;
    while r0 < rows {
        let n = row_block.min(rows - r0);
        let q = q.add(r0 * q_rs);
        let out = out.add(r0 * out_rs);
        scratch.stats.clear();
        scratch
            .stats
            .extend((0..n).flat_map(|_| [f32::NEG_INFINITY, 0.0, 0.0]));
        let mut c0 = 0;
        while c0 < len {
            let c = key_block.min(len - c0);
            scratch.scores.resize(n * c, 0.0);
            // scores (n × c) = scale · Q (n × d) · K[c0..c0+c]ᵀ (d × c)
            gemm::gemm(
                n,
                c,
                d,
                scratch.scores.as_mut_ptr(),
                1,
                c as isize,
                false,
                q,
                1,
                q_rs as isize,
                k.as_ptr().add(c0 * d),
                d as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                Parallelism::None,
            );
            for (row, st) in scratch
                .scores
                .chunks_exact_mut(c)
                .zip(scratch.stats.chunks_exact_mut(3))
            {
                kernels::softmax_tile(row, st);
            }
            if c0 > 0 {
                // Earlier key blocks were normalized to an older max.
                for (i, st) in scratch.stats.chunks_exact(3).enumerate() {
                    let row = std::slice::from_raw_parts_mut(out.add(i * out_rs), d);
                    row.iter_mut().for_each(|o| *o *= st[2]);
                }
            }
            // out (n × d) (+)= P (n × c) · V[c0..c0+c] (c × d)
            gemm::gemm(
                n,
                d,
                c,
                out,
                1,
                out_rs as isize,
                c0 > 0,
                scratch.scores.as_ptr(),
                1,
                c as isize,
                v.as_ptr().add(c0 * d),
                1,
                d as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
            c0 += c;
        }
        for (i, st) in scratch.stats.chunks_exact(3).enumerate() {
            let row = std::slice::from_raw_parts_mut(out.add(i * out_rs), d);
            let inv = 1.0 / st[1];
            row.iter_mut().for_each(|o| *o *= inv);
        }
        r0 += n;
    }
}

/// Per-thread buffers of the bf16 attention: one head's keys and values,
/// packed per key block.
#[derive(Default)]
struct Bf16Scratch {
    /// Key block b: K[b·kb..][..c] as W (c keys × d), so Q·Wᵀ = scores.
    keys: Vec<PackedBf16>,
    /// Key block b: V[b·kb..][..c] transposed (d × c keys), so P·Wᵀ = P·V.
    values: Vec<PackedBf16>,
    /// Key blocks in use (`keys`/`values` keep older, larger vectors).
    blocks: usize,
}

impl Bf16Scratch {
    /// Packs one head's keys and values: `qkv` rows `rs` apart, the head's
    /// K and V at columns `k_col` and `v_col`, `d` wide; blocks of `kb` keys.
    fn pack_head(
        &mut self,
        qkv: &[f32],
        rs: usize,
        (k_col, v_col): (usize, usize),
        d: usize,
        kb: usize,
    ) {
        let len = qkv.len() / rs;
        self.blocks = len.div_ceil(kb);
        if self.keys.len() < self.blocks {
            self.keys.resize_with(self.blocks, PackedBf16::default);
            self.values.resize_with(self.blocks, PackedBf16::default);
        }
        for b in 0..self.blocks {
            let (c0, c) = (b * kb, kb.min(len - b * kb));
            self.keys[b].repack_rows(&qkv[c0 * rs + k_col..], rs, c, d);
            self.values[b].repack_transposed(&qkv[c0 * rs + v_col..], rs, c, d);
        }
    }
}

/// One head's keys and values, packed per key block for a kernel, and how
/// attention's two products run against them: what [`head_attention_packed`]
/// needs of the bf16 and the int16 path.
trait PackedHead {
    /// Key blocks packed.
    fn blocks(&self) -> usize;
    /// Keys in block `b`.
    fn keys(&self, b: usize) -> usize;
    /// A new block of `n` query rows: `qs` is Q·scale (n × d).
    fn queries(&mut self, qs: &[f32], n: usize, d: usize);
    /// `scores` (n × keys(b)) = Q·scale · K_bᵀ.
    fn scores(&mut self, b: usize, qs: &[f32], d: usize, scores: &mut [f32], n: usize);
    /// `acc` (n × d) (+ with `add`)= P (n × keys(b)) · V_b.
    fn context(&mut self, b: usize, p: &[f32], acc: &mut [f32], d: usize, n: usize, add: bool);
}

/// Bf16 operands, f32 sums: Q is scaled before it is rounded, so the
/// scores need no pass of their own (for d = 64 the scale 1/8 is exact).
impl PackedHead for (bf16::Bf16Kernel, &mut Bf16Scratch) {
    fn blocks(&self) -> usize {
        self.1.blocks
    }
    fn keys(&self, b: usize) -> usize {
        self.1.keys[b].out_dim()
    }
    fn queries(&mut self, _: &[f32], _: usize, _: usize) {}
    fn scores(&mut self, b: usize, qs: &[f32], d: usize, scores: &mut [f32], n: usize) {
        let c = self.keys(b);
        bf16::matmul_one_thread(self.0, scores, c, qs, d, n, &self.1.keys[b], false);
    }
    fn context(&mut self, b: usize, p: &[f32], acc: &mut [f32], d: usize, n: usize, add: bool) {
        let c = self.keys(b);
        bf16::matmul_one_thread(self.0, acc, d, p, c, n, &self.1.values[b], add);
    }
}

/// Per-thread buffers of [`head_attention_packed`]'s row block.
#[derive(Default)]
struct Online {
    /// A row block of Q times the scale (rows × d).
    qs: Vec<f32>,
    /// The row block's context before normalization (rows × d).
    acc: Vec<f32>,
    f32: Scratch,
}

/// [`head_attention`] against the keys and values of `head` (packed by its
/// `pack_head`), its two products on `head`'s kernel: the same row blocks,
/// online softmax (f32) and normalization as the f32 path.
///
/// # Safety
/// `out` must point to `rows` rows of `d` writable floats `out_rs` apart
/// that nobody else touches meanwhile.
unsafe fn head_attention_packed(
    head: &mut impl PackedHead,
    (q, q_rs, rows, d, scale): (&[f32], usize, usize, usize, f32),
    out: *mut f32,
    out_rs: usize,
    online: &mut Online,
    row_block: usize,
) {
    let Online {
        qs,
        acc,
        f32: Scratch { scores, stats },
    } = online;
    let mut r0 = 0;
    while r0 < rows {
        let n = row_block.min(rows - r0);
        qs.clear();
        for i in 0..n {
            kernels::prefetch_floats(q, (r0 + i + AHEAD) * q_rs, d);
            let row = &q[(r0 + i) * q_rs..(r0 + i) * q_rs + d];
            qs.extend(row.iter().map(|v| v * scale));
        }
        head.queries(qs, n, d);
        stats.clear();
        stats.extend((0..n).flat_map(|_| [f32::NEG_INFINITY, 0.0, 0.0]));
        acc.resize(n * d, 0.0);
        for b in 0..head.blocks() {
            let c = head.keys(b);
            scores.resize(n * c, 0.0);
            // scores (n × c) = (scale · Q) (n × d) · K_bᵀ (d × c)
            head.scores(b, qs, d, scores, n);
            for (row, st) in scores.chunks_exact_mut(c).zip(stats.chunks_exact_mut(3)) {
                kernels::softmax_tile(row, st);
            }
            if b > 0 {
                // Earlier key blocks were normalized to an older max.
                for (row, st) in acc.chunks_exact_mut(d).zip(stats.chunks_exact(3)) {
                    row.iter_mut().for_each(|o| *o *= st[2]);
                }
            }
            // acc (n × d) (+)= P (n × c) · V_b (c × d)
            head.context(b, scores, acc, d, n, b > 0);
        }
        for (i, (row, st)) in acc.chunks_exact(d).zip(stats.chunks_exact(3)).enumerate() {
            let inv = 1.0 / st[1];
            let dst = std::slice::from_raw_parts_mut(out.add((r0 + i) * out_rs), d);
            dst.iter_mut().zip(row).for_each(|(o, a)| *o = a * inv);
        }
        r0 += n;
    }
}

/// Keys per integer chunk of P·V (at most; a key block shorter than this is
/// one chunk): each chunk's P rows and V columns get scales of their own,
/// and its i32 sums (at most `128 · X_MAX · w_max(128)`, the values to ±16399)
/// cannot overflow; chunks add up in f32. On real weights (MiniLM, forced
/// for every pair: `int16_and_bf16_attention_stay_close_to_f32_on_real_weights`)
/// 64 and 128 keys gave a bf16 model's [CLS] state the same error, 4.76e-3
/// (bf16 attention 4.83e-3), 256 gave 7.0e-3 and 512 1.3e-2 (over the 1e-2
/// gate): one scale for many small probabilities loses them. 128 instead of
/// 64 halves the chunks' epilogues and quantizer calls: `--ceiling`'s int16
/// over f32 time 0.96 → 0.89 at 512 tokens, 0.76 → 0.72 at 4096 (2026-12-03).
const CHUNK: usize = 128;

/// Per-thread buffers of the int16 attention: one head's keys (per key
/// block) and values (per chunk of [`CHUNK`] keys), quantized and packed,
/// and the quantized Q and P blocks.
#[derive(Default)]
struct I16Scratch {
    /// Key block b: K[b·kb..][..c] as W (c keys × d): one scale per key.
    keys: Vec<PackedI16>,
    /// Chunk j (of every key block in turn): V[j·CHUNK..][..c] transposed
    /// (d × c keys): one scale per head dimension and chunk.
    values: Vec<PackedI16>,
    /// Key blocks in use, and the chunks in each.
    blocks: usize,
    chunks_per_block: usize,
    /// Keys per chunk: [`CHUNK`], or the key block if shorter.
    chunk: usize,
    /// Q·scale of a row block, quantized per row.
    q: QuantRows16,
    /// One chunk of P, quantized per row.
    p: QuantRows16,
}

impl I16Scratch {
    /// As [`Bf16Scratch::pack_head`], with `kb` a multiple of [`CHUNK`] or
    /// smaller than it.
    fn pack_head(
        &mut self,
        qkv: &[f32],
        rs: usize,
        (k_col, v_col): (usize, usize),
        d: usize,
        kb: usize,
    ) {
        let chunk = CHUNK.min(kb);
        debug_assert!(kb.is_multiple_of(chunk));
        self.chunk = chunk;
        let len = qkv.len() / rs;
        self.blocks = len.div_ceil(kb);
        self.chunks_per_block = kb / chunk;
        let chunks = len.div_ceil(chunk);
        if self.keys.len() < self.blocks {
            self.keys.resize_with(self.blocks, PackedI16::default);
        }
        if self.values.len() < chunks {
            self.values.resize_with(chunks, PackedI16::default);
        }
        for b in 0..self.blocks {
            let (c0, c) = (b * kb, kb.min(len - b * kb));
            self.keys[b].requantize(&qkv[c0 * rs + k_col..], (rs, 1), c, d);
        }
        for (j, v) in self.values[..chunks].iter_mut().enumerate() {
            let (c0, c) = (j * chunk, chunk.min(len - j * chunk));
            v.requantize(&qkv[c0 * rs + v_col..], (1, rs), d, c);
        }
    }
}

/// 16-bit integer operands, exact i32 sums:
/// - Q·Kᵀ: Q·scale quantized per row to ±[`i16::X_MAX`] (11 bits), each key
///   to ±32767 (`w_max(64)`: 16 bits).
/// - P·V: each chunk of [`CHUNK`] exponentials quantized per row to 11 bits
///   of its own largest (so a chunk of small probabilities keeps its
///   precision), each value column per chunk to 15 bits (`w_max(128)`);
///   the chunks' f32 products add up.
impl PackedHead for (I16Kernel, &mut I16Scratch) {
    fn blocks(&self) -> usize {
        self.1.blocks
    }
    fn keys(&self, b: usize) -> usize {
        self.1.keys[b].out_dim()
    }
    fn queries(&mut self, qs: &[f32], n: usize, d: usize) {
        i16::quantize_rows(qs, d, n, d, &mut self.1.q);
    }
    fn scores(&mut self, b: usize, _: &[f32], _: usize, scores: &mut [f32], n: usize) {
        let (kernel, s) = (self.0, &*self.1);
        i16::matmul_one_thread(
            kernel,
            scores,
            s.keys[b].out_dim(),
            &s.q,
            &s.keys[b],
            n,
            false,
        );
    }
    fn context(&mut self, b: usize, p: &[f32], acc: &mut [f32], d: usize, n: usize, add: bool) {
        let (kernel, c) = (self.0, self.keys(b));
        let I16Scratch {
            values,
            chunks_per_block,
            chunk,
            p: pq,
            ..
        } = &mut *self.1;
        let first = b * *chunks_per_block;
        for (j, v) in values[first..first + c.div_ceil(*chunk)].iter().enumerate() {
            i16::quantize_rows_flat(&p[j * *chunk..], c, n, v.in_dim(), pq);
            i16::matmul_one_thread(kernel, acc, d, pq, v, n, add || j > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::bf16::Bf16Kernel;
    use crate::model::kernels::I8Kernel;

    /// Head 1's output (rows × d) through [`head_attention_packed`], for a
    /// pair of two heads of `d` (Q/K/V rows 3H = 6d wide) whose keys and
    /// values `head` has packed.
    fn packed_output(
        head: &mut impl PackedHead,
        qkv: &[f32],
        (rows, d, scale): (usize, usize, f32),
        row_block: usize,
    ) -> Vec<f32> {
        let mut got = vec![0f32; rows * d];
        // SAFETY: got is rows × d.
        unsafe {
            head_attention_packed(
                head,
                (&qkv[d..], 6 * d, rows, d, scale),
                got.as_mut_ptr(),
                d,
                &mut Online::default(),
                row_block,
            )
        };
        got
    }

    /// Tiled attention with several key blocks equals one plain softmax pass.
    #[test]
    fn tiled_attention_equals_the_plain_formula() {
        let (len, d, rows) = (150, 8, 37);
        let mut rng = crate::synthetic::SplitMix64(7);
        let mut rand = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (rng.below(2001) as f32 - 1000.0) / 250.0)
                .collect()
        };
        let (q, k, v) = (rand(rows * d), rand(len * d), rand(len * d));
        let scale = 0.35;
        let mut want = vec![0f32; rows * d];
        for r in 0..rows {
            let s: Vec<f32> = (0..len)
                .map(|j| scale * (0..d).map(|c| q[r * d + c] * k[j * d + c]).sum::<f32>())
                .collect();
            let m = s.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f32 = e.iter().sum();
            for c in 0..d {
                want[r * d + c] = (0..len).map(|j| e[j] * v[j * d + c]).sum::<f32>() / z;
            }
        }
        for blocks in [(rows, len), (16, 40), (5, 7), (64, 1)] {
            let mut got = vec![0f32; rows * d];
            let input = HeadInput {
                q: q.as_ptr(),
                q_rs: d,
                k: &k,
                v: &v,
                rows,
                d,
                scale,
            };
            // SAFETY: q, got are rows × d, k and v len × d.
            unsafe { head_attention(input, got.as_mut_ptr(), d, &mut Scratch::default(), blocks) };
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "blocks {blocks:?}, element {i}: {a} vs {b}"
                );
            }
        }
    }

    /// softmax(q·kᵀ)·v in f64 for `rows` queries against `len` keys of `d`,
    /// `x(t, part, c)` giving token t's (scaled) query (part 0), key (1) or
    /// value (2) element c.
    fn formula(
        (len, d, rows): (usize, usize, usize),
        x: impl Fn(usize, usize, usize) -> f64,
    ) -> Vec<f64> {
        let mut want = vec![0f64; rows * d];
        for r in 0..rows {
            let s: Vec<f64> = (0..len)
                .map(|j| (0..d).map(|c| x(r, 0, c) * x(j, 1, c)).sum::<f64>())
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..d {
                want[r * d + c] = (0..len).map(|j| e[j] * x(j, 2, c)).sum::<f64>() / z;
            }
        }
        want
    }

    /// The bf16 attention on every bf16 kernel this CPU has, with several
    /// (partial) row and key blocks, against the plain formula in f64 on the
    /// same operands rounded to bf16 as the kernels round them: Q·scale, K,
    /// V, and each block's exponentials (which are rounded against that
    /// block's running max, hence the tolerance). And against f32: close,
    /// not equal (it really rounded).
    #[test]
    fn bf16_attention_equals_the_formula_on_rounded_operands() {
        use crate::model::kernels::bf16::{bf16_to_f32, f32_to_bf16};
        let round = |x: f32| bf16_to_f32(f32_to_bf16(x));
        let (len, d, rows, h) = (150, 64, 37, 2 * 64);
        let mut rng = crate::synthetic::SplitMix64(9);
        // One pair's Q/K/V rows (3H wide, two heads), head 1 used.
        let qkv: Vec<f32> = (0..len * 3 * h)
            .map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0)
            .collect();
        let (head, scale) = (1, 0.125);
        let at = |t: usize, part: usize, c: usize| qkv[t * 3 * h + part * h + head * d + c];
        let want = formula((len, d, rows), |t, part, c| {
            round(if part == 0 {
                at(t, 0, c) * scale
            } else {
                at(t, part, c)
            }) as f64
        });
        let mut f32_out = vec![0f32; rows * d];
        {
            let gather = |part| -> Vec<f32> {
                (0..len)
                    .flat_map(|t| (0..d).map(move |c| (t, c)))
                    .map(|(t, c)| at(t, part, c))
                    .collect()
            };
            let (k, v) = (gather(1), gather(2));
            let input = HeadInput {
                q: qkv[head * d..].as_ptr(),
                q_rs: 3 * h,
                k: &k,
                v: &v,
                rows,
                d,
                scale,
            };
            // SAFETY: q rows lie in qkv; f32_out is rows × d.
            unsafe {
                head_attention(
                    input,
                    f32_out.as_mut_ptr(),
                    d,
                    &mut Scratch::default(),
                    (16, 40),
                )
            };
        }
        let mut ran = 0;
        for kernel in Bf16Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            for (row_block, key_block) in [(rows, len), (16, 40), (5, 7), (128, 512)] {
                let mut scratch = Bf16Scratch::default();
                // Twice: the second packing reuses the first's buffers.
                for _ in 0..2 {
                    scratch.pack_head(&qkv, 3 * h, (h + head * d, 2 * h + head * d), d, key_block);
                }
                let got = packed_output(
                    &mut (kernel, &mut scratch),
                    &qkv,
                    (rows, d, scale),
                    row_block,
                );
                let what = format!("{kernel:?}, blocks {row_block} × {key_block}");
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*a as f64 - b).abs() < 2e-3,
                        "{what}, element {i}: {a} vs {b}"
                    );
                }
                let off_f32 = got
                    .iter()
                    .zip(&f32_out)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    off_f32 > 1e-6 && off_f32 < 1e-2,
                    "{what}: {off_f32} off f32"
                );
                ran += 1;
            }
        }
        assert!(ran >= 4, "the portable kernel at least");
    }

    /// The int16 attention on every int16 kernel this CPU has, with several
    /// (partial) row blocks, key blocks and chunks, head widths 64 and 24,
    /// against the plain formula in f64 on the exact operands: within what
    /// 11-bit Q and P steps and 16-bit K and V steps allow, equal across
    /// kernels bit for bit, and different from f32 (it really quantized).
    #[test]
    fn int16_attention_matches_the_formula_and_is_equal_across_kernels() {
        let mut kernels = vec![I16Kernel::Portable];
        if I16Kernel::with(I8Kernel::Vnni) != I16Kernel::Portable && I8Kernel::Vnni.is_available() {
            kernels.push(I16Kernel::with(I8Kernel::Vnni));
        }
        for (len, d, rows) in [(150, 64, 37), (700, 24, 9), (1, 64, 1)] {
            let h = 2 * d;
            let mut rng = crate::synthetic::SplitMix64(11);
            // One pair's Q/K/V rows (3H wide, two heads), head 1 used; a few
            // large scores so that the softmax is peaked in places.
            let qkv: Vec<f32> = (0..len * 3 * h)
                .map(|i| {
                    let v = (rng.below(2001) as f32 - 1000.0) / 1000.0;
                    if i % 97 == 0 {
                        4.0 * v
                    } else {
                        v
                    }
                })
                .collect();
            let (head, scale) = (1, 1.0 / (d as f32).sqrt());
            let at = |t: usize, part: usize, c: usize| qkv[t * 3 * h + part * h + head * d + c];
            let want = formula((len, d, rows), |t, part, c| {
                (if part == 0 {
                    at(t, 0, c) * scale
                } else {
                    at(t, part, c)
                }) as f64
            });
            let mut first: Option<Vec<f32>> = None;
            for &kernel in &kernels {
                for (row_block, key_block) in [(rows, 64), (16, 128), (5, 64), (128, 512)] {
                    let mut scratch = I16Scratch::default();
                    // Twice: the second packing reuses the first's buffers.
                    for _ in 0..2 {
                        let cols = (h + head * d, 2 * h + head * d);
                        scratch.pack_head(&qkv, 3 * h, cols, d, key_block);
                    }
                    let packed = &mut (kernel, &mut scratch);
                    let got = packed_output(packed, &qkv, (rows, d, scale), row_block);
                    let what = format!("{kernel:?}, {len}x{d}, blocks {row_block} × {key_block}");
                    let off = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (*a as f64 - b).abs())
                        .fold(0.0, f64::max);
                    assert!(off < 2e-3, "{what}: {off} off the formula");
                    // One pair alone (len 1): softmax of one key is 1, so the
                    // output is that value to within its 16-bit step.
                    assert!(len == 1 || off > 1e-6, "{what}: no rounding at all");
                    match (&first, row_block, key_block) {
                        (None, ..) => first = Some(got),
                        (Some(f), r, 64) if r == rows => {
                            assert!(*f == got, "{what}: kernels differ")
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
