//! Typed frame values: parse a frame's value bytes by its type, and emit it.
//!
//! Every parser checks lengths before it reads, so any byte string gives a
//! value or a [`Drop`], never a panic. Values borrow from the packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::Drop;
use super::types::FrameType;
use super::view::{FRAME_HEADER_LEN, be16, be24};

/// Address family numbers (IANA) used in address frames.
pub const ADDR_FAMILY_IPV4: u16 = 1;
/// IPv6.
pub const ADDR_FAMILY_IPV6: u16 = 2;
/// IEEE 802 (MAC) addresses.
pub const ADDR_FAMILY_802: u16 = 6;

/// Largest key id (with its NUL) in a CRYPTCURVE25519 frame.
pub const KEYID_MAX_LEN: usize = 128;

/// The digest algorithm of a SIG frame (glib GChecksumType numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestKind {
    /// SHA-1, 20-byte digest (the original CMA's choice).
    Sha1,
    /// SHA-256, 32-byte digest (what nanoprobes send).
    Sha256,
}

impl DigestKind {
    /// The minor version byte of the SIG frame.
    pub const fn wire_code(self) -> u8 {
        match self {
            DigestKind::Sha1 => 1,
            DigestKind::Sha256 => 2,
        }
    }

    /// Bytes of the digest.
    pub const fn digest_len(self) -> usize {
        match self {
            DigestKind::Sha1 => 20,
            DigestKind::Sha256 => 32,
        }
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            DigestKind::Sha1 => "sha1",
            DigestKind::Sha256 => "sha256",
        }
    }

    /// The SIG frame's value length: major, minor and the digest.
    pub const fn sig_value_len(self) -> usize {
        2 + self.digest_len()
    }
}

/// The request id of a sequenced FrameSet (REQID frame, 14 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReqId {
    /// The sender's session (grows on restart and on connection reset).
    pub session: u32,
    /// Position in the session, from 1.
    pub request: u64,
    /// The connection's queue (0 in practice).
    pub queue: u16,
}

/// Value length of a REQID frame.
pub const REQID_LEN: usize = 14;

/// The parsed header of a CRYPTCURVE25519 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CryptHeader<'a> {
    /// Sender key id (without its NUL).
    pub sender_key_id: &'a str,
    /// Receiver key id (without its NUL).
    pub receiver_key_id: &'a str,
    /// 24-byte nonce.
    pub nonce: &'a [u8; 24],
    /// 16-byte Poly1305 MAC.
    pub mac: &'a [u8; 16],
    /// The ciphertext: every frame after this one, encrypted (the frame's
    /// TLV length runs to the end of the FrameSet).
    pub ciphertext: &'a [u8],
}

/// An address frame (IPADDR, MACADDR): family and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrFrame<'a> {
    /// Address family (1 IPv4, 2 IPv6, 6 IEEE 802).
    pub family: u16,
    /// The address bytes.
    pub bytes: &'a [u8],
}

