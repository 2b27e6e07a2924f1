//! The fault proxy of the S3 tests (`tests/common/faultproxy.rs`) checked against a tiny
//! upstream (fixed answers, every request it saw recorded) and a raw TCP client: requests
//! go through byte for byte on kept-alive connections, each fault does what it says
//! (whether the server saw the request included), rules pick the requests they name, and
//! the counters add up to what went over the wire.

mod common;

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::faultproxy::{Fault, FaultProxy, Rule};

const ROOT: &str = "b/p";
const OBJECT_LEN: usize = 1000;

fn object() -> Vec<u8> {
    (0..OBJECT_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

const LISTING: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>\
<Name>b</Name><Prefix>p/packs/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>\
<IsTruncated>false</IsTruncated>\
<Contents><Key>p/packs/aa</Key><Size>10</Size></Contents>\
<Contents><Key>p/packs/bb</Key><Size>20</Size></Contents>\
<Contents><Key>p/packs/cc</Key><Size>30</Size></Contents>\
</ListBucketResult>";

/// The tiny upstream: answers by path (see `answer`), records each request as received
/// (head and body), counts the connections it accepted.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (Arc::clone(&seen), Arc::clone(&connections));
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let s = Arc::clone(&s);
                thread::spawn(move || upstream_conn(conn, &s));
            }
        });
        Upstream {
            addr,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }

    fn proxy(&self) -> FaultProxy {
        FaultProxy::start(self.addr, ROOT)
    }
}

fn upstream_conn(conn: TcpStream, seen: &Mutex<Vec<Vec<u8>>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let mut raw = Vec::new();
        let mut len = 0usize;
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some(v) = text.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == b"\r\n" {
                break;
            }
        }
        let start = raw.len();
        raw.resize(start + len, 0);
        r.read_exact(&mut raw[start..]).unwrap();
        let line = String::from_utf8_lossy(&raw)
            .lines()
            .next()
            .unwrap()
            .to_string();
        seen.lock().unwrap().push(raw);
        let (method, target) = {
            let mut p = line.split(' ');
            (p.next().unwrap().to_string(), p.next().unwrap().to_string())
        };
        let (answer, then_close) = answer(&method, &target);
        if w.write_all(&answer).is_err() || then_close {
            return;
        }
    }
}

/// The upstream's fixed answers; true: close the connection afterwards without saying so.
fn answer(method: &str, target: &str) -> (Vec<u8>, bool) {
    let with_len = |status: &str, body: &[u8]| {
        let mut a = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        a.extend_from_slice(body);
        a
    };
    if target.contains("list-type=2") {
        return (with_len("200 OK", LISTING.as_bytes()), false);
    }
    if target.ends_with("/chunked") {
        let a = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                 7\r\nhello, \r\n8;ext=1\r\nchunked \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n";
        return (a.as_bytes().to_vec(), false);
    }
    match method {
        "HEAD" => (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {OBJECT_LEN}\r\n\r\n").into_bytes(),
            false,
        ),
        "GET" => (with_len("200 OK", &object()), target.ends_with("/idle")),
        "PUT" => (
            b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n".to_vec(),
            false,
        ),
        _ => (with_len("204 No Content", b""), false),
    }
}

