//! The daemon with a CMA key, on loopback: which STARTUPs it admits, that
//! what it sends a keyed agent is encrypted under the CMA's key, and that
//! a keyed agent is heard only under its own key.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cma::classify::{
    FRAMESET_HEADER_LEN, Frame, FrameIter, FrameSetType, FrameSetView, Message, Startup,
};
use cma::crypt::{keydir, nanoprobe_key_id, open_with, public_of, salsa_box};

use super::daemon::{Running, config, http_get, start_with};
use super::support::encoded;

const DEADLINE: Duration = Duration::from_secs(20);

fn counter(d: &Running, name: &str) -> u64 {
    http_get(d.metrics.unwrap(), "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_counter(d: &Running, name: &str, at_least: u64) {
    let t0 = Instant::now();
    while counter(d, name) < at_least {
        assert!(t0.elapsed() < DEADLINE, "{name} never reached {at_least}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn startup(name: &str, at: SocketAddr, key: Option<(&str, &[u8; 32])>) -> Vec<u8> {
    encoded(
        &Message::Startup(Startup {
            hostname: name,
            listen: at,
            wallclock_us: 7,
            netconfig: r#"{"data":{"lo":{"ipaddrs":{"127.0.0.1/8":{}}}}}"#,
            key,
            features: None,
        }),
        None,
    )
}

/// The next datagram `s` receives (within the deadline).
fn receive(s: &UdpSocket) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return buf[..n].to_vec();
        }
        assert!(t0.elapsed() < DEADLINE, "nothing received");
    }
}

#[test]
fn with_a_cma_key_agents_are_admitted_by_key_and_spoken_to_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let (cma_id, cma_pub) = keydir::init(&dir.path().join("keys"), false).unwrap();
    assert_eq!(cma_id, "#CMA#00000");
    let d = start_with(config(dir.path()));

    // No key: refused (auth.allow_unkeyed is off).
    let bare = UdpSocket::bind("127.0.91.1:0").unwrap();
    bare.send_to(&startup("bare", bare.local_addr().unwrap(), None), d.addr)
        .unwrap();
    wait_counter(&d, "cma_auth_refused_total", 1);

    // A key: trusted on first use, saved; its SETCONFIG comes encrypted
    // from the CMA's key, and opens with the agent's secret.
    let secret = [3u8; 32];
    let public = public_of(&secret);
    let id = nanoprobe_key_id("k1", &public);
    let k1 = UdpSocket::bind("127.0.91.2:0").unwrap();
    k1.send_to(
        &startup("k1", k1.local_addr().unwrap(), Some((&id, &public))),
        d.addr,
    )
    .unwrap();
    let first = receive(&k1);
    let fs = FrameSetView::new_checked(&first).unwrap();
    let mut it = FrameIter::new(fs.frames(), FRAMESET_HEADER_LEN);
    it.next().unwrap().unwrap();
    let cf = it.next().unwrap().unwrap();
    let Ok(Frame::Crypt(h)) = Frame::parse(cf.ftype, cf.value) else {
        panic!("the CMA's first FrameSet to a keyed agent is not encrypted");
    };
    assert_eq!(
        (h.sender_key_id, h.receiver_key_id),
        ("#CMA#00000", id.as_str())
    );
    let plain = open_with(&salsa_box(&cma_pub, &secret), &h).unwrap();
    let f0 = FrameIter::new(&plain, 0).next().unwrap().unwrap();
    let Ok(Frame::ReqId(reqid)) = Frame::parse(f0.ftype, f0.value) else {
        panic!("the plaintext does not start with its REQID");
    };
    assert_eq!(fs.fstype(), FrameSetType::SetConfig.to_wire());
    assert!(keydir::public_path(&dir.path().join("keys"), &id).exists());

    // Its ACK in clear is refused; under its key, taken.
    let ack = encoded(&Message::Ack, Some(reqid));
    k1.send_to(&ack, d.addr).unwrap();
    wait_counter(&d, "cma_auth_unencrypted_total", 1);
    let mut sealed = Vec::new();
    cma::crypt::seal_frameset(
        &id,
        &cma_id,
        &salsa_box(&cma_pub, &secret),
        &ack,
        &mut sealed,
    )
    .unwrap();
    k1.send_to(&sealed, d.addr).unwrap();
    wait_counter(&d, "cma_datagrams_total{type=\"ACK\"}", 2);

    // The same host with another key: refused, kept for the operator.
    let other = public_of(&[4u8; 32]);
    let other_id = nanoprobe_key_id("k1", &other);
    let k1b = UdpSocket::bind("127.0.91.3:0").unwrap();
    k1b.send_to(
        &startup("k1", k1b.local_addr().unwrap(), Some((&other_id, &other))),
        d.addr,
    )
    .unwrap();
    wait_counter(&d, "cma_auth_refused_total", 2);
    assert!(keydir::public_path(&dir.path().join("keys/refused"), &other_id).exists());
    assert_eq!(counter(&d, "cma_auth_unencrypted_total"), 1);
    d.finish();
}

#[test]
fn allow_unkeyed_admits_agents_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    keydir::init(&dir.path().join("keys"), false).unwrap();
    let mut c = config(dir.path());
    c.auth.allow_unkeyed = true;
    let d = start_with(c);
    let bare = UdpSocket::bind("127.0.91.4:0").unwrap();
    bare.send_to(&startup("bare", bare.local_addr().unwrap(), None), d.addr)
        .unwrap();
    // Answered in clear: a SETCONFIG it can read.
    let first = receive(&bare);
    assert_eq!(
        FrameSetView::new_checked(&first).unwrap().fstype(),
        FrameSetType::SetConfig.to_wire()
    );
    assert!(cma::classify::classify(&first).is_ok());
    assert_eq!(counter(&d, "cma_auth_refused_total"), 0);
    d.finish();
}

