//! Durability on a local file system: the one place that makes a file durable.
//!
//! Contract: a file becomes visible under its final name only after its
//! bytes are on disk. `write_atomic` writes a temp file in the same directory, fsyncs it,
//! renames it over the final name and fsyncs the directory. A directory is durable once
//! its entry is synced in its parent, and a directory that already exists is not proof of
//! that: a run that died between creating it and syncing its parent leaves one whose
//! entry the next power cut takes away, with everything later put in it. A failed fsync
//! is returned as an error and never retried: the caller must abandon the run (the page
//! cache state after a failed fsync is unknown).
//!
//! Every file operation goes through [`Fs`]: [`StdFs`] is the real file system; the
//! crash tests run the store on a simulated one that forgets what was never synced
//! (`simfs`, with the `test-hooks` feature).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};

/// A file open for writing.
pub trait FsFile: Write + Send {
    /// Make the file's bytes durable (fsync).
    fn sync(&mut self) -> io::Result<()>;

    /// Whether the file gathers small writes itself (no buffer is needed in front of it).
    fn buffers(&self) -> bool {
        false
    }
}

impl FsFile for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

/// A new file written with `O_DIRECT`: its bytes go from an aligned buffer of ours
/// straight to the device, not through the page cache. A pack is written once, in
/// sequence, and not read back by the run that writes it; through the page cache every
/// byte is first copied into a fresh cache page, which on a virtual machine's disk cost
/// about as much CPU as chunking and hashing it (2 GB written and synced by `dd`: 7.1 s
/// buffered, 1.9 s direct). Durable only after [`FsFile::sync`], like any file.
///
/// Writes are whole aligned blocks at aligned offsets; the tail is written padded with
/// zeros and the file cut back to its length. Where the file system refuses a direct
/// write (`EINVAL`), the file falls back to the page cache and carries on.
pub struct DirectFile {
    file: File,
    buf: Vec<u8>,
    /// Where the aligned part of `buf` starts.
    start: usize,
    /// Bytes gathered in the buffer, not yet written as a whole block.
    filled: usize,
    /// Bytes of the file written as whole blocks (a multiple of [`DIRECT_ALIGN`] while
    /// direct).
    pos: u64,
    direct: bool,
}

/// The alignment of a direct write's buffer, offset and length: the largest logical
/// block size of common devices.
pub const DIRECT_ALIGN: usize = 4096;
/// The size of one direct write.
const DIRECT_BLOCK: usize = 1 << 20;

impl DirectFile {
    /// `path` opened again with `O_DIRECT`; `None` where the file system refuses the flag.
    fn open(path: &Path) -> Option<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()?;
        let buf = vec![0u8; DIRECT_BLOCK + DIRECT_ALIGN];
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        (start < DIRECT_ALIGN).then_some(DirectFile {
            file,
            buf,
            start,
            filled: 0,
            pos: 0,
            direct: true,
        })
    }

    /// Write the gathered bytes at `pos`: a whole block moves `pos` on; a tail (at sync)
    /// is written padded and the file cut to its length, and stays gathered, so that
    /// bytes written after it rewrite that block whole.
    fn write_out(&mut self) -> io::Result<()> {
        let whole = self.filled == DIRECT_BLOCK;
        let len = if self.direct {
            self.filled.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN
        } else {
            self.filled
        };
        self.buf[self.start + self.filled..self.start + len].fill(0);
        let block = &self.buf[self.start..self.start + len];
        match self.file.write_all_at(block, self.pos) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                crate::sys::clear_direct(&self.file)?;
                self.direct = false;
                return self.write_out();
            }
            r => r?,
        }
        if whole {
            self.pos += DIRECT_BLOCK as u64;
            self.filled = 0;
        } else if len != self.filled {
            self.file.set_len(self.pos + self.filled as u64)?;
        }
        Ok(())
    }
}

/// The largest content [`write_new_direct`] writes.
pub const DIRECT_WHOLE_MAX: usize = DIRECT_BLOCK;

