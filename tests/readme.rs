//! The README's quick start, run as written (with the demo repository moved into a temp
//! dir): an example nobody runs drifts.

mod common;

use std::path::Path;

use common::env::{s, Cmd};

/// The arguments after `cargo run --release --` of the README's first quick-start command.
fn quick_start_args() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Quick start")
        .nth(1)
        .expect("README has a Quick start section");
    let line = section
        .lines()
        .find(|l| l.starts_with("cargo run --release -- "))
        .expect("a cargo run command in the quick start");
    line.trim_start_matches("cargo run --release -- ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn quick_start_backs_up_the_bundled_sample() {
    let args = quick_start_args();
    assert!(args.iter().any(|a| a == "backup"), "{args:?}");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a == "/tmp/jellysnap-demo" {
                repo.to_string_lossy().into_owned()
            } else {
                a
            }
        })
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample_db = root.join("fixtures/sample/data/jellyfin.db");
    let before = std::fs::read(&sample_db).unwrap();
    let out = Cmd::new(&args).current_dir(root).expect(0);
    assert!(s(&out.stdout).contains("saved"), "{}", s(&out.stdout));
    // The sample's database is stored as a proven logical dump, and the bundled files are
    // left exactly as they were (no -wal/-shm beside them).
    let v = Cmd::new(&["--repo", repo.to_str().unwrap(), "snapshots"]).json(0);
    assert_eq!(v[0]["databases"][0]["capture"], "logical", "{v}");
    assert_eq!(std::fs::read(&sample_db).unwrap(), before);
    for suffix in ["-wal", "-shm"] {
        let mut p = sample_db.as_os_str().to_owned();
        p.push(suffix);
        assert!(!Path::new(&p).exists(), "{suffix} left in fixtures/");
    }
}
