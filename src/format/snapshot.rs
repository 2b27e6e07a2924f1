//! Snapshot records (docs/FORMAT.md, "Snapshot records"): one small immutable file per snapshot in
//! `<repo>/snapshots/<id>`, where the id is the blake3 of the file's bytes. Writing it is the
//! commit point of a backup.
//!
//! Encoding: magic `JSNPSNAP`, u32le version (1), then a JSON body. JSON keeps records
//! readable with ordinary tools and lets later versions add optional fields.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"JSNPSNAP";
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// The small config state (docs/ARCHITECTURE.md, "Jellyfin's data dir"); always included.
    Config,
    /// jellyfin.db / library.db, captured with SQLite's online backup API; always included.
    Database,
    Metadata,
    Subtitles,
    Trickplay,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Config,
        Component::Database,
        Component::Metadata,
        Component::Subtitles,
        Component::Trickplay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Config => "config",
            Component::Database => "database",
            Component::Metadata => "metadata",
            Component::Subtitles => "subtitles",
            Component::Trickplay => "trickplay",
        }
    }

    pub fn parse(s: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Components that every snapshot includes (a restore includes them unless it is
    /// given a list without them).
    pub fn is_mandatory(self) -> bool {
        matches!(self, Component::Config | Component::Database)
    }
}

/// A top-level directory captured by a snapshot (the data dir, or a config/metadata dir
/// outside it). Its tree is the entry named `label` in the snapshot's root tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub label: String,
    pub path: String,
}

/// One selected path inside a root: a file, a directory tree, or a glob over one
/// directory's file names (`*` in the last component). Restore deletes extra files only
/// inside the items of the components it restores, minus their excludes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub root: String,
    /// `/`-separated path relative to the root; empty for the root itself.
    pub rel: String,
    pub component: Component,
    /// Subtrees (relative to the root) excluded from this item.
    #[serde(default)]
    pub excludes: Vec<String>,
}

/// What kind of path a backup could not capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotCapturedKind {
    /// A file (or a path whose type could not be determined) that could not be read.
    File,
    /// A directory that could not be listed: nothing below it is in the snapshot.
    Dir,
    /// A component whose directory was not found (a disk not mounted): the snapshot
    /// does not claim the component.
    Component,
}

/// A path inside the selection that a partial snapshot has no content for. Restore in
/// place leaves it, and everything below it, as it finds it: the snapshot cannot say what
/// it should be.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NotCaptured {
    pub kind: NotCapturedKind,
    /// Label of the root the path lies in (for a component outside every root: the label
    /// its root would have had).
    pub root: String,
    /// `/`-separated path relative to the root (lossy for names that are not UTF-8).
    pub rel: String,
    /// The absolute path, for people reading the record.
    pub path: String,
    /// For `component`: which one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Component>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    /// Sum of the sizes of all files in the snapshot.
    pub logical_bytes: u64,
    /// File content read from the source (database capture excluded).
    pub bytes_read: u64,
    /// Bytes of captured databases (none for a capture reused from the parent).
    pub db_bytes: u64,
    pub files_read: u64,
    pub files_reused: u64,
    pub new_chunks: u64,
    /// Raw and stored (after compression) sizes of the chunks this snapshot added.
    pub new_raw_bytes: u64,
    pub new_stored_bytes: u64,
    pub duration_ms: u64,
    /// Paths that could not be read (the snapshot is partial).
    pub errors: Vec<String>,
    /// Paths that kept changing while read; their last read is in the snapshot.
    #[serde(default)]
    pub changed_during_backup: Vec<String>,
    /// Databases captured as a physical copy because the logical dump could not be
    /// proven to restore exactly (path and reason).
    #[serde(default)]
    pub db_physical: Vec<String>,
}

/// How one database of a snapshot was captured, and the proof that it restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// Root label and `/`-separated path inside it (as in [`Item`]).
    pub root: String,
    pub rel: String,
    /// `logical` (a dump, rebuilt on restore) or `physical` (the online backup copy).
    pub capture: crate::format::tree::DbCapture,
    /// Why the logical capture was not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a logical capture: the observation digest (`jellyfin::observe`, hex) of the
    /// source, which the rebuilt dump was shown to equal at backup. Restore and check
    /// rebuild the dump and compare with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// The SQLite version that captured (and for a logical capture, rebuilt) it.
    pub sqlite_version: String,
    /// For a logical capture: what the proof covers, so that a later backup can reuse
    /// it (absent in records written before it existed: they are never reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpProof>,
    /// For a logical capture: the source files as they were before and after the
    /// capture, recorded only when they did not change during it and every time in it
    /// is older than the capture's start minus the timestamp granularity. A backup that
    /// finds the files in exactly this state reuses the capture without reading them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DbSourceState>,
    /// What this backup took over from its parent instead of doing it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused: Option<DbReuse>,
}

