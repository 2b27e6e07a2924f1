//! jellysnap on a real S3 server (SeaweedFS `weed mini` on loopback, `common/s3.rs`)
//! through the fault proxy (`common/faultproxy.rs`): transient faults during backup,
//! restore, check and gc are retried and the result restores byte for byte; a permanent
//! failure ends the run naming the object, the HTTP status and the next step, with no
//! snapshot written and every earlier one intact; a refusal (403) is never called damage;
//! a listing that leaves objects out never causes a delete; a server killed mid-backup or
//! mid-gc and restarted leaves a repository the next run completes. (Request counts of
//! an unchanged backup: `s3_repo.rs`.)

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;

use common::env::{s, Cmd, Env};
use common::faultproxy::{Fault, FaultProxy, Rule, RuleId};
use common::fixture::{self, Fixture};
use common::s3::{self, S3Server};
use common::verify::{self, expected_state, State};
use serde_json::Value;

/// Exit codes (src/cli/exit.rs).
const DAMAGED: i32 = 18;
const REMOTE: i32 = 22;

/// A repository in a bucket of `server`, reached through a fault proxy; a temp dir for
/// the data dirs, the restores and the local cache.
/// A time after the grace period of any mark a gc made in this test (Unix seconds).
fn after_grace() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now + 2 * 3600
}

struct Remote {
    env: Env,
    proxy: FaultProxy,
    location: String,
    cache: PathBuf,
    creds: Vec<(&'static str, String)>,
}

fn upstream(server: &S3Server) -> SocketAddr {
    let e = server.endpoint();
    e.trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|_| panic!("an http://IP:PORT endpoint: {e}"))
}

impl Remote {
    fn on(server: &S3Server) -> Remote {
        let bucket = server.new_bucket();
        let prefix = "repo";
        let proxy = FaultProxy::start(upstream(server), &format!("{bucket}/{prefix}"));
        let env = Env::new();
        Remote {
            location: format!("s3:{}/{bucket}/{prefix}", proxy.url()),
            cache: env.root.join("cache"),
            creds: server.env(),
            proxy,
            env,
        }
    }

    /// The binary with `--repo s3:...` (through the proxy), the credentials in the
    /// environment and this test's cache dir.
    fn cmd(&self, args: &[&str]) -> Cmd {
        let mut c = Cmd::new(&["--repo", &self.location])
            .args(args)
            .env("XDG_CACHE_HOME", &self.cache)
            // A location misread as a path would land in the temp dir, not the sources.
            .current_dir(&self.env.root);
        for (k, v) in &self.creds {
            c = c.env(k, v);
        }
        c
    }

    #[track_caller]
    fn json(&self, args: &[&str], code: i32) -> Value {
        self.cmd(args).json(code)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output()
    }

    /// Forget the local cache: the next command rebuilds it from the bucket.
    fn drop_cache(&self) {
        let _ = std::fs::remove_dir_all(&self.cache);
    }

    #[track_caller]
    fn backup(&self, fx: &Fixture, extra: &[&str]) -> Value {
        let data = fx.data_dir.to_str().unwrap();
        let mut args = vec!["backup", "--init", "--data-dir", data];
        args.extend_from_slice(extra);
        let b = self.json(&args, 0);
        let errors = &b["snapshot"]["summary"]["errors"];
        assert!(errors.as_array().is_some_and(|e| e.is_empty()), "{b}");
        b
    }

