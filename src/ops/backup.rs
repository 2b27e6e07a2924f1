//! The write path: capture databases, walk the selection in parallel, reuse unchanged
//! files from the parent snapshot without reading them, chunk/dedup/compress changed
//! ones, write trees bottom-up, then commit the snapshot record (the write order is in
//! docs/FORMAT.md, "Invariants").
//!
//! Errors on single files (unreadable, vanished) are collected in the summary and never
//! abort the snapshot; repository errors do.

mod databases;
pub use self::databases::REBUILDS_DIR;
mod files;
mod scan;
mod source;
mod tally;
mod walk;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use self::databases::Captures;
pub use self::tally::{DbProof, Notice};
use self::tally::{Findings, Tally, Written};
use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::snapshot::{
    parent_for, validate_name, NotCapturedKind, Snapshot, SnapshotRecord,
};
use crate::format::timefmt;
use crate::id::{ChunkId, SnapshotId};
use crate::jellyfin::{self, LeftOutWhy, Source, SourceOptions};
use crate::ops::clock::{self, stat_ns};
use crate::ops::progress::Progress;
use crate::store::packer::ChunkSink;
use crate::store::repo::{Access, Repository};
use crate::store::Place;
use crate::sys::Stat;

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
    /// What the admin should know about that is not an error: times out of range,
    /// special files left out, media in the metadata dir, a clock that went back.
    pub notices: Vec<Notice>,
    /// The repository lies inside the backed-up data (where the walk met it, left out):
    /// a disk failure takes both, and only the repository's own protection keeps an
    /// in-place restore from rolling it back.
    pub repository_inside_data: Option<PathBuf>,
    /// How each logical capture was proven.
    pub proofs: Vec<DbProof>,
}

impl BackupOutcome {
    pub fn is_partial(&self) -> bool {
        !self.record.summary.errors.is_empty() || !self.record.not_captured.is_empty()
    }
}

