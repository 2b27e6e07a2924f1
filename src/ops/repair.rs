//! `repair packs`: the readable chunks of each pack a damage record names
//! (docs/FORMAT.md, "Damage records") are stored again in new packs, durable and
//! indexed there, so that a restore or a gc no longer needs the damaged pack for them.
//! The damaged pack itself is left in place: it still holds what could not be read,
//! and gc deletes it only once nothing needs it (a chunk without a good copy is live
//! wherever a pack holds it).

use serde::Serialize;

use crate::error::Result;
use crate::ops::progress::Progress;
use crate::store::packer::ChunkSink;
use crate::store::reads::Unopened;
use crate::store::repo::Repository;

#[derive(Debug, Clone, Serialize)]
pub struct SalvagedPack {
    pub pack: String,
    /// Chunks read, verified and stored again in new packs.
    pub salvaged: u64,
    /// Chunks of the pack that could not be read back (their ids).
    pub unreadable: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairPacksReport {
    pub packs: Vec<SalvagedPack>,
    /// Damage records whose pack is no longer in the repository.
    pub gone: Vec<String>,
}

/// Salvage the readable chunks of every pack with a damage record. Only the chunks the
/// index places in that pack are copied (another copy is already where the index looks).
/// A read the system refuses ends the run: that says nothing about the bytes.
pub fn repair_packs(repo: &Repository, progress: &dyn Progress) -> Result<RepairPacksReport> {
    let mut report = RepairPacksReport::default();
    let recorded = repo.damaged()?;
    let mut damaged: Vec<_> = recorded.keys().copied().collect();
    damaged.sort();
    if damaged.is_empty() {
        return Ok(report);
    }
    let listed: std::collections::HashMap<_, _> = repo
        .packs()?
        .into_iter()
        .filter_map(|k| Some((k.pack_id()?, k)))
        .collect();
    progress.phase("salvaging damaged packs", None);
    let sink = ChunkSink::new(repo)?;
    for pack in damaged {
        let Some(&key) = listed.get(&pack) else {
            report.gone.push(pack.to_hex());
            continue;
        };
        let (entries, _) = repo.pack_entries(key)?;
        let mut here = Vec::new();
        for e in entries {
            if repo.index().get(&e.id)?.is_some_and(|ix| ix.pack == pack) {
                here.push(e);
            }
        }
        // The recorded chunks without a good copy are out of the index (a writer's open
        // took them out): they are what the pack holds unreadably.
        let mut unreadable = Vec::new();
        for id in recorded.get(&pack).into_iter().flatten() {
            if repo.index().get(id)?.is_none() {
                unreadable.push(id.to_hex());
            }
        }
        unreadable.sort();
        let mut salvaged = SalvagedPack {
            pack: pack.to_hex(),
            salvaged: 0,
            unreadable,
        };
        repo.read_records(key, &here, &mut |k, r| {
            let Some(e) = here.get(k) else {
                return Ok(());
            };
            match r {
                Ok(rec) => {
                    sink.put_record(e, rec.record)?;
                    salvaged.salvaged += 1;
                }
                Err(Unopened::Read(err)) if err.is_refusal() => return Err(err),
                Err(_) => salvaged.unreadable.push(e.id.to_hex()),
            }
            progress.advance(e.record_len());
            Ok(())
        })
        .map_err(|err| sink.cause(err))?;
        report.packs.push(salvaged);
    }
    sink.finish()?;
    progress.finish();
    Ok(report)
}
