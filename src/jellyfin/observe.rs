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
//! Version 2 takes the same view at a lower cost when the schema recomputes nothing: no
//! expression or partial index, no generated column, only SQLite's own collations, a
//! UTF-8 database. An index entry is then nothing but copies of its row's values, so
//! instead of `integrity_check` looking every row up in every index, each index is read
//! in its own order (an index-only scan, checked with `EXPLAIN QUERY PLAN`) and hashed
//! entry by entry, and `quick_check` checks the file's structure. A rebuild's indexes
//! are built by the SQLite here from rows shown equal to the source's; equal index
//! digests mean the source's indexes hold exactly what it would build: a damaged or
//! differently computed entry, a missing or extra one, or one out of order makes them
//! differ. Any other schema gets version 1's full `integrity_check`. Snapshots record
//! the version of the digest they hold; each is compared with one of its own version.
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
/// so that a digest is only ever compared with one of its own version. Backups observe
/// with this one; the earlier ones stay readable for the snapshots that recorded them.
pub const VERSION: u32 = 2;

/// The versions this build can observe by.
const KNOWN: [u32; 2] = [1, 2];

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
    /// The output of `integrity_check`, or of `quick_check` when `indexes` stands for
    /// the index-against-table comparison (version 2, a schema that recomputes nothing).
    pub integrity: Vec<String>,
    pub foreign_keys: Vec<String>,
    /// Version 2 with a schema that recomputes nothing: every index's entries, in its
    /// order (`rows` counts entries), by table then index name. Empty otherwise.
    pub indexes: Vec<TableDigest>,
    /// The observation version (see [`VERSION`]).
    pub version: u32,
}

/// Observe `conn`'s main database by the current version. Runs in one read transaction.
#[cfg(test)]
fn observe(conn: &Connection) -> Result<Observation, LogicalError> {
    observe_as(conn, None, VERSION)
}

/// Observe `conn`'s main database by observation `version`, in one read transaction.
/// `wal` is the journal mode when the caller knows better (a connection opened with
/// `immutable=1` reports `delete` for a WAL-mode file).
pub fn observe_as(
    conn: &Connection,
    wal: Option<bool>,
    version: u32,
) -> Result<Observation, LogicalError> {
    known(version)?;
    let tx = conn.unchecked_transaction()?;
    let contents = observe_contents(&tx, wal, false)?;
    let checks = observe_checks(&tx, version)?;
    tx.commit()?;
    Ok(Observation::of(contents, checks, version))
}

/// An observation of a private copy but for the rows a dump of the same copy digests as
/// it reads them ([`dumped_digest`]): read beside the dump, so that the copy's rows are
/// read once for both. [`Partial::complete`] adds the dump's digests.
pub struct Partial {
    contents: Contents,
    checks: Checks,
    version: u32,
}

/// [`observe_as`] of a private file but for the tables its dump digests (see [`Partial`]).
pub fn observe_but_dumped(conn: &Connection, version: u32) -> Result<Partial, LogicalError> {
    known(version)?;
    let tx = conn.unchecked_transaction()?;
    let contents = observe_contents(&tx, None, true)?;
    let checks = observe_checks(&tx, version)?;
    tx.commit()?;
    Ok(Partial {
        contents,
        checks,
        version,
    })
}

impl Partial {
    /// The whole observation, with the digests a dump of the same file made of the tables
    /// left out. `Err` (the table) when one of them is not among `dumped`.
    pub fn complete(self, dumped: &[TableDigest]) -> Result<Observation, String> {
        let mut contents = self.contents;
        for name in std::mem::take(&mut contents.dumped) {
            match dumped.iter().find(|d| d.name == name) {
                Some(d) => contents.tables.push(d.clone()),
                None => return Err(format!("the dump did not digest table {name}")),
            }
        }
        contents
            .tables
            .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(Observation::of(contents, self.checks, self.version))
    }
}

/// The digest of a table's rows given one by one, as a dump reads them with the
/// observation's own query (`logical::dumped_as_observed`): what [`table_digest`] gives
/// reading the same rows.
pub struct DumpedDigest {
    name: String,
    h: Buffered,
    rows: u64,
}

