//! Format 2 names a pack by its kind: data packs under `packs/`, tree packs under
//! `trees/`. End to end through the binary on local repositories: a new repository is
//! format 2 and keeps the kinds apart through backup, gc (repacks included), `repair
//! index` and `check --read-data`; a format-1 repository (made as an earlier jellysnap
//! made it, through the `JELLYSNAP_TEST_FORMAT` seam) stays format 1 with every pack
//! under `packs/`; copies between the two formats, both ways, restore exactly; a config
//! of a format newer than this jellysnap reads is refused as newer (exit 11).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::env::{need_hooks, s, set_pack_target, Env};
use common::fixture::{self, Fixture};
use common::verify::{expected_state, State};
use jellysnap::decoders::{scan_records, RawLimits, RepoConfig};
use jellysnap::ChunkKind;

/// Packs this small make a small data dir fill several, so gc has packs to repack.
const PACK_TARGET: u64 = 32 * 1024;

fn format_of(repo: &Path) -> u32 {
    let raw = fs::read(repo.join("config")).unwrap();
    u32::from_le_bytes(raw[8..12].try_into().unwrap())
}

/// The kinds of chunk each pack under `<repo>/<top>/` holds, one set per pack.
fn kinds_under(repo: &Path, top: &str) -> Vec<BTreeSet<&'static str>> {
    let raw = fs::read(repo.join("config")).unwrap();
    let limits = RawLimits::of(&RepoConfig::decode(&raw, Path::new("config")).unwrap());
    let mut out = Vec::new();
    let Ok(subs) = fs::read_dir(repo.join(top)) else {
        return out;
    };
    for sub in subs {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let f = f.unwrap();
            if f.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let (entries, _) = scan_records(&fs::read(f.path()).unwrap(), &limits);
            assert!(!entries.is_empty(), "{}", f.path().display());
            out.push(
                entries
                    .iter()
                    .map(|e| match e.kind {
                        ChunkKind::Data => "data",
                        ChunkKind::Tree => "tree",
                    })
                    .collect(),
            );
        }
    }
    out
}

/// Every pack under `packs/` holds data chunks only and every pack under `trees/` tree
/// chunks only, and there are some of each.
#[track_caller]
fn assert_kinds_apart(repo: &Path) {
    let data = kinds_under(repo, "packs");
    let trees = kinds_under(repo, "trees");
    assert!(!data.is_empty() && !trees.is_empty(), "{data:?} {trees:?}");
    assert!(
        data.iter().all(|k| k == &BTreeSet::from(["data"])),
        "{data:?}"
    );
    assert!(
        trees.iter().all(|k| k == &BTreeSet::from(["tree"])),
        "{trees:?}"
    );
}

/// A format-1 repository: no `trees/`, tree packs beside the data packs.
#[track_caller]
fn assert_format_1(repo: &Path) {
    assert_eq!(format_of(repo), 1);
    assert!(
        !repo.join("trees").exists(),
        "a format-1 repository got trees/"
    );
    let packs = kinds_under(repo, "packs");
    assert!(packs.iter().any(|k| k.contains("tree")), "{packs:?}");
    assert!(packs.iter().any(|k| k.contains("data")), "{packs:?}");
}

/// `init` in format `format` (1 through the test seam), with small packs.
fn init(env: &Env, format: u32) {
    let mut cmd = env.cmd(&["init"]);
    if format == 1 {
        cmd = cmd.env("JELLYSNAP_TEST_FORMAT", "1");
    }
    cmd.expect(0);
    assert_eq!(format_of(&env.repo), format);
    set_pack_target(&env.repo, PACK_TARGET);
}

/// Snapshots `base` and `day1` of `fx`, with what each restores to.
fn two_snapshots(env: &Env, fx: &Fixture) -> (State, State) {
    env.backup(fx, &["--name", "base"]);
    let base = expected_state(fx);
    fixture::day_of_changes(fx, 1).unwrap();
    env.backup(fx, &["--name", "day1"]);
    (base, expected_state(fx))
}

#[test]
fn a_new_repository_keeps_tree_packs_apart_through_backup_gc_and_repair() {
    let env = Env::new();
    init(&env, 2);
    let fx = env.small_fixture();
    let (base, day1) = two_snapshots(&env, &fx);
    assert_kinds_apart(&env.repo);
    env.json(&["check", "--read-data"], 0);
    env.assert_restores("base", "base", &base);

    // gc repacks every pack with anything dead in it: the new packs go under the key of
    // their kind.
    env.json(&["forget", "base"], 0);
    let gc = env.json(&["gc", "--max-unused", "0"], 0);
    assert!(gc["report"]["packs_repacked"].as_u64().unwrap() > 0, "{gc}");
    assert_kinds_apart(&env.repo);
    let stats = env.json(&["stats"], 0);
    let packs =
        (kinds_under(&env.repo, "packs").len() + kinds_under(&env.repo, "trees").len()) as u64;
    assert_eq!(
        stats["repository"]["packs"].as_u64(),
        Some(packs),
        "{stats}"
    );

    let repair = env.json(&["repair", "index"], 0);
    assert_eq!(repair["packs"].as_u64(), Some(packs), "{repair}");
    env.json(&["check", "--read-data"], 0);
    env.assert_restores("day1", "day1", &day1);

    // The index is derived: lost, it comes back from both prefixes.
    fs::remove_dir_all(env.repo.join("index")).unwrap();
    env.assert_restores("day1", "day1-again", &day1);
}

