//! The upgrade guard: a named snapshot of a Jellyfin install before another server version
//! runs on its data (Jellyfin migrates its database on the first start of a new version
//! and cannot go back), taken from an apt hook, a systemd pre-start or a container's
//! one-shot; and the small per-data-dir state that lets a pre-start check be a no-op
//! without opening the repository when nothing changed.
//!
//! Names: `before-jellyfin-<old version>`, the version sanitized to the characters a
//! snapshot name may hold (anything else becomes `_`). When that name is taken (the same
//! upgrade done again after a rollback), the next free of `<name>-2`, `<name>-3`, ... is
//! used, so the newest guard snapshot of a version is the one with the highest number.
//!
//! State: one JSON file per data dir (named by the BLAKE3 of its canonical path) in the
//! state dir the caller gives, written atomically. It is a memo, never the only record:
//! a missing, unreadable or newer-format state means "not known", and the guard then
//! takes a snapshot rather than skip one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jellyfin::{self, SourceOptions};
use crate::ops::backup::{self, BackupOptions, BackupOutcome};
use crate::ops::clock;
use crate::ops::progress::Progress;
use crate::store::durable::{self, StdFs};
use crate::store::Place;

pub use crate::jellyfin::install::{describe, find, Install, USUAL_DATA_DIRS};
pub use crate::jellyfin::server::version_from_assembly;

pub const NAME_PREFIX: &str = "before-jellyfin-";
/// The format of the state file this jellysnap writes and reads.
const STATE_FORMAT: u32 = 1;

/// The snapshot name for data an `old_version` server ran on (unnumbered).
pub fn base_name(old_version: &str) -> String {
    let v: String = old_version
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
                c
            } else {
                '_'
            }
        })
        .take(100 - NAME_PREFIX.len() - 4)
        .collect();
    let v = if v.is_empty() { "unknown".into() } else { v };
    format!("{NAME_PREFIX}{v}")
}

/// `base`, or the first of `base-2`, `base-3`, ... that `taken` does not hold.
pub fn free_name(taken: &BTreeSet<String>, base: &str) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| base.to_string())
}

/// How a guard snapshot is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Always named: the base name, else a numbered variant.
    Always,
    /// Named only while the base name is free; otherwise unnamed (tags only), so that
    /// snapshots taken "on doubt" at every start are left to the retention policy.
    IfFree,
}

#[derive(Debug, Clone)]
pub struct GuardOptions {
    pub source: SourceOptions,
    /// The server version whose data this is.
    pub old_version: String,
    pub naming: Naming,
    pub tags: Vec<String>,
}

/// Take the guard snapshot. The repository must exist (a hook never creates one: a
/// backup disk that is not mounted must not get a repository in its mount point).
pub fn snapshot(
    place: &Place,
    opts: &GuardOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let mut bopts = BackupOptions {
        source: opts.source.clone(),
        name: None,
        tags: opts.tags.clone(),
        create_repository: false,
    };
    let (repo, _) = backup::open_repository(place, &bopts, progress)?;
    let base = base_name(&opts.old_version);
    // Another backup may take the name meanwhile: pick the next one then.
    let mut attempts = 0;
    loop {
        let (snaps, _) = repo.snapshots()?;
        let taken: BTreeSet<String> = snaps.into_iter().filter_map(|s| s.record.name).collect();
        bopts.name = match opts.naming {
            Naming::Always => Some(free_name(&taken, &base)),
            Naming::IfFree => (!taken.contains(&base)).then(|| base.clone()),
        };
        match backup::backup(&repo, &bopts, progress) {
            Err(Error::DuplicateName(_)) if attempts < 3 => attempts += 1,
            r => return r,
        }
    }
}

/// Which server version last ran on the data in `data_dir`, as a backup and a restore
/// read it (`jellyfin::version::live`: the server's log, else its database's migrations,
/// read without disturbing a running server; `scratch` takes a private copy when one is
/// needed). Only one release: a range names no snapshot.
pub fn last_ran_version(
    data_dir: &Path,
    config_dir: Option<&Path>,
    scratch: &Path,
) -> Option<String> {
    let found = jellyfin::version::live_at(data_dir, config_dir, scratch)?;
    match (found.range.min, found.range.max) {
        (Some(a), Some(b)) if a == b => Some(a.to_string()),
        _ => None,
    }
}

/// What the guard remembers of a data dir between two starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardState {
    pub format: u32,
    pub data_dir: String,
    /// The server version allowed to start on the data last time (`None`: not known,
    /// e.g. a floating image tag).
    pub server_version: Option<String>,
    /// The snapshot the guard took then, if it took one.
    pub snapshot: Option<String>,
    pub time_ns: i64,
}

