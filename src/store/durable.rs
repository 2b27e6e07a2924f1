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
}

impl FsFile for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

/// A file open for positioned reads, shared by threads.
pub trait FsRead: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl FsRead for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
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
        Ok(Arc::new(File::open(path)?))
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
