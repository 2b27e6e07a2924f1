//! The repository's bytes: every record jellysnap writes, its encoder and its decoder.
//! Pure code: bytes in, bytes out. Nothing here opens a file, takes a lock or knows where
//! a record is stored; docs/FORMAT.md describes every byte.

pub mod chunker;
pub mod chunklist;
pub mod compress;
pub mod config;
pub mod dump;
pub mod pack;
pub mod snapshot;
pub mod tree;
