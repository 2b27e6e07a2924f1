//! Database captures of a backup. Each database of the selection is captured on its own
//! thread while the walk runs; the walk waits for a capture only when it reaches that
//! database, and keeps the capture's temp file until the backup ends.
//!
//! A database whose files are in exactly the state the parent snapshot's capture
//! recorded (`jellyfin::dbstate`: a stat of the file and its `-wal`, the header's change
//! counter, all settled before that capture began) is not captured: the snapshot reuses
//! the parent's dump and proof. One that is captured anyway reuses the parent's proof when
//! its dump and observation equal the proven ones (`capture::dump_and_prove`). Either
//! needs the same dump version, observation version and SQLite as the parent's proof;
//! anything short of that is captured and proven in full.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use super::tally::Tally;
use crate::error::{Error, Result};
use crate::format::config::DbCaptureMode;
use crate::format::dump;
use crate::format::snapshot::{
    Component, DatabaseRecord, DbReuse, DbSourceState, DumpProof, Snapshot,
};
use crate::format::tree::{DbCapture, Entry, Node, Tree};
use crate::jellyfin::{self, capture, dbstate, observe, Source};
use crate::ops::progress::Progress;
use crate::store::repo::Repository;

/// The directory of the repository's local state where each database's last proven
/// rebuild is kept (`jellyfin::kept`).
pub const REBUILDS_DIR: &str = "rebuilds";

/// The captures of one backup, by the database's path in the source.
pub(super) struct Captures {
    slots: HashMap<PathBuf, DbSlot>,
}

/// A database being captured, and where it sits in the selection.
struct DbSlot {
    root: String,
    rel: String,
    /// A plugin's database, not Jellyfin's own: one that cannot be captured is left out
    /// of the snapshot and said so (a partial backup), rather than ending the backup.
    plugin: bool,
    state: Mutex<Capture>,
    early: Arc<Early>,
}

/// A logical dump handed to the walk as soon as it is written, while its proof runs:
/// the walk chunks it meanwhile, and keeps those chunks only if the proof holds. The
/// proof (a rebuild and its observation) is most of a changed database's time, and the
/// walk would otherwise wait for it and then chunk the dump after it.
struct Early {
    state: Mutex<EarlyState>,
    given: Condvar,
}

enum EarlyState {
    Waiting,
    Dump(Arc<tempfile::TempPath>),
    /// No dump comes before the capture ends (a physical capture, a refused dump, a
    /// failure, a dump whose earlier proof is being reused).
    Nothing,
}

impl Early {
    fn new(state: EarlyState) -> Arc<Self> {
        Arc::new(Early {
            state: Mutex::new(state),
            given: Condvar::new(),
        })
    }

    fn give(&self, state: EarlyState) {
        if let Ok(mut s) = self.state.lock() {
            if matches!(*s, EarlyState::Waiting) {
                *s = state;
            }
            self.given.notify_all();
        }
    }
}

/// Gives the walk `Nothing` when the capture thread ends without a dump to give early,
/// however it ends (an error, a panic).
struct NothingEarly(Arc<Early>);

impl Drop for NothingEarly {
    fn drop(&mut self) {
        self.0.give(EarlyState::Nothing);
    }
}

enum Capture {
    Running(std::thread::JoinHandle<Result<CapturedDb>>),
    /// Finished, not yet in the tally.
    Ready(CapturedDb),
    /// In the tally; its temp file is kept until the backup ends.
    Done(CapturedDb),
    Taken,
}

/// A finished database capture.
struct CapturedDb {
    content: Content,
    kind: DbCapture,
    /// Why a logical capture fell back to the physical copy.
    fallback: Option<String>,
    /// The source's observation digest, which the rebuilt dump was shown to equal.
    verified: Option<[u8; 32]>,
    /// For a logical capture: what its proof covers.
    dump: Option<DumpProof>,
    /// The source's files, when they were settled and unchanged during the capture.
    source: Option<DbSourceState>,
    reused: Option<DbReuse>,
    /// The Jellyfin versions `jellyfin.db`'s migrations allow.
    version: Option<jellyfin::version::Range>,
    /// The database file's size as captured (the online backup copy's).
    size: Option<u64>,
    /// For a logical capture: how its proof's rebuild was made (`None`: none was).
    rebuild: Option<capture::Rebuild>,
}