/// What a logical capture's proof covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpProof {
    /// The dump's encoding version (also in its first bytes).
    pub version: u8,
    /// blake3 of the whole dump (hex).
    pub blake3: String,
    /// The version of the observation `verified` is a digest of.
    pub observation: u32,
}

/// The identity and times of one file (stat), times in Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// A `-wal` as a backup saw it. No ctime: SQLite running as root gives the `-wal` the
/// database's owner each time it opens it, which moves its ctime without a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalState {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// The WAL header (its first 32 bytes: checkpoint sequence, salts, checksums), hex;
    /// empty when the file is shorter.
    pub header: String,
}

/// A database's files as a backup saw them: what any write or replacement changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSourceState {
    pub db: FileState,
    /// SQLite's file change counter (header bytes 24..28).
    pub change_counter: u32,
    /// The `-wal`, when there was one.
    pub wal: Option<WalState>,
    /// The Jellyfin version the database records (none for other databases).
    pub jellyfin_version: Option<String>,
}

/// What a backup reused from its parent's capture of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbReuse {
    /// The files were unchanged: the parent's dump and proof, the database not opened.
    Capture,
    /// The database was read and dumped, and its dump and observation equal the
    /// parent's proven ones: the parent's proof, without a rebuild.
    Proof,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// Unix time in nanoseconds at which the scan started.
    pub time_ns: i64,
    pub host: String,
    /// Detected install layout (debian, docker, linuxserver, custom).
    pub layout: String,
    pub data_dir: String,
    pub roots: Vec<Root>,
    pub items: Vec<Item>,
    pub components: Vec<Component>,
    pub jellyfin_version: Option<String>,
    pub tree: ChunkId,
    pub parent: Option<SnapshotId>,
    pub summary: Summary,
    pub jellysnap_version: String,
    /// One per captured database (empty in records written before databases were
    /// verified at backup).
    #[serde(default)]
    pub databases: Vec<DatabaseRecord>,
    /// Paths the backup could not capture (the snapshot is partial); restore in place
    /// leaves them alone.
    #[serde(default)]
    pub not_captured: Vec<NotCaptured>,
    /// Write sequence number: one more than the highest in the repository when the
    /// snapshot was committed (absent in records written before it existed). Orders
    /// snapshots by when they were written, whatever the clock said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl SnapshotRecord {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        let body = serde_json::to_string(self)
            .map_err(|e| Error::internal(format!("cannot encode a snapshot record: {e}")))?;
        out.extend_from_slice(body.as_bytes());
        Ok(out)
    }

    /// Decode and verify a record read from the file named `id`.
    pub fn decode(bytes: &[u8], id: &SnapshotId) -> Result<Self> {
        let bad = |d: String| Error::corrupt("snapshot record", format!("snapshots/{id}"), d);
        if SnapshotId::of(bytes) != *id {
            return Err(bad("contents do not hash to the file name".into()));
        }
        if bytes.get(..8) != Some(SNAPSHOT_MAGIC.as_slice()) {
            return Err(bad("bad magic".into()));
        }
        let ver = bytes
            .get(8..12)
            .and_then(|v| v.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| bad("truncated".into()))?;
        if ver > SNAPSHOT_VERSION {
            return Err(Error::newer_format(
                "snapshot record",
                format!("snapshots/{id}"),
                ver,
                SNAPSHOT_VERSION,
            ));
        }
        if ver == 0 {
            return Err(bad("record version 0 was never written".into()));
        }
        serde_json::from_slice(bytes.get(12..).unwrap_or_default()).map_err(|e| bad(e.to_string()))
    }

    pub fn has_component(&self, c: Component) -> bool {
        self.components.contains(&c)
    }
}

/// A snapshot as listed: its id and record.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub record: SnapshotRecord,
}

impl Snapshot {
    /// Sort key of the order snapshots were written in: by `seq` (records without one
    /// were written before every record with one), then by time, then by id.
    pub fn write_order(&self) -> (u64, i64, SnapshotId) {
        (self.record.seq.unwrap_or(0), self.record.time_ns, self.id)
    }
}

