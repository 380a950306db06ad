//! The write-ahead log's costs, each against a reference in the same run:
//! - ns per 128-byte append (no sync) vs a plain memcpy of the same bytes
//!   into a mapped file;
//! - durable records/s with group commit (`batch`, 256 per sync) vs a sync
//!   per record (`always`).
//!
//! Logs are written under `target/wal-bench` (a real disk, not tmpfs).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cma::wal::{RecordKind, RecordMeta, SyncPolicy, Wal, WalConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PAYLOAD: [u8; 128] = [0x5a; 128];
const SEGMENT: usize = 64 << 20;

fn bench_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/wal-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create bench dir");
    d
}

fn meta() -> RecordMeta {
    RecordMeta {
        kind: RecordKind::FrameSet,
        time_ns: 1,
        peer: Some(std::net::SocketAddr::from(([10, 0, 0, 1], 1984))),
    }
}

fn wal(name: &str, sync: SyncPolicy) -> Wal {
    let config = WalConfig {
        sync,
        segment_size: SEGMENT,
        ..WalConfig::new(bench_dir(name))
    };
    Wal::open(config).expect("open bench WAL").0
}

/// Bytes of one record in the log: 56-byte header + 128-byte payload.
const RECORD: usize = 56 + PAYLOAD.len();
/// The reference streams through this much mapped memory, more than any
/// cache holds, as the log streams through fresh segments.
const REFERENCE_WINDOW: usize = 1 << 30;

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_128B");
    g.throughput(Throughput::Elements(1));

    // Reference: memcpy of a whole record into a pre-zeroed, pre-faulted
    // mapped file, at advancing offsets.
    let path = bench_dir("memcpy").join("map");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create map file");
    file.set_len(REFERENCE_WINDOW as u64)
        .expect("size map file");
    // SAFETY: the file is private to this benchmark; nothing else maps or
    // writes it while the mapping lives.
    let mut map = unsafe { memmap2::MmapOptions::new().map_mut(&file) }.expect("map");
    map.advise(memmap2::Advice::PopulateWrite)
        .expect("prefault the reference mapping");
    let record = [0x5au8; RECORD];
    let mut off = 0usize;
    g.bench_function("memcpy_into_mapping", |b| {
        b.iter(|| {
            if off + RECORD > map.len() {
                off = 0;
            }
            map[off..off + RECORD].copy_from_slice(black_box(&record));
            off += RECORD;
        })
    });
    drop(map);
    let _ = std::fs::remove_file(&path);

    // The log's hot path: append within a prepared segment. Chunks in which
    // the writer moved to a new segment are timed separately (below), so
    // this is the cost the io thread pays per record.
    let mut w = wal("append_none", SyncPolicy::None);
    g.bench_function("wal_append", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let chunk = (iters - done).min(4096);
                let rotations = w.stats().rotations;
                let start = Instant::now();
                for _ in 0..chunk {
                    w.append(&meta(), black_box(&PAYLOAD)).expect("append");
                }
                let took = start.elapsed();
                if w.stats().rotations == rotations {
                    spent += took;
                    done += chunk;
                }
            }
            spent
        })
    });

    // Sustained: everything included (segment preparation competes for the
    // disk and the other core; rotation waits for it when it lags).
    let mut w = wal("append_sustained", SyncPolicy::None);
    g.bench_function("wal_append_sustained", |b| {
        b.iter(|| w.append(&meta(), black_box(&PAYLOAD)).expect("append"))
    });
    g.finish();
}

fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_128B");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(8));
    g.sample_size(10);

    let mut w = wal("always", SyncPolicy::Always);
    g.bench_function("always", |b| {
        b.iter(|| w.append(&meta(), &PAYLOAD).expect("append"))
    });

    let mut w = wal(
        "batch",
        SyncPolicy::Inline {
            max_records: 256,
            max_delay_us: 1000,
        },
    );
    g.bench_function("batch_256", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                w.append(&meta(), &PAYLOAD).expect("append");
            }
            w.sync().expect("sync");
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, append, durable);
criterion_main!(benches);
