//! A repository in a bucket of an S3-compatible object store.
//!
//! - [`client`]: the signed, retried HTTP requests (put, get, ranged and suffix get,
//!   head, list, delete) over one bucket and key prefix, and the typed errors they end in.
//! - [`config`]: where the repository is and how to reach it, parsed from
//!   `s3:https://HOST[:PORT]/BUCKET[/PREFIX]` and the caller's environment.
//! - [`S3Store`]: the repository's objects under the prefix, laid out as in a local
//!   repository (`config`, `snapshots/<id>`, `packs/<xx>/<id>`, `trees/<xx>/<id>`,
//!   `gc-in-progress`, `leases/<id>`).
//!
//! Every object is written whole by one PUT, with its Content-MD5: an object is either
//! absent or complete, and a write that returned is durable (what object stores promise),
//! so nothing needs syncing or cleaning up after a crash; packs are staged in the local
//! scratch directory and streamed from there. The local state (index, locks, scratch)
//! lives in the cache directory, not here.

pub mod client;
pub mod config;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use client::{
    Addressing, CaBundle, Client, Credentials, HttpProxy, Network, PutMode, Retry, S3Config,
};
pub use config::{is_s3_location, UserEnv};

use crate::error::{Error, RemoteErrorKind, Result};
use crate::id::{PackId, SnapshotId};
use crate::store::durable::StdFs;
use crate::store::{Key, Kind, LeaseId, ReadShape, Staged, Store};

/// The name of the objects that probe for conditional writes (a random suffix each).
const PROBE: &str = "conditional-write-probe-";

/// How long a probe's answer is trusted, in seconds. A server gains or loses conditional
/// writes only when it is upgraded, reconfigured or replaced behind the same address,
/// which is rare; a nightly schedule then probes once a week instead of on every command
/// (3 requests each). A week-old "yes" that no longer holds costs only the atomicity of
/// `put_new`, which gc's grace period stands in for anyway; a server that starts
/// refusing the header is noticed at once (see `put_new`).
pub const PROBE_FRESH_SECS: i64 = 7 * 24 * 3600;

/// The first line of a remembered probe (its format's version).
const PROBE_MAGIC: &str = "jellysnap conditional-write probe 1";

pub struct S3Store {
    client: Client,
    /// Whether the server honours `If-None-Match: *`: probed once, on first need.
    conditional: Mutex<Option<bool>>,
    /// Where the probe's answer is remembered between commands, if anywhere.
    remembered: Option<PathBuf>,
}

impl S3Store {
    pub fn new(config: &S3Config) -> Result<Self> {
        let client = Client::new(config)?;
        // One file per endpoint, bucket and prefix (what the location names).
        let remembered = config.cache_dir.as_ref().map(|dir| {
            let hash = blake3::hash(client.location().as_bytes()).to_hex();
            dir.join("servers")
                .join(format!("{}.conditional-writes", &hash[..32]))
        });
        Ok(S3Store {
            client,
            conditional: Mutex::new(None),
            remembered,
        })
    }

    /// The remembered answer of a probe made less than [`PROBE_FRESH_SECS`] ago.
    fn recall(&self) -> Option<bool> {
        let text = std::fs::read_to_string(self.remembered.as_ref()?).ok()?;
        let mut lines = text.lines();
        if lines.next()? != PROBE_MAGIC || lines.next()? != self.client.location() {
            return None;
        }
        let (answer, at) = lines.next()?.split_once(' ')?;
        let age = crate::store::lease::now_secs() - at.parse::<i64>().ok()?;
        // A time in the future is a clock that moved: not trusted.
        if !(0..PROBE_FRESH_SECS).contains(&age) {
            return None;
        }
        match answer {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        }
    }

