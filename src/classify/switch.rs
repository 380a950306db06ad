//! Switch discovery frames: LLDP (IEEE 802.1AB) and CDP, as captured raw
//! by an agent and carried in SWDISCOVER's PKTDATA. The CMA learns from
//! them which switch (and port) a host hangs off, which is what its
//! switch-aware rings are built on.
//!
//! Parsing is bounds-checked throughout: any byte string gives a
//! [`SwitchInfo`] or a [`SwitchError`], never a panic. [`lldp_frame`] builds
//! a well-formed LLDP frame (for `cma agent --switch-id` and tests).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// LLDP's ethertype.
pub const ETHERTYPE_LLDP: u16 = 0x88cc;
/// 802.1Q VLAN tag ethertype.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// The LLDP nearest-bridge multicast address.
pub const LLDP_MULTICAST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
/// CDP's multicast address.
pub const CDP_MULTICAST: [u8; 6] = [0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc];

/// Which protocol a frame spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwitchProtocol {
    /// IEEE 802.1AB.
    Lldp,
    /// Cisco Discovery Protocol.
    Cdp,
}

/// What a discovery frame says about the switch port a host is plugged into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchInfo {
    /// LLDP or CDP.
    pub protocol: SwitchProtocol,
    /// The switch's identity: LLDP chassis id, CDP device id. MAC
    /// addresses are written `aa:bb:cc:dd:ee:ff`.
    pub chassis_id: String,
    /// The switch port: LLDP port id, CDP port id (some CDP senders omit it).
    pub port_id: Option<String>,
    /// LLDP system name (CDP: the device id again).
    pub system_name: Option<String>,
    /// LLDP port description.
    pub port_description: Option<String>,
    /// The switch's management address (LLDP management address TLV, CDP
    /// management or first address).
    pub management_address: Option<IpAddr>,
    /// Seconds the information stays valid.
    pub ttl_s: Option<u16>,
}

/// Why a frame is not a usable discovery frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchError {
    /// Shorter than an Ethernet header.
    Truncated,
    /// Neither LLDP (ethertype 0x88cc) nor CDP (SNAP 00000c/2000).
    NotDiscovery,
    /// A TLV's length is impossible (CDP: shorter than its header).
    BadTlv,
    /// No chassis or device id.
    MissingId,
}

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwitchError::Truncated => "frame too short",
            SwitchError::NotDiscovery => "neither LLDP nor CDP",
            SwitchError::BadTlv => "impossible TLV length",
            SwitchError::MissingId => "no chassis or device id",
        })
    }
}

impl std::error::Error for SwitchError {}

/// Parses a raw Ethernet frame holding LLDP or CDP.
pub fn parse_switch_frame(frame: &[u8]) -> Result<SwitchInfo, SwitchError> {
    if frame.len() < 14 {
        return Err(SwitchError::Truncated);
    }
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if ethertype == ETHERTYPE_VLAN {
        at += 4;
        let t = frame.get(at..at + 2).ok_or(SwitchError::Truncated)?;
        ethertype = u16::from_be_bytes([t[0], t[1]]);
    }
    let body = &frame[at + 2..];
    if ethertype == ETHERTYPE_LLDP {
        return parse_lldp(body);
    }
    // 802.3 length field, then LLC/SNAP: AA AA 03, OUI 00 00 0C, type 0x2000.
    if ethertype <= 1500
        && body.len() >= 8
        && body[..8] == [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x0c, 0x20, 0x00]
    {
        return parse_cdp(&body[8..]);
    }
    Err(SwitchError::NotDiscovery)
}

