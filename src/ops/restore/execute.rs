//! Carrying out a plan, in phases over its one list of actions: the databases (prepared,
//! then installed), then deletions and directories in plan order (parents before
//! children for mkdir, children before parents for delete), then files and links in
//! parallel, then stale side files and kept files' metadata, then directory metadata
//! deepest-first, then one syncfs per root.

use std::fs::{self, File};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use super::database::{install_databases, prepare_databases, swaps};
use super::intent;
use super::write::{set_meta, write_file, write_symlink};
use super::{Action, RestorePlan, RestoreReport};
use crate::error::{Error, IoContext, Result};
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
    let files: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Write { .. } | Action::Symlink { .. }))
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
                Ok(())
            }
            Err(e) => Err(e),
        }
    })?;
    report.files_written += written.into_inner();
    report.bytes_written += bytes.into_inner();
    report.errors = errors
        .into_inner()
        .map_err(|_| Error::internal("restore error list poisoned"))?;
    Ok(())
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
