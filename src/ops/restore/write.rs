//! Writing one file or link of a restore: into a temp name beside its destination, with
//! the entry's mode, owner (as root) and mtime, then renamed over the final name, so a
//! reader never sees half a file. All-zero blocks are skipped, not written, so a sparse
//! file comes back sparse (the temp file is new: what is never written reads as zeros).

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::format::tree::{ChunkRef, Entry, Node};
use crate::id::ChunkId;
use crate::ops::progress::Progress;
use crate::store::durable::{
    write_content_direct, write_new_direct, DirectContent, DIRECT_WHOLE_MAX,
};
use crate::store::repo::Repository;

/// This process as the owner of the temp names it makes (see `sys::owner_tag`).
pub(super) fn owner() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(crate::sys::owner_tag)
}

/// A new temp name in `path`'s directory (created if missing: making a directory
/// destroys nothing), carrying this process as its owner.
pub(super) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let make = || {
        tempfile::Builder::new()
            .prefix(&format!("{}{}-", super::TEMP_PREFIX, owner()))
            .tempfile_in(dir)
    };
    // The directory phase has made nearly every directory already: try first.
    match make() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).at(dir)?;
            make().at(dir)
        }
        r => r.at(dir),
    }
}

/// Write a small file durably, through a temp name of this restore's (removed as a
/// leftover by a later restore if this one dies before the rename). `point` names the
/// moment the temp file is written, for the crash tests.
pub(super) fn write_durably(path: &Path, bytes: &[u8], point: &'static str) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes).at(path)?;
    tmp.as_file().sync_all().at(path)?;
    #[cfg(feature = "test-hooks")]
    crate::store::testing::point(point);
    #[cfg(not(feature = "test-hooks"))]
    let _ = point;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    crate::store::durable::sync_dir(crate::store::durable::parent_dir(path))
}

/// Write a file's chunks (each verified by its id) into a temp file next to `path`, a
/// run of them at a time (see `Repository::read_run`).
pub(super) fn fill_beside(
    repo: &Repository,
    path: &Path,
    chunks: &[ChunkRef],
    progress: &dyn Progress,
) -> Result<(File, tempfile::TempPath, u64)> {
    let (mut file, tmp) = temp_beside(path)?.into_parts();
    thread_local! {
        static RUN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
    let (n, hole) = RUN.with(|cell| -> Result<(u64, bool)> {
        let run = &mut *cell.borrow_mut();
        let (mut n, mut hole) = (0u64, false);
        let mut rest = ids.as_slice();
        while !rest.is_empty() {
            let taken = repo.read_run(rest, run)?;
            rest = rest.get(taken..).unwrap_or_default();
            hole = write_sparse(&mut file, run, n).at(path)?;
            n += run.len() as u64;
            progress.advance(run.len() as u64);
        }
        Ok((n, hole))
    })?;
    // A file that ends in a hole gets its length here: seeking wrote nothing.
    if hole {
        file.set_len(n).at(path)?;
    }
    Ok((file, tmp, n))
}

/// Append `bytes` (which start at file offset `at`) to `f`, seeking over every run of
/// all-zero blocks (4 KiB, aligned to the file's offsets) instead of writing it. Returns
/// whether the bytes end in such a run (the file is then shorter than it will be).
fn write_sparse(f: &mut File, bytes: &[u8], at: u64) -> std::io::Result<bool> {
    const BLOCK: u64 = 4096;
    let run = |f: &mut File, part: &[u8], zero: bool| {
        if zero {
            f.seek(SeekFrom::Current(part.len() as i64)).map(|_| ())
        } else {
            f.write_all(part)
        }
    };
    let (mut start, mut pos) = (0usize, 0usize);
    let mut zero_run = None;
    while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
        let to_boundary = (BLOCK - (at + pos as u64) % BLOCK) as usize;
        let block = rest.get(..to_boundary).unwrap_or(rest);
        let zero = block.iter().all(|&b| b == 0);
        if zero_run.is_some_and(|z| z != zero) {
            run(f, bytes.get(start..pos).unwrap_or_default(), !zero)?;
            start = pos;
        }
        zero_run = Some(zero);
        pos += block.len();
    }
    match zero_run {
        Some(zero) => run(f, bytes.get(start..).unwrap_or_default(), zero).map(|()| zero),
        None => Ok(false),
    }
}