    /// Remember a probe's answer (a cache: a failure to write it costs a probe later).
    fn remember(&self, supported: bool) {
        let Some(path) = &self.remembered else { return };
        let text = format!(
            "{PROBE_MAGIC}\n{}\n{} {}\n",
            self.client.location(),
            if supported { "yes" } else { "no" },
            crate::store::lease::now_secs()
        );
        let write = || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, text.as_bytes())?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        let _ = write();
    }

    /// Forget the probe's answer, here and in the cache: the server did not behave as
    /// it said.
    fn forget_probe(&self) {
        if let Ok(mut known) = self.conditional.lock() {
            *known = None;
        }
        if let Some(path) = &self.remembered {
            let _ = std::fs::remove_file(path);
        }
    }

    fn name(key: Key) -> String {
        match key {
            Key::Config => "config".to_string(),
            Key::Snapshot(id) => format!("snapshots/{}", id.to_hex()),
            Key::Pack(id) => {
                let hex = id.to_hex();
                format!("packs/{}/{hex}", &hex[..2])
            }
            Key::TreePack(id) => {
                let hex = id.to_hex();
                format!("trees/{}/{hex}", &hex[..2])
            }
            Key::GcMarker => "gc-in-progress".to_string(),
            Key::Lease(id) => format!("leases/{}", id.to_hex()),
            Key::GcPending => "gc-pending".to_string(),
            Key::Damaged(id) => format!("damaged/{}", id.to_hex()),
            Key::PackEpoch => "pack-epoch".to_string(),
        }
    }

    /// Whether the server refuses a second create-only write of one object (412), found
    /// by writing a probe object twice and deleting it; remembered for the store's life
    /// and, in the cache dir, for [`PROBE_FRESH_SECS`]. A server that ignores the header
    /// (it overwrites) or rejects it (400, 501) has none.
    pub fn probe_conditional_writes(&self) -> Result<bool> {
        let mut known = self
            .conditional
            .lock()
            .map_err(|_| Error::internal("the conditional-write probe was poisoned"))?;
        if let Some(v) = *known {
            return Ok(v);
        }
        if let Some(v) = self.recall() {
            *known = Some(v);
            return Ok(v);
        }
        let name = format!("{PROBE}{}", LeaseId::random().to_hex());
        let first = self.client.put(&name, b"1", PutMode::IfAbsent);
        let supported = match first {
            Ok(_) => !self.client.put(&name, b"2", PutMode::IfAbsent)?,
            Err(Error::Remote {
                kind: RemoteErrorKind::Denied,
                status: Some(400 | 501),
                ..
            }) => false,
            Err(e) => return Err(e),
        };
        self.client.delete(&name)?;
        *known = Some(supported);
        self.remember(supported);
        Ok(supported)
    }

    /// An error for a write the server refused because of a precondition we did not ask.
    fn refused_write(&self, key: Key) -> Error {
        Error::Remote {
            object: self.describe(key),
            status: Some(412),
            kind: RemoteErrorKind::Denied,
            detail: "the server refused to replace the object (precondition failed); check the bucket's object-lock or versioning rules".to_string(),
        }
    }

    /// A write that found the object already there (412) succeeded for an object named
    /// by the hash of its bytes: those bytes are what is there.
    fn written(&self, key: Key, created: bool) -> Result<()> {
        match (created, key) {
            (true, _) | (false, Key::Snapshot(_) | Key::Pack(_) | Key::TreePack(_)) => Ok(()),
            (false, _) => Err(self.refused_write(key)),
        }
    }
}

/// The pack named `<xx>/<id>` under its prefix.
fn pack_name(n: &str) -> Option<PackId> {
    let (sub, hex) = n.split_once('/')?;
    let id = PackId::from_hex(hex)?;
    (hex.get(..2) == Some(sub)).then_some(id)
}

/// The answer of a server that does not take `If-None-Match` (400 or 501).
fn rejects_conditional(e: &Error) -> bool {
    matches!(
        e,
        Error::Remote {
            kind: RemoteErrorKind::Denied,
            status: Some(400 | 501),
            ..
        }
    )
}

impl Store for S3Store {
    fn location(&self) -> String {
        self.client.location().to_string()
    }

    fn put(&self, key: Key, bytes: &[u8]) -> Result<()> {
        let created = self
            .client
            .put(&Self::name(key), bytes, PutMode::Overwrite)?;
        self.written(key, created)
    }

    fn put_new(&self, key: Key, bytes: &[u8]) -> Result<bool> {
        if self.probe_conditional_writes()? {
            match self.client.put(&Self::name(key), bytes, PutMode::IfAbsent) {
                // A server said to honour the header refuses it (upgraded, replaced or
                // reconfigured since the probe): probe again, and without conditional
                // writes fall back below.
                Err(e) if rejects_conditional(&e) => {
                    self.forget_probe();
                    if self.probe_conditional_writes()? {
                        return Err(e);
                    }
                }
                r => return r,
            }
        }
        // No conditional writes: another host may write between the two requests
        // (`conditional_writes` says so to the caller).
        if self.exists(key)? {
            return Ok(false);
        }
        self.put(key, bytes)?;
        Ok(true)
    }

