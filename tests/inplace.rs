//! In-place restores on installs as admins arrange them: the repository inside the data
//! it rolls back, the database linked from another disk, a metadata folder replaced by a
//! symlink, and restores and checks killed part-way (what they leave must be finished or
//! cleared, never mistaken for data).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::env::{assert_crashed, s, wait_until, Cmd, Env};
use common::fixture::{Fixture, FixtureSpec, Layout};
use common::server::Server;
use common::sqlcli::{commit_to_wal_and_die, side, sqlite3};
use common::verify;

const INTENT: &str = ".jellysnap-restore-intent";

/// The database with its side files, copied and opened as a starting server would:
/// (`integrity_check` output, `.dump`).
fn as_server_sees_it(db: &Path) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("jellyfin.db");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        if side(db, suffix).exists() {
            fs::copy(side(db, suffix), side(&copy, suffix)).unwrap();
        }
    }
    let run = |sql: &str| {
        let out = Command::new("sqlite3")
            .arg(&copy)
            .arg(sql)
            .output()
            .unwrap();
        format!("{}{}", s(&out.stdout), s(&out.stderr))
    };
    (run("PRAGMA integrity_check"), run(".dump"))
}

/// The names in `dir` starting with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn data_arg(fx: &Fixture) -> &str {
    fx.data_dir.to_str().unwrap()
}

#[test]
fn an_in_place_restore_leaves_a_repository_inside_the_restored_data_alone() {
    let cases = Layout::ALL
        .iter()
        .flat_map(|l| ["metadata/jsrepo", "data/trickplay/jsrepo"].map(|p| (*l, p)));
    for (layout, inside) in cases {
        let env = Env::new();
        let fx = env.fixture(&FixtureSpec::small(layout));
        let repo = fx.data_dir.join(inside);
        let inside = format!("{} {inside}", layout.name());
        let run = |args: &[&str]| Cmd::at_repo(&repo, args);
        let out = run(&["--json", "backup", "--init", "--data-dir", data_arg(&fx)]).expect(0);
        let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            b["repository_inside_data"].as_str(),
            Some(repo.to_str().unwrap()),
            "{inside}: {b}"
        );
        assert!(
            s(&out.stderr).contains("is inside the backed-up data"),
            "{inside}: {}",
            s(&out.stderr)
        );
        fs::write(fx.metadata_dir.join("new-after-backup.jpg"), b"x").unwrap();
        run(&["backup", "--data-dir", data_arg(&fx)]).json(0);

        let first = run(&["snapshots"]).json(0)[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = run(&["restore", &first, "--in-place", "--force"]).json(0);
        let protected = &r["plan"]["protected"];
        assert_eq!(
            protected,
            &serde_json::json!([repo.to_str().unwrap()]),
            "{inside}: {r}"
        );
        assert!(!fx.metadata_dir.join("new-after-backup.jpg").exists());
        assert_eq!(
            run(&["snapshots"]).json(0).as_array().unwrap().len(),
            2,
            "{inside}: the restore removed snapshots"
        );
        run(&["check", "--read-data"]).json(0);
    }
}

#[test]
fn a_database_linked_from_another_disk_is_backed_up_and_rolled_back_through_the_link() {
    let env = Env::new();
    let fx = env.small_fixture();
    let ssd = env.root.join("ssd");
    fs::create_dir(&ssd).unwrap();
    let real = ssd.join("jellyfin.db");
    fs::rename(&fx.db_path, &real).unwrap();
    std::os::unix::fs::symlink(&real, &fx.db_path).unwrap();
    // Committed rows that live only in the WAL beside the real file.
    commit_to_wal_and_die(
        &real,
        &[
            "CREATE TABLE before_backup (x)",
            "INSERT INTO before_backup VALUES (1)",
        ],
    );
    let (_, want) = as_server_sees_it(&real);
    assert!(want.contains("before_backup"));
    let b = env.backup(&fx, &[]);
    assert_eq!(b["snapshot"]["databases"][0]["capture"], "logical", "{b}");

    // The snapshot holds the database itself, not the link.
    let (target, _) = env.restore_to("latest", "copy");
    let copy = target.join("data/jellyfin.db");
    assert!(fs::symlink_metadata(&copy).unwrap().is_file());
    assert_eq!(as_server_sees_it(&copy).1, want);

    // The server moves on; the rollback rewrites the real database and keeps the link.
    sqlite3(
        &real,
        "CREATE TABLE after_backup (x); DROP TABLE before_backup;",
    );
    env.json(&["restore", "latest", "--in-place"], 0);
    assert_eq!(fs::read_link(&fx.db_path).unwrap(), real, "the link stays");
    let (integrity, dump) = as_server_sees_it(&real);
    assert_eq!(integrity.trim(), "ok");
    assert_eq!(dump, want, "the real database is rolled back");

    // A link to a disk that is not mounted: refused before anything changes.
    fs::rename(&ssd, env.root.join("ssd-unmounted")).unwrap();
    let config = fx.config_dir.join("system.xml");
    fs::write(
        &config,
        b"<ServerConfiguration>edited</ServerConfiguration>",
    )
    .unwrap();
    let out = env.run_exact(&["restore", "latest", "--in-place", "--force"]);
    assert_eq!(out.status.code(), Some(19), "{}", s(&out.stderr));
    assert!(s(&out.stderr).contains("mounted"), "{}", s(&out.stderr));
    assert_eq!(fs::read_link(&fx.db_path).unwrap(), real);
    assert_eq!(
        fs::read(&config).unwrap(),
        b"<ServerConfiguration>edited</ServerConfiguration>"
    );
}

