//! The configuration file, `jellysnap.toml`: the repository, the Jellyfin install and the
//! retention policy, written once (`jellysnap setup`) so that every command, the timer
//! and the upgrade hooks agree without repeating flags. Flags and the environment
//! override it. It holds no secrets: S3 credentials stay in the environment, where the
//! file could not leak them through a backup of /etc or a world-readable mode.
//!
//! Where: `--config PATH` or `$JELLYSNAP_CONFIG` (explicit: it must exist), else
//! `/etc/jellysnap/jellysnap.toml` for root and `$XDG_CONFIG_HOME/jellysnap/jellysnap.toml`
//! (else `~/.config/...`) for a user (a default file that is not there is no error).
//! Values are checked as the file is read, so every mistake is reported with its line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use jellysnap::Error;

/// The file's location and whether the user named it (then it must exist).
#[derive(Debug, Clone)]
pub struct Located {
    pub path: PathBuf,
    pub explicit: bool,
}

/// `--config` (clap also fills it from `JELLYSNAP_CONFIG`), else the default location.
pub fn locate(flag: Option<&Path>) -> Located {
    match flag {
        Some(p) => Located {
            path: p.to_path_buf(),
            explicit: true,
        },
        None => Located {
            path: default_path(),
            explicit: false,
        },
    }
}

fn default_path() -> PathBuf {
    if jellysnap::system::is_root() {
        return PathBuf::from("/etc/jellysnap/jellysnap.toml");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".config")
        });
    base.join("jellysnap/jellysnap.toml")
}

/// The file as read: where it is, whether it was there, and what it says.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    /// Named by --config or JELLYSNAP_CONFIG (the hooks then name it too).
    pub explicit: bool,
    pub found: bool,
    pub config: FileConfig,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// A local path or an `s3:` location.
    pub repository: Option<RepoLocation>,
    #[serde(default)]
    pub jellyfin: InstallSection,
    pub retention: Option<Retention>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallSection {
    /// What `setup` found (`debian`, `docker`, `linuxserver`): the systemd hook asks
    /// dpkg for the installed server only on a Debian install.
    pub layout: Option<String>,
    pub data_dir: Option<AbsPath>,
    pub config_dir: Option<AbsPath>,
    pub metadata_dir: Option<AbsPath>,
    /// Where the server writes its log (which tells the version that ran last).
    pub log_dir: Option<AbsPath>,
}

/// The keep rules of `forget`, applied when it is given neither snapshots nor rules.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<KeepWithin>,
}

/// An absolute path: a relative one would depend on where a command happens to run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct AbsPath(pub PathBuf);

impl TryFrom<String> for AbsPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if Path::new(&s).is_absolute() {
            Ok(AbsPath(PathBuf::from(s)))
        } else {
            Err(format!("`{s}` is not an absolute path"))
        }
    }
}

/// A repository location: an absolute path or `s3:...`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct RepoLocation(pub PathBuf);

impl TryFrom<String> for RepoLocation {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if jellysnap::s3::is_s3_location(&s) || Path::new(&s).is_absolute() {
            Ok(RepoLocation(PathBuf::from(s)))
        } else {
            Err(format!(
                "repository `{s}` is neither an absolute path nor an s3: location"
            ))
        }
    }
}

/// A `--keep-within` duration, checked as the file is read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct KeepWithin(pub String);

impl TryFrom<String> for KeepWithin {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        jellysnap::forget::parse_duration(&s)
            .map(|_| KeepWithin(s))
            .map_err(|e| e.to_string())
    }
}

