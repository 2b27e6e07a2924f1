//! Which Jellyfin version last ran on this data.
//!
//! Jellyfin 10.11+ records its own code migrations in `__EFMigrationsHistory` with the
//! 4-part server version in `ProductVersion` (EF Core's own rows carry 3-part versions);
//! the highest 4-part version is the newest server that ran. Older installs have no such
//! table; `config/migrations.xml` then at least tells a pre-10.11 server ran.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// Read the version from a captured copy of jellyfin.db.
pub fn from_database(db: &Path) -> Option<String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let mut stmt = conn
        .prepare("SELECT ProductVersion FROM __EFMigrationsHistory")
        .ok()?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).ok()?;
    rows.filter_map(|r| r.ok())
        .filter_map(|v| parse4(&v))
        .max()
        .map(|v| display(&v))
}

fn parse4(s: &str) -> Option<[u32; 4]> {
    let parts: Vec<u32> = s
        .trim()
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

fn display(v: &[u32; 4]) -> String {
    if v[3] == 0 {
        format!("{}.{}.{}", v[0], v[1], v[2])
    } else {
        format!("{}.{}.{}.{}", v[0], v[1], v[2], v[3])
    }
}

/// Fallback for installs without `__EFMigrationsHistory` versions.
pub fn from_migrations_xml(config_dir: &Path) -> Option<String> {
    let xml = std::fs::read_to_string(config_dir.join("migrations.xml")).ok()?;
    let applied = xml
        .matches("<ValueTupleOfGuidString>")
        .count()
        .max(xml.matches("<Item1>").count());
    Some(format!("pre-10.11 ({applied} migrations applied)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_four_part_version_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("jellyfin.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE __EFMigrationsHistory (MigrationId TEXT PRIMARY KEY, ProductVersion TEXT);
             INSERT INTO __EFMigrationsHistory VALUES ('20240101_Init', '9.0.11'),
               ('20250101_A', '10.11.0.0'), ('20250601_B', '10.11.3.0'), ('20250301_C', '10.11.2.0');",
        )
        .unwrap();
        drop(c);
        assert_eq!(from_database(&p).as_deref(), Some("10.11.3"));
    }
}
