//! Where an S3 repository is and how to reach it: `s3:https://HOST[:PORT]/BUCKET[/PREFIX]`
//! and the caller's environment, read as the AWS tools read it (variables, the shared
//! credentials and config files, a CA bundle, proxies). The CLI hands its own environment
//! in through [`UserEnv`]; the engine reads none.

use std::path::{Path, PathBuf};

use crate::error::{Error, OptionError, Result};
use crate::store::s3::client::{
    Addressing, CaBundle, Credentials, HttpProxy, Network, Retry, S3Config,
};

/// The scheme of a repository location in an object store.
pub const SCHEME: &str = "s3:";

/// Whether a repository location names an object store.
pub fn is_s3_location(location: &str) -> bool {
    location.starts_with(SCHEME)
}

/// What the engine learns of the user's environment, from its caller (the CLI reads the
/// environment and the files; the engine reads neither).
pub trait UserEnv {
    /// An environment variable (an empty value counts as unset).
    fn var(&self, name: &str) -> Option<String>;
    /// A file's bytes; `Ok(None)` when it does not exist.
    fn read_file(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>>;
}

impl S3Config {
    /// The config for `location`, as the AWS tools find it in `env`:
    ///
    /// - credentials: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`;
    ///   else the profile (`AWS_PROFILE`, default `default`) of the shared credentials file
    ///   (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`), else of the config
    ///   file (`AWS_CONFIG_FILE`, default `~/.aws/config`, sections `[profile NAME]`). The
    ///   key pair and its token always come from one place.
    /// - the region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, `us-east-1`.
    /// - the endpoint of a location without one (`s3:BUCKET[/PREFIX]`): `AWS_ENDPOINT_URL`,
    ///   the profile's `endpoint_url`, else AWS itself.
    /// - trusted CAs: `AWS_CA_BUNDLE` or the profile's `ca_bundle` (a PEM file), which
    ///   replaces the built-in roots.
    /// - a proxy: `https_proxy`, `http_proxy`, `all_proxy`, `no_proxy` (`proxy_from_env`).
    ///
    /// An endpoint in the location uses path-style addressing, which self-hosted servers
    /// need; AWS's own endpoint uses virtual-host style. Set `addressing` to change it.
    pub fn from_env(location: &str, env: &dyn UserEnv) -> Result<Self> {
        let get = |name: &str| env.var(name).filter(|v| !v.is_empty());
        let bad = |detail: &str| {
            Error::Option(OptionError::S3Location {
                location: location.to_string(),
                detail: detail.to_string(),
            })
        };
        let rest = location
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with `s3:`"))?;
        if rest.contains("://") && split_endpoint(rest).is_none() {
            return Err(bad("the endpoint must start with http:// or https://"));
        }
        let profile = Profile::load(env)?;
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .or_else(|| profile.setting("region"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let (endpoint, path, addressing) = match split_endpoint(rest) {
            Some((endpoint, path)) => (endpoint, path, Addressing::Path),
            None => match get("AWS_ENDPOINT_URL").or_else(|| profile.setting("endpoint_url")) {
                Some(e) => (e.trim_end_matches('/').to_string(), rest, Addressing::Path),
                None => (
                    format!("https://s3.{region}.amazonaws.com"),
                    rest,
                    Addressing::VirtualHost,
                ),
            },
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(bad("the endpoint must start with http:// or https://"));
        }
        if endpoint.contains('@') || endpoint.contains('?') || endpoint.contains('#') {
            return Err(bad(
                "the endpoint must not carry credentials, a query or a fragment (credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            ));
        }
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(bad("it names no bucket"));
        }
        if !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(bad(
                "a bucket name holds only letters, digits, `.`, `-` and `_`",
            ));
        }
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(bad("the prefix must not hold empty, `.` or `..` parts"));
        }
        let credentials = credentials(location, env, &profile, region)?;
        let ca_bundle = match get("AWS_CA_BUNDLE") {
            Some(p) => Some(("AWS_CA_BUNDLE".to_string(), expand_home(&p, env))),
            None => profile.setting("ca_bundle").map(|p| {
                (
                    format!(
                        "ca_bundle of profile `{}` in {}",
                        profile.name,
                        profile.config.display()
                    ),
                    expand_home(&p, env),
                )
            }),
        };
        let ca_bundle = match ca_bundle {
            Some((from, path)) => Some(CaBundle::read(&path, &from, env)?),
            None => None,
        };
        let host = request_host(&endpoint, bucket, addressing);
        Ok(S3Config {
            network: Network {
                ca_bundle,
                proxy: proxy_from_env(&endpoint, &host, env)?,
            },
            endpoint,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            addressing,
            credentials,
            retry: Retry::default(),
            cache_dir: None,
        })
    }
}

/// The key pair (and token) from the environment, else from the profile's credentials
/// file, else from its config file: never a mix of two places.
fn credentials(
    location: &str,
    env: &dyn UserEnv,
    profile: &Profile,
    region: String,
) -> Result<Credentials> {
    let get = |name: &str| env.var(name).filter(|v| !v.is_empty());
    let refuse = |detail: String| {
        Error::Option(OptionError::S3Credentials {
            location: location.to_string(),
            detail,
        })
    };
    match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key), Some(secret_key)) => {
            return Ok(Credentials {
                access_key,
                secret_key,
                session_token: get("AWS_SESSION_TOKEN"),
                region,
            })
        }
        (Some(_), None) => {
            return Err(refuse(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both in the environment, or unset both to use the AWS credentials file".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(refuse(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both in the environment, or unset both to use the AWS credentials file".into(),
            ))
        }
        (None, None) => {}
    }
    if let Some((file, detail)) = &profile.unreadable {
        return Err(profile.error(file, detail.clone()));
    }
    for (file, section) in [
        (&profile.credentials, &profile.in_credentials),
        (&profile.config, &profile.in_config),
    ] {
        let Some(section) = section else { continue };
        let value = |k: &str| {
            section
                .iter()
                .rev()
                .find(|(key, v)| key == k && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let key = value("aws_access_key_id");
        let secret = value("aws_secret_access_key");
        let (access_key, secret_key) = match (key, secret) {
            (Some(k), Some(s)) => (k, s),
            (None, None) => continue,
            (k, _) => {
                let missing = if k.is_none() {
                    "aws_access_key_id"
                } else {
                    "aws_secret_access_key"
                };
                return Err(profile.error(file, format!("it has no {missing}: add it to the profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")));
            }
        };
        return Ok(Credentials {
            access_key,
            secret_key,
            session_token: value("aws_session_token"),
            region,
        });
    }
    // Credentials the AWS tools obtain by running something or asking a service.
    if let Some(how) = [
        "credential_process",
        "role_arn",
        "sso_session",
        "sso_start_url",
        "web_identity_token_file",
    ]
    .into_iter()
    .find(|k| profile.setting(k).is_some())
    {
        return Err(profile.error(
            &profile.config,
            format!("it gets its credentials through `{how}`, which jellysnap does not run: give it a key pair (aws_access_key_id and aws_secret_access_key), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"),
        ));
    }
    Err(refuse(format!(
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or add aws_access_key_id and aws_secret_access_key to profile `{}` in {}",
        profile.name,
        profile.credentials.display()
    )))
}

/// A profile of the AWS shared files: its sections in the credentials file (`[NAME]`) and
/// in the config file (`[profile NAME]`, or `[default]`), as `key = value` lines.
/// The sections of an INI file: each name and its `key = value` lines.
type Sections = Vec<(String, Vec<(String, String)>)>;

struct Profile {
    name: String,
    credentials: PathBuf,
    config: PathBuf,
    in_credentials: Option<Vec<(String, String)>>,
    in_config: Option<Vec<(String, String)>>,
    /// A file that could not be read and why, for when the key pair had to come from it.
    unreadable: Option<(PathBuf, String)>,
}

impl Profile {
    fn load(env: &dyn UserEnv) -> Result<Profile> {
        let get = |name: &str| env.var(name).filter(|v| !v.is_empty());
        let home = get("HOME").unwrap_or_default();
        let file = |var: &str, default: &str| match get(var) {
            Some(p) => expand_home(&p, env),
            None => Path::new(&home).join(".aws").join(default),
        };
        let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config = file("AWS_CONFIG_FILE", "config");
        let chosen = get("AWS_PROFILE");
        let name = chosen.clone().unwrap_or_else(|| "default".to_string());
        // A file that cannot be read is an error only where it is needed: when the
        // environment does not give the key pair (see `credentials`).
        let mut unreadable = None;
        let mut read = |path: &Path| -> Sections {
            match env.read_file(path) {
                Ok(Some(bytes)) => parse_ini(&String::from_utf8_lossy(&bytes)),
                Ok(None) => Vec::new(),
                Err(e) => {
                    let var = if path == credentials {
                        "AWS_SHARED_CREDENTIALS_FILE"
                    } else {
                        "AWS_CONFIG_FILE"
                    };
                    unreadable.get_or_insert((
                        path.to_path_buf(),
                        format!(
                            "it cannot be read ({e}); fix its permissions, or point {var} elsewhere"
                        ),
                    ));
                    Vec::new()
                }
            }
        };
        let section = |sections: Sections, names: &[String]| {
            let mut found: Option<Vec<(String, String)>> = None;
            for (s, lines) in sections {
                if names.contains(&s) {
                    found.get_or_insert_with(Vec::new).extend(lines);
                }
            }
            found
        };
        let in_credentials = section(read(&credentials), std::slice::from_ref(&name));
        let config_names = if name == "default" {
            vec!["default".to_string(), "profile default".to_string()]
        } else {
            vec![format!("profile {name}")]
        };
        let in_config = section(read(&config), &config_names);
        if chosen.is_some() && in_credentials.is_none() && in_config.is_none() {
            if let Some((file, detail)) = unreadable {
                return Err(Error::Option(OptionError::S3Profile {
                    file,
                    profile: name,
                    detail,
                }));
            }
            return Err(Error::Option(OptionError::S3Profile {
                file: credentials.clone(),
                profile: name.clone(),
                detail: format!(
                    "AWS_PROFILE names a profile that neither this file nor {} holds: add it, or correct AWS_PROFILE",
                    config.display()
                ),
            }));
        }
        Ok(Profile {
            name,
            credentials,
            config,
            in_credentials,
            in_config,
            unreadable,
        })
    }

    fn error(&self, file: &Path, detail: String) -> Error {
        Error::Option(OptionError::S3Profile {
            file: file.to_path_buf(),
            profile: self.name.clone(),
            detail,
        })
    }

    /// A setting of the profile in the config file (`region`, `endpoint_url`, ...).
    fn setting(&self, key: &str) -> Option<String> {
        self.in_config
            .as_ref()?
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    }
}

/// The sections of an INI file as the AWS tools write it, in order: `[name]` headers and
/// `key = value` lines; `#` and `;` start comment lines; indented lines (the nested
/// settings of a key such as `s3 =`) are skipped.
fn parse_ini(text: &str) -> Sections {
    let mut out: Sections = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.push((name, Vec::new()));
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let (Some((k, v)), Some((_, lines))) = (t.split_once('='), out.last_mut()) {
            lines.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// `~/x` as `$HOME/x`, as the AWS tools read their file variables.
fn expand_home(path: &str, env: &dyn UserEnv) -> PathBuf {
    match (path.strip_prefix("~/"), env.var("HOME")) {
        (Some(rest), Some(home)) if !home.is_empty() => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

impl CaBundle {
    /// The certificates of the PEM file at `path` (named by `from` in errors).
    fn read(path: &Path, from: &str, env: &dyn UserEnv) -> Result<CaBundle> {
        let refuse = |detail: String| {
            Error::Option(OptionError::S3CaBundle {
                path: path.to_path_buf(),
                from: from.to_string(),
                detail,
            })
        };
        let bytes = match env.read_file(path) {
            Ok(Some(b)) => b,
            Ok(None) => return Err(refuse("no such file: correct the path".into())),
            Err(e) => return Err(refuse(format!("it cannot be read ({e})"))),
        };
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&bytes) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(_) => {
                    return Err(refuse(
                        "it is not a valid PEM file: give the CA's certificates, each between `-----BEGIN CERTIFICATE-----` and `-----END CERTIFICATE-----`".into(),
                    ))
                }
            }
        }
        if certs.is_empty() {
            return Err(refuse(
                "it holds no PEM certificate (`-----BEGIN CERTIFICATE-----`): give the CA's certificate".into(),
            ));
        }
        Ok(CaBundle {
            path: path.to_path_buf(),
            certs,
        })
    }
}

/// The host a request goes to (with its port): what `NO_PROXY` is matched against.
fn request_host(endpoint: &str, bucket: &str, addressing: Addressing) -> (String, u16) {
    let https = endpoint.starts_with("https://");
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()),
        _ => (authority, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match addressing {
        Addressing::Path => host.to_ascii_lowercase(),
        Addressing::VirtualHost => format!("{bucket}.{host}").to_ascii_lowercase(),
    };
    (host, port.unwrap_or(if https { 443 } else { 80 }))
}

/// The proxy requests to `endpoint` go through, as curl and the AWS tools choose it:
/// `https_proxy`/`HTTPS_PROXY` for an `https://` endpoint, `http_proxy`/`HTTP_PROXY` for
/// an `http://` one, else `all_proxy`/`ALL_PROXY` (the lower-case name first); none when
/// `no_proxy`/`NO_PROXY` names the host: `*`, a host name that matches itself and its
/// subdomains (a leading `.` or `*.` is the same), `host:port`, or an IP range in CIDR
/// notation.
fn proxy_from_env(
    endpoint: &str,
    host: &(String, u16),
    env: &dyn UserEnv,
) -> Result<Option<HttpProxy>> {
    let get = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
    let names: [&'static str; 4] = if endpoint.starts_with("https://") {
        ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    };
    let Some((var, url)) = names.iter().find_map(|n| Some((*n, get(n)?))) else {
        return Ok(None);
    };
    if let Some(list) = get("no_proxy").or_else(|| get("NO_PROXY")) {
        if bypasses(&list, &host.0, host.1) {
            return Ok(None);
        }
    }
    HttpProxy::new(url.trim(), var).map(Some)
}

/// Whether the `NO_PROXY` list `list` names `host` (lower case) on `port`.
fn bypasses(list: &str, host: &str, port: u16) -> bool {
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    list.split([',', ' ']).map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if entry.is_empty() {
            return false;
        }
        if entry == "*" {
            return true;
        }
        if let (Some(ip), Some((net, bits))) = (ip, entry.split_once('/')) {
            return in_range(ip, net, bits);
        }
        // `host:port`; an IPv6 address with a port is bracketed.
        let (name, want_port): (&str, Option<u16>) = if let Some(rest) = entry.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, tail)) => (h, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
                None => (rest, None),
            }
        } else {
            match entry.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, p.parse().ok()),
                _ => (entry.as_str(), None),
            }
        };
        if want_port.is_some_and(|p| p != port) {
            return false;
        }
        let name = name.trim_start_matches("*.").trim_start_matches('.');
        host == name || host.strip_suffix(name).is_some_and(|h| h.ends_with('.'))
    })
}

