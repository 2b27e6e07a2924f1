//! A repository: its store (config, packs, snapshot records), the RocksDB index and the
//! locks (docs/ARCHITECTURE.md, "The repository"). Opening a repository takes the locks
//! its access mode needs; reads verify every chunk against its id.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::format::chunker::Chunker;
use crate::format::chunklist;
use crate::format::config::RepoConfig;
use crate::format::pack::{self, ChunkKind, PackEntry, RawLimits, TrailerOpen};
use crate::format::snapshot::{Snapshot, SnapshotRecord};
use crate::format::tree::{ChunkRef, Node, Tree};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::store::cache::ObjectCache;
use crate::store::durable;
use crate::store::index::{ChunkIndex, IndexEntry, MemIndex, RocksIndex};
use crate::store::lock::{self, LockGuard, LockMode};
use crate::store::reads;
use crate::store::{Key, Kind, Location, Place, Store};

/// What a command needs from the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read snapshots and chunks (restore, ls, diff): shared repository lock, index opened
    /// read-only so it can run beside a backup.
    Read,
    /// Add packs and snapshots (backup): shared repository lock plus the writer lock.
    Write,
    /// Delete snapshots or packs (forget, gc): exclusive repository lock plus the writer lock.
    Exclusive,
}

pub struct Repository {
    location: Location,
    /// The repository's local state: index, locks, scratch (see [`Place::state_dir`]).
    state: PathBuf,
    store: Arc<dyn Store>,
    config: RepoConfig,
    index: Arc<dyn ChunkIndex>,
    /// Set when opening had to rebuild the index from the packs.
    pub index_rebuilt: Option<RebuildReport>,
    /// A reader's snapshots: those listed before its index view was opened.
    listed: Option<Vec<SnapshotId>>,
    /// The longest chunks this repository's chunkers and tree encoders make.
    raw_limits: RawLimits,
    /// Local copies of snapshot records and trees, for a repository that is not a local
    /// directory (`store/cache.rs`).
    cache: Option<ObjectCache>,
    _locks: Vec<LockGuard>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RebuildReport {
    pub packs: u64,
    pub chunks: u64,
    /// Packs whose trailer was damaged and whose records were recovered by a scan.
    pub recovered_by_scan: Vec<String>,
}

const LOCK_WAIT_WRITER: Duration = Duration::from_secs(3600);

/// How much of a pack's end one read takes for its trailer: the trailer of a full pack of
/// file chunks is a few KiB, one of a pack of database-dump chunks about twice this (read
/// again whole).
const TRAILER_GUESS: u64 = 64 * 1024;

impl Repository {
    /// Create a new, empty repository at `place` (which must be absent or empty).
    pub fn init(place: &Place) -> Result<RepoConfig> {
        let mut seed = [0u8; 16];
        crate::sys::getrandom(&mut seed);
        Self::init_with(place, RepoConfig::new_default(seed))
    }

    /// Create a new, empty repository at `place` with the config `cfg` (a copy's
    /// destination takes its source's chunker parameters).
    pub fn init_with(place: &Place, cfg: RepoConfig) -> Result<RepoConfig> {
        let store = crate::store::open(&place.location)?;
        let already = || Error::AlreadyInitialized {
            path: place.location.as_path(),
        };
        if store.exists(Key::Config)? {
            return Err(already());
        }
        match store.init() {
            // Another init finished between the two looks.
            Err(Error::InitNotEmpty(_)) if store.exists(Key::Config)? => return Err(already()),
            r => r?,
        }
        // Two inits at once (two first backups into one new repository): the writer lock
        // lets one write the config; the other then finds it instead of replacing it.
        // Across hosts, a store with conditional writes decides the same race.
        let state = place.state_dir(&cfg.repo_id);
        let locks_dir = state.join("locks");
        durable::create_dir_durable(&locks_dir)?;
        let _writer = lock::lock(
            &locks_dir.join("writer"),
            LockMode::Exclusive,
            LOCK_WAIT_WRITER,
        )?;
        if store.exists(Key::Config)? {
            return Err(already());
        }
        // The config is written last: its presence marks a complete repository.
        if !store.put_new(Key::Config, &cfg.encode()?)? {
            return Err(already());
        }
        Ok(cfg)
    }

