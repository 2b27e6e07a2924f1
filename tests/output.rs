//! What the binary prints, as a script and a person read it: `--json` ids, times, errors
//! and field names (pinned here: a renamed field or a changed type fails), `-q` and `-v`,
//! refused empty values, the backup summary, `ls` of a database, the `snapshots` table
//! and what `diff` says about the database.

mod common;

use std::fs;

use common::env::{files_under, s, Env};
use serde_json::Value;

fn is_hex(v: &Value, len: usize) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let b = s.as_bytes();
        b.len() == 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z'
            && s[..19].bytes().filter(|c| c.is_ascii_digit()).count() == 14
    })
}

/// The kind of a JSON value, for pinning field types.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field in `fields` is in `v` with that kind (`a|b` for either).
#[track_caller]
fn pinned(v: &Value, fields: &[(&str, &str)]) {
    for (name, want) in fields {
        let got = kind(&v[*name]);
        assert!(
            want.split('|').any(|w| w == got),
            "field `{name}` is {got}, the README documents {want}: {v}"
        );
    }
}

/// The JSON error object on stderr's last line.
#[track_caller]
fn json_error(stderr: &[u8]) -> Value {
    let text = s(stderr);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not a JSON error ({e}): {text}"))
}

#[test]
fn json_ids_times_fields_and_errors() {
    let env = Env::new();
    let fx = env.small_fixture();
    let first = env.backup(&fx, &["--name", "first", "--tag", "t1"]);
    fs::write(fx.metadata_dir.join("library/new.txt"), b"new").unwrap();
    let second = env.backup(&fx, &[]);

    pinned(
        &second,
        &[
            ("id", "string"),
            ("repository", "string"),
            ("repository_created", "bool"),
            ("parent", "string"),
            ("partial", "bool"),
            ("notices", "array"),
            ("repository_inside_data", "null|string"),
            ("proofs", "array"),
            ("snapshot", "object"),
        ],
    );
    for proof in second["proofs"].as_array().unwrap() {
        pinned(proof, &[("database", "string"), ("rebuild", "string")]);
    }
    assert!(is_hex(&second["id"], 64), "{second}");
    assert_eq!(second["parent"], first["id"]);
    assert!(is_hex(&second["snapshot"]["tree"], 64), "{second}");
    assert_eq!(second["snapshot"]["parent"], first["id"]);
    assert!(is_rfc3339_utc(&second["snapshot"]["time"]), "{second}");

    let list = env.json(&["snapshots"], 0);
    let snaps = list.as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    for snap in snaps {
        pinned(
            snap,
            &[
                ("id", "string"),
                ("name", "null|string"),
                ("time", "string"),
                ("time_ns", "number"),
                ("host", "string"),
                ("data_dir", "string"),
                ("jellyfin_version", "null|string"),
                ("components", "array"),
                ("tags", "array"),
                ("partial", "bool"),
                ("size_added", "number"),
                ("hook", "null|string"),
                ("database_capture", "array"),
                ("tree", "string"),
                ("parent", "null|string"),
                ("summary", "object"),
                ("databases", "array"),
            ],
        );
        assert!(
            is_hex(&snap["id"], 64) && is_hex(&snap["tree"], 64),
            "{snap}"
        );
        assert!(is_rfc3339_utc(&snap["time"]), "{snap}");
    }
    assert_eq!(snaps[0]["tags"][0], "t1");
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);

    let ls = env.json(&["ls", "latest", "data/data"], 0);
    for e in ls.as_array().unwrap() {
        pinned(
            e,
            &[
                ("path", "string"),
                ("kind", "string"),
                ("mode", "number"),
                ("size", "number"),
                ("mtime_ns", "number"),
                ("mtime", "string"),
            ],
        );
        assert!(is_rfc3339_utc(&e["mtime"]), "{e}");
    }

    let diff = env.json(&["diff", "first", "latest"], 0);
    pinned(
        &diff,
        &[
            ("from", "string"),
            ("to", "string"),
            ("changes", "array"),
            ("databases", "array"),
        ],
    );
    assert!(is_hex(&diff["from"], 64) && is_hex(&diff["to"], 64));
    let added = &diff["changes"][0];
    pinned(
        added,
        &[
            ("change", "string"),
            ("path", "string"),
            ("size_before", "null|number"),
            ("size_after", "null|number"),
        ],
    );

    let forget = env.json(&["forget", "--keep-last", "1", "--dry-run"], 0);
    pinned(
        &forget,
        &[
            ("dry_run", "bool"),
            ("decisions", "array"),
            ("removed", "number"),
        ],
    );
    for d in forget["decisions"].as_array().unwrap() {
        pinned(
            d,
            &[
                ("id", "string"),
                ("name", "null|string"),
                ("time", "string"),
                ("keep", "bool"),
                ("reasons", "array"),
            ],
        );
        assert!(is_hex(&d["id"], 64) && is_rfc3339_utc(&d["time"]), "{d}");
    }

    let stats = env.json(&["stats", "first"], 0);
    pinned(&stats, &[("repository", "object"), ("snapshots", "array")]);
    pinned(
        &stats["repository"],
        &[
            ("snapshots", "number"),
            ("logical_bytes", "number"),
            ("stored_bytes", "number"),
            ("packs", "number"),
            ("chunks", "number"),
        ],
    );
    assert!(is_hex(&stats["snapshots"][0]["id"], 64), "{stats}");

    let check = env.json(&["check"], 0);
    pinned(
        &check,
        &[
            ("snapshots", "number"),
            ("trees", "number"),
            ("list_chunks", "number"),
            ("data_chunks", "number"),
            ("packs", "number"),
            ("packs_read", "number"),
            ("bytes_read", "number"),
            ("databases_rebuilt", "number"),
            ("problems", "array"),
            ("affected", "array"),
            ("newer_format", "array"),
            ("subset", "null|string"),
            ("scratch_cleared", "number"),
        ],
    );

    let gc = env.json(&["gc", "--dry-run"], 0);
    pinned(
        &gc,
        &[("dry_run", "bool"), ("plan", "object"), ("report", "null")],
    );
    pinned(
        &gc["plan"],
        &[
            ("snapshots", "number"),
            ("live_chunks", "number"),
            ("packs", "number"),
            ("repository_bytes", "number"),
            ("delete", "array"),
            ("repack", "array"),
            ("bytes_freed", "number"),
            ("pending", "null|object"),
        ],
    );

    let target = env.root.join("restored");
    let r = env.json(
        &["restore", "first", "--target", target.to_str().unwrap()],
        0,
    );
    pinned(
        &r,
        &[
            ("dry_run", "bool"),
            ("plan", "object"),
            ("report", "object"),
        ],
    );
    pinned(
        &r["plan"],
        &[
            ("snapshot", "string"),
            ("roots", "array"),
            ("components", "array"),
            ("actions", "array"),
            ("write_files", "number"),
            ("write_bytes", "number"),
            ("keep_files", "number"),
            ("delete_paths", "number"),
            ("not_captured", "number"),
        ],
    );
    assert_eq!(r["plan"]["snapshot"], first["id"]);
    pinned(
        &r["report"],
        &[
            ("files_written", "number"),
            ("bytes_written", "number"),
            ("files_kept", "number"),
            ("deleted", "number"),
            ("errors", "array"),
        ],
    );

    let copy_to = env.root.join("copy");
    let c = env
        .cmd(&["--json", "copy", "--init", "--dry-run", "--to"])
        .arg(&copy_to)
        .expect(0);
    let c: Value = serde_json::from_slice(&c.stdout).unwrap();
    pinned(
        &c,
        &[
            ("source", "string"),
            ("destination", "string"),
            ("destination_created", "bool"),
            ("report", "object"),
            ("superseded_removed", "array"),
        ],
    );
    pinned(
        &c["report"],
        &[
            ("dry_run", "bool"),
            ("copied", "array"),
            ("already_present", "array"),
            ("refused", "array"),
            ("chunks_sent", "number"),
            ("bytes_sent", "number"),
            ("chunks_present", "number"),
            ("packs_written", "number"),
            ("chunking_differs", "bool"),
        ],
    );
    for s in c["report"]["copied"].as_array().unwrap() {
        assert!(is_hex(&s["id"], 64) && is_rfc3339_utc(&s["time"]), "{s}");
    }

    let other = Env::new();
    let init = other.json(&["init"], 0);
    pinned(&init, &[("repository", "string"), ("repo_id", "string")]);

    let repair = env.json(&["repair", "index"], 0);
    pinned(
        &repair,
        &[
            ("packs", "number"),
            ("chunks", "number"),
            ("recovered_by_scan", "array"),
        ],
    );

    let conf = env.root.join("setup.toml");
    let setup = env
        .cmd(&[
            "--json",
            "setup",
            "--dry-run",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
        ])
        .arg("--config")
        .arg(&conf)
        .expect(0);
    let setup: Value = serde_json::from_slice(&setup.stdout).unwrap();
    pinned(
        &setup,
        &[
            ("config", "string"),
            ("written", "bool"),
            ("replaced", "bool"),
            ("install", "object"),
            ("package_version", "null|string"),
            ("repository", "string"),
            ("also_found", "array"),
        ],
    );
    pinned(
        &setup["install"],
        &[
            ("data_dir", "string"),
            ("config_dir", "string"),
            ("metadata_dir", "null|string"),
            ("cache_dir", "null|string"),
            ("log_dir", "null|string"),
            ("layout", "string"),
        ],
    );
    let out = env
        .cmd(&[
            "-q",
            "setup",
            "--dry-run",
            "--data-dir",
            fx.data_dir.to_str().unwrap(),
        ])
        .arg("--config")
        .arg(&conf)
        .expect(0);
    assert!(
        !out.stdout.is_empty(),
        "setup --dry-run printed nothing under -q"
    );

    let apt = env.root.join("apt.conf.d");
    fs::create_dir_all(&apt).unwrap();
    let apt_dir = apt.to_str().unwrap();
    let install = env.json(&["hook", "apt", "install", "--apt-conf-dir", apt_dir], 0);
    pinned(
        &install,
        &[
            ("installed", "string"),
            ("replaced", "bool"),
            ("command", "string"),
        ],
    );
    let remove = env.json(&["hook", "apt", "remove", "--apt-conf-dir", apt_dir], 0);
    pinned(&remove, &[("removed", "bool"), ("path", "string")]);

    // Errors under --json: one object on stderr, with the code and the message, for
    // the engine's errors, clap's and the configuration file's.
    let out = env.cmd(&["--json", "ls", "nosuchsnapshot"]).expect(12);
    assert!(out.stdout.is_empty(), "{}", s(&out.stdout));
    let e = json_error(&out.stderr);
    assert_eq!(e["error"]["code"], 12);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchsnapshot"),
        "{e}"
    );

    let out = env.cmd(&["--json", "backup", "--no-such-flag"]).expect(2);
    let e = json_error(&out.stderr);
    assert_eq!(e["error"]["code"], 2);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--no-such-flag"),
        "{e}"
    );

    let bad_config = env.root.join("bad.toml");
    fs::write(&bad_config, "this is = = not toml").unwrap();
    let out = env
        .cmd(&["--json", "snapshots"])
        .arg("--config")
        .arg(&bad_config)
        .expect(23);
    let e = json_error(&out.stderr);
    assert_eq!(e["error"]["code"], 23, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("bad.toml"),
        "{e}"
    );

    // A hook that could not snapshot reports the error in the same shape, as its result.
    let missing = env.root.join("no-data-dir");
    let v = env
        .cmd(&[
            "--json",
            "hook",
            "container",
            "run",
            "--image-tag",
            "10.11.3",
            "--data-dir",
        ])
        .arg(&missing)
        .env("XDG_STATE_HOME", env.root.join("state"))
        .expect(0);
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    pinned(
        &v,
        &[
            ("snapshot", "null"),
            ("error", "object"),
            ("exit_code", "number"),
        ],
    );
    pinned(&v["error"], &[("code", "number"), ("message", "string")]);
    assert_eq!(v["exit_code"], 0);

    // Without --json the error stays text.
    let out = env.cmd(&["ls", "nosuchsnapshot"]).expect(12);
    assert!(
        s(&out.stderr).starts_with("jellysnap: error: "),
        "{}",
        s(&out.stderr)
    );
}

