//! The Jellyfin version a snapshot holds, and what a rollback means for the server: data
//! dirs shaped as 10.10, 10.11 and 12 leave them (migration history written by the system
//! `sqlite3`, as another SQLite than jellysnap's writes it), the server's log beating the
//! migration table, the listing's version and hook columns.

mod common;

use std::fs;
use std::path::Path;

use common::env::{s, Env};
use common::fixture::{self, Fixture, FixtureSpec, Layout};
use common::sqlcli::sqlite3;
use serde_json::Value;

fn real_db() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/real/jellyfin-10.11.0-fresh.db")
}

/// The migration history of the real 10.11.0 database: (id, product version).
fn history_10_11_0() -> Vec<(String, String)> {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("j.db");
    fs::copy(real_db(), &copy).unwrap();
    sqlite3(
        &copy,
        "SELECT MigrationId || '|' || ProductVersion FROM __EFMigrationsHistory;",
    )
    .lines()
    .filter_map(|l| l.split_once('|'))
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// Migrations that releases after 10.11.0 added (from Jellyfin's own migrations).
const ADDED_10_11_7: &[&str] = &["20260206200000_FixLibrarySubtitleDownloadLanguages"];
const ADDED_12_0: &[&str] = &[
    "20260522092303_AddNormalizedUsername",
    "20260522092304_UpdateNormalizedUsername",
    "20260524120336_AddUniqueNormalizedUsernameIndex",
    "20260113102337_AddLinkedChildrenTable",
    "20260113120000_MigrateLinkedChildren",
    "20260113203012_ChangeOwnerIdToGuid",
    "20260113230000_CleanupOrphanedExtras",
    "20260113233000_AddForeignKeyToOwnerId",
    "20260113233500_DropExtraIdsColumn",
    "20260115120000_FixIncorrectOwnerIdRelationships",
    "20260116114245_AddLatestItemsDateCreatedIndexes",
    "20260118182305_AddIndicesToImageInfo",
    "20260130232147_AddBaseItemNameIndex",
    "20260206224832_IndexOptimizations",
    "20260215201634_ChangePrimaryVersionIdToGuid",
    "20260302090000_MigrateRatingLevels",
    "20260308123920_AddTypeCleanNameIndex",
    "20260504075755_AddPartialIndexForItemCounts",
    "20260508120000_MergeDuplicateMusicArtists",
    "20260508130000_MergeDuplicatePeople",
    "20260525010000_CleanupOrphanedExternalData",
    "20260531160000_DisableLegacyAuthorization",
    "20260610120000_RefreshCleanNamesAndValues",
    "20260722120000_RefreshForcedSortNames",
    "20260723111547_AllowDuplicatePlaylistChildren",
    "20260723120000_RecomputeSeriesPresentationKey",
    "20260724185102_AddPrimaryVersionIdIndex",
    "20260729120000_RestorePlaylistChildrenFromMetadata",
    "20260728170000_AddPeopleNameLowerIndex",
    "20260728182152_AddPeopleItemMapCoveringIndex",
];

/// The routine ids a 10.10.7 server lists in `migrations.xml`.
const ROUTINES_10_10_7: &[&str] = &[
    "3793eb59-bc8c-456c-8b9f-bd5a62a42978",
    "06387815-c3cc-421f-a888-fb5f9992bea8",
    "5c4b82a2-f053-4009-bd05-b6fcad82f14c",
    "a81f75e0-8f43-416f-a5e8-516ccab4d8cc",
    "acbe17b7-8435-4a83-8b64-6fcf162cb9bd",
    "ef103419-8451-40d8-9f34-d1a8e93a1679",
    "4124c2cd-e939-4ffb-9be9-9b311c413638",
    "eb58ebee-9514-4b9b-8225-12e1a40020df",
    "5f86e7f6-d966-4c77-849d-7a7b40b68c4e",
    "9b354818-94d5-4b68-ac49-e35cb85f9d84",
    "5bd72f41-e6f3-4f60-90aa-09869abe0e22",
    "34a1a1c4-5572-418e-a2f8-32cdfe2668e8",
    "615dfa9e-2497-4dbb-a472-61938b752c5b",
    "a6dcacf4-c057-4ef9-80d3-61cef9ddb4f0",
    "4fb5c950-1991-11ee-9b4b-0800200c9a66",
    "852816e0-2712-49a9-9240-c6fc5fcad1a8",
    "cf6fabc2-9fbe-4933-84a5-ffe52ef22a58",
    "a8e61960-7726-4450-8f3d-82c12daabbcb",
    "4ef123d5-8eff-4b0b-869d-3aed07a60e1b",
    "96c156a2-7a13-4b3b-a8b8-fb80c94d20c0",
    "d34bfc33-5d2e-4790-8085-069ef6eecb4e",
];

/// Replace the data dir's migration history with `rows`, as the server's SQLite would.
fn set_history(fx: &Fixture, rows: &[(String, String)]) {
    let mut sql = String::from("BEGIN; DELETE FROM __EFMigrationsHistory;");
    for (id, v) in rows {
        sql.push_str(&format!(
            "INSERT INTO __EFMigrationsHistory VALUES ('{id}', '{v}');"
        ));
    }
    sql.push_str("COMMIT;");
    sqlite3(&fx.db_path, &sql);
}

/// The server's log: a start of `version` now (as its log file writes it), or no log at
/// all.
fn set_log(fx: &Fixture, version: Option<&str>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let at = format!(
        "{}.{:03} +00:00",
        fixture::utc_datetime(now.as_secs() as i64),
        now.subsec_millis()
    );
    for e in fs::read_dir(&fx.log_dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("log_") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    if let Some(v) = version {
        fs::write(
            fx.log_dir.join("log_20260301.log"),
            format!(
                "[{at}] [INF] [1] Main: Jellyfin version: \"{v}\"\n\
                 [{at}] [INF] [1] Main: Environment Variables: []\n"
            ),
        )
        .unwrap();
    }
}

fn found(b: &Value) -> (String, String, bool) {
    let snap = &b["snapshot"];
    let src = &snap["jellyfin_version_source"];
    (
        snap["jellyfin_version"].as_str().unwrap_or("").to_string(),
        src["source"].as_str().unwrap_or("").to_string(),
        src["exact"].as_bool().unwrap_or(false),
    )
}

fn with(rows: &[(String, String)], added: &[&str], version: &str) -> Vec<(String, String)> {
    let mut all = rows.to_vec();
    all.extend(added.iter().map(|id| (id.to_string(), version.to_string())));
    all
}

#[test]
fn a_10_11_data_dir_the_log_beats_the_migration_table() {
    let env = Env::new();
    let fx = env.small_fixture();
    set_history(&fx, &history_10_11_0());
    set_log(&fx, None);
    // Without a log: the releases whose migrations the data has.
    let b = env.backup(&fx, &[]);
    assert_eq!(
        found(&b),
        ("10.11.0–10.11.6".into(), "database".into(), false)
    );
    // The server's log says which of them ran; a patch upgrade without a migration
    // changes it all the same.
    set_log(&fx, Some("10.11.3"));
    assert_eq!(
        found(&env.backup(&fx, &[])),
        ("10.11.3".into(), "log".into(), true)
    );
    set_log(&fx, Some("10.11.4"));
    assert_eq!(
        found(&env.backup(&fx, &[])),
        ("10.11.4".into(), "log".into(), true)
    );
    // A log the data contradicts (left by a newer server than the data knows: the data
    // was rolled back) is not believed.
    set_log(&fx, Some("10.11.8"));
    assert_eq!(
        found(&env.backup(&fx, &[])).0,
        "10.11.0–10.11.6",
        "the database's range"
    );
    // A later release's migration moves the range.
    set_history(&fx, &with(&history_10_11_0(), ADDED_10_11_7, "10.11.7.0"));
    set_log(&fx, None);
    assert_eq!(found(&env.backup(&fx, &[])).0, "10.11.7–10.11.9");

    let list = env.json(&["snapshots"], 0);
    let first = &list[0];
    assert_eq!(first["jellyfin_version_source"]["min"], "10.11.0");
    assert_eq!(first["jellyfin_version_source"]["max"], "10.11.6");
    let text = s(&env.expect(&["snapshots"], 0).stdout);
    assert!(text.contains("10.11.0–10.11.6 (db)"), "{text}");
    assert!(text.contains("10.11.4 "), "{text}");
}

#[test]
fn a_10_10_data_dir_shows_10_10() {
    let env = Env::new();
    let fx = env.fixture(&FixtureSpec::small(Layout::Debian));
    // 10.10: EF Core's own migrations only, in jellyfin.db; library.db beside it; the
    // code migrations in migrations.xml.
    let ef_only: Vec<(String, String)> = history_10_11_0()
        .into_iter()
        .filter(|(id, _)| id.as_str() <= "20240928082930_MarkSegmentProviderIdNonNullable")
        .map(|(id, _)| (id, "8.0.8".to_string()))
        .collect();
    assert_eq!(ef_only.len(), 15);
    set_history(&fx, &ef_only);
    sqlite3(
        &fx.data_dir.join("data/library.db"),
        "CREATE TABLE TypedBaseItems (guid BLOB PRIMARY KEY, data TEXT);",
    );
    set_log(&fx, None);
    let b = env.backup(&fx, &[]);
    assert_eq!(found(&b), ("10.10.x".into(), "database".into(), false));

    // migrations.xml as 10.10.7 leaves it narrows the range to the patch releases
    // that have all of its routines.
    let items: String = ROUTINES_10_10_7
        .iter()
        .map(|g| format!("    <ValueTupleOfGuidString>\n      <Item1>{g}</Item1>\n      <Item2>x</Item2>\n    </ValueTupleOfGuidString>\n"))
        .collect();
    fs::write(
        fx.config_dir.join("migrations.xml"),
        format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<MigrationOptions>\n  <Applied>\n{items}  </Applied>\n</MigrationOptions>\n"),
    )
    .unwrap();
    let b = env.backup(&fx, &[]);
    assert_eq!(
        found(&b),
        (
            "10.10.5–10.10.7".into(),
            "database+migrations.xml".into(),
            false
        )
    );
    // The Debian package's log dir is beside the data dir.
    set_log(&fx, Some("10.10.7"));
    assert_eq!(
        found(&env.backup(&fx, &[])),
        ("10.10.7".into(), "log".into(), true)
    );
}

#[test]
fn a_12_data_dir() {
    let env = Env::new();
    let fx = env.fixture(&FixtureSpec::small(Layout::LinuxServer));
    set_history(&fx, &with(&history_10_11_0(), ADDED_12_0, "12.0.0.0"));
    set_log(&fx, None);
    let b = env.backup(&fx, &[]);
    assert_eq!(found(&b).0, "12.0.0-rc5 or later");
    // linuxserver.io: the log is in /config/log, beside the data dir.
    set_log(&fx, Some("12.0.0"));
    assert_eq!(
        found(&env.backup(&fx, &[])),
        ("12.0.0".into(), "log".into(), true)
    );
}

#[test]
fn the_listing_marks_snapshots_a_hook_took() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(
        &fx,
        &["--tag", "hook:apt", "--name", "before-jellyfin-10.11.3"],
    );
    env.backup(&fx, &["--tag", "daily"]);
    let list = env.json(&["snapshots"], 0);
    assert_eq!(list[0]["hook"], "apt");
    assert_eq!(list[1]["hook"], Value::Null);
    // The table's TAGS column shows the hook's tag.
    let text = s(&env.expect(&["snapshots"], 0).stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("host ")).collect();
    assert!(lines[0].contains(" TAGS "), "{text}");
    let tags = lines[0].find(" TAGS ").unwrap() + 1;
    assert!(lines[1][tags..].starts_with("hook:apt "), "{text}");
    assert!(lines[2][tags..].starts_with("daily "), "{text}");
}

/// A data dir at 10.11.3 backed up before an upgrade, then the upgrade to 10.11.4 (no
/// new migration: only the log tells).
fn upgraded(env: &Env) -> Fixture {
    let fx = env.small_fixture();
    set_history(&fx, &history_10_11_0());
    set_log(&fx, Some("10.11.3"));
    env.backup(&fx, &["--name", "before-10.11.4"]);
    set_log(&fx, Some("10.11.4"));
    fx
}

/// A directory with a `dpkg-query` that answers as dpkg does with `version` of
/// jellyfin-server installed; put first on the `PATH`.
fn fake_dpkg(env: &Env, version: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = env.root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let script = bin.join("dpkg-query");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n# dpkg-query -W -f=FORMAT PACKAGE\nfor a; do p=$a; done\n\
             if [ \"$p\" = jellyfin-server ]; then printf 'install ok installed\\t{version}'; exit 0; fi\n\
             echo \"dpkg-query: no packages found matching $p\" >&2; exit 1\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_rollback_says_which_server_to_start() {
    let env = Env::new();
    let fx = upgraded(&env);
    let out = env
        .cmd(&["restore", "before-10.11.4", "--in-place", "--dry-run"])
        .env("PATH", fake_dpkg(&env, "10.11.4+deb12"))
        .expect(0);
    let text = s(&out.stdout);
    assert!(
        text.contains("rolls the data back from 10.11.4 to 10.11.3; start Jellyfin 10.11.3 afterwards (10.11.4 would migrate it again)"),
        "{text}"
    );
    // The installed package is newer than the snapshot's data: the commands that put the
    // right one in place without starting it on the data it has not got back yet.
    let err = s(&out.stderr);
    for want in [
        "the installed Jellyfin is 10.11.4 (jellyfin-server 10.11.4+deb12)",
        "echo DISABLE_JELLYFIN_AUTOSTART=1 | sudo tee -a /etc/default/jellyfin",
        "apt-cache policy jellyfin-server",
        "sudo apt-get install --allow-downgrades jellyfin-server=10.11.3+deb12 jellyfin-web=10.11.3+deb12",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    let plan = env
        .cmd(&["restore", "before-10.11.4", "--in-place", "--dry-run"])
        .env("PATH", fake_dpkg(&env, "10.11.4+deb12"))
        .json(0);
    let r = &plan["plan"]["rollback"];
    assert_eq!(r["direction"], "back", "{r}");
    assert_eq!(r["live"]["version"], "10.11.4");
    assert_eq!(r["snapshot"]["version"], "10.11.3");
    assert_eq!(r["installed"]["from"], "dpkg");
    assert_eq!(r["install"], "10.11.3+deb12");

    // The package already downgraded: no warning.
    let out = env
        .cmd(&["restore", "before-10.11.4", "--in-place", "--dry-run"])
        .env("PATH", fake_dpkg(&env, "10.11.3+deb12"))
        .expect(0);
    assert!(
        !s(&out.stderr).contains("DISABLE_JELLYFIN_AUTOSTART"),
        "{}",
        s(&out.stderr)
    );

    // A container: the caller says which image runs.
    let out = env
        .cmd(&["restore", "before-10.11.4", "--in-place", "--dry-run"])
        .arg("--server-version")
        .arg("10.11.4")
        .expect(0);
    assert!(
        s(&out.stderr)
            .contains("Pin the image to the snapshot's version (jellyfin/jellyfin:10.11.3)"),
        "{}",
        s(&out.stderr)
    );

    // The rollback itself says the same, and leaves the data at 10.11.3.
    let out = env.expect(&["restore", "before-10.11.4", "--in-place"], 0);
    assert!(
        s(&out.stdout).contains("rolls the data back from 10.11.4 to 10.11.3"),
        "{}",
        s(&out.stdout)
    );
    // Until a server starts on it, the log's 10.11.4 is not about this data: the restore
    // put jellyfin.db in place after that start, with older content.
    let b = env.backup(&fx, &[]);
    assert_eq!(
        found(&b),
        ("10.11.0–10.11.6".into(), "database".into(), false)
    );
    set_log(&fx, Some("10.11.3"));
    assert_eq!(found(&env.backup(&fx, &[])).0, "10.11.3");
}

#[test]
fn a_rollback_across_a_migration_names_the_range() {
    let env = Env::new();
    let fx = env.small_fixture();
    set_history(&fx, &history_10_11_0());
    set_log(&fx, None);
    env.backup(&fx, &["--name", "before"]);
    // 10.11.7 migrated the data and logged its start.
    set_history(&fx, &with(&history_10_11_0(), ADDED_10_11_7, "10.11.7.0"));
    set_log(&fx, Some("10.11.7"));
    let out = env
        .cmd(&["restore", "before", "--in-place", "--dry-run"])
        .env("PATH", fake_dpkg(&env, "10.11.7+ubu2404"))
        .expect(0);
    let text = s(&out.stdout);
    assert!(
        text.contains("rolls the data back from 10.11.7 to 10.11.0–10.11.6; start a Jellyfin release in 10.11.0–10.11.6 (from database) afterwards (10.11.7 would migrate it again)"),
        "{text}"
    );
    assert!(
        s(&out.stderr).contains("jellyfin-server=10.11.6+ubu2404 jellyfin-web=10.11.6+ubu2404"),
        "{}",
        s(&out.stderr)
    );
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_rollback_that_leaves_jellyfin_too_little_space_is_refused_unless_forced() {
    common::env::need_root("mounts a small tmpfs");
    let env = Env::new();
    let disk = common::env::SmallDisk::mount(&env.root.join("disk"), "32m");
    let fx = fixture::generate(
        &disk.path().join("jellyfin"),
        &FixtureSpec::small(Layout::Docker),
    )
    .unwrap();
    env.backup(&fx, &["--name", "before"]);
    fs::remove_file(fx.data_dir.join("data/device.txt")).unwrap();

    let out = env.expect(&["restore", "before", "--in-place", "--dry-run"], 0);
    let text = s(&out.stdout);
    assert!(
        text.contains("Jellyfin needs 2.0 GiB to start")
            && text.contains("would be refused (exit code 24) unless --force"),
        "{text}"
    );
    let out = env.expect(&["restore", "before", "--in-place"], 24);
    let err = s(&out.stderr);
    assert!(
        err.contains("Jellyfin 10.11 and later do not start with less than 2.0 GiB free")
            && err.contains(disk.path().join("jellyfin").to_str().unwrap())
            && err.contains("--force"),
        "{err}"
    );
    assert!(
        !fx.data_dir.join("data/device.txt").exists(),
        "nothing was changed"
    );
    env.expect(&["restore", "before", "--in-place", "--force"], 0);
    assert!(fx.data_dir.join("data/device.txt").exists());

    // Data of 10.10 or earlier: Jellyfin has no such limit, nor has the restore.
    let ef_only: Vec<(String, String)> = history_10_11_0()
        .into_iter()
        .filter(|(id, _)| id.as_str() <= "20240928082930_MarkSegmentProviderIdNonNullable")
        .collect();
    set_history(&fx, &ef_only);
    set_log(&fx, None);
    env.backup(&fx, &["--name", "ten-ten"]);
    fs::remove_file(fx.data_dir.join("data/device.txt")).unwrap();
    let out = env.expect(&["restore", "ten-ten", "--in-place"], 0);
    assert!(
        !s(&out.stdout).contains("Jellyfin needs"),
        "{}",
        s(&out.stdout)
    );
}

#[test]
fn rolling_back_the_10_11_upgrade_names_10_10() {
    let env = Env::new();
    let fx = env.fixture(&FixtureSpec::small(Layout::Debian));
    let ef_only: Vec<(String, String)> = history_10_11_0()
        .into_iter()
        .filter(|(id, _)| id.as_str() <= "20240928082930_MarkSegmentProviderIdNonNullable")
        .map(|(id, _)| (id, "8.0.8".to_string()))
        .collect();
    set_history(&fx, &ef_only);
    let library = fx.data_dir.join("data/library.db");
    sqlite3(
        &library,
        "CREATE TABLE TypedBaseItems (guid BLOB PRIMARY KEY, data TEXT);",
    );
    set_log(&fx, Some("10.10.7"));
    env.backup(&fx, &["--name", "before-10.11"]);

    // The upgrade: 10.11.0 migrates library.db into jellyfin.db and moves it aside.
    set_history(&fx, &history_10_11_0());
    fs::rename(&library, fx.data_dir.join("data/library.db.old")).unwrap();
    set_log(&fx, Some("10.11.0"));
    let out = env
        .cmd(&["restore", "before-10.11", "--in-place", "--dry-run"])
        .env("PATH", fake_dpkg(&env, "10.11.0+deb12"))
        .expect(0);
    let text = s(&out.stdout);
    assert!(
        text.contains("rolls the data back from 10.11.0 to 10.10.7; start Jellyfin 10.10.7 afterwards (10.11.0 would migrate it again)"),
        "{text}"
    );
    assert!(
        !text.contains("Jellyfin needs"),
        "10.10 has no free-space limit: {text}"
    );
    assert!(
        s(&out.stderr).contains("jellyfin-server=10.10.7+deb12 jellyfin-web=10.10.7+deb12"),
        "{}",
        s(&out.stderr)
    );
    env.expect(&["restore", "before-10.11", "--in-place"], 0);
    assert!(library.is_file(), "library.db is back");
}
