//! Layout-independent ("logical") capture of a SQLite database and its rebuild: the
//! SQLite side of the dump whose bytes `format::dump` defines.
//!
//! The physical copy made by the online backup API keeps page numbers, so it dedupes well
//! between snapshots only as long as rows stay on the same pages; a VACUUM or a table
//! rebuild moves every row. A logical dump lists the database's *content* (settings,
//! schema, rows in key order) in a canonical encoding: the same content gives the same
//! bytes whatever the page layout, and a changed row changes only its own few bytes, so
//! content-defined chunking over the dump re-synchronises right after it.
//!
//! [`dump`] reads a connection's settings, schema and rows (in one read transaction) and
//! feeds them to the encoder. Generated columns are not dumped (SQLite computes them).
//! Virtual tables are refused ([`LogicalError::Unsupported`]): their shadow tables cannot
//! be restored faithfully. In a UTF-16 database each text value is read as its stored
//! bytes.
//!
//! [`rebuild`] creates a new database from a dump: same page size, auto_vacuum, text
//! encoding, user_version, application_id, journal mode, the same `sqlite_schema` rows
//! (SQL text, order and rowids), the same rows with the same rowids and storage classes in
//! every table, internal ones (`sqlite_sequence`, every `sqlite_stat*` table present)
//! included. Nothing is enforced while rows go in (foreign keys, CHECK constraints,
//! triggers), so rows that violated a constraint in the source violate it the same way.
//! Indexes are not dumped; SQLite rebuilds them from the rows. Only `CREATE` statements
//! from the dump are executed.
//!
//! A rebuild is a transformation done by the SQLite linked here, which is not the one
//! that wrote the source: values SQLite *recomputes* (stored generated columns, expression
//! and partial indexes) can come out differently, and a schema may need an
//! application-defined collation or function. So a dump is never trusted on its own: the
//! capture compares an observation of the rebuilt database with one of the source
//! (`jellyfin::observe`) and keeps the physical copy when they differ.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::format::dump::{
    is_internal, tables_in_order, DumpError, DumpStats, Reader, Row, SchemaEntry, Settings,
    TableHeader, Value, Writer,
};
use crate::jellyfin::observe::TableDigest;
use crate::jellyfin::rowlist;
use crate::jellyfin::sqlite::quote;

#[derive(Debug, thiserror::Error)]
pub enum LogicalError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed database dump: {0}")]
    Format(String),
    #[error("database cannot be captured logically: {0}")]
    Unsupported(String),
    #[error("rebuilt database differs from the dump: {0}")]
    Mismatch(String),
    /// The dump was written by a newer jellysnap: not damage.
    #[error("dump format {found} is newer than this jellysnap reads (up to {supported})")]
    Newer { found: u8, supported: u8 },
}

impl From<DumpError> for LogicalError {
    fn from(e: DumpError) -> LogicalError {
        match e {
            DumpError::Io(e) => LogicalError::Io(e),
            DumpError::Format(msg) => LogicalError::Format(msg),
            DumpError::Newer { found, supported } => LogicalError::Newer { found, supported },
        }
    }
}

type Result<T, E = LogicalError> = std::result::Result<T, E>;

fn bad<T>(msg: impl Into<String>) -> Result<T> {
    Err(LogicalError::Format(msg.into()))
}

// ---------------------------------------------------------------------------------------
// Reading a database

pub fn read_settings(conn: &Connection) -> Result<Settings> {
    let int = |p: &str| -> Result<i64> {
        Ok(conn.query_row(&format!("PRAGMA main.{p}"), [], |r| r.get::<_, i64>(0))?)
    };
    let enc: String = conn.query_row("PRAGMA main.encoding", [], |r| r.get(0))?;
    let text_encoding = match enc.to_ascii_uppercase().as_str() {
        "UTF-8" => 1,
        "UTF-16LE" => 2,
        "UTF-16BE" => 3,
        other => return Err(LogicalError::Unsupported(format!("text encoding {other}"))),
    };
    let jm: String = conn.query_row("PRAGMA main.journal_mode", [], |r| r.get(0))?;
    Ok(Settings {
        page_size: int("page_size")? as u32,
        auto_vacuum: int("auto_vacuum")? as u8,
        text_encoding,
        wal: jm.eq_ignore_ascii_case("wal"),
        user_version: int("user_version")? as i32,
        application_id: int("application_id")? as i32,
    })
}

