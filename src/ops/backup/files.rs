//! File content of a backup: a regular file is reused from the parent snapshot when its
//! size, times and inode are unchanged, else read, chunked, deduplicated and compressed;
//! a captured database is chunked from its capture's temp file (or is the parent's node,
//! when its capture was reused).

use std::cell::RefCell;
use std::fs::File;
use std::path::Path;

use super::databases::Captured;
use super::source;
use super::tally::Tally;
use super::{ctime_ns, mtime_ns, Ctx, READ_ATTEMPTS};
use crate::error::{Error, IoContext, Result};
use crate::format::chunker::Chunker;
use crate::format::chunklist;
use crate::format::compress::is_precompressed;
use crate::format::pack::ChunkKind;
use crate::format::tree::{ChunkRef, DbCapture, Entry, Node};
use crate::sys::Stat;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A regular file: reused from the parent snapshot when unchanged, else read and chunked.
/// `None` when it could not be read (reported).
pub(super) fn file_node(
    ctx: &Ctx,
    path: &Path,
    meta: &Stat,
    prev: Option<&Entry>,
    tally: &mut Tally,
) -> Result<Option<Node>> {
    if let Some(node) = reused(prev, meta).filter(|n| !ctx.repo.needs_damaged(n)) {
        tally.files_reused += 1;
        ctx.progress.advance(meta.size);
        return Ok(Some(node));
    }
    for attempt in 1..=READ_ATTEMPTS {
        let Some(read) = read_once(ctx, path, tally)? else {
            return Ok(None);
        };
        if read.stable || attempt == READ_ATTEMPTS {
            return stored(ctx, path, read, tally).map(Some);
        }
    }
    Ok(None)
}

/// The parent snapshot's node for this file, when it can be trusted and the file's size,
/// times and inode are unchanged.
fn reused(prev: Option<&Entry>, meta: &Stat) -> Option<Node> {
    let Some(Entry {
        node:
            Node::File {
                size,
                chunks,
                indirect,
                trusted: true,
                database: DbCapture::None,
            },
        mtime_ns: pm,
        ctime_ns: pc,
        inode,
        ..
    }) = prev
    else {
        return None;
    };
    let unchanged =
        *size == meta.size && *pm == mtime_ns(meta) && *pc == ctime_ns(meta) && *inode == meta.ino;
    unchanged.then(|| Node::File {
        size: *size,
        chunks: chunks.clone(),
        indirect: *indirect,
        trusted: true,
        database: DbCapture::None,
    })
}

/// One read of a file, with whether it stayed the same while it was read.
struct Read {
    chunks: Vec<ChunkRef>,
    size: u64,
    stable: bool,
    mtime_ns: i64,
}

/// Read and chunk the file once. `None` when it could not be opened or read (reported).
fn read_once(ctx: &Ctx, path: &Path, tally: &mut Tally) -> Result<Option<Read>> {
    let opened = File::open(path);
    #[cfg(feature = "test-hooks")]
    let opened = crate::store::testing::source_open().and(opened);
    let f = match opened {
        Ok(f) => f,
        Err(e) => {
            ctx.report(tally, path, &format!("cannot read: {e}"));
            return Ok(None);
        }
    };
    let before = Stat::from(&f.metadata().at(path)?);
    let chunked = source::with_reader(&f, before.size, |r| {
        chunk_file(ctx, &ctx.chunker, r, true, false)
    });
    let (chunks, n) = match chunked? {
        Ok(r) => r,
        Err(e) => {
            ctx.report(tally, path, &format!("read failed: {e}"));
            return Ok(None);
        }
    };
    tally.bytes_read += n;
    let after = Stat::from(&f.metadata().at(path)?);
    let stable = before.size == after.size
        && mtime_ns(&before) == mtime_ns(&after)
        && ctime_ns(&before) == ctime_ns(&after)
        && after.size == n;
    Ok(Some(Read {
        chunks,
        size: n,
        stable,
        mtime_ns: mtime_ns(&after),
    }))
}

/// The node of a file as last read (warned about when it kept changing).
fn stored(ctx: &Ctx, path: &Path, read: Read, tally: &mut Tally) -> Result<Node> {
    if !read.stable {
        tally.changed.push(path.display().to_string());
        ctx.progress.warn(&format!(
            "{}: changed while being read; stored as last read",
            path.display()
        ));
    }
    tally.files_read += 1;
    let trusted = read.stable && read.mtime_ns < ctx.trust_before_ns;
    let (chunks, indirect) = store_chunk_list(ctx, read.chunks)?;
    Ok(Node::File {
        size: read.size,
        chunks,
        indirect,
        trusted,
        database: DbCapture::None,
    })
}

