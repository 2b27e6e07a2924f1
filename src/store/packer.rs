//! Storing new chunks: dedup against the index, compress, and append to packs.
//!
//! Worker threads call [`ChunkSink::put`]; new chunks travel over a bounded channel to
//! one writer thread that fills a data pack and a tree pack. Write order
//! (docs/ARCHITECTURE.md, "Write order"): a pack is made durable in the store
//! ([`Store::put_staged`]), and only then are its index entries inserted (synced). A
//! tree pack is never sealed before the data pack in progress, and [`ChunkSink::put`]
//! returns only once its chunk is indexed or in the writer's channel (a worker that finds
//! the chunk claimed by another waits for that one to send it), so whatever names a chunk
//! reaches the writer after it: a durable tree never names a chunk that is not yet
//! durable. The bounded channel and the recycled record buffers keep memory flat
//! whatever the data size. Records stream into a staged object
//! ([`Store::stage`]); a sealed pack goes to a second thread that makes it durable and
//! indexes it, in seal order, while the next one fills.
//!
//! A sink that commits many records over its life (a copy) opens it [`ChunkSink::in_step`]:
//! whenever one kind's pack fills, the other's is sealed too, so that everything handed
//! over before that moment becomes durable together, and [`ChunkSink::durable`] says how
//! far: a caller that hands chunks over from one thread knows which of them are durable
//! and indexed, and so which records it may write. A backup commits one record at the
//! end and keeps its tree packs few.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::format::pack::{self, ChunkKind, PackEntry};
use crate::format::record::{self, Compress};
use crate::id::{ChunkId, PackId};
use crate::store::index::{ChunkIndex, IndexEntry, PackInfo, RocksIndex};
use crate::store::repo::Repository;
use crate::store::{Key, PackLayout, Staged, Store};

/// Start a named thread; a thread that cannot start is an error, never a silent no-op.
fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    let failed = |source: std::io::Error| Error::ThreadStart {
        what: name.to_string(),
        source,
    };
    #[cfg(feature = "test-hooks")]
    crate::store::testing::thread_spawn().map_err(failed)?;
    std::thread::Builder::new()
        .name(format!("jellysnap-{}", name.replace(' ', "-")))
        .spawn(f)
        .map_err(failed)
}

/// A lock whose holder panicked: the run must end, since the state it guards is unknown.
fn poisoned(what: &str) -> Error {
    Error::internal(format!("{what} poisoned by a panicked thread"))
}

/// A sealed record on its way to the pack writer: what its header says, and its bytes.
struct NewChunk {
    entry: PackEntry,
    record: Vec<u8>,
    stream: Stream,
}

/// Which open pack a new chunk goes to. A database's chunks go to packs of their own:
/// a dump is read back as one stream, which then takes a few whole-pack reads instead
/// of a read in every pack the files' chunks share with it (a request each on object
/// storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Files,
    Database,
    Trees,
}

impl Stream {
    fn of(kind: ChunkKind) -> Stream {
        match kind {
            ChunkKind::Data => Stream::Files,
            ChunkKind::Tree => Stream::Trees,
        }
    }
}

#[derive(Debug, Default)]
pub struct SinkStats {
    pub new_chunks: AtomicU64,
    pub new_raw_bytes: AtomicU64,
    pub new_stored_bytes: AtomicU64,
}

impl SinkStats {
    fn count(&self, raw: usize, stored: usize) {
        self.new_chunks.fetch_add(1, Ordering::Relaxed);
        self.new_raw_bytes.fetch_add(raw as u64, Ordering::Relaxed);
        self.new_stored_bytes
            .fetch_add(stored as u64, Ordering::Relaxed);
    }
}

/// Chunks counted by kind, in the order they were handed to a sink's writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handed {
    pub data: u64,
    pub tree: u64,
}

impl Handed {
    /// Count one more chunk of `kind`.
    pub fn add(&mut self, kind: ChunkKind) {
        match kind {
            ChunkKind::Data => self.data += 1,
            ChunkKind::Tree => self.tree += 1,
        }
    }

