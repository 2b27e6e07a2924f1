//! Opening a database that a server may be using, without disturbing it.
//!
//! A plain read-only SQLite connection is not harmless. It writes read marks into the
//! `-shm`. When no other process holds the WAL-index dead-man switch — a crashed server's
//! leftovers, or a live server whose process lost its POSIX locks — it believes it is the
//! first connection and truncates and rebuilds the `-shm` under the server. Without a
//! `-wal` it creates `-wal` and `-shm` beside the database and leaves them (and fails in a
//! read-only data dir). So the open mode follows from what lies beside the database and
//! from whether another process holds its locks:
//!
//! | beside the database        | locks held | open                                          |
//! |----------------------------|------------|-----------------------------------------------|
//! | no `-wal`, no `-journal`   | none       | `immutable=1`: no locks, no side files        |
//! | `-shm`                     | any        | `readonly_shm=1`                              |
//! | `-wal`/`-journal`, no `-shm` | none     | a private copy of the files, opened there     |
//! | no `-shm`                  | some       | plain read-only (rollback journal in use)     |
//!
//! `immutable=1` reads the file with no locks, so the file's identity, size, mtime and
//! ctime are compared once the copy is made ([`LiveDb::finish`]): a server that started
//! and wrote meanwhile fails the copy instead of tearing it, and the caller makes it again
//! with [`open_locking`] (a rollback-journal writer holds no lock between two commits, so
//! the file looked unused: it is then read under SQLite's read lock). With `readonly_shm=1` the
//! `-shm` is mapped read-only: a live server's WAL-index is used as it is; without a live
//! one SQLite rebuilds the index in private memory from the `-wal`. Either way only read
//! locks are taken and neither side file is written. Every connection sets
//! `SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`, so closing it never tries the exclusive lock of a
//! close-time checkpoint.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::jellyfin::running::{probe_locks, side_file, LockProbe};
use crate::jellyfin::sqlite::{connect_shared, file_uri};

/// How the source database was opened (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Immutable,
    ReadOnlyShm,
    PrivateCopy,
    ReadOnly,
}

/// An open source database; derefs to its connection.
pub struct LiveDb {
    conn: Connection,
    path: PathBuf,
    /// For `Immutable`: the file as it was before it was opened.
    stamp: Option<Stamp>,
    _private: Option<tempfile::TempDir>,
}

impl std::ops::Deref for LiveDb {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl LiveDb {
    /// Whether the database is read without taking any lock (`immutable=1`): then
    /// [`finish`](LiveDb::finish) checks nothing wrote it meanwhile.
    pub fn lock_free(&self) -> bool {
        self.stamp.is_some()
    }

