//! Which Jellyfin version last ran on a data dir, how it is known, and how exactly.
//!
//! No file in the data dir records the version (`system.xml`'s `PreviousVersionStr` is
//! never assigned). The sources, best first:
//!
//! 1. the server's own log: every start logs `Jellyfin version: X.Y.Z` into
//!    `log_YYYYMMDD.log` (quoted in the file, bare on the console). Only the newest few
//!    files are read, each from its end; the log is read where it lies and never stored.
//!    It is the exact version, but of whatever server last wrote that log dir: it is
//!    believed only when the database does not contradict it, and not when jellyfin.db
//!    was put in place after that start with content from before it (an in-place
//!    restore: its mtime is set back, its ctime cannot be).
//! 2. `__EFMigrationsHistory` in jellyfin.db: the applied migrations, mapped to releases by
//!    the table in `releases`, give a range (from the newest release whose migration is
//!    applied, to the release before the next one that adds a migration that is not);
//!    code migrations also carry the exact server version that applied them, a lower
//!    bound. A migration id the table does not know comes from a newer release: the range
//!    is then open above.
//! 3. `config/migrations.xml` (10.10 and earlier; 10.11 converts and renames it), whose
//!    routine ids map to releases the same way, and a `data/library.db` (which 10.11 moves
//!    aside): both mean 10.10 or earlier.
//!
//! The ranges of 2 and 3 are intersected; evidence that contradicts a better source is
//! left out.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::format::snapshot::{VersionEvidence, VersionRange};
use crate::jellyfin::releases::{LEGACY_ROUTINES, MIGRATIONS, RELEASES};

/// A Jellyfin release: `major.minor.patch`, or a release candidate of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    major: u32,
    minor: u32,
    patch: u32,
    /// The release candidate's number; `u32::MAX` for the release itself (which sorts
    /// after its candidates).
    stage: u32,
}

impl Version {
    /// `10.11.3`, `10.11.3.0`, `v10.11.3`, `"10.11.3"`, `12.0.0-rc2`, `12.0.0~rc2`;
    /// anything after the first `+` (a Debian revision such as `10.11.3+deb12`) or after
    /// `-` that is not `rcN` is ignored.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_matches('"').trim_start_matches('v');
        let s = s.split('+').next()?;
        let (main, suffix) = match s.find(['-', '~']) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let parts: Vec<u32> = main
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let (major, minor, patch) = match parts.as_slice() {
            [a, b] => (*a, *b, 0),
            [a, b, c] | [a, b, c, _] => (*a, *b, *c),
            _ => return None,
        };
        let stage = suffix
            .and_then(|x| x.strip_prefix("rc"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX);
        Some(Version {
            major,
            minor,
            patch,
            stage,
        })
    }

    fn release(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.patch)
    }

    /// The release this version is, ignoring which candidate: a server reports a
    /// candidate as the release it leads to.
    pub fn same_release(&self, other: &Version) -> bool {
        self.release() == other.release()
    }

    /// Whether this release line (`10.11`) is the one of `other`.
    fn same_line(&self, other: &Version) -> bool {
        (self.major, self.minor) == (other.major, other.minor)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if self.stage != u32::MAX {
            write!(f, "-rc{}", self.stage)?;
        }
        Ok(())
    }
}

fn release(rank: usize) -> Option<Version> {
    RELEASES.get(rank).and_then(|r| Version::parse(r))
}

/// The newest release before 10.11 in the table: what `library.db` and `migrations.xml`
/// bound a version by.
fn last_before_10_11() -> Option<Version> {
    let limit = Version::parse("10.11.0")?;
    (0..RELEASES.len())
        .filter_map(release)
        .filter(|v| *v < limit)
        .max()
}

/// Versions from `min` to `max`, both included; a bound is `None` where nothing bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: Option<Version>,
    pub max: Option<Version>,
}

impl Range {
    pub fn exact(v: Version) -> Range {
        Range {
            min: Some(v),
            max: Some(v),
        }
    }

    /// Whether a server that reports `v` may be in the range (a candidate reports its
    /// release, so releases are compared without the candidate number).
    pub fn admits(&self, v: &Version) -> bool {
        self.min.is_none_or(|m| v.release() >= m.release())
            && self.max.is_none_or(|m| v.release() <= m.release())
    }