    /// Whether these counts reach `need` in both kinds.
    pub fn covers(&self, need: &Handed) -> bool {
        self.data >= need.data && self.tree >= need.tree
    }
}

/// The chunks of each kind made durable and indexed so far (written by the syncer after
/// each pack's index entries are synced; packs become durable in seal order, so these
/// are always a prefix of each kind's chunks in the order they were handed over).
#[derive(Debug, Default)]
struct Durable {
    data: AtomicU64,
    tree: AtomicU64,
}

impl Durable {
    fn add(&self, kind: ChunkKind, n: usize) {
        let c = match kind {
            ChunkKind::Data => &self.data,
            ChunkKind::Tree => &self.tree,
        };
        c.fetch_add(n as u64, Ordering::SeqCst);
    }

    fn get(&self) -> Handed {
        Handed {
            data: self.data.load(Ordering::SeqCst),
            tree: self.tree.load(Ordering::SeqCst),
        }
    }
}

/// A new chunk on its way to the pack writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Claimed by a worker that is compressing it.
    Sending,
    /// In the writer's channel (or already in a pack).
    Sent,
}

/// Shared by the backup's worker threads.
pub struct ChunkSink<'r> {
    repo: &'r Repository,
    /// The new chunks this sink has taken on; a worker that finds a chunk still
    /// `Sending` waits on `sent` for it.
    pending: Mutex<HashMap<ChunkId, Pending>>,
    sent: Condvar,
    tx: Mutex<Option<SyncSender<NewChunk>>>,
    /// Set when a chunk could not be handed to the writer: it stopped on an error.
    writer_stopped: std::sync::atomic::AtomicBool,
    /// The packs made durable (and indexed) so far, in seal order.
    written: Arc<Mutex<Vec<PackId>>>,
    durable: Arc<Durable>,
    /// Where the syncer noted that a pack may be in the store unindexed (a repository
    /// hosts share), cleared once every pack put is indexed.
    unsettled: Option<Arc<RocksIndex>>,
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    pub stats: SinkStats,
    #[cfg(test)]
    hook: Option<Box<dyn Fn(TestPoint) + Send + Sync>>,
}

/// Moments of [`ChunkSink::put`] a unit test can stop at.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestPoint {
    /// The worker that claimed a chunk is about to send it.
    BeforeSend,
    /// A worker waits for another to send the chunk it also has.
    Waiting,
}

impl<'r> ChunkSink<'r> {
    /// Start the pack writer and syncer threads. A thread that cannot start is an
    /// error: without it nothing written here would become durable.
    pub fn new(repo: &'r Repository) -> Result<Self> {
        Self::start(repo, false)
    }

    /// [`ChunkSink::new`], with the data and tree packs sealed together whenever either
    /// fills (see the module doc): for a caller that writes records as their chunks
    /// become durable. Tree packs then number at most the data packs plus those trees
    /// fill, and a record waits at most one pack for its chunks.
    pub fn in_step(repo: &'r Repository) -> Result<Self> {
        Self::start(repo, true)
    }

