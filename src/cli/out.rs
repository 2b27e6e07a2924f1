//! The one writer of the binary's output. Results go to stdout (text, or JSON with
//! `--json`); warnings and errors to stderr. With `--json` an error is one JSON object
//! on one line of stderr, `{"error": {"code": N, "message": "..."}}`.
//!
//! `-q` hides chatter (summaries, notes, warnings), never the data a command exists to
//! print ([`Out::data`]: the listings of `snapshots`, `ls`, `diff`, `stats`, a dry run's
//! plan).
//!
//! In JSON, ids are lowercase hex strings and every time is given twice: as Unix
//! nanoseconds in a field ending in `_ns`, and in the field of the same name without the
//! suffix as RFC 3339 UTC (`2026-12-06T19:28:03Z`), added here for every object.
//!
//! A write to stdout that fails is remembered, and later writes are skipped: the
//! command still runs to its end (a backup whose summary cannot be printed is committed
//! all the same, never stopped mid-write) and the run then exits with
//! [`ExitCode::BrokenPipe`] for a closed pipe (`jellysnap snapshots | head -1`), quietly,
//! or reports any other write error. A failed write to stderr is ignored: there is nowhere
//! left to say it.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};

use super::exit::ExitCode;

pub(crate) struct Out {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    /// Text results are the command's data (a dry run's plan): shown under `-q` too.
    text_is_data: Cell<bool>,
    failed: RefCell<Option<io::Error>>,
}

impl Out {
    pub(crate) fn new(json: bool, quiet: bool) -> Out {
        Out {
            json,
            quiet,
            text_is_data: Cell::new(false),
            failed: RefCell::new(None),
        }
    }

    /// Whether text results are printed (neither `--json` nor `-q`).
    pub(crate) fn human(&self) -> bool {
        !self.json && !self.quiet
    }

    /// A text result, one line (or several, joined by newlines).
    pub(crate) fn text(&self, s: &str) {
        if self.text_is_data.get() {
            self.data(s);
        } else if self.human() {
            self.stdout(s);
        }
    }

    /// From now on text results are data, shown under `-q` too: what a dry run prints
    /// is what it was run for.
    pub(crate) fn text_is_data(&self) {
        self.text_is_data.set(true);
    }

    /// Data the command exists to print, as text: shown under `-q` too (not with
    /// `--json`, which prints it as JSON).
    pub(crate) fn data(&self, s: &str) {
        if !self.json {
            self.stdout(s);
        }
    }

    /// A JSON result, built only with `--json` (a restore plan of a million files is
    /// not turned into a JSON value nobody prints); see [`Out::json`].
    pub(crate) fn json_with(&self, v: impl FnOnce() -> serde_json::Value) {
        if self.json {
            self.json(v());
        }
    }

    /// A JSON result (only with `--json`); each `X_ns` time gets its RFC 3339 twin `X`.
    pub(crate) fn json(&self, mut v: serde_json::Value) {
        if self.json {
            add_rfc3339(&mut v);
            match serde_json::to_string_pretty(&v) {
                Ok(s) => self.stdout(&s),
                Err(e) => err_line(&format!("jellysnap: cannot encode the JSON result: {e}")),
            }
        }
    }

    /// An error: with `--json` one JSON object on one line of stderr, else `text`.
    pub(crate) fn error(&self, code: i32, message: &str, text: &str) {
        if self.json {
            err_line(&error_json(code, message));
        } else {
            err_line(text);
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

/// The JSON object of an error under `--json`, on one line.
pub(crate) fn error_json(code: i32, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

/// Give every integer field `X_ns` (Unix nanoseconds) a twin `X` in RFC 3339 UTC,
/// unless the object has an `X` already.
fn add_rfc3339(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            let twins: Vec<(String, String)> = o
                .iter()
                .filter_map(|(k, v)| {
                    let base = k.strip_suffix("_ns").filter(|b| !b.is_empty())?;
                    let ns = v.as_i64()?;
                    (!o.contains_key(base))
                        .then(|| (base.to_string(), jellysnap::timefmt::rfc3339(ns)))
                })
                .collect();
            for (k, t) in twins {
                o.insert(k, serde_json::Value::String(t));
            }
            o.values_mut().for_each(add_rfc3339);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(add_rfc3339),
        _ => {}
    }
}

/// One line on stderr; a failure to write it is ignored.
pub(crate) fn err_line(msg: &str) {
    let _ = writeln!(io::stderr().lock(), "{msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_get_an_rfc3339_twin() {
        let mut v = serde_json::json!({
            "time_ns": 1_764_045_078_000_000_000i64,
            "items": [{ "mtime_ns": 0 }],
            "kept": { "time_ns": 5, "time": "as it was" },
        });
        add_rfc3339(&mut v);
        assert_eq!(v["time"], "2025-11-25T04:31:18Z");
        assert_eq!(v["items"][0]["mtime"], "1970-01-01T00:00:00Z");
        assert_eq!(v["kept"]["time"], "as it was");
    }
}
