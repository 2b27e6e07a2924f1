//! Selecting and annotating snapshots through the built binary: names that look like
//! ids, `tag` and `name` (a new record supersedes the old one), and the filters of
//! `snapshots` and `forget`.

mod common;

use std::fs;
use std::path::Path;

use common::env::{s, Env};
use common::verify::describe;
use serde_json::Value;

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_string()
}

/// The snapshot record files in the repository.
fn record_files(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64)
        .collect();
    v.sort();
    v
}

/// Rewrite snapshot record `id`'s JSON with `change` under its new hash, as an older
/// jellysnap (or a hand) could have written it; returns the new id.
fn rewrite_record(repo: &Path, id: &str, change: impl FnOnce(&mut Value)) -> String {
    let dir = repo.join("snapshots");
    let bytes = fs::read(dir.join(id)).unwrap();
    let mut body: Value = serde_json::from_slice(&bytes[12..]).unwrap();
    change(&mut body);
    let mut out = bytes[..12].to_vec();
    out.extend_from_slice(body.to_string().as_bytes());
    let new = blake3::hash(&out).to_hex().to_string();
    fs::write(dir.join(&new), &out).unwrap();
    fs::remove_file(dir.join(id)).unwrap();
    new
}

fn listed(env: &Env) -> Vec<Value> {
    env.json(&["snapshots"], 0).as_array().unwrap().clone()
}

#[test]
fn names_that_look_like_ids_are_refused_and_a_clash_is_never_resolved_silently() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    for bad in ["beef", "20260101", "CAFE1234"] {
        let out = env.expect(&["backup", "--data-dir", data, "--name", bad], 2);
        assert!(
            s(&out.stderr).contains("could be taken for a snapshot id"),
            "{}",
            s(&out.stderr)
        );
    }
    // Refused before anything is written: not even the repository was made.
    assert!(!env.repo.join("config").exists());
    let a = id(&env.backup(&fx, &["--name", "v20260101"]));
    let b = id(&env.backup(&fx, &[]));
    env.expect(&["name", &b, "dead"], 2);
    // A name that is another snapshot's id prefix, as a record written before such
    // names were refused can hold: the prefix names both, and nothing picks one.
    let prefix = &a[..8];
    let b2 = rewrite_record(&env.repo, &b, |r| r["name"] = Value::from(prefix));
    let out = env.expect(&["forget", prefix], 12);
    let err = s(&out.stderr);
    assert!(
        err.contains(&format!("{} ({prefix}) by name", &b2[..8]))
            && err.contains(&format!("{} (v20260101) by id", &a[..8])),
        "{err}"
    );
    env.expect(&["ls", prefix], 12);
    assert_eq!(env.snapshot_count(), 2);
    // Longer prefixes and the other's name still reach each one.
    env.json(&["ls", &a[..12]], 0);
    env.json(&["ls", "v20260101"], 0);
}

#[test]
fn tag_and_name_write_a_new_record_that_supersedes_the_old() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = id(&env.backup(&fx, &["--name", "before", "--tag", "nightly"]));
    let second = id(&env.backup(&fx, &[]));
    let expected = describe(&env.restore_to("before", "r0").0, &[]);
    let edited = env.json(
        &[
            "tag", "before", "--add", "keep", "--add", "upgrade", "--remove", "nightly",
        ],
        0,
    );
    assert_eq!(edited["replaces"], first.as_str());
    assert_eq!(edited["tags"], serde_json::json!(["keep", "upgrade"]));
    let new = id(&edited);
    assert_ne!(new, first);
    // One record per snapshot: the old one is gone, the listing holds the new one at
    // the old one's place in time order.
    assert_eq!(record_files(&env.repo), {
        let mut v = vec![new.clone(), second.clone()];
        v.sort();
        v
    });
    let l = listed(&env);
    assert_eq!(l.len(), 2);
    assert_eq!(id(&l[0]), new);
    assert_eq!(l[0]["tags"], serde_json::json!(["keep", "upgrade"]));
    assert_eq!(l[0]["name"], "before");
    // The old id still finds the snapshot; its content is what it was.
    env.json(&["ls", &first[..8]], 0);
    assert_eq!(
        describe(&env.restore_to(&first[..10], "r1").0, &[]),
        expected
    );
    // Nothing to change writes nothing.
    let same = env.json(&["tag", "before", "--add", "keep"], 0);
    assert_eq!(same["changed"], false);
    assert_eq!(id(&same), new);
    env.expect(&["tag", "before"], 2);
    env.expect(&["tag", "before", "--add", ""], 2);
    // Names: unique, valid, and removable; a name taken by another snapshot is refused.
    env.json(&["name", &second[..8], "after"], 0);
    let out = env.expect(&["name", "after", "before"], 13);
    assert!(
        s(&out.stderr).contains("already named `before`"),
        "{}",
        s(&out.stderr)
    );
    env.expect(
        &[
            "backup",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
            "--name",
            "after",
        ],
        13,
    );
    let renamed = env.json(&["name", "after", "after-10.11"], 0);
    assert_eq!(renamed["name"], "after-10.11");
    env.expect(&["ls", "after"], 12);
    // The id the backup gave keeps finding the snapshot through every edit.
    env.json(&["ls", &second[..8]], 0);
    let unnamed = env.json(&["name", "after-10.11", "--unname"], 0);
    assert!(unnamed["name"].is_null());
    // The freed name can be given again; a policy now removes the unnamed one only.
    env.json(&["name", &second[..8], "after"], 0);
    env.json(&["name", "after", "--unname"], 0);
    let d = env.json(&["forget", "--keep-daily", "1", "--dry-run"], 0);
    let keep: Vec<bool> = d["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["keep"].as_bool().unwrap())
        .collect();
    assert_eq!(keep, [true, true], "{d}");
    env.json(&["check", "--read-data"], 0);
}

