//! Reachability: which trees, list chunks and data chunks the snapshots reference.
//! Identical subtrees and list chunks are visited once, so the cost grows with the live
//! metadata, not with the number of snapshots times their size.

use std::collections::HashSet;

use crate::error::Result;
use crate::format::chunklist::ListVisitor;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{ChunkRef, Node, Tree};
use crate::id::ChunkId;
use crate::store::repo::Repository;

#[derive(Debug, Default)]
pub struct Reach {
    pub trees: HashSet<ChunkId>,
    /// List chunks of indirect chunk lists (tree-kind chunks).
    pub lists: HashSet<ChunkId>,
    pub data: HashSet<ChunkId>,
}

impl Reach {
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.trees.contains(id) || self.lists.contains(id) || self.data.contains(id)
    }

    pub fn len(&self) -> usize {
        self.trees.len() + self.lists.len() + self.data.len()
    }

    /// Every reachable chunk id.
    pub fn all(self) -> impl Iterator<Item = ChunkId> {
        self.trees.into_iter().chain(self.lists).chain(self.data)
    }

    /// Mark a file node's list chunks (skipping those already marked) and data chunks.
    /// Unreadable list chunks go to `failed`.
    pub fn add_file(
        &mut self,
        repo: &Repository,
        node: &Node,
        failed: &mut Vec<(ChunkId, crate::Error)>,
    ) {
        struct V<'a> {
            r: &'a mut Reach,
            failed: &'a mut Vec<(ChunkId, crate::Error)>,
        }
        impl ListVisitor for V<'_> {
            fn list(&mut self, id: &ChunkId) -> bool {
                self.r.lists.insert(*id)
            }
            fn data(&mut self, c: &ChunkRef) {
                self.r.data.insert(c.id);
            }
            fn failed(&mut self, id: &ChunkId, err: crate::Error) {
                self.failed.push((*id, err));
            }
        }
        repo.walk_file_chunks(node, &mut V { r: self, failed });
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
            Node::File { .. } => {
                let mut failed = Vec::new();
                r.add_file(repo, &e.node, &mut failed);
                if let Some((_, err)) = failed.into_iter().next() {
                    return Err(err);
                }
            }
            Node::Dir { tree } => visit(repo, tree, r)?,
            Node::Symlink { .. } => {}
        }
    }
    Ok(())
}

/// Every file path (with its root label) in a snapshot that uses one of `bad` (data or
/// list chunk) or whose list chunks cannot be read, and every directory whose tree chunk
/// is in `bad` or cannot be read.
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
            Node::File { .. } => {
                struct V<'a> {
                    bad: &'a HashSet<ChunkId>,
                    hit: bool,
                }
                impl ListVisitor for V<'_> {
                    fn list(&mut self, id: &ChunkId) -> bool {
                        self.hit |= self.bad.contains(id);
                        !self.hit
                    }
                    fn data(&mut self, c: &ChunkRef) {
                        self.hit |= self.bad.contains(&c.id);
                    }
                    fn failed(&mut self, _: &ChunkId, _: crate::Error) {
                        self.hit = true;
                    }
                }
                let mut v = V { bad, hit: false };
                repo.walk_file_chunks(&e.node, &mut v);
                if v.hit {
                    out.push(p);
                }
            }
            Node::Dir { tree } => walk_paths(repo, tree, &p, bad, out),
            Node::Symlink { .. } => {}
        }
    }
}
/// Chunks only a given snapshot references: what forgetting it alone would free.
pub fn exclusive_chunks(
    repo: &Repository,
    target: &crate::format::snapshot::Snapshot,
) -> Result<HashSet<ChunkId>> {
    let (snaps, _) = repo.snapshots()?;
    let others: Vec<_> = snaps.into_iter().filter(|s| s.id != target.id).collect();
    let rest = mark(repo, &others)?;
    let mine = mark(repo, std::slice::from_ref(target))?;
    Ok(mine.all().filter(|c| !rest.contains(c)).collect())
}
