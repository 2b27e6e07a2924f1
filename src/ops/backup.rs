//! The write path (DESIGN §6): capture databases, walk the selection in parallel, reuse
//! unchanged files from the parent snapshot without reading them, chunk/dedup/compress
//! changed ones, write trees bottom-up, then commit the snapshot record.
//!
//! Errors on single files (unreadable, vanished) are collected in the summary and never
//! abort the snapshot; repository errors do.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::format::chunker::Chunker;
use crate::format::chunklist;
use crate::format::compress::is_precompressed;
use crate::format::config::DbCaptureMode;
use crate::format::id::{ChunkId, SnapshotId};
use crate::format::pack::ChunkKind;
use crate::format::snapshot::{
    validate_name, Component, DatabaseRecord, NotCaptured, NotCapturedKind, Snapshot,
    SnapshotRecord, Summary,
};
use crate::format::tree::{ChunkRef, DbCapture, Entry, Node, Tree};
use crate::jellyfin::{self, capture, Class, Source, SourceOptions};
use crate::ops::progress::Progress;
use crate::store::packer::ChunkSink;
use crate::store::repo::{Access, Repository};

/// Files modified this close to the scan start are re-read next time: a write in the same
/// timestamp tick after our read would leave size and mtime unchanged.
pub const TIMESTAMP_GRANULARITY_NS: i64 = 2_000_000_000;
/// Attempts to read a file that keeps changing before it is stored as last read.
const READ_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub source: SourceOptions,
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// Create the repository when the path holds none. Off, a missing repository is an
    /// error: a backup disk that is not mounted must not get a new repository in its
    /// mount point.
    pub create_repository: bool,
}

#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub id: SnapshotId,
    pub record: SnapshotRecord,
    pub parent: Option<SnapshotId>,
}

impl BackupOutcome {
    pub fn is_partial(&self) -> bool {
        !self.record.summary.errors.is_empty() || !self.record.not_captured.is_empty()
    }
}

/// Open the repository a backup writes to, creating it first when it holds none and
/// `opts.create_repository` allows it. The source is checked before anything is
/// created. Returns the repository and whether it was created.
pub fn open_repository(path: &Path, opts: &BackupOptions) -> Result<(Repository, bool)> {
    let mut created = false;
    if !Repository::exists(path) {
        if !opts.create_repository {
            return Err(Error::NoRepository(path.to_path_buf()));
        }
        jellyfin::detect(&opts.source)?;
        Repository::init(path)?;
        created = true;
    }
    Ok((Repository::open(path, Access::Write)?, created))
}

struct Ctx<'a> {
    repo: &'a Repository,
    sink: ChunkSink<'a>,
    chunker: Chunker,
    db_chunker: Chunker,
    db_physical_chunker: Chunker,
    source: &'a Source,
    captured: HashMap<PathBuf, DbSlot>,
    repo_dir: PathBuf,
    version: Mutex<Option<String>>,
    trust_before_ns: i64,
    progress: &'a dyn Progress,
    files: AtomicU64,
    dirs: AtomicU64,
    logical: AtomicU64,
    bytes_read: AtomicU64,
    db_bytes: AtomicU64,
    files_read: AtomicU64,
    files_reused: AtomicU64,
    errors: Mutex<Vec<String>>,
    not_captured: Mutex<Vec<NotCaptured>>,
    changed: Mutex<Vec<String>>,
    db_physical: Mutex<Vec<String>>,
    databases: Mutex<Vec<DatabaseRecord>>,
}

/// A database being captured, and where it sits in the selection.
struct DbSlot {
    root: String,
    rel: String,
    state: Mutex<Capture>,
}

/// A finished database capture: a temp file holding a logical dump or a physical copy.
struct CapturedDb {
    file: tempfile::TempPath,
    kind: DbCapture,
    /// Why a logical capture fell back to the physical copy.
    fallback: Option<String>,
    /// The source's observation digest, which the rebuilt dump was shown to equal.
    verified: Option<[u8; 32]>,
}

