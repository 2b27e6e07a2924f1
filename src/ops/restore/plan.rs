//! The planner: walks the snapshot's trees beside the destination and lists the
//! actions, in the order they are found (a directory's contents before its metadata,
//! children before their parent for deletions). Planning changes nothing: what is there
//! is only looked at (databases as immutable, see `compare`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::compare::{same_content, same_logical, same_observed};
use super::{
    is_restore_leftover, read_target_mark, read_unfinished_mark, side_path, Action, Destination,
    DirMeta, RestoreOptions, RestorePlan, RootMapping, SIDE_SUFFIXES,
};
use crate::error::{Error, IoContext, OptionError, Result};
use crate::format::chunker::Chunker;
use crate::format::snapshot::{Component, DatabaseRecord, Snapshot, SnapshotRecord, Verified};
use crate::format::tree::{DbCapture, Entry, Node, Tree};
use crate::id::{ChunkId, SnapshotId};
use crate::jellyfin::layout::{is_media, RESTORE_TARGET, UNFINISHED_RESTORE};
use crate::jellyfin::{running, Class, Selection};
use crate::store::repo::Repository;

pub fn plan(repo: &Repository, snap: &Snapshot, opts: &RestoreOptions) -> Result<RestorePlan> {
    let rec = &snap.record;
    let components = chosen_components(snap, opts.components.as_ref())?;
    let selection = Selection {
        roots: rec.roots.clone(),
        items: rec.items.clone(),
    }
    .restricted(&components);
    let roots = map_roots(rec, &opts.destination);
    let paths = PathFilter::new(snap, opts, &roots)?;
    let resumed = check_destination(repo, snap, opts, &roots, &selection)?;
    let in_place = matches!(opts.destination, Destination::InPlace).then(|| {
        let data_dir = PathBuf::from(&rec.data_dir);
        let chosen: Vec<Component> = components.iter().copied().collect();
        (data_dir, chosen)
    });
    if let Some((data_dir, chosen)) = &in_place {
        super::ensure_no_interrupted_restore(data_dir, Some((snap, chosen)))?;
    }

    let unfinished = if in_place.is_some() {
        unfinished_marks(&roots)
    } else {
        BTreeSet::new()
    };

    let root_tree = repo.load_tree(&rec.tree)?;
    let mut p = Planner::new(repo, rec, &selection, &opts.protect);
    p.trees = prefetch_trees(repo, &root_tree, &roots, &selection);
    // About an action per entry: reserved at once, the list never holds two copies of
    // itself while it grows. Not for part of a snapshot (`--include`, a `dump`): its
    // few actions would hold room for every entry.
    if opts.include.is_empty() {
        let entries: usize = p.trees.values().map(|t| t.entries.len()).sum();
        p.actions.reserve(entries + root_tree.entries.len());
    }
    p.snapshot = snap.id.short();
    p.verify = opts.verify || !unfinished.is_empty() || resumed;
    for m in &roots {
        p.root(snap, &root_tree, m)?;
    }
    if let Some(paths) = &paths {
        paths.apply(repo, snap, &root_tree, &components, &mut p)?;
    }
    let mut plan = RestorePlan::new(snap, roots, components, p);
    if in_place.is_some() {
        refuse_deleting_media(snap, &plan.actions)?;
    }
    plan.in_place = in_place.map(|(d, _)| d);
    plan.unfinished_restore = unfinished.into_iter().collect();
    plan.resumed = resumed;
    if let Destination::Target(t) = &opts.destination {
        plan.target = Some(t.clone());
    }
    plan.force = opts.force;
    if let Some(data_dir) = plan.in_place.clone() {
        let rollback =
            super::versions::rollback(rec, &repo.tmp_dir(), opts.server_version.as_deref());
        plan.space = super::versions::space(&plan, rollback.snapshot.as_ref(), &data_dir);
        plan.rollback = Some(rollback);
    }
    Ok(plan)
}

