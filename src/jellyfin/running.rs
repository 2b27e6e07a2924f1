//! Is a Jellyfin server using this data dir? Restoring in place under a running server
//! would be overwritten by it, or destroy committed data of its open database.
//!
//! Two independent signs, because each alone can miss a live server:
//! - SQLite's own POSIX locks on each database of `data/` and on its `-shm`, probed with
//!   `F_GETLK` (reported, never taken). Every connection holds them for its whole life,
//!   but a server process that closed any other descriptor of the file has lost them all;
//! - any other process with a file of `data/` open (a `/proc/PID/fd` scan). It cannot see
//!   the open files of processes this user may not inspect.
//!
//! The answer is `Unknown` — never `NotRunning` — when a sign could not be read and the
//! other did not settle it, and the caller then refuses like for a running server.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// What the checks concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    NotRunning,
    Running {
        /// `None`: a lock holder outside this PID namespace (another container).
        pid: Option<u32>,
        command: String,
        /// What the process does that gives it away ("has ... open").
        evidence: String,
    },
    /// Neither sign could be read well enough to tell; `why` says what to do.
    Unknown {
        why: String,
    },
}

/// The in-place restore's gate: `Ok` only when no server can be using `data_dir` (nor
/// `elsewhere`, databases kept outside it). Exit code 17 either way, with a message that
/// says which.
pub fn ensure_stopped(data_dir: &Path, elsewhere: &[PathBuf]) -> Result<()> {
    match server_state(data_dir, elsewhere) {
        ServerState::NotRunning => Ok(()),
        ServerState::Running {
            pid,
            command,
            evidence,
        } => Err(Error::ServerRunning {
            detail: match pid {
                Some(pid) => format!("process {pid} ({command}) {evidence}"),
                None => format!("{command} {evidence}"),
            },
        }),
        ServerState::Unknown { why } => Err(Error::ServerStateUnknown { detail: why }),
    }
}

/// Look for a server using the Jellyfin data dir `data_dir` (the one holding `data/`).
///
/// Probes the locks of every `data/*.db`: this process must hold no SQLite connection to
/// any of them while it runs (see [`probe_locks`]). The databases `elsewhere` (relocated
/// by `database.xml`, or a snapshot's other databases) are probed the same way.
pub fn server_state(data_dir: &Path, elsewhere: &[PathBuf]) -> ServerState {
    let data = data_dir.join("data");
    let mut dbs = databases(&data);
    dbs.extend(elsewhere.iter().filter(|p| p.is_file()).cloned());
    dbs.sort();
    dbs.dedup();
    let locks: Vec<LockProbe> = dbs.iter().map(|db| probe_locks(db)).collect();
    let mut watched = Vec::new();
    for db in &dbs {
        watched.push(db.clone());
        watched.push(side_file(db, "-wal"));
        watched.push(side_file(db, "-shm"));
    }
    let scan = scan_open_files(&data, &watched);
    decide(&locks, &scan, &user_name())
}

/// The pure decision over what the probes saw (`user`: who we run as, for messages).
pub fn decide(
    locks: &[LockProbe],
    scan: &std::result::Result<Scan, String>,
    user: &str,
) -> ServerState {
    let advice = "run as root or as the jellyfin user, or stop the server and pass --force";
    for l in locks {
        if let LockProbe::Held {
            pid,
            command,
            file,
            what,
        } = l
        {
            return ServerState::Running {
                pid: *pid,
                command: command.clone(),
                evidence: format!("holds SQLite's {what} on {}", file.display()),
            };
        }
    }
    if let Ok(scan) = scan {
        if let Some(u) = scan.users.first() {
            return ServerState::Running {
                pid: Some(u.pid),
                command: u.command.clone(),
                evidence: format!("has {} open", u.file),
            };
        }
    }
    for l in locks {
        if let LockProbe::Unreadable { file, error } = l {
            return ServerState::Unknown {
                why: format!(
                    "cannot open {} to check SQLite's locks as user {user} ({error}): {advice}",
                    file.display()
                ),
            };
        }
    }
    match scan {
        Err(e) => ServerState::Unknown {
            why: format!("cannot look for the server's open files as user {user} ({e}): {advice}"),
        },
        Ok(Scan { blind, .. }) if !blind.is_empty() => {
            let p = &blind[0];
            let more = match blind.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            ServerState::Unknown {
                why: format!(
                    "cannot see the open files of process {} ({}){more} as user {user}: {advice}",
                    p.pid, p.command
                ),
            }
        }
        Ok(Scan {
            hidden: Some(h), ..
        }) => ServerState::Unknown {
            why: format!("{h} from user {user}: {advice}"),
        },
        Ok(_) => ServerState::NotRunning,
    }
}

