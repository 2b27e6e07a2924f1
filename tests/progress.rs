//! Progress on a terminal, through the binary: a backup queued behind another one's
//! writer lock says whose it waits for; with no terminal nothing is drawn.

mod common;

use std::fs;
use std::process::Command;

use common::env::{s, wait_until, Env, BIN};

/// `args` run by the binary on a pseudo-terminal (`script`), as a person would run
/// them: (exit status, what the terminal showed).
fn on_a_terminal(env: &Env, args: &[&str]) -> (bool, String) {
    let mut line = format!("{BIN} --repo {}", env.repo.display());
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("JELLYSNAP_CONFIG", "/dev/null")
        .env("COLUMNS", "80")
        .output()
        .unwrap();
    (out.status.success(), s(&out.stdout))
}

#[test]
fn a_backup_queued_behind_another_says_whose_it_waits_for() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let data = fx.data_dir.to_str().unwrap();
    let mut first = env
        .cmd(&["backup", "--data-dir", data])
        .pause_at("backup-before-commit", 3000)
        .quiet()
        .spawn();
    let pid = first.id();
    let writer = env.repo.join("locks/writer");
    wait_until("the first backup holds the writer lock", || {
        fs::read_to_string(&writer).is_ok_and(|t| t.starts_with(&format!("{pid} ")))
    });
    let (ok, screen) = on_a_terminal(&env, &["backup", "--data-dir", data]);
    assert!(first.wait().unwrap().success());
    assert!(ok, "{screen}");
    assert!(
        screen.contains("waiting for the backup started at ")
            && screen.contains(&format!(" UTC (pid {pid}) to finish")),
        "{screen}"
    );
    // Once the first is done, the second backs up, its progress out of its parent's size.
    assert!(screen.contains("backing up"), "{screen}");
}

#[test]
fn without_a_terminal_nothing_is_drawn() {
    let env = Env::new();
    let fx = env.small_fixture();
    let out = env.expect(
        &[
            "backup",
            "--init",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
        ],
        0,
    );
    let err = s(&out.stderr);
    assert!(!err.contains("backing up") && !err.contains('\r'), "{err}");
}
