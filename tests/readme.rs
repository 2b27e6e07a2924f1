//! The README's quick start and nightly script, run as written (with the demo repository
//! and the paths moved into a temp dir): an example nobody runs drifts.

mod common;

use std::path::Path;

use common::env::{s, Cmd};

/// The arguments after `cargo run --release --` of the README's first quick-start command.
fn quick_start_args() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Quick start")
        .nth(1)
        .expect("README has a Quick start section");
    let line = section
        .lines()
        .find(|l| l.starts_with("cargo run --release -- "))
        .expect("a cargo run command in the quick start");
    line.trim_start_matches("cargo run --release -- ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The README's two commands are the script's, and the quick start the script runs is
/// the one the README shows (CI runs both commands: `.ci/run`).
#[test]
fn the_readme_commands_are_the_scripts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let script = std::fs::read_to_string(root.join("scripts/dev.sh")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    for cmd in ["scripts/dev.sh quickstart", "scripts/dev.sh test"] {
        assert!(readme.contains(cmd), "README lacks {cmd}");
        assert!(ci.contains(cmd), ".ci/run does not run {cmd}");
    }
    let line = format!("cargo run --release -- {}", quick_start_args().join(" "));
    assert!(
        script.contains(&line),
        "scripts/dev.sh does not run `{line}`"
    );
    assert!(
        script.contains("cargo test --release --locked --features test-hooks"),
        "scripts/dev.sh does not run the README's test command"
    );
}

#[test]
fn quick_start_backs_up_the_bundled_sample() {
    let args = quick_start_args();
    assert!(args.iter().any(|a| a == "backup"), "{args:?}");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a == "/tmp/jellysnap-demo" {
                repo.to_string_lossy().into_owned()
            } else {
                a
            }
        })
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample_db = root.join("fixtures/sample/data/jellyfin.db");
    let before = std::fs::read(&sample_db).unwrap();
    let out = Cmd::new(&args).current_dir(root).expect(0);
    assert!(s(&out.stdout).contains("saved"), "{}", s(&out.stdout));
    // The sample's database is stored as a proven logical dump, and the bundled files are
    // left exactly as they were (no -wal/-shm beside them).
    let v = Cmd::new(&["--repo", repo.to_str().unwrap(), "snapshots"]).json(0);
    assert_eq!(v[0]["databases"][0]["capture"], "logical", "{v}");
    assert_eq!(std::fs::read(&sample_db).unwrap(), before);
    for suffix in ["-wal", "-shm"] {
        let mut p = sample_db.as_os_str().to_owned();
        p.push(suffix);
        assert!(!Path::new(&p).exists(), "{suffix} left in fixtures/");
    }
}

/// The nightly script of the README's "Scheduling" section, as written, with its paths
/// pointed at a temp dir, a generated data dir and a bucket of a loopback S3 server.
fn nightly_script() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Scheduling\n")
        .nth(1)
        .expect("README has a Scheduling section");
    let block = section
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.starts_with("#!/bin/sh"))
        .expect("a #!/bin/sh block in Scheduling");
    block.to_string()
}

