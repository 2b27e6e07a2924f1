//! Rolling a server back with databases written by another SQLite: every stored database
//! is proven restorable at backup, a restore is all or nothing for the database, and
//! `check --read-data` names every snapshot whose database would not restore exactly.
//! The databases here are written by the system `sqlite3` CLI and Python's `sqlite3`
//! (another SQLite version and build than jellysnap's), as a real server's are.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::env::{s, Env};
use common::fixture::Fixture;
use common::sqlcli::{commit_to_wal_and_die, dump_of, side, sqlite3, sqlite3_on_copy};
use serde_json::Value;

/// What the writer's SQLite says of a database: integrity and foreign keys.
fn checks_of(db: &Path) -> String {
    sqlite3_on_copy(db, "PRAGMA integrity_check; PRAGMA foreign_key_check;")
}

/// An empty repository and the small data dir.
fn setup(env: &Env) -> Fixture {
    let fx = env.small_fixture();
    env.json(&["init"], 0);
    fx
}

/// The backup's snapshot record's entry for jellyfin.db.
fn db_record(b: &Value) -> Value {
    let dbs = b["snapshot"]["databases"].as_array().unwrap();
    dbs.iter()
        .find(|d| d["rel"].as_str().unwrap().ends_with("jellyfin.db"))
        .unwrap_or_else(|| panic!("no jellyfin.db in {b}"))
        .clone()
}

/// What real servers leave: Debian's SQLite (no STAT4) ran ANALYZE, rows violate a
/// foreign key and a CHECK constraint, an AUTOINCREMENT table was dropped (its
/// sqlite_sequence stays), a table name's 7th byte is inside a multi-byte character.
const REAL_WORLD: &str = r#"
    CREATE TABLE "Parents" ("Id" INTEGER PRIMARY KEY, "Name" TEXT);
    CREATE TABLE "Children" ("Id" INTEGER PRIMARY KEY AUTOINCREMENT,
        "ParentId" INTEGER REFERENCES "Parents"("Id") ON DELETE CASCADE, "V" REAL);
    INSERT INTO "Parents" VALUES (1, 'one');
    INSERT INTO "Children" ("ParentId", "V") VALUES (1, 0.1), (2, 0.2), (99, 1e308);
    CREATE TABLE "Checked" ("X" INTEGER CHECK ("X" > 0));
    PRAGMA ignore_check_constraints = ON;
    INSERT INTO "Checked" VALUES (5), (-1);
    CREATE TABLE "Gone" ("Id" INTEGER PRIMARY KEY AUTOINCREMENT);
    INSERT INTO "Gone" DEFAULT VALUES;
    DROP TABLE "Gone";
    CREATE TABLE "abcdefé" (x);
    INSERT INTO "abcdefé" VALUES ('ü');
    CREATE INDEX "IX_Children_ParentId" ON "Children" ("ParentId");
    ANALYZE;
"#;

#[test]
fn databases_from_another_sqlite_restore_exactly() {
    let env = Env::new();
    let fx = setup(&env);
    sqlite3(&fx.db_path, REAL_WORLD);
    let tables = sqlite3(
        &fx.db_path,
        "SELECT name FROM sqlite_schema WHERE name LIKE 'sqlite_stat%'",
    );
    assert_eq!(
        tables.trim(),
        "sqlite_stat1",
        "Debian's SQLite has no STAT4"
    );
    let original_dump = dump_of(&fx.db_path);
    let original_checks = checks_of(&fx.db_path);
    assert!(
        original_checks.contains("CHECK constraint failed"),
        "{original_checks}"
    );
    assert!(original_checks.contains("Children"), "{original_checks}");

    let b = env.backup(&fx, &[]);
    let rec = db_record(&b);
    assert_eq!(rec["capture"], "logical", "{rec}");
    assert!(
        rec["verified"].as_str().is_some_and(|v| v.len() == 64),
        "{rec}"
    );

    // Into a new directory.
    let t = env.root.join("restored");
    env.json(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
    let restored = t.join("data/jellyfin.db");
    assert_eq!(
        dump_of(&restored),
        original_dump,
        ".dump must be byte for byte the same"
    );
    assert_eq!(checks_of(&restored), original_checks);

    // In place, over a database an upgrade changed.
    sqlite3(
        &fx.db_path,
        r#"CREATE TABLE "Migrated" (x); DELETE FROM "Parents"; PRAGMA user_version = 7;"#,
    );
    assert_ne!(dump_of(&fx.db_path), original_dump);
    let r = env.json(&["restore", "latest", "--in-place"], 0);
    let actions = r["plan"]["actions"].as_array().unwrap();
    let step = actions
        .iter()
        .find(|a| a["action"] == "database")
        .unwrap_or_else(|| panic!("no database step in {r}"));
    assert_eq!(step["verified_at_backup"], true);
    assert_eq!(dump_of(&fx.db_path), original_dump);
    assert_eq!(checks_of(&fx.db_path), original_checks);
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(
            !side(&fx.db_path, suffix).exists(),
            "{suffix} left beside the restored database"
        );
    }
    env.json(&["check", "--read-data"], 0);
}

