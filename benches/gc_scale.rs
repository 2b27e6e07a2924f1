//! gc at scale: a repository of N chunks (default 10^6, `GC_SCALE_CHUNKS`), two
//! snapshots, the older one (all chunks) forgotten so half of them become garbage; times
//! `gc::plan` + `gc::sweep` and reports the process's peak memory.
//! `cargo bench --bench gc_scale`.

use std::time::Instant;

use jellysnap::ChunkId;
use jellysnap::ChunkKind;
use jellysnap::ChunkSink;
use jellysnap::{Access, Repository};
use jellysnap::{ChunkRef, DbCapture, Entry, Node, Tree};
use jellysnap::{Component, Root, SnapshotRecord, Summary};

const PER_FILE: usize = 1000;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn file(name: String, chunks: Vec<ChunkRef>) -> Entry {
    Entry {
        name: name.into_bytes(),
        node: Node::File {
            size: chunks.iter().map(|c| c.len as u64).sum(),
            chunks,
            indirect: 0,
            trusted: true,
            database: DbCapture::None,
        },
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        link: None,
    }
}

fn snapshot(sink: &ChunkSink, files: &[(String, Vec<ChunkRef>)]) -> ChunkId {
    let dir = Tree {
        entries: files
            .iter()
            .map(|(n, c)| file(n.clone(), c.clone()))
            .collect(),
    };
    let sub = sink
        .put(ChunkKind::Tree, &dir.encode().unwrap(), true)
        .expect("tree");
    let mut root = file("data".into(), vec![]);
    root.node = Node::Dir { tree: sub };
    sink.put(
        ChunkKind::Tree,
        &Tree {
            entries: vec![root],
        }
        .encode()
        .unwrap(),
        true,
    )
    .expect("root")
}

fn record(tree: ChunkId, t: i64) -> SnapshotRecord {
    SnapshotRecord {
        name: None,
        tags: vec![],
        time_ns: t,
        host: "bench".into(),
        layout: "custom".into(),
        data_dir: "/bench".into(),
        roots: vec![Root {
            label: "data".into(),
            path: "/bench".into(),
        }],
        items: vec![],
        components: vec![Component::Config, Component::Database],
        jellyfin_version: None,
        jellyfin_version_source: None,
        tree,
        parent: None,
        summary: Summary::default(),
        jellysnap_version: "bench".into(),
        databases: vec![],
        not_captured: Vec::new(),
        seq: None,
        seq_repo: None,
        edit: None,
    }
}

fn main() {
    let n: usize = std::env::var("GC_SCALE_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("repo");
    Repository::init(&jellysnap::Place::local(&path)).expect("init");
    let t0 = Instant::now();
    {
        let repo = Repository::open(&jellysnap::Place::local(&path), Access::Write).expect("open");
        let sink = ChunkSink::new(&repo).expect("pack writer");
        let mut files = Vec::new();
        let mut buf = [0u8; 128];
        for f in 0..n.div_ceil(PER_FILE) {
            let mut refs = Vec::with_capacity(PER_FILE);
            for c in 0..PER_FILE.min(n - f * PER_FILE) {
                let i = (f * PER_FILE + c) as u64;
                for (k, b) in buf.iter_mut().enumerate() {
                    *b = (i.wrapping_mul(0x9e3779b97f4a7c15) >> (k % 8 * 8)) as u8 ^ k as u8;
                }
                buf[..8].copy_from_slice(&i.to_le_bytes());
                let id = sink.put(ChunkKind::Data, &buf, false).expect("put");
                refs.push(ChunkRef {
                    id,
                    len: buf.len() as u32,
                });
            }
            files.push((format!("f{f:06}"), refs));
        }
        let all = snapshot(&sink, &files);
        let half = snapshot(&sink, &files[..files.len() / 2]);
        sink.finish().expect("finish");
        repo.commit_snapshot(&record(all, 1)).expect("commit");
        let keep = repo.commit_snapshot(&record(half, 2)).expect("commit");
        let (snaps, _) = repo.snapshots().expect("list");
        for s in snaps.iter().filter(|s| s.id != keep) {
            std::fs::remove_file(path.join("snapshots").join(s.id.to_hex())).expect("forget");
        }
    }
    let build = t0.elapsed();
    let rss_before = peak_rss_mb();
    println!(
        "gc_scale: {n} chunks, built in {:.1}s (peak RSS {:.0} MB while building)",
        build.as_secs_f64(),
        rss_before
    );
    // gc runs as its own process (the real binary) so its peak memory is its own.
    let t1 = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_jellysnap"))
        .arg("--repo")
        .arg(&path)
        .args(["--json", "gc"])
        .output()
        .expect("run /usr/bin/time jellysnap gc (apt-get install time)");
    let secs = t1.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak_kb: f64 = String::from_utf8_lossy(&out.stderr)
        .trim()
        .lines()
        .last()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    println!(
        "gc_scale: gc {:.2}s; {} packs, {} deleted, {} repacked, freed {} MB; gc peak RSS {:.0} MB",
        secs,
        v["plan"]["packs"],
        v["report"]["packs_deleted"],
        v["report"]["packs_repacked"],
        v["plan"]["bytes_freed"].as_u64().unwrap_or(0) / 1_000_000,
        peak_kb / 1024.0
    );
}
