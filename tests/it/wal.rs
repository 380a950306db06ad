//! The write-ahead log: round trips across rotation, a reader running with
//! the writer, recovery from torn tails and corruption, release.

use std::path::Path;

use cma::wal::{
    RecordKind, RecordMeta, SEGMENT_HEADER_LEN, SyncPolicy, Wal, WalConfig, WalError, record_size,
    scan_dir,
};

const SEG: usize = 16 * 1024;

fn config(dir: &Path) -> WalConfig {
    WalConfig {
        segment_size: SEG,
        sync: SyncPolicy::Inline {
            max_records: 8,
            max_delay_us: 1_000_000,
        },
        ..WalConfig::new(dir)
    }
}

fn meta(i: u64) -> RecordMeta {
    RecordMeta {
        kind: if i.is_multiple_of(7) {
            RecordKind::Tick
        } else {
            RecordKind::FrameSet
        },
        time_ns: i * 1000,
        peer: match i % 3 {
            0 => None,
            1 => Some(
                format!("10.0.{}.{}:1984", i % 250, i % 200)
                    .parse()
                    .unwrap(),
            ),
            _ => Some("[fd00::7]:1985".parse().unwrap()),
        },
    }
}

/// Payload of record `i`: its number then `i % 300` filler bytes.
fn payload(i: u64) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.extend(std::iter::repeat_n((i % 251) as u8, (i % 300) as usize));
    p
}

fn append_n(wal: &mut Wal, from: u64, to: u64) {
    for i in from..=to {
        assert_eq!(wal.append(&meta(i), &payload(i)).unwrap(), i);
    }
}

/// Reads every record from `from` and checks it is record i = LSN.
fn read_all(wal: &Wal, from: u64) -> u64 {
    let mut r = wal.reader(from).unwrap();
    let mut n = 0;
    let mut want = from;
    while let Some(rec) = r.next() {
        let rec = rec.unwrap();
        assert_eq!(rec.header.lsn, want);
        assert_eq!(rec.payload, &payload(want)[..], "payload of {want}");
        assert_eq!(rec.header.meta, meta(want));
        want += 1;
        n += 1;
    }
    n
}

#[test]
fn append_and_read_across_rotation_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, report) = Wal::open(config(dir.path())).unwrap();
    assert_eq!((report.records, report.truncated.is_some()), (0, false));
    append_n(&mut wal, 1, 600);
    assert!(
        wal.stats().rotations >= 5,
        "rotations: {}",
        wal.stats().rotations
    );
    assert_eq!(wal.written_lsn(), 600);
    assert_eq!(read_all(&wal, 1), 600);
    assert_eq!(read_all(&wal, 377), 224);
    wal.sync().unwrap();
    assert_eq!(wal.durable_lsn(), 600);
    drop(wal);
    let (mut wal, report) = Wal::open(config(dir.path())).unwrap();
    assert_eq!(
        (report.first_lsn, report.last_lsn, report.records),
        (1, 600, 600)
    );
    assert!(report.truncated.is_none());
    append_n(&mut wal, 601, 700);
    assert_eq!(read_all(&wal, 1), 700);
    // The read-only scan works while the writer holds the directory.
    let outcome = scan_dir(dir.path()).unwrap();
    assert_eq!(outcome.last_lsn, 700);
}

#[test]
fn group_commit_batches_and_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(config(dir.path())).unwrap();
    append_n(&mut wal, 1, 20);
    // 8 per batch: two syncs happened, 4 records wait.
    assert_eq!(wal.durable_lsn(), 16);
    assert_eq!(wal.stats().syncs, 2);
    let deadline = wal.sync_deadline().unwrap();
    assert_eq!(
        wal.sync_if_due(deadline - std::time::Duration::from_micros(1))
            .unwrap(),
        16
    );
    assert_eq!(wal.sync_if_due(deadline).unwrap(), 20);
    assert_eq!(wal.sync_deadline(), None);
    assert_eq!(wal.stats().max_batch, 8);
}

