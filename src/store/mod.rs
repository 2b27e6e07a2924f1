//! Where the repository's bytes live and how they get there durably.
//!
//! - [`Store`]: the repository's objects (config, snapshot records, packs, the gc
//!   marker) behind a narrow trait, with its durability contract; [`local::LocalStore`]
//!   keeps them in a directory, [`s3::S3Store`] in a bucket of an S3-compatible object
//!   store, and `mem::MemStore` (with the `test-hooks` feature) in memory.
//! - [`durable`]: atomic, durable writes to a local file system, through the narrow
//!   file-operation trait that the crash tests' simulated file system (`simfs`, with the
//!   `test-hooks` feature) also implements.
//! - [`lock`], [`index`], [`packer`], [`repo`], [`reads`]: the repository's locks, its
//!   chunk index (derived data, rebuilt from the packs), the pack writer, the handle that
//!   ties them together and its reads of chunks (coalesced when many are read);
//!   `treemap`: where a backup finds its parent's trees without asking the index for each.
//!
//! The trait is shaped so that an object store (ranged reads, listing by prefix, atomic
//! whole-object writes, no rename) can implement it: nothing above it renames, appends
//! to or partially overwrites an object.

pub mod cache;
pub mod durable;
pub mod index;
pub mod lease;
pub mod local;
pub mod lock;
#[cfg(feature = "test-hooks")]
pub mod mem;
pub mod packer;
pub mod reads;
pub mod repo;
pub mod s3;
#[cfg(feature = "test-hooks")]
pub mod simfs;
#[cfg(feature = "test-hooks")]
pub mod testing;
mod treemap;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::format::pack::ChunkKind;
use crate::id::{PackId, SnapshotId};
use crate::store::durable::{Fs, FsFile};

/// An object of the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// The repository config; written once, by `init`, last.
    Config,
    /// A snapshot record, named by the hash of its bytes.
    Snapshot(SnapshotId),
    /// A pack under `packs/`, named by the hash of its bytes: every pack of a format-1
    /// repository, a data pack from format 2 on (see [`PackLayout`]).
    Pack(PackId),
    /// A tree pack under `trees/` (format 2 on), named by the hash of its bytes.
    TreePack(PackId),
    /// Present while a gc sweep has not finished.
    GcMarker,
    /// A lease: a process on some host says, until the time written in it, that it
    /// uses the repository (see `store::lease`). Named by a random id.
    Lease(LeaseId),
    /// The packs a gc of a repository shared by hosts marked for deletion, waiting for
    /// their grace period (see `ops::gc`).
    GcPending,
    /// The pack-set epoch: a token a gc of a shared repository changes after deleting
    /// packs, so that other hosts' caches know to reconcile their index.
    PackEpoch,
    /// The damage record of a pack: its chunks `check --read-data` found damaged
    /// (`format::damaged`). Named by the pack's id.
    Damaged(PackId),
}

impl Key {
    /// The pack this key names, if it names one.
    pub fn pack_id(&self) -> Option<PackId> {
        match self {
            Key::Pack(id) | Key::TreePack(id) => Some(*id),
            _ => None,
        }
    }
}

/// How a repository names its packs (docs/FORMAT.md, "Layout"), from its format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackLayout {
    /// Format 1: every pack under `packs/`; only its trailer tells its kind.
    Together,
    /// Format 2: data packs under `packs/`, tree packs under `trees/`, so that a
    /// listing tells a pack's kind and a cache can fetch every tree pack without
    /// listing, or reading anything of, the data packs.
    Apart,
}

impl PackLayout {
    pub fn of(config: &crate::format::config::RepoConfig) -> Self {
        if config.tree_packs_apart() {
            PackLayout::Apart
        } else {
            PackLayout::Together
        }
    }

    /// The key of pack `id`, which holds chunks of `kind`.
    pub fn key(self, id: PackId, kind: ChunkKind) -> Key {
        match (self, kind) {
            (PackLayout::Apart, ChunkKind::Tree) => Key::TreePack(id),
            _ => Key::Pack(id),
        }
    }

