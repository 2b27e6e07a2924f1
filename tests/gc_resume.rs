//! A gc killed after one of its new packs became durable but before that pack's index
//! entries were inserted leaves the pack behind, unindexed. The next gc plans to delete
//! it (nothing in the index points at it), then repacks the same live chunks in the same
//! order, which gives a file with the same bytes and so the same name: it indexes the
//! chunks into that pack, unindexes them again because the pack is on its delete list,
//! and deletes the file. The chunks are then in no pack at all.
//!
//! The kill is reproduced without test hooks: the gc runs once on a copy of the
//! repository, and the packs it wrote are put into the original, unindexed, with the
//! `gc-in-progress` marker the killed sweep would have left.

mod common;

use common::env::Env;
use common::verify::{assert_same, describe};
use std::fs;
use std::path::Path;

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The pack files under `repo/packs`, as paths relative to `repo`.
fn packs(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in fs::read_dir(repo.join("packs")).unwrap() {
        let sub = sub.unwrap();
        for f in fs::read_dir(sub.path()).unwrap() {
            let f = f.unwrap();
            out.push(format!(
                "packs/{}/{}",
                sub.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn gc_after_a_kill_before_indexing_a_repacked_pack_loses_nothing() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "full"]);
    env.backup(&fx, &["--name", "meta", "--components", "metadata"]);
    env.json(&["forget", "full"], 0);
    let t0 = env.root.join("expected");
    env.json(&["restore", "meta", "--target", t0.to_str().unwrap()], 0);
    let expected = describe(&t0, &[]);

    // What the killed gc would have left: its new packs durable, none of them indexed.
    let twin = env.root.join("twin");
    copy_tree(&env.repo, &twin);
    let before = packs(&env.repo);
    common::env::Cmd::at_repo(&twin, &["gc", "--max-unused", "0"]).expect(0);
    let written: Vec<String> = packs(&twin)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!written.is_empty(), "the gc repacked nothing");
    for p in &written {
        let dest = env.repo.join(p);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(twin.join(p), dest).unwrap();
    }
    fs::write(
        env.repo.join("gc-in-progress"),
        b"gc sweep started; the next gc finishes it\n",
    )
    .unwrap();
    // That state is sound: every snapshot is whole.
    env.json(&["check", "--read-data"], 0);

    // The next gc finishes the job and loses nothing.
    let g = env.json(&["gc", "--max-unused", "0"], 0);
    assert_eq!(g["plan"]["resumes_interrupted"], true, "{g}");
    env.json(&["check", "--read-data"], 0);
    let (t, _) = env.restore_to("meta", "after");
    assert_same(&describe(&t, &[]), &expected);
}
