//! Pack file format (docs/FORMAT.md, "Packs"). Pure encode/decode, no I/O. A record's
//! bytes are made and read back only by `record` ([`seal`](super::record::seal) /
//! [`open`](super::record::open)); a pack's trailer only by [`seal_trailer`] /
//! [`open_trailer`].
//!
//! ```text
//! pack    = header record* trailer footer
//! header  = "JSNPPACK" u32le(version=1)                                  12 bytes
//! record  = rechdr payload
//! rechdr  = "JSCK" id[32] kind u8 compression u8 0u16 raw_len u32le
//!           stored_len u32le check u32le                               52 bytes
//!           (check = first 4 bytes of blake3 of the 48 bytes before it)
//! trailer = entry*count
//! entry   = id[32] kind u8 compression u8 0u16 offset u64le raw_len u32le
//!           stored_len u32le 0u32                                        56 bytes
//! footer  = count u32le 0u32 blake3(trailer)[..16] "JSNPEND\0"           32 bytes
//! ```
//!
//! The trailer lets the index be rebuilt by reading only the end of each pack; the
//! self-describing record headers let a pack with a damaged trailer be recovered by a
//! forward scan. Decoders never panic on bad bytes.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::format::compress::Compression;
use crate::format::config::RepoConfig;
use crate::format::record;
use crate::id::ChunkId;

pub const PACK_MAGIC: &[u8; 8] = b"JSNPPACK";
pub const PACK_VERSION: u32 = 1;
pub const PACK_HEADER_LEN: usize = 12;
pub const RECORD_MAGIC: &[u8; 4] = b"JSCK";
pub const RECORD_HEADER_LEN: usize = 52;
pub const ENTRY_LEN: usize = 56;
pub const FOOTER_LEN: usize = 32;
pub const FOOTER_MAGIC: &[u8; 8] = b"JSNPEND\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkKind {
    Data = 0,
    Tree = 1,
}

impl ChunkKind {
    fn name(self) -> &'static str {
        match self {
            ChunkKind::Data => "data",
            ChunkKind::Tree => "tree",
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(ChunkKind::Data),
            1 => Some(ChunkKind::Tree),
            _ => None,
        }
    }
}

/// One record of a pack, as listed in its trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub kind: ChunkKind,
    pub compression: Compression,
    /// Offset of the record header in the pack.
    pub offset: u64,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl PackEntry {
    /// Bytes the record occupies (header + payload).
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.stored_len as u64
    }
}

/// The longest chunk of each kind a repository can hold. Data chunks are cut by the
/// repository's chunkers, so none is longer than the largest chunker `max`; tree-kind
/// chunks (trees and chunk lists) are never longer than the tree decoder reads. A record
/// or index entry claiming more is damaged or hostile, and is refused before anything is
/// allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLimits {
    pub data: u32,
    pub tree: u32,
}

impl RawLimits {
    /// What the format allows whatever the repository's config (a decoder that has no
    /// config at hand).
    pub const ANY: RawLimits = RawLimits {
        data: crate::format::chunker::LARGEST_MAX,
        tree: crate::format::tree::MAX_TREE_LEN,
    };

    /// What a repository with this config makes.
    pub fn of(config: &RepoConfig) -> RawLimits {
        let data = [
            config.chunker,
            config.db_chunker,
            config.db_physical_chunker,
        ]
        .iter()
        .map(|c| c.max)
        .max()
        .unwrap_or(0);
        RawLimits {
            data,
            tree: Self::ANY.tree,
        }
    }

    /// Whether a chunk of `kind` stored with `compression` can have these lengths: its
    /// raw length within the limit of its kind, its stored length what that compression
    /// makes of it.
    pub fn check(
        &self,
        kind: ChunkKind,
        compression: Compression,
        raw_len: u32,
        stored_len: u32,
    ) -> Result<(), String> {
        let limit = match kind {
            ChunkKind::Data => self.data,
            ChunkKind::Tree => self.tree,
        };
        if raw_len > limit {
            return Err(format!(
                "a {} chunk of {raw_len} bytes is longer than this repository makes them ({limit})",
                kind.name()
            ));
        }
        let stored_ok = match compression {
            Compression::None => stored_len == raw_len,
            Compression::Zstd => {
                stored_len as usize <= crate::format::compress::stored_bound(raw_len as usize)
            }
        };
        if !stored_ok {
            return Err(format!(
                "{stored_len} stored bytes cannot hold a chunk of {raw_len} bytes"
            ));
        }
        Ok(())
    }