#[test]
fn always_mode_syncs_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WalConfig {
        sync: SyncPolicy::Always,
        ..config(dir.path())
    };
    let (mut wal, _) = Wal::open(cfg).unwrap();
    for i in 1..=5 {
        wal.append(&meta(i), &payload(i)).unwrap();
        assert_eq!(wal.durable_lsn(), i);
    }
    assert_eq!(wal.stats().syncs, 5);
}

#[test]
fn a_background_syncer_makes_everything_durable_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let c = WalConfig {
        sync: SyncPolicy::Batch,
        ..config(dir.path())
    };
    let (mut wal, _) = Wal::open(c.clone()).unwrap();
    let mut syncer = wal.syncer();
    // Appends alone never make a record durable.
    append_n(&mut wal, 1, 5);
    assert_eq!(wal.durable_lsn(), 0);
    assert!(wal.sync_deadline().is_none());
    assert!(syncer.pending());
    assert_eq!(syncer.sync().unwrap(), 5);
    assert_eq!(wal.durable_lsn(), 5);
    assert!(!syncer.pending());
    // A syncer thread racing a writer that rotates through many segments.
    let marks = wal.watermarks();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        let mut last = 0;
        while !s2.load(std::sync::atomic::Ordering::Acquire) || syncer.pending() {
            let d = syncer.sync().unwrap();
            assert!(d >= last, "durable LSN went back");
            last = d;
        }
        syncer.stats()
    });
    for i in 6..=2000 {
        assert_eq!(wal.append(&meta(i), &payload(i)).unwrap(), i);
        assert!(marks.durable_lsn() <= marks.written_lsn());
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (syncs, records, _) = t.join().unwrap();
    assert!(syncs > 0 && records > 0);
    assert_eq!(wal.durable_lsn(), 2000);
    assert!(wal.stats().rotations > 5);
    drop(wal);
    let (wal, report) = Wal::open(c).unwrap();
    assert_eq!(report.last_lsn, 2000);
    assert!(report.truncated.is_none());
    assert_eq!(read_all(&wal, 1), 2000);
}

#[test]
fn reader_runs_concurrently_with_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(config(dir.path())).unwrap();
    let total = 5_000u64;
    let mut reader = wal.reader(1).unwrap();
    let t = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut want = 1;
        while want <= total {
            assert!(
                std::time::Instant::now() < deadline,
                "reader stuck at {want}"
            );
            match reader.next() {
                Some(rec) => {
                    let rec = rec.unwrap();
                    assert_eq!(rec.header.lsn, want);
                    assert_eq!(rec.payload, &payload(want)[..]);
                    want += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        want - 1
    });
    append_n(&mut wal, 1, total);
    assert_eq!(t.join().unwrap(), total);
}

fn write_log(dir: &Path, n: u64) {
    let (mut wal, _) = Wal::open(config(dir)).unwrap();
    append_n(&mut wal, 1, n);
    wal.sync().unwrap();
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

/// Offset of record `lsn` in a single-segment log written by `write_log`.
fn offset_of(lsn: u64) -> usize {
    SEGMENT_HEADER_LEN
        + (1..lsn)
            .map(|i| record_size(payload(i).len()))
            .sum::<usize>()
}

#[test]
fn recovery_after_a_torn_last_record_at_every_offset() {
    let n = 12;
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), n);
    let seg_name = only_segment(base.path()).file_name().unwrap().to_owned();
    let pristine = std::fs::read(base.path().join(&seg_name)).unwrap();
    let start = offset_of(n);
    let body_end = start + 56 + payload(n).len();
    for cut in start..body_end {
        for literal in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = pristine.clone();
            if literal {
                // The file itself is cut short.
                bytes.truncate(cut);
            } else {
                // The record's pages only partly reached the disk.
                bytes[cut..body_end].fill(0);
            }
            std::fs::write(dir.path().join(&seg_name), &bytes).unwrap();
            let (mut wal, report) = Wal::open(config(dir.path()))
                .unwrap_or_else(|e| panic!("cut at {cut} (literal {literal}): {e}"));
            assert_eq!(report.last_lsn, n - 1, "cut at {cut}");
            // A wholly zeroed record is the clean end of the log; a partial
            // one is a cut tail.
            assert_eq!(report.truncated.is_some(), cut > start, "cut at {cut}");
            assert!(report.truncated.as_ref().is_none_or(|s| !s.is_corruption()));
            // The log goes on cleanly from there.
            append_n(&mut wal, n, n + 3);
            assert_eq!(read_all(&wal, 1), n + 3);
        }
    }
}

