//! The encoder: builds a FrameSet's exact bytes as the C library does, SIG
//! first, then COMPRESS when the FrameSet is large, REQID for sequenced
//! types, the payload frames, END last.

use std::fmt;
use std::io::Write;

use super::MAX_DECOMPRESSED_LEN;
use super::frame::{DigestKind, Frame, ReqId, put_header, put_reqid};
use super::message::Message;
use super::types::FrameType;
use super::view::{FRAME_HEADER_LEN, FRAMESET_HEADER_LEN, MAX_DATAGRAM_LEN};

/// FrameSets whose frames exceed this many bytes are compressed (the C
/// library's threshold).
pub const COMPRESS_THRESHOLD: usize = 21835;

/// How to encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// SIG digest: SHA-256 (nanoprobes) or SHA-1 (the original CMA).
    pub digest: DigestKind,
    /// Compress when the frames after SIG exceed this many bytes; `None`
    /// never compresses.
    pub compress_above: Option<usize>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            digest: DigestKind::Sha256,
            compress_above: Some(COMPRESS_THRESHOLD),
        }
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The FrameSet would exceed a datagram (or its frames the 4 MiB limit).
    TooLarge {
        /// Bytes it would take.
        bytes: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { bytes } => {
                write!(
                    f,
                    "FrameSet of {bytes} bytes exceeds the {MAX_DATAGRAM_LEN}-byte datagram"
                )
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Appends the FrameSet for `message` (with `reqid` for a sequenced type or
/// an ACK) to `out` and returns its length. On error `out` is left as it was.
pub fn encode(
    message: &Message<'_>,
    reqid: Option<ReqId>,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    let start = out.len();
    let sig_len = FRAME_HEADER_LEN + options.digest.sig_value_len();
    // Header and a SIG frame placeholder; filled in at the end.
    out.resize(start + FRAMESET_HEADER_LEN + sig_len, 0);
    let inner_start = out.len();
    if let Some(r) = reqid {
        put_header(out, Frame::ReqId(r).ftype(), super::REQID_LEN);
        put_reqid(out, r);
    }
    message.emit_payload(out);
    Frame::End.emit(out);
    let inner_len = out.len() - inner_start;
    if inner_len > MAX_DECOMPRESSED_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLarge { bytes: inner_len });
    }
    if options.compress_above.is_some_and(|t| inner_len > t) {
        let compressed = deflate(&out[inner_start..]);
        out.truncate(inner_start);
        Frame::Compress {
            method: 1,
            decompressed_size: inner_len as u32,
            data: &compressed,
        }
        .emit(out);
    }
    let total = out.len() - start;
    if total > MAX_DATAGRAM_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLarge { bytes: total });
    }
    let fslen = (total - FRAMESET_HEADER_LEN) as u32;
    let header = &mut out[start..start + FRAMESET_HEADER_LEN];
    header[0..2].copy_from_slice(&message.fstype().to_be_bytes());
    header[2..5].copy_from_slice(&fslen.to_be_bytes()[1..]);
    header[5..7].copy_from_slice(&[0, 0]);
    // SIG: header, major 1, minor = digest kind, then the digest of all
    // that follows it.
    let sig_at = start + FRAMESET_HEADER_LEN;
    let (head, signed) = out.split_at_mut(sig_at + sig_len);
    let sig = &mut head[sig_at..];
    sig[0..2].copy_from_slice(&FrameType::Sig.to_wire().to_be_bytes());
    sig[2..5].copy_from_slice(&(options.digest.sig_value_len() as u32).to_be_bytes()[1..]);
    sig[5] = 1;
    sig[6] = options.digest.wire_code();
    super::compute_digest(options.digest, signed, &mut sig[7..]);
    Ok(total)
}

/// Appends a FrameSet of type `fstype` whose frames after SIG are exactly
/// `frames` (REQID, payload and END included, as the caller wrote them),
/// signed with `digest`. For tools and tests that need FrameSets the typed
/// encoder would refuse to build (hostile input, unknown types).
pub fn seal(fstype: u16, frames: &[u8], digest: DigestKind, out: &mut Vec<u8>) {
    let sig_len = FRAME_HEADER_LEN + digest.sig_value_len();
    let fslen = (sig_len + frames.len()).min(0xff_ffff) as u32;
    out.extend_from_slice(&fstype.to_be_bytes());
    out.extend_from_slice(&fslen.to_be_bytes()[1..]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&FrameType::Sig.to_wire().to_be_bytes());
    out.extend_from_slice(&(digest.sig_value_len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[1, digest.wire_code()]);
    let at = out.len();
    out.resize(at + digest.digest_len(), 0);
    super::compute_digest(digest, frames, &mut out[at..]);
    out.extend_from_slice(frames);
}

/// zlib at level 1, as the C library compresses.
pub fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    z.write_all(bytes).expect("write to Vec");
    z.finish().expect("finish into Vec")
}