    /// Probes the server on first call; a probe that fails (the network) answers `false`
    /// without remembering it.
    fn conditional_writes(&self) -> bool {
        self.probe_conditional_writes().unwrap_or(false)
    }

    fn stage(&self, scratch: &Path) -> Result<Staged> {
        Staged::create(Arc::new(StdFs), scratch)
    }

    fn put_staged(&self, key: Key, staged: Staged) -> Result<()> {
        // Flushed to the scratch file; the upload reads it back, so no fsync is needed:
        // the object store makes the object durable.
        let (file, tmp) = staged.finish()?;
        drop(file);
        let created = self
            .client
            .put_file(&Self::name(key), tmp.path(), PutMode::Overwrite)?;
        self.written(key, created)
    }

    fn init(&self) -> Result<()> {
        // An interrupted init leaves nothing (the config is its only object) but maybe
        // a probe object.
        let found = self.client.list("")?;
        if found.iter().any(|(name, _)| !name.starts_with(PROBE)) {
            return Err(Error::InitNotEmpty(self.location().into()));
        }
        Ok(())
    }

    fn get(&self, key: Key) -> Result<Vec<u8>> {
        self.client.get(&Self::name(key))
    }

    fn read_at(&self, key: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.client.get_range(&Self::name(key), offset, buf)
    }

    fn read_shape(&self) -> ReadShape {
        ReadShape::REMOTE
    }

    fn read_tail(&self, key: Key, len: u64) -> Result<(Vec<u8>, u64)> {
        self.client.get_tail(&Self::name(key), len)
    }

    fn size(&self, key: Key) -> Result<u64> {
        self.client.head(&Self::name(key))
    }

    fn exists(&self, key: Key) -> Result<bool> {
        match self.client.head(&Self::name(key)) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self, kind: Kind) -> Result<Vec<(Key, u64)>> {
        let (dir, parse): (&str, fn(&str) -> Option<Key>) = match kind {
            Kind::Snapshot => ("snapshots/", |n| SnapshotId::from_hex(n).map(Key::Snapshot)),
            Kind::Pack => ("packs/", |n| pack_name(n).map(Key::Pack)),
            Kind::TreePack => ("trees/", |n| pack_name(n).map(Key::TreePack)),
            Kind::Lease => ("leases/", |n| LeaseId::from_hex(n).map(Key::Lease)),
            Kind::Damaged => ("damaged/", |n| PackId::from_hex(n).map(Key::Damaged)),
        };
        Ok(self
            .client
            .list(dir)?
            .into_iter()
            .filter_map(|(name, size)| Some((parse(name.strip_prefix(dir)?)?, size)))
            .collect())
    }

    fn delete(&self, key: Key) -> Result<()> {
        self.client.delete(&Self::name(key))
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
        self.client.describe(&Self::name(key))
    }
}

#[cfg(test)]
mod tests {
    use super::client::tests::{answer, error_xml, scripted, target};
    use super::*;

    fn store(script: Vec<Vec<u8>>) -> S3Store {
        let (port, _) = scripted(script);
        S3Store::new(&target(&format!("http://127.0.0.1:{port}"))).expect("store")
    }

    /// A store of the server on `port` that remembers its probe in `cache`.
    fn remembering(port: u16, cache: &Path) -> S3Store {
        let mut t = target(&format!("http://127.0.0.1:{port}"));
        t.cache_dir = Some(cache.to_path_buf());
        S3Store::new(&t).expect("store")
    }

