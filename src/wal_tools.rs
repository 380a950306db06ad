//! `cma wal verify`, `cma wal dump` and the crash-test child: tools over a
//! log directory. They read segment files with ordinary reads and never
//! change them, so they are safe beside a running daemon.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::decode::{decode_datagram, decode_logged};
use crate::wal::{self, RecordKind, RecordMeta, ScanOutcome, SyncPolicy, Wal, WalConfig, WalError};

/// Verdict of `cma wal verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checks out and the log ends cleanly.
    Clean,
    /// A tail that was never synced would be discarded at the next open.
    TornTail,
    /// Synced records are damaged.
    Corrupt,
}

/// Checks every record of a log and prints a summary (or JSON).
pub fn verify(dir: &Path, as_json: bool, out: &mut dyn Write) -> Result<Verdict, WalError> {
    let s = wal::scan_dir(dir)?;
    let verdict = match &s.stop {
        None => Verdict::Clean,
        Some(stop) if stop.is_corruption() => Verdict::Corrupt,
        Some(_) => Verdict::TornTail,
    };
    let w = |out: &mut dyn Write, text: String| {
        out.write_all(text.as_bytes()).map_err(|e| WalError::Io {
            context: "write".into(),
            source: e,
        })
    };
    if as_json {
        w(out, format!("{}\n", summary_json(&s, verdict)))?;
        return Ok(verdict);
    }
    w(out, format!("segments: {}\n", s.segments.len()))?;
    for seg in &s.segments {
        let base = seg.header.map_or("?".into(), |h| h.base_lsn.to_string());
        w(
            out,
            format!(
                "  {}  base LSN {base}, {} records, {} bytes used\n",
                seg.path.display(),
                seg.records,
                seg.end_offset
            ),
        )?;
    }
    w(
        out,
        format!(
            "records: {}, LSN {}..={}\n",
            s.records, s.first_lsn, s.last_lsn
        ),
    )?;
    w(
        out,
        format!(
            "highest durable LSN claimed by a record: {}\n",
            s.claimed_durable_lsn
        ),
    )?;
    match &s.stop {
        None => w(out, "end: clean\n".into())?,
        Some(stop) => {
            let seg = &s.segments[stop.segment].path;
            let what = if stop.is_corruption() {
                "CORRUPT: synced records are damaged; the daemon will refuse to start without --wal-salvage"
            } else {
                "torn tail that was never synced; the next open discards it"
            };
            w(
                out,
                format!(
                    "end: {what}\n  at {} byte {} (LSN {} expected): {}\n  after it: {} intact records, {} non-zero bytes, durable LSN claimed {}\n",
                    seg.display(),
                    stop.offset,
                    stop.expected_lsn,
                    stop.reason,
                    stop.records_after,
                    stop.bytes_after,
                    stop.claimed_durable_lsn
                ),
            )?;
        }
    }
    Ok(verdict)
}

fn summary_json(s: &ScanOutcome, verdict: Verdict) -> Value {
    json!({
        "verdict": format!("{verdict:?}").to_lowercase(),
        "segments": s.segments.iter().map(|seg| json!({
            "path": seg.path.display().to_string(),
            "base_lsn": seg.header.map(|h| h.base_lsn),
            "records": seg.records,
            "end_offset": seg.end_offset,
        })).collect::<Vec<_>>(),
        "records": s.records,
        "first_lsn": s.first_lsn,
        "last_lsn": s.last_lsn,
        "claimed_durable_lsn": s.claimed_durable_lsn,
        "stop": s.stop.as_ref().map(|st| json!({
            "segment": s.segments[st.segment].path.display().to_string(),
            "offset": st.offset,
            "expected_lsn": st.expected_lsn,
            "reason": st.reason,
            "records_after": st.records_after,
            "bytes_after": st.bytes_after,
            "claimed_durable_lsn": st.claimed_durable_lsn,
            "corruption": st.is_corruption(),
        })),
    })
}

/// Prints records from `from_lsn` as JSON lines; with `decode`, FrameSet
/// payloads are decoded through the classifier.
pub fn dump(
    dir: &Path,
    from_lsn: u64,
    decode: bool,
    out: &mut dyn Write,
) -> Result<ScanOutcome, WalError> {
    wal::for_each_record(dir, from_lsn, |rec| {
        let h = &rec.header;
        let mut v = json!({
            "lsn": h.lsn,
            "durable_lsn": h.durable_lsn,
            "kind": h.meta.kind.name(),
            "time_ns": h.meta.time_ns,
            "peer": h.meta.peer.map(|p| p.to_string()),
            "len": h.len,
        });
        if decode && h.meta.kind == RecordKind::FrameSet {
            v["framesets"] = Value::Array(decode_datagram(rec.payload, &Value::Null));
        } else if decode && h.meta.kind == RecordKind::Classified {
            v["framesets"] = Value::Array(vec![decode_logged(rec.payload)]);
        } else {
            v["payload"] = json!(hex::encode(rec.payload));
        }
        writeln!(out, "{v}")
    })
}

/// The payload the crash-test child writes as record number `i`: `i`
/// (8 bytes, little-endian), then `i % 97` bytes of `i as u8`.
pub fn crash_payload(i: u64) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.extend(std::iter::repeat_n(i as u8, (i % 97) as usize));
    p
}

/// The crash-test child: appends numbered records in batch mode and prints
/// `durable N` each time the durable LSN advances, until `limit` passes
/// (so an orphaned child stops by itself).
pub fn crash_child(
    dir: &Path,
    segment_size: usize,
    limit: Duration,
    out: &mut dyn Write,
) -> Result<(), WalError> {
    let config = WalConfig {
        segment_size,
        sync: SyncPolicy::Inline {
            max_records: 64,
            max_delay_us: 200,
        },
        ..WalConfig::new(dir)
    };
    let (mut wal, report) = Wal::open(config)?;
    let mut i = report.last_lsn + 1;
    let mut reported = wal.durable_lsn();
    let start = Instant::now();
    let io = |e: std::io::Error| WalError::Io {
        context: "write stdout".into(),
        source: e,
    };
    while start.elapsed() < limit {
        let meta = RecordMeta {
            kind: RecordKind::FrameSet,
            time_ns: i,
            peer: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 1984))),
        };
        let lsn = wal.append(&meta, &crash_payload(i))?;
        if lsn != i {
            return Err(WalError::Config(format!(
                "record {i} got LSN {lsn}: the crash child needs an empty log or its own"
            )));
        }
        i += 1;
        let durable = wal.sync_if_due(Instant::now())?;
        if durable > reported {
            reported = durable;
            writeln!(out, "durable {durable}").map_err(io)?;
            out.flush().map_err(io)?;
        }
    }
    Ok(())
}
