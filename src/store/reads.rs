//! Reading chunks out of packs. One chunk: [`Repository::read_chunk`]. Many: the records
//! they need are grouped by pack and sorted by offset, and each run of records with small
//! gaps between them is fetched with one [`Store::read_at`], as long as the store's
//! [`ReadShape`] allows (on object storage every read is a request: a dump of thousands
//! of small chunks is a handful of reads, not thousands). Every record is then opened on
//! its own (`format::record::open`), in one place for every reader: a record that does
//! not open is read once more on its own before it is called damaged (a byte changed on
//! the way is not damage at rest); a damaged record fails its chunk only; a read the
//! store refuses is that refusal, never damage; a pack that is gone is asked for once.
//! Memory is one read (at most the shape's `max_read` bytes, or one record) and, for a
//! run, as much again.

use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::format::pack::{PackEntry, RawLimits};
use crate::format::record::{self, Damage};
use crate::id::{ChunkId, PackId};
use crate::store::repo::Repository;
use crate::store::{Key, ReadShape, Store};

/// Where the index places a chunk, and how much to read for it.
pub(super) struct Located {
    pub pack: PackId,
    /// The pack's key (which depends on the chunk's kind from format 2 on).
    pub key: Key,
    /// What the record there must say.
    pub record: PackEntry,
    pub span: usize,
}

/// Where chunk `id` is, by the index; its lengths are checked before anything is
/// allocated for them.
pub(super) fn locate(repo: &Repository, id: &ChunkId) -> Result<Located> {
    let e = repo
        .index()
        .get(id)?
        .ok_or(Error::ChunkMissing { chunk: *id })?;
    let rec = e.record(*id);
    let span = record::span(&rec, repo.raw_limits()).map_err(|d| {
        Error::corrupt(
            "index entry",
            format!("chunk {id}"),
            format!("{d}; run `jellysnap repair index`"),
        )
    })?;
    Ok(Located {
        pack: e.pack,
        key: repo.pack_key(e.pack, e.kind),
        record: rec,
        span,
    })
}

fn location(at: &Located) -> String {
    format!("pack {} offset {}", at.pack, at.record.offset)
}

/// A failed read of a located record, as the reader reports it.
pub(super) fn read_failed(at: &Located, err: Error) -> Error {
    match err {
        err if err.is_not_found() => Error::PackMissing {
            pack: at.pack,
            detail: err.to_string(),
        },
        // A permission or a resource limit, not the pack's bytes: said as it is.
        err if err.is_refusal() => err,
        err => Error::corrupt(
            "pack",
            location(at),
            format!("chunk {}: {err}", at.record.id),
        ),
    }
}

/// A located record that does not open, as the reader reports it.
pub(super) fn damaged(at: &Located, d: Damage) -> Error {
    Error::corrupt(
        d.what(),
        location(at),
        d.detail(|| format!("record does not hold chunk {}", at.record.id)),
    )
}

/// A record read and opened: its stored bytes (to copy as they are) and the chunk's.
pub struct Opened<'b> {
    pub record: &'b [u8],
    pub raw: &'b [u8],
}

/// Why a record could not be had: the store's error for its read, or bytes that did not
/// open, twice.
pub enum Unopened {
    Read(Error),
    Damaged(Damage),
}

/// What a batched read hands on: an item's index and its bytes, or its own error.
pub type Each<'f> = dyn FnMut(usize, Result<&[u8]>) -> Result<()> + 'f;