/// The `sqlite_schema` rows in rowid order (the order SQLite created them in, which is
/// the order `sqlite3 .dump` prints them in).
pub fn read_schema(conn: &Connection) -> Result<Vec<SchemaEntry>> {
    let mut stmt = conn.prepare(
        "SELECT rowid, type, name, tbl_name, sql FROM main.sqlite_schema ORDER BY rowid",
    )?;
    let out = stmt
        .query_map([], |r| {
            Ok(SchemaEntry {
                rowid: Some(r.get(0)?),
                kind: r.get(1)?,
                name: r.get(2)?,
                tbl_name: r.get(3)?,
                sql: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

/// A table as SQLite describes it (`pragma_table_list`, `pragma_table_xinfo`).
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub without_rowid: bool,
    /// Every column, hidden and generated ones included, in table order.
    pub columns: Vec<ColumnInfo>,
}

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub decl_type: String,
    /// Position in the primary key, from 1; 0 = not part of it.
    pub pk: i64,
    /// 0 stored, 1 hidden (virtual tables), 2 generated virtual, 3 generated stored.
    pub hidden: i64,
}

impl TableInfo {
    /// Describe the ordinary table `name` (any other kind is unsupported).
    pub fn read(conn: &Connection, name: &str) -> Result<TableInfo> {
        let (kind, without_rowid): (String, bool) = conn
            .query_row(
                "SELECT type, wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| LogicalError::Unsupported(format!("table {name}: {e}")))?;
        if kind != "table" {
            return Err(LogicalError::Unsupported(format!(
                "table {name} is a {kind} table"
            )));
        }
        let mut stmt = conn.prepare("SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1)")?;
        let columns = stmt
            .query_map([name], |r| {
                Ok(ColumnInfo {
                    name: r.get(0)?,
                    decl_type: r.get(1)?,
                    pk: r.get(2)?,
                    hidden: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(TableInfo {
            name: name.to_string(),
            without_rowid,
            columns,
        })
    }

    /// The name under which the rowid is reachable (the first of `rowid`, `_rowid_` and
    /// `oid` no column shadows); "" for a WITHOUT ROWID table.
    pub fn rowid_name(&self) -> Result<&'static str> {
        if self.without_rowid {
            return Ok("");
        }
        let lower: Vec<String> = self
            .columns
            .iter()
            .map(|c| c.name.to_ascii_lowercase())
            .collect();
        ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|n| !lower.iter().any(|c| c == n))
            .ok_or_else(|| {
                LogicalError::Unsupported(format!(
                    "table {} shadows rowid, _rowid_ and oid with columns",
                    self.name
                ))
            })
    }

    /// The primary key's columns in key order.
    pub fn key(&self) -> Vec<&str> {
        let mut pk: Vec<(i64, &str)> = self
            .columns
            .iter()
            .filter(|c| c.pk > 0)
            .map(|c| (c.pk, c.name.as_str()))
            .collect();
        pk.sort();
        pk.into_iter().map(|p| p.1).collect()
    }
}

/// How a table's rows are keyed and which columns are stored (and so dumped).
#[derive(Debug, Clone)]
struct TableShape {
    /// The table section's head: name, key kind, INTEGER PRIMARY KEY, stored columns.
    header: TableHeader,
    /// ORDER BY columns of a WITHOUT ROWID table.
    pk: Vec<String>,
    /// The name under which the rowid is reachable (not shadowed by a column).
    rowid_name: &'static str,
}

fn table_shape(conn: &Connection, name: &str) -> Result<TableShape> {
    shape_of(&TableInfo::read(conn, name)?)
}

/// [`table_shape`] of a table already described.
fn shape_of(info: &TableInfo) -> Result<TableShape> {
    let name = &info.name;
    if info.columns.iter().any(|c| c.hidden == 1) {
        return Err(LogicalError::Unsupported(format!(
            "table {name} has hidden columns"
        )));
    }
    let rowid_name = info.rowid_name()?;
    let stored: Vec<&ColumnInfo> = info.columns.iter().filter(|c| c.hidden == 0).collect();
    let key = info.key();
    let alias = if !info.without_rowid && key.len() == 1 {
        stored
            .iter()
            .position(|c| c.pk > 0 && c.decl_type.eq_ignore_ascii_case("INTEGER"))
            .map_or(0, |i| i + 1)
    } else {
        0
    };
    Ok(TableShape {
        header: TableHeader {
            name: name.to_string(),
            without_rowid: info.without_rowid,
            alias,
            columns: stored.iter().map(|c| c.name.clone()).collect(),
        },
        pk: key.into_iter().map(str::to_string).collect(),
        rowid_name,
    })
}

// ---------------------------------------------------------------------------------------
// Dump: a connection's content through the encoder

/// Write a logical dump of `conn`'s main database to `out`. Runs in one read
/// transaction (opened here unless the caller already holds one), so the dump is a
/// consistent state even while another process writes.
pub fn dump(conn: &Connection, out: &mut impl Write) -> Result<DumpStats> {
    dump_as(conn, out, None)
}

/// [`dump`], with the journal mode given by the caller: a connection opened with
/// `immutable=1` (which never uses a WAL) reports `delete` for a WAL-mode file.
pub fn dump_as(conn: &Connection, out: &mut impl Write, wal: Option<bool>) -> Result<DumpStats> {
    dump_with(conn, out, wal, None)
}

/// [`dump`] of a private copy, pushing into `observed` the digest an observation makes
/// of each table the dump reads with the observation's own query
/// ([`dumped_as_observed`]): the copy's observation need not read those rows again
/// (`observe::observe_but_dumped`).
pub fn dump_observing(
    conn: &Connection,
    out: &mut impl Write,
    observed: &mut Vec<TableDigest>,
) -> Result<DumpStats> {
    dump_with(conn, out, None, Some(observed))
}

fn dump_with(
    conn: &Connection,
    out: &mut impl Write,
    wal: Option<bool>,
    mut observed: Option<&mut Vec<TableDigest>>,
) -> Result<DumpStats> {
    let tx = if conn.is_autocommit() {
        let tx = conn.unchecked_transaction()?;
        // Start the read transaction now (BEGIN is deferred).
        tx.query_row("SELECT count(*) FROM main.sqlite_schema", [], |_| Ok(()))?;
        Some(tx)
    } else {
        None
    };
    let mut settings = read_settings(conn)?;
    if let Some(wal) = wal {
        settings.wal = wal;
    }
    let schema = read_schema(conn)?;
    let out = BufWriter::with_capacity(1 << 16, out);
    let mut w = Writer::new(out, &settings, &schema)?;
    for t in tables_in_order(&schema) {
        let digest = dump_table(conn, &mut w, &t.name, settings.utf16(), observed.is_some())?;
        if let (Some(all), Some(d)) = (observed.as_deref_mut(), digest) {
            all.push(d);
        }
    }
    let stats = w.finish()?;
    if let Some(tx) = tx {
        tx.commit()?;
    }
    Ok(stats)
}

/// Whether the dump reads table `name`'s rows with the very query an observation reads
/// them with (`observe::select_all`): a UTF-8 database's table without generated
/// columns. Those rows a dump can digest for the observation as it reads them.
/// A table either query cannot be made for (one a dump refuses) is not.
pub fn dumped_as_observed(conn: &Connection, name: &str, utf16: bool) -> bool {
    let Ok(info) = TableInfo::read(conn, name) else {
        return false;
    };
    shape_of(&info).is_ok_and(|shape| same_query(&info, &shape, utf16))
}

/// Whether the dump's query of table `info` (of shape `shape`) is the observation's.
fn same_query(info: &TableInfo, shape: &TableShape, utf16: bool) -> bool {
    crate::jellyfin::observe::select_all(info, utf16).is_ok_and(|q| q == select_rows(shape, utf16))
}

/// One table section: its head and every row in key order. With `observing`, the
/// observation's digest of the rows when the query is the observation's own
/// ([`dumped_as_observed`]).
fn dump_table<W: Write>(
    conn: &Connection,
    w: &mut Writer<W>,
    name: &str,
    utf16: bool,
    observing: bool,
) -> Result<Option<TableDigest>> {
    let info = TableInfo::read(conn, name)?;
    let shape = shape_of(&info)?;
    w.table(&shape.header)?;
    let mut observed = match observing && same_query(&info, &shape, utf16) {
        true => Some(crate::jellyfin::observe::dumped_digest(name)),
        false => None,
    };
    let mut stmt = conn.prepare(&select_rows(&shape, utf16))?;
    let mut rows = stmt.query([])?;
    let without_rowid = shape.header.without_rowid;
    let first = usize::from(!without_rowid);
    let width = if utf16 { 2 } else { 1 };
    let ncols = shape.header.columns.len();
    while let Some(row) = rows.next()? {
        let rowid = match without_rowid {
            true => None,
            false => Some(row.get::<_, i64>(0)?),
        };
        let values = (0..ncols)
            .map(|i| column_value(row, first + i * width, utf16))
            .collect::<Result<Vec<_>>>()?;
        w.row(rowid, &values)?;
        if let Some(o) = &mut observed {
            o.row(rowid, &values);
        }
    }
    w.end_table()?;
    Ok(observed.map(|o| o.finish()))
}

/// The query of a table's rows in key order: the rowid (unless WITHOUT ROWID), then each
/// stored column. SQLite hands text to us as UTF-8, converting (lossily, for text that is
/// not valid UTF-16) in a UTF-16 database: there each column is read a second time as its
/// stored bytes, and text is written from those.
fn select_rows(shape: &TableShape, utf16: bool) -> String {
    let cols: Vec<String> = shape
        .header
        .columns
        .iter()
        .map(|c| {
            let q = quote(c);
            if utf16 {
                format!("{q}, CASE WHEN typeof({q}) = 'text' THEN CAST({q} AS BLOB) END")
            } else {
                q
            }
        })
        .collect();
    let table = quote(&shape.header.name);
    if shape.header.without_rowid {
        let order: Vec<String> = shape.pk.iter().map(|c| quote(c)).collect();
        let sel = if cols.is_empty() {
            "NULL".to_string()
        } else {
            cols.join(",")
        };
        format!(
            "SELECT {sel} FROM main.{table} ORDER BY {}",
            order.join(",")
        )
    } else {
        let mut sel = vec![shape.rowid_name.to_string()];
        sel.extend(cols);
        format!(
            "SELECT {} FROM main.{table} ORDER BY {}",
            sel.join(","),
            shape.rowid_name
        )
    }
}

/// Column `i` of a row of [`select_rows`]; in a UTF-16 database text comes from the
/// stored bytes in column `i + 1`.
fn column_value<'r>(row: &'r rusqlite::Row<'_>, i: usize, utf16: bool) -> Result<Value<&'r [u8]>> {
    let v = row.get_ref(i)?;
    if utf16 && matches!(v, ValueRef::Text(_)) {
        if let ValueRef::Blob(raw) = row.get_ref(i + 1)? {
            return Ok(Value::RawText(raw));
        }
    }
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(t),
        ValueRef::Blob(b) => Value::Blob(b),
    })
}

// ---------------------------------------------------------------------------------------
// Rebuild: the decoder's sections executed as SQL into a new file

/// Rebuild the database described by `dump` as a new file `dest` (which must not exist).
/// The result is checked only for what the dump itself says (schema, settings, row
/// count); whether it equals the source is for `observe` to say. `dest` is left behind on
/// error; build into a temporary path.
pub fn rebuild(dump: &mut impl Read, dest: &Path) -> Result<DumpStats> {
    rebuild_listing::<std::io::Sink>(dump, dest, None)
}

/// [`rebuild`], writing the dump's row list (`rowlist`) into `rows` as the rows go in:
/// what a later [`update`] of the result compares the next dump with.
pub fn rebuild_listing<W: Write>(
    dump: &mut impl Read,
    dest: &Path,
    rows: Option<&mut rowlist::Writer<W>>,
) -> Result<DumpStats> {
    if dest.exists() {
        return Err(LogicalError::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} already exists", dest.display()),
        )));
    }
    let (header, mut reader) = Reader::open(BufReader::with_capacity(1 << 16, dump))?;
    let (settings, schema) = (&header.settings, &header.schema);
    let mut conn = create_database(dest, settings)?;
    let tx = conn.transaction()?;
    for s in schema.iter().filter(|s| s.kind == "table") {
        create_table(&tx, s)?;
    }
    insert_rows(&mut reader, &tx, settings.utf16(), rows)?;
    for s in schema.iter().filter(|s| s.kind != "table") {
        match (&s.sql, s.kind.as_str()) {
            (Some(sql), "index" | "view" | "trigger") => exec_create(&tx, sql)?,
            (None, "index") => {} // automatic index of a UNIQUE/PRIMARY KEY
            (_, kind) => return bad(format!("{kind} {} cannot be created", s.name)),
        }
    }
    if header.version >= 2 {
        renumber_schema(&tx, schema)?;
    }
    tx.execute_batch(&format!(
        "PRAGMA user_version = {}; PRAGMA application_id = {};",
        settings.user_version, settings.application_id
    ))?;
    tx.commit()?;
    check_schema(&conn, schema)?;
    finish_settings(&conn, settings)?;
    conn.close().map_err(|(_, e)| LogicalError::Sqlite(e))?;
    Ok(reader.stats().clone())
}

/// What [`update`] did.
#[derive(Debug)]
pub enum Updated {
    /// The database now holds what `rebuild` of the dump would make.
    Done,
    /// It cannot be brought there by changing rows (why, in words); nothing was changed.
    Not(String),
}

/// Bring `db`, a database that [`rebuild`] (or an earlier update) made from another dump,
/// to the state `rebuild(dump)` would make, by changing only the rows that differ: a
/// later dump of the same database rebuilt at the cost of what changed.
///
/// The same SQLite makes the same rows from the same values, and maintains an index as
/// it builds one, so the result holds the same rows, index entries, schema and settings
/// as a fresh rebuild, in another page layout. It is done the way a rebuild inserts
/// (nothing enforced or triggered: foreign keys off, CHECK constraints ignored, triggers
/// disabled) and in an order a rebuild could have taken: every changed or vanished row
/// of a table is deleted before the changed and new rows are inserted, so a value moved
/// between rows of a UNIQUE column conflicts only as the same rows would in a rebuild.
/// A row is kept only when the dump's row has the digest the kept rebuild's row list
/// (`rowlist`, written as the earlier dump went in) gives its rowid: the earlier dump
/// held those values at that rowid, and the kept rebuild holds what this SQLite made of
/// them, which is what it would make of them again. The kept rebuild's other rows are
/// not read. The internal tables and WITHOUT ROWID tables (ordered by a collation, not
/// a rowid) are rewritten whole; tables the dump has no rows for are emptied, as a
/// rebuild leaves them. The new dump's row list is written into `list` as the dump is
/// read, under the seed of `old` (opened, its seed read, by the caller).
///
/// `Not` when the schema (with its rowids) or a setting differs, the database is UTF-16,
/// the row list `old` is not readable, not the dump's tables, or not the file of blake3
/// `old_blake3`, a table's rows are not in rowid order, or the rows to write exceed
/// `budget` bytes: the caller rebuilds instead. Errors are SQLite's, the dump's or
/// writing `list`'s, as for `rebuild`. A list that is not the kept rebuild's (or a
/// digest that matches by accident) gives a database that is not the rebuild: for the
/// proof that follows to find.
pub fn update<L: Read, W: Write>(
    dump: &mut impl Read,
    db: &Path,
    mut old: rowlist::Reader<L>,
    old_blake3: &[u8; 32],
    list: &mut rowlist::Writer<W>,
    budget: usize,
) -> Result<Updated> {
    let (header, mut reader) = Reader::open(BufReader::with_capacity(1 << 16, dump))?;
    let mut conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
        false,
    )?;
    // Not synced: a kept rebuild is used only while its record vouches for it, and
    // whatever it holds is proven before anything relies on it.
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF; PRAGMA recursive_triggers = OFF;
         PRAGMA ignore_check_constraints = ON; PRAGMA cache_size = -65536;
         PRAGMA synchronous = OFF;",
    )?;
    let settings = read_settings(&conn)?;
    if settings != header.settings {
        return Ok(Updated::Not("its settings differ from the dump's".into()));
    }
    if settings.utf16() {
        return Ok(Updated::Not("it is a UTF-16 database".into()));
    }
    if read_schema(&conn)? != header.schema {
        return Ok(Updated::Not("its schema differs from the dump's".into()));
    }
    if old.seed() != list.seed() {
        return Err(LogicalError::Mismatch(
            "the new row list is not under the old one's seed".into(),
        ));
    }
    let unlisted = |e: std::io::Error| Updated::Not(format!("its {e}"));
    let tx = conn.transaction()?;
    let mut seen = std::collections::HashSet::new();
    let mut spent = 0usize;
    let mut row = Row::default();
    while let Some(table) = reader.next_table()? {
        let name = table.name.clone();
        let shape = table_shape(&tx, &name)?;
        if shape.header.without_rowid != table.without_rowid
            || shape.header.columns != table.columns
            || (table.alias != 0 && shape.header.alias != table.alias)
        {
            return Err(LogicalError::Mismatch(format!(
                "table {name}: columns or key differ from the schema"
            )));
        }
        seen.insert(name.clone());
        let mut insert = tx.prepare(&insert_sql(&shape, false))?;
        if !listed(table.without_rowid, &name) {
            tx.execute(&format!("DELETE FROM main.{}", quote(&name)), [])?;
            while reader.next_row(&mut row)? {
                bind_row(&mut insert, &row, false)?;
                insert.raw_execute()?;
            }
            continue;
        }
        if let Err(e) = old.table(&name) {
            return Ok(unlisted(e));
        }
        list.table(&name)?;
        let (gone, new) =
            match differences(&mut reader, &mut row, &mut old, list, budget, &mut spent)? {
                Ok(d) => d,
                Err(why) => return Ok(Updated::Not(format!("table {name}: {why}"))),
            };
        list.end_table()?;
        let mut delete = tx.prepare(&format!(
            "DELETE FROM main.{} WHERE {} = ?1",
            quote(&name),
            shape.rowid_name
        ))?;
        for rowid in gone {
            delete.execute([rowid])?;
        }
        for r in &new {
            bind_row(&mut insert, r, false)?;
            insert.raw_execute()?;
        }
    }
    for t in tables_in_order(&header.schema) {
        if !seen.contains(&t.name) {
            tx.execute(&format!("DELETE FROM main.{}", quote(&t.name)), [])?;
        }
    }
    match old.finish() {
        Ok(b) if b == *old_blake3 => {}
        Ok(_) => {
            return Ok(Updated::Not(
                "its row list is not the one its record names".into(),
            ))
        }
        Err(e) => return Ok(unlisted(e)),
    }
    tx.commit()?;
    if settings.wal {
        // Into the file itself, leaving no -wal: the file is what is observed and kept.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    check_schema(&conn, &header.schema)?;
    if read_settings(&conn)? != header.settings {
        return Err(LogicalError::Mismatch(
            "settings changed by the update".into(),
        ));
    }
    conn.close().map_err(|(_, e)| LogicalError::Sqlite(e))?;
    Ok(Updated::Done)
}