/// A file's whole content (at most [`DIRECT_WHOLE_MAX`] bytes) at a block-aligned place
/// in a buffer that also holds its padding to the next block: what [`write_new_direct`]
/// writes without copying it again.
pub struct DirectContent {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl DirectContent {
    /// `len` zero bytes (and zero padding).
    pub fn zeroed(len: usize) -> DirectContent {
        let buf = vec![0u8; len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN + DIRECT_ALIGN];
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        DirectContent { buf, start, len }
    }

    pub fn bytes(&self) -> &[u8] {
        self.buf
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let (start, len) = (self.start, self.len);
        self.buf.get_mut(start..start + len).unwrap_or_default()
    }

    /// The content with its zero padding, as whole blocks; `None` if the buffer could
    /// not be aligned.
    fn blocks(&mut self) -> Option<&[u8]> {
        let padded = self.len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let (start, len) = (self.start, self.len);
        let block = self.buf.get_mut(start..start + padded)?;
        // Zero since made, unless the caller wrote past the content through a bug.
        block.get_mut(len..)?.fill(0);
        (block.as_ptr().align_offset(DIRECT_ALIGN) == 0).then_some(&*block)
    }
}

/// Write `bytes` (at most [`DIRECT_WHOLE_MAX`]) as the whole content of the new, empty
/// file at `path`, with `O_DIRECT` (see [`DirectFile`] for why), from an aligned buffer
/// the calling thread keeps. `Ok(false)` when nothing was written because the file
/// system takes no direct writes (or the bytes are too many): the caller writes them
/// through the page cache. Durable, like any write, only once synced.
pub fn write_new_direct(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    thread_local! {
        static ALIGNED: std::cell::RefCell<Option<DirectContent>> = const { std::cell::RefCell::new(None) };
    }
    if bytes.len() > DIRECT_WHOLE_MAX {
        return Ok(false);
    }
    ALIGNED.with(|cell| {
        let slot = &mut *cell.borrow_mut();
        let content = slot.get_or_insert_with(|| DirectContent::zeroed(DIRECT_WHOLE_MAX));
        content.len = bytes.len();
        content.bytes_mut().copy_from_slice(bytes);
        write_content_direct(path, content)
    })
}

/// [`write_new_direct`] of content gathered in place.
pub fn write_content_direct(path: &Path, content: &mut DirectContent) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let len = content.len;
    let Some(block) = content.blocks() else {
        return Ok(false);
    };
    let Ok(file) = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    else {
        return Ok(false);
    };
    match file.write_all_at(block, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Refused; anything a partial write left goes, for the caller's write.
            file.set_len(0)?;
            return Ok(false);
        }
        r => r?,
    }
    if block.len() != len {
        file.set_len(len as u64)?;
    }
    Ok(true)
}

impl Write for DirectFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(DIRECT_BLOCK - self.filled);
        let at = self.start + self.filled;
        self.buf[at..at + n].copy_from_slice(&bytes[..n]);
        self.filled += n;
        if self.filled == DIRECT_BLOCK {
            self.write_out()?;
        }
        Ok(n)
    }

    /// Nothing: the gathered tail is written by [`FsFile::sync`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsFile for DirectFile {
    fn sync(&mut self) -> io::Result<()> {
        if self.filled > 0 {
            self.write_out()?;
        }
        self.file.sync_all()
    }

    fn buffers(&self) -> bool {
        true
    }
}

/// A file open for positioned reads, shared by threads.
pub trait FsRead: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Read from `offset` into `buf` straight from the disk (`O_DIRECT`), skipping the
    /// page cache, when the bytes there are not in it: `buf`, `offset` and `buf.len()`
    /// must be multiples of [`DIRECT_ALIGN`]. The bytes read (fewer at the end of the
    /// file), or `None` where it was not done: read through the cache instead.
    fn read_uncached_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<Option<usize>> {
        Ok(None)
    }
}