#[test]
fn a_server_using_a_linked_database_stops_an_in_place_restore() {
    let env = Env::new();
    let fx = env.small_fixture();
    let real = env.root.join("ssd/jellyfin.db");
    fs::create_dir(real.parent().unwrap()).unwrap();
    fs::rename(&fx.db_path, &real).unwrap();
    std::os::unix::fs::symlink(&real, &fx.db_path).unwrap();
    env.backup(&fx, &[]);
    // The server opened the database where it lives; nothing under data/ is open.
    let server = Server::start(&real, 20, None);
    let out = env.run_exact(&["restore", "latest", "--in-place"]);
    assert_eq!(out.status.code(), Some(17), "{}", s(&out.stderr));
    assert!(
        s(&out.stderr).contains(&format!("process {} ", server.pid)),
        "{}",
        s(&out.stderr)
    );
}

#[test]
fn a_metadata_folder_replaced_by_a_symlink_is_rolled_back_and_the_links_target_left_alone() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let lib = fx.metadata_dir.join("library");
    let shard = fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    // The admin moved one folder elsewhere (same files, same times) and linked it back.
    let elsewhere = env.root.join("elsewhere");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&shard)
        .arg(&elsewhere)
        .status()
        .unwrap();
    assert!(st.success());
    fs::write(elsewhere.join("only-elsewhere.jpg"), b"mine").unwrap();
    fs::remove_dir_all(&shard).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &shard).unwrap();
    let target_before = verify::describe(&elsewhere, &[]);

    env.json(&["restore", "latest", "--in-place", "--force"], 0);
    assert!(fs::symlink_metadata(&shard).unwrap().is_dir());
    let (restored, _) = env.restore_to("latest", "copy");
    let rel = shard.strip_prefix(&fx.data_dir).unwrap();
    verify::assert_same(
        &verify::describe(&shard, &[]),
        &verify::describe(&restored.join(rel), &[]),
    );
    verify::assert_same(&verify::describe(&elsewhere, &[]), &target_before);
}

#[test]
fn a_killed_check_leaves_no_rebuild_behind_and_a_running_one_keeps_its_own() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let tmp = env.repo.join("tmp");
    // The rebuilt files (their SQLite side files come and go while they are written).
    let rebuilds = || {
        let mut r = named(&tmp, ".jellysnap-restore-");
        r.retain(|n| !["-journal", "-wal", "-shm"].iter().any(|x| n.ends_with(x)));
        r
    };
    // The next backup, or the next check, clears what a killed check left.
    for next in [vec!["backup", "--data-dir", data_arg(&fx)], vec!["check"]] {
        env.cmd(&["check", "--read-data"])
            .crash_at("check-rebuilt")
            .crashes();
        assert!(!rebuilds().is_empty(), "the killed check left its rebuild");
        env.cmd(&next).expect(0);
        assert_eq!(rebuilds(), Vec::<String>::new(), "{next:?} clears it");
    }

    // A check that is still rebuilding keeps its file while another check runs.
    let mut running = env
        .cmd(&["check", "--read-data"])
        .pause_at("check-rebuilt", 4000)
        .quiet()
        .spawn();
    // Its rebuild's name shows before the rebuild is done (and may be replaced while it
    // is made): taken once it has stayed the same for a while, well inside the pause.
    let mut last = Vec::new();
    wait_until("the running check has rebuilt its database", || {
        let now = rebuilds();
        let settled = !now.is_empty() && now == last;
        last = now;
        if !settled {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        settled
    });
    let mine = rebuilds();
    env.json(&["check"], 0);
    assert_eq!(rebuilds(), mine, "a running check's rebuild was removed");
    assert!(running.wait().unwrap().success());
    assert_eq!(rebuilds(), Vec::<String>::new());
}