    fn start(repo: &'r Repository, in_step: bool) -> Result<Self> {
        let index = repo.index_arc();
        let (tx, rx) = sync_channel::<NewChunk>(32);
        let pool = Arc::new(Mutex::new(Vec::new()));
        let (sync_tx, sync_rx) = sync_channel::<SealedPack>(2);
        let written = Arc::new(Mutex::new(Vec::new()));
        // The writer starts first and waits for its syncer, so that whichever thread
        // cannot start, every thread that did is joined before the error returns (a
        // thread left running would outlive the index it holds).
        let (start_tx, start_rx) = sync_channel::<Syncer>(1);
        let mut writer = PackWriter {
            store: repo.store_arc(),
            scratch: repo.tmp_dir(),
            target: repo.config().pack_target_bytes,
            in_step,
            data: None,
            database: None,
            tree: None,
            pool: pool.clone(),
            syncer: None,
        };
        let handle = spawn("pack writer", move || match start_rx.recv() {
            Ok(syncer) => {
                writer.syncer = Some(syncer);
                writer.run(rx)
            }
            // The syncer did not start: the caller reports why.
            Err(_) => Ok(()),
        })?;
        let (store, to_syncer) = (repo.store_arc(), written.clone());
        let layout = repo.pack_layout();
        let durable = Arc::new(Durable::default());
        let unsettled = repo.unsettled_note();
        let synced = Synced {
            written: to_syncer,
            durable: durable.clone(),
            unsettled: unsettled.clone(),
            damaged: repo.damaged_packs().clone(),
        };
        let syncer = spawn("pack syncer", move || {
            sync_packs(store.as_ref(), layout, index, sync_rx, &synced)
        });
        let syncer = match syncer {
            Ok(h) => h,
            Err(e) => {
                drop(start_tx);
                let _ = handle.join();
                return Err(e);
            }
        };
        if let Err(std::sync::mpsc::SendError((sync_tx, syncer))) = start_tx.send((sync_tx, syncer))
        {
            drop(sync_tx);
            let _ = syncer.join();
            return Err(handle
                .join()
                .unwrap_or_else(|_| Err(Error::internal("the pack writer panicked")))
                .err()
                .unwrap_or_else(|| Error::internal("the pack writer ended before it started")));
        }
        Ok(ChunkSink {
            repo,
            pending: Mutex::new(HashMap::new()),
            sent: Condvar::new(),
            tx: Mutex::new(Some(tx)),
            writer_stopped: Default::default(),
            written,
            durable,
            unsettled,
            writer: Mutex::new(Some(handle)),
            pool,
            stats: SinkStats::default(),
            #[cfg(test)]
            hook: None,
        })
    }

    /// Store `data` as a chunk unless the repository already has it. `compressible` is
    /// false for content known to be compressed already (JPEG, PNG, ...).
    ///
    /// Returns once the chunk is in the index or in the pack writer's channel, so that
    /// whatever the caller writes next that names it (a list chunk, a tree) enters the
    /// channel after it: the writer never seals a tree pack before the data pack that
    /// holds what the tree names (write order 2).
    pub fn put(&self, kind: ChunkKind, data: &[u8], compressible: bool) -> Result<ChunkId> {
        self.put_in(Stream::of(kind), kind, data, compressible)
    }

    /// [`ChunkSink::put`] for a database's data chunks, which go to packs of their own
    /// (see [`Stream`]).
    pub fn put_database(&self, data: &[u8], compressible: bool) -> Result<ChunkId> {
        self.put_in(Stream::Database, ChunkKind::Data, data, compressible)
    }

    fn put_in(
        &self,
        stream: Stream,
        kind: ChunkKind,
        data: &[u8],
        compressible: bool,
    ) -> Result<ChunkId> {
        let id = ChunkId::of(data);
        if kind == ChunkKind::Tree {
            self.repo.cache_tree(&id, data);
        }
        if !self.claim(&id)? {
            return Ok(id);
        }
        let claim = Claim {
            sink: self,
            id,
            sent: false,
        };
        let mut buf = self.buffer();
        let how = if compressible {
            Compress::IfWorth(self.repo.config().zstd_level)
        } else {
            Compress::Never
        };
        let entry = record::seal(kind, id, data, how, &mut buf).map_err(Error::internal)?;
        self.stats.count(data.len(), entry.stored_len as usize);
        let msg = NewChunk {
            entry,
            record: buf,
            stream,
        };
        #[cfg(test)]
        self.test_point(TestPoint::BeforeSend);
        self.send(msg)?;
        claim.sent();
        Ok(id)
    }

