//! Every exit code of the README's table, produced through the built binary by a real
//! situation, and a closed stdout ending the process quietly with 141. The helpers
//! below the imports are this file's own (a repository with one snapshot, a run into a
//! closed pipe, the assertion on a code).

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::env::{s, Env, BIN};
use common::fixture::{self, Fixture};

/// A repository with one snapshot named `one` of a small Docker-layout data dir.
fn one_snapshot() -> (Env, Fixture) {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    (env, fx)
}

/// The run ended with `code`, and not by a panic.
#[track_caller]
fn expect(out: &Output, code: i32) {
    let err = s(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Run against `env`'s repository with stdout (and with `stderr_too`, stderr) a pipe
/// whose reading end is already closed: every write to it fails with a broken pipe.
fn run_into_closed_pipe(env: &Env, args: &[&str], stderr_too: bool) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let stderr = if stderr_too {
        Stdio::from(writer.try_clone().unwrap())
    } else {
        Stdio::piped()
    };
    Command::new(BIN)
        .arg("--repo")
        .arg(&env.repo)
        .args(args)
        .stdout(writer)
        .stderr(stderr)
        .output()
        .unwrap()
}

/// The largest pack file of the repository.
fn largest_pack(env: &Env) -> PathBuf {
    let mut sized: Vec<(u64, PathBuf)> = Vec::new();
    for p in fixture::walk_sorted(&env.repo.join("packs")).unwrap() {
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => sized.push((m.len(), p)),
            _ => {}
        }
    }
    sized.into_iter().max().unwrap().1
}

#[test]
fn success_is_0_and_an_io_error_is_1() {
    let env = Env::new();
    expect(&env.run(&["init"]), 0);
    // A repository path below a regular file cannot be created.
    let file = env.root.join("a-file");
    fs::write(&file, b"x").unwrap();
    let repo = file.join("repo");
    let out = Command::new(BIN)
        .args(["--repo", repo.to_str().unwrap(), "init"])
        .output()
        .unwrap();
    expect(&out, 1);
}

#[test]
fn a_bad_command_line_is_2() {
    let env = Env::new();
    // Refused before the repository is looked at: there is none here.
    for args in [
        &["backup", "--bogus"][..],
        &["restore", "one"],
        &["check", "--read-data-subset", "0"],
        &["check", "--read-data-subset", "150"],
        &["gc", "--max-unused", "101"],
        &["forget"],
        &["forget", "--keep-within", "3x"],
        &["forget", "one", "--keep-last", "1"],
        &[
            "backup",
            "--data-dir",
            "/nonexistent",
            "--components",
            "posters",
        ],
        &[
            "backup",
            "--data-dir",
            "/nonexistent",
            "--name",
            "has space",
        ],
    ] {
        let out = env.run(args);
        expect(&out, 2);
        assert!(!s(&out.stderr).is_empty(), "{args:?}");
    }
    assert!(!env.repo.exists());
}