#[test]
fn an_edit_cut_short_leaves_the_new_record_in_charge_and_forget_removes_both() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = id(&env.backup(&fx, &["--name", "base"]));
    let old_bytes = fs::read(env.repo.join("snapshots").join(&first)).unwrap();
    let new = id(&env.json(&["tag", "base", "--add", "keep"], 0));
    // The superseded record back in place: an edit killed after its commit and before
    // its delete.
    fs::write(env.repo.join("snapshots").join(&first), &old_bytes).unwrap();
    assert_eq!(record_files(&env.repo).len(), 2);
    let l = listed(&env);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(id(&l[0]), new);
    assert_eq!(l[0]["tags"], serde_json::json!(["keep"]));
    env.json(&["ls", "base"], 0);
    env.json(&["check"], 0);
    // gc keeps what the snapshot needs; the next edit removes every older record.
    env.json(&["gc"], 0);
    let newer = id(&env.json(&["tag", &first[..8], "--add", "x"], 0));
    assert_eq!(record_files(&env.repo), vec![newer.clone()]);
    fs::write(env.repo.join("snapshots").join(&first), &old_bytes).unwrap();
    // forget removes the whole chain, not just the record it lists.
    env.json(&["forget", "base"], 0);
    assert!(record_files(&env.repo).is_empty());
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn a_copy_carries_the_current_tags_and_name() {
    let env = Env::new();
    let fx = env.small_fixture();
    let dst = env.root.join("dst");
    let dst_s = dst.to_str().unwrap();
    let first = id(&env.backup(&fx, &["--name", "base", "--tag", "nightly"]));
    env.json(&["copy", "--to", dst_s, "--init"], 0);
    env.json(&["tag", "base", "--add", "keep"], 0);
    let now = id(&env.json(&["name", "base", "base-10.10"], 0));
    let c = env.json(&["copy", "--to", dst_s], 0);
    assert!(c["refused"].as_array().is_none_or(|r| r.is_empty()), "{c}");
    // The destination's older record went, as a local edit deletes the one it
    // supersedes: one record per snapshot there too.
    assert_eq!(record_files(&dst), vec![now.clone()]);
    assert_eq!(c["superseded_removed"], serde_json::json!([first]), "{c}");
    let there = common::env::Cmd::at_repo(&dst, &["snapshots"]).json(0);
    let there = there.as_array().unwrap();
    assert_eq!(there.len(), 1, "{there:?}");
    assert_eq!(there[0]["name"], "base-10.10");
    assert_eq!(there[0]["tags"], serde_json::json!(["nightly", "keep"]));
    common::env::Cmd::at_repo(&dst, &["check", "--read-data"]).json(0);
    // The id the first copy brought still finds it there.
    common::env::Cmd::at_repo(&dst, &["ls", &first[..8]]).json(0);
    // An edit made at the destination, then a later one at the source: the copy's
    // record wins, and the destination's own record, which it does not know, stays
    // (hidden) so that the id its edit printed keeps finding the snapshot.
    let own =
        id(&common::env::Cmd::at_repo(&dst, &["tag", "base-10.10", "--add", "there"]).json(0));
    env.json(&["tag", "base-10.10", "--add", "a"], 0);
    let newest = id(&env.json(&["tag", "base-10.10", "--add", "b"], 0));
    let c = env.json(&["copy", "--to", dst_s], 0);
    assert_eq!(c["superseded_removed"], serde_json::json!([]), "{c}");
    assert_eq!(record_files(&dst), {
        let mut v = vec![own.clone(), newest.clone()];
        v.sort();
        v
    });
    let there = common::env::Cmd::at_repo(&dst, &["snapshots"]).json(0);
    assert_eq!(id(&there[0]), newest);
    for q in [&first, &now, &own, &newest] {
        let d = common::env::Cmd::at_repo(&dst, &["diff", q, &newest]).json(0);
        assert_eq!(d["from"], newest.as_str());
    }
    // Forgetting it there removes every record the destination holds.
    common::env::Cmd::at_repo(&dst, &["forget", "base-10.10"]).json(0);
    assert!(record_files(&dst).is_empty());
}

