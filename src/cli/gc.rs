//! `gc`: plan, then sweep (or only the plan with `--dry-run`). A repository hosts share
//! is swept in two phases: this says what was marked, what was deleted, and when the
//! marked packs become deletable.

use serde_json::json;

use jellysnap::gc::{self, MaxUnused};
use jellysnap::progress::Progress;
use jellysnap::{Access, Error, Repository};

use super::args::GcArgs;
use super::exit::ExitCode;
use super::{render, report_rebuild, Ctx};

pub fn gc(ctx: &Ctx, a: &GcArgs) -> Result<ExitCode, Error> {
    let max_unused = MaxUnused::new(a.max_unused)?;
    let (out, progress) = (ctx.out, ctx.progress);
    if a.dry_run {
        out.text_is_data();
    }
    let repo = Repository::open_as(&ctx.place, Access::Exclusive, "gc")?;
    report_rebuild(&repo, out);
    let grace = match a.grace.as_deref() {
        None => gc::DEFAULT_GRACE_SECS,
        Some("0") => 0,
        Some(g) => i64::try_from(jellysnap::forget::parse_duration(g)?).unwrap_or(i64::MAX),
    };
    let plan = gc::plan_with_grace(&repo, max_unused, grace, progress)?;
    let report = if a.dry_run {
        None
    } else {
        Some(gc::sweep(&repo, &plan, progress)?)
    };
    progress.finish();
    let mut plan_json = json!(plan);
    // Its times are Unix seconds: each gets its RFC 3339 twin, as `_ns` fields do.
    if let Some(p) = plan_json.get_mut("pending").and_then(|p| p.as_object_mut()) {
        for (secs, twin) in [("marked_at", "marked"), ("deletable_at", "deletable")] {
            if let Some(t) = p.get(secs).and_then(|v| v.as_i64()) {
                let ns = t.saturating_mul(1_000_000_000);
                p.insert(twin.into(), json!(jellysnap::timefmt::rfc3339(ns)));
            }
        }
    }
    out.json_with(|| json!({ "dry_run": a.dry_run, "plan": plan_json, "report": report }));
    if plan.resumes_interrupted {
        out.text("a previous gc was interrupted; this run finishes its work");
    }
    let dry = a.dry_run;
    out.text(&format!(
        "{} snapshot(s), {} live chunk(s); {} pack(s), {}",
        plan.snapshots,
        plan.live_chunks,
        plan.packs,
        render::size(plan.repository_bytes),
    ));
    if plan.two_phase {
        two_phase_text(ctx, &plan, report.as_ref());
    } else {
        out.text(&format!(
            "{} {} unused pack(s), repack {} pack(s) (copying {}), {} {}",
            if dry { "would delete" } else { "deleted" },
            plan.delete.len(),
            plan.repack.len(),
            render::size(plan.bytes_repacked),
            if dry { "would free" } else { "freed" },
            render::size(plan.bytes_freed),
        ));
    }
    if plan.small_packs_merged > 0 {
        out.text(&format!(
            "{} of the packs repacked are small ones (sealed part-filled by backups), merged into full-size packs",
            plan.small_packs_merged
        ));
    }
    if dry {
        out.text("dry run: nothing was changed");
    }
    Ok(ExitCode::Success)
}

/// What a two-phase gc did: the earlier mark it deleted (or waits for), and its own.
fn two_phase_text(ctx: &Ctx, plan: &gc::GcPlan, report: Option<&gc::GcReport>) {
    let out = ctx.out;
    let at = |secs: i64| render::time(secs.saturating_mul(1_000_000_000));
    if !plan.conditional_writes {
        out.text(
            "note: this store cannot create an object only if it is absent, so leases cannot keep \
             two hosts from starting at the same moment; the grace period before marked packs are \
             deleted is what protects a backup running elsewhere",
        );
    }
    match (&plan.pending, report) {
        (Some(p), _) if !p.due => out.text(&format!(
            "{} pack(s) marked at {} UTC become deletable at {} UTC; nothing else was done: run gc again after that",
            p.packs,
            at(p.marked_at),
            at(p.deletable_at),
        )),
        (Some(p), Some(r)) => out.text(&format!(
            "deleted {} of the {} pack(s) marked at {} UTC, freed {}{}",
            r.packs_deleted,
            p.packs,
            at(p.marked_at),
            render::size(r.bytes_freed),
            if r.marked_kept > 0 {
                format!("; kept {} that snapshots written since use", r.marked_kept)
            } else {
                String::new()
            },
        )),
        (Some(p), None) => out.text(&format!(
            "{} pack(s) marked at {} UTC are deletable now: gc would delete those still unused",
            p.packs,
            at(p.marked_at),
        )),
        (None, _) => {}
    }
    match report {
        Some(r) if r.packs_marked > 0 => out.text(&format!(
            "repacked {} pack(s); marked {} pack(s) ({}) for deletion: they become deletable at {} UTC, \
             when a later gc deletes those still unused",
            r.packs_repacked,
            r.packs_marked,
            render::size(r.bytes_marked),
            r.marked_deletable_at.map(at).unwrap_or_default(),
        )),
        Some(_) => {}
        None if plan.pending.as_ref().is_none_or(|p| p.due) => out.text(&format!(
            "would mark {} unused pack(s) and repack {} pack(s) (copying {}); marked packs are deleted \
             by a gc at least {} minute(s) later",
            plan.delete.len(),
            plan.repack.len(),
            render::size(plan.bytes_repacked),
            plan.grace_secs / 60,
        )),
        None => {}
    }
    if let Some(r) = report.filter(|r| r.stale_leases_removed > 0) {
        out.text(&format!(
            "removed {} lease(s) that expired more than a day ago",
            r.stale_leases_removed
        ));
    }
}
