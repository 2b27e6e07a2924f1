#![no_main]
//! Logical database dumps fed to the pure decoder and to the rebuilder: neither panics,
//! and the rebuilder refuses what the decoder refuses.
use jellysnap::decoders::{decode_dump, rebuild_dump};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_dump(data);
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("jellyfin.db");
    let rebuilt = rebuild_dump(&mut &data[..], &dest);
    if decoded.is_err() {
        assert!(rebuilt.is_err(), "the rebuilder accepted a dump the decoder refuses");
    }
});
