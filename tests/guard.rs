//! The upgrade guard through the binary: the configuration file and `setup` on Debian,
//! Docker and linuxserver.io data dirs, then the hooks (apt with recorded version-3
//! input, the systemd pre-start, the container one-shot of the compose recipe). Every
//! run names its configuration file and state dir: no test reads or writes /etc or
//! /var/lib.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use common::env::{s, Cmd, Env, BIN};
use common::fixture::{self, Fixture, FixtureSpec, Layout};

/// A temp dir with a generated install, a configuration file path, a state dir and a
/// cache dir; every command of [`Guard::cmd`] uses them and no --repo.
struct Guard {
    env: Env,
    fx: Fixture,
    config: PathBuf,
}

impl Guard {
    fn new(layout: Layout) -> Guard {
        let env = Env::new();
        let fx = env.fixture(&FixtureSpec::small(layout));
        let config = env.root.join("etc-jellysnap/jellysnap.toml");
        Guard { env, fx, config }
    }

    /// The binary with the configuration file in JELLYSNAP_CONFIG, no JELLYSNAP_REPO.
    fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(args)
            .env("JELLYSNAP_CONFIG", &self.config)
            .env_remove("JELLYSNAP_REPO")
            .env("XDG_STATE_HOME", self.env.root.join("state"))
            .env("XDG_CACHE_HOME", self.env.root.join("cache"))
    }

    fn repo(&self) -> &str {
        self.env.repo.to_str().unwrap()
    }

    /// `setup --data-dir DIR` with the repository, then `init`: the file names both.
    fn set_up(&self, dir: &Path) {
        self.cmd(&["--repo", self.repo(), "setup", "--data-dir"])
            .arg(dir)
            .expect(0);
        self.cmd(&["init"]).expect(0);
    }

    fn snapshots(&self) -> Vec<Value> {
        self.cmd(&["snapshots"]).json(0).as_array().unwrap().clone()
    }

    /// Run `args` with `input` on stdin (as apt runs a hook).
    fn with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        run_with_stdin(self.cmd(args).command(), input)
    }
}

fn run_with_stdin(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn canonical(p: &Path) -> String {
    p.canonicalize().unwrap().to_string_lossy().into_owned()
}

#[track_caller]
fn expect_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        s(&out.stdout),
        s(&out.stderr)
    );
}

/// The directory a user would point setup at for `fx`: linuxserver.io users see the
/// host directory mounted at /config, which holds the data dir.
fn given_dir(fx: &Fixture) -> PathBuf {
    match fx.layout {
        Layout::LinuxServer => fx.config_dir.clone(),
        _ => fx.data_dir.clone(),
    }
}

#[test]
fn setup_detects_each_layout_and_every_command_reads_the_file() {
    for layout in Layout::ALL {
        let g = Guard::new(layout);
        let given = given_dir(&g.fx);
        // --dry-run prints the file and writes nothing.
        let out = g
            .cmd(&["--repo", g.repo(), "setup", "--dry-run", "--data-dir"])
            .arg(&given)
            .expect(0);
        let text = s(&out.stdout);
        assert!(
            text.contains(&format!("layout = \"{}\"", layout.name())),
            "{layout:?}: {text}"
        );
        assert!(!g.config.exists());
        g.set_up(&given);
        let file = fs::read_to_string(&g.config).unwrap();
        for (key, p) in [
            ("data_dir", &g.fx.data_dir),
            ("config_dir", &g.fx.config_dir),
        ] {
            let want = format!("{key} = \"{}\"", canonical(p));
            assert!(file.contains(&want), "{layout:?}: no `{want}` in\n{file}");
        }
        assert!(
            file.contains(&format!("repository = \"{}\"", g.repo())),
            "{file}"
        );
        assert!(file.contains("No secrets here"), "{file}");
        if layout == Layout::Debian {
            let want = format!("log_dir = \"{}\"", canonical(&g.fx.log_dir));
            assert!(file.contains(&want), "{file}");
        }
        // No --repo, no --data-dir: the file names both.
        let b = g.cmd(&["backup", "--name", "first"]).json(0);
        assert_eq!(b["snapshot"]["layout"], layout.name(), "{b}");
        g.cmd(&["backup"]).expect(0);
        g.cmd(&["backup"]).expect(0);
        assert_eq!(g.snapshots().len(), 3);
        // setup refuses to replace the file without --force.
        let out = g.cmd(&["setup", "--data-dir"]).arg(&given).expect(2);
        assert!(s(&out.stderr).contains("--force"), "{}", s(&out.stderr));
        g.cmd(&["setup", "--force", "--data-dir"])
            .arg(&given)
            .expect(0);
        assert_eq!(fs::read_to_string(&g.config).unwrap(), file);
    }
}

