//! Leases: how processes on different hosts that share a repository (an object store)
//! keep out of each other's way, where a flock cannot reach (docs/ARCHITECTURE.md,
//! "Locks"). A local repository keeps its flocks only.
//!
//! A lease is an object under `Key::Lease(<random id>)` saying which host, process and
//! command uses the repository, in which mode, until when. Taking one: create our own
//! (create-only-if-absent), then list the leases: an exclusive request (gc, forget,
//! repair) fails if any other live lease exists, a shared one (reads, backups) if a live
//! exclusive one does; on failure ours is deleted again. Two requests that see each
//! other both fail, which is safe. One PUT, one LIST and one DELETE per command when
//! nobody else holds a lease.
//!
//! A lease lives [`LEASE_TTL`] and a background thread renews it every
//! [`REFRESH_EVERY`]. Others treat it as expired only [`CLOCK_SKEW`] after its expiry
//! (clocks of two hosts disagree), while its holder stops committing once its last
//! successful renewal is older than the TTL: so a holder that lost its lease (a network
//! cut longer than the TTL) never commits after another host may have taken over. A
//! process that dies leaves its lease to expire by itself; gc removes leases expired for
//! more than [`STALE_AFTER`].

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::hosts::{LeaseMode, LeaseRecord, LEASE_VERSION};
use crate::store::{Key, Kind, LeaseId, Store};

/// How long a lease lives without renewal, in seconds.
pub const LEASE_TTL: i64 = 30 * 60;
/// How often the holder renews its lease.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// How far another host's clock may be off: a lease counts as expired only this long
/// after the expiry written in it.
pub const CLOCK_SKEW: i64 = 10 * 60;
/// A lease expired this long ago is left by a process that died: gc removes it.
pub const STALE_AFTER: i64 = 24 * 3600;

