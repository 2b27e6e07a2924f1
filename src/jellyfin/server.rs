//! The installed server's version, read from its files without starting it.
//!
//! The server's main assembly (`jellyfin.dll`) carries a Win32 version resource that the
//! compiler makes from the assembly's version attributes: UTF-16LE `FileVersion`, NUL
//! padding, then the version in UTF-16LE (so an SDK-built .NET assembly carries it, as
//! the server's does). That string is read; nothing is executed.

use std::path::Path;

/// The `FileVersion` of `dir/jellyfin.dll`, as `X.Y.Z` (a fourth part is dropped when 0).
pub fn version_from_assembly(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join("jellyfin.dll")).ok()?;
    file_version(&bytes)
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The first well-formed `FileVersion` value in `bytes`.
pub fn file_version(bytes: &[u8]) -> Option<String> {
    let key = utf16("FileVersion");
    let mut from = 0;
    while let Some(at) = bytes
        .get(from..)?
        .windows(key.len())
        .position(|w| w == key.as_slice())
    {
        let start = from + at + key.len();
        from = start;
        let mut units = bytes
            .get(start..)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .skip_while(|&u| u == 0);
        let mut v = String::new();
        for u in units.by_ref() {
            match char::from_u32(u32::from(u)) {
                Some(c) if c.is_ascii_digit() || c == '.' => v.push(c),
                _ => break,
            }
            if v.len() > 32 {
                break;
            }
        }
        let parts: Vec<&str> = v.split('.').collect();
        if (3..=4).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()) {
            if parts.len() == 4 && parts[3] == "0" {
                return Some(parts[..3].join("."));
            }
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_version_is_found_after_its_key() {
        let mut b = b"MZ\x90\0junk".to_vec();
        b.extend(utf16("FileVersion"));
        b.extend([0, 0]);
        b.extend(utf16("not a version"));
        b.extend(utf16("FileVersion"));
        b.extend([0, 0, 0, 0]);
        b.extend(utf16("10.11.4.0"));
        b.extend([0, 0]);
        assert_eq!(file_version(&b).as_deref(), Some("10.11.4"));
        assert_eq!(file_version(b"nothing here"), None);
    }
}
