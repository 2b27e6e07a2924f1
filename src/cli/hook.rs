//! `hook`: the upgrade guard's entry points. Each takes a snapshot named
//! `before-jellyfin-<old version>` (tagged `hook:apt`, `hook:systemd` or
//! `hook:container`) before another Jellyfin version runs on the data, and never stands
//! in the way of the upgrade or the server: a failure is reported loudly on stderr and
//! the exit code is 0, unless `--abort-on-failure`.
//!
//! - `apt run` reads apt's `DPkg::Pre-Install-Pkgs` protocol (version 3) on stdin;
//! - `systemd run` is an `ExecStartPre=` of the server's unit;
//! - `container run` is a one-shot service the server's container depends on.
//!
//! `install` / `remove` write and delete the apt snippet and the systemd drop-in.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;

use jellysnap::guard::{self, Decision, GuardOptions, GuardState, Naming};
use jellysnap::{Component, Error, SourceOptions};

use super::args::{AptAction, ContainerAction, GuardArgs, HookKind, SystemdAction};
use super::exit::ExitCode;
use super::{config_file, paren_name, Ctx};

/// The packages whose upgrade, downgrade or removal the apt hook guards (the server
/// first: the `jellyfin` metapackage carries its own version).
const PACKAGES: [&str; 2] = ["jellyfin-server", "jellyfin"];
/// The apt snippet's file name in apt.conf.d.
const APT_SNIPPET: &str = "80jellysnap";
/// The systemd drop-in's file name in `<unit>.d/`.
const DROP_IN: &str = "jellysnap.conf";

/// Whether `c` runs a hook (rather than installing or removing one).
pub fn is_run(c: &super::args::Command) -> bool {
    matches!(
        c,
        super::args::Command::Hook {
            kind: HookKind::Apt {
                action: AptAction::Run(_)
            } | HookKind::Systemd {
                action: SystemdAction::Run { .. }
            } | HookKind::Container { .. }
        }
    )
}

/// Run a hook's body; a panic (a bug) is reported as its failure rather than ending the
/// process with a code that would stop apt or the server.
fn contained(
    ctx: &Ctx,
    g: &GuardArgs,
    hook: &str,
    body: impl FnOnce() -> Result<ExitCode, Error>,
) -> Result<ExitCode, Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            let e = Error::Internal(format!("the {hook} hook panicked"));
            failed(ctx, g, hook, "this change", &e)
        }
    }
}

pub fn hook(ctx: &Ctx, kind: &HookKind) -> Result<ExitCode, Error> {
    match kind {
        HookKind::Apt { action } => match action {
            AptAction::Install {
                apt_conf_dir,
                abort_on_failure,
            } => apt_install(ctx, apt_conf_dir, *abort_on_failure),
            AptAction::Remove { apt_conf_dir } => {
                remove(ctx, &apt_conf_dir.join(APT_SNIPPET), "apt snippet")
            }
            AptAction::Run(g) => contained(ctx, g, "apt", || apt_run(ctx, g)),
        },
        HookKind::Systemd { action } => match action {
            SystemdAction::Install {
                unit_dir,
                unit,
                abort_on_failure,
                server_dir,
            } => systemd_install(
                ctx,
                unit_dir,
                unit,
                *abort_on_failure,
                server_dir.as_deref(),
            ),
            SystemdAction::Remove { unit_dir, unit } => {
                let path = drop_in_path(unit_dir, unit);
                let code = remove(ctx, &path, "systemd drop-in")?;
                ctx.out
                    .text("run `systemctl daemon-reload` for systemd to forget it");
                Ok(code)
            }
            SystemdAction::Run {
                guard,
                server_version,
                server_dir,
            } => {
                let installed = match server_version {
                    Some(v) => Some(v.clone()),
                    None => installed_server(ctx, server_dir.as_deref()),
                };
                let naming = if installed.is_some() {
                    Naming::Always
                } else {
                    Naming::IfFree
                };
                contained(ctx, guard, "systemd", || {
                    prestart(ctx, guard, installed, naming, "systemd")
                })
            }
        },
        HookKind::Container {
            action: ContainerAction::Run { guard, image_tag },
        } => {
            // An exact tag (10.11.4, or 10.11.4.20251120 for a rebuild) names the
            // server; any other (latest, 10.11, unstable...) may hide a new one.
            let exact = exact_tag(image_tag).then(|| image_tag.clone());
            let naming = if exact.is_some() {
                Naming::Always
            } else {
                Naming::IfFree
            };
            contained(ctx, guard, "container", || {
                prestart(ctx, guard, exact, naming, "container")
            })
        }
    }
}

