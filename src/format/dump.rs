//! The logical SQLite dump: the grammar of its bytes, the encoder ([`Writer`], to any
//! `Write`) and the decoder ([`Reader`], from any `Read`). docs/FORMAT.md ("Database
//! dumps") says what a dump holds; this is the byte layout, the single source of truth for
//! it. Pure code: what a database holds and how it is read or rebuilt is
//! `jellyfin::logical`'s.
//!
//! # Encoding (version 2; version 1 is still read)
//!
//! ```text
//! dump     = "JSSQLDMP" version:u8(=2) header schema table* 'E' rows:varint
//! header   = page_size:varint auto_vacuum:u8 text_encoding:u8 wal:u8
//!            user_version:zigzag application_id:zigzag
//! schema   = count:varint entry*       in sqlite_schema rowid order (v1: sorted by
//!                                       (type rank, name bytes), no rowids)
//! entry    = rowid_delta:zigzag type:str name:str tbl_name:str sql:(0 | 1 str)
//!            rowid_delta = rowid - previous entry's rowid (first: rowid - 0); v1 has none
//! table    = 'T' name:str without_rowid:u8 alias:varint ncols:varint colname:str*
//!            row* 0x00                 tables sorted by name, `sqlite_*` tables last
//! row      = 0x01 [rowid_delta:zigzag] value{0..=ncols} 0x06
//!            rowid_delta = rowid - previous row's rowid (first row: rowid - 0);
//!            absent for WITHOUT ROWID tables. Rows in rowid order, or primary-key order
//!            for WITHOUT ROWID tables. Trailing NULL columns are left out: the row
//!            ends with 0x06 and the missing columns are NULL.
//! value    = 0x00                      NULL
//!          | 0x01 zigzag               INTEGER
//!          | 0x02 bits:u64le           REAL (exact bits)
//!          | 0x03 str                  TEXT (the stored UTF-8 bytes, unchecked)
//!          | 0x04 len:varint bytes     BLOB
//!          | 0x05                      INTEGER equal to the row's rowid (only in the
//!                                      column `alias - 1`, the INTEGER PRIMARY KEY)
//!          | 0x07 str                  TEXT as stored in a UTF-16 database (its raw
//!                                      UTF-16 bytes; only in UTF-16 databases)
//! str      = len:varint bytes
//! varint   = unsigned LEB128, at most 10 bytes; zigzag = varint of (n << 1) ^ (n >> 63)
//! ```
//!
//! Trailing NULLs are elided so that `ALTER TABLE ADD COLUMN` of a nullable column (which
//! SQLite does without touching the rows) does not change the rows' bytes either.
//! Rowids are delta-encoded so that a table rebuilt with `INSERT ... SELECT` (which
//! renumbers rowids after any gap) still produces mostly identical bytes. In a UTF-16
//! database text is dumped as its stored bytes (SQLite's conversion to UTF-8 would be
//! lossy for text that is not valid UTF-16).
//!
//! Decoding never panics on bad input: every length is bounds-checked and capped, and a
//! malformed dump is an error ([`DumpError::Format`]).

use std::collections::HashSet;
use std::io::{self, Read, Write};

/// The first bytes of every dump.
pub const MAGIC: &[u8; 8] = b"JSSQLDMP";
/// The dump version backups write.
pub const VERSION: u8 = 2;
/// The oldest dump version restores still read.
pub const OLDEST_VERSION: u8 = 1;

/// Largest string or blob accepted by the decoder (SQLite's own hard limit is < 2^31).
const MAX_VALUE_LEN: u64 = 1 << 31;
/// Largest identifier / schema SQL accepted by the decoder.
const MAX_NAME_LEN: u64 = 1 << 24;
const MAX_COLUMNS: u64 = 32_767;
const MAX_SCHEMA_ENTRIES: u64 = 1 << 20;

/// Section tags.
const TABLE: u8 = b'T';
const END: u8 = b'E';
/// Row tags inside a table section.
const ROW: u8 = 0x01;
const TABLE_END: u8 = 0x00;
/// Value tags.
const NULL: u8 = 0x00;
const INTEGER: u8 = 0x01;
const REAL: u8 = 0x02;
const TEXT: u8 = 0x03;
const BLOB: u8 = 0x04;
const ROWID: u8 = 0x05;
const ROW_END: u8 = 0x06;
const RAW_TEXT: u8 = 0x07;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed database dump: {0}")]
    Format(String),
    /// Not damage: a newer jellysnap wrote it (docs/FORMAT.md, "Versions").
    #[error("dump format {found} is newer than this jellysnap reads (up to {supported})")]
    Newer { found: u8, supported: u8 },
}

