//! The wire codec: bytes <-> typed FrameSets (see `shared/spec/WIRE.md`).
//!
//! What it does: [`classify`] takes one datagram's bytes and either accepts
//! its first FrameSet ([`Classified`]: type, priority band, REQID, verified
//! digest, borrowed payload) or says why not ([`Dropped`]). [`encode`] builds
//! the exact bytes a nanoprobe expects.
//!
//! What it promises:
//! - no panic and no unbounded work on any input: every length is checked
//!   before use, decompression is bounded by [`MAX_DECOMPRESSED_LEN`] and by
//!   the declared size;
//! - no heap allocation for an uncompressed FrameSet;
//! - a FrameSet is accepted only with a SIG first whose SHA-256 or SHA-1
//!   digest matches, an END last with nothing after it, and the frames its
//!   type requires;
//! - a sequenced FrameSet (type >= 16 with REQID) whose SIG and REQID are
//!   valid is accepted even if its payload is malformed or its type unknown,
//!   with [`Classified::malformed`] set: the sender must still get its ACK, or
//!   everything it sends after it stays blocked (WIRE.md).
//!
//! What it does not do: sockets, threads, reliable-delivery state, the log.
//! Encrypted FrameSets (CRYPTCURVE25519) are opened by [`classify_with`]
//! given the CMA's keys (an [`Opener`], see `crate::crypt`); without keys
//! they are dropped ([`Drop::EncryptedUnsupported`]).

mod encode;
mod error;
mod frame;
mod logged;
mod message;
pub mod switch;
mod types;
mod view;

use std::borrow::Cow;
use std::sync::Arc;

use sha1::Sha1;
use sha2::{Digest, Sha256};

pub use encode::{COMPRESS_THRESHOLD, EncodeError, EncodeOptions, deflate, encode, seal};
pub use error::{Drop, DropCounters, Dropped};
pub use frame::{
    ADDR_FAMILY_802, ADDR_FAMILY_IPV4, ADDR_FAMILY_IPV6, AddrFrame, CryptHeader, DigestKind, Frame,
    PeerState, PeerStatus, REQID_LEN, ReqId, ValueKind, is_key_id, parse_int, parse_ipport,
    parse_str,
};
pub use logged::{LOGGED_HEADER_LEN, LOGGED_VERSION, Logged, LoggedError, write_logged};
pub use message::{
    Discoveries, Discovery, HbParams, HbState, Message, Parsed, PeerIter, PeerStates, Peers,
    Startup, SwDiscover,
};
pub use types::{
    FIRST_SEQUENCED_TYPE, FrameSetType, FrameType, frame_type_name, frameset_type_name,
};
pub use view::{
    FRAME_HEADER_LEN, FRAMESET_HEADER_LEN, FrameIter, FrameSetView, FrameView, MAX_DATAGRAM_LEN,
};

/// Largest decompressed size of a COMPRESS frame's contents (4 MiB).
pub const MAX_DECOMPRESSED_LEN: usize = 4 << 20;

/// Priority band of a FrameSet: lower is more urgent. The io thread may use
/// it to decide what to keep when it must shed load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Band {
    /// ACK, CONNSHUT, CONNNAK: reliable-delivery control, which unblocks senders.
    Control = 0,
    /// HBDEAD, HBSHUTDOWN: deaths and departures.
    Death = 1,
    /// STARTUP: joins.
    Startup = 2,
    /// JSDISCOVERY, SWDISCOVER, RSCOPREPLY.
    Discovery = 3,
    /// HBLATE, HBBACKALIVE, HBMARTIAN.
    Health = 4,
    /// Everything else: heartbeats, pings, CMA instructions, unknown types.
    Other = 5,
}

impl Band {
    /// The band of a FrameSet type number.
    pub fn of(fstype: u16) -> Band {
        use FrameSetType as T;
        match FrameSetType::from_wire(fstype) {
            Some(T::Ack | T::ConnShut | T::ConnNak) => Band::Control,
            Some(T::HbDead | T::HbShutdown) => Band::Death,
            Some(T::Startup) => Band::Startup,
            Some(T::JsDiscovery | T::SwDiscover | T::RscOpReply) => Band::Discovery,
            Some(T::HbLate | T::HbBackAlive | T::HbMartian) => Band::Health,
            _ => Band::Other,
        }
    }
}

