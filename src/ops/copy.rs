//! Copying snapshots into another repository (docs/ARCHITECTURE.md, "Copy").
//!
//! Only what the destination lacks moves: for each chosen snapshot, oldest first, the
//! source's trees and list chunks are walked (level by level, each level's records read
//! pack by pack with adjacent records in one read), the chunks the destination's index
//! already has are dropped, and the rest go over as their stored records: verified
//! against their ids on the way (nothing unverified is written), never recompressed.
//! Data chunks go to the destination's pack writer first, then list chunks and trees
//! children first. The snapshot record is written, byte for byte (so the snapshot keeps
//! its id, name, tags, parent, summary, database proofs, `seq` and `seq_repo`), only once
//! every chunk it needs is durable and indexed at the destination.
//!
//! One pack writer serves the whole run ([`ChunkSink::in_step`]), so that packs fill to
//! the repository's target whatever the number of snapshots: thirty snapshots of a data
//! dir that changes a little each day make a pack or two, not sixty (each a request on
//! object storage, and small packs slow every later gc and restore). Records are written
//! as their chunks become durable: the writer seals its data and tree packs together
//! whenever either fills, and counts the chunks of each kind it has made durable in the
//! order they were handed over; a snapshot waits for the counts reached when its last
//! chunk was handed over, and is written as soon as they are durable. So a record waits
//! at most about one pack's worth of later data, never the end of the run: a copy killed
//! near its end has written every snapshot but those whose chunks were still in the open
//! packs. Were the records held to the end, such a kill would keep the packs (the next
//! run finds them indexed) but lose every record, and the next run would walk every
//! snapshot again; written per snapshot, each would seal its own small packs.
//!
//! A run killed anywhere leaves every written snapshot whole, and the next run sends
//! again only what the open packs held (never durable): the one pack durable but not yet
//! indexed when it was killed is found at the next writer's open, in the store's listing
//! (a local destination lists at every writer's open, one hosts share when the pack
//! writer's mark is set, see `store/index.rs`).
//!
//! A damaged source chunk stops its snapshot, not the run: the others are copied, and
//! the report names the snapshot and the chunk (its chunks already handed over stay in
//! the packs: named by their content, they serve any snapshot that needs them). A failed
//! destination write, or a read the system refuses (which says nothing about the bytes),
//! ends the run, after the records whose chunks are durable are written.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::chunklist;
use crate::format::pack::PackEntry;
use crate::format::snapshot::{sort_written, Snapshot, SnapshotRecord};
use crate::format::tree::{Node, Tree};
use crate::id::{ChunkId, SnapshotId};
use crate::ops::progress::Progress;
use crate::store::packer::{ChunkSink, Handed};
use crate::store::reads::Unopened;
use crate::store::repo::{resolve_in, Access, Repository};
use crate::store::{Key, Place};

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Snapshots to copy (names, id prefixes, `latest`); empty: every snapshot the
    /// destination lacks.
    pub snapshots: Vec<String>,
    /// Work out what would be copied; write nothing.
    pub dry_run: bool,
}

/// A snapshot, as the report names it.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRef {
    pub id: String,
    pub name: Option<String>,
    pub time_ns: i64,
}

impl SnapshotRef {
    fn of(s: &Snapshot) -> Self {
        SnapshotRef {
            id: s.id.to_hex(),
            name: s.record.name.clone(),
            time_ns: s.record.time_ns,
        }
    }
}

/// A snapshot that was not copied, and why.
#[derive(Debug, Serialize)]
pub struct Refused {
    pub snapshot: SnapshotRef,
    /// The source chunk that could not be read or verified, when one is the cause.
    pub chunk: Option<String>,
    pub reason: String,
    #[serde(skip)]
    pub error: Error,
}

#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    pub dry_run: bool,
    /// Copied (with `dry_run`: would be copied), oldest first.
    pub copied: Vec<SnapshotRef>,
    /// Chosen, but the destination already has them: the same record, or the snapshot
    /// at the same or a later edit (then named as the destination lists it).
    pub already_present: Vec<SnapshotRef>,
    /// Not copied: a name taken by another snapshot in the destination, damage.
    pub refused: Vec<Refused>,
    /// Chunks sent (would be sent) and their stored bytes.
    pub chunks_sent: u64,
    pub bytes_sent: u64,
    /// Chunks the copied snapshots need that the destination already had.
    pub chunks_present: u64,
    pub packs_written: u64,
    /// The destination cuts data with other parameters than the source: the copied
    /// chunks still serve, but the two repositories' own backups share less.
    pub chunking_differs: bool,
    /// Copied edits of snapshots the destination held an older record of: those
    /// records are superseded there now, for [`retire_superseded`] to delete.
    #[serde(skip)]
    pub superseding: Vec<SnapshotId>,
}

