//! Where an S3 repository is and how to reach it: `s3:https://HOST[:PORT]/BUCKET[/PREFIX]`
//! and the caller's environment (the CLI hands its own in; the engine reads none).

use crate::error::{Error, OptionError, Result};
use crate::store::s3::client::{Addressing, Credentials, Retry, S3Config};

/// The scheme of a repository location in an object store.
pub const SCHEME: &str = "s3:";

/// Whether a repository location names an object store.
pub fn is_s3_location(location: &str) -> bool {
    location.starts_with(SCHEME)
}

impl S3Config {
    /// The config for `location`, with credentials and defaults from `lookup` (the
    /// environment, in the CLI): `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` or `AWS_DEFAULT_REGION` (default `us-east-1`),
    /// and `AWS_ENDPOINT_URL` for a location without an endpoint (`s3:BUCKET[/PREFIX]`;
    /// without it, AWS itself).
    ///
    /// An endpoint in the location uses path-style addressing, which self-hosted servers
    /// need; AWS's own endpoint uses virtual-host style. Set `addressing` to change it.
    pub fn from_env(location: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
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
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let (endpoint, path, addressing) = match split_endpoint(rest) {
            Some((endpoint, path)) => (endpoint, path, Addressing::Path),
            None => match get("AWS_ENDPOINT_URL") {
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
        let missing = |what: &'static str| {
            Error::Option(OptionError::S3Credentials {
                location: location.to_string(),
                missing: what,
            })
        };
        let access_key = get("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
        let secret_key =
            get("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
        Ok(S3Config {
            endpoint,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            addressing,
            credentials: Credentials {
                access_key,
                secret_key,
                session_token: get("AWS_SESSION_TOKEN"),
                region,
            },
            retry: Retry::default(),
        })
    }
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

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    const KEYS: [(&str, &str); 2] = [
        ("AWS_ACCESS_KEY_ID", "AKID"),
        ("AWS_SECRET_ACCESS_KEY", "shh-secret"),
    ];

    #[test]
    fn an_endpoint_a_bucket_and_a_prefix() {
        let c = S3Config::from_env("s3:http://127.0.0.1:8333/bkt/a/b", env(&KEYS)).expect("ok");
        assert_eq!(c.endpoint, "http://127.0.0.1:8333");
        assert_eq!(c.bucket, "bkt");
        assert_eq!(c.prefix, "a/b");
        assert_eq!(c.addressing, Addressing::Path);
        assert_eq!(c.credentials.region, "us-east-1");
        assert_eq!(c.location(), "s3:http://127.0.0.1:8333/bkt/a/b");
        let c = S3Config::from_env("s3:https://s3.example.org/bkt/", env(&KEYS)).expect("ok");
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bkt", ""));
        assert_eq!(c.location(), "s3:https://s3.example.org/bkt");
    }

    #[test]
    fn the_endpoint_and_region_from_the_environment() {
        let mut vars = KEYS.to_vec();
        vars.push(("AWS_ENDPOINT_URL", "https://minio.lan:9000/"));
        vars.push(("AWS_DEFAULT_REGION", "eu-west-3"));
        vars.push(("AWS_SESSION_TOKEN", "tok"));
        let c = S3Config::from_env("s3:bkt/p", env(&vars)).expect("ok");
        assert_eq!(c.endpoint, "https://minio.lan:9000");
        assert_eq!(c.credentials.region, "eu-west-3");
        assert_eq!(c.credentials.session_token.as_deref(), Some("tok"));
        let c = S3Config::from_env("s3:bkt", env(&KEYS)).expect("ok");
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
            let e = S3Config::from_env(bad, env(&KEYS)).expect_err(bad);
            assert!(
                matches!(e, Error::Option(OptionError::S3Location { .. })),
                "{bad}: {e}"
            );
        }
        let e = S3Config::from_env("s3:http://h/b", env(&[("AWS_ACCESS_KEY_ID", "AKID")]))
            .expect_err("no secret");
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let c = S3Config::from_env("s3:http://h/b", env(&KEYS)).expect("ok");
        assert!(!format!("{c:?}").contains("shh-secret"));
    }
}
