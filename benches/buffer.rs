//! The byte buffer on the paths the loop takes: a small message appended and written whole
//! (allocate, then give back), a bulk tail consumed in partial writes, and appends that
//! reuse a consumed prefix instead of growing.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loopd::buffer::Buffer;
use std::hint::black_box;

/// An echo-sized message.
const SMALL: usize = 64;
/// Output pending at the default high watermark.
const BULK: usize = 256 * 1024;
/// What a loopback socket typically accepts in one partial write.
const WRITE_CHUNK: usize = 16 * 1024;

fn buffer(c: &mut Criterion) {
    let mut g = c.benchmark_group("buffer");
    let msg = vec![7u8; SMALL];
    g.throughput(Throughput::Bytes(SMALL as u64));
    g.bench_function("small_extend_consume_release", |b| {
        let mut buf = Buffer::new();
        b.iter(|| {
            buf.extend(black_box(&msg));
            buf.consume(black_box(SMALL));
        })
    });

    let bulk = vec![1u8; BULK];
    g.throughput(Throughput::Bytes(BULK as u64));
    g.bench_function("bulk_partial_writes", |b| {
        b.iter_batched_ref(
            || {
                let mut buf = Buffer::new();
                buf.extend(&bulk);
                buf
            },
            |buf| {
                while !buf.is_empty() {
                    let n = buf.len().min(WRITE_CHUNK);
                    black_box(&buf.as_slice()[..n]);
                    buf.consume(n);
                }
            },
            BatchSize::SmallInput,
        )
    });

    let chunk = vec![2u8; WRITE_CHUNK];
    g.throughput(Throughput::Bytes(WRITE_CHUNK as u64));
    g.bench_function("append_after_partial_consume", |b| {
        let mut buf = Buffer::new();
        buf.extend(&bulk);
        b.iter(|| {
            buf.consume(WRITE_CHUNK);
            buf.extend(black_box(&chunk));
        })
    });
    g.finish();
}

criterion_group!(benches, buffer);
criterion_main!(benches);
