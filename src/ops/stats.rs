//! Repository and snapshot statistics.

use serde::Serialize;

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::ops::reach;
use crate::store::repo::Repository;

#[derive(Debug, Clone, Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    /// Sum of the logical sizes of all snapshots (what full copies would take).
    pub logical_bytes: u64,
    /// Bytes on disk in packs.
    pub stored_bytes: u64,
    pub packs: u64,
    pub chunks: u64,
    /// logical / stored.
    pub dedup_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotStats {
    pub id: String,
    pub name: Option<String>,
    pub logical_bytes: u64,
    pub files: u64,
    /// Chunks and stored bytes no other snapshot references: what forgetting this
    /// snapshot alone would free (after gc).
    pub exclusive_chunks: u64,
    pub exclusive_bytes: u64,
}

pub fn repo_stats(repo: &Repository) -> Result<RepoStats> {
    let (snaps, _) = repo.snapshots()?;
    let mut s = RepoStats {
        snapshots: snaps.len() as u64,
        logical_bytes: snaps.iter().map(|s| s.record.summary.logical_bytes).sum(),
        stored_bytes: 0,
        packs: 0,
        chunks: 0,
        dedup_ratio: 0.0,
    };
    for (key, size) in repo.packs_sized()? {
        s.packs += 1;
        s.stored_bytes += size;
        s.chunks += repo
            .pack_entries_cached(key)
            .map(|(e, _)| e.len() as u64)
            .unwrap_or(0);
    }
    s.dedup_ratio = if s.stored_bytes > 0 {
        s.logical_bytes as f64 / s.stored_bytes as f64
    } else {
        0.0
    };
    Ok(s)
}

pub fn snapshot_stats(repo: &Repository, snap: &Snapshot) -> Result<SnapshotStats> {
    let excl = reach::exclusive_chunks(repo, snap)?;
    let mut bytes = 0;
    for c in &excl {
        if let Some(e) = repo.index().get(c)? {
            bytes += crate::format::pack::RECORD_HEADER_LEN as u64 + e.stored_len as u64;
        }
    }
    Ok(SnapshotStats {
        id: snap.id.to_hex(),
        name: snap.record.name.clone(),
        logical_bytes: snap.record.summary.logical_bytes,
        files: snap.record.summary.files,
        exclusive_chunks: excl.len() as u64,
        exclusive_bytes: bytes,
    })
}