/// A raw client of the proxy: writes requests as given, reads `Content-Length` answers
/// (the only framing the proxy sends).
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
    sent: u64,
    received: u64,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn to(proxy: &FaultProxy) -> Client {
        let w = TcpStream::connect(proxy.addr()).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Client {
            w,
            r,
            sent: 0,
            received: 0,
        }
    }

    fn send(&mut self, raw: &[u8]) {
        self.w.write_all(raw).unwrap();
        self.sent += raw.len() as u64;
    }

    /// Read one answer; `head_only` for an answer to HEAD.
    fn answer(&mut self, head_only: bool) -> io::Result<Resp> {
        let mut line = String::new();
        let n = self.r.read_line(&mut line)?;
        if !line.ends_with('\n') {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before an answer",
            ));
        }
        self.received += n as u64;
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            let n = self.r.read_line(&mut h)?;
            if !h.ends_with('\n') {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "head cut short"));
            }
            self.received += n as u64;
            if h == "\r\n" {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) {
            return Ok(resp);
        }
        let len: usize = resp.header("content-length").unwrap().parse().unwrap();
        if !head_only {
            resp.body.resize(len, 0);
            self.r.read_exact(&mut resp.body)?;
            self.received += len as u64;
        }
        Ok(resp)
    }

    fn call(&mut self, method: &str, target: &str, extra: &str, body: &[u8]) -> io::Result<Resp> {
        let raw = request(method, target, extra, body);
        self.send(&raw);
        self.answer(method == "HEAD")
    }
}

/// A request as the client writes it: `Content-Length` last, so that the proxy forwards
/// exactly these bytes.
fn request(method: &str, target: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Amz-Date: 20260101T000000Z\r\n\
         {extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// One request on a connection of its own (faults close connections).
fn once(proxy: &FaultProxy, method: &str, target: &str, body: &[u8]) -> io::Result<Resp> {
    Client::to(proxy).call(method, target, "", body)
}

fn put(proxy: &FaultProxy, key: &str) -> u16 {
    once(proxy, "PUT", &format!("/b/p/{key}"), b"pack bytes")
        .unwrap()
        .status
}

fn xml_code(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body);
    let (_, rest) = t.split_once("<Code>").expect("an S3 error body");
    rest.split_once("</Code>").unwrap().0.to_string()
}

#[test]
fn requests_go_through_byte_for_byte_on_one_kept_alive_connection() {
    let up = Upstream::start();
    let proxy = up.proxy();
    let mut c = Client::to(&proxy);
    let pack: Vec<u8> = (0..3000u32).map(|i| (i % 256) as u8).collect();

    let sent = vec![
        request("PUT", "/b/p/packs/aa", "Content-Type: x\r\n", &pack),
        request("GET", "/b/p/packs/aa", "Range: bytes=0-9\r\n", b""),
        request("HEAD", "/b/p/index/x%2By", "", b""),
        request("GET", "/b?list-type=2&prefix=p%2Fpacks%2F", "", b""),
    ];
    c.send(&sent[0]);
    let a = c.answer(false).unwrap();
    assert_eq!((a.status, a.header("etag")), (200, Some("\"e\"")));
    c.send(&sent[1]);
    let a = c.answer(false).unwrap();
    assert_eq!((a.status, a.body), (200, object()));
    c.send(&sent[2]);
    let a = c.answer(true).unwrap();
    assert_eq!((a.status, a.header("content-length")), (200, Some("1000")));
    c.send(&sent[3]);
    let a = c.answer(false).unwrap();
    assert_eq!(a.body, LISTING.as_bytes());

    assert_eq!(
        up.seen(),
        sent,
        "the server got the client's bytes unchanged"
    );
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );

    assert_eq!(proxy.requests(), 4);
    assert_eq!(proxy.count("PUT", "packs/"), 1);
    assert_eq!(
        proxy.count("GET", "packs/"),
        2,
        "the ranged GET and the listing"
    );
    assert_eq!(proxy.count("LIST", ""), 1);
    assert_eq!(proxy.count("HEAD", "index/x+y"), 1, "keys are decoded");
    assert_eq!(proxy.count("", "index/"), 1);
    assert_eq!(proxy.bytes_up(), c.sent);
    assert_eq!(proxy.bytes_down(), c.received);
    let statuses: Vec<_> = proxy.log().iter().map(|e| e.status).collect();
    assert_eq!(statuses, vec![Some(200); 4]);

    proxy.reset_counters();
    assert_eq!((proxy.requests(), proxy.bytes_up()), (0, 0));
    let before = c.received;
    c.call("GET", "/b/p/packs/aa", "", b"").unwrap();
    assert_eq!(proxy.count("GET", "packs/aa"), 1);
    assert_eq!(proxy.bytes_down(), c.received - before);
}

