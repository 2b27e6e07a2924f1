//! End-to-end tests of reusing a database capture across snapshots, through the built
//! binary on a Jellyfin-shaped data dir whose database is written by the system `sqlite3`
//! CLI and Python's sqlite3 (another SQLite than jellysnap's): an unchanged database is
//! taken over from the parent snapshot without being opened, and every kind of change a
//! server makes — a write through a connection held open, a checkpoint, VACUUM, `PRAGMA
//! optimize`, a replaced file, a write within the timestamp granularity — is captured
//! again. Every snapshot restores to the `.dump` its source had when it was taken.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::env::Env;
use common::fixture::{self, FixtureSpec, Layout};
use common::server::Server;
use common::sqlcli::{dump_of, live_dump, side, sqlite3};
use serde_json::Value;

/// The backups of one test, with a clock that moves forward from well after the files
/// were written (so that they count as settled), and what each snapshot must restore to.
struct Run {
    env: Env,
    fx: fixture::Fixture,
    clock: i64,
    taken: Vec<(String, String)>,
}

impl Run {
    fn new() -> Run {
        let env = Env::new();
        let mut spec = FixtureSpec::small(Layout::Docker);
        spec.db_rows = 500;
        let fx = env.fixture(&spec);
        // A table of our own, for changes that keep the file's size.
        sqlite3(
            &fx.db_path,
            "CREATE TABLE Probe (v TEXT); INSERT INTO Probe VALUES ('aaaaaaaa');",
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Run {
            env,
            fx,
            clock: now.as_secs() as i64 + 100,
            taken: Vec::new(),
        }
    }

    fn db(&self) -> &Path {
        &self.fx.db_path
    }

    /// A backup, `secs` later than the previous one by the clock; returns how its
    /// database record says the capture was made (and remembers the source's dump).
    #[track_caller]
    fn backup_after(&mut self, secs: i64) -> (Value, Option<String>) {
        self.clock += secs;
        let data = self.fx.data_dir.to_str().unwrap();
        let args = ["backup", "--init", "--data-dir", data];
        let b = self.env.cmd(&args).clock_at(self.clock).json(0);
        self.remember(&b)
    }

    /// A backup whose clock reads one second after the database's mtime: within the
    /// timestamp granularity of its last write.
    #[track_caller]
    fn backup_right_after_a_write(&mut self) -> (Value, Option<String>) {
        let data = self.fx.data_dir.to_str().unwrap();
        let args = ["backup", "--init", "--data-dir", data];
        let at = fs::metadata(self.db()).unwrap().mtime() + 1;
        let b = self.env.cmd(&args).clock_at(at).json(0);
        self.remember(&b)
    }

    /// A backup `secs` later, not remembered, whose text summary is returned.
    fn text_backup_after(&mut self, secs: i64) -> String {
        self.clock += secs;
        let data = self.fx.data_dir.to_str().unwrap();
        let out = self
            .env
            .cmd(&["backup", "--data-dir", data])
            .clock_at(self.clock)
            .expect(0);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn remember(&mut self, b: &Value) -> (Value, Option<String>) {
        let errors = &b["snapshot"]["summary"]["errors"];
        assert!(errors.as_array().is_some_and(|e| e.is_empty()), "{b}");
        let dbs = b["snapshot"]["databases"].as_array().unwrap();
        assert_eq!(dbs.len(), 1, "{b}");
        assert_eq!(dbs[0]["capture"], "logical", "{b}");
        let id = b["id"].as_str().unwrap().to_string();
        self.taken.push((id, live_dump(self.db())));
        (b.clone(), dbs[0]["reused"].as_str().map(String::from))
    }

    /// Every snapshot restores to the dump its source had.
    #[track_caller]
    fn assert_all_restore(&self) {
        for (i, (id, dump)) in self.taken.iter().enumerate() {
            let (target, _) = self.env.restore_to(id, &format!("restored-{i}"));
            let restored = dump_of(&target.join("data/jellyfin.db"));
            assert!(
                restored == *dump,
                "snapshot {i} ({id}) restores another database"
            );
        }
    }
}

type Stamp = (u64, u64, i64, i64, i64, i64);

/// What changes when a file is written or replaced.
fn stamp(p: &Path) -> Stamp {
    let m = fs::metadata(p).unwrap();
    (
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// The stamps of a database and of its `-wal`.
fn stamps(db: &Path) -> (Stamp, Option<Stamp>) {
    let wal = side(db, "-wal");
    (stamp(db), wal.exists().then(|| stamp(&wal)))
}

#[test]
fn an_unchanged_database_reuses_its_capture_and_stays_verifiable() {
    let mut run = Run::new();
    let (first, how) = run.backup_after(0);
    assert_eq!(how, None, "{first}");
    let rec = &first["snapshot"]["databases"][0];
    assert!(
        rec["source"].is_object(),
        "a settled state is recorded: {rec}"
    );
    assert!(rec["dump"]["blake3"].is_string(), "{rec}");

    let (second, how) = run.backup_after(10);
    assert_eq!(how.as_deref(), Some("capture"), "{second}");
    let s = &second["snapshot"];
    assert_eq!(s["summary"]["db_bytes"], 0, "nothing read: {second}");
    assert_eq!(s["summary"]["new_chunks"], 0, "{second}");
    assert_eq!(s["databases"][0]["verified"], rec["verified"]);
    assert_eq!(s["jellyfin_version"], first["snapshot"]["jellyfin_version"]);
    // Nothing was opened: no side file appeared beside the database.
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(!side(run.db(), suffix).exists(), "{suffix}");
    }
    // The text summary says so.
    let text = run.text_backup_after(10);
    assert!(
        text.contains("unchanged since the parent snapshot"),
        "{text}"
    );

    // A reused capture is checked like any: its dump is rebuilt and proven again, also
    // once the snapshot whose capture it took over is gone.
    let check = run.env.json(&["check", "--read-data"], 0);
    assert!(check["databases_rebuilt"].as_u64() >= Some(1), "{check}");
    let first_id = first["id"].as_str().unwrap();
    run.env.expect(&["forget", first_id], 0);
    run.env.expect(&["gc"], 0);
    run.taken.remove(0);
    let check = run.env.json(&["check", "--read-data"], 0);
    assert!(check["databases_rebuilt"].as_u64() >= Some(1), "{check}");
    run.assert_all_restore();
}

#[test]
fn a_live_servers_writes_checkpoints_vacuum_and_optimize_are_each_captured() {
    let mut run = Run::new();
    let db = run.db().to_path_buf();
    let mut server = Server::start(&db, 20, None);
    // The server is idle: its -wal and -shm stay as they are.
    let (b, how) = run.backup_after(0);
    assert_eq!(how, None, "{b}");
    let (b, how) = run.backup_after(10);
    assert_eq!(
        how.as_deref(),
        Some("capture"),
        "an idle server changes nothing: {b}"
    );

    // A write through the connection the server holds open: only the -wal changes.
    let before = stamps(&db);
    assert!(server.ask("write").starts_with("wrote"));
    let after = stamps(&db);
    assert_eq!(after.0, before.0, "the write went to the -wal only");
    assert_ne!(after.1, before.1);
    let (b, how) = run.backup_after(10);
    assert_eq!(how, None, "a new row is a new dump: {b}");

    // A checkpoint from another process: the rows move into the file, the dump does not
    // change, so the proof is reused but the database is read again.
    let before = stamp(&db);
    sqlite3(&db, "PRAGMA wal_checkpoint(PASSIVE);");
    assert_ne!(stamp(&db), before, "the checkpoint wrote the file");
    let (b, how) = run.backup_after(10);
    assert_eq!(how.as_deref(), Some("proof"), "{b}");
    let (b, how) = run.backup_after(10);
    assert_eq!(how.as_deref(), Some("capture"), "{b}");

    // VACUUM rewrites every page (and may renumber the rowids of tables without an
    // INTEGER PRIMARY KEY or index, which the dump keeps: then even the proof is new).
    let before = stamps(&db);
    sqlite3(&db, "VACUUM;");
    assert_ne!(stamps(&db), before);
    let (b, how) = run.backup_after(10);
    assert_ne!(how.as_deref(), Some("capture"), "{b}");

    // PRAGMA optimize after a query that used an index: ANALYZE writes sqlite_stat1.
    sqlite3(
        &db,
        "SELECT count(*) FROM UserData WHERE UserId = 'x' AND Played = 1; PRAGMA optimize;",
    );
    assert!(
        !sqlite3(&db, "SELECT count(*) FROM sqlite_stat1;").starts_with('0'),
        "optimize wrote statistics"
    );
    let (b, how) = run.backup_after(10);
    assert_eq!(how, None, "new statistics are a new dump: {b}");

    assert!(server.ask("write").starts_with("wrote"));
    let (b, how) = run.backup_after(10);
    assert_eq!(how, None, "{b}");
    server.kill();
    run.assert_all_restore();
}

#[test]
fn a_database_replaced_by_one_of_the_same_size_times_and_counter_is_captured() {
    let mut run = Run::new();
    let db = run.db().to_path_buf();
    run.backup_after(0);
    let (b, how) = run.backup_after(10);
    assert_eq!(how.as_deref(), Some("capture"), "{b}");

    // Another database in a new file: same size, same mtime, same change counter in the
    // header; only the inode and ctime tell.
    let other = run.env.root.join("other.db");
    fs::copy(&db, &other).unwrap();
    sqlite3(&other, "UPDATE Probe SET v = 'bbbbbbbb';");
    let header = fs::read(&db).unwrap();
    let mut bytes = fs::read(&other).unwrap();
    assert_eq!(bytes.len(), header.len(), "same size");
    bytes[24..28].copy_from_slice(&header[24..28]);
    bytes[92..96].copy_from_slice(&header[92..96]);
    fs::write(&other, &bytes).unwrap();
    let m = fs::metadata(&db).unwrap();
    let mtime =
        std::time::UNIX_EPOCH + std::time::Duration::new(m.mtime() as u64, m.mtime_nsec() as u32);
    fs::File::options()
        .write(true)
        .open(&other)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&other, &db).unwrap();
    let now = stamp(&db);
    assert_eq!((now.1, now.2, now.3), (m.len(), m.mtime(), m.mtime_nsec()));
    assert!(live_dump(&db).contains("bbbbbbbb"));
    let (b, how) = run.backup_after(10);
    assert_eq!(how, None, "a replaced database is captured: {b}");
    run.assert_all_restore();
}

#[test]
fn a_write_within_the_timestamp_granularity_is_not_trusted() {
    let mut run = Run::new();
    // Written just before the backup: the state is not recorded.
    sqlite3(run.db(), "INSERT INTO Probe VALUES ('c');");
    let (b, how) = run.backup_right_after_a_write();
    assert_eq!(how, None, "{b}");
    assert!(
        b["snapshot"]["databases"][0]["source"].is_null(),
        "a state within the granularity is not recorded: {b}"
    );
    // So the next backup reads the database again (and finds the same dump).
    let (b, how) = run.backup_after(10);
    assert_eq!(how.as_deref(), Some("proof"), "{b}");
    let (b, how) = run.backup_after(10);
    assert_eq!(how.as_deref(), Some("capture"), "{b}");
    run.assert_all_restore();
}

#[test]
fn an_in_place_rollback_is_captured_again_then_reused() {
    let mut run = Run::new();
    let (a, _) = run.backup_after(0);
    let a_id = a["id"].as_str().unwrap().to_string();
    let a_dump = live_dump(run.db());
    sqlite3(run.db(), "INSERT INTO Probe VALUES ('after a');");
    let (b, how) = run.backup_after(10);
    assert_eq!(how, None, "{b}");

    // Roll back to A: the database file is rebuilt and renamed into place, with A's
    // mtime.
    run.env.json(&["restore", &a_id, "--in-place"], 0);
    assert!(live_dump(run.db()) == a_dump);
    let (c, how) = run.backup_after(10);
    assert_ne!(how.as_deref(), Some("capture"), "{c}");
    let (d, how) = run.backup_after(10);
    assert_eq!(how.as_deref(), Some("capture"), "{d}");
    assert!(run.taken.last().unwrap().1 == a_dump);
    run.assert_all_restore();
}

/// How a backup's proof of the database made its rebuild (`proofs` in its output).
fn rebuild_of(b: &Value) -> &str {
    let proofs = b["proofs"].as_array().unwrap();
    assert_eq!(proofs.len(), 1, "{b}");
    assert_eq!(proofs[0]["database"], "data/data/jellyfin.db", "{b}");
    proofs[0]["rebuild"].as_str().unwrap()
}

/// The files in the repository's `rebuilds/` (the kept rebuild, its row list and its
/// record).
fn kept_files(repo: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(repo.join("rebuilds"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn a_changed_database_is_proven_by_bringing_the_last_rebuild_up_to_date() {
    let mut run = Run::new();
    let db = run.db().to_path_buf();
    let (b, _) = run.backup_after(0);
    assert_eq!(rebuild_of(&b), "whole");
    let kept = kept_files(&run.env.repo);
    assert_eq!(
        kept.len(),
        3,
        "a rebuild, its row list, its record: {kept:?}"
    );
    for ext in ["db", "rows"] {
        let file = kept
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap();
        let mode = fs::metadata(file).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{ext}: it comes from what the database holds");
    }

    // A day of use, written by another SQLite: rows changed, added and deleted.
    sqlite3(
        &db,
        r#"UPDATE UserData SET PlayCount = PlayCount + 1, Played = 1 WHERE rowid % 7 = 0;
           DELETE FROM UserData WHERE rowid % 11 = 0;
           UPDATE Probe SET v = 'bbbbbbbb'; INSERT INTO Probe VALUES ('new row');"#,
    );
    let (b, how) = run.backup_after(10);
    assert_eq!((how.as_deref(), rebuild_of(&b)), (None, "updated"), "{b}");
    // Unchanged: nothing rebuilt; changed again: updated again.
    let (b, how) = run.backup_after(10);
    assert_eq!((how.as_deref(), rebuild_of(&b)), (Some("capture"), "none"));
    sqlite3(&db, "UPDATE Probe SET v = 'cccccccc' WHERE v = 'new row';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "updated", "{b}");

    // A migration changes the schema: rebuilt whole, and that rebuild kept.
    sqlite3(&db, "CREATE INDEX IX_Probe_v ON Probe (v);");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "whole", "{b}");
    sqlite3(&db, "UPDATE Probe SET v = 'dddddddd' WHERE v = 'cccccccc';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "updated", "{b}");

    // The kept rebuild written behind jellysnap's back: not used.
    let rebuilt = kept_files(&run.env.repo)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "db"))
        .unwrap();
    sqlite3(&rebuilt, "UPDATE Probe SET v = 'tampered';");
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(side(&rebuilt, suffix));
    }
    sqlite3(&db, "UPDATE Probe SET v = 'eeeeeeee' WHERE v = 'dddddddd';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "whole", "{b}");

    // Its record gone (a backup killed while updating it removes the record first): not
    // used either.
    for p in kept_files(&run.env.repo) {
        if p.extension().is_some_and(|e| e == "json") {
            fs::remove_file(p).unwrap();
        }
    }
    sqlite3(&db, "UPDATE Probe SET v = 'ffffffff' WHERE v = 'eeeeeeee';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "whole", "{b}");

    // Its row list changed (a digest of a row that then changes too): not the list its
    // record names, so not used; nothing is taken from a list but speed.
    let rows = kept_files(&run.env.repo)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "rows"))
        .unwrap();
    let mut bytes = fs::read(&rows).unwrap();
    let last_digest = bytes.len() - 3;
    bytes[last_digest] ^= 1;
    fs::write(&rows, bytes).unwrap();
    sqlite3(&db, "UPDATE Probe SET v = 'ffffff00' WHERE v = 'ffffffff';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "whole", "{b}");
    sqlite3(&db, "UPDATE Probe SET v = 'ffffffff' WHERE v = 'ffffff00';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "updated", "{b}");

    // The text summary says how the proof was made.
    sqlite3(&db, "UPDATE Probe SET v = 'gggggggg' WHERE v = 'ffffffff';");
    let text = run.text_backup_after(10);
    assert!(
        text.contains("the last proof's rebuild brought up to date"),
        "{text}"
    );
    sqlite3(&db, "UPDATE Probe SET v = 'hhhhhhhh' WHERE v = 'gggggggg';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "updated", "{b}");

    // Nothing else changed in the repository: `check` reads and rebuilds every
    // snapshot's database, and every snapshot restores to the dump its source had.
    let check = run.env.json(&["check", "--read-data"], 0);
    assert!(check["databases_rebuilt"].as_u64() >= Some(8), "{check}");
    run.assert_all_restore();
}

#[test]
fn a_kept_rebuild_goes_with_its_database_and_with_the_last_snapshot_of_it() {
    let run = Run::new();
    let plugin = run.fx.data_dir.join("data/plugin.db");
    sqlite3(
        &plugin,
        "CREATE TABLE p (a INTEGER PRIMARY KEY, b); INSERT INTO p VALUES (1, 'x');",
    );
    let data = run.fx.data_dir.to_str().unwrap();
    let mut clock = run.clock;
    let mut backup = || {
        clock += 10;
        let b = run
            .env
            .cmd(&["backup", "--init", "--data-dir", data])
            .clock_at(clock)
            .json(0);
        b["id"].as_str().unwrap().to_string()
    };
    let first = backup();
    assert_eq!(
        kept_files(&run.env.repo).len(),
        6,
        "two databases, two slots"
    );

    // The plugin is removed: its rebuild goes with the next backup.
    fs::remove_file(&plugin).unwrap();
    sqlite3(run.db(), "UPDATE Probe SET v = 'bbbbbbbb';");
    let second = backup();
    assert_eq!(
        kept_files(&run.env.repo).len(),
        3,
        "{:?}",
        kept_files(&run.env.repo)
    );

    // Every snapshot forgotten: gc leaves no copy of the database behind.
    run.env.expect(&["forget", &first], 0);
    run.env.expect(&["gc"], 0);
    assert_eq!(
        kept_files(&run.env.repo).len(),
        3,
        "the second snapshot still holds it"
    );
    run.env.expect(&["forget", &second], 0);
    run.env.expect(&["gc"], 0);
    assert!(
        kept_files(&run.env.repo).is_empty(),
        "{:?}",
        kept_files(&run.env.repo)
    );
}

#[test]
fn two_data_dirs_backed_up_into_one_repository_each_keep_their_rebuild() {
    let mut run = Run::new();
    let mut spec = FixtureSpec::small(Layout::Docker);
    spec.db_rows = 500;
    let other = fixture::generate(&run.env.root.join("other"), &spec).unwrap();
    sqlite3(
        &other.db_path,
        "CREATE TABLE Probe (v TEXT); INSERT INTO Probe VALUES ('aaaaaaaa');",
    );
    let backup_other = |env: &Env, data: &Path, clock: i64| -> Value {
        env.cmd(&["backup", "--data-dir", data.to_str().unwrap()])
            .clock_at(clock)
            .json(0)
    };
    let (b, _) = run.backup_after(0);
    assert_eq!(rebuild_of(&b), "whole");
    let b = backup_other(&run.env, &other.data_dir, run.clock + 5);
    assert_eq!(rebuild_of(&b), "whole", "{b}");
    assert_eq!(kept_files(&run.env.repo).len(), 6, "two slots");

    // Each is brought up to date in turn: neither backup takes the other's slot away.
    for round in ["bbbbbbbb", "cccccccc"] {
        sqlite3(run.db(), &format!("UPDATE Probe SET v = '{round}';"));
        let (b, _) = run.backup_after(10);
        assert_eq!(rebuild_of(&b), "updated", "{b}");
        sqlite3(&other.db_path, &format!("UPDATE Probe SET v = '{round}';"));
        let b = backup_other(&run.env, &other.data_dir, run.clock + 5);
        assert_eq!(rebuild_of(&b), "updated", "{b}");
    }

    // The other data dir's database moved and linked back: it is read, and kept, at its
    // new path; the next backup of this one removes the slot of the old one.
    let moved_db = other.root.join("moved.db");
    fs::rename(&other.db_path, &moved_db).unwrap();
    std::os::unix::fs::symlink(&moved_db, &other.db_path).unwrap();
    sqlite3(run.db(), "UPDATE Probe SET v = 'cccccccd';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "updated", "{b}");
    assert_eq!(
        kept_files(&run.env.repo).len(),
        3,
        "the moved one's slot goes"
    );
    sqlite3(&moved_db, "UPDATE Probe SET v = 'moved';");
    let b = backup_other(&run.env, &other.data_dir, run.clock + 5);
    assert_eq!(rebuild_of(&b), "whole", "{b}");
    assert_eq!(kept_files(&run.env.repo).len(), 6, "kept at its new path");

    // The other data dir moved away: the next backup of this one leaves no copy of its
    // database behind.
    let moved = run.env.root.join("moved");
    fs::rename(&other.root, &moved).unwrap();
    sqlite3(run.db(), "UPDATE Probe SET v = 'dddddddd';");
    let (b, _) = run.backup_after(10);
    assert_eq!(rebuild_of(&b), "updated", "{b}");
    assert_eq!(
        kept_files(&run.env.repo).len(),
        3,
        "{:?}",
        kept_files(&run.env.repo)
    );
    run.assert_all_restore();
}

/// The scratch files of database proofs in the repository's `tmp/`.
fn proof_scratch(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo.join("tmp"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("db-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_backup_killed_once_its_proof_held_leaves_no_scratch_behind() {
    let mut run = Run::new();
    let data = run.fx.data_dir.to_str().unwrap().to_string();
    // Killed with its capture, dump, rebuild and row list in `tmp/`: first a proof that
    // rebuilt whole, then one that brought the kept rebuild up to date (whose record it
    // had removed: the next backup rebuilds whole).
    for change in ["bbbbbbbb", "cccccccc"] {
        sqlite3(run.db(), &format!("UPDATE Probe SET v = '{change}';"));
        run.clock += 10;
        run.env
            .cmd(&["backup", "--init", "--data-dir", &data])
            .clock_at(run.clock)
            .crash_at("backup-db-proven")
            .crashes();
        let left = proof_scratch(&run.env.repo);
        assert!(left.iter().any(|n| n.starts_with("db-rows-")), "{left:?}");
        let (b, _) = run.backup_after(10);
        assert_eq!(rebuild_of(&b), "whole", "{b}");
        let left = proof_scratch(&run.env.repo);
        assert!(left.is_empty(), "{change}: {left:?}");
    }
    run.assert_all_restore();
}

#[test]
fn a_database_reached_by_two_paths_is_proven_twice_with_one_slot() {
    let mut run = Run::new();
    // A plugin folder's link to the server's database: the selection reads it twice.
    let link = run.fx.data_dir.join("data/linked.db");
    std::os::unix::fs::symlink(run.db(), &link).unwrap();
    let data = run.fx.data_dir.to_str().unwrap().to_string();
    let proofs = |change: &str, run: &mut Run| -> Vec<String> {
        sqlite3(run.db(), &format!("UPDATE Probe SET v = '{change}';"));
        run.clock += 10;
        let b = run
            .env
            .cmd(&["backup", "--init", "--data-dir", &data])
            .clock_at(run.clock)
            .json(0);
        let mut how: Vec<String> = b["proofs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rebuild"].as_str().unwrap().to_string())
            .collect();
        how.sort();
        how
    };
    assert_eq!(proofs("bbbbbbbb", &mut run), ["whole", "whole"]);
    assert_eq!(kept_files(&run.env.repo).len(), 3, "one slot");
    for change in ["cccccccc", "dddddddd"] {
        assert_eq!(proofs(change, &mut run), ["updated", "whole"], "{change}");
        assert_eq!(kept_files(&run.env.repo).len(), 3, "one slot");
    }
    let check = run.env.json(&["check", "--read-data"], 0);
    assert_eq!(
        check["problems"].as_array().map(Vec::len),
        Some(0),
        "{check}"
    );
}