impl FsRead for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// A file of the real file system open for reading, which reads bytes that are not in
/// the page cache directly (see [`FsRead::read_uncached_at`]): a restore reads each
/// pack once, and through the page cache every byte is first copied into a fresh cache
/// page, which on a virtual machine's disk cost more kernel time than the rest of the
/// restore (41% of a restore's CPU samples were that copy).
struct ReadFile {
    file: File,
    path: PathBuf,
    /// The same file opened again with `O_DIRECT`, at its first uncached read; `None`
    /// where the file system refuses the flag, or a direct read failed.
    direct: std::sync::OnceLock<std::sync::Mutex<Option<Arc<File>>>>,
}

impl FsRead for ReadFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn read_uncached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<Option<usize>> {
        use std::os::unix::fs::OpenOptionsExt;
        // Never an error: a direct read that fails is done again through the cache.
        let aligned = offset.is_multiple_of(DIRECT_ALIGN as u64)
            && buf.len().is_multiple_of(DIRECT_ALIGN)
            && buf.as_ptr().align_offset(DIRECT_ALIGN) == 0;
        if !aligned || crate::sys::cached_at(&self.file, offset) {
            return Ok(None);
        }
        let slot = self.direct.get_or_init(|| {
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path);
            std::sync::Mutex::new(f.ok().map(Arc::new))
        });
        let Some(direct) = slot.lock().ok().and_then(|d| d.clone()) else {
            return Ok(None);
        };
        match FileExt::read_at(&*direct, buf, offset) {
            Ok(n) => Ok(Some(n)),
            // Refused (EINVAL), or failed: read through the cache instead, which meets a
            // failure of the disk itself again and reports it as before.
            Err(_) => {
                if let Ok(mut d) = slot.lock() {
                    *d = None;
                }
                Ok(None)
            }
        }
    }
}

/// What a directory entry is (symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Other,
}

/// The file operations of the local store. Only `sync` of a file and `sync_dir` make
/// anything durable; everything else may be lost by a crash until they return.
pub trait Fs: Send + Sync {
    /// A new file in `dir` with a unique name starting with `prefix`, open for writing.
    fn create_temp(&self, dir: &Path, prefix: &str) -> io::Result<(Box<dyn FsFile>, PathBuf)>;
    /// [`Fs::create_temp`] for a large file written once in sequence and not read back
    /// soon (a pack): where the file system allows, one that skips the page cache.
    fn create_temp_direct(
        &self,
        dir: &Path,
        prefix: &str,
    ) -> io::Result<(Box<dyn FsFile>, PathBuf)> {
        self.create_temp(dir, prefix)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync a directory, so that the entries created, renamed or removed in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Create one directory in an existing parent; `AlreadyExists` when it is there.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FsRead>>;
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// What `path` names; `NotFound` when nothing.
    fn kind(&self, path: &Path) -> io::Result<EntryKind>;
    /// The names in a directory and what they are.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, EntryKind)>>;
}

/// The real file system.
pub struct StdFs;

fn kind_of(t: fs::FileType) -> EntryKind {
    if t.is_dir() {
        EntryKind::Dir
    } else if t.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

impl Fs for StdFs {
    fn create_temp(&self, dir: &Path, prefix: &str) -> io::Result<(Box<dyn FsFile>, PathBuf)> {
        let (file, path) = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(dir)?
            .into_parts();
        Ok((Box::new(file), path.keep().map_err(|e| e.error)?))
    }
    fn create_temp_direct(
        &self,
        dir: &Path,
        prefix: &str,
    ) -> io::Result<(Box<dyn FsFile>, PathBuf)> {
        let (file, path) = self.create_temp(dir, prefix)?;
        match DirectFile::open(&path) {
            Some(direct) => Ok((Box::new(direct), path)),
            None => Ok((file, path)),
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|f| f.sync_all())
    }
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FsRead>> {
        Ok(Arc::new(ReadFile {
            file: File::open(path)?,
            path: path.to_path_buf(),
            direct: std::sync::OnceLock::new(),
        }))
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
    fn kind(&self, path: &Path) -> io::Result<EntryKind> {
        Ok(kind_of(fs::symlink_metadata(path)?.file_type()))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, EntryKind)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            out.push((name, kind_of(e.file_type()?)));
        }
        Ok(out)
    }
}

/// The directory holding `path`; `.` for a bare file name (whose parent is empty).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Write `bytes` to `path` on `fs` atomically and durably.
pub fn write_atomic(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let (mut file, tmp) = fs.create_temp(dir, ".tmp-").at(dir)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync())
        .at(&tmp)
        .and_then(|()| {
            drop(file);
            fs.rename(&tmp, path).map_err(|e| Error::io(path, e))
        });
    if let Err(e) = written {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    sync_dir_on(fs, dir)
}

/// fsync a directory so that renames and unlinks inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    sync_dir_on(&StdFs, dir)
}

