//! Throughput of the backup pipeline's CPU stages on 32 MiB buffers: chunking alone,
//! chunking + blake3, and chunking + blake3 + the compression decision, for JPEG-like
//! (incompressible) and text-like data. `cargo bench --bench pipeline`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use jellysnap::chunking::{is_precompressed, maybe_compress};
use jellysnap::chunking::{Chunker, ChunkerParams};
use jellysnap::ChunkId;

const LEN: usize = 32 * 1024 * 1024;

fn jpeg_like() -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut v: Vec<u8> = (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    v[..4].copy_from_slice(b"\xFF\xD8\xFF\xE0");
    v
}

fn text_like() -> Vec<u8> {
    let words = [
        "<Item>",
        "<Name>",
        "Movie",
        "</Name>",
        "Overview",
        "the",
        "a",
        "river",
        "night",
        "</Item>\n",
    ];
    let mut v = Vec::with_capacity(LEN);
    let mut i = 7usize;
    while v.len() < LEN {
        i = i.wrapping_mul(1103515245).wrapping_add(12345);
        v.extend_from_slice(words[(i >> 16) % words.len()].as_bytes());
        v.push(b' ');
    }
    v.truncate(LEN);
    v
}

fn bench(c: &mut Criterion) {
    let chunker = Chunker::new(ChunkerParams {
        min: 64 * 1024,
        avg: 256 * 1024,
        max: 1024 * 1024,
    });
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    for (name, data) in [("jpeg", jpeg_like()), ("text", text_like())] {
        g.bench_with_input(BenchmarkId::new("chunk", name), &data, |b, d| {
            b.iter(|| chunker.cuts(d).len())
        });
        g.bench_with_input(BenchmarkId::new("chunk+hash", name), &data, |b, d| {
            b.iter(|| {
                let mut pos = 0;
                let mut n = 0u8;
                for len in chunker.cuts(d) {
                    n ^= ChunkId::of(&d[pos..pos + len]).0[0];
                    pos += len;
                }
                n
            })
        });
        g.bench_with_input(
            BenchmarkId::new("chunk+hash+compress", name),
            &data,
            |b, d| {
                let mut out = Vec::new();
                b.iter(|| {
                    let compressible = !is_precompressed(d);
                    let mut pos = 0;
                    let mut stored = 0usize;
                    for len in chunker.cuts(d) {
                        let chunk = &d[pos..pos + len];
                        let _ = ChunkId::of(chunk);
                        stored += if compressible {
                            maybe_compress(chunk, 3, &mut out)
                                .map(|_| out.len().max(1))
                                .unwrap_or(len)
                        } else {
                            len
                        };
                        pos += len;
                    }
                    stored
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