/// The rowids to delete from a table and the rows to insert into it.
type Differences = (Vec<i64>, Vec<Row>);

/// The rows of one rowid table that differ between the kept rebuild, as its row list
/// `old` gives them, and the dump's section being read: the rowids to delete (changed or
/// gone) and the rows to insert (changed or new). Every row of the section is listed in
/// `list`. `Err` (why) when their size takes `spent` past `budget`, the dump's rows are
/// not in ascending rowid order, or `old` is not readable.
fn differences<R: Read, L: Read, W: Write>(
    reader: &mut Reader<R>,
    d: &mut Row,
    old: &mut rowlist::Reader<L>,
    list: &mut rowlist::Writer<W>,
    budget: usize,
    spent: &mut usize,
) -> Result<std::result::Result<Differences, String>> {
    let (mut gone, mut new) = (Vec::new(), Vec::new());
    let mut last: Option<i64> = None;
    let mut disorder = false;
    let too_much = || format!("more than {} MiB of rows changed", budget >> 20);
    let out_of_order = || "rows out of rowid order".to_string();
    // The dump's next row, read into `d` and listed: its rowid and digest. `None` after
    // the last one, or after a row that is not past the one before it (`disorder`).
    let mut next = |d: &mut Row, disorder: &mut bool| -> Result<Option<(i64, u64)>> {
        if !reader.next_row(d)? {
            return Ok(None);
        }
        let id = d
            .rowid
            .ok_or_else(|| LogicalError::Format("a row of a rowid table without a rowid".into()))?;
        if last.is_some_and(|l| l >= id) {
            *disorder = true;
            return Ok(None);
        }
        last = Some(id);
        Ok(Some((id, list.row(d)?)))
    };
    let cost = |r: &Row| -> usize {
        16 + r
            .values
            .iter()
            .map(|v| match v {
                Value::Text(b) | Value::Blob(b) | Value::RawText(b) => 16 + b.len(),
                _ => 16,
            })
            .sum::<usize>()
    };
    let mut want = next(d, &mut disorder)?;
    loop {
        let (id, was) = match old.row() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => return Ok(Err(format!("its {e}"))),
        };
        while want.is_some_and(|(w, _)| w < id) {
            *spent += cost(d);
            new.push(d.clone());
            want = next(d, &mut disorder)?;
        }
        if disorder {
            return Ok(Err(out_of_order()));
        }
        match want {
            Some((w, digest)) if w == id => {
                if digest != was {
                    *spent += 8 + cost(d);
                    gone.push(id);
                    new.push(d.clone());
                }
                want = next(d, &mut disorder)?;
            }
            _ => {
                *spent += 8;
                gone.push(id);
            }
        }
        if *spent > budget {
            return Ok(Err(too_much()));
        }
    }
    while want.is_some() {
        *spent += cost(d);
        new.push(d.clone());
        if *spent > budget {
            return Ok(Err(too_much()));
        }
        want = next(d, &mut disorder)?;
    }
    if disorder {
        return Ok(Err(out_of_order()));
    }
    Ok(Ok((gone, new)))
}

