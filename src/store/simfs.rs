//! A simulated file system for the crash tests (the `test-hooks` feature only): the local
//! store runs on it through [`Fs`], and a simulated crash keeps only what a real disk
//! would have kept. A test killing the process cannot show a missing fsync, since the
//! page cache keeps every write; this can.
//!
//! Every file and directory has a durable state and a current one. A file's writes since
//! its last fsync, and a directory's entry changes (create, rename, unlink) since its last
//! fsync, are volatile. [`SimFs::crash`] decides what of the volatile state survives:
//! nothing, some of it in order with the last write torn at a sector boundary, or any
//! sectors at all, seeded so that a failure can be replayed. Whatever a directory no
//! longer names is gone, with everything under it.
//!
//! The chunk index lives beside it, in memory: its inserts and removals are synced writes
//! (as RocksDB's with a synced WAL are), so each one is durable when it returns and
//! survives every crash.
//!
//! Every operation that changes something (and every index write) has a number;
//! [`SimFs::crash_at`] makes the n-th one fail, after which every operation fails: the
//! process is dead, and its threads stop on their errors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::format::config::RepoConfig;
use crate::id::{ChunkId, PackId};
use crate::store::durable::{EntryKind, Fs, FsFile, FsRead};
use crate::store::index::{ChunkIndex, IndexEntry};
use crate::store::local::LocalStore;
use crate::store::repo::{Access, Repository};
use crate::store::{Key, Store};

/// The granularity at which an unsynced write can be torn.
const SECTOR: u64 = 512;
const ROOT: u64 = 0;

/// What a simulated crash keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// The process dies and the kernel keeps everything it was given (what a SIGKILL
    /// does): nothing is lost, nothing more becomes durable.
    Kill,
    /// The power goes: only what was synced is left.
    PowerCut,
    /// The power goes; of what was not synced, each directory keeps its changes up to a
    /// random one, each file its writes up to a random one, that one torn at a sector.
    PowerCutInOrder,
    /// The power goes; each unsynced sector of each file is kept or lost at random
    /// (directories as in order).
    PowerCutTorn,
}

#[derive(Default)]
struct FileNode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last fsync: offset and length.
    unsynced: Vec<(u64, u64)>,
}

/// An entry change: the name now names this node, or nothing.
type Change = (String, Option<u64>);

#[derive(Default)]
struct DirNode {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    /// Changes since the last fsync, each atomic (a rename inside the directory is one).
    unsynced: Vec<Vec<Change>>,
}

enum Node {
    File(FileNode),
    Dir(DirNode),
}

struct State {
    nodes: HashMap<u64, Node>,
    next_node: u64,
    next_temp: u64,
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
}

fn dead() -> io::Error {
    io::Error::other("simulated crash: the process is dead")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

/// A small seeded generator (splitmix64): the crash's choices replay from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=n`.
    fn up_to(&mut self, n: usize) -> usize {
        (self.next() % (n as u64 + 1)) as usize
    }
}

/// The pieces of a write at `off` of `len` bytes, split at sector boundaries.
fn sectors(off: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = off + len;
    let mut at = off;
    std::iter::from_fn(move || {
        (at < end).then(|| {
            let piece = (at, (at / SECTOR + 1).saturating_mul(SECTOR).min(end));
            at = piece.1;
            piece
        })
    })
}

/// Copy `data[from..to]` into `into`, growing it (with zeros) as needed.
fn apply(into: &mut Vec<u8>, data: &[u8], (from, to): (u64, u64)) {
    let (from, to) = (from as usize, to as usize);
    if into.len() < to {
        into.resize(to, 0);
    }
    if let (Some(dst), Some(src)) = (into.get_mut(from..to), data.get(from..to)) {
        dst.copy_from_slice(src);
    }
}