enum Capture {
    Running(std::thread::JoinHandle<Result<(CapturedDb, Option<String>)>>),
    Done(CapturedDb),
    Taken,
}

impl Ctx<'_> {
    /// Wait for the capture of `path` (once), keeping its temp file until the end.
    fn captured_db(&self, path: &Path) -> Result<(PathBuf, DbCapture)> {
        let failed = |detail: String| Error::DatabaseCapture {
            path: path.to_path_buf(),
            detail,
        };
        let slot = self
            .captured
            .get(path)
            .ok_or_else(|| failed("capture missing".into()))?;
        let mut state = slot
            .state
            .lock()
            .map_err(|_| failed("capture state poisoned".into()))?;
        if let Capture::Running(_) = &*state {
            let Capture::Running(h) = std::mem::replace(&mut *state, Capture::Taken) else {
                return Err(failed("capture state lost".into()));
            };
            let (db, version) = h
                .join()
                .map_err(|_| failed("capture thread panicked".into()))??;
            if let Some(why) = &db.fallback {
                let msg = format!("{}: captured physically ({why})", path.display());
                self.progress.warn(&msg);
                self.db_physical
                    .lock()
                    .map_err(|_| failed("capture state poisoned".into()))?
                    .push(msg);
            }
            self.databases
                .lock()
                .map_err(|_| failed("capture state poisoned".into()))?
                .push(DatabaseRecord {
                    root: slot.root.clone(),
                    rel: slot.rel.clone(),
                    capture: db.kind,
                    reason: db.fallback.clone(),
                    verified: db.verified.map(|d| crate::format::id::hex(&d)),
                    sqlite_version: capture::sqlite_version().to_string(),
                });
            if version.is_some() {
                if let Ok(mut v) = self.version.lock() {
                    *v = version;
                }
            }
            *state = Capture::Done(db);
        }
        match &*state {
            Capture::Done(db) => Ok((db.file.to_path_buf(), db.kind)),
            _ => Err(failed("capture failed earlier".into())),
        }
    }
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

fn ctime_ns(m: &Metadata) -> i64 {
    m.ctime() * 1_000_000_000 + m.ctime_nsec()
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Take a snapshot (runs in the I/O thread pool, see `parallel`).
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    crate::ops::parallel::in_io_pool(|| backup_in_pool(repo, opts, progress))
}

