//! Named crash points for crash-consistency tests. When `JELLYSNAP_CRASH_AT` names a
//! point, the process aborts there (no destructors, no flush: like a SIGKILL or a power
//! cut of the process). Unset in normal use; costs one env lookup per point.

pub fn hit(point: &str) {
    if std::env::var_os("JELLYSNAP_CRASH_AT").is_some_and(|v| v == point) {
        std::process::abort();
    }
}
