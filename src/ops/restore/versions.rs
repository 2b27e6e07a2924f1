//! What an in-place rollback means for the server: the version that last ran on the live
//! data (read now, from the same sources a backup reads) against the snapshot's, the
//! server to start afterwards, whether the installed one is newer than the snapshot's
//! data (it would migrate it again on its first start), and whether the data dir's file
//! system keeps the 2 GB free that Jellyfin 10.11 and later need to start.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Action, RestorePlan};
use crate::format::snapshot::SnapshotRecord;
use crate::jellyfin::installed;
use crate::jellyfin::version::{self, Found, Range, Version};

/// The free space Jellyfin 10.11 and later refuse to start without in their data dir
/// (their startup check's limit: 2 GiB less one byte).
pub const JELLYFIN_MIN_FREE: u64 = 2_147_483_647;

/// A version as found, for the plan.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub version: String,
    pub exact: bool,
    pub source: String,
    #[serde(skip)]
    range: Range,
}

impl VersionView {
    fn of(found: &Found) -> VersionView {
        let (version, evidence) = found.to_record();
        VersionView {
            version,
            exact: evidence.exact,
            source: evidence.source,
            range: found.range,
        }
    }

    /// The snapshot's: its recorded evidence; a record from before evidence was kept
    /// names the newest server that had run, taken as it is.
    fn of_record(r: &SnapshotRecord) -> Option<VersionView> {
        let shown = r.jellyfin_version.clone()?;
        match &r.jellyfin_version_source {
            Some(e) => Some(VersionView {
                version: shown,
                exact: e.exact,
                source: e.source.clone(),
                range: Range::from_record(&e.range),
            }),
            None => Some(VersionView {
                range: Range::exact(Version::parse(&shown)?),
                version: shown,
                exact: false,
                source: "database".into(),
            }),
        }
    }
}

/// The installed server, where the system or the caller says.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    /// The server version (`10.11.4`).
    pub version: String,
    /// `dpkg` (the Debian package) or `given` (by the caller: a container's image).
    pub from: &'static str,
    /// For `dpkg`: the package and its full version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
}

/// What the rollback does to the server's version.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// The version that last ran on the live data, when it can be told.
    pub live: Option<VersionView>,
    pub snapshot: Option<VersionView>,
    /// `back`, `forward`, `same`, or `unknown` (a version missing, or ranges that overlap).
    pub direction: &'static str,
    pub installed: Option<Installed>,
    /// The installed server is newer than the snapshot's data.
    pub installed_newer: bool,
    /// The version to install instead (for the Debian package, its full version string):
    /// the snapshot's, or the newest its range allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
}

/// The data dir's file system after the restore, estimated.
#[derive(Debug, Clone, Serialize)]
pub struct Space {
    #[serde(serialize_with = "super::lossy")]
    pub path: PathBuf,
    pub free_now: u64,
    /// What the restore frees: the files it replaces or deletes on that file system.
    pub frees: u64,
    /// What it writes there.
    pub writes: u64,
    /// `free_now + frees - writes` (0 when that is below 0).
    pub free_after: u64,
    pub needed: u64,
}

impl Space {
    pub fn enough(&self) -> bool {
        self.free_after >= self.needed
    }
}

