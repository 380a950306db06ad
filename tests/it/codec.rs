//! The wire codec against the known vectors, the real nanoprobe captures,
//! and property tests over every message type.

use std::net::SocketAddr;

use cma::classify::{
    Band, COMPRESS_THRESHOLD, DigestKind, Discoveries, Discovery, EncodeOptions, FrameSetType,
    HbParams, HbState, Message, PeerState, PeerStates, PeerStatus, Peers, ReqId, Startup,
    SwDiscover, classify, classify_all, encode,
};
use proptest::prelude::*;

use crate::support::{END, capture, encoded, sealed};

const HEARTBEAT_VECTOR: &str = "000100002c0000000100002201028855508aade16ec573d21e6a485dfd0a7624085c1a14b5ecdd6485de0c6839a40000000000";

#[test]
fn heartbeat_vector_decodes_and_encodes_byte_for_byte() {
    let bytes = hex::decode(HEARTBEAT_VECTOR).unwrap();
    assert_eq!(bytes.len(), 51);
    let c = classify(&bytes).unwrap();
    assert_eq!(c.kind, Some(FrameSetType::Heartbeat));
    assert_eq!(c.digest, DigestKind::Sha256);
    assert_eq!(c.reqid, None);
    assert_eq!(c.wire_len, 51);
    assert_eq!(c.message().unwrap(), Message::Heartbeat);
    assert_eq!(
        hex::encode(encoded(&Message::Heartbeat, None)),
        HEARTBEAT_VECTOR
    );
}

/// Every datagram a real nanoprobe sent, and every one a test CMA sent it
/// and it accepted, classifies; re-encoding the typed message with the same
/// REQID gives the same bytes.
#[test]
fn real_nanoprobe_captures_round_trip_byte_for_byte() {
    let mut seen = 0;
    for file in ["handshake.tsv", "startup.tsv"] {
        for (name, bytes) in capture(file) {
            let c = classify(&bytes).unwrap_or_else(|d| panic!("{file} {name}: dropped {d}"));
            assert_eq!(c.wire_len, bytes.len(), "{name}");
            assert!(c.malformed.is_none(), "{name}: {:?}", c.malformed);
            let m = c.message().unwrap();
            let mut out = Vec::new();
            encode(&m, c.reqid, &EncodeOptions::default(), &mut out).unwrap();
            assert_eq!(hex::encode(&out), hex::encode(&bytes), "{file} {name}");
            seen += 1;
        }
    }
    assert!(seen >= 30, "captures read: {seen}");
}

