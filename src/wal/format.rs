//! Byte layouts of segment headers and records (see the module docs for
//! the tables). All integers are little-endian: the log is ours, read on
//! the machine that wrote it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CMAWAL\0\x01";
/// Format version written in segment headers.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header; records start here.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Largest segment file (1 GiB): a header claiming more is damaged.
pub const SEGMENT_SIZE_MAX: usize = 1 << 30;
/// Marks the start of every record.
pub const RECORD_MAGIC: u16 = 0x57a1;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 56;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Largest payload of one record: a classified FrameSet holds its payload
/// inflated, up to `classify::MAX_DECOMPRESSED_LEN` (4 MiB), plus the
/// verdict; the decider's own records are smaller.
pub const RECORD_PAYLOAD_MAX: usize = 5 << 20;

const _: () = assert!(SEGMENT_HEADER_LEN.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(RECORD_HEADER_LEN.is_multiple_of(RECORD_ALIGN));

/// Bytes a record with `payload_len` bytes of payload takes in a segment.
pub const fn record_size(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len).next_multiple_of(RECORD_ALIGN)
}

/// What a record holds. The log does not interpret payloads; the kind
/// tells readers how to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// An accepted FrameSet as received (payload: the datagram's bytes),
    /// classified again by whoever reads it: written for a compressed
    /// FrameSet in clear whose inflated form is large (the log holds what
    /// the sender sent, not megabytes), and by cma before
    /// [`RecordKind::Classified`] for every FrameSet.
    FrameSet,
    /// The log clock advanced (no payload): lets deadlines fire in replay.
    Tick,
    /// The CMA started again after downtime.
    Resume,
    /// The effective configuration and decider version.
    Config,
    /// A decider-internal mark (session id, checkpoints, ...).
    Mark,
    /// An accepted FrameSet as the log thread classified it (payload: a
    /// `classify::Logged` record: verdict, REQID, verified and inflated
    /// frames).
    Classified,
    /// A kind this version does not know (kept, not interpreted).
    Other(u8),
}

impl RecordKind {
    /// The byte stored in the header.
    pub const fn to_byte(self) -> u8 {
        match self {
            RecordKind::FrameSet => 1,
            RecordKind::Tick => 2,
            RecordKind::Resume => 3,
            RecordKind::Config => 4,
            RecordKind::Mark => 5,
            RecordKind::Classified => 6,
            RecordKind::Other(b) => b,
        }
    }

    /// The kind for a header byte.
    pub const fn from_byte(b: u8) -> RecordKind {
        match b {
            1 => RecordKind::FrameSet,
            2 => RecordKind::Tick,
            3 => RecordKind::Resume,
            4 => RecordKind::Config,
            5 => RecordKind::Mark,
            6 => RecordKind::Classified,
            other => RecordKind::Other(other),
        }
    }

    /// Lower-case name for tools.
    pub fn name(self) -> String {
        match self {
            RecordKind::FrameSet => "frameset".into(),
            RecordKind::Tick => "tick".into(),
            RecordKind::Resume => "resume".into(),
            RecordKind::Config => "config".into(),
            RecordKind::Mark => "mark".into(),
            RecordKind::Classified => "classified".into(),
            RecordKind::Other(b) => format!("kind{b}"),
        }
    }
}

/// The fields of a record header other than length, LSN and checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// What the payload is.
    pub kind: RecordKind,
    /// Receive time (log clock), nanoseconds.
    pub time_ns: u64,
    /// The datagram's source, when the record is a FrameSet.
    pub peer: Option<SocketAddr>,
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload bytes.
    pub len: u32,
    /// Log sequence number (from 1, contiguous).
    pub lsn: u64,
    /// The durable LSN the writer knew when it wrote this record: every
    /// record up to it had reached disk. Recovery uses it to tell a torn,
    /// never-acknowledged tail from corruption of acknowledged records.
    pub durable_lsn: u64,
    /// Kind, time, peer.
    pub meta: RecordMeta,
    /// CRC32C stored in the header.
    pub crc: u32,
}

/// Writes a record (header and payload, padded) into `dst`, which must be
/// exactly `record_size(payload.len())` bytes.
pub fn write_record(dst: &mut [u8], lsn: u64, durable_lsn: u64, meta: &RecordMeta, payload: &[u8]) {
    assert_eq!(dst.len(), record_size(payload.len()));
    let (addr, port, family) = match meta.peer {
        None => ([0u8; 16], 0u16, 0u8),
        Some(SocketAddr::V4(a)) => (a.ip().to_ipv6_mapped().octets(), a.port(), 4),
        Some(SocketAddr::V6(a)) => (a.ip().octets(), a.port(), 6),
    };
    let h = &mut dst[..RECORD_HEADER_LEN];
    h[0..2].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    h[2] = meta.kind.to_byte();
    h[3] = family;
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16..24].copy_from_slice(&durable_lsn.to_le_bytes());
    h[24..32].copy_from_slice(&meta.time_ns.to_le_bytes());
    h[32..48].copy_from_slice(&addr);
    h[48..50].copy_from_slice(&port.to_le_bytes());
    h[50..52].copy_from_slice(&[0, 0]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..52]), payload);
    h[52..56].copy_from_slice(&crc.to_le_bytes());
    let end = RECORD_HEADER_LEN + payload.len();
    dst[RECORD_HEADER_LEN..end].copy_from_slice(payload);
    dst[end..].fill(0);
}