type Result<T, E = DumpError> = std::result::Result<T, E>;

fn bad<T>(msg: impl Into<String>) -> Result<T> {
    Err(DumpError::Format(msg.into()))
}

/// What a dump holds, counted while it was written or read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub schema_entries: u64,
    pub tables: u64,
    pub rows: u64,
    /// Bytes written (0 when read).
    pub bytes: u64,
}

/// Database settings that live in the file header and must be reproduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub page_size: u32,
    /// 0 none, 1 full, 2 incremental.
    pub auto_vacuum: u8,
    /// 1 UTF-8, 2 UTF-16le, 3 UTF-16be.
    pub text_encoding: u8,
    pub wal: bool,
    pub user_version: i32,
    pub application_id: i32,
}

impl Settings {
    /// Text is stored as UTF-16 (dumped with tag 7).
    pub fn utf16(&self) -> bool {
        self.text_encoding != 1
    }
}

/// One `sqlite_schema` row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaEntry {
    /// The row's rowid in `sqlite_schema` (its position); `None` in version 1 dumps.
    pub rowid: Option<i64>,
    pub kind: String,
    pub name: String,
    pub tbl_name: String,
    pub sql: Option<String>,
}

/// The head of a table section: how its rows are keyed and which columns they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableHeader {
    pub name: String,
    pub without_rowid: bool,
    /// 1-based index into `columns` of the INTEGER PRIMARY KEY (the rowid's alias);
    /// 0 = none.
    pub alias: usize,
    pub columns: Vec<String>,
}

/// One column value: `B` is `&[u8]` when written, `Vec<u8>` when read.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<B> {
    Null,
    Integer(i64),
    Real(f64),
    Text(B),
    Blob(B),
    /// Text as stored in a UTF-16 database: its raw UTF-16 bytes.
    RawText(B),
}

/// One row read back: its rowid (`None` in a WITHOUT ROWID table) and one value per
/// column, elided trailing NULLs filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub rowid: Option<i64>,
    pub values: Vec<Value<Vec<u8>>>,
}

/// Names SQLite reserves for itself (`sqlite_sequence`, `sqlite_stat1`, ...). Compared as
/// bytes: a name's 7th byte may fall inside a multi-byte character.
pub fn is_internal(name: &str) -> bool {
    name.as_bytes()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"sqlite_"))
}

/// The tables of `schema` in the order their sections are written: by name (bytes),
/// SQLite's own `sqlite_*` tables last.
pub fn tables_in_order(schema: &[SchemaEntry]) -> Vec<&SchemaEntry> {
    let mut tables: Vec<&SchemaEntry> = schema.iter().filter(|s| s.kind == "table").collect();
    tables.sort_by(|a, b| {
        (is_internal(&a.name), a.name.as_bytes()).cmp(&(is_internal(&b.name), b.name.as_bytes()))
    });
    tables
}

fn type_rank(kind: &str) -> u8 {
    match kind {
        "table" => 0,
        "index" => 1,
        "view" => 2,
        "trigger" => 3,
        _ => 4,
    }
}

/// The canonical order of a version 1 schema section.
fn sort_schema(entries: &mut [SchemaEntry]) {
    entries.sort_by(|a, b| {
        (type_rank(&a.kind), a.name.as_bytes(), a.tbl_name.as_bytes()).cmp(&(
            type_rank(&b.kind),
            b.name.as_bytes(),
            b.tbl_name.as_bytes(),
        ))
    });
}

// ---------------------------------------------------------------------------------------
// Encoder

/// Writes a dump, section by section: [`Writer::new`] (header and schema), then for each
/// table [`Writer::table`], its rows ([`Writer::row`]) and [`Writer::end_table`], then
/// [`Writer::finish`].
pub struct Writer<W: Write> {
    w: W,
    stats: DumpStats,
    /// The alias of the table being written.
    alias: usize,
    prev_rowid: i64,
}

