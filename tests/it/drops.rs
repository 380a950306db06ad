//! One test per drop reason: each kind of bad input gives its own reason
//! (and a sensible offset), never a panic.

use std::collections::HashSet;
use std::io::Write;

use cma::classify::{
    Drop, DropCounters, Frame, FrameType, MAX_DECOMPRESSED_LEN, Message, ReqId, classify,
};

use crate::support::{END, encoded, frames, raw_frame, sealed};

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fn compress_frame(declared: u32, data: &[u8]) -> Vec<u8> {
    let mut v = vec![1];
    v.extend_from_slice(&declared.to_be_bytes()[1..]);
    v.extend_from_slice(data);
    raw_frame(FrameType::Compress.to_wire(), &v)
}

fn reqid() -> Vec<u8> {
    frames(&[Frame::ReqId(ReqId {
        session: 1,
        request: 1,
        queue: 0,
    })])
}

fn hbdead_with(value: &[u8]) -> Vec<u8> {
    let mut f = raw_frame(FrameType::IpPort.to_wire(), value);
    f.extend_from_slice(&END);
    sealed(26, &f)
}

fn hbshutdown_with(value: &[u8]) -> Vec<u8> {
    let mut f = raw_frame(FrameType::Hostname.to_wire(), value);
    f.extend_from_slice(&END);
    sealed(27, &f)
}

fn heartbeat() -> Vec<u8> {
    encoded(&Message::Heartbeat, None)
}

