//! jellysnap: incremental, deduplicated, verifiable snapshots of a Jellyfin server.
//!
//! The engine. It never prints; progress reaches the caller through
//! [`progress::Progress`] and results come back as plain types. docs/ARCHITECTURE.md
//! describes the layers and their invariants, docs/FORMAT.md every byte on disk.
//!
//! The layers, each using only those below it:
//!
//! - `ops`: the operations (backup, restore, copy, check, gc, forget, browse, stats);
//! - `jellyfin`: the Jellyfin data dir and its databases; `store`: the repository's
//!   storage (the store, durable writes, locks, the chunk index, the packer);
//! - `format`: the bytes of every record, pure encoders and decoders;
//! - `error` and `sys`: the error type and the few platform calls.
//!
//! All of them are private to the crate; this file is the public face, a list of
//! re-exports grouped by use.

#![warn(clippy::unwrap_used)]

mod error;
mod format;
mod id;
mod jellyfin;
mod ops;
mod store;
mod sys;

pub use error::{Error, OptionError, RemoteErrorKind, Result};
pub use format::pack::ChunkKind;
pub use format::snapshot::{Component, DbReuse, Root, Snapshot, SnapshotRecord, Summary};
pub use format::tree::{ChunkRef, DbCapture, Entry, Node, Tree};
pub use id::{ChunkId, PackId, SnapshotId};
pub use jellyfin::SourceOptions;
pub use ops::options::{validate_tags, Components, SnapshotName};
pub use ops::parallel::set_io_threads;
pub use store::packer::ChunkSink;
pub use store::repo::{Access, Repository};
pub use store::{Location, Place};

/// Taking a snapshot.
pub mod backup {
    pub use crate::ops::backup::{backup, open_repository, BackupOptions, BackupOutcome, Notice};
}

/// Restoring a snapshot: a plan (what `--dry-run` prints), then its execution.
pub mod restore {
    pub use crate::ops::restore::{
        execute, plan, Action, Destination, Installed, RestoreOptions, RestorePlan, RestoreReport,
        Rollback, Space, VersionView, JELLYFIN_MIN_FREE,
    };
}

/// Copying snapshots into another repository.
pub mod copy {
    pub use crate::ops::copy::{
        copy, open_destination, retire_superseded, CopyOptions, CopyReport, Destination, Refused,
        SnapshotRef,
    };
}

/// One file of a snapshot, streamed (a database rebuilt first).
pub mod dump {
    pub use crate::ops::dump::{dump, Dumped};
}

/// Changing a snapshot's tags or name.
pub mod edit {
    pub use crate::ops::edit::{edit, Changes, Edited, NameChange};
}

/// Selecting snapshots by tag, name and age (`snapshots`, `forget`), and finding the
/// one an earlier id names.
pub mod select {
    pub use crate::format::snapshot::current_id;
    pub use crate::ops::select::Filter;
}

/// Verifying a repository.
pub mod check {
    pub use crate::ops::check::{check, CheckReport, ReadData};
}

/// Salvaging what damaged packs still hold.
pub mod repair {
    pub use crate::ops::repair::{repair_packs, RepairPacksReport, SalvagedPack};
}

/// Reclaiming the space of chunks no snapshot references.
pub mod gc {
    pub use crate::ops::gc::{
        plan, plan_with_grace, sweep, GcPlan, GcReport, MaxUnused, DEFAULT_GRACE_SECS,
        DEFAULT_MAX_UNUSED_PCT,
    };
}

/// A write into the repository that met a full file system, said as such.
pub mod full {
    pub use crate::ops::full::repository_full;
}

/// Removing snapshots by policy or by name.
pub mod forget {
    pub use crate::ops::forget::{
        decide, parse_duration, remove, remove_snapshots, select, Decision, Policy, Selection,
    };
}

