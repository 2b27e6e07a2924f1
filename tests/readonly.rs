//! A repository that cannot be written where it is read (a read-only file system: a
//! snapshot of the backup disk, read-only media, a NAS export; or a directory this user
//! may not write): every command that only reads works on it as it is, says so in one
//! line, and writes nothing there; a command that must write refuses with exit code 10.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::env::{need_root, open_up, s, Cmd, Env, NOBODY};
use common::fixture::{self, tree_digest};

/// A read-only bind mount of a directory, unmounted on drop.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(from: &Path, at: &Path) -> ReadOnlyMount {
        fs::create_dir_all(at).unwrap();
        for args in [
            vec!["--bind".into(), from.to_path_buf(), at.to_path_buf()],
            vec!["-o".into(), "remount,ro,bind".into(), at.to_path_buf()],
        ] {
            let out = std::process::Command::new("mount")
                .args(&args)
                .output()
                .unwrap();
            assert!(out.status.success(), "mount {args:?}: {}", s(&out.stderr));
        }
        ReadOnlyMount(at.to_path_buf())
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Every file under `dir` with its size and mtime: what a write would change.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, i64)> {
    fixture::walk_sorted(dir)
        .unwrap()
        .into_iter()
        .map(|p| {
            let m = fs::symlink_metadata(&p).unwrap();
            (p, m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000)
        })
        .collect()
}

/// Two snapshots of a small install, the second after a day of changes: (env, first id,
/// second id, the data dir).
fn two_snapshots() -> (Env, String, String, PathBuf) {
    let env = Env::new();
    let fx = env.small_fixture();
    let a = env.backup(&fx, &[])["id"].as_str().unwrap().to_string();
    fixture::day_of_changes(&fx, 7).unwrap();
    let b = env.backup(&fx, &[])["id"].as_str().unwrap().to_string();
    (env, a, b, fx.data_dir.clone())
}

/// The one line a reader of a repository it cannot write prints on stderr.
fn says_read_only(stderr: &str, why: &str, rest: &str) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot be written here"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&format!("({why}): {rest}")), "{stderr}");
}

/// The reading commands on `repo`, run by `cmd`, must succeed; returns their stderrs.
fn read_everything(
    cmd: &dyn Fn(&[&str]) -> Cmd,
    a: &str,
    b: &str,
    target: &Path,
) -> Vec<(String, String)> {
    let t = target.to_str().unwrap();
    let mut out = Vec::new();
    for args in [
        vec!["snapshots"],
        vec!["ls", b, "--recursive"],
        vec!["diff", a, b],
        vec!["stats"],
        vec!["check", "--read-data"],
        vec!["restore", b, "--target", t],
        // A database is rebuilt outside the repository and streamed.
        vec!["dump", b, "data/data/jellyfin.db"],
    ] {
        let o = cmd(&args).expect(0);
        assert!(!o.stdout.is_empty(), "{args:?} printed nothing");
        if args[0] == "dump" {
            assert!(o.stdout.starts_with(b"SQLite format 3\0"), "{args:?}");
        }
        out.push((args.join(" "), s(&o.stderr)));
    }
    out
}

#[test]
#[ignore = "needs root: mounts a read-only bind mount"]
fn a_repository_on_a_read_only_file_system_is_read_and_never_written() {
    need_root("mounts a read-only bind mount");
    let (env, a, b, data) = two_snapshots();
    let (expected, _) = env.restore_to(&b, "from-the-repository");
    let expected = tree_digest(&expected, &[]).unwrap();
    // A copy of the backup disk made without its lock files: there is no lock to take.
    fs::remove_dir_all(env.repo.join("locks")).unwrap();
    let before = listing(&env.repo);
    let ro = env.root.join("ro");
    let _mount = ReadOnlyMount::new(&env.repo, &ro);
    let cache = env.root.join("cache");
    let cmd = |args: &[&str]| Cmd::at_repo(&ro, args).env("XDG_CACHE_HOME", &cache);
    let target = env.root.join("restored");
    for (_, stderr) in read_everything(&cmd, &a, &b, &target) {
        says_read_only(
            &stderr,
            "read-only file system",
            "no lock can be taken there, reading without one",
        );
    }
    assert_eq!(tree_digest(&target, &[]).unwrap(), expected);
    // -q hides the line, not the data.
    let o = cmd(&["-q", "snapshots"]).expect(0);
    assert!(o.stderr.is_empty(), "{}", s(&o.stderr));
    // Commands that must write refuse, saying why.
    for args in [
        vec!["backup", "--data-dir", data.to_str().unwrap()],
        vec!["forget", "--keep-last", "1"],
        vec!["gc"],
        vec!["repair", "index"],
    ] {
        let o = cmd(&args).expect(10);
        let err = s(&o.stderr);
        assert!(
            err.contains("cannot be written here (read-only file system)"),
            "{args:?}: {err}"
        );
    }
    drop(_mount);
    assert_eq!(
        listing(&env.repo),
        before,
        "nothing was written to the repository"
    );
}

#[test]
#[ignore = "needs root: runs the binary as user nobody"]
fn a_repository_this_user_cannot_write_is_read_and_its_missing_index_kept_in_memory() {
    need_root("runs the binary as user nobody");
    let (env, a, b, _) = two_snapshots();
    let (expected, _) = env.restore_to(&b, "from-the-repository");
    let expected = tree_digest(&expected, &[]).unwrap();
    // The index is derived data: a copy may lack it. Nobody may rebuild it there.
    fs::remove_dir_all(env.repo.join("index")).unwrap();
    open_up(&env.root, false);
    let home = env.root.join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = listing(&env.repo);
    let cmd = |args: &[&str]| env.cmd(args).by_nobody().env("HOME", &home);
    let target = home.join("restored");
    for (what, stderr) in read_everything(&cmd, &a, &b, &target) {
        assert!(!stderr.contains("rebuilt"), "{what}: {stderr}");
        says_read_only(
            &stderr,
            "permission denied",
            "reading it under a lock taken read-only; its index is missing or outdated, read from",
        );
    }
    assert_eq!(tree_digest(&target, &[]).unwrap(), expected);
    assert!(!env.repo.join("index").exists());
    assert_eq!(
        listing(&env.repo),
        before,
        "nothing was written to the repository"
    );
    // The reader's lock is a real one: gc (exclusive) cannot start while it is held.
    let mut reader = env
        .cmd(&["ls", &b, "--recursive"])
        .by_nobody()
        .env("HOME", &home)
        .pause_at("reader-after-index-open", 4000)
        .quiet()
        .spawn();
    common::env::wait_until("the reader holds its lock", || {
        fs::read_to_string("/proc/locks").is_ok_and(|l| {
            let ino = fs::metadata(env.repo.join("locks/repo")).unwrap().ino();
            l.lines().any(|line| line.contains(&format!(":{ino} ")))
        })
    });
    let o = env.cmd(&["gc"]).expect(16);
    assert!(s(&o.stderr).contains("locked"), "{}", s(&o.stderr));
    assert!(reader.wait().unwrap().success());
    // The owner writes as before.
    env.cmd(&["forget", "--keep-last", "1"]).expect(0);
}