impl<W: Write> Writer<W> {
    /// Start a dump: magic, version, header and schema section.
    pub fn new(w: W, settings: &Settings, schema: &[SchemaEntry]) -> io::Result<Writer<W>> {
        let mut out = Writer {
            w,
            stats: DumpStats::default(),
            alias: 0,
            prev_rowid: 0,
        };
        out.bytes(MAGIC)?;
        out.u8(VERSION)?;
        out.settings(settings)?;
        out.varint(schema.len() as u64)?;
        let mut prev_rowid: i64 = 0;
        for s in schema {
            let rowid = s.rowid.unwrap_or_default();
            out.zigzag(rowid.wrapping_sub(prev_rowid))?;
            prev_rowid = rowid;
            out.schema_entry(s)?;
        }
        out.stats.schema_entries = schema.len() as u64;
        Ok(out)
    }

    fn settings(&mut self, s: &Settings) -> io::Result<()> {
        self.varint(u64::from(s.page_size))?;
        self.u8(s.auto_vacuum)?;
        self.u8(s.text_encoding)?;
        self.u8(u8::from(s.wal))?;
        self.zigzag(i64::from(s.user_version))?;
        self.zigzag(i64::from(s.application_id))
    }

    fn schema_entry(&mut self, s: &SchemaEntry) -> io::Result<()> {
        self.str(s.kind.as_bytes())?;
        self.str(s.name.as_bytes())?;
        self.str(s.tbl_name.as_bytes())?;
        match &s.sql {
            None => self.u8(0),
            Some(sql) => {
                self.u8(1)?;
                self.str(sql.as_bytes())
            }
        }
    }

    /// Start a table section.
    pub fn table(&mut self, t: &TableHeader) -> io::Result<()> {
        self.u8(TABLE)?;
        self.str(t.name.as_bytes())?;
        self.u8(u8::from(t.without_rowid))?;
        self.varint(t.alias as u64)?;
        self.varint(t.columns.len() as u64)?;
        for c in &t.columns {
            self.str(c.as_bytes())?;
        }
        self.alias = t.alias;
        self.prev_rowid = 0;
        Ok(())
    }

    /// One row of the current table: `rowid` is `None` exactly in WITHOUT ROWID tables.
    pub fn row(&mut self, rowid: Option<i64>, values: &[Value<&[u8]>]) -> io::Result<()> {
        self.u8(ROW)?;
        if let Some(rowid) = rowid {
            self.zigzag(rowid.wrapping_sub(self.prev_rowid))?;
            self.prev_rowid = rowid;
        }
        // Trailing NULLs are left out (a column added with ALTER TABLE ADD COLUMN, or
        // appended by a table rebuild, leaves every existing row's bytes alone).
        let present = values
            .iter()
            .rposition(|v| !matches!(v, Value::Null))
            .map_or(0, |i| i + 1);
        for (i, v) in values[..present].iter().enumerate() {
            self.value(v, self.alias == i + 1 && rowid.is_some(), rowid)?;
        }
        self.u8(ROW_END)?;
        self.stats.rows += 1;
        Ok(())
    }

    fn value(&mut self, v: &Value<&[u8]>, alias: bool, rowid: Option<i64>) -> io::Result<()> {
        match *v {
            Value::Integer(n) if alias && Some(n) == rowid => self.u8(ROWID),
            Value::Null => self.u8(NULL),
            Value::Integer(n) => {
                self.u8(INTEGER)?;
                self.zigzag(n)
            }
            Value::Real(f) => {
                self.u8(REAL)?;
                self.bytes(&f.to_bits().to_le_bytes())
            }
            Value::Text(t) => {
                self.u8(TEXT)?;
                self.str(t)
            }
            Value::Blob(b) => {
                self.u8(BLOB)?;
                self.str(b)
            }
            Value::RawText(t) => {
                self.u8(RAW_TEXT)?;
                self.str(t)
            }
        }
    }

    /// End the current table section.
    pub fn end_table(&mut self) -> io::Result<()> {
        self.u8(TABLE_END)?;
        self.stats.tables += 1;
        Ok(())
    }

    /// End the dump and flush the writer.
    pub fn finish(mut self) -> io::Result<DumpStats> {
        self.u8(END)?;
        self.varint(self.stats.rows)?;
        self.w.flush()?;
        Ok(self.stats)
    }

    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.stats.bytes += b.len() as u64;
        self.w.write_all(b)
    }
    fn u8(&mut self, b: u8) -> io::Result<()> {
        self.bytes(&[b])
    }
    fn varint(&mut self, v: u64) -> io::Result<()> {
        let mut buf = [0u8; 10];
        let n = encode_varint(v, &mut buf);
        self.bytes(&buf[..n])
    }
    fn zigzag(&mut self, v: i64) -> io::Result<()> {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }
    fn str(&mut self, b: &[u8]) -> io::Result<()> {
        self.varint(b.len() as u64)?;
        self.bytes(b)
    }
}

