//! Progress on a terminal, through the binary: a first backup shows files and bytes out
//! of the totals counted ahead of its walk; a backup queued behind another one's writer
//! lock says whose it waits for; with no terminal nothing is drawn.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::env::{s, wait_until, Env, BIN};

/// `args` run by the binary on a pseudo-terminal (`script`), as a person would run
/// them: (exit status, what the terminal showed).
fn on_a_terminal(env: &Env, args: &[&str]) -> (bool, String) {
    on_a_terminal_with(&env.repo, args, &[])
}

/// [`on_a_terminal`] on the repository `repo`, with `vars` set in the command's
/// environment.
fn on_a_terminal_with(repo: &Path, args: &[&str], vars: &[(&str, &str)]) -> (bool, String) {
    let mut line = format!("{BIN} --repo {}", repo.display());
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("JELLYSNAP_CONFIG", "/dev/null")
        .env("COLUMNS", "80")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (out.status.success(), s(&out.stdout))
}

/// A first backup of `data` into `repo` on a terminal: what the terminal showed, and
/// the progress line that shows files out of exactly the snapshot's file count (with a
/// percentage and bytes out of a total, counted to the end), which the test asserts
/// was drawn.
fn first_backup_line(repo: &Path, data: &Path) -> (String, String) {
    // The walk waits after its first file, long enough for the count ahead of it to end
    // and its totals to be drawn.
    let (ok, screen) = on_a_terminal_with(
        repo,
        &["backup", "--init", "--data-dir", data.to_str().unwrap()],
        &[
            ("JELLYSNAP_PAUSE_AT", "backup-first-file"),
            ("JELLYSNAP_PAUSE_MS", "3000"),
        ],
    );
    assert!(ok, "{screen}");
    // The snapshot's file count, from its summary ("  files N (...").
    let files: u64 = screen
        .split("\n  files ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no file count in {screen}"));
    assert!(files > 1, "{screen}");
    let counted = format!("/{files} files");
    let line = screen
        .split(['\r', '\n'])
        .find(|l| l.contains("backing up") && l.contains(&counted))
        .unwrap_or_else(|| panic!("no line with {counted:?} in {screen:?}"))
        .to_string();
    let bytes_of_total = line
        .match_indices("B/")
        .any(|(i, _)| line[i + 2..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(line.contains('%') && bytes_of_total, "{line:?}");
    assert!(!line.contains('≥'), "{line:?}");
    (screen, line)
}

#[test]
fn a_first_backup_shows_files_and_bytes_out_of_the_counted_total() {
    let env = Env::new();
    let fx = env.small_fixture();
    first_backup_line(&env.repo, &fx.data_dir);
}

#[test]
fn the_count_leaves_out_a_repository_inside_the_data_as_the_walk_does() {
    let env = Env::new();
    let fx = env.small_fixture();
    let repo = fx.data_dir.join("data/trickplay/jsrepo");
    let (screen, _) = first_backup_line(&repo, &fx.data_dir);
    // The walk met it (so the count did too), and neither counted its files.
    assert!(screen.contains("is inside the backed-up data"), "{screen}");
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
    // Once the first is done, the second backs up.
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
