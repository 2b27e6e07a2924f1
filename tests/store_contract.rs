//! The store contract, checked on every store: the same checks run against a local
//! directory, the in-memory store and an S3 store on a real S3-compatible server
//! (SeaweedFS `weed mini` on loopback, see `common/s3.rs`), and the S3 client's typed
//! errors (wrong secret, nothing listening, no such bucket).

mod common;

use std::path::Path;
use std::time::Duration;

use common::s3::{self, SECRET_KEY};
use jellysnap::s3::{Client, PutMode, Retry, S3Store};
use jellysnap::stores::{Key, Kind, LeaseId, LocalStore, MemStore, Store};
use jellysnap::{Error, PackId, RemoteErrorKind, SnapshotId};

/// Bytes that differ at every offset, so a read of the wrong range shows.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn sorted(mut v: Vec<(Key, u64)>) -> Vec<(Key, u64)> {
    v.sort_by_key(|(k, _)| format!("{k:?}"));
    v
}

#[track_caller]
fn assert_missing(r: Result<impl std::fmt::Debug, Error>, what: &str) {
    match r {
        Err(e) => assert!(
            e.is_not_found() && !e.is_refusal(),
            "{what}: not a missing object: {e:?}"
        ),
        Ok(v) => panic!("{what}: read a missing object: {v:?}"),
    }
}

