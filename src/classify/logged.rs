//! The log's form of an accepted FrameSet: what classifying it found, so
//! that the decider and replay never classify again (DESIGN.md rule 7: the
//! digest is checked and the payload inflated once, on the log thread).
//!
//! A [`Logged`] record is a fixed 32-byte header and the payload frames
//! (after REQID, before END) as classified: verified, inflated if they
//! arrived compressed. Integers are little-endian like the rest of the log.
//!
//! | offset | bytes | field                                                  |
//! |--------|-------|--------------------------------------------------------|
//! | 0      | 1     | format version ([`LOGGED_VERSION`])                    |
//! | 1      | 1     | flags: 1 REQID, 2 malformed, 4 compressed, 8 the       |
//! |        |       | malformed offset counts in the inflated bytes, 16 SHA-1|
//! | 2      | 2     | FrameSet type                                          |
//! | 4      | 1     | malformed: the reason (its index in [`Drop::ALL`])     |
//! | 5      | 1     | v2: length of the sender's key id (0: not encrypted)   |
//! | 6      | 2     | unknown frames skipped                                 |
//! | 8      | 4     | malformed: the byte offset                             |
//! | 12     | 4     | offset of the payload in the FrameSet (or inflated)    |
//! | 16     | 4     | REQID session                                          |
//! | 20     | 2     | REQID queue                                            |
//! | 22     | 2     | 0                                                      |
//! | 24     | 8     | REQID request                                          |
//! | 32     | ...   | v2: the sender's key id (byte 5 long), then the payload |
//! |        |       | frames                                                 |
//!
//! Version 1 (before encryption) is version 2 with byte 5 zero.
//!
//! The verdict (accepted, or accepted as malformed with its reason) is the
//! log thread's, fixed when the record was written: a later change to the
//! classifier does not change what replay decides. A change to this layout
//! or to what the payload means takes a new version, read through
//! [`Logged::parse`]'s explicit branches; a version this build does not
//! know is an error, never a skipped record.

use std::fmt;

use super::error::{Drop, Dropped};
use super::frame::{DigestKind, ReqId};
use super::message::Message;
use super::types::FrameSetType;
use super::{Classified, is_sequenced};

/// The record format this build writes (and the newest it reads).
pub const LOGGED_VERSION: u8 = 2;
/// Bytes before the payload frames.
pub const LOGGED_HEADER_LEN: usize = 32;

const F_REQID: u8 = 1;
const F_MALFORMED: u8 = 2;
const F_COMPRESSED: u8 = 4;
const F_INFLATED_OFFSET: u8 = 8;
const F_SHA1: u8 = 16;
const F_KNOWN: u8 = F_REQID | F_MALFORMED | F_COMPRESSED | F_INFLATED_OFFSET | F_SHA1;

/// Why a record's bytes are not a [`Logged`] record this build can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoggedError {
    /// Shorter than the header.
    Short(usize),
    /// Written by a format this build does not know (a newer cma).
    Version(u8),
    /// Flag bits or a drop reason this version does not define.
    Corrupt(&'static str),
}

impl fmt::Display for LoggedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggedError::Short(n) => write!(f, "a classified record of {n} bytes (header is 32)"),
            LoggedError::Version(v) => write!(
                f,
                "a classified record of format {v}; this cma reads up to {LOGGED_VERSION} \
                 (written by a newer cma?)"
            ),
            LoggedError::Corrupt(what) => write!(f, "a classified record with {what}"),
        }
    }
}

impl std::error::Error for LoggedError {}

/// Appends the record of `c` to `out`: header, then its payload frames.
pub fn write_logged(c: &Classified<'_>, out: &mut Vec<u8>) {
    let mut flags = 0u8;
    let r = c.reqid.unwrap_or(ReqId {
        session: 0,
        request: 0,
        queue: 0,
    });
    if c.reqid.is_some() {
        flags |= F_REQID;
    }
    let (reason, offset) = match c.malformed {
        Some(d) => {
            flags |= F_MALFORMED;
            if d.inflated {
                flags |= F_INFLATED_OFFSET;
            }
            (d.reason as u8, d.offset)
        }
        None => (0, 0),
    };
    if c.compressed {
        flags |= F_COMPRESSED;
    }
    if c.digest == DigestKind::Sha1 {
        flags |= F_SHA1;
    }
    let payload_offset = u32::try_from(c.payload_offset).unwrap_or(u32::MAX);
    out.reserve(LOGGED_HEADER_LEN + c.payload().len());
    out.push(LOGGED_VERSION);
    out.push(flags);
    out.extend_from_slice(&c.fstype.to_le_bytes());
    out.push(reason);
    let key = c.sender_key.as_deref().unwrap_or("");
    // Key ids are at most 127 bytes (`is_key_id`).
    out.push(key.len().min(255) as u8);
    out.extend_from_slice(&c.unknown_frames.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&payload_offset.to_le_bytes());
    out.extend_from_slice(&r.session.to_le_bytes());
    out.extend_from_slice(&r.queue.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&r.request.to_le_bytes());
    out.extend_from_slice(&key.as_bytes()[..key.len().min(255)]);
    out.extend_from_slice(c.payload());
}

