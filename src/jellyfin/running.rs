//! Is a Jellyfin server using this data dir? Restoring in place under a running server
//! would be overwritten by it, or corrupt its open database. We look for any other
//! process holding a file open below the data dir's `data/` directory (the server keeps
//! jellyfin.db open for its whole life).

use std::path::Path;

#[derive(Debug, Clone)]
pub struct User {
    pub pid: u32,
    pub command: String,
    pub file: String,
}

/// Processes other than this one with a file open under `dir`.
pub fn users_of(dir: &Path) -> Vec<User> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if target.starts_with(&dir) {
                    let command = std::fs::read_to_string(p.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    out.push(User {
                        pid,
                        command,
                        file: target.display().to_string(),
                    });
                    break;
                }
            }
        }
    }
    out
}
