//! The write-ahead log: memory-mapped, preallocated, segmented, with group
//! commit. It is the single source of truth: a FrameSet is acknowledged only
//! once its record is durable here, and the decider's state is a function of
//! the records (recovery is replay).
//!
//! # What it promises
//! - [`Wal::append`] copies one record into the mapping (one `memcpy`, no
//!   system call, no allocation) and returns its LSN; LSNs start at 1 and run
//!   contiguously.
//! - Two watermarks: [`Wal::written_lsn`] (readers may read up to it) and
//!   [`Wal::durable_lsn`] (it is on disk: ACKs may be sent up to it).
//! - Group commit: [`SyncPolicy::Batch`] on a sync thread ([`Syncer`]), each
//!   sync covering everything written while the previous one ran; or
//!   [`SyncPolicy::Inline`] in the writer, every `max_records` records or
//!   `max_delay_us` after the first unsynced one, whichever comes first.
//! - A failed `msync` is never retried (Linux marks the pages clean after a
//!   failed write-back, so a retry would "succeed" without the data): the log
//!   refuses every later append with [`WalError::Failed`], and the daemon
//!   exits so that recovery starts from what is on disk.
//! - Recovery on [`Wal::open`] ends the log at the last intact record and
//!   discards a torn tail that was never synced; damage to records that were
//!   synced is [`WalError::Corrupt`] unless `salvage` is set (see
//!   `recovery.rs` for how the two are told apart).
//! - Never panics on any file content.
//!
//! # What it does not do
//! It does not interpret payloads, does not deduplicate, and has one
//! writer. It does not recycle segments in place: released ones are deleted.
//!
//! # On-disk format (all integers little-endian)
//! A directory holds segment files `wal-<base LSN, 20 digits>.seg`, all of
//! the configured size, a `LOCK` file (held with an exclusive lock by the
//! one process that writes), and possibly `spare-<n>.tmp` files being
//! prepared (deleted at open).
//!
//! Segment header, 64 bytes at offset 0:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CMAWAL\0\x01` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | header length (64) |
//! | 16 | 8 | base LSN: the LSN of the segment's first record (>= 1) |
//! | 24 | 8 | segment size in bytes (the file's size) |
//! | 32 | 8 | creation time, ns since the Unix epoch |
//! | 40 | 20 | zero |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//!
//! Records follow from offset 64, each starting at a multiple of 8, never
//! spanning segments. A record is a 56-byte header, the payload, and zero
//! padding to the next multiple of 8:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `0x57a1` |
//! | 2 | 1 | kind: 1 FrameSet (older logs), 2 TICK, 3 RESUME, 4 CONFIG, 5 mark, 6 classified FrameSet; others kept as is |
//! | 3 | 1 | peer address family: 0 none, 4 IPv4 (stored IPv4-mapped), 6 IPv6 |
//! | 4 | 4 | payload length (at most 1 MiB) |
//! | 8 | 8 | LSN |
//! | 16 | 8 | durable LSN known to the writer when it wrote this record |
//! | 24 | 8 | receive time (log clock), ns |
//! | 32 | 16 | peer IPv6 address |
//! | 48 | 2 | peer port |
//! | 50 | 2 | zero |
//! | 52 | 4 | CRC32C of bytes 0..52 and the payload |
//! | 56 | len | payload |
//!
//! A zero magic where a record would start ends the segment's records; the
//! rest of a segment is zero (segments are pre-zeroed with real writes).
//! `docs/wal-format.md` repeats these tables with the recovery rules.

mod files;
mod format;
mod reader;
mod recovery;
#[allow(unsafe_code)]
mod segment;
mod syncer;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use format::{
    RECORD_HEADER_LEN, RECORD_PAYLOAD_MAX, RecordFault, RecordHeader, RecordKind, RecordMeta,
    SEGMENT_HEADER_LEN, SEGMENT_SIZE_MAX, SegmentHeader, record_size,
};
pub use reader::{Record, WalReader, for_each_record, scan_dir};
pub use recovery::{ScanOutcome, SegmentScan, Stop};
pub use segment::{parse_segment_file_name, segment_file_name};
pub use syncer::{Syncer, Watermarks};

