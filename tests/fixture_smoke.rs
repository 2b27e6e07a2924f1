//! Smoke test of the Jellyfin-shaped fixture generator (tests/common/fixture.rs).

mod common;

use common::fixture::{
    self, day_of_changes_report, generate, tree_digest, Fixture, FixtureSpec, Layout,
};
use common::sqlcli::side;
use common::verify::read_only;
use std::path::Path;

/// Checks the database. Must run while no `-wal`/`-shm` exists: a read-only connection
/// creates them and, being read-only, cannot remove them when it closes.
fn db_check(fx: &Fixture) {
    for suffix in ["-wal", "-shm"] {
        assert!(
            !side(&fx.db_path, suffix).exists(),
            "{suffix} left next to the db"
        );
    }
    let conn = read_only(&fx.db_path);
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(ok, "ok");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page_size");
    assert_eq!(page, 4096);
    let versions: Vec<String> = conn
        .prepare(r#"SELECT "ProductVersion" FROM "__EFMigrationsHistory""#)
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(versions.len() >= 5);
    assert_eq!(versions.first().map(String::as_str), Some("3.1.4"));
    assert!(versions
        .iter()
        .any(|v| v == fixture::SERVER_PRODUCT_VERSION));
}

#[test]
fn every_layout_generates_a_sane_tree() {
    for layout in Layout::ALL {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spec = FixtureSpec::small(layout);
        let fx = generate(tmp.path(), &spec).expect("generate");

        let expected_roots = match layout {
            Layout::Docker => ("config", "config/config", "cache", "config/log"),
            Layout::Debian => (
                "var/lib/jellyfin",
                "etc/jellyfin",
                "var/cache/jellyfin",
                "var/log/jellyfin",
            ),
            Layout::LinuxServer => ("config/data", "config", "config/cache", "config/log"),
        };
        assert_eq!(fx.data_dir, tmp.path().join(expected_roots.0));
        assert_eq!(fx.config_dir, tmp.path().join(expected_roots.1));
        assert_eq!(fx.cache_dir, tmp.path().join(expected_roots.2));
        assert_eq!(fx.log_dir, tmp.path().join(expected_roots.3));
        assert_eq!(fx.db_path, fx.data_dir.join("data/jellyfin.db"));

        for f in [
            "system.xml",
            "network.xml",
            "encoding.xml",
            "logging.default.json",
        ] {
            assert!(fx.config_dir.join(f).is_file(), "{layout:?}: {f}");
        }
        assert!(fx.config_dir.join("users").is_dir());
        assert!(fx.config_dir.join("ScheduledTasks").is_dir());
        for p in [
            ".jellyfin-data",
            "data/.jellyfin-data",
            "data/device.txt",
            "data/livetv/listings.json",
            "data/backups/jellyfin-backup-1.zip",
            "plugins/SomePlugin_1.0.0.0/plugin.dll",
            "plugins/SomePlugin_1.0.0.0/meta.json",
            "plugins/configurations/SomePlugin.xml",
            "root/default/Movies/options.xml",
        ] {
            assert!(fx.data_dir.join(p).is_file(), "{layout:?}: {p}");
        }
        for d in [
            "data/trickplay",
            "data/subtitles",
            "data/attachments",
            "data/collections",
            "data/playlists",
            "data/ScheduledTasks",
            "data/SQLiteBackups",
            "metadata/library",
            "metadata/People",
            "metadata/views",
            "transcodes",
        ] {
            assert!(fx.data_dir.join(d).is_dir(), "{layout:?}: {d}");
        }
        assert!(fx.cache_dir.is_dir() && fx.log_dir.is_dir());

        let g = fixture::item_guid(spec.seed, 0);
        let sheet = fx
            .data_dir
            .join("data/trickplay")
            .join(g.shard())
            .join(g.n())
            .join("320 - 10x10/0.jpg");
        let bytes = std::fs::read(&sheet).expect("trickplay sheet");
        assert_eq!(&bytes[..4], &[0xFF, 0xD8, 0xFF, 0xE0]);
        let md = fx.metadata_dir.join("library").join(g.shard()).join(g.n());
        assert!(md.join("poster.jpg").is_file() && md.join("backdrop.jpg").is_file());
        assert!(md.join("chapters").is_dir());

        // Every mtime is in the past and fixed.
        for p in fixture::walk_sorted(&fx.root).expect("walk") {
            let m = std::fs::symlink_metadata(&p).expect("stat");
            let t = filetime::FileTime::from_last_modification_time(&m).unix_seconds();
            assert!(
                (fixture::BASE_MTIME..fixture::BASE_MTIME + 86_400).contains(&t),
                "{}",
                p.display()
            );
        }

        db_check(&fx);

        // A few hundred KB.
        let total: u64 = fixture::walk_sorted(&fx.root)
            .expect("walk")
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        assert!(total < 2 * 1024 * 1024, "{layout:?}: {total} bytes");

        // A day of changes keeps the DB sane and moves mtimes forward.
        let before = tree_digest(&fx.data_dir, &[]).expect("digest");
        let r = day_of_changes_report(&fx, 7).expect("day_of_changes");
        assert!(
            r.files_modified >= 2 && r.files_added >= 1 && r.files_deleted >= 1,
            "{r:?}"
        );
        assert!(r.db_rows_changed >= 1);
        assert!(r.mtime_base >= fixture::BASE_MTIME + 86_400);
        db_check(&fx);
        let after = tree_digest(&fx.data_dir, &[]).expect("digest");
        assert_ne!(before, after);
    }
}

#[test]
fn generation_is_deterministic() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let spec = FixtureSpec::small(Layout::Docker);
    let fa = generate(a.path(), &spec).expect("generate a");
    let fb = generate(b.path(), &spec).expect("generate b");
    // The DB file bytes are deterministic too (same statements, same page layout).
    assert_eq!(
        tree_digest(&fa.root, &[]).expect("digest a"),
        tree_digest(&fb.root, &[]).expect("digest b")
    );
    let mtimes = |root: &Path| -> Vec<(std::path::PathBuf, i64)> {
        fixture::walk_sorted(root)
            .expect("walk")
            .into_iter()
            .map(|p| {
                let m = std::fs::symlink_metadata(&p).expect("stat");
                let t = filetime::FileTime::from_last_modification_time(&m).unix_seconds();
                (p.strip_prefix(root).expect("prefix").to_path_buf(), t)
            })
            .collect()
    };
    assert_eq!(mtimes(&fa.root), mtimes(&fb.root));

    day_of_changes_report(&fa, 3).expect("changes a");
    day_of_changes_report(&fb, 3).expect("changes b");
    assert_eq!(
        tree_digest(&fa.root, &[]).expect("digest a"),
        tree_digest(&fb.root, &[]).expect("digest b")
    );
    assert_eq!(mtimes(&fa.root), mtimes(&fb.root));

    let other = tempfile::tempdir().expect("tempdir");
    let mut spec2 = spec.clone();
    spec2.seed = 43;
    let fc = generate(other.path(), &spec2).expect("generate c");
    assert_ne!(
        tree_digest(&fa.root, &[]).expect("digest a"),
        tree_digest(&fc.root, &[]).expect("digest c")
    );
}

#[test]
fn each_day_of_changes_is_one_day_later_and_in_the_past() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fx = generate(tmp.path(), &FixtureSpec::small(Layout::LinuxServer)).expect("generate");
    let day = 86_400;
    let r1 = day_of_changes_report(&fx, 1).expect("day 1");
    assert_eq!(r1.mtime_base, fixture::BASE_MTIME + day);
    // A read-only capture (as a backup does) leaves -wal/-shm with wall-clock mtimes;
    // they must not push the next day into the present.
    let conn = read_only(&fx.db_path);
    let _: i64 = conn
        .query_row("SELECT count(*) FROM BaseItems", [], |r| r.get(0))
        .expect("count");
    drop(conn);
    let r2 = day_of_changes_report(&fx, 2).expect("day 2");
    assert_eq!(r2.mtime_base, fixture::BASE_MTIME + 2 * day);
    let newest = fixture::newest_mtime(&fx.root)
        .expect("newest")
        .expect("some file");
    assert!(newest < fixture::BASE_MTIME + 3 * day);
}
