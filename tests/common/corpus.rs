//! The database corpus of `tests/corpus/`: databases written by the system's SQLite (not
//! the bundled one), the outside oracle that compares two of them, and writers that act
//! on a live database. Everything here runs `python3` and the `sqlite3` CLI; nothing
//! opens a corpus database with rusqlite, whose SQLite is the one under test.
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");

/// A safety net against a hung command, not a timing assertion.
const HANG_LIMIT: Duration = Duration::from_secs(300);

/// One database of the corpus, as `make_dbs.py` described it in `case.json`.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    /// `logical`, `physical` or `either`.
    pub expect: String,
    pub why: String,
    pub live_writer: bool,
    pub db: PathBuf,
}

/// Why the corpus cannot run here, if it cannot: python3 with its sqlite3 module and the
/// sqlite3 CLI are needed.
pub fn missing_tools() -> Option<String> {
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let mut missing = Vec::new();
    if !ok("python3", &["-c", "import sqlite3"]) {
        missing.push("python3 (with its sqlite3 module)");
    }
    if !ok("sqlite3", &["-version"]) {
        missing.push("the sqlite3 CLI");
    }
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// Run a command to completion, killing it if it hangs.
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Drain the pipes on threads so that a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).ok();
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut b).ok();
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > HANG_LIMIT {
            child.kill().ok();
            let s = child.wait().unwrap();
            let mut stderr = t_err.join().unwrap();
            stderr.extend_from_slice(b"\n[killed: still running after 300 s]");
            return Output {
                status: s,
                stdout: t_out.join().unwrap(),
                stderr,
            };
        }
        sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn python(script: &str) -> Command {
    let mut c = Command::new("python3");
    c.arg(Path::new(SCRIPTS).join(script));
    c
}

fn text(o: &Output) -> String {
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    let e = String::from_utf8_lossy(&o.stderr);
    if !e.trim().is_empty() {
        s.push_str("\nstderr: ");
        s.push_str(e.trim());
    }
    s.trim().to_string()
}

/// `compare.py --self-test`: the oracle must catch a one-value difference of each kind.
pub fn oracle_self_test() -> Result<String, String> {
    let o = run(python("compare.py").arg("--self-test"));
    if o.status.success() {
        Ok(text(&o))
    } else {
        Err(text(&o))
    }
}

/// Build the corpus under `out`; returns its cases in name order.
pub fn make_corpus(out: &Path) -> Vec<Case> {
    let o = run(python("make_dbs.py").arg(out));
    assert!(o.status.success(), "make_dbs.py failed: {}", text(&o));
    let mut cases = Vec::new();
    for e in fs::read_dir(out).unwrap() {
        let dir = e.unwrap().path();
        let meta: Value = serde_json::from_slice(&fs::read(dir.join("case.json")).unwrap())
            .unwrap_or_else(|e| panic!("{}: bad case.json: {e}", dir.display()));
        let field = |k: &str| meta[k].as_str().unwrap_or_default().to_string();
        cases.push(Case {
            name: field("name"),
            expect: field("expect"),
            why: field("why"),
            live_writer: meta["live_writer"].as_bool().unwrap_or(false),
            db: dir.join("jellyfin.db"),
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// The oracle: `Ok` when `b` is exactly `a`, else every difference it printed.
pub fn compare(a: &Path, b: &Path) -> Result<(), String> {
    let o = run(python("compare.py").arg(a).arg(b));
    match o.status.code() {
        Some(0) => Ok(()),
        _ => Err(text(&o)),
    }
}

/// Copy a database with its WAL (never the -shm), by plain file I/O: the caller holds no
/// SQLite connection to it.
pub fn copy_db(src: &Path, dst: &Path) {
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    fs::copy(src, dst).unwrap();
    let wal = side(src, "-wal");
    if wal.exists() {
        fs::copy(&wal, side(dst, "-wal")).unwrap();
    }
}

pub use super::sqlcli::side;

/// The -wal/-shm/-journal files standing beside `db`.
pub fn side_files(db: &Path) -> Vec<String> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .filter(|s| side(db, s).exists())
        .map(|s| format!("{}{s}", db.file_name().unwrap().to_string_lossy()))
        .collect()
}

/// A minimal data dir of the official Docker layout holding `db` as its jellyfin.db;
/// returns the path of that jellyfin.db.
pub fn data_dir(dir: &Path, db: &Path) -> PathBuf {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample");
    fs::create_dir_all(dir.join("config")).unwrap();
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::copy(
        sample.join("config/system.xml"),
        dir.join("config/system.xml"),
    )
    .unwrap();
    fs::copy(sample.join("data/device.txt"), dir.join("data/device.txt")).unwrap();
    let live = dir.join("data/jellyfin.db");
    copy_db(db, &live);
    live
}

/// `writer.py mutate`: make the live database differ from the snapshot, leaving a stale
/// -wal/-shm beside a WAL database.
pub fn mutate(db: &Path) -> Result<(), String> {
    let o = run(python("writer.py").arg("mutate").arg(db));
    if o.status.success() {
        Ok(())
    } else {
        Err(text(&o))
    }
}

/// `writer.py hold`: a process that keeps committed transactions in the WAL and the
/// database open until [`Writer::finish`].
pub struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Writer {
    pub fn hold(db: &Path) -> Result<Writer, String> {
        let mut child = python("writer.py")
            .arg("hold")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let mut w = Writer { child, stdin };
        if line.trim() != "ready" {
            w.finish().ok();
            return Err(format!("writer did not start: {line:?}"));
        }
        Ok(w)
    }

    /// Close the writer's stdin: it closes its connection (checkpointing) and exits.
    pub fn finish(&mut self) -> Result<(), String> {
        if let Some(mut s) = self.stdin.take() {
            s.flush().ok();
        }
        let st = self.child.wait().map_err(|e| e.to_string())?;
        st.success()
            .then_some(())
            .ok_or_else(|| format!("writer exited with {st}"))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}
