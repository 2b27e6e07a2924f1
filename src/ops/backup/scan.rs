//! The count ahead of the walk, for a progress line that says how much is left: one
//! thread, at a lower CPU and I/O priority, stats (never opens a file) what the walk
//! will go through, by the walk's own rules (the selection, the repository and other
//! repositories left out, the symlinks the walk follows), and hands the files and bytes
//! counted so far to the progress. It holds counters and, for each directory on its
//! path, the names of the subdirectories still to go into (nothing per file), and stops
//! as soon as the walk ends. What it cannot list or stat it leaves out without a word:
//! the walk reports it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::walk::{followed, holds_repository, join_rel, list, Listing};
use super::Ctx;
use crate::jellyfin::Class;

/// How often the totals are handed on while the count goes on.
const REPORT: Duration = Duration::from_millis(100);

/// Count what the walk will go through, until done or `stop` is set, reporting the
/// totals to `ctx.progress` (as final when the count got to the end).
pub(super) fn count(ctx: &Ctx, stop: &AtomicBool) {
    crate::sys::background_thread();
    let mut c = Count {
        ctx,
        stop,
        files: 0,
        bytes: 0,
        reported: Instant::now(),
    };
    for root in &ctx.source.selection.roots {
        let path = PathBuf::from(&root.path);
        let listing = list(&path);
        if !c.dir(&root.label, &path, b"", listing) {
            return;
        }
    }
    ctx.progress.totals(c.files, c.bytes, false);
}

struct Count<'a> {
    ctx: &'a Ctx<'a>,
    stop: &'a AtomicBool,
    files: u64,
    bytes: u64,
    reported: Instant,
}

impl Count<'_> {
    /// Count one directory's content, given its listing; false once the walk has ended.
    fn dir(&mut self, root: &str, path: &Path, rel: &[u8], listing: Listing) -> bool {
        let Listing { fd, names, .. } = listing;
        let Some(fd) = fd else { return true };
        // Gone into once this directory is closed: however deep the tree, the count
        // holds one directory open, like the walk.
        let mut subdirs: Vec<OsString> = Vec::new();
        for name in names {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let child_rel = join_rel(rel, name.as_bytes());
            let class = self.ctx.source.selection.classify(root, &child_rel);
            if class == Class::Skip {
                continue;
            }
            let Ok(meta) = fd.stat(name.as_bytes(), false) else {
                continue;
            };
            let meta = match meta.is_symlink() {
                true => followed(
                    self.ctx,
                    root,
                    &child_rel,
                    &path.join(&name),
                    &fd,
                    &name,
                    meta,
                ),
                false => meta,
            };
            if meta.is_dir() {
                if (meta.dev, meta.ino) != self.ctx.repo_id {
                    subdirs.push(name);
                }
                continue;
            }
            // As the walk: files and symlinks of an item; special files are not stored.
            if !matches!(class, Class::Include(_)) || !(meta.is_file() || meta.is_symlink()) {
                continue;
            }
            self.files += 1;
            if meta.is_file() {
                // A captured database too, by its file's size: the walk counts it so.
                self.bytes += meta.size;
            }
            if self.reported.elapsed() >= REPORT {
                self.reported = Instant::now();
                self.ctx.progress.totals(self.files, self.bytes, true);
            }
        }
        drop(fd);
        for name in subdirs {
            let child = path.join(&name);
            let listing = list(&child);
            if holds_repository(&child, &listing) {
                continue;
            }
            if !self.dir(root, &child, &join_rel(rel, name.as_bytes()), listing) {
                return false;
            }
        }
        true
    }
}
