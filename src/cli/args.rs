//! Command-line arguments (clap), and the paths the binary derives from its environment
//! (the default repository, the cache dir): the engine reads no environment. Each
//! command's file converts its arguments into the engine's validated options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "jellysnap", version, about = "Incremental, deduplicated snapshots of a Jellyfin server, and exact restores", long_about = None)]
pub struct Cli {
    /// Repository: a path, or s3:https://HOST[:PORT]/BUCKET[/PREFIX] with credentials in
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [default: $JELLYSNAP_REPO, else
    /// ~/.local/share/jellysnap/repo]
    #[arg(long, global = true, env = "JELLYSNAP_REPO", value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// The configuration file (repository, Jellyfin install, retention) [default:
    /// $JELLYSNAP_CONFIG, else /etc/jellysnap/jellysnap.toml for root,
    /// ~/.config/jellysnap/jellysnap.toml for a user]; flags override it
    #[arg(long, global = true, env = "JELLYSNAP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print results as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress, summaries or warnings; the data a command exists to print (listings,
    /// a dry run's plan) and errors still are
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail: `backup -v` lists the files added, changed and removed, `-vv`
    /// every file (per-file warnings are always printed)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty repository
    Init,
    /// Take a snapshot of a Jellyfin server (safe while it runs)
    Backup(BackupArgs),
    /// Copy snapshots into another repository, sending only what it lacks
    Copy(CopyArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List files in a snapshot (PATH starts with a root label, e.g. data/data)
    Ls {
        /// Snapshot name, id prefix or `latest`
        snapshot: String,
        path: Option<String>,
        /// List subdirectories too
        #[arg(short, long)]
        recursive: bool,
    },
    /// Detect the Jellyfin install and write the configuration file
    Setup(SetupArgs),
    /// Snapshot before another Jellyfin version runs on the data: apt, systemd and
    /// container hooks
    Hook {
        #[command(subcommand)]
        kind: HookKind,
    },
    /// Write one file of a snapshot to stdout (a database as a rebuilt, valid SQLite
    /// file)
    Dump {
        /// Snapshot name, id prefix or `latest`
        snapshot: String,
        /// The file, as `ls` shows it (e.g. data/data/jellyfin.db)
        path: String,
    },
    /// Show what changed between two snapshots
    Diff { from: String, to: String },
    /// Restore a snapshot into a directory, or in place over the live server
    Restore(RestoreArgs),
    /// Remove snapshots by name/id or by a retention policy (then run `gc`)
    Forget(ForgetArgs),
    /// Reclaim space: delete packs nothing references, repack mostly-dead ones
    Gc(GcArgs),
    /// Add or remove a snapshot's tags (writes a new record; the snapshot gets a new id)
    Tag(TagArgs),
    /// Name a snapshot, rename it, or remove its name (--unname); named snapshots are
    /// kept by forget's policies
    Name(NameArgs),
    /// Verify the repository (structure; with --read-data also every chunk's content)
    Check(CheckArgs),
    /// Repair the repository
    Repair {
        #[command(subcommand)]
        what: RepairWhat,
    },
    /// Repository statistics, and what forgetting each given snapshot would free
    Stats {
        /// Snapshots to report exclusive sizes for
        snapshots: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The Jellyfin data dir [default: found at the usual places: /var/lib/jellyfin, or
    /// the host directory mounted at an image's /config]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replace an existing configuration file
    #[arg(long)]
    pub force: bool,
    /// Print the file and write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum HookKind {
    /// Debian/Ubuntu: a snapshot before apt upgrades, downgrades or removes Jellyfin
    Apt {
        #[command(subcommand)]
        action: AptAction,
    },
    /// A snapshot at service start when the installed server version changed
    Systemd {
        #[command(subcommand)]
        action: SystemdAction,
    },
    /// A container one-shot before the Jellyfin container starts
    Container {
        #[command(subcommand)]
        action: ContainerAction,
    },
}

/// What every hook run takes.
#[derive(Debug, Args)]
pub struct GuardArgs {
    /// Jellyfin data dir [default: the configuration file's]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Fail (non-zero exit) when the snapshot fails, instead of reporting it and letting
    /// the upgrade or the server go on
    #[arg(long)]
    pub abort_on_failure: bool,
}

#[derive(Debug, Subcommand)]
pub enum AptAction {
    /// Write the apt.conf.d snippet that runs `jellysnap hook apt run`
    Install {
        /// Where apt reads its configuration snippets
        #[arg(long, value_name = "DIR", default_value = "/etc/apt/apt.conf.d")]
        apt_conf_dir: PathBuf,
        /// Make a failed snapshot stop the apt run
        #[arg(long)]
        abort_on_failure: bool,
    },
    /// Remove the snippet
    Remove {
        #[arg(long, value_name = "DIR", default_value = "/etc/apt/apt.conf.d")]
        apt_conf_dir: PathBuf,
    },
    /// Read apt's package list (protocol version 3) on stdin; snapshot when Jellyfin is
    /// upgraded, downgraded or removed
    Run(GuardArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemdAction {
    /// Write a drop-in that runs `jellysnap hook systemd run` before the server starts
    Install {
        /// Where unit drop-ins live
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// The server's unit
        #[arg(long, default_value = "jellyfin.service")]
        unit: String,
        /// Keep the server from starting when the snapshot fails
        #[arg(long)]
        abort_on_failure: bool,
        /// Where the server's jellyfin.dll is, for installs dpkg does not know (a
        /// tarball): the pre-start reads the installed version there
        #[arg(long, value_name = "DIR")]
        server_dir: Option<PathBuf>,
    },
    /// Remove the drop-in
    Remove {
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        #[arg(long, default_value = "jellyfin.service")]
        unit: String,
    },
    /// Snapshot when the installed server differs from the one that ran last
    Run {
        #[command(flatten)]
        guard: GuardArgs,
        /// The installed server version [default: `dpkg-query` of jellyfin-server, else
        /// read from the server's jellyfin.dll in --server-dir]
        #[arg(long, value_name = "VERSION")]
        server_version: Option<String>,
        /// The directory holding the server's jellyfin.dll (Debian:
        /// /usr/lib/jellyfin/bin; a tarball: where it was unpacked)
        #[arg(long, value_name = "DIR")]
        server_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContainerAction {
    /// Snapshot when the Jellyfin image's version changed since the last start (any
    /// floating tag such as `latest` snapshots every time)
    Run {
        #[command(flatten)]
        guard: GuardArgs,
        /// The Jellyfin image tag the server container runs
        #[arg(long, env = "JELLYFIN_VERSION", value_name = "TAG")]
        image_tag: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RepairWhat {
    /// Rebuild the chunk index from the packs
    Index,
    /// Store the readable chunks of packs `check --read-data` found damaged in new packs
    Packs,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy (name, id prefix or `latest`) [default: every snapshot the
    /// destination lacks]
    pub snapshots: Vec<String>,
    /// The destination repository: a path, or s3:https://HOST[:PORT]/BUCKET[/PREFIX]
    /// (credentials from the environment, as for --repo)
    #[arg(long, value_name = "REPO")]
    pub to: PathBuf,
    /// Create the destination if the path holds no repository, with this repository's
    /// chunker parameters (without it, a path that is no repository is refused: is the
    /// disk mounted?)
    #[arg(long)]
    pub init: bool,
    /// Print what would be copied and write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print what would be freed and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Repack packs until at most PCT percent of the repository is unused (the packs
    /// with the largest unused share first; 0 repacks every pack with anything unused).
    /// Small packs are merged once 32 pile up; 100 rewrites nothing
    #[arg(long, value_name = "PCT", default_value_t = jellysnap::gc::DEFAULT_MAX_UNUSED_PCT)]
    pub max_unused: f64,
    /// In a repository machines share (a bucket): how long packs stay marked before a
    /// later gc deletes them, e.g. 2h, 2d; 0 when no other machine uses the repository
    /// [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only snapshots with this tag (repeatable: any of them; `a,b`: both)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only named snapshots whose name matches GLOB (`*` any characters, `?` one)
    #[arg(long, value_name = "GLOB")]
    pub name: Option<String>,
    /// Only the N last written (of those the other filters select)
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Snapshot name, id prefix or `latest`
    pub snapshot: String,
    /// A tag to add (repeatable)
    #[arg(long, value_name = "TAG")]
    pub add: Vec<String>,
    /// A tag to remove (repeatable)
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Snapshot name, id prefix or `latest`
    pub snapshot: String,
    /// The new name: unique, not hex digits an id could start with
    #[arg(required_unless_present = "unname", conflicts_with = "unname")]
    pub name: Option<String>,
    /// Remove the snapshot's name
    #[arg(long)]
    pub unname: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read, decompress and hash every chunk
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read only PCT percent of the packs; repeated runs cover them all
    #[arg(long, value_name = "PCT")]
    pub read_data_subset: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to remove (name, id prefix or `latest`)
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days (UTC) that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep everything within DURATION of the newest snapshot (e.g. 36h, 14d, 2w, 6m, 1y)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Let the policy remove named snapshots too (by default they are always kept)
    #[arg(long)]
    pub include_named: bool,
    /// Keep snapshots with this tag (repeatable), as named ones are kept
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Apply the policy only to snapshots with this tag; the others are neither counted
    /// nor removed (repeatable: any of them; `a,b`: both)
    #[arg(long = "tag", value_name = "TAG", conflicts_with = "snapshots")]
    pub tags: Vec<String>,
    /// Apply the policy even when a snapshot is dated in the future (a clock was wrong)
    #[arg(long)]
    pub force: bool,
    /// Show what would be kept and removed, and why; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Jellyfin data dir (Debian: /var/lib/jellyfin, Docker: /config, linuxserver.io:
    /// /config/data) [default: the configuration file's]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Config dir holding system.xml [default: detected from the layout]
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Metadata dir [default: system.xml's MetadataPath, else DATA_DIR/metadata]
    #[arg(long, value_name = "DIR")]
    pub metadata_dir: Option<PathBuf>,
    /// Components to include: database,metadata,subtitles,trickplay [default: all];
    /// database and the config state are always included
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub components: Option<Vec<String>>,
    /// A unique name for this snapshot, e.g. before-10.11.3
    #[arg(long)]
    pub name: Option<String>,
    /// A tag (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Create the repository if the path holds none (without it, only the default
    /// repository location is created on first use)
    #[arg(long)]
    pub init: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot name, id prefix or `latest`
    pub snapshot: String,
    /// Restore into this new or empty directory
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "in_place",
        required_unless_present = "in_place"
    )]
    pub target: Option<PathBuf>,
    /// Restore over the live data (roll back an upgrade); stop Jellyfin first
    #[arg(long)]
    pub in_place: bool,
    /// Components to restore: config,database,metadata,subtitles,trickplay [default: all
    /// in the snapshot]; only the listed ones are restored, so the database and the
    /// config state are rolled back only when named (or when no list is given)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub components: Option<Vec<String>>,
    /// Restore only PATH of the snapshot, with everything below it (repeatable; paths
    /// as `ls` shows them, e.g. data/metadata/library); into a --target only
    #[arg(long, value_name = "PATH", requires = "target")]
    pub include: Vec<String>,
    /// Leave PATH of the snapshot out, with everything below it (repeatable); into a
    /// --target only
    #[arg(long, value_name = "PATH", requires = "target")]
    pub exclude: Vec<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Restore in place even though a process holds the data dir open, or into a data
    /// dir (or other root) that is missing or empty: a new, empty disk mounted there
    #[arg(long)]
    pub force: bool,
    /// Also compare the content of files whose size and mtime match, and rewrite those that
    /// differ (by default they are kept)
    #[arg(long)]
    pub verify: bool,
    /// The installed Jellyfin server's version (a container's image tag), to compare with
    /// the snapshot's data [default: the Debian package's, when dpkg has one]
    #[arg(long, value_name = "VERSION", env = "JELLYSNAP_SERVER_VERSION")]
    pub server_version: Option<String>,
}

/// Whether `--json` is on the command line, for a command line clap refused (its error
/// is then given as JSON too). Arguments after `--` are values, not flags.
pub fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

pub fn default_repo() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("jellysnap/repo");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/jellysnap/repo")
}

/// The user's environment as the S3 store asks for it: this process's variables and
/// the files they name (the AWS shared files, a CA bundle).
struct ProcessEnv;

impl jellysnap::s3::UserEnv for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn read_file(&self, path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The repository `--repo` names, with the cache dir its local state lives in when it
/// is not a local directory.
/// An `s3:` location takes its credentials from the environment (`AWS_*`) or the AWS
/// shared files, never from the command line, where `ps` would show them.
pub fn place(repo: &std::path::Path) -> Result<jellysnap::Place, jellysnap::Error> {
    let cache = cache_dir();
    let location = match repo.to_str() {
        Some(s) if jellysnap::s3::is_s3_location(s) => {
            let mut config = jellysnap::s3::S3Config::from_env(s, &ProcessEnv)?;
            config.cache_dir = Some(cache.clone());
            jellysnap::Location::S3(Box::new(config))
        }
        _ => jellysnap::Location::Local(repo.to_path_buf()),
    };
    Ok(jellysnap::Place::new(location, cache))
}

/// Where `check --read-data-subset` remembers the next slice: `$XDG_CACHE_HOME/jellysnap`,
/// else `~/.cache/jellysnap`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".cache")
        });
    base.join("jellysnap")
}

/// `JELLYSNAP_THREADS`: the size of the engine's file-work pool, a tuning knob for
/// measurements (clamped to 1-256; a value that is not a number is ignored).
pub fn io_threads() -> Option<usize> {
    std::env::var("JELLYSNAP_THREADS").ok()?.parse().ok()
}
