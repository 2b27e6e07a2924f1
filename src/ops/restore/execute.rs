//! Carrying out a plan, in phases over its one list of actions: the databases (prepared,
//! then installed), then deletions and directories in plan order (parents before
//! children for mkdir, children before parents for delete), then files and links in
//! parallel, then stale side files and kept files' metadata, then directory metadata
//! deepest-first, then one syncfs per file system written to.
//!
//! Files are not fsynced one by one (on many small files that costs far more than one
//! syncfs at the end). In place, a mark (`UNFINISHED_RESTORE`) is made durable in every
//! root before anything there changes and removed only once the syncfs calls succeeded:
//! a restore cut short (a kill, a power cut, a full disk) leaves it, and the next
//! restore then compares every file it would keep by content, so a file whose content
//! was lost with the page cache is written again even though its size and mtime match.
//!
//! A full, over-quota or read-only file system stops the restore at the first write it
//! refuses, with one error that says how much was still to write.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use super::database::{install_databases, prepare_databases, swaps};
use super::intent;
use super::write::{
    batch_chunks, link_file, set_meta, write_batch, write_durably, write_file, write_symlink,
    BatchFile,
};
use super::{no_space, unfinished_mark, Action, RestorePlan, RestoreReport};
use crate::error::{Error, IoContext, Result};
use crate::format::snapshot::Component;
use crate::format::tree::Entry;
use crate::id::PackId;
use crate::jellyfin::layout::{RESTORE_TARGET, UNFINISHED_RESTORE};
use crate::ops::progress::Progress;
use crate::store::durable;
use crate::store::repo::Repository;

/// Carry out a plan (runs in the I/O thread pool, see `parallel`).
pub fn execute(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    crate::ops::parallel::in_io_pool(|| execute_in_pool(repo, plan, progress))
}

fn execute_in_pool(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    // Jellyfin 10.11 and later do not start with less free space in their data dir: a
    // rollback that leaves less would stop the server it means to bring back.
    if let Some(space) = plan.space.as_ref().filter(|s| !s.enough() && !plan.force) {
        return Err(Error::TooLittleSpaceLeft {
            path: space.path.clone(),
            free_now: space.free_now,
            frees: space.frees,
            writes: space.writes,
            free_after: space.free_after,
            needed: space.needed,
        });
    }
    // Before the first temp file appears beside a database: a backup of this data dir
    // now would save a state that never existed. (A missing data dir is made here, as
    // the marks below would make it, so that it is locked from the start.)
    let _data_lock = match &plan.in_place {
        Some(data_dir) => {
            durable::create_dir_durable(data_dir)?;
            Some(crate::jellyfin::datalock::for_restore(data_dir)?)
        }
        None => None,
    };
    progress.phase("restoring", Some(plan.write_bytes));
    let is_root = crate::sys::is_root();
    if plan.in_place.is_none() {
        return into_target(repo, plan, is_root, progress);
    }
    let ready = prepare_databases(repo, plan, is_root, progress)
        .map_err(|e| stopped(plan, e, plan.write_bytes, false))?;
    #[cfg(feature = "test-hooks")]
    crate::store::testing::point("restore-databases-prepared");
    if plan.in_place.is_some() {
        mark_unfinished(plan).map_err(|e| stopped(plan, e, plan.write_bytes, false))?;
    }
    // In place, the data is neither old nor new from the first rename until the last one
    // is durable: the intent record marks that window for every later command.
    let intent = match &plan.in_place {
        Some(data_dir) => {
            let at = intent::begin(
                data_dir,
                &repo.location().as_path(),
                &plan.origin,
                &plan.components,
                swaps(&ready),
                plan.force,
            )
            .map_err(|e| stopped(plan, e, plan.write_bytes, false))?;
            #[cfg(feature = "test-hooks")]
            crate::store::testing::step("restore-swap");
            Some(at)
        }
        None => None,
    };
    let files = ready.len() as u64;
    // The databases go in first: if one cannot be renamed into place, nothing else has
    // changed yet.
    let mut installed = 0;
    let bytes = match install_databases(plan, ready, &mut installed) {
        Ok(b) => b,
        Err(e) => {
            if installed == 0 {
                if let Some(at) = &intent {
                    intent::end(at)?;
                }
            }
            return Err(stopped(plan, e, plan.write_bytes, installed > 0));
        }
    };
    let mut report = RestoreReport {
        files_written: files,
        bytes_written: bytes,
        ..RestoreReport::default()
    };
    let file_bytes = plan.write_bytes.saturating_sub(bytes);
    delete_and_mkdir(plan, &mut report).map_err(|e| stopped(plan, e, file_bytes, true))?;
    write_files(
        repo,
        plan,
        is_root,
        progress,
        &mut report,
        &AtomicBool::new(false),
    )?;
    finish(plan, is_root, report, intent.as_ref(), progress)
}