use files::{
    check_config, list_segments, lock_dir, read_header, remove_spares, restore_size, salvage_name,
    unix_ns,
};
use segment::{Segment, Spare, sync_dir};

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: usize = 64 << 20;
/// Smallest segment size accepted (tests use small segments).
pub const MIN_SEGMENT_SIZE: usize = 4096;

/// When the log syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Group commit by the writer itself: `append` syncs after
    /// `max_records` unsynced records, or once the oldest unsynced record is
    /// `max_delay_us` old, whichever comes first.
    Inline {
        /// Records per sync at most (1 ..= 1,000,000).
        max_records: u32,
        /// Microseconds an unsynced record may wait at most.
        max_delay_us: u64,
    },
    /// Sync after every record (for comparison; slow).
    Always,
    /// Group commit on another thread (the daemon's default, `wal.sync =
    /// "batch"`): `append` never syncs; a [`Syncer`] does, each sync
    /// covering everything written while the previous one ran. The writer
    /// still syncs the segment it leaves at rotation, and everything on
    /// [`Wal::sync`] and drop.
    Batch,
    /// Never sync: durable = written. **Unsafe**: a crash of the machine
    /// loses acknowledged records. Only for tmpfs and benchmarks.
    None,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy::Inline {
            max_records: 256,
            max_delay_us: 500,
        }
    }
}

/// How to open a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// The directory of segment files (created if missing).
    pub dir: PathBuf,
    /// Bytes per segment file (>= `MIN_SEGMENT_SIZE`, multiple of 4096).
    pub segment_size: usize,
    /// When to sync.
    pub sync: SyncPolicy,
    /// On corruption of synced records, keep the good prefix and move the
    /// rest aside instead of refusing to open.
    pub salvage: bool,
    /// LSN of the first record of a new, empty log.
    pub first_lsn: u64,
}

impl WalConfig {
    /// Defaults for a directory: 64 MiB segments, batch sync.
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            sync: SyncPolicy::default(),
            salvage: false,
            first_lsn: 1,
        }
    }
}

/// Errors of the log.
#[derive(Debug)]
pub enum WalError {
    /// A file operation failed.
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// Records that were synced are damaged.
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the first bad record.
        offset: usize,
        /// The LSN the record there should have had.
        expected_lsn: u64,
        /// What was wrong.
        reason: String,
        /// The durable LSN later records claim.
        claimed_durable_lsn: u64,
    },
    /// A sync failed earlier: the log accepts nothing more.
    Failed,
    /// The record is larger than a segment or `RECORD_PAYLOAD_MAX`.
    TooLarge {
        /// Payload bytes asked for.
        len: usize,
    },
    /// Another process holds the log's lock.
    Locked(PathBuf),
    /// The configuration is unusable.
    Config(String),
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Io { context, source } => write!(f, "{context}: {source}"),
            WalError::Corrupt {
                segment,
                offset,
                expected_lsn,
                reason,
                claimed_durable_lsn,
            } => write!(
                f,
                "WAL corrupt in {} at byte {offset}: {reason} (record LSN {expected_lsn} was synced: \
                 a later record says LSNs up to {claimed_durable_lsn} were durable); \
                 start with --wal-salvage to keep the records before it and move the rest aside",
                segment.display()
            ),
            WalError::Failed => write!(
                f,
                "an earlier WAL sync failed; the log accepts no more records"
            ),
            WalError::TooLarge { len } => {
                write!(f, "record of {len} bytes is too large for the WAL")
            }
            WalError::Locked(p) => write!(f, "{} is locked by another process", p.display()),
            WalError::Config(s) => write!(f, "bad WAL configuration: {s}"),
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> WalError {
    let context = context.into();
    move |source| WalError::Io { context, source }
}

