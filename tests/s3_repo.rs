//! A repository in a bucket of a real S3-compatible server (SeaweedFS `weed mini` on
//! loopback, tests/common/s3.rs), driven through the binary with `--repo s3:...` and
//! credentials in the environment: every command, the local cache lost, and what an
//! unchanged backup costs in requests (counted by the loopback proxy).

mod common;

use std::fs;
use std::path::PathBuf;

use common::env::{s, Cmd, Env};
use common::faultproxy::FaultProxy;
use common::verify::{assert_same, describe, expected_state};
use serde_json::Value;

/// One repository in its own bucket, reached directly or through a counting proxy, with
/// its own cache dir.
struct Bucket {
    env: Env,
    location: String,
    cache: PathBuf,
    proxy: Option<FaultProxy>,
}

impl Bucket {
    fn new(through_proxy: bool) -> Bucket {
        let server = common::s3::shared();
        let bucket = server.new_bucket();
        let env = Env::new();
        let (location, proxy) = if through_proxy {
            let upstream = server
                .endpoint()
                .trim_start_matches("http://")
                .parse()
                .unwrap();
            let proxy = FaultProxy::start(upstream, &format!("{bucket}/repo"));
            (format!("s3:{}/{bucket}/repo", proxy.url()), Some(proxy))
        } else {
            (server.location(&bucket, "repo"), None)
        };
        Bucket {
            cache: env.root.join("cache"),
            env,
            location,
            proxy,
        }
    }

    fn cmd(&self, args: &[&str]) -> Cmd {
        let mut c = Cmd::new(&["--repo", &self.location]).args(args);
        for (k, v) in common::s3::shared().env() {
            c = c.env(k, v);
        }
        c.env("XDG_CACHE_HOME", &self.cache)
    }

    #[track_caller]
    fn json(&self, args: &[&str], code: i32) -> Value {
        self.cmd(args).json(code)
    }

    fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().unwrap()
    }
}

