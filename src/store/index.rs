//! The chunk index: chunk id -> where the chunk lives. Derived data (docs/FORMAT.md, "Index
//! (derived)"): it can always be rebuilt from pack trailers, and it never names a pack before that
//! pack is durable, because entries are inserted only after the pack writer's fsync.
//!
//! RocksDB behind the narrow [`ChunkIndex`] trait, with an in-memory implementation for
//! tests. Value layout (50 bytes): pack id[32], offset u64le, stored_len u32le,
//! raw_len u32le, kind u8, compression u8.
//!
//! Beside the chunks the RocksDB index records what it was built from, so that it can be
//! reconciled with the store instead of rebuilt (see `repo::reconcile`): the packs it
//! holds entries for (`p` + pack id -> size u64le, kind u8, written in the same batch
//! as their entries), the pack-set epoch it last saw (`m:epoch`), the snapshots it has seen
//! covered (`s` + snapshot id), and whether a writer here may have left a pack in the
//! store that it did not index (`m:unsettled`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::error::{Error, Result};
use crate::format::compress::Compression;
use crate::format::pack::{ChunkKind, PackEntry};
use crate::id::{ChunkId, PackId, SnapshotId};

/// Bump when the value layout or key scheme changes: a mismatch rebuilds the index.
pub const INDEX_SCHEMA: u32 = 3;
const SCHEMA_KEY: &[u8] = b"m:schema";
const EPOCH_KEY: &[u8] = b"m:epoch";
const UNSETTLED_KEY: &[u8] = b"m:unsettled";
const CHUNK_PREFIX: u8 = b'c';
const PACK_PREFIX: u8 = b'p';
const SNAPSHOT_PREFIX: u8 = b's';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub pack: PackId,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: ChunkKind,
    pub compression: Compression,
}

impl IndexEntry {
    pub fn from_pack_entry(pack: PackId, e: &PackEntry) -> Self {
        IndexEntry {
            pack,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            kind: e.kind,
            compression: e.compression,
        }
    }

    /// The record the entry says holds chunk `id`: what a read expects to find there.
    pub fn record(&self, id: ChunkId) -> PackEntry {
        PackEntry {
            id,
            kind: self.kind,
            compression: self.compression,
            offset: self.offset,
            raw_len: self.raw_len,
            stored_len: self.stored_len,
        }
    }

    fn encode(&self) -> [u8; 50] {
        let mut v = [0u8; 50];
        v[..32].copy_from_slice(&self.pack.0);
        v[32..40].copy_from_slice(&self.offset.to_le_bytes());
        v[40..44].copy_from_slice(&self.stored_len.to_le_bytes());
        v[44..48].copy_from_slice(&self.raw_len.to_le_bytes());
        v[48] = self.kind as u8;
        v[49] = self.compression as u8;
        v
    }

    fn decode(v: &[u8]) -> Option<Self> {
        let v: &[u8; 50] = v.try_into().ok()?;
        Some(IndexEntry {
            pack: PackId(v[..32].try_into().ok()?),
            offset: u64::from_le_bytes(v[32..40].try_into().ok()?),
            stored_len: u32::from_le_bytes(v[40..44].try_into().ok()?),
            raw_len: u32::from_le_bytes(v[44..48].try_into().ok()?),
            kind: ChunkKind::from_u8(v[48])?,
            compression: Compression::from_u8(v[49])?,
        })
    }
}

/// A pack the index has read: its size and the kind of chunks it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    pub size: u64,
    pub kind: ChunkKind,
}

impl PackInfo {
    fn encode(&self) -> [u8; 9] {
        let mut v = [0u8; 9];
        v[..8].copy_from_slice(&self.size.to_le_bytes());
        v[8] = self.kind as u8;
        v
    }

    fn decode(v: &[u8]) -> Option<Self> {
        let v: &[u8; 9] = v.try_into().ok()?;
        Some(PackInfo {
            size: u64::from_le_bytes(v[..8].try_into().ok()?),
            kind: ChunkKind::from_u8(v[8])?,
        })
    }
}

/// Durability contract: `insert` returns only after the entries are durable (synced).
pub trait ChunkIndex: Send + Sync {
    fn get(&self, id: &ChunkId) -> Result<Option<IndexEntry>>;
    fn insert(&self, entries: &[(ChunkId, IndexEntry)]) -> Result<()>;
    /// Remove entries; returns after the removal is durable.
    fn remove(&self, ids: &[ChunkId]) -> Result<()>;
    fn len_estimate(&self) -> u64;