/// A restore into a new or empty target: nothing there is anyone else's, so the
/// databases are made ready while the files are written (a rebuild is mostly CPU, the
/// files mostly waiting on the store and the disk), and put in place once both are done.
/// A database that fails stops the files and takes back what this restore made, so a
/// failed database leaves no target behind, as when it was made first.
fn into_target(
    repo: &Repository,
    plan: &RestorePlan,
    is_root: bool,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let made = target_dirs(plan);
    // The mark goes first, durably: a restore stopped from here on leaves a target the
    // same restore recognises and finishes.
    let mark = plan.target.as_ref().map(|t| t.join(RESTORE_TARGET));
    if let (Some(t), Some(mark)) = (&plan.target, &mark) {
        durable::create_dir_durable(t)
            .and_then(|()| write_mark(mark, &super::target_mark(&plan.origin)))
            .map_err(|e| stopped(plan, e, plan.write_bytes, false))?;
    }
    let stop = AtomicBool::new(false);
    let mut report = RestoreReport::default();
    let (ready, files) = std::thread::scope(|s| {
        let db = s.spawn(|| {
            let r = prepare_databases(repo, plan, is_root, progress);
            if r.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            r
        });
        let files = delete_and_mkdir(plan, &mut report)
            .map_err(|e| stopped(plan, e, plan.write_bytes, true))
            .and_then(|()| write_files(repo, plan, is_root, progress, &mut report, &stop));
        let ready = db
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the database step panicked")));
        (ready, files)
    });
    let ready = match ready {
        Ok(r) => r,
        Err(e) => {
            let gone = take_back(&made);
            return Err(stopped(plan, e, plan.write_bytes, !gone));
        }
    };
    files?;
    let files = ready.len() as u64;
    let mut installed = 0;
    let bytes = install_databases(plan, ready, &mut installed)
        .map_err(|e| stopped(plan, e, plan.write_bytes, true))?;
    report.files_written += files;
    report.bytes_written += bytes;
    let report = finish(plan, is_root, report, None, progress)?;
    // Everything is durable (finish synced it): the mark goes last.
    if let Some(mark) = &mark {
        fs::remove_file(mark).at(mark)?;
        crate::store::durable::sync_dir(crate::store::durable::parent_dir(mark))?;
    }
    Ok(report)
}

/// The directories a restore into a target makes for its roots (the roots and the
/// missing directories above them), deepest first, and the roots that are there already
/// (the target itself, new or empty: the plan checked).
fn target_dirs(plan: &RestorePlan) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    let mut there = Vec::new();
    for m in &plan.roots {
        if m.to.exists() {
            there.push(m.to.clone());
        }
        made.extend(super::missing_dirs(Some(&m.to)));
    }
    let mut made: Vec<PathBuf> = made.into_iter().collect();
    made.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    (made, there)
}

/// Remove what this restore wrote into a target: everything in the roots that were
/// there (empty) before it, then the directories it made, deepest first. Whether all of
/// it is gone.
fn take_back((made, there): &(Vec<PathBuf>, Vec<PathBuf>)) -> bool {
    let remove = |p: &Path| match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    let mut gone = true;
    for root in there {
        match fs::read_dir(root) {
            Ok(rd) => {
                for e in rd {
                    gone &= e.and_then(|e| remove(&e.path())).is_ok();
                }
            }
            Err(_) => gone = false,
        }
    }
    for d in made {
        gone &= remove(d).is_ok();
    }
    gone
}

