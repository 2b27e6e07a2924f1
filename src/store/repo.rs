//! A repository: its store (config, packs, snapshot records), the RocksDB index and the
//! locks (docs/ARCHITECTURE.md, "The repository"). Opening a repository takes the locks
//! its access mode needs (and, for a repository hosts share, a lease: see
//! [`crate::store::lease`]), and reconciles the index with the store's packs when they
//! may have changed behind it; reads verify every chunk against its id.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, IoContext, RemoteErrorKind, Result};
use crate::format::chunker::Chunker;
use crate::format::chunklist;
use crate::format::config::RepoConfig;
use crate::format::damaged::DamagedPack;
use crate::format::hosts::{GcPending, LeaseMode, PackEpoch};
use crate::format::pack::{self, ChunkKind, PackEntry, RawLimits, TrailerOpen};
use crate::format::record;
use crate::format::snapshot::{current, sort_written, Snapshot, SnapshotRecord};
use crate::format::tree::{ChunkRef, Node, Tree};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::store::cache::ObjectCache;
use crate::store::durable;
use crate::store::index::{ChunkIndex, IndexEntry, MemIndex, PackInfo, RocksIndex};
use crate::store::lease::{Holder, Lease};
use crate::store::lock::{self, LockGuard, LockMode};
use crate::store::reads;
use crate::store::treemap::TreeMap;
use crate::store::{Key, Kind, Location, PackLayout, Place, Store};

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
    /// Scratch space: `tmp/` of the state dir, or a directory of the cache dir when the
    /// repository cannot be written here.
    scratch: PathBuf,
    /// Set when a reader found that the repository cannot be written here.
    pub read_only: Option<ReadOnly>,
    /// A writer's view of the damage records: chunks found damaged that have no good
    /// copy indexed yet (their entries in the damaged packs are taken out of the index
    /// at open, so the pack writer stores them again).
    unhealed: HashSet<ChunkId>,
    /// A writer's packs with a damage record.
    damaged_packs: HashSet<PackId>,
    /// A writer's damage records: copies not to deduplicate against.
    damaged_copies: Damaged,
    /// Copies this handle found damaged when it read them (no record yet): chunk and the
    /// pack of the copy, not to deduplicate against either.
    found_damaged: Mutex<HashMap<ChunkId, PackId>>,
    /// Whether `found_damaged` holds anything (the pack writer's check takes no lock
    /// until then).
    found_any: AtomicBool,
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
    /// How the repository's format names its packs.
    layout: PackLayout,
    /// The writable RocksDB index, for what only it records (the snapshots it has seen).
    rocks: Option<Arc<RocksIndex>>,
    /// Whether other hosts may use the repository at once (see [`Place::shared_by_hosts`]).
    shared: bool,
    /// What a gc marked for deletion, read at open by writers of a shared repository:
    /// its packs are not deduplicated against.
    gc_pending: Option<GcPending>,
    doomed: HashSet<PackId>,
    /// Set when opening reconciled the index with the store's packs.
    pub reconciled: Option<ReconcileReport>,
    lease: Option<Lease>,
    /// Why a command that only reads holds no lease on a repository hosts share (the
    /// store refused to let it write one), for a warning.
    unleased: Option<String>,
    /// Local copies of snapshot records and trees, for a repository that is not a local
    /// directory (`store/cache.rs`).
    cache: Option<ObjectCache>,
    /// Whether this run listed the tree packs to fill the cache (once a run).
    tree_packs_listed: AtomicBool,
    /// Held while the cache is filled (see [`Repository::read_chunk`]).
    warming: Mutex<()>,
    /// Where the trees of the tree packs met so far lie (a local repository: see
    /// [`Repository::load_tree_bytes`]).
    tree_map: Option<TreeMap>,
    _locks: Vec<LockGuard>,
}

/// A repository a reader cannot write (a read-only file system, a directory this user
/// may not write): it is read as it is, and nothing is written to it.
#[derive(Debug, Clone, Copy)]
pub struct ReadOnly {
    /// Why: "read-only file system" or "permission denied".
    pub why: &'static str,
    /// Whether the reader holds the repository lock, taken on the lock file opened
    /// read-only (there is none to take when the repository has no lock file).
    pub locked: bool,
    /// Whether the index, missing or outdated, was read from the packs into memory.
    pub index_in_memory: bool,
}

