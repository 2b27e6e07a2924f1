//! What `setup` finds of a Jellyfin install: its layout and directories, from a data dir
//! given by the user or found at the usual places. The layout detection itself is
//! `layout::detect`'s, so setup and backup cannot disagree about an install.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::format::snapshot::Component;
use crate::jellyfin::layout::{detect, SourceOptions};

/// An install as the configuration file names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Install {
    /// `debian`, `docker`, `linuxserver` (or `custom`).
    pub layout: String,
    pub data_dir: PathBuf,
    pub config_dir: PathBuf,
    /// Only when it is not the default `DATA_DIR/metadata` (system.xml's MetadataPath).
    pub metadata_dir: Option<PathBuf>,
    /// Where the layout keeps them on this host, when they are there (never backed up:
    /// the log tells which server version ran last).
    pub cache_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
}

/// Where installs usually keep their data dir, relative to the file system's root: the
/// Debian package's first, then host directories commonly mounted at an image's
/// `/config` (official image: the data dir itself; linuxserver.io: its parent).
pub const USUAL_DATA_DIRS: [&str; 6] = [
    "var/lib/jellyfin",
    "srv/jellyfin/config",
    "opt/jellyfin/config",
    "srv/jellyfin/config/data",
    "opt/jellyfin/config/data",
    "var/lib/docker/volumes/jellyfin-config/_data",
];

/// The install whose data dir is `dir`. The host directory of a linuxserver.io
/// `/config` is accepted for its `data/`, as the user sees that one mounted.
pub fn describe(dir: &Path) -> Result<Install> {
    let lsio = dir.join("data");
    let data_dir = if !dir.join("data/jellyfin.db").is_file()
        && !dir.join("data/library.db").is_file()
        && dir.join("system.xml").is_file()
        && lsio.join("data").is_dir()
    {
        lsio
    } else {
        dir.to_path_buf()
    };
    let source = detect(&SourceOptions {
        data_dir,
        config_dir: None,
        metadata_dir: None,
        components: BTreeSet::from([Component::Metadata]),
    })?;
    let data = source.data_dir;
    let metadata_dir = source.metadata_dir.filter(|m| *m != data.join("metadata"));
    let existing = |p: PathBuf| p.is_dir().then_some(p);
    let (cache_dir, log_dir) = match source.layout {
        "debian" => {
            // DATA_DIR is PREFIX/var/lib/jellyfin.
            let var = data.parent().and_then(Path::parent);
            (
                var.and_then(|v| existing(v.join("cache/jellyfin"))),
                var.and_then(|v| existing(v.join("log/jellyfin"))),
            )
        }
        "linuxserver" => (
            existing(source.config_dir.join("cache")),
            existing(source.config_dir.join("log")),
        ),
        // The official image's cache is a mount of its own (`/cache`), not to be found
        // from the data dir.
        _ => (None, existing(data.join("log"))),
    };
    Ok(Install {
        layout: source.layout.to_string(),
        data_dir: data,
        config_dir: source.config_dir,
        metadata_dir,
        cache_dir,
        log_dir,
    })
}

/// Every install found at [`USUAL_DATA_DIRS`] below `root` (`/` on a real host), each
/// once.
pub fn find(root: &Path) -> Vec<Install> {
    let mut found: Vec<Install> = Vec::new();
    for rel in USUAL_DATA_DIRS {
        let dir = root.join(rel);
        if !dir.is_dir() {
            continue;
        }
        if let Ok(i) = describe(&dir) {
            if !found.iter().any(|f| f.data_dir == i.data_dir) {
                found.push(i);
            }
        }
    }
    found
}
