//! End-to-end tests through the built binary on Jellyfin-shaped data dirs.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::env::{
    entries_in, files_under, kill_running, need_root, s, wait_until, Cmd, Env, SmallDisk,
};
use common::fixture::{self, Fixture, FixtureSpec, Layout};
use common::verify::{assert_same, db_content, describe, expected_state};
use serde_json::Value;

fn summary(v: &Value) -> &Value {
    &v["snapshot"]["summary"]
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn docker_layout_backup_and_exact_restore() {
    let env = Env::new();
    let fx = env.small_fixture();
    let b = env.backup(&fx, &["--name", "before-10.11.3", "--tag", "manual"]);
    assert_eq!(b["snapshot"]["layout"], "docker");
    assert_eq!(b["snapshot"]["jellyfin_version"], fixture::SERVER_VERSION);
    assert_eq!(b["repository_created"], true);
    assert!(u(&summary(&b)["files"]) > 20);
    assert!(summary(&b)["errors"].as_array().unwrap().is_empty());

    // Excluded state is not in the snapshot.
    let ls = env.json(&["ls", "latest", "-r"], 0);
    let paths: Vec<String> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.iter().any(|p| p == "data/data/jellyfin.db"));
    assert!(paths.iter().any(|p| p.starts_with("data/data/trickplay/")));
    assert!(paths
        .iter()
        .any(|p| p.starts_with("data/metadata/library/")));
    assert!(paths.iter().any(|p| p == "data/config/system.xml"));
    for bad in [
        "data/cache",
        "data/log",
        "data/transcodes",
        "data/data/backups",
        "data/data/SQLiteBackups",
    ] {
        assert!(
            !paths.iter().any(|p| p.starts_with(bad)),
            "{bad} must not be backed up"
        );
    }
    assert!(!paths
        .iter()
        .any(|p| p.ends_with("-wal") || p.ends_with("-shm")));

    // Restore by name into a fresh directory reproduces the data dir exactly.
    let target = env.root.join("restored");
    let r = env.json(
        &[
            "restore",
            "before-10.11.3",
            "--target",
            target.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["report"]["errors"].as_array().unwrap().len(), 0);
    assert_same(&describe(&target, &[]), &expected_state(&fx));

    let snaps = env.json(&["snapshots"], 0);
    assert_eq!(snaps[0]["name"], "before-10.11.3");
    assert_eq!(snaps[0]["tags"][0], "manual");
    let text = s(&env.run(&["snapshots"]).stdout);
    assert!(
        text.contains("before-10.11.3") && text.contains(fixture::SERVER_VERSION),
        "{text}"
    );
}

#[test]
fn debian_and_linuxserver_layouts() {
    for (layout, name, roots) in [
        (Layout::Debian, "debian", 2),
        (Layout::LinuxServer, "linuxserver", 1),
    ] {
        let env = Env::new();
        let fx = env.fixture(&FixtureSpec::small(layout));
        let b = env.backup(&fx, &[]);
        assert_eq!(b["snapshot"]["layout"], name);
        assert_eq!(
            b["snapshot"]["roots"].as_array().unwrap().len(),
            roots,
            "{name}"
        );
        let target = env.root.join("restored");
        env.json(
            &["restore", "latest", "--target", target.to_str().unwrap()],
            0,
        );
        match layout {
            Layout::Debian => {
                // Two roots: each in its own subdirectory of the target.
                assert_same(&describe(&target.join("data"), &[]), &expected_state(&fx));
                assert!(target.join("config/system.xml").is_file());
            }
            _ => {
                // linuxserver.io: /config holds the data dir; cache and log stay out.
                assert!(target.join("system.xml").is_file());
                assert!(!target.join("cache").exists() && !target.join("log").exists());
                assert_same(&describe(&target.join("data"), &[]), &expected_state(&fx));
            }
        }
    }
}

#[test]
fn components_and_metadata_dir_flags() {
    let env = Env::new();
    let fx = env.small_fixture();
    // Move metadata out of the data dir, as system.xml's MetadataPath allows.
    let meta = env.root.join("srv-metadata");
    fs::rename(&fx.metadata_dir, &meta).unwrap();
    let b = env.backup(
        &fx,
        &[
            "--metadata-dir",
            meta.to_str().unwrap(),
            "--components",
            "database,trickplay",
        ],
    );
    let comps: Vec<&str> = b["snapshot"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(comps, ["config", "database", "trickplay"]);
    assert_eq!(
        b["snapshot"]["roots"].as_array().unwrap().len(),
        1,
        "metadata not selected: no metadata root"
    );
    let b = env.backup(&fx, &["--metadata-dir", meta.to_str().unwrap()]);
    assert_eq!(b["snapshot"]["roots"].as_array().unwrap().len(), 2);
    let target = env.root.join("restored");
    let out = env.expect(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        0,
    );
    assert!(
        s(&out.stdout).contains("metadata"),
        "prints where each root went"
    );
    assert_eq!(
        fixture::tree_digest(&target.join("metadata"), &[]).unwrap(),
        fixture::tree_digest(&meta, &[]).unwrap()
    );
    // Unknown component: usage error, nothing created.
    let out = env.expect(
        &[
            "backup",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
            "--components",
            "posters",
        ],
        2,
    );
    assert!(s(&out.stderr).contains("unknown component `posters`"));
}

#[test]
fn incremental_backups_read_only_what_changed() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = env.backup(&fx, &[]);
    assert!(u(&summary(&first)["bytes_read"]) > 0);

    // Nothing changed: no file content read, only tiny trees (and the DB) can be new.
    let second = env.backup(&fx, &[]);
    let s2 = summary(&second);
    assert_eq!(u(&s2["bytes_read"]), 0, "{s2}");
    assert_eq!(u(&s2["files_read"]), 0);
    // Unchanged files and an unchanged database add no data chunks; at most a few tree
    // chunks (the read-only capture may create empty -wal/-shm files next to a stopped
    // server's database, which changes the data/ directory's mtime).
    assert!(u(&s2["new_stored_bytes"]) < 16 * 1024, "{s2}");
    assert!(u(&s2["new_chunks"]) <= 4, "{s2}");
    assert_eq!(second["parent"], first["id"]);

    // A day of changes: only changed files are read, and the stored bytes stay well
    // below the logical size.
    let report = fixture::day_of_changes_report(&fx, 7).unwrap();
    assert!(report.files_modified + report.files_added > 0);
    let third = env.backup(&fx, &[]);
    let s3 = summary(&third);
    let changed = (report.files_modified + report.files_added) as u64;
    assert!(
        u(&s3["files_read"]) >= changed.min(1) && u(&s3["files_read"]) <= changed + 2,
        "{s3} vs {report:?}"
    );
    assert!(
        u(&s3["new_raw_bytes"]) < u(&s3["logical_bytes"]) / 2,
        "{s3}"
    );
    let d = env.json(&["diff", first["id"].as_str().unwrap(), "latest"], 0);
    assert!(!d["changes"].as_array().unwrap().is_empty());

    env.assert_restores("latest", "restored", &expected_state(&fx));
}

#[test]
fn recently_modified_file_is_not_trusted() {
    let env = Env::new();
    let fx = env.small_fixture();
    // Modified "now": within the timestamp granularity of the next scan.
    fs::write(
        fx.config_dir.join("network.xml"),
        "<NetworkConfiguration/>\n",
    )
    .unwrap();
    env.backup(&fx, &[]);
    let second = env.backup(&fx, &[]);
    assert_eq!(
        u(&summary(&second)["files_read"]),
        1,
        "{}",
        summary(&second)
    );
}

#[test]
fn dedup_and_compression() {
    let env = Env::new();
    let fx = env.small_fixture();
    let b1 = env.backup(&fx, &["--components", "trickplay"]);
    // Copy the whole trickplay tree elsewhere in the data: no new data chunks.
    let src = fx.data_dir.join("data/trickplay");
    let dst = fx.data_dir.join("metadata/library/copy");
    fs::create_dir_all(&dst).unwrap();
    let mut copied = 0u64;
    for p in fixture::walk_sorted(&src).unwrap() {
        if p.is_file() {
            let to = dst.join(
                p.strip_prefix(&src)
                    .unwrap()
                    .to_string_lossy()
                    .replace('/', "_"),
            );
            copied += fs::copy(&p, to).unwrap();
        }
    }
    let b2 = env.backup(&fx, &[]);
    let s2 = summary(&b2);
    assert!(copied > 0);
    // The metadata component is new in b2 but every copied byte dedupes.
    let meta_bytes: u64 = fixture::walk_sorted(&fx.data_dir.join("metadata"))
        .unwrap()
        .iter()
        .filter(|p| p.is_file())
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(
        u(&s2["new_raw_bytes"]) < meta_bytes - copied + 64 * 1024,
        "{s2}"
    );
    // JPEG sheets are stored raw (no useless compression), text is compressed.
    let s1 = summary(&b1);
    assert!(u(&s1["new_stored_bytes"]) <= u(&s1["new_raw_bytes"]));
    let env2 = Env::new();
    let fx2 = env2.small_fixture();
    fs::write(
        fx2.config_dir.join("big.xml"),
        "<Item><Name>Movie</Name></Item>\n".repeat(20000),
    )
    .unwrap();
    let b = env2.backup(&fx2, &[]);
    assert!(
        u(&summary(&b)["new_stored_bytes"]) < u(&summary(&b)["new_raw_bytes"]) / 2,
        "{}",
        summary(&b)
    );
}

#[test]
fn in_place_restore_rolls_back_and_touches_only_component_trees() {
    let env = Env::new();
    let fx = env.small_fixture();
    let b = env.backup(&fx, &["--name", "before-upgrade"]);
    let before = expected_state(&fx);

    // "Upgrade": a day of changes, an extra trickplay file, a migrated database with a
    // stale WAL, and files outside the snapshot's trees that must survive.
    fixture::day_of_changes(&fx, 3).unwrap();
    let db = fx.data_dir.join("data/jellyfin.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE Upgrade (x); INSERT INTO Upgrade VALUES (1);")
            .unwrap();
    }
    let extra = fx.data_dir.join("data/trickplay/zz-extra.jpg");
    fs::write(&extra, b"\xff\xd8\xffextra").unwrap();
    let wal = fx.data_dir.join("data/jellyfin.db-wal");
    fs::write(&wal, b"stale wal").unwrap();
    let outside = fx.data_dir.join("data/backups/keep-me.zip");
    fs::create_dir_all(outside.parent().unwrap()).unwrap();
    fs::write(&outside, b"user file").unwrap();
    let log = fx.data_dir.join("log/log_20260101.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    fs::write(&log, b"log").unwrap();

    // Dry run: prints the plan, changes nothing.
    let changed_state = fixture::tree_digest(&fx.data_dir, &[]).unwrap();
    let out = env.expect(&["restore", "before-upgrade", "--in-place", "--dry-run"], 0);
    let text = s(&out.stdout);
    assert!(
        text.contains("zz-extra.jpg") && text.contains("dry run"),
        "{text}"
    );
    assert!(text.contains("jellyfin.db-wal"), "{text}");
    assert_eq!(
        fixture::tree_digest(&fx.data_dir, &[]).unwrap(),
        changed_state,
        "dry run changed nothing"
    );

    let r = env.json(&["restore", b["id"].as_str().unwrap(), "--in-place"], 0);
    assert!(
        u(&r["report"]["files_kept"]) > 0,
        "unchanged files are not rewritten: {r}"
    );
    assert!(!extra.exists() && !wal.exists());
    assert!(
        outside.exists() && log.exists(),
        "nothing outside the component trees is touched"
    );
    assert_same(&expected_state(&fx), &before);

    // A second in-place restore has nothing left to write.
    let r = env.json(&["restore", "before-upgrade", "--in-place"], 0);
    assert_eq!(u(&r["report"]["files_written"]), 0, "{r}");
}

#[test]
fn in_place_restore_refuses_while_server_runs() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let db = fx.data_dir.join("data/jellyfin.db");
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3<'{}'; exec sleep 60", db.display()))
        .spawn()
        .unwrap();
    // Wait until the stand-in server really holds the database open.
    let fd = PathBuf::from(format!("/proc/{}/fd/3", server.id()));
    wait_until("the stand-in server holds the database open", || {
        fs::read_link(&fd).is_ok_and(|t| t == db)
    });
    let out = env.run(&["restore", "latest", "--in-place"]);
    let forced = env.run(&["restore", "latest", "--in-place", "--force"]);
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(out.status.code(), Some(17), "{}", s(&out.stderr));
    assert!(s(&out.stderr).contains("Jellyfin appears to be running"));
    assert!(forced.status.success(), "{}", s(&forced.stderr));
}