/// Every tree below the chosen roots that the plan will walk, loaded a level at a time
/// with the levels' trees read in parallel: from a cold disk or a remote store, one tree
/// read after another is most of a plan's time. A tree that does not load is left out
/// (the walk reads it again, and fails there with its own error).
fn prefetch_trees(
    repo: &Repository,
    root_tree: &Tree,
    roots: &[RootMapping],
    selection: &Selection,
) -> HashMap<ChunkId, Arc<Tree>> {
    let mut level: Vec<(&str, Vec<u8>, ChunkId)> = roots
        .iter()
        .filter_map(|m| match &root_tree.find(m.label.as_bytes())?.node {
            Node::Dir { tree } => Some((m.label.as_str(), Vec::new(), *tree)),
            _ => None,
        })
        .collect();
    let mut trees: HashMap<ChunkId, Arc<Tree>> = HashMap::new();
    let mut queued: std::collections::HashSet<ChunkId> = level.iter().map(|l| l.2).collect();
    while !level.is_empty() {
        let loaded: Vec<Option<Tree>> = crate::ops::parallel::in_io_pool(|| {
            level
                .par_iter()
                .map(|(_, _, id)| repo.load_tree(id).ok())
                .collect()
        });
        let mut next = Vec::new();
        for ((root, rel, id), tree) in level.into_iter().zip(loaded) {
            let Some(tree) = tree else { continue };
            for e in &tree.entries {
                let Node::Dir { tree: sub } = &e.node else {
                    continue;
                };
                let child = join_rel(&rel, &e.name);
                if selection.classify(root, &child) != Class::Skip && queued.insert(*sub) {
                    next.push((root, child, *sub));
                }
            }
            trees.insert(id, Arc::new(tree));
        }
        level = next;
    }
    trees
}

/// `--include` and `--exclude`, as paths of the destination. Only into a target: in
/// place, a partial rollback would leave the database and the files of one component
/// from two different times, and the deletions a full rollback makes would be wrong for
/// a part of a tree.
struct PathFilter {
    /// (as given, where it goes)
    include: Vec<(String, PathBuf)>,
    exclude: Vec<(String, PathBuf)>,
}

impl PathFilter {
    fn new(snap: &Snapshot, opts: &RestoreOptions, roots: &[RootMapping]) -> Result<Option<Self>> {
        if opts.include.is_empty() && opts.exclude.is_empty() {
            return Ok(None);
        }
        if matches!(opts.destination, Destination::InPlace) {
            return Err(OptionError::PathsInPlace.into());
        }
        let dest = |q: &str| -> Result<PathBuf> {
            let bad = || -> Error { OptionError::RestorePath(q.to_string()).into() };
            let rel = Path::new(q.trim_end_matches('/'));
            let mut parts = rel.components();
            let Some(std::path::Component::Normal(label)) = parts.next() else {
                return Err(bad());
            };
            if parts
                .clone()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(bad());
            }
            let m = roots
                .iter()
                .find(|m| OsStr::new(&m.label) == label)
                .ok_or_else(|| Error::PathNotInSnapshot {
                    snapshot: snap.id.short(),
                    path: q.to_string(),
                })?;
            Ok(m.to.join(parts.as_path()))
        };
        Ok(Some(PathFilter {
            include: opts
                .include
                .iter()
                .map(|q| Ok((q.clone(), dest(q)?)))
                .collect::<Result<_>>()?,
            exclude: opts
                .exclude
                .iter()
                .map(|q| Ok((q.clone(), dest(q)?)))
                .collect::<Result<_>>()?,
        }))
    }

    /// Whether `path` is restored: inside an included path (or leading to one, a
    /// directory) and not inside an excluded one.
    fn keeps(&self, path: &Path) -> bool {
        !self.exclude.iter().any(|(_, e)| path.starts_with(e))
            && (self.include.is_empty()
                || self
                    .include
                    .iter()
                    .any(|(_, i)| path.starts_with(i) || i.starts_with(path)))
    }

    /// Drop what the filter leaves out of the planner's actions and directories. Every
    /// included path must be in the snapshot. A database is one action: it is restored
    /// whole or not at all.
    fn apply(
        &self,
        repo: &Repository,
        snap: &Snapshot,
        root_tree: &Tree,
        components: &BTreeSet<Component>,
        p: &mut Planner,
    ) -> Result<()> {
        // An excluded path, too, must be in what the restore would write: one that is
        // not (a typo) would otherwise restore what it was meant to leave out.
        let given = self
            .include
            .iter()
            .map(|(q, i)| (q, i))
            .chain(self.exclude.iter().map(|(q, e)| (q, e)));
        for (q, i) in given {
            let found = p.actions.iter().any(|a| a.path().starts_with(i))
                || p.directories.iter().any(|d| d.path.starts_with(i));
            if !found {
                return Err(not_restored(repo, snap, root_tree, components, q));
            }
        }
        p.actions.retain(|a| self.keeps(a.path()));
        p.directories.retain(|d| self.keeps(&d.path));
        // What is left of the snapshot: a combination that leaves nothing (an exclude of
        // a whole root, an include excluded again) is a slip, not an empty restore.
        // (Directories kept only on the way to an included path do not count.)
        let inside = |path: &Path| {
            self.include.is_empty() || self.include.iter().any(|(_, i)| path.starts_with(i))
        };
        let chosen = p
            .actions
            .iter()
            .any(|a| !matches!(a, Action::Mkdir { .. }) || inside(a.path()))
            || p.directories.iter().any(|d| inside(&d.path));
        if !chosen {
            let given = self
                .include
                .iter()
                .map(|(q, _)| format!("--include {q}"))
                .chain(self.exclude.iter().map(|(q, _)| format!("--exclude {q}")))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(Error::NothingSelected {
                snapshot: snap.id.short(),
                given,
            });
        }
        Ok(())
    }
}

