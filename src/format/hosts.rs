//! The small objects hosts that share a repository leave for each other
//! (docs/FORMAT.md, "Objects shared by hosts"): a lease (who uses the repository, until
//! when), the gc-pending record (packs a gc marked, waiting for their grace period) and
//! the pack-set epoch (a token a gc changes after deleting packs). Each is JSON with a
//! `version`; a newer version is a typed error, an undecodable one is damage.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::PackId;

pub const LEASE_VERSION: u32 = 1;
pub const GC_PENDING_VERSION: u32 = 1;
pub const EPOCH_VERSION: u32 = 1;

/// What a lease holder may do beside others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseMode {
    /// Reads and backups: many at once.
    Shared,
    /// gc, forget, repair: alone.
    Exclusive,
}

/// A lease: `host`'s process `pid`, running `command`, uses the repository until
/// `expires` (Unix seconds) unless it refreshes the lease first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub version: u32,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub mode: LeaseMode,
    pub created: i64,
    pub expires: i64,
    /// The machine and process namespace the holder runs in (boot id and pid namespace),
    /// and its start time: on the same machine and namespace, a holder whose pid no
    /// longer has that start time has died, and its lease is ignored at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
}

/// The packs a gc marked for deletion, at `marked_at` (Unix seconds). They are deleted
/// by a later gc, once the grace period has passed, if nothing references them then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPending {
    pub version: u32,
    pub marked_at: i64,
    /// Hex pack ids.
    pub packs: Vec<String>,
}

/// The pack-set epoch: a random token, new each time a gc has deleted packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEpoch {
    pub version: u32,
    pub token: String,
}

/// Decode a JSON object of kind `what` whose newest version is `supported`.
fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
    location: &str,
    supported: u32,
) -> Result<T> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(what, location, e.to_string()))?;
    if v.version > supported {
        return Err(Error::newer_format(what, location, v.version, supported));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::corrupt(what, location, e.to_string()))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::internal(format!("encoding JSON: {e}")))
}

impl LeaseRecord {
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    pub fn decode(bytes: &[u8], location: &str) -> Result<Self> {
        decode(bytes, "lease", location, LEASE_VERSION)
    }
}

impl GcPending {
    pub fn new(marked_at: i64, packs: &[PackId]) -> Self {
        GcPending {
            version: GC_PENDING_VERSION,
            marked_at,
            packs: packs.iter().map(|p| p.to_hex()).collect(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    pub fn decode(bytes: &[u8], location: &str) -> Result<Self> {
        decode(bytes, "gc-pending record", location, GC_PENDING_VERSION)
    }

    /// The marked packs; a name that is not a pack id is damage.
    pub fn pack_ids(&self, location: &str) -> Result<Vec<PackId>> {
        self.packs
            .iter()
            .map(|h| {
                PackId::from_hex(h).ok_or_else(|| {
                    Error::corrupt(
                        "gc-pending record",
                        location,
                        format!("{h:?} is not a pack id"),
                    )
                })
            })
            .collect()
    }
}

impl PackEpoch {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        crate::sys::getrandom(&mut b);
        PackEpoch {
            version: EPOCH_VERSION,
            token: crate::id::hex(&b),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    pub fn decode(bytes: &[u8], location: &str) -> Result<Self> {
        decode(bytes, "pack-set epoch", location, EPOCH_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_newer_versions() {
        let l = LeaseRecord {
            version: LEASE_VERSION,
            host: "nas".into(),
            pid: 42,
            command: "backup".into(),
            mode: LeaseMode::Shared,
            created: 100,
            expires: 1900,
            space: None,
            start: None,
        };
        assert_eq!(LeaseRecord::decode(&l.encode().unwrap(), "x").unwrap(), l);
        let json = String::from_utf8(l.encode().unwrap()).unwrap();
        assert!(json.contains("\"mode\":\"shared\""), "{json}");
        let g = GcPending::new(5, &[PackId([7; 32])]);
        let back = GcPending::decode(&g.encode().unwrap(), "x").unwrap();
        assert_eq!(back.pack_ids("x").unwrap(), vec![PackId([7; 32])]);
        let e = PackEpoch::random();
        assert_eq!(PackEpoch::decode(&e.encode().unwrap(), "x").unwrap(), e);
        assert_ne!(e, PackEpoch::random());

        let newer = br#"{"version":9,"token":"ab"}"#;
        assert!(matches!(
            PackEpoch::decode(newer, "x"),
            Err(Error::NewerFormat { found: 9, .. })
        ));
        assert!(matches!(
            LeaseRecord::decode(b"{\"version\":1}", "x"),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            GcPending::decode(b"\x00garbage", "x"),
            Err(Error::Corrupt { .. })
        ));
    }
}
