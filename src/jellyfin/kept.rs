//! A database's last proven rebuild, kept between backups so that the next proof can
//! bring it up to date (`logical::update`) instead of rebuilding the whole dump: the
//! rebuild then costs what changed, not what the database holds.
//!
//! Each database has a slot in a directory the caller gives (the repository's local
//! state, `rebuilds/`): the rebuilt file, the row list (`rowlist`) of the dump it is the
//! rebuild of, and a record of what it is the rebuild of (the dump's blake3 and the
//! observation digest its proof found, by this jellysnap's dump, observation and SQLite
//! versions) with the file's device, inode, size, mtime and ctime once it was proven,
//! the row list's blake3, and the database's path with the data dir that keeps it. A
//! rebuild is used only when its record names the proof the parent snapshot holds and
//! the file is as recorded: one written since (any write moves its ctime, which nothing
//! can set back), replaced, or left half updated by a backup that was killed is not used
//! (the record is removed before the file is changed, and written again only once a
//! proof holds). The update rewrites the rows whose digest in
//! the new dump differs from the row list's, and whatever the kept rebuild and its list
//! hold, the result is proven against the source like a fresh rebuild; one that does
//! not prove is not trusted to refuse the dump (see `capture::dump_and_prove`). Nothing
//! here is needed: a slot that is missing, stale or unreadable costs one full rebuild.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::dump;
use crate::jellyfin::capture::{sqlite_version, Proven};
use crate::jellyfin::observe;
use crate::jellyfin::running::side_file;

/// A file's device, inode, size, mtime and ctime (ns).
type Stamp = (u64, u64, u64, i64, i64);

/// The slot of one database.
pub struct Kept {
    /// The database's path, and the data dir whose backups keep it.
    path: String,
    owner: String,
    file: PathBuf,
    /// The row list (`rowlist`) of the dump the file is the rebuild of.
    rows: PathBuf,
    record: PathBuf,
}

/// A kept rebuild taken to be brought up to date.
pub struct Taken<'a> {
    pub file: &'a Path,
    /// Its row list, and the blake3 the record names for it.
    pub rows: &'a Path,
    pub rows_blake3: [u8; 32],
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Record {
    /// What the file is the rebuild of: the dump's blake3 and the proven digest (hex).
    dump_blake3: String,
    digest: String,
    dump_version: u8,
    observation: u32,
    sqlite: String,
    /// The file as it was kept.
    file: Stamp,
    /// The blake3 of the row list (hex).
    rows: String,
    /// The database's path, and the data dir whose backups keep it.
    path: String,
    owner: String,
}

impl Record {
    /// The record of slot `kept` holding a rebuild of the dump `proven` proved, by this
    /// jellysnap, whose file is as `file` says and whose row list has the blake3 `rows`.
    fn of(kept: &Kept, proven: &Proven, file: Stamp, rows: &[u8; 32]) -> Record {
        Record {
            dump_blake3: crate::id::hex(&proven.dump_blake3),
            digest: crate::id::hex(&proven.digest),
            dump_version: dump::VERSION,
            observation: observe::VERSION,
            sqlite: sqlite_version().to_string(),
            file,
            rows: crate::id::hex(rows),
            path: kept.path.clone(),
            owner: kept.owner.clone(),
        }
    }
}

impl Kept {
    /// The slot in `dir` of the database at `name` (the path it is read at), kept by the
    /// backups of data dir `owner`.
    pub fn new(dir: &Path, name: &str, owner: &str) -> Kept {
        let key = Kept::key(name);
        Kept {
            path: name.to_string(),
            owner: owner.to_string(),
            file: dir.join(format!("{key}.db")),
            rows: dir.join(format!("{key}.rows")),
            record: dir.join(format!("{key}.json")),
        }
    }

    /// The key of the slot of the database `name` names: the names of its files.
    pub fn key(name: &str) -> String {
        crate::id::hex(&blake3::hash(name.as_bytes()).as_bytes()[..16])
    }

    /// Start reading the kept rebuild, if there is one, into the page cache: it is likely
    /// cold since the last backup, and an update reads the pages of the rows it changes
    /// (one sequential read in the background costs the disk less than those scattered
    /// reads would).
    pub fn prefetch(&self) {
        if self.record.exists() {
            crate::sys::prefetch(&self.file);
        }
    }