#[test]
fn values_another_sqlite_would_recompute_are_stored_physically() {
    for (what, sql) in [
        (
            "stored generated column",
            r#"CREATE TABLE "G" ("X" REAL, "T" TEXT GENERATED ALWAYS AS (CAST("X" AS TEXT)) STORED);
               INSERT INTO "G" ("X") VALUES (0.1 + 0.2);"#,
        ),
        (
            "expression index",
            r#"CREATE TABLE "E" ("X" REAL);
               INSERT INTO "E" VALUES (0.1 + 0.2);
               CREATE INDEX "IX_E" ON "E" (CAST("X" AS TEXT));"#,
        ),
    ] {
        let env = Env::new();
        let fx = setup(&env);
        sqlite3(&fx.db_path, sql);
        let original_dump = dump_of(&fx.db_path);
        let original_checks = checks_of(&fx.db_path);
        let b = env.backup(&fx, &[]);
        let rec = db_record(&b);
        assert_eq!(rec["capture"], "physical", "{what}: {rec}");
        assert!(
            rec["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: {rec}"
        );
        let snaps = env.json(&["snapshots"], 0);
        assert_eq!(snaps[0]["databases"][0]["capture"], "physical", "{what}");
        let t = env.root.join("restored");
        env.json(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
        let restored = t.join("data/jellyfin.db");
        assert_eq!(dump_of(&restored), original_dump, "{what}");
        assert_eq!(checks_of(&restored), original_checks, "{what}");
    }
}

#[test]
fn utf16_databases_keep_text_that_is_not_valid_utf16() {
    for enc in ["UTF-16le", "UTF-16be"] {
        let env = Env::new();
        let fx = setup(&env);
        fs::remove_file(&fx.db_path).unwrap();
        // A lone surrogate (D800) and a lone low surrogate (DC00), as stored bytes.
        sqlite3(
            &fx.db_path,
            &format!(
                r#"PRAGMA encoding = '{enc}';
                   CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, w);
                   INSERT INTO t (v, w) VALUES ('héllo', 1), (CAST(x'00D84100' AS TEXT), CAST(x'00DC' AS TEXT));
                   CREATE TABLE k (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
                   INSERT INTO k VALUES (CAST(x'3DD8' AS TEXT), 'x');"#
            ),
        );
        let raw = |db: &Path| {
            sqlite3_on_copy(
                db,
                "SELECT hex(CAST(v AS BLOB)), typeof(v), hex(CAST(w AS BLOB)) FROM t;
                 SELECT hex(CAST(k AS BLOB)) FROM k;",
            )
        };
        let original = raw(&fx.db_path);
        let b = env.backup(&fx, &[]);
        assert_eq!(db_record(&b)["capture"], "logical", "{enc}");
        let t = env.root.join("restored");
        env.json(&["restore", "latest", "--target", t.to_str().unwrap()], 0);
        assert_eq!(raw(&t.join("data/jellyfin.db")), original, "{enc}");
        assert_eq!(
            dump_of(&t.join("data/jellyfin.db")),
            dump_of(&fx.db_path),
            "{enc}"
        );
    }
}

/// The database's first data chunk: flip a byte of its stored payload.
fn damage_database(env: &Env) {
    use jellysnap::Node;
    let repo =
        jellysnap::Repository::open(&jellysnap::Place::local(&env.repo), jellysnap::Access::Read)
            .unwrap();
    let snap = repo.resolve("latest").unwrap();
    let mut tree = repo.load_tree(&snap.record.tree).unwrap();
    let mut node = None;
    for part in ["data", "data", "jellyfin.db"] {
        if let Some(Node::Dir { tree: t }) = &node {
            tree = repo.load_tree(t).unwrap();
        }
        node = Some(tree.find(part.as_bytes()).unwrap().node.clone());
    }
    let chunks = repo.file_chunks(node.as_ref().unwrap()).unwrap();
    let at = repo.index().get(&chunks[0].id).unwrap().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(repo.pack_location(repo.pack_key(at.pack, at.kind)))
        .unwrap();
    let off = at.offset + jellysnap::decoders::RECORD_HEADER_LEN as u64 + 3;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], off).unwrap();
}

