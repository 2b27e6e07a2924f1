//! A small blocking client for one bucket and key prefix of an S3-compatible server.
//!
//! Requests are signed with query-string signatures (one per attempt, so a retry late in
//! a long run is never refused as expired) and sent over one connection pool. Every call
//! retries what a network or a busy server gets wrong — 5xx, 429, `SlowDown` and
//! `RequestTimeout`, timeouts, resets, refused connections, bodies cut short, an `<Error>`
//! sent with status 200 where a listing was due, a `BadDigest` — with exponential
//! backoff and full jitter, a bounded number of times. What is left becomes an
//! [`Error::Remote`] naming the object, the status and the next step.
//!
//! Secrets never leave this module: the signed URL (which carries the access key id and
//! a session token) is never put in an error, and server messages are scrubbed of the
//! secret, the token and the proxy's password before they are; a proxy is shown as
//! `scheme://host:port` only.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use md5::Digest as _;
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, S3Action, UrlStyle};

use crate::error::{Error, RemoteErrorKind, Result};

/// How long a signature stays valid: long enough for a slow 16 MiB upload, short enough
/// to be useless soon if it leaks.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The most a 200 answer to a ranged read is read (a server that ignores ranges sends the
/// whole object: a pack is about 16 MiB).
const MAX_IGNORED_RANGE: u64 = 256 << 20;

/// The largest error or listing body read into memory (a listing page of 1000 keys is
/// ~350 KiB).
const MAX_XML: u64 = 16 << 20;

/// Credentials for the server, handed in by the caller.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    pub region: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("region", &self.region)
            .finish()
    }
}

/// How a bucket is named in a request's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `https://host/bucket/key`: what self-hosted servers need.
    Path,
    /// `https://bucket.host/key`.
    VirtualHost,
}

/// How often and how patiently a request is retried.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The backoff before the second attempt; it doubles for each next one.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// Connecting to the server.
    pub connect_timeout: Duration,
    /// Each read or write on an open connection (a stalled transfer).
    pub io_timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
        }
    }
}

/// A PEM file of trusted certificate authorities (`AWS_CA_BUNDLE`): they replace the
/// built-in roots, as in the AWS tools.
#[derive(Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub(crate) certs: Vec<ureq::tls::Certificate<'static>>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

/// An HTTP(S) proxy every request goes through (a CONNECT tunnel). Its URL may carry a
/// user and password: they are sent to the proxy only, and never shown.
#[derive(Clone)]
pub struct HttpProxy {
    proxy: ureq::Proxy,
    /// `scheme://host:port`, without credentials: what messages show.
    shown: String,
    /// The environment variable it came from.
    pub var: &'static str,
}

impl HttpProxy {
    /// The proxy at `url` (`http://[USER:PASSWORD@]HOST[:PORT]`, or `https://`), named
    /// after the variable `var` in errors.
    pub fn new(url: &str, var: &'static str) -> Result<Self> {
        let refuse = |detail: &str| {
            Error::Option(crate::error::OptionError::S3Proxy {
                var,
                detail: detail.to_string(),
            })
        };
        let proxy = ureq::Proxy::new(url).map_err(|_| {
            refuse("it is not a proxy URL: write it as http://[USER:PASSWORD@]HOST:PORT (user and password percent-encoded)")
        })?;
        let scheme = match proxy.protocol() {
            ureq::ProxyProtocol::Http => "http",
            ureq::ProxyProtocol::Https => "https",
            _ => {
                return Err(refuse(
                    "only http:// and https:// proxies are supported (no SOCKS)",
                ))
            }
        };
        let host = proxy.host();
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let shown = format!("{scheme}://{host}:{}", proxy.port());
        Ok(HttpProxy { proxy, shown, var })
    }

    /// `scheme://host:port (from VAR)`, never the credentials.
    pub fn shown(&self) -> String {
        format!("{} (from {})", self.shown, self.var)
    }
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

/// How requests reach the server: the CAs trusted for TLS, and a proxy.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// `None`: the built-in roots (Mozilla's, compiled in).
    pub ca_bundle: Option<CaBundle>,
    pub proxy: Option<HttpProxy>,
}

/// What a client talks to.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http(s)://host[:port]`, maybe with a path in front of the bucket.
    pub endpoint: String,
    pub bucket: String,
    /// Keys are `<prefix>/<name>`; empty for the bucket's root. No leading or trailing `/`.
    pub prefix: String,
    pub addressing: Addressing,
    pub credentials: Credentials,
    pub retry: Retry,
    pub network: Network,
    /// Where what was learnt of the server (whether it has conditional writes) is
    /// remembered between commands; `None`: nowhere, each command asks again.
    pub cache_dir: Option<PathBuf>,
}

impl S3Config {
    /// `s3:<endpoint>/<bucket>[/<prefix>]`, as a user writes it.
    pub fn location(&self) -> String {
        let mut s = format!("s3:{}/{}", self.endpoint.trim_end_matches('/'), self.bucket);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.prefix);
        }
        s
    }
}

/// Whether a write may replace an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    Overwrite,
    /// `If-None-Match: *`: the server refuses (412) when the object exists.
    IfAbsent,
}