impl AddrFrame<'_> {
    /// As an IP address, for families 1 and 2.
    pub fn ip(&self) -> Option<IpAddr> {
        match (self.family, self.bytes.len()) {
            (ADDR_FAMILY_IPV4, 4) => {
                let b: [u8; 4] = self.bytes.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            }
            (ADDR_FAMILY_IPV6, 16) => {
                let b: [u8; 16] = self.bytes.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    }
}

/// A typed frame value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// END.
    End,
    /// SIG: digest kind and digest bytes.
    Sig {
        /// Algorithm.
        kind: DigestKind,
        /// The digest.
        digest: &'a [u8],
    },
    /// CRYPTCURVE25519 header.
    Crypt(CryptHeader<'a>),
    /// COMPRESS header; the compressed bytes follow inside the frame.
    Compress {
        /// 1 = zlib.
        method: u8,
        /// Declared size of the decompressed frames.
        decompressed_size: u32,
        /// The compressed stream.
        data: &'a [u8],
    },
    /// REQID.
    ReqId(ReqId),
    /// An integer-valued frame (WALLCLOCK, PORTNUM, HBINTERVAL, ...).
    Int(FrameType, u64),
    /// A string-valued frame (HOSTNAME, JSDISCOVER, ...), without its NUL.
    Str(FrameType, &'a str),
    /// IPADDR or MACADDR.
    Addr(FrameType, AddrFrame<'a>),
    /// IPPORT.
    IpPort(SocketAddr),
    /// PKTDATA.
    PktData(&'a [u8]),
    /// PUBKEYCURVE25519.
    PubKey(&'a [u8; 32]),
    /// HBPEERSTATE (ours).
    PeerState(PeerState),
    /// INSTRREQID (ours).
    InstrReqId(ReqId),
    /// A frame type we do not know: skipped by message parsers.
    Unknown {
        /// Its type number.
        ftype: u16,
        /// Its value.
        value: &'a [u8],
    },
}

/// What an agent knows of a peer it watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerStatus {
    /// Heard within the warning time.
    Up = 0,
    /// Heard, but later than the warning time.
    Late = 1,
    /// Silent for the dead time (reported HBDEAD).
    Dead = 2,
}

impl PeerStatus {
    /// The wire byte's meaning.
    pub fn from_wire(b: u8) -> Option<PeerStatus> {
        match b {
            0 => Some(PeerStatus::Up),
            1 => Some(PeerStatus::Late),
            2 => Some(PeerStatus::Dead),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            PeerStatus::Up => "up",
            PeerStatus::Late => "late",
            PeerStatus::Dead => "dead",
        }
    }
}

/// HBPEERSTATE's value: `status u8`, `since_ms u32`, then an IPPORT value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerState {
    /// The watched peer.
    pub peer: SocketAddr,
    /// Its status.
    pub status: PeerStatus,
    /// Milliseconds since it was last heard (saturating).
    pub since_ms: u32,
}

/// How the value of a known frame type is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// No value.
    Empty,
    /// Big-endian integer of 1, 2, 3, 4 or 8 bytes.
    Int,
    /// NUL-terminated string.
    Str,
    /// Address frame.
    Addr,
    /// Port, family, address.
    IpPort,
    /// Opaque bytes.
    Bytes,
    /// One of the structural frames with its own layout.
    Special,
}

impl FrameType {
    /// How this frame type's value is encoded.
    pub const fn value_kind(self) -> ValueKind {
        use FrameType::*;
        match self {
            End => ValueKind::Empty,
            Sig | CryptCurve25519 | Compress | ReqId | PubKeyCurve25519 | HbPeerState
            | InstrReqId => ValueKind::Special,
            WallClock | PortNum | HbInterval | HbDeadTime | HbWarnTime | CIntVal | ElapsedTime
            | DiscInterval => ValueKind::Int,
            Interface | Hostname | PathName | JsDiscover | ConfigJson | CStringVal | DiscName
            | DiscJson | RscJson | RscJsonReply | KeyId | Features | StatsJson => ValueKind::Str,
            IpAddr | MacAddr => ValueKind::Addr,
            IpPort => ValueKind::IpPort,
            PktData => ValueKind::Bytes,
        }
    }

    /// Bytes this encoder writes for an integer frame of this type.
    pub const fn int_width(self) -> usize {
        match self {
            FrameType::WallClock | FrameType::ElapsedTime => 8,
            FrameType::PortNum => 2,
            _ => 4,
        }
    }
}

impl<'a> Frame<'a> {
    /// Parses the value of a frame of type number `ftype`.
    pub fn parse(ftype: u16, value: &'a [u8]) -> Result<Frame<'a>, Drop> {
        let Some(t) = FrameType::from_wire(ftype) else {
            return Ok(Frame::Unknown { ftype, value });
        };
        match t.value_kind() {
            ValueKind::Empty => {
                if value.is_empty() {
                    Ok(Frame::End)
                } else {
                    Err(Drop::BadLength)
                }
            }
            ValueKind::Int => parse_int(value).map(|v| Frame::Int(t, v)),
            ValueKind::Str => parse_str(value).map(|s| Frame::Str(t, s)),
            ValueKind::Addr => parse_addr(t, value).map(|a| Frame::Addr(t, a)),
            ValueKind::IpPort => parse_ipport(value).map(Frame::IpPort),
            ValueKind::Bytes => Ok(Frame::PktData(value)),
            ValueKind::Special => match t {
                FrameType::Sig => parse_sig(value),
                FrameType::CryptCurve25519 => parse_crypt(value).map(Frame::Crypt),
                FrameType::Compress => parse_compress(value),
                FrameType::ReqId => parse_reqid(value).map(Frame::ReqId),
                FrameType::InstrReqId => parse_reqid(value).map(Frame::InstrReqId),
                FrameType::HbPeerState => parse_peer_state(value).map(Frame::PeerState),
                // PubKeyCurve25519 is the only other Special kind.
                _ => value
                    .try_into()
                    .map(Frame::PubKey)
                    .map_err(|_| Drop::BadLength),
            },
        }
    }

    /// The frame type number.
    pub fn ftype(&self) -> u16 {
        match self {
            Frame::End => FrameType::End.to_wire(),
            Frame::Sig { .. } => FrameType::Sig.to_wire(),
            Frame::Crypt(_) => FrameType::CryptCurve25519.to_wire(),
            Frame::Compress { .. } => FrameType::Compress.to_wire(),
            Frame::ReqId(_) => FrameType::ReqId.to_wire(),
            Frame::Int(t, _) | Frame::Str(t, _) | Frame::Addr(t, _) => t.to_wire(),
            Frame::IpPort(_) => FrameType::IpPort.to_wire(),
            Frame::PktData(_) => FrameType::PktData.to_wire(),
            Frame::PubKey(_) => FrameType::PubKeyCurve25519.to_wire(),
            Frame::PeerState(_) => FrameType::HbPeerState.to_wire(),
            Frame::InstrReqId(_) => FrameType::InstrReqId.to_wire(),
            Frame::Unknown { ftype, .. } => *ftype,
        }
    }

    /// Appends the frame (header and value) to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        put_header(out, self.ftype(), 0);
        match *self {
            Frame::End => {}
            Frame::Sig { kind, digest } => {
                out.extend_from_slice(&[1, kind.wire_code()]);
                out.extend_from_slice(digest);
            }
            Frame::Crypt(h) => {
                for id in [h.sender_key_id, h.receiver_key_id] {
                    // Key ids are bounded by KEYID_MAX_LEN, so the length fits a byte.
                    out.push((id.len() + 1) as u8);
                    out.extend_from_slice(id.as_bytes());
                    out.push(0);
                }
                out.extend_from_slice(h.nonce);
                out.extend_from_slice(h.mac);
                out.extend_from_slice(h.ciphertext);
            }
            Frame::Compress {
                method,
                decompressed_size,
                data,
            } => {
                out.push(method);
                out.extend_from_slice(&decompressed_size.to_be_bytes()[1..]);
                out.extend_from_slice(data);
            }
            Frame::ReqId(r) => put_reqid(out, r),
            Frame::Int(t, v) => put_int(out, t.int_width(), v),
            Frame::Str(_, s) => {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
            Frame::Addr(_, a) => {
                out.extend_from_slice(&a.family.to_be_bytes());
                out.extend_from_slice(a.bytes);
            }
            Frame::IpPort(sa) => put_ipport_value(out, sa),
            Frame::PktData(b) => out.extend_from_slice(b),
            Frame::PubKey(k) => out.extend_from_slice(k),
            Frame::PeerState(p) => {
                out.push(p.status as u8);
                out.extend_from_slice(&p.since_ms.to_be_bytes());
                put_ipport_value(out, p.peer);
            }
            Frame::InstrReqId(r) => put_reqid(out, r),
            Frame::Unknown { value, .. } => out.extend_from_slice(value),
        }
        patch_len(out, start);
    }
}

/// Writes a frame header with a length to be patched later.
pub(crate) fn put_header(out: &mut Vec<u8>, ftype: u16, len: usize) {
    out.extend_from_slice(&ftype.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
}

/// Sets the length field of the frame whose header starts at `start` to the
/// bytes written after it. A value too long for the u24 field gets the
/// largest length; [`encode`](super::encode) rejects such a FrameSet as too
/// large, so it never reaches the wire.
pub(crate) fn patch_len(out: &mut [u8], start: usize) {
    let len = (out.len() - start - FRAME_HEADER_LEN).min(0xff_ffff) as u32;
    out[start + 2..start + 5].copy_from_slice(&len.to_be_bytes()[1..]);
}

/// Writes a big-endian integer of `width` bytes (8 if the value needs it).
fn put_int(out: &mut Vec<u8>, width: usize, v: u64) {
    let width = if width < 8 && v >> (8 * width) != 0 {
        8
    } else {
        width
    };
    out.extend_from_slice(&v.to_be_bytes()[8 - width..]);
}

pub(crate) fn put_reqid(out: &mut Vec<u8>, r: ReqId) {
    out.extend_from_slice(&r.session.to_be_bytes());
    out.extend_from_slice(&r.request.to_be_bytes());
    out.extend_from_slice(&r.queue.to_be_bytes());
}

fn put_ipport_value(out: &mut Vec<u8>, sa: SocketAddr) {
    out.extend_from_slice(&sa.port().to_be_bytes());
    match sa.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&ADDR_FAMILY_IPV4.to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&ADDR_FAMILY_IPV6.to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
    }
}

/// Parses a big-endian integer of 1, 2, 3, 4 or 8 bytes.
pub fn parse_int(value: &[u8]) -> Result<u64, Drop> {
    match value.len() {
        1 | 2 | 3 | 4 | 8 => Ok(value.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b))),
        _ => Err(Drop::BadInteger),
    }
}

/// Parses a string whose length counts exactly one trailing NUL.
pub fn parse_str(value: &[u8]) -> Result<&str, Drop> {
    match value.split_last() {
        Some((0, body)) if !body.contains(&0) => {
            std::str::from_utf8(body).map_err(|_| Drop::BadString)
        }
        _ => Err(Drop::BadString),
    }
}

/// Parses an IPPORT value: port, family, 4 or 16 address bytes.
pub fn parse_ipport(value: &[u8]) -> Result<SocketAddr, Drop> {
    if value.len() < 4 {
        return Err(Drop::BadIpPort);
    }
    let port = be16(value, 0);
    let family = be16(value, 2);
    if port == 0 {
        return Err(Drop::BadIpPort);
    }
    let ip = match (family, &value[4..]) {
        (ADDR_FAMILY_IPV4, a) if a.len() == 4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        (ADDR_FAMILY_IPV6, a) if a.len() == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(a);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(Drop::BadIpPort),
    };
    Ok(SocketAddr::new(ip, port))
}

fn parse_addr(t: FrameType, value: &[u8]) -> Result<AddrFrame<'_>, Drop> {
    if value.len() < 2 {
        return Err(Drop::BadAddress);
    }
    let family = be16(value, 0);
    let bytes = &value[2..];
    let ok = match t {
        FrameType::MacAddr => family == ADDR_FAMILY_802 && matches!(bytes.len(), 6 | 8),
        _ => matches!(
            (family, bytes.len()),
            (ADDR_FAMILY_IPV4, 4) | (ADDR_FAMILY_IPV6, 16)
        ),
    };
    if ok {
        Ok(AddrFrame { family, bytes })
    } else {
        Err(Drop::BadAddress)
    }
}