#[test]
fn quiet_hides_chatter_not_data_and_verbose_lists_files() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    env.backup(&fx, &["--name", "first"]);

    // -v: added, changed and removed files against the parent.
    fs::write(fx.metadata_dir.join("library/added.txt"), b"added").unwrap();
    let changed = fx.config_dir.join("system.xml");
    let mut xml = fs::read(&changed).unwrap();
    xml.extend_from_slice(b"<!-- edited -->\n");
    fs::write(&changed, xml).unwrap();
    let removed = files_under(&fx.data_path().join("trickplay"))[0].clone();
    fs::remove_file(&removed).unwrap();
    let out = env.expect(&["-v", "backup", "--data-dir", data], 0);
    let text = s(&out.stdout);
    let rel = |p: &std::path::Path| {
        p.strip_prefix(&fx.data_dir)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert!(
        text.lines()
            .any(|l| l == "A data/metadata/library/added.txt"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("M ") && l.ends_with("system.xml")),
        "{text}"
    );
    let removed_line = format!("D data/{}", rel(&removed));
    assert!(
        text.lines().any(|l| l == removed_line),
        "{removed_line}: {text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("U ")), "{text}");

    // -vv: every file, the unchanged ones too.
    let out = env.expect(&["-vv", "backup", "--data-dir", data], 0);
    let text = s(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l == "U data/metadata/library/added.txt"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "U data/data/jellyfin.db"),
        "{text}"
    );

    // -q: a backup says nothing on stdout; the listings still print.
    let out = env.expect(&["-q", "backup", "--data-dir", data], 0);
    assert!(out.stdout.is_empty(), "{}", s(&out.stdout));
    for args in [
        &["-q", "snapshots"][..],
        &["-q", "ls", "latest"],
        &["-q", "ls", "-r", "latest", "data/data"],
        &["-q", "diff", "first", "latest"],
        &["-q", "stats"],
        &["-q", "forget", "--keep-last", "1", "--dry-run"],
        &["-q", "gc", "--dry-run"],
    ] {
        let out = env.expect(args, 0);
        assert!(!out.stdout.is_empty(), "{args:?} printed nothing under -q");
    }
    let copy_to = env.root.join("copy");
    let out = env
        .cmd(&["-q", "copy", "--init", "--dry-run", "--to"])
        .arg(&copy_to)
        .expect(0);
    assert!(
        !out.stdout.is_empty(),
        "copy --dry-run printed nothing under -q"
    );
    let out = env.expect(&["-q", "diff", "first", "latest"], 0);
    assert!(
        s(&out.stdout).contains("+ data/metadata/library/added.txt"),
        "{}",
        s(&out.stdout)
    );
}

