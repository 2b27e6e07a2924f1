//! A running server, through the built binary: the in-place restore's check finds it by
//! SQLite's locks and by its open files, and says so when it cannot tell; a backup reads
//! its database — committed rows living only in the WAL included — without changing a
//! byte or an mtime of its `-wal`/`-shm`, even when the server has lost its POSIX locks.
//!
//! The server is Python's sqlite3 (tests/common/server.rs): another SQLite than the
//! bundled one, in another process, answering one line per command (the handshakes).
//! The tests that run the binary as another user (to make the server's open files
//! invisible, or the data dir read-only) or in another PID namespace need root: they are
//! ignored unless asked for (`-- --include-ignored`, as CI runs them).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::env::{need_root, open_up, s, Env};
use common::fixture::Fixture;
use common::server::Server;
use common::sqlcli::side;

/// Rows of the server's table in the latest snapshot's jellyfin.db (restored into `name`).
fn snapshot_rows(env: &Env, name: &str) -> i64 {
    let (target, _) = env.restore_to("latest", name);
    let c = rusqlite::Connection::open(target.join("data/jellyfin.db")).unwrap();
    c.query_row("SELECT count(*) FROM wal_rows", [], |r| r.get(0))
        .unwrap()
}

/// Back up as a user who may read the data dir but not write it, and check that the
/// snapshot holds `rows` rows.
fn backup_read_only_as_nobody(env: &Env, fx: &Fixture, rows: i64) {
    open_up(&env.root, true);
    open_up(&fx.root, false);
    let data = fx.data_dir.to_str().unwrap();
    env.nobody(&["--json", "backup", "--data-dir", data])
        .expect(0);
    assert_eq!(snapshot_rows(env, &format!("as-nobody-{rows}")), rows);
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

/// `restore latest --in-place`, refused (exit 17) because the server runs; its stderr.
fn refused_restore(out: std::process::Output) -> String {
    let err = s(&out.stderr);
    assert_eq!(out.status.code(), Some(17), "{err}");
    err
}

/// Who runs the binary where the server's open files would give it away.
#[derive(Clone, Copy, PartialEq)]
enum As {
    /// The test's own user (root in CI): it sees every process's open files.
    Owner,
    /// The owner first, then user `nobody` (root only), who cannot see them.
    AlsoNobody,
}

fn refuses_a_live_server_found_by_its_locks(who: As) {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let server = Server::start(&fx.db_path, 20, None);

    let err = refused_restore(env.run(&["restore", "latest", "--in-place"]));
    assert!(err.contains("Jellyfin appears to be running"), "{err}");
    assert!(err.contains(&format!("process {} ", server.pid)), "{err}");
    assert!(err.contains("holds SQLite's"), "{err}");

    if who == As::AlsoNobody {
        // As another user, the server's open files are out of sight (and it is not named
        // like Jellyfin): only its locks can give it away.
        open_up(&env.root, true);
        let err = refused_restore(env.nobody(&["restore", "latest", "--in-place"]).output());
        assert!(err.contains(&format!("process {} ", server.pid)), "{err}");
        assert!(err.contains("holds SQLite's"), "{err}");
    }
    assert!(fx.db_path.exists() && side(&fx.db_path, "-wal").exists());
}

#[test]
fn in_place_restore_refuses_a_live_server_found_by_its_locks() {
    refuses_a_live_server_found_by_its_locks(As::Owner);
}

#[test]
#[ignore = "needs root: runs the binary as user nobody"]
fn in_place_restore_refuses_a_live_server_found_by_its_locks_alone() {
    need_root("runs the binary as user nobody");
    refuses_a_live_server_found_by_its_locks(As::AlsoNobody);
}

#[test]
#[ignore = "needs root: makes a PID namespace"]
fn in_place_restore_refuses_a_server_in_another_pid_namespace() {
    need_root("makes a PID namespace");
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let _server = Server::start(&fx.db_path, 5, None);
    // As from inside a container: the server's process and its open files are out of
    // sight, and its locks are reported without a pid.
    let out = env
        .cmd(&["restore", "latest", "--in-place"])
        .in_pid_namespace()
        .output();
    let err = refused_restore(out);
    assert!(
        err.contains("a process outside this PID namespace (another container?) holds SQLite's"),
        "{err}"
    );
}

fn refuses_a_server_that_lost_its_locks(who: As) {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let mut server = Server::start(&fx.db_path, 20, Some("jellyfin"));
    assert_eq!(server.ask("drop-locks"), "dropped");

    let err = refused_restore(env.run(&["restore", "latest", "--in-place"]));
    assert!(
        err.contains(&format!("process {} (jellyfin) has ", server.pid)),
        "{err}"
    );

    if who == As::AlsoNobody {
        // Neither sign is visible to another user: refused as unknown, saying why.
        open_up(&env.root, true);
        let err = refused_restore(env.nobody(&["restore", "latest", "--in-place"]).output());
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
fn in_place_restore_refuses_a_server_that_lost_its_locks() {
    refuses_a_server_that_lost_its_locks(As::Owner);
}

#[test]
#[ignore = "needs root: runs the binary as user nobody"]
fn in_place_restore_refuses_as_unknown_a_server_that_lost_its_locks_seen_by_another_user() {
    need_root("runs the binary as user nobody");
    refuses_a_server_that_lost_its_locks(As::AlsoNobody);
}

/// Back up a live server that committed `rows` rows to its WAL (and, if `drop_locks`,
/// lost its POSIX locks), then as `nobody` from a read-only data dir if asked: nothing
/// beside its database changes, and it goes on reading and writing.
fn backup_of_a_live_server(rows: u32, drop_locks: bool, who: As) {
    let env = Env::new();
    let fx = env.small_fixture();
    let mut server = Server::start(&fx.db_path, rows, None);
    if drop_locks {
        assert_eq!(server.ask("drop-locks"), "dropped");
    }
    let before = states(&fx.db_path);

    env.backup(&fx, &[]);
    assert_eq!(states(&fx.db_path), before);
    assert_eq!(
        snapshot_rows(&env, "restored"),
        i64::from(rows),
        "rows committed to the WAL"
    );
    if who == As::AlsoNobody {
        backup_read_only_as_nobody(&env, &fx, i64::from(rows));
        assert_eq!(states(&fx.db_path), before);
    }
    // Its WAL-index is intact: it reads what it wrote and goes on writing.
    assert_eq!(server.ask("count"), format!("count {rows}"));
    assert_eq!(server.ask("write"), format!("wrote {}", rows + 1));
    assert_eq!(server.ask("check"), "check ok");
}

#[test]
fn backup_of_a_live_server_changes_nothing_beside_its_database() {
    backup_of_a_live_server(30, false, As::Owner);
}

#[test]
#[ignore = "needs root: runs the binary as user nobody"]
fn backup_of_a_live_server_from_a_read_only_data_dir_changes_nothing_beside_its_database() {
    need_root("runs the binary as user nobody");
    backup_of_a_live_server(30, false, As::AlsoNobody);
}

#[test]
fn backup_of_a_server_that_lost_its_locks_leaves_its_wal_and_shm_alone() {
    backup_of_a_live_server(40, true, As::Owner);
}

#[test]
#[ignore = "needs root: runs the binary as user nobody"]
fn backup_from_a_read_only_data_dir_of_a_server_that_lost_its_locks_leaves_its_wal_and_shm_alone() {
    need_root("runs the binary as user nobody");
    backup_of_a_live_server(40, true, As::AlsoNobody);
}

#[test]
fn backup_after_a_crash_reads_the_wal_without_touching_it() {
    let env = Env::new();
    let fx = env.small_fixture();
    Server::start(&fx.db_path, 25, None).kill();
    let before = states(&fx.db_path);
    env.backup(&fx, &[]);
    assert_eq!(states(&fx.db_path), before);
    assert_eq!(snapshot_rows(&env, "with-shm"), 25);

    // Without its -shm, the files are read from a private copy.
    fs::remove_file(side(&fx.db_path, "-shm")).unwrap();
    let before = states_without_shm(&fx.db_path);
    env.backup(&fx, &[]);
    assert!(!side(&fx.db_path, "-shm").exists());
    assert_eq!(states_without_shm(&fx.db_path), before);
    assert_eq!(snapshot_rows(&env, "without-shm"), 25);
}

fn states_without_shm(db: &Path) -> Vec<FileState> {
    ["", "-wal"].iter().map(|x| state(&side(db, x))).collect()
}

fn backup_of_a_stopped_server(who: As) {
    let env = Env::new();
    let fx = env.small_fixture();
    let db = state(&fx.db_path);
    env.backup(&fx, &[]);
    assert!(!side(&fx.db_path, "-wal").exists());
    assert!(!side(&fx.db_path, "-shm").exists());
    assert_eq!(state(&fx.db_path), db);

    if who == As::AlsoNobody {
        open_up(&env.root, true);
        open_up(&fx.root, false);
        let data = fx.data_dir.to_str().unwrap();
        env.nobody(&["--json", "backup", "--data-dir", data])
            .expect(0);
        assert!(!side(&fx.db_path, "-wal").exists());
        assert!(!side(&fx.db_path, "-shm").exists());
    }
}

#[test]
fn backup_of_a_stopped_server_creates_no_side_files() {
    backup_of_a_stopped_server(As::Owner);
}

#[test]
#[ignore = "needs root: runs the binary as user nobody"]
fn backup_of_a_stopped_server_creates_no_side_files_in_a_read_only_data_dir() {
    need_root("runs the binary as user nobody");
    backup_of_a_stopped_server(As::AlsoNobody);
}
