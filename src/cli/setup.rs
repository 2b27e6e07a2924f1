//! `setup`: detect the Jellyfin install, print what was found, and write the
//! configuration file (atomically; an existing one only with `--force`).

use std::path::{Path, PathBuf};

use serde_json::json;

use jellysnap::guard::{self, Install};
use jellysnap::{Error, Place, Repository};

use super::args::SetupArgs;
use super::config_file::quote;
use super::exit::ExitCode;
use super::Ctx;

/// What `setup` writes by default: the README's everyday retention.
const RETENTION: &str = "keep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 6\n";

pub fn setup(ctx: &Ctx, a: &SetupArgs) -> Result<ExitCode, Error> {
    let path = &ctx.config.path;
    let exists = path.symlink_metadata().is_ok();
    if exists && !a.force && !a.dry_run {
        return Err(jellysnap::OptionError::FileExists(path.clone()).into());
    }
    let (install, others) = detect(a.data_dir.as_deref())?;
    let package = (install.layout == "debian")
        .then(guard::installed_package)
        .flatten();
    // --repo / JELLYSNAP_REPO, else the current file's, else the default location.
    let repo = ctx.repo_path.clone();
    let text = render(&repo, &install, package.as_deref());
    let found = describe(&install, package.as_deref());
    let repo_exists = Place::new(
        jellysnap::Location::Local(repo.clone()),
        super::args::cache_dir(),
    );
    let repo_exists = !is_s3(&repo) && Repository::exists(&repo_exists).unwrap_or(false);
    ctx.out.json_with(|| {
        json!({
            "config": path.to_string_lossy(),
            "written": !a.dry_run,
            "replaced": exists && !a.dry_run,
            "install": install,
            "package_version": package,
            "repository": repo.to_string_lossy(),
            "also_found": others.iter().map(|i| i.data_dir.to_string_lossy()).collect::<Vec<_>>(),
        })
    });
    if a.dry_run {
        // The file it would write is what a dry run is for: shown under -q too.
        ctx.out.text_is_data();
        ctx.out.text(&format!(
            "{found}\n# would be written to {}:\n{text}",
            path.display()
        ));
        return Ok(ExitCode::Success);
    }
    guard::install_file(path, &text, a.force)?;
    let mut msg = format!("{found}\nwrote {}", path.display());
    for o in &others {
        msg.push_str(&format!(
            "\nalso found an install at {} (pass --data-dir to choose it)",
            o.data_dir.display()
        ));
    }
    if !is_s3(&repo) && !repo_exists {
        msg.push_str(&format!(
            "\nno repository at {} yet: create it with `jellysnap init`",
            repo.display()
        ));
    }
    ctx.out.text(&msg);
    Ok(ExitCode::Success)
}

fn is_s3(repo: &Path) -> bool {
    repo.to_str().is_some_and(jellysnap::s3::is_s3_location)
}

/// The install at `data_dir`, or the first found at the usual places (with the others).
fn detect(data_dir: Option<&Path>) -> Result<(Install, Vec<Install>), Error> {
    if let Some(d) = data_dir {
        return Ok((guard::describe(d)?, Vec::new()));
    }
    let mut found = guard::find(Path::new("/"));
    if found.is_empty() {
        return Err(Error::NotJellyfin {
            path: PathBuf::from("/"),
            detail: format!(
                "no Jellyfin install found at the usual places ({}); pass --data-dir",
                guard::USUAL_DATA_DIRS.map(|d| format!("/{d}")).join(", ")
            ),
        });
    }
    let first = found.remove(0);
    Ok((first, found))
}

fn layout_name(layout: &str) -> &str {
    match layout {
        "debian" => "the Debian/Ubuntu package",
        "docker" => "the official Docker image (the host directory mounted at /config)",
        "linuxserver" => "the linuxserver.io image (the host directory mounted at /config)",
        _ => "a custom install",
    }
}

/// What was found, for the terminal.
fn describe(i: &Install, package: Option<&str>) -> String {
    let mut t = format!("found Jellyfin installed by {}", layout_name(&i.layout));
    if let Some(v) = package {
        t.push_str(&format!(" (jellyfin-server {v})"));
    }
    t.push_str(&format!(
        "\n  data dir    {}\n  config dir  {}",
        i.data_dir.display(),
        i.config_dir.display()
    ));
    for (what, p) in [
        ("metadata", &i.metadata_dir),
        ("cache", &i.cache_dir),
        ("log", &i.log_dir),
    ] {
        if let Some(p) = p {
            t.push_str(&format!("\n  {what:<11} {}", p.display()));
        }
    }
    t
}

/// The configuration file's text.
pub fn render(repo: &Path, i: &Install, package: Option<&str>) -> String {
    let mut t = String::from(
        "# jellysnap's configuration, written by `jellysnap setup`. Every jellysnap command,\n\
         # the timer and the upgrade hooks read it; command-line flags and JELLYSNAP_REPO\n\
         # override it.\n\
         #\n\
         # No secrets here: S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) stay in\n\
         # the environment, e.g. an EnvironmentFile of mode 600 for a systemd unit.\n\n\
         # The repository: an absolute path, or s3:https://HOST[:PORT]/BUCKET[/PREFIX].\n",
    );
    t.push_str(&format!(
        "repository = {}\n\n[jellyfin]\n# Found: {}{}.\n",
        quote(&repo.to_string_lossy()),
        layout_name(&i.layout),
        package
            .map(|v| format!(", jellyfin-server {v}"))
            .unwrap_or_default()
    ));
    t.push_str(&format!("layout = {}\n", quote(&i.layout)));
    let dirs = [
        ("data_dir", Some(&i.data_dir)),
        ("config_dir", Some(&i.config_dir)),
        ("metadata_dir", i.metadata_dir.as_ref()),
        ("log_dir", i.log_dir.as_ref()),
    ];
    for (key, p) in dirs {
        if let Some(p) = p {
            t.push_str(&format!("{key} = {}\n", quote(&p.to_string_lossy())));
        }
    }
    t.push_str(
        "\n[retention]\n\
         # What `jellysnap forget` keeps when given no snapshots and no --keep-* rules (also\n\
         # keep_last, keep_hourly, keep_yearly, keep_within = \"14d\"). Named snapshots, such\n\
         # as the hooks' before-jellyfin-*, are always kept unless --include-named.\n",
    );
    t.push_str(RETENTION);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_file_reads_back() {
        let i = Install {
            layout: "debian".into(),
            data_dir: "/var/lib/jelly \"fin\"".into(),
            config_dir: "/etc/jellyfin".into(),
            metadata_dir: None,
            cache_dir: Some("/var/cache/jellyfin".into()),
            log_dir: Some("/var/log/jellyfin".into()),
        };
        let text = render(
            Path::new("/srv/backup/jellysnap"),
            &i,
            Some("10.11.4+deb12"),
        );
        let c = super::super::config_file::parse(&text).unwrap();
        assert_eq!(c.jellyfin.data_dir.unwrap().0, i.data_dir);
        assert_eq!(
            c.jellyfin.log_dir.unwrap().0,
            PathBuf::from("/var/log/jellyfin")
        );
        assert_eq!(c.retention.unwrap().keep_daily, Some(7));
        assert_eq!(
            c.repository.unwrap().0,
            PathBuf::from("/srv/backup/jellysnap")
        );
    }
}
