//! `init` and `backup`.

use std::path::Path;

use serde_json::json;

use jellysnap::backup::{self, BackupOptions, BackupOutcome};
use jellysnap::{Component, Components, Error, Repository, SnapshotName, SourceOptions};

use super::args::BackupArgs;
use super::exit::ExitCode;
use super::{paren_name, render, report_rebuild, Ctx, Out};

pub fn init(ctx: &Ctx) -> Result<ExitCode, Error> {
    let cfg = Repository::init(&ctx.place)?;
    ctx.out.text(&format!(
        "created jellysnap repository at {}",
        ctx.repo_path.display()
    ));
    ctx.out
        .json(json!({ "repository": ctx.repo_path.to_string_lossy(), "repo_id": cfg.repo_id }));
    Ok(ExitCode::Success)
}

/// The backup's options from its arguments, validated.
fn options(ctx: &Ctx, a: &BackupArgs) -> Result<BackupOptions, Error> {
    let components = match &a.components {
        Some(list) => Components::parse(list)?.into_set(),
        None => Component::ALL.into_iter().collect(),
    };
    let (data_dir, config_dir, metadata_dir) = super::config_file::install_dirs(
        ctx.config,
        a.data_dir.as_deref(),
        a.config_dir.as_deref(),
        a.metadata_dir.as_deref(),
    )?;
    Ok(BackupOptions {
        source: SourceOptions {
            data_dir,
            config_dir,
            metadata_dir,
            components,
        },
        name: a
            .name
            .as_deref()
            .map(SnapshotName::new)
            .transpose()?
            .map(SnapshotName::into_string),
        tags: a.tags.clone(),
        // Only the default location may be created unasked: any other path may be a
        // backup disk that is not mounted.
        create_repository: a.init || ctx.default_repo,
    })
}

pub fn backup(ctx: &Ctx, a: &BackupArgs) -> Result<ExitCode, Error> {
    let opts = options(ctx, a)?;
    let (repo, created) = backup::open_repository(&ctx.place, &opts, ctx.progress)?;
    if created {
        // Also under -q: a new repository where one was expected is news.
        ctx.out.err(&format!(
            "created jellysnap repository at {}",
            ctx.repo_path.display()
        ));
    }
    report_rebuild(&repo, ctx.out);
    let o = backup::backup(&repo, &opts, ctx.progress)?;
    print_backup(ctx.out, &ctx.repo_path, created, &o);
    Ok(if o.is_partial() {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}

fn print_backup(out: &Out, repo_path: &Path, created: bool, o: &BackupOutcome) {
    let r = &o.record;
    out.json(json!({
        "id": o.id.to_hex(),
        "repository": repo_path.to_string_lossy(),
        "repository_created": created,
        "parent": o.parent.map(|p| p.to_hex()),
        "partial": o.is_partial(),
        "notices": o.notices,
        "repository_inside_data": o.repository_inside_data.as_ref().map(|p| p.to_string_lossy()),
        "snapshot": r,
    }));
    out.text(&summary_text(o));
    let s = &r.summary;
    if !s.changed_during_backup.is_empty() {
        out.err(&format!(
            "jellysnap: {} file(s) changed while being read; their last read was stored",
            s.changed_during_backup.len()
        ));
    }
    if !o.notices.is_empty() {
        // Also under -q: each is about data a restore would not give back as it is.
        out.err(&format!("jellysnap: {} notice(s):", o.notices.len()));
        for n in &o.notices {
            if n.path.is_empty() {
                out.err(&format!("  {}", n.detail));
            } else {
                out.err(&format!("  {}: {}", n.path, n.detail));
            }
        }
    }
    if !s.errors.is_empty() {
        out.err(&format!(
            "jellysnap: partial snapshot: {} path(s) could not be read or found (exit code {}):",
            s.errors.len(),
            ExitCode::Partial.code()
        ));
        for e in &s.errors {
            out.err(&format!("  {e}"));
        }
    }
}

/// The text summary of a saved snapshot.
fn summary_text(o: &BackupOutcome) -> String {
    let r = &o.record;
    let s = &r.summary;
    let mut t = format!(
        "snapshot {}{} saved\n  Jellyfin {}, layout {}, components {}\n",
        o.id.short(),
        paren_name(&r.name),
        match r.jellyfin_version {
            Some(_) => super::render::jellyfin_version(r),
            None => "unknown".into(),
        },
        r.layout,
        r.components
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(","),
    );
    for root in &r.roots {
        t.push_str(&format!("  root {}: {}\n", root.label, root.path));
    }
    for d in &r.databases {
        let how = match (&d.capture, &d.reason) {
            (jellysnap::DbCapture::Logical, _) => match d.reused {
                Some(jellysnap::DbReuse::Capture) => format!(
                    "unchanged since the parent snapshot: its logical dump and proof reused (SQLite {})",
                    d.sqlite_version
                ),
                Some(jellysnap::DbReuse::Proof) => format!(
                    "logical dump, equal to the parent's: its proof reused (SQLite {})",
                    d.sqlite_version
                ),
                None => format!(
                    "logical dump, proven to rebuild exactly (SQLite {})",
                    d.sqlite_version
                ),
            },
            (_, Some(why)) => format!("physical copy, because {why}"),
            _ => "physical copy".to_string(),
        };
        t.push_str(&format!("  database {}/{}: {how}\n", d.root, d.rel));
    }
    let ratio = if s.new_stored_bytes > 0 {
        s.logical_bytes as f64 / s.new_stored_bytes as f64
    } else {
        f64::INFINITY
    };
    t.push_str(&format!(
        "  files {} ({} unchanged, {} read), dirs {}\n  logical {}, read {}, database {}\n  added {} stored ({} raw, {} new chunks), ratio {}\n  took {:.1}s",
        s.files,
        s.files_reused,
        s.files_read,
        s.dirs,
        render::size(s.logical_bytes),
        render::size(s.bytes_read),
        render::size(s.db_bytes),
        render::size(s.new_stored_bytes),
        render::size(s.new_raw_bytes),
        s.new_chunks,
        if ratio.is_finite() { format!("{ratio:.1}x") } else { "no new data".into() },
        s.duration_ms as f64 / 1000.0
    ));
    t
}