/// The upgrade guard: a snapshot before another Jellyfin version runs on the data (the
/// apt, systemd and container hooks), its state, and what `setup` detects.
pub mod guard {
    pub use crate::ops::guard::{
        base_name, decide, describe, find, free_name, install_file, installed_package,
        last_ran_version, read_state, remove_file, snapshot, state_path, version_from_assembly,
        write_state, Decision, GuardOptions, GuardState, Install, Naming, NAME_PREFIX,
        USUAL_DATA_DIRS,
    };
}

/// Facts about the running process the CLI needs.
pub mod system {
    pub use crate::sys::{is_root, terminal_width};
}

/// Listing and comparing snapshots.
pub mod browse {
    pub use crate::ops::browse::{db_diff, diff, ls, DbDiff, DiffEntry, LsEntry, TableRows};
}

/// Sizes of the repository and of single snapshots.
pub mod stats {
    pub use crate::ops::stats::{repo_stats, snapshot_stats, RepoStats, SnapshotStats};
}

/// How the engine reports progress to its caller.
pub mod progress {
    pub use crate::ops::progress::{NoProgress, Progress};
}

/// A repository in an S3-compatible object store: its location and credentials.
pub mod s3 {
    pub use crate::store::s3::{
        is_s3_location, Addressing, CaBundle, Credentials, HttpProxy, Network, Retry, S3Config,
        S3Store, UserEnv,
    };
    /// The store's HTTP client on its own (tests of a real server).
    #[cfg(feature = "test-hooks")]
    pub use crate::store::s3::{Client, PutMode};
}

/// The store trait and every store on their own (the store contract tests).
#[cfg(feature = "test-hooks")]
pub mod stores {
    pub use crate::store::local::LocalStore;
    pub use crate::store::mem::MemStore;
    pub use crate::store::s3::S3Store;
    pub use crate::store::{Key, Kind, LeaseId, Staged, Store};
}

/// Leases on a store hosts share, on their own (two hosts against one bucket).
#[cfg(feature = "test-hooks")]
pub mod leases {
    pub use crate::format::hosts::LeaseMode;
    pub use crate::store::lease::{Holder, Lease, CLOCK_SKEW, LEASE_TTL};
}

/// The crash tests' simulated file system, which forgets what was never synced.
#[cfg(feature = "test-hooks")]
pub mod simulation {
    pub use crate::store::simfs::{Crash, SimFs};
}

/// Times as the CLI prints them.
pub mod timefmt {
    pub use crate::format::timefmt::{rfc3339, utc};
}

/// The clock the engine reads.
pub mod clock {
    pub use crate::ops::clock::{local_offsets, now_ns};
}

/// The database capture on its own (benchmarks and experiments).
pub mod database {
    pub use crate::jellyfin::capture::{
        capture, dump_and_prove, dump_logical, observe_file, observe_file_as, observe_file_split,
        remove_side_files, sqlite_version, Dump, Logical, Proven, Rebuild, PATIENCE_SERVER,
    };
    pub use crate::jellyfin::kept::Kept;
    pub use crate::jellyfin::logical::{dump, rebuild};
    pub use crate::jellyfin::observe::{Observation, VERSION as OBSERVATION_VERSION};
}

/// Content-defined chunking and compression on their own (benchmarks).
pub mod chunking {
    pub use crate::format::chunker::{Chunker, ChunkerParams};
    pub use crate::format::compress::{is_precompressed, maybe_compress};
}

/// Every decoder of bytes read back from a repository (fuzz targets).
pub mod decoders {
    pub use crate::format::chunklist::decode_list;
    pub use crate::format::compress::Compression;
    pub use crate::format::config::RepoConfig;
    pub use crate::format::dump::decode as decode_dump;
    pub use crate::format::pack::{
        decode_trailer, open_trailer, scan_records, trailer_len_from_footer, PackEntry, RawLimits,
        FOOTER_LEN, RECORD_HEADER_LEN,
    };
    pub use crate::format::record::{decode_header as decode_record_header, open, verify_payload};
    pub use crate::jellyfin::logical::rebuild as rebuild_dump;
}
