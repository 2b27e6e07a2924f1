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
    /// The database file's size in bytes as captured (the online backup copy's), which
    /// listings show in place of the dump's size (absent in records written before it
    /// was kept). A logical rebuild holds the same content and can differ by free pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// What a rebuilt logical capture must show: the observation digest (hex) its backup
/// proved, and the observation version it is a digest of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Verified {
    pub digest: String,
    pub observation: u32,
}

impl DatabaseRecord {
    /// What a rebuild of this capture must show (logical captures with a proof). Records
    /// written before [`DumpProof`] existed hold digests of observation version 1.
    pub fn verified(&self) -> Option<Verified> {
        self.verified.as_ref().map(|d| Verified {
            digest: d.clone(),
            observation: self.dump.as_ref().map_or(1, |p| p.observation),
        })
    }
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
    /// The Jellyfin version the database records (none for other databases): its
    /// display form.
    pub jellyfin_version: Option<String>,
    /// The range of versions the database's migrations allow (absent in records written
    /// before it was kept: `jellyfin_version` is then the newest server version in its
    /// history, a lower bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jellyfin_versions: Option<VersionRange>,
}

/// A range of Jellyfin versions, both ends included; an end is absent where nothing
/// bounds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

/// How a snapshot's Jellyfin version was found (docs/FORMAT.md, "Snapshot records").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEvidence {
    /// `log` (the server's own log, exact), or the sources whose ranges were intersected,
    /// best first, joined by `+`: `database` (`__EFMigrationsHistory`), `migrations.xml`,
    /// `library.db`.
    pub source: String,
    /// Whether the version is the one the server logged, not a range.
    pub exact: bool,
    #[serde(flatten)]
    pub range: VersionRange,
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
    /// The Jellyfin version that last ran on the data, as shown: `10.11.3`, `10.10.x`,
    /// `10.11.0–10.11.6`, `10.11.3 or later`.
    pub jellyfin_version: Option<String>,
    /// Where `jellyfin_version` comes from and how exact it is (absent in records written
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jellyfin_version_source: Option<VersionEvidence>,
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
    /// The id of the repository whose write sequence `seq` counts in: the one the
    /// backup wrote the record into (a copy keeps it). Absent in records written before
    /// it existed, which count as written in the repository that holds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_repo: Option<String>,
    /// Set on a record written by `tag` or `name`: which record it supersedes (absent
    /// in a backup's record and in records written before snapshots could be edited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<Edit>,
}

/// What makes a record the new version of a snapshot (docs/FORMAT.md, "Editing a
/// snapshot"): records never change, so a new name or new tags are a new record with
/// everything else copied, which supersedes the old one. All the records of one
/// snapshot share its first record's id (`of`) and its tree; the one with the highest
/// `n` (then the latest `time_ns`, then the highest id) is the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// The snapshot's first record (the backup's, or the copy of it).
    #[serde(with = "hex_id")]
    pub of: SnapshotId,
    /// The record this one supersedes.
    #[serde(with = "hex_id")]
    pub replaces: SnapshotId,
    /// 1 for the first edit, one more than the superseded record's for each later one.
    pub n: u64,
    /// When the edit was made (Unix nanoseconds).
    pub time_ns: i64,
    /// Every other id the snapshot's records had before this one, as the edit knew
    /// them (sorted; absent when none, as in records written before it was kept): the
    /// deleted records' ids keep finding the snapshot through any number of edits.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hex_ids")]
    pub earlier: Vec<SnapshotId>,
}

/// Snapshot ids as 64 hex digits.
mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::id::SnapshotId;

    pub fn serialize<S: Serializer>(id: &SnapshotId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SnapshotId, D::Error> {
        let s = String::deserialize(d)?;
        SnapshotId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("not a snapshot id"))
    }
}

/// Lists of snapshot ids as 64 hex digits each.
mod hex_ids {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::id::SnapshotId;

    pub fn serialize<S: Serializer>(ids: &[SnapshotId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(|i| i.to_hex()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SnapshotId>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                SnapshotId::from_hex(s).ok_or_else(|| serde::de::Error::custom("not a snapshot id"))
            })
            .collect()
    }
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

/// A snapshot as listed: its id and record (the current one, when it was edited).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub record: SnapshotRecord,
    /// The snapshot's earlier records still stored, which this one supersedes (left by
    /// an edit cut short, or brought by a copy): hidden from every reader, removed with
    /// the snapshot.
    pub superseded: Vec<SnapshotId>,
    /// Every other id the snapshot's records ever had, as far as the stored ones tell
    /// (its first record's, the ones its edits superseded, the superseded records still
    /// stored): each still finds it. Sorted.
    pub former: Vec<SnapshotId>,
}