#[test]
fn snapshots_and_forget_select_by_tag_name_and_age() {
    let env = Env::new();
    let fx = env.small_fixture();
    let a = id(&env.backup(&fx, &["--name", "before-10.11.3", "--tag", "manual"]));
    let b = id(&env.backup(&fx, &["--tag", "nightly"]));
    let c = id(&env.backup(&fx, &["--tag", "nightly", "--tag", "keep"]));
    let d = id(&env.backup(&fx, &["--name", "before-10.11.4"]));
    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["snapshots"];
        a.extend_from_slice(args);
        env.json(&a, 0).as_array().unwrap().iter().map(id).collect()
    };
    assert_eq!(ids(&["--tag", "nightly"]), [b.as_str(), c.as_str()]);
    assert_eq!(ids(&["--tag", "nightly,keep"]), [c.as_str()]);
    assert_eq!(
        ids(&["--tag", "keep", "--tag", "manual"]),
        [a.as_str(), c.as_str()]
    );
    assert_eq!(ids(&["--name", "before-*"]), [a.as_str(), d.as_str()]);
    assert_eq!(ids(&["--name", "*10.11.4"]), [d.as_str()]);
    assert_eq!(ids(&["--latest", "2"]), [c.as_str(), d.as_str()]);
    assert_eq!(ids(&["--tag", "nightly", "--latest", "1"]), [c.as_str()]);
    assert!(ids(&["--tag", "none"]).is_empty());
    let text = s(&env.run(&["snapshots", "--name", "before-*"]).stdout);
    assert!(text.contains("2 snapshot(s)"), "{text}");
    env.expect(&["snapshots", "--latest", "0"], 2);
    env.expect(&["snapshots", "--tag", ""], 2);
    // forget --tag: the policy sees only the tagged snapshots; the others are neither
    // counted nor removed.
    let dry = env.json(
        &[
            "forget",
            "--tag",
            "nightly",
            "--keep-last",
            "1",
            "--dry-run",
        ],
        0,
    );
    let dec = dry["decisions"].as_array().unwrap();
    assert_eq!(dec.len(), 2, "{dry}");
    assert_eq!(
        (id(&dec[0]), dec[0]["keep"].as_bool()),
        (c.clone(), Some(true))
    );
    assert_eq!(
        (id(&dec[1]), dec[1]["keep"].as_bool()),
        (b.clone(), Some(false))
    );
    env.json(&["forget", "--tag", "nightly", "--keep-last", "1"], 0);
    assert_eq!(ids(&[]), [a.as_str(), c.as_str(), d.as_str()]);
    env.expect(&["forget", "--tag", "nightly", &a[..8]], 2);
    // --keep-tag alone is no policy: it would remove every snapshot not tagged.
    let out = env.expect(&["forget", "--keep-tag", "keep"], 2);
    assert!(
        s(&out.stderr).contains("is no rule itself"),
        "{}",
        s(&out.stderr)
    );
    assert_eq!(ids(&[]), [a.as_str(), c.as_str(), d.as_str()]);
    // --keep-tag keeps tagged snapshots as --name keeps named ones.
    let f = env.json(
        &[
            "forget",
            "--keep-last",
            "1",
            "--include-named",
            "--keep-tag",
            "keep",
        ],
        0,
    );
    let kept = f["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| id(d) == c)
        .unwrap()
        .clone();
    assert_eq!(kept["reasons"], serde_json::json!(["tag keep"]), "{f}");
    assert_eq!(ids(&[]), [c.as_str(), d.as_str()]);
    // A tag given later protects too.
    env.json(&["tag", &d[..8], "--add", "keep"], 0);
    env.json(&["name", "before-10.11.4", "--unname"], 0);
    env.json(&["forget", "--keep-last", "1", "--keep-tag", "keep"], 0);
    assert_eq!(ids(&[]).len(), 2);
}