#[test]
fn empty_tag_and_component_values_are_usage_errors() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    for extra in [
        &["--tag", ""][..],
        &["--tag", "ok", "--tag", " "],
        &["--components", ""],
        &["--components", "metadata,"],
        &["--components", ",metadata"],
    ] {
        let mut args = vec!["backup", "--data-dir", data];
        args.extend_from_slice(extra);
        let out = env.expect(&args, 2);
        assert!(
            s(&out.stderr).contains("empty value"),
            "{extra:?}: {}",
            s(&out.stderr)
        );
    }
    assert!(!env.repo.exists(), "a refused backup creates nothing");
    env.backup(&fx, &[]);
    let target = env.root.join("t");
    let out = env.expect(
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--components",
            "database,",
        ],
        2,
    );
    assert!(s(&out.stderr).contains("empty value"), "{}", s(&out.stderr));
    assert!(!target.exists());
}

#[test]
fn summaries_count_the_database_and_show_its_file_size() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let out = env.expect(&["backup", "--data-dir", data], 0);
    let text = s(&out.stdout);
    assert!(text.contains(", 1 database), dirs "), "{text}");
    let db_line = text
        .lines()
        .find(|l| l.starts_with("  database data/data/jellyfin.db ("))
        .unwrap_or_else(|| panic!("no database line with its size: {text}"));
    assert!(db_line.contains("): logical dump"), "{db_line}");
    assert!(
        text.contains("added ") && text.contains(" to the repository: "),
        "{text}"
    );

    // Nothing changed: nothing added, and no ratio of all the data against nothing.
    let out = env.expect(&["backup", "--data-dir", data], 0);
    let text = s(&out.stdout);
    assert!(text.contains("added nothing to the repository"), "{text}");
    assert!(!text.contains("ratio"), "{text}");

    // The database at its file's size as restored, the dump's size said beside it.
    let (restored, _) = env.restore_to("latest", "db-size");
    let db_size = fs::metadata(restored.join("data/jellyfin.db"))
        .unwrap()
        .len();
    let ls = env.json(&["ls", "latest", "data/data/jellyfin.db"], 0);
    let e = &ls[0];
    assert_eq!(e["database"], "logical", "{e}");
    assert_eq!(e["size"], db_size, "{e}");
    assert!(e["capture_size"].as_u64().unwrap() != db_size, "{e}");
    let out = env.expect(&["ls", "latest", "data/data/jellyfin.db"], 0);
    assert!(
        s(&out.stdout).contains("(database; stored as a "),
        "{}",
        s(&out.stdout)
    );

    // Restore: the plan says what it reads from the repository, the result what it
    // wrote to disk.
    let target = env.root.join("restored");
    let out = env.expect(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        0,
    );
    let text = s(&out.stdout);
    assert!(text.contains("from the repository"), "{text}");
    assert!(text.contains("written to disk"), "{text}");
}