/// `X.Y.Z` or `X.Y.Z.N`, digits only.
fn exact_tag(tag: &str) -> bool {
    let parts: Vec<&str> = tag.split('.').collect();
    (3..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The installed server's version: dpkg's on a Debian install (or one of unknown
/// layout), else the assembly's in `server_dir`.
fn installed_server(ctx: &Ctx, server_dir: Option<&Path>) -> Option<String> {
    let layout = ctx.config.config.jellyfin.layout.as_deref();
    let from_dpkg = matches!(layout, None | Some("debian"))
        .then(guard::installed_package)
        .flatten();
    from_dpkg.or_else(|| server_dir.and_then(guard::version_from_assembly))
}

/// This binary's absolute path, as the hooks must name it.
fn this_binary() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    Ok(exe.canonicalize().unwrap_or(exe))
}

/// `s` as one word of a shell (apt runs hooks through /bin/sh) or a systemd command
/// line: plain when it needs no quoting, else single-quoted; a path neither can carry is
/// refused.
fn word(s: &str) -> Result<String, Error> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._+-:=@,".contains(c);
    if s.chars().all(plain) && !s.is_empty() {
        return Ok(s.to_string());
    }
    if s.chars().all(|c| plain(c) || c == ' ') {
        return Ok(format!("'{s}'"));
    }
    Err(Error::Option(jellysnap::OptionError::Unquotable(
        s.to_string(),
    )))
}

/// The command a hook runs: this binary, the configuration file when it was named
/// explicitly (the hook's environment has no JELLYSNAP_CONFIG), the hook's arguments.
fn hook_command(ctx: &Ctx, args: &[&str]) -> Result<(String, String), Error> {
    let exe = this_binary()?;
    let exe = exe.to_string_lossy().into_owned();
    let mut cmd = word(&exe)?;
    if ctx.config.explicit {
        cmd.push_str(&format!(
            " --config {}",
            word(&ctx.config.path.to_string_lossy())?
        ));
    }
    if ctx.repo_from_args {
        cmd.push_str(&format!(
            " --repo {}",
            word(&ctx.repo_path.to_string_lossy())?
        ));
    }
    for a in args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    Ok((exe, cmd))
}

fn apt_install(ctx: &Ctx, dir: &Path, abort: bool) -> Result<ExitCode, Error> {
    let mut args = vec!["hook", "apt", "run"];
    if abort {
        args.push("--abort-on-failure");
    }
    let (exe, cmd) = hook_command(ctx, &args)?;
    if exe.contains(' ') {
        // apt finds a hook's options under its first word.
        return Err(Error::Option(jellysnap::OptionError::Unquotable(exe)));
    }
    let text = format!(
        "// Written by `jellysnap hook apt install`; `jellysnap hook apt remove` removes it.\n\
         // Before dpkg runs, apt tells jellysnap which packages change (protocol version 3:\n\
         // old and new versions); when jellyfin-server or jellyfin is upgraded, downgraded or\n\
         // removed, jellysnap snapshots the Jellyfin data first. It never fails apt unless\n\
         // the command says --abort-on-failure.\n\
         DPkg::Pre-Install-Pkgs {{ \"{cmd}\"; }};\n\
         DPkg::Tools::Options::{exe}::Version \"3\";\n"
    );
    let path = dir.join(APT_SNIPPET);
    let replaced = guard::install_file(&path, &text, true)?;
    ctx.out.json_with(
        || json!({ "installed": path.to_string_lossy(), "replaced": replaced, "command": cmd }),
    );
    ctx.out.text(&format!(
        "wrote {}: apt runs `{cmd}` before it changes packages",
        path.display()
    ));
    Ok(ExitCode::Success)
}

fn drop_in_path(unit_dir: &Path, unit: &str) -> PathBuf {
    unit_dir.join(format!("{unit}.d")).join(DROP_IN)
}

fn systemd_install(
    ctx: &Ctx,
    unit_dir: &Path,
    unit: &str,
    abort: bool,
    server_dir: Option<&Path>,
) -> Result<ExitCode, Error> {
    let server_dir = match server_dir {
        // The unit runs it from / : an absolute path.
        Some(d) => Some(word(
            &std::path::absolute(d)
                .map_err(|e| Error::io(d, e))?
                .to_string_lossy(),
        )?),
        None => None,
    };
    let mut args = vec!["hook", "systemd", "run"];
    if let Some(d) = &server_dir {
        args.extend(["--server-dir", d.as_str()]);
    }
    let (_, cmd) = hook_command(ctx, &args)?;
    // `+`: as root whatever the unit's User= (the repository and the state are root's);
    // `-`: a failure does not keep the server from starting.
    let prefix = if abort { "+" } else { "-+" };
    let text = format!(
        "# Written by `jellysnap hook systemd install`; `jellysnap hook systemd remove` removes it.\n\
         # Before the server starts, jellysnap compares the installed server version with the\n\
         # one that last ran on the data, and snapshots the data when they differ (otherwise\n\
         # it returns at once). `-` lets the server start when the snapshot fails; `+` runs\n\
         # it as root.\n\
         [Service]\n\
         ExecStartPre={prefix}{}\n\
         # A first snapshot of a large metadata dir can take minutes, and a start that times\n\
         # out fails whatever the prefix above says.\n\
         TimeoutStartSec=30min\n",
        cmd.replace('%', "%%")
    );
    let path = drop_in_path(unit_dir, unit);
    let replaced = guard::install_file(&path, &text, true)?;
    ctx.out.json_with(
        || json!({ "installed": path.to_string_lossy(), "replaced": replaced, "command": cmd }),
    );
    ctx.out.text(&format!(
        "wrote {}: {unit} runs `{cmd}` before it starts\nrun `systemctl daemon-reload` for systemd to read it",
        path.display()
    ));
    Ok(ExitCode::Success)
}

fn remove(ctx: &Ctx, path: &Path, what: &str) -> Result<ExitCode, Error> {
    let was = guard::remove_file(path)?;
    ctx.out
        .json_with(|| json!({ "removed": was, "path": path.to_string_lossy() }));
    ctx.out.text(&if was {
        format!("removed the {what} {}", path.display())
    } else {
        format!("no {what} at {}: nothing to remove", path.display())
    });
    Ok(ExitCode::Success)
}

/// A Jellyfin package's change in one apt transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    package: String,
    old: String,
    /// `None`: removed.
    new: Option<String>,
}