    /// Whether `place` holds a repository (its config). A store that cannot be reached
    /// says so: that is not "no repository".
    pub fn exists(place: &Place) -> Result<bool> {
        crate::store::open(&place.location)?.exists(Key::Config)
    }

    /// Does `dir` hold a jellysnap repository (a `config` that starts with the magic)?
    /// One read of a few bytes: the backup walk and the restore planner ask it of every
    /// directory they enter, to leave other repositories in the data alone.
    pub fn holds_repository(dir: &Path) -> bool {
        use std::io::Read;
        let mut magic = [0u8; 8];
        fs::File::open(dir.join("config"))
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok_and(|()| &magic == crate::format::config::CONFIG_MAGIC)
    }

    pub fn open(place: &Place, access: Access) -> Result<Self> {
        let store = crate::store::open(&place.location)?;
        if !store.exists(Key::Config)? {
            return Err(Error::NotARepository(place.location.as_path()));
        }
        let config = load_config(store.as_ref())?;
        let raw_limits = RawLimits::of(&config);
        let state = place.state_dir(&config.repo_id);
        let locks_dir = state.join("locks");
        durable::create_dir_durable(&locks_dir)?;
        let mut locks = Vec::new();
        let repo_mode = if access == Access::Exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        locks.push(lock::lock(
            &locks_dir.join("repo"),
            repo_mode,
            Duration::ZERO,
        )?);
        let index_path = state.join("index");
        let mut index_rebuilt = None;
        let mut listed = None;
        let index: Arc<dyn ChunkIndex> = match access {
            Access::Write | Access::Exclusive => {
                locks.push(lock::lock(
                    &locks_dir.join("writer"),
                    LockMode::Exclusive,
                    LOCK_WAIT_WRITER,
                )?);
                let scratch = state.join("tmp");
                durable::create_dir_durable(&scratch)?;
                store.clear_scratch(&scratch);
                store.sync_visible()?;
                let (idx, current) = RocksIndex::open(&index_path)?;
                if !current {
                    index_rebuilt = Some(rebuild_into(store.as_ref(), &idx, &raw_limits)?);
                }
                Arc::new(idx)
            }
            Access::Read => {
                // The snapshot listing is taken before the index view: a snapshot is
                // committed only after its chunks are indexed (synced), so every snapshot
                // listed here has its chunks in the view opened below. A snapshot a
                // backup commits later is not listed by this reader.
                listed = Some(list_snapshots(store.as_ref())?);
                match RocksIndex::open_read_only(&index_path)? {
                    Some(idx) => Arc::new(idx),
                    None => {
                        // Missing or outdated index: rebuild it under the writer lock,
                        // then close it and read through a read-only view, so that a
                        // backup can start while this command runs.
                        let _w = lock::lock(
                            &locks_dir.join("writer"),
                            LockMode::Exclusive,
                            LOCK_WAIT_WRITER,
                        )?;
                        {
                            let (idx, current) = RocksIndex::open(&index_path)?;
                            if !current {
                                index_rebuilt =
                                    Some(rebuild_into(store.as_ref(), &idx, &raw_limits)?);
                            }
                        }
                        let idx = RocksIndex::open_read_only(&index_path)?.ok_or_else(|| {
                            Error::Index {
                                path: index_path.clone(),
                                detail: "the index just rebuilt does not open read-only; run `jellysnap repair index`".into(),
                            }
                        })?;
                        Arc::new(idx)
                    }
                }
            }
        };
        #[cfg(feature = "test-hooks")]
        if access == Access::Read {
            crate::store::testing::point("reader-after-index-open");
        }
        #[cfg(feature = "test-hooks")]
        let index = crate::store::testing::wrap_index(index);
        let cache = place
            .location
            .local_path()
            .is_none()
            .then(|| ObjectCache::new(state.join("cache")));
        Ok(Repository {
            location: place.location.clone(),
            state,
            store,
            config,
            index,
            index_rebuilt,
            listed,
            raw_limits,
            cache,
            _locks: locks,
        })
    }