    /// The versions in both; `None` when they have none in common.
    fn intersect(&self, other: &Range) -> Option<Range> {
        let min = self.min.max(other.min);
        let max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                return None;
            }
        }
        Some(Range { min, max })
    }

    pub fn to_record(self) -> VersionRange {
        VersionRange {
            min: self.min.map(|v| v.to_string()),
            max: self.max.map(|v| v.to_string()),
        }
    }

    pub fn from_record(r: &VersionRange) -> Range {
        Range {
            min: r.min.as_deref().and_then(Version::parse),
            max: r.max.as_deref().and_then(Version::parse),
        }
    }
}

impl std::fmt::Display for Range {
    /// `10.11.3`; `10.10.x` for every release of a line the table knows; `10.11.0–10.11.3`;
    /// `10.11.3 or later`; `10.10.7 or earlier`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.min, self.max) {
            (Some(a), Some(b)) if a == b => write!(f, "{a}"),
            (Some(a), Some(b)) if a.same_line(&b) && whole_line(&a, &b) => {
                write!(f, "{}.{}.x", a.major, a.minor)
            }
            (Some(a), Some(b)) => write!(f, "{a}–{b}"),
            (Some(a), None) => write!(f, "{a} or later"),
            (None, Some(b)) => write!(f, "{b} or earlier"),
            (None, None) => write!(f, "unknown"),
        }
    }
}

/// Whether `a`..`b` are the first and the last release of their line in the table, and
/// a newer line follows (so no later patch release of it can exist unknown to the table).
fn whole_line(a: &Version, b: &Version) -> bool {
    let line: Vec<Version> = (0..RELEASES.len())
        .filter_map(release)
        .filter(|v| v.same_line(a))
        .collect();
    let newer_line = (0..RELEASES.len())
        .filter_map(release)
        .any(|v| v.release() > b.release() && !v.same_line(b));
    line.first() == Some(a) && line.last() == Some(b) && newer_line
}

/// Which source gave a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Log,
    Database,
    MigrationsXml,
    LibraryDb,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Log => "log",
            Source::Database => "database",
            Source::MigrationsXml => "migrations.xml",
            Source::LibraryDb => "library.db",
        }
    }
}

/// What each source says about one data dir.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The newest version line of the server's log, and the file it is in.
    pub log: Option<(Version, PathBuf)>,
    pub database: Option<Range>,
    pub migrations_xml: Option<Range>,
    /// A `library.db` lies in the data dir.
    pub library_db: bool,
}

/// The version found, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub range: Range,
    /// The sources that gave or narrowed the range, best first.
    pub sources: Vec<Source>,
}

impl Found {
    /// Exact versions come only from the log: a range that the table pins to one
    /// release is still shown as what it is, one release, but not claimed exact.
    pub fn exact(&self) -> bool {
        self.sources.first() == Some(&Source::Log)
    }

    /// What the snapshot record keeps: the display string and the evidence.
    pub fn to_record(&self) -> (String, VersionEvidence) {
        let source: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        (
            self.range.to_string(),
            VersionEvidence {
                source: source.join("+"),
                exact: self.exact(),
                range: self.range.to_record(),
            },
        )
    }
}

impl Evidence {
    /// The best answer the evidence gives, if any.
    pub fn decide(&self) -> Option<Found> {
        let mut range: Option<Range> = None;
        let mut sources = Vec::new();
        let bound_10_10 = Range {
            min: None,
            max: last_before_10_11(),
        };
        let candidates = [
            (Source::Database, self.database),
            (Source::MigrationsXml, self.migrations_xml),
            (Source::LibraryDb, self.library_db.then_some(bound_10_10)),
        ];
        for (source, r) in candidates {
            let Some(r) = r else { continue };
            match range {
                None => {
                    range = Some(r);
                    sources.push(source);
                }
                // Weaker evidence that contradicts the better is left out (a leftover
                // file from an older install).
                Some(cur) => {
                    if let Some(narrower) = cur.intersect(&r).filter(|n| *n != cur) {
                        range = Some(narrower);
                        sources.push(source);
                    }
                }
            }
        }
        if let Some((v, _)) = &self.log {
            if range.is_none_or(|r| r.admits(v)) {
                return Some(Found {
                    range: Range::exact(*v),
                    sources: vec![Source::Log],
                });
            }
        }
        range.map(|range| Found { range, sources })
    }
}

