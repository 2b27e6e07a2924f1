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

impl LockGuard {
    /// Write into the lock file who holds it (`command`, this process, since when), for
    /// a process that waits for it to say what it waits for. Best effort: the lock is
    /// what excludes, the note only informs.
    pub fn note_holder(&self, command: &str) {
        use std::os::unix::fs::FileExt;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let text = format!("{} {started} {command}\n", std::process::id());
        let _ = self
            ._file
            .set_len(0)
            .and_then(|()| self._file.write_all_at(text.as_bytes(), 0));
    }
}

/// Take the lock, waiting at most `wait` for a conflicting holder to finish.
pub fn lock(path: &Path, mode: LockMode, wait: Duration) -> Result<LockGuard> {
    lock_noting(path, mode, wait, &|_| {})
}

/// Who holds a lock, as its holder noted in the lock file ([`LockGuard::note_holder`]):
/// "`<pid> <unix seconds it started> <command>`".
fn holder_of(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let started: i64 = it.next()?.parse().ok()?;
    let command = it.collect::<Vec<_>>().join(" ");
    let hhmm = crate::format::timefmt::utc(started.saturating_mul(1_000_000_000));
    let hhmm = hhmm.get(11..16)?;
    Some(format!(
        "waiting for the {} started at {hhmm} UTC (pid {pid}) to finish",
        if command.is_empty() {
            "command"
        } else {
            &command
        }
    ))
}

/// [`lock`], calling `on_wait` once with what it waits for (the holder, when it noted
/// itself) when the lock is held by another.
pub fn lock_noting(
    path: &Path,
    mode: LockMode,
    wait: Duration,
    on_wait: &dyn Fn(&str),
) -> Result<LockGuard> {
    let mut told = wait.is_zero();
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
                if !told {
                    told = true;
                    on_wait(&holder_of(path).unwrap_or_else(|| {
                        "waiting for another jellysnap process to finish".to_string()
                    }));
                }
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