/// What every restore does once its databases and files are in place: stale side files,
/// kept files' metadata, directory metadata, one syncfs per file system, the marks and
/// the intent record cleared.
fn finish(
    plan: &RestorePlan,
    is_root: bool,
    mut report: RestoreReport,
    intent: Option<&PathBuf>,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    remove_sides_and_keep(plan, is_root, &mut report).map_err(|e| stopped(plan, e, 0, true))?;
    // Directory metadata deepest-first, a level at a time, each level in parallel: a
    // directory's mode may take away the search right its contents' paths need.
    for level in by_depth(&plan.directories, |d| &d.path).into_iter().rev() {
        level
            .par_iter()
            .try_for_each(|d| set_meta(&d.path, &d.entry, is_root).at(&d.path))
            .map_err(|e| stopped(plan, e, 0, true))?;
    }
    #[cfg(feature = "test-hooks")]
    crate::store::testing::point("restore-before-sync");
    for dir in written_file_systems(plan) {
        File::open(&dir)
            .and_then(|f| crate::sys::syncfs(&f))
            .at(&dir)?;
    }
    if plan.in_place.is_some() {
        clear_unfinished(plan)?;
    }
    // A database outside the roots (the target of a symlinked one) is durable already.
    if let Some(at) = intent {
        intent::end(at)?;
    }
    progress.finish();
    Ok(report)
}

/// Mark every root (made if missing) as holding an unfinished restore of the components
/// of this plan and of any earlier unfinished one, durably, before anything changes.
fn mark_unfinished(plan: &RestorePlan) -> Result<()> {
    let mut marked: BTreeSet<Component> = plan.unfinished_restore.iter().copied().collect();
    marked.extend(plan.components.iter().copied());
    let text = unfinished_mark(&marked);
    for m in &plan.roots {
        durable::create_dir_durable(&m.to)?;
        write_mark(&m.to.join(UNFINISHED_RESTORE), &text)?;
    }
    Ok(())
}

/// Write a mark durably, through a temp name a later restore removes if this one dies.
fn write_mark(path: &Path, text: &str) -> Result<()> {
    write_durably(path, text.as_bytes(), "restore-mark-temp")
}

/// Everything this plan wrote is durable: remove the marks, or keep naming the components
/// an earlier unfinished restore was restoring that this one did not restore.
fn clear_unfinished(plan: &RestorePlan) -> Result<()> {
    let left: BTreeSet<Component> = plan
        .unfinished_restore
        .iter()
        .filter(|c| !plan.components.contains(c))
        .copied()
        .collect();
    for m in &plan.roots {
        let mark = m.to.join(UNFINISHED_RESTORE);
        if !left.is_empty() {
            write_mark(&mark, &unfinished_mark(&left))?;
            continue;
        }
        match fs::remove_file(&mark) {
            Ok(()) => durable::sync_dir(&m.to)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&mark, e)),
        }
    }
    Ok(())
}

/// One directory on each file system the plan writes to: the roots and the directories
/// of what it writes or deletes (a restored tree may reach another disk through a
/// symlinked directory, which a syncfs of its root would miss).
fn written_file_systems(plan: &RestorePlan) -> Vec<PathBuf> {
    let mut dirs: HashSet<&Path> = plan.roots.iter().map(|m| m.to.as_path()).collect();
    for a in &plan.actions {
        match a {
            Action::Mkdir { path } => {
                dirs.insert(path);
            }
            Action::Write { path, .. }
            | Action::Symlink { path, .. }
            | Action::Database { path, .. }
            | Action::Delete { path }
            | Action::RemoveSideFile { path } => {
                dirs.insert(durable::parent_dir(path));
            }
            Action::Keep { .. } | Action::NotCaptured { .. } | Action::Protected { .. } => {}
        }
    }
    let mut by_dev: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for d in dirs {
        if let Ok(m) = fs::metadata(d) {
            by_dev.entry(m.dev()).or_insert_with(|| d.to_path_buf());
        }
    }
    by_dev.into_values().collect()
}

