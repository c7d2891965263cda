//! Little-endian reading and writing of packed weights, for the prepared-weights
//! cache (`model/cpu/prepared.rs`). Every read checks its length against a limit
//! before allocating, so a corrupt file gives an error, never a huge allocation.
//!
//! An entry is read from the file mapped in memory ([`Source`]): packed weights
//! (nearly all of it) are used in place, 64-byte aligned in the file, instead
//! of being copied into buffers; the small arrays (scales, biases) are copied.
//! Measured in BENCHMARKS.md "The prepared-weights cache".

use std::io::{self, Read, Write};
use std::sync::Arc;

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

/// Where an entry is written: counts the bytes, so packed weights can be
/// placed at 64-byte aligned offsets of the file.
pub(crate) struct Sink<'a> {
    w: &'a mut dyn Write,
    pos: u64,
}

impl<'a> Sink<'a> {
    /// Writes to `w`, whose first byte is at a 64-byte aligned place (the
    /// start of the file).
    pub(crate) fn new(w: &'a mut dyn Write) -> Self {
        Self { w, pos: 0 }
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// What an entry is read from: the mapped file and a position in it.
pub(crate) struct Source {
    map: Arc<memmap2::Mmap>,
    pos: usize,
}

impl Source {
    pub(crate) fn new(map: Arc<memmap2::Mmap>) -> Self {
        Self { map, pos: 0 }
    }

    /// A copy of `bytes` in anonymous memory (tests).
    #[cfg(test)]
    pub(crate) fn copy_of(bytes: &[u8]) -> Self {
        // Maps are never empty: an empty input is a one-byte map read to its end.
        let mut map = memmap2::MmapMut::map_anon(bytes.len().max(1)).expect("an anonymous map");
        map[..bytes.len()].copy_from_slice(bytes);
        Self {
            map: Arc::new(map.make_read_only().expect("a read-only map")),
            pos: usize::from(bytes.is_empty()),
        }
    }

    /// Whether everything has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.map.len()
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.map[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Bytes of zeros that bring `pos` to a multiple of 64.
fn padding(pos: u64) -> usize {
    (pos.next_multiple_of(64) - pos) as usize
}

/// The bytes of `data`, as stored in memory, at the next 64-byte aligned
/// offset. Packed weights are `u8` or `u32` words; the cache is only ever
/// read by the machine that wrote it (its key names the kernels), so `u32`s
/// stay in native order.
pub(crate) fn write_bytes(w: &mut Sink, data: &AlignedBytes) -> io::Result<()> {
    write_len(w, data.as_slice().len())?;
    w.write_all(&[0u8; 64][..padding(w.pos)])?;
    w.write_all(data.as_slice())
}

/// What [`write_bytes`] wrote, of exactly `want` bytes: a view of the
/// mapped file (no copy).
pub(crate) fn read_bytes(r: &mut Source, want: usize) -> io::Result<AlignedBytes> {
    expect_len(r, want, "the packed weights' size")?;
    let start = r.pos + padding(r.pos as u64);
    if start.checked_add(want).is_none_or(|end| end > r.map.len()) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the packed weights end past the file",
        ));
    }
    r.pos = start + want;
    Ok(AlignedBytes::mapped(r.map.clone(), start, want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_bytes_are_read_in_place_at_aligned_offsets() {
        let mut data = AlignedBytes::default();
        data.resize(100);
        data.as_mut_slice()
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        let mut file = Vec::new();
        {
            let mut w = Sink::new(&mut file);
            w.write_all(&[1, 2, 3]).unwrap();
            write_bytes(&mut w, &data).unwrap();
            write_bytes(&mut w, &data).unwrap();
        }
        let skip = |r: &mut Source| r.read_exact(&mut [0u8; 3]).unwrap();
        let mut r = Source::copy_of(&file);
        skip(&mut r);
        let first = read_bytes(&mut r, 100).unwrap();
        let second = read_bytes(&mut r, 100).unwrap();
        assert!(r.at_end());
        for got in [&first, &second] {
            assert!(got.is_mapped());
            assert_eq!(got.as_slice(), data.as_slice());
            assert!((got.as_slice().as_ptr() as usize).is_multiple_of(64));
        }
        // Writing to a view copies it first; the map is untouched.
        let mut copy = first.clone();
        copy.as_mut_slice()[0] = 99;
        assert!(!copy.is_mapped() && copy.as_slice()[0] == 99);
        assert_eq!(first.as_slice()[0], 0);
        // Another size, and a file cut inside the second array, are errors.
        let mut r = Source::copy_of(&file);
        skip(&mut r);
        let err = read_bytes(&mut r, 101).unwrap_err();
        assert!(err.to_string().contains("expected 101"), "{err}");
        let mut r = Source::copy_of(&file[..file.len() - 1]);
        skip(&mut r);
        read_bytes(&mut r, 100).unwrap();
        let err = read_bytes(&mut r, 100).unwrap_err();
        assert!(err.to_string().contains("past the file"), "{err}");
    }
}