/// The destination of a copy: a repository, or none yet (a dry run of `--init`).
pub enum Destination<'a> {
    Repository(&'a Repository),
    /// Not created yet: everything would be copied.
    Absent,
}

impl Destination<'_> {
    fn repo(&self) -> Option<&Repository> {
        match self {
            Destination::Repository(r) => Some(r),
            Destination::Absent => None,
        }
    }

    fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        match self.repo() {
            Some(r) => Ok(r.index().get(id)?.is_some()),
            None => Ok(false),
        }
    }
}

/// Open the destination of a copy from `source` at `path`, for writing (for reading in a
/// dry run). With `create`, a path that holds no repository gets a new one with the
/// source's parameters (a dry run creates nothing: `None`). Without it, such a path is
/// refused: a disk that is not mounted must not receive a full copy in its mount point.
/// Returns the repository and whether it was created.
pub fn open_destination(
    place: &Place,
    source: &Repository,
    create: bool,
    dry_run: bool,
) -> Result<(Option<Repository>, bool)> {
    let access = if dry_run { Access::Read } else { Access::Write };
    let mut created = false;
    let repo = match Repository::open(place, access) {
        Err(Error::NotARepository(_)) if !create => {
            return Err(Error::CopyNoRepository(place.location.as_path()))
        }
        Err(Error::NotARepository(_)) if dry_run => return Ok((None, false)),
        Err(Error::NotARepository(_)) => {
            let mut seed = [0u8; 16];
            crate::sys::getrandom(&mut seed);
            match Repository::init_with(place, source.config().with_id(seed)) {
                Ok(_) => created = true,
                // Another process made it meanwhile: copy into it.
                Err(Error::AlreadyInitialized { .. }) => {}
                Err(e) => return Err(e),
            }
            Repository::open(place, access)?
        }
        r => r?,
    };
    // Same id: the same repository (under another name), or a byte copy of it.
    if repo.config().repo_id == source.config().repo_id {
        return Err(Error::CopyIntoItself {
            path: place.location.as_path(),
        });
    }
    Ok((Some(repo), created))
}

/// Copy the chosen snapshots of `src` into `dst` (see the module doc). A snapshot that
/// cannot be copied is in the report's `refused`; an error ends the run, every snapshot
/// copied before it whole.
pub fn copy(
    src: &Repository,
    dst: Destination,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let mut report = CopyReport {
        dry_run: opts.dry_run,
        chunking_differs: dst
            .repo()
            .is_some_and(|d| !d.config().same_chunking(src.config())),
        ..CopyReport::default()
    };
    let present: HashSet<SnapshotId> = match dst.repo() {
        Some(d) => d.snapshot_ids()?.into_iter().collect(),
        None => HashSet::new(),
    };
    progress.phase("choosing snapshots", None);
    let mut chosen = choose(src, &present, opts, &mut report)?;
    if !chosen.is_empty() {
        chosen = current_edits(src, dst.repo(), chosen, &mut report)?;
    }
    if chosen.is_empty() {
        progress.finish();
        return Ok(report);
    }
    // Names the destination's snapshots hold: a copied one may not take another's
    // (read only when a chosen snapshot has a name: each record is a request).
    // (A record of the same snapshot, edited on either side, does not take its name:
    // the copy becomes one of its records, and the newest edit is the snapshot.)
    let mut names: HashMap<String, (SnapshotId, SnapshotId)> = HashMap::new();
    let named = chosen.iter().any(|(s, _)| s.record.name.is_some());
    if let Some(d) = dst.repo().filter(|_| named) {
        for s in d.snapshots()?.0 {
            let origin = s.origin();
            if let Some(n) = s.record.name {
                names.insert(n, (s.id, origin));
            }
        }
    }
    let mut run = Run {
        src,
        dst: &dst,
        good: HashSet::new(),
        sent: HashSet::new(),
        present: HashSet::new(),
        dry_run: opts.dry_run,
        progress,
        sink: None,
        handed: Handed::default(),
        waiting: VecDeque::new(),
    };
    let ran = run.each(chosen, &mut names, &mut report);
    run.settle(ran, &mut report)?;
    let copied: HashSet<&str> = report.copied.iter().map(|c| c.id.as_str()).collect();
    let superseding = std::mem::take(&mut report.superseding);
    report.superseding = superseding
        .into_iter()
        .filter(|id| copied.contains(id.to_hex().as_str()))
        .collect();
    progress.finish();
    Ok(report)
}

