//! Which snapshots a listing or a policy is about: `--tag`, `--name`, `--latest`.

use crate::error::{OptionError, Result};
use crate::format::snapshot::Snapshot;

/// A filter over snapshots, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Each entry a set of tags a snapshot must all carry; a snapshot matches when it
    /// carries one of the sets (`--tag a,b --tag c`: a and b, or c). Empty: any.
    tags: Vec<Vec<String>>,
    /// A glob over names (`*` any run of characters, `?` one); unnamed snapshots never
    /// match it.
    name: Option<String>,
    /// Only the last N written (of those the other conditions select).
    latest: Option<usize>,
}

impl Filter {
    pub fn new(tags: &[String], name: Option<&str>, latest: Option<usize>) -> Result<Filter> {
        let mut sets = Vec::new();
        for t in tags {
            let set: Vec<String> = t.split(',').map(str::to_string).collect();
            if set.iter().any(|t| t.is_empty()) {
                return Err(OptionError::Tag(t.clone()).into());
            }
            sets.push(set);
        }
        if name.is_some_and(str::is_empty) {
            return Err(OptionError::NameGlob(String::new()).into());
        }
        if latest == Some(0) {
            return Err(OptionError::Latest.into());
        }
        Ok(Filter {
            tags: sets,
            name: name.map(str::to_string),
            latest,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.name.is_none() && self.latest.is_none()
    }

    /// Whether `s` has the tags and the name asked for (`--latest` aside).
    pub fn matches(&self, s: &Snapshot) -> bool {
        let tagged = self.tags.is_empty()
            || self
                .tags
                .iter()
                .any(|set| set.iter().all(|t| s.record.tags.contains(t)));
        let named = match (&self.name, &s.record.name) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(g), Some(n)) => glob(g.as_bytes(), n.as_bytes()),
        };
        tagged && named
    }

    /// The snapshots of `snaps` (in written order) it selects, in that order.
    pub fn apply(&self, snaps: Vec<Snapshot>) -> Vec<Snapshot> {
        let mut out: Vec<Snapshot> = snaps.into_iter().filter(|s| self.matches(s)).collect();
        if let Some(n) = self.latest {
            let skip = out.len().saturating_sub(n);
            out.drain(..skip);
        }
        out
    }
}

/// `*` matches any run of bytes, `?` one byte, anything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative, with one backtrack point: linear enough for names of 100 bytes.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::tests_support::record_at;
    use crate::id::SnapshotId;

    fn snap(n: u8, name: Option<&str>, tags: &[&str]) -> Snapshot {
        let mut r = record_at(n as i64, name);
        r.tags = tags.iter().map(|t| t.to_string()).collect();
        Snapshot::new(SnapshotId([n; 32]), r)
    }

    #[test]
    fn globs() {
        for (p, t, ok) in [
            ("before-*", "before-10.11.3", true),
            ("before-*", "after-10.11.3", false),
            ("*10.11*", "before-10.11.3", true),
            ("b?fore", "before", true),
            ("b?fore", "bfore", false),
            ("*", "", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), ok, "{p} {t}");
        }
    }

    #[test]
    fn tags_names_and_latest() {
        let snaps = vec![
            snap(1, Some("before-10.11.3"), &["manual"]),
            snap(2, None, &["nightly"]),
            snap(3, None, &["nightly", "keep"]),
            snap(4, Some("before-10.11.4"), &[]),
        ];
        let ids =
            |f: Filter| -> Vec<u8> { f.apply(snaps.clone()).iter().map(|s| s.id.0[0]).collect() };
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(Filter::new(&tags(&["nightly"]), None, None).unwrap()),
            [2, 3]
        );
        assert_eq!(
            ids(Filter::new(&tags(&["nightly,keep"]), None, None).unwrap()),
            [3]
        );
        assert_eq!(
            ids(Filter::new(&tags(&["keep", "manual"]), None, None).unwrap()),
            [1, 3]
        );
        assert_eq!(
            ids(Filter::new(&[], Some("before-*"), None).unwrap()),
            [1, 4]
        );
        assert_eq!(ids(Filter::new(&[], None, Some(2)).unwrap()), [3, 4]);
        assert_eq!(
            ids(Filter::new(&tags(&["nightly"]), None, Some(1)).unwrap()),
            [3]
        );
        assert!(Filter::new(&tags(&[""]), None, None).is_err());
        assert!(Filter::new(&tags(&["a,"]), None, None).is_err());
        assert!(Filter::new(&[], None, Some(0)).is_err());
        assert!(Filter::new(&[], None, None).unwrap().is_empty());
    }
}