/// Unsigned LEB128 into `buf`; returns the length (at most 10).
fn encode_varint(mut v: u64, buf: &mut [u8; 10]) -> usize {
    let mut i = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[i] = b;
            return i + 1;
        }
        buf[i] = b | 0x80;
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------
// Decoder

/// What a dump says before its rows: its version, the settings and the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub settings: Settings,
    pub schema: Vec<SchemaEntry>,
}

/// Reads a dump, section by section: [`Reader::open`] (header and schema), then
/// [`Reader::next_table`] and, for each table, [`Reader::next_row`] until it says the
/// table ended. The end of the dump (`None` from `next_table`) is returned only once the
/// row count and the absence of trailing bytes are checked.
pub struct Reader<R: Read> {
    r: R,
    utf16: bool,
    /// The names of the schema's tables, and those whose section was read.
    tables: HashSet<String>,
    seen: HashSet<String>,
    stats: DumpStats,
    /// The table whose rows are being read.
    current: Option<Current>,
    /// Buffers of values read before, for the next ones: a row's text and blobs are not
    /// each a new allocation.
    spare: Vec<Vec<u8>>,
}

/// Buffers kept for reuse ([`Reader::spare`]): as many as a wide row has values, none
/// larger than a typical value (a rare large one is not held for the rest of the dump).
const SPARE_BUFFERS: usize = 256;
const SPARE_CAPACITY: usize = 64 << 10;

struct Current {
    without_rowid: bool,
    alias: usize,
    ncols: usize,
    prev_rowid: i64,
}

impl<R: Read> Reader<R> {
    /// Read the header and the schema section.
    pub fn open(r: R) -> Result<(Header, Reader<R>)> {
        let mut d = Reader {
            r,
            utf16: false,
            tables: HashSet::new(),
            seen: HashSet::new(),
            stats: DumpStats::default(),
            current: None,
            spare: Vec::new(),
        };
        let version = d.version()?;
        let settings = d.settings()?;
        let schema = d.schema(version)?;
        d.utf16 = settings.utf16();
        d.tables = schema
            .iter()
            .filter(|s| s.kind == "table")
            .map(|s| s.name.clone())
            .collect();
        d.stats.schema_entries = schema.len() as u64;
        let header = Header {
            version,
            settings,
            schema,
        };
        Ok((header, d))
    }

    /// What was read so far (everything, once `next_table` returned `None`).
    pub fn stats(&self) -> &DumpStats {
        &self.stats
    }

    fn version(&mut self) -> Result<u8> {
        if &self.array::<8>()? != MAGIC {
            return bad("not a jellysnap database dump (bad magic)");
        }
        let version = self.u8()?;
        if version > VERSION {
            return Err(DumpError::Newer {
                found: version,
                supported: VERSION,
            });
        }
        if version < OLDEST_VERSION {
            return bad(format!("dump version {version} was never written"));
        }
        Ok(version)
    }