#[test]
fn the_nightly_script_backs_up_copies_and_prunes_both_sides() {
    let server = common::s3::shared();
    let bucket = server.new_bucket();
    let env = common::env::Env::new();
    let fx = env.small_fixture();
    let local = env.root.join("local");
    let offsite = server.location(&bucket, "jellysnap");
    let script = nightly_script();
    let mut replaced = script.clone();
    for (from, to) in [
        ("/srv/backup/jellysnap", local.to_str().unwrap()),
        (
            "s3:https://s3.us-west-004.backblazeb2.com/my-jellyfin/jellysnap",
            offsite.as_str(),
        ),
        ("/var/lib/jellyfin", fx.data_dir.to_str().unwrap()),
    ] {
        assert!(replaced.contains(from), "the script names {from}");
        replaced = replaced.replace(from, to);
    }
    let path = env.root.join("jellysnap-nightly");
    std::fs::write(&path, &replaced).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_jellysnap")).parent().unwrap();
    let search = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |what: &str| {
        let mut c = std::process::Command::new("sh");
        c.arg(&path)
            .env("PATH", &search)
            .env("XDG_CACHE_HOME", env.root.join("cache"));
        for (k, v) in server.env() {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}\n{}",
            out.status,
            s(&out.stderr)
        );
    };
    let js = |repo: &str, args: &[&str]| {
        let mut c = Cmd::new(&["--repo", repo]).args(args);
        for (k, v) in server.env() {
            c = c.env(k, v);
        }
        c.env("XDG_CACHE_HOME", env.root.join("cache"))
    };
    // The one-time setup the README gives.
    js(local.to_str().unwrap(), &["init"]).expect(0);
    js(
        local.to_str().unwrap(),
        &["copy", "--to", &offsite, "--init"],
    )
    .expect(0);
    run("first night");
    std::fs::write(
        fx.metadata_dir.join("next-day.txt"),
        b"changed the next day",
    )
    .unwrap();
    run("second night");
    let ids = |repo: &str| -> Vec<String> {
        let v = js(repo, &["snapshots"]).json(0);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (l, o) = (ids(local.to_str().unwrap()), ids(&offsite));
    assert!(!l.is_empty());
    assert_eq!(l, o, "both sides hold the same snapshots after forget");
    let target = env.root.join("restored");
    js(
        &offsite,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    )
    .expect(0);
    common::verify::assert_same(
        &common::verify::describe(&target, &[]),
        &common::verify::expected_state(&fx),
    );
}

/// The README's "Upgrade guard" section, run as written: each `jellysnap` command of its
/// sh blocks (`sudo` dropped, the paths moved into a temp dir, the apt and systemd dirs
/// overridden), `apt-get upgrade` played by the installed snippet's command on a recorded
/// apt upgrade, whose one line must be the one the README shows.
#[test]
fn the_upgrade_guard_commands_run_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Upgrade guard\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Upgrade guard section");
    let env = common::env::Env::new();
    let fx = env.fixture(&common::fixture::FixtureSpec::small(
        common::fixture::Layout::Debian,
    ));
    let data = fx.data_dir.canonicalize().unwrap();
    let config = env.root.join("jellysnap.toml");
    let apt_dir = env.root.join("apt.conf.d");
    let unit_dir = env.root.join("systemd");
    let jellysnap = |args: &[String]| {
        Cmd::new(args)
            .env("JELLYSNAP_CONFIG", &config)
            .env_remove("JELLYSNAP_REPO")
            .env("XDG_STATE_HOME", env.root.join("state"))
            .env("XDG_CACHE_HOME", env.root.join("cache"))
    };
    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    let mut apt_said = None;
    for block in section.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap();
        for line in block.lines().map(str::trim) {
            if let Some(shown) = line.strip_prefix("# ") {
                let said: &String = apt_said.as_ref().expect("output shown after a command");
                assert_eq!(
                    said.trim_end(),
                    shown,
                    "the README shows what the hook prints"
                );
                continue;
            }
            let cmd = line.strip_prefix("sudo ").unwrap_or(line);
            if cmd == "apt-get upgrade" {
                let snippet = std::fs::read_to_string(apt_dir.join("80jellysnap")).unwrap();
                let run = snippet
                    .split("DPkg::Pre-Install-Pkgs { \"")
                    .nth(1)
                    .and_then(|r| r.split("\"; };").next())
                    .unwrap()
                    .to_string();
                let input = std::fs::read(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apt/upgrade.v3"),
                )
                .unwrap();
                let mut c = std::process::Command::new("/bin/sh");
                c.args(["-c", &run])
                    .env("XDG_STATE_HOME", env.root.join("state"))
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped());
                let mut child = c.spawn().unwrap();
                std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success());
                // The id differs from run to run, and the data dir is the temp one.
                let said = s(&out.stdout).replace(data.to_str().unwrap(), "/var/lib/jellyfin");
                let id = said.split_whitespace().nth(2).unwrap().to_string();
                apt_said = Some(said.replacen(&id, "3f2a9c01", 1));
                ran.push(cmd.to_string());
                continue;
            }
            let Some(rest) = cmd.strip_prefix("jellysnap ") else {
                skipped.push(cmd.to_string());
                continue;
            };
            let mut args: Vec<String> = rest
                .split_whitespace()
                .map(|a| match a {
                    "/srv/backup/jellysnap" => env.repo.to_string_lossy().into_owned(),
                    "/var/lib/jellyfin" => fx.data_dir.to_string_lossy().into_owned(),
                    a => a.to_string(),
                })
                .collect();
            match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["hook", "apt", "install" | "remove"] => {
                    args.extend(["--apt-conf-dir".into(), apt_dir.to_string_lossy().into()])
                }
                ["hook", "systemd", "install" | "remove"] => {
                    args.extend(["--unit-dir".into(), unit_dir.to_string_lossy().into()])
                }
                _ => {}
            }
            jellysnap(&args).expect(0);
            ran.push(cmd.to_string());
        }
    }
    assert_eq!(
        ran,
        [
            "jellysnap --repo /srv/backup/jellysnap setup --data-dir /var/lib/jellyfin",
            "jellysnap init",
            "jellysnap backup",
            "jellysnap hook apt install",
            "apt-get upgrade",
            "jellysnap hook apt remove",
            "jellysnap hook systemd install",
        ]
    );
    assert!(!apt_dir.join("80jellysnap").exists());
    assert!(unit_dir.join("jellyfin.service.d/jellysnap.conf").is_file());
    // What needs the real system: systemd and Docker (the compose one-shot itself runs
    // in tests/guard.rs).
    assert!(
        skipped
            .iter()
            .all(|c| c.starts_with("systemctl ") || c.contains("docker compose ")),
        "{skipped:?}"
    );
    let v = Cmd::new(&["--repo", env.repo.to_str().unwrap(), "snapshots"]).json(0);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["before-jellyfin-10.11.3+deb12"]);
}

