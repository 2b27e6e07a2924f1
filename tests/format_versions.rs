//! Records of a newer format, through the binary: a snapshot whose database dump, root
//! tree or record carries a version above the one this jellysnap reads is refused with
//! exit code 11 and a message saying to upgrade; check lists it as a newer format, not as
//! damage; the other snapshots stay readable.

mod common;

use std::fs;

use common::env::{s, Env};
use jellysnap::{Access, ChunkId, ChunkKind, ChunkRef, ChunkSink, Component, Node, Repository};

/// The dump version this jellysnap writes (the 9th byte of a dump: after `JSSQLDMP`).
const DUMP_VERSION: u8 = 2;

/// The tree at `tree` with the node at `path` replaced by `node`, stored; its id.
fn replace(
    repo: &Repository,
    sink: &ChunkSink,
    tree: &ChunkId,
    path: &[&str],
    node: Node,
) -> ChunkId {
    let mut t = repo.load_tree(tree).unwrap();
    let e = t
        .entries
        .iter_mut()
        .find(|e| e.name == path[0].as_bytes())
        .unwrap();
    e.node = match (&e.node, path.len()) {
        (_, 1) => node,
        (Node::Dir { tree }, _) => Node::Dir {
            tree: replace(repo, sink, tree, &path[1..], node),
        },
        _ => panic!("{} is not a directory", path[0]),
    };
    sink.put(ChunkKind::Tree, &t.encode().unwrap(), true)
        .unwrap()
}

/// Commit a copy of snapshot `one` named `name` whose root tree is `tree`.
fn commit_as(repo: &Repository, name: &str, tree: ChunkId) {
    let mut rec = repo.resolve("one").unwrap().record;
    rec.name = Some(name.into());
    rec.time_ns += 1;
    rec.tree = tree;
    repo.commit_snapshot(&rec).unwrap();
}

/// Snapshot `newer-dump`: `one` with its database's dump marked one version newer.
/// Returns the database's path inside the snapshot (`root/rel`).
fn commit_newer_dump(env: &Env) -> String {
    let repo = Repository::open(&jellysnap::Place::local(&env.repo), Access::Write).unwrap();
    let one = repo.resolve("one").unwrap().record;
    let item = one
        .items
        .iter()
        .find(|i| i.component == Component::Database && i.rel.ends_with("jellyfin.db"))
        .unwrap();
    let mut path: Vec<&str> = vec![&item.root];
    path.extend(item.rel.split('/'));
    let mut node = None;
    let mut t = repo.load_tree(&one.tree).unwrap();
    for (i, part) in path.iter().enumerate() {
        let n = t.find(part.as_bytes()).unwrap().node.clone();
        if i + 1 < path.len() {
            let Node::Dir { tree } = &n else { panic!() };
            t = repo.load_tree(tree).unwrap();
        }
        node = Some(n);
    }
    let node = node.unwrap();
    let mut dump = Vec::new();
    for c in repo.file_chunks(&node).unwrap() {
        dump.extend(repo.read_chunk_vec(&c.id).unwrap());
    }
    assert_eq!(
        &dump[..9],
        b"JSSQLDMP\x02",
        "a logical capture of dump version 2"
    );
    dump[8] = DUMP_VERSION + 1;
    let sink = ChunkSink::new(&repo).unwrap();
    let chunks: Vec<ChunkRef> = dump
        .chunks(16 * 1024)
        .map(|c| ChunkRef {
            id: sink.put(ChunkKind::Data, c, true).unwrap(),
            len: c.len() as u32,
        })
        .collect();
    let Node::File {
        trusted, database, ..
    } = node
    else {
        panic!("the database is a file")
    };
    let newer = Node::File {
        size: dump.len() as u64,
        chunks,
        indirect: 0,
        trusted,
        database,
    };
    let root = replace(&repo, &sink, &one.tree, &path, newer);
    sink.finish().unwrap();
    commit_as(&repo, "newer-dump", root);
    format!("{}/{}", item.root, item.rel)
}

/// Snapshot `newer-tree`: `one` whose root tree says it is one version newer than the
/// newest this jellysnap reads (2: trees with hard links).
fn commit_newer_tree(env: &Env) {
    let repo = Repository::open(&jellysnap::Place::local(&env.repo), Access::Write).unwrap();
    let one = repo.resolve("one").unwrap().record;
    let mut bytes = repo.load_tree(&one.tree).unwrap().encode().unwrap();
    assert_eq!(&bytes[..5], b"JSTR\x01");
    bytes[4] = 3;
    let sink = ChunkSink::new(&repo).unwrap();
    let root = sink.put(ChunkKind::Tree, &bytes, true).unwrap();
    sink.finish().unwrap();
    commit_as(&repo, "newer-tree", root);
}