/// Write a file entry at `path` from its chunks; returns the bytes written.
pub(super) fn write_file(
    repo: &Repository,
    path: &Path,
    entry: &Entry,
    is_root: bool,
    progress: &dyn Progress,
) -> Result<u64> {
    let chunks = repo.file_chunks(&entry.node)?;
    let (file, tmp, n) = fill_beside(repo, path, &chunks, progress)?;
    install(file, tmp, path, entry, is_root)?;
    Ok(n)
}

/// The largest file written in a batch (see [`write_batch`]).
pub(super) const BATCH_FILE_BYTES: u64 = 4 << 20;

/// The chunks of a file entry that is written in a batch with others: a small file (up to
/// [`BATCH_FILE_BYTES`]) with a direct chunk list; `None` for any other entry.
pub(super) fn batch_chunks(entry: &Entry) -> Option<&[ChunkRef]> {
    match &entry.node {
        Node::File {
            chunks,
            indirect: 0,
            size,
            ..
        } if !chunks.is_empty() && *size <= BATCH_FILE_BYTES => Some(chunks),
        _ => None,
    }
}

/// A file of a batch: its temp file once its first chunk came (closed between chunks),
/// the chunks still to come.
struct Piece {
    tmp: Option<tempfile::TempPath>,
    left: usize,
    len: u64,
    failed: bool,
    /// A chunk written so far ended in a run of zeros that was seeked over.
    hole: bool,
    /// The file's content gathered in memory, to be written whole with `O_DIRECT` once
    /// every chunk came (see [`direct_fits`]); `None`: written chunk by chunk.
    gathered: Option<DirectContent>,
}

/// How many bytes of files still missing chunks one batch gathers in memory at most (a
/// file's chunks mostly come one after another, so little is ever held).
const GATHER_MAX: usize = 4 << 20;

/// A file entry of a batch, at its path, with its chunks.
pub(super) type BatchFile<'a> = (&'a Path, &'a Entry, &'a [ChunkRef]);

