//! The state of a database's files as a stat shows it: what tells a later backup, without
//! opening the database, that nothing has changed since a capture.
//!
//! Every write SQLite makes to committed content goes to the database file (rollback
//! mode, a checkpoint, VACUUM) or to its `-wal` (WAL mode), and moves that file's mtime
//! and ctime (which no one can set back); a replacement changes the inode. So equal
//! states of the file and the `-wal`, each stat-ed, mean equal content, provided every
//! time in them is older than the capture's start by more than the file system's
//! timestamp granularity: a write in the same tick as the stat could otherwise leave the
//! times as they were (the racy-timestamp rule the files cache follows). The database
//! header's change counter and the WAL header (whose salts change whenever the `-wal` is
//! started over) are compared as well. The `-wal`'s ctime is not: SQLite running as root
//! gives the `-wal` the database's owner on every open (jellysnap's own included), which
//! moves its ctime without any write. The `-shm` holds no content (it indexes the `-wal` and is rebuilt from
//! it), so its presence does not matter; a non-empty `-journal` means a write was under
//! way or interrupted, and such a state is never trusted.
//!
//! Reading the header opens the file with plain I/O: the caller holds no SQLite
//! connection to it (closing the descriptor would drop that connection's POSIX locks).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::format::snapshot::{DbSourceState, FileState, WalState};
use crate::jellyfin::running::side_file;

/// The state of `db` and its `-wal`; `None` when it cannot be trusted to stand for the
/// content (a `-journal` in use, a file too short to hold a header, or an error).
pub fn read(db: &Path, jellyfin_version: Option<String>) -> Option<DbSourceState> {
    let journal = side_file(db, "-journal");
    if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
        return None;
    }
    let before = stat(db)?;
    let mut header = [0u8; 100];
    File::open(db).ok()?.read_exact(&mut header).ok()?;
    let counter = header.get(24..28)?.try_into().ok()?;
    let wal = match std::fs::metadata(side_file(db, "-wal")) {
        Ok(_) => Some(wal_state(&side_file(db, "-wal"))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => return None,
    };
    // A write between the stat and the header read would pair a new counter with old
    // times.
    if stat(db)? != before {
        return None;
    }
    Some(DbSourceState {
        db: before,
        change_counter: u32::from_be_bytes(counter),
        wal,
        jellyfin_version,
        jellyfin_versions: None,
    })
}

/// Whether every time in `state` is before `limit_ns` (Unix nanoseconds).
pub fn settled_before(state: &DbSourceState, limit_ns: i64) -> bool {
    let db = &state.db;
    db.mtime_ns < limit_ns
        && db.ctime_ns < limit_ns
        && state.wal.as_ref().is_none_or(|w| w.mtime_ns < limit_ns)
}

/// Whether two states are of the same content: everything but the recorded Jellyfin
/// version (derived from the content) must be equal.
pub fn same_files(a: &DbSourceState, b: &DbSourceState) -> bool {
    a.db == b.db && a.change_counter == b.change_counter && a.wal == b.wal
}

/// The `-wal`'s stat and header, read as one state (a write between them gives none).
fn wal_state(wal: &Path) -> Option<WalState> {
    let before = stat(wal)?;
    let mut header = Vec::with_capacity(32);
    File::open(wal)
        .ok()?
        .take(32)
        .read_to_end(&mut header)
        .ok()?;
    if stat(wal)?.mtime_ns != before.mtime_ns {
        return None;
    }
    Some(WalState {
        dev: before.dev,
        ino: before.ino,
        size: before.size,
        mtime_ns: before.mtime_ns,
        header: if header.len() == 32 {
            crate::id::hex(&header)
        } else {
            String::new()
        },
    })
}

fn stat(path: &Path) -> Option<FileState> {
    std::fs::metadata(path).ok().map(|m| file_state(&m))
}

fn file_state(m: &std::fs::Metadata) -> FileState {
    // Saturated rather than overflowed: a time out of range compares equal to itself.
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    FileState {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn db(dir: &Path) -> std::path::PathBuf {
        let db = dir.join("x.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        db
    }

    #[test]
    fn a_write_changes_the_state_and_the_change_counter() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let a = read(&db, None).unwrap();
        assert_eq!(read(&db, None).unwrap(), a);
        let c = Connection::open(&db).unwrap();
        c.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let b = read(&db, None).unwrap();
        assert!(!same_files(&a, &b));
        assert_ne!(a.change_counter, b.change_counter);
    }

    #[test]
    fn a_commit_to_the_wal_changes_the_state_but_not_the_files_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let c = Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;")
            .unwrap();
        c.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let a = read(&db, None).unwrap();
        let header = a.wal.as_ref().unwrap().header.clone();
        assert_eq!(header.len(), 64, "a 32-byte WAL header in hex");
        c.execute("INSERT INTO t VALUES (3)", []).unwrap();
        let b = read(&db, None).unwrap();
        assert_eq!((a.db, a.change_counter), (b.db, b.change_counter));
        assert!(!same_files(&a, &b));
    }

    #[test]
    fn a_journal_in_use_is_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        std::fs::write(side_file(&db, "-journal"), b"x").unwrap();
        assert_eq!(read(&db, None), None);
        std::fs::write(side_file(&db, "-journal"), b"").unwrap();
        assert!(read(&db, None).is_some());
    }

    #[test]
    fn recent_times_are_not_settled() {
        let dir = tempfile::tempdir().unwrap();
        let s = read(&db(dir.path()), None).unwrap();
        assert!(!settled_before(&s, s.db.mtime_ns));
        assert!(!settled_before(&s, s.db.ctime_ns));
        assert!(settled_before(&s, s.db.mtime_ns.max(s.db.ctime_ns) + 1));
        let mut w = s.clone();
        w.wal = Some(WalState {
            dev: 1,
            ino: 2,
            size: 0,
            mtime_ns: i64::MAX,
            header: String::new(),
        });
        assert!(!settled_before(&w, s.db.mtime_ns.max(s.db.ctime_ns) + 1));
    }
}
