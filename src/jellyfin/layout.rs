//! Where a Jellyfin server keeps its state: detect the install layout from a
//! data dir, resolve the config and metadata dirs, and turn the selected components into
//! roots and items (the [`Selection`]) that backup walks and restore scopes its deletes to.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::snapshot::{Component, Item, NotCaptured, NotCapturedKind, Root};
use crate::jellyfin::dbconfig::DbConfig;

#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub data_dir: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub metadata_dir: Option<PathBuf>,
    /// Optional components wanted; config and database are always added.
    pub components: BTreeSet<Component>,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub layout: &'static str,
    pub data_dir: PathBuf,
    pub config_dir: PathBuf,
    pub components: BTreeSet<Component>,
    pub selection: Selection,
    /// The metadata dir, when the metadata component is selected and there.
    pub metadata_dir: Option<PathBuf>,
    /// Selected components whose directory is not there (a disk not mounted): left out
    /// of `components`, so the snapshot does not claim them.
    pub missing: Vec<NotCaptured>,
    /// Plugins' data left out of the snapshot (said at each backup).
    pub left_out: Vec<LeftOut>,
    /// `database.xml`, when the config dir has one.
    pub db_config: Option<DbConfig>,
    /// Where jellyfin.db is: `data/jellyfin.db`, or where `database.xml` relocates it.
    pub jellyfin_db: PathBuf,
}

/// Plugins' data a snapshot leaves out, where it is and why.
#[derive(Debug, Clone)]
pub struct LeftOut {
    pub root: String,
    pub rel: Vec<u8>,
    pub path: PathBuf,
    pub why: LeftOutWhy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeftOutWhy {
    /// An entry of the data path that is a link to a directory: not followed.
    LinkedDir,
    /// A name that is not UTF-8, which a snapshot's items cannot hold: a database
    /// there would be stored without its `-wal`, so it is not stored at all.
    NameNotUtf8,
}

impl Source {
    /// Whether `path` is a file the walk leaves out (see [`LeftOutWhy::NameNotUtf8`]).
    pub fn leaves_out(&self, path: &Path) -> bool {
        self.left_out
            .iter()
            .any(|l| l.why == LeftOutWhy::NameNotUtf8 && l.path == path)
    }
}

/// Roots and items of a snapshot; decides for each path whether it is part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub roots: Vec<Root>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Part of the snapshot, through an item of this component.
    Include(Component),
    /// A directory on the way to an item: recorded, but only selected children inside.
    Descend,
    Skip,
}

/// The mark an in-place restore leaves at the top of each root it restores until all it
/// wrote is durable: while it is there, the next restore compares every file it would
/// keep by content. Never state: no backup captures it and no restore deletes it.
pub const UNFINISHED_RESTORE: &str = ".jellysnap-unfinished-restore";

/// The mark a restore into a target leaves at the top of the target from before it
/// writes anything until everything it wrote is durable, naming the snapshot: the same
/// restore run again finishes what it finds there instead of refusing a target that is
/// not empty. Never state, like [`UNFINISHED_RESTORE`].
pub const RESTORE_TARGET: &str = ".jellysnap-unfinished-target";

/// Never state, wherever they appear: live-database side files and leftovers.
pub fn excluded_name(name: &[u8]) -> bool {
    let ends = |s: &[u8]| name.ends_with(s);
    if ends(b"-wal")
        || ends(b"-shm")
        || ends(b"-journal")
        || name == b"library.db.old"
        || name == UNFINISHED_RESTORE.as_bytes()
        || name == RESTORE_TARGET.as_bytes()
    {
        return true;
    }
    // `*.bakN` leftovers of database migrations.
    if let Some(pos) = name.windows(4).rposition(|w| w == b".bak") {
        let tail = &name[pos + 4..];
        return !tail.is_empty() && tail.iter().all(u8::is_ascii_digit);
    }
    false
}

fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.iter().position(|&c| c == b'*') {
        None => pattern == name,
        Some(i) => {
            let (pre, post) = (&pattern[..i], &pattern[i + 1..]);
            name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        }
    }
}

/// `rel` equals `base` or lies beneath it (byte-wise, `/`-separated).
fn under(rel: &[u8], base: &[u8]) -> bool {
    base.is_empty() || rel == base || (rel.starts_with(base) && rel.get(base.len()) == Some(&b'/'))
}

fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

impl Item {
    fn is_glob(&self) -> bool {
        self.rel.contains('*')
    }

    /// Does this item select `rel` (a path relative to its root)?
    pub fn covers(&self, rel: &[u8]) -> bool {
        let covered = if self.is_glob() {
            let (pdir, pname) = split_last(self.rel.as_bytes());
            let (dir, name) = split_last(rel);
            dir == pdir && glob_match(pname, name)
        } else {
            under(rel, self.rel.as_bytes())
        };
        covered && !self.excludes.iter().any(|x| under(rel, x.as_bytes()))
    }