    /// A repository whose index lives in memory (tests of the engine's I/O seams).
    pub fn open_with_mem_index(path: &Path) -> Result<Self> {
        let location = Location::Local(path.to_path_buf());
        let store = crate::store::open(&location)?;
        let config = load_config(store.as_ref())?;
        let raw_limits = RawLimits::of(&config);
        let idx = MemIndex::default();
        let mut entries = Vec::new();
        for pack in list_packs(store.as_ref())? {
            let (es, _) = read_pack_entries(store.as_ref(), &pack, &raw_limits)?;
            entries.extend(
                es.iter()
                    .map(|e| (e.id, IndexEntry::from_pack_entry(pack, e))),
            );
        }
        idx.insert(&entries)?;
        Ok(Repository {
            location,
            state: path.to_path_buf(),
            store,
            config,
            index: Arc::new(idx),
            index_rebuilt: None,
            listed: None,
            raw_limits,
            cache: None,
            _locks: Vec::new(),
        })
    }

    /// A repository on `store` and `index`, opened as [`Repository::open`] opens one for
    /// `access` but without locks or RocksDB (the crash tests' simulated file system).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn on_store(
        path: &Path,
        store: Arc<dyn Store>,
        index: Arc<dyn ChunkIndex>,
        access: Access,
    ) -> Result<Self> {
        let config = load_config(store.as_ref())?;
        if access != Access::Read {
            store.clear_scratch(&path.join("tmp"));
            store.sync_visible()?;
        }
        let raw_limits = RawLimits::of(&config);
        Ok(Repository {
            location: Location::Local(path.to_path_buf()),
            state: path.to_path_buf(),
            store,
            config,
            index,
            index_rebuilt: None,
            listed: None,
            raw_limits,
            cache: None,
            _locks: Vec::new(),
        })
    }

    /// Rebuild the index from scratch from the packs (`jellysnap repair index`): takes
    /// the exclusive locks, deletes `index/` and reads every pack's trailer (or scans its
    /// records when the trailer is damaged).
    pub fn repair_index(place: &Place) -> Result<RebuildReport> {
        let store = crate::store::open(&place.location)?;
        if !store.exists(Key::Config)? {
            return Err(Error::NotARepository(place.location.as_path()));
        }
        let config = load_config(store.as_ref())?;
        let state = place.state_dir(&config.repo_id);
        let locks_dir = state.join("locks");
        durable::create_dir_durable(&locks_dir)?;
        let _repo = lock::lock(&locks_dir.join("repo"), LockMode::Exclusive, Duration::ZERO)?;
        let _writer = lock::lock(
            &locks_dir.join("writer"),
            LockMode::Exclusive,
            Duration::ZERO,
        )?;
        let index_path = state.join("index");
        if index_path.exists() {
            fs::remove_dir_all(&index_path).at(&index_path)?;
        }
        let (idx, _) = RocksIndex::open(&index_path)?;
        rebuild_into(store.as_ref(), &idx, &RawLimits::of(&config))
    }

    /// Where the repository's objects are.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The directory of the repository's local state (index, locks, scratch): the
    /// repository itself when it is local, a directory of the cache otherwise.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The store holding the repository's objects.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn store_arc(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Every pack, sorted by id.
    pub fn packs(&self) -> Result<Vec<PackId>> {
        list_packs(self.store.as_ref())
    }

    /// The entries of a pack (see [`read_pack_entries`]).
    pub fn pack_entries(&self, id: &PackId) -> Result<(Vec<PackEntry>, bool)> {
        read_pack_entries(self.store.as_ref(), id, &self.raw_limits)
    }

    /// The longest chunk of each kind this repository can hold: a record or index entry
    /// claiming more is damaged.
    pub fn raw_limits(&self) -> &RawLimits {
        &self.raw_limits
    }

