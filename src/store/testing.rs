//! The test store and the other test seams, compiled only with the `test-hooks` cargo
//! feature (the test build turns it on; a release build has none of this code). The integration tests drive them through
//! the environment of the binary they run:
//!
//! - `JELLYSNAP_FAULT=<op>:<n>[:<errno>]`: the n-th operation of kind `op` fails with
//!   `errno` (default 5, EIO; 28 is ENOSPC). `write`: a write of repository bytes (each
//!   write to a staged pack, each small object); `fsync`: a durability point (each
//!   object made durable, each delete); `read`: opening a source file for reading;
//!   `spawn`: starting one of the pack writer's threads.
//! - `JELLYSNAP_CRASH_AT=<point>`: the process aborts at the point (no destructors, no
//!   flush: a SIGKILL or a power cut of the process).
//! - `JELLYSNAP_PAUSE_AT=<point>`: the process sleeps there for `JELLYSNAP_PAUSE_MS`
//!   (default 2000) milliseconds, holding its locks, so that a test can run another
//!   command at that moment.
//! - `JELLYSNAP_NOW=<unix seconds>`: the clock reads this (a wrong clock, past or future).
//! - `JELLYSNAP_TEST_FORMAT=<n>`: `init` (and `backup --init`, `copy --init`) makes the
//!   repository in format `n` (1: as a jellysnap before format 2 made it).
//! - `JELLYSNAP_TEST_SHARED=1`: a local repository is treated as one that hosts share
//!   (state in the cache dir, leases, two-phase gc), so that two cache dirs play two
//!   hosts against one directory.
//! - `JELLYSNAP_COUNT_REQUESTS=<file>`: each store, when dropped, appends one line per
//!   kind of request it served, `<location>\t<kind>\t<count>` (kinds: `get`,
//!   `read_at`, `read_tail`, `put_new`, `size`, `exists`, `list`, `put`, `put_staged`,
//!   `delete`), so that a test can tell what a command cost on object storage.
//!
//! Points are moments of the store's and the index's life, named by what the command is
//! doing then:
//!
//! | point | moment |
//! |---|---|
//! | `init-before-config` | before the config object is written |
//! | `reader-after-index-open` | a reading command has listed the snapshots and opened its index view |
//! | `backup-before-commit` | before a snapshot record is written (by a backup or a copy) |
//! | `backup-first-file` | a backup's walk has gone through its first file (that thread of the walk waits there) |
//! | `pack-stored-<n>` | the n-th pack of the process is durable in the store, not yet indexed |
//! | `gc-after-repack` | before the first index entries are removed |
//! | `gc-after-unindex` | before the first pack is deleted |
//! | `gc-after-first-delete` | after the first pack is deleted |
//! | `restore-databases-prepared` | a restore has written its databases under temp names beside them, before it changes anything else |
//! | `restore-after-db-rename` | between a restored database's rename and the removal of the old side files |
//! | `restore-swap-<n>` | after the n-th step of an in-place restore's database swap (intent record written, each side file set aside, each database renamed in, each set-aside file removed) |
//! | `restore-link-made` | a restored symlink is made under its temp name, not yet renamed |
//! | `check-rebuilt` | `check --read-data` has rebuilt a database dump in scratch space |
//! | `restore-before-sync` | a restore has written everything, before its final syncs |
//! | `restore-mark-temp`, `restore-intent-temp` | an in-place restore's unfinished-restore mark or intent record is written under its temp name, not yet renamed |

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::store::index::{ChunkIndex, IndexEntry, PackInfo};
use crate::store::{Key, Kind, Staged, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write = 0,
    Fsync = 1,
    Read = 2,
    Spawn = 3,
}

struct Fault {
    op: Op,
    nth: u64,
    errno: i32,
}

struct Plan {
    fault: Option<Fault>,
    crash_at: Option<String>,
    pause_at: Option<String>,
    pause_ms: u64,
    counts: [AtomicU64; 4],
}

fn parse_fault(spec: &str) -> Option<Fault> {
    let mut parts = spec.split(':');
    let op = match parts.next()? {
        "write" => Op::Write,
        "fsync" => Op::Fsync,
        "read" => Op::Read,
        "spawn" => Op::Spawn,
        _ => return None,
    };
    let nth = parts.next()?.parse().ok()?;
    let errno = parts.next().and_then(|e| e.parse().ok()).unwrap_or(5);
    Some(Fault { op, nth, errno })
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| Plan {
        fault: std::env::var("JELLYSNAP_FAULT")
            .ok()
            .and_then(|s| parse_fault(&s)),
        crash_at: std::env::var("JELLYSNAP_CRASH_AT").ok(),
        pause_at: std::env::var("JELLYSNAP_PAUSE_AT").ok(),
        pause_ms: std::env::var("JELLYSNAP_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        counts: Default::default(),
    })
}

