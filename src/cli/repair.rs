//! `repair index`: rebuild the chunk index from the packs.

use serde_json::json;

use jellysnap::{Error, Repository};

use super::args::RepairWhat;
use super::exit::ExitCode;
use super::Ctx;

pub fn repair(ctx: &Ctx, what: &RepairWhat) -> Result<ExitCode, Error> {
    let RepairWhat::Index = what;
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