/// Why `query`, a path the restore was asked to include or exclude, is in none of the
/// parts it restores: in a component `--components` leaves out, or not in the snapshot.
fn not_restored(
    repo: &Repository,
    snap: &Snapshot,
    root_tree: &Tree,
    components: &BTreeSet<Component>,
    query: &str,
) -> Error {
    let q = query.trim_end_matches('/');
    let (label, rel) = q.split_once('/').unwrap_or((q, ""));
    let all = Selection {
        roots: snap.record.roots.clone(),
        items: snap.record.items.clone(),
    };
    if let Class::Include(c) = all.classify(label, rel.as_bytes()) {
        if !components.contains(&c) && in_tree(repo, root_tree, label, rel) {
            return Error::PathNotSelected {
                snapshot: snap.id.short(),
                path: query.to_string(),
                component: c.name().to_string(),
            };
        }
    }
    Error::PathNotInSnapshot {
        snapshot: snap.id.short(),
        path: query.to_string(),
    }
}

/// Whether the snapshot's tree holds `rel` (`/`-separated) under root `label`. A tree
/// that cannot be read counts as not holding it (the error is for what was asked).
fn in_tree(repo: &Repository, root_tree: &Tree, label: &str, rel: &str) -> bool {
    let Some(mut node) = root_tree.find(label.as_bytes()).map(|e| e.node.clone()) else {
        return false;
    };
    for name in rel.split('/').filter(|n| !n.is_empty()) {
        let Node::Dir { tree } = node else {
            return false;
        };
        let Ok(t) = repo.load_tree(&tree) else {
            return false;
        };
        match t.find(name.as_bytes()) {
            Some(e) => node = e.node.clone(),
            None => return false,
        }
    }
    true
}

/// Media files the plan would delete are a library's, not Jellyfin's (it never writes
/// media into its own directories): refused before anything changes.
fn refuse_deleting_media(snap: &Snapshot, actions: &[Action]) -> Result<()> {
    let media: Vec<&Path> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { path } if is_media(path) => Some(path.as_path()),
            _ => None,
        })
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir()))
        .collect();
    if media.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 3;
    let mut examples = media
        .iter()
        .take(SHOWN)
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if media.len() > SHOWN {
        examples.push_str(", ...");
    }
    Err(Error::MediaWouldBeDeleted {
        snapshot: snap.id.short(),
        count: media.len(),
        examples,
    })
}

/// The components that earlier in-place restores were restoring when they stopped, from
/// the marks they left in the roots.
fn unfinished_marks(roots: &[RootMapping]) -> BTreeSet<Component> {
    let mut marked = BTreeSet::new();
    for m in roots {
        let mark = m.to.join(UNFINISHED_RESTORE);
        if fs::symlink_metadata(&mark).is_ok() {
            marked.extend(read_unfinished_mark(
                &fs::read_to_string(&mark).unwrap_or_default(),
            ));
        }
    }
    marked
}