    /// The kept rebuild of the dump `proven` proved, to be changed by the caller: its
    /// record is removed first, so that only a later [`Kept::keep`] vouches for it again.
    /// `None` when there is none, or it is not exactly what its record says (its row
    /// list is checked by the update that reads it).
    pub fn take(&self, proven: &Proven) -> Option<Taken<'_>> {
        let record: Record = serde_json::from_slice(&fs::read(&self.record).ok()?).ok()?;
        let _ = fs::remove_file(&self.record);
        // A journal or WAL beside it is an update that did not finish (a backup killed
        // while it wrote): SQLite would replay it into the file at its next open.
        let unfinished = ["-journal", "-wal"]
            .iter()
            .any(|s| side_file(&self.file, s).exists());
        let rows_blake3: [u8; 32] = crate::id::unhex(&record.rows)?.try_into().ok()?;
        let expected = Record::of(self, proven, stamp(&self.file).ok()?, &rows_blake3);
        (!unfinished && record == expected).then_some(Taken {
            file: &self.file,
            rows: &self.rows,
            rows_blake3,
        })
    }

    /// Keep `rebuilt` (moved into the slot unless it is the slot's own file) as the
    /// rebuild of the dump `proven` proved, with that dump's row list `rows` (moved into
    /// the slot) of blake3 `rows_blake3`. Best effort: a slot that cannot be written is
    /// left empty.
    pub fn keep(&self, rebuilt: &Path, rows: &Path, rows_blake3: &[u8; 32], proven: &Proven) {
        if self.try_keep(rebuilt, rows, rows_blake3, proven).is_err() {
            self.clear();
        }
    }

    fn try_keep(
        &self,
        rebuilt: &Path,
        rows: &Path,
        rows_blake3: &[u8; 32],
        proven: &Proven,
    ) -> std::io::Result<()> {
        let _ = fs::remove_file(&self.record);
        // It holds what the database holds (as the repository's packs do): for its
        // owner alone, whatever the umask SQLite created it under.
        fs::set_permissions(rebuilt, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if rebuilt != self.file {
            if let Some(dir) = self.file.parent() {
                if fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
                    remove_any(dir);
                }
                fs::create_dir_all(dir)?;
            }
            remove_any(&self.file);
            // Never beside the side files of the one it replaces (a hot journal would be
            // replayed into it).
            self.clear_side_files();
            fs::rename(rebuilt, &self.file)?;
        }
        fs::set_permissions(rows, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        remove_any(&self.rows);
        fs::rename(rows, &self.rows)?;
        let record = Record::of(self, proven, stamp(&self.file)?, rows_blake3);
        let mut tmp = self.record.clone();
        tmp.set_extension("json.tmp");
        remove_any(&tmp);
        remove_any(&self.record);
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
        drop(f);
        fs::rename(&tmp, &self.record)
    }

    /// The file a rebuild is kept in.
    #[cfg(test)]
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// Make the record say the file is as it is now: what a change to its bytes that
    /// leaves its times as they were (a disk's) would look like.
    #[cfg(test)]
    pub(crate) fn restamp(&self) {
        let mut record: Record = serde_json::from_slice(&fs::read(&self.record).unwrap()).unwrap();
        record.file = stamp(&self.file).unwrap();
        fs::write(&self.record, serde_json::to_vec(&record).unwrap()).unwrap();
    }

    /// Empty the slot.
    pub fn clear(&self) {
        remove_any(&self.record);
        remove_any(&self.file);
        remove_any(&self.rows);
        self.clear_side_files();
    }

    /// Remove what SQLite may leave beside the file, whatever it has become.
    fn clear_side_files(&self) {
        for suffix in ["-journal", "-wal", "-shm"] {
            remove_any(&side_file(&self.file, suffix));
        }
    }
}

/// What a slot's record says of it, for [`prune`] to decide on.
pub struct Slot<'a> {
    pub key: &'a str,
    /// The dump blake3 and digest it names (hex), the database's path and the data dir
    /// that keeps it; `None` when its record is not readable.
    pub proof: Option<(&'a str, &'a str)>,
    pub path: Option<&'a str>,
    pub owner: Option<&'a str>,
}

/// Remove from `dir` every slot that `keep` does not keep, with whatever else is there
/// that is not a slot's file. Best effort.
pub fn prune(dir: &Path, keep: impl Fn(&Slot<'_>) -> bool) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        remove_any(dir);
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = name.split('.').next().unwrap_or_default().to_string();
        let record: Option<Record> = fs::read(dir.join(format!("{key}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let slot = Slot {
            key: &key,
            proof: record
                .as_ref()
                .map(|r| (r.dump_blake3.as_str(), r.digest.as_str())),
            path: record.as_ref().map(|r| r.path.as_str()),
            owner: record.as_ref().map(|r| r.owner.as_str()),
        };
        let ours = key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit());
        if !ours || !keep(&slot) {
            remove_any(&path);
        }
    }
}

/// Remove a file, or a directory with what it holds (what a slot's name may have become).
fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// What changes when a file is written or replaced (a link put in its place is not
/// followed: its own stamp never matches a kept file's).
fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path)?;
    Ok((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    ))
}