/// Write small files whose chunks are read together (one coalesced read for many
/// files): each chunk goes into its file's temp file at its offset as it comes, in the
/// packs' order, and a file takes its name once it has all its chunks. `done` gets each
/// file's outcome (the bytes written, or why it failed: a damaged chunk fails its file
/// only); an error it returns ends the batch. A file still waiting for chunks is closed
/// and reopened for the next, so a batch holds no file open between chunks; a file of
/// one chunk (most of them) is opened once.
pub(super) fn write_batch(
    repo: &Repository,
    files: &[BatchFile<'_>],
    is_root: bool,
    progress: &dyn Progress,
    done: &mut dyn FnMut(&Path, Result<u64>) -> Result<()>,
) -> Result<()> {
    let mut ids = Vec::new();
    let mut owner = Vec::new();
    let mut pieces = Vec::with_capacity(files.len());
    for (f, (_, _, chunks)) in files.iter().enumerate() {
        let mut at = 0u64;
        for c in chunks.iter() {
            ids.push(c.id);
            owner.push((f, at, c.len));
            at += c.len as u64;
        }
        pieces.push(Piece {
            tmp: None,
            left: chunks.len(),
            len: at,
            failed: false,
            hole: false,
            gathered: None,
        });
    }
    let mut gathering = 0usize;
    repo.read_chunks(&ids, &mut |i, r| {
        let (Some(&(f, at, len)), Some(&(path, entry, _))) =
            (owner.get(i), owner.get(i).and_then(|o| files.get(o.0)))
        else {
            return Ok(());
        };
        let Some(piece) = pieces.get_mut(f).filter(|p| !p.failed) else {
            return Ok(());
        };
        let placed = r.and_then(|bytes| {
            if bytes.len() != len as usize {
                return Err(Error::corrupt(
                    "tree",
                    path.display().to_string(),
                    format!("a chunk of {} bytes where the tree says {len}", bytes.len()),
                ));
            }
            // A file of several chunks small enough to be written whole with O_DIRECT
            // is gathered first (its first chunk decides: nothing of it is written yet).
            let first = piece.tmp.is_none() && piece.gathered.is_none();
            let size = piece.len as usize;
            if first
                && piece.left > 1
                && (DIRECT_FROM..=DIRECT_WHOLE_MAX).contains(&size)
                && gathering + size <= GATHER_MAX
            {
                gathering += size;
                piece.gathered = Some(DirectContent::zeroed(size));
            }
            if let Some(g) = piece.gathered.as_mut() {
                let part = at as usize..at as usize + bytes.len();
                let Some(place) = g.bytes_mut().get_mut(part) else {
                    return Err(Error::internal("a chunk past the end of its file"));
                };
                place.copy_from_slice(bytes);
                progress.advance(len as u64);
                piece.left -= 1;
                if piece.left > 0 {
                    return Ok(None);
                }
                let Some(mut content) = piece.gathered.take() else {
                    return Err(Error::internal("a gathered file without its content"));
                };
                gathering -= size;
                let (mut file, tmp) = temp_beside(path)?.into_parts();
                let direct = direct_fits(content.bytes())
                    && write_content_direct(&tmp, &mut content).at(path)?;
                if !direct && write_sparse(&mut file, content.bytes(), 0).at(path)? {
                    file.set_len(piece.len).at(path)?;
                }
                install(file, tmp, path, entry, is_root)?;
                return Ok(Some(piece.len));
            }
            let (mut file, tmp) = match piece.tmp.take() {
                Some(t) => match fs::OpenOptions::new().write(true).open(&t) {
                    Ok(f) => (f, t),
                    Err(e) => return Err(Error::io(path, e)),
                },
                None => {
                    let (f, t) = temp_beside(path)?.into_parts();
                    (f, t)
                }
            };
            if at > 0 {
                file.seek(SeekFrom::Start(at)).at(path)?;
            }
            // The chunk is the whole file (a file's chunks come in pack order, not
            // the file's: a later one may be in place already).
            let whole = at == 0 && len as u64 == piece.len && direct_fits(bytes);
            let hole = if whole && write_new_direct(&tmp, bytes).at(path)? {
                false
            } else {
                write_sparse(&mut file, bytes, at).at(path)?
            };
            progress.advance(len as u64);
            piece.left -= 1;
            // A file whose last chunk ends in a hole gets its length once complete:
            // seeking wrote nothing. (Chunks come in pack order, so which one is last
            // is not known here: any chunk ending in a hole counts.)
            piece.hole |= hole;
            if piece.left > 0 {
                piece.tmp = Some(tmp);
                return Ok(None);
            }
            if piece.hole {
                file.set_len(piece.len).at(path)?;
            }
            install(file, tmp, path, entry, is_root)?;
            Ok(Some(piece.len))
        });
        match placed {
            Ok(None) => Ok(()),
            Ok(Some(n)) => done(path, Ok(n)),
            Err(e) => {
                piece.failed = true;
                piece.tmp = None;
                if let Some(g) = piece.gathered.take() {
                    gathering -= g.bytes().len();
                }
                done(path, Err(e))
            }
        }
    })
}

/// Whether a file's whole content is written with `O_DIRECT` (skipping the page cache:
/// on a virtual disk the copy into fresh cache pages costs more CPU than anything else a
/// restore does): from 64 KiB, when it has no all-zero block to leave as a hole.
fn direct_fits(bytes: &[u8]) -> bool {
    (DIRECT_FROM..=DIRECT_WHOLE_MAX).contains(&bytes.len())
        && !bytes.chunks(4096).any(|b| b.iter().all(|&x| x == 0))
}

const DIRECT_FROM: usize = 64 << 10;

/// Files from this size on are handed to writeback as soon as they are written.
const WRITEBACK_AT_ONCE_FROM: u64 = 64 << 10;

/// A written temp file gets the entry's metadata, through its open handle (no path
/// lookups), and takes its final name.
fn install(
    file: File,
    tmp: tempfile::TempPath,
    path: &Path,
    entry: &Entry,
    is_root: bool,
) -> Result<()> {
    // A large file's pages are sent to the disk now, so that the final syncfs has less
    // left to do. A small file's are not: one write request per small file costs more
    // (on a virtual disk, an exit to the host each) than the syncfs writing them together.
    if entry.size() >= WRITEBACK_AT_ONCE_FROM {
        crate::sys::start_writeback(&file);
    }
    set_file_meta(&file, entry, is_root).at(path)?;
    drop(file);
    tmp.persist(path).map_err(|e| Error::io(path, e.error))
}

/// [`set_meta`] for an open regular file: owner (as root) first, since a change of
/// owner clears set-id bits, then mode, then the mtime (after the last write).
pub(super) fn set_file_meta(file: &File, entry: &Entry, is_root: bool) -> std::io::Result<()> {
    if is_root {
        std::os::unix::fs::fchown(file, Some(entry.uid), Some(entry.gid))?;
    }
    file.set_permissions(fs::Permissions::from_mode(entry.mode))?;
    let t = mtime(entry);
    filetime::set_file_handle_times(file, Some(t), Some(t))
}

/// Write a symlink entry at `path`.
pub(super) fn write_symlink(path: &Path, entry: &Entry, is_root: bool) -> Result<()> {
    let Node::Symlink { target } = &entry.node else {
        return Err(Error::internal(
            "a symlink step whose entry is not a symlink",
        ));
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    // Links are written in parallel: each needs its own temp name (regression: two
    // symlinks in one directory raced on a per-process name).
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{}{}-{n}", super::LINK_PREFIX, owner()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &tmp).at(&tmp)?;
    #[cfg(feature = "test-hooks")]
    crate::store::testing::point("restore-link-made");
    if is_root {
        std::os::unix::fs::lchown(&tmp, Some(entry.uid), Some(entry.gid)).at(&tmp)?;
    }
    let t = mtime(entry);
    filetime::set_symlink_file_times(&tmp, t, t).at(&tmp)?;
    fs::rename(&tmp, path).at(path)
}

/// Make `path` another name of the file at `to` (a hard link, placed by rename like
/// every restored file).
pub(super) fn link_file(to: &Path, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".jellysnap-restore-link-{}-{n}",
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    fs::create_dir_all(dir).at(dir)?;
    fs::hard_link(to, &tmp).at(&tmp)?;
    let renamed = fs::rename(&tmp, path).at(path);
    // Renaming a link over another link of the same file leaves both names.
    let _ = fs::remove_file(&tmp);
    renamed
}

/// Set the entry's owner (as root), mode and mtime on `path`.
pub(super) fn set_meta(path: &Path, entry: &Entry, is_root: bool) -> std::io::Result<()> {
    if is_root {
        std::os::unix::fs::lchown(path, Some(entry.uid), Some(entry.gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode))?;
    let t = mtime(entry);
    filetime::set_file_times(path, t, t)
}

fn mtime(entry: &Entry) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        entry.mtime_ns.div_euclid(1_000_000_000),
        entry.mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A batch of small files read together: each file comes back byte for byte, in one
    /// store read; a damaged chunk fails its own file only, which is not left behind.
    #[test]
    fn a_batch_writes_its_files_and_fails_only_the_damaged_one() {
        use crate::format::pack::ChunkKind;
        use crate::format::tree::DbCapture;
        use crate::store::packer::ChunkSink;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Repository::init(&crate::store::Place::local(&path)).unwrap();
        // Files of 1 to 3 chunks, the chunks of the files interleaved in the pack.
        let contents: Vec<Vec<Vec<u8>>> = (0..12u32)
            .map(|f| {
                (0..1 + f % 3)
                    .map(|c| {
                        let mut b = vec![0u8; 5000 + (f * 100 + c) as usize];
                        blake3::Hasher::new_derive_key(&format!("{f}/{c}"))
                            .finalize_xof()
                            .fill(&mut b);
                        b
                    })
                    .collect()
            })
            .collect();
        let entries: Vec<Entry> = {
            let repo = Repository::open_with_mem_index(&path).unwrap();
            let sink = ChunkSink::new(&repo).unwrap();
            let mut refs: Vec<Vec<ChunkRef>> = vec![Vec::new(); contents.len()];
            for c in 0..3 {
                for (f, chunks) in contents.iter().enumerate() {
                    if let Some(b) = chunks.get(c) {
                        let id = sink.put(ChunkKind::Data, b, true).unwrap();
                        refs[f].push(ChunkRef {
                            id,
                            len: b.len() as u32,
                        });
                    }
                }
            }
            sink.finish().unwrap();
            refs.into_iter()
                .map(|chunks| Entry {
                    name: b"f".to_vec(),
                    node: Node::File {
                        size: chunks.iter().map(|c| c.len as u64).sum(),
                        chunks,
                        indirect: 0,
                        trusted: true,
                        database: DbCapture::None,
                    },
                    mode: 0o640,
                    uid: 0,
                    gid: 0,
                    mtime_ns: 1_700_000_000_000_000_000,
                    ctime_ns: 0,
                    inode: 1,
                    link: None,
                })
                .collect()
        };
        let repo = Repository::open_with_mem_index(&path).unwrap();
        // Damage the second chunk of file 5.
        let Node::File { chunks, .. } = &entries[5].node else {
            unreachable!()
        };
        let e = repo.index().get(&chunks[1].id).unwrap().unwrap();
        let pack = repo.pack_location(repo.pack_key(e.pack, e.kind));
        let mut bytes = fs::read(&pack).unwrap();
        bytes[e.offset as usize + crate::format::pack::RECORD_HEADER_LEN + 7] ^= 1;
        fs::write(&pack, &bytes).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let paths: Vec<_> = (0..entries.len())
            .map(|f| out.join(format!("f{f}")))
            .collect();
        let files: Vec<BatchFile<'_>> = entries
            .iter()
            .zip(&paths)
            .map(|(e, p)| (p.as_path(), e, batch_chunks(e).unwrap()))
            .collect();
        let mut outcomes = Vec::new();
        #[cfg(feature = "test-hooks")]
        let before = crate::store::testing::reads_on_this_thread();
        write_batch(
            &repo,
            &files,
            false,
            &crate::ops::progress::NoProgress,
            &mut |p, r| {
                outcomes.push((p.to_path_buf(), r.map_err(|e| e.to_string())));
                Ok(())
            },
        )
        .unwrap();
        // One read for the batch, and one more of the damaged record alone before it is
        // called damaged.
        #[cfg(feature = "test-hooks")]
        assert_eq!(crate::store::testing::reads_on_this_thread() - before, 2);
        assert_eq!(outcomes.len(), entries.len());
        for (f, p) in paths.iter().enumerate() {
            let r = &outcomes.iter().find(|o| &o.0 == p).unwrap().1;
            if f == 5 {
                assert!(
                    r.as_ref().is_err_and(|e| e.contains("corrupt chunk")),
                    "{r:?}"
                );
                assert!(!p.exists());
                continue;
            }
            assert_eq!(*r.as_ref().unwrap(), entries[f].size(), "file {f}");
            assert!(fs::read(p).unwrap() == contents[f].concat(), "file {f}");
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o640);
        }
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            entries.len() - 1,
            "no temp file is left"
        );
    }

    /// A restore writes a file of many chunks with a handful of store reads, not one
    /// per chunk, and the file comes back byte for byte.
    #[cfg(feature = "test-hooks")]
    #[test]
    fn a_many_chunk_file_is_restored_with_a_handful_of_reads() {
        use crate::format::pack::ChunkKind;
        use crate::store::packer::ChunkSink;
        use crate::store::testing::reads_on_this_thread;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Repository::init(&crate::store::Place::local(&path)).unwrap();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | (i % 3 == 0) as u8)
            .collect();
        let chunks: Vec<ChunkRef> = {
            let repo = Repository::open_with_mem_index(&path).unwrap();
            let sink = ChunkSink::new(&repo).unwrap();
            let refs = data
                .chunks(6000)
                .map(|c| ChunkRef {
                    id: sink.put(ChunkKind::Data, c, true).unwrap(),
                    len: c.len() as u32,
                })
                .collect();
            sink.finish().unwrap();
            refs
        };
        let repo = Repository::open_with_mem_index(&path).unwrap();
        let out = dir.path().join("restored");
        let before = reads_on_this_thread();
        let (_file, tmp, n) =
            fill_beside(&repo, &out, &chunks, &crate::ops::progress::NoProgress).unwrap();
        let reads = reads_on_this_thread() - before;
        assert_eq!(n, data.len() as u64);
        assert!(fs::read(&tmp).unwrap() == data);
        assert!(
            reads <= 5,
            "{reads} store reads for a file of {} chunks",
            chunks.len()
        );
    }

    /// Chunks of zeros and data, at every alignment, come back byte for byte, with the
    /// holes where the zero blocks were.
    #[test]
    fn sparse_writes_keep_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 64 * 1024];
        for (i, b) in data.iter_mut().enumerate() {
            if (5000..5003).contains(&i) || (40_000..45_000).contains(&i) || i == 65_535 {
                *b = (i % 251) as u8 + 1;
            }
        }
        for cut in [1usize, 1000, 4096, 7777, 20_000] {
            let p = dir.path().join(format!("f{cut}"));
            let mut f = File::create(&p).unwrap();
            let (mut at, mut hole) = (0u64, false);
            for part in data.chunks(cut) {
                hole = write_sparse(&mut f, part, at).unwrap();
                at += part.len() as u64;
            }
            // Only a file whose bytes end in a hole needs its length set.
            if hole {
                f.set_len(at).unwrap();
            }
            assert_eq!(f.metadata().unwrap().len(), at, "cut {cut}");
            let mut back = Vec::new();
            File::open(&p).unwrap().read_to_end(&mut back).unwrap();
            assert!(back == data, "cut {cut}");
        }
        let mut trailing = File::create(dir.path().join("t")).unwrap();
        assert!(write_sparse(&mut trailing, &[0u8; 10_000], 0).unwrap());
        assert_eq!(
            trailing.metadata().unwrap().len(),
            0,
            "a hole is not written"
        );
    }
}