    /// Insert the entries of a durable pack (`info`: its size and kind) and record the
    /// pack as known, in one durable write.
    fn insert_pack(
        &self,
        pack: PackId,
        info: PackInfo,
        entries: &[(ChunkId, IndexEntry)],
    ) -> Result<()> {
        let _ = (pack, info);
        self.insert(entries)
    }

    /// Remove entries of a pack about to be deleted, and the pack from the known set,
    /// in one durable write.
    fn remove_pack(&self, pack: PackId, ids: &[ChunkId]) -> Result<()> {
        let _ = pack;
        self.remove(ids)
    }
}

/// In-memory index for tests.
#[derive(Default)]
pub struct MemIndex(RwLock<HashMap<ChunkId, IndexEntry>>);

impl ChunkIndex for MemIndex {
    fn get(&self, id: &ChunkId) -> Result<Option<IndexEntry>> {
        Ok(self.0.read().map_err(|_| poisoned())?.get(id).copied())
    }
    fn insert(&self, entries: &[(ChunkId, IndexEntry)]) -> Result<()> {
        let mut m = self.0.write().map_err(|_| poisoned())?;
        m.extend(entries.iter().copied());
        Ok(())
    }
    fn remove(&self, ids: &[ChunkId]) -> Result<()> {
        let mut m = self.0.write().map_err(|_| poisoned())?;
        for id in ids {
            m.remove(id);
        }
        Ok(())
    }
    fn len_estimate(&self) -> u64 {
        self.0.read().map(|m| m.len() as u64).unwrap_or(0)
    }
}

fn poisoned() -> Error {
    Error::internal("the in-memory index's lock was poisoned by a panicked thread")
}

/// RocksDB-backed index in `<repo>/index/`.
pub struct RocksIndex {
    db: rocksdb::DB,
    path: PathBuf,
    writable: bool,
}

impl Drop for RocksIndex {
    /// Flush the memtable so that the next open does not replay a long WAL (the writes
    /// themselves are already durable through the synced WAL).
    fn drop(&mut self) {
        if self.writable {
            let _ = self.db.flush();
        }
    }
}

/// How many times a reader tries to open the index while a writer may be compacting it.
const READ_ONLY_OPEN_TRIES: u32 = 5;

impl RocksIndex {
    fn options(path: &Path) -> rocksdb::Options {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        // Values are 50-byte locations of already-compressed chunks.
        o.set_compression_type(rocksdb::DBCompressionType::None);
        o.set_keep_log_file_num(2);
        // Every table file is opened when the index opens, and kept open. A read-only
        // view (restore, check, ls beside a backup) sees the files that were live when
        // it opened; the backup's compactions then unlink some of them. A file already
        // open stays readable after it is unlinked; with a bounded table cache (a
        // number here) the view opens at most 16 files up front and the rest on first
        // use, and a file unlinked by then fails the read with "No such file".
        o.set_max_open_files(-1);
        // RocksDB reserves space up front (fallocate) for the write-ahead log, 1.1
        // times the write buffer (64 MiB by default), and for the manifest (4 MiB):
        // more than a small repository's whole index, enough to fill a small disk. Both
        // are sized to the index instead.
        let buffer = write_buffer_size(path);
        o.set_write_buffer_size(buffer);
        o.set_manifest_preallocation_size((buffer / 16).max(64 << 10));
        o
    }

    fn err(path: &Path, e: impl std::fmt::Display) -> Error {
        // A full file system is said as what it is: rebuilding the index would not help.
        // (The command reports it as a full repository, `ops::full`.)
        let text = e.to_string();
        let full = [
            ("No space left on device", std::io::ErrorKind::StorageFull),
            ("Disk quota exceeded", std::io::ErrorKind::QuotaExceeded),
        ];
        if let Some((_, kind)) = full.iter().find(|(t, _)| text.contains(t)) {
            return Error::io(path, std::io::Error::new(*kind, text));
        }
        Error::Index {
            path: path.to_path_buf(),
            detail: format!(
                "{e}; the index is derived data: run `jellysnap repair index` to rebuild it from the packs"
            ),
        }
    }

    /// Open for writing. Returns the index and whether it has the current schema (a fresh
    /// or mismatched index must be filled by a rebuild before use).
    pub fn open(path: &Path) -> Result<(Self, bool)> {
        let db = rocksdb::DB::open(&Self::options(path), path).map_err(|e| Self::err(path, e))?;
        let idx = RocksIndex {
            db,
            path: path.to_path_buf(),
            writable: true,
        };
        let current = idx.schema()? == Some(INDEX_SCHEMA);
        Ok((idx, current))
    }

