//! Restores at the edges of a real install: a restore cut short before its final sync,
//! content that changed behind an unchanged size and mtime, an empty mount point where
//! the data dir should be, a full destination, a damaged snapshot's counts and sparse
//! files. Each test goes through the built binary.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::env::{files_under, need_root, s, Env, SmallDisk};
use common::fixture::{self, Fixture, FixtureSpec, Layout};
use common::verify::{assert_same, describe, expected_state};

const MARK: &str = ".jellysnap-unfinished-restore";

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A metadata image of the fixture (a plain file an in-place restore compares by size and
/// mtime).
fn an_image(fx: &Fixture) -> PathBuf {
    files_under(&fx.metadata_dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "jpg"))
        .expect("the fixture has metadata images")
}

/// Overwrite `path` with other bytes of the same length and put its mtime back: what a
/// file whose content was lost (or rotted) looks like to a size-and-mtime comparison.
fn damage_keeping_size_and_mtime(path: &Path) {
    let m = fs::metadata(path).unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(&m);
    let bytes: Vec<u8> = fs::read(path).unwrap().iter().map(|b| !b).collect();
    fs::write(path, &bytes).unwrap();
    filetime::set_file_mtime(path, mtime).unwrap();
    let now = fs::metadata(path).unwrap();
    assert_eq!(
        (now.len(), now.mtime(), now.mtime_nsec()),
        (m.len(), m.mtime(), m.mtime_nsec())
    );
}

#[test]
fn a_restore_cut_short_before_its_sync_makes_the_next_one_compare_content() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let before = expected_state(&fx);
    let image = an_image(&fx);
    let original = fs::read(&image).unwrap();
    fs::write(&image, b"\xff\xd8\xffan upgrade rewrote this image").unwrap();

    // Everything written and renamed, nothing synced yet: a power cut now may lose the
    // content of any file it wrote while its name, size and mtime survive.
    env.cmd(&["restore", "latest", "--in-place", "--force"])
        .crash_at("restore-before-sync")
        .crashes();
    assert_eq!(fs::read(&image).unwrap(), original);
    assert!(fx.data_dir.join(MARK).is_file(), "the restore left no mark");
    damage_keeping_size_and_mtime(&image);

    let r = env.json(&["restore", "latest", "--in-place", "--force"], 0);
    assert_eq!(
        fs::read(&image).unwrap(),
        original,
        "the file whose content was lost was kept"
    );
    assert_eq!(r["plan"]["content_compared"], true, "{r}");
    assert!(
        !r["plan"]["unfinished_restore"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{r}"
    );
    assert!(
        !fx.data_dir.join(MARK).exists(),
        "a finished restore removes its mark"
    );
    assert_same(&expected_state(&fx), &before);

    // Finished: the next restore compares by size and mtime again.
    let r = env.json(&["restore", "latest", "--in-place", "--force"], 0);
    assert_eq!(r["plan"]["content_compared"], false, "{r}");
    assert_eq!(u(&r["report"]["files_written"]), 0, "{r}");
}

#[test]
fn verify_rewrites_content_that_changed_behind_the_same_size_and_mtime() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let before = expected_state(&fx);
    let image = an_image(&fx);
    let original = fs::read(&image).unwrap();
    damage_keeping_size_and_mtime(&image);

    // The default compares size and mtime, as the README says: the rotted file is kept.
    let r = env.json(&["restore", "latest", "--in-place", "--force"], 0);
    assert_eq!(u(&r["report"]["files_written"]), 0, "{r}");
    assert_ne!(fs::read(&image).unwrap(), original);

    let out = env.expect(
        &["restore", "latest", "--in-place", "--force", "--verify"],
        0,
    );
    assert!(
        s(&out.stdout).contains("compared by content"),
        "{}",
        s(&out.stdout)
    );
    assert_eq!(fs::read(&image).unwrap(), original);
    assert_same(&expected_state(&fx), &before);
    let r = env.json(
        &["restore", "latest", "--in-place", "--force", "--verify"],
        0,
    );
    assert_eq!(u(&r["report"]["files_written"]), 0, "{r}");
}

