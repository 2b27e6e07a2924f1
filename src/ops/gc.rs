//! Garbage collection (docs/ARCHITECTURE.md, "Garbage collection"): plan, then sweep.
//!
//! Plan: mark every chunk reachable from the snapshots, then read each pack's trailer
//! (metadata only) and sort packs into keep / repack / delete. A chunk counts as live in
//! a pack only where the index says it lives: copies left by interrupted backups are dead.
//! A live chunk the index does not place in a listed pack (no entry, or an entry naming a
//! pack that is not there) is live wherever a pack holds it.
//!
//! Sweep, under the exclusive lock: (1) copy the live chunks of packs to repack into new
//! packs, durable and indexed; (2) remove (synced) the index entries that still point at
//! the packs to delete; (3) delete those pack files and sync their directories. A crash
//! anywhere leaves every snapshot's chunks reachable through the index: a chunk is only
//! unindexed after its new copy is durable and indexed, and a file is only deleted after
//! nothing in the index points at it. The `gc-in-progress` marker records that a sweep
//! started; the next gc reports it and, recomputing from the snapshots, finishes the job.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::{Error, OptionError, Result};
use crate::format::pack::PackEntry;
use crate::format::record;
use crate::id::PackId;
use crate::ops::progress::Progress;
use crate::ops::reach;
use crate::store::packer::ChunkSink;
use crate::store::repo::Repository;
use crate::store::Key;

pub const DEFAULT_MAX_UNUSED_PCT: f64 = 5.0;

#[derive(Debug, Clone, Serialize)]
pub struct PackPlan {
    pub pack: String,
    pub size: u64,
    pub live_chunks: u64,
    pub live_bytes: u64,
    pub dead_chunks: u64,
    pub dead_bytes: u64,
    #[serde(skip)]
    id: Option<PackId>,
    #[serde(skip)]
    live: Vec<PackEntry>,
    #[serde(skip)]
    all: Vec<PackEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GcPlan {
    pub snapshots: u64,
    pub live_chunks: u64,
    pub packs: u64,
    pub repository_bytes: u64,
    pub delete: Vec<PackPlan>,
    pub repack: Vec<PackPlan>,
    /// Bytes the sweep frees (deleted packs, and the dead part of repacked ones).
    pub bytes_freed: u64,
    /// Live bytes copied by repacking.
    pub bytes_repacked: u64,
    /// A previous gc was interrupted; this one finishes its work.
    pub resumes_interrupted: bool,
    pub max_unused_pct: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub chunks_repacked: u64,
    pub bytes_freed: u64,
    pub scratch_files_removed: u64,
}

/// The share of a pack that may be unused before gc repacks it, in percent (0 to 100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxUnused(f64);

impl MaxUnused {
    pub fn new(pct: f64) -> Result<MaxUnused, OptionError> {
        if (0.0..=100.0).contains(&pct) {
            Ok(MaxUnused(pct))
        } else {
            Err(OptionError::MaxUnused(pct))
        }
    }

