//! `gc`: plan, then sweep (or only the plan with `--dry-run`).

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
    let repo = Repository::open(&ctx.place, Access::Exclusive)?;
    report_rebuild(&repo, out);
    let plan = gc::plan(&repo, max_unused, progress)?;
    let report = if a.dry_run {
        None
    } else {
        Some(gc::sweep(&repo, &plan, progress)?)
    };
    progress.finish();
    out.json(json!({ "dry_run": a.dry_run, "plan": plan, "report": report }));
    if plan.resumes_interrupted {
        out.text("a previous gc was interrupted; this run finishes its work");
    }
    let dry = a.dry_run;
    out.text(&format!(
        "{} snapshot(s), {} live chunk(s); {} pack(s), {}\n{} {} unused pack(s), repack {} pack(s) (copying {}), {} {}",
        plan.snapshots,
        plan.live_chunks,
        plan.packs,
        render::size(plan.repository_bytes),
        if dry { "would delete" } else { "deleted" },
        plan.delete.len(),
        plan.repack.len(),
        render::size(plan.bytes_repacked),
        if dry { "would free" } else { "freed" },
        render::size(plan.bytes_freed),
    ));
    if dry {
        out.text("dry run: nothing was changed");
    }
    Ok(ExitCode::Success)
}
