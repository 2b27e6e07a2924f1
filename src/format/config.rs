//! The repository `config` file: magic, format version, repository id and the parameters
//! that are part of the format (chunker cut points, pack size, compression level).
//!
//! Layout: 8 bytes magic `JSNPREPO`, u32 little-endian format version, then a JSON body.
//! A newer version is refused with [`Error::NewerFormat`] before the body is parsed
//! (docs/FORMAT.md, "Versions").

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::chunker::ChunkerParams;

pub const CONFIG_MAGIC: &[u8; 8] = b"JSNPREPO";
/// The format a new repository is made in. Format 2 names tree packs apart from data
/// packs (docs/FORMAT.md, "Layout"); format 1 repositories are still read and written
/// as format 1.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this jellysnap reads and writes.
pub const OLDEST_FORMAT: u32 = 1;
/// The first format whose tree packs have keys of their own.
const TREE_PACKS_APART: u32 = 2;

/// The capture a backup tries first for each database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbCaptureMode {
    /// A logical dump, falling back to a physical copy for databases the dump refuses.
    Logical,
    /// Always a physical copy (online backup API).
    Physical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// The format version, from the config's header (not part of the JSON body).
    #[serde(skip)]
    pub format: u32,
    /// Random id of this repository (hex), fixed at `init`.
    pub repo_id: String,
    /// Content-defined chunking of ordinary files.
    pub chunker: ChunkerParams,
    /// Chunking of logical database dumps (small chunks: a changed row costs one chunk).
    pub db_chunker: ChunkerParams,
    /// Chunking of physical database copies (the fallback capture).
    pub db_physical_chunker: ChunkerParams,
    /// How databases are captured by default.
    pub db_capture: DbCaptureMode,
    /// The logical dump encoding current when the repository was made (informational).
    /// Each dump carries its own version; backups write `format::dump::VERSION`, restores
    /// read `OLDEST_VERSION..=VERSION` and refuse a newer dump as a newer format.
    pub db_dump_version: u8,
    /// A pack is sealed once it holds at least this many bytes.
    pub pack_target_bytes: u64,
    /// zstd level for compressible chunks.
    pub zstd_level: i32,
}

impl RepoConfig {
    /// The settings of a new repository; `seed` (random, from the store) names it.
    pub fn new_default(seed: [u8; 16]) -> Self {
        RepoConfig {
            format: FORMAT_VERSION,
            repo_id: crate::id::hex(&seed),
            chunker: ChunkerParams {
                min: 64 * 1024,
                avg: 256 * 1024,
                max: 1024 * 1024,
            },
            db_chunker: ChunkerParams {
                min: 4 * 1024,
                avg: 8 * 1024,
                max: 32 * 1024,
            },
            db_physical_chunker: ChunkerParams {
                min: 8 * 1024,
                avg: 16 * 1024,
                max: 64 * 1024,
            },
            db_capture: DbCaptureMode::Logical,
            db_dump_version: crate::format::dump::VERSION,
            pack_target_bytes: 16 * 1024 * 1024,
            zstd_level: 3,
        }
    }

    /// These parameters under a new repository id (`seed`, random), in the format new
    /// repositories are made in.
    pub fn with_id(&self, seed: [u8; 16]) -> Self {
        RepoConfig {
            format: FORMAT_VERSION,
            repo_id: crate::id::hex(&seed),
            ..self.clone()
        }
    }

    /// Whether tree packs are named apart from data packs (format 2 on): a listing then
    /// tells a pack's kind without reading it.
    pub fn tree_packs_apart(&self) -> bool {
        self.format >= TREE_PACKS_APART
    }

