//! Restore (DESIGN §7): plan first, then execute. The plan lists what is written, kept
//! and deleted; `--dry-run` prints it and stops.
//!
//! Files are written to a temp name in their directory and renamed over the final name,
//! so a reader never sees half a file. Deletions happen only inside the items of the
//! restored components (never outside them), and never at a path the backup could not
//! capture (a partial snapshot): the snapshot cannot say what belongs there, so such a
//! path and everything below it stays as it is. Next to every restored database the stale
//! `-wal`/`-shm`/`-journal` are removed: they belong to the replaced file. Everything is
//! synced with one syncfs per root at the end.
//!
//! Databases are all-or-nothing and go first: each one is rebuilt from its logical dump
//! (streamed from the verified chunks into `logical::rebuild`) or written from its
//! physical copy into a temp file beside its destination, and a rebuilt one is observed
//! and compared with the observation digest the backup proved (`jellyfin::observe`).
//! Only when every database is ready does anything else in the destination change; if
//! one cannot be restored, the temp files go and the restore fails with nothing touched.
//! Then each database is fsynced and renamed into place before any other file changes
//! (see `install_database` for how the replaced file's `-wal`/`-shm`/`-journal` are kept
//! from ever pairing with it). In place, a
//! database counts as unchanged when its own logical dump chunks to the snapshot's chunk
//! ids (physical copies: when its bytes do).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::format::chunker::Chunker;
use crate::format::id::ChunkId;
use crate::format::snapshot::{Component, DatabaseRecord, Snapshot};
use crate::format::tree::{ChunkRef, DbCapture, Entry, Node, Tree};
use crate::jellyfin::{capture, logical, running, Class, Selection};
use crate::ops::progress::Progress;
use crate::store::repo::Repository;

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
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RootMapping {
    pub label: String,
    pub from: String,
    #[serde(serialize_with = "lossy")]
    pub to: PathBuf,
}

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
    },
    Symlink {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
    },
    Keep {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
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
    },
    /// Left as it is: the backup could not capture this path.
    NotCaptured {
        #[serde(serialize_with = "lossy")]
        path: PathBuf,
    },
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
    #[serde(skip)]
    work: Vec<Work>,
}