    /// Open without taking RocksDB's writer lock (for restore, ls, while a backup runs):
    /// a view of the index as it is now. `None` when there is no index or it has an
    /// outdated schema.
    pub fn open_read_only(path: &Path) -> Result<Option<Self>> {
        if !path.join("CURRENT").exists() {
            return Ok(None);
        }
        // Opening reads the manifest, then opens the table files it names: a writer's
        // compaction in between unlinks some of them, and the open fails though nothing
        // is damaged. The next try reads the new manifest.
        let mut tries = 0;
        let db = loop {
            tries += 1;
            match rocksdb::DB::open_for_read_only(&Self::options(path), path, false) {
                Ok(db) => break db,
                Err(_) if tries < READ_ONLY_OPEN_TRIES => {}
                Err(e) => return Err(Self::err(path, e)),
            }
        };
        let idx = RocksIndex {
            db,
            path: path.to_path_buf(),
            writable: false,
        };
        Ok((idx.schema()? == Some(INDEX_SCHEMA)).then_some(idx))
    }

    fn schema(&self) -> Result<Option<u32>> {
        let v = self
            .db
            .get(SCHEMA_KEY)
            .map_err(|e| Self::err(&self.path, e))?;
        Ok(v.and_then(|v| Some(u32::from_le_bytes(v.as_slice().try_into().ok()?))))
    }

    /// Drop every entry (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range(&[0u8][..], &[0xffu8; 40][..]);
        self.write(batch)
    }

    /// The packs the index holds entries for, with their sizes and kinds.
    pub fn packs(&self) -> Result<HashMap<PackId, PackInfo>> {
        let mut out = HashMap::new();
        for item in self.db.prefix_iterator([PACK_PREFIX]) {
            let (k, v) = item.map_err(|e| Self::err(&self.path, e))?;
            if k.first() != Some(&PACK_PREFIX) {
                break;
            }
            let id = k.get(1..).and_then(|b| <[u8; 32]>::try_from(b).ok());
            match (id, PackInfo::decode(&v)) {
                (Some(id), Some(info)) => {
                    out.insert(PackId(id), info);
                }
                _ => return Err(Self::err(&self.path, "a damaged pack-set entry")),
            }
        }
        Ok(out)
    }

    /// Forget the packs `gone` (no longer in the store): their entries and their
    /// place in the pack set, durably. Returns how many chunk entries went. One pass
    /// over the index: rare (another host's gc deleted packs).
    pub fn drop_packs(&self, gone: &HashSet<PackId>) -> Result<u64> {
        if gone.is_empty() {
            return Ok(0);
        }
        let mut batch = rocksdb::WriteBatch::default();
        let mut n = 0;
        for item in self.db.prefix_iterator([CHUNK_PREFIX]) {
            let (k, v) = item.map_err(|e| Self::err(&self.path, e))?;
            if k.first() != Some(&CHUNK_PREFIX) {
                break;
            }
            let pack = v.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok());
            if pack.is_some_and(|p| gone.contains(&PackId(p))) {
                batch.delete(&k);
                n += 1;
            }
        }
        for p in gone {
            batch.delete(pack_key(p));
        }
        self.write(batch)?;
        Ok(n)
    }

    /// Add the entries of a pack found in the store, for chunks the index does not
    /// hold yet or places in a pack a gc marked for deletion (`doomed`); a chunk it
    /// already places elsewhere stays where it is. Records the pack.
    pub fn adopt_pack(
        &self,
        pack: PackId,
        info: PackInfo,
        entries: &[(ChunkId, IndexEntry)],
        doomed: &HashSet<PackId>,
    ) -> Result<()> {
        let mut fresh = Vec::new();
        for (id, e) in entries {
            if self.get(id)?.is_none_or(|old| doomed.contains(&old.pack)) {
                fresh.push((*id, *e));
            }
        }
        self.insert_pack(pack, info, &fresh)
    }

    /// The pack-set epoch last seen: `None` when none was recorded, `Some("")` when the
    /// store had none.
    pub fn epoch(&self) -> Result<Option<String>> {
        let v = self
            .db
            .get(EPOCH_KEY)
            .map_err(|e| Self::err(&self.path, e))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The snapshots whose chunks the index has seen (committed here, or present when
    /// it was last reconciled).
    pub fn seen_snapshots(&self) -> Result<HashSet<SnapshotId>> {
        let mut out = HashSet::new();
        for item in self.db.prefix_iterator([SNAPSHOT_PREFIX]) {
            let (k, _) = item.map_err(|e| Self::err(&self.path, e))?;
            if k.first() != Some(&SNAPSHOT_PREFIX) {
                break;
            }
            if let Some(id) = k.get(1..).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                out.insert(SnapshotId(id));
            }
        }
        Ok(out)
    }

    /// Record that the index has seen the packs of these snapshots (`replace`: only
    /// these, the others were forgotten) and, when given, the pack-set epoch.
    pub fn record_seen(
        &self,
        snapshots: &[SnapshotId],
        replace: bool,
        epoch: Option<&str>,
    ) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        if replace {
            for old in self.seen_snapshots()? {
                batch.delete(snapshot_key(&old));
            }
        }
        for s in snapshots {
            batch.put(snapshot_key(s), []);
        }
        if let Some(e) = epoch {
            batch.put(EPOCH_KEY, e.as_bytes());
        }
        self.write(batch)
    }

    /// Whether a pack writer of this host may have put a pack it did not index (it was
    /// killed, or failed, between the two): the next writer's open then reconciles, so
    /// that the pack is found rather than sent again.
    pub fn unsettled(&self) -> Result<bool> {
        let v = self
            .db
            .get(UNSETTLED_KEY)
            .map_err(|e| Self::err(&self.path, e))?;
        Ok(v.is_some())
    }

    /// Set (before a pack is put) or clear (once every pack put is indexed, or the
    /// index reconciled with the store) the mark [`RocksIndex::unsettled`] reads, durably.
    pub fn set_unsettled(&self, on: bool) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        match on {
            true => batch.put(UNSETTLED_KEY, []),
            false => batch.delete(UNSETTLED_KEY),
        }
        self.write(batch)
    }

    /// Mark the index as complete for the current schema (after a rebuild).
    pub fn mark_current(&self) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(SCHEMA_KEY, INDEX_SCHEMA.to_le_bytes());
        self.write(batch)
    }

    fn write(&self, batch: rocksdb::WriteBatch) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| Self::err(&self.path, e))
    }
}

