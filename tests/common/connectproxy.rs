//! A forward HTTP proxy on loopback, as a user's network has one: it takes `CONNECT
//! host:port` (what jellysnap's client sends for every request through a proxy), may ask
//! for a user and password (407 without them), and counts what it carried: the tunnels,
//! and the HTTP requests inside each tunnel to a plain-HTTP server (parsed by their
//! `Content-Length`; a TLS tunnel is relayed as bytes). It connects only to 127.0.0.1.
//!
//! Only std and base64: plain threads, one per direction of each tunnel.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use base64::Engine as _;

#[derive(Default)]
struct Counts {
    tunnels: AtomicUsize,
    requests: AtomicUsize,
    refused: AtomicUsize,
}

pub struct ConnectProxy {
    port: u16,
    counts: Arc<Counts>,
}

impl ConnectProxy {
    /// A proxy on a free port of 127.0.0.1; with `user_password` (`user:password`) it
    /// answers 407 to a CONNECT without those credentials.
    pub fn start(user_password: Option<&str>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let expected = user_password.map(|up| {
            format!(
                "basic {}",
                base64::engine::general_purpose::STANDARD.encode(up)
            )
        });
        let c = counts.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let c = c.clone();
                let expected = expected.clone();
                thread::spawn(move || {
                    let _ = serve(conn, &c, expected.as_deref());
                });
            }
        });
        ConnectProxy { port, counts }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://[user_password@]127.0.0.1:PORT`.
    pub fn url(&self, user_password: Option<&str>) -> String {
        match user_password {
            Some(up) => format!("http://{up}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// Tunnels opened.
    pub fn tunnels(&self) -> usize {
        self.counts.tunnels.load(Ordering::SeqCst)
    }

    /// HTTP requests carried through tunnels to plain-HTTP servers.
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// CONNECTs refused for want of the right credentials.
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }
}

/// The head of an HTTP message: its lines up to the blank one, with their line ends.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve(client: TcpStream, counts: &Counts, expected: Option<&str>) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !method.eq_ignore_ascii_case("CONNECT") {
        client_w.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    if let Some(want) = expected {
        // The scheme is case-insensitive; the credentials are not.
        let ok = header(&head, "proxy-authorization").is_some_and(|v| {
            v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") && v[6..].trim() == &want[6..]
        });
        if !ok {
            counts.refused.fetch_add(1, Ordering::SeqCst);
            client_w.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
    }
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    if host != "127.0.0.1" && host != "localhost" {
        client_w.write_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let port = target
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(80);
    let upstream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(u) => u,
        Err(_) => {
            client_w.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
    };
    client_w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    counts.tunnels.fetch_add(1, Ordering::SeqCst);
    // Server to client: bytes as they come.
    let mut up_r = upstream.try_clone()?;
    let mut down_w = client_w.try_clone()?;
    let back = thread::spawn(move || {
        let _ = io::copy(&mut up_r, &mut down_w);
        let _ = down_w.shutdown(Shutdown::Write);
    });
    let mut up_w = upstream;
    let tls = reader.fill_buf()?.first() == Some(&0x16);
    if tls {
        let _ = io::copy(&mut reader, &mut up_w);
    } else {
        // Client to server: request by request.
        while let Some(head) = read_head(&mut reader)? {
            counts.requests.fetch_add(1, Ordering::SeqCst);
            up_w.write_all(head.as_bytes())?;
            if header(&head, "transfer-encoding").is_some() {
                // Not what jellysnap sends: relay the rest as bytes.
                let _ = io::copy(&mut reader, &mut up_w);
                break;
            }
            let len: u64 = header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            io::copy(&mut (&mut reader).take(len), &mut up_w)?;
        }
    }
    let _ = up_w.shutdown(Shutdown::Write);
    let _ = back.join();
    Ok(())
}
