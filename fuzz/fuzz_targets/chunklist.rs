#![no_main]
//! List chunks (the indirect chunk lists of large files).
use jellysnap_fuzz::chunklist;
use jellysnap_fuzz::id::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chunklist::decode_list(data, &ChunkId::of(data));
});