fn parse_sig(value: &[u8]) -> Result<Frame<'_>, Drop> {
    let kind = match value {
        [1, 1, ..] => DigestKind::Sha1,
        [1, 2, ..] => DigestKind::Sha256,
        _ => return Err(Drop::BadSig),
    };
    if value.len() != kind.sig_value_len() {
        return Err(Drop::BadSig);
    }
    Ok(Frame::Sig {
        kind,
        digest: &value[2..],
    })
}

fn parse_reqid(value: &[u8]) -> Result<ReqId, Drop> {
    let b: &[u8; REQID_LEN] = value.try_into().map_err(|_| Drop::BadLength)?;
    let mut session = [0u8; 4];
    let mut request = [0u8; 8];
    session.copy_from_slice(&b[0..4]);
    request.copy_from_slice(&b[4..12]);
    Ok(ReqId {
        session: u32::from_be_bytes(session),
        request: u64::from_be_bytes(request),
        queue: be16(b, 12),
    })
}

fn parse_peer_state(value: &[u8]) -> Result<PeerState, Drop> {
    if value.len() < 5 {
        return Err(Drop::BadLength);
    }
    let status = PeerStatus::from_wire(value[0]).ok_or(Drop::BadLength)?;
    let since_ms = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    let peer = parse_ipport(&value[5..])?;
    Ok(PeerState {
        peer,
        status,
        since_ms,
    })
}

