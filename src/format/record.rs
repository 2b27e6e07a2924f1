//! A pack record (docs/FORMAT.md, "Packs"): a chunk's stored bytes. [`seal`] is the one
//! place they are made and [`open`] the one place they are read back, so that whatever
//! is done to a chunk on its way into a pack (compression today) is undone in one place,
//! checked against what the reader expects of the record before a byte is allocated for
//! it. Pure code, no I/O.
//!
//! ```text
//! record  = rechdr payload
//! rechdr  = "JSCK" id[32] kind u8 compression u8 0u16 raw_len u32le
//!           stored_len u32le check u32le                               52 bytes
//!           (check = first 4 bytes of blake3 of the 48 bytes before it)
//! ```

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::format::compress::{self, Compression};
use crate::format::pack::{
    ChunkKind, PackEntry, RawLimits, Reader, Writer, RECORD_HEADER_LEN, RECORD_MAGIC,
};
use crate::id::ChunkId;

/// How a chunk may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// As it is (content known to be compressed already).
    Never,
    /// With zstd at this level, unless that saves less than 3%.
    IfWorth(i32),
}

/// The record of chunk `id` (whose bytes are `raw`) into `out` (cleared first). Returns
/// what its header says; its offset is 0 until the pack writer places it.
pub fn seal(
    kind: ChunkKind,
    id: ChunkId,
    raw: &[u8],
    how: Compress,
    out: &mut Vec<u8>,
) -> Result<PackEntry, String> {
    let raw_len = u32::try_from(raw.len())
        .map_err(|_| format!("chunk {id} of {} bytes is too long", raw.len()))?;
    out.clear();
    out.resize(RECORD_HEADER_LEN, 0);
    let compression = match how {
        Compress::Never => Compression::None,
        Compress::IfWorth(level) => compress::compress_after(raw, level, out)
            .map_err(|e| format!("zstd compression failed: {e}"))?,
    };
    if compression == Compression::None {
        out.extend_from_slice(raw);
    }
    let stored_len = u32::try_from(out.len() - RECORD_HEADER_LEN)
        .map_err(|_| format!("chunk {id} stores too many bytes"))?;
    let e = PackEntry {
        id,
        kind,
        compression,
        offset: 0,
        raw_len,
        stored_len,
    };
    if let Some(h) = out.get_mut(..RECORD_HEADER_LEN) {
        h.copy_from_slice(&encode_header(&e));
    }
    Ok(e)
}

/// How many bytes to read for a record expected to be `e`: refused when no chunk of this
/// repository can have its lengths, before anything is allocated for them.
pub fn span(e: &PackEntry, limits: &RawLimits) -> Result<usize, String> {
    limits.check(e.kind, e.compression, e.raw_len, e.stored_len)?;
    Ok(RECORD_HEADER_LEN + e.stored_len as usize)
}

/// Why a record does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Its header does not parse (the pack is damaged where the record should be).
    Header(String),
    /// Its header is sound but describes another record than the one expected.
    NotExpected,
    /// Its payload does not give back the chunk (damaged bytes).
    Payload(String),
}

impl Damage {
    /// What is damaged: the pack (header) or the chunk (payload).
    pub fn what(&self) -> &'static str {
        match self {
            Damage::Header(_) | Damage::NotExpected => "pack",
            Damage::Payload(_) => "chunk",
        }
    }

    /// The detail for a message; `not_expected` says it for [`Damage::NotExpected`].
    pub fn detail(self, not_expected: impl FnOnce() -> String) -> String {
        match self {
            Damage::Header(d) | Damage::Payload(d) => d,
            Damage::NotExpected => not_expected(),
        }
    }
}

/// The chunk in `record` (the [`span`] bytes at `expected.offset`), verified: its header
/// is sound and says what `expected` (an index entry or a trailer entry) says, its
/// lengths are within `limits` (checked before anything is decompressed), and its bytes
/// hash to its id. Returns the chunk's bytes: inside `record` when stored raw, in `out`
/// when decompressed.
pub fn open<'b>(
    record: &'b [u8],
    expected: &PackEntry,
    limits: &RawLimits,
    out: &'b mut Vec<u8>,
) -> Result<&'b [u8], Damage> {
    let hdr = decode_header(record, expected.offset).map_err(Damage::Header)?;
    if hdr != *expected {
        return Err(Damage::NotExpected);
    }
    let payload = record.get(RECORD_HEADER_LEN..).unwrap_or_default();
    verify_payload(&hdr, payload, out, limits).map_err(Damage::Payload)?;
    Ok(match hdr.compression {
        Compression::None => payload,
        Compression::Zstd => out.as_slice(),
    })
}