/// The contract every store keeps (see `Store`), on an empty store; `scratch` is where
/// it stages packs.
fn contract(store: &dyn Store, scratch: &Path) {
    store.init().expect("init of an empty store");
    let snap = bytes(3000, 1);
    let s = Key::Snapshot(SnapshotId::of(&snap));
    let pack = bytes(300_000, 2);
    let p = Key::Pack(PackId::of(&pack));
    // A tree pack: its own prefix, so that a listing tells the kinds apart.
    let trees = bytes(5000, 3);
    let t = Key::TreePack(PackId::of(&trees));
    for k in [Key::Config, s, p, t, Key::GcMarker] {
        assert!(!store.exists(k).unwrap(), "{k:?}");
        assert_missing(store.get(k), "get");
        assert_missing(store.size(k), "size");
        assert_missing(store.read_tail(k, 10), "read_tail");
        assert_missing(store.read_at(k, 0, &mut [0u8; 10]), "read_at");
    }
    assert!(store.list(Kind::Snapshot).unwrap().is_empty());
    assert!(store.list(Kind::Pack).unwrap().is_empty());
    assert!(store.list(Kind::TreePack).unwrap().is_empty());
    assert!(store.list(Kind::Lease).unwrap().is_empty());

    store.put(Key::Config, b"config v1").unwrap();
    store.put(s, &snap).unwrap();
    // A pack is staged in pieces, then put whole.
    let mut staged = store.stage(scratch).unwrap();
    for piece in pack.chunks(70_000) {
        staged.write(piece).unwrap();
    }
    assert_eq!(staged.written(), pack.len() as u64);
    store.put_staged(p, staged).unwrap();
    // A staged object dropped without being put leaves nothing.
    let mut dropped = store.stage(scratch).unwrap();
    dropped.write(b"abandoned").unwrap();
    drop(dropped);

    assert_eq!(store.get(Key::Config).unwrap(), b"config v1");
    assert_eq!(store.get(s).unwrap(), snap);
    assert_eq!(store.get(p).unwrap(), pack);
    assert_eq!(store.size(p).unwrap(), pack.len() as u64);
    assert!(store.exists(p).unwrap() && store.exists(s).unwrap());
    for (off, len) in [(0, 1), (0, 4096), (123_457, 65_536), (299_999, 1), (10, 0)] {
        let mut buf = vec![0u8; len];
        store.read_at(p, off as u64, &mut buf).unwrap();
        assert_eq!(buf, pack[off..off + len], "read_at({off}, {len})");
    }
    let (tail, total) = store.read_tail(p, 4096).unwrap();
    assert_eq!(
        (tail.as_slice(), total),
        (&pack[pack.len() - 4096..], 300_000)
    );
    let (tail, total) = store.read_tail(s, 1 << 20).unwrap();
    assert_eq!(
        (tail, total),
        (snap.clone(), 3000),
        "a tail longer than the object"
    );
    // Past the end: what damage looks like, never a refusal or a missing object.
    let e = store.read_at(p, 299_990, &mut [0u8; 20]).unwrap_err();
    assert!(!e.is_refusal() && !e.is_not_found(), "{e:?}");

    assert_eq!(store.list(Kind::Snapshot).unwrap(), vec![(s, 3000)]);
    assert_eq!(store.list(Kind::Pack).unwrap(), vec![(p, 300_000)]);
    assert!(store.list(Kind::TreePack).unwrap().is_empty());
    let mut staged = store.stage(scratch).unwrap();
    staged.write(&trees).unwrap();
    store.put_staged(t, staged).unwrap();
    assert_eq!(store.list(Kind::TreePack).unwrap(), vec![(t, 5000)]);
    assert_eq!(store.list(Kind::Pack).unwrap(), vec![(p, 300_000)]);
    assert_eq!(store.get(t).unwrap(), trees);
    assert!(!store.exists(Key::Pack(PackId::of(&trees))).unwrap());
    assert!(
        store.describe(t).contains("trees/"),
        "{}",
        store.describe(t)
    );
    // Written again (a content-addressed object), it is the same object.
    store.put(t, &trees).unwrap();
    assert_eq!(store.list(Kind::TreePack).unwrap(), vec![(t, 5000)]);

    // An empty object has a size and a tail.
    store.put(Key::GcMarker, b"").unwrap();
    assert_eq!(store.size(Key::GcMarker).unwrap(), 0);
    assert_eq!(store.get(Key::GcMarker).unwrap(), b"");
    assert_eq!(store.read_tail(Key::GcMarker, 16).unwrap(), (vec![], 0));

    // Overwrite (the config and the marker are written more than once).
    store.put(Key::GcMarker, b"one").unwrap();
    store.put(Key::GcMarker, b"two, longer").unwrap();
    assert_eq!(store.get(Key::GcMarker).unwrap(), b"two, longer");
    // A content-addressed object put again is still there, same bytes.
    store.put(s, &snap).unwrap();
    assert_eq!(store.get(s).unwrap(), snap);

    // Create-only writes.
    let lease = Key::Lease(LeaseId::random());
    assert!(store.put_new(lease, b"host a").unwrap());
    assert!(!store.put_new(lease, b"host b").unwrap());
    assert_eq!(store.get(lease).unwrap(), b"host a");
    assert_eq!(store.list(Kind::Lease).unwrap(), vec![(lease, 6)]);

    // Not empty any more.
    assert!(matches!(store.init(), Err(Error::InitNotEmpty(_))));

    // Deletes, an absent object's included.
    store.delete(p).unwrap();
    store.delete(p).unwrap();
    store.delete(t).unwrap();
    store.delete(lease).unwrap();
    assert!(!store.exists(p).unwrap());
    assert_missing(store.get(p), "get after delete");
    assert_missing(store.size(p), "size after delete");
    // (Not `read_at` after a delete: a local store reads on through the pack file its
    // thread still holds open, which is not an error: those bytes are the pack's.)
    assert!(store.list(Kind::Pack).unwrap().is_empty());
    assert!(store.list(Kind::TreePack).unwrap().is_empty());
    assert!(store.list(Kind::Lease).unwrap().is_empty());
    assert_eq!(sorted(store.list(Kind::Snapshot).unwrap()), vec![(s, 3000)]);
    assert!(store.describe(p).contains(&PackId::of(&pack).to_hex()));
    assert_eq!(store.remove_leftovers().unwrap(), 0);
    store.sync_visible().unwrap();
}

/// A listing longer than an object store's page (1000 keys).
fn long_listing(store: &dyn Store) {
    const N: u32 = 1100;
    let keys: Vec<(Key, Vec<u8>)> = (0..N)
        .map(|i| {
            let b = i.to_le_bytes().repeat(1 + (i % 5) as usize);
            (Key::Snapshot(SnapshotId::of(&b)), b)
        })
        .collect();
    std::thread::scope(|t| {
        for part in keys.chunks(keys.len() / 8 + 1) {
            t.spawn(move || {
                for (k, b) in part {
                    store.put(*k, b).unwrap();
                }
            });
        }
    });
    let mut want: Vec<(Key, u64)> = keys.iter().map(|(k, b)| (*k, b.len() as u64)).collect();
    want = sorted(want);
    assert_eq!(sorted(store.list(Kind::Snapshot).unwrap()), want);
}

