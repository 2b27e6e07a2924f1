//! Where the repository's bytes live and how they get there durably: the store, atomic
//! writes, locks, the chunk index and the pack writer.

pub mod durable;
pub mod index;
pub mod lock;
pub mod packer;
pub mod repo;
