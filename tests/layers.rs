//! The layering rules of docs/ARCHITECTURE.md ("The layers"), checked on the source:
//! every `crate::` path in the engine points at its own layer or one below it, only the
//! CLI prints, and only the CLI and the test seams read the environment.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first; a file may use its own layer and those listed before it,
/// except that `store` and `jellyfin` (same level) do not use each other.
fn layer_of(rel: &str) -> &'static str {
    let first = rel.split('/').next().unwrap_or("");
    match first {
        "error.rs" | "id.rs" | "sys.rs" => "base",
        "format" => "format",
        "store" => "store",
        "jellyfin" => "jellyfin",
        "ops" => "ops",
        "lib.rs" => "facade",
        "cli" | "main.rs" => "cli",
        other => {
            panic!("src/{rel}: no layer for `{other}`; add it to docs/ARCHITECTURE.md and here")
        }
    }
}

fn allowed(from: &str) -> &'static [&'static str] {
    match from {
        "base" => &["base"],
        "format" => &["base", "format"],
        "store" => &["base", "format", "store"],
        "jellyfin" => &["base", "format", "jellyfin"],
        "ops" => &["base", "format", "store", "jellyfin", "ops"],
        "facade" => &["base", "format", "store", "jellyfin", "ops"],
        _ => &[],
    }
}

/// The layer a `crate::<first>` path names.
fn target_layer(first: &str) -> Option<&'static str> {
    Some(match first {
        "error" | "id" | "sys" => "base",
        "format" => "format",
        "store" => "store",
        "jellyfin" => "jellyfin",
        "ops" => "ops",
        _ => return None,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments (line comments only: the engine has no block
/// comments) and without its `#[cfg(test)]` tail module.
fn code(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            (rel, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_import_points_down() {
    let mut wrong = BTreeSet::new();
    for (rel, text) in sources() {
        let from = layer_of(&rel);
        if from == "cli" {
            continue;
        }
        let code = code(&text);
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let first: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let Some(to) = target_layer(&first) else {
                continue;
            };
            if !allowed(from).contains(&to) {
                wrong.insert(format!("src/{rel} ({from}) uses crate::{first} ({to})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{wrong:#?}"
    );
}

#[test]
fn only_the_cli_prints_or_reads_the_environment() {
    let mut wrong = BTreeSet::new();
    for (rel, text) in sources() {
        if layer_of(&rel) == "cli" || rel == "store/testing.rs" {
            continue;
        }
        let code = code(&text);
        for needle in [
            "println!",
            "eprintln!",
            "print!(",
            "eprint!(",
            "io::stdout",
            "io::stderr",
            "env::var",
            "env::args",
        ] {
            if code.contains(needle) {
                wrong.insert(format!("src/{rel}: {needle}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "engine code that prints or reads the environment (the CLI's job):\n{wrong:#?}"
    );
}

#[test]
fn the_facade_only_re_exports() {
    let text =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in code(&text).lines() {
        let l = line.trim();
        let ok = l.is_empty()
            || l.starts_with("#!")
            || l.starts_with("#[")
            || l.starts_with("mod ")
            || l.starts_with("pub use ")
            || l.starts_with("pub mod ") && l.ends_with('{')
            || l == "}"
            // Continuation lines of a multi-line `pub use`.
            || l.ends_with(',')
            || l.ends_with("};")
            || l.ends_with("::{");
        assert!(ok, "src/lib.rs holds more than re-exports: `{l}`");
        assert!(
            !l.starts_with("pub mod ") || l.ends_with('{'),
            "src/lib.rs exposes a module as it is: `{l}`"
        );
    }
}