/// The rows of `__EFMigrationsHistory`: (migration id, product version).
pub fn read_history(conn: &Connection) -> Option<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare("SELECT MigrationId, ProductVersion FROM __EFMigrationsHistory")
        .ok()?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .ok()?;
    Some(rows.filter_map(|r| r.ok()).collect())
}

/// What the sources say now about the live data dir `data_dir` (config dir `config_dir`,
/// its database at `db`), read without disturbing a server that may use it (`livedb`;
/// `scratch` takes a private copy when one is needed).
pub fn live(
    layout: &str,
    data_dir: &Path,
    config_dir: &Path,
    db: &Path,
    scratch: &Path,
) -> Option<Found> {
    let database = if db.is_file() {
        crate::jellyfin::livedb::open(db, scratch)
            .ok()
            .and_then(|conn| {
                let rows = read_history(&conn);
                // A server that started meanwhile makes the read void, not wrong: the
                // version is then simply not known.
                conn.finish().ok()?;
                rows
            })
            .and_then(|rows| from_history(&rows))
    } else {
        None
    };
    Evidence {
        log: from_log_for(&log_dirs(layout, data_dir, config_dir), db),
        database,
        migrations_xml: from_migrations_xml(config_dir),
        library_db: data_dir.join("data/library.db").is_file(),
    }
    .decide()
}

/// [`live`] for the install whose data dir is `data_dir` (its config dir `config_dir`
/// when it is not where the layout puts it): the one way the guard and a restore ask.
pub fn live_at(data_dir: &Path, config_dir: Option<&Path>, scratch: &Path) -> Option<Found> {
    let source = crate::jellyfin::detect(&crate::jellyfin::SourceOptions {
        data_dir: data_dir.to_path_buf(),
        config_dir: config_dir.map(Path::to_path_buf),
        metadata_dir: None,
        components: Default::default(),
    })
    .ok()?;
    live(
        source.layout,
        &source.data_dir,
        &source.config_dir,
        &source.jellyfin_db,
        scratch,
    )
}

/// Read the version range from a captured (private) copy of jellyfin.db.
pub fn from_database(db: &Path) -> Option<Range> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    from_history(&read_history(&conn)?)
}

/// The range the applied migrations allow.
pub fn from_history(rows: &[(String, String)]) -> Option<Range> {
    if rows.is_empty() {
        return None;
    }
    let rank = |id: &str| MIGRATIONS.iter().find(|m| m.0 == id).map(|m| m.1 as usize);
    let newest_known = rows.iter().filter_map(|(id, _)| rank(id)).max();
    let unknown = rows.iter().any(|(id, _)| rank(id).is_none());
    // A code migration row names the exact server that applied it (4 parts; EF Core's
    // own rows carry 3-part EF versions).
    let applied_by = rows
        .iter()
        .filter(|(_, v)| v.trim().split('.').count() == 4)
        .filter_map(|(_, v)| Version::parse(v))
        .max();
    let mut min = newest_known.and_then(release);
    if let Some(v) = applied_by {
        if min.is_none_or(|m| v.release() > m.release()) {
            min = Some(v);
        }
    }
    let max = if unknown {
        None
    } else {
        let applied: std::collections::HashSet<&str> =
            rows.iter().map(|(id, _)| id.as_str()).collect();
        upper_bound(newest_known, |id| applied.contains(id))
    };
    Some(Range { min, max })
}

/// The release before the first one after `newest` that adds a migration every install
/// of it records and `applied` does not have; `None` when no known release does.
fn upper_bound(newest: Option<usize>, applied: impl Fn(&str) -> bool) -> Option<Version> {
    let start = newest.map_or(0, |n| n + 1);
    let missing_from = (start..RELEASES.len()).find(|&rank| {
        MIGRATIONS
            .iter()
            .any(|&(id, first, always)| first as usize == rank && always && !applied(id))
    })?;
    release(missing_from.checked_sub(1)?)
}