fn parse_compress(value: &[u8]) -> Result<Frame<'_>, Drop> {
    if value.len() < 4 || value[0] != 1 {
        return Err(Drop::BadCompress);
    }
    Ok(Frame::Compress {
        method: value[0],
        decompressed_size: be24(value, 1),
        data: &value[4..],
    })
}

/// Reads a key id: length byte (counting the NUL), bytes, NUL.
fn take_key_id(value: &[u8]) -> Result<(&str, &[u8]), Drop> {
    let (&len, rest) = value.split_first().ok_or(Drop::BadCrypt)?;
    let len = usize::from(len);
    if len == 0 || len > KEYID_MAX_LEN || rest.len() < len {
        return Err(Drop::BadCrypt);
    }
    let id = parse_str(&rest[..len]).map_err(|_| Drop::BadCrypt)?;
    if !is_key_id(id) {
        return Err(Drop::BadCrypt);
    }
    Ok((id, &rest[len..]))
}

fn parse_crypt(value: &[u8]) -> Result<CryptHeader<'_>, Drop> {
    let (sender_key_id, rest) = take_key_id(value)?;
    let (receiver_key_id, rest) = take_key_id(rest)?;
    if rest.len() < 24 + 16 {
        return Err(Drop::BadCrypt);
    }
    let (nonce, rest) = rest.split_at(24);
    let (mac, ciphertext) = rest.split_at(16);
    Ok(CryptHeader {
        sender_key_id,
        receiver_key_id,
        nonce: nonce.try_into().map_err(|_| Drop::BadCrypt)?,
        mac: mac.try_into().map_err(|_| Drop::BadCrypt)?,
        ciphertext,
    })
}

