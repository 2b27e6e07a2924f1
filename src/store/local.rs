//! A store in a local directory (docs/FORMAT.md, "Repository layout"):
//! `config`, `snapshots/<id>`, `packs/<xx>/<id>`, `trees/<xx>/<id>` (tree packs, format 2),
//! `gc-in-progress`, `leases/<id>`,
//! `gc-pending`, `pack-epoch`, with scratch files
//! in `tmp/`. Atomic writes are temp file, fsync, rename, fsync of the directory
//! ([`durable`]); staged packs are built in `tmp/`, on the same file system, so that the
//! final rename is atomic.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::id::{PackId, SnapshotId};
use crate::store::durable::{self, EntryKind, Fs, FsRead, StdFs};
use crate::store::{Key, Kind, LeaseId, Staged, Store};

/// The directories `init` creates before the config is written: the objects' own, and
/// the repository's local index, locks and scratch space.
const SKELETON: [&str; 5] = ["packs", "snapshots", "index", "locks", "tmp"];

pub struct LocalStore {
    root: PathBuf,
    fs: Arc<dyn Fs>,
    /// Tells this store's cached pack handles from another's (see `open_cached`).
    id: u64,
    /// Pack directories this store has made durable in their parent (one fsync each per
    /// run, not one per pack).
    durable_dirs: Mutex<HashSet<PathBuf>>,
}

impl LocalStore {
    pub fn new(root: &Path) -> Self {
        Self::on(Arc::new(StdFs), root)
    }