    /// A pack's size in bytes.
    pub fn pack_size(&self, id: &PackId) -> Result<u64> {
        self.store.size(Key::Pack(*id))
    }

    /// Where a pack lives, for messages.
    pub fn pack_location(&self, id: &PackId) -> String {
        self.store.describe(Key::Pack(*id))
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn index(&self) -> &dyn ChunkIndex {
        self.index.as_ref()
    }

    pub fn index_arc(&self) -> Arc<dyn ChunkIndex> {
        self.index.clone()
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker)
    }

    pub fn db_chunker(&self) -> Chunker {
        Chunker::new(self.config.db_chunker)
    }

    pub fn db_physical_chunker(&self) -> Chunker {
        Chunker::new(self.config.db_physical_chunker)
    }

    /// The data chunks of a file node in file order, reading its list chunks when the
    /// list is indirect (every list chunk verified against its id and its lengths).
    /// Empty for directories and symlinks.
    pub fn file_chunks(&self, node: &Node) -> Result<Vec<ChunkRef>> {
        let Node::File {
            chunks, indirect, ..
        } = node
        else {
            return Ok(Vec::new());
        };
        if *indirect == 0 {
            return Ok(chunks.clone());
        }
        chunklist::resolve(*indirect, chunks, &mut |id| self.read_chunk_vec(id))
    }

    /// Walk a file node's list chunks and data chunks (see [`chunklist::walk`]); a
    /// damaged list chunk is reported to the visitor and the walk goes on.
    pub fn walk_file_chunks(&self, node: &Node, v: &mut dyn chunklist::ListVisitor) {
        if let Node::File {
            chunks, indirect, ..
        } = node
        {
            chunklist::walk(*indirect, chunks, &mut |id| self.read_chunk_vec(id), v);
        }
    }

    /// A verified chunk as an owned buffer (small metadata chunks).
    pub fn read_chunk_vec(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        Ok(self.read_chunk(id, &mut out, &mut scratch)?.to_vec())
    }

    /// The repository's local scratch directory (staged packs, database captures).
    pub fn tmp_dir(&self) -> PathBuf {
        self.state.join("tmp")
    }

