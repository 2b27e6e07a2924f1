//! Fault injection through the test store (`JELLYSNAP_FAULT`, see src/store/testing.rs; the
//! tests run with `--features test-hooks`): a repository write or fsync that fails with
//! ENOSPC or EIO at the n-th operation, a source file that cannot be read, and pack
//! writer threads that cannot start. Each gives a clear error, leaves the repository
//! consistent (check passes, old snapshots restore exactly) and loses nothing.

mod common;

use common::env::{s, Env};
use common::fixture;
use common::verify::expected_state;
use serde_json::Value;

fn backup_with_fault(env: &Env, data: &str, fault: &str) -> std::process::Output {
    env.cmd(&["--json", "backup", "--init", "--data-dir", data])
        .fault(fault)
        .output()
}

#[test]
fn failed_writes_and_fsyncs_lose_nothing() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap().to_string();
    env.backup(&fx, &["--name", "base"]);
    let base = env.restored_state("base", "base");
    fixture::day_of_changes(&fx, 1).unwrap();

    let mut snapshots = 1;
    let mut triggered = 0;
    let mut round = 1;
    // A full file system is exit code 20 (naming the repository), a failing disk 1.
    for (op, errno, message, code) in [
        ("write", 28, "No space left on device", 20),
        ("write", 5, "Input/output error", 1),
        ("fsync", 5, "Input/output error", 1),
    ] {
        for n in [1, 2, 3, 5, 8, 13, 21, 34, 55] {
            // Something new to store in every attempt: a backup that succeeds leaves
            // nothing for the next one to write.
            round += 1;
            fixture::day_of_changes(&fx, round).unwrap();
            let out = backup_with_fault(&env, &data, &format!("{op}:{n}:{errno}"));
            if out.status.success() {
                // This backup did fewer than n such operations.
                snapshots += 1;
                continue;
            }
            triggered += 1;
            let err = s(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{op}:{n}: {err}");
            assert!(err.contains(message), "{op}:{n}: {err}");
            assert!(
                err.contains(env.repo.to_str().unwrap()),
                "{op}:{n}: the error names the repository path: {err}"
            );
            assert_eq!(
                env.snapshot_count(),
                snapshots,
                "{op}:{n}: no partial snapshot was committed"
            );
            env.json(&["check", "--read-data"], 0);
            env.assert_restores("base", &format!("r-{op}-{n}-{errno}"), &base);
        }
    }
    assert!(triggered >= 15, "only {triggered} faults were hit");
    // The next backup without faults succeeds and restores exactly.
    env.backup(&fx, &[]);
    env.assert_restores("latest", "final", &expected_state(&fx));
    env.json(&["check", "--read-data"], 0);
}

#[test]
fn source_read_error_gives_a_partial_snapshot() {
    let env = Env::new();
    let fx = env.small_fixture();
    let out = backup_with_fault(&env, fx.data_dir.to_str().unwrap(), "read:3:5");
    assert_eq!(out.status.code(), Some(3), "{}", s(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = v["snapshot"]["summary"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v}");
    assert!(errors[0].as_str().unwrap().contains("Input/output error"));
    assert!(s(&out.stderr).contains("could not be read"));
    env.json(&["check", "--read-data"], 0);
}

/// Each of the pack writer's two threads failing to start ends a backup or a gc with a
/// clear error and exit 1, every time: the thread that did start is joined first (one
/// left running would outlive the index it holds and crash the exiting process now and
/// then, hence the repeats).
#[test]
fn a_pack_writer_that_cannot_start_its_threads_commits_nothing() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap().to_string();
    env.backup(&fx, &["--name", "full"]);
    env.backup(&fx, &["--name", "meta", "--components", "metadata"]);
    env.json(&["forget", "full"], 0);
    fixture::day_of_changes(&fx, 1).unwrap();
    // The writer thread starts first, then the syncer.
    for (n, thread) in [(1, "pack writer"), (2, "pack syncer")] {
        for attempt in 0..10 {
            for args in [
                vec!["gc", "--max-unused", "0"],
                vec!["backup", "--data-dir", data.as_str()],
            ] {
                let out = env.cmd(&args).fault(&format!("spawn:{n}")).output();
                let err = s(&out.stderr);
                let what = format!(
                    "spawn:{n}, attempt {attempt}, {args:?}: {:?} {err}",
                    out.status
                );
                assert_eq!(out.status.code(), Some(1), "{what}");
                assert!(
                    err.contains(&format!("cannot start the {thread} thread")),
                    "{what}"
                );
            }
        }
    }
    assert_eq!(env.snapshot_count(), 1, "nothing committed");
    env.json(&["check", "--read-data"], 0);
    // Without the fault the same commands go through.
    env.json(&["gc", "--max-unused", "0"], 0);
    env.json(&["backup", "--data-dir", &data], 0);
    assert_eq!(env.snapshot_count(), 2);
}
