#![no_main]
//! Tree chunks (directory listings).
use jellysnap_fuzz::id::ChunkId;
use jellysnap_fuzz::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Tree::decode(data, &ChunkId::of(data));
});