/// An accepted FrameSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified<'a> {
    /// FrameSet type number.
    pub fstype: u16,
    /// The type, when we know it.
    pub kind: Option<FrameSetType>,
    /// Priority band.
    pub band: Band,
    /// Digest algorithm of the (verified) SIG.
    pub digest: DigestKind,
    /// REQID: the FrameSet's own for sequenced types, the acknowledged one for ACK.
    pub reqid: Option<ReqId>,
    /// Bytes of this FrameSet in the datagram (header included).
    pub wire_len: usize,
    /// The payload arrived compressed.
    pub compressed: bool,
    /// Unknown frame types skipped in the payload.
    pub unknown_frames: u16,
    /// Set for a sequenced FrameSet whose payload does not parse (or whose
    /// type we do not know: [`Drop::UnknownFrameSetType`]); it is still to
    /// be logged and ACKed.
    pub malformed: Option<Dropped>,
    /// The sender's key id when it arrived encrypted (and opened).
    pub sender_key: Option<Arc<str>>,
    /// Payload frames: after REQID, before END.
    payload: Cow<'a, [u8]>,
    /// Offset of the payload in the datagram (or the inflated bytes).
    pub(crate) payload_offset: usize,
}

impl Classified<'_> {
    /// The same, owning its payload: free when it was inflated or opened
    /// (already owned), a copy of the payload otherwise.
    pub fn into_owned(self) -> Classified<'static> {
        Classified {
            fstype: self.fstype,
            kind: self.kind,
            band: self.band,
            digest: self.digest,
            reqid: self.reqid,
            wire_len: self.wire_len,
            compressed: self.compressed,
            unknown_frames: self.unknown_frames,
            malformed: self.malformed,
            sender_key: self.sender_key,
            payload: Cow::Owned(self.payload.into_owned()),
            payload_offset: self.payload_offset,
        }
    }

    /// A sequenced FrameSet: takes part in reliable delivery and must be ACKed.
    pub fn is_sequenced(&self) -> bool {
        is_sequenced(self.fstype, self.reqid.is_some())
    }

    /// The payload frames (after REQID, before END).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The typed message. Fails only when [`Classified::malformed`] is set.
    pub fn message(&self) -> Result<Message<'_>, Dropped> {
        if let Some(m) = self.malformed {
            return Err(m);
        }
        Message::parse(self.fstype, &self.payload, self.payload_offset).map(|p| p.message)
    }
}

/// Is a FrameSet of this type, with or without a REQID, sequenced?
pub fn is_sequenced(fstype: u16, has_reqid: bool) -> bool {
    has_reqid && fstype >= FIRST_SEQUENCED_TYPE && fstype != FrameSetType::Ack.to_wire()
}

/// What can be read off a datagram without verifying or inflating it:
/// its FrameSet type and, if its payload is compressed, the size it
/// declares once inflated. For the log thread's limits, applied before the
/// cost of [`classify`] (SHA, inflation) is paid; `None` for anything
/// [`classify`] would drop before that cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peek {
    /// The FrameSet type.
    pub fstype: u16,
    /// A COMPRESS frame's declared decompressed size.
    pub inflated_size: Option<u32>,
}

/// Reads a datagram's [`Peek`] (no digest check, no inflation).
pub fn peek(datagram: &[u8]) -> Option<Peek> {
    let fs = FrameSetView::new_checked(datagram).ok()?;
    let mut it = FrameIter::new(fs.frames(), FRAMESET_HEADER_LEN);
    let sig = it.next()?.ok()?;
    if sig.ftype != FrameType::Sig.to_wire() {
        return None;
    }
    let inflated_size = match it.next().transpose().ok()? {
        Some(f) if f.ftype == FrameType::Compress.to_wire() => match Frame::parse(f.ftype, f.value)
        {
            Ok(Frame::Compress {
                decompressed_size, ..
            }) => Some(decompressed_size),
            _ => None,
        },
        _ => None,
    };
    Some(Peek {
        fstype: fs.fstype(),
        inflated_size,
    })
}

/// Opens encrypted FrameSets: the CMA's keys (`crate::crypt::Keyring`).
pub trait Opener {
    /// The plaintext frames of a crypt frame and the sender's key id, or
    /// why it cannot be opened.
    fn open_frames(&self, h: &CryptHeader<'_>) -> Result<(Vec<u8>, Arc<str>), Drop>;
}

/// Classifies the first FrameSet of `datagram`. `wire_len` of the result
/// says where a following FrameSet would start. An encrypted one is
/// dropped ([`Drop::EncryptedUnsupported`]); see [`classify_with`].
pub fn classify(datagram: &[u8]) -> Result<Classified<'_>, Dropped> {
    classify_with(datagram, None)
}

