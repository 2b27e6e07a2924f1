#![no_main]
//! Tree chunks (directory listings).
use jellysnap::ChunkId;
use jellysnap::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Tree::decode(data, &ChunkId::of(data));
});
