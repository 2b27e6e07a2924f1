//! What a real S3 user's environment brings, driven through the binary against the real
//! S3 server of tests/common/s3.rs: the AWS shared credentials and config files and
//! `AWS_PROFILE`, a self-hosted server behind its own CA (`AWS_CA_BUNDLE`), a forward
//! proxy (`HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`), and the conditional-write probe
//! remembered in the cache dir. No secret of any of them shows in any output.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use common::connectproxy::ConnectProxy;
use common::env::{s, Cmd, Env};
use common::faultproxy::{Fault, FaultProxy, Rule};
use common::s3::{ACCESS_KEY, SECRET_KEY};
use common::tls::TlsFront;
use common::verify::{assert_same, describe, expected_state};

/// A repository location in a new bucket, with its own cache dir; no credentials unless
/// a test sets them.
struct Repo {
    env: Env,
    location: String,
    cache: PathBuf,
}

impl Repo {
    fn at(endpoint: &str) -> Repo {
        let bucket = common::s3::shared().new_bucket();
        let env = Env::new();
        Repo {
            cache: env.root.join("cache"),
            location: format!("s3:{endpoint}/{bucket}/repo"),
            env,
        }
    }

    fn direct() -> Repo {
        Repo::at(&common::s3::shared().endpoint())
    }

    /// The command with no credentials.
    fn bare(&self, args: &[&str]) -> Cmd {
        Cmd::new(&["--repo", &self.location])
            .args(args)
            .env("XDG_CACHE_HOME", &self.cache)
    }

    /// The command with the server's key pair in the environment.
    fn cmd(&self, args: &[&str]) -> Cmd {
        let mut c = self.bare(args);
        for (k, v) in common::s3::shared().env() {
            c = c.env(k, v);
        }
        c
    }
}

fn both(out: &Output) -> String {
    format!("{}{}", s(&out.stdout), s(&out.stderr))
}

#[track_caller]
fn assert_hides(out: &Output, secrets: &[&str]) {
    let text = both(out);
    for secret in secrets {
        assert!(!text.contains(secret), "`{secret}` shown: {text}");
    }
}

