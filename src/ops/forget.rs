//! Retention: which snapshots a policy (or a list of names) keeps, with the rule that
//! decided, and removing the others' records. Buckets are calendar-aligned in UTC: hours, days, ISO
//! weeks (Monday to Sunday), months, years. A rule keeps the newest snapshot of each of
//! its most recent N buckets that hold one. Named snapshots are kept by any policy unless
//! `include_named`, and so are snapshots with a tag of `keep_tags`.
//!
//! Clocks can be wrong. `--keep-last` counts snapshots in the order they were written
//! (a snapshot taken before the clock was set is still the newest one), the calendar
//! rules and `--keep-within` by their dates. A snapshot dated after now would make
//! `--keep-within` count from the future and remove every other snapshot: a policy with
//! a rule that goes by dates is refused while one exists, unless forced.

use serde::Serialize;

use crate::error::{Error, OptionError, Result};
use crate::format::snapshot::Snapshot;
use crate::format::timefmt;
use crate::id::SnapshotId;
use crate::ops::clock::NS;
use crate::store::repo::{resolve_in, Repository};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    /// Keep everything newer than this many seconds before the newest snapshot.
    pub within_secs: Option<u64>,
    pub include_named: bool,
    /// Snapshots with one of these tags are kept, as named ones are.
    pub keep_tags: Vec<String>,
    /// Apply the policy even when a snapshot is dated after now.
    pub force: bool,
}

/// How far after now a snapshot's date may lie before the clock that dated it (or this
/// one) counts as wrong: clocks of a few machines drift by seconds, not minutes.
const FUTURE_TOLERANCE_NS: i64 = 10 * 60 * NS;

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.rules_empty() && self.keep_tags.is_empty()
    }

    /// Whether no rule keeps a snapshot by its place or date (`--keep-tag` aside).
    fn rules_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within_secs.is_none()
    }

    /// Whether a rule goes by the snapshots' dates (all but `--keep-last`, which goes by
    /// the order they were written).
    pub fn uses_dates(&self) -> bool {
        self.hourly > 0
            || self.daily > 0
            || self.weekly > 0
            || self.monthly > 0
            || self.yearly > 0
            || self.within_secs.is_some()
    }

    /// The policy with `--keep-within` set from a duration such as `36h`, `2w`, `1y6m`.
    pub fn within(self, duration: Option<&str>) -> Result<Policy, OptionError> {
        Ok(Policy {
            within_secs: duration.map(parse_duration).transpose()?,
            ..self
        })
    }
}

/// What a forget removes: the snapshots named on the command line, or those a policy
/// does not keep. One or the other, never both, never neither.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Named(Vec<String>),
    Policy(Policy),
}