fn backup_in_pool(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time_ns = now_ns();
    let (snapshots, _) = repo.snapshots()?;
    if let Some(name) = &opts.name {
        validate_name(name)?;
        if snapshots
            .iter()
            .any(|s| s.record.name.as_deref() == Some(name))
        {
            return Err(Error::DuplicateName(name.clone()));
        }
    }
    let source = jellyfin::detect(&opts.source)?;
    let parent: Option<&Snapshot> = snapshots
        .iter()
        .rev()
        .find(|s| s.record.roots == source.selection.roots);

    // Databases are captured on their own threads while the walk runs; the walk waits
    // for a capture only when it reaches that database.
    let mut captured = HashMap::new();
    for item in source
        .selection
        .items
        .iter()
        .filter(|i| i.component == Component::Database)
    {
        let Some(root) = source.selection.root_path(&item.root) else {
            continue;
        };
        let path = Path::new(root).join(&item.rel);
        let (src, tmp_dir) = (path.clone(), repo.tmp_dir());
        let mode = repo.config().db_capture;
        let handle = std::thread::Builder::new()
            .name("jellysnap-db-capture".into())
            .spawn(move || -> Result<(CapturedDb, Option<String>)> {
                // The backup API gives a consistent copy of the live database; the
                // logical dump is then taken from that private copy, never the live file.
                let copy = capture::capture(&src, &tmp_dir)?;
                let version = if src.file_name().is_some_and(|n| n == "jellyfin.db") {
                    jellyfin::version::from_database(&copy)
                } else {
                    None
                };
                let refused = match mode {
                    DbCaptureMode::Physical => None,
                    // Stored only once proven: rebuilt in scratch space and compared
                    // with the copy in everything an application can observe.
                    DbCaptureMode::Logical => match capture::dump_and_prove(&copy, &tmp_dir)? {
                        capture::Logical::Exact { dump, digest } => {
                            let db = CapturedDb {
                                file: dump,
                                kind: DbCapture::Logical,
                                fallback: None,
                                verified: Some(digest),
                            };
                            return Ok((db, version));
                        }
                        capture::Logical::Refused(why) => Some(why),
                    },
                };
                let db = CapturedDb {
                    file: copy,
                    kind: DbCapture::Physical,
                    fallback: refused,
                    verified: None,
                };
                Ok((db, version))
            })
            .at(&path)?;
        captured.insert(
            path,
            DbSlot {
                root: item.root.clone(),
                rel: item.rel.clone(),
                state: Mutex::new(Capture::Running(handle)),
            },
        );
    }

    let ctx = Ctx {
        repo,
        sink: ChunkSink::new(repo)?,
        chunker: repo.chunker(),
        db_chunker: repo.db_chunker(),
        db_physical_chunker: repo.db_physical_chunker(),
        source: &source,
        captured,
        repo_dir: repo
            .path()
            .canonicalize()
            .unwrap_or_else(|_| repo.path().to_path_buf()),
        version: Mutex::new(None),
        trust_before_ns: time_ns - TIMESTAMP_GRANULARITY_NS,
        progress,
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        logical: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        db_bytes: AtomicU64::new(0),
        files_read: AtomicU64::new(0),
        files_reused: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        not_captured: Mutex::new(Vec::new()),
        changed: Mutex::new(Vec::new()),
        db_physical: Mutex::new(Vec::new()),
        databases: Mutex::new(Vec::new()),
    };

    for m in &source.missing {
        let c = m.component.map_or("?", |c| c.name());
        ctx.report(
            Path::new(&m.path),
            &format!("the {c} directory is not there (is its disk mounted?); this snapshot does not include {c}"),
        );
    }
    if let Ok(mut v) = ctx.not_captured.lock() {
        v.extend(source.missing.iter().cloned());
    }

    progress.phase("backing up", None);
    let parent_root = match parent {
        Some(p) => Some(repo.load_tree(&p.record.tree)?),
        None => None,
    };
    let walked = (|| -> Result<ChunkId> {
        let mut root_entries = Vec::new();
        for root in &source.selection.roots {
            let path = PathBuf::from(&root.path);
            let meta = fs::symlink_metadata(&path).at(&path)?;
            let parent_sub = match parent_root
                .as_ref()
                .and_then(|t| t.find(root.label.as_bytes()))
            {
                Some(Entry {
                    node: Node::Dir { tree },
                    ..
                }) => Some(repo.load_tree(tree)?),
                _ => None,
            };
            let tree = walk_dir(&ctx, &root.label, &path, b"", parent_sub.as_ref())?;
            root_entries.push(entry_from_meta(
                root.label.as_bytes().to_vec(),
                &meta,
                Node::Dir { tree },
            ));
        }
        root_entries.sort_by(|a, b| a.name.cmp(&b.name));
        ctx.sink.put(
            ChunkKind::Tree,
            &Tree {
                entries: root_entries,
            }
            .encode()?,
            true,
        )
    })();
    let root_tree = match walked {
        Ok(t) => t,
        // Workers see only "pack writer stopped"; report what stopped it.
        Err(e) => return Err(ctx.sink.cause(e)),
    };

    // A database the walk did not reach (unreadable parent dir) still reports its error.
    let db_paths: Vec<PathBuf> = ctx.captured.keys().cloned().collect();
    for p in &db_paths {
        ctx.captured_db(p)?;
    }
    let version = ctx
        .version
        .lock()
        .ok()
        .and_then(|mut v| v.take())
        .or_else(|| jellyfin::version::from_migrations_xml(&source.config_dir));

    let Ctx {
        sink,
        files,
        dirs,
        logical,
        bytes_read,
        db_bytes,
        files_read,
        files_reused,
        errors,
        not_captured,
        changed,
        db_physical,
        databases,
        ..
    } = ctx;
    let mut not_captured = not_captured.into_inner().unwrap_or_default();
    not_captured.sort();
    not_captured.dedup();
    let stats = (
        sink.stats.new_chunks.load(Ordering::Relaxed),
        sink.stats.new_raw_bytes.load(Ordering::Relaxed),
        sink.stats.new_stored_bytes.load(Ordering::Relaxed),
    );
    progress.phase("syncing packs and index", None);
    sink.finish()?;

    let summary = Summary {
        files: files.into_inner(),
        dirs: dirs.into_inner(),
        logical_bytes: logical.into_inner(),
        bytes_read: bytes_read.into_inner(),
        db_bytes: db_bytes.into_inner(),
        files_read: files_read.into_inner(),
        files_reused: files_reused.into_inner(),
        new_chunks: stats.0,
        new_raw_bytes: stats.1,
        new_stored_bytes: stats.2,
        duration_ms: started.elapsed().as_millis() as u64,
        errors: errors.into_inner().unwrap_or_default(),
        changed_during_backup: changed.into_inner().unwrap_or_default(),
        db_physical: db_physical.into_inner().unwrap_or_default(),
    };
    let record = SnapshotRecord {
        name: opts.name.clone(),
        tags: opts.tags.clone(),
        time_ns,
        host: hostname(),
        layout: source.layout.to_string(),
        data_dir: source.data_dir.to_string_lossy().into_owned(),
        roots: source.selection.roots.clone(),
        items: source.selection.items.clone(),
        components: source.components.iter().copied().collect(),
        jellyfin_version: version,
        tree: root_tree,
        parent: parent.map(|p| p.id),
        summary,
        jellysnap_version: env!("CARGO_PKG_VERSION").to_string(),
        databases: {
            let mut d = databases.into_inner().map_err(|_| Error::DatabaseCapture {
                path: source.data_dir.clone(),
                detail: "capture state poisoned".into(),
            })?;
            d.sort_by(|a, b| (&a.root, &a.rel).cmp(&(&b.root, &b.rel)));
            d
        },
        not_captured,
    };
    progress.phase("committing snapshot", None);
    let id = repo.commit_snapshot(&record)?;
    progress.finish();
    Ok(BackupOutcome {
        id,
        record,
        parent: parent.map(|p| p.id),
    })
}