/// After a copy: delete, at the destination (`place`), the records the copied edits
/// (`report.superseding`) supersede there, as a local edit deletes the records it
/// supersedes once its own is committed, and under the exclusive lock as it does. Only
/// records whose ids the copied edit lists (its `of`, `replaces`, `earlier`) go: one
/// it does not know (an edit made at the destination meanwhile) stays, hidden, so that
/// its id keeps finding the snapshot, until the next edit or forget of it there.
/// Returns the ids deleted. Takes the destination's exclusive lock: the caller holds
/// no other handle on it.
pub fn retire_superseded(place: &Place, report: &CopyReport) -> Result<Vec<SnapshotId>> {
    let mut removed = Vec::new();
    if report.dry_run || report.superseding.is_empty() {
        return Ok(removed);
    }
    let dst = Repository::open_as(place, Access::Exclusive, "copy")?;
    let (snaps, _) = dst.snapshots()?;
    for s in snaps.iter().filter(|s| report.superseding.contains(&s.id)) {
        // What the copied record itself knows, not what the stored ones add.
        let known = Snapshot::new(s.id, s.record.clone());
        for old in s.superseded.iter().filter(|o| known.answers_to(o)) {
            if dst.remove_snapshot(old)? {
                removed.push(*old);
            }
        }
    }
    Ok(removed)
}

impl Run<'_> {
    /// Copy the chosen snapshots in turn (see [`copy`]).
    fn each(
        &mut self,
        chosen: Vec<(Snapshot, Vec<u8>)>,
        names: &mut HashMap<String, (SnapshotId, SnapshotId)>,
        report: &mut CopyReport,
    ) -> Result<()> {
        for (snap, bytes) in chosen {
            if let Some(name) = &snap.record.name {
                if let Some((other, _)) = names
                    .get(name)
                    .filter(|(_, origin)| *origin != snap.origin())
                {
                    let error = Error::CopyNameTaken {
                        snapshot: snap.id.to_hex(),
                        name: name.clone(),
                        other: other.to_hex(),
                    };
                    report.refused.push(Refused {
                        snapshot: SnapshotRef::of(&snap),
                        chunk: None,
                        reason: error.to_string(),
                        error,
                    });
                    continue;
                }
            }
            match self.one(snap.clone(), bytes, report)? {
                None => {
                    if let Some(n) = &snap.record.name {
                        names.insert(n.clone(), (snap.id, snap.origin()));
                    }
                }
                Some((chunk, error)) => report.refused.push(Refused {
                    snapshot: SnapshotRef::of(&snap),
                    chunk: chunk.map(|c| c.to_hex()),
                    reason: match chunk {
                        Some(c) => format!(
                            "snapshot {}{} not copied: chunk {c}: {error}",
                            snap.id.short(),
                            paren(&snap.record.name)
                        ),
                        None => format!(
                            "snapshot {}{} not copied: {error}",
                            snap.id.short(),
                            paren(&snap.record.name)
                        ),
                    },
                    error,
                }),
            }
            self.release(report)?;
        }
        Ok(())
    }

    /// End the run: make every chunk handed over durable and write the records still
    /// waiting. After an error, the records whose chunks the pack writer could make
    /// durable are still written (a record the destination then refuses stays out, for
    /// the next run), and the run ends with the error.
    fn settle(&mut self, ran: Result<()>, report: &mut CopyReport) -> Result<()> {
        let Some(sink) = self.sink.take() else {
            let released = self.release(report);
            return ran.and(released);
        };
        if ran.is_ok() {
            self.progress.phase("syncing packs and index", None);
        }
        // Joins the writer: whatever it sealed is durable and indexed, unless it stopped
        // on an error of its own, which is then the one reported.
        let joined = match ran {
            Ok(()) => sink.join(),
            Err(e) => Err(sink.cause(e)),
        };
        let durable = sink.durable();
        if joined.is_ok() {
            report.packs_written = sink.finish()?.len() as u64;
        }
        let released = release(self.dst, &mut self.waiting, &durable, report);
        joined.and(released)
    }

    /// Write the records of the waiting snapshots whose chunks are durable now.
    fn release(&mut self, report: &mut CopyReport) -> Result<()> {
        let durable = match &self.sink {
            Some(sink) => sink.durable(),
            // Nothing handed over yet: every waiting snapshot had all it needs.
            None => self.handed,
        };
        release(self.dst, &mut self.waiting, &durable, report)
    }
}

