//! A fault-injecting HTTP/1.1 proxy on loopback, placed between jellysnap and an S3 server.
//!
//! Real servers do not misbehave on demand, so a test puts this proxy in front of one and
//! programs [`Rule`]s: which requests (method, key prefix or substring, query, a header)
//! and which of them (the n-th, every k-th, the first n, a seeded chance) get which
//! [`Fault`] (a dropped or reset connection before or after the server saw the request, an
//! S3 error status, a truncated or corrupted body, a delay, an error with HTTP 200, a
//! listing with entries left out). Every exchange is logged, so a test also counts requests
//! by method and key prefix and the bytes each way.
//!
//! Requests and headers are forwarded byte for byte (the `Host` header included: S3
//! signatures cover it, and the client signed the proxy's address). Only the framing
//! changes: chunked bodies are decoded and sent on with a `Content-Length`, and
//! `Expect: 100-continue` is answered here, so that a fault can be decided on the whole
//! request and applied to the whole response.
//!
//! Only std and libc (for `SO_LINGER`): plain threads, one per client connection, each with
//! its own upstream connection.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What happens to a request a rule picked.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Close the client's connection without forwarding (the server never sees it).
    DropBefore,
    /// Forward, wait for the server's answer, then close the client's connection without
    /// answering (the server did the work; the client cannot know).
    DropAfter,
    /// Like [`Fault::DropBefore`] with a TCP reset (`SO_LINGER` 0) instead of a close.
    ResetBefore,
    /// Like [`Fault::DropAfter`] with a TCP reset.
    ResetAfter,
    /// Answer `status` with an S3 `<Error>` body carrying `code`, without forwarding.
    Error { status: u16, code: &'static str },
    /// Forward, then answer `status` with an S3 `<Error>` body instead of the server's
    /// answer (a PUT that was stored, reported as failed).
    ErrorAfter { status: u16, code: &'static str },
    /// Answer HTTP 200 with an S3 `<Error>` body, without forwarding.
    ErrorWith200 { code: &'static str },
    /// Forward, send the server's head (its `Content-Length` unchanged) and only the first
    /// `keep` bytes of the body (fewer than all of it), then close. A response without a
    /// body is cut in its head.
    Truncate { keep: usize },
    /// Forward, wait `ms` milliseconds, then relay the answer.
    Delay { ms: u64 },
    /// Forward, flip every bit of the body's byte at `at` (modulo the body's length).
    CorruptByte { at: usize },
    /// Forward a listing, then remove from its body every `<Contents>` entry whose `<Key>`
    /// contains `key_contains` (and lower `<KeyCount>` to match): an incomplete listing
    /// that looks complete.
    OmitListed { key_contains: String },
}

impl Fault {
    pub fn internal_error() -> Fault {
        Fault::Error {
            status: 500,
            code: "InternalError",
        }
    }
    pub fn service_unavailable() -> Fault {
        Fault::Error {
            status: 503,
            code: "ServiceUnavailable",
        }
    }
    pub fn slow_down() -> Fault {
        Fault::Error {
            status: 503,
            code: "SlowDown",
        }
    }
    pub fn too_many_requests() -> Fault {
        Fault::Error {
            status: 429,
            code: "TooManyRequests",
        }
    }
    pub fn access_denied() -> Fault {
        Fault::Error {
            status: 403,
            code: "AccessDenied",
        }
    }
    pub fn omit_listed(key_contains: &str) -> Fault {
        Fault::OmitListed {
            key_contains: key_contains.to_string(),
        }
    }
    fn forwards(&self) -> bool {
        !matches!(
            self,
            Fault::DropBefore
                | Fault::ResetBefore
                | Fault::Error { .. }
                | Fault::ErrorWith200 { .. }
        )
    }
}

/// Which of the matching requests a rule fires on.
#[derive(Clone, Debug)]
pub enum When {
    Always,
    /// The n-th matching request (1-based), once.
    Nth(usize),
    /// The first n matching requests.
    First(usize),
    /// Every k-th matching request (the k-th, the 2k-th, ...).
    Every(usize),
    /// Each matching request with probability `p`, drawn from a generator seeded by `seed`
    /// (the same seed fires on the same matching requests).
    Chance {
        p: f64,
        seed: u64,
    },
}

/// A programmed fault: a request matches when every condition given holds.
#[derive(Clone, Debug)]
pub struct Rule {
    method: Option<String>,
    key_prefix: Option<String>,
    key_contains: Option<String>,
    query_contains: Option<String>,
    header: Option<String>,
    when: When,
    fault: Fault,
}

impl Rule {
    /// `fault` on every request; narrow it with the methods below.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            method: None,
            key_prefix: None,
            key_contains: None,
            query_contains: None,
            header: None,
            when: When::Always,
            fault,
        }
    }
    /// An HTTP method, or `LIST` for a ListObjectsV2 request (a `GET` matches those too).
    pub fn method(mut self, m: &str) -> Rule {
        self.method = Some(m.to_string());
        self
    }
    /// The key (see [`Exchange::key`]) starts with `p`.
    pub fn key_prefix(mut self, p: &str) -> Rule {
        self.key_prefix = Some(p.to_string());
        self
    }
    pub fn key_contains(mut self, s: &str) -> Rule {
        self.key_contains = Some(s.to_string());
        self
    }
    pub fn query_contains(mut self, s: &str) -> Rule {
        self.query_contains = Some(s.to_string());
        self
    }
    /// The request carries header `name` (e.g. `range`).
    pub fn header(mut self, name: &str) -> Rule {
        self.header = Some(name.to_ascii_lowercase());
        self
    }
    pub fn when(mut self, w: When) -> Rule {
        self.when = w;
        self
    }
    pub fn nth(self, n: usize) -> Rule {
        self.when(When::Nth(n))
    }
    pub fn first(self, n: usize) -> Rule {
        self.when(When::First(n))
    }
    pub fn every(self, k: usize) -> Rule {
        self.when(When::Every(k))
    }
    pub fn chance(self, p: f64, seed: u64) -> Rule {
        self.when(When::Chance { p, seed })
    }

    fn matches(&self, req: &Request, key: &str) -> bool {
        let method_ok = match self.method.as_deref() {
            None => true,
            Some("LIST") => req.method == "GET" && is_listing(&req.query),
            Some(m) => req.method.eq_ignore_ascii_case(m),
        };
        method_ok
            && self
                .key_prefix
                .as_deref()
                .is_none_or(|p| key.starts_with(p))
            && self.key_contains.as_deref().is_none_or(|s| key.contains(s))
            && self
                .query_contains
                .as_deref()
                .is_none_or(|s| req.query.contains(s))
            && self
                .header
                .as_deref()
                .is_none_or(|h| req.header(h).is_some())
    }
}

