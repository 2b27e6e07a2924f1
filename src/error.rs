//! Typed engine errors. Every variant names the thing involved (repository, snapshot,
//! pack, chunk, path) and says what to do next. The CLI maps each kind to an exit code
//! (src/cli/exit.rs); the engine knows nothing of exit codes.

use std::path::PathBuf;

use crate::id::{ChunkId, PackId};

/// What an object store's failure says about the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// The object is not there.
    NotFound,
    /// Credentials, permission, region or bucket refused: nothing is known of the bytes.
    Denied,
    /// The network or the server failed and retries did not help: nothing is known of
    /// the bytes.
    Transient,
    /// The server answered with bytes that are not what was asked for.
    Corrupt,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An object store's answer (or its silence): the object, the HTTP status when there
    /// was one, and what to do. Only `Corrupt` says anything about the stored bytes.
    #[error("{object}: {}{detail}", status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
    Remote {
        object: String,
        status: Option<u16>,
        kind: RemoteErrorKind,
        detail: String,
    },

    #[error("{0} is not a jellysnap repository (no `config` file); create one with `jellysnap init` or check --repo / JELLYSNAP_REPO")]
    NotARepository(PathBuf),

    #[error("no jellysnap repository at {0} (is the backup disk mounted?); to create one there, pass `--init` to backup or run `jellysnap --repo {0} init`")]
    NoRepository(PathBuf),

    /// The repository path is a symbolic link to nothing: a repository is not created
    /// through it (the disk it points to is most likely not mounted).
    #[error("the repository path {path} is a symbolic link to {}, which does not exist (is the backup disk mounted?); mount it or create that directory, then run the command again", target.display())]
    RepositoryLinkDangling { path: PathBuf, target: PathBuf },

    /// A record of a newer format than this jellysnap reads (docs/FORMAT.md, "Versions"):
    /// not damage; a newer jellysnap reads it.
    #[error("{what} {location} was written by a newer jellysnap (format {found}, this one reads up to {supported}): upgrade jellysnap to read it")]
    NewerFormat {
        what: &'static str,
        location: String,
        found: u32,
        supported: u32,
    },

    /// A command that must write (backup, forget, gc, repair) on a repository it cannot
    /// write: a read-only file system (a snapshot of the backup disk, read-only media, a
    /// NAS export) or a directory this user may not write.
    #[error("repository {path} cannot be written here ({why}), and {command} must write to it; run it where the repository is writable (or as the user that owns it). Commands that only read (snapshots, ls, diff, restore, check, stats) work on it as it is")]
    ReadOnlyRepository {
        path: PathBuf,
        why: &'static str,
        command: String,
    },

    #[error("{0} is not a jellysnap repository (is the disk mounted?); to create one there with the source's chunker parameters, pass `--init` to copy")]
    CopyNoRepository(PathBuf),

    #[error(
        "{path} is the source repository itself (same repository id); copy into another repository"
    )]
    CopyIntoItself { path: PathBuf },

    #[error("snapshot {snapshot} not copied: its name `{name}` belongs to snapshot {other} in the destination; forget or rename one of them there")]
    CopyNameTaken {
        snapshot: String,
        name: String,
        other: String,
    },

    #[error("{path} already holds a repository; use it as it is, or pick another --repo")]
    AlreadyInitialized { path: PathBuf },

    #[error("{0} exists and is not empty; a new repository needs an empty or new directory")]
    InitNotEmpty(PathBuf),

    #[error(
        "corrupt {what} at {location}: {detail}; run `jellysnap check` to see what is affected"
    )]
    Corrupt {
        what: &'static str,
        location: String,
        detail: String,
    },

    #[error(
        "chunk {chunk} is not in the index; the repository may be damaged: run `jellysnap check`"
    )]
    ChunkMissing { chunk: ChunkId },

    #[error("pack {pack} is missing or unreadable ({detail}); run `jellysnap check`")]
    PackMissing { pack: PackId, detail: String },

    #[error("no snapshot matches `{0}`; list them with `jellysnap snapshots`")]
    SnapshotNotFound(String),

    #[error("`{query}` matches several snapshots ({candidates}); give more characters of the id or use the name")]
    SnapshotAmbiguous { query: String, candidates: String },

    #[error("a snapshot named `{0}` already exists; choose another --name or forget the old one")]
    DuplicateName(String),

    #[error("snapshot {other} is already named `{name}`; choose another name, or first `jellysnap name {other} --unname`")]
    NameTaken { name: String, other: String },

    /// The configuration file cannot be used: named explicitly (`--config`,
    /// `JELLYSNAP_CONFIG`) and missing, unreadable, or malformed (`line` says where).
    #[error("configuration file {}{}: {detail}; fix it, or name another with --config / JELLYSNAP_CONFIG", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    ConfigFile {
        path: PathBuf,
        line: Option<usize>,
        detail: String,
    },

    #[error("invalid snapshot name `{0}`: use 1-100 characters from letters, digits, `.`, `_`, `-`, `+`, and do not start with `-` or use `latest`")]
    InvalidName(String),

    #[error("invalid snapshot name `{0}`: a name of hex digits could be taken for a snapshot id; add a letter outside a-f or another character (e.g. `v{0}`)")]
    NameLooksLikeId(String),

    #[error("path `{path}` does not exist in snapshot {snapshot}; see `jellysnap ls {snapshot}`")]
    PathNotInSnapshot { snapshot: String, path: String },

    #[error("path `{path}` was not captured by snapshot {snapshot}: the backup could not read it (its reason is in `jellysnap snapshots --json`, `not_captured`); an earlier or later snapshot may hold it")]
    PathNotCaptured { snapshot: String, path: String },

    #[error("path `{path}` of snapshot {snapshot} is in component {component}, which --components does not select; add {component} to --components, or leave --components out to restore every component")]
    PathNotSelected {
        snapshot: String,
        path: String,
        component: String,
    },

    #[error("--include and --exclude leave nothing of snapshot {snapshot} to restore ({given}); exclude less, or list what the snapshot holds with `jellysnap ls {snapshot} -r`")]
    NothingSelected { snapshot: String, given: String },

    #[error("data dir {0} does not exist; pass the Jellyfin data dir with --data-dir (e.g. /var/lib/jellyfin, or /config in Docker)")]
    SourceMissing(PathBuf),

    #[error("{path} is not a Jellyfin data dir: {detail}")]
    NotJellyfin { path: PathBuf, detail: String },

    /// Directories of an install that contain one another (from the command line or
    /// from system.xml: `from_flag` says which).
    #[error("{path}: {detail}")]
    DirsOverlap {
        path: PathBuf,
        detail: String,
        from_flag: bool,
    },

    #[error("restore target {0} is not empty; restore into an empty or new directory, or use --in-place to roll back the live server")]
    TargetNotEmpty(PathBuf),

    #[error("restore target {path} holds an unfinished restore of snapshot {other}, not of {snapshot}: {finish}; or start over: delete {path} and run this restore again, or restore into another new directory")]
    TargetHoldsOtherRestore {
        path: PathBuf,
        /// The snapshot the unfinished restore was of: its id, and its name.
        other: String,
        snapshot: String,
        /// How to finish it (or why it cannot be).
        finish: String,
    },

    #[error("repository {path} is locked by another jellysnap process ({detail}); wait for it to finish and retry")]
    Locked { path: PathBuf, detail: String },

    #[error("this process cannot commit to repository {path}: {detail}")]
    LeaseExpired { path: PathBuf, detail: String },

    #[error("data dir {path} is in use: {detail}")]
    DataDirLocked { path: PathBuf, detail: String },

    #[error("Jellyfin appears to be running: {detail}; stop the server first (e.g. `systemctl stop jellyfin` or `docker stop jellyfin`) or pass --force")]
    ServerRunning { detail: String },

    #[error("cannot tell whether Jellyfin is running: {detail}")]
    ServerStateUnknown { detail: String },

    #[error("database capture of {path} failed: {detail}")]
    DatabaseCapture { path: PathBuf, detail: String },

    #[error("database {path} cannot be restored from snapshot {snapshot}: {detail}; nothing was changed (the database is restored before anything else is touched). If the destination is the cause (no space, no permission, a file that cannot be replaced), fix it and retry; if the snapshot is (`jellysnap check --read-data` lists every snapshot whose database cannot be restored), restore another snapshot, or restore the rest without the database (--components metadata,subtitles,trickplay,config)")]
    DatabaseRestore {
        path: PathBuf,
        snapshot: String,
        detail: String,
    },

    #[error("an in-place restore of snapshot {snapshot} into {data_dir} was interrupted ({intent} records it): the data may be part old, part restored, and a server must not start on it yet. Finish it: `{finish}`; {undo}")]
    RestoreInterrupted {
        data_dir: PathBuf,
        intent: PathBuf,
        snapshot: String,
        finish: String,
        undo: String,
    },

    #[error("the restore stopped at {path}: {reason}; {} still to write, {} free there. {state}", bytes(*to_write), free.map(bytes).unwrap_or_else(|| "unknown".into()))]
    NoSpace {
        path: PathBuf,
        reason: &'static str,
        #[source]
        source: std::io::Error,
        to_write: u64,
        free: Option<u64>,
        /// What the destination holds now and what to do next.
        state: String,
    },

    /// A write into the repository (or into a remote repository's local state) met a
    /// full file system, an exhausted quota or no free inodes.
    #[error("repository {repo}: the file system it is written to {reason}; writing {} failed, {} free there now. {next}", at.display(), free.map(bytes).unwrap_or_else(|| "unknown".into()))]
    RepositoryFull {
        repo: String,
        at: PathBuf,
        reason: &'static str,
        #[source]
        source: std::io::Error,
        free: Option<u64>,
        /// What the repository holds now and what to do next.
        next: String,
    },

    /// `database.xml` names a database jellysnap cannot capture.
    #[error("{path}: {detail}")]
    UnsupportedDatabase { path: PathBuf, detail: String },

    /// The server holds its database with SQLite's EXCLUSIVE locking mode: a reader
    /// would wait for as long as it runs.
    #[error("{db} is locked by {holder} with SQLite's EXCLUSIVE locking mode (`lockingmode` EXCLUSIVE in {config}): no other program can read it while the server runs, so a backup would wait for ever. Remove that option from {config} (or set it to NORMAL) and restart Jellyfin, or stop Jellyfin while the backup runs")]
    ExclusiveLocking {
        db: PathBuf,
        config: PathBuf,
        holder: String,
    },

    #[error("in-place restore refused: it would leave {} free on the file system of {path} ({} free now, {} freed, {} written), and Jellyfin 10.11 and later do not start with less than {} free in their data dir. Nothing was changed; free space on that file system and retry, or pass --force and free the space before starting Jellyfin", bytes(*free_after), bytes(*free_now), bytes(*frees), bytes(*writes), bytes(*needed))]
    TooLittleSpaceLeft {
        path: PathBuf,
        free_now: u64,
        frees: u64,
        writes: u64,
        free_after: u64,
        needed: u64,
    },

    #[error("in-place restore refused: {path} {state}. Is the disk that holds it mounted? Restoring now would write the whole snapshot onto whatever file system holds that path. Mount it and retry; to restore onto a new, empty disk mounted there, pass --force")]
    RestoreIntoEmpty { path: PathBuf, state: String },

    #[error("in-place restore refused: it would delete {count} media file(s) that snapshot {snapshot} does not have ({examples}). Jellyfin never writes media into its own directories: the metadata dir probably overlaps a media library. Nothing was changed; move the media out of Jellyfin's directories, or restore other components (--components)")]
    MediaWouldBeDeleted {
        snapshot: String,
        count: usize,
        examples: String,
    },

    /// A command-line value an option type refused (see [`OptionError`]).
    #[error(transparent)]
    Option(#[from] OptionError),

    #[error("snapshot {snapshot} is dated {time} UTC, after now ({now} UTC): a clock was wrong, when that snapshot was taken or now. Keep rules that go by dates (--keep-within, --keep-hourly/-daily/...) count from the newest snapshot and would remove snapshots they should keep; check the clock (`date`), then remove that snapshot by name (`jellysnap forget {snapshot}`), or pass --force to apply the policy anyway")]
    SnapshotInFuture {
        snapshot: String,
        time: String,
        now: String,
    },

    #[error("gc needs every snapshot record readable to know what is live: {detail}; forget or repair that snapshot first")]
    SnapshotUnreadable { detail: String },

    #[error(
        "internal error: {0}; this is a bug in jellysnap, please report it (nothing was committed)"
    )]
    Internal(String),

    #[error("cannot start the {what} thread: {source}; the system is out of threads or memory (see `ulimit -u` and the service's TasksMax / pids limit); nothing was committed")]
    ThreadStart {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("repository index at {path}: {detail}")]
    Index { path: PathBuf, detail: String },
}