impl Change {
    fn describe(&self) -> String {
        match &self.new {
            Some(n) => format!("{} {} -> {n}", self.package, self.old),
            None => format!("the removal of {} {}", self.package, self.old),
        }
    }
}

/// The change apt's package list (protocol version 2 or 3) makes to a Jellyfin
/// package that is installed now; `None` for a fresh install, a reinstall of the same
/// version or unrelated packages.
fn jellyfin_change(input: &str) -> Option<Change> {
    let mut lines = input.lines();
    let version: u32 = lines
        .next()?
        .strip_prefix("VERSION ")?
        .trim()
        .parse()
        .ok()?;
    // The configuration space ends with a blank line.
    for l in lines.by_ref() {
        if l.is_empty() {
            break;
        }
    }
    let mut changes: Vec<Change> = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(' ').collect();
        // name old [arch multiarch] cmp new [arch multiarch] action
        let (old, cmp, new, action) = match (version, f.len()) {
            (2, 5) => (f[1], f[2], f[3], f[4]),
            (3.., 9) => (f[1], f[4], f[5], f[8]),
            _ => continue,
        };
        if !PACKAGES.contains(&f[0]) || old == "-" {
            continue;
        }
        let removed = action == "**REMOVE**" || new == "-";
        if !removed && (cmp == "=" || old == new) {
            continue;
        }
        changes.push(Change {
            package: f[0].to_string(),
            old: old.to_string(),
            new: (!removed).then(|| new.to_string()),
        });
    }
    PACKAGES
        .iter()
        .find_map(|p| changes.iter().find(|c| c.package == *p).cloned())
}

