//! Option values shared by several commands, validated when they are made: a component
//! list and a snapshot name. (Each operation's own options live beside it: the forget
//! policy and selection, the check read-data mode, the gc threshold.)

use std::collections::BTreeSet;

use crate::error::{OptionError, Result};
use crate::format::snapshot::{validate_name, Component};

/// A list of components, as `--components` names them (`all` for every one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components(BTreeSet<Component>);

impl Components {
    /// Parse the list's items; an empty item (`--components ""`, `metadata,`) or an
    /// unknown one is refused.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Components, OptionError> {
        let mut out = BTreeSet::new();
        for raw in list {
            let s = raw.as_ref().trim();
            if s.is_empty() {
                return Err(OptionError::EmptyValue("--components"));
            }
            if s == "all" {
                out.extend(Component::ALL);
                continue;
            }
            let c = Component::parse(s).ok_or_else(|| OptionError::UnknownComponent(s.into()))?;
            out.insert(c);
        }
        Ok(Components(out))
    }

    pub fn into_set(self) -> BTreeSet<Component> {
        self.0
    }
}

/// Tags as given (`--tag`): an empty one is refused.
pub fn validate_tags(tags: &[String]) -> Result<Vec<String>, OptionError> {
    if tags.iter().any(|t| t.trim().is_empty()) {
        return Err(OptionError::EmptyValue("--tag"));
    }
    Ok(tags.to_vec())
}

/// A snapshot name: 1-100 characters from letters, digits, `.`, `_`, `-`, `+`, not
/// starting with `-`, not `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotName(String);

impl SnapshotName {
    pub fn new(name: &str) -> Result<SnapshotName> {
        validate_name(name)?;
        Ok(SnapshotName(name.to_string()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn components_name_the_bad_one() {
        let c = Components::parse(&["metadata", " trickplay"]).unwrap();
        assert_eq!(
            c.into_set().into_iter().collect::<Vec<_>>(),
            vec![Component::Metadata, Component::Trickplay]
        );
        assert_eq!(Components::parse(&["all"]).unwrap().into_set().len(), 5);
        assert!(matches!(
            Components::parse(&["metadata", "posters"]),
            Err(OptionError::UnknownComponent(v)) if v == "posters"
        ));
        for list in [&[""][..], &["metadata", ""], &[" "]] {
            assert!(matches!(
                Components::parse(list),
                Err(OptionError::EmptyValue("--components"))
            ));
        }
        assert!(validate_tags(&["a".into(), "".into()]).is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(SnapshotName::new("before-10.11.3").is_ok());
        assert!(matches!(
            SnapshotName::new("has space"),
            Err(Error::InvalidName(v)) if v == "has space"
        ));
    }
}