#[test]
fn captured_messages_have_the_expected_content() {
    let lines = capture("handshake.tsv");
    let find = |n: &str| lines.iter().find(|(name, _)| name == n).unwrap().1.clone();
    let startup = find("RX1_fstype4");
    let c = classify(&startup).unwrap();
    assert_eq!(c.band, Band::Startup);
    match c.message().unwrap() {
        Message::Startup(s) => {
            assert_eq!(s.hostname, "vm");
            assert_eq!(
                s.listen,
                "[::ffff:127.0.0.1]:1985".parse::<SocketAddr>().unwrap()
            );
            assert!(s.netconfig.contains("\"instance\":\"netconfig\""));
            assert_eq!(s.key, None);
        }
        other => panic!("{other:?}"),
    }
    let seh = find("TX_SENDEXPECTHB_SEQ");
    let c = classify(&seh).unwrap();
    assert_eq!(
        c.reqid,
        Some(ReqId {
            session: 100_000_000 * 16,
            request: 3,
            queue: 0
        })
    );
    assert!(c.is_sequenced());
    match c.message().unwrap() {
        Message::Heartbeats {
            kind,
            params,
            peers,
        } => {
            assert_eq!(kind, FrameSetType::SendExpectHb);
            assert_eq!(params.rscjson, Some(r#"{"repeat":1,"warn":2,"timeout":3}"#));
            assert_eq!(
                peers.iter().collect::<Vec<_>>(),
                vec!["127.0.0.1:1984".parse().unwrap()]
            );
        }
        other => panic!("{other:?}"),
    }
    let dead = find("RX10_fstype26");
    let c = classify(&dead).unwrap();
    assert_eq!(c.band, Band::Death);
    assert_eq!(
        c.message().unwrap(),
        Message::HbDead {
            peer: "127.0.0.1:1984".parse().unwrap()
        }
    );
}

#[test]
fn sha1_signatures_are_accepted() {
    let opts = EncodeOptions {
        digest: DigestKind::Sha1,
        ..EncodeOptions::default()
    };
    let mut out = Vec::new();
    let m = Message::HbShutdown { hostname: "h" };
    encode(
        &m,
        Some(ReqId {
            session: 1,
            request: 1,
            queue: 0,
        }),
        &opts,
        &mut out,
    )
    .unwrap();
    let c = classify(&out).unwrap();
    assert_eq!(c.digest, DigestKind::Sha1);
    assert_eq!(c.message().unwrap(), m);
}

#[test]
fn large_framesets_are_compressed_and_inflate_back() {
    let json = format!("{{\"data\":\"{}\"}}", "x".repeat(30 * 1024));
    let m = Message::JsDiscovery {
        wallclock_us: Some(7),
        json: &json,
    };
    let reqid = Some(ReqId {
        session: 9,
        request: 1,
        queue: 0,
    });
    let mut out = Vec::new();
    encode(&m, reqid, &EncodeOptions::default(), &mut out).unwrap();
    assert!(
        out.len() < COMPRESS_THRESHOLD,
        "compressed to {} bytes",
        out.len()
    );
    let c = classify(&out).unwrap();
    assert!(c.compressed);
    assert_eq!(c.reqid, reqid);
    assert_eq!(c.message().unwrap(), m);
}

#[test]
fn several_framesets_in_one_datagram() {
    let mut d = hex::decode(HEARTBEAT_VECTOR).unwrap();
    encode(&Message::Ping, None, &EncodeOptions::default(), &mut d).unwrap();
    d.extend_from_slice(&[0, 1, 0]);
    let all: Vec<_> = classify_all(&d).collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].as_ref().unwrap().kind, Some(FrameSetType::Heartbeat));
    assert_eq!(all[1].as_ref().unwrap().kind, Some(FrameSetType::Ping));
    let e = all[2].as_ref().unwrap_err();
    assert_eq!(e.offset as usize, 51 + all[1].as_ref().unwrap().wire_len);
}

#[test]
fn unknown_sequenced_type_is_accepted_for_ack_but_marked() {
    let mut frames = Vec::new();
    cma::classify::Frame::ReqId(ReqId {
        session: 1,
        request: 5,
        queue: 0,
    })
    .emit(&mut frames);
    frames.extend_from_slice(&END);
    let bytes = sealed(100, &frames);
    let c = classify(&bytes).unwrap();
    assert!(c.is_sequenced());
    assert_eq!(c.kind, None);
    assert_eq!(c.band, Band::Other);
    assert_eq!(
        c.malformed.unwrap().reason,
        cma::classify::Drop::UnknownFrameSetType
    );
}

#[test]
fn sequenced_framesets_with_bad_payload_are_kept_for_ack() {
    // An HBDEAD with a REQID but no IPPORT: logged and ACKed, payload marked.
    let mut frames = Vec::new();
    cma::classify::Frame::ReqId(ReqId {
        session: 1,
        request: 2,
        queue: 0,
    })
    .emit(&mut frames);
    frames.extend_from_slice(&END);
    let bytes = sealed(26, &frames);
    let c = classify(&bytes).unwrap();
    assert!(c.is_sequenced());
    assert_eq!(
        c.malformed.unwrap().reason,
        cma::classify::Drop::MissingFrame
    );
    assert!(c.message().is_err());
}

/// An owned description of a message, so that proptest can generate it and
/// the test can borrow a [`Message`] from it.
#[derive(Clone, Debug)]
struct Spec {
    kind: u8,
    text: [String; 3],
    num: u64,
    num2: Option<u64>,
    addr: SocketAddr,
    peers: Vec<SocketAddr>,
    key: Option<[u8; 32]>,
    bytes: Vec<u8>,
    discoveries: Vec<(String, u64, String)>,
    params: (Option<u64>, Option<u64>, Option<u64>, bool),
    big: bool,
    states: Vec<PeerState>,
}

/// Number of `Spec::kind` values: one per message shape.
const KINDS: u8 = 38;