/// The components to restore: those asked for, each of which the snapshot must have, or
/// all of the snapshot's.
fn chosen_components(
    snap: &Snapshot,
    want: Option<&BTreeSet<Component>>,
) -> Result<BTreeSet<Component>> {
    let rec = &snap.record;
    let Some(want) = want else {
        return Ok(rec.components.iter().copied().collect());
    };
    if want.is_empty() {
        return Err(OptionError::NoComponents.into());
    }
    if let Some(missing) = want.iter().find(|c| !rec.has_component(**c)) {
        return Err(OptionError::ComponentNotInSnapshot {
            snapshot: snap.id.short(),
            component: missing.name(),
            has: rec
                .components
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(","),
        }
        .into());
    }
    Ok(want.clone())
}

/// Where each root of the snapshot goes: back where it was, or into the target (one root:
/// the target itself; several: a directory per root label).
fn map_roots(rec: &SnapshotRecord, destination: &Destination) -> Vec<RootMapping> {
    rec.roots
        .iter()
        .map(|r| RootMapping {
            label: r.label.clone(),
            from: r.path.clone(),
            to: match destination {
                Destination::InPlace => PathBuf::from(&r.path),
                Destination::Target(t) if rec.roots.len() == 1 => t.clone(),
                Destination::Target(t) => t.join(&r.label),
            },
        })
        .collect()
}

/// A target must be new or empty; in place, every restored root must be there and hold
/// something, and the server must be stopped (unless forced).
/// Whether the restore may go ahead; true when it resumes an interrupted restore of the
/// same snapshot into the same target (its mark is there).
fn check_destination(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    roots: &[RootMapping],
    selection: &Selection,
) -> Result<bool> {
    let rec = &snap.record;
    match &opts.destination {
        Destination::Target(t) => {
            let mut names = match fs::read_dir(t) {
                Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::io(t, e)),
            };
            if !names.is_empty() {
                let mark = fs::read_to_string(t.join(RESTORE_TARGET)).unwrap_or_default();
                match read_target_mark(&mark) {
                    Some(m) if super::names_snapshot(snap, m) => return Ok(true),
                    Some(m) => return Err(other_restore(repo, snap, t, m)),
                    None => {}
                }
                // Only what a restore killed before its mark was durable left (the
                // mark's own temp file): nothing of anyone's, finished as a resume, which
                // removes it.
                names.retain(|n| !super::is_restore_leftover(n.as_bytes()));
                if names.is_empty() {
                    return Ok(true);
                }
                return Err(Error::TargetNotEmpty(t.clone()));
            }
        }
        Destination::InPlace => {
            if !opts.force {
                for m in roots {
                    if selection.items.iter().any(|i| i.root == m.label) {
                        ensure_not_empty(&m.to)?;
                    }
                }
                // Databases `database.xml` keeps outside the data dir, and plugins'
                // databases below `data/` (the check probes each `data/*.db` itself).
                let elsewhere: Vec<PathBuf> = rec
                    .items
                    .iter()
                    .filter(|i| i.component == Component::Database)
                    .filter_map(|i| {
                        let root = rec.roots.iter().find(|r| r.label == i.root)?;
                        Some(Path::new(&root.path).join(&i.rel))
                    })
                    .collect();
                running::ensure_stopped(Path::new(&rec.data_dir), &elsewhere)?;
            }
        }
    }
    Ok(false)
}

/// The refusal of a target that holds an unfinished restore of another snapshot (its
/// mark names `other_hex`): names that one, how to finish it, and how to start over.
fn other_restore(repo: &Repository, snap: &Snapshot, target: &Path, other_hex: &str) -> Error {
    let other = SnapshotId::from_hex(other_hex).and_then(|id| {
        let (snaps, _) = repo.snapshots().ok()?;
        snaps.into_iter().find(|s| s.answers_to(&id))
    });
    let describe = |s: &Snapshot| match &s.record.name {
        Some(n) => format!("{} ({n})", s.id.short()),
        None => s.id.short(),
    };
    let (other, finish) = match &other {
        Some(o) => (
            describe(o),
            format!(
                "finish it by running that restore again, with the options it had (`jellysnap restore {} --target {}`)",
                o.record.name.clone().unwrap_or_else(|| o.id.short()),
                target.display()
            ),
        ),
        None => (
            other_hex.get(..8).unwrap_or(other_hex).to_string(),
            "that snapshot is no longer in this repository, so it cannot be finished".into(),
        ),
    };
    Error::TargetHoldsOtherRestore {
        path: target.to_path_buf(),
        other,
        snapshot: describe(snap),
        finish,
    }
}