fn entry_from_meta(name: Vec<u8>, m: &Metadata, node: Node) -> Entry {
    Entry {
        name,
        node,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: mtime_ns(m),
        ctime_ns: ctime_ns(m),
        inode: m.ino(),
    }
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        r.extend_from_slice(rel);
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

impl Ctx<'_> {
    fn report(&self, path: &Path, what: &str) {
        let msg = format!("{}: {what}", path.display());
        self.progress.warn(&msg);
        if let Ok(mut e) = self.errors.lock() {
            e.push(msg);
        }
    }

    /// Record a path of the selection whose content is not in the snapshot (already
    /// reported), so that restore leaves it alone.
    fn not_captured(&self, kind: NotCapturedKind, root: &str, rel: &[u8], path: &Path) {
        if let Ok(mut v) = self.not_captured.lock() {
            v.push(NotCaptured {
                kind,
                root: root.to_string(),
                rel: String::from_utf8_lossy(rel).into_owned(),
                path: path.to_string_lossy().into_owned(),
                component: None,
            });
        }
    }
}

/// Walk one directory and return the id of its tree chunk.
fn walk_dir(
    ctx: &Ctx,
    root: &str,
    dir: &Path,
    rel: &[u8],
    parent: Option<&Tree>,
) -> Result<ChunkId> {
    use std::os::unix::ffi::OsStrExt;
    ctx.dirs.fetch_add(1, Ordering::Relaxed);
    let mut children = Vec::new();
    let unlisted = |e: std::io::Error| {
        ctx.report(dir, &format!("cannot list directory: {e}"));
        ctx.not_captured(NotCapturedKind::Dir, root, rel, dir);
    };
    match fs::read_dir(dir) {
        Ok(rd) => {
            for ent in rd {
                match ent {
                    Ok(e) => children.push(e.file_name()),
                    Err(e) => unlisted(e),
                }
            }
        }
        Err(e) => unlisted(e),
    }
    children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let entries: Vec<Result<Option<Entry>>> = children
        .par_iter()
        .map(|name| {
            let name = name.as_bytes();
            let child_rel = join_rel(rel, name);
            let class = ctx.source.selection.classify(root, &child_rel);
            if class == Class::Skip {
                return Ok(None);
            }
            let path = dir.join(std::ffi::OsStr::from_bytes(name));
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    ctx.report(&path, &format!("vanished or unreadable: {e}"));
                    ctx.not_captured(NotCapturedKind::File, root, &child_rel, &path);
                    return Ok(None);
                }
            };
            // An item's own directory (or one on the way to it) may be a symlink to
            // another disk, as admins do with metadata/: follow it.
            let meta = if meta.file_type().is_symlink()
                && ctx.source.selection.is_anchor(root, &child_rel)
            {
                match fs::metadata(&path) {
                    Ok(m) if m.is_dir() => m,
                    _ => meta,
                }
            } else {
                meta
            };
            let prev = parent.and_then(|t| t.find(name));
            let ft = meta.file_type();
            if ft.is_dir() && path == ctx.repo_dir {
                return Ok(None); // never back up the repository into itself
            }
            if ft.is_dir() {
                let prev_tree = match prev {
                    Some(Entry {
                        node: Node::Dir { tree },
                        ..
                    }) => Some(ctx.repo.load_tree(tree)?),
                    _ => None,
                };
                let tree = walk_dir(ctx, root, &path, &child_rel, prev_tree.as_ref())?;
                return Ok(Some(entry_from_meta(
                    name.to_vec(),
                    &meta,
                    Node::Dir { tree },
                )));
            }
            let Class::Include(component) = class else {
                return Ok(None);
            };
            if ft.is_symlink() {
                return match fs::read_link(&path) {
                    Ok(t) => {
                        ctx.files.fetch_add(1, Ordering::Relaxed);
                        Ok(Some(entry_from_meta(
                            name.to_vec(),
                            &meta,
                            Node::Symlink {
                                target: t.as_os_str().as_bytes().to_vec(),
                            },
                        )))
                    }
                    Err(e) => {
                        ctx.report(&path, &format!("cannot read symlink: {e}"));
                        ctx.not_captured(NotCapturedKind::File, root, &child_rel, &path);
                        Ok(None)
                    }
                };
            }
            if !ft.is_file() {
                return Ok(None); // sockets, fifos and devices are not Jellyfin state
            }
            let node = if component == Component::Database && ctx.captured.contains_key(&path) {
                database_node(ctx, &path)?
            } else {
                match file_node(ctx, &path, &meta, prev)? {
                    Some(n) => n,
                    None => {
                        ctx.not_captured(NotCapturedKind::File, root, &child_rel, &path);
                        return Ok(None);
                    }
                }
            };
            ctx.files.fetch_add(1, Ordering::Relaxed);
            ctx.logical.fetch_add(
                match &node {
                    Node::File { size, .. } => *size,
                    _ => 0,
                },
                Ordering::Relaxed,
            );
            Ok(Some(entry_from_meta(name.to_vec(), &meta, node)))
        })
        .collect();
    let mut tree = Tree::default();
    for e in entries {
        if let Some(e) = e? {
            tree.entries.push(e);
        }
    }
    ctx.sink.put(ChunkKind::Tree, &tree.encode()?, true)
}

