//! Every database of the corpus (`tests/corpus/make_dbs.py`: written by the system's
//! SQLite, not the bundled one) through the built binary: back up, restore into a new
//! target and in place over a live database that changed since, and compare each restored
//! database with the original using the outside oracle (`tests/corpus/compare.py`, the
//! writer's SQLite). A case passes when both restores are exact, no -wal/-shm stands
//! beside a restored database, and the capture is the one the case expects.
//!
//! All cases run, then the test fails listing every failing case, so that one run shows
//! the whole picture.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::corpus::{self, Case, Writer};
use common::env::{s, Cmd, Env};
use serde_json::Value;

/// The data dir's database, as the snapshot names it.
const DB_REL: &str = "data/jellyfin.db";

/// Run the binary against `env`'s repository (killed if it hangs).
fn run(env: &Env, args: &[&str]) -> Output {
    corpus::run(&mut env.cmd(args).command())
}

#[derive(Default)]
struct Outcome {
    capture: Option<String>,
    reason: Option<String>,
    failures: Vec<String>,
}

fn short(text: &str) -> String {
    const MAX: usize = 3000;
    let t = text.trim();
    match t.char_indices().nth(MAX) {
        Some((i, _)) => format!("{} [...]", &t[..i]),
        None => t.to_string(),
    }
}

fn failed(what: &str, o: &Output) -> String {
    format!(
        "{what}: exit {:?}\n{}",
        o.status.code(),
        short(&format!("{}\n{}", s(&o.stdout), s(&o.stderr)))
    )
}

/// The snapshot's record of how it captured `data/jellyfin.db`, if it has one.
fn database_entry(snap: &Value) -> Option<&Value> {
    let list = snap
        .get("databases")
        .or_else(|| snap["summary"].get("databases"))?;
    // Named by `path`, or by `root` and `rel` (a path inside that root).
    list.as_array()?.iter().find(|d| {
        ["path", "rel"].iter().any(|k| {
            d[*k]
                .as_str()
                .is_some_and(|p| p == DB_REL || p.ends_with("/jellyfin.db"))
        })
    })
}