/// A fixture whose `jellyfin.db` (3,000 items) has had `sql` run on it: the fixture, the
/// database's path and the connection that ran it.
fn fixture_with_db(env: &Env, sql: &str) -> (Fixture, PathBuf, rusqlite::Connection) {
    let mut spec = FixtureSpec::small(Layout::Docker);
    spec.db_rows = 3000;
    let fx = env.fixture(&spec);
    let db = fx.data_dir.join("data/jellyfin.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(sql).unwrap();
    (fx, db, c)
}

#[test]
fn database_captured_consistently_while_written() {
    let env = Env::new();
    let (fx, db, c) = fixture_with_db(
        &env,
        "PRAGMA journal_mode=WAL; CREATE TABLE Activity (Id INTEGER PRIMARY KEY, Payload BLOB);",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committed = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let writer = {
        let (stop, committed, db) = (stop.clone(), committed.clone(), db.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                c.execute(
                    "INSERT INTO Activity (Id, Payload) VALUES (?1, randomblob(2000))",
                    [i],
                )
                .unwrap();
                committed.store(i, std::sync::atomic::Ordering::SeqCst);
            }
            i
        })
    };
    while committed.load(std::sync::atomic::Ordering::SeqCst) < 200 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = committed.load(std::sync::atomic::Ordering::SeqCst);
    let b = env.backup(&fx, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = writer.join().unwrap();
    drop(c);
    assert!(total > before, "the writer kept writing during the backup");
    assert!(summary(&b)["errors"].as_array().unwrap().is_empty());
    let target = env.root.join("restored");
    env.json(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        0,
    );
    let restored = target.join("data/jellyfin.db");
    let rc = rusqlite::Connection::open(&restored).unwrap();
    let ok: String = rc
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let (n, max): (i64, i64) = rc
        .query_row("SELECT count(*), max(Id) FROM Activity", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(
        n >= before && n == max,
        "every row committed before the backup is there ({n} rows, {before} before)"
    );
    let items: i64 = rc
        .query_row("SELECT count(*) FROM BaseItems", [], |r| r.get(0))
        .unwrap();
    assert_eq!(items, 3000);
}

/// A writer of `Ledger` and `Totals` (argv: database, stop file, count file): a row and
/// the running total in each transaction, until the stop file appears.
const LEDGER_WRITER: &str = r#"
import os, sqlite3, sys, time
db, stop, count = sys.argv[1:4]
c = sqlite3.connect(db, timeout=30, isolation_level=None)
c.execute("PRAGMA synchronous=OFF")
i = 0
while not os.path.exists(stop):
    i += 1
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO Ledger (Amount) VALUES (?)", (i,))
    c.execute("UPDATE Totals SET Total = Total + ?", (i,))
    c.execute("COMMIT")
    with open(count + ".tmp", "w") as f:
        f.write(str(i))
    os.replace(count + ".tmp", count)
    time.sleep(0.001)
c.close()
"#;

/// A rollback-journal database whose writer commits without pause holds no lock between
/// two commits, so a backup may find it unused and read it without locks; a commit
/// during that read has the copy made again under SQLite's locks rather than the backup
/// fail (`capture::capture`, `livedb::open_locking`).
#[test]
fn a_rollback_journal_database_written_without_pause_is_captured_consistently() {
    let env = Env::new();
    let (fx, db, c) = fixture_with_db(
        &env,
        "PRAGMA journal_mode=DELETE;
         CREATE TABLE Ledger (Id INTEGER PRIMARY KEY, Amount INTEGER);
         CREATE TABLE Totals (Id INTEGER PRIMARY KEY, Total INTEGER);
         INSERT INTO Totals VALUES (1, 0);",
    );
    drop(c);
    // The writer is another SQLite than jellysnap's, as a plugin's is: Python's, the
    // system's. Quick commits a millisecond apart: the file is mostly without locks, and
    // written again within any read of it. It says how far it got in `count`.
    let (stop, count) = (env.root.join("stop"), env.root.join("count"));
    let mut writer = Command::new("python3")
        .args(["-c", LEDGER_WRITER])
        .args([&db, &stop, &count])
        .spawn()
        .expect("python3 (with its sqlite3 module) runs the writer");
    let committed = || -> i64 {
        fs::read_to_string(&count)
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0)
    };
    let waited = Instant::now();
    while committed() < 200 {
        assert!(
            waited.elapsed().as_secs() < 60,
            "the writer did not start committing"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut before = 0;
    for round in 0..3 {
        before = committed();
        let out = env.run(&["backup", "--data-dir", fx.data_dir.to_str().unwrap()]);
        assert!(out.status.success(), "backup {round}: {}", s(&out.stderr));
    }
    fs::write(&stop, b"").unwrap();
    assert!(writer.wait().unwrap().success(), "the writer failed");
    let total = committed();
    assert!(total > before, "the writer kept writing during the backups");
    let target = env.root.join("restored");
    env.json(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        0,
    );
    let rc = rusqlite::Connection::open(target.join("data/jellyfin.db")).unwrap();
    let ok: String = rc
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let (n, sum, total): (i64, i64, i64) = rc
        .query_row(
            "SELECT count(*), coalesce(sum(Amount), 0), (SELECT Total FROM Totals) FROM Ledger",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(sum, total, "the ledger and its total are of one commit");
    assert!(
        n >= before,
        "every commit before the last backup is there ({n}, {before})"
    );
    let items: i64 = rc
        .query_row("SELECT count(*) FROM BaseItems", [], |r| r.get(0))
        .unwrap();
    assert_eq!(items, 3000);
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let env = Env::new();
    let fx = env.small_fixture();

    // Not a repository.
    let out = env.expect(&["snapshots"], 10);
    assert!(
        s(&out.stderr).contains("not a jellysnap repository"),
        "{}",
        s(&out.stderr)
    );
    // Missing data dir / not a Jellyfin dir: no repository gets created.
    env.expect(
        &[
            "backup",
            "--data-dir",
            env.root.join("nope").to_str().unwrap(),
        ],
        14,
    );
    let out = env.expect(&["backup", "--data-dir", env.root.to_str().unwrap()], 14);
    assert!(s(&out.stderr).contains("not a Jellyfin data dir"));
    assert!(!env.repo.exists());

    env.backup(&fx, &["--name", "one"]);
    // Duplicate name.
    env.expect(
        &[
            "backup",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
            "--name",
            "one",
        ],
        13,
    );
    // Unknown snapshot.
    let out = env.expect(
        &[
            "restore",
            "nosuch",
            "--target",
            env.root.join("t").to_str().unwrap(),
        ],
        12,
    );
    assert!(s(&out.stderr).contains("no snapshot matches `nosuch`"));
    // Target not empty.
    let t = env.root.join("full");
    fs::create_dir_all(&t).unwrap();
    fs::write(t.join("x"), b"x").unwrap();
    env.expect(&["restore", "one", "--target", t.to_str().unwrap()], 15);
    // Malformed flags.
    env.expect(&["restore", "one"], 2);
    env.expect(&["backup", "--bogus"], 2);
    env.expect(
        &[
            "backup",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
            "--name",
            "has space",
        ],
        2,
    );
    // A repository of a newer format: refused, repository untouched.
    let cfg = env.repo.join("config");
    let orig = fs::read(&cfg).unwrap();
    let mut future = orig.clone();
    future[8] = 3;
    fs::write(&cfg, &future).unwrap();
    let out = env.expect(&["snapshots"], 11);
    assert!(
        s(&out.stderr).contains(
            "config was written by a newer jellysnap (format 3, this one reads up to 2): upgrade jellysnap"
        ),
        "{}",
        s(&out.stderr)
    );
    fs::write(&cfg, &orig).unwrap();
    assert_eq!(env.json(&["snapshots"], 0).as_array().unwrap().len(), 1);
}

#[test]
fn unreadable_files_make_a_partial_snapshot() {
    let env = Env::new();
    let fx = env.small_fixture();
    let secret = fx.config_dir.join("encoding.xml");
    assert!(secret.is_file());
    // Root reads anything: as root the backup runs as another user.
    let out = env.backup_hiding(&fx, &[&secret]);
    assert_eq!(out.status.code(), Some(3), "{}", s(&out.stderr));
    assert!(
        s(&out.stderr).contains("encoding.xml"),
        "{}",
        s(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partial"], true);
    assert_eq!(summary(&v)["errors"].as_array().unwrap().len(), 1);
    // The rest is in the snapshot.
    assert!(u(&summary(&v)["files"]) > 20);
}

#[test]
fn sigkill_during_backup_loses_nothing() {
    let env = Env::new();
    let mut spec = FixtureSpec::small(Layout::Docker);
    spec.items = 40;
    spec.sheet_bytes = 400 * 1024;
    spec.trickplay_sheets_per_item = 8;
    let fx = env.fixture(&spec);
    env.backup(&fx, &["--components", "database", "--name", "small"]);
    let expected = env.restored_state("small", "expected");

    // Killed as soon as it works in the repository, then once it sealed one more pack,
    // then two more (a killed run's sealed packs stay, and the next run dedupes on them).
    for new_packs in [0, 1, 2] {
        let scratch = |env: &Env| scratch_files(&env.repo);
        let leftovers = scratch(&env);
        let packs = files_under(&env.repo.join("packs")).len();
        let mut child = env
            .cmd(&["backup", "--data-dir", fx.data_dir.to_str().unwrap()])
            .quiet()
            .spawn();
        wait_until("the backup works in the repository", || {
            scratch(&env).iter().any(|f| !leftovers.contains(f))
                && files_under(&env.repo.join("packs")).len() >= packs + new_packs
        });
        kill_running(&mut child, "the backup");
        // It had not finished: its scratch files are left and no snapshot was recorded.
        assert!(!scratch(&env).is_empty());
        assert_eq!(
            env.snapshot_count(),
            1,
            "killed after {new_packs} new pack(s)"
        );
        env.assert_restores("small", &format!("after-kill-{new_packs}"), &expected);
    }
    // The next backup succeeds and restores exactly.
    env.backup(&fx, &[]);
    env.assert_restores("latest", "final", &expected_state(&fx));
}

/// The names in the repository's `tmp/`: a writer's scratch files (packs being filled,
/// database captures) from when it takes its locks until it ends.
fn scratch_files(repo: &Path) -> Vec<std::ffi::OsString> {
    fs::read_dir(repo.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default()
}

#[test]
fn index_is_rebuilt_when_missing() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    fs::remove_dir_all(env.repo.join("index")).unwrap();
    let t = env.root.join("restored");
    let out = env.expect(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
    assert!(
        s(&out.stderr).contains("rebuilt it from"),
        "{}",
        s(&out.stderr)
    );
    assert_same(&describe(&t, &[]), &expected_state(&fx));
    // And backups dedupe against the rebuilt index.
    let b = env.backup(&fx, &[]);
    assert!(
        u(&summary(&b)["new_stored_bytes"]) < 16 * 1024,
        "{}",
        summary(&b)
    );
    assert_eq!(u(&summary(&b)["bytes_read"]), 0);
}

#[test]
fn init_refuses_existing_repository() {
    let env = Env::new();
    env.expect(&["init"], 0);
    let out = env.expect(&["init"], 10);
    assert!(s(&out.stderr).contains("already holds a repository"));
}

#[test]
fn file_changing_while_read_is_reported() {
    let env = Env::new();
    let fx = env.small_fixture();
    let busy = fx.data_dir.join("metadata/library/busy.nfo");
    fs::write(&busy, "<movie>\n".repeat(4 << 20)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&busy).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"<actor>x</actor>\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let b = env.backup(&fx, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let changed = summary(&b)["changed_during_backup"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        changed
            .iter()
            .any(|p| p.as_str().unwrap().ends_with("busy.nfo")),
        "{}",
        summary(&b)
    );
    // What was stored is a prefix of what the file became, and the next backup re-reads it.
    let t = env.root.join("restored");
    env.json(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
    let got = fs::read(t.join("metadata/library/busy.nfo")).unwrap();
    assert!(fs::read(&busy).unwrap().starts_with(&got));
    let b2 = env.backup(&fx, &[]);
    assert!(u(&summary(&b2)["files_read"]) >= 1);
}

#[test]
fn pre_10_11_install_with_library_db() {
    let env = Env::new();
    let fx = env.fixture(&FixtureSpec::small(Layout::Debian));
    // 10.10 and earlier: library.db next to jellyfin.db, only EF Core's own rows in
    // __EFMigrationsHistory (these are of 10.8.6 to 10.8.13); no version in the log.
    let data = fx.data_dir.join("data");
    {
        let c = rusqlite::Connection::open(data.join("library.db")).unwrap();
        c.execute_batch("CREATE TABLE TypedBaseItems (guid BLOB PRIMARY KEY, data TEXT); INSERT INTO TypedBaseItems VALUES (x'01', 'movie');")
            .unwrap();
        let j = rusqlite::Connection::open(data.join("jellyfin.db")).unwrap();
        j.execute(
            "DELETE FROM __EFMigrationsHistory WHERE ProductVersion LIKE '10.%' OR MigrationId >= '20241020103111'",
            [],
        )
        .unwrap();
    }
    fs::write(
        fx.config_dir.join("migrations.xml"),
        "<MigrationOptions><Applied><ValueTupleOfGuidString><Item1>a</Item1><Item2>CreateUserLoggingConfigFile</Item2></ValueTupleOfGuidString></Applied></MigrationOptions>",
    )
    .unwrap();
    fs::remove_file(fx.log_dir.join("log_20260101.log")).unwrap();
    let b = env.backup(&fx, &[]);
    assert_eq!(
        b["snapshot"]["jellyfin_version"], "10.8.6–10.8.13",
        "{}",
        b["snapshot"]
    );
    assert_eq!(
        b["snapshot"]["jellyfin_version_source"]["source"],
        "database"
    );
    let t = env.root.join("restored");
    env.json(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
    assert_eq!(
        db_content(&t.join("data/data/library.db")),
        db_content(&data.join("library.db"))
    );
}

// ---------------------------------------------------------------------------------------
// forget, gc, check, repair, stats

/// A repository with three snapshots of a changing server; returns the fixture.
fn three_snapshots(env: &Env) -> fixture::Fixture {
    let mut spec = FixtureSpec::small(Layout::Docker);
    spec.items = 30;
    let fx = env.fixture(&spec);
    env.backup(&fx, &["--name", "before-10.11.3"]);
    fixture::day_of_changes(&fx, 11).unwrap();
    env.backup(&fx, &[]);
    fixture::day_of_changes(&fx, 12).unwrap();
    env.backup(&fx, &[]);
    fx
}

fn dir_bytes(p: &Path) -> u64 {
    fixture::walk_sorted(p)
        .unwrap()
        .iter()
        .filter(|p| p.is_file())
        .map(|p| p.metadata().unwrap().len())
        .sum()
}

fn pack_files(repo: &Path) -> Vec<PathBuf> {
    fixture::walk_sorted(&repo.join("packs"))
        .unwrap()
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn forget_by_policy_keeps_named_and_explains() {
    let env = Env::new();
    three_snapshots(&env);
    // An empty policy is refused.
    let out = env.expect(&["forget"], 2);
    assert!(
        s(&out.stderr).contains("empty policy"),
        "{}",
        s(&out.stderr)
    );
    // Dry run: each snapshot with its decision and rule; nothing removed.
    let d = env.json(&["forget", "--keep-last", "1", "--dry-run"], 0);
    let dec = d["decisions"].as_array().unwrap();
    assert_eq!(dec.len(), 3);
    assert_eq!(dec[0]["keep"], true);
    assert_eq!(dec[0]["reasons"][0], "last 1");
    assert_eq!(dec[1]["keep"], false);
    assert_eq!(dec[2]["keep"], true, "named snapshots survive policies");
    assert_eq!(dec[2]["reasons"][0], "named");
    assert_eq!(env.json(&["snapshots"], 0).as_array().unwrap().len(), 3);
    let text = s(&env.run(&["forget", "--keep-last", "1", "--dry-run"]).stdout);
    assert!(
        text.contains("remove") && text.contains("matches no keep rule"),
        "{text}"
    );
    // For real, then with --include-named.
    env.json(&["forget", "--keep-daily", "1"], 0);
    assert_eq!(env.json(&["snapshots"], 0).as_array().unwrap().len(), 2);
    env.json(&["forget", "--keep-last", "1", "--include-named"], 0);
    let left = env.json(&["snapshots"], 0);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert!(left[0]["name"].is_null());
    // By name.
    env.expect(&["forget", "nosuch"], 12);
    env.json(&["forget", "latest"], 0);
    assert_eq!(env.json(&["snapshots"], 0).as_array().unwrap().len(), 0);
}

#[test]
fn gc_reclaims_space_and_keeps_the_rest_exact() {
    let env = Env::new();
    let fx = three_snapshots(&env);
    let before = dir_bytes(&env.repo.join("packs"));
    let exclusive = env.json(&["stats", "before-10.11.3"], 0);
    assert!(
        u(&exclusive["snapshots"][0]["exclusive_bytes"]) > 0,
        "{exclusive}"
    );
    env.json(&["forget", "--keep-last", "1", "--include-named"], 0);

    // Dry run: reports, changes nothing.
    let packs_before = pack_files(&env.repo);
    let plan = env.json(&["gc", "--dry-run"], 0);
    assert!(u(&plan["plan"]["bytes_freed"]) > 0, "{plan}");
    assert_eq!(pack_files(&env.repo), packs_before);

    let g = env.json(&["gc"], 0);
    assert!(u(&g["report"]["bytes_freed"]) > 0);
    let after = dir_bytes(&env.repo.join("packs"));
    assert!(after < before);
    // No more than 10% larger than a fresh repository holding only that snapshot.
    let fresh = Env::new();
    fresh.expect(
        &["-q", "backup", "--data-dir", fx.data_dir.to_str().unwrap()],
        0,
    );
    let fresh_bytes = dir_bytes(&fresh.repo.join("packs"));
    assert!(
        after * 10 <= fresh_bytes * 11,
        "after gc {after} vs fresh {fresh_bytes}"
    );

    env.json(&["check", "--read-data"], 0);
    env.assert_restores("latest", "restored", &expected_state(&fx));
    // A second gc has nothing left to do.
    let g = env.json(&["gc"], 0);
    assert_eq!(u(&g["plan"]["bytes_freed"]), 0, "{g}");
}

#[test]
fn gc_killed_at_each_step_loses_nothing_and_is_finished_next_time() {
    for point in [
        "gc-after-repack",
        "gc-after-unindex",
        "gc-after-first-delete",
    ] {
        let env = Env::new();
        let fx = three_snapshots(&env);
        env.json(&["forget", "--keep-last", "2", "--include-named"], 0);
        let t0 = env.root.join("expected");
        env.json(&["restore", "latest", "--target", t0.to_str().unwrap()], 0);
        let expected = describe(&t0, &[]);

        env.cmd(&["gc", "--max-unused", "0"])
            .crash_at(point)
            .crashes();
        // It stopped inside its sweep: the marker says so.
        assert!(env.repo.join("gc-in-progress").exists(), "{point}");
        // Every remaining snapshot is whole, the data verifies, and the next gc finishes.
        env.json(&["check", "--read-data"], 0);
        for snap in env.json(&["snapshots"], 0).as_array().unwrap() {
            let t = env
                .root
                .join(format!("r-{}", &snap["id"].as_str().unwrap()[..8]));
            env.json(
                &[
                    "restore",
                    snap["id"].as_str().unwrap(),
                    "--target",
                    t.to_str().unwrap(),
                ],
                0,
            );
        }
        let t = env.root.join(format!(
            "r-{}",
            &env.json(&["snapshots"], 0)[1]["id"].as_str().unwrap()[..8]
        ));
        assert_same(&describe(&t, &[]), &expected);
        let g = env.json(&["gc"], 0);
        assert_eq!(g["plan"]["resumes_interrupted"], true, "{point}: {g}");
        env.json(&["check", "--read-data"], 0);
        assert!(!env.repo.join("gc-in-progress").exists());
        // And backups still work afterwards.
        env.backup(&fx, &[]);
    }
}

#[test]
fn gc_and_backup_exclude_each_other() {
    let env = Env::new();
    let fx = three_snapshots(&env);
    // Someone (a running gc) holds the exclusive repository lock.
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(env.repo.join("locks/repo"))
        .unwrap();
    lock.lock().unwrap();
    let out = env.expect(&["backup", "--data-dir", fx.data_dir.to_str().unwrap()], 16);
    assert!(s(&out.stderr).contains("locked by another jellysnap process"));
    env.expect(&["gc"], 16);
    drop(lock);
    env.json(&["check"], 0);
}

/// The first pack holding data chunks of trickplay sheets (the largest chunks).
fn a_data_pack(env: &Env) -> PathBuf {
    pack_files(&env.repo)
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap()
}

#[test]
fn check_reports_flipped_byte_with_affected_files() {
    let env = Env::new();
    three_snapshots(&env);
    env.json(&["check", "--read-data"], 0);
    let pack = a_data_pack(&env);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[200] ^= 0x55; // inside the first record's payload
    fs::write(&pack, &bytes).unwrap();
    // Structure alone cannot see a flipped payload byte; --read-data does.
    let r = env.json(&["check", "--read-data"], 18);
    let probs = r["problems"].as_array().unwrap();
    assert_eq!(probs.len(), 1, "{r}");
    assert_eq!(probs[0]["kind"], "chunk");
    let pack_id = pack.file_name().unwrap().to_str().unwrap();
    assert_eq!(probs[0]["pack"], pack_id);
    assert_eq!(probs[0]["chunks"].as_array().unwrap().len(), 1);
    let affected = r["affected"].as_array().unwrap();
    assert!(!affected.is_empty());
    assert!(affected[0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p.as_str().unwrap().starts_with("data/")));
    let out = env.run(&["check", "--read-data"]);
    let err = s(&out.stderr);
    assert!(
        err.contains(pack_id) && err.contains("is affected"),
        "{err}"
    );
    // Restore of an affected snapshot names the damaged file and restores everything else.
    let snap = affected[0]["snapshot"].as_str().unwrap();
    let damaged: Vec<String> = affected[0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let t = env.root.join("restored");
    let out = env.expect(&["restore", snap, "--target", t.to_str().unwrap()], 3);
    let err = s(&out.stderr);
    assert!(err.contains("could not be restored"), "{err}");
    let first = damaged[0].strip_prefix("data/").unwrap();
    assert!(err.contains(first), "{err} should name {first}");
    assert!(
        !t.join(first).exists(),
        "a damaged file is not left half-written"
    );
    assert!(
        t.join("config/system.xml").is_file(),
        "everything else is restored"
    );
}

#[test]
fn check_reports_truncated_and_missing_packs_and_bad_records() {
    let env = Env::new();
    three_snapshots(&env);
    let packs = pack_files(&env.repo);
    let big = a_data_pack(&env);
    // Truncated pack: structure check already fails, naming the pack.
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(big.metadata().unwrap().len() / 2).unwrap();
    drop(f);
    let r = env.json(&["check"], 18);
    let big_id = big.file_name().unwrap().to_str().unwrap();
    assert!(
        r["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pack"] == big_id && p["kind"] == "pack"),
        "{r}"
    );
    assert!(!r["affected"].as_array().unwrap().is_empty());
    // Missing pack.
    let other = packs.iter().find(|p| **p != big).unwrap();
    fs::remove_file(other).unwrap();
    let r = env.json(&["check"], 18);
    let other_id = other.file_name().unwrap().to_str().unwrap();
    assert!(
        r["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pack"] == other_id && p["detail"] == "pack file is missing"),
        "{r}"
    );
    // Corrupt snapshot record.
    let rec = fixture::walk_sorted(&env.repo.join("snapshots")).unwrap()[0].clone();
    let mut b = fs::read(&rec).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    fs::write(&rec, &b).unwrap();
    let r = env.json(&["check"], 18);
    assert!(
        r["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "snapshot"),
        "{r}"
    );
    let out = env.expect(&["snapshots"], 18);
    assert!(
        s(&out.stderr).contains("corrupt snapshot record"),
        "{}",
        s(&out.stderr)
    );
    // gc refuses to run on a repository where it cannot tell what is live.
    let out = env.run(&["gc"]);
    assert!(!out.status.success());
}

#[test]
fn repair_index_rebuilds_and_recovers_damaged_trailers() {
    let env = Env::new();
    let fx = three_snapshots(&env);
    let pack = a_data_pack(&env);
    let mut b = fs::read(&pack).unwrap();
    let n = b.len();
    b[n - 10] ^= 0xff; // footer magic
    fs::write(&pack, &b).unwrap();
    let r = env.json(&["check"], 18);
    assert!(
        r["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("trailer damaged"),
        "{r}"
    );
    fs::remove_dir_all(env.repo.join("index")).unwrap();
    let r = env.json(&["repair", "index"], 0);
    assert_eq!(
        r["recovered_by_scan"][0],
        pack.file_name().unwrap().to_str().unwrap()
    );
    assert!(u(&r["chunks"]) > 0);
    env.assert_restores("latest", "restored", &expected_state(&fx));
    // Deleting the index: the next command rebuilds it and says so.
    fs::remove_dir_all(env.repo.join("index")).unwrap();
    let out = env.expect(&["stats"], 0);
    assert!(s(&out.stderr).contains("rebuilt it from"));
}

#[test]
fn stats_reports_repository_and_exclusive_sizes() {
    let env = Env::new();
    three_snapshots(&env);
    let st = env.json(&["stats", "before-10.11.3", "latest"], 0);
    let repo = &st["repository"];
    assert_eq!(u(&repo["snapshots"]), 3);
    assert!(u(&repo["logical_bytes"]) > u(&repo["stored_bytes"]));
    assert!(repo["dedup_ratio"].as_f64().unwrap() > 2.0);
    assert!(u(&repo["packs"]) >= 2 && u(&repo["chunks"]) > 10);
    let excl = u(&st["snapshots"][0]["exclusive_bytes"]);
    assert!(excl > 0 && excl < u(&repo["stored_bytes"]));
    // Forgetting that snapshot alone frees about what stats predicted.
    env.json(&["forget", "before-10.11.3"], 0);
    let g = env.json(&["gc", "--max-unused", "0"], 0);
    let freed = u(&g["plan"]["bytes_freed"]);
    assert!(
        freed >= excl * 9 / 10 && freed <= excl * 11 / 10 + 4096,
        "freed {freed}, predicted {excl}"
    );
    let text = s(&env.run(&["stats", "latest"]).stdout);
    assert!(
        text.contains("dedup ratio") && text.contains("forgetting it alone frees"),
        "{text}"
    );
}

#[test]
fn symlinked_metadata_dir_is_followed_and_kept() {
    let env = Env::new();
    let fx = env.small_fixture();
    // The admin moved metadata/ to another disk and left a symlink.
    let elsewhere = env.root.join("big-disk/metadata");
    fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    fs::rename(&fx.metadata_dir, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &fx.metadata_dir).unwrap();
    let b = env.backup(&fx, &["--name", "linked"]);
    let meta_files = fixture::walk_sorted(&elsewhere)
        .unwrap()
        .iter()
        .filter(|p| p.is_file())
        .count() as u64;
    assert!(meta_files > 5);
    let ls = env.json(&["ls", "linked", "-r", "data/metadata"], 0);
    assert_eq!(
        ls.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "f")
            .count() as u64,
        meta_files,
        "{}",
        b["snapshot"]["summary"]
    );
    // Damage a file behind the link, then roll back in place: restored through the link.
    let victim = fixture::walk_sorted(&elsewhere)
        .unwrap()
        .into_iter()
        .find(|p| p.is_file())
        .unwrap();
    let good = fs::read(&victim).unwrap();
    fs::write(&victim, b"garbage").unwrap();
    env.json(&["restore", "linked", "--in-place"], 0);
    assert!(
        fs::symlink_metadata(&fx.metadata_dir)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link stays a link"
    );
    assert_eq!(fs::read(&victim).unwrap(), good);
}

#[test]
fn repository_inside_the_data_dir_is_not_backed_up() {
    let env = Env::new();
    let fx = env.small_fixture();
    let repo = fx.config_dir.join("jellysnap-repo");
    let run = |args: &[&str]| Cmd::at_repo(&repo, args);
    let data = fx.data_dir.to_str().unwrap();
    run(&["backup", "--init", "--data-dir", data]).json(0);
    let v = run(&["ls", "latest", "data/config"]).json(0);
    assert!(
        !v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"].as_str().unwrap().contains("jellysnap-repo")),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------
// Concurrency: each combination proceeds safely or fails clearly; nothing is lost.

/// How long a paused backup holds its locks before it commits.
const PAUSE_MS: u64 = 5000;

/// Start a backup that pauses [`PAUSE_MS`], holding its locks, right before it commits;
/// returns once it holds them.
fn paused_backup(env: &Env, fx: &fixture::Fixture, name: &str) -> std::process::Child {
    // Changed since the last snapshot, so that the database is captured (an unchanged
    // one is taken over from the parent, which leaves nothing in tmp/).
    let c = rusqlite::Connection::open(&fx.db_path).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    c.pragma_update(None, "user_version", v + 1).unwrap();
    drop(c);
    let data = fx.data_dir.to_str().unwrap();
    let child = env
        .cmd(&["--json", "backup", "--data-dir", data, "--name", name])
        .pause_at("backup-before-commit", PAUSE_MS)
        .spawn();
    // Its database capture sits in tmp/ from just after it took its locks until it exits
    // (tmp/ is empty between commands).
    wait_until("the paused backup holds its locks", || {
        entries_in(&env.repo.join("tmp")) > 0
    });
    child
}

#[test]
fn concurrent_commands_are_safe() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "base"]);
    let base_state = expected_state(&fx);
    fixture::day_of_changes(&fx, 5).unwrap();
    let later_state = expected_state(&fx);

    // Backup A pauses holding its locks; meanwhile a second backup waits for the first,
    // then succeeds: it returns only after A has ended.
    let mut a = paused_backup(&env, &fx, "a");
    assert!(a.try_wait().unwrap().is_none(), "A runs when B starts");
    let a_ended = std::thread::spawn(move || {
        let out = a.wait_with_output().unwrap();
        (out, Instant::now())
    });
    let data = fx.data_dir.to_str().unwrap();
    let b = env.cmd(&["--json", "backup", "--data-dir", data, "--name", "b"]);
    let b_out = b.output();
    let b_ended = Instant::now();
    let (a_out, a_ended) = a_ended.join().unwrap();
    assert!(a_out.status.success(), "{}", s(&a_out.stderr));
    assert!(b_out.status.success(), "{}", s(&b_out.stderr));
    assert!(
        b_ended > a_ended,
        "the second backup waited for the first to release its locks"
    );

    // Beside a running backup, a restore of a committed snapshot proceeds, and forget and
    // gc, which need the exclusive lock, fail clearly: all of them end while it still
    // holds its locks (they neither waited for it nor ran after it).
    let mut c = paused_backup(&env, &fx, "c");
    let t = env.root.join("during");
    let restore = env.run(&["restore", "base", "--target", t.to_str().unwrap()]);
    let forget = env.run(&["forget", "base"]);
    let gc = env.run(&["gc"]);
    assert!(
        c.try_wait().unwrap().is_none(),
        "the backup was still running (restore, forget and gc took more than {PAUSE_MS} ms?)"
    );
    let c_out = c.wait_with_output().unwrap();
    assert!(c_out.status.success(), "{}", s(&c_out.stderr));
    assert!(
        restore.status.success(),
        "restore during backup: {}",
        s(&restore.stderr)
    );
    assert_same(&describe(&t, &[]), &base_state);
    for out in [&forget, &gc] {
        assert_eq!(out.status.code(), Some(16), "{}", s(&out.stderr));
        assert!(s(&out.stderr).contains("locked by another jellysnap process"));
    }
    // Nothing was lost: every snapshot restores exactly.
    env.json(&["check", "--read-data"], 0);
    for (name, state) in [
        ("base", &base_state),
        ("a", &later_state),
        ("b", &later_state),
        ("c", &later_state),
    ] {
        env.assert_restores(name, &format!("r-{name}"), state);
    }
}

// ---------------------------------------------------------------------------------------
// Hostile and unusual source trees

#[test]
fn unusual_files_round_trip() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let fx = env.small_fixture();
    let dir = fx.metadata_dir.join("library/odd");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.jpg")),
        b"\xff\xd8\xffnon-utf8 name",
    )
    .unwrap();
    fs::write(dir.join("n".repeat(255)), b"longest name").unwrap();
    fs::write(dir.join("empty.nfo"), b"").unwrap();
    std::os::unix::fs::symlink("empty.nfo", dir.join("link-to-empty")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", dir.join("dangling")).unwrap();
    let sparse = fs::File::create(dir.join("sparse.bin")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    drop(sparse);
    fs::set_permissions(dir.join("empty.nfo"), fs::Permissions::from_mode(0o600)).unwrap();
    let b = env.backup(&fx, &[]);
    assert!(
        summary(&b)["errors"].as_array().unwrap().is_empty(),
        "{}",
        summary(&b)
    );
    env.assert_restores("latest", "restored", &expected_state(&fx));
    // The 64 MiB of zeros cost one chunk.
    assert!(
        u(&summary(&b)["new_raw_bytes"]) < 16 << 20,
        "{}",
        summary(&b)
    );
}

#[test]
fn file_over_4_gib_round_trips() {
    let env = Env::new();
    let fx = env.small_fixture();
    let big = fx.data_dir.join("data/attachments/huge.bin");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    let f = fs::File::create(&big).unwrap();
    let size = (4u64 << 30) + 12345;
    f.set_len(size).unwrap();
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"tail marker", size - 11).unwrap();
        f.write_all_at(b"head marker", 0).unwrap();
    }
    drop(f);
    env.backup(&fx, &["--components", "subtitles"]);
    let t = env.root.join("restored");
    env.json(
        &[
            "restore",
            "latest",
            "--target",
            t.to_str().unwrap(),
            "--components",
            "subtitles",
        ],
        0,
    );
    let hash = |p: &Path| {
        let mut h = blake3::Hasher::new();
        h.update_reader(fs::File::open(p).unwrap()).unwrap();
        (fs::metadata(p).unwrap().len(), h.finalize())
    };
    let restored = t.join("data/attachments/huge.bin");
    assert_eq!(hash(&restored), hash(&big));
}

// ---------------------------------------------------------------------------------------
// Faults: a full disk during backup

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn full_disk_during_backup_loses_nothing_and_recovers() {
    need_root("mounts a small tmpfs");
    let env = Env::new();
    let fx = env.small_fixture();
    let disk = SmallDisk::mount(&env.root.join("disk"), "6m");
    // 12 MB of incompressible metadata will not fit.
    let mut rng = fixture::Rng::new(9);
    let mut big = vec![0u8; 12 << 20];
    rng.fill(&mut big);
    fs::write(fx.metadata_dir.join("library/big-backdrop.jpg"), &big).unwrap();
    let repo = disk.path().join("repo");
    let run = |args: &[&str]| Cmd::at_repo(&repo, args);
    let data = fx.data_dir.to_str().unwrap();
    let restored = |snap: &str, name: &str| {
        let t = env.root.join(name);
        run(&["restore", snap, "--target", t.to_str().unwrap()]).expect(0);
        describe(&t, &[])
    };

    run(&["backup", "--init", "--data-dir", data])
        .args(&["--components", "database", "--name", "small"])
        .expect(0);
    let expected = restored("small", "expected");

    let out = run(&["backup", "--data-dir", data]).expect(20);
    let err = s(&out.stderr);
    assert!(err.contains("is full"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(repo.to_str().unwrap()),
        "the error names the path: {err}"
    );

    // Once space is freed: the earlier snapshot is intact, the repository checks clean,
    // and the next backup succeeds.
    disk.grow("64m");
    let snapshots = run(&["snapshots"]).json(0);
    assert_eq!(snapshots.as_array().unwrap().len(), 1);
    run(&["check", "--read-data"]).expect(0);
    assert_same(&restored("small", "after"), &expected);
    run(&["backup", "--data-dir", data]).expect(0);
    assert_same(&restored("latest", "full"), &expected_state(&fx));
    run(&["check", "--read-data"]).expect(0);
}

#[test]
fn in_place_restore_replaces_a_directory_where_a_file_was() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "before"]);
    let before = expected_state(&fx);
    let sheet = fixture::walk_sorted(&fx.data_dir.join("data/trickplay"))
        .unwrap()
        .into_iter()
        .find(|p| p.is_file())
        .unwrap();
    fs::remove_file(&sheet).unwrap();
    fs::create_dir_all(sheet.join("nested")).unwrap();
    fs::write(sheet.join("nested/x.jpg"), b"\xff\xd8\xffx").unwrap();
    env.json(&["restore", "before", "--in-place"], 0);
    assert!(sheet.is_file());
    assert_same(&expected_state(&fx), &before);
}

#[test]
fn backup_while_the_server_adds_and_deletes_files() {
    let env = Env::new();
    let mut spec = FixtureSpec::small(Layout::Docker);
    spec.items = 40;
    spec.trickplay_sheets_per_item = 6;
    spec.sheet_bytes = 64 * 1024;
    let fx = env.fixture(&spec);
    let churn_dirs = [
        fx.data_dir.join("data/trickplay/zz"),
        fx.metadata_dir.join("library/zz"),
    ];
    for d in &churn_dirs {
        fs::create_dir_all(d).unwrap();
    }
    let content = |i: u64| -> Vec<u8> {
        let mut v = b"\xff\xd8\xff".to_vec();
        v.extend(i.to_le_bytes().iter().cycle().take(20_000));
        v
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, dirs) = (stop.clone(), churn_dirs.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                for d in &dirs {
                    // Written whole and renamed in, as image savers do.
                    let tmp = d.join(format!(".churn-{i}.tmp"));
                    fs::write(&tmp, content(i)).unwrap();
                    fs::rename(&tmp, d.join(format!("churn-{i}.jpg"))).unwrap();
                    if i > 5 {
                        let _ = fs::remove_file(d.join(format!("churn-{}.jpg", i - 5)));
                    }
                }
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let out = env.run(&[
        "--json",
        "backup",
        "--data-dir",
        fx.data_dir.to_str().unwrap(),
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    // Files that vanish between listing and reading are reported (exit 3), nothing else.
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        s(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for e in summary(&v)["errors"].as_array().unwrap() {
        assert!(
            e.as_str().unwrap().contains("churn-"),
            "only churned files may be missing: {e}"
        );
    }
    let t = env.root.join("restored");
    env.json(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
    // Every churned file in the snapshot is whole; everything else is exact.
    let is_churn = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("churn-"))
    };
    let mut restored_churn = 0;
    for p in fixture::walk_sorted(&t).unwrap() {
        if is_churn(&p) {
            if p.to_string_lossy().ends_with(".tmp") {
                continue; // caught half-written, as any reader would
            }
            let i: u64 = p.file_stem().unwrap().to_string_lossy()["churn-".len()..]
                .parse()
                .unwrap();
            assert_eq!(fs::read(&p).unwrap(), content(i), "{}", p.display());
            restored_churn += 1;
        }
    }
    assert!(restored_churn > 0);
    let mut got = describe(&t, &[]);
    let mut want = expected_state(&fx);
    got.retain(|p, _| !is_churn(p));
    want.retain(|p, _| !is_churn(p));
    for d in ["data/trickplay/zz", "metadata/library/zz"] {
        got.remove(Path::new(d));
        want.remove(Path::new(d));
    }
    assert_same(&got, &want);
}

#[test]
fn damaged_config_and_index_are_detected() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    // A flipped byte in the config body: refused, naming the file; nothing changes.
    let cfg = env.repo.join("config");
    let orig = fs::read(&cfg).unwrap();
    let mut bad = orig.clone();
    let i = bad.iter().position(|&b| b == b'{').unwrap();
    bad[i] = b'[';
    fs::write(&cfg, &bad).unwrap();
    let out = env.expect(&["snapshots"], 18);
    assert!(
        s(&out.stderr).contains("corrupt repository config"),
        "{}",
        s(&out.stderr)
    );
    env.expect(&["backup", "--data-dir", fx.data_dir.to_str().unwrap()], 18);
    fs::write(&cfg, &orig).unwrap();
    // A truncated config (a torn write that never happens with atomic writes, or a disk
    // error) is also refused.
    fs::write(&cfg, &orig[..6]).unwrap();
    env.expect(&["snapshots"], 18);
    fs::write(&cfg, &orig).unwrap();

    // Damaged index files: the command that meets them says how to rebuild; repair does.
    for f in fixture::walk_sorted(&env.repo.join("index")).unwrap() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("MANIFEST") || name.ends_with(".sst") {
            let b = fs::read(&f).unwrap();
            fs::write(&f, &b[..b.len() / 2]).unwrap();
        }
    }
    let t = env.root.join("restored");
    let out = env.run(&["restore", "one", "--target", t.to_str().unwrap()]);
    if !out.status.success() {
        assert!(
            s(&out.stderr).contains("repair index"),
            "{}",
            s(&out.stderr)
        );
        let _ = fs::remove_dir_all(&t);
        env.json(&["repair", "index"], 0);
        env.json(&["restore", "one", "--target", t.to_str().unwrap()], 0);
    }
    // Either way the restore is exact and the repository checks clean.
    assert_same(&describe(&t, &[]), &expected_state(&fx));
    env.json(&["check", "--read-data"], 0);
}

/// Regression (found by the crash campaign): a first backup killed while it created the
/// repository left a directory that every later backup refused as "not empty".
#[test]
fn interrupted_repository_creation_is_finished_by_the_next_command() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.cmd(&[
        "backup",
        "--init",
        "--data-dir",
        fx.data_dir.to_str().unwrap(),
    ])
    .crash_at("init-before-config")
    .crashes();
    assert!(env.repo.join("packs").is_dir() && !env.repo.join("config").exists());
    let b = env.backup(&fx, &[]);
    assert_eq!(b["repository_created"], true);
    // A directory with foreign content is still refused.
    let other = env.root.join("not-a-repo");
    fs::create_dir_all(other.join("packs")).unwrap();
    fs::write(other.join("packs/x"), b"x").unwrap();
    // A repository problem (10), not a bad command line.
    Cmd::at_repo(&other, &["init"]).expect(10);
}

/// Regression (seen once in CI): symlinks of one directory are restored in parallel and
/// raced on a shared temp name, so one of them failed to restore.
#[test]
fn many_symlinks_in_one_directory_restore() {
    let env = Env::new();
    let fx = env.small_fixture();
    let dir = fx.metadata_dir.join("library/links");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..200 {
        std::os::unix::fs::symlink(format!("target-{i}"), dir.join(format!("link-{i:03}")))
            .unwrap();
    }
    env.backup(&fx, &[]);
    for round in 0..3 {
        env.assert_restores("latest", &format!("restored-{round}"), &expected_state(&fx));
    }
}