/// The range `config/migrations.xml` allows: the routines it lists, and 10.10 at most
/// (10.11 renames the file once it has converted it).
pub fn from_migrations_xml(config_dir: &Path) -> Option<Range> {
    let xml = std::fs::read_to_string(config_dir.join("migrations.xml")).ok()?;
    let ids: Vec<String> = xml
        .split("<Item1>")
        .skip(1)
        .filter_map(|s| s.split("</Item1>").next())
        .map(|s| s.trim().trim_matches(['{', '}']).to_ascii_lowercase())
        .collect();
    if ids.is_empty() {
        return None;
    }
    let rank = |id: &str| {
        LEGACY_ROUTINES
            .iter()
            .find(|m| m.0 == id)
            .map(|m| m.1 as usize)
    };
    let newest = ids.iter().filter_map(|id| rank(id)).max();
    let last = last_before_10_11();
    let limit = last.and_then(|l| (0..RELEASES.len()).find(|&r| release(r) == Some(l)));
    let max = (|| {
        let start = newest.map_or(0, |n| n + 1);
        for r in start..=limit? {
            let adds_missing = LEGACY_ROUTINES
                .iter()
                .any(|&(id, first)| first as usize == r && !ids.iter().any(|i| i == id));
            if adds_missing {
                return release(r.checked_sub(1)?);
            }
        }
        last
    })();
    Some(Range {
        min: newest.and_then(release),
        max,
    })
}

/// How many log files, newest first, are searched for the version line, and how much of
/// each (from its end).
const LOG_FILES: usize = 3;
const LOG_TAIL_BYTES: u64 = 16 << 20;
const LOG_BLOCK: usize = 1 << 20;

/// Where the server writes its log for a data dir of `layout`: the official image's
/// `/config/log` (in the data dir), linuxserver.io's `/config/log` (beside the data dir,
/// in the config dir), the Debian package's `/var/log/jellyfin` (beside
/// `/var/lib/jellyfin`).
pub fn log_dirs(layout: &str, data_dir: &Path, config_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![data_dir.join("log"), config_dir.join("log")];
    if layout == "debian" || data_dir.ends_with("var/lib/jellyfin") {
        if let Some(prefix) = data_dir.ancestors().nth(3) {
            dirs.insert(0, prefix.join("var/log/jellyfin"));
        }
    }
    dirs.dedup();
    dirs
}

/// [`from_log`], unless the server that logged it started before `db` was replaced with
/// older content: then the log is not about the data that is there now.
pub fn from_log_for(dirs: &[PathBuf], db: &Path) -> Option<(Version, PathBuf)> {
    let (v, file, started) = from_log(dirs)?;
    match started {
        Some(t) if replaced_after(db, t) => None,
        _ => Some((v, file)),
    }
}

/// Whether `db`'s content is older than `t_ns` but the file was put in place after it.
fn replaced_after(db: &Path, t_ns: i64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(db) else {
        return false;
    };
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    ns(m.mtime(), m.mtime_nsec()) < t_ns && ns(m.ctime(), m.ctime_nsec()) > t_ns
}

/// The version of the newest `Jellyfin version:` line in the newest log files of the
/// first of `dirs` that has any, the file, and when the line was logged (Unix
/// nanoseconds; the console's format has no date).
pub fn from_log(dirs: &[PathBuf]) -> Option<(Version, PathBuf, Option<i64>)> {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut logs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("log_") && n.ends_with(".log")
            })
            .map(|e| e.path())
            .collect();
        if logs.is_empty() {
            continue;
        }
        // `log_YYYYMMDD.log`, then `log_YYYYMMDD_001.log` when a day's file was full:
        // the names sort by age.
        logs.sort();
        for path in logs.iter().rev().take(LOG_FILES) {
            if let Some((v, t)) = last_version_line(path) {
                return Some((v, path.clone(), t));
            }
        }
        return None;
    }
    None
}

const MARKER: &[u8] = b"Jellyfin version: ";

