//! `restore`: the plan (what `--dry-run` prints), then its execution.

use std::path::{Path, PathBuf};

use serde_json::json;

use jellysnap::restore::{self, Action, Destination, RestoreOptions, RestorePlan};
use jellysnap::{Access, Components, DbCapture, Error, Repository, Snapshot};

use super::args::RestoreArgs;
use super::exit::ExitCode;
use super::{paren_name, render, report_rebuild, Ctx};

/// The restore's options from its arguments, validated.
fn options(ctx: &Ctx, a: &RestoreArgs) -> Result<RestoreOptions, Error> {
    Ok(RestoreOptions {
        destination: match &a.target {
            Some(t) => Destination::Target(absolute(t)),
            None => Destination::InPlace,
        },
        components: a
            .components
            .as_deref()
            .map(Components::parse)
            .transpose()?
            .map(Components::into_set),
        force: a.force,
        // Never rolled back, wherever they sit: the repository read and its cache.
        protect: vec![ctx.repo_path.clone(), super::args::cache_dir()],
        verify: a.verify,
        server_version: a.server_version.clone(),
        include: a.include.clone(),
        exclude: a.exclude.clone(),
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub fn restore(ctx: &Ctx, a: &RestoreArgs) -> Result<ExitCode, Error> {
    let repo = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&repo, ctx.out);
    let snap = repo.resolve(&a.snapshot)?;
    let opts = options(ctx, a)?;
    let plan = restore::plan(&repo, &snap, &opts)?;
    // The plan is what a dry run exists to print: shown under -q too.
    let plan_shown = plan_text(&snap, &plan, a.dry_run, ctx.verbose > 0);
    if a.dry_run {
        ctx.out.data(&plan_shown);
    } else {
        ctx.out.text(&plan_shown);
    }
    if let Some(w) = plan
        .rollback
        .as_ref()
        .and_then(super::rollback::installed_warning)
    {
        ctx.out.warn(&w);
    }
    if a.dry_run {
        ctx.out
            .json_with(|| json!({ "dry_run": true, "plan": plan }));
        return Ok(ExitCode::Success);
    }
    let report = restore::execute(&repo, &plan, ctx.progress)?;
    ctx.out
        .json_with(|| json!({ "dry_run": false, "plan": plan, "report": report }));
    ctx.out.text(&format!(
        "restored {} file(s), {} written to disk, {} unchanged, {} removed",
        report.files_written,
        render::size(report.bytes_written),
        report.files_kept,
        report.deleted
    ));
    if !report.errors.is_empty() {
        ctx.out.err(&format!(
            "jellysnap: {} file(s) could not be restored:",
            report.errors.len()
        ));
        for e in &report.errors {
            ctx.out.err(&format!("  {e}"));
        }
        return Ok(ExitCode::Partial);
    }
    Ok(ExitCode::Success)
}

/// The plan as text: the roots and counts, the database step (always shown: it goes
/// first, and all or nothing), and with `--dry-run` or `-v` every action.
fn plan_text(snap: &Snapshot, plan: &RestorePlan, dry_run: bool, verbose: bool) -> String {
    let mut t = format!(
        "restore plan for snapshot {}{} (components {}):\n",
        snap.id.short(),
        paren_name(&snap.record.name),
        plan.components
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    for m in &plan.roots {
        t.push_str(&format!(
            "  {} ({}) -> {}\n",
            m.label,
            m.from,
            m.to.display()
        ));
    }
    t.push_str(&format!(
        "  write {} file(s) ({} from the repository), keep {} unchanged, delete {}",
        plan.write_files,
        render::size(plan.write_bytes),
        plan.keep_files,
        plan.delete_paths
    ));
    if plan.not_captured > 0 {
        t.push_str(&format!(
            ", leave {} path(s) as they are (not captured by the backup)",
            plan.not_captured
        ));
    }
    for p in &plan.protected {
        t.push_str(&format!(
            "\n  leave {p} alone: it is jellysnap's repository (or its cache), inside the restored data"
        ));
    }
    if !plan.unfinished_restore.is_empty() {
        t.push_str(&format!(
            "\n  an earlier in-place restore ({}) did not finish here: files whose size and mtime \
             match are compared by content",
            plan.unfinished_restore
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(",")
        ));
    } else if plan.content_compared && plan.keep_files > 0 {
        t.push_str("\n  files whose size and mtime match were compared by content (--verify)");
    }
    for a in &plan.actions {
        if let Some(line) = database_line(a) {
            t.push_str(&line);
        }
    }
    t.push_str(&super::rollback::plan_lines(plan, dry_run));
    if dry_run || verbose {
        for line in plan.actions.iter().filter_map(|a| action_line(a, verbose)) {
            t.push('\n');
            t.push_str(&line);
        }
    }
    if dry_run {
        t.push_str("\ndry run: nothing was changed");
    }
    t
}

/// The line of a database action (with its leading newline), or `None`.
fn database_line(a: &Action) -> Option<String> {
    let Action::Database {
        path,
        size,
        capture,
        verified_at_backup,
        sqlite_version,
        ..
    } = a
    else {
        return None;
    };
    let how = match (capture, verified_at_backup) {
        (DbCapture::Logical, true) => format!(
            "rebuilt from its logical dump and checked against what the backup verified{}",
            sqlite_version
                .as_ref()
                .map(|v| format!(" (SQLite {v})"))
                .unwrap_or_default()
        ),
        (DbCapture::Logical, false) => {
            "rebuilt from its logical dump (an older snapshot: not verified at backup)".to_string()
        }
        _ => "written from its physical copy (exact by construction)".to_string(),
    };
    Some(format!(
        "\n  database {} ({}): {how}; restored first, before anything else changes",
        path.display(),
        render::size(*size)
    ))
}

/// The line of one file action; databases are shown apart, kept files only with `-v`.
fn action_line(a: &Action, verbose: bool) -> Option<String> {
    Some(match a {
        Action::Database { .. } => return None,
        Action::Mkdir { path } => format!("  mkdir   {}", path.display()),
        Action::Write { path, size, .. } => {
            format!("  write   {} ({})", path.display(), render::size(*size))
        }
        Action::Symlink { path, .. } => format!("  symlink {}", path.display()),
        Action::Keep { path, .. } if verbose => format!("  keep    {}", path.display()),
        Action::Keep { .. } => return None,
        Action::Delete { path } => format!("  delete  {}", path.display()),
        Action::RemoveSideFile { path } => {
            format!("  delete  {} (stale database side file)", path.display())
        }
        Action::NotCaptured { path } => {
            format!("  kept    {} (not captured by the backup)", path.display())
        }
        Action::Protected { path } => {
            format!(
                "  kept    {} (jellysnap's repository or cache)",
                path.display()
            )
        }
    })
}
