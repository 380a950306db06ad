//! Reading the log: following it as it is written ([`WalReader`]) and
//! scanning or walking a directory's records ([`scan_dir`],
//! [`for_each_record`]).

use super::*;

/// One record as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its header.
    pub header: RecordHeader,
    /// Its payload.
    pub payload: &'a [u8],
}

/// A cursor reading records in LSN order, concurrently with the writer.
/// Each record's CRC is checked again as it is read.
pub struct WalReader {
    shared: Arc<Shared>,
    segment: Option<Arc<Segment>>,
    offset: usize,
    next_lsn: u64,
    /// Records below this LSN are skipped (a reader asked for a record the
    /// writer has not reached yet).
    skip_until: u64,
}

impl WalReader {
    pub(super) fn new(shared: Arc<Shared>, from_lsn: u64) -> Result<WalReader, WalError> {
        let mut r = WalReader {
            shared,
            segment: None,
            offset: SEGMENT_HEADER_LEN,
            next_lsn: from_lsn.max(1),
            skip_until: from_lsn,
        };
        r.seek()?;
        Ok(r)
    }

    /// The LSN the next record will have.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn.max(self.skip_until)
    }

    /// Positions at `next_lsn`: the segment holding it, then a walk to it.
    fn seek(&mut self) -> Result<(), WalError> {
        let seg = {
            let segs = self.shared.segments();
            let first = segs.first().map_or(1, |s| s.header.base_lsn);
            if self.next_lsn < first {
                return Err(WalError::Config(format!(
                    "LSN {} was released; the log starts at {first}",
                    self.next_lsn
                )));
            }
            segs.iter()
                .rev()
                .find(|s| s.header.base_lsn <= self.next_lsn)
                .cloned()
        };
        let Some(seg) = seg else { return Ok(()) };
        let mut off = SEGMENT_HEADER_LEN;
        let mut lsn = seg.header.base_lsn;
        let bytes = seg.published();
        while lsn < self.next_lsn {
            match format::read_record(&bytes[off..]) {
                Ok((h, _)) => {
                    off += record_size(h.len as usize);
                    lsn += 1;
                }
                // Not written yet: wait at the end of what is there.
                Err(_) => break,
            }
        }
        self.next_lsn = lsn;
        self.offset = off;
        self.segment = Some(seg);
        Ok(())
    }

    /// The next record, or `None` when the reader has caught up with the
    /// writer. An error means a record in the published region failed its
    /// check (the log was damaged on disk under a running process).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Record<'_>, WalError>> {
        loop {
            match self.step() {
                Ok(Some((h, _))) if h.lsn < self.skip_until => continue,
                Ok(Some((h, start))) => {
                    let seg = self.segment.as_ref()?;
                    let payload = &seg.published()[start..start + h.len as usize];
                    return Some(Ok(Record { header: h, payload }));
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Advances over one record: its header and the offset of its payload.
    fn step(&mut self) -> Result<Option<(RecordHeader, usize)>, WalError> {
        loop {
            let seg = match &self.segment {
                Some(s) => s.clone(),
                None => {
                    self.seek()?;
                    match &self.segment {
                        Some(s) => s.clone(),
                        None => return Ok(None),
                    }
                }
            };
            // Read `sealed` before the bytes: once sealed, the published
            // end is final, so an empty read then means "next segment".
            let sealed = seg.is_sealed();
            let bytes = seg.published();
            if self.offset < bytes.len() {
                let offset = self.offset;
                let expected = self.next_lsn;
                let fault = match format::read_record(&bytes[offset..]) {
                    Ok((h, _)) if h.lsn == expected => {
                        self.offset += record_size(h.len as usize);
                        self.next_lsn += 1;
                        return Ok(Some((h, offset + RECORD_HEADER_LEN)));
                    }
                    Ok((h, _)) => format!("LSN {} where {expected} was expected", h.lsn),
                    Err(f) => f.name().to_string(),
                };
                return Err(WalError::Corrupt {
                    segment: seg.path.clone(),
                    offset,
                    expected_lsn: expected,
                    reason: fault,
                    claimed_durable_lsn: self.shared.durable_lsn.load(Ordering::Acquire),
                });
            }
            if !sealed {
                return Ok(None);
            }
            // The writer moved on: continue in the segment that starts here.
            let next = {
                let segs = self.shared.segments();
                segs.iter()
                    .find(|s| s.header.base_lsn == self.next_lsn)
                    .cloned()
            };
            match next {
                Some(n) => {
                    self.segment = Some(n);
                    self.offset = SEGMENT_HEADER_LEN;
                }
                None => return Ok(None),
            }
        }
    }
}

/// Reads a log directory without writing to it (for `cma wal verify` and
/// `dump`): segment files are read one at a time with ordinary reads.
pub fn scan_dir(dir: &Path) -> Result<ScanOutcome, WalError> {
    let paths = list_segments(dir)?;
    recovery::scan(paths.len(), |i| {
        let path = paths[i].1.clone();
        let bytes = std::fs::read(&path)?;
        Ok((path, bytes))
    })
    .map_err(io_err(format!("read {}", dir.display())))
}

/// Calls `f` for every good record of a log directory, from `from_lsn`,
/// reading segments one at a time.
pub fn for_each_record(
    dir: &Path,
    from_lsn: u64,
    mut f: impl FnMut(&Record<'_>) -> io::Result<()>,
) -> Result<ScanOutcome, WalError> {
    let outcome = scan_dir(dir)?;
    for seg in &outcome.segments {
        if seg.records == 0 {
            continue;
        }
        let bytes =
            std::fs::read(&seg.path).map_err(io_err(format!("read {}", seg.path.display())))?;
        let end = seg.end_offset.min(bytes.len());
        let mut off = SEGMENT_HEADER_LEN;
        while off < end {
            let Ok((h, payload)) = format::read_record(&bytes[off..end]) else {
                break;
            };
            if h.lsn >= from_lsn {
                f(&Record { header: h, payload }).map_err(io_err("write"))?;
            }
            off += record_size(h.len as usize);
        }
    }
    Ok(outcome)
}