/// The clock, in Unix seconds (a test build can set it, see `testing`).
pub fn now_secs() -> i64 {
    #[cfg(feature = "test-hooks")]
    if let Some(ns) = crate::store::testing::clock_ns() {
        return ns.div_euclid(1_000_000_000);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC`, for messages.
pub fn utc(secs: i64) -> String {
    format!(
        "{} UTC",
        crate::format::timefmt::utc(secs.saturating_mul(1_000_000_000))
    )
}

/// What a lease holder runs, for the lease others read.
#[derive(Debug, Clone)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub command: String,
}

impl Holder {
    /// This process, running `command`.
    pub fn this_process(command: &str) -> Self {
        Holder {
            host: crate::sys::hostname(),
            pid: std::process::id(),
            command: command.to_string(),
        }
    }
}

struct State {
    /// When the lease was last written successfully (Unix seconds).
    last_ok: i64,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A lease this process holds; dropping it deletes it.
pub struct Lease {
    store: Arc<dyn Store>,
    id: LeaseId,
    record: LeaseRecord,
    /// The repository, for messages.
    repo: PathBuf,
    shared: Arc<Shared>,
    refresher: Option<JoinHandle<()>>,
    /// Other leases that expired more than [`STALE_AFTER`] ago.
    stale: Vec<LeaseId>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id.to_hex())
            .field("mode", &self.record.mode)
            .finish()
    }
}

impl Lease {
    /// Take a lease on `store` for `holder` now and keep it renewed until dropped.
    pub fn acquire(
        store: Arc<dyn Store>,
        repo: PathBuf,
        mode: LeaseMode,
        holder: &Holder,
    ) -> Result<Lease> {
        let mut lease = Self::acquire_at(store, repo, mode, holder, now_secs())?;
        lease.start_refresher()?;
        Ok(lease)
    }

    /// Take a lease as at time `now`, without the renewing thread.
    pub fn acquire_at(
        store: Arc<dyn Store>,
        repo: PathBuf,
        mode: LeaseMode,
        holder: &Holder,
        now: i64,
    ) -> Result<Lease> {
        let id = LeaseId::random();
        let record = LeaseRecord {
            version: LEASE_VERSION,
            host: holder.host.clone(),
            pid: holder.pid,
            command: holder.command.clone(),
            mode,
            created: now,
            expires: now + LEASE_TTL,
            space: crate::sys::process_space(),
            start: crate::sys::process_start(holder.pid),
        };
        if !store.put_new(Key::Lease(id), &record.encode()?)? {
            return Err(Error::internal(
                "a new lease's random name is already taken",
            ));
        }
        let mut lease = Lease {
            store,
            id,
            record,
            repo,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    last_ok: now,
                    stop: false,
                }),
                wake: Condvar::new(),
            }),
            refresher: None,
            stale: Vec::new(),
        };
        // On any failure from here on, dropping `lease` deletes our lease object.
        lease.stale = lease.conflicts(now)?;
        Ok(lease)
    }

    /// Look at the other leases: an error for the first one ours conflicts with, else
    /// the stale ones.
    fn conflicts(&self, now: i64) -> Result<Vec<LeaseId>> {
        let mut stale = Vec::new();
        for (key, _) in self.store.list(Kind::Lease)? {
            let Key::Lease(other) = key else { continue };
            if other == self.id {
                continue;
            }
            let bytes = match self.store.get(key) {
                Ok(b) => b,
                // Released between the listing and the read.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let theirs = match LeaseRecord::decode(&bytes, &self.store.describe(key)) {
                Ok(r) => r,
                // Whatever it is, someone may be using the repository: not ignored.
                Err(e) => {
                    return Err(Error::Locked {
                        path: self.repo.clone(),
                        detail: format!(
                            "a lease cannot be read ({e}); if no jellysnap runs on another host, delete {}",
                            self.store.describe(key)
                        ),
                    })
                }
            };
            if theirs.expires + STALE_AFTER <= now || holder_died(&theirs) {
                stale.push(other);
                continue;
            }
            if theirs.expires + CLOCK_SKEW <= now {
                continue;
            }
            let conflict =
                self.record.mode == LeaseMode::Exclusive || theirs.mode == LeaseMode::Exclusive;
            if conflict {
                return Err(Error::Locked {
                    path: self.repo.clone(),
                    detail: format!(
                        "host {:?}, process {}, runs `{}` with a{} lease until {}; a lease nobody renews \
                         (its process died) expires by itself, and is ignored from {}",
                        theirs.host,
                        theirs.pid,
                        theirs.command,
                        if theirs.mode == LeaseMode::Exclusive {
                            "n exclusive"
                        } else {
                            " shared"
                        },
                        utc(theirs.expires),
                        utc(theirs.expires + CLOCK_SKEW),
                    ),
                });
            }
        }
        Ok(stale)
    }

    fn start_refresher(&mut self) -> Result<()> {
        let (store, shared, key) = (self.store.clone(), self.shared.clone(), Key::Lease(self.id));
        let record = self.record.clone();
        let handle = std::thread::Builder::new()
            .name("jellysnap-lease".into())
            .spawn(move || refresh_loop(store.as_ref(), &shared, key, record))
            .map_err(|source| Error::ThreadStart {
                what: "lease renewal".into(),
                source,
            })?;
        self.refresher = Some(handle);
        Ok(())
    }

    /// Renew the lease as at time `now`.
    pub fn refresh_at(&self, now: i64) -> Result<()> {
        refresh(
            self.store.as_ref(),
            &self.shared,
            Key::Lease(self.id),
            &self.record,
            now,
        )
    }

    /// Refuse to commit when the last renewal is older than the TTL: another host may
    /// already treat this lease as gone.
    pub fn check_at(&self, now: i64) -> Result<()> {
        let last = self
            .shared
            .state
            .lock()
            .map(|s| s.last_ok)
            .unwrap_or(i64::MIN);
        if now > last.saturating_add(LEASE_TTL) {
            return Err(Error::LeaseExpired {
                path: self.repo.clone(),
                detail: format!(
                    "its lease was last renewed at {} and the store has not accepted a renewal since; \
                     another host may be collecting garbage. Nothing was committed; run the command again",
                    utc(last)
                ),
            });
        }
        Ok(())
    }

    /// [`Lease::check_at`] now.
    pub fn check(&self) -> Result<()> {
        self.check_at(now_secs())
    }

    /// Other leases that expired more than a day ago (their process died).
    pub fn stale(&self) -> &[LeaseId] {
        &self.stale
    }

    pub fn mode(&self) -> LeaseMode {
        self.record.mode
    }
}

/// Whether a lease's holder ran where this process runs (same boot, same pid
/// namespace) and is gone: killed before it could delete its lease. Only then is a lease
/// known dead before it expires; another machine's holder is never judged this way.
fn holder_died(theirs: &LeaseRecord) -> bool {
    match (&theirs.space, theirs.start) {
        (Some(space), Some(start)) if crate::sys::process_space().as_ref() == Some(space) => {
            match crate::sys::process_start(theirs.pid) {
                // Its pid now names a later process.
                Some(now) => now != start,
                // No start time to read: gone only if there is no such process at all
                // (a hidden `/proc` entry is not a dead process).
                None => crate::sys::process_gone(theirs.pid),
            }
        }
        _ => false,
    }
}

fn refresh(
    store: &dyn Store,
    shared: &Shared,
    key: Key,
    record: &LeaseRecord,
    now: i64,
) -> Result<()> {
    let renewed = LeaseRecord {
        expires: now + LEASE_TTL,
        ..record.clone()
    };
    store.put(key, &renewed.encode()?)?;
    if let Ok(mut s) = shared.state.lock() {
        s.last_ok = s.last_ok.max(now);
    }
    Ok(())
}

fn refresh_loop(store: &dyn Store, shared: &Shared, key: Key, record: LeaseRecord) {
    loop {
        let Ok(guard) = shared.state.lock() else {
            return;
        };
        let Ok((guard, _)) = shared
            .wake
            .wait_timeout_while(guard, REFRESH_EVERY, |s| !s.stop)
        else {
            return;
        };
        if guard.stop {
            return;
        }
        drop(guard);
        // A failed renewal is retried at the next turn; the commit check says when
        // too many have failed.
        let _ = refresh(store, shared, key, &record, now_secs());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        // Left behind when the store cannot be reached: it expires by itself.
        let _ = self.store.delete(Key::Lease(self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(&dir.path().join("repo"));
        s.init().unwrap();
        (dir, Arc::new(s))
    }

    fn holder(host: &str, command: &str) -> Holder {
        Holder {
            host: host.into(),
            pid: 7,
            command: command.into(),
        }
    }

    fn take(store: &Arc<dyn Store>, mode: LeaseMode, host: &str, now: i64) -> Result<Lease> {
        Lease::acquire_at(
            store.clone(),
            PathBuf::from("s3://bucket"),
            mode,
            &holder(
                host,
                if mode == LeaseMode::Exclusive {
                    "gc"
                } else {
                    "backup"
                },
            ),
            now,
        )
    }

    fn leases(store: &Arc<dyn Store>) -> usize {
        store.list(Kind::Lease).unwrap().len()
    }

    /// A lease whose holder ran on this machine, in this pid namespace, and has died
    /// (killed before it could delete it) is ignored at once and reported stale; the
    /// same lease from another machine is honoured until it expires.
    #[test]
    fn a_dead_holder_on_this_machine_does_not_block() {
        let (_d, s) = store();
        let t = 1_000_000;
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        for (space, blocks) in [
            (crate::sys::process_space(), false),
            (Some("another-machine:1".to_string()), true),
        ] {
            let theirs = LeaseRecord {
                version: LEASE_VERSION,
                host: "here".into(),
                pid: dead,
                command: "backup".into(),
                mode: LeaseMode::Shared,
                created: t,
                expires: t + LEASE_TTL,
                space,
                start: Some(12345),
            };
            let key = Key::Lease(LeaseId::random());
            s.put(key, &theirs.encode().unwrap()).unwrap();
            let r = take(&s, LeaseMode::Exclusive, "gc-host", t + 60);
            match (blocks, r) {
                (true, Err(Error::Locked { .. })) => {}
                (false, Ok(l)) => assert_eq!(
                    l.stale(),
                    &[match key {
                        Key::Lease(id) => id,
                        _ => unreachable!(),
                    }]
                ),
                (_, r) => panic!("blocks {blocks}: {r:?}"),
            }
            s.delete(key).unwrap();
        }
    }

    /// Shared leases coexist; an exclusive one excludes and is excluded by any other,
    /// and a refused request leaves no lease behind.
    #[test]
    fn exclusive_and_shared_leases_conflict() {
        let (_d, s) = store();
        let t = 1_000_000;
        let a = take(&s, LeaseMode::Shared, "a", t).unwrap();
        let b = take(&s, LeaseMode::Shared, "b", t).unwrap();
        assert_eq!(leases(&s), 2);
        let e = take(&s, LeaseMode::Exclusive, "c", t).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Locked { .. }), "{msg}");
        assert!(msg.contains("backup") && msg.contains("process 7"), "{msg}");
        assert!(msg.contains(&utc(t + LEASE_TTL)), "{msg}");
        assert_eq!(leases(&s), 2, "the refused lease was deleted");
        drop((a, b));
        assert_eq!(leases(&s), 0, "released leases are deleted");

        let g = take(&s, LeaseMode::Exclusive, "c", t).unwrap();
        let e = take(&s, LeaseMode::Shared, "a", t).unwrap_err();
        assert!(e.to_string().contains("`gc`"), "{e}");
        assert!(take(&s, LeaseMode::Exclusive, "d", t).is_err());
        assert_eq!(leases(&s), 1);
        drop(g);
        take(&s, LeaseMode::Shared, "a", t).unwrap();
    }

    /// A lease nobody renews is ignored once expired beyond the clock-skew margin, and
    /// reported stale a day later; a renewed one stays in force.
    #[test]
    fn expiry_and_renewal() {
        let (_d, s) = store();
        let t = 1_000_000;
        let dead = take(&s, LeaseMode::Shared, "a", t).unwrap();
        // The process dies: its lease stays.
        std::mem::forget(dead);
        let renewed = take(&s, LeaseMode::Shared, "b", t).unwrap();
        let later = t + LEASE_TTL + CLOCK_SKEW - 1;
        renewed.refresh_at(later - 60).unwrap();
        assert!(
            take(&s, LeaseMode::Exclusive, "c", later).is_err(),
            "within the skew margin"
        );
        drop(renewed);
        let gc = take(&s, LeaseMode::Exclusive, "c", t + LEASE_TTL + CLOCK_SKEW).unwrap();
        assert!(gc.stale().is_empty(), "expired, not yet stale");
        drop(gc);
        let gc = take(&s, LeaseMode::Exclusive, "c", t + LEASE_TTL + STALE_AFTER).unwrap();
        assert_eq!(gc.stale().len(), 1);
    }

    /// The holder refuses to commit once its last renewal is older than the TTL, and
    /// may commit again after a renewal.
    #[test]
    fn a_holder_whose_renewals_fail_stops_before_committing() {
        let (_d, s) = store();
        let t = 1_000_000;
        let l = take(&s, LeaseMode::Shared, "a", t).unwrap();
        l.check_at(t + LEASE_TTL).unwrap();
        let e = l.check_at(t + LEASE_TTL + 1).unwrap_err();
        assert!(matches!(e, Error::LeaseExpired { .. }), "{e}");
        assert!(e.to_string().contains(&utc(t)), "{e}");
        l.refresh_at(t + LEASE_TTL + 1).unwrap();
        l.check_at(t + LEASE_TTL + 2).unwrap();
        let stored = LeaseRecord::decode(&s.get(Key::Lease(l.id)).unwrap(), "x").unwrap();
        assert_eq!(stored.expires, t + 2 * LEASE_TTL + 1);
        assert_eq!(stored.created, t);
    }

    /// An unreadable lease is not ignored: someone may hold it.
    #[test]
    fn an_unreadable_lease_blocks() {
        let (_d, s) = store();
        s.put(Key::Lease(LeaseId::random()), b"garbage").unwrap();
        let e = take(&s, LeaseMode::Shared, "a", 1).unwrap_err();
        assert!(e.to_string().contains("cannot be read"), "{e}");
        assert_eq!(leases(&s), 1);
    }

    #[test]
    fn utc_renders_civil_time() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_547_723), "2026-12-06 09:02:03 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
