//! A temp dir with a repository path, and the built binary run against it: [`Cmd`] is one
//! run (its arguments, the test hooks, another user), [`Env`] the repository with backup
//! and restore-and-compare. Tests that need root say so with `#[ignore = "needs root:
//! ..."]` and [`need_root`] (CI runs them as root with `--include-ignored`).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::fixture::{self, Fixture, FixtureSpec, Layout};
use super::verify::{self, State};

pub const BIN: &str = env!("CARGO_BIN_EXE_jellysnap");
/// The uid and gid of user `nobody`.
pub const NOBODY: u32 = 65534;

/// Variables of the tester's environment a command never inherits (see [`Cmd::command`]).
pub const HOST_ENV: [&str; 12] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "AWS_PROFILE",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
];

pub fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The first line of a test marked `#[ignore = "needs root: <why>"]`: run by another user
/// (with `--include-ignored`), it fails saying why instead of passing without testing.
#[track_caller]
pub fn need_root(why: &str) {
    assert!(
        is_root(),
        "needs root: {why}; run as root with `cargo test --release -- --include-ignored`, as CI does"
    );
}

/// Let every user read (and, if `writable`, write) everything under `dir`, `dir` included;
/// symlinks are left as they are.
pub fn open_up(dir: &Path, writable: bool) {
    let (d, f) = if writable {
        (0o777, 0o666)
    } else {
        (0o755, 0o644)
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(d)).unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            open_up(&p, writable);
        } else if m.is_file() {
            fs::set_permissions(&p, fs::Permissions::from_mode(f)).unwrap();
        }
    }
}

/// Wait (a minute at most) until `done()` holds; panics naming `what` otherwise.
#[track_caller]
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The regular files under `dir` in sorted order (none if `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    fixture::walk_sorted(dir)
        .unwrap()
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

/// How many entries `dir` holds (0 if it does not exist).
pub fn entries_in(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// One run of the built binary. The test hooks (crash, pause and fault points, the
/// clock) are set here and nowhere else.
pub struct Cmd {
    wrap: Vec<OsString>,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
    quiet: bool,
    crash_point: Option<String>,
}

impl Cmd {
    /// The binary with `args`.
    pub fn new<S: AsRef<OsStr>>(args: &[S]) -> Cmd {
        Cmd {
            wrap: Vec::new(),
            args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
            envs: Vec::new(),
            dir: None,
            quiet: false,
            crash_point: None,
        }
    }

    /// The binary with `--repo repo` and `args`.
    pub fn at_repo(repo: &Path, args: &[&str]) -> Cmd {
        Cmd::new(&["--repo"]).arg(repo).args(args)
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Cmd {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        let v = Some(v.as_ref().to_os_string());
        self.envs.push((k.as_ref().to_os_string(), v));
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Cmd {
        self.envs.push((k.as_ref().to_os_string(), None));
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Cmd {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Run as user `nobody` with no groups (root only: see [`need_root`]).
    #[track_caller]
    pub fn by_nobody(mut self) -> Cmd {
        need_root("runs the binary as user nobody");
        let wrap = [
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ];
        self.wrap = std::iter::once("setpriv".into())
            .chain(wrap.map(OsString::from))
            .collect();
        self
    }

    /// Run in a new PID namespace with its own /proc, as inside a container (root only).
    #[track_caller]
    pub fn in_pid_namespace(mut self) -> Cmd {
        need_root("makes a PID namespace");
        self.wrap = ["unshare", "--pid", "--fork", "--mount-proc"]
            .map(OsString::from)
            .into();
        self
    }

    /// Run in a new UTS namespace whose host name is `name`, as on another machine (root
    /// only).
    #[track_caller]
    pub fn on_host(mut self, name: &str) -> Cmd {
        need_root("sets a host name in a UTS namespace");
        let script = format!("hostname {name} && exec \"$0\" \"$@\"");
        self.wrap = ["unshare", "--uts", "sh", "-c", &script]
            .map(OsString::from)
            .into();
        self
    }

    /// Test hook: the process aborts at crash point `point` (no destructors, no flush: like
    /// a SIGKILL or a power cut of the process). Run it with [`Cmd::crashes`].
    #[track_caller]
    pub fn crash_at(mut self, point: &str) -> Cmd {
        need_hooks();
        self.crash_point = Some(point.to_string());
        self.env("JELLYSNAP_CRASH_AT", point)
    }

    /// Test hook: the process sleeps `ms` milliseconds at pause point `point`, holding
    /// whatever locks it holds.
    #[track_caller]
    pub fn pause_at(self, point: &str, ms: u64) -> Cmd {
        need_hooks();
        self.env("JELLYSNAP_PAUSE_AT", point)
            .env("JELLYSNAP_PAUSE_MS", ms.to_string())
    }

    /// Test hook: `op:n[:errno]` makes the n-th operation of kind `op` (`write`, `fsync`,
    /// `read`, `spawn`) fail with `errno` (default 5, EIO).
    #[track_caller]
    pub fn fault(self, spec: &str) -> Cmd {
        need_hooks();
        self.env("JELLYSNAP_FAULT", spec)
    }

    /// Test hook: the command's clock reads `secs` (Unix seconds), as a wrong clock would.
    #[track_caller]
    pub fn clock_at(self, secs: i64) -> Cmd {
        need_hooks();
        self.env("JELLYSNAP_NOW", secs.to_string())
    }

    /// Discard stdout and stderr (for a spawned command nobody reads).
    pub fn quiet(mut self) -> Cmd {
        self.quiet = true;
        self
    }

    /// The `Command` this run is (for a caller that runs it its own way).
    pub fn command(&self) -> Command {
        let mut c = match self.wrap.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        c.args(&self.args);
        // What the tester's own environment would route or authenticate differently:
        // proxies, AWS profiles and CAs (a test sets the ones it tests).
        for k in HOST_ENV {
            c.env_remove(k);
        }
        c.env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_CONFIG_FILE", "/dev/null")
            // An empty configuration file: the tester's own /etc/jellysnap/jellysnap.toml
            // (root's default) must not name a repository or an install for a test.
            .env("JELLYSNAP_CONFIG", "/dev/null");
        for (k, v) in &self.envs {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        c
    }

    pub fn output(self) -> Output {
        self.command()
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.args))
    }

    /// Run; the exit code must be `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Output {
        let args = self.args.clone();
        let out = self.output();
        assert_exit(&out, code, &args);
        out
    }

    /// Run with `--json`; the exit code must be `code`. Returns the parsed stdout (null if
    /// it is not JSON).
    #[track_caller]
    pub fn json(mut self, code: i32) -> Value {
        self.args.insert(0, "--json".into());
        let out = self.expect(code);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Run a command set up with [`Cmd::crash_at`]; it must have stopped at that point.
    #[track_caller]
    pub fn crashes(self) -> Output {
        let point = self
            .crash_point
            .clone()
            .expect("crashes() needs crash_at()");
        let out = self.output();
        assert_crashed(&out, &point);
        out
    }

    /// Start it; stdout and stderr are piped unless [`Cmd::quiet`].
    pub fn spawn(self) -> Child {
        let pipe = || {
            if self.quiet {
                Stdio::null()
            } else {
                Stdio::piped()
            }
        };
        self.command()
            .stdin(Stdio::null())
            .stdout(pipe())
            .stderr(pipe())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.args))
    }
}

