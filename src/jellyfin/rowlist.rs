//! The rows of a dump, one short digest each: what a kept rebuild (`kept`) is the rebuild
//! of, so that the next proof finds the rows that changed by comparing the new dump with
//! this list instead of reading the kept rebuild's every row.
//!
//! A list holds, for every table that has a rowid and is not one of SQLite's own, in the
//! dump's order, the table's name and each row's rowid with a 64-bit digest of the row's
//! values (storage class and bytes). Those are the tables an update changes row by row;
//! the others it rewrites whole. A digest that matched by accident, or a list that is not
//! the kept rebuild's, makes an update that does not prove, and the dump is then rebuilt
//! whole (`capture::dump_and_prove`): the list makes the update fast, never the proof.
//! So the digest need not be cryptographic: it is XXH3-64, seeded with a random number
//! each list carries (an update's new list keeps its old list's seed, to compare with
//! it), so that rows cannot be chosen to match another's digest without that seed.
//!
//! The file: `jellysnap rows 2\n` and the seed (u64 LE), then per table the byte 1, the
//! name's length (u32 LE) and bytes; per row the byte 2, the rowid and the digest (8
//! bytes LE each); the byte 3 ending the table, the byte 0 ending the list. The writer
//! and the reader each give the blake3 of the whole file, which the kept record holds.

use std::io::{self, Read, Write};

use crate::format::dump::{Row, Value};

const MAGIC: &[u8] = b"jellysnap rows 2\n";
const TABLE: u8 = 1;
const ROW: u8 = 2;
const TABLE_END: u8 = 3;
const END: u8 = 0;

/// Longest table name a list is read with (SQLite's own limit is far below).
const MAX_NAME: usize = 1 << 20;

/// A new list's seed.
pub fn new_seed() -> u64 {
    let mut b = [0u8; 8];
    crate::sys::getrandom(&mut b);
    u64::from_le_bytes(b)
}

/// The digest of a dumped row under `seed`: its rowid and each value by storage class
/// and bytes. `buf` is scratch space, reused from row to row.
pub fn digest(row: &Row, seed: u64, buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    buf.extend_from_slice(&row.rowid.unwrap_or_default().to_le_bytes());
    for v in &row.values {
        let (tag, bytes): (u8, &[u8]) = match v {
            Value::Null => (0, &[]),
            Value::Integer(n) => {
                buf.push(1);
                buf.extend_from_slice(&n.to_le_bytes());
                continue;
            }
            Value::Real(f) => {
                buf.push(2);
                buf.extend_from_slice(&f.to_bits().to_le_bytes());
                continue;
            }
            Value::Text(b) => (3, b),
            Value::Blob(b) => (4, b),
            Value::RawText(b) => (5, b),
        };
        buf.push(tag);
        buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        buf.extend_from_slice(bytes);
    }
    xxhash_rust::xxh3::xxh3_64_with_seed(buf, seed)
}

/// Writes a list, hashing what it writes.
pub struct Writer<W: Write> {
    w: W,
    hasher: blake3::Hasher,
    seed: u64,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// A list whose digests are under `seed` ([`new_seed`], or the seed of the list it
    /// is to be compared with).
    pub fn new(w: W, seed: u64) -> io::Result<Writer<W>> {
        let mut writer = Writer {
            w,
            hasher: blake3::Hasher::new(),
            seed,
            buf: Vec::new(),
        };
        writer.put(MAGIC)?;
        writer.put(&seed.to_le_bytes())?;
        Ok(writer)
    }

    /// The seed of the list's digests.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.hasher.update(b);
        self.w.write_all(b)
    }

    pub fn table(&mut self, name: &str) -> io::Result<()> {
        self.put(&[TABLE])?;
        self.put(&(name.len() as u32).to_le_bytes())?;
        self.put(name.as_bytes())
    }

    /// Add a row of the current table; its digest, for the caller to compare.
    pub fn row(&mut self, row: &Row) -> io::Result<u64> {
        let mut buf = std::mem::take(&mut self.buf);
        let d = digest(row, self.seed, &mut buf);
        self.buf = buf;
        self.entry(row.rowid.unwrap_or_default(), d)?;
        Ok(d)
    }

    fn entry(&mut self, rowid: i64, digest: u64) -> io::Result<()> {
        let mut e = [0u8; 17];
        e[0] = ROW;
        e[1..9].copy_from_slice(&rowid.to_le_bytes());
        e[9..].copy_from_slice(&digest.to_le_bytes());
        self.put(&e)
    }

    pub fn end_table(&mut self) -> io::Result<()> {
        self.put(&[TABLE_END])
    }

    /// End the list: the writer and the blake3 of everything written.
    pub fn finish(mut self) -> io::Result<(W, [u8; 32])> {
        self.put(&[END])?;
        self.w.flush()?;
        Ok((self.w, *self.hasher.finalize().as_bytes()))
    }
}

/// Reads a list, hashing what it reads. Every error is a list that is not as written
/// (or not readable): the caller does without it.
pub struct Reader<R: Read> {
    r: R,
    hasher: blake3::Hasher,
    seed: u64,
    in_table: bool,
    last: Option<i64>,
}

impl<R: Read> Reader<R> {
    pub fn new(r: R) -> io::Result<Reader<R>> {
        let mut reader = Reader {
            r,
            hasher: blake3::Hasher::new(),
            seed: 0,
            in_table: false,
            last: None,
        };
        let mut magic = [0u8; MAGIC.len()];
        reader.get(&mut magic)?;
        if magic != MAGIC {
            return Err(bad("not a row list of this version"));
        }
        let mut seed = [0u8; 8];
        reader.get(&mut seed)?;
        reader.seed = u64::from_le_bytes(seed);
        Ok(reader)
    }

