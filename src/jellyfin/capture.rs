//! Consistent capture of a live SQLite database.
//!
//! The source is opened so that neither it nor its `-wal`/`-shm` change (`livedb`: how,
//! for a stopped server, a running one, and one that lost its locks) and copied with
//! SQLite's online backup API in a single `step(-1)`: one read transaction, so the copy is
//! a consistent state even while the server writes (committed data living only in the WAL
//! included). The database file is opened with plain file I/O only to probe its locks,
//! before this process has a connection to it (closing it would drop that connection's
//! POSIX locks); we never checkpoint and never write its `-wal`/`-shm`.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;

use crate::error::{Error, IoContext, Result};
use crate::jellyfin::kept::{Kept, Taken};
use crate::jellyfin::livedb;
use crate::jellyfin::rowlist;
use crate::jellyfin::sqlite::open_private;

/// How long a capture waits for a database another process keeps locked: the server's
/// own is waited for long (a long write transaction ends), a plugin's less (one kept in
/// SQLite's exclusive locking mode is never let go while its process runs, and each
/// backup would wait for it).
pub const PATIENCE_SERVER: Duration = Duration::from_secs(120);
pub const PATIENCE_PLUGIN: Duration = Duration::from_secs(15);

/// Capture `src` into a new temporary file in `tmp_dir`, waiting at most `patience` for a
/// database kept busy. The file is removed when the returned path is dropped.
pub fn capture(src: &Path, tmp_dir: &Path, patience: Duration) -> Result<tempfile::TempPath> {
    let tmp = tempfile::Builder::new()
        .prefix("db-capture-")
        .tempfile_in(tmp_dir)
        .at(tmp_dir)?
        .into_temp_path();
    // A process that wrote while the file was read without locks (a rollback-journal
    // database whose writer held none between two commits when the backup looked) has
    // the copy made again, this time under SQLite's locks (`livedb::open_locking`).
    let mut copied = copy_into(src, &tmp, tmp_dir, patience, false);
    if let Ok(Some(_)) = &copied {
        remove_side_files(&tmp);
        copied = copy_into(src, &tmp, tmp_dir, patience, true);
    }
    let failed = match copied {
        Ok(None) => return Ok(tmp),
        Ok(Some(why)) => Error::DatabaseCapture {
            path: src.to_path_buf(),
            detail: why,
        },
        Err(e) => e,
    };
    // A copy that fails takes its journal with it (the copy itself goes with `tmp`).
    remove_side_files(&tmp);
    Err(failed)
}

/// Copy `src` into the file `tmp` (in `tmp_dir`), under SQLite's locks when `locking`;
/// every connection is closed on return. `Some(why)` when it was read without locks and
/// another process wrote it meanwhile: the copy is not to be used.
fn copy_into(
    src: &Path,
    tmp: &Path,
    tmp_dir: &Path,
    patience: Duration,
    locking: bool,
) -> Result<Option<String>> {
    let fail = |detail: String| Error::DatabaseCapture {
        path: src.to_path_buf(),
        detail,
    };
    let source = match locking {
        true => livedb::open_locking(src, tmp_dir),
        false => livedb::open(src, tmp_dir),
    }
    .map_err(fail)?;
    // Each step waits for a busy database by itself: no longer than the whole patience.
    source
        .busy_timeout(patience.min(Duration::from_secs(30)))
        .map_err(|e| fail(e.to_string()))?;
    // SQLite's "database or disk is full" here is the copy's file system, the
    // repository's, as is a copy it cannot create while no inodes are left: said as that
    // (the command names the repository), not as the source database failing.
    let full = |e: &rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => true,
        Some(rusqlite::ErrorCode::CannotOpen) => crate::sys::nearly_full(tmp_dir),
        _ => false,
    };
    let copy_err = |e: rusqlite::Error| {
        if !full(&e) {
            return fail(e.to_string());
        }
        let size = std::fs::metadata(src).map(|m| m.len()).unwrap_or(0);
        Error::io(
            tmp.to_path_buf(),
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "the copy of {} ({}) does not fit: {e}",
                    src.display(),
                    crate::error::bytes(size)
                ),
            ),
        )
    };
    let mut dest = Connection::open(tmp).map_err(|e| match full(&e) {
        true => copy_err(e),
        false => fail(format!("cannot create the copy: {e}")),
    })?;
    // Scratch, read back from the page cache and gone with the backup: not synced.
    dest.execute_batch("PRAGMA synchronous = OFF")
        .map_err(copy_err)?;
    {
        let backup = Backup::new(&source, &mut dest).map_err(copy_err)?;
        let deadline = Instant::now() + patience;
        loop {
            match backup.step(-1).map_err(copy_err)? {
                StepResult::Done => break,
                StepResult::Busy | StepResult::Locked | StepResult::More
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => {
                    return Err(fail(format!(
                        "another process kept the database locked for {} s ({other:?}): one that holds it in SQLite's exclusive locking mode lets no reader in while it runs; stop that process (or its plugin) for a complete backup, or retry",
                        patience.as_secs()
                    )))
                }
            }
        }
    }
    dest.close().map_err(|(_, e)| copy_err(e))?;
    let lock_free = source.lock_free();
    match source.finish() {
        Ok(()) => Ok(None),
        Err(why) if lock_free => Ok(Some(why)),
        Err(why) => Err(fail(why)),
    }
}