/// A snapshot whose chunks are all handed to the pack writer, with the counts of chunks
/// handed over (by kind) that must be durable before its record is written.
struct Waiting {
    snap: Snapshot,
    record: Vec<u8>,
    need: Handed,
}

/// Write, oldest first, the records of the `waiting` snapshots whose chunks `durable`
/// covers (write order 3: a record only after every pack it needs). The needs grow
/// along the queue, so the first one not covered ends it.
fn release(
    dst: &Destination,
    waiting: &mut VecDeque<Waiting>,
    durable: &Handed,
    report: &mut CopyReport,
) -> Result<()> {
    let Some(d) = dst.repo() else {
        return Ok(());
    };
    while waiting.front().is_some_and(|w| durable.covers(&w.need)) {
        let Some(w) = waiting.pop_front() else { break };
        d.commit_snapshot_bytes(&w.snap.id, &w.record)?;
        report.copied.push(SnapshotRef::of(&w.snap));
    }
    Ok(())
}

/// ` (name)`, or nothing.
fn paren(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
}

/// The snapshots to copy with their record bytes, oldest first; those the destination
/// has go to `already_present`, unreadable source records to `refused`.
fn choose(
    src: &Repository,
    present: &HashSet<SnapshotId>,
    opts: &CopyOptions,
    report: &mut CopyReport,
) -> Result<Vec<(Snapshot, Vec<u8>)>> {
    let mut ids: Vec<SnapshotId> = Vec::new();
    if opts.snapshots.is_empty() {
        // Only the records the destination lacks are read: a run with nothing new costs
        // two listings.
        ids = src.snapshot_ids()?;
    } else {
        let (snaps, _) = src.snapshots()?;
        for q in &opts.snapshots {
            let s = resolve_in(snaps.clone(), q)?;
            if !ids.contains(&s.id) {
                ids.push(s.id);
            }
        }
    }
    let mut out = Vec::new();
    for id in ids {
        if present.contains(&id) {
            if !opts.snapshots.is_empty() {
                let bytes = src.store().get(Key::Snapshot(id))?;
                let record = SnapshotRecord::decode(&bytes, &id)?;
                report
                    .already_present
                    .push(SnapshotRef::of(&Snapshot::new(id, record)));
            }
            continue;
        }
        let bytes = src.store().get(Key::Snapshot(id))?;
        match SnapshotRecord::decode(&bytes, &id) {
            Ok(record) => out.push((Snapshot::new(id, record), bytes)),
            // A damaged record, or one only a newer jellysnap reads: that snapshot stays
            // out, the others go.
            Err(error) if is_damage(&error) || matches!(error, Error::NewerFormat { .. }) => {
                report.refused.push(Refused {
                    snapshot: SnapshotRef {
                        id: id.to_hex(),
                        name: None,
                        time_ns: 0,
                    },
                    chunk: None,
                    reason: format!("snapshot {} not copied: {error}", id.short()),
                    error,
                })
            }
            Err(e) => return Err(e),
        }
    }
    sort_written(&mut out, &src.config().repo_id, |(s, _)| s);
    report.already_present.sort_by_key(|s| s.time_ns);
    Ok(out)
}