    /// The kinds of object a listing of every pack lists.
    pub fn pack_kinds(self) -> &'static [Kind] {
        match self {
            PackLayout::Together => &[Kind::Pack],
            PackLayout::Apart => &[Kind::Pack, Kind::TreePack],
        }
    }

    /// The kind a pack's key says it holds: `None` where the name does not say (format
    /// 1), and only its trailer can.
    pub fn kind_of(self, key: Key) -> Option<ChunkKind> {
        match (self, key) {
            (PackLayout::Apart, Key::Pack(_)) => Some(ChunkKind::Data),
            (_, Key::TreePack(_)) => Some(ChunkKind::Tree),
            _ => None,
        }
    }
}

/// A lease's name: 16 random bytes, in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub [u8; 16]);

impl LeaseId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        crate::sys::getrandom(&mut b);
        LeaseId(b)
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(LeaseId(b))
    }
}

/// The kinds of object a store lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    /// The packs under `packs/` ([`Key::Pack`]).
    Pack,
    /// The packs under `trees/` ([`Key::TreePack`]).
    TreePack,
    Lease,
    /// The damage records ([`Key::Damaged`]).
    Damaged,
}

/// A hook the test store sets on the objects it stages (see [`Staged`]); `None` in
/// every store a user runs.
pub type WriteHook = Arc<dyn Fn(&Path) -> std::io::Result<()> + Send + Sync>;

/// A large object being built before it has a name (a pack is named by the hash of its
/// bytes): written to local scratch space, then handed to [`Store::put_staged`].
/// Dropping it without putting it deletes the scratch file.
pub struct Staged {
    file: std::io::BufWriter<Box<dyn FsFile>>,
    tmp: TempName,
    len: u64,
    hook: Option<WriteHook>,
}

/// The name of a scratch file on `fs`, removed when dropped unless it was
/// [`TempName::persisted`] under another name.
pub struct TempName {
    fs: Arc<dyn Fs>,
    path: Option<PathBuf>,
}

impl TempName {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The file was renamed away: nothing is left to remove.
    pub fn persisted(mut self) {
        self.path = None;
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = self.fs.remove_file(&p);
        }
    }
}

impl Staged {
    /// A new, empty scratch file in `dir` on `fs`.
    pub fn create(fs: Arc<dyn Fs>, dir: &Path) -> Result<Self> {
        let (file, path) = fs.create_temp(dir, "pack-").at(dir)?;
        Ok(Self::over(fs, file, path))
    }

    /// [`Staged::create`] for an object that is renamed into place, never read back by
    /// this run: where the file system allows, its bytes skip the page cache
    /// ([`Fs::create_temp_direct`]).
    pub fn create_direct(fs: Arc<dyn Fs>, dir: &Path) -> Result<Self> {
        let (file, path) = fs.create_temp_direct(dir, "pack-").at(dir)?;
        Ok(Self::over(fs, file, path))
    }

    fn over(fs: Arc<dyn Fs>, file: Box<dyn FsFile>, path: PathBuf) -> Self {
        let capacity = if file.buffers() { 0 } else { 1 << 20 };
        Staged {
            file: std::io::BufWriter::with_capacity(capacity, file),
            tmp: TempName {
                fs,
                path: Some(path),
            },
            len: 0,
            hook: None,
        }
    }

    /// Run `hook` before every write (the test store's faults).
    pub fn with_hook(mut self, hook: WriteHook) -> Self {
        self.hook = Some(hook);
        self
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(hook) = &self.hook {
            hook(self.tmp.path()).at(self.tmp.path())?;
        }
        self.file.write_all(bytes).at(self.tmp.path())?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.len
    }

    /// The finished scratch file: flushed, not yet synced.
    pub fn finish(self) -> Result<(Box<dyn FsFile>, TempName)> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| Error::io(self.tmp.path(), e.into_error()))?;
        Ok((file, self.tmp))
    }
}

/// The repository's objects.
///
/// Durability contract, for every implementation:
/// - `put` and `put_staged` are atomic and durable: when they return `Ok`, the object is
///   readable under its key with exactly these bytes and survives a crash or power loss;
///   when they fail or the process dies, no partial object is visible under the key
///   (an older complete one may be, for keys written more than once). A failure is final
///   for the run: the caller abandons it and never retries a failed sync.
/// - `delete` is durable when it returns; deleting an absent object is not an error.
/// - `list` returns only complete objects, never scratch or temporary files.
/// - Reads return the bytes stored; callers verify them against the object's name or
///   the ids inside it, since storage can rot.
/// - A store never renames, appends to or rewrites part of an object; objects named by
///   a hash are written once.
pub trait Store: Send + Sync {
    /// Where the store is, for messages (a path, or an `s3:` URL).
    fn location(&self) -> String;

