//! Crash test: a child process appends numbered records in batch mode and
//! prints each durable LSN; we SIGKILL it at a random moment, reopen the log
//! and check that every record reported durable is there and intact, and
//! that the log ends cleanly. 20 seeds.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cma::wal::{Wal, WalConfig};
use cma::wal_tools::crash_payload;

/// xorshift64*: a small seeded generator for the kill moments.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn sigkill_at_random_moments_loses_no_durable_record() {
    for seed in 1..=20u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cma"))
            .args([
                "wal",
                "crash-child",
                "--segment-size",
                "65536",
                "--seconds",
                "60",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the crash child");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a random number of durable reports, plus a random
        // few hundred microseconds so the kill lands anywhere in a batch.
        let reports = 1 + next(&mut rng) % 60;
        let mut durable = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..reports {
            let line = lines.next().expect("child reports").expect("utf-8 line");
            durable = line
                .strip_prefix("durable ")
                .expect("durable N")
                .parse()
                .expect("number");
            assert!(Instant::now() < deadline, "seed {seed}: child too slow");
        }
        std::thread::sleep(Duration::from_micros(next(&mut rng) % 500));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");

        let (wal, report) =
            Wal::open(WalConfig::new(dir.path())).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            report.last_lsn >= durable,
            "seed {seed}: durable {durable} reported, log ends at {}",
            report.last_lsn
        );
        assert!(
            report.truncated.as_ref().is_none_or(|s| !s.is_corruption()),
            "seed {seed}: {report:?}"
        );
        let mut reader = wal.reader(1).unwrap();
        let mut want = 1;
        while let Some(rec) = reader.next() {
            let rec = rec.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(rec.header.lsn, want, "seed {seed}");
            assert_eq!(
                rec.payload,
                &crash_payload(want)[..],
                "seed {seed}: record {want}"
            );
            want += 1;
        }
        assert_eq!(want - 1, report.last_lsn, "seed {seed}");
    }
}
