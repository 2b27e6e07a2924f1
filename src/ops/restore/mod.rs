//! Restore: plan first, then execute. The plan is one list of [`Action`]s, what is
//! written, kept and deleted; `--dry-run` prints it and stops, `execute` carries out
//! exactly that list.
//!
//! Files are written to a temp name in their directory and renamed over the final name,
//! so a reader never sees half a file. Deletions happen only inside the items of the
//! restored components (never outside them), and never at a path the backup could not
//! capture (a partial snapshot): the snapshot cannot say what belongs there, so such a
//! path and everything below it stays as it is. Next to every restored database the stale
//! `-wal`/`-shm`/`-journal` are removed: they belong to the replaced file. Everything is
//! synced with one syncfs per file system at the end; in place, a mark in each root says
//! until then that the restore is unfinished, and makes the next one compare by content
//! (see `execute`). Plain files count as unchanged on size and mtime, or with `verify`
//! on their content.
//!
//! Databases are all-or-nothing and go first: each one is rebuilt from its logical dump
//! (streamed from the verified chunks into `logical::rebuild`) or written from its
//! physical copy into a temp file beside its destination, and a rebuilt one is observed
//! and compared with the observation digest the backup proved (`jellyfin::observe`).
//! Only when every database is ready does anything else in the destination change; if
//! one cannot be restored, the temp files go and the restore fails with nothing touched.
//! Then each database is fsynced and renamed into place before any other file changes
//! (see `database::install_database` for how the replaced file's `-wal`/`-shm`/`-journal`
//! are kept from ever pairing with it). In place, a database counts as unchanged when its
//! own logical dump chunks to the snapshot's chunk ids (physical copies: when its bytes
//! do).
//!
//! Never touched, wherever they sit in the restored trees: the repository the restore
//! reads and the cache directory (the plan says so). Never looked through: a symlink where
//! the snapshot has a directory (it is replaced, its target left alone), except an item's
//! own directory linked to another disk. A database whose place is a symlink is restored
//! into the file the link points at. In place, the intent record (`intent`) marks the
//! data dir from the first rename until everything is durable.
//!
//! The parts: `plan` walks the snapshot beside the destination, `compare` decides whether
//! what is there already is the snapshot's, `database` prepares and installs databases,
//! `write` writes one file or link, `execute` runs the plan's phases in order, `intent`
//! keeps the record of an in-place restore under way.

mod compare;
mod database;
mod execute;
mod intent;
mod plan;
mod versions;
mod write;

pub(crate) use database::ChunkStream;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::snapshot::{Component, Snapshot, Verified};
use crate::format::tree::{DbCapture, Entry};

pub use database::{clear_dead_rebuilds, try_rebuild};
pub use execute::execute;
pub use intent::{ensure_no_interrupted_restore, INTENT_NAME};
pub use plan::plan;
pub use versions::{Installed, Rollback, Space, VersionView, JELLYFIN_MIN_FREE};

#[derive(Debug, Clone)]
pub enum Destination {
    /// A new or empty directory.
    Target(PathBuf),
    /// Every root back where it was captured.
    InPlace,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub destination: Destination,
    /// Components to restore, exactly these; `None` = all components of the snapshot.
    pub components: Option<BTreeSet<Component>>,
    /// In place: restore even while the server seems to run, and into a root that is
    /// missing or holds nothing of the snapshot (a new, empty disk).
    pub force: bool,
    /// Directories a restore never writes into or deletes from, wherever they sit in the
    /// restored trees: the repository it reads and its cache directory.
    pub protect: Vec<PathBuf>,
    /// Compare the content of every plain file whose size and mtime match, instead of
    /// keeping it on those alone.
    pub verify: bool,
    /// The installed Jellyfin server's version as the caller knows it (a container's
    /// image); without it, an in-place plan asks the Debian package.
    pub server_version: Option<String>,
    /// Paths in the snapshot (`data/data/...`, as `ls` shows them) to restore, each
    /// with everything below it; empty: everything. Into a target only.
    pub include: Vec<String>,
    /// Paths in the snapshot to leave out, each with everything below it.
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RootMapping {
    pub label: String,
    pub from: String,
    #[serde(serialize_with = "lossy")]
    pub to: PathBuf,
}

/// One step of a restore, in the order the planner found it. The shown fields are what
/// `--dry-run` prints (and `--json` serialises); the `entry` (and `proof`) fields are
/// what `execute` needs to carry the step out.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Mkdir {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
    },
    Write {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        size: u64,
        #[serde(skip)]
        entry: Entry,
    },
    Symlink {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        #[serde(skip)]
        entry: Entry,
    },
    /// Content unchanged; mode, owner and mtime are set again.
    Keep {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        #[serde(skip)]
        entry: Entry,
    },
    Delete {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
    },
    RemoveSideFile {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
    },
    /// A database, restored before anything else changes.
    Database {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
        size: u64,
        capture: DbCapture,
        /// Whether the backup proved the logical dump restores exactly (an observation
        /// digest the rebuild is compared with); physical copies are exact by
        /// construction.
        verified_at_backup: bool,
        /// The SQLite version that made the backup's proof (or the copy).
        #[serde(skip_serializing_if = "Option::is_none")]
        sqlite_version: Option<String>,
        /// Boxed: a plan holds an action per entry of the snapshot, and this variant
        /// would otherwise set every action's size.
        #[serde(skip)]
        entry: Box<Entry>,
        /// The observation digest the backup proved; `Some` exactly when
        /// `verified_at_backup`.
        #[serde(skip)]
        proof: Option<Verified>,
    },
    /// Left as it is: the backup could not capture this path.
    NotCaptured {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
    },
    /// Left as it is: jellysnap's own repository (or its cache) inside a restored tree.
    Protected {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
    },
}