/// The SQLite databases directly in `data` (jellyfin.db, library.db, plugins' own). One
/// linked from another disk is named by the file the link points at: its locks and side
/// files are there.
fn databases(data: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(data) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "db"))
        .filter_map(|p| match p.symlink_metadata() {
            Ok(m) if m.is_file() => Some(p),
            Ok(m) if m.is_symlink() => p.canonicalize().ok().filter(|t| t.is_file()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

pub fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

// SQLite's unix VFS (os_unix.c). In `-shm`, the WAL-index locks are 8 bytes from
// UNIX_SHM_BASE = 120 (WRITE, CKPT, RECOVER, READ 0-4), followed by the dead-man switch
// UNIX_SHM_DMS = 128 that every connection using the WAL-index holds a read lock on. In the
// database file: PENDING_BYTE = 0x40000000, RESERVED_BYTE after it, then the 510-byte
// SHARED range, read-locked by a WAL-mode connection for as long as it is open.
const SHM_LOCKS_START: u64 = 120;
const SHM_NLOCK: u64 = 8;
const SHM_DMS: u64 = SHM_LOCKS_START + SHM_NLOCK;
const PENDING_BYTE: u64 = 0x4000_0000;
const DB_LOCKS_LEN: u64 = 2 + 510;

/// What the lock probe of one database found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockProbe {
    /// No other process holds any of SQLite's locks on the database or its `-shm`.
    Free,
    Held {
        pid: Option<u32>,
        command: String,
        file: PathBuf,
        what: &'static str,
    },
    /// A file that exists could not be opened or probed.
    Unreadable { file: PathBuf, error: String },
}

/// Is another process holding SQLite's locks on database `db` or its `-shm`? Asks the
/// kernel with `F_GETLK`: no lock is taken, and neither file is written.
///
/// Contract: this process must hold no SQLite connection to `db` while calling. POSIX
/// locks belong to the process, and closing any descriptor of a file — as this probe does
/// with the ones it opens — drops all of the process's locks on that file.
pub fn probe_locks(db: &Path) -> LockProbe {
    type Ranges = &'static [(u64, u64, &'static str)];
    const SHM: Ranges = &[
        (SHM_DMS, 1, "WAL-index dead-man-switch lock"),
        (SHM_LOCKS_START, SHM_NLOCK, "WAL-index lock"),
    ];
    const DB: Ranges = &[(PENDING_BYTE, DB_LOCKS_LEN, "database lock")];
    let shm = side_file(db, "-shm");
    let mut unreadable = None;
    for (path, ranges) in [(shm.as_path(), SHM), (db, DB)] {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                unreadable.get_or_insert((path, e));
                continue;
            }
        };
        for &(start, len, what) in ranges {
            match sys::lock_holder(&f, start, len) {
                Ok(None) => {}
                Ok(Some(h)) => {
                    return LockProbe::Held {
                        pid: h.pid,
                        command: match h.pid {
                            Some(pid) => command_of(pid),
                            None => {
                                "a process outside this PID namespace (another container?)".into()
                            }
                        },
                        file: path.to_path_buf(),
                        what,
                    }
                }
                Err(e) => {
                    unreadable.get_or_insert((path, e));
                }
            }
        }
    }
    match unreadable {
        None => LockProbe::Free,
        Some((file, e)) => LockProbe::Unreadable {
            file: file.to_path_buf(),
            error: e.to_string(),
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub pid: u32,
    pub command: String,
    pub file: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub command: String,
}

/// What the open-file scan saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Other processes with a file open under the directory.
    pub users: Vec<User>,
    /// Processes that look like a Jellyfin server and whose open files we may not see.
    pub blind: Vec<Process>,
    /// Why other users' processes are not even listed (a `hidepid` /proc), if they are not.
    pub hidden: Option<String>,
}

