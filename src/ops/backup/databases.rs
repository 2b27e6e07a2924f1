//! Database captures of a backup. Each database of the selection is captured on its own
//! thread while the walk runs; the walk waits for a capture only when it reaches that
//! database, and keeps the capture's temp file until the backup ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::tally::Tally;
use crate::error::{Error, Result};
use crate::format::config::DbCaptureMode;
use crate::format::snapshot::{Component, DatabaseRecord};
use crate::format::tree::DbCapture;
use crate::jellyfin::{self, capture, Source};
use crate::ops::progress::Progress;
use crate::store::repo::Repository;

/// The captures of one backup, by the database's path in the source.
pub(super) struct Captures {
    slots: HashMap<PathBuf, DbSlot>,
}

/// A database being captured, and where it sits in the selection.
struct DbSlot {
    root: String,
    rel: String,
    state: Mutex<Capture>,
}

enum Capture {
    Running(std::thread::JoinHandle<Result<CapturedDb>>),
    Done(CapturedDb),
    Taken,
}

/// A finished database capture: a temp file holding a logical dump or a physical copy.
struct CapturedDb {
    file: tempfile::TempPath,
    kind: DbCapture,
    /// Why a logical capture fell back to the physical copy.
    fallback: Option<String>,
    /// The source's observation digest, which the rebuilt dump was shown to equal.
    verified: Option<[u8; 32]>,
    /// The Jellyfin version recorded in `jellyfin.db`.
    version: Option<String>,
}

impl Captures {
    /// Start capturing every database of the selection.
    pub(super) fn start(repo: &Repository, source: &Source) -> Result<Self> {
        let mut slots = HashMap::new();
        let databases = source
            .selection
            .items
            .iter()
            .filter(|i| i.component == Component::Database);
        for item in databases {
            let Some(root) = source.selection.root_path(&item.root) else {
                continue;
            };
            let path = Path::new(root).join(&item.rel);
            // A database linked into the data dir is read where it lives: its -wal and
            // -shm sit beside the link's target, not beside the link.
            let src = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            // Named by its place in the data dir: the link's target may be named otherwise.
            let is_jellyfin_db = path.file_name().is_some_and(|n| n == "jellyfin.db");
            let tmp_dir = repo.tmp_dir();
            let mode = repo.config().db_capture;
            let handle = std::thread::Builder::new()
                .name("jellysnap-db-capture".into())
                .spawn(move || capture_db(&src, is_jellyfin_db, &tmp_dir, mode))
                .map_err(|e| {
                    let at = path.display();
                    Error::internal(format!("cannot start the capture thread for {at}: {e}"))
                })?;
            let slot = DbSlot {
                root: item.root.clone(),
                rel: item.rel.clone(),
                state: Mutex::new(Capture::Running(handle)),
            };
            slots.insert(path, slot);
        }
        Ok(Captures { slots })
    }

    pub(super) fn contains(&self, path: &Path) -> bool {
        self.slots.contains_key(path)
    }

    /// The paths of all databases being captured.
    pub(super) fn paths(&self) -> Vec<PathBuf> {
        self.slots.keys().cloned().collect()
    }

    /// Wait for the capture of `path` and return its temp file. The first wait records the
    /// capture in `tally` (and warns about a physical fallback).
    pub(super) fn wait(
        &self,
        path: &Path,
        progress: &dyn Progress,
        tally: &mut Tally,
    ) -> Result<(PathBuf, DbCapture)> {
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
            record(slot, path, &db, progress, tally);
            *state = Capture::Done(db);
        }
        match &*state {
            Capture::Done(db) => Ok((db.file.to_path_buf(), db.kind)),
            _ => Err(failed(path, "capture failed earlier")),
        }
    }

    /// The Jellyfin version read from a finished capture of `jellyfin.db`.
    pub(super) fn jellyfin_version(&self) -> Result<Option<String>> {
        for (path, slot) in &self.slots {
            let state = slot.state.lock().map_err(|_| {
                let at = path.display();
                Error::internal(format!("the capture state of {at} is poisoned"))
            })?;
            if let Capture::Done(CapturedDb {
                version: Some(v), ..
            }) = &*state
            {
                return Ok(Some(v.clone()));
            }
        }
        Ok(None)
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
    tally.databases.push(DatabaseRecord {
        root: slot.root.clone(),
        rel: slot.rel.clone(),
        capture: db.kind,
        reason: db.fallback.clone(),
        verified: db.verified.map(|d| crate::id::hex(&d)),
        sqlite_version: capture::sqlite_version().to_string(),
    });
}

/// Capture one database (runs on its own thread). The backup API gives a consistent copy
/// of the live database; the logical dump is then taken from that private copy, never
/// the live file.
fn capture_db(
    src: &Path,
    is_jellyfin_db: bool,
    tmp_dir: &Path,
    mode: DbCaptureMode,
) -> Result<CapturedDb> {
    let copy = capture::capture(src, tmp_dir)?;
    let version = if is_jellyfin_db {
        jellyfin::version::from_database(&copy)
    } else {
        None
    };
    let refused = match mode {
        DbCaptureMode::Physical => None,
        // Stored only once proven: rebuilt in scratch space and compared with the copy in
        // everything an application can observe.
        DbCaptureMode::Logical => match capture::dump_and_prove(&copy, tmp_dir)? {
            capture::Logical::Exact { dump, digest } => {
                return Ok(CapturedDb {
                    file: dump,
                    kind: DbCapture::Logical,
                    fallback: None,
                    verified: Some(digest),
                    version,
                });
            }
            capture::Logical::Refused(why) => Some(why),
        },
    };
    Ok(CapturedDb {
        file: copy,
        kind: DbCapture::Physical,
        fallback: refused,
        verified: None,
        version,
    })
}
