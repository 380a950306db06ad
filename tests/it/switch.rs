//! LLDP and CDP decoding on the real frames in
//! `tests/data/switch/*.pcap`.

use cma::classify::switch::SwitchProtocol::{self, Cdp, Lldp};
use cma::classify::switch::parse_switch_frame;
use cma::decode::read_pcap_frames;

use crate::support::data_dir;

/// What one captured frame should decode to.
struct Expected {
    file: &'static str,
    index: usize,
    protocol: SwitchProtocol,
    chassis: &'static str,
    port: Option<&'static str>,
    name: Option<&'static str>,
    mgmt: Option<&'static str>,
}

const fn e(
    file: &'static str,
    index: usize,
    protocol: SwitchProtocol,
    chassis: &'static str,
    port: Option<&'static str>,
    name: Option<&'static str>,
    mgmt: Option<&'static str>,
) -> Expected {
    Expected {
        file,
        index,
        protocol,
        chassis,
        port,
        name,
        mgmt,
    }
}

const EXPECTED: &[Expected] = &[
    e(
        "cdp.pcap",
        0,
        Cdp,
        "R1",
        Some("Ethernet0"),
        Some("R1"),
        Some("192.168.10.1"),
    ),
    e(
        "cdp_v2.pcap",
        0,
        Cdp,
        "myswitch",
        Some("FastEthernet0/1"),
        Some("myswitch"),
        Some("192.168.0.253"),
    ),
    e(
        "cdp_v2_voice.pcap",
        0,
        Cdp,
        "myswitch",
        Some("FastEthernet0/1"),
        Some("myswitch"),
        Some("192.168.0.253"),
    ),
    e(
        "cdp-BCM1100.pcap",
        0,
        Cdp,
        "0060B9C14027",
        None,
        Some("0060B9C14027"),
        None,
    ),
    e(
        "n0.eth2.cdp.pcap",
        1,
        Cdp,
        "csr706a.pbm.ihost.com",
        Some("GigabitEthernet1/0/4"),
        Some("csr706a.pbm.ihost.com"),
        Some("129.40.5.249"),
    ),
    e(
        "lldp.detailed.pcap",
        0,
        Lldp,
        "00:01:30:f9:ad:a0",
        Some("1/1"),
        Some("Summit300-48"),
        None,
    ),
    e(
        "lldpmed_civicloc.pcap",
        0,
        Lldp,
        "00:13:21:57:ca:40",
        Some("1"),
        Some("ProCurve Switch 2600-8-PWR"),
        Some("15.255.122.148"),
    ),
    // Captured with a 96-byte snap length: the frame is cut mid-TLV, and
    // what came before the cut is kept.
    e(
        "procurve.lldp.pcap",
        0,
        Lldp,
        "00:25:61:94:32:40",
        Some("22"),
        Some("ProCurve Switch 2824"),
        None,
    ),
];

#[test]
fn real_lldp_and_cdp_frames_decode() {
    assert_eq!(EXPECTED.len(), 8, "one row per capture file");
    for Expected {
        file,
        index,
        protocol,
        chassis,
        port,
        name,
        mgmt,
    } in EXPECTED
    {
        let data = std::fs::read(data_dir().join("switch").join(file)).unwrap();
        let capture = read_pcap_frames(&data).unwrap();
        assert_eq!(capture.link, 1, "{file}: Ethernet");
        let info =
            parse_switch_frame(capture.frames[*index].1).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(info.protocol, *protocol, "{file}");
        assert_eq!(info.chassis_id, *chassis, "{file}");
        assert_eq!(info.port_id.as_deref(), *port, "{file}");
        assert_eq!(info.system_name.as_deref(), *name, "{file}");
        assert_eq!(
            info.management_address.map(|a| a.to_string()).as_deref(),
            *mgmt,
            "{file}"
        );
    }
}

#[test]
fn every_prefix_of_every_captured_frame_is_handled() {
    for Expected { file, .. } in EXPECTED {
        let data = std::fs::read(data_dir().join("switch").join(file)).unwrap();
        for (_, f) in read_pcap_frames(&data).unwrap().frames {
            for n in 0..=f.len() {
                let _ = parse_switch_frame(&f[..n]);
            }
        }
    }
}
