//! One segment file and its mapping: where the log's `unsafe` lives (its
//! callers in `wal/mod.rs` hold the contracts stated below).
//!
//! A segment is created as a *spare* (a temporary file pre-zeroed with real
//! writes and synced), then *activated* when the writer reaches it: its
//! header (with the base LSN) is written and synced, the file is renamed to
//! its final name, the directory is synced, and the file is mapped with its
//! pages pre-faulted.
//!
//! Concurrency contract: exactly one writer appends, only at offsets at or
//! above `written_end`, and publishes each record by storing the new
//! `written_end` with Release ordering. Readers load `written_end` with
//! Acquire and read only below it. Bytes below `written_end` are never
//! written again while the mapping lives (segments are deleted, never
//! recycled in place), so a shared slice of them is never aliased by a write.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::format::{SEGMENT_HEADER_LEN, SegmentHeader, encode_segment_header};

/// A mapped segment.
pub(crate) struct Segment {
    /// Its header.
    pub header: SegmentHeader,
    /// Its file path.
    pub path: PathBuf,
    map: MmapRaw,
    written_end: AtomicUsize,
    sealed: AtomicBool,
}

/// A pre-zeroed, mapped and pre-faulted file waiting to become the next
/// segment.
pub(crate) struct Spare {
    file: File,
    path: PathBuf,
    size: usize,
    map: MmapRaw,
}

/// Maps a file shared and read-write, with its page tables populated
/// *writable* (`MADV_POPULATE_WRITE`), so that appends take no page fault:
/// a shared mapping populated only for reading still faults on the first
/// write of every page, for the file system's dirty tracking, which costs
/// microseconds per page on ext4. Falls back to a read populate on kernels
/// before 5.14.
fn map_prefaulted(file: &File) -> io::Result<MmapRaw> {
    let map = MmapOptions::new().map_raw(file)?;
    if map.advise(memmap2::Advice::PopulateWrite).is_err() {
        map.advise(memmap2::Advice::WillNeed)?;
    }
    Ok(map)
}

/// The file name of the segment whose first record has `base_lsn`.
pub fn segment_file_name(base_lsn: u64) -> String {
    format!("wal-{base_lsn:020}.seg")
}

/// The base LSN in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