/// Names are short, unambiguous identifiers usable on a command line.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != "latest"
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn record_at(time_ns: i64, name: Option<&str>) -> SnapshotRecord {
        let mut r = super::tests::sample();
        r.time_ns = time_ns;
        r.name = name.map(str::to_string);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> SnapshotRecord {
        SnapshotRecord {
            name: Some("before-10.11.3".into()),
            tags: vec!["nightly".into()],
            time_ns: 1_764_000_000_000_000_000,
            host: "media".into(),
            layout: "debian".into(),
            data_dir: "/var/lib/jellyfin".into(),
            roots: vec![Root {
                label: "data".into(),
                path: "/var/lib/jellyfin".into(),
            }],
            items: vec![Item {
                root: "data".into(),
                rel: "data/jellyfin.db".into(),
                component: Component::Database,
                excludes: vec![],
            }],
            components: Component::ALL.to_vec(),
            jellyfin_version: Some("10.11.3".into()),
            tree: ChunkId::of(b"t"),
            parent: None,
            summary: Summary::default(),
            jellysnap_version: "0.1.0".into(),
            databases: vec![DatabaseRecord {
                root: "data".into(),
                rel: "data/jellyfin.db".into(),
                capture: crate::format::tree::DbCapture::Logical,
                reason: None,
                verified: Some("ab".repeat(32)),
                sqlite_version: "3.54.0".into(),
                dump: Some(DumpProof {
                    version: 2,
                    blake3: "cd".repeat(32),
                    observation: 1,
                }),
                source: Some(DbSourceState {
                    db: FileState {
                        dev: 2049,
                        ino: 12,
                        size: 4096,
                        mtime_ns: 1,
                        ctime_ns: 2,
                    },
                    change_counter: 3,
                    wal: None,
                    jellyfin_version: Some("10.11.3".into()),
                }),
                reused: Some(DbReuse::Capture),
            }],
            not_captured: vec![NotCaptured {
                kind: NotCapturedKind::File,
                root: "data".into(),
                rel: "data/subtitles/a.srt".into(),
                path: "/var/lib/jellyfin/data/subtitles/a.srt".into(),
                component: None,
            }],
            seq: Some(7),
        }
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let r = sample();
        let bytes = r.encode().unwrap();
        let id = SnapshotId::of(&bytes);
        assert_eq!(SnapshotRecord::decode(&bytes, &id).unwrap(), r);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(SnapshotRecord::decode(&bad, &id).is_err());
        assert!(SnapshotRecord::decode(&bad, &SnapshotId::of(&bad)).is_err());
    }

    #[test]
    fn a_newer_version_is_refused_as_newer_not_corrupt() {
        let mut bytes = sample().encode().unwrap();
        bytes[8..12].copy_from_slice(&(SNAPSHOT_VERSION + 1).to_le_bytes());
        let id = SnapshotId::of(&bytes);
        let e = SnapshotRecord::decode(&bytes, &id).unwrap_err();
        assert!(
            matches!(&e, Error::NewerFormat { what: "snapshot record", found, supported: SNAPSHOT_VERSION, .. }
                if *found == SNAPSHOT_VERSION + 1),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("snapshots/{id}")), "{e}");
        bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
        let id = SnapshotId::of(&bytes);
        assert!(matches!(
            SnapshotRecord::decode(&bytes, &id),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn records_without_not_captured_still_decode() {
        let mut r = sample();
        r.not_captured.clear();
        let mut v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("not_captured");
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bytes.extend_from_slice(v.to_string().as_bytes());
        let id = SnapshotId::of(&bytes);
        assert_eq!(SnapshotRecord::decode(&bytes, &id).unwrap(), r);
    }

    fn raw_record(v: &serde_json::Value) -> (Vec<u8>, SnapshotId) {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bytes.extend_from_slice(v.to_string().as_bytes());
        let id = SnapshotId::of(&bytes);
        (bytes, id)
    }

    #[test]
    fn database_records_without_reuse_fields_decode_as_never_reusable() {
        let mut r = sample();
        let mut v = serde_json::to_value(&r).unwrap();
        let db = &mut v["databases"][0];
        for k in ["dump", "source", "reused"] {
            db.as_object_mut().unwrap().remove(k);
        }
        let (bytes, id) = raw_record(&v);
        let d = &mut r.databases[0];
        (d.dump, d.source, d.reused) = (None, None, None);
        assert_eq!(SnapshotRecord::decode(&bytes, &id).unwrap(), r);
    }

    #[test]
    fn fields_a_reader_does_not_know_are_ignored() {
        // What an older reader does with the fields this one added: the rest decodes.
        let r = sample();
        let mut v = serde_json::to_value(&r).unwrap();
        v["databases"][0]["added_later"] = serde_json::json!({"x": 1});
        v["added_later"] = serde_json::json!(true);
        let (bytes, id) = raw_record(&v);
        assert_eq!(SnapshotRecord::decode(&bytes, &id).unwrap(), r);
    }

    #[test]
    fn names() {
        assert!(validate_name("before-10.11.3").is_ok());
        for bad in ["", "latest", "-x", "a b", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