#[test]
fn forget_applies_the_files_retention_and_flags_override_the_file() {
    let g = Guard::new(Layout::Docker);
    g.set_up(&g.fx.data_dir);
    let file = fs::read_to_string(&g.config).unwrap();
    let edited = file.replace(
        "keep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 6\n",
        "keep_last = 1\n",
    );
    assert_ne!(edited, file, "setup writes the default retention");
    fs::write(&g.config, edited).unwrap();
    g.cmd(&["backup", "--name", "named"]).expect(0);
    for _ in 0..3 {
        g.cmd(&["backup"]).expect(0);
    }
    // The file's policy: the newest and the named snapshot stay.
    let v = g.cmd(&["forget"]).json(0);
    assert_eq!(v["removed"], 2, "{v}");
    assert_eq!(g.snapshots().len(), 2);
    // A rule on the command line replaces the file's policy whole.
    g.cmd(&["backup"]).expect(0);
    let v = g.cmd(&["forget", "--keep-last", "2", "--dry-run"]).json(0);
    let removed = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .count();
    assert_eq!(removed, 0, "{v}");
    // --repo and JELLYSNAP_REPO override the file's repository.
    let other = g.env.root.join("other");
    g.cmd(&["--repo", other.to_str().unwrap(), "snapshots"])
        .expect(10);
    g.cmd(&["snapshots"])
        .env("JELLYSNAP_REPO", &other)
        .expect(10);
    // --data-dir overrides the file's install (and its config dir with it).
    let fx2 = fixture::generate(
        &g.env.root.join("second"),
        &FixtureSpec::small(Layout::Debian),
    )
    .unwrap();
    let b = g.cmd(&["backup", "--data-dir"]).arg(&fx2.data_dir).json(0);
    assert_eq!(b["snapshot"]["layout"], "debian", "{b}");
}

#[test]
fn a_bad_configuration_file_is_named_with_its_line_and_exits_23() {
    let g = Guard::new(Layout::Docker);
    fs::create_dir_all(g.config.parent().unwrap()).unwrap();
    let cases: [(&str, &str, &str); 4] = [
        (
            "repository = \"/srv/r\"\n\n[retention]\nkeep_dayly = 7\n",
            "line 4",
            "keep_dayly",
        ),
        (
            "repository = \"/srv/r\"\n[jellyfin]\ndata_dir = \"var/lib/jellyfin\"\n",
            "line 3",
            "absolute",
        ),
        ("repository = \"/srv/r\n", "line 1", ""),
        (
            "[retention]\nkeep_within = \"a while\"\n",
            "line 2",
            "duration",
        ),
    ];
    for (text, line, says) in cases {
        fs::write(&g.config, text).unwrap();
        let out = g.cmd(&["snapshots"]).expect(23);
        let err = s(&out.stderr);
        assert!(
            err.contains(&g.config.to_string_lossy().into_owned()),
            "{err}"
        );
        assert!(err.contains(line) && err.contains(says), "{text}: {err}");
    }
    // A file named explicitly must be there; --config wins over JELLYSNAP_CONFIG.
    let missing = g.env.root.join("nowhere.toml");
    let out = g
        .cmd(&["--config", missing.to_str().unwrap(), "snapshots"])
        .expect(23);
    assert!(
        s(&out.stderr).contains("no such file"),
        "{}",
        s(&out.stderr)
    );
    // Without a data dir anywhere, backup says where it looked.
    fs::write(&g.config, "repository = \"/srv/r\"\n").unwrap();
    let out = g.cmd(&["backup"]).expect(2);
    assert!(s(&out.stderr).contains("--data-dir"), "{}", s(&out.stderr));
}

