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
//!
//! A repository hosts share is swept in two phases, since a backup on another host may
//! have deduplicated against a pack this plan finds dead. Phase 1 (mark) repacks as
//! above, then records the packs to delete in `gc-pending` instead of deleting them;
//! backups that open the repository from then on do not deduplicate against them. Phase
//! 2, in a later gc once the grace period has passed, plans again from the snapshots
//! that exist then and deletes only the marked packs that are still dead (a marked pack
//! that a newer snapshot references through the index is kept), then writes a new
//! pack-set epoch (other hosts' indexes reconcile) and only then removes `gc-pending`.
//! Phase 1 writes a new epoch too when it repacked, so that other hosts adopt the new
//! packs instead of storing those chunks again.
//! A gc that finds a due `gc-pending` runs phase 2 and then marks anew.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::{Error, OptionError, Result};
use crate::format::hosts::{GcPending, PackEpoch};
use crate::format::pack::PackEntry;
use crate::id::PackId;
use crate::ops::clock::{now_ns, NS};
use crate::ops::progress::Progress;
use crate::ops::reach;
use crate::store::packer::ChunkSink;
use crate::store::reads::Unopened;
use crate::store::repo::Repository;
use crate::store::Key;

pub const DEFAULT_MAX_UNUSED_PCT: f64 = 5.0;

/// How long packs marked by a gc of a shared repository wait before a later gc may
/// delete them: longer than a backup that started before the mark takes to commit.
pub const DEFAULT_GRACE_SECS: i64 = 3600;

/// The packs an earlier gc marked, as this gc found them.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// Unix seconds.
    pub marked_at: i64,
    pub deletable_at: i64,
    pub packs: u64,
    /// The grace period has passed: this gc deletes those still unreferenced.
    pub due: bool,
    #[serde(skip)]
    ids: Vec<PackId>,
}

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
    /// The pack's key as listed (its kind shows in it from format 2 on).
    #[serde(skip)]
    key: Option<Key>,
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
    /// Of `repack`, the small packs merged into full-size ones (see
    /// `MERGE_SMALL_PACKS_AT`); the others are repacked for their unused share.
    pub small_packs_merged: u64,
    /// A previous gc was interrupted; this one finishes its work.
    pub resumes_interrupted: bool,
    pub max_unused_pct: f64,
    /// The repository is shared by hosts: the sweep marks, and deletes what an earlier
    /// gc marked once its grace period has passed.
    pub two_phase: bool,
    /// Whether the store creates objects only-if-absent atomically across hosts (so
    /// that leases exclude each other); without it the grace period alone protects
    /// backups running elsewhere.
    pub conditional_writes: bool,
    pub grace_secs: i64,
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub chunks_repacked: u64,
    pub bytes_freed: u64,
    pub scratch_files_removed: u64,
    /// Two-phase: packs marked for deletion by this gc, and when they become deletable
    /// (Unix seconds).
    pub packs_marked: u64,
    pub bytes_marked: u64,
    pub marked_deletable_at: Option<i64>,
    /// Two-phase: packs an earlier gc marked that this one kept, because a snapshot
    /// written since references them.
    pub marked_kept: u64,
    /// Leases expired for more than a day (their processes died), removed.
    pub stale_leases_removed: u64,
}

/// How much of the repository may stay unused after gc, in percent (0 to 100): gc repacks
/// the packs with the largest unused share until no more than this is left unused.
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
    plan_with_grace(repo, max_unused, DEFAULT_GRACE_SECS, progress)
}

