//! The one writer of the binary's output. Results go to stdout (text, or JSON with
//! `--json`); warnings and errors to stderr.
//!
//! A write to stdout that fails is remembered, and later writes are skipped: the
//! command still runs to its end (a backup whose summary cannot be printed is committed
//! all the same, never stopped mid-write) and the run then exits with
//! [`ExitCode::BrokenPipe`] for a closed pipe (`jellysnap snapshots | head -1`), quietly,
//! or reports any other write error. A failed write to stderr is ignored: there is nowhere
//! left to say it.

use std::cell::RefCell;
use std::io::{self, Write};

use super::exit::ExitCode;

pub(crate) struct Out {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    failed: RefCell<Option<io::Error>>,
}

impl Out {
    pub(crate) fn new(json: bool, quiet: bool) -> Out {
        Out {
            json,
            quiet,
            failed: RefCell::new(None),
        }
    }

    /// Whether text results are printed (neither `--json` nor `-q`).
    pub(crate) fn human(&self) -> bool {
        !self.json && !self.quiet
    }

    /// A text result, one line (or several, joined by newlines).
    pub(crate) fn text(&self, s: &str) {
        if self.human() {
            self.stdout(s);
        }
    }

    /// A JSON result (only with `--json`).
    pub(crate) fn json(&self, v: serde_json::Value) {
        if self.json {
            match serde_json::to_string_pretty(&v) {
                Ok(s) => self.stdout(&s),
                Err(e) => err_line(&format!("jellysnap: cannot encode the JSON result: {e}")),
            }
        }
    }

    /// A warning on stderr, unless `-q`.
    pub(crate) fn warn(&self, msg: &str) {
        if !self.quiet {
            err_line(&format!("warning: {msg}"));
        }
    }

    /// A message on stderr, even under `-q` (errors, files that were not captured).
    pub(crate) fn err(&self, msg: &str) {
        err_line(msg);
    }

    fn stdout(&self, s: &str) {
        if self.failed.borrow().is_some() {
            return;
        }
        let mut o = io::stdout().lock();
        if let Err(e) = writeln!(o, "{s}").and_then(|()| o.flush()) {
            *self.failed.borrow_mut() = Some(e);
        }
    }

    /// The exit code once the command has ended with `code`: a failed stdout turns
    /// success into [`ExitCode::BrokenPipe`] (closed pipe) or [`ExitCode::Failure`]; any
    /// other code says more and stays.
    pub(crate) fn finish(&self, code: ExitCode) -> ExitCode {
        match (&*self.failed.borrow(), code) {
            (Some(e), ExitCode::Success) if e.kind() == io::ErrorKind::BrokenPipe => {
                ExitCode::BrokenPipe
            }
            (Some(e), ExitCode::Success) => {
                err_line(&format!("jellysnap: error: cannot write to stdout: {e}"));
                ExitCode::Failure
            }
            _ => code,
        }
    }
}

/// One line on stderr; a failure to write it is ignored.
pub(crate) fn err_line(msg: &str) {
    let _ = writeln!(io::stderr().lock(), "{msg}");
}