#[derive(Debug, Clone)]
enum Work {
    Mkdir(PathBuf),
    Write {
        path: PathBuf,
        entry: Entry,
    },
    Symlink {
        path: PathBuf,
        target: Vec<u8>,
        entry: Entry,
    },
    Delete(PathBuf),
    RemoveSide(PathBuf),
    /// A database to write; `proof` is the observation digest (hex) the backup proved,
    /// with the SQLite version that proved it (or made the physical copy).
    Database {
        path: PathBuf,
        entry: Entry,
        proof: Option<String>,
        sqlite_version: Option<String>,
    },
    /// Nothing to do: a live path the backup could not capture.
    NotCaptured(PathBuf),
    /// Set a directory's mode, owner and mtime after its contents are in place.
    DirMeta {
        path: PathBuf,
        entry: Entry,
    },
    /// Fix mode/owner/mtime of a kept file that differs only in metadata.
    FileMeta {
        path: PathBuf,
        entry: Entry,
    },
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

pub fn plan(repo: &Repository, snap: &Snapshot, opts: &RestoreOptions) -> Result<RestorePlan> {
    let rec = &snap.record;
    let components: BTreeSet<Component> = match &opts.components {
        None => rec.components.iter().copied().collect(),
        Some(want) => {
            if want.is_empty() {
                return Err(Error::InvalidOption(
                    "--components names no component".into(),
                ));
            }
            if let Some(missing) = want.iter().find(|c| !rec.has_component(**c)) {
                return Err(Error::InvalidOption(format!(
                    "snapshot {} does not contain the {} component (it has: {})",
                    snap.id.short(),
                    missing.name(),
                    rec.components
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(",")
                )));
            }
            want.clone()
        }
    };
    let selection = Selection {
        roots: rec.roots.clone(),
        items: rec.items.clone(),
    }
    .restricted(&components);
    let roots: Vec<RootMapping> = rec
        .roots
        .iter()
        .map(|r| RootMapping {
            label: r.label.clone(),
            from: r.path.clone(),
            to: match &opts.destination {
                Destination::InPlace => PathBuf::from(&r.path),
                Destination::Target(t) if rec.roots.len() == 1 => t.clone(),
                Destination::Target(t) => t.join(&r.label),
            },
        })
        .collect();

    match &opts.destination {
        Destination::Target(t) => {
            if t.exists() && fs::read_dir(t).at(t)?.next().is_some() {
                return Err(Error::TargetNotEmpty(t.clone()));
            }
        }
        Destination::InPlace => {
            if !opts.force {
                running::ensure_stopped(Path::new(&rec.data_dir))?;
            }
        }
    }

    let root_tree = repo.load_tree(&rec.tree)?;
    let mut p = Planner {
        repo,
        databases: &rec.databases,
        selection: &selection,
        work: Vec::new(),
        db_physical_chunker: repo.db_physical_chunker(),
        db_chunker: repo.db_chunker(),
        not_captured: BTreeMap::new(),
    };
    for n in &rec.not_captured {
        p.not_captured
            .entry(n.root.clone())
            .or_default()
            .insert(n.rel.clone());
    }
    for m in &roots {
        let Some(Entry {
            node: Node::Dir { tree },
            ..
        }) = root_tree.find(m.label.as_bytes()).cloned()
        else {
            return Err(Error::corrupt(
                "snapshot",
                snap.id.to_hex(),
                format!("root {} missing from its tree", m.label),
            ));
        };
        let root_entry = root_tree.find(m.label.as_bytes()).cloned();
        if !m.to.is_dir() {
            p.work.push(Work::Mkdir(m.to.clone()));
        }
        let t = repo.load_tree(&tree)?;
        p.dir(&m.label, &t, &m.to, b"")?;
        if let Some(e) = root_entry {
            p.work.push(Work::DirMeta {
                path: m.to.clone(),
                entry: e,
            });
        }
    }
    let mut plan = RestorePlan {
        snapshot: snap.id.to_hex(),
        roots,
        components: components.into_iter().collect(),
        actions: Vec::new(),
        write_files: 0,
        write_bytes: 0,
        keep_files: 0,
        delete_paths: 0,
        not_captured: 0,
        work: Vec::new(),
    };
    for w in &p.work {
        let a = match w {
            Work::Mkdir(path) => Action::Mkdir { path: path.clone() },
            Work::Write { path, entry } => {
                plan.write_files += 1;
                plan.write_bytes += entry.size();
                Action::Write {
                    path: path.clone(),
                    size: entry.size(),
                }
            }
            Work::Symlink { path, .. } => {
                plan.write_files += 1;
                Action::Symlink { path: path.clone() }
            }
            Work::Delete(path) => {
                plan.delete_paths += 1;
                Action::Delete { path: path.clone() }
            }
            Work::RemoveSide(path) => {
                plan.delete_paths += 1;
                Action::RemoveSideFile { path: path.clone() }
            }
            Work::FileMeta { path, .. } => {
                plan.keep_files += 1;
                Action::Keep { path: path.clone() }
            }
            Work::Database {
                path,
                entry,
                proof,
                sqlite_version,
            } => {
                plan.write_files += 1;
                plan.write_bytes += entry.size();
                Action::Database {
                    path: path.clone(),
                    size: entry.size(),
                    capture: match &entry.node {
                        Node::File { database, .. } => *database,
                        _ => DbCapture::None,
                    },
                    verified_at_backup: proof.is_some(),
                    sqlite_version: sqlite_version.clone(),
                }
            }
            Work::NotCaptured(path) => {
                plan.not_captured += 1;
                Action::NotCaptured { path: path.clone() }
            }
            Work::DirMeta { .. } => continue,
        };
        plan.actions.push(a);
    }
    plan.work = p.work;
    Ok(plan)
}

struct Planner<'a> {
    repo: &'a Repository,
    databases: &'a [DatabaseRecord],
    selection: &'a Selection,
    work: Vec<Work>,
    db_physical_chunker: Chunker,
    db_chunker: Chunker,
    /// Root label -> paths (relative, lossy) the backup could not capture.
    not_captured: BTreeMap<String, BTreeSet<String>>,
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = rel.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

impl Planner<'_> {
    /// Is `rel`, or a directory above it, a path the backup could not capture? Names are
    /// compared lossily, as recorded: a collision only leaves one more path alone.
    fn not_captured(&self, root: &str, rel: &[u8]) -> bool {
        let Some(set) = self.not_captured.get(root) else {
            return false;
        };
        let rel = String::from_utf8_lossy(rel);
        set.contains("")
            || set.contains(rel.as_ref())
            || rel.match_indices('/').any(|(i, _)| set.contains(&rel[..i]))
    }

