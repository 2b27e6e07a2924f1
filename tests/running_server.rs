//! A running server, through the built binary: the in-place restore's check finds it by
//! SQLite's locks and by its open files, and says so when it cannot tell; a backup reads
//! its database — committed rows living only in the WAL included — without changing a
//! byte or an mtime of its `-wal`/`-shm`, even when the server has lost its POSIX locks.
//!
//! The server is Python's sqlite3 (tests/common/wal_server.py): another SQLite than the
//! bundled one, in another process, answering one line per command (the handshakes).
//! Tests that run the binary as another user (to make the server's open files invisible,
//! or the data dir read-only) need root and skip otherwise.

#[path = "common/env.rs"]
mod env;
#[path = "common/fixture.rs"]
mod fixture;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use env::{s, Env, BIN};
use fixture::{FixtureSpec, Layout};
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/wal_server.py");
const NOBODY: u32 = 65534;

struct Server {
    child: Child,
    out: BufReader<ChildStdout>,
    pid: u32,
}

impl Server {
    /// Start a server on `db` that commits `rows` rows to its WAL, named `name` if given.
    fn start(db: &Path, rows: u32, name: Option<&str>) -> Server {
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

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.child.stdin.as_mut().unwrap(), "{cmd}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// Die like a crashed server: the `-wal` and `-shm` stay behind.
    fn kill(mut self) {
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

impl Env {
    fn fixture(&self) -> fixture::Fixture {
        fixture::generate(&self.root.join("src"), &FixtureSpec::small(Layout::Docker)).unwrap()
    }

    fn backup(&self, fx: &fixture::Fixture) -> Value {
        self.json(&["backup", "--data-dir", fx.data_dir.to_str().unwrap()], 0)
    }

    /// Rows of the server's table in the latest snapshot's jellyfin.db.
    fn snapshot_rows(&self, name: &str) -> i64 {
        let target = self.root.join(name);
        self.json(
            &["restore", "latest", "--target", target.to_str().unwrap()],
            0,
        );
        let c = rusqlite::Connection::open(target.join("data/jellyfin.db")).unwrap();
        c.query_row("SELECT count(*) FROM wal_rows", [], |r| r.get(0))
            .unwrap()
    }

    /// Run the binary as user nobody; `None` (test skipped) unless we are root.
    fn run_as_nobody(&self, args: &[&str]) -> Option<Output> {
        if fs::metadata("/proc/self").unwrap().uid() != 0 {
            eprintln!("not root: skipping the part that runs as another user");
            return None;
        }
        Some(
            Command::new("setpriv")
                .arg(format!("--reuid={NOBODY}"))
                .arg(format!("--regid={NOBODY}"))
                .arg("--clear-groups")
                .arg(BIN)
                .arg("--repo")
                .arg(&self.repo)
                .args(args)
                .env("HOME", &self.root)
                .output()
                .expect("setpriv runs"),
        )
    }
}

impl Env {
    /// Back up as a user who may read the data dir but not write it, and check that the
    /// snapshot holds `rows` rows.
    fn backup_read_only_as_nobody(&self, fx: &fixture::Fixture, rows: i64) {
        open_up(&self.root, true);
        open_up(&fx.root, false);
        let data = fx.data_dir.to_str().unwrap();
        let name = format!("as-nobody-{rows}");
        let Some(out) = self.run_as_nobody(&["--json", "backup", "--data-dir", data]) else {
            return;
        };
        assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
        assert_eq!(self.snapshot_rows(&name), rows);
    }
}

/// Let every user read (and, if `writable`, write) everything under `dir`.
fn open_up(dir: &Path, writable: bool) {
    let (d, f) = if writable {
        (0o777, 0o666)
    } else {
        (0o755, 0o644)
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(d)).unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            open_up(&p, writable);
        } else if m.is_file() {
            fs::set_permissions(&p, fs::Permissions::from_mode(f)).unwrap();
        }
    }
}

fn side(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// A file's bytes, size and mtime.
#[derive(PartialEq, Eq)]
struct FileState(Vec<u8>, u64, i64, i64);

impl std::fmt::Debug for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest = blake3::hash(&self.0).to_hex();
        write!(
            f,
            "{} bytes {} mtime {}.{:09}",
            self.1,
            &digest[..16],
            self.2,
            self.3
        )
    }
}

fn state(path: &Path) -> FileState {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    FileState(fs::read(path).unwrap(), m.len(), m.mtime(), m.mtime_nsec())
}

fn states(db: &Path) -> Vec<FileState> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|x| state(&side(db, x)))
        .collect()
}

#[test]
fn in_place_restore_refuses_a_live_server_found_by_its_locks() {
    let env = Env::new();
    let fx = env.fixture();
    env.backup(&fx);
    let server = Server::start(&fx.db_path, 20, None);

    let out = env.run(&["restore", "latest", "--in-place"]);
    let err = s(&out.stderr);
    assert_eq!(out.status.code(), Some(17), "{err}");
    assert!(err.contains("Jellyfin appears to be running"), "{err}");
    assert!(err.contains(&format!("process {} ", server.pid)), "{err}");
    assert!(err.contains("holds SQLite's"), "{err}");

    // As another user, the server's open files are out of sight (and it is not named
    // like Jellyfin): only its locks can give it away.
    open_up(&env.root, true);
    if let Some(out) = env.run_as_nobody(&["restore", "latest", "--in-place"]) {
        let err = s(&out.stderr);
        assert_eq!(out.status.code(), Some(17), "{err}");
        assert!(err.contains(&format!("process {} ", server.pid)), "{err}");
        assert!(err.contains("holds SQLite's"), "{err}");
    }
    assert!(fx.db_path.exists() && side(&fx.db_path, "-wal").exists());
}