/// (name, datagram, expected reason, expected offset or None).
fn cases() -> Vec<(&'static str, Vec<u8>, Drop, Option<u32>)> {
    let hb = heartbeat();
    let big_zero = vec![0u8; MAX_DECOMPRESSED_LEN + 4096];
    let mut cases = vec![
        ("empty datagram", vec![], Drop::TruncatedHeader, Some(0)),
        (
            "6-byte header",
            hb[..6].to_vec(),
            Drop::TruncatedHeader,
            Some(0),
        ),
        (
            "fslen beyond datagram",
            hb[..50].to_vec(),
            Drop::FrameSetOverrun,
            Some(2),
        ),
        (
            "frame header cut",
            {
                let mut v = vec![0, 1, 0, 0, 3, 0, 0];
                v.extend_from_slice(&[0, 1, 0]);
                v
            },
            Drop::TruncatedFrame,
            Some(7),
        ),
        (
            "frame length beyond FrameSet",
            {
                let mut v = vec![0, 1, 0, 0, 5, 0, 0];
                v.extend_from_slice(&[0, 1, 0, 0, 34]);
                v
            },
            Drop::FrameOverrun,
            Some(7),
        ),
        (
            "no frames",
            vec![0, 1, 0, 0, 0, 0, 0],
            Drop::MissingSig,
            Some(7),
        ),
        (
            "END before SIG",
            {
                let mut v = vec![0, 1, 0, 0, 5, 0, 0];
                v.extend_from_slice(&END);
                v
            },
            Drop::MissingSig,
            Some(7),
        ),
        (
            "SIG major 2",
            {
                let mut v = hb.clone();
                v[12] = 2;
                v
            },
            Drop::BadSig,
            Some(7),
        ),
        (
            "MD5 digest kind",
            {
                let mut v = hb.clone();
                v[13] = 0;
                v
            },
            Drop::BadSig,
            Some(7),
        ),
        (
            "wrong digest",
            {
                let mut v = hb.clone();
                v[20] ^= 1;
                v
            },
            Drop::DigestMismatch,
            Some(7),
        ),
        (
            "payload changed under the digest",
            {
                let mut v = hbdead_with(&[0x07, 0xc0, 0, 1, 10, 0, 0, 1]);
                let n = v.len();
                v[n - 6] ^= 1;
                v
            },
            Drop::DigestMismatch,
            Some(7),
        ),
        ("missing END", sealed(1, &[]), Drop::MissingEnd, Some(46)),
        (
            "bytes after END",
            sealed(1, &[0, 0, 0, 0, 0, 9]),
            Drop::TrailingBytes,
            Some(51),
        ),
        (
            "frames after END",
            {
                let mut f = END.to_vec();
                f.extend_from_slice(&END);
                sealed(1, &f)
            },
            Drop::TrailingBytes,
            Some(51),
        ),
        (
            "END with a value",
            sealed(1, &[0, 0, 0, 0, 1, 0]),
            Drop::BadLength,
            Some(46),
        ),
        (
            "string without NUL",
            hbshutdown_with(b"vm"),
            Drop::BadString,
            Some(46),
        ),
        (
            "string with inner NUL",
            hbshutdown_with(b"v\0m\0"),
            Drop::BadString,
            Some(46),
        ),
        (
            "string not UTF-8",
            hbshutdown_with(b"\xc3\x28\0"),
            Drop::BadString,
            Some(46),
        ),
        (
            "IPPORT too short",
            hbdead_with(&[0x07, 0xc0, 0, 1, 10, 0, 0]),
            Drop::BadIpPort,
            Some(46),
        ),
        (
            "IPPORT v6 family with 4 bytes",
            hbdead_with(&[0x07, 0xc0, 0, 2, 10, 0, 0, 1]),
            Drop::BadIpPort,
            Some(46),
        ),
        (
            "IPPORT port 0",
            hbdead_with(&[0, 0, 0, 1, 10, 0, 0, 1]),
            Drop::BadIpPort,
            Some(46),
        ),
        (
            "IPPORT family 3",
            hbdead_with(&[0x07, 0xc0, 0, 3, 10, 0, 0, 1]),
            Drop::BadIpPort,
            Some(46),
        ),
        (
            "integer of 5 bytes",
            {
                let mut f = raw_frame(FrameType::ElapsedTime.to_wire(), &[0; 5]);
                f.extend(frames(&[
                    Frame::IpPort("10.0.0.1:1984".parse().unwrap()),
                    Frame::End,
                ]));
                sealed(28, &f)
            },
            Drop::BadInteger,
            Some(46),
        ),
        (
            "IPADDR of 3 bytes",
            {
                let mut f = raw_frame(FrameType::IpAddr.to_wire(), &[0, 1, 10, 0, 0]);
                f.extend_from_slice(&END);
                sealed(1, &f)
            },
            Drop::BadAddress,
            Some(46),
        ),
        (
            "REQID of 13 bytes",
            {
                let mut f = raw_frame(FrameType::ReqId.to_wire(), &[0; 13]);
                f.extend_from_slice(&END);
                sealed(26, &f)
            },
            Drop::BadLength,
            Some(46),
        ),
        (
            "COMPRESS method 2",
            {
                let mut f = raw_frame(FrameType::Compress.to_wire(), &[2, 0, 0, 10, 1]);
                f.extend_from_slice(&END);
                sealed(32, &f)
            },
            Drop::BadCompress,
            Some(46),
        ),
        (
            "declared size over 4 MiB",
            sealed(
                32,
                &compress_frame(MAX_DECOMPRESSED_LEN as u32 + 1, &zlib(&END)),
            ),
            Drop::DecompressionBomb,
            Some(46),
        ),
        (
            "actual size over 4 MiB",
            sealed(
                32,
                &compress_frame(MAX_DECOMPRESSED_LEN as u32, &zlib(&big_zero)),
            ),
            Drop::DecompressionBomb,
            Some(46),
        ),
        (
            "actual size over declared",
            sealed(32, &compress_frame(5, &zlib(&[0; 10]))),
            Drop::DecompressedSizeMismatch,
            Some(46),
        ),
        (
            "actual size under declared",
            sealed(32, &compress_frame(50, &zlib(&END))),
            Drop::DecompressedSizeMismatch,
            Some(46),
        ),
        (
            "corrupt zlib stream",
            sealed(32, &compress_frame(5, &[0x78, 0x9c, 0xff, 0xff, 0xff])),
            Drop::InflateError,
            Some(46),
        ),
        (
            "cut zlib stream",
            {
                let z = zlib(&[7u8; 100]);
                sealed(32, &compress_frame(100, &z[..z.len() - 3]))
            },
            Drop::InflateError,
            Some(46),
        ),
        (
            "garbage after zlib stream",
            {
                let mut z = zlib(&END);
                z.push(0);
                sealed(32, &compress_frame(5, &z))
            },
            Drop::InflateError,
            Some(46),
        ),
        (
            "frame after COMPRESS",
            {
                let mut f = compress_frame(5, &zlib(&END));
                f.extend_from_slice(&END);
                sealed(32, &f)
            },
            Drop::TrailingBytes,
            None,
        ),
        (
            "REQID after payload",
            {
                let mut f = frames(&[Frame::IpPort("10.0.0.1:1984".parse().unwrap())]);
                f.extend(reqid());
                f.extend_from_slice(&END);
                sealed(26, &f)
            },
            Drop::MisplacedFrame,
            Some(59),
        ),
        (
            "second SIG",
            {
                let mut f = raw_frame(FrameType::Sig.to_wire(), &[1, 2]);
                f.extend_from_slice(&END);
                sealed(1, &f)
            },
            Drop::MisplacedFrame,
            Some(46),
        ),
        (
            "malformed CRYPTCURVE25519",
            {
                let mut f = raw_frame(FrameType::CryptCurve25519.to_wire(), &[3, b'a', 0]);
                f.extend_from_slice(&END);
                sealed(26, &f)
            },
            Drop::BadCrypt,
            Some(46),
        ),
        (
            "encrypted FrameSet",
            {
                let mut v = vec![2, b'a', 0, 7];
                v.extend_from_slice(b"#CMA#0\0");
                v.extend_from_slice(&[0x11; 40]);
                let mut f = raw_frame(FrameType::CryptCurve25519.to_wire(), &v);
                f.extend_from_slice(&[0xee; 33]);
                sealed(26, &f)
            },
            Drop::EncryptedUnsupported,
            Some(46),
        ),
        (
            "unknown unsequenced type",
            sealed(120, &END),
            Drop::UnknownFrameSetType,
            Some(0),
        ),
        (
            "unknown type below 16 with REQID",
            {
                let mut f = reqid();
                f.extend_from_slice(&END);
                sealed(9, &f)
            },
            Drop::UnknownFrameSetType,
            Some(0),
        ),
        (
            "HBDEAD without IPPORT",
            sealed(26, &END),
            Drop::MissingFrame,
            Some(46),
        ),
        (
            "HEARTBEAT with a HOSTNAME",
            {
                let f = frames(&[Frame::Str(FrameType::Hostname, "x"), Frame::End]);
                sealed(1, &f)
            },
            Drop::UnexpectedFrame,
            Some(46),
        ),
        (
            "two IPPORTs in HBDEAD",
            {
                let a = Frame::IpPort("10.0.0.1:1984".parse().unwrap());
                sealed(26, &frames(&[a, a, Frame::End]))
            },
            Drop::DuplicateFrame,
            Some(59),
        ),
        (
            "ACK without REQID",
            sealed(16, &END),
            Drop::AckWithoutReqId,
            Some(46),
        ),
    ];
    // Drops inside the inflated bytes report offsets there.
    cases.push((
        "bad string inside compressed frames",
        {
            let mut inner = raw_frame(FrameType::Hostname.to_wire(), b"vm");
            inner.extend_from_slice(&END);
            sealed(27, &compress_frame(inner.len() as u32, &zlib(&inner)))
        },
        Drop::BadString,
        Some(0),
    ));
    cases
}