#[test]
fn usual_places_are_searched_below_a_root() {
    let env = Env::new();
    let root = env.root.join("host");
    let deb = fixture::generate(&root, &FixtureSpec::small(Layout::Debian)).unwrap();
    let lsio = fixture::generate(
        &root.join("srv/jellyfin"),
        &FixtureSpec::small(Layout::LinuxServer),
    )
    .unwrap();
    let found = jellysnap::guard::find(&root);
    let dirs: Vec<(String, PathBuf)> = found
        .iter()
        .map(|i| (i.layout.clone(), i.data_dir.clone()))
        .collect();
    assert_eq!(
        dirs,
        vec![
            ("debian".to_string(), deb.data_dir.canonicalize().unwrap()),
            (
                "linuxserver".to_string(),
                lsio.data_dir.canonicalize().unwrap()
            ),
        ]
    );
    assert_eq!(found[0].config_dir, deb.config_dir.canonicalize().unwrap());
    assert!(jellysnap::guard::find(&env.root.join("empty")).is_empty());
}

/// The recorded apt input `name` (fixtures/apt).
fn apt_input(name: &str) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/apt")
            .join(name),
    )
    .unwrap()
}

fn tags_of(v: &Value) -> Vec<String> {
    v["tags"]
        .as_array()
        .map(|t| t.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn the_apt_hook_snapshots_before_jellyfin_changes_and_never_fails_apt() {
    let g = Guard::new(Layout::Debian);
    g.set_up(&g.fx.data_dir);
    // Unrelated packages and a fresh install: nothing, and no repository opened (it
    // is not even there).
    let gone = g.env.root.join("repo-moved");
    fs::rename(&g.env.repo, &gone).unwrap();
    for input in ["unrelated.v3", "fresh-install.v3"] {
        let out = g.with_stdin(&["hook", "apt", "run"], &apt_input(input));
        expect_code(&out, 0);
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{input}: {out:?}"
        );
    }
    // apt writes the whole list before it waits for the hook: a long one (a large
    // configuration space) is read to its end, so apt's write never fails.
    let unrelated = s(&apt_input("unrelated.v3"));
    let (config, packages) = unrelated.split_once("\n\n").unwrap();
    let padding: String = (0..5000)
        .map(|i| format!("Dir::Padding::Entry{i}=/usr/share/some/long/path/{i}\n"))
        .collect();
    let long = format!("{config}\n{padding}\n{packages}");
    assert!(long.len() > 256 * 1024);
    let out = g.with_stdin(&["hook", "apt", "run"], long.as_bytes());
    expect_code(&out, 0);
    // An upgrade with the repository missing: apt goes on, the message names it.
    let out = g.with_stdin(&["hook", "apt", "run"], &apt_input("upgrade.v3"));
    expect_code(&out, 0);
    let err = s(&out.stderr);
    assert!(
        err.contains("NO SNAPSHOT") && err.contains(g.repo()),
        "{err}"
    );
    // ... unless the admin chose otherwise.
    let out = g.with_stdin(
        &["hook", "apt", "run", "--abort-on-failure"],
        &apt_input("upgrade.v3"),
    );
    expect_code(&out, 10);
    fs::rename(&gone, &g.env.repo).unwrap();
    // Upgrade, then the same upgrade again (after a rollback), a downgrade, a removal.
    let mut names = Vec::new();
    for input in ["upgrade.v3", "upgrade.v3", "downgrade.v3", "remove.v3"] {
        let out = g.with_stdin(&["hook", "apt", "run"], &apt_input(input));
        expect_code(&out, 0);
        let line = s(&out.stdout);
        assert_eq!(line.lines().count(), 1, "{input}: one line: {line}");
        assert!(line.contains("taken before"), "{line}");
        assert!(out.stderr.is_empty(), "{}", s(&out.stderr));
        names.push(g.snapshots().last().unwrap()["name"].clone());
    }
    assert_eq!(
        names,
        [
            "before-jellyfin-10.11.3+deb12",
            "before-jellyfin-10.11.3+deb12-2",
            "before-jellyfin-10.11.4+deb12",
            "before-jellyfin-10.11.4+deb12-2",
        ]
    );
    for snap in g.snapshots() {
        assert_eq!(tags_of(&snap), ["hook:apt"], "{snap}");
    }
    // A broken repository: apt still succeeds, and is told which repository.
    fs::write(g.env.repo.join("config"), b"not a repository config").unwrap();
    let out = g.with_stdin(&["hook", "apt", "run"], &apt_input("upgrade.v3"));
    expect_code(&out, 0);
    let err = s(&out.stderr);
    assert!(
        err.contains("NO SNAPSHOT") && err.contains(g.repo()),
        "{err}"
    );
    // A bucket whose credentials apt's environment lacks: nothing for unrelated
    // packages, and a report (naming the bucket) for Jellyfin's.
    let data = g.fx.data_dir.canonicalize().unwrap();
    fs::write(
        &g.config,
        format!(
            "repository = \"s3:http://127.0.0.1:9/bucket\"\n[jellyfin]\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let no_keys = |args: &[&str], input: &str| {
        let mut c = g.cmd(args).command();
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        run_with_stdin(c, &apt_input(input))
    };
    let out = no_keys(&["hook", "apt", "run"], "unrelated.v3");
    expect_code(&out, 0);
    assert!(out.stderr.is_empty(), "{}", s(&out.stderr));
    let out = no_keys(&["hook", "apt", "run"], "upgrade.v3");
    expect_code(&out, 0);
    let err = s(&out.stderr);
    assert!(
        err.contains("NO SNAPSHOT") && err.contains("s3:http://127.0.0.1:9/bucket"),
        "{err}"
    );
    // A configuration file apt's hook cannot use is reported, not fatal.
    fs::write(&g.config, "[jellyfin]\ndata_dir = 3\n").unwrap();
    let out = g.with_stdin(&["hook", "apt", "run"], &apt_input("upgrade.v3"));
    expect_code(&out, 0);
    let err = s(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("NO SNAPSHOT"),
        "{err}"
    );
}

#[test]
fn apt_install_writes_a_snippet_whose_command_apt_runs() {
    let g = Guard::new(Layout::Debian);
    g.set_up(&g.fx.data_dir);
    let apt_dir = g.env.root.join("apt.conf.d");
    let v = g
        .cmd(&["hook", "apt", "install", "--apt-conf-dir"])
        .arg(&apt_dir)
        .json(0);
    let path = PathBuf::from(v["installed"].as_str().unwrap());
    let snippet = fs::read_to_string(&path).unwrap();
    // apt's tools run as users too: readable by all, not a temp file's 0600.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let bin = Path::new(BIN).canonicalize().unwrap();
    let bin = bin.to_str().unwrap();
    assert!(
        snippet.contains(&format!("DPkg::Tools::Options::{bin}::Version \"3\";")),
        "{snippet}"
    );
    // The command as apt runs it: `/bin/sh -c` with the list on stdin.
    let cmd = snippet
        .split("DPkg::Pre-Install-Pkgs { \"")
        .nth(1)
        .and_then(|r| r.split("\"; };").next())
        .expect("a Pre-Install-Pkgs command");
    assert!(cmd.starts_with(bin) && cmd.contains("--config"), "{cmd}");
    let mut sh = Command::new("/bin/sh");
    sh.args(["-c", cmd])
        .env_remove("JELLYSNAP_CONFIG")
        .env_remove("JELLYSNAP_REPO")
        .env("XDG_STATE_HOME", g.env.root.join("state"));
    let out = run_with_stdin(sh, &apt_input("upgrade.v3"));
    expect_code(&out, 0);
    assert_eq!(g.snapshots().len(), 1, "{}", s(&out.stderr));
    // The upgraded server is recorded: the systemd pre-start that follows is a no-op.
    let out = g
        .cmd(&[
            "hook",
            "systemd",
            "run",
            "--server-version",
            "10.11.4+deb12",
        ])
        .expect(0);
    assert!(
        s(&out.stdout).contains("no snapshot needed"),
        "{}",
        s(&out.stdout)
    );
    assert_eq!(g.snapshots().len(), 1);
    // remove undoes it; a second remove says there is nothing.
    g.cmd(&["hook", "apt", "remove", "--apt-conf-dir"])
        .arg(&apt_dir)
        .expect(0);
    assert!(!path.exists());
    let out = g
        .cmd(&["hook", "apt", "remove", "--apt-conf-dir"])
        .arg(&apt_dir)
        .expect(0);
    assert!(s(&out.stdout).contains("nothing to remove"));
}

/// The names of the snapshots, oldest first.
fn names(g: &Guard) -> Vec<Value> {
    g.snapshots().iter().map(|s| s["name"].clone()).collect()
}

#[test]
fn systemd_install_writes_a_drop_in_that_never_blocks_the_server() {
    let g = Guard::new(Layout::Debian);
    g.set_up(&g.fx.data_dir);
    let units = g.env.root.join("systemd");
    let v = g
        .cmd(&["hook", "systemd", "install", "--unit-dir"])
        .arg(&units)
        .json(0);
    let path = units.join("jellyfin.service.d/jellysnap.conf");
    assert_eq!(v["installed"], path.to_str().unwrap());
    let text = fs::read_to_string(&path).unwrap();
    let bin = Path::new(BIN).canonicalize().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("ExecStartPre="))
        .expect("an ExecStartPre line");
    let cmd = line
        .strip_prefix("ExecStartPre=-+")
        .expect("`-`: a failure does not block");
    assert!(cmd.starts_with(bin.to_str().unwrap()), "{cmd}");
    assert!(cmd.ends_with("hook systemd run"), "{cmd}");
    assert!(text.contains("\nTimeoutStartSec="), "{text}");
    // The command as the unit runs it (a version given, as dpkg would say it).
    let mut sh = Command::new("/bin/sh");
    sh.args(["-c", &format!("{cmd} --server-version 10.11.3")])
        .env_remove("JELLYSNAP_CONFIG")
        .env("XDG_STATE_HOME", g.env.root.join("state"))
        .env("XDG_CACHE_HOME", g.env.root.join("cache"));
    let out = sh.output().unwrap();
    expect_code(&out, 0);
    assert_eq!(names(&g), ["before-jellyfin-10.11.3"], "{}", s(&out.stderr));
    // --abort-on-failure drops the `-`; --server-dir is passed on; remove undoes it.
    let server = g.env.root.join("opt/jellyfin");
    g.cmd(&["hook", "systemd", "install", "--abort-on-failure"])
        .arg("--unit-dir")
        .arg(&units)
        .arg("--server-dir")
        .arg(&server)
        .expect(0);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nExecStartPre=+/"), "{text}");
    let want = format!("hook systemd run --server-dir {}\n", server.display());
    assert!(text.contains(&want), "{text}");
    g.cmd(&["hook", "systemd", "remove", "--unit-dir"])
        .arg(&units)
        .expect(0);
    assert!(!path.exists());
}

#[test]
fn the_systemd_pre_start_snapshots_only_when_the_server_version_changes() {
    let g = Guard::new(Layout::Debian);
    g.set_up(&g.fx.data_dir);
    let run = |version: &str| g.cmd(&["hook", "systemd", "run", "--server-version", version]);
    // The first start: no guard snapshot yet, named after the data's own version.
    let out = run("10.11.3").expect(0);
    assert!(
        s(&out.stdout).contains("taken before"),
        "{}",
        s(&out.stdout)
    );
    assert_eq!(names(&g), ["before-jellyfin-10.11.3"]);
    // The same server again: a no-op that does not even open the repository.
    let moved = g.env.root.join("repo-moved");
    fs::rename(&g.env.repo, &moved).unwrap();
    let out = run("10.11.3").expect(0);
    assert!(
        s(&out.stdout).contains("no snapshot needed"),
        "{}",
        s(&out.stdout)
    );
    assert!(out.stderr.is_empty(), "{}", s(&out.stderr));
    // A new server while the repository is away: said loudly, the server starts, and
    // the next start tries again.
    let out = run("10.11.4").expect(0);
    let err = s(&out.stderr);
    assert!(
        err.contains("NO SNAPSHOT") && err.contains(g.repo()),
        "{err}"
    );
    run("10.11.4").arg("--abort-on-failure").expect(10);
    fs::rename(&moved, &g.env.repo).unwrap();
    run("10.11.4").expect(0);
    assert_eq!(
        names(&g),
        ["before-jellyfin-10.11.3", "before-jellyfin-10.11.3-2"]
    );
    run("10.11.4").expect(0);
    assert_eq!(g.snapshots().len(), 2);
    // The new server ran and migrated; going back to the old one protects the new data.
    fixture::record_server_version(&g.fx, "10.11.4.0", 1_767_300_000).unwrap();
    run("10.11.3").expect(0);
    assert_eq!(names(&g).last().unwrap(), "before-jellyfin-10.11.4");
    for snap in g.snapshots() {
        assert_eq!(tags_of(&snap), ["hook:systemd"], "{snap}");
    }
    // The version read from the server's own assembly.
    let server = g.env.root.join("usr-lib-jellyfin-bin");
    fs::create_dir_all(&server).unwrap();
    let utf16 = |t: &str| -> Vec<u8> { t.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let mut dll = b"MZ\x90\x00 a .NET assembly".to_vec();
    dll.extend(utf16("FileVersion"));
    dll.extend([0, 0]);
    dll.extend(utf16("10.11.5.0"));
    dll.extend([0, 0]);
    fs::write(server.join("jellyfin.dll"), dll).unwrap();
    let dir_run = || {
        g.cmd(&["hook", "systemd", "run", "--server-dir"])
            .arg(&server)
            .expect(0)
    };
    dir_run();
    assert_eq!(names(&g).last().unwrap(), "before-jellyfin-10.11.3-3");
    let before = g.snapshots().len();
    let out = dir_run();
    assert!(s(&out.stdout).contains("10.11.5"), "{}", s(&out.stdout));
    assert_eq!(g.snapshots().len(), before);
    // No way to tell the installed version: every start is guarded, the repeats
    // unnamed (left to the retention policy).
    fs::remove_file(server.join("jellyfin.dll")).unwrap();
    dir_run();
    dir_run();
    let all = g.snapshots();
    assert_eq!(all.len(), before + 2);
    assert!(all[before..].iter().all(|s| tags_of(s) == ["hook:systemd"]));
    // A configuration file the hook cannot use: said, and the server starts.
    fs::write(&g.config, "[jellyfin]\ndata_dir = \"relative\"\n").unwrap();
    let out = run("10.11.6").expect(0);
    let err = s(&out.stderr);
    assert!(
        err.contains("NO SNAPSHOT") && err.contains("line 2"),
        "{err}"
    );
    run("10.11.6").arg("--abort-on-failure").expect(23);
}

/// The jellysnap service of docs/container/compose.yaml: its command and environment.
fn compose_service() -> (Vec<String>, Vec<(String, String)>) {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/container/compose.yaml"),
    )
    .unwrap();
    let service = text
        .split("\n  jellysnap:\n")
        .nth(1)
        .and_then(|r| r.split("\n\n").next())
        .expect("a jellysnap service");
    let command = service
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: "))
        .expect("a one-line command");
    let command: Vec<String> = serde_json::from_str(command).unwrap();
    let env = service
        .split("\n    environment:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("      "))
        .map(|l| {
            let (k, v) = l.trim().split_once(": ").unwrap();
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect();
    let jellyfin = text.split("\n  jellyfin:\n").nth(1).unwrap();
    assert!(jellyfin.contains("condition: service_completed_successfully"));
    assert!(jellyfin.contains("stop_grace_period:"));
    assert!(jellyfin.contains("image: \"jellyfin/jellyfin:${JELLYFIN_VERSION:-latest}\""));
    (command, env)
}

/// Runs a command of the compose file's jellysnap service as Docker would, in `g`'s data
/// dir: the container's paths on this host (/config the data dir, /backup the
/// repository, /state the state volume), the service's environment with
/// JELLYFIN_VERSION set to the tag, and an empty configuration file for the image's (the
/// tester's /etc/jellysnap must not be read).
fn compose_runner<'g>(
    g: &'g Guard,
    env: &'g [(String, String)],
) -> impl Fn(&[String], &str) -> Output + 'g {
    let empty = g.env.root.join("empty.toml");
    fs::write(&empty, "").unwrap();
    let host = move |p: &str| -> String {
        for (from, to) in [
            ("/config", g.fx.data_dir.clone()),
            ("/backup", g.env.repo.clone()),
            ("/state", g.env.root.join("state-volume")),
        ] {
            if let Some(rest) = p.strip_prefix(from) {
                return format!("{}{rest}", to.display());
            }
        }
        p.to_string()
    };
    move |args: &[String], tag: &str| -> Output {
        let mut c = Cmd::new(&args.iter().map(|a| host(a)).collect::<Vec<_>>())
            .env("JELLYSNAP_CONFIG", &empty)
            .env_remove("JELLYSNAP_REPO");
        for (k, v) in env {
            let v = v.replace("${JELLYFIN_VERSION:-latest}", tag);
            c = c.env(k, host(&v));
        }
        c.expect(0)
    }
}

#[test]
fn the_compose_one_shot_snapshots_when_the_image_version_changes() {
    let (command, env) = compose_service();
    let g = Guard::new(Layout::Docker);
    g.env.cmd(&["init"]).expect(0);
    let run = compose_runner(&g, &env);
    let up = |tag: &str| -> Output { run(&command, tag) };
    let names = || -> Vec<Value> {
        g.env
            .json(&["snapshots"], 0)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].clone())
            .collect()
    };
    up("10.11.3");
    assert_eq!(names(), ["before-jellyfin-10.11.3"]);
    let out = up("10.11.3");
    assert!(
        s(&out.stdout).contains("no snapshot needed"),
        "{}",
        s(&out.stdout)
    );
    assert_eq!(names().len(), 1);
    up("10.11.4");
    assert_eq!(
        names(),
        ["before-jellyfin-10.11.3", "before-jellyfin-10.11.3-2"]
    );
    // A floating tag: any start may run a new image, so every start snapshots.
    up("latest");
    up("latest");
    assert_eq!(names().len(), 4);
    let snaps = g.env.json(&["snapshots"], 0);
    for snap in snaps.as_array().unwrap() {
        assert_eq!(tags_of(snap), ["hook:container"], "{snap}");
    }
}