/// Syncs a directory, so that creations, renames and deletions in it last.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spare {
    /// Creates `dir/spare-<tag>.tmp` of `size` bytes, zero-filled with real
    /// page-sized writes (so no later write allocates blocks or faults on a
    /// hole, and the page cache holds it in small folios) and synced.
    pub fn create(dir: &Path, size: usize, tag: u64) -> io::Result<Spare> {
        let path = dir.join(format!("spare-{tag}.tmp"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // Page-sized writes (DESIGN.md rule 3): written in large chunks,
        // the file would sit in large page-cache folios, and each one-page
        // msync of the log would write back a whole folio (measured by
        // `cma bench ack`: 2.5x the cost of a page).
        let zeros = vec![0u8; 4096];
        let mut left = size;
        while left > 0 {
            let n = left.min(zeros.len());
            file.write_all(&zeros[..n])?;
            left -= n;
        }
        file.sync_all()?;
        let map = map_prefaulted(&file)?;
        Ok(Spare {
            file,
            path,
            size,
            map,
        })
    }

    /// Turns the spare into the segment starting at `base_lsn`: writes
    /// and syncs its header through the mapping (a ranged sync, which
    /// leaves the pre-faulted pages after it writable), renames it to its
    /// final name and syncs the directory.
    pub fn activate(self, dir: &Path, base_lsn: u64, created_unix_ns: u64) -> io::Result<Segment> {
        let header = SegmentHeader {
            base_lsn,
            segment_size: self.size as u64,
            created_unix_ns,
        };
        let mut seg = Segment {
            header,
            path: self.path,
            map: self.map,
            written_end: AtomicUsize::new(0),
            sealed: AtomicBool::new(false),
        };
        // SAFETY: `seg` was built just above and has not been shared: this
        // is its only writer and no reader exists.
        unsafe {
            seg.append(0, SEGMENT_HEADER_LEN, |dst| {
                dst.copy_from_slice(&encode_segment_header(&header))
            });
        }
        seg.flush(0, SEGMENT_HEADER_LEN)?;
        let path = dir.join(segment_file_name(base_lsn));
        std::fs::rename(&seg.path, &path)?;
        sync_dir(dir)?;
        seg.path = path;
        drop(self.file);
        Ok(seg)
    }
}

impl Segment {
    /// Maps an existing segment file whose header was already checked;
    /// records end at `written_end`. Its pages are not pre-faulted (see
    /// [`Segment::prefault`]).
    pub fn map(
        file: File,
        path: PathBuf,
        header: SegmentHeader,
        written_end: usize,
    ) -> io::Result<Segment> {
        let len = file.metadata()?.len();
        if len != header.segment_size || len < SEGMENT_HEADER_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: size {len} differs from its header's {}",
                    path.display(),
                    header.segment_size
                ),
            ));
        }
        let map = MmapOptions::new().map_raw(&file)?;
        assert!(written_end <= map.len());
        Ok(Segment {
            header,
            path,
            map,
            written_end: AtomicUsize::new(written_end),
            sealed: AtomicBool::new(false),
        })
    }

    /// Bytes in the segment.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// End of the records published to readers.
    pub fn written_end(&self) -> usize {
        self.written_end.load(Ordering::Acquire)
    }

    /// The published bytes, `[0, written_end)`.
    pub fn published(&self) -> &[u8] {
        let end = self.written_end();
        // SAFETY: the mapping is `len()` bytes and lives as long as `self`;
        // `end <= len()` (asserted when it is stored). Bytes below
        // `written_end` are never written again (module contract), and the
        // Acquire load above orders the writer's stores of them before this
        // read, so the shared slice aliases no write.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), end) }
    }

    /// The whole mapping, written part and zeroed rest, for recovery's scan.
    ///
    /// # Safety
    /// No writer of this segment may exist while the slice lives (recovery
    /// holds the directory lock and runs before the writer is built).
    pub unsafe fn whole(&self) -> &[u8] {
        // SAFETY: the mapping is `len()` bytes and lives as long as `self`;
        // the caller guarantees nothing writes it while the slice lives.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// Writes a record at `offset` (at or above `written_end`) and publishes
    /// it. `fill` receives exactly `size` bytes to fill.
    ///
    /// # Safety
    /// The caller must be the segment's only writer (the `Wal` that owns it).
    pub unsafe fn append(&self, offset: usize, size: usize, fill: impl FnOnce(&mut [u8])) {
        assert!(
            offset >= self.written_end.load(Ordering::Relaxed),
            "append below the written end"
        );
        assert!(offset + size <= self.len(), "append past the segment end");
        // SAFETY: `[offset, offset + size)` lies inside the mapping (asserted)
        // and at or above `written_end`, so no reader reads it (they stop at
        // `written_end`), and the caller is the only writer, so no other
        // reference to these bytes exists while `fill` runs.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset), size) };
        fill(dst);
        self.written_end.store(offset + size, Ordering::Release);
    }

    /// Overwrites `[from, len())` with zeros through the file (recovery's
    /// truncation of a torn tail) and syncs it.
    ///
    /// # Safety
    /// No reader or writer of this segment may exist yet (recovery only).
    pub unsafe fn zero_tail(&self, from: usize, file: &File) -> io::Result<()> {
        let zeros = vec![0u8; 1 << 16];
        let mut at = from;
        while at < self.len() {
            let n = (self.len() - at).min(zeros.len());
            file.write_all_at(&zeros[..n], at as u64)?;
            at += n;
        }
        file.sync_data()?;
        self.written_end
            .store(from.min(self.len()), Ordering::Release);
        Ok(())
    }

    /// msync(MS_SYNC) of `[from, to)`: returns once those bytes are on disk.
    pub fn flush(&self, from: usize, to: usize) -> io::Result<()> {
        if to > from {
            self.map.flush_range(from, to - from)?;
        }
        Ok(())
    }

    /// Populates the page tables writable (see `map_prefaulted`); for a
    /// recovered segment, after recovery's full sync.
    pub fn prefault(&self) {
        if self.map.advise(memmap2::Advice::PopulateWrite).is_err() {
            let _ = self.map.advise(memmap2::Advice::WillNeed);
        }
    }

    /// Sets the published end (recovery, before readers exist).
    pub fn set_written_end(&self, end: usize) {
        assert!(end <= self.len());
        self.written_end.store(end, Ordering::Release);
    }

    /// The writer continues in this segment (recovery's last segment).
    pub fn unseal(&self) {
        self.sealed.store(false, Ordering::Release);
    }

    /// The writer has moved to the next segment.
    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Has the writer moved on? (Then `written_end` is final.)
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }
}