/// A [`DumpedDigest`] of table `name`.
pub fn dumped_digest(name: &str) -> DumpedDigest {
    DumpedDigest {
        name: name.to_string(),
        h: Buffered::new(),
        rows: 0,
    }
}

impl DumpedDigest {
    /// The next row: its rowid (none in a WITHOUT ROWID table) and values, as read.
    pub fn row(&mut self, rowid: Option<i64>, values: &[crate::format::dump::Value<&[u8]>]) {
        use crate::format::dump::Value;
        self.h.update(b"R");
        if let Some(id) = rowid {
            hash_value(&mut self.h, ValueRef::Integer(id), false);
        }
        for v in values {
            let (v, text_flag) = match *v {
                Value::Null => (ValueRef::Null, false),
                Value::Integer(n) => (ValueRef::Integer(n), false),
                Value::Real(f) => (ValueRef::Real(f), false),
                Value::Text(t) => (ValueRef::Text(t), false),
                Value::Blob(b) => (ValueRef::Blob(b), false),
                Value::RawText(b) => (ValueRef::Blob(b), true),
            };
            hash_value(&mut self.h, v, text_flag);
        }
        self.rows += 1;
    }

    pub fn finish(self) -> TableDigest {
        TableDigest {
            name: self.name,
            rows: self.rows,
            digest: *self.h.finalize().as_bytes(),
        }
    }
}

/// Whether this build can observe by `version` (a record of a newer jellysnap may name
/// one it cannot).
pub fn knows(version: u32) -> bool {
    KNOWN.contains(&version)
}

fn known(version: u32) -> Result<(), LogicalError> {
    if knows(version) {
        return Ok(());
    }
    Err(LogicalError::Unsupported(format!(
        "its proof is an observation of version {version}, newer than this jellysnap makes ({VERSION}): restore it with a newer jellysnap"
    )))
}

/// [`observe_as`] of a database nothing writes to (a private copy, a rebuild), in two
/// halves on two connections at once: the contents on `conn`, SQLite's checks (about
/// half of an observation's time) on `other`, on a thread of its own. The same
/// observation as [`observe_as`]'s: with no writer, both read the same database.
pub fn observe_private(
    conn: &Connection,
    other: Connection,
    version: u32,
) -> Result<Observation, LogicalError> {
    known(version)?;
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("jellysnap-db-check".into())
            .spawn_scoped(s, move || -> Result<Checks, LogicalError> {
                let tx = other.unchecked_transaction()?;
                let checks = observe_checks(&tx, version)?;
                tx.commit()?;
                Ok(checks)
            });
        let Ok(checks) = spawned else {
            // No second thread: one connection does it all.
            return observe_as(conn, None, version);
        };
        let tx = conn.unchecked_transaction()?;
        let contents = observe_contents(&tx, None, false)?;
        tx.commit()?;
        let checks = checks.join().unwrap_or_else(|_| {
            Err(LogicalError::Io(std::io::Error::other(
                "the thread running SQLite's checks panicked",
            )))
        })?;
        Ok(Observation::of(contents, checks, version))
    })
}

/// What an application reads: settings, schema, rows, partial index sizes.
struct Contents {
    settings: Settings,
    schema: Vec<SchemaEntry>,
    /// By name (bytes), every table's but those in `dumped`.
    tables: Vec<TableDigest>,
    /// Tables whose digests a dump gives ([`Partial`]).
    dumped: Vec<String>,
    partial_indexes: Vec<(String, i64)>,
}

/// What SQLite's own checks say, and (version 2, a plain schema) the indexes' entries.
struct Checks {
    integrity: Vec<String>,
    foreign_keys: Vec<String>,
    indexes: Vec<TableDigest>,
}

