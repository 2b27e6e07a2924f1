//! Backups of a data dir that changed little or not at all: what is taken over from the
//! parent snapshot without being read, and what never is.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::env::{files_under, Env};
use serde_json::Value;

fn summary(v: &Value) -> &Value {
    &v["snapshot"]["summary"]
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A file in the deepest directory under `dir` (one of its own, with siblings).
fn deep_file(dir: &Path) -> PathBuf {
    files_under(dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "jpg"))
        .max_by_key(|f| (f.components().count(), f.clone()))
        .expect("a metadata image")
}

/// A directory's own times and inode, which a write inside one of its files leaves as
/// they were.
fn dir_stat(dir: &Path) -> (i64, i64, i64, i64, u64) {
    let m = fs::metadata(dir).unwrap();
    (
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
    )
}

/// A file rewritten in place keeps its directory's times (only creating, deleting or
/// renaming an entry changes them): with its size and modification time put back as they
/// were, only its own ctime tells. The next backup reads it and stores it, and every
/// directory above it gets a new tree.
#[test]
fn a_file_rewritten_in_place_in_an_unchanged_directory_is_read_again() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = env.backup(&fx, &[]);
    let second = env.backup(&fx, &[]);
    assert_eq!(
        u(&summary(&second)["files_read"]),
        0,
        "{}",
        summary(&second)
    );

    let file = deep_file(&fx.metadata_dir);
    let dir = file.parent().unwrap().to_path_buf();
    let before = fs::metadata(&file).unwrap();
    let dir_before = dir_stat(&dir);
    let mut content = fs::read(&file).unwrap();
    for b in content.iter_mut().take(64) {
        *b = !*b;
    }
    let mut f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&content).unwrap();
    f.sync_all().unwrap();
    drop(f);
    filetime::set_file_mtime(
        &file,
        filetime::FileTime::from_last_modification_time(&before),
    )
    .unwrap();
    let after = fs::metadata(&file).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        )
    );
    assert_eq!(
        dir_stat(&dir),
        dir_before,
        "the directory's own times changed"
    );

    let third = env.backup(&fx, &[]);
    let s3 = summary(&third);
    assert_eq!(u(&s3["files_read"]), 1, "{s3}");
    assert_ne!(third["snapshot"]["tree"], second["snapshot"]["tree"]);

    let (target, _) = env.restore_to("latest", "restored");
    let rel = file.strip_prefix(&fx.data_dir).unwrap();
    assert_eq!(fs::read(target.join(rel)).unwrap(), content);
    let (old, _) = env.restore_to(first["id"].as_str().unwrap(), "first");
    assert_ne!(fs::read(old.join(rel)).unwrap(), content);
}

/// The index's table files.
fn index_tables(repo: &Path) -> Vec<PathBuf> {
    let mut t: Vec<PathBuf> = files_under(&repo.join("index"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "sst"))
        .collect();
    t.sort();
    t
}

/// With nothing changed, a backup stores nothing new: every directory's tree is its
/// parent's, the root tree is the same chunk, and the index of a local repository is
/// not written (no table file flushed at its close, none compacted).
#[test]
fn an_unchanged_data_dir_gives_the_same_trees_and_stores_nothing() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    // The first backup may leave the stopped server's database with new empty side
    // files (a new directory listing); from then on nothing changes.
    let second = env.backup(&fx, &[]);
    let tables = index_tables(&env.repo);
    assert!(!tables.is_empty());
    let third = env.backup(&fx, &[]);
    let fourth = env.backup(&fx, &[]);
    let s3 = summary(&third);
    assert_eq!(u(&s3["files_read"]), 0, "{s3}");
    assert_eq!(u(&s3["new_chunks"]), 0, "{s3}");
    assert_eq!(third["snapshot"]["tree"], second["snapshot"]["tree"]);
    assert_eq!(fourth["snapshot"]["tree"], second["snapshot"]["tree"]);
    assert_eq!(third["parent"], second["id"]);
    assert_eq!(index_tables(&env.repo), tables);
}

/// The trees of the parent snapshot are placed by their tree pack's trailer; a trailer
/// that no longer opens leaves them to the index, and the backup goes on as before.
#[test]
fn a_tree_pack_whose_trailer_is_damaged_still_gives_its_trees() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let second = env.backup(&fx, &[]);
    let tree_packs: Vec<PathBuf> = files_under(&env.repo.join("trees"));
    assert!(!tree_packs.is_empty());
    for p in &tree_packs {
        let mut bytes = fs::read(p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(p, &bytes).unwrap();
    }
    let third = env.backup(&fx, &[]);
    let s3 = summary(&third);
    assert_eq!(u(&s3["files_read"]), 0, "{s3}");
    assert_eq!(third["snapshot"]["tree"], second["snapshot"]["tree"]);
}
