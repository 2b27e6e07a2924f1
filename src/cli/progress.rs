//! Progress bars on stderr (only on a terminal) and warnings.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use jellysnap::progress::Progress;

pub struct TermProgress {
    bar: Option<ProgressBar>,
    verbose: bool,
    quiet: bool,
    warnings: Mutex<u64>,
}

impl TermProgress {
    pub fn new(quiet: bool, json: bool, verbose: bool) -> Self {
        let bar = (!quiet && !json && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        TermProgress {
            bar,
            verbose,
            quiet,
            warnings: Mutex::new(0),
        }
    }

    fn say(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => super::out::err_line(msg),
        }
    }
}

impl Progress for TermProgress {
    fn phase(&self, name: &str, total: Option<u64>) {
        if let Some(b) = &self.bar {
            b.set_position(0);
            match total {
                Some(t) => {
                    b.set_length(t);
                    b.set_style(
                        ProgressStyle::with_template(
                            "{msg:>22} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                }
                None => {
                    b.unset_length();
                    b.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                }
            }
            b.set_message(name.to_string());
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    fn warn(&self, message: &str) {
        if let Ok(mut n) = self.warnings.lock() {
            *n += 1;
        }
        if !self.quiet {
            self.say(&format!("warning: {message}"));
        }
    }

    fn info(&self, message: &str) {
        if self.verbose {
            self.say(message);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
