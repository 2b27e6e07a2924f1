//! Deterministic generator of Jellyfin-shaped data directories, for tests and benchmarks.
//!
//! Self-contained on purpose (std + rusqlite, rayon, blake3, filetime only; no `crate::`
//! imports) so that integration tests (`mod common;` / `#[path]`), examples
//! (`examples/gen_dataset.rs`) and benches can all include it with `#[path = ...] mod`.
//!
//! Invariants:
//! - Everything (paths, file contents, database rows, mtimes) is a pure function of the
//!   [`FixtureSpec`] (and of the seed given to [`day_of_changes`] plus the tree it is
//!   applied to). No wall-clock time, no `rand`.
//! - After [`generate`], every file and directory under `root` has an mtime of
//!   [`BASE_MTIME`] + i seconds (i = position in a sorted depth-first walk), i.e. in the
//!   past, distinct, and trustworthy for an incremental backup.
//! - [`day_of_changes`] gives every path it creates or modifies (and every directory whose
//!   listing it changes) an mtime on the next "day" after the newest file mtime this
//!   module set in the tree (see [`newest_mtime`]), so changed files always differ in
//!   mtime from before and stay in the past.
//! - `jellyfin.db` is a real SQLite database in WAL mode with 4 KiB pages, closed cleanly:
//!   no `-wal`/`-shm` file is left next to it.
//!
//! Layout per install kind (paths relative to `root`), see docs/ARCHITECTURE.md, "Jellyfin's data dir":
//!
//! | layout      | data_dir           | config_dir       | cache_dir              | log_dir              |
//! |-------------|--------------------|------------------|------------------------|----------------------|
//! | Docker      | `config`           | `config/config`  | `cache`                | `config/log`         |
//! | Debian      | `var/lib/jellyfin` | `etc/jellyfin`   | `var/cache/jellyfin`   | `var/log/jellyfin`   |
//! | LinuxServer | `config/data`      | `config`         | `config/cache`         | `config/log`         |
//!
//! Under `data_dir`: `data/` (DataPath: jellyfin.db, trickplay, subtitles, ...),
//! `metadata/`, `plugins/`, `root/` (library definitions), `transcodes/` (never state).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use rayon::prelude::*;

/// 2026-01-01T00:00:00Z: the mtime of the first path of a generated tree.
pub const BASE_MTIME: i64 = 1_767_225_600;
/// The newest Jellyfin server version recorded in `__EFMigrationsHistory` by [`generate`].
pub const SERVER_VERSION: &str = "10.11.3";
/// The same version as Jellyfin's code migrations write it (4-part `ProductVersion`).
pub const SERVER_PRODUCT_VERSION: &str = "10.11.3.0";
const DAY: i64 = 86_400;

/// Which installation flavour to mimic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Official `jellyfin/jellyfin` image: data `/config`, config `/config/config`, cache `/cache`.
    Docker,
    /// Debian/Ubuntu package: data `/var/lib/jellyfin`, config `/etc/jellyfin`.
    Debian,
    /// `linuxserver/jellyfin` image: data `/config/data`, config `/config`.
    LinuxServer,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Docker, Layout::Debian, Layout::LinuxServer];

    /// Parses `docker`, `debian` or `linuxserver` (also `lsio`), case-insensitively.
    pub fn parse(s: &str) -> Option<Layout> {
        match s.to_ascii_lowercase().as_str() {
            "docker" | "official" => Some(Layout::Docker),
            "debian" | "deb" | "ubuntu" => Some(Layout::Debian),
            "linuxserver" | "lsio" | "linuxserver.io" => Some(Layout::LinuxServer),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Docker => "docker",
            Layout::Debian => "debian",
            Layout::LinuxServer => "linuxserver",
        }
    }
}

/// What to generate. Sizes are means: each file's size varies in `[0.5, 1.5) x` the mean.
#[derive(Clone, Debug)]
pub struct FixtureSpec {
    pub layout: Layout,
    /// Media items (movies): each gets trickplay sheets, metadata images and a DB row.
    pub items: usize,
    pub trickplay_sheets_per_item: usize,
    pub sheet_bytes: usize,
    /// `poster.jpg`, `backdrop.jpg`, then `chapters/<n>.jpg` for the rest.
    pub metadata_images_per_item: usize,
    pub image_bytes: usize,
    /// Rows in `BaseItems` (the first `items` rows are the media items above).
    pub db_rows: usize,
    pub seed: u64,
}

impl FixtureSpec {
    /// A few hundred KB in total; generates in well under a second.
    pub fn small(layout: Layout) -> Self {
        FixtureSpec {
            layout,
            items: 6,
            trickplay_sheets_per_item: 2,
            sheet_bytes: 12 * 1024,
            metadata_images_per_item: 4,
            image_bytes: 6 * 1024,
            db_rows: 200,
            seed: 42,
        }
    }
}

/// Where a generated (or existing) layout lives. Built by [`generate`] or [`Fixture::at`].
#[derive(Clone, Debug)]
pub struct Fixture {
    /// The prefix directory everything was generated under.
    pub root: PathBuf,
    /// Jellyfin's ProgramData (`--datadir`).
    pub data_dir: PathBuf,
    /// Where `system.xml` lives (`--configdir`).
    pub config_dir: PathBuf,
    /// `data_dir/metadata`.
    pub metadata_dir: PathBuf,
    /// `data_dir/data/jellyfin.db`.
    pub db_path: PathBuf,
    /// `--cachedir` (never part of a snapshot).
    pub cache_dir: PathBuf,
    /// `--logdir` (never part of a snapshot).
    pub log_dir: PathBuf,
    pub layout: Layout,
}

impl Fixture {
    /// The paths of `layout` under `root`; touches nothing on disk.
    pub fn at(root: &Path, layout: Layout) -> Fixture {
        let root = root.to_path_buf();
        let (data_dir, config_dir, cache_dir, log_dir) = match layout {
            Layout::Docker => (
                root.join("config"),
                root.join("config/config"),
                root.join("cache"),
                root.join("config/log"),
            ),
            Layout::Debian => (
                root.join("var/lib/jellyfin"),
                root.join("etc/jellyfin"),
                root.join("var/cache/jellyfin"),
                root.join("var/log/jellyfin"),
            ),
            Layout::LinuxServer => (
                root.join("config/data"),
                root.join("config"),
                root.join("config/cache"),
                root.join("config/log"),
            ),
        };
        Fixture {
            metadata_dir: data_dir.join("metadata"),
            db_path: data_dir.join("data/jellyfin.db"),
            root,
            data_dir,
            config_dir,
            cache_dir,
            log_dir,
            layout,
        }
    }

    /// DataPath (`data_dir/data`): jellyfin.db, trickplay, subtitles, collections, ...
    pub fn data_path(&self) -> PathBuf {
        self.data_dir.join("data")
    }
}

/// What [`day_of_changes`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeReport {
    pub files_modified: usize,
    pub files_added: usize,
    pub files_deleted: usize,
    pub items_added: usize,
    pub items_deleted: usize,
    pub db_rows_changed: usize,
    /// The mtime (seconds) given to the first changed path; later ones get +1 s each.
    pub mtime_base: i64,
}

// ---------------------------------------------------------------------------------------
// Deterministic randomness