/// A server killed after it committed to its WAL: the rows live only in `-wal`.
fn crash_with_committed_wal(db: &Path) {
    commit_to_wal_and_die(
        db,
        &[
            "CREATE TABLE after_upgrade (x)",
            "INSERT INTO after_upgrade VALUES ('committed, only in the WAL')",
        ],
    );
}

#[test]
fn failed_database_restore_changes_nothing() {
    let env = Env::new();
    let fx = setup(&env);
    sqlite3(&fx.db_path, "ANALYZE;");
    env.backup(&fx, &[]);
    damage_database(&env);
    crash_with_committed_wal(&fx.db_path);
    // Something else the restore would change, to see that nothing changed.
    let config = fx.config_dir.join("system.xml");
    fs::write(
        &config,
        b"<ServerConfiguration>edited</ServerConfiguration>",
    )
    .unwrap();
    let before: Vec<(PathBuf, Option<Vec<u8>>)> = [
        fx.db_path.clone(),
        side(&fx.db_path, "-wal"),
        side(&fx.db_path, "-shm"),
        config.clone(),
    ]
    .into_iter()
    .map(|p| {
        let b = fs::read(&p).ok();
        (p, b)
    })
    .collect();

    let dry = env.expect(
        &["restore", "latest", "--in-place", "--force", "--dry-run"],
        0,
    );
    assert!(
        s(&dry.stdout).contains("database") && s(&dry.stdout).contains("verified"),
        "{}",
        s(&dry.stdout)
    );
    let out = env.expect(&["restore", "latest", "--in-place", "--force"], 19);
    let err = s(&out.stderr);
    assert!(
        err.contains("jellyfin.db") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(err.contains("check"), "{err}");
    for (p, b) in &before {
        assert_eq!(&fs::read(p).ok(), b, "{} changed", p.display());
    }
    let leftovers: Vec<_> = fs::read_dir(fx.db_path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".jellysnap"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The WAL's rows are still there for the (old) server.
    assert!(sqlite3(&fx.db_path, "SELECT x FROM after_upgrade").contains("only in the WAL"));
}

/// Replace the latest snapshot's record by one whose database proof no longer matches
/// its dump, as if this jellysnap's SQLite rebuilt it differently from the one that
/// verified it. Returns the new snapshot id.
fn forge_proof(env: &Env) -> String {
    let dir = env.repo.join("snapshots");
    let file = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let id = jellysnap::SnapshotId::from_hex(file.file_name().unwrap().to_str().unwrap()).unwrap();
    let mut rec = jellysnap::SnapshotRecord::decode(&fs::read(&file).unwrap(), &id).unwrap();
    rec.databases[0].verified = Some("00".repeat(32));
    let bytes = rec.encode().unwrap();
    let new_id = jellysnap::SnapshotId::of(&bytes);
    fs::write(dir.join(new_id.to_hex()), &bytes).unwrap();
    fs::remove_file(&file).unwrap();
    new_id.to_hex()
}

#[test]
fn check_and_restore_name_a_database_that_would_not_restore_exactly() {
    let env = Env::new();
    let fx = setup(&env);
    env.backup(&fx, &[]);
    let id = forge_proof(&env);
    let r = env.json(&["check", "--read-data"], 18);
    let probs = r["problems"].as_array().unwrap();
    assert_eq!(probs.len(), 1, "{r}");
    assert_eq!(probs[0]["kind"], "database");
    assert!(
        probs[0]["detail"].as_str().unwrap().contains(&id[..8]),
        "{r}"
    );
    assert_eq!(r["affected"][0]["snapshot"], id.as_str());
    assert_eq!(r["databases_rebuilt"], 1);
    let t = env.root.join("restored");
    env.expect(&["restore", &id, "--target", t.to_str().unwrap()], 19);
    assert!(
        !t.exists(),
        "a failed restore into a new target leaves no target behind"
    );
    // The files are written while the database is rebuilt: into an empty target that
    // was already there, a failed database takes them back and leaves the target empty.
    fs::create_dir(&t).unwrap();
    env.expect(&["restore", &id, "--target", t.to_str().unwrap()], 19);
    let left: Vec<_> = fs::read_dir(&t).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