    /// Whether the caller is to store chunk `id`: false when the repository has it or
    /// another worker has sent it. A chunk another worker is still compressing is waited
    /// for; if that worker fails, the chunk is free to be claimed again.
    fn claim(&self, id: &ChunkId) -> Result<bool> {
        loop {
            {
                let mut pending = self.lock_pending()?;
                while pending.get(id) == Some(&Pending::Sending) {
                    #[cfg(test)]
                    self.test_point(TestPoint::Waiting);
                    pending = self
                        .sent
                        .wait(pending)
                        .map_err(|_| poisoned("the dedup set"))?;
                }
                if pending.contains_key(id) {
                    return Ok(false);
                }
            }
            // Entries are inserted only once their pack is durable. A chunk in a pack a
            // gc marked for deletion is stored again: that pack may be gone before the
            // snapshot that would name it is committed.
            if let Some(e) = self.repo.index().get(id)? {
                if !self.repo.is_doomed(&e.pack) && !self.repo.is_damaged_copy(id, &e.pack) {
                    return Ok(false);
                }
            }
            if let Entry::Vacant(v) = self.lock_pending()?.entry(*id) {
                v.insert(Pending::Sending);
                return Ok(true);
            }
            // Claimed by another worker between the two looks: wait for it.
        }
    }

    #[cfg(test)]
    fn test_point(&self, p: TestPoint) {
        if let Some(hook) = &self.hook {
            hook(p);
        }
    }

    /// Store a record again as it is (gc moving a live chunk to a new pack): `record`
    /// is the record's bytes, opened and verified by the caller, and `entry` what its
    /// header says. No dedup check, no recompression. The index entry moves to the new
    /// pack once it is durable.
    pub fn put_record(&self, entry: &PackEntry, record: &[u8]) -> Result<()> {
        let mut buf = self.buffer();
        buf.clear();
        buf.extend_from_slice(record);
        self.stats
            .count(entry.raw_len as usize, entry.stored_len as usize);
        self.send(NewChunk {
            entry: PackEntry {
                offset: 0,
                ..*entry
            },
            record: buf,
            stream: Stream::of(entry.kind),
        })
    }

    /// A record buffer recycled by the writer (no allocation per chunk once warm).
    fn buffer(&self) -> Vec<u8> {
        self.pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }

    fn send(&self, msg: NewChunk) -> Result<()> {
        let tx = self
            .tx
            .lock()
            .map_err(|_| poisoned("the pack writer's channel"))?;
        if tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok()) {
            return Ok(());
        }
        self.writer_stopped.store(true, Ordering::SeqCst);
        Err(Error::internal("the pack writer stopped"))
    }

    /// The error to report for a failed run: when the pack writer stopped, its own error
    /// (a full disk, a failed fsync) rather than the "stopped" seen by the workers.
    pub fn cause(&self, e: Error) -> Error {
        let stopped = self.writer_stopped.load(Ordering::SeqCst);
        match self.finish_inner() {
            Err(cause) if stopped => cause,
            _ => e,
        }
    }

    fn lock_pending(&self) -> Result<std::sync::MutexGuard<'_, HashMap<ChunkId, Pending>>> {
        self.pending.lock().map_err(|_| poisoned("the dedup set"))
    }

    /// How many chunks of each kind, counted in the order they were handed over, are
    /// durable and indexed (see [`Durable`]).
    pub fn durable(&self) -> Handed {
        self.durable.get()
    }

    /// Seal the open packs and wait until they and their index entries are durable,
    /// keeping the sink for [`ChunkSink::durable`]; [`ChunkSink::finish`] then returns
    /// the packs written.
    pub fn join(&self) -> Result<()> {
        self.finish_inner()
    }

    /// Seal the open packs and wait until they and their index entries are durable.
    /// Returns the packs written, in seal order.
    pub fn finish(self) -> Result<Vec<PackId>> {
        self.finish_inner()?;
        let written = self
            .written
            .lock()
            .map_err(|_| poisoned("the list of packs written"))?
            .clone();
        if let Some(idx) = self.unsettled.as_ref().filter(|_| !written.is_empty()) {
            // Every pack this sink put is indexed. Left set (a failed write), it costs
            // the next open one reconcile, nothing more.
            let _ = idx.set_unsettled(false);
        }
        Ok(written)
    }

    fn finish_inner(&self) -> Result<()> {
        // Closing the channel ends the writer, even when a panicked worker poisoned it.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handle = self
            .writer
            .lock()
            .map_err(|_| poisoned("the pack writer's handle"))?
            .take();
        match handle {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::internal("the pack writer panicked"))),
            None => Ok(()),
        }
    }
}

