//! Two hosts sharing one repository: each host is its own cache dir (`XDG_CACHE_HOME`:
//! index, locks, scratch), the repository one store they both reach. The test build's
//! `JELLYSNAP_TEST_SHARED=1` makes a local directory stand in for a store hosts share
//! (leases instead of the flocks alone, two-phase gc, an index in the cache that
//! reconciles with the store), so these run without an object-store server. The leases
//! themselves are also taken by two hosts on one bucket of a real S3-compatible server.

mod common;

use common::env::{assert_exit, wait_until, Cmd, Env};
use common::verify::{assert_same, describe, State};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Child;

const T: i64 = 1_900_000_000;
const GRACE: i64 = 3600;

/// A host: its own cache dir, the shared repository (`s3` for one in a bucket, else the
/// local directory standing in for a shared store).
struct Host<'e> {
    env: &'e Env,
    cache: PathBuf,
    s3: Option<String>,
}

impl<'e> Host<'e> {
    fn new(env: &'e Env, name: &str) -> Self {
        Host {
            env,
            cache: env.root.join(format!("cache-{name}")),
            s3: None,
        }
    }

    fn on_s3(env: &'e Env, name: &str, location: &str) -> Self {
        Host {
            s3: Some(location.to_string()),
            ..Host::new(env, name)
        }
    }

    /// The binary on this host at time `now`.
    fn cmd(&self, now: i64, args: &[&str]) -> Cmd {
        let c = match &self.s3 {
            Some(loc) => {
                let mut c = Cmd::new(&["--repo", loc]).args(args);
                for (k, v) in common::s3::shared().env() {
                    c = c.env(k, v);
                }
                c
            }
            None => self.env.cmd(args).env("JELLYSNAP_TEST_SHARED", "1"),
        };
        c.env("XDG_CACHE_HOME", &self.cache).clock_at(now)
    }

    fn json(&self, now: i64, args: &[&str], code: i32) -> Value {
        self.cmd(now, args).json(code)
    }

    fn backup(&self, now: i64, data: &std::path::Path, extra: &[&str]) -> Value {
        let mut a = vec!["backup", "--init", "--data-dir", data.to_str().unwrap()];
        a.extend_from_slice(extra);
        let b = self.cmd(now, &a).json(0);
        assert!(b["snapshot"]["summary"]["errors"]
            .as_array()
            .is_some_and(|e| e.is_empty()));
        b
    }

    fn restore(&self, now: i64, snap: &str, name: &str) -> State {
        let target = self.env.root.join(name);
        self.cmd(
            now,
            &["restore", snap, "--target", target.to_str().unwrap()],
        )
        .json(0);
        describe(&target, &[])
    }

    fn gc(&self, now: i64) -> Value {
        self.cmd(now, &["gc", "--max-unused", "0"]).json(0)
    }
}

/// Every pack, data packs (`packs/`) and tree packs (`trees/`).
fn pack_set(env: &Env) -> BTreeSet<PathBuf> {
    ["packs", "trees"]
        .iter()
        .filter_map(|top| fs::read_dir(env.repo.join(top)).ok())
        .flatten()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect()
}

