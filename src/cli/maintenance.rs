//! forget, gc, check and stats: parse, call the engine, render.

use std::path::Path;

use serde_json::json;

use jellysnap::check::{self, ReadData};
use jellysnap::forget::{self, Policy};
use jellysnap::gc;
use jellysnap::progress::Progress;
use jellysnap::{stats, Access, Error, Repository};

use super::args::ForgetArgs;
use super::{render, report_rebuild, Out};

/// Exit code when check finds damage.
const EXIT_DAMAGED: i32 = 18;

pub fn forget(repo_path: &Path, a: &ForgetArgs, out: &Out) -> Result<i32, Error> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within_secs: a
            .keep_within
            .as_deref()
            .map(forget::parse_duration)
            .transpose()?,
        include_named: a.include_named,
    };
    if a.snapshots.is_empty() && policy.is_empty() {
        return Err(Error::InvalidOption(
            "forget needs snapshots to remove or a policy (--keep-last/-hourly/-daily/-weekly/-monthly/-yearly/-within); an empty policy would remove everything".into(),
        ));
    }
    if !a.snapshots.is_empty() && !policy.is_empty() {
        return Err(Error::InvalidOption(
            "give either snapshots to remove or a keep policy, not both".into(),
        ));
    }
    let repo = Repository::open(
        repo_path,
        if a.dry_run {
            Access::Read
        } else {
            Access::Exclusive
        },
    )?;
    report_rebuild(&repo, out);
    let (snaps, _) = repo.snapshots()?;
    let decisions = if a.snapshots.is_empty() {
        forget::decide(&snaps, &policy)
    } else {
        let mut remove = std::collections::HashSet::new();
        for q in &a.snapshots {
            remove.insert(jellysnap::forget::resolve_in(snaps.clone(), q)?.id);
        }
        let mut d: Vec<forget::Decision> = snaps
            .iter()
            .rev()
            .map(|s| {
                let gone = remove.contains(&s.id);
                forget::Decision {
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
        d.sort_by_key(|d| std::cmp::Reverse(d.time_ns));
        d
    };
    let to_remove: Vec<String> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.clone())
        .collect();
    let removed = if a.dry_run {
        0
    } else {
        forget::remove(&repo, &to_remove)?
    };
    out.json(json!({ "dry_run": a.dry_run, "decisions": decisions, "removed": removed }));
    if !out.json && !out.quiet {
        let rows: Vec<Vec<String>> = decisions
            .iter()
            .map(|d| {
                vec![
                    d.id[..8].to_string(),
                    d.name.clone().unwrap_or_default(),
                    render::time(d.time_ns),
                    if d.keep { "keep" } else { "remove" }.to_string(),
                    d.reasons.join(", "),
                ]
            })
            .collect();
        print!(
            "{}",
            render::table(&["ID", "NAME", "TIME (UTC)", "ACTION", "REASON"], &rows)
        );
        if a.dry_run {
            println!(
                "dry run: would remove {} of {} snapshot(s)",
                to_remove.len(),
                decisions.len()
            );
        } else {
            println!("removed {removed} snapshot(s); run `jellysnap gc` to reclaim their space");
        }
    }
    Ok(0)
}

pub fn gc(
    repo_path: &Path,
    dry_run: bool,
    max_unused: f64,
    out: &Out,
    progress: &dyn Progress,
) -> Result<i32, Error> {
    let repo = Repository::open(repo_path, Access::Exclusive)?;
    report_rebuild(&repo, out);
    let plan = gc::plan(&repo, max_unused, progress)?;
    let report = if dry_run {
        None
    } else {
        Some(gc::sweep(&repo, &plan, progress)?)
    };
    progress.finish();
    out.json(json!({ "dry_run": dry_run, "plan": plan, "report": report }));
    if plan.resumes_interrupted {
        out.text("a previous gc was interrupted; this run finishes its work");
    }
    out.text(&format!(
        "{} snapshot(s), {} live chunk(s); {} pack(s), {}\n{} {} unused pack(s), repack {} pack(s) (copying {}), {} {}",
        plan.snapshots,
        plan.live_chunks,
        plan.packs,
        render::size(plan.repository_bytes),
        if dry_run { "would delete" } else { "deleted" },
        plan.delete.len(),
        plan.repack.len(),
        render::size(plan.bytes_repacked),
        if dry_run { "would free" } else { "freed" },
        render::size(plan.bytes_freed),
    ));
    if dry_run {
        out.text("dry run: nothing was changed");
    }
    Ok(0)
}

pub fn check(
    repo_path: &Path,
    mode: ReadData,
    out: &Out,
    progress: &dyn Progress,
) -> Result<i32, Error> {
    let repo = Repository::open(repo_path, Access::Read)?;
    report_rebuild(&repo, out);
    let r = check::check(&repo, mode, progress)?;
    out.json(json!(r));
    if !out.json && !out.quiet {
        println!(
            "checked {} snapshot(s), {} tree(s), {} chunk list(s), {} data chunk(s), {} pack(s){}",
            r.snapshots,
            r.trees,
            r.list_chunks,
            r.data_chunks,
            r.packs,
            match (&r.subset, r.packs_read) {
                (Some(s), n) => format!(
                    "; read slice {s} of the packs ({n} pack(s), {})",
                    render::size(r.bytes_read)
                ),
                (None, 0) => String::new(),
                (None, n) => format!("; read {n} pack(s) ({})", render::size(r.bytes_read)),
            }
        );
        if r.databases_rebuilt > 0 {
            println!(
                "rebuilt {} distinct database dump(s) and compared them with what their backups verified",
                r.databases_rebuilt
            );
        }
    }
    if r.ok() {
        out.text("no problems found");
        return Ok(0);
    }
    for p in &r.problems {
        let chunks = match p.chunks.len() {
            0 => String::new(),
            n if n <= 5 => format!(
                " chunks {}",
                p.chunks
                    .iter()
                    .map(|c| &c[..16])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            n => format!(" {n} chunks (first {})", &p.chunks[0][..16]),
        };
        if p.kind == "database" {
            eprintln!("unrestorable database: {}", p.detail);
            continue;
        }
        eprintln!(
            "damaged {}{}{}: {}",
            p.kind,
            p.pack
                .as_ref()
                .map(|x| format!(" pack {x}"))
                .unwrap_or_default(),
            chunks,
            p.detail
        );
    }
    for a in &r.affected {
        eprintln!(
            "snapshot {}{} is affected: {} path(s): {}",
            &a.snapshot[..8],
            a.name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            a.paths.len(),
            a.paths
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!("jellysnap: check found {} problem(s)", r.problems.len());
    Ok(EXIT_DAMAGED)
}

pub fn stats(repo_path: &Path, snapshots: &[String], out: &Out) -> Result<i32, Error> {
    let repo = Repository::open(repo_path, Access::Read)?;
    report_rebuild(&repo, out);
    let s = stats::repo_stats(&repo)?;
    let mut per = Vec::new();
    for q in snapshots {
        let snap = repo.resolve(q)?;
        per.push(stats::snapshot_stats(&repo, &snap)?);
    }
    out.json(json!({ "repository": s, "snapshots": per }));
    out.text(&format!(
        "snapshots     {}\nlogical size  {}\nstored size   {}\ndedup ratio   {:.1}x\npacks         {}\nchunks        {}",
        s.snapshots,
        render::size(s.logical_bytes),
        render::size(s.stored_bytes),
        s.dedup_ratio,
        s.packs,
        s.chunks
    ));
    for p in &per {
        out.text(&format!(
            "snapshot {}{}: {} in {} files; forgetting it alone frees {} ({} chunks)",
            &p.id[..8],
            p.name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            render::size(p.logical_bytes),
            p.files,
            render::size(p.exclusive_bytes),
            p.exclusive_chunks
        ));
    }
    Ok(0)
}
