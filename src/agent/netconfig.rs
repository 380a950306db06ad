//! The netconfig JSON an agent sends in STARTUP: interfaces, their MAC
//! addresses, MTU, state and IP addresses with prefix lengths, read from
//! getifaddrs(3) and /sys/class/net. Keys come out sorted and MACs are
//! written with dashes, as a real nanoprobe writes them (WIRE.md); the CMA
//! reads `data.IFACE.ipaddrs` to learn each node's subnet.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value, json};

/// A MAC address as a nanoprobe writes it: `02-fc-00-00-00-01`.
pub fn mac_string(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("-")
}

fn prefix_len(mask: IpAddr) -> u32 {
    match mask {
        IpAddr::V4(m) => u32::from(m).count_ones(),
        IpAddr::V6(m) => u128::from(m).count_ones(),
    }
}

fn scope(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(a) if a.is_loopback() => "host",
        IpAddr::V6(a) if a.is_loopback() => "host",
        IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => "link",
        _ => "global",
    }
}

fn sys(iface: &str, what: &str) -> Option<String> {
    // Interface names come from the kernel; refuse anything path-like.
    if iface.contains('/') || iface.starts_with('.') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{what}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn wrap(host: &str, data: Map<String, Value>) -> String {
    json!({
        "data": Value::Object(data),
        "description": "IP Network Configuration",
        "discovertype": "netconfig",
        "host": host,
        "instance": "netconfig",
        "proxy": "local/local",
        "source": "netconfig",
    })
    .to_string()
}

/// This host's netconfig JSON. Interfaces that cannot be read are left
/// out; an error of getifaddrs itself gives an empty `data`.
pub fn gather(host: &str) -> String {
    let mut ifaces: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let entry = ifaces.entry(a.interface_name.clone()).or_insert_with(|| {
                let mut m = Map::new();
                m.insert("ipaddrs".into(), Value::Object(Map::new()));
                m
            });
            let Some(addr) = a.address else { continue };
            if let Some(link) = addr.as_link_addr() {
                if let Some(mac) = link.addr() {
                    entry.insert("address".into(), mac_string(&mac).into());
                }
                continue;
            }
            let ip: Option<IpAddr> = addr
                .as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| addr.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())));
            let Some(ip) = ip else { continue };
            let mask: Option<IpAddr> = a.netmask.and_then(|m| {
                m.as_sockaddr_in()
                    .map(|s| IpAddr::V4(s.ip()))
                    .or_else(|| m.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
            });
            let bits = mask.map(prefix_len).unwrap_or(match ip {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            });
            let mut info = Map::new();
            info.insert("scope".into(), scope(ip).into());
            if let Some(b) = a.broadcast.and_then(|b| b.as_sockaddr_in().map(|s| s.ip())) {
                info.insert("brd".into(), b.to_string().into());
            }
            if let Some(Value::Object(ips)) = entry.get_mut("ipaddrs") {
                ips.insert(format!("{ip}/{bits}"), Value::Object(info));
            }
        }
    }
    let mut data = Map::new();
    for (name, mut m) in ifaces {
        if let Some(mtu) = sys(&name, "mtu").and_then(|v| v.parse::<u64>().ok()) {
            m.insert("mtu".into(), mtu.into());
        }
        if let Some(s) = sys(&name, "operstate") {
            m.insert("operstate".into(), s.into());
        }
        if let Some(c) = sys(&name, "carrier") {
            m.insert("carrier".into(), (c == "1").into());
        }
        if let Some(t) = sys(&name, "type").and_then(|v| v.parse::<u64>().ok()) {
            m.insert("type".into(), t.into());
        }
        let is_virtual = std::fs::read_link(format!("/sys/class/net/{name}"))
            .map(|p| p.to_string_lossy().contains("/virtual/"))
            .unwrap_or(false);
        m.insert("virtual".into(), is_virtual.into());
        m.entry("address").or_insert_with(|| {
            sys(&name, "address")
                .map(|a| a.replace(':', "-"))
                .unwrap_or_default()
                .into()
        });
        data.insert(name, Value::Object(m));
    }
    wrap(host, data)
}

/// The ARP table from the text of `/proc/net/arp` as discovery JSON:
/// `"discovertype":"arp"`, `data` mapping IP address to MAC address.
/// Incomplete entries (MAC all zero) are left out.
pub fn arp_json(host: &str, proc_net_arp: &str) -> String {
    let mut data = Map::new();
    for line in proc_net_arp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(ip), Some(mac)) = (f.first(), f.get(3)) else {
            continue;
        };
        if ip.parse::<IpAddr>().is_err() || *mac == "00:00:00:00:00:00" {
            continue;
        }
        data.insert((*ip).to_string(), mac.replace(':', "-").into());
    }
    json!({
        "data": Value::Object(data),
        "description": "ARP table",
        "discovertype": "arp",
        "host": host,
        "instance": "arp",
        "source": "/proc/net/arp",
    })
    .to_string()
}

/// This host's ARP table, when `/proc/net/arp` reads.
pub fn arp(host: &str) -> Option<String> {
    std::fs::read_to_string("/proc/net/arp")
        .ok()
        .map(|t| arp_json(host, &t))
}

