//! The command line: parse, call the engine, render the result (text or `--json`).
//! The only part of jellysnap that talks to the terminal.

mod args;
mod maintenance;
mod progress;
mod render;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use serde_json::json;

use jellysnap::backup::{self, BackupOptions};
use jellysnap::restore::{self, Destination, RestoreOptions};
use jellysnap::SourceOptions;
use jellysnap::{Access, Error, Repository};
use jellysnap::{Component, Snapshot};

use args::{Cli, Command, RepairWhat};
use progress::TermProgress;

/// Exit code of a backup that completed but could not read some files, or a restore that
/// could not restore some files.
pub const EXIT_PARTIAL: i32 = 3;

pub(crate) struct Out {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
}

impl Out {
    pub(crate) fn text(&self, s: &str) {
        if !self.json && !self.quiet {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{s}");
        }
    }
    pub(crate) fn json(&self, v: serde_json::Value) {
        if self.json {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(
                o,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
        }
    }
}

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    match dispatch(&cli, &out) {
        Ok(code) => code,
        Err(e) => {
            if cli.json {
                out.json(json!({ "error": e.to_string(), "exit_code": e.exit_code() }));
            }
            let mut msg = format!("jellysnap: error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!("\n  caused by: {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            e.exit_code()
        }
    }
}

fn dispatch(cli: &Cli, out: &Out) -> Result<i32, Error> {
    let repo_path = cli.repo.clone().unwrap_or_else(args::default_repo);
    let progress = TermProgress::new(cli.quiet, cli.json, cli.verbose > 0);
    match &cli.command {
        Command::Init => {
            let cfg = Repository::init(&repo_path)?;
            out.text(&format!(
                "created jellysnap repository at {}",
                repo_path.display()
            ));
            out.json(json!({ "repository": repo_path.to_string_lossy(), "repo_id": cfg.repo_id }));
            Ok(0)
        }
        Command::Backup(a) => {
            let components = args::parse_components(&a.components)?
                .unwrap_or_else(|| Component::ALL.into_iter().collect());
            let opts = BackupOptions {
                source: SourceOptions {
                    data_dir: a.data_dir.clone(),
                    config_dir: a.config_dir.clone(),
                    metadata_dir: a.metadata_dir.clone(),
                    components,
                },
                name: a.name.clone(),
                tags: a.tags.clone(),
                // Only the default location may be created unasked: any other path may
                // be a backup disk that is not mounted.
                create_repository: a.init || repo_path == args::default_repo(),
            };
            let (repo, created) = backup::open_repository(&repo_path, &opts)?;
            if created {
                // Also under -q: a new repository where one was expected is news.
                eprintln!("created jellysnap repository at {}", repo_path.display());
            }
            report_rebuild(&repo, out);
            let o = backup::backup(&repo, &opts, &progress)?;
            print_backup(out, &repo_path, created, &o);
            Ok(if o.is_partial() { EXIT_PARTIAL } else { 0 })
        }
        Command::Snapshots => {
            let repo = Repository::open(&repo_path, Access::Read)?;
            let (snaps, bad) = repo.snapshots()?;
            for e in &bad {
                progress_warn(out, &e.to_string());
            }
            if out.json {
                out.json(json!(snaps.iter().map(snapshot_json).collect::<Vec<_>>()));
            } else if !out.quiet {
                let rows: Vec<Vec<String>> = snaps
                    .iter()
                    .map(|s| {
                        let r = &s.record;
                        vec![
                            s.id.short(),
                            r.name.clone().unwrap_or_default(),
                            render::time(r.time_ns),
                            r.jellyfin_version.clone().unwrap_or_else(|| "?".into()),
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
                    })
                    .collect();
                print!(
                    "{}",
                    render::table(
                        &[
                            "ID",
                            "NAME",
                            "TIME (UTC)",
                            "JELLYFIN",
                            "COMPONENTS (+db,config)",
                            "DATABASE",
                            "FILES",
                            "SIZE",
                            "ADDED"
                        ],
                        &rows
                    )
                );
                println!("{} snapshot(s)", snaps.len());
            }
            Ok(if bad.is_empty() { 0 } else { 18 })
        }
        Command::Ls {
            snapshot,
            path,
            recursive,
        } => {
            let repo = Repository::open(&repo_path, Access::Read)?;
            let snap = repo.resolve(snapshot)?;
            let entries =
                jellysnap::browse::ls(&repo, &snap, path.as_deref().unwrap_or(""), *recursive)?;
            out.json(json!(entries));
            if !out.json && !out.quiet {
                for e in &entries {
                    println!(
                        "{} {:04o} {:>10} {}  {}",
                        e.kind,
                        e.mode,
                        render::size(e.size),
                        render::time(e.mtime_ns),
                        e.path
                    );
                }
            }
            Ok(0)
        }
        Command::Diff { from, to } => {
            let repo = Repository::open(&repo_path, Access::Read)?;
            let (a, b) = (repo.resolve(from)?, repo.resolve(to)?);
            let d = jellysnap::browse::diff(&repo, &a, &b)?;
            out.json(json!({ "from": a.id.to_hex(), "to": b.id.to_hex(), "changes": d }));
            if !out.json && !out.quiet {
                for e in &d {
                    let sz = match (e.size_before, e.size_after) {
                        (Some(x), Some(y)) if x != y => {
                            format!("  ({} -> {})", render::size(x), render::size(y))
                        }
                        _ => String::new(),
                    };
                    println!("{} {}{sz}", e.change, e.path);
                }
                let count = |c: char| d.iter().filter(|e| e.change == c).count();
                println!(
                    "{} added, {} removed, {} modified, {} metadata-only",
                    count('+'),
                    count('-'),
                    count('M') + count('T'),
                    count('m')
                );
            }
            Ok(0)
        }
        Command::Forget(a) => maintenance::forget(&repo_path, a, out),
        Command::Gc {
            dry_run,
            max_unused,
        } => maintenance::gc(&repo_path, *dry_run, *max_unused, out, &progress),
        Command::Check {
            read_data,
            read_data_subset,
        } => {
            let mode = match (read_data, read_data_subset) {
                (true, _) => jellysnap::check::ReadData::All,
                (false, Some(p)) if *p > 0.0 && *p <= 100.0 => {
                    jellysnap::check::ReadData::Subset(*p)
                }
                (false, Some(p)) => {
                    return Err(Error::InvalidOption(format!(
                        "--read-data-subset {p} must be in (0, 100]"
                    )))
                }
                (false, None) => jellysnap::check::ReadData::None,
            };
            maintenance::check(&repo_path, mode, out, &progress)
        }
        Command::Repair {
            what: RepairWhat::Index,
        } => {
            let r = Repository::repair_index(&repo_path)?;
            out.json(json!(r));
            out.text(&format!(
                "rebuilt the index from {} pack(s): {} chunk(s){}",
                r.packs,
                r.chunks,
                if r.recovered_by_scan.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; recovered by scanning damaged trailers: {}",
                        r.recovered_by_scan.join(", ")
                    )
                }
            ));
            Ok(0)
        }
        Command::Stats { snapshots } => maintenance::stats(&repo_path, snapshots, out),
        Command::Restore(a) => {
            let repo = Repository::open(&repo_path, Access::Read)?;
            report_rebuild(&repo, out);
            let snap = repo.resolve(&a.snapshot)?;
            let opts = RestoreOptions {
                destination: match (&a.target, a.in_place) {
                    (Some(t), _) => Destination::Target(absolute(t)),
                    (None, _) => Destination::InPlace,
                },
                components: args::parse_components(&a.components)?,
                force: a.force,
            };
            let plan = restore::plan(&repo, &snap, &opts)?;
            print_plan(out, &snap, &plan, a.dry_run, cli.verbose > 0);
            if a.dry_run {
                out.json(json!({ "dry_run": true, "plan": plan }));
                return Ok(0);
            }
            let report = restore::execute(&repo, &plan, &progress)?;
            out.json(json!({ "dry_run": false, "plan": plan, "report": report }));
            out.text(&format!(
                "restored {} file(s), {} written, {} unchanged, {} removed",
                report.files_written,
                render::size(report.bytes_written),
                report.files_kept,
                report.deleted
            ));
            if !report.errors.is_empty() {
                eprintln!(
                    "jellysnap: {} file(s) could not be restored:",
                    report.errors.len()
                );
                for e in &report.errors {
                    eprintln!("  {e}");
                }
                return Ok(EXIT_PARTIAL);
            }
            Ok(0)
        }
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub(crate) fn progress_warn(out: &Out, msg: &str) {
    if !out.quiet {
        eprintln!("warning: {msg}");
    }
}

pub(crate) fn report_rebuild(repo: &Repository, out: &Out) {
    if let Some(r) = &repo.index_rebuilt {
        if r.packs > 0 {
            progress_warn(
                out,
                &format!("the repository index was missing or outdated; rebuilt it from {} pack(s), {} chunk(s)", r.packs, r.chunks),
            );
        }
    }
}

/// How a snapshot's databases were captured, for the listing: `logical` (proven at
/// backup), `physical`, or `-` for records from before captures were recorded.
fn db_capture(r: &jellysnap::SnapshotRecord) -> String {
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
    }
    v
}

fn print_backup(out: &Out, repo_path: &std::path::Path, created: bool, o: &backup::BackupOutcome) {
    let r = &o.record;
    let s = &r.summary;
    let ratio = if s.new_stored_bytes > 0 {
        s.logical_bytes as f64 / s.new_stored_bytes as f64
    } else {
        f64::INFINITY
    };
    out.json(json!({
        "id": o.id.to_hex(),
        "repository": repo_path.to_string_lossy(),
        "repository_created": created,
        "parent": o.parent.map(|p| p.to_hex()),
        "partial": o.is_partial(),
        "snapshot": r,
    }));
    let mut t = format!(
        "snapshot {}{} saved\n  Jellyfin {}, layout {}, components {}\n",
        o.id.short(),
        r.name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        r.jellyfin_version.as_deref().unwrap_or("unknown"),
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
            (jellysnap::DbCapture::Logical, _) => format!(
                "logical dump, proven to rebuild exactly (SQLite {})",
                d.sqlite_version
            ),
            (_, Some(why)) => format!("physical copy, because {why}"),
            _ => "physical copy".to_string(),
        };
        t.push_str(&format!("  database {}/{}: {how}\n", d.root, d.rel));
    }
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
    out.text(&t);
    if !s.changed_during_backup.is_empty() {
        eprintln!(
            "jellysnap: {} file(s) changed while being read; their last read was stored",
            s.changed_during_backup.len()
        );
    }
    if !s.errors.is_empty() {
        eprintln!(
            "jellysnap: partial snapshot: {} path(s) could not be read or found (exit code {EXIT_PARTIAL}):",
            s.errors.len()
        );
        for e in &s.errors {
            eprintln!("  {e}");
        }
    }
}

fn print_plan(
    out: &Out,
    snap: &Snapshot,
    plan: &restore::RestorePlan,
    dry_run: bool,
    verbose: bool,
) {
    let mut t = format!(
        "restore plan for snapshot {}{} (components {}):\n",
        snap.id.short(),
        snap.record
            .name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
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
        "  write {} file(s) ({}), keep {} unchanged, delete {}",
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
    // The database step is always shown: it goes first, and all or nothing.
    for a in &plan.actions {
        if let restore::Action::Database {
            path,
            size,
            capture,
            verified_at_backup,
            sqlite_version,
            ..
        } = a
        {
            let how = match (capture, verified_at_backup) {
                (jellysnap::DbCapture::Logical, true) => format!(
                    "rebuilt from its logical dump and checked against what the backup verified{}",
                    sqlite_version
                        .as_ref()
                        .map(|v| format!(" (SQLite {v})"))
                        .unwrap_or_default()
                ),
                (jellysnap::DbCapture::Logical, false) => {
                    "rebuilt from its logical dump (an older snapshot: not verified at backup)"
                        .to_string()
                }
                _ => "written from its physical copy (exact by construction)".to_string(),
            };
            t.push_str(&format!(
                "\n  database {} ({}): {how}; restored first, before anything else changes",
                path.display(),
                render::size(*size)
            ));
        }
    }
    if dry_run || verbose {
        for a in &plan.actions {
            let line = match a {
                restore::Action::Database { .. } => continue,
                restore::Action::Mkdir { path } => format!("  mkdir   {}", path.display()),
                restore::Action::Write { path, size, .. } => {
                    format!("  write   {} ({})", path.display(), render::size(*size))
                }
                restore::Action::Symlink { path, .. } => format!("  symlink {}", path.display()),
                restore::Action::Keep { path, .. } => {
                    if !verbose {
                        continue;
                    }
                    format!("  keep    {}", path.display())
                }
                restore::Action::Delete { path } => format!("  delete  {}", path.display()),
                restore::Action::RemoveSideFile { path } => {
                    format!("  delete  {} (stale database side file)", path.display())
                }
                restore::Action::NotCaptured { path } => {
                    format!("  kept    {} (not captured by the backup)", path.display())
                }
            };
            t.push('\n');
            t.push_str(&line);
        }
    }
    if dry_run {
        t.push_str("\ndry run: nothing was changed");
    }
    out.text(&t);
}