/// Create `dest` with the settings that must be chosen before the first table.
fn create_database(dest: &Path, settings: &Settings) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    let enc = ["UTF-8", "UTF-16le", "UTF-16be"][usize::from(settings.text_encoding - 1)];
    // Nothing the source holds is re-judged: foreign keys and CHECK constraints are not
    // enforced, and triggers do not exist yet while the rows go in. The page cache is
    // bounded (64 MiB) so that a backup or a restore stays small whatever the database's
    // size: with 256 MiB a 260 MB database's proof peaked at 331 MB, with 64 MiB at
    // 119 MB, for a rebuild about 15% slower (rows go in rowid order, indexes are
    // built by sorting; few pages are read twice).
    conn.execute_batch(&format!(
        "PRAGMA page_size = {}; PRAGMA auto_vacuum = {}; PRAGMA encoding = '{enc}';
         PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -65536;
         PRAGMA foreign_keys = OFF; PRAGMA recursive_triggers = OFF;
         PRAGMA ignore_check_constraints = ON;",
        settings.page_size, settings.auto_vacuum
    ))?;
    Ok(conn)
}

/// Execute one `CREATE ...` statement from the dump; anything else is refused so that a
/// crafted dump cannot run arbitrary SQL (ATTACH, PRAGMA, ...).
fn exec_create(conn: &Connection, sql: &str) -> Result<()> {
    let head: String = sql
        .trim_start()
        .chars()
        .take(7)
        .collect::<String>()
        .to_ascii_uppercase();
    if head != "CREATE " {
        return bad(format!("schema SQL is not a CREATE statement: {sql:.60}"));
    }
    // prepare() refuses more than one statement.
    let mut stmt = conn.prepare(sql)?;
    stmt.raw_execute()?;
    Ok(())
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) FROM main.sqlite_schema WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// Create a table the dump lists, in dump order. SQLite's own tables (`sqlite_sequence`,
/// `sqlite_stat1`/`2`/`3`/`4`) are created from their recorded SQL too, so that exactly
/// the set the source had exists (the SQLite linked here would make `sqlite_stat4` on
/// every ANALYZE, the source's maybe never); SQLite accepts those names only while
/// `writable_schema` is on. `sqlite_sequence` may already exist: the first AUTOINCREMENT
/// table creates it.
fn create_table(conn: &Connection, entry: &SchemaEntry) -> Result<()> {
    let Some(sql) = &entry.sql else {
        return bad(format!("table {} has no SQL", entry.name));
    };
    if !is_internal(&entry.name) {
        return exec_create(conn, sql);
    }
    let lower = entry.name.to_ascii_lowercase();
    let known = lower == "sqlite_sequence"
        || [
            "sqlite_stat1",
            "sqlite_stat2",
            "sqlite_stat3",
            "sqlite_stat4",
        ]
        .contains(&lower.as_str());
    if !known {
        return Err(LogicalError::Unsupported(format!(
            "unknown internal table {}",
            entry.name
        )));
    }
    if table_exists(conn, &entry.name)? {
        return Ok(());
    }
    conn.execute_batch("PRAGMA writable_schema = ON")?;
    let r = exec_create(conn, sql);
    conn.execute_batch("PRAGMA writable_schema = OFF")?;
    r
}