fn leases(env: &Env) -> usize {
    fs::read_dir(env.repo.join("leases"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0, &what);
}

/// Host A and host B back up into one repository, each with its own index; B's gc
/// refuses while A holds a lease; gc runs in two phases (mark, then after the grace
/// period delete), and both hosts restore every snapshot byte for byte, A's index
/// reconciling with the packs B's gc deleted.
#[test]
fn two_hosts_back_up_collect_and_restore() {
    let env = Env::new();
    let fx = env.small_fixture();
    let (a, b) = (Host::new(&env, "a"), Host::new(&env, "b"));
    a.backup(T, &fx.data_dir, &["--name", "full"]);
    b.backup(
        T + 60,
        &fx.data_dir,
        &["--name", "meta", "--components", "metadata"],
    );
    for h in [&a, &b] {
        let repos = h.cache.join("jellysnap/repos");
        assert_eq!(fs::read_dir(&repos).unwrap().count(), 1, "{repos:?}");
    }
    assert_eq!(leases(&env), 0, "every lease is released");
    let full = a.restore(T + 70, "full", "full-before");
    let meta = b.restore(T + 70, "meta", "meta-before");

    // A's restore holds a lease: B's gc refuses, naming it, and changes nothing.
    let reader = a
        .cmd(T + 80, &["restore", "full", "--target"])
        .arg(env.root.join("full-during"))
        .pause_at("reader-after-index-open", 4000)
        .quiet()
        .spawn();
    wait_until("A's restore holds its lease", || leases(&env) == 1);
    let packs = pack_set(&env);
    let out = b.cmd(T + 90, &["gc"]).expect(16);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runs `read`") && err.contains("expires"),
        "{err}"
    );
    assert_eq!(pack_set(&env), packs);
    finish(reader, "A's restore");

    // Phase 1: the media of `full` is marked, not deleted.
    a.json(T + 100, &["forget", "full"], 0);
    let g = b.gc(T + 200);
    let marked = g["report"]["packs_marked"].as_u64().unwrap();
    assert!(marked > 0, "{g}");
    assert_eq!(g["report"]["packs_deleted"], 0, "{g}");
    assert_eq!(g["plan"]["two_phase"], true, "{g}");
    assert_eq!(g["plan"]["conditional_writes"], false, "{g}");
    assert_eq!(
        g["report"]["marked_deletable_at"].as_i64(),
        Some(T + 200 + GRACE)
    );
    assert!(env.repo.join("gc-pending").exists());
    let after_mark = pack_set(&env);
    assert!(after_mark.is_superset(&packs), "nothing deleted in phase 1");
    let text = b.cmd(T + 200, &["gc", "--dry-run"]).expect(0);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("become deletable at"), "{text}");
    assert!(
        text.contains("cannot create an object only if it is absent"),
        "{text}"
    );

    // Within the grace period a gc deletes nothing.
    let g = b.gc(T + 300);
    assert_eq!(g["report"]["packs_deleted"], 0, "{g}");
    assert_eq!(pack_set(&env), after_mark);

    // A backup between the phases does not deduplicate against the marked packs: it
    // stores the media again, so that phase 2 can delete every marked pack.
    let between = a.backup(T + 400, &fx.data_dir, &["--name", "between"]);
    assert!(
        between["snapshot"]["summary"]["new_chunks"].as_u64() > Some(0),
        "{between}"
    );

    let between_packs = (pack_set(&env).len() - after_mark.len()) as u64;

    // A lease whose process died two days ago goes with the next gc.
    let stale = format!(
        r#"{{"version":1,"host":"gone","pid":1,"command":"backup","mode":"shared","created":{},"expires":{}}}"#,
        T - 3 * 86400,
        T - 2 * 86400
    );
    fs::write(
        env.repo.join("leases/00112233445566778899aabbccddeeff"),
        stale,
    )
    .unwrap();

    // Phase 2, after the grace period: the marked packs go, a new epoch is written.
    let g = b.gc(T + 200 + GRACE + 1);
    assert_eq!(g["report"]["packs_deleted"].as_u64(), Some(marked), "{g}");
    assert_eq!(g["report"]["marked_kept"], 0, "{g}");
    assert_eq!(g["report"]["stale_leases_removed"], 1, "{g}");
    assert!(!env.repo.join("gc-pending").exists(), "{g}");
    assert!(env.repo.join("pack-epoch").exists());
    let before_delete = after_mark.len() as u64 + between_packs;
    assert_eq!(pack_set(&env).len() as u64, before_delete - marked);
    assert_eq!(leases(&env), 0);

    // Both hosts restore what is left, byte for byte; A's index drops the deleted packs
    // and its next backup stores their chunks again.
    let later = T + 200 + GRACE + 100;
    assert_same(&a.restore(later, "meta", "meta-a"), &meta);
    assert_same(&b.restore(later, "meta", "meta-b"), &meta);
    assert_same(&b.restore(later, "between", "between-b"), &full);
    assert_same(&a.restore(later, "between", "between-a"), &full);
    a.backup(later, &fx.data_dir, &["--name", "again"]);
    assert_same(&b.restore(later + 10, "again", "again-b"), &full);
    assert_same(&a.restore(later + 10, "again", "again-a"), &full);
    a.json(later + 20, &["check", "--read-data"], 0);
}

