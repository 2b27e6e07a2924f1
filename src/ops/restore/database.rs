//! The databases of a restore, all or nothing: each is made ready beside its destination
//! (rebuilt from its logical dump and proved, or written from its physical copy), made
//! durable, and only when all are ready renamed into place, one after the other, before
//! any other file of the destination changes.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::write::{fill_beside, set_file_meta, temp_beside};
use super::{side_path, Action, RestorePlan, SIDE_SUFFIXES};
use crate::error::{Error, IoContext, Result};
use crate::format::snapshot::Verified;
use crate::format::tree::{ChunkRef, DbCapture, Entry, Node};
use crate::id::ChunkId;
use crate::jellyfin::{capture, logical};
use crate::ops::progress::Progress;
use crate::store::repo::Repository;

/// The bytes of a file's chunks as one stream, each chunk verified, a run of chunks at a
/// time (`Repository::read_run`: a dump of thousands of small chunks is a few store
/// reads). The first repository error is kept in `err` (the reader returns an I/O error
/// to its caller, which cannot carry it).
pub(crate) struct ChunkStream<'a> {
    repo: &'a Repository,
    ids: Vec<ChunkId>,
    next: usize,
    cur: Vec<u8>,
    pos: usize,
    err: Option<Error>,
    progress: &'a dyn Progress,
}