/// A handle on an added rule, to ask how often it matched and fired.
#[derive(Clone, Copy, Debug)]
pub struct RuleId(usize);

struct RuleState {
    rule: Rule,
    matched: usize,
    fired: usize,
    rng: u64,
    active: bool,
}

impl RuleState {
    /// Count a matching request; true if the fault applies to it.
    fn fire(&mut self) -> bool {
        self.matched += 1;
        let n = self.matched;
        let fire = match self.rule.when {
            When::Always => true,
            When::Nth(k) => n == k,
            When::First(k) => n <= k,
            When::Every(k) => k > 0 && n.is_multiple_of(k),
            When::Chance { p, .. } => {
                // xorshift64*: a fixed sequence per seed, nothing to install.
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
                ((x >> 11) as f64 / (1u64 << 53) as f64) < p
            }
        };
        if fire {
            self.fired += 1;
        }
        fire
    }
}

/// One request the proxy saw, and what became of it.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    pub query: String,
    /// The object key below the proxy's root (`bucket/prefix`): the path after it, or for
    /// a listing the `prefix` parameter after it.
    pub key: String,
    /// The status the client received (None: no answer, or not yet).
    pub status: Option<u16>,
    pub fault: Option<Fault>,
    /// Bytes read from the client for this request, head and body.
    pub up: u64,
    /// Bytes written to the client for this request.
    pub down: u64,
}

impl Exchange {
    pub fn is_listing(&self) -> bool {
        self.method == "GET" && is_listing(&self.query)
    }
}

