//! Why a datagram or FrameSet was not accepted.
//!
//! Each reason is a distinct value so that every kind of garbage has its own
//! counter ([`DropCounters`]). The enum is `Copy` and one byte: bad input is a
//! value, never a panic.

use std::fmt;

/// The reason a FrameSet was dropped (or, for a sequenced FrameSet with a
/// valid SIG and REQID, why its payload is malformed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Drop {
    /// Fewer than 7 bytes left for a FrameSet header.
    TruncatedHeader,
    /// The FrameSet length runs past the end of the datagram.
    FrameSetOverrun,
    /// Fewer than 5 bytes left for a Frame header.
    TruncatedFrame,
    /// A Frame length runs past the end of its FrameSet.
    FrameOverrun,
    /// The first Frame is not SIG.
    MissingSig,
    /// SIG with a wrong major version, digest kind or length.
    BadSig,
    /// The SIG digest does not match the FrameSet's bytes.
    DigestMismatch,
    /// No END frame before the end of the FrameSet.
    MissingEnd,
    /// Bytes after the END frame inside the FrameSet.
    TrailingBytes,
    /// A string without exactly one trailing NUL, or not UTF-8.
    BadString,
    /// An integer frame whose length is not 1, 2, 3, 4 or 8.
    BadInteger,
    /// An IPPORT frame with a bad length, family or port 0.
    BadIpPort,
    /// An IPADDR or MACADDR frame with a bad family or length.
    BadAddress,
    /// A fixed-size frame (REQID, PUBKEYCURVE25519, ...) of the wrong length.
    BadLength,
    /// A COMPRESS frame with an unknown method or too short to hold its header.
    BadCompress,
    /// Declared or actual decompressed size above the 4 MiB limit.
    DecompressionBomb,
    /// Decompressed size differs from the declared one.
    DecompressedSizeMismatch,
    /// The zlib stream is corrupt or does not end where the frame ends.
    InflateError,
    /// SIG, CRYPTCURVE25519, COMPRESS or REQID where it may not stand.
    MisplacedFrame,
    /// A malformed CRYPTCURVE25519 header.
    BadCrypt,
    /// Encrypted FrameSet, and the CMA has no key (`cma keys init`).
    EncryptedUnsupported,
    /// An unsequenced FrameSet of a type we do not know.
    UnknownFrameSetType,
    /// A frame that this FrameSet type requires is absent.
    MissingFrame,
    /// A known frame that this FrameSet type does not allow, or out of order.
    UnexpectedFrame,
    /// A frame that may appear once appears twice.
    DuplicateFrame,
    /// ACK without a REQID frame.
    AckWithoutReqId,
    /// Encrypted under a sender key the CMA does not trust.
    UnknownKey,
    /// Encrypted for a receiver key that is not one of the CMA's.
    NotOurKey,
    /// The MAC does not verify: not made with the keys it names.
    DecryptFailed,
}

impl Drop {
    /// Number of distinct reasons (the size of a counter array).
    pub const COUNT: usize = Drop::ALL.len();

    /// Every reason, in declaration order (index = `self as usize`).
    pub const ALL: [Drop; 29] = [
        Drop::TruncatedHeader,
        Drop::FrameSetOverrun,
        Drop::TruncatedFrame,
        Drop::FrameOverrun,
        Drop::MissingSig,
        Drop::BadSig,
        Drop::DigestMismatch,
        Drop::MissingEnd,
        Drop::TrailingBytes,
        Drop::BadString,
        Drop::BadInteger,
        Drop::BadIpPort,
        Drop::BadAddress,
        Drop::BadLength,
        Drop::BadCompress,
        Drop::DecompressionBomb,
        Drop::DecompressedSizeMismatch,
        Drop::InflateError,
        Drop::MisplacedFrame,
        Drop::BadCrypt,
        Drop::EncryptedUnsupported,
        Drop::UnknownFrameSetType,
        Drop::MissingFrame,
        Drop::UnexpectedFrame,
        Drop::DuplicateFrame,
        Drop::AckWithoutReqId,
        Drop::UnknownKey,
        Drop::NotOurKey,
        Drop::DecryptFailed,
    ];

    /// A stable snake_case name, used as a metrics label and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Drop::TruncatedHeader => "truncated_header",
            Drop::FrameSetOverrun => "frameset_overrun",
            Drop::TruncatedFrame => "truncated_frame",
            Drop::FrameOverrun => "frame_overrun",
            Drop::MissingSig => "missing_sig",
            Drop::BadSig => "bad_sig",
            Drop::DigestMismatch => "digest_mismatch",
            Drop::MissingEnd => "missing_end",
            Drop::TrailingBytes => "trailing_bytes",
            Drop::BadString => "bad_string",
            Drop::BadInteger => "bad_integer",
            Drop::BadIpPort => "bad_ipport",
            Drop::BadAddress => "bad_address",
            Drop::BadLength => "bad_length",
            Drop::BadCompress => "bad_compress",
            Drop::DecompressionBomb => "decompression_bomb",
            Drop::DecompressedSizeMismatch => "decompressed_size_mismatch",
            Drop::InflateError => "inflate_error",
            Drop::MisplacedFrame => "misplaced_frame",
            Drop::BadCrypt => "bad_crypt",
            Drop::EncryptedUnsupported => "encrypted_unsupported",
            Drop::UnknownFrameSetType => "unknown_frameset_type",
            Drop::MissingFrame => "missing_frame",
            Drop::UnexpectedFrame => "unexpected_frame",
            Drop::DuplicateFrame => "duplicate_frame",
            Drop::AckWithoutReqId => "ack_without_reqid",
            Drop::UnknownKey => "unknown_key",
            Drop::NotOurKey => "not_our_key",
            Drop::DecryptFailed => "decrypt_failed",
        }
    }
}

const _: () = assert!(std::mem::size_of::<Drop>() == 1);
const _: () = {
    let mut i = 0;
    while i < Drop::COUNT {
        assert!(
            Drop::ALL[i] as usize == i,
            "Drop::ALL must be in declaration order"
        );
        i += 1;
    }
};

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Drop {}

/// A drop reason and the byte offset (from the start of the datagram, or of
/// the decompressed frames when `inflated` is set) where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// Why.
    pub reason: Drop,
    /// Where: a byte offset, see [`Dropped::inflated`].
    pub offset: u32,
    /// The offset counts from the start of the decompressed bytes (the frames
    /// after a COMPRESS frame) rather than the datagram.
    pub inflated: bool,
}

impl Dropped {
    /// A drop at `offset` in the datagram.
    pub fn at(reason: Drop, offset: usize) -> Dropped {
        Dropped {
            reason,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            inflated: false,
        }
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let space = if self.inflated {
            " of the inflated frames"
        } else {
            ""
        };
        write!(f, "{} at byte {}{}", self.reason, self.offset, space)
    }
}

impl std::error::Error for Dropped {}

/// One counter per drop reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; Drop::COUNT],
}

impl DropCounters {
    /// Counts one drop.
    pub fn record(&mut self, reason: Drop) {
        self.counts[reason as usize] += 1;
    }

    /// The count for one reason.
    pub fn get(&self, reason: Drop) -> u64 {
        self.counts[reason as usize]
    }

    /// All drops counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Each reason with its count, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (Drop, u64)> + '_ {
        Drop::ALL.iter().map(|d| (*d, self.counts[*d as usize]))
    }
}
