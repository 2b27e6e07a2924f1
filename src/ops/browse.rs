//! Read-only views of snapshots: listing a path (`ls`) and comparing two snapshots
//! (`diff`). Identical subtrees have identical ids and are skipped without loading.
//!
//! `diff` also compares the databases the two snapshots captured as logical dumps: the
//! migrations in `__EFMigrationsHistory` and the row count of every table, read from the
//! dumps as stored (no database is rebuilt). A database whose chunks are the same in
//! both is not read; otherwise both dumps are read once, start to end.

use std::cmp::Ordering;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{DbCapture, Entry, Node, Tree};
use crate::store::repo::Repository;

#[derive(Debug, Clone, Serialize)]
pub struct LsEntry {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    /// The file's size as restored. For a database: its file's size as captured when
    /// the record has it, else the stored capture's (`capture_size`).
    pub size: u64,
    pub mtime_ns: i64,
    /// For a database: how it was captured (`logical` dump or `physical` copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DbCapture>,
    /// For a database: the size of its stored dump or copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_size: Option<u64>,
}

fn ls_entry(snap: &Snapshot, path: String, e: &Entry) -> LsEntry {
    let db = match &e.node {
        Node::File { database, .. } if database.is_database() => Some(*database),
        _ => None,
    };
    // A database's record says its file's size; the tree holds the capture's.
    let db_size = db.and_then(|_| {
        let r = snap
            .record
            .databases
            .iter()
            .find(|d| format!("{}/{}", d.root, d.rel) == path)?;
        r.size.or(r.source.as_ref().map(|s| s.db.size))
    });
    LsEntry {
        kind: e.kind_char(),
        mode: e.mode,
        size: db_size.unwrap_or(e.size()),
        mtime_ns: e.mtime_ns,
        database: db,
        capture_size: db.map(|_| e.size()),
        path,
    }
}

/// Entries under `path` (a `/`-separated path starting with a root label; empty for the
/// roots). A file path lists that file. `recursive` descends into directories.
pub fn ls(repo: &Repository, snap: &Snapshot, path: &str, recursive: bool) -> Result<Vec<LsEntry>> {
    let mut tree = repo.load_tree(&snap.record.tree)?;
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let not_found = || Error::PathNotInSnapshot {
            snapshot: snap.id.short(),
            path: path.to_string(),
        };
        let e = tree.find(part.as_bytes()).cloned().ok_or_else(not_found)?;
        prefix = if prefix.is_empty() {
            part.to_string()
        } else {
            format!("{prefix}/{part}")
        };
        match &e.node {
            Node::Dir { tree: t } => tree = repo.load_tree(t)?,
            _ => return Ok(vec![ls_entry(snap, prefix, &e)]),
        }
    }
    let mut out = Vec::new();
    list(repo, snap, &tree, &prefix, recursive, &mut out)?;
    Ok(out)
}