/// Processes other than this one with a file open under `dir`, or one of `watched` open
/// under another name (a server in a container sees the data dir at another path).
/// `Err` when the processes cannot be listed at all.
pub fn scan_open_files(dir: &Path, watched: &[PathBuf]) -> std::result::Result<Scan, String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let ids: HashSet<(u64, u64)> = watched
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let names: HashSet<&std::ffi::OsStr> = watched.iter().filter_map(|p| p.file_name()).collect();
    let me = std::process::id();
    let mut scan = Scan::default();
    let procs = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let fds = match std::fs::read_dir(p.path().join("fd")) {
            Ok(fds) => fds,
            // Gone while we looked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                if looks_like_jellyfin(pid) {
                    scan.blind.push(Process {
                        pid,
                        command: command_of(pid),
                    });
                }
                continue;
            }
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let hit = target.starts_with(&dir)
                || (target.file_name().is_some_and(|n| names.contains(n))
                    && std::fs::metadata(fd.path())
                        .is_ok_and(|m| ids.contains(&(m.dev(), m.ino()))));
            if hit {
                scan.users.push(User {
                    pid,
                    command: command_of(pid),
                    file: target.display().to_string(),
                });
                break;
            }
        }
    }
    if !sys::is_root() {
        scan.hidden = proc_hidepid().map(|opt| {
            format!("the processes of other users are hidden (/proc is mounted with {opt})")
        });
    }
    Ok(scan)
}

/// The process's name: `comm`, world-readable even for other users' processes.
fn command_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// By its executable's name or, for `dotnet jellyfin.dll`, its assembly's (world-readable
/// `comm` and `cmdline`). Arguments are not looked at: `tail /var/log/jellyfin/...` is no
/// server.
fn looks_like_jellyfin(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    is_jellyfin(&command_of(pid), &args)
}

fn is_jellyfin(comm: &str, args: &[&[u8]]) -> bool {
    let base = |a: &[u8]| -> String {
        let name = a.rsplit(|&b| b == b'/').next().unwrap_or(a);
        String::from_utf8_lossy(name).to_ascii_lowercase()
    };
    comm.to_ascii_lowercase().contains("jellyfin")
        || args.first().is_some_and(|a| base(a).contains("jellyfin"))
        || args.iter().any(|a| base(a).ends_with("jellyfin.dll"))
}

/// The `hidepid` option of /proc, when it hides other users' processes.
fn proc_hidepid() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/proc"))?;
    line.split([' ', ','])
        .find(|o| o.starts_with("hidepid=") && !matches!(*o, "hidepid=0" | "hidepid=off"))
        .map(str::to_string)
}

