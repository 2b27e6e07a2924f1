//! Crafted snapshots: trees that name `..`, `/`-paths or symlinks out of the target are
//! refused by restore (or restored as inert links), and nothing is written outside the
//! target. The crafted records are written through the engine's API, as an attacker with
//! write access to the repository could.

mod common;

use std::fs;

use common::env::{s, Env};
use jellysnap::ChunkId;
use jellysnap::ChunkKind;
use jellysnap::ChunkSink;
use jellysnap::SnapshotRecord;
use jellysnap::{Access, Repository};
use jellysnap::{ChunkRef, DbCapture, Entry, Node, Tree};

fn entry(name: &[u8], node: Node) -> Entry {
    Entry {
        name: name.to_vec(),
        node,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        link: None,
    }
}

/// Commit a snapshot whose `data` root holds `entries` (encoded without validation).
fn craft(env: &Env, name: &str, entries: Vec<(Vec<u8>, &'static [u8], bool)>) {
    let repo = Repository::open(&jellysnap::Place::local(&env.repo), Access::Write).unwrap();
    let template: SnapshotRecord = repo.resolve("base").unwrap().record;
    let sink = ChunkSink::new(&repo).unwrap();
    let mut listing = Vec::new();
    for (n, content, symlink) in entries {
        let node = if symlink {
            Node::Symlink {
                target: content.to_vec(),
            }
        } else {
            let id = sink.put(ChunkKind::Data, content, true).unwrap();
            Node::File {
                size: content.len() as u64,
                chunks: vec![ChunkRef {
                    id,
                    len: content.len() as u32,
                }],
                indirect: 0,
                trusted: true,
                database: DbCapture::None,
            }
        };
        listing.push(entry(&n, node));
    }
    let data: ChunkId = sink
        .put(
            ChunkKind::Tree,
            &Tree { entries: listing }.encode().unwrap(),
            true,
        )
        .unwrap();
    let mut root = entry(b"data", Node::Dir { tree: data });
    root.mode = 0o755;
    let top = sink
        .put(
            ChunkKind::Tree,
            &Tree {
                entries: vec![root],
            }
            .encode()
            .unwrap(),
            true,
        )
        .unwrap();
    sink.finish().unwrap();
    let mut rec = template;
    rec.name = Some(name.into());
    rec.tree = top;
    rec.time_ns += 1;
    repo.commit_snapshot(&rec).unwrap();
}

#[test]
fn crafted_trees_cannot_escape_the_target() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "base"]);
    let outside = env.root.join("outside");
    fs::create_dir_all(&outside).unwrap();

    for (name, bad) in [
        ("dotdot", b"..".to_vec()),
        ("slash", b"../outside/pwned".to_vec()),
        ("absolute", b"/tmp/pwned".to_vec()),
        ("empty", b"".to_vec()),
    ] {
        craft(&env, name, vec![(bad, b"pwned", false)]);
        let target = env.root.join("targets").join(name);
        let out = env.expect(&["restore", name, "--target", target.to_str().unwrap()], 18);
        assert!(
            s(&out.stderr).contains("not a plain file name"),
            "{name}: {}",
            s(&out.stderr)
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{name}: nothing written outside"
        );
        assert!(!std::path::Path::new("/tmp/pwned").exists());
        // check reports the crafted snapshot as damaged.
        env.expect(&["check"], 18);
        env.json(&["forget", name], 0);
    }

    // A symlink out of the target is restored as an inert link; nothing is written
    // through it, even by a file of the same snapshot that sorts after it.
    let link_target = format!("{}", outside.display());
    let leaked: &'static [u8] = Box::leak(link_target.into_bytes().into_boxed_slice());
    // (Named like Jellyfin's marker files, so that the snapshot's items select them.)
    craft(
        &env,
        "link",
        vec![
            (b".jellyfin-escape".to_vec(), leaked, true),
            (b".jellyfin-escape2".to_vec(), b"data", false),
        ],
    );
    let target = env.root.join("targets/link");
    env.json(
        &["restore", "link", "--target", target.to_str().unwrap()],
        0,
    );
    assert_eq!(
        fs::read_link(target.join(".jellyfin-escape")).unwrap(),
        outside
    );
    assert_eq!(fs::read(target.join(".jellyfin-escape2")).unwrap(), b"data");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    env.json(&["check", "--read-data"], 0);
}