#[test]
fn every_command_works_on_a_bucket() {
    let b = Bucket::new(false);
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let init = b.json(&["init"], 0);
    assert_eq!(init["repository"], b.location.as_str(), "{init}");
    let first = b.json(&["backup", "--data-dir", data, "--name", "before"], 0);
    let before = expected_state(&fx);
    // A change, then a second snapshot.
    let poster = fs::read_dir(&fx.metadata_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(
        poster.join("added.txt"),
        b"a file added after the first snapshot",
    )
    .unwrap();
    b.json(&["backup", "--data-dir", data, "--name", "after"], 0);
    let after = expected_state(&fx);

    let snaps = b.json(&["snapshots"], 0);
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    let ls = b.cmd(&["ls", "before"]).expect(0);
    assert!(s(&ls.stdout).contains("data"), "{}", s(&ls.stdout));
    let diff = b.cmd(&["diff", "before", "after"]).expect(0);
    assert!(s(&diff.stdout).contains("added.txt"), "{}", s(&diff.stdout));
    let stats = b.json(&["stats"], 0);
    assert!(stats.is_object(), "{stats}");

    for (snap, expected) in [("before", &before), ("after", &after)] {
        let target = b.env.root.join(format!("restored-{snap}"));
        b.json(&["restore", snap, "--target", target.to_str().unwrap()], 0);
        assert_same(&describe(&target, &[]), expected);
    }
    b.json(&["check", "--read-data"], 0);
    b.json(&["forget", "before"], 0);
    b.json(&["gc"], 0);
    b.json(&["repair", "index"], 0);
    b.json(&["check", "--read-data"], 0);
    let target = b.env.root.join("restored-after-gc");
    b.json(
        &["restore", "after", "--target", target.to_str().unwrap()],
        0,
    );
    assert_same(&describe(&target, &[]), &after);
    assert!(first["id"].is_string(), "{first}");
}

/// The cache holds only what the bucket can give again: deleting it costs one index
/// rebuild from the packs' trailers, never data.
#[test]
fn a_deleted_cache_costs_a_rebuild_never_data() {
    let b = Bucket::new(false);
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    b.json(&["backup", "--init", "--data-dir", data], 0);
    let expected = expected_state(&fx);
    assert!(
        b.cache.join("jellysnap/repos").is_dir(),
        "the state lives in the cache"
    );
    fs::remove_dir_all(&b.cache).unwrap();
    let target = b.env.root.join("restored");
    let out = b
        .cmd(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert!(
        s(&out.stderr).contains("rebuilt it from"),
        "{}",
        s(&out.stderr)
    );
    assert_same(&describe(&target, &[]), &expected);
    // And a backup from the rebuilt cache deduplicates against what is stored (only the
    // new snapshot's root trees are new).
    let again = b.json(&["backup", "--data-dir", data], 0);
    let added = again["snapshot"]["summary"]["new_raw_bytes"]
        .as_u64()
        .unwrap();
    assert!(added < 4096, "{again}");
}

/// An unchanged backup costs a handful of requests whatever the data dir holds, and a
/// backup never lists the packs.
#[test]
fn an_unchanged_backup_makes_few_requests_and_lists_no_packs() {
    let b = Bucket::new(true);
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    b.json(&["backup", "--init", "--data-dir", data], 0);
    b.json(&["backup", "--data-dir", data], 0);
    b.proxy().reset_counters();
    b.json(&["backup", "--data-dir", data], 0);
    let log = b.proxy().log();
    let summary: Vec<String> = log
        .iter()
        .map(|e| {
            format!(
                "{} {}{}",
                e.method,
                e.key,
                if e.is_listing() { " (list)" } else { "" }
            )
        })
        .collect();
    assert!(log.len() <= 20, "{} requests: {summary:#?}", log.len());
    assert!(
        !log.iter()
            .any(|e| e.is_listing() && e.key.starts_with("packs")),
        "a backup listed the packs: {summary:#?}"
    );
    assert!(
        !log.iter()
            .any(|e| e.method == "PUT" && e.key.starts_with("packs")),
        "an unchanged backup uploaded a pack: {summary:#?}"
    );
}

/// A host with no cache (a new machine, a deleted cache) fetches the trees of a snapshot
/// a pack at a time, not one request per directory.
#[test]
fn a_host_without_a_cache_fetches_trees_by_the_pack() {
    let b = Bucket::new(true);
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let snap = b.json(&["backup", "--init", "--data-dir", data], 0);
    let dirs = snap["snapshot"]["summary"]["dirs"].as_u64().unwrap();
    assert!(dirs > 60, "{snap}");
    fs::remove_dir_all(&b.cache).unwrap();
    b.proxy().reset_counters();
    let target = b.env.root.join("restored");
    b.json(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        0,
    );
    let requests = b.proxy().log().len() as u64;
    assert!(
        requests < dirs / 2,
        "{requests} requests to restore {dirs} directories"
    );
    assert_same(&describe(&target, &[]), &expected_state(&fx));
}

/// `gc --grace 0` (a bucket no other machine uses): one gc marks, the next deletes; the
/// default grace keeps the marked packs an hour; a malformed grace is a usage error.
#[test]
fn gc_with_no_grace_deletes_what_the_previous_gc_marked() {
    let b = Bucket::new(false);
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    b.json(
        &["backup", "--init", "--data-dir", data, "--name", "old"],
        0,
    );
    common::fixture::day_of_changes(&fx, 7).unwrap();
    b.json(&["backup", "--data-dir", data, "--name", "new"], 0);
    let new = expected_state(&fx);
    b.json(&["forget", "old"], 0);
    let first = b.json(&["gc"], 0);
    assert!(
        first["report"]["packs_marked"].as_u64().unwrap() > 0,
        "{first}"
    );
    let waiting = b.json(&["gc"], 0);
    assert_eq!(waiting["report"]["packs_deleted"], 0, "{waiting}");
    b.cmd(&["gc", "--grace", "soon"]).expect(2);
    let done = b.json(&["gc", "--grace", "0"], 0);
    assert!(
        done["report"]["packs_deleted"].as_u64().unwrap() > 0,
        "{done}"
    );
    b.json(&["check", "--read-data"], 0);
    let target = b.env.root.join("restored");
    b.json(&["restore", "new", "--target", target.to_str().unwrap()], 0);
    assert_same(&describe(&target, &[]), &new);
}

/// The bundled sample's database after the system `sqlite3` ran ANALYZE on it (the
/// `sqlite_stat1` rows Jellyfin's own optimize step leaves), backed up into a bucket and
/// copied back to a local repository: both restores `.dump` exactly as the original.
#[test]
fn a_database_analyzed_by_the_system_sqlite3_comes_back_from_a_bucket_exactly() {
    let b = Bucket::new(false);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = b.env.root.join("sample");
    let cp = std::process::Command::new("cp")
        .args(["-a"])
        .arg(root.join("fixtures/sample"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(cp.success());
    let db = src.join("data/jellyfin.db");
    common::sqlcli::sqlite3(&db, "ANALYZE;");
    assert_ne!(
        common::sqlcli::sqlite3(&db, "SELECT count(*) FROM sqlite_stat1;").trim(),
        "0"
    );
    let original = common::sqlcli::dump_of(&db);
    b.json(
        &["backup", "--init", "--data-dir", src.to_str().unwrap()],
        0,
    );
    let direct = b.env.root.join("from-bucket");
    b.json(
        &["restore", "latest", "--target", direct.to_str().unwrap()],
        0,
    );
    let local = b.env.root.join("local-copy");
    b.json(&["copy", "--to", local.to_str().unwrap(), "--init"], 0);
    let via_copy = b.env.root.join("from-copy");
    Cmd::new(&["--repo", local.to_str().unwrap()])
        .args(&["restore", "latest", "--target", via_copy.to_str().unwrap()])
        .expect(0);
    for restored in [&direct, &via_copy] {
        assert_eq!(
            common::sqlcli::dump_of(&restored.join("data/jellyfin.db")),
            original,
            "{}",
            restored.display()
        );
    }
}