/// The README's rollback walkthrough ("Before an upgrade, and rolling back"), its
/// `jellysnap` commands run as written (`sudo` dropped, `/var/lib/jellyfin` a temp
/// Debian-shaped data dir, the repository from `$JELLYSNAP_REPO`); the package steps are
/// played by a day of changes to the data: the rollback must bring back the snapshot.
#[test]
fn the_rollback_walkthrough_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Before an upgrade, and rolling back\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a rollback section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the walkthrough's sh block");
    let env = common::env::Env::new();
    env.expect(&["init"], 0);
    let fx = env.fixture(&common::fixture::FixtureSpec::small(
        common::fixture::Layout::Debian,
    ));
    let mut before = None;
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    for line in block.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cmd = line.strip_prefix("sudo ").unwrap_or(line);
        let cmd = cmd.split("  #").next().unwrap().trim();
        let Some(rest) = cmd.strip_prefix("jellysnap ") else {
            if cmd.starts_with("apt-get install") {
                // The upgrade ran and the new server changed the data.
                common::fixture::day_of_changes(&fx, 9).unwrap();
            }
            skipped.push(cmd.to_string());
            continue;
        };
        let args: Vec<String> = rest
            .split_whitespace()
            .map(|a| match a {
                "/var/lib/jellyfin" => fx.data_dir.to_string_lossy().into_owned(),
                a => a.to_string(),
            })
            .collect();
        Cmd::new(&args).env("JELLYSNAP_REPO", &env.repo).expect(0);
        if args.first().map(String::as_str) == Some("backup") {
            before = Some(common::verify::expected_state(&fx));
        }
        ran.push(cmd.to_string());
    }
    assert_eq!(
        ran,
        [
            "jellysnap backup --data-dir /var/lib/jellyfin --name before-10.11.4",
            "jellysnap restore before-10.11.4 --in-place --dry-run",
            "jellysnap restore before-10.11.4 --in-place",
        ]
    );
    assert!(
        skipped.iter().all(|c| c.starts_with("systemctl ")
            || c.starts_with("apt-get ")
            || c.starts_with("echo ")
            || c.starts_with("sed ")),
        "{skipped:?}"
    );
    common::verify::assert_same(
        &common::verify::expected_state(&fx),
        &before.expect("the walkthrough takes a snapshot"),
    );
}