/// splitmix64: tiny, fast, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream for `(seed, salt)`.
    pub fn derive(seed: u64, salt: u64) -> Rng {
        let mut r = Rng(seed ^ salt.wrapping_mul(0xD134_2543_DE82_EF95));
        r.next_u64();
        Rng(r.next_u64() ^ salt)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    /// A size in `[mean/2, mean*3/2)`, at least `min`.
    pub fn around(&mut self, mean: usize, min: usize) -> usize {
        let half = (mean / 2) as u64;
        (half + self.below(mean as u64 + 1)).max(min as u64) as usize
    }

    pub fn guid(&mut self) -> Guid {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        Guid(b)
    }

    pub fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A GUID as Jellyfin prints it: `n()` for directory names, `upper_d()` as EF Core stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// 32 lowercase hex digits (`ToString("N")`), used for trickplay/metadata directories.
    pub fn n(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`, as EF Core stores a Guid in SQLite.
    pub fn upper_d(&self) -> String {
        let n = self.n().to_ascii_uppercase();
        format!(
            "{}-{}-{}-{}-{}",
            &n[0..8],
            &n[8..12],
            &n[12..16],
            &n[16..20],
            &n[20..32]
        )
    }

    /// Lowercase `D` format, as used in config/users and ScheduledTasks names.
    pub fn d(&self) -> String {
        self.upper_d().to_ascii_lowercase()
    }

    /// Parses the `N` format.
    pub fn parse_n(s: &str) -> Option<Guid> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Guid(b))
    }

    /// The two-character shard directory (`<xx>` in `trickplay/<xx>/<guid>`).
    pub fn shard(&self) -> String {
        format!("{:02x}", self.0[0])
    }
}

/// The GUID of media item `i` of a fixture generated with `seed`.
pub fn item_guid(seed: u64, i: usize) -> Guid {
    Rng::derive(seed, 0x1000_0000 + i as u64).guid()
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "and",
    "in",
    "night",
    "river",
    "city",
    "last",
    "summer",
    "secret",
    "journey",
    "house",
    "king",
    "shadow",
    "light",
    "family",
    "war",
    "love",
    "story",
    "detective",
    "young",
    "old",
    "stranger",
    "island",
    "winter",
    "returns",
    "lost",
    "mountain",
    "dream",
    "friends",
    "revenge",
    "ocean",
    "star",
    "world",
    "garden",
    "train",
    "letter",
    "music",
    "dark",
    "golden",
    "silent",
    "road",
    "home",
    "after",
    "before",
    "with",
    "their",
    "who",
    "must",
    "finds",
    "discovers",
    "between",
    "against",
    "across",
    "when",
    "an",
    "to",
    "is",
    "his",
    "her",
    "by",
    "from",
    "unexpected",
];
const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Elena", "Frank", "Grace", "Hugo", "Iris", "Jonas", "Karin",
    "Liam", "Maya", "Noah", "Olga", "Paul",
];
const LAST_NAMES: &[&str] = &[
    "Adams", "Berg", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
    "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov",
];
const GENRES: &[&str] = &[
    "Action",
    "Comedy",
    "Drama",
    "Documentary",
    "Science Fiction",
];
const STUDIOS: &[&str] = &["Northwind Pictures", "Blue Harbor Films", "Lantern Studio"];

fn words(rng: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 7);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s
}

fn title(rng: &mut Rng) -> String {
    let n = 1 + rng.below(3) as usize;
    let mut t = String::new();
    for i in 0..n {
        if i > 0 {
            t.push(' ');
        }
        let w = rng.pick(&WORDS[5..]);
        let mut c = w.chars();
        if let Some(f) = c.next() {
            t.extend(f.to_uppercase());
            t.push_str(c.as_str());
        }
    }
    t
}

fn person(rng: &mut Rng) -> String {
    format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES))
}

/// Incompressible bytes that look like a JPEG (`FF D8 FF E0` JFIF header, `FF D9` end).
pub fn jpeg_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    const HEAD: [u8; 20] = [
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x00,
    ];
    let len = len.max(HEAD.len() + 2);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v[..HEAD.len()].copy_from_slice(&HEAD);
    v[len - 2] = 0xFF;
    v[len - 1] = 0xD9;
    v
}

fn png_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    const HEAD: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut v = vec![0u8; len.max(16)];
    rng.fill(&mut v);
    v[..8].copy_from_slice(&HEAD);
    v
}

/// Random bytes after a fixed magic.
fn magic_bytes(rng: &mut Rng, magic: &[u8], len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(magic.len())];
    rng.fill(&mut v);
    v[..magic.len()].copy_from_slice(magic);
    v
}

/// Semi-compressible binary (like a .NET assembly): magic, then runs of repeated bytes.
fn dll_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00");
    while v.len() < len {
        let run = 1 + rng.below(24) as usize;
        if rng.percent(50) {
            let b = (rng.next_u64() & 0xff) as u8;
            v.extend(std::iter::repeat_n(b, run));
        } else {
            v.extend_from_slice(rng.pick(WORDS).as_bytes());
        }
    }
    v.truncate(len);
    v
}

fn io_err<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, bytes)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of unix seconds `t`; proleptic Gregorian, no chrono needed.
pub fn utc_datetime(t: i64) -> String {
    let days = t.div_euclid(DAY);
    let secs = t.rem_euclid(DAY);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// As EF Core writes DateTime to SQLite: `2026-01-01 00:00:00.0000000`.
fn ef_date(t: i64) -> String {
    format!("{}.0000000", utc_datetime(t))
}

// ---------------------------------------------------------------------------------------
// generate

/// Generates a complete Jellyfin-shaped tree under `root` (created if missing) and sets all
/// mtimes (see the module docs). Fails with `AlreadyExists` if the database already exists.
pub fn generate(root: &Path, spec: &FixtureSpec) -> io::Result<Fixture> {
    let fx = Fixture::at(root, spec.layout);
    if fx.db_path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; generate into an empty directory",
                fx.db_path.display()
            ),
        ));
    }
    fs::create_dir_all(&fx.root)?;
    let users: Vec<(Guid, String)> = {
        let mut rng = Rng::derive(spec.seed, 1);
        ["admin", "alice", "kids"]
            .iter()
            .map(|n| (rng.guid(), (*n).to_string()))
            .collect()
    };
    write_config(&fx, spec, &users)?;
    write_data_misc(&fx, spec)?;
    (0..spec.items)
        .into_par_iter()
        .try_for_each(|i| write_item(&fx, spec, i))?;
    write_by_name_metadata(&fx, spec)?;
    write_db(&fx, spec, &users)?;
    write_excluded(&fx, spec)?;
    set_tree_mtimes(&fx.root, BASE_MTIME)?;
    Ok(fx)
}

fn write_config(fx: &Fixture, spec: &FixtureSpec, users: &[(Guid, String)]) -> io::Result<()> {
    let c = &fx.config_dir;
    let mut rng = Rng::derive(spec.seed, 2);
    let server_name = format!("jellyfin-{}", spec.layout.name());
    write(
        &c.join("system.xml"),
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<ServerConfiguration xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <LogFileRetentionDays>3</LogFileRetentionDays>
  <IsStartupWizardCompleted>true</IsStartupWizardCompleted>
  <CachePath />
  <PreviousVersion />
  <PreviousVersionStr>{SERVER_PRODUCT_VERSION}</PreviousVersionStr>
  <EnableMetrics>false</EnableMetrics>
  <EnableNormalizedItemByNameIds>true</EnableNormalizedItemByNameIds>
  <IsPortAuthorized>true</IsPortAuthorized>
  <QuickConnectAvailable>true</QuickConnectAvailable>
  <EnableCaseSensitiveItemIds>true</EnableCaseSensitiveItemIds>
  <DisableLiveTvChannelUserDataName>true</DisableLiveTvChannelUserDataName>
  <MetadataPath />
  <PreferredMetadataLanguage>en</PreferredMetadataLanguage>
  <MetadataCountryCode>US</MetadataCountryCode>
  <SortReplaceCharacters>
    <string>.</string>
    <string>+</string>
    <string>%</string>
  </SortReplaceCharacters>
  <SortRemoveWords>
    <string>the</string>
    <string>a</string>
    <string>an</string>
  </SortRemoveWords>
  <MinResumePct>5</MinResumePct>
  <MaxResumePct>90</MaxResumePct>
  <MinResumeDurationSeconds>300</MinResumeDurationSeconds>
  <LibraryMonitorDelay>60</LibraryMonitorDelay>
  <LibraryUpdateDuration>30</LibraryUpdateDuration>
  <ImageSavingConvention>Legacy</ImageSavingConvention>
  <ServerName>{server_name}</ServerName>
  <UICulture>en-US</UICulture>
  <SaveMetadataHidden>false</SaveMetadataHidden>
  <ActivityLogRetentionDays>30</ActivityLogRetentionDays>
  <LibraryScanFanoutConcurrency>0</LibraryScanFanoutConcurrency>
  <LibraryMetadataRefreshConcurrency>0</LibraryMetadataRefreshConcurrency>
  <AllowClientLogUpload>true</AllowClientLogUpload>
  <TrickplayOptions>
    <EnableHwAcceleration>false</EnableHwAcceleration>
    <Interval>10000</Interval>
    <WidthResolutions>
      <int>320</int>
    </WidthResolutions>
    <TileWidth>10</TileWidth>
    <TileHeight>10</TileHeight>
    <Qscale>4</Qscale>
    <JpegQuality>90</JpegQuality>
  </TrickplayOptions>
</ServerConfiguration>
"#
        )
        .as_bytes(),
    )?;
    write(
        &c.join("network.xml"),
        br#"<?xml version="1.0" encoding="utf-8"?>
<NetworkConfiguration xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <BaseUrl />
  <EnableHttps>false</EnableHttps>
  <RequireHttps>false</RequireHttps>
  <InternalHttpPort>8096</InternalHttpPort>
  <InternalHttpsPort>8920</InternalHttpsPort>
  <PublicHttpPort>8096</PublicHttpPort>
  <PublicHttpsPort>8920</PublicHttpsPort>
  <AutoDiscovery>true</AutoDiscovery>
  <EnableUPnP>false</EnableUPnP>
  <EnableIPv4>true</EnableIPv4>
  <EnableIPv6>false</EnableIPv6>
  <EnableRemoteAccess>true</EnableRemoteAccess>
  <LocalNetworkSubnets />
  <KnownProxies />
</NetworkConfiguration>
"#,
    )?;
    let transcode_dir = match fx.layout {
        Layout::Docker => "/config/transcodes",
        Layout::Debian => "/var/lib/jellyfin/transcodes",
        Layout::LinuxServer => "/config/data/transcodes",
    };
    write(
        &c.join("encoding.xml"),
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<EncodingOptions xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <EncodingThreadCount>-1</EncodingThreadCount>
  <TranscodingTempPath>{transcode_dir}</TranscodingTempPath>
  <FallbackFontPath />
  <EnableFallbackFont>false</EnableFallbackFont>
  <DownMixAudioBoost>2</DownMixAudioBoost>
  <EncoderAppPathDisplay>/usr/lib/jellyfin-ffmpeg/ffmpeg</EncoderAppPathDisplay>
  <HardwareAccelerationType>none</HardwareAccelerationType>
  <EnableThrottling>false</EnableThrottling>
  <ThrottleDelaySeconds>180</ThrottleDelaySeconds>
  <EnableTonemapping>false</EnableTonemapping>
  <H264Crf>23</H264Crf>
  <H265Crf>28</H265Crf>
</EncodingOptions>
"#
        )
        .as_bytes(),
    )?;
    write(
        &c.join("logging.default.json"),
        br#"{
    "Serilog": {
        "MinimumLevel": {
            "Default": "Information",
            "Override": {
                "Microsoft": "Warning",
                "System": "Warning"
            }
        },
        "WriteTo": [
            {
                "Name": "Console",
                "Args": {
                    "outputTemplate": "[{Timestamp:HH:mm:ss}] [{Level:u3}] [{ThreadId}] {SourceContext}: {Message:lj}{NewLine}{Exception}"
                }
            },
            {
                "Name": "Async",
                "Args": {
                    "configure": [
                        {
                            "Name": "File",
                            "Args": {
                                "path": "%JELLYFIN_LOG_DIR%//log_.log",
                                "rollingInterval": "Day",
                                "retainedFileCountLimit": 3
                            }
                        }
                    ]
                }
            }
        ]
    }
}
"#,
    )?;
    write(
        &c.join("branding.xml"),
        br#"<?xml version="1.0" encoding="utf-8"?>
<BrandingOptions xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <LoginDisclaimer />
  <CustomCss />
  <SplashscreenEnabled>true</SplashscreenEnabled>
</BrandingOptions>
"#,
    )?;
    write(
        &c.join("migrations.xml"),
        br#"<?xml version="1.0" encoding="utf-8"?>
<MigrationOptions xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Applied />
</MigrationOptions>
"#,
    )?;
    for (guid, name) in users {
        write(
            &c.join("users").join(guid.d()).join("displaypreferences.xml"),
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<DisplayPreferences>\n  <User>{name}</User>\n  <SortBy>SortName</SortBy>\n  <ShowBackdrop>true</ShowBackdrop>\n</DisplayPreferences>\n"
            )
            .as_bytes(),
        )?;
    }
    for task in ["RefreshLibrary", "CleanCache", "TrickplayImages"] {
        let id = rng.guid();
        write(
            &c.join("ScheduledTasks").join(format!("{}.js", id.n())),
            format!(
                "[{{\"Type\":\"IntervalTrigger\",\"IntervalTicks\":{},\"Name\":\"{task}\"}}]",
                (1 + rng.below(24)) * 36_000_000_000
            )
            .as_bytes(),
        )?;
    }
    if fx.layout == Layout::LinuxServer {
        write(&c.join(".jellyfin-config"), b"")?;
    }
    Ok(())
}

fn write_data_misc(fx: &Fixture, spec: &FixtureSpec) -> io::Result<()> {
    let mut rng = Rng::derive(spec.seed, 3);
    let d = fx.data_path();
    write(&fx.data_dir.join(".jellyfin-data"), b"")?;
    write(&d.join(".jellyfin-data"), b"")?;
    write(&d.join("device.txt"), rng.guid().n().as_bytes())?;
    let splash_len = 2048.min(spec.image_bytes.max(64));
    write(
        &d.join("splashscreen.png"),
        &png_bytes(&mut rng, splash_len),
    )?;
    // Collections and playlists reference the first media items.
    let n_coll = 1 + (spec.items / 8).min(40);
    for c in 0..n_coll {
        let name = title(&mut rng);
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>\n<Item>\n  <LocalTitle>{name}</LocalTitle>\n  <DisplayOrder>PremiereDate</DisplayOrder>\n  <CollectionItems>\n"
        );
        for i in (c..spec.items).step_by(n_coll).take(6) {
            xml.push_str(&format!(
                "    <CollectionItem>\n      <Path>/media/movies/{}</Path>\n    </CollectionItem>\n",
                item_guid(spec.seed, i).n()
            ));
        }
        xml.push_str("  </CollectionItems>\n</Item>\n");
        write(
            &d.join("collections")
                .join(format!("{name} {c} [boxset]"))
                .join("collection.xml"),
            xml.as_bytes(),
        )?;
    }
    let playlist = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>\n<Item>\n  <Added>01/01/2026 00:00:00</Added>\n  <LockData>false</LockData>\n  <LocalTitle>Weekend</LocalTitle>\n  <OwnerUserId>{}</OwnerUserId>\n  <PlaylistItems />\n  <Shares />\n  <PlaylistMediaType>Video</PlaylistMediaType>\n</Item>\n",
        rng.guid().n()
    );
    write(
        &d.join("playlists/Weekend/playlist.xml"),
        playlist.as_bytes(),
    )?;
    write(
        &d.join("ScheduledTasks").join(format!("{}.js", rng.guid().n())),
        br#"{"StartTimeUtc":"2025-12-31T03:00:00.0000000Z","EndTimeUtc":"2025-12-31T03:02:11.0000000Z","Status":"Completed","Name":"Scan Media Library","Key":"RefreshLibrary","Id":"7738148ffcd07979c7ceb148e06b3aed"}"#,
    )?;
    let mut listings = String::from("[\n");
    for ch in 0..4 {
        listings.push_str(&format!(
            "  {{\"Id\":\"{}\",\"Type\":\"xmltv\",\"Path\":\"/media/epg/guide{ch}.xml\",\"EnableAllTuners\":true}}{}\n",
            rng.guid().n(),
            if ch == 3 { "" } else { "," }
        ));
    }
    listings.push_str("]\n");
    write(&d.join("livetv/listings.json"), listings.as_bytes())?;
    write(
        &d.join("livetv/tunerhosts.json"),
        br#"[{"Id":"6f2b0c1a","Url":"http://192.168.1.50:5004","Type":"hdhomerun","FriendlyName":"HDHomeRun"}]"#,
    )?;
    // Plugins: always part of a snapshot.
    let plugin_dir = fx.data_dir.join("plugins/SomePlugin_1.0.0.0");
    let dll_len = (8 * 1024).min(spec.image_bytes.max(1024) * 2);
    write(
        &plugin_dir.join("plugin.dll"),
        &dll_bytes(&mut rng, dll_len),
    )?;
    write(
        &plugin_dir.join("meta.json"),
        format!(
            "{{\n  \"category\": \"General\",\n  \"changelog\": \"First release.\",\n  \"description\": \"Does something useful.\",\n  \"guid\": \"{}\",\n  \"name\": \"SomePlugin\",\n  \"overview\": \"An example plugin\",\n  \"owner\": \"jellysnap\",\n  \"targetAbi\": \"10.11.0.0\",\n  \"timestamp\": \"2025-11-01T00:00:00Z\",\n  \"version\": \"1.0.0.0\",\n  \"status\": \"Active\",\n  \"autoUpdate\": true,\n  \"assemblies\": []\n}}\n",
            rng.guid().d()
        )
        .as_bytes(),
    )?;
    write(
        &fx.data_dir.join("plugins/configurations/SomePlugin.xml"),
        b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<PluginConfiguration xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  <Enabled>true</Enabled>\n  <ApiKey>0123456789abcdef</ApiKey>\n</PluginConfiguration>\n",
    )?;
    // Library definitions.
    for (lib, kind, path) in [
        ("Movies", "movies", "/media/movies"),
        ("Shows", "tvshows", "/media/tv"),
    ] {
        let dir = fx.data_dir.join("root/default").join(lib);
        write(
            &dir.join("options.xml"),
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<LibraryOptions xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  <Enabled>true</Enabled>\n  <EnablePhotos>true</EnablePhotos>\n  <EnableRealtimeMonitor>true</EnableRealtimeMonitor>\n  <EnableTrickplayImageExtraction>true</EnableTrickplayImageExtraction>\n  <SaveTrickplayWithMedia>false</SaveTrickplayWithMedia>\n  <EnableChapterImageExtraction>true</EnableChapterImageExtraction>\n  <PreferredMetadataLanguage>en</PreferredMetadataLanguage>\n  <ContentType>{kind}</ContentType>\n  <PathInfos>\n    <MediaPathInfo>\n      <Path>{path}</Path>\n    </MediaPathInfo>\n  </PathInfos>\n  <SaveLocalMetadata>false</SaveLocalMetadata>\n  <AutomaticRefreshIntervalDays>0</AutomaticRefreshIntervalDays>\n</LibraryOptions>\n"
            )
            .as_bytes(),
        )?;
        write(&dir.join(format!("{kind}.mblink")), path.as_bytes())?;
    }
    Ok(())
}

fn item_name(seed: u64, i: usize) -> String {
    let mut rng = Rng::derive(seed, 0x2000_0000 + i as u64);
    format!("{} ({})", title(&mut rng), 1950 + rng.below(76))
}

/// Trickplay sheets, metadata images, subtitles and attachments of media item `i`.
fn write_item(fx: &Fixture, spec: &FixtureSpec, i: usize) -> io::Result<()> {
    let guid = item_guid(spec.seed, i);
    let mut rng = Rng::derive(spec.seed, 0x3000_0000 + i as u64);
    write_item_files(fx, &guid, &mut rng, spec, i, None).map(|_| ())
}

/// Writes the files of one media item and returns how many. With `track`, records every
/// written file, every directory it creates and the existing directory each is created in.
fn write_item_files(
    fx: &Fixture,
    guid: &Guid,
    rng: &mut Rng,
    spec: &FixtureSpec,
    i: usize,
    mut track: Option<&mut BTreeSet<PathBuf>>,
) -> io::Result<usize> {
    let mut count = 0usize;
    let mut put = |p: PathBuf, bytes: &[u8]| -> io::Result<()> {
        if let Some(t) = track.as_deref_mut() {
            let mut a = p.parent();
            while let Some(dir) = a {
                t.insert(dir.to_path_buf());
                if dir.exists() {
                    break;
                }
                a = dir.parent();
            }
        }
        write(&p, bytes)?;
        if let Some(t) = track.as_deref_mut() {
            t.insert(p);
        }
        count += 1;
        Ok(())
    };
    let n = guid.n();
    let tp = fx
        .data_path()
        .join("trickplay")
        .join(guid.shard())
        .join(&n)
        .join("320 - 10x10");
    for s in 0..spec.trickplay_sheets_per_item {
        let len = rng.around(spec.sheet_bytes, 64);
        put(tp.join(format!("{s}.jpg")), &jpeg_bytes(rng, len))?;
    }
    let md = fx.metadata_dir.join("library").join(guid.shard()).join(&n);
    for m in 0..spec.metadata_images_per_item {
        let len = rng.around(spec.image_bytes, 64);
        let name = match m {
            0 => PathBuf::from("poster.jpg"),
            1 => PathBuf::from("backdrop.jpg"),
            k => PathBuf::from("chapters").join(format!("{}.jpg", (k as u64 - 1) * 3_000_000_000)),
        };
        put(md.join(name), &jpeg_bytes(rng, len))?;
    }
    if i & 1 == 0 {
        let mut srt = String::new();
        for cue in 1..=(20 + rng.below(40)) {
            let t = cue * 4;
            srt.push_str(&format!(
                "{cue}\n00:{:02}:{:02},000 --> 00:{:02}:{:02},500\n{}\n\n",
                t / 60 % 60,
                t % 60,
                (t + 3) / 60 % 60,
                (t + 3) % 60,
                {
                    let n = 4 + rng.below(8) as usize;
                    words(rng, n)
                }
            ));
        }
        let mut key = [0u8; 8];
        key.copy_from_slice(&guid.0[..8]);
        let sub = Rng::derive(u64::from_le_bytes(key), 0x5B).guid();
        put(
            fx.data_path()
                .join("subtitles")
                .join(sub.shard())
                .join(format!("{}.srt", sub.n())),
            srt.as_bytes(),
        )?;
    }
    if matches!(i % 3, 0) {
        let len = rng.around(4096, 64);
        put(
            fx.data_path().join("attachments").join(&n).join("font.ttf"),
            &magic_bytes(rng, &[0x00, 0x01, 0x00, 0x00], len),
        )?;
    }
    Ok(count)
}

fn write_by_name_metadata(fx: &Fixture, spec: &FixtureSpec) -> io::Result<()> {
    let mut rng = Rng::derive(spec.seed, 4);
    let md = &fx.metadata_dir;
    let mut people = BTreeSet::new();
    for _ in 0..(2 + spec.items / 2) {
        people.insert(person(&mut rng));
    }
    for p in &people {
        let letter = &p[..1];
        let len = rng.around(spec.image_bytes / 2, 64);
        write(
            &md.join("People").join(letter).join(p).join("folder.jpg"),
            &jpeg_bytes(&mut rng, len),
        )?;
    }
    for g in GENRES {
        let len = rng.around(spec.image_bytes / 2, 64);
        write(
            &md.join("Genre").join(g).join("folder.jpg"),
            &jpeg_bytes(&mut rng, len),
        )?;
    }
    for s in STUDIOS {
        let len = rng.around(spec.image_bytes / 4, 64);
        write(
            &md.join("Studio").join(s).join("logo.png"),
            &png_bytes(&mut rng, len),
        )?;
    }
    for _ in 0..2 {
        let len = rng.around(spec.image_bytes / 2, 64);
        write(
            &md.join("views").join(rng.guid().n()).join("folder.jpg"),
            &jpeg_bytes(&mut rng, len),
        )?;
    }
    Ok(())
}

/// Never part of a snapshot: backups, SQLite leftovers, live TV recordings, transcodes,
/// cache and logs.
fn write_excluded(fx: &Fixture, spec: &FixtureSpec) -> io::Result<()> {
    let mut rng = Rng::derive(spec.seed, 5);
    let d = fx.data_path();
    let zip_len = (64 * 1024).min(spec.sheet_bytes.max(1024));
    write(
        &d.join("backups/jellyfin-backup-1.zip"),
        &magic_bytes(&mut rng, b"PK\x03\x04", zip_len),
    )?;
    write(
        &d.join("SQLiteBackups/jellyfin_20251201000000.db"),
        &magic_bytes(&mut rng, b"SQLite format 3\0", 4096),
    )?;
    write(
        &d.join("library.db.old"),
        &magic_bytes(&mut rng, b"SQLite format 3\0", 4096),
    )?;
    write(
        &d.join("livetv/recordings/Evening News/Evening News 2025-12-30.ts"),
        &magic_bytes(&mut rng, &[0x47], 8 * 188),
    )?;
    write(
        &fx.data_dir
            .join("transcodes")
            .join(format!("{}.ts", rng.guid().n())),
        &magic_bytes(&mut rng, &[0x47], 16 * 188),
    )?;
    let c = &fx.cache_dir;
    for k in 0..3 {
        let g = rng.guid();
        let len = rng.around(spec.image_bytes / 4, 64);
        write(
            &c.join("images/resized-images")
                .join(&g.n()[..1])
                .join(format!("{}.webp", g.n())),
            &magic_bytes(&mut rng, b"RIFF", len),
        )?;
        if k == 0 {
            write(
                &c.join("temp").join(format!("{}.tmp", g.n())),
                b"partial download",
            )?;
        }
    }
    write(
        &c.join("omdb/tt0000001.json"),
        br#"{"Title":"Example","Year":"1999"}"#,
    )?;
    // Every start of the server logs its version (quoted, in the file).
    let mut log = format!(
        "[2026-01-01 00:00:00.000 +00:00] [INF] [1] Main: Jellyfin version: \"{SERVER_VERSION}\"\n"
    );
    for l in 0..40 {
        log.push_str(&format!(
            "[2026-01-01 00:{:02}:{:02}.000 +00:00] [INF] [{}] Emby.Server.Implementations.ApplicationHost: {}\n",
            l / 60,
            l % 60,
            1 + rng.below(30),
            words(&mut rng, 6)
        ));
    }
    write(&fx.log_dir.join("log_20260101.log"), log.as_bytes())?;
    write(
        &fx.log_dir
            .join("FFmpeg.Transcode-2026-01-01_00-00-00_0123456789abcdef.log"),
        b"ffmpeg version 7.1.1-Jellyfin\n",
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The database

const SCHEMA: &str = r#"
CREATE TABLE "__EFMigrationsHistory" (
    "MigrationId" TEXT NOT NULL CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY,
    "ProductVersion" TEXT NOT NULL
);
CREATE TABLE "Users" (
    "Id" TEXT NOT NULL CONSTRAINT "PK_Users" PRIMARY KEY,
    "Username" TEXT NOT NULL,
    "Password" TEXT NULL,
    "MustUpdatePassword" INTEGER NOT NULL,
    "AuthenticationProviderId" TEXT NOT NULL,
    "PasswordResetProviderId" TEXT NOT NULL,
    "InvalidLoginAttemptCount" INTEGER NOT NULL,
    "LastActivityDate" TEXT NULL,
    "LastLoginDate" TEXT NULL,
    "InternalId" INTEGER NOT NULL,
    "RowVersion" INTEGER NOT NULL
);
CREATE TABLE "BaseItems" (
    "Id" TEXT NOT NULL CONSTRAINT "PK_BaseItems" PRIMARY KEY,
    "Type" TEXT NOT NULL,
    "Name" TEXT NULL,
    "Path" TEXT NULL,
    "Overview" TEXT NULL,
    "DateCreated" TEXT NULL,
    "DateModified" TEXT NULL,
    "ProductionYear" INTEGER NULL,
    "RunTimeTicks" INTEGER NULL,
    "ParentId" TEXT NULL
);
CREATE TABLE "UserData" (
    "ItemId" TEXT NOT NULL,
    "UserId" TEXT NOT NULL,
    "Played" INTEGER NOT NULL,
    "PlayCount" INTEGER NOT NULL,
    "IsFavorite" INTEGER NOT NULL,
    "PlaybackPositionTicks" INTEGER NOT NULL,
    "LastPlayedDate" TEXT NULL,
    CONSTRAINT "PK_UserData" PRIMARY KEY ("ItemId", "UserId")
);
CREATE UNIQUE INDEX "IX_Users_Username" ON "Users" ("Username");
CREATE INDEX "IX_BaseItems_Path" ON "BaseItems" ("Path");
CREATE INDEX "IX_BaseItems_Type_Name" ON "BaseItems" ("Type", "Name");
CREATE INDEX "IX_BaseItems_ParentId" ON "BaseItems" ("ParentId");
CREATE INDEX "IX_UserData_UserId_Played" ON "UserData" ("UserId", "Played");
"#;

/// EF Core schema migrations first (3-part EF versions), then Jellyfin's code migrations
/// (4-part server versions). The highest server version is [`SERVER_PRODUCT_VERSION`].
const MIGRATIONS: &[(&str, &str)] = &[
    ("20200514181226_AddActivityLog", "3.1.4"),
    ("20200613202153_AddUsers", "3.1.5"),
    ("20200728005145_AddDisplayPreferences", "3.1.6"),
    ("20221022080052_AddIndexActivityLogsDateCreated", "6.0.9"),
    ("20241020103111_LibraryDbMigration", "8.0.10"),
    ("20250326065026_AddInheritedParentalRatingSubValue", "9.0.3"),
    ("20250714044826_ResetJournalMode", "9.0.7"),
    (
        "20241111131257_Jellyfin.Server.Migrations.Routines.MigrateLibraryDb",
        "10.11.0.0",
    ),
    (
        "20241111135439_Jellyfin.Server.Migrations.Routines.MigrateRatingLevels",
        "10.11.0.0",
    ),
    (
        "20250405075612_Jellyfin.Server.Migrations.Routines.FixDates",
        "10.11.0.0",
    ),
    (
        "20250913211637_Jellyfin.Server.Migrations.Routines.CleanMusicArtist",
        "10.11.1.0",
    ),
    (
        "20251109000000_Jellyfin.Server.Migrations.Routines.RefreshTrickplayInfo",
        SERVER_PRODUCT_VERSION,
    ),
];

const ITEM_TYPES: &[&str] = &[
    "MediaBrowser.Controller.Entities.TV.Episode",
    "MediaBrowser.Controller.Entities.Person",
    "MediaBrowser.Controller.Entities.TV.Season",
    "MediaBrowser.Controller.Entities.Audio.Audio",
    "MediaBrowser.Controller.Entities.TV.Episode",
];
const MOVIE_TYPE: &str = "MediaBrowser.Controller.Entities.Movies.Movie";

fn db_err(e: rusqlite::Error) -> io::Error {
    io_err(format!("sqlite: {e}"))
}

/// One `BaseItems` row (+ its `UserData`) for row index `r` (< items: the media item `r`).
#[allow(clippy::too_many_arguments)]
fn insert_item_row(
    tx: &rusqlite::Transaction<'_>,
    seed: u64,
    r: usize,
    guid: &Guid,
    name: &str,
    items: usize,
    users: &[Guid],
    rng: &mut Rng,
) -> rusqlite::Result<usize> {
    let (ty, path) = if r < items {
        (MOVIE_TYPE, Some(format!("/media/movies/{name}/{name}.mkv")))
    } else {
        let ty = ITEM_TYPES[r % ITEM_TYPES.len()];
        let path = if ty.ends_with("Person") {
            None
        } else {
            Some(format!(
                "/media/tv/Show {}/Season {}/{name}.mkv",
                r % 97,
                r % 7
            ))
        };
        (ty, path)
    };
    let n_words = 30 + rng.below(120) as usize;
    let overview = words(rng, n_words);
    let created = BASE_MTIME - DAY * 400 + (r as i64) * 37;
    let parent = if r < items {
        None
    } else {
        Some(item_guid(seed, r % items.max(1)).upper_d())
    };
    tx.execute(
        r#"INSERT INTO "BaseItems" ("Id","Type","Name","Path","Overview","DateCreated","DateModified","ProductionYear","RunTimeTicks","ParentId")
           VALUES (?1,?2,?3,?4,?5,?6,?6,?7,?8,?9)"#,
        rusqlite::params![
            guid.upper_d(),
            ty,
            name,
            path,
            overview,
            ef_date(created),
            1950 + rng.below(76) as i64,
            (rng.below(10_800) as i64 + 600) * 10_000_000,
            parent
        ],
    )?;
    let mut n = 1;
    if !ty.ends_with("Person") && !ty.ends_with("Season") {
        for u in users {
            if rng.percent(40) {
                let played = rng.percent(50);
                tx.execute(
                    r#"INSERT INTO "UserData" ("ItemId","UserId","Played","PlayCount","IsFavorite","PlaybackPositionTicks","LastPlayedDate")
                       VALUES (?1,?2,?3,?4,?5,?6,?7)"#,
                    rusqlite::params![
                        guid.upper_d(),
                        u.upper_d(),
                        played,
                        i64::from(played) + rng.below(2) as i64,
                        rng.percent(10),
                        if played { 0 } else { rng.below(50_000_000_000) as i64 },
                        ef_date(created + DAY + rng.below(DAY as u64 * 300) as i64)
                    ],
                )?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn write_db(fx: &Fixture, spec: &FixtureSpec, users: &[(Guid, String)]) -> io::Result<()> {
    fs::create_dir_all(fx.data_path())?;
    let mut conn = rusqlite::Connection::open(&fx.db_path).map_err(db_err)?;
    conn.execute_batch("PRAGMA page_size = 4096;")
        .map_err(db_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(io_err(format!(
            "could not switch {} to WAL: {mode}",
            fx.db_path.display()
        )));
    }
    let mut rng = Rng::derive(spec.seed, 6);
    let tx = conn.transaction().map_err(db_err)?;
    tx.execute_batch(SCHEMA).map_err(db_err)?;
    for (id, ver) in MIGRATIONS {
        tx.execute(
            r#"INSERT INTO "__EFMigrationsHistory" ("MigrationId","ProductVersion") VALUES (?1,?2)"#,
            rusqlite::params![id, ver],
        )
        .map_err(db_err)?;
    }
    for (k, (guid, name)) in users.iter().enumerate() {
        tx.execute(
            r#"INSERT INTO "Users" ("Id","Username","Password","MustUpdatePassword","AuthenticationProviderId","PasswordResetProviderId","InvalidLoginAttemptCount","LastActivityDate","LastLoginDate","InternalId","RowVersion")
               VALUES (?1,?2,?3,0,'Jellyfin.Server.Implementations.Users.DefaultAuthenticationProvider','Jellyfin.Server.Implementations.Users.DefaultPasswordResetProvider',0,?4,?4,?5,0)"#,
            rusqlite::params![
                guid.upper_d(),
                name,
                format!("$PBKDF2-SHA512$iterations=210000${:016X}${:016X}", rng.next_u64(), rng.next_u64()),
                ef_date(BASE_MTIME - DAY),
                k as i64 + 1
            ],
        )
        .map_err(db_err)?;
    }
    let user_ids: Vec<Guid> = users.iter().map(|(g, _)| *g).collect();
    for r in 0..spec.db_rows {
        let (guid, name) = if r < spec.items {
            (item_guid(spec.seed, r), item_name(spec.seed, r))
        } else {
            let mut g = Rng::derive(spec.seed, 0x4000_0000 + r as u64);
            (g.guid(), format!("{} {r}", title(&mut g)))
        };
        insert_item_row(
            &tx, spec.seed, r, &guid, &name, spec.items, &user_ids, &mut rng,
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    close_db(conn, &fx.db_path)
}

/// Closes cleanly (checkpoint + WAL removal by SQLite) and checks nothing is left over.
fn close_db(conn: rusqlite::Connection, path: &Path) -> io::Result<()> {
    conn.close().map_err(|(_, e)| db_err(e))?;
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if Path::new(&p).exists() {
            return Err(io_err(format!(
                "{} left behind after close",
                Path::new(&p).display()
            )));
        }
    }
    Ok(())
}

/// Records that server `version` (4-part, e.g. `"10.11.4.0"`) ran on this data, as a
/// Jellyfin code migration would. Sets the DB file's mtime to `mtime` seconds.
pub fn record_server_version(fx: &Fixture, version: &str, mtime: i64) -> io::Result<()> {
    let conn = rusqlite::Connection::open(&fx.db_path).map_err(db_err)?;
    conn.execute(
        r#"INSERT OR REPLACE INTO "__EFMigrationsHistory" ("MigrationId","ProductVersion") VALUES (?1,?2)"#,
        rusqlite::params![format!("29990101000000_Jellyfin.Server.Migrations.Routines.Upgrade_{version}"), version],
    )
    .map_err(db_err)?;
    close_db(conn, &fx.db_path)?;
    let t = FileTime::from_unix_time(mtime, 0);
    filetime::set_file_times(&fx.db_path, t, t)?;
    if let Some(parent) = fx.db_path.parent() {
        filetime::set_file_times(parent, t, t)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// mtimes and tree walking

/// Every path under `dir` (excluding `dir`), sorted depth-first (a directory before its
/// contents, entries by byte order of their names). Does not follow symlinks.
pub fn walk_sorted(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk_into(dir, &mut out)?;
    Ok(out)
}

fn walk_into(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<(PathBuf, bool)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let is_dir = e.file_type()?.is_dir();
        entries.push((e.path(), is_dir));
    }
    entries.sort();
    for (p, is_dir) in entries {
        out.push(p.clone());
        if is_dir {
            walk_into(&p, out)?;
        }
    }
    Ok(())
}

/// Sets `root` to `base` and the i-th path of [`walk_sorted`] to `base + 1 + i` seconds.
pub fn set_tree_mtimes(root: &Path, base: i64) -> io::Result<()> {
    let paths = walk_sorted(root)?;
    for (i, p) in paths.iter().enumerate() {
        let t = FileTime::from_unix_time(base + 1 + i as i64, 0);
        filetime::set_symlink_file_times(p, t, t)?;
    }
    let t = FileTime::from_unix_time(base, 0);
    filetime::set_file_times(root, t, t)
}

/// Newest mtime (seconds) of the regular files under `root` that this module could have
/// set (whole seconds, no nanoseconds), or `None` if there are none. Directories and
/// SQLite side files (`-wal`, `-shm`, `-journal`) are ignored: whoever opens the database
/// creates those (a backup's read-only capture leaves an empty `-wal` and a `-shm`
/// behind) and bumps their directory's mtime, at wall-clock time; files with sub-second
/// mtimes (e.g. from a git checkout) are not ours either.
pub fn newest_mtime(root: &Path) -> io::Result<Option<i64>> {
    let mut newest = None;
    for p in walk_sorted(root)? {
        let m = fs::symlink_metadata(&p)?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if !m.is_file()
            || ["-wal", "-shm", "-journal"]
                .iter()
                .any(|s| name.ends_with(s))
        {
            continue;
        }
        let ft = FileTime::from_last_modification_time(&m);
        if ft.nanoseconds() != 0 {
            continue;
        }
        let t = ft.unix_seconds();
        newest = Some(newest.map_or(t, |n: i64| n.max(t)));
    }
    Ok(newest)
}

/// `relative path -> "dir"` or `"file <len> <blake3 hex>"` for everything under `dir`,
/// skipping any path whose relative form starts with one of `skip` (e.g. `"log"`).
/// Handy to assert that a restore reproduced a tree exactly.
pub fn tree_digest(dir: &Path, skip: &[&str]) -> io::Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    for p in walk_sorted(dir)? {
        let rel = p.strip_prefix(dir).map_err(io_err)?.to_path_buf();
        if skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let m = fs::symlink_metadata(&p)?;
        let v = if m.is_dir() {
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("symlink {}", fs::read_link(&p)?.display())
        } else {
            let bytes = fs::read(&p)?;
            format!("file {} {}", bytes.len(), blake3::hash(&bytes).to_hex())
        };
        out.insert(rel, v);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// day_of_changes

/// Simulates a day of server activity on an existing fixture: rewrites ~3% of the metadata
/// images (half keep their size), adds ~2% new media items (trickplay sheets + poster +
/// backdrop + DB rows), deletes ~1% of items (trickplay dir, metadata dir, DB rows),
/// updates ~2% of `UserData` rows and some `Overview`s, and edits `system.xml`.
/// Changed paths get mtimes on the day after the newest mtime in the tree.
pub fn day_of_changes(fx: &Fixture, seed: u64) -> io::Result<()> {
    day_of_changes_report(fx, seed).map(|_| ())
}

/// [`day_of_changes`], returning what it did.
pub fn day_of_changes_report(fx: &Fixture, seed: u64) -> io::Result<ChangeReport> {
    // The day after the newest of our files; a tree with only foreign mtimes (e.g. a git
    // checkout) falls back to BASE_MTIME + 1 day.
    let day_start = match newest_mtime(&fx.root)? {
        Some(t) if (BASE_MTIME..BASE_MTIME + 3650 * DAY).contains(&t) => {
            BASE_MTIME + ((t - BASE_MTIME) / DAY + 1) * DAY
        }
        _ => BASE_MTIME + DAY,
    };
    let mut rng = Rng::derive(seed, 0xDA7_0000);
    let mut report = ChangeReport {
        mtime_base: day_start,
        ..ChangeReport::default()
    };
    // Paths whose mtime must be set: written files and dirs whose listing changed.
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();

    // 1. Rewrite a few metadata images of the library.
    let lib = fx.metadata_dir.join("library");
    let images: Vec<PathBuf> = if lib.is_dir() {
        walk_sorted(&lib)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "jpg") && p.is_file())
            .collect()
    } else {
        Vec::new()
    };
    let mut n_mod = 0;
    for img in &images {
        if rng.percent(3) {
            rewrite_image(img, &mut rng)?;
            touched.insert(img.clone());
            n_mod += 1;
        }
    }
    if n_mod == 0 {
        if let Some(img) = images.get(rng.below(images.len() as u64) as usize) {
            rewrite_image(img, &mut rng)?;
            touched.insert(img.clone());
            n_mod += 1;
        }
    }
    report.files_modified += n_mod;

    // 2. Delete ~1% of the items (at least one) that have trickplay.
    let tp_root = fx.data_path().join("trickplay");
    let mut tp_items: Vec<PathBuf> = Vec::new();
    if tp_root.is_dir() {
        for shard in sorted_dir(&tp_root)? {
            if shard.is_dir() {
                tp_items.extend(sorted_dir(&shard)?.into_iter().filter(|p| p.is_dir()));
            }
        }
    }
    // Template sizes for new items, taken from an existing one.
    let template = tp_items.first().cloned();
    let (sheets, sheet_len) = match &template {
        Some(t) => {
            let files: Vec<PathBuf> = walk_sorted(t)?
                .into_iter()
                .filter(|p| p.is_file())
                .collect();
            let len = files
                .first()
                .map(|f| fs::metadata(f).map(|m| m.len()))
                .transpose()?
                .unwrap_or(300 * 1024);
            (files.len().max(1), len as usize)
        }
        None => (2, 12 * 1024),
    };
    let image_len = images
        .first()
        .map(|f| fs::metadata(f).map(|m| m.len()))
        .transpose()?
        .unwrap_or(8 * 1024) as usize;
    let n_del = (tp_items.len() / 100).max(usize::from(!tp_items.is_empty()));
    let mut deleted: Vec<Guid> = Vec::new();
    for _ in 0..n_del {
        if tp_items.len() <= 1 {
            break;
        }
        let k = rng.below(tp_items.len() as u64) as usize;
        let dir = tp_items.remove(k);
        let Some(guid) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(Guid::parse_n)
        else {
            continue;
        };
        report.files_deleted += count_files(&dir)?;
        fs::remove_dir_all(&dir)?;
        touched.extend(dir.parent().map(Path::to_path_buf));
        let md = lib.join(guid.shard()).join(guid.n());
        if md.is_dir() {
            report.files_deleted += count_files(&md)?;
            fs::remove_dir_all(&md)?;
            touched.extend(md.parent().map(Path::to_path_buf));
        }
        deleted.push(guid);
    }
    report.items_deleted = deleted.len();

    // 3. Add ~2% new items (at least one).
    let n_add = (tp_items.len() / 50).max(1);
    let add_spec = FixtureSpec {
        layout: fx.layout,
        items: 0,
        trickplay_sheets_per_item: sheets,
        sheet_bytes: sheet_len,
        metadata_images_per_item: 2,
        image_bytes: image_len,
        db_rows: 0,
        seed,
    };
    let mut added: Vec<(Guid, String)> = Vec::new();
    for k in 0..n_add {
        let guid = rng.guid();
        let name = format!("{} ({})", title(&mut rng), 2026);
        // Odd index: no subtitle; every third one gets an attachment font.
        report.files_added += write_item_files(
            fx,
            &guid,
            &mut rng,
            &add_spec,
            2 * k + 1,
            Some(&mut touched),
        )?;
        added.push((guid, name));
    }
    report.items_added = added.len();

    // 4. The database: new items, deleted items, played state, edited overviews.
    {
        let mut conn = rusqlite::Connection::open(&fx.db_path).map_err(db_err)?;
        let tx = conn.transaction().map_err(db_err)?;
        let users: Vec<Guid> = {
            let mut st = tx
                .prepare(r#"SELECT "Id" FROM "Users" ORDER BY "Id""#)
                .map_err(db_err)?;
            let ids = st
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(db_err)?;
            ids.iter()
                .filter_map(|s| Guid::parse_n(&s.replace('-', "").to_ascii_lowercase()))
                .collect()
        };
        let n_rows: i64 = tx
            .query_row(r#"SELECT count(*) FROM "BaseItems""#, [], |r| r.get(0))
            .map_err(db_err)?;
        let mut changed = 0usize;
        for g in &deleted {
            changed += tx
                .execute(
                    r#"DELETE FROM "UserData" WHERE "ItemId" = ?1"#,
                    [g.upper_d()],
                )
                .map_err(db_err)?;
            changed += tx
                .execute(r#"DELETE FROM "BaseItems" WHERE "Id" = ?1"#, [g.upper_d()])
                .map_err(db_err)?;
        }
        for (g, name) in &added {
            // Row index 0 of 1 item: a movie.
            changed +=
                insert_item_row(&tx, seed, 0, g, name, 1, &users, &mut rng).map_err(db_err)?;
        }
        // Played state: ~2% of UserData rows, picked by rowid.
        let max_rowid: i64 = tx
            .query_row(
                r#"SELECT coalesce(max(rowid), 0) FROM "UserData""#,
                [],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        for _ in 0..((max_rowid / 50).max(1)) {
            let rowid = 1 + rng.below(max_rowid.max(1) as u64) as i64;
            changed += tx
                .execute(
                    r#"UPDATE "UserData" SET "Played" = 1, "PlayCount" = "PlayCount" + 1,
                       "PlaybackPositionTicks" = 0, "LastPlayedDate" = ?2 WHERE rowid = ?1"#,
                    rusqlite::params![rowid, ef_date(day_start + rng.below(DAY as u64) as i64)],
                )
                .map_err(db_err)?;
        }
        // Refreshed metadata: ~1% of the overviews.
        for _ in 0..((n_rows / 100).max(1)) {
            let rowid = 1 + rng.below(n_rows.max(1) as u64) as i64;
            let n_words = 30 + rng.below(120) as usize;
            let overview = words(&mut rng, n_words);
            changed += tx
                .execute(
                    r#"UPDATE "BaseItems" SET "Overview" = ?2, "DateModified" = ?3 WHERE rowid = ?1"#,
                    rusqlite::params![rowid, overview, ef_date(day_start)],
                )
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        close_db(conn, &fx.db_path)?;
        report.db_rows_changed = changed;
        touched.insert(fx.db_path.clone());
        touched.extend(fx.db_path.parent().map(Path::to_path_buf)); // -wal/-shm came and went
    }

    // 5. A settings change in system.xml.
    let sys = fx.config_dir.join("system.xml");
    if sys.is_file() {
        let xml = fs::read_to_string(&sys)?;
        let delay = 30 + rng.below(90);
        let new = match (
            xml.find("<LibraryMonitorDelay>"),
            xml.find("</LibraryMonitorDelay>"),
        ) {
            (Some(a), Some(b)) if a < b => {
                format!("{}<LibraryMonitorDelay>{delay}{}", &xml[..a], &xml[b..])
            }
            _ => format!("{xml}<!-- edited {delay} -->\n"),
        };
        fs::write(&sys, new)?;
        touched.insert(sys);
        report.files_modified += 1;
    }

    for (i, p) in touched.iter().enumerate() {
        if fs::symlink_metadata(p).is_ok() {
            let t = FileTime::from_unix_time(day_start + i as i64, 0);
            filetime::set_symlink_file_times(p, t, t)?;
        }
    }
    Ok(report)
}

fn sorted_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}

fn count_files(dir: &Path) -> io::Result<usize> {
    Ok(walk_sorted(dir)?.iter().filter(|p| p.is_file()).count())
}

fn rewrite_image(img: &Path, rng: &mut Rng) -> io::Result<()> {
    let old = fs::metadata(img)?.len() as usize;
    let len = if rng.percent(50) {
        old
    } else {
        rng.around(old, 64)
    };
    fs::write(img, jpeg_bytes(rng, len))
}
