//! The repository engine at its edges, through the built binary: readers beside a backup,
//! gc over a stale index, a repository on a small disk.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Output};

use common::env::{need_root, s, wait_until, Cmd, Env, SmallDisk};
use common::fixture;
use common::verify::{assert_same, describe, expected_state};

/// How long a paused reader holds its view of the repository.
const PAUSE_MS: u64 = 20_000;

/// Start `args` paused at `reader-after-index-open`.
fn paused_reader(env: &Env, args: &[&str]) -> Child {
    env.cmd(args)
        .pause_at("reader-after-index-open", PAUSE_MS)
        .spawn()
}

/// Whether process `pid` holds a table file of `index` open (its index view is open).
fn has_index_view(pid: u32, index: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .is_ok_and(|t| t.starts_with(index) && t.extension().is_some_and(|x| x == "sst"))
    })
}

/// The outputs of paused readers, which must all still have been running (paused) until
/// now.
#[track_caller]
fn finish_readers(mut readers: Vec<(Child, &str)>) -> Vec<Output> {
    let ended: Vec<&str> = readers
        .iter_mut()
        .filter_map(|(child, what)| child.try_wait().unwrap().map(|_| *what))
        .collect();
    let outs: Vec<Output> = readers
        .into_iter()
        .map(|(child, _)| child.wait_with_output().unwrap())
        .collect();
    assert!(
        ended.is_empty(),
        "{ended:?} ended before the backup did (the pause of {PAUSE_MS} ms was too short?): {:?}",
        outs.iter()
            .map(|o| format!("{}\n{}", s(&o.stdout), s(&o.stderr)))
            .collect::<Vec<_>>()
    );
    outs
}

/// A restore that had to rebuild the missing index reads through a read-only view once
/// the rebuild is done: a backup started meanwhile gets the writer lock and the index,
/// and succeeds. (The reader used to keep the rebuilt index open for writing, so the
/// backup failed, asking for `repair index`.)
#[test]
fn a_backup_runs_beside_a_reader_that_rebuilt_the_index() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "base"]);
    let base = expected_state(&fx);
    fs::remove_dir_all(env.repo.join("index")).unwrap();
    fixture::day_of_changes(&fx, 5).unwrap();
    let later = expected_state(&fx);

    let t = env.root.join("during");
    let reader = paused_reader(&env, &["restore", "base", "--target", t.to_str().unwrap()]);
    // The reader holds the writer lock while it rebuilds: the backup waits for it.
    wait_until("the reader rebuilds the index", || {
        env.repo.join("index/CURRENT").exists()
    });
    env.backup(&fx, &["--name", "later"]);
    let out = finish_readers(vec![(reader, "the restore")]).remove(0);
    let err = s(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("rebuilt it from"),
        "the restore rebuilt the index: {err}"
    );
    assert_same(&describe(&t, &[]), &base);
    env.assert_restores("later", "after", &later);
    env.expect(&["check", "--read-data"], 0);
}

/// Readers list the snapshots before they open their index view: a backup that
/// commits while they run is not seen by them, rather than seen without its chunks
/// (`restore latest` failed with a missing chunk, `check` reported chunks "not in the
/// index").
#[test]
fn a_snapshot_committed_beside_a_reader_is_not_half_seen() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "base"]);
    let base = expected_state(&fx);
    fixture::day_of_changes(&fx, 7).unwrap();
    let later = expected_state(&fx);

    let t = env.root.join("during");
    let restore = paused_reader(
        &env,
        &["restore", "latest", "--target", t.to_str().unwrap()],
    );
    let check = paused_reader(&env, &["check"]);
    let index = env.repo.join("index");
    for (child, what) in [(&restore, "the restore"), (&check, "the check")] {
        wait_until(&format!("{what} opens its index view"), || {
            has_index_view(child.id(), &index)
        });
    }
    env.backup(&fx, &["--name", "later"]);
    let mut outs = finish_readers(vec![(restore, "the restore"), (check, "the check")]);
    let (check, restore) = (outs.remove(1), outs.remove(0));
    assert!(restore.status.success(), "{}", s(&restore.stderr));
    assert_same(&describe(&t, &[]), &base);
    assert!(
        check.status.success(),
        "{}\n{}",
        s(&check.stdout),
        s(&check.stderr)
    );
    env.assert_restores("latest", "after", &later);
}