#[test]
fn an_in_place_restore_into_a_missing_or_empty_data_dir_is_refused_without_force() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let before = expected_state(&fx);
    // The disk holding the data dir is not mounted: its mount point is missing, or empty.
    let away = env.root.join("unmounted-disk");
    fs::rename(&fx.data_dir, &away).unwrap();
    for dry in [false, true] {
        let mut args = vec!["restore", "latest", "--in-place"];
        if dry {
            args.push("--dry-run");
        }
        let out = env.expect(&args, 14);
        let err = s(&out.stderr);
        assert!(
            err.contains("does not exist") && err.contains("mounted") && err.contains("--force"),
            "{err}"
        );
        assert!(
            !fx.data_dir.exists(),
            "the refused restore created the data dir"
        );
    }
    fs::create_dir(&fx.data_dir).unwrap();
    let out = env.expect(&["restore", "latest", "--in-place"], 14);
    let err = s(&out.stderr);
    assert!(
        err.contains("is empty") && err.contains("new, empty disk"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&fx.data_dir).unwrap().count(), 0);

    // A new, empty disk mounted there: --force restores onto it.
    env.json(&["restore", "latest", "--in-place", "--force"], 0);
    assert_same(&expected_state(&fx), &before);
    // Into an empty directory elsewhere, no flag is needed.
    let elsewhere = env.root.join("new-disk");
    fs::create_dir(&elsewhere).unwrap();
    env.json(
        &["restore", "latest", "--target", elsewhere.to_str().unwrap()],
        0,
    );
}