#[test]
fn recovery_after_random_bit_flips_in_the_tail_record() {
    let n = 12;
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), n);
    let seg = only_segment(base.path());
    let pristine = std::fs::read(&seg).unwrap();
    let start = offset_of(n);
    let body_end = start + 56 + payload(n).len();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = start + (x as usize) % (body_end - start);
        let bit = 1u8 << ((x >> 40) % 8);
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = pristine.clone();
        bytes[at] ^= bit;
        std::fs::write(dir.path().join(seg.file_name().unwrap()), &bytes).unwrap();
        let (wal, report) =
            Wal::open(config(dir.path())).unwrap_or_else(|e| panic!("flip at {at}: {e}"));
        assert_eq!(report.last_lsn, n - 1, "flip at {at} bit {bit}");
        let stop = report.truncated.expect("a flipped record is cut");
        assert!(!stop.is_corruption());
        assert_eq!(stop.offset, start);
        assert_eq!(read_all(&wal, 1), n - 1);
    }
}

#[test]
fn corruption_of_synced_records_is_reported_then_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40);
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = offset_of(10) + 60;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Wal::open(config(dir.path()))
        .err()
        .expect("corruption must refuse to open");
    match &err {
        WalError::Corrupt {
            segment,
            offset,
            expected_lsn,
            ..
        } => {
            assert_eq!(segment, &seg);
            assert_eq!(*offset, offset_of(10));
            assert_eq!(*expected_lsn, 10);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("--wal-salvage"));
    // The scan tools say the same without changing anything.
    let outcome = scan_dir(dir.path()).unwrap();
    assert!(outcome.stop.as_ref().unwrap().is_corruption());
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    // Salvage keeps the good prefix and moves the rest aside.
    let cfg = WalConfig {
        salvage: true,
        ..config(dir.path())
    };
    let (mut wal, report) = Wal::open(cfg).unwrap();
    assert_eq!(report.last_lsn, 9);
    assert_eq!(report.salvaged.len(), 1);
    assert_eq!(std::fs::read(&report.salvaged[0]).unwrap(), bytes);
    append_n(&mut wal, 10, 12);
    assert_eq!(read_all(&wal, 1), 12);
}

#[test]
fn release_through_never_deletes_an_unreleased_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(config(dir.path())).unwrap();
    append_n(&mut wal, 1, 800);
    let mut released = 0;
    for checkpoint in [0u64, 1, 57, 58, 200, 433, 640, 799, 800] {
        released += wal.release_through(checkpoint).unwrap();
        // Everything after the checkpoint is still readable.
        assert_eq!(
            read_all(&wal, checkpoint + 1),
            800 - checkpoint,
            "checkpoint {checkpoint}"
        );
    }
    assert!(released >= 5, "released {released}");
    // Asking for a released record is an error, not a silent skip.
    assert!(wal.reader(1).is_err());
    append_n(&mut wal, 801, 810);
    drop(wal);
    let (wal, report) = Wal::open(config(dir.path())).unwrap();
    assert_eq!(report.last_lsn, 810);
    assert!(report.first_lsn > 1);
    assert_eq!(read_all(&wal, report.first_lsn), 810 - report.first_lsn + 1);
}

#[test]
fn bad_requests_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(config(dir.path())).unwrap();
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(WalError::Locked(_))
    ));
    let big = vec![0u8; SEG];
    assert!(matches!(
        wal.append(&meta(1), &big),
        Err(WalError::TooLarge { .. })
    ));
    let bad = WalConfig {
        segment_size: 5000,
        ..config(dir.path())
    };
    assert!(matches!(Wal::open(bad), Err(WalError::Config(_))));
    // A damaged segment header is corruption, never silently dropped.
    wal.append(&meta(1), &payload(1)).unwrap();
    drop(wal);
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(WalError::Corrupt { .. })
    ));
}
