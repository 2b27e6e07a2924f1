//! `snapshots`, `ls` and `diff`.

use serde_json::json;

use jellysnap::{Access, DbCapture, Error, Repository, Snapshot, SnapshotRecord};

use jellysnap::select::Filter;

use super::args::SnapshotsArgs;
use super::exit::ExitCode;
use super::{render, report_rebuild, Ctx};

pub fn snapshots(ctx: &Ctx, a: &SnapshotsArgs) -> Result<ExitCode, Error> {
    let filter = Filter::new(&a.tags, a.name.as_deref(), a.latest)?;
    let repo = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&repo, ctx.out);
    let (all, bad) = repo.snapshots()?;
    let snaps = filter.apply(all.clone());
    for e in &bad {
        ctx.out.warn(&e.to_string());
    }
    ctx.out.json_with(|| {
        json!(snaps
            .iter()
            .map(|s| snapshot_json(s, &all))
            .collect::<Vec<_>>())
    });
    if !ctx.out.json {
        ctx.out.data(&snapshots_text(&snaps));
    }
    Ok(if bad.is_empty() {
        ExitCode::Success
    } else if bad.iter().all(|e| matches!(e, Error::NewerFormat { .. })) {
        ExitCode::Version
    } else {
        ExitCode::Damaged
    })
}

/// The listing: one table per host and data dir (named above it, so that the table
/// stays within about 100 columns), in the repository's order otherwise. Times are
/// local, to the minute: the zone's offset in the header, or after each time when the
/// snapshots span a change of offset (daylight saving).
fn snapshots_text(snaps: &[Snapshot]) -> String {
    let times: Vec<i64> = snaps.iter().map(|s| s.record.time_ns).collect();
    let offsets = jellysnap::clock::local_offsets(&times).unwrap_or_else(|| vec![0; snaps.len()]);
    let one_offset = offsets.windows(2).all(|w| w[0] == w[1]);
    let zone = match offsets.first() {
        Some(o) if one_offset => utc_offset(*o),
        None => "UTC".into(),
        Some(_) => "local".into(),
    };
    let time_header = format!("TIME ({zone})");
    let header = [
        "ID",
        time_header.as_str(),
        "NAME",
        "JELLYFIN",
        "COMPONENTS",
        "STATUS",
        "TAGS",
        "SIZE",
        "ADDED",
    ];
    // (host, data dir) and the rows of its snapshots.
    type Group<'a> = ((&'a str, &'a str), Vec<Vec<String>>);
    let mut groups: Vec<Group> = Vec::new();
    for (s, off) in snaps.iter().zip(&offsets) {
        let key = (s.record.host.as_str(), s.record.data_dir.as_str());
        let local = s
            .record
            .time_ns
            .saturating_add(off.saturating_mul(1_000_000_000));
        let mut time = render::time(local)
            .get(..16)
            .unwrap_or_default()
            .to_string();
        if !one_offset {
            time.push(' ');
            time.push_str(utc_offset(*off).trim_start_matches("UTC"));
        }
        let row = snapshot_row(s, time);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((key, vec![row])),
        }
    }
    let mut t = String::new();
    for ((host, data_dir), rows) in &groups {
        t.push_str(&format!("host {host}, data dir {data_dir}\n"));
        t.push_str(&render::table(&header, rows));
        t.push('\n');
    }
    t.push_str(&format!(
        "{} snapshot(s); SIZE is the files' total, ADDED what the snapshot added to the repository",
        snaps.len()
    ));
    t
}

/// `UTC`, or `UTC+01:00` for an offset in seconds.
fn utc_offset(secs: i64) -> String {
    if secs == 0 {
        return "UTC".into();
    }
    let sign = if secs < 0 { '-' } else { '+' };
    let m = secs.unsigned_abs() / 60;
    format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
}

fn snapshot_row(s: &Snapshot, time: String) -> Vec<String> {
    let r = &s.record;
    vec![
        s.id.short(),
        time,
        r.name.clone().unwrap_or_default(),
        render::jellyfin_version(r),
        components(r),
        if is_partial(r) { "partial" } else { "complete" }.into(),
        r.tags.join(","),
        render::size(r.summary.logical_bytes),
        render::size(r.summary.new_stored_bytes),
    ]
}

/// The optional components a snapshot holds (the database and the config state are in
/// every one): `all`, a list, or `db+config` for neither.
fn components(r: &SnapshotRecord) -> String {
    let optional: Vec<&str> = r
        .components
        .iter()
        .filter(|c| !c.is_mandatory())
        .map(|c| c.name())
        .collect();
    let all = jellysnap::Component::ALL
        .iter()
        .filter(|c| !c.is_mandatory())
        .count();
    match optional.len() {
        0 => "db+config".into(),
        n if n == all => "all".into(),
        _ => optional.join(","),
    }
}

/// Whether the backup could not capture some path (its record lists them).
fn is_partial(r: &SnapshotRecord) -> bool {
    !r.summary.errors.is_empty() || !r.not_captured.is_empty()
}

