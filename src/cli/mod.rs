//! The command line: parse, call the engine, render the result (text or `--json`).
//! The only part of jellysnap that talks to the terminal. Each command has its file:
//! it turns the command's clap arguments into the engine's validated options in one
//! step, calls the engine and renders what comes back.

mod args;
mod backup;
mod browse;
mod check;
mod copy;
mod exit;
mod forget;
mod gc;
mod out;
mod progress;
mod render;
mod repair;
mod restore;
mod rollback;
mod stats;

use std::path::PathBuf;

use clap::Parser;
use serde_json::json;

use jellysnap::{Error, Place, Repository};

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
    pub(crate) out: &'a Out,
    pub(crate) progress: &'a TermProgress,
    pub(crate) verbose: bool,
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_exit(&e),
    };
    if let Some(n) = args::io_threads() {
        jellysnap::set_io_threads(n);
    }
    let out = Out::new(cli.json, cli.quiet);
    let progress = TermProgress::new(cli.quiet, cli.json, cli.verbose > 0);
    let default_repo = args::default_repo();
    let repo_path = cli.repo.clone().unwrap_or(default_repo.clone());
    let place = match args::place(&repo_path) {
        Ok(p) => p,
        Err(e) => return out.finish(report_error(&out, &e)),
    };
    let ctx = Ctx {
        default_repo: cli.repo.as_ref().is_none_or(|r| *r == default_repo),
        repo_path,
        place,
        out: &out,
        progress: &progress,
        verbose: cli.verbose > 0,
    };
    let code = match dispatch(&ctx, &cli.command) {
        Ok(code) => code,
        Err(e) => report_error(&out, &e),
    };
    out.finish(code)
}

/// Help and version print and succeed; anything else clap refuses is a bad command line.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let printed = e.print();
    if e.exit_code() != 0 {
        return ExitCode::Usage;
    }
    match printed {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::BrokenPipe,
        _ => ExitCode::Success,
    }
}

fn dispatch(ctx: &Ctx, command: &Command) -> Result<ExitCode, Error> {
    match command {
        Command::Init => backup::init(ctx),
        Command::Backup(a) => backup::backup(ctx, a),
        Command::Copy(a) => copy::copy(ctx, a),
        Command::Snapshots => browse::snapshots(ctx),
        Command::Ls {
            snapshot,
            path,
            recursive,
        } => browse::ls(ctx, snapshot, path.as_deref(), *recursive),
        Command::Diff { from, to } => browse::diff(ctx, from, to),
        Command::Restore(a) => restore::restore(ctx, a),
        Command::Forget(a) => forget::forget(ctx, a),
        Command::Gc(a) => gc::gc(ctx, a),
        Command::Check(a) => check::check(ctx, a),
        Command::Repair { what } => repair::repair(ctx, what),
        Command::Stats { snapshots } => stats::stats(ctx, snapshots),
    }
}

/// Print the error and its chain (and the JSON error object with `--json`).
fn report_error(out: &Out, e: &Error) -> ExitCode {
    let code = ExitCode::of(e);
    out.json(json!({ "error": e.to_string(), "exit_code": code.code() }));
    let mut msg = format!("jellysnap: error: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!("\n  caused by: {s}"));
        src = s.source();
    }
    out.err(&msg);
    code
}

/// The snapshot's name in parentheses after its id, or nothing.
pub(crate) fn paren_name(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
}

pub(crate) fn report_rebuild(repo: &Repository, out: &Out) {
    if let Some(r) = &repo.index_rebuilt {
        if r.packs > 0 {
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
