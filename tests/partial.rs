//! Restore of named components through the built binary: only the listed components are
//! touched.

#[path = "common/env.rs"]
mod env;
#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/verify.rs"]
mod verify;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use env::{s, Env, BIN};
use fixture::{FixtureSpec, Layout};
use serde_json::json;
use verify::{assert_same, describe};

fn small(env: &Env) -> fixture::Fixture {
    fixture::generate(&env.root.join("src"), &FixtureSpec::small(Layout::Docker)).unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    fixture::walk_sorted(dir)
        .unwrap()
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
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
    let fx = small(&env);
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
    let out = Command::new(BIN)
        .args(["restore", "--help"])
        .output()
        .unwrap();
    let help = s(&out.stdout);
    assert!(help.contains("rolled back only when named"), "{help}");
}