    /// Whether `other` cuts data the same way (the three chunkers, the database
    /// capture): only then do the same files make the same chunks in both repositories.
    pub fn same_chunking(&self, other: &RepoConfig) -> bool {
        self.chunker == other.chunker
            && self.db_chunker == other.db_chunker
            && self.db_physical_chunker == other.db_physical_chunker
            && self.db_capture == other.db_capture
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(CONFIG_MAGIC);
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&self.format) {
            return Err(Error::internal(format!(
                "a repository config of format {} cannot be written",
                self.format
            )));
        }
        out.extend_from_slice(&self.format.to_le_bytes());
        let body = serde_json::to_string_pretty(self)
            .map_err(|e| Error::internal(format!("cannot encode the repository config: {e}")))?;
        out.extend_from_slice(body.as_bytes());
        out.push(b'\n');
        Ok(out)
    }

    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |detail: String| {
            Error::corrupt("repository config", path.display().to_string(), detail)
        };
        let (magic, rest) = bytes
            .split_at_checked(8)
            .ok_or_else(|| corrupt("file is shorter than its header".into()))?;
        if magic != CONFIG_MAGIC {
            return Err(corrupt("bad magic".into()));
        }
        let (ver, body) = rest
            .split_at_checked(4)
            .ok_or_else(|| corrupt("file is shorter than its header".into()))?;
        let version = u32::from_le_bytes([ver[0], ver[1], ver[2], ver[3]]);
        if version > FORMAT_VERSION {
            return Err(Error::newer_format(
                "repository config",
                path.display().to_string(),
                version,
                FORMAT_VERSION,
            ));
        }
        if version == 0 {
            return Err(corrupt("format version 0".into()));
        }
        let mut cfg: RepoConfig =
            serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
        cfg.format = version;
        cfg.chunker.validate().map_err(corrupt)?;
        cfg.db_chunker.validate().map_err(corrupt)?;
        cfg.db_physical_chunker.validate().map_err(corrupt)?;
        // Informational (each dump carries its own version, checked where it is read): a
        // newer value only says a newer jellysnap made the repository.
        if cfg.db_dump_version < crate::format::dump::OLDEST_VERSION {
            return Err(corrupt(format!(
                "db_dump_version {} was never written",
                cfg.db_dump_version
            )));
        }
        if !(1..=22).contains(&cfg.zstd_level) || cfg.pack_target_bytes == 0 {
            return Err(corrupt(
                "zstd_level or pack_target_bytes out of range".into(),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let cfg = RepoConfig::new_default([7; 16]);
        let bytes = cfg.encode().unwrap();
        assert_eq!(RepoConfig::decode(&bytes, Path::new("c")).unwrap(), cfg);
        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let e = RepoConfig::decode(&future, Path::new("c")).unwrap_err();
        assert!(
            matches!(e, Error::NewerFormat { found, supported: FORMAT_VERSION, .. } if found == FORMAT_VERSION + 1),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "repository config c was written by a newer jellysnap (format {}, this one reads up to {FORMAT_VERSION}): upgrade jellysnap to read it",
                FORMAT_VERSION + 1
            )
        );
        // A format-1 repository stays format 1: read as such, written back as such.
        let mut v1 = bytes.clone();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let old = RepoConfig::decode(&v1, Path::new("c")).unwrap();
        assert_eq!((old.format, old.tree_packs_apart()), (1, false));
        assert_eq!(old.encode().unwrap(), v1);
        assert!(cfg.tree_packs_apart());
        assert_eq!(
            old.with_id([8; 16]).format,
            FORMAT_VERSION,
            "a copy's new repository"
        );
        let mut zero = bytes.clone();
        zero[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            RepoConfig::decode(&zero, Path::new("c")),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            RepoConfig::decode(b"JSNP", Path::new("c")),
            Err(Error::Corrupt { .. })
        ));
        let text = String::from_utf8(bytes[12..].to_vec()).unwrap();
        assert!(text.contains("\"db_capture\": \"logical\""), "{text}");
        let mut newer_dumps = bytes[..12].to_vec();
        newer_dumps.extend_from_slice(
            text.replace("\"db_dump_version\": 2", "\"db_dump_version\": 3")
                .as_bytes(),
        );
        let cfg3 = RepoConfig::decode(&newer_dumps, Path::new("c")).unwrap();
        assert_eq!(
            cfg3.db_dump_version, 3,
            "informational: dumps are checked one by one"
        );
        for (from, to) in [
            ("\"db_dump_version\": 2", "\"db_dump_version\": 0"),
            ("\"min\": 4096", "\"min\": 4095"),
            ("\"db_capture\": \"logical\"", "\"db_capture\": \"bogus\""),
        ] {
            let mut bad = bytes[..12].to_vec();
            bad.extend_from_slice(text.replace(from, to).as_bytes());
            assert!(
                matches!(
                    RepoConfig::decode(&bad, Path::new("c")),
                    Err(Error::Corrupt { .. })
                ),
                "{from} -> {to}"
            );
        }
    }
}