/// A worker's claim on a new chunk: marked sent once it is in the writer's channel, or
/// dropped (on an error or a panic) so that a waiting worker can take the chunk on.
struct Claim<'s, 'r> {
    sink: &'s ChunkSink<'r>,
    id: ChunkId,
    sent: bool,
}

impl Claim<'_, '_> {
    fn sent(mut self) {
        self.sent = true;
    }
}

impl Drop for Claim<'_, '_> {
    fn drop(&mut self) {
        // The set holds plain ids: it stays meaningful even if a panic poisoned it.
        let mut pending = self.sink.pending.lock().unwrap_or_else(|p| p.into_inner());
        if self.sent {
            pending.insert(self.id, Pending::Sent);
        } else {
            pending.remove(&self.id);
        }
        drop(pending);
        self.sink.sent.notify_all();
    }
}

struct PackWriter {
    store: Arc<dyn Store>,
    /// The repository's local scratch directory, where packs are staged.
    scratch: std::path::PathBuf,
    target: u64,
    /// Seal every open pack whenever one fills (see [`ChunkSink::in_step`]).
    in_step: bool,
    data: Option<OpenPack>,
    database: Option<OpenPack>,
    tree: Option<OpenPack>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Sealed packs on their way to disk, in seal order.
    syncer: Option<Syncer>,
}

/// The channel to the syncer thread, and the thread.
type Syncer = (SyncSender<SealedPack>, JoinHandle<Result<()>>);

/// A pack being filled: records are streamed into a staged object.
struct OpenPack {
    staged: Staged,
    hasher: blake3::Hasher,
    len: u64,
    entries: Vec<PackEntry>,
}

struct SealedPack {
    staged: Staged,
    id: PackId,
    kind: ChunkKind,
    entries: Vec<PackEntry>,
}

