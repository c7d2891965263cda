//! Fused CUDA kernels for the candle model on a GPU (`src/model/cuda/kernels.cu`,
//! compiled to PTX by build.rs with the `cuda` feature).
//!
//! What they replace, and why (Nsight Compute on an H200, BENCHMARKS.md "GPU"):
//! - [`softmax_last_dim`] replaces `candle_nn::ops::softmax_last_dim`, whose
//!   kernel gives each row one warp (337 µs for a 16 × 256 × 8192 f16 block:
//!   ~400 GB/s, 70 % of an 8192-token pass): one 256-thread block per row here.
//! - [`linear`] fuses the bias add (candle's strided broadcast add, ~15× below
//!   bandwidth), the exact-erf GELU of the intermediate layer and the residual
//!   add before LayerNorm into one pass after cuBLAS's matmul.
//! - [`split_heads`] replaces the generic strided copy of the permuted QKV.
//!
//! All arithmetic is f32 whatever the storage type (f16 or f32).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor,
};

use super::epilogue::Epilogue;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/rerank_kernels.ptx"));
const MODULE: &str = "rerank_kernels";

fn cpu_unsupported<T>(name: &str) -> Result<T> {
    candle_core::bail!("{name} is a CUDA-only kernel")
}

/// The kernel name suffix for a storage dtype.
fn suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F16 => Ok("f16"),
        DType::F32 => Ok("f32"),
        other => candle_core::bail!("the fused CUDA kernels support f16 and f32, not {other:?}"),
    }
}

fn contiguous(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: input must be contiguous")))
}

/// A grid-stride launch for `n` elements.
fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 132 * 16) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "rerank-softmax-last-dim"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_unsupported(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        fn run<T: CudaDType + DeviceRepr>(
            s: &CudaStorage,
            l: &Layout,
            name: &str,
        ) -> Result<CudaStorage> {
            let dev = s.device();
            let (o1, o2) = contiguous(l, "softmax")?;
            let src = s.as_cuda_slice::<T>()?.slice(o1..o2);
            let ncols = *l.dims().last().unwrap_or(&1);
            let rows = (o2 - o1) / ncols.max(1);
            // SAFETY: every element is written by the kernel.
            let dst = unsafe { dev.alloc::<T>(o2 - o1)? };
            let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
            let threads = if ncols >= 2048 {
                256
            } else if ncols >= 512 {
                128
            } else {
                64
            };
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let ncols = ncols as i32;
            let mut b = func.builder();
            b.arg(&src).arg(&dst).arg(&ncols);
            // SAFETY: arguments match the kernel's signature; sizes checked above.
            unsafe { b.launch(cfg) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(dst, dev.clone()))
        }
        let name = format!("softmax_rows_{}", suffix(s.dtype())?);
        let out = match s.dtype() {
            DType::F16 => run::<half::f16>(s, l, &name)?,
            _ => run::<f32>(s, l, &name)?,
        };
        Ok((out, l.shape().clone()))
    }
}

/// Softmax over the last dimension of a contiguous CUDA tensor.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Softmax)
}

struct BiasAct(Epilogue);