pub struct Client {
    bucket: Bucket,
    credentials: rusty_s3::Credentials,
    /// Strings scrubbed from anything the server says before it goes into an error.
    secrets: Vec<String>,
    agent: ureq::Agent,
    prefix: String,
    location: String,
    retry: Retry,
    /// The endpoint, for TLS and proxy messages.
    endpoint: String,
    /// Where the trusted CAs come from, for TLS messages.
    ca_bundle: Option<PathBuf>,
    /// `scheme://host:port (from VAR)` of the proxy in use, for messages.
    proxy: Option<String>,
    /// Whether a connection speaks TLS (to the server or to the proxy).
    tls_used: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed, and what the failure is if it is the last.
struct Failure {
    status: Option<u16>,
    kind: RemoteErrorKind,
    detail: String,
    /// The server asked for this pause (`Retry-After`).
    retry_after: Option<Duration>,
    /// The detail already says what to do: no generic next step.
    says_next: bool,
}

impl Failure {
    fn new(status: Option<u16>, kind: RemoteErrorKind, detail: impl Into<String>) -> Self {
        Failure {
            status,
            kind,
            detail: detail.into(),
            retry_after: None,
            says_next: false,
        }
    }
}

enum Attempt<T> {
    Done(T),
    /// Worth another attempt.
    Retry(Failure),
    /// Final.
    Fail(Failure),
}

use Attempt::{Done, Fail, Retry as Again};
use RemoteErrorKind::{Corrupt, Denied, NotFound, Transient};

type Response = ureq::http::Response<ureq::Body>;

impl Client {
    pub fn new(config: &S3Config) -> Result<Self> {
        let location = config.location();
        let style = match config.addressing {
            Addressing::Path => UrlStyle::Path,
            Addressing::VirtualHost => UrlStyle::VirtualHost,
        };
        let endpoint = config.endpoint.parse().map_err(|e| {
            Error::Option(crate::error::OptionError::S3Location {
                location: location.clone(),
                detail: format!("the endpoint is not a URL ({e})"),
            })
        })?;
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.credentials.region.clone(),
        )
        .map_err(|e| {
            Error::Option(crate::error::OptionError::S3Location {
                location: location.clone(),
                detail: format!("no bucket URL can be made of it ({e:?})"),
            })
        })?;
        let c = &config.credentials;
        let credentials = match &c.session_token {
            Some(t) => rusty_s3::Credentials::new_with_token(&c.access_key, &c.secret_key, t),
            None => rusty_s3::Credentials::new(&c.access_key, &c.secret_key),
        };
        let proxy_password = config
            .network
            .proxy
            .as_ref()
            .and_then(|p| p.proxy.password().map(str::to_string));
        let secrets = std::iter::once(c.secret_key.clone())
            .chain(c.session_token.clone())
            .chain(proxy_password)
            .filter(|s| !s.is_empty())
            .collect();
        let r = &config.retry;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect from S3 means a wrong region or endpoint: say so instead.
            .max_redirects(0)
            // The caller decides about proxies; the engine reads no environment.
            .proxy(config.network.proxy.as_ref().map(|p| p.proxy.clone()))
            .tls_config(tls_config(&config.network))
            .timeout_connect(Some(r.connect_timeout))
            .timeout_per_read(Some(r.io_timeout))
            .timeout_per_write(Some(r.io_timeout))
            .build()
            .new_agent();
        Ok(Client {
            bucket,
            credentials,
            secrets,
            agent,
            prefix: config.prefix.trim_matches('/').to_string(),
            location,
            retry: Retry {
                attempts: r.attempts.max(1),
                ..r.clone()
            },
            endpoint: config.endpoint.trim_end_matches('/').to_string(),
            ca_bundle: config.network.ca_bundle.as_ref().map(|b| b.path.clone()),
            proxy: config.network.proxy.as_ref().map(HttpProxy::shown),
            tls_used: config.endpoint.starts_with("https://")
                || config
                    .network
                    .proxy
                    .as_ref()
                    .is_some_and(|p| p.shown.starts_with("https://")),
        })
    }