impl Action {
    /// The path the action is about.
    pub fn path(&self) -> &Path {
        match self {
            Action::Mkdir { path }
            | Action::Write { path, .. }
            | Action::Symlink { path, .. }
            | Action::Keep { path, .. }
            | Action::Delete { path }
            | Action::RemoveSideFile { path }
            | Action::Database { path, .. }
            | Action::NotCaptured { path }
            | Action::Protected { path } => path,
        }
    }
}

/// Paths need not be UTF-8; JSON output shows them lossily.
fn lossy<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub snapshot: String,
    pub roots: Vec<RootMapping>,
    pub components: Vec<Component>,
    pub actions: Vec<Action>,
    pub write_files: u64,
    pub write_bytes: u64,
    pub keep_files: u64,
    pub delete_paths: u64,
    /// Live paths left alone because the snapshot has no content for them.
    pub not_captured: u64,
    /// The repository (or its cache) inside a restored tree, left alone.
    pub protected: Vec<String>,
    /// Whether plain files that match in size and mtime were also compared by content
    /// (`--verify`, or an earlier in-place restore did not finish here).
    pub content_compared: bool,
    /// The components an earlier in-place restore was restoring when it stopped (its
    /// marks were found in the roots); empty when none.
    pub unfinished_restore: Vec<Component>,
    /// Into a target: the target holds what an interrupted restore of this snapshot
    /// left (its mark), which this one finishes, comparing what is there by content.
    pub resumed: bool,
    /// Into a target: the target, where the mark goes.
    #[serde(skip)]
    target: Option<PathBuf>,
    /// In place: what the rollback means for the server's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// In place, for data Jellyfin 10.11 or later runs on: the free space the restore
    /// leaves on the data dir's file system (it refuses below what Jellyfin needs to
    /// start, unless forced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space: Option<Space>,
    /// Restore in place even with too little space left (`RestoreOptions::force`).
    #[serde(skip)]
    force: bool,
    /// Every restored directory, each after its contents: its mode, owner and mtime are
    /// set once everything inside is in place. Not listed as actions: every directory
    /// of the snapshot gets it.
    #[serde(skip)]
    directories: Vec<DirMeta>,
    /// The data dir of an in-place restore, where its intent record goes.
    #[serde(skip)]
    in_place: Option<PathBuf>,
    /// The snapshot's first record's id in hex, which the marks of an unfinished restore
    /// name: it stays the snapshot's through edits.
    #[serde(skip)]
    origin: String,
}

#[derive(Debug, Clone)]
struct DirMeta {
    path: PathBuf,
    entry: Entry,
}

/// The text of the mark a restore into a target leaves there until it is durable.
fn target_mark(snapshot_hex: &str) -> String {
    format!(
        "A jellysnap restore into this directory did not finish. Run the same restore \
         again to finish it.\nsnapshot: {snapshot_hex}\n"
    )
}

/// The snapshot (hex id) a target mark names.
fn read_target_mark(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("snapshot: "))
}

/// Whether `id_hex`, as a mark or an intent record wrote it, names `snap`: its first
/// record's id (what marks are written with: an edit of the snapshot since does not
/// change it), or any id its records had (marks an earlier jellysnap wrote).
fn names_snapshot(snap: &Snapshot, id_hex: &str) -> bool {
    crate::id::SnapshotId::from_hex(id_hex).is_some_and(|id| snap.answers_to(&id))
}