impl Read for ChunkStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            let Some(rest) = self.ids.get(self.next..).filter(|r| !r.is_empty()) else {
                return Ok(0);
            };
            match self.repo.read_run(rest, &mut self.cur) {
                Ok(n) => {
                    self.next += n;
                    self.pos = 0;
                    self.progress.advance(self.cur.len() as u64);
                }
                Err(e) => {
                    self.cur.clear();
                    self.pos = 0;
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

impl<'a> ChunkStream<'a> {
    /// The stream of the chunks `ids`, in order.
    pub(crate) fn new(repo: &'a Repository, ids: Vec<ChunkId>, progress: &'a dyn Progress) -> Self {
        ChunkStream {
            repo,
            ids,
            next: 0,
            cur: Vec::new(),
            pos: 0,
            err: None,
            progress,
        }
    }

    /// The repository error that stopped the stream, if one did.
    pub(crate) fn take_err(&mut self) -> Option<Error> {
        self.err.take()
    }
}

/// A database made ready beside its destination, waiting to be renamed into place.
pub(super) struct Prepared {
    path: PathBuf,
    tmp: tempfile::TempPath,
    bytes: u64,
}

/// Rebuild a logically captured database into a temp file next to `path` and prove it:
/// when the backup recorded an observation digest, the rebuilt file must show exactly
/// that (else it would not be the database that was backed up).
fn rebuild_beside(
    repo: &Repository,
    path: &Path,
    chunks: &[ChunkRef],
    proof: Option<&Verified>,
    progress: &dyn Progress,
) -> Result<tempfile::TempPath> {
    let fail = |detail: String| Error::DatabaseRestore {
        path: path.to_path_buf(),
        snapshot: String::new(),
        detail,
    };
    // A proof of a newer jellysnap's observation cannot be checked here: a newer
    // format, said before anything is rebuilt.
    if let Some(w) = proof.filter(|w| !crate::jellyfin::observe::knows(w.observation)) {
        return Err(Error::newer_format(
            "database proof",
            dump_location(path),
            w.observation,
            crate::jellyfin::observe::VERSION,
        ));
    }
    let tmp = temp_beside(path)?.into_temp_path();
    // rebuild() creates the file itself; the reserved name is ours until the rename.
    fs::remove_file(&tmp).at(&tmp)?;
    let mut stream = ChunkStream::new(repo, chunks.iter().map(|c| c.id).collect(), progress);
    let built = logical::rebuild(&mut stream, &tmp);
    // SQLite says a file it cannot create (no inodes left) or write (no bytes left) as
    // "unable to open" or an I/O error: told from a dump that does not rebuild by the
    // file system, looked at before the rebuild's files are removed.
    let dir = crate::store::durable::parent_dir(&tmp);
    let out_of_room = built.is_err() && crate::sys::nearly_full(dir);
    capture::remove_side_files(&tmp);
    if let Err(e) = built {
        return Err(match (stream.err.take(), e) {
            (Some(chunk_err), _) => chunk_err,
            (None, logical::LogicalError::Io(io)) => Error::io(path, io),
            (None, logical::LogicalError::Newer { found, supported }) => {
                Error::newer_format("database dump", dump_location(path), found, supported)
            }
            (None, logical::LogicalError::Sqlite(e))
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
                    || (out_of_room
                        && matches!(
                            e.sqlite_error_code(),
                            Some(
                                rusqlite::ErrorCode::CannotOpen
                                    | rusqlite::ErrorCode::SystemIoFailure
                            )
                        )) =>
            {
                Error::io(
                    path,
                    std::io::Error::new(std::io::ErrorKind::StorageFull, e.to_string()),
                )
            }
            (None, e) => fail(format!(
                "its logical dump does not rebuild with SQLite {}: {e}",
                capture::sqlite_version()
            )),
        });
    }
    if let Some(want) = proof {
        let seen = capture::observe_file_split(&tmp, want.observation);
        capture::remove_side_files(&tmp);
        let seen =
            seen.map_err(|e| fail(format!("the rebuilt database cannot be read back: {e}")))?;
        if crate::id::hex(&seen.digest()) != want.digest {
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
    proof: Option<&Verified>,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let chunks = repo.file_chunks(node)?;
    let tmp = rebuild_beside(repo, &scratch.join("check.db"), &chunks, proof, progress)?;
    #[cfg(feature = "test-hooks")]
    crate::store::testing::point("check-rebuilt");
    drop(tmp);
    Ok(())
}

/// Remove the rebuilds (and their SQLite side files) that killed processes left in
/// `scratch`; those of a process still running stay. Returns how many went.
pub fn clear_dead_rebuilds(scratch: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(scratch) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let leftover = name
            .as_encoded_bytes()
            .starts_with(super::TEMP_PREFIX.as_bytes())
            && super::is_restore_leftover(name.as_encoded_bytes());
        if leftover && e.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Make one database ready beside its destination: content, metadata, durable.
fn prepare_database(
    repo: &Repository,
    path: &Path,
    entry: &Entry,
    proof: Option<&Verified>,
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
    let (file, tmp, bytes) = if *database == DbCapture::Logical {
        let tmp = rebuild_beside(repo, path, &chunks, proof, progress)?;
        let file = File::open(&tmp).at(&tmp)?;
        let n = file.metadata().at(&tmp)?.len();
        (file, tmp, n)
    } else {
        fill_beside(repo, path, &chunks, progress)?
    };
    set_file_meta(&file, entry, is_root).at(path)?;
    // The database is the one file a rollback cannot do without: durable before the
    // rename, not left to the final syncfs.
    file.sync_all().at(&tmp)?;
    Ok(Prepared {
        path: path.to_path_buf(),
        tmp,
        bytes,
    })
}

/// Every database of the plan, ready beside its destination; the first failure ends the
/// restore before anything in the destination changed (the temp files are removed).
pub(super) fn prepare_databases(
    repo: &Repository,
    plan: &RestorePlan,
    is_root: bool,
    progress: &dyn Progress,
) -> Result<Vec<Prepared>> {
    // Directories a temp file needs are made here; on failure they go again (empty), so
    // a failed restore into a new target leaves no target behind.
    let mut made: Vec<PathBuf> = Vec::new();
    let mut ready = Vec::new();
    for a in &plan.actions {
        let Action::Database {
            path, entry, proof, ..
        } = a
        else {
            continue;
        };
        made.extend(super::missing_dirs(path.parent()));
        // A restore killed while it rebuilt this database left its temp file (and the
        // file's -wal/-shm) beside it: gone before this one makes its own.
        if let Some(dir) = path.parent() {
            clear_dead_rebuilds(dir);
        }
        match prepare_database(repo, path, entry, proof.as_ref(), is_root, progress) {
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

/// What the intent record says of the swap of `ready` (see `intent`).
pub(super) fn swaps(ready: &[Prepared]) -> Vec<super::intent::Swap> {
    let lossy = |p: &Path| p.to_string_lossy().into_owned();
    ready
        .iter()
        .map(|db| super::intent::Swap {
            path: lossy(&db.path),
            new: lossy(&db.tmp),
            aside: aside_names(&db.path)
                .iter()
                .map(|(side, to)| (lossy(side), lossy(to)))
                .collect(),
        })
        .collect()
}

/// Put every prepared database in place, in plan order; returns how many and their
/// bytes. A failure stops the restore before any other file changed; `installed` counts
/// the databases already in place then.
pub(super) fn install_databases(
    plan: &RestorePlan,
    ready: Vec<Prepared>,
    installed: &mut u64,
) -> Result<u64> {
    let mut bytes = 0;
    for db in ready {
        let path = db.path.clone();
        bytes += install_database(db).map_err(|e| database_error(plan, &path, e))?;
        *installed += 1;
    }
    Ok(bytes)
}

/// The side files beside `db` now, each with the name it is set aside under.
fn aside_names(db: &Path) -> Vec<(PathBuf, PathBuf)> {
    let dir = crate::store::durable::parent_dir(db);
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    SIDE_SUFFIXES
        .iter()
        .filter_map(|suffix| {
            let side = side_path(db, suffix);
            fs::symlink_metadata(&side).ok()?;
            Some((side, dir.join(format!(".jellysnap-stale-{name}{suffix}"))))
        })
        .collect()
}

/// One step of the database swap done (a test can stop the restore after any of them).
fn swap_step() {
    #[cfg(feature = "test-hooks")]
    crate::store::testing::step("restore-swap");
}

/// Where a database's dump is, for messages.
fn dump_location(path: &Path) -> String {
    format!("for {}", path.display())
}

/// A database step's failure as the restore reports it (exit code 19). A record of a
/// newer format is not a failed restore: it keeps its own error (exit code 11), naming
/// the snapshot; a full or read-only destination stays what it is (the restore
/// reports it as such).
fn database_error(plan: &RestorePlan, path: &Path, e: Error) -> Error {
    if super::no_space(&e).is_some() {
        // Named by the database it was making ready (a temp file's error names the
        // directory).
        return match e {
            Error::Io { source, .. } => Error::io(path, source),
            e => e,
        };
    }
    let snapshot = plan.snapshot.get(..8).unwrap_or(&plan.snapshot).to_string();
    let detail = match e {
        Error::NewerFormat {
            what,
            location,
            found,
            supported,
        } => {
            return Error::NewerFormat {
                what,
                location: format!("{location} in snapshot {snapshot}"),
                found,
                supported,
            }
        }
        Error::DatabaseRestore { detail, .. } => detail,
        e => e.to_string(),
    };
    Error::DatabaseRestore {
        path: path.to_path_buf(),
        snapshot,
        detail,
    }
}

/// Put a prepared database in place. SQLite pairs a `-wal` or `-journal` with whatever
/// database file sits beside it, so the replaced file's side files are first renamed
/// aside (never removed before the new database is in place), then the database is
/// renamed in, and only then are the set-aside files removed. A crash at any point
/// leaves the old database (its side files under `.jellysnap-stale-*`) or the new one
/// without them; never the new one with the old WAL. In place, the intent record
/// (`intent`) names that state until the same restore, run again, finishes it. If the
/// rename fails, the side files go back and nothing has changed.
fn install_database(db: Prepared) -> Result<u64> {
    let dir = crate::store::durable::parent_dir(&db.path).to_path_buf();
    let mut aside: Vec<(PathBuf, PathBuf)> = Vec::new();
    let put_back = |aside: &[(PathBuf, PathBuf)]| {
        for (side, to) in aside.iter().rev() {
            let _ = fs::rename(to, side);
        }
        let _ = crate::store::durable::sync_dir(&dir);
    };
    for (side, to) in aside_names(&db.path) {
        if let Err(e) = fs::rename(&side, &to) {
            put_back(&aside);
            return Err(Error::io(&side, e));
        }
        aside.push((side, to));
        swap_step();
    }
    if !aside.is_empty() {
        crate::store::durable::sync_dir(&dir)?;
    }
    if let Err(e) = db.tmp.persist(&db.path) {
        put_back(&aside);
        return Err(Error::io(&db.path, e.error));
    }
    crate::store::durable::sync_dir(&dir)?;
    #[cfg(feature = "test-hooks")]
    crate::store::testing::point("restore-after-db-rename");
    swap_step();
    for (_, to) in &aside {
        fs::remove_file(to).at(to)?;
        swap_step();
    }
    if !aside.is_empty() {
        crate::store::durable::sync_dir(&dir)?;
    }
    Ok(db.bytes)
}
