//! Where the trees of the tree packs a backup has met lie, learned from the packs'
//! trailers. A backup reads every tree of its parent snapshot; those trees lie together
//! in a few tree packs, so once the index has placed one of them, the trailer of its
//! pack places the others: one read per tree pack instead of an index lookup per
//! directory (on a large index, each lookup may be a read from disk).
//!
//! Only a place to read from: every tree read through it is verified against its id and
//! against the record's lengths, as a read through the index is. A pack a trailer
//! places a tree in holds it (packs never change), whichever copy the index prefers.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::format::compress::Compression;
use crate::format::pack::{ChunkKind, PackEntry};
use crate::id::{ChunkId, PackId};
use crate::store::Key;

/// The most trees kept: about 60 bytes each, so at most some 16 MiB. A walk of a data
/// dir with more directories asks the index for the rest.
const MAX_TREES: usize = 256 * 1024;

#[derive(Default)]
pub(super) struct TreeMap {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    packs: Vec<(PackId, Key)>,
    trees: HashMap<ChunkId, Place>,
    /// Packs whose trailer was read, is being read, or will not be (it failed, or the
    /// map is full).
    met: HashSet<PackId>,
}

/// A tree's record in one of `packs`.
#[derive(Clone, Copy)]
struct Place {
    pack: u32,
    offset: u64,
    raw_len: u32,
    stored_len: u32,
    compression: Compression,
}

impl TreeMap {
    /// The pack and record of tree `id`, when a trailer read so far places it.
    pub(super) fn get(&self, id: &ChunkId) -> Option<(PackId, Key, PackEntry)> {
        let inner = self.inner.read().ok()?;
        let p = inner.trees.get(id)?;
        let (pack, key) = *inner.packs.get(p.pack as usize)?;
        let entry = PackEntry {
            id: *id,
            kind: ChunkKind::Tree,
            compression: p.compression,
            offset: p.offset,
            raw_len: p.raw_len,
            stored_len: p.stored_len,
        };
        Some((pack, key, entry))
    }

    /// Whether the caller is to read the trailer of `pack` for the map: true once per
    /// pack, while the map has room.
    pub(super) fn claim(&self, pack: PackId) -> bool {
        let Ok(mut inner) = self.inner.write() else {
            return false;
        };
        inner.trees.len() < MAX_TREES && inner.met.insert(pack)
    }

    /// The trees of pack `pack` (under `key`), from its trailer's `entries`.
    pub(super) fn add(&self, pack: PackId, key: Key, entries: &[PackEntry]) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        let Ok(at) = u32::try_from(inner.packs.len()) else {
            return;
        };
        let room = MAX_TREES.saturating_sub(inner.trees.len());
        let trees: Vec<&PackEntry> = entries
            .iter()
            .filter(|e| e.kind == ChunkKind::Tree)
            .collect();
        if trees.is_empty() || trees.len() > room {
            return;
        }
        inner.packs.push((pack, key));
        for e in trees {
            inner.trees.insert(
                e.id,
                Place {
                    pack: at,
                    offset: e.offset,
                    raw_len: e.raw_len,
                    stored_len: e.stored_len,
                    compression: e.compression,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u8, offset: u64) -> PackEntry {
        PackEntry {
            id: ChunkId([n; 32]),
            kind: ChunkKind::Tree,
            compression: Compression::None,
            offset,
            raw_len: 10,
            stored_len: 10,
        }
    }

    #[test]
    fn a_pack_is_claimed_once_and_places_its_trees_only() {
        let map = TreeMap::default();
        let pack = PackId([7; 32]);
        let key = Key::TreePack(pack);
        assert!(map.claim(pack));
        assert!(!map.claim(pack));
        let mut data = tree(3, 50);
        data.kind = ChunkKind::Data;
        map.add(pack, key, &[tree(1, 5), tree(2, 20), data]);
        let (p, k, e) = map.get(&ChunkId([2; 32])).unwrap();
        assert_eq!((p, k, e), (pack, key, tree(2, 20)));
        assert!(map.get(&ChunkId([3; 32])).is_none());
        assert!(map.get(&ChunkId([4; 32])).is_none());
    }
}