/// Read the file at `loc`. A default file that is not there is an empty configuration.
pub fn load(loc: &Located) -> Result<Loaded, Error> {
    let err = |line, detail: String| Error::ConfigFile {
        path: loc.path.clone(),
        line,
        detail,
    };
    let text = match std::fs::read_to_string(&loc.path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !loc.explicit => {
            return Ok(Loaded {
                path: loc.path.clone(),
                explicit: false,
                found: false,
                config: FileConfig::default(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(
                None,
                "no such file (named by --config or JELLYSNAP_CONFIG)".into(),
            ))
        }
        Err(e) => return Err(err(None, format!("cannot read it: {e}"))),
    };
    let config = parse(&text).map_err(|(line, detail)| err(line, detail))?;
    Ok(Loaded {
        path: loc.path.clone(),
        explicit: loc.explicit,
        found: true,
        config,
    })
}

/// Parse the text of a configuration file; an error comes with its line (1-based).
pub fn parse(text: &str) -> Result<FileConfig, (Option<usize>, String)> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| {
            let before = text.as_bytes().get(..s.start).unwrap_or(text.as_bytes());
            before.iter().filter(|&&b| b == b'\n').count() + 1
        });
        (line, e.message().trim().to_string())
    })
}

/// The install's directories: from the flags when `--data-dir` is given (the file
/// describes another install then), else from the file with the flags overriding it.
/// Returns the data dir, config dir and metadata dir.
pub fn install_dirs(
    file: &Loaded,
    data_dir: Option<&Path>,
    config_dir: Option<&Path>,
    metadata_dir: Option<&Path>,
) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>), Error> {
    let owned = |p: Option<&Path>| p.map(Path::to_path_buf);
    if let Some(d) = data_dir {
        return Ok((d.to_path_buf(), owned(config_dir), owned(metadata_dir)));
    }
    let j = &file.config.jellyfin;
    let Some(d) = &j.data_dir else {
        return Err(jellysnap::OptionError::NoDataDir {
            config: file.path.clone(),
            exists: file.found,
        }
        .into());
    };
    Ok((
        d.0.clone(),
        owned(config_dir).or_else(|| j.config_dir.as_ref().map(|p| p.0.clone())),
        owned(metadata_dir).or_else(|| j.metadata_dir.as_ref().map(|p| p.0.clone())),
    ))
}

/// A string as a TOML value (quoted and escaped).
pub fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let c = parse(
            "repository = \"/srv/backup/jellysnap\"\n[jellyfin]\nlayout = \"debian\"\ndata_dir = \"/var/lib/jellyfin\"\nconfig_dir = \"/etc/jellyfin\"\n[retention]\nkeep_daily = 7\nkeep_within = \"14d\"\n",
        )
        .unwrap();
        assert_eq!(
            c.repository,
            Some(RepoLocation("/srv/backup/jellysnap".into()))
        );
        assert_eq!(
            c.jellyfin.data_dir,
            Some(AbsPath("/var/lib/jellyfin".into()))
        );
        let r = c.retention.unwrap();
        assert_eq!(r.keep_daily, Some(7));
        assert_eq!(r.keep_within, Some(KeepWithin("14d".into())));
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        for (text, line, says) in [
            (
                "repository = \"/r\"\n[jellyfin]\ndata_dir = \"relative/dir\"\n",
                3,
                "absolute",
            ),
            (
                "repository = \"/r\"\n\n[retention]\nkeep_dayly = 7\n",
                4,
                "keep_dayly",
            ),
            ("[retention]\nkeep_within = \"forever\"\n", 2, "duration"),
            ("repository = \"/r\n", 1, ""),
            ("[retention]\nkeep_last = -1\n", 2, ""),
            ("repository = \"repo\"\n", 1, "absolute path"),
        ] {
            let (l, detail) = parse(text).unwrap_err();
            assert_eq!(l, Some(line), "{text}: {detail}");
            assert!(detail.contains(says), "{text}: {detail}");
        }
    }

    #[test]
    fn quoted_values_read_back() {
        for s in ["/a b/c", "/q\"uote\\back", "s3:https://h:1/b/p", "/ünï/\t"] {
            let c = parse(&format!("repository = {}\n", quote(s))).unwrap();
            assert_eq!(c.repository, Some(RepoLocation(s.into())), "{s}");
        }
    }
}
