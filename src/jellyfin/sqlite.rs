//! How jellysnap opens SQLite files and names things in SQL: the helpers shared by the
//! capture of a live database (`livedb`, `capture`), the logical dump and rebuild
//! (`logical`) and the observation (`observe`).

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

/// A `file:` URI for `path` (percent-encoded: any byte but unreserved ones and `/`).
pub fn file_uri(path: &Path, query: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut uri = String::from("file:");
    for &b in abs.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push('?');
    uri.push_str(query);
    uri
}

/// Open a database file that nobody writes (a stopped server's) read-only as immutable:
/// SQLite takes no locks and creates no `-wal`/`-shm` beside it. The caller makes sure
/// no `-wal` holds committed data (an immutable open would not see it).
pub fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        file_uri(path, "immutable=1"),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Open a private database file (a captured copy, a rebuilt file) read-only.
pub fn open_private(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Open a database a server may be using: closing the connection never tries the
/// exclusive lock of a close-time checkpoint, and a busy database is waited for.
pub fn connect_shared(name: &str, flags: OpenFlags) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(name, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| format!("cannot open: {e}"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// `ident` as a quoted SQL identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_escapes_what_sqlite_would_read_as_syntax() {
        let u = file_uri(Path::new("/a b/c?d#e%f/ü.db"), "mode=ro");
        assert_eq!(u, "file:/a%20b/c%3Fd%23e%25f/%C3%BC.db?mode=ro");
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote(r#"weird "name""#), r#""weird ""name""""#);
    }
}