/// Open the repository a backup writes to, creating it first when it holds none and
/// `opts.create_repository` allows it. The source is checked before anything is
/// created. Returns the repository and whether it was created.
pub fn open_repository(
    place: &Place,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Repository, bool)> {
    let mut created = false;
    if !Repository::exists(place)? {
        if !opts.create_repository {
            return Err(Error::NoRepository(place.location.as_path()));
        }
        jellyfin::detect(&opts.source)?;
        match Repository::init(place) {
            Ok(_) => created = true,
            // A backup started at the same moment made it: back up into it.
            Err(Error::AlreadyInitialized { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let on_wait = |what: &str| progress.phase(what, None);
    Ok((
        Repository::open_noting(place, Access::Write, "backup", &on_wait)?,
        created,
    ))
}

/// What the walk needs, shared by all its threads. Counters are not here: each part of
/// the walk returns its own [`Tally`].
struct Ctx<'a> {
    repo: &'a Repository,
    sink: ChunkSink<'a>,
    chunker: Chunker,
    db_chunker: Chunker,
    db_physical_chunker: Chunker,
    source: &'a Source,
    captures: Captures,
    /// The repository's own directory (device, inode), never backed up into itself.
    repo_id: (u64, u64),
    /// Where the walk met the repository: inside what a restore rolls back.
    repo_inside: std::sync::OnceLock<PathBuf>,
    /// Files modified at or after this time are not trusted for reuse next time.
    trust_before_ns: i64,
    progress: &'a dyn Progress,
}

impl<'a> Ctx<'a> {
    fn new(
        repo: &'a Repository,
        source: &'a Source,
        captures: Captures,
        time_ns: i64,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        Ok(Ctx {
            repo,
            sink: ChunkSink::new(repo)?,
            chunker: repo.chunker(),
            db_chunker: repo.db_chunker(),
            db_physical_chunker: repo.db_physical_chunker(),
            source,
            captures,
            repo_id: fs::metadata(repo.state_dir())
                .map(|m| (m.dev(), m.ino()))
                .unwrap_or((0, 0)),
            repo_inside: std::sync::OnceLock::new(),
            trust_before_ns: time_ns - TIMESTAMP_GRANULARITY_NS,
            progress,
        })
    }

    /// Report a path that could not be read: a warning, and an error in the summary.
    fn report(&self, tally: &mut Tally, path: &Path, what: &str) {
        let msg = format!("{}: {what}", path.display());
        self.progress.warn(&msg);
        tally.errors.push(msg);
    }

    /// Report something about a path that is not an error: a warning, and a notice in
    /// the outcome.
    fn notice(&self, tally: &mut Tally, kind: &'static str, path: &Path, detail: String) {
        self.progress.warn(&format!("{}: {detail}", path.display()));
        tally.notices.push(Notice {
            kind,
            path: path.to_string_lossy().into_owned(),
            detail,
        });
    }
}

/// A file's mtime in Unix nanoseconds, saturated (see [`clock::stat_ns`]): the same
/// file gives the same value every time, so the files cache still reuses it.
fn mtime_ns(m: &Stat) -> i64 {
    stat_ns(m.mtime, m.mtime_nsec).0
}

fn ctime_ns(m: &Stat) -> i64 {
    stat_ns(m.ctime, m.ctime_nsec).0
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
    let time_ns = clock::now_ns();
    // What a killed `check --read-data` left in the scratch space (not the writer's own
    // scratch: a check runs without the writer lock, so only dead owners' files go).
    crate::ops::restore::clear_dead_rebuilds(&repo.tmp_dir());
    let (snapshots, _) = repo.snapshots()?;
    check_name(&snapshots, opts.name.as_deref())?;
    let source = jellyfin::detect(&opts.source)?;
    // Before any capture opens the database: one the server holds exclusively would make
    // it wait for ever.
    if let Some(c) = &source.db_config {
        c.ensure_readable(&source.jellyfin_db)?;
    }
    // Held until the snapshot is committed: an in-place restore meanwhile would make it
    // half old, half new.
    let _data_lock = jellyfin::datalock::for_backup(&source.data_dir)?;
    // A half-done rollback is neither state: storing it would make a snapshot of neither.
    crate::ops::restore::ensure_no_interrupted_restore(&source.data_dir, None)?;
    let home = &repo.config().repo_id;
    let parent = parent_for(&snapshots, &hostname(), &source.selection.roots, home);

    // A parent whose root listing cannot be read is no parent: everything is read again
    // and the listing stored anew (see `walk::prev_tree`).
    let parent_root = match parent.map(|p| repo.load_tree(&p.record.tree)) {
        Some(Ok(tree)) => Some(tree),
        Some(Err(e)) if e.is_damage() => {
            if let Some(p) = parent {
                repo.note_damaged_copy(&p.record.tree);
            }
            progress.warn(&format!(
                "the parent snapshot's root listing cannot be read ({e}): every file is read again; run `jellysnap check --read-data` to see what else is damaged"
            ));
            None
        }
        Some(Err(e)) => return Err(e),
        None => None,
    };
    let earlier = parent
        .zip(parent_root.as_ref())
        .map(|(snapshot, root)| databases::Parent { snapshot, root });
    let captures = Captures::start(repo, &source, earlier.as_ref(), time_ns)?;
    let ctx = Ctx::new(repo, &source, captures, time_ns, progress)?;
    let mut tally = missing_components(&ctx);
    clock_went_back(&ctx, &snapshots, time_ns, &mut tally);
    progress.phase("backing up", None);
    // Most backups change little: the parent's size stands for this one's until the
    // count ahead of the walk has got past it (the walk can outrun that count where it
    // reuses files, a stat each for both).
    if let Some(p) = parent {
        let s = &p.record.summary;
        progress.estimate(s.files, s.logical_bytes);
    }
    let (tree, walked) = match walk_counted(&ctx, parent_root.as_ref()) {
        Ok(w) => w,
        // Workers see only "pack writer stopped"; report what stopped it.
        Err(e) => return Err(ctx.sink.cause(e)),
    };
    tally.add(walked);
    media_in_metadata(&ctx, &mut tally);
    // A database the walk did not reach (unreadable parent dir) still reports its error.
    // A plugin's that could not be captured was reported where the walk reached it.
    for p in ctx.captures.paths() {
        match ctx.captures.wait(&p, progress, &mut tally) {
            Err(Error::DatabaseCapture { .. }) if ctx.captures.is_plugin(&p) => {}
            r => drop(r?),
        }
    }
    let version = jellyfin_version(&source, ctx.captures.jellyfin_version()?);
    let Ctx {
        sink, repo_inside, ..
    } = ctx;
    let repository_inside_data = repo_inside.into_inner();
    if let Some(p) = &repository_inside_data {
        progress.warn(&format!(
            "the repository {} is inside the backed-up data: it is left out of every snapshot and of every in-place restore, but a disk that fails takes the server's data and its backups together; keep the repository on another disk",
            p.display()
        ));
    }
    let written = Written::of(&sink.stats);
    progress.phase("syncing packs and index", None);
    sink.finish()?;

    let findings = tally.finish(written, started.elapsed().as_millis() as u64);
    let parent = parent.map(|p| p.id);
    let notices = findings.notices.clone();
    let proofs = findings.proofs.clone();
    let mut record = snapshot_record(opts, &source, time_ns, tree, parent, findings);
    if let Some(found) = version {
        let (shown, evidence) = found.to_record();
        record.jellyfin_version = Some(shown);
        record.jellyfin_version_source = Some(evidence);
    }
    record.seq = Some(next_seq(&snapshots));
    record.seq_repo = Some(home.clone());
    progress.phase("committing snapshot", None);
    let id = repo.commit_snapshot(&record)?;
    progress.finish();
    Ok(BackupOutcome {
        id,
        record,
        parent,
        notices,
        repository_inside_data,
        proofs,
    })
}

/// The walk, with a count of what it goes through running ahead of it when the progress
/// shows totals (only then: without a terminal, no second walk). The count ends with the
/// walk at the latest; a count that could not start costs the line its totals only.
fn walk_counted(
    ctx: &Ctx,
    parent_root: Option<&crate::format::tree::Tree>,
) -> Result<(ChunkId, Tally)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        if ctx.progress.shows_totals() {
            let _ = std::thread::Builder::new()
                .name("backup-count".into())
                .stack_size(crate::ops::parallel::WALK_STACK)
                .spawn_scoped(s, || scan::count(ctx, &stop));
        }
        let walked = walk::walk_roots(ctx, parent_root);
        stop.store(true, Ordering::Relaxed);
        walked
    })
}