#[test]
fn a_hook_whose_line_cannot_be_printed_still_lets_apt_go_on() {
    let g = Guard::new(Layout::Debian);
    g.set_up(&g.fx.data_dir);
    // stdout a pipe nobody reads any more: the one line cannot be written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = g
        .cmd(&["hook", "apt", "run"])
        .command()
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&apt_input("upgrade.v3"))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 0);
    assert_eq!(g.snapshots().len(), 1);
}

/// The README's container upgrade, as written: `docker compose run --rm jellysnap init`
/// run as the compose file runs the service, `pull` a no-op here, and `up` the one-shot
/// at the tag given (Jellyfin's own start is not played): the repository is made, and the
/// start of 10.11.4 is preceded by a snapshot of the 10.11.3 data.
#[test]
fn the_readme_container_upgrade_runs_as_written() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("\n### Containers (Docker Compose)\n")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README has the container upgrade");
    let (command, env) = compose_service();
    let g = Guard::new(Layout::Docker);
    let service = compose_runner(&g, &env);
    let mut ran = Vec::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (tag, rest) = match line.strip_prefix("JELLYFIN_VERSION=") {
            Some(r) => r.split_once(' ').unwrap(),
            None => ("latest", line),
        };
        if let Some(args) = rest.strip_prefix("docker compose run --rm jellysnap ") {
            let args: Vec<String> = args.split_whitespace().map(String::from).collect();
            service(&args, tag);
        } else if rest == "docker compose up -d" {
            service(&command, tag);
        } else {
            assert_eq!(rest, "docker compose pull", "{line}");
        }
        ran.push(line.to_string());
    }
    assert_eq!(ran.len(), 3, "{ran:?}");
    let snaps = g.env.json(&["snapshots"], 0);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["name"], "before-jellyfin-10.11.3");
    assert_eq!(tags_of(&snaps[0]), ["hook:container"]);
}