fn run_case(case: &Case, init_flag: bool) -> Outcome {
    let mut out = Outcome::default();
    let env = Env::new();
    let src = env.root.join("src");
    let live = corpus::data_dir(&src, &case.db);
    let mut writer = if case.live_writer {
        match Writer::hold(&live) {
            Ok(w) => Some(w),
            Err(e) => {
                out.failures.push(format!("live writer: {e}"));
                return out;
            }
        }
    } else {
        None
    };
    // What the backup must give back, committed WAL frames included.
    let original = env.root.join("original/jellyfin.db");
    corpus::copy_db(&live, &original);

    let data = src.to_str().unwrap();
    let mut args = vec!["--json", "backup", "--data-dir", data];
    if init_flag {
        args.push("--init");
    } else {
        let o = run(&env, &["init"]);
        if !o.status.success() {
            out.failures.push(failed("init", &o));
            return out;
        }
    }
    let o = run(&env, &args);
    if !o.status.success() {
        out.failures.push(failed("backup", &o));
        return out;
    }
    if let Ok(b) = serde_json::from_slice::<Value>(&o.stdout) {
        let errors = &b["snapshot"]["summary"]["errors"];
        if errors.as_array().is_some_and(|e| !e.is_empty()) {
            out.failures
                .push(format!("backup reported errors: {errors}"));
        }
    }

    let o = run(&env, &["--json", "snapshots"]);
    let snaps: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    match snaps.as_array().and_then(|a| a.last()) {
        None => out.failures.push(failed("snapshots", &o)),
        Some(snap) => match database_entry(snap) {
            Some(d) => {
                out.capture = d["capture"].as_str().map(str::to_string);
                out.reason = d["reason"].as_str().map(str::to_string);
                if out.capture.is_none() {
                    out.failures
                        .push(format!("databases entry without capture: {d}"));
                }
            }
            None if snap.get("databases").is_some() => out
                .failures
                .push(format!("snapshot `databases` does not name {DB_REL}")),
            None => {}
        },
    }

    let target = env.root.join("restored");
    let o = run(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    if !o.status.success() {
        out.failures.push(failed("restore --target", &o));
    } else {
        check_restored(
            &target.join(DB_REL),
            &original,
            "restore --target",
            &mut out,
        );
    }

    if let Some(w) = writer.as_mut() {
        if let Err(e) = w.finish() {
            out.failures.push(format!("live writer: {e}"));
        }
    }
    if let Err(e) = corpus::mutate(&live) {
        out.failures
            .push(format!("could not change the live database: {e}"));
        return out;
    }
    if corpus::compare(&original, &live).is_ok() {
        out.failures
            .push("the live database did not change before the in-place restore".into());
    }
    // The live state the in-place restore replaces, stale -wal included: a restore that
    // fails must leave exactly this.
    let before = env.root.join("before-in-place/jellyfin.db");
    corpus::copy_db(&live, &before);
    let sides_before = corpus::side_files(&live);
    let o = run(&env, &["restore", "latest", "--in-place", "--force"]);
    if o.status.success() {
        check_restored(&live, &original, "restore --in-place", &mut out);
    } else {
        out.failures.push(failed("restore --in-place", &o));
        let sides = corpus::side_files(&live);
        match corpus::compare(&before, &live) {
            Ok(()) if sides == sides_before => {}
            Ok(()) => out.failures.push(format!(
                "failed restore --in-place changed the side files: {sides_before:?} -> {sides:?}"
            )),
            Err(diff) => out.failures.push(format!(
                "failed restore --in-place changed the live database (side files {sides_before:?} -> {sides:?}):\n{}",
                short(&diff)
            )),
        }
    }

    match (case.expect.as_str(), out.capture.as_deref()) {
        (_, None) | ("either", _) => {}
        (want, Some(got)) if want == got => {}
        (want, Some(got)) => out.failures.push(format!(
            "captured {got} ({}), expected {want}",
            out.reason.as_deref().unwrap_or("no reason given")
        )),
    }
    out
}

fn check_restored(db: &Path, original: &Path, step: &str, out: &mut Outcome) {
    if !db.is_file() {
        out.failures.push(format!("{step}: no {}", db.display()));
        return;
    }
    let sides = corpus::side_files(db);
    if !sides.is_empty() {
        out.failures.push(format!(
            "{step}: {} stand beside the restored database",
            sides.join(", ")
        ));
    }
    if let Err(diff) = corpus::compare(original, db) {
        out.failures.push(format!(
            "{step}: differs from the original:\n{}",
            short(&diff)
        ));
    }
}

#[test]
fn corpus_restores_exactly_or_physically() {
    // Needed like the rest of the suite needs them (the rollback and running-server tests).
    if let Some(missing) = corpus::missing_tools() {
        panic!("the database corpus needs {missing} (apt-get install python3 sqlite3)");
    }
    match corpus::oracle_self_test() {
        Ok(msg) => eprintln!("{msg}"),
        Err(e) => panic!("the oracle cannot fail, so it proves nothing:\n{e}"),
    }
    let help = corpus::run(&mut Cmd::new(&["backup", "--help"]).command());
    let init_flag = s(&help.stdout).contains("--init");

    let dir = tempfile::tempdir().unwrap();
    let cases = corpus::make_corpus(dir.path());
    assert!(cases.len() >= 40, "only {} cases", cases.len());

    // Two workers: each case has its own repository and data dir.
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let o = run_case(case, init_flag);
                results.lock().unwrap().push((i, o));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);

    let mut report = String::new();
    let mut failing = Vec::new();
    let mut no_field = 0;
    for (i, o) in &results {
        let c = &cases[*i];
        let capture = o.capture.as_deref().unwrap_or("?");
        no_field += usize::from(o.capture.is_none());
        let status = if o.failures.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        report.push_str(&format!(
            "{status} {:<24} expect {:<8} captured {:<8} {}\n",
            c.name,
            c.expect,
            capture,
            o.reason.as_deref().unwrap_or("")
        ));
        if !o.failures.is_empty() {
            failing.push(c.name.clone());
            for f in &o.failures {
                report.push_str(&format!("     - {}\n", f.replace('\n', "\n       ")));
            }
        }
    }
    if no_field > 0 {
        report.push_str(&format!(
            "note: {no_field} snapshot(s) say nothing of how the database was captured \
             (no `databases` entry for {DB_REL}); capture expectations not checked for them\n"
        ));
    }
    eprintln!("{report}");
    assert!(
        failing.is_empty(),
        "{} of {} corpus case(s) failed: {}\n\n{report}",
        failing.len(),
        cases.len(),
        failing.join(", ")
    );
}