/// A backup that opened before a gc marked packs deduplicates against them and commits
/// between the two phases (its lease had expired for the gc's host, as when the grace
/// period alone protects it): phase 2 finds its snapshot and keeps the packs it uses.
#[test]
fn phase_two_keeps_marked_packs_a_newer_snapshot_uses() {
    let env = Env::new();
    let fx = env.small_fixture();
    let (a, b) = (Host::new(&env, "a"), Host::new(&env, "b"));
    a.backup(T, &fx.data_dir, &["--name", "full"]);
    a.backup(
        T,
        &fx.data_dir,
        &["--name", "meta", "--components", "metadata"],
    );
    let full = a.restore(T, "full", "full-before");
    a.json(T, &["forget", "full"], 0);
    // B's index is built now, while every pack is there.
    b.json(T, &["snapshots"], 0);

    let late = a
        .cmd(T + 10, &["backup", "--data-dir"])
        .arg(&fx.data_dir)
        .args(&["--name", "late"])
        .pause_at("backup-before-commit", 8000)
        .quiet()
        .spawn();
    wait_until("A's backup holds its lease", || leases(&env) == 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // B's clock is past A's lease's expiry and clock-skew margin: it is ignored.
    let g = b.gc(T + 3600);
    let marked = g["report"]["packs_marked"].as_u64().unwrap();
    assert!(
        marked > 0,
        "the media packs are dead until `late` commits: {g}"
    );
    finish(late, "A's backup");
    assert!(env.repo.join("snapshots").read_dir().unwrap().count() == 2);

    let g = b.gc(T + 3600 + GRACE + 1);
    assert!(g["report"]["marked_kept"].as_u64().unwrap() > 0, "{g}");
    assert_same(&b.restore(T + 3600 + GRACE + 2, "late", "late-b"), &full);
    assert_same(&a.restore(T + 3600 + GRACE + 2, "late", "late-a"), &full);
    b.json(T + 3600 + GRACE + 3, &["check", "--read-data"], 0);
}

/// Two hosts' stores on one bucket of a real S3-compatible server (SeaweedFS, which has
/// conditional writes): an exclusive lease excludes and is excluded by the other host's,
/// shared leases coexist, an expired one is ignored, and a refused request leaves
/// nothing behind.
#[test]
fn leases_exclude_each_other_on_one_bucket() {
    use jellysnap::leases::{Holder, Lease, LeaseMode, CLOCK_SKEW, LEASE_TTL};
    use jellysnap::s3::S3Store;
    use jellysnap::stores::{Kind, Store};
    use std::sync::Arc;

    let server = common::s3::shared();
    let bucket = server.new_bucket();
    // Each host has its own store (its own client) on the bucket.
    let host =
        || -> Arc<dyn Store> { Arc::new(S3Store::new(&server.config(&bucket, "repo")).unwrap()) };
    let (a, b) = (host(), host());
    assert!(
        a.conditional_writes(),
        "SeaweedFS answers 412 to a second create"
    );
    let take = |store: &Arc<dyn Store>, mode, name: &str, now| {
        Lease::acquire_at(
            store.clone(),
            PathBuf::from(server.location(&bucket, "repo")),
            mode,
            &Holder {
                host: name.into(),
                pid: 1,
                command: if mode == LeaseMode::Exclusive {
                    "gc"
                } else {
                    "backup"
                }
                .into(),
            },
            now,
        )
    };
    let leases = || a.list(Kind::Lease).unwrap().len();

    let backup = take(&a, LeaseMode::Shared, "host-a", T).unwrap();
    let gc = take(&b, LeaseMode::Exclusive, "host-b", T + 5).unwrap_err();
    assert!(gc.to_string().contains("\"host-a\""), "{gc}");
    assert_eq!(leases(), 1, "the refused lease was deleted");
    let other_backup = take(&b, LeaseMode::Shared, "host-b", T + 5).unwrap();
    assert_eq!(leases(), 2);
    drop((backup, other_backup));
    assert_eq!(leases(), 0);

    let gc = take(&b, LeaseMode::Exclusive, "host-b", T).unwrap();
    assert!(take(&a, LeaseMode::Shared, "host-a", T + 60).is_err());
    // host-b's gc died: its lease is ignored once expired beyond the skew margin.
    std::mem::forget(gc);
    take(&a, LeaseMode::Shared, "host-a", T + LEASE_TTL + CLOCK_SKEW).unwrap();
}

/// Two hosts against one bucket of a real S3-compatible server, through the binary:
/// both back up, B's gc refuses while A holds a lease, gc marks and, after the grace
/// period, deletes across both hosts' indexes, and both restore byte for byte.
#[test]
fn two_hosts_share_one_bucket() {
    let server = common::s3::shared();
    let bucket = server.new_bucket();
    let location = server.location(&bucket, "repo");
    let env = Env::new();
    let fx = env.small_fixture();
    let (a, b) = (
        Host::on_s3(&env, "a", &location),
        Host::on_s3(&env, "b", &location),
    );
    a.backup(T, &fx.data_dir, &["--name", "full"]);
    b.backup(
        T + 60,
        &fx.data_dir,
        &["--name", "meta", "--components", "metadata"],
    );
    let full = a.restore(T + 70, "full", "full-before");
    let meta = b.restore(T + 70, "meta", "meta-before");

    let reader = a
        .cmd(T + 80, &["restore", "full", "--target"])
        .arg(env.root.join("full-during"))
        .pause_at("reader-after-index-open", 4000)
        .quiet()
        .spawn();
    let store = jellysnap::s3::S3Store::new(&server.config(&bucket, "repo")).unwrap();
    wait_until("A's restore holds its lease", || {
        use jellysnap::stores::{Kind, Store};
        !store.list(Kind::Lease).unwrap().is_empty()
    });
    let out = b.cmd(T + 90, &["gc"]).expect(16);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runs `read`"), "{err}");
    finish(reader, "A's restore");

    a.json(T + 100, &["forget", "full"], 0);
    let g = b.gc(T + 200);
    let marked = g["report"]["packs_marked"].as_u64().unwrap();
    assert!(marked > 0, "{g}");
    assert_eq!(g["report"]["packs_deleted"], 0, "{g}");
    assert_eq!(g["plan"]["conditional_writes"], true, "{g}");
    let between = a.backup(T + 300, &fx.data_dir, &["--name", "between"]);
    assert!(
        between["snapshot"]["summary"]["new_chunks"].as_u64() > Some(0),
        "{between}"
    );
    let g = a.gc(T + 200 + GRACE + 1);
    assert_eq!(g["report"]["packs_deleted"].as_u64(), Some(marked), "{g}");
    assert_eq!(g["report"]["marked_kept"], 0, "{g}");

    let later = T + 200 + GRACE + 100;
    for (h, n) in [(&a, "a"), (&b, "b")] {
        assert_same(&h.restore(later, "meta", &format!("meta-{n}")), &meta);
        assert_same(&h.restore(later, "between", &format!("between-{n}")), &full);
    }
    b.json(later, &["check", "--read-data"], 0);
}