struct Shared {
    upstream: SocketAddr,
    root: String,
    rules: Mutex<Vec<RuleState>>,
    log: Mutex<Log>,
    stop: AtomicBool,
}

/// The exchanges since the last reset; `base` is how many were dropped by resets, so that
/// an exchange's number stays valid across a reset.
#[derive(Default)]
struct Log {
    base: usize,
    entries: Vec<Exchange>,
}

/// The running proxy; dropping it stops accepting connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `upstream`. `root` is the bucket
    /// and repository prefix (`bucket` or `bucket/prefix`) that keys are reported below.
    pub fn start(upstream: SocketAddr, root: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap();
        let root = root.trim_matches('/');
        let shared = Arc::new(Shared {
            upstream,
            root: if root.is_empty() {
                String::new()
            } else {
                format!("{root}/")
            },
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Log::default()),
            stop: AtomicBool::new(false),
        });
        let sh = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("faultproxy-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if sh.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let sh = Arc::clone(&sh);
                    let _ = thread::Builder::new()
                        .name("faultproxy-conn".into())
                        .spawn(move || serve(client, &sh));
                }
            })
            .expect("start the fault proxy");
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give the client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Add a rule; rules are tried in the order added, and the first that fires applies
    /// (each matching rule counts the request, fired or not).
    pub fn add(&self, rule: Rule) -> RuleId {
        let mut rules = self.shared.rules.lock().unwrap();
        let rng = match rule.when {
            When::Chance { seed, .. } => seed | 1,
            _ => 1,
        };
        rules.push(RuleState {
            rule,
            matched: 0,
            fired: 0,
            rng,
            active: true,
        });
        RuleId(rules.len() - 1)
    }

    /// How many requests the rule's fault was applied to.
    pub fn fired(&self, id: RuleId) -> usize {
        self.shared.rules.lock().unwrap()[id.0].fired
    }

    /// How many requests matched the rule (fired or not).
    pub fn matched(&self, id: RuleId) -> usize {
        self.shared.rules.lock().unwrap()[id.0].matched
    }

    /// Stop applying every rule (their counts stay readable).
    pub fn clear_rules(&self) {
        for r in self.shared.rules.lock().unwrap().iter_mut() {
            r.active = false;
        }
    }

    /// Every exchange so far, in the order the requests arrived.
    pub fn log(&self) -> Vec<Exchange> {
        self.shared.log.lock().unwrap().entries.clone()
    }

    /// Forget the exchanges so far (the counters start again from zero).
    pub fn reset_counters(&self) {
        let mut log = self.shared.log.lock().unwrap();
        log.base += log.entries.len();
        log.entries.clear();
    }

    /// Requests with `method` (any if empty; `LIST` for listings) whose key starts with
    /// `key_prefix`.
    pub fn count(&self, method: &str, key_prefix: &str) -> usize {
        self.count_where(|e| {
            let m = match method {
                "" => true,
                "LIST" => e.is_listing(),
                m => e.method.eq_ignore_ascii_case(m),
            };
            m && e.key.starts_with(key_prefix)
        })
    }

    pub fn count_where(&self, f: impl Fn(&Exchange) -> bool) -> usize {
        self.shared
            .log
            .lock()
            .unwrap()
            .entries
            .iter()
            .filter(|e| f(e))
            .count()
    }

    pub fn requests(&self) -> usize {
        self.shared.log.lock().unwrap().entries.len()
    }

    pub fn bytes_up(&self) -> u64 {
        self.shared
            .log
            .lock()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.up)
            .sum()
    }

    pub fn bytes_down(&self) -> u64 {
        self.shared
            .log
            .lock()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.down)
            .sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the stop flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    /// Log the request and pick its fault; returns the log index.
    fn admit(&self, req: &Request, down: u64) -> (usize, Option<Fault>) {
        let key = self.key_of(req);
        let mut fault = None;
        for r in self.rules.lock().unwrap().iter_mut() {
            if r.active && r.rule.matches(req, &key) && r.fire() && fault.is_none() {
                fault = Some(r.rule.fault.clone());
            }
        }
        let mut log = self.log.lock().unwrap();
        log.entries.push(Exchange {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            key,
            status: None,
            fault: fault.clone(),
            up: req.wire_len,
            down,
        });
        (log.base + log.entries.len() - 1, fault)
    }

    fn key_of(&self, req: &Request) -> String {
        let full = if is_listing(&req.query) {
            let bucket = req.path.trim_start_matches('/').trim_end_matches('/');
            let prefix = query_param(&req.query, "prefix").unwrap_or_default();
            format!("{bucket}/{prefix}")
        } else {
            percent_decode(req.path.trim_start_matches('/'))
        };
        match full.strip_prefix(&self.root) {
            Some(k) => k.to_string(),
            None => full,
        }
    }

    fn settle(&self, idx: usize, status: Option<u16>, down: u64) {
        // A test may have reset the counters meanwhile: then this exchange is gone.
        let mut log = self.log.lock().unwrap();
        let Some(pos) = idx.checked_sub(log.base) else {
            return;
        };
        if let Some(e) = log.entries.get_mut(pos) {
            if e.status.is_none() {
                e.status = status;
            }
            e.down += down;
        }
    }
}