    fn dir(&mut self, root: &str, tree: &Tree, dest: &Path, rel: &[u8]) -> Result<()> {
        let existing: BTreeSet<Vec<u8>> = match fs::read_dir(dest) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().as_bytes().to_vec())
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        for e in &tree.entries {
            let child_rel = join_rel(rel, &e.name);
            if self.selection.classify(root, &child_rel) == Class::Skip {
                continue;
            }
            let path = dest.join(std::ffi::OsStr::from_bytes(&e.name));
            let mut cur = fs::symlink_metadata(&path).ok();
            // A directory of the snapshot that is a symlink to a directory at the
            // destination (metadata/ on another disk) is restored through the link.
            if matches!(e.node, Node::Dir { .. })
                && cur.as_ref().is_some_and(|m| m.file_type().is_symlink())
            {
                if let Ok(m) = fs::metadata(&path) {
                    if m.is_dir() && self.selection.is_anchor(root, &child_rel) {
                        cur = Some(m);
                    }
                }
            }
            if self.not_captured(root, &child_rel) {
                if cur.is_some() {
                    self.work.push(Work::NotCaptured(path));
                }
                continue;
            }
            match &e.node {
                Node::Dir { tree } => {
                    match &cur {
                        Some(m) if m.is_dir() => {}
                        Some(_) => {
                            self.work.push(Work::Delete(path.clone()));
                            self.work.push(Work::Mkdir(path.clone()));
                        }
                        None => self.work.push(Work::Mkdir(path.clone())),
                    }
                    let sub = self.repo.load_tree(tree)?;
                    self.dir(root, &sub, &path, &child_rel)?;
                    self.work.push(Work::DirMeta {
                        path,
                        entry: e.clone(),
                    });
                }
                Node::File { size, database, .. } => {
                    // Databases are compared by content: a live database can change in
                    // its WAL without touching the main file's mtime. Unreadable chunk
                    // lists count as "differs"; writing the file then reports the damage.
                    let chunks = || self.repo.file_chunks(&e.node).ok();
                    let rel_s = String::from_utf8_lossy(&child_rel);
                    let rec = self
                        .databases
                        .iter()
                        .find(|d| d.root == root && d.rel == rel_s);
                    let proof = rec.and_then(|d| d.verified.clone());
                    let same = match (&cur, database) {
                        (Some(m), DbCapture::None) if m.is_file() => {
                            m.size() == *size
                                && m.mtime() * 1_000_000_000 + m.mtime_nsec() == e.mtime_ns
                        }
                        (Some(m), DbCapture::Physical) if m.is_file() => {
                            m.size() == *size
                                && chunks().is_some_and(|c| {
                                    same_content(&path, &c, &self.db_physical_chunker)
                                })
                        }
                        // What the backup proved, seen again: a live database whose
                        // rows dump the same but whose index is damaged is not unchanged.
                        (Some(m), DbCapture::Logical) if m.is_file() => match &proof {
                            Some(p) => same_observed(&path, p),
                            None => {
                                chunks().is_some_and(|c| same_logical(&path, &c, &self.db_chunker))
                            }
                        },
                        _ => false,
                    };
                    if cur.as_ref().is_some_and(|m| m.is_dir()) {
                        // A directory where the snapshot has a file: empty it (within
                        // scope), then remove it.
                        self.extra(root, &path, &child_rel);
                    }
                    if same {
                        self.work.push(Work::FileMeta {
                            path: path.clone(),
                            entry: e.clone(),
                        });
                    } else if database.is_database() {
                        self.work.push(Work::Database {
                            path: path.clone(),
                            entry: e.clone(),
                            proof,
                            sqlite_version: rec.map(|d| d.sqlite_version.clone()),
                        });
                    } else {
                        self.work.push(Work::Write {
                            path: path.clone(),
                            entry: e.clone(),
                        });
                    }
                    if database.is_database() {
                        for suffix in ["-wal", "-shm", "-journal"] {
                            let mut side = path.clone().into_os_string();
                            side.push(suffix);
                            let side = PathBuf::from(side);
                            if fs::symlink_metadata(&side).is_ok() {
                                self.work.push(Work::RemoveSide(side));
                            }
                        }
                    }
                }
                Node::Symlink { target } => {
                    let same = cur.as_ref().is_some_and(|m| m.file_type().is_symlink())
                        && fs::read_link(&path)
                            .map(|t| t.as_os_str().as_bytes() == target.as_slice())
                            .unwrap_or(false);
                    if !same {
                        if cur.as_ref().is_some_and(|m| m.is_dir()) {
                            self.extra(root, &path, &child_rel);
                        }
                        self.work.push(Work::Symlink {
                            path,
                            target: target.clone(),
                            entry: e.clone(),
                        });
                    }
                }
            }
        }
        // Extra files inside the restored items go; everything else stays.
        for name in existing {
            if tree.find(&name).is_some() {
                continue;
            }
            if is_restore_leftover(&name) {
                self.work
                    .push(Work::Delete(dest.join(std::ffi::OsStr::from_bytes(&name))));
                continue;
            }
            self.extra(
                root,
                &dest.join(std::ffi::OsStr::from_bytes(&name)),
                &join_rel(rel, &name),
            );
        }
        Ok(())
    }

    fn extra(&mut self, root: &str, path: &Path, rel: &[u8]) {
        match self.selection.classify(root, rel) {
            Class::Skip => {}
            _ if self.not_captured(root, rel) => {
                self.work.push(Work::NotCaptured(path.to_path_buf()));
            }
            class => {
                let is_dir = fs::symlink_metadata(path)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if is_dir {
                    if let Ok(rd) = fs::read_dir(path) {
                        let mut names: Vec<Vec<u8>> = rd
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().as_bytes().to_vec())
                            .collect();
                        names.sort();
                        for n in names {
                            self.extra(
                                root,
                                &path.join(std::ffi::OsStr::from_bytes(&n)),
                                &join_rel(rel, &n),
                            );
                        }
                    }
                    if matches!(class, Class::Include(_)) {
                        self.work.push(Work::Delete(path.to_path_buf()));
                    }
                } else if matches!(class, Class::Include(_)) {
                    self.work.push(Work::Delete(path.to_path_buf()));
                }
            }
        }
    }
}