/// Count one operation of kind `op`; fails when it is the planned one.
fn count(op: Op) -> std::io::Result<()> {
    let p = plan();
    let Some(f) = p.fault.as_ref().filter(|f| f.op == op) else {
        return Ok(());
    };
    let n = p.counts[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
    if n == f.nth {
        Err(std::io::Error::from_raw_os_error(f.errno))
    } else {
        Ok(())
    }
}

/// The command has reached `name`: abort or pause there if the test asked for it.
pub fn point(name: &str) {
    let p = plan();
    if p.crash_at.as_deref() == Some(name) {
        std::process::abort();
    }
    if p.pause_at.as_deref() == Some(name) {
        std::thread::sleep(std::time::Duration::from_millis(p.pause_ms));
    }
}

/// The time `JELLYSNAP_NOW` sets the clock to, in Unix nanoseconds.
pub fn clock_ns() -> Option<i64> {
    static NOW: OnceLock<Option<i64>> = OnceLock::new();
    *NOW.get_or_init(|| {
        let secs: i64 = std::env::var("JELLYSNAP_NOW").ok()?.parse().ok()?;
        secs.checked_mul(1_000_000_000)
    })
}

/// Whether `JELLYSNAP_TEST_SHARED` asks to treat local repositories as shared by hosts.
pub fn local_as_shared() -> bool {
    static SHARED: OnceLock<bool> = OnceLock::new();
    *SHARED.get_or_init(|| std::env::var("JELLYSNAP_TEST_SHARED").is_ok_and(|v| v == "1"))
}

/// The format a new repository is made in when a test asks for an older one
/// (`JELLYSNAP_TEST_FORMAT=1`: a repository as an earlier jellysnap made it).
pub fn init_format() -> Option<u32> {
    std::env::var("JELLYSNAP_TEST_FORMAT")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// A thread is about to be started.
pub fn thread_spawn() -> std::io::Result<()> {
    count(Op::Spawn)
}

/// A source file is about to be opened for reading.
pub fn source_open() -> std::io::Result<()> {
    count(Op::Read)
}

thread_local! {
    static READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many ranged reads of the test store this thread has made (the unit tests count
/// the reads a restore makes).
#[cfg(test)]
pub fn reads_on_this_thread() -> u64 {
    READS.with(|n| n.get())
}

/// Wrap the store of a command in the test store.
pub fn wrap_store(inner: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(FaultStore {
        inner,
        deleted_packs: AtomicU64::new(0),
        requests: Default::default(),
    })
}

/// The kinds of request `JELLYSNAP_COUNT_REQUESTS` counts, in the order of
/// [`FaultStore::requests`].
const REQUESTS: [&str; 10] = [
    "get",
    "read_at",
    "read_tail",
    "put_new",
    "size",
    "exists",
    "list",
    "put",
    "put_staged",
    "delete",
];

/// Wrap the chunk index of a command in the test index.
pub fn wrap_index(inner: Arc<dyn ChunkIndex>) -> Arc<dyn ChunkIndex> {
    Arc::new(FaultIndex {
        inner,
        removed: AtomicU64::new(0),
    })
}

/// A store that fails, pauses or aborts where the plan says, and otherwise is `inner`.
struct FaultStore {
    inner: Arc<dyn Store>,
    deleted_packs: AtomicU64,
    /// Requests served, by kind (see [`REQUESTS`]).
    requests: [AtomicU64; 10],
}

impl FaultStore {
    fn fail(&self, op: Op, key: Key) -> Result<()> {
        count(op).map_err(|e| Error::io(self.inner.describe(key), e))
    }

    fn request(&self, kind: &str) {
        if let Some(i) = REQUESTS.iter().position(|k| *k == kind) {
            self.requests[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for FaultStore {
    fn drop(&mut self) {
        use std::io::Write;
        let Some(file) = std::env::var_os("JELLYSNAP_COUNT_REQUESTS") else {
            return;
        };
        let mut lines = String::new();
        for (kind, n) in REQUESTS.iter().zip(&self.requests) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                lines.push_str(&format!("{}\t{kind}\t{n}\n", self.inner.location()));
            }
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = f.write_all(lines.as_bytes());
        }
    }
}

impl Store for FaultStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put_new(&self, key: Key, bytes: &[u8]) -> Result<bool> {
        self.request("put_new");
        if key == Key::Config {
            point("init-before-config");
        }
        self.fail(Op::Write, key)?;
        self.fail(Op::Fsync, key)?;
        self.inner.put_new(key, bytes)
    }

    fn conditional_writes(&self) -> bool {
        self.inner.conditional_writes()
    }

    fn read_tail(&self, key: Key, len: u64) -> Result<(Vec<u8>, u64)> {
        self.request("read_tail");
        self.inner.read_tail(key, len)
    }

    fn put(&self, key: Key, bytes: &[u8]) -> Result<()> {
        self.request("put");
        match key {
            Key::Config => point("init-before-config"),
            Key::Snapshot(_) => point("backup-before-commit"),
            _ => {}
        }
        self.fail(Op::Write, key)?;
        self.fail(Op::Fsync, key)?;
        self.inner.put(key, bytes)
    }

    fn init(&self) -> Result<()> {
        self.inner.init()
    }

    fn stage(&self, scratch: &Path) -> Result<Staged> {
        let hook = Arc::new(|_: &Path| count(Op::Write));
        Ok(self.inner.stage(scratch)?.with_hook(hook))
    }

    fn put_staged(&self, key: Key, staged: Staged) -> Result<()> {
        self.request("put_staged");
        self.fail(Op::Fsync, key)?;
        self.inner.put_staged(key, staged)?;
        if key.pack_id().is_some() {
            step("pack-stored");
        }
        Ok(())
    }

    fn get(&self, key: Key) -> Result<Vec<u8>> {
        self.request("get");
        self.inner.get(key)
    }

    fn read_shape(&self) -> crate::store::ReadShape {
        self.inner.read_shape()
    }

    fn read_at(&self, key: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.request("read_at");
        READS.with(|n| n.set(n.get() + 1));
        self.inner.read_at(key, offset, buf)
    }

    fn read_into(&self, key: Key, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<usize> {
        self.request("read_at");
        READS.with(|n| n.set(n.get() + 1));
        self.inner.read_into(key, offset, len, buf)
    }

    fn size(&self, key: Key) -> Result<u64> {
        self.request("size");
        self.inner.size(key)
    }

    fn exists(&self, key: Key) -> Result<bool> {
        self.request("exists");
        self.inner.exists(key)
    }

    fn list(&self, kind: Kind) -> Result<Vec<(Key, u64)>> {
        self.request("list");
        self.inner.list(kind)
    }

    fn delete(&self, key: Key) -> Result<()> {
        self.request("delete");
        let first_pack =
            key.pack_id().is_some() && self.deleted_packs.fetch_add(1, Ordering::SeqCst) == 0;
        if first_pack {
            point("gc-after-unindex");
        }
        self.fail(Op::Fsync, key)?;
        self.inner.delete(key)?;
        if first_pack {
            point("gc-after-first-delete");
        }
        Ok(())
    }

    fn clear_scratch(&self, scratch: &Path) {
        self.inner.clear_scratch(scratch)
    }

    fn sync_visible(&self) -> Result<()> {
        self.inner.sync_visible()
    }

    fn remove_leftovers(&self) -> Result<u64> {
        self.inner.remove_leftovers()
    }

    fn describe(&self, key: Key) -> String {
        self.inner.describe(key)
    }
}

/// An index that pauses or aborts where the plan says, and otherwise is `inner`.
struct FaultIndex {
    inner: Arc<dyn ChunkIndex>,
    removed: AtomicU64,
}

impl ChunkIndex for FaultIndex {
    fn get(&self, id: &ChunkId) -> Result<Option<IndexEntry>> {
        self.inner.get(id)
    }

    fn insert(&self, entries: &[(ChunkId, IndexEntry)]) -> Result<()> {
        self.inner.insert(entries)
    }

    fn remove(&self, ids: &[ChunkId]) -> Result<()> {
        if self.removed.fetch_add(1, Ordering::SeqCst) == 0 {
            point("gc-after-repack");
        }
        self.inner.remove(ids)
    }

    fn len_estimate(&self) -> u64 {
        self.inner.len_estimate()
    }

    fn insert_pack(
        &self,
        pack: PackId,
        info: PackInfo,
        entries: &[(ChunkId, IndexEntry)],
    ) -> Result<()> {
        self.inner.insert_pack(pack, info, entries)
    }

    fn remove_pack(&self, pack: PackId, ids: &[ChunkId]) -> Result<()> {
        if self.removed.fetch_add(1, Ordering::SeqCst) == 0 {
            point("gc-after-repack");
        }
        self.inner.remove_pack(pack, ids)
    }
}

/// The command has done one more step of a counted sequence `name`: the n-th is the point
/// `<name>-<n>` (a test stops the command after each step in turn).
pub fn step(name: &str) {
    static STEPS: AtomicU64 = AtomicU64::new(0);
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    point(&format!("{name}-{n}"));
}