    fn backup_output(&self, fx: &Fixture, extra: &[&str]) -> Output {
        let data = fx.data_dir.to_str().unwrap();
        let mut args = vec!["--json", "backup", "--init", "--data-dir", data];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Restore `snap` into a new directory `name`; it must succeed with no errors.
    #[track_caller]
    fn restored_state(&self, snap: &str, name: &str) -> State {
        let target = self.env.root.join(name);
        let r = self.json(&["restore", snap, "--target", target.to_str().unwrap()], 0);
        let errors = &r["report"]["errors"];
        assert!(errors.as_array().is_some_and(|e| e.is_empty()), "{r}");
        verify::describe(&target, &[])
    }

    #[track_caller]
    fn assert_restores(&self, snap: &str, name: &str, expected: &State) {
        verify::assert_same(&self.restored_state(snap, name), expected);
    }

    fn snapshot_names(&self) -> Vec<String> {
        let v = self.json(&["snapshots"], 0);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

#[track_caller]
fn fired(r: &Remote, what: &str, id: RuleId) -> usize {
    let n = r.proxy.fired(id);
    assert!(
        n > 0,
        "{what}: the fault never fired; the test tested nothing"
    );
    n
}

/// A command exits `code`; its stderr is returned.
#[track_caller]
fn exits(out: &Output, code: i32, what: &str) -> String {
    let err = s(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}\nstdout: {}\nstderr: {err}",
        s(&out.stdout)
    );
    err
}

/// The faults a network and a busy server produce, each of which a retry gets past (an
/// error answered with status 200 has a test of its own).
fn transient_faults() -> Vec<Fault> {
    vec![
        Fault::internal_error(),
        Fault::slow_down(),
        Fault::service_unavailable(),
        Fault::too_many_requests(),
        Fault::DropBefore,
        Fault::DropAfter,
        Fault::ResetBefore,
        Fault::ResetAfter,
        Fault::ErrorAfter {
            status: 500,
            code: "InternalError",
        },
        Fault::Truncate { keep: 10 },
        Fault::Delay { ms: 1500 },
    ]
}

/// `fault` on the first request of each kind in `kinds` (method, key prefix); returns
/// the rules to ask whether they fired.
fn on_first(r: &Remote, fault: &Fault, kinds: &[(&str, &str)]) -> Vec<(String, RuleId)> {
    kinds
        .iter()
        .map(|(method, key)| {
            let id = r.proxy.add(
                Rule::new(fault.clone())
                    .method(method)
                    .key_prefix(key)
                    .nth(1),
            );
            (format!("{fault:?} on {method} {key}"), id)
        })
        .collect()
}

#[test]
fn transient_faults_in_backup_restore_check_and_gc_are_retried() {
    let server = s3::shared();
    let r = Remote::on(server);
    let fx = r.env.small_fixture();
    let faults = transient_faults();

    // Backups: pack and snapshot record uploads fail, reset, are stored but unanswered,
    // are answered late or with an error in a 200.
    let mut states = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        fixture::day_of_changes(&fx, i as u64 + 1).unwrap();
        let rules = on_first(&r, fault, &[("PUT", "packs/"), ("PUT", "snapshots/")]);
        r.backup(&fx, &["--name", &format!("b{i}")]);
        for (what, id) in &rules {
            fired(&r, what, *id);
        }
        r.proxy.clear_rules();
        states.push(expected_state(&fx));
    }

    // Restores from a fresh cache (listings, trailer reads, chunk reads) and
    // check --read-data, each with one fault on the first request of each kind.
    let reads = [("LIST", ""), ("GET", "packs/"), ("GET", "snapshots/")];
    for (i, fault) in faults.iter().enumerate() {
        r.drop_cache();
        let rules = on_first(&r, fault, &reads);
        let snap = format!("b{i}");
        r.assert_restores(&snap, &format!("r{i}"), &states[i]);
        for (what, id) in &rules[..2] {
            fired(&r, what, *id);
        }
        r.proxy.clear_rules();
        let rules = on_first(&r, fault, &reads[1..2]);
        r.json(&["check", "--read-data"], 0);
        fired(&r, &rules[0].0, rules[0].1);
        r.proxy.clear_rules();
    }

    // forget and gc: deletes, listings and the reads of a repack fail or come late.
    r.proxy.reset_counters();
    for (i, fault) in faults.iter().enumerate().take(faults.len() - 1) {
        r.json(&["forget", &format!("b{i}")], 0);
        let _rules = on_first(
            &r,
            fault,
            &[("DELETE", ""), ("LIST", ""), ("GET", "packs/")],
        );
        r.json(&["gc"], 0);
        r.proxy.clear_rules();
    }
    // In a bucket gc deletes in a second phase, once the grace period after the mark has
    // passed: its deletes fail or come late too.
    let _rules = on_first(&r, &faults[0], &[("DELETE", ""), ("LIST", "")]);
    r.cmd(&["gc"]).clock_at(after_grace()).json(0);
    r.proxy.clear_rules();
    assert!(
        r.proxy.count("DELETE", "packs/") > 0,
        "gc after forgetting snapshots deleted no pack: the test tested nothing"
    );
    let last = faults.len() - 1;
    r.json(&["check", "--read-data"], 0);
    r.drop_cache();
    r.assert_restores(&format!("b{last}"), "r-last", &states[last]);
}

/// An S3 `<Error>` answered with HTTP 200 (a server or a middlebox failing late): on an
/// upload it is a failed upload, on a read it is not the object's bytes. Either way it is
/// retried, and a read never calls the pack damaged for it.
#[test]
fn an_error_answered_with_status_200_is_retried_never_called_damage() {
    let server = s3::shared();
    let r = Remote::on(server);
    let fx = r.env.small_fixture();
    let fault = Fault::ErrorWith200 {
        code: "InternalError",
    };

    let rules = on_first(&r, &fault, &[("PUT", "packs/"), ("PUT", "snapshots/")]);
    r.backup(&fx, &["--name", "one"]);
    for (what, id) in &rules {
        fired(&r, what, *id);
    }
    r.proxy.clear_rules();
    let one = expected_state(&fx);

    r.drop_cache();
    let rules = on_first(&r, &fault, &[("LIST", ""), ("GET", "packs/")]);
    r.assert_restores("one", "r-one", &one);
    for (what, id) in &rules {
        fired(&r, what, *id);
    }
    r.proxy.clear_rules();

    // check --read-data reads each pack with ranged GETs: one of them is answered so.
    for n in [1, 2, 3] {
        let id = r.proxy.add(
            Rule::new(fault.clone())
                .method("GET")
                .key_prefix("packs/")
                .nth(n),
        );
        let out = r.run(&["--json", "check", "--read-data"]);
        fired(&r, &format!("{fault:?} on the GET packs/ number {n}"), id);
        exits(
            &out,
            0,
            &format!("check --read-data, {fault:?} on GET packs/ number {n}"),
        );
        r.proxy.clear_rules();
    }
}

#[test]
fn a_permanent_upload_failure_names_the_object_and_loses_nothing() {
    let server = s3::shared();
    let r = Remote::on(server);
    let fx = r.env.small_fixture();
    r.backup(&fx, &["--name", "base"]);
    let base = expected_state(&fx);

    fixture::day_of_changes(&fx, 2).unwrap();
    let every = r.proxy.add(
        Rule::new(Fault::internal_error())
            .method("PUT")
            .key_prefix("packs/"),
    );
    r.proxy.reset_counters();
    let out = r.backup_output(&fx, &["--name", "next"]);
    let err = exits(&out, REMOTE, "every pack upload fails");
    fired(&r, "PUT packs/", every);
    assert!(
        err.contains("packs/"),
        "the message names the object: {err}"
    );
    assert!(
        err.contains("HTTP 500"),
        "the message gives the HTTP status: {err}"
    );
    assert!(
        err.contains("run the command again"),
        "the message gives the next step: {err}"
    );
    assert_eq!(
        r.proxy.count("PUT", "snapshots/"),
        0,
        "no snapshot record was written"
    );
    r.proxy.clear_rules();

    assert_eq!(r.snapshot_names(), vec!["base"]);
    r.json(&["check", "--read-data"], 0);
    r.assert_restores("base", "r-base", &base);

    // Without the fault, the same backup goes through.
    r.backup(&fx, &["--name", "next"]);
    r.assert_restores("next", "r-next", &expected_state(&fx));
}

/// A byte changed on the way (a flaky NIC, a proxy) is not damage at rest: a record or a
/// trailer that does not open is read once more on its own, so `check --read-data` finds
/// nothing wrong and a restore is exact. The same byte changed on every read of a pack is
/// indistinguishable from damage, and is reported as such.
#[test]
fn a_byte_changed_on_the_wire_is_read_again_never_called_damage() {
    let server = s3::shared();
    let r = Remote::on(server);
    let fx = r.env.small_fixture();
    r.backup(&fx, &["--name", "one"]);
    let one = expected_state(&fx);

    // Each GET of packs a check makes, in turn, with a byte flipped: its trailer reads
    // and its reads of records.
    r.proxy.reset_counters();
    r.json(&["check", "--read-data"], 0);
    let gets = r.proxy.count("GET", "packs/");
    assert!(gets >= 2, "{gets} reads of packs");
    for n in 1..=gets.min(8) {
        for at in [40, 5000] {
            let id = r.proxy.add(
                Rule::new(Fault::CorruptByte { at })
                    .method("GET")
                    .key_prefix("packs/")
                    .nth(n),
            );
            let what = format!("check --read-data, byte {at} of GET packs/ number {n} flipped");
            let out = r.run(&["--json", "check", "--read-data"]);
            fired(&r, &what, id);
            exits(&out, 0, &what);
            r.proxy.clear_rules();
        }
    }
    for n in 1..=3 {
        r.drop_cache();
        let id = r.proxy.add(
            Rule::new(Fault::CorruptByte { at: 3000 })
                .method("GET")
                .key_prefix("packs/")
                .nth(n),
        );
        r.assert_restores("one", &format!("r-one-{n}"), &one);
        fired(&r, &format!("restore, GET packs/ number {n} flipped"), id);
        r.proxy.clear_rules();
    }

    // Every read of the packs changed: damage, said as damage, never a success.
    let id = r.proxy.add(
        Rule::new(Fault::CorruptByte { at: 3000 })
            .method("GET")
            .key_prefix("packs/"),
    );
    let out = r.run(&["--json", "check", "--read-data"]);
    fired(&r, "every GET of packs/ flipped", id);
    exits(
        &out,
        DAMAGED,
        "check --read-data, every GET of packs/ flipped",
    );
    r.proxy.clear_rules();
    r.json(&["check", "--read-data"], 0);
}

#[test]
fn a_refusal_is_reported_as_a_refusal_never_as_damage() {
    let server = s3::shared();
    let r = Remote::on(server);
    let fx = r.env.small_fixture();
    r.backup(&fx, &["--name", "base"]);
    let base = expected_state(&fx);

    let mut denials = Vec::new();
    for (method, key) in [("GET", "packs/"), ("LIST", "")] {
        let target = r.env.root.join(format!("denied-{method}"));
        let denied = r.proxy.add(
            Rule::new(Fault::access_denied())
                .method(method)
                .key_prefix(key),
        );
        for (what, args) in [
            (
                "restore",
                vec!["restore", "base", "--target", target.to_str().unwrap()],
            ),
            ("check --read-data", vec!["check", "--read-data"]),
        ] {
            let what = format!("{what}, {method} {key} denied");
            r.drop_cache();
            let out = r.run(&args);
            let err = exits(&out, REMOTE, &what);
            assert_ne!(out.status.code(), Some(DAMAGED));
            assert!(err.contains("HTTP 403"), "{what}: {err}");
            assert!(
                !err.to_lowercase().contains("damage") && !err.to_lowercase().contains("corrupt"),
                "{what}: a refusal is not damage: {err}"
            );
        }
        r.proxy.clear_rules();
        denials.push((format!("{method} {key} denied"), denied));
    }
    for (what, id) in &denials {
        fired(&r, what, *id);
    }
    r.proxy.clear_rules();
    r.json(&["check", "--read-data"], 0);
    r.assert_restores("base", "r-base", &base);
}

/// The keys of the objects a command stored (status 200), by key prefix.
fn stored(r: &Remote, prefix: &str) -> Vec<String> {
    r.proxy
        .log()
        .iter()
        .filter(|e| e.method == "PUT" && e.key.starts_with(prefix) && e.status == Some(200))
        .map(|e| e.key.clone())
        .collect()
}

fn basename(key: &str) -> String {
    key.rsplit('/').next().unwrap().to_string()
}

#[test]
fn an_incomplete_listing_never_causes_a_delete() {
    let server = s3::shared();
    for cold_cache in [false, true] {
        let r = Remote::on(server);
        let fx = r.env.small_fixture();
        r.backup(&fx, &["--name", "one"]);
        fixture::day_of_changes(&fx, 3).unwrap();
        r.proxy.reset_counters();
        r.backup(&fx, &["--name", "two"]);
        let two = expected_state(&fx);
        let records = stored(&r, "snapshots/");
        assert_eq!(records.len(), 1, "{records:?}");
        let packs_two = stored(&r, "packs/");
        r.json(&["forget", "one"], 0);

        // gc's listings leave out the record of the snapshot it must keep and the packs
        // written for it, as a listing behind a load balancer may: seeing less may make
        // gc keep more, never delete more.
        for k in records.iter().chain(&packs_two) {
            r.proxy
                .add(Rule::new(Fault::omit_listed(&basename(k))).method("LIST"));
        }
        if cold_cache {
            r.drop_cache();
        }
        r.proxy.reset_counters();
        let out = r.run(&["--json", "gc"]);
        assert!(
            r.proxy.count("LIST", "") > 0,
            "gc listed nothing: the test tested nothing"
        );
        let deleted: Vec<String> = r
            .proxy
            .log()
            .iter()
            .filter(|e| e.method == "DELETE")
            .map(|e| e.key.clone())
            .collect();
        for k in records.iter().chain(&packs_two) {
            assert!(
                !deleted.contains(k),
                "cold cache {cold_cache}: gc deleted {k}, which snapshot two needs and the \
                 listing left out (gc exit {:?}): {}",
                out.status.code(),
                s(&out.stderr)
            );
        }
        r.proxy.clear_rules();

        // With full listings, everything snapshot two needs is there.
        r.drop_cache();
        r.json(&["check", "--read-data"], 0);
        r.assert_restores("two", &format!("r-two-{cold_cache}"), &two);
    }
}

/// A server of this test's own: the kill tests stop it.
#[test]
fn a_server_killed_mid_backup_and_mid_gc_loses_nothing() {
    let mut server = S3Server::start();
    let r = Remote::on(&server);
    let fx = r
        .env
        .fixture(&fixture::FixtureSpec::small(fixture::Layout::Docker));
    r.backup(&fx, &["--name", "base"]);
    let base = expected_state(&fx);
    fixture::day_of_changes(&fx, 4).unwrap();

    // Slow uploads, so that the server dies in the middle of the backup.
    r.proxy.add(
        Rule::new(Fault::Delay { ms: 300 })
            .method("PUT")
            .key_prefix("packs/"),
    );
    r.proxy.reset_counters();
    let data = fx.data_dir.to_str().unwrap().to_string();
    let mut child = r
        .cmd(&["--json", "backup", "--data-dir", &data, "--name", "killed"])
        .quiet()
        .spawn();
    common::env::wait_until("the backup has uploaded a pack", || {
        r.proxy
            .count_where(|e| e.method == "PUT" && e.key.starts_with("packs/") && e.status.is_some())
            > 0
            || child.try_wait().unwrap().is_some()
    });
    server.kill9();
    let status = child.wait().unwrap();
    server.restart();
    r.proxy.clear_rules();
    // Its snapshot record at least was still to be written: the backup failed, as a
    // network failure.
    assert_eq!(status.code(), Some(REMOTE), "backup: {status}");
    assert_eq!(r.snapshot_names(), vec!["base"]);
    r.backup(&fx, &["--name", "after"]);
    let after = expected_state(&fx);
    r.json(&["check", "--read-data"], 0);
    r.assert_restores("base", "r-base", &base);
    r.assert_restores("after", "r-after", &after);

    // Now gc, killed at its first delete: the mark, then the second phase after the
    // grace period.
    r.json(&["forget", "base"], 0);
    r.json(&["gc"], 0);
    r.proxy
        .add(Rule::new(Fault::Delay { ms: 300 }).method("DELETE"));
    r.proxy.reset_counters();
    let mut child = r
        .cmd(&["--json", "gc"])
        .clock_at(after_grace())
        .quiet()
        .spawn();
    common::env::wait_until("gc has sent a delete", || {
        r.proxy.count("DELETE", "") > 0 || child.try_wait().unwrap().is_some()
    });
    server.kill9();
    let status = child.wait().unwrap();
    server.restart();
    r.proxy.clear_rules();
    assert!(
        r.proxy.count("DELETE", "") > 0,
        "gc deleted nothing ({status})"
    );
    assert_eq!(status.code(), Some(REMOTE), "gc: {status}");
    r.cmd(&["gc"]).clock_at(after_grace()).json(0);
    r.json(&["check", "--read-data"], 0);
    r.drop_cache();
    r.assert_restores("after", "r-after-gc", &after);
}