/// The chunk's bytes of a record [`open`] accepted, found again without opening it twice
/// (for a caller that had to let go of `open`'s answer): inside `record` when stored raw,
/// in `out` when decompressed.
pub fn opened<'b>(record: &'b [u8], expected: &PackEntry, out: &'b [u8]) -> &'b [u8] {
    match expected.compression {
        Compression::None => record.get(RECORD_HEADER_LEN..).unwrap_or_default(),
        Compression::Zstd => out,
    }
}

/// What the record header at the start of `bytes` (at `offset` in its pack) claims,
/// unverified: where a scan of a pack whose trailer is damaged finds the next record.
/// The claims are then checked by [`open`].
pub fn peek(bytes: &[u8], offset: u64) -> Result<PackEntry, String> {
    decode_header(bytes, offset)
}

/// The header of a record described by `e` (its offset is not in it).
pub(super) fn encode_header(e: &PackEntry) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    let mut w = Writer(&mut h[..], 0);
    w.put(RECORD_MAGIC);
    w.put(&e.id.0);
    w.put(&[e.kind as u8, e.compression as u8, 0, 0]);
    w.put(&e.raw_len.to_le_bytes());
    w.put(&e.stored_len.to_le_bytes());
    let check = header_check(w.0.get(..48).unwrap_or_default());
    w.put(&check);
    h
}

