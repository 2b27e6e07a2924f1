//! End-to-end tests of database capture through the built binary: logical
//! capture and rebuild, dedup across VACUUM and a day of use, in-place restore decided by
//! dump, the physical fallback for virtual tables, and list chunks surviving gc.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::env::Env;
use common::fixture::{self, FixtureSpec, Layout};
use common::sqlcli::side;
use common::verify::{assert_same, db_content, describe, expected_state, read_only as ro};
use rusqlite::Connection;
use serde_json::Value;

/// The small Docker data dir with `db_rows` rows in its database.
fn fixture_with_rows(env: &Env, db_rows: usize) -> fixture::Fixture {
    let mut spec = FixtureSpec::small(Layout::Docker);
    spec.db_rows = db_rows;
    env.fixture(&spec)
}

fn summary(v: &Value) -> &Value {
    &v["snapshot"]["summary"]
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn schema(c: &Connection) -> Vec<(String, String, String, Option<String>)> {
    let mut st = c
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn settings(c: &Connection) -> (i64, i64, i64, String) {
    let int = |p: &str| {
        c.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
            .unwrap()
    };
    (
        int("user_version"),
        int("application_id"),
        int("page_size"),
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap(),
    )
}

/// Everything a restored database must show, compared with the source.
#[track_caller]
fn assert_db_exact(restored: &Path, original: &Path) {
    let (r, o) = (ro(restored), ro(original));
    let ok: String = r
        .query_row("PRAGMA integrity_check", [], |x| x.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let fk: i64 = r
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |x| {
            x.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
    assert_eq!(schema(&r), schema(&o));
    assert_eq!(settings(&r), settings(&o));
    drop((r, o));
    assert_eq!(db_content(restored), db_content(original));
}

fn db_size(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Scattered updates like a day of Jellyfin use: played state, refreshed metadata, a few
/// new and deleted items, activity. Returns the number of rows touched.
fn day_of_use(db: &Path, seed: i64) -> usize {
    let c = Connection::open(db).unwrap();
    let mut n = 0;
    c.execute_batch("BEGIN").unwrap();
    n += c
        .execute(
            r#"UPDATE "UserData" SET "Played" = 1, "PlayCount" = "PlayCount" + 1,
               "LastPlayedDate" = '2026-03-01 20:00:00'
               WHERE (rowid * 7919 + ?1) % 100 = 0"#,
            [seed],
        )
        .unwrap();
    n += c
        .execute(
            r#"UPDATE "BaseItems" SET "DateModified" = '2026-03-01 04:00:00'
               WHERE (rowid * 104729 + ?1) % 200 = 0"#,
            [seed],
        )
        .unwrap();
    n += c
        .execute(
            r#"DELETE FROM "BaseItems" WHERE (rowid * 15485863 + ?1) % 1000 = 0"#,
            [seed],
        )
        .unwrap();
    c.execute_batch("COMMIT").unwrap();
    n
}

#[test]
fn logical_capture_restores_an_exact_database() {
    let env = Env::new();
    let fx = fixture_with_rows(&env, 3000);
    {
        let c = Connection::open(&fx.db_path).unwrap();
        c.execute_batch(
            "PRAGMA user_version = 7; PRAGMA application_id = 1245790; \
             CREATE TABLE Kinds (Id INTEGER PRIMARY KEY AUTOINCREMENT, I, R, T, B, N); \
             INSERT INTO Kinds (I, R, T, B, N) VALUES (-9223372036854775808, 1.5e300, 'é', x'00ff', NULL); \
             INSERT INTO Kinds (I, R, T, B, N) VALUES (1, -0.0, '', zeroblob(100000), NULL); \
             CREATE TABLE Wr (K TEXT PRIMARY KEY, V) WITHOUT ROWID; \
             INSERT INTO Wr VALUES ('b', 2), ('a', 1);",
        )
        .unwrap();
    }
    let b = env.backup(&fx, &[]);
    assert!(
        summary(&b)["db_physical"].as_array().unwrap().is_empty(),
        "{b}"
    );
    // The dump, not the file, was stored: it leaves indexes and free space out.
    assert!(u(&summary(&b)["db_bytes"]) < db_size(&fx.db_path), "{b}");

    let (target, r) = env.restore_to("latest", "restored");
    let restored = target.join("data/jellyfin.db");
    // (Before anything opens it: a read-only SQLite connection leaves -wal/-shm behind.)
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(
            !side(&restored, suffix).exists(),
            "{suffix} left next to the rebuilt db"
        );
    }
    assert_same(&describe(&target, &[]), &expected_state(&fx));
    assert_db_exact(&restored, &fx.db_path);
    // The report counts the rebuilt file's real size.
    assert!(
        u(&r["report"]["bytes_written"]) >= db_size(&restored),
        "{r}"
    );
    // No restore temp files are left in the directory.
    let leftovers: Vec<_> = fs::read_dir(target.join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".jellysnap"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn vacuum_and_a_day_of_use_add_little() {
    let env = Env::new();
    let fx = fixture_with_rows(&env, 20_000);
    let size = db_size(&fx.db_path);
    assert!(size > 8 << 20, "fixture db is {size} bytes");
    env.backup(&fx, &[]);

    let c = Connection::open(&fx.db_path).unwrap();
    c.execute_batch("VACUUM").unwrap();
    drop(c);
    let b = env.backup(&fx, &[]);
    let vacuum = u(&summary(&b)["new_stored_bytes"]);
    assert!(
        vacuum * 20 <= db_size(&fx.db_path),
        "VACUUM added {vacuum} bytes of a {size}-byte database"
    );

    let touched = day_of_use(&fx.db_path, 11);
    assert!(touched > 100, "{touched}");
    let b = env.backup(&fx, &[]);
    let day = u(&summary(&b)["new_stored_bytes"]);
    assert!(
        day * 100 <= db_size(&fx.db_path) * 15,
        "a day of use added {day} bytes of a {size}-byte database"
    );
    eprintln!(
        "db {size} bytes: VACUUM added {vacuum} ({:.2}%), a day of use {day} ({:.2}%)",
        vacuum as f64 * 100.0 / size as f64,
        day as f64 * 100.0 / size as f64
    );

    day_of_use(&fx.db_path, 12);
    let c = Connection::open(&fx.db_path).unwrap();
    c.execute_batch("VACUUM").unwrap();
    drop(c);
    let b = env.backup(&fx, &[]);
    let both = u(&summary(&b)["new_stored_bytes"]);
    assert!(both * 100 <= db_size(&fx.db_path) * 15, "{both}");

    let (target, _) = env.restore_to("latest", "restored");
    assert_db_exact(&target.join("data/jellyfin.db"), &fx.db_path);
}

#[test]
fn in_place_restore_rebuilds_a_changed_database_once() {
    let env = Env::new();
    let fx = fixture_with_rows(&env, 2000);
    let original = env.root.join("original.db");
    fs::copy(&fx.db_path, &original).unwrap();
    env.backup(&fx, &[]);

    day_of_use(&fx.db_path, 3);
    {
        let c = Connection::open(&fx.db_path).unwrap();
        c.execute_batch("CREATE TABLE Upgrade (x); INSERT INTO Upgrade VALUES (1);")
            .unwrap();
    }
    let r = env.json(&["restore", "latest", "--in-place"], 0);
    assert!(u(&r["report"]["files_written"]) >= 1, "{r}");
    assert_db_exact(&fx.db_path, &original);

    // Unchanged now: decided by dumping it, so nothing is rewritten, and looking leaves
    // no side files behind (a dry run changes nothing).
    let ino = fs::metadata(&fx.db_path).unwrap().ino();
    for suffix in ["-wal", "-shm"] {
        // Left (empty) by this test's own read-only connections above.
        let _ = fs::remove_file(side(&fx.db_path, suffix));
    }
    env.expect(&["restore", "latest", "--in-place", "--dry-run"], 0);
    for suffix in ["-wal", "-shm"] {
        assert!(!side(&fx.db_path, suffix).exists(), "dry run left {suffix}");
    }
    let r = env.json(&["restore", "latest", "--in-place"], 0);
    assert_eq!(u(&r["report"]["files_written"]), 0, "{r}");
    assert_eq!(fs::metadata(&fx.db_path).unwrap().ino(), ino);
    assert_db_exact(&fx.db_path, &original);

    // A WAL with committed changes beside an otherwise identical file is not "unchanged":
    // restore removes the WAL, so it rebuilds the file.
    {
        let c = Connection::open(&fx.db_path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
            .unwrap();
        c.execute(r#"DELETE FROM "UserData" WHERE rowid % 2 = 0"#, [])
            .unwrap();
        let wal = side(&fx.db_path, "-wal");
        let copy = env.root.join("live-wal");
        fs::copy(&wal, &copy).unwrap();
        // Simulate a crashed server: the WAL stays, the connection goes without a
        // checkpoint (a copy of the WAL is put back after close).
        drop(c);
        fs::copy(&copy, &wal).unwrap();
    }
    let r = env.json(&["restore", "latest", "--in-place"], 0);
    assert!(u(&r["report"]["files_written"]) >= 1, "{r}");
    assert_db_exact(&fx.db_path, &original);
}

#[test]
fn virtual_tables_fall_back_to_a_physical_copy() {
    let env = Env::new();
    let fx = fixture_with_rows(&env, 500);
    {
        let c = Connection::open(&fx.db_path).unwrap();
        c.execute_batch(
            r#"CREATE VIRTUAL TABLE SearchIndex USING fts5(Name, Overview);
               INSERT INTO SearchIndex SELECT "Name", coalesce("Overview", '') FROM "BaseItems";"#,
        )
        .unwrap();
    }
    let b = env.backup(&fx, &[]);
    let fallbacks = summary(&b)["db_physical"].as_array().unwrap();
    assert_eq!(fallbacks.len(), 1, "{b}");
    assert!(
        fallbacks[0].as_str().unwrap().contains("jellyfin.db"),
        "{b}"
    );
    let (target, _) = env.restore_to("latest", "restored");
    let restored = target.join("data/jellyfin.db");
    assert_db_exact(&restored, &fx.db_path);
    let hits: i64 = ro(&restored)
        .query_row(
            "SELECT count(*) FROM SearchIndex WHERE SearchIndex MATCH 'the'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let want: i64 = ro(&fx.db_path)
        .query_row(
            "SELECT count(*) FROM SearchIndex WHERE SearchIndex MATCH 'the'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hits, want);

    // In place: the physical copy compares by its bytes, unchanged after the restore.
    let r = env.json(&["restore", "latest", "--in-place"], 0);
    assert!(r["report"]["errors"].as_array().unwrap().is_empty(), "{r}");
    let r = env.json(&["restore", "latest", "--in-place"], 0);
    assert_eq!(u(&r["report"]["files_written"]), 0, "{r}");
}

#[test]
fn gc_keeps_list_chunks_of_live_files() {
    let env = Env::new();
    let fx = fixture_with_rows(&env, 5000);
    // A large ordinary file gets an indirect chunk list too (> 64 chunks of ~256 KiB).
    let big = fx.data_dir.join("data/collections/big.bin");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    let mut rng = fixture::Rng::new(5);
    let mut bytes = vec![0u8; 24 << 20];
    rng.fill(&mut bytes);
    fs::write(&big, &bytes).unwrap();
    fixture::set_tree_mtimes(&fx.data_dir.join("data/collections"), 1_700_000_000).unwrap();

    env.backup(&fx, &[]);
    let c1 = env.json(&["check"], 0);
    assert!(u(&c1["list_chunks"]) >= 2, "{c1}");

    day_of_use(&fx.db_path, 5);
    let mut bytes2 = bytes.clone();
    bytes2[10 << 20] ^= 0xff;
    fs::write(&big, &bytes2).unwrap();
    env.backup(&fx, &[]);
    let expected = expected_state(&fx);

    env.json(&["forget", "--keep-last", "1", "--include-named"], 0);
    // Every pack with anything unused is repacked (what stays unused is under 5% of the
    // repository here, which a default gc would leave).
    let g = env.json(&["gc", "--max-unused", "0"], 0);
    assert!(u(&g["report"]["bytes_freed"]) > 0, "{g}");
    let c2 = env.json(&["check", "--read-data"], 0);
    assert!(u(&c2["list_chunks"]) >= 2, "{c2}");

    let (target, _) = env.restore_to("latest", "restored");
    assert_same(&describe(&target, &[]), &expected);
    assert_db_exact(&target.join("data/jellyfin.db"), &fx.db_path);
    assert_eq!(
        fs::read(target.join("data/collections/big.bin")).unwrap(),
        bytes2
    );
}
