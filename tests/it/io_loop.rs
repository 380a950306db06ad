//! The io loop on loopback: datagrams land in ring slots with their source
//! address, a full ring drops and counts, long datagrams are flagged, and
//! the loop stops when asked.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use cma::engine::io::{IoConfig, IoLoop, IoStats};
use cma::engine::mmsg::{SLOT_TRUNCATED, slot_addr};
use cma::ring_buffer::{self, Consumer};

fn start(
    listen: SocketAddr,
    capacity: usize,
    slot: usize,
) -> (
    Consumer,
    SocketAddr,
    cma::engine::io::IoHandle,
    std::thread::JoinHandle<std::io::Result<IoStats>>,
) {
    let (producer, consumer) = ring_buffer::channel(capacity, slot);
    let config = IoConfig {
        listen: vec![listen],
        rcvbuf_bytes: 1 << 20,
        ..IoConfig::default()
    };
    let (io, handle) = IoLoop::bind(&config, producer).expect("bind the io loop");
    let addr = io.local_addrs().unwrap()[0];
    let t = std::thread::spawn(move || io.run());
    (consumer, addr, handle, t)
}

/// Reads `n` slots (or fails after a generous deadline), returning
/// (data, source, flags) of each.
fn collect(c: &mut Consumer, n: usize) -> Vec<(Vec<u8>, Option<SocketAddr>, u32)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} datagrams arrived",
            out.len()
        );
        if !c.wait(Some(Duration::from_millis(100))) {
            continue;
        }
        let b = c.read_batch(64);
        for i in 0..b.len() {
            let (data, meta) = b.get(i);
            out.push((data.to_vec(), slot_addr(meta), meta.flags));
        }
        b.release();
    }
    out
}

#[test]
fn datagrams_arrive_in_slots_with_their_source() {
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        let listen: SocketAddr = listen.parse().unwrap();
        let (mut c, addr, handle, t) = start(listen, 256, 2048);
        let sender = UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).unwrap();
        let from = sender.local_addr().unwrap();
        let total = 2000u32;
        let mut got = Vec::new();
        // Send in rounds the ring can hold, reading as we go.
        for round in 0..(total / 100) {
            for i in 0..100 {
                let k = round * 100 + i;
                sender.send_to(&k.to_le_bytes(), addr).unwrap();
            }
            got.extend(collect(&mut c, 100));
        }
        for (k, (data, src, flags)) in got.iter().enumerate() {
            assert_eq!(
                data,
                &(k as u32).to_le_bytes(),
                "datagram {k} from {listen}"
            );
            assert_eq!(*src, Some(from));
            assert_eq!(*flags, 0);
        }
        handle.stop();
        let stats = t.join().unwrap().unwrap();
        assert_eq!(stats.received, u64::from(total));
        assert_eq!(stats.ring_full_drops, 0);
        assert!(c.is_finished());
    }
}

#[test]
fn a_full_ring_drops_and_counts_and_long_datagrams_are_flagged() {
    let (mut c, addr, handle, t) = start("127.0.0.1:0".parse().unwrap(), 4, 64);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&[7u8; 100], addr).unwrap();
    let first = collect(&mut c, 1);
    assert_eq!(first[0].0, vec![7u8; 64]);
    assert_eq!(first[0].2 & SLOT_TRUNCATED, SLOT_TRUNCATED);
    // Fill the ring (4 slots) without reading, then send 20 more.
    for i in 0..24u8 {
        sender.send_to(&[i], addr).unwrap();
    }
    // Wait until the io loop has read all 25: into the ring or dropped.
    let counters = handle.counters();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.received.load(Relaxed) + counters.ring_full_drops.load(Relaxed) < 25 {
        assert!(
            Instant::now() < deadline,
            "io loop did not read the datagrams"
        );
        std::thread::yield_now();
    }
    handle.stop();
    let stats = t.join().unwrap().unwrap();
    assert_eq!(
        (stats.received, stats.ring_full_drops, stats.truncated),
        (5, 20, 1)
    );
    // The four that fit are the first four, intact.
    let kept = collect(&mut c, 4);
    for (i, (data, _, _)) in kept.iter().enumerate() {
        assert_eq!(data, &[i as u8]);
    }
}

#[test]
fn binding_a_taken_port_is_a_clear_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (producer, _c) = ring_buffer::channel(4, 64);
    let config = IoConfig {
        listen: vec![taken.local_addr().unwrap()],
        ..IoConfig::default()
    };
    let err = IoLoop::bind(&config, producer).err().expect("port in use");
    assert!(
        err.to_string().contains("cannot listen on 127.0.0.1:"),
        "{err}"
    );
}
