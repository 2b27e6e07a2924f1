//! Verification. Structure: every snapshot record decodes, every tree is
//! readable, every referenced chunk is indexed in a pack that exists and is long enough,
//! and pack trailers agree with the index. With `read_data`, every chunk of the chosen
//! packs is read, decompressed and hashed. Damage is reported by pack and chunk, and
//! traced back to the snapshots and files it affects. Records of a newer format are not
//! damage: they are listed apart, as what this jellysnap cannot check.
//!
//! Packs are checked one at a time (one trailer in memory), each referenced chunk
//! looked up in a set of its pack's entries: the cost is linear in the chunks.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, OptionError, Result};
use crate::format::pack::{self, ChunkKind, PackEntry};
use crate::format::snapshot::{Component, Snapshot, Verified};
use crate::format::tree::{DbCapture, Node};
use crate::id::{ChunkId, PackId};
use crate::ops::progress::Progress;
use crate::ops::reach;
use crate::store::reads::Unopened;
use crate::store::repo::{Damaged, Repository};
use crate::store::Key;

/// How much pack data a check reads, besides the structure.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// A share of the packs; successive runs move on to the next share so that repeated
    /// runs cover the whole repository.
    Subset(Subset),
}

/// A share of the packs, in percent, and the directory that remembers which share the
/// next run reads (the caller's cache dir: the engine does not guess it).
#[derive(Debug, Clone, PartialEq)]
pub struct Subset {
    pct: f64,
    state_dir: PathBuf,
}