fn apt_run(ctx: &Ctx, g: &GuardArgs) -> Result<ExitCode, Error> {
    // Read all of it: apt writes the whole list, and a hook that stops reading makes
    // its write fail.
    let mut input = Vec::new();
    let read = std::io::stdin().read_to_end(&mut input);
    let input = String::from_utf8_lossy(&input);
    if let Err(e) = read {
        return failed(ctx, g, "apt", "the apt transaction", &Error::io("stdin", e));
    }
    let Some(change) = jellyfin_change(&input) else {
        ctx.out.json_with(|| json!({ "snapshot": null, "reason": "no Jellyfin package is upgraded, downgraded or removed" }));
        return Ok(ExitCode::Success);
    };
    let what = change.describe();
    if let Some(e) = ctx.deferred_error {
        return failed(ctx, g, "apt", &what, e);
    }
    match guard_snapshot(ctx, g, &change.old, Naming::Always, "apt", &what) {
        Ok((id, data_dir)) => {
            // The server apt installs is the one that will run: a systemd pre-start
            // after this need not snapshot again.
            if let Some(new) = &change.new {
                let state = GuardState::new(&data_dir, Some(new.clone()), Some(id));
                if let Err(e) = guard::write_state(&state_dir(), &state) {
                    ctx.out
                        .warn(&format!("could not record the guard state: {e}"));
                }
            }
            Ok(ExitCode::Success)
        }
        Err(e) => failed(ctx, g, "apt", &what, &e),
    }
}

/// A pre-start (systemd, container): snapshot when the installed server differs from
/// the one the state remembers; otherwise return without opening the repository.
fn prestart(
    ctx: &Ctx,
    g: &GuardArgs,
    installed: Option<String>,
    naming: Naming,
    hook: &str,
) -> Result<ExitCode, Error> {
    if let Some(e) = ctx.deferred_error {
        return failed(ctx, g, hook, "this server start", e);
    }
    let data_dir = match install(ctx, g) {
        Ok((d, _, _)) => d,
        Err(e) => return failed(ctx, g, hook, "this server start", &e),
    };
    let states = state_dir();
    let state = guard::read_state(&states, &data_dir);
    let (old, reason) = match guard::decide(installed.as_deref(), state.as_ref()) {
        Decision::UpToDate => {
            let v = installed.as_deref().unwrap_or("?");
            ctx.out.json_with(
                || json!({ "snapshot": null, "server_version": v, "reason": "unchanged" }),
            );
            ctx.out.text(&format!(
                "jellysnap: Jellyfin {v} started last on {}: no snapshot needed",
                data_dir.display()
            ));
            return Ok(ExitCode::Success);
        }
        Decision::Snapshot { old, reason } => (old, reason),
    };
    let old = old
        .or_else(|| last_ran_version(ctx, &data_dir))
        .unwrap_or_else(|| "unknown".into());
    let what = format!("this start ({reason})");
    match guard_snapshot(ctx, g, &old, naming, hook, &what) {
        Ok((id, data_dir)) => {
            let state = GuardState::new(&data_dir, installed, Some(id));
            if let Err(e) = guard::write_state(&states, &state) {
                ctx.out
                    .warn(&format!("could not record the guard state: {e}"));
            }
            Ok(ExitCode::Success)
        }
        Err(e) => failed(ctx, g, hook, &what, &e),
    }
}

