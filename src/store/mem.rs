//! A store in memory: the smallest implementation of the [`Store`] contract, for tests
//! that need a store without a disk or a server, and as the reference the contract tests
//! hold the other stores to. Its errors are those of a local store: a missing object is
//! an I/O `NotFound`, a read past an object's end an `UnexpectedEof`.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, IoContext, Result};
use crate::store::durable::StdFs;
use crate::store::{Key, Kind, Staged, Store};

pub struct MemStore {
    name: String,
    objects: Mutex<HashMap<Key, Arc<Vec<u8>>>>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        MemStore {
            name: format!("mem:{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            objects: Mutex::new(HashMap::new()),
        }
    }

    fn objects(&self) -> Result<MutexGuard<'_, HashMap<Key, Arc<Vec<u8>>>>> {
        self.objects
            .lock()
            .map_err(|_| Error::internal("the in-memory store was poisoned"))
    }

    fn object(&self, key: Key) -> Result<Arc<Vec<u8>>> {
        self.objects()?.get(&key).cloned().ok_or_else(|| {
            Error::io(
                self.describe(key),
                io::Error::new(io::ErrorKind::NotFound, "no such object"),
            )
        })
    }
}

impl Store for MemStore {
    fn location(&self) -> String {
        self.name.clone()
    }

    fn put(&self, key: Key, bytes: &[u8]) -> Result<()> {
        self.objects()?.insert(key, Arc::new(bytes.to_vec()));
        Ok(())
    }

    fn put_new(&self, key: Key, bytes: &[u8]) -> Result<bool> {
        let mut objects = self.objects()?;
        if objects.contains_key(&key) {
            return Ok(false);
        }
        objects.insert(key, Arc::new(bytes.to_vec()));
        Ok(true)
    }

    fn conditional_writes(&self) -> bool {
        true
    }

    fn stage(&self, scratch: &Path) -> Result<Staged> {
        Staged::create(Arc::new(StdFs), scratch)
    }

    fn put_staged(&self, key: Key, staged: Staged) -> Result<()> {
        let (file, tmp) = staged.finish()?;
        drop(file);
        let bytes = std::fs::read(tmp.path()).at(tmp.path())?;
        self.objects()?.insert(key, Arc::new(bytes));
        Ok(())
    }

    fn init(&self) -> Result<()> {
        if self.objects()?.is_empty() {
            Ok(())
        } else {
            Err(Error::InitNotEmpty(self.name.clone().into()))
        }
    }

    fn get(&self, key: Key) -> Result<Vec<u8>> {
        Ok(self.object(key)?.as_ref().clone())
    }

    fn read_shape(&self) -> crate::store::ReadShape {
        crate::store::ReadShape::LOCAL
    }

    fn read_at(&self, key: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        let obj = self.object(key)?;
        let part = usize::try_from(offset)
            .ok()
            .and_then(|start| obj.get(start..start.checked_add(buf.len())?));
        match part {
            Some(p) => {
                buf.copy_from_slice(p);
                Ok(())
            }
            None => Err(Error::io(
                self.describe(key),
                io::Error::new(io::ErrorKind::UnexpectedEof, "read past the object's end"),
            )),
        }
    }

    fn read_tail(&self, key: Key, len: u64) -> Result<(Vec<u8>, u64)> {
        let obj = self.object(key)?;
        let n = usize::try_from(len).unwrap_or(usize::MAX).min(obj.len());
        Ok((obj[obj.len() - n..].to_vec(), obj.len() as u64))
    }

    fn size(&self, key: Key) -> Result<u64> {
        Ok(self.object(key)?.len() as u64)
    }

    fn exists(&self, key: Key) -> Result<bool> {
        Ok(self.objects()?.contains_key(&key))
    }

    fn list(&self, kind: Kind) -> Result<Vec<(Key, u64)>> {
        Ok(self
            .objects()?
            .iter()
            .filter(|(k, _)| {
                matches!(
                    (kind, k),
                    (Kind::Snapshot, Key::Snapshot(_))
                        | (Kind::Pack, Key::Pack(_))
                        | (Kind::TreePack, Key::TreePack(_))
                        | (Kind::Lease, Key::Lease(_))
                        | (Kind::Damaged, Key::Damaged(_))
                )
            })
            .map(|(k, v)| (*k, v.len() as u64))
            .collect())
    }

    fn delete(&self, key: Key) -> Result<()> {
        self.objects()?.remove(&key);
        Ok(())
    }

    fn clear_scratch(&self, scratch: &Path) {
        crate::store::local::clear_scratch_on(&StdFs, scratch);
    }

    fn sync_visible(&self) -> Result<()> {
        Ok(())
    }

    fn remove_leftovers(&self) -> Result<u64> {
        Ok(0)
    }

    fn describe(&self, key: Key) -> String {
        let name = match key {
            Key::Config => "config".to_string(),
            Key::Snapshot(id) => format!("snapshots/{}", id.to_hex()),
            Key::Pack(id) => format!("packs/{}", id.to_hex()),
            Key::TreePack(id) => format!("trees/{}", id.to_hex()),
            Key::GcMarker => "gc-in-progress".to_string(),
            Key::Lease(id) => format!("leases/{}", id.to_hex()),
            Key::GcPending => "gc-pending".to_string(),
            Key::Damaged(id) => format!("damaged/{}", id.to_hex()),
            Key::PackEpoch => "pack-epoch".to_string(),
        };
        format!("{}/{name}", self.name)
    }
}
