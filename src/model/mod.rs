//! The forward pass, and the one place that decides which implementation runs it.
//!
//! - [`checkpoint`]: the checkpoint's tensor-name map, shared by both
//!   implementations and the synthetic model writer.
//! - [`candle`]: the graph in candle, on every device (f32/f16/bf16), with the
//!   fused CUDA kernels on a GPU.
//! - [`cpu`]: the hand-written CPU model (f32/bf16/int8 linear layers), used
//!   on CPU wherever it applies because it is measurably faster.
//! - [`kernels`]: the CPU kernels (element-wise, few-rows f32, bf16, int8 on
//!   AVX2/AVX-512/AMX) and the one module that chooses among them.
//!
//! [`Choice::new`] maps (device, dtype, weight format, `portable`) to an
//! implementation; [`Model::load`] builds it. The engine and the synthetic
//! models both go through these two, so they cannot diverge.

pub mod candle;
pub mod checkpoint;
pub mod cpu;
pub mod kernels;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ::candle_core::{DType, Device, Tensor};
use ::candle_nn::VarBuilder;

pub use self::candle::XlmRobertaForSequenceClassification;
pub use self::cpu::{CpuModel, WeightSource};
pub use self::kernels::Kernels;
use crate::backend::PackedBatch;
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Where the forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
}

impl FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(Error::InvalidOption(format!(
                    "unknown device {s:?}; use cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceKind {
    /// candle's device, opened (a GPU that is absent or unsupported is an
    /// error with what to check).
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(Error::Unavailable(
                        "this build has no CUDA support; rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit) or use --device cpu".into(),
                    ));
                }
                Device::new_cuda(n).map_err(|e| {
                    Error::Unavailable(format!(
                        "cannot open CUDA device {n}: {}; check that `nvidia-smi` lists it and that \
                         the driver supports the CUDA version this binary was built with (or use --device cpu)",
                        crate::error::without_backtrace(&e)
                    ))
                })
            }
        }
    }
}

/// Numeric type of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    /// int8 weights (symmetric, per output channel) and u8 activations
    /// (asymmetric, per row) in the encoder's linear layers (CPU only).
    Int8,
}

impl FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "f16" | "float16" | "fp16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "int8" | "i8" | "qint8" => Ok(Self::Int8),
            _ => Err(Error::InvalidOption(format!(
                "unknown dtype {s:?}; use f32, f16, bf16 or int8"
            ))),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        })
    }
}

impl Dtype {
    /// f16 on a GPU (what the seed's `use_fp16` means), f32 on a CPU.
    pub fn default_for(device: DeviceKind) -> Self {
        match device {
            DeviceKind::Cpu => Self::F32,
            DeviceKind::Cuda(_) => Self::F16,
        }
    }

    /// candle's dtype; int8 has none (it runs only in the CPU model).
    fn candle(self) -> Result<DType> {
        match self {
            Self::F32 => Ok(DType::F32),
            Self::F16 => Ok(DType::F16),
            Self::Bf16 => Ok(DType::BF16),
            Self::Int8 => Err(Error::Unavailable(
                "int8 runs only on CPU from model.safetensors; use --device cpu with a safetensors checkpoint, or --dtype f16 on CUDA".into(),
            )),
        }
    }
}

/// Where the weights come from.
pub enum Weights {
    /// `model.safetensors` (memory-mapped) or `pytorch_model.bin`.
    File(PathBuf),
    /// f32 tensors by checkpoint name (synthetic models).
    Tensors(HashMap<String, Tensor>),
}

impl Weights {
    fn is_pickle(&self) -> bool {
        matches!(self, Self::File(p) if p.extension().is_some_and(|e| e == "bin"))
    }
}

/// Which implementation runs a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// The candle graph (every device and dtype but int8).
    Candle,
    /// The hand-written CPU model (f32, bf16, int8; safetensors or memory).
    Cpu,
}

/// The decision: device, dtype and implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub device: DeviceKind,
    pub dtype: Dtype,
    pub implementation: Implementation,
}

impl Choice {
    /// The rules: `dtype` defaults to [`Dtype::default_for`] the device; on
    /// CPU the hand-written model runs f32, bf16 and int8 from safetensors or
    /// memory, unless `portable` asks for candle in f32; everything else runs
    /// in candle, which has no int8.
    pub fn new(
        device: DeviceKind,
        dtype: Option<Dtype>,
        portable: bool,
        weights: &Weights,
    ) -> Result<Self> {
        let dtype = dtype.unwrap_or(Dtype::default_for(device));
        if device != DeviceKind::Cpu && dtype == Dtype::Int8 {
            return Err(Error::Unavailable(
                "int8 runs only on CPU; use --device cpu, or --dtype f16 on CUDA".into(),
            ));
        }
        let cpu = device == DeviceKind::Cpu
            && dtype != Dtype::F16
            && !weights.is_pickle()
            && !(portable && dtype == Dtype::F32);
        if !cpu {
            dtype.candle()?;
        }
        Ok(Self {
            device,
            dtype,
            implementation: if cpu {
                Implementation::Cpu
            } else {
                Implementation::Candle
            },
        })
    }
}

