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

/// `--max-unused` is the repository's unused share: gc repacks the packs with the
/// largest unused share first, and only until what stays unused is at most that share of
/// the repository (a share per pack would rewrite nearly every pack after churn spread
/// over all of them). With 0 it repacks every pack with anything unused. Either way the
/// snapshot left restores exactly and the repository checks clean.
#[test]
fn gc_repacks_the_emptiest_packs_until_the_repository_is_under_max_unused() {
    let env = Env::new();
    env.expect(&["init"], 0);
    common::env::set_pack_target(&env.repo, 32 * 1024);
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "base"]);
    common::fixture::day_of_changes(&fx, 3).unwrap();
    env.backup(&fx, &["--name", "day"]);
    let day = common::verify::expected_state(&fx);
    env.expect(&["forget", "base"], 0);

    let plan = |pct: &str| env.json(&["gc", "--dry-run", "--max-unused", pct], 0)["plan"].clone();
    let share = |p: &serde_json::Value| {
        let dead = p["dead_bytes"].as_f64().unwrap();
        dead / (dead + p["live_bytes"].as_f64().unwrap())
    };
    let dead = |p: &serde_json::Value| p["dead_bytes"].as_f64().unwrap();
    let all = plan("0");
    let every: Vec<serde_json::Value> = all["repack"].as_array().unwrap().clone();
    assert!(
        every.len() >= 3,
        "churn leaves several packs part-used: {all}"
    );
    let unused: f64 = every.iter().map(dead).sum();
    // Half the share that is unused now is allowed to stay unused.
    let pct = 100.0 * unused / all["repository_bytes"].as_f64().unwrap() / 2.0;
    let some = plan(&format!("{pct:.3}"));
    let chosen: Vec<serde_json::Value> = some["repack"].as_array().unwrap().clone();
    assert!(
        !chosen.is_empty() && chosen.len() < every.len(),
        "some packs repacked, not all ({} of {})",
        chosen.len(),
        every.len()
    );
    // The ones left are no emptier than any repacked.
    let names: Vec<&str> = chosen.iter().map(|p| p["pack"].as_str().unwrap()).collect();
    let least_chosen = chosen.iter().map(share).fold(f64::INFINITY, f64::min);
    for p in every
        .iter()
        .filter(|p| !names.contains(&p["pack"].as_str().unwrap()))
    {
        assert!(
            share(p) <= least_chosen + 1e-9,
            "{p} left, emptier than one repacked"
        );
    }
    // What stays unused is within the share asked for (of the live bytes, which lie
    // between those of the part-used packs and the repository's size less what is
    // freed), and no more packs were chosen than needed: leaving out the last one chosen
    // would leave too much unused.
    let left: f64 = unused - chosen.iter().map(dead).sum::<f64>();
    let live_at_most =
        all["repository_bytes"].as_f64().unwrap() - all["bytes_freed"].as_f64().unwrap();
    let live_at_least: f64 = every
        .iter()
        .map(|p| p["live_bytes"].as_f64().unwrap())
        .sum();
    let allowed = |live: f64| live * pct / (100.0 - pct);
    assert!(left <= allowed(live_at_most), "{left} unused left");
    let last = dead(chosen.last().unwrap());
    assert!(
        left + last > allowed(live_at_least),
        "{} repacked where fewer would do",
        chosen.len()
    );

    let g = env.json(&["gc", "--max-unused", &format!("{pct:.3}")], 0);
    assert_eq!(
        g["report"]["packs_repacked"].as_u64(),
        Some(chosen.len() as u64),
        "{g}"
    );
    env.json(&["check", "--read-data"], 0);
    env.assert_restores("day", "r-day", &day);
}

#[test]
fn gc_merges_the_small_packs_hourly_backups_leave_into_full_size_ones() {
    let env = Env::new();
    env.expect(&["init"], 0);
    let fx = env.small_fixture();
    // Each backup of a little change seals its own part-filled packs.
    for hour in 0..20 {
        common::fixture::day_of_changes(&fx, 100 + hour).unwrap();
        env.backup(&fx, &["--name", &format!("h{hour}")]);
    }
    let last = common::verify::expected_state(&fx);
    let files = packs(&env.repo);

    let plan = env.json(&["gc", "--dry-run"], 0)["plan"].clone();
    let before = plan["packs"].as_u64().unwrap();
    let merged = plan["small_packs_merged"].as_u64().unwrap();
    assert!(merged >= 32 && merged <= before, "{plan}");
    assert!(plan["repack"].as_array().unwrap().len() as u64 >= merged);
    assert_eq!(packs(&env.repo), files, "a dry run changes nothing");
    // Asked to rewrite nothing, gc merges nothing either.
    let none = env.json(&["gc", "--dry-run", "--max-unused", "100"], 0)["plan"].clone();
    assert_eq!(none["small_packs_merged"].as_u64(), Some(0), "{none}");
    assert_eq!(none["repack"].as_array().unwrap().len(), 0, "{none}");

    env.json(&["gc"], 0);
    // Nothing left to merge: the next gc leaves the packs as they are.
    let again = env.json(&["gc", "--dry-run"], 0)["plan"].clone();
    let after = again["packs"].as_u64().unwrap();
    assert!(
        after + merged <= before + 3,
        "{before} packs, {merged} merged, {after} left"
    );
    assert_eq!(again["small_packs_merged"].as_u64(), Some(0), "{again}");
    assert_eq!(again["repack"].as_array().unwrap().len(), 0, "{again}");
    env.json(&["check", "--read-data"], 0);
    env.assert_restores("h19", "r-last", &last);
}
