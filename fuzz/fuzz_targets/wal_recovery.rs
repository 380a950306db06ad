//! Arbitrary segment bytes never panic recovery: the read-only scan, a
//! plain open and a salvaging open of a directory holding them.
#![no_main]

use cma::wal::{SyncPolicy, Wal, WalConfig, scan_dir, segment_file_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 3) + 1;
    let dir = tempfile::tempdir().expect("temp dir");
    // Split the rest into `count` segment files. Each file is named after
    // the base LSN its header claims (bytes 16..24), so that headers and
    // names agree as they do on disk, or after its index.
    let part = rest.len().div_ceil(count).max(1);
    // Headers may claim sizes up to 1 GiB, which recovery zero-extends
    // and maps; keep executions fast by skipping claims above 1 MiB.
    let claims_big = rest.chunks(part).any(|b| {
        b.get(24..32)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
            .is_some_and(|size| size > 1 << 20)
    });
    if claims_big {
        return;
    }
    for (i, bytes) in rest.chunks(part).enumerate() {
        let base = bytes
            .get(16..24)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .filter(|b| *b > 0 && *b < u64::MAX / 2)
            .unwrap_or(i as u64 + 1);
        std::fs::write(dir.path().join(segment_file_name(base)), bytes).expect("write segment");
    }
    let _ = scan_dir(dir.path());
    for salvage in [false, true] {
        let config = WalConfig {
            segment_size: 4096,
            sync: SyncPolicy::None,
            salvage,
            ..WalConfig::new(dir.path())
        };
        if let Ok((mut wal, _)) = Wal::open(config) {
            // A recovered log must accept and return a record.
            let meta = cma::wal::RecordMeta {
                kind: cma::wal::RecordKind::Tick,
                time_ns: 0,
                peer: None,
            };
            let lsn = wal.append(&meta, b"x").expect("append after recovery");
            let mut r = wal.reader(lsn).expect("reader");
            let rec = r.next().expect("the record").expect("intact");
            assert_eq!(rec.header.lsn, lsn);
            assert_eq!(rec.payload, b"x");
        }
    }
});