    /// The seed of the list's digests: a list compared with this one is written with it.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn get(&mut self, b: &mut [u8]) -> io::Result<()> {
        self.r.read_exact(b).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad("cut short"),
            _ => io::Error::new(e.kind(), format!("row list: {e}")),
        })?;
        self.hasher.update(b);
        Ok(())
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8];
        self.get(&mut b)?;
        Ok(b[0])
    }

    /// Start the next table, which must be `name`.
    pub fn table(&mut self, name: &str) -> io::Result<()> {
        if self.in_table || self.byte()? != TABLE {
            return Err(bad("a table was expected"));
        }
        let mut len = [0u8; 4];
        self.get(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_NAME {
            return Err(bad("a table name too long"));
        }
        let mut got = vec![0u8; len];
        self.get(&mut got)?;
        if got != name.as_bytes() {
            return Err(bad(&format!("it lists another table where {name} is")));
        }
        self.in_table = true;
        self.last = None;
        Ok(())
    }

    /// The next row of the table (rowid, digest), in ascending rowid order; `None` at
    /// its end.
    pub fn row(&mut self) -> io::Result<Option<(i64, u64)>> {
        if !self.in_table {
            return Ok(None);
        }
        match self.byte()? {
            TABLE_END => {
                self.in_table = false;
                Ok(None)
            }
            ROW => {
                let mut e = [0u8; 16];
                self.get(&mut e)?;
                let (id, d) = e.split_at(8);
                let id = i64::from_le_bytes(id.try_into().unwrap_or_default());
                let d = u64::from_le_bytes(d.try_into().unwrap_or_default());
                if self.last.is_some_and(|l| l >= id) {
                    return Err(bad("rows out of order"));
                }
                self.last = Some(id);
                Ok(Some((id, d)))
            }
            _ => Err(bad("a row was expected")),
        }
    }

    /// The end of the list: the blake3 of the whole of it.
    pub fn finish(mut self) -> io::Result<[u8; 32]> {
        if self.in_table || self.byte()? != END {
            return Err(bad("the list goes on"));
        }
        let mut rest = [0u8];
        if self.r.read(&mut rest)? != 0 {
            return Err(bad("bytes after the list's end"));
        }
        Ok(*self.hasher.finalize().as_bytes())
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("row list: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, values: Vec<Value<Vec<u8>>>) -> Row {
        Row {
            rowid: Some(id),
            values,
        }
    }

    #[test]
    fn a_list_reads_back_as_written_with_the_same_hash() {
        let rows = [
            row(1, vec![Value::Integer(1), Value::Text(b"a".to_vec())]),
            row(5, vec![Value::Null, Value::Blob(vec![0, 1])]),
        ];
        let mut w = Writer::new(Vec::new(), 7).unwrap();
        w.table("t").unwrap();
        let digests: Vec<u64> = rows.iter().map(|r| w.row(r).unwrap()).collect();
        w.end_table().unwrap();
        w.table("u").unwrap();
        w.end_table().unwrap();
        let (bytes, written) = w.finish().unwrap();

        let mut r = Reader::new(bytes.as_slice()).unwrap();
        assert_eq!(r.seed(), 7);
        assert!(
            r.table("u").is_err(),
            "the tables come in the order written"
        );
        let mut r = Reader::new(bytes.as_slice()).unwrap();
        r.table("t").unwrap();
        assert_eq!(r.row().unwrap(), Some((1, digests[0])));
        assert_eq!(r.row().unwrap(), Some((5, digests[1])));
        assert_eq!(r.row().unwrap(), None);
        r.table("u").unwrap();
        assert_eq!(r.row().unwrap(), None);
        assert_eq!(r.finish().unwrap(), written);

        let mut longer = bytes.clone();
        longer.push(0);
        let mut r = Reader::new(longer.as_slice()).unwrap();
        r.table("t").unwrap();
        while r.row().unwrap().is_some() {}
        r.table("u").unwrap();
        while r.row().unwrap().is_some() {}
        assert!(r.finish().is_err(), "bytes after the end");
    }

    #[test]
    fn a_digest_tells_storage_classes_values_and_rowids_apart() {
        let mut buf = Vec::new();
        let rows = [
            row(1, vec![Value::Integer(1)]),
            row(2, vec![Value::Integer(1)]),
            row(1, vec![Value::Real(1.0)]),
            row(1, vec![Value::Real(-0.0)]),
            row(1, vec![Value::Real(0.0)]),
            row(1, vec![Value::Text(b"1".to_vec())]),
            row(1, vec![Value::Blob(b"1".to_vec())]),
            row(1, vec![Value::RawText(b"1".to_vec())]),
            row(1, vec![Value::Null]),
            row(1, vec![]),
            row(
                1,
                vec![Value::Text(b"ab".to_vec()), Value::Text(Vec::new())],
            ),
            row(
                1,
                vec![Value::Text(b"a".to_vec()), Value::Text(b"b".to_vec())],
            ),
        ];
        let digests: std::collections::HashSet<u64> =
            rows.iter().map(|r| digest(r, 1, &mut buf)).collect();
        assert_eq!(digests.len(), rows.len());
        assert_eq!(
            digest(&rows[0], 1, &mut buf),
            digest(&rows[0].clone(), 1, &mut buf)
        );
        let reseeded: std::collections::HashSet<u64> =
            rows.iter().map(|r| digest(r, 2, &mut buf)).collect();
        assert!(
            digests.is_disjoint(&reseeded),
            "another seed, other digests"
        );
    }
}