/// [`sync_dir`] on `fs`.
pub fn sync_dir_on(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).at(dir)
}

/// Create a directory (and parents) and make its entry durable in its parent.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    create_dir_durable_on(&StdFs, dir)
}

/// [`create_dir_durable`] on `fs`. The parent is synced even when the directory exists
/// (see the contract above); missing parents are created the same way first.
pub fn create_dir_durable_on(fs: &dyn Fs, dir: &Path) -> Result<()> {
    let parent = parent_dir(dir);
    match fs.kind(dir) {
        // (A symlink to a directory, e.g. a repository on another disk, is fine.)
        Ok(EntryKind::File) => {
            return Err(Error::io(
                dir,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ),
            ))
        }
        // There already, but perhaps made by a run that died before syncing the parent.
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent_missing = fs
                .kind(parent)
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
            if parent_missing && parent != dir {
                create_dir_durable_on(fs, parent)?;
            }
            match fs.create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(dir, e)),
            }
        }
        Err(e) => return Err(Error::io(dir, e)),
    }
    sync_dir_on(fs, parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&StdFs, &p, b"one").unwrap();
        write_atomic(&StdFs, &p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_direct_temp_file_holds_exactly_what_was_written() {
        let block = DIRECT_BLOCK;
        // Empty, under a block, aligned, whole blocks, blocks and a tail; written in
        // pieces that straddle the block boundaries.
        for total in [0, 1, 4095, 4096, 4097, block, block + 1, 2 * block + 12345] {
            for dir in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
                if !dir.is_dir() {
                    continue;
                }
                let dir = tempfile::tempdir_in(dir).unwrap();
                let (mut f, path) = StdFs.create_temp_direct(dir.path(), "pack-").unwrap();
                let bytes: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4096) as u8).collect();
                for piece in bytes.chunks(100_003) {
                    f.write_all(piece).unwrap();
                }
                f.sync().unwrap();
                assert_eq!(fs::read(&path).unwrap(), bytes, "{total} bytes");
                // Bytes written after a sync land after the ones before it.
                f.write_all(b"more").unwrap();
                f.sync().unwrap();
                let mut want = bytes.clone();
                want.extend_from_slice(b"more");
                assert_eq!(fs::read(&path).unwrap(), want, "{total} bytes and more");
            }
        }
    }

    #[test]
    fn a_direct_write_the_file_system_refuses_goes_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = StdFs.create_temp(dir.path(), "pack-").unwrap();
        let Some(mut f) = DirectFile::open(&path) else {
            return; // no O_DIRECT here at all
        };
        // A buffer off the alignment is refused (EINVAL) by a file system that does
        // direct writes, as a file system that does none refuses aligned ones.
        f.start += 1;
        let bytes: Vec<u8> = (0..DIRECT_BLOCK + 5000).map(|i| (i % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        f.sync().unwrap();
        assert!(!f.direct, "the misaligned write was not refused");
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn directories_are_created_with_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b/c");
        create_dir_durable(&d).unwrap();
        create_dir_durable(&d).unwrap();
        assert!(d.is_dir());
        fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(create_dir_durable(&dir.path().join("file")).is_err());
    }
}