/// The contents of `tx`'s database. With `dumped`, the tables a dump reads with the
/// observation's own query (`logical::dumped_as_observed`) are not read: their names are
/// left in `Contents::dumped`, for the dump's digests of them ([`Partial::complete`]).
fn observe_contents(
    tx: &Connection,
    wal: Option<bool>,
    dumped: bool,
) -> Result<Contents, LogicalError> {
    let mut settings = logical::read_settings(tx)?;
    if let Some(wal) = wal {
        settings.wal = wal;
    }
    let schema = logical::read_schema(tx)?;
    let mut tables = Vec::new();
    let mut left = Vec::new();
    let utf16 = settings.text_encoding != 1;
    let mut names: Vec<&SchemaEntry> = schema.iter().filter(|s| s.kind == "table").collect();
    names.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    for t in names {
        if dumped && logical::dumped_as_observed(tx, &t.name, utf16) {
            left.push(t.name.clone());
        } else {
            tables.push(table_digest(tx, &t.name, utf16)?);
        }
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
    Ok(Contents {
        settings,
        schema,
        tables,
        dumped: left,
        partial_indexes,
    })
}

fn observe_checks(tx: &Connection, version: u32) -> Result<Checks, LogicalError> {
    let plan = match version {
        1 => None,
        _ => check_plan(tx)?,
    };
    let messages = |pragma: &str| -> Result<Vec<String>, LogicalError> {
        let mut stmt = tx.prepare(&format!("PRAGMA main.{pragma}"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    };
    let (integrity, scans) = match plan {
        None => (
            messages(&format!("integrity_check({MAX_INTEGRITY_MESSAGES})"))?,
            Vec::new(),
        ),
        Some(plan) => {
            let mut all = messages(&format!("quick_check({MAX_INTEGRITY_MESSAGES})"))?;
            for t in &plan.full {
                let literal = format!("'{}'", t.replace('\'', "''"));
                for m in messages(&format!("integrity_check({literal})"))? {
                    all.push(format!("{t}: {m}"));
                }
            }
            (all, plan.scans)
        }
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
    let mut indexes = Vec::new();
    for scan in scans {
        indexes.push(index_digest(tx, scan)?);
    }
    Ok(Checks {
        integrity,
        foreign_keys,
        indexes,
    })
}

impl Observation {
    fn of(c: Contents, checks: Checks, version: u32) -> Self {
        Observation {
            settings: c.settings,
            schema: c.schema,
            tables: c.tables,
            partial_indexes: c.partial_indexes,
            integrity: checks.integrity,
            foreign_keys: checks.foreign_keys,
            indexes: checks.indexes,
            version,
        }
    }
}

/// One index read in its own order: its name and the index-only query that reads it.
struct IndexScan {
    name: String,
    sql: String,
}

/// How version 2 checks a UTF-8 database: `quick_check` for the file's structure, the
/// indexes of tables whose schema recomputes nothing read in their order, and
/// `integrity_check` of each other table (a partial or expression index, a generated
/// column, an index that cannot be read on its own in order).
struct CheckPlan {
    scans: Vec<IndexScan>,
    full: Vec<String>,
}

/// The [`CheckPlan`] of the database; `None` when `integrity_check` checks it all (a
/// UTF-16 database, whose index values are not read back exactly as text).
fn check_plan(tx: &Connection) -> Result<Option<CheckPlan>, LogicalError> {
    let settings = logical::read_settings(tx)?;
    if settings.text_encoding != 1 {
        return Ok(None);
    }
    let schema = logical::read_schema(tx)?;
    let mut tables: Vec<&SchemaEntry> = schema.iter().filter(|s| s.kind == "table").collect();
    tables.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut plan = CheckPlan {
        scans: Vec::new(),
        full: Vec::new(),
    };
    for t in tables {
        match table_scans(tx, &t.name)? {
            Some(scans) => plan.scans.extend(scans),
            None => plan.full.push(t.name.clone()),
        }
    }
    Ok(Some(plan))
}

/// The index-only scans of table `name`'s indexes, by index name; `None` when any of
/// its values is computed (see [`CheckPlan`]).
fn table_scans(tx: &Connection, name: &str) -> Result<Option<Vec<IndexScan>>, LogicalError> {
    let info = TableInfo::read(tx, name)?;
    if info.columns.iter().any(|c| c.hidden != 0) {
        return Ok(None); // generated columns
    }
    let mut list = tx.prepare("SELECT name, partial, origin FROM pragma_index_list(?1)")?;
    let mut indexes = list
        .query_map([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // A WITHOUT ROWID table's primary key is the table's own b-tree: its rows.
    indexes.retain(|(_, _, origin)| !(info.without_rowid && origin == "pk"));
    indexes.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut scans = Vec::new();
    for (index, partial, _) in indexes {
        if partial {
            return Ok(None);
        }
        match index_scan(tx, &info, &index)? {
            Some(scan) => scans.push(scan),
            None => return Ok(None),
        }
    }
    Ok(Some(scans))
}

/// The query that reads index `name` of table `info` entry by entry in its order, from
/// the index alone: every column of the entry (key columns, then the rowid or the
/// primary key), ordered as the index is. `None` when an entry holds anything but plain
/// column values under SQLite's own collations, or when SQLite would not read the index
/// alone, in order.
fn index_scan(
    tx: &Connection,
    info: &TableInfo,
    name: &str,
) -> Result<Option<IndexScan>, LogicalError> {
    let mut stmt =
        tx.prepare("SELECT cid, name, desc, coll, key FROM pragma_index_xinfo(?1) ORDER BY seqno")?;
    let cols = stmt
        .query_map([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (mut select, mut order) = (Vec::new(), Vec::new());
    for (cid, col, desc, coll, key) in cols {
        let column = match (cid, col) {
            (-1, _) if !key && !info.without_rowid => info.rowid_name()?.to_string(),
            (c, Some(col)) if c >= 0 => quote(&col),
            // An expression, or the rowid as a key column.
            _ => return Ok(None),
        };
        let coll = coll.unwrap_or_else(|| "BINARY".into());
        if !["BINARY", "NOCASE", "RTRIM"]
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&coll))
        {
            return Ok(None);
        }
        order.push(format!(
            "{column} COLLATE {coll}{}",
            if desc { " DESC" } else { "" }
        ));
        select.push(column);
    }
    if select.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {} FROM main.{} INDEXED BY {} ORDER BY {}",
        select.join(","),
        quote(&info.name),
        quote(name),
        order.join(",")
    );
    // Read from the index alone, in its order: no row looked up, no sort.
    let mut plan = tx.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let details = plan
        .query_map([], |r| r.get::<_, String>(3))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let index_only = details.len() == 1
        && details[0].contains("USING COVERING INDEX")
        && !details.iter().any(|d| d.contains("TEMP B-TREE"));
    Ok(index_only.then(|| IndexScan {
        name: name.to_string(),
        sql,
    }))
}

/// One index's entries, hashed value by value in its order (as [`table_digest`] rows).
fn index_digest(tx: &Connection, scan: IndexScan) -> Result<TableDigest, LogicalError> {
    let mut stmt = tx.prepare(&scan.sql)?;
    let n = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut h = Buffered::new();
    let mut count = 0u64;
    while let Some(row) = rows.next()? {
        h.update(b"E");
        for i in 0..n {
            hash_value(&mut h, row.get_ref(i)?, false);
        }
        count += 1;
    }
    Ok(TableDigest {
        name: scan.name,
        rows: count,
        digest: *h.finalize().as_bytes(),
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
    let mut h = Buffered::new();
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
pub fn select_all(info: &TableInfo, utf16: bool) -> Result<String, LogicalError> {
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
fn hash_value(h: &mut Buffered, v: ValueRef<'_>, text_flag: bool) {
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

/// A blake3 hasher fed through a buffer. Rows arrive as many values of a few bytes each;
/// blake3 hashes input it is given in large pieces several 1 KiB chunks at a time (SIMD),
/// but compresses small pieces one 64-byte block at a time. The digest is the same as
/// feeding every piece to `blake3::Hasher` directly.
struct Buffered {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl Buffered {
    /// Hand the buffer to blake3 once it holds this much.
    const FLUSH: usize = 64 << 10;

    fn new() -> Self {
        Buffered {
            hasher: blake3::Hasher::new(),
            buf: Vec::with_capacity(Self::FLUSH),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > Self::FLUSH {
            self.hasher.update(&self.buf);
            self.buf.clear();
            if bytes.len() >= Self::FLUSH {
                self.hasher.update(bytes);
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    fn finalize(mut self) -> blake3::Hash {
        self.hasher.update(&self.buf);
        self.hasher.finalize()
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
        put(format!("jellysnap observation {}", self.version).as_bytes());
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
        if self.version >= 2 {
            // Which check `integrity` holds is told by whether indexes were read.
            put(b"indexes");
            for t in &self.indexes {
                put(t.name.as_bytes());
                put(&t.rows.to_le_bytes());
                put(&t.digest);
            }
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
        if self.version != rebuilt.version {
            return Some(format!(
                "observed by version {} and {}",
                self.version, rebuilt.version
            ));
        }
        if let Some((a, _)) = self
            .indexes
            .iter()
            .zip(&rebuilt.indexes)
            .find(|(a, b)| a != b)
        {
            return Some(format!(
                "index {} does not hold what SQLite {} builds from the rows (a damaged or differently computed index)",
                a.name,
                rusqlite::version()
            ));
        }
        if self.indexes.len() != rebuilt.indexes.len() {
            return Some("the indexes were read differently (the schema differs)".into());
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
pub(crate) mod tests {
    use super::*;

    fn obs(sql: &str) -> Observation {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        c.execute_batch(sql).unwrap();
        observe(&c).unwrap()
    }

    #[test]
    fn a_buffered_hash_is_the_hash_of_the_same_bytes() {
        // Pieces of every size around the buffer's, in several orders.
        let sizes = [
            0, 1, 9, 1023, 1024, 1025, 65_535, 65_536, 65_537, 200_000, 3,
        ];
        for rotate in 0..sizes.len() {
            let mut direct = blake3::Hasher::new();
            let mut buffered = Buffered::new();
            for (i, n) in sizes.iter().cycle().skip(rotate).take(40).enumerate() {
                let piece: Vec<u8> = (0..*n).map(|j| (i * 31 + j * 7) as u8).collect();
                direct.update(&piece);
                buffered.update(&piece);
            }
            assert_eq!(buffered.finalize(), direct.finalize());
        }
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
    fn the_split_observation_is_the_same_observation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE p (id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE c (id INTEGER PRIMARY KEY, p REFERENCES p(id), x);
             CREATE INDEX cx ON c (x) WHERE x > 1;
             INSERT INTO p VALUES (1, 'a'), (2, NULL);
             INSERT INTO c VALUES (1, 1, 1), (2, 3, 2), (3, 2, 5);
             PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET sql = 'CREATE TABLE p (id INTEGER PRIMARY KEY, v TEXT NOT NULL)'
              WHERE name = 'p';",
        )
        .unwrap();
        drop(c);
        let c = Connection::open(&path).unwrap();
        let whole = observe(&c).unwrap();
        assert_eq!(whole.foreign_keys.len(), 1);
        assert_ne!(whole.integrity, vec!["ok".to_string()]);
        let other = Connection::open(&path).unwrap();
        let split = observe_private(&c, other, VERSION).unwrap();
        assert_eq!(whole, split);
        assert_eq!(whole.digest(), split.digest());
    }

    /// A database file with table t(k, v) and index `tk` on k, rows written by SQLite.
    fn indexed_file(dir: &std::path::Path, name: &str, extra: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v);
             CREATE INDEX tk ON t (k);
             CREATE TABLE w (a TEXT, b INTEGER, PRIMARY KEY (a, b DESC)) WITHOUT ROWID;
             CREATE UNIQUE INDEX wb ON w (b, a COLLATE NOCASE);
             INSERT INTO t (k, v) VALUES ('apple', 1), ('berry', 2.5), ('cherry', x'00ff');
             INSERT INTO w VALUES ('x', 1), ('Y', 2), ('z', 3);
             {extra}"
        ))
        .unwrap();
        path
    }

    fn observe_path(path: &std::path::Path, version: u32) -> Observation {
        let c = Connection::open(path).unwrap();
        observe_as(&c, None, version).unwrap()
    }

    #[test]
    fn version_2_reads_plain_indexes_instead_of_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = indexed_file(dir.path(), "a", "");
        let v2 = observe_path(&path, 2);
        let names: Vec<(&str, u64)> = v2
            .indexes
            .iter()
            .map(|i| (i.name.as_str(), i.rows))
            .collect();
        assert_eq!(names, vec![("tk", 3), ("wb", 3)]);
        assert_eq!(v2.integrity, vec!["ok".to_string()]);
        let v1 = observe_path(&path, 1);
        assert!(v1.indexes.is_empty());
        assert_ne!(v1.digest(), v2.digest());
        // The same rows written in another order: the same observation.
        let again = indexed_file(dir.path(), "b", "DELETE FROM t; INSERT INTO t (id, k, v) VALUES (3, 'cherry', x'00ff'), (1, 'apple', 1), (2, 'berry', 2.5);");
        assert_eq!(observe_path(&again, 2).digest(), v2.digest());
        // A version this build does not know is refused, not guessed at.
        assert!(observe_as(&Connection::open(&path).unwrap(), None, 3).is_err());
    }

    #[test]
    fn version_2_checks_a_table_with_computed_values_with_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        for (extra, table) in [
            ("CREATE INDEX e ON t (lower(k));", "t"),
            ("CREATE INDEX p ON t (k) WHERE v > 1;", "t"),
            ("CREATE TABLE g (a, b AS (a * 2) STORED);", "g"),
        ] {
            let path = indexed_file(dir.path(), &format!("f{}", extra.len()), extra);
            let v2 = observe_path(&path, 2);
            let scanned: Vec<&str> = v2.indexes.iter().map(|i| i.name.as_str()).collect();
            let want = if table == "t" {
                vec!["wb"]
            } else {
                vec!["tk", "wb"]
            };
            assert_eq!(scanned, want, "{extra}");
            assert!(
                v2.integrity.contains(&format!("{table}: ok")),
                "{extra}: {:?}",
                v2.integrity
            );
            // A damaged entry is seen, by whichever check reads that index.
            damage_index(&path, "tk", b"berry", b"barry");
            let bad = observe_path(&path, 2);
            assert!(v2.difference(&bad).is_some(), "{extra}");
        }
    }

    /// Overwrite the first occurrence of `from` in index `index`'s root page with `to`.
    /// Replace the bytes `from` with `to` in the root page of `index` in the file at
    /// `path`: an index entry damaged on disk.
    pub(crate) fn damage_index(path: &std::path::Path, index: &str, from: &[u8], to: &[u8]) {
        let (root, page_size): (i64, i64) = {
            let c = Connection::open(path).unwrap();
            let root = c
                .query_row(
                    "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
                    [index],
                    |r| r.get(0),
                )
                .unwrap();
            (
                root,
                c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap(),
            )
        };
        let mut bytes = std::fs::read(path).unwrap();
        let page = (root - 1) as usize * page_size as usize..root as usize * page_size as usize;
        let at = bytes[page.clone()]
            .windows(from.len())
            .position(|w| w == from)
            .unwrap()
            + page.start;
        bytes[at..at + to.len()].copy_from_slice(to);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn version_2_sees_a_damaged_index_entry_as_the_full_check_does() {
        let dir = tempfile::tempdir().unwrap();
        let clean = indexed_file(dir.path(), "clean", "");
        // An entry whose value is not its row's ('berry' indexed as 'barry').
        let damaged = indexed_file(dir.path(), "damaged", "");
        damage_index(&damaged, "tk", b"berry", b"barry");
        // An entry out of its index's order ('cherry' indexed as 'aherry', after 'berry').
        let disordered = indexed_file(dir.path(), "disordered", "");
        damage_index(&disordered, "tk", b"cherry", b"aherry");
        let good = observe_path(&clean, 2);
        for bad in [&damaged, &disordered] {
            let v1_bad = observe_path(bad, 1);
            assert!(observe_path(&clean, 1).difference(&v1_bad).is_some());
            let v2_bad = observe_path(bad, 2);
            // The rows are the same; only the index tells.
            assert_eq!(v2_bad.tables, good.tables);
            let why = v2_bad.difference(&good).expect("a damaged index is seen");
            assert!(why.contains("index tk"), "{why}");
            assert_ne!(v2_bad.digest(), good.digest());
        }
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