    /// `s3:<endpoint>/<bucket>[/<prefix>]`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The object's full name, for messages.
    pub fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.location)
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Write a whole object from memory. `Ok(false)`: the server answered 412, the object
    /// exists (with [`PutMode::IfAbsent`], or a server that enforces it by itself).
    ///
    /// A create-only write retried after an attempt that may have reached the server
    /// (a timeout, a reset) can find its own object there: the object is read back,
    /// and if it holds these bytes the write is the one that created it.
    pub fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<bool> {
        let md5 = md5_base64(bytes);
        let mut attempts = 0u32;
        let created = self.with_retries(name, || {
            attempts += 1;
            let url = self.sign_put(name, &md5);
            let mut req = self
                .agent
                .put(url.as_str())
                .header("content-md5", md5.as_str());
            if mode == PutMode::IfAbsent {
                req = req.header("if-none-match", "*");
            }
            match req.send(bytes) {
                Ok(resp) => self.put_outcome(resp, mode),
                Err(e) => self.transport(e),
            }
        })?;
        if !created && mode == PutMode::IfAbsent && attempts > 1 {
            return Ok(self.get(name)? == bytes);
        }
        Ok(created)
    }

    /// Write a whole object from a local file, streamed from the file on each attempt.
    pub fn put_file(&self, name: &str, path: &Path, mode: PutMode) -> Result<bool> {
        let local = |e: std::io::Error| Error::io(path, e);
        let (md5, len) = {
            let mut f = std::fs::File::open(path).map_err(local)?;
            let mut h = md5::Md5::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(local)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                len += n as u64;
            }
            (
                base64::engine::general_purpose::STANDARD.encode(h.finalize()),
                len,
            )
        };
        let mut local_err = None;
        let out = self.with_retries(name, || {
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    local_err = Some(e);
                    return Fail(Failure::new(None, Transient, "local file unreadable"));
                }
            };
            let url = self.sign_put(name, &md5);
            let mut req = self
                .agent
                .put(url.as_str())
                .header("content-md5", md5.as_str())
                .header("content-length", len.to_string());
            if mode == PutMode::IfAbsent {
                req = req.header("if-none-match", "*");
            }
            match req.send(ureq::SendBody::from_owned_reader(file.take(len))) {
                Ok(resp) => self.put_outcome(resp, mode),
                Err(e) => self.transport(e),
            }
        });
        match local_err {
            Some(e) => Err(local(e)),
            None => out,
        }
    }

    fn sign_put(&self, name: &str, md5: &str) -> String {
        let key = self.key(name);
        let mut action = self.bucket.put_object(Some(&self.credentials), &key);
        action.headers_mut().insert("content-md5", md5.to_string());
        action.sign(SIGNATURE_LIFETIME).into()
    }

    fn put_outcome(&self, resp: Response, mode: PutMode) -> Attempt<bool> {
        let status = resp.status().as_u16();
        match status {
            200..=299 => {
                // An upload's answer has no body, or an XML result; an `<Error>` with a
                // 200 status is a failure the server reports late.
                let body = read_small(resp);
                match body {
                    Ok(b) if is_error_xml(&b) => Again(self.xml_failure(status, &b, Transient)),
                    Ok(_) => Done(true),
                    Err(f) => Again(f),
                }
            }
            412 => Done(false),
            501 if mode == PutMode::IfAbsent => Fail(Failure::new(
                Some(status),
                Denied,
                "the server does not support conditional writes (If-None-Match)",
            )),
            _ => self.status_failure(resp),
        }
    }

    /// A whole object.
    pub fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.with_retries(name, || {
            let resp = match self.agent.get(self.sign_get(name).as_str()).call() {
                Ok(r) => r,
                Err(e) => return self.transport(e),
            };
            if resp.status().as_u16() != 200 {
                return self.status_failure(resp);
            }
            let expected = content_length(&resp);
            let mut out = Vec::with_capacity(expected.unwrap_or(0).min(64 << 20) as usize);
            if let Err(e) = resp.into_body().into_reader().read_to_end(&mut out) {
                return body_failure(e);
            }
            match expected {
                Some(n) if n != out.len() as u64 => Again(Failure::new(
                    Some(200),
                    Transient,
                    format!("the body ended after {} of {n} bytes", out.len()),
                )),
                // No object of a repository starts with an XML error (each starts with
                // its magic): a server or proxy that answered 200 with an error.
                _ if is_error_xml(&out) => Again(self.xml_failure(200, &out, Transient)),
                _ => Done(out),
            }
        })
    }

    /// `buf.len()` bytes from `offset` (`Range: bytes=a-b`).
    pub fn get_range(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let want = buf.len() as u64;
        let last = offset + want - 1;
        let range = format!("bytes={offset}-{last}");
        self.with_retries(name, || {
            let resp = match self
                .agent
                .get(self.sign_get(name).as_str())
                .header("range", range.as_str())
                .call()
            {
                Ok(r) => r,
                Err(e) => return self.transport(e),
            };
            let status = resp.status().as_u16();
            match status {
                206 => {
                    match content_range(&resp) {
                        Some((start, end, _)) if start == offset && end == last => {}
                        Some((start, end, total)) => {
                            return Fail(Failure::new(
                                Some(206),
                                Corrupt,
                                format!(
                                    "asked for bytes {offset}-{last}, the server sent {start}-{end} of {}",
                                    total.map_or("?".into(), |t| t.to_string())
                                ),
                            ))
                        }
                        None => {}
                    }
                }
                200 => {
                    // A server that ignores ranges sends the whole object: take the part.
                    // A 200 whose body is an XML error, or shorter than the range (a real
                    // object that short is answered 416), is a failed answer, not bytes.
                    let mut body = Vec::new();
                    if let Err(e) = resp
                        .into_body()
                        .into_reader()
                        .take(MAX_IGNORED_RANGE)
                        .read_to_end(&mut body)
                    {
                        return body_failure(e);
                    }
                    if is_error_xml(&body) {
                        return Again(self.xml_failure(200, &body, Transient));
                    }
                    let part = usize::try_from(offset)
                        .ok()
                        .and_then(|o| body.get(o..o.checked_add(buf.len())?));
                    return match part {
                        Some(part) => {
                            buf.copy_from_slice(part);
                            Done(())
                        }
                        None => Again(Failure::new(
                            Some(200),
                            Transient,
                            format!(
                                "asked for bytes {offset}-{last}, the server answered 200 with {} bytes",
                                body.len()
                            ),
                        )),
                    };
                }
                416 => {
                    return Fail(Failure::new(
                        Some(416),
                        Corrupt,
                        format!("the object ends before bytes {offset}-{last}"),
                    ))
                }
                _ => return self.status_failure(resp),
            };
            let mut r = resp.into_body().into_reader();
            if let Err(e) = r.read_exact(buf) {
                return body_failure(e);
            }
            {
                // The body must end here: a longer one is not the range asked for.
                let mut extra = [0u8; 1];
                match r.read(&mut extra) {
                    Ok(0) => {}
                    Ok(_) => {
                        return Again(Failure::new(
                            Some(206),
                            Corrupt,
                            format!("the body of bytes {offset}-{last} is longer than {want} bytes"),
                        ))
                    }
                    Err(e) => return body_failure(e),
                }
            }
            Done(())
        })
    }

    /// The last `len` bytes of an object (all of it when shorter), in one request
    /// (`Range: bytes=-len`), and the object's size.
    pub fn get_tail(&self, name: &str, len: u64) -> Result<(Vec<u8>, u64)> {
        if len == 0 {
            return Ok((Vec::new(), self.head(name)?));
        }
        let range = format!("bytes=-{len}");
        let out = self.with_retries(name, || {
            let resp = match self
                .agent
                .get(self.sign_get(name).as_str())
                .header("range", range.as_str())
                .call()
            {
                Ok(r) => r,
                Err(e) => return self.transport(e),
            };
            let status = resp.status().as_u16();
            let total = match status {
                206 => match content_range(&resp) {
                    Some((_, _, Some(total))) => Some(total),
                    _ => {
                        return Again(Failure::new(
                            Some(206),
                            Transient,
                            "a ranged answer without a usable Content-Range",
                        ))
                    }
                },
                200 => None,
                // An empty object has no last byte to range over.
                416 => return Done(None),
                _ => return self.status_failure(resp),
            };
            let expected = content_length(&resp);
            let mut body = Vec::with_capacity(len.min(64 << 20) as usize);
            if let Err(e) = resp.into_body().into_reader().read_to_end(&mut body) {
                return body_failure(e);
            }
            let got = body.len() as u64;
            if expected.is_some_and(|n| n != got) {
                return Again(Failure::new(
                    Some(status),
                    Transient,
                    format!(
                        "the body ended after {got} of {} bytes",
                        expected.unwrap_or(0)
                    ),
                ));
            }
            if status == 200 && is_error_xml(&body) {
                return Again(self.xml_failure(200, &body, Transient));
            }
            // 200: a server that ignores ranges sent the whole object.
            let total = total.unwrap_or(got);
            if status == 206 && got != len.min(total) {
                return Again(Failure::new(
                    Some(status),
                    Corrupt,
                    format!("asked for the last {len} bytes of {total}, the server sent {got}"),
                ));
            }
            if status == 200 && got > len {
                // A server that ignores ranges: keep the tail.
                body.drain(..(got - len) as usize);
            }
            Done(Some((body, total)))
        })?;
        match out {
            Some(v) => Ok(v),
            None => match self.head(name)? {
                0 => Ok((Vec::new(), 0)),
                n => Err(self.error(
                    name,
                    Failure::new(
                        Some(416),
                        Corrupt,
                        format!("the server refused the last {len} bytes of a {n}-byte object"),
                    ),
                    1,
                )),
            },
        }
    }

    fn sign_get(&self, name: &str) -> String {
        let key = self.key(name);
        self.bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGNATURE_LIFETIME)
            .into()
    }

    /// An object's size. Asked with a GET of its first byte rather than a HEAD: an
    /// answer to HEAD has no body, so a missing bucket would look like a missing object.
    pub fn head(&self, name: &str) -> Result<u64> {
        self.with_retries(name, || {
            let resp = match self
                .agent
                .get(self.sign_get(name).as_str())
                .header("range", "bytes=0-0")
                .call()
            {
                Ok(r) => r,
                Err(e) => return self.transport(e),
            };
            let size = match resp.status().as_u16() {
                206 => content_range(&resp).and_then(|(_, _, total)| total),
                // A server that ignores ranges: the whole object, whose first bytes are
                // read to tell it from an error answered with 200 (no repository object
                // starts with XML).
                200 => {
                    let size = content_length(&resp);
                    let mut head = Vec::new();
                    if let Err(e) = resp
                        .into_body()
                        .into_reader()
                        .take(512)
                        .read_to_end(&mut head)
                    {
                        return body_failure(e);
                    }
                    if is_error_xml(&head) {
                        return Again(self.xml_failure(200, &head, Transient));
                    }
                    size
                }
                // An empty object has no first byte.
                416 => Some(
                    resp.headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().strip_prefix("bytes */"))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                ),
                _ => return self.status_failure(resp),
            };
            match size {
                Some(n) => Done(n),
                None => Again(Failure::new(
                    Some(200),
                    Transient,
                    "the answer gives no size",
                )),
            }
        })
    }

    /// Delete an object; an absent one is not an error.
    pub fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(name);
        self.with_retries(name, || {
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), &key)
                .sign(SIGNATURE_LIFETIME);
            let resp = match self.agent.delete(url.as_str()).call() {
                Ok(r) => r,
                Err(e) => return self.transport(e),
            };
            match resp.status().as_u16() {
                200..=299 | 404 => Done(()),
                _ => self.status_failure(resp),
            }
        })
    }

    /// Every object whose name starts with `prefix` (relative to the client's prefix),
    /// with its size, following the listing's pages.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let full = self.key(prefix);
        let strip = self.key("");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.with_retries(prefix, || {
                let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
                action.with_prefix(full.as_str());
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                let url = action.sign(SIGNATURE_LIFETIME);
                let resp = match self.agent.get(url.as_str()).call() {
                    Ok(r) => r,
                    Err(e) => return self.transport(e),
                };
                let status = resp.status().as_u16();
                if status != 200 {
                    return self.status_failure(resp);
                }
                let body = match read_small(resp) {
                    Ok(b) => b,
                    Err(f) => return Again(f),
                };
                if is_error_xml(&body) {
                    return Again(self.xml_failure(status, &body, Transient));
                }
                match ListObjectsV2::parse_response(&String::from_utf8_lossy(&body)) {
                    Ok(page) => Done(page),
                    Err(e) => Again(Failure::new(
                        Some(status),
                        Transient,
                        format!("the listing could not be read ({e})"),
                    )),
                }
            })?;
            for c in page.contents {
                let Some(size) = c.size else {
                    return Err(self.error(
                        prefix,
                        Failure::new(
                            Some(200),
                            Transient,
                            format!("the listing gives no size for {}", c.key),
                        ),
                        1,
                    ));
                };
                let name = c.key.strip_prefix(&strip).unwrap_or(&c.key).to_string();
                out.push((name, size));
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Create the bucket (tests start from an empty server).
    #[cfg(feature = "test-hooks")]
    pub fn create_bucket(&self) -> Result<()> {
        self.with_retries("", || {
            let action = self.bucket.create_bucket(&self.credentials);
            let url = action.sign(SIGNATURE_LIFETIME);
            let body = action.body();
            let resp = match self.agent.put(url.as_str()).send(body.as_bytes()) {
                Ok(r) => r,
                Err(e) => return self.transport(e),
            };
            match resp.status().as_u16() {
                200..=299 => Done(()),
                _ => self.status_failure(resp),
            }
        })
    }

    /// Run `attempt` until it is done, fails for good, or has used every attempt, with
    /// full-jitter exponential backoff in between.
    fn with_retries<T>(&self, name: &str, mut attempt: impl FnMut() -> Attempt<T>) -> Result<T> {
        let mut n = 0u32;
        loop {
            n += 1;
            match attempt() {
                Done(v) => return Ok(v),
                Fail(f) => return Err(self.error(name, f, n)),
                Again(f) => {
                    if n >= self.retry.attempts {
                        return Err(self.error(name, f, n));
                    }
                    let cap = self
                        .retry
                        .base_delay
                        .saturating_mul(1u32 << (n - 1).min(20))
                        .min(self.retry.max_delay);
                    let pause = jitter(cap)
                        .max(f.retry_after.unwrap_or_default().min(self.retry.max_delay));
                    std::thread::sleep(pause);
                }
            }
        }
    }

    fn error(&self, name: &str, f: Failure, attempts: u32) -> Error {
        let tries = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        let next = match f.kind {
            _ if f.says_next => "",
            NotFound => "",
            Denied => "; check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the region (AWS_REGION), the bucket's name and its permissions",
            Transient => "; the object store could not be reached or kept failing: check the network and the server, then run the command again",
            Corrupt => "; the server did not send what was asked: run the command again, and if it persists, check the server and run `jellysnap check`",
        };
        Error::Remote {
            object: self.describe(name),
            status: f.status,
            kind: f.kind,
            detail: self.scrub(format!("{}{tries}{next}", f.detail)),
        }
    }

    fn scrub(&self, mut s: String) -> String {
        for secret in &self.secrets {
            s = scrub_secret(&s, secret);
        }
        s
    }

    /// A non-success status: what it means and whether to try again.
    fn status_failure<T>(&self, resp: Response) -> Attempt<T> {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_small(resp).unwrap_or_default();
        let code = xml_field(&body, "Code").unwrap_or_default();
        let kind_retry = match (status, code.as_str()) {
            (_, "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
            | (_, "OperationAborted" | "ConditionalRequestConflict") => (Transient, true),
            (_, "BadDigest") => (Corrupt, true),
            (_, "NoSuchBucket") => (Denied, false),
            (404, _) => (NotFound, false),
            (408 | 429 | 500..=599, _) => (Transient, true),
            _ => (Denied, false),
        };
        let mut f = self.xml_failure(status, &body, kind_retry.0);
        f.retry_after = retry_after;
        match (code.as_str(), status) {
            ("NoSuchBucket", _) => {
                f.detail = format!(
                    "bucket `{}` does not exist on this server; create it, or correct the bucket in the repository's location",
                    self.bucket.name()
                );
                f.says_next = true;
            }
            ("", 404) => f.detail = "no such object".into(),
            ("", 301 | 302 | 307 | 308) => {
                f.detail = "the server redirects elsewhere: a wrong region or endpoint".into()
            }
            ("", 401 | 403) => f.detail = "access denied".into(),
            _ => {}
        }
        if kind_retry.1 {
            Again(f)
        } else {
            Fail(f)
        }
    }

    /// A request that got no answer: the network, a timeout, a reset, TLS, the proxy.
    fn transport<T>(&self, e: ureq::Error) -> Attempt<T> {
        let via = match &self.proxy {
            Some(p) => format!(" (through the proxy {p})"),
            None => String::new(),
        };
        // Never `e`'s own text for a bad URI: it would carry the signed URL.
        let detail = match &e {
            // TLS over a connection fails as invalid data carrying the TLS error (an
            // untrusted certificate, a fatal alert): final, and said as TLS.
            ureq::Error::Io(io)
                if io.kind() == std::io::ErrorKind::InvalidData
                    && io.get_ref().is_some()
                    && self.tls_used =>
            {
                return Fail(self.tls_failure(io));
            }
            ureq::Error::Io(io) => io.to_string(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            ureq::Error::HostNotFound => "the server's host name does not resolve".to_string(),
            ureq::Error::ConnectionFailed => "the connection failed".to_string(),
            ureq::Error::Protocol(p) => format!("the server broke the HTTP protocol ({p})"),
            ureq::Error::ConnectProxyFailed(why) => {
                // The proxy's status line: never its credentials, which it does not echo.
                let mut f = Failure::new(
                    None,
                    Denied,
                    format!("the proxy refused the connection to {}{via}: {why}; check the proxy's address, user and password", self.endpoint),
                );
                f.says_next = true;
                return Fail(f);
            }
            ureq::Error::Tls(t) => return Fail(self.tls_failure(t)),
            ureq::Error::Rustls(t) => return Fail(self.tls_failure(t)),
            ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
                return Fail(Failure::new(
                    None,
                    Denied,
                    "the request could not be made (a bad URL)",
                ))
            }
            other => format!("the request failed ({})", error_kind_name(other)),
        };
        Again(Failure::new(None, Transient, format!("{detail}{via}")))
    }

    /// TLS with the server failed: which server, which trust, and what to do.
    fn tls_failure(&self, why: &dyn fmt::Display) -> Failure {
        let trust = match &self.ca_bundle {
            Some(p) => format!(
                "if its certificate is signed by a CA of your own, check that {} holds that CA's certificate",
                p.display()
            ),
            None => "if its certificate is signed by a CA of your own, set AWS_CA_BUNDLE to that CA's certificate (a PEM file)".to_string(),
        };
        let via = match &self.proxy {
            Some(p) => format!(" through the proxy {p}"),
            None => String::new(),
        };
        let mut f = Failure::new(
            None,
            Denied,
            format!(
                "TLS with {}{via} failed ({why}); check that the endpoint is the server's own address; {trust}",
                self.endpoint
            ),
        );
        f.says_next = true;
        f
    }

    /// The `Code: Message` of an S3 `<Error>` body, scrubbed.
    fn xml_failure(&self, status: u16, body: &[u8], kind: RemoteErrorKind) -> Failure {
        let code = xml_field(body, "Code");
        let message = xml_field(body, "Message");
        let detail = match (code, message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c,
            (None, Some(m)) => m,
            (None, None) => format!("the server answered {status}"),
        };
        Failure::new(Some(status), kind, self.scrub(detail))
    }
}

fn error_kind_name(e: &ureq::Error) -> &'static str {
    match e {
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => "redirect",
        ureq::Error::LargeResponseHeader(..) => "response header too large",
        ureq::Error::BodyExceedsLimit(_) => "body too large",
        _ => "other",
    }
}