/// The last version line of a log file, read backwards in blocks from its end.
fn last_version_line(path: &Path) -> Option<(Version, Option<i64>)> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let floor = len.saturating_sub(LOG_TAIL_BYTES);
    let mut end = len;
    // Each block overlaps the next one by a line's length, so that a line across the
    // boundary is seen whole.
    let overlap = 256u64;
    while end > floor {
        let start = end.saturating_sub(LOG_BLOCK as u64).max(floor);
        let mut buf = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start)).ok()?;
        f.read_exact(&mut buf).ok()?;
        if let Some(v) = buf.split(|&b| b == b'\n').rev().find_map(version_in_line) {
            return Some(v);
        }
        if start == floor {
            break;
        }
        end = (start + overlap).min(end - 1);
    }
    None
}

fn version_in_line(line: &[u8]) -> Option<(Version, Option<i64>)> {
    let at = line.windows(MARKER.len()).position(|w| w == MARKER)?;
    let rest = std::str::from_utf8(line.get(at + MARKER.len()..)?).ok()?;
    let v = Version::parse(rest.split_whitespace().next()?)?;
    Some((v, line_time(line)))
}

/// The time at the start of a log file's line, `[YYYY-MM-DD HH:MM:SS.fff +HH:MM]`, in
/// Unix nanoseconds.
fn line_time(line: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(line.get(1..31)?).ok()?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let sign = match s.get(24..25)? {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let offset = sign * (num(25..27)? * 3600 + num(28..30)? * 60);
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // Checked: a line dated past 2262 does not fit in nanoseconds (and is no line a
    // server wrote).
    let secs = days
        .checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + sec - offset)?;
    secs.checked_mul(1_000_000_000)?.checked_add(ms * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn history(ids_up_to: &str) -> Vec<(String, String)> {
        let limit = RELEASES.iter().position(|r| *r == ids_up_to).unwrap();
        MIGRATIONS
            .iter()
            .filter(|m| m.1 as usize <= limit && m.2)
            .map(|m| (m.0.to_string(), "9.0.8".to_string()))
            .collect()
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(v("10.11.3.0"), v("10.11.3"));
        assert_eq!(v("\"10.11.3\""), v("v10.11.3"));
        assert_eq!(v("10.11.3+deb12"), v("10.11.3"));
        assert!(v("12.0.0-rc2") < v("12.0.0"));
        assert!(v("12.0.0~rc2") > v("12.0.0-rc1"));
        assert!(v("10.11.10") > v("10.11.9"));
        assert_eq!(v("12.0.0-rc2").to_string(), "12.0.0-rc2");
        assert!(Version::parse("ten").is_none());
    }

    #[test]
    fn a_10_10_database_is_the_whole_line() {
        let r = from_history(&history("10.10.7")).unwrap();
        assert_eq!(r.to_string(), "10.10.x");
    }

    #[test]
    fn code_migration_versions_raise_the_lower_bound() {
        let mut rows = history("10.11.0");
        rows.push(("20250730215000_ReseedFolderFlag".into(), "10.11.3.0".into()));
        let r = from_history(&rows).unwrap();
        // 10.11.7 adds the next migration.
        assert_eq!(r.to_string(), "10.11.3–10.11.6");
        let mut rows = history("10.11.11");
        rows.push(("20990101000000_FromTheFuture".into(), "13.0.0.0".into()));
        assert_eq!(from_history(&rows).unwrap().to_string(), "13.0.0 or later");
    }

    #[test]
    fn release_candidates_are_told_apart() {
        let r = from_history(&history("12.0.0-rc2")).unwrap();
        assert_eq!(r.to_string(), "12.0.0-rc1–12.0.0-rc3");
        assert!(r.admits(&v("12.0.0")));
        assert!(!r.admits(&v("10.11.11")));
    }

    #[test]
    fn the_log_wins_unless_the_database_contradicts_it() {
        let db = from_history(&history("10.11.0"));
        let mut e = Evidence {
            log: Some((v("10.11.4"), PathBuf::new())),
            database: db,
            ..Evidence::default()
        };
        let found = e.decide().unwrap();
        assert!(found.exact());
        assert_eq!(found.range.to_string(), "10.11.4");
        // A log left by a newer server than the data knows (the data was rolled back
        // below a migration that server added).
        e.log = Some((v("10.11.8"), PathBuf::new()));
        let found = e.decide().unwrap();
        assert!(!found.exact());
        assert_eq!(found.range.to_string(), "10.11.0–10.11.6");
    }

    #[test]
    fn migrations_xml_and_library_db_bound_10_10() {
        let dir = tempfile::tempdir().unwrap();
        let entries: String = LEGACY_ROUTINES
            .iter()
            .filter(|r| (r.1 as usize) <= RELEASES.iter().position(|x| *x == "10.10.2").unwrap())
            .map(|r| format!("<ValueTupleOfGuidString><Item1>{}</Item1><Item2>x</Item2></ValueTupleOfGuidString>", r.0))
            .collect();
        std::fs::write(
            dir.path().join("migrations.xml"),
            format!("<MigrationOptions><Applied>{entries}</Applied></MigrationOptions>"),
        )
        .unwrap();
        let xml = from_migrations_xml(dir.path()).unwrap();
        assert_eq!(xml.to_string(), "10.10.2–10.10.4");
        let e = Evidence {
            database: from_history(&history("10.10.7")),
            migrations_xml: Some(xml),
            library_db: true,
            ..Evidence::default()
        };
        let found = e.decide().unwrap();
        assert_eq!(found.range.to_string(), "10.10.2–10.10.4");
        assert_eq!(found.sources, vec![Source::Database, Source::MigrationsXml]);
        let only_file = Evidence {
            library_db: true,
            ..Evidence::default()
        };
        assert_eq!(
            only_file.decide().unwrap().range.to_string(),
            "10.10.7 or earlier"
        );
    }

    #[test]
    fn log_line_times() {
        let t = line_time(
            b"[2026-03-01 10:00:00.250 +01:00] [INF] [1] Main: Jellyfin version: \"10.11.3\"",
        );
        // 2026-03-01T09:00:00.25Z
        assert_eq!(t, Some(1_772_355_600_250_000_000));
        assert_eq!(
            line_time(b"[10:00:00] [INF] [1] Main: Jellyfin version: 10.11.3"),
            None
        );
        // A date past what nanoseconds hold is no time, not a panic.
        assert_eq!(
            line_time(
                b"[9999-12-31 23:59:59.999 -14:00] [INF] [1] Main: Jellyfin version: 10.11.3"
            ),
            None
        );
    }

    #[test]
    fn the_newest_version_line_of_the_newest_log() {
        let dir = tempfile::tempdir().unwrap();
        let line = |v: &str| {
            format!("[2026-01-01 00:00:00.000 +00:00] [INF] [1] Main: Jellyfin version: \"{v}\"\n")
        };
        std::fs::write(dir.path().join("log_20260101.log"), line("10.11.2")).unwrap();
        let mut big = line("10.11.3");
        big.push_str(&"[2026-01-02 00:00:00.000 +00:00] [INF] [9] Other: filler\n".repeat(60_000));
        std::fs::write(dir.path().join("log_20260102.log"), &big).unwrap();
        let found = from_log(&[dir.path().join("none"), dir.path().to_path_buf()]).unwrap();
        assert_eq!(found.0, v("10.11.3"));
        assert!(found.1.ends_with("log_20260102.log"));
        std::fs::write(
            dir.path().join("log_20260102_001.log"),
            "[12:00:00] [INF] [1] Main: Jellyfin version: 10.11.4\n",
        )
        .unwrap();
        assert_eq!(
            from_log(&[dir.path().to_path_buf()]).unwrap().0,
            v("10.11.4")
        );
    }

    #[test]
    fn the_real_10_11_0_database() {
        let real =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/real/jellyfin-10.11.0-fresh.db");
        let copy = tempfile::tempdir().unwrap();
        let p = copy.path().join("jellyfin.db");
        std::fs::copy(real, &p).unwrap();
        // Every 10.11.0 migration is there; 10.11.7 adds the next one.
        assert_eq!(from_database(&p).unwrap().to_string(), "10.11.0–10.11.6");
    }
}