impl CustomOp3 for BiasAct {
    fn name(&self) -> &'static str {
        "rerank-bias-act"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_unsupported(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
        res: &CudaStorage,
        rl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let run = |name: &str| -> Result<CudaStorage> {
            fn go<T: CudaDType + DeviceRepr>(
                op: Epilogue,
                name: &str,
                (x, xl): (&CudaStorage, &Layout),
                (bias, bl): (&CudaStorage, &Layout),
                (res, rl): (&CudaStorage, &Layout),
            ) -> Result<CudaStorage> {
                let dev = x.device();
                let (x0, x1) = contiguous(xl, "bias add")?;
                let (b0, b1) = contiguous(bl, "bias")?;
                let (r0, r1) = contiguous(rl, "residual")?;
                let ncols = b1 - b0;
                let n = x1 - x0;
                if ncols == 0 || n % ncols != 0 || *xl.dims().last().unwrap_or(&0) != ncols {
                    candle_core::bail!("bias of {ncols} does not match {:?}", xl.dims());
                }
                let has_res = op == Epilogue::BiasResidual;
                if has_res && r1 - r0 != n {
                    candle_core::bail!("residual {:?} does not match {:?}", rl.dims(), xl.dims());
                }
                let src = x.as_cuda_slice::<T>()?.slice(x0..x1);
                let b = bias.as_cuda_slice::<T>()?.slice(b0..b1);
                let r = if has_res {
                    res.as_cuda_slice::<T>()?.slice(r0..r1)
                } else {
                    x.as_cuda_slice::<T>()?.slice(x0..x1) // not read
                };
                // SAFETY: every element is written by the kernel.
                let dst = unsafe { dev.alloc::<T>(n)? };
                let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
                let (ncols, act, has_res) = (
                    ncols as i32,
                    i32::from(op == Epilogue::BiasGelu),
                    i32::from(has_res),
                );
                let mut builder = func.builder();
                builder
                    .arg(&src)
                    .arg(&b)
                    .arg(&r)
                    .arg(&dst)
                    .arg(&n)
                    .arg(&ncols)
                    .arg(&act)
                    .arg(&has_res);
                // SAFETY: arguments match the kernel's signature; sizes checked above.
                unsafe { builder.launch(elementwise(n)) }.w()?;
                Ok(CudaStorage::wrap_cuda_slice(dst, dev.clone()))
            }
            let args = ((x, xl), (bias, bl), (res, rl));
            match x.dtype() {
                DType::F16 => go::<half::f16>(self.0, name, args.0, args.1, args.2),
                _ => go::<f32>(self.0, name, args.0, args.1, args.2),
            }
        };
        let out = run(&format!("bias_act_{}", suffix(x.dtype())?))?;
        Ok((out, xl.shape().clone()))
    }
}

/// `epilogue(x · wᵀ)` for 2-D `x` on CUDA: cuBLAS's matmul, then one fused pass.
/// `residual` is used (and required) by [`Epilogue::BiasResidual`] only.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    epilogue: Epilogue,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let y = x.matmul(&weight.t()?)?;
    let res = match (epilogue, residual) {
        (Epilogue::BiasResidual, Some(r)) => r.contiguous()?,
        (Epilogue::BiasResidual, None) => candle_core::bail!("BiasResidual needs a residual"),
        _ => y.clone(), // not read
    };
    y.apply_op3_no_bwd(&bias.contiguous()?, &res, &BiasAct(epilogue))
}

struct SplitHeads {
    heads: usize,
    head_dim: usize,
}

impl CustomOp1 for SplitHeads {
    fn name(&self) -> &'static str {
        "rerank-split-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_unsupported(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (nh, hd) = (self.heads, self.head_dim);
        let (o1, o2) = contiguous(l, "split heads")?;
        let len = (o2 - o1) / (3 * nh * hd);
        if l.dims() != [len, 3 * nh * hd] {
            candle_core::bail!(
                "split heads: expected (len, {}), got {:?}",
                3 * nh * hd,
                l.dims()
            );
        }
        fn go<T: CudaDType + DeviceRepr>(
            s: &CudaStorage,
            (o1, o2): (usize, usize),
            name: &str,
            dims: [i32; 3],
        ) -> Result<CudaStorage> {
            let dev = s.device();
            let src = s.as_cuda_slice::<T>()?.slice(o1..o2);
            // SAFETY: every element is written by the kernel.
            let dst = unsafe { dev.alloc::<T>(o2 - o1)? };
            let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
            let mut b = func.builder();
            b.arg(&src)
                .arg(&dst)
                .arg(&dims[0])
                .arg(&dims[1])
                .arg(&dims[2]);
            // SAFETY: arguments match the kernel's signature; sizes checked by the caller.
            unsafe { b.launch(elementwise(o2 - o1)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(dst, dev.clone()))
        }
        let name = format!("split_heads_{}", suffix(s.dtype())?);
        let dims = [len as i32, nh as i32, hd as i32];
        let out = match s.dtype() {
            DType::F16 => go::<half::f16>(s, (o1, o2), &name, dims)?,
            _ => go::<f32>(s, (o1, o2), &name, dims)?,
        };
        Ok((out, Shape::from((3, nh, len, hd))))
    }
}

/// `(len, 3·heads·hd)` → `(3, heads, len, hd)`: Q, K and V per head.
pub fn split_heads(qkv: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    qkv.apply_op1_no_bwd(&SplitHeads { heads, head_dim })
}
