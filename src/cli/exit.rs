//! Every exit code of the binary, in one place, with its meaning. The README's exit-code
//! table is tested against [`ExitCode::ALL`] (both ways), so the two cannot drift.

use jellysnap::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    Failure = 1,
    Usage = 2,
    Partial = 3,
    Repository = 10,
    Version = 11,
    NoSuchSnapshot = 12,
    DuplicateName = 13,
    NotJellyfin = 14,
    TargetNotEmpty = 15,
    Locked = 16,
    ServerRunning = 17,
    Damaged = 18,
    DatabaseRestore = 19,
    NoSpace = 20,
    RestoreInterrupted = 21,
    Remote = 22,
    ConfigFile = 23,
    LowSpace = 24,
    /// 128 + SIGPIPE, what a shell shows for a process ended by a closed pipe.
    BrokenPipe = 141,
}

// The list and the meanings are what the README's table is tested against.
#[cfg_attr(not(test), allow(dead_code))]
impl ExitCode {
    pub const ALL: [ExitCode; 20] = [
        ExitCode::Success,
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::Partial,
        ExitCode::Repository,
        ExitCode::Version,
        ExitCode::NoSuchSnapshot,
        ExitCode::DuplicateName,
        ExitCode::NotJellyfin,
        ExitCode::TargetNotEmpty,
        ExitCode::Locked,
        ExitCode::ServerRunning,
        ExitCode::Damaged,
        ExitCode::DatabaseRestore,
        ExitCode::NoSpace,
        ExitCode::RestoreInterrupted,
        ExitCode::Remote,
        ExitCode::ConfigFile,
        ExitCode::LowSpace,
        ExitCode::BrokenPipe,
    ];

    pub fn code(self) -> i32 {
        self as i32
    }