/// The key pair of the AWS credentials file's profile, `AWS_PROFILE` choosing it; keys in
/// the environment win over the file; a missing profile is named with its files.
#[test]
fn credentials_come_from_the_aws_files_and_the_environment_wins() {
    let r = Repo::direct();
    let aws = r.env.root.join("aws");
    fs::create_dir(&aws).unwrap();
    let creds = aws.join("credentials");
    let config = aws.join("config");
    fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = NOSUCHKEY\naws_secret_access_key = wrong-default-secret\n\n\
             [jelly]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    fs::write(&config, "[profile jelly]\nregion = us-east-1\n").unwrap();
    let files = |c: Cmd| {
        c.env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", &config)
    };
    let secrets = [SECRET_KEY, "wrong-default-secret", "env-wrong-secret"];
    let fx = r.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();

    let out = files(r.bare(&["backup", "--init", "--data-dir", data]))
        .env("AWS_PROFILE", "jelly")
        .expect(0);
    assert_hides(&out, &secrets);
    let out = files(r.bare(&["snapshots"]))
        .env("AWS_PROFILE", "jelly")
        .expect(0);
    assert_hides(&out, &secrets);

    // The default profile holds a key the server does not know: refused, not damage.
    let out = files(r.bare(&["snapshots"])).expect(22);
    assert_hides(&out, &secrets);
    // Keys in the environment win over the profile's.
    let out = files(r.bare(&["snapshots"]))
        .env("AWS_PROFILE", "jelly")
        .env("AWS_ACCESS_KEY_ID", "ENVKEY")
        .env("AWS_SECRET_ACCESS_KEY", "env-wrong-secret")
        .expect(22);
    assert_hides(&out, &secrets);
    // A profile neither file holds: a usage error naming both files and the profile.
    let out = files(r.bare(&["snapshots"]))
        .env("AWS_PROFILE", "nosuch")
        .expect(2);
    let text = both(&out);
    for want in [
        "`nosuch`",
        creds.to_str().unwrap(),
        config.to_str().unwrap(),
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert_hides(&out, &secrets);
    // No credentials anywhere: what to set, and where.
    let out = r.bare(&["snapshots"]).expect(2);
    assert!(both(&out).contains("AWS_ACCESS_KEY_ID"), "{}", both(&out));
}

/// A self-hosted server with its own CA: refused as an untrusted TLS peer (exit 22, the
/// endpoint and the next step named, never damaged data) until `AWS_CA_BUNDLE` names the
/// CA; then backup and restore work. A bundle of another CA does not do.
#[test]
fn a_server_behind_its_own_ca_is_trusted_through_aws_ca_bundle() {
    let server = common::s3::shared();
    let port: u16 = server
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let front = TlsFront::start(port);
    let r = Repo::at(&front.endpoint());
    let fx = r.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();

    let out = r.cmd(&["backup", "--init", "--data-dir", data]).expect(22);
    let text = both(&out);
    for want in [
        front.endpoint().as_str(),
        "TLS",
        "AWS_CA_BUNDLE",
        "UnknownIssuer",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    for never in ["damaged", "corrupt", "check --read-data"] {
        assert!(!text.to_lowercase().contains(never), "{never}: {text}");
    }
    assert_hides(&out, &[SECRET_KEY]);

    let other = common::tls::make_ca(front.dir(), "other-ca");
    let out = r
        .cmd(&["backup", "--init", "--data-dir", data])
        .env("AWS_CA_BUNDLE", &other)
        .expect(22);
    assert!(
        both(&out).contains(other.to_str().unwrap()),
        "{}",
        both(&out)
    );

    let junk = r.env.root.join("junk.pem");
    fs::write(&junk, "not a certificate\n").unwrap();
    let out = r.cmd(&["snapshots"]).env("AWS_CA_BUNDLE", &junk).expect(2);
    assert!(
        both(&out).contains(junk.to_str().unwrap()),
        "{}",
        both(&out)
    );

    let ca = front.ca();
    r.cmd(&["backup", "--init", "--data-dir", data])
        .env("AWS_CA_BUNDLE", &ca)
        .expect(0);
    let target = r.env.root.join("restored");
    r.cmd(&["restore", "latest", "--target", target.to_str().unwrap()])
        .env("AWS_CA_BUNDLE", &ca)
        .expect(0);
    assert_same(&describe(&target, &[]), &expected_state(&fx));
    // Through a proxy, TLS runs inside the tunnel: the same CA is trusted.
    let proxy = ConnectProxy::start(None);
    r.cmd(&["snapshots"])
        .env("AWS_CA_BUNDLE", &ca)
        .env("HTTPS_PROXY", proxy.url(None))
        .expect(0);
    assert!(proxy.tunnels() > 0);
}

/// Every request goes through the proxy `HTTP_PROXY` or `ALL_PROXY` names (with its user
/// and password), none when `NO_PROXY` names the server or only `HTTPS_PROXY` is set for
/// an `http://` endpoint; the proxy's password is never shown.
#[test]
fn requests_go_through_the_proxy_unless_no_proxy_names_the_server() {
    // The server's side of the proxy: what reached the server, counted by the proxy
    // tests/s3_repo.rs uses.
    let (r, seen) = counted();
    let auth = "jelly:pr0xy-pass";
    let proxy = ConnectProxy::start(Some(auth));
    let fx = r.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();

    let out = r
        .cmd(&["backup", "--init", "--data-dir", data])
        .env("HTTP_PROXY", proxy.url(Some(auth)))
        .expect(0);
    assert_hides(&out, &["pr0xy-pass"]);
    assert!(proxy.tunnels() > 0);
    assert!(seen.requests() > 0);
    assert_eq!(
        proxy.requests(),
        seen.requests(),
        "every request the server got came through the proxy"
    );

    let carried = proxy.requests();
    seen.reset_counters();
    r.cmd(&["snapshots"])
        .env("HTTP_PROXY", proxy.url(Some(auth)))
        .env("NO_PROXY", "localhost,127.0.0.1")
        .expect(0);
    r.cmd(&["snapshots"])
        .env("HTTPS_PROXY", proxy.url(Some(auth)))
        .expect(0);
    assert!(seen.requests() > 0);
    assert_eq!(
        proxy.requests(),
        carried,
        "NO_PROXY, or a proxy for https only"
    );

    seen.reset_counters();
    r.cmd(&["snapshots"])
        .env("ALL_PROXY", proxy.url(Some(auth)))
        .expect(0);
    assert_eq!(proxy.requests() - carried, seen.requests());

    // A wrong password: the proxy's refusal, its address, never the password.
    let out = r
        .cmd(&["snapshots"])
        .env("HTTP_PROXY", proxy.url(Some("jelly:wr0ng-pass")))
        .expect(22);
    let text = both(&out);
    assert!(proxy.refused() > 0);
    assert!(text.contains(&proxy.url(None)), "{text}");
    assert!(text.contains("407"), "{text}");
    assert_hides(&out, &["wr0ng-pass", "pr0xy-pass"]);
    // A proxy that is not there: the same, after the retries.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = r
        .cmd(&["snapshots"])
        .env(
            "HTTP_PROXY",
            format!("http://jelly:d3ad-pass@127.0.0.1:{dead}"),
        )
        .expect(22);
    assert!(
        both(&out).contains(&format!("http://127.0.0.1:{dead}")),
        "{}",
        both(&out)
    );
    assert_hides(&out, &["d3ad-pass"]);
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A repository through the counting proxy (see tests/s3_repo.rs).
fn counted() -> (Repo, FaultProxy) {
    let server = common::s3::shared();
    let upstream = server
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let bucket = server.new_bucket();
    let proxy = FaultProxy::start(upstream, &format!("{bucket}/repo"));
    let env = Env::new();
    let r = Repo {
        cache: env.root.join("cache"),
        location: format!("s3:{}/{bucket}/repo", proxy.url()),
        env,
    };
    (r, proxy)
}

fn probes(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .log()
        .iter()
        .filter(|e| e.key.starts_with("conditional-write-probe-"))
        .map(|e| e.method.clone())
        .collect()
}

/// The conditional-write probe (two create-only PUTs and a DELETE) is made once and
/// remembered in the cache dir: an unchanged backup makes 3 fewer requests than one that
/// probes, and a week later the probe is made again.
#[test]
fn the_conditional_write_probe_is_remembered_for_a_week() {
    let (r, proxy) = counted();
    let fx = r.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let t0 = now();
    r.cmd(&["backup", "--init", "--data-dir", data])
        .clock_at(t0)
        .expect(0);
    assert_eq!(probes(&proxy), ["PUT", "PUT", "DELETE"]);

    proxy.reset_counters();
    r.cmd(&["backup", "--data-dir", data])
        .clock_at(t0 + 60)
        .expect(0);
    let remembered = proxy.requests();
    assert!(probes(&proxy).is_empty(), "{:?}", proxy.log());

    // Eight days later: stale, probed again, and remembered again.
    proxy.reset_counters();
    let later = t0 + 8 * 86_400;
    r.cmd(&["backup", "--data-dir", data])
        .clock_at(later)
        .expect(0);
    assert_eq!(probes(&proxy), ["PUT", "PUT", "DELETE"]);
    assert_eq!(proxy.requests(), remembered + 3);

    proxy.reset_counters();
    r.cmd(&["backup", "--data-dir", data])
        .clock_at(later + 60)
        .expect(0);
    assert!(probes(&proxy).is_empty());
    assert_eq!(proxy.requests(), remembered);
}

/// A server without conditional writes (it answers 501 to `If-None-Match`, emulated by
/// the proxy): found by the probe and remembered; and a server said to have them that
/// starts refusing the header is probed again at once, the command going on without.
#[test]
fn a_server_without_conditional_writes_is_remembered_and_a_changed_one_reprobed() {
    let refuse = || {
        Rule::new(Fault::Error {
            status: 501,
            code: "NotImplemented",
        })
        .header("if-none-match")
    };
    let (r, proxy) = counted();
    let fx = r.env.small_fixture();
    let data = fx.data_dir.to_str().unwrap();
    let rule = proxy.add(refuse());
    r.cmd(&["backup", "--init", "--data-dir", data]).expect(0);
    assert_eq!(proxy.fired(rule), 1, "the probe's first write, refused");
    r.cmd(&["backup", "--data-dir", data]).expect(0);
    let out = r.cmd(&["gc"]).expect(0);
    assert!(
        s(&out.stdout).contains("cannot create an object only if it is absent"),
        "{}",
        s(&out.stdout)
    );
    assert_eq!(proxy.fired(rule), 1, "remembered: asked no more");

    // Another bucket, its server said to honour the header...
    let (r2, proxy2) = counted();
    r2.cmd(&["backup", "--init", "--data-dir", data]).expect(0);
    assert_eq!(probes(&proxy2), ["PUT", "PUT", "DELETE"]);
    // ...replaced by one that refuses it.
    let rule = proxy2.add(refuse());
    proxy2.reset_counters();
    r2.cmd(&["backup", "--data-dir", data]).expect(0);
    // The lease's create-only write, then the probe's first write.
    assert_eq!(proxy2.fired(rule), 2);
    assert_eq!(probes(&proxy2), ["PUT", "DELETE"]);
    r2.cmd(&["backup", "--data-dir", data]).expect(0);
    assert_eq!(proxy2.fired(rule), 2, "remembered: asked no more");
    let target = r2.env.root.join("restored");
    r2.cmd(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect(0);
    assert_same(&describe(&target, &[]), &expected_state(&fx));
}