impl OpenPack {
    fn create(store: &dyn Store, scratch: &std::path::Path) -> Result<Self> {
        let mut p = OpenPack {
            staged: store.stage(scratch)?,
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        };
        p.write(&pack::PACK_MAGIC[..])?;
        p.write(&pack::PACK_VERSION.to_le_bytes())?;
        Ok(p)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.staged.write(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn add(&mut self, c: &NewChunk) -> Result<()> {
        let e = PackEntry {
            offset: self.len,
            ..c.entry
        };
        self.write(&c.record)?;
        self.entries.push(e);
        Ok(())
    }

    fn seal(mut self, kind: ChunkKind) -> Result<SealedPack> {
        let trailer = pack::seal_trailer(&self.entries);
        self.write(&trailer)?;
        Ok(SealedPack {
            staged: self.staged,
            id: PackId(*self.hasher.finalize().as_bytes()),
            kind,
            entries: self.entries,
        })
    }
}

impl PackWriter {
    fn run(mut self, rx: Receiver<NewChunk>) -> Result<()> {
        let r = self.fill(rx);
        // Always drain the syncer, so that packs sealed before an error still land.
        let synced = self.stop_syncer();
        r.and(synced)
    }

    fn fill(&mut self, rx: Receiver<NewChunk>) -> Result<()> {
        for c in rx {
            if self.slot(c.stream).is_none() {
                let open = OpenPack::create(self.store.as_ref(), &self.scratch)?;
                *self.slot(c.stream) = Some(open);
            }
            let slot = self.slot(c.stream);
            let full = match slot.as_mut() {
                Some(p) => {
                    p.add(&c)?;
                    p.len >= self.target
                }
                None => false,
            };
            if let Ok(mut p) = self.pool.lock() {
                if p.len() < 64 {
                    p.push(c.record);
                }
            }
            if full {
                match (c.stream, self.in_step) {
                    (Stream::Files | Stream::Database, false) => self.seal(c.stream)?,
                    // A tree pack never becomes durable before the data it references:
                    // the data packs being filled are sealed first. In step, a full data
                    // pack takes the trees handed over so far with it (they name only
                    // data sealed with it or before).
                    _ => {
                        self.seal(Stream::Files)?;
                        self.seal(Stream::Database)?;
                        self.seal(Stream::Trees)?;
                    }
                }
            }
        }
        self.seal(Stream::Files)?;
        self.seal(Stream::Database)?;
        self.seal(Stream::Trees)
    }

    fn slot(&mut self, stream: Stream) -> &mut Option<OpenPack> {
        match stream {
            Stream::Files => &mut self.data,
            Stream::Database => &mut self.database,
            Stream::Trees => &mut self.tree,
        }
    }

    fn seal(&mut self, stream: Stream) -> Result<()> {
        let kind = match stream {
            Stream::Files | Stream::Database => ChunkKind::Data,
            Stream::Trees => ChunkKind::Tree,
        };
        let Some(p) = self.slot(stream).take() else {
            return Ok(());
        };
        let sealed = p.seal(kind)?;
        match &self.syncer {
            Some((tx, _)) if tx.send(sealed).is_ok() => Ok(()),
            // The syncer stopped on an error: stop_syncer reports it. A sealed pack that
            // no syncer takes is never a success.
            Some(_) => self.stop_syncer().and(Err(Error::internal(
                "the pack syncer stopped before a sealed pack was made durable",
            ))),
            None => Err(Error::internal(
                "no pack syncer is running; a sealed pack would not be made durable",
            )),
        }
    }

    fn stop_syncer(&mut self) -> Result<()> {
        match self.syncer.take() {
            Some((tx, handle)) => {
                drop(tx);
                handle
                    .join()
                    .unwrap_or_else(|_| Err(Error::internal("the pack syncer panicked")))
            }
            None => Ok(()),
        }
    }
}

/// What the syncer reports as it goes, and where it notes that a pack may be unindexed.
struct Synced {
    written: Arc<Mutex<Vec<PackId>>>,
    durable: Arc<Durable>,
    unsettled: Option<Arc<RocksIndex>>,
    /// The packs with a damage record (see [`Repository::damaged`]).
    damaged: HashSet<PackId>,
}

/// Makes sealed packs durable in seal order: put the staged pack in the store, then
/// insert and sync its index entries. Runs beside the writer so that one pack's fsync
/// overlaps the next pack's writes.
fn sync_packs(
    store: &dyn Store,
    layout: PackLayout,
    index: Arc<dyn ChunkIndex>,
    rx: Receiver<SealedPack>,
    out: &Synced,
) -> Result<()> {
    let mut noted = false;
    for p in rx {
        let size = p.staged.written();
        if let Some(idx) = out.unsettled.as_ref().filter(|_| !noted) {
            // Before the first put: a kill between a put and its index entries must
            // make the next open look for the pack instead of sending it again.
            idx.set_unsettled(true)?;
            noted = true;
        }
        store.put_staged(layout.key(p.id, p.kind), p.staged)?;
        let batch: Vec<(ChunkId, IndexEntry)> = p
            .entries
            .iter()
            .map(|e| (e.id, IndexEntry::from_pack_entry(p.id, e)))
            .collect();
        let info = PackInfo { size, kind: p.kind };
        index.insert_pack(p.id, info, &batch)?;
        // A pack is named by its bytes: one put again under a damaged pack's name (the
        // same chunks stored again, in the same order) replaced the damaged bytes with
        // the original ones, so its damage record no longer holds.
        if out.damaged.contains(&p.id) {
            store.delete(Key::Damaged(p.id))?;
        }
        out.durable.add(p.kind, batch.len());
        out.written
            .lock()
            .map_err(|_| poisoned("the list of packs written"))?
            .push(p.id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// In step, a data pack that fills takes the trees handed over before it (sealed and
    /// made durable after it); otherwise those trees wait for the tree pack to fill or
    /// the end. Either way the durable counts end at what was handed over.
    #[test]
    fn in_step_a_full_data_pack_seals_the_trees_handed_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        let cfg = crate::format::config::RepoConfig {
            pack_target_bytes: 1024,
            ..crate::format::config::RepoConfig::new_default([1; 16])
        };
        Repository::init_with(&crate::store::Place::local(&path), cfg).unwrap();
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let record = |kind, data: &[u8]| {
            let mut buf = Vec::new();
            let e = record::seal(kind, ChunkId::of(data), data, Compress::Never, &mut buf).unwrap();
            (e, buf)
        };
        let tree1 = record(ChunkKind::Tree, b"a tree");
        let data = record(ChunkKind::Data, &[7u8; 2048]);
        let tree2 = record(ChunkKind::Tree, b"another tree");
        for (in_step, packs) in [(true, 3), (false, 2)] {
            let sink = match in_step {
                true => ChunkSink::in_step(&repo).unwrap(),
                false => ChunkSink::new(&repo).unwrap(),
            };
            let mut handed = Handed::default();
            for (e, r) in [&tree1, &data, &tree2] {
                sink.put_record(e, r).unwrap();
                handed.add(e.kind);
            }
            sink.join().unwrap();
            assert_eq!(sink.durable(), handed);
            let written = sink.finish().unwrap();
            assert_eq!(written.len(), packs, "in step: {in_step}");
        }
    }

    /// A worker that finds a chunk claimed by another worker that has not sent it yet
    /// returns only once that worker has: a list chunk or tree naming the chunk cannot
    /// reach the pack writer (and so a sealed pack) before it. The interleaving is forced
    /// through the test points: the owner stops before sending until the test lets it go.
    #[test]
    fn a_chunk_claimed_by_another_worker_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Repository::init(&crate::store::Place::local(&path)).unwrap();
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let mut sink = ChunkSink::new(&repo).unwrap();
        let (events, seen) = channel::<&str>();
        let (release, released) = channel::<()>();
        let (to_test, released) = (Mutex::new(events.clone()), Mutex::new(released));
        sink.hook = Some(Box::new(move |p| {
            let ev = to_test.lock().unwrap().clone();
            match p {
                TestPoint::BeforeSend => {
                    let _ = ev.send("owner about to send");
                    let _ = released.lock().unwrap().recv();
                }
                TestPoint::Waiting => {
                    let _ = ev.send("duplicate waits");
                }
            }
        }));
        let data = b"<Item><Name>Movie</Name></Item>\n".repeat(100);
        let (sink_ref, data) = (&sink, &data);
        // Everything the test thread holds moves into the scope, so that a failed
        // assertion drops `release` and the stopped owner ends instead of waiting.
        std::thread::scope(move |s| {
            let sink = sink_ref;
            s.spawn(move || sink.put(ChunkKind::Data, data, true));
            assert_eq!(seen.recv().unwrap(), "owner about to send");
            s.spawn(move || {
                sink.put(ChunkKind::Data, data, true).unwrap();
                let _ = events.send("duplicate returned");
            });
            let first = seen.recv().unwrap();
            if first != "duplicate waits" {
                drop(release);
                panic!("the second put returned before the chunk was sent ({first})");
            }
            release.send(()).unwrap();
            while seen.recv().unwrap() != "duplicate returned" {}
        });
        assert_eq!(sink.stats.new_chunks.load(Ordering::Relaxed), 1);
        assert_eq!(sink.finish().unwrap().len(), 1);
    }
}