/// Does the file at `path` hold exactly these chunks?
fn same_content(path: &Path, chunks: &[ChunkRef], chunker: &Chunker) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    same_chunks(&mut f, chunks, chunker)
}

/// Does `r` chunk into exactly `chunks`? Stops reading at the first difference.
fn same_chunks(r: &mut impl Read, chunks: &[ChunkRef], chunker: &Chunker) -> bool {
    let mut buf = Vec::new();
    let mut i = 0usize;
    let res = chunker.chunk_reader(r, &mut buf, |data| {
        if chunks.get(i).map(|c| c.id) != Some(ChunkId::of(data)) {
            return Err(());
        }
        i += 1;
        Ok(())
    });
    i == chunks.len() && matches!(res, Ok(Ok(_)))
}

/// Does the database at `path` dump (logically) to exactly these chunks? The server is
/// stopped for an in-place restore; a database with a non-empty `-wal` or a `-journal`
/// beside it differs by definition (restore removes those side files, so the main file
/// alone would have to match), and the main file is then read as immutable: SQLite
/// creates no `-wal`/`-shm` and takes no lock, so looking (a dry run) changes nothing.
fn same_logical(path: &Path, chunks: &[ChunkRef], chunker: &Chunker) -> bool {
    let Some(wal) = stopped_main_file(path) else {
        return false;
    };
    let intact = capture::open_immutable(path).is_ok_and(|c| {
        c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .is_ok_and(|v| v == "ok")
    });
    if !intact {
        return false;
    }
    let Ok((mut reader, mut writer)) = std::io::pipe() else {
        return false;
    };
    let db = path.to_path_buf();
    // The dump streams through a pipe into the chunker: no copy of it is kept.
    let Ok(dumper) = std::thread::Builder::new()
        .name("jellysnap-compare".into())
        .spawn(move || -> bool {
            let Ok(conn) = capture::open_immutable(&db) else {
                return false;
            };
            logical::dump_as(&conn, &mut writer, Some(wal)).is_ok()
        })
    else {
        return false;
    };
    let same = same_chunks(&mut reader, chunks, chunker);
    drop(reader); // a dumper still writing gets EPIPE and stops
    let dumped = dumper.join().unwrap_or(false);
    same && dumped
}