    /// [`RawLimits::check`] for a pack entry.
    pub fn check_entry(&self, e: &PackEntry) -> Result<(), String> {
        self.check(e.kind, e.compression, e.raw_len, e.stored_len)
            .map_err(|d| format!("chunk {}: {d}", e.id))
    }
}

/// Builds a pack in memory (tests; the backup streams packs to disk in `packer`).
#[cfg(test)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

#[cfg(test)]
impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl PackBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(PACK_MAGIC);
        buf.extend_from_slice(&PACK_VERSION.to_le_bytes());
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    pub fn add(
        &mut self,
        id: ChunkId,
        kind: ChunkKind,
        compression: Compression,
        raw_len: u32,
        payload: &[u8],
    ) -> PackEntry {
        let e = PackEntry {
            id,
            kind,
            compression,
            offset: self.buf.len() as u64,
            raw_len,
            stored_len: payload.len() as u32,
        };
        self.buf.extend_from_slice(&record::encode_header(&e));
        self.buf.extend_from_slice(payload);
        self.entries.push(e);
        e
    }

    /// Append the trailer and footer; returns the pack bytes and its entries.
    pub fn finish(mut self) -> (Vec<u8>, Vec<PackEntry>) {
        self.buf.extend_from_slice(&seal_trailer(&self.entries));
        (self.buf, self.entries)
    }
}

/// The trailer and footer for `entries` (written after the last record).
pub fn seal_trailer(entries: &[PackEntry]) -> Vec<u8> {
    let mut t = Vec::with_capacity(entries.len() * ENTRY_LEN + FOOTER_LEN);
    for e in entries {
        t.extend_from_slice(&e.id.0);
        t.extend_from_slice(&[e.kind as u8, e.compression as u8, 0, 0]);
        t.extend_from_slice(&e.offset.to_le_bytes());
        t.extend_from_slice(&e.raw_len.to_le_bytes());
        t.extend_from_slice(&e.stored_len.to_le_bytes());
        t.extend_from_slice(&[0u8; 4]);
    }
    let sum = blake3::hash(&t);
    t.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    t.extend_from_slice(&[0u8; 4]);
    t.extend_from_slice(sum.as_bytes().get(..16).unwrap_or_default());
    t.extend_from_slice(FOOTER_MAGIC);
    t
}

/// Why a trailer did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailerOpen {
    /// The bytes given end the pack but do not hold the whole trailer: read this many
    /// bytes from its end and open again.
    Need(u64),
    /// The trailer is damaged (the records can still be recovered by [`scan_records`]).
    Damaged(String),
}

/// The entries of a pack of `pack_len` bytes from `tail`, any suffix of the pack (at
/// least its footer; one read of a guessed length usually holds the whole trailer). An
/// entry no chunker or tree encoder could have made (beyond `limits`) is damage: the
/// records say more.
pub fn open_trailer(
    tail: &[u8],
    pack_len: u64,
    limits: &RawLimits,
) -> Result<Vec<PackEntry>, TrailerOpen> {
    let damaged = TrailerOpen::Damaged;
    if pack_len < (FOOTER_LEN + PACK_HEADER_LEN) as u64 {
        return Err(damaged("shorter than a pack".into()));
    }
    if tail.len() as u64 > pack_len {
        return Err(damaged("more bytes than the pack holds".into()));
    }
    let footer_at = tail
        .len()
        .checked_sub(FOOTER_LEN)
        .ok_or(TrailerOpen::Need(FOOTER_LEN as u64))?;
    let footer = tail.get(footer_at..).unwrap_or_default();
    let tl = trailer_len_from_footer(footer, pack_len).map_err(damaged)?;
    let at = (tail.len() as u64)
        .checked_sub(tl)
        .ok_or(TrailerOpen::Need(tl))?;
    let es =
        decode_trailer(tail.get(at as usize..).unwrap_or_default(), pack_len).map_err(damaged)?;
    es.iter()
        .try_for_each(|e| limits.check_entry(e))
        .map_err(damaged)?;
    Ok(es)
}

/// How many bytes from the end of a pack of length `pack_len` hold its trailer and footer,
/// given the footer's 32 bytes. (Public for the fuzz targets; readers use [`open_trailer`].)
pub fn trailer_len_from_footer(footer: &[u8], pack_len: u64) -> Result<u64, String> {
    let mut r = Reader(footer, 0);
    let count = r.u32()? as u64;
    r.take(4)?;
    r.take(16)?;
    if r.take(8)? != FOOTER_MAGIC {
        return Err("footer magic missing".into());
    }
    let len = count * ENTRY_LEN as u64 + FOOTER_LEN as u64;
    if len + PACK_HEADER_LEN as u64 > pack_len {
        return Err(format!(
            "trailer claims {count} entries, more than the pack can hold"
        ));
    }
    Ok(len)
}

