//! Storing new chunks: dedup against the index, compress, and append to packs.
//!
//! Worker threads call [`ChunkSink::put`]; new chunks travel over a bounded channel to
//! one writer thread that fills a data pack and a tree pack. Write order (DESIGN §5.2):
//! a pack is written temp -> fsync -> rename -> fsync(dir), and only then are its index
//! entries inserted (synced). A tree pack is never sealed before the data pack in
//! progress, so a durable tree never names a chunk that is not yet durable. The bounded
//! channel and the recycled payload buffers keep memory flat whatever the data size.
//! Records stream into a temp file under `<repo>/tmp/`; a sealed pack goes to a second
//! thread that makes it durable and indexes it, in seal order, while the next one fills.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, IoContext, Result};
use crate::fault::{self, Op};
use crate::format::compress::{self, Compression};
use crate::format::id::{ChunkId, PackId};
use crate::format::pack::{self, ChunkKind, PackEntry};
use crate::store::durable;
use crate::store::index::{ChunkIndex, IndexEntry};
use crate::store::repo::{pack_path, Repository};

/// The pseudo-path of errors that only say "the pack writer stopped".
const WRITER: &str = "<pack writer>";

fn writer_stopped() -> Error {
    Error::io(WRITER, std::io::Error::other("pack writer stopped"))
}

struct NewChunk {
    id: ChunkId,
    kind: ChunkKind,
    compression: Compression,
    raw_len: u32,
    payload: Vec<u8>,
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

/// Shared by the backup's worker threads.
pub struct ChunkSink<'r> {
    repo: &'r Repository,
    pending: Mutex<HashSet<ChunkId>>,
    tx: Mutex<Option<SyncSender<NewChunk>>>,
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    pub stats: SinkStats,
}

impl<'r> ChunkSink<'r> {
    /// Start the pack writer and syncer threads. A thread that cannot start is an
    /// error: without it nothing written here would become durable.
    pub fn new(repo: &'r Repository) -> Result<Self> {
        let index = repo.index_arc();
        let (tx, rx) = sync_channel::<NewChunk>(32);
        let pool = Arc::new(Mutex::new(Vec::new()));
        let (sync_tx, sync_rx) = sync_channel::<SealedPack>(2);
        let repo_path = repo.path().to_path_buf();
        let syncer = std::thread::Builder::new()
            .name("jellysnap-pack-syncer".into())
            .spawn(move || sync_packs(repo_path, index, sync_rx))
            .map_err(|e| Error::internal(format!("cannot start the pack syncer thread: {e}")))?;
        let syncer = Some((sync_tx, syncer));
        let writer = PackWriter {
            repo_path: repo.path().to_path_buf(),
            target: repo.config().pack_target_bytes,
            data: None,
            tree: None,
            pool: pool.clone(),
            syncer,
        };
        let handle = std::thread::Builder::new()
            .name("jellysnap-pack-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::internal(format!("cannot start the pack writer thread: {e}")))?;
        Ok(ChunkSink {
            repo,
            pending: Mutex::new(HashSet::new()),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            pool,
            stats: SinkStats::default(),
        })
    }

    /// Store `data` as a chunk unless the repository already has it. `compressible` is
    /// false for content known to be compressed already (JPEG, PNG, ...).
    pub fn put(&self, kind: ChunkKind, data: &[u8], compressible: bool) -> Result<ChunkId> {
        let id = ChunkId::of(data);
        if self.lock_pending()?.contains(&id) || self.repo.index().get(&id)?.is_some() {
            return Ok(id);
        }
        if !self.lock_pending()?.insert(id) {
            return Ok(id);
        }
        let mut buf = self.buffer();
        let compression = if compressible {
            compress::maybe_compress(data, self.repo.config().zstd_level, &mut buf)
                .map_err(|e| Error::io("<zstd>", e))?
        } else {
            Compression::None
        };
        if compression == Compression::None {
            buf.clear();
            buf.extend_from_slice(data);
        }
        self.stats.count(data.len(), buf.len());
        let msg = NewChunk {
            id,
            kind,
            compression,
            raw_len: data.len() as u32,
            payload: buf,
        };
        self.send(msg)?;
        Ok(id)
    }

    /// Store an already-encoded record again (gc repacking a live chunk): no dedup check,
    /// no recompression. The index entry moves to the new pack once it is durable.
    pub fn put_stored(
        &self,
        id: ChunkId,
        kind: ChunkKind,
        compression: Compression,
        raw_len: u32,
        payload: &[u8],
    ) -> Result<()> {
        let mut buf = self.buffer();
        buf.clear();
        buf.extend_from_slice(payload);
        self.stats.count(raw_len as usize, payload.len());
        self.send(NewChunk {
            id,
            kind,
            compression,
            raw_len,
            payload: buf,
        })
    }

    /// A payload buffer recycled by the writer (no allocation per chunk once warm).
    fn buffer(&self) -> Vec<u8> {
        self.pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }

    fn send(&self, msg: NewChunk) -> Result<()> {
        let sent = match self.tx.lock() {
            Ok(tx) => tx.as_ref().map(|tx| tx.send(msg).is_ok()).unwrap_or(false),
            Err(_) => false,
        };
        if sent {
            Ok(())
        } else {
            Err(writer_stopped())
        }
    }

    /// The error to report for a failed run: when the pack writer stopped, its own error
    /// (a full disk, a failed fsync) rather than the "stopped" seen by the workers.
    pub fn cause(&self, e: Error) -> Error {
        let stopped = matches!(&e, Error::Io { path, .. } if path.as_os_str() == WRITER);
        match self.finish_inner() {
            Err(cause) if stopped => cause,
            _ => e,
        }
    }

    fn lock_pending(&self) -> Result<std::sync::MutexGuard<'_, HashSet<ChunkId>>> {
        self.pending
            .lock()
            .map_err(|_| Error::io(WRITER, std::io::Error::other("dedup set poisoned")))
    }