/// Give every `sqlite_schema` row the rowid it had in the source, so the schema lists in
/// the source's order (tables were created first and indexes after the rows, for speed).
/// Only rowids change; `rootpage` and `sql` stay as SQLite wrote them.
fn renumber_schema(conn: &Connection, schema: &[SchemaEntry]) -> Result<()> {
    conn.execute_batch(
        "PRAGMA writable_schema = ON; UPDATE main.sqlite_schema SET rowid = -rowid;",
    )?;
    let result = (|| -> Result<()> {
        let mut stmt = conn.prepare(
            "UPDATE main.sqlite_schema SET rowid = ?1 WHERE type = ?2 AND name = ?3 AND rowid < 0",
        )?;
        for s in schema {
            let Some(rowid) = s.rowid else { continue };
            if stmt.execute(rusqlite::params![rowid, s.kind, s.name])? != 1 {
                return Err(LogicalError::Mismatch(format!(
                    "{} {} missing from the rebuilt schema",
                    s.kind, s.name
                )));
            }
        }
        let extra: Option<String> = conn
            .query_row(
                "SELECT type || ' ' || name FROM main.sqlite_schema WHERE rowid < 0 LIMIT 1",
                [],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        match extra {
            Some(x) => Err(LogicalError::Mismatch(format!(
                "the rebuild made {x}, which the source does not have"
            ))),
            None => Ok(()),
        }
    })();
    conn.execute_batch("PRAGMA writable_schema = OFF")?;
    result
}

/// The rebuilt schema is the dump's: the same entries (with the same rowids, when the
/// dump has them), none missing and none extra.
fn check_schema(conn: &Connection, schema: &[SchemaEntry]) -> Result<()> {
    let same = |a: &SchemaEntry, b: &SchemaEntry| {
        (&a.kind, &a.name, &a.tbl_name, &a.sql) == (&b.kind, &b.name, &b.tbl_name, &b.sql)
            && (a.rowid.is_none() || a.rowid == b.rowid)
    };
    let got = read_schema(conn)?;
    let missing: Vec<String> = schema
        .iter()
        .filter(|s| !got.iter().any(|g| same(s, g)))
        .map(|s| format!("{} {}", s.kind, s.name))
        .chain(
            got.iter()
                .filter(|g| !schema.iter().any(|s| same(s, g)))
                .map(|s| format!("extra {} {}", s.kind, s.name)),
        )
        .collect();
    if !missing.is_empty() {
        return Err(LogicalError::Mismatch(format!(
            "schema differs: {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// Turn durability and the source's journal mode on, and check that every setting came
/// out as the dump says.
fn finish_settings(conn: &Connection, settings: &Settings) -> Result<()> {
    conn.execute_batch("PRAGMA synchronous = FULL;")?;
    if settings.wal {
        let m: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !m.eq_ignore_ascii_case("wal") {
            return Err(LogicalError::Mismatch(format!(
                "journal mode {m}, want wal"
            )));
        }
    } else {
        conn.query_row("PRAGMA journal_mode = DELETE", [], |r| {
            r.get::<_, String>(0)
        })?;
    }
    let s2 = read_settings(conn)?;
    if s2 != *settings {
        return Err(LogicalError::Mismatch(format!(
            "settings {s2:?}, want {settings:?}"
        )));
    }
    Ok(())
}

/// The table sections of a dump, inserted into the tables `create_table` made.
fn insert_rows<R: Read, W: Write>(
    reader: &mut Reader<R>,
    tx: &Connection,
    utf16: bool,
    mut rows: Option<&mut rowlist::Writer<W>>,
) -> Result<()> {
    let mut row = Row::default();
    while let Some(table) = reader.next_table()? {
        let name = &table.name;
        let shape = table_shape(tx, name)?;
        if shape.header.without_rowid != table.without_rowid
            || shape.header.columns != table.columns
            || (table.alias != 0 && shape.header.alias != table.alias)
        {
            return Err(LogicalError::Mismatch(format!(
                "table {name}: columns or key differ from the schema"
            )));
        }
        if is_internal(name) {
            // sqlite_sequence already holds what the inserts above left in it.
            tx.execute(&format!("DELETE FROM main.{}", quote(name)), [])?;
        }
        let mut stmt = tx.prepare(&insert_sql(&shape, utf16))?;
        let mut list = rows
            .as_deref_mut()
            .filter(|_| listed(table.without_rowid, name));
        if let Some(l) = list.as_deref_mut() {
            l.table(name)?;
        }
        while reader.next_row(&mut row)? {
            bind_row(&mut stmt, &row, utf16)?;
            stmt.raw_execute()?;
            if let Some(l) = list.as_deref_mut() {
                l.row(&row)?;
            }
        }
        if let Some(l) = list {
            l.end_table()?;
        }
    }
    Ok(())
}

/// Whether a table's rows are in a row list (`rowlist`): those an update changes row by
/// row.
fn listed(without_rowid: bool, name: &str) -> bool {
    !without_rowid && !is_internal(name)
}

/// The INSERT of one row: the rowid (unless WITHOUT ROWID), then each stored column. In
/// a UTF-16 database, text comes as its stored bytes (tag 7) and is cast back; each
/// column then takes two parameters: the value and "is raw text".
fn insert_sql(shape: &TableShape, utf16: bool) -> String {
    let h = &shape.header;
    let mut names: Vec<String> = Vec::new();
    if !h.without_rowid {
        names.push(shape.rowid_name.to_string());
    }
    names.extend(h.columns.iter().map(|c| quote(c)));
    let placeholders: Vec<String> = (0..names.len())
        .map(|i| {
            let v = param(utf16, i);
            if utf16 && (h.without_rowid || i > 0) {
                format!("CASE WHEN ?{} THEN CAST(?{v} AS TEXT) ELSE ?{v} END", v + 1)
            } else {
                format!("?{v}")
            }
        })
        .collect();
    if names.is_empty() {
        format!("INSERT INTO main.{} DEFAULT VALUES", quote(&h.name))
    } else {
        format!(
            "INSERT INTO main.{}({}) VALUES({})",
            quote(&h.name),
            names.join(","),
            placeholders.join(",")
        )
    }
}

/// The SQL parameter number of insert value `i` (UTF-16 databases: two per value).
fn param(utf16: bool, i: usize) -> usize {
    if utf16 {
        2 * i + 1
    } else {
        i + 1
    }
}

/// Bind a row to the parameters of [`insert_sql`].
fn bind_row(stmt: &mut rusqlite::Statement<'_>, row: &Row, utf16: bool) -> Result<()> {
    let mut i = 0;
    if let Some(rowid) = row.rowid {
        stmt.raw_bind_parameter(param(utf16, 0), rowid)?;
        i = 1;
    }
    for v in &row.values {
        stmt.raw_bind_parameter(param(utf16, i), Bind(v))?;
        if utf16 {
            stmt.raw_bind_parameter(param(utf16, i) + 1, matches!(v, Value::RawText(_)))?;
        }
        i += 1;
    }
    Ok(())
}

/// A dump value as an SQL parameter; raw UTF-16 text is bound as a blob and cast back
/// to text by the INSERT.
struct Bind<'a>(&'a Value<Vec<u8>>);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(n) => ValueRef::Integer(*n),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) | Value::RawText(b) => ValueRef::Blob(b),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::dump::{MAGIC, VERSION};
    use crate::jellyfin::running::side_file as side;
    use std::fs;

    const SCHEMA: &str = r#"
        CREATE TABLE "__EFMigrationsHistory" (
            "MigrationId" TEXT NOT NULL CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY,
            "ProductVersion" TEXT NOT NULL);
        CREATE TABLE "Items" ("Id" TEXT NOT NULL CONSTRAINT "PK_Items" PRIMARY KEY,
            "Name" TEXT, "Year" INTEGER, "Rating" REAL, "Image" BLOB, "ParentId" TEXT
            REFERENCES "Items"("Id"));
        CREATE TABLE "Logs" ("Id" INTEGER NOT NULL CONSTRAINT "PK_Logs" PRIMARY KEY AUTOINCREMENT,
            "Msg" TEXT, "ItemId" TEXT REFERENCES "Items"("Id"));
        CREATE TABLE "Kv" ("K" TEXT NOT NULL, "N" INTEGER NOT NULL, "V" ANY,
            PRIMARY KEY ("K", "N")) WITHOUT ROWID;
        CREATE TABLE plain (a, b);
        CREATE TABLE quirk (id INTEGER PRIMARY KEY DESC, v);
        CREATE TABLE gen (a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL,
            c INTEGER GENERATED ALWAYS AS (a + 1) STORED);
        CREATE TABLE "weird ""name""" ("rowid" TEXT, "x" INTEGER);
        CREATE INDEX "IX_Items_Name" ON "Items" ("Name");
        CREATE UNIQUE INDEX "IX_Logs_Msg" ON "Logs" ("Msg") WHERE "Msg" IS NOT NULL;
        CREATE VIEW "ItemNames" AS SELECT "Id", "Name" FROM "Items";
        CREATE TRIGGER "Items_log" AFTER INSERT ON "Items" BEGIN
            INSERT INTO "Logs" ("Msg", "ItemId") VALUES ('added ' || NEW."Name", NEW."Id"); END;
    "#;

    fn sample(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("src.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 8192; PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA user_version = 42; PRAGMA application_id = -123456;",
        )
        .unwrap();
        let m: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(m, "wal");
        let tx = conn.transaction().unwrap();
        tx.execute_batch(SCHEMA).unwrap();
        tx.execute_batch(
            r#"INSERT INTO "__EFMigrationsHistory" VALUES
                 ('20200514181226_AddActivityLog', '3.1.4'),
                 ('20251109000000_Jellyfin.Server.Migrations.Routines.X', '10.11.3.0');"#,
        )
        .unwrap();
        let big: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for i in 0..300i64 {
            let img: Option<Vec<u8>> = match i % 3 {
                0 => None,
                1 => Some(vec![0u8, 1, 2, 255]),
                _ => Some(vec![]),
            };
            tx.execute(
                r#"INSERT INTO "Items" VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
                rusqlite::params![
                    format!("{:08X}-0000-0000-0000-{:012X}", i * 7919 % 1000, i),
                    if i % 5 == 0 {
                        None
                    } else {
                        Some(format!("Item é {i}"))
                    },
                    if i % 4 == 0 { None } else { Some(1900 + i) },
                    if i % 6 == 0 { f64::NAN } else { i as f64 / 3.0 },
                    img,
                    None::<String>
                ],
            )
            .unwrap();
        }
        tx.execute(
            r#"INSERT INTO "Items" ("Id", "Image") VALUES ('BIG', ?1)"#,
            [&big],
        )
        .unwrap();
        // Mixed storage classes in one column, negative and extreme values.
        for (k, (n, v)) in [
            (0, rusqlite::types::Value::Null),
            (1, rusqlite::types::Value::Integer(i64::MIN)),
            (2, rusqlite::types::Value::Integer(i64::MAX)),
            (3, rusqlite::types::Value::Real(-0.0)),
            (4, rusqlite::types::Value::Real(f64::INFINITY)),
            (5, rusqlite::types::Value::Text(String::new())),
            (6, rusqlite::types::Value::Blob(vec![0; 3])),
        ]
        .into_iter()
        .enumerate()
        {
            tx.execute(
                r#"INSERT INTO "Kv" VALUES (?1, ?2, ?3)"#,
                rusqlite::params![format!("k{}", 7 - k), n, v],
            )
            .unwrap();
        }
        tx.execute_batch(
            r#"DELETE FROM "Logs" WHERE "Id" % 7 = 3;
               DELETE FROM "Logs" WHERE "ItemId" IN (SELECT "Id" FROM "Items" WHERE rowid % 11 = 5);
               DELETE FROM "Items" WHERE rowid % 11 = 5;
               INSERT INTO plain VALUES (1, 'a'), (NULL, x'00'), (2.5, NULL);
               DELETE FROM plain WHERE rowid = 2;
               INSERT INTO plain(rowid, a) VALUES (-5, 'neg'), (9000000000, 'far');
               INSERT INTO quirk(rowid, id, v) VALUES (10, 3, 'x'), (11, 1, 'y');
               INSERT INTO gen(a) VALUES (1), (NULL), (5);
               INSERT INTO "weird ""name""" ("rowid", "x") VALUES ('r', 1), ('s', 2);
               UPDATE sqlite_sequence SET seq = seq + 100 WHERE name = 'Logs';
               ANALYZE;"#,
        )
        .unwrap();
        tx.commit().unwrap();
        conn.close().unwrap();
        path
    }

    fn dump_bytes(path: &Path) -> (Vec<u8>, DumpStats) {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut out = Vec::new();
        let stats = dump(&conn, &mut out).unwrap();
        assert_eq!(stats.bytes, out.len() as u64);
        (out, stats)
    }

    fn rows(conn: &Connection, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, rusqlite::types::Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
    }

    /// Rebuild `dump` into a new file `name` in `dir`, listing its rows under `seed`: the
    /// rebuild, its row list and the list's blake3.
    fn rebuilt_listed(
        dir: &Path,
        name: &str,
        dump: &[u8],
        seed: u64,
    ) -> (std::path::PathBuf, Listed) {
        let path = dir.join(name);
        let mut list = rowlist::Writer::new(Vec::new(), seed).unwrap();
        rebuild_listing(&mut &dump[..], &path, Some(&mut list)).unwrap();
        (path, list.finish().unwrap())
    }

    type Listed = (Vec<u8>, [u8; 32]);

    /// Update `kept`, listed as `old`, with `dump`: what it did, and the new list.
    fn update_listed(dump: &[u8], kept: &Path, old: &Listed, budget: usize) -> (Updated, Listed) {
        let old_list = rowlist::Reader::new(&old.0[..]).unwrap();
        let mut list = rowlist::Writer::new(Vec::new(), old_list.seed()).unwrap();
        let done = update(&mut &dump[..], kept, old_list, &old.1, &mut list, budget).unwrap();
        (done, list.finish().unwrap())
    }

    fn observed(path: &Path) -> crate::jellyfin::observe::Observation {
        let o = crate::jellyfin::capture::observe_file(path).unwrap();
        crate::jellyfin::capture::remove_side_files(path);
        o
    }

    #[test]
    fn an_update_gives_what_a_rebuild_of_the_later_dump_gives() {
        let dir = tempfile::tempdir().unwrap();
        let src = sample(dir.path());
        let (first, _) = dump_bytes(&src);
        let (kept, listed) = rebuilt_listed(dir.path(), "kept.db", &first, rowlist::new_seed());
        let conn = Connection::open(&src).unwrap();
        // A UNIQUE value moved down: a later row's value to an earlier row (rows are visited in rowid
        // order, so writing each changed row as it is met would collide).
        let moved: String = conn
            .query_row(
                r#"SELECT "Msg" FROM "Logs" WHERE "Msg" IS NOT NULL ORDER BY "Id" DESC LIMIT 1"#,
                [],
                |r| r.get(0),
            )
            .unwrap();
        conn.execute(
            r#"UPDATE "Logs" SET "Msg" = NULL WHERE "Msg" = ?1"#,
            [&moved],
        )
        .unwrap();
        conn.execute(
            r#"UPDATE "Logs" SET "Msg" = ?1 WHERE "Id" = (SELECT min("Id") FROM "Logs")"#,
            [&moved],
        )
        .unwrap();
        conn.execute_batch(
            r#"PRAGMA foreign_keys = OFF;
               -- changed values, storage classes and sizes; a row gone, rows new (the
               -- trigger adds log rows in the source: data to the update, never fired)
               UPDATE "Items" SET "Name" = "Name" || ' (edited)', "Year" = 1999
                   WHERE rowid % 13 = 1;
               UPDATE "Items" SET "Rating" = 'not a number' WHERE rowid = 8;
               UPDATE "Items" SET "Image" = zeroblob(70000) WHERE rowid = 9;
               DELETE FROM "Items" WHERE rowid IN (3, 4, 200);
               INSERT INTO "Items" ("Id", "Name") VALUES ('NEW-1', 'new one'), ('NEW-2', NULL);
               -- WITHOUT ROWID, plain rowid tables, generated columns
               DELETE FROM "Kv" WHERE "N" = 2;
               INSERT INTO "Kv" VALUES ('k9', 9, 'nine');
               UPDATE plain SET a = '1' WHERE a = 1;
               INSERT INTO plain(rowid, a) VALUES (-9000000000, 'first');
               UPDATE gen SET a = 40 WHERE a = 5;
               DELETE FROM "weird ""name""";
               UPDATE sqlite_sequence SET seq = seq + 5 WHERE name = 'Logs';
               ANALYZE;"#,
        )
        .unwrap();
        drop(conn);
        let (second, _) = dump_bytes(&src);
        assert_ne!(first, second);

        let kept_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&kept).unwrap());
        let (done, relisted) = update_listed(&second, &kept, &listed, 64 << 20);
        if let Updated::Not(why) = done {
            panic!("not updated: {why}");
        }
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&kept).unwrap());
        assert_eq!(inode, kept_ino, "updated in place");
        assert!(!side(&kept, "-wal").exists(), "no -wal left beside it");
        // Listed under the seed the update kept: the same list.
        let seed = rowlist::Reader::new(&listed.0[..]).unwrap().seed();
        let (fresh, fresh_listed) = rebuilt_listed(dir.path(), "fresh.db", &second, seed);
        assert_eq!(
            relisted, fresh_listed,
            "the update lists the dump as a rebuild does"
        );
        assert_ne!(relisted.1, listed.1);
        let (updated, fresh) = (observed(&kept), observed(&fresh));
        assert_eq!(updated.difference(&fresh), None);
        assert_eq!(updated.digest(), fresh.digest());
        assert_eq!(dump_bytes(&kept).0, second, "it dumps as the source does");
        assert_eq!(updated.digest(), observed(&src).digest());
    }

    #[test]
    fn an_update_refuses_another_schema_or_too_many_changes_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = sample(dir.path());
        let (first, _) = dump_bytes(&src);
        let (kept, listed) = rebuilt_listed(dir.path(), "kept.db", &first, rowlist::new_seed());
        let conn = Connection::open(&src).unwrap();
        conn.execute_batch(r#"UPDATE "Items" SET "Name" = 'renamed' WHERE rowid < 100;"#)
            .unwrap();
        drop(conn);
        let (changed, _) = dump_bytes(&src);
        // 99 changed rows are more than 1 KiB of rows to write.
        assert!(matches!(
            update_listed(&changed, &kept, &listed, 1 << 10).0,
            Updated::Not(_)
        ));
        assert_eq!(dump_bytes(&kept).0, first, "nothing changed");
        // A row list that is not the one the record names, damaged or cut short.
        let mut other = listed.clone();
        other.1[0] ^= 1;
        let mut damaged = listed.clone();
        let at = damaged.0.len() / 2;
        damaged.0[at] ^= 0x40;
        let mut short = listed.clone();
        short.0.truncate(short.0.len() - 20);
        for (what, list) in [("named", &other), ("damaged", &damaged), ("cut", &short)] {
            match update_listed(&changed, &kept, list, 64 << 20).0 {
                Updated::Not(why) => assert!(why.contains("row list"), "{what}: {why}"),
                Updated::Done => panic!("updated by a list not {what}"),
            }
            assert_eq!(dump_bytes(&kept).0, first, "nothing changed ({what})");
        }

        let conn = Connection::open(&src).unwrap();
        conn.execute_batch(r#"CREATE INDEX "IX_Items_Year" ON "Items" ("Year");"#)
            .unwrap();
        drop(conn);
        let (migrated, _) = dump_bytes(&src);
        match update_listed(&migrated, &kept, &listed, 64 << 20).0 {
            Updated::Not(why) => assert!(why.contains("schema"), "{why}"),
            Updated::Done => panic!("updated across a schema change"),
        }
        assert_eq!(dump_bytes(&kept).0, first, "nothing changed");
        let conn = Connection::open(&src).unwrap();
        conn.execute_batch("PRAGMA user_version = 43").unwrap();
        drop(conn);
        let (settings, _) = dump_bytes(&src);
        assert!(matches!(
            update_listed(&settings, &kept, &listed, 64 << 20).0,
            Updated::Not(_)
        ));
    }

    #[test]
    fn rebuild_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let src = sample(dir.path());
        let (d1, stats) = dump_bytes(&src);
        assert!(stats.rows > 300);
        let dest = dir.path().join("rebuilt.db");
        let st2 = rebuild(&mut &d1[..], &dest).unwrap();
        assert_eq!(st2.rows, stats.rows);
        // The rebuilt file was closed cleanly: no WAL or shm left next to it.
        assert!(!dir.path().join("rebuilt.db-wal").exists());
        assert!(!dir.path().join("rebuilt.db-shm").exists());
        // Canonical: dumping the rebuilt database gives the same bytes.
        let (d2, _) = dump_bytes(&dest);
        assert!(d1 == d2, "dump of the rebuilt database differs");

        let a = Connection::open_with_flags(&src, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let b = Connection::open_with_flags(&dest, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        // Settings.
        let sa = read_settings(&a).unwrap();
        assert_eq!(sa, read_settings(&b).unwrap());
        assert_eq!(
            (
                sa.page_size,
                sa.auto_vacuum,
                sa.wal,
                sa.user_version,
                sa.application_id
            ),
            (8192, 2, true, 42, -123456)
        );
        // Schema (tables, indexes incl. automatic ones, views, triggers, their SQL).
        let schema = read_schema(&a).unwrap();
        assert_eq!(schema, read_schema(&b).unwrap());
        for kind in ["table", "index", "view", "trigger"] {
            assert!(schema.iter().any(|s| s.kind == kind), "{kind}");
        }
        // Rows with their rowids, including internal tables.
        for (t, sql) in [
            ("Items", r#"SELECT rowid, * FROM "Items" ORDER BY rowid"#),
            ("Logs", r#"SELECT rowid, * FROM "Logs" ORDER BY rowid"#),
            ("Kv", r#"SELECT * FROM "Kv" ORDER BY "K", "N""#),
            ("plain", "SELECT rowid, * FROM plain ORDER BY rowid"),
            ("quirk", "SELECT rowid, * FROM quirk ORDER BY rowid"),
            ("gen", "SELECT rowid, a, b, c FROM gen ORDER BY rowid"),
            (
                "weird",
                r#"SELECT _rowid_, * FROM "weird ""name""" ORDER BY 1"#,
            ),
            ("seq", "SELECT rowid, * FROM sqlite_sequence ORDER BY rowid"),
            ("stat1", "SELECT rowid, * FROM sqlite_stat1 ORDER BY rowid"),
            ("ef", r#"SELECT * FROM "__EFMigrationsHistory" ORDER BY 1"#),
            ("view", r#"SELECT * FROM "ItemNames" ORDER BY 1"#),
        ] {
            let (x, y) = (rows(&a, sql), rows(&b, sql));
            assert!(!x.is_empty(), "{t} is empty");
            // NaN != NaN: compare by debug repr of bits via the dump instead; others direct.
            assert_eq!(format!("{x:?}"), format!("{y:?}"), "{t}");
        }
        let big: Vec<u8> = b
            .query_row(
                r#"SELECT "Image" FROM "Items" WHERE "Id" = 'BIG'"#,
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(big.len(), 1_500_000);
        let types: Vec<String> = b
            .prepare(r#"SELECT typeof("V") FROM "Kv" ORDER BY "K""#)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // "ANY" has NUMERIC affinity in an ordinary table: -0.0 was stored as integer 0.
        assert_eq!(
            types,
            ["blob", "text", "real", "integer", "integer", "integer", "null"]
        );
        let ic: String = b
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ic, "ok");
        let fk: i64 = b
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fk, 0);
        // sqlite_sequence keeps a seq above max(rowid): the next id matches the original.
        let seq = |c: &Connection| -> i64 {
            c.query_row(
                "SELECT seq FROM sqlite_sequence WHERE name='Logs'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(seq(&a), seq(&b));
    }

    #[test]
    fn dump_is_layout_independent() {
        let dir = tempfile::tempdir().unwrap();
        let src = sample(dir.path());
        // VACUUM renumbers the rowids of a rowid table that has neither an INTEGER
        // PRIMARY KEY nor any index (SQLite documents that VACUUM may change such rowids);
        // `plain` and `sqlite_stat1` are such tables, so they are left out here.
        Connection::open(&src)
            .unwrap()
            .execute_batch("DROP TABLE plain; DELETE FROM sqlite_stat1;")
            .unwrap();
        let (d1, _) = dump_bytes(&src);
        let conn = Connection::open(&src).unwrap();
        conn.execute_batch(r#"VACUUM; REINDEX;"#).unwrap();
        drop(conn);
        let (d2, _) = dump_bytes(&src);
        // VACUUM re-creates the tables before the rest of the schema, which renumbers
        // sqlite_schema: only the schema section, at the head of the dump, changes.
        let schema_end = d1
            .windows(7)
            .position(|w| w == b"T\x05Items")
            .expect("first table section");
        assert_eq!(d1.len(), d2.len());
        let first = d1.iter().zip(&d2).rposition(|(a, b)| a != b);
        assert!(
            first.is_none_or(|p| p < schema_end),
            "VACUUM changed the dump at {first:?} of {} (schema ends at {schema_end}): {:?}",
            d1.len(),
            first.map(|p| String::from_utf8_lossy(&d1[p.saturating_sub(80)..p + 20]).to_string())
        );
    }

    #[test]
    fn rebuilt_table_with_renumbered_rowids_differs_locally() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT printf('%08d', i), hex(randomblob(20)) FROM n;
             DELETE FROM t WHERE rowid = 10;",
        )
        .unwrap();
        let mut d1 = Vec::new();
        dump(&conn, &mut d1).unwrap();
        conn.execute_batch(
            "CREATE TABLE ef_temp (id TEXT PRIMARY KEY, v TEXT);
             INSERT INTO ef_temp SELECT id, v FROM t; DROP TABLE t;
             ALTER TABLE ef_temp RENAME TO t;",
        )
        .unwrap();
        let mut d2 = Vec::new();
        dump(&conn, &mut d2).unwrap();
        // Only the delta of the row after the gap changes (and the schema SQL text).
        let common_suffix = d1
            .iter()
            .rev()
            .zip(d2.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(
            common_suffix > d1.len() * 9 / 10,
            "{common_suffix} of {}",
            d1.len()
        );
    }

    #[test]
    fn added_nullable_column_keeps_row_bytes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT, w INTEGER);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 500)
             INSERT INTO t SELECT printf('%08d', i), hex(randomblob(20)), NULL FROM n;",
        )
        .unwrap();
        let mut d1 = Vec::new();
        dump(&conn, &mut d1).unwrap();
        conn.execute_batch("ALTER TABLE t ADD COLUMN extra TEXT NULL")
            .unwrap();
        let mut d2 = Vec::new();
        dump(&conn, &mut d2).unwrap();
        let suffix = d1
            .iter()
            .rev()
            .zip(d2.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(suffix > d1.len() - 200, "{suffix} of {}", d1.len());
        let dir = tempfile::tempdir().unwrap();
        rebuild(&mut &d2[..], &dir.path().join("r.db")).unwrap();
    }

    #[test]
    fn refuses_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let src = sample(dir.path());
        let (d, _) = dump_bytes(&src);
        for (i, cut) in [0, 5, 9, 40, d.len() / 2, d.len() - 1]
            .into_iter()
            .enumerate()
        {
            let dest = dir.path().join(format!("t{i}.db"));
            assert!(rebuild(&mut &d[..cut], &dest).is_err(), "cut at {cut}");
        }
        let mut extra = d.clone();
        extra.push(0);
        assert!(rebuild(&mut &extra[..], &dir.path().join("x.db")).is_err());
        // Existing destination.
        assert!(rebuild(&mut &d[..], &src).is_err());
    }

    /// A version 1 dump (schema entries without rowids) of one table `t` created by
    /// `sql`, cut after its schema section.
    fn v1_dump_with_sql(sql: &str) -> Vec<u8> {
        let mut d = MAGIC.to_vec();
        d.push(1);
        d.extend_from_slice(&[0x80, 0x20]); // page size 4096
        d.extend_from_slice(&[0, 1, 0]); // auto_vacuum, UTF-8, no WAL
        d.extend_from_slice(&[0, 0]); // user_version, application_id
        d.push(1); // one schema entry
        for s in ["table", "t", "t"] {
            d.push(s.len() as u8);
            d.extend_from_slice(s.as_bytes());
        }
        d.push(1);
        d.push(sql.len() as u8);
        d.extend_from_slice(sql.as_bytes());
        d
    }

    #[test]
    fn refuses_non_create_sql() {
        let dir = tempfile::tempdir().unwrap();
        let d = v1_dump_with_sql("ATTACH '/tmp/x.db' AS x");
        let r = rebuild(&mut &d[..], &dir.path().join("a.db"));
        assert!(matches!(r, Err(LogicalError::Format(_))), "{r:?}");
        let d2 = v1_dump_with_sql("CREATE TABLE t(a); DROP TABLE t");
        assert!(rebuild(&mut &d2[..], &dir.path().join("b.db")).is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn small_dump() -> Vec<u8> {
            let conn = Connection::open_in_memory().unwrap();
            conn.execute_batch(
                "CREATE TABLE a (id INTEGER PRIMARY KEY, t TEXT, r REAL, b BLOB);
                 CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
                 INSERT INTO a VALUES (1, 'x', 1.5, x'00ff'), (3, NULL, NULL, NULL);
                 INSERT INTO w VALUES ('a', 1), ('b', 'two');",
            )
            .unwrap();
            let mut out = Vec::new();
            dump(&conn, &mut out).unwrap();
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let dir = tempfile::tempdir().unwrap();
                let mut input = MAGIC.to_vec();
                input.push(VERSION);
                input.extend_from_slice(&bytes);
                let _ = rebuild(&mut &bytes[..], &dir.path().join("a.db"));
                let _ = rebuild(&mut &input[..], &dir.path().join("b.db"));
            }

            #[test]
            fn mutated_dump_never_panics(pos in any::<proptest::sample::Index>(), byte in any::<u8>(),
                                         cut in any::<proptest::sample::Index>()) {
                let dir = tempfile::tempdir().unwrap();
                let mut d = small_dump();
                let p = pos.index(d.len());
                d[p] = byte;
                let _ = rebuild(&mut &d[..], &dir.path().join("a.db"));
                let c = cut.index(d.len());
                let _ = rebuild(&mut &d[..c], &dir.path().join("b.db"));
            }
        }
    }
}
