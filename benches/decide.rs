//! The decider's costs:
//! - memory per node of a settled fleet (a counting allocator: bytes held
//!   by the decider after 200,000 STARTUPs, ACKs and switch discoveries,
//!   divided by the nodes), printed before the timings;
//! - decisions per second on one core: a stream of HBDEAD (Up -> Suspect,
//!   probe queued), HBBACKALIVE (false alarm, back to Up) and TICK (stale
//!   deadlines dropped) over the fleet, against the cost of classifying the
//!   same HBDEAD datagram from bytes, measured in the same run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};

use cma::classify::switch::lldp_frame;
use cma::classify::{EncodeOptions, Message, ReqId, Startup, SwDiscover, classify, encode};
use cma::decide::decider::{Decider, DeciderConfig, Effect, Event, Input};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NODES: u32 = 200_000;
const PER_SWITCH: u32 = 40;
const CMA: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 255, 255, 254)),
    1984,
);

fn addr(i: u32) -> SocketAddr {
    let sw = i / PER_SWITCH;
    SocketAddr::from((
        [10, (sw >> 8) as u8, sw as u8, (i % PER_SWITCH) as u8 + 1],
        1984,
    ))
}

struct Feed {
    d: Decider,
    lsn: u64,
    now: u64,
    out: Vec<Effect>,
}

impl Feed {
    fn give(&mut self, from: SocketAddr, reqid: Option<ReqId>, message: Message<'_>) {
        self.lsn += 1;
        self.out.clear();
        self.d.handle(
            &Input {
                lsn: self.lsn,
                time_ms: self.now,
                event: Event::Received {
                    from,
                    reqid,
                    message,
                    key: None,
                },
            },
            &mut self.out,
        );
    }

    fn tick(&mut self) {
        self.lsn += 1;
        self.out.clear();
        self.d.handle(
            &Input {
                lsn: self.lsn,
                time_ms: self.now,
                event: Event::Tick,
            },
            &mut self.out,
        );
    }

    /// ACKs every instruction in flight until nothing is left.
    fn settle(&mut self) {
        loop {
            let acks: Vec<(SocketAddr, u64)> = self
                .d
                .nodes()
                .iter()
                .filter_map(|n| n.out.inflight().last().map(|(r, _)| (n.addr, *r)))
                .collect();
            if acks.is_empty() {
                return;
            }
            for (a, r) in acks {
                let reqid = ReqId {
                    session: 1,
                    request: r,
                    queue: 0,
                };
                self.give(a, Some(reqid), Message::Ack);
            }
        }
    }
}

fn fleet() -> (Feed, isize) {
    let before = HELD.load(Ordering::Relaxed);
    let mut f = Feed {
        d: Decider::new(DeciderConfig::new(CMA, 1)),
        lsn: 0,
        now: 1,
        out: Vec::new(),
    };
    for i in 0..NODES {
        let a = addr(i);
        let host = format!("node-{i}");
        let net = format!(
            "{{\"data\":{{\"eth0\":{{\"ipaddrs\":{{\"{}/24\":{{}}}}}}}}}}",
            a.ip()
        );
        f.give(
            a,
            None,
            Message::Startup(Startup {
                hostname: &host,
                listen: a,
                wallclock_us: 1,
                netconfig: &net,
                key: None,
                features: None,
            }),
        );
        let frame = lldp_frame(
            [2, 0, 0, 0, 0, 1],
            &format!("sw-{}", i / PER_SWITCH),
            "p1",
            "edge",
        );
        let reqid = ReqId {
            session: 9,
            request: 1,
            queue: 0,
        };
        f.give(
            a,
            Some(reqid),
            Message::SwDiscover(SwDiscover {
                wallclock_us: 1,
                pktdata: &frame,
                interface: "eth0",
                hostname: &host,
                discname: "lldp",
            }),
        );
        if i % 1000 == 999 {
            f.settle();
        }
    }
    f.settle();
    f.out = Vec::new();
    let held = HELD.load(Ordering::Relaxed) - before;
    (f, held)
}

fn bench(c: &mut Criterion) {
    let (mut f, held) = fleet();
    f.d.check().expect("fleet invariants");
    println!(
        "decider memory: {} bytes for {NODES} settled nodes = {:.0} bytes/node",
        held,
        held as f64 / f64::from(NODES)
    );

    // Monitor pairs: for node i, its group-ring predecessor reports it.
    let pairs: Vec<(SocketAddr, SocketAddr)> = (0..NODES)
        .map(|i| {
            let id = f.d.node_at(addr(i)).unwrap();
            let p = f.d.topology().peers_of(id)[0];
            (f.d.node(p).unwrap().addr, addr(i))
        })
        .collect();

    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(3));
    let mut k = 0usize;
    let mut req = 1u64;
    g.bench_function("hbdead_backalive_tick", |b| {
        b.iter(|| {
            let (p, d) = pairs[k % pairs.len()];
            k += 1;
            req += 1;
            let r = ReqId {
                session: 2,
                request: req,
                queue: 0,
            };
            f.now += 1;
            f.give(p, Some(r), Message::HbDead { peer: d });
            f.give(
                p,
                Some(r),
                Message::HbBackAlive {
                    peer: d,
                    elapsed_us: 0,
                },
            );
            f.tick();
            black_box(f.out.len())
        })
    });

    // Reference: classifying the HBDEAD datagram itself.
    let mut dgram = Vec::new();
    encode(
        &Message::HbDead { peer: pairs[0].1 },
        Some(ReqId {
            session: 2,
            request: 5,
            queue: 0,
        }),
        &EncodeOptions::default(),
        &mut dgram,
    )
    .unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("reference_classify_hbdead", |b| {
        b.iter(|| black_box(classify(black_box(&dgram)).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