/// The version that last ran on the data: the one question the guard asks of the data.
fn last_ran_version(ctx: &Ctx, data_dir: &Path) -> Option<String> {
    let j = &ctx.config.config.jellyfin;
    let config_dir = j.config_dir.as_ref().map(|p| p.0.as_path());
    let cache = super::args::cache_dir();
    std::fs::create_dir_all(&cache).ok()?;
    let scratch = tempfile::Builder::new()
        .prefix("guard-")
        .tempdir_in(&cache)
        .ok()?;
    guard::last_ran_version(data_dir, config_dir, scratch.path())
}

/// The install a hook guards: `--data-dir`, else the configuration file's (which must
/// be usable). Returns the data dir, config dir and metadata dir.
type Dirs = (PathBuf, Option<PathBuf>, Option<PathBuf>);

fn install(ctx: &Ctx, g: &GuardArgs) -> Result<Dirs, Error> {
    config_file::install_dirs(ctx.config, g.data_dir.as_deref(), None, None)
}

/// Take the snapshot; prints its one line. Returns the snapshot's id and the data dir.
fn guard_snapshot(
    ctx: &Ctx,
    g: &GuardArgs,
    old: &str,
    naming: Naming,
    hook: &str,
    what: &str,
) -> Result<(String, PathBuf), Error> {
    let (data_dir, config_dir, metadata_dir) = install(ctx, g)?;
    let opts = GuardOptions {
        source: SourceOptions {
            data_dir: data_dir.clone(),
            config_dir,
            metadata_dir,
            components: Component::ALL.into_iter().collect(),
        },
        old_version: old.to_string(),
        naming,
        tags: vec![format!("hook:{hook}")],
    };
    let o = guard::snapshot(&ctx.place, &opts, ctx.progress)
        .map_err(|e| jellysnap::full::repository_full(e, &ctx.place, "backup"))?;
    let id = o.id.to_hex();
    ctx.out.json_with(|| {
        json!({
            "snapshot": { "id": id, "name": o.record.name, "tags": o.record.tags },
            "data_dir": data_dir.to_string_lossy(),
            "before": what,
            "partial": o.is_partial(),
        })
    });
    ctx.out.text(&format!(
        "jellysnap: snapshot {}{} of {} taken before {what}",
        o.id.short(),
        paren_name(&o.record.name),
        data_dir.display()
    ));
    if o.is_partial() {
        ctx.out.err(&format!(
            "jellysnap: the snapshot is partial: {} path(s) could not be read (see `jellysnap snapshots --json`)",
            o.record.summary.errors.len() + o.record.not_captured.len()
        ));
    }
    Ok((id, data_dir))
}

