//! Durability on a local file system: the one place that makes a file durable.
//!
//! Contract: a file becomes visible under its final name only after its
//! bytes are on disk. `write_atomic` writes a temp file in the same directory, fsyncs it,
//! renames it over the final name and fsyncs the directory. A failed fsync is returned as
//! an error and never retried: the caller must abandon the run (the page cache state after
//! a failed fsync is unknown).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// The directory holding `path`; `.` for a bare file name (whose parent is empty).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Write `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(bytes).at(tmp.path().to_path_buf())?;
    tmp.as_file().sync_all().at(tmp.path().to_path_buf())?;
    tmp.persist(path)
        .map_err(|e| crate::error::Error::io(path, e.error))?;
    sync_dir(dir)
}

/// fsync a directory so that renames and unlinks inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

/// Create a directory (and parents) and make its entry durable in its parent.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).at(dir)?;
    sync_dir(parent_dir(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