    /// Is `rel` a directory on the way to this item?
    fn leads_to(&self, rel: &[u8]) -> bool {
        if self.is_glob() {
            // The glob's directory itself is on the way to its files.
            return rel.is_empty() || under(split_last(self.rel.as_bytes()).0, rel);
        }
        let target = self.rel.as_bytes();
        rel.is_empty() || (target.len() > rel.len() && under(target, rel))
    }
}

impl Selection {
    pub fn classify(&self, root: &str, rel: &[u8]) -> Class {
        let (_, name) = split_last(rel);
        if !rel.is_empty() && excluded_name(name) {
            return Class::Skip;
        }
        let items = self.items.iter().filter(|i| i.root == root);
        let mut descend = false;
        for item in items {
            if item.covers(rel) {
                return Class::Include(item.component);
            }
            descend |= item.leads_to(rel);
        }
        if descend {
            Class::Descend
        } else {
            Class::Skip
        }
    }

    /// Is `rel` an item's own path or a directory on the way to one? (Such a path is
    /// followed when it is a symlink to a directory.)
    pub fn is_anchor(&self, root: &str, rel: &[u8]) -> bool {
        self.items
            .iter()
            .filter(|i| i.root == root)
            .any(|i| (!i.is_glob() && i.rel.as_bytes() == rel) || i.leads_to(rel))
    }

    /// The same selection restricted to the items of `components`.
    pub fn restricted(&self, components: &BTreeSet<Component>) -> Selection {
        Selection {
            roots: self.roots.clone(),
            items: self
                .items
                .iter()
                .filter(|i| components.contains(&i.component))
                .cloned()
                .collect(),
        }
    }

    pub fn root_path(&self, label: &str) -> Option<&str> {
        self.roots
            .iter()
            .find(|r| r.label == label)
            .map(|r| r.path.as_str())
    }
}

/// Extensions of video files, which Jellyfin reads from libraries and never writes into
/// its metadata dir (it writes images and `.nfo`-like text there): one there belongs to a
/// library that overlaps the metadata dir.
const MEDIA_EXTENSIONS: [&str; 18] = [
    "mkv", "mp4", "m4v", "avi", "ts", "m2ts", "mts", "webm", "mov", "wmv", "mpg", "mpeg", "flv",
    "vob", "ogv", "3gp", "iso", "divx",
];

pub fn is_media(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|e| MEDIA_EXTENSIONS.iter().any(|m| e.eq_ignore_ascii_case(m)))
}

/// Read a simple `<Tag>value</Tag>` from system.xml.
fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    let v = xml[start..end].trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Find the install `opts` points at and what a snapshot of it holds.
pub fn detect(opts: &SourceOptions) -> Result<Source> {
    let data_dir = check_data_dir(&opts.data_dir, opts.config_dir.as_deref())?;
    let (layout, config_dir) = match &opts.config_dir {
        Some(c) => {
            if !c.is_dir() {
                return Err(Error::NotJellyfin {
                    path: c.clone(),
                    detail: "--config-dir does not exist".into(),
                });
            }
            // The layout's own config dir, given explicitly (as the configuration file
            // does), is still that layout.
            let c = canonical(c);
            match detect_config_dir(&data_dir) {
                Ok((layout, found)) if canonical(&found) == c => (layout, c),
                _ => ("custom", c),
            }
        }
        None => detect_config_dir(&data_dir)?,
    };
    let db_config = DbConfig::read(&config_dir, &data_dir);
    if let Some(c) = &db_config {
        c.ensure_sqlite()?;
        // A snapshot without the database would claim it all the same.
        if let Some(p) = c.path.as_ref().filter(|p| !p.is_file()) {
            return Err(Error::NotJellyfin {
                path: p.clone(),
                detail: format!(
                    "{} keeps the database here (option `path`), but it is not there: is the disk that holds it mounted?",
                    c.file.display()
                ),
            });
        }
    }
    let mut dirs = Dirs::find(opts, data_dir, config_dir);
    dirs.db = db_config
        .as_ref()
        .and_then(|c| c.path.as_deref())
        .map(canonical)
        .filter(|p| *p != dirs.data.join("data/jellyfin.db"));
    dirs.check_overlaps(opts)?;
    let mut components: BTreeSet<Component> = opts.components.clone();
    components.insert(Component::Config);
    components.insert(Component::Database);
    let not_found = dirs.absent(&components);
    for (c, _) in &not_found {
        components.remove(c);
    }
    let roots = Roots::of(&dirs, &components);
    let plugins = dirs.plugin_data();
    let items = dirs.items(&components, &roots, &plugins.found);
    let left_out = plugins
        .left_out
        .into_iter()
        .map(|(path, why)| {
            let (root, rel) = roots.rel_bytes(&path);
            LeftOut {
                root,
                rel,
                path,
                why,
            }
        })
        .collect();
    let missing = not_found
        .into_iter()
        .map(|(component, p)| {
            let (root, rel) = roots
                .rel_of(&p)
                .unwrap_or_else(|| (component.name().into(), "".into()));
            NotCaptured {
                kind: NotCapturedKind::Component,
                root,
                rel,
                path: p.to_string_lossy().into_owned(),
                component: Some(component),
            }
        })
        .collect();
    let metadata_dir = components
        .contains(&Component::Metadata)
        .then(|| dirs.metadata.clone());
    let jellyfin_db = dirs
        .db
        .clone()
        .unwrap_or_else(|| dirs.data.join("data/jellyfin.db"));
    Ok(Source {
        db_config,
        jellyfin_db,
        layout,
        data_dir: dirs.data,
        config_dir: dirs.config,
        metadata_dir,
        components,
        selection: Selection {
            roots: roots.records(),
            items,
        },
        missing,
        left_out,
    })
}

