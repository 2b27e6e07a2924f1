//! The damage record (docs/FORMAT.md, "Damage records"): the chunks of one pack that
//! `check --read-data` found damaged, kept in the repository so that writers stop
//! deduplicating against them and `check` keeps reporting the snapshots that need them
//! until a good copy is stored. JSON with a `version`; a newer version is a typed error,
//! an undecodable one is damage.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};

pub const DAMAGED_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedPack {
    pub version: u32,
    /// The pack, in hex (also the record's name).
    pub pack: String,
    /// The chunks whose record in the pack does not give back their bytes, in hex,
    /// sorted and without duplicates.
    pub chunks: Vec<String>,
}

impl DamagedPack {
    pub fn new(pack: &PackId, chunks: impl IntoIterator<Item = ChunkId>) -> Self {
        let mut chunks: Vec<String> = chunks.into_iter().map(|c| c.to_hex()).collect();
        chunks.sort();
        chunks.dedup();
        DamagedPack {
            version: DAMAGED_VERSION,
            pack: pack.to_hex(),
            chunks,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::internal(format!("damage record: {e}")))
    }

    pub fn decode(bytes: &[u8], location: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let corrupt =
            |e: serde_json::Error| Error::corrupt("damage record", location, e.to_string());
        let v: Versioned = serde_json::from_slice(bytes).map_err(corrupt)?;
        if v.version > DAMAGED_VERSION {
            return Err(Error::newer_format(
                "damage record",
                location,
                v.version,
                DAMAGED_VERSION,
            ));
        }
        if v.version == 0 {
            return Err(Error::corrupt("damage record", location, "version 0"));
        }
        serde_json::from_slice(bytes).map_err(corrupt)
    }

    /// The pack and its damaged chunks, parsed.
    pub fn ids(&self, location: &str) -> Result<(PackId, Vec<ChunkId>)> {
        let bad =
            |what: &str| Error::corrupt("damage record", location, format!("invalid {what} id"));
        let pack = PackId::from_hex(&self.pack).ok_or_else(|| bad("pack"))?;
        let chunks = self
            .chunks
            .iter()
            .map(|c| ChunkId::from_hex(c).ok_or_else(|| bad("chunk")))
            .collect::<Result<Vec<_>>>()?;
        Ok((pack, chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_a_newer_version() {
        let pack = PackId([7; 32]);
        let r = DamagedPack::new(
            &pack,
            [ChunkId([2; 32]), ChunkId([1; 32]), ChunkId([2; 32])],
        );
        let back = DamagedPack::decode(&r.encode().unwrap(), "x").unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.ids("x").unwrap(),
            (pack, vec![ChunkId([1; 32]), ChunkId([2; 32])])
        );
        let newer = br#"{"version":2,"pack":"","chunks":[]}"#;
        assert!(matches!(
            DamagedPack::decode(newer, "x"),
            Err(Error::NewerFormat { .. })
        ));
        assert!(matches!(
            DamagedPack::decode(b"{", "x"),
            Err(Error::Corrupt { .. })
        ));
    }
}
