//! Consistent capture of a live SQLite database (DESIGN §3).
//!
//! The source is opened read-only and copied with SQLite's online backup API in a single
//! `step(-1)`: one read transaction, so the copy is a consistent state even while the
//! server writes (committed data living only in the WAL included). We never open the
//! database file with plain file I/O (that would drop SQLite's POSIX locks of this
//! process), never checkpoint and never touch its `-wal`/`-shm`.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, IoContext, Result};

/// Capture `src` into a new temporary file in `tmp_dir`. The file is removed when the
/// returned path is dropped.
pub fn capture(src: &Path, tmp_dir: &Path) -> Result<tempfile::TempPath> {
    let fail = |detail: String| Error::DatabaseCapture {
        path: src.to_path_buf(),
        detail,
    };
    let tmp = tempfile::Builder::new()
        .prefix("db-capture-")
        .tempfile_in(tmp_dir)
        .at(tmp_dir)?
        .into_temp_path();
    let source = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(format!("cannot open read-only: {e}")))?;
    source
        .busy_timeout(Duration::from_secs(30))
        .map_err(|e| fail(e.to_string()))?;
    let mut dest =
        Connection::open(&tmp).map_err(|e| fail(format!("cannot create the copy: {e}")))?;
    {
        let backup = Backup::new(&source, &mut dest).map_err(|e| fail(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match backup.step(-1).map_err(|e| fail(e.to_string()))? {
                StepResult::Done => break,
                StepResult::Busy | StepResult::Locked | StepResult::More
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => {
                    return Err(fail(format!(
                        "the server kept the database busy for 120 s ({other:?}); retry"
                    )))
                }
            }
        }
    }
    dest.close().map_err(|(_, e)| fail(e.to_string()))?;
    drop(source);
    Ok(tmp)
}

/// Write the logical dump (`logical::dump`) of a captured copy into a new temporary file
/// in `tmp_dir`. The copy is private to us, so it is read without any concern for the live
/// server. `Ok(Err(reason))` when the dump refuses the database (virtual tables, an
/// unsupported encoding, or SQLite failing to read it logically): the caller keeps the
/// physical copy instead.
pub fn dump_logical(
    copy: &Path,
    tmp_dir: &Path,
) -> Result<std::result::Result<tempfile::TempPath, String>> {
    use crate::jellyfin::logical::{self, LogicalError};
    let mut tmp = tempfile::Builder::new()
        .prefix("db-capture-")
        .tempfile_in(tmp_dir)
        .at(tmp_dir)?;
    let conn = match Connection::open_with_flags(
        copy,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("cannot open the copy: {e}"))),
    };
    match logical::dump(&conn, tmp.as_file_mut()) {
        Ok(_) => Ok(Ok(tmp.into_temp_path())),
        Err(LogicalError::Io(e)) => Err(crate::error::Error::io(tmp.path(), e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Run `PRAGMA integrity_check` on a database file (a restored or captured copy).
pub fn integrity_check(path: &Path) -> Result<String> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| {
            Error::DatabaseCapture {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        })?;
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .map_err(|e| Error::DatabaseCapture {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}
