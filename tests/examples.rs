//! Every example of the README, run. Each fenced block that runs a command carries a marker
//! on the line before it, `<!-- test: KEY -->`: KEY is a step of the scenario below, which
//! runs the block's lines as written (its absolute paths moved under a temp dir, the
//! README's example ids and S3 locations replaced by the scenario's) in README order and
//! checks that each does what the text around it says; or `FILE.rs::NAME`, the test that
//! runs the block elsewhere, which must exist. A block without a marker, or a line whose
//! command and flags the scenario has no expectation for, fails the test: an example cannot
//! be added, or changed to other flags, without a test of what it does.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::env::{s, Cmd};
use common::fixture::{self, Fixture, FixtureSpec, Layout};
use common::verify::{self, State};

/// A fenced block of the README.
struct Block {
    /// Its opening line's number (1-based).
    line: usize,
    lang: String,
    /// The marker on the line before it.
    key: Option<String>,
    body: Vec<String>,
}

fn readme() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut prev = "";
    for (i, l) in text.lines().enumerate() {
        if let Some(fence) = l.strip_prefix("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => {
                    let key = prev
                        .trim()
                        .strip_prefix("<!-- test: ")
                        .and_then(|k| k.strip_suffix(" -->"))
                        .map(str::to_string);
                    open = Some(Block {
                        line: i + 1,
                        lang: fence.trim().to_string(),
                        key,
                        body: Vec::new(),
                    });
                }
            }
        } else if let Some(b) = open.as_mut() {
            b.body.push(l.to_string());
        }
        prev = l;
    }
    assert!(open.is_none(), "README ends inside a fenced block");
    out
}

/// `sudo ` and a shell prompt `$ ` taken off.
fn bare(line: &str) -> &str {
    let l = line.trim();
    let l = l.strip_prefix("$ ").unwrap_or(l);
    l.strip_prefix("sudo ").unwrap_or(l)
}

/// A block to be run: every `sh` block, and any other that runs jellysnap (a unit's
/// `ExecStart`, a crontab line).
fn runs_something(b: &Block) -> bool {
    b.lang == "sh"
        || b.body
            .iter()
            .any(|l| l.contains("bin/jellysnap ") || bare(l).starts_with("jellysnap "))
}

/// One line of a block, as the shell would split it.
struct Line {
    text: String,
    words: Vec<String>,
    /// `> FILE`.
    stdout_to: Option<String>,
    /// The output the README shows after a `$ ` command.
    shown: Vec<String>,
}

fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    assert!(quote.is_none(), "unbalanced quotes: {s}");
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn lines(b: &Block) -> Vec<Line> {
    let prompt = b.body.iter().any(|l| l.trim().starts_with("$ "));
    let mut out: Vec<Line> = Vec::new();
    for l in &b.body {
        let t = l.trim();
        if prompt && !t.starts_with("$ ") {
            if let Some(last) = out.last_mut() {
                last.shown.push(l.to_string());
            }
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let t = t.split(" #").next().unwrap().trim();
        let (cmd, stdout_to) = match t.split_once(" > ") {
            Some((c, f)) => (c, Some(f.trim().to_string())),
            None => (t, None),
        };
        out.push(Line {
            text: t.to_string(),
            words: shell_words(bare(cmd)),
            stdout_to,
            shown: Vec::new(),
        });
    }
    out
}

/// A jellysnap command line's shape: its subcommand and flags, every other word `_`
/// (global options left out). What the scenario's expectations are keyed by.
fn shape(args: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut it = args.iter().peekable();
    let mut sub = 0;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--repo" | "--config" if out.is_empty() => {
                it.next();
            }
            "--quiet" | "-q" | "--json" | "-v" if out.is_empty() => {}
            a if a.starts_with('-') => out.push(a),
            a if out.is_empty() => {
                sub = match a {
                    "repair" => 1,
                    "hook" => 2,
                    _ => 0,
                };
                out.push(a);
            }
            a if sub > 0 => {
                sub -= 1;
                out.push(a);
            }
            _ => out.push("_"),
        }
    }
    out.join(" ")
}

/// `FILE.rs::NAME` names a `#[test]` function NAME of tests/FILE.rs.
fn test_exists(reference: &str) -> Result<(), String> {
    let (file, name) = reference
        .split_once("::")
        .ok_or_else(|| format!("`{reference}` is not FILE.rs::NAME"))?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(file);
    let src = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = src.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&format!("fn {name}(")))
        .ok_or_else(|| format!("tests/{file} has no fn {name}"))?;
    let attrs = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.trim_start().starts_with("#[") || l.trim_start().starts_with("///"));
    if attrs.clone().any(|l| l.trim() == "#[test]") {
        Ok(())
    } else {
        Err(format!("tests/{file}: fn {name} is not a #[test]"))
    }
}

