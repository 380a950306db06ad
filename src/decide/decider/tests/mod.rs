//! The decider's unit tests: scripted agents, simulated time.

use super::*;
use crate::classify::switch::lldp_frame;
use crate::decide::failure::ANSWER_MS;

mod audit;
mod health;
mod keys;
mod registry;
mod sending;
mod switches;

const CMA: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9)), 1984);

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 1984))
}

/// The last octet of a test address.
fn host_of(a: SocketAddr) -> u8 {
    match a.ip() {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(_) => unreachable!("test addresses are IPv4"),
    }
}

/// A decider and a clock, with helpers that feed it messages.
struct T {
    d: Decider,
    lsn: u64,
    now: u64,
    out: Vec<Effect>,
    /// Agents announce keys and send under them (`key_of`).
    keyed: bool,
}

/// The key id of test agent `n` (its host name, a made-up digest).
fn key_of(n: u8) -> String {
    format!("host{n}@@{n:032x}")
}

impl T {
    fn new() -> T {
        T {
            d: Decider::new(DeciderConfig::new(CMA, 7)),
            lsn: 0,
            now: 1000,
            out: Vec::new(),
            keyed: false,
        }
    }

    fn feed(&mut self, from: SocketAddr, reqid: Option<ReqId>, m: Message<'_>) -> Vec<Effect> {
        // A genuine agent sends under its own key, if it has one.
        let key = self
            .d
            .node_at(from)
            .and_then(|id| self.d.key_of(id))
            .map(str::to_string);
        self.feed_keyed(from, reqid, m, key.as_deref())
    }

    /// A FrameSet that arrived encrypted under `key` (`None`: in clear).
    fn feed_keyed(
        &mut self,
        from: SocketAddr,
        reqid: Option<ReqId>,
        m: Message<'_>,
        key: Option<&str>,
    ) -> Vec<Effect> {
        self.lsn += 1;
        self.out.clear();
        self.d.handle(
            &Input {
                lsn: self.lsn,
                time_ms: self.now,
                event: Event::Received {
                    from,
                    reqid,
                    message: m,
                    key,
                },
            },
            &mut self.out,
        );
        self.d.check().unwrap();
        self.out.clone()
    }

    fn tick(&mut self, at: u64) -> Vec<Effect> {
        self.now = at;
        self.lsn += 1;
        self.out.clear();
        self.d.handle(
            &Input {
                lsn: self.lsn,
                time_ms: at,
                event: Event::Tick,
            },
            &mut self.out,
        );
        self.d.check().unwrap();
        self.out.clone()
    }

    fn startup(&mut self, n: u8, wallclock: u64) -> Vec<Effect> {
        self.startup_with(n, wallclock, None)
    }

    /// STARTUP announcing `features` (ours) or none (a nanoprobe).
    fn startup_with(&mut self, n: u8, wallclock: u64, features: Option<&str>) -> Vec<Effect> {
        let host = format!("host{n}");
        let net = format!("{{\"data\":{{\"eth0\":{{\"ipaddrs\":{{\"10.0.0.{n}/24\":{{}}}}}}}}}}");
        let id = key_of(n);
        let public = [n; 32];
        self.feed_keyed(
            addr(n),
            None,
            Message::Startup(Startup {
                hostname: &host,
                listen: addr(n),
                wallclock_us: wallclock,
                netconfig: &net,
                key: self.keyed.then_some((id.as_str(), &public)),
                features,
            }),
            None,
        )
    }

    /// Every deadline up to `ms` from now, one TICK each; their effects.
    fn tick_for(&mut self, ms: u64) -> Vec<Effect> {
        let until = self.now + ms;
        let mut all = Vec::new();
        while let Some(at) = self.d.next_deadline_ms().filter(|at| *at <= until) {
            all.extend(self.tick(at.max(self.now)));
        }
        self.now = until;
        all
    }

    /// ACKs everything in flight to every node until queues are empty.
    fn settle(&mut self) {
        for _ in 0..50 {
            let mut acks = Vec::new();
            for n in self.d.nodes() {
                if let Some((r, _)) = n.out.inflight().last()
                    && n.in_service()
                {
                    acks.push((n.addr, *r));
                }
            }
            if acks.is_empty() {
                return;
            }
            for (a, r) in acks {
                self.ack(a, r);
            }
        }
        panic!("queues never drained");
    }

    fn ack(&mut self, from: SocketAddr, request: u64) -> Vec<Effect> {
        // The session of the instructions it ACKs: an agent's ACK
        // echoes their REQID.
        let session = self
            .d
            .node_at(from)
            .map_or(7, |i| self.d.nodes()[i as usize].out.session(7));
        let r = ReqId {
            session,
            request,
            queue: 0,
        };
        self.feed(from, Some(r), Message::Ack)
    }

    fn report(&mut self, from: u8, m: Message<'_>) -> Vec<Effect> {
        self.lsn += 1;
        let r = ReqId {
            session: 99,
            request: self.lsn,
            queue: 0,
        };
        self.feed(addr(from), Some(r), m)
    }

    fn id(&self, n: u8) -> NodeId {
        self.d.node_at(addr(n)).unwrap()
    }

    fn health(&self, n: u8) -> Health {
        self.d.node(self.id(n)).unwrap().health
    }
}