/// A captured database: chunked from the capture's temp file, or the parent snapshot's
/// node when the database is unchanged since (nothing read).
pub(super) fn database_node(ctx: &Ctx, path: &Path, tally: &mut Tally) -> Result<Option<Node>> {
    // A logical dump is chunked while its proof runs; the chunks are this snapshot's
    // only if the proof holds (else they are unreferenced, like an interrupted backup's).
    let early = match ctx.captures.early_dump(path)? {
        Some(dump) => {
            let at: &Path = &dump;
            let mut f = File::open(at).at(at)?;
            let chunked = chunk_file(ctx, &ctx.db_chunker, &mut f, true, true)?.at(at)?;
            Some((dump, chunked))
        }
        None => None,
    };
    let (captured, kind) = match ctx.captures.wait(path, ctx.progress, tally) {
        // A plugin's database SQLite cannot copy (locked, damaged, not readable by this
        // user) is left out and said so; Jellyfin's own ends the backup.
        Err(Error::DatabaseCapture { detail, .. }) if ctx.captures.is_plugin(path) => {
            // SQLite's own words for a file that is not (or no longer) a database.
            let damaged = ["not a database", "malformed", "corrupt"]
                .iter()
                .any(|w| detail.contains(w));
            let check = match damaged {
                true => format!(
                    "; `sqlite3 {} 'PRAGMA integrity_check'` tells whether the file itself is damaged",
                    path.display()
                ),
                false => String::new(),
            };
            let what = format!(
                "a plugin's database, not captured: {detail} (the rest of the snapshot is complete{check})"
            );
            ctx.report(tally, path, &what);
            return Ok(None);
        }
        r => r?,
    };
    let tmp = match captured {
        Captured::Parent(node) => return Ok(Some(node)),
        Captured::File(f) => f,
    };
    let tmp_path: &Path = &tmp;
    let (chunks, n) = match early {
        Some((dump, chunked)) if kind == DbCapture::Logical && **dump == *tmp_path => chunked,
        _ => {
            let mut f = File::open(tmp_path).at(tmp_path)?;
            let chunker = match kind {
                DbCapture::Logical => &ctx.db_chunker,
                _ => &ctx.db_physical_chunker,
            };
            chunk_file(ctx, chunker, &mut f, true, true)?.at(tmp_path)?
        }
    };
    tally.db_bytes += n;
    let (chunks, indirect) = store_chunk_list(ctx, chunks)?;
    Ok(Some(Node::File {
        size: n,
        chunks,
        indirect,
        trusted: false,
        database: kind,
    }))
}

/// A long chunk list becomes list chunks (tree kind, so they are durable before the tree
/// that references them: docs/FORMAT.md, "List chunks").
fn store_chunk_list(ctx: &Ctx, chunks: Vec<ChunkRef>) -> Result<(Vec<ChunkRef>, u8)> {
    chunklist::build(chunks, |bytes| ctx.sink.put(ChunkKind::Tree, bytes, true))
}

/// Chunk and store a file's content (`database`: a captured database's, which goes to
/// packs of its own). Outer error: the repository failed (fatal). Inner error: the source
/// could not be read (reported per file).
fn chunk_file(
    ctx: &Ctx,
    chunker: &Chunker,
    f: &mut dyn std::io::Read,
    compressible_default: bool,
    database: bool,
) -> Result<std::io::Result<(Vec<ChunkRef>, u64)>> {
    READ_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let mut chunks = Vec::new();
        let mut compressible = None;
        let read = chunker.chunk_reader(f, &mut buf, |data| {
            let c = *compressible
                .get_or_insert_with(|| compressible_default && !is_precompressed(data));
            let id = match database {
                true => ctx.sink.put_database(data, c)?,
                false => ctx.sink.put(ChunkKind::Data, data, c)?,
            };
            chunks.push(ChunkRef {
                id,
                len: data.len() as u32,
            });
            if !database {
                ctx.progress.advance(data.len() as u64);
            }
            Ok::<(), Error>(())
        })?;
        Ok(read.map(|n| (chunks, n)))
    })
}
