//! The walk of a backup: each directory of the selection is listed, its children are
//! visited in parallel, and its tree chunk is written once all of them are (trees are
//! written bottom-up). A child that cannot be read is reported and left out; only
//! repository errors end the walk.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::files::{database_node, file_node};
use super::tally::Tally;
use super::{ctime_ns, mtime_ns, Ctx};
use crate::error::{IoContext, Result};
use crate::format::pack::ChunkKind;
use crate::format::snapshot::{Component, NotCapturedKind};
use crate::format::timefmt;
use crate::format::tree::{DbCapture, Entry, Node, Tree};
use crate::id::ChunkId;
use crate::jellyfin::layout::is_media;
use crate::jellyfin::Class;
use crate::ops::clock::stat_ns;
use crate::store::repo::Repository;

/// Walk every root of the selection and write the root tree. `parent_root` is the root
/// tree of the parent snapshot, whose unchanged files are reused.
pub(super) fn walk_roots(ctx: &Ctx, parent_root: Option<&Tree>) -> Result<(ChunkId, Tally)> {
    let mut tally = Tally::default();
    let mut root_entries = Vec::new();
    for root in &ctx.source.selection.roots {
        let path = PathBuf::from(&root.path);
        let meta = fs::symlink_metadata(&path).at(&path)?;
        let prev = parent_root.and_then(|t| t.find(root.label.as_bytes()));
        let parent_sub = prev_tree(ctx, prev)?;
        let (tree, t) = walk_dir(ctx, &root.label, &path, b"", parent_sub.as_ref())?;
        tally.add(t);
        let name = root.label.as_bytes().to_vec();
        root_entries.push(entry_from_meta(name, &meta, Node::Dir { tree }));
    }
    root_entries.sort_by(|a, b| a.name.cmp(&b.name));
    let tree = Tree {
        entries: root_entries,
    };
    Ok((ctx.sink.put(ChunkKind::Tree, &tree.encode()?, true)?, tally))
}

/// The parent snapshot's tree for a directory, when it was a directory there.
fn prev_tree(ctx: &Ctx, prev: Option<&Entry>) -> Result<Option<Tree>> {
    match prev {
        Some(Entry {
            node: Node::Dir { tree },
            ..
        }) => Ok(Some(ctx.repo.load_tree(tree)?)),
        _ => Ok(None),
    }
}

/// A directory being walked: where it is in the selection, and its tree in the parent
/// snapshot.
struct Dir<'a> {
    root: &'a str,
    path: &'a Path,
    rel: &'a [u8],
    parent: Option<&'a Tree>,
}

/// Walk one directory and return the id of its tree chunk, with what the walk counted.
fn walk_dir(
    ctx: &Ctx,
    root: &str,
    path: &Path,
    rel: &[u8],
    parent: Option<&Tree>,
) -> Result<(ChunkId, Tally)> {
    let dir = Dir {
        root,
        path,
        rel,
        parent,
    };
    let mut tally = Tally {
        dirs: 1,
        ..Tally::default()
    };
    let children = list(ctx, &dir, &mut tally);
    let entries: Vec<Result<(Option<Entry>, Tally)>> = children
        .par_iter()
        .map(|name| {
            let mut t = Tally::default();
            child(ctx, &dir, name.as_bytes(), &mut t).map(|e| (e, t))
        })
        .collect();
    let mut tree = Tree::default();
    for e in entries {
        let (entry, t) = e?;
        tally.add(t);
        tree.entries.extend(entry);
    }
    Ok((ctx.sink.put(ChunkKind::Tree, &tree.encode()?, true)?, tally))
}

/// The names in a directory, sorted. One that cannot be listed is reported and recorded
/// as not captured.
fn list(ctx: &Ctx, dir: &Dir, tally: &mut Tally) -> Vec<std::ffi::OsString> {
    let mut children = Vec::new();
    let unlisted = |e: std::io::Error, tally: &mut Tally| {
        ctx.report(tally, dir.path, &format!("cannot list directory: {e}"));
        tally.not_captured(NotCapturedKind::Dir, dir.root, dir.rel, dir.path);
    };
    match fs::read_dir(dir.path) {
        Ok(rd) => {
            for ent in rd {
                match ent {
                    Ok(e) => children.push(e.file_name()),
                    Err(e) => unlisted(e, tally),
                }
            }
        }
        Err(e) => unlisted(e, tally),
    }
    children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    children
}

