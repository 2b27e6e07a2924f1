#![no_main]
//! The repository config file.
use jellysnap::decoders::RepoConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RepoConfig::decode(data, std::path::Path::new("config"));
});