#[test]
fn restore_include_and_exclude_restore_part_of_a_snapshot() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &[]);
    let (full, _) = env.restore_to("latest", "full");
    let all = describe(&full, &[]);
    let sub = fs::read_dir(fx.metadata_dir.join("library"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .min()
        .unwrap();
    let left_out = Path::new("metadata/library").join(&sub);
    let target = env.root.join("part");
    let t = target.to_str().unwrap();
    let excl = format!("data/{}", left_out.display());
    env.json(
        &[
            "restore",
            "latest",
            "--target",
            t,
            "--include",
            "data/metadata",
            "--exclude",
            &excl,
        ],
        0,
    );
    let want: common::verify::State = all
        .iter()
        .filter(|(k, _)| k.starts_with("metadata") && !k.starts_with(&left_out))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(want.len() > 3, "{want:?}");
    common::verify::assert_same(&describe(&target, &[]), &want);
    assert!(!target.join(&left_out).exists() && !target.join("data").exists());
    // The database alone, whole: a valid SQLite file.
    let db_only = env.root.join("db");
    env.json(
        &[
            "restore",
            "latest",
            "--target",
            db_only.to_str().unwrap(),
            "--include",
            "data/data/jellyfin.db",
        ],
        0,
    );
    let restored = describe(&db_only, &[]);
    assert_eq!(
        restored
            .keys()
            .filter(|k| k.starts_with("metadata"))
            .count(),
        0,
        "{restored:?}"
    );
    assert_eq!(
        common::sqlcli::sqlite3(&db_only.join("data/jellyfin.db"), "PRAGMA integrity_check;")
            .trim(),
        "ok"
    );
    assert_eq!(
        fs::read(db_only.join("data/jellyfin.db")).unwrap(),
        fs::read(full.join("data/jellyfin.db")).unwrap()
    );
    // A path that is not in the snapshot, one that is no snapshot path, and paths with
    // an in-place restore are refused before anything is written.
    let none = env.root.join("none");
    let n = none.to_str().unwrap();
    env.expect(
        &[
            "restore",
            "latest",
            "--target",
            n,
            "--include",
            "data/nosuch",
        ],
        12,
    );
    env.expect(
        &[
            "restore",
            "latest",
            "--target",
            n,
            "--include",
            "data/../etc",
        ],
        2,
    );
    env.expect(
        &["restore", "latest", "--target", n, "--include", "other/x"],
        12,
    );
    // A combination that leaves nothing to restore is a slip, said as such.
    for args in [
        vec!["--exclude", "data"],
        vec!["--include", "data/metadata", "--exclude", "data/metadata"],
    ] {
        let mut all = vec!["restore", "latest", "--target", n];
        all.extend(args);
        let out = env.expect(&all, 12);
        assert!(
            s(&out.stderr).contains("leave nothing of snapshot"),
            "{}",
            s(&out.stderr)
        );
    }
    // A path of a component --components leaves out is named as such, included or
    // excluded; an excluded path the restore would not write anyway (a typo, which
    // would restore what it meant to leave out) is refused as an included one is.
    for (flag, path, want) in [
        (
            "--include",
            "data/data/jellyfin.db",
            "`data/data/jellyfin.db` of snapshot",
        ),
        (
            "--exclude",
            "data/data/jellyfin.db",
            "`data/data/jellyfin.db` of snapshot",
        ),
        (
            "--exclude",
            "data/metadata/nosuch",
            "`data/metadata/nosuch` does not exist",
        ),
    ] {
        let out = env.expect(
            &[
                "restore",
                "latest",
                "--target",
                n,
                "--components",
                "metadata",
                flag,
                path,
            ],
            12,
        );
        let err = s(&out.stderr);
        assert!(err.contains(want), "{flag} {path}: {err}");
        if path.ends_with(".db") {
            assert!(
                err.contains("is in component database, which --components does not select"),
                "{err}"
            );
        }
    }
    env.expect(
        &[
            "restore",
            "latest",
            "--target",
            n,
            "--exclude",
            "data/metadata/nosuch",
        ],
        12,
    );
    env.expect(
        &[
            "restore",
            "latest",
            "--in-place",
            "--include",
            "data/metadata",
        ],
        2,
    );
    assert!(!none.exists());
}

#[test]
fn dump_streams_one_file_and_a_database_as_a_valid_sqlite_file() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "base"]);
    // The database: a rebuilt SQLite file the system's sqlite3 reads as the original.
    let out = env.expect(&["dump", "base", "data/data/jellyfin.db"], 0);
    assert!(out.stdout.starts_with(b"SQLite format 3\0"));
    let db = env.root.join("dumped.db");
    fs::write(&db, &out.stdout).unwrap();
    use common::sqlcli::{dump_of, sqlite3};
    assert_eq!(sqlite3(&db, "PRAGMA integrity_check;").trim(), "ok");
    assert_eq!(dump_of(&db), dump_of(&fx.db_path));
    // Nothing is left in the temp dir it was rebuilt in.
    let tmp = env.root.join("tmp");
    fs::create_dir(&tmp).unwrap();
    env.cmd(&["dump", "base", "data/data/jellyfin.db"])
        .env("TMPDIR", &tmp)
        .expect(0);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    // What an interrupted dump left (its owner gone) goes with the next dump; another
    // dump's that is running stays.
    let dead = tmp.join(".jellysnap-dump-999999999.1-5/data");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join("jellyfin.db"), b"a whole database").unwrap();
    let live = tmp.join(format!(
        ".jellysnap-dump-{}-5",
        common::env::own_owner_tag()
    ));
    fs::create_dir(&live).unwrap();
    env.cmd(&["dump", "base", "data/data/jellyfin.db"])
        .env("TMPDIR", &tmp)
        .expect(0);
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![live]);
    // A plain file, byte for byte.
    let file = common::env::files_under(&fx.metadata_dir)
        .into_iter()
        .find(|p| p.is_file())
        .unwrap();
    let rel = file.strip_prefix(&fx.data_dir).unwrap();
    let out = env.expect(&["dump", "latest", &format!("data/{}", rel.display())], 0);
    assert_eq!(out.stdout, fs::read(&file).unwrap());
    // A directory or a path the snapshot lacks is refused, with nothing on stdout.
    let out = env.expect(&["dump", "base", "data/metadata"], 2);
    assert!(out.stdout.is_empty());
    env.expect(&["dump", "base", "data/nosuch"], 12);
}

