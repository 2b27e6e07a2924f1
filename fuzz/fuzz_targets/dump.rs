#![no_main]
//! Logical database dumps fed to the rebuilder: never panic, never leave a file behind on
//! failure.
use jellysnap::decoders::rebuild_dump;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("jellyfin.db");
    let _ = rebuild_dump(&mut &data[..], &dest);
});