/// A root of an in-place restore that is missing or empty is most likely a disk that is
/// not mounted (its mount point is an empty directory on another file system): restoring
/// would fill that file system with the whole snapshot. `lost+found` and a mark of an
/// unfinished restore do not count as content.
fn ensure_not_empty(root: &Path) -> Result<()> {
    let state = match fs::read_dir(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
        Err(e) => return Err(Error::io(root, e)),
        Ok(rd) => {
            let mut names = rd.filter_map(|e| e.ok()).map(|e| e.file_name());
            if names.any(|n| n != "lost+found" && n != UNFINISHED_RESTORE) {
                return Ok(());
            }
            "is empty"
        }
    };
    Err(Error::RestoreIntoEmpty {
        path: root.to_path_buf(),
        state: state.to_string(),
    })
}

impl RestorePlan {
    /// The plan of what the planner found, with its totals.
    fn new(
        snap: &Snapshot,
        roots: Vec<RootMapping>,
        components: BTreeSet<Component>,
        p: Planner,
    ) -> RestorePlan {
        let mut plan = RestorePlan {
            snapshot: snap.id.to_hex(),
            origin: snap.origin().to_hex(),
            roots,
            components: components.into_iter().collect(),
            actions: Vec::new(),
            write_files: 0,
            write_bytes: 0,
            keep_files: 0,
            delete_paths: 0,
            not_captured: 0,
            protected: Vec::new(),
            content_compared: p.verify,
            unfinished_restore: Vec::new(),
            resumed: false,
            target: None,
            rollback: None,
            space: None,
            force: false,
            directories: p.directories,
            in_place: None,
        };
        for a in &p.actions {
            match a {
                Action::Mkdir { .. } => {}
                Action::Write { size, .. } | Action::Database { size, .. } => {
                    plan.write_files += 1;
                    plan.write_bytes += size;
                }
                Action::Symlink { .. } => plan.write_files += 1,
                Action::Keep { .. } => plan.keep_files += 1,
                Action::Delete { .. } | Action::RemoveSideFile { .. } => plan.delete_paths += 1,
                Action::NotCaptured { .. } => plan.not_captured += 1,
                Action::Protected { path } => {
                    plan.protected.push(path.to_string_lossy().into_owned());
                }
            }
        }
        plan.actions = p.actions;
        plan
    }
}

struct Planner<'a> {
    repo: &'a Repository,
    /// The snapshot's data dir (see `current`).
    data_dir: &'a Path,
    databases: &'a [DatabaseRecord],
    selection: &'a Selection,
    actions: Vec<Action>,
    directories: Vec<DirMeta>,
    db_physical_chunker: Chunker,
    db_chunker: Chunker,
    file_chunker: Chunker,
    /// Compare plain files whose size and mtime match by content too.
    verify: bool,
    /// Root label -> paths (relative, lossy) the backup could not capture.
    not_captured: BTreeMap<String, BTreeSet<String>>,
    /// The directories never touched (device, inode): found by identity, so that a
    /// repository reached through a symlinked directory is recognised too.
    protect: BTreeSet<(u64, u64)>,
    /// The snapshot's short id, for errors.
    snapshot: String,
    /// Trees loaded ahead of the walk (`prefetch_trees`).
    trees: HashMap<ChunkId, Arc<Tree>>,
}

/// One entry of the snapshot beside what is at its place in the destination now.
struct Place<'e> {
    root: &'e str,
    entry: &'e Entry,
    rel: Vec<u8>,
    path: PathBuf,
    cur: Option<fs::Metadata>,
}

impl Place<'_> {
    fn is_dir_now(&self) -> bool {
        self.cur.as_ref().is_some_and(|m| m.is_dir())
    }
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = rel.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

/// The names in a directory, sorted (none when it cannot be read).
fn names_in(dir: &Path) -> BTreeSet<Vec<u8>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

