//! Chunk-list indirection (docs/FORMAT.md, "List chunks"): a large file's chunk list is stored as
//! content-defined *list chunks* instead of inline in its directory's tree chunk, so a snapshot of
//! a 1 GB database whose rows barely changed re-stores a few list chunks, not a 50,000-entry list.
//!
//! A list chunk is a tree-kind chunk (it goes to tree packs, gc and check walk it like a
//! tree) holding a run of consecutive [`ChunkRef`]s. Runs end after a ref whose id's last
//! byte has its low [`CUT_BITS`] bits zero (on average every 16 refs), or at
//! [`MAX_PER_LIST`] refs: the boundaries depend only on the refs themselves, so an
//! inserted or changed chunk changes only the list chunk that holds it and the runs after
//! it re-synchronise at the next natural cut. When the list of list chunks is still longer
//! than [`INLINE_MAX`], the same is applied again (another level), so a node never holds
//! more than [`INLINE_MAX`] refs whatever the file size.
//!
//! A ref to a list chunk has `len` = the number of file bytes it covers (the sum of the
//! `len`s inside it), so "the sum of `len` over a node's `chunks` equals `size`" holds at
//! every level and is checked when a list chunk is read.
//!
//! Encoding of a list chunk: `"JSCL" version:u8 = 1`, then the bincode 2 standard
//! encoding of `Vec<ChunkRef>` (non-empty). Decoding never panics on bad bytes.

use crate::error::{Error, Result};
use crate::format::tree::{ChunkRef, MAX_LEVELS};
use crate::id::ChunkId;

pub const LIST_MAGIC: &[u8; 4] = b"JSCL";
pub const LIST_VERSION: u8 = 1;
/// A node holds at most this many refs inline; longer lists become list chunks.
pub const INLINE_MAX: usize = 64;
/// Cut after a ref whose id's last byte has these low bits zero (average run 16).
pub const CUT_BITS: u32 = 4;
/// Hard cap on refs per list chunk (bounds a list chunk at ~2.3 KiB).
pub const MAX_PER_LIST: usize = 64;

fn is_cut(r: &ChunkRef) -> bool {
    r.id.0[31] & ((1u8 << CUT_BITS) - 1) == 0
}

/// Split `refs` into content-defined runs (see the module doc). A run also ends before a
/// ref that would make the bytes it covers overflow a `u32`.
pub fn runs(refs: &[ChunkRef]) -> Vec<&[ChunkRef]> {
    let mut out = Vec::new();
    let (mut start, mut covered) = (0usize, 0u64);
    for (i, r) in refs.iter().enumerate() {
        if i > start && covered + u64::from(r.len) > u64::from(u32::MAX) {
            out.push(&refs[start..i]);
            start = i;
            covered = 0;
        }
        covered += u64::from(r.len);
        if is_cut(r) || i + 1 - start >= MAX_PER_LIST {
            out.push(&refs[start..=i]);
            start = i + 1;
            covered = 0;
        }
    }
    if start < refs.len() {
        out.push(&refs[start..]);
    }
    out
}

