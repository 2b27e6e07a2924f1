//! What an application can observe of a SQLite database, reduced to something two
//! databases can be compared by: the proof that a logical capture restores exactly.
//!
//! A rebuild from a dump is done by the SQLite linked into jellysnap, not by the one that
//! wrote the source, so "the rows went in" proves little: values SQLite recomputes
//! (stored generated columns, expression and partial indexes) may differ, and schema or
//! settings may not come out as recorded. An [`Observation`] reads, with the same SQLite
//! on both sides:
//!
//! - the settings (page size, auto_vacuum, encoding, journal mode, user_version,
//!   application_id);
//! - every `sqlite_schema` row with its rowid, in rowid order (the order `.dump` prints);
//! - every row of every table, internal ones included (`sqlite_sequence`, the stat
//!   tables), with its rowid and every column (generated ones, virtual and stored,
//!   included), each value as its storage class and exact bytes;
//! - how many entries each partial index holds (read from its b-tree through
//!   `dbstat`): which rows a partial index holds is decided by its predicate as the
//!   writer's SQLite evaluated it, and `integrity_check` does not report an entry whose
//!   predicate the SQLite here evaluates differently;
//! - the complete output of `PRAGMA integrity_check` and `PRAGMA foreign_key_check`.
//!   On the source these are how a recomputed value shows up: an index entry the SQLite
//!   here would compute differently is reported as missing. A database whose
//!   observation cannot even be taken (an application-defined collation, say) cannot be
//!   proven and is captured physically.
//!
//! Rows are hashed (blake3) table by table rather than kept, so memory stays small for
//! any database. [`Observation::digest`] is one id for all of it; snapshots record it, so
//! `check` and `restore` can prove a rebuild against the source long after the backup.

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::format::dump::{SchemaEntry, Settings};
use crate::jellyfin::logical::{self, LogicalError, TableInfo};
use crate::jellyfin::sqlite::quote;

/// Most messages read from `integrity_check`; more than this and the database is
/// compared by the first ones only (a damaged source is captured physically anyway).
const MAX_INTEGRITY_MESSAGES: u32 = 10_000;

/// What an observation covers and how it is digested: a change to either changes this,
/// so that a digest is only ever compared with one of its own version.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub name: String,
    pub rows: u64,
    pub digest: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub settings: Settings,
    pub schema: Vec<SchemaEntry>,
    pub tables: Vec<TableDigest>,
    /// (name, entries) of every partial index, in schema order.
    pub partial_indexes: Vec<(String, i64)>,
    pub integrity: Vec<String>,
    pub foreign_keys: Vec<String>,
}

/// Observe `conn`'s main database. Runs in one read transaction.
pub fn observe(conn: &Connection) -> Result<Observation, LogicalError> {
    observe_as(conn, None)
}