/// What a capture holds.
enum Content {
    /// A temp file holding a logical dump or a physical copy.
    File(Arc<tempfile::TempPath>),
    /// The parent snapshot's node: the database is as it was then.
    Parent(Node),
}

impl Content {
    fn share(&self) -> Captured {
        match self {
            Content::File(f) => Captured::File(f.to_path_buf()),
            Content::Parent(n) => Captured::Parent(n.clone()),
        }
    }
}

/// What a capture gives the walk.
pub(super) enum Captured {
    /// A file to chunk (kept until the backup ends).
    File(PathBuf),
    /// The node to store as it is.
    Parent(Node),
}

/// The parent snapshot's proven logical capture of one database, when this jellysnap
/// could have made it (same dump, observation and SQLite versions).
struct ParentCapture {
    record: DatabaseRecord,
    proven: capture::Proven,
    /// Its tree entry's node.
    node: Option<Node>,
}

/// Where a backup takes earlier captures from: the parent snapshot and its root tree.
pub(super) struct Parent<'a> {
    pub(super) snapshot: &'a Snapshot,
    pub(super) root: &'a Tree,
}

impl Captures {
    /// Start capturing every database of the selection, except those the parent
    /// snapshot holds unchanged. `time_ns` is the backup's start: files changed within
    /// the timestamp granularity before it are not recorded as settled.
    pub(super) fn start(
        repo: &Repository,
        source: &Source,
        parent: Option<&Parent>,
        time_ns: i64,
    ) -> Result<Self> {
        let mut slots = HashMap::new();
        let rebuilds = repo.state_dir().join(REBUILDS_DIR);
        // The data dir whose backups keep the rebuilds of these databases.
        let owner = std::fs::canonicalize(&source.data_dir)
            .unwrap_or_else(|_| source.data_dir.clone())
            .to_string_lossy()
            .into_owned();
        let mut keys = std::collections::HashSet::new();
        let databases = source
            .selection
            .items
            .iter()
            .filter(|i| i.component == Component::Database);
        let mode = repo.config().db_capture;
        for item in databases {
            let Some(root) = source.selection.root_path(&item.root) else {
                continue;
            };
            let path = Path::new(root).join(&item.rel);
            // A database linked into the data dir is read where it lives: its -wal and
            // -shm sit beside the link's target, not beside the link.
            let src = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            // Known by its place in the data dir (or database.xml's), not by its name: the
            // link's target may be named otherwise, and a plugin's folder may hold a file
            // of the same name.
            let is_jellyfin_db = path == source.jellyfin_db;
            let plugin = !is_jellyfin_db && path != source.data_dir.join("data/library.db");
            // One database reached by two paths (a link to another one in the selection)
            // is captured twice: only the first capture has its slot, so that no two
            // threads ever change one kept rebuild.
            let own_slot = keys.insert(jellyfin::kept::Kept::key(&src.to_string_lossy()));
            let earlier = match (mode, parent) {
                (DbCaptureMode::Logical, Some(p)) => {
                    parent_capture(repo, p, &item.root, &item.rel)?
                }
                _ => None,
            };
            let early = Early::new(EarlyState::Waiting);
            let state = match earlier.as_ref().and_then(|e| unchanged(e, &src)) {
                Some(db) => {
                    early.give(EarlyState::Nothing);
                    Capture::Ready(db)
                }
                None => {
                    let tmp_dir = repo.tmp_dir();
                    let (proven, parent_dump) = match earlier {
                        Some(e) => (Some(e.proven), e.node),
                        None => (None, None),
                    };
                    let job = Job {
                        is_jellyfin_db,
                        plugin,
                        mode,
                        settled_before_ns: time_ns - super::TIMESTAMP_GRANULARITY_NS,
                    };
                    // Where the last proof's rebuild of this database is kept, by the
                    // path it is read at (two data dirs backed up into one repository
                    // each have their own).
                    let kept = own_slot.then(|| {
                        jellyfin::kept::Kept::new(&rebuilds, &src.to_string_lossy(), &owner)
                    });
                    let nothing = NothingEarly(Arc::clone(&early));
                    let handle = std::thread::Builder::new()
                        .name("jellysnap-db-capture".into())
                        .spawn(move || {
                            let early = Arc::clone(&nothing.0);
                            let on = move |stage: capture::Stage<'_>| match stage {
                                capture::Stage::Written(d) => {
                                    early.give(EarlyState::Dump(Arc::clone(&d.file)))
                                }
                                capture::Stage::Proven => {
                                    #[cfg(feature = "test-hooks")]
                                    crate::store::testing::point("backup-db-proven");
                                }
                            };
                            let earlier = proven.as_ref().map(|p| (p, parent_dump));
                            capture_db(&src, &tmp_dir, job, earlier, kept.as_ref(), &on)
                        })
                        .map_err(|e| {
                            let at = path.display();
                            Error::internal(format!(
                                "cannot start the capture thread for {at}: {e}"
                            ))
                        })?;
                    Capture::Running(handle)
                }
            };
            let slot = DbSlot {
                root: item.root.clone(),
                rel: item.rel.clone(),
                plugin,
                state: Mutex::new(state),
                early,
            };
            slots.insert(path, slot);
        }
        // Of this data dir, only this backup's databases keep a rebuild: one that is gone
        // (a plugin removed) leaves no copy behind. Another data dir backed up into this
        // repository keeps its own while its database is there (one moved away leaves
        // none); `gc` removes those no snapshot's proof holds.
        jellyfin::kept::prune(&rebuilds, |slot| {
            keys.contains(slot.key)
                || slot.owner.is_some_and(|o| o != owner) && slot.path.is_some_and(still_a_database)
        });
        Ok(Captures { slots })
    }

    pub(super) fn contains(&self, path: &Path) -> bool {
        self.slots.contains_key(path)
    }

    /// Whether the database at `path` is a plugin's rather than Jellyfin's own.
    pub(super) fn is_plugin(&self, path: &Path) -> bool {
        self.slots.get(path).is_some_and(|s| s.plugin)
    }

    /// The paths of all databases being captured.
    pub(super) fn paths(&self) -> Vec<PathBuf> {
        self.slots.keys().cloned().collect()
    }

    /// Wait until the capture of `path` either has a logical dump to prove, written and
    /// not yet proven (see [`Early`]), or has ended. The dump is the one [`Captures::wait`]
    /// gives (a path equal to its `Captured::File`) only if the proof holds.
    pub(super) fn early_dump(&self, path: &Path) -> Result<Option<Arc<tempfile::TempPath>>> {
        let at = path.display();
        let slot = self
            .slots
            .get(path)
            .ok_or_else(|| Error::internal(format!("no capture was started for {at}")))?;
        let poisoned = || Error::internal(format!("the capture state of {at} is poisoned"));
        let mut s = slot.early.state.lock().map_err(|_| poisoned())?;
        while matches!(*s, EarlyState::Waiting) {
            s = slot.early.given.wait(s).map_err(|_| poisoned())?;
        }
        Ok(match &*s {
            EarlyState::Dump(d) => Some(Arc::clone(d)),
            _ => None,
        })
    }

    /// Wait for the capture of `path` and return what it gives the walk. The first wait
    /// records the capture in `tally` (and warns about a physical fallback).
    pub(super) fn wait(
        &self,
        path: &Path,
        progress: &dyn Progress,
        tally: &mut Tally,
    ) -> Result<(Captured, DbCapture)> {
        let at = path.display();
        let slot = self
            .slots
            .get(path)
            .ok_or_else(|| Error::internal(format!("no capture was started for {at}")))?;
        let mut state = slot
            .state
            .lock()
            .map_err(|_| Error::internal(format!("the capture state of {at} is poisoned")))?;
        if let Capture::Running(_) = &*state {
            let Capture::Running(h) = std::mem::replace(&mut *state, Capture::Taken) else {
                return Err(Error::internal(format!("the capture of {at} was lost")));
            };
            let db = h
                .join()
                .map_err(|_| failed(path, "capture thread panicked"))??;
            *state = Capture::Ready(db);
        }
        if let Capture::Ready(_) = &*state {
            let Capture::Ready(db) = std::mem::replace(&mut *state, Capture::Taken) else {
                return Err(Error::internal(format!("the capture of {at} was lost")));
            };
            record(slot, path, &db, progress, tally);
            *state = Capture::Done(db);
        }
        match &*state {
            Capture::Done(db) => Ok((db.content.share(), db.kind)),
            _ => Err(failed(path, "capture failed earlier")),
        }
    }

    /// The Jellyfin versions read from a finished capture of `jellyfin.db`.
    pub(super) fn jellyfin_version(&self) -> Result<Option<jellyfin::version::Range>> {
        for (path, slot) in &self.slots {
            let state = slot.state.lock().map_err(|_| {
                let at = path.display();
                Error::internal(format!("the capture state of {at} is poisoned"))
            })?;
            if let Capture::Done(CapturedDb {
                version: Some(v), ..
            }) = &*state
            {
                return Ok(Some(*v));
            }
        }
        Ok(None)
    }
}

