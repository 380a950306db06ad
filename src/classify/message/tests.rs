//! Every message type parsed from its frames, and what is refused.

use super::*;

fn parse_back(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.emit_payload(&mut out);
    out
}

#[test]
fn peers_parse_and_compare() {
    let list: Vec<SocketAddr> = vec!["10.0.0.1:1984".parse().unwrap(), "[::1]:7".parse().unwrap()];
    let m = Message::Heartbeats {
        kind: FrameSetType::SendExpectHb,
        params: HbParams {
            rscjson: Some(r#"{"repeat":1,"warn":5,"timeout":30}"#),
            ..HbParams::default()
        },
        peers: Peers::List(&list),
    };
    let bytes = parse_back(&m);
    let p = Message::parse(66, &bytes, 0).unwrap();
    assert_eq!(p.message, m);
    match p.message {
        Message::Heartbeats { peers, .. } => {
            assert!(matches!(peers, Peers::Wire(_)));
            assert_eq!(peers.len(), 2);
        }
        other => panic!("wrong message {other:?}"),
    }
}

#[test]
fn params_after_peers_are_rejected() {
    let mut out = Vec::new();
    Frame::IpPort("10.0.0.1:1984".parse().unwrap()).emit(&mut out);
    Frame::Int(FrameType::HbInterval, 1).emit(&mut out);
    let e = Message::parse(64, &out, 100).unwrap_err();
    assert_eq!((e.reason, e.offset), (Drop::UnexpectedFrame, 113));
}

#[test]
fn unknown_frames_are_skipped_and_counted() {
    let mut out = Vec::new();
    Frame::Unknown {
        ftype: 500,
        value: b"x",
    }
    .emit(&mut out);
    Frame::IpPort("10.0.0.1:1984".parse().unwrap()).emit(&mut out);
    let p = Message::parse(26, &out, 0).unwrap();
    assert_eq!(p.unknown_frames, 1);
    assert_eq!(
        p.message,
        Message::HbDead {
            peer: "10.0.0.1:1984".parse().unwrap()
        }
    );
}

#[test]
fn required_and_duplicate_frames() {
    assert_eq!(
        Message::parse(26, &[], 9).unwrap_err(),
        Dropped::at(Drop::MissingFrame, 9)
    );
    let mut out = Vec::new();
    Frame::IpPort("10.0.0.1:1984".parse().unwrap()).emit(&mut out);
    Frame::IpPort("10.0.0.1:1984".parse().unwrap()).emit(&mut out);
    assert_eq!(
        Message::parse(26, &out, 0).unwrap_err().reason,
        Drop::DuplicateFrame
    );
    // A HEARTBEAT flipped into an HBDEAD lacks the IPPORT.
    assert_eq!(
        Message::parse(26, &[], 0).unwrap_err().reason,
        Drop::MissingFrame
    );
    // An HBDEAD flipped into a HEARTBEAT has a frame a HEARTBEAT never has.
    assert_eq!(
        Message::parse(1, &out, 0).unwrap_err().reason,
        Drop::UnexpectedFrame
    );
}

#[test]
fn incomplete_discovery_triple() {
    let mut out = Vec::new();
    Frame::Str(FrameType::DiscName, "os").emit(&mut out);
    Frame::Int(FrameType::DiscInterval, 0).emit(&mut out);
    assert_eq!(
        Message::parse(73, &out, 0).unwrap_err().reason,
        Drop::MissingFrame
    );
    Frame::Str(FrameType::DiscJson, "{}").emit(&mut out);
    let p = Message::parse(73, &out, 0).unwrap();
    let list: Vec<_> = match p.message {
        Message::Discover { list, stop: false } => list.iter().collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        list,
        vec![Discovery {
            name: "os",
            interval_s: 0,
            json: "{}"
        }]
    );
}
