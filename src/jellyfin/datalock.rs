//! The data dir lock: a backup and an in-place restore of one data dir exclude each other,
//! or the backup would save a state that never existed (half old, half new files) and
//! list the restore's temp files as vanished. It is an OS advisory lock (`flock`) on the
//! data dir itself, opened read-only as a directory, so nothing is written into
//! Jellyfin's data dir; it is held by an open file for the life of the guard, and the
//! kernel drops it when the process dies.
//!
//! - A backup holds it shared for its whole run: backups of one data dir into several
//!   repositories run together.
//! - An in-place restore holds it exclusive, taken before it changes anything.
//!
//! Neither waits: a restore may take long, and the admin must learn at once that the
//! other command runs rather than find a backup stuck behind it.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

#[derive(Debug)]
pub struct DataDirLock {
    _dir: File,
}

fn open(data_dir: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(data_dir)
        .at(data_dir)
}

fn busy(data_dir: &Path, detail: &str) -> Error {
    Error::DataDirLocked {
        path: data_dir.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// The shared lock a backup of `data_dir` holds while it runs.
pub fn for_backup(data_dir: &Path) -> Result<DataDirLock> {
    let dir = open(data_dir)?;
    match dir.try_lock_shared() {
        Ok(()) => Ok(DataDirLock { _dir: dir }),
        Err(TryLockError::WouldBlock) => Err(busy(
            data_dir,
            "another jellysnap process is restoring it in place, and a backup now would save a state that never existed; run the backup again once the restore has finished",
        )),
        Err(TryLockError::Error(e)) if unsupported(&e) => Ok(DataDirLock { _dir: dir }),
        Err(TryLockError::Error(e)) => Err(Error::io(data_dir, e)),
    }
}

/// A file system that cannot lock (some network file systems): the data dir goes
/// unlocked rather than making every backup and restore of it impossible.
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL | libc::EBADF)
    )
}

/// The exclusive lock an in-place restore into `data_dir` holds while it changes it.
pub fn for_restore(data_dir: &Path) -> Result<DataDirLock> {
    let dir = open(data_dir)?;
    match dir.try_lock() {
        Ok(()) => Ok(DataDirLock { _dir: dir }),
        Err(TryLockError::WouldBlock) => {
            // Only to name the other command: a shared lock is refused only while
            // another restore holds it exclusively.
            let other = open(data_dir)?;
            let detail = match other.try_lock_shared() {
                Ok(()) => "another jellysnap process is backing it up, and an in-place restore now would make that backup save a state that never existed; restore once the backup has finished",
                Err(_) => "another jellysnap process is restoring it in place; wait for that restore to finish",
            };
            Err(busy(data_dir, detail))
        }
        Err(TryLockError::Error(e)) if unsupported(&e) => Ok(DataDirLock { _dir: dir }),
        Err(TryLockError::Error(e)) => Err(Error::io(data_dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_share_and_a_restore_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let a = for_backup(dir.path()).unwrap();
        let b = for_backup(dir.path()).unwrap();
        let e = for_restore(dir.path()).unwrap_err();
        assert!(e.to_string().contains("backing it up"), "{e}");
        drop((a, b));
        let r = for_restore(dir.path()).unwrap();
        let e = for_backup(dir.path()).unwrap_err();
        assert!(e.to_string().contains("restoring it in place"), "{e}");
        let e = for_restore(dir.path()).unwrap_err();
        assert!(e.to_string().contains("restoring it in place"), "{e}");
        drop(r);
        for_backup(dir.path()).unwrap();
    }
}