/// Who we run as, by name when /etc/passwd knows it.
fn user_name() -> String {
    let uid = sys::effective_uid();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The stand-in server of the integration tests (Python's own SQLite).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/common/server.rs"]
mod test_server;

#[cfg(test)]
mod tests {
    use super::test_server::Server;
    use super::*;

    #[test]
    fn locks_reveal_a_server_whose_open_files_are_hidden_and_the_scan_one_that_lost_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jellyfin.db");
        let mut server = Server::start(&db, 10, None);

        let probe = probe_locks(&db);
        match &probe {
            LockProbe::Held {
                pid, file, what, ..
            } => {
                assert_eq!(*pid, Some(server.pid));
                assert_eq!(file, &side_file(&db, "-shm"));
                assert_eq!(*what, "WAL-index dead-man-switch lock");
            }
            other => panic!("the live server's locks were not seen: {other:?}"),
        }
        // An open-file scan that sees nothing (another user's server) does not matter.
        match decide(&[probe], &Ok(Scan::default()), "someone") {
            ServerState::Running { pid, evidence, .. } => {
                assert_eq!(pid, Some(server.pid));
                assert!(evidence.contains("dead-man-switch"), "{evidence}");
            }
            other => panic!("{other:?}"),
        }

        // Closing any descriptor of the files drops all of the process's locks...
        assert_eq!(server.ask("drop-locks"), "dropped");
        assert_eq!(probe_locks(&db), LockProbe::Free);
        // ...and then the open files give it away.
        let scan = scan_open_files(dir.path(), std::slice::from_ref(&db)).unwrap();
        assert!(
            scan.users.iter().any(|u| u.pid == server.pid),
            "{:?}",
            scan.users
        );
        match decide(&[LockProbe::Free], &Ok(scan), "someone") {
            ServerState::Running { pid, evidence, .. } => {
                assert_eq!(pid, Some(server.pid));
                assert!(evidence.starts_with("has "), "{evidence}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(server.ask("check"), "check ok");
    }

    fn blind(pid: u32, command: &str) -> Scan {
        Scan {
            blind: vec![Process {
                pid,
                command: command.into(),
            }],
            ..Scan::default()
        }
    }

    #[test]
    fn a_server_that_lost_its_locks_and_hides_its_files_is_unknown_not_stopped() {
        let state = decide(&[LockProbe::Free], &Ok(blind(1234, "jellyfin")), "backup");
        assert_eq!(
            state,
            ServerState::Unknown {
                why: "cannot see the open files of process 1234 (jellyfin) as user backup: \
                      run as root or as the jellyfin user, or stop the server and pass --force"
                    .into()
            }
        );
    }

    #[test]
    fn decision_table() {
        let held = LockProbe::Held {
            pid: Some(7),
            command: "jellyfin".into(),
            file: "/d/data/jellyfin.db".into(),
            what: "database lock",
        };
        let unreadable = LockProbe::Unreadable {
            file: "/d/data/jellyfin.db-shm".into(),
            error: "Permission denied (os error 13)".into(),
        };
        let user = Scan {
            users: vec![User {
                pid: 8,
                command: "jellyfin".into(),
                file: "/d/data/jellyfin.db".into(),
            }],
            ..Scan::default()
        };
        let clear = Ok(Scan::default());
        let pid_of = |s: ServerState| match s {
            ServerState::Running { pid, .. } => pid,
            other => panic!("not running: {other:?}"),
        };
        let why_of = |s: ServerState| match s {
            ServerState::Unknown { why } => why,
            other => panic!("not unknown: {other:?}"),
        };

        assert_eq!(decide(&[], &clear, "u"), ServerState::NotRunning);
        assert_eq!(
            decide(&[LockProbe::Free, LockProbe::Free], &clear, "u"),
            ServerState::NotRunning
        );
        // Either sign alone is enough, and it wins over what could not be read.
        assert_eq!(
            pid_of(decide(std::slice::from_ref(&held), &clear, "u")),
            Some(7)
        );
        assert_eq!(
            pid_of(decide(&[LockProbe::Free], &Ok(user.clone()), "u")),
            Some(8)
        );
        assert_eq!(
            pid_of(decide(&[unreadable.clone(), held], &clear, "u")),
            Some(7)
        );
        assert_eq!(
            pid_of(decide(std::slice::from_ref(&unreadable), &Ok(user), "u")),
            Some(8)
        );
        // What could not be read, with nothing seen, is never "not running".
        assert!(why_of(decide(&[unreadable], &clear, "u"))
            .starts_with("cannot open /d/data/jellyfin.db-shm to check SQLite's locks as user u"));
        assert!(why_of(decide(&[], &Err("/proc: gone".into()), "u")).contains("/proc: gone"));
        let two = Scan {
            blind: vec![
                Process {
                    pid: 1,
                    command: "jellyfin".into(),
                },
                Process {
                    pid: 2,
                    command: "jellyfin".into(),
                },
            ],
            ..Scan::default()
        };
        assert!(why_of(decide(&[], &Ok(two), "u")).contains("process 1 (jellyfin) (and 1 more)"));
        let hidden = Scan {
            hidden: Some(
                "the processes of other users are hidden (/proc is mounted with hidepid=2)".into(),
            ),
            ..Scan::default()
        };
        assert!(why_of(decide(&[], &Ok(hidden), "u")).contains("hidepid=2) from user u"));
    }

    #[test]
    fn jellyfin_is_recognised_by_its_executable_not_by_its_arguments() {
        let yes: [(&str, &[&[u8]]); 4] = [
            (
                "jellyfin",
                &[
                    b"/usr/lib/jellyfin/bin/jellyfin",
                    b"--webdir=/usr/share/jellyfin/web",
                ],
            ),
            ("jellyfin", &[]),
            ("dotnet", &[b"dotnet", b"/opt/jellyfin/Jellyfin.dll"]),
            ("Main", &[b"/jellyfin/jellyfin"]),
        ];
        for (comm, args) in yes {
            assert!(is_jellyfin(comm, args), "{comm} {args:?}");
        }
        let no: [(&str, &[&[u8]]); 3] = [
            ("tail", &[b"tail", b"-f", b"/var/log/jellyfin/log.txt"]),
            (
                "jellysnap",
                &[b"jellysnap", b"backup", b"--data-dir", b"/var/lib/jellyfin"],
            ),
            ("python3", &[b"python3", b"server.py"]),
        ];
        for (comm, args) in no {
            assert!(!is_jellyfin(comm, args), "{comm} {args:?}");
        }
    }
}