/// A value the engine's option types refuse, naming the value. Their constructors (the
/// forget policy and selection, the check read-data mode, the gc threshold, component
/// lists) return it, so the engine never sees a raw string it has to re-validate.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("invalid option: unknown component `{0}`; choose from config, database, metadata, subtitles, trickplay")]
    UnknownComponent(String),

    #[error("invalid option: --read-data-subset {0} must be in (0, 100]")]
    ReadDataSubset(f64),

    #[error("invalid option: --max-unused {0} must be between 0 and 100")]
    MaxUnused(f64),

    #[error("invalid option: invalid duration `{0}`: use e.g. 36h, 14d, 2w, 6m, 1y, 1y6m")]
    Duration(String),

    #[error("invalid option: forget needs snapshots to remove or a policy (--keep-last/-hourly/-daily/-weekly/-monthly/-yearly/-within); an empty policy would remove everything")]
    NothingToForget,

    #[error("invalid option: --keep-tag keeps tagged snapshots from a policy's rules but is no rule itself (alone it would remove every snapshot not tagged): add one of --keep-last/-hourly/-daily/-weekly/-monthly/-yearly/-within")]
    KeepTagAlone,

    #[error("invalid option: give either snapshots to remove or a keep policy, not both")]
    SnapshotsAndPolicy,

    #[error("invalid option: no data dir: pass --data-dir, or name `data_dir` under [jellyfin] in the configuration file {}{} (`jellysnap setup` writes it)", config.display(), if *exists { "" } else { ", which is not there" })]
    NoDataDir { config: PathBuf, exists: bool },

    #[error("invalid option: `{0}` cannot be written into a hook's command line: use a path of letters, digits, spaces and /._+-:=@,")]
    Unquotable(String),

    #[error("invalid option: {} exists; pass --force to replace it", .0.display())]
    FileExists(PathBuf),

    #[error("invalid option: --components names no component")]
    NoComponents,

    /// An empty value (`--tag ""`, `--components metadata,`): a typo or an unset shell
    /// variable, never meant.
    #[error("invalid option: {0} has an empty value")]
    EmptyValue(&'static str),

    #[error("invalid option: invalid tag `{0}`: use 1-100 printable characters without spaces or commas")]
    Tag(String),

    #[error("invalid option: nothing to change: give --add or --remove")]
    NothingToEdit,

    #[error(
        "invalid option: --name `{0}` selects no name: give a name or a glob such as `before-*`"
    )]
    NameGlob(String),

    #[error("invalid option: --latest must be at least 1")]
    Latest,

    #[error("invalid option: `{0}` is not a file of the snapshot: dump streams one file (see `jellysnap ls`)")]
    NotAFile(String),

    #[error("invalid option: --include and --exclude restore part of a snapshot into a --target only; in place, restore whole components (--components)")]
    PathsInPlace,

    #[error("invalid option: `{0}` is not a path in a snapshot: write it as `ls` shows it, starting with a root label (e.g. data/data/jellyfin.db), without `.` or `..`")]
    RestorePath(String),

    #[error("invalid option: repository location `{location}`: {detail}; write it as s3:https://HOST[:PORT]/BUCKET[/PREFIX] (s3:http:// for a server on this machine)")]
    S3Location { location: String, detail: String },

    #[error("invalid option: no credentials for {location}: {detail} (never on the command line)")]
    S3Credentials { location: String, detail: String },

    /// A profile of the AWS shared files (credentials or config) that cannot be used;
    /// never a value read from it.
    #[error("invalid option: AWS profile `{profile}` in {}: {detail}", file.display())]
    S3Profile {
        file: PathBuf,
        profile: String,
        detail: String,
    },

    #[error("invalid option: {from} names {}: {detail}", path.display())]
    S3CaBundle {
        path: PathBuf,
        from: String,
        detail: String,
    },

    /// A proxy variable that cannot be used; never its value (it may carry a password).
    #[error("invalid option: the proxy in {var}: {detail}")]
    S3Proxy { var: &'static str, detail: String },

    #[error("invalid option: snapshot {snapshot} does not contain the {component} component (it has: {has})")]
    ComponentNotInSnapshot {
        snapshot: String,
        component: &'static str,
        has: String,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An I/O error that says nothing about the bytes stored: the system refused the
    /// read (a permission, a resource limit, an interrupted or timed-out call). Such an
    /// error is reported as what it is, never as damaged data. A missing object, a read
    /// past its end, bytes the medium could not give back (EIO) or invalid data are not
    /// refusals: those are what damage looks like.
    pub fn is_refusal(&self) -> bool {
        if let Error::Remote { kind, .. } = self {
            return matches!(kind, RemoteErrorKind::Denied | RemoteErrorKind::Transient);
        }
        let Error::Io { source, .. } = self else {
            return false;
        };
        !matches!(
            source.kind(),
            std::io::ErrorKind::NotFound
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::InvalidData
        ) && source.raw_os_error() != Some(libc::EIO)
    }

    /// A write that met a full file system or an exhausted quota.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ))
    }

    /// What a read of a stored chunk fails with when the stored bytes are damaged or gone
    /// (not a refusal, not a network error).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::ChunkMissing { .. } | Error::PackMissing { .. }
        )
    }

    /// The object asked for is not there (a local file or a remote object): for a pack
    /// a record names, that is damage; for a marker or a lease, an answer.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Error::Remote { kind, .. } => *kind == RemoteErrorKind::NotFound,
            _ => false,
        }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Error::Internal(detail.into())
    }

    pub fn newer_format(
        what: &'static str,
        location: impl Into<String>,
        found: impl Into<u32>,
        supported: impl Into<u32>,
    ) -> Self {
        Error::NewerFormat {
            what,
            location: location.into(),
            found: found.into(),
            supported: supported.into(),
        }
    }

    pub fn corrupt(
        what: &'static str,
        location: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            what,
            location: location.into(),
            detail: detail.into(),
        }
    }
}

/// A byte count as messages show it (KiB, MiB, ... with one decimal).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