#[test]
fn a_killed_restore_leaves_no_link_temp_behind() {
    let env = Env::new();
    let fx = env.small_fixture();
    // data/device.txt as a symlink: restored by a link made beside it, then renamed.
    let device = fx.data_path().join("device.txt");
    fs::remove_file(&device).unwrap();
    std::os::unix::fs::symlink("device-id-one", &device).unwrap();
    env.backup(&fx, &[]);
    fs::remove_file(&device).unwrap();
    std::os::unix::fs::symlink("device-id-two", &device).unwrap();
    env.cmd(&["restore", "latest", "--in-place", "--force"])
        .crash_at("restore-link-made")
        .crashes();
    assert!(!named(&fx.data_path(), ".jellysnap-link-").is_empty());
    env.json(&["restore", "latest", "--in-place", "--force"], 0);
    assert_eq!(
        named(&fx.data_path(), ".jellysnap-link-"),
        Vec::<String>::new()
    );
    assert_eq!(
        fs::read_link(&device).unwrap(),
        PathBuf::from("device-id-one")
    );
}

/// The text between `start` and `end` in `haystack`.
fn between<'a>(haystack: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = haystack.find(start)? + start.len();
    let len = haystack[from..].find(end)?;
    Some(&haystack[from..from + len])
}

#[test]
fn an_in_place_restore_killed_at_any_step_of_the_database_swap_is_old_new_or_marked() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.json(&["init"], 0);
    sqlite3(
        &fx.db_path,
        "PRAGMA journal_mode=WAL; CREATE TABLE pad (id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO pad (v) SELECT hex(randomblob(100)) FROM
           (WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 500) SELECT i FROM r);",
    );
    env.backup(&fx, &["--name", "old"]);
    let snapshot = as_server_sees_it(&fx.db_path).1;
    // The server moved on: a migration, then committed frames still in its WAL.
    sqlite3(&fx.db_path, "CREATE TABLE migrated (x); VACUUM;");
    commit_to_wal_and_die(&fx.db_path, &["UPDATE pad SET v = 'new' WHERE id % 2 = 0"]);
    env.backup(&fx, &["--name", "new"]);
    let live = as_server_sees_it(&fx.db_path).1;
    assert_ne!(live, snapshot);
    let saved = env.root.join("saved");
    fs::create_dir(&saved).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        fs::copy(side(&fx.db_path, suffix), side(&saved.join("db"), suffix)).unwrap();
    }
    let data = fx.data_path();
    let intent = fx.data_dir.join(INTENT);
    let reset = || {
        for n in named(&data, ".jellysnap-") {
            fs::remove_file(data.join(n)).unwrap();
        }
        let _ = fs::remove_file(&intent);
        for suffix in ["", "-wal", "-shm"] {
            fs::copy(side(&saved.join("db"), suffix), side(&fx.db_path, suffix)).unwrap();
        }
    };

    let mut marked = 0;
    for n in 1.. {
        reset();
        let point = format!("restore-swap-{n}");
        let out = env
            .cmd(&["restore", "old", "--in-place", "--force"])
            .crash_at(&point)
            .output();
        if out.status.success() {
            // Past the last step: the restore ran to its end.
            assert!(n > 4, "the swap has at least 4 steps, ran out at {n}");
            assert!(!intent.exists());
            assert_eq!(as_server_sees_it(&fx.db_path).1, snapshot);
            break;
        }
        assert_crashed(&out, &point);
        let (integrity, dump) = as_server_sees_it(&fx.db_path);
        if !intent.exists() {
            assert_eq!(integrity.trim(), "ok", "{point}");
            assert!(
                dump == live || dump == snapshot,
                "{point}: neither the old nor the restored database, and nothing says so"
            );
            continue;
        }
        marked += 1;
        // Marked: backups and other restores refuse, saying how to finish.
        let refused = env.cmd(&["backup", "--data-dir", data_arg(&fx)]).expect(21);
        let msg = s(&refused.stderr);
        env.cmd(&["restore", "new", "--in-place", "--force"])
            .expect(21);
        let finish = between(&msg, "Finish it: `", "`")
            .unwrap_or_else(|| panic!("{point}: no way to finish in: {msg}"));
        // Where it is offered, the undo brings the old database back exactly.
        if let Some(undo) = between(&msg, "nothing else was changed): ", "\n") {
            let record = fs::read(&intent).unwrap();
            let keep = env.root.join(format!("kept-{n}"));
            fs::create_dir(&keep).unwrap();
            let files: Vec<String> = named(&data, "");
            for f in &files {
                if data.join(f).is_file() {
                    fs::copy(data.join(f), keep.join(f)).unwrap();
                }
            }
            let st = Command::new("sh").arg("-c").arg(undo).status().unwrap();
            assert!(st.success(), "{point}: {undo}");
            assert!(!intent.exists(), "{point}: the undo removes the record");
            assert_eq!(as_server_sees_it(&fx.db_path).1, live, "{point}: {undo}");
            assert_eq!(named(&data, ".jellysnap-"), Vec::<String>::new());
            // Back to the marked state, to finish it as well.
            for n in named(&data, "") {
                if data.join(&n).is_file() {
                    fs::remove_file(data.join(n)).unwrap();
                }
            }
            for f in &files {
                if keep.join(f).is_file() {
                    fs::copy(keep.join(f), data.join(f)).unwrap();
                }
            }
            fs::write(&intent, &record).unwrap();
        }
        let words: Vec<&str> = finish.split_whitespace().collect();
        assert_eq!(words[0], "jellysnap");
        // Run with --force, the restore is finished with it too.
        assert_eq!(words.last(), Some(&"--force"), "{point}: {finish}");
        Cmd::new(&words[1..]).expect(0);
        assert!(!intent.exists(), "{point}: finished, the record goes");
        let (integrity, dump) = as_server_sees_it(&fx.db_path);
        assert_eq!(integrity.trim(), "ok", "{point}");
        assert_eq!(dump, snapshot, "{point}: finished");
        assert_eq!(named(&data, ".jellysnap-"), Vec::<String>::new());
    }
    assert!(marked >= 3, "only {marked} step(s) left a marked state");
}