/// Of records the destination lacks, the ones to send: not a record the source itself
/// has superseded by an edit (the snapshot goes as its current record), and not one of a
/// snapshot the destination already holds at the same or a later edit (edited there,
/// or copied before): sending it would only add a superseded record there, every run.
/// Such a snapshot is already present.
fn current_edits(
    src: &Repository,
    dst: Option<&Repository>,
    chosen: Vec<(Snapshot, Vec<u8>)>,
    report: &mut CopyReport,
) -> Result<Vec<(Snapshot, Vec<u8>)>> {
    let superseded: HashSet<SnapshotId> = src
        .snapshots()?
        .0
        .iter()
        .flat_map(|s| s.superseded.iter().copied())
        .collect();
    let held: HashMap<(SnapshotId, ChunkId), Snapshot> = match dst {
        Some(d) => d
            .snapshots()?
            .0
            .into_iter()
            .map(|s| ((s.origin(), s.record.tree), s))
            .collect(),
        None => HashMap::new(),
    };
    let mut out = Vec::new();
    for (snap, bytes) in chosen {
        if superseded.contains(&snap.id) {
            continue;
        }
        match held.get(&(snap.origin(), snap.record.tree)) {
            Some(there) if there.edits() >= snap.edits() => {
                // Named as the destination lists it: the id (and name) that find it there.
                report.already_present.push(SnapshotRef::of(there));
            }
            Some(_) => {
                report.superseding.push(snap.id);
                out.push((snap, bytes));
            }
            None => out.push((snap, bytes)),
        }
    }
    Ok(out)
}

/// Whether an error says the source's bytes are damaged or missing (the snapshot is not
/// copied, the run goes on), rather than that the system refused (the run ends).
fn is_damage(e: &Error) -> bool {
    match e {
        Error::Corrupt { .. } | Error::ChunkMissing { .. } | Error::PackMissing { .. } => true,
        Error::Io { .. } | Error::Remote { .. } => !e.is_refusal(),
        _ => false,
    }
}

/// A tree-kind chunk found by the walk.
struct Meta {
    /// Its stored record (what its header says, and its bytes), kept when the
    /// destination lacks it.
    record: Option<(PackEntry, Vec<u8>)>,
    /// The tree-kind chunks it names.
    children: Vec<ChunkId>,
}

/// What one snapshot reaches beyond what this run already placed at the destination.
#[derive(Default)]
struct Walked {
    meta: HashMap<ChunkId, Meta>,
    data: HashSet<ChunkId>,
}

/// How a tree-kind chunk is decoded.
#[derive(Clone, Copy)]
enum Role {
    Tree,
    /// A list chunk `levels` above the data chunks.
    List(u8),
}

/// A damaged chunk (when known) and the error.
type Damage = (Option<ChunkId>, Error);

struct Run<'a> {
    src: &'a Repository,
    dst: &'a Destination<'a>,
    /// Tree-kind chunks whose every descendant is at the destination (walked for a
    /// snapshot this run copied): not walked again.
    good: HashSet<ChunkId>,
    /// Chunks sent (or, in a dry run, counted) by this run.
    sent: HashSet<ChunkId>,
    /// Chunks found at the destination already (counted once).
    present: HashSet<ChunkId>,
    dry_run: bool,
    progress: &'a dyn Progress,
    /// The destination's pack writer, one for the whole run (started when the first
    /// chunk is to go).
    sink: Option<ChunkSink<'a>>,
    /// Chunks handed to `sink` so far, by kind.
    handed: Handed,
    /// Snapshots whose records wait for their chunks to be durable, oldest first.
    waiting: VecDeque<Waiting>,
}