    fn requests(n: &std::sync::atomic::AtomicUsize) -> usize {
        n.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_probe_is_remembered_in_the_cache_dir_until_it_is_stale() {
        let cache = tempfile::tempdir().expect("cache");
        let (port, n) = scripted(vec![
            answer("200 OK", &[], b""),
            answer("412 Precondition Failed", &[], b""),
            answer("204 No Content", &[], b""),
            // The probe again, once the answer is stale.
            answer("200 OK", &[], b""),
            answer("200 OK", &[], b""),
            answer("204 No Content", &[], b""),
        ]);
        assert!(remembering(port, cache.path()).conditional_writes());
        assert_eq!(requests(&n), 3);
        // The next command asks nothing.
        assert!(remembering(port, cache.path()).conditional_writes());
        assert_eq!(requests(&n), 3);
        // A week later it asks again, and learns the server changed.
        let file = std::fs::read_dir(cache.path().join("servers"))
            .expect("remembered")
            .next()
            .expect("one file")
            .expect("entry")
            .path();
        let text = std::fs::read_to_string(&file).expect("read");
        let (head, at) = text.trim_end().rsplit_once(' ').expect("a time");
        let old = at.parse::<i64>().expect("secs") - PROBE_FRESH_SECS;
        std::fs::write(&file, format!("{head} {old}\n")).expect("write");
        assert!(!remembering(port, cache.path()).conditional_writes());
        assert_eq!(requests(&n), 6);
        assert!(std::fs::read_to_string(&file)
            .expect("read")
            .contains("\nno "));
    }

    #[test]
    fn a_server_that_starts_refusing_if_none_match_is_probed_again() {
        let cache = tempfile::tempdir().expect("cache");
        let (port, n) = scripted(vec![
            answer("200 OK", &[], b""),
            answer("412 Precondition Failed", &[], b""),
            answer("204 No Content", &[], b""),
            // Replaced by a server without conditional writes: the create-only write...
            answer("501 Not Implemented", &[], &error_xml("NotImplemented")),
            // ...the probe again...
            answer("501 Not Implemented", &[], &error_xml("NotImplemented")),
            answer("204 No Content", &[], b""),
            // ...and the write without the header: a look, then a plain PUT.
            answer("404 Not Found", &[], b""),
            answer("200 OK", &[], b""),
        ]);
        assert!(remembering(port, cache.path()).conditional_writes());
        let s = remembering(port, cache.path());
        assert!(s
            .put_new(Key::Lease(LeaseId::random()), b"x")
            .expect("created"));
        assert!(!s.conditional_writes());
        assert_eq!(requests(&n), 8);
        assert!(!remembering(port, cache.path()).conditional_writes());
        assert_eq!(requests(&n), 8);
    }

    #[test]
    fn a_server_that_ignores_if_none_match_has_no_conditional_writes() {
        // Probe: two create-only writes both succeed, then the delete.
        let ok = || answer("200 OK", &[], b"");
        let s = store(vec![
            ok(),
            ok(),
            answer("204 No Content", &[], b""),
            // put_new without conditional writes: HEAD finds nothing, then a plain PUT.
            answer("404 Not Found", &[], b""),
            ok(),
        ]);
        let lease = Key::Lease(LeaseId::random());
        assert!(s.put_new(lease, b"x").expect("created"));
        assert!(!s.conditional_writes());
    }

    #[test]
    fn a_server_that_rejects_if_none_match_has_no_conditional_writes() {
        let s = store(vec![
            answer("501 Not Implemented", &[], &error_xml("NotImplemented")),
            answer("204 No Content", &[], b""),
        ]);
        assert!(!s.probe_conditional_writes().expect("probed"));
    }

    #[test]
    fn a_server_that_honours_if_none_match_is_asked_once() {
        let s = store(vec![
            answer("200 OK", &[], b""),
            answer("412 Precondition Failed", &[], b""),
            answer("204 No Content", &[], b""),
            answer("412 Precondition Failed", &[], b""),
        ]);
        assert!(s.conditional_writes());
        assert!(s.conditional_writes());
        assert!(!s.put_new(Key::GcMarker, b"x").expect("exists"));
    }

    #[test]
    fn a_412_is_success_only_for_an_object_named_by_its_bytes() {
        let refused = || answer("412 Precondition Failed", &[], b"");
        let s = store(vec![refused(), refused(), refused()]);
        s.put(Key::Pack(PackId::of(b"p")), b"p")
            .expect("the same bytes are there");
        s.put(Key::Snapshot(SnapshotId::of(b"s")), b"s")
            .expect("the same bytes are there");
        let e = s.put(Key::Config, b"c").expect_err("not replaced");
        assert!(e.is_refusal(), "{e}");
        assert!(e.to_string().contains("/config"), "{e}");
    }
}