/// The mark an unfinished in-place restore leaves in a root (see `UNFINISHED_RESTORE`):
/// a line for the reader, then the components it was restoring.
fn unfinished_mark(components: &BTreeSet<Component>) -> String {
    let names: Vec<&str> = components.iter().map(|c| c.name()).collect();
    format!(
        "An in-place jellysnap restore did not finish here: what it wrote may not all be on disk. \
         Run the restore again; while this file exists it compares every file it keeps by content.\n\
         components: {}\n",
        names.join(",")
    )
}

/// The components a mark names; every component when it cannot be read (the next
/// restore then verifies everything and keeps the mark until all are restored).
fn read_unfinished_mark(text: &str) -> BTreeSet<Component> {
    let named = text
        .lines()
        .find_map(|l| l.strip_prefix("components: "))
        .map(|l| {
            l.split(',')
                .map(Component::parse)
                .collect::<Option<BTreeSet<_>>>()
        });
    match named {
        Some(Some(set)) if !set.is_empty() => set,
        _ => Component::ALL.into_iter().collect(),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub files_written: u64,
    pub bytes_written: u64,
    pub files_kept: u64,
    pub deleted: u64,
    /// Files that could not be restored (damaged chunks, I/O errors), with the reason.
    pub errors: Vec<String>,
}

/// The side files SQLite may keep beside a database.
const SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// `dir` and the directories above it that do not exist yet, deepest first (empty when
/// `dir` exists): what making `dir` would create.
fn missing_dirs(dir: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dir = dir;
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        out.push(d.to_path_buf());
        dir = d.parent();
    }
    out
}

fn side_path(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// Why a write into the destination can go no further, if that is the error: the file
/// system is full, over quota or read-only. The restore stops at the first of these
/// instead of failing file after file.
pub(crate) fn no_space(e: &crate::error::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    let crate::error::Error::Io { source, .. } = e else {
        return None;
    };
    match source.kind() {
        ErrorKind::StorageFull => Some("the file system is full"),
        ErrorKind::QuotaExceeded => Some("the disk quota is exceeded"),
        ErrorKind::ReadOnlyFilesystem => Some("the file system is read-only"),
        _ => None,
    }
}

const TEMP_PREFIX: &str = ".jellysnap-restore-";
const LINK_PREFIX: &str = ".jellysnap-link-";

/// Temp names a restore makes beside what it restores: a killed restore's leftovers
/// (removed by the next one). Temp files and links carry their owner (see
/// `sys::owner_tag`): those of a restore still running are not leftovers. Set-aside side
/// files carry none: only an in-place restore of the same data makes them.
fn is_restore_leftover(name: &[u8]) -> bool {
    if name == INTENT_NAME.as_bytes() {
        return false;
    }
    if name.starts_with(b".jellysnap-stale-") {
        return true;
    }
    dead_owner(name, TEMP_PREFIX).or_else(|| dead_owner(name, LINK_PREFIX)) == Some(true)
}

/// Remove the temp files of restores that died, directly in `dir` (not below it): what a
/// restore killed while writing a record there left. Best effort.
fn clear_dead_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let dead = dead_owner(name.as_encoded_bytes(), TEMP_PREFIX) == Some(true);
        if dead && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// For a name made with `prefix` and its owner's tag: whether that owner is gone.
fn dead_owner(name: &[u8], prefix: &str) -> Option<bool> {
    let tail = name.strip_prefix(prefix.as_bytes())?;
    let tail = std::str::from_utf8(tail).unwrap_or("");
    // A name without an owner (made by an earlier jellysnap) has no live owner.
    let tag = tail.split('-').next().unwrap_or("");
    Some(crate::sys::owner_alive(tag) != Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_those_of_dead_owners_only() {
        let mine = crate::sys::owner_tag();
        let live = |prefix: &str, tail: &str| format!("{prefix}{mine}-{tail}");
        assert!(!is_restore_leftover(live(TEMP_PREFIX, "a1B2c3").as_bytes()));
        assert!(!is_restore_leftover(
            live(TEMP_PREFIX, "a1B2c3-journal").as_bytes()
        ));
        assert!(!is_restore_leftover(live(LINK_PREFIX, "7").as_bytes()));
        // The same pid with another start time is a process that has gone.
        let pid = std::process::id();
        let gone = format!("{TEMP_PREFIX}{pid}.1-a1B2c3");
        assert!(is_restore_leftover(gone.as_bytes()));
        // Names of an earlier jellysnap carry no owner.
        assert!(is_restore_leftover(b".jellysnap-restore-a1B2c3"));
        assert!(is_restore_leftover(b".jellysnap-link-4129-0"));
        assert!(is_restore_leftover(b".jellysnap-stale-jellyfin.db-wal"));
        assert!(!is_restore_leftover(INTENT_NAME.as_bytes()));
        assert!(!is_restore_leftover(b"jellyfin.db"));
    }
}
