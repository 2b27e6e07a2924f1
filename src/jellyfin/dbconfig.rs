//! `database.xml` in the config dir (Jellyfin 10.11 and later; the relocation options of
//! Jellyfin 12): which database the server uses and how it opens it.
//!
//! The file serialises the server's database options: `DatabaseType` (the provider,
//! `Jellyfin-SQLite` unless a plugin provides another), `CustomProviderOptions` with a
//! list of `CustomDatabaseOption` `Key`/`Value` pairs, and `LockingBehavior` (`NoLock`,
//! `Pessimistic`, `Optimistic`: how the server's own threads take turns, which does not
//! concern another process). The SQLite provider reads the keys case-insensitively:
//! `path` is the database file instead of `<data>/data/jellyfin.db`, and `lockingmode` is
//! SQLite's `locking_mode` pragma (also settable as `#PRAGMA:locking_mode`). `EXCLUSIVE`
//! keeps the file locked for as long as the server runs: any other reader waits for
//! ever, so a capture must not start then.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The provider key of Jellyfin's own SQLite database.
const SQLITE: &str = "Jellyfin-SQLite";

/// What `database.xml` says, as far as jellysnap is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbConfig {
    /// The file itself.
    pub file: PathBuf,
    pub database_type: Option<String>,
    /// The `path` option: where the database lives when it is not in the data dir.
    pub path: Option<PathBuf>,
    /// The `lockingmode` option (or `#PRAGMA:locking_mode`), as written.
    pub locking_mode: Option<String>,
}

impl DbConfig {
    /// `database.xml` of `config_dir`; `None` when there is none. A relative `path` is
    /// taken from the data dir, the server's working directory in every package.
    pub fn read(config_dir: &Path, data_dir: &Path) -> Option<DbConfig> {
        let file = config_dir.join("database.xml");
        let xml = std::fs::read_to_string(&file).ok()?;
        let mut c = DbConfig {
            database_type: tag(&xml, "DatabaseType"),
            file,
            ..DbConfig::default()
        };
        for option in xml.split("<CustomDatabaseOption>").skip(1) {
            let option = option.split("</CustomDatabaseOption>").next().unwrap_or("");
            let (Some(key), Some(value)) = (tag(option, "Key"), tag(option, "Value")) else {
                continue;
            };
            match key.to_ascii_lowercase().as_str() {
                "path" => c.path = Some(data_dir.join(&value)),
                "lockingmode" | "#pragma:locking_mode" => c.locking_mode = Some(value),
                _ => {}
            }
        }
        Some(c)
    }

    /// Refuse a database jellysnap cannot capture: another provider than SQLite.
    pub fn ensure_sqlite(&self) -> Result<()> {
        match &self.database_type {
            Some(t) if !t.eq_ignore_ascii_case(SQLITE) => Err(Error::UnsupportedDatabase {
                path: self.file.clone(),
                detail: format!(
                    "DatabaseType is {t}: the server keeps its library in a database other than its own SQLite file, which jellysnap cannot capture. Back that database up with its own tools; jellysnap supports DatabaseType {SQLITE}"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the server keeps the database locked for as long as it runs.
    pub fn exclusive(&self) -> bool {
        self.locking_mode
            .as_deref()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("EXCLUSIVE"))
    }
}

impl DbConfig {
    /// Refuse to read `db` while a server holds it in EXCLUSIVE mode: the read would wait
    /// for as long as the server runs. (A stopped server holds nothing: the read is safe.)
    pub fn ensure_readable(&self, db: &Path) -> Result<()> {
        if !self.exclusive() {
            return Ok(());
        }
        let holder = match crate::jellyfin::running::probe_locks(db) {
            crate::jellyfin::running::LockProbe::Free => return Ok(()),
            crate::jellyfin::running::LockProbe::Held { pid, command, .. } => match pid {
                Some(pid) => format!("{command} (pid {pid})"),
                None => "another process".to_string(),
            },
            crate::jellyfin::running::LockProbe::Unreadable { error, .. } => {
                format!("a process it cannot tell ({error})")
            }
        };
        Err(Error::ExclusiveLocking {
            db: db.to_path_buf(),
            config: self.file.clone(),
            holder,
        })
    }
}

/// The text of `<name>…</name>` (XML entities decoded); `None` when absent or empty.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    let v = xml[start..end].trim();
    (!v.is_empty()).then(|| {
        v.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_options_jellysnap_needs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("database.xml"),
            r#"<?xml version="1.0" encoding="utf-8"?>
<DatabaseConfigurationOptions xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <DatabaseType>Jellyfin-SQLite</DatabaseType>
  <CustomProviderOptions>
    <PluginName>Jellyfin-SQLite</PluginName>
    <PluginAssembly />
    <ConnectionString />
    <Options>
      <CustomDatabaseOption>
        <Key>Path</Key>
        <Value>/srv/fast &amp; small/jellyfin.db</Value>
      </CustomDatabaseOption>
      <CustomDatabaseOption>
        <Key>lockingmode</Key>
        <Value>Exclusive</Value>
      </CustomDatabaseOption>
    </Options>
  </CustomProviderOptions>
  <LockingBehavior>NoLock</LockingBehavior>
</DatabaseConfigurationOptions>
"#,
        )
        .unwrap();
        let c = DbConfig::read(dir.path(), Path::new("/var/lib/jellyfin")).unwrap();
        assert_eq!(c.path, Some(PathBuf::from("/srv/fast & small/jellyfin.db")));
        assert!(c.exclusive());
        assert!(c.ensure_sqlite().is_ok());
        let other = DbConfig {
            database_type: Some("PLUGIN_PROVIDER".into()),
            ..c
        };
        assert!(matches!(
            other.ensure_sqlite(),
            Err(Error::UnsupportedDatabase { .. })
        ));
        assert!(DbConfig::read(&dir.path().join("none"), Path::new("/")).is_none());
    }
}
