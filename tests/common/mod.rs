//! Helpers of the tests that run real nanoprobes (tests/nanoprobe.rs,
//! tests/netlab.rs): finding or building the probe, running commands,
//! saying in one line why a test was skipped.
#![allow(dead_code)]

pub mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cma::store::db_path;
use cma::store::{EventView, Store};

/// Says why the test did nothing, on the real stderr: libtest captures
/// `eprintln!` of a passing test, and this line must be seen.
pub fn skip(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{what} skipped: {why}");
}

/// The nanoprobe binary: `NANOPROBE`, or built from ../shared/nanoprobe.
pub fn nanoprobe() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("NANOPROBE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("NANOPROBE={} is no file", p.display()))
        };
    }
    nanoprobe_in("nanoprobe")
}

/// The nanoprobe built from ../shared/nanoprobe into `target/SUBDIR`: each
/// build has its own key directory (`SUBDIR/share/assimilation/crypto.d`,
/// compiled in), so a build whose probes must encrypt is kept apart.
pub fn nanoprobe_in(subdir: &str) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = root.join("../shared/nanoprobe/build.sh");
    if !build.is_file() {
        return Err("no ../shared/nanoprobe/build.sh beside the project and no NANOPROBE".into());
    }
    let out = Command::new("bash")
        .arg(&build)
        .arg(root.join("target").join(subdir))
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("build.sh: {e}"))?;
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    if !out.status.success() || !Path::new(&path).is_file() {
        return Err(format!("build.sh failed ({})", out.status));
    }
    Ok(PathBuf::from(path))
}

/// Runs `f` on a thread that entered the network namespace `ns` (made by
/// `ip netns add`): its sockets live there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).expect("the namespace");
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("the namespace thread")
    })
}

/// Sends one UDP datagram with a forged source address, through a raw
/// socket (needs root; the kernel fills the IP checksum, UDP's is left 0,
/// "none", as IPv4 allows).
pub fn forge_udp(
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    payload: &[u8],
) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )?;
    let len = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    s.send_to(&p, &SockAddr::from(std::net::SocketAddr::V4(to)))?;
    Ok(())
}

/// A Prometheus counter's value from `http://ADDR/metrics` (0 if absent).
pub fn metric(addr: &str, name: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(c, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    let _ = c.read_to_string(&mut body);
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Runs a command; its stderr is the error.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Are we root (namespaces need it)?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// The events in the CMA's database under `data` (none while it cannot be
/// read).
pub fn events(data: &Path) -> Vec<EventView> {
    Store::open_read_only(&db_path(data))
        .and_then(|s| s.events(0, 1_000_000))
        .unwrap_or_default()
}

/// `cma rings --json` over the CMA's database under `data`: (group, host
/// names in ring order).
pub fn rings(data: &Path) -> Vec<(String, Vec<String>)> {
    let out = Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(["rings", "--json", "--data-dir"])
        .arg(data)
        .output()
        .expect("cma rings");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|j| {
            let hosts = j["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|x| x["host"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (j["group"].as_str().unwrap_or("").to_string(), hosts)
        })
        .collect()
}