/// The write buffer for an index of this size on disk: 1/8 of its table files, between
/// 1 MiB (a new repository's index then reserves about 1.1 MiB of log) and RocksDB's
/// default of 64 MiB (reached at 512 MiB of tables, some five million chunks).
fn write_buffer_size(path: &Path) -> usize {
    const MIN: u64 = 1 << 20;
    const MAX: u64 = 64 << 20;
    let tables: u64 = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    (tables / 8).clamp(MIN, MAX) as usize
}

fn pack_key(id: &PackId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = PACK_PREFIX;
    k[1..].copy_from_slice(&id.0);
    k
}

fn snapshot_key(id: &SnapshotId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = SNAPSHOT_PREFIX;
    k[1..].copy_from_slice(&id.0);
    k
}

fn chunk_key(id: &ChunkId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = CHUNK_PREFIX;
    k[1..].copy_from_slice(&id.0);
    k
}

impl ChunkIndex for RocksIndex {
    fn get(&self, id: &ChunkId) -> Result<Option<IndexEntry>> {
        let v = self
            .db
            .get_pinned(chunk_key(id))
            .map_err(|e| Self::err(&self.path, e))?;
        match v {
            None => Ok(None),
            Some(v) => IndexEntry::decode(&v).map(Some).ok_or_else(|| {
                Error::corrupt(
                    "index entry",
                    format!("chunk {id}"),
                    "bad value; run `jellysnap repair index`",
                )
            }),
        }
    }