/// The error a restore stops with. A full, over-quota or read-only file system becomes
/// one error saying how much was still to write, how much is free there, and what the
/// destination holds now (`changed`: whether anything in it has changed); any other
/// error is returned as it is.
fn stopped(plan: &RestorePlan, e: Error, to_write: u64, changed: bool) -> Error {
    let Some(mut reason) = no_space(&e) else {
        return e;
    };
    let (path, source) = match e {
        Error::Io { path, source } => (path, source),
        e => return e,
    };
    let free = path
        .ancestors()
        .find_map(|p| crate::sys::free_space(p).ok());
    // The same error when no more files can be made while bytes are left (no free
    // inodes): said as what it is, not as a full disk with room to spare.
    if source.kind() == std::io::ErrorKind::StorageFull && crate::sys::out_of_inodes(&path) {
        reason = "the file system can hold no more files (no free inodes left)";
    }
    let state = if !changed {
        "Nothing was changed: free space there (or make it writable) and run the restore again."
            .to_string()
    } else if plan.in_place.is_some() {
        format!(
            "What was restored so far is in place and the rest is as it was; each restored root \
             is marked ({UNFINISHED_RESTORE}). Free space there (or make it writable) and run \
             the same restore again to finish it: while the mark is there it compares every \
             file it keeps by content."
        )
    } else {
        "The target holds a partial restore: remove it, then restore again onto a file \
         system with enough space."
            .to_string()
    };
    Error::NoSpace {
        path,
        reason,
        source,
        to_write,
        free,
        state,
    }
}

/// `items` grouped by the depth of their path, shallowest first.
fn by_depth<T>(items: &[T], path: impl Fn(&T) -> &Path) -> Vec<Vec<&T>> {
    let mut levels: BTreeMap<usize, Vec<&T>> = BTreeMap::new();
    for it in items {
        levels
            .entry(path(it).components().count())
            .or_default()
            .push(it);
    }
    levels.into_values().collect()
}

/// Deletions and new directories, in plan order. A plan that deletes nothing (every
/// restore into a target) makes its directories a level at a time, each level in
/// parallel.
fn delete_and_mkdir(plan: &RestorePlan, report: &mut RestoreReport) -> Result<()> {
    if !plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::Delete { .. }))
    {
        let dirs: Vec<&Path> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Mkdir { path } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        for level in by_depth(&dirs, |p| p) {
            level
                .par_iter()
                .try_for_each(|p| fs::create_dir_all(p).at(p))?;
        }
        return Ok(());
    }
    for a in &plan.actions {
        match a {
            Action::Delete { path: p } => {
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
            Action::Mkdir { path: p } => fs::create_dir_all(p).at(p)?,
            _ => {}
        }
    }
    Ok(())
}