impl<'a> Planner<'a> {
    fn new(
        repo: &'a Repository,
        rec: &'a SnapshotRecord,
        selection: &'a Selection,
        protect: &[PathBuf],
    ) -> Self {
        let mut not_captured: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for n in &rec.not_captured {
            not_captured
                .entry(n.root.clone())
                .or_default()
                .insert(n.rel.clone());
        }
        Planner {
            repo,
            data_dir: Path::new(&rec.data_dir),
            databases: &rec.databases,
            selection,
            actions: Vec::new(),
            directories: Vec::new(),
            db_physical_chunker: repo.db_physical_chunker(),
            db_chunker: repo.db_chunker(),
            file_chunker: repo.chunker(),
            verify: false,
            not_captured,
            protect: protect
                .iter()
                .filter_map(|p| fs::metadata(p).ok())
                .map(|m| (m.dev(), m.ino()))
                .collect(),
            snapshot: String::new(),
            trees: HashMap::new(),
        }
    }

    /// A tree of the snapshot: prefetched, else read now. A prefetched tree is handed
    /// over, not kept: its entries are in the plan once its directory is planned, so
    /// the plan never holds a snapshot's listings twice. (A tree met again, as identical
    /// directories share one, is read again.)
    fn tree(&mut self, id: &ChunkId) -> Result<Arc<Tree>> {
        match self.trees.remove(id) {
            Some(t) => Ok(t),
            None => self.repo.load_tree(id).map(Arc::new),
        }
    }

    /// Is `path` (its metadata `m`, not followed) a protected directory (the repository,
    /// the cache dir, or any other jellysnap repository)? Then it is left alone, said so
    /// in the plan, and nothing below it is looked at.
    fn protected(&mut self, path: &Path, m: Option<&fs::Metadata>) -> bool {
        let hit = m.is_some_and(|m| {
            m.is_dir()
                && (self.protect.contains(&(m.dev(), m.ino()))
                    || Repository::holds_repository(path))
        });
        if hit {
            self.actions.push(Action::Protected {
                path: path.to_path_buf(),
            });
        }
        hit
    }

    /// Is `rel`, or a directory above it, a path the backup could not capture? Names are
    /// compared lossily, as recorded: a collision only leaves one more path alone.
    fn not_captured(&self, root: &str, rel: &[u8]) -> bool {
        let Some(set) = self.not_captured.get(root) else {
            return false;
        };
        let rel = String::from_utf8_lossy(rel);
        set.contains("")
            || set.contains(rel.as_ref())
            || rel.match_indices('/').any(|(i, _)| set.contains(&rel[..i]))
    }

    /// One root of the snapshot, restored to `m.to`.
    fn root(&mut self, snap: &Snapshot, root_tree: &Tree, m: &RootMapping) -> Result<()> {
        let found = root_tree.find(m.label.as_bytes());
        let Some((entry, tree)) = found.and_then(|e| match &e.node {
            Node::Dir { tree } => Some((e, tree)),
            _ => None,
        }) else {
            return Err(Error::corrupt(
                "snapshot",
                snap.id.to_hex(),
                format!("root {} missing from its tree", m.label),
            ));
        };
        if !m.to.is_dir() {
            self.actions.push(Action::Mkdir { path: m.to.clone() });
        }
        let t = self.tree(tree)?;
        self.dir(&m.label, &t, &m.to, b"", false)?;
        self.directories.push(DirMeta {
            path: m.to.clone(),
            entry: entry.clone(),
        });
        Ok(())
    }

