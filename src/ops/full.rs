//! A repository whose file system is full, said as one error. Every write into the
//! repository (a pack, a record, the database copy, the index, a lock) can meet a full
//! file system, an exhausted quota or no free inodes; whichever meets it first, the
//! command ends with the same error, naming the repository and what to do next.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::store::Place;

/// Fewer free inodes than this, with free bytes to spare, is read as "no inodes left":
/// by the time the error is reported the run's temp files are gone and have given a few
/// back.
const FEW_INODES: u64 = 64;

/// `e` as [`Error::RepositoryFull`] when it is a write into `place`'s local files (the
/// repository itself, or a remote repository's local state) that met a full file system;
/// any other error as it is. `command` is what the user ran (`backup`, `gc`, ...).
pub fn repository_full(e: Error, place: &Place, command: &str) -> Error {
    let Error::Io { path, source } = e else {
        return e;
    };
    let reason = match source.kind() {
        ErrorKind::StorageFull => "is full",
        ErrorKind::QuotaExceeded => "is over its disk quota",
        _ => return Error::Io { path, source },
    };
    if !roots(place).iter().any(|r| path.starts_with(r)) {
        return Error::Io { path, source };
    }
    let free = existing(&path).and_then(|p| crate::sys::free_space(p).ok());
    let inodes = existing(&path).and_then(|p| crate::sys::free_inodes(p).ok().flatten());
    let reason = match inodes {
        Some(n)
            if source.kind() == ErrorKind::StorageFull
                && (n == 0 || (n < FEW_INODES && free.is_some_and(|f| f >= 1 << 20))) =>
        {
            "can hold no more files (no free inodes left)"
        }
        _ => reason,
    };
    // A repository being created (no config yet) has no snapshots to forget.
    let created = place
        .location
        .local_path()
        .is_none_or(|p| p.join("config").exists());
    let next = match command {
        _ if !created => format!("The repository was not created (its config is not written). Free space on that file system, or pick a repository on another one; then run {command} again"),
        "gc" => "Every snapshot is intact; what gc did not finish, the next gc does. gc writes the live part of a pack anew before it deletes the pack: run `jellysnap gc --max-unused 100` first (it deletes the packs nothing uses and writes no new pack), or free space on that file system, or move the repository to a larger disk; then run gc again".to_string(),
        "check" if path.parent().and_then(Path::file_name) == Some("tmp".as_ref()) => "check stopped before it finished: this says nothing about the snapshots. check --read-data rebuilds each database in the repository's tmp dir: free space on that file system (at least the size of the largest database), then run check again".to_string(),
        _ => format!("Nothing was committed (no snapshot or record was written or changed; packs this run finished stay, for the next run to use), and its temp files are removed. Free space on that file system (remove snapshots you no longer need with `jellysnap forget`, then `jellysnap gc --max-unused 100`, which deletes the packs nothing uses and writes no new pack), or move the repository to a larger disk; then run {command} again"),
    };
    Error::RepositoryFull {
        repo: place.location.display(),
        at: path,
        reason,
        source,
        free,
        next,
    }
}

/// The local directories a command writes for `place`: a local repository itself; for a
/// remote one, its local state in the cache dir.
fn roots(place: &Place) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = place.location.local_path() {
        out.push(p.to_path_buf());
    }
    if place.shared_by_hosts() {
        out.push(place.cache_dir.clone());
    }
    out
}

/// `path` or its nearest ancestor that exists (the failed write's file may not).
fn existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_file_system_under_the_repository_is_said_as_a_full_repository() {
        let dir = tempfile::tempdir().unwrap();
        let place = Place::local(dir.path());
        let full = |path: &Path, kind: ErrorKind| {
            repository_full(Error::io(path, kind.into()), &place, "backup")
        };
        let inside = dir.path().join("tmp/pack-x");
        assert!(matches!(
            full(&inside, ErrorKind::StorageFull),
            Error::RepositoryFull { .. }
        ));
        assert!(matches!(
            full(&inside, ErrorKind::QuotaExceeded),
            Error::RepositoryFull { .. }
        ));
        // Another file system's, or another error at the repository: as they were.
        assert!(matches!(
            full(Path::new("/elsewhere/x"), ErrorKind::StorageFull),
            Error::Io { .. }
        ));
        assert!(matches!(
            full(&inside, ErrorKind::PermissionDenied),
            Error::Io { .. }
        ));
        let e = full(&inside, ErrorKind::StorageFull).to_string();
        assert!(
            e.contains(&format!("repository {}", dir.path().display())),
            "{e}"
        );
        // A repository being created: nothing to forget there yet.
        assert!(
            e.contains("was not created") && !e.contains("forget"),
            "{e}"
        );
        std::fs::write(dir.path().join("config"), b"").unwrap();
        let e = full(&inside, ErrorKind::StorageFull).to_string();
        assert!(e.contains("jellysnap forget"), "{e}");
    }
}