fn database_node(ctx: &Ctx, path: &Path) -> Result<Node> {
    let (tmp, kind) = ctx.captured_db(path)?;
    let tmp_path: &Path = &tmp;
    let mut f = File::open(tmp_path).at(tmp_path)?;
    let chunker = match kind {
        DbCapture::Logical => &ctx.db_chunker,
        _ => &ctx.db_physical_chunker,
    };
    let (chunks, n) = chunk_file(ctx, chunker, &mut f, true)?.at(tmp_path)?;
    ctx.db_bytes.fetch_add(n, Ordering::Relaxed);
    let (chunks, indirect) = store_chunk_list(ctx, chunks)?;
    Ok(Node::File {
        size: n,
        chunks,
        indirect,
        trusted: false,
        database: kind,
    })
}

/// A long chunk list becomes list chunks (tree kind, so they are durable before the tree
/// that references them: DESIGN §5.2).
fn store_chunk_list(ctx: &Ctx, chunks: Vec<ChunkRef>) -> Result<(Vec<ChunkRef>, u8)> {
    chunklist::build(chunks, |bytes| ctx.sink.put(ChunkKind::Tree, bytes, true))
}

fn chunk_file(
    ctx: &Ctx,
    chunker: &Chunker,
    f: &mut File,
    compressible_default: bool,
) -> Result<std::io::Result<(Vec<ChunkRef>, u64)>> {
    // Outer error: the repository failed (fatal). Inner error: the source could not be
    // read (reported per file).
    READ_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let mut chunks = Vec::new();
        let mut compressible = None;
        let read = chunker.chunk_reader(f, &mut buf, |data| {
            let c = *compressible
                .get_or_insert_with(|| compressible_default && !is_precompressed(data));
            let id = ctx.sink.put(ChunkKind::Data, data, c)?;
            chunks.push(ChunkRef {
                id,
                len: data.len() as u32,
            });
            ctx.progress.advance(data.len() as u64);
            Ok::<(), Error>(())
        })?;
        Ok(read.map(|n| (chunks, n)))
    })
}

