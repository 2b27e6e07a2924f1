//! jellysnap: incremental, deduplicated, verifiable snapshots of a Jellyfin server.
//!
//! The engine. It never prints; progress reaches the caller through [`progress::Progress`]
//! and results come back as plain types. See docs/FORMAT.md for every byte on disk and
//! DESIGN.md for the invariants.

#![warn(clippy::unwrap_used)]

pub mod backup;
pub mod browse;
pub mod check;
pub mod chunker;
pub mod chunklist;
pub mod compress;
pub mod config;
mod crashpoint;
pub mod durable;
pub mod error;
mod fault;
pub mod forget;
pub mod gc;
pub mod id;
pub mod index;
pub mod jellyfin;
pub mod lock;
pub mod pack;
pub mod packer;
mod parallel;
pub mod progress;
pub mod reach;
pub mod repo;
pub mod restore;
pub mod snapshot;
pub mod stats;
mod sys;
pub mod timefmt;
pub mod tree;

pub use error::{Error, Result};
pub use repo::{Access, Repository};
