//! `database.xml` (Jellyfin 12): a database relocated with the `path` option is captured
//! and restored where it lives; `lockingmode` EXCLUSIVE on a running server is reported
//! with the fix instead of waiting for ever; a database other than SQLite is refused.

mod common;

use std::fs;
use std::path::Path;

use common::env::{s, Env};
use common::fixture::Fixture;
use common::sqlcli::{dump_of, hold, sqlite3};

/// Write `database.xml` as the server serialises its options: `DatabaseType` and the
/// custom options given.
fn database_xml(fx: &Fixture, database_type: &str, options: &[(&str, &str)]) {
    let opts: String = options
        .iter()
        .map(|(k, v)| {
            format!(
                "      <CustomDatabaseOption>\n        <Key>{k}</Key>\n        <Value>{v}</Value>\n      </CustomDatabaseOption>\n"
            )
        })
        .collect();
    fs::write(
        fx.config_dir.join("database.xml"),
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
<DatabaseConfigurationOptions xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n\
  <DatabaseType>{database_type}</DatabaseType>\n\
  <CustomProviderOptions>\n\
    <PluginName>{database_type}</PluginName>\n\
    <PluginAssembly />\n\
    <ConnectionString />\n\
    <Options>\n{opts}    </Options>\n\
  </CustomProviderOptions>\n\
  <LockingBehavior>NoLock</LockingBehavior>\n\
</DatabaseConfigurationOptions>\n"
        ),
    )
    .unwrap();
}

fn users(db: &Path) -> String {
    sqlite3(db, "SELECT Username FROM Users ORDER BY Username;")
}

#[test]
fn a_relocated_database_is_captured_and_restored_where_it_lives() {
    let env = Env::new();
    let fx = env.small_fixture();
    let fast = env.root.join("fast-disk/jellyfin");
    fs::create_dir_all(&fast).unwrap();
    let db = fast.join("library.sqlite");
    fs::rename(&fx.db_path, &db).unwrap();
    fs::write(fast.join("unrelated.txt"), "not Jellyfin's").unwrap();
    database_xml(&fx, "Jellyfin-SQLite", &[("path", db.to_str().unwrap())]);

    let b = env.backup(&fx, &["--name", "before"]);
    let snap = &b["snapshot"];
    let roots = snap["roots"].as_array().unwrap();
    assert!(
        roots
            .iter()
            .any(|r| r["label"] == "database" && r["path"] == fast.to_str().unwrap()),
        "{snap}"
    );
    let dbs = snap["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 1, "{snap}");
    assert_eq!(dbs[0]["root"], "database");
    assert_eq!(dbs[0]["rel"], "library.sqlite");
    // Its migrations are read like those of jellyfin.db in the data dir.
    assert_eq!(snap["jellyfin_version"], "10.11.3", "{snap}");
    let ls = s(&env.expect(&["ls", "before", "database"], 0).stdout);
    assert!(
        ls.contains("library.sqlite") && !ls.contains("unrelated"),
        "{ls}"
    );

    // The server changes the database; the rollback puts it back where it lives and
    // leaves the rest of that directory alone.
    let before = dump_of(&db);
    let before_users = users(&db);
    sqlite3(&db, "DELETE FROM Users;");
    assert_ne!(users(&db), before_users);
    // While a server has it open, an in-place restore refuses, as for one in the data dir.
    let mut server = hold(&db, "NORMAL", "SELECT count(*) FROM Users");
    let out = env.expect(&["restore", "before", "--in-place"], 17);
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        s(&out.stderr).contains("library.sqlite"),
        "{}",
        s(&out.stderr)
    );
    let out = env.expect(&["restore", "before", "--in-place"], 0);
    assert!(
        s(&out.stdout).contains(db.to_str().unwrap()),
        "{}",
        s(&out.stdout)
    );
    assert_eq!(dump_of(&db), before);
    assert!(fast.join("unrelated.txt").is_file());
    assert!(
        !fx.db_path.exists(),
        "nothing is written at the usual place"
    );

    // Into a new directory: under the root's label.
    let (target, _) = env.restore_to("before", "elsewhere");
    assert_eq!(dump_of(&target.join("database/library.sqlite")), before);

    // Its disk not mounted: no snapshot that would claim a database it does not have.
    let moved = env.root.join("fast-disk-unmounted");
    fs::rename(env.root.join("fast-disk"), &moved).unwrap();
    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["backup", "--data-dir", data], 14);
    assert!(
        s(&out.stderr).contains("is the disk that holds it mounted"),
        "{}",
        s(&out.stderr)
    );
}

#[test]
fn exclusive_locking_on_a_running_server_is_reported_with_the_fix() {
    let env = Env::new();
    let fx = env.small_fixture();
    database_xml(&fx, "Jellyfin-SQLite", &[("lockingmode", "EXCLUSIVE")]);
    // A server holding the database as SQLite's EXCLUSIVE mode does: from its first
    // read until it exits.
    let mut server = hold(&fx.db_path, "EXCLUSIVE", "SELECT count(*) FROM Users");
    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["backup", "--data-dir", data], 17);
    server.kill().unwrap();
    server.wait().unwrap();
    let err = s(&out.stderr);
    let xml = fx.config_dir.join("database.xml");
    assert!(
        err.contains("EXCLUSIVE")
            && err.contains("lockingmode")
            && err.contains(xml.to_str().unwrap())
            && err.contains("set it to NORMAL"),
        "{err}"
    );
    // Stopped, the server holds nothing: the backup goes ahead.
    env.backup(&fx, &[]);
}

#[test]
fn a_database_other_than_sqlite_is_refused() {
    let env = Env::new();
    let fx = env.small_fixture();
    database_xml(&fx, "PLUGIN_PROVIDER", &[]);
    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["backup", "--data-dir", data], 14);
    let err = s(&out.stderr);
    assert!(
        err.contains("database.xml")
            && err.contains("DatabaseType is PLUGIN_PROVIDER")
            && err.contains("Jellyfin-SQLite"),
        "{err}"
    );
    let snapshots = env.repo.join("snapshots");
    assert!(
        !snapshots.exists() || fs::read_dir(&snapshots).unwrap().next().is_none(),
        "no snapshot was taken"
    );
}