#[test]
fn repository_problems_are_10() {
    let env = Env::new();
    expect(&env.run(&["snapshots"]), 10);
    // A backup without --init into a path that holds nothing.
    let out = env.run_exact(&["backup", "--data-dir", "/nonexistent"]);
    expect(&out, 10);
    assert!(s(&out.stderr).contains("is the backup disk mounted?"));
    expect(&env.run(&["init"]), 0);
    expect(&env.run(&["init"]), 10);
    // init on a directory that holds something else (it was 2, "bad command line").
    let full = env.root.join("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("notes.txt"), b"mine").unwrap();
    let out = Command::new(BIN)
        .args(["--repo", full.to_str().unwrap(), "init"])
        .output()
        .unwrap();
    expect(&out, 10);
    assert!(
        s(&out.stderr).contains("is not empty"),
        "{}",
        s(&out.stderr)
    );
    assert_eq!(fs::read(full.join("notes.txt")).unwrap(), b"mine");
    // A repository path that links to a directory not there (a backup disk not
    // mounted): nothing is created, the link is named with where it points.
    let link = env.root.join("link");
    let gone = env.root.join("mnt/usb/jellysnap");
    std::os::unix::fs::symlink(&gone, &link).unwrap();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    for args in [vec!["init"], vec!["backup", "--init", "--data-dir", data]] {
        let out = Command::new(BIN)
            .arg("--repo")
            .arg(&link)
            .args(&args)
            .output()
            .unwrap();
        expect(&out, 10);
        let err = s(&out.stderr);
        assert!(
            err.contains("symbolic link") && err.contains(gone.to_str().unwrap()),
            "{err}"
        );
    }
    assert!(!gone.exists());
}

#[test]
fn snapshot_and_data_dir_problems_are_11_to_15() {
    let (env, fx) = one_snapshot();
    let data = fx.data_dir.to_str().unwrap();
    // 12: no such snapshot, no such path.
    expect(&env.run(&["ls", "nosuch"]), 12);
    expect(&env.run(&["ls", "one", "data/no/such/path"]), 12);
    // 13: the name is taken.
    expect(
        &env.run(&["backup", "--data-dir", data, "--name", "one"]),
        13,
    );
    // 14: not a Jellyfin data dir, or no data dir.
    let elsewhere = env.root.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    expect(
        &env.run(&["backup", "--data-dir", elsewhere.to_str().unwrap()]),
        14,
    );
    expect(&env.run(&["backup", "--data-dir", "/nonexistent"]), 14);
    // 15: the restore target holds something.
    let t = env.root.join("target");
    fs::create_dir_all(&t).unwrap();
    fs::write(t.join("x"), b"x").unwrap();
    expect(
        &env.run(&["restore", "one", "--target", t.to_str().unwrap()]),
        15,
    );
    // 11: a repository from a future format version.
    let cfg = env.repo.join("config");
    let orig = fs::read(&cfg).unwrap();
    let mut future = orig.clone();
    future[8] = 3;
    fs::write(&cfg, &future).unwrap();
    expect(&env.run(&["snapshots"]), 11);
    fs::write(&cfg, &orig).unwrap();
    expect(&env.run(&["snapshots"]), 0);
}

#[test]
fn a_locked_repository_is_16() {
    let (env, fx) = one_snapshot();
    // The exclusive repository lock, as a running gc or forget holds it.
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(env.repo.join("locks/repo"))
        .unwrap();
    lock.lock().unwrap();
    expect(&env.run(&["gc"]), 16);
    expect(&env.run(&["forget", "one"]), 16);
    let out = env.run(&["backup", "--data-dir", fx.data_dir.to_str().unwrap()]);
    expect(&out, 16);
    assert!(s(&out.stderr).contains("locked by another jellysnap process"));
    drop(lock);
    expect(&env.run(&["forget", "one"]), 0);
}

#[test]
fn a_running_server_is_17() {
    let (env, fx) = one_snapshot();
    // This test process holds the database open, as a running server would.
    let held = fs::File::open(fx.data_dir.join("data/jellyfin.db")).unwrap();
    let out = env.run(&["restore", "latest", "--in-place"]);
    drop(held);
    expect(&out, 17);
}

#[test]
fn damaged_data_is_18() {
    let (env, _fx) = one_snapshot();
    let pack = largest_pack(&env);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 200).unwrap();
    f.write_all_at(&[b[0] ^ 0x55], 200).unwrap();
    expect(&env.run(&["check", "--read-data"]), 18);
    // The code wins over a closed stdout and stderr (nothing can be said, no panic).
    expect(
        &run_into_closed_pipe(&env, &["check", "--read-data"], true),
        18,
    );
}

#[test]
fn gc_with_an_unreadable_snapshot_record_is_18() {
    let (env, _fx) = one_snapshot();
    fs::write(env.repo.join("snapshots").join("ab".repeat(32)), b"garbage").unwrap();
    let out = env.run(&["gc"]);
    expect(&out, 18);
    assert!(s(&out.stderr).contains("gc needs every snapshot record readable"));
    // The listing shows what it can, and says the repository is damaged.
    expect(&env.run(&["snapshots"]), 18);
}

#[test]
fn a_database_that_cannot_be_restored_is_19() {
    let (env, _fx) = one_snapshot();
    // Replace the record by one whose database proof does not match its dump.
    let dir = env.repo.join("snapshots");
    let file = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let id = jellysnap::SnapshotId::from_hex(file.file_name().unwrap().to_str().unwrap()).unwrap();
    let mut rec = jellysnap::SnapshotRecord::decode(&fs::read(&file).unwrap(), &id).unwrap();
    assert!(!rec.databases.is_empty());
    rec.databases[0].verified = Some("00".repeat(32));
    let bytes = rec.encode().unwrap();
    fs::write(dir.join(jellysnap::SnapshotId::of(&bytes).to_hex()), &bytes).unwrap();
    fs::remove_file(&file).unwrap();
    let t = env.root.join("restored");
    let out = env.run(&["restore", "one", "--target", t.to_str().unwrap()]);
    expect(&out, 19);
    assert!(s(&out.stderr).contains("nothing was changed"));
}