    /// Write a whole small object.
    fn put(&self, key: Key, bytes: &[u8]) -> Result<()>;

    /// Write a whole small object only if none is under `key`: `Ok(false)` when one is.
    /// Atomic where the store can make it so (a local hard link, an object store's
    /// conditional write); [`Store::conditional_writes`] says whether it is.
    fn put_new(&self, key: Key, bytes: &[u8]) -> Result<bool>;

    /// Whether [`Store::put_new`] is atomic against another host writing the same key.
    fn conditional_writes(&self) -> bool;

    /// A new scratch file for a large object (see [`Staged`]), in `scratch` (the
    /// repository's local scratch directory; for a local store, on the store's own file
    /// system).
    fn stage(&self, scratch: &Path) -> Result<Staged>;

    /// Make a staged object durable under `key`.
    fn put_staged(&self, key: Key, staged: Staged) -> Result<()>;

    /// Make an empty store ready for objects; fails when it holds anything but what an
    /// interrupted `init` leaves.
    fn init(&self) -> Result<()>;

    /// A whole object.
    fn get(&self, key: Key) -> Result<Vec<u8>>;

    /// `buf.len()` bytes of an object from `offset` (a chunk of a pack).
    fn read_at(&self, key: Key, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// `len` bytes of an object from `offset`, read into `buf` (grown as needed, only what
    /// it grows by is zeroed); returns where in `buf` they start. A store may read a
    /// little more around them: a local one reads bytes that are not in the page cache
    /// as whole blocks straight into `buf` ([`local`]).
    fn read_into(&self, key: Key, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<usize> {
        if buf.capacity() < len {
            buf.reserve_exact(len - buf.len());
        }
        buf.resize(len, 0);
        self.read_at(key, offset, buf)?;
        Ok(0)
    }

    /// How reads of many records are best grouped (see `store::reads`).
    fn read_shape(&self) -> ReadShape;

    /// The last `len` bytes of an object (all of it when it is shorter) and the object's
    /// size, in one request (a pack's trailer).
    fn read_tail(&self, key: Key, len: u64) -> Result<(Vec<u8>, u64)>;

    /// An object's size in bytes.
    fn size(&self, key: Key) -> Result<u64>;

    fn exists(&self, key: Key) -> Result<bool>;

    /// Every complete object of a kind with its size, in no particular order.
    fn list(&self, kind: Kind) -> Result<Vec<(Key, u64)>>;

    fn delete(&self, key: Key) -> Result<()>;

    /// Empty the local scratch directory `scratch` of what a process that died left
    /// (staged packs, database captures). Only the holder of the writer lock calls it,
    /// when it opens the repository.
    fn clear_scratch(&self, scratch: &Path);

    /// Make durable what a process that died may have left visible but not durable: an
    /// object renamed into place, or a delete, whose directory it never synced (the
    /// config, a snapshot record, a forget's removal). Until then a power cut can take
    /// back what every command already sees: a snapshot that forget kept in place of
    /// older ones, a record that gc deleted the chunks of. The holder of the writer lock
    /// calls it when it opens the store, before it acts on a listing. A store whose
    /// writes and deletes are durable once visible (an object store) does nothing.
    fn sync_visible(&self) -> Result<()>;

    /// Remove the temporary objects interrupted atomic writes left behind; returns how
    /// many. Only the holder of the writer lock calls it (gc).
    fn remove_leftovers(&self) -> Result<u64>;

    /// Where a key lives, for messages (`packs/ab/ab12…` under the root for a local
    /// store).
    fn describe(&self, key: Key) -> String;
}

/// How a store is best read in bulk: the longest single read, and the widest gap between
/// two wanted byte ranges that one read still spans (fetching the gap costs less than
/// another read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadShape {
    pub max_read: usize,
    pub max_gap: u64,
    /// Reads are best whole packs: a reader that can choose what it reads together
    /// (a restore's batches of small files) groups it by pack.
    pub by_pack: bool,
}

impl ReadShape {
    /// A local file system: a read is a system call, and 4 MiB reads keep each reading
    /// thread's buffer small.
    pub const LOCAL: ReadShape = ReadShape {
        max_read: 4 << 20,
        max_gap: 64 << 10,
        by_pack: false,
    };
    /// An object store: every read is a request, with a round trip (tens of milliseconds
    /// to a provider) and often a price, so one read takes a whole pack of the default
    /// size (a pack is sealed once past its 16 MiB target, so it holds up to one more
    /// chunk of at most 1 MiB), and a gap of up to 1 MiB is fetched rather than split
    /// into two requests.
    pub const REMOTE: ReadShape = ReadShape {
        max_read: 18 << 20,
        max_gap: 1 << 20,
        by_pack: true,
    };
}

/// Where a repository's objects are.
#[derive(Debug, Clone)]
pub enum Location {
    /// A directory; the repository's local state (index, locks, scratch) lives in it.
    Local(PathBuf),
    /// A bucket (and key prefix) of an S3-compatible object store.
    S3(Box<s3::S3Config>),
}

impl Location {
    /// The location as the user wrote it, for messages.
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3(c) => c.location(),
        }
    }

    /// The local directory, for a local repository.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) => None,
        }
    }

    /// The location as a path, for errors that name a repository.
    pub fn as_path(&self) -> PathBuf {
        PathBuf::from(self.display())
    }
}

