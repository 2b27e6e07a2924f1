//! The local copies a repository kept elsewhere reads instead of asking its store again:
//! snapshot records and tree chunks, which never change once written (they are named by
//! the hash of their bytes). A backup reads every snapshot record (to find its parent)
//! and its parent's trees (to reuse unchanged files); from an object store each would be
//! a request, so an unchanged snapshot would cost as many requests as the data dir has
//! directories.
//!
//! Pack trailers are kept too (`trailers/<xx>/<pack-id>`: the pack's length and its
//! trailer as stored), so that a gc, a check or a second gc run reads the entries of a
//! pack it has read once from here; a copy is checked by the trailer's own checksum.
//!
//! Tree packs fetched whole are noted (`tree-packs/<xx>/<pack-id>`, empty), so that a
//! later run that lists the tree packs fetches only those it has not taken in.
//!
//! A cache, not state: every copy is verified against its name when read, one that fails
//! is ignored (and read from the store again), a lost or deleted cache costs requests,
//! never data, and a failed write is not an error.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use crate::format::pack::{self, PackEntry, RawLimits};
use crate::id::{ChunkId, PackId, SnapshotId};

pub struct ObjectCache {
    dir: PathBuf,
}

impl ObjectCache {
    /// The cache in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        ObjectCache { dir }
    }

    fn path(&self, kind: &str, hex: &str) -> PathBuf {
        self.dir
            .join(kind)
            .join(hex.get(..2).unwrap_or("00"))
            .join(hex)
    }

    /// A tree chunk's plain bytes, if a copy is here and is the chunk.
    pub fn tree(&self, id: &ChunkId) -> Option<Vec<u8>> {
        let bytes = fs::read(self.path("trees", &id.to_hex())).ok()?;
        (ChunkId::of(&bytes) == *id).then_some(bytes)
    }

    pub fn put_tree(&self, id: &ChunkId, bytes: &[u8]) {
        self.put(self.path("trees", &id.to_hex()), bytes);
    }

    /// Whether every tree of tree pack `id` was taken in (see [`ObjectCache::note_tree_pack`]).
    pub fn has_tree_pack(&self, id: &PackId) -> bool {
        self.path("tree-packs", &id.to_hex()).exists()
    }

    /// Note that the trees of tree pack `id` were fetched and kept. Only a hint: a tree
    /// missing here later is read from the store again.
    pub fn note_tree_pack(&self, id: &PackId) {
        self.put(self.path("tree-packs", &id.to_hex()), b"");
    }

    /// A pack's entries, if a copy of its trailer is here and opens (a pack is named by
    /// its bytes, so its trailer never changes). Kept only for packs whose trailer opened
    /// and whose header was read, so a copy stands for both.
    pub fn trailer(&self, id: &PackId, limits: &RawLimits) -> Option<Vec<PackEntry>> {
        let bytes = fs::read(self.path("trailers", &id.to_hex())).ok()?;
        let pack_len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        pack::open_trailer(bytes.get(8..)?, pack_len, limits).ok()
    }

    /// Keep a copy of the trailer of pack `id`, whose records (`entries`) end at
    /// `records_end` and are followed by the trailer.
    pub fn put_trailer(&self, id: &PackId, records_end: u64, entries: &[PackEntry]) {
        let trailer = pack::seal_trailer(entries);
        let pack_len = records_end + trailer.len() as u64;
        let mut bytes = pack_len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&trailer);
        self.put(self.path("trailers", &id.to_hex()), &bytes);
    }

    /// Forget the copy of a deleted pack's trailer.
    pub fn remove_trailer(&self, id: &PackId) {
        let _ = fs::remove_file(self.path("trailers", &id.to_hex()));
    }

    /// A snapshot record's bytes, if a copy is here and is the record.
    pub fn snapshot(&self, id: &SnapshotId) -> Option<Vec<u8>> {
        let bytes = fs::read(self.path("snapshots", &id.to_hex())).ok()?;
        (SnapshotId::of(&bytes) == *id).then_some(bytes)
    }

    pub fn put_snapshot(&self, id: &SnapshotId, bytes: &[u8]) {
        self.put(self.path("snapshots", &id.to_hex()), bytes);
    }

    /// The snapshot records this cache holds a copy of.
    pub fn snapshot_ids(&self) -> Vec<SnapshotId> {
        let dir = self.dir.join("snapshots");
        let Ok(subs) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        subs.flatten()
            .filter_map(|sub| fs::read_dir(sub.path()).ok())
            .flat_map(|files| files.flatten())
            .filter_map(|f| SnapshotId::from_hex(&f.file_name().to_string_lossy()))
            .collect()
    }

    /// Drop the copy of a record that is no longer in the repository.
    pub fn remove_snapshot(&self, id: &SnapshotId) {
        let _ = fs::remove_file(self.path("snapshots", &id.to_hex()));
    }

    /// Write a copy under a temp name and rename it, so that no reader sees half of one.
    /// Not synced: a copy a crash truncates fails its check and is read again.
    fn put(&self, path: PathBuf, bytes: &[u8]) {
        let Some(dir) = path.parent() else { return };
        if path.exists() || fs::create_dir_all(dir).is_err() {
            return;
        }
        let Ok(mut tmp) = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir) else {
            return;
        };
        if tmp.write_all(bytes).is_ok() {
            let _ = tmp.persist(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_verified_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ObjectCache::new(dir.path().join("cache"));
        let tree = b"a tree's bytes".to_vec();
        let id = ChunkId::of(&tree);
        assert_eq!(cache.tree(&id), None);
        cache.put_tree(&id, &tree);
        assert_eq!(cache.tree(&id), Some(tree.clone()));
        // A copy that rotted is not served.
        let hex = id.to_hex();
        let file = dir.path().join("cache/trees").join(&hex[..2]).join(&hex);
        fs::write(&file, b"another tree's bytes").unwrap();
        assert_eq!(cache.tree(&id), None);
        let rec = b"a record".to_vec();
        let sid = SnapshotId::of(&rec);
        cache.put_snapshot(&sid, &rec);
        assert_eq!(cache.snapshot(&sid), Some(rec));
        let pack = PackId::of(b"a pack");
        assert!(!cache.has_tree_pack(&pack));
        cache.note_tree_pack(&pack);
        assert!(cache.has_tree_pack(&pack));
    }
}