impl<'a> Run<'a> {
    /// Copy one snapshot: its missing chunks are handed to the pack writer and its
    /// record queued until they are durable (a dry run counts them and reports it
    /// copied). `Ok(Some(..))`: not copied, because of damage in the source.
    fn one(
        &mut self,
        snap: Snapshot,
        record: Vec<u8>,
        report: &mut CopyReport,
    ) -> Result<Option<Damage>> {
        let label = format!("snapshot {}{}", snap.id.short(), paren(&snap.record.name));
        self.progress
            .phase(&format!("reading the trees of {label}"), None);
        let walked = match self.walk(&snap.record.tree)? {
            Ok(w) => w,
            Err(d) => return Ok(Some(d)),
        };
        // What the destination lacks.
        let mut data = Vec::new();
        for id in &walked.data {
            if self.sent.contains(id) {
                continue;
            }
            if self.dst.has_chunk(id)? {
                self.present.insert(*id);
            } else {
                data.push(*id);
            }
        }
        let present = walked
            .meta
            .iter()
            .filter(|(id, m)| m.record.is_none() && !self.sent.contains(id))
            .map(|(id, _)| *id);
        self.present.extend(present);
        report.chunks_present = self.present.len() as u64;
        let trees = post_order(&snap.record.tree, &walked.meta);
        // A chunk the source's index does not have is missing there: the snapshot
        // stays out before anything is sent (and a dry run says so too).
        let mut data_bytes = 0u64;
        for id in &data {
            match self.src.index().get(id)? {
                Some(e) => data_bytes += u64::from(e.stored_len),
                None => return Ok(Some((Some(*id), Error::ChunkMissing { chunk: *id }))),
            }
        }
        let tree_bytes: u64 = trees
            .iter()
            .filter_map(|id| walked.meta.get(id)?.record.as_ref())
            .map(|(e, _)| u64::from(e.stored_len))
            .sum();
        let dst = match self.dst.repo() {
            Some(d) if !report.dry_run => d,
            _ => {
                // A dry run: count, and check nothing more (reading every data record
                // would be the copy's cost without its use).
                let n_trees = trees
                    .iter()
                    .filter(|id| walked.meta.get(id).is_some_and(|m| m.record.is_some()))
                    .count();
                report.chunks_sent += (data.len() + n_trees) as u64;
                report.bytes_sent += data_bytes + tree_bytes;
                self.sent.extend(data);
                self.sent.extend(trees);
                self.good.extend(walked.meta.into_keys());
                report.copied.push(SnapshotRef::of(&snap));
                return Ok(None);
            }
        };
        self.progress
            .phase(&format!("copying {label}"), Some(data_bytes + tree_bytes));
        if self.sink.is_none() && (!data.is_empty() || tree_bytes > 0) {
            self.sink = Some(ChunkSink::in_step(dst)?);
        }
        if let Some(d) = self.send(&data, &trees, &walked, report)? {
            return Ok(Some(d));
        }
        self.good.extend(walked.meta.into_keys());
        // Its chunks, and those earlier snapshots of the run handed over that it may
        // share, are durable once the counts reached now are (write order 2, 3).
        self.waiting.push_back(Waiting {
            snap,
            record,
            need: self.handed,
        });
        Ok(None)
    }

    /// Send the missing data chunks, then the missing list chunks and trees in `order`
    /// (children first), writing on the way the waiting records whose chunks became
    /// durable. `Ok(Some(..))`: a damaged source chunk stopped it.
    fn send(
        &mut self,
        data: &[ChunkId],
        order: &[ChunkId],
        walked: &Walked,
        report: &mut CopyReport,
    ) -> Result<Option<Damage>> {
        let Run {
            src,
            dst,
            sent,
            progress,
            sink,
            handed,
            waiting,
            ..
        } = self;
        let Some(sink) = sink.as_ref() else {
            return Ok(None);
        };
        let mut put = |entry: &PackEntry, bytes: &[u8], report: &mut CopyReport| {
            sink.put_record(entry, bytes)?;
            handed.add(entry.kind);
            report.chunks_sent += 1;
            report.bytes_sent += u64::from(entry.stored_len);
            progress.advance(u64::from(entry.stored_len));
            release(dst, waiting, &sink.durable(), report)
        };
        let mut damage = None;
        read_records(src, data, &mut |id, rec| match rec {
            Ok(r) => {
                sent.insert(id);
                put(&r.entry, r.record, report)?;
                Ok(true)
            }
            Err(e) => {
                damage = Some((Some(id), e));
                Ok(false)
            }
        })?;
        if damage.is_some() {
            return Ok(damage);
        }
        for id in order {
            let Some(m) = walked.meta.get(id) else {
                continue;
            };
            let Some((entry, bytes)) = &m.record else {
                continue;
            };
            if !sent.insert(*id) {
                continue;
            }
            put(entry, bytes, report)?;
        }
        Ok(None)
    }

