//! Trees: one chunk per directory listing (docs/FORMAT.md, "Trees"). Identical directories encode
//! to identical bytes, so unchanged directories dedupe to zero new bytes per snapshot.
//!
//! Encoding: magic `JSTR`, version u8 (1), then the bincode 2 "standard" encoding
//! (varint integers) of [`Tree`]. Entries are sorted by name bytes and names are single
//! path components; the decoder refuses anything else, so a crafted tree cannot make
//! restore write outside its target.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ChunkId;

/// Levels of list chunks (`indirect`) a file node may have: 4 levels of 64 refs address
/// 16.7M data chunks (see [`crate::format::chunklist`]).
pub const MAX_LEVELS: u8 = 4;

pub const TREE_MAGIC: &[u8; 4] = b"JSTR";
pub const TREE_VERSION: u8 = 1;

/// The decoder's limit on a tree's body; with the 5-byte header it bounds every tree-kind
/// chunk (list chunks are far smaller), so a pack record claiming more is refused unread.
pub const MAX_BODY_LEN: usize = 1 << 30;
/// The longest tree chunk the decoder reads.
pub const MAX_TREE_LEN: u32 = 5 + MAX_BODY_LEN as u32;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// One path component, raw bytes (Linux names need not be UTF-8).
    pub name: Vec<u8>,
    pub node: Node,
    /// Permission bits (st_mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    /// Stat fields of the files cache: a file is reused without reading when size,
    /// mtime, ctime and inode all match and the entry was trusted.
    pub ctime_ns: i64,
    pub inode: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    File {
        /// Sum of the chunk lengths: the bytes the chunks hold (for a logical database
        /// capture, the dump's size, not the database file's).
        size: u64,
        /// The data chunks in file order when `indirect` is 0; else refs to list chunks
        /// `indirect` levels above the data chunks (see `chunklist`), each ref's `len`
        /// being the file bytes it covers.
        chunks: Vec<ChunkRef>,
        indirect: u8,
        /// False when the file's mtime was too close to the scan start to rule out a
        /// same-tick modification: the next backup reads it again.
        trusted: bool,
        /// How a database's content was captured; `None` for ordinary files.
        database: DbCapture,
    },
    Dir {
        tree: ChunkId,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// What the chunks of a file hold. (Trees encode the variant's index; JSON records its
/// lowercase name.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbCapture {
    /// An ordinary file: the chunks are its bytes.
    None,
    /// A SQLite database copied with the online backup API: the chunks are the copy's
    /// bytes (chunked with `db_physical_chunker`).
    Physical,
    /// A SQLite database as a logical dump (`jellyfin::logical`, chunked with
    /// `db_chunker`); restore rebuilds the database from it.
    Logical,
}

impl DbCapture {
    pub fn is_database(self) -> bool {
        self != DbCapture::None
    }

    pub fn name(self) -> &'static str {
        match self {
            DbCapture::None => "none",
            DbCapture::Physical => "physical",
            DbCapture::Logical => "logical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

impl Entry {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    pub fn size(&self) -> u64 {
        match &self.node {
            Node::File { size, .. } => *size,
            Node::Symlink { target } => target.len() as u64,
            Node::Dir { .. } => 0,
        }
    }

    pub fn kind_char(&self) -> char {
        match self.node {
            Node::File { .. } => 'f',
            Node::Dir { .. } => 'd',
            Node::Symlink { .. } => 'l',
        }
    }
}

/// True when `name` is a single, ordinary path component.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 96);
        out.extend_from_slice(TREE_MAGIC);
        out.push(TREE_VERSION);
        let body = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| Error::internal(format!("cannot encode a tree: {e}")))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn decode(bytes: &[u8], id: &ChunkId) -> Result<Tree> {
        let bad = |d: String| Error::corrupt("tree", format!("tree chunk {id}"), d);
        if bytes.get(..4) != Some(TREE_MAGIC.as_slice()) {
            return Err(bad("bad magic".into()));
        }
        match bytes.get(4) {
            Some(&TREE_VERSION) => {}
            Some(v) => {
                return Err(bad(format!(
                    "unknown tree version {v}; use a newer jellysnap"
                )))
            }
            None => return Err(bad("truncated".into())),
        }
        let body = bytes.get(5..).unwrap_or_default();
        if body.len() > MAX_BODY_LEN {
            return Err(bad(format!("{} bytes is longer than a tree", bytes.len())));
        }
        let (tree, used): (Tree, usize) = bincode::serde::decode_from_slice(
            body,
            bincode::config::standard().with_limit::<MAX_BODY_LEN>(),
        )
        .map_err(|e| bad(e.to_string()))?;
        if used != body.len() {
            return Err(bad("trailing bytes".into()));
        }
        for w in tree.entries.windows(2) {
            if w[0].name >= w[1].name {
                return Err(bad("entries are not sorted and unique".into()));
            }
        }
        if let Some(e) = tree.entries.iter().find(|e| !valid_name(&e.name)) {
            return Err(bad(format!(
                "entry name {:?} is not a plain file name",
                e.name_lossy()
            )));
        }
        for e in &tree.entries {
            if let Node::File {
                size,
                chunks,
                indirect,
                ..
            } = &e.node
            {
                if *indirect > MAX_LEVELS || (*indirect > 0 && chunks.is_empty()) {
                    return Err(bad(format!(
                        "{}: bad chunk list indirection",
                        e.name_lossy()
                    )));
                }
                if chunks.iter().map(|c| c.len as u64).sum::<u64>() != *size {
                    return Err(bad(format!(
                        "{}: chunk lengths do not add up to the size",
                        e.name_lossy()
                    )));
                }
            }
        }
        Ok(tree)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(name: &[u8], size: u32) -> Entry {
        Entry {
            name: name.to_vec(),
            node: Node::File {
                size: size as u64,
                chunks: vec![ChunkRef {
                    id: ChunkId::of(name),
                    len: size,
                }],
                indirect: 0,
                trusted: true,
                database: DbCapture::None,
            },
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_ns: 1_700_000_000_000_000_000,
            ctime_ns: 1_700_000_000_000_000_001,
            inode: 42,
        }
    }

    proptest! {
        #[test]
        fn round_trip(names in proptest::collection::btree_set("[a-zA-Z0-9 ._-]{1,20}", 0..20), size in 0u32..100000) {
            let entries: Vec<Entry> = names.iter().filter(|n| valid_name(n.as_bytes())).map(|n| file(n.as_bytes(), size)).collect();
            let t = Tree { entries };
            let bytes = t.encode().unwrap();
            prop_assert_eq!(Tree::decode(&bytes, &ChunkId::of(&bytes)).unwrap(), t);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = b"JSTR\x01".to_vec();
            b.extend_from_slice(&bytes);
            let _ = Tree::decode(&b, &ChunkId::of(&b));
            let _ = Tree::decode(&bytes, &ChunkId::of(&bytes));
        }
    }

    #[test]
    fn refuses_dot_dot_and_slashes() {
        for bad in [&b".."[..], b"a/b", b"", b"."] {
            let t = Tree {
                entries: vec![file(bad, 1)],
            };
            let bytes = t.encode().unwrap();
            assert!(
                Tree::decode(&bytes, &ChunkId::of(&bytes)).is_err(),
                "{bad:?}"
            );
        }
        let t = Tree {
            entries: vec![file(b"b", 1), file(b"a", 1)],
        };
        let bytes = t.encode().unwrap();
        assert!(Tree::decode(&bytes, &ChunkId::of(&bytes)).is_err());
    }
}