    /// One line, as the README's table says it.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Failure => "I/O or internal error (the message names the path)",
            ExitCode::Usage => "bad command line (unknown flag or component, invalid value or name; a metadata or config dir that holds or lies inside another; a forget policy while a snapshot is dated in the future, without `--force`; a `copy` into the repository itself; no data dir from the flags or the configuration file; `setup` over an existing configuration file without `--force`)",
            ExitCode::Partial => "partial: a backup could not read some files, capture a plugin's database (or name one: not UTF-8) or find a component's directory, or a restore could not restore some files (listed on stderr)",
            ExitCode::Repository => "no jellysnap repository at the path (a backup or copy without `--init`: is the backup disk mounted?), a repository path that is a symbolic link to nothing (not created through it), not a repository, or `init` on an existing repository or a non-empty directory; or a command that writes (backup, forget, gc, repair, copy into it) on a repository that cannot be written here (read-only file system or directory)",
            ExitCode::Version => "the repository, or a record in it (snapshot, tree, pack, database dump), was written by a newer jellysnap: upgrade jellysnap to read it",
            ExitCode::NoSuchSnapshot => "no such snapshot, ambiguous id prefix (or one snapshot's name and another's id prefix), path not in the snapshot (or in a component not selected), or `--include`/`--exclude` leaving nothing to restore",
            ExitCode::DuplicateName => "a snapshot with that name already exists (for `name`: another snapshot has it; for `copy`: another snapshot has it in the destination)",
            ExitCode::NotJellyfin => "data dir missing or not a Jellyfin data dir (also an in-place restore into a missing or empty one, without `--force`), system.xml's MetadataPath holds or lies inside another of its directories, an in-place restore would delete media files (a library overlaps Jellyfin's directories), or database.xml names a database other than Jellyfin's SQLite",
            ExitCode::TargetNotEmpty => "restore target is not empty (and holds no mark of an interrupted restore of the same snapshot)",
            ExitCode::Locked => "repository locked by another jellysnap process, or a backup and an in-place restore of the same data dir at once",
            ExitCode::ServerRunning => "Jellyfin is running, or whether it is cannot be told (in-place restore without `--force`); or a backup while Jellyfin runs with database.xml's `lockingmode` EXCLUSIVE",
            ExitCode::Damaged => "repository data is damaged (corrupt pack, record or chunk; gc refuses while a snapshot record is unreadable; copy leaves out a snapshot whose chunks are damaged)",
            ExitCode::DatabaseRestore => "a database could not be restored; nothing was changed",
            ExitCode::NoSpace => "a file system written to is full, over quota or out of inodes. A restore target (or read-only): the restore stopped at the first such error, naming the file system and how much is still to write (in place, rerunning the same restore finishes it). The repository (or a remote one's local state) under a command that writes to it (backup, copy, gc, repair, forget) or `check --read-data`'s scratch space in it: the message names the repository and what to free, and the repository keeps what it had",
            ExitCode::RestoreInterrupted => "an in-place restore of this data dir was interrupted (its intent record is in the data dir): backups and other restores refuse until it is finished (the message gives the command) or undone",
            ExitCode::Remote => "the object store refused (credentials, permission, bucket) or could not be reached after retries: the message names the object, the HTTP status and what to do; nothing stored was damaged",
            ExitCode::ConfigFile => "the configuration file (`--config`, `$JELLYSNAP_CONFIG`, else `/etc/jellysnap/jellysnap.toml` for root and `~/.config/jellysnap/jellysnap.toml` for a user) is malformed or unreadable, or was named and is missing: the message names the file and the line",
            ExitCode::LowSpace => "an in-place restore would leave less than 2 GiB free on the data dir's file system, below what Jellyfin 10.11 and later need to start (without `--force`); nothing was changed",
            ExitCode::BrokenPipe => "stdout was closed before all output was written (e.g. piped into `head`); the command itself ran to its end (a backup is committed), and any other failure's code takes precedence",
        }
    }

    /// The code the README documents for an engine error. No wildcard: a new error kind
    /// must be given its code here.
    pub fn of(e: &Error) -> ExitCode {
        match e {
            Error::Io { .. }
            | Error::Index { .. }
            | Error::DatabaseCapture { .. }
            | Error::Internal(_)
            | Error::ThreadStart { .. } => ExitCode::Failure,
            Error::Option(_)
            | Error::InvalidName(_)
            | Error::NameLooksLikeId(_)
            | Error::SnapshotInFuture { .. }
            | Error::CopyIntoItself { .. } => ExitCode::Usage,
            Error::NotARepository(_)
            | Error::NoRepository(_)
            | Error::RepositoryLinkDangling { .. }
            | Error::AlreadyInitialized { .. }
            | Error::InitNotEmpty(_)
            | Error::CopyNoRepository(_)
            | Error::ReadOnlyRepository { .. } => ExitCode::Repository,
            Error::NewerFormat { .. } => ExitCode::Version,
            Error::SnapshotNotFound(_)
            | Error::SnapshotAmbiguous { .. }
            | Error::PathNotInSnapshot { .. }
            | Error::PathNotCaptured { .. }
            | Error::PathNotSelected { .. }
            | Error::NothingSelected { .. } => ExitCode::NoSuchSnapshot,
            Error::DuplicateName(_) | Error::NameTaken { .. } | Error::CopyNameTaken { .. } => {
                ExitCode::DuplicateName
            }
            Error::SourceMissing(_)
            | Error::NotJellyfin { .. }
            | Error::RestoreIntoEmpty { .. }
            | Error::MediaWouldBeDeleted { .. }
            | Error::UnsupportedDatabase { .. } => ExitCode::NotJellyfin,
            // A bad flag is a bad command line; a bad system.xml a bad install.
            Error::DirsOverlap {
                from_flag: true, ..
            } => ExitCode::Usage,
            Error::DirsOverlap {
                from_flag: false, ..
            } => ExitCode::NotJellyfin,
            Error::TargetNotEmpty(_) | Error::TargetHoldsOtherRestore { .. } => {
                ExitCode::TargetNotEmpty
            }
            Error::Locked { .. } | Error::DataDirLocked { .. } | Error::LeaseExpired { .. } => {
                ExitCode::Locked
            }
            Error::ServerRunning { .. }
            | Error::ServerStateUnknown { .. }
            | Error::ExclusiveLocking { .. } => ExitCode::ServerRunning,
            Error::Corrupt { .. }
            | Error::ChunkMissing { .. }
            | Error::PackMissing { .. }
            | Error::SnapshotUnreadable { .. } => ExitCode::Damaged,
            Error::DatabaseRestore { .. } => ExitCode::DatabaseRestore,
            Error::NoSpace { .. } | Error::RepositoryFull { .. } => ExitCode::NoSpace,
            Error::TooLittleSpaceLeft { .. } => ExitCode::LowSpace,
            Error::RestoreInterrupted { .. } => ExitCode::RestoreInterrupted,
            Error::Remote {
                kind: jellysnap::RemoteErrorKind::Corrupt,
                ..
            } => ExitCode::Damaged,
            Error::Remote { .. } => ExitCode::Remote,
            Error::ConfigFile { .. } => ExitCode::ConfigFile,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows `| code | meaning |` of the README's "Exit codes" section.
    fn readme_table() -> Vec<(i32, String)> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Exit codes\n")
            .nth(1)
            .expect("README has an Exit codes section");
        let section = section.split("\n## ").next().unwrap_or(section);
        section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim().strip_prefix('|')?.split('|').collect();
                let code = cells.first()?.trim().parse().ok()?;
                Some((code, cells.get(1)?.trim().to_string()))
            })
            .collect()
    }

    #[test]
    fn the_readme_table_is_the_list_of_codes() {
        let ours: Vec<(i32, String)> = ExitCode::ALL
            .iter()
            .map(|c| (c.code(), c.meaning().to_string()))
            .collect();
        let readme = readme_table();
        for row in &readme {
            assert!(ours.contains(row), "README row not in ExitCode: {row:?}");
        }
        for row in &ours {
            assert!(readme.contains(row), "ExitCode not in the README: {row:?}");
        }
        assert_eq!(readme, ours, "same rows, same order");
    }

    #[test]
    fn codes_are_distinct() {
        let mut codes: Vec<i32> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ExitCode::ALL.len());
    }
}
