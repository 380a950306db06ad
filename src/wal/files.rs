//! The log directory's files: the lock, spare and segment listing, segment
//! headers, and the checks made when opening it.

use super::*;

pub(super) fn check_config(c: &WalConfig) -> Result<(), WalError> {
    if c.segment_size < MIN_SEGMENT_SIZE
        || c.segment_size > format::SEGMENT_SIZE_MAX
        || !c.segment_size.is_multiple_of(4096)
    {
        return Err(WalError::Config(format!(
            "segment size {} must be a multiple of 4096 from {MIN_SEGMENT_SIZE} to {}",
            c.segment_size,
            format::SEGMENT_SIZE_MAX
        )));
    }
    if c.first_lsn == 0 {
        return Err(WalError::Config("the first LSN is 1 or more".into()));
    }
    if let SyncPolicy::Inline { max_records, .. } = c.sync
        && !(1..=1_000_000).contains(&max_records)
    {
        return Err(WalError::Config(format!(
            "batch of {max_records} records: 1 ..= 1000000"
        )));
    }
    Ok(())
}

pub(super) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(WalError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(format!("lock {}", path.display()))(e)),
    }
}

pub(super) fn remove_spares(dir: &Path) -> Result<(), WalError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))? {
        let entry = entry.map_err(io_err("list"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("spare-") && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path()).map_err(io_err(format!("remove {name}")))?;
        }
    }
    Ok(())
}

/// Segment files of a directory, sorted by base LSN.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))? {
        let entry = entry.map_err(io_err("list"))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            out.push((base, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn read_header(file: &File, path: &Path) -> Result<SegmentHeader, WalError> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut b, 0)
        .map_err(io_err(format!("read {}", path.display())))?;
    format::decode_segment_header(&b).map_err(|reason| WalError::Corrupt {
        segment: path.to_path_buf(),
        offset: 0,
        expected_lsn: 0,
        reason: reason.to_string(),
        claimed_durable_lsn: 0,
    })
}

/// A segment file shorter than its header says lost its tail (never
/// written, or cut by a damaged file system): give it back its zeroed size
/// so the scan can judge what remains. A longer one is refused.
pub(super) fn restore_size(
    file: &File,
    path: &Path,
    header: &SegmentHeader,
) -> Result<(), WalError> {
    let len = file
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?
        .len();
    if len > header.segment_size {
        return Err(WalError::Corrupt {
            segment: path.to_path_buf(),
            offset: header.segment_size as usize,
            expected_lsn: 0,
            reason: format!(
                "file is {len} bytes, longer than its header's {}",
                header.segment_size
            ),
            claimed_durable_lsn: 0,
        });
    }
    if len < header.segment_size {
        log::warn!(
            "WAL segment {} is {len} bytes, not {}: zero-extending it",
            path.display(),
            header.segment_size
        );
        file.set_len(header.segment_size)
            .map_err(io_err(format!("extend {}", path.display())))?;
        file.sync_all()
            .map_err(io_err(format!("sync {}", path.display())))?;
    }
    Ok(())
}

pub(super) fn salvage_name(path: &Path, stamp: u64) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".salvaged-{stamp}"));
    path.with_file_name(name)
}

pub(super) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