/// Why the bytes at some offset are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFault {
    /// All zero where a record would start: the written end.
    Zero,
    /// No record magic.
    BadMagic,
    /// The length runs past the segment (or over the limit).
    BadLength,
    /// The checksum does not match.
    BadCrc,
    /// A reserved field is not zero, or the address family is unknown.
    BadField,
}

impl RecordFault {
    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            RecordFault::Zero => "zeroed",
            RecordFault::BadMagic => "bad magic",
            RecordFault::BadLength => "length past segment end",
            RecordFault::BadCrc => "checksum mismatch",
            RecordFault::BadField => "bad header field",
        }
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads and checks the record starting at `bytes[0]` (`bytes` runs to the
/// end of the readable region). Returns the header and the payload.
pub fn read_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), RecordFault> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(if bytes.iter().all(|b| *b == 0) {
            RecordFault::Zero
        } else {
            RecordFault::BadLength
        });
    }
    let h = &bytes[..RECORD_HEADER_LEN];
    if le16(h, 0) != RECORD_MAGIC {
        return Err(if h.iter().all(|b| *b == 0) {
            RecordFault::Zero
        } else {
            RecordFault::BadMagic
        });
    }
    let len = le32(h, 4);
    if len as usize > RECORD_PAYLOAD_MAX || record_size(len as usize) > bytes.len() {
        return Err(RecordFault::BadLength);
    }
    let payload = &bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len as usize];
    let crc = le32(h, 52);
    if crc32c::crc32c_append(crc32c::crc32c(&h[..52]), payload) != crc {
        return Err(RecordFault::BadCrc);
    }
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&h[32..48]);
    let port = le16(h, 48);
    let peer = match h[3] {
        0 => None,
        4 => {
            let v6 = Ipv6Addr::from(addr);
            let v4 = v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED);
            Some(SocketAddr::new(IpAddr::V4(v4), port))
        }
        6 => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(addr)), port)),
        _ => return Err(RecordFault::BadField),
    };
    if le16(h, 50) != 0 {
        return Err(RecordFault::BadField);
    }
    Ok((
        RecordHeader {
            len,
            lsn: le64(h, 8),
            durable_lsn: le64(h, 16),
            meta: RecordMeta {
                kind: RecordKind::from_byte(h[2]),
                time_ns: le64(h, 24),
                peer,
            },
            crc,
        },
        payload,
    ))
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the segment's first record.
    pub base_lsn: u64,
    /// File size the segment was created with.
    pub segment_size: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
}

/// The 64 header bytes of a segment.
pub fn encode_segment_header(h: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    b[16..24].copy_from_slice(&h.base_lsn.to_le_bytes());
    b[24..32].copy_from_slice(&h.segment_size.to_le_bytes());
    b[32..40].copy_from_slice(&h.created_unix_ns.to_le_bytes());
    let crc = crc32c::crc32c(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Parses and checks a segment header.
pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, &'static str> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err("shorter than a segment header");
    }
    if b[0..8] != SEGMENT_MAGIC {
        return Err("not a cma WAL segment (bad magic)");
    }
    if crc32c::crc32c(&b[..60]) != le32(b, 60) {
        return Err("segment header checksum mismatch");
    }
    if le32(b, 8) != FORMAT_VERSION {
        return Err("unsupported WAL format version");
    }
    if le32(b, 12) as usize != SEGMENT_HEADER_LEN {
        return Err("unexpected segment header length");
    }
    let h = SegmentHeader {
        base_lsn: le64(b, 16),
        segment_size: le64(b, 24),
        created_unix_ns: le64(b, 32),
    };
    if h.base_lsn == 0 {
        return Err("segment base LSN is 0");
    }
    if h.segment_size > SEGMENT_SIZE_MAX as u64
        || h.segment_size < SEGMENT_HEADER_LEN as u64
        || !h.segment_size.is_multiple_of(4096)
    {
        return Err("segment size in the header is out of range");
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_faults() {
        let meta = RecordMeta {
            kind: RecordKind::FrameSet,
            time_ns: 123,
            peer: Some("10.0.0.1:1984".parse().unwrap()),
        };
        let mut buf = vec![0u8; record_size(5) + 16];
        let n = record_size(5);
        write_record(&mut buf[..n], 7, 6, &meta, b"hello");
        let (h, p) = read_record(&buf).unwrap();
        assert_eq!(
            (h.len, h.lsn, h.durable_lsn, h.meta, p),
            (5, 7, 6, meta, &b"hello"[..])
        );
        assert_eq!(read_record(&buf[n..]), Err(RecordFault::Zero));
        let mut bad = buf.clone();
        bad[60] ^= 1;
        assert_eq!(read_record(&bad), Err(RecordFault::BadCrc));
        let mut bad = buf.clone();
        bad[0] = 1;
        assert_eq!(read_record(&bad), Err(RecordFault::BadMagic));
        assert_eq!(read_record(&buf[..n - 8]), Err(RecordFault::BadLength));
        let v6 = RecordMeta {
            peer: Some("[fd00::1]:7".parse().unwrap()),
            ..meta
        };
        write_record(&mut buf[..n], 8, 0, &v6, b"hello");
        assert_eq!(read_record(&buf).unwrap().0.meta, v6);
    }

    #[test]
    fn segment_header_round_trip() {
        let h = SegmentHeader {
            base_lsn: 42,
            segment_size: 1 << 20,
            created_unix_ns: 9,
        };
        let b = encode_segment_header(&h);
        assert_eq!(decode_segment_header(&b), Ok(h));
        let mut bad = b;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad).is_err());
    }
}
