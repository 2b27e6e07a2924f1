//! The intent record of an in-place restore: a file in the data dir, made durable before
//! the restore changes anything there and removed once everything it changed is durable.
//!
//! While it exists the data dir may be neither the old state nor the snapshot: during the
//! database swap the replaced database's `-wal` is already set aside (a server started
//! then would open the old database without its committed WAL), and later the files are
//! partly rolled back. So every command that reads or writes the data dir looks for it
//! first: a backup refuses (it would store the mix), an in-place restore refuses unless it
//! is the same restore again (same snapshot, at least the same components), which then
//! completes the interrupted one. The refusal says how to finish it, and, while the old
//! database has not been replaced yet, how to undo it by hand.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::snapshot::{Component, Snapshot};

/// The intent record's name in the data dir.
pub const INTENT_NAME: &str = ".jellysnap-restore-intent";

/// What the record holds (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    /// What wrote it, for a reader who finds the file.
    what: String,
    snapshot: String,
    repository: String,
    components: Vec<String>,
    /// The databases being swapped, in order.
    databases: Vec<Swap>,
    /// Whether the restore was run with `--force`: the command that finishes it carries
    /// it too (it failed its checks once already). Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    force: bool,
}

/// One database of the swap: the file replaced, the prepared file that replaces it, and
/// its side files with the names they are set aside under.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Swap {
    pub(super) path: String,
    pub(super) new: String,
    pub(super) aside: Vec<(String, String)>,
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Write the intent record of an in-place restore of `data_dir`, durably. Returns its path.
pub(super) fn begin(
    data_dir: &Path,
    repository: &Path,
    snapshot: &str,
    components: &[Component],
    databases: Vec<Swap>,
    force: bool,
) -> Result<PathBuf> {
    let path = data_dir.join(INTENT_NAME);
    let intent = Intent {
        what: "jellysnap in-place restore in progress; run any jellysnap backup or restore of this data dir to be told how to finish or undo it".into(),
        snapshot: snapshot.to_string(),
        // Absolute: the finishing command it prints must work from any directory.
        repository: lossy(&std::path::absolute(repository).unwrap_or_else(|_| repository.to_path_buf())),
        components: components.iter().map(|c| c.name().to_string()).collect(),
        databases,
        force,
    };
    let bytes = serde_json::to_vec_pretty(&intent)
        .map_err(|e| Error::internal(format!("cannot encode the restore intent: {e}")))?;
    // A data dir restored onto a new disk may not be there yet (making it destroys
    // nothing).
    crate::store::durable::create_dir_durable(data_dir)?;
    // What an earlier restore killed while writing this record left (its temp file).
    super::clear_dead_temps(data_dir);
    super::write::write_durably(&path, &bytes, "restore-intent-temp")?;
    Ok(path)
}

/// Remove the intent record: everything the restore changed is durable.
pub(super) fn end(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    crate::store::durable::sync_dir(crate::store::durable::parent_dir(path))
}

/// Refuse when an in-place restore of `data_dir` was interrupted, unless `rerun` is that
/// same restore (its snapshot, edited since or not, and components including the
/// interrupted one's), which completes it.
pub fn ensure_no_interrupted_restore(
    data_dir: &Path,
    rerun: Option<(&Snapshot, &[Component])>,
) -> Result<()> {
    let path = data_dir.join(INTENT_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let intent: Option<Intent> = serde_json::from_slice(&bytes).ok();
    if let (Some(i), Some((snapshot, components))) = (&intent, rerun) {
        let covered = i
            .components
            .iter()
            .all(|c| components.iter().any(|have| have.name() == c));
        if super::names_snapshot(snapshot, &i.snapshot) && covered {
            return Ok(());
        }
    }
    Err(interrupted(data_dir, &path, intent.as_ref()))
}

/// The refusal: what was interrupted, how to finish it, how to undo it if that is still
/// possible.
fn interrupted(data_dir: &Path, path: &Path, intent: Option<&Intent>) -> Error {
    let Some(i) = intent else {
        return Error::RestoreInterrupted {
            data_dir: data_dir.to_path_buf(),
            intent: path.to_path_buf(),
            snapshot: "?".into(),
            finish: "jellysnap restore SNAPSHOT --in-place".into(),
            undo: format!(
                "the record cannot be read; rerun the in-place restore that was interrupted, then remove {}",
                path.display()
            ),
        };
    };
    let finish = format!(
        "jellysnap --repo {} restore {} --in-place --components {}{}",
        shell_word(&i.repository),
        i.snapshot,
        i.components.join(","),
        if i.force { " --force" } else { "" }
    );
    // The database swap can be undone while the prepared file has not replaced the old
    // database yet: the set-aside side files go back, the prepared file goes.
    let pending: Vec<&Swap> = i
        .databases
        .iter()
        .filter(|s| Path::new(&s.new).exists())
        .collect();
    let mut steps = Vec::new();
    for s in &pending {
        for (side, aside) in &s.aside {
            if Path::new(aside).exists() {
                steps.push(format!("mv -- {} {}", shell_word(aside), shell_word(side)));
            }
        }
        steps.push(format!("rm -- {}", shell_word(&s.new)));
    }
    let replaced = i.databases.len() - pending.len();
    let undo = if replaced == 0 && !pending.is_empty() {
        steps.push(format!("rm -- {}", shell_word(&lossy(path))));
        format!(
            "or undo it (no database was replaced yet; nothing else was changed): {}",
            steps.join("; ")
        )
    } else {
        format!(
            "it cannot be undone any more ({replaced} database(s) already replaced); to restore another snapshot instead, remove {} first",
            path.display()
        )
    };
    Error::RestoreInterrupted {
        data_dir: data_dir.to_path_buf(),
        intent: path.to_path_buf(),
        snapshot: i.snapshot.get(..8).unwrap_or(&i.snapshot).to_string(),
        finish,
        undo,
    }
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,=:@".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
