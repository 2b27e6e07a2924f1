//! One test per fixed bug, through the built binary.

#[path = "common/env.rs"]
mod env;

use std::process::Command;

use env::{s, BIN};

/// `init` with a relative repository path of one component failed with "No such file or
/// directory" (the parent of `repo` is the empty path, which cannot be opened to fsync).
#[test]
fn init_with_a_one_component_relative_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["--repo", "repo", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    assert!(dir.path().join("repo/config").is_file());
}