/// Point every data chunk's index entry at a pack that does not exist (the layout is
/// docs/FORMAT.md, "Index (derived)": key 'c' ++ chunk id, value pack id[32] first, kind
/// at byte 48). Returns how many entries it changed.
fn index_data_chunks_in_a_missing_pack(repo: &Path) -> usize {
    let db = rocksdb::DB::open_default(repo.join("index")).unwrap();
    let mut moved = Vec::new();
    for kv in db.prefix_iterator(b"c") {
        let (k, v) = kv.unwrap();
        if k.first() != Some(&b'c') {
            break;
        }
        if v.len() == 50 && v[48] == 0 {
            let mut v = v.to_vec();
            v[..32].copy_from_slice(&[0xab; 32]);
            moved.push((k.to_vec(), v));
        }
    }
    for (k, v) in &moved {
        db.put(k, v).unwrap();
    }
    db.flush().unwrap();
    moved.len()
}

/// gc over an index that places live data chunks in a pack that is not there (lost, or
/// the index is stale): the chunks are live where they are. gc used to count them dead
/// in the packs that hold them and delete their last copies.
#[test]
fn gc_keeps_chunks_the_index_places_in_a_missing_pack() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "base"]);
    let base = expected_state(&fx);
    assert!(index_data_chunks_in_a_missing_pack(&env.repo) > 0);

    env.json(&["gc", "--max-unused", "0"], 0);
    env.json(&["repair", "index"], 0);
    env.expect(&["check", "--read-data"], 0);
    env.assert_restores("base", "after", &base);
}

/// A first backup of 40 MiB fits a repository on a 100 MiB disk: the index reserves
/// space in proportion to itself, not RocksDB's ~70 MiB of write-ahead log and manifest
/// up front.
#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_first_backup_fits_a_small_disk() {
    need_root("mounts a small tmpfs");
    let env = Env::new();
    let fx = env.small_fixture();
    let mut big = vec![0u8; 40 << 20];
    fixture::Rng::new(22).fill(&mut big);
    fs::write(fx.metadata_dir.join("library/big-backdrop.jpg"), &big).unwrap();
    let disk = SmallDisk::mount(&env.root.join("disk"), "100m");
    let repo = disk.path().join("repo");
    let data = fx.data_dir.to_str().unwrap();
    Cmd::at_repo(&repo, &["backup", "--init", "--data-dir", data]).expect(0);
    let t = env.root.join("restored");
    Cmd::at_repo(
        &repo,
        &["restore", "latest", "--target", t.to_str().unwrap()],
    )
    .expect(0);
    assert_same(&describe(&t, &[]), &expected_state(&fx));
}

/// A database whose copy does not fit the repository's file system: the backup says that
/// file system is full (not that the source database failed), and the repository keeps
/// what it had.
#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_database_copy_that_does_not_fit_says_the_repository_is_full() {
    need_root("mounts a small tmpfs");
    let env = Env::new();
    let fx = env.small_fixture();
    let disk = SmallDisk::mount(&env.root.join("disk"), "8m");
    let repo = disk.path().join("repo");
    let data = fx.data_dir.to_str().unwrap();
    Cmd::at_repo(&repo, &["backup", "--init", "--data-dir", data]).expect(0);
    common::sqlcli::sqlite3(
        &fx.db_path,
        "CREATE TABLE big(b BLOB); INSERT INTO big SELECT randomblob(1048576) FROM \
         (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 12) \
         SELECT x FROM c);",
    );
    let out = Cmd::at_repo(&repo, &["backup", "--data-dir", data]).expect(20);
    let err = s(&out.stderr);
    assert!(
        err.contains(&format!("repository {}: the file system", repo.display())),
        "{err}"
    );
    assert!(
        err.contains("is full") && err.contains("does not fit"),
        "{err}"
    );
    assert!(!err.contains("database capture of"), "{err}");
    // The copy that did not fit is gone with the run.
    let left: Vec<_> = fs::read_dir(repo.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in tmp/: {left:?}");
    Cmd::at_repo(&repo, &["check"]).expect(0);
}