/// How a snapshot's databases were captured: `logical` (proven at backup), `physical`,
/// or none for records from before captures were recorded.
fn db_capture(r: &SnapshotRecord) -> Vec<&'static str> {
    let mut kinds: Vec<&str> = r.databases.iter().map(|d| d.capture.name()).collect();
    kinds.dedup();
    kinds
}

/// A snapshot as `snapshots --json` lists it; its parent under the id `all` lists it
/// by (the record names the id the parent had at the backup, which an edit replaced).
fn snapshot_json(s: &Snapshot, all: &[Snapshot]) -> serde_json::Value {
    let r = &s.record;
    let mut v = render::record_json(r);
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(s.id.to_hex()));
        if let Some(p) = r.parent {
            let p = jellysnap::select::current_id(all, &p).unwrap_or(p);
            o.insert("parent".into(), json!(p.to_hex()));
        }
        o.insert("time".into(), json!(jellysnap::timefmt::rfc3339(r.time_ns)));
        o.insert("hook".into(), json!(render::hook(r)));
        o.insert("partial".into(), json!(is_partial(r)));
        o.insert("size_added".into(), json!(r.summary.new_stored_bytes));
        o.insert("database_capture".into(), json!(db_capture(r)));
    }
    v
}

pub fn ls(
    ctx: &Ctx,
    snapshot: &str,
    path: Option<&str>,
    recursive: bool,
) -> Result<ExitCode, Error> {
    let repo = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&repo, ctx.out);
    let snap = repo.resolve(snapshot)?;
    let entries = jellysnap::browse::ls(&repo, &snap, path.unwrap_or(""), recursive)?;
    ctx.out.json_with(|| json!(entries));
    if !ctx.out.json {
        for e in &entries {
            let db = match (e.database, e.capture_size) {
                (Some(DbCapture::Logical), Some(n)) => {
                    format!("  (database; stored as a {} logical dump)", render::size(n))
                }
                (Some(_), Some(n)) => format!("  (database; stored as a {} copy)", render::size(n)),
                _ => String::new(),
            };
            ctx.out.data(&format!(
                "{} {:04o} {:>10} {}  {}{db}",
                e.kind,
                e.mode,
                render::size(e.size),
                render::time(e.mtime_ns),
                e.path
            ));
        }
    }
    Ok(ExitCode::Success)
}

pub fn diff(ctx: &Ctx, from: &str, to: &str) -> Result<ExitCode, Error> {
    let repo = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&repo, ctx.out);
    let (a, b) = (repo.resolve(from)?, repo.resolve(to)?);
    let d = jellysnap::browse::diff(&repo, &a, &b)?;
    let dbs = jellysnap::browse::db_diff(&repo, &a, &b)?;
    ctx.out.json(
        json!({ "from": a.id.to_hex(), "to": b.id.to_hex(), "changes": d, "databases": dbs }),
    );
    if !ctx.out.json {
        for e in &d {
            let sz = match (e.size_before, e.size_after) {
                (Some(x), Some(y)) if x != y => {
                    format!("  ({} -> {})", render::size(x), render::size(y))
                }
                _ => String::new(),
            };
            ctx.out.data(&format!("{} {}{sz}", e.change, e.path));
        }
        let count = |c: char| d.iter().filter(|e| e.change == c).count();
        ctx.out.text(&format!(
            "{} added, {} removed, {} modified, {} metadata-only",
            count('+'),
            count('-'),
            count('M') + count('T'),
            count('m')
        ));
        for db in &dbs {
            ctx.out.data(&db_diff_text(db));
        }
    }
    Ok(ExitCode::Success)
}

/// A database's changes: migrations added or removed, then tables whose row count changed.
fn db_diff_text(db: &jellysnap::browse::DbDiff) -> String {
    let mut t = format!("database {}:", db.path);
    if let Some(why) = &db.not_compared {
        t.push_str(&format!(" changed; not compared ({why})"));
        return t;
    }
    if db.migrations_added.is_empty() && db.migrations_removed.is_empty() && db.tables.is_empty() {
        t.push_str(" changed content; same migrations and row counts");
    }
    for m in &db.migrations_added {
        t.push_str(&format!("\n  + migration {m}"));
    }
    for m in &db.migrations_removed {
        t.push_str(&format!("\n  - migration {m}"));
    }
    let n = |r: Option<u64>| r.map_or("-".to_string(), |n| n.to_string());
    for r in &db.tables {
        t.push_str(&format!(
            "\n  table {}: {} -> {} rows",
            r.table,
            n(r.rows_before),
            n(r.rows_after)
        ));
    }
    t
}

/// `dump`: the file's bytes on stdout, nothing else there (messages go to stderr). A
/// database is rebuilt in the system's temp dir first.
pub fn dump(ctx: &Ctx, snapshot: &str, path: &str) -> Result<ExitCode, Error> {
    let repo = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&repo, ctx.out);
    let snap = repo.resolve(snapshot)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = jellysnap::dump::dump(
        &repo,
        &snap,
        path,
        &std::env::temp_dir(),
        &mut out,
        std::path::Path::new("stdout"),
    );
    match r {
        Ok(_) => Ok(ExitCode::Success),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::BrokenPipe)
        }
        Err(e) => Err(e),
    }
}