fn is_listing(query: &str) -> bool {
    query.split('&').any(|p| p == "list-type=2")
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- HTTP/1.1 messages ----

const MAX_HEAD: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(120);

struct Request {
    method: String,
    path: String,
    query: String,
    /// The request line and headers as received, without the final empty line, minus
    /// the headers the proxy handles itself (framing, `Expect`).
    head: Vec<u8>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes read from the client for it.
    wire_len: u64,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The request as forwarded: its head, a `Content-Length` if it has a body, the body.
    fn to_wire(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        if !self.body.is_empty() || self.header("content-length").is_some() {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

struct Response {
    status: u16,
    /// Status line and headers minus framing headers, without the final empty line.
    head: Vec<u8>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The server closes the connection after this response.
    close: bool,
    /// A response to HEAD, or a 204/304: its head may announce a length it never sends.
    bodiless: bool,
}

impl Response {
    fn to_wire(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        if self.bodiless {
            if let Some(v) = find_header(&self.headers, "content-length") {
                out.extend_from_slice(format!("Content-Length: {v}\r\n").as_bytes());
            }
        } else {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Read one line (CRLF or LF), counting its bytes into `n`; None at a clean end of stream.
fn read_line(r: &mut impl BufRead, n: &mut u64) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let got = r
        .by_ref()
        .take(MAX_HEAD as u64)
        .read_until(b'\n', &mut line)?;
    *n += got as u64;
    if got == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "line too long or cut",
        ));
    }
    Ok(Some(line))
}

/// A message's first line, its raw head (see [`read_head`]) and its parsed headers.
type Head = (String, Vec<u8>, Vec<(String, String)>);

/// Read a head: the first line, then header lines up to the empty one. Framing headers
/// (`Content-Length`, `Transfer-Encoding`) and `Expect` are parsed but left out of the
/// returned raw head, which the proxy rewrites.
fn read_head(r: &mut impl BufRead, n: &mut u64) -> io::Result<Option<Head>> {
    let Some(first) = read_line(r, n)? else {
        return Ok(None);
    };
    let first_s = String::from_utf8_lossy(&first).trim_end().to_string();
    let mut head = first;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, n)?
            .ok_or_else(|| io::Error::new(ErrorKind::UnexpectedEof, "head cut short"))?;
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(ErrorKind::InvalidData, "head too long"));
        }
        let text = String::from_utf8_lossy(&line);
        let (k, v) = text
            .split_once(':')
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "bad header line"))?;
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        let framing = ["content-length", "transfer-encoding", "expect"]
            .iter()
            .any(|f| k.eq_ignore_ascii_case(f));
        if !framing {
            head.extend_from_slice(&line);
        }
        headers.push((k, v));
    }
    Ok(Some((first_s, head, headers)))
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing(headers: &[(String, String)], is_request: bool) -> io::Result<Framing> {
    if find_header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Ok(Framing::Chunked);
    }
    match find_header(headers, "content-length") {
        Some(v) => v
            .parse()
            .map(Framing::Length)
            .map_err(|_| io::Error::new(ErrorKind::InvalidData, "bad Content-Length")),
        None if is_request => Ok(Framing::Length(0)),
        None => Ok(Framing::UntilClose),
    }
}