/// [`classify`], opening an encrypted FrameSet with `keys`: the result is
/// its plaintext's, with [`Classified::sender_key`] set.
///
/// Kept whole: the frames are walked once, in the order the wire puts
/// them (SIG, crypt, compress, REQID, payload).
pub fn classify_with<'a>(
    datagram: &'a [u8],
    keys: Option<&dyn Opener>,
) -> Result<Classified<'a>, Dropped> {
    let fs = FrameSetView::new_checked(datagram)?;
    let fstype = fs.fstype();
    let frames = fs.frames();
    let mut it = FrameIter::new(frames, FRAMESET_HEADER_LEN);

    // SIG first, over everything after it.
    let first = it
        .next()
        .ok_or(Dropped::at(Drop::MissingSig, FRAMESET_HEADER_LEN))??;
    if first.ftype != FrameType::Sig.to_wire() {
        return Err(Dropped::at(Drop::MissingSig, first.offset));
    }
    let Ok(Frame::Sig {
        kind: digest_kind,
        digest,
    }) = Frame::parse(first.ftype, first.value)
    else {
        return Err(Dropped::at(Drop::BadSig, first.offset));
    };
    let signed = it.rest();
    if !digest_matches(digest_kind, digest, signed) {
        return Err(Dropped::at(Drop::DigestMismatch, first.offset));
    }

    // Optional CRYPTCURVE25519 (running to the end), then optional COMPRESS.
    let mut next = it.clone().next().transpose()?;
    let mut sender_key = None;
    let mut opened: Option<Vec<u8>> = None;
    if let Some(f) = next.filter(|f| f.ftype == FrameType::CryptCurve25519.to_wire()) {
        let h = match Frame::parse(f.ftype, f.value) {
            Ok(Frame::Crypt(h)) => h,
            Ok(_) => return Err(Dropped::at(Drop::BadCrypt, f.offset)),
            Err(reason) => return Err(Dropped::at(reason, f.offset)),
        };
        let keys = keys.ok_or(Dropped::at(Drop::EncryptedUnsupported, f.offset))?;
        let (plain, key) = keys.open_frames(&h).map_err(|r| Dropped::at(r, f.offset))?;
        sender_key = Some(key);
        opened = Some(plain);
    }
    // Offsets past here count in the plaintext (or inflated) bytes.
    let was_opened = opened.is_some();
    let mut decoded = was_opened;
    let mut compressed = false;
    let (inner, inner_base): (Cow<'_, [u8]>, usize) = {
        let (bytes, base): (&[u8], usize) = match &opened {
            Some(p) => (p, 0),
            None => (it.rest(), it.offset()),
        };
        let mut pit = FrameIter::new(bytes, base);
        let in_plain = |mut d: Dropped| {
            d.inflated = was_opened;
            d
        };
        let first = pit.clone().next().transpose().map_err(in_plain)?;
        match first {
            Some(f) if f.ftype == FrameType::Compress.to_wire() => {
                let Ok(Frame::Compress {
                    decompressed_size,
                    data,
                    ..
                }) = Frame::parse(f.ftype, f.value)
                else {
                    return Err(in_plain(Dropped::at(Drop::BadCompress, f.offset)));
                };
                pit.next();
                if !pit.rest().is_empty() {
                    return Err(in_plain(Dropped::at(Drop::TrailingBytes, pit.offset())));
                }
                compressed = true;
                decoded = true;
                let bytes = inflate(data, decompressed_size as usize)
                    .map_err(|r| in_plain(Dropped::at(r, f.offset)))?;
                (Cow::Owned(bytes), 0)
            }
            _ => match opened {
                Some(p) => (Cow::Owned(p), 0),
                None => (Cow::Borrowed(it.rest()), it.offset()),
            },
        }
    };
    let in_inner = |mut d: Dropped| {
        d.inflated = decoded;
        d
    };

    // Optional REQID, then payload frames up to END.
    let mut it = FrameIter::new(&inner, inner_base);
    next = it.clone().next().transpose().map_err(in_inner)?;
    let mut reqid = None;
    if let Some(f) = next.filter(|f| f.ftype == FrameType::ReqId.to_wire()) {
        match Frame::parse(f.ftype, f.value) {
            Ok(Frame::ReqId(r)) => reqid = Some(r),
            _ => return Err(in_inner(Dropped::at(Drop::BadLength, f.offset))),
        }
        it.next();
    }
    let payload_start = it.offset() - inner_base;
    let mut payload_end = None;
    for f in it.by_ref() {
        let f = f.map_err(in_inner)?;
        if f.ftype == FrameType::End.to_wire() {
            if !f.value.is_empty() {
                return Err(in_inner(Dropped::at(Drop::BadLength, f.offset)));
            }
            payload_end = Some(f.offset - inner_base);
            break;
        }
    }
    let Some(payload_end) = payload_end else {
        return Err(in_inner(Dropped::at(
            Drop::MissingEnd,
            inner_base + inner.len(),
        )));
    };
    if !it.rest().is_empty() {
        return Err(in_inner(Dropped::at(Drop::TrailingBytes, it.offset())));
    }

    let kind = FrameSetType::from_wire(fstype);
    let sequenced = is_sequenced(fstype, reqid.is_some());
    if kind == Some(FrameSetType::Ack) && reqid.is_none() {
        return Err(in_inner(Dropped::at(
            Drop::AckWithoutReqId,
            inner_base + payload_start,
        )));
    }
    if kind.is_none() && !sequenced {
        return Err(Dropped::at(Drop::UnknownFrameSetType, 0));
    }

    let payload_offset = inner_base + payload_start;
    let payload_bytes = &inner[payload_start..payload_end];
    let (unknown_frames, mut malformed) =
        match Message::parse(fstype, payload_bytes, payload_offset) {
            Ok(p) => (p.unknown_frames, None),
            Err(d) if sequenced => (0, Some(in_inner(d))),
            Err(d) => return Err(in_inner(d)),
        };
    if kind.is_none() {
        malformed = Some(Dropped::at(Drop::UnknownFrameSetType, 0));
    }
    let payload = match inner {
        Cow::Borrowed(b) => Cow::Borrowed(&b[payload_start..payload_end]),
        Cow::Owned(mut v) => {
            v.truncate(payload_end);
            v.drain(..payload_start);
            Cow::Owned(v)
        }
    };
    Ok(Classified {
        fstype,
        kind,
        band: Band::of(fstype),
        digest: digest_kind,
        reqid,
        wire_len: fs.wire_len(),
        compressed,
        unknown_frames,
        malformed,
        sender_key,
        payload,
        payload_offset,
    })
}

