//! The stand-in for a running Jellyfin server: `wal_server.py` (see its docstring) on
//! Python's sqlite3, another SQLite than jellysnap's, in another process, answering one
//! line per command so that tests synchronise on its output.
//!
//! Only std: a unit test may include this file with `#[path]` as well.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/wal_server.py");

pub struct Server {
    child: Child,
    out: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Server {
    /// Start a server on `db` that commits `rows` rows to its WAL, named `name` if given.
    pub fn start(db: &Path, rows: u32, name: Option<&str>) -> Server {
        let mut cmd = Command::new("python3");
        cmd.arg(SCRIPT).arg(db).arg(rows.to_string());
        if let Some(n) = name {
            cmd.arg(n);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the stand-in server");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "server did not start: {line:?}");
        let pid = child.id();
        Server { child, out, pid }
    }

    /// Send one command, return its one-line answer.
    pub fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.child.stdin.as_mut().unwrap(), "{cmd}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// Die like a crashed server: the `-wal` and `-shm` stay behind.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