/// What a batched read of records hands on: an item's index and the record, opened, or
/// why not.
pub type EachRecord<'f> =
    dyn FnMut(usize, std::result::Result<Opened<'_>, Unopened>) -> Result<()> + 'f;

/// The same failure again, for a later range of a pack whose read already failed this way
/// (the store is not asked again for a pack that is gone or a read it refuses).
fn again(err: &Error) -> Error {
    match err {
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        Error::Remote {
            object,
            status,
            kind,
            detail,
        } => Error::Remote {
            object: object.clone(),
            status: *status,
            kind: *kind,
            detail: detail.clone(),
        },
        other => Error::internal(other.to_string()),
    }
}

/// Buffers a batched read reuses: the coalesced read, a record read again alone, and the
/// decompressed chunk. `nested`: the read runs inside another read's callback, and must
/// not wait for a [`Lent`] buffer the outer read may hold.
#[derive(Default)]
struct Bufs {
    read: Vec<u8>,
    alone: Vec<u8>,
    out: Vec<u8>,
    nested: bool,
}

/// How many reads larger than a local one (whole packs, from object storage) a process
/// holds at once: their buffers are lent from one pool, so memory does not grow with the
/// number of reading threads (4 × 18 MiB on an object store).
const LENT_MAX: usize = 4;

static LENDER: std::sync::Mutex<(Vec<Vec<u8>>, usize)> = std::sync::Mutex::new((Vec::new(), 0));
static RETURNED: std::sync::Condvar = std::sync::Condvar::new();

/// A buffer for one large read, from the pool; back to it when dropped.
struct Lent(Vec<u8>);

impl Lent {
    /// Waits while [`LENT_MAX`] are out.
    fn take() -> Lent {
        let mut pool = LENDER.lock().unwrap_or_else(|p| p.into_inner());
        while pool.1 >= LENT_MAX {
            pool = RETURNED.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
        pool.1 += 1;
        Lent(pool.0.pop().unwrap_or_default())
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut pool = LENDER.lock().unwrap_or_else(|p| p.into_inner());
        pool.1 = pool.1.saturating_sub(1);
        pool.0.push(std::mem::take(&mut self.0));
        RETURNED.notify_one();
    }
}

/// Read the records `items` (each expected entry with its span, sorted by offset) of pack
/// `key`, each run of neighbours in one read as `shape` allows, open each, and hand it
/// to `f` with its index. A record that does not open is read again alone, and only then
/// handed on as damaged. A read that fails is retried range by range, so that each
/// record gets its own outcome (a pack cut short fails only the records beyond its end),
/// except when the pack is gone or the store refuses: every record left gets that answer
/// without another request.
fn read_opened(
    store: &dyn Store,
    key: Key,
    items: &[(PackEntry, usize)],
    limits: &RawLimits,
    bufs: &mut Bufs,
    f: &mut EachRecord<'_>,
) -> Result<()> {
    let shape: ReadShape = store.read_shape();
    let Bufs {
        read: own,
        alone,
        out,
        nested,
    } = bufs;
    let mut open_or_again = |k: usize, e: &PackEntry, bytes: &[u8], f: &mut EachRecord<'_>| {
        if let Ok(raw) = record::open(bytes, e, limits, out) {
            return f(k, Ok(Opened { record: bytes, raw }));
        }
        alone.resize(bytes.len(), 0);
        match store.read_at(key, e.offset, alone) {
            Ok(()) => match record::open(alone, e, limits, out) {
                Ok(raw) => f(k, Ok(Opened { record: alone, raw })),
                Err(d) => f(k, Err(Unopened::Damaged(d))),
            },
            Err(err) => f(k, Err(Unopened::Read(err))),
        }
    };
    let mut gone: Option<Error> = None;
    let mut i = 0;
    while let Some((first, len)) = items.get(i) {
        let start = first.offset;
        let mut end = start.saturating_add(*len as u64);
        let mut j = i + 1;
        while let Some((e, l)) = items.get(j) {
            let o = e.offset;
            let stop = o.saturating_add(*l as u64).max(end);
            if o > end.saturating_add(shape.max_gap) || stop - start > shape.max_read as u64 {
                break;
            }
            end = stop;
            j += 1;
        }
        let run = items.get(i..j).unwrap_or_default();
        let want = (end - start) as usize;
        let large = want > ReadShape::LOCAL.max_read;
        let mut lent = (large && gone.is_none() && !*nested).then(Lent::take);
        let read: &mut Vec<u8> = match lent.as_mut() {
            Some(l) => &mut l.0,
            None => &mut *own,
        };
        let result = match &gone {
            Some(err) => Err(again(err)),
            None => store.read_into(key, start, want, read),
        };
        match result {
            Ok(base) => {
                for (k, (e, l)) in run.iter().enumerate() {
                    let at = base + (e.offset - start) as usize;
                    let bytes = read.get(at..at + l).unwrap_or_default();
                    open_or_again(i + k, e, bytes, f)?;
                }
            }
            Err(err) if run.len() == 1 => {
                if gone.is_none() && (err.is_not_found() || err.is_refusal()) {
                    gone = Some(again(&err));
                }
                f(i, Err(Unopened::Read(err)))?
            }
            Err(err) if gone.is_some() || err.is_not_found() || err.is_refusal() => {
                for k in i + 1..j {
                    f(k, Err(Unopened::Read(again(&err))))?;
                }
                if gone.is_none() {
                    gone = Some(again(&err));
                }
                f(i, Err(Unopened::Read(err)))?;
            }
            Err(_) => {
                for (k, (e, l)) in run.iter().enumerate() {
                    read.resize(*l, 0);
                    match store.read_at(key, e.offset, read) {
                        Ok(()) => {
                            let bytes: &[u8] = read;
                            open_or_again(i + k, e, bytes, f)?
                        }
                        Err(err) => f(i + k, Err(Unopened::Read(err)))?,
                    }
                }
            }
        }
        i = j;
    }
    Ok(())
}

impl Repository {
    /// Read many chunks, each verified against its id, in as few store reads as their
    /// places in the packs allow. `f` gets each chunk's index in `ids` and its bytes, or
    /// its own error (a damaged record fails its chunk only), once per index, in the
    /// packs' order rather than `ids`'. An error `f` returns ends the reading with it.
    pub fn read_chunks(&self, ids: &[ChunkId], f: &mut Each<'_>) -> Result<()> {
        let mut at = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            match locate(self, id) {
                Ok(l) => at.push((i, l)),
                Err(e) => f(i, Err(e))?,
            }
        }
        self.read_located(at, f)
    }

    fn read_located(&self, at: Vec<(usize, Located)>, f: &mut Each<'_>) -> Result<()> {
        thread_local! {
            // Reused by every batch a thread reads: no page faults for each new buffer.
            static BUFS: RefCell<Bufs> = RefCell::new(Bufs::default());
        }
        BUFS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut bufs) => self.read_located_into(at, &mut bufs, f),
            // A read inside another's callback.
            Err(_) => {
                let mut bufs = Bufs {
                    nested: true,
                    ..Bufs::default()
                };
                self.read_located_into(at, &mut bufs, f)
            }
        })
    }

    fn read_located_into(
        &self,
        mut at: Vec<(usize, Located)>,
        bufs: &mut Bufs,
        f: &mut Each<'_>,
    ) -> Result<()> {
        at.sort_by_key(|(_, l)| (l.key, l.record.offset));
        for group in at.chunk_by(|a, b| a.1.key == b.1.key) {
            let Some((_, first)) = group.first() else {
                continue;
            };
            let items: Vec<(PackEntry, usize)> =
                group.iter().map(|(_, l)| (l.record, l.span)).collect();
            let limits = self.raw_limits();
            read_opened(
                self.store(),
                first.key,
                &items,
                limits,
                bufs,
                &mut |k, r| {
                    let Some((i, l)) = group.get(k) else {
                        return Ok(());
                    };
                    match r {
                        Ok(rec) => f(*i, Ok(rec.raw)),
                        Err(Unopened::Read(e)) => f(*i, Err(read_failed(l, e))),
                        Err(Unopened::Damaged(d)) => f(*i, Err(damaged(l, d))),
                    }
                },
            )?;
        }
        Ok(())
    }

    /// The next chunks of a stream (a file's, a dump's), in order: fills `into` with the
    /// bytes of `ids[..n]`, each verified, for the largest `n` (at least 1 when `ids` is
    /// not empty) whose bytes fit in one read of the store's [`ReadShape`], fetched in as
    /// few store reads as their places allow. Returns `n`; the first of them that fails
    /// is the error.
    pub fn read_run(&self, ids: &[ChunkId], into: &mut Vec<u8>) -> Result<usize> {
        into.clear();
        let mut at = Vec::new();
        let mut pos = Vec::new();
        let mut total = 0u64;
        let run_bytes = self.store().read_shape().max_read as u64;
        for (i, id) in ids.iter().enumerate() {
            let l = match locate(self, id) {
                Ok(l) => l,
                Err(e) if at.is_empty() => return Err(e),
                // Its error comes in its turn, first of the next run.
                Err(_) => break,
            };
            let raw = l.record.raw_len as u64;
            if !at.is_empty() && total + raw > run_bytes {
                break;
            }
            at.push((i, l));
            pos.push(total as usize);
            total += raw;
        }
        let n = at.len();
        into.resize(total as usize, 0);
        let mut first_err: Option<(usize, Error)> = None;
        self.read_located(at, &mut |i, r| {
            let placed = r.and_then(|bytes| {
                let at = pos.get(i).copied().unwrap_or(usize::MAX);
                let dst = into.get_mut(at..at.saturating_add(bytes.len()));
                dst.map(|d| d.copy_from_slice(bytes))
                    .ok_or_else(|| Error::internal("a chunk longer than its index entry"))
            });
            match placed {
                Ok(()) => Ok(()),
                // Not about this chunk: no need to read the others.
                Err(e) if e.is_refusal() => Err(e),
                Err(e) => {
                    if first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                        first_err = Some((i, e));
                    }
                    Ok(())
                }
            }
        })?;
        match first_err {
            Some((_, e)) => Err(e),
            None => Ok(n),
        }
    }

    /// The records of pack `key` (`entries`, from its trailer or the index, in any
    /// order), each opened and verified against its entry, in as few store reads as the
    /// gaps allow: `f` gets each entry's index and the record (its stored bytes, to copy
    /// as they are, and the chunk's), or why it could not be had. A record that does not
    /// open is read once more on its own before it is called damaged.
    pub fn read_records(
        &self,
        key: Key,
        entries: &[PackEntry],
        f: &mut EachRecord<'_>,
    ) -> Result<()> {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&k| entries.get(k).map(|e| e.offset));
        let mut items = Vec::with_capacity(order.len());
        let mut keep = Vec::with_capacity(order.len());
        for &k in &order {
            let Some(e) = entries.get(k) else { continue };
            match record::span(e, self.raw_limits()) {
                Ok(n) => {
                    items.push((*e, n));
                    keep.push(k);
                }
                Err(d) => f(k, Err(Unopened::Damaged(Damage::Header(d))))?,
            }
        }
        let limits = self.raw_limits();
        read_opened(
            self.store(),
            key,
            &items,
            limits,
            &mut Bufs::default(),
            &mut |j, r| f(keep.get(j).copied().unwrap_or(usize::MAX), r),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::ChunkKind;
    use crate::store::packer::ChunkSink;

    /// `n` distinct chunks of `len` bytes stored in a new repository at `path`.
    fn stored(path: &std::path::Path, n: usize, len: usize) -> Vec<(ChunkId, Vec<u8>)> {
        Repository::init(&crate::store::Place::local(path)).unwrap();
        let repo = Repository::open_with_mem_index(path).unwrap();
        let sink = ChunkSink::new(&repo).unwrap();
        let chunks: Vec<(ChunkId, Vec<u8>)> = (0..n)
            .map(|i| {
                let bytes: Vec<u8> = (0..len)
                    .map(|j| ((i * 31 + j * 7) % 251) as u8 ^ (j / 97) as u8)
                    .collect();
                (
                    sink.put(ChunkKind::Data, &bytes, i % 2 == 0).unwrap(),
                    bytes,
                )
            })
            .collect();
        sink.finish().unwrap();
        chunks
    }

    /// Many chunks come back in a few reads, each verified; a damaged record, a chunk
    /// the index does not have and records beyond the end of a pack cut short fail
    /// alone, each with the error a single read gives it.
    #[test]
    fn coalesced_reads_fail_chunk_by_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        let chunks = stored(&path, 40, 3000);
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let mut ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        ids.push(ChunkId::of(b"never stored"));
        ids.push(ids[3]);
        let read_all = |repo: &Repository| {
            let mut got: Vec<Option<Result<Vec<u8>>>> = (0..ids.len()).map(|_| None).collect();
            repo.read_chunks(&ids, &mut |i, r| {
                assert!(got[i].is_none(), "index {i} handed twice");
                got[i] = Some(r.map(|b| b.to_vec()));
                Ok(())
            })
            .unwrap();
            got.into_iter().map(Option::unwrap).collect::<Vec<_>>()
        };
        let got = read_all(&repo);
        for (i, (_, bytes)) in chunks.iter().enumerate() {
            assert_eq!(got[i].as_ref().unwrap(), bytes, "chunk {i}");
        }
        assert_eq!(got[41].as_ref().unwrap(), &chunks[3].1);
        assert!(matches!(got[40], Err(Error::ChunkMissing { .. })));

        // Flip a payload byte of chunk 5, and cut the pack inside chunk 38.
        let e5 = repo.index().get(&ids[5]).unwrap().unwrap();
        let e38 = repo.index().get(&ids[38]).unwrap().unwrap();
        let file = repo.pack_location(repo.pack_key(e5.pack, e5.kind));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[e5.offset as usize + crate::format::pack::RECORD_HEADER_LEN + 10] ^= 1;
        bytes.truncate(e38.offset as usize + 100);
        std::fs::write(&file, &bytes).unwrap();
        let got = read_all(&repo);
        for (i, r) in got.iter().enumerate().take(40) {
            match (i, r) {
                (
                    5,
                    Err(Error::Corrupt {
                        what: "chunk",
                        location,
                        ..
                    }),
                ) => {
                    assert_eq!(location, &format!("pack {} offset {}", e5.pack, e5.offset))
                }
                (38 | 39, Err(Error::Corrupt { what: "pack", .. })) => {}
                (5 | 38 | 39, r) => panic!("chunk {i}: {:?}", r.as_ref().map(|b| b.len())),
                (_, r) => assert_eq!(r.as_ref().unwrap(), &chunks[i].1, "chunk {i}"),
            }
        }
    }

    /// A run is the chunks in order, as many as fit; its first failure is the error.
    #[test]
    fn runs_are_in_order_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        let chunks = stored(&path, 30, 200_000);
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let mut ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        ids.reverse();
        let (mut run, mut all) = (Vec::new(), Vec::new());
        let mut rest = ids.as_slice();
        while !rest.is_empty() {
            let n = repo.read_run(rest, &mut run).unwrap();
            assert!(
                n >= 1 && run.len() <= ReadShape::LOCAL.max_read,
                "{n} chunks"
            );
            all.extend_from_slice(&run);
            rest = &rest[n..];
        }
        let want: Vec<u8> = chunks.iter().rev().flat_map(|c| c.1.clone()).collect();
        assert!(all == want);
        let missing = [ids[0], ChunkId::of(b"never stored")];
        assert_eq!(repo.read_run(&missing, &mut run).unwrap(), 1);
        assert!(matches!(
            repo.read_run(&missing[1..], &mut run),
            Err(Error::ChunkMissing { .. })
        ));
    }

    /// The reads of a many-chunk file: one per chunk read one at a time, a handful when
    /// read as runs.
    #[cfg(feature = "test-hooks")]
    #[test]
    fn a_many_chunk_file_is_a_handful_of_reads() {
        use crate::store::testing::reads_on_this_thread;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        let chunks = stored(&path, 500, 8000);
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        let before = reads_on_this_thread();
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        for id in &ids {
            repo.read_chunk(id, &mut out, &mut scratch).unwrap();
        }
        let one_by_one = reads_on_this_thread() - before;
        let before = reads_on_this_thread();
        let mut run = Vec::new();
        let mut rest = ids.as_slice();
        while !rest.is_empty() {
            rest = &rest[repo.read_run(rest, &mut run).unwrap()..];
        }
        let coalesced = reads_on_this_thread() - before;
        assert_eq!(one_by_one, 500);
        assert!(coalesced <= 3, "{coalesced} reads for 500 chunks");
    }
}