    /// Read a chunk, verified against its id. Returns its bytes, which live in `scratch`
    /// (stored raw) or `out` (decompressed); both buffers are reused across calls. (Many
    /// chunks at once: [`Repository::read_chunks`], [`Repository::read_run`].)
    pub fn read_chunk<'b>(
        &self,
        id: &ChunkId,
        out: &'b mut Vec<u8>,
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8]> {
        let at = reads::locate(self, id)?;
        let tree = at.record.kind == ChunkKind::Tree;
        if tree {
            if let Some(bytes) = self.cache.as_ref().and_then(|c| c.tree(id)) {
                *out = bytes;
                return Ok(out.as_slice());
            }
        }
        if scratch.len() < at.span {
            scratch.resize(at.span, 0);
        }
        let rec = scratch.get_mut(..at.span).unwrap_or_default();
        self.store
            .read_at(Key::Pack(at.pack), at.record.offset, rec)
            .map_err(|err| reads::read_failed(&at, err))?;
        let plain = reads::open_located(&at, rec, out, &self.raw_limits)?;
        if tree {
            self.cache_tree(id, plain);
        }
        Ok(plain)
    }

    /// Keep a local copy of a tree chunk this run wrote or read (a repository that is
    /// not a local directory; see `store/cache.rs`).
    pub fn cache_tree(&self, id: &ChunkId, plain: &[u8]) {
        if let Some(c) = &self.cache {
            c.put_tree(id, plain);
        }
    }

    pub fn load_tree(&self, id: &ChunkId) -> Result<Tree> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let bytes = self.read_chunk(id, &mut out, &mut scratch)?;
        Tree::decode(bytes, id)
    }

    /// All snapshot records in the order they were written (oldest first, see
    /// [`Snapshot::write_order`]), plus errors for records that failed to load.
    pub fn snapshots(&self) -> Result<(Vec<Snapshot>, Vec<Error>)> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let ids = match &self.listed {
            Some(ids) => ids.clone(),
            None => list_snapshots(self.store.as_ref())?,
        };
        for id in ids {
            let key = Key::Snapshot(id);
            let cached = self.cache.as_ref().and_then(|c| c.snapshot(&id));
            let bytes = match cached {
                Some(b) => Ok(b),
                None => self.store.get(key).inspect(|b| {
                    if let Some(c) = &self.cache {
                        c.put_snapshot(&id, b);
                    }
                }),
            };
            match bytes.and_then(|b| SnapshotRecord::decode(&b, &id)) {
                Ok(record) => out.push(Snapshot { id, record }),
                Err(e) => bad.push(e),
            }
        }
        out.sort_by_key(Snapshot::write_order);
        Ok((out, bad))
    }

    /// Resolve `latest`, a name, or a unique id prefix. An id prefix that only a record
    /// of a newer format has gets that record's error, not "no such snapshot".
    pub fn resolve(&self, query: &str) -> Result<Snapshot> {
        let (snaps, bad) = self.snapshots()?;
        match resolve_in(snaps, query) {
            Err(Error::SnapshotNotFound(q)) => {
                Err(newer_record(bad, &q).unwrap_or(Error::SnapshotNotFound(q)))
            }
            r => r,
        }
    }

    /// Write a snapshot record: the commit point. Everything it references must already be
    /// durable (packs synced, index entries synced).
    pub fn commit_snapshot(&self, record: &SnapshotRecord) -> Result<SnapshotId> {
        if let Some(name) = &record.name {
            let (snaps, _) = self.snapshots()?;
            if snaps.iter().any(|s| s.record.name.as_deref() == Some(name)) {
                return Err(Error::DuplicateName(name.clone()));
            }
        }
        let bytes = record.encode()?;
        let id = SnapshotId::of(&bytes);
        self.store.put(Key::Snapshot(id), &bytes)?;
        if let Some(c) = &self.cache {
            c.put_snapshot(&id, &bytes);
        }
        Ok(id)
    }
}

/// The repository's config, decoded.
fn load_config(store: &dyn Store) -> Result<RepoConfig> {
    let bytes = store.get(Key::Config)?;
    RepoConfig::decode(&bytes, Path::new(&store.describe(Key::Config)))
}

