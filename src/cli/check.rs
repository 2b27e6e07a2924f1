//! `check`: verify the repository and report what is damaged and what it affects.

use serde_json::json;

use jellysnap::check::{self, CheckReport, ReadData};
use jellysnap::{Access, Error, Repository};

use super::args::{self, CheckArgs};
use super::exit::ExitCode;
use super::{paren_name, render, report_rebuild, Ctx, Out};

pub fn check(ctx: &Ctx, a: &CheckArgs) -> Result<ExitCode, Error> {
    let mode = ReadData::new(a.read_data, a.read_data_subset, &args::cache_dir())?;
    let repo = Repository::open(&ctx.place, Access::Read)?;
    report_rebuild(&repo, ctx.out);
    let r = check::check(&repo, &mode, ctx.progress).inspect_err(|e| {
        // (A full file system is said by the error itself, with its own next step.)
        if e.is_refusal() && !e.is_storage_full() {
            ctx.out.err(
                "jellysnap: check stopped: the system refused a read (below); that says nothing about the repository's data. Give this user read access to the whole repository (or run as its owner) and run check again",
            );
        }
    })?;
    ctx.out.json_with(|| json!(r));
    ctx.out.text(&counts_text(&r));
    for h in &r.healed {
        ctx.out.text(&format!(
            "snapshot {}{} is healed: a good copy of what was found damaged in it is stored again ({} path(s): {})",
            &h.snapshot[..8],
            paren_name(&h.name),
            h.paths.len(),
            h.paths.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    for p in &r.damage_cleared {
        ctx.out.text(&format!(
            "pack {}: chunks recorded as damaged read back good now (a read changed on the way, not damage at rest); its damage record is corrected",
            &p[..16]
        ));
    }
    if let Some(why) = &r.damage_not_recorded {
        ctx.out.warn(&format!(
            "the damage found is not recorded in the repository: {why}; a backup into it deduplicates against the damaged copies until a check that can write there records them"
        ));
    }
    if r.ok() && r.newer_format.is_empty() {
        ctx.out.text("no problems found");
        return Ok(ExitCode::Success);
    }
    report_newer(ctx.out, &r);
    if r.ok() {
        return Ok(ExitCode::Version);
    }
    report_problems(ctx.out, &r);
    Ok(ExitCode::Damaged)
}

/// Records of a newer format, on stderr: not damage, but not checked either.
fn report_newer(out: &Out, r: &CheckReport) {
    if r.newer_format.is_empty() {
        return;
    }
    for m in &r.newer_format {
        out.err(&format!("newer format: {m}"));
    }
    out.err(&format!(
        "jellysnap: {} record(s) were written by a newer jellysnap; they are not damaged, but this jellysnap cannot check them or what they reference: upgrade jellysnap",
        r.newer_format.len()
    ));
}

/// What was checked (and rebuilt), as text.
fn counts_text(r: &CheckReport) -> String {
    let read = match (&r.subset, r.packs_read) {
        (Some(s), n) => format!(
            "; read slice {s} of the packs ({n} pack(s), {})",
            render::size(r.bytes_read)
        ),
        (None, 0) => String::new(),
        (None, n) => format!("; read {n} pack(s) ({})", render::size(r.bytes_read)),
    };
    let mut t = format!(
        "checked {} snapshot(s), {} tree(s), {} chunk list(s), {} data chunk(s), {} pack(s){read}",
        r.snapshots, r.trees, r.list_chunks, r.data_chunks, r.packs,
    );
    if r.databases_rebuilt > 0 {
        t.push_str(&format!(
            "\nrebuilt {} distinct database dump(s) and compared them with what their backups verified",
            r.databases_rebuilt
        ));
    }
    t
}

/// The problems and the snapshots they affect, on stderr.
fn report_problems(out: &Out, r: &CheckReport) {
    for p in &r.problems {
        if p.kind == "database" {
            out.err(&format!("unrestorable database: {}", p.detail));
            continue;
        }
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
        let pack = p
            .pack
            .as_ref()
            .map(|x| format!(" pack {x}"))
            .unwrap_or_default();
        out.err(&format!("damaged {}{pack}{chunks}: {}", p.kind, p.detail));
    }
    for a in &r.affected {
        out.err(&format!(
            "snapshot {}{} is affected: {} path(s): {}",
            &a.snapshot[..8],
            paren_name(&a.name),
            a.paths.len(),
            a.paths
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.err(&format!(
        "jellysnap: check found {} problem(s)",
        r.problems.len()
    ));
}
