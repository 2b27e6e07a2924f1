//! Backups of installs at the edges, through the binary: directories that contain one
//! another, media in the metadata dir, file times beyond 2262, FIFOs and sockets, hard
//! links, and clocks that are wrong when a snapshot is taken or forgotten.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::env::{files_under, need_root, s, Cmd, Env};
use serde_json::Value;

fn notices<'a>(b: &'a Value, kind: &str) -> Vec<&'a Value> {
    b["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == kind)
        .collect()
}

fn set_metadata_path(config_dir: &Path, dir: &Path) {
    let p = config_dir.join("system.xml");
    let xml = fs::read_to_string(&p).unwrap();
    let element = match xml.find("<MetadataPath>") {
        Some(start) => {
            let end = xml.find("</MetadataPath>").unwrap() + "</MetadataPath>".len();
            xml[start..end].to_string()
        }
        None => "<MetadataPath />".to_string(),
    };
    assert!(xml.contains(&element), "{xml}");
    let xml = xml.replace(
        &element,
        &format!("<MetadataPath>{}</MetadataPath>", dir.display()),
    );
    fs::write(&p, xml).unwrap();
}

/// A metadata dir that is the data dir, holds it or lies inside another component's
/// directory made an in-place rollback delete whatever was new there (a new movie). Such
/// a dir is refused, as a bad flag (2) or a bad system.xml (14), before a repository is
/// made; a metadata dir of its own is fine.
#[test]
fn metadata_dirs_that_overlap_other_dirs_are_refused() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let inside = fx.data_path().join("trickplay/meta");
    fs::create_dir_all(&inside).unwrap();
    for (dir, says) in [
        (fx.data_dir.clone(), "is the data dir"),
        (fx.root.clone(), "holds the data dir"),
        (fx.data_path(), "holds"),
        (inside, "lies inside"),
    ] {
        let out = env.expect(
            &[
                "backup",
                "--data-dir",
                data,
                "--metadata-dir",
                dir.to_str().unwrap(),
            ],
            2,
        );
        let err = s(&out.stderr);
        assert!(
            err.contains(says) && err.contains("--metadata-dir"),
            "{dir:?}: {err}"
        );
        assert!(
            !env.repo.exists(),
            "nothing is created for a refused backup"
        );
    }
    set_metadata_path(&fx.config_dir, &fx.data_dir);
    let out = env.expect(&["backup", "--data-dir", data], 14);
    let err = s(&out.stderr);
    assert!(
        err.contains("MetadataPath") && err.contains("system.xml"),
        "{err}"
    );

    // A metadata dir of its own, given either way, is backed up.
    let own = fx.root.join("jf-metadata");
    fs::create_dir_all(own.join("library")).unwrap();
    fs::write(own.join("library/poster.jpg"), b"jpeg").unwrap();
    set_metadata_path(&fx.config_dir, &own);
    env.backup(&fx, &[]);
}

/// A bind mount of a directory, unmounted on drop.
struct BindMount(std::path::PathBuf);

