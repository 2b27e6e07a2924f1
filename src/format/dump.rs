//! The logical SQLite dump: how a database's schema and rows are written as bytes
//! (docs/FORMAT.md, "Logical database dumps").

/// The first bytes of every dump.
pub const MAGIC: &[u8; 8] = b"JSSQLDMP";
/// The dump version backups write.
pub const VERSION: u8 = 2;
/// The oldest dump version restores still read.
pub const OLDEST_VERSION: u8 = 1;
