//! Reading a source file's content. A file whose start is not in the page cache is read
//! with `O_DIRECT`, from the disk straight into an aligned buffer of this thread: a
//! backup reads each changed byte once and never again, and through the page cache every
//! byte is first copied into a fresh cache page, which on a virtual machine's disk costs
//! more CPU than chunking and hashing it (1.86 GB of trickplay read cold by 8 threads:
//! 2.9 s and 4.7 CPU s of kernel time through the cache, 1.3 s and 0.9 s direct). It also
//! leaves the server's own cache as it was. A file whose start is cached (just written,
//! or read by the server) is read through the cache, which then costs a copy only.
//!
//! Direct reads go into the caller's buffer where it asks for whole aligned blocks at an
//! aligned offset ([`Chunker::chunk_reader`] does), so no byte is copied on the way. A
//! short read is the end of the file, or where the file system stops reading directly:
//! whatever follows is read through the cache, as is the whole file where the file
//! system refuses the flag, and the rest of it from a direct read that fails (`EINVAL`
//! or any other error: the read is made again through the cache, which returns a
//! failure of the disk itself again). The bytes returned are the file's either way.
//!
//! [`Chunker::chunk_reader`]: crate::format::chunker::Chunker::chunk_reader

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::format::chunker::READ_ALIGN as ALIGN;

/// Run `f` with a reader of `file`'s content from its start; `size` is its size when
/// opened (a direct read asks for no more, rounded up to a block: the kernel zeroes the
/// caller's buffer past the end of the file, at a cost like a copy's).
pub(super) fn with_reader<T>(file: &File, size: u64, f: impl FnOnce(&mut dyn Read) -> T) -> T {
    let direct = !crate::sys::start_cached(file) && crate::sys::set_direct(file).is_ok();
    f(&mut SourceReader {
        file,
        direct,
        pos: 0,
        size,
    })
}

struct SourceReader<'a> {
    file: &'a File,
    /// Whether reads still go direct (cleared at the first that cannot).
    direct: bool,
    /// Where the next read starts.
    pos: u64,
    /// The file's size when opened. It may have grown since: a direct read asks for at
    /// least a block, and reads on while whole blocks come back.
    size: u64,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.direct {
            let left = self.size.saturating_sub(self.pos).div_ceil(ALIGN as u64);
            let left = usize::try_from(left.max(1)).unwrap_or(usize::MAX / ALIGN) * ALIGN;
            let whole = (out.len() / ALIGN * ALIGN).min(left);
            let aligned =
                self.pos.is_multiple_of(ALIGN as u64) && out.as_ptr().align_offset(ALIGN) == 0;
            let direct = match aligned && whole > 0 {
                true => self.file.read_at(&mut out[..whole], self.pos),
                false => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            };
            match direct {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                // Refused (EINVAL), or failed: the same read goes through the cache,
                // which meets a failure of the disk itself again and returns it.
                Err(_) => {
                    crate::sys::clear_direct(self.file)?;
                    self.direct = false;
                }
            }
        }
        let n = self.file.read_at(out, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::chunker::{Chunker, ChunkerParams};

    fn content(len: usize) -> Vec<u8> {
        crate::format::chunker::tests::seeded(len, len as u64 | 1)
    }

    /// Files of every size around the block boundaries are chunked into the very chunks
    /// of their bytes in memory, read direct (where this file system allows it) or
    /// through the cache; a direct reader asked for a piece that is not whole blocks
    /// carries on through the cache.
    #[test]
    fn a_file_reads_back_exactly_direct_or_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let chunker = Chunker::new(ChunkerParams {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        });
        let mut went_direct = false;
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            (1 << 20) - 1,
            1 << 20,
            (3 << 20) + 17,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let want = content(len);
            std::fs::write(&path, &want).unwrap();
            let cuts = chunker.cuts(&want);
            for direct in [true, false] {
                let file = File::open(&path).unwrap();
                let direct = direct && crate::sys::set_direct(&file).is_ok();
                went_direct |= direct;
                let mut reader = SourceReader {
                    file: &file,
                    direct,
                    pos: 0,
                    size: len as u64,
                };
                let (mut got, mut got_cuts) = (Vec::new(), Vec::new());
                let mut buf = Vec::new();
                let n = chunker
                    .chunk_reader(&mut reader, &mut buf, |c| {
                        got.extend_from_slice(c);
                        got_cuts.push(c.len());
                        Ok::<(), ()>(())
                    })
                    .unwrap()
                    .unwrap();
                assert!(
                    got == want && n == len as u64,
                    "{len} bytes, direct {direct}"
                );
                assert_eq!(got_cuts, cuts, "{len} bytes, direct {direct}");
                // Odd pieces: the first is whole blocks, the rest are not; and the file
                // is longer than it was when opened.
                let file = File::open(&path).unwrap();
                let direct = direct && crate::sys::set_direct(&file).is_ok();
                let mut reader = SourceReader {
                    file: &file,
                    direct,
                    pos: 0,
                    size: len as u64 / 2,
                };
                let mut got = Vec::new();
                let mut piece = vec![0u8; 3 * ALIGN + 70_001];
                let at = piece.as_ptr().align_offset(ALIGN);
                loop {
                    let size = if got.is_empty() { 2 * ALIGN } else { 70_001 };
                    let n = reader.read(&mut piece[at..at + size]).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&piece[at..at + n]);
                }
                assert!(got == want, "{len} bytes in odd pieces, direct {direct}");
            }
            // As a backup reads it: the file was just written, so it is in the cache.
            let file = File::open(&path).unwrap();
            let mut got = Vec::new();
            with_reader(&file, len as u64, |r| r.read_to_end(&mut got)).unwrap();
            assert!(got == want, "{len} bytes through with_reader");
        }
        // The tests' temp dir is on a file system that reads directly (ext4 here and in
        // CI); where one refuses, the cases above ran through the cache only.
        eprintln!("direct reads exercised: {went_direct}");
    }
}
