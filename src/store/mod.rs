//! Where the repository's bytes live and how they get there durably.
//!
//! - [`Store`]: the repository's objects (config, snapshot records, packs, the gc
//!   marker) behind a narrow trait, with its durability contract; [`local::LocalStore`]
//!   keeps them in a directory.
//! - [`durable`]: atomic, durable writes to a local file system, through the narrow
//!   file-operation trait that the crash tests' simulated file system (`simfs`, with the
//!   `test-hooks` feature) also implements.
//! - [`lock`], [`index`], [`packer`], [`repo`], [`reads`]: the repository's locks, its
//!   chunk index (derived data, rebuilt from the packs), the pack writer, the handle that
//!   ties them together and its reads of chunks (coalesced when many are read).
//!
//! The trait is shaped so that an object store (ranged reads, listing by prefix, atomic
//! whole-object writes, no rename) can implement it: nothing above it renames, appends
//! to or partially overwrites an object.

pub mod durable;
pub mod index;
pub mod local;
pub mod lock;
pub mod packer;
pub mod reads;
pub mod repo;
#[cfg(feature = "test-hooks")]
pub mod simfs;
#[cfg(feature = "test-hooks")]
pub mod testing;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::id::{PackId, SnapshotId};
use crate::store::durable::{Fs, FsFile};

/// An object of the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// The repository config; written once, by `init`, last.
    Config,
    /// A snapshot record, named by the hash of its bytes.
    Snapshot(SnapshotId),
    /// A pack, named by the hash of its bytes.
    Pack(PackId),
    /// Present while a gc sweep has not finished.
    GcMarker,
}

/// The kinds of object a store lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Pack,
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
        Ok(Staged {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            tmp: TempName {
                fs,
                path: Some(path),
            },
            len: 0,
            hook: None,
        })
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
    /// Where the store is, for messages and for the local scratch space.
    fn root(&self) -> &Path;

    /// Write a whole small object.
    fn put(&self, key: Key, bytes: &[u8]) -> Result<()>;

    /// Local scratch space for a large object (see [`Staged`]).
    fn stage(&self) -> Result<Staged>;

    /// Make a staged object durable under `key`.
    fn put_staged(&self, key: Key, staged: Staged) -> Result<()>;

    /// Make an empty store ready for objects; fails when it holds anything but what an
    /// interrupted `init` leaves.
    fn init(&self) -> Result<()>;

    /// A whole object.
    fn get(&self, key: Key) -> Result<Vec<u8>>;

    /// `buf.len()` bytes of an object from `offset` (a chunk of a pack).
    fn read_at(&self, key: Key, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// An object's size in bytes.
    fn size(&self, key: Key) -> Result<u64>;

    fn exists(&self, key: Key) -> Result<bool>;

    /// Every complete object of a kind, in no particular order.
    fn list(&self, kind: Kind) -> Result<Vec<Key>>;

    fn delete(&self, key: Key) -> Result<()>;

    /// Empty the local scratch space of a process that died (staged packs, database
    /// captures). Only the holder of the writer lock calls it, when it opens the store.
    fn clear_scratch(&self);

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
    fn describe(&self, key: Key) -> PathBuf;
}

/// The store of the repository at `path`. Builds with the `test-hooks` feature wrap it in
/// the test store, which injects the faults a test asks for.
pub fn open(path: &Path) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(local::LocalStore::new(path));
    #[cfg(feature = "test-hooks")]
    let store = testing::wrap_store(store);
    store
}