/// The README's hourly schedule for Unstable testers, run as written: its retention put in
/// a configuration file `setup` wrote, the hourly unit's command run once an hour over
/// two and a half days (the clock moved by the test hook) with the data changing, then the
/// prune unit's commands. Every snapshot the policy does not keep is gone, every one it
/// keeps is there, and the repository still checks.
#[test]
fn the_hourly_schedule_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n### Hourly, for people testing Unstable builds\n")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("README has an hourly schedule");
    let block = |lang: &str, first: &str| -> String {
        section
            .split(&format!("```{lang}\n"))
            .skip(1)
            .map(|b| b.split("```").next().unwrap().to_string())
            .find(|b| b.starts_with(first))
            .unwrap_or_else(|| panic!("no {lang} block starting with {first}"))
    };
    let retention = block("toml", "[retention]");
    let units: Vec<String> = [
        "# /etc/systemd/system/jellysnap-hourly.service",
        "# /etc/systemd/system/jellysnap-hourly.timer",
        "# /etc/systemd/system/jellysnap-prune.service",
        "# /etc/systemd/system/jellysnap-prune.timer",
    ]
    .iter()
    .map(|f| block("ini", f))
    .collect();
    let exec = |unit: &str| -> Vec<Vec<String>> {
        unit.lines()
            .filter_map(|l| l.strip_prefix("ExecStart="))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let (hourly, prune) = (exec(&units[0]), exec(&units[2]));
    assert_eq!(hourly.len(), 1, "{hourly:?}");
    assert_eq!(prune.len(), 2, "{prune:?}");
    // The timers' calendars are ones systemd reads (where systemd-analyze is at hand).
    for unit in [&units[1], &units[3]] {
        let cal = unit
            .lines()
            .find_map(|l| l.strip_prefix("OnCalendar="))
            .expect("a calendar");
        if let Ok(out) = std::process::Command::new("systemd-analyze")
            .args(["calendar", cal])
            .output()
        {
            assert!(out.status.success(), "{cal}: {}", s(&out.stderr));
        }
    }

    let env = common::env::Env::new();
    let fx = env.fixture(&common::fixture::FixtureSpec::small(
        common::fixture::Layout::Debian,
    ));
    let repo = env.root.join("repo");
    let config = env.root.join("jellysnap.toml");
    let run = |args: &[String], at: i64| {
        let (bin, rest) = args.split_first().unwrap();
        assert_eq!(bin, "/usr/local/bin/jellysnap", "{args:?}");
        Cmd::new(rest)
            .env("JELLYSNAP_CONFIG", &config)
            .env_remove("JELLYSNAP_REPO")
            .env("XDG_CACHE_HOME", env.root.join("cache"))
            .env("TZ", "UTC")
            .clock_at(at)
    };
    let t0: i64 = 1_780_000_000 / 3600 * 3600;
    Cmd::new(&[
        "--repo",
        repo.to_str().unwrap(),
        "setup",
        "--data-dir",
        fx.data_dir.to_str().unwrap(),
    ])
    .env("JELLYSNAP_CONFIG", &config)
    .expect(0);
    let written = std::fs::read_to_string(&config).unwrap();
    let head = written.split("\n[retention]").next().unwrap();
    std::fs::write(&config, format!("{head}\n{retention}")).unwrap();
    Cmd::new(&["init"])
        .env("JELLYSNAP_CONFIG", &config)
        .expect(0);

    let hours = 60;
    for h in 0..hours {
        std::fs::write(
            fx.metadata_dir.join("hour.txt"),
            format!("hour {h}").as_bytes(),
        )
        .unwrap();
        let out = run(&hourly[0], t0 + h * 3600 + 120).expect(0);
        assert!(out.stdout.is_empty(), "--quiet: {}", s(&out.stdout));
    }
    let list = || -> Vec<String> {
        let v = Cmd::new(&["snapshots"])
            .env("JELLYSNAP_CONFIG", &config)
            .json(0);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["tags"][0], "hourly", "{s}");
                s["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let before = list();
    assert_eq!(before.len(), hours as usize);
    let at = t0 + hours * 3600 + 4 * 60;
    for cmd in &prune {
        run(cmd, at).expect(0);
    }
    // The hours run from 20:00 UTC on day D to 07:00 on day D+3. Kept: the newest 24
    // (hours 36-59), and the last of each day (hours 3, 27, 51, 59); a week or a month
    // ends with a day, so their rules add none.
    let want: Vec<String> = [3, 27]
        .into_iter()
        .chain(36..60)
        .map(|h| before[h].clone())
        .collect();
    let mut kept = list();
    kept.sort();
    let mut want = want;
    want.sort();
    assert_eq!(kept, want);
    Cmd::new(&["check"])
        .env("JELLYSNAP_CONFIG", &config)
        .expect(0);
}
