//! Crash campaign: random sequences of backup / forget / gc / restore on a Jellyfin-shaped
//! data dir that changes between steps, with the command SIGKILLed at a random moment.
//! After every kill: `check --read-data` passes, every snapshot committed before the kill
//! restores exactly, and the next command succeeds.
//!
//! `CRASH_KILLS` (default 12, as in CI) sets how many kills to reach; `CRASH_SEED` the
//! seed (printed, so a failure can be replayed). Long run:
//! `CRASH_KILLS=500 cargo test --release --test crash_campaign -- --nocapture`.

mod common;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::env::{s, Cmd};
use common::fixture::{self, FixtureSpec, Layout, Rng};
use common::verify::{self, State};
use serde_json::Value;

fn js(repo: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Cmd::at_repo(repo, &["--json"]).args(args).output();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, s(&out.stderr))
}

/// The names in the repository's `tmp/` (a writer's scratch files while it runs).
fn scratch(repo: &Path) -> HashSet<OsString> {
    std::fs::read_dir(repo.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default()
}

/// Whether a command killed with the repository's `tmp/` holding `scratch_before` left the
/// signs of one that had started its work and not finished it: new scratch files of a
/// backup or gc, gc's marker, a restore's target. (A forget leaves none that can be told.)
fn killed_mid_work(
    cmd: &str,
    repo: &Path,
    scratch_before: &HashSet<OsString>,
    target: &Path,
) -> bool {
    let new_scratch = scratch(repo).difference(scratch_before).next().is_some();
    match cmd {
        "backup" => new_scratch,
        "gc" => new_scratch || repo.join("gc-in-progress").exists(),
        "restore" => target.exists(),
        _ => false,
    }
}

fn snapshot_ids(repo: &Path) -> Vec<String> {
    if !repo.join("config").exists() {
        return Vec::new();
    }
    let (code, v, err) = js(repo, &["snapshots"]);
    assert_eq!(code, Some(0), "snapshots: {err}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn verify_restores(
    repo: &Path,
    scratch: &Path,
    expected: &HashMap<String, State>,
    ids: &[&String],
) {
    for id in ids {
        let t = scratch.join(format!("verify-{}", &id[..12]));
        let _ = std::fs::remove_dir_all(&t);
        let (code, _, err) = js(repo, &["restore", id, "--target", t.to_str().unwrap()]);
        assert_eq!(code, Some(0), "restore {id}: {err}");
        verify::assert_same(&verify::describe(&t, &[]), &expected[*id]);
        std::fs::remove_dir_all(&t).unwrap();
    }
}

#[test]
fn crash_campaign() {
    let target_kills: u32 = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261125);
    eprintln!("crash campaign: seed {seed}, {target_kills} kills");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let mut spec = FixtureSpec::small(Layout::Docker);
    spec.items = 24;
    spec.sheet_bytes = 96 * 1024;
    spec.trickplay_sheets_per_item = 4;
    spec.db_rows = 2000;
    let fx = fixture::generate(&tmp.path().join("src"), &spec).unwrap();
    let data = fx.data_dir.to_str().unwrap().to_string();
    let mut rng = Rng::new(seed);
    let mut expected: HashMap<String, State> = HashMap::new();
    // Typical duration per command, to aim kills inside it.
    let mut took_ms: HashMap<&str, f64> = HashMap::new();
    let mut kills: HashMap<&str, u32> = HashMap::new();
    let mut runs: HashMap<&str, u32> = HashMap::new();
    // Every kill lands while the command runs (it is killed only if still running); how
    // many of them left signs of unfinished work is reported (a kill may land before the
    // command wrote anything, or in a gc that had nothing to write).
    let (mut visible_kills, mut mid_work) = (0u32, 0u32);
    let total_kills = |k: &HashMap<&str, u32>| k.values().sum::<u32>();
    let started = Instant::now();
    let mut step = 0u64;

    while total_kills(&kills) < target_kills {
        step += 1;
        assert!(
            step < 20 * target_kills as u64 + 200,
            "campaign does not reach its kills"
        );
        if rng.percent(60) {
            fixture::day_of_changes(&fx, rng.next_u64()).unwrap();
        }
        let have = snapshot_ids(&repo);
        let cmd: &str = match rng.below(100) {
            _ if have.is_empty() => "backup",
            0..=44 => "backup",
            45..=59 => "forget",
            60..=79 => "gc",
            _ => "restore",
        };
        let restore_target = tmp.path().join(format!("restore-{step}"));
        let args: Vec<String> = match cmd {
            "backup" => vec![
                "backup".into(),
                "--init".into(),
                "--data-dir".into(),
                data.clone(),
            ],
            "forget" => vec![
                "forget".into(),
                "--keep-last".into(),
                (1 + rng.below(3)).to_string(),
            ],
            "gc" => vec![
                "gc".into(),
                "--max-unused".into(),
                if rng.percent(50) { "0" } else { "5" }.into(),
            ],
            _ => {
                let id = &have[rng.below(have.len() as u64) as usize];
                vec![
                    "restore".into(),
                    id.clone(),
                    "--target".into(),
                    restore_target.to_str().unwrap().into(),
                ]
            }
        };
        let source_state = (cmd == "backup").then(|| verify::expected_state(&fx));
        // Each command first runs once unkilled, to learn how long it takes (and so that
        // there is a snapshot to protect); after that 80% of runs are killed.
        let kill = took_ms.contains_key(cmd) && rng.percent(80);
        let delay = Duration::from_micros(
            (rng.below(1000) as f64 / 1000.0 * took_ms.get(cmd).copied().unwrap_or(40.0) * 1200.0)
                as u64,
        );
        let scratch_before = scratch(&repo);
        let t0 = Instant::now();
        let mut child = Cmd::at_repo(&repo, &[]).args(&args).spawn();
        if kill {
            std::thread::sleep(delay);
            // Only a command still running is killed (one that ended is not a kill).
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
            }
        }
        let out = child.wait_with_output().unwrap();
        let killed = out.status.signal() == Some(9);
        *runs.entry(cmd).or_default() += 1;
        if killed {
            *kills.entry(cmd).or_default() += 1;
            if cmd != "forget" {
                visible_kills += 1;
                mid_work += u32::from(killed_mid_work(
                    cmd,
                    &repo,
                    &scratch_before,
                    &restore_target,
                ));
            }
        } else {
            assert!(
                out.status.success(),
                "step {step} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let e = took_ms.entry(cmd).or_insert(ms);
            *e = 0.7 * *e + 0.3 * ms;
        }
        let _ = std::fs::remove_dir_all(&restore_target);

        // What the repository must hold now.
        let now = snapshot_ids(&repo);
        for id in &now {
            if !expected.contains_key(id) {
                let state = source_state
                    .clone()
                    .unwrap_or_else(|| panic!("step {step}: snapshot {id} appeared during {cmd}"));
                expected.insert(id.clone(), state);
            }
        }
        let gone: Vec<String> = expected
            .keys()
            .filter(|id| !now.contains(id))
            .cloned()
            .collect();
        for id in gone {
            assert_eq!(
                cmd, "forget",
                "step {step}: snapshot {id} vanished during {cmd} (killed: {killed})"
            );
            expected.remove(&id);
        }
        if killed && !now.is_empty() {
            let (code, v, err) = js(&repo, &["check", "--read-data"]);
            assert_eq!(
                code,
                Some(0),
                "step {step}: check after killing {cmd}: {err} {v}"
            );
            let mut ids: Vec<&String> = expected.keys().collect();
            ids.sort();
            let pick = vec![
                ids[rng.below(ids.len() as u64) as usize],
                ids[ids.len() - 1],
            ];
            verify_restores(&repo, tmp.path(), &expected, &pick);
        }
    }
    // Finally every snapshot, and one more of each command succeeds.
    let (code, _, err) = js(&repo, &["check", "--read-data"]);
    assert_eq!(code, Some(0), "{err}");
    let all: Vec<&String> = expected.keys().collect();
    verify_restores(&repo, tmp.path(), &expected, &all);
    for args in [
        vec!["backup", "--data-dir", &data],
        vec!["gc"],
        vec!["forget", "--keep-last", "2"],
        vec!["gc"],
    ] {
        let (code, _, err) = js(&repo, &args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    eprintln!(
        "crash campaign: {step} steps, {} kills in {:.0}s; runs {runs:?}; kills {kills:?}; \
         {mid_work} of {visible_kills} backup/gc/restore kills seen mid-work; {} snapshots verified",
        total_kills(&kills),
        started.elapsed().as_secs_f64(),
        all.len()
    );
}