/// What recovery found and did when the log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments kept.
    pub segments: usize,
    /// Records kept.
    pub records: u64,
    /// First and last LSN kept (0 when the log is empty).
    pub first_lsn: u64,
    /// Last LSN kept.
    pub last_lsn: u64,
    /// Where the log was cut, and why; `None` when it ended cleanly.
    pub truncated: Option<Stop>,
    /// Files moved aside by salvage.
    pub salvaged: Vec<PathBuf>,
}

/// State shared by the writer and its readers.
struct Shared {
    segments: Mutex<Vec<Arc<Segment>>>,
    written_lsn: AtomicU64,
    durable_lsn: AtomicU64,
    failed: AtomicBool,
}

impl Shared {
    /// The segment list. A panic while it was held leaves it consistent
    /// (every change is one push or one drain), so a poisoned lock is used.
    fn segments(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Segment>>> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The log's writer. One per directory (an exclusive lock guards it).
pub struct Wal {
    shared: Arc<Shared>,
    config: WalConfig,
    _lock: File,
    current: Arc<Segment>,
    /// Next write offset in `current`.
    offset: usize,
    /// `current` is synced below this offset.
    synced_offset: usize,
    next_lsn: u64,
    /// Records appended since the last sync, and when the first of them was.
    pending: u32,
    pending_since: Option<Instant>,
    spare: Option<JoinHandle<io::Result<Spare>>>,
    spare_tag: u64,
    stats: WalStats,
}

/// Counters of a writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended.
    pub appended: u64,
    /// Syncs done.
    pub syncs: u64,
    /// Records made durable by syncs (sum of batch sizes).
    pub synced_records: u64,
    /// Largest batch.
    pub max_batch: u32,
    /// Segments started.
    pub rotations: u64,
}

impl Wal {
    /// Opens (or creates) the log in `config.dir`, recovering it.
    ///
    /// Kept whole: recovery is one sequence (lock, map the segments, scan,
    /// cut at the stop, pick the current segment) whose order is the
    /// argument for its safety; split, that order would hide in the calls.
    pub fn open(config: WalConfig) -> Result<(Wal, RecoveryReport), WalError> {
        check_config(&config)?;
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let lock = lock_dir(&dir)?;
        remove_spares(&dir)?;
        let paths = list_segments(&dir)?;
        let mut segments = Vec::with_capacity(paths.len());
        let mut files = Vec::with_capacity(paths.len());
        let mut salvaged = Vec::new();
        for (_, path) in &paths {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_err(format!("open {}", path.display())))?;
            let header = match read_header(&file, path) {
                Ok(h) => h,
                Err(e) if config.salvage => {
                    let aside = salvage_name(path, unix_ns() / 1_000_000_000);
                    log::error!("WAL salvage: {e}; moving it to {}", aside.display());
                    std::fs::rename(path, &aside)
                        .map_err(io_err(format!("move {}", path.display())))?;
                    salvaged.push(aside);
                    continue;
                }
                Err(e) => return Err(e),
            };
            restore_size(&file, path, &header)?;
            let seg = Segment::map(
                file.try_clone().map_err(io_err("dup"))?,
                path.clone(),
                header,
                SEGMENT_HEADER_LEN,
            )
            .map_err(io_err(format!("map {}", path.display())))?;
            segments.push(seg);
            files.push(file);
        }
        let outcome = recovery::scan(segments.len(), |i| {
            // SAFETY: `Wal::open`, before the writer exists, with the
            // directory lock held: nothing writes the mapping meanwhile.
            #[allow(unsafe_code)]
            let whole = unsafe { segments[i].whole() };
            Ok((segments[i].path.clone(), whole))
        })
        .map_err(io_err("scan"))?;
        let mut report = RecoveryReport {
            first_lsn: outcome.first_lsn,
            last_lsn: outcome.last_lsn,
            records: outcome.records,
            salvaged,
            ..RecoveryReport::default()
        };
        // Cut the log at the stop: zero the rest of that segment, and drop
        // (or, salvaging, move aside) every later segment.
        let mut keep = segments.len();
        if let Some(stop) = &outcome.stop {
            if stop.is_corruption() && !config.salvage {
                return Err(WalError::Corrupt {
                    segment: outcome.segments[stop.segment].path.clone(),
                    offset: stop.offset,
                    expected_lsn: stop.expected_lsn,
                    reason: stop.reason.clone(),
                    claimed_durable_lsn: stop.claimed_durable_lsn,
                });
            }
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let cut_whole =
                stop.offset <= SEGMENT_HEADER_LEN && outcome.segments[stop.segment].records == 0;
            keep = if cut_whole {
                stop.segment
            } else {
                stop.segment + 1
            };
            if config.salvage && stop.is_corruption() {
                for (i, seg) in segments.iter().enumerate().skip(stop.segment) {
                    let aside = salvage_name(&seg.path, stamp);
                    if i < keep {
                        std::fs::copy(&seg.path, &aside)
                            .map_err(io_err(format!("copy {}", seg.path.display())))?;
                    } else {
                        std::fs::rename(&seg.path, &aside)
                            .map_err(io_err(format!("move {}", seg.path.display())))?;
                    }
                    report.salvaged.push(aside);
                }
            }
            if keep > stop.segment {
                // SAFETY: `Wal::open`, before any reader or writer of the
                // segment exists.
                #[allow(unsafe_code)]
                let zeroed =
                    unsafe { segments[stop.segment].zero_tail(stop.offset, &files[stop.segment]) };
                zeroed.map_err(io_err(format!(
                    "truncate {}",
                    segments[stop.segment].path.display()
                )))?;
            }
            for seg in &segments[keep..] {
                if seg.path.exists() {
                    std::fs::remove_file(&seg.path)
                        .map_err(io_err(format!("remove {}", seg.path.display())))?;
                }
            }
            sync_dir(&dir).map_err(io_err("sync directory"))?;
            log::warn!(
                "WAL recovery: cut the log after LSN {} in {} at byte {}: {}; discarded {} intact records and {} non-zero bytes after it{}",
                outcome.last_lsn,
                outcome.segments[stop.segment].path.display(),
                stop.offset,
                stop.reason,
                stop.records_after,
                stop.bytes_after,
                if stop.is_corruption() {
                    " (SALVAGED: synced records were lost)"
                } else {
                    " (never synced)"
                }
            );
            report.truncated = Some(stop.clone());
        }
        segments.truncate(keep);
        let mut segments: Vec<Arc<Segment>> = segments.into_iter().map(Arc::new).collect();
        for (seg, scan) in segments.iter().zip(&outcome.segments) {
            seg.set_written_end(scan.end_offset);
            seg.seal();
        }
        let next_lsn = if outcome.last_lsn > 0 {
            outcome.last_lsn + 1
        } else {
            segments
                .last()
                .map_or(config.first_lsn, |s| s.header.base_lsn)
        };
        let now_ns = unix_ns();
        let current = match segments.last() {
            Some(seg) => {
                // Whatever recovery kept becomes durable now.
                seg.flush(0, seg.len())
                    .map_err(io_err(format!("sync {}", seg.path.display())))?;
                // After the sync, which cleans and write-protects the pages.
                seg.prefault();
                seg.unseal();
                seg.clone()
            }
            None => {
                let spare = Spare::create(&dir, config.segment_size, 0)
                    .map_err(io_err("create segment"))?;
                let seg = Arc::new(
                    spare
                        .activate(&dir, next_lsn, now_ns)
                        .map_err(io_err("activate segment"))?,
                );
                segments.push(seg.clone());
                seg
            }
        };
        let offset = current.written_end();
        report.segments = segments.len();
        let last = next_lsn - 1;
        let shared = Arc::new(Shared {
            segments: Mutex::new(segments),
            written_lsn: AtomicU64::new(last),
            durable_lsn: AtomicU64::new(last),
            failed: AtomicBool::new(false),
        });
        let wal = Wal {
            shared,
            config,
            _lock: lock,
            current,
            offset,
            synced_offset: offset,
            next_lsn,
            pending: 0,
            pending_since: None,
            spare: None,
            spare_tag: 1,
            stats: WalStats::default(),
        };
        Ok((wal, report))
    }