/// Encrypted FrameSets the CMA's keys (`cma::crypt::fixture`) cannot open.
fn keyed_cases() -> Vec<(&'static str, Vec<u8>, Drop, Option<u32>)> {
    use cma::crypt::{fixture, nanoprobe_key_id, public_of, salsa_box, seal_frameset_with_nonce};
    let (ring, id, shared) = fixture();
    let clear = encoded(&Message::Ack, Some(ReqId::default()));
    let seal = |from: &str, to: &str, b: &crypto_box::SalsaBox| {
        let mut out = Vec::new();
        seal_frameset_with_nonce(from, to, b, &[1; 24], &clear, &mut out).unwrap();
        out
    };
    let stranger = nanoprobe_key_id("evil", &public_of(&[4; 32]));
    let forged = salsa_box(&ring.sending_key().public, &[4; 32]);
    vec![
        (
            "encrypted under an untrusted key",
            seal(&stranger, "#CMA#00000", &forged),
            Drop::UnknownKey,
            Some(46),
        ),
        (
            "encrypted for another CMA key",
            seal(&id, "#CMA#00009", &shared),
            Drop::NotOurKey,
            Some(46),
        ),
        (
            "a trusted key id, sealed with another key",
            seal(&id, "#CMA#00000", &forged),
            Drop::DecryptFailed,
            Some(46),
        ),
    ]
}

#[test]
fn every_drop_reason_is_detected() {
    let mut seen = HashSet::new();
    let mut counters = DropCounters::default();
    let (ring, _, _) = cma::crypt::fixture();
    for (name, bytes, reason, offset) in keyed_cases() {
        let d = match cma::classify::classify_with(&bytes, Some(&ring)) {
            Ok(c) => panic!("{name}: accepted as {:?}", c.kind),
            Err(d) => d,
        };
        assert_eq!((d.reason, Some(d.offset)), (reason, offset), "{name}: {d}");
        counters.record(d.reason);
        seen.insert(reason);
    }
    for (name, bytes, reason, offset) in cases() {
        let d = match classify(&bytes) {
            Ok(c) => panic!("{name}: accepted as {:?}", c.kind),
            Err(d) => d,
        };
        assert_eq!(d.reason, reason, "{name}: {d}");
        if let Some(o) = offset {
            assert_eq!(d.offset, o, "{name}: {d}");
        }
        counters.record(d.reason);
        seen.insert(reason);
    }
    let missing: Vec<_> = Drop::ALL.iter().filter(|d| !seen.contains(d)).collect();
    assert!(missing.is_empty(), "reasons without a test: {missing:?}");
    assert_eq!(
        counters.total() as usize,
        cases().len() + keyed_cases().len()
    );
    assert_eq!(counters.get(Drop::BadIpPort), 4);
}

#[test]
fn inflated_offsets_are_marked() {
    let mut inner = raw_frame(FrameType::Hostname.to_wire(), b"vm");
    inner.extend_from_slice(&END);
    let mut f = vec![1];
    f.extend_from_slice(&(inner.len() as u32).to_be_bytes()[1..]);
    f.extend(zlib(&inner));
    let d = classify(&sealed(27, &raw_frame(FrameType::Compress.to_wire(), &f))).unwrap_err();
    assert!(d.inflated);
    assert!(d.to_string().contains("inflated"));
}