/// An edit takes the repository's exclusive lock, as forget does: while a backup (a
/// shared holder) or another edit (an exclusive one) runs, it is refused and writes
/// nothing, so no two edits ever supersede the same record.
#[test]
fn an_edit_is_refused_while_another_command_holds_the_repository() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = id(&env.backup(&fx, &["--name", "base"]));
    for exclusive in [false, true] {
        let lock = fs::OpenOptions::new()
            .write(true)
            .open(env.repo.join("locks/repo"))
            .unwrap();
        if exclusive {
            lock.lock().unwrap();
        } else {
            lock.lock_shared().unwrap();
        }
        let out = env.expect(&["tag", "base", "--add", "x"], 16);
        assert!(
            s(&out.stderr).contains("locked by another jellysnap process"),
            "{}",
            s(&out.stderr)
        );
        env.expect(&["name", "base", "renamed"], 16);
        assert_eq!(record_files(&env.repo), vec![first.clone()]);
    }
    env.json(&["tag", "base", "--add", "x"], 0);
}

/// A snapshot the destination holds at the same or a later edit is not sent again (its
/// older record would only pile up there, and its old name clash with a later one), and
/// a record the source itself has superseded is never sent.
#[test]
fn a_copy_sends_each_snapshot_once_whatever_was_edited_on_either_side() {
    let env = Env::new();
    let fx = env.small_fixture();
    let dst = env.root.join("dst");
    let dst_s = dst.to_str().unwrap();
    let first = id(&env.backup(&fx, &["--name", "base"]));
    env.backup(&fx, &["--name", "other"]);
    env.json(&["copy", "--to", dst_s, "--init"], 0);
    // Edited in the destination: renamed there, and its old name given to another.
    let at_dst = |args: &[&str]| common::env::Cmd::at_repo(&dst, args).json(0);
    at_dst(&["name", "base", "renamed"]);
    at_dst(&["name", "other", "other-renamed"]);
    at_dst(&["name", "other-renamed", "base"]);
    let records = record_files(&dst);
    for _ in 0..2 {
        let c = env.json(&["copy", "--to", dst_s], 0);
        assert_eq!(c["report"]["copied"].as_array().unwrap().len(), 0, "{c}");
        assert_eq!(record_files(&dst), records);
        // Named by the ids the destination lists them under: those find them there.
        let mut present: Vec<String> = c["report"]["already_present"]
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect();
        present.sort();
        assert_eq!(present, records, "{c}");
        let mut names: Vec<&str> = c["report"]["already_present"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["base", "renamed"], "{c}");
    }
    // A record the source superseded (an edit cut short before its delete) stays home.
    let old_bytes = fs::read(env.repo.join("snapshots").join(&first)).unwrap();
    env.json(&["tag", "base", "--add", "keep"], 0);
    fs::write(env.repo.join("snapshots").join(&first), &old_bytes).unwrap();
    let fresh = env.root.join("fresh");
    env.json(&["copy", "--to", fresh.to_str().unwrap(), "--init"], 0);
    assert_eq!(record_files(&fresh).len(), 2, "one record per snapshot");
    let there = common::env::Cmd::at_repo(&fresh, &["snapshots"]).json(0);
    let base = there
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "base")
        .unwrap()
        .clone();
    assert_eq!(base["tags"], serde_json::json!(["keep"]));
}

