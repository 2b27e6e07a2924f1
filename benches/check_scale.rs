//! `check --read-data` on one pack of N small chunks (10,000 and 50,000), all referenced
//! by one snapshot: locating every referenced chunk in its pack's trailer and reading,
//! decompressing and hashing every record. Time per chunk should not grow with N.
//! `cargo bench --bench check_scale` (criterion reports chunks per second).

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use jellysnap::check::{check, ReadData};
use jellysnap::progress::NoProgress;
use jellysnap::ChunkSink;
use jellysnap::{Access, Repository};
use jellysnap::{ChunkId, ChunkKind, ChunkRef, DbCapture, Entry, Node, Tree};
use jellysnap::{Component, Root, SnapshotRecord, Summary};

const SIZES: [usize; 2] = [10_000, 50_000];
/// Chunks per file entry (inline lists: the tree decoder accepts any length).
const PER_FILE: usize = 1000;

fn entry(name: String, node: Node) -> Entry {
    Entry {
        name: name.into_bytes(),
        node,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        link: None,
    }
}

fn put_tree(sink: &ChunkSink, entries: Vec<Entry>) -> ChunkId {
    let t = Tree { entries };
    sink.put(ChunkKind::Tree, &t.encode().expect("encode"), true)
        .expect("tree")
}

/// A repository whose one snapshot references `n` distinct 128-byte chunks, all in one
/// data pack (n * 180 bytes stays under the 16 MiB pack target).
fn build(path: &Path, n: usize) {
    Repository::init(&jellysnap::Place::local(path)).expect("init");
    let repo = Repository::open(&jellysnap::Place::local(path), Access::Write).expect("open");
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
            refs.push(ChunkRef { id, len: 128 });
        }
        let node = Node::File {
            size: refs.len() as u64 * 128,
            chunks: refs,
            indirect: 0,
            trusted: true,
            database: DbCapture::None,
        };
        files.push(entry(format!("f{f:06}"), node));
    }
    let dir = put_tree(&sink, files);
    let root = put_tree(&sink, vec![entry("data".into(), Node::Dir { tree: dir })]);
    sink.finish().expect("finish");
    repo.commit_snapshot(&SnapshotRecord {
        name: None,
        tags: vec![],
        time_ns: 1,
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
        tree: root,
        parent: None,
        summary: Summary::default(),
        jellysnap_version: "bench".into(),
        databases: vec![],
        not_captured: Vec::new(),
        seq: None,
        seq_repo: None,
        edit: None,
    })
    .expect("commit");
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("check_read_data");
    g.sample_size(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    for n in SIZES {
        let path = dir.path().join(format!("repo-{n}"));
        build(&path, n);
        let repo = Repository::open(&jellysnap::Place::local(&path), Access::Read).expect("open");
        let mode = ReadData::new(true, None, &state).expect("mode");
        let r = check(&repo, &mode, &NoProgress).expect("check");
        assert!(r.ok() && r.data_chunks == n as u64 && r.packs == 2, "{r:?}");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| check(&repo, &mode, &NoProgress).expect("check"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