impl Drop for Captures {
    /// A backup that ends early (a full disk, say) waits for the captures still running,
    /// so that their temp files are removed before it exits, as its error says.
    fn drop(&mut self) {
        for slot in self.slots.values() {
            let running = match slot.state.lock() {
                Ok(mut state) => match std::mem::replace(&mut *state, Capture::Taken) {
                    Capture::Running(h) => Some(h),
                    other => {
                        *state = other;
                        None
                    }
                },
                Err(_) => None,
            };
            if let Some(h) = running {
                let _ = h.join();
            }
        }
    }
}

fn failed(path: &Path, detail: &str) -> Error {
    Error::DatabaseCapture {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Note a finished capture in the tally: its database record, and its fallback if any.
fn record(slot: &DbSlot, path: &Path, db: &CapturedDb, progress: &dyn Progress, tally: &mut Tally) {
    if let Some(why) = &db.fallback {
        let msg = format!("{}: captured physically ({why})", path.display());
        progress.warn(&msg);
        tally.db_physical.push(msg);
    }
    if db.kind == DbCapture::Logical {
        tally.proofs.push(super::tally::DbProof {
            database: format!("{}/{}", slot.root, slot.rel),
            rebuild: match db.rebuild {
                None | Some(capture::Rebuild::Reused) => "none",
                Some(capture::Rebuild::Whole) => "whole",
                Some(capture::Rebuild::Updated) => "updated",
            },
        });
    }
    tally.databases.push(DatabaseRecord {
        root: slot.root.clone(),
        rel: slot.rel.clone(),
        capture: db.kind,
        reason: db.fallback.clone(),
        verified: db.verified.map(|d| crate::id::hex(&d)),
        sqlite_version: capture::sqlite_version().to_string(),
        dump: db.dump.clone(),
        source: db.source.clone(),
        reused: db.reused,
        size: db.size,
    });
}

/// The parent snapshot's capture of the database at `root`/`rel`, when it is a proven
/// logical one whose proof this jellysnap would make the same way.
fn parent_capture(
    repo: &Repository,
    parent: &Parent,
    root: &str,
    rel: &str,
) -> Result<Option<ParentCapture>> {
    let Some(record) = parent
        .snapshot
        .record
        .databases
        .iter()
        .find(|d| d.root == root && d.rel == rel)
    else {
        return Ok(None);
    };
    let (Some(verified), Some(proof)) = (&record.verified, &record.dump) else {
        return Ok(None);
    };
    let same_prover = record.capture == DbCapture::Logical
        && proof.version == dump::VERSION
        && proof.observation == observe::VERSION
        && record.sqlite_version == capture::sqlite_version();
    let digest = crate::id::unhex(verified).and_then(|d| <[u8; 32]>::try_from(d).ok());
    let dump_blake3 = crate::id::unhex(&proof.blake3).and_then(|d| <[u8; 32]>::try_from(d).ok());
    let (true, Some(digest), Some(dump_blake3)) = (same_prover, digest, dump_blake3) else {
        return Ok(None);
    };
    Ok(Some(ParentCapture {
        record: record.clone(),
        proven: capture::Proven {
            dump_blake3,
            digest,
        },
        // To reuse the capture, or the stored dump when a capture dumps the same bytes. A
        // node that needs a chunk found damaged is not reused: the dump is chunked again,
        // and stores that chunk anew if it still holds that content. (A parent listing on
        // the way that cannot be read: nothing to reuse.)
        node: match parent_node(repo, parent.root, root, rel) {
            Ok(node) => node.filter(|node| !repo.needs_damaged(node)),
            Err(e) if e.is_damage() => None,
            Err(e) => return Err(e),
        },
    }))
}

/// The node of `root`/`rel` in a snapshot's root tree, when it is a logical dump.
fn parent_node(repo: &Repository, tree: &Tree, root: &str, rel: &str) -> Result<Option<Node>> {
    let mut entry: Option<Entry> = tree.find(root.as_bytes()).cloned();
    for name in rel.split('/').filter(|n| !n.is_empty()) {
        let Some(Entry {
            node: Node::Dir { tree },
            ..
        }) = entry
        else {
            return Ok(None);
        };
        entry = repo.load_tree(&tree)?.find(name.as_bytes()).cloned();
    }
    Ok(entry.and_then(|e| match e.node {
        n @ Node::File {
            database: DbCapture::Logical,
            ..
        } => Some(n),
        _ => None,
    }))
}

/// The parent's capture as this snapshot's, when the database's files are in exactly
/// the settled state recorded with it (see `jellyfin::dbstate`): nothing opens the
/// database.
fn unchanged(parent: &ParentCapture, src: &Path) -> Option<CapturedDb> {
    let recorded = parent.record.source.as_ref()?;
    let node = parent.node.clone()?;
    let mut now = dbstate::read(src, recorded.jellyfin_version.clone())?;
    if !dbstate::same_files(recorded, &now) {
        return None;
    }
    now.jellyfin_versions = recorded.jellyfin_versions.clone();
    // Records from before ranges were kept hold the newest server in the history: a
    // lower bound.
    let version = match &recorded.jellyfin_versions {
        Some(r) => Some(jellyfin::version::Range::from_record(r)),
        None => recorded
            .jellyfin_version
            .as_deref()
            .and_then(jellyfin::version::Version::parse)
            .map(|v| jellyfin::version::Range {
                min: Some(v),
                max: None,
            }),
    };
    Some(CapturedDb {
        content: Content::Parent(node),
        kind: DbCapture::Logical,
        fallback: None,
        verified: Some(parent.proven.digest),
        dump: parent.record.dump.clone(),
        source: Some(now),
        reused: Some(DbReuse::Capture),
        version,
        size: parent.record.size,
        rebuild: None,
    })
}

/// Whether a kept rebuild's database (`path`, as a backup read it: absolute, links
/// resolved) is still where it was: a file, not a link to one (a database moved and
/// linked back is read at its new path, and kept under that).
fn still_a_database(path: &str) -> bool {
    let path = Path::new(path);
    path.is_absolute() && fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// How one database is captured.
struct Job {
    is_jellyfin_db: bool,
    /// A plugin's database (see [`DbSlot::plugin`]).
    plugin: bool,
    mode: DbCaptureMode,
    /// The source's state is recorded only when every time in it is before this.
    settled_before_ns: i64,
}

/// Capture one database (runs on its own thread). The backup API gives a consistent copy
/// of the live database; the logical dump is then taken from that private copy, never
/// the live file. `earlier` is the parent's proof, which a dump equal to the one it
/// proved reuses, with the parent's node for that dump when it can be stored as it is.
/// `on` is told of the proof's stages (a dump to be proven, given as soon as it is
/// written); `kept` is where the last proof's rebuild of this database is kept (none
/// for a database another path of the selection leads to as well).
fn capture_db(
    src: &Path,
    tmp_dir: &Path,
    job: Job,
    earlier: Option<(&capture::Proven, Option<Node>)>,
    kept: Option<&jellyfin::kept::Kept>,
    on: &dyn Fn(capture::Stage<'_>),
) -> Result<CapturedDb> {
    let (earlier, parent_dump) = match earlier {
        Some((p, node)) => (Some(p), node),
        None => (None, None),
    };
    if let Some(k) = kept.filter(|_| earlier.is_some() && job.mode == DbCaptureMode::Logical) {
        k.prefetch();
    }
    // Before any connection to it exists (see `dbstate`); the version is filled in below.
    let before = dbstate::read(src, None);
    let patience = match job.plugin {
        true => capture::PATIENCE_PLUGIN,
        false => capture::PATIENCE_SERVER,
    };
    let copy = capture::capture(src, tmp_dir, patience)?;
    let after = dbstate::read(src, None);
    let size = fs::metadata(&copy).ok().map(|m| m.len());
    let version = if job.is_jellyfin_db {
        jellyfin::version::from_database(&copy)
    } else {
        None
    };
    // The copy is of exactly this state only when the files did not move while it was
    // made, and the state can be recognised later only when it settled before.
    let source = match (before, after) {
        (Some(b), Some(a)) if b == a && dbstate::settled_before(&b, job.settled_before_ns) => {
            Some(DbSourceState {
                jellyfin_version: version.map(|v| v.to_string()),
                jellyfin_versions: version.map(|v| v.to_record()),
                ..b
            })
        }
        _ => None,
    };
    let refused = match job.mode {
        DbCaptureMode::Physical => None,
        // Stored only once proven: rebuilt in scratch space and compared with the copy in
        // everything an application can observe (or shown equal to a proven dump).
        DbCaptureMode::Logical => {
            match capture::dump_and_prove(&copy, tmp_dir, earlier, kept, on)? {
                capture::Logical::Exact {
                    dump,
                    digest,
                    rebuild,
                } => {
                    let proof_reused = rebuild == capture::Rebuild::Reused;
                    // The dump the parent proved is the dump the parent stored: its node
                    // is this one's, and nothing needs chunking.
                    let content = match parent_dump {
                        Some(node) if proof_reused => Content::Parent(node),
                        _ => Content::File(dump.file),
                    };
                    return Ok(CapturedDb {
                        content,
                        kind: DbCapture::Logical,
                        fallback: None,
                        verified: Some(digest),
                        dump: Some(DumpProof {
                            version: dump::VERSION,
                            blake3: crate::id::hex(&dump.blake3),
                            observation: observe::VERSION,
                        }),
                        source,
                        reused: proof_reused.then_some(DbReuse::Proof),
                        version,
                        size,
                        rebuild: Some(rebuild),
                    });
                }
                capture::Logical::Refused(why) => Some(why),
            }
        }
    };
    Ok(CapturedDb {
        content: Content::File(Arc::new(copy)),
        kind: DbCapture::Physical,
        fallback: refused,
        verified: None,
        dump: None,
        source: None,
        reused: None,
        version,
        size,
        rebuild: None,
    })
}
