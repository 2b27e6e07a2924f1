//! Is what is in the destination already the snapshot's? Plain files by size and mtime,
//! physical database copies by their chunks, logical ones by their dump's chunks or by
//! the observation the backup proved. Looking changes nothing: databases are opened as
//! immutable (no `-wal`/`-shm` created, no lock taken), so a dry run is harmless.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use super::side_path;
use crate::format::chunker::Chunker;
use crate::format::snapshot::Verified;
use crate::format::tree::ChunkRef;
use crate::id::ChunkId;
use crate::jellyfin::{logical, sqlite};

/// Does the file at `path` hold exactly these chunks?
pub(super) fn same_content(path: &Path, chunks: &[ChunkRef], chunker: &Chunker) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    same_chunks(&mut f, chunks, chunker)
}

/// Does `r` chunk into exactly `chunks`? Stops reading at the first difference.
fn same_chunks(r: &mut impl Read, chunks: &[ChunkRef], chunker: &Chunker) -> bool {
    let mut buf = Vec::new();
    let mut i = 0usize;
    let res = chunker.chunk_reader(r, &mut buf, |data| {
        if chunks.get(i).map(|c| c.id) != Some(ChunkId::of(data)) {
            return Err(());
        }
        i += 1;
        Ok(())
    });
    i == chunks.len() && matches!(res, Ok(Ok(_)))
}

/// Does the database at `path` dump (logically) to exactly these chunks? The server is
/// stopped for an in-place restore; a database with a non-empty `-wal` or a `-journal`
/// beside it differs by definition (restore removes those side files, so the main file
/// alone would have to match), and the main file is then read as immutable: SQLite
/// creates no `-wal`/`-shm` and takes no lock, so looking (a dry run) changes nothing.
pub(super) fn same_logical(path: &Path, chunks: &[ChunkRef], chunker: &Chunker) -> bool {
    let Some(wal) = stopped_main_file(path) else {
        return false;
    };
    let intact = sqlite::open_immutable(path).is_ok_and(|c| {
        c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .is_ok_and(|v| v == "ok")
    });
    if !intact {
        return false;
    }
    let Ok((mut reader, mut writer)) = std::io::pipe() else {
        return false;
    };
    let db = path.to_path_buf();
    // The dump streams through a pipe into the chunker: no copy of it is kept.
    let Ok(dumper) = std::thread::Builder::new()
        .name("jellysnap-compare".into())
        .spawn(move || -> bool {
            let Ok(conn) = sqlite::open_immutable(&db) else {
                return false;
            };
            logical::dump_as(&conn, &mut writer, Some(wal)).is_ok()
        })
    else {
        return false;
    };
    let same = same_chunks(&mut reader, chunks, chunker);
    drop(reader); // a dumper still writing gets EPIPE and stops
    let dumped = dumper.join().unwrap_or(false);
    same && dumped
}

/// For a database that only its main file describes (no non-empty `-wal`, no
/// `-journal`): whether it is in WAL mode. File format bytes 18-19 are 2 in a WAL-mode
/// database; read with plain I/O, as this process holds no SQLite connection (and so no
/// lock) to it.
fn stopped_main_file(path: &Path) -> Option<bool> {
    if fs::symlink_metadata(side_path(path, "-wal")).is_ok_and(|m| m.len() > 0)
        || fs::symlink_metadata(side_path(path, "-journal")).is_ok()
    {
        return None;
    }
    let mut header = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .ok()?;
    Some(header[18] == 2)
}

/// Does the live database at `path` show exactly the observation (digest, hex) its
/// backup proved? Read as immutable, like `same_logical`.
pub(super) fn same_observed(path: &Path, proof: &Verified) -> bool {
    let Some(wal) = stopped_main_file(path) else {
        return false;
    };
    let Ok(conn) = sqlite::open_immutable(path) else {
        return false;
    };
    crate::jellyfin::observe::observe_as(&conn, Some(wal), proof.observation)
        .is_ok_and(|o| crate::id::hex(&o.digest()) == proof.digest)
}