    fn insert(&self, entries: &[(ChunkId, IndexEntry)]) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for (id, e) in entries {
            batch.put(chunk_key(id), e.encode());
        }
        self.write(batch)
    }

    fn remove(&self, ids: &[ChunkId]) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for id in ids {
            batch.delete(chunk_key(id));
        }
        self.write(batch)
    }

    fn insert_pack(
        &self,
        pack: PackId,
        info: PackInfo,
        entries: &[(ChunkId, IndexEntry)],
    ) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for (id, e) in entries {
            batch.put(chunk_key(id), e.encode());
        }
        batch.put(pack_key(&pack), info.encode());
        self.write(batch)
    }

    fn remove_pack(&self, pack: PackId, ids: &[ChunkId]) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for id in ids {
            batch.delete(chunk_key(id));
        }
        batch.delete(pack_key(&pack));
        self.write(batch)
    }

    fn len_estimate(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_disk_under_the_index_is_said_as_such_not_as_a_broken_index() {
        let p = std::path::Path::new("/r/index");
        let full = super::RocksIndex::err(
            p,
            "IO error: No space left on device: While appending to file: /r/index/000012.log",
        );
        assert!(
            matches!(&full, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull),
            "{full}"
        );
        assert!(!full.to_string().contains("repair index"), "{full}");
        let other = super::RocksIndex::err(p, "Corruption: block checksum mismatch");
        assert!(other.to_string().contains("repair index"), "{other}");
    }

    use super::*;

    fn entry(n: u8) -> IndexEntry {
        IndexEntry {
            pack: PackId([n; 32]),
            offset: n as u64 * 100,
            stored_len: 7,
            raw_len: 9,
            kind: ChunkKind::Tree,
            compression: Compression::Zstd,
        }
    }

    #[test]
    fn value_round_trip() {
        let e = entry(3);
        assert_eq!(IndexEntry::decode(&e.encode()), Some(e));
        assert_eq!(IndexEntry::decode(&[0u8; 49]), None);
        let p = PackInfo {
            size: 1 << 40,
            kind: ChunkKind::Tree,
        };
        assert_eq!(PackInfo::decode(&p.encode()), Some(p));
        assert_eq!(PackInfo::decode(&[0u8; 8]), None, "schema 2's value");
    }

    /// The pack set keeps each pack's kind beside its size.
    #[test]
    fn the_pack_set_records_each_packs_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = RocksIndex::open(&dir.path().join("index")).unwrap();
        let data = PackInfo {
            size: 10,
            kind: ChunkKind::Data,
        };
        let tree = PackInfo {
            size: 20,
            kind: ChunkKind::Tree,
        };
        idx.insert_pack(PackId([1; 32]), data, &[(ChunkId([1; 32]), entry(1))])
            .unwrap();
        idx.adopt_pack(PackId([2; 32]), tree, &[], &HashSet::new())
            .unwrap();
        let packs = idx.packs().unwrap();
        assert_eq!(packs.get(&PackId([1; 32])), Some(&data));
        assert_eq!(packs.get(&PackId([2; 32])), Some(&tree));
    }

    #[test]
    fn rocks_insert_get_and_reopen_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index");
        {
            let (idx, current) = RocksIndex::open(&p).unwrap();
            assert!(!current);
            idx.insert(&[(ChunkId([1; 32]), entry(1))]).unwrap();
            idx.mark_current().unwrap();
            assert_eq!(idx.get(&ChunkId([1; 32])).unwrap(), Some(entry(1)));
            assert_eq!(idx.get(&ChunkId([2; 32])).unwrap(), None);
            let ro = RocksIndex::open_read_only(&p).unwrap().unwrap();
            assert_eq!(ro.get(&ChunkId([1; 32])).unwrap(), Some(entry(1)));
        }
        let (idx, current) = RocksIndex::open(&p).unwrap();
        assert!(current);
        idx.clear().unwrap();
        assert_eq!(idx.get(&ChunkId([1; 32])).unwrap(), None);
    }

    /// A read-only view goes on reading every entry it saw after the writer compacts
    /// away the table files it opened on (a restore beside a backup).
    #[test]
    fn a_read_only_view_survives_the_writers_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index");
        // One table file per flush and no automatic compaction: more table files than a
        // bounded table cache opens up front (16), fewer than slow the writer down (20).
        let mut o = RocksIndex::options(&p);
        o.set_disable_auto_compactions(true);
        let db = rocksdb::DB::open(&o, &p).unwrap();
        let files = 18u8;
        for i in 0..files {
            db.put(chunk_key(&ChunkId([i; 32])), entry(i).encode())
                .unwrap();
            db.put(SCHEMA_KEY, INDEX_SCHEMA.to_le_bytes()).unwrap();
            db.flush().unwrap();
        }
        let tables = || {
            std::fs::read_dir(&p)
                .unwrap()
                .filter(|e| {
                    let path = e.as_ref().unwrap().path();
                    path.extension().is_some_and(|x| x == "sst")
                })
                .count()
        };
        assert_eq!(tables(), files as usize);
        let view = RocksIndex::open_read_only(&p).unwrap().unwrap();
        db.compact_range::<&[u8], &[u8]>(None, None);
        assert_eq!(
            tables(),
            1,
            "the compaction unlinked the view's table files"
        );
        for i in 0..files {
            assert_eq!(view.get(&ChunkId([i; 32])).unwrap(), Some(entry(i)), "{i}");
        }
    }
}