impl Selection {
    pub fn new(snapshots: Vec<String>, policy: Policy) -> Result<Selection, OptionError> {
        // `--keep-tag` shields snapshots from a policy's rules; alone it is no rule, and
        // would remove every snapshot not tagged.
        if !policy.keep_tags.is_empty() && policy.rules_empty() {
            return Err(OptionError::KeepTagAlone);
        }
        match (snapshots.is_empty(), policy.is_empty()) {
            (true, true) => Err(OptionError::NothingToForget),
            (false, false) => Err(OptionError::SnapshotsAndPolicy),
            (true, false) => Ok(Selection::Policy(policy)),
            (false, true) => Ok(Selection::Named(snapshots)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: String,
    pub name: Option<String>,
    pub time_ns: i64,
    pub keep: bool,
    /// The rules that keep it ("last", "daily 2", "named", "within"), or why it goes.
    pub reasons: Vec<String>,
}

/// Parse `30d`, `12h`, `2w`, `1y6m` style durations into seconds.
pub fn parse_duration(s: &str) -> Result<u64, OptionError> {
    let bad = || OptionError::Duration(s.to_string());
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'm' => 30 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

fn days(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000).div_euclid(86_400)
}

/// (year, month) of a day count since 1970-01-01.
fn year_month(days: i64) -> (i64, u32) {
    let (y, m, _) = crate::format::timefmt::civil_from_days(days);
    (y, m)
}

/// Snapshots newest (last written) first, each with its decision. `snaps` are in the
/// order they were written, oldest first, as [`Repository::snapshots`] lists them.
pub fn decide(snaps: &[Snapshot], policy: &Policy) -> Vec<Decision> {
    let order: Vec<&Snapshot> = snaps.iter().rev().collect();
    let mut out: Vec<Decision> = order
        .iter()
        .map(|s| Decision {
            id: s.id.to_hex(),
            name: s.record.name.clone(),
            time_ns: s.record.time_ns,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    type Bucket = fn(i64) -> i64;
    let rules: [(&str, u32, Bucket); 5] = [
        ("hourly", policy.hourly, |ns| {
            ns.div_euclid(3_600_000_000_000)
        }),
        ("daily", policy.daily, days),
        // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
        ("weekly", policy.weekly, |ns| (days(ns) + 3).div_euclid(7)),
        ("monthly", policy.monthly, |ns| {
            let (y, m) = year_month(days(ns));
            y * 12 + m as i64
        }),
        ("yearly", policy.yearly, |ns| year_month(days(ns)).0),
    ];
    for (i, d) in out.iter_mut().enumerate() {
        if (i as u32) < policy.last {
            d.reasons.push(format!("last {}", i + 1));
        }
    }
    // The calendar rules go by date, newest first.
    let mut by_time: Vec<usize> = (0..out.len()).collect();
    by_time.sort_by_key(|&i| std::cmp::Reverse((order[i].record.time_ns, order[i].id)));
    for (label, n, bucket) in rules {
        let mut last_bucket = None;
        let mut kept = 0;
        for &i in &by_time {
            if kept >= n {
                break;
            }
            let d = &mut out[i];
            let b = bucket(d.time_ns);
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                kept += 1;
                d.reasons.push(format!("{label} {kept}"));
            }
        }
    }
    // The snapshot written last is never removed by a policy: taken while the clock was
    // wrong, its date may put it outside every date rule.
    if let Some(d) = out.first_mut() {
        d.reasons.push("newest".into());
    }
    let newest = out.iter().map(|d| d.time_ns).max();
    if let (Some(w), Some(newest)) = (policy.within_secs, newest) {
        let cutoff = newest.saturating_sub((w as i64).saturating_mul(NS));
        for d in out.iter_mut().filter(|d| d.time_ns >= cutoff) {
            d.reasons.push("within".into());
        }
    }
    for (d, s) in out.iter_mut().zip(&order) {
        if d.name.is_some() && !policy.include_named {
            d.reasons.push("named".into());
        }
        if let Some(t) = policy.keep_tags.iter().find(|t| s.record.tags.contains(t)) {
            d.reasons.push(format!("tag {t}"));
        }
        d.keep = !d.reasons.is_empty();
        if !d.keep {
            d.reasons.push("matches no keep rule".into());
        }
    }
    out
}

/// Snapshots newest (last written) first, each with its decision: by name (every query
/// must match a snapshot) or by policy.
/// A policy counts time from the newest snapshot; refused (unless forced) when that lies
/// after `now_ns`.
pub fn select(snaps: &[Snapshot], selection: &Selection, now_ns: i64) -> Result<Vec<Decision>> {
    let names = match selection {
        Selection::Policy(policy) => {
            if !policy.force && policy.uses_dates() {
                refuse_future(snaps, now_ns)?;
            }
            return Ok(decide(snaps, policy));
        }
        Selection::Named(names) => names,
    };
    let mut remove = std::collections::HashSet::new();
    for q in names {
        remove.insert(resolve_in(snaps.to_vec(), q)?.id);
    }
    let d: Vec<Decision> = snaps
        .iter()
        .rev()
        .map(|s| {
            let gone = remove.contains(&s.id);
            Decision {
                id: s.id.to_hex(),
                name: s.record.name.clone(),
                time_ns: s.record.time_ns,
                keep: !gone,
                reasons: vec![if gone {
                    "named on the command line"
                } else {
                    "not named"
                }
                .into()],
            }
        })
        .collect();
    Ok(d)
}

fn refuse_future(snaps: &[Snapshot], now_ns: i64) -> Result<()> {
    let limit = now_ns.saturating_add(FUTURE_TOLERANCE_NS);
    let future = snaps
        .iter()
        .filter(|s| s.record.time_ns > limit)
        .max_by_key(|s| s.record.time_ns);
    match future {
        Some(s) => Err(Error::SnapshotInFuture {
            snapshot: s.record.name.clone().unwrap_or_else(|| s.id.short()),
            time: timefmt::utc(s.record.time_ns),
            now: timefmt::utc(now_ns),
        }),
        None => Ok(()),
    }
}

/// Remove the snapshot records `ids` (needs `Access::Exclusive`). Each removal is
/// durable.
pub fn remove(repo: &Repository, ids: &[String]) -> Result<u64> {
    remove_snapshots(repo, &[], ids)
}

/// Remove the snapshots `ids` (of `snaps`) with every record each has (needs
/// `Access::Exclusive`), its superseded records first and its current one last, so
/// that a forget cut short leaves each snapshot as it was listed or gone. Each removal
/// is durable.
pub fn remove_snapshots(repo: &Repository, snaps: &[Snapshot], ids: &[String]) -> Result<u64> {
    repo.check_lease()?;
    let mut n = 0;
    for id in ids {
        let Some(id) = SnapshotId::from_hex(id) else {
            continue;
        };
        let records = snaps
            .iter()
            .find(|s| s.id == id)
            .map_or_else(|| vec![id], Snapshot::records);
        let mut there = false;
        for r in records {
            there = repo.remove_snapshot(&r)?;
        }
        if there {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::tests_support::record_at;
    use crate::id::SnapshotId;

    const H: i64 = 3_600_000_000_000;

    fn snaps(times: &[i64]) -> Vec<Snapshot> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Snapshot::new(SnapshotId([i as u8; 32]), record_at(*t, None)))
            .collect()
    }

    #[test]
    fn daily_buckets_are_calendar_aligned() {
        // 2026-01-01 00:00 UTC, then every 6 hours for 3 days.
        let base = 1_767_225_600 * 1_000_000_000i64;
        let s = snaps(&(0..12).map(|i| base + i * 6 * H).collect::<Vec<_>>());
        let d = decide(
            &s,
            &Policy {
                daily: 2,
                ..Policy::default()
            },
        );
        let kept: Vec<i64> = d
            .iter()
            .filter(|d| d.keep)
            .map(|d| (d.time_ns - base) / H)
            .collect();
        // Newest of day 3 (66h) and newest of day 2 (42h).
        assert_eq!(kept, vec![66, 42]);
    }

    #[test]
    fn last_within_weekly_and_named() {
        let base = 1_767_225_600 * 1_000_000_000i64; // a Thursday
        let mut s = snaps(&[base, base + 24 * H, base + 4 * 24 * H, base + 11 * 24 * H]);
        s[0].record.name = Some("before-10.11.3".into());
        let d = decide(
            &s,
            &Policy {
                last: 1,
                weekly: 2,
                ..Policy::default()
            },
        );
        let keep: Vec<bool> = d.iter().map(|d| d.keep).collect();
        // newest (last 1 + weekly 1), Mon of week 2 (weekly 2), Fri week 1 (dropped), named oldest.
        assert_eq!(keep, vec![true, true, false, true]);
        assert!(d[3].reasons.contains(&"named".to_string()));
        let d = decide(
            &s,
            &Policy {
                within_secs: Some(8 * 86_400),
                include_named: true,
                ..Policy::default()
            },
        );
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            vec![true, true, false, false]
        );
    }

    #[test]
    fn keep_last_goes_by_write_order_and_a_future_date_is_refused() {
        let base = 1_767_225_600 * 1_000_000_000i64;
        // Written in this order; the third while the clock read 1970.
        let mut s = snaps(&[base, base + H, 5 * H]);
        for (i, snap) in s.iter_mut().enumerate() {
            snap.record.seq = Some(i as u64 + 1);
        }
        let last = Policy {
            last: 1,
            ..Policy::default()
        };
        let d = decide(&s, &last);
        assert_eq!(d[0].id, s[2].id.to_hex());
        assert!(d[0].keep && !d[1].keep && !d[2].keep);
        let policy = Selection::Policy(Policy {
            within_secs: Some(86_400),
            ..Policy::default()
        });
        assert!(select(&s, &policy, base + H).is_ok());
        // The clock now reads an hour before the newest date.
        assert!(matches!(
            select(&s, &policy, base),
            Err(Error::SnapshotInFuture { .. })
        ));
        let forced = Selection::Policy(Policy {
            within_secs: Some(86_400),
            force: true,
            ..Policy::default()
        });
        assert!(select(&s, &forced, base).is_ok());
        // --keep-last goes by the order of writing: no date can mislead it.
        assert!(select(&s, &Selection::Policy(last), base).is_ok());
        // Named removals are not a policy: never refused.
        let named = Selection::Named(vec![s[0].id.to_hex()]);
        assert!(select(&s, &named, 0).is_ok());
    }

    #[test]
    fn keep_tags_keep_tagged_snapshots() {
        let base = 1_767_225_600 * 1_000_000_000i64;
        let mut s = snaps(&[base, base + H, base + 2 * H]);
        s[0].record.tags = vec!["keep".into()];
        s[1].record.tags = vec!["nightly".into()];
        let p = Policy {
            last: 1,
            keep_tags: vec!["keep".into(), "other".into()],
            ..Policy::default()
        };
        assert!(!Policy {
            last: 0,
            ..p.clone()
        }
        .is_empty());
        let d = decide(&s, &p);
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            vec![true, false, true]
        );
        assert_eq!(d[2].reasons, vec!["tag keep".to_string()]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("36h").unwrap(), 36 * 3600);
        assert_eq!(parse_duration("1y6m").unwrap(), 365 * 86_400 + 180 * 86_400);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_selection_is_names_or_a_policy() {
        let daily = Policy {
            daily: 1,
            ..Policy::default()
        };
        assert!(matches!(
            Selection::new(vec![], Policy::default()),
            Err(OptionError::NothingToForget)
        ));
        let tag_alone = Policy {
            keep_tags: vec!["keep".into()],
            ..Policy::default()
        };
        assert!(matches!(
            Selection::new(vec![], tag_alone),
            Err(OptionError::KeepTagAlone)
        ));
        assert!(matches!(
            Selection::new(vec!["a".into()], daily.clone()),
            Err(OptionError::SnapshotsAndPolicy)
        ));
        assert_eq!(
            Selection::new(vec![], daily.clone()).unwrap(),
            Selection::Policy(daily)
        );
        let p = Policy::default().within(Some("2w")).unwrap();
        assert_eq!(p.within_secs, Some(14 * 86_400));
        assert!(matches!(
            Policy::default().within(Some("2x")),
            Err(OptionError::Duration(v)) if v == "2x"
        ));
    }
}