    /// Seal the open packs and wait until they and their index entries are durable.
    pub fn finish(self) -> Result<()> {
        self.finish_inner()
    }

    fn finish_inner(&self) -> Result<()> {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        match handle {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(Error::io(
                    "<pack writer>",
                    std::io::Error::other("pack writer panicked"),
                ))
            }),
            None => Ok(()),
        }
    }
}

struct PackWriter {
    repo_path: PathBuf,
    target: u64,
    data: Option<OpenPack>,
    tree: Option<OpenPack>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Sealed packs on their way to disk, in seal order.
    syncer: Option<(SyncSender<SealedPack>, JoinHandle<Result<()>>)>,
}

/// A pack being filled: records are streamed into a temp file under `<repo>/tmp/`.
struct OpenPack {
    file: std::io::BufWriter<File>,
    tmp: tempfile::TempPath,
    hasher: blake3::Hasher,
    len: u64,
    entries: Vec<PackEntry>,
}

struct SealedPack {
    file: File,
    tmp: tempfile::TempPath,
    id: PackId,
    entries: Vec<PackEntry>,
}

impl OpenPack {
    fn create(tmp_dir: &Path) -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("pack-")
            .tempfile_in(tmp_dir)
            .at(tmp_dir)?;
        let (file, tmp) = tmp.into_parts();
        let mut p = OpenPack {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            tmp,
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        };
        p.write(&pack::PACK_MAGIC[..])?;
        p.write(&pack::PACK_VERSION.to_le_bytes())?;
        Ok(p)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        fault::check(Op::Write)
            .and_then(|()| self.file.write_all(bytes))
            .at(&*self.tmp)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn add(&mut self, c: &NewChunk) -> Result<()> {
        let e = PackEntry {
            id: c.id,
            kind: c.kind,
            compression: c.compression,
            offset: self.len,
            raw_len: c.raw_len,
            stored_len: c.payload.len() as u32,
        };
        self.write(&pack::encode_record_header(&e))?;
        self.write(&c.payload)?;
        self.entries.push(e);
        Ok(())
    }

    fn seal(mut self) -> Result<SealedPack> {
        let trailer = pack::encode_trailer(&self.entries);
        self.write(&trailer)?;
        let file = self
            .file
            .into_inner()
            .map_err(|e| Error::io(&*self.tmp, e.into_error()))?;
        Ok(SealedPack {
            file,
            tmp: self.tmp,
            id: PackId(*self.hasher.finalize().as_bytes()),
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
            let tmp_dir = self.repo_path.join("tmp");
            let slot = match c.kind {
                ChunkKind::Data => &mut self.data,
                ChunkKind::Tree => &mut self.tree,
            };
            if slot.is_none() {
                *slot = Some(OpenPack::create(&tmp_dir)?);
            }
            let full = match slot.as_mut() {
                Some(p) => {
                    p.add(&c)?;
                    p.len >= self.target
                }
                None => false,
            };
            if let Ok(mut p) = self.pool.lock() {
                if p.len() < 64 {
                    p.push(c.payload);
                }
            }
            if full {
                if c.kind == ChunkKind::Tree {
                    // A tree pack never becomes durable before the data it references.
                    self.seal(ChunkKind::Data)?;
                }
                self.seal(c.kind)?;
            }
        }
        self.seal(ChunkKind::Data)?;
        self.seal(ChunkKind::Tree)
    }

    fn seal(&mut self, kind: ChunkKind) -> Result<()> {
        let slot = match kind {
            ChunkKind::Data => &mut self.data,
            ChunkKind::Tree => &mut self.tree,
        };
        let Some(p) = slot.take() else { return Ok(()) };
        let sealed = p.seal()?;
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
                handle.join().unwrap_or_else(|_| {
                    Err(Error::io(
                        "<pack syncer>",
                        std::io::Error::other("pack syncer panicked"),
                    ))
                })
            }
            None => Ok(()),
        }
    }
}

/// Makes sealed packs durable in seal order (DESIGN §5.2): fsync the temp file, rename it
/// to `packs/<xx>/<id>`, fsync the directory, then insert and sync the index entries.
/// Runs beside the writer so that one pack's fsync overlaps the next pack's writes.
fn sync_packs(
    repo_path: PathBuf,
    index: Arc<dyn ChunkIndex>,
    rx: Receiver<SealedPack>,
) -> Result<()> {
    for p in rx {
        fault::check(Op::Fsync)
            .and_then(|()| p.file.sync_all())
            .at(&*p.tmp)?;
        let path = pack_path(&repo_path, &p.id);
        if let Some(dir) = path.parent() {
            durable::create_dir_durable(dir)?;
        }
        p.tmp
            .persist(&path)
            .map_err(|e| Error::io(&path, e.error))?;
        durable::sync_dir(path.parent().unwrap_or(&repo_path))?;
        let batch: Vec<(ChunkId, IndexEntry)> = p
            .entries
            .iter()
            .map(|e| (e.id, IndexEntry::from_pack_entry(p.id, e)))
            .collect();
        index.insert(&batch)?;
    }
    Ok(())
}