/// [`plan`] with a grace period of `grace_secs` for a shared repository's marked packs.
pub fn plan_with_grace(
    repo: &Repository,
    max_unused: MaxUnused,
    grace_secs: i64,
    progress: &dyn Progress,
) -> Result<GcPlan> {
    let max_unused_pct = max_unused.pct();
    let two_phase = repo.shared_by_hosts();
    let pending = match repo.gc_pending().filter(|_| two_phase) {
        Some(g) => {
            let ids = g.pack_ids(&repo.store().describe(Key::GcPending))?;
            let deletable_at = g.marked_at.saturating_add(grace_secs);
            Some(Pending {
                marked_at: g.marked_at,
                deletable_at,
                packs: ids.len() as u64,
                due: now_ns() / NS >= deletable_at,
                ids,
            })
        }
        None => None,
    };
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
    let damaged = repo.damaged()?;
    progress.phase("reading pack trailers", None);
    let packs = repo.packs_sized()?;
    let listed: HashSet<PackId> = packs.iter().filter_map(|(k, _)| k.pack_id()).collect();
    // Every pack's entries, read by the I/O threads (from an object store each is a
    // request or two; a repository keeps copies of the trailers it has read).
    let read: Vec<Result<(Vec<PackEntry>, bool)>> = crate::ops::parallel::in_io_pool(|| {
        use rayon::prelude::*;
        packs
            .par_iter()
            .map(|(k, _)| repo.pack_entries_cached(*k))
            .collect()
    });
    let mut plan = GcPlan {
        snapshots: snaps.len() as u64,
        live_chunks: live.len() as u64,
        packs: packs.len() as u64,
        repository_bytes: 0,
        delete: Vec::new(),
        repack: Vec::new(),
        bytes_freed: 0,
        bytes_repacked: 0,
        small_packs_merged: 0,
        resumes_interrupted: repo.store().exists(Key::GcMarker)?,
        max_unused_pct,
        two_phase,
        conditional_writes: repo.store().conditional_writes(),
        grace_secs,
        pending,
    };
    let (mut live_bytes, mut partial, mut small) = (0u64, Vec::new(), Vec::new());
    let small_below = repo.config().pack_target_bytes / SMALL_PACK_FRACTION;
    for ((key, size), entries) in packs.into_iter().zip(read) {
        let Some(id) = key.pack_id() else { continue };
        plan.repository_bytes += size;
        let (entries, scanned) = entries?;
        let mut p = PackPlan {
            pack: id.to_hex(),
            size,
            live_chunks: 0,
            live_bytes: 0,
            dead_chunks: 0,
            dead_bytes: 0,
            id: Some(id),
            key: Some(key),
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
        // A live chunk found damaged here, with no good copy yet, cannot be read to be
        // moved: its pack stays as it is (`repair packs` moves what can be read).
        let unreadable_live = damaged
            .get(&id)
            .is_some_and(|bad| p.live.iter().any(|e| bad.contains(&e.id)));
        // A pack whose trailer is damaged lists only the records a scan recovered: what
        // it holds beyond them is unknown, so it is neither deleted nor repacked.
        if scanned {
            live_bytes += p.live_bytes;
            continue;
        }
        if p.live_chunks == 0 {
            plan.bytes_freed += size;
            plan.delete.push(p);
        } else {
            live_bytes += p.live_bytes;
            if unreadable_live {
                continue;
            }
            if p.dead_chunks > 0 {
                partial.push(p);
            } else if p.size < small_below {
                small.push(p);
            }
        }
    }
    // The unused share is the repository's, not each pack's: the packs with the most
    // unused bytes for what they hold are repacked first, and only until what stays
    // unused is at most `max_unused_pct` of what remains. (Churn spreads over every pack;
    // a share per pack would rewrite nearly all of them, and on object storage each
    // rewritten byte is uploaded again.)
    partial.sort_by(|a, b| {
        let share =
            |p: &PackPlan| p.dead_bytes as f64 / (p.live_bytes + p.dead_bytes).max(1) as f64;
        share(b).total_cmp(&share(a)).then(a.pack.cmp(&b.pack))
    });
    let allowed = if max_unused_pct >= 100.0 {
        f64::INFINITY
    } else {
        live_bytes as f64 * max_unused_pct / (100.0 - max_unused_pct)
    };
    let mut unused: u64 = partial.iter().map(|p| p.dead_bytes).sum();
    for p in partial {
        if unused as f64 > allowed {
            unused -= p.dead_bytes;
            plan.repack_pack(p);
        } else if p.size < small_below {
            small.push(p);
        }
    }
    // Every backup seals its last packs part-filled, and hourly snapshots keep them: one
    // or two small packs an hour, each a request of its own for a restore or a check
    // from object storage, and a trailer more for every gc. Once enough of them pile up,
    // their live chunks are copied into full-size packs (a small cost: they are small).
    // `--max-unused 100` asks that nothing be rewritten: nothing is.
    if small.len() >= MERGE_SMALL_PACKS_AT && max_unused_pct < 100.0 {
        plan.small_packs_merged = small.len() as u64;
        for p in small {
            plan.repack_pack(p);
        }
    }
    Ok(plan)
}

/// A pack smaller than the pack target divided by this is small (see
/// [`MERGE_SMALL_PACKS_AT`]).
const SMALL_PACK_FRACTION: u64 = 4;

/// How many small packs gc lets pile up before it merges them into full-size packs.
const MERGE_SMALL_PACKS_AT: usize = 32;

impl GcPlan {
    fn repack_pack(&mut self, p: PackPlan) {
        self.bytes_freed += p.dead_bytes;
        self.bytes_repacked += p.live_bytes;
        self.repack.push(p);
    }
}

pub fn sweep(repo: &Repository, plan: &GcPlan, progress: &dyn Progress) -> Result<GcReport> {
    let mut report = GcReport::default();
    forget_rebuilds(repo)?;
    if plan.two_phase {
        sweep_two_phase(repo, plan, progress, &mut report)?;
        progress.finish();
        return Ok(report);
    }
    repo.store().put(
        Key::GcMarker,
        b"gc sweep started; the next gc finishes it\n",
    )?;

    // 1. Live chunks of packs to repack: into new packs, durable and indexed.
    let written = repack(repo, plan, progress, &mut report)?;

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
        unindex(repo, p)?;
    }

    // 3. Delete the files (and the damage record of a damaged pack, after it).
    let damaged = repo.damaged()?;
    for p in &doomed {
        let (Some(id), Some(key)) = (p.id, p.key) else {
            continue;
        };
        repo.store().delete(key)?;
        repo.forget_pack(key);
        if damaged.contains_key(&id) {
            repo.forget_damaged(id)?;
        }
        if plan.delete.iter().any(|d| d.id == Some(id)) {
            report.packs_deleted += 1;
        }
    }
    // The record of a pack that is gone (lost, not deleted here) once every chunk it
    // names has a good copy indexed elsewhere: it has nothing left to say. One whose
    // chunks have no other copy stays, for `check` to report what needs them.
    let deleted: HashSet<PackId> = doomed.iter().filter_map(|p| p.id).collect();
    for (&id, chunks) in damaged.iter().filter(|(id, _)| !deleted.contains(id)) {
        if repo.store().exists(Key::Pack(id))? || repo.store().exists(Key::TreePack(id))? {
            continue;
        }
        let mut healed = true;
        for c in chunks {
            healed &= repo.index().get(c)?.is_some_and(|e| e.pack != id);
        }
        if healed {
            repo.forget_damaged(id)?;
        }
    }
    report.bytes_freed = plan.bytes_freed;
    report.scratch_files_removed = repo.store().remove_leftovers()?;
    repo.store().delete(Key::GcMarker)?;
    progress.finish();
    Ok(report)
}

