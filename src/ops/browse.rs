//! Read-only views of snapshots: listing a path (`ls`) and comparing two snapshots
//! (`diff`). Identical subtrees have identical ids and are skipped without loading.

use std::cmp::Ordering;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Entry, Node, Tree};
use crate::store::repo::Repository;

#[derive(Debug, Clone, Serialize)]
pub struct LsEntry {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
}

fn ls_entry(path: String, e: &Entry) -> LsEntry {
    LsEntry {
        path,
        kind: e.kind_char(),
        mode: e.mode,
        size: e.size(),
        mtime_ns: e.mtime_ns,
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
            _ => return Ok(vec![ls_entry(prefix, &e)]),
        }
    }
    let mut out = Vec::new();
    list(repo, &tree, &prefix, recursive, &mut out)?;
    Ok(out)
}

fn list(
    repo: &Repository,
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
        out.push(ls_entry(p.clone(), e));
        if let (true, Node::Dir { tree }) = (recursive, &e.node) {
            list(repo, &repo.load_tree(tree)?, &p, true, out)?;
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