impl BindMount {
    fn new(from: &Path, at: &Path) -> BindMount {
        fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount --bind: {}", s(&out.stderr));
        BindMount(at.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A bind mount shows the data dir under another name: as a metadata dir it (or its
/// `data/` under that name) passed a check of names, and an in-place restore of the
/// metadata then wrote a raw database over the live one and deleted new config files.
/// Directories are compared by identity, so it is refused like the data dir itself.
#[test]
#[ignore = "needs root: bind mounts"]
fn a_bind_mount_of_the_data_dir_is_refused_as_the_metadata_dir() {
    need_root("bind mounts");
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let bind = env.root.join("bind");
    let _mount = BindMount::new(&fx.data_dir, &bind);
    for (dir, says) in [
        (bind.clone(), "is the data dir"),
        (bind.join("data"), "holds"),
    ] {
        let out = env.expect(
            &[
                "backup",
                "--data-dir",
                data,
                "--metadata-dir",
                dir.to_str().unwrap(),
            ],
            2,
        );
        let err = s(&out.stderr);
        assert!(
            err.contains(says) && err.contains("--metadata-dir"),
            "{dir:?}: {err}"
        );
        assert!(
            !env.repo.exists(),
            "nothing is created for a refused backup"
        );
    }
}

/// Media in the metadata dir is backed up as metadata, and reported: a rollback of the
/// metadata would delete media added since.
#[test]
fn media_in_the_metadata_dir_is_reported() {
    let env = Env::new();
    let fx = env.small_fixture();
    let movie = fx.metadata_dir.join("library/Movie (2024).mkv");
    fs::create_dir_all(movie.parent().unwrap()).unwrap();
    fs::write(&movie, b"not really a movie").unwrap();
    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["--json", "backup", "--data-dir", data], 0);
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = notices(&b, "media-in-metadata");
    assert_eq!(n.len(), 1, "{b}");
    assert!(
        n[0]["detail"]
            .as_str()
            .unwrap()
            .contains("Movie (2024).mkv"),
        "{b}"
    );
    let err = s(&out.stderr);
    assert!(
        err.contains("1 media file(s)") && err.contains("Movie (2024).mkv"),
        "{err}"
    );
    // Without media, nothing is said.
    fs::remove_file(&movie).unwrap();
    let b = env.backup(&fx, &[]);
    assert!(notices(&b, "media-in-metadata").is_empty(), "{b}");
}

/// A file dated after 2262 (beyond a signed 64-bit count of nanoseconds) panicked every
/// backup. Its time is stored at the last instant a snapshot holds, said so by path, and
/// given back by a restore; an in-place plan over it works too.
#[test]
fn a_file_dated_after_2262_is_backed_up_and_restored() {
    let env = Env::new();
    let fx = env.small_fixture();
    let f = fx.metadata_dir.join("library/far-future.jpg");
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(&f, b"from the future").unwrap();
    // 2300-01-01 00:00:00 UTC.
    let t = filetime::FileTime::from_unix_time(10_413_792_000, 0);
    filetime::set_file_mtime(&f, t).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mtime(), 10_413_792_000);
    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["--json", "backup", "--init", "--data-dir", data], 0);
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = notices(&b, "time-out-of-range");
    assert_eq!(n.len(), 1, "{b}");
    assert!(
        n[0]["path"].as_str().unwrap().ends_with("far-future.jpg"),
        "{b}"
    );
    assert!(s(&out.stderr).contains("2262-04-11"), "{}", s(&out.stderr));

    let (target, _) = env.restore_to("latest", "restored");
    let r = target.join("metadata/library/far-future.jpg");
    assert_eq!(fs::read(&r).unwrap(), b"from the future");
    let m = fs::metadata(&r).unwrap();
    assert_eq!(
        (m.mtime(), m.mtime_nsec()),
        (i64::MAX / 1_000_000_000, i64::MAX % 1_000_000_000)
    );
    // The in-place plan compares the live file's time too.
    env.expect(
        &["restore", "latest", "--in-place", "--dry-run", "--force"],
        0,
    );
    let b = env.backup(&fx, &[]);
    assert_eq!(notices(&b, "time-out-of-range").len(), 1, "{b}");
}

/// FIFOs and sockets were dropped without a word; each is now named on stderr and in the
/// backup's notices.
#[test]
fn fifos_and_sockets_are_reported_by_path() {
    let env = Env::new();
    let fx = env.small_fixture();
    let fifo = fx.metadata_dir.join("a-fifo");
    let sock = fx.data_path().join("trickplay/a-socket");
    fs::create_dir_all(&fx.metadata_dir).unwrap();
    fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["--json", "-q", "backup", "--init", "--data-dir", data], 0);
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = notices(&b, "special-file-skipped");
    let paths: Vec<&str> = n.iter().map(|n| n["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 2, "{b}");
    assert!(paths.contains(&fifo.to_str().unwrap()), "{paths:?}");
    assert!(paths.contains(&sock.to_str().unwrap()), "{paths:?}");
    let err = s(&out.stderr);
    assert!(
        err.contains("a FIFO (named pipe)") && err.contains("a socket"),
        "{err}"
    );
    assert!(err.contains("a-fifo") && err.contains("a-socket"), "{err}");
}

/// Hard links came back as separate files. Names of one file in the snapshot are
/// restored as links of one file; a file with other links outside the snapshot is
/// restored as a file of its own.
#[test]
fn hard_links_come_back_as_hard_links() {
    let env = Env::new();
    let fx = env.small_fixture();
    let lib = fx.metadata_dir.join("library");
    fs::create_dir_all(lib.join("a")).unwrap();
    fs::create_dir_all(lib.join("b")).unwrap();
    fs::write(lib.join("a/poster.jpg"), b"one poster, two names").unwrap();
    fs::hard_link(lib.join("a/poster.jpg"), lib.join("b/poster.jpg")).unwrap();
    fs::hard_link(lib.join("a/poster.jpg"), lib.join("b/same.jpg")).unwrap();
    fs::write(lib.join("alone.jpg"), b"linked from outside").unwrap();
    fs::hard_link(lib.join("alone.jpg"), fx.root.join("outside.jpg")).unwrap();
    env.backup(&fx, &[]);

    let (target, _) = env.restore_to("latest", "restored");
    let r = target.join("metadata/library");
    let ino = |p: &str| fs::metadata(r.join(p)).unwrap().ino();
    assert_eq!(ino("a/poster.jpg"), ino("b/poster.jpg"));
    assert_eq!(ino("a/poster.jpg"), ino("b/same.jpg"));
    assert_eq!(fs::metadata(r.join("a/poster.jpg")).unwrap().nlink(), 3);
    assert_eq!(
        fs::read(r.join("b/same.jpg")).unwrap(),
        b"one poster, two names"
    );
    assert_eq!(fs::metadata(r.join("alone.jpg")).unwrap().nlink(), 1);
    assert_eq!(
        fs::read(r.join("alone.jpg")).unwrap(),
        b"linked from outside"
    );
    env.expect(&["check", "--read-data"], 0);

    // In place: a name that became a file of its own is made a link again.
    let b = lib.join("b/poster.jpg");
    fs::remove_file(&b).unwrap();
    fs::write(&b, b"a new poster").unwrap();
    env.json(&["restore", "latest", "--in-place"], 0);
    let live_ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(live_ino(&b), live_ino(&lib.join("a/poster.jpg")));
    assert_eq!(fs::read(&b).unwrap(), b"one poster, two names");

    // In place, the group's first name gone and the others kept: it comes back as a link
    // to the kept ones, not as a file of its own.
    let a = lib.join("a/poster.jpg");
    fs::remove_file(&a).unwrap();
    env.json(&["restore", "latest", "--in-place"], 0);
    assert_eq!(live_ino(&a), live_ino(&b));
    assert_eq!(live_ino(&a), live_ino(&lib.join("b/same.jpg")));
    assert_eq!(fs::metadata(&a).unwrap().nlink(), 3);
    assert_eq!(fs::read(&a).unwrap(), b"one poster, two names");
}

const DAY: i64 = 86_400;
/// 2026-06-01 00:00:00 UTC.
const T0: i64 = 1_780_272_000;

/// Back up at clock time `now` (Unix seconds).
fn backup_at(env: &Env, data: &str, now: i64) -> Value {
    let out = env
        .cmd(&["--json", "backup", "--init", "--data-dir", data])
        .clock_at(now)
        .expect(0);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A snapshot dated in the past (a clock not set yet) was skipped by `latest` and
/// removed by `--keep-last`; one dated in the future made `--keep-within` remove every
/// other snapshot. Now the backup warns, `latest` and `--keep-last` go by the order
/// snapshots were written, and a policy is refused while a snapshot is dated after now.
#[test]
fn a_wrong_clock_does_not_break_retention() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    backup_at(&env, data, T0);
    backup_at(&env, data, T0 + DAY);
    // A machine without a real-time clock, before it synchronises: 1970.
    let b = backup_at(&env, data, 10 * DAY);
    assert_eq!(notices(&b, "clock-went-back").len(), 1, "{b}");
    let past = b["id"].as_str().unwrap().to_string();

    let now = T0 + 2 * DAY;
    let target = env.root.join("t");
    let plan = env
        .cmd(&["restore", "latest", "--dry-run", "--target"])
        .arg(&target)
        .clock_at(now)
        .json(0);
    assert_eq!(plan["plan"]["snapshot"], past.as_str(), "{plan}");
    let f = env
        .cmd(&["forget", "--keep-last", "1", "--dry-run"])
        .clock_at(now)
        .json(0);
    let kept: Vec<&str> = f["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [past.as_str()], "{f}");
    // A date rule alone keeps it too: the snapshot written last is never removed by a
    // policy, whatever its date says.
    let f = env
        .cmd(&["forget", "--keep-within", "2d", "--dry-run"])
        .clock_at(now)
        .json(0);
    let past_decision = f["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == past.as_str())
        .unwrap()
        .clone();
    assert_eq!(past_decision["keep"], true, "{f}");

    // A clock a year ahead, then back to normal.
    backup_at(&env, data, T0 + 400 * DAY);
    let out = env
        .cmd(&["forget", "--keep-within", "30d"])
        .clock_at(now)
        .expect(2);
    let err = s(&out.stderr);
    assert!(
        err.contains("2027-07-06") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(env.snapshot_count(), 4, "nothing was removed");
    // Forced, the policy counts from the future snapshot, as asked.
    let f = env
        .cmd(&["forget", "--keep-within", "30d", "--force", "--dry-run"])
        .clock_at(now)
        .json(0);
    let kept = f["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .count();
    assert_eq!(kept, 1, "{f}");
}

/// A second jellysnap repository in the data dir (an older one, in the metadata dir) was
/// backed up as ordinary files and then rolled back by an in-place restore, losing its
/// newer snapshots. It is left out of backups, said so, and left alone by restores, also
/// those of a snapshot that holds its files (taken while it was not recognisable).
#[test]
fn another_repository_in_the_data_dir_is_neither_backed_up_nor_rolled_back() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let old = fx.metadata_dir.join("oldrepo");
    let old_run = |args: &[&str]| Cmd::at_repo(&old, args);
    old_run(&["backup", "--init", "--data-dir", data, "--name", "o1"]).json(0);

    // Its config moved aside, the repository is ordinary files to a backup.
    let config = old.join("config");
    fs::rename(&config, old.join("config.aside")).unwrap();
    env.backup(&fx, &["--name", "hidden"]);
    fs::rename(old.join("config.aside"), &config).unwrap();

    let b = env.backup(&fx, &["--name", "n1"]);
    let n = notices(&b, "repository-skipped");
    assert_eq!(n.len(), 1, "{b}");
    assert_eq!(n[0]["path"].as_str(), Some(old.to_str().unwrap()), "{b}");
    let (t, _) = env.restore_to("n1", "t");
    let leaked: Vec<_> = files_under(&t)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("oldrepo"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");

    old_run(&["backup", "--data-dir", data, "--name", "o2"]).json(0);
    for snap in ["n1", "hidden"] {
        let r = env.json(&["restore", snap, "--in-place", "--force"], 0);
        let protected = r["plan"]["protected"].as_array().unwrap();
        assert!(
            protected.iter().any(|p| p == old.to_str().unwrap()),
            "{snap}: {r}"
        );
        let snaps = old_run(&["snapshots"]).json(0);
        assert_eq!(snaps.as_array().unwrap().len(), 2, "{snap}: {snaps}");
        assert!(config.is_file(), "{snap}");
    }
    old_run(&["check", "--read-data"]).json(0);
}

/// Video files in the metadata dir belong to a library that overlaps it: an in-place
/// restore silently deleted the ones added after the snapshot. It refuses (exit 14),
/// naming them, before anything changes; other components still restore.
#[test]
fn an_in_place_restore_refuses_to_delete_media() {
    let env = Env::new();
    let fx = env.small_fixture();
    let lib = fx.metadata_dir.join("library");
    fs::create_dir_all(&lib).unwrap();
    fs::write(lib.join("old.mkv"), b"an old movie").unwrap();
    env.backup(&fx, &[]);
    let new = lib.join("new.mkv");
    fs::write(&new, b"a new movie").unwrap();
    fs::write(lib.join("new-poster.jpg"), b"x").unwrap();

    let out = env.expect(&["restore", "latest", "--in-place", "--force"], 14);
    let err = s(&out.stderr);
    assert!(
        err.contains("1 media file(s)") && err.contains("new.mkv"),
        "{err}"
    );
    assert!(new.is_file() && lib.join("new-poster.jpg").is_file());

    let other = ["restore", "latest", "--in-place", "--force", "--components"];
    env.json(&[&other[..], &["config"]].concat(), 0);
    assert!(new.is_file());
    // Without the new movie, the metadata rolls back as before.
    fs::remove_file(&new).unwrap();
    env.json(&["restore", "latest", "--in-place", "--force"], 0);
    assert!(!lib.join("new-poster.jpg").exists() && lib.join("old.mkv").is_file());
}

/// A directory tree as deep as a path can be long: the walk, the count and the restore
/// go through every level (a walk thread's stack once overflowed from ~400 levels: the
/// backup aborted, with no snapshot and no path named).
#[test]
fn a_directory_tree_as_deep_as_a_path_allows_is_backed_up_and_restored() {
    let env = Env::new();
    let fx = env.small_fixture();
    let mut deep = fx.metadata_dir.join("library");
    // ~3,800 bytes of path below the metadata dir, under PATH_MAX with the temp dir's.
    for _ in 0..1900 {
        deep.push("a");
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom.nfo"), b"<movie/>").unwrap();
    let b = env.backup(&fx, &["--name", "deep"]);
    assert!(
        b["snapshot"]["summary"]["errors"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{b}"
    );
    // Unchanged: the parent's trees are reused level by level.
    env.backup(&fx, &[]);
    let (target, _) = env.restore_to("deep", "r");
    let rel = deep.strip_prefix(&fx.data_dir).unwrap();
    assert_eq!(
        fs::read(target.join(rel).join("bottom.nfo")).unwrap(),
        b"<movie/>"
    );
    env.json(&["check"], 0);
}
