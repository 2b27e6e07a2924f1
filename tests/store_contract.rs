//! The store contract, checked on every store: the same checks run against a local
//! directory, the in-memory store and an S3 store on a real S3-compatible server
//! (SeaweedFS `weed mini` on loopback, see `common/s3.rs`), and the S3 client's typed
//! errors (wrong secret, nothing listening, no such bucket).

mod common;

use std::time::Duration;

use common::s3::{self, SECRET_KEY};
use jellysnap::s3::{Client, PutMode, Retry};
use jellysnap::{Error, RemoteErrorKind};

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
    for e in [
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