    /// Walk a snapshot's trees and list chunks from `root`, level by level, skipping
    /// those whose descendants this run already placed. A chunk the destination has
    /// and the source keeps a local copy of (a source kept elsewhere) is read from
    /// that copy; the others are read from the source's packs, a level at a time. The
    /// inner `Err`: damage.
    fn walk(&self, root: &ChunkId) -> Result<std::result::Result<Walked, Damage>> {
        let mut w = Walked::default();
        let mut level: Vec<(ChunkId, Role)> = Vec::new();
        if !self.good.contains(root) {
            level.push((*root, Role::Tree));
        }
        let mut queued: HashSet<ChunkId> = level.iter().map(|(id, _)| *id).collect();
        while !level.is_empty() {
            let mut next: Vec<(ChunkId, Role)> = Vec::new();
            let mut roles: HashMap<ChunkId, Role> = HashMap::new();
            for (id, role) in level {
                let there = self.sent.contains(&id) || self.dst.has_chunk(&id)?;
                let cached = match there {
                    true => self.src.cached_tree(&id),
                    false => None,
                };
                let Some(plain) = cached else {
                    roles.insert(id, role);
                    continue;
                };
                match self.expand(&id, role, &plain, &mut w, &mut queued, &mut next) {
                    Ok(children) => {
                        w.meta.insert(
                            id,
                            Meta {
                                record: None,
                                children,
                            },
                        );
                    }
                    Err(e) => return Ok(Err((Some(id), e))),
                }
            }
            let ids: Vec<ChunkId> = roles.keys().copied().collect();
            let mut damage: Option<Damage> = None;
            read_records(self.src, &ids, &mut |id, rec| {
                let r = match rec {
                    Ok(r) => r,
                    Err(e) => {
                        damage = Some((Some(id), e));
                        return Ok(false);
                    }
                };
                let role = roles.get(&id).copied().unwrap_or(Role::Tree);
                let children = match self.expand(&id, role, r.raw, &mut w, &mut queued, &mut next) {
                    Ok(c) => c,
                    Err(e) => {
                        damage = Some((Some(id), e));
                        return Ok(false);
                    }
                };
                let record = if self.sent.contains(&id) || self.dst.has_chunk(&id)? {
                    None
                } else {
                    // A destination kept elsewhere keeps a local copy of the trees it
                    // gets, as of those a backup writes (read only once indexed).
                    if let Some(d) = self.dst.repo().filter(|_| !self.dry_run) {
                        d.cache_tree(&id, r.raw);
                    }
                    Some((r.entry, r.record.to_vec()))
                };
                w.meta.insert(id, Meta { record, children });
                Ok(true)
            })?;
            if let Some(d) = damage {
                return Ok(Err(d));
            }
            level = next;
        }
        Ok(Ok(w))
    }

    /// Decode one tree-kind chunk (`plain`, verified): its data chunks go to `w`, the
    /// tree-kind chunks it names not yet queued to `next`. Returns those it names.
    fn expand(
        &self,
        id: &ChunkId,
        role: Role,
        plain: &[u8],
        w: &mut Walked,
        queued: &mut HashSet<ChunkId>,
        next: &mut Vec<(ChunkId, Role)>,
    ) -> Result<Vec<ChunkId>> {
        let mut children = Vec::new();
        let mut child = |c: ChunkId, role: Role| {
            children.push(c);
            if !self.good.contains(&c) && queued.insert(c) {
                next.push((c, role));
            }
        };
        match role {
            Role::Tree => {
                for e in Tree::decode(plain, id)?.entries {
                    match e.node {
                        Node::Dir { tree } => child(tree, Role::Tree),
                        Node::File {
                            chunks, indirect, ..
                        } if indirect > 0 => {
                            for c in chunks {
                                child(c.id, Role::List(indirect));
                            }
                        }
                        Node::File { chunks, .. } => w.data.extend(chunks.iter().map(|c| c.id)),
                        Node::Symlink { .. } => {}
                    }
                }
            }
            Role::List(levels) => {
                for c in chunklist::decode_list(plain, id)? {
                    if levels <= 1 {
                        w.data.insert(c.id);
                    } else {
                        child(c.id, Role::List(levels - 1));
                    }
                }
            }
        }
        Ok(children)
    }
}