impl GuardState {
    pub fn new(data_dir: &Path, server_version: Option<String>, snapshot: Option<String>) -> Self {
        GuardState {
            format: STATE_FORMAT,
            data_dir: canonical(data_dir).to_string_lossy().into_owned(),
            server_version,
            snapshot,
            time_ns: clock::now_ns(),
        }
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// The state file of `data_dir` in `state_dir`.
pub fn state_path(state_dir: &Path, data_dir: &Path) -> PathBuf {
    let canon = canonical(data_dir);
    let hash = blake3::hash(canon.as_os_str().as_encoded_bytes()).to_hex();
    state_dir.join(format!("guard-{}.json", &hash.as_str()[..16]))
}

/// The state of `data_dir`, or `None` when there is none this jellysnap can use.
pub fn read_state(state_dir: &Path, data_dir: &Path) -> Option<GuardState> {
    let bytes = std::fs::read(state_path(state_dir, data_dir)).ok()?;
    let s: GuardState = serde_json::from_slice(&bytes).ok()?;
    (s.format == STATE_FORMAT && s.data_dir == canonical(data_dir).to_string_lossy()).then_some(s)
}

/// Write the state of its data dir, atomically and durably.
pub fn write_state(state_dir: &Path, state: &GuardState) -> Result<()> {
    durable::create_dir_durable(state_dir)?;
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::Internal(e.to_string()))?;
    durable::write_atomic(
        &StdFs,
        &state_path(state_dir, Path::new(&state.data_dir)),
        &bytes,
    )
}

/// Whether a pre-start must snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The installed server is the one that ran last: nothing to protect.
    UpToDate,
    /// Snapshot; `old` is the version remembered, when there is one.
    Snapshot { old: Option<String>, reason: String },
}

/// Compare the installed server (`None`: not known exactly) with what the state says
/// ran last. Any doubt snapshots.
pub fn decide(installed: Option<&str>, state: Option<&GuardState>) -> Decision {
    match (installed, state) {
        (Some(v), Some(s)) if s.server_version.as_deref() == Some(v) => Decision::UpToDate,
        (Some(v), Some(s)) => Decision::Snapshot {
            old: s.server_version.clone(),
            reason: match &s.server_version {
                Some(old) => format!("the server changed from {old} to {v}"),
                None => format!("the server version that ran last is not known; {v} is installed"),
            },
        },
        (Some(v), None) => Decision::Snapshot {
            old: None,
            reason: format!("no guard snapshot of this data dir yet; {v} is installed"),
        },
        (None, s) => Decision::Snapshot {
            old: s.and_then(|s| s.server_version.clone()),
            reason: "the installed server version is not known exactly, so every start is guarded"
                .into(),
        },
    }
}

/// Write `contents` to `path` atomically and durably with mode 0644, refusing to replace
/// an existing file unless `overwrite`. Returns whether a file was replaced.
pub fn install_file(path: &Path, contents: &str, overwrite: bool) -> Result<bool> {
    let existed = path.symlink_metadata().is_ok();
    if existed && !overwrite {
        return Err(Error::Option(crate::error::OptionError::FileExists(
            path.to_path_buf(),
        )));
    }
    let dir = durable::parent_dir(path);
    durable::create_dir_durable(dir)?;
    // Readable by all (apt and systemd tools run as users too) from the moment it has
    // its name: the mode is set on the temp file, before the rename.
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| tmp.write_all(contents.as_bytes()))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    durable::sync_dir(dir)?;
    Ok(existed)
}

/// The installed Jellyfin package's version (`10.11.4+deb12`), as dpkg says: the one
/// reader of it for setup, the hooks and the restore.
pub fn installed_package() -> Option<String> {
    jellyfin::installed::debian_package().map(|(_, version)| version)
}

/// Remove a file `install_file` wrote (durably). Returns whether it was there.
pub fn remove_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            durable::sync_dir(durable::parent_dir(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_numbered() {
        assert_eq!(base_name("10.11.3+deb12"), "before-jellyfin-10.11.3+deb12");
        assert_eq!(base_name("1:10.11.0~rc1"), "before-jellyfin-1_10.11.0_rc1");
        assert_eq!(base_name(""), "before-jellyfin-unknown");
        let taken: BTreeSet<String> = ["before-jellyfin-1", "before-jellyfin-1-2"]
            .map(String::from)
            .into();
        assert_eq!(
            free_name(&taken, "before-jellyfin-1"),
            "before-jellyfin-1-3"
        );
        assert_eq!(free_name(&taken, "before-jellyfin-2"), "before-jellyfin-2");
        let long = base_name(&"9".repeat(300));
        assert!(crate::format::snapshot::validate_name(&format!("{long}-99")).is_ok());
    }

    #[test]
    fn any_doubt_snapshots() {
        let s = |v: Option<&str>| GuardState::new(Path::new("/d"), v.map(String::from), None);
        assert_eq!(
            decide(Some("10.11.4"), Some(&s(Some("10.11.4")))),
            Decision::UpToDate
        );
        assert!(matches!(
            decide(Some("10.11.4"), Some(&s(Some("10.11.3")))),
            Decision::Snapshot { old: Some(o), .. } if o == "10.11.3"
        ));
        assert!(matches!(
            decide(Some("10.11.4"), None),
            Decision::Snapshot { old: None, .. }
        ));
        assert!(matches!(
            decide(None, Some(&s(None))),
            Decision::Snapshot { .. }
        ));
        assert!(matches!(
            decide(Some("10.11.4"), Some(&s(None))),
            Decision::Snapshot { .. }
        ));
    }
}