    /// A store at `root` on the file system `fs`.
    pub fn on(fs: Arc<dyn Fs>, root: &Path) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        LocalStore {
            root: root.to_path_buf(),
            fs,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            durable_dirs: Mutex::new(HashSet::new()),
        }
    }

    fn path(&self, key: Key) -> PathBuf {
        match key {
            Key::Config => self.root.join("config"),
            Key::Snapshot(id) => self.root.join("snapshots").join(id.to_hex()),
            Key::Pack(id) => {
                let hex = id.to_hex();
                self.root.join("packs").join(&hex[..2]).join(hex)
            }
            Key::TreePack(id) => {
                let hex = id.to_hex();
                self.root.join("trees").join(&hex[..2]).join(hex)
            }
            Key::GcMarker => self.root.join("gc-in-progress"),
            Key::Lease(id) => self.root.join("leases").join(id.to_hex()),
            Key::GcPending => self.root.join("gc-pending"),
            Key::PackEpoch => self.root.join("pack-epoch"),
            Key::Damaged(id) => self.root.join("damaged").join(id.to_hex()),
        }
    }

    /// Open a pack for reading; each thread keeps its most recent pack open, since reads
    /// of one file or directory mostly hit the same pack. A hit compares the key and the
    /// store's id only: no path is built per chunk read, and a handle is never shared
    /// between two stores (the crash tests open a new one on each simulated restart).
    fn open_cached(&self, key: Key) -> std::io::Result<Arc<dyn FsRead>> {
        type Last = Option<(u64, Key, Arc<dyn FsRead>)>;
        thread_local! {
            static LAST: std::cell::RefCell<Last> =
                const { std::cell::RefCell::new(None) };
        }
        let cached = LAST.with(|l| {
            l.borrow()
                .as_ref()
                .filter(|(id, k, _)| *k == key && *id == self.id)
                .map(|(_, _, f)| f.clone())
        });
        if let Some(f) = cached {
            return Ok(f);
        }
        let f = self.fs.open_read(&self.path(key))?;
        LAST.with(|l| *l.borrow_mut() = Some((self.id, key, f.clone())));
        Ok(f)
    }

    /// Make a pack directory exist, durably, once per run.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        let mut done = self
            .durable_dirs
            .lock()
            .map_err(|_| Error::internal("the pack directory set was poisoned"))?;
        if !done.contains(dir) {
            durable::create_dir_durable_on(self.fs.as_ref(), dir)?;
            done.insert(dir.to_path_buf());
        }
        Ok(())
    }

    /// True for an empty directory, or one holding only what an `init` that was
    /// interrupted before writing `config` leaves (empty skeleton directories, temp files).
    fn empty_or_interrupted_init(&self) -> Result<bool> {
        let path = &self.root;
        for (name, kind) in self.fs.list(path).at(path)? {
            if name.starts_with(".tmp-") {
                continue;
            }
            if !SKELETON.contains(&name.as_str()) || kind != EntryKind::Dir {
                return Ok(false);
            }
            // Only the index and the locks may hold files (RocksDB creates them on open);
            // nothing that a repository's data lives in.
            let sub = path.join(&name);
            if name != "index" && name != "locks" && !self.fs.list(&sub).at(&sub)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The objects named in `dir` that `parse` accepts (anything else is the temp file of
    /// an interrupted write), with their sizes. An object removed between the listing
    /// and its stat (a gc elsewhere) is left out.
    fn list_dir(&self, dir: &Path, parse: impl Fn(&str) -> Option<Key>) -> Result<Vec<(Key, u64)>> {
        let mut out = Vec::new();
        let names = match self.fs.list(dir) {
            Ok(n) => n,
            // Leases and damage records are made on first use.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && (dir.ends_with("leases") || dir.ends_with("damaged")) =>
            {
                return Ok(out)
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        for (name, _) in names {
            let Some(key) = parse(&name) else { continue };
            let path = dir.join(&name);
            match self.fs.len(&path) {
                Ok(len) => out.push((key, len)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(out)
    }

    /// The packs under `top` (`packs` or `trees`), named by `key`. `trees/` is made with
    /// its first pack: a repository without one has none.
    fn list_packs(&self, top: &str, key: fn(PackId) -> Key) -> Result<Vec<(Key, u64)>> {
        let dir = self.root.join(top);
        let mut out = Vec::new();
        let subs = match self.fs.list(&dir) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && top == "trees" => return Ok(out),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let subs: Vec<String> = subs
            .into_iter()
            .filter(|(_, kind)| *kind == EntryKind::Dir)
            .map(|(sub, _)| sub)
            .collect();
        // Up to 256 directories, each read cold at every writer's open: read together.
        let listed = super::map_parallel(&subs, |sub| {
            self.list_dir(&dir.join(sub), |n| PackId::from_hex(n).map(key))
        });
        for packs in listed {
            out.extend(packs?);
        }
        Ok(out)
    }
}

impl Store for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: Key, bytes: &[u8]) -> Result<()> {
        match key {
            Key::Lease(_) => self.ensure_dir(&self.root.join("leases"))?,
            Key::Damaged(_) => self.ensure_dir(&self.root.join("damaged"))?,
            _ => {}
        }
        durable::write_atomic(self.fs.as_ref(), &self.path(key), bytes)
    }

    fn put_new(&self, key: Key, bytes: &[u8]) -> Result<bool> {
        // One host's writers exclude each other with the local locks; this store is not
        // shared by hosts that would race here.
        if self.exists(key)? {
            return Ok(false);
        }
        self.put(key, bytes)?;
        Ok(true)
    }

    fn conditional_writes(&self) -> bool {
        false
    }

    fn init(&self) -> Result<()> {
        let path = &self.root;
        // A link to nothing: the repository would not be made where the link points.
        if let (Ok(target), Err(e)) = (std::fs::read_link(path), std::fs::metadata(path)) {
            if e.kind() == std::io::ErrorKind::NotFound {
                return Err(Error::RepositoryLinkDangling {
                    path: path.clone(),
                    target,
                });
            }
        }
        let exists = match self.fs.kind(path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        if exists && !self.empty_or_interrupted_init()? {
            return Err(Error::InitNotEmpty(path.to_path_buf()));
        }
        let fs = self.fs.as_ref();
        durable::create_dir_durable_on(fs, path)?;
        for d in SKELETON {
            durable::create_dir_durable_on(fs, &path.join(d))?;
        }
        Ok(())
    }

    fn stage(&self, scratch: &Path) -> Result<Staged> {
        Staged::create_direct(self.fs.clone(), scratch)
    }

    fn put_staged(&self, key: Key, staged: Staged) -> Result<()> {
        let (mut file, tmp) = staged.finish()?;
        file.sync().at(tmp.path())?;
        drop(file);
        let path = self.path(key);
        let dir = durable::parent_dir(&path);
        self.ensure_dir(dir)?;
        self.fs
            .rename(tmp.path(), &path)
            .map_err(|e| Error::io(&path, e))?;
        tmp.persisted();
        durable::sync_dir_on(self.fs.as_ref(), dir)
    }

    fn get(&self, key: Key) -> Result<Vec<u8>> {
        let path = self.path(key);
        self.fs.read(&path).at(&path)
    }

    fn read_shape(&self) -> crate::store::ReadShape {
        crate::store::ReadShape::LOCAL
    }

    fn read_at(&self, key: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.open_cached(key)
            .and_then(|f| f.read_exact_at(buf, offset))
            .map_err(|e| Error::io(self.path(key), e))
    }

    fn read_into(&self, key: Key, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<usize> {
        // Reads of a few records are left to the cache; a run of many goes direct when
        // it is not cached, as whole blocks into an aligned place in `buf`.
        const DIRECT_MIN: usize = 64 << 10;
        const ALIGN: u64 = durable::DIRECT_ALIGN as u64;
        let f = self
            .open_cached(key)
            .map_err(|e| Error::io(self.path(key), e))?;
        let first = offset / ALIGN * ALIGN;
        let end = offset.saturating_add(len as u64).div_ceil(ALIGN) * ALIGN;
        let lead = (offset - first) as usize;
        let blocks = usize::try_from(end - first).unwrap_or(usize::MAX);
        if len >= DIRECT_MIN && blocks < usize::MAX - durable::DIRECT_ALIGN {
            let want = blocks + durable::DIRECT_ALIGN;
            if buf.capacity() < want {
                buf.reserve_exact(want - buf.len());
            }
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let at = buf
                .as_ptr()
                .align_offset(durable::DIRECT_ALIGN)
                .min(durable::DIRECT_ALIGN);
            let read = f
                .read_uncached_at(&mut buf[at..at + blocks], first)
                .map_err(|e| Error::io(self.path(key), e))?;
            if read.is_some_and(|n| n >= lead + len) {
                return Ok(at + lead);
            }
        }
        if buf.capacity() < len {
            buf.reserve_exact(len - buf.len());
        }
        buf.resize(len, 0);
        f.read_exact_at(buf, offset)
            .map_err(|e| Error::io(self.path(key), e))?;
        Ok(0)
    }

    fn read_tail(&self, key: Key, len: u64) -> Result<(Vec<u8>, u64)> {
        let path = self.path(key);
        let f = self.open_cached(key).map_err(|e| Error::io(&path, e))?;
        let size = self.fs.len(&path).at(&path)?;
        let n = len.min(size);
        let mut buf = vec![0u8; usize::try_from(n).map_err(|_| Error::internal("tail too long"))?];
        f.read_exact_at(&mut buf, size - n).at(&path)?;
        Ok((buf, size))
    }

    fn size(&self, key: Key) -> Result<u64> {
        let path = self.path(key);
        self.fs.len(&path).at(&path)
    }

    fn exists(&self, key: Key) -> Result<bool> {
        let path = self.path(key);
        match self.fs.kind(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn list(&self, kind: Kind) -> Result<Vec<(Key, u64)>> {
        match kind {
            Kind::Snapshot => self.list_dir(&self.root.join("snapshots"), |n| {
                SnapshotId::from_hex(n).map(Key::Snapshot)
            }),
            Kind::Pack => self.list_packs("packs", Key::Pack),
            Kind::TreePack => self.list_packs("trees", Key::TreePack),
            Kind::Lease => self.list_dir(&self.root.join("leases"), |n| {
                LeaseId::from_hex(n).map(Key::Lease)
            }),
            Kind::Damaged => self.list_dir(&self.root.join("damaged"), |n| {
                PackId::from_hex(n).map(Key::Damaged)
            }),
        }
    }

    fn delete(&self, key: Key) -> Result<()> {
        let path = self.path(key);
        match self.fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        durable::sync_dir_on(self.fs.as_ref(), durable::parent_dir(&path))
    }

    fn sync_visible(&self) -> Result<()> {
        // Packs need nothing: one left visible is unindexed until a later run puts it
        // again (synced), and gc treats an unindexed copy as a spare.
        let fs = self.fs.as_ref();
        durable::sync_dir_on(fs, &self.root)?;
        durable::sync_dir_on(fs, &self.root.join("snapshots"))
    }

    fn clear_scratch(&self, scratch: &Path) {
        clear_scratch_on(self.fs.as_ref(), scratch);
    }

    fn remove_leftovers(&self) -> Result<u64> {
        let mut n = 0;
        // Temp files of interrupted atomic writes, beside the objects.
        let mut dirs = vec![
            self.root.join("snapshots"),
            self.root.join("leases"),
            self.root.clone(),
        ];
        for top in ["packs", "trees"] {
            let packs = self.root.join(top);
            if let Ok(subs) = self.fs.list(&packs) {
                dirs.extend(
                    subs.into_iter()
                        .filter(|(_, k)| *k == EntryKind::Dir)
                        .map(|(name, _)| packs.join(name)),
                );
            }
        }
        for d in dirs {
            n += remove_matching(self.fs.as_ref(), &d, &[".tmp-"]);
        }
        Ok(n)
    }

    fn describe(&self, key: Key) -> String {
        self.path(key).display().to_string()
    }
}

/// Empty a repository's scratch directory of what a process that died left: packs being
/// staged, database captures, their rebuilds, row lists and private copies.
pub fn clear_scratch_on(fs: &dyn Fs, scratch: &Path) {
    remove_matching(
        fs,
        scratch,
        &[
            "pack-",
            "db-capture-",
            "db-rebuild-",
            "db-rows-",
            "db-source-",
        ],
    );
}

/// Remove the files (and directories) of `dir` whose names start with one of
/// `prefixes`; how many.
fn remove_matching(fs: &dyn Fs, dir: &Path, prefixes: &[&str]) -> u64 {
    let Ok(entries) = fs.list(dir) else { return 0 };
    let mut n = 0;
    for (name, kind) in entries {
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let path = dir.join(&name);
        let removed = match kind {
            EntryKind::Dir => fs.remove_dir_all(&path),
            _ => fs.remove_file(&path),
        };
        if removed.is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// The contract of [`Store`], as any implementation must keep it.
    pub(crate) fn check_contract(store: &dyn Store, scratch: &Path) {
        store.init().unwrap();
        let keys = |kind| -> Vec<Key> {
            store
                .list(kind)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        let snap = Key::Snapshot(SnapshotId::of(b"record"));
        assert!(!store.exists(snap).unwrap());
        store.put(snap, b"record").unwrap();
        assert!(store.exists(snap).unwrap());
        assert_eq!(store.get(snap).unwrap(), b"record");
        assert_eq!(store.size(snap).unwrap(), 6);
        assert_eq!(store.list(Kind::Snapshot).unwrap(), vec![(snap, 6)]);

        // A staged object is invisible until it is put, and then whole.
        let mut staged = store.stage(scratch).unwrap();
        staged.write(b"pack ").unwrap();
        staged.write(b"bytes").unwrap();
        assert_eq!(staged.written(), 10);
        let pack = Key::Pack(PackId(*blake3::hash(b"pack bytes").as_bytes()));
        assert!(keys(Kind::Pack).is_empty());
        store.put_staged(pack, staged).unwrap();
        assert_eq!(store.list(Kind::Pack).unwrap(), vec![(pack, 10)]);
        let mut buf = [0u8; 5];
        store.read_at(pack, 5, &mut buf).unwrap();
        assert_eq!(&buf, b"bytes");
        assert_eq!(store.read_tail(pack, 3).unwrap(), (b"tes".to_vec(), 10));
        assert_eq!(
            store.read_tail(pack, 99).unwrap(),
            (b"pack bytes".to_vec(), 10)
        );
        assert!(
            store.read_at(pack, 8, &mut buf).is_err(),
            "a short read fails"
        );

        // Ranges read into a buffer of the reader's give the object's bytes wherever they
        // start and end, large ones too (which a local store reads past the page cache,
        // in whole blocks around them); one that runs past the end fails.
        let big: Vec<u8> = (0..300_007u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut staged = store.stage(scratch).unwrap();
        staged.write(&big).unwrap();
        let big_pack = Key::Pack(PackId(*blake3::hash(&big).as_bytes()));
        store.put_staged(big_pack, staged).unwrap();
        let mut into = Vec::new();
        for (offset, len) in [
            (0, 5),
            (0, 70_000),
            (1, 65_536),
            (4095, 200_001),
            (8192, 4096 * 16),
            (123_457, big.len() - 123_457),
            (big.len() - 7, 7),
        ] {
            let at = store
                .read_into(big_pack, offset as u64, len, &mut into)
                .unwrap();
            assert!(
                into[at..at + len] == big[offset..offset + len],
                "{len} bytes at {offset}"
            );
        }
        assert!(
            store
                .read_into(big_pack, 240_000, 70_000, &mut into)
                .is_err(),
            "a read past the end fails"
        );
        store.delete(big_pack).unwrap();

        // A staged object that is dropped leaves nothing behind.
        let mut dropped = store.stage(scratch).unwrap();
        dropped.write(b"never put").unwrap();
        drop(dropped);
        assert_eq!(keys(Kind::Pack), vec![pack]);

        // A lease is created only where none is.
        let lease = Key::Lease(LeaseId::random());
        assert!(keys(Kind::Lease).is_empty());
        assert!(store.put_new(lease, b"mine").unwrap());
        assert!(!store.put_new(lease, b"theirs").unwrap());
        assert_eq!(store.get(lease).unwrap(), b"mine");
        assert_eq!(keys(Kind::Lease), vec![lease]);
        store.delete(lease).unwrap();
        assert!(keys(Kind::Lease).is_empty());

        store.delete(pack).unwrap();
        store.delete(pack).unwrap();
        assert!(keys(Kind::Pack).is_empty());
        let missing = store.get(pack).unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
        assert!(
            store.init().is_err(),
            "init refuses a store holding objects"
        );
    }

    #[test]
    fn the_local_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(&dir.path().join("repo"));
        check_contract(&store, &dir.path().join("repo/tmp"));
        // Temp files of interrupted writes are never listed, and are removed.
        let tmp = dir.path().join("repo/snapshots/.tmp-abc");
        fs::write(&tmp, b"half").unwrap();
        assert_eq!(store.list(Kind::Snapshot).unwrap().len(), 1);
        assert_eq!(store.remove_leftovers().unwrap(), 1);
        assert!(!tmp.exists());
        // What a killed backup leaves in the scratch space goes; anything else stays.
        let scratch = dir.path().join("repo/tmp");
        for f in [
            "pack-1",
            "db-capture-2",
            "db-rebuild-3",
            "db-rebuild-3-journal",
            "db-rows-5",
            "keep",
        ] {
            fs::write(scratch.join(f), b"x").unwrap();
        }
        fs::create_dir(scratch.join("db-source-4")).unwrap();
        fs::write(scratch.join("db-source-4/db"), b"x").unwrap();
        store.clear_scratch(&scratch);
        let left: Vec<_> = fs::read_dir(&scratch)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["keep"]);
    }
}
