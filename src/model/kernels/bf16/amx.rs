//! The Intel AMX `TDPBF16PS` kernel ([`Bf16Kernel::Amx`](super::Bf16Kernel::Amx)).

use std::arch::asm;

use super::super::amx::load_config;
use super::Ctx;

/// AMX tile. Microkernel: 32 rows × 32 columns held in C tiles tmm0..3 over the
/// full k depth, A tiles tmm4/5 (16 rows × 32 k), B tiles tmm6/7 (16 k pairs ×
/// 16 columns). Full 32×32 blocks are loaded from / stored to `dst` directly;
/// edge blocks go through a small buffer.
pub(super) unsafe fn tile(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
    let steps = ctx.w.kp / 16;
    let sa = ctx.a_rs * 4;
    let r1 = r1.min(ctx.rows);
    #[repr(C, align(64))]
    struct Buf([f32; 32 * 32]);
    let mut buf = Buf([0.0; 32 * 32]);
    load_config();
    for c in (c0..c1).step_by(32) {
        if c >= ctx.w.out_dim {
            break;
        }
        let b0 = ctx.w.block(c / 16).as_ptr();
        let b1 = ctx.w.block(c / 16 + 1).as_ptr();
        for r in (r0..r1).step_by(32) {
            // Rows r..r+32 exist in the padded buffer (rows_pad is a multiple of
            // 32), each with at least kp pairs.
            assert!((r + 32) * ctx.a_rs <= ctx.a.len());
            let a0 = ctx.a.as_ptr().add(r * ctx.a_rs);
            let a1 = a0.add(16 * ctx.a_rs);
            // Stored straight into dst only for whole blocks without
            // accumulation. With accumulation the products are summed from
            // zero and added to dst afterwards (as the other kernels do), so
            // a row's result never depends on which block it falls in, i.e.
            // on the batch: loading dst into the tile would change the
            // rounding order, and bf16 rounding of the next layer's input
            // can turn such last-bit differences into visible ones.
            let direct = r + 32 <= ctx.rows && c + 32 <= ctx.w.out_dim && !ctx.accumulate;
            // C tile origin and row stride in bytes: dst itself for direct
            // blocks (inside the asserted bounds: rows r..r+32, columns c..c+32).
            let (o, so) = if direct {
                (ctx.dst.0.add(r * ctx.dst_rs + c), ctx.dst_rs * 4)
            } else {
                (buf.0.as_mut_ptr(), 32 * 4)
            };
            let o1 = o.byte_add(16 * so);
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for s in 0..steps {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0.add(s * 16),
                    a1 = in(reg) a1.add(s * 16),
                    b0 = in(reg) b0.add(s * 256),
                    b1 = in(reg) b1.add(s * 256),
                    sa = in(reg) sa,
                    sb = in(reg) 64usize,
                    options(nostack, readonly),
                );
            }
            asm!(
                "tilestored [{o0} + {so}*1], tmm0",
                "tilestored [{o1} + {so}*1], tmm1",
                "tilestored [{o2} + {so}*1], tmm2",
                "tilestored [{o3} + {so}*1], tmm3",
                o0 = in(reg) o,
                o1 = in(reg) o.add(16),
                o2 = in(reg) o1,
                o3 = in(reg) o1.add(16),
                so = in(reg) so,
                options(nostack),
            );
            if !direct {
                ctx.write_out(&buf.0, 32, r, 32, c, 32);
            }
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}
