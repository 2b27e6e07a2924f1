//! `snapshots`, `ls` and `diff`.

use serde_json::json;

use jellysnap::{Access, Error, Repository, Snapshot, SnapshotRecord};

use super::exit::ExitCode;
use super::{render, report_rebuild, Ctx};

pub fn snapshots(ctx: &Ctx) -> Result<ExitCode, Error> {
    let repo = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&repo, ctx.out);
    let (snaps, bad) = repo.snapshots()?;
    for e in &bad {
        ctx.out.warn(&e.to_string());
    }
    ctx.out
        .json(json!(snaps.iter().map(snapshot_json).collect::<Vec<_>>()));
    if ctx.out.human() {
        let rows: Vec<Vec<String>> = snaps.iter().map(snapshot_row).collect();
        let header = [
            "ID",
            "NAME",
            "TIME (UTC)",
            "JELLYFIN",
            "BY",
            "COMPONENTS (+db,config)",
            "DATABASE",
            "FILES",
            "SIZE",
            "ADDED",
        ];
        ctx.out.text(&format!(
            "{}{} snapshot(s)",
            render::table(&header, &rows),
            snaps.len()
        ));
    }
    Ok(if bad.is_empty() {
        ExitCode::Success
    } else if bad.iter().all(|e| matches!(e, Error::NewerFormat { .. })) {
        ExitCode::Version
    } else {
        ExitCode::Damaged
    })
}

fn snapshot_row(s: &Snapshot) -> Vec<String> {
    let r = &s.record;
    vec![
        s.id.short(),
        r.name.clone().unwrap_or_default(),
        render::time(r.time_ns),
        render::jellyfin_version(r),
        render::hook(r).unwrap_or("-").to_string(),
        r.components
            .iter()
            .filter(|c| !c.is_mandatory())
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(","),
        db_capture(r),
        r.summary.files.to_string(),
        render::size(r.summary.logical_bytes),
        render::size(r.summary.new_stored_bytes),
    ]
}

/// How a snapshot's databases were captured, for the listing: `logical` (proven at
/// backup), `physical`, or `-` for records from before captures were recorded.
fn db_capture(r: &SnapshotRecord) -> String {
    let mut kinds: Vec<&str> = r.databases.iter().map(|d| d.capture.name()).collect();
    kinds.dedup();
    if kinds.is_empty() {
        "-".into()
    } else {
        kinds.join(",")
    }
}

fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(&s.record).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(s.id.to_hex()));
        o.insert("time".into(), json!(render::time(s.record.time_ns)));
        o.insert("hook".into(), json!(render::hook(&s.record)));
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
    ctx.out.json(json!(entries));
    if ctx.out.human() {
        for e in &entries {
            ctx.out.text(&format!(
                "{} {:04o} {:>10} {}  {}",
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
    ctx.out
        .json(json!({ "from": a.id.to_hex(), "to": b.id.to_hex(), "changes": d }));
    if ctx.out.human() {
        for e in &d {
            let sz = match (e.size_before, e.size_after) {
                (Some(x), Some(y)) if x != y => {
                    format!("  ({} -> {})", render::size(x), render::size(y))
                }
                _ => String::new(),
            };
            ctx.out.text(&format!("{} {}{sz}", e.change, e.path));
        }
        let count = |c: char| d.iter().filter(|e| e.change == c).count();
        ctx.out.text(&format!(
            "{} added, {} removed, {} modified, {} metadata-only",
            count('+'),
            count('-'),
            count('M') + count('T'),
            count('m')
        ));
    }
    Ok(ExitCode::Success)
}