/// The data dir, canonical, once it is shown to hold a Jellyfin database; otherwise a
/// hint at the directory that would.
fn check_data_dir(data_dir: &Path, config_dir: Option<&Path>) -> Result<PathBuf> {
    if !data_dir.is_dir() {
        return Err(Error::SourceMissing(data_dir.to_path_buf()));
    }
    let data_dir = canonical(data_dir);
    let has_db =
        |d: &Path| d.join("data/jellyfin.db").is_file() || d.join("data/library.db").is_file();
    if has_db(&data_dir) || relocated_db(&data_dir, config_dir).is_some() {
        return Ok(data_dir);
    }
    let db = data_dir.join("data/jellyfin.db");
    let hint = if let (Ok(to), false) = (std::fs::read_link(&db), db.exists()) {
        format!(
            "data/jellyfin.db is a link to {}, which is not there: is the disk that holds the database mounted?",
            to.display()
        )
    } else if has_db(&data_dir.join("data")) {
        format!(
            "it looks like the linuxserver.io /config dir: pass --data-dir {}",
            data_dir.join("data").display()
        )
    } else if has_db(&data_dir.join("config")) {
        format!("pass --data-dir {}", data_dir.join("config").display())
    } else {
        "no data/jellyfin.db or data/library.db inside; pass the directory that holds data/, metadata/ and plugins/ (Debian: /var/lib/jellyfin, official Docker: /config, linuxserver.io: /config/data)".to_string()
    };
    Err(Error::NotJellyfin {
        path: data_dir,
        detail: hint,
    })
}

/// The database `database.xml` relocates out of `data_dir`: the `path` option of the
/// file in the config dir given, or in the config dir of one of the layouts. (Whether it
/// is there is checked once the config dir is known, with an error that says so.)
fn relocated_db(data_dir: &Path, config_dir: Option<&Path>) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = config_dir.map(Path::to_path_buf).into_iter().collect();
    if config_dir.is_none() {
        candidates.push(data_dir.join("config"));
        candidates.extend(data_dir.parent().map(Path::to_path_buf));
        if data_dir.ends_with("var/lib/jellyfin") {
            candidates.extend(data_dir.ancestors().nth(3).map(|p| p.join("etc/jellyfin")));
        }
    }
    candidates
        .iter()
        .find_map(|c| DbConfig::read(c, data_dir)?.path)
}

