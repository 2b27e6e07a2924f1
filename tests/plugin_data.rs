//! What plugins keep in Jellyfin's data path (Playback Reporting's `playback_reporting.db`,
//! a plugin's own folder, a database under `plugins/configurations/`) is part of every
//! snapshot, through the binary: each SQLite database among it is captured with the
//! backup API like jellyfin.db (rows still only in its WAL come back), the rest as files;
//! Jellyfin's own leftovers there stay out; a plugin's database that cannot be captured is
//! left out and said so, and the rest of the snapshot is kept.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Command;

use common::env::{s, Env};
use common::fixture::Fixture;
use common::server::Server;
use common::sqlcli::{commit_to_wal_and_die, dump_of, hold, live_dump, side, sqlite3};
use serde_json::Value;

/// A plugin's state beside the fixture's Jellyfin state. Returns the plugin databases
/// (relative to the data dir) and the plain files that must come back.
fn add_plugin_state(fx: &Fixture) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dp = fx.data_path();
    let base = &fx.data_dir;
    // Playback Reporting: a WAL database whose newest rows are only in its -wal.
    let reporting = dp.join("playback_reporting.db");
    sqlite3(
        &reporting,
        "PRAGMA journal_mode=WAL; CREATE TABLE PlaybackActivity (DateCreated DATETIME NOT NULL, UserId TEXT, ItemId TEXT, ItemName TEXT, PlayDuration INT); INSERT INTO PlaybackActivity VALUES ('2026-11-30 20:00:00', 'u1', 'i1', 'A Film', 5400);",
    );
    commit_to_wal_and_die(
        &reporting,
        &[
            "INSERT INTO PlaybackActivity VALUES ('2026-12-01 21:00:00', 'u1', 'i2', 'Another Film', 6100)",
            "INSERT INTO PlaybackActivity VALUES ('2026-12-02 19:30:00', 'u2', 'i3', 'A Series', 1500)",
        ],
    );
    // A plugin's folder: a rollback-journal database, its settings, and a LiteDB-style
    // `.db` file that is not SQLite (kept as a file).
    let skipper = dp.join("introskipper");
    fs::create_dir_all(skipper.join("cache")).unwrap();
    sqlite3(
        &skipper.join("introskipper.db"),
        "CREATE TABLE DbSegment (ItemId TEXT, Type INT, Start REAL, End REAL, PRIMARY KEY (ItemId, Type)); INSERT INTO DbSegment VALUES ('i2', 0, 12.5, 95.0), ('i3', 0, 0.0, 61.25);",
    );
    fs::write(
        skipper.join("settings.json"),
        b"{\"MinimumIntroDuration\": 15}\n",
    )
    .unwrap();
    fs::write(skipper.join("cache/i2.bin"), vec![7u8; 70_000]).unwrap();
    fs::write(dp.join("LiteStore.db"), b"\x00\x00LiteDB not SQLite\n").unwrap();
    // A database under plugins/configurations.
    let conf = base.join("plugins/configurations/SomePlugin");
    fs::create_dir_all(&conf).unwrap();
    sqlite3(
        &conf.join("history.sqlite"),
        "CREATE TABLE h (id INTEGER PRIMARY KEY, at TEXT); INSERT INTO h VALUES (1, 'then'), (2, 'now');",
    );
    // Found at any depth, and by the -wal beside it whatever its name.
    let deep = dp.join("deepplug/1/2/3/4/5/6/7/deep.db");
    fs::create_dir_all(deep.parent().unwrap()).unwrap();
    let unnamed = dp.join("zplug/state");
    fs::create_dir_all(unnamed.parent().unwrap()).unwrap();
    for db in [&deep, &unnamed] {
        sqlite3(db, "PRAGMA journal_mode=WAL; CREATE TABLE t (x);");
        commit_to_wal_and_die(db, &["INSERT INTO t VALUES ('only in the wal')"]);
    }
    // Jellyfin's own leftovers and never-state: not plugin data.
    sqlite3(&dp.join("users.db.old"), "CREATE TABLE t (x);");
    fs::create_dir_all(dp.join("transcodes")).unwrap();
    fs::write(dp.join("transcodes/abc.ts"), vec![1u8; 5000]).unwrap();
    let rel = |p: PathBuf| p.strip_prefix(base).unwrap().to_path_buf();
    (
        vec![
            rel(reporting),
            rel(skipper.join("introskipper.db")),
            rel(conf.join("history.sqlite")),
            rel(deep),
            rel(unnamed),
        ],
        vec![
            rel(skipper.join("settings.json")),
            rel(skipper.join("cache/i2.bin")),
            rel(dp.join("LiteStore.db")),
        ],
    )
}

