#![no_main]
//! List chunks (the indirect chunk lists of large files).
use jellysnap::decoders::decode_list;
use jellysnap::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_list(data, &ChunkId::of(data));
});
