//! What a backup counts and collects while it walks. Each directory's walk returns its
//! own [`Tally`], merged into its parent's in name order, so no counter is shared between
//! threads and none can be lost to a poisoned lock. At the end the tally becomes the
//! snapshot record's [`Summary`] and its lists of what was not captured.

use serde::Serialize;

use crate::format::snapshot::{DatabaseRecord, NotCaptured, NotCapturedKind, Summary};
use crate::store::packer::SinkStats;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Counters and lists of one part of a backup (a file, a directory, the whole run).
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) files: u64,
    pub(super) dirs: u64,
    /// Sum of the sizes of the files.
    pub(super) logical_bytes: u64,
    /// File content read from the source (database captures excluded).
    pub(super) bytes_read: u64,
    /// Bytes of captured databases.
    pub(super) db_bytes: u64,
    pub(super) files_read: u64,
    pub(super) files_reused: u64,
    /// Paths that could not be read, with the reason (already warned about).
    pub(super) errors: Vec<String>,
    /// Paths that kept changing while read.
    pub(super) changed: Vec<String>,
    /// Databases captured physically, with the reason.
    pub(super) db_physical: Vec<String>,
    /// Paths of the selection whose content is not in the snapshot.
    pub(super) not_captured: Vec<NotCaptured>,
    pub(super) databases: Vec<DatabaseRecord>,
    /// How each logical capture's proof was made.
    pub(super) proofs: Vec<DbProof>,
    /// What the admin should know that is not an error (already warned about).
    pub(super) notices: Vec<Notice>,
    /// Files in the metadata dir that Jellyfin never writes there (media), reported
    /// together at the end.
    pub(super) foreign_in_metadata: Vec<String>,
}

/// Something a backup reports that is neither an error nor a change to the snapshot's
/// completeness: the snapshot holds everything it claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// `time-out-of-range`, `special-file-skipped`, `media-in-metadata` or
    /// `clock-went-back`.
    pub kind: &'static str,
    /// The path concerned (empty when the notice is about no one path).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub detail: String,
}

/// How a backup proved a database's logical capture: reported, not recorded (a
/// snapshot's proof is the digest its record holds, however the rebuild was made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbProof {
    /// The database, as `root/rel` of the snapshot.
    pub database: String,
    /// `none` (the parent's capture or proof reused), `whole` (the dump rebuilt) or
    /// `updated` (the last proof's rebuild brought up to date).
    pub rebuild: &'static str,
}

/// The chunks a backup added to the repository.
#[derive(Debug, Clone, Copy)]
pub(super) struct Written {
    chunks: u64,
    raw_bytes: u64,
    stored_bytes: u64,
}

impl Written {
    pub(super) fn of(stats: &SinkStats) -> Self {
        Written {
            chunks: stats.new_chunks.load(Ordering::Relaxed),
            raw_bytes: stats.new_raw_bytes.load(Ordering::Relaxed),
            stored_bytes: stats.new_stored_bytes.load(Ordering::Relaxed),
        }
    }
}

/// A finished tally in the shape of the snapshot record.
pub(super) struct Findings {
    pub(super) summary: Summary,
    /// Sorted, without duplicates.
    pub(super) not_captured: Vec<NotCaptured>,
    /// Sorted by root and path.
    pub(super) databases: Vec<DatabaseRecord>,
    /// Sorted by database.
    pub(super) proofs: Vec<DbProof>,
    pub(super) notices: Vec<Notice>,
}

impl Tally {
    /// Add `other`'s counters to these and append its lists after these.
    pub(super) fn add(&mut self, other: Tally) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.logical_bytes += other.logical_bytes;
        self.bytes_read += other.bytes_read;
        self.db_bytes += other.db_bytes;
        self.files_read += other.files_read;
        self.files_reused += other.files_reused;
        self.errors.extend(other.errors);
        self.changed.extend(other.changed);
        self.db_physical.extend(other.db_physical);
        self.not_captured.extend(other.not_captured);
        self.databases.extend(other.databases);
        self.proofs.extend(other.proofs);
        self.notices.extend(other.notices);
        self.foreign_in_metadata.extend(other.foreign_in_metadata);
    }

    /// Record a path of the selection whose content is not in the snapshot (already
    /// reported), so that restore leaves it alone.
    pub(super) fn not_captured(
        &mut self,
        kind: NotCapturedKind,
        root: &str,
        rel: &[u8],
        path: &Path,
    ) {
        self.not_captured.push(NotCaptured {
            kind,
            root: root.to_string(),
            rel: String::from_utf8_lossy(rel).into_owned(),
            path: path.to_string_lossy().into_owned(),
            component: None,
        });
    }

    pub(super) fn finish(self, written: Written, duration_ms: u64) -> Findings {
        let Tally {
            mut not_captured,
            mut databases,
            mut proofs,
            notices,
            ..
        } = self;
        proofs.sort_by(|a, b| a.database.cmp(&b.database));
        not_captured.sort();
        not_captured.dedup();
        databases.sort_by(|a, b| (&a.root, &a.rel).cmp(&(&b.root, &b.rel)));
        let summary = Summary {
            files: self.files,
            dirs: self.dirs,
            logical_bytes: self.logical_bytes,
            bytes_read: self.bytes_read,
            db_bytes: self.db_bytes,
            files_read: self.files_read,
            files_reused: self.files_reused,
            new_chunks: written.chunks,
            new_raw_bytes: written.raw_bytes,
            new_stored_bytes: written.stored_bytes,
            duration_ms,
            errors: self.errors,
            changed_during_backup: self.changed,
            db_physical: self.db_physical,
        };
        Findings {
            summary,
            not_captured,
            databases,
            proofs,
            notices,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sums_counters_and_appends_lists_in_order() {
        let mut a = Tally {
            files: 1,
            dirs: 1,
            errors: vec!["a".into()],
            ..Tally::default()
        };
        let b = Tally {
            files: 2,
            bytes_read: 7,
            files_reused: 3,
            errors: vec!["b".into()],
            changed: vec!["c".into()],
            ..Tally::default()
        };
        a.add(b);
        assert_eq!(
            (a.files, a.dirs, a.bytes_read, a.files_reused),
            (3, 1, 7, 3)
        );
        assert_eq!(a.errors, ["a", "b"]);
        assert_eq!(a.changed, ["c"]);
    }

    #[test]
    fn finish_sorts_and_dedups_what_was_not_captured() {
        let mut t = Tally::default();
        for rel in [b"b".as_slice(), b"a", b"b"] {
            t.not_captured(NotCapturedKind::File, "data", rel, Path::new("/x"));
        }
        let written = Written {
            chunks: 4,
            raw_bytes: 5,
            stored_bytes: 6,
        };
        let f = t.finish(written, 9);
        let rels: Vec<_> = f.not_captured.iter().map(|n| n.rel.as_str()).collect();
        assert_eq!(rels, ["a", "b"]);
        let s = f.summary;
        assert_eq!(
            (s.new_chunks, s.new_raw_bytes, s.new_stored_bytes),
            (4, 5, 6)
        );
        assert_eq!(s.duration_ms, 9);
    }
}
