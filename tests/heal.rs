//! Damage found by `check --read-data` is recorded in the repository and heals: the next
//! backup of a file that still has the damaged content stores it again instead of
//! deduplicating against the damaged copy; `check` reports the snapshots that need it
//! until then, and says which are healed after; `repair packs` salvages what a damaged
//! pack still holds; gc drops the damaged pack once nothing needs it.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::env::{files_under, s, Env};
use common::fixture::{tree_digest, Fixture, Rng};
use serde_json::Value;

fn data_packs(repo: &Path) -> BTreeSet<PathBuf> {
    files_under(&repo.join("packs")).into_iter().collect()
}

/// Flip one byte inside the payload of the first record of `pack`, as a disk would.
fn damage_first_record(pack: &Path) {
    flip_byte(pack, 12 + 52 + 100);
}

/// Flip the byte at `at` of `pack`.
fn flip_byte(pack: &Path, at: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pack)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

/// A backed-up install, then a file of incompressible bytes backed up in a snapshot of
/// its own, whose only new data pack is then damaged: (env, fixture, the file's path
/// in snapshots, the snapshot id, the damaged pack).
fn damaged_file() -> (Env, Fixture, String, String, PathBuf) {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let before = data_packs(&env.repo);
    let mut bytes = vec![0u8; 300 << 10];
    Rng::new(17).fill(&mut bytes);
    fs::write(fx.metadata_dir.join("heal-me.bin"), &bytes).unwrap();
    let b = env.backup(&fx, &["--name", "with-the-file"]);
    let id = b["id"].as_str().unwrap().to_string();
    let new: Vec<PathBuf> = data_packs(&env.repo).difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "{new:?}");
    damage_first_record(&new[0]);
    (env, fx, "heal-me.bin".into(), id, new[0].clone())
}

fn affected_paths(check: &Value, key: &str) -> Vec<String> {
    check[key]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["paths"].as_array().unwrap().clone())
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_damaged_chunk_is_recorded_stored_again_by_the_next_backup_and_healed() {
    let (env, fx, file, snap, pack) = damaged_file();
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let c = env.json(&["check", "--read-data"], 18);
    assert!(
        affected_paths(&c, "affected")
            .iter()
            .any(|p| p.ends_with(&file)),
        "{c}"
    );
    // Recorded durably, under the pack's name.
    let record = env.repo.join("damaged").join(&pack_id);
    let rec: Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["pack"], pack_id.as_str());
    assert_eq!(rec["chunks"].as_array().unwrap().len(), 1, "{rec}");
    // A check that reads no data reports it still, and so does the next backup's check
    // until the content is stored again.
    let c = env.json(&["check"], 18);
    assert!(
        affected_paths(&c, "affected")
            .iter()
            .any(|p| p.ends_with(&file)),
        "{c}"
    );
    let out = env.expect(
        &[
            "restore",
            &snap,
            "--target",
            env.root.join("r1").to_str().unwrap(),
        ],
        3,
    );
    assert!(s(&out.stderr).contains(&file), "{}", s(&out.stderr));

    // The file is unchanged (size, times, inode): without the record, the backup would
    // reuse its chunk list, and the damaged chunk would be inherited. (Another new file
    // goes into the same pack, so that it is not the damaged pack's very bytes again.)
    fs::write(fx.metadata_dir.join("another.bin"), vec![7u8; 100 << 10]).unwrap();
    let b = env.backup(&fx, &[]);
    assert!(
        b["snapshot"]["summary"]["new_chunks"].as_u64().unwrap() >= 1,
        "{b}"
    );
    let c = env.json(&["check"], 0);
    let healed = affected_paths(&c, "healed");
    assert!(healed.iter().any(|p| p.ends_with(&file)), "{c}");
    assert!(c["affected"].as_array().unwrap().is_empty(), "{c}");
    let text = env.expect(&["check"], 0);
    assert!(
        s(&text.stdout).contains("(with-the-file) is healed"),
        "{}",
        s(&text.stdout)
    );
    // The damaged copy is no longer used: reading every pack finds nothing a snapshot
    // needs damaged.
    env.json(&["check", "--read-data"], 0);
    // The snapshot restores whole, from the good copy.
    let (restored, _) = env.restore_to(&snap, "r2");
    let copy = files_under(&restored)
        .into_iter()
        .find(|p| p.ends_with(&file))
        .unwrap();
    assert_eq!(
        fs::read(copy).unwrap(),
        fs::read(fx.metadata_dir.join(&file)).unwrap()
    );

    // gc drops the damaged pack once nothing needs it, and its record with it.
    env.json(&["gc", "--max-unused", "0"], 0);
    assert!(!pack.exists(), "the damaged pack is dropped");
    assert!(!record.exists(), "its damage record goes with it");
    env.json(&["check", "--read-data"], 0);
}

