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
    ctx.out.json_with(
        || json!({ "repository": ctx.repo_path.to_string_lossy(), "repo_id": cfg.repo_id }),
    );
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
        tags: jellysnap::validate_tags(&a.tags)?,
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
    if ctx.verbose > 0 && ctx.out.human() {
        list_changes(ctx, &repo, &o)?;
    }
    print_backup(ctx.out, &ctx.repo_path, created, &o);
    Ok(if o.is_partial() {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}

/// `-v`: the files the snapshot added (`A`), changed (`M`) or removed (`D`) against its
/// parent (every file `A` without one); `-vv` also the unchanged (`U`) and those whose
/// metadata alone changed (`m`): every file the snapshot holds. Read from the snapshot's
/// trees after the backup, only the subtrees that differ from the parent's for `-v`.
fn list_changes(ctx: &Ctx, repo: &Repository, o: &BackupOutcome) -> Result<(), Error> {
    let snap = jellysnap::Snapshot::new(o.id, o.record.clone());
    let changes = match o.parent {
        Some(p) => {
            let parent = repo.resolve(&p.to_hex())?;
            jellysnap::browse::diff(repo, &parent, &snap)?
        }
        None => Vec::new(),
    };
    let status = |c: char| match c {
        '+' => 'A',
        '-' => 'D',
        'm' => 'm',
        _ => 'M',
    };
    let mut lines: Vec<(String, char)> = Vec::new();
    if o.parent.is_some() && ctx.verbose < 2 {
        lines.extend(
            changes
                .iter()
                .filter(|c| c.change != 'm')
                .map(|c| (c.path.clone(), status(c.change))),
        );
    } else {
        let by_path: std::collections::HashMap<&str, char> = changes
            .iter()
            .map(|c| (c.path.as_str(), status(c.change)))
            .collect();
        let none = o.parent.is_none();
        for e in jellysnap::browse::ls(repo, &snap, "", true)? {
            let st = match by_path.get(e.path.as_str()) {
                Some(s) => *s,
                None if none => 'A',
                None => 'U',
            };
            lines.push((e.path, st));
        }
        lines.extend(
            changes
                .iter()
                .filter(|c| c.change == '-')
                .map(|c| (c.path.clone(), 'D')),
        );
        lines.sort();
    }
    for (path, st) in lines {
        ctx.out.text(&format!("{st} {path}"));
    }
    Ok(())
}

fn print_backup(out: &Out, repo_path: &Path, created: bool, o: &BackupOutcome) {
    let r = &o.record;
    out.json_with(|| json!({
        "id": o.id.to_hex(),
        "repository": repo_path.to_string_lossy(),
        "repository_created": created,
        "parent": o.parent.map(|p| p.to_hex()),
        "partial": o.is_partial(),
        "notices": o.notices,
        "repository_inside_data": o.repository_inside_data.as_ref().map(|p| p.to_string_lossy()),
        "proofs": o.proofs,
        "snapshot": render::record_json(r),
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
                None => {
                    let name = format!("{}/{}", d.root, d.rel);
                    let updated = o
                        .proofs
                        .iter()
                        .any(|p| p.database == name && p.rebuild == "updated");
                    format!(
                        "logical dump, proven to rebuild exactly (SQLite {}{})",
                        d.sqlite_version,
                        match updated {
                            true => "; the last proof's rebuild brought up to date",
                            false => "",
                        }
                    )
                }
            },
            (_, Some(why)) => format!("physical copy, because {why}"),
            _ => "physical copy".to_string(),
        };
        let size = d
            .size
            .map(|n| format!(" ({})", render::size(n)))
            .unwrap_or_default();
        t.push_str(&format!("  database {}/{}{size}: {how}\n", d.root, d.rel));
    }
    let dbs = r.databases.len();
    t.push_str(&format!(
        "  files {} ({} unchanged, {} read, {} database{}), dirs {}\n",
        s.files,
        s.files_reused,
        s.files_read,
        dbs,
        if dbs == 1 { "" } else { "s" },
        s.dirs,
    ));
    t.push_str(&format!(
        "  size {} (databases at their stored size), read {} of files, {} of databases\n",
        render::size(s.logical_bytes),
        render::size(s.bytes_read),
        render::size(s.db_bytes),
    ));
    // A ratio only of what was stored: one of all the data against nothing added
    // means nothing.
    if s.new_chunks == 0 {
        t.push_str("  added nothing to the repository (all data was there already)\n");
    } else {
        t.push_str(&format!(
            "  added {} to the repository: {} new chunk(s), {} before compression ({:.1}x)\n",
            render::size(s.new_stored_bytes),
            s.new_chunks,
            render::size(s.new_raw_bytes),
            s.new_raw_bytes as f64 / s.new_stored_bytes.max(1) as f64,
        ));
    }
    t.push_str(&format!("  took {:.1}s", s.duration_ms as f64 / 1000.0));
    t
}