/// The command that finishes an interrupted rollback names the repository by its absolute
/// path, so it works from any directory, whatever path the restore was given.
#[test]
fn the_command_that_finishes_a_rollback_works_from_any_directory() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    let relative = env.repo.strip_prefix(&env.root).unwrap();
    Cmd::new(&["--repo"])
        .arg(relative)
        .args(&["restore", "one", "--in-place", "--force"])
        .current_dir(&env.root)
        .crash_at("restore-swap-1")
        .crashes();
    let data = fx.data_dir.to_str().unwrap();
    let out = env.run_exact(&["backup", "--data-dir", data]);
    let err = s(&out.stderr);
    assert_eq!(out.status.code(), Some(21), "{err}");
    assert!(
        err.contains(&format!("jellysnap --repo {} restore", env.repo.display())),
        "{err}"
    );
}

/// A restore killed while writing its intent record leaves that record's temp file in the
/// data dir; the next in-place restore removes it and finishes.
#[test]
fn the_temp_file_of_a_killed_intent_record_is_cleared() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    env.cmd(&["restore", "one", "--in-place", "--force"])
        .crash_at("restore-intent-temp")
        .crashes();
    let temps = || -> Vec<String> {
        fs::read_dir(&fx.data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".jellysnap-restore-") || n.starts_with(".tmp-"))
            .collect()
    };
    assert_eq!(temps().len(), 1, "{:?}", temps());
    env.expect(&["restore", "one", "--in-place", "--force"], 0);
    assert!(temps().is_empty(), "{:?}", temps());
}

/// A `data/jellyfin.db` that links to a database on a disk that is not mounted: the backup
/// says so, naming the link's target, instead of calling the dir no Jellyfin data dir.
#[test]
fn a_backup_names_the_missing_target_of_a_linked_database() {
    let env = Env::new();
    let fx = env.small_fixture();
    let db = fx.data_dir.join("data/jellyfin.db");
    fs::remove_file(&db).unwrap();
    let gone = env.root.join("ssd-not-mounted/jellyfin.db");
    std::os::unix::fs::symlink(&gone, &db).unwrap();
    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["backup", "--data-dir", data], 14);
    let err = s(&out.stderr);
    assert!(
        err.contains(&gone.display().to_string()) && err.contains("is the disk"),
        "{err}"
    );
}