#[test]
fn a_partial_restore_counts_only_what_it_restored() {
    let env = Env::new();
    let fx = env.small_fixture();
    let image = an_image(&fx);
    let mut rng = fixture::Rng::new(5);
    let mut unique = vec![0u8; 20_000];
    rng.fill(&mut unique);
    fs::write(&image, &unique).unwrap();
    env.backup(&fx, &[]);
    let all = env.json(
        &[
            "restore",
            "latest",
            "--target",
            env.root.join("all").to_str().unwrap(),
        ],
        0,
    );
    let planned = u(&all["plan"]["write_files"]);
    assert_eq!(u(&all["report"]["files_written"]), planned, "{all}");

    // Damage the one pack record that holds the image's bytes.
    let mut damaged = false;
    for pack in files_under(&env.repo.join("packs")) {
        let bytes = fs::read(&pack).unwrap();
        if let Some(at) = bytes.windows(64).position(|w| w == &unique[..64]) {
            fs::OpenOptions::new()
                .write(true)
                .open(&pack)
                .unwrap()
                .write_all_at(&[bytes[at] ^ 0x55], at as u64)
                .unwrap();
            damaged = true;
        }
    }
    assert!(
        damaged,
        "the image's chunk is stored uncompressed in a pack"
    );
    let t = env.root.join("partial");
    let r = env.json(&["restore", "latest", "--target", t.to_str().unwrap()], 3);
    assert_eq!(r["report"]["errors"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(
        u(&r["report"]["files_written"]),
        planned - 1,
        "the file that could not be restored is not counted as restored: {r}"
    );
    let out = env.expect(
        &[
            "restore",
            "latest",
            "--target",
            env.root.join("p2").to_str().unwrap(),
        ],
        3,
    );
    let text = s(&out.stdout);
    assert!(
        text.contains(&format!("restored {} file(s)", planned - 1)),
        "{text}"
    );
}

#[test]
fn a_sparse_file_comes_back_sparse() {
    let env = Env::new();
    let fx = env.small_fixture();
    // `truncate -s 64M` and a few bytes written here and there.
    let sparse = fx.metadata_dir.join("library/sparse.bin");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    for at in [0u64, 5 << 20, 33 << 20, (64 << 20) - 3] {
        f.write_all_at(b"abc", at).unwrap();
    }
    drop(f);
    let blocks = |p: &Path| fs::metadata(p).unwrap().blocks();
    let original = blocks(&sparse);
    assert!(
        original * 512 < 1 << 20,
        "the file system keeps holes ({original} blocks)"
    );
    env.backup(&fx, &[]);

    let (t, _) = env.restore_to("latest", "restored");
    let back = t.join("metadata/library/sparse.bin");
    assert_eq!(fs::read(&back).unwrap(), fs::read(&sparse).unwrap());
    assert!(
        blocks(&back) <= original + 64,
        "restored with {} blocks of 512 bytes, the original has {original}",
        blocks(&back)
    );
}

/// Bytes no compressor shrinks and no chunker cuts alike by chance, from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    fixture::Rng::new(seed).fill(&mut b);
    b
}

#[test]
fn a_file_whose_later_chunks_were_stored_first_comes_back_whole() {
    let env = Env::new();
    let fx = env.small_fixture();
    // Two files with the same 2 MiB after different 70 KB beginnings: past its first
    // chunk, the second file's chunks are the first file's, stored by the backup before.
    // A restore reads chunks in the packs' order, so its first chunk comes last.
    let tail = noise(7, 2 << 20);
    let dir = fx.metadata_dir.join("library");
    let mut a = noise(1, 70_000);
    a.extend_from_slice(&tail);
    fs::write(dir.join("a.bin"), &a).unwrap();
    env.backup(&fx, &[]);
    let mut b = noise(2, 70_000);
    b.extend_from_slice(&tail);
    fs::write(dir.join("b.bin"), &b).unwrap();
    // The same under 1 MiB, where a file's chunks are gathered in memory and written
    // whole: one without a zero block, and one with zero blocks (kept as a hole).
    let small_tail = noise(8, 800_000);
    let mut c = noise(3, 70_000);
    c.extend_from_slice(&small_tail);
    fs::write(dir.join("c.bin"), &c).unwrap();
    let mut z = noise(4, 300_000);
    z.extend_from_slice(&vec![0u8; 200_000]);
    z.extend_from_slice(&noise(5, 300_000));
    fs::write(dir.join("z.bin"), &z).unwrap();
    env.backup(&fx, &[]);
    let mut d = noise(6, 70_000);
    d.extend_from_slice(&small_tail);
    fs::write(dir.join("d.bin"), &d).unwrap();
    env.backup(&fx, &[]);

    env.assert_restores("latest", "restored", &expected_state(&fx));
}

/// Fill the file system holding `dir` with `filler` until it is full, then free `leave`
/// bytes of it again.
fn fill_leaving(filler: &Path, leave: u64) {
    use std::io::Write;
    let mut f = fs::File::create(filler).unwrap();
    let block = vec![0x5au8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_disk_stops_an_in_place_restore_once_and_a_rerun_finishes_it() {
    need_root("mounts a small tmpfs");
    let env = Env::new();
    let disk = SmallDisk::mount(&env.root.join("disk"), "16m");
    let spec = FixtureSpec {
        items: 12,
        trickplay_sheets_per_item: 3,
        sheet_bytes: 48 * 1024,
        ..FixtureSpec::small(Layout::Docker)
    };
    let fx = fixture::generate(&disk.path().join("jellyfin"), &spec).unwrap();
    env.backup(&fx, &[]);
    let before = expected_state(&fx);
    // An upgrade removed every trickplay sheet (to make new ones); then the disk filled
    // up. Rolling back has to write them all again.
    let sheets = files_under(&fx.data_dir.join("data/trickplay"));
    assert!(sheets.len() >= 30, "{}", sheets.len());
    for p in &sheets {
        fs::remove_file(p).unwrap();
    }
    let filler = disk.path().join("filler");
    fill_leaving(&filler, 100 << 10);

    let out = env.expect(&["restore", "latest", "--in-place", "--force"], 20);
    let err = s(&out.stderr);
    assert!(
        err.contains("the file system is full") && err.contains("still to write"),
        "{err}"
    );
    assert!(
        err.contains(disk.path().to_str().unwrap()),
        "the error names the path: {err}"
    );
    assert_eq!(
        err.matches("No space left on device").count(),
        1,
        "one error, not one per file: {err}"
    );
    assert!(
        !err.contains("could not be restored") && !err.contains("warning:"),
        "{err}"
    );
    assert!(
        fx.data_dir.join(MARK).is_file(),
        "the unfinished restore is marked"
    );

    // Space freed: the same restore finishes the rollback.
    fs::remove_file(&filler).unwrap();
    let r = env.json(&["restore", "latest", "--in-place", "--force"], 0);
    assert_eq!(r["plan"]["content_compared"], true, "{r}");
    assert!(!fx.data_dir.join(MARK).exists());
    assert_same(&expected_state(&fx), &before);
}

/// A restore into a target cut short leaves its mark there, naming the snapshot: the
/// same restore again finishes it (comparing what it finds by content) instead of
/// refusing a target that is not empty; another snapshot, or a target without the mark,
/// is still refused.
#[test]
fn a_restore_into_a_target_cut_short_is_finished_by_the_same_restore() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = env.backup(&fx, &["--name", "before-upgrade"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = env.backup(&fx, &[])["id"].as_str().unwrap().to_string();
    let (full, _) = env.restore_to(&first, "full");
    let want = describe(&full, &[]);
    let target = env.root.join("target");
    let t = target.to_str().unwrap();
    env.cmd(&["restore", &first, "--target", t])
        .crash_at("restore-before-sync")
        .crashes();
    let mark = target.join(".jellysnap-unfinished-target");
    assert!(
        fs::read_to_string(&mark).unwrap().contains(&first),
        "the restore left no mark naming its snapshot"
    );
    // What a power cut could have taken: a file's content behind its size and mtime,
    // and a file not yet written.
    let files: Vec<_> = files_under(&target.join("metadata"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    damage_keeping_size_and_mtime(&files[0]);
    fs::remove_file(&files[1]).unwrap();
    // Another snapshot into it: refused, naming the unfinished one and both ways on,
    // and it changes nothing.
    let out = env.expect(&["restore", &other, "--target", t], 15);
    let err = s(&out.stderr);
    for want in [
        format!(
            "unfinished restore of snapshot {} (before-upgrade)",
            &first[..8]
        ),
        format!("`jellysnap restore before-upgrade --target {t}`"),
        format!("start over: delete {t}"),
    ] {
        assert!(err.contains(&want), "no `{want}` in: {err}");
    }
    assert!(mark.is_file());
    let r = env.json(&["restore", &first, "--target", t], 0);
    assert_eq!(r["plan"]["resumed"], true, "{r}");
    assert_eq!(r["plan"]["content_compared"], true, "{r}");
    assert_same(&describe(&target, &[]), &want);
    assert!(!mark.exists(), "the mark outlived the restore");
    // Finished: the same restore again is refused like any other into a full directory.
    env.expect(&["restore", &first, "--target", t], 15);
    let plain = env.root.join("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("something"), b"x").unwrap();
    env.expect(
        &["restore", &first, "--target", plain.to_str().unwrap()],
        15,
    );
}

/// A restore into a target, cut short, is finished by the same snapshot after it was
/// tagged or named (an edit gives it a new record id; the mark names its first one); a
/// target holding nothing but what a restore killed before its mark was durable left is
/// restored into as a resume.
#[test]
fn an_unfinished_target_restore_is_finished_after_the_snapshot_was_edited() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = env.backup(&fx, &[])["id"].as_str().unwrap().to_string();
    let (full, _) = env.restore_to(&first, "full");
    let want = describe(&full, &[]);
    let target = env.root.join("target");
    let t = target.to_str().unwrap();
    env.cmd(&["restore", &first, "--target", t])
        .crash_at("restore-before-sync")
        .crashes();
    env.expect(&["tag", &first[..8], "--add", "kept"], 0);
    env.expect(&["name", &first[..8], "before-test"], 0);
    let r = env.json(&["restore", "before-test", "--target", t], 0);
    assert_eq!(r["plan"]["resumed"], true, "{r}");
    assert_same(&describe(&target, &[]), &want);

    // Only a dead restore's temp file: resumed (and the file removed), not refused.
    let lone = env.root.join("lone");
    fs::create_dir(&lone).unwrap();
    fs::write(lone.join(".jellysnap-restore-999999999-1-x"), b"").unwrap();
    env.expect(
        &["restore", "before-test", "--target", lone.to_str().unwrap()],
        0,
    );
    assert_same(&describe(&lone, &[]), &want);
}

/// A restore killed while it rebuilt the database leaves the rebuild (and its -wal/-shm)
/// beside the database's place; the restore that finishes the job removes them, into a
/// target as in place.
#[test]
fn the_rebuild_a_killed_restore_left_beside_the_database_is_removed() {
    let env = Env::new();
    let fx = env.small_fixture();
    let id = env.backup(&fx, &[])["id"].as_str().unwrap().to_string();
    let (full, _) = env.restore_to(&id, "full");
    let want = describe(&full, &[]);
    let db_dir = full
        .join("data")
        .is_dir()
        .then_some("data")
        .expect("the fixture's database sits in data/");
    // What a killed restore leaves: its rebuild, named with an owner that is gone.
    let target = env.root.join("target");
    env.cmd(&["restore", &id, "--target", target.to_str().unwrap()])
        .crash_at("restore-before-sync")
        .crashes();
    let dead = ".jellysnap-restore-999999999.1-AbCdEf";
    for side in ["", "-wal", "-shm"] {
        fs::write(
            target.join(db_dir).join(format!("{dead}{side}")),
            b"rebuild",
        )
        .unwrap();
        fs::write(fx.data_dir.join(db_dir).join(format!("{dead}{side}")), b"x").unwrap();
    }
    env.expect(&["restore", &id, "--target", target.to_str().unwrap()], 0);
    assert_same(&describe(&target, &[]), &want);
    env.expect(&["restore", &id, "--in-place", "--force"], 0);
    for side in ["", "-wal", "-shm"] {
        let name = format!("{dead}{side}");
        assert!(
            !fx.data_dir.join(db_dir).join(&name).exists(),
            "{name} left in place"
        );
    }
}