#[test]
fn an_interrupted_in_place_restore_is_21() {
    let (env, fx) = one_snapshot();
    env.cmd(&["restore", "one", "--in-place", "--force"])
        .crash_at("restore-swap-1")
        .crashes();
    let data = fx.data_dir.to_str().unwrap();
    let out = env.run_exact(&["backup", "--data-dir", data]);
    expect(&out, 21);
    assert!(s(&out.stderr).contains("Finish it"), "{}", s(&out.stderr));
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_restore_target_is_20() {
    common::env::need_root("mounts a small tmpfs");
    let (env, _fx) = one_snapshot();
    let disk = env.root.join("disk");
    let mounted = common::env::SmallDisk::mount(&disk, "64k");
    let t = disk.join("restored");
    let out = env.run(&["restore", "one", "--target", t.to_str().unwrap()]);
    drop(mounted);
    expect(&out, 20);
    assert!(
        s(&out.stderr).contains("still to write"),
        "{}",
        s(&out.stderr)
    );
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_restore_target_with_no_room_for_its_mark_or_no_inodes_is_20() {
    common::env::need_root("mounts a small tmpfs");
    let (env, _fx) = one_snapshot();
    // Not a byte left: the target's mark, the first thing written, does not fit.
    let disk = env.root.join("disk");
    let mounted = common::env::SmallDisk::mount(&disk, "64k");
    {
        use std::io::Write;
        let mut f = fs::File::create(disk.join("filler")).unwrap();
        while f.write_all(&[1u8; 4096]).is_ok() {}
    }
    let t = disk.join("restored");
    let out = env.run(&["restore", "one", "--target", t.to_str().unwrap()]);
    drop(mounted);
    expect(&out, 20);
    assert!(
        s(&out.stderr).contains("Nothing was changed"),
        "{}",
        s(&out.stderr)
    );
    // Room for bytes but not for files: said as such, whether a file or the database's
    // rebuild beside them meets the limit first.
    let disk = env.root.join("few-inodes");
    let mounted = common::env::SmallDisk::mount(&disk, "64m,nr_inodes=24");
    let t = disk.join("restored");
    let out = env.run(&["restore", "one", "--target", t.to_str().unwrap()]);
    drop(mounted);
    expect(&out, 20);
    assert!(
        s(&out.stderr).contains("no free inodes"),
        "{}",
        s(&out.stderr)
    );
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_rollback_leaving_jellyfin_less_than_2_gib_is_24() {
    common::env::need_root("mounts a small tmpfs");
    let env = Env::new();
    let disk = env.root.join("disk");
    let mounted = common::env::SmallDisk::mount(&disk, "32m");
    let fx = fixture::generate(
        &disk.join("jellyfin"),
        &fixture::FixtureSpec::small(fixture::Layout::Docker),
    )
    .unwrap();
    env.backup(&fx, &["--name", "one"]);
    let out = env.run(&["restore", "one", "--in-place"]);
    drop(mounted);
    expect(&out, 24);
    assert!(s(&out.stderr).contains("2.0 GiB"), "{}", s(&out.stderr));
}

#[test]
fn a_partial_backup_is_3() {
    let env = Env::new();
    let fx = env.small_fixture();
    // The trickplay directory is a link to a disk that is not mounted.
    let trickplay = fx.data_path().join("trickplay");
    fs::remove_dir_all(&trickplay).unwrap();
    std::os::unix::fs::symlink(env.root.join("not-mounted/trickplay"), &trickplay).unwrap();
    let out = env.run(&["backup", "--data-dir", fx.data_dir.to_str().unwrap()]);
    expect(&out, 3);
    assert!(
        s(&out.stderr).contains("partial snapshot"),
        "{}",
        s(&out.stderr)
    );
}

#[test]
fn a_bad_configuration_file_is_23() {
    let env = Env::new();
    let cfg = env.root.join("jellysnap.toml");
    fs::write(&cfg, "[retention]\nkeep_last = \"three\"\n").unwrap();
    let out = env
        .cmd(&["snapshots"])
        .env("JELLYSNAP_CONFIG", &cfg)
        .output();
    expect(&out, 23);
    let err = s(&out.stderr);
    assert!(
        err.contains(cfg.to_str().unwrap()) && err.contains("line 2"),
        "{err}"
    );
    // Named explicitly, a missing file is the same error.
    let gone = env.root.join("gone.toml");
    let out = env
        .cmd(&["--config", gone.to_str().unwrap(), "snapshots"])
        .output();
    expect(&out, 23);
}

#[test]
fn a_closed_stdout_ends_quietly_with_141() {
    let (env, fx) = one_snapshot();
    for args in [
        &["snapshots"][..],
        &["ls", "-r", "latest"],
        &["--json", "snapshots"],
        &["--json", "ls", "-r", "latest"],
        &["diff", "one", "latest"],
        &["--help"],
    ] {
        let out = run_into_closed_pipe(&env, args, false);
        expect(&out, 141);
        assert!(s(&out.stderr).is_empty(), "{args:?}: {}", s(&out.stderr));
    }
    // A backup whose summary cannot be printed is committed all the same.
    let data = fx.data_dir.to_str().unwrap();
    let out = run_into_closed_pipe(&env, &["--json", "backup", "--data-dir", data], false);
    expect(&out, 141);
    let list = env.json(&["snapshots"], 0);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    expect(&env.run(&["check"]), 0);
    // A quiet command with no data to print writes nothing to stdout: nothing to fail.
    expect(&run_into_closed_pipe(&env, &["-q", "check"], false), 0);
    // A listing prints its data under -q too, and so meets the closed pipe.
    expect(
        &run_into_closed_pipe(&env, &["-q", "snapshots"], false),
        141,
    );
}