/// For a database that only its main file describes (no non-empty `-wal`, no
/// `-journal`): whether it is in WAL mode. File format bytes 18-19 are 2 in a WAL-mode
/// database; read with plain I/O, as this process holds no SQLite connection (and so no
/// lock) to it.
fn stopped_main_file(path: &Path) -> Option<bool> {
    if fs::symlink_metadata(side_path(path, "-wal")).is_ok_and(|m| m.len() > 0)
        || fs::symlink_metadata(side_path(path, "-journal")).is_ok()
    {
        return None;
    }
    let mut header = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .ok()?;
    Some(header[18] == 2)
}

/// Does the live database at `path` show exactly the observation (digest, hex) its
/// backup proved? Read as immutable, like `same_logical`.
fn same_observed(path: &Path, proof: &str) -> bool {
    let Some(wal) = stopped_main_file(path) else {
        return false;
    };
    let Ok(conn) = capture::open_immutable(path) else {
        return false;
    };
    crate::jellyfin::observe::observe_as(&conn, Some(wal))
        .is_ok_and(|o| crate::format::id::hex(&o.digest()) == proof)
}

/// The bytes of a file's chunks as one stream, each chunk verified by `read_chunk`. The
/// first repository error is kept in `err` (the reader returns an I/O error to its
/// caller, which cannot carry it).
struct ChunkStream<'a> {
    repo: &'a Repository,
    chunks: std::slice::Iter<'a, ChunkRef>,
    cur: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    scratch: Vec<u8>,
    err: Option<Error>,
    progress: &'a dyn Progress,
}

