//! A repository in a bucket of a real S3-compatible server (SeaweedFS `weed mini` on
//! loopback, tests/common/s3.rs), driven through the binary with `--repo s3:...` and
//! credentials in the environment: every command, the local cache lost, what an
//! unchanged backup costs in requests (counted by the loopback proxy), what a cold cache
//! costs (counted by the test store), and copies between a format-1 directory and a
//! bucket.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::env::{need_hooks, s, Cmd, Env};
use common::faultproxy::{Fault, FaultProxy, Rule};
use common::verify::{assert_same, describe, expected_state};
use jellysnap::decoders::{scan_records, RawLimits, RepoConfig};
use jellysnap::s3::S3Store;
use jellysnap::stores::{Key, Kind, Store};
use jellysnap::ChunkKind;
use serde_json::Value;

/// One repository in its own bucket, reached directly or through a counting proxy, with
/// its own cache dir.
struct Bucket {
    env: Env,
    bucket: String,
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
            bucket,
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

    /// The repository's store, reached directly.
    fn store(&self) -> S3Store {
        S3Store::new(&common::s3::shared().config(&self.bucket, "repo")).unwrap()
    }
}

/// Requests the test store counted (`JELLYSNAP_COUNT_REQUESTS`) in buckets, by kind.
fn bucket_requests(file: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in fs::read_to_string(file).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 3 && f[0].starts_with("s3:") {
            *out.entry(f[1].to_string()).or_insert(0) += f[2].parse::<u64>().unwrap();
        }
    }
    out
}