fn read_body(r: &mut impl BufRead, how: Framing, n: &mut u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match how {
        Framing::Length(len) => {
            body.resize(len, 0);
            r.read_exact(&mut body)?;
            *n += len as u64;
        }
        Framing::UntilClose => {
            *n += r.read_to_end(&mut body)? as u64;
        }
        Framing::Chunked => loop {
            let line = read_line(r, n)?
                .ok_or_else(|| io::Error::new(ErrorKind::UnexpectedEof, "chunk cut short"))?;
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let t = read_line(r, n)?.ok_or_else(|| {
                        io::Error::new(ErrorKind::UnexpectedEof, "trailers cut short")
                    })?;
                    if t == b"\r\n" || t == b"\n" {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            *n += size as u64;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
            *n += 2;
        },
    }
    Ok(body)
}

/// Read a request from the client. `Expect: 100-continue` is answered here before the body
/// is read (its bytes are returned in the second value, to be counted as sent).
fn read_request(
    r: &mut impl BufRead,
    client: &mut TcpStream,
) -> io::Result<Option<(Request, u64)>> {
    let mut n = 0u64;
    let Some((line, head, headers)) = read_head(r, &mut n)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut sent = 0u64;
    if find_header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        client.write_all(CONTINUE)?;
        sent += CONTINUE.len() as u64;
    }
    let how = framing(&headers, true)?;
    let body = read_body(r, how, &mut n)?;
    Ok(Some((
        Request {
            method,
            path,
            query,
            head,
            headers,
            body,
            wire_len: n,
        },
        sent,
    )))
}

/// Read a response to a `method` request, skipping interim (1xx) answers. An error of kind
/// `NotConnected` means the server closed before sending a byte.
fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    loop {
        let mut n = 0u64;
        let Some((line, head, headers)) = read_head(r, &mut n)? else {
            return Err(io::Error::new(
                ErrorKind::NotConnected,
                "server closed the connection",
            ));
        };
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "bad status line"))?;
        if (100..200).contains(&status) {
            continue;
        }
        let close = find_header(&headers, "connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || line.starts_with("HTTP/1.0");
        let bodiless = method == "HEAD" || status == 204 || status == 304;
        let (body, close) = if bodiless {
            (Vec::new(), close)
        } else {
            let how = framing(&headers, false)?;
            let until_close = matches!(how, Framing::UntilClose);
            (read_body(r, how, &mut n)?, close || until_close)
        };
        return Ok(Response {
            status,
            head,
            headers,
            body,
            close,
            bodiless,
        });
    }
}

fn s3_error(status: u16, code: &str) -> Response {
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the test's fault proxy</Message>\
         <RequestId>faultproxy</RequestId></Error>"
    );
    Response {
        status,
        head: format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n")
            .into_bytes(),
        headers: Vec::new(),
        body: body.into_bytes(),
        close: false,
        bodiless: false,
    }
}