/// Whether `ip` lies in the network `net`/`bits`.
fn in_range(ip: std::net::IpAddr, net: &str, bits: &str) -> bool {
    use std::net::IpAddr;
    let (Ok(net), Ok(bits)) = (
        net.trim_matches(['[', ']']).parse::<IpAddr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= 128 || (a >> shift) == (b >> shift)
}

/// `http(s)://authority` and the path after it, when `rest` starts with an endpoint.
fn split_endpoint(rest: &str) -> Option<(String, &str)> {
    let scheme_end = if rest.starts_with("https://") {
        8
    } else if rest.starts_with("http://") {
        7
    } else {
        return None;
    };
    let after = &rest[scheme_end..];
    let (authority, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    Some((format!("{}{authority}", &rest[..scheme_end]), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Variables and files, as a test gives them.
    #[derive(Default)]
    struct Fake {
        vars: Vec<(String, String)>,
        files: Vec<(PathBuf, Vec<u8>)>,
    }

    impl Fake {
        fn var(mut self, k: &str, v: &str) -> Self {
            self.vars.push((k.into(), v.into()));
            self
        }
        fn file(mut self, p: &str, text: &str) -> Self {
            self.files.push((p.into(), text.as_bytes().to_vec()));
            self
        }
    }

    impl UserEnv for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.vars
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
        fn read_file(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
            if path == Path::new("/unreadable") {
                return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
            }
            Ok(self
                .files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, b)| b.clone()))
        }
    }

    fn keys() -> Fake {
        Fake::default()
            .var("HOME", "/home/u")
            .var("AWS_ACCESS_KEY_ID", "AKID")
            .var("AWS_SECRET_ACCESS_KEY", "shh-secret")
    }

    #[test]
    fn an_endpoint_a_bucket_and_a_prefix() {
        let c = S3Config::from_env("s3:http://127.0.0.1:8333/bkt/a/b", &keys()).expect("ok");
        assert_eq!(c.endpoint, "http://127.0.0.1:8333");
        assert_eq!(c.bucket, "bkt");
        assert_eq!(c.prefix, "a/b");
        assert_eq!(c.addressing, Addressing::Path);
        assert_eq!(c.credentials.region, "us-east-1");
        assert_eq!(c.location(), "s3:http://127.0.0.1:8333/bkt/a/b");
        let c = S3Config::from_env("s3:https://s3.example.org/bkt/", &keys()).expect("ok");
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bkt", ""));
        assert_eq!(c.location(), "s3:https://s3.example.org/bkt");
    }

    #[test]
    fn the_endpoint_and_region_from_the_environment() {
        let vars = keys()
            .var("AWS_ENDPOINT_URL", "https://minio.lan:9000/")
            .var("AWS_DEFAULT_REGION", "eu-west-3")
            .var("AWS_SESSION_TOKEN", "tok");
        let c = S3Config::from_env("s3:bkt/p", &vars).expect("ok");
        assert_eq!(c.endpoint, "https://minio.lan:9000");
        assert_eq!(c.credentials.region, "eu-west-3");
        assert_eq!(c.credentials.session_token.as_deref(), Some("tok"));
        let c = S3Config::from_env("s3:bkt", &keys()).expect("ok");
        assert_eq!(c.endpoint, "https://s3.us-east-1.amazonaws.com");
        assert_eq!(c.addressing, Addressing::VirtualHost);
    }

    #[test]
    fn bad_locations_and_missing_keys_are_refused_without_the_secret() {
        for bad in [
            "s3:",
            "s3:http://host",
            "s3:ftp://host/bkt",
            "s3:b:k/t",
            "s3:http://user:pw@host/bkt",
            "s3:http://host/bkt/a/../b",
            "file:/x",
        ] {
            let e = S3Config::from_env(bad, &keys()).expect_err(bad);
            assert!(
                matches!(e, Error::Option(OptionError::S3Location { .. })),
                "{bad}: {e}"
            );
        }
        let half = Fake::default().var("AWS_ACCESS_KEY_ID", "AKID");
        let e = S3Config::from_env("s3:http://h/b", &half).expect_err("no secret");
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let c = S3Config::from_env("s3:http://h/b", &keys()).expect("ok");
        assert!(!format!("{c:?}").contains("shh-secret"));
    }

    const CREDENTIALS: &str = "\
# written by aws configure
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = default-secret-1

[nas]
aws_access_key_id=NASKEY
aws_secret_access_key=nas-secret-2
aws_session_token = nas-token-3

[half]
aws_access_key_id = HALFKEY
";

    const CONFIG: &str = "\
[default]
region = eu-central-1

[profile nas]
region = us-west-004
endpoint_url = https://s3.us-west-004.backblazeb2.com
s3 =
  addressing_style = path

[profile only-config]
aws_access_key_id = CFGKEY
aws_secret_access_key = cfg-secret-4

[profile sso]
sso_session = corp
region = eu-west-1
";

    fn files() -> Fake {
        Fake::default()
            .var("HOME", "/home/u")
            .file("/home/u/.aws/credentials", CREDENTIALS)
            .file("/home/u/.aws/config", CONFIG)
    }

    #[test]
    fn credentials_and_region_come_from_the_aws_files() {
        let c = S3Config::from_env("s3:http://h/b", &files()).expect("default profile");
        assert_eq!(c.credentials.access_key, "DEFAULTKEY");
        assert_eq!(c.credentials.secret_key, "default-secret-1");
        assert_eq!(c.credentials.session_token, None);
        assert_eq!(c.credentials.region, "eu-central-1");

        let nas = files().var("AWS_PROFILE", "nas");
        let c = S3Config::from_env("s3:bkt/jellysnap", &nas).expect("nas profile");
        assert_eq!(c.credentials.access_key, "NASKEY");
        assert_eq!(c.credentials.session_token.as_deref(), Some("nas-token-3"));
        assert_eq!(c.credentials.region, "us-west-004");
        assert_eq!(c.endpoint, "https://s3.us-west-004.backblazeb2.com");
        assert_eq!(c.addressing, Addressing::Path);

        let only = files().var("AWS_PROFILE", "only-config");
        let c = S3Config::from_env("s3:http://h/b", &only).expect("keys in the config file");
        assert_eq!(c.credentials.access_key, "CFGKEY");
        assert_eq!(c.credentials.region, "us-east-1");

        // Elsewhere, as the variables say, with `~` expanded.
        let moved = Fake::default()
            .var("HOME", "/home/u")
            .var("AWS_SHARED_CREDENTIALS_FILE", "~/secrets/aws")
            .var("AWS_CONFIG_FILE", "/etc/aws.conf")
            .file("/home/u/secrets/aws", CREDENTIALS)
            .file("/etc/aws.conf", "[default]\nregion = ap-south-1\n");
        let c = S3Config::from_env("s3:http://h/b", &moved).expect("moved files");
        assert_eq!(c.credentials.access_key, "DEFAULTKEY");
        assert_eq!(c.credentials.region, "ap-south-1");
    }

    #[test]
    fn the_environment_wins_over_the_files() {
        let both = files()
            .var("AWS_PROFILE", "nas")
            .var("AWS_ACCESS_KEY_ID", "ENVKEY")
            .var("AWS_SECRET_ACCESS_KEY", "env-secret")
            .var("AWS_REGION", "eu-west-1")
            .var("AWS_ENDPOINT_URL", "http://minio.lan:9000");
        let c = S3Config::from_env("s3:bkt", &both).expect("ok");
        assert_eq!(c.credentials.access_key, "ENVKEY");
        assert_eq!(c.credentials.secret_key, "env-secret");
        // The profile's token does not go with the environment's keys.
        assert_eq!(c.credentials.session_token, None);
        assert_eq!(c.credentials.region, "eu-west-1");
        assert_eq!(c.endpoint, "http://minio.lan:9000");
    }

    #[test]
    fn profile_errors_name_the_file_and_profile_never_a_secret() {
        let secrets = [
            "default-secret-1",
            "nas-secret-2",
            "nas-token-3",
            "cfg-secret-4",
            "HALFKEY",
        ];
        let check = |env: &Fake, wants: &[&str]| {
            let e = S3Config::from_env("s3:http://h/b", env).expect_err("refused");
            let shown = format!("{e} {e:?}");
            assert!(matches!(e, Error::Option(_)), "{shown}");
            for w in wants {
                assert!(shown.contains(w), "{w}: {shown}");
            }
            for s in secrets {
                assert!(!shown.contains(s), "{s}: {shown}");
            }
        };
        check(
            &files().var("AWS_PROFILE", "nope"),
            &[
                "`nope`",
                "/home/u/.aws/credentials",
                "/home/u/.aws/config",
                "AWS_PROFILE",
            ],
        );
        check(
            &files().var("AWS_PROFILE", "half"),
            &[
                "`half`",
                "/home/u/.aws/credentials",
                "aws_secret_access_key",
            ],
        );
        check(
            &files().var("AWS_PROFILE", "sso"),
            &[
                "`sso`",
                "/home/u/.aws/config",
                "sso_session",
                "AWS_ACCESS_KEY_ID",
            ],
        );
        check(
            &Fake::default().var("HOME", "/home/u"),
            &["AWS_ACCESS_KEY_ID", "`default`", "/home/u/.aws/credentials"],
        );
        check(
            &files().var("AWS_SHARED_CREDENTIALS_FILE", "/unreadable"),
            &[
                "/unreadable",
                "cannot be read",
                "AWS_SHARED_CREDENTIALS_FILE",
            ],
        );
        // Not needed when the environment gives the key pair.
        let env_keys = files()
            .var("AWS_SHARED_CREDENTIALS_FILE", "/unreadable")
            .var("AWS_ACCESS_KEY_ID", "AKID")
            .var("AWS_SECRET_ACCESS_KEY", "shh");
        S3Config::from_env("s3:http://h/b", &env_keys).expect("the environment's keys");
        // Debug of a config from the files shows no secret either.
        let c =
            S3Config::from_env("s3:http://h/b", &files().var("AWS_PROFILE", "nas")).expect("ok");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("nas-secret-2") && !shown.contains("nas-token-3"),
            "{shown}"
        );
    }

    #[test]
    fn a_ca_bundle_must_hold_certificates() {
        let e = S3Config::from_env(
            "s3:https://h/b",
            &keys()
                .var("AWS_CA_BUNDLE", "/etc/ca.pem")
                .file("/etc/ca.pem", "hello"),
        )
        .expect_err("no certificate");
        assert!(
            matches!(e, Error::Option(OptionError::S3CaBundle { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("/etc/ca.pem"), "{e}");
        let e = S3Config::from_env("s3:https://h/b", &keys().var("AWS_CA_BUNDLE", "/nope.pem"))
            .expect_err("no file");
        assert!(e.to_string().contains("/nope.pem"), "{e}");
    }

    fn proxied(vars: &[(&str, &str)], location: &str) -> Option<String> {
        let mut env = keys();
        for (k, v) in vars {
            env = env.var(k, v);
        }
        S3Config::from_env(location, &env)
            .expect("ok")
            .network
            .proxy
            .map(|p| p.shown())
    }

    #[test]
    fn the_proxy_is_chosen_by_the_endpoints_scheme_and_no_proxy() {
        let all = [
            ("HTTPS_PROXY", "http://secure:3128"),
            ("http_proxy", "plain:8080"),
            ("ALL_PROXY", "http://all:1"),
        ];
        assert_eq!(
            proxied(&all, "s3:https://s3.example.org/b").as_deref(),
            Some("http://secure:3128 (from HTTPS_PROXY)")
        );
        assert_eq!(
            proxied(&all, "s3:http://nas.lan:8333/b").as_deref(),
            Some("http://plain:8080 (from http_proxy)")
        );
        assert_eq!(
            proxied(&[("ALL_PROXY", "http://all:1")], "s3:http://nas.lan/b").as_deref(),
            Some("http://all:1 (from ALL_PROXY)")
        );
        assert_eq!(proxied(&[], "s3:http://nas.lan/b"), None);
        for (no, location, bypassed) in [
            ("*", "s3:https://s3.example.org/b", true),
            ("example.org", "s3:https://s3.example.org/b", true),
            (".example.org", "s3:https://s3.example.org/b", true),
            ("*.example.org", "s3:https://s3.example.org/b", true),
            ("xample.org", "s3:https://s3.example.org/b", false),
            ("localhost, 127.0.0.1", "s3:http://127.0.0.1:8333/b", true),
            ("127.0.0.1:9000", "s3:http://127.0.0.1:8333/b", false),
            ("127.0.0.1:8333", "s3:http://127.0.0.1:8333/b", true),
            ("10.0.0.0/8", "s3:http://10.1.2.3:8333/b", true),
            ("10.0.0.0/8", "s3:http://11.1.2.3:8333/b", false),
            ("::1", "s3:http://[::1]:8333/b", true),
            // Virtual-host style: the bucket's own host name.
            ("mybucket.s3.eu-west-1.amazonaws.com", "s3:mybucket", true),
        ] {
            let vars = [
                ("HTTPS_PROXY", "http://p:3128"),
                ("HTTP_PROXY", "http://p:3128"),
                ("AWS_REGION", "eu-west-1"),
                ("NO_PROXY", no),
            ];
            assert_eq!(
                proxied(&vars, location).is_none(),
                bypassed,
                "{no} {location}"
            );
        }
    }

    #[test]
    fn a_proxy_password_is_never_shown() {
        let url = "http://jelly:pr0xy-pass@proxy.lan:3128";
        let c =
            S3Config::from_env("s3:http://nas.lan/b", &keys().var("HTTP_PROXY", url)).expect("ok");
        let shown = format!("{c:?}");
        assert!(shown.contains("http://proxy.lan:3128"), "{shown}");
        assert!(
            !shown.contains("pr0xy-pass") && !shown.contains("jelly:"),
            "{shown}"
        );
        let e = S3Config::from_env(
            "s3:http://nas.lan/b",
            &keys().var("HTTP_PROXY", "socks5://u:pr0xy-pass@p:1080"),
        )
        .expect_err("socks");
        assert!(e.to_string().contains("HTTP_PROXY"), "{e}");
        assert!(!format!("{e} {e:?}").contains("pr0xy-pass"), "{e:?}");
    }
}