fn header_check(bytes: &[u8]) -> [u8; 4] {
    let h = blake3::hash(bytes);
    let b = h.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

/// Parse a record header found at `offset`. Returns the entry it describes. (Public for
/// the fuzz targets; readers go through [`open`] or [`peek`].)
pub fn decode_header(bytes: &[u8], offset: u64) -> Result<PackEntry, String> {
    let h = bytes
        .get(..RECORD_HEADER_LEN)
        .ok_or_else(|| format!("record header at offset {offset} is truncated"))?;
    let mut r = Reader(h, 0);
    if r.take(4)? != RECORD_MAGIC {
        return Err(format!("no record magic at offset {offset}"));
    }
    let id = ChunkId(r.array()?);
    let kind = r.u8()?;
    let comp = r.u8()?;
    r.take(2)?;
    let raw_len = r.u32()?;
    let stored_len = r.u32()?;
    let check: [u8; 4] = r.array()?;
    if check != header_check(h.get(..48).unwrap_or_default()) {
        return Err(format!(
            "record header checksum mismatch at offset {offset}"
        ));
    }
    Ok(PackEntry {
        id,
        kind: ChunkKind::from_u8(kind)
            .ok_or_else(|| format!("unknown chunk kind {kind} at offset {offset}"))?,
        compression: Compression::from_u8(comp)
            .ok_or_else(|| format!("unknown compression {comp} at offset {offset}"))?,
        offset,
        raw_len,
        stored_len,
    })
}

/// Decompress (if needed) and verify a record's payload against its id. On success the
/// chunk's raw bytes are in `out` (or, for uncompressed records, equal `payload`). A
/// record whose lengths exceed `limits` is refused before anything is decompressed.
/// (Public for the fuzz targets; readers go through [`open`].)
pub fn verify_payload(
    e: &PackEntry,
    payload: &[u8],
    out: &mut Vec<u8>,
    limits: &RawLimits,
) -> Result<(), String> {
    limits.check_entry(e)?;
    if payload.len() != e.stored_len as usize {
        return Err(format!(
            "chunk {}: {} stored bytes, the record says {}",
            e.id,
            payload.len(),
            e.stored_len
        ));
    }
    let raw: &[u8] = match e.compression {
        Compression::None => payload,
        Compression::Zstd => {
            compress::decompress(payload, e.raw_len as usize, out)
                .map_err(|err| format!("chunk {} does not decompress: {err}", e.id))?;
            out
        }
    };
    if raw.len() != e.raw_len as usize {
        return Err(format!(
            "chunk {} has {} bytes, expected {}",
            e.id,
            raw.len(),
            e.raw_len
        ));
    }
    if ChunkId::of(raw) != e.id {
        return Err(format!("chunk {} does not hash to its id", e.id));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(mut e: PackEntry, offset: u64) -> PackEntry {
        e.offset = offset;
        e
    }

    /// What `seal` makes, `open` gives back, compressed or not; a record opened as
    /// another one, or with a flipped byte, is refused with the damage named.
    #[test]
    fn sealed_records_open_and_damage_is_named() {
        let text = b"<Item><Name>Movie</Name></Item>\n".repeat(300);
        let mut noise = vec![0u8; 5000];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        let mut out = Vec::new();
        for (raw, how, comp) in [
            (&text, Compress::IfWorth(3), Compression::Zstd),
            (&text, Compress::Never, Compression::None),
            (&noise, Compress::IfWorth(3), Compression::None),
        ] {
            let mut rec = Vec::new();
            let e = seal(ChunkKind::Data, ChunkId::of(raw), raw, how, &mut rec).unwrap();
            assert_eq!(e.compression, comp);
            assert_eq!(rec.len(), span(&e, &RawLimits::ANY).unwrap());
            let e = at(e, 12);
            assert_eq!(
                open(&rec, &e, &RawLimits::ANY, &mut out).unwrap(),
                raw.as_slice()
            );
            let other = PackEntry {
                id: ChunkId::of(b"other"),
                ..e
            };
            assert_eq!(
                open(&rec, &other, &RawLimits::ANY, &mut out),
                Err(Damage::NotExpected)
            );
            let mut bad = rec.clone();
            bad[5] ^= 1;
            assert!(matches!(
                open(&bad, &e, &RawLimits::ANY, &mut out),
                Err(Damage::Header(_))
            ));
            let mut bad = rec.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(matches!(
                open(&bad, &e, &RawLimits::ANY, &mut out),
                Err(Damage::Payload(_))
            ));
        }
    }

    /// A record's lengths are checked before anything is read or allocated for it.
    #[test]
    fn span_refuses_lengths_beyond_the_limits() {
        let mut rec = Vec::new();
        let e = seal(
            ChunkKind::Tree,
            ChunkId::of(b"x"),
            b"x",
            Compress::Never,
            &mut rec,
        )
        .unwrap();
        let limits = RawLimits { data: 10, tree: 10 };
        assert_eq!(span(&e, &limits).unwrap(), RECORD_HEADER_LEN + 1);
        let long = PackEntry {
            raw_len: 11,
            stored_len: 11,
            ..e
        };
        assert!(span(&long, &limits).is_err());
    }

    /// A record claiming more raw bytes than a chunk can have (a damaged or hostile
    /// pack) is refused before anything is allocated for it, and so is a zstd frame that
    /// states another size than its record.
    #[test]
    fn a_hostile_raw_length_is_refused_unallocated() {
        let raw = b"delta".repeat(400);
        let mut z = Vec::new();
        let c = crate::format::compress::maybe_compress(&raw, 3, &mut z).unwrap();
        assert_eq!(c, Compression::Zstd);
        let honest = PackEntry {
            id: ChunkId::of(&raw),
            kind: ChunkKind::Data,
            compression: Compression::Zstd,
            offset: crate::format::pack::PACK_HEADER_LEN as u64,
            raw_len: raw.len() as u32,
            stored_len: z.len() as u32,
        };
        let repo = RawLimits {
            data: 1 << 20,
            tree: RawLimits::ANY.tree,
        };
        let mut out = Vec::new();
        verify_payload(&honest, &z, &mut out, &repo).unwrap();
        assert_eq!(out, raw);
        for (raw_len, kind, limits) in [
            (u32::MAX, ChunkKind::Data, RawLimits::ANY),
            (u32::MAX, ChunkKind::Tree, RawLimits::ANY),
            (2 << 20, ChunkKind::Data, repo),
            (raw.len() as u32 + 1, ChunkKind::Data, repo),
        ] {
            let e = PackEntry {
                raw_len,
                kind,
                ..honest
            };
            let mut out = Vec::new();
            let err = verify_payload(&e, &z, &mut out, &limits).unwrap_err();
            assert!(
                out.capacity() < 1 << 16,
                "{raw_len}: {} bytes reserved ({err})",
                out.capacity()
            );
            let mut record = encode_header(&e).to_vec();
            record.extend_from_slice(&z);
            let mut out = Vec::new();
            assert!(open(&record, &e, &limits, &mut out).is_err());
            assert!(out.capacity() < 1 << 16, "{raw_len}: open reserved");
        }
        let stored = PackEntry {
            stored_len: z.len() as u32 + 1,
            ..honest
        };
        assert!(verify_payload(&stored, &z, &mut out, &repo).is_err());
    }
}
