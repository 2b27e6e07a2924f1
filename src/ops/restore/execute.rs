//! Carrying out a plan, in phases over its one list of actions: the databases (prepared,
//! then installed), then deletions and directories in plan order (parents before
//! children for mkdir, children before parents for delete), then files and links in
//! parallel, then stale side files and kept files' metadata, then directory metadata
//! deepest-first, then one syncfs per root.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use super::database::{install_databases, prepare_databases, swaps};
use super::intent;
use super::write::{link_file, set_meta, write_file, write_symlink};
use super::{Action, RestorePlan, RestoreReport};
use crate::error::{Error, IoContext, Result};
use crate::format::tree::Entry;
use crate::ops::progress::Progress;
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
    progress.phase("restoring", Some(plan.write_bytes));
    let is_root = crate::sys::is_root();
    let ready = prepare_databases(repo, plan, is_root, progress)?;
    // In place, the data is neither old nor new from the first rename until the last one
    // is durable: the intent record marks that window for every later command.
    let intent = match &plan.in_place {
        Some(data_dir) => {
            let at = intent::begin(
                data_dir,
                repo.path(),
                &plan.snapshot,
                &plan.components,
                swaps(&ready),
            )?;
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
            return Err(e);
        }
    };
    let mut report = RestoreReport {
        files_written: files,
        bytes_written: bytes,
        ..RestoreReport::default()
    };
    delete_and_mkdir(plan, &mut report)?;
    write_files(repo, plan, is_root, progress, &mut report)?;
    remove_sides_and_keep(plan, is_root, &mut report)?;
    // Directory metadata deepest-first (the plan lists a directory after its contents).
    for d in &plan.directories {
        set_meta(&d.path, &d.entry, is_root).at(&d.path)?;
    }
    for m in &plan.roots {
        if let Ok(f) = File::open(&m.to) {
            crate::sys::syncfs(&f).at(&m.to)?;
        }
    }
    // A database outside the roots (the target of a symlinked one) is durable already.
    if let Some(at) = &intent {
        intent::end(at)?;
    }
    progress.finish();
    Ok(report)
}

/// Deletions and new directories, in plan order.
fn delete_and_mkdir(plan: &RestorePlan, report: &mut RestoreReport) -> Result<()> {
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
) -> Result<()> {
    let errors = Mutex::new(Vec::new());
    let written = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let links = link_groups(plan);
    let failed = Mutex::new(HashSet::new());
    let files: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Write { .. } | Action::Symlink { .. }))
        .filter(|a| !matches!(a, Action::Write { path, .. } if links.contains_key(path.as_path())))
        .collect();
    files.par_iter().try_for_each(|a| -> Result<()> {
        let (path, r) = match a {
            Action::Write { path, entry, .. } => (
                path,
                write_file(repo, path, entry, is_root, progress).map(|n| {
                    bytes.fetch_add(n, Ordering::Relaxed);
                }),
            ),
            Action::Symlink { path, entry } => (path, write_symlink(path, entry, is_root)),
            _ => return Ok(()),
        };
        match r {
            Ok(()) => {
                written.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(
                e @ (Error::Corrupt { .. }
                | Error::ChunkMissing { .. }
                | Error::PackMissing { .. }
                | Error::Io { .. }),
            ) => {
                let msg = format!("{}: {e}", path.display());
                progress.warn(&msg);
                errors
                    .lock()
                    .map_err(|_| Error::internal("restore error list poisoned"))?
                    .push(msg);
                failed
                    .lock()
                    .map_err(|_| Error::internal("restore error list poisoned"))?
                    .insert(path.as_path());
                Ok(())
            }
            Err(e) => Err(e),
        }
    })?;
    // The other links of each hard-link group, to the file written first (written as a
    // file of their own when that one failed or cannot be linked to).
    let failed = failed
        .into_inner()
        .map_err(|_| Error::internal("restore error list poisoned"))?;
    for a in &plan.actions {
        let Action::Write { path, entry, .. } = a else {
            continue;
        };
        let Some(first) = links.get(path.as_path()) else {
            continue;
        };
        let linked = !failed.contains(first) && link_file(first, path).is_ok();
        let r = if linked {
            Ok(())
        } else {
            write_file(repo, path, entry, is_root, progress).map(|n| {
                bytes.fetch_add(n, Ordering::Relaxed);
            })
        };
        match r {
            Ok(()) => {
                written.fetch_add(1, Ordering::Relaxed);
            }
            Err(
                e @ (Error::Corrupt { .. }
                | Error::ChunkMissing { .. }
                | Error::PackMissing { .. }
                | Error::Io { .. }),
            ) => {
                let msg = format!("{}: {e}", path.display());
                progress.warn(&msg);
                errors
                    .lock()
                    .map_err(|_| Error::internal("restore error list poisoned"))?
                    .push(msg);
            }
            Err(e) => return Err(e),
        }
    }
    report.files_written += written.into_inner();
    report.bytes_written += bytes.into_inner();
    report.errors = errors
        .into_inner()
        .map_err(|_| Error::internal("restore error list poisoned"))?;
    Ok(())
}

/// The files of the plan that were hard links of a file written (or kept) before them
/// in the plan, each with that file's path. Only entries of the same file (device and
/// inode at backup) with the same content and metadata are linked: a file that changed
/// between the backup's reads of its names is restored as the snapshot has each.
fn link_groups(plan: &RestorePlan) -> HashMap<&Path, &Path> {
    let mut first: HashMap<(u64, u64), (&Path, &Entry)> = HashMap::new();
    let mut links = HashMap::new();
    for a in &plan.actions {
        let (path, entry, write) = match a {
            Action::Write { path, entry, .. } => (path, entry, true),
            Action::Keep { path, entry } => (path, entry, false),
            _ => continue,
        };
        let Some(dev) = entry.link else { continue };
        match first.get(&(dev, entry.inode)) {
            None => {
                first.insert((dev, entry.inode), (path, entry));
            }
            Some((to, e)) if write && same_file(e, entry) => {
                links.insert(path.as_path(), *to);
            }
            Some(_) => {}
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