/// A repository as a command is given it: where its objects are, and the cache
/// directory where a repository that is not a local directory keeps its local state
/// (`<cache>/repos/<repository id>/`: index, locks, scratch).
#[derive(Debug, Clone)]
pub struct Place {
    pub location: Location,
    pub cache_dir: PathBuf,
}

impl Place {
    pub fn new(location: Location, cache_dir: PathBuf) -> Self {
        Place {
            location,
            cache_dir,
        }
    }

    /// A local repository at `path` (its state lives in it; the cache dir is unused).
    pub fn local(path: &Path) -> Self {
        Place {
            location: Location::Local(path.to_path_buf()),
            cache_dir: path.join("tmp"),
        }
    }

    /// The directory holding the repository's local state (index, locks, scratch):
    /// the repository itself when it is local, else a directory of the cache named by
    /// the repository id (known once the config is read).
    pub fn state_dir(&self, repo_id: &str) -> PathBuf {
        match self.location.local_path() {
            Some(p) if !self.shared_by_hosts() => p.to_path_buf(),
            _ => self.cache_dir.join("repos").join(repo_id),
        }
    }

    /// Whether other hosts may use the repository at the same time: every location
    /// that is not a local directory. Such a repository is coordinated by leases and
    /// collected in two phases; a local one by its flocks alone. (A test build can make
    /// a local directory stand in for a shared store, see `testing::local_as_shared`.)
    pub fn shared_by_hosts(&self) -> bool {
        #[cfg(feature = "test-hooks")]
        if testing::local_as_shared() {
            return true;
        }
        self.location.local_path().is_none()
    }
}

/// The store at `location`. Builds with the `test-hooks` feature wrap it in the test
/// store, which injects the faults a test asks for.
pub fn open(location: &Location) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match location {
        Location::Local(path) => Arc::new(local::LocalStore::new(path)),
        Location::S3(config) => Arc::new(s3::S3Store::new(config)?),
    };
    #[cfg(feature = "test-hooks")]
    let store = testing::wrap_store(store);
    Ok(store)
}

/// How many reads [`map_parallel`] keeps in flight.
const READS_IN_FLIGHT: usize = 8;

/// `f` of every item, in the items' order, on up to [`READS_IN_FLIGHT`] threads (this
/// one included): for many small reads bound by a disk's or a network's latency rather
/// than by the processor (a local repository's pack directories, snapshot records read
/// cold). A thread that does not start leaves its share to the others.
pub(crate) fn map_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = READS_IN_FLIGHT.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            done.push((i, f(item)));
        }
        done
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        let mut all = work();
        for h in helpers {
            match h.join() {
                Ok(done) => all.extend(done),
                // As if `f` had panicked here.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_parallel_keeps_the_items_order() {
        let items: Vec<u64> = (0..100).collect();
        let out = super::map_parallel(&items, |&i| {
            // Later items finish first.
            std::thread::sleep(std::time::Duration::from_micros(100 - i));
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(super::map_parallel(&[] as &[u64], |&i| i).is_empty());
    }
}