#[test]
fn a_newer_database_dump_is_refused_with_exit_11_and_check_says_newer_format() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    let db = commit_newer_dump(&env);
    let newer = format!(
        "was written by a newer jellysnap (format {}, this one reads up to {DUMP_VERSION}): upgrade jellysnap to read it",
        DUMP_VERSION + 1
    );

    let target = env.root.join("restored");
    let out = env.expect(
        &[
            "restore",
            "newer-dump",
            "--target",
            target.to_str().unwrap(),
        ],
        11,
    );
    let err = s(&out.stderr);
    assert!(
        err.contains("database dump for ") && err.contains(&newer),
        "{err}"
    );
    assert!(!err.contains("cannot be restored"), "{err}");
    assert!(
        !target.exists() || fs::read_dir(&target).unwrap().next().is_none(),
        "nothing restored"
    );

    let out = env.expect(&["check", "--read-data"], 11);
    let err = s(&out.stderr);
    assert!(
        err.contains(&format!(
            "newer format: database dump for {db} in snapshot "
        )) && err.contains("(newer-dump)")
            && err.contains(&newer),
        "{err}"
    );
    assert!(!err.lines().any(|l| l.starts_with("damaged")), "{err}");
    assert!(!err.contains("unrestorable"), "{err}");

    // The snapshot written in the format this jellysnap reads restores as before.
    env.restore_to("one", "one");
}

#[test]
fn a_newer_tree_is_refused_with_exit_11_by_readers_check_and_gc() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    commit_newer_tree(&env);
    let newer = "was written by a newer jellysnap (format 3, this one reads up to 2): upgrade jellysnap to read it";

    let out = env.expect(&["ls", "newer-tree"], 11);
    assert!(s(&out.stderr).contains("tree chunk "), "{}", s(&out.stderr));
    assert!(s(&out.stderr).contains(newer), "{}", s(&out.stderr));
    let target = env.root.join("restored");
    let out = env.expect(
        &[
            "restore",
            "newer-tree",
            "--target",
            target.to_str().unwrap(),
        ],
        11,
    );
    assert!(s(&out.stderr).contains(newer), "{}", s(&out.stderr));

    let out = env.expect(&["check"], 11);
    let err = s(&out.stderr);
    assert!(
        err.contains("newer format: tree chunk ") && err.contains(newer),
        "{err}"
    );
    assert!(!err.contains("damaged tree"), "{err}");

    // gc cannot tell what the newer snapshot keeps alive: it refuses, deleting nothing.
    let packs = common::env::files_under(&env.repo.join("packs"));
    env.expect(&["forget", "one"], 0);
    let out = env.expect(&["gc"], 11);
    assert!(s(&out.stderr).contains(newer), "{}", s(&out.stderr));
    assert_eq!(common::env::files_under(&env.repo.join("packs")), packs);
}

#[test]
fn a_newer_snapshot_record_is_refused_with_exit_11_and_the_others_stay_readable() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    // Record version 2: the same JSON behind a version this jellysnap does not read.
    let dir = env.repo.join("snapshots");
    let one = common::env::files_under(&dir).remove(0);
    let mut bytes = fs::read(&one).unwrap();
    assert_eq!(&bytes[..12], b"JSNPSNAP\x01\0\0\0");
    bytes[8] = 2;
    let id = blake3::hash(&bytes).to_hex().to_string();
    fs::write(dir.join(&id), &bytes).unwrap();
    let newer = format!(
        "snapshot record snapshots/{id} was written by a newer jellysnap (format 2, this one reads up to 1): upgrade jellysnap to read it"
    );

    let target = env.root.join("restored");
    let out = env.expect(
        &["restore", &id[..12], "--target", target.to_str().unwrap()],
        11,
    );
    assert!(s(&out.stderr).contains(&newer), "{}", s(&out.stderr));
    let out = env.expect(&["snapshots"], 11);
    assert!(s(&out.stderr).contains(&newer), "{}", s(&out.stderr));
    let out = env.expect(&["check"], 11);
    assert!(
        s(&out.stderr).contains(&format!("newer format: {newer}")),
        "{}",
        s(&out.stderr)
    );
    let out = env.expect(&["gc"], 11);
    assert!(s(&out.stderr).contains(&newer), "{}", s(&out.stderr));
    env.restore_to("one", "one");
}

#[test]
fn a_database_proof_of_a_newer_observation_is_refused_with_exit_11_not_as_a_failed_restore() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "one"]);
    let db = {
        let repo = Repository::open(&jellysnap::Place::local(&env.repo), Access::Write).unwrap();
        let mut rec = repo.resolve("one").unwrap().record;
        let d = rec
            .databases
            .iter_mut()
            .find(|d| d.verified.is_some())
            .expect("a proven logical capture");
        d.dump.as_mut().expect("its proof").observation = 99;
        let db = format!("{}/{}", d.root, d.rel);
        rec.name = Some("newer-proof".into());
        rec.time_ns += 1;
        repo.commit_snapshot(&rec).unwrap();
        db
    };
    let newer = "was written by a newer jellysnap (format 99, this one reads up to";

    let target = env.root.join("restored");
    let out = env.expect(
        &[
            "restore",
            "newer-proof",
            "--target",
            target.to_str().unwrap(),
        ],
        11,
    );
    let err = s(&out.stderr);
    assert!(
        err.contains("database proof for ") && err.contains(newer),
        "{err}"
    );
    assert!(!err.contains("cannot be restored"), "{err}");

    let out = env.expect(&["check", "--read-data"], 11);
    let err = s(&out.stderr);
    assert!(
        err.contains(&format!(
            "newer format: database proof for {db} in snapshot "
        )) && err.contains("(newer-proof)"),
        "{err}"
    );
    assert!(!err.lines().any(|l| l.starts_with("damaged")), "{err}");
    env.restore_to("one", "one");
}