fn discs(spec: &Spec) -> Vec<Discovery<'_>> {
    spec.discoveries
        .iter()
        .map(|(n, i, j)| Discovery {
            name: n,
            interval_s: *i,
            json: j,
        })
        .collect()
}

fn message<'a>(s: &'a Spec, big: &'a str, d: &'a [Discovery<'a>]) -> Message<'a> {
    use FrameSetType as T;
    let [a, b, c] = [s.text[0].as_str(), s.text[1].as_str(), s.text[2].as_str()];
    let json = if s.big { big } else { c };
    let params = HbParams {
        interval_s: s.params.0,
        deadtime_s: s.params.1,
        warntime_s: s.params.2,
        rscjson: s.params.3.then_some(b),
    };
    let peers = Peers::List(&s.peers);
    match s.kind {
        0 => Message::Heartbeat,
        1 => Message::Ping,
        2 => Message::Pong,
        3 => Message::Startup(Startup {
            hostname: a,
            listen: s.addr,
            wallclock_us: s.num,
            netconfig: json,
            key: s.key.as_ref().map(|k| (b, k)),
            features: s.num2.map(|_| c),
        }),
        4 => Message::Ack,
        5 => Message::ConnShut,
        6 => Message::ConnNak,
        7 => Message::HbDead { peer: s.addr },
        8 => Message::HbShutdown { hostname: a },
        9 => Message::HbLate {
            peer: s.addr,
            elapsed_us: s.num,
        },
        10 => Message::HbBackAlive {
            peer: s.addr,
            elapsed_us: s.num,
        },
        11 => Message::HbMartian { peer: s.addr },
        12 => Message::SwDiscover(SwDiscover {
            wallclock_us: s.num,
            pktdata: &s.bytes,
            interface: a,
            hostname: b,
            discname: c,
        }),
        13 => Message::JsDiscovery {
            wallclock_us: s.num2,
            json,
        },
        14 => Message::RscOpReply { json },
        15 => Message::SeqPing,
        16 => Message::SeqPong,
        17 => Message::Heartbeats {
            kind: T::SendHb,
            params,
            peers,
        },
        18 => Message::Heartbeats {
            kind: T::ExpectHb,
            params,
            peers,
        },
        19 => Message::Heartbeats {
            kind: T::SendExpectHb,
            params,
            peers,
        },
        20 => Message::StopHeartbeats {
            kind: T::StopSendHb,
            peers,
        },
        21 => Message::StopHeartbeats {
            kind: T::StopExpectHb,
            peers,
        },
        22 => Message::StopHeartbeats {
            kind: T::StopSendExpectHb,
            peers,
        },
        23 => Message::SetConfig { json },
        24 => Message::IncrDebug,
        25 => Message::DecrDebug,
        26 => Message::Discover {
            stop: false,
            list: Discoveries::List(d),
        },
        27 => Message::Discover {
            stop: true,
            list: Discoveries::List(d),
        },
        28 => Message::RscOp { stop: false, json },
        29 => Message::RscOp { stop: true, json },
        30 => Message::AckStartup,
        31 => Message::Unknown {
            // 96-111 are our extensions; the rest of the range is free.
            fstype: 112 + (s.num % 16) as u16,
            frames: &[],
        },
        32 => Message::JsDiscovery {
            wallclock_us: None,
            json: a,
        },
        33 => Message::HbDead { peer: s.peers[0] },
        34 => Message::HbState(HbState {
            wallclock_us: s.num,
            applied: s.num2.map(|r| ReqId {
                session: (r >> 32) as u32,
                request: r,
                queue: 0,
            }),
            expect: PeerStates::List(&s.states),
            send: Peers::List(&s.peers[..s.peers.len() / 2]),
        }),
        35 => Message::HbStateReq,
        36 => Message::ActionNak {
            instr: ReqId {
                session: s.num as u32,
                request: s.num2.unwrap_or(1),
                queue: 0,
            },
            code: s.num % 8,
            reason: a,
        },
        _ => Message::Stats { json },
    }
}

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), 1..=u16::MAX).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), 1..=u16::MAX).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..KINDS,
        [text(), text(), text()],
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        addr(),
        proptest::collection::vec(addr(), 1..6),
        proptest::option::of(any::<[u8; 32]>()),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec((text(), any::<u64>(), text()), 1..4),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            any::<bool>(),
        ),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(kind, text, num, num2, addr, peers, key, bytes, discoveries, params, big)| Spec {
                states: peers
                    .iter()
                    .zip(bytes.iter().chain(std::iter::repeat(&0)))
                    .map(|(&peer, &b)| PeerState {
                        peer,
                        status: PeerStatus::from_wire(b % 3).expect("0..3"),
                        since_ms: u32::from(b) * 1000 + u32::from(b),
                    })
                    .collect(),
                kind,
                text,
                num,
                num2,
                addr,
                peers,
                key,
                bytes,
                discoveries,
                params,
                big,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// encode -> classify -> the same message and REQID, for every type.
    #[test]
    fn every_message_round_trips(s in spec(), session in any::<u32>(), request in 1..u64::MAX, sha1 in any::<bool>()) {
        let big = format!("{{\"blob\":\"{}\"}}", s.text[2].repeat(40).replace(['"', '\\'], "") + &"y".repeat(COMPRESS_THRESHOLD));
        let d = discs(&s);
        let m = message(&s, &big, &d);
        let reqid = (m.fstype() >= 16).then_some(ReqId { session, request, queue: 0 });
        let opts = EncodeOptions {
            digest: if sha1 { DigestKind::Sha1 } else { DigestKind::Sha256 },
            ..EncodeOptions::default()
        };
        let mut out = Vec::new();
        encode(&m, reqid, &opts, &mut out).unwrap();
        let c = classify(&out).unwrap();
        prop_assert_eq!(c.wire_len, out.len());
        prop_assert_eq!(c.reqid, reqid);
        prop_assert_eq!(c.digest, opts.digest);
        prop_assert_eq!(c.compressed, s.big && json_kind(s.kind));
        if let Message::Unknown { .. } = m {
            prop_assert!(c.malformed.is_some());
        } else {
            prop_assert_eq!(c.malformed, None);
            prop_assert_eq!(c.message().unwrap(), m);
        }
    }

    /// Arbitrary bytes never panic classify.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = classify(&bytes);
        for c in classify_all(&bytes).flatten() {
            let _ = c.message();
        }
    }

    /// Valid FrameSets with a few bytes changed never panic, and whatever is
    /// still accepted re-encodes to a FrameSet that classifies the same.
    #[test]
    fn mutated_framesets_never_panic(s in spec(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let big = "x".repeat(COMPRESS_THRESHOLD + 1);
        let d = discs(&s);
        let m = message(&s, &big, &d);
        let mut out = Vec::new();
        encode(&m, Some(ReqId { session: 1, request: 1, queue: 0 }), &EncodeOptions::default(), &mut out).unwrap();
        for (i, b) in edits {
            let at = i.index(out.len());
            out[at] = b;
        }
        if let Ok(c) = classify(&out) && let Ok(m2) = c.message() {
            let mut again = Vec::new();
            if encode(&m2, c.reqid, &EncodeOptions::default(), &mut again).is_ok() {
                let c2 = classify(&again).unwrap();
                prop_assert_eq!(c2.message().unwrap(), m2);
            }
        }
    }
}

/// Kinds whose `json` may be the big string (and so get compressed).
fn json_kind(kind: u8) -> bool {
    matches!(kind, 3 | 13 | 14 | 23 | 28 | 29 | 37)
}

#[test]
fn peek_reads_the_type_and_the_declared_inflated_size_only() {
    use cma::classify::{Peek, peek};
    let json = format!("{{\"x\":\"{}\"}}", "y".repeat(100_000));
    let m = Message::JsDiscovery {
        wallclock_us: None,
        json: &json,
    };
    let big = encoded(&m, None);
    let p = peek(&big).unwrap();
    assert_eq!(p.fstype, FrameSetType::JsDiscovery.to_wire());
    assert!(p.inflated_size.unwrap() as usize > json.len());
    assert_eq!(
        peek(&encoded(&Message::Ack, None)),
        Some(Peek {
            fstype: FrameSetType::Ack.to_wire(),
            inflated_size: None
        })
    );
    // No digest check: a corrupted body still peeks (classify drops it).
    let mut bad = big.clone();
    let last = bad.len() - 5;
    bad[last] ^= 0xff;
    assert_eq!(peek(&bad), Some(p));
    assert!(classify(&bad).is_err());
    assert_eq!(peek(&[0u8; 3]), None);
}