/// The run of `what` exited with `code`; else panics showing its stdout and stderr.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32, what: &dyn std::fmt::Debug) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what:?}\nstdout: {}\nstderr: {}",
        s(&out.stdout),
        s(&out.stderr)
    );
}

/// The process stopped at crash point `point` (it aborted there), not for another reason.
#[track_caller]
pub fn assert_crashed(out: &Output, point: &str) {
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{point}: the crash point was to be reached (SIGABRT); {:?}\nstderr: {}",
        out.status,
        s(&out.stderr)
    );
}

/// SIGKILL a command that is still running; panics if it had already exited (the kill
/// would not land inside the command).
#[track_caller]
pub fn kill_running(child: &mut Child, what: &str) {
    if let Some(st) = child.try_wait().unwrap() {
        panic!("{what} had already exited ({st}) when it was to be killed");
    }
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(9), "{what}: {st}");
}

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

    /// The binary with `--repo` this repository and `args`, as given.
    pub fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::at_repo(&self.repo, args)
    }

    /// [`Env::cmd`] as user `nobody`, with `HOME` in this temp dir (root only).
    #[track_caller]
    pub fn nobody(&self, args: &[&str]) -> Cmd {
        self.cmd(args).by_nobody().env("HOME", &self.root)
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
        self.cmd(args).output()
    }

    /// [`Env::run`]; the exit code must be `code`.
    #[track_caller]
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_exit(&out, code, &args);
        out
    }

    /// Run with `--json`, expect `code`, return parsed stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str], code: i32) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.expect(&a, code);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// A generated data dir under this temp dir.
    pub fn fixture(&self, spec: &FixtureSpec) -> Fixture {
        fixture::generate(&self.root.join("src"), spec).unwrap()
    }

    /// The small Docker-layout data dir most tests use.
    pub fn small_fixture(&self) -> Fixture {
        self.fixture(&FixtureSpec::small(Layout::Docker))
    }

    /// Back up `fx` (`--json`, extra arguments after it); it must succeed with no errors.
    #[track_caller]
    pub fn backup(&self, fx: &Fixture, extra: &[&str]) -> Value {
        let data = fx.data_dir.to_str().unwrap();
        let mut args = vec!["backup", "--data-dir", data];
        args.extend_from_slice(extra);
        let b = self.json(&args, 0);
        let errors = &b["snapshot"]["summary"]["errors"];
        assert!(errors.as_array().is_some_and(|e| e.is_empty()), "{b}");
        b
    }

    /// Restore `snap` into a new directory `name` of this temp dir; it must succeed with no
    /// errors. Returns the target and the report.
    #[track_caller]
    pub fn restore_to(&self, snap: &str, name: &str) -> (PathBuf, Value) {
        let target = self.root.join(name);
        let r = self.json(&["restore", snap, "--target", target.to_str().unwrap()], 0);
        let errors = &r["report"]["errors"];
        assert!(errors.as_array().is_some_and(|e| e.is_empty()), "{r}");
        (target, r)
    }

    /// [`Env::restore_to`], then the target must be `expected` (see `verify::describe`).
    #[track_caller]
    pub fn assert_restores(&self, snap: &str, name: &str, expected: &State) -> PathBuf {
        let (target, _) = self.restore_to(snap, name);
        verify::assert_same(&verify::describe(&target, &[]), expected);
        target
    }

    /// What restoring `snap` gives: restored into `name`, described.
    #[track_caller]
    pub fn restored_state(&self, snap: &str, name: &str) -> State {
        let (target, _) = self.restore_to(snap, name);
        verify::describe(&target, &[])
    }

    /// How many snapshots the repository lists.
    #[track_caller]
    pub fn snapshot_count(&self) -> usize {
        self.json(&["snapshots"], 0).as_array().unwrap().len()
    }

    /// Back up `fx` (`--json backup --init`) with `hidden` (files or directories)
    /// unreadable to the backup, then make them readable again. Root reads anything, so
    /// as root the backup runs as `nobody` over a tree made readable to everyone else.
    pub fn backup_hiding(&self, fx: &Fixture, hidden: &[&Path]) -> Output {
        if is_root() {
            open_up(&self.root, true);
        }
        for h in hidden {
            fs::set_permissions(h, fs::Permissions::from_mode(0o000)).unwrap();
        }
        let data = fx.data_dir.to_str().unwrap();
        let args = ["--json", "backup", "--init", "--data-dir", data];
        let out = if is_root() {
            self.nobody(&args).output()
        } else {
            self.cmd(&args).env("HOME", &self.root).output()
        };
        for h in hidden {
            let mode = if h.is_dir() { 0o755 } else { 0o644 };
            fs::set_permissions(h, fs::Permissions::from_mode(mode)).unwrap();
        }
        out
    }
}