/// What reconciling the index with the store's listing of packs changed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReconcileReport {
    /// Packs the index knew that the store no longer lists (deleted by a gc
    /// elsewhere): their entries were dropped.
    pub packs_dropped: u64,
    pub chunks_dropped: u64,
    /// Packs the store lists that the index did not know (written by another host or
    /// by `copy`): their trailers were read and their chunks indexed.
    pub packs_added: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RebuildReport {
    pub packs: u64,
    pub chunks: u64,
    /// Packs whose trailer was damaged and whose records were recovered by a scan.
    pub recovered_by_scan: Vec<String>,
    /// Read into memory because the repository's file system is full (the index could
    /// not be written there).
    #[serde(skip)]
    pub in_memory_for_full: bool,
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
        #[cfg(feature = "test-hooks")]
        let cfg = match crate::store::testing::init_format() {
            Some(format) => RepoConfig { format, ..cfg },
            None => cfg,
        };
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
    /// One read of a few bytes: the restore planner asks it of every directory it
    /// enters, the backup walk of every one that lists a `config`, to leave other
    /// repositories in the data alone.
    pub fn holds_repository(dir: &Path) -> bool {
        use std::io::Read;
        let mut magic = [0u8; 8];
        fs::File::open(dir.join("config"))
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok_and(|()| &magic == crate::format::config::CONFIG_MAGIC)
    }

    pub fn open(place: &Place, access: Access) -> Result<Self> {
        let command = match access {
            Access::Read => "read",
            Access::Write => "backup",
            Access::Exclusive => "gc or forget",
        };
        Self::open_as(place, access, command)
    }

    /// Open for `access`, as the command named `command` (what another host's lease
    /// conflict names).
    pub fn open_as(place: &Place, access: Access, command: &str) -> Result<Self> {
        Self::open_noting(place, access, command, &|_| {})
    }

    /// [`Repository::open_as`], telling `on_wait` what it waits for while another
    /// writer holds the writer lock (a backup queued behind another).
    pub fn open_noting(
        place: &Place,
        access: Access,
        command: &str,
        on_wait: &dyn Fn(&str),
    ) -> Result<Self> {
        let store = crate::store::open(&place.location)?;
        if !store.exists(Key::Config)? {
            return Err(Error::NotARepository(place.location.as_path()));
        }
        let config = load_config(store.as_ref())?;
        let raw_limits = RawLimits::of(&config);
        let layout = PackLayout::of(&config);
        let state = place.state_dir(&config.repo_id);
        let shared = place.shared_by_hosts();
        let cache = object_cache(place, &state);
        let packs = PackReader {
            store: store.as_ref(),
            limits: &raw_limits,
            layout,
            cache: cache.as_ref(),
        };
        let locks_dir = state.join("locks");
        let mut locks = Vec::new();
        let repo_mode = if access == Access::Exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let mut read_only = None;
        match durable::create_dir_durable(&locks_dir)
            .and_then(|()| lock::lock(&locks_dir.join("repo"), repo_mode, Duration::ZERO))
        {
            Ok(guard) => locks.push(guard),
            Err(e) => match lock::cannot_write(&e) {
                // Nothing can write to it through this path either: a reader goes on,
                // under a lock taken read-only where the lock file is there.
                Some(why) if access == Access::Read => {
                    let guard = lock::lock_shared_read_only(&locks_dir.join("repo"))?;
                    read_only = Some(ReadOnly {
                        why,
                        locked: guard.is_some(),
                        index_in_memory: false,
                    });
                    locks.extend(guard);
                }
                Some(why) => {
                    return Err(Error::ReadOnlyRepository {
                        path: place.location.as_path(),
                        why,
                        command: command.to_string(),
                    })
                }
                None => return Err(e),
            },
        }
        // Across hosts: a lease, taken after the local locks (a process of this host
        // that waits for them holds no lease meanwhile).
        let mut unleased = None;
        let lease = if shared {
            let mode = if access == Access::Exclusive {
                LeaseMode::Exclusive
            } else {
                LeaseMode::Shared
            };
            match Lease::acquire(
                store.clone(),
                place.location.as_path(),
                mode,
                &Holder::this_process(command),
            ) {
                Ok(lease) => Some(lease),
                // A key pair that may only read (a restore machine's, so that it cannot
                // delete backups): a command that only reads goes on without a lease. A
                // gc elsewhere then cannot know of it; its grace period still keeps what
                // it marks for an hour or more.
                Err(
                    e @ Error::Remote {
                        kind: RemoteErrorKind::Denied,
                        ..
                    },
                ) if access == Access::Read => {
                    unleased = Some(e.to_string());
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let gc_pending = if shared && access != Access::Read {
            read_gc_pending(store.as_ref())?
        } else {
            None
        };
        let doomed = match &gc_pending {
            Some(g) => g
                .pack_ids(&store.describe(Key::GcPending))?
                .into_iter()
                .collect(),
            None => HashSet::new(),
        };
        let index_path = state.join("index");
        let mut unhealed = HashSet::new();
        let mut damaged_packs = HashSet::new();
        let mut damaged_copies = Damaged::new();
        let mut index_rebuilt = None;
        let mut reconciled = None;
        let mut listed = None;
        let mut rocks = None;
        let index: Arc<dyn ChunkIndex> = match access {
            Access::Write | Access::Exclusive => {
                let writer = lock::lock_noting(
                    &locks_dir.join("writer"),
                    LockMode::Exclusive,
                    LOCK_WAIT_WRITER,
                    on_wait,
                )?;
                writer.note_holder(command);
                locks.push(writer);
                let scratch = state.join("tmp");
                durable::create_dir_durable(&scratch)?;
                store.clear_scratch(&scratch);
                store.sync_visible()?;
                let (idx, current) = RocksIndex::open(&index_path)?;
                let seen = if shared {
                    Some(SeenNow::read(store.as_ref(), None)?)
                } else {
                    None
                };
                let damaged = read_damaged(store.as_ref())?;
                if !current {
                    index_rebuilt = Some(rebuild_into(&packs, &idx, seen.as_ref(), &damaged)?);
                } else {
                    reconciled = reconcile(&packs, &idx, seen.as_ref(), &doomed)?;
                }
                unhealed = self::unhealed(&idx, &damaged)?;
                damaged_copies = damaged.clone();
                damaged_packs = damaged.keys().copied().collect();
                let idx = Arc::new(idx);
                rocks = Some(idx.clone());
                idx
            }
            Access::Read => {
                // The snapshot listing is taken before the index view: a snapshot is
                // committed only after its chunks are indexed (synced), so every snapshot
                // listed here has its chunks in the view opened below. A snapshot a
                // backup commits later is not listed by this reader.
                let ids = list_snapshots(store.as_ref())?;
                let seen = if shared {
                    Some(SeenNow::read(store.as_ref(), Some(ids.clone()))?)
                } else {
                    None
                };
                listed = Some(ids);
                let view = RocksIndex::open_read_only(&index_path)?;
                let usable = match (&view, &seen) {
                    (Some(v), Some(seen)) => !seen.changed(v)?,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                match view {
                    Some(idx) if usable => Arc::new(idx),
                    // Where nothing can be written, an index that is missing or behind
                    // is read from the packs' trailers into memory for this run.
                    view if read_only.is_some() => {
                        drop(view);
                        let idx = MemIndex::default();
                        let damaged = read_damaged(store.as_ref())?;
                        index_rebuilt = Some(rebuild_in_memory(&packs, &idx, &damaged)?);
                        if let Some(r) = &mut read_only {
                            r.index_in_memory = true;
                        }
                        Arc::new(idx)
                    }
                    view => {
                        drop(view);
                        // Missing, outdated or behind the store: rebuild or reconcile
                        // it under the writer lock, then close it and read through a
                        // read-only view, so that a backup can start while this command
                        // runs.
                        let on_disk = (|| -> Result<RocksIndex> {
                            let _w = lock::lock(
                                &locks_dir.join("writer"),
                                LockMode::Exclusive,
                                LOCK_WAIT_WRITER,
                            )?;
                            {
                                let (idx, current) = RocksIndex::open(&index_path)?;
                                if !current {
                                    let damaged = read_damaged(store.as_ref())?;
                                    index_rebuilt =
                                        Some(rebuild_into(&packs, &idx, seen.as_ref(), &damaged)?);
                                } else if seen.is_some() {
                                    let doomed: HashSet<PackId> =
                                        match read_gc_pending(store.as_ref())? {
                                            Some(g) => g
                                                .pack_ids(&store.describe(Key::GcPending))?
                                                .into_iter()
                                                .collect(),
                                            None => HashSet::new(),
                                        };
                                    reconciled = reconcile(&packs, &idx, seen.as_ref(), &doomed)?;
                                }
                            }
                            RocksIndex::open_read_only(&index_path)?.ok_or_else(|| Error::Index {
                                path: index_path.clone(),
                                detail: "the index just rebuilt does not open read-only; run `jellysnap repair index`".into(),
                            })
                        })();
                        match on_disk {
                            Ok(idx) => Arc::new(idx),
                            // A full file system: the index cannot be written there now.
                            // A reader reads it from the packs into memory for this run,
                            // as where nothing can be written; the next writer with room
                            // rebuilds it on disk (it is not marked complete).
                            Err(e) if e.is_storage_full() => {
                                let idx = MemIndex::default();
                                let damaged = read_damaged(store.as_ref())?;
                                let mut r = rebuild_in_memory(&packs, &idx, &damaged)?;
                                r.in_memory_for_full = true;
                                index_rebuilt = Some(r);
                                reconciled = None;
                                Arc::new(idx)
                            }
                            Err(e) => return Err(e),
                        }
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
        // A repository elsewhere reads trees from its local copies, placed by the index.
        let tree_map = cache.is_none();
        // Scratch space (a check's database rebuilds) of a repository nothing can be
        // written to lives in the cache dir.
        let scratch = match read_only {
            Some(_) => place
                .cache_dir
                .join("repos")
                .join(&config.repo_id)
                .join("tmp"),
            None => state.join("tmp"),
        };
        if read_only.is_some() {
            fs::create_dir_all(&scratch).at(&scratch)?;
        }
        Ok(Repository {
            location: place.location.clone(),
            scratch,
            read_only,
            unhealed,
            damaged_packs,
            damaged_copies,
            found_damaged: Mutex::new(HashMap::new()),
            found_any: AtomicBool::new(false),
            state,
            store,
            config,
            index,
            index_rebuilt,
            listed,
            raw_limits,
            layout,
            rocks,
            shared,
            gc_pending,
            doomed,
            reconciled,
            lease,
            unleased,
            cache,
            tree_packs_listed: AtomicBool::new(false),
            warming: Mutex::new(()),
            tree_map: tree_map.then(TreeMap::default),
            _locks: locks,
        })
    }

    /// A repository whose index lives in memory (tests of the engine's I/O seams).
    pub fn open_with_mem_index(path: &Path) -> Result<Self> {
        let location = Location::Local(path.to_path_buf());
        let store = crate::store::open(&location)?;
        let config = load_config(store.as_ref())?;
        let raw_limits = RawLimits::of(&config);
        let layout = PackLayout::of(&config);
        let idx = MemIndex::default();
        let mut entries = Vec::new();
        for (key, _) in list_packs(store.as_ref(), layout)? {
            let (es, _) = read_pack_entries(store.as_ref(), key, &raw_limits)?;
            let Some(pack) = key.pack_id() else { continue };
            entries.extend(
                es.iter()
                    .map(|e| (e.id, IndexEntry::from_pack_entry(pack, e))),
            );
        }
        idx.insert(&entries)?;
        Ok(Repository {
            location,
            scratch: path.join("tmp"),
            read_only: None,
            unhealed: HashSet::new(),
            damaged_packs: HashSet::new(),
            damaged_copies: Damaged::new(),
            found_damaged: Mutex::new(HashMap::new()),
            found_any: AtomicBool::new(false),
            state: path.to_path_buf(),
            store,
            config,
            index: Arc::new(idx),
            index_rebuilt: None,
            listed: None,
            raw_limits,
            layout,
            rocks: None,
            shared: false,
            gc_pending: None,
            doomed: HashSet::new(),
            reconciled: None,
            lease: None,
            unleased: None,
            cache: None,
            tree_packs_listed: AtomicBool::new(false),
            warming: Mutex::new(()),
            tree_map: Some(TreeMap::default()),
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
        let layout = PackLayout::of(&config);
        Ok(Repository {
            location: Location::Local(path.to_path_buf()),
            scratch: path.join("tmp"),
            read_only: None,
            unhealed: HashSet::new(),
            damaged_packs: HashSet::new(),
            damaged_copies: Damaged::new(),
            found_damaged: Mutex::new(HashMap::new()),
            found_any: AtomicBool::new(false),
            state: path.to_path_buf(),
            store,
            config,
            index,
            index_rebuilt: None,
            listed: None,
            raw_limits,
            layout,
            rocks: None,
            shared: false,
            gc_pending: None,
            doomed: HashSet::new(),
            reconciled: None,
            lease: None,
            unleased: None,
            cache: None,
            tree_packs_listed: AtomicBool::new(false),
            warming: Mutex::new(()),
            tree_map: Some(TreeMap::default()),
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
        let _repo = durable::create_dir_durable(&locks_dir)
            .and_then(|()| lock::lock(&locks_dir.join("repo"), LockMode::Exclusive, Duration::ZERO))
            .map_err(|e| match lock::cannot_write(&e) {
                Some(why) => Error::ReadOnlyRepository {
                    path: place.location.as_path(),
                    why,
                    command: "repair index".into(),
                },
                None => e,
            })?;
        let _writer = lock::lock(
            &locks_dir.join("writer"),
            LockMode::Exclusive,
            Duration::ZERO,
        )?;
        let shared = place.shared_by_hosts();
        let _lease = if shared {
            Some(Lease::acquire(
                store.clone(),
                place.location.as_path(),
                LeaseMode::Exclusive,
                &Holder::this_process("repair index"),
            )?)
        } else {
            None
        };
        let seen = if shared {
            Some(SeenNow::read(store.as_ref(), None)?)
        } else {
            None
        };
        let index_path = state.join("index");
        if index_path.exists() {
            fs::remove_dir_all(&index_path).at(&index_path)?;
        }
        let (idx, _) = RocksIndex::open(&index_path)?;
        let cache = object_cache(place, &state);
        let packs = PackReader {
            store: store.as_ref(),
            limits: &RawLimits::of(&config),
            layout: PackLayout::of(&config),
            cache: cache.as_ref(),
        };
        let damaged = read_damaged(store.as_ref())?;
        let report = rebuild_into(&packs, &idx, seen.as_ref(), &damaged)?;
        Ok(report)
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

    /// Every pack, by the key the store lists it under (which tells its kind from
    /// format 2 on), sorted by pack id.
    /// The packs the store lists, each with its size as listed.
    pub fn packs_sized(&self) -> Result<Vec<(Key, u64)>> {
        list_packs(self.store.as_ref(), self.layout)
    }

    pub fn packs(&self) -> Result<Vec<Key>> {
        Ok(list_packs(self.store.as_ref(), self.layout)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// The key of pack `id`, which holds chunks of `kind` (an index entry's kind).
    pub fn pack_key(&self, id: PackId, kind: ChunkKind) -> Key {
        self.layout.key(id, kind)
    }

    /// How this repository names its packs.
    pub fn pack_layout(&self) -> PackLayout {
        self.layout
    }

    /// The entries of a pack, read from the store (see [`read_pack_entries`]): what
    /// `check` must see.
    pub fn pack_entries(&self, key: Key) -> Result<(Vec<PackEntry>, bool)> {
        read_pack_entries(self.store.as_ref(), key, &self.raw_limits)
    }

    /// [`Repository::pack_entries`], for a repository that keeps local copies from the
    /// copy of the pack's trailer when there is one (and a trailer read is kept).
    pub fn pack_entries_cached(&self, key: Key) -> Result<(Vec<PackEntry>, bool)> {
        cached_pack_entries(
            self.cache.as_ref(),
            self.store.as_ref(),
            key,
            &self.raw_limits,
        )
    }

    /// Forget the local copies kept for pack `key` (a gc deleted it).
    pub fn forget_pack(&self, key: Key) {
        if let (Some(cache), Some(id)) = (&self.cache, key.pack_id()) {
            cache.remove_trailer(&id);
        }
    }

    /// The longest chunk of each kind this repository can hold: a record or index entry
    /// claiming more is damaged.
    pub fn raw_limits(&self) -> &RawLimits {
        &self.raw_limits
    }

    /// A pack's size in bytes.
    pub fn pack_size(&self, key: Key) -> Result<u64> {
        self.store.size(key)
    }

    /// Where a pack lives, for messages.
    pub fn pack_location(&self, key: Key) -> String {
        self.store.describe(key)
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
        self.scratch.clone()
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
        self.read_chunk_at(id, at, out, scratch)
    }

    /// Read chunk `id` where `at` places it, verified against its id and the record.
    fn read_chunk_at<'b>(
        &self,
        id: &ChunkId,
        at: reads::Located,
        out: &'b mut Vec<u8>,
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8]> {
        let tree = at.record.kind == ChunkKind::Tree;
        if let Some(cache) = self.cache.as_ref().filter(|_| tree) {
            let mut hit = cache.tree(id);
            if hit.is_none() {
                // One warming at a time: threads that miss together (a parallel walk)
                // wait for it instead of fetching the same pack again.
                let _one = self.warming.lock();
                hit = cache.tree(id);
                if hit.is_none() {
                    self.warm_tree_cache(at.key, cache);
                    hit = cache.tree(id);
                }
            }
            if let Some(bytes) = hit {
                *out = bytes;
                return Ok(out.as_slice());
            }
        }
        if scratch.len() < at.span {
            scratch.resize(at.span, 0);
        }
        let rec = scratch.get_mut(..at.span).unwrap_or_default();
        let read = |rec: &mut [u8]| {
            self.store
                .read_at(at.key, at.record.offset, rec)
                .map_err(|err| reads::read_failed(&at, err))
        };
        read(rec)?;
        let mut verdict = record::open(rec, &at.record, &self.raw_limits, out).map(|_| ());
        if verdict.is_err() {
            // Read once more before calling it damage: a byte changed on the way is not
            // damage at rest.
            read(rec)?;
            verdict = record::open(rec, &at.record, &self.raw_limits, out).map(|_| ());
        }
        verdict.map_err(|d| reads::damaged(&at, d))?;
        let plain = record::opened(rec, &at.record, out);
        if tree {
            self.cache_tree(id, plain);
        }
        Ok(plain)
    }

    /// The local copy of a tree chunk (its plain bytes, verified against `id`), when
    /// this repository keeps one (a repository that is not a local directory).
    pub fn cached_tree(&self, id: &ChunkId) -> Option<Vec<u8>> {
        self.cache.as_ref()?.tree(id)
    }

    /// A tree the cache lacks (a new host, a deleted cache): its pack holds only trees,
    /// which a walk mostly wants next, so the trees are fetched by the pack and kept,
    /// instead of one request per tree. Where tree packs have keys of their own (format
    /// 2), the first miss of a run lists them (one listing, of tree packs only) and
    /// fetches each one this cache has not taken in yet whole, one request each: no
    /// trailer is read; a pack the listing missed is fetched whole when a tree in it is
    /// wanted. In format 1 the trailer of the tree's pack is read and every tree the
    /// index places there fetched in a few coalesced reads. Best effort: what fails
    /// here is read (and reported) one by one.
    fn warm_tree_cache(&self, key: Key, cache: &ObjectCache) {
        if self.layout == PackLayout::Apart {
            let packs = PackReader {
                store: self.store.as_ref(),
                limits: &self.raw_limits,
                layout: self.layout,
                cache: Some(cache),
            };
            if !self.tree_packs_listed.swap(true, Ordering::Relaxed) {
                if let Ok(listed) = self.store.list(Kind::TreePack) {
                    for (k, _) in listed {
                        if let Some(id) = k.pack_id().filter(|id| !cache.has_tree_pack(id)) {
                            let _ = packs.fetch_tree_pack(k, id);
                        }
                    }
                }
            }
            if let Some(id) = key.pack_id().filter(|id| !cache.has_tree_pack(id)) {
                let _ = packs.fetch_tree_pack(key, id);
            }
            return;
        }
        let Some(pack) = key.pack_id() else { return };
        let Ok((entries, _)) = self.pack_entries(key) else {
            return;
        };
        let ids: Vec<ChunkId> = entries
            .iter()
            .filter(|e| e.kind == ChunkKind::Tree)
            .filter(|e| matches!(self.index.get(&e.id), Ok(Some(at)) if at.pack == pack))
            .filter(|e| cache.tree(&e.id).is_none())
            .map(|e| e.id)
            .collect();
        let _ = self.read_chunks(&ids, &mut |i, r| {
            if let (Ok(bytes), Some(id)) = (r, ids.get(i)) {
                cache.put_tree(id, bytes);
            }
            Ok(())
        });
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

    /// A tree with its plain bytes, verified against `id`: a tree of the snapshot a
    /// backup walks beside the data. Read where the trailers of the tree packs met so
    /// far place it, else (or when that read fails) where the index places it; the
    /// index's answer brings in the trailer of that tree's pack (`store/treemap.rs`).
    pub fn load_tree_bytes(&self, id: &ChunkId) -> Result<(Tree, Vec<u8>)> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        if let Some(at) = self.mapped_tree(id) {
            if let Ok(bytes) = self.read_chunk_at(id, at, &mut out, &mut scratch) {
                let bytes = bytes.to_vec();
                return Ok((Tree::decode(&bytes, id)?, bytes));
            }
        }
        let at = reads::locate(self, id)?;
        self.meet_tree_pack(&at);
        let bytes = self.read_chunk_at(id, at, &mut out, &mut scratch)?.to_vec();
        Ok((Tree::decode(&bytes, id)?, bytes))
    }

    /// Where the trailers read so far place tree `id`.
    fn mapped_tree(&self, id: &ChunkId) -> Option<reads::Located> {
        let (pack, key, record) = self.tree_map.as_ref()?.get(id)?;
        let span = record::span(&record, &self.raw_limits).ok()?;
        Some(reads::Located {
            pack,
            key,
            record,
            span,
        })
    }

    /// Read the trailer of the tree pack `at` names into the tree map, once per pack. A
    /// trailer that does not read or open leaves its trees to the index; the reads of
    /// them report what is wrong with the pack.
    fn meet_tree_pack(&self, at: &reads::Located) {
        let Some(map) = &self.tree_map else { return };
        if at.record.kind == ChunkKind::Tree && map.claim(at.pack) {
            if let Ok((entries, false)) = self.pack_entries(at.key) {
                map.add(at.pack, at.key, &entries);
            }
        }
    }

    /// Whether a backup may name a chunk of its parent snapshot again without asking
    /// the index, as it does the chunks of unchanged files: false while a gc has marked
    /// packs for deletion (a backup then stores again what they hold rather than name
    /// it, see "Garbage collection" in docs/ARCHITECTURE.md).
    pub fn reads_are_kept(&self) -> bool {
        self.doomed.is_empty()
    }

    /// All snapshot records in the order they were written (oldest first, see
    /// [`sort_written`]), plus errors for records that failed to load.
    pub fn snapshots(&self) -> Result<(Vec<Snapshot>, Vec<Error>)> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let mut ids = match &self.listed {
            Some(ids) => ids.clone(),
            None => list_snapshots(self.store.as_ref())?,
        };
        ids.extend(self.unlisted_but_stored(&ids)?);
        // Every record is read (a backup's parent is the newest with its roots): read
        // together, they cost about one read's latency, not one per snapshot.
        let records = crate::store::map_parallel(&ids, |id| {
            let cached = self.cache.as_ref().and_then(|c| c.snapshot(id));
            let bytes = match cached {
                Some(b) => Ok(b),
                None => self.store.get(Key::Snapshot(*id)).inspect(|b| {
                    if let Some(c) = &self.cache {
                        c.put_snapshot(id, b);
                    }
                }),
            };
            bytes.and_then(|b| SnapshotRecord::decode(&b, id))
        });
        for (id, record) in ids.into_iter().zip(records) {
            match record {
                Ok(record) => out.push(Snapshot::new(id, record)),
                Err(e) => bad.push(e),
            }
        }
        let mut out = current(out);
        sort_written(&mut out, &self.config.repo_id, |s| s);
        Ok((out, bad))
    }

    /// The ids of the snapshot records (a reader's: those listed when it opened), without
    /// reading the records.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        match &self.listed {
            Some(ids) => Ok(ids.clone()),
            None => list_snapshots(self.store.as_ref()),
        }
    }

    /// Records this host has seen that the listing left out but that are still stored.
    /// An object store's listing can be incomplete (a load balancer in front of several
    /// servers): a snapshot it leaves out would look forgotten, and a gc would delete
    /// its chunks. Each known record missing from the listing is asked for by name; one
    /// that is gone was forgotten elsewhere and its copy is dropped.
    fn unlisted_but_stored(&self, listed: &[SnapshotId]) -> Result<Vec<SnapshotId>> {
        let Some(cache) = &self.cache else {
            return Ok(Vec::new());
        };
        let listed: std::collections::HashSet<&SnapshotId> = listed.iter().collect();
        let mut out = Vec::new();
        for id in cache.snapshot_ids() {
            if listed.contains(&id) {
                continue;
            }
            if self.store.exists(Key::Snapshot(id))? {
                out.push(id);
            } else {
                cache.remove_snapshot(&id);
            }
        }
        Ok(out)
    }

    /// Remove a snapshot record (forget), durably; false when it was already gone.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<bool> {
        let key = Key::Snapshot(*id);
        let there = self.store.exists(key)?;
        if there {
            self.store.delete(key)?;
        }
        if let Some(cache) = &self.cache {
            cache.remove_snapshot(id);
        }
        Ok(there)
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

    /// Write a snapshot record made elsewhere, byte for byte (a copy): the commit point,
    /// as for [`Repository::commit_snapshot`]. `bytes` must hash to `id`.
    pub fn commit_snapshot_bytes(&self, id: &SnapshotId, bytes: &[u8]) -> Result<()> {
        if SnapshotId::of(bytes) != *id {
            return Err(Error::internal(format!(
                "snapshot record {id} does not hash to its id"
            )));
        }
        self.check_lease()?;
        self.store.put(Key::Snapshot(*id), bytes)?;
        // As for a backup's record: its chunks are indexed here, nothing to reconcile.
        if let Some(rocks) = &self.rocks {
            let _ = rocks.record_seen(&[*id], false, None);
        }
        if let Some(c) = &self.cache {
            c.put_snapshot(id, bytes);
        }
        Ok(())
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
        self.put_record(record)
    }

    /// Write the record of an edited snapshot (docs/FORMAT.md, "Editing a snapshot"),
    /// durably: from here on it is the snapshot, whether or not the records it
    /// supersedes are deleted. It references only what the record it supersedes does.
    pub fn commit_edit(&self, record: &SnapshotRecord) -> Result<SnapshotId> {
        self.put_record(record)
    }

    /// Put a snapshot record (the commit point of a backup or an edit).
    fn put_record(&self, record: &SnapshotRecord) -> Result<SnapshotId> {
        let bytes = record.encode()?;
        let id = SnapshotId::of(&bytes);
        self.check_lease()?;
        self.store.put(Key::Snapshot(id), &bytes)?;
        // The index holds this snapshot's chunks: the next open has nothing to
        // reconcile for it. The snapshot is committed whatever happens here; had this
        // failed, the next open would only reconcile once more. Only a repository hosts
        // share asks (a local one is reconciled from its directory at every writer's
        // open): elsewhere the write would cost a synced log write, a table file at close
        // and, every few backups, a compaction of the index.
        if let Some(rocks) = self.rocks.as_ref().filter(|_| self.shared) {
            let _ = rocks.record_seen(&[id], false, None);
        }
        if let Some(c) = &self.cache {
            c.put_snapshot(&id, &bytes);
        }
        Ok(id)
    }

    /// Whether other hosts may use this repository at once (leases, two-phase gc).
    pub fn shared_by_hosts(&self) -> bool {
        self.shared
    }

    /// Why this command holds no lease on a repository hosts share although it should
    /// (the store refused to let it write one: a key pair that may only read).
    pub fn unleased(&self) -> Option<&str> {
        self.unleased.as_deref()
    }

    /// This process's lease, for a repository hosts share.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Before a commit (a snapshot record, a gc's deletes): refuse when this process
    /// may have lost its lease.
    pub fn check_lease(&self) -> Result<()> {
        match &self.lease {
            Some(l) => l.check(),
            None => Ok(()),
        }
    }

    /// What a gc marked for deletion, as read when the repository was opened.
    pub fn gc_pending(&self) -> Option<&GcPending> {
        self.gc_pending.as_ref()
    }

    /// Whether `pack` is marked for deletion by a gc (not to be deduplicated against).
    pub fn is_doomed(&self, pack: &PackId) -> bool {
        self.doomed.contains(pack)
    }

    /// Whether the copy of `id` in `pack` was found damaged (a writer's view): the pack
    /// writer stores such a chunk again rather than deduplicate against it.
    pub fn is_damaged_copy(&self, id: &ChunkId, pack: &PackId) -> bool {
        self.damaged_copies
            .get(pack)
            .is_some_and(|b| b.contains(id))
            || (self.found_any.load(Ordering::Acquire)
                && self
                    .found_damaged
                    .lock()
                    .map_or(true, |found| found.get(id) == Some(pack)))
    }

    /// Note that the indexed copy of `id` could not be read back as stored (a backup met
    /// it reading its parent snapshot): this handle's pack writer stores the chunk again
    /// rather than deduplicate against that copy, and the new copy's index entry replaces
    /// it.
    pub fn note_damaged_copy(&self, id: &ChunkId) {
        if let (Ok(Some(e)), Ok(mut found)) = (self.index().get(id), self.found_damaged.lock()) {
            found.insert(*id, e.pack);
            self.found_any.store(true, Ordering::Release);
        }
    }

    /// The damage records (`check --read-data` wrote them): each pack with its chunks
    /// found damaged.
    pub fn damaged(&self) -> Result<Damaged> {
        read_damaged(self.store.as_ref())
    }

    /// Record durably that `chunks` of `pack` are damaged, with what was recorded
    /// before for that pack. One small object per pack, replaced atomically.
    pub fn record_damaged(&self, pack: PackId, chunks: &[ChunkId]) -> Result<()> {
        let key = Key::Damaged(pack);
        let mut all: HashSet<ChunkId> = chunks.iter().copied().collect();
        match self.store.get(key) {
            Ok(b) => {
                let (_, old) = DamagedPack::decode(&b, &self.store.describe(key))?
                    .ids(&self.store.describe(key))?;
                let before: HashSet<ChunkId> = old.iter().copied().collect();
                all.extend(old);
                if all == before {
                    return Ok(());
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.store.put(key, &DamagedPack::new(&pack, all).encode()?)
    }

    /// A writer's packs that have a damage record, as it opened.
    pub(crate) fn damaged_packs(&self) -> &HashSet<PackId> {
        &self.damaged_packs
    }

    /// Replace the damage record of `pack` with `chunks` (a check read the whole pack
    /// again and found only these damaged), or drop it when there are none.
    pub fn set_damaged(&self, pack: PackId, chunks: &[ChunkId]) -> Result<()> {
        match chunks.is_empty() {
            true => self.forget_damaged(pack),
            false => self.store.put(
                Key::Damaged(pack),
                &DamagedPack::new(&pack, chunks.iter().copied()).encode()?,
            ),
        }
    }

    /// Drop the damage record of a pack that is gone (gc deleted it).
    pub fn forget_damaged(&self, pack: PackId) -> Result<()> {
        self.store.delete(Key::Damaged(pack))
    }

    /// Whether a parent snapshot's file node uses a chunk found damaged that has no good
    /// copy yet: a backup then reads the file again instead of reusing the node, so the
    /// chunk is stored again if the file still has that content.
    pub fn needs_damaged(&self, node: &Node) -> bool {
        if self.unhealed.is_empty() {
            return false;
        }
        match self.file_chunks(node) {
            Ok(chunks) => chunks.iter().any(|c| self.unhealed.contains(&c.id)),
            Err(_) => true,
        }
    }

    /// Where a pack writer notes, before it puts its first pack, that the store may
    /// soon hold a pack the index does not (see [`RocksIndex::unsettled`]): a repository
    /// hosts share, whose writer's open reconciles only when told to. A local one
    /// reconciles at every writer's open and needs no note.
    pub(crate) fn unsettled_note(&self) -> Option<Arc<RocksIndex>> {
        self.rocks.clone().filter(|_| self.shared)
    }

    /// The writable RocksDB index, when this handle has one.
    pub fn rocks_index(&self) -> Option<&RocksIndex> {
        self.rocks.as_deref()
    }
}

/// The local copies of snapshot records and trees a repository that is not a local
/// directory keeps in its state directory `state`.
fn object_cache(place: &Place, state: &Path) -> Option<ObjectCache> {
    place
        .location
        .local_path()
        .is_none()
        .then(|| ObjectCache::new(state.join("cache")))
}

/// The repository's config, decoded.
fn load_config(store: &dyn Store) -> Result<RepoConfig> {
    let bytes = store.get(Key::Config)?;
    RepoConfig::decode(&bytes, Path::new(&store.describe(Key::Config)))
}

/// The snapshot `query` names: `latest`, a name, or a prefix (4 digits or more) of the id
/// of one of its records (an edited snapshot answers to its earlier ids too). A query
/// that is one snapshot's name and a prefix of another's id is refused as ambiguous,
/// naming both, rather than resolved to either.
pub fn resolve_in(snaps: Vec<Snapshot>, query: &str) -> Result<Snapshot> {
    if query == "latest" {
        return snaps
            .into_iter()
            .last()
            .ok_or_else(|| Error::SnapshotNotFound(query.into()));
    }
    let named = snaps
        .iter()
        .find(|s| s.record.name.as_deref() == Some(query));
    let q = query.to_ascii_lowercase();
    let mut hits: Vec<&Snapshot> = Vec::new();
    if q.len() >= 4 && q.chars().all(|c| c.is_ascii_hexdigit()) {
        hits = snaps.iter().filter(|s| s.has_id_prefix(&q)).collect();
    }
    let describe = |s: &Snapshot, how: &str| match &s.record.name {
        Some(n) => format!("{} ({n}) by {how}", s.id.short()),
        None => format!("{} by {how}", s.id.short()),
    };
    if let Some(n) = named {
        let others: Vec<&&Snapshot> = hits.iter().filter(|s| s.id != n.id).collect();
        if others.is_empty() {
            return Ok(n.clone());
        }
        let mut candidates = vec![describe(n, "name")];
        candidates.extend(others.iter().map(|s| describe(s, "id")));
        return Err(Error::SnapshotAmbiguous {
            query: query.into(),
            candidates: candidates.join(", "),
        });
    }
    match hits.len() {
        0 => Err(Error::SnapshotNotFound(query.into())),
        1 => Ok(hits.remove(0).clone()),
        _ => Err(Error::SnapshotAmbiguous {
            query: query.into(),
            candidates: hits
                .iter()
                .map(|s| s.id.short())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
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

/// Every pack in the store (one listing per prefix the layout puts packs under) with
/// its size, sorted by pack id.
fn list_packs(store: &dyn Store, layout: PackLayout) -> Result<Vec<(Key, u64)>> {
    let mut out = Vec::new();
    for kind in layout.pack_kinds() {
        out.extend(
            store
                .list(*kind)?
                .into_iter()
                .filter(|(k, _)| k.pack_id().is_some()),
        );
    }
    out.sort_by_key(|(k, _)| k.pack_id());
    Ok(out)
}

/// The entries of a pack: from its trailer, or by scanning its records when the trailer
/// is damaged. Returns the entries and whether a scan was needed. A pack of a newer
/// format is refused (its records may not be what this jellysnap would read them as).
/// [`read_pack_entries`] through `cache`: from its copy of the trailer when it has one,
/// else read from the store, and a trailer that opened is kept.
fn cached_pack_entries(
    cache: Option<&ObjectCache>,
    store: &dyn Store,
    key: Key,
    limits: &RawLimits,
) -> Result<(Vec<PackEntry>, bool)> {
    let (Some(cache), Some(id)) = (cache, key.pack_id()) else {
        return read_pack_entries(store, key, limits);
    };
    if let Some(entries) = cache.trailer(&id, limits) {
        return Ok((entries, false));
    }
    let (entries, scanned) = read_pack_entries(store, key, limits)?;
    if !scanned {
        let records_end = entries
            .iter()
            .map(|e| e.offset + e.record_len())
            .max()
            .unwrap_or(pack::PACK_HEADER_LEN as u64);
        cache.put_trailer(&id, records_end, &entries);
    }
    Ok((entries, scanned))
}

fn read_pack_entries(
    store: &dyn Store,
    key: Key,
    limits: &RawLimits,
) -> Result<(Vec<PackEntry>, bool)> {
    // A read the system refuses ends here as that error (nothing says the trailer is
    // damaged); anything else wrong with the trailer is damage, recovered by a scan.
    let read = |offset: u64, buf: &mut [u8]| match store.read_at(key, offset, buf) {
        Err(e) if e.is_refusal() => Err(e),
        r => Ok(r.is_ok()),
    };
    // One request for the pack's end and its size: it usually holds the whole trailer
    // (and, for a small pack, its header too). A trailer that does not open is read once
    // more before the pack is scanned as damaged: a byte changed on the way is not damage
    // at rest.
    let mut header: Option<[u8; pack::PACK_HEADER_LEN]> = None;
    let mut opened = Err(TrailerOpen::Damaged("not read".into()));
    for _ in 0..2 {
        let (mut tail, len, mut tail_read) = match store.read_tail(key, TRAILER_GUESS) {
            Ok((tail, len)) => (tail, len, true),
            Err(e) if e.is_refusal() => return Err(e),
            Err(_) => (Vec::new(), store.size(key)?, false),
        };
        header = match tail.get(..pack::PACK_HEADER_LEN) {
            Some(h) if tail_read && tail.len() as u64 == len => h.try_into().ok(),
            _ => None,
        };
        if !tail_read {
            break;
        }
        opened = pack::open_trailer(&tail, len, limits);
        if let Err(TrailerOpen::Need(n)) = opened {
            tail = vec![0u8; n.min(len) as usize];
            tail_read = read(len - tail.len() as u64, &mut tail)?;
            opened = match tail_read {
                true => pack::open_trailer(&tail, len, limits),
                false => Err(TrailerOpen::Damaged("not read".into())),
            };
        }
        if opened.is_ok() {
            break;
        }
    }
    // The pack's format version, from the tail when it held the whole pack. A header
    // that says "newer" is read once more on its own before it is believed (a byte
    // changed on the way is not a newer format).
    let mut h = [0u8; pack::PACK_HEADER_LEN];
    let mut header_read = match header {
        Some(got) => {
            h = got;
            true
        }
        None => store.read_at(key, 0, &mut h).is_ok(),
    };
    for again in [false, true] {
        if !header_read {
            break;
        }
        match pack::refuse_newer(&h, &store.describe(key)) {
            Ok(()) => break,
            Err(e) if again => return Err(e),
            Err(_) => header_read = store.read_at(key, 0, &mut h).is_ok(),
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

/// What a shared repository's store says now about what an index may have missed:
/// its snapshots and its pack-set epoch, each read before the packs are listed (a
/// snapshot is committed after its packs, an epoch changed after its gc's deletes).
pub(crate) struct SeenNow {
    snapshots: Vec<SnapshotId>,
    /// "" when the store has no epoch object.
    epoch: String,
}

impl SeenNow {
    /// One GET of the epoch, and one LIST of the snapshots unless `listed` has them.
    fn read(store: &dyn Store, listed: Option<Vec<SnapshotId>>) -> Result<Self> {
        let epoch = match store.get(Key::PackEpoch) {
            Ok(b) => PackEpoch::decode(&b, &store.describe(Key::PackEpoch))?.token,
            Err(e) if e.is_not_found() => String::new(),
            Err(e) => return Err(e),
        };
        let snapshots = match listed {
            Some(l) => l,
            None => list_snapshots(store)?,
        };
        Ok(SeenNow { snapshots, epoch })
    }

    /// Whether the index may lack packs the store has, or hold packs it no longer has:
    /// the epoch changed (a gc deleted packs), or a snapshot the index has not seen
    /// (another host's backup, a `copy`) is there.
    fn changed(&self, idx: &RocksIndex) -> Result<bool> {
        if idx.epoch()?.as_deref() != Some(self.epoch.as_str()) {
            return Ok(true);
        }
        let seen = idx.seen_snapshots()?;
        Ok(self.snapshots.iter().any(|s| !seen.contains(s)))
    }

    fn record(&self, idx: &RocksIndex) -> Result<()> {
        idx.record_seen(&self.snapshots, true, Some(&self.epoch))
    }
}

fn read_gc_pending(store: &dyn Store) -> Result<Option<GcPending>> {
    match store.get(Key::GcPending) {
        Ok(b) => Ok(Some(GcPending::decode(
            &b,
            &store.describe(Key::GcPending),
        )?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// What reads packs for the index: the store, the repository's limits and layout, and
/// the local copies of trees a repository elsewhere keeps (its tree packs are then
/// fetched whole, which fills the copies with the same one request a trailer costs).
struct PackReader<'a> {
    store: &'a dyn Store,
    limits: &'a RawLimits,
    layout: PackLayout,
    cache: Option<&'a ObjectCache>,
}

impl PackReader<'_> {
    /// A listed pack's entries (see [`read_pack_entries`]), whether a scan was needed,
    /// and its kind: the one its key says (format 2), else the one its trailer says (a
    /// pack holds one kind; format 1 named them alike). Entries of another kind than
    /// the key says cannot be read under that key and are left out.
    fn entries(&self, key: Key) -> Result<(Vec<PackEntry>, bool, ChunkKind)> {
        let (mut entries, scanned) = match (key, key.pack_id(), self.cache) {
            (Key::TreePack(_), Some(id), Some(_)) => self.fetch_tree_pack(key, id)?,
            _ => cached_pack_entries(self.cache, self.store, key, self.limits)?,
        };
        let kind = match self.layout.kind_of(key) {
            Some(kind) => {
                entries.retain(|e| e.kind == kind);
                kind
            }
            None if entries.iter().any(|e| e.kind == ChunkKind::Tree) => ChunkKind::Tree,
            None => ChunkKind::Data,
        };
        Ok((entries, scanned, kind))
    }

    /// A tree pack fetched whole (one request), its entries from its trailer (or a scan
    /// of its records), every tree in it kept in the cache, and the pack noted there as
    /// taken in. A pack of a newer format is refused, as where a trailer is read.
    fn fetch_tree_pack(&self, key: Key, id: PackId) -> Result<(Vec<PackEntry>, bool)> {
        // A pack whose header or trailer does not read right is fetched once more before
        // either is believed: a byte changed on the way is not damage, nor a newer format.
        let location = self.store.describe(key);
        let mut bytes = self.store.get(key)?;
        let mut opened = pack::open_trailer(&bytes, bytes.len() as u64, self.limits);
        let header =
            |b: &[u8]| pack::refuse_newer(b.get(..pack::PACK_HEADER_LEN)?, &location).err();
        if opened.is_err() || header(&bytes).is_some() {
            bytes = self.store.get(key)?;
            opened = pack::open_trailer(&bytes, bytes.len() as u64, self.limits);
        }
        if let Some(newer) = header(&bytes) {
            return Err(newer);
        }
        let (entries, scanned) = match opened {
            Ok(es) => (es, false),
            Err(_) => (pack::scan_records(&bytes, self.limits).0, true),
        };
        if let Some(cache) = self.cache {
            let mut out = Vec::new();
            for e in entries.iter().filter(|e| e.kind == ChunkKind::Tree) {
                let Ok(span) = record::span(e, self.limits) else {
                    continue;
                };
                let rec = usize::try_from(e.offset)
                    .ok()
                    .and_then(|at| bytes.get(at..at.checked_add(span)?));
                // A record that does not open is left to the read that wants it, which
                // reports it.
                if let Some(plain) =
                    rec.and_then(|r| record::open(r, e, self.limits, &mut out).ok())
                {
                    cache.put_tree(&e.id, plain);
                }
            }
            cache.note_tree_pack(&id);
        }
        Ok((entries, scanned))
    }
}

/// Bring the index in line with the store's packs, from ONE listing (per prefix packs
/// are under): the entries of
/// packs no longer listed are dropped (a gc elsewhere deleted them; this deletes
/// nothing from the store, and only makes the next backup store those chunks again),
/// and listed packs the index does not know (another host's, a copy's) have their
/// trailers read and their chunks indexed (taking the place of copies in packs a gc
/// marked, `doomed`). A shared repository (`seen`) does this only when its epoch or snapshots
/// changed, or when a pack writer of this host may have put a pack it did not index
/// (`RocksIndex::unsettled`: killed or failed between the put and the index); a local one
/// at every writer open (its listing is a directory read).
fn reconcile(
    packs: &PackReader<'_>,
    idx: &RocksIndex,
    seen: Option<&SeenNow>,
    doomed: &HashSet<PackId>,
) -> Result<Option<ReconcileReport>> {
    if let Some(seen) = seen {
        if !seen.changed(idx)? && !idx.unsettled()? {
            return Ok(None);
        }
    }
    let listed: HashMap<PackId, (Key, u64)> = list_packs(packs.store, packs.layout)?
        .into_iter()
        .filter_map(|(k, n)| Some((k.pack_id()?, (k, n))))
        .collect();
    let known = idx.packs()?;
    let gone: HashSet<PackId> = known
        .keys()
        .filter(|p| !listed.contains_key(p))
        .copied()
        .collect();
    let mut report = ReconcileReport {
        packs_dropped: gone.len() as u64,
        ..Default::default()
    };
    report.chunks_dropped = idx.drop_packs(&gone)?;
    let mut new: Vec<(&PackId, &(Key, u64))> = listed
        .iter()
        .filter(|(p, _)| !known.contains_key(p))
        .collect();
    new.sort();
    for (pack, (key, size)) in new {
        let (entries, _, kind) = match packs.entries(*key) {
            Ok(found) => found,
            // Deleted between the listing and the read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let batch: Vec<(ChunkId, IndexEntry)> = entries
            .iter()
            .map(|e| (e.id, IndexEntry::from_pack_entry(*pack, e)))
            .collect();
        let info = PackInfo { size: *size, kind };
        idx.adopt_pack(*pack, info, &batch, doomed)?;
        report.packs_added += 1;
    }
    if let Some(seen) = seen {
        seen.record(idx)?;
        // Every pack listed is indexed now, the one a killed writer put included.
        if idx.unsettled()? {
            idx.set_unsettled(false)?;
        }
    }
    let changed = report.packs_added + report.packs_dropped > 0;
    Ok(changed.then_some(report))
}

/// The damage records: for each pack named, the chunks found damaged in it.
pub type Damaged = HashMap<PackId, HashSet<ChunkId>>;

/// Every damage record of the store (one listing, one read per record).
fn read_damaged(store: &dyn Store) -> Result<Damaged> {
    let mut out = Damaged::new();
    for (key, _) in store.list(Kind::Damaged)? {
        let bytes = match store.get(key) {
            Ok(b) => b,
            // Dropped by a gc since the listing.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let (pack, chunks) =
            DamagedPack::decode(&bytes, &store.describe(key))?.ids(&store.describe(key))?;
        out.entry(pack).or_default().extend(chunks);
    }
    Ok(out)
}

/// A pack's index entries, less the chunks recorded damaged in it (set aside in
/// `deferred`): an index rebuilt from the trailers must not let a copy known to be
/// damaged replace a good one.
fn entries_but_damaged(
    pack: PackId,
    entries: &[PackEntry],
    damaged: &Damaged,
    deferred: &mut Vec<(ChunkId, IndexEntry)>,
) -> Vec<(ChunkId, IndexEntry)> {
    let bad = damaged.get(&pack);
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let entry = (e.id, IndexEntry::from_pack_entry(pack, e));
        match bad.is_some_and(|b| b.contains(&e.id)) {
            true => deferred.push(entry),
            false => out.push(entry),
        }
    }
    out
}

/// The recorded chunks that have no good copy indexed: no entry, or an entry in the
/// pack where the chunk was found damaged. The index keeps such an entry (a record made
/// from a read that failed on the way, and found wrong by a later check, then costs
/// nothing); writers do not deduplicate against it ([`Repository::is_damaged_copy`]).
fn unhealed(idx: &dyn ChunkIndex, damaged: &Damaged) -> Result<HashSet<ChunkId>> {
    let mut out = HashSet::new();
    for (pack, chunks) in damaged {
        for id in chunks {
            if idx.get(id)?.is_none_or(|e| e.pack == *pack) {
                out.insert(*id);
            }
        }
    }
    Ok(out)
}

/// After a rebuild that left the damaged copies out (`deferred`): index those that have
/// no other copy, where they are (a read of one fails as damage, as before).
fn index_damaged_last(idx: &dyn ChunkIndex, deferred: &[(ChunkId, IndexEntry)]) -> Result<()> {
    let mut missing = Vec::new();
    for (id, e) in deferred {
        if idx.get(id)?.is_none() {
            missing.push((*id, *e));
        }
    }
    idx.insert(&missing)
}

/// An index for one run of a reader that cannot write the repository: every pack's
/// trailer (or record scan) read into memory.
fn rebuild_in_memory(
    packs: &PackReader<'_>,
    idx: &MemIndex,
    damaged: &Damaged,
) -> Result<RebuildReport> {
    let mut report = RebuildReport::default();
    let mut deferred = Vec::new();
    for (key, _) in list_packs(packs.store, packs.layout)? {
        let Some(pack) = key.pack_id() else { continue };
        let (entries, scanned, _) = packs.entries(key)?;
        if scanned {
            report.recovered_by_scan.push(pack.to_hex());
        }
        let batch = entries_but_damaged(pack, &entries, damaged, &mut deferred);
        idx.insert(&batch)?;
        report.packs += 1;
        report.chunks += batch.len() as u64;
    }
    index_damaged_last(idx, &deferred)?;
    Ok(report)
}

fn rebuild_into(
    packs: &PackReader<'_>,
    idx: &RocksIndex,
    seen: Option<&SeenNow>,
    damaged: &Damaged,
) -> Result<RebuildReport> {
    idx.clear()?;
    let mut report = RebuildReport::default();
    let mut deferred = Vec::new();
    for (key, size) in list_packs(packs.store, packs.layout)? {
        let Some(pack) = key.pack_id() else { continue };
        let (entries, scanned, kind) = packs.entries(key)?;
        if scanned {
            report.recovered_by_scan.push(pack.to_hex());
        }
        let batch = entries_but_damaged(pack, &entries, damaged, &mut deferred);
        idx.insert_pack(pack, PackInfo { size, kind }, &batch)?;
        report.packs += 1;
        report.chunks += batch.len() as u64;
    }
    index_damaged_last(idx, &deferred)?;
    if let Some(seen) = seen {
        seen.record(idx)?;
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

    /// A format-2 repository puts its tree packs under a key of their own and a
    /// format-1 one beside the data packs; either way the index's pack set records
    /// each pack's kind (from the key, or from the trailer), after a rebuild too.
    #[test]
    fn pack_keys_follow_the_format_and_the_pack_set_records_kinds() {
        for format in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("repo");
            let place = crate::store::Place::local(&path);
            let cfg = RepoConfig {
                format,
                ..RepoConfig::new_default([format as u8; 16])
            };
            Repository::init_with(&place, cfg).unwrap();
            let kinds_of = |repo: &Repository| -> Vec<(Key, ChunkKind)> {
                let set = repo.rocks_index().unwrap().packs().unwrap();
                let mut out: Vec<(Key, ChunkKind)> = repo
                    .packs()
                    .unwrap()
                    .into_iter()
                    .map(|k| (k, set[&k.pack_id().unwrap()].kind))
                    .collect();
                out.sort_by_key(|(_, kind)| *kind as u8);
                out
            };
            let (data, tree) = {
                let repo = Repository::open(&place, Access::Write).unwrap();
                let sink = ChunkSink::new(&repo).unwrap();
                let data = sink.put(ChunkKind::Data, b"file bytes", true).unwrap();
                let tree = sink.put(ChunkKind::Tree, b"tree bytes", true).unwrap();
                sink.finish().unwrap();
                (data, tree)
            };
            fs::remove_dir_all(path.join("index")).unwrap();
            let repo = Repository::open(&place, Access::Write).unwrap();
            assert!(repo.index_rebuilt.is_some());
            let got = kinds_of(&repo);
            let (d, t) = (got[0].0.pack_id().unwrap(), got[1].0.pack_id().unwrap());
            let want = match format {
                1 => vec![
                    (Key::Pack(d), ChunkKind::Data),
                    (Key::Pack(t), ChunkKind::Tree),
                ],
                _ => vec![
                    (Key::Pack(d), ChunkKind::Data),
                    (Key::TreePack(t), ChunkKind::Tree),
                ],
            };
            assert_eq!(got, want, "format {format}");
            assert_eq!(path.join("trees").exists(), format == 2);
            assert_eq!(repo.read_chunk_vec(&data).unwrap(), b"file bytes");
            assert_eq!(repo.read_chunk_vec(&tree).unwrap(), b"tree bytes");
        }
    }

    /// A writer's open reconciles the index with the packs listed: a pack deleted
    /// behind the index's back is dropped (and the next backup stores its chunks
    /// again), a pack another writer added is adopted.
    #[test]
    fn a_writer_reconciles_the_index_with_the_packs_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        let place = crate::store::Place::local(&path);
        Repository::init(&place).unwrap();
        let stored = |repo: &Repository, bytes: &[u8]| {
            let sink = ChunkSink::new(repo).unwrap();
            let id = sink.put(ChunkKind::Data, bytes, true).unwrap();
            let n = sink
                .stats
                .new_chunks
                .load(std::sync::atomic::Ordering::Relaxed);
            sink.finish().unwrap();
            (id, n)
        };
        let (a, pack_a) = {
            let repo = Repository::open(&place, Access::Write).unwrap();
            let (a, _) = stored(&repo, b"chunk a");
            (a, repo.index().get(&a).unwrap().unwrap().pack)
        };
        // Another writer, with its own index, adds a pack.
        let b = {
            let repo = Repository::open_with_mem_index(&path).unwrap();
            stored(&repo, b"chunk b").0
        };
        fs::remove_file(LocalStoreFor(&path).pack(&pack_a)).unwrap();

        let repo = Repository::open(&place, Access::Write).unwrap();
        let r = repo.reconciled.clone().expect("reconciled");
        assert_eq!(
            (r.packs_dropped, r.chunks_dropped, r.packs_added),
            (1, 1, 1)
        );
        assert!(repo.index().get(&a).unwrap().is_none());
        assert!(repo.index().get(&b).unwrap().is_some());
        assert_eq!(stored(&repo, b"chunk a"), (a, 1), "stored again");
        assert_eq!(stored(&repo, b"chunk b"), (b, 0), "deduplicated");
        drop(repo);
        let repo = Repository::open(&place, Access::Write).unwrap();
        assert!(repo.reconciled.is_none(), "nothing changed since");
    }

    struct LocalStoreFor<'a>(&'a Path);
    impl LocalStoreFor<'_> {
        fn pack(&self, id: &PackId) -> PathBuf {
            PathBuf::from(crate::store::local::LocalStore::new(self.0).describe(Key::Pack(*id)))
        }
    }

    /// A store that counts its listings of packs.
    struct Counting(
        crate::store::local::LocalStore,
        std::sync::atomic::AtomicU64,
    );
    impl Counting {
        fn pack_lists(&self) -> u64 {
            self.1.load(std::sync::atomic::Ordering::Relaxed)
        }
    }
    impl Store for Counting {
        fn location(&self) -> String {
            self.0.location()
        }
        fn put(&self, k: Key, b: &[u8]) -> Result<()> {
            self.0.put(k, b)
        }
        fn put_new(&self, k: Key, b: &[u8]) -> Result<bool> {
            self.0.put_new(k, b)
        }
        fn conditional_writes(&self) -> bool {
            false
        }
        fn stage(&self, s: &Path) -> Result<crate::store::Staged> {
            self.0.stage(s)
        }
        fn put_staged(&self, k: Key, s: crate::store::Staged) -> Result<()> {
            self.0.put_staged(k, s)
        }
        fn init(&self) -> Result<()> {
            self.0.init()
        }
        fn get(&self, k: Key) -> Result<Vec<u8>> {
            self.0.get(k)
        }
        fn read_shape(&self) -> crate::store::ReadShape {
            self.0.read_shape()
        }
        fn read_at(&self, k: Key, o: u64, b: &mut [u8]) -> Result<()> {
            self.0.read_at(k, o, b)
        }
        fn read_tail(&self, k: Key, n: u64) -> Result<(Vec<u8>, u64)> {
            self.0.read_tail(k, n)
        }
        fn size(&self, k: Key) -> Result<u64> {
            self.0.size(k)
        }
        fn exists(&self, k: Key) -> Result<bool> {
            self.0.exists(k)
        }
        fn list(&self, kind: Kind) -> Result<Vec<(Key, u64)>> {
            if kind == Kind::Pack {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.0.list(kind)
        }
        fn delete(&self, k: Key) -> Result<()> {
            self.0.delete(k)
        }
        fn clear_scratch(&self, s: &Path) {
            self.0.clear_scratch(s)
        }
        fn sync_visible(&self) -> Result<()> {
            self.0.sync_visible()
        }
        fn remove_leftovers(&self) -> Result<u64> {
            self.0.remove_leftovers()
        }
        fn describe(&self, k: Key) -> String {
            self.0.describe(k)
        }
    }

    /// A shared repository's index lists the packs only when the pack-set epoch changed
    /// or a snapshot it has not seen appeared: never for an unchanged store.
    #[test]
    fn a_shared_index_lists_packs_only_when_the_store_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Repository::init(&crate::store::Place::local(&path)).unwrap();
        {
            let repo = Repository::open_with_mem_index(&path).unwrap();
            let sink = ChunkSink::new(&repo).unwrap();
            sink.put(ChunkKind::Data, b"chunk", true).unwrap();
            sink.finish().unwrap();
        }
        let store = Counting(
            crate::store::local::LocalStore::new(&path),
            Default::default(),
        );
        let limits = RawLimits::of(&load_config(&store).unwrap());
        let packs = PackReader {
            store: &store,
            limits: &limits,
            layout: PackLayout::Apart,
            cache: None,
        };
        let (idx, _) = RocksIndex::open(&dir.path().join("index")).unwrap();
        let seen = SeenNow::read(&store, None).unwrap();
        rebuild_into(&packs, &idx, Some(&seen), &Damaged::new()).unwrap();
        assert_eq!(store.pack_lists(), 1);
        let none = HashSet::new();
        for _ in 0..3 {
            let seen = SeenNow::read(&store, None).unwrap();
            assert!(reconcile(&packs, &idx, Some(&seen), &none)
                .unwrap()
                .is_none());
        }
        assert_eq!(store.pack_lists(), 1, "an unchanged store is not listed");

        // A gc elsewhere deleted the pack and wrote a new epoch.
        let (pack, _) = store.list(Kind::Pack).unwrap()[0];
        store.delete(pack).unwrap();
        store
            .put(Key::PackEpoch, &PackEpoch::random().encode().unwrap())
            .unwrap();
        let seen = SeenNow::read(&store, None).unwrap();
        let r = reconcile(&packs, &idx, Some(&seen), &none)
            .unwrap()
            .unwrap();
        assert_eq!((r.packs_dropped, r.chunks_dropped), (1, 1));
        assert_eq!(store.pack_lists(), 3);
        let seen = SeenNow::read(&store, None).unwrap();
        assert!(reconcile(&packs, &idx, Some(&seen), &none)
            .unwrap()
            .is_none());
        assert_eq!(store.pack_lists(), 3, "the new epoch was recorded");

        // A snapshot the index has not seen (another host's backup) is reconciled for.
        store
            .put(Key::Snapshot(SnapshotId::of(b"elsewhere")), b"elsewhere")
            .unwrap();
        let seen = SeenNow::read(&store, None).unwrap();
        reconcile(&packs, &idx, Some(&seen), &none).unwrap();
        assert_eq!(store.pack_lists(), 4);
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
        let file = repo.pack_location(id);
        let mut bytes = fs::read(&file).unwrap();
        bytes[8..12].copy_from_slice(&(pack::PACK_VERSION + 1).to_le_bytes());
        fs::write(&file, &bytes).unwrap();
        let e = repo.pack_entries(id).unwrap_err();
        assert!(
            matches!(&e, Error::NewerFormat { what: "pack", found, .. } if *found == pack::PACK_VERSION + 1),
            "{e}"
        );
    }

    /// A read compares the record's lengths with the index's and refuses lengths no
    /// chunk of this repository can have before allocating anything for them.
    /// A database's chunks, put between files' chunks, land in packs with no file chunk
    /// in them (a dump is then read back from its own packs), and every chunk reads back.
    #[test]
    fn database_chunks_go_to_packs_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Repository::init(&crate::store::Place::local(&path)).unwrap();
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let sink = ChunkSink::new(&repo).unwrap();
        let (mut files, mut dbs) = (Vec::new(), Vec::new());
        for i in 0..40u32 {
            let f = format!("file {i} ").repeat(50 + i as usize);
            let d = format!("INSERT INTO t VALUES({i});").repeat(60 + i as usize);
            files.push((sink.put(ChunkKind::Data, f.as_bytes(), true).unwrap(), f));
            dbs.push((sink.put_database(d.as_bytes(), true).unwrap(), d));
        }
        sink.finish().unwrap();
        let pack_of = |id: &ChunkId| repo.index().get(id).unwrap().unwrap().pack;
        let file_packs: HashSet<PackId> = files.iter().map(|(id, _)| pack_of(id)).collect();
        let db_packs: HashSet<PackId> = dbs.iter().map(|(id, _)| pack_of(id)).collect();
        assert!(
            file_packs.is_disjoint(&db_packs),
            "{file_packs:?} {db_packs:?}"
        );
        for (id, bytes) in files.iter().chain(&dbs) {
            assert_eq!(repo.read_chunk_vec(id).unwrap(), bytes.as_bytes());
        }
    }

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