impl State {
    /// Count one operation: fails at the planned crash and ever after.
    fn step(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(dead());
        }
        self.ops += 1;
        if self.crash_at == Some(self.ops) {
            self.crashed = true;
            return Err(dead());
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(dead())
        } else {
            Ok(())
        }
    }

    fn dir(&self, node: u64) -> Option<&DirNode> {
        match self.nodes.get(&node) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn dir_mut(&mut self, node: u64) -> Option<&mut DirNode> {
        match self.nodes.get_mut(&node) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn file(&self, node: u64, path: &Path) -> io::Result<&FileNode> {
        match self.nodes.get(&node) {
            Some(Node::File(f)) => Ok(f),
            _ => Err(io::Error::other(format!("{}: not a file", path.display()))),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let mut at = ROOT;
        for c in path.components() {
            match c {
                Component::RootDir => at = ROOT,
                Component::Normal(name) => {
                    let d = self.dir(at).ok_or_else(|| not_found(path))?;
                    at = *d
                        .entries
                        .get(&*name.to_string_lossy())
                        .ok_or_else(|| not_found(path))?;
                }
                _ => return Err(io::Error::other("a simulated path must be absolute")),
            }
        }
        Ok(at)
    }

    /// The directory holding `path`, and its name there.
    fn parent(&self, path: &Path) -> io::Result<(u64, String)> {
        let name = path
            .file_name()
            .ok_or_else(|| not_found(path))?
            .to_string_lossy()
            .into_owned();
        let dir = self.lookup(path.parent().ok_or_else(|| not_found(path))?)?;
        self.dir(dir).ok_or_else(|| not_found(path))?;
        Ok((dir, name))
    }

    fn change(&mut self, dir: u64, changes: Vec<Change>) {
        if let Some(d) = self.dir_mut(dir) {
            for (name, to) in &changes {
                match to {
                    Some(n) => d.entries.insert(name.clone(), *n),
                    None => d.entries.remove(name),
                };
            }
            d.unsynced.push(changes);
        }
    }

    fn add(&mut self, node: Node) -> u64 {
        self.next_node += 1;
        self.nodes.insert(self.next_node, node);
        self.next_node
    }

    fn crash(&mut self, how: Crash, seed: u64) {
        self.crashed = false;
        self.crash_at = None;
        if how == Crash::Kill {
            return;
        }
        let mut rng = Rng(seed);
        let mut ids: Vec<u64> = self.nodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            match self.nodes.get_mut(&id) {
                Some(Node::Dir(d)) => {
                    let keep = match how {
                        Crash::PowerCut | Crash::Kill => 0,
                        _ => rng.up_to(d.unsynced.len()),
                    };
                    let mut entries = std::mem::take(&mut d.durable);
                    for (name, to) in d.unsynced.drain(..).take(keep).flatten() {
                        match to {
                            Some(n) => entries.insert(name, n),
                            None => entries.remove(&name),
                        };
                    }
                    d.entries = entries.clone();
                    d.durable = entries;
                }
                Some(Node::File(f)) => {
                    let mut content = std::mem::take(&mut f.durable);
                    match how {
                        Crash::PowerCut | Crash::Kill => {}
                        Crash::PowerCutInOrder => {
                            let whole = rng.up_to(f.unsynced.len());
                            for &(off, len) in f.unsynced.iter().take(whole) {
                                apply(&mut content, &f.data, (off, off + len));
                            }
                            if let Some(&(off, len)) = f.unsynced.get(whole) {
                                let pieces: Vec<_> = sectors(off, len).collect();
                                let torn = rng.up_to(pieces.len().saturating_sub(1));
                                for p in pieces.into_iter().take(torn) {
                                    apply(&mut content, &f.data, p);
                                }
                            }
                        }
                        Crash::PowerCutTorn => {
                            for &(off, len) in &f.unsynced {
                                for p in sectors(off, len) {
                                    if rng.next() & 1 == 0 {
                                        apply(&mut content, &f.data, p);
                                    }
                                }
                            }
                        }
                    }
                    f.unsynced.clear();
                    f.data = content.clone();
                    f.durable = content;
                }
                None => {}
            }
        }
        // What no directory names any more is gone.
        let mut reachable = HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(n) = todo.pop() {
            if let Some(d) = self.dir(n) {
                for &c in d.entries.values() {
                    if reachable.insert(c) {
                        todo.push(c);
                    }
                }
            }
        }
        self.nodes.retain(|n, _| reachable.contains(n));
    }
}

/// The index's entries.
type Entries = HashMap<ChunkId, IndexEntry>;

/// The simulated file system and the index beside it. Clones share them.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    index: Arc<Mutex<Entries>>,
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// An empty file system: a root directory, durable.
    pub fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        SimFs {
            state: Arc::new(Mutex::new(State {
                nodes,
                next_node: ROOT,
                next_temp: 0,
                ops: 0,
                crash_at: None,
                crashed: false,
            })),
            index: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread leaves the state as consistent as any operation does.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Create `dir` and its parents, durably: what exists before a test starts.
    pub fn mkdir_durable(&self, dir: &Path) {
        let mut s = self.lock();
        let mut at = ROOT;
        for c in dir.components() {
            let Component::Normal(name) = c else { continue };
            let name = name.to_string_lossy().into_owned();
            let existing = s.dir(at).and_then(|d| d.entries.get(&name).copied());
            at = match existing {
                Some(n) => n,
                None => {
                    let n = s.add(Node::Dir(DirNode::default()));
                    if let Some(d) = s.dir_mut(at) {
                        d.entries.insert(name.clone(), n);
                        d.durable.insert(name, n);
                    }
                    n
                }
            };
        }
    }

    /// Operations counted so far (the numbers [`SimFs::crash_at`] takes).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Make operation number `op` (counted from the first ever) fail and stop everything.
    pub fn crash_at(&self, op: u64) {
        self.lock().crash_at = Some(op);
    }

    /// Whether the planned crash has happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Crash now: keep what `how` keeps of the volatile state (choices drawn from `seed`),
    /// make it all durable, and come back up with nothing planned.
    pub fn crash(&self, how: Crash, seed: u64) {
        self.lock().crash(how, seed);
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The packs the index names, sorted: after a crash, each must still be there (an
    /// entry is written only once its pack is durable, and removed before it goes).
    pub fn indexed_packs(&self) -> Vec<PackId> {
        let mut packs: Vec<PackId> = self.entries().values().map(|e| e.pack).collect();
        packs.sort_unstable();
        packs.dedup();
        packs
    }

    /// Create a repository at `path` as `jellysnap init` does, sealing packs at
    /// `pack_target_bytes` (small in tests, so that a few files make many packs).
    pub fn init_repository(&self, path: &Path, pack_target_bytes: u64) -> Result<()> {
        let store = LocalStore::on(Arc::new(self.clone()), path);
        if store.exists(Key::Config)? {
            return Err(Error::AlreadyInitialized {
                path: path.to_path_buf(),
            });
        }
        store.init()?;
        let mut cfg = RepoConfig::new_default([7; 16]);
        cfg.pack_target_bytes = pack_target_bytes;
        store.put(Key::Config, &cfg.encode()?)
    }

    /// Open the repository at `path` as a new process would: a new store (no handle
    /// survives from before a crash) on this file system and its index.
    pub fn open_repository(&self, path: &Path, access: Access) -> Result<Repository> {
        let store: Arc<dyn Store> = Arc::new(LocalStore::on(Arc::new(self.clone()), path));
        let index = Arc::new(SimIndex { fs: self.clone() });
        Repository::on_store(path, store, index, access)
    }
}

impl Fs for SimFs {
    fn create_temp(&self, dir: &Path, prefix: &str) -> io::Result<(Box<dyn FsFile>, PathBuf)> {
        let mut s = self.lock();
        s.step()?;
        let d = s.lookup(dir)?;
        s.dir(d).ok_or_else(|| not_found(dir))?;
        s.next_temp += 1;
        let name = format!("{prefix}{}", s.next_temp);
        let node = s.add(Node::File(FileNode::default()));
        s.change(d, vec![(name.clone(), Some(node))]);
        let file = SimFile {
            state: self.state.clone(),
            node,
        };
        Ok((Box::new(file), dir.join(name)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        let node = s.lookup(from)?;
        let (fd, fname) = s.parent(from)?;
        let (td, tname) = s.parent(to)?;
        if fd == td {
            s.change(fd, vec![(fname, None), (tname, Some(node))]);
        } else {
            s.change(fd, vec![(fname, None)]);
            s.change(td, vec![(tname, Some(node))]);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        let n = s.lookup(dir)?;
        let d = s.dir_mut(n).ok_or_else(|| not_found(dir))?;
        d.durable = d.entries.clone();
        d.unsynced.clear();
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        let (parent, name) = s.parent(dir)?;
        if s.dir(parent).is_some_and(|d| d.entries.contains_key(&name)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists", dir.display()),
            ));
        }
        let node = s.add(Node::Dir(DirNode::default()));
        s.change(parent, vec![(name, Some(node))]);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        let node = s.lookup(path)?;
        s.file(node, path)?;
        let (dir, name) = s.parent(path)?;
        s.change(dir, vec![(name, None)]);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        s.lookup(path)?;
        let (dir, name) = s.parent(path)?;
        s.change(dir, vec![(name, None)]);
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        s.alive()?;
        let n = s.lookup(path)?;
        Ok(s.file(n, path)?.data.clone())
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FsRead>> {
        let s = self.lock();
        s.alive()?;
        let node = s.lookup(path)?;
        s.file(node, path)?;
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            node,
        }))
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let s = self.lock();
        s.alive()?;
        let n = s.lookup(path)?;
        match s.nodes.get(&n) {
            Some(Node::File(f)) => Ok(f.data.len() as u64),
            _ => Ok(0),
        }
    }

    fn kind(&self, path: &Path) -> io::Result<EntryKind> {
        let s = self.lock();
        s.alive()?;
        let n = s.lookup(path)?;
        Ok(match s.nodes.get(&n) {
            Some(Node::Dir(_)) => EntryKind::Dir,
            _ => EntryKind::File,
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, EntryKind)>> {
        let s = self.lock();
        s.alive()?;
        let n = s.lookup(dir)?;
        let d = s.dir(n).ok_or_else(|| not_found(dir))?;
        Ok(d.entries
            .iter()
            .map(|(name, n)| {
                let kind = match s.nodes.get(n) {
                    Some(Node::Dir(_)) => EntryKind::Dir,
                    _ => EntryKind::File,
                };
                (name.clone(), kind)
            })
            .collect())
    }
}

/// An open simulated file, for writing or reading.
struct SimFile {
    state: Arc<Mutex<State>>,
    node: u64,
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Write for SimFile {
    /// Appends (the store only ever appends to a file it created).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.lock();
        s.step()?;
        let Some(Node::File(f)) = s.nodes.get_mut(&self.node) else {
            return Err(io::Error::other("write to a file the simulation lost"));
        };
        f.unsynced.push((f.data.len() as u64, buf.len() as u64));
        f.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsFile for SimFile {
    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        if let Some(Node::File(f)) = s.nodes.get_mut(&self.node) {
            f.durable = f.data.clone();
            f.unsynced.clear();
        }
        Ok(())
    }
}

impl FsRead for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.lock();
        s.alive()?;
        let Some(Node::File(f)) = s.nodes.get(&self.node) else {
            return Err(io::Error::other("read of a file the simulation lost"));
        };
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| f.data.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// The index of a simulated repository: every write is one counted operation, durable
/// when it returns.
struct SimIndex {
    fs: SimFs,
}

impl SimIndex {
    fn err(e: io::Error) -> Error {
        Error::Index {
            path: PathBuf::from("(simulated index)"),
            detail: e.to_string(),
        }
    }

    /// Run a write as one operation, under the file system's lock so that it is ordered
    /// with the file operations around it.
    fn write(&self, f: impl FnOnce(&mut Entries)) -> Result<()> {
        let mut s = self.fs.lock();
        s.step().map_err(Self::err)?;
        f(&mut self.fs.entries());
        Ok(())
    }
}

impl ChunkIndex for SimIndex {
    fn get(&self, id: &ChunkId) -> Result<Option<IndexEntry>> {
        self.fs.lock().alive().map_err(Self::err)?;
        Ok(self.fs.entries().get(id).copied())
    }

    fn insert(&self, entries: &[(ChunkId, IndexEntry)]) -> Result<()> {
        self.write(|m| m.extend(entries.iter().copied()))
    }

    fn remove(&self, ids: &[ChunkId]) -> Result<()> {
        self.write(|m| {
            for id in ids {
                m.remove(id);
            }
        })
    }

    fn len_estimate(&self) -> u64 {
        self.fs.entries().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::durable;

    fn sim_at(root: &Path) -> SimFs {
        let sim = SimFs::new();
        sim.mkdir_durable(root);
        sim
    }

    #[test]
    fn the_simulated_store_keeps_the_contract() {
        let root = Path::new("/sim/repo");
        let sim = sim_at(root.parent().unwrap());
        let store = LocalStore::on(Arc::new(sim), root);
        crate::store::local::tests::check_contract(&store, &root.join("tmp"));
    }

    #[test]
    fn a_power_cut_keeps_only_what_was_synced() {
        let sim = sim_at(Path::new("/r"));
        let fs: &dyn Fs = &sim;
        durable::write_atomic(fs, Path::new("/r/kept"), b"synced").unwrap();
        let (mut f, tmp) = fs.create_temp(Path::new("/r"), "t-").unwrap();
        f.write_all(b"never synced").unwrap();
        fs.rename(&tmp, Path::new("/r/lost")).unwrap();
        fs.create_dir(Path::new("/r/d")).unwrap();

        sim.crash(Crash::Kill, 0);
        assert_eq!(fs.read(Path::new("/r/lost")).unwrap(), b"never synced");

        sim.crash(Crash::PowerCut, 0);
        assert_eq!(fs.read(Path::new("/r/kept")).unwrap(), b"synced");
        let names: Vec<_> = fs.list(Path::new("/r")).unwrap();
        assert_eq!(names, [("kept".to_string(), EntryKind::File)]);
    }

    #[test]
    fn unsynced_writes_survive_in_order_or_torn_at_sectors() {
        for seed in 0..64 {
            for how in [Crash::PowerCutInOrder, Crash::PowerCutTorn] {
                let sim = sim_at(Path::new("/r"));
                let fs: &dyn Fs = &sim;
                let (mut f, tmp) = fs.create_temp(Path::new("/r"), "t-").unwrap();
                fs.sync_dir(Path::new("/r")).unwrap();
                f.write_all(&[1; 1000]).unwrap();
                f.write_all(&[2; 1000]).unwrap();
                sim.crash(how, seed);
                let got = fs.read(&tmp).unwrap();
                // Every byte is the one written there, or a hole's zero.
                for (i, b) in got.iter().enumerate() {
                    let want = if i < 1000 { 1 } else { 2 };
                    assert!(
                        *b == want || *b == 0,
                        "{how:?} seed {seed}: byte {i} is {b}"
                    );
                }
                if how == Crash::PowerCutInOrder {
                    assert!(!got.contains(&0), "in order: no holes");
                    assert!([0, 512, 1000, 1024, 1536, 2000].contains(&got.len()));
                }
            }
        }
    }

    #[test]
    fn the_nth_operation_crashes_and_everything_after_it_fails() {
        let sim = sim_at(Path::new("/r"));
        let fs: &dyn Fs = &sim;
        sim.crash_at(sim.ops() + 2);
        fs.create_dir(Path::new("/r/a")).unwrap();
        assert!(fs.create_dir(Path::new("/r/b")).is_err());
        assert!(sim.crashed());
        assert!(fs.list(Path::new("/r")).is_err());
        sim.crash(Crash::Kill, 0);
        let names: Vec<_> = fs.list(Path::new("/r")).unwrap();
        assert_eq!(names, [("a".to_string(), EntryKind::Dir)]);
    }

    /// A snapshot record removed and one added by a run killed before it synced the
    /// directory: once a writer has opened the repository, a power cut takes neither back.
    #[test]
    fn a_writer_makes_what_a_killed_run_left_visible_durable() {
        let root = Path::new("/sim/repo");
        let sim = sim_at(root.parent().unwrap());
        sim.init_repository(root, 1 << 20).unwrap();
        let store = LocalStore::on(Arc::new(sim.clone()), root);
        let gone = Key::Snapshot(crate::id::SnapshotId::of(b"forgotten"));
        let added = Key::Snapshot(crate::id::SnapshotId::of(b"added"));
        store.put(gone, b"forgotten").unwrap();
        let fs: &dyn Fs = &sim;
        fs.remove_file(Path::new(&store.describe(gone))).unwrap();
        let (mut f, tmp) = fs.create_temp(&root.join("snapshots"), ".tmp-").unwrap();
        f.write_all(b"added").unwrap();
        f.sync().unwrap();
        fs.rename(&tmp, Path::new(&store.describe(added))).unwrap();
        sim.crash(Crash::Kill, 0);
        drop(sim.open_repository(root, Access::Write).unwrap());
        sim.crash(Crash::PowerCut, 0);
        let store = LocalStore::on(Arc::new(sim.clone()), root);
        assert_eq!(
            store.list(crate::store::Kind::Snapshot).unwrap(),
            [(added, 5)]
        );
    }

    /// A pack directory made by a run that died before syncing its parent, then used by
    /// the next run: the pack put in it must survive a power cut.
    #[test]
    fn a_directory_left_by_a_killed_run_is_made_durable_before_use() {
        let root = Path::new("/sim/repo");
        let sim = sim_at(root.parent().unwrap());
        let store = LocalStore::on(Arc::new(sim.clone()), root);
        store.init().unwrap();
        let bytes = b"pack bytes";
        let pack = PackId(*blake3::hash(bytes).as_bytes());
        let dir = durable::parent_dir(Path::new(&store.describe(Key::Pack(pack)))).to_path_buf();
        // The killed run: the directory is created, its parent never synced.
        Fs::create_dir(&sim, &dir).unwrap();
        sim.crash(Crash::Kill, 0);
        // The next run puts the pack, durably.
        let store = LocalStore::on(Arc::new(sim.clone()), root);
        let mut staged = store.stage(&root.join("tmp")).unwrap();
        staged.write(bytes).unwrap();
        store.put_staged(Key::Pack(pack), staged).unwrap();
        sim.crash(Crash::PowerCut, 0);
        let store = LocalStore::on(Arc::new(sim.clone()), root);
        assert_eq!(store.get(Key::Pack(pack)).unwrap(), bytes);
    }
}
