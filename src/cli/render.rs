//! Human-readable formatting: sizes, times, tables.

pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// UTC time as `YYYY-MM-DD HH:MM:SS`.
pub fn time(ns: i64) -> String {
    jellysnap::timefmt::utc(ns)
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A snapshot's Jellyfin version as shown: exact (from the server's log) as it is, a
/// range followed by the sources that gave it (`db`, `xml`, `library.db`).
pub fn jellyfin_version(r: &jellysnap::SnapshotRecord) -> String {
    let Some(v) = &r.jellyfin_version else {
        return "?".into();
    };
    match &r.jellyfin_version_source {
        Some(e) if !e.exact => {
            let from: Vec<&str> = e
                .source
                .split('+')
                .map(|s| match s {
                    "database" => "db",
                    "migrations.xml" => "xml",
                    other => other,
                })
                .collect();
            format!("{v} ({})", from.join("+"))
        }
        _ => v.clone(),
    }
}

/// A snapshot record as JSON output shows it: as stored, but with its ids (`tree`,
/// `parent`) as hex strings; the record file keeps them as byte arrays.
pub fn record_json(r: &jellysnap::SnapshotRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("tree".into(), r.tree.to_hex().into());
        o.insert(
            "parent".into(),
            r.parent
                .map(|p| p.to_hex())
                .map_or(serde_json::Value::Null, Into::into),
        );
    }
    v
}

/// The hook that took a snapshot (its `hook:<name>` tag), if one did.
pub fn hook(r: &jellysnap::SnapshotRecord) -> Option<&str> {
    r.tags.iter().find_map(|t| t.strip_prefix("hook:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