/// The Jellyfin version that last ran on the source: its log (read now, never stored),
/// the captured database's migrations, `migrations.xml` and a `library.db`.
fn jellyfin_version(
    source: &Source,
    database: Option<jellyfin::version::Range>,
) -> Option<jellyfin::version::Found> {
    use jellyfin::version;
    let logs = version::log_dirs(source.layout, &source.data_dir, &source.config_dir);
    version::Evidence {
        log: version::from_log_for(&logs, &source.jellyfin_db),
        database,
        migrations_xml: version::from_migrations_xml(&source.config_dir),
        library_db: source.data_dir.join("data/library.db").is_file(),
    }
    .decide()
}

/// The write sequence number of a new snapshot: after every snapshot in the repository
/// (the writer lock keeps another backup from committing meanwhile).
fn next_seq(snapshots: &[Snapshot]) -> u64 {
    let last = snapshots.iter().filter_map(|s| s.record.seq).max();
    last.unwrap_or(0).saturating_add(1)
}

/// A snapshot dated before one already in the repository: the clock is probably wrong
/// (a machine without a real-time clock before it synchronises). The snapshot is still
/// the newest (`latest` and `--keep-last` go by the order snapshots were written), but
/// time-based retention will see it where its date puts it.
fn clock_went_back(ctx: &Ctx, snapshots: &[Snapshot], time_ns: i64, tally: &mut Tally) {
    // Snapshots copied from another repository were dated by another machine's clock.
    let home = &ctx.repo.config().repo_id;
    let own = snapshots.iter().filter(|s| s.written_in(home));
    let Some(newest) = own.max_by_key(|s| s.record.time_ns) else {
        return;
    };
    if newest.record.time_ns <= time_ns {
        return;
    }
    let detail = format!(
        "the clock reads {} UTC, before snapshot {} ({} UTC): is the clock wrong? This snapshot is dated by the clock; `latest` and `forget --keep-last` still count it as the newest (they go by the order snapshots were written), the other keep rules by its date",
        timefmt::utc(time_ns),
        newest.id.short(),
        timefmt::utc(newest.record.time_ns)
    );
    ctx.progress.warn(&detail);
    tally.notices.push(Notice {
        kind: "clock-went-back",
        path: String::new(),
        detail,
    });
}

