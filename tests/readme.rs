//! The README's quick start and nightly script, run as written (with the demo repository
//! and the paths moved into a temp dir): an example nobody runs drifts.

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

/// The nightly script of the README's "Scheduling" section, as written, with its paths
/// pointed at a temp dir, a generated data dir and a bucket of a loopback S3 server.
fn nightly_script() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Scheduling\n")
        .nth(1)
        .expect("README has a Scheduling section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in Scheduling");
    assert!(block.starts_with("#!/bin/sh"), "{block}");
    block.to_string()
}

#[test]
fn the_nightly_script_backs_up_copies_and_prunes_both_sides() {
    let server = common::s3::shared();
    let bucket = server.new_bucket();
    let env = common::env::Env::new();
    let fx = env.small_fixture();
    let local = env.root.join("local");
    let offsite = server.location(&bucket, "jellysnap");
    let script = nightly_script();
    let mut replaced = script.clone();
    for (from, to) in [
        ("/srv/backup/jellysnap", local.to_str().unwrap()),
        (
            "s3:https://s3.us-west-004.backblazeb2.com/my-jellyfin/jellysnap",
            offsite.as_str(),
        ),
        ("/var/lib/jellyfin", fx.data_dir.to_str().unwrap()),
    ] {
        assert!(replaced.contains(from), "the script names {from}");
        replaced = replaced.replace(from, to);
    }
    let path = env.root.join("jellysnap-nightly");
    std::fs::write(&path, &replaced).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_jellysnap")).parent().unwrap();
    let search = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |what: &str| {
        let mut c = std::process::Command::new("sh");
        c.arg(&path)
            .env("PATH", &search)
            .env("XDG_CACHE_HOME", env.root.join("cache"));
        for (k, v) in server.env() {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}\n{}",
            out.status,
            s(&out.stderr)
        );
    };
    let js = |repo: &str, args: &[&str]| {
        let mut c = Cmd::new(&["--repo", repo]).args(args);
        for (k, v) in server.env() {
            c = c.env(k, v);
        }
        c.env("XDG_CACHE_HOME", env.root.join("cache"))
    };
    // The one-time setup the README gives.
    js(local.to_str().unwrap(), &["init"]).expect(0);
    js(
        local.to_str().unwrap(),
        &["copy", "--to", &offsite, "--init"],
    )
    .expect(0);
    run("first night");
    std::fs::write(
        fx.metadata_dir.join("next-day.txt"),
        b"changed the next day",
    )
    .unwrap();
    run("second night");
    let ids = |repo: &str| -> Vec<String> {
        let v = js(repo, &["snapshots"]).json(0);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (l, o) = (ids(local.to_str().unwrap()), ids(&offsite));
    assert!(!l.is_empty());
    assert_eq!(l, o, "both sides hold the same snapshots after forget");
    let target = env.root.join("restored");
    js(
        &offsite,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    )
    .expect(0);
    common::verify::assert_same(
        &common::verify::describe(&target, &[]),
        &common::verify::expected_state(&fx),
    );
}
