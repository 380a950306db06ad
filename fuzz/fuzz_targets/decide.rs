//! The decider under arbitrary input: any sequence of messages from a
//! small set of addresses (STARTUP with clashing names and addresses,
//! reports about anyone, ACKs of anything, SWDISCOVER with any bytes, TICKs
//! at any time) never panics it and never breaks its invariants; a
//! checkpoint taken at the end imports to the same state.
#![no_main]

use std::net::SocketAddr;

use cma::classify::{
    HbState, Message, PeerState, PeerStates, PeerStatus, Peers, ReqId, Startup, SwDiscover,
};
use cma::decide::decider::{Decider, DeciderConfig, Effect, Event, Input};
use libfuzzer_sys::fuzz_target;

/// Key ids a sender may announce or send under (none, or one of two).
const KEYS: [Option<&str>; 3] = [None, Some("a@@00"), Some("b@@11")];
const PUBLIC: [u8; 32] = [9; 32];

fn addr(b: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, (b >> 3) & 1, b & 7], 1984 + u16::from(b >> 4 & 1)))
}

/// Hands the decider one record and checks its invariants after it.
fn step(d: &mut Decider, out: &mut Vec<Effect>, lsn: usize, time_ms: u64, event: Event<'_>) {
    out.clear();
    d.handle(
        &Input {
            lsn: lsn as u64 + 1,
            time_ms,
            event,
        },
        out,
    );
    d.check().expect("invariants after a record");
}

fuzz_target!(|data: &[u8]| {
    let mut d = Decider::new(DeciderConfig::new(
        SocketAddr::from(([10, 9, 9, 9], 1984)),
        3,
    ));
    let mut out = Vec::new();
    let mut now = 0u64;
    let names = ["a", "b", "c", "d", "e"];
    for (lsn, op) in data.chunks(4).enumerate() {
        let [k, x, y, z] = match *op {
            [k, x, y, z] => [k, x, y, z],
            _ => break,
        };
        now += u64::from(z) * 37;
        let from = addr(x);
        let peer = addr(y);
        let reqid = Some(ReqId {
            session: u32::from(z & 3),
            request: u64::from(y),
            queue: 0,
        });
        let json = format!(
            "{{\"data\":{{\"e\":{{\"ipaddrs\":{{\"{}/{}\":{{}}}}}}}}}}",
            from.ip(),
            z % 40
        );
        let frame = [k, x, y, z, 0x88, 0xcc, k, x, y, z, x, y, z, k];
        let states = [
            PeerState {
                peer,
                status: PeerStatus::from_wire(z % 3).unwrap_or(PeerStatus::Up),
                since_ms: u32::from(x),
            },
            PeerState {
                peer: addr(x),
                status: PeerStatus::Up,
                since_ms: 0,
            },
        ];
        let sends = [peer, addr(z)];
        let message = match k % 16 {
            0 | 1 => Message::Startup(Startup {
                hostname: names[usize::from(y) % names.len()],
                listen: if z & 1 == 0 { from } else { peer },
                wallclock_us: u64::from(z >> 5),
                netconfig: &json,
                // Keyed or not, and which key: identity bound to keys.
                key: KEYS[usize::from(x >> 6) % KEYS.len()].map(|k| (k, &PUBLIC)),
                features: (z & 2 != 0).then_some("hbstate"),
            }),
            2 => Message::HbDead { peer },
            3 => Message::Ack,
            4 => Message::HbBackAlive {
                peer,
                elapsed_us: 0,
            },
            5 => Message::HbMartian { peer },
            6 => Message::HbShutdown { hostname: "x" },
            7 => Message::HbLate {
                peer,
                elapsed_us: 1,
            },
            8 => Message::SwDiscover(SwDiscover {
                wallclock_us: 0,
                pktdata: &frame,
                interface: "e",
                hostname: "x",
                discname: "lldp",
            }),
            9 => Message::ConnShut,
            10 => Message::JsDiscovery {
                wallclock_us: None,
                json: "{}",
            },
            12 => Message::HbState(HbState {
                wallclock_us: u64::from(z >> 5),
                applied: Some(ReqId {
                    session: u32::from(x & 1),
                    request: u64::from(y),
                    queue: 0,
                }),
                expect: PeerStates::List(&states[..usize::from(x % 3)]),
                send: Peers::List(&sends[..usize::from(y % 3)]),
            }),
            13 => Message::ActionNak {
                instr: ReqId {
                    session: 0,
                    request: u64::from(y),
                    queue: 0,
                },
                code: u64::from(z),
                reason: "no",
            },
            14 => {
                step(&mut d, &mut out, lsn, now, Event::Resume);
                continue;
            }
            _ => {
                step(&mut d, &mut out, lsn, now, Event::Tick);
                continue;
            }
        };
        let event = Event::Received {
            from,
            reqid,
            message,
            key: KEYS[usize::from(z >> 6) % KEYS.len()],
        };
        step(&mut d, &mut out, lsn, now, event);
    }
    let back = Decider::import(&d.export()).expect("a checkpoint imports");
    assert!(back == d, "a checkpoint round trip changed the state");
});