/// Whether a process holds a lock on `dir` that keeps this one from taking it
/// (`exclusive`: any lock; otherwise: an exclusive lock).
fn dir_locked(dir: &Path, exclusive: bool) -> bool {
    let f = fs::File::open(dir).unwrap();
    let r = if exclusive {
        f.try_lock()
    } else {
        f.try_lock_shared()
    };
    matches!(r, Err(fs::TryLockError::WouldBlock))
}

/// A backup running beside an in-place restore of the same data dir saved a state that
/// never existed (half old, half new files) and listed the restore's temp files as
/// vanished. They exclude each other, and the one that comes second says so at once
/// (exit 16); backups into two repositories, or a restore elsewhere, still run together.
#[test]
fn a_backup_and_an_in_place_restore_of_one_data_dir_exclude_each_other() {
    const PAUSE_MS: u64 = 6000;
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    common::fixture::day_of_changes(&fx, 3).unwrap();
    let data = data_arg(&fx);
    let other_repo = env.root.join("repo2");
    let other = |args: &[&str]| Cmd::at_repo(&other_repo, args);

    let mut restore = env
        .cmd(&["restore", "latest", "--in-place", "--force"])
        .pause_at("restore-databases-prepared", PAUSE_MS)
        .quiet()
        .spawn();
    wait_until("the in-place restore holds the data dir", || {
        dir_locked(&fx.data_dir, false)
    });
    for backup in [
        env.cmd(&["backup", "--data-dir", data]),
        other(&["backup", "--init", "--data-dir", data]),
    ] {
        let out = backup.expect(16);
        let err = s(&out.stderr);
        assert!(
            err.contains(data) && err.contains("restoring it in place"),
            "{err}"
        );
    }
    let elsewhere = env.root.join("elsewhere");
    env.cmd(&["restore", "latest", "--target", elsewhere.to_str().unwrap()])
        .expect(0);
    assert!(
        restore.try_wait().unwrap().is_none(),
        "the in-place restore was still running (the other commands took more than {PAUSE_MS} ms?)"
    );
    assert!(restore.wait().unwrap().success());

    let mut backup = env
        .cmd(&["backup", "--data-dir", data])
        .pause_at("backup-before-commit", PAUSE_MS)
        .quiet()
        .spawn();
    wait_until("the backup holds the data dir", || {
        dir_locked(&fx.data_dir, true)
    });
    let out = env
        .cmd(&["restore", "latest", "--in-place", "--force"])
        .expect(16);
    let err = s(&out.stderr);
    assert!(err.contains(data) && err.contains("backing it up"), "{err}");
    other(&["backup", "--init", "--data-dir", data]).expect(0);
    assert!(
        backup.try_wait().unwrap().is_none(),
        "the backup was still running (the other commands took more than {PAUSE_MS} ms?)"
    );
    assert!(backup.wait().unwrap().success());
    env.cmd(&["restore", "latest", "--in-place", "--force"])
        .expect(0);
}

/// An in-place restore cut short is finished by its snapshot after the snapshot was named
/// (the edit gives it a new record id; the intent record names its first one), by the new
/// name as by the id the backup printed; until then backups are refused.
#[test]
fn an_interrupted_rollback_is_finished_after_the_snapshot_was_named() {
    let env = Env::new();
    let fx = env.small_fixture();
    let id = env.backup(&fx, &[])["id"].as_str().unwrap().to_string();
    fs::write(fx.metadata_dir.join("later.txt"), b"after the snapshot").unwrap();
    env.cmd(&["restore", &id, "--in-place", "--force"])
        .crash_at("restore-swap-1")
        .crashes();
    env.expect(&["name", &id[..8], "pre-rollback"], 0);
    let data = fx.data_dir.to_str().unwrap();
    env.expect(&["backup", "--data-dir", data], 21);
    env.expect(&["restore", "pre-rollback", "--in-place", "--force"], 0);
    assert!(!fx.metadata_dir.join("later.txt").exists());
    env.expect(&["backup", "--data-dir", data], 0);
}
