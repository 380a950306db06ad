//! SPSC hand-off between two threads: our ring against `rtrb` and
//! `crossbeam-channel` (bounded), in one run. Every queue moves the same
//! item: a slot's metadata (64 bytes: length, flags, timestamp, source
//! address) and 8 bytes of data holding a sequence number; batch sizes 1, 16
//! and 64 (crossbeam has no batch API: it sends one at a time). Throughput is ns per item (criterion's time per element);
//! `roundtrip` measures one item to the other thread and back (p50 from
//! criterion's median, divided by nothing: it is the round trip).
//! Both sides spin (no parking) so that all three are measured alike, and
//! each side is pinned to its own CPU (0 and 1): two spinning threads that
//! the scheduler put on one vCPU measure the scheduler, not the queue.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cma::bench::recv::pin_to;
use cma::ring_buffer::{self, SlotMeta};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const CAPACITY: usize = 4096;

/// What the other queues carry: the same bytes as one of our slots.
#[derive(Clone, Copy)]
struct Packet {
    meta: SlotMeta,
    data: [u8; 8],
}

fn packet(seq: u64) -> Packet {
    Packet {
        meta: SlotMeta {
            len: 8,
            recv_ns: seq,
            ..zero_meta()
        },
        data: seq.to_le_bytes(),
    }
}

fn ours(items: u64, batch: usize) -> Duration {
    let (mut p, mut c) = ring_buffer::channel(CAPACITY, 8);
    let consumer = std::thread::spawn(move || {
        pin_to(1);
        let mut want = 0u64;
        while want < items {
            let b = c.read_batch(batch);
            for i in 0..b.len() {
                let (data, meta) = b.get(i);
                let mut x = [0u8; 8];
                x.copy_from_slice(data);
                assert_eq!(u64::from_le_bytes(x), want);
                assert_eq!(meta.len, 8);
                want += 1;
            }
            b.release();
        }
    });
    pin_to(0);
    let start = Instant::now();
    let mut next = 0u64;
    while next < items {
        let mut b = p.write_batch(batch.min((items - next) as usize));
        let n = b.len();
        for i in 0..n {
            let (buf, meta) = b.slot(i);
            let item = packet(next);
            buf.copy_from_slice(&item.data);
            *meta = item.meta;
            next += 1;
        }
        b.commit(n);
    }
    consumer.join().expect("consumer");
    start.elapsed()
}

fn rtrb_run(items: u64, batch: usize) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<Packet>::new(CAPACITY);
    let consumer = std::thread::spawn(move || {
        pin_to(1);
        let mut want = 0u64;
        while want < items {
            let n = c.slots().min(batch);
            if n == 0 {
                continue;
            }
            let chunk = c.read_chunk(n).expect("slots counted");
            for v in chunk.into_iter() {
                assert_eq!(u64::from_le_bytes(v.data), want);
                assert_eq!(v.meta.len, 8);
                want += 1;
            }
        }
    });
    pin_to(0);
    let start = Instant::now();
    let mut next = 0u64;
    while next < items {
        let n = p.slots().min(batch).min((items - next) as usize);
        if n == 0 {
            continue;
        }
        let chunk = p.write_chunk_uninit(n).expect("slots counted");
        let k = chunk.fill_from_iter((next..next + n as u64).map(packet));
        next += k as u64;
    }
    consumer.join().expect("consumer");
    start.elapsed()
}

fn crossbeam_run(items: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<Packet>(CAPACITY);
    let consumer = std::thread::spawn(move || {
        pin_to(1);
        for want in 0..items {
            let v = rx.recv().expect("sender alive");
            assert_eq!(u64::from_le_bytes(v.data), want);
            assert_eq!(v.meta.len, 8);
        }
    });
    pin_to(0);
    let start = Instant::now();
    for i in 0..items {
        tx.send(packet(i)).expect("receiver alive");
    }
    consumer.join().expect("consumer");
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_items");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    for batch in [1usize, 16, 64] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("ours", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| ours(iters.max(1), batch))
        });
        g.bench_with_input(BenchmarkId::new("rtrb", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| rtrb_run(iters.max(1), batch))
        });
    }
    g.bench_function("crossbeam_bounded", |b| {
        b.iter_custom(|iters| crossbeam_run(iters.max(1)))
    });
    g.finish();
}

/// One item there and back through two rings, both sides spinning.
fn roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_roundtrip");
    g.sample_size(20);
    g.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let (mut to, mut from_main) = ring_buffer::channel(2, 8);
            let (mut back, mut from_echo) = ring_buffer::channel(2, 8);
            let echo = std::thread::spawn(move || {
                pin_to(1);
                for _ in 0..iters {
                    loop {
                        let r = from_main.read_batch(1);
                        if !r.is_empty() {
                            r.release();
                            break;
                        }
                    }
                    while !back.push(
                        &[1],
                        &SlotMeta {
                            len: 1,
                            ..zero_meta()
                        },
                    ) {}
                }
            });
            pin_to(0);
            let start = Instant::now();
            for _ in 0..iters {
                while !to.push(
                    black_box(&[1]),
                    &SlotMeta {
                        len: 1,
                        ..zero_meta()
                    },
                ) {}
                loop {
                    let r = from_echo.read_batch(1);
                    if !r.is_empty() {
                        r.release();
                        break;
                    }
                }
            }
            let t = start.elapsed();
            echo.join().expect("echo");
            t
        })
    });
    g.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let (mut to, mut from_main) = rtrb::RingBuffer::<u8>::new(2);
            let (mut back, mut from_echo) = rtrb::RingBuffer::<u8>::new(2);
            let echo = std::thread::spawn(move || {
                pin_to(1);
                for _ in 0..iters {
                    while from_main.pop().is_err() {}
                    while back.push(1).is_err() {}
                }
            });
            pin_to(0);
            let start = Instant::now();
            for _ in 0..iters {
                while to.push(black_box(1)).is_err() {}
                while from_echo.pop().is_err() {}
            }
            let t = start.elapsed();
            echo.join().expect("echo");
            t
        })
    });
    g.finish();
}

fn zero_meta() -> SlotMeta {
    SlotMeta::EMPTY
}

criterion_group!(benches, throughput, roundtrip);
criterion_main!(benches);