impl Snapshot {
    pub fn new(id: SnapshotId, record: SnapshotRecord) -> Snapshot {
        let mut former = Vec::new();
        if let Some(e) = &record.edit {
            former.push(e.of);
            former.push(e.replaces);
            former.extend(&e.earlier);
        }
        former.retain(|f| *f != id);
        former.sort();
        former.dedup();
        Snapshot {
            id,
            record,
            superseded: Vec::new(),
            former,
        }
    }

    /// Whether `id` is the id of one of the snapshot's records, now or before an edit.
    pub fn answers_to(&self, id: &SnapshotId) -> bool {
        self.id == *id || self.former.binary_search(id).is_ok()
    }

    /// The id of the snapshot's first record: the same for all its records.
    pub fn origin(&self) -> SnapshotId {
        self.record.edit.as_ref().map_or(self.id, |e| e.of)
    }

    /// How many times the snapshot was edited before this record.
    pub fn edits(&self) -> u64 {
        self.record.edit.as_ref().map_or(0, |e| e.n)
    }

    /// Every record of the snapshot that is stored: the superseded ones, then this one
    /// (the order a forget removes them in, so that one cut short leaves the snapshot
    /// as it was shown).
    pub fn records(&self) -> Vec<SnapshotId> {
        let mut ids = self.superseded.clone();
        ids.push(self.id);
        ids
    }

    /// Whether `query` (lowercase hex) starts the id of one of its records, now or
    /// before an edit.
    pub fn has_id_prefix(&self, query: &str) -> bool {
        self.id.to_hex().starts_with(query)
            || self.former.iter().any(|i| i.to_hex().starts_with(query))
    }

    /// The repository whose write sequence the record's `seq` counts in, `home` being
    /// the one that holds it (docs/FORMAT.md, "Snapshot records").
    pub fn writer<'s>(&'s self, home: &'s str) -> &'s str {
        self.record.seq_repo.as_deref().unwrap_or(home)
    }

    /// Whether the snapshot was written in repository `home` (not copied from another).
    pub fn written_in(&self, home: &str) -> bool {
        self.writer(home) == home
    }
}

/// The id `snaps` (current records, see [`current`]) list the snapshot under that had
/// record `id`, now or before an edit: what to print for an id a record names (a
/// parent), so that it is the one the listing shows. `None` when no snapshot had it.
pub fn current_id(snaps: &[Snapshot], id: &SnapshotId) -> Option<SnapshotId> {
    snaps.iter().find(|s| s.answers_to(id)).map(|s| s.id)
}

/// The current record of each snapshot (docs/FORMAT.md, "Editing a snapshot"): records
/// with the same first record (`edit.of`, else their own id) and the same tree are one
/// snapshot, whose current record has the highest `edit.n`, then the latest
/// `edit.time_ns`, then the highest id; the others go into its `superseded`. A record
/// that names another tree is never hidden behind it (what it references stays live).
/// Keeps the order of `snaps` for the current records.
pub fn current(snaps: Vec<Snapshot>) -> Vec<Snapshot> {
    use std::collections::HashMap;
    let key = |s: &Snapshot| {
        let time = s.record.edit.as_ref().map_or(i64::MIN, |e| e.time_ns);
        (s.edits(), time, s.id)
    };
    let mut best: HashMap<(SnapshotId, ChunkId), usize> = HashMap::new();
    for (i, s) in snaps.iter().enumerate() {
        let group = (s.origin(), s.record.tree);
        match best.get(&group) {
            Some(&j) if key(&snaps[j]) >= key(s) => {}
            _ => {
                best.insert(group, i);
            }
        }
    }
    if best.len() == snaps.len() {
        return snaps;
    }
    // (the superseded records' ids, and every id they knew)
    let mut hidden: HashMap<usize, (Vec<SnapshotId>, Vec<SnapshotId>)> = HashMap::new();
    let mut keep = vec![false; snaps.len()];
    for (i, s) in snaps.iter().enumerate() {
        let head = best[&(s.origin(), s.record.tree)];
        if head == i {
            keep[i] = true;
        } else {
            let (ids, known) = hidden.entry(head).or_default();
            ids.push(s.id);
            known.push(s.id);
            known.extend(&s.former);
        }
    }
    snaps
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep[*i])
        .map(|(i, mut s)| {
            if let Some((mut ids, known)) = hidden.remove(&i) {
                ids.sort();
                s.superseded = ids;
                let id = s.id;
                s.former.extend(known.into_iter().filter(|k| *k != id));
                s.former.sort();
                s.former.dedup();
            }
            s
        })
        .collect()
}

