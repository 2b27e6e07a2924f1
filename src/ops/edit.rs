//! `tag` and `name`: change a snapshot's tags or name after the fact. Records never
//! change (a record's id is the hash of its bytes, and copies, caches and older
//! jellysnaps rely on that), so an edit writes a new record, a copy of the current one
//! with the new tags or name and an `edit` saying which record it supersedes, then
//! deletes the records it supersedes (docs/FORMAT.md, "Editing a snapshot").
//!
//! Write order: the new record is committed first (durably, as a backup commits its
//! record), the superseded ones are deleted after. An edit cut short in between leaves
//! both, and every reader takes the new one. Edits run under the exclusive repository
//! lock (and, on a repository hosts share, an exclusive lease), as forget does: two
//! edits never both supersede the same record, so neither is lost; the second one
//! waits for nothing and is refused (exit 16) while the first holds the lock.

use crate::error::{Error, OptionError, Result};
use crate::format::snapshot::{validate_name, Edit, Snapshot};
use crate::store::repo::{resolve_in, Repository};

/// What to change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub add_tags: Vec<String>,
    pub remove_tags: Vec<String>,
    pub name: NameChange,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum NameChange {
    #[default]
    Keep,
    Set(String),
    Unset,
}

impl Changes {
    /// Validated changes: tags not empty, a valid name, something to do.
    pub fn new(
        add_tags: Vec<String>,
        remove_tags: Vec<String>,
        name: NameChange,
    ) -> Result<Changes> {
        if let Some(t) = add_tags.iter().chain(&remove_tags).find(|t| !valid_tag(t)) {
            return Err(OptionError::Tag(t.clone()).into());
        }
        if let NameChange::Set(n) = &name {
            validate_name(n)?;
        }
        if add_tags.is_empty() && remove_tags.is_empty() && name == NameChange::Keep {
            return Err(OptionError::NothingToEdit.into());
        }
        Ok(Changes {
            add_tags,
            remove_tags,
            name,
        })
    }
}

/// A tag is a non-empty word a shell passes whole: printable, without spaces or commas.
fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 100
        && t.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != ',')
}

/// What an edit did.
#[derive(Debug, Clone)]
pub struct Edited {
    /// The snapshot as it was.
    pub before: Snapshot,
    /// The snapshot now: its new record (`before` when nothing changed).
    pub after: Snapshot,
    /// Whether a record was written.
    pub changed: bool,
}

/// Apply `changes` to the snapshot `query` names (needs `Access::Exclusive`).
pub fn edit(repo: &Repository, query: &str, changes: &Changes, now_ns: i64) -> Result<Edited> {
    let (snaps, _) = repo.snapshots()?;
    let before = resolve_in(snaps.clone(), query)?;
    let mut record = before.record.clone();
    for t in &changes.add_tags {
        if !record.tags.contains(t) {
            record.tags.push(t.clone());
        }
    }
    record.tags.retain(|t| !changes.remove_tags.contains(t));
    match &changes.name {
        NameChange::Keep => {}
        NameChange::Unset => record.name = None,
        NameChange::Set(n) => {
            if let Some(other) = snaps
                .iter()
                .find(|s| s.id != before.id && s.record.name.as_deref() == Some(n))
            {
                return Err(Error::NameTaken {
                    name: n.clone(),
                    other: other.id.short(),
                });
            }
            record.name = Some(n.clone());
        }
    }
    if record.tags == before.record.tags && record.name == before.record.name {
        return Ok(Edited {
            after: before.clone(),
            before,
            changed: false,
        });
    }
    let (of, replaces) = (before.origin(), before.id);
    record.edit = Some(Edit {
        of,
        replaces,
        n: before.edits() + 1,
        time_ns: now_ns,
        // Every id the snapshot had: the records they name are deleted below, and an id
        // once printed must keep finding the snapshot.
        earlier: before
            .former
            .iter()
            .copied()
            .filter(|i| *i != of && *i != replaces)
            .collect(),
    });
    let id = repo.commit_edit(&record)?;
    // Superseded records go once the new one is durable; one left by a cut-short run
    // is hidden by the new one and removed by the next edit or forget.
    for old in before.records() {
        repo.remove_snapshot(&old)?;
    }
    let after = Snapshot::new(id, record);
    Ok(Edited {
        before,
        after,
        changed: true,
    })
}