/// Strangers cannot make the CMA trust or keep keys without limit: a key
/// trusted on first use costs a registration even in a repeated STARTUP,
/// and one refused key per host is kept.
#[test]
fn keys_from_strangers_are_bounded_by_the_registration_limits() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    keydir::init(&keys, false).unwrap();
    let mut c = config(dir.path());
    c.limits.registrations_per_s = 1;
    c.limits.registration_burst = 4;
    let d = start_with(c);
    let s = UdpSocket::bind("127.0.91.5:0").unwrap();
    let at = s.local_addr().unwrap();
    // Twenty hosts with keys of their own, all from one address with one
    // WALLCLOCK (a repeated STARTUP after the first).
    for i in 0..20u8 {
        let public = public_of(&[100 + i; 32]);
        let host = format!("spray{i}");
        let id = nanoprobe_key_id(&host, &public);
        s.send_to(&startup(&host, at, Some((&id, &public))), d.addr)
            .unwrap();
    }
    wait_counter(&d, "cma_registrations_limited_total", 14);
    // One host's key refused twenty times (another key each time).
    let k = UdpSocket::bind("127.0.92.6:0").unwrap();
    let first = public_of(&[1; 32]);
    k.send_to(
        &startup(
            "held",
            k.local_addr().unwrap(),
            Some((&nanoprobe_key_id("held", &first), &first)),
        ),
        d.addr,
    )
    .unwrap();
    for i in 0..20u8 {
        let other = public_of(&[150 + i; 32]);
        k.send_to(
            &startup(
                "held",
                k.local_addr().unwrap(),
                Some((&nanoprobe_key_id("held", &other), &other)),
            ),
            d.addr,
        )
        .unwrap();
    }
    wait_counter(&d, "cma_auth_refused_total", 1);
    d.finish();
    let trusted = keydir::list(&keys)
        .unwrap()
        .into_iter()
        .filter(|k| k.role == "trusted")
        .count();
    assert!(trusted <= 6, "{trusted} keys trusted");
    let refused = std::fs::read_dir(keys.join("refused")).map_or(0, |d| d.count());
    assert!(refused <= 1, "{refused} refused keys kept");
}

/// An encrypted FrameSet is logged opened (reading the log needs no key),
/// so one that inflates past a log segment (1 MiB here, 1.5 MB of JSON)
/// is dropped and counted, not a failure of the daemon; the agent's next
/// report is ACKed, under its key.
#[test]
fn an_encrypted_frameset_too_large_for_the_log_is_dropped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (cma_id, cma_pub) = keydir::init(&dir.path().join("keys"), false).unwrap();
    let d = start_with(config(dir.path()));
    let secret = [5u8; 32];
    let public = public_of(&secret);
    let id = nanoprobe_key_id("big", &public);
    let s = UdpSocket::bind("127.0.91.7:0").unwrap();
    s.send_to(
        &startup("big", s.local_addr().unwrap(), Some((&id, &public))),
        d.addr,
    )
    .unwrap();
    receive(&s); // its SETCONFIG: registered
    let shared = salsa_box(&cma_pub, &secret);
    let sealed = |m: &Message<'_>, request| {
        let r = cma::classify::ReqId {
            session: 9,
            request,
            queue: 0,
        };
        let mut out = Vec::new();
        cma::crypt::seal_frameset(&id, &cma_id, &shared, &encoded(m, Some(r)), &mut out).unwrap();
        out
    };
    let big = format!("{{\"data\":\"{}\"}}", "a".repeat(1_500_000));
    let bomb = sealed(
        &Message::JsDiscovery {
            wallclock_us: None,
            json: &big,
        },
        1,
    );
    assert!(bomb.len() < 65_000, "{} bytes", bomb.len());
    s.send_to(&bomb, d.addr).unwrap();
    wait_counter(&d, "cma_too_large_total", 1);
    let peer: SocketAddr = "127.0.0.9:1984".parse().unwrap();
    s.send_to(
        &sealed(
            &Message::HbLate {
                peer,
                elapsed_us: 1,
            },
            2,
        ),
        d.addr,
    )
    .unwrap();
    // Its ACK (cumulative, request 2) comes sealed by the CMA's key.
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < DEADLINE, "no ACK for the next report");
        let got = receive(&s);
        let Ok(fs) = FrameSetView::new_checked(&got) else {
            continue;
        };
        let mut it = FrameIter::new(fs.frames(), FRAMESET_HEADER_LEN);
        let _sig = it.next();
        let Some(Ok(cf)) = it.next() else { continue };
        let Ok(Frame::Crypt(h)) = Frame::parse(cf.ftype, cf.value) else {
            continue;
        };
        let plain = open_with(&salsa_box(&cma_pub, &secret), &h).unwrap();
        let f0 = FrameIter::new(&plain, 0).next().unwrap().unwrap();
        if fs.fstype() == FrameSetType::Ack.to_wire()
            && let Ok(Frame::ReqId(r)) = Frame::parse(f0.ftype, f0.value)
            && r.session == 9
            && r.request == 2
        {
            break;
        }
    }
    assert_eq!(counter(&d, "cma_healthy"), 1);
    d.finish();
}