    /// The entries of `tree` restored into `dest`. `fresh`: `dest` will be a new, empty
    /// directory (it is missing, or something else is there now, a symlink included): what
    /// is at its path now is not looked at, so nothing is kept, deleted or followed there.
    fn dir(&mut self, root: &str, tree: &Tree, dest: &Path, rel: &[u8], fresh: bool) -> Result<()> {
        let existing = if fresh {
            BTreeSet::new()
        } else {
            names_in(dest)
        };
        for e in &tree.entries {
            let child_rel = join_rel(rel, &e.name);
            if self.selection.classify(root, &child_rel) == Class::Skip {
                continue;
            }
            let path = dest.join(OsStr::from_bytes(&e.name));
            let cur = if fresh {
                None
            } else {
                self.current(root, e, &path, &child_rel)
            };
            if self.protected(&path, cur.as_ref()) {
                continue;
            }
            if self.not_captured(root, &child_rel) {
                if cur.is_some() {
                    self.actions.push(Action::NotCaptured { path });
                }
                continue;
            }
            let at = Place {
                root,
                entry: e,
                rel: child_rel,
                path,
                cur,
            };
            match &e.node {
                Node::Dir { tree } => self.subdir(at, tree)?,
                Node::File { size, database, .. } => self.file(at, *size, *database)?,
                Node::Symlink { target } => self.symlink(at, target),
            }
        }
        // Extra files inside the restored items go; everything else stays.
        for name in existing {
            if tree.find(&name).is_some() {
                continue;
            }
            let path = dest.join(OsStr::from_bytes(&name));
            // An interrupted restore's record stays until a restore finishes it.
            if name == super::INTENT_NAME.as_bytes() {
                continue;
            }
            if is_restore_leftover(&name) {
                self.actions.push(Action::Delete { path });
                continue;
            }
            self.extra(root, &path, &join_rel(rel, &name));
        }
        Ok(())
    }

    /// What is at `path` now. A directory of the snapshot that is a symlink to a
    /// directory at the destination (metadata/ on another disk) is restored through the
    /// link; a plugin's entry of the data path never is (a backup does not follow it
    /// either: it may lead to a media library): the link is replaced.
    fn current(&self, root: &str, e: &Entry, path: &Path, rel: &[u8]) -> Option<fs::Metadata> {
        let cur = fs::symlink_metadata(path).ok();
        if matches!(e.node, Node::Dir { .. })
            && cur.as_ref().is_some_and(|m| m.file_type().is_symlink())
            && !crate::jellyfin::layout::is_plugin_entry(self.data_dir, path)
        {
            if let Ok(m) = fs::metadata(path) {
                if m.is_dir() && self.selection.is_anchor(root, rel) {
                    return Some(m);
                }
            }
        }
        cur
    }

