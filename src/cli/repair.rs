//! `repair index`: rebuild the chunk index from the packs. `repair packs`: salvage the
//! readable chunks of damaged packs into new ones.

use serde_json::json;

use jellysnap::{Access, Error, Repository};

use super::args::RepairWhat;
use super::exit::ExitCode;
use super::{report_rebuild, Ctx};

pub fn repair(ctx: &Ctx, what: &RepairWhat) -> Result<ExitCode, Error> {
    if let RepairWhat::Packs = what {
        return packs(ctx);
    }
    let r = Repository::repair_index(&ctx.place)?;
    ctx.out.json_with(|| json!(r));
    let recovered = if r.recovered_by_scan.is_empty() {
        String::new()
    } else {
        format!(
            "; recovered by scanning damaged trailers: {}",
            r.recovered_by_scan.join(", ")
        )
    };
    ctx.out.text(&format!(
        "rebuilt the index from {} pack(s): {} chunk(s){recovered}",
        r.packs, r.chunks
    ));
    Ok(ExitCode::Success)
}

fn packs(ctx: &Ctx) -> Result<ExitCode, Error> {
    let repo = Repository::open_as(&ctx.place, Access::Write, "repair packs")?;
    report_rebuild(&repo, ctx.out);
    let r = jellysnap::repair::repair_packs(&repo, ctx.progress)?;
    ctx.out.json(json!(r));
    if r.packs.is_empty() && r.gone.is_empty() {
        ctx.out
            .text("no damaged packs recorded (`jellysnap check --read-data` records them)");
    }
    for p in &r.packs {
        ctx.out.text(&format!(
            "pack {}: {} chunk(s) stored again in new packs; {} unreadable{}",
            &p.pack[..16],
            p.salvaged,
            p.unreadable.len(),
            match p.unreadable.is_empty() {
                true => String::new(),
                false => " (a backup of a file that still has their content stores them again; \
                          gc keeps the damaged pack until nothing needs them)"
                    .to_string(),
            }
        ));
    }
    for p in &r.gone {
        ctx.out
            .text(&format!("pack {}: no longer in the repository", &p[..16]));
    }
    Ok(ExitCode::Success)
}