/// Every block that runs something is marked, and every reference to another test names
/// one that exists.
#[test]
fn every_readme_example_is_marked_with_the_test_that_runs_it() {
    let mut problems = Vec::new();
    for b in blocks(&readme()) {
        match &b.key {
            None if runs_something(&b) => problems.push(format!(
                "README.md:{}: a ```{} block without `<!-- test: KEY -->` on the line before it",
                b.line, b.lang
            )),
            Some(k) if k.contains("::") => {
                if let Err(e) = test_exists(k) {
                    problems.push(format!("README.md:{}: {e}", b.line));
                }
            }
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

const DAY: i64 = 86_400;
/// 2026-06-01T00:00:00Z, a Monday: the scenario's day 0 (its first command at 08:00).
const DAY0: i64 = 1_780_272_000;
const REPO: &str = "/srv/backup/jellysnap";

/// The README's world under a temp dir: its installs, repositories and clock.
struct Scenario {
    env: common::env::Env,
    /// Where `/` of the README's paths is.
    world: PathBuf,
    /// README paths placed elsewhere than under `world` (longest first).
    placed: Vec<(String, PathBuf)>,
    /// README example ids and the scenario's.
    ids: Vec<(String, String)>,
    /// README S3 locations and the loopback server's.
    buckets: Vec<(String, String)>,
    /// Variables the README exports.
    vars: Vec<(String, String)>,
    s3: Option<&'static common::s3::S3Server>,
    now: i64,
    debian: Fixture,
    /// What the snapshots held, by name.
    saved: Vec<(&'static str, State)>,
    ran: Vec<String>,
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The files (relative, sorted) under `dir`.
fn files(dir: &Path) -> Vec<String> {
    common::env::files_under(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect()
}

fn bytes_under(dir: &Path) -> u64 {
    common::env::files_under(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

impl Scenario {
    fn new() -> Scenario {
        let env = common::env::Env::new();
        let world = env.root.join("world");
        let debian = fixture::generate(&world, &FixtureSpec::small(Layout::Debian)).unwrap();
        fixture::generate(
            &world.join("srv/jellyfin"),
            &FixtureSpec::small(Layout::Docker),
        )
        .unwrap();
        // The linuxserver.io install lives on another machine in the README's story:
        // its /srv/jellyfin/config would be the Docker one's.
        let lsio_root = env.root.join("other-machine");
        let lsio = fixture::generate(
            &lsio_root.join("srv/jellyfin"),
            &FixtureSpec::small(Layout::LinuxServer),
        )
        .unwrap();
        // A relocated metadata dir, and the library shard `ab` the README excludes.
        fs::create_dir_all(world.join("srv/jf-metadata/library/12")).unwrap();
        fs::write(
            world.join("srv/jf-metadata/library/12/poster.jpg"),
            b"relocated",
        )
        .unwrap();
        let ab = debian.metadata_dir.join("library/ab/abcdef");
        fs::create_dir_all(&ab).unwrap();
        fs::write(ab.join("poster.jpg"), b"a poster in shard ab").unwrap();
        for d in ["cwd", "tmp", "cache", "state"] {
            fs::create_dir_all(env.root.join(d)).unwrap();
        }
        Scenario {
            placed: vec![("/srv/jellyfin/config/data".into(), lsio.data_dir.clone())],
            env,
            world,
            ids: Vec::new(),
            buckets: Vec::new(),
            vars: Vec::new(),
            s3: None,
            now: DAY0 + 8 * 3600,
            debian,
            saved: Vec::new(),
            ran: Vec::new(),
        }
    }

    /// Where a README path is here.
    fn moved(&self, p: &str) -> PathBuf {
        for (from, to) in &self.placed {
            if let Some(rest) = p.strip_prefix(from.as_str()) {
                return PathBuf::from(format!("{}{rest}", to.display()));
            }
        }
        PathBuf::from(format!("{}{p}", self.world.display()))
    }

    fn arg(&mut self, a: &str) -> String {
        if let Some((_, id)) = self.ids.iter().find(|(from, _)| from == a) {
            return id.clone();
        }
        if a.starts_with("s3:") {
            return self.bucket(a);
        }
        // (A path the scenario gives is already here.)
        if a.starts_with('/') && !Path::new(a).starts_with(&self.env.root) {
            return self.moved(a).to_string_lossy().into_owned();
        }
        a.to_string()
    }

    /// The loopback server's bucket standing in for the README's S3 location `loc`.
    fn bucket(&mut self, loc: &str) -> String {
        if let Some((_, to)) = self.buckets.iter().find(|(from, _)| from == loc) {
            return to.clone();
        }
        let server = *self.s3.get_or_insert_with(common::s3::shared);
        let to = server.location(&server.new_bucket(), "jellysnap");
        self.buckets.push((loc.to_string(), to.clone()));
        to
    }

    /// The scenario's clock: a minute later for every command.
    fn tick(&mut self) -> i64 {
        self.now += 60;
        self.now
    }

    /// The binary with `args` (README words, mapped), in the README's environment.
    fn cmd(&mut self, args: &[String]) -> Cmd {
        let args: Vec<String> = args.iter().map(|a| self.arg(a)).collect();
        let root = self.env.root.clone();
        let mut c = Cmd::new(&args)
            .env("JELLYSNAP_REPO", self.moved(REPO))
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env("XDG_STATE_HOME", root.join("state"))
            .env("TMPDIR", root.join("tmp"))
            .env("TZ", "UTC")
            .current_dir(&root.join("cwd"))
            .clock_at(self.tick());
        if let Some(server) = self.s3 {
            for (k, v) in server.env() {
                c = c.env(k, v);
            }
        }
        for (k, v) in &self.vars {
            c = c.env(k, v);
        }
        c
    }

    /// A jellysnap command the scenario runs itself (not a README line).
    fn js(&mut self, args: &[&str]) -> Cmd {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.cmd(&args)
    }

    fn snapshots(&mut self, repo: &str) -> Value {
        self.js(&["--repo", repo, "snapshots"]).json(0)
    }

    fn last(&mut self) -> Value {
        let v = self.snapshots(REPO);
        v.as_array().unwrap().last().unwrap().clone()
    }

    fn save(&mut self, what: &'static str, state: State) {
        self.saved.retain(|(w, _)| *w != what);
        self.saved.push((what, state));
    }

    fn saved(&self, what: &str) -> &State {
        &self
            .saved
            .iter()
            .find(|(w, _)| *w == what)
            .unwrap_or_else(|| panic!("nothing saved as {what}"))
            .1
    }

    /// A backup of the Debian install the scenario takes between examples.
    fn backup(&mut self, extra: &[&str]) -> Value {
        let data = self.debian.data_dir.to_string_lossy().into_owned();
        let mut args = vec!["backup", "--data-dir", &data];
        args.extend_from_slice(extra);
        self.js(&args).json(0)
    }

    /// Run a README line, as written, with exit code 0.
    fn run(&mut self, l: &Line) -> std::process::Output {
        let args = &l.words[1..];
        let out = self.cmd(args).expect(0);
        if let Some(f) = &l.stdout_to {
            fs::write(self.env.root.join("cwd").join(f), &out.stdout).unwrap();
        }
        out
    }

    /// The same line with `--json` (a second run of a command that changes nothing).
    fn json(&mut self, l: &Line) -> Value {
        let args = l.words[1..].to_vec();
        self.cmd(&args).json(0)
    }
}

/// Every README block marked with a scenario step, run in README order, each line checked.
#[test]
fn every_readme_example_does_what_its_text_says() {
    let text = readme();
    let mut sc = Scenario::new();
    for b in blocks(&text) {
        let Some(key) = b.key.clone() else { continue };
        if key.contains("::") {
            continue;
        }
        before_block(&mut sc, &key);
        for l in lines(&b) {
            // The program run (after any VAR=value words), and for jellysnap its shape.
            let prog = l
                .words
                .iter()
                .find(|w| !w.contains('='))
                .map(String::as_str)
                .unwrap_or("");
            let sh = if prog == "jellysnap" || prog.ends_with("/jellysnap") {
                let redirect = if l.stdout_to.is_some() { " > _" } else { "" };
                format!("{}{redirect}", shape(&l.words[1..]))
            } else {
                format!("`{prog}`")
            };
            let known = example(&mut sc, &key, &sh, &l);
            assert!(
                known,
                "README.md:{}: no expectation for `{}` (block `{key}`, shape `{sh}`) in tests/examples.rs",
                b.line, l.text
            );
            sc.ran.push(format!("{key}: {}", l.text));
        }
    }
    assert!(sc.ran.len() >= 40, "{:#?}", sc.ran);
}

/// What the scenario does before a block: the state the README's story has reached there.
fn before_block(sc: &mut Scenario, key: &str) {
    match key {
        "snapshots-filter" => {
            for name in ["before-test-1", "before-test-2", "before-test-3"] {
                sc.backup(&["--name", name]);
            }
            sc.backup(&["--name", "other-1"]);
        }
        "diff" => {
            // An upgrade: a new file, and a migration added to the database.
            let fx = sc.debian.clone();
            fs::write(fx.metadata_dir.join("after-upgrade.nfo"), b"new").unwrap();
            let db = rusqlite::Connection::open(&fx.db_path).unwrap();
            db.execute(
                r#"INSERT INTO "__EFMigrationsHistory" ("MigrationId","ProductVersion") VALUES ('20260601080000_ReadmeExample','10.11.4')"#,
                [],
            )
            .unwrap();
            drop(db);
            sc.backup(&[]);
            sc.save("latest", verify::expected_state(&fx));
        }
        "forget" => {
            sc.backup(&["--name", "nightly-old"]);
            // A snapshot at noon on each of days 1-9, each with a file of its own.
            for day in 1..=9 {
                sc.now = DAY0 + day * DAY + 12 * 3600;
                let content = format!("day {day}\n").repeat(20_000);
                fs::write(sc.debian.metadata_dir.join("day.txt"), content).unwrap();
                sc.backup(&["--tag", "daily"]);
            }
        }
        "offsite" => {
            // Another NAS, empty: the first copy creates its repository.
            let nas = sc.moved("/mnt/nas");
            fs::rename(&nas, sc.env.root.join("old-nas")).unwrap();
        }
        _ => {}
    }
}

/// Run README line `l` of block `key` (its shape `sh`) and check what it does; false when
/// the scenario has no expectation for it.
fn example(sc: &mut Scenario, key: &str, sh: &str, l: &Line) -> bool {
    match (key, sh) {
        ("install", "`cargo`") => {
            // The test's binary is the one `cargo build --release` makes.
            assert_eq!(l.words[..3], ["cargo", "build", "--release"]);
            assert!(
                common::env::BIN.ends_with("/release/jellysnap"),
                "{}",
                common::env::BIN
            );
        }
        ("install", "`install`") => {
            assert_eq!(l.words[1], "target/release/jellysnap");
            let dest = sc.moved(&l.words[2]);
            fs::create_dir_all(&dest).unwrap();
            let st = std::process::Command::new("install")
                .arg(common::env::BIN)
                .arg(&dest)
                .status()
                .unwrap();
            assert!(st.success());
            let out = std::process::Command::new(dest.join("jellysnap"))
                .arg("--version")
                .output()
                .unwrap();
            assert!(out.status.success() && s(&out.stdout).contains("jellysnap"));
        }
        ("init", "init") => {
            sc.run(l);
            assert!(sc.moved(REPO).join("config").is_file());
            assert_eq!(sc.snapshots(REPO), Value::Array(Vec::new()));
        }
        ("backup", "backup --data-dir _ --name _") => {
            sc.run(l);
            let r = sc.last();
            assert_eq!(r["name"], "before-10.11.3", "{r}");
            assert_eq!(r["layout"], "debian", "{r}");
            // /etc/jellyfin was found by itself: a root of the snapshot.
            let roots = r["roots"].to_string();
            assert!(roots.contains("etc/jellyfin"), "{roots}");
            let id = r["id"].as_str().unwrap().to_string();
            sc.ids.push(("3f2a".into(), id[..8].to_string()));
            let fx = sc.debian.clone();
            sc.save("before", verify::expected_state(&fx));
            sc.save("before-config", verify::describe(&fx.config_dir, &[]));
            sc.save("before-db", db_state(&fx.db_path));
        }
        ("backup", "backup --data-dir _ --tag _") => {
            sc.run(l);
            let r = sc.last();
            assert_eq!(r["layout"], "docker", "{r}");
            assert_eq!(r["tags"], serde_json::json!(["nightly"]), "{r}");
            let id = r["id"].as_str().unwrap().to_string();
            sc.ids.push(("9b0e44d7".into(), id[..8].to_string()));
        }
        ("backup", "backup --data-dir _") => {
            sc.run(l);
            let r = sc.last();
            assert_eq!(r["layout"], "linuxserver", "{r}");
        }
        ("backup", "backup --data-dir _ --metadata-dir _ --components _") => {
            sc.run(l);
            let r = sc.last();
            assert_eq!(
                r["components"],
                serde_json::json!(["config", "database"]),
                "{r}"
            );
            let roots = r["roots"].to_string();
            assert!(!roots.contains("jf-metadata"), "{roots}");
        }
        ("snapshots", "snapshots") => {
            let out = s(&sc.run(l).stdout);
            let got: Vec<&str> = out.lines().collect();
            for shown in &l.shown {
                let words: Vec<&str> = shown.split_whitespace().collect();
                let ok = match words.first().copied() {
                    None => true,
                    // The same data dir, on this machine's host name.
                    Some("host") => {
                        let dir = shown.split_once(", data dir ").unwrap().1;
                        let dir = format!(", data dir {}", sc.moved(dir).display());
                        got.iter()
                            .any(|g| g.starts_with("host ") && g.ends_with(&dir))
                    }
                    Some("ID") => got
                        .iter()
                        .any(|g| g.split_whitespace().collect::<Vec<_>>() == words),
                    // A row: an id of 8 hex digits, the time to the minute, a status.
                    Some(w) if w.len() == 8 && w.chars().all(|c| c.is_ascii_hexdigit()) => {
                        let row = |x: &str| -> bool {
                            let w: Vec<&str> = x.split_whitespace().collect();
                            w.len() > 4
                                && w[0].len() == 8
                                && w[0].chars().all(|c| c.is_ascii_hexdigit())
                                && w[1].len() == 10
                                && w[2].len() == 5
                                && (w.contains(&"complete") || w.contains(&"partial"))
                        };
                        row(shown) && got.iter().any(|g| row(g))
                    }
                    Some(_) => {
                        let tail = shown.split_once(' ').unwrap().1;
                        got.iter().any(|g| g.ends_with(tail))
                    }
                };
                assert!(ok, "the README shows `{shown}`; jellysnap printed:\n{out}");
            }
            assert!(
                out.contains("before-10.11.3") && out.contains("nightly"),
                "{out}"
            );
        }
        ("snapshots-filter", "snapshots --name _ --latest _") => {
            sc.run(l);
            let mut got = names(&sc.json(l));
            got.sort();
            assert_eq!(got, ["before-test-1", "before-test-2", "before-test-3"]);
        }
        ("ls", "ls _") => {
            sc.run(l);
            let v = sc.json(l);
            let mut paths: Vec<&str> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["path"].as_str().unwrap())
                .collect();
            paths.sort();
            assert_eq!(paths, ["config", "data"], "the roots: {v}");
        }
        ("ls", "ls _ _") | ("ls", "ls _ -r _") => {
            sc.run(l);
            let v = sc.json(l);
            let dir = l.words.last().unwrap();
            let paths: Vec<&str> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["path"].as_str().unwrap())
                .collect();
            assert!(
                paths.iter().all(|p| p.starts_with(&format!("{dir}/"))),
                "{paths:?}"
            );
            if sh.contains("-r") {
                // Recursively: the files below its subdirectories too.
                assert!(paths.contains(&"config/system.xml"), "{paths:?}");
                assert!(
                    paths.iter().any(|p| p.matches('/').count() > 1),
                    "{paths:?}"
                );
            } else {
                assert!(
                    paths.iter().all(|p| p.matches('/').count() == 2),
                    "{paths:?}"
                );
                let db = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["path"] == "data/data/jellyfin.db")
                    .expect("the database is listed");
                assert_eq!(db["database"], "logical", "{db}");
            }
        }
        ("diff", "diff _ _") => {
            let out = s(&sc.run(l).stdout);
            assert!(
                out.lines()
                    .any(|x| x.starts_with('+') && x.ends_with("data/metadata/after-upgrade.nfo")),
                "{out}"
            );
            assert!(out.contains("database data/data/jellyfin.db:"), "{out}");
            assert!(
                out.contains("+ migration 20260601080000_ReadmeExample"),
                "{out}"
            );
            assert!(out.contains("table __EFMigrationsHistory: "), "{out}");
        }
        ("dump", "dump _ _") => {
            let out = sc.run(l);
            let path = l.words.last().unwrap();
            let file = path
                .strip_prefix("config/")
                .expect("a file of /etc/jellyfin");
            let want = fs::read(sc.debian.config_dir.join(file)).unwrap();
            assert!(out.stdout == want, "dump wrote other bytes than {path}'s");
        }
        ("dump", "dump _ _ > _") => {
            sc.run(l);
            let db = sc.env.root.join("cwd").join(l.stdout_to.as_ref().unwrap());
            let c = verify::read_only(&db);
            let ok: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok");
            drop(c);
            assert_eq!(&db_state(&db), sc.saved("before-db"));
        }
        ("tag-name", "tag _ --add _ --remove _") => {
            sc.run(l);
            let out = s(&sc.js(&["snapshots"]).expect(0).stdout);
            let v = sc.snapshots(REPO);
            let edited: Vec<&Value> = v
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["tags"].to_string().contains("\"keep\""))
                .collect();
            assert_eq!(edited.len(), 1, "{v}");
            assert_eq!(edited[0]["tags"], serde_json::json!(["keep"]));
            assert_eq!(edited[0]["layout"], "docker");
            assert!(out.contains(" keep "), "{out}");
        }
        ("tag-name", "name _ _") => {
            sc.run(l);
            let out = s(&sc.js(&["snapshots"]).expect(0).stdout);
            let v = sc.snapshots(REPO);
            let r = v
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "before-10.11.4")
                .unwrap_or_else(|| panic!("{v}"));
            assert_eq!(r["tags"], serde_json::json!(["keep"]));
            assert!(out.contains("before-10.11.4"), "{out}");
        }
        ("tag-name", "name _ --unname") => {
            sc.run(l);
            let v = sc.snapshots(REPO);
            assert!(!names(&v).contains(&"before-10.11.4".to_string()), "{v}");
            let r = v
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["tags"] == serde_json::json!(["keep"]))
                .unwrap();
            assert!(r["name"].is_null(), "{r}");
        }
        ("restore", "restore _ --target _") => {
            sc.run(l);
            let t = sc.moved(&l.words[4]);
            verify::assert_same(&verify::describe(&t.join("data"), &[]), sc.saved("before"));
            verify::assert_same(
                &verify::describe(&t.join("config"), &[]),
                sc.saved("before-config"),
            );
        }
        ("restore", "restore _ --target _ --components _") => {
            sc.run(l);
            let t = sc.moved(&l.words[4]);
            assert_eq!(files(&t), ["data/data/jellyfin.db"]);
        }
        ("restore", "restore _ --in-place --components _") => {
            let fx = sc.debian.clone();
            let db = db_state(&fx.db_path);
            let config = verify::describe(&fx.config_dir, &[]);
            sc.run(l);
            let metadata = |st: &State| -> State {
                st.iter()
                    .filter(|(p, _)| p.starts_with("metadata"))
                    .map(|(p, v)| (p.clone(), v.clone()))
                    .collect()
            };
            verify::assert_same(
                &metadata(&verify::expected_state(&fx)),
                &metadata(sc.saved("before")),
            );
            assert_eq!(db_state(&fx.db_path), db, "the database stays as it is");
            verify::assert_same(&verify::describe(&fx.config_dir, &[]), &config);
        }
        ("restore", "restore _ --target _ --include _ --exclude _") => {
            sc.run(l);
            let t = sc.moved(&l.words[4]);
            let (inc, exc) = (&l.words[6], &l.words[8]);
            let strip = |p: &str| p.strip_prefix("data/").unwrap().to_string();
            let want: Vec<String> = sc
                .saved("latest")
                .iter()
                .filter(|(_, v)| v.starts_with("file "))
                .map(|(p, _)| p.to_string_lossy().into_owned())
                .filter(|p| p.starts_with(&format!("{}/", strip(inc))))
                .filter(|p| !p.starts_with(&format!("{}/", strip(exc))))
                .map(|p| format!("data/{p}"))
                .collect();
            assert!(want.len() > 1, "{want:?}");
            assert_eq!(files(&t), want);
        }
        ("restore", "restore _ --target _ --include _") => {
            sc.run(l);
            let t = sc.moved(&l.words[4]);
            assert_eq!(files(&t), [l.words[6].clone()]);
            let latest = sc.saved("latest")[Path::new("data/jellyfin.db")].clone();
            let got = verify::describe(&t.join("data"), &[])[Path::new("data/jellyfin.db")].clone();
            assert_eq!(got, latest);
        }
        ("restore", "restore _ --in-place --dry-run") => {
            let before = verify::expected_state(&sc.debian);
            let out = s(&sc.run(l).stdout);
            assert!(!out.is_empty());
            verify::assert_same(&verify::expected_state(&sc.debian), &before);
        }
        ("restore", "restore _ --in-place") => {
            sc.run(l);
            verify::assert_same(&verify::expected_state(&sc.debian), sc.saved("before"));
        }
        ("copy" | "offsite", "copy --to _ --init") => {
            sc.run(l);
            let to = l.words[l.words.len() - 2].clone();
            assert_eq!(ids(&sc.snapshots(&to)), ids(&sc.snapshots(REPO)));
        }
        ("copy" | "offsite", "copy --to _") => {
            // Only what is new: one snapshot more than the destination holds.
            sc.backup(&[]);
            let to = l.words.last().unwrap().clone();
            let dest_before = ids(&sc.snapshots(&to));
            sc.run(l);
            let src = ids(&sc.snapshots(REPO));
            assert_eq!(ids(&sc.snapshots(&to)), src);
            assert_eq!(src.difference(&dest_before).count(), 1);
        }
        ("copy", "copy _ --to _ --dry-run") => {
            let to = l.words[l.words.len() - 2].clone();
            let dest = sc.moved(&to);
            // The destination has lost it (forgotten there), so there is something to send.
            let name = l.words[4].clone();
            sc.js(&["--repo", &to, "forget", &name]).expect(0);
            let (snaps, packs) = (ids(&sc.snapshots(&to)), files(&dest));
            let out = s(&sc.run(l).stdout);
            assert!(out.contains(&l.words[4]), "{out}");
            assert_eq!(ids(&sc.snapshots(&to)), snaps);
            assert_eq!(files(&dest), packs, "a dry run writes nothing");
        }
        ("forget", "forget _ _") => {
            sc.run(l);
            let v = sc.snapshots(REPO);
            assert!(!names(&v).contains(&"nightly-old".to_string()), "{v}");
            assert!(
                !v.to_string().contains("\"keep\""),
                "the edited snapshot is gone: {v}"
            );
        }
        (
            "forget",
            "forget --keep-last _ --keep-daily _ --keep-weekly _ --keep-monthly _ --dry-run",
        ) => {
            let v = sc.snapshots(REPO);
            let out = s(&sc.run(l).stdout);
            assert!(!out.is_empty());
            assert_eq!(
                ids(&sc.snapshots(REPO)),
                ids(&v),
                "a dry run removes nothing"
            );
            let d = sc.json(l);
            let removed: BTreeSet<String> = d["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["keep"] == false)
                .map(|x| x["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(removed, policy_removes(&v), "{d}");
            for x in d["decisions"].as_array().unwrap() {
                if x["keep"] == true {
                    assert!(!x["reasons"].as_array().unwrap().is_empty(), "{x}");
                }
            }
        }
        ("forget", "forget --keep-last _ --keep-daily _ --keep-weekly _ --keep-monthly _") => {
            let v = sc.snapshots(REPO);
            sc.run(l);
            let left = ids(&sc.snapshots(REPO));
            let want: BTreeSet<String> = ids(&v).difference(&policy_removes(&v)).cloned().collect();
            assert_eq!(left, want);
            // Named snapshots are always kept by a policy.
            let named: Vec<String> = names(&v);
            assert_eq!(names(&sc.snapshots(REPO)), named);
        }
        ("gc", "gc --dry-run") => {
            let packs = sc.moved(REPO).join("packs");
            let before = files(&packs);
            let out = s(&sc.run(l).stdout);
            assert!(!out.is_empty());
            assert_eq!(files(&packs), before, "a dry run deletes nothing");
        }
        ("gc", "gc") => {
            let packs = sc.moved(REPO).join("packs");
            let before = bytes_under(&packs);
            sc.run(l);
            let after = bytes_under(&packs);
            assert!(after < before, "gc freed nothing: {before} -> {after}");
            sc.js(&["check", "--read-data"]).expect(0);
        }
        ("gc", "gc --max-unused _") => {
            sc.run(l);
            // Nothing is left for the same threshold to do.
            let max = l.words.last().unwrap().clone();
            let v = sc.js(&["gc", "--dry-run", "--max-unused", &max]).json(0);
            assert_eq!(v["plan"]["bytes_freed"], 0, "{v}");
        }
        ("check", "check") => {
            sc.run(l);
            let v = sc.json(l);
            assert_eq!(v["packs_read"], 0, "{v}");
            assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
        }
        ("check", "check --read-data") => {
            sc.run(l);
            let v = sc.json(l);
            assert_eq!(v["packs_read"], v["packs"], "{v}");
            assert!(v["bytes_read"].as_u64().unwrap() > 0, "{v}");
            assert!(v["databases_rebuilt"].as_u64().unwrap() > 0, "{v}");
        }
        ("check", "check --read-data-subset _") => {
            sc.run(l);
            let v = sc.json(l);
            let (read, packs) = (
                v["packs_read"].as_u64().unwrap(),
                v["packs"].as_u64().unwrap(),
            );
            // A part of the packs (10% of the data packs, with the tree packs), and the
            // next run another part.
            assert!(read >= 1 && read < packs, "{v}");
            let next = sc.json(l);
            assert_ne!(next["subset"], v["subset"], "{next}");
        }
        ("repair-index", "repair index") => {
            let index = sc.moved(REPO).join("index");
            fs::remove_dir_all(&index).unwrap();
            sc.run(l);
            assert!(index.is_dir());
            let v = sc.js(&["check"]).json(0);
            assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
        }
        ("stats", "stats _") => {
            let out = s(&sc.run(l).stdout);
            let got: Vec<&str> = out.lines().collect();
            assert_eq!(got.len(), l.shown.len(), "{out}");
            for (g, shown) in got.iter().zip(&l.shown) {
                if let Some(rest) = shown.strip_prefix("snapshot ") {
                    let name = rest.split_once(": ").unwrap().0;
                    let name = name.split_once(' ').unwrap().1;
                    assert!(
                        g.starts_with("snapshot ") && g.contains(&format!(" {name}: ")),
                        "{g}"
                    );
                    assert!(g.contains(" files; forgetting it alone frees "), "{g}");
                } else {
                    // The same label, then a value.
                    let label = shown.split("  ").next().unwrap();
                    assert!(g.starts_with(&format!("{label}  ")), "`{g}` for `{shown}`");
                }
            }
        }
        ("offsite", "`export`") => {
            for kv in &l.words[1..] {
                let (k, v) = kv.split_once('=').unwrap();
                // The loopback server's key pair stands in for the README's.
                let server = *sc.s3.get_or_insert_with(common::s3::shared);
                let v = server
                    .env()
                    .into_iter()
                    .find(|(sk, _)| *sk == k)
                    .map(|(_, sv)| sv)
                    .unwrap_or_else(|| v.to_string());
                sc.vars.push((k.to_string(), v));
            }
        }
        ("offsite", "backup --init --data-dir _") => {
            sc.run(l);
            let repo = l.words[2].clone();
            let v = sc.snapshots(&repo);
            assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
            let t = sc.env.root.join("from-s3");
            let target = t.to_string_lossy().into_owned();
            sc.js(&["--repo", &repo, "restore", "latest", "--target", &target])
                .expect(0);
            verify::assert_same(
                &verify::describe(&t.join("data"), &[]),
                &verify::expected_state(&sc.debian),
            );
        }
        ("offsite", "`rclone`") => {
            // rclone's S3 endpoint is played by the loopback server (the next line's
            // location is mapped to it); the key pair it is given is the exported one.
            assert_eq!(l.words[1..4], ["rclone", "serve", "s3"]);
            assert!(sc.vars.iter().any(|(k, _)| k == "AWS_ACCESS_KEY_ID"));
        }
        ("cron", _) if l.words.len() > 7 => {
            // minute hour day month weekday user, then the command with its environment.
            let (when, rest) = l.words.split_at(6);
            assert_eq!(when[5], "root");
            assert!(when[..5]
                .iter()
                .all(|f| f == "*" || f.parse::<u32>().is_ok()));
            let mut rest = rest.to_vec();
            let mut c_env = Vec::new();
            while let Some((k, v)) = rest[0].split_once('=') {
                c_env.push((k.to_string(), sc.arg(v)));
                rest.remove(0);
            }
            assert_eq!(rest[0], "/usr/local/bin/jellysnap");
            let before = sc.snapshots(REPO).as_array().unwrap().len();
            let mut c = sc.cmd(&rest[1..]).env_remove("JELLYSNAP_REPO");
            for (k, v) in c_env {
                c = c.env(k, v);
            }
            let out = c.expect(0);
            assert!(out.stdout.is_empty(), "--quiet: {}", s(&out.stdout));
            let v = sc.snapshots(REPO);
            assert_eq!(v.as_array().unwrap().len(), before + 1);
            assert_eq!(sc.last()["tags"], serde_json::json!(["nightly"]));
        }
        ("systemd", "`systemctl`") => {
            // daemon-reload, and enable --now of timers the README defines with their services.
            let text = readme();
            let parts: Vec<&str> = l.text.split("&&").collect();
            for part in parts {
                let w = shell_words(bare(part.trim()));
                match w[1].as_str() {
                    "daemon-reload" => {}
                    "enable" => {
                        assert_eq!(w[2], "--now");
                        for unit in &w[3..] {
                            let service = unit.replace(".timer", ".service");
                            for u in [unit.as_str(), &service] {
                                assert!(
                                    text.contains(&format!("# /etc/systemd/system/{u}\n"))
                                        || text.contains(&format!("# {u}\n")),
                                    "the README does not show {u}"
                                );
                            }
                        }
                    }
                    other => panic!("systemctl {other}"),
                }
            }
        }
        _ => return false,
    }
    true
}

/// What `--keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6` removes from the
/// scenario's snapshots: day 0 (Monday) holds the examples' snapshots, days 1-9 one each
/// at noon. Kept: the named ones, days 3-9 (the last 7 days), day 6 (the newest of the
/// first week) and day 9 (the newest of the second week, of the month, and the last 3
/// written: days 7-9). Removed: every other snapshot of days 0-2.
fn policy_removes(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["name"].is_null() && r["time_ns"].as_i64().unwrap() < (DAY0 + 3 * DAY) * 1_000_000_000
        })
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// A database's rows, as a one-entry state (for comparing dumps and restores).
fn db_state(db: &Path) -> State {
    let mut st = State::new();
    st.insert(PathBuf::from("db"), format!("{:?}", verify::db_content(db)));
    st
}