    /// Close the connection, and fail if the database may have changed under a read that
    /// took no locks.
    pub fn finish(self) -> Result<(), String> {
        drop(self.conn);
        let Some(before) = self.stamp else {
            return Ok(());
        };
        // A process that wrote meanwhile (one that started, or a rollback-journal writer
        // that held no lock when the mode was chosen) may have done so within the
        // timestamp granularity of the stamp: its locks give it away.
        if Stamp::of(&self.path).ok() != Some(before) || probe_locks(&self.path) != LockProbe::Free
        {
            return Err(format!(
                "another process wrote to {} while it was read without locks (no process held its locks when the backup began); retry",
                self.path.display()
            ));
        }
        Ok(())
    }
}

/// Open `db` for a consistent read that leaves it and its side files as they are.
/// `scratch` holds the private copy when one is needed.
///
/// Contract: this process holds no other SQLite connection to `db` (the lock probe opens
/// and closes the files, which would drop that connection's POSIX locks).
pub fn open(db: &Path, scratch: &Path) -> Result<LiveDb, String> {
    open_as(db, scratch, false)
}

/// [`open`] after a read without locks was written under ([`LiveDb::finish`]): a
/// database in rollback-journal mode is then read under SQLite's locks, as when its
/// writer holds them (the writer commits while no lock is held between its
/// transactions, so the file looked unused). A WAL database is opened as [`open`] does:
/// a writer that started left a `-shm` to read through.
pub fn open_locking(db: &Path, scratch: &Path) -> Result<LiveDb, String> {
    open_as(db, scratch, true)
}

fn open_as(db: &Path, scratch: &Path, locking: bool) -> Result<LiveDb, String> {
    let mode = match choose_mode(db)? {
        Mode::Immutable if locking && rollback_journal(db) => Mode::ReadOnly,
        mode => mode,
    };
    let query = match mode {
        Mode::Immutable => "mode=ro&immutable=1",
        Mode::ReadOnlyShm => "mode=ro&readonly_shm=1",
        Mode::PrivateCopy => return open_private_copy(db, scratch),
        Mode::ReadOnly => "mode=ro",
    };
    let stamp = if query.contains("immutable") {
        Some(Stamp::of(db).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let conn = connect_shared(
        &file_uri(db, query),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )?;
    Ok(LiveDb {
        conn,
        path: db.to_path_buf(),
        stamp,
        _private: None,
    })
}

/// Whether `db`'s header says rollback-journal mode (file format versions 1, not 2: WAL).
fn rollback_journal(db: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(db)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok()
        && header[18] == 1
        && header[19] == 1
}

/// How `db` can be read: decided from its side files and whether anyone holds its locks.
fn choose_mode(db: &Path) -> Result<Mode, String> {
    let present = |suffix: &str| {
        std::fs::metadata(side_file(db, suffix))
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    };
    let shm = side_file(db, "-shm").exists();
    let (wal, journal) = (present("-wal"), present("-journal"));
    let held = match probe_locks(db) {
        LockProbe::Free => false,
        LockProbe::Held { .. } => true,
        LockProbe::Unreadable { file, error } => {
            return Err(format!(
                "cannot open {} ({error}); run the backup as root or as the jellyfin user",
                file.display()
            ))
        }
    };
    Ok(if !held && !wal && !journal {
        Mode::Immutable
    } else if shm {
        Mode::ReadOnlyShm
    } else if !held {
        Mode::PrivateCopy
    } else {
        Mode::ReadOnly
    })
}

/// No server has the database open, and a `-wal` or `-journal` beside it holds state
/// that SQLite would have to write (a `-shm`, a rollback) to read: copy the files into
/// scratch space and read the copy, which SQLite may then change as it likes.
fn open_private_copy(db: &Path, scratch: &Path) -> Result<LiveDb, String> {
    let dir = tempfile::Builder::new()
        .prefix("db-source-")
        .tempdir_in(scratch)
        .map_err(|e| format!("cannot create a scratch dir in {}: {e}", scratch.display()))?;
    let copy = dir.path().join("db");
    for suffix in ["", "-wal", "-journal"] {
        let from = side_file(db, suffix);
        let Ok(before) = Stamp::of(&from) else {
            continue;
        };
        let to = side_file(&copy, suffix);
        std::fs::copy(&from, &to).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
        if Stamp::of(&from).ok() != Some(before) {
            return Err(format!(
                "{} changed while it was copied (did the server start?); retry",
                from.display()
            ));
        }
    }
    let conn = connect_shared(
        copy.to_str().ok_or("scratch path is not UTF-8")?,
        OpenFlags::SQLITE_OPEN_READ_WRITE,
    )?;
    Ok(LiveDb {
        conn,
        path: copy,
        stamp: None,
        _private: Some(dir),
    })
}

/// What changes when anything writes the file or replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_db(dir: &Path) -> PathBuf {
        let db = dir.join("jellyfin.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);",
        )
        .unwrap();
        drop(c);
        assert!(!side_file(&db, "-wal").exists());
        db
    }

    #[test]
    fn a_stopped_servers_database_is_read_without_side_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = wal_db(dir.path());
        assert_eq!(choose_mode(&db).unwrap(), Mode::Immutable);
        let src = open(&db, dir.path()).unwrap();
        let n: i64 = src
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        src.finish().unwrap();
        for x in ["-wal", "-shm", "-journal"] {
            assert!(!side_file(&db, x).exists(), "{x}");
        }
    }

    #[test]
    fn a_write_during_an_immutable_read_fails_the_capture() {
        let dir = tempfile::tempdir().unwrap();
        let db = wal_db(dir.path());
        assert_eq!(choose_mode(&db).unwrap(), Mode::Immutable);
        let src = open(&db, dir.path()).unwrap();
        // A server starting meanwhile: writes, and checkpoints into the file on close.
        let c = Connection::open(&db).unwrap();
        c.execute("INSERT INTO t VALUES (3)", []).unwrap();
        drop(c);
        let err = src.finish().unwrap_err();
        assert!(err.contains("while it was read without locks"), "{err}");
    }
}
