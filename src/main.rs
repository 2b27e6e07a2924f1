//! The jellysnap binary: parse, run, print the error chain, map it to an exit code.

#![warn(clippy::unwrap_used)]

mod cli;

fn main() {
    std::process::exit(cli::run().code());
}
