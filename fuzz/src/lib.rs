//! The engine's decoders, compiled from the engine's own source files (no copies), with
//! just the modules they need: fuzzing them does not build RocksDB.
#![allow(dead_code)]

#[path = "../../src/chunker.rs"]
pub mod chunker;
#[path = "../../src/chunklist.rs"]
pub mod chunklist;
#[path = "../../src/compress.rs"]
pub mod compress;
#[path = "../../src/config.rs"]
pub mod config;
#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/id.rs"]
pub mod id;
#[path = "../../src/pack.rs"]
pub mod pack;
#[path = "../../src/snapshot.rs"]
pub mod snapshot;
#[path = "../../src/tree.rs"]
pub mod tree;

#[path = "../../src/jellyfin/logical.rs"]
pub mod logical;

/// The engine's path to the module (`crate::jellyfin::logical`).
pub mod jellyfin {
    pub use crate::logical;
}