/// A key id as the nanoprobe accepts one: 1 to [`KEYID_MAX_LEN`] - 1
/// characters of `[A-Za-z0-9-_.+@#]` (it names a file in a key directory,
/// so nothing else may pass: no `/`, no `..` alone).
pub fn is_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() < KEYID_MAX_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+@#".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame<'_>) {
        let mut out = Vec::new();
        f.emit(&mut out);
        let len = be24(&out, 2) as usize;
        assert_eq!(len + FRAME_HEADER_LEN, out.len());
        let back = Frame::parse(be16(&out, 0), &out[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::End);
        round_trip(Frame::Int(FrameType::WallClock, 0x0006_611a_2903_1559));
        round_trip(Frame::Int(FrameType::HbInterval, 1 << 40));
        round_trip(Frame::Str(FrameType::Hostname, "vm"));
        round_trip(Frame::IpPort("127.0.0.1:1984".parse().unwrap()));
        round_trip(Frame::IpPort("[::ffff:127.0.0.1]:1985".parse().unwrap()));
        round_trip(Frame::ReqId(ReqId {
            session: 0x5f5e100,
            request: 3,
            queue: 0,
        }));
        round_trip(Frame::Addr(
            FrameType::MacAddr,
            AddrFrame {
                family: 6,
                bytes: &[2, 0xfc, 0, 0, 0, 1],
            },
        ));
        round_trip(Frame::Crypt(CryptHeader {
            sender_key_id: "a",
            receiver_key_id: "#CMA#0",
            nonce: &[7; 24],
            mac: &[9; 16],
            ciphertext: b"secret",
        }));
        round_trip(Frame::Unknown {
            ftype: 999,
            value: b"xyz",
        });
    }

    #[test]
    fn integers() {
        assert_eq!(parse_int(&[1, 2, 3]), Ok(0x010203));
        assert_eq!(parse_int(&[1; 8]), Ok(0x0101_0101_0101_0101));
        for bad in [0usize, 5, 6, 7, 9] {
            assert_eq!(parse_int(&vec![0; bad]), Err(Drop::BadInteger));
        }
    }

    #[test]
    fn strings() {
        assert_eq!(parse_str(b"ab\0"), Ok("ab"));
        assert_eq!(parse_str(b"\0"), Ok(""));
        assert_eq!(parse_str(b"ab"), Err(Drop::BadString));
        assert_eq!(parse_str(b"a\0b\0"), Err(Drop::BadString));
        assert_eq!(parse_str(b""), Err(Drop::BadString));
        assert_eq!(parse_str(b"\xff\0"), Err(Drop::BadString));
    }

    #[test]
    fn ipports() {
        assert_eq!(
            parse_ipport(&[0x07, 0xc0, 0, 1, 127, 0, 0, 1]),
            Ok("127.0.0.1:1984".parse().unwrap())
        );
        // Port 0, wrong family, wrong lengths.
        assert_eq!(
            parse_ipport(&[0, 0, 0, 1, 127, 0, 0, 1]),
            Err(Drop::BadIpPort)
        );
        assert_eq!(
            parse_ipport(&[0, 1, 0, 3, 127, 0, 0, 1]),
            Err(Drop::BadIpPort)
        );
        assert_eq!(parse_ipport(&[0, 1, 0, 1, 127, 0, 0]), Err(Drop::BadIpPort));
        assert_eq!(
            parse_ipport(&[0, 1, 0, 2, 127, 0, 0, 1]),
            Err(Drop::BadIpPort)
        );
        assert_eq!(parse_ipport(&[0, 1, 0]), Err(Drop::BadIpPort));
    }

    #[test]
    fn structural_frames_reject_bad_lengths() {
        assert_eq!(Frame::parse(1, &[1, 2, 0]), Err(Drop::BadSig));
        assert_eq!(Frame::parse(1, &[2, 2]), Err(Drop::BadSig));
        assert_eq!(Frame::parse(1, &[1, 0]), Err(Drop::BadSig));
        assert_eq!(Frame::parse(4, &[0; 13]), Err(Drop::BadLength));
        assert_eq!(Frame::parse(30, &[0; 31]), Err(Drop::BadLength));
        assert_eq!(Frame::parse(3, &[2, 0, 0, 1]), Err(Drop::BadCompress));
        assert_eq!(Frame::parse(3, &[1, 0, 0]), Err(Drop::BadCompress));
        assert_eq!(Frame::parse(0, &[0]), Err(Drop::BadLength));
        assert_eq!(Frame::parse(2, &[0]), Err(Drop::BadCrypt));
        assert_eq!(Frame::parse(10, &[0, 1, 1, 2, 3]), Err(Drop::BadAddress));
        assert_eq!(Frame::parse(11, &[0, 6, 1, 2, 3]), Err(Drop::BadAddress));
    }
}