#[test]
fn in_place_restore_refuses_a_server_in_another_pid_namespace() {
    let env = Env::new();
    let fx = env.fixture();
    env.backup(&fx);
    let _server = Server::start(&fx.db_path, 5, None);
    if fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("not root: cannot make a PID namespace, skipped");
        return;
    }
    // As from inside a container: the server's process and its open files are out of
    // sight, and its locks are reported without a pid.
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(BIN)
        .arg("--repo")
        .arg(&env.repo)
        .args(["restore", "latest", "--in-place"])
        .output()
        .expect("unshare runs");
    let err = s(&out.stderr);
    assert_eq!(out.status.code(), Some(17), "{err}");
    assert!(
        err.contains("a process outside this PID namespace (another container?) holds SQLite's"),
        "{err}"
    );
}

#[test]
fn in_place_restore_refuses_a_server_that_lost_its_locks() {
    let env = Env::new();
    let fx = env.fixture();
    env.backup(&fx);
    let mut server = Server::start(&fx.db_path, 20, Some("jellyfin"));
    assert_eq!(server.ask("drop-locks"), "dropped");

    let out = env.run(&["restore", "latest", "--in-place"]);
    let err = s(&out.stderr);
    assert_eq!(out.status.code(), Some(17), "{err}");
    assert!(
        err.contains(&format!("process {} (jellyfin) has ", server.pid)),
        "{err}"
    );

    // Neither sign is visible to another user: refused as unknown, saying why.
    open_up(&env.root, true);
    if let Some(out) = env.run_as_nobody(&["restore", "latest", "--in-place"]) {
        let err = s(&out.stderr);
        assert_eq!(out.status.code(), Some(17), "{err}");
        assert!(
            err.contains(&format!(
                "cannot tell whether Jellyfin is running: cannot see the open files of \
                 process {} (jellyfin) as user nobody: run as root or as the jellyfin user, \
                 or stop the server and pass --force",
                server.pid
            )),
            "{err}"
        );
    }
    assert_eq!(server.ask("check"), "check ok");
    assert_eq!(server.ask("count"), "count 20");
}

#[test]
fn backup_of_a_live_server_changes_nothing_beside_its_database() {
    let env = Env::new();
    let fx = env.fixture();
    let mut server = Server::start(&fx.db_path, 30, None);
    let before = states(&fx.db_path);

    env.backup(&fx);
    assert_eq!(states(&fx.db_path), before);
    assert_eq!(
        env.snapshot_rows("restored"),
        30,
        "rows committed to the WAL"
    );
    env.backup_read_only_as_nobody(&fx, 30);
    assert_eq!(states(&fx.db_path), before);
    assert_eq!(server.ask("write"), "wrote 31");
    assert_eq!(server.ask("check"), "check ok");
}

#[test]
fn backup_of_a_server_that_lost_its_locks_leaves_its_wal_and_shm_alone() {
    let env = Env::new();
    let fx = env.fixture();
    let mut server = Server::start(&fx.db_path, 40, None);
    assert_eq!(server.ask("drop-locks"), "dropped");
    let before = states(&fx.db_path);

    env.backup(&fx);
    assert_eq!(states(&fx.db_path), before);
    env.backup_read_only_as_nobody(&fx, 40);
    assert_eq!(states(&fx.db_path), before);
    // Its WAL-index is intact: it reads what it wrote and goes on writing.
    assert_eq!(server.ask("count"), "count 40");
    assert_eq!(server.ask("write"), "wrote 41");
    assert_eq!(server.ask("check"), "check ok");
    assert_eq!(
        env.snapshot_rows("restored"),
        40,
        "rows committed to the WAL"
    );
}

#[test]
fn backup_after_a_crash_reads_the_wal_without_touching_it() {
    let env = Env::new();
    let fx = env.fixture();
    Server::start(&fx.db_path, 25, None).kill();
    let before = states(&fx.db_path);
    env.backup(&fx);
    assert_eq!(states(&fx.db_path), before);
    assert_eq!(env.snapshot_rows("with-shm"), 25);

    // Without its -shm, the files are read from a private copy.
    fs::remove_file(side(&fx.db_path, "-shm")).unwrap();
    let before = states_without_shm(&fx.db_path);
    env.backup(&fx);
    assert!(!side(&fx.db_path, "-shm").exists());
    assert_eq!(states_without_shm(&fx.db_path), before);
    assert_eq!(env.snapshot_rows("without-shm"), 25);
}

fn states_without_shm(db: &Path) -> Vec<FileState> {
    ["", "-wal"].iter().map(|x| state(&side(db, x))).collect()
}

#[test]
fn backup_of_a_stopped_server_creates_no_side_files_even_in_a_read_only_data_dir() {
    let env = Env::new();
    let fx = env.fixture();
    let db = state(&fx.db_path);
    env.backup(&fx);
    assert!(!side(&fx.db_path, "-wal").exists());
    assert!(!side(&fx.db_path, "-shm").exists());
    assert_eq!(state(&fx.db_path), db);

    open_up(&env.root, true);
    open_up(&fx.root, false);
    let data = fx.data_dir.to_str().unwrap();
    if let Some(out) = env.run_as_nobody(&["--json", "backup", "--data-dir", data]) {
        assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
        assert!(!side(&fx.db_path, "-wal").exists());
        assert!(!side(&fx.db_path, "-shm").exists());
    }
}