#[test]
fn a_format_1_repository_stays_format_1() {
    need_hooks();
    let env = Env::new();
    init(&env, 1);
    let fx = env.small_fixture();
    let (_, day1) = two_snapshots(&env, &fx);
    assert_format_1(&env.repo);
    env.json(&["forget", "base"], 0);
    let gc = env.json(&["gc", "--max-unused", "0"], 0);
    assert!(gc["report"]["packs_repacked"].as_u64().unwrap() > 0, "{gc}");
    env.json(&["repair", "index"], 0);
    env.json(&["check", "--read-data"], 0);
    assert_format_1(&env.repo);
    env.assert_restores("day1", "day1", &day1);
}

/// format 1 -> format 2 (`--init`), format 2 -> an existing format-1 repository, and
/// format 2 -> format 2: each destination keeps its own layout and restores exactly.
#[test]
fn copies_between_formats_restore_exactly() {
    need_hooks();
    let v1 = Env::new();
    init(&v1, 1);
    let fx = v1.small_fixture();
    let (base, day1) = two_snapshots(&v1, &fx);

    let v2 = Env::new();
    v1.cmd(&["--json", "copy", "--to"])
        .arg(&v2.repo)
        .arg("--init")
        .expect(0);
    assert_eq!(
        format_of(&v2.repo),
        2,
        "a copy's new repository is format 2"
    );
    assert_kinds_apart(&v2.repo);
    v2.json(&["check", "--read-data"], 0);
    v2.assert_restores("base", "base", &base);
    v2.assert_restores("day1", "day1", &day1);

    let back = Env::new();
    init(&back, 1);
    v2.cmd(&["--json", "copy", "--to"])
        .arg(&back.repo)
        .expect(0);
    assert_format_1(&back.repo);
    back.json(&["check", "--read-data"], 0);
    back.assert_restores("base", "base", &base);
    back.assert_restores("day1", "day1", &day1);

    let again = Env::new();
    v2.cmd(&["--json", "copy", "--to"])
        .arg(&again.repo)
        .arg("--init")
        .expect(0);
    assert_eq!(format_of(&again.repo), 2);
    assert_kinds_apart(&again.repo);
    again.assert_restores("day1", "day1", &day1);
    // Every record arrived byte for byte: the same snapshot ids on all four sides.
    let ids = |e: &Env| -> BTreeSet<String> {
        e.json(&["snapshots"], 0)
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&v1), ids(&v2));
    assert_eq!(ids(&v1), ids(&back));
    assert_eq!(ids(&v1), ids(&again));
}

/// A config one format newer than this jellysnap reads is refused as newer, by name,
/// before anything else is read (as a format-1 jellysnap refuses a format-2 repository).
#[test]
fn a_newer_config_is_refused_as_newer() {
    let env = Env::new();
    init(&env, 2);
    let cfg = env.repo.join("config");
    let mut raw = fs::read(&cfg).unwrap();
    raw[8..12].copy_from_slice(&3u32.to_le_bytes());
    fs::write(&cfg, &raw).unwrap();
    let out = env.expect(&["snapshots"], 11);
    assert!(
        s(&out.stderr)
            .contains("was written by a newer jellysnap (format 3, this one reads up to 2)"),
        "{}",
        s(&out.stderr)
    );
}

/// A data pack moved under `trees/` (by hand, or by a faulty tool) cannot be read there:
/// check names the pack and says where it belongs, and once it is moved back the
/// repository checks clean and restores.
#[test]
fn check_names_a_pack_under_the_other_kinds_prefix() {
    let env = Env::new();
    init(&env, 2);
    let fx = env.small_fixture();
    let (_, day1) = two_snapshots(&env, &fx);
    let sub = fs::read_dir(env.repo.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::read_dir(p).unwrap().next().is_some())
        .unwrap();
    let pack = fs::read_dir(&sub).unwrap().next().unwrap().unwrap();
    let name = pack.file_name().into_string().unwrap();
    let moved = env.repo.join("trees").join(&name[..2]);
    fs::create_dir_all(&moved).unwrap();
    fs::rename(pack.path(), moved.join(&name)).unwrap();

    let r = env.json(&["check"], 18);
    let probs = r["problems"].as_array().unwrap();
    // (The index still places its chunks under packs/, where the pack is missing now.)
    let named: Vec<&str> = probs
        .iter()
        .filter(|p| p["pack"].as_str() == Some(name.as_str()))
        .filter_map(|p| p["detail"].as_str())
        .collect();
    assert!(
        named
            .iter()
            .any(|d| d.contains("under trees/") && d.contains("move it to packs/")),
        "{r}"
    );

    fs::rename(moved.join(&name), pack.path()).unwrap();
    env.json(&["check", "--read-data"], 0);
    env.assert_restores("day1", "day1", &day1);
}