/// Remove every `<Contents>...</Contents>` whose `<Key>` contains `needle`; lower
/// `<KeyCount>` by the number removed.
fn omit_listed(body: &[u8], needle: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    let mut removed = 0usize;
    while let Some(start) = rest.find("<Contents>") {
        let Some(len) = rest[start..].find("</Contents>") else {
            break;
        };
        let end = start + len + "</Contents>".len();
        let entry = &rest[start..end];
        out.push_str(&rest[..start]);
        let key = entry
            .split_once("<Key>")
            .and_then(|(_, k)| k.split_once("</Key>"))
            .map(|(k, _)| k)
            .unwrap_or("");
        if key.contains(needle) {
            removed += 1;
        } else {
            out.push_str(entry);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    if removed > 0 {
        if let Some((a, b)) = out.split_once("<KeyCount>") {
            if let Some((count, c)) = b.split_once("</KeyCount>") {
                if let Ok(k) = count.trim().parse::<usize>() {
                    out = format!("{a}<KeyCount>{}</KeyCount>{c}", k.saturating_sub(removed));
                }
            }
        }
    }
    out.into_bytes()
}

// ---- the connection loop ----

struct Upstream {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Upstream {
    fn connect(addr: SocketAddr) -> io::Result<Upstream> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Upstream { stream, reader })
    }
}

/// Send `wire` upstream and read the answer. A kept-alive connection the server closed
/// meanwhile is replaced once (the server never saw the request on it).
fn forward(
    up: &mut Option<Upstream>,
    addr: SocketAddr,
    wire: &[u8],
    method: &str,
) -> io::Result<Response> {
    for _ in 0..2 {
        let reused = up.is_some();
        if up.is_none() {
            *up = Some(Upstream::connect(addr)?);
        }
        let u = up.as_mut().unwrap();
        let res = u
            .stream
            .write_all(wire)
            .and_then(|()| read_response(&mut u.reader, method));
        match res {
            Ok(r) => {
                if r.close {
                    *up = None;
                }
                return Ok(r);
            }
            Err(e) => {
                *up = None;
                let stale = matches!(
                    e.kind(),
                    ErrorKind::NotConnected | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                );
                if !(reused && stale) {
                    return Err(e);
                }
            }
        }
    }
    Err(io::Error::new(
        ErrorKind::NotConnected,
        "server unreachable",
    ))
}

/// Close with a TCP reset rather than a FIN: `SO_LINGER` with a zero timeout (std's
/// `set_linger` is not stable).
#[allow(unsafe_code)]
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a properly sized, initialised option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt SO_LINGER: {}",
        io::Error::last_os_error()
    );
    drop(stream);
}

fn serve(client: TcpStream, sh: &Shared) {
    let _ = client.set_read_timeout(Some(IO_TIMEOUT));
    let _ = client.set_nodelay(true);
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut client = client;
    let mut up: Option<Upstream> = None;
    loop {
        let (req, continue_bytes) = match read_request(&mut reader, &mut client) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let (idx, fault) = sh.admit(&req, continue_bytes);
        let resp = if fault.as_ref().is_none_or(Fault::forwards) {
            match forward(&mut up, sh.upstream, &req.to_wire(), &req.method) {
                Ok(r) => Some(r),
                // The server is gone (killed by the test, say): the client sees its
                // connection closed, as it would see a refused one.
                Err(_) => return,
            }
        } else {
            None
        };
        let mut resp = match (fault, resp) {
            (Some(Fault::DropBefore | Fault::DropAfter), _) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            (Some(Fault::ResetBefore | Fault::ResetAfter), _) => {
                reset(client);
                return;
            }
            (Some(Fault::Error { status, code } | Fault::ErrorAfter { status, code }), _) => {
                s3_error(status, code)
            }
            (Some(Fault::ErrorWith200 { code }), _) => s3_error(200, code),
            (Some(Fault::Truncate { keep }), Some(r)) => {
                let wire = r.to_wire();
                let head_len = wire.len() - r.body.len();
                let cut = if r.body.is_empty() {
                    head_len / 2
                } else {
                    head_len + keep.min(r.body.len() - 1)
                };
                // Counted before it is sent, so that a client that got it finds it counted.
                sh.settle(idx, Some(r.status), cut as u64);
                let _ = client.write_all(&wire[..cut]);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            (Some(Fault::Delay { ms }), Some(r)) => {
                thread::sleep(Duration::from_millis(ms));
                r
            }
            (Some(Fault::CorruptByte { at }), Some(mut r)) => {
                if !r.body.is_empty() {
                    let i = at % r.body.len();
                    r.body[i] ^= 0xff;
                }
                r
            }
            (Some(Fault::OmitListed { key_contains }), Some(mut r)) => {
                r.body = omit_listed(&r.body, &key_contains);
                r
            }
            (None, Some(r)) => r,
            (Some(_), None) | (None, None) => unreachable!("a forwarding fault has a response"),
        };
        let close = resp.close || req.wants_close();
        if close && find_header(&resp.headers, "connection").is_none() {
            resp.head.extend_from_slice(b"Connection: close\r\n");
        }
        let wire = resp.to_wire();
        sh.settle(idx, Some(resp.status), wire.len() as u64);
        let ok = client.write_all(&wire).is_ok();
        if !ok || close {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
}
