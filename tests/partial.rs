//! Partial snapshots through the built binary: what a backup could not capture (an
//! unreadable file, a directory it could not list, a component whose disk is not mounted)
//! is recorded in the snapshot, and an in-place restore leaves it as it is. Also: restore
//! of named components touches only those, and a backup never creates a repository the
//! user did not ask for.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::env::{files_under, s, Cmd, Env};
use common::fixture;
use common::verify::{assert_same, describe};
use serde_json::{json, Value};

fn rel_to(fx: &fixture::Fixture, p: &Path) -> String {
    p.strip_prefix(&fx.data_dir)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn not_captured_actions(plan: &Value) -> Vec<String> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "not_captured")
        .map(|a| a["path"].as_str().unwrap().to_string())
        .collect()
}

/// The plan deletes nothing but stale database side files.
#[track_caller]
fn assert_no_deletes(plan_text: &str) {
    for line in plan_text.lines().filter(|l| l.starts_with("  delete ")) {
        assert!(line.ends_with("(stale database side file)"), "{plan_text}");
    }
}

#[test]
fn an_unreadable_subtitle_survives_an_in_place_restore() {
    let env = Env::new();
    let fx = env.small_fixture();
    let subs = fx.data_path().join("subtitles");
    let files = files_under(&subs);
    assert!(files.len() >= 3, "{files:?}");
    let secret = files[0].clone();

    let out = env.backup_hiding(&fx, &[&secret]);
    assert_eq!(out.status.code(), Some(3), "{}", s(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partial"], true);
    assert_eq!(
        v["snapshot"]["not_captured"],
        json!([{
            "kind": "file",
            "root": "data",
            "rel": rel_to(&fx, &secret),
            "path": secret.to_str().unwrap(),
        }])
    );

    // Rolled back right away: every live subtitle is still there, byte for byte.
    let before = describe(&subs, &[]);
    let dry = env.expect(&["restore", "latest", "--in-place", "--dry-run"], 0);
    let text = s(&dry.stdout);
    assert!(
        text.contains(&format!(
            "kept    {} (not captured by the backup)",
            secret.display()
        )),
        "{text}"
    );
    assert_no_deletes(&text);
    let r = env.json(&["restore", "latest", "--in-place"], 0);
    assert_eq!(not_captured_actions(&r["plan"]), [secret.to_str().unwrap()]);
    assert_eq!(r["plan"]["not_captured"], 1);
    assert_same(&describe(&subs, &[]), &before);

    // After the server went on: the subtitle the snapshot has no content for keeps its
    // live bytes; the others are rolled back, and one added since is removed.
    fs::write(
        &secret,
        b"1\n00:00:01,000 --> 00:00:02,000\nrewritten by the server\n",
    )
    .unwrap();
    let live_secret = fs::read(&secret).unwrap();
    let changed = &files[1];
    let snapshot_bytes = fs::read(changed).unwrap();
    fs::write(changed, b"changed after the backup").unwrap();
    let added = secret.with_file_name("added-later.srt");
    fs::write(&added, b"new").unwrap();
    env.json(&["restore", "latest", "--in-place"], 0);
    assert_eq!(fs::read(&secret).unwrap(), live_secret);
    assert_eq!(fs::read(changed).unwrap(), snapshot_bytes);
    assert!(
        !added.exists(),
        "the snapshot speaks for the rest of subtitles/"
    );
    for f in &files {
        assert!(f.is_file(), "{}", f.display());
    }
}

#[test]
fn a_subtitle_directory_the_backup_could_not_list_is_left_alone() {
    let env = Env::new();
    let fx = env.small_fixture();
    let subs = fx.data_path().join("subtitles");
    let dir = files_under(&subs)[0].parent().unwrap().to_path_buf();
    assert_ne!(dir, subs);
    let inside = files_under(&dir);
    assert!(!inside.is_empty());

    let out = env.backup_hiding(&fx, &[&dir]);
    assert_eq!(out.status.code(), Some(3), "{}", s(&out.stderr));
    assert!(s(&out.stderr).contains("cannot list directory"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["snapshot"]["not_captured"],
        json!([{
            "kind": "dir",
            "root": "data",
            "rel": rel_to(&fx, &dir),
            "path": dir.to_str().unwrap(),
        }])
    );

    // A file the server added inside it since is not the snapshot's business either.
    fs::write(dir.join("added-later.srt"), b"new").unwrap();
    let before = describe(&subs, &[]);
    let dry = env.run(&["restore", "latest", "--in-place", "--dry-run"]);
    let text = s(&dry.stdout);
    assert!(
        text.contains(&format!(
            "kept    {} (not captured by the backup)",
            dir.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("leave 1 path(s) as they are (not captured by the backup)"),
        "{text}"
    );
    let r = env.json(&["restore", "latest", "--in-place"], 0);
    assert_eq!(not_captured_actions(&r["plan"]), [dir.to_str().unwrap()]);
    assert_no_deletes(&s(&dry.stdout));
    assert!(
        r["plan"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] != "delete"),
        "{r}"
    );
    assert_same(&describe(&subs, &[]), &before);
}

/// Point system.xml's MetadataPath at `path`.
fn set_metadata_path(fx: &fixture::Fixture, path: &Path) {
    let sys = fx.config_dir.join("system.xml");
    let xml = fs::read_to_string(&sys).unwrap();
    assert!(xml.contains("<MetadataPath />"));
    fs::write(
        &sys,
        xml.replace(
            "<MetadataPath />",
            &format!("<MetadataPath>{}</MetadataPath>", path.display()),
        ),
    )
    .unwrap();
}

fn components(snapshot: &Value) -> Vec<String> {
    snapshot["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_metadata_dir_on_an_unmounted_disk_makes_a_partial_snapshot_without_metadata() {
    let env = Env::new();
    let fx = env.small_fixture();
    let disk = env.root.join("disk");
    fs::create_dir_all(&disk).unwrap();
    let meta = disk.join("metadata");
    fs::rename(&fx.metadata_dir, &meta).unwrap();
    set_metadata_path(&fx, &meta);
    let data = fx.data_dir.to_str().unwrap();
    let b = env.json(&["backup", "--data-dir", data, "--name", "mounted"], 0);
    assert!(components(&b["snapshot"]).contains(&"metadata".to_string()));

    // The disk is not mounted at the next backup: the reason is printed even under -q.
    let away = env.root.join("disk-unmounted");
    fs::rename(&disk, &away).unwrap();
    let out = env.expect(&["-q", "backup", "--data-dir", data], 3);
    assert!(out.stdout.is_empty(), "{}", s(&out.stdout));
    let err = s(&out.stderr);
    assert!(
        err.contains(meta.to_str().unwrap()) && err.contains("is its disk mounted?"),
        "{err}"
    );
    assert!(err.contains("does not include metadata"), "{err}");

    let snaps = env.json(&["snapshots"], 0);
    let latest = &snaps.as_array().unwrap()[1];
    assert_eq!(
        components(latest),
        ["config", "database", "subtitles", "trickplay"]
    );
    assert_eq!(
        latest["not_captured"],
        json!([{
            "kind": "component",
            "root": "metadata",
            "rel": "",
            "path": meta.to_str().unwrap(),
            "component": "metadata",
        }])
    );
    assert_eq!(latest["roots"].as_array().unwrap().len(), 1);

    // Remounted: rolling back to that snapshot leaves the metadata alone, and it cannot
    // be asked for.
    fs::rename(&away, &disk).unwrap();
    let before = describe(&meta, &[]);
    env.json(&["restore", "latest", "--in-place"], 0);
    assert_same(&describe(&meta, &[]), &before);
    let t = env.root.join("t");
    let out = env.expect(
        &[
            "restore",
            "latest",
            "--target",
            t.to_str().unwrap(),
            "--components",
            "metadata",
        ],
        2,
    );
    assert!(s(&out.stderr).contains("does not contain the metadata component"));
}

#[test]
fn a_trickplay_link_to_nowhere_is_not_claimed() {
    let env = Env::new();
    let fx = env.small_fixture();
    let trickplay = fx.data_path().join("trickplay");
    let elsewhere = env.root.join("trickplay-disk");
    fs::rename(&trickplay, &elsewhere).unwrap();
    let gone = env.root.join("not-mounted/trickplay");
    std::os::unix::fs::symlink(&gone, &trickplay).unwrap();
    let out = env.expect(
        &[
            "--json",
            "backup",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
        ],
        3,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!components(&v["snapshot"]).contains(&"trickplay".to_string()));
    assert_eq!(v["snapshot"]["not_captured"][0]["kind"], "component");
    assert_eq!(v["snapshot"]["not_captured"][0]["component"], "trickplay");
    assert_eq!(v["snapshot"]["not_captured"][0]["rel"], "data/trickplay");
    // Mounted again, an in-place restore of that snapshot leaves it alone.
    fs::create_dir_all(gone.parent().unwrap()).unwrap();
    fs::rename(&elsewhere, &gone).unwrap();
    let before = describe(&gone, &[]);
    env.json(&["restore", "latest", "--in-place"], 0);
    assert_same(&describe(&gone, &[]), &before);
    assert!(fs::symlink_metadata(&trickplay)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_default_metadata_dir_may_be_absent_but_not_a_link_to_nowhere() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    // Nothing at the default place: the snapshot has an empty metadata component.
    fs::rename(&fx.metadata_dir, env.root.join("meta-elsewhere")).unwrap();
    let b = env.json(&["backup", "--data-dir", data], 0);
    assert!(components(&b["snapshot"]).contains(&"metadata".to_string()));
    assert_eq!(b["snapshot"]["not_captured"], json!([]));
    // A symlink to a disk that is not mounted: not claimed.
    std::os::unix::fs::symlink(env.root.join("not-mounted/metadata"), &fx.metadata_dir).unwrap();
    let out = env.expect(&["--json", "backup", "--data-dir", data], 3);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!components(&v["snapshot"]).contains(&"metadata".to_string()));
    assert_eq!(v["snapshot"]["not_captured"][0]["component"], "metadata");
    assert_eq!(v["snapshot"]["not_captured"][0]["rel"], "metadata");
}

/// A file's bytes and mtime (seconds, nanoseconds).
type Stamp = (Vec<u8>, i64, i64);

fn bytes_and_mtime(p: &Path) -> Stamp {
    let m = fs::metadata(p).unwrap();
    (fs::read(p).unwrap(), m.mtime(), m.mtime_nsec())
}

#[test]
fn restoring_metadata_only_leaves_database_and_config_alone() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    env.json(&["backup", "--data-dir", data, "--name", "before"], 0);
    let meta_before = describe(&fx.metadata_dir, &[]);

    // The upgrade: it migrates the database, rewrites config, touches metadata and
    // subtitles.
    {
        let c = rusqlite::Connection::open(&fx.db_path).unwrap();
        c.execute_batch("PRAGMA user_version = 77; CREATE TABLE Upgraded(x);")
            .unwrap();
    }
    let sys = fx.config_dir.join("system.xml");
    let mut xml = fs::read(&sys).unwrap();
    xml.extend_from_slice(b"<!-- upgraded -->\n");
    fs::write(&sys, &xml).unwrap();
    fs::write(fx.config_dir.join("migrations-new.xml"), b"<x/>").unwrap();
    let images = files_under(&fx.metadata_dir.join("library"));
    fs::write(&images[0], b"new poster").unwrap();
    fs::write(images[0].with_file_name("added.jpg"), b"added").unwrap();
    let sub = files_under(&fx.data_path().join("subtitles"))[0].clone();
    fs::write(&sub, b"upgraded subtitle").unwrap();

    let live = |p: &Path| bytes_and_mtime(p);
    let untouched: Vec<(PathBuf, Stamp)> = [
        fx.db_path.clone(),
        sys.clone(),
        fx.config_dir.join("migrations-new.xml"),
        sub.clone(),
    ]
    .into_iter()
    .map(|p| (p.clone(), live(&p)))
    .collect();
    let side_files: Vec<bool> = ["-wal", "-shm"]
        .iter()
        .map(|x| Path::new(&format!("{}{x}", fx.db_path.display())).exists())
        .collect();

    let r = env.json(
        &[
            "restore",
            "before",
            "--in-place",
            "--components",
            "metadata",
        ],
        0,
    );
    assert_eq!(r["plan"]["components"], json!(["metadata"]));
    assert_same(&describe(&fx.metadata_dir, &[]), &meta_before);
    for (p, was) in &untouched {
        assert!(live(p) == *was, "{} was changed", p.display());
    }
    let side_after: Vec<bool> = ["-wal", "-shm"]
        .iter()
        .map(|x| Path::new(&format!("{}{x}", fx.db_path.display())).exists())
        .collect();
    assert_eq!(side_after, side_files);

    // Named, the database is rolled back too.
    env.json(
        &[
            "restore",
            "before",
            "--in-place",
            "--components",
            "metadata,database",
        ],
        0,
    );
    let c = rusqlite::Connection::open(&fx.db_path).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_ne!(v, 77);
    assert!(live(&sys) == untouched[1].1, "config was not named");
}

#[test]
fn restore_components_help_says_only_the_listed_ones_are_restored() {
    let out = Cmd::new(&["restore", "--help"]).expect(0);
    let help = s(&out.stdout);
    assert!(help.contains("rolled back only when named"), "{help}");
}

// ---------------------------------------------------------------------------------------
// No repository by accident.

#[test]
fn backup_into_a_path_without_a_repository_needs_init() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let want = format!(
        "no jellysnap repository at {} (is the backup disk mounted?)",
        env.repo.display()
    );
    // A path that does not exist, and an empty directory (an unmounted mount point).
    for mkdir in [false, true] {
        if mkdir {
            fs::create_dir(&env.repo).unwrap();
        }
        let out = env.run_exact(&["-q", "backup", "--data-dir", data]);
        assert_eq!(out.status.code(), Some(10), "{}", s(&out.stderr));
        let err = s(&out.stderr);
        assert!(err.contains(&want), "{err}");
        assert!(err.contains("--init") && err.contains("init`"), "{err}");
        if mkdir {
            assert_eq!(fs::read_dir(&env.repo).unwrap().count(), 0);
        } else {
            assert!(!env.repo.exists());
        }
    }
    // With --init it is created, and said so even under -q.
    let out = env.run_exact(&["-q", "backup", "--init", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        s(&out.stderr).contains(&format!(
            "created jellysnap repository at {}",
            env.repo.display()
        )),
        "{}",
        s(&out.stderr)
    );
    // --init on an existing repository just backs up.
    let out = env.run_exact(&["--json", "backup", "--init", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    assert!(!s(&out.stderr).contains("created"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repository_created"], false);
    let out = env.run_exact(&["backup", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
}

#[test]
fn only_the_default_repository_is_created_on_first_backup() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let run = |repo_env: Option<&Path>| {
        let c = Cmd::new(&["-q", "backup", "--data-dir", data])
            .env("HOME", env.root.join("home"))
            .env_remove("XDG_DATA_HOME")
            .env_remove("JELLYSNAP_REPO");
        match repo_env {
            Some(r) => c.env("JELLYSNAP_REPO", r),
            None => c,
        }
        .output()
    };
    // $JELLYSNAP_REPO names a disk that is not mounted (a cron job): refused.
    let mount = env.root.join("mnt/backup/jellysnap");
    let out = run(Some(&mount));
    assert_eq!(out.status.code(), Some(10), "{}", s(&out.stderr));
    assert!(!mount.exists());
    // No repository named at all: the default location is created, and said so.
    let default = env.root.join("home/.local/share/jellysnap/repo");
    let out = run(None);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    assert!(
        s(&out.stderr).contains(&format!(
            "created jellysnap repository at {}",
            default.display()
        )),
        "{}",
        s(&out.stderr)
    );
    assert!(default.join("config").is_file());
}
