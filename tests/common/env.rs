//! A temp dir with a repository path, and running the built binary against it. Shared by
//! the end-to-end test files; each adds its own helpers in an `impl Env` block.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_jellysnap");

pub struct Env {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Env {
            repo: root.join("repo"),
            root,
            _tmp: tmp,
        }
    }

    /// Run the binary against this repository. A `backup` gets `--init`: tests start from
    /// a repository path that holds nothing yet (`run_exact` runs the arguments as given).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut a = args.to_vec();
        if let Some(i) = a.iter().position(|x| !x.starts_with('-')) {
            if a[i] == "backup" && !a.contains(&"--init") {
                a.insert(i + 1, "--init");
            }
        }
        self.run_exact(&a)
    }

    pub fn run_exact(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--repo")
            .arg(&self.repo)
            .args(args)
            .output()
            .unwrap()
    }

    /// Run with `--json`, expect `code`, return parsed stdout.
    pub fn json(&self, args: &[&str], code: i32) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\nstdout: {}\nstderr: {}",
            s(&out.stdout),
            s(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

pub fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
