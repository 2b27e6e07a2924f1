//! The repository's bytes: every record jellysnap writes, its encoder and its decoder.
//! Pure code: bytes in, bytes out. Nothing here opens a file, takes a lock or knows where
//! a record is stored; docs/FORMAT.md describes every byte.

pub mod chunker;
pub mod chunklist;
pub mod compress;
pub mod config;
pub mod damaged;
pub mod dump;
pub mod hosts;
pub mod pack;
pub mod record;
pub mod snapshot;
pub mod timefmt;
pub mod tree;

/// The repository in `fixtures/golden`, written by an earlier jellysnap: every record in
/// it decodes, and the encoders of today write each one again byte for byte.
#[cfg(test)]
mod golden {
    use std::path::{Path, PathBuf};

    use super::pack::{self, ChunkKind};
    use super::{chunklist, config, record, snapshot, tree};
    use crate::id::{ChunkId, SnapshotId};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden")
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn config_and_snapshot_records_encode_as_they_were_written() {
        let bytes = std::fs::read(repo().join("config")).unwrap();
        let cfg = config::RepoConfig::decode(&bytes, Path::new("config")).unwrap();
        assert_eq!(cfg.encode().unwrap(), bytes);
        let snaps = files(&repo().join("snapshots"));
        assert_eq!(snaps.len(), 1);
        for p in snaps {
            let bytes = std::fs::read(&p).unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            let id = SnapshotId::from_hex(name).unwrap();
            let record = snapshot::SnapshotRecord::decode(&bytes, &id).unwrap();
            assert_eq!(record.encode().unwrap(), bytes, "{name}");
        }
    }

    #[test]
    fn packs_trees_and_lists_encode_as_they_were_written() {
        let (mut trees, mut data) = (0, 0);
        for p in files(&repo().join("packs")) {
            let bytes = std::fs::read(&p).unwrap();
            let len = bytes.len() as u64;
            let entries = pack::open_trailer(&bytes, len, &pack::RawLimits::ANY).unwrap();
            let tl = entries.len() * pack::ENTRY_LEN + pack::FOOTER_LEN;
            assert_eq!(pack::seal_trailer(&entries), &bytes[bytes.len() - tl..]);
            let mut out = Vec::new();
            for e in &entries {
                let at = e.offset as usize;
                let rec = &bytes[at..at + pack::RECORD_HEADER_LEN + e.stored_len as usize];
                assert_eq!(record::encode_header(e), rec[..pack::RECORD_HEADER_LEN]);
                let raw = record::open(rec, e, &pack::RawLimits::ANY, &mut out).unwrap();
                if e.compression == super::compress::Compression::None {
                    let mut again = Vec::new();
                    record::seal(e.kind, e.id, raw, record::Compress::Never, &mut again).unwrap();
                    assert_eq!(again, rec, "chunk {}", e.id);
                }
                if e.kind == ChunkKind::Data {
                    data += 1;
                    continue;
                }
                trees += 1;
                let encoded = match tree::Tree::decode(raw, &e.id) {
                    Ok(t) => t.encode().unwrap(),
                    Err(_) => chunklist::encode_list(&chunklist::decode_list(raw, &e.id).unwrap())
                        .unwrap(),
                };
                assert_eq!(ChunkId::of(&encoded), e.id, "chunk {}", e.id);
            }
        }
        assert!(trees > 10 && data > 10, "{trees} trees, {data} data chunks");
    }
}