/// Files and links, in parallel. Damaged data or a failing file does not stop the
/// others: it is named in the report's errors (and warned about).
fn write_files(
    repo: &Repository,
    plan: &RestorePlan,
    is_root: bool,
    progress: &dyn Progress,
    report: &mut RestoreReport,
    stop: &AtomicBool,
) -> Result<()> {
    let errors = Mutex::new(Vec::new());
    let written = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let links = link_groups(plan);
    let failed: Mutex<HashSet<PathBuf>> = Mutex::new(HashSet::new());
    let poisoned = || Error::internal("restore error list poisoned");
    let files: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Write { .. } | Action::Symlink { .. }))
        .filter(|a| !matches!(a, Action::Write { path, .. } if links.contains_key(path.as_path())))
        .collect();
    let file_bytes: u64 = plan
        .actions
        .iter()
        .map(|a| match a {
            Action::Write { size, .. } => *size,
            _ => 0,
        })
        .sum();
    let write = |path: &Path, entry: &Entry| {
        write_file(repo, path, entry, is_root, progress).map(|n| {
            bytes.fetch_add(n, Ordering::Relaxed);
        })
    };
    // One file's outcome: counted; or named in the report's errors while the others go
    // on; or the end of the restore (a destination that takes nothing more, stopped
    // here rather than once per file; a bug).
    let settle = |path: &Path, r: Result<()>| -> Result<()> {
        match r {
            Ok(()) => {
                written.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if no_space(&e).is_some() => Err(e),
            Err(
                e @ (Error::Corrupt { .. }
                | Error::ChunkMissing { .. }
                | Error::PackMissing { .. }
                | Error::Io { .. }),
            ) => {
                let msg = format!("{}: {e}", path.display());
                progress.warn(&msg);
                errors.lock().map_err(|_| poisoned())?.push(msg);
                failed
                    .lock()
                    .map_err(|_| poisoned())?
                    .insert(path.to_path_buf());
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    let run = batch_small_files(repo, &files)
        .par_iter()
        .try_for_each(|w| match w {
            // Another step failed: the restore stops with that step's error.
            _ if stop.load(Ordering::Relaxed) => Err(Error::internal("restore stopped")),
            Work::One(Action::Write { path, entry, .. }) => settle(path, write(path, entry)),
            Work::One(Action::Symlink { path, entry }) => {
                settle(path, write_symlink(path, entry, is_root))
            }
            Work::One(_) => Ok(()),
            Work::Batch(batch) => write_batch(repo, batch, is_root, progress, &mut |path, r| {
                settle(
                    path,
                    r.map(|n| {
                        bytes.fetch_add(n, Ordering::Relaxed);
                    }),
                )
            }),
        })
        .and_then(|()| {
            // The other names of each hard-link group, linked to the one written first
            // (written as files of their own when that one failed or cannot be linked to).
            for a in &plan.actions {
                let Action::Write { path, entry, .. } = a else {
                    continue;
                };
                let Some(first) = links.get(path.as_path()) else {
                    continue;
                };
                let first_failed = failed.lock().map_err(|_| poisoned())?.contains(*first);
                let r = if !first_failed && link_file(first, path).is_ok() {
                    Ok(())
                } else {
                    write(path, entry)
                };
                settle(path, r)?;
            }
            Ok(())
        });
    report.files_written += written.load(Ordering::Relaxed);
    if let Err(e) = run {
        let done = bytes.load(Ordering::Relaxed);
        return Err(stopped(plan, e, file_bytes.saturating_sub(done), true));
    }
    report.bytes_written += bytes.into_inner();
    report.errors = errors.into_inner().map_err(|_| poisoned())?;
    Ok(())
}

/// A unit of the parallel file phase: one file or link, or a batch of small files whose
/// chunks are read together.
enum Work<'a> {
    One(&'a Action),
    Batch(Vec<BatchFile<'a>>),
}

/// The most files of one batch of small files, and, on a store read by whole packs, of
/// one pack's batch.
const BATCH_FILES: usize = 256;
const PACK_BATCH_FILES: usize = 4096;

/// The files and links to write as units of work: small files (most of a Jellyfin data
/// dir: images, trickplay sheets, `.nfo`, small JSON) in batches of neighbours in the
/// packs (sorted by where the index places their first chunk), so that one store read
/// fetches the chunks of many of them. Locally, batches small enough that every I/O
/// thread has some; on a store where every read is a request, a batch is the files of
/// one pack, fetched in one read.
fn batch_small_files<'a>(repo: &Repository, files: &[&'a Action]) -> Vec<Work<'a>> {
    let shape = repo.store().read_shape();
    let mut work = Vec::new();
    // Where each small file's first chunk is, as (pack number, offset, the file's place
    // in `files`); packs are numbered as first seen, 0 for a chunk the index does not
    // place (sorted first; its read says why). A key of 24 bytes rather than a pack id
    // and the file's references: with 300,000 small files that is ~20 MB less, held at
    // the restore's peak.
    let mut packs: HashMap<PackId, u32> = HashMap::new();
    let mut small: Vec<(u32, u64, usize)> = Vec::with_capacity(files.len());
    for (i, &a) in files.iter().enumerate() {
        match a {
            Action::Write { entry, .. } => match batch_chunks(entry) {
                Some(chunks) => {
                    let at = chunks
                        .first()
                        .and_then(|c| repo.index().get(&c.id).ok().flatten());
                    let (pack, offset) = match at {
                        Some(e) => {
                            let next = u32::try_from(packs.len() + 1).unwrap_or(u32::MAX);
                            (*packs.entry(e.pack).or_insert(next), e.offset)
                        }
                        None => (0, 0),
                    };
                    small.push((pack, offset, i));
                }
                None => work.push(Work::One(a)),
            },
            a => work.push(Work::One(a)),
        }
    }
    drop(packs);
    small.sort_unstable();
    let per_batch = match shape.by_pack {
        true => PACK_BATCH_FILES,
        false => small
            .len()
            .div_ceil(crate::ops::parallel::io_threads() * 2)
            .clamp(1, BATCH_FILES),
    };
    let (mut batch, mut batch_bytes, mut batch_pack) = (Vec::new(), 0u64, None);
    for (pack, _, i) in small {
        let Action::Write { path, entry, size } = files[i] else {
            continue;
        };
        let Some(chunks) = batch_chunks(entry) else {
            continue;
        };
        let pack = Some(pack).filter(|&p| p != 0);
        if shape.by_pack && !batch.is_empty() && pack != batch_pack {
            work.push(Work::Batch(std::mem::take(&mut batch)));
            batch_bytes = 0;
        }
        batch_pack = pack;
        batch.push((path.as_path(), entry, chunks));
        batch_bytes += size;
        if batch.len() >= per_batch || batch_bytes >= shape.max_read as u64 {
            work.push(Work::Batch(std::mem::take(&mut batch)));
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        work.push(Work::Batch(batch));
    }
    work
}

/// The files of the plan to write as other names of a hard-link group, each with the
/// name to link them to (see `source` below). Only entries of the same file (device and
/// inode at backup) with the same content and metadata are linked: a file that changed
/// between the backup's reads of its names is restored as the snapshot has each.
fn link_groups(plan: &RestorePlan) -> HashMap<&Path, &Path> {
    // Each group's source: a name kept as it is (on disk, it already is the snapshot's
    // file) when the group has one, else its first name written. Linking to a kept name
    // keeps the group one file when an in-place restore writes only some of its names.
    let mut source: HashMap<(u64, u64), (&Path, &Entry, bool)> = HashMap::new();
    for a in &plan.actions {
        let (path, entry, write) = match a {
            Action::Write { path, entry, .. } => (path, entry, true),
            Action::Keep { path, entry } => (path, entry, false),
            _ => continue,
        };
        let Some(dev) = entry.link else { continue };
        match source.get(&(dev, entry.inode)) {
            Some((_, _, false)) => {}
            Some((_, _, true)) if write => {}
            _ => {
                source.insert((dev, entry.inode), (path.as_path(), entry, write));
            }
        }
    }
    let mut links = HashMap::new();
    for a in &plan.actions {
        let Action::Write { path, entry, .. } = a else {
            continue;
        };
        let Some(dev) = entry.link else { continue };
        if let Some((to, e, _)) = source.get(&(dev, entry.inode)) {
            if *to != path.as_path() && same_file(e, entry) {
                links.insert(path.as_path(), *to);
            }
        }
    }
    links
}

fn same_file(a: &Entry, b: &Entry) -> bool {
    (&a.node, a.mode, a.uid, a.gid, a.mtime_ns) == (&b.node, b.mode, b.uid, b.gid, b.mtime_ns)
}

/// Stale side files of databases that were unchanged (those of installed ones are gone),
/// and the metadata of kept files, in plan order.
fn remove_sides_and_keep(
    plan: &RestorePlan,
    is_root: bool,
    report: &mut RestoreReport,
) -> Result<()> {
    for a in &plan.actions {
        match a {
            Action::RemoveSideFile { path: p } => {
                match fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(p, e)),
                }
                report.deleted += 1;
            }
            Action::Keep { path, entry } => {
                set_meta(path, entry, is_root).at(path)?;
                report.files_kept += 1;
            }
            _ => {}
        }
    }
    Ok(())
}
