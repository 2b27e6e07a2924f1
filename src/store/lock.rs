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
