//! The system `sqlite3` CLI as the outside judge of databases: another SQLite version and
//! build than jellysnap's own (CI installs it). Shared by the rollback test files.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `sqlite3 DB SQL`; panics with stderr when it fails.
pub fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the system sqlite3 CLI is needed (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sqlite3 DB .dump` of a copy of the main file (so no -wal/-shm appear next to `db`).
pub fn dump_of(db: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    fs::copy(db, &copy).unwrap();
    sqlite3(&copy, ".dump")
}

/// `db` with `suffix` appended (`-wal`, `-shm`, `-journal`).
pub fn side(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}