/// The content stored again alone makes the very pack that was damaged (a pack is named
/// by its bytes): put again, it replaces the damaged bytes, and its record goes.
#[test]
fn a_pack_stored_again_under_its_own_name_replaces_the_damaged_one() {
    let (env, fx, file, snap, pack) = damaged_file();
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    env.json(&["check", "--read-data"], 18);
    let record = env.repo.join("damaged").join(&pack_id);
    assert!(record.exists());
    let b = env.backup(&fx, &[]);
    assert_eq!(b["snapshot"]["summary"]["new_chunks"], 1, "{b}");
    assert!(!record.exists(), "the pack is whole again: its record goes");
    env.json(&["check", "--read-data"], 0);
    let (restored, _) = env.restore_to(&snap, "r");
    let copy = files_under(&restored)
        .into_iter()
        .find(|p| p.ends_with(&file))
        .unwrap();
    assert_eq!(
        fs::read(copy).unwrap(),
        fs::read(fx.metadata_dir.join(&file)).unwrap()
    );
}

/// `repair packs` stores the readable chunks of a damaged pack again, so that they no
/// longer depend on it; the damaged pack stays until what it held unreadably is stored
/// again, then gc drops it.
#[test]
fn repair_packs_salvages_the_readable_chunks_of_a_damaged_pack() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let before = data_packs(&env.repo);
    for (name, seed) in [("one.bin", 1), ("two.bin", 2)] {
        let mut bytes = vec![0u8; 300 << 10];
        Rng::new(seed).fill(&mut bytes);
        fs::write(fx.metadata_dir.join(name), &bytes).unwrap();
    }
    let snap = env.backup(&fx, &[])["id"].as_str().unwrap().to_string();
    let new: Vec<PathBuf> = data_packs(&env.repo).difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let pack = new[0].clone();
    damage_first_record(&pack);
    let c = env.json(&["check", "--read-data"], 18);
    let bad = affected_paths(&c, "affected");
    let (damaged, readable) = match bad.iter().any(|p| p.ends_with("one.bin")) {
        true => ("one.bin", "two.bin"),
        false => ("two.bin", "one.bin"),
    };
    assert!(!bad.iter().any(|p| p.ends_with(readable)), "{c}");

    let r = env.json(&["repair", "packs"], 0);
    assert!(r["packs"][0]["salvaged"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(
        r["packs"][0]["unreadable"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    assert!(
        pack.exists(),
        "the damaged pack stays: it holds what has no good copy"
    );
    // Now every record of the damaged pack fails: the readable file no longer needs it.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let len = f.metadata().unwrap().len();
    // (Its trailer, the last few hundred bytes, stays readable.)
    f.write_all_at(
        &vec![0xa5; (len - 12 - 52 - 100 - 2000) as usize],
        12 + 52 + 100,
    )
    .unwrap();
    let target = env.root.join("r1");
    let out = env.expect(&["restore", &snap, "--target", target.to_str().unwrap()], 3);
    let err = s(&out.stderr);
    assert!(err.contains(damaged) && !err.contains(readable), "{err}");
    let copy = files_under(&target)
        .into_iter()
        .find(|p| p.ends_with(readable))
        .unwrap();
    assert_eq!(
        fs::read(copy).unwrap(),
        fs::read(fx.metadata_dir.join(readable)).unwrap()
    );
    // gc keeps the pack while a chunk only it held (unreadably) is needed.
    env.json(&["gc", "--max-unused", "0"], 0);
    assert!(pack.exists());
    // The next backup stores the damaged content again; then gc drops the pack.
    env.backup(&fx, &[]);
    let c = env.json(&["check"], 0);
    assert!(
        affected_paths(&c, "healed")
            .iter()
            .any(|p| p.ends_with(damaged)),
        "{c}"
    );
    env.json(&["gc", "--max-unused", "0"], 0);
    assert!(!pack.exists());
    env.json(&["check", "--read-data"], 0);
    let (restored, _) = env.restore_to(&snap, "r2");
    for name in ["one.bin", "two.bin"] {
        let copy = files_under(&restored)
            .into_iter()
            .find(|p| p.ends_with(name))
            .unwrap();
        assert_eq!(
            fs::read(copy).unwrap(),
            fs::read(fx.metadata_dir.join(name)).unwrap()
        );
    }
}

/// A pack whose trailer is damaged lists only what a scan of its records recovers: gc
/// knows nothing of the rest, so it neither deletes nor repacks the pack.
#[test]
fn gc_keeps_a_pack_whose_trailer_is_damaged() {
    let (env, _fx, _file, _snap, pack) = damaged_file();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&[0u8; 40], len - 40).unwrap();
    let before = fs::read(&pack).unwrap();
    env.cmd(&["gc", "--max-unused", "0"]).output();
    assert_eq!(
        fs::read(&pack).unwrap(),
        before,
        "the pack is kept as it is"
    );
}

/// A database whose capture needs a damaged chunk is captured again by the next backup,
/// even when its files are exactly as recorded (a capture that would otherwise be
/// reused whole, without opening the database).
#[test]
fn an_unchanged_database_whose_capture_is_damaged_is_captured_again_and_healed() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    // Only the database changes: the next backup's new data pack holds its dump alone.
    common::sqlcli::sqlite3(
        &fx.db_path,
        "CREATE TABLE heal_me(b BLOB); INSERT INTO heal_me VALUES (randomblob(300000));",
    );
    // Backups dated well after the write: the database's state counts as settled, so
    // the next backup could reuse the capture as a whole.
    let later = fs::metadata(&fx.db_path).unwrap().mtime() + 60;
    let data = fx.data_dir.to_str().unwrap().to_string();
    let backup = |extra: &[&str]| {
        let mut args = vec!["backup", "--data-dir", data.as_str()];
        args.extend_from_slice(extra);
        env.cmd(&args).clock_at(later).json(0)
    };
    let before = data_packs(&env.repo);
    backup(&["--name", "with-the-table"]);
    let new: Vec<PathBuf> = data_packs(&env.repo).difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "{new:?}");
    damage_first_record(&new[0]);
    let c = env.json(&["check", "--read-data"], 18);
    assert!(
        affected_paths(&c, "affected")
            .iter()
            .any(|p| p.ends_with("jellyfin.db")),
        "{c}"
    );
    // The database is untouched since: without the damage record, its capture would be
    // reused, and the damaged chunk with it.
    let b = backup(&[]);
    let reuse = &b["snapshot"]["databases"][0]["reused"];
    assert_ne!(reuse.as_str(), Some("capture"), "{b}");
    let c = env.json(&["check"], 0);
    assert!(
        affected_paths(&c, "healed")
            .iter()
            .any(|p| p.ends_with("jellyfin.db")),
        "{c}"
    );
    env.json(&["check", "--read-data"], 0);
    let (restored, _) = env.restore_to("with-the-table", "r");
    assert_eq!(
        common::sqlcli::dump_of(&restored.join("data/jellyfin.db")),
        common::sqlcli::dump_of(&fx.db_path)
    );
}