/// A loaded model, whichever implementation runs it.
pub enum Model {
    Candle(Box<XlmRobertaForSequenceClassification>),
    Cpu(Box<CpuModel>),
}

impl Model {
    /// Builds the implementation `choice` names from `weights`.
    pub fn load(weights: Weights, cfg: &ModelConfig, choice: Choice) -> Result<Self> {
        let device = choice.device.open()?;
        if choice.implementation == Implementation::Candle && choice.device == DeviceKind::Cpu {
            // The CPU model checks the RERANK_*_KERNEL switches itself; candle
            // on CPU runs none of our kernels, but a typo is an error there too.
            Kernels::get()?;
        }
        if let Weights::File(path) = &weights {
            if !path.exists() {
                return Err(Error::MissingFile {
                    path: path.clone(),
                    hint: "no weights (model.safetensors or pytorch_model.bin) in the model directory; download the model with `rerank download MODEL_ID`".into(),
                });
            }
        }
        match (choice.implementation, weights) {
            (Implementation::Cpu, Weights::File(path)) => Ok(Self::Cpu(Box::new(CpuModel::load(
                &WeightSource::map(&path)?,
                cfg,
                choice.dtype,
            )?))),
            (Implementation::Cpu, Weights::Tensors(tensors)) => Ok(Self::Cpu(Box::new(
                CpuModel::load(&WeightSource::from_tensors(tensors)?, cfg, choice.dtype)?,
            ))),
            (Implementation::Candle, Weights::File(path)) => {
                let vb = var_builder(&path, choice.dtype.candle()?, &device)?;
                let model = XlmRobertaForSequenceClassification::load(vb, cfg).map_err(|e| {
                    Error::Weights {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                Ok(Self::Candle(Box::new(model)))
            }
            (Implementation::Candle, Weights::Tensors(tensors)) => {
                let vb = VarBuilder::from_tensors(tensors, choice.dtype.candle()?, &device);
                Ok(Self::Candle(Box::new(
                    XlmRobertaForSequenceClassification::load(vb, cfg)?,
                )))
            }
        }
    }

    /// One raw logit per pair, in batch order.
    pub fn forward(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        match self {
            Self::Candle(m) => Ok(m.forward(batch)?),
            Self::Cpu(m) => Ok(m.forward(batch)),
        }
    }

    /// Logits and the final `<s>` hidden states (pairs × hidden), for
    /// accuracy checks of the low-precision paths.
    pub fn forward_hidden(&self, batch: &PackedBatch) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Self::Candle(m) => Ok(m.forward_hidden(batch)?),
            Self::Cpu(m) => Ok(m.forward_hidden(batch)),
        }
    }

    /// The CPU kernels of the hand-written model (`None` for candle).
    pub fn kernels(&self) -> Option<Kernels> {
        match self {
            Self::Candle(_) => None,
            Self::Cpu(m) => Some(m.kernels()),
        }
    }

    /// bf16 and int8 on CPU: which precision each class of linear layers
    /// and attention's products run in, and why, e.g. `q/k/v, ffn-in int8;
    /// attn-out/ffn-out bf16 (AMX); attention bf16 (AMX)` (`None` otherwise:
    /// everything runs the model's dtype).
    pub fn layer_precision(&self) -> Option<String> {
        let Self::Cpu(m) = self else { return None };
        let parts: Vec<String> = [
            m.residual_plan()
                .map(|p| format!("q/k/v, ffn-in int8; {p}")),
            m.attention_plan().map(|p| p.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Which implementation runs, for logs and `/info`.
    pub fn implementation(&self) -> &'static str {
        match self {
            Self::Candle(_) => "candle",
            Self::Cpu(m) => match m.dtype() {
                Dtype::Bf16 => "cpu-bf16",
                Dtype::Int8 => "cpu-int8",
                Dtype::F32 | Dtype::F16 => "cpu-f32",
            },
        }
    }
}

fn var_builder<'a>(path: &Path, dtype: DType, device: &'a Device) -> Result<VarBuilder<'a>> {
    if path.extension().is_some_and(|e| e == "bin") {
        // PyTorch pickle checkpoints: candle reads the common (zip) layout.
        return VarBuilder::from_pth(path, dtype, device).map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: format!("{e}; convert it to model.safetensors (e.g. `model.save_pretrained(dir, safe_serialization=True)` in Python)"),
        });
    }
    // SAFETY: the file is memory-mapped read-only; like every mmap user we
    // assume it is not truncated by another process while we run.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }.map_err(|e| {
        Error::CorruptFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })
}