/// The (device, inode) of what `p` names, links followed.
fn identity(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `a` and `b` are one directory: by name, or by identity (a bind mount shows one
/// directory under two names that compare as strangers).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || identity(a).is_some_and(|i| identity(b) == Some(i))
}

/// Whether directory `a` is `b` or one of its ancestors, by name or by identity: `b`
/// (canonical) or a directory above it is `a` itself. Parts of `b` that do not exist yet
/// are skipped.
fn holds(a: &Path, b: &Path) -> bool {
    if b.starts_with(a) {
        return true;
    }
    let Some(a) = identity(a) else {
        return false;
    };
    b.ancestors().any(|p| identity(p) == Some(a))
}

/// What plugins keep in the data dir (see [`Dirs::plugin_data`]).
struct PluginData {
    /// Each entry or database, `true` for a database.
    found: Vec<(PathBuf, bool)>,
    /// What is left out, and why.
    left_out: Vec<(PathBuf, LeftOutWhy)>,
}

/// The directories of an install.
struct Dirs {
    data: PathBuf,
    config: PathBuf,
    metadata: PathBuf,
    /// The metadata dir was given (option or system.xml) rather than the default one.
    metadata_configured: bool,
    cache: Option<PathBuf>,
    /// jellyfin.db, when `database.xml` keeps it elsewhere than `data/jellyfin.db`.
    db: Option<PathBuf>,
}

impl Dirs {
    /// The metadata and cache dirs: the options, else system.xml, else the defaults.
    fn find(opts: &SourceOptions, data: PathBuf, config: PathBuf) -> Dirs {
        let system_xml = std::fs::read_to_string(config.join("system.xml")).unwrap_or_default();
        let (metadata, metadata_configured) =
            match (&opts.metadata_dir, xml_tag(&system_xml, "MetadataPath")) {
                (Some(m), _) => (canonical(m), true),
                (None, Some(m)) => (canonical(Path::new(&m)), true),
                _ => (data.join("metadata"), false),
            };
        let cache = xml_tag(&system_xml, "CachePath").map(|c| canonical(Path::new(&c)));
        Dirs {
            data,
            config,
            metadata,
            metadata_configured,
            cache,
            db: None,
        }
    }

    /// Refuse directories that contain one another where a restore of one would delete
    /// what is new in the other: a metadata dir that is (or holds) the data dir, the
    /// config dir or another component's directory, or lies inside one of those; a
    /// config dir that is the data dir. (A config dir holding the data dir, as in the
    /// linuxserver.io layout, and a metadata dir inside the config or data dir are how
    /// Jellyfin is installed: the config component leaves both out.)
    fn check_overlaps(&self, opts: &SourceOptions) -> Result<()> {
        let m = &self.metadata;
        let mut others: Vec<(String, PathBuf, bool)> = vec![
            ("the data dir".into(), self.data.clone(), false),
            ("the config dir".into(), self.config.clone(), false),
        ];
        let component_dirs = [
            "data/jellyfin.db",
            "data/library.db",
            "data/subtitles",
            "data/attachments",
            "data/trickplay",
        ]
        .iter()
        .chain(CONFIG_ITEMS.iter());
        for rel in component_dirs {
            // A glob selects names in its directory: that directory must not be inside
            // the metadata dir, but may hold it.
            let (rel, glob) = match rel.rsplit_once('/') {
                Some((dir, name)) if name.contains('*') => (dir, true),
                None if rel.contains('*') => ("", true),
                _ => (*rel, false),
            };
            let p = if rel.is_empty() {
                self.data.clone()
            } else {
                self.data.join(rel)
            };
            let what = if rel.is_empty() {
                "the data dir".to_string()
            } else {
                format!("{}/{rel}", self.data.display())
            };
            others.push((what, p, !glob));
        }
        let mut found = None;
        for (what, p, may_not_hold) in &others {
            if same_dir(p, m) {
                found = Some(format!("is {what}"));
            } else if holds(m, p) {
                found = Some(format!("holds {what} ({})", p.display()));
            } else if *may_not_hold && holds(p, m) {
                found = Some(format!("lies inside {what}"));
            }
            if found.is_some() {
                break;
            }
        }
        let from_flag = opts.metadata_dir.is_some();
        if let Some(relation) = found {
            let (source, fix) = if from_flag {
                (
                    "--metadata-dir",
                    "pass a --metadata-dir that holds only Jellyfin's metadata".to_string(),
                )
            } else {
                (
                    "system.xml's MetadataPath",
                    format!(
                        "set MetadataPath in {} to a directory of its own (Jellyfin's default is {}), or pass --metadata-dir",
                        self.config.join("system.xml").display(),
                        self.data.join("metadata").display()
                    ),
                )
            };
            return Err(Error::DirsOverlap {
                path: m.clone(),
                detail: format!("the metadata dir ({source}) {relation}: an in-place restore of the metadata would delete whatever is new there; {fix}"),
                from_flag,
            });
        }
        if same_dir(&self.config, &self.data) {
            return Err(Error::DirsOverlap {
                path: self.config.clone(),
                detail: "the config dir is the data dir: an in-place restore of the config state would delete whatever is new in the data dir; pass the directory that holds system.xml with --config-dir".into(),
                from_flag: opts.config_dir.is_some(),
            });
        }
        Ok(())
    }

    /// The selected components whose directory is not there, with that directory.
    ///
    /// A component whose directory is not there is not claimed: a snapshot that said
    /// "metadata: nothing" would make an in-place restore delete the live metadata once
    /// its disk is back. A metadata dir configured elsewhere must exist; a directory at
    /// its default place inside the data dir may be absent (nothing there yet), but not
    /// be a link to nowhere.
    fn absent(&self, components: &BTreeSet<Component>) -> Vec<(Component, PathBuf)> {
        let mut not_found = Vec::new();
        let dangling = |p: &Path| p.symlink_metadata().is_ok() && !p.is_dir();
        let metadata_missing = if self.metadata_configured {
            !self.metadata.is_dir()
        } else {
            dangling(&self.metadata)
        };
        if components.contains(&Component::Metadata) && metadata_missing {
            not_found.push((Component::Metadata, self.metadata.clone()));
        }
        for (component, dirs) in [
            (
                Component::Subtitles,
                &["data/subtitles", "data/attachments"][..],
            ),
            (Component::Trickplay, &["data/trickplay"][..]),
        ] {
            if !components.contains(&component) {
                continue;
            }
            if let Some(dir) = dirs.iter().map(|d| self.data.join(d)).find(|p| dangling(p)) {
                not_found.push((component, dir));
            }
        }
        not_found
    }

    /// What plugins keep in the data dir: each entry of the data path that is not
    /// Jellyfin's own, and each SQLite database found in those and in `plugins/`
    /// (`true`: a database). Directories that are another of the install's (metadata,
    /// config, cache) are left to them.
    fn plugin_data(&self) -> PluginData {
        let (entries, names) = listing(&self.data.join("data"));
        let theirs = |p: &Path| {
            [
                Some(&self.metadata),
                Some(&self.config),
                self.cache.as_ref(),
            ]
            .into_iter()
            .flatten()
            .any(|d| same_dir(p, d))
        };
        let mut out = Vec::new();
        let mut left_out = Vec::new();
        let mut dirs = vec![self.data.join("plugins")];
        for e in entries {
            let name = e.file_name();
            let n = name.as_bytes();
            let p = e.path();
            if jellyfins_own(n) || theirs(&p) {
                continue;
            }
            // A link to a directory could lead anywhere (a media library, another disk).
            let linked = e.file_type().is_ok_and(|t| t.is_symlink());
            let meta = std::fs::metadata(&p);
            if linked && meta.as_ref().is_ok_and(|m| m.is_dir()) {
                left_out.push((p, LeftOutWhy::LinkedDir));
                continue;
            }
            // A snapshot's items are named in UTF-8.
            if std::str::from_utf8(n).is_err() {
                left_out.push((p, LeftOutWhy::NameNotUtf8));
                continue;
            }
            // A link to a database is captured through it, as jellyfin.db is; a link to
            // anything else is stored as the link.
            match meta {
                Ok(m) if m.is_file() && is_sqlite_db(&p, &names) => {
                    out.push((p, true));
                    continue;
                }
                Ok(m) if m.is_dir() => dirs.push(p.clone()),
                _ => {}
            }
            out.push((p, false));
        }
        let mut dbs = Vec::new();
        for d in dirs {
            find_databases(&d, &theirs, &mut dbs);
        }
        for p in dbs {
            if std::str::from_utf8(p.as_os_str().as_bytes()).is_ok() {
                out.push((p, true));
            } else {
                left_out.push((p, LeftOutWhy::NameNotUtf8));
            }
        }
        out.sort();
        left_out.sort();
        PluginData {
            found: out,
            left_out,
        }
    }

    /// The items of `components`, innermost first.
    fn items(
        &self,
        components: &BTreeSet<Component>,
        roots: &Roots,
        plugin_data: &[(PathBuf, bool)],
    ) -> Vec<Item> {
        let mut items = Vec::new();
        let mut add = |p: PathBuf, component: Component, excludes: Vec<PathBuf>| {
            if let Some((root, rel)) = roots.rel_of(&p) {
                let excludes = excludes
                    .iter()
                    .filter(|x| x.starts_with(&p) && **x != p)
                    .filter_map(|x| roots.rel_of(x).map(|(_, r)| r))
                    .collect();
                items.push(Item {
                    root,
                    rel,
                    component,
                    excludes,
                });
            }
        };
        let d = |s: &str| self.data.join(s);
        let mut config_excludes = vec![self.data.clone(), self.metadata.clone()];
        config_excludes.extend(self.cache.clone());
        for x in ["cache", "log", "logs", "transcodes"] {
            config_excludes.push(self.config.join(x));
        }
        add(self.config.clone(), Component::Config, config_excludes);
        // A relocated jellyfin.db is the server's; a file left at the usual place is not.
        let usual = ["data/jellyfin.db", "data/library.db"];
        for f in usual.iter().skip(usize::from(self.db.is_some())) {
            if d(f).is_file() {
                add(d(f), Component::Database, vec![]);
            }
        }
        if let Some(db) = &self.db {
            add(db.clone(), Component::Database, vec![]);
        }
        for p in CONFIG_ITEMS {
            add(d(p), Component::Config, vec![]);
        }
        // What plugins keep beside Jellyfin's own state: config state, with each SQLite
        // database in it captured as a database (a live one's WAL would be lost by a copy).
        let mut never = vec![self.metadata.clone(), self.config.clone()];
        never.extend(self.cache.clone());
        for (p, is_db) in plugin_data {
            let component = if *is_db {
                Component::Database
            } else {
                Component::Config
            };
            add(p.clone(), component, never.clone());
        }
        if components.contains(&Component::Metadata) {
            let excludes = self.cache.iter().cloned().collect();
            add(self.metadata.clone(), Component::Metadata, excludes);
        }
        if components.contains(&Component::Subtitles) {
            add(d("data/subtitles"), Component::Subtitles, vec![]);
            add(d("data/attachments"), Component::Subtitles, vec![]);
        }
        if components.contains(&Component::Trickplay) {
            add(d("data/trickplay"), Component::Trickplay, vec![]);
        }
        // Items inside another item's tree take precedence: check them first.
        items.sort_by_key(|i| std::cmp::Reverse(i.rel.len()));
        items
    }
}

/// Jellyfin's own entries in its data path (`data/`): a component's, config state, or
/// never state. Anything else there is a plugin's (Playback Reporting's
/// `playback_reporting.db`, a plugin's folder) and part of the config state.
const DATA_PATH_OWN: [&str; 17] = [
    "jellyfin.db",
    "library.db",
    "subtitles",
    "attachments",
    "trickplay",
    "collections",
    "playlists",
    "ScheduledTasks",
    "device.txt",
    "livetv",
    "splashscreen.png",
    "backups",
    "SQLiteBackups",
    "cache",
    "log",
    "logs",
    "transcodes",
];

/// Whether an entry of the data path named `n` is Jellyfin's own (a component's, config
/// state or never state) rather than a plugin's.
fn jellyfins_own(n: &[u8]) -> bool {
    DATA_PATH_OWN.iter().any(|o| o.as_bytes() == n)
        || glob_match(b".jellyfin-*", n)
        || excluded_name(n)
        || n.ends_with(b".old")
        || n == UNFINISHED_RESTORE.as_bytes()
        || n == RESTORE_TARGET.as_bytes()
}

/// Whether `path` is an entry of the data path of the data dir `data_dir` that is a
/// plugin's, not Jellyfin's own. A restore never follows such an entry that is a link:
/// a backup does not either (see [`LeftOutWhy::LinkedDir`]).
pub fn is_plugin_entry(data_dir: &Path, path: &Path) -> bool {
    path.parent() == Some(&data_dir.join("data"))
        && path
            .file_name()
            .is_some_and(|n| !jellyfins_own(n.as_bytes()))
}

/// Whether `p` is an SQLite database: by its header, looked at when its name says so
/// (`.db`, `.sqlite`, `.sqlite3`, `.db3`, or no extension at all) or a `-wal` or
/// `-journal` lies beside it (`names`: the names in its directory).
fn is_sqlite_db(p: &Path, names: &std::collections::HashSet<std::ffi::OsString>) -> bool {
    let named = p.extension().is_none_or(|x| {
        ["db", "sqlite", "sqlite3", "db3"]
            .iter()
            .any(|e| x.eq_ignore_ascii_case(e))
    });
    let beside = |suffix: &str| {
        p.file_name().is_some_and(|n| {
            let mut side = n.to_os_string();
            side.push(suffix);
            names.contains(&side)
        })
    };
    if !(named || beside("-wal") || beside("-journal")) {
        return false;
    }
    let mut head = [0u8; 16];
    std::fs::File::open(p)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0")
}

/// The names in `dir`, with each entry (empty when it cannot be read).
fn listing(
    dir: &Path,
) -> (
    Vec<std::fs::DirEntry>,
    std::collections::HashSet<std::ffi::OsString>,
) {
    let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    let names = entries.iter().map(|e| e.file_name()).collect();
    (entries, names)
}

/// Regular files below `dir`, at any depth (links not followed; directories for which
/// `skip` holds left out), that are SQLite databases. Every directory it lists is one
/// the backup walks anyway, and only names are read (a header only where a name or a
/// `-wal` beside it says "database"): a plugin with a large folder costs one more
/// listing of it, and never hides another plugin's database.
fn find_databases(dir: &Path, skip: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let (entries, names) = listing(&dir);
        for e in entries {
            if excluded_name(e.file_name().as_bytes()) {
                continue;
            }
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            if t.is_file() && is_sqlite_db(&p, &names) {
                out.push(p);
            } else if t.is_dir() && !skip(&p) {
                todo.push(p);
            }
        }
    }
}

