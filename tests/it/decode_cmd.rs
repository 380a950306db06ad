//! `cma decode` through its library entry point: hex input, pcap input of
//! each link type, error reporting.

use cma::decode::{DecodeInput, PcapError, read_pcap, run_decode};
use serde_json::Value;

use crate::support::capture;

fn run(input: DecodeInput, text: bool) -> (String, String, cma::decode::DecodeStats) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let stats = run_decode(input, text, None, &mut out, &mut err)
        .unwrap()
        .unwrap();
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        stats,
    )
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn hex_lines_decode_to_json() {
    let lines: Vec<String> = capture("handshake.tsv")
        .into_iter()
        .map(|(_, b)| hex::encode(b))
        .collect();
    let n = lines.len();
    let (out, err, stats) = run(DecodeInput::Hex(lines), false);
    assert!(err.is_empty());
    assert_eq!(stats.framesets, n);
    assert_eq!(stats.accepted, n);
    let v = json_lines(&out);
    assert_eq!(v[0]["fstype_name"], "STARTUP");
    assert_eq!(v[0]["sig"]["verdict"], "ok");
    assert_eq!(v[0]["frames"][1]["name"], "HOSTNAME");
    assert_eq!(v[0]["frames"][1]["value"], "vm");
    assert_eq!(v[0]["frames"][2]["value"], "[::ffff:127.0.0.1]:1985");
    assert_eq!(v[0]["frames"][4]["value"]["instance"], "netconfig");
    let seh = v
        .iter()
        .find(|o| o["fstype_name"] == "SENDEXPECTHB")
        .unwrap();
    assert_eq!(seh["reqid"]["request"], 3);
    assert_eq!(seh["frames"][2]["value"]["timeout"], 3);
}

#[test]
fn bad_packets_show_reason_and_offset() {
    let (out, err, stats) = run(
        DecodeInput::Hex(vec![
            "000100002c0000000100002201028855508aade16ec573d21e6a485dfd0a7624085c1a14b5ecdd6485de0c6839a50000000000".into(),
            "zz".into(),
        ]),
        false,
    );
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.skipped, 1);
    assert!(err.contains("input 2"));
    let v = json_lines(&out);
    assert_eq!(v[0]["verdict"], "dropped");
    assert_eq!(v[0]["drop"]["reason"], "digest_mismatch");
    assert_eq!(v[0]["drop"]["offset"], 7);
    assert_eq!(v[0]["sig"]["verdict"], "mismatch");
    let (text, _, _) = run(DecodeInput::Hex(vec!["0001000009000000".into()]), true);
    assert!(
        text.contains("DROPPED frameset_overrun at byte 2"),
        "{text}"
    );
}

#[test]
fn text_output_is_readable() {
    let (out, _, stats) = run(
        DecodeInput::Hex(vec!["000100002c0000000100002201028855508aade16ec573d21e6a485dfd0a7624085c1a14b5ecdd6485de0c6839a40000000000".into()]),
        true,
    );
    assert_eq!(stats.accepted, 1);
    assert!(
        out.starts_with("{\"line\":1} HEARTBEAT (1) fslen 44, sig sha256 ok: accepted\n"),
        "{out}"
    );
    assert!(out.contains("  END (0) len 0 @46: null"));
}

/// Builds a classic little-endian pcap file.
fn pcap(linktype: u32, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        f.extend_from_slice(&(i as u32).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    f
}

fn udp_v4(payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 2], 64).udp(1985, 1984);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp_v6_ethernet(payload: &[u8]) -> Vec<u8> {
    let mut loopback = [0u8; 16];
    loopback[15] = 1;
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(loopback, loopback, 64)
        .udp(1985, 1984);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn sll(ip_packet: &[u8]) -> Vec<u8> {
    // Linux cooked header: packet type, ARPHRD, address length, address, protocol.
    let mut out = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    out.extend_from_slice(ip_packet);
    out
}

#[test]
fn pcap_of_every_link_type_decodes() {
    let lines = capture("handshake.tsv");
    let dg: Vec<Vec<u8>> = lines.iter().take(3).map(|(_, b)| b.clone()).collect();
    let files = [
        (101, vec![udp_v4(&dg[0]), udp_v4(&dg[1])]),
        (1, vec![udp_v6_ethernet(&dg[0]), udp_v6_ethernet(&dg[2])]),
        (113, vec![sll(&udp_v4(&dg[1])), sll(&udp_v4(&dg[2]))]),
    ];
    for (link, packets) in files {
        let file = pcap(link, &packets);
        let summary = read_pcap(&file).unwrap();
        assert_eq!(summary.datagrams.len(), 2, "link type {link}");
        assert_eq!(summary.datagrams[0].dst.port(), 1984);
        let (out, _, stats) = run(DecodeInput::Pcap(file), false);
        assert_eq!(stats.accepted, 2, "link type {link}: {out}");
        let v = json_lines(&out);
        assert_eq!(v[0]["source"]["packet"], 1);
        assert!(v[0]["source"]["src"].as_str().unwrap().ends_with(":1985"));
    }
}

#[test]
fn pcap_errors_are_clear() {
    assert_eq!(read_pcap(b"not a pcap").unwrap_err(), PcapError::NotPcap);
    let e = read_pcap(&pcap(147, &[])).unwrap_err();
    assert_eq!(e, PcapError::UnsupportedLinkType(147));
    assert!(e.to_string().contains("147"));
    // A truncated last packet keeps what came before it.
    let good = udp_v4(&capture("handshake.tsv")[0].1);
    let mut file = pcap(101, &[good.clone(), good]);
    file.truncate(file.len() - 10);
    let s = read_pcap(&file).unwrap();
    assert_eq!((s.datagrams.len(), s.skipped), (1, 1));
    // The LLDP/CDP captures hold no UDP at all.
    let lldp = std::fs::read(crate::support::data_dir().join("switch/lldp.detailed.pcap")).unwrap();
    let s = read_pcap(&lldp).unwrap();
    assert!(s.datagrams.is_empty() && s.skipped > 0);
}
