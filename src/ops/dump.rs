//! `dump`: one file of a snapshot, streamed to a writer. A plain file streams its
//! chunks in order, each verified; a database is restored the way a restore does it
//! (rebuilt from its dump or written from its copy, and checked against the proof of its
//! backup) into a scratch directory, then streamed, so what comes out is a valid SQLite
//! file, never a dump.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, OptionError, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{DbCapture, Entry, Node};
use crate::ops::progress::NoProgress;
use crate::ops::restore::{self, Action, Destination, RestoreOptions};
use crate::store::repo::Repository;

/// What was streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dumped {
    File { bytes: u64 },
    Database { bytes: u64 },
}

/// Stream the file at `path` (`/`-separated, starting with a root label, as `ls`
/// shows it) of `snap` into `out`; a database is rebuilt under `scratch` first (and
/// removed after). `out_name` names the writer in errors.
pub fn dump(
    repo: &Repository,
    snap: &Snapshot,
    path: &str,
    scratch: &Path,
    out: &mut dyn Write,
    out_name: &Path,
) -> Result<Dumped> {
    let entry = find(repo, snap, path)?;
    let Node::File { database, .. } = &entry.node else {
        return Err(OptionError::NotAFile(path.to_string()).into());
    };
    if *database != DbCapture::None {
        return dump_database(repo, snap, path, scratch, out, out_name);
    }
    let chunks = repo.file_chunks(&entry.node)?;
    let ids: Vec<_> = chunks.iter().map(|c| c.id).collect();
    let mut buf = Vec::new();
    let mut at = 0;
    let mut bytes = 0u64;
    while at < ids.len() {
        let n = repo.read_run(ids.get(at..).unwrap_or_default(), &mut buf)?;
        out.write_all(&buf).at(out_name)?;
        bytes += buf.len() as u64;
        at += n.max(1);
    }
    out.flush().at(out_name)?;
    Ok(Dumped::File { bytes })
}

/// The entry at `path`.
fn find(repo: &Repository, snap: &Snapshot, path: &str) -> Result<Entry> {
    // A path the backup recorded as not captured is said to be that, not unknown.
    let wanted = path.trim_matches('/');
    let not_captured = snap.record.not_captured.iter().any(|n| {
        let at = format!("{}/{}", n.root, n.rel);
        at.trim_matches('/') == wanted
    });
    let not_found = || match not_captured {
        true => Error::PathNotCaptured {
            snapshot: snap.id.short(),
            path: path.to_string(),
        },
        false => Error::PathNotInSnapshot {
            snapshot: snap.id.short(),
            path: path.to_string(),
        },
    };
    let mut tree = repo.load_tree(&snap.record.tree)?;
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    if parts.peek().is_none() {
        return Err(OptionError::NotAFile(path.to_string()).into());
    }
    while let Some(part) = parts.next() {
        let e = tree.find(part.as_bytes()).cloned().ok_or_else(not_found)?;
        if parts.peek().is_none() {
            return Ok(e);
        }
        match &e.node {
            Node::Dir { tree: t } => tree = repo.load_tree(t)?,
            _ => return Err(not_found()),
        }
    }
    Err(not_found())
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The scratch directories of database dumps, named with their owner (`sys::owner_tag`).
const DUMP_PREFIX: &str = ".jellysnap-dump-";

/// Remove what dumps whose process is gone (interrupted, killed) left in `scratch`: a
/// whole database each. Best effort; a dump still running keeps its directory.
fn clear_dead_dumps(scratch: &Path) {
    let Ok(rd) = fs::read_dir(scratch) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(tail) = name.to_str().and_then(|n| n.strip_prefix(DUMP_PREFIX)) else {
            continue;
        };
        let tag = tail.split('-').next().unwrap_or("");
        if crate::sys::owner_alive(tag) == Some(false) && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn dump_database(
    repo: &Repository,
    snap: &Snapshot,
    path: &str,
    scratch: &Path,
    out: &mut dyn Write,
    out_name: &Path,
) -> Result<Dumped> {
    clear_dead_dumps(scratch);
    let dir = Scratch(scratch.join(format!(
        "{DUMP_PREFIX}{}-{}",
        crate::sys::owner_tag(),
        crate::ops::clock::now_ns()
    )));
    let opts = RestoreOptions {
        destination: Destination::Target(dir.0.clone()),
        components: None,
        force: false,
        protect: Vec::new(),
        verify: false,
        server_version: None,
        include: vec![path.to_string()],
        exclude: Vec::new(),
    };
    let plan = restore::plan(repo, snap, &opts)?;
    let report = restore::execute(repo, &plan, &NoProgress)?;
    if let Some(e) = report.errors.first() {
        return Err(Error::internal(format!(
            "the database {path} of snapshot {} could not be rebuilt: {e}",
            snap.id.short()
        )));
    }
    let file = plan
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Database { path, .. } => Some(path.clone()),
            _ => None,
        })
        .ok_or_else(|| Error::internal(format!("no database at {path} to rebuild")))?;
    let mut f = fs::File::open(&file).at(&file)?;
    let bytes = std::io::copy(&mut f, out).at(out_name)?;
    out.flush().at(out_name)?;
    Ok(Dumped::Database { bytes })
}