/// Server state inside the data dir that is part of the config component.
const CONFIG_ITEMS: [&str; 11] = [
    "root",
    "plugins",
    "data/collections",
    "data/playlists",
    "data/ScheduledTasks",
    "data/device.txt",
    "data/livetv/*.json",
    "splashscreen.png",
    "data/splashscreen.png",
    ".jellyfin-*",
    "data/.jellyfin-*",
];

/// The snapshot's roots, labelled: the outermost of the data, config and (if selected)
/// metadata dirs.
struct Roots(Vec<(String, PathBuf)>);

impl Roots {
    fn of(dirs: &Dirs, components: &BTreeSet<Component>) -> Roots {
        let mut bases = vec![("data", dirs.data.clone()), ("config", dirs.config.clone())];
        if components.contains(&Component::Metadata) {
            bases.push(("metadata", dirs.metadata.clone()));
        }
        // A relocated database's directory, when no other root holds it.
        if let Some(dir) = dirs.db.as_deref().and_then(Path::parent) {
            bases.push(("database", dir.to_path_buf()));
        }
        bases.sort_by_key(|(_, p)| p.components().count());
        let mut roots: Vec<(String, PathBuf)> = Vec::new();
        for (label, p) in bases {
            if !roots.iter().any(|(_, r)| p.starts_with(r)) {
                roots.push((label.to_string(), p));
            }
        }
        Roots(roots)
    }