    /// Appends one record and returns its LSN. With [`SyncPolicy::Always`]
    /// it is durable on return; with `Inline` it may have triggered a group
    /// commit.
    #[allow(unsafe_code)]
    pub fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<u64, WalError> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(WalError::Failed);
        }
        let size = record_size(payload.len());
        if payload.len() > RECORD_PAYLOAD_MAX
            || SEGMENT_HEADER_LEN + size > self.config.segment_size
        {
            return Err(WalError::TooLarge { len: payload.len() });
        }
        if self.offset + size > self.current.len() {
            self.rotate()?;
        }
        let lsn = self.next_lsn;
        let durable = self.shared.durable_lsn.load(Ordering::Relaxed);
        // SAFETY: this `Wal` is the only writer of its segments (one `Wal`
        // per directory, guarded by the lock; it is not Clone).
        unsafe {
            self.current.append(self.offset, size, |dst| {
                format::write_record(dst, lsn, durable, meta, payload)
            });
        }
        self.offset += size;
        self.next_lsn += 1;
        self.shared.written_lsn.store(lsn, Ordering::Release);
        self.stats.appended += 1;
        self.pending += 1;
        if self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        if self.offset > self.current.len() / 2 && self.spare.is_none() {
            self.prepare_spare();
        }
        match self.config.sync {
            SyncPolicy::Always => {
                self.sync()?;
            }
            SyncPolicy::Inline { max_records, .. } if self.pending >= max_records => {
                self.sync()?;
            }
            _ => {}
        }
        Ok(lsn)
    }

    /// Makes every written record durable; returns the durable LSN.
    pub fn sync(&mut self) -> Result<u64, WalError> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(WalError::Failed);
        }
        if self.pending == 0 {
            return Ok(self.durable_lsn());
        }
        if self.config.sync != SyncPolicy::None
            && let Err(e) = self.current.flush(self.synced_offset, self.offset)
        {
            // Never retried: the kernel may have marked the pages clean.
            self.shared.failed.store(true, Ordering::Release);
            log::error!(
                "WAL sync of {} failed: {e}; refusing further appends",
                self.current.path.display()
            );
            return Err(WalError::Failed);
        }
        self.synced_offset = self.offset;
        let lsn = self.next_lsn - 1;
        // A `Syncer` may publish too: the durable LSN only grows.
        self.shared.durable_lsn.fetch_max(lsn, Ordering::AcqRel);
        self.stats.syncs += 1;
        self.stats.synced_records += u64::from(self.pending);
        self.stats.max_batch = self.stats.max_batch.max(self.pending);
        self.pending = 0;
        self.pending_since = None;
        Ok(lsn)
    }

    /// When the batch policy wants the next sync (`None`: nothing pending).
    pub fn sync_deadline(&self) -> Option<Instant> {
        match self.config.sync {
            SyncPolicy::Inline { max_delay_us, .. } => self
                .pending_since
                .map(|t| t + Duration::from_micros(max_delay_us)),
            SyncPolicy::Batch => None,
            _ => self.pending_since,
        }
    }

    /// Syncs if the deadline has passed at `now`.
    pub fn sync_if_due(&mut self, now: Instant) -> Result<u64, WalError> {
        match self.sync_deadline() {
            Some(t) if t <= now => self.sync(),
            _ => Ok(self.durable_lsn()),
        }
    }

    /// LSN of the last record written (readable).
    pub fn written_lsn(&self) -> u64 {
        self.shared.written_lsn.load(Ordering::Acquire)
    }

    /// LSN of the last durable record.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// The next LSN `append` will assign.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Counters.
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// A syncer for another thread ([`SyncPolicy::Batch`]), starting
    /// from what this writer has synced.
    pub fn syncer(&self) -> Syncer {
        Syncer {
            shared: self.shared.clone(),
            at: (self.current.header.base_lsn, self.synced_offset),
            syncs: 0,
            synced_records: 0,
            max_batch: 0,
        }
    }

    /// Watermarks that other threads can read.
    pub fn watermarks(&self) -> Watermarks {
        Watermarks {
            shared: self.shared.clone(),
        }
    }

    /// A reader positioned at `from_lsn` (it may be beyond the written end:
    /// the reader waits for it).
    pub fn reader(&self, from_lsn: u64) -> Result<WalReader, WalError> {
        WalReader::new(self.shared.clone(), from_lsn)
    }

    /// Deletes every segment whose records all have LSN <= `lsn` (the
    /// checkpoint). The segment being written is never deleted. Returns
    /// the number of segments deleted.
    pub fn release_through(&mut self, lsn: u64) -> Result<usize, WalError> {
        let doomed: Vec<Arc<Segment>> = {
            let mut segs = self.shared.segments();
            let mut n = 0;
            // Segment i holds LSNs [base_i, base_{i+1}).
            while n + 1 < segs.len() && segs[n + 1].header.base_lsn <= lsn.saturating_add(1) {
                n += 1;
            }
            segs.drain(..n).collect()
        };
        for seg in &doomed {
            std::fs::remove_file(&seg.path)
                .map_err(io_err(format!("remove {}", seg.path.display())))?;
        }
        if !doomed.is_empty() {
            sync_dir(&self.config.dir).map_err(io_err("sync directory"))?;
        }
        Ok(doomed.len())
    }

    fn prepare_spare(&mut self) {
        let dir = self.config.dir.clone();
        let size = self.config.segment_size;
        let tag = self.spare_tag;
        self.spare_tag += 1;
        let spawned = std::thread::Builder::new()
            .name("wal-prepare".into())
            .spawn(move || Spare::create(&dir, size, tag));
        match spawned {
            Ok(h) => self.spare = Some(h),
            Err(e) => {
                log::warn!("cannot start the WAL segment preparer: {e}; will prepare at rotation")
            }
        }
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        // Everything in the old segment becomes durable before we leave it,
        // so the durable LSN never depends on two segments.
        self.sync()?;
        let spare = match self.spare.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("segment preparer panicked"))),
            None => Spare::create(&self.config.dir, self.config.segment_size, 0),
        };
        let spare = match spare {
            Ok(s) => s,
            // A failed preparation (e.g. disk full) is retried once here,
            // synchronously; failing again is an error for the caller.
            Err(e) => {
                log::warn!("WAL segment preparation failed: {e}; retrying");
                Spare::create(&self.config.dir, self.config.segment_size, 0)
                    .map_err(io_err("create segment"))?
            }
        };
        let seg = Arc::new(
            spare
                .activate(&self.config.dir, self.next_lsn, unix_ns())
                .map_err(io_err("activate segment"))?,
        );
        self.current.seal();
        self.shared.segments().push(seg.clone());
        self.current = seg;
        self.offset = SEGMENT_HEADER_LEN;
        self.synced_offset = SEGMENT_HEADER_LEN;
        self.stats.rotations += 1;
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Best effort: an orderly shutdown makes everything durable. A
        // failure has been logged by `sync`.
        let _ = self.sync();
        if let Some(h) = self.spare.take() {
            let _ = h.join();
        }
    }
}
