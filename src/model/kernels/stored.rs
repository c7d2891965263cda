//! Little-endian reading and writing of packed weights, for the prepared-weights
//! cache (`model/cpu/prepared.rs`). Every read checks its length against a limit
//! before allocating, so a corrupt file gives an error, never a huge allocation.

use std::io::{self, Read, Write};

use super::AlignedBytes;

/// The most elements one stored array may claim (4 Gi: far above any layer).
const MAX_LEN: u64 = 1 << 32;

pub(crate) fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

pub(crate) fn write_len(w: &mut dyn Write, n: usize) -> io::Result<()> {
    w.write_all(&(n as u64).to_le_bytes())
}

pub(crate) fn read_len(r: &mut dyn Read) -> io::Result<usize> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    let n = u64::from_le_bytes(b);
    if n > MAX_LEN {
        return Err(invalid(format!("a stored length of {n}")));
    }
    Ok(n as usize)
}

/// A length that must equal `want` (a dimension the reader already knows).
pub(crate) fn expect_len(r: &mut dyn Read, want: usize, what: &str) -> io::Result<()> {
    let n = read_len(r)?;
    if n != want {
        return Err(invalid(format!("{what} is {n}, expected {want}")));
    }
    Ok(())
}

/// A 4-byte value stored little-endian.
pub(crate) trait Word: Copy {
    fn to_le(self) -> [u8; 4];
    fn from_le(b: [u8; 4]) -> Self;
}

impl Word for f32 {
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
    fn from_le(b: [u8; 4]) -> Self {
        f32::from_le_bytes(b)
    }
}

impl Word for i32 {
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
    fn from_le(b: [u8; 4]) -> Self {
        i32::from_le_bytes(b)
    }
}

/// `v`'s length, then its values.
pub(crate) fn write_words<T: Word>(w: &mut dyn Write, v: &[T]) -> io::Result<()> {
    write_len(w, v.len())?;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le()).collect();
    w.write_all(&bytes)
}

/// What [`write_words`] wrote.
pub(crate) fn read_words<T: Word>(r: &mut dyn Read) -> io::Result<Vec<T>> {
    let n = read_len(r)?;
    let mut bytes = vec![0u8; n * 4];
    r.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| T::from_le([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// The bytes of `data`, as stored in memory. Packed weights are `u8` or
/// `u32` words; the cache is only ever read by the machine that wrote it
/// (its key names the kernels), so `u32`s stay in native order.
pub(crate) fn write_bytes(w: &mut dyn Write, data: &AlignedBytes) -> io::Result<()> {
    write_len(w, data.as_slice().len())?;
    w.write_all(data.as_slice())
}

/// Reads [`write_bytes`]' output of exactly `want` bytes straight into an
/// aligned buffer (no second copy).
pub(crate) fn read_bytes(r: &mut dyn Read, want: usize) -> io::Result<AlignedBytes> {
    expect_len(r, want, "the packed weights' size")?;
    let mut data = AlignedBytes::default();
    data.resize(want);
    r.read_exact(data.as_mut_slice())?;
    Ok(data)
}