/// An accepted FrameSet as the log holds it (borrowed from the record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logged<'a> {
    /// FrameSet type number.
    pub fstype: u16,
    /// REQID: the FrameSet's own for sequenced types, the acknowledged one
    /// for ACK.
    pub reqid: Option<ReqId>,
    /// Set when it was accepted only to be ACKed: its payload does not
    /// parse, or its type is unknown.
    pub malformed: Option<Dropped>,
    /// The payload arrived compressed.
    pub compressed: bool,
    /// Digest algorithm of its (verified) SIG.
    pub digest: DigestKind,
    /// Unknown frame types skipped in the payload.
    pub unknown_frames: u16,
    /// The sender's key id, when it arrived encrypted.
    pub sender_key: Option<&'a str>,
    payload: &'a [u8],
    payload_offset: usize,
}

impl<'a> Logged<'a> {
    /// Reads a record written by [`write_logged`] (this version or an
    /// older one this build still reads).
    pub fn parse(bytes: &'a [u8]) -> Result<Logged<'a>, LoggedError> {
        if bytes.len() < LOGGED_HEADER_LEN {
            return Err(LoggedError::Short(bytes.len()));
        }
        match bytes[0] {
            // Version 1 is version 2 without key ids (byte 5 was 0).
            1 | 2 => {}
            v => return Err(LoggedError::Version(v)),
        }
        let key_len = usize::from(bytes[5]);
        let key_end = LOGGED_HEADER_LEN + key_len;
        if bytes.len() < key_end {
            return Err(LoggedError::Corrupt("a key id past its end"));
        }
        let sender_key = match key_len {
            0 => None,
            _ => Some(
                std::str::from_utf8(&bytes[LOGGED_HEADER_LEN..key_end])
                    .ok()
                    .filter(|k| super::is_key_id(k))
                    .ok_or(LoggedError::Corrupt("a bad key id"))?,
            ),
        };
        let flags = bytes[1];
        if flags & !F_KNOWN != 0 {
            return Err(LoggedError::Corrupt("unknown flags"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at = |i: usize| {
            u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes in the header"))
        };
        let malformed = if flags & F_MALFORMED != 0 {
            let reason = *Drop::ALL
                .get(usize::from(bytes[4]))
                .ok_or(LoggedError::Corrupt("an unknown drop reason"))?;
            Some(Dropped {
                reason,
                offset: u32_at(8),
                inflated: flags & F_INFLATED_OFFSET != 0,
            })
        } else {
            None
        };
        let reqid = (flags & F_REQID != 0).then(|| ReqId {
            session: u32_at(16),
            queue: u16_at(20),
            request: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes in the header")),
        });
        Ok(Logged {
            fstype: u16_at(2),
            reqid,
            malformed,
            compressed: flags & F_COMPRESSED != 0,
            digest: if flags & F_SHA1 != 0 {
                DigestKind::Sha1
            } else {
                DigestKind::Sha256
            },
            unknown_frames: u16_at(6),
            sender_key,
            payload: &bytes[key_end..],
            payload_offset: u32_at(12) as usize,
        })
    }

    /// The type, when this build knows it.
    pub fn kind(&self) -> Option<FrameSetType> {
        FrameSetType::from_wire(self.fstype)
    }

    /// A sequenced FrameSet (it was ACKed).
    pub fn is_sequenced(&self) -> bool {
        is_sequenced(self.fstype, self.reqid.is_some())
    }

    /// The payload frames (after REQID, before END).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The typed message: the verdict stored with the record when it was
    /// malformed, else the payload parsed (offsets as in the FrameSet).
    pub fn message(&self) -> Result<Message<'a>, Dropped> {
        if let Some(m) = self.malformed {
            return Err(m);
        }
        Message::parse(self.fstype, self.payload, self.payload_offset).map(|p| p.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{EncodeOptions, classify, encode};

    fn record_of(bytes: &[u8]) -> Vec<u8> {
        let c = classify(bytes).unwrap();
        let mut out = Vec::new();
        write_logged(&c, &mut out);
        out
    }

    #[test]
    fn an_ack_keeps_its_reqid_and_message() {
        let r = ReqId {
            session: 7,
            request: 1 << 40,
            queue: 3,
        };
        let mut wire = Vec::new();
        encode(&Message::Ack, Some(r), &EncodeOptions::default(), &mut wire).unwrap();
        let rec = record_of(&wire);
        let l = Logged::parse(&rec).unwrap();
        assert_eq!(l.fstype, FrameSetType::Ack.to_wire());
        assert_eq!(l.reqid, Some(r));
        assert_eq!(l.malformed, None);
        assert_eq!(l.message().unwrap(), Message::Ack);
    }

    #[test]
    fn a_compressed_frameset_is_logged_inflated() {
        let big = "x".repeat(4000);
        let m = Message::Startup(crate::classify::Startup {
            hostname: "h1",
            listen: "0.0.0.0:1984".parse().unwrap(),
            wallclock_us: 42,
            netconfig: &big,
            key: None,
            features: None,
        });
        let mut wire = Vec::new();
        let squeeze = EncodeOptions {
            compress_above: Some(100),
            ..EncodeOptions::default()
        };
        encode(&m, None, &squeeze, &mut wire).unwrap();
        assert!(wire.len() < 1000, "the encoder compresses a 4 KB STARTUP");
        let rec = record_of(&wire);
        let l = Logged::parse(&rec).unwrap();
        assert!(l.compressed);
        assert_eq!(l.message().unwrap(), m);
        // Same verdict as classifying the datagram again.
        assert_eq!(
            l.message().unwrap(),
            classify(&wire).unwrap().message().unwrap()
        );
    }

    #[test]
    fn unknown_versions_flags_and_reasons_are_errors() {
        let mut wire = Vec::new();
        encode(
            &Message::Ack,
            Some(ReqId::default()),
            &EncodeOptions::default(),
            &mut wire,
        )
        .unwrap();
        let rec = record_of(&wire);
        let mut v = rec.clone();
        v[0] = 3;
        assert_eq!(Logged::parse(&v), Err(LoggedError::Version(3)));
        // A version-1 record (no key id) reads as before.
        let mut one = rec.clone();
        one[0] = 1;
        assert_eq!(Logged::parse(&one).unwrap().sender_key, None);
        let mut f = rec.clone();
        f[1] |= 0x80;
        assert!(matches!(Logged::parse(&f), Err(LoggedError::Corrupt(_))));
        let mut r = rec.clone();
        r[1] |= F_MALFORMED;
        r[4] = Drop::COUNT as u8;
        assert!(matches!(Logged::parse(&r), Err(LoggedError::Corrupt(_))));
        assert_eq!(Logged::parse(&rec[..31]), Err(LoggedError::Short(31)));
    }

    proptest::proptest! {
        /// Whatever a datagram is, a record written from its verdict reads
        /// back with the same fields and the same message.
        #[test]
        fn records_read_back_as_classified(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(c) = classify(&bytes) {
                let mut rec = Vec::new();
                write_logged(&c, &mut rec);
                let l = Logged::parse(&rec).unwrap();
                proptest::prop_assert_eq!(l.fstype, c.fstype);
                proptest::prop_assert_eq!(l.reqid, c.reqid);
                proptest::prop_assert_eq!(l.malformed, c.malformed);
                proptest::prop_assert_eq!(l.message(), c.message());
            }
        }
    }

    #[test]
    fn malformed_sequenced_framesets_keep_their_verdict() {
        // A sequenced FrameSet of a type we do not know: accepted, malformed.
        let r = ReqId {
            session: 1,
            request: 2,
            queue: 0,
        };
        let mut wire = Vec::new();
        encode(&Message::Ack, Some(r), &EncodeOptions::default(), &mut wire).unwrap();
        // The ACK's frames (after its SIG) sealed again as type 200.
        let sig = crate::classify::FRAME_HEADER_LEN + DigestKind::Sha256.sig_value_len();
        let frames = wire[crate::classify::FRAMESET_HEADER_LEN + sig..].to_vec();
        let mut retyped = Vec::new();
        crate::classify::seal(200, &frames, DigestKind::Sha256, &mut retyped);
        let c = classify(&retyped).unwrap();
        assert!(c.malformed.is_some());
        let mut rec = Vec::new();
        write_logged(&c, &mut rec);
        let l = Logged::parse(&rec).unwrap();
        assert_eq!(l.malformed, c.malformed);
        assert_eq!(l.reqid, Some(r));
        assert!(l.is_sequenced());
        assert_eq!(l.message(), c.message());
    }
}
