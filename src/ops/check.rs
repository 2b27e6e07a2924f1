//! Verification (issue: check). Structure: every snapshot record decodes, every tree is
//! readable, every referenced chunk is indexed in a pack that exists and is long enough,
//! and pack trailers agree with the index. With `read_data`, every chunk of the chosen
//! packs is read, decompressed and hashed. Damage is reported by pack and chunk, and
//! traced back to the snapshots and files it affects.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::format::id::{ChunkId, PackId};
use crate::format::pack::{self, PackEntry};
use crate::format::tree::Node;
use crate::ops::progress::Progress;
use crate::ops::reach;
use crate::store::repo::Repository;
use crate::store::Key;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// A share of the packs, in percent; successive runs move on to the next share so
    /// that repeated runs cover the whole repository.
    Subset(f64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What is damaged: "snapshot", "tree", "index", "pack", "chunk".
    pub kind: String,
    pub pack: Option<String>,
    pub chunks: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Affected {
    pub snapshot: String,
    pub name: Option<String>,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub trees: u64,
    /// List chunks of large files' indirect chunk lists.
    pub list_chunks: u64,
    pub data_chunks: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    /// Distinct logical database dumps rebuilt and compared (with `--read-data`).
    pub databases_rebuilt: u64,
    /// Which slice of the packs `--read-data-subset` read this time ("2/5").
    pub subset: Option<String>,
    pub problems: Vec<Problem>,
    pub affected: Vec<Affected>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn check(
    repo: &Repository,
    read_data: ReadData,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut bad: HashSet<ChunkId> = HashSet::new();
    let problem =
        |kind: &str, pack: Option<&PackId>, chunks: Vec<ChunkId>, detail: String| Problem {
            kind: kind.into(),
            pack: pack.map(|p| p.to_hex()),
            chunks: chunks.iter().map(|c| c.to_hex()).collect(),
            detail,
        };

    progress.phase("checking snapshots and trees", None);
    let (snaps, bad_records) = repo.snapshots()?;
    for e in bad_records {
        report
            .problems
            .push(problem("snapshot", None, vec![], e.to_string()));
    }
    report.snapshots = snaps.len() as u64;
    let mut r = reach::Reach::default();
    let mut failed_trees = Vec::new();
    for s in &snaps {
        walk_tolerant(repo, &s.record.tree, &mut r, &mut failed_trees);
    }
    report.trees = r.trees.len() as u64;
    report.list_chunks = r.lists.len() as u64;
    report.data_chunks = r.data.len() as u64;

    progress.phase("checking packs and index", None);
    let packs = repo.packs()?;
    report.packs = packs.len() as u64;
    let mut sizes: HashMap<PackId, u64> = HashMap::new();
    let mut trailers: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for id in &packs {
        sizes.insert(*id, repo.pack_size(id).unwrap_or(0));
        match repo.pack_entries(id) {
            Ok((entries, scanned)) => {
                if scanned {
                    report.problems.push(problem(
                        "pack",
                        Some(id),
                        vec![],
                        format!(
                            "trailer damaged; {} record(s) recoverable by scanning (run `jellysnap repair index`, then `jellysnap check --read-data`)",
                            entries.len()
                        ),
                    ));
                }
                trailers.insert(*id, entries);
            }
            Err(e) => report
                .problems
                .push(problem("pack", Some(id), vec![], e.to_string())),
        }
    }
    // Every referenced chunk: indexed, in an existing pack that is long enough, at an
    // offset its pack's trailer agrees with.
    let mut by_pack: HashMap<PackId, Vec<ChunkId>> = HashMap::new();
    let failed: HashMap<ChunkId, String> = failed_trees.into_iter().collect();
    for id in r.trees.iter().chain(r.lists.iter()).chain(r.data.iter()) {
        match repo.index().get(id)? {
            None => {
                bad.insert(*id);
                by_pack.entry(PackId([0; 32])).or_default().push(*id);
            }
            Some(ix) => {
                let ok = sizes.get(&ix.pack).is_some_and(|len| {
                    ix.offset + pack::RECORD_HEADER_LEN as u64 + ix.stored_len as u64 <= *len
                }) && trailers
                    .get(&ix.pack)
                    .is_none_or(|es| es.iter().any(|e| e.id == *id && e.offset == ix.offset));
                if !ok {
                    bad.insert(*id);
                    by_pack.entry(ix.pack).or_default().push(*id);
                } else if let Some(err) = failed.get(id) {
                    // Located fine, but the tree (or list chunk) does not verify or decode.
                    bad.insert(*id);
                    report
                        .problems
                        .push(problem("tree", Some(&ix.pack), vec![*id], err.clone()));
                }
            }
        }
    }
    for (pack, chunks) in by_pack {
        let (p, detail) = if pack == PackId([0; 32]) {
            (
                None,
                "referenced but not in the index (run `jellysnap repair index`)".to_string(),
            )
        } else if !sizes.contains_key(&pack) {
            (Some(pack), "pack file is missing".to_string())
        } else {
            (
                Some(pack),
                format!(
                    "pack is truncated or does not hold these chunks (size {})",
                    sizes[&pack]
                ),
            )
        };
        report.problems.push(problem(
            if p.is_some() { "pack" } else { "index" },
            p.as_ref(),
            chunks,
            detail,
        ));
    }

    if read_data != ReadData::None {
        let chosen = choose_packs(repo, &packs, read_data, &mut report);
        let total: u64 = chosen
            .iter()
            .map(|p| sizes.get(p).copied().unwrap_or(0))
            .sum();
        progress.phase("reading data", Some(total));
        for id in chosen {
            let Some(entries) = trailers.get(&id) else {
                continue;
            };
            let mut damaged = Vec::new();
            let (mut buf, mut out) = (Vec::new(), Vec::new());
            for e in entries {
                buf.resize(e.record_len() as usize, 0);
                let ok = repo
                    .store()
                    .read_at(Key::Pack(id), e.offset, &mut buf)
                    .is_ok()
                    && pack::decode_record_header(&buf, e.offset).is_ok_and(|h| h.id == e.id)
                    && pack::verify_payload(
                        e,
                        buf.get(pack::RECORD_HEADER_LEN..).unwrap_or_default(),
                        &mut out,
                    )
                    .is_ok();
                if !ok {
                    damaged.push(e.id);
                }
                report.bytes_read += e.record_len();
                progress.advance(e.record_len());
            }
            report.packs_read += 1;
            if !damaged.is_empty() {
                bad.extend(damaged.iter().copied());
                report.problems.push(problem(
                    "chunk",
                    Some(&id),
                    damaged,
                    "content does not match its id (damaged on disk)".into(),
                ));
            }
        }
    }

    if read_data == ReadData::All {
        check_databases(repo, &snaps, &bad, &mut report, progress)?;
    }

    if !bad.is_empty() {
        for s in &snaps {
            let paths = reach::paths_using(repo, s, &bad);
            if !paths.is_empty() {
                report.affected.push(Affected {
                    snapshot: s.id.to_hex(),
                    name: s.record.name.clone(),
                    paths,
                });
            }
        }
    }
    progress.finish();
    Ok(report)
}

/// Rebuild every distinct logical database dump once, in scratch space, and compare it
/// with the observation each snapshot's backup proved: a snapshot whose database would not
/// restore exactly is reported by name, with the database's path. Dumps whose chunks are
/// already known damaged are reported through those chunks instead.
fn check_databases(
    repo: &Repository,
    snaps: &[crate::format::snapshot::Snapshot],
    bad: &HashSet<ChunkId>,
    report: &mut CheckReport,
    progress: &dyn Progress,
) -> Result<()> {
    use crate::format::tree::DbCapture;
    // dump (its top-level chunk refs) -> (entry node, [(snapshot, path, proof)])
    type Users = Vec<(usize, String, Option<String>)>;
    let mut dumps: Vec<(Node, Users)> = Vec::new();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, s) in snaps.iter().enumerate() {
        let rec = &s.record;
        for item in rec
            .items
            .iter()
            .filter(|it| it.component == crate::format::snapshot::Component::Database)
        {
            let Ok(Some(node)) = find_node(repo, &rec.tree, &item.root, &item.rel) else {
                continue; // unreadable trees are reported above
            };
            let Node::File {
                chunks,
                indirect,
                database: DbCapture::Logical,
                ..
            } = &node
            else {
                continue;
            };
            if chunks.iter().any(|c| bad.contains(&c.id)) {
                continue;
            }
            let proof = rec
                .databases
                .iter()
                .find(|d| d.root == item.root && d.rel == item.rel)
                .and_then(|d| d.verified.clone());
            let mut key = vec![*indirect];
            for c in chunks {
                key.extend_from_slice(&c.id.0);
            }
            let at = *seen.entry(key).or_insert_with(|| {
                dumps.push((node.clone(), Vec::new()));
                dumps.len() - 1
            });
            dumps[at]
                .1
                .push((i, format!("{}/{}", item.root, item.rel), proof));
        }
    }
    if dumps.is_empty() {
        return Ok(());
    }
    progress.phase("rebuilding database dumps", None);
    let scratch = repo.tmp_dir();
    for (node, users) in dumps {
        // Snapshots of one dump normally share one proof; each distinct proof is one
        // rebuild (a missing proof only asks that the dump rebuilds).
        let mut proofs: Vec<Option<String>> = users.iter().map(|u| u.2.clone()).collect();
        proofs.sort();
        proofs.dedup();
        for proof in proofs {
            report.databases_rebuilt += 1;
            let Err(e) = crate::ops::restore::try_rebuild(
                repo,
                &node,
                proof.as_deref(),
                &scratch,
                &crate::ops::progress::NoProgress,
            ) else {
                continue;
            };
            let detail = match e {
                crate::error::Error::DatabaseRestore { detail, .. } => detail,
                e => e.to_string(),
            };
            for (i, path, _) in users.iter().filter(|u| u.2 == proof) {
                let s = &snaps[*i];
                report.problems.push(Problem {
                    kind: "database".into(),
                    pack: None,
                    chunks: vec![],
                    detail: format!(
                        "snapshot {}{}: {path} cannot be restored exactly: {detail}",
                        s.id.short(),
                        s.record
                            .name
                            .as_ref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    ),
                });
                match report
                    .affected
                    .iter_mut()
                    .find(|a| a.snapshot == s.id.to_hex())
                {
                    Some(a) => a.paths.push(path.clone()),
                    None => report.affected.push(Affected {
                        snapshot: s.id.to_hex(),
                        name: s.record.name.clone(),
                        paths: vec![path.clone()],
                    }),
                }
            }
        }
    }
    Ok(())
}

/// The node at `rel` (`/`-separated) inside root `label` of a snapshot's tree.
fn find_node(repo: &Repository, tree: &ChunkId, label: &str, rel: &str) -> Result<Option<Node>> {
    let mut t = repo.load_tree(tree)?;
    let mut node = None;
    for (i, part) in std::iter::once(label)
        .chain(rel.split('/').filter(|p| !p.is_empty()))
        .enumerate()
    {
        if i > 0 {
            match &node {
                Some(Node::Dir { tree }) => t = repo.load_tree(tree)?,
                _ => return Ok(None),
            }
        }
        node = t.find(part.as_bytes()).map(|e| e.node.clone());
        if node.is_none() {
            return Ok(None);
        }
    }
    Ok(node)
}

/// Like `reach::visit`, but an unreadable tree or list chunk is recorded (with why)
/// instead of ending the walk.
fn walk_tolerant(
    repo: &Repository,
    tree: &ChunkId,
    r: &mut reach::Reach,
    failed: &mut Vec<(ChunkId, String)>,
) {
    if !r.trees.insert(*tree) {
        return;
    }
    match repo.load_tree(tree) {
        Ok(t) => {
            for e in &t.entries {
                match &e.node {
                    Node::File { .. } => {
                        let mut bad_lists = Vec::new();
                        r.add_file(repo, &e.node, &mut bad_lists);
                        failed.extend(bad_lists.into_iter().map(|(id, e)| (id, e.to_string())));
                    }
                    Node::Dir { tree } => walk_tolerant(repo, tree, r, failed),
                    Node::Symlink { .. } => {}
                }
            }
        }
        Err(e) => failed.push((*tree, e.to_string())),
    }
}

/// The packs `--read-data(-subset)` reads. Subsets rotate through `n = ceil(100 / pct)`
/// slices (by pack id), remembering the next slice in the user's cache dir.
fn choose_packs(
    repo: &Repository,
    packs: &[PackId],
    read: ReadData,
    report: &mut CheckReport,
) -> Vec<PackId> {
    let ReadData::Subset(pct) = read else {
        return packs.to_vec();
    };
    let n = (100.0 / pct.clamp(0.01, 100.0)).ceil().max(1.0) as u64;
    let state = state_file(&repo.config().repo_id);
    let slice = fs::read_to_string(&state)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        % n;
    if let Some(dir) = state.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let _ = fs::write(&state, format!("{}\n", (slice + 1) % n));
    report.subset = Some(format!("{}/{}", slice + 1, n));
    packs
        .iter()
        .filter(|p| u64::from_le_bytes(p.0[..8].try_into().unwrap_or([0; 8])) % n == slice)
        .copied()
        .collect()
}

fn state_file(repo_id: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".cache")
        });
    base.join("jellysnap").join(format!("check-{repo_id}"))
}
