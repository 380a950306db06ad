//! What a node's netconfig (the JSDISCOVERY its STARTUP carries) says
//! that placing it needs: the subnet of its address, the interfaces that
//! may hang off a switch. Shared by the decider and our agent; pure.

use std::net::IpAddr;

/// Interfaces per node asked to discover their switch, at most.
pub const NICS_MAX: usize = 16;

/// The subnet (`network/prefix`) of the interface address in a netconfig
/// JSON that equals `ip`, if any.
pub fn subnet_of(netconfig: &str, ip: IpAddr) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(netconfig).ok()?;
    subnet_in(&v, ip)
}

pub(crate) fn subnet_in(v: &serde_json::Value, ip: IpAddr) -> Option<String> {
    for (_, iface) in v.get("data")?.as_object()? {
        let Some(addrs) = iface.get("ipaddrs").and_then(|a| a.as_object()) else {
            continue;
        };
        for cidr in addrs.keys() {
            let Some((a, p)) = cidr.split_once('/') else {
                continue;
            };
            let (Ok(a), Ok(p)) = (a.parse::<IpAddr>(), p.parse::<u8>()) else {
                continue;
            };
            if a != ip {
                continue;
            }
            return match a {
                IpAddr::V4(v4) if p <= 32 => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                    let net = std::net::Ipv4Addr::from(u32::from(v4) & mask);
                    Some(format!("{net}/{p}"))
                }
                IpAddr::V6(v6) if p <= 128 => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
                    let net = std::net::Ipv6Addr::from(u128::from(v6) & mask);
                    Some(format!("{net}/{p}"))
                }
                _ => None,
            };
        }
    }
    None
}

/// The interfaces of a netconfig JSON that may hang off a switch: not
/// loopback (`lo`, or of type 772), carrier up (`true` or `1`, as the nanoprobe's script and ours
/// write it), a name a kernel could have given (at most 15 bytes, no `/`);
/// at most [`NICS_MAX`], sorted.
pub fn switch_nics_of(netconfig: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(netconfig)
        .map(|v| switch_nics_in(&v))
        .unwrap_or_default()
}

pub(crate) fn switch_nics_in(v: &serde_json::Value) -> Vec<String> {
    let Some(data) = v.get("data").and_then(|d| d.as_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, iface) in data {
        let carrier = match iface.get("carrier") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
            _ => false,
        };
        // ARPHRD_LOOPBACK is 772 (`type` in /sys/class/net, which both the
        // nanoprobe's netconfig and ours copy).
        let loopback = name == "lo" || iface.get("type").and_then(|t| t.as_u64()) == Some(772);
        let sane = !name.is_empty()
            && name.len() <= 15
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'"');
        if carrier && !loopback && sane {
            out.push(name.clone());
            if out.len() == NICS_MAX {
                break;
            }
        }
    }
    out.sort();
    out
}