/// The netconfig of a simulated host whose only interface carries `addr`
/// (what `cma fleet` announces for each agent on a loopback address).
pub fn synthetic(host: &str, iface: &str, mac: [u8; 6], addr: SocketAddr, prefix: u8) -> String {
    let mut ips = Map::new();
    ips.insert(
        format!("{}/{prefix}", addr.ip()),
        json!({"scope": scope(addr.ip())}),
    );
    let mut data = Map::new();
    data.insert(
        iface.into(),
        json!({
            "address": mac_string(&mac),
            "carrier": true,
            "ipaddrs": Value::Object(ips),
            "mtu": 1500,
            "operstate": "up",
            "type": 1,
            "virtual": true,
        }),
    );
    wrap(host, data)
}

/// The netconfig of a simulated server, about the size of a real one's
/// (~1.5 KB): `iface` carries `addr` (and an IPv6 link-local address);
/// three more NICs without carrier and two bridges that are down carry no
/// address (so neither its subnet nor its switch NICs change).
pub fn synthetic_server(
    host: &str,
    iface: &str,
    mac: [u8; 6],
    addr: SocketAddr,
    prefix: u8,
) -> String {
    let mut v: Value = serde_json::from_str(&synthetic(host, iface, mac, addr, prefix))
        .expect("synthetic netconfig is JSON");
    let ll = format!(
        "fe80::{:x}:{:x}ff:fe{:x}:{:x}/64",
        u16::from_be_bytes([mac[0] ^ 2, mac[1]]),
        mac[2],
        mac[3],
        u16::from_be_bytes([mac[4], mac[5]])
    );
    let data = v["data"].as_object_mut().expect("data is an object");
    if let Some(ips) = data[iface]["ipaddrs"].as_object_mut() {
        ips.insert(ll, json!({"scope": "link"}));
    }
    let nic = |k: u8, up: bool| {
        let mut m = mac;
        m[0] = 2 | (k << 2);
        json!({
            "address": mac_string(&m),
            "carrier": up,
            "duplex": if up { "full" } else { "unknown" },
            "ipaddrs": {},
            "mtu": if k == 1 { 9000 } else { 1500 },
            "operstate": if up { "up" } else { "down" },
            "speed": if up { 10000 } else { -1 },
            "type": 1,
            "virtual": k > 2,
        })
    };
    data.insert("eth1".into(), nic(1, false));
    data.insert("eth2".into(), nic(2, false));
    data.insert("eth3".into(), nic(3, false));
    data.insert("docker0".into(), nic(4, false));
    data.insert("virbr0".into(), nic(5, false));
    if let Some(e) = data[iface].as_object_mut() {
        e.insert("duplex".into(), json!("full"));
        e.insert("speed".into(), json!(10000));
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netconfig::subnet_of;

    #[test]
    fn a_simulated_servers_netconfig_is_real_sized_and_names_the_same_subnet() {
        let a: SocketAddr = "127.1.2.3:1985".parse().unwrap();
        let small = synthetic("h", "eth0", [2, 0xf1, 0, 0, 1, 2], a, 8);
        let big = synthetic_server("h", "eth0", [2, 0xf1, 0, 0, 1, 2], a, 8);
        assert!((1000..2500).contains(&big.len()), "{} bytes", big.len());
        assert_eq!(subnet_of(&big, a.ip()), subnet_of(&small, a.ip()));
        let v: Value = serde_json::from_str(&big).unwrap();
        assert_eq!(
            crate::netconfig::switch_nics_in(&v),
            vec!["eth0".to_string()]
        );
    }

    #[test]
    fn gathered_netconfig_names_loopback_and_its_subnet() {
        let j = gather("testhost");
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["instance"], "netconfig");
        assert_eq!(v["host"], "testhost");
        let lo = &v["data"]["lo"];
        assert!(lo["ipaddrs"]["127.0.0.1/8"].is_object(), "{j}");
        assert_eq!(lo["address"], "00-00-00-00-00-00");
        assert_eq!(
            subnet_of(&j, "127.0.0.1".parse().unwrap()),
            Some("127.0.0.0/8".into())
        );
    }

    #[test]
    fn arp_table_reads_proc_net_arp() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 192.0.2.1        0x1         0x2         02:fc:00:00:00:01     *        eth0\n\
                 192.0.2.9        0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                 garbage\n";
        let v: Value = serde_json::from_str(&arp_json("h", t)).unwrap();
        assert_eq!(v["discovertype"], "arp");
        assert_eq!(v["data"]["192.0.2.1"], "02-fc-00-00-00-01");
        assert_eq!(v["data"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn synthetic_netconfig_gives_the_subnet() {
        let a: SocketAddr = "127.3.2.1:1984".parse().unwrap();
        let j = synthetic("n1", "eth0", [2, 0, 0, 0, 0, 1], a, 16);
        assert_eq!(subnet_of(&j, a.ip()), Some("127.3.0.0/16".into()));
        assert!(j.contains("\"02-00-00-00-00-01\""));
    }
}