/// The entry for one name in `dir`; `None` when it is not part of the snapshot or could
/// not be read (reported).
fn child(ctx: &Ctx, dir: &Dir, name: &[u8], tally: &mut Tally) -> Result<Option<Entry>> {
    let rel = join_rel(dir.rel, name);
    let class = ctx.source.selection.classify(dir.root, &rel);
    if class == Class::Skip {
        return Ok(None);
    }
    let path = dir.path.join(OsStr::from_bytes(name));
    let Some(meta) = child_meta(ctx, dir.root, &rel, &path, tally) else {
        return Ok(None);
    };
    let prev = dir.parent.and_then(|t| t.find(name));
    let ft = meta.file_type();
    let node = if ft.is_dir() {
        if (meta.dev(), meta.ino()) == ctx.repo_id {
            let _ = ctx.repo_inside.set(path);
            return Ok(None); // never back up the repository into itself
        }
        if Repository::holds_repository(&path) {
            // Rolled back by an in-place restore, it would lose its newer snapshots.
            let detail = "another jellysnap repository: left out of every snapshot and of every restore; keep repositories outside the server's data, on another disk".to_string();
            ctx.notice(tally, "repository-skipped", &path, detail);
            return Ok(None);
        }
        let prev_tree = prev_tree(ctx, prev)?;
        let (tree, t) = walk_dir(ctx, dir.root, &path, &rel, prev_tree.as_ref())?;
        tally.add(t);
        Node::Dir { tree }
    } else {
        let Class::Include(component) = class else {
            return Ok(None);
        };
        let leaf = Leaf {
            root: dir.root,
            rel: &rel,
            path: &path,
            component,
        };
        match leaf_node(ctx, &leaf, &meta, prev, tally)? {
            Some(node) => node,
            None => return Ok(None),
        }
    };
    if stat_ns(meta.mtime(), meta.mtime_nsec()).1 {
        let detail = format!(
            "modification time {} s after 1970 is outside what a snapshot holds (years 1677 to 2262); stored as {} UTC, which a restore gives back",
            meta.mtime(),
            timefmt::utc(mtime_ns(&meta))
        );
        ctx.notice(tally, "time-out-of-range", &path, detail);
    }
    Ok(Some(entry_from_meta(name.to_vec(), &meta, node)))
}

/// The metadata of a child, `None` when it vanished or cannot be read (reported). An
/// item's own directory (or one on the way to it) may be a symlink to another disk, as
/// admins do with metadata/: it is followed.
fn child_meta(
    ctx: &Ctx,
    root: &str,
    rel: &[u8],
    path: &Path,
    tally: &mut Tally,
) -> Option<Metadata> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            ctx.report(tally, path, &format!("vanished or unreadable: {e}"));
            tally.not_captured(NotCapturedKind::File, root, rel, path);
            return None;
        }
    };
    if meta.file_type().is_symlink() && ctx.source.selection.is_anchor(root, rel) {
        if let Ok(m) = fs::metadata(path) {
            if m.is_dir() {
                return Some(m);
            }
        }
    }
    // A database linked from another disk is captured through the link: storing the link
    // would store no database at all.
    if meta.file_type().is_symlink() && ctx.captures.contains(path) {
        if let Ok(m) = fs::metadata(path) {
            if m.is_file() {
                return Some(m);
            }
        }
    }
    Some(meta)
}

/// A child of the selection that is not a directory.
struct Leaf<'a> {
    root: &'a str,
    rel: &'a [u8],
    path: &'a Path,
    component: Component,
}

/// The node of a symlink, regular file or captured database, counted in `tally`. `None`
/// for other kinds of files, and for what could not be read (reported, recorded as not
/// captured).
fn leaf_node(
    ctx: &Ctx,
    leaf: &Leaf,
    meta: &Metadata,
    prev: Option<&Entry>,
    tally: &mut Tally,
) -> Result<Option<Node>> {
    let ft = meta.file_type();
    let node = if ft.is_symlink() {
        match fs::read_link(leaf.path) {
            Ok(t) => Node::Symlink {
                target: t.as_os_str().as_bytes().to_vec(),
            },
            Err(e) => {
                ctx.report(tally, leaf.path, &format!("cannot read symlink: {e}"));
                tally.not_captured(NotCapturedKind::File, leaf.root, leaf.rel, leaf.path);
                return Ok(None);
            }
        }
    } else if !ft.is_file() {
        // Jellyfin keeps no state in them: left out, but said so by path.
        let what = special_kind(ft);
        let detail = format!("{what}: not stored (a snapshot holds files, directories and symlinks); a restore does not recreate it, and an in-place restore of this component removes it");
        ctx.notice(tally, "special-file-skipped", leaf.path, detail);
        return Ok(None);
    } else if leaf.component == Component::Database && ctx.captures.contains(leaf.path) {
        database_node(ctx, leaf.path, tally)?
    } else {
        match file_node(ctx, leaf.path, meta, prev, tally)? {
            Some(n) => n,
            None => {
                tally.not_captured(NotCapturedKind::File, leaf.root, leaf.rel, leaf.path);
                return Ok(None);
            }
        }
    };
    tally.files += 1;
    if let Node::File { size, .. } = &node {
        tally.logical_bytes += size;
        if leaf.component == Component::Metadata && is_media(leaf.path) {
            tally
                .foreign_in_metadata
                .push(leaf.path.display().to_string());
        }
    }
    Ok(Some(node))
}

/// What a file that is neither a regular file, a directory nor a symlink is.
fn special_kind(ft: fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "a special file"
    }
}

fn entry_from_meta(name: Vec<u8>, m: &Metadata, node: Node) -> Entry {
    // A file with other links: entries of this snapshot with the same device and inode
    // are restored as one file.
    let linked = m.is_file()
        && m.nlink() > 1
        && matches!(
            node,
            Node::File {
                database: DbCapture::None,
                ..
            }
        );
    Entry {
        link: linked.then(|| m.dev()),
        name,
        node,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: mtime_ns(m),
        ctime_ns: ctime_ns(m),
        inode: m.ino(),
    }
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        r.extend_from_slice(rel);
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}
