//! Named points for crash and concurrency tests.
//!
//! - `JELLYSNAP_CRASH_AT=<point>`: the process aborts there (no destructors, no flush: like
//!   a SIGKILL or a power cut of the process).
//! - `JELLYSNAP_PAUSE_AT=<point>`: the process sleeps there for `JELLYSNAP_PAUSE_MS`
//!   (default 2000) milliseconds, holding whatever locks it holds, so that a test can run
//!   another command against the repository at that exact moment.
//!
//! Unset in normal use; each point costs two environment lookups.

pub fn hit(point: &str) {
    if std::env::var_os("JELLYSNAP_CRASH_AT").is_some_and(|v| v == point) {
        std::process::abort();
    }
    if std::env::var_os("JELLYSNAP_PAUSE_AT").is_some_and(|v| v == point) {
        let ms = std::env::var("JELLYSNAP_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