impl ReadData {
    /// `--read-data` (`all`) or `--read-data-subset PCT`, PCT in (0, 100].
    pub fn new(all: bool, subset_pct: Option<f64>, state_dir: &Path) -> Result<Self, OptionError> {
        match (all, subset_pct) {
            (true, _) => Ok(ReadData::All),
            (false, None) => Ok(ReadData::None),
            (false, Some(p)) if p > 0.0 && p <= 100.0 => Ok(ReadData::Subset(Subset {
                pct: p,
                state_dir: state_dir.to_path_buf(),
            })),
            (false, Some(p)) => Err(OptionError::ReadDataSubset(p)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What is damaged: "snapshot", "tree", "index", "pack", "chunk".
    pub kind: String,
    pub pack: Option<String>,
    pub chunks: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Affected {
    pub snapshot: String,
    pub name: Option<String>,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub trees: u64,
    /// List chunks of large files' indirect chunk lists.
    pub list_chunks: u64,
    pub data_chunks: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    /// Distinct logical database dumps rebuilt and compared (with `--read-data`).
    pub databases_rebuilt: u64,
    /// Which slice of the packs `--read-data-subset` read this time ("2/5").
    pub subset: Option<String>,
    /// Database rebuilds a killed check left in the scratch space, removed now.
    pub scratch_cleared: u64,
    pub problems: Vec<Problem>,
    pub affected: Vec<Affected>,
    /// Snapshots that use a chunk an earlier check found damaged, of which a good copy
    /// has since been stored (a backup of a file that still had the content): they
    /// restore again. Those still without one are in `affected`.
    pub healed: Vec<Affected>,
    /// Why the damage this check found could not be recorded in the repository (it
    /// cannot be written here): the next backup then deduplicates against it still.
    pub damage_not_recorded: Option<String>,
    /// Packs whose damage record named chunks that read back good when this check read
    /// the pack whole (a read that failed on the way): their record now names only what
    /// is damaged, or is gone.
    pub damage_cleared: Vec<String>,
    /// Records written by a newer jellysnap (each message names the record and says to
    /// upgrade): not damage, but neither they nor what they reference could be checked.
    pub newer_format: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn check(
    repo: &Repository,
    read_data: &ReadData,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    // A check holds no writer lock, so the writer never clears its rebuilds; each check
    // clears those whose owner is gone (another check may be running beside it).
    let report = CheckReport {
        scratch_cleared: crate::ops::restore::clear_dead_rebuilds(&repo.tmp_dir()),
        ..CheckReport::default()
    };
    let mut c = Checker {
        repo,
        report,
        bad: HashSet::new(),
        recorded: repo.damaged()?,
        found: HashMap::new(),
        read: HashSet::new(),
    };
    progress.phase("checking snapshots and trees", None);
    let (snaps, reach, failed_trees) = c.snapshots_and_trees()?;
    let located = c.locate_in_index(&reach)?;
    c.packs(located, failed_trees, read_data, progress)?;
    c.record_found()?;
    let healed = c.recorded_damage()?;
    if *read_data == ReadData::All {
        check_databases(repo, &snaps, &c.bad, &mut c.report, progress)?;
    }
    c.trace_affected(&snaps);
    c.trace_healed(&snaps, &healed);
    progress.finish();
    Ok(c.report)
}

/// A check under way: the report so far and every chunk found damaged.
struct Checker<'a> {
    repo: &'a Repository,
    report: CheckReport,
    bad: HashSet<ChunkId>,
    /// The damage records, as the check started.
    recorded: Damaged,
    /// Chunks whose content this check found damaged, by pack.
    found: HashMap<PackId, Vec<ChunkId>>,
    /// The packs this check read whole.
    read: HashSet<PackId>,
}

/// Where the index puts a referenced chunk: its offset and stored length in a pack.
struct Located {
    id: ChunkId,
    offset: u64,
    stored_len: u32,
}

/// Trees and list chunks that did not load, with why.
type Unreadable = Vec<(ChunkId, Error)>;

fn problem(kind: &str, pack: Option<&PackId>, chunks: Vec<ChunkId>, detail: String) -> Problem {
    Problem {
        kind: kind.into(),
        pack: pack.map(|p| p.to_hex()),
        chunks: chunks.iter().map(|c| c.to_hex()).collect(),
        detail,
    }
}

impl Checker<'_> {
    /// Every snapshot record decodes; every tree and list chunk they reach is collected
    /// (with the ones that do not load, and why).
    fn snapshots_and_trees(&mut self) -> Result<(Vec<Snapshot>, reach::Reach, Unreadable)> {
        let (snaps, bad_records) = self.repo.snapshots()?;
        for e in bad_records {
            match e {
                // The system refused the read: nothing is known about the record.
                e if e.is_refusal() => return Err(e),
                Error::NewerFormat { .. } => self.report.newer_format.push(e.to_string()),
                e => self
                    .report
                    .problems
                    .push(problem("snapshot", None, vec![], e.to_string())),
            }
        }
        self.report.snapshots = snaps.len() as u64;
        let mut r = reach::Reach::default();
        let mut failed_trees = Vec::new();
        for s in &snaps {
            walk_tolerant(self.repo, &s.record.tree, &mut r, &mut failed_trees);
        }
        self.report.trees = r.trees.len() as u64;
        self.report.list_chunks = r.lists.len() as u64;
        self.report.data_chunks = r.data.len() as u64;
        Ok((snaps, r, failed_trees))
    }

    /// Look every referenced chunk up in the index, grouped by the pack it names; chunks
    /// that are not indexed at all are reported here.
    fn locate_in_index(&mut self, r: &reach::Reach) -> Result<HashMap<PackId, Vec<Located>>> {
        let mut by_pack: HashMap<PackId, Vec<Located>> = HashMap::new();
        let mut unindexed = Vec::new();
        for id in r.trees.iter().chain(r.lists.iter()).chain(r.data.iter()) {
            match self.repo.index().get(id)? {
                Some(ix) => by_pack.entry(ix.pack).or_default().push(Located {
                    id: *id,
                    offset: ix.offset,
                    stored_len: ix.stored_len,
                }),
                None => unindexed.push(*id),
            }
        }
        self.bad.extend(unindexed.iter().copied());
        // A chunk found damaged earlier is out of the index until a good copy is
        // stored: the damage record reports it.
        let recorded: HashSet<&ChunkId> = self.recorded.values().flatten().collect();
        unindexed.retain(|id| !recorded.contains(id));
        if !unindexed.is_empty() {
            self.report.problems.push(problem(
                "index",
                None,
                unindexed,
                "referenced but not in the index (run `jellysnap repair index`)".to_string(),
            ));
        }
        Ok(by_pack)
    }

    /// Pack by pack, holding one trailer at a time: the trailer reads; every referenced
    /// chunk the index places in the pack lies inside it at an offset the trailer agrees
    /// with; with `read_data`, every record of the chosen packs is read and verified.
    /// Referenced chunks whose pack is not there are reported last.
    fn packs(
        &mut self,
        mut located: HashMap<PackId, Vec<Located>>,
        failed_trees: Unreadable,
        read_data: &ReadData,
        progress: &dyn Progress,
    ) -> Result<()> {
        let sized = self.repo.packs_sized()?;
        let sizes: HashMap<Key, u64> = sized.iter().copied().collect();
        let keys: Vec<Key> = sized.into_iter().map(|(k, _)| k).collect();
        let ids: Vec<PackId> = keys.iter().filter_map(Key::pack_id).collect();
        self.report.packs = keys.len() as u64;
        let mut failed: HashMap<ChunkId, String> = HashMap::new();
        for (id, e) in failed_trees {
            match e {
                e if e.is_refusal() => return Err(e),
                // Not damage: the chunk itself is still located and (with read_data) read.
                Error::NewerFormat { .. } => self.report.newer_format.push(e.to_string()),
                e => {
                    failed.insert(id, e.to_string());
                }
            }
        }
        let chosen: HashSet<PackId> = match read_data {
            ReadData::None => HashSet::new(),
            _ => choose_packs(self.repo, &ids, read_data, &mut self.report)
                .into_iter()
                .collect(),
        };
        if chosen.is_empty() {
            progress.phase("checking packs and index", None);
        } else {
            let total = keys
                .iter()
                .filter(|k| k.pack_id().is_some_and(|p| chosen.contains(&p)))
                .map(|k| sizes.get(k).copied().unwrap_or(0))
                .sum();
            progress.phase("checking packs and reading data", Some(total));
        }
        for key in keys {
            let Some(id) = key.pack_id() else { continue };
            let size = sizes.get(&key).copied().unwrap_or(0);
            let entries = self.trailer(key)?;
            let here = located.remove(&id).unwrap_or_default();
            let misplaced = self.check_located(&id, size, entries.as_deref(), here, &failed);
            // Recorded as damage by a check that reads data, like a lost pack's chunks
            // (a pack cut short, its trailer gone with its end, is never read whole).
            if !misplaced.is_empty() && !matches!(read_data, ReadData::None) {
                self.found.entry(id).or_default().extend(misplaced);
            }
            if let Some(entries) = entries.filter(|_| chosen.contains(&id)) {
                self.read_pack_data(key, &entries, progress)?;
            }
        }
        let mut missing: Vec<(PackId, Vec<Located>)> = located.into_iter().collect();
        missing.sort_by_key(|(p, _)| *p);
        for (pack, chunks) in missing {
            let chunks: Vec<ChunkId> = chunks.iter().map(|l| l.id).collect();
            self.bad.extend(chunks.iter().copied());
            // A check that reads data records a lost pack as damage, like a damaged one,
            // so that writers store its chunks again (their files are read again). Only
            // once the pack is asked for by name and is not there: a listing that missed
            // it is not enough. A record of a pack that comes back is cleared by the
            // next check that reads it.
            let store = self.repo.store();
            if !matches!(read_data, ReadData::None)
                && !store.exists(Key::Pack(pack))?
                && !store.exists(Key::TreePack(pack))?
            {
                self.found
                    .entry(pack)
                    .or_default()
                    .extend(chunks.iter().copied());
            }
            self.report.problems.push(problem(
                "pack",
                Some(&pack),
                chunks,
                "pack file is missing".to_string(),
            ));
        }
        Ok(())
    }

    /// A pack's entries from its trailer (or a scan); a damaged trailer is a problem, a
    /// read the system refuses ends the check.
    fn trailer(&mut self, key: Key) -> Result<Option<Vec<PackEntry>>> {
        let pack = key.pack_id();
        let id = pack.as_ref();
        Ok(match self.repo.pack_entries(key) {
            Ok((entries, scanned)) => {
                if scanned {
                    self.report.problems.push(problem(
                        "pack",
                        id,
                        vec![],
                        format!(
                            "trailer damaged; {} record(s) recoverable by scanning (run `jellysnap repair index`, then `jellysnap check --read-data`)",
                            entries.len()
                        ),
                    ));
                }
                self.kind_apart(key, &entries);
                Some(entries)
            }
            Err(e @ Error::NewerFormat { .. }) => {
                self.report.newer_format.push(e.to_string());
                None
            }
            Err(e) if e.is_refusal() => return Err(e),
            Err(e) => {
                self.report
                    .problems
                    .push(problem("pack", id, vec![], e.to_string()));
                None
            }
        })
    }

    /// Where packs of each kind have keys of their own (format 2), records of the other
    /// kind in a pack cannot be read under its key: the index leaves them out, so they
    /// are named here (a pack moved by hand to the other prefix, or written by a faulty
    /// tool). Moved back under its kind's prefix, the pack is indexed at the next open.
    fn kind_apart(&mut self, key: Key, entries: &[PackEntry]) {
        let Some(kind) = self.repo.pack_layout().kind_of(key) else {
            return;
        };
        let other: Vec<ChunkId> = entries
            .iter()
            .filter(|e| e.kind != kind)
            .map(|e| e.id)
            .collect();
        if other.is_empty() {
            return;
        }
        let (here, there) = match kind {
            ChunkKind::Tree => ("trees/", "packs/"),
            ChunkKind::Data => ("packs/", "trees/"),
        };
        let detail =
            match other.len() == entries.len() {
                true => {
                    format!(
                "a pack of {} {} record(s) under {here}, where they are not indexed or read: \
                 move it to {there} (same name); the next command indexes it there",
                other.len(),
                if kind == ChunkKind::Tree { "data" } else { "tree" },
            )
                }
                false => format!(
                    "{} record(s) of the other kind in a pack under {here} (jellysnap never \
                 mixes kinds in a pack): they are not indexed or read",
                    other.len()
                ),
            };
        self.report
            .problems
            .push(problem("pack", key.pack_id().as_ref(), other, detail));
    }

    /// The referenced chunks the index places in pack `id` (of `size` bytes): each lies
    /// inside the pack, at an offset its trailer (when readable) lists for it. One set
    /// of the trailer's (id, offset) pairs makes this linear in the pack's entries.
    fn check_located(
        &mut self,
        id: &PackId,
        size: u64,
        entries: Option<&[PackEntry]>,
        here: Vec<Located>,
        failed: &HashMap<ChunkId, String>,
    ) -> Vec<ChunkId> {
        if here.is_empty() {
            return Vec::new();
        }
        let listed: Option<HashSet<(ChunkId, u64)>> =
            entries.map(|es| es.iter().map(|e| (e.id, e.offset)).collect());
        let mut misplaced = Vec::new();
        for l in here {
            let inside = l.offset + pack::RECORD_HEADER_LEN as u64 + l.stored_len as u64 <= size;
            let ok = inside
                && listed
                    .as_ref()
                    .is_none_or(|s| s.contains(&(l.id, l.offset)));
            if !ok {
                self.bad.insert(l.id);
                misplaced.push(l.id);
            } else if let Some(err) = failed.get(&l.id) {
                // Located fine, but the tree (or list chunk) does not verify or decode.
                self.bad.insert(l.id);
                self.report
                    .problems
                    .push(problem("tree", Some(id), vec![l.id], err.clone()));
            }
        }
        if !misplaced.is_empty() {
            self.report.problems.push(problem(
                "pack",
                Some(id),
                misplaced.clone(),
                format!("pack is truncated or does not hold these chunks (size {size})"),
            ));
        }
        misplaced
    }

    /// Read, decompress and hash every chunk of one pack; damaged ones are a problem.
    fn read_pack_data(
        &mut self,
        key: Key,
        entries: &[PackEntry],
        progress: &dyn Progress,
    ) -> Result<()> {
        let damaged = self.read_pack(key, entries, progress)?;
        self.report.packs_read += 1;
        self.read.extend(key.pack_id());
        if let Some(pack) = key.pack_id().filter(|_| !damaged.is_empty()) {
            self.found.insert(pack, damaged.clone());
        }
        // A damaged copy the index places nowhere else is what snapshots read; one it
        // places in another pack (stored again since) is an unused copy, left to gc.
        let mut damaged = damaged;
        if let Some(pack) = key.pack_id() {
            let index = self.repo.index();
            let mut used = Vec::new();
            for id in damaged {
                if index.get(&id)?.is_none_or(|e| e.pack == pack) {
                    used.push(id);
                }
            }
            damaged = used;
        }
        if !damaged.is_empty() {
            self.bad.extend(damaged.iter().copied());
            self.report.problems.push(problem(
                "chunk",
                key.pack_id().as_ref(),
                damaged,
                "content does not match its id (damaged on disk)".into(),
            ));
        }
        Ok(())
    }

    /// The chunks of one pack whose content does not match their id (a read the system
    /// refuses ends the check instead).
    fn read_pack(
        &mut self,
        key: Key,
        entries: &[PackEntry],
        progress: &dyn Progress,
    ) -> Result<Vec<ChunkId>> {
        let mut damaged = Vec::new();
        let (repo, report) = (self.repo, &mut self.report);
        repo.read_records(key, entries, &mut |k, r| {
            let Some(e) = entries.get(k) else {
                return Ok(());
            };
            // The record's header says what the trailer says (a reader compares it with
            // the index the same way), and its bytes give back the chunk.
            let ok = match r {
                Err(Unopened::Read(err)) if err.is_refusal() => return Err(err),
                r => r.is_ok(),
            };
            if !ok {
                damaged.push(e.id);
            }
            report.bytes_read += e.record_len();
            progress.advance(e.record_len());
            Ok(())
        })?;
        Ok(damaged)
    }

    /// Record the damage this check found in the repository (docs/FORMAT.md, "Damage
    /// records"), so that writers stop deduplicating against it and later checks report
    /// it until a good copy is stored.
    fn record_found(&mut self) -> Result<()> {
        // A recorded pack read whole again: its record says what this read found (a
        // read that failed on the way, twice, was recorded as damage; read back good
        // now, it is not).
        let mut again: Vec<PackId> = self
            .recorded
            .keys()
            .filter(|p| self.read.contains(p))
            .copied()
            .collect();
        again.sort();
        if self.repo.read_only.is_none() {
            for pack in again {
                let now: HashSet<ChunkId> = self
                    .found
                    .get(&pack)
                    .into_iter()
                    .flatten()
                    .copied()
                    .collect();
                if self.recorded.get(&pack) == Some(&now) {
                    continue;
                }
                let mut chunks: Vec<ChunkId> = now.iter().copied().collect();
                chunks.sort();
                self.repo.set_damaged(pack, &chunks)?;
                if self.recorded.get(&pack).is_some_and(|r| !r.is_subset(&now)) {
                    self.report.damage_cleared.push(pack.to_hex());
                }
                match now.is_empty() {
                    true => self.recorded.remove(&pack),
                    false => self.recorded.insert(pack, now),
                };
            }
        }
        if self.found.is_empty() {
            return Ok(());
        }
        if let Some(ro) = &self.repo.read_only {
            self.report.damage_not_recorded = Some(format!(
                "the repository cannot be written here ({})",
                ro.why
            ));
            return Ok(());
        }
        let mut found: Vec<(&PackId, &Vec<ChunkId>)> = self.found.iter().collect();
        found.sort();
        for (pack, chunks) in found {
            self.repo.record_damaged(*pack, chunks)?;
            self.recorded
                .entry(*pack)
                .or_default()
                .extend(chunks.iter().copied());
        }
        Ok(())
    }

    /// The recorded damage: a chunk with a copy indexed in another pack is healed (its
    /// snapshots restore from that copy); one without is damaged still and reported,
    /// unless this check just read it. Returns the healed chunks.
    fn recorded_damage(&mut self) -> Result<HashSet<ChunkId>> {
        let mut healed = HashSet::new();
        let mut packs: Vec<(&PackId, &HashSet<ChunkId>)> = self.recorded.iter().collect();
        packs.sort_by_key(|(p, _)| **p);
        for (pack, chunks) in packs {
            let just_found: HashSet<&ChunkId> =
                self.found.get(pack).into_iter().flatten().collect();
            let mut still = Vec::new();
            for id in chunks {
                match self.repo.index().get(id)? {
                    Some(e) if e.pack != *pack => {
                        healed.insert(*id);
                    }
                    _ => {
                        self.bad.insert(*id);
                        if !just_found.contains(id) {
                            still.push(*id);
                        }
                    }
                }
            }
            if !still.is_empty() {
                still.sort();
                self.report.problems.push(problem(
                    "chunk",
                    Some(pack),
                    still,
                    "found damaged by an earlier `check --read-data`; no good copy is stored \
                     yet (a backup of a file that still has this content stores it again)"
                        .into(),
                ));
            }
        }
        healed.retain(|id| !self.bad.contains(id));
        Ok(healed)
    }

    /// The snapshots that use a healed chunk and no damaged one.
    fn trace_healed(&mut self, snaps: &[Snapshot], healed: &HashSet<ChunkId>) {
        if healed.is_empty() {
            return;
        }
        for s in snaps {
            if self
                .report
                .affected
                .iter()
                .any(|a| a.snapshot == s.id.to_hex())
            {
                continue;
            }
            let paths = reach::paths_using(self.repo, s, healed);
            if !paths.is_empty() {
                self.report.healed.push(Affected {
                    snapshot: s.id.to_hex(),
                    name: s.record.name.clone(),
                    paths,
                });
            }
        }
    }

    /// Trace damaged chunks back to the snapshots and paths that use them.
    fn trace_affected(&mut self, snaps: &[Snapshot]) {
        if self.bad.is_empty() {
            return;
        }
        for s in snaps {
            let paths = reach::paths_using(self.repo, s, &self.bad);
            if !paths.is_empty() {
                self.report.affected.push(Affected {
                    snapshot: s.id.to_hex(),
                    name: s.record.name.clone(),
                    paths,
                });
            }
        }
    }
}

/// Who uses one logical database dump: (snapshot index, `root/rel` path, proof).
type DumpUsers = Vec<(usize, String, Option<Verified>)>;

/// Rebuild every distinct logical database dump once, in scratch space, and compare it
/// with the observation each snapshot's backup proved: a snapshot whose database would not
/// restore exactly is reported by name, with the database's path. Dumps whose chunks are
/// already known damaged are reported through those chunks instead.
fn check_databases(
    repo: &Repository,
    snaps: &[Snapshot],
    bad: &HashSet<ChunkId>,
    report: &mut CheckReport,
    progress: &dyn Progress,
) -> Result<()> {
    let dumps = logical_dumps(repo, snaps, bad);
    if dumps.is_empty() {
        return Ok(());
    }
    progress.phase("rebuilding database dumps", None);
    let scratch = repo.tmp_dir();
    for (node, users) in dumps {
        // Snapshots of one dump normally share one proof; each distinct proof is one
        // rebuild (a missing proof only asks that the dump rebuilds).
        let mut proofs: Vec<Option<Verified>> = users.iter().map(|u| u.2.clone()).collect();
        proofs.sort();
        proofs.dedup();
        for proof in proofs {
            report.databases_rebuilt += 1;
            let Err(e) = crate::ops::restore::try_rebuild(
                repo,
                &node,
                proof.as_ref(),
                &scratch,
                &crate::ops::progress::NoProgress,
            ) else {
                continue;
            };
            // Where the rebuild is made, not what it is made from: a full scratch file
            // system or a refused read says nothing about the snapshot, and ends the
            // check as what it is.
            if crate::ops::restore::no_space(&e).is_some() || e.is_refusal() {
                return Err(e);
            }
            let users = users.iter().filter(|u| u.2 == proof);
            let detail = match e {
                Error::NewerFormat {
                    what,
                    location,
                    found,
                    supported,
                } => {
                    for (i, path, _) in users {
                        let location = match what {
                            // The dump's own location is the scratch file.
                            "database dump" | "database proof" => format!("for {path}"),
                            _ => location.clone(),
                        };
                        let s = &snaps[*i];
                        report.newer_format.push(
                            Error::NewerFormat {
                                what,
                                location: format!(
                                    "{location} in snapshot {}{}",
                                    s.id.short(),
                                    name_suffix(s)
                                ),
                                found,
                                supported,
                            }
                            .to_string(),
                        );
                    }
                    continue;
                }
                Error::DatabaseRestore { detail, .. } => detail,
                e => e.to_string(),
            };
            for (i, path, _) in users {
                unrestorable_database(report, &snaps[*i], path, &detail);
            }
        }
    }
    Ok(())
}

/// The distinct logical dumps of the snapshots' databases (by their top-level chunk
/// refs), each with its users. Unreadable trees are reported by the structure check.
fn logical_dumps(
    repo: &Repository,
    snaps: &[Snapshot],
    bad: &HashSet<ChunkId>,
) -> Vec<(Node, DumpUsers)> {
    let mut dumps: Vec<(Node, DumpUsers)> = Vec::new();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, s) in snaps.iter().enumerate() {
        let rec = &s.record;
        for item in rec
            .items
            .iter()
            .filter(|it| it.component == Component::Database)
        {
            let Ok(Some(node)) = find_node(repo, &rec.tree, &item.root, &item.rel) else {
                continue;
            };
            let Node::File {
                chunks,
                indirect,
                database: DbCapture::Logical,
                ..
            } = &node
            else {
                continue;
            };
            if chunks.iter().any(|c| bad.contains(&c.id)) {
                continue;
            }
            let proof = rec
                .databases
                .iter()
                .find(|d| d.root == item.root && d.rel == item.rel)
                .and_then(|d| d.verified());
            let mut key = vec![*indirect];
            for c in chunks {
                key.extend_from_slice(&c.id.0);
            }
            let at = *seen.entry(key).or_insert_with(|| {
                dumps.push((node.clone(), Vec::new()));
                dumps.len() - 1
            });
            dumps[at]
                .1
                .push((i, format!("{}/{}", item.root, item.rel), proof));
        }
    }
    dumps
}

/// Report that snapshot `s`'s database at `path` would not restore exactly.
fn unrestorable_database(report: &mut CheckReport, s: &Snapshot, path: &str, detail: &str) {
    report.problems.push(Problem {
        kind: "database".into(),
        pack: None,
        chunks: vec![],
        detail: format!(
            "snapshot {}{}: {path} cannot be restored exactly: {detail}",
            s.id.short(),
            name_suffix(s)
        ),
    });
    match report
        .affected
        .iter_mut()
        .find(|a| a.snapshot == s.id.to_hex())
    {
        Some(a) => a.paths.push(path.to_string()),
        None => report.affected.push(Affected {
            snapshot: s.id.to_hex(),
            name: s.record.name.clone(),
            paths: vec![path.to_string()],
        }),
    }
}

/// " (name)" for a named snapshot.
fn name_suffix(s: &Snapshot) -> String {
    s.record
        .name
        .as_ref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default()
}

/// The node at `rel` (`/`-separated) inside root `label` of a snapshot's tree.
fn find_node(repo: &Repository, tree: &ChunkId, label: &str, rel: &str) -> Result<Option<Node>> {
    let mut t = repo.load_tree(tree)?;
    let mut node = None;
    for (i, part) in std::iter::once(label)
        .chain(rel.split('/').filter(|p| !p.is_empty()))
        .enumerate()
    {
        if i > 0 {
            match &node {
                Some(Node::Dir { tree }) => t = repo.load_tree(tree)?,
                _ => return Ok(None),
            }
        }
        node = t.find(part.as_bytes()).map(|e| e.node.clone());
        if node.is_none() {
            return Ok(None);
        }
    }
    Ok(node)
}

/// Like `reach::visit`, but an unreadable tree or list chunk is recorded (with why)
/// instead of ending the walk.
fn walk_tolerant(repo: &Repository, tree: &ChunkId, r: &mut reach::Reach, failed: &mut Unreadable) {
    if !r.trees.insert(*tree) {
        return;
    }
    match repo.load_tree(tree) {
        Ok(t) => {
            for e in &t.entries {
                match &e.node {
                    Node::File { .. } => r.add_file(repo, &e.node, failed),
                    Node::Dir { tree } => walk_tolerant(repo, tree, r, failed),
                    Node::Symlink { .. } => {}
                }
            }
        }
        Err(e) => failed.push((*tree, e)),
    }
}

/// The packs `--read-data(-subset)` reads. Subsets rotate through `n = ceil(100 / pct)`
/// slices (by pack id), remembering the next slice in the subset's state dir.
fn choose_packs(
    repo: &Repository,
    packs: &[PackId],
    read: &ReadData,
    report: &mut CheckReport,
) -> Vec<PackId> {
    let ReadData::Subset(Subset { pct, state_dir }) = read else {
        return packs.to_vec();
    };
    let n = (100.0 / pct.clamp(0.01, 100.0)).ceil().max(1.0) as u64;
    let state = state_dir.join(format!("check-{}", repo.config().repo_id));
    let slice = fs::read_to_string(&state)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        % n;
    if let Some(dir) = state.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let _ = fs::write(&state, format!("{}\n", (slice + 1) % n));
    report.subset = Some(format!("{}/{}", slice + 1, n));
    packs
        .iter()
        .filter(|p| u64::from_le_bytes(p.0[..8].try_into().unwrap_or([0; 8])) % n == slice)
        .copied()
        .collect()
}
