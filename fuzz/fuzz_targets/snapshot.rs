#![no_main]
//! Snapshot records, both with a matching id (to reach the body) and without.
use jellysnap::SnapshotId;
use jellysnap::SnapshotRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SnapshotRecord::decode(data, &SnapshotId::of(data));
    let _ = SnapshotRecord::decode(data, &SnapshotId([0; 32]));
});
