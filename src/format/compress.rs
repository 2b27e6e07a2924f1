//! Per-chunk compression decision and zstd with reused per-thread contexts.
//!
//! JPEG/PNG/WebP sheets and images are already compressed: paying a zstd pass on them
//! costs most of the pipeline's CPU to save ~0.3%. Files whose leading bytes name a
//! compressed format skip zstd entirely; everything else is compressed and kept raw when
//! compression saves less than 3%.

use std::cell::RefCell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// True when the leading bytes of a file identify an already-compressed format.
pub fn is_precompressed(head: &[u8]) -> bool {
    const SIGS: &[&[u8]] = &[
        b"\xFF\xD8\xFF",      // JPEG
        b"\x89PNG\r\n\x1a\n", // PNG
        b"GIF8",              // GIF
        b"PK\x03\x04",        // zip (plugins, backups)
        b"\x1f\x8b",          // gzip
        b"\x28\xb5\x2f\xfd",  // zstd
        b"wOF2",              // woff2 fonts
        b"wOFF",              // woff fonts
        b"\x1a\x45\xdf\xa3",  // matroska / webm
        b"BZh",               // bzip2
        b"\xfd7zXZ\x00",      // xz
    ];
    if SIGS.iter().any(|s| head.starts_with(s)) {
        return true;
    }
    // RIFF....WEBP, ISO-BMFF (mp4/avif/heic): ....ftyp
    (head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP")
        || (head.len() >= 8 && &head[4..8] == b"ftyp")
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compress `raw` into `out` (cleared first) when worth it. Returns the compression used;
/// with `Compression::None`, `out` is left empty and the caller stores `raw` itself.
pub fn maybe_compress(raw: &[u8], level: i32, out: &mut Vec<u8>) -> std::io::Result<Compression> {
    out.clear();
    compress_after(raw, level, out)
}

/// [`maybe_compress`] appending to `out` (a record's header is already there): with
/// `Compression::None`, `out` is left as it was.
pub fn compress_after(raw: &[u8], level: i32, out: &mut Vec<u8>) -> std::io::Result<Compression> {
    if raw.len() < 64 {
        return Ok(Compression::None);
    }
    let at = out.len();
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let Some((_, c)) = slot.as_mut() else {
            return Ok(Compression::None);
        };
        out.resize(at + zstd::zstd_safe::compress_bound(raw.len()), 0);
        let n = match out.get_mut(at..) {
            Some(dst) => c.compress_to_buffer(raw, dst),
            None => Ok(0),
        };
        let n = n.inspect_err(|_| out.truncate(at))?;
        if n as u64 * 100 <= raw.len() as u64 * 97 {
            out.truncate(at + n);
            Ok(Compression::Zstd)
        } else {
            out.truncate(at);
            Ok(Compression::None)
        }
    })
}

/// The longest zstd payload a chunk of `raw_len` bytes compresses to.
pub fn stored_bound(raw_len: usize) -> usize {
    zstd::zstd_safe::compress_bound(raw_len)
}

/// Decompress a zstd payload of known raw length into `out` (cleared first). `raw_len`
/// comes from a record header, so the caller bounds it (`pack::RawLimits`): `out` is
/// sized for it before a byte is decompressed. A frame that states another size is
/// refused before that.
pub fn decompress(payload: &[u8], raw_len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    let invalid = |d: String| std::io::Error::new(std::io::ErrorKind::InvalidData, d);
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n != raw_len as u64 => {
            return Err(invalid(format!(
                "the zstd frame holds {n} bytes, the record says {raw_len}"
            )))
        }
        Ok(_) => {}
        Err(_) => return Err(invalid("not a zstd frame".into())),
    }
    out.reserve(raw_len);
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        let Some(d) = slot.as_mut() else {
            return Ok(());
        };
        let n = d.decompress_to_buffer(payload, out)?;
        if n != raw_len {
            return Err(invalid(format!(
                "decompressed {n} bytes, expected {raw_len}"
            )));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_compresses_and_round_trips() {
        let raw = b"<Item><Name>Movie</Name></Item>\n".repeat(200);
        let mut out = Vec::new();
        assert_eq!(
            maybe_compress(&raw, 3, &mut out).unwrap(),
            Compression::Zstd
        );
        let mut back = Vec::new();
        decompress(&out, raw.len(), &mut back).unwrap();
        assert_eq!(back, raw);
        assert!(decompress(&out, raw.len() + 1, &mut back).is_err());
    }

    #[test]
    fn random_bytes_stay_raw() {
        let raw: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut out = Vec::new();
        let c = maybe_compress(&raw, 3, &mut out).unwrap();
        assert!(c == Compression::None || out.len() < raw.len());
    }

    #[test]
    fn sniffs_images() {
        assert!(is_precompressed(b"\xFF\xD8\xFF\xE0\x00\x10JFIF"));
        assert!(is_precompressed(b"\x89PNG\r\n\x1a\n...."));
        assert!(is_precompressed(b"RIFF\x00\x00\x00\x00WEBPVP8 "));
        assert!(!is_precompressed(b"<?xml version"));
        assert!(!is_precompressed(b"SQLite format 3\0"));
    }
}
