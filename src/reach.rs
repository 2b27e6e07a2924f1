//! Reachability: which trees and data chunks the snapshots reference. Identical subtrees
//! are visited once, so the cost grows with the live metadata, not with the number of
//! snapshots times their size.

use std::collections::HashSet;

use crate::error::Result;
use crate::id::ChunkId;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, Tree};

#[derive(Debug, Default)]
pub struct Reach {
    pub trees: HashSet<ChunkId>,
    pub data: HashSet<ChunkId>,
}

impl Reach {
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.trees.contains(id) || self.data.contains(id)
    }
}

/// Mark everything reachable from `snapshots`. Any unreadable tree is an error: without
/// it nobody can tell what is live.
pub fn mark(repo: &Repository, snapshots: &[Snapshot]) -> Result<Reach> {
    let mut r = Reach::default();
    for s in snapshots {
        visit(repo, &s.record.tree, &mut r)?;
    }
    Ok(r)
}

/// Add one snapshot's reach to `r`.
pub fn visit(repo: &Repository, tree: &ChunkId, r: &mut Reach) -> Result<()> {
    if !r.trees.insert(*tree) {
        return Ok(());
    }
    let t = repo.load_tree(tree)?;
    for e in &t.entries {
        match &e.node {
            Node::File { chunks, .. } => r.data.extend(chunks.iter().map(|c| c.id)),
            Node::Dir { tree } => visit(repo, tree, r)?,
            Node::Symlink { .. } => {}
        }
    }
    Ok(())
}

/// Every file path (with its root label) in a snapshot that uses one of `bad`, and every
/// directory whose tree chunk is in `bad` or cannot be read.
pub fn paths_using(repo: &Repository, snap: &Snapshot, bad: &HashSet<ChunkId>) -> Vec<String> {
    let mut out = Vec::new();
    walk_paths(repo, &snap.record.tree, "", bad, &mut out);
    out
}

fn walk_paths(
    repo: &Repository,
    tree: &ChunkId,
    prefix: &str,
    bad: &HashSet<ChunkId>,
    out: &mut Vec<String>,
) {
    let label = if prefix.is_empty() { "/" } else { prefix };
    if bad.contains(tree) {
        out.push(format!("{label} (directory listing)"));
        return;
    }
    let t: Tree = match repo.load_tree(tree) {
        Ok(t) => t,
        Err(_) => {
            out.push(format!("{label} (directory listing)"));
            return;
        }
    };
    for e in &t.entries {
        let p = if prefix.is_empty() {
            e.name_lossy()
        } else {
            format!("{prefix}/{}", e.name_lossy())
        };
        match &e.node {
            Node::File { chunks, .. } => {
                if chunks.iter().any(|c| bad.contains(&c.id)) {
                    out.push(p);
                }
            }
            Node::Dir { tree } => walk_paths(repo, tree, &p, bad, out),
            Node::Symlink { .. } => {}
        }
    }
}