/// Every snapshot id jellysnap printed keeps finding that snapshot, through any number
/// of edits: the backup's, each edit's, and the parent `snapshots --json` shows (which
/// is the parent's id as listed now).
#[test]
fn every_id_printed_for_a_snapshot_keeps_finding_it() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = id(&env.backup(&fx, &["--name", "base"]));
    let child = env.backup(&fx, &[]);
    assert_eq!(child["parent"], first.as_str());
    let mut printed = vec![first.clone()];
    for args in [
        &["tag", "base", "--add", "x"][..],
        &["tag", "base", "--add", "y"],
        &["name", "base", "base-2"],
        &["tag", "base-2", "--remove", "x"],
    ] {
        let e = env.json(args, 0);
        assert_eq!(e["replaces"], printed.last().unwrap().as_str(), "{e}");
        printed.push(id(&e));
    }
    let now = printed.last().unwrap().clone();
    assert_eq!(record_files(&env.repo).len(), 2);
    let l = listed(&env);
    assert_eq!(id(&l[0]), now);
    assert_eq!(l[1]["parent"], now.as_str(), "the parent as listed now");
    for (i, p) in printed.iter().enumerate() {
        for q in [p.as_str(), &p[..8]] {
            let d = env.json(&["diff", q, "latest"], 0);
            assert_eq!(d["from"], now.as_str(), "id {i} ({q}) finds the snapshot");
        }
    }
    // And a tag later still.
    env.json(&["tag", &printed[1][..8], "--add", "z"], 0);
    for p in &printed {
        env.json(&["ls", p], 0);
    }
}

/// A copy of an edit while another command holds the destination (a backup there): the
/// copy goes through, says that the older record stays, and the listing shows the
/// snapshot once; the next edit there removes the older record.
#[test]
fn a_copy_of_an_edit_beside_a_busy_destination_keeps_the_older_record_hidden() {
    let env = Env::new();
    let fx = env.small_fixture();
    let dst = env.root.join("dst");
    let dst_s = dst.to_str().unwrap();
    let first = id(&env.backup(&fx, &["--name", "base"]));
    env.json(&["copy", "--to", dst_s, "--init"], 0);
    let now = id(&env.json(&["tag", "base", "--add", "keep"], 0));
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(dst.join("locks/repo"))
        .unwrap();
    lock.lock_shared().unwrap();
    let out = env.expect(&["--json", "copy", "--to", dst_s], 0);
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["superseded_removed"], serde_json::json!([]), "{c}");
    assert!(
        s(&out.stderr).contains("stay in") && s(&out.stderr).contains("locked"),
        "{}",
        s(&out.stderr)
    );
    drop(lock);
    let mut both = vec![first.clone(), now.clone()];
    both.sort();
    assert_eq!(record_files(&dst), both);
    let there = common::env::Cmd::at_repo(&dst, &["snapshots"]).json(0);
    assert_eq!(there.as_array().unwrap().len(), 1, "{there}");
    assert_eq!(id(&there[0]), now);
    let newer = id(&common::env::Cmd::at_repo(&dst, &["tag", &first[..8], "--add", "x"]).json(0));
    assert_eq!(record_files(&dst), vec![newer]);
}