/// The walked tree-kind chunks under `root`, each after every chunk it names, so a
/// tree pack never holds a tree before what it lists (write order 3).
fn post_order(root: &ChunkId, meta: &HashMap<ChunkId, Meta>) -> Vec<ChunkId> {
    let mut out = Vec::with_capacity(meta.len());
    let mut done: HashSet<ChunkId> = HashSet::new();
    // An explicit stack: (chunk, whether its children are already pushed).
    let mut stack = vec![(*root, false)];
    while let Some((id, expanded)) = stack.pop() {
        let Some(m) = meta.get(&id) else { continue };
        if expanded {
            if done.insert(id) {
                out.push(id);
            }
            continue;
        }
        if done.contains(&id) {
            continue;
        }
        stack.push((id, true));
        for c in m.children.iter().rev() {
            if !done.contains(c) {
                stack.push((*c, false));
            }
        }
    }
    out
}

/// One verified record read from the source.
struct Record<'b> {
    entry: PackEntry,
    /// The whole record as stored (header and payload, compressed or not).
    record: &'b [u8],
    /// The chunk's bytes.
    raw: &'b [u8],
}

/// Read the records of `ids` from `src`: pack by pack in offset order, records close
/// together in one read (`Repository::read_records`), each verified against its id and
/// its index entry (`format::record::open`) before `f` sees it. A chunk that is missing
/// or damaged goes to `f` as its error; `f` returns whether to go on. A read the system
/// refuses ends it as that error.
fn read_records(
    src: &Repository,
    ids: &[ChunkId],
    f: &mut dyn FnMut(ChunkId, Result<Record<'_>>) -> Result<bool>,
) -> Result<()> {
    let mut located: Vec<(Key, PackEntry)> = Vec::with_capacity(ids.len());
    for id in ids {
        match src.index().get(id)? {
            Some(e) => located.push((src.pack_key(e.pack, e.kind), e.record(*id))),
            None => {
                if !f(*id, Err(Error::ChunkMissing { chunk: *id }))? {
                    return Ok(());
                }
            }
        }
    }
    located.sort_by_key(|(pack, e)| (*pack, e.offset));
    for group in located.chunk_by(|a, b| a.0 == b.0) {
        let Some((key, pack)) = group.first().and_then(|(k, _)| Some((*k, k.pack_id()?))) else {
            continue;
        };
        let entries: Vec<PackEntry> = group.iter().map(|(_, e)| *e).collect();
        let mut stopped = false;
        src.read_records(key, &entries, &mut |k, read| {
            let Some(e) = entries.get(k).filter(|_| !stopped) else {
                return Ok(());
            };
            let loc = || format!("pack {pack} offset {}", e.offset);
            let opened = match read {
                Ok(rec) => Ok(Record {
                    entry: *e,
                    record: rec.record,
                    raw: rec.raw,
                }),
                Err(Unopened::Damaged(d)) => Err(Error::corrupt(
                    d.what(),
                    loc(),
                    d.detail(|| format!("record does not hold chunk {}", e.id)),
                )),
                Err(Unopened::Read(err)) if err.is_not_found() => Err(Error::PackMissing {
                    pack,
                    detail: err.to_string(),
                }),
                // A permission, a resource limit, a network that failed: said as it
                // is, and the run ends.
                Err(Unopened::Read(err)) if !is_damage(&err) => return Err(err),
                Err(Unopened::Read(err)) => Err(Error::corrupt(
                    "pack",
                    loc(),
                    format!("chunk {}: {err}", e.id),
                )),
            };
            stopped = !f(e.id, opened)?;
            Ok(())
        })?;
        if stopped {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(children: &[ChunkId]) -> Meta {
        Meta {
            record: None,
            children: children.to_vec(),
        }
    }

    /// Every chunk comes after the chunks it names, also when two parents share a child
    /// that the first parent reached first.
    #[test]
    fn post_order_puts_children_first() {
        let id = |n: u8| ChunkId([n; 32]);
        let (root, a, b, shared, leaf) = (id(1), id(2), id(3), id(4), id(5));
        let mut m = HashMap::new();
        m.insert(root, meta(&[a, b]));
        m.insert(a, meta(&[shared]));
        m.insert(b, meta(&[shared, leaf]));
        m.insert(shared, meta(&[leaf]));
        m.insert(leaf, meta(&[]));
        let order = post_order(&root, &m);
        assert_eq!(order.len(), 5);
        let pos = |c: ChunkId| order.iter().position(|x| *x == c).unwrap();
        for (parent, m) in &m {
            for c in &m.children {
                assert!(pos(*c) < pos(*parent), "{order:?}");
            }
        }
    }
}