/// Decode the trailer+footer (the last `trailer_len_from_footer` bytes of a pack).
/// (Public for the fuzz targets; readers use [`open_trailer`].)
pub fn decode_trailer(tail: &[u8], pack_len: u64) -> Result<Vec<PackEntry>, String> {
    let split = tail
        .len()
        .checked_sub(FOOTER_LEN)
        .ok_or("trailer shorter than its footer")?;
    let (entries_bytes, footer) = tail.split_at(split);
    let mut fr = Reader(footer, 0);
    let count = fr.u32()? as usize;
    fr.take(4)?;
    let sum = fr.take(16)?;
    if fr.take(8)? != FOOTER_MAGIC {
        return Err("footer magic missing".into());
    }
    if entries_bytes.len() != count * ENTRY_LEN {
        return Err("trailer length does not match its entry count".into());
    }
    if blake3::hash(entries_bytes).as_bytes().get(..16) != Some(sum) {
        return Err("trailer checksum mismatch".into());
    }
    let records_end = pack_len - tail.len() as u64;
    let mut out = Vec::with_capacity(count);
    let mut r = Reader(entries_bytes, 0);
    let mut expect_offset = PACK_HEADER_LEN as u64;
    for i in 0..count {
        let id = ChunkId(r.array()?);
        let kind = r.u8()?;
        let comp = r.u8()?;
        r.take(2)?;
        let offset = r.u64()?;
        let raw_len = r.u32()?;
        let stored_len = r.u32()?;
        r.take(4)?;
        let e = PackEntry {
            id,
            kind: ChunkKind::from_u8(kind)
                .ok_or_else(|| format!("entry {i}: unknown kind {kind}"))?,
            compression: Compression::from_u8(comp)
                .ok_or_else(|| format!("entry {i}: unknown compression {comp}"))?,
            offset,
            raw_len,
            stored_len,
        };
        if offset != expect_offset || offset + e.record_len() > records_end {
            return Err(format!("entry {i}: offset {offset} is out of place"));
        }
        expect_offset = offset + e.record_len();
        out.push(e);
    }
    if expect_offset != records_end {
        return Err("records do not end where the trailer starts".into());
    }
    Ok(out)
}

/// Recover the entries of a pack from its record headers (used when the trailer is
/// damaged). Stops at the first record that does not parse, claims more than `limits`
/// or whose payload does not hash to its id; returns what was recovered and whether the
/// scan reached a clean end.
pub fn scan_records(pack: &[u8], limits: &RawLimits) -> (Vec<PackEntry>, bool) {
    let mut out = Vec::new();
    if pack.get(..8) != Some(PACK_MAGIC.as_slice()) {
        return (out, false);
    }
    let mut pos = PACK_HEADER_LEN;
    let mut payload = Vec::new();
    loop {
        let Some(rest) = pack.get(pos..) else {
            return (out, false);
        };
        if rest.is_empty() {
            return (out, true);
        }
        let Ok(e) = record::peek(rest, pos as u64) else {
            // The trailer starts where record headers stop; that is a clean end if the
            // remaining bytes are exactly a trailer for what was found.
            let clean = rest.len() == out.len() * ENTRY_LEN + FOOTER_LEN;
            return (out, clean);
        };
        let Some(rec) = record::span(&e, limits).ok().and_then(|n| rest.get(..n)) else {
            return (out, false);
        };
        if record::open(rec, &e, limits, &mut payload).is_err() {
            return (out, false);
        }
        out.push(e);
        pos += RECORD_HEADER_LEN + e.stored_len as usize;
    }
}

/// Refuse a pack whose header (its first [`PACK_HEADER_LEN`] bytes) names a newer
/// version than this jellysnap reads. Bytes that are not a pack header pass: that is
/// damage, which the trailer and the record scan report.
pub fn refuse_newer(header: &[u8], location: &str) -> crate::error::Result<()> {
    let mut r = Reader(header, 0);
    if r.take(8).ok() != Some(PACK_MAGIC.as_slice()) {
        return Ok(());
    }
    match r.u32() {
        Ok(v) if v > PACK_VERSION => Err(crate::error::Error::newer_format(
            "pack",
            location,
            v,
            PACK_VERSION,
        )),
        _ => Ok(()),
    }
}

