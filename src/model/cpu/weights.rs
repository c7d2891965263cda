//! Weight access of the CPU model: tensors read in place from the
//! memory-mapped safetensors file (no copy: fast start, RSS = the pages
//! touched), or from memory (synthetic models), as f32.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// f32 data either borrowed from the mapped file or owned.
pub(super) enum Buf {
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

impl Buf {
    /// Gives the data back: owned memory is freed, mapped pages are dropped
    /// from this process's resident set (the file stays mapped).
    pub(super) fn release(&mut self) {
        if let Self::Mapped { map, offset, len } = self {
            // Whole pages inside the tensor only: neighbours stay untouched.
            let page = 4096;
            let start = offset.next_multiple_of(page);
            let end = (*offset + *len * 4) / page * page;
            if end > start {
                // SAFETY: a read-only file mapping; dropped pages are read
                // from the file again if anything touches them, and nothing
                // reads this tensor once it is packed.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        *self = Self::Owned(Vec::new());
    }

    pub(super) fn as_slice(&self) -> &[f32] {
        match self {
            // SAFETY: offset and len were checked against the map and for
            // 4-byte alignment when the tensor was found.
            Self::Mapped { map, offset, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*offset) as *const f32, *len)
            },
            Self::Owned(v) => v,
        }
    }
}

/// Where weights come from: a safetensors file, or tensors in memory.
pub enum WeightSource {
    /// A memory-mapped `model.safetensors`.
    Mapped {
        path: std::path::PathBuf,
        map: Arc<memmap2::Mmap>,
    },
    /// f32 tensors by name (synthetic models).
    Memory(HashMap<String, (Vec<usize>, Vec<f32>)>),
}

impl WeightSource {
    /// f32 copies of candle tensors (synthetic models).
    pub fn from_tensors(tensors: HashMap<String, candle_core::Tensor>) -> Result<Self> {
        let memory = tensors
            .into_iter()
            .map(|(name, t)| {
                let shape = t.dims().to_vec();
                Ok((name, (shape, t.flatten_all()?.to_vec1::<f32>()?)))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Self::Memory(memory))
    }

    /// Maps a safetensors file.
    pub fn map(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        // SAFETY: read-only map; like every mmap user we assume the file is
        // not truncated by another process while we run.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self::Mapped {
            path: path.to_path_buf(),
            map: Arc::new(map),
        })
    }

    pub(super) fn tensors(&self) -> Result<Tensors<'_>> {
        match self {
            Self::Mapped { path, map } => {
                let st =
                    safetensors::SafeTensors::deserialize(map).map_err(|e| Error::CorruptFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Tensors::Mapped { path, map, st })
            }
            Self::Memory(m) => Ok(Tensors::Memory(m)),
        }
    }
}

pub(super) enum Tensors<'a> {
    Mapped {
        path: &'a Path,
        map: &'a Arc<memmap2::Mmap>,
        st: safetensors::SafeTensors<'a>,
    },
    Memory(&'a HashMap<String, (Vec<usize>, Vec<f32>)>),
}

impl Tensors<'_> {
    fn path(&self) -> &Path {
        match self {
            Self::Mapped { path, .. } => path,
            Self::Memory(_) => Path::new("<memory>"),
        }
    }

    /// The named tensor with the expected shape, as f32.
    pub(super) fn get(&self, name: &str, shape: &[usize]) -> Result<Buf> {
        let err = |reason: String| Error::Weights {
            path: self.path().to_path_buf(),
            reason,
        };
        match self {
            Self::Memory(m) => {
                let (s, data) = m
                    .get(name)
                    .ok_or_else(|| err(format!("cannot find tensor {name}")))?;
                if s.as_slice() != shape {
                    return Err(err(format!(
                        "tensor {name} has shape {s:?}, expected {shape:?}"
                    )));
                }
                Ok(Buf::Owned(data.clone()))
            }
            Self::Mapped { map, st, .. } => {
                let view = st
                    .tensor(name)
                    .map_err(|_| err(format!("cannot find tensor {name}")))?;
                if view.shape() != shape {
                    return Err(err(format!(
                        "tensor {name} has shape {:?}, expected {shape:?}",
                        view.shape()
                    )));
                }
                let bytes = view.data();
                let len = shape.iter().product::<usize>();
                match view.dtype() {
                    safetensors::Dtype::F32 => {
                        let offset = bytes.as_ptr() as usize - map.as_ptr() as usize;
                        if offset.is_multiple_of(4) && bytes.len() == len * 4 {
                            return Ok(Buf::Mapped {
                                map: Arc::clone(map),
                                offset,
                                len,
                            });
                        }
                        Ok(Buf::Owned(
                            bytes
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                                .collect(),
                        ))
                    }
                    safetensors::Dtype::F16 => Ok(Buf::Owned(
                        bytes
                            .chunks_exact(2)
                            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                            .collect(),
                    )),
                    safetensors::Dtype::BF16 => Ok(Buf::Owned(
                        bytes
                            .chunks_exact(2)
                            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                            .collect(),
                    )),
                    other => Err(err(format!(
                        "tensor {name} has unsupported dtype {other:?}"
                    ))),
                }
            }
        }
    }
}