    /// The root `p` lies under and its path relative to it.
    fn rel_of(&self, p: &Path) -> Option<(String, String)> {
        self.0.iter().find(|(_, r)| p.starts_with(r)).map(|(l, r)| {
            let rel = p
                .strip_prefix(r)
                .unwrap_or(Path::new(""))
                .to_string_lossy()
                .into_owned();
            (l.clone(), rel)
        })
    }

    /// [`Roots::rel_of`] with the path's own bytes (its name may not be UTF-8).
    fn rel_bytes(&self, p: &Path) -> (String, Vec<u8>) {
        match self.0.iter().find(|(_, r)| p.starts_with(r)) {
            Some((label, r)) => {
                let rel = p.strip_prefix(r).unwrap_or(Path::new(""));
                (label.clone(), rel.as_os_str().as_bytes().to_vec())
            }
            None => (String::new(), p.as_os_str().as_bytes().to_vec()),
        }
    }

    fn records(self) -> Vec<Root> {
        self.0
            .into_iter()
            .map(|(label, p)| Root {
                label,
                path: p.to_string_lossy().into_owned(),
            })
            .collect()
    }
}

fn detect_config_dir(data_dir: &Path) -> Result<(&'static str, PathBuf)> {
    if data_dir.join("config/system.xml").is_file() {
        return Ok(("docker", data_dir.join("config")));
    }
    if let Some(parent) = data_dir.parent() {
        if data_dir.file_name().is_some_and(|n| n == "data") && parent.join("system.xml").is_file()
        {
            return Ok(("linuxserver", parent.to_path_buf()));
        }
    }
    if data_dir.ends_with("var/lib/jellyfin") {
        if let Some(prefix) = data_dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
        {
            let etc = prefix.join("etc/jellyfin");
            if etc.join("system.xml").is_file() {
                return Ok(("debian", etc));
            }
        }
    }
    Err(Error::NotJellyfin {
        path: data_dir.to_path_buf(),
        detail: "found the database but no system.xml (looked in config/, the parent dir and /etc/jellyfin); pass --config-dir".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(rel: &str, c: Component, ex: &[&str]) -> Item {
        Item {
            root: "data".into(),
            rel: rel.into(),
            component: c,
            excludes: ex.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn classify_items_globs_and_excludes() {
        let sel = Selection {
            roots: vec![Root {
                label: "data".into(),
                path: "/x".into(),
            }],
            items: vec![
                item("data/trickplay", Component::Trickplay, &[]),
                item("data/livetv/*.json", Component::Config, &[]),
                item("data/jellyfin.db", Component::Database, &[]),
                item("", Component::Config, &["data", "cache"]),
            ],
        };
        let c = |p: &str| sel.classify("data", p.as_bytes());
        assert_eq!(
            c("data/trickplay/ab/x.jpg"),
            Class::Include(Component::Trickplay)
        );
        assert_eq!(c("data/jellyfin.db"), Class::Include(Component::Database));
        assert_eq!(c("data/jellyfin.db-wal"), Class::Skip);
        assert_eq!(c("data/livetv/a.json"), Class::Include(Component::Config));
        assert_eq!(c("data/livetv/recordings"), Class::Skip);
        assert_eq!(c("data/livetv"), Class::Descend);
        assert_eq!(c("data"), Class::Descend);
        assert_eq!(c("data/backups"), Class::Skip);
        assert_eq!(c("cache/x"), Class::Skip);
        assert_eq!(c("system.xml"), Class::Include(Component::Config));
        assert_eq!(c("data/trickplayer"), Class::Skip);
    }

    #[test]
    fn leftovers_are_excluded() {
        for n in [
            "jellyfin.db-wal",
            "jellyfin.db-shm",
            "library.db.old",
            "jellyfin.db.bak3",
        ] {
            assert!(excluded_name(n.as_bytes()), "{n}");
        }
        // `.bak` without a number is someone's copy (a plugin's settings.bak), not a
        // migration's leftover.
        for n in ["jellyfin.db", "backup.xml", "bakery", "settings.bak"] {
            assert!(!excluded_name(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn metadata_dirs_may_lie_in_the_data_or_config_dir_but_not_in_a_component() {
        let opts = SourceOptions {
            data_dir: "/config/data".into(),
            config_dir: None,
            metadata_dir: None,
            components: BTreeSet::new(),
        };
        let dirs = |metadata: &str| Dirs {
            data: "/config/data".into(),
            config: "/config".into(),
            metadata: metadata.into(),
            metadata_configured: true,
            cache: None,
            db: None,
        };
        // linuxserver.io: the config dir holds the data dir; metadata in either is fine.
        for ok in ["/config/data/metadata", "/config/metadata", "/srv/meta"] {
            assert!(dirs(ok).check_overlaps(&opts).is_ok(), "{ok}");
        }
        for bad in [
            "/config",
            "/config/data",
            "/",
            "/config/data/data",
            "/config/data/data/trickplay/m",
            "/config/data/plugins/m",
            "/config/data/data/livetv",
        ] {
            let e = dirs(bad).check_overlaps(&opts).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::DirsOverlap {
                        from_flag: false,
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn plugin_data_is_what_is_not_jellyfins_own() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("jf");
        let dp = data.join("data");
        let sqlite = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let c = rusqlite::Connection::open(p).unwrap();
            c.execute_batch("CREATE TABLE t (x)").unwrap();
        };
        for own in [
            "jellyfin.db",
            "library.db",
            "users.db.old",
            "SQLiteBackups/a.db",
        ] {
            sqlite(&dp.join(own));
        }
        for own in [
            "trickplay/x",
            "transcodes/a.ts",
            ".jellyfin-data",
            "device.txt",
        ] {
            std::fs::create_dir_all(dp.join(own).parent().unwrap()).unwrap();
            std::fs::write(dp.join(own), b"x").unwrap();
        }
        sqlite(&dp.join("playback_reporting.db"));
        sqlite(&dp.join("skipper/deep/one.sqlite"));
        sqlite(&data.join("plugins/configurations/P/p.db3"));
        std::fs::write(dp.join("skipper/settings.json"), b"{}").unwrap();
        std::fs::write(dp.join("lite.db"), b"LiteDB, not SQLite").unwrap();
        // Metadata kept inside the data path is the metadata component's, not a plugin's.
        std::fs::create_dir_all(dp.join("meta/library")).unwrap();
        let dirs = Dirs {
            data: data.clone(),
            config: tmp.path().join("config"),
            metadata: dp.join("meta"),
            metadata_configured: true,
            cache: None,
            db: None,
        };
        std::os::unix::fs::symlink(tmp.path(), dp.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dp.join("lite.db"), dp.join("to-file")).unwrap();
        // Found however deep, and by a -wal beside it whatever its name.
        sqlite(&dp.join("skipper/1/2/3/4/5/6/7/8/deep.db"));
        sqlite(&dp.join("skipper/state"));
        std::fs::write(dp.join("skipper/state-wal"), b"").unwrap();
        sqlite(&dp.join("skipper/idle"));
        sqlite(&dp.join("skipper/other.dat"));
        std::fs::write(dp.join("skipper/README"), b"not a database").unwrap();
        // Names a snapshot's items cannot hold.
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.db");
        sqlite(&dp.join(odd));
        sqlite(&dp.join("skipper").join(odd));
        let PluginData { found, left_out } = dirs.plugin_data();
        assert_eq!(
            left_out,
            vec![
                (dp.join(odd), LeftOutWhy::NameNotUtf8),
                (dp.join("elsewhere"), LeftOutWhy::LinkedDir),
                (dp.join("skipper").join(odd), LeftOutWhy::NameNotUtf8),
            ]
        );
        let got: Vec<(String, bool)> = found
            .into_iter()
            .map(|(p, db)| (p.strip_prefix(&data).unwrap().display().to_string(), db))
            .collect();
        let want = [
            ("data/lite.db", false),
            ("data/playback_reporting.db", true),
            ("data/skipper", false),
            ("data/skipper/1/2/3/4/5/6/7/8/deep.db", true),
            ("data/skipper/deep/one.sqlite", true),
            ("data/skipper/idle", true),
            ("data/skipper/state", true),
            ("data/to-file", false),
            ("plugins/configurations/P/p.db3", true),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(p, d)| (p.to_string(), *d)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn xml_tags() {
        let x = "<ServerConfiguration><MetadataPath>/srv/meta</MetadataPath><CachePath /></ServerConfiguration>";
        assert_eq!(xml_tag(x, "MetadataPath").as_deref(), Some("/srv/meta"));
        assert_eq!(xml_tag(x, "CachePath"), None);
    }
}
