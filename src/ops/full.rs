//! A repository whose file system is full, said as one error. Every write into the
//! repository (a pack, a record, the database copy, the index, a lock) can meet a full
//! file system, an exhausted quota or no free inodes; whichever meets it first, the
//! command ends with the same error, naming the repository and what to do next.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::store::Place;

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
    // Compared as absolute paths: the repository may be given relative to the working
    // directory, and the path that failed may be either.
    let abs = |p: &Path| lexical(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let at = abs(&path);
    if !roots(place).iter().any(|r| at.starts_with(abs(r))) {
        return Error::Io { path, source };
    }
    let free = existing(&path).and_then(|p| crate::sys::free_space(p).ok());
    let reason = match source.kind() == ErrorKind::StorageFull && crate::sys::out_of_inodes(&path) {
        true => "can hold no more files (no free inodes left)",
        false => reason,
    };
    // A repository being created (no config yet) has no snapshots to forget.
    let local = place.location.local_path();
    let created = local.is_none_or(|p| p.join("config").exists());
    let in_scratch = path.file_name() == Some("tmp".as_ref())
        || path.parent().and_then(Path::file_name) == Some("tmp".as_ref());
    let outcome = match command {
        "backup" | "copy" => "No snapshot was committed, and this run's temp files are removed (packs it finished stay, for the next run to use).",
        "gc" => "Every snapshot is intact; what gc did not finish, the next gc does.",
        "check" => "check stopped before it finished: this says nothing about the snapshots.",
        _ => "Nothing was changed.",
    };
    let next = match command {
        // A repository elsewhere: what filled up is its local state in the cache dir.
        _ if local.is_none_or(|p| !at.starts_with(abs(p))) => format!(
            "{outcome} The full file system holds jellysnap's cache dir {}, where this repository's local state lives (index, locks, scratch space): free space there, or point XDG_CACHE_HOME at a directory on another disk (the state is read again from the repository); then run {command} again",
            place.cache_dir.display()
        ),
        _ if !created => format!("The repository was not created (its config is not written). Free space on that file system, or pick a repository on another one; then run {command} again"),
        "check" if in_scratch => format!("{outcome} check --read-data rebuilds each database in the repository's tmp dir: free space on that file system (at least the size of the largest database), then run check again"),
        "backup" | "copy" => format!("{outcome} Free space on that file system: outside the repository, or in it by removing snapshots you no longer need with `jellysnap forget` and then `jellysnap gc` (each needs a few MiB free to run); or move the repository to a larger disk. Then run {command} again"),
        "gc" => "Every snapshot is intact; what gc did not finish, the next gc does. gc writes the live part of a pack anew before it deletes the pack, and its index and lock need a few MiB: free space on that file system outside the repository (with a few MiB free, `jellysnap gc --max-unused 100` deletes the packs nothing uses and writes no new pack), or move the repository to a larger disk; then run gc again".to_string(),
        "forget" | "tag" | "name" | "repair" | "init" => format!("{outcome} {command} itself needs a few MiB free there (it writes the repository's index, lock or records): free space on that file system outside the repository, or move the repository to a larger disk; then run {command} again"),
        _ => format!("{outcome} Reading a repository writes only its lock and scratch space (a missing index is then read into memory): free space on that file system, or move the repository to a larger disk; then run {command} again"),
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

/// `path` with `.` and `..` taken out by its words alone (both paths compared are built
/// from the same repository location, so no symlink needs resolving between them).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
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
        // The repository given relative to the working directory, the failed path
        // absolute (and the other way round): the same repository.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count() - 1);
        let rel = Path::new(&up).join(dir.path().strip_prefix("/").unwrap());
        let relative = Place::local(&rel);
        for (place, at) in [
            (&relative, inside.clone()),
            (&place, rel.join("tmp/pack-x")),
        ] {
            let e = repository_full(
                Error::io(&at, ErrorKind::StorageFull.into()),
                place,
                "backup",
            );
            assert!(matches!(e, Error::RepositoryFull { .. }), "{e}");
        }
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