#[test]
fn chunked_bodies_and_expect_continue_are_handled_by_the_proxy() {
    let up = Upstream::start();
    let proxy = up.proxy();
    let mut c = Client::to(&proxy);

    c.send(
        b"PUT /b/p/packs/cc HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
          Expect: 100-continue\r\n\r\n",
    );
    let interim = c.answer(false).unwrap();
    assert_eq!(interim.status, 100, "the proxy lets the body come");
    c.send(b"4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n");
    assert_eq!(c.answer(false).unwrap().status, 200);
    let seen = up.seen();
    assert_eq!(
        String::from_utf8_lossy(&seen[0]),
        "PUT /b/p/packs/cc HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\nabcdefg",
        "the server gets the body decoded, with its length"
    );

    let a = c.call("GET", "/b/p/chunked", "", b"").unwrap();
    assert_eq!(a.body, b"hello, chunked world");
    assert_eq!(a.header("transfer-encoding"), None);
    assert_eq!(proxy.bytes_down(), c.received);
}

#[test]
fn a_server_closing_an_idle_connection_is_reconnected_unseen() {
    let up = Upstream::start();
    let proxy = up.proxy();
    let mut c = Client::to(&proxy);
    // The upstream closes after answering `/idle` without saying so: the proxy finds its
    // connection dead on the next request and opens another.
    for _ in 0..3 {
        let a = c.call("GET", "/b/p/idle", "", b"").unwrap();
        assert_eq!(a.body, object());
    }
    assert_eq!(up.seen().len(), 3, "each request reached the server once");
    assert_eq!(up.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn faults_before_forwarding_never_reach_the_server() {
    let up = Upstream::start();
    let proxy = up.proxy();

    let r = proxy.add(Rule::new(Fault::DropBefore).nth(1));
    let err = once(&proxy, "PUT", "/b/p/packs/aa", b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(proxy.fired(r), 1);
    proxy.clear_rules();

    proxy.add(Rule::new(Fault::ResetBefore).nth(1));
    let err = once(&proxy, "PUT", "/b/p/packs/aa", b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    proxy.clear_rules();

    let cases = [
        (Fault::internal_error(), 500, "InternalError"),
        (Fault::service_unavailable(), 503, "ServiceUnavailable"),
        (Fault::slow_down(), 503, "SlowDown"),
        (Fault::too_many_requests(), 429, "TooManyRequests"),
        (Fault::access_denied(), 403, "AccessDenied"),
        (
            Fault::ErrorWith200 {
                code: "InternalError",
            },
            200,
            "InternalError",
        ),
    ];
    for (fault, status, code) in &cases {
        proxy.add(Rule::new(fault.clone()).nth(1));
        let mut c = Client::to(&proxy);
        let a = c.call("PUT", "/b/p/packs/aa", "", b"x").unwrap();
        assert_eq!(
            (a.status, xml_code(&a.body)),
            (*status, code.to_string()),
            "{fault:?}"
        );
        // The connection stays usable after an error answer.
        assert_eq!(
            c.call("PUT", "/b/p/packs/aa", "", b"x").unwrap().status,
            200
        );
        proxy.clear_rules();
    }
    assert_eq!(
        up.seen().len(),
        cases.len(),
        "only the retries after the error answers reached the server"
    );
    let faults: Vec<_> = proxy.log().iter().filter_map(|e| e.fault.clone()).collect();
    assert_eq!(faults.len(), 2 + cases.len());
}

#[test]
fn faults_after_forwarding_reach_the_server_first() {
    let up = Upstream::start();
    let proxy = up.proxy();
    let seen = || up.seen().len();

    proxy.add(Rule::new(Fault::DropAfter).nth(1));
    let err = once(&proxy, "PUT", "/b/p/packs/aa", b"x").unwrap_err();
    assert_eq!((err.kind(), seen()), (ErrorKind::UnexpectedEof, 1), "{err}");
    proxy.clear_rules();

    proxy.add(Rule::new(Fault::ResetAfter).nth(1));
    let err = once(&proxy, "PUT", "/b/p/packs/aa", b"x").unwrap_err();
    assert_eq!(
        (err.kind(), seen()),
        (ErrorKind::ConnectionReset, 2),
        "{err}"
    );
    proxy.clear_rules();

    proxy.add(
        Rule::new(Fault::ErrorAfter {
            status: 500,
            code: "InternalError",
        })
        .nth(1),
    );
    let a = once(&proxy, "PUT", "/b/p/packs/aa", b"x").unwrap();
    assert_eq!((a.status, seen()), (500, 3));
    proxy.clear_rules();

    // A truncated body: the announced length, fewer bytes, then the end of the stream.
    proxy.add(Rule::new(Fault::Truncate { keep: 100 }).nth(1));
    let err = once(&proxy, "GET", "/b/p/packs/aa", b"").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    proxy.clear_rules();
    proxy.add(Rule::new(Fault::Truncate { keep: 100 }).nth(1));
    let mut c = Client::to(&proxy);
    c.send(&request("GET", "/b/p/packs/aa", "", b""));
    let mut got = Vec::new();
    c.r.read_to_end(&mut got).unwrap();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..split]);
    assert!(
        head.contains(&format!("Content-Length: {OBJECT_LEN}")),
        "{head}"
    );
    assert_eq!(&got[split..], &object()[..100]);
    proxy.clear_rules();
    // Without a body (an answer to PUT), the head itself is cut.
    proxy.add(Rule::new(Fault::Truncate { keep: 0 }).method("PUT"));
    let err = once(&proxy, "PUT", "/b/p/packs/aa", b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    proxy.clear_rules();

    // A delayed answer arrives whole, no earlier than the delay.
    proxy.add(Rule::new(Fault::Delay { ms: 300 }).nth(1));
    let t = Instant::now();
    let a = once(&proxy, "GET", "/b/p/packs/aa", b"").unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.body, object());
    proxy.clear_rules();

    // One corrupted byte, where asked.
    proxy.add(Rule::new(Fault::CorruptByte { at: OBJECT_LEN + 5 }).nth(1));
    let a = once(&proxy, "GET", "/b/p/packs/aa", b"").unwrap();
    let diff: Vec<usize> = (0..OBJECT_LEN)
        .filter(|&i| a.body[i] != object()[i])
        .collect();
    assert_eq!(diff, vec![5]);
    assert_eq!(a.body[5], !object()[5]);
    proxy.clear_rules();

    // A listing with an entry left out still looks complete.
    proxy.add(Rule::new(Fault::omit_listed("/bb")).method("LIST"));
    let a = once(&proxy, "GET", "/b?list-type=2&prefix=p%2Fpacks%2F", b"").unwrap();
    let body = String::from_utf8(a.body).unwrap();
    assert!(!body.contains("p/packs/bb"), "{body}");
    assert!(body.contains("<Key>p/packs/aa</Key>") && body.contains("<Key>p/packs/cc</Key>"));
    assert!(body.contains("<KeyCount>2</KeyCount>"), "{body}");
    assert!(body.contains("<IsTruncated>false</IsTruncated>"));
}

#[test]
fn rules_pick_the_nth_every_kth_first_and_seeded_requests() {
    let up = Upstream::start();
    let proxy = up.proxy();

    let failed = |n: usize| -> Vec<usize> {
        (1..=n)
            .filter(|_| {
                // A GET between PUTs matches no PUT rule and counts for none.
                once(&proxy, "GET", "/b/p/packs/aa", b"").unwrap();
                put(&proxy, "packs/aa") != 200
            })
            .collect::<Vec<_>>()
    };
    let nth = proxy.add(Rule::new(Fault::internal_error()).method("PUT").nth(2));
    assert_eq!(failed(5), vec![2]);
    assert_eq!((proxy.matched(nth), proxy.fired(nth)), (5, 1));
    proxy.clear_rules();

    proxy.add(Rule::new(Fault::slow_down()).method("PUT").every(3));
    let f = failed(9);
    proxy.clear_rules();
    assert_eq!(f, vec![3, 6, 9]);

    proxy.add(Rule::new(Fault::too_many_requests()).method("PUT").first(2));
    let f = failed(4);
    proxy.clear_rules();
    assert_eq!(f, vec![1, 2]);

    // A seeded chance fires on the same requests each time, on some and not all.
    let pattern = |seed: u64| {
        let p = up.proxy();
        p.add(Rule::new(Fault::internal_error()).chance(0.3, seed));
        (1..=60)
            .filter(|_| put(&p, "packs/aa") != 200)
            .collect::<Vec<_>>()
    };
    let a = pattern(7);
    assert_eq!(a, pattern(7));
    assert!(!a.is_empty() && a.len() < 60, "{a:?}");
    assert_ne!(a, pattern(8));

    // The first rule that fires applies; later rules still count the request.
    let first = proxy.add(Rule::new(Fault::access_denied()).method("PUT").nth(1));
    let second = proxy.add(Rule::new(Fault::internal_error()).method("PUT"));
    assert_eq!(put(&proxy, "packs/aa"), 403);
    assert_eq!(put(&proxy, "packs/aa"), 500);
    assert_eq!((proxy.fired(first), proxy.matched(second)), (1, 2));
}

#[test]
fn rules_match_by_key_header_and_query() {
    let up = Upstream::start();
    let proxy = up.proxy();

    proxy.add(
        Rule::new(Fault::internal_error())
            .method("PUT")
            .key_prefix("packs/"),
    );
    assert_eq!(put(&proxy, "packs/ab/aa"), 500);
    assert_eq!(
        put(&proxy, "index/packs/aa"),
        200,
        "a prefix, not a substring"
    );
    assert_eq!(put(&proxy, "snapshots/aa"), 200);
    proxy.clear_rules();

    proxy.add(Rule::new(Fault::internal_error()).key_contains("/ab/"));
    assert_eq!(put(&proxy, "packs/ab/aa"), 500);
    assert_eq!(put(&proxy, "packs/cd/aa"), 200);
    proxy.clear_rules();

    proxy.add(Rule::new(Fault::slow_down()).method("GET").header("Range"));
    let mut c = Client::to(&proxy);
    let a = c
        .call("GET", "/b/p/packs/aa", "range: bytes=1-2\r\n", b"")
        .unwrap();
    assert_eq!(a.status, 503);
    assert_eq!(c.call("GET", "/b/p/packs/aa", "", b"").unwrap().status, 200);
    proxy.clear_rules();

    proxy.add(Rule::new(Fault::internal_error()).method("LIST"));
    assert_eq!(
        once(&proxy, "GET", "/b?list-type=2&prefix=p%2Fpacks%2F", b"")
            .unwrap()
            .status,
        500
    );
    assert_eq!(
        once(&proxy, "GET", "/b/p/packs/aa", b"").unwrap().status,
        200
    );
    proxy.clear_rules();

    proxy.add(Rule::new(Fault::internal_error()).query_contains("uploads"));
    assert_eq!(
        once(&proxy, "POST", "/b/p/packs/aa?uploads", b"")
            .unwrap()
            .status,
        500
    );
    assert_eq!(
        once(&proxy, "POST", "/b/p/packs/aa", b"").unwrap().status,
        204
    );
}

#[test]
fn a_dead_server_closes_the_clients_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = listener.local_addr().unwrap();
    drop(listener);
    let proxy = FaultProxy::start(gone, ROOT);
    let err = once(&proxy, "GET", "/b/p/packs/aa", b"").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(proxy.log()[0].status, None, "no answer was given");
}