    fn subdir(&mut self, at: Place, tree: &ChunkId) -> Result<()> {
        // A symlink here (not an item's own link to its directory, which `current`
        // follows) is replaced by the snapshot's directory: the planner must not look
        // through it, or it would plan to keep and delete files in the link's target.
        let fresh = !at.is_dir_now();
        match &at.cur {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                self.actions.push(Action::Delete {
                    path: at.path.clone(),
                });
                self.actions.push(Action::Mkdir {
                    path: at.path.clone(),
                });
            }
            None => self.actions.push(Action::Mkdir {
                path: at.path.clone(),
            }),
        }
        let sub = self.tree(tree)?;
        self.dir(at.root, &sub, &at.path, &at.rel, fresh)?;
        self.directories.push(DirMeta {
            path: at.path,
            entry: at.entry.clone(),
        });
        Ok(())
    }

    fn file(&mut self, mut at: Place, size: u64, database: DbCapture) -> Result<()> {
        if database.is_database() && at.cur.as_ref().is_some_and(|m| m.is_symlink()) {
            self.through_link(&mut at)?;
        }
        let rel = String::from_utf8_lossy(&at.rel);
        let rec = self
            .databases
            .iter()
            .find(|d| d.root == at.root && d.rel == rel);
        let proof = rec.and_then(|d| d.verified());
        let same = self.unchanged(&at, size, database, proof.as_ref());
        if at.is_dir_now() {
            // A directory where the snapshot has a file: empty it (within scope), then
            // remove it.
            self.extra(at.root, &at.path, &at.rel);
        }
        let (path, entry) = (at.path, at.entry.clone());
        self.actions.push(if same {
            Action::Keep {
                path: path.clone(),
                entry,
            }
        } else if database.is_database() {
            Action::Database {
                path: path.clone(),
                size: entry.size(),
                capture: database,
                verified_at_backup: proof.is_some(),
                sqlite_version: rec.map(|d| d.sqlite_version.clone()),
                entry: Box::new(entry),
                proof,
            }
        } else {
            Action::Write {
                path: path.clone(),
                size: entry.size(),
                entry,
            }
        });
        if database.is_database() {
            for suffix in SIDE_SUFFIXES {
                let side = side_path(&path, suffix);
                if fs::symlink_metadata(&side).is_ok() {
                    self.actions.push(Action::RemoveSideFile { path: side });
                }
            }
        }
        Ok(())
    }

    /// A database whose place is a symlink (the database on another disk, linked into
    /// the data dir) is restored into the file the link points at, the link kept, as
    /// the backup captured it through the link. A link to nothing is refused before
    /// anything changes: restoring beside a disk that is not mounted would hide the
    /// database from the server that mounts it later.
    fn through_link(&self, at: &mut Place) -> Result<()> {
        let link = at.path.clone();
        let refuse = |detail: String| Error::DatabaseRestore {
            path: link.clone(),
            snapshot: self.snapshot.clone(),
            detail,
        };
        let target = fs::read_link(&link).at(&link)?;
        match fs::canonicalize(&at.path) {
            Ok(real) if real.is_file() => {
                at.cur = fs::symlink_metadata(&real).ok();
                at.path = real;
                Ok(())
            }
            Ok(real) => Err(refuse(format!(
                "it is a symlink to {}, which is not a file; replace the link with the database file's own link or remove it",
                real.display()
            ))),
            Err(e) => Err(refuse(format!(
                "it is a symlink to {}, which cannot be reached ({e}): is its disk mounted? Mount it and retry, or remove the link to restore the database into the data dir itself",
                target.display()
            ))),
        }
    }

    /// Does the file in place already hold the snapshot's content? Databases are
    /// compared by content: a live database can change in its WAL without touching the
    /// main file's mtime. Unreadable chunk lists count as "differs"; writing the file
    /// then reports the damage.
    fn unchanged(
        &self,
        at: &Place,
        size: u64,
        database: DbCapture,
        proof: Option<&Verified>,
    ) -> bool {
        let Some(m) = at.cur.as_ref().filter(|m| m.is_file()) else {
            return false;
        };
        let chunks = || self.repo.file_chunks(&at.entry.node).ok();
        match database {
            // Size and mtime, as backup compares; a change that kept both (bit rot, a
            // write lost in a power cut) is seen only when content is compared.
            DbCapture::None => {
                m.size() == size
                    && crate::ops::clock::stat_ns(m.mtime(), m.mtime_nsec()).0 == at.entry.mtime_ns
                    && (!self.verify
                        || chunks().is_some_and(|c| same_content(&at.path, &c, &self.file_chunker)))
            }
            DbCapture::Physical => {
                m.size() == size
                    && chunks()
                        .is_some_and(|c| same_content(&at.path, &c, &self.db_physical_chunker))
            }
            // What the backup proved, seen again: a live database whose rows dump the
            // same but whose index is damaged is not unchanged.
            DbCapture::Logical => match proof {
                Some(p) => same_observed(&at.path, p),
                None => chunks().is_some_and(|c| same_logical(&at.path, &c, &self.db_chunker)),
            },
        }
    }

    fn symlink(&mut self, at: Place, target: &[u8]) {
        let same = at.cur.as_ref().is_some_and(|m| m.file_type().is_symlink())
            && fs::read_link(&at.path)
                .map(|t| t.as_os_str().as_bytes() == target)
                .unwrap_or(false);
        if same {
            return;
        }
        if at.is_dir_now() {
            self.extra(at.root, &at.path, &at.rel);
        }
        self.actions.push(Action::Symlink {
            path: at.path,
            entry: at.entry.clone(),
        });
    }

    /// A path in the destination the snapshot does not have: deleted when it lies inside
    /// a restored item (a directory after its contents, and only if it empties), left
    /// alone otherwise.
    fn extra(&mut self, root: &str, path: &Path, rel: &[u8]) {
        let class = self.selection.classify(root, rel);
        if class == Class::Skip {
            return;
        }
        if self.not_captured(root, rel) {
            self.actions.push(Action::NotCaptured {
                path: path.to_path_buf(),
            });
            return;
        }
        let meta = fs::symlink_metadata(path).ok();
        if self.protected(path, meta.as_ref()) {
            return;
        }
        let is_dir = meta.is_some_and(|m| m.is_dir());
        if is_dir {
            for n in names_in(path) {
                self.extra(root, &path.join(OsStr::from_bytes(&n)), &join_rel(rel, &n));
            }
        }
        if matches!(class, Class::Include(_)) {
            self.actions.push(Action::Delete {
                path: path.to_path_buf(),
            });
        }
    }
}