/// The addresses `e` tells the daemon to forget; the rest of `e`.
fn split_forgets(e: &[Effect]) -> (Vec<SocketAddr>, Vec<Effect>) {
    let (f, rest): (Vec<&Effect>, Vec<&Effect>) =
        e.iter().partition(|e| matches!(e, Effect::Forget { .. }));
    let addrs = f
        .into_iter()
        .filter_map(|e| match e {
            Effect::Forget { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect();
    (addrs, rest.into_iter().cloned().collect())
}

fn notices(e: &[Effect]) -> Vec<Notice> {
    e.iter()
        .filter_map(|e| match e {
            Effect::Notice(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn sends_to(e: &[Effect], to: SocketAddr) -> Vec<Instruction> {
    e.iter()
        .filter_map(|e| match e {
            Effect::Send {
                to: t, instruction, ..
            } if *t == to => Some(instruction.clone()),
            _ => None,
        })
        .collect()
}

/// Four nodes in one subnet ring, settled.
fn fleet(k: u8) -> T {
    let mut t = T::new();
    for n in 1..=k {
        t.startup(n, 100 + u64::from(n));
        t.settle();
    }
    t
}

/// Switch a: hosts 1..=4 (two representatives); switch b: 5..=8.
fn two_switches() -> T {
    let mut t = T::new();
    for n in 1..=8u8 {
        t.startup(n, u64::from(n));
        t.settle();
        let sw = if n <= 4 { "sw-a" } else { "sw-b" };
        let frame = lldp_frame([2, 0, 0, 0, 0, n], sw, "p", "edge");
        t.report(
            n,
            Message::SwDiscover(crate::classify::SwDiscover {
                wallclock_us: 0,
                pktdata: &frame,
                interface: "eth0",
                hostname: "",
                discname: "lldp",
            }),
        );
        t.settle();
    }
    t
}

/// A representative of switch a and its monitors outside it.
fn rep_and_outside_monitors(t: &T) -> (u8, Vec<u8>) {
    let topo = t.d.topology();
    let rep = (1..=4u8).find(|n| topo.is_rep(t.id(*n))).unwrap();
    let monitors: Vec<u8> = topo
        .top()
        .neighbours(t.id(rep))
        .iter()
        .map(|m| host_of(t.d.node(*m).unwrap().addr))
        .filter(|h| *h > 4)
        .collect();
    (rep, monitors)
}

/// A nanoprobe's receiving side (fsqueue.c): the first session seen is
/// adopted at any request id, an older one dropped, a newer one starts
/// afresh at request 1; within a session, only the next request id is
/// delivered (later ones wait).
#[derive(Default)]
struct NanoInbound {
    session: u32,
    next: u64,
}

impl NanoInbound {
    fn deliver(&mut self, r: ReqId) -> bool {
        if self.session == 0 {
            self.session = r.session;
            self.next = r.request;
        } else if r.session < self.session {
            return false;
        } else if r.session > self.session {
            self.session = r.session;
            self.next = 1;
        }
        if r.request != self.next {
            return false;
        }
        self.next += 1;
        true
    }
}

/// A STARTUP for host1 from addr(9) (a clone of host1 elsewhere).
fn clone_startup(t: &mut T, wallclock: u64) -> Vec<Effect> {
    let net = "{}";
    t.feed(
        addr(9),
        None,
        Message::Startup(Startup {
            hostname: "host1",
            listen: addr(9),
            wallclock_us: wallclock,
            netconfig: net,
            key: None,
            features: None,
        }),
    )
}

/// Node n's HBSTATE as its agent would send it, having applied every
/// instruction sent to it (`applied`: the last request id).
fn hbstate(
    t: &mut T,
    n: u8,
    send: &[SocketAddr],
    expect: &[(SocketAddr, PeerStatus)],
) -> Vec<Effect> {
    let id = t.id(n);
    let node = t.d.node(id).unwrap();
    let applied = ReqId {
        session: 7,
        request: node.out.next_request() - 1,
        queue: 0,
    };
    let wallclock_us = node.incarnation;
    let states: Vec<crate::classify::PeerState> = expect
        .iter()
        .map(|&(peer, status)| crate::classify::PeerState {
            peer,
            status,
            since_ms: 0,
        })
        .collect();
    t.report(
        n,
        Message::HbState(HbState {
            wallclock_us,
            applied: Some(applied),
            expect: crate::classify::PeerStates::List(&states),
            send: crate::classify::Peers::List(send),
        }),
    )
}

/// The distinct peers node `id` heartbeats by the rings.
fn ring_peers(t: &T, id: NodeId) -> Vec<SocketAddr> {
    let set: BTreeSet<SocketAddr> =
        t.d.topology()
            .peers_of(id)
            .iter()
            .map(|&p| t.d.node(p).unwrap().addr)
            .collect();
    set.into_iter().collect()
}

fn up(list: &[SocketAddr]) -> Vec<(SocketAddr, PeerStatus)> {
    list.iter().map(|&a| (a, PeerStatus::Up)).collect()
}

fn nak(t: &mut T, n: u8) -> Vec<Effect> {
    t.report(
        n,
        Message::ActionNak {
            instr: ReqId {
                session: 7,
                request: 3,
                queue: 0,
            },
            code: 2,
            reason: "too many peers",
        },
    )
}

/// (request id, instruction) of every send to `to`.
fn sent_with_ids(e: &[Effect], to: SocketAddr) -> Vec<(u64, Instruction)> {
    e.iter()
        .filter_map(|e| match e {
            Effect::Send {
                to: t,
                reqid,
                instruction,
                ..
            } if *t == to => Some((reqid.request, instruction.clone())),
            _ => None,
        })
        .collect()
}