/// Classifies every FrameSet of a datagram in turn; stops after the first
/// one whose length cannot be trusted (header or overrun errors).
pub fn classify_all(datagram: &[u8]) -> impl Iterator<Item = Result<Classified<'_>, Dropped>> {
    classify_all_with(datagram, None)
}

/// [`classify_all`], opening encrypted FrameSets with `keys`.
pub fn classify_all_with<'a>(
    datagram: &'a [u8],
    keys: Option<&'a dyn Opener>,
) -> impl Iterator<Item = Result<Classified<'a>, Dropped>> {
    let mut rest = datagram;
    let mut base = 0usize;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match FrameSetView::new_checked(rest) {
            Err(mut d) => {
                d.offset = d.offset.saturating_add(base as u32);
                rest = &[];
                Some(Err(d))
            }
            Ok(view) => {
                let len = view.wire_len();
                let mut r = classify_with(view.as_bytes(), keys);
                if let Err(d) = &mut r
                    && !d.inflated
                {
                    d.offset = d.offset.saturating_add(base as u32);
                }
                rest = &rest[len..];
                base += len;
                Some(r)
            }
        }
    })
}

/// Computes the digest of `bytes` into `out` (which must hold `kind.digest_len()`).
pub(crate) fn compute_digest(kind: DigestKind, bytes: &[u8], out: &mut [u8]) {
    match kind {
        DigestKind::Sha256 => out.copy_from_slice(&Sha256::digest(bytes)),
        DigestKind::Sha1 => out.copy_from_slice(&Sha1::digest(bytes)),
    }
}

fn digest_matches(kind: DigestKind, digest: &[u8], signed: &[u8]) -> bool {
    let mut buf = [0u8; 32];
    let mine = &mut buf[..kind.digest_len()];
    compute_digest(kind, signed, mine);
    mine == digest
}

/// Inflates a zlib stream whose output must be exactly `declared` bytes,
/// never producing more than `min(declared, MAX_DECOMPRESSED_LEN) + 1`.
pub(crate) fn inflate(data: &[u8], declared: usize) -> Result<Vec<u8>, Drop> {
    use flate2::{Decompress, FlushDecompress, Status};
    if declared > MAX_DECOMPRESSED_LEN {
        return Err(Drop::DecompressionBomb);
    }
    let limit = declared + 1;
    let mut out = Vec::with_capacity(limit.min(64 << 10));
    let mut z = Decompress::new(true);
    loop {
        if out.len() == out.capacity() {
            let grow = out.capacity().max(4096).min(limit - out.len());
            out.reserve_exact(grow);
        }
        let consumed = z.total_in() as usize;
        let produced = out.len();
        let status = z
            .decompress_vec(&data[consumed..], &mut out, FlushDecompress::None)
            .map_err(|_| Drop::InflateError)?;
        let progressed = z.total_in() as usize != consumed || out.len() != produced;
        if out.len() > declared {
            return Err(if out.len() > MAX_DECOMPRESSED_LEN {
                Drop::DecompressionBomb
            } else {
                Drop::DecompressedSizeMismatch
            });
        }
        match status {
            Status::StreamEnd => break,
            // No progress with room left to write: the input ended early.
            Status::Ok | Status::BufError if !progressed && out.len() < out.capacity() => {
                return Err(Drop::InflateError);
            }
            Status::Ok | Status::BufError => {}
        }
    }
    if z.total_in() as usize != data.len() {
        return Err(Drop::InflateError);
    }
    if out.len() != declared {
        return Err(Drop::DecompressedSizeMismatch);
    }
    Ok(out)
}