/// A parent snapshot whose listing of a directory cannot be read does not stop the
/// backups that follow: that directory is read again and its listing stored anew, which
/// also heals the parent (the index now places the listing in a good copy).
#[test]
fn a_damaged_parent_listing_is_read_again_and_stored_anew() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "first"]);
    // The first record of each tree pack is a leaf directory's listing (trees are written
    // bottom-up): one byte of its payload flipped, as a disk would.
    let trees = files_under(&env.repo.join("trees"));
    assert!(!trees.is_empty());
    for t in &trees {
        flip_byte(t, 12 + 52 + 8);
    }
    env.expect(&["check"], 18);

    let b = env.backup(&fx, &["--name", "second"]);
    let damaged: Vec<&Value> = b["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "parent-listing-damaged")
        .collect();
    // (At least one per damaged listing: directories with equal content share one.)
    assert!(damaged.len() >= trees.len(), "{b}");
    assert!(
        damaged[0]["detail"]
            .as_str()
            .unwrap()
            .contains("check --read-data"),
        "{b}"
    );
    // The next one has a whole parent: nothing to say.
    let c = env.backup(&fx, &[]);
    assert!(c["notices"].as_array().unwrap().is_empty(), "{c}");
    env.json(&["check"], 0);
    let (second, _) = env.restore_to("second", "r2");
    let (first, _) = env.restore_to("first", "r1");
    assert_eq!(
        tree_digest(&first, &[]).unwrap(),
        tree_digest(&second, &[]).unwrap()
    );
}