pub(super) struct Writer<'a>(pub(super) &'a mut [u8], pub(super) usize);

impl Writer<'_> {
    pub(super) fn put(&mut self, b: &[u8]) {
        if let Some(dst) = self.0.get_mut(self.1..self.1 + b.len()) {
            dst.copy_from_slice(b);
        }
        self.1 += b.len();
    }
}

pub(super) struct Reader<'a>(pub(super) &'a [u8], pub(super) usize);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .0
            .get(self.1..self.1 + n)
            .ok_or("unexpected end of data")?;
        self.1 += n;
        Ok(s)
    }
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.take(N)?;
        s.try_into()
            .map_err(|_| "unexpected end of data".to_string())
    }
    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(u8::from_le_bytes(self.array()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(chunks: &[Vec<u8>]) -> (Vec<u8>, Vec<PackEntry>) {
        let mut b = PackBuilder::new();
        for c in chunks {
            b.add(
                ChunkId::of(c),
                ChunkKind::Data,
                Compression::None,
                c.len() as u32,
                c,
            );
        }
        b.finish()
    }

    fn read_trailer(pack: &[u8]) -> Result<Vec<PackEntry>, TrailerOpen> {
        let len = pack.len() as u64;
        match open_trailer(&pack[pack.len() - FOOTER_LEN..], len, &RawLimits::ANY) {
            Err(TrailerOpen::Need(n)) => {
                open_trailer(&pack[pack.len() - n as usize..], len, &RawLimits::ANY)
            }
            r => r,
        }
    }

    proptest! {
        #[test]
        fn trailer_and_scan_agree(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12)) {
            let (pack, entries) = build(&chunks);
            prop_assert_eq!(read_trailer(&pack).unwrap(), entries.clone());
            prop_assert_eq!(open_trailer(&pack, pack.len() as u64, &RawLimits::ANY).unwrap(), entries.clone());
            let (scanned, clean) = scan_records(&pack, &RawLimits::ANY);
            prop_assert!(clean);
            prop_assert_eq!(scanned, entries);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = scan_records(&bytes, &RawLimits::ANY);
            let _ = record::peek(&bytes, 0);
            let _ = open_trailer(&bytes, bytes.len() as u64, &RawLimits::ANY);
            if bytes.len() >= FOOTER_LEN {
                let _ = trailer_len_from_footer(&bytes[bytes.len() - FOOTER_LEN..], bytes.len() as u64);
                let _ = decode_trailer(&bytes, bytes.len() as u64 + 100);
            }
        }
    }

    #[test]
    fn a_newer_pack_is_refused_as_newer() {
        let (mut pack, _) = build(&[b"delta".to_vec()]);
        assert!(refuse_newer(&pack[..PACK_HEADER_LEN], "p").is_ok());
        pack[8..12].copy_from_slice(&(PACK_VERSION + 1).to_le_bytes());
        let e = refuse_newer(&pack[..PACK_HEADER_LEN], "p").unwrap_err();
        assert!(
            matches!(&e, crate::error::Error::NewerFormat { what: "pack", found, supported: PACK_VERSION, .. }
                if *found == PACK_VERSION + 1),
            "{e}"
        );
        pack[0] ^= 1;
        assert!(
            refuse_newer(&pack[..PACK_HEADER_LEN], "p").is_ok(),
            "damage, not a version"
        );
    }

    #[test]
    fn damaged_trailer_is_detected_and_records_recovered() {
        let chunks = vec![b"alpha".repeat(30), b"beta".repeat(50)];
        let (mut pack, entries) = build(&chunks);
        let n = pack.len();
        pack[n - 40] ^= 0xff; // inside the trailer entries
        assert!(read_trailer(&pack).is_err());
        let (scanned, _) = scan_records(&pack, &RawLimits::ANY);
        assert_eq!(scanned, entries);
    }

    #[test]
    fn flipped_payload_byte_fails_verification() {
        let chunks = vec![b"gamma".repeat(30)];
        let (mut pack, entries) = build(&chunks);
        let off = entries[0].offset as usize + RECORD_HEADER_LEN + 3;
        pack[off] ^= 1;
        let rec = &pack[entries[0].offset as usize..][..entries[0].record_len() as usize];
        assert!(matches!(
            record::open(rec, &entries[0], &RawLimits::ANY, &mut Vec::new()),
            Err(record::Damage::Payload(_))
        ));
        let (scanned, clean) = scan_records(&pack, &RawLimits::ANY);
        assert!(scanned.is_empty() && !clean);
    }
}