/// The test hooks exist only in a binary built with the `test-hooks` feature (the README's
/// test command); without them a hook test would test nothing.
#[track_caller]
pub fn need_hooks() {
    #[cfg(not(feature = "test-hooks"))]
    panic!("this test drives the test seams: run `cargo test --release --features test-hooks`");
}

/// A size-limited tmpfs (root only), unmounted on drop.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(at: &Path, size: &str) -> SmallDisk {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {}", s(&out.stderr));
        SmallDisk(at.to_path_buf())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Resize it (to make room after a full-disk test).
    pub fn grow(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", s(&out.stderr));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Rewrite a new repository's config with another pack size (its format version kept):
/// small packs make a small data dir fill several.
pub fn set_pack_target(repo: &Path, bytes: u64) {
    let path = repo.join("config");
    let raw = std::fs::read(&path).unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&raw[12..]).unwrap();
    body["pack_target_bytes"] = bytes.into();
    let mut out = raw[..12].to_vec();
    out.extend_from_slice(serde_json::to_string_pretty(&body).unwrap().as_bytes());
    std::fs::write(&path, out).unwrap();
}

/// This test process as the owner of scratch names (`<pid>.<start time>`, as jellysnap
/// names its own): a name with it belongs to a process that is running.
#[allow(dead_code)]
pub fn own_owner_tag() -> String {
    let pid = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let start = rest.split_whitespace().nth(19).unwrap();
    format!("{pid}.{start}")
}
