//! The commands' engine: each operation reads and writes the repository through
//! [`crate::store`] and the Jellyfin data dir through [`crate::jellyfin`].

pub mod backup;
pub mod browse;
pub mod check;
pub mod clock;
pub mod copy;
pub mod dump;
pub mod edit;
pub mod forget;
pub mod full;
pub mod gc;
pub mod guard;
pub mod options;
pub mod parallel;
pub mod progress;
pub mod reach;
pub mod repair;
pub mod restore;
pub mod select;
pub mod stats;
