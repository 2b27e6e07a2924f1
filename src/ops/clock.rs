//! Time as the operations see it: "now" (a test build can set it, to stand in for a wrong
//! clock) and file times as Unix nanoseconds, which an `i64` holds only from 1677 to
//! 2262: a time outside that range is saturated at the nearest end, never overflowed.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds per second.
pub const NS: i64 = 1_000_000_000;

/// The clock, in Unix nanoseconds (0 before 1970, saturated after 2262).
pub fn now_ns() -> i64 {
    #[cfg(feature = "test-hooks")]
    if let Some(ns) = crate::store::testing::clock_ns() {
        return ns;
    }
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// A stat time (seconds, nanoseconds) as Unix nanoseconds, and whether it had to be
/// saturated to fit.
pub fn stat_ns(secs: i64, nsec: i64) -> (i64, bool) {
    match secs.checked_mul(NS).and_then(|n| n.checked_add(nsec)) {
        Some(n) => (n, false),
        None if secs < 0 => (i64::MIN, true),
        None => (i64::MAX, true),
    }
}

/// The offset of local time from UTC, in seconds, at each of the Unix times `ns`, as the
/// C library's time zone rules (`TZ`, `/etc/localtime`) give it. Asked of SQLite's
/// `localtime` modifier, which applies those rules, daylight saving included; `None`
/// when it cannot say, and the caller shows UTC.
pub fn local_offsets(ns: &[i64]) -> Option<Vec<i64>> {
    let db = rusqlite::Connection::open_in_memory().ok()?;
    let mut q = db
        .prepare("SELECT unixepoch(datetime(?1, 'unixepoch', 'localtime')) - ?1")
        .ok()?;
    ns.iter()
        .map(|n| {
            q.query_row([n.div_euclid(NS)], |r| r.get::<_, Option<i64>>(0))
                .ok()
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_2262_saturate() {
        assert_eq!(stat_ns(1, 5), (NS + 5, false));
        assert_eq!(stat_ns(-1, 5), (-NS + 5, false));
        // 2300-01-01 and 1600-01-01.
        assert_eq!(stat_ns(10_413_792_000, 0), (i64::MAX, true));
        assert_eq!(stat_ns(-11_676_096_000, 0), (i64::MIN, true));
        // The largest time that fits comes back unchanged.
        assert_eq!(stat_ns(i64::MAX / NS, i64::MAX % NS), (i64::MAX, false));
    }

    #[test]
    fn local_offsets_are_whole_minutes_within_a_day() {
        let at = [0, 1_764_045_078 * NS, 1_751_328_000 * NS];
        let offsets = local_offsets(&at).unwrap();
        assert_eq!(offsets.len(), 3);
        for o in offsets {
            assert!(o.abs() < 86_400 && o % 60 == 0, "{o}");
        }
    }
}