fn database_rels(b: &Value) -> Vec<String> {
    b["snapshot"]["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rel"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_plugins_databases_and_files_come_back_with_the_snapshot() {
    let env = Env::new();
    let fx = env.small_fixture();
    let (dbs, files) = add_plugin_state(&fx);
    let dumps: Vec<String> = dbs
        .iter()
        .map(|d| live_dump(&fx.data_dir.join(d)))
        .collect();
    assert!(
        dumps[0].contains("Another Film") && dumps[0].contains("A Series"),
        "the newest rows are only in the -wal: {}",
        dumps[0]
    );

    // A link to a directory elsewhere (here a media folder) is not followed.
    let media = env.root.join("media");
    fs::create_dir_all(&media).unwrap();
    fs::write(media.join("film.mkv"), vec![3u8; 10_000]).unwrap();
    std::os::unix::fs::symlink(&media, fx.data_path().join("recordings")).unwrap();

    let b = env.backup(&fx, &[]);
    let linked: Vec<&Value> = b["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "linked-dir-skipped")
        .collect();
    assert_eq!(linked.len(), 1, "{b}");
    assert!(linked[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("data/recordings"));
    let captured = database_rels(&b);
    for d in &dbs {
        let d = d.to_str().unwrap();
        assert!(captured.iter().any(|c| c == d), "{d} in {captured:?}");
    }
    for d in b["snapshot"]["databases"].as_array().unwrap() {
        assert_eq!(d["capture"], "logical", "{d}");
    }
    // The live plugin database is as it was: nothing checkpointed or removed its -wal.
    assert!(
        fs::metadata(side(&fx.data_dir.join(&dbs[0]), "-wal"))
            .unwrap()
            .len()
            > 0
    );

    let (target, _) = env.restore_to("latest", "restored");
    for (d, want) in dbs.iter().zip(&dumps) {
        let got = dump_of(&target.join(d));
        assert!(
            got == *want,
            "{}: restored\n{got}\nwanted\n{want}",
            d.display()
        );
        assert!(!side(&target.join(d), "-wal").exists());
    }
    for f in &files {
        assert_eq!(
            fs::read(target.join(f)).unwrap(),
            fs::read(fx.data_dir.join(f)).unwrap(),
            "{}",
            f.display()
        );
    }
    let dp = fx.data_path();
    let rel = |p: &str| target.join(dp.strip_prefix(&fx.data_dir).unwrap()).join(p);
    assert!(!rel("users.db.old").exists(), "a migration leftover");
    assert!(!rel("transcodes").exists(), "transcodes are never state");
    assert!(
        !rel("recordings").exists(),
        "a link to a directory is not followed"
    );

    // A plugin that wrote on after the snapshot is rolled back with the server, its
    // newer rows in the -wal included.
    let reporting = fx.data_dir.join(&dbs[0]);
    sqlite3(
        &reporting,
        "DELETE FROM PlaybackActivity WHERE UserId = 'u2'",
    );
    fs::write(fx.data_dir.join(&files[0]), b"{\"changed\": true}\n").unwrap();
    env.backup(&fx, &[]);
    commit_to_wal_and_die(
        &reporting,
        &["INSERT INTO PlaybackActivity VALUES ('2026-12-03 10:00:00', 'u9', 'i9', 'Later', 1)"],
    );
    let first = b["id"].as_str().unwrap();
    env.expect(&["restore", first, "--in-place"], 0);
    let now = live_dump(&reporting);
    assert!(now == dumps[0], "rolled back in place: {now}");
    assert_eq!(
        fs::read(fx.data_dir.join(&files[0])).unwrap(),
        fs::read(target.join(&files[0])).unwrap()
    );
}

#[test]
fn a_plugins_database_that_cannot_be_captured_is_left_out_and_said_so() {
    let env = Env::new();
    let fx = env.small_fixture();
    let dp = fx.data_path();
    // SQLite's header over bytes that are not a database: the backup API refuses it.
    let mut broken = b"SQLite format 3\0".to_vec();
    broken.extend((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    fs::write(dp.join("broken.db"), &broken).unwrap();
    let good = dp.join("good.db");
    sqlite3(&good, "CREATE TABLE g (x); INSERT INTO g VALUES (42);");
    // Named like the server's database, in a plugin's folder: still a plugin's.
    fs::create_dir_all(dp.join("plug")).unwrap();
    fs::write(dp.join("plug/jellyfin.db"), &broken).unwrap();
    // Names a snapshot cannot hold: left out and said so, never stored without their -wal.
    let odd = OsStr::from_bytes(b"caf\xe9.db");
    for db in [dp.join(odd), dp.join("plug").join(odd)] {
        sqlite3(&db, "PRAGMA journal_mode=WAL; CREATE TABLE t (x);");
        commit_to_wal_and_die(&db, &["INSERT INTO t VALUES (1)"]);
    }

    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["--json", "backup", "--data-dir", data], 3);
    let err = s(&out.stderr);
    for name in ["broken.db", "plug/jellyfin.db"] {
        assert!(
            err.contains(&format!("{name}: a plugin's database, not captured")),
            "{name}: {err}"
        );
    }
    for name in ["data/caf\u{fffd}.db", "plug/caf\u{fffd}.db"] {
        assert!(
            err.contains(&format!("{name}: a plugin's data whose name is not UTF-8")),
            "{name}: {err}"
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut missing: Vec<String> = v["snapshot"]["not_captured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["rel"].as_str().unwrap().to_string())
        .collect();
    missing.sort();
    let data_path = dp.strip_prefix(&fx.data_dir).unwrap().to_str().unwrap();
    let want: Vec<String> = [
        "broken.db",
        "caf\u{fffd}.db",
        "plug/caf\u{fffd}.db",
        "plug/jellyfin.db",
    ]
    .iter()
    .map(|n| format!("{data_path}/{n}"))
    .collect();
    assert_eq!(missing, want, "{v}");
    let captured = database_rels(&v);
    assert!(
        captured.iter().any(|c| c.ends_with("data/jellyfin.db")),
        "{captured:?}"
    );
    assert!(
        captured.iter().any(|c| c.ends_with("data/good.db")),
        "{captured:?}"
    );

    // `dump` of what was not captured says so, with the same code as an unknown path.
    let out = env.expect(
        &["dump", "latest", &format!("data/{data_path}/broken.db")],
        12,
    );
    assert!(
        s(&out.stderr).contains("was not captured by snapshot"),
        "{}",
        s(&out.stderr)
    );

    let (target, _) = env.restore_to("latest", "restored");
    let in_target = target.join(dp.strip_prefix(&fx.data_dir).unwrap());
    assert!(!in_target.join("broken.db").exists());
    assert!(!in_target.join("plug/jellyfin.db").exists());
    assert!(!in_target.join(odd).exists() && !in_target.join("plug").join(odd).exists());
    assert_eq!(
        sqlite3(&in_target.join("good.db"), "SELECT x FROM g"),
        "42\n"
    );
    let st = Command::new("sqlite3")
        .arg(in_target.join("jellyfin.db"))
        .arg("PRAGMA integrity_check")
        .output()
        .unwrap();
    assert_eq!(s(&st.stdout), "ok\n");
}

/// A process that keeps a plugin's database in SQLite's exclusive locking mode lets no
/// reader in while it runs: the backup waits for it a short while only, leaves it out and
/// says why and what to do; the rest is backed up.
#[test]
fn a_plugins_database_held_exclusively_is_left_out_with_the_reason() {
    let env = Env::new();
    let fx = env.small_fixture();
    let db = fx.data_path().join("locked.db");
    sqlite3(&db, "PRAGMA journal_mode=WAL; CREATE TABLE t (x);");
    let mut holder = hold(&db, "EXCLUSIVE", "INSERT INTO t VALUES (1)");

    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["--json", "backup", "--data-dir", data], 3);
    let _ = holder.kill();
    let _ = holder.wait();
    let err = s(&out.stderr);
    assert!(
        err.contains("locked.db: a plugin's database, not captured")
            && err.contains("exclusive locking mode")
            && err.contains("stop that process"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(database_rels(&v)
        .iter()
        .any(|c| c.ends_with("data/jellyfin.db")));
}

/// An in-place restore goes ahead only when nothing holds any of the snapshot's
/// databases open, a plugin's below `plugins/` included.
#[test]
fn an_in_place_restore_waits_for_a_plugins_database_in_use() {
    let env = Env::new();
    let fx = env.small_fixture();
    let db = fx.data_dir.join("plugins/configurations/Q/q.db");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    sqlite3(&db, "CREATE TABLE t (x); INSERT INTO t VALUES (1);");
    env.backup(&fx, &[]);
    let server = Server::start(&db, 10, Some("plugin-host"));
    let out = env.expect(&["restore", "latest", "--in-place"], 17);
    assert!(s(&out.stderr).contains("q.db"), "{}", s(&out.stderr));
    drop(server);
    env.expect(&["restore", "latest", "--in-place"], 0);
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM t"), "1\n");
}

/// A plugin's folder moved to another disk, a link left in its place: an in-place
/// restore of a snapshot that had the folder replaces the link with the snapshot's
/// folder and never writes or deletes anything through it.
#[test]
fn an_in_place_restore_never_writes_through_a_plugins_link() {
    let env = Env::new();
    let fx = env.small_fixture();
    let here = fx.data_path().join("movedplug");
    fs::create_dir_all(&here).unwrap();
    fs::write(here.join("m.txt"), b"as in the snapshot").unwrap();
    env.backup(&fx, &[]);

    let there = env.root.join("otherdisk/movedplug");
    fs::create_dir_all(there.parent().unwrap()).unwrap();
    fs::rename(&here, &there).unwrap();
    std::os::unix::fs::symlink(&there, &here).unwrap();
    fs::write(there.join("m.txt"), b"newer, on the other disk").unwrap();
    fs::write(there.join("new.txt"), b"new on the other disk").unwrap();

    env.expect(&["restore", "latest", "--in-place"], 0);
    assert_eq!(
        fs::read(there.join("m.txt")).unwrap(),
        b"newer, on the other disk"
    );
    assert_eq!(
        fs::read(there.join("new.txt")).unwrap(),
        b"new on the other disk"
    );
    let now = fs::symlink_metadata(&here).unwrap();
    assert!(
        now.is_dir(),
        "the link is replaced by the snapshot's folder"
    );
    assert_eq!(fs::read(here.join("m.txt")).unwrap(), b"as in the snapshot");
}