    pub fn pct(self) -> f64 {
        self.0
    }
}

impl Default for MaxUnused {
    fn default() -> Self {
        MaxUnused(DEFAULT_MAX_UNUSED_PCT)
    }
}

pub fn plan(repo: &Repository, max_unused: MaxUnused, progress: &dyn Progress) -> Result<GcPlan> {
    let max_unused_pct = max_unused.pct();
    let (snaps, bad) = repo.snapshots()?;
    if let Some(e) = bad.into_iter().next() {
        return Err(match e {
            // What such a record keeps alive is unknown here: refuse, as for damage.
            e @ Error::NewerFormat { .. } => e,
            e => Error::SnapshotUnreadable {
                detail: e.to_string(),
            },
        });
    }
    progress.phase("marking live chunks", None);
    let live = reach::mark(repo, &snaps)?;
    progress.phase("reading pack trailers", None);
    let packs = repo.packs()?;
    let listed: HashSet<PackId> = packs.iter().copied().collect();
    let mut plan = GcPlan {
        snapshots: snaps.len() as u64,
        live_chunks: live.len() as u64,
        packs: packs.len() as u64,
        repository_bytes: 0,
        delete: Vec::new(),
        repack: Vec::new(),
        bytes_freed: 0,
        bytes_repacked: 0,
        resumes_interrupted: repo.store().exists(Key::GcMarker)?,
        max_unused_pct,
    };
    for id in packs {
        let size = repo.pack_size(&id)?;
        plan.repository_bytes += size;
        let (entries, _) = repo.pack_entries(&id)?;
        let mut p = PackPlan {
            pack: id.to_hex(),
            size,
            live_chunks: 0,
            live_bytes: 0,
            dead_chunks: 0,
            dead_bytes: 0,
            id: Some(id),
            live: Vec::new(),
            all: entries.clone(),
        };
        for e in entries {
            // Only live chunks need an index lookup (is this the copy the index uses?).
            let here = live.contains(&e.id)
                && match repo.index().get(&e.id)? {
                    Some(ix) if listed.contains(&ix.pack) => ix.pack == id && ix.offset == e.offset,
                    // Live but unindexed (an index lost its entry), or indexed in a pack
                    // that is not there (lost, or a stale index): this copy may be the
                    // only one, so it is kept.
                    _ => true,
                };
            if here {
                p.live_chunks += 1;
                p.live_bytes += e.record_len();
                p.live.push(e);
            } else {
                p.dead_chunks += 1;
                p.dead_bytes += e.record_len();
            }
        }
        if p.live_chunks == 0 {
            plan.bytes_freed += size;
            plan.delete.push(p);
        } else if p.dead_bytes as f64 > size as f64 * max_unused_pct / 100.0 {
            plan.bytes_freed += p.dead_bytes;
            plan.bytes_repacked += p.live_bytes;
            plan.repack.push(p);
        }
    }
    Ok(plan)
}

pub fn sweep(repo: &Repository, plan: &GcPlan, progress: &dyn Progress) -> Result<GcReport> {
    repo.store().put(
        Key::GcMarker,
        b"gc sweep started; the next gc finishes it\n",
    )?;
    let mut report = GcReport::default();

    // 1. Live chunks of packs to repack: into new packs, durable and indexed.
    let mut written = Vec::new();
    if !plan.repack.is_empty() {
        progress.phase("repacking", Some(plan.bytes_repacked));
        let sink = ChunkSink::new(repo)?;
        let mut out = Vec::new();
        for p in &plan.repack {
            let Some(id) = p.id else { continue };
            let location = repo.pack_location(&id);
            repo.read_records(&id, &p.live, &mut |k, r| {
                let Some(e) = p.live.get(k) else {
                    return Ok(());
                };
                let rec = r?;
                // Verified before it is copied anywhere.
                record::open(rec, e, repo.raw_limits(), &mut out).map_err(|d| {
                    Error::corrupt(
                        d.what(),
                        format!("pack {} offset {}", location, e.offset),
                        d.detail(|| "record does not match the trailer".into()),
                    )
                })?;
                sink.put_record(e, rec)?;
                progress.advance(e.record_len());
                Ok(())
            })
            .map_err(|err| sink.cause(err))?;
            report.packs_repacked += 1;
        }
        report.chunks_repacked = sink
            .stats
            .new_chunks
            .load(std::sync::atomic::Ordering::Relaxed);
        written = sink.finish()?;
    }

    // 2. Unindex what still points at the packs that go (synced before any delete). A
    // pack is named by its bytes, so a repack can write a pack the plan meant to delete:
    // an interrupted gc's unindexed leftover of these very chunks. That one now holds
    // them, indexed, and stays.
    progress.phase("deleting packs", None);
    let doomed: Vec<&PackPlan> = plan
        .delete
        .iter()
        .chain(plan.repack.iter())
        .filter(|p| p.id.is_none_or(|id| !written.contains(&id)))
        .collect();
    for p in &doomed {
        let Some(id) = p.id else { continue };
        let mut stale = Vec::new();
        for e in &p.all {
            if let Some(ix) = repo.index().get(&e.id)? {
                if ix.pack == id {
                    stale.push(e.id);
                }
            }
        }
        repo.index().remove(&stale)?;
    }

    // 3. Delete the files.
    for p in &doomed {
        let Some(id) = p.id else { continue };
        repo.store().delete(Key::Pack(id))?;
        if plan.delete.iter().any(|d| d.id == Some(id)) {
            report.packs_deleted += 1;
        }
    }
    report.bytes_freed = plan.bytes_freed;
    report.scratch_files_removed = repo.store().remove_leftovers()?;
    repo.store().delete(Key::GcMarker)?;
    progress.finish();
    Ok(report)
}
