//! Classifying an uncompressed FrameSet allocates nothing on the heap.
//!
//! A counting global allocator counts allocations per thread, so tests
//! running in parallel on other threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cma::classify::{EncodeOptions, Message, ReqId, classify, encode};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local without a destructor, so
// touching it never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn classify_of_uncompressed_framesets_does_not_allocate() {
    let peer = "10.1.2.3:1984".parse().unwrap();
    let json = format!("{{\"x\":\"{}\"}}", "a".repeat(1000));
    let reqid = Some(ReqId {
        session: 7,
        request: 9,
        queue: 0,
    });
    let mut packets = Vec::new();
    for m in [
        Message::Heartbeat,
        Message::HbDead { peer },
        Message::JsDiscovery {
            wallclock_us: Some(1),
            json: &json,
        },
    ] {
        let mut out = Vec::new();
        encode(
            &m,
            reqid.filter(|_| m.fstype() >= 16),
            &EncodeOptions::default(),
            &mut out,
        )
        .unwrap();
        packets.push(out);
    }
    for p in &packets {
        let before = allocations();
        let c = classify(p).unwrap();
        let m = c.message().unwrap();
        let after = allocations();
        assert_eq!(after - before, 0, "{m:?} allocated");
    }
    // The counter does count: a compressed FrameSet must inflate into a buffer.
    let big = "b".repeat(40_000);
    let mut out = Vec::new();
    encode(
        &Message::JsDiscovery {
            wallclock_us: None,
            json: &big,
        },
        reqid,
        &EncodeOptions::default(),
        &mut out,
    )
    .unwrap();
    let before = allocations();
    let c = classify(&out).unwrap();
    assert!(c.compressed);
    assert!(allocations() > before);
}

/// The io loop allocates nothing per datagram: the io thread's allocation
/// count over a run is the same for 10 datagrams as for 3,000.
#[test]
fn io_loop_does_not_allocate_per_datagram() {
    use cma::engine::io::{IoConfig, IoLoop};
    use std::time::{Duration, Instant};

    let mut counts = Vec::new();
    for total in [10usize, 3000] {
        let (producer, mut consumer) = cma::ring_buffer::channel(4096, 256);
        let config = IoConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            rcvbuf_bytes: 4 << 20,
            ..IoConfig::default()
        };
        let (io, handle) = IoLoop::bind(&config, producer).unwrap();
        let addr = io.local_addrs().unwrap()[0];
        let t = std::thread::spawn(move || {
            let before = allocations();
            let stats = io.run().unwrap();
            (allocations() - before, stats.received)
        });
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..total {
            sender.send_to(&(i as u32).to_le_bytes(), addr).unwrap();
            // Keep the ring from filling: read as we go.
            if i % 500 == 499 || i + 1 == total {
                while got < i + 1 {
                    assert!(Instant::now() < deadline, "datagrams did not arrive");
                    if consumer.wait(Some(Duration::from_millis(50))) {
                        let b = consumer.read_batch(64);
                        got += b.len();
                        b.release();
                    }
                }
            }
        }
        handle.stop();
        let (allocated, received) = t.join().unwrap();
        assert_eq!(received, total as u64);
        counts.push(allocated);
    }
    assert_eq!(
        counts[0], counts[1],
        "io thread allocations for 10 vs 3000 datagrams"
    );
}
