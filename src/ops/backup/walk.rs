//! The walk of a backup: each directory of the selection is listed, its children are
//! visited in parallel, and its tree chunk is written once all of them are (trees are
//! written bottom-up). A child that cannot be read is reported and left out; only
//! repository errors end the walk.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
use crate::sys::{DirFd, Stat};

/// Walk every root of the selection and write the root tree. `parent_root` is the root
/// tree of the parent snapshot, whose unchanged files are reused.
pub(super) fn walk_roots(ctx: &Ctx, parent_root: Option<&Tree>) -> Result<(ChunkId, Tally)> {
    let mut tally = Tally::default();
    let mut root_entries = Vec::new();
    for root in &ctx.source.selection.roots {
        let path = PathBuf::from(&root.path);
        let meta = Stat::from(&fs::symlink_metadata(&path).at(&path)?);
        let prev = parent_root.and_then(|t| t.find(root.label.as_bytes()));
        let parent_sub = prev_tree(ctx, &mut tally, &path, prev)?;
        let dir = Dir {
            root: &root.label,
            path: &path,
            rel: b"",
            parent: parent_sub.as_ref(),
        };
        let (tree, t) = walk_dir(ctx, &dir, list(&path))?;
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

/// A directory's tree in the parent snapshot: decoded, and the bytes it was stored as.
struct ParentTree {
    id: ChunkId,
    tree: Tree,
    bytes: Vec<u8>,
}

/// The parent snapshot's tree for a directory `path`, when it was a directory there. A
/// tree whose stored copy is damaged or gone is no parent: the directory is walked as a
/// new one (its files read again), and its tree is stored anew rather than matched to
/// that copy, so this snapshot is whole and the parent heals. A refused read still ends
/// the backup.
fn prev_tree(
    ctx: &Ctx,
    tally: &mut Tally,
    path: &Path,
    prev: Option<&Entry>,
) -> Result<Option<ParentTree>> {
    let Some(Entry {
        node: Node::Dir { tree },
        ..
    }) = prev
    else {
        return Ok(None);
    };
    match ctx.repo.load_tree_bytes(tree) {
        Ok((decoded, bytes)) => Ok(Some(ParentTree {
            id: *tree,
            tree: decoded,
            bytes,
        })),
        Err(e) if e.is_damage() => {
            ctx.repo.note_damaged_copy(tree);
            let detail = format!(
                "the parent snapshot's listing of this directory cannot be read ({e}): its files are read again and the listing stored anew; run `jellysnap check --read-data` to see what else is damaged"
            );
            ctx.notice(tally, "parent-listing-damaged", path, detail);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A directory being walked: where it is in the selection, and its tree in the parent
/// snapshot.
struct Dir<'a> {
    root: &'a str,
    path: &'a Path,
    rel: &'a [u8],
    parent: Option<&'a ParentTree>,
}

/// Walk one directory, given its listing, and return the id of its tree chunk with
/// what the walk counted.
fn walk_dir(ctx: &Ctx, dir: &Dir, listing: Listing) -> Result<(ChunkId, Tally)> {
    let mut tally = Tally {
        dirs: 1,
        ..Tally::default()
    };
    let Listing { fd, names, failed } = listing;
    if let Some(e) = failed {
        ctx.report(&mut tally, dir.path, &format!("cannot list directory: {e}"));
        tally.not_captured(NotCapturedKind::Dir, dir.root, dir.rel, dir.path);
    }
    // Every name is stat-ed through the open directory, which is closed before any
    // child is walked: however deep the tree, the walk holds few descriptors.
    let found: Vec<Found> = match &fd {
        Some(fd) => names
            .into_par_iter()
            .filter_map(|name| stat_child(ctx, dir, fd, name))
            .collect(),
        None => Vec::new(),
    };
    drop(fd);
    let entries: Vec<Result<(Option<Entry>, Tally)>> = found
        .into_par_iter()
        .map(|f| {
            let mut t = Tally::default();
            child(ctx, dir, f, &mut t).map(|e| (e, t))
        })
        .collect();
    let mut tree = Tree::default();
    for e in entries {
        let (entry, t) = e?;
        tally.add(t);
        tree.entries.extend(entry);
    }
    let bytes = tree.encode()?;
    // The parent's tree, byte for byte: like the chunks of an unchanged file it is in
    // the repository (the parent snapshot names it), so it is neither hashed again nor
    // looked up in the index.
    let id = match dir.parent {
        Some(p) if p.bytes == bytes && ctx.repo.reads_are_kept() => p.id,
        _ => ctx.sink.put(ChunkKind::Tree, &bytes, true)?,
    };
    Ok((id, tally))
}

/// Whether a directory holds another jellysnap repository. Its `config` is in its
/// listing, so only a directory that lists one (or could not be listed: execute
/// permission alone lets the file be opened) is asked.
pub(super) fn holds_repository(path: &Path, listing: &Listing) -> bool {
    let config = listing
        .names
        .binary_search_by(|n| n.as_bytes().cmp(b"config".as_slice()));
    (config.is_ok() || listing.failed.is_some()) && Repository::holds_repository(path)
}

/// A directory's listing: the directory, open (when it opened), its names sorted, and
/// the error that cut the listing short.
pub(super) struct Listing {
    pub(super) fd: Option<DirFd>,
    pub(super) names: Vec<OsString>,
    pub(super) failed: Option<std::io::Error>,
}

pub(super) fn list(path: &Path) -> Listing {
    let (fd, mut names, failed) = match DirFd::open(path) {
        Ok(fd) => {
            let (names, failed) = fd.names();
            (Some(fd), names, failed)
        }
        Err(e) => (None, Vec::new(), Some(e)),
    };
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Listing { fd, names, failed }
}

/// A name of the directory being walked that is part of the selection, with what a stat
/// of it said.
struct Found {
    name: OsString,
    rel: Vec<u8>,
    path: PathBuf,
    class: Class,
    meta: std::io::Result<Stat>,
}

/// The name, classified and stat-ed; `None` when it is not part of the selection.
fn stat_child(ctx: &Ctx, dir: &Dir, fd: &DirFd, name: OsString) -> Option<Found> {
    let rel = join_rel(dir.rel, name.as_bytes());
    let class = ctx.source.selection.classify(dir.root, &rel);
    if class == Class::Skip {
        return None;
    }
    let path = dir.path.join(&name);
    let meta = fd
        .stat(name.as_bytes(), false)
        .map(|m| followed(ctx, dir.root, &rel, &path, fd, &name, m));
    Some(Found {
        name,
        rel,
        path,
        class,
        meta,
    })
}

/// The stat of a child to back up. An item's own directory (or one on the way to it) may
/// be a symlink to another disk, as admins do with metadata/: it is followed.
pub(super) fn followed(
    ctx: &Ctx,
    root: &str,
    rel: &[u8],
    path: &Path,
    fd: &DirFd,
    name: &OsStr,
    meta: Stat,
) -> Stat {
    if !meta.is_symlink() {
        return meta;
    }
    if ctx.source.selection.is_anchor(root, rel) {
        if let Ok(m) = fd.stat(name.as_bytes(), true) {
            if m.is_dir() {
                return m;
            }
        }
    }
    // A database linked from another disk is captured through the link: storing the link
    // would store no database at all.
    if ctx.captures.contains(path) {
        if let Ok(m) = fd.stat(name.as_bytes(), true) {
            if m.is_file() {
                return m;
            }
        }
    }
    meta
}

/// The entry for a name found in `dir`; `None` when it is not part of the snapshot or
/// could not be read (reported).
fn child(ctx: &Ctx, dir: &Dir, f: Found, tally: &mut Tally) -> Result<Option<Entry>> {
    let Found {
        name,
        rel,
        path,
        class,
        meta,
    } = f;
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            ctx.report(tally, &path, &format!("vanished or unreadable: {e}"));
            tally.not_captured(NotCapturedKind::File, dir.root, &rel, &path);
            return Ok(None);
        }
    };
    let name = name.into_vec();
    let prev = dir.parent.and_then(|p| p.tree.find(&name));
    let node = if meta.is_dir() {
        if (meta.dev, meta.ino) == ctx.repo_id {
            let _ = ctx.repo_inside.set(path);
            return Ok(None); // never back up the repository into itself
        }
        let listing = list(&path);
        if holds_repository(&path, &listing) {
            // Rolled back by an in-place restore, it would lose its newer snapshots.
            let detail = "another jellysnap repository: left out of every snapshot and of every restore; keep repositories outside the server's data, on another disk".to_string();
            ctx.notice(tally, "repository-skipped", &path, detail);
            return Ok(None);
        }
        let prev_tree = prev_tree(ctx, tally, &path, prev)?;
        let sub = Dir {
            root: dir.root,
            path: &path,
            rel: &rel,
            parent: prev_tree.as_ref(),
        };
        let (tree, t) = walk_dir(ctx, &sub, listing)?;
        tally.add(t);
        Node::Dir { tree }
    } else {
        let Class::Include(component) = class else {
            return Ok(None);
        };
        // Reported once, at the start (see `jellyfin::LeftOutWhy::NameNotUtf8`).
        if !ctx.source.left_out.is_empty() && ctx.source.leaves_out(&path) {
            return Ok(None);
        }
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
    if stat_ns(meta.mtime, meta.mtime_nsec).1 {
        let detail = format!(
            "modification time {} s after 1970 is outside what a snapshot holds (years 1677 to 2262); stored as {} UTC, which a restore gives back",
            meta.mtime,
            timefmt::utc(mtime_ns(&meta))
        );
        ctx.notice(tally, "time-out-of-range", &path, detail);
    }
    Ok(Some(entry_from_meta(name, &meta, node)))
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
    meta: &Stat,
    prev: Option<&Entry>,
    tally: &mut Tally,
) -> Result<Option<Node>> {
    let node = if meta.is_symlink() {
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
    } else if !meta.is_file() {
        // Jellyfin keeps no state in them: left out, but said so by path.
        let what = special_kind(meta);
        let detail = format!("{what}: not stored (a snapshot holds files, directories and symlinks); a restore does not recreate it, and an in-place restore of this component removes it");
        ctx.notice(tally, "special-file-skipped", leaf.path, detail);
        return Ok(None);
    } else if leaf.component == Component::Database && ctx.captures.contains(leaf.path) {
        let node = database_node(ctx, leaf.path, tally)?;
        // Counted by the file's size, as the count ahead of the walk saw it: what was
        // chunked is its capture, whose size is known only once it is made.
        ctx.progress.advance(meta.size);
        match node {
            Some(n) => n,
            None => {
                tally.not_captured(NotCapturedKind::File, leaf.root, leaf.rel, leaf.path);
                return Ok(None);
            }
        }
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
    ctx.progress.file_done();
    #[cfg(feature = "test-hooks")]
    {
        static FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !FIRST.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::store::testing::point("backup-first-file");
        }
    }
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
fn special_kind(m: &Stat) -> &'static str {
    if m.is_fifo() {
        "a FIFO (named pipe)"
    } else if m.is_socket() {
        "a socket"
    } else if m.is_block_device() {
        "a block device"
    } else if m.is_char_device() {
        "a character device"
    } else {
        "a special file"
    }
}

fn entry_from_meta(name: Vec<u8>, m: &Stat, node: Node) -> Entry {
    // A file with other links: entries of this snapshot with the same device and inode
    // are restored as one file.
    let linked = m.is_file()
        && m.nlink > 1
        && matches!(
            node,
            Node::File {
                database: DbCapture::None,
                ..
            }
        );
    Entry {
        link: linked.then_some(m.dev),
        name,
        node,
        mode: m.mode & 0o7777,
        uid: m.uid,
        gid: m.gid,
        mtime_ns: mtime_ns(m),
        ctime_ns: ctime_ns(m),
        inode: m.ino,
    }
}

pub(super) fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        r.extend_from_slice(rel);
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}