/// Sort `items` into the order their snapshots (`snap`) were written in, oldest first,
/// `home` being the id of the repository that holds them (docs/FORMAT.md, "Snapshot
/// records", states the rule):
///
/// - snapshots of one writer (the repository whose write sequence their `seq` counts
///   in, [`Snapshot::writer`]) keep their write order: by `seq` (records without one
///   before every record with one), then time, then id. A clock that was wrong when
///   one was taken does not reorder them;
/// - writers are interleaved by time: each snapshot counts as taken at the latest time
///   of its writer's snapshots up to it (the merge of the writers' sequences by their
///   times, a later snapshot never counted before one its writer wrote earlier); ties
///   go by writer, then write order.
///
/// A repository whose snapshots were all written in it is in `seq` order, as before
/// copies existed. `seq`s of two repositories are never compared: each counts its own.
pub fn sort_written<T>(items: &mut Vec<T>, home: &str, snap: impl Fn(&T) -> &Snapshot) {
    let n = items.len();
    let mut by_writer: Vec<usize> = (0..n).collect();
    let key = |i: usize| {
        let s = snap(&items[i]);
        (
            s.writer(home),
            s.record.seq.unwrap_or(0),
            s.record.time_ns,
            s.id,
        )
    };
    by_writer.sort_by(|a, b| key(*a).cmp(&key(*b)));
    // (counted time, rank in writer-then-write order) for each item.
    let mut keys = vec![(i64::MIN, 0usize); n];
    let mut current: Option<&str> = None;
    let mut latest = i64::MIN;
    for (rank, &i) in by_writer.iter().enumerate() {
        let s = snap(&items[i]);
        if current != Some(s.writer(home)) {
            current = Some(s.writer(home));
            latest = i64::MIN;
        }
        latest = latest.max(s.record.time_ns);
        keys[i] = (latest, rank);
    }
    let mut keyed: Vec<((i64, usize), T)> = keys.into_iter().zip(items.drain(..)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    items.extend(keyed.into_iter().map(|(_, t)| t));
}

/// The snapshot a backup on `host` of `roots` builds on (reusing its unchanged files and
/// database captures), from `snaps` in written order ([`sort_written`]): the newest with
/// the same roots taken on the same host; failing that (a renamed host, a container
/// whose host name changes each run), the newest with the same roots written in this
/// repository (`home`). A snapshot copied from another repository and taken on another
/// host never is: its times and inodes describe another machine's files.
pub fn parent_for<'s>(
    snaps: &'s [Snapshot],
    host: &str,
    roots: &[Root],
    home: &str,
) -> Option<&'s Snapshot> {
    let same_roots = || snaps.iter().rev().filter(|s| s.record.roots == roots);
    same_roots()
        .find(|s| s.record.host == host)
        .or_else(|| same_roots().find(|s| s.written_in(home)))
}