/// A hook that could not snapshot: said loudly, and exit 0 unless the admin asked for
/// the upgrade or the start to stop.
fn failed(ctx: &Ctx, g: &GuardArgs, hook: &str, what: &str, e: &Error) -> Result<ExitCode, Error> {
    let code = ExitCode::of(e);
    let repo = ctx.repo_path.display();
    let goes_on = match hook {
        "apt" => "apt goes on",
        _ => "the server starts",
    };
    ctx.out.err(&format!(
        "jellysnap: ******** NO SNAPSHOT was taken before {what} ********\n\
         jellysnap: error: {e}\n\
         jellysnap: repository: {repo}\n\
         jellysnap: {} Take one by hand before the new server starts: `jellysnap backup --name before-jellyfin-...`",
        if g.abort_on_failure {
            format!("stopping here (--abort-on-failure, exit code {}).", code.code())
        } else {
            format!("{goes_on} anyway (pass --abort-on-failure to the hook to stop it instead).")
        }
    ));
    // The error in the shape every --json error has; `exit_code` is the hook's own.
    ctx.out.json_with(|| {
        json!({
            "snapshot": null,
            "error": { "code": code.code(), "message": e.to_string() },
            "exit_code": if g.abort_on_failure { code.code() } else { 0 },
        })
    });
    Ok(if g.abort_on_failure {
        code
    } else {
        ExitCode::Success
    })
}

/// Where the guard keeps its state: `$XDG_STATE_HOME/jellysnap`, else
/// `/var/lib/jellysnap` for root, `~/.local/state/jellysnap` for a user.
fn state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("jellysnap");
    }
    if jellysnap::system::is_root() {
        return PathBuf::from("/var/lib/jellysnap");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".local/state/jellysnap")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "VERSION 3\nAPT::Architecture=amd64\nDPkg::Pre-Install-Pkgs::=/usr/bin/jellysnap hook apt run\n\n";

    fn with(lines: &str) -> String {
        format!("{CONFIG}{lines}")
    }

    #[test]
    fn upgrades_downgrades_and_removals_are_found() {
        let up = with("jellyfin-web 10.11.3+deb12 all none < 10.11.4+deb12 all none /var/cache/apt/archives/jellyfin-web_10.11.4+deb12_all.deb\njellyfin-server 10.11.3+deb12 amd64 none < 10.11.4+deb12 amd64 none /var/cache/apt/archives/jellyfin-server_10.11.4+deb12_amd64.deb\njellyfin-server 10.11.3+deb12 amd64 none < 10.11.4+deb12 amd64 none **CONFIGURE**\n");
        assert_eq!(
            jellyfin_change(&up),
            Some(Change {
                package: "jellyfin-server".into(),
                old: "10.11.3+deb12".into(),
                new: Some("10.11.4+deb12".into())
            })
        );
        let down =
            with("jellyfin-server 10.11.4+deb12 amd64 none > 10.11.3+deb12 amd64 none /x.deb\n");
        assert_eq!(
            jellyfin_change(&down).unwrap().new.as_deref(),
            Some("10.11.3+deb12")
        );
        let rm = with("jellyfin 10.11.4+deb12 all none > - - none **REMOVE**\n");
        let c = jellyfin_change(&rm).unwrap();
        assert_eq!((c.package.as_str(), c.new), ("jellyfin", None));
        let fresh = with("jellyfin-server - - none < 10.11.4+deb12 amd64 none /x.deb\n");
        assert_eq!(jellyfin_change(&fresh), None);
        let same =
            with("jellyfin-server 10.11.4+deb12 amd64 none = 10.11.4+deb12 amd64 none /x.deb\n");
        assert_eq!(jellyfin_change(&same), None);
        let other = with("curl 8.5.0-2 amd64 none < 8.5.0-3 amd64 none /x.deb\n");
        assert_eq!(jellyfin_change(&other), None);
        let v2 = "VERSION 2\nA=b\n\njellyfin-server 10.11.3 < 10.11.4 /x.deb\n";
        assert_eq!(jellyfin_change(v2).unwrap().old, "10.11.3");
        assert_eq!(jellyfin_change("garbage"), None);
    }

    #[test]
    fn tags_are_exact_or_floating() {
        for t in ["10.11.4", "10.11.4.20251120"] {
            assert!(exact_tag(t), "{t}");
        }
        for t in [
            "latest",
            "10.11",
            "10",
            "unstable",
            "preview",
            "10.11.4-rc1",
            "",
        ] {
            assert!(!exact_tag(t), "{t}");
        }
    }
}