fn local() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(&dir.path().join("repo"));
    (dir, store)
}

fn on_s3() -> S3Store {
    let server = s3::shared();
    let bucket = server.new_bucket();
    S3Store::new(&server.config(&bucket, "repo/a")).unwrap()
}

#[test]
fn a_local_store_keeps_the_contract() {
    let (dir, store) = local();
    contract(&store, &dir.path().join("repo/tmp"));
}

#[test]
fn the_memory_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&MemStore::new(), dir.path());
}

#[test]
fn an_s3_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = on_s3();
    contract(&store, dir.path());
    assert!(
        store.conditional_writes(),
        "SeaweedFS honours If-None-Match"
    );
    // Nothing staged is left in the scratch directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn long_listings_are_complete_on_every_store() {
    let (_dir, store) = local();
    store.init().unwrap();
    long_listing(&store);
    long_listing(&MemStore::new());
    long_listing(&on_s3());
}

#[test]
fn an_s3_store_names_objects_by_their_url_under_the_prefix() {
    let server = s3::shared();
    let bucket = server.new_bucket();
    let store = S3Store::new(&server.config(&bucket, "x/y")).unwrap();
    let id = PackId::of(b"p");
    let hex = id.to_hex();
    assert_eq!(store.location(), server.location(&bucket, "x/y"));
    assert_eq!(
        store.describe(Key::Pack(id)),
        format!(
            "{}/packs/{}/{hex}",
            server.location(&bucket, "x/y"),
            &hex[..2]
        )
    );
    store.put(Key::Pack(id), b"p").unwrap();
    store.put(Key::Config, b"c").unwrap();
    // The same layout as a local repository, under the prefix.
    let client = Client::new(&server.config(&bucket, "")).unwrap();
    let mut names: Vec<String> = client
        .list("")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "x/y/config".to_string(),
            format!("x/y/packs/{}/{hex}", &hex[..2])
        ]
    );
}

#[test]
fn an_s3_store_with_a_wrong_secret_says_denied_and_never_absent() {
    let server = s3::shared();
    let bucket = server.new_bucket();
    let mut config = server.config(&bucket, "r");
    config.credentials.secret_key = "wrong-secret-abcdef".into();
    let store = S3Store::new(&config).unwrap();
    for e in [
        store.exists(Key::Config).unwrap_err(),
        store.list(Kind::Snapshot).unwrap_err(),
        store.init().unwrap_err(),
    ] {
        assert_eq!(kind(&e), RemoteErrorKind::Denied, "{e}");
        assert!(e.is_refusal() && !e.is_not_found());
        assert!(!e.to_string().contains("wrong-secret"), "{e}");
    }
}

fn kind(e: &Error) -> RemoteErrorKind {
    match e {
        Error::Remote { kind, .. } => *kind,
        other => panic!("not a remote error: {other:?}"),
    }
}