/// What the rollback of `rec`'s data means for the server. `server_version` is the
/// installed server as the caller knows it (a container's image); without it, the
/// Debian package's is asked.
pub fn rollback(rec: &SnapshotRecord, scratch: &Path, server_version: Option<&str>) -> Rollback {
    let live = live_version(rec, scratch).map(|f| VersionView::of(&f));
    let snapshot = VersionView::of_record(rec);
    let direction = match (&live, &snapshot) {
        (Some(l), Some(s)) => direction(&l.range, &s.range),
        _ => "unknown",
    };
    let installed = match server_version {
        Some(v) => Version::parse(v).map(|p| Installed {
            version: p.to_string(),
            from: "given",
            package: None,
            package_version: None,
        }),
        None => installed::debian_package().map(|(package, full)| Installed {
            version: installed::upstream(&full).to_string(),
            from: "dpkg",
            package: Some(package),
            package_version: Some(full),
        }),
    };
    let target = snapshot.as_ref().and_then(|s| s.range.max.or(s.range.min));
    let installed_newer = match (&installed, &snapshot) {
        (Some(i), Some(s)) => Version::parse(&i.version)
            .zip(s.range.max)
            .is_some_and(|(i, max)| !s.range.admits(&i) && i > max),
        _ => false,
    };
    let install = match (&installed, target) {
        (Some(i), Some(t)) if installed_newer => Some(match &i.package_version {
            Some(full) => installed::like(full, &t.to_string()),
            None => t.to_string(),
        }),
        _ => None,
    };
    Rollback {
        live,
        snapshot,
        direction,
        installed,
        installed_newer,
        install,
    }
}

fn direction(live: &Range, snap: &Range) -> &'static str {
    let newer = |a: &Range, b: &Range| match (a.min, b.max) {
        (Some(lo), Some(hi)) => lo > hi && !lo.same_release(&hi),
        _ => false,
    };
    if newer(live, snap) {
        "back"
    } else if newer(snap, live) {
        "forward"
    } else if live == snap && live.min.is_some() && live.min == live.max {
        "same"
    } else {
        "unknown"
    }
}

/// The version that last ran on the live data the snapshot was taken from.
fn live_version(rec: &SnapshotRecord, scratch: &Path) -> Option<Found> {
    let config_dir = rec.roots.iter().find(|r| r.label == "config");
    version::live_at(
        Path::new(&rec.data_dir),
        config_dir.map(|r| Path::new(&r.path)),
        scratch,
    )
}

/// The space an in-place restore leaves on the data dir's file system, when Jellyfin
/// needs it to start: not for a snapshot of 10.10 or earlier.
pub fn space(plan: &RestorePlan, snapshot: Option<&VersionView>, data_dir: &Path) -> Option<Space> {
    let first_needing = Version::parse("10.11.0")?;
    if snapshot
        .and_then(|s| s.range.max)
        .is_some_and(|max| max < first_needing)
    {
        return None;
    }
    let dev = nearest(data_dir)?.dev();
    let on_fs = |p: &Path| nearest(p).is_some_and(|m| m.dev() == dev);
    let (mut frees, mut writes) = (0u64, 0u64);
    for a in &plan.actions {
        match a {
            Action::Write { path, size, .. } | Action::Database { path, size, .. } => {
                // A database whose place is a link is restored into what it points at.
                let target = if matches!(a, Action::Database { .. }) {
                    std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())
                } else {
                    path.clone()
                };
                if on_fs(&target) {
                    writes += size;
                    frees += allocated(&target);
                }
            }
            Action::Delete { path } | Action::RemoveSideFile { path } if on_fs(path) => {
                frees += tree_size(path);
            }
            _ => {}
        }
    }
    let free_now = crate::sys::free_space(data_dir).ok()?;
    Some(Space {
        path: data_dir.to_path_buf(),
        free_now,
        frees,
        writes,
        free_after: (free_now + frees).saturating_sub(writes),
        needed: JELLYFIN_MIN_FREE,
    })
}

/// The metadata of `p` or, when it does not exist yet, of its nearest existing ancestor.
fn nearest(p: &Path) -> Option<std::fs::Metadata> {
    p.ancestors()
        .find_map(|a| std::fs::symlink_metadata(a).ok())
}

/// The space a plain file takes (0 for anything else).
fn allocated(p: &Path) -> u64 {
    std::fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.blocks() * 512)
}

/// The space a file or tree takes, links not followed.
fn tree_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.blocks() * 512;
    }
    let children = std::fs::read_dir(p).into_iter().flatten().flatten();
    m.blocks() * 512 + children.map(|e| tree_size(&e.path())).sum::<u64>()
}