/// [`observe`], with the journal mode given by the caller (a connection opened with
/// `immutable=1` reports `delete` for a WAL-mode file).
pub fn observe_as(conn: &Connection, wal: Option<bool>) -> Result<Observation, LogicalError> {
    let tx = conn.unchecked_transaction()?;
    let mut settings = logical::read_settings(&tx)?;
    if let Some(wal) = wal {
        settings.wal = wal;
    }
    let schema = logical::read_schema(&tx)?;
    let mut tables = Vec::new();
    let mut names: Vec<&SchemaEntry> = schema.iter().filter(|s| s.kind == "table").collect();
    names.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    for t in names {
        tables.push(table_digest(&tx, &t.name, settings.text_encoding != 1)?);
    }
    let mut partial_indexes = Vec::new();
    for e in schema.iter().filter(|e| e.kind == "index") {
        let partial: bool = tx.query_row(
            "SELECT partial FROM pragma_index_list(?1) WHERE name = ?2",
            [&e.tbl_name, &e.name],
            |r| r.get(0),
        )?;
        if partial {
            let n: i64 = tx.query_row(
                "SELECT ncell FROM dbstat('main', 1) WHERE name = ?1",
                [&e.name],
                |r| r.get(0),
            )?;
            partial_indexes.push((e.name.clone(), n));
        }
    }
    let integrity = {
        let mut stmt = tx.prepare(&format!(
            "PRAGMA main.integrity_check({MAX_INTEGRITY_MESSAGES})"
        ))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    let mut foreign_keys = {
        let mut stmt = tx.prepare("PRAGMA main.foreign_key_check")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{}|{}|{}|{}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?
                        .map_or_else(|| "-".to_string(), |v| v.to_string()),
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    foreign_keys.sort();
    tx.commit()?;
    Ok(Observation {
        settings,
        schema,
        tables,
        partial_indexes,
        integrity,
        foreign_keys,
    })
}

/// One table's rows, hashed: rowid (when it has one), then each column's storage class
/// and exact bytes, generated columns included. Ordered by rowid, or by primary key for
/// WITHOUT ROWID tables, so the digest does not depend on the page layout.
fn table_digest(conn: &Connection, name: &str, utf16: bool) -> Result<TableDigest, LogicalError> {
    let info = TableInfo::read(conn, name)?;
    let mut stmt = conn.prepare(&select_all(&info, utf16)?)?;
    let n = stmt.column_count();
    let first = usize::from(!info.without_rowid);
    let mut rows = stmt.query([])?;
    let mut h = blake3::Hasher::new();
    let mut count = 0u64;
    while let Some(row) = rows.next()? {
        h.update(b"R");
        let mut i = 0;
        while i < n {
            let v = row.get_ref(i)?;
            let text_flag = utf16 && i >= first && {
                let f = row.get_ref(i + 1)?;
                i += 1;
                f == ValueRef::Integer(1)
            };
            hash_value(&mut h, v, text_flag);
            i += 1;
        }
        count += 1;
    }
    Ok(TableDigest {
        name: name.to_string(),
        rows: count,
        digest: *h.finalize().as_bytes(),
    })
}

/// The query of every row of a table in key order: the rowid (unless WITHOUT ROWID),
/// then every column but hidden ones. In a UTF-16 database a column is its text as stored
/// (not converted to UTF-8, which is lossy for invalid UTF-16) and a flag "is text".
fn select_all(info: &TableInfo, utf16: bool) -> Result<String, LogicalError> {
    let mut select: Vec<String> = Vec::new();
    let order = if info.without_rowid {
        let key: Vec<String> = info.key().into_iter().map(quote).collect();
        key.join(",")
    } else {
        let r = info.rowid_name()?;
        select.push(r.to_string());
        r.to_string()
    };
    // Hidden columns of ordinary tables are generated ones (2 virtual, 3 stored).
    for c in info.columns.iter().filter(|c| c.hidden != 1) {
        let q = quote(&c.name);
        if utf16 {
            select.push(format!(
                "CASE WHEN typeof({q}) = 'text' THEN CAST({q} AS BLOB) ELSE {q} END, typeof({q}) = 'text'"
            ));
        } else {
            select.push(q);
        }
    }
    if select.is_empty() {
        select.push("NULL".into());
    }
    Ok(format!(
        "SELECT {} FROM main.{} ORDER BY {order}",
        select.join(","),
        quote(&info.name)
    ))
}

/// One value: its storage class (text read as a blob of its stored bytes when
/// `text_flag`) and exact bytes.
fn hash_value(h: &mut blake3::Hasher, v: ValueRef<'_>, text_flag: bool) {
    match v {
        ValueRef::Null => {
            h.update(&[0]);
        }
        ValueRef::Integer(x) => {
            h.update(&[1]);
            h.update(&x.to_le_bytes());
        }
        ValueRef::Real(f) => {
            h.update(&[2]);
            h.update(&f.to_bits().to_le_bytes());
        }
        ValueRef::Text(t) => {
            h.update(&[3]);
            h.update(&(t.len() as u64).to_le_bytes());
            h.update(t);
        }
        ValueRef::Blob(b) => {
            h.update(&[if text_flag { 3 } else { 4 }]);
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
    }
}

impl Observation {
    /// One id for everything observed (hex in snapshot records).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        let mut put = |b: &[u8]| {
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        };
        put(format!("jellysnap observation {VERSION}").as_bytes());
        let s = &self.settings;
        put(format!(
            "{} {} {} {} {} {}",
            s.page_size, s.auto_vacuum, s.text_encoding, s.wal, s.user_version, s.application_id
        )
        .as_bytes());
        for e in &self.schema {
            put(format!("{:?}", e.rowid).as_bytes());
            put(e.kind.as_bytes());
            put(e.name.as_bytes());
            put(e.tbl_name.as_bytes());
            put(e.sql.as_deref().unwrap_or("\u{0}").as_bytes());
        }
        for t in &self.tables {
            put(t.name.as_bytes());
            put(&t.rows.to_le_bytes());
            put(&t.digest);
        }
        put(b"partial indexes");
        for (name, n) in &self.partial_indexes {
            put(name.as_bytes());
            put(&n.to_le_bytes());
        }
        put(b"integrity");
        for m in &self.integrity {
            put(m.as_bytes());
        }
        put(b"foreign keys");
        for m in &self.foreign_keys {
            put(m.as_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The first difference between what the source showed (`self`) and a rebuild, in
    /// words; `None` when they are the same.
    pub fn difference(&self, rebuilt: &Observation) -> Option<String> {
        if self.settings != rebuilt.settings {
            return Some(format!(
                "settings differ: source {:?}, rebuilt {:?}",
                self.settings, rebuilt.settings
            ));
        }
        if self.schema != rebuilt.schema {
            let first = self
                .schema
                .iter()
                .zip(&rebuilt.schema)
                .find(|(a, b)| a != b)
                .map(|(a, _)| format!("{} {}", a.kind, a.name))
                .unwrap_or_else(|| {
                    format!(
                        "{} entries in the source, {} rebuilt",
                        self.schema.len(),
                        rebuilt.schema.len()
                    )
                });
            return Some(format!("schema differs at {first}"));
        }
        if let Some((a, _)) = self
            .tables
            .iter()
            .zip(&rebuilt.tables)
            .find(|(a, b)| a != b)
        {
            return Some(format!("rows of table {} differ", a.name));
        }
        if self.tables.len() != rebuilt.tables.len() {
            return Some("the set of tables differs".into());
        }
        if let Some((a, b)) = self
            .partial_indexes
            .iter()
            .zip(&rebuilt.partial_indexes)
            .find(|(a, b)| a != b)
        {
            return Some(format!(
                "partial index {} holds {} entries in the source, {} rebuilt (its predicate evaluates differently)",
                a.0, a.1, b.1
            ));
        }
        if self.integrity != rebuilt.integrity {
            return Some(format!(
                "integrity_check differs: source says {:?}, rebuilt says {:?}",
                first_lines(&self.integrity),
                first_lines(&rebuilt.integrity)
            ));
        }
        if self.foreign_keys != rebuilt.foreign_keys {
            return Some(format!(
                "foreign_key_check differs: {} violation(s) in the source, {} rebuilt",
                self.foreign_keys.len(),
                rebuilt.foreign_keys.len()
            ));
        }
        None
    }
}

fn first_lines(v: &[String]) -> String {
    let mut s: Vec<&str> = v.iter().take(3).map(String::as_str).collect();
    if v.len() > 3 {
        s.push("...");
    }
    s.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(sql: &str) -> Observation {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        c.execute_batch(sql).unwrap();
        observe(&c).unwrap()
    }

    #[test]
    fn sees_values_types_order_and_generated_columns() {
        let base = "CREATE TABLE t (a, b INTEGER GENERATED ALWAYS AS (a + 1) STORED);";
        let o = obs(&format!("{base} INSERT INTO t(a) VALUES (1), ('x');"));
        assert_eq!(
            o,
            obs(&format!("{base} INSERT INTO t(a) VALUES (1), ('x');"))
        );
        for other in [
            "INSERT INTO t(a) VALUES (1.0), ('x');",
            "INSERT INTO t(a) VALUES ('1'), ('x');",
            "INSERT INTO t(a) VALUES (1), (x'78');",
            "INSERT INTO t(rowid, a) VALUES (1, 1), (3, 'x');",
            "INSERT INTO t(a) VALUES (1); INSERT INTO t(a) VALUES ('x'); PRAGMA user_version = 1;",
        ] {
            let p = obs(&format!("{base} {other}"));
            assert!(o.difference(&p).is_some(), "{other}");
            assert_ne!(o.digest(), p.digest(), "{other}");
        }
        assert!(o.difference(&o.clone()).is_none());
        // The stored generated column's value is part of what is seen.
        assert_eq!(o.tables[0].rows, 2);
    }

    #[test]
    fn counts_partial_index_entries() {
        let o = obs("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3);
                     CREATE INDEX p ON t (x) WHERE x > 1;");
        assert_eq!(o.partial_indexes, vec![("p".to_string(), 2)]);
    }

    #[test]
    fn sees_integrity_and_foreign_key_results() {
        let schema = "CREATE TABLE p (id INTEGER PRIMARY KEY);
                      CREATE TABLE c (id INTEGER PRIMARY KEY, p REFERENCES p(id));";
        let clean = obs(&format!(
            "{schema} INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1);"
        ));
        let orphan = obs(&format!(
            "{schema} INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 2);"
        ));
        assert!(clean.foreign_keys.is_empty());
        assert_eq!(orphan.foreign_keys.len(), 1);
        assert_eq!(clean.integrity, vec!["ok".to_string()]);
    }
}