/// A snapshot name must be valid and not yet taken.
fn check_name(snapshots: &[Snapshot], name: Option<&str>) -> Result<()> {
    let Some(name) = name else { return Ok(()) };
    validate_name(name)?;
    if snapshots
        .iter()
        .any(|s| s.record.name.as_deref() == Some(name))
    {
        return Err(Error::DuplicateName(name.to_string()));
    }
    Ok(())
}

/// The tally a backup starts with: the selected components whose directory is not
/// there, reported and recorded as not captured; and a notice for each link to a
/// directory where plugins keep their data, which is not followed.
fn missing_components(ctx: &Ctx) -> Tally {
    let mut tally = Tally::default();
    for m in &ctx.source.missing {
        let c = m.component.map_or("?", |c| c.name());
        ctx.report(
            &mut tally,
            Path::new(&m.path),
            &format!("the {c} directory is not there (is its disk mounted?); this snapshot does not include {c}"),
        );
    }
    tally
        .not_captured
        .extend(ctx.source.missing.iter().cloned());
    for l in &ctx.source.left_out {
        let p = &l.path;
        match l.why {
            LeftOutWhy::LinkedDir => {
                let to = fs::read_link(p).unwrap_or_default();
                let detail = format!(
                    "a link to the directory {}, beside Jellyfin's own state: not followed, so not in this snapshot (it could lead to a media library or another disk); if a plugin keeps its state there, back that directory up as well",
                    to.display()
                );
                ctx.notice(&mut tally, "linked-dir-skipped", p, detail);
            }
            LeftOutWhy::NameNotUtf8 => {
                ctx.report(
                    &mut tally,
                    p,
                    "a plugin's data whose name is not UTF-8, which a snapshot cannot name: not captured; rename it (the plugin's folder or file) to back it up",
                );
                tally.not_captured(NotCapturedKind::File, &l.root, &l.rel, p);
            }
        }
    }
    tally
}

/// Media files found in the metadata dir, reported once: Jellyfin never writes them
/// there, and an in-place restore of the metadata component would delete media the
/// snapshot does not have (it refuses to).
fn media_in_metadata(ctx: &Ctx, tally: &mut Tally) {
    let found = std::mem::take(&mut tally.foreign_in_metadata);
    let Some(dir) = ctx.source.metadata_dir.as_deref() else {
        return;
    };
    if found.is_empty() {
        return;
    }
    const SHOWN: usize = 5;
    let mut examples = found
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if found.len() > SHOWN {
        examples.push_str(", ...");
    }
    let detail = format!(
        "the metadata dir holds {} media file(s) Jellyfin never writes there ({examples}); they are backed up as metadata, and an in-place restore of the metadata component refuses while media the snapshot does not have is there (it would delete it): keep media outside the metadata dir",
        found.len()
    );
    ctx.notice(tally, "media-in-metadata", dir, detail);
}

fn snapshot_record(
    opts: &BackupOptions,
    source: &Source,
    time_ns: i64,
    tree: ChunkId,
    parent: Option<SnapshotId>,
    findings: Findings,
) -> SnapshotRecord {
    SnapshotRecord {
        name: opts.name.clone(),
        tags: opts.tags.clone(),
        time_ns,
        host: hostname(),
        layout: source.layout.to_string(),
        data_dir: source.data_dir.to_string_lossy().into_owned(),
        roots: source.selection.roots.clone(),
        items: source.selection.items.clone(),
        components: source.components.iter().copied().collect(),
        jellyfin_version: None,
        jellyfin_version_source: None,
        tree,
        parent,
        summary: findings.summary,
        jellysnap_version: env!("CARGO_PKG_VERSION").to_string(),
        databases: findings.databases,
        not_captured: findings.not_captured,
        seq: None,
        seq_repo: None,
        edit: None,
    }
}
