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

/// `JELLYSNAP_THREADS` sizes the file-work pool as it always did: any number works
/// (clamped to 1-256) and a value that is not a number is ignored, never an error.
#[test]
fn the_thread_count_from_the_environment_is_tolerant() {
    let env = common::env::Env::new();
    let fx = env.small_fixture();
    for v in ["1", "0", "1000", "abc", ""] {
        env.cmd(&[
            "backup",
            "--init",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
        ])
        .env("JELLYSNAP_THREADS", v)
        .expect(0);
        env.cmd(&["snapshots"])
            .env("JELLYSNAP_THREADS", v)
            .expect(0);
    }
    assert_eq!(env.snapshot_count(), 5);
    let (t, _) = env.restore_to("latest", "restored");
    assert!(t.join("data").is_dir());
}
