//! Storing new chunks: dedup against the index, compress, and append to packs.
//!
//! Worker threads call [`ChunkSink::put`]; new chunks travel over a bounded channel to
//! one writer thread that fills a data pack and a tree pack. Write order (DESIGN §5.2):
//! a pack is written temp -> fsync -> rename -> fsync(dir), and only then are its index
//! entries inserted (synced). A tree pack is never sealed before the data pack in
//! progress, so a durable tree never names a chunk that is not yet durable. The bounded
//! channel and the recycled payload buffers keep memory flat whatever the data size.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::compress::{self, Compression};
use crate::durable;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::index::{ChunkIndex, IndexEntry};
use crate::pack::{ChunkKind, PackBuilder};
use crate::repo::{pack_path, Repository};

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
    pub fn new(repo: &'r Repository) -> Self {
        let index = repo.index_arc();
        let (tx, rx) = sync_channel::<NewChunk>(32);
        let pool = Arc::new(Mutex::new(Vec::new()));
        let writer = PackWriter {
            repo_path: repo.path().to_path_buf(),
            target: repo.config().pack_target_bytes,
            data: PackBuilder::new(),
            tree: PackBuilder::new(),
            index,
            pool: pool.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("jellysnap-pack-writer".into())
            .spawn(move || writer.run(rx))
            .ok();
        ChunkSink {
            repo,
            pending: Mutex::new(HashSet::new()),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(handle),
            pool,
            stats: SinkStats::default(),
        }
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
        let mut buf = self
            .pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
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
        self.stats.new_chunks.fetch_add(1, Ordering::Relaxed);
        self.stats
            .new_raw_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.stats
            .new_stored_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let msg = NewChunk {
            id,
            kind,
            compression,
            raw_len: data.len() as u32,
            payload: buf,
        };
        let sent = match self.tx.lock() {
            Ok(tx) => tx.as_ref().map(|tx| tx.send(msg).is_ok()).unwrap_or(false),
            Err(_) => false,
        };
        if !sent {
            // The writer stopped: its own error explains why.
            return Err(self.finish_inner().err().unwrap_or_else(|| {
                Error::io(
                    "<pack writer>",
                    std::io::Error::other("pack writer stopped"),
                )
            }));
        }
        Ok(id)
    }

    fn lock_pending(&self) -> Result<std::sync::MutexGuard<'_, HashSet<ChunkId>>> {
        self.pending
            .lock()
            .map_err(|_| Error::io("<pack writer>", std::io::Error::other("dedup set poisoned")))
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
    data: PackBuilder,
    tree: PackBuilder,
    index: Arc<dyn ChunkIndex>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl PackWriter {
    fn run(mut self, rx: Receiver<NewChunk>) -> Result<()> {
        for c in rx {
            let builder = match c.kind {
                ChunkKind::Data => &mut self.data,
                ChunkKind::Tree => &mut self.tree,
            };
            builder.add(c.id, c.kind, c.compression, c.raw_len, &c.payload);
            if let Ok(mut p) = self.pool.lock() {
                if p.len() < 64 {
                    p.push(c.payload);
                }
            }
            if self.data.len_bytes() >= self.target {
                self.seal(ChunkKind::Data)?;
            }
            if self.tree.len_bytes() >= self.target {
                self.seal(ChunkKind::Data)?;
                self.seal(ChunkKind::Tree)?;
            }
        }
        self.seal(ChunkKind::Data)?;
        self.seal(ChunkKind::Tree)
    }

    fn seal(&mut self, kind: ChunkKind) -> Result<()> {
        let builder = match kind {
            ChunkKind::Data => &mut self.data,
            ChunkKind::Tree => &mut self.tree,
        };
        if builder.is_empty() {
            return Ok(());
        }
        let (bytes, entries) = std::mem::take(builder).finish();
        let id = PackId::of(&bytes);
        let path = pack_path(&self.repo_path, &id);
        if let Some(dir) = path.parent() {
            durable::create_dir_durable(dir)?;
        }
        durable::write_atomic(&path, &bytes)?;
        let batch: Vec<(ChunkId, IndexEntry)> = entries
            .iter()
            .map(|e| (e.id, IndexEntry::from_pack_entry(id, e)))
            .collect();
        self.index.insert(&batch)
    }
}