pub fn resolve_in(snaps: Vec<Snapshot>, query: &str) -> Result<Snapshot> {
    if query == "latest" {
        return snaps
            .into_iter()
            .last()
            .ok_or_else(|| Error::SnapshotNotFound(query.into()));
    }
    if let Some(s) = snaps
        .iter()
        .find(|s| s.record.name.as_deref() == Some(query))
    {
        return Ok(s.clone());
    }
    let q = query.to_ascii_lowercase();
    if q.len() >= 4 && q.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut hits: Vec<&Snapshot> = snaps
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&q))
            .collect();
        match hits.len() {
            0 => {}
            1 => return Ok(hits.remove(0).clone()),
            _ => {
                return Err(Error::SnapshotAmbiguous {
                    query: query.into(),
                    candidates: hits
                        .iter()
                        .map(|s| s.id.short())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    }
    Err(Error::SnapshotNotFound(query.into()))
}

/// The newer-format error of the one unreadable record whose id starts with `query`.
fn newer_record(bad: Vec<Error>, query: &str) -> Option<Error> {
    let q = query.to_ascii_lowercase();
    if q.len() < 4 || !q.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut hits = bad.into_iter().filter(|e| match e {
        Error::NewerFormat { location, .. } => location
            .strip_prefix("snapshots/")
            .is_some_and(|id| id.starts_with(&q)),
        _ => false,
    });
    let hit = hits.next()?;
    hits.next().is_none().then_some(hit)
}

/// Every snapshot record in the store.
fn list_snapshots(store: &dyn Store) -> Result<Vec<SnapshotId>> {
    Ok(store
        .list(Kind::Snapshot)?
        .into_iter()
        .filter_map(|(k, _)| match k {
            Key::Snapshot(id) => Some(id),
            _ => None,
        })
        .collect())
}

/// Every pack in the store, sorted by id.
fn list_packs(store: &dyn Store) -> Result<Vec<PackId>> {
    let mut out: Vec<PackId> = store
        .list(Kind::Pack)?
        .into_iter()
        .filter_map(|(k, _)| match k {
            Key::Pack(id) => Some(id),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The entries of a pack: from its trailer, or by scanning its records when the trailer
/// is damaged. Returns the entries and whether a scan was needed. A pack of a newer
/// format is refused (its records may not be what this jellysnap would read them as).
fn read_pack_entries(
    store: &dyn Store,
    id: &PackId,
    limits: &RawLimits,
) -> Result<(Vec<PackEntry>, bool)> {
    let key = Key::Pack(*id);
    // A read the system refuses ends here as that error (nothing says the trailer is
    // damaged); anything else wrong with the trailer is damage, recovered by a scan.
    let read = |offset: u64, buf: &mut [u8]| match store.read_at(key, offset, buf) {
        Err(e) if e.is_refusal() => Err(e),
        r => Ok(r.is_ok()),
    };
    // One request for the pack's end and its size: it usually holds the whole trailer
    // (and, for a small pack, its header too).
    let (mut tail, len, mut tail_read) = match store.read_tail(key, TRAILER_GUESS) {
        Ok((tail, len)) => (tail, len, true),
        Err(e) if e.is_refusal() => return Err(e),
        Err(_) => (Vec::new(), store.size(key)?, false),
    };
    let mut header = [0u8; pack::PACK_HEADER_LEN];
    let header_read = match tail.get(..pack::PACK_HEADER_LEN) {
        Some(h) if tail_read && tail.len() as u64 == len => {
            header.copy_from_slice(h);
            true
        }
        _ => store.read_at(key, 0, &mut header).is_ok(),
    };
    if header_read {
        pack::refuse_newer(&header, &store.describe(key))?;
    }
    let mut opened = Err(TrailerOpen::Damaged("not read".into()));
    if tail_read {
        opened = pack::open_trailer(&tail, len, limits);
        if let Err(TrailerOpen::Need(n)) = opened {
            tail = vec![0u8; n.min(len) as usize];
            tail_read = read(len - tail.len() as u64, &mut tail)?;
            opened = match tail_read {
                true => pack::open_trailer(&tail, len, limits),
                false => Err(TrailerOpen::Damaged("not read".into())),
            };
        }
    }
    match opened {
        Ok(es) => Ok((es, false)),
        Err(_) => {
            let (es, _) = pack::scan_records(&store.get(key)?, limits);
            Ok((es, true))
        }
    }
}

fn rebuild_into(store: &dyn Store, idx: &RocksIndex, limits: &RawLimits) -> Result<RebuildReport> {
    idx.clear()?;
    let mut report = RebuildReport::default();
    for pack in list_packs(store)? {
        let (entries, scanned) = read_pack_entries(store, &pack, limits)?;
        if scanned {
            report.recovered_by_scan.push(pack.to_hex());
        }
        let batch: Vec<(ChunkId, IndexEntry)> = entries
            .iter()
            .map(|e| (e.id, IndexEntry::from_pack_entry(pack, e)))
            .collect();
        idx.insert(&batch)?;
        report.packs += 1;
        report.chunks += batch.len() as u64;
    }
    idx.mark_current()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::ChunkKind;
    use crate::store::packer::ChunkSink;

    /// The write and read paths through the in-memory index: chunks stored by the pack
    /// writer are found, verified and deduplicated; a fresh in-memory index rebuilt from
    /// the packs finds them again; a missing chunk is a typed error.
    #[test]
    fn chunks_round_trip_through_the_mem_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Repository::init(&crate::store::Place::local(&path)).unwrap();
        let text = b"<Item><Name>Movie</Name></Item>\n".repeat(500);
        let jpeg: Vec<u8> = b"\xFF\xD8\xFF"
            .iter()
            .copied()
            .chain((0..5000u32).map(|i| (i * 7919 % 251) as u8))
            .collect();
        let (a, b) = {
            let repo = Repository::open_with_mem_index(&path).unwrap();
            let sink = ChunkSink::new(&repo).unwrap();
            let a = sink.put(ChunkKind::Data, &text, true).unwrap();
            let b = sink.put(ChunkKind::Tree, &jpeg, false).unwrap();
            assert_eq!(sink.put(ChunkKind::Data, &text, true).unwrap(), a);
            let new = sink
                .stats
                .new_chunks
                .load(std::sync::atomic::Ordering::Relaxed);
            sink.finish().unwrap();
            assert_eq!(new, 2, "the second put of the same bytes is deduplicated");
            (a, b)
        };
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        assert_eq!(
            repo.read_chunk(&a, &mut out, &mut scratch).unwrap(),
            text.as_slice()
        );
        assert_eq!(
            repo.read_chunk(&b, &mut out, &mut scratch).unwrap(),
            jpeg.as_slice()
        );
        assert_eq!(
            repo.packs().unwrap().len(),
            2,
            "tree chunks go to their own pack"
        );
        let missing = ChunkId::of(b"never stored");
        assert!(matches!(
            repo.read_chunk(&missing, &mut out, &mut scratch),
            Err(Error::ChunkMissing { .. })
        ));
    }

    /// A pack whose header says a newer version is refused where its trailer is read
    /// (an index rebuild), as a newer format: not scanned as a damaged trailer.
    #[test]
    fn a_newer_pack_is_refused_when_its_trailer_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Repository::init(&crate::store::Place::local(&path)).unwrap();
        {
            let repo = Repository::open_with_mem_index(&path).unwrap();
            let sink = ChunkSink::new(&repo).unwrap();
            sink.put(ChunkKind::Data, b"one chunk", true).unwrap();
            sink.finish().unwrap();
        }
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let id = repo.packs().unwrap()[0];
        let file = repo.pack_location(&id);
        let mut bytes = fs::read(&file).unwrap();
        bytes[8..12].copy_from_slice(&(pack::PACK_VERSION + 1).to_le_bytes());
        fs::write(&file, &bytes).unwrap();
        let e = repo.pack_entries(&id).unwrap_err();
        assert!(
            matches!(&e, Error::NewerFormat { what: "pack", found, .. } if *found == pack::PACK_VERSION + 1),
            "{e}"
        );
    }

    /// A read compares the record's lengths with the index's and refuses lengths no
    /// chunk of this repository can have before allocating anything for them.
    #[test]
    fn a_record_that_disagrees_with_the_index_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Repository::init(&crate::store::Place::local(&path)).unwrap();
        let text = b"<Item><Name>Movie</Name></Item>\n".repeat(500);
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let sink = ChunkSink::new(&repo).unwrap();
        let id = sink.put(ChunkKind::Data, &text, true).unwrap();
        sink.finish().unwrap();
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let honest = repo.index().get(&id).unwrap().unwrap();
        let max = repo.config().chunker.max;
        for (raw_len, stored_len) in [
            (honest.raw_len + 1, honest.stored_len),
            (u32::MAX, honest.stored_len),
            (max + 2, honest.stored_len),
            (honest.raw_len, u32::MAX),
        ] {
            let e = IndexEntry {
                raw_len,
                stored_len,
                ..honest
            };
            repo.index().insert(&[(id, e)]).unwrap();
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            let r = repo.read_chunk(&id, &mut out, &mut scratch);
            assert!(
                matches!(r, Err(Error::Corrupt { .. })),
                "{raw_len}/{stored_len}: {:?}",
                r.map(|bytes| bytes.len())
            );
            assert!(
                out.capacity() + scratch.capacity() < 1 << 20,
                "{raw_len}/{stored_len}: reserved {} bytes",
                out.capacity() + scratch.capacity()
            );
        }
    }
}
