//! Generates a deterministic Jellyfin-shaped dataset for benchmarks and manual testing, or
//! applies a simulated "day of changes" to one generated earlier.
//!
//! ```text
//! cargo run --release --example gen_dataset -- --out DIR [--layout docker|debian|linuxserver]
//!     [--scale-mib N] [--seed N] [--day-of-changes]
//! ```
//!
//! `--out` is the prefix directory: with `--layout docker` the Jellyfin data dir is
//! `DIR/config` (config dir `DIR/config/config`, cache `DIR/cache`); with `debian` it is
//! `DIR/var/lib/jellyfin` (config `DIR/etc/jellyfin`); with `linuxserver` it is
//! `DIR/config/data` (config `DIR/config`). The paths are printed at the end.
//!
//! Size mix: ~2% database, ~60% trickplay sheets (~300 KiB each), the rest metadata images
//! (~50-200 KiB each); below ~20 MiB the per-file sizes shrink so the total still matches.

#[path = "../tests/common/fixture.rs"]
mod fixture;

use fixture::{Fixture, FixtureSpec, Layout};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: gen_dataset --out DIR [--layout docker|debian|linuxserver] \
[--scale-mib N] [--seed N] [--day-of-changes]";

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

struct Args {
    out: PathBuf,
    layout: Layout,
    scale_mib: usize,
    seed: u64,
    day_of_changes: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut out = None;
    let mut layout = Layout::Docker;
    let mut scale_mib = 2048usize;
    let mut seed = 1u64;
    let mut day_of_changes = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match key.as_str() {
            "--out" | "-o" => out = Some(PathBuf::from(value("--out")?)),
            "--layout" => {
                let v = value("--layout")?;
                layout =
                    Layout::parse(&v).ok_or_else(|| format!("unknown layout {v:?}\n{USAGE}"))?;
            }
            "--scale-mib" => {
                let v = value("--scale-mib")?;
                scale_mib = v.parse().map_err(|_| format!("bad --scale-mib {v:?}"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                seed = v.parse().map_err(|_| format!("bad --seed {v:?}"))?;
            }
            "--day-of-changes" => day_of_changes = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    let out = out.ok_or_else(|| format!("--out is required\n{USAGE}"))?;
    Ok(Args {
        out,
        layout,
        scale_mib: scale_mib.max(1),
        seed,
        day_of_changes,
    })
}

/// Derives a spec whose total size is roughly `scale_mib` MiB.
fn spec_for(layout: Layout, scale_mib: usize, seed: u64) -> FixtureSpec {
    let total = scale_mib * MIB;
    // DB: ~2% of the total, at least ~100 KiB; ~1.2 KiB per BaseItems row incl. UserData
    // and indexes.
    let db_bytes = (total / 50).max(100 * KIB);
    let db_rows = db_bytes / 1200;
    let payload = total.saturating_sub(db_bytes + 200 * KIB).max(512 * KIB);
    let sheets = 4;
    let images = 6; // poster, backdrop, 4 chapter images
    let (sheet_full, image_full) = (300 * KIB, 125 * KIB);
    let per_item = sheets * sheet_full + images * image_full;
    let min_items = 8;
    let items = (payload / per_item).max(min_items);
    // Small scales: shrink files instead of dropping below `min_items` items.
    let shrink = (payload as f64 / (items * per_item) as f64).min(1.0);
    FixtureSpec {
        layout,
        items,
        trickplay_sheets_per_item: sheets,
        sheet_bytes: ((sheet_full as f64 * shrink) as usize).max(KIB),
        metadata_images_per_item: images,
        image_bytes: ((image_full as f64 * shrink) as usize).max(KIB),
        db_rows: db_rows.max(items),
        seed,
    }
}

#[derive(Default)]
struct Tally {
    files: u64,
    bytes: u64,
}

/// Files and bytes under `root`, grouped by what a backup does with them.
fn summarize(fx: &Fixture) -> std::io::Result<Vec<(&'static str, Tally)>> {
    let data = fx.data_path();
    let groups: Vec<(&'static str, Vec<PathBuf>)> = vec![
        ("trickplay", vec![data.join("trickplay")]),
        ("metadata", vec![fx.metadata_dir.clone()]),
        ("database", vec![fx.db_path.clone()]),
        (
            "subtitles+attachments",
            vec![data.join("subtitles"), data.join("attachments")],
        ),
        (
            "excluded (cache/log/transcodes/backups/leftovers)",
            vec![
                fx.cache_dir.clone(),
                fx.log_dir.clone(),
                fx.data_dir.join("transcodes"),
                data.join("backups"),
                data.join("SQLiteBackups"),
                data.join("library.db.old"),
                data.join("livetv/recordings"),
            ],
        ),
    ];
    let mut tallies: Vec<(&'static str, Tally)> =
        groups.iter().map(|(n, _)| (*n, Tally::default())).collect();
    tallies.push(("config + other state", Tally::default()));
    let other = tallies.len() - 1;
    for p in fixture::walk_sorted(&fx.root)? {
        let m = std::fs::symlink_metadata(&p)?;
        if !m.is_file() {
            continue;
        }
        let k = groups
            .iter()
            .position(|(_, prefixes)| prefixes.iter().any(|pre| p.starts_with(pre)))
            .unwrap_or(other);
        tallies[k].1.files += 1;
        tallies[k].1.bytes += m.len();
    }
    Ok(tallies)
}

fn print_summary(fx: &Fixture) -> std::io::Result<()> {
    let tallies = summarize(fx)?;
    let (mut files, mut bytes) = (0u64, 0u64);
    for (name, t) in &tallies {
        println!(
            "  {name:<52} {:>8} files {:>12} bytes ({:.1} MiB)",
            t.files,
            t.bytes,
            t.bytes as f64 / MIB as f64
        );
        files += t.files;
        bytes += t.bytes;
    }
    println!(
        "  {:<52} {files:>8} files {bytes:>12} bytes ({:.1} MiB)",
        "total",
        bytes as f64 / MIB as f64
    );
    println!("layout:     {}", fx.layout.name());
    println!("data dir:   {}", fx.data_dir.display());
    println!("config dir: {}", fx.config_dir.display());
    println!("cache dir:  {}", fx.cache_dir.display());
    println!("log dir:    {}", fx.log_dir.display());
    println!("database:   {}", fx.db_path.display());
    Ok(())
}

fn run(args: &Args) -> std::io::Result<()> {
    let t0 = Instant::now();
    if args.day_of_changes {
        let fx = Fixture::at(&args.out, args.layout);
        if !fx.db_path.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} not found: generate the dataset first (same --out and --layout)",
                    fx.db_path.display()
                ),
            ));
        }
        let r = fixture::day_of_changes_report(&fx, args.seed)?;
        println!(
            "day of changes (seed {}) in {:.2}s: {} files modified, {} added, {} deleted; \
             {} items added, {} deleted; {} DB rows changed; mtimes from {}",
            args.seed,
            t0.elapsed().as_secs_f64(),
            r.files_modified,
            r.files_added,
            r.files_deleted,
            r.items_added,
            r.items_deleted,
            r.db_rows_changed,
            fixture::utc_datetime(r.mtime_base)
        );
        print_summary(&fx)
    } else {
        let spec = spec_for(args.layout, args.scale_mib, args.seed);
        println!(
            "generating {} MiB {} dataset (seed {}): {} items x ({} sheets ~{} KiB + {} images ~{} KiB), {} BaseItems rows",
            args.scale_mib,
            args.layout.name(),
            args.seed,
            spec.items,
            spec.trickplay_sheets_per_item,
            spec.sheet_bytes / KIB,
            spec.metadata_images_per_item,
            spec.image_bytes / KIB,
            spec.db_rows
        );
        let fx = fixture::generate(&args.out, &spec)?;
        println!("generated in {:.2}s:", t0.elapsed().as_secs_f64());
        print_summary(&fx)
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_dataset: {}: {e}", Path::new(&args.out).display());
            ExitCode::FAILURE
        }
    }
}