    fn settings(&mut self) -> Result<Settings> {
        let page_size = self.varint()?;
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return bad(format!("page size {page_size}"));
        }
        let auto_vacuum = self.u8()?;
        let text_encoding = self.u8()?;
        let wal = self.u8()?;
        if auto_vacuum > 2 || !(1..=3).contains(&text_encoding) || wal > 1 {
            return bad("database settings out of range");
        }
        let user_version = i32::try_from(self.zigzag()?)
            .map_err(|_| DumpError::Format("user_version out of range".into()))?;
        let application_id = i32::try_from(self.zigzag()?)
            .map_err(|_| DumpError::Format("application_id out of range".into()))?;
        Ok(Settings {
            page_size: page_size as u32,
            auto_vacuum,
            text_encoding,
            wal: wal == 1,
            user_version,
            application_id,
        })
    }

    fn schema(&mut self, version: u8) -> Result<Vec<SchemaEntry>> {
        let n = self.varint()?;
        if n > MAX_SCHEMA_ENTRIES {
            return bad("too many schema entries");
        }
        let mut schema = Vec::new();
        let mut prev_rowid: i64 = 0;
        for _ in 0..n {
            let rowid = if version >= 2 {
                let r = prev_rowid.wrapping_add(self.zigzag()?);
                if r <= prev_rowid {
                    return bad("schema rowids not ascending");
                }
                prev_rowid = r;
                Some(r)
            } else {
                None
            };
            schema.push(self.schema_entry(rowid)?);
        }
        if version == 1 {
            let mut sorted = schema.clone();
            sort_schema(&mut sorted);
            if sorted != schema {
                return bad("schema entries out of canonical order");
            }
        }
        let mut names = HashSet::new();
        if !schema.iter().all(|s| names.insert((&s.kind, &s.name))) {
            return bad("schema entry repeated");
        }
        Ok(schema)
    }

    fn schema_entry(&mut self, rowid: Option<i64>) -> Result<SchemaEntry> {
        let kind = self.string()?;
        let name = self.string()?;
        let tbl_name = self.string()?;
        let sql = match self.u8()? {
            0 => None,
            1 => Some(self.string()?),
            t => return bad(format!("bad sql tag {t}")),
        };
        Ok(SchemaEntry {
            rowid,
            kind,
            name,
            tbl_name,
            sql,
        })
    }

    /// The head of the next table section, or `None` at the end of the dump. Rows of the
    /// current table not read yet are read (and dropped) first.
    pub fn next_table(&mut self) -> Result<Option<TableHeader>> {
        let mut rest = Row::default();
        while self.current.is_some() {
            self.next_row(&mut rest)?;
        }
        match self.u8()? {
            TABLE => {}
            END => return self.end().map(|()| None),
            t => return bad(format!("bad section tag {t}")),
        }
        let name = self.string()?;
        if !self.tables.contains(name.as_str()) || !self.seen.insert(name.clone()) {
            return bad(format!("rows for unknown or repeated table {name}"));
        }
        let without_rowid = match self.u8()? {
            0 => false,
            1 => true,
            _ => return bad("bad without_rowid flag"),
        };
        let alias = self.varint()?;
        let ncols = self.varint()?;
        if ncols > MAX_COLUMNS || alias > ncols {
            return bad("bad column count");
        }
        let mut columns = Vec::new();
        for _ in 0..ncols {
            columns.push(self.string()?);
        }
        self.current = Some(Current {
            without_rowid,
            alias: alias as usize,
            ncols: columns.len(),
            prev_rowid: 0,
        });
        Ok(Some(TableHeader {
            name,
            without_rowid,
            alias: alias as usize,
            columns,
        }))
    }

    /// The row count after 'E', then nothing.
    fn end(&mut self) -> Result<()> {
        let total = self.varint()?;
        if total != self.stats.rows {
            return bad(format!(
                "row count {total} does not match {} rows read",
                self.stats.rows
            ));
        }
        if self.r.read(&mut [0u8; 1])? != 0 {
            return bad("trailing bytes after the end marker");
        }
        Ok(())
    }

    /// Read the next row of the current table into `row`; `false` when the table ended
    /// (or no table is open).
    pub fn next_row(&mut self, row: &mut Row) -> Result<bool> {
        let Some(t) = &self.current else {
            return Ok(false);
        };
        let (without_rowid, alias, ncols, prev) = (t.without_rowid, t.alias, t.ncols, t.prev_rowid);
        match self.u8()? {
            TABLE_END => {
                self.current = None;
                self.stats.tables += 1;
                return Ok(false);
            }
            ROW => {}
            t => return bad(format!("bad row tag {t}")),
        }
        for v in row.values.drain(..) {
            if let Value::Text(mut b) | Value::Blob(mut b) | Value::RawText(mut b) = v {
                if self.spare.len() < SPARE_BUFFERS && b.capacity() <= SPARE_CAPACITY {
                    b.clear();
                    self.spare.push(b);
                }
            }
        }
        row.rowid = None;
        if !without_rowid {
            let rowid = prev.wrapping_add(self.zigzag()?);
            if let Some(t) = &mut self.current {
                t.prev_rowid = rowid;
            }
            row.rowid = Some(rowid);
        }
        let mut ended = false;
        for i in 0..ncols {
            let v = match self.u8()? {
                ROW_END => {
                    ended = true;
                    break;
                }
                tag => self.value(tag, row.rowid.filter(|_| alias == i + 1))?,
            };
            row.values.push(v);
        }
        if !ended && self.u8()? != ROW_END {
            return bad("row without end marker");
        }
        row.values.resize(ncols, Value::Null);
        self.stats.rows += 1;
        Ok(true)
    }

    /// The value after `tag`; `alias_rowid` is the row's rowid in the column that is its
    /// alias, `None` in every other column.
    fn value(&mut self, tag: u8, alias_rowid: Option<i64>) -> Result<Value<Vec<u8>>> {
        Ok(match (tag, alias_rowid) {
            (NULL, _) => Value::Null,
            (INTEGER, _) => Value::Integer(self.zigzag()?),
            (REAL, _) => Value::Real(f64::from_bits(u64::from_le_bytes(self.array::<8>()?))),
            (TEXT, _) => Value::Text(self.bytes(MAX_VALUE_LEN)?),
            (BLOB, _) => Value::Blob(self.bytes(MAX_VALUE_LEN)?),
            (ROWID, Some(rowid)) => Value::Integer(rowid),
            (RAW_TEXT, _) if self.utf16 => Value::RawText(self.bytes(MAX_VALUE_LEN)?),
            (t, _) => return bad(format!("bad value tag {t}")),
        })
    }

    fn u8(&mut self) -> Result<u8> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(eof)?;
        Ok(b)
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return bad("varint overflows 64 bits");
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bad("varint longer than 10 bytes")
    }
    fn zigzag(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    fn bytes(&mut self, max: u64) -> Result<Vec<u8>> {
        let len = self.varint()?;
        if len > max {
            return bad(format!("length {len} exceeds the limit {max}"));
        }
        let mut out = self.spare.pop().unwrap_or_default();
        out.reserve(len.min(1 << 20) as usize);
        let got = (&mut self.r).take(len).read_to_end(&mut out)?;
        if got as u64 != len {
            return bad("truncated");
        }
        Ok(out)
    }
    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes(MAX_NAME_LEN)?)
            .map_err(|_| DumpError::Format("name is not UTF-8".into()))
    }
}

