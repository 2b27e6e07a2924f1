//! Progress reporting, injected by the caller. The engine never prints: it reports
//! phases, byte counts and warnings through this trait, and the CLI renders them.

pub trait Progress: Sync {
    /// A new phase begins; `total_bytes` when known.
    fn phase(&self, _name: &str, _total_bytes: Option<u64>) {}
    /// Bytes processed in the current phase.
    fn advance(&self, _bytes: u64) {}
    /// Whether totals counted ahead of the work are shown: a caller that counts them
    /// (a second walk) does so only when they are.
    fn shows_totals(&self) -> bool {
        false
    }
    /// What the current phase is expected to go through (files, bytes), until a count
    /// of it passes that or ends: an estimate (a backup's parent snapshot).
    fn estimate(&self, _files: u64, _bytes: u64) {}
    /// The files and bytes the current phase goes through, as counted so far ahead of
    /// it; `counting` while the count goes on (the totals only grow), false once done.
    fn totals(&self, _files: u64, _bytes: u64, _counting: bool) {}
    /// One more file gone through (its bytes are advanced apart).
    fn file_done(&self) {}
    /// A per-item problem that does not stop the run (unreadable file, ...).
    fn warn(&self, _message: &str) {}
    /// Detail for verbose output.
    fn info(&self, _message: &str) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