/// Two first backups into one new repository at once: the first writes the config (it is
/// held just before, at `init-before-config`), the second waits for it and backs up into
/// that repository instead of writing a config of its own, which the first then replaced.
#[test]
fn two_first_backups_at_once_make_one_repository() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let first = env
        .cmd(&["backup", "--init", "--data-dir", data, "--name", "a"])
        .pause_at("init-before-config", 4000)
        .spawn();
    wait_until("the first backup lays out the repository", || {
        env.repo.join("snapshots").exists()
    });
    // Past its layout, the first reaches the config well within this.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let second = env
        .cmd(&["backup", "--init", "--data-dir", data, "--name", "b"])
        .output();
    let config_after_second = fs::read(env.repo.join("config")).unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", s(&first.stderr));
    assert!(second.status.success(), "{}", s(&second.stderr));
    assert_eq!(
        fs::read(env.repo.join("config")).unwrap(),
        config_after_second,
        "the config was written twice"
    );
    env.expect(&["check", "--read-data"], 0);
    for snap in ["a", "b"] {
        env.restore_to(snap, snap);
    }
}

/// A pack the user may not read is a permission problem, not damage: `check` stops with
/// the I/O error naming the pack (exit 1) and a restore names the same cause; neither
/// calls the repository damaged, since nothing is known about the pack's bytes.
#[test]
#[ignore = "needs root: runs commands as user nobody"]
fn a_pack_the_user_may_not_read_is_not_called_damaged() {
    use std::os::unix::fs::PermissionsExt;
    need_root("runs commands as user nobody");
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    common::env::open_up(&env.root, true);
    let pack = common::env::files_under(&env.repo.join("packs"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::set_permissions(&pack, fs::Permissions::from_mode(0o000)).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();

    let out = env.nobody(&["check", "--read-data"]).output();
    let err = s(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Permission denied") && err.contains(&name),
        "{err}"
    );
    assert!(
        err.contains("check stopped: the system refused a read"),
        "{err}"
    );
    assert!(!err.contains("damaged pack"), "{err}");

    let t = env.root.join("restored");
    let out = env
        .nobody(&["restore", "one", "--target", t.to_str().unwrap()])
        .output();
    let err = s(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        !err.contains("damaged") && !err.contains("corrupt") && !err.contains("missing"),
        "{err}"
    );
}

/// A record whose header disagrees with its trailer entry (here its raw length, under a
/// valid header checksum) is damage to `check --read-data`, as it is to a restore.
#[test]
fn check_compares_each_record_header_with_its_trailer_entry() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    let pack = common::env::files_under(&env.repo.join("packs"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    // The first record follows the 12-byte pack header: "JSCK", id[32], kind, compression,
    // 0u16, raw_len u32 at 40, stored_len u32 at 44, check u32 at 48.
    let h = 12;
    assert_eq!(&bytes[h..h + 4], b"JSCK");
    let raw = u32::from_le_bytes(bytes[h + 40..h + 44].try_into().unwrap());
    bytes[h + 40..h + 44].copy_from_slice(&(raw + 1).to_le_bytes());
    let check = blake3::hash(&bytes[h..h + 48]);
    bytes[h + 48..h + 52].copy_from_slice(&check.as_bytes()[..4]);
    fs::write(&pack, &bytes).unwrap();

    let out = env.expect(&["check", "--read-data"], 18);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(s(&out.stderr).contains(name), "{}", s(&out.stderr));
}