#[test]
fn snapshots_table_answers_the_pre_upgrade_questions() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    env.backup(&fx, &["--name", "before-10.11.3", "--tag", "manual"]);
    env.backup(&fx, &["--components", "metadata"]);
    let out = env.expect(&["snapshots"], 0);
    let text = s(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("host {}, data dir {data}", hostname()),
        "{text}"
    );
    for col in [
        "ID",
        "TIME (UTC)",
        "NAME",
        "JELLYFIN",
        "COMPONENTS",
        "STATUS",
        "TAGS",
        "SIZE",
        "ADDED",
    ] {
        assert!(lines[1].contains(col), "{col}: {text}");
    }
    assert!(
        lines[2].contains("before-10.11.3") && lines[2].contains("manual"),
        "{text}"
    );
    assert!(
        lines[2].contains(" all ") && lines[2].contains("complete"),
        "{text}"
    );
    assert!(lines[3].contains(" metadata "), "{text}");
    for l in &lines {
        assert!(l.chars().count() <= 120, "too wide: {l}");
    }

    // Local time in the table (the zone's offset in the header), UTC in --json.
    let out = env.cmd(&["snapshots"]).env("TZ", "JST-9").expect(0);
    let text = s(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].contains("TIME (UTC+09:00)"), "{text}");
    let utc = env.json(&["snapshots"], 0)[0]["time"]
        .as_str()
        .unwrap()
        .to_string();
    let (date, hm) = (&utc[..10], &utc[11..16]);
    let hour: u32 = hm[..2].parse().unwrap();
    let local_hm = format!("{:02}{}", (hour + 9) % 24, &hm[2..]);
    assert!(lines[2].contains(&local_hm), "{local_hm} in {text}");
    if hour + 9 < 24 {
        assert!(lines[2].contains(date), "{date} in {text}");
    }
    let out = env.cmd(&["snapshots"]).env("TZ", "UTC").expect(0);
    assert!(s(&out.stdout).contains("TIME (UTC)"), "{}", s(&out.stdout));
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn diff_names_migrations_added_and_row_counts_changed() {
    let env = Env::new();
    let fx = env.small_fixture();
    env.backup(&fx, &["--name", "before"]);
    {
        let db = rusqlite::Connection::open(&fx.db_path).unwrap();
        db.execute_batch(
            r#"INSERT INTO "__EFMigrationsHistory" VALUES ('29990101000000_AddTestThing', '10.99.0');
               CREATE TABLE TestThing (Id INTEGER PRIMARY KEY, Name TEXT);
               INSERT INTO TestThing (Name) VALUES ('a'), ('b'), ('c');"#,
        )
        .unwrap();
    }
    env.backup(&fx, &["--name", "after"]);

    let d = env.json(&["diff", "before", "after"], 0);
    let dbs = d["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 1, "{d}");
    let db = &dbs[0];
    pinned(
        db,
        &[
            ("path", "string"),
            ("migrations_added", "array"),
            ("migrations_removed", "array"),
            ("tables", "array"),
        ],
    );
    assert_eq!(db["path"], "data/data/jellyfin.db");
    assert_eq!(
        db["migrations_added"],
        serde_json::json!(["29990101000000_AddTestThing"])
    );
    assert_eq!(db["migrations_removed"], serde_json::json!([]));
    let tables = db["tables"].as_array().unwrap();
    let table = |n: &str| tables.iter().find(|t| t["table"] == n).cloned();
    let t = table("TestThing").unwrap_or_else(|| panic!("{d}"));
    assert_eq!(t["rows_before"], Value::Null);
    assert_eq!(t["rows_after"], 3);
    let h = table("__EFMigrationsHistory").unwrap_or_else(|| panic!("{d}"));
    assert_eq!(
        h["rows_after"].as_u64().unwrap(),
        h["rows_before"].as_u64().unwrap() + 1
    );
    assert!(
        table("BaseItems").is_none(),
        "unchanged tables are not listed: {d}"
    );

    let out = env.expect(&["diff", "before", "after"], 0);
    let text = s(&out.stdout);
    assert!(text.contains("database data/data/jellyfin.db:"), "{text}");
    assert!(
        text.contains("+ migration 29990101000000_AddTestThing"),
        "{text}"
    );
    assert!(text.contains("table TestThing: - -> 3 rows"), "{text}");

    // The other way round: the migration is removed.
    let back = env.json(&["diff", "after", "before"], 0);
    assert_eq!(
        back["databases"][0]["migrations_removed"],
        serde_json::json!(["29990101000000_AddTestThing"])
    );

    // An unchanged database is not read, nor listed.
    env.backup(&fx, &["--name", "again"]);
    let same = env.json(&["diff", "after", "again"], 0);
    assert_eq!(same["databases"], serde_json::json!([]), "{same}");
}

#[test]
fn snapshots_across_a_daylight_saving_change_show_each_offset() {
    let env = Env::new();
    let fx = env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    // 2026-01-15 12:00 and 2026-07-15 12:00 UTC.
    for at in [1_768_478_400, 1_784_116_800] {
        env.cmd(&["backup", "--init", "--data-dir", data])
            .clock_at(at)
            .expect(0);
    }
    let out = env
        .cmd(&["snapshots"])
        .env("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
        .expect(0);
    let text = s(&out.stdout);
    assert!(text.contains("TIME (local)"), "{text}");
    assert!(text.contains("2026-01-15 13:00 +01:00"), "{text}");
    assert!(text.contains("2026-07-15 14:00 +02:00"), "{text}");
}
