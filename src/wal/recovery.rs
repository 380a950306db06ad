//! Finding where the log really ends.
//!
//! The scan walks records from the first segment while each one has its
//! magic, a length inside the segment, a matching CRC32C and the next LSN.
//! Where that stops (a zeroed, torn or foreign record) it decides between
//! two cases by looking at every record-shaped thing after that point, in
//! that segment and in later ones:
//!
//! - **tail**: no later record claims (in its `durable_lsn` field) that the
//!   records from the stopping point on were durable. These are writes that
//!   never completed a sync, so no ACK was sent for them: recovery discards
//!   them and the log ends cleanly at the last good record. A crash during
//!   a group commit leaves exactly this, since mapped pages reach disk in
//!   any order.
//! - **corruption**: some later intact record says that records at or past
//!   the stopping point had been synced. Acknowledged data is damaged; the
//!   daemon refuses to start unless told to salvage.
//!
//! The scan itself never writes; [`ScanOutcome`] says what to do.

use std::path::PathBuf;

use super::format::{
    RECORD_ALIGN, RECORD_HEADER_LEN, RECORD_MAGIC, RecordFault, SEGMENT_HEADER_LEN, SegmentHeader,
    decode_segment_header, read_record,
};

/// What the scan found in one segment's good region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// File path.
    pub path: PathBuf,
    /// Header (if it could be read).
    pub header: Option<SegmentHeader>,
    /// Good records in it.
    pub records: u64,
    /// Offset just past its last good record.
    pub end_offset: usize,
}

/// Where and why the good log stops before the end of the written bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// Index into [`ScanOutcome::segments`].
    pub segment: usize,
    /// Byte offset in that segment.
    pub offset: usize,
    /// The LSN the next good record would have had.
    pub expected_lsn: u64,
    /// What was there instead.
    pub reason: String,
    /// Intact records found after the stopping point (discarded).
    pub records_after: u64,
    /// Non-zero bytes after the stopping point, across segments (discarded).
    pub bytes_after: u64,
    /// The highest durable LSN that any record after the stop claims.
    pub claimed_durable_lsn: u64,
    /// A segment's header is damaged or out of sequence: the writer never
    /// leaves that behind, so it is corruption whatever records claim.
    pub structural: bool,
}

impl Stop {
    /// Does the damage reach records that were synced (and so acknowledged)?
    pub fn is_corruption(&self) -> bool {
        self.structural || self.claimed_durable_lsn >= self.expected_lsn
    }
}

/// The result of scanning a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Each segment in LSN order.
    pub segments: Vec<SegmentScan>,
    /// LSN of the first good record (0: none).
    pub first_lsn: u64,
    /// LSN of the last good record (0: none).
    pub last_lsn: u64,
    /// Good records in all.
    pub records: u64,
    /// The highest durable LSN claimed by a good record.
    pub claimed_durable_lsn: u64,
    /// Set when non-zero bytes follow the last good record.
    pub stop: Option<Stop>,
}

/// One segment's bytes for the scan (the whole file).
pub trait SegmentBytes {
    /// The file's bytes.
    fn bytes(&self) -> &[u8];
}

impl SegmentBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl SegmentBytes for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Scans segments given in base-LSN order. `load(i)` yields segment `i`'s
/// path and bytes (loaded lazily, one at a time, so a large log is never
/// held in memory at once by file-reading callers).
pub fn scan<B: SegmentBytes>(
    count: usize,
    mut load: impl FnMut(usize) -> std::io::Result<(PathBuf, B)>,
) -> std::io::Result<ScanOutcome> {
    let mut out = ScanOutcome::default();
    let mut expected: Option<u64> = None;
    for i in 0..count {
        let (path, seg) = load(i)?;
        let bytes = seg.bytes();
        let header = decode_segment_header(bytes).ok();
        out.segments.push(SegmentScan {
            path,
            header,
            records: 0,
            end_offset: SEGMENT_HEADER_LEN.min(bytes.len()),
        });
        if let Some(stop) = out.stop.as_mut() {
            // Past the stopping point: only look for records that claim
            // durability.
            tally_after(bytes, SEGMENT_HEADER_LEN, stop);
            continue;
        }
        let Some(h) = header else {
            let mut stop = new_stop(i, 0, expected.unwrap_or(1), "bad segment header".into());
            stop.structural = true;
            stop.bytes_after += nonzero(bytes);
            out.stop = Some(stop);
            continue;
        };
        let want = *expected.get_or_insert(h.base_lsn);
        if h.base_lsn != want {
            let reason = format!(
                "segment starts at LSN {} where {want} was expected",
                h.base_lsn
            );
            let mut stop = new_stop(i, SEGMENT_HEADER_LEN, want, reason);
            stop.structural = true;
            tally_after(bytes, SEGMENT_HEADER_LEN, &mut stop);
            out.stop = Some(stop);
            continue;
        }
        let mut off = SEGMENT_HEADER_LEN;
        let mut next = want;
        let fault = loop {
            match read_record(&bytes[off..]) {
                Ok((rh, _)) if rh.lsn == next => {
                    if out.first_lsn == 0 {
                        out.first_lsn = rh.lsn;
                    }
                    out.claimed_durable_lsn = out.claimed_durable_lsn.max(rh.durable_lsn);
                    out.records += 1;
                    out.segments[i].records += 1;
                    out.last_lsn = rh.lsn;
                    next += 1;
                    off += super::format::record_size(rh.len as usize);
                }
                Ok((rh, _)) => break Some(format!("LSN {} where {next} was expected", rh.lsn)),
                Err(RecordFault::Zero) => break None,
                Err(f) => break Some(f.name().to_string()),
            }
        };
        out.segments[i].end_offset = off;
        expected = Some(next);
        // A zeroed record start ends this segment; anything non-zero after
        // it, or any other fault, stops the good log here.
        let faulted = fault.is_some();
        let mut stop = new_stop(
            i,
            off,
            next,
            fault.unwrap_or_else(|| "zeroed record".into()),
        );
        tally_after(bytes, off, &mut stop);
        if faulted || stop.bytes_after > 0 {
            out.stop = Some(stop);
        }
    }
    Ok(out)
}

fn new_stop(segment: usize, offset: usize, expected_lsn: u64, reason: String) -> Stop {
    Stop {
        segment,
        offset,
        expected_lsn,
        reason,
        records_after: 0,
        bytes_after: 0,
        claimed_durable_lsn: 0,
        structural: false,
    }
}

fn nonzero(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b != 0).count() as u64
}

/// Counts non-zero bytes from `from` on, and finds intact records there (at
/// any aligned offset) to learn the highest durable LSN they claim.
fn tally_after(bytes: &[u8], from: usize, stop: &mut Stop) {
    if from >= bytes.len() {
        return;
    }
    stop.bytes_after += nonzero(&bytes[from..]);
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut off = from.next_multiple_of(RECORD_ALIGN);
    while off + RECORD_HEADER_LEN <= bytes.len() {
        if bytes[off..off + 2] == magic
            && let Ok((rh, _)) = read_record(&bytes[off..])
        {
            stop.records_after += 1;
            stop.claimed_durable_lsn = stop.claimed_durable_lsn.max(rh.durable_lsn);
            off += super::format::record_size(rh.len as usize);
            continue;
        }
        off += RECORD_ALIGN;
    }
}
