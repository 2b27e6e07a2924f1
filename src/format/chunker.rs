//! Content-defined chunking with FastCDC (v2020, normalization level 1, default gear).
//!
//! Cut points are part of the repository format: fastcdc is pinned to an exact version,
//! the parameters live in the repository config, and a golden test below pins the cut
//! points of seeded data. Files are read into one reused buffer and cut as slices, which
//! is faster than the crate's streaming reader (no allocation per chunk).

use std::io::Read;

use fastcdc::v2020::{self, Normalization};
use serde::{Deserialize, Serialize};

/// The largest `max` a repository's chunker may have: no data chunk is longer.
pub const LARGEST_MAX: u32 = v2020::MAXIMUM_MAX as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkerParams {
    /// fastcdc checks its limits only with `debug_assert!`; we check them always.
    pub fn validate(&self) -> Result<(), String> {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
            && min <= avg
            && avg <= max;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunker parameters min={min} avg={avg} max={max} are out of range or odd"
            ))
        }
    }
}

#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// `params` must have passed [`ChunkerParams::validate`].
    pub fn new(params: ChunkerParams) -> Self {
        let (mask_s, mask_l) = v2020::select_masks(params.avg as usize, Normalization::Level1);
        Chunker {
            params,
            mask_s,
            mask_l,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the next chunk at the start of `data`. `data` must hold at least `max`
    /// bytes unless it is the end of the input.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        let (_, len) = v2020::cut(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        len
    }

    /// Chunk a whole in-memory buffer.
    pub fn cuts(&self, data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = self.next_cut(&data[pos..]);
            out.push(n);
            pos += n;
        }
        out
    }

    /// Stream `reader` through the chunker, calling `f` with each chunk. `buf` is reused
    /// across calls (grown to a few times the max chunk size). Returns bytes read.
    ///
    /// Each refill asks the reader for whole pages into a page-aligned part of `buf`
    /// ([`READ_ALIGN`]), so that a reader that reads with `O_DIRECT` can read into it
    /// without a buffer of its own; the bytes not yet cut are moved to just before it.
    pub fn chunk_reader<R: Read + ?Sized, E>(
        &self,
        reader: &mut R,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<std::io::Result<u64>, E> {
        let max = self.params.max as usize;
        // The part before `head` holds what is left uncut (less than `max`); reads go to
        // `head..tail`.
        let head_len = max.div_ceil(READ_ALIGN) * READ_ALIGN;
        let read_len = (max * 3).max(1 << 20).div_ceil(READ_ALIGN) * READ_ALIGN;
        let want = READ_ALIGN + head_len + read_len;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let head = buf.as_ptr().align_offset(READ_ALIGN).min(READ_ALIGN) + head_len;
        let tail = head + read_len;
        let (mut start, mut end, mut eof, mut total) = (head, head, false, 0u64);
        loop {
            if !eof && end - start < max {
                let left = end - start;
                buf.copy_within(start..end, head - left);
                start = head - left;
                end = head;
                while end < tail {
                    match reader.read(&mut buf[end..tail]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            end += n;
                            total += n as u64;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Ok(Err(e)),
                    }
                }
            }
            if start == end {
                return Ok(Ok(total));
            }
            let n = self.next_cut(&buf[start..end]);
            f(&buf[start..start + n])?;
            start += n;
        }
    }
}

/// The alignment of the part of its buffer [`Chunker::chunk_reader`] reads into, and of
/// each read's length while the reads are whole: a page, the largest logical block size
/// of common devices.
pub const READ_ALIGN: usize = 4096;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `len` pseudo-random bytes (xorshift from `seed`), for tests of chunking.
    pub(crate) fn seeded(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn validate_rejects_odd_and_out_of_range() {
        let ok = ChunkerParams {
            min: 64 * 1024,
            avg: 256 * 1024,
            max: 1024 * 1024,
        };
        assert!(ok.validate().is_ok());
        assert!(ChunkerParams { min: 65, ..ok }.validate().is_err());
        assert!(ChunkerParams {
            max: 32 * 1024 * 1024,
            ..ok
        }
        .validate()
        .is_err());
        assert!(ChunkerParams {
            min: 512 * 1024,
            ..ok
        }
        .validate()
        .is_err());
    }

    /// Golden cut points: if this fails, the chunker changed and existing repositories
    /// would stop deduplicating. Never update these numbers without a format version bump.
    #[test]
    fn golden_cut_points() {
        let data = seeded(3 * 1024 * 1024, 0x6a656c6c79);
        let c = Chunker::new(ChunkerParams {
            min: 64 * 1024,
            avg: 256 * 1024,
            max: 1024 * 1024,
        });
        let cuts = c.cuts(&data);
        assert_eq!(cuts.iter().sum::<usize>(), data.len());
        let fingerprint = blake3::hash(
            &cuts
                .iter()
                .flat_map(|n| (*n as u64).to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        assert_eq!((cuts.len(), &fingerprint.to_hex()[..16]), GOLDEN);
    }
    const GOLDEN: (usize, &str) = (11, "da7956f3f7e78b12");

    #[test]
    fn streaming_equals_slice() {
        let data = seeded(5 * 1024 * 1024 + 17, 7);
        let c = Chunker::new(ChunkerParams {
            min: 8 * 1024,
            avg: 16 * 1024,
            max: 64 * 1024,
        });
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let read = c
            .chunk_reader(&mut &data[..], &mut buf, |ch| {
                got.push(ch.len());
                Ok::<(), ()>(())
            })
            .unwrap()
            .unwrap();
        assert_eq!(read, data.len() as u64);
        assert_eq!(got, c.cuts(&data));
    }
}
