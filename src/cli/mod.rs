//! The command line: parse, call the engine, render the result (text or `--json`).
//! The only part of jellysnap that talks to the terminal. Each command has its file:
//! it turns the command's clap arguments into the engine's validated options in one
//! step, calls the engine and renders what comes back.

mod args;
mod backup;
mod browse;
mod check;
mod config_file;
mod copy;
mod edit;
mod exit;
mod forget;
mod gc;
mod hook;
mod out;
mod progress;
mod render;
mod repair;
mod restore;
mod rollback;
mod setup;
mod stats;

use std::path::PathBuf;

use clap::Parser;

use jellysnap::{Error, Location, Place, Repository};

use args::{Cli, Command};
use exit::ExitCode;
use out::Out;
use progress::TermProgress;

/// What every command is given: where the repository is, how to print, progress.
pub(crate) struct Ctx<'a> {
    /// The repository as the user named it, for messages.
    pub(crate) repo_path: PathBuf,
    /// Where the repository is, and the cache dir for its local state.
    pub(crate) place: Place,
    /// Whether the repository path is the default one (no --repo / JELLYSNAP_REPO).
    pub(crate) default_repo: bool,
    /// The configuration file as read (empty when there is none).
    pub(crate) config: &'a config_file::Loaded,
    /// Why the configuration file or the repository location cannot be used: only the
    /// commands that must not fail on it (the hooks, setup) get this far with one; a
    /// hook reports it as its failure, and only when it has something to protect.
    pub(crate) deferred_error: Option<&'a Error>,
    /// Whether the repository came from --repo or JELLYSNAP_REPO.
    pub(crate) repo_from_args: bool,
    pub(crate) out: &'a Out,
    pub(crate) progress: &'a TermProgress,
    /// How many `-v`.
    pub(crate) verbose: u8,
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_exit(&e, args::json_requested()),
    };
    if let Some(n) = args::io_threads() {
        jellysnap::set_io_threads(n);
    }
    let out = Out::new(cli.json, cli.quiet);
    let progress = TermProgress::new(cli.quiet, cli.json, cli.verbose > 0);
    let located = config_file::locate(cli.config.as_deref());
    let (loaded, mut deferred_error) = match config_file::load(&located) {
        Ok(l) => (l, None),
        Err(e) if tolerates_config_errors(&cli.command) => (
            config_file::Loaded {
                path: located.path.clone(),
                explicit: located.explicit,
                found: false,
                config: Default::default(),
            },
            Some(e),
        ),
        Err(e) => return out.finish(report_error(&out, &e)),
    };
    let default_repo = args::default_repo();
    // --repo / JELLYSNAP_REPO, else the configuration file's, else the default.
    let repo_path = cli
        .repo
        .clone()
        .or_else(|| loaded.config.repository.clone().map(|r| r.0))
        .unwrap_or(default_repo.clone());
    let place = match args::place(&repo_path) {
        Ok(p) => p,
        // (S3 credentials missing from apt's environment must not fail apt.)
        Err(e) if tolerates_config_errors(&cli.command) => {
            deferred_error.get_or_insert(e);
            Place::new(Location::Local(repo_path.clone()), args::cache_dir())
        }
        Err(e) => return out.finish(report_error(&out, &e)),
    };
    let ctx = Ctx {
        default_repo: repo_path == default_repo,
        config: &loaded,
        deferred_error: deferred_error.as_ref(),
        repo_from_args: cli.repo.is_some(),
        repo_path,
        place,
        out: &out,
        progress: &progress,
        verbose: cli.verbose,
    };
    let code = match dispatch(&ctx, &cli.command) {
        Ok(code) => code,
        Err(e) => report_error(&out, &e),
    };
    // A hook that let the upgrade or the start go on says so with 0, whatever became
    // of its one line of output (apt aborts on any other code).
    match (out.finish(code), code) {
        (_, ExitCode::Success) if hook::is_run(&cli.command) => ExitCode::Success,
        (finished, _) => finished,
    }
}

/// The commands that must run even with an unusable configuration file or repository
/// location: a hook must not fail an upgrade or a server start over it (it reports it
/// instead), installing a hook does not use either, and setup is how the file gets
/// rewritten.
fn tolerates_config_errors(c: &Command) -> bool {
    matches!(c, Command::Setup(_) | Command::Hook { .. })
}