/// Names are short, unambiguous identifiers usable on a command line. A name of 4 to 64
/// hex digits could also be the start of a snapshot id, so it is refused: a command
/// given it could not tell which snapshot is meant.
pub fn validate_name(name: &str) -> Result<()> {
    if (4..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::NameLooksLikeId(name.to_string()));
    }
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
    use super::tests_support::record_at;
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
            jellyfin_version_source: None,
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
                    jellyfin_versions: None,
                }),
                reused: Some(DbReuse::Capture),
                size: None,
            }],
            not_captured: vec![NotCaptured {
                kind: NotCapturedKind::File,
                root: "data".into(),
                rel: "data/subtitles/a.srt".into(),
                path: "/var/lib/jellyfin/data/subtitles/a.srt".into(),
                component: None,
            }],
            seq: Some(7),
            seq_repo: Some("7f3a9c".repeat(5) + "ab"),
            edit: None,
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
        // Hex that could start an id is refused; shorter or longer hex, or any other
        // character, is a name.
        for id_like in ["beef", "CAFE", "20260101", &"ab".repeat(32)] {
            assert!(
                matches!(validate_name(id_like), Err(Error::NameLooksLikeId(_))),
                "{id_like}"
            );
        }
        for ok in ["abc", "v20260101", "beef-1", &"ab".repeat(33)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
    }

    /// An edited snapshot's records are one snapshot: the newest edit is it, the others
    /// are superseded, in any listing order; a record naming another tree is not hidden.
    #[test]
    fn the_newest_edit_is_the_snapshot() {
        let base = sample();
        let orig = Snapshot::new(SnapshotId([1; 32]), base.clone());
        let edit = |id: u8, n: u64, replaces: u8, time_ns: i64| {
            let mut r = base.clone();
            r.tags = vec![format!("e{id}")];
            r.edit = Some(Edit {
                of: SnapshotId([1; 32]),
                replaces: SnapshotId([replaces; 32]),
                n,
                time_ns,
                earlier: Vec::new(),
            });
            Snapshot::new(SnapshotId([id; 32]), r)
        };
        let other = Snapshot::new(SnapshotId([9; 32]), record_at(5, Some("other")));
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
            let all = [
                orig.clone(),
                edit(2, 1, 1, 10),
                edit(3, 2, 2, 20),
                other.clone(),
            ];
            let snaps: Vec<Snapshot> = order.iter().map(|&i| all[i].clone()).collect();
            let cur = current(snaps);
            assert_eq!(cur.len(), 2);
            let s = cur.iter().find(|s| s.id == SnapshotId([3; 32])).unwrap();
            assert_eq!(s.superseded, vec![SnapshotId([1; 32]), SnapshotId([2; 32])]);
            assert_eq!(s.origin(), SnapshotId([1; 32]));
            assert_eq!(s.records().last(), Some(&s.id));
            assert!(s.has_id_prefix("0101") && s.has_id_prefix("0202"));
        }
        // Two edits of the same record (made in two repositories, then copied): the
        // later one wins, the other is superseded.
        let cur = current(vec![edit(4, 1, 1, 30), edit(2, 1, 1, 10), orig.clone()]);
        assert_eq!(cur.len(), 1);
        assert_eq!(cur[0].id, SnapshotId([4; 32]));
        // A record claiming to be an edit but naming another tree stays a snapshot.
        let mut forged = edit(5, 7, 1, 40);
        forged.record.tree = ChunkId::of(b"other tree");
        assert_eq!(current(vec![orig, forged]).len(), 2);
    }

    /// Every id a snapshot's records had finds it: those its current record lists, and
    /// those a superseded record still stored knew (an edit made elsewhere, copied in).
    #[test]
    fn every_earlier_id_finds_the_snapshot() {
        let base = sample();
        let ids = |n: &[u8]| n.iter().map(|&b| SnapshotId([b; 32])).collect::<Vec<_>>();
        let edit = |id: u8, n: u64, replaces: u8, earlier: &[u8]| {
            let mut r = base.clone();
            r.tags = vec![format!("e{id}")];
            r.edit = Some(Edit {
                of: SnapshotId([1; 32]),
                replaces: SnapshotId([replaces; 32]),
                n,
                time_ns: n as i64,
                earlier: ids(earlier),
            });
            Snapshot::new(SnapshotId([id; 32]), r)
        };
        let third = edit(4, 3, 3, &[2]);
        assert_eq!(third.former, ids(&[1, 2, 3]));
        assert!(third.answers_to(&SnapshotId([2; 32])) && third.has_id_prefix("0202"));
        assert!(!third.answers_to(&SnapshotId([5; 32])));
        // A side edit (7, made in another repository) still stored beside the newest.
        let cur = current(vec![edit(7, 1, 1, &[]), edit(6, 2, 5, &[]), third]);
        assert_eq!(cur.len(), 1);
        assert_eq!(cur[0].id, SnapshotId([4; 32]));
        assert_eq!(cur[0].former, ids(&[1, 2, 3, 5, 6, 7]));
    }

    #[test]
    fn an_edit_round_trips_with_hex_ids() {
        let mut r = sample();
        r.edit = Some(Edit {
            of: SnapshotId([0xab; 32]),
            replaces: SnapshotId([0xcd; 32]),
            n: 2,
            time_ns: 5,
            earlier: vec![SnapshotId([0xef; 32])],
        });
        let bytes = r.encode().unwrap();
        let body = std::str::from_utf8(&bytes[12..]).unwrap();
        assert!(body.contains(&"ab".repeat(32)), "{body}");
        assert!(
            body.contains(&format!("\"earlier\":[\"{}\"]", "ef".repeat(32))),
            "{body}"
        );
        // A first edit lists no earlier ids: its bytes are what they were before the
        // field existed.
        let mut first = r.clone();
        if let Some(e) = first.edit.as_mut() {
            e.earlier.clear();
        }
        let first = first.encode().unwrap();
        assert!(!std::str::from_utf8(&first[12..])
            .unwrap()
            .contains("earlier"));
        let id = SnapshotId::of(&bytes);
        assert_eq!(SnapshotRecord::decode(&bytes, &id).unwrap(), r);
    }

    const HOME: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    const OTHER: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";

    /// A snapshot `n` written by repository `writer` (`None`: before `seq_repo`) with
    /// sequence number `seq` at `time`, on `host`.
    fn snap(n: u8, writer: Option<&str>, seq: u64, time: i64, host: &str) -> Snapshot {
        let mut record = sample();
        record.name = Some(format!("s{n}"));
        record.seq = Some(seq);
        record.seq_repo = writer.map(str::to_string);
        record.time_ns = time;
        record.host = host.into();
        Snapshot::new(SnapshotId([n; 32]), record)
    }

    fn sorted(mut snaps: Vec<Snapshot>) -> Vec<String> {
        sort_written(&mut snaps, HOME, |s| s);
        snaps.into_iter().filter_map(|s| s.record.name).collect()
    }

    /// One repository's own snapshots go by `seq`, whatever the clock said; copies from
    /// another interleave by time, each repository's in its own write order, and the two
    /// numberings are never compared (the other's `seq`s lower or higher than ours).
    #[test]
    fn writers_keep_their_write_order_and_interleave_by_time() {
        let own = || {
            vec![
                snap(1, Some(HOME), 1, 120, "b"),
                snap(2, None, 2, 300, "b"),
                // The clock went back: still after s2.
                snap(3, Some(HOME), 3, 250, "b"),
            ]
        };
        assert_eq!(sorted(own()), ["s1", "s2", "s3"]);
        for base in [0, 1000] {
            let mut all = own();
            all.extend([
                snap(11, Some(OTHER), base + 1, 100, "a"),
                snap(12, Some(OTHER), base + 2, 200, "a"),
                snap(13, Some(OTHER), base + 3, 150, "a"),
                snap(14, Some(OTHER), base + 4, 400, "a"),
            ]);
            all.reverse();
            assert_eq!(
                sorted(all),
                ["s11", "s1", "s12", "s13", "s2", "s3", "s14"],
                "other's seq from {base}"
            );
        }
    }

    /// A backup's parent is the newest snapshot of its roots taken on its host, else the
    /// newest of its roots written in this repository, never another host's copy.
    #[test]
    fn a_parent_is_from_this_host_or_written_here() {
        let roots = sample().roots;
        let mut snaps = vec![
            snap(1, Some(HOME), 1, 100, "b"),
            snap(2, Some(OTHER), 9, 200, "a"),
        ];
        let name = |s: Option<&Snapshot>| s.and_then(|s| s.record.name.clone());
        assert_eq!(
            name(parent_for(&snaps, "b", &roots, HOME)).as_deref(),
            Some("s1")
        );
        // A host whose name changed: what this repository wrote, not the copy.
        assert_eq!(
            name(parent_for(&snaps, "c", &roots, HOME)).as_deref(),
            Some("s1")
        );
        // The copy's own host builds on it.
        assert_eq!(
            name(parent_for(&snaps, "a", &roots, HOME)).as_deref(),
            Some("s2")
        );
        snaps.remove(0);
        assert_eq!(parent_for(&snaps, "b", &roots, HOME).map(|s| s.id), None);
        let other_roots = vec![Root {
            label: "config".into(),
            path: "/etc/jellyfin".into(),
        }];
        assert_eq!(
            parent_for(&snaps, "a", &other_roots, HOME).map(|s| s.id),
            None
        );
    }

    proptest::proptest! {
        /// The order is the merge of the writers' sequences that always takes the head
        /// dated earliest: each writer's write order kept, the rest by time.
        #[test]
        fn the_order_is_the_merge_of_the_writers_by_their_heads(
            picks in proptest::collection::vec((0usize..3, 0i64..50), 0..24)
        ) {
            let writers = [Some(HOME), Some(OTHER), Some("c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0")];
            let mut next_seq = [1u64, 40, 7];
            let mut chains: Vec<Vec<Snapshot>> = vec![Vec::new(); 3];
            let mut all = Vec::new();
            for (n, (w, t)) in picks.iter().enumerate() {
                // Distinct times: the merge has no ties to break.
                let s = snap(n as u8, writers[*w], next_seq[*w], t * 100 + n as i64, "h");
                next_seq[*w] += 1;
                chains[*w].push(s.clone());
                all.push(s);
            }
            let mut merged = Vec::new();
            let mut heads = [0usize; 3];
            loop {
                let next = (0..3)
                    .filter_map(|w| Some((chains[w].get(heads[w])?.record.time_ns, w)))
                    .min();
                let Some((_, w)) = next else { break };
                merged.push(chains[w][heads[w]].id);
                heads[w] += 1;
            }
            sort_written(&mut all, HOME, |s| s);
            let got: Vec<SnapshotId> = all.iter().map(|s| s.id).collect();
            proptest::prop_assert_eq!(got, merged);
        }
    }
}