/// Copy the live chunks of the packs to repack into new packs, durable and indexed;
/// returns the packs written.
/// Remove the kept rebuilds (`jellyfin::kept`) of proofs no snapshot holds any more: a
/// database whose every snapshot was forgotten leaves no copy of itself behind.
fn forget_rebuilds(repo: &Repository) -> Result<()> {
    let (snaps, _) = repo.snapshots()?;
    let proven: HashSet<(String, String)> = snaps
        .iter()
        .flat_map(|s| &s.record.databases)
        .filter_map(|d| Some((d.dump.as_ref()?.blake3.clone(), d.verified.clone()?)))
        .collect();
    let dir = repo.state_dir().join(crate::ops::backup::REBUILDS_DIR);
    crate::jellyfin::kept::prune(&dir, |slot| {
        slot.proof
            .is_some_and(|(dump, digest)| proven.contains(&(dump.to_string(), digest.to_string())))
    });
    Ok(())
}

fn repack(
    repo: &Repository,
    plan: &GcPlan,
    progress: &dyn Progress,
    report: &mut GcReport,
) -> Result<Vec<PackId>> {
    if plan.repack.is_empty() {
        return Ok(Vec::new());
    }
    progress.phase("repacking", Some(plan.bytes_repacked));
    let sink = ChunkSink::new(repo)?;
    for p in &plan.repack {
        let Some(key) = p.key else { continue };
        let location = repo.pack_location(key);
        repo.read_records(key, &p.live, &mut |k, r| {
            let Some(e) = p.live.get(k) else {
                return Ok(());
            };
            // Verified before it is copied anywhere.
            let rec = match r {
                Ok(rec) => rec.record,
                Err(Unopened::Read(err)) => return Err(err),
                Err(Unopened::Damaged(d)) => {
                    return Err(Error::corrupt(
                        d.what(),
                        format!("pack {} offset {}", location, e.offset),
                        d.detail(|| "record does not match the trailer".into()),
                    ))
                }
            };
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
    sink.finish()
}

/// Remove (synced) the index entries that still point at a pack about to be deleted.
fn unindex(repo: &Repository, p: &PackPlan) -> Result<()> {
    let Some(id) = p.id else { return Ok(()) };
    let mut stale = Vec::new();
    for e in &p.all {
        if let Some(ix) = repo.index().get(&e.id)? {
            if ix.pack == id {
                stale.push(e.id);
            }
        }
    }
    repo.index().remove_pack(id, &stale)
}

/// The sweep of a repository hosts share: phase 2 of an earlier mark when its grace
/// period has passed, then a new mark; nothing while an earlier mark waits.
fn sweep_two_phase(
    repo: &Repository,
    plan: &GcPlan,
    progress: &dyn Progress,
    report: &mut GcReport,
) -> Result<()> {
    let store = repo.store();
    if let Some(lease) = repo.lease() {
        for id in lease.stale() {
            store.delete(Key::Lease(*id))?;
            report.stale_leases_removed += 1;
        }
    }
    let mut deleted: HashSet<PackId> = HashSet::new();
    match &plan.pending {
        Some(p) if !p.due => return Ok(()),
        Some(p) => {
            // Phase 2: of the marked packs, those this plan (made from the snapshots
            // that exist now) finds dead. A marked pack that holds a chunk a newer
            // snapshot uses, where the index has no other copy, is live here and kept.
            store.put(
                Key::GcMarker,
                b"gc deleting marked packs; the next gc finishes it\n",
            )?;
            progress.phase("deleting marked packs", None);
            let marked: HashSet<PackId> = p.ids.iter().copied().collect();
            let dead: Vec<&PackPlan> = plan
                .delete
                .iter()
                .filter(|d| d.id.is_some_and(|id| marked.contains(&id)))
                .collect();
            repo.check_lease()?;
            for d in &dead {
                unindex(repo, d)?;
            }
            for d in &dead {
                let (Some(id), Some(key)) = (d.id, d.key) else {
                    continue;
                };
                store.delete(key)?;
                repo.forget_pack(key);
                deleted.insert(id);
                report.packs_deleted += 1;
                report.bytes_freed += d.size;
            }
            let listed: HashSet<PackId> = plan
                .delete
                .iter()
                .chain(plan.repack.iter())
                .filter_map(|d| d.id)
                .collect();
            report.marked_kept = p
                .ids
                .iter()
                .filter(|id| !deleted.contains(id) && !listed.contains(id))
                .count() as u64;
            report.marked_kept += plan
                .repack
                .iter()
                .filter(|d| d.id.is_some_and(|id| marked.contains(&id)))
                .count() as u64;
            // Other hosts' indexes learn of the deletes from the new epoch; the marks
            // go only after it is written.
            new_epoch(repo)?;
            store.delete(Key::GcPending)?;
            report.scratch_files_removed = store.remove_leftovers()?;
            store.delete(Key::GcMarker)?;
        }
        None => {}
    }

    // Phase 1: repack, then mark what goes (packs phase 2 just deleted aside).
    let to_mark: Vec<&PackPlan> = plan
        .delete
        .iter()
        .chain(plan.repack.iter())
        .filter(|d| d.id.is_some_and(|id| !deleted.contains(&id)))
        .collect();
    let repacking = plan
        .repack
        .iter()
        .any(|d| d.id.is_some_and(|id| !deleted.contains(&id)));
    if to_mark.is_empty() && !repacking {
        return Ok(());
    }
    store.put(
        Key::GcMarker,
        b"gc marking packs; the next gc finishes it\n",
    )?;
    let written = repack(repo, plan, progress, report)?;
    let marked: Vec<PackId> = to_mark
        .iter()
        .filter_map(|d| d.id)
        .filter(|id| !written.contains(id))
        .collect();
    if !marked.is_empty() {
        let now = now_ns() / NS;
        repo.check_lease()?;
        store.put(Key::GcPending, &GcPending::new(now, &marked).encode()?)?;
        report.packs_marked = marked.len() as u64;
        report.bytes_marked = to_mark
            .iter()
            .filter(|d| d.id.is_some_and(|id| marked.contains(&id)))
            .map(|d| d.size)
            .sum();
        report.marked_deletable_at = Some(now.saturating_add(plan.grace_secs));
    }
    // Other hosts adopt the repacked packs (and stop storing those chunks again).
    if !written.is_empty() {
        new_epoch(repo)?;
    }
    store.delete(Key::GcMarker)?;
    Ok(())
}

/// Write a new pack-set epoch, and record it in this host's index, which is already in
/// line with the store.
fn new_epoch(repo: &Repository) -> Result<()> {
    let epoch = PackEpoch::random();
    repo.store().put(Key::PackEpoch, &epoch.encode()?)?;
    if let Some(rocks) = repo.rocks_index() {
        rocks.record_seen(&[], false, Some(&epoch.token))?;
    }
    Ok(())
}
