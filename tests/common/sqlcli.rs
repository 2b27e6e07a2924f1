//! The system `sqlite3` CLI as the outside judge of databases: another SQLite version and
//! build than jellysnap's own (CI installs it). Shared by the rollback test files.
use std::fs;
use std::os::unix::process::ExitStatusExt;
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

/// `sqlite3 COPY SQL` on a copy of the main file (so no -wal/-shm appear next to `db`).
pub fn sqlite3_on_copy(db: &Path, sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    fs::copy(db, &copy).unwrap();
    sqlite3(&copy, sql)
}

/// `sqlite3 DB .dump` of a copy of the main file.
pub fn dump_of(db: &Path) -> String {
    sqlite3_on_copy(db, ".dump")
}

/// `sqlite3 .dump` of the database as a reader sees it now (its `-wal` included), taken
/// from a copy so that nothing is written beside the source.
pub fn live_dump(db: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    fs::copy(db, &copy).unwrap();
    if side(db, "-wal").exists() {
        fs::copy(side(db, "-wal"), side(&copy, "-wal")).unwrap();
    }
    sqlite3(&copy, ".dump")
}

/// `db` with `suffix` appended (`-wal`, `-shm`, `-journal`).
pub fn side(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// A server killed after it committed `statements` (one per string) to its WAL, as
/// Python's sqlite3 (the system SQLite) writes them: the changes live only in `-wal`.
pub fn commit_to_wal_and_die(db: &Path, statements: &[&str]) {
    let script = r#"
import os, signal, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA wal_autocheckpoint=0")
for sql in sys.argv[2:]:
    c.execute(sql)
os.kill(os.getpid(), signal.SIGKILL)
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(db)
        .args(statements)
        .status()
        .expect("python3 is needed");
    assert_eq!(st.signal(), Some(9), "the writer was to be killed: {st}");
    assert!(fs::metadata(side(db, "-wal")).unwrap().len() > 0);
}

/// A stand-in process (Python's SQLite) with `db` open in SQLite locking mode `mode`,
/// once it has run `sql` on it; it holds it until killed.
pub fn hold(db: &Path, mode: &str, sql: &str) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA locking_mode={mode}')\n\
             c.execute(sys.argv[2]).fetchall()\n\
             print('held', flush=True)\n\
             time.sleep(300)\n"
        ))
        .arg(db)
        .arg(sql)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    holder
}