/// The README's container rollback, its `docker compose run --rm jellysnap ...` commands
/// run as the compose file runs them (its environment, /config the data dir, /backup the
/// repository), after the one-shot snapshotted a first start of 10.11.4 and the data
/// changed: the rollback brings back the snapshot.
#[test]
fn the_readme_container_rollback_runs_as_written() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("\n### Containers (Docker Compose)\n")
        .nth(1)
        .and_then(|s| s.split("To roll a container back").nth(1))
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README has the container rollback");
    let (command, env) = compose_service();
    let g = Guard::new(Layout::Docker);
    g.env.cmd(&["init"]).expect(0);
    let service = compose_runner(&g, &env);
    // The upgrade: the one-shot before 10.11.4's first start, then 10.11.4 migrates.
    service(&command, "10.11.4");
    let before = common::verify::expected_state(&g.fx);
    common::fixture::day_of_changes(&g.fx, 11).unwrap();
    assert_ne!(
        common::verify::expected_state(&g.fx),
        before,
        "the data changed"
    );
    let mut ran = Vec::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(args) = line.strip_prefix("docker compose run --rm jellysnap ") {
            let args: Vec<String> = args.split_whitespace().map(String::from).collect();
            let out = service(&args, "10.11.3");
            if args.contains(&"--dry-run".to_string()) {
                assert!(
                    s(&out.stdout).contains("start Jellyfin 10.11.3"),
                    "{}",
                    s(&out.stdout)
                );
            }
            ran.push(args.join(" "));
        } else {
            assert!(
                line.starts_with("docker compose ") || line.contains(" docker compose up"),
                "{line}"
            );
        }
    }
    assert_eq!(ran.len(), 3, "{ran:?}");
    common::verify::assert_same(&common::verify::expected_state(&g.fx), &before);
}