#[test]
fn every_command_works_on_a_bucket() {
    let b = Bucket::new(false);
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let init = b.json(&["init"], 0);
    assert_eq!(init["repository"], b.location.as_str(), "{init}");
    let config = b.store().get(Key::Config).unwrap();
    assert_eq!(
        &config[8..12],
        &2u32.to_le_bytes(),
        "a new repository is format 2"
    );
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
    // Through gc and repair, tree packs stay under trees/ and hold trees only, data
    // packs under packs/ and hold data only.
    let store = b.store();
    let limits = RawLimits::of(&RepoConfig::decode(&config, Path::new("config")).unwrap());
    for (kind, holds) in [
        (Kind::TreePack, ChunkKind::Tree),
        (Kind::Pack, ChunkKind::Data),
    ] {
        let packs = store.list(kind).unwrap();
        assert!(!packs.is_empty(), "{kind:?}");
        for (key, _) in packs {
            let (entries, _) = scan_records(&store.get(key).unwrap(), &limits);
            assert!(
                !entries.is_empty() && entries.iter().all(|e| e.kind == holds),
                "{key:?}"
            );
        }
    }
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
            .any(|e| e.is_listing() && (e.key.starts_with("packs") || e.key.starts_with("trees"))),
        "a backup listed the packs: {summary:#?}"
    );
    assert!(
        !log.iter().any(
            |e| e.method == "PUT" && (e.key.starts_with("packs") || e.key.starts_with("trees"))
        ),
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

/// A host whose cache is cold gets the trees from the tree packs, which a listing of
/// `trees/` names apart from the data packs: each fetched whole in one request, no
/// trailer read to find them. With the tree copies lost and the index kept, a restore
/// reads no pack trailer at all; with the whole cache lost, the index rebuild reads the
/// trailers of the data packs only (the tree packs' entries come with their bytes).
#[test]
fn a_cold_cache_fetches_the_tree_packs_it_lists_and_reads_no_trailer_for_them() {
    need_hooks();
    let b = Bucket::new(false);
    b.json(&["init"], 0);
    // Small packs: many data packs whose trailers a cold cache must not read for trees.
    let store = b.store();
    let raw = store.get(Key::Config).unwrap();
    let mut body: Value = serde_json::from_slice(&raw[12..]).unwrap();
    body["pack_target_bytes"] = (64 * 1024).into();
    let mut config = raw[..12].to_vec();
    config.extend_from_slice(body.to_string().as_bytes());
    store.put(Key::Config, &config).unwrap();
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    b.json(&["backup", "--data-dir", data, "--name", "one"], 0);
    common::fixture::day_of_changes(&fx, 2).unwrap();
    b.json(&["backup", "--data-dir", data, "--name", "two"], 0);
    let expected = expected_state(&fx);
    let data_packs = store.list(Kind::Pack).unwrap().len() as u64;
    let tree_packs = store.list(Kind::TreePack).unwrap().len() as u64;
    assert!(
        data_packs > 0 && tree_packs >= 2,
        "{data_packs} {tree_packs}"
    );

    let restore = |name: &str| -> BTreeMap<String, u64> {
        let counts = b.env.root.join(format!("requests-{name}"));
        let target = b.env.root.join(name);
        b.cmd(&[
            "--json",
            "restore",
            "two",
            "--target",
            target.to_str().unwrap(),
        ])
        .env("JELLYSNAP_COUNT_REQUESTS", &counts)
        .expect(0);
        assert_same(&describe(&target, &[]), &expected);
        bucket_requests(&counts)
    };

    // The copies of snapshot records and trees lost, the index kept.
    let repos = b.cache.join("jellysnap/repos");
    let state = fs::read_dir(&repos)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::remove_dir_all(state.join("cache")).unwrap();
    let r = restore("copies-lost");
    eprintln!("{data_packs} data packs, {tree_packs} tree packs; copies lost: {r:?}");
    assert_eq!(r.get("read_tail"), None, "a trailer was read: {r:?}");
    assert!(r["get"] >= tree_packs, "{r:?}");

    // Everything lost: the index is rebuilt from the data packs' trailers and the tree
    // packs' bytes.
    fs::remove_dir_all(&b.cache).unwrap();
    let r = restore("cache-lost");
    eprintln!("cache lost: {r:?}");
    assert_eq!(r.get("read_tail"), Some(&data_packs), "{r:?}");
    assert!(r["get"] >= tree_packs, "{r:?}");

    // The cache warm: no tree pack is fetched again.
    let r = restore("warm");
    eprintln!("warm: {r:?}");
    assert!(r.get("get").copied().unwrap_or(0) < tree_packs + 3, "{r:?}");
    assert_eq!(r.get("read_tail"), None, "{r:?}");
}

/// A bucket made by `copy --init` from a format-1 directory is format 2 (its tree packs
/// under `trees/`), and copies back into a format-1 directory that stays format 1: both
/// restore exactly.
#[test]
fn copies_between_a_format_1_directory_and_a_bucket_restore_exactly() {
    need_hooks();
    let b = Bucket::new(false);
    let v1 = Env::new();
    v1.cmd(&["init"])
        .env("JELLYSNAP_TEST_FORMAT", "1")
        .expect(0);
    let fx = v1.small_fixture();
    v1.backup(&fx, &["--name", "base"]);
    let expected = expected_state(&fx);
    assert!(!v1.repo.join("trees").exists());

    let mut to_bucket = v1.cmd(&["--json", "copy", "--to", &b.location, "--init"]);
    for (k, v) in common::s3::shared().env() {
        to_bucket = to_bucket.env(k, v);
    }
    to_bucket.env("XDG_CACHE_HOME", &b.cache).expect(0);
    let store = b.store();
    let config = store.get(Key::Config).unwrap();
    assert_eq!(&config[8..12], &2u32.to_le_bytes(), "format 2");
    assert!(!store.list(Kind::TreePack).unwrap().is_empty());
    assert!(!store.list(Kind::Pack).unwrap().is_empty());
    b.json(&["check", "--read-data"], 0);
    let target = b.env.root.join("from-bucket");
    b.json(
        &["restore", "base", "--target", target.to_str().unwrap()],
        0,
    );
    assert_same(&describe(&target, &[]), &expected);

    let back = Env::new();
    back.cmd(&["init"])
        .env("JELLYSNAP_TEST_FORMAT", "1")
        .expect(0);
    b.json(&["copy", "--to", back.repo.to_str().unwrap()], 0);
    let raw = fs::read(back.repo.join("config")).unwrap();
    assert_eq!(&raw[8..12], &1u32.to_le_bytes(), "still format 1");
    assert!(!back.repo.join("trees").exists());
    back.json(&["check", "--read-data"], 0);
    back.assert_restores("base", "from-copy", &expected);
}

/// A restore machine often gets a key pair that can only read (so that a compromised
/// machine cannot delete the backups): every command that only reads works with it, from
/// an empty cache, and one that would write is refused as a refusal (403, exit 22), never
/// as damage, leaving the repository as it was.
#[test]
fn a_read_only_key_pair_restores_lists_and_checks() {
    let b = Bucket::new(false);
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    b.json(
        &["backup", "--init", "--name", "one", "--data-dir", data],
        0,
    );
    let expected = expected_state(&fx);
    let before = b.store().list(Kind::Pack).unwrap().len();

    let read_only = |args: &[&str]| {
        let mut c = Cmd::new(&["--repo", &b.location]).args(args);
        for (k, v) in common::s3::shared().read_only_env() {
            c = c.env(k, v);
        }
        c.env("XDG_CACHE_HOME", b.env.root.join("reader-cache"))
    };
    let target = b.env.root.join("restored");
    read_only(&["restore", "one", "--target", target.to_str().unwrap()]).expect(0);
    assert_same(&describe(&target, &[]), &expected);
    for args in [
        vec!["snapshots"],
        vec!["ls", "one"],
        vec!["stats"],
        vec!["check", "--read-data"],
    ] {
        read_only(&args).expect(0);
    }

    common::fixture::day_of_changes(&fx, 7).unwrap();
    let out = read_only(&["backup", "--data-dir", data]).output();
    let err = s(&out.stderr);
    assert_eq!(out.status.code(), Some(22), "{err}");
    assert!(err.contains("403"), "{err}");
    assert!(!err.contains("damage") && !err.contains("corrupt"), "{err}");
    assert_eq!(b.store().list(Kind::Pack).unwrap().len(), before);
    b.json(&["check", "--read-data"], 0);
}

/// A first upload cut off for good after some packs are stored is not sent again: the
/// next backup uploads what was not stored, and at most the pack that was in flight once
/// more (counted in chunks: those in the packs of the second run that packs of the first
/// already held, and packs of the first run uploaded again).
#[test]
fn a_first_upload_cut_off_resends_at_most_one_pack() {
    const PACK: u64 = 64 * 1024;
    let b = Bucket::new(true);
    b.json(&["init"], 0);
    let store = b.store();
    let raw = store.get(Key::Config).unwrap();
    let mut body: Value = serde_json::from_slice(&raw[12..]).unwrap();
    body["pack_target_bytes"] = PACK.into();
    let limits = {
        let mut config = raw[..12].to_vec();
        config.extend_from_slice(body.to_string().as_bytes());
        store.put(Key::Config, &config).unwrap();
        RawLimits::of(&RepoConfig::decode(&config, Path::new("config")).unwrap())
    };
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();

    // The third pack upload is refused for good (403 is not retried): the backup ends.
    let cut = b.proxy().add(
        Rule::new(Fault::access_denied())
            .method("PUT")
            .key_prefix("packs/")
            .nth(3),
    );
    let out = b.cmd(&["backup", "--data-dir", data]).output();
    assert_eq!(out.status.code(), Some(22), "{}", s(&out.stderr));
    assert_eq!(b.proxy().fired(cut), 1);
    b.proxy().clear_rules();
    let first: BTreeMap<String, u64> = store
        .list(Kind::Pack)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (store.describe(k), n))
        .collect();
    assert!(first.len() >= 2, "the cut came after some packs: {first:?}");
    assert!(store.list(Kind::Snapshot).unwrap().is_empty());

    b.proxy().reset_counters();
    b.json(&["backup", "--data-dir", data, "--name", "one"], 0);
    let expected = expected_state(&fx);
    let resent_packs: Vec<String> = b
        .proxy()
        .log()
        .iter()
        .filter(|e| e.method == "PUT" && e.key.starts_with("packs/"))
        .map(|e| e.key.clone())
        .filter(|k| first.keys().any(|f| f.ends_with(k.as_str())))
        .collect();
    assert!(
        resent_packs.is_empty(),
        "stored packs sent again: {resent_packs:?}"
    );
    let chunks_of = |keys: Vec<Key>| -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for k in keys {
            for e in scan_records(&store.get(k).unwrap(), &limits).0 {
                out.insert(e.id.to_string(), e.record_len());
            }
        }
        out
    };
    let all = store.list(Kind::Pack).unwrap();
    let (old, new): (Vec<Key>, Vec<Key>) = all
        .into_iter()
        .map(|(k, _)| k)
        .partition(|k| first.contains_key(&store.describe(*k)));
    let (old, new) = (chunks_of(old), chunks_of(new));
    let again: u64 = new
        .iter()
        .filter(|(id, _)| old.contains_key(*id))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "{} packs stored before the cut; {again} bytes of chunks sent again",
        first.len()
    );
    assert!(
        again <= PACK + limits.data as u64,
        "{again} bytes sent again"
    );
    let target = b.env.root.join("restored");
    b.cmd(&["restore", "one", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same(&describe(&target, &[]), &expected);
}

/// A bucket repository keeps the trailers it has read: a gc (or stats) after another reads
/// no trailer of a pack the first read, and sizes come from the listing (no request per
/// pack). `check` still reads every trailer from the bucket: it checks what is stored.
#[test]
fn trailers_read_once_are_not_read_again_by_gc() {
    need_hooks();
    let b = Bucket::new(false);
    let fx = b.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    b.json(&["backup", "--init", "--data-dir", data], 0);
    common::fixture::day_of_changes(&fx, 4).unwrap();
    b.json(&["backup", "--data-dir", data], 0);
    let packs = (b.store().list(Kind::Pack).unwrap().len()
        + b.store().list(Kind::TreePack).unwrap().len()) as u64;
    let counted = |name: &str, args: &[&str]| {
        let counts = b.env.root.join(format!("requests-{name}"));
        b.cmd(args)
            .env("JELLYSNAP_COUNT_REQUESTS", &counts)
            .expect(0);
        bucket_requests(&counts)
    };
    let first = counted("first", &["gc", "--dry-run"]);
    assert!(
        first.get("read_tail").copied().unwrap_or(0) > 0,
        "{first:?}"
    );
    let again = counted("again", &["gc", "--dry-run"]);
    assert_eq!(again.get("read_tail"), None, "{again:?}");
    assert_eq!(again.get("size"), None, "{again:?}");
    let stats = counted("stats", &["stats"]);
    assert_eq!(stats.get("read_tail"), None, "{stats:?}");
    let check = counted("check", &["check"]);
    assert_eq!(check.get("read_tail"), Some(&packs), "{check:?}");
    assert_eq!(check.get("size"), None, "{check:?}");
}

/// A copy into a bucket of a snapshot edited since an earlier copy leaves one record of
/// it there, the newer one, as an edit made there would: the bucket's older record goes
/// once the new one is written, and its id still finds the snapshot.
#[test]
fn a_copy_of_an_edit_into_a_bucket_replaces_the_older_record_there() {
    let b = Bucket::new(false);
    let env = Env::new();
    let fx = env.small_fixture();
    let first = env.backup(&fx, &["--name", "base"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let copy = |init: bool| {
        let mut args = vec!["copy", "--to", b.location.as_str()];
        if init {
            args.push("--init");
        }
        let mut c = env.cmd(&args);
        for (k, v) in common::s3::shared().env() {
            c = c.env(k, v);
        }
        c.env("XDG_CACHE_HOME", &b.cache).json(0)
    };
    copy(true);
    let edited = env.json(&["tag", "base", "--add", "keep"], 0);
    let now = edited["id"].as_str().unwrap().to_string();
    let c = copy(false);
    assert_eq!(c["superseded_removed"], serde_json::json!([first]), "{c}");
    let records: Vec<String> = b
        .store()
        .list(Kind::Snapshot)
        .unwrap()
        .into_iter()
        .map(|(k, _)| match k {
            Key::Snapshot(id) => id.to_hex(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(records, vec![now.clone()]);
    let there = b.json(&["snapshots"], 0);
    assert_eq!(there[0]["id"], now.as_str());
    assert_eq!(there[0]["tags"], serde_json::json!(["keep"]));
    b.json(&["ls", &first[..8]], 0);
}