fn list(
    repo: &Repository,
    snap: &Snapshot,
    tree: &Tree,
    prefix: &str,
    recursive: bool,
    out: &mut Vec<LsEntry>,
) -> Result<()> {
    for e in &tree.entries {
        let p = if prefix.is_empty() {
            e.name_lossy()
        } else {
            format!("{prefix}/{}", e.name_lossy())
        };
        out.push(ls_entry(snap, p.clone(), e));
        if let (true, Node::Dir { tree }) = (recursive, &e.node) {
            list(repo, snap, &repo.load_tree(tree)?, &p, true, out)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    /// `+` added, `-` removed, `M` content changed, `m` metadata only, `T` type changed.
    pub change: char,
    pub path: String,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

pub fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<DiffEntry>> {
    let mut out = Vec::new();
    let ta = repo.load_tree(&a.record.tree)?;
    let tb = repo.load_tree(&b.record.tree)?;
    diff_trees(repo, &ta, &tb, "", &mut out)?;
    Ok(out)
}

/// Compare two trees whose entries are sorted by name, one name at a time.
fn diff_trees(
    repo: &Repository,
    a: &Tree,
    b: &Tree,
    prefix: &str,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    let (mut i, mut j) = (0, 0);
    while i < a.entries.len() || j < b.entries.len() {
        let (ea, eb) = (a.entries.get(i), b.entries.get(j));
        let ord = match (ea, eb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        let name = match ord {
            Ordering::Greater => eb.map(|e| e.name_lossy()),
            _ => ea.map(|e| e.name_lossy()),
        }
        .unwrap_or_default();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match ord {
            Ordering::Less => {
                i += 1;
                removed_or_added(repo, ea, '-', &path, out)?;
            }
            Ordering::Greater => {
                j += 1;
                removed_or_added(repo, eb, '+', &path, out)?;
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
                if let (Some(x), Some(y)) = (ea, eb) {
                    diff_entries(repo, x, y, path, out)?;
                }
            }
        }
    }
    Ok(())
}

/// Compare two entries of the same name: descend into two directories that differ,
/// else list the change, if any.
fn diff_entries(
    repo: &Repository,
    x: &Entry,
    y: &Entry,
    path: String,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    let change = match (&x.node, &y.node) {
        (Node::Dir { tree: ta }, Node::Dir { tree: tb }) => {
            if ta != tb {
                let (ta, tb) = (repo.load_tree(ta)?, repo.load_tree(tb)?);
                diff_trees(repo, &ta, &tb, &path, out)?;
            }
            None
        }
        (
            Node::File {
                chunks: ca,
                indirect: ia,
                ..
            },
            Node::File {
                chunks: cb,
                indirect: ib,
                ..
            },
        ) => {
            // List chunks are content-defined, so equal chunk lists have equal top-level
            // refs: no list chunk needs to be read.
            if (ia, ca) != (ib, cb) {
                Some('M')
            } else {
                metadata_change(x, y)
            }
        }
        (Node::Symlink { target: ta }, Node::Symlink { target: tb }) => (ta != tb).then_some('M'),
        _ => Some('T'),
    };
    if let Some(change) = change {
        out.push(DiffEntry {
            change,
            path,
            size_before: Some(x.size()),
            size_after: Some(y.size()),
        });
    }
    Ok(())
}

/// `m` when two entries differ in their metadata.
fn metadata_change(x: &Entry, y: &Entry) -> Option<char> {
    let differs = x.mode != y.mode || x.mtime_ns != y.mtime_ns || x.uid != y.uid || x.gid != y.gid;
    differs.then_some('m')
}

fn removed_or_added(
    repo: &Repository,
    e: Option<&Entry>,
    change: char,
    path: &str,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    let Some(e) = e else { return Ok(()) };
    let size = Some(e.size());
    let (before, after) = if change == '-' {
        (size, None)
    } else {
        (None, size)
    };
    out.push(DiffEntry {
        change,
        path: path.to_string(),
        size_before: before,
        size_after: after,
    });
    if let Node::Dir { tree } = &e.node {
        let t = repo.load_tree(tree)?;
        for c in &t.entries {
            removed_or_added(
                repo,
                Some(c),
                change,
                &format!("{path}/{}", c.name_lossy()),
                out,
            )?;
        }
    }
    Ok(())
}

/// What changed in one database between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct DbDiff {
    /// Root label and path, as in `ls`.
    pub path: String,
    /// `__EFMigrationsHistory` ids the later snapshot has and the earlier lacks.
    pub migrations_added: Vec<String>,
    /// Ids the earlier snapshot has and the later lacks (a downgrade, a restore).
    pub migrations_removed: Vec<String>,
    /// The tables whose row count changed (or that exist in one snapshot only).
    pub tables: Vec<TableRows>,
    /// Why the database was not compared, when it was not: a physical copy in either
    /// snapshot (only logical dumps are read), or a dump a newer jellysnap wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_compared: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableRows {
    pub table: String,
    /// Absent where the table does not exist.
    pub rows_before: Option<u64>,
    pub rows_after: Option<u64>,
}

/// A dump's row counts per table and its migration ids.
#[derive(Default)]
struct DumpSummary {
    rows: std::collections::BTreeMap<String, u64>,
    migrations: std::collections::BTreeSet<String>,
}

/// The databases of `b` (and those `a` had) that changed between the two, with their
/// migrations and row counts.
pub fn db_diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<DbDiff>> {
    let mut paths: Vec<String> = b
        .record
        .databases
        .iter()
        .chain(&a.record.databases)
        .map(|d| format!("{}/{}", d.root, d.rel))
        .collect();
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for path in paths {
        let (ea, eb) = (entry_at(repo, a, &path)?, entry_at(repo, b, &path)?);
        if let (Some(x), Some(y)) = (&ea, &eb) {
            if x.node == y.node {
                continue;
            }
        }
        let physical = [&ea, &eb].iter().any(|e| {
            matches!(e, Some(Entry { node: Node::File { database, .. }, .. }) if *database != DbCapture::Logical)
        });
        let mut d = DbDiff {
            path: path.clone(),
            migrations_added: Vec::new(),
            migrations_removed: Vec::new(),
            tables: Vec::new(),
            not_compared: None,
        };
        if physical {
            d.not_compared =
                Some("captured as a physical copy: only logical dumps are compared".into());
            out.push(d);
            continue;
        }
        // A dump a newer jellysnap wrote is not compared; the rest of the diff stands.
        let read = |e: Option<Entry>| match e.map(|e| summarize(repo, &e, &path)) {
            None => Ok(Some(DumpSummary::default())),
            Some(Ok(sum)) => Ok(Some(sum)),
            Some(Err(Error::NewerFormat { .. })) => Ok(None),
            Some(Err(e)) => Err(e),
        };
        let (Some(before), Some(after)) = (read(ea)?, read(eb)?) else {
            d.not_compared = Some("a dump was written by a newer jellysnap".into());
            out.push(d);
            continue;
        };
        d.migrations_added = after
            .migrations
            .difference(&before.migrations)
            .cloned()
            .collect();
        d.migrations_removed = before
            .migrations
            .difference(&after.migrations)
            .cloned()
            .collect();
        let mut names: Vec<&String> = before.rows.keys().chain(after.rows.keys()).collect();
        names.sort();
        names.dedup();
        for t in names {
            let (x, y) = (before.rows.get(t).copied(), after.rows.get(t).copied());
            if x != y {
                d.tables.push(TableRows {
                    table: t.clone(),
                    rows_before: x,
                    rows_after: y,
                });
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// The entry at `path` (root label first) in a snapshot, if it has one.
fn entry_at(repo: &Repository, snap: &Snapshot, path: &str) -> Result<Option<Entry>> {
    let mut tree = repo.load_tree(&snap.record.tree)?;
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(part) = parts.next() {
        let Some(e) = tree.find(part.as_bytes()).cloned() else {
            return Ok(None);
        };
        if parts.peek().is_none() {
            return Ok(Some(e));
        }
        match &e.node {
            Node::Dir { tree: t } => tree = repo.load_tree(t)?,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Read a logical dump from the repository: its tables' row counts and the migration
/// ids of `__EFMigrationsHistory`.
fn summarize(repo: &Repository, e: &Entry, path: &str) -> Result<DumpSummary> {
    use crate::format::dump::{Reader, Row, Value};
    let ids = repo.file_chunks(&e.node)?.iter().map(|c| c.id).collect();
    let progress = crate::ops::progress::NoProgress;
    let mut stream = crate::ops::restore::ChunkStream::new(repo, ids, &progress);
    let mut sum = DumpSummary::default();
    let read = (|| -> std::result::Result<(), crate::format::dump::DumpError> {
        let (_, mut reader) = Reader::open(&mut stream)?;
        let mut row = Row::default();
        while let Some(t) = reader.next_table()? {
            let migration_col = (t.name == "__EFMigrationsHistory")
                .then(|| t.columns.iter().position(|c| c == "MigrationId"))
                .flatten();
            let mut n = 0u64;
            while reader.next_row(&mut row)? {
                n += 1;
                if let Some(Value::Text(b)) = migration_col.and_then(|i| row.values.get(i)) {
                    sum.migrations
                        .insert(String::from_utf8_lossy(b).into_owned());
                }
            }
            sum.rows.insert(t.name, n);
        }
        Ok(())
    })();
    match read {
        Ok(()) => Ok(sum),
        Err(e) => Err(stream.take_err().unwrap_or_else(|| match e {
            crate::format::dump::DumpError::Newer { found, supported } => Error::newer_format(
                "database dump",
                path.to_string(),
                u32::from(found),
                u32::from(supported),
            ),
            e => Error::corrupt("database dump", path.to_string(), e.to_string()),
        })),
    }
}
