//! Progress reporting, injected by the caller. The engine never prints: it reports
//! phases, byte counts and warnings through this trait, and the CLI renders them.

pub trait Progress: Sync {
    /// A new phase begins; `total_bytes` when known.
    fn phase(&self, _name: &str, _total_bytes: Option<u64>) {}
    /// Bytes processed in the current phase.
    fn advance(&self, _bytes: u64) {}
    /// How many files the current phase is expected to go through (an estimate).
    fn expect_files(&self, _total: u64) {}
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
