#![no_main]
//! A record's payload as a read verifies it: the lengths of an untrusted header checked
//! against the format's limits, decompression, the id check. Input: kind u8, compression
//! u8, raw_len u32le, then the payload. Nothing beyond the limits may be allocated.
use jellysnap::decoders::{verify_payload, Compression, PackEntry, RawLimits};
use jellysnap::{ChunkId, ChunkKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, payload)) = data.split_at_checked(6) else {
        return;
    };
    let e = PackEntry {
        id: ChunkId::of(payload),
        kind: if head[0] & 1 == 0 {
            ChunkKind::Data
        } else {
            ChunkKind::Tree
        },
        compression: if head[1] & 1 == 0 {
            Compression::None
        } else {
            Compression::Zstd
        },
        offset: 12,
        raw_len: u32::from_le_bytes([head[2], head[3], head[4], head[5]]),
        stored_len: payload.len() as u32,
    };
    let limits = RawLimits::ANY;
    let mut out = Vec::new();
    let _ = verify_payload(&e, payload, &mut out, &limits);
    let limit = match e.kind {
        ChunkKind::Data => limits.data,
        ChunkKind::Tree => limits.tree,
    };
    assert!(out.capacity() <= limit as usize);
});