pub fn encode_list(refs: &[ChunkRef]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(8 + refs.len() * 38);
    out.extend_from_slice(LIST_MAGIC);
    out.push(LIST_VERSION);
    let body = bincode::serde::encode_to_vec(refs, bincode::config::standard())
        .map_err(|e| Error::internal(format!("cannot encode a chunk list: {e}")))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn decode_list(bytes: &[u8], id: &ChunkId) -> Result<Vec<ChunkRef>> {
    let bad = |d: &str| Error::corrupt("chunk list", format!("list chunk {id}"), d);
    if bytes.get(..4) != Some(LIST_MAGIC.as_slice()) {
        return Err(bad("bad magic"));
    }
    match bytes.get(4) {
        Some(&LIST_VERSION) => {}
        Some(&v) if v > LIST_VERSION => {
            return Err(Error::newer_format(
                "list chunk",
                id.to_hex(),
                v,
                LIST_VERSION,
            ))
        }
        Some(_) => return Err(bad("list version was never written")),
        None => return Err(bad("truncated")),
    }
    let body = bytes.get(5..).unwrap_or_default();
    let (refs, used): (Vec<ChunkRef>, usize) = bincode::serde::decode_from_slice(
        body,
        bincode::config::standard().with_limit::<{ 1 << 20 }>(),
    )
    .map_err(|e| bad(&e.to_string()))?;
    if used != body.len() {
        return Err(bad("trailing bytes"));
    }
    if refs.is_empty() {
        return Err(bad("empty list"));
    }
    Ok(refs)
}

/// Turn a file's chunk list into what its node stores: the list itself when short, else
/// refs to list chunks (`levels` deep). `put` stores one encoded list chunk (tree kind)
/// and returns its id.
pub fn build(
    mut refs: Vec<ChunkRef>,
    mut put: impl FnMut(&[u8]) -> Result<ChunkId>,
) -> Result<(Vec<ChunkRef>, u8)> {
    let mut levels = 0u8;
    while refs.len() > INLINE_MAX && levels < MAX_LEVELS {
        let mut up = Vec::new();
        for run in runs(&refs) {
            let id = put(&encode_list(run)?)?;
            let len: u64 = run.iter().map(|r| u64::from(r.len)).sum();
            up.push(ChunkRef {
                id,
                len: len as u32, // runs() keeps this within u32
            });
        }
        refs = up;
        levels += 1;
    }
    Ok((refs, levels))
}

/// What a walk over a node's chunk lists reports.
pub trait ListVisitor {
    /// A list chunk is about to be read; return false to skip it (already visited).
    fn list(&mut self, _id: &ChunkId) -> bool {
        true
    }
    /// A data chunk of the file, in file order (unless lists were skipped).
    fn data(&mut self, r: &ChunkRef);
    /// A list chunk could not be read or decoded; the walk goes on with the next one.
    fn failed(&mut self, id: &ChunkId, err: Error);
}

/// Walk `refs` (a node's `chunks`, `levels` deep) down to the data chunks. `load` reads a
/// list chunk's bytes (verified against its id).
pub fn walk(
    levels: u8,
    refs: &[ChunkRef],
    load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
    v: &mut dyn ListVisitor,
) {
    if levels == 0 {
        refs.iter().for_each(|r| v.data(r));
        return;
    }
    for r in refs {
        if !v.list(&r.id) {
            continue;
        }
        let sub = load(&r.id).and_then(|b| {
            let sub = decode_list(&b, &r.id)?;
            let sum: u64 = sub.iter().map(|c| u64::from(c.len)).sum();
            if sum != u64::from(r.len) {
                return Err(Error::corrupt(
                    "chunk list",
                    format!("list chunk {}", r.id),
                    "lengths do not add up to the covered bytes",
                ));
            }
            Ok(sub)
        });
        match sub {
            Ok(sub) => walk(levels - 1, &sub, load, v),
            Err(e) => v.failed(&r.id, e),
        }
    }
}

/// The data chunks of a node, in file order; the first unreadable list chunk is an error.
pub fn resolve(
    levels: u8,
    refs: &[ChunkRef],
    load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
) -> Result<Vec<ChunkRef>> {
    struct Collect {
        out: Vec<ChunkRef>,
        err: Option<Error>,
    }
    impl ListVisitor for Collect {
        fn list(&mut self, _: &ChunkId) -> bool {
            self.err.is_none()
        }
        fn data(&mut self, r: &ChunkRef) {
            self.out.push(*r);
        }
        fn failed(&mut self, _: &ChunkId, err: Error) {
            self.err.get_or_insert(err);
        }
    }
    let mut c = Collect {
        out: Vec::new(),
        err: None,
    };
    walk(levels, refs, load, &mut c);
    match c.err {
        Some(e) => Err(e),
        None => Ok(c.out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn refs(seed: u64, n: usize) -> Vec<ChunkRef> {
        (0..n)
            .map(|i| ChunkRef {
                id: ChunkId::of(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat()),
                len: 1000 + (i as u32 % 7000),
            })
            .collect()
    }

    fn round_trip(list: &[ChunkRef]) -> (Vec<ChunkRef>, u8, HashMap<ChunkId, Vec<u8>>) {
        let mut s = HashMap::new();
        let (top, levels) = build(list.to_vec(), |b| {
            let id = ChunkId::of(b);
            s.insert(id, b.to_vec());
            Ok(id)
        })
        .unwrap();
        (top, levels, s)
    }

    proptest! {
        #[test]
        fn build_resolve_round_trip(seed in any::<u64>(), n in 0usize..3000) {
            let list = refs(seed, n);
            let (top, levels, s) = round_trip(&list);
            prop_assert!(top.len() <= INLINE_MAX);
            prop_assert_eq!(levels == 0, n <= INLINE_MAX);
            let sum = |v: &[ChunkRef]| v.iter().map(|r| u64::from(r.len)).sum::<u64>();
            prop_assert_eq!(sum(&top), sum(&list));
            let back = resolve(levels, &top, &mut |id| {
                s.get(id).cloned().ok_or(Error::ChunkMissing { chunk: *id })
            })
            .unwrap();
            prop_assert_eq!(back, list);
        }

        #[test]
        fn encode_decode_round_trip(seed in any::<u64>(), n in 1usize..200) {
            let list = refs(seed, n);
            let b = encode_list(&list).unwrap();
            prop_assert_eq!(decode_list(&b, &ChunkId::of(&b)).unwrap(), list);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = b"JSCL\x01".to_vec();
            b.extend_from_slice(&bytes);
            let _ = decode_list(&b, &ChunkId::of(&b));
            let _ = decode_list(&bytes, &ChunkId::of(&bytes));
        }
    }

    #[test]
    fn a_newer_version_is_refused_as_newer_not_corrupt() {
        let mut b = encode_list(&refs(1, 3)).unwrap();
        let id = ChunkId::of(&b);
        b[4] = LIST_VERSION + 1;
        let e = decode_list(&b, &id).unwrap_err();
        assert!(
            matches!(&e, Error::NewerFormat { what: "list chunk", found, supported, .. }
                if *found == u32::from(LIST_VERSION) + 1 && *supported == u32::from(LIST_VERSION)),
            "{e}"
        );
        b[4] = 0;
        assert!(matches!(decode_list(&b, &id), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn local_change_keeps_other_list_chunks() {
        let base = refs(7, 20_000);
        let (_, levels, s0) = round_trip(&base);
        assert_eq!(levels, 3); // ~1250 leaves, ~80 above them, ~5 inline

        // Change one ref in the middle, insert one and delete one elsewhere.
        let mut changed = base.clone();
        changed[5_000] = ChunkRef {
            id: ChunkId::of(b"changed"),
            len: 4242,
        };
        changed.insert(
            12_000,
            ChunkRef {
                id: ChunkId::of(b"inserted"),
                len: 100,
            },
        );
        changed.remove(17_000);
        let (_, _, s1) = round_trip(&changed);
        let new = s1.keys().filter(|k| !s0.contains_key(k)).count();
        // Three edits: each changes at most two neighbouring list chunks per level (an
        // edited ref may create or remove a cut) of the three levels.
        assert!(new <= 3 * 2 * 3, "{new} new list chunks of {}", s1.len());
        assert!(s1.len() > 1000);
    }

    #[test]
    fn unchanged_list_stores_identical_chunks() {
        let base = refs(9, 5_000);
        let (t0, l0, s0) = round_trip(&base);
        let (t1, l1, s1) = round_trip(&base);
        assert_eq!((t0, l0), (t1, l1));
        assert_eq!(s0, s1);
    }

    #[test]
    fn bad_lengths_and_missing_chunks_are_errors() {
        let base = refs(3, 500);
        let (mut top, levels, s) = round_trip(&base);
        top[0].len += 1;
        let r = resolve(levels, &top, &mut |id| {
            s.get(id).cloned().ok_or(Error::ChunkMissing { chunk: *id })
        });
        assert!(matches!(r, Err(Error::Corrupt { .. })));
        let r = resolve(levels, &top, &mut |id| {
            Err(Error::ChunkMissing { chunk: *id })
        });
        assert!(matches!(r, Err(Error::ChunkMissing { .. })));
    }

    #[test]
    fn runs_respect_u32_coverage() {
        let big: Vec<ChunkRef> = (0..10u8)
            .map(|i| ChunkRef {
                id: ChunkId([i | 0x10; 32]), // never a natural cut
                len: u32::MAX / 3,
            })
            .collect();
        for run in runs(&big) {
            assert!(run.iter().map(|r| u64::from(r.len)).sum::<u64>() <= u64::from(u32::MAX));
        }
    }
}