#[test]
fn the_client_writes_reads_lists_and_deletes() {
    let server = s3::shared();
    let bucket = server.new_bucket();
    let c = Client::new(&server.config(&bucket, "repo/one")).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert!(c.put("packs/ab/ab01", &data, PutMode::Overwrite).unwrap());
    assert_eq!(c.get("packs/ab/ab01").unwrap(), data);
    assert_eq!(c.head("packs/ab/ab01").unwrap(), data.len() as u64);

    let mut buf = vec![0u8; 1000];
    c.get_range("packs/ab/ab01", 5000, &mut buf).unwrap();
    assert_eq!(buf, data[5000..6000]);
    let (tail, total) = c.get_tail("packs/ab/ab01", 300).unwrap();
    assert_eq!(
        (tail.as_slice(), total),
        (&data[data.len() - 300..], 100_000)
    );
    // A tail longer than the object is the whole object.
    let (tail, total) = c.get_tail("packs/ab/ab01", 1 << 20).unwrap();
    assert_eq!((tail, total), (data.clone(), 100_000));

    // Past the end: the object is shorter than what its reader expects.
    let e = c.get_range("packs/ab/ab01", 99_990, &mut buf).unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::Corrupt, "{e}");

    // Create-only writes: the second one finds the object there.
    assert!(c.put("locks/x", b"one", PutMode::IfAbsent).unwrap());
    assert!(!c.put("locks/x", b"two", PutMode::IfAbsent).unwrap());
    assert_eq!(c.get("locks/x").unwrap(), b"one");

    // From a file, streamed.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("staged");
    std::fs::write(&f, &data[..77_777]).unwrap();
    assert!(c.put_file("snapshots/s1", &f, PutMode::Overwrite).unwrap());
    assert_eq!(c.get("snapshots/s1").unwrap(), data[..77_777]);

    let mut listed = c.list("").unwrap();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("locks/x".to_string(), 3),
            ("packs/ab/ab01".to_string(), 100_000),
            ("snapshots/s1".to_string(), 77_777),
        ]
    );
    assert_eq!(c.list("packs/").unwrap().len(), 1);

    c.delete("packs/ab/ab01").unwrap();
    c.delete("packs/ab/ab01").unwrap();
    let e = c.get("packs/ab/ab01").unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::NotFound, "{e}");
    assert!(e.is_not_found() && !e.is_refusal());
    assert!(e.to_string().contains("repo/one/packs/ab/ab01"), "{e}");
    let e = c.head("packs/ab/ab01").unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn a_wrong_secret_is_denied_naming_the_object_and_not_the_secret() {
    let server = s3::shared();
    let bucket = server.new_bucket();
    let mut config = server.config(&bucket, "p");
    config.credentials.secret_key = "not-the-secret-0123456789".into();
    let c = Client::new(&config).unwrap();
    for e in [
        c.get("config").unwrap_err(),
        c.put("config", b"x", PutMode::Overwrite).unwrap_err(),
        c.list("snapshots/").unwrap_err(),
    ] {
        assert_eq!(kind(&e), RemoteErrorKind::Denied, "{e}");
        assert!(e.is_refusal());
        let msg = e.to_string();
        assert!(msg.contains(&format!("{bucket}/p/")), "{msg}");
        assert!(msg.contains("check the credentials"), "{msg}");
        assert!(
            !msg.contains("not-the-secret") && !msg.contains(SECRET_KEY),
            "{msg}"
        );
        assert!(
            matches!(
                e,
                Error::Remote {
                    status: Some(403),
                    ..
                }
            ),
            "{msg}"
        );
    }
}

#[test]
fn nothing_listening_is_transient_after_the_retries() {
    let server = s3::shared();
    let mut config = server.config("b", "p");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.endpoint = format!("http://127.0.0.1:{port}");
    config.retry = Retry {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        ..config.retry
    };
    let c = Client::new(&config).unwrap();
    let e = c.get("config").unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::Transient, "{e}");
    assert!(e.is_refusal() && !e.is_not_found());
    let msg = e.to_string();
    assert!(msg.contains("after 3 attempts"), "{msg}");
    assert!(msg.contains("check the network"), "{msg}");
}

#[test]
fn a_missing_bucket_is_a_clear_refusal_not_a_missing_object() {
    let server = s3::shared();
    let c = Client::new(&server.config("no-such-bucket-here", "p")).unwrap();
    let store = S3Store::new(&server.config("no-such-bucket-here", "p")).unwrap();
    for e in [
        store.exists(Key::Config).unwrap_err(),
        store.size(Key::Config).unwrap_err(),
        c.get("config").unwrap_err(),
        c.put("config", b"x", PutMode::Overwrite).unwrap_err(),
        c.list("").unwrap_err(),
    ] {
        assert_eq!(kind(&e), RemoteErrorKind::Denied, "{e}");
        assert!(!e.is_not_found());
        assert!(
            e.to_string()
                .contains("bucket `no-such-bucket-here` does not exist"),
            "{e}"
        );
    }
}

#[test]
fn the_test_server_keeps_its_objects_across_a_kill_and_a_restart() {
    let mut server = s3::S3Server::start();
    server.create_bucket("bkt");
    let store = S3Store::new(&server.config("bkt", "r")).unwrap();
    store.put(Key::Config, b"kept").unwrap();
    let pid = server.pid();
    server.kill9();
    let e = store.get(Key::Config).unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::Transient, "{e}");
    server.restart();
    assert_ne!(server.pid(), pid);
    assert_eq!(store.get(Key::Config).unwrap(), b"kept");
}