/// A body that stopped coming: cut short, reset or stalled.
fn body_failure<T>(e: std::io::Error) -> Attempt<T> {
    Again(Failure::new(
        None,
        Transient,
        format!("the body was cut short ({e})"),
    ))
}

fn read_small(resp: Response) -> std::result::Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_XML)
        .read_to_end(&mut out)
        .map_err(|e| Failure::new(None, Transient, format!("the answer was cut short ({e})")))?;
    Ok(out)
}

fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Content-Range: bytes a-b/total` (total `*` when unknown).
fn content_range(resp: &Response) -> Option<(u64, u64, Option<u64>)> {
    parse_content_range(resp.headers().get("content-range")?.to_str().ok()?)
}

fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
}

fn is_error_xml(body: &[u8]) -> bool {
    let head = &body[..body.len().min(512)];
    let s = String::from_utf8_lossy(head);
    let s = match s.find("?>") {
        Some(i) if s.trim_start().starts_with("<?xml") => &s[i + 2..],
        _ => &s[..],
    };
    s.trim_start().starts_with("<Error>")
}

/// The text of the first `<name>` element, unescaped (the few entities S3 uses).
fn xml_field(body: &[u8], name: &str) -> Option<String> {
    let s = String::from_utf8_lossy(body);
    let open = format!("<{name}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&format!("</{name}>"))? + start;
    let text = s[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    Some(text.chars().take(300).collect())
}

/// The roots TLS trusts: the bundle's certificates instead of the built-in roots.
fn tls_config(network: &Network) -> ureq::tls::TlsConfig {
    let b = ureq::tls::TlsConfig::builder();
    match &network.ca_bundle {
        Some(bundle) => b
            .root_certs(ureq::tls::RootCerts::new_with_certs(&bundle.certs))
            .build(),
        None => b.build(),
    }
}

fn md5_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

/// A uniformly random duration in `[0, upper]` (full jitter), from the standard
/// library's randomly keyed hasher: no random-number crate for one number per retry.
fn jitter(upper: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    upper.mul_f64(unit)
}

/// `s` with `secret` replaced by `<redacted>`. A secret long enough to be unlikely as a
/// word (8 bytes or more) goes wherever it appears; a shorter one only where it stands
/// alone (not inside a longer run of letters, digits and `_`), so that a message keeps
/// its words.
fn scrub_secret(s: &str, secret: &str) -> String {
    if secret.is_empty() || !s.contains(secret) {
        return s.to_string();
    }
    if secret.len() >= 8 {
        return s.replace(secret, "<redacted>");
    }
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(secret) {
        let (before, tail) = rest.split_at(at);
        let after = tail.get(secret.len()..).unwrap_or_default();
        out.push_str(before);
        let starts = out.chars().next_back().is_none_or(|c| !word(c));
        let ends = after.chars().next().is_none_or(|c| !word(c));
        out.push_str(if starts && ends { "<redacted>" } else { secret });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn target(endpoint: &str) -> S3Config {
        S3Config {
            endpoint: endpoint.into(),
            bucket: "bkt".into(),
            prefix: "pre/fix".into(),
            addressing: Addressing::Path,
            credentials: Credentials {
                access_key: "AKIDEXAMPLE".into(),
                secret_key: "s3cr3t-value".into(),
                session_token: Some("t0ken-value".into()),
                region: "us-east-1".into(),
            },
            retry: Retry {
                attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
                connect_timeout: Duration::from_millis(500),
                io_timeout: Duration::from_secs(2),
            },
            network: Network::default(),
            cache_dir: None,
        }
    }

    #[test]
    fn debug_hides_the_secret_and_the_token() {
        let t = target("http://127.0.0.1:1");
        let shown = format!("{t:?} {:?}", Client::new(&t).expect("client"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("t0ken"), "{shown}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((0, 9, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("items 0-9/100"), None);
        assert_eq!(parse_content_range("bytes x-9/100"), None);
    }

    #[test]
    fn error_bodies_are_recognised() {
        let e = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please &amp; wait</Message></Error>";
        assert!(is_error_xml(e));
        assert_eq!(xml_field(e, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(xml_field(e, "Message").as_deref(), Some("Please & wait"));
        assert!(!is_error_xml(
            b"<?xml version=\"1.0\"?><ListBucketResult></ListBucketResult>"
        ));
        assert!(!is_error_xml(b""));
    }

    #[test]
    fn a_short_secret_is_scrubbed_only_where_it_stands_alone() {
        assert_eq!(
            scrub_secret("bad key abc: abcdef", "abc"),
            "bad key <redacted>: abcdef"
        );
        assert_eq!(
            scrub_secret("x=pass,passive pass", "pass"),
            "x=<redacted>,passive <redacted>"
        );
        assert_eq!(scrub_secret("pass", "pass"), "<redacted>");
        let long = "wJalrXUtnFEMI/K7MDENG";
        assert_eq!(
            scrub_secret(&format!("AA{long} and {long}"), long),
            "AA<redacted> and <redacted>"
        );
    }

    #[test]
    fn the_secret_is_scrubbed_from_server_messages() {
        let c = Client::new(&target("http://127.0.0.1:1")).expect("client");
        let f = c.xml_failure(
            403,
            b"<Error><Code>SignatureDoesNotMatch</Code><Message>key s3cr3t-value token t0ken-value</Message></Error>",
            Denied,
        );
        let e = c.error("config", f, 1).to_string();
        assert!(
            !e.contains("s3cr3t-value") && !e.contains("t0ken-value"),
            "{e}"
        );
        assert!(e.contains("pre/fix/config"), "{e}");
    }

    #[test]
    fn jitter_stays_below_its_cap() {
        for _ in 0..1000 {
            assert!(jitter(Duration::from_millis(10)) <= Duration::from_millis(10));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn nothing_listening_is_transient_after_every_attempt() {
        // A port just closed by its listener refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let c = Client::new(&target(&format!("http://127.0.0.1:{port}"))).expect("client");
        let e = c.get("config").expect_err("nothing listens");
        match &e {
            Error::Remote { kind, status, .. } => {
                assert_eq!(*kind, Transient);
                assert_eq!(*status, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_refusal());
        let msg = e.to_string();
        assert!(msg.contains("after 3 attempts"), "{msg}");
        assert!(msg.contains("pre/fix/config"), "{msg}");
        assert!(
            !msg.contains("s3cr3t") && !msg.contains("t0ken") && !msg.contains("X-Amz"),
            "{msg}"
        );
    }

    /// A server on loopback that answers each request with the next of `script` (raw
    /// HTTP responses; an empty one: accept, read the request, never answer), then 500s;
    /// returns its port and a count of the requests it read.
    pub(crate) fn scripted(
        script: Vec<Vec<u8>>,
    ) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                // The request: headers, then a body of Content-Length bytes.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let len = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let _ = std::io::copy(&mut (&mut conn).take(len), &mut std::io::sink());
                seen.fetch_add(1, Ordering::SeqCst);
                let answer = script.next().unwrap_or_else(|| {
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                });
                if answer.is_empty() {
                    // Hold the connection open, silent, while the next ones are served.
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(2));
                        drop(conn);
                    });
                    continue;
                }
                let _ = conn.write_all(&answer);
            }
        });
        (port, count)
    }

    pub(crate) fn answer(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for h in headers {
            out.push_str(h);
            out.push_str("\r\n");
        }
        if !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("content-length"))
        {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }

    pub(crate) fn error_xml(code: &str) -> Vec<u8> {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>m</Message></Error>").into_bytes()
    }

    fn on(port: u16) -> Client {
        Client::new(&target(&format!("http://127.0.0.1:{port}"))).expect("client")
    }

    fn remote_kind(e: &Error) -> RemoteErrorKind {
        match e {
            Error::Remote { kind, .. } => *kind,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn busy_servers_are_retried_until_they_answer() {
        let (port, n) = scripted(vec![
            answer("503 Service Unavailable", &[], &error_xml("SlowDown")),
            answer("429 Too Many Requests", &["Retry-After: 0"], b""),
            answer("200 OK", &[], b"hello"),
        ]);
        assert_eq!(on(port).get("a").expect("third time"), b"hello");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 3);
        let (port, n) = scripted(vec![
            answer("400 Bad Request", &[], &error_xml("RequestTimeout")),
            answer("200 OK", &[], b"ok"),
        ]);
        assert_eq!(on(port).get("a").expect("second time"), b"ok");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_body_cut_short_is_retried() {
        let (port, n) = scripted(vec![
            answer("200 OK", &["Content-Length: 10"], b"12345"),
            answer("200 OK", &[], b"1234567890"),
        ]);
        assert_eq!(on(port).get("a").expect("whole"), b"1234567890");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A range whose body ends early, every time: transient, not damage.
        let (port, _) = scripted(vec![
            answer(
                "206 Partial Content",
                &["Content-Range: bytes 0-9/100", "Content-Length: 10"],
                b"12345"
            );
            3
        ]);
        let e = on(port)
            .get_range("a", 0, &mut [0u8; 10])
            .expect_err("cut short");
        assert_eq!(remote_kind(&e), Transient, "{e}");
    }

    #[test]
    fn a_server_that_ignores_ranges_still_gives_the_parts_asked_for() {
        let (port, _) = scripted(vec![answer("200 OK", &[], b"0123456789"); 2]);
        let c = on(port);
        assert_eq!(c.get_tail("a", 3).expect("tail"), (b"789".to_vec(), 10));
        let mut buf = [0u8; 4];
        c.get_range("a", 2, &mut buf).expect("range");
        assert_eq!(&buf, b"2345");
    }

    #[test]
    fn a_range_the_server_did_not_send_is_corrupt() {
        let (port, n) = scripted(vec![answer(
            "206 Partial Content",
            &["Content-Range: bytes 10-19/100"],
            b"0123456789",
        )]);
        let e = on(port)
            .get_range("a", 0, &mut [0u8; 10])
            .expect_err("wrong range");
        assert_eq!(remote_kind(&e), Corrupt, "{e}");
        assert!(!e.is_refusal());
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn an_error_sent_with_status_200_is_retried() {
        let listing = br#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><EncodingType>url</EncodingType><Contents><Key>pre/fix/snapshots/a</Key><Size>3</Size></Contents></ListBucketResult>"#;
        let (port, n) = scripted(vec![
            answer("200 OK", &[], &error_xml("InternalError")),
            answer("200 OK", &[], listing),
        ]);
        assert_eq!(
            on(port).list("snapshots/").expect("second time"),
            vec![("snapshots/a".to_string(), 3)]
        );
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 2);
        let (port, n) = scripted(vec![
            answer("200 OK", &[], &error_xml("SlowDown")),
            answer("200 OK", &[], b""),
        ]);
        assert!(on(port)
            .put("a", b"x", PutMode::Overwrite)
            .expect("second time"));
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_digest_the_server_keeps_refusing_is_corrupt_after_the_retries() {
        let (port, n) = scripted(vec![
            answer("400 Bad Request", &[], &error_xml("BadDigest"));
            3
        ]);
        let e = on(port)
            .put("a", b"x", PutMode::Overwrite)
            .expect_err("bad digest");
        assert_eq!(remote_kind(&e), Corrupt, "{e}");
        assert!(e.to_string().contains("after 3 attempts"), "{e}");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn refusals_and_missing_objects_are_not_retried() {
        let (port, n) = scripted(vec![answer(
            "403 Forbidden",
            &[],
            &error_xml("AccessDenied"),
        )]);
        let e = on(port).get("a").expect_err("denied");
        assert_eq!(remote_kind(&e), Denied, "{e}");
        assert!(matches!(
            e,
            Error::Remote {
                status: Some(403),
                ..
            }
        ));
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
        let (port, n) = scripted(vec![answer("404 Not Found", &[], &error_xml("NoSuchKey"))]);
        let e = on(port).get("a").expect_err("missing");
        assert!(e.is_not_found(), "{e}");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A create-only write that finds the object: an answer, not an error.
        let (port, _) = scripted(vec![answer("412 Precondition Failed", &[], b"")]);
        assert!(!on(port).put("a", b"x", PutMode::IfAbsent).expect("exists"));
    }

    #[test]
    fn a_create_only_write_that_finds_its_own_earlier_attempt_created_the_object() {
        // The first attempt is stored but its answer lost; the retry finds the object.
        let (port, n) = scripted(vec![
            answer("503 Service Unavailable", &[], b""),
            answer("412 Precondition Failed", &[], b""),
            answer("200 OK", &[], b"mine"),
        ]);
        assert!(on(port)
            .put("lease", b"mine", PutMode::IfAbsent)
            .expect("ours"));
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 3);
        let (port, _) = scripted(vec![
            answer("503 Service Unavailable", &[], b""),
            answer("412 Precondition Failed", &[], b""),
            answer("200 OK", &[], b"theirs"),
        ]);
        assert!(!on(port)
            .put("lease", b"mine", PutMode::IfAbsent)
            .expect("theirs"));
    }

    #[test]
    fn a_server_that_stops_answering_times_out_and_is_transient() {
        let (port, n) = scripted(vec![Vec::new(); 3]);
        let mut t = target(&format!("http://127.0.0.1:{port}"));
        t.retry.io_timeout = Duration::from_millis(200);
        let e = Client::new(&t)
            .expect("client")
            .get("a")
            .expect_err("silent");
        assert_eq!(remote_kind(&e), Transient, "{e}");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