impl Read for ChunkStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            let Some(c) = self.chunks.next() else {
                return Ok(0);
            };
            match self
                .repo
                .read_chunk(&c.id, &mut self.out, &mut self.scratch)
            {
                Ok(bytes) => {
                    self.cur.clear();
                    self.cur.extend_from_slice(bytes);
                    self.pos = 0;
                    self.progress.advance(bytes.len() as u64);
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.err = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A database made ready beside its destination, waiting to be renamed into place.
struct Prepared {
    path: PathBuf,
    tmp: tempfile::TempPath,
    bytes: u64,
}

/// A new temp name in `path`'s directory (created if missing: making a directory
/// destroys nothing).
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
    tempfile::Builder::new()
        .prefix(".jellysnap-restore-")
        .tempfile_in(dir)
        .at(dir)
}

/// Rebuild a logically captured database into a temp file next to `path` and prove it:
/// when the backup recorded an observation digest, the rebuilt file must show exactly
/// that (else it would not be the database that was backed up).
fn rebuild_beside(
    repo: &Repository,
    path: &Path,
    chunks: &[ChunkRef],
    proof: Option<&str>,
    progress: &dyn Progress,
) -> Result<tempfile::TempPath> {
    let fail = |detail: String| Error::DatabaseRestore {
        path: path.to_path_buf(),
        snapshot: String::new(),
        detail,
    };
    let tmp = temp_beside(path)?.into_temp_path();
    // rebuild() creates the file itself; the reserved name is ours until the rename.
    fs::remove_file(&tmp).at(&tmp)?;
    let mut stream = ChunkStream {
        repo,
        chunks: chunks.iter(),
        cur: Vec::new(),
        pos: 0,
        out: Vec::new(),
        scratch: Vec::new(),
        err: None,
        progress,
    };
    let built = logical::rebuild(&mut stream, &tmp);
    capture::remove_side_files(&tmp);
    if let Err(e) = built {
        return Err(match (stream.err.take(), e) {
            (Some(chunk_err), _) => chunk_err,
            (None, logical::LogicalError::Io(io)) => Error::io(path, io),
            (None, e) => fail(format!(
                "its logical dump does not rebuild with SQLite {}: {e}",
                capture::sqlite_version()
            )),
        });
    }
    if let Some(want) = proof {
        let seen = capture::observe_file(&tmp);
        capture::remove_side_files(&tmp);
        let seen =
            seen.map_err(|e| fail(format!("the rebuilt database cannot be read back: {e}")))?;
        if crate::format::id::hex(&seen.digest()) != want {
            return Err(fail(format!(
                "the database rebuilt with SQLite {} is not the one the backup verified",
                capture::sqlite_version()
            )));
        }
    }
    Ok(tmp)
}

/// Rebuild the logical dump in `node` in scratch space (a temp file in `scratch`) and, when
/// `proof` is given, compare it with the observation the backup proved; the rebuilt file
/// is removed again. This is what an in-place restore would do first.
pub fn try_rebuild(
    repo: &Repository,
    node: &Node,
    proof: Option<&str>,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let chunks = repo.file_chunks(node)?;
    let tmp = rebuild_beside(repo, &scratch.join("check.db"), &chunks, proof, progress)?;
    drop(tmp);
    Ok(())
}

/// Write a file's chunks (each verified by its id) into a temp file next to `path`.
fn fill_beside(
    repo: &Repository,
    path: &Path,
    chunks: &[ChunkRef],
    progress: &dyn Progress,
) -> Result<(tempfile::TempPath, u64)> {
    let mut tmp = temp_beside(path)?;
    thread_local! {
        static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    let n = BUFS.with(|cell| -> Result<u64> {
        let (buf, scratch) = &mut *cell.borrow_mut();
        let mut n = 0u64;
        for c in chunks {
            let bytes = repo.read_chunk(&c.id, buf, scratch)?;
            tmp.write_all(bytes).at(path)?;
            n += bytes.len() as u64;
            progress.advance(bytes.len() as u64);
        }
        Ok(n)
    })?;
    tmp.as_file().flush().at(path)?;
    Ok((tmp.into_temp_path(), n))
}

/// Make one database ready beside its destination: content, metadata, durable.
fn prepare_database(
    repo: &Repository,
    path: &Path,
    entry: &Entry,
    proof: Option<&str>,
    is_root: bool,
    progress: &dyn Progress,
) -> Result<Prepared> {
    let Node::File { database, .. } = &entry.node else {
        return Err(Error::corrupt(
            "tree",
            path.display().to_string(),
            "a database entry that is not a file",
        ));
    };
    let chunks = repo.file_chunks(&entry.node)?;
    let (tmp, bytes) = if *database == DbCapture::Logical {
        let tmp = rebuild_beside(repo, path, &chunks, proof, progress)?;
        let n = fs::metadata(&tmp).at(&tmp)?.len();
        (tmp, n)
    } else {
        fill_beside(repo, path, &chunks, progress)?
    };
    set_meta(&tmp, entry, is_root).at(path)?;
    // The database is the one file a rollback cannot do without: durable before the
    // rename, not left to the final syncfs.
    File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp)?;
    Ok(Prepared {
        path: path.to_path_buf(),
        tmp,
        bytes,
    })
}

/// Carry out a plan (runs in the I/O thread pool, see `parallel`).
pub fn execute(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    crate::ops::parallel::in_io_pool(|| execute_in_pool(repo, plan, progress))
}

/// Every database of the plan, ready beside its destination; the first failure ends the
/// restore before anything in the destination changed (the temp files are removed).
fn prepare_databases(
    repo: &Repository,
    plan: &RestorePlan,
    is_root: bool,
    progress: &dyn Progress,
) -> Result<Vec<Prepared>> {
    // Directories a temp file needs are made here; on failure they go again (empty), so
    // a failed restore into a new target leaves no target behind.
    let mut made: Vec<PathBuf> = Vec::new();
    let mut ready = Vec::new();
    for w in &plan.work {
        let Work::Database {
            path, entry, proof, ..
        } = w
        else {
            continue;
        };
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            made.push(d.to_path_buf());
            dir = d.parent();
        }
        match prepare_database(repo, path, entry, proof.as_deref(), is_root, progress) {
            Ok(p) => ready.push(p),
            Err(e) => {
                drop(ready);
                made.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                for d in &made {
                    let _ = fs::remove_dir(d);
                }
                return Err(database_error(plan, path, e));
            }
        }
    }
    Ok(ready)
}

