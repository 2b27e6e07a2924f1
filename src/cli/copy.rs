//! `copy`: snapshots into another repository, only what it lacks.

use serde_json::json;

use jellysnap::copy::{self, CopyOptions, CopyReport, Destination};
use jellysnap::progress::Progress;
use jellysnap::{Access, Error, Place, Repository};

use super::args::CopyArgs;
use super::exit::ExitCode;
use super::{paren_name, render, report_rebuild, Ctx};

pub fn copy(ctx: &Ctx, a: &CopyArgs) -> Result<ExitCode, Error> {
    let to = super::args::place(&a.to)?;
    copy_to(ctx, a, &to).map_err(|e| jellysnap::full::repository_full(e, &to, "copy"))
}

fn copy_to(ctx: &Ctx, a: &CopyArgs, to: &Place) -> Result<ExitCode, Error> {
    let opts = CopyOptions {
        snapshots: a.snapshots.clone(),
        dry_run: a.dry_run,
    };
    let out = ctx.out;
    let src = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&src, out);
    let (dst, created) = copy::open_destination(to, &src, a.init, a.dry_run)?;
    if created {
        // Also under -q: a new repository where one may have been expected is news.
        out.err(&format!(
            "created jellysnap repository at {} with the chunker parameters of {}",
            a.to.display(),
            ctx.repo_path.display()
        ));
    }
    if let Some(d) = &dst {
        report_rebuild(d, out);
    }
    let dest = match &dst {
        Some(d) => Destination::Repository(d),
        None => Destination::Absent,
    };
    let r = copy::copy(&src, dest, &opts, ctx.progress)?;
    ctx.progress.finish();
    // The exclusive lock an edit's deletes need: this run's handle on the destination
    // (its shared lock) goes first.
    drop(dst);
    let retired = match copy::retire_superseded(to, &r) {
        Ok(ids) => ids,
        Err(e) => {
            // Every snapshot is copied; the older records are hidden and stay findable.
            out.warn(&format!(
                "the older record(s) of {} edited snapshot(s) stay in {} (hidden) until the next edit or forget of them there: {e}",
                r.superseding.len(),
                a.to.display()
            ));
            Vec::new()
        }
    };
    out.json_with(|| {
        json!({
            "source": ctx.repo_path.to_string_lossy(),
            "destination": a.to.to_string_lossy(),
            "destination_created": created,
            "report": r,
            "superseded_removed": retired.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
        })
    });
    if r.chunking_differs {
        out.warn(&format!(
            "{} cuts data with other chunker parameters than {}: the copied snapshots are whole, but backups made there dedup less against them",
            a.to.display(),
            ctx.repo_path.display()
        ));
    }
    if a.dry_run {
        out.text_is_data();
    }
    out.text(&summary(&r, &a.to.display().to_string()));
    for f in &r.refused {
        // Also under -q: a snapshot the run was asked for is not in the destination.
        out.err(&format!("jellysnap: {}", f.reason));
    }
    Ok(exit_code(&r))
}

fn summary(r: &CopyReport, to: &str) -> String {
    if r.copied.is_empty() && r.refused.is_empty() {
        return format!(
            "nothing to copy: {to} already has {}",
            if r.already_present.is_empty() {
                "every snapshot".to_string()
            } else {
                format!("the {} snapshot(s) asked for", r.already_present.len())
            }
        );
    }
    let verb = if r.dry_run { "would copy" } else { "copied" };
    let mut t = format!("{verb} {} snapshot(s) to {to}", r.copied.len());
    for s in &r.copied {
        t.push_str(&format!(
            "\n  {}{}  {}",
            &s.id[..8.min(s.id.len())],
            paren_name(&s.name),
            render::time(s.time_ns)
        ));
    }
    if !r.already_present.is_empty() {
        t.push_str(&format!(
            "\n{} snapshot(s) already there",
            r.already_present.len()
        ));
    }
    if !r.refused.is_empty() {
        t.push_str(&format!("\n{} snapshot(s) not copied", r.refused.len()));
    }
    let packs = if r.dry_run {
        String::new()
    } else {
        format!(" in {} pack(s)", r.packs_written)
    };
    t.push_str(&format!(
        "\n{} {} chunk(s), {} stored{packs}; {} chunk(s) were already there",
        if r.dry_run { "would send" } else { "sent" },
        r.chunks_sent,
        render::size(r.bytes_sent),
        r.chunks_present
    ));
    if r.dry_run {
        t.push_str("\ndry run: nothing was written");
    }
    t
}

/// Success when every chosen snapshot is in the destination; otherwise the code of what
/// kept one out, damage first.
fn exit_code(r: &CopyReport) -> ExitCode {
    let codes: Vec<ExitCode> = r.refused.iter().map(|f| ExitCode::of(&f.error)).collect();
    if codes.contains(&ExitCode::Damaged) {
        ExitCode::Damaged
    } else {
        codes.first().copied().unwrap_or(ExitCode::Success)
    }
}