/// Help and version print and succeed; anything else clap refuses is a bad command line
/// (with `--json`, said as the JSON error object).
fn clap_exit(e: &clap::Error, json: bool) -> ExitCode {
    if e.exit_code() != 0 {
        if json {
            let message = e.render().to_string();
            out::err_line(&out::error_json(
                ExitCode::Usage.code(),
                message.trim_end().trim_start_matches("error: "),
            ));
        } else {
            let _ = e.print();
        }
        return ExitCode::Usage;
    }
    let printed = e.print();
    match printed {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::BrokenPipe,
        _ => ExitCode::Success,
    }
}

fn dispatch(ctx: &Ctx, command: &Command) -> Result<ExitCode, Error> {
    // A write into the repository that met a full file system is said as that, whichever
    // write met it first.
    run_command(ctx, command)
        .map_err(|e| jellysnap::full::repository_full(e, &ctx.place, command_name(command)))
}

/// The command as the user typed it, for messages.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Init => "init",
        Command::Backup(_) | Command::Hook { .. } => "backup",
        Command::Copy(_) => "copy",
        Command::Snapshots(_) => "snapshots",
        Command::Ls { .. } => "ls",
        Command::Diff { .. } => "diff",
        Command::Dump { .. } => "dump",
        Command::Restore(_) => "restore",
        Command::Forget(_) => "forget",
        Command::Gc(_) => "gc",
        Command::Tag(_) => "tag",
        Command::Name(_) => "name",
        Command::Check(_) => "check",
        Command::Repair { .. } => "repair",
        Command::Stats { .. } => "stats",
        Command::Setup(_) => "setup",
    }
}

fn run_command(ctx: &Ctx, command: &Command) -> Result<ExitCode, Error> {
    match command {
        Command::Init => backup::init(ctx),
        Command::Backup(a) => backup::backup(ctx, a),
        Command::Copy(a) => copy::copy(ctx, a),
        Command::Snapshots(a) => browse::snapshots(ctx, a),
        Command::Ls {
            snapshot,
            path,
            recursive,
        } => browse::ls(ctx, snapshot, path.as_deref(), *recursive),
        Command::Diff { from, to } => browse::diff(ctx, from, to),
        Command::Dump { snapshot, path } => browse::dump(ctx, snapshot, path),
        Command::Restore(a) => restore::restore(ctx, a),
        Command::Forget(a) => forget::forget(ctx, a),
        Command::Gc(a) => gc::gc(ctx, a),
        Command::Tag(a) => edit::tag(ctx, a),
        Command::Name(a) => edit::name(ctx, a),
        Command::Check(a) => check::check(ctx, a),
        Command::Repair { what } => repair::repair(ctx, what),
        Command::Stats { snapshots } => stats::stats(ctx, snapshots),
        Command::Setup(a) => setup::setup(ctx, a),
        Command::Hook { kind } => hook::hook(ctx, kind),
    }
}

/// Print the error and its chain on stderr (with `--json`, as the JSON error object).
fn report_error(out: &Out, e: &Error) -> ExitCode {
    let code = ExitCode::of(e);
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(&format!("\n  caused by: {s}"));
        src = s.source();
    }
    out.error(code.code(), &chain, &format!("jellysnap: error: {chain}"));
    code
}

/// The snapshot's name in parentheses after its id, or nothing.
pub(crate) fn paren_name(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
}

pub(crate) fn report_rebuild(repo: &Repository, out: &Out) {
    if let Some(ro) = &repo.read_only {
        let lock = match ro.locked {
            true => "reading it under a lock taken read-only",
            false => "no lock can be taken there, reading without one",
        };
        let index = match ro.index_in_memory {
            true => {
                let packs = repo.index_rebuilt.as_ref().map_or(0, |r| r.packs);
                format!("; its index is missing or outdated, read from {packs} pack(s) into memory")
            }
            false => String::new(),
        };
        out.warn(&format!(
            "repository {} cannot be written here ({}): {lock}{index}",
            repo.location().as_path().display(),
            ro.why
        ));
    } else if let Some(r) = &repo.index_rebuilt {
        if r.in_memory_for_full {
            out.warn(&format!(
                "the repository's file system is full: its index, missing or outdated, could not be written there; read from {} pack(s) into memory for this run (free space there and the next command writes it)",
                r.packs
            ));
        } else if r.packs > 0 {
            out.warn(&format!(
                "the repository index was missing or outdated; rebuilt it from {} pack(s), {} chunk(s)",
                r.packs, r.chunks
            ));
        }
    }
    if let Some(why) = repo.unleased() {
        out.warn(&format!(
            "this command left no lease in the repository ({why}): a gc run from another \
             machine meanwhile will not know of it, but still keeps what it marks for its \
             grace period"
        ));
    }
}
