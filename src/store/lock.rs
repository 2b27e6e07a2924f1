//! Repository locks (docs/ARCHITECTURE.md, "Locks"): OS advisory locks (flock) on files in
//! `<repo>/locks/`, held by an open file for the life of the guard. The kernel drops them when the
//! process dies, so a crash never leaves a stale lock.
//!
//! - `locks/repo`: shared by backup and restore, exclusive for gc and forget.
//! - `locks/writer`: exclusive while a process writes packs and the index (backups queue
//!   behind each other here; RocksDB admits one writer process at a time).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Take the lock, waiting at most `wait` for a conflicting holder to finish.
pub fn lock(path: &Path, mode: LockMode, wait: Duration) -> Result<LockGuard> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .at(path)?;
    let deadline = Instant::now() + wait;
    loop {
        let r = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match r {
            Ok(()) => return Ok(LockGuard { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    return Err(Error::Locked {
                        path: lock_repo_path(path),
                        detail: format!(
                            "{} is held{}",
                            path.file_name()
                                .map(|n| n.to_string_lossy())
                                .unwrap_or_default(),
                            if wait.is_zero() {
                                String::new()
                            } else {
                                format!(" after waiting {}s", wait.as_secs())
                            }
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
    }
}

/// Whether `e` says the repository cannot be written here (a read-only file system, a
/// directory or file this user may not write), rather than that something failed.
pub fn cannot_write(e: &Error) -> Option<&'static str> {
    let Error::Io { source, .. } = e else {
        return None;
    };
    match source.raw_os_error() {
        Some(libc::EROFS) => Some("read-only file system"),
        Some(libc::EACCES) | Some(libc::EPERM) => Some("permission denied"),
        _ => None,
    }
}

/// A reader's shared lock on a repository it cannot write (`why`): the lock file opened
/// read-only, which is enough for flock(2). `None` when there is no lock file to open
/// (a repository copied without `locks/`, or one this user may not even open it in):
/// the reader then goes on without a lock, since nothing can write through this path
/// either.
pub fn lock_shared_read_only(path: &Path) -> Result<Option<LockGuard>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::EACCES) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(LockGuard { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: lock_repo_path(path),
            detail: format!(
                "{} is held",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

fn lock_repo_path(lock_file: &Path) -> PathBuf {
    lock_file
        .parent()
        .and_then(Path::parent)
        .unwrap_or(lock_file)
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_shared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("locks")).unwrap();
        let p = dir.path().join("locks/repo");
        let a = lock(&p, LockMode::Shared, Duration::ZERO).unwrap();
        let _b = lock(&p, LockMode::Shared, Duration::ZERO).unwrap();
        assert!(matches!(
            lock(&p, LockMode::Exclusive, Duration::ZERO),
            Err(Error::Locked { .. })
        ));
        drop(a);
        drop(_b);
        let _c = lock(&p, LockMode::Exclusive, Duration::ZERO).unwrap();
    }
}