/// A check whose scratch space fills while it rebuilds a database says so and ends; it
/// does not call the snapshot's database damaged.
#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_check_whose_scratch_space_is_full_reports_no_damage() {
    common::env::need_root("mounts a small tmpfs");
    let env = Env::new();
    let fx = env.small_fixture();
    let disk = env.root.join("disk");
    let mounted = common::env::SmallDisk::mount(&disk, "32m");
    let repo = disk.join("repo");
    let cmd = |args: &[&str]| common::env::Cmd::at_repo(&repo, args);
    let data = fx.data_dir.to_str().unwrap();
    cmd(&["backup", "--init", "--data-dir", data]).expect(0);
    // Everything but 16 KiB taken: the rebuild of the database cannot fit.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![1u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(16 << 10)).unwrap();
    }
    let out = cmd(&["check", "--read-data"]).output();
    let (stdout, stderr) = (s(&out.stdout), s(&out.stderr));
    // A full file system, said as that (exit code 20), naming the repository.
    assert_eq!(out.status.code(), Some(20), "{stdout}{stderr}");
    assert!(stderr.contains("check.db"), "{stderr}");
    assert!(
        stderr.contains(&format!("repository {}: the file system", repo.display())),
        "{stderr}"
    );
    assert!(
        !stdout.contains("affected") && !stderr.contains("affected"),
        "{stdout}{stderr}"
    );
    fs::remove_file(&filler).unwrap();
    cmd(&["check", "--read-data"]).expect(0);
    drop(mounted);
}

/// A lost pack (a file gone from a NAS, an object from a bucket) or one cut short (a
/// partial copy) found by `check --read-data` is recorded like a damaged one: the next
/// backup reads again the unchanged files (and captures again the unchanged database)
/// whose chunks it held and stores them anew, so the new snapshot restores whole, and
/// the old ones heal.
#[test]
fn a_lost_or_cut_short_pack_found_by_check_is_recorded_and_healed_by_the_next_backup() {
    let lose = |p: &Path| fs::remove_file(p).unwrap();
    let cut = |p: &Path| {
        let f = fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    };
    for (what, damage) in [("lost", &lose as &dyn Fn(&Path)), ("cut short", &cut)] {
        lost_or_cut_short(what, damage);
    }
}

fn lost_or_cut_short(what: &str, damage: &dyn Fn(&Path)) {
    let env = Env::new();
    let fx = env.small_fixture();
    // Backups dated well after every file's write: unchanged files (and the database)
    // count as settled, and are reused from the parent without being read.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 120;
    let data = fx.data_dir.to_str().unwrap().to_string();
    let backup = |extra: &[&str]| {
        let mut args = vec!["backup", "--data-dir", data.as_str()];
        args.extend_from_slice(extra);
        env.cmd(&args).clock_at(later).json(0)
    };
    backup(&["--init", "--name", "first"]);
    let (expected, _) = env.restore_to("first", "before");
    let expected = tree_digest(&expected, &[]).unwrap();
    // Every data pack: the database's dump is in one of them.
    let packs = data_packs(&env.repo);
    for p in &packs {
        damage(p);
    }

    let c = env.json(&["check", "--read-data"], 18);
    assert!(!c["affected"].as_array().unwrap().is_empty(), "{what}: {c}");
    for p in &packs {
        let id = p.file_name().unwrap();
        assert!(env.repo.join("damaged").join(id).exists(), "{what}: {c}");
    }

    let b = backup(&["--name", "second"]);
    assert!(
        b["snapshot"]["summary"]["files_read"].as_u64().unwrap() >= 1,
        "{what}: {b}"
    );
    let (second, _) = env.restore_to("second", "r2");
    assert_eq!(tree_digest(&second, &[]).unwrap(), expected, "{what}");
    // The first snapshot's chunks have a good copy again: no snapshot is affected (a
    // pack cut short is still reported, as a damaged pack no snapshot needs), and the
    // first restores whole too.
    let c = env.json(&["check"], if what == "lost" { 0 } else { 18 });
    assert!(c["affected"].as_array().unwrap().is_empty(), "{what}: {c}");
    let (first, _) = env.restore_to("first", "r1");
    assert_eq!(tree_digest(&first, &[]).unwrap(), expected, "{what}");
    if what != "lost" {
        return;
    }
    // The records of the lost packs go once every chunk has a good copy.
    env.json(&["gc", "--max-unused", "0"], 0);
    assert!(
        !env.repo.join("damaged").exists() || files_under(&env.repo.join("damaged")).is_empty(),
        "{what}"
    );
    env.json(&["check", "--read-data"], 0);
}
