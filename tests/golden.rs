//! `fixtures/golden`: a repository an earlier jellysnap wrote (a snapshot `golden` of
//! `fixtures/sample`'s database and config state). Today's binary checks it, restores it
//! exactly and backs up into it with every unchanged chunk deduplicated. (The unit tests
//! in `src/format/mod.rs` re-encode each of its records byte for byte.)

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::env::{files_under, Env};
use common::sqlcli::dump_of;

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample")
}

/// A copy of the golden repository in `env`'s place for one (the fixture stays as it is).
fn golden_env() -> Env {
    let env = Env::new();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden");
    for f in files_under(&golden) {
        let to = env.repo.join(f.strip_prefix(&golden).unwrap());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&f, &to).unwrap();
    }
    for d in ["index", "locks", "tmp"] {
        fs::create_dir_all(env.repo.join(d)).unwrap();
    }
    env
}

#[test]
fn a_repository_written_before_restores_exactly() {
    let env = golden_env();
    let check = env.json(&["check", "--read-data"], 0);
    assert_eq!(check["databases_rebuilt"], 1, "{check}");
    let (target, _) = env.restore_to("golden", "restored");
    let restored = files_under(&target);
    let mut n = 0;
    for f in &restored {
        // The config state and the database, as they lie in the data dir.
        let rel = f.strip_prefix(&target).unwrap();
        let original = sample().join(rel);
        if rel.ends_with("data/jellyfin.db") {
            assert_eq!(
                dump_of(f),
                dump_of(&original),
                "the database restores exactly"
            );
        } else {
            assert_eq!(
                fs::read(f).unwrap(),
                fs::read(&original).unwrap(),
                "{rel:?}"
            );
        }
        n += 1;
    }
    assert_eq!(n, 30, "{restored:?}");
}

#[test]
fn a_backup_into_a_repository_written_before_stores_only_new_trees() {
    let env = golden_env();
    let b = env.json(
        &[
            "backup",
            "--data-dir",
            sample().to_str().unwrap(),
            "--components",
            "database",
        ],
        0,
    );
    let summary = &b["snapshot"]["summary"];
    // File contents and the database dump are the same bytes as in the golden snapshot:
    // nothing but directory listings (whose times differ per checkout) is new.
    assert!(
        summary["new_raw_bytes"].as_u64().unwrap() < 16 * 1024,
        "{summary}"
    );
    env.json(&["check", "--read-data"], 0);
}
