//! Comparing restored trees with what was backed up: file contents, modes, mtimes, and
//! databases by their rows. Shared by the end-to-end tests and the crash campaign.
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fixture;

/// A tree as [`describe`] sees it: each path (relative) with what it is.
pub type State = BTreeMap<PathBuf, String>;

/// A read-only connection to `path` (it leaves `-wal`/`-shm` behind a WAL database, and
/// being read-only cannot remove them when it closes).
pub fn read_only(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Rows of every table, in a canonical order, for comparing databases by content.
pub fn db_content(path: &Path) -> BTreeMap<String, Vec<String>> {
    let c = read_only(path);
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", path.display());
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut out = BTreeMap::new();
    for t in tables {
        let mut stmt = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut s = String::new();
                for i in 0..n {
                    s.push_str(&format!("{:?}|", r.get_ref(i).unwrap()));
                }
                Ok(s)
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        rows.sort();
        out.insert(t, rows);
    }
    out
}

/// Every path under `dir` (relative) with kind, content hash, mode and mtime. Databases
/// are described by their rows instead of their bytes.
pub fn describe(dir: &Path, skip: &[&str]) -> State {
    let mut out = BTreeMap::new();
    for p in fixture::walk_sorted(dir).unwrap() {
        let rel = p.strip_prefix(dir).unwrap().to_path_buf();
        if skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        let v = if m.is_dir() {
            format!("dir {:o}", m.mode() & 0o7777)
        } else if m.file_type().is_symlink() {
            format!("symlink {}", fs::read_link(&p).unwrap().display())
        } else if p
            .file_name()
            .is_some_and(|n| n == "jellyfin.db" || n == "library.db")
        {
            let rows = format!("{:?}", db_content(&p));
            format!(
                "db {} {:o}",
                blake3::hash(rows.as_bytes()).to_hex(),
                m.mode() & 0o7777
            )
        } else {
            let b = fs::read(&p).unwrap();
            format!(
                "file {} {} {:o} {}",
                b.len(),
                blake3::hash(&b).to_hex(),
                m.mode() & 0o7777,
                m.mtime_nsec() + m.mtime() * 1_000_000_000
            )
        };
        out.insert(rel, v);
    }
    out
}

/// Assert two descriptions are equal, printing only the differences.
#[track_caller]
pub fn assert_same(actual: &State, expected: &State) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => diffs.push(format!("missing: {}", k.display())),
            Some(a) if a != v => {
                diffs.push(format!("differs: {}\n   got {a}\n  want {v}", k.display()))
            }
            _ => {}
        }
    }
    for k in actual.keys().filter(|k| !expected.contains_key(*k)) {
        diffs.push(format!("unexpected: {}", k.display()));
    }
    assert!(
        diffs.is_empty(),
        "{} difference(s):\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// What a snapshot of `fx` should contain, relative to the data dir: the fixture minus
/// the paths Jellyfin never needs back.
pub fn expected_state(fx: &fixture::Fixture) -> State {
    let mut d = describe(
        &fx.data_dir,
        &[
            "cache",
            "log",
            "transcodes",
            "data/backups",
            "data/SQLiteBackups",
            "data/livetv/recordings",
        ],
    );
    d.retain(|p, _| {
        let s = p.to_string_lossy();
        let leftover = s.ends_with("library.db.old")
            || s.rsplit_once(".bak")
                .is_some_and(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        !(s.ends_with("-wal") || s.ends_with("-shm") || leftover)
    });
    d
}
