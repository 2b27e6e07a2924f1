//! Reading chunks out of packs: where the index places a chunk, what a failed read of it
//! is, and the chunk opened (`format::record::open`) from the bytes read.

use crate::error::{Error, Result};
use crate::format::pack::PackEntry;
use crate::format::record;
use crate::id::{ChunkId, PackId};
use crate::store::repo::Repository;

/// Where the index places a chunk, and how much to read for it.
pub(super) struct Located {
    pub pack: PackId,
    /// What the record there must say.
    pub record: PackEntry,
    pub span: usize,
}

/// Where chunk `id` is, by the index; its lengths are checked before anything is
/// allocated for them.
pub(super) fn locate(repo: &Repository, id: &ChunkId) -> Result<Located> {
    let e = repo
        .index()
        .get(id)?
        .ok_or(Error::ChunkMissing { chunk: *id })?;
    let rec = e.record(*id);
    let span = record::span(&rec, repo.raw_limits()).map_err(|d| {
        Error::corrupt(
            "index entry",
            format!("chunk {id}"),
            format!("{d}; run `jellysnap repair index`"),
        )
    })?;
    Ok(Located {
        pack: e.pack,
        record: rec,
        span,
    })
}

fn location(at: &Located) -> String {
    format!("pack {} offset {}", at.pack, at.record.offset)
}

/// A failed read of a located record, as the reader reports it.
pub(super) fn read_failed(at: &Located, err: Error) -> Error {
    match err {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::PackMissing {
                pack: at.pack,
                detail: source.to_string(),
            }
        }
        // A permission or a resource limit, not the pack's bytes: said as it is.
        err if err.is_refusal() => err,
        err => Error::corrupt(
            "pack",
            location(at),
            format!("chunk {}: {err}", at.record.id),
        ),
    }
}

/// The chunk in the bytes read for a located record, verified.
pub(super) fn open_located<'b>(
    at: &Located,
    rec: &'b [u8],
    out: &'b mut Vec<u8>,
    limits: &crate::format::pack::RawLimits,
) -> Result<&'b [u8]> {
    record::open(rec, &at.record, limits, out).map_err(|d| {
        Error::corrupt(
            d.what(),
            location(at),
            d.detail(|| format!("record does not hold chunk {}", at.record.id)),
        )
    })
}