/// A dump in a temporary file, with the blake3 of its bytes. The file is shared: a
/// backup chunks it while its proof runs (see [`dump_and_prove`]), and it is removed
/// once the last holder drops it.
pub struct Dump {
    pub file: std::sync::Arc<tempfile::TempPath>,
    pub blake3: [u8; 32],
    /// The observation's digests of the tables the dump read with the observation's
    /// own query (`logical::dump_observing`).
    pub observed: Vec<crate::jellyfin::observe::TableDigest>,
}

/// Write the logical dump (`logical::dump`) of a captured copy into a new temporary file
/// in `tmp_dir`. The copy is private to us, so it is read without any concern for the live
/// server. `Ok(Err(reason))` when the dump refuses the database (virtual tables, an
/// unsupported encoding, or SQLite failing to read it logically): the caller keeps the
/// physical copy instead.
pub fn dump_logical(copy: &Path, tmp_dir: &Path) -> Result<std::result::Result<Dump, String>> {
    use crate::jellyfin::logical::{self, LogicalError};
    let mut tmp = tempfile::Builder::new()
        .prefix("db-capture-")
        .tempfile_in(tmp_dir)
        .at(tmp_dir)?;
    let conn = match open_private(copy) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("cannot open the copy: {e}"))),
    };
    let mut out = Hashing {
        inner: tmp.as_file_mut(),
        hasher: blake3::Hasher::new(),
    };
    let mut observed = Vec::new();
    match logical::dump_observing(&conn, &mut out, &mut observed) {
        Ok(_) => {
            let blake3 = *out.hasher.finalize().as_bytes();
            Ok(Ok(Dump {
                file: std::sync::Arc::new(tmp.into_temp_path()),
                blake3,
                observed,
            }))
        }
        Err(LogicalError::Io(e)) => Err(crate::error::Error::io(tmp.path(), e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The SQLite that dumps, rebuilds and observes (the bundled one).
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

/// Remove the `-wal`/`-shm`/`-journal` SQLite leaves next to a private file it opened.
pub fn remove_side_files(path: &Path) {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_os_string();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
}

/// Observe a private database file (see `observe`). The caller removes the side files
/// SQLite may leave (`remove_side_files`) once no connection to the file is open.
pub fn observe_file(
    path: &Path,
) -> std::result::Result<crate::jellyfin::observe::Observation, String> {
    observe_file_as(path, crate::jellyfin::observe::VERSION)
}

/// [`observe_file`] by observation `version`.
pub fn observe_file_as(
    path: &Path,
    version: u32,
) -> std::result::Result<crate::jellyfin::observe::Observation, String> {
    let conn = open_private(path).map_err(|e| e.to_string())?;
    crate::jellyfin::observe::observe_as(&conn, None, version).map_err(|e| e.to_string())
}

/// [`observe_file`] on two threads (see [`observe::observe_private`]): for a file
/// nothing else writes to, when a core is free for it.
///
/// [`observe::observe_private`]: crate::jellyfin::observe::observe_private
pub fn observe_file_split(
    path: &Path,
    version: u32,
) -> std::result::Result<crate::jellyfin::observe::Observation, String> {
    let conn = open_private(path).map_err(|e| e.to_string())?;
    let other = open_private(path).map_err(|e| e.to_string())?;
    crate::jellyfin::observe::observe_private(&conn, other, version).map_err(|e| e.to_string())
}

/// A logical capture of a copy, and whether it is proven exact.
pub enum Logical {
    /// The dump rebuilds into a database that looks exactly like the source: the dump,
    /// the source's observation digest, and how the rebuild that showed it was made.
    Exact {
        dump: Dump,
        digest: [u8; 32],
        rebuild: Rebuild,
    },
    /// The dump refused the database, or the rebuild is not (or could not be shown to
    /// be) exact: why, in words. The caller keeps the physical copy, exact by
    /// construction.
    Refused(String),
}

/// A stage of [`dump_and_prove`], as it is reached.
pub enum Stage<'a> {
    /// A dump that is to be rebuilt, as soon as it is written, before its proof (a dump
    /// equal to the earlier proven one is not given: its proof is about to be reused).
    Written(&'a Dump),
    /// The proof held; the rebuild is about to be kept (with its row list, both still in
    /// scratch space until then).
    Proven,
}

/// How a proof's rebuild of the dump was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// None: an earlier proof of the same dump (`Proven`) shows it.
    Reused,
    /// The dump rebuilt whole.
    Whole,
    /// The last proof's kept rebuild brought up to date (`kept`, `logical::update`).
    Updated,
}

/// An earlier proof: a dump (by its blake3) that was rebuilt and observed, by this
/// dump version, observation version and SQLite, as the observation with this digest.
pub struct Proven {
    pub dump_blake3: [u8; 32],
    pub digest: [u8; 32],
}

/// Dump the captured copy at `copy` logically and prove the dump: rebuild it in
/// `scratch`, observe both with the same SQLite and compare everything an application
/// can see (see `observe`). Observing the copy runs beside the dump and the rebuild (two
/// cores halve the wall time; the copy is private, so the two readers see one state),
/// but for the tables the dump digests as it reads them with the observation's query
/// (`logical::dump_observing`): their rows are read once for both.
///
/// With `earlier`, a dump byte for byte equal to the proven one, of a copy whose
/// observation equals the proven one, needs no rebuild: rebuilding the same bytes with
/// the same SQLite gives what the proof saw, and that is what the copy shows. Anything
/// else is proven as without it. Only repository I/O failures are errors.
///
/// `on` is told of the proof's stages ([`Stage`]): a backup chunks a dump it is given
/// while the proof runs, and stores it only if the proof holds.
///
/// With `kept`, the rebuild kept there when it is of `earlier`'s dump is brought up to
/// date (`logical::update`) instead of rebuilding the dump whole, and the rebuild of a
/// dump proven exact is kept there for the next proof (see `kept`).
pub fn dump_and_prove(
    copy: &Path,
    scratch: &Path,
    earlier: Option<&Proven>,
    kept: Option<&Kept>,
    on: &dyn Fn(Stage<'_>),
) -> Result<Logical> {
    let outcome = std::thread::scope(|s| -> Result<Logical> {
        let observer = std::thread::Builder::new()
            .name("jellysnap-db-observe".into())
            .spawn_scoped(s, || observe_copy_but_dumped(copy));
        let mut observer = Some(observer);
        let mut source_seen = None;
        let built = (|| -> Result<std::result::Result<_, String>> {
            let dump = match dump_logical(copy, scratch)? {
                Ok(d) => d,
                Err(why) => return Ok(Err(why)),
            };
            match earlier.filter(|p| p.dump_blake3 == dump.blake3) {
                Some(p) => {
                    source_seen = joined(observer.take()).map(|o| completed(o, &dump, copy));
                    if matches!(&source_seen, Some(Ok(o)) if o.digest() == p.digest) {
                        return Ok(Ok((dump, None)));
                    }
                }
                None => on(Stage::Written(&dump)),
            }
            let updated = match (kept, earlier) {
                (Some(k), Some(p)) => k.take(p).and_then(|taken| {
                    let listed = update_file(&dump.file, &taken, scratch).ok()?;
                    Some((taken.file.to_path_buf(), listed))
                }),
                _ => None,
            };
            let (rebuilt, listed) = match updated {
                Some((base, listed)) => (Rebuilt::Kept(base), Some(listed)),
                None => {
                    // The kept one is of no more use, nor the room it takes.
                    if let Some(k) = kept {
                        k.clear();
                    }
                    match rebuild_file(&dump.file, scratch, kept.is_some())? {
                        Ok((r, listed)) => (Rebuilt::Fresh(r), listed),
                        Err(e) => return Ok(Err(format!("the dump does not rebuild: {e}"))),
                    }
                }
            };
            // The copy's observation ran beside the dump and the rebuild and is about
            // done: the rebuild's takes both cores.
            let seen = observe_file_split(rebuilt.path(), crate::jellyfin::observe::VERSION);
            remove_side_files(rebuilt.path());
            Ok(Ok((dump, Some((seen, rebuilt, listed)))))
        })();
        let partial = joined(observer.take());
        let (dump, rebuilt) = match built? {
            Ok(x) => x,
            Err(why) => return Ok(Logical::Refused(why)),
        };
        let source = match partial {
            Some(o) => completed(o, &dump, copy),
            None => source_seen.unwrap_or_else(|| Err("the copy was not observed".into())),
        };
        let source = match source {
            Ok(o) => o,
            Err(e) => {
                return Ok(Logical::Refused(format!(
                    "SQLite {} cannot read it completely: {e}",
                    sqlite_version()
                )))
            }
        };
        let (seen, rebuilt, listed) = match rebuilt {
            None => {
                return Ok(Logical::Exact {
                    dump,
                    digest: source.digest(),
                    rebuild: Rebuild::Reused,
                })
            }
            Some(r) => r,
        };
        let judge = |seen: Observed| match seen {
            Err(e) => Some(format!("the rebuilt database cannot be read: {e}")),
            Ok(r) => source
                .difference(&r)
                .map(|d| format!("a rebuild would not be exact: {d}")),
        };
        let mut refused = judge(seen);
        let (mut rebuilt, mut listed) = (rebuilt, listed);
        if refused.is_some() && matches!(rebuilt, Rebuilt::Kept(_)) {
            // A kept rebuild brought up to date that does not prove is not trusted to
            // refuse the dump (it may have been damaged since it was kept): the dump is
            // rebuilt whole, and that decides.
            if let Some(k) = kept {
                k.clear();
            }
            refused = match rebuild_file(&dump.file, scratch, kept.is_some())? {
                Ok((r, l)) => {
                    let seen = observe_file_split(&r, crate::jellyfin::observe::VERSION);
                    remove_side_files(&r);
                    rebuilt = Rebuilt::Fresh(r);
                    listed = l;
                    judge(seen)
                }
                Err(e) => Some(format!("the dump does not rebuild: {e}")),
            };
        }
        if let Some(why) = refused {
            // Captured physically: no later proof starts from this dump.
            if let Some(k) = kept {
                k.clear();
            }
            return Ok(Logical::Refused(why));
        }
        let digest = source.digest();
        on(Stage::Proven);
        if let (Some(k), Some(l)) = (kept, &listed) {
            let proven = Proven {
                dump_blake3: dump.blake3,
                digest,
            };
            k.keep(rebuilt.path(), &l.file, &l.blake3, &proven);
        }
        Ok(Logical::Exact {
            dump,
            digest,
            rebuild: match rebuilt {
                Rebuilt::Kept(_) => Rebuild::Updated,
                Rebuilt::Fresh(_) => Rebuild::Whole,
            },
        })
    });
    remove_side_files(copy);
    outcome
}

type Observed = std::result::Result<crate::jellyfin::observe::Observation, String>;
type PartlyObserved = std::result::Result<crate::jellyfin::observe::Partial, String>;

/// The copy's observation but for the rows its dump digests as it reads them
/// (`observe::Partial`): taken beside the dump, so that those rows are read once.
fn observe_copy_but_dumped(copy: &Path) -> PartlyObserved {
    let conn = open_private(copy).map_err(|e| e.to_string())?;
    crate::jellyfin::observe::observe_but_dumped(&conn, crate::jellyfin::observe::VERSION)
        .map_err(|e| e.to_string())
}

/// The copy's whole observation: `partial` with the digests `dump` made. Should the dump
/// not have digested a table the observation left to it, the copy is observed whole.
fn completed(partial: PartlyObserved, dump: &Dump, copy: &Path) -> Observed {
    partial?
        .complete(&dump.observed)
        .or_else(|_| observe_file(copy))
}

/// The observation of the observing thread, once it ends (`None` when it was joined).
fn joined<T>(
    observer: Option<
        std::io::Result<std::thread::ScopedJoinHandle<'_, std::result::Result<T, String>>>,
    >,
) -> Option<std::result::Result<T, String>> {
    Some(match observer? {
        Ok(h) => h
            .join()
            .unwrap_or_else(|_| Err("the observing thread panicked".into())),
        Err(e) => Err(format!("cannot start a thread: {e}")),
    })
}

/// A rebuild being proven: a new file in scratch space, or the kept one brought up to
/// date.
enum Rebuilt {
    Fresh(tempfile::TempPath),
    Kept(std::path::PathBuf),
}

impl Rebuilt {
    fn path(&self) -> &Path {
        match self {
            Rebuilt::Fresh(p) => p,
            Rebuilt::Kept(p) => p,
        }
    }
}

/// Rows of a changed table that an update holds in memory at most; past this (a
/// migration that rewrote a table, say), the dump is rebuilt whole.
const UPDATE_BUDGET: usize = 32 << 20;

/// A dump's row list (`rowlist`) in a temporary file, and the list's blake3.
struct Listed {
    file: tempfile::TempPath,
    blake3: [u8; 32],
}

/// A new row list in `scratch` with digests under `seed`, written through `write`.
fn list_into<E: From<std::io::Error>>(
    scratch: &Path,
    seed: u64,
    write: impl FnOnce(&mut ListWriter) -> std::result::Result<(), E>,
) -> std::result::Result<Listed, E> {
    let tmp = tempfile::Builder::new()
        .prefix("db-rows-")
        .tempfile_in(scratch)?;
    let (file, path) = tmp.into_parts();
    let mut list = rowlist::Writer::new(std::io::BufWriter::with_capacity(1 << 16, file), seed)?;
    write(&mut list)?;
    let (out, blake3) = list.finish()?;
    drop(out.into_inner().map_err(|e| e.into_error())?);
    Ok(Listed { file: path, blake3 })
}

type ListWriter = rowlist::Writer<std::io::BufWriter<std::fs::File>>;

/// Bring the kept rebuild `taken` to what rebuilding `dump` would make (see
/// `logical::update`), with the dump's row list. An error (why, in words) when it
/// cannot be done that way, or failed: the caller rebuilds instead, which decides what
/// becomes of the dump.
fn update_file(
    dump: &Path,
    taken: &Taken<'_>,
    scratch: &Path,
) -> std::result::Result<Listed, String> {
    use crate::jellyfin::logical::{self, LogicalError, Updated};
    let mut f = std::io::BufReader::new(std::fs::File::open(dump).map_err(|e| e.to_string())?);
    let old = std::fs::File::open(taken.rows).map_err(|e| format!("its row list: {e}"))?;
    let old = rowlist::Reader::new(std::io::BufReader::with_capacity(1 << 16, old))
        .map_err(|e| format!("its {e}"))?;
    let seed = old.seed();
    let listed = list_into(
        scratch,
        seed,
        |list| -> std::result::Result<(), LogicalError> {
            match logical::update(
                &mut f,
                taken.file,
                old,
                &taken.rows_blake3,
                list,
                UPDATE_BUDGET,
            )? {
                Updated::Done => Ok(()),
                Updated::Not(why) => Err(LogicalError::Unsupported(why)),
            }
        },
    );
    remove_side_files(taken.file);
    listed.map_err(|e| e.to_string())
}

/// Rebuild the dump in file `dump` into a new temporary file in `scratch`, with the
/// dump's row list when `list`.
fn rebuild_file(
    dump: &Path,
    scratch: &Path,
    list: bool,
) -> Result<std::result::Result<(tempfile::TempPath, Option<Listed>), String>> {
    use crate::jellyfin::logical::{self, LogicalError};
    let dest = tempfile::Builder::new()
        .prefix("db-rebuild-")
        .tempfile_in(scratch)
        .at(scratch)?
        .into_temp_path();
    // rebuild() creates the file itself; the reserved name is ours until dropped.
    std::fs::remove_file(&dest).at(&dest)?;
    let mut f = std::io::BufReader::new(std::fs::File::open(dump).at(dump)?);
    let rebuilt = match list {
        true => list_into(scratch, rowlist::new_seed(), |l| {
            logical::rebuild_listing(&mut f, &dest, Some(l)).map(drop)
        })
        .map(Some),
        false => logical::rebuild(&mut f, &dest).map(|_| None),
    };
    match rebuilt {
        Ok(listed) => Ok(Ok((dest, listed))),
        Err(LogicalError::Io(e)) => {
            remove_side_files(&dest);
            Err(Error::io(&dest, e))
        }
        Err(e) => {
            remove_side_files(&dest);
            Ok(Err(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proven(copy: &Path, scratch: &Path, earlier: Option<&Proven>) -> (Dump, [u8; 32], bool) {
        let (dump, digest, rebuild) = proven_kept(copy, scratch, earlier, None);
        (dump, digest, rebuild == Rebuild::Reused)
    }

    fn proven_kept(
        copy: &Path,
        scratch: &Path,
        earlier: Option<&Proven>,
        kept: Option<&Kept>,
    ) -> (Dump, [u8; 32], Rebuild) {
        match dump_and_prove(copy, scratch, earlier, kept, &|_| {}).unwrap() {
            Logical::Exact {
                dump,
                digest,
                rebuild,
            } => (dump, digest, rebuild),
            Logical::Refused(why) => panic!("refused: {why}"),
        }
    }

    /// The copy's observation taken beside its dump (the rows of the tables the dump
    /// reads with the observation's query digested by the dump) is the observation taken
    /// whole, and the dump digests exactly those tables.
    #[test]
    fn an_observation_completed_by_the_dump_is_the_whole_observation() {
        let dir = tempfile::tempdir().unwrap();
        let schemas = [
            // Jellyfin-like: rowid alias, plain and unique indexes, AUTOINCREMENT, stats.
            "CREATE TABLE items(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, year INT, w REAL, img BLOB);
             CREATE INDEX items_name ON items(name COLLATE NOCASE);
             CREATE UNIQUE INDEX items_w ON items(w, id);
             INSERT INTO items(name, year, w, img) VALUES ('a', 1999, -0.0, x'00ff'), (NULL, NULL, 1.5, NULL),
                ('été', 2024, 0.0, x''), ('', -1, 1e300, 'text in a blob column');
             DELETE FROM items WHERE id = 2;
             ANALYZE;",
            // WITHOUT ROWID, a column named rowid, generated columns, an expression and a
            // partial index, an empty table.
            r#"CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
             INSERT INTO kv VALUES ('b', 2), ('a', x'01'), ('c', NULL);
             CREATE TABLE odd("rowid" TEXT, x);
             INSERT INTO odd VALUES ('r1', 1), ('r2', 2.5);
             CREATE TABLE gen(a INT, b INT GENERATED ALWAYS AS (a * 2) STORED, c GENERATED ALWAYS AS (a + 1));
             INSERT INTO gen(a) VALUES (1), (2), (NULL);
             CREATE TABLE e(a TEXT, b INT);
             CREATE INDEX e_lower ON e(lower(a));
             CREATE INDEX e_part ON e(b) WHERE b > 1;
             INSERT INTO e VALUES ('X', 1), ('y', 2), ('Z', 3);
             CREATE TABLE empty(a, b);"#,
            // A UTF-16 database: no table is read alike.
            "PRAGMA encoding = 'UTF-16le';
             CREATE TABLE t(a TEXT, b);
             INSERT INTO t VALUES ('é', 1), (x'41', 'two');",
        ];
        for (i, sql) in schemas.iter().enumerate() {
            let path = dir.path().join(format!("db{i}.db"));
            let c = Connection::open(&path).unwrap();
            c.execute_batch(sql).unwrap();
            drop(c);
            let whole = observe_file(&path).unwrap();
            let dump = dump_logical(&path, dir.path()).unwrap().unwrap();
            let partial = observe_copy_but_dumped(&path).unwrap();
            let completed = partial.complete(&dump.observed).unwrap();
            assert_eq!(completed, whole, "schema {i}");
            assert_eq!(completed.digest(), whole.digest(), "schema {i}");
            let mut names: Vec<&str> = dump.observed.iter().map(|d| d.name.as_str()).collect();
            names.sort();
            match i {
                0 => assert_eq!(
                    names,
                    ["items", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4"]
                ),
                1 => assert_eq!(names, ["e", "empty", "kv", "odd"]),
                _ => assert!(names.is_empty(), "{names:?}"),
            }
            // An observation whose dump did not digest a table it left out is not whole.
            if let Some((_, fewer)) = dump.observed.split_first() {
                let partial = observe_copy_but_dumped(&path).unwrap();
                assert!(partial.complete(fewer).is_err(), "schema {i}");
            }
            remove_side_files(&path);
        }
    }

    #[test]
    fn a_kept_rebuild_is_brought_up_to_date_and_one_that_does_not_prove_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.db");
        let c = Connection::open(&copy).unwrap();
        c.execute_batch(
            "CREATE TABLE t(k TEXT, v); CREATE INDEX tk ON t(k);
             INSERT INTO t VALUES ('apple', 1), ('berry', 2), ('cherry', 3);",
        )
        .unwrap();
        drop(c);
        let change = |sql: &str| {
            let c = Connection::open(&copy).unwrap();
            c.execute_batch(sql).unwrap();
        };
        let kept = Kept::new(&dir.path().join("rebuilds"), "db", "data");
        let (dump, digest, how) = proven_kept(&copy, dir.path(), None, Some(&kept));
        assert_eq!(how, Rebuild::Whole);
        let earlier = |dump: &Dump, digest| Proven {
            dump_blake3: dump.blake3,
            digest,
        };

        // A change: the kept rebuild is brought up to date, and kept again.
        change("UPDATE t SET v = 20 WHERE k = 'berry'; INSERT INTO t VALUES ('date', 4);");
        let last = earlier(&dump, digest);
        let (dump, digest, how) = proven_kept(&copy, dir.path(), Some(&last), Some(&kept));
        assert_eq!(how, Rebuild::Updated);

        // The kept rebuild damaged in a way its record cannot see (the bytes of an index
        // entry of a row that does not change, as a disk might): brought up to date, it
        // does not prove; the dump is rebuilt whole, proves, and that rebuild is kept.
        crate::jellyfin::observe::tests::damage_index(kept.file(), "tk", b"apple", b"apqle");
        kept.restamp();
        change("UPDATE t SET v = 30 WHERE k = 'cherry';");
        let last = earlier(&dump, digest);
        let (dump, digest, how) = proven_kept(&copy, dir.path(), Some(&last), Some(&kept));
        assert_eq!(how, Rebuild::Whole);
        change("UPDATE t SET v = 31 WHERE k = 'cherry';");
        let last = earlier(&dump, digest);
        let (dump, digest, how) = proven_kept(&copy, dir.path(), Some(&last), Some(&kept));
        assert_eq!(how, Rebuild::Updated, "the new rebuild was kept");

        // Damaged where the update must write (the entry of a changed row): the update
        // fails, and the dump is rebuilt whole.
        crate::jellyfin::observe::tests::damage_index(kept.file(), "tk", b"cherry", b"aherry");
        kept.restamp();
        change("UPDATE t SET v = 32 WHERE k = 'cherry';");
        let last = earlier(&dump, digest);
        let (_, digest, how) = proven_kept(&copy, dir.path(), Some(&last), Some(&kept));
        assert_eq!(how, Rebuild::Whole);

        // Kept for another proof than the parent's: not used.
        change("UPDATE t SET v = 40 WHERE k = 'apple';");
        let other = Proven {
            dump_blake3: [9; 32],
            digest,
        };
        let (_, _, how) = proven_kept(&copy, dir.path(), Some(&other), Some(&kept));
        assert_eq!(how, Rebuild::Whole);

        // Written since it was kept (its ctime moved): not used.
        change("UPDATE t SET v = 41 WHERE k = 'apple';");
        let (dump, digest, _) = proven_kept(&copy, dir.path(), None, Some(&kept));
        let c = Connection::open(kept.file()).unwrap();
        c.execute_batch("UPDATE t SET v = 'edited' WHERE k = 'date';")
            .unwrap();
        drop(c);
        remove_side_files(kept.file());
        change("UPDATE t SET v = 42 WHERE k = 'apple';");
        let last = earlier(&dump, digest);
        let (dump, digest, how) = proven_kept(&copy, dir.path(), Some(&last), Some(&kept));
        assert_eq!(how, Rebuild::Whole);

        // A journal beside it (an update killed before it finished): not used, and gone
        // once a new rebuild is kept (SQLite would replay it into that one).
        let mut journal = kept.file().as_os_str().to_os_string();
        journal.push("-journal");
        std::fs::write(&journal, b"an update that did not finish").unwrap();
        let mut wal = kept.file().as_os_str().to_os_string();
        wal.push("-wal");
        std::fs::create_dir(&wal).unwrap(); // whatever it has become
        change("UPDATE t SET v = 43 WHERE k = 'apple';");
        let last = earlier(&dump, digest);
        let (dump, digest, how) = proven_kept(&copy, dir.path(), Some(&last), Some(&kept));
        assert_eq!(how, Rebuild::Whole);
        assert!(!Path::new(&journal).exists() && !Path::new(&wal).exists());
        change("UPDATE t SET v = 44 WHERE k = 'apple';");
        let last = earlier(&dump, digest);
        let (_, _, how) = proven_kept(&copy, dir.path(), Some(&last), Some(&kept));
        assert_eq!(how, Rebuild::Updated);
    }

    #[test]
    fn an_earlier_proof_is_reused_only_for_the_same_dump_and_observation() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.db");
        let c = Connection::open(&copy).unwrap();
        c.execute_batch("CREATE TABLE t(x PRIMARY KEY, y); INSERT INTO t VALUES (1, 'a');")
            .unwrap();
        drop(c);
        let (dump, digest, reused) = proven(&copy, dir.path(), None);
        assert!(!reused);
        let earlier = Proven {
            dump_blake3: dump.blake3,
            digest,
        };
        let (again, d, reused) = proven(&copy, dir.path(), Some(&earlier));
        assert!(reused, "the same dump and observation");
        assert_eq!((again.blake3, d), (dump.blake3, digest));

        // The same dump said to have been proven to another observation: rebuilt.
        let other = Proven {
            dump_blake3: dump.blake3,
            digest: [7; 32],
        };
        let (_, d, reused) = proven(&copy, dir.path(), Some(&other));
        assert!(!reused);
        assert_eq!(d, digest);

        // Another dump: rebuilt.
        let c = Connection::open(&copy).unwrap();
        c.execute("INSERT INTO t VALUES (2, 'b')", []).unwrap();
        drop(c);
        let (changed, _, reused) = proven(&copy, dir.path(), Some(&earlier));
        assert!(!reused);
        assert_ne!(changed.blake3, dump.blake3);
    }
}