/// A database step's failure as the restore reports it (exit code 19).
fn database_error(plan: &RestorePlan, path: &Path, e: Error) -> Error {
    let detail = match e {
        Error::DatabaseRestore { detail, .. } => detail,
        e => e.to_string(),
    };
    Error::DatabaseRestore {
        path: path.to_path_buf(),
        snapshot: plan.snapshot.get(..8).unwrap_or(&plan.snapshot).to_string(),
        detail,
    }
}

fn side_path(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// Temp names a restore makes beside what it restores: its own leftovers when a restore
/// was killed (removed by the next one).
fn is_restore_leftover(name: &[u8]) -> bool {
    name.starts_with(b".jellysnap-restore-") || name.starts_with(b".jellysnap-stale-")
}

/// Put a prepared database in place. SQLite pairs a `-wal` or `-journal` with whatever
/// database file sits beside it, so the replaced file's side files are first renamed
/// aside (never removed before the new database is in place), then the database is
/// renamed in, and only then are the set-aside files removed. A crash at any point
/// leaves the old database (its side files under `.jellysnap-stale-*`, which the next
/// restore removes) or the new one without them; never the new one with the old WAL.
/// If the rename fails, the side files go back and nothing has changed.
fn install_database(db: Prepared) -> Result<u64> {
    let dir = crate::store::durable::parent_dir(&db.path).to_path_buf();
    let name = db
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut aside: Vec<(PathBuf, PathBuf)> = Vec::new();
    let put_back = |aside: &[(PathBuf, PathBuf)]| {
        for (side, to) in aside.iter().rev() {
            let _ = fs::rename(to, side);
        }
        let _ = crate::store::durable::sync_dir(&dir);
    };
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = side_path(&db.path, suffix);
        if fs::symlink_metadata(&side).is_err() {
            continue;
        }
        let to = dir.join(format!(".jellysnap-stale-{name}{suffix}"));
        if let Err(e) = fs::rename(&side, &to) {
            put_back(&aside);
            return Err(Error::io(&side, e));
        }
        aside.push((side, to));
    }
    if !aside.is_empty() {
        crate::store::durable::sync_dir(&dir)?;
    }
    if let Err(e) = db.tmp.persist(&db.path) {
        put_back(&aside);
        return Err(Error::io(&db.path, e.error));
    }
    crate::store::durable::sync_dir(&dir)?;
    crate::crashpoint::hit("restore-after-db-rename");
    for (_, to) in &aside {
        fs::remove_file(to).at(to)?;
    }
    if !aside.is_empty() {
        crate::store::durable::sync_dir(&dir)?;
    }
    Ok(db.bytes)
}