/// A regular file: reused from the parent snapshot when unchanged, else read and chunked.
/// `None` when it could not be read (reported).
fn file_node(
    ctx: &Ctx,
    path: &Path,
    meta: &Metadata,
    prev: Option<&Entry>,
) -> Result<Option<Node>> {
    if let Some(Entry {
        node:
            Node::File {
                size,
                chunks,
                indirect,
                trusted: true,
                database: DbCapture::None,
            },
        mtime_ns: pm,
        ctime_ns: pc,
        inode,
        ..
    }) = prev
    {
        if *size == meta.size()
            && *pm == mtime_ns(meta)
            && *pc == ctime_ns(meta)
            && *inode == meta.ino()
        {
            ctx.files_reused.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(Node::File {
                size: *size,
                chunks: chunks.clone(),
                indirect: *indirect,
                trusted: true,
                database: DbCapture::None,
            }));
        }
    }
    for attempt in 1..=READ_ATTEMPTS {
        let opened = File::open(path);
        #[cfg(feature = "test-hooks")]
        let opened = crate::store::testing::source_open().and(opened);
        let mut f = match opened {
            Ok(f) => f,
            Err(e) => {
                ctx.report(path, &format!("cannot read: {e}"));
                return Ok(None);
            }
        };
        let before = f.metadata().at(path)?;
        let (chunks, n) = match chunk_file(ctx, &ctx.chunker, &mut f, true)? {
            Ok(r) => r,
            Err(e) => {
                ctx.report(path, &format!("read failed: {e}"));
                return Ok(None);
            }
        };
        ctx.bytes_read.fetch_add(n, Ordering::Relaxed);
        let after = f.metadata().at(path)?;
        let stable = before.size() == after.size()
            && mtime_ns(&before) == mtime_ns(&after)
            && ctime_ns(&before) == ctime_ns(&after)
            && after.size() == n;
        if stable || attempt == READ_ATTEMPTS {
            if !stable {
                if let Ok(mut c) = ctx.changed.lock() {
                    c.push(path.display().to_string());
                }
                ctx.progress.warn(&format!(
                    "{}: changed while being read; stored as last read",
                    path.display()
                ));
            }
            ctx.files_read.fetch_add(1, Ordering::Relaxed);
            let trusted = stable && mtime_ns(&after) < ctx.trust_before_ns;
            let (chunks, indirect) = store_chunk_list(ctx, chunks)?;
            return Ok(Some(Node::File {
                size: n,
                chunks,
                indirect,
                trusted,
                database: DbCapture::None,
            }));
        }
    }
    Ok(None)
}