fn text(b: &[u8]) -> String {
    // Switches send ASCII, sometimes NUL-padded.
    let end = b.iter().rposition(|c| *c != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn mac(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// An IANA address-family-numbered address (1 IPv4, 2 IPv6).
fn iana_addr(family: u8, b: &[u8]) -> Option<IpAddr> {
    match (family, b.len()) {
        (1, 4) => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        (2, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Chassis id (TLV 1) or port id (TLV 2): subtype byte, then the id.
fn lldp_id(v: &[u8], mac_subtype: u8, addr_subtype: u8) -> Option<String> {
    let (&sub, id) = v.split_first()?;
    Some(if sub == mac_subtype && id.len() == 6 {
        mac(id)
    } else if sub == addr_subtype {
        let (&fam, a) = id.split_first()?;
        iana_addr(fam, a).map_or_else(|| mac(id), |ip| ip.to_string())
    } else {
        text(id)
    })
}

fn parse_lldp(mut b: &[u8]) -> Result<SwitchInfo, SwitchError> {
    let mut info = SwitchInfo {
        protocol: SwitchProtocol::Lldp,
        chassis_id: String::new(),
        port_id: None,
        system_name: None,
        port_description: None,
        management_address: None,
        ttl_s: None,
    };
    while b.len() >= 2 {
        let h = u16::from_be_bytes([b[0], b[1]]);
        let (t, len) = (h >> 9, usize::from(h & 0x1ff));
        // A TLV cut by the capture's snap length ends the frame: keep what
        // came before it.
        let Some(v) = b.get(2..2 + len) else { break };
        b = &b[2 + len..];
        match t {
            0 => break,
            1 => info.chassis_id = lldp_id(v, 4, 5).unwrap_or_default(),
            2 => info.port_id = lldp_id(v, 3, 4).filter(|p| !p.is_empty()),
            3 if v.len() >= 2 => info.ttl_s = Some(u16::from_be_bytes([v[0], v[1]])),
            4 => info.port_description = Some(text(v)),
            5 => info.system_name = Some(text(v)),
            8 if info.management_address.is_none() => {
                // Address string length (subtype + address), subtype, address, ...
                if let Some((&alen, rest)) = v.split_first()
                    && alen >= 1
                    && let Some(a) = rest.get(..usize::from(alen))
                {
                    info.management_address = iana_addr(a[0], &a[1..]);
                }
            }
            _ => {}
        }
    }
    if info.chassis_id.is_empty() {
        return Err(SwitchError::MissingId);
    }
    Ok(info)
}

/// A CDP address list: count, then (protocol type, protocol length,
/// protocol, address length, address) entries; the first IPv4 or IPv6 one.
fn cdp_address(v: &[u8]) -> Option<IpAddr> {
    let count = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
    let mut b = &v[4..];
    for _ in 0..count.min(64) {
        let ptype = *b.first()?;
        let plen = usize::from(*b.get(1)?);
        let proto = b.get(2..2 + plen)?;
        let alen = usize::from(u16::from_be_bytes(
            b.get(2 + plen..4 + plen)?.try_into().ok()?,
        ));
        let addr = b.get(4 + plen..4 + plen + alen)?;
        let ip = match (ptype, proto, alen) {
            (1, [0xcc], 4) => iana_addr(1, addr),
            (2, [.., 0x86, 0xdd], 16) => iana_addr(2, addr),
            _ => None,
        };
        if ip.is_some() {
            return ip;
        }
        b = &b[4 + plen + alen..];
    }
    None
}

fn parse_cdp(b: &[u8]) -> Result<SwitchInfo, SwitchError> {
    // Version, TTL, checksum.
    if b.len() < 4 {
        return Err(SwitchError::Truncated);
    }
    let mut info = SwitchInfo {
        protocol: SwitchProtocol::Cdp,
        chassis_id: String::new(),
        port_id: None,
        system_name: None,
        port_description: None,
        management_address: None,
        ttl_s: Some(u16::from(b[1])),
    };
    let mut first_address = None;
    let mut b = &b[4..];
    while b.len() >= 4 {
        let t = u16::from_be_bytes([b[0], b[1]]);
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if len < 4 {
            return Err(SwitchError::BadTlv);
        }
        // A TLV cut by the capture's snap length ends the frame.
        let Some(v) = b.get(4..len) else { break };
        b = &b[len..];
        match t {
            0x0001 => {
                info.chassis_id = text(v);
                info.system_name = Some(text(v));
            }
            0x0002 => first_address = cdp_address(v),
            0x0003 => info.port_id = Some(text(v)).filter(|p| !p.is_empty()),
            0x0016 => info.management_address = cdp_address(v),
            _ => {}
        }
    }
    if info.management_address.is_none() {
        info.management_address = first_address;
    }
    if info.chassis_id.is_empty() {
        return Err(SwitchError::MissingId);
    }
    Ok(info)
}

/// Builds an LLDP frame from `src_mac` saying: chassis `chassis_id`
/// (locally assigned), port `port_id` (interface name), TTL 120 s, system
/// name `system_name`. Each string is cut to LLDP's limits.
pub fn lldp_frame(src_mac: [u8; 6], chassis_id: &str, port_id: &str, system_name: &str) -> Vec<u8> {
    fn tlv(out: &mut Vec<u8>, t: u16, v: &[u8]) {
        let len = v.len().min(511);
        out.extend_from_slice(&((t << 9) | len as u16).to_be_bytes());
        out.extend_from_slice(&v[..len]);
    }
    let cut = |s: &str, n: usize| -> Vec<u8> { s.as_bytes()[..s.len().min(n)].to_vec() };
    let mut f = Vec::with_capacity(64 + chassis_id.len() + port_id.len() + system_name.len());
    f.extend_from_slice(&LLDP_MULTICAST);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETHERTYPE_LLDP.to_be_bytes());
    let mut chassis = vec![7u8];
    chassis.extend(cut(chassis_id, 255));
    tlv(&mut f, 1, &chassis);
    let mut port = vec![5u8];
    port.extend(cut(port_id, 255));
    tlv(&mut f, 2, &port);
    tlv(&mut f, 3, &120u16.to_be_bytes());
    tlv(&mut f, 5, &cut(system_name, 255));
    tlv(&mut f, 0, &[]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_lldp_frames_parse_back() {
        let f = lldp_frame([2, 0, 0, 0, 0, 1], "switch-7", "eth0", "rack7-tor");
        let i = parse_switch_frame(&f).unwrap();
        assert_eq!(i.protocol, SwitchProtocol::Lldp);
        assert_eq!(i.chassis_id, "switch-7");
        assert_eq!(i.port_id.as_deref(), Some("eth0"));
        assert_eq!(i.system_name.as_deref(), Some("rack7-tor"));
        assert_eq!(i.ttl_s, Some(120));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let f = lldp_frame([2, 0, 0, 0, 0, 1], "switch-7", "eth0", "rack7-tor");
        for n in 0..f.len() {
            let _ = parse_switch_frame(&f[..n]);
        }
        assert_eq!(parse_switch_frame(&f[..10]), Err(SwitchError::Truncated));
        let mut other = f.clone();
        other[12] = 0x08;
        other[13] = 0x00;
        assert_eq!(parse_switch_frame(&other), Err(SwitchError::NotDiscovery));
    }
}
