//! `stats`: repository sizes, and what forgetting each given snapshot would free.

use serde_json::json;

use jellysnap::{stats, Access, Error, Repository};

use super::exit::ExitCode;
use super::{paren_name, render, report_rebuild, Ctx};

pub fn stats(ctx: &Ctx, snapshots: &[String]) -> Result<ExitCode, Error> {
    let repo = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&repo, ctx.out);
    let s = stats::repo_stats(&repo)?;
    let mut per = Vec::new();
    for q in snapshots {
        let snap = repo.resolve(q)?;
        per.push(stats::snapshot_stats(&repo, &snap)?);
    }
    ctx.out
        .json_with(|| json!({ "repository": s, "snapshots": per }));
    ctx.out.data(&format!(
        "snapshots     {}\nlogical size  {}\nstored size   {}\ndedup ratio   {:.1}x\npacks         {}\nchunks        {}",
        s.snapshots,
        render::size(s.logical_bytes),
        render::size(s.stored_bytes),
        s.dedup_ratio,
        s.packs,
        s.chunks
    ));
    for p in &per {
        ctx.out.data(&format!(
            "snapshot {}{}: {} in {} files; forgetting it alone frees {} ({} chunks)",
            &p.id[..8],
            paren_name(&p.name),
            render::size(p.logical_bytes),
            p.files,
            render::size(p.exclusive_bytes),
            p.exclusive_chunks
        ));
    }
    Ok(ExitCode::Success)
}
