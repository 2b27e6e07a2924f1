//! Trees: one chunk per directory listing (docs/FORMAT.md, "Trees"). Identical directories encode
//! to identical bytes, so unchanged directories dedupe to zero new bytes per snapshot.
//!
//! Encoding: magic `JSTR`, version u8, then the bincode 2 "standard" encoding (varint
//! integers) of [`Tree`]. bincode is not self-describing: any change to these types is
//! a new version (docs/FORMAT.md, "Versions"), and a newer one is refused. Version 2
//! adds each entry's hard-link group; a tree none of whose entries is in one is written
//! as version 1, byte for byte as before, so directories without hard links keep
//! deduplicating against snapshots written by earlier versions, and only a tree that
//! needs the new field is one an older reader refuses. Entries are sorted by name bytes
//! and names are single path components; the decoder refuses anything else, so a
//! crafted tree cannot make restore write outside its target.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ChunkId;

/// Levels of list chunks (`indirect`) a file node may have: 4 levels of 64 refs address
/// 16.7M data chunks (see [`crate::format::chunklist`]).
pub const MAX_LEVELS: u8 = 4;

pub const TREE_MAGIC: &[u8; 4] = b"JSTR";
/// The newest tree version (written when an entry is in a hard-link group).
pub const TREE_VERSION: u8 = 2;
/// The version of trees without hard links.
const TREE_VERSION_1: u8 = 1;

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
    /// For a regular file that had more than one link when it was backed up: the device
    /// it was on. The entries of a snapshot with the same `link` and `inode` were one
    /// file, and a restore makes them one file again. (Version 2 only.)
    pub link: Option<u64>,
}

/// An entry as tree version 1 encodes it (no hard-link group).
#[derive(Serialize, Deserialize)]
struct EntryV1 {
    name: Vec<u8>,
    node: Node,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
}

#[derive(Serialize, Deserialize)]
struct TreeV1 {
    entries: Vec<EntryV1>,
}

impl From<EntryV1> for Entry {
    fn from(e: EntryV1) -> Entry {
        Entry {
            name: e.name,
            node: e.node,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            ctime_ns: e.ctime_ns,
            inode: e.inode,
            link: None,
        }
    }
}

impl Entry {
    fn v1(&self) -> EntryV1 {
        EntryV1 {
            name: self.name.clone(),
            node: self.node.clone(),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            inode: self.inode,
        }
    }
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
        let cfg = bincode::config::standard();
        let body = if self.entries.iter().any(|e| e.link.is_some()) {
            out.push(TREE_VERSION);
            bincode::serde::encode_to_vec(self, cfg)
        } else {
            out.push(TREE_VERSION_1);
            let v1 = TreeV1 {
                entries: self.entries.iter().map(Entry::v1).collect(),
            };
            bincode::serde::encode_to_vec(&v1, cfg)
        }
        .map_err(|e| Error::internal(format!("cannot encode a tree: {e}")))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn decode(bytes: &[u8], id: &ChunkId) -> Result<Tree> {
        let bad = |d: String| Error::corrupt("tree", format!("tree chunk {id}"), d);
        if bytes.get(..4) != Some(TREE_MAGIC.as_slice()) {
            return Err(bad("bad magic".into()));
        }
        let body = bytes.get(5..).unwrap_or_default();
        if body.len() > MAX_BODY_LEN {
            return Err(bad(format!("{} bytes is longer than a tree", bytes.len())));
        }
        let cfg = bincode::config::standard().with_limit::<MAX_BODY_LEN>();
        let (tree, used) = match bytes.get(4) {
            Some(&TREE_VERSION_1) => {
                let (t, used): (TreeV1, usize) =
                    bincode::serde::decode_from_slice(body, cfg).map_err(|e| bad(e.to_string()))?;
                let entries = t.entries.into_iter().map(Entry::from).collect();
                (Tree { entries }, used)
            }
            Some(&TREE_VERSION) => bincode::serde::decode_from_slice::<Tree, _>(body, cfg)
                .map_err(|e| bad(e.to_string()))?,
            Some(&v) if v > TREE_VERSION => {
                return Err(Error::newer_format(
                    "tree chunk",
                    id.to_hex(),
                    v,
                    TREE_VERSION,
                ))
            }
            Some(v) => return Err(bad(format!("tree version {v} was never written"))),
            None => return Err(bad("truncated".into())),
        };
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
            link: None,
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
        #[test]
        fn round_trip_with_hard_links(links in proptest::collection::vec(proptest::option::of(any::<u64>()), 1..10)) {
            let entries: Vec<Entry> = links.iter().enumerate().map(|(i, l)| Entry {
                link: *l,
                ..file(format!("f{i}").as_bytes(), 7)
            }).collect();
            let t = Tree { entries };
            let bytes = t.encode().unwrap();
            let linked = links.iter().any(Option::is_some);
            prop_assert_eq!(bytes[4], if linked { 2 } else { 1 });
            prop_assert_eq!(Tree::decode(&bytes, &ChunkId::of(&bytes)).unwrap(), t);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for v in [1, 2] {
                let mut b = vec![b'J', b'S', b'T', b'R', v];
                b.extend_from_slice(&bytes);
                let _ = Tree::decode(&b, &ChunkId::of(&b));
            }
            let _ = Tree::decode(&bytes, &ChunkId::of(&bytes));
        }
    }

    #[test]
    fn a_newer_version_is_refused_as_newer_not_corrupt() {
        let mut b = Tree {
            entries: vec![file(b"a", 1)],
        }
        .encode()
        .unwrap();
        let id = ChunkId::of(&b);
        b[4] = TREE_VERSION + 1;
        let e = Tree::decode(&b, &id).unwrap_err();
        assert!(
            matches!(&e, Error::NewerFormat { what: "tree chunk", found, supported, .. }
                if *found == u32::from(TREE_VERSION) + 1 && *supported == u32::from(TREE_VERSION)),
            "{e}"
        );
        assert!(e.to_string().contains(&id.to_hex()), "{e}");
        b[4] = 0;
        assert!(matches!(Tree::decode(&b, &id), Err(Error::Corrupt { .. })));
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

    #[test]
    fn a_tree_without_hard_links_is_written_as_version_1() {
        let t = Tree {
            entries: vec![file(b"a", 3)],
        };
        let bytes = t.encode().unwrap();
        assert_eq!(bytes[4], 1);
        // The version 1 body: entries without the link field.
        let v1 = bincode::serde::encode_to_vec(
            &TreeV1 {
                entries: vec![t.entries[0].v1()],
            },
            bincode::config::standard(),
        )
        .unwrap();
        assert_eq!(&bytes[5..], v1.as_slice());
    }
}
