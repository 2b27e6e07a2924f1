//! One test per fixed bug, through the built binary.

mod common;

use common::env::Cmd;

/// `init` with a relative repository path of one component failed with "No such file or
/// directory" (the parent of `repo` is the empty path, which cannot be opened to fsync).
#[test]
fn init_with_a_one_component_relative_path() {
    let dir = tempfile::tempdir().unwrap();
    Cmd::new(&["--repo", "repo", "init"])
        .current_dir(dir.path())
        .expect(0);
    assert!(dir.path().join("repo/config").is_file());
}