fn execute_in_pool(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    progress.phase("restoring", Some(plan.write_bytes));
    let is_root = crate::sys::is_root();
    let databases = prepare_databases(repo, plan, is_root, progress)?;
    let errors = Mutex::new(Vec::new());
    let written = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let mut report = RestoreReport::default();
    // The databases go in first: if one cannot be renamed into place, nothing else has
    // changed yet.
    for db in databases {
        let path = db.path.clone();
        let n = install_database(db).map_err(|e| database_error(plan, &path, e))?;
        written.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(n, Ordering::Relaxed);
    }
    // Then deletions and directories (in plan order: parents before children for mkdir,
    // children before parents for delete), then files in parallel, then directory
    // metadata.
    for w in &plan.work {
        match w {
            Work::Delete(p) => {
                let r = match fs::symlink_metadata(p) {
                    // Only empty directories go: what is left inside is outside the
                    // restored components (an excluded cache, a stray -wal) and stays.
                    Ok(m) if m.is_dir() => match fs::remove_dir(p) {
                        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
                        r => r,
                    },
                    Ok(_) => fs::remove_file(p),
                    Err(_) => Ok(()),
                };
                r.at(p)?;
                report.deleted += 1;
            }
            Work::Mkdir(p) => fs::create_dir_all(p).at(p)?,
            _ => {}
        }
    }
    let files: Vec<&Work> = plan
        .work
        .iter()
        .filter(|w| matches!(w, Work::Write { .. } | Work::Symlink { .. }))
        .collect();
    files.par_iter().try_for_each(|w| -> Result<()> {
        let r = match w {
            Work::Write { path, entry } => {
                write_file(repo, path, entry, is_root, progress).map(|n| {
                    bytes.fetch_add(n, Ordering::Relaxed);
                })
            }
            Work::Symlink {
                path,
                target,
                entry,
            } => write_symlink(path, target, entry, is_root),
            _ => Ok(()),
        };
        match r {
            Ok(()) => {
                written.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // Damaged data or a failing file: restore everything else, name this one.
            Err(
                e @ (Error::Corrupt { .. }
                | Error::ChunkMissing { .. }
                | Error::PackMissing { .. }
                | Error::Io { .. }),
            ) => {
                let path = match w {
                    Work::Write { path, .. } | Work::Symlink { path, .. } => {
                        path.display().to_string()
                    }
                    _ => String::new(),
                };
                let msg = format!("{path}: {e}");
                progress.warn(&msg);
                errors
                    .lock()
                    .map_err(|_| Error::internal("restore error list poisoned"))?
                    .push(msg);
                Ok(())
            }
            Err(e) => Err(e),
        }
    })?;
    // Stale side files of databases that were unchanged (those of installed ones are gone).
    for w in &plan.work {
        match w {
            Work::RemoveSide(p) => {
                match fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(p, e)),
                }
                report.deleted += 1;
            }
            Work::FileMeta { path, entry } => {
                set_meta(path, entry, is_root).at(path)?;
                report.files_kept += 1;
            }
            _ => {}
        }
    }
    // Directory metadata deepest-first (the plan lists a directory after its contents).
    for w in &plan.work {
        if let Work::DirMeta { path, entry } = w {
            set_meta(path, entry, is_root).at(path)?;
        }
    }
    for m in &plan.roots {
        if let Ok(f) = File::open(&m.to) {
            crate::sys::syncfs(&f).at(&m.to)?;
        }
    }
    report.files_written = written.into_inner();
    report.bytes_written = bytes.into_inner();
    report.errors = errors
        .into_inner()
        .map_err(|_| Error::internal("restore error list poisoned"))?;
    progress.finish();
    Ok(report)
}

fn write_file(
    repo: &Repository,
    path: &Path,
    entry: &Entry,
    is_root: bool,
    progress: &dyn Progress,
) -> Result<u64> {
    let chunks = repo.file_chunks(&entry.node)?;
    let (tmp, n) = fill_beside(repo, path, &chunks, progress)?;
    if let Ok(f) = File::open(&tmp) {
        crate::sys::start_writeback(&f);
    }
    set_meta(&tmp, entry, is_root).at(path)?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(n)
}

fn write_symlink(path: &Path, target: &[u8], entry: &Entry, is_root: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // Links are written in parallel: each needs its own temp name (regression: two
    // symlinks in one directory raced on a per-process name).
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".jellysnap-link-{}-{n}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &tmp).at(&tmp)?;
    if is_root {
        std::os::unix::fs::lchown(&tmp, Some(entry.uid), Some(entry.gid)).at(&tmp)?;
    }
    let t = filetime::FileTime::from_unix_time(
        entry.mtime_ns.div_euclid(1_000_000_000),
        entry.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(&tmp, t, t).at(&tmp)?;
    fs::rename(&tmp, path).at(path)
}

fn set_meta(path: &Path, entry: &Entry, is_root: bool) -> std::io::Result<()> {
    if is_root {
        std::os::unix::fs::lchown(path, Some(entry.uid), Some(entry.gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode))?;
    let t = filetime::FileTime::from_unix_time(
        entry.mtime_ns.div_euclid(1_000_000_000),
        entry.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_file_times(path, t, t)
}