fn eof(e: io::Error) -> DumpError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        DumpError::Format("truncated".into())
    } else {
        DumpError::Io(e)
    }
}

/// Decode a whole dump without building anything: every section, row and value is read
/// and checked as a rebuild would read it (fuzz targets, tests).
pub fn decode(r: impl Read) -> Result<(Header, DumpStats)> {
    let (header, mut d) = Reader::open(r)?;
    let mut row = Row::default();
    while d.next_table()?.is_some() {
        while d.next_row(&mut row)? {}
    }
    Ok((header, d.stats.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(text_encoding: u8) -> Settings {
        Settings {
            page_size: 4096,
            auto_vacuum: 0,
            text_encoding,
            wal: false,
            user_version: 0,
            application_id: 0,
        }
    }

    fn table_entry(rowid: Option<i64>, name: &str, sql: &str) -> SchemaEntry {
        SchemaEntry {
            rowid,
            kind: "table".into(),
            name: name.into(),
            tbl_name: name.into(),
            sql: Some(sql.into()),
        }
    }

    /// `t(a INTEGER PRIMARY KEY, b)` with rows (1, 'x') and (3, NULL).
    fn small() -> Vec<u8> {
        let schema = [table_entry(
            Some(1),
            "t",
            "CREATE TABLE t(a INTEGER PRIMARY KEY, b)",
        )];
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, &settings(1), &schema).unwrap();
        w.table(&TableHeader {
            name: "t".into(),
            without_rowid: false,
            alias: 1,
            columns: vec!["a".into(), "b".into()],
        })
        .unwrap();
        w.row(Some(1), &[Value::Integer(1), Value::Text(b"x")])
            .unwrap();
        w.row(Some(3), &[Value::Integer(3), Value::Null]).unwrap();
        w.end_table().unwrap();
        let stats = w.finish().unwrap();
        assert_eq!(stats.bytes, out.len() as u64);
        assert_eq!((stats.schema_entries, stats.tables, stats.rows), (1, 1, 2));
        out
    }

    #[test]
    fn the_bytes_are_the_documented_ones() {
        let mut want = b"JSSQLDMP\x02".to_vec();
        want.extend_from_slice(b"\x80\x20\x00\x01\x00\x00\x00"); // header
        want.extend_from_slice(b"\x01\x02\x05table\x01t\x01t\x01\x28"); // schema: 1 entry
        want.extend_from_slice(b"CREATE TABLE t(a INTEGER PRIMARY KEY, b)");
        want.extend_from_slice(b"T\x01t\x00\x01\x02\x01a\x01b"); // table t
        want.extend_from_slice(b"\x01\x02\x05\x03\x01x\x06"); // row 1: a is the rowid
        want.extend_from_slice(b"\x01\x04\x05\x06"); // row 3: trailing NULL left out
        want.extend_from_slice(b"\x00E\x02");
        assert_eq!(small(), want);
    }

    #[test]
    fn reads_back_what_was_written() {
        let (header, stats) = decode(&small()[..]).unwrap();
        assert_eq!(header.version, VERSION);
        assert_eq!(header.settings, settings(1));
        assert_eq!((stats.schema_entries, stats.tables, stats.rows), (1, 1, 2));
        let d = small();
        let (_, mut r) = Reader::open(&d[..]).unwrap();
        let t = r.next_table().unwrap().unwrap();
        assert_eq!((t.name.as_str(), t.alias, t.columns.len()), ("t", 1, 2));
        let mut row = Row::default();
        assert!(r.next_row(&mut row).unwrap());
        assert_eq!(row.rowid, Some(1));
        assert_eq!(row.values, [Value::Integer(1), Value::Text(b"x".to_vec())]);
        assert!(r.next_row(&mut row).unwrap());
        assert_eq!(row.values, [Value::Integer(3), Value::Null]);
        assert!(!r.next_row(&mut row).unwrap());
        assert!(r.next_table().unwrap().is_none());
    }

    fn format_error(bytes: &[u8]) -> String {
        match decode(bytes) {
            Err(DumpError::Format(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_malformed_dumps() {
        let d = small();
        for cut in 0..d.len() {
            assert_eq!(format_error(&d[..cut]), "truncated", "cut at {cut}");
        }
        let mut extra = d.clone();
        extra.push(0);
        assert_eq!(format_error(&extra), "trailing bytes after the end marker");
        let mut count = d.clone();
        *count.last_mut().unwrap() = 4;
        assert!(format_error(&count) == "row count 4 does not match 2 rows read");
        let mut version = d.clone();
        version[8] = 0;
        assert_eq!(format_error(&version), "dump version 0 was never written");
        version[8] = VERSION + 1;
        assert!(
            matches!(decode(version.as_slice()), Err(DumpError::Newer { found, supported: VERSION }) if found == VERSION + 1),
            "a newer dump is not malformed"
        );
        // Tag 7 (raw UTF-16 text) in a UTF-8 database.
        let mut raw = d.clone();
        let at = raw.windows(3).position(|w| w == b"\x03\x01x").unwrap();
        raw[at] = RAW_TEXT;
        assert_eq!(format_error(&raw), "bad value tag 7");
        // Tag 5 (the rowid) outside the alias column.
        let mut alias = d.clone();
        alias[at] = ROWID;
        assert_eq!(format_error(&alias), "bad value tag 5");
        // A varint of 11 bytes, and one above 2^64.
        let mut long = b"JSSQLDMP\x02".to_vec();
        long.extend_from_slice(&[0x80; 10]);
        assert_eq!(format_error(&long), "varint longer than 10 bytes");
        let mut over = b"JSSQLDMP\x02".to_vec();
        over.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert_eq!(format_error(&over), "varint overflows 64 bits");
    }

    /// A version 1 dump: no schema rowids, schema sorted by (type rank, name).
    fn v1(entries: &[SchemaEntry]) -> Vec<u8> {
        let mut d = b"JSSQLDMP\x01\x80\x20\x00\x01\x00\x00\x00".to_vec();
        d.push(entries.len() as u8);
        for e in entries {
            for s in [&e.kind, &e.name, &e.tbl_name] {
                d.push(s.len() as u8);
                d.extend_from_slice(s.as_bytes());
            }
            d.push(0);
        }
        d.extend_from_slice(b"E\x00");
        d
    }

    #[test]
    fn reads_version_1_in_canonical_order_only() {
        let index = SchemaEntry {
            kind: "index".into(),
            sql: None,
            ..table_entry(None, "a", "")
        };
        let table = SchemaEntry {
            sql: None,
            ..table_entry(None, "z", "")
        };
        let (header, _) = decode(&v1(&[table.clone(), index.clone()])[..]).unwrap();
        assert_eq!(
            (header.version, header.schema),
            (1, vec![table.clone(), index.clone()])
        );
        assert_eq!(
            format_error(&v1(&[index, table])),
            "schema entries out of canonical order"
        );
    }

    fn value(utf16: bool) -> impl Strategy<Value = Value<Vec<u8>>> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..6);
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Real),
            bytes().prop_map(Value::Text),
            bytes().prop_map(Value::Blob),
            bytes().prop_map(move |b| if utf16 {
                Value::RawText(b)
            } else {
                Value::Text(b)
            }),
        ]
    }

    /// A table: (WITHOUT ROWID, has an alias, rows of (rowid, values, alias = rowid)).
    type Table = (bool, bool, Vec<(i64, Vec<Value<Vec<u8>>>, bool)>);

    fn tables(utf16: bool) -> impl Strategy<Value = Vec<Table>> {
        let row = (
            any::<i64>(),
            proptest::collection::vec(value(utf16), 3),
            any::<bool>(),
        );
        let table = (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(row, 0..5),
        );
        proptest::collection::vec(table, 0..4)
    }

    fn borrowed(v: &Value<Vec<u8>>) -> Value<&[u8]> {
        match v {
            Value::Null => Value::Null,
            Value::Integer(n) => Value::Integer(*n),
            Value::Real(f) => Value::Real(*f),
            Value::Text(b) => Value::Text(b),
            Value::Blob(b) => Value::Blob(b),
            Value::RawText(b) => Value::RawText(b),
        }
    }

    /// Write `tables` and read them back, as (header, rows) per table.
    fn round_trip(utf16: bool, tables: &[Table]) -> (Vec<TableHeader>, Vec<Vec<Row>>) {
        let schema: Vec<SchemaEntry> = (0..tables.len())
            .map(|i| table_entry(Some(i as i64 + 1), &format!("t{i}"), "CREATE TABLE"))
            .collect();
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, &settings(1 + u8::from(utf16)), &schema).unwrap();
        for (i, (without_rowid, alias, rows)) in tables.iter().enumerate() {
            w.table(&TableHeader {
                name: format!("t{i}"),
                without_rowid: *without_rowid,
                alias: usize::from(*alias && !without_rowid),
                columns: vec!["a".into(), "b".into(), "c".into()],
            })
            .unwrap();
            for (rowid, values, is_alias) in rows {
                let mut values: Vec<Value<&[u8]>> = values.iter().map(borrowed).collect();
                if *is_alias && *alias {
                    values[0] = Value::Integer(*rowid);
                }
                w.row((!without_rowid).then_some(*rowid), &values).unwrap();
            }
            w.end_table().unwrap();
        }
        w.finish().unwrap();
        let (_, mut r) = Reader::open(&out[..]).unwrap();
        let (mut heads, mut all) = (Vec::new(), Vec::new());
        while let Some(t) = r.next_table().unwrap() {
            heads.push(t);
            let mut rows = Vec::new();
            let mut row = Row::default();
            while r.next_row(&mut row).unwrap() {
                rows.push(row.clone());
            }
            all.push(rows);
        }
        (heads, all)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trips(utf16 in any::<bool>(), tables in tables(true)) {
            let tables: Vec<Table> = tables
                .into_iter()
                .map(|(wr, alias, rows)| {
                    let rows = rows.into_iter().map(|(rowid, values, a)| {
                        let values = values.into_iter().map(|v| match v {
                            Value::RawText(b) if !utf16 => Value::Text(b),
                            v => v,
                        }).collect();
                        (rowid, values, a)
                    }).collect();
                    (wr, alias, rows)
                })
                .collect();
            let (heads, read) = round_trip(utf16, &tables);
            prop_assert_eq!(heads.len(), tables.len());
            for ((wr, alias, rows), got) in tables.iter().zip(&read) {
                prop_assert_eq!(rows.len(), got.len());
                for ((rowid, values, is_alias), row) in rows.iter().zip(got) {
                    prop_assert_eq!(row.rowid, (!wr).then_some(*rowid));
                    let mut want = values.clone();
                    if *is_alias && *alias {
                        want[0] = Value::Integer(*rowid);
                    }
                    // Debug: NaN and -0.0 compare by their bits this way.
                    prop_assert_eq!(format!("{want:?}"), format!("{:?}", row.values));
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut input = MAGIC.to_vec();
            input.push(VERSION);
            input.extend_from_slice(&bytes);
            let _ = decode(&bytes[..]);
            let _ = decode(&input[..]);
        }

        #[test]
        fn mutated_dump_never_panics(pos in any::<proptest::sample::Index>(), byte in any::<u8>(),
                                     cut in any::<proptest::sample::Index>()) {
            let mut d = small();
            let p = pos.index(d.len());
            d[p] = byte;
            let _ = decode(&d[..]);
            let _ = decode(&d[..cut.index(d.len())]);
        }
    }
}
