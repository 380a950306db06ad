//! The decider's unit tests: scripted agents, simulated time.

use super::*;
use crate::classify::switch::lldp_frame;
use crate::decide::failure::ANSWER_MS;

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
}

impl T {
    fn new() -> T {
        T {
            d: Decider::new(DeciderConfig::new(CMA, 7)),
            lsn: 0,
            now: 1000,
            out: Vec::new(),
        }
    }

    fn feed(&mut self, from: SocketAddr, reqid: Option<ReqId>, m: Message<'_>) -> Vec<Effect> {
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
        self.feed(
            addr(n),
            None,
            Message::Startup(Startup {
                hostname: &host,
                listen: addr(n),
                wallclock_us: wallclock,
                netconfig: &net,
                key: None,
                features,
            }),
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

#[test]
fn startup_gets_config_then_ackstartup_then_its_ring() {
    let mut t = T::new();
    let e = t.startup(1, 5);
    assert_eq!(notices(&e), vec![Notice::Joined(0)]);
    // One in flight until the first ACK.
    assert_eq!(
        sends_to(&e, addr(1)),
        vec![Instruction::SetConfig(t.d.config().config_json())]
    );
    let e = t.ack(addr(1), 1);
    assert_eq!(sends_to(&e, addr(1)), vec![Instruction::AckStartup]);
    let e = t.startup(2, 6);
    // Not in a ring before it ACKs its SETCONFIG: nobody is told about it.
    assert!(sends_to(&e, addr(1)).is_empty());
    assert!(t.d.topology().group_of(t.id(2)).is_none());
    let e = t.ack(addr(2), 1);
    assert_eq!(
        sends_to(&e, addr(1)),
        vec![Instruction::Heartbeat {
            start: true,
            peers: vec![addr(2)]
        }]
    );
    let row = e.iter().find_map(|e| match e {
        Effect::Row(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(
        row.unwrap().group,
        Some(GroupKey::Subnet("10.0.0.0/24".into()))
    );
}

#[test]
fn a_startup_that_never_acks_never_enters_a_ring() {
    let mut t = fleet(3);
    // A STARTUP from an address that never answers (forged, or
    // unreachable): told its configuration, placed nowhere.
    let e = t.startup(9, 109);
    assert_eq!(notices(&e), vec![Notice::Joined(t.id(9))]);
    for n in 1..=3 {
        assert!(sends_to(&e, addr(n)).is_empty(), "node {n} told about it");
    }
    assert!(t.d.topology().group_of(t.id(9)).is_none());
    t.d.check().unwrap();
    // An ACK of something not sent to it does not count.
    t.ack(addr(9), 5);
    assert!(t.d.topology().group_of(t.id(9)).is_none());
    // Its ACK of the SETCONFIG places it.
    let e = t.ack(addr(9), 1);
    assert!(t.d.topology().group_of(t.id(9)).is_some());
    assert!((1..=3).any(|n| !sends_to(&e, addr(n)).is_empty()));
    t.d.check().unwrap();
}

#[test]
fn a_repeated_startup_is_answered_with_ackstartup_only() {
    let mut t = fleet(3);
    let e = t.startup(2, 102);
    assert!(notices(&e).is_empty());
    assert_eq!(sends_to(&e, addr(2)), vec![Instruction::AckStartup]);
    assert_eq!(
        e.iter()
            .filter(|e| matches!(e, Effect::Send { .. }))
            .count(),
        1
    );
    // Again while that one is in flight: nothing more.
    let e = t.startup(2, 102);
    assert!(e.is_empty());
    assert_eq!(t.d.counters().duplicate_startup, 2);
}

#[test]
fn a_new_wallclock_is_a_restart() {
    let mut t = fleet(4);
    let id = t.id(2);
    let session = t.d.node(id).unwrap().out.session(0);
    let e = t.startup(2, 999);
    assert_eq!(notices(&e), vec![Notice::Restarted(id)]);
    // What was queued for the old process is dropped: a new session.
    assert_eq!(t.d.node(id).unwrap().out.session(0), session + 1);
    // Its old neighbours stop expecting it (the old incarnation).
    let stops: Vec<_> = [1u8, 3]
        .iter()
        .flat_map(|n| sends_to(&e, addr(*n)))
        .collect();
    assert!(stops.iter().any(
        |i| matches!(i, Instruction::Heartbeat { start: false, peers } if peers.contains(&addr(2)))
    ));
    assert_eq!(t.d.node(id).unwrap().incarnation, 999);
    t.settle();
}

#[test]
fn two_monitors_confirm_a_death_and_the_ring_closes() {
    let mut t = fleet(4);
    // Ring order 1 2 3 4: node 2 is watched by 1 and 3.
    let e = t.report(1, Message::HbDead { peer: addr(2) });
    assert_eq!(
        notices(&e),
        vec![Notice::Suspected {
            node: t.id(2),
            reporter: t.id(1)
        }]
    );
    assert_eq!(sends_to(&e, addr(2)), vec![Instruction::Probe]);
    t.now += 1500;
    let e = t.report(3, Message::HbDead { peer: addr(2) });
    assert!(notices(&e).contains(&Notice::Dead {
        node: t.id(2),
        cause: DeathCause::TwoMonitors {
            first: t.id(1),
            second: t.id(3)
        }
    }));
    // Nothing more is sent to it, and nothing retransmitted.
    assert!(t.d.node(t.id(2)).unwrap().out.settled());
    assert!(!t.d.topology().adjacent(t.id(1), t.id(2)));
    assert!(t.d.topology().adjacent(t.id(1), t.id(3)));
}

#[test]
fn a_probe_answer_names_a_path_fault() {
    let mut t = fleet(4);
    t.report(1, Message::HbDead { peer: addr(2) });
    let probe = t.d.node(t.id(2)).unwrap().out.inflight().last().unwrap().0;
    let e = t.ack(addr(2), probe);
    assert_eq!(
        notices(&e),
        vec![Notice::PathFault {
            node: t.id(2),
            reporter: t.id(1)
        }]
    );
    assert_eq!(t.health(2), Health::Up);
}

#[test]
fn a_silent_probe_confirms_after_the_deadline() {
    let mut t = fleet(4);
    t.report(1, Message::HbDead { peer: addr(2) });
    let deadline = t.d.next_deadline_ms().unwrap();
    assert!(notices(&t.tick(deadline - 1)).is_empty());
    // Window over: disputed; then the probe deadline.
    let mut died = false;
    while let Some(at) = t.d.next_deadline_ms() {
        died |= notices(&t.tick(at))
            .iter()
            .any(|n| matches!(n, Notice::Dead { .. }));
    }
    assert!(died);
    assert!(matches!(
        t.health(2),
        Health::Dead(DeathCause::Probe { .. })
    ));
}

#[test]
fn back_alive_cancels_the_suspicion() {
    let mut t = fleet(4);
    t.report(1, Message::HbDead { peer: addr(2) });
    let e = t.report(
        1,
        Message::HbBackAlive {
            peer: addr(2),
            elapsed_us: 0,
        },
    );
    assert_eq!(
        notices(&e),
        vec![Notice::FalseAlarm {
            node: t.id(2),
            reporter: t.id(1)
        }]
    );
}

#[test]
fn a_report_from_a_peer_not_yet_watching_only_probes() {
    let mut t = fleet(3);
    // 4 joins; its instructions are not ACKed yet.
    t.startup(4, 104);
    t.report(1, Message::HbDead { peer: addr(4) });
    assert!(matches!(t.health(4), Health::Disputed { .. }));
    // A second such report cannot confirm.
    let e = t.report(3, Message::HbDead { peer: addr(4) });
    assert!(!notices(&e).iter().any(|n| matches!(n, Notice::Dead { .. })));
}

#[test]
fn shutdown_leaves_cleanly_and_a_martian_from_it_is_told_to_stop() {
    let mut t = fleet(4);
    let e = t.report(2, Message::HbShutdown { hostname: "host2" });
    assert_eq!(notices(&e), vec![Notice::Left(t.id(2))]);
    assert_eq!(t.health(2), Health::Left);
    t.settle();
    let e = t.report(1, Message::HbMartian { peer: addr(2) });
    assert!(notices(&e).is_empty());
    assert_eq!(
        sends_to(&e, addr(2)),
        vec![Instruction::StopSending(vec![addr(1)])]
    );
    // Reports about a node that left change nothing.
    let e = t.report(3, Message::HbDead { peer: addr(2) });
    assert!(notices(&e).is_empty());
}

#[test]
fn martians_between_live_nodes_are_repaired_once_per_interval() {
    // Five nodes, one group: a ring 1-2-3-4-5; 1 and 3 are no
    // neighbours.
    let mut t = fleet(5);
    assert!(!t.d.topology().adjacent(t.id(1), t.id(3)));
    // 1 hears 3: 3 has a sender too many and is told to stop.
    let e = t.report(1, Message::HbMartian { peer: addr(3) });
    assert_eq!(
        sends_to(&e, addr(3)),
        vec![Instruction::StopSending(vec![addr(1)])]
    );
    assert_eq!(
        notices(&e),
        vec![Notice::Drift {
            node: t.id(3),
            repairs: 1
        }]
    );
    t.settle();
    // Again within the rate limit: counted, not repeated.
    t.now += 10_000;
    let e = t.report(1, Message::HbMartian { peer: addr(3) });
    assert!(sends_to(&e, addr(3)).is_empty());
    // 1 should watch 2 yet hears it as a martian: it lost its listener
    // and is told EXPECTHB again.
    assert!(t.d.topology().adjacent(t.id(1), t.id(2)));
    let e = t.report(1, Message::HbMartian { peer: addr(2) });
    assert_eq!(
        sends_to(&e, addr(1)),
        vec![Instruction::Half {
            send: false,
            start: true,
            peers: vec![addr(2)]
        }]
    );
    t.settle();
    // After the interval the pair may be repaired again.
    t.now += 30_000;
    let e = t.report(1, Message::HbMartian { peer: addr(3) });
    assert_eq!(sends_to(&e, addr(3)).len(), 1);
    assert_eq!(t.d.counters().martian_repairs, 3);
    assert_eq!(t.d.node(t.id(3)).unwrap().drift, 2);
}

#[test]
fn a_martian_during_a_ring_change_is_left_alone() {
    let mut t = fleet(4);
    // A join in flight: 5 ACKed its SETCONFIG, not its ring yet.
    t.startup(5, 105);
    t.ack(addr(5), 1);
    let e = t.report(1, Message::HbMartian { peer: addr(5) });
    assert!(sends_to(&e, addr(5)).is_empty() && sends_to(&e, addr(1)).is_empty());
    assert_eq!(t.d.counters().martian_repairs, 0);
}

#[test]
fn a_martian_resurrects_the_dead_and_its_old_heartbeats_are_stopped_first() {
    let mut t = fleet(4);
    t.report(1, Message::HbDead { peer: addr(2) });
    t.report(3, Message::HbDead { peer: addr(2) });
    // Its probe goes unanswered.
    t.tick_for(ANSWER_MS);
    assert!(matches!(t.health(2), Health::Dead(_)));
    t.settle();
    let e = t.report(1, Message::HbMartian { peer: addr(2) });
    assert_eq!(notices(&e), vec![Notice::Resurrected(t.id(2))]);
    let first = &sends_to(&e, addr(2))[0];
    assert!(matches!(first, Instruction::Heartbeat { start: false, .. }));
    t.settle();
    assert_eq!(t.health(2), Health::Up);
    // A martian about a live, settled node is repaired, not a
    // resurrection.
    let e = t.report(1, Message::HbMartian { peer: addr(3) });
    assert!(!notices(&e).contains(&Notice::Resurrected(t.id(3))));
    assert_eq!(t.d.counters().martian_repairs, 1);
}

#[test]
fn swdiscover_moves_a_node_into_its_switch_ring() {
    let mut t = fleet(3);
    let frame = lldp_frame([2, 0, 0, 0, 0, 1], "sw-a", "p1", "edge");
    let e = t.report(
        2,
        Message::SwDiscover(crate::classify::SwDiscover {
            wallclock_us: 0,
            pktdata: &frame,
            interface: "eth0",
            hostname: "host2",
            discname: "lldp",
        }),
    );
    assert_eq!(notices(&e), vec![Notice::Moved(t.id(2))]);
    assert_eq!(
        t.d.topology().group_of(t.id(2)),
        Some(&GroupKey::Switch("sw-a".into()))
    );
    let e = t.report(
        2,
        Message::SwDiscover(crate::classify::SwDiscover {
            wallclock_us: 0,
            pktdata: b"garbage",
            interface: "eth0",
            hostname: "host2",
            discname: "lldp",
        }),
    );
    assert!(e.is_empty());
    assert_eq!(t.d.counters().bad_switch_frame, 1);
    t.settle();
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

#[test]
fn two_monitors_at_once_wait_for_the_group_before_naming_a_switch_fault() {
    // Both outside monitors report the representative within a
    // millisecond: its group was probed at the first report and could
    // not have answered yet.
    for group_answers in [true, false] {
        let mut t = two_switches();
        let (rep, monitors) = rep_and_outside_monitors(&t);
        assert_eq!(monitors.len(), 2, "a top ring of four");
        t.now += 30_000;
        t.report(monitors[0], Message::HbDead { peer: addr(rep) });
        t.report(monitors[1], Message::HbDead { peer: addr(rep) });
        t.tick_for(ANSWER_MS);
        assert!(
            matches!(t.health(rep), Health::Disputed { .. }),
            "{:?}",
            t.health(rep)
        );
        if group_answers {
            // The group answers its probes: the switch is up, the
            // representative is dead, by the two monitors.
            t.now += 50;
            let mut all = Vec::new();
            for n in (1..=4u8).filter(|n| *n != rep) {
                let probe =
                    t.d.node(t.id(n))
                        .unwrap()
                        .out
                        .inflight()
                        .find(|(_, i)| *i == Instruction::Probe)
                        .map(|(r, _)| *r);
                if let Some(r) = probe {
                    all.extend(notices(&t.ack(addr(n), r)));
                }
            }
            all.extend(notices(&t.tick_for(20_000)));
            assert!(
                all.iter().any(|n| matches!(
                    n,
                    Notice::Dead {
                        cause: DeathCause::TwoMonitors { .. },
                        ..
                    }
                )),
                "{all:?}"
            );
            assert!(!all.iter().any(|n| matches!(n, Notice::SwitchFault { .. })));
        } else {
            // Silent through the window: the switch is cut off.
            let all = notices(&t.tick_for(20_000));
            assert!(
                all.iter().any(|n| matches!(n, Notice::SwitchFault { .. })),
                "{all:?}"
            );
            assert!(!all.iter().any(|n| matches!(n, Notice::Dead { .. })));
            assert!(matches!(t.health(rep), Health::Unreachable { .. }));
        }
    }
}

#[test]
fn a_representative_reported_with_its_group_silent_is_cut_off_not_dead() {
    let mut t = two_switches();
    let topo = t.d.topology();
    let rep = (1..=4u8).find(|n| topo.is_rep(t.id(*n))).unwrap();
    let monitors: Vec<SocketAddr> = topo
        .top()
        .neighbours(t.id(rep))
        .iter()
        .map(|m| t.d.node(*m).unwrap().addr)
        .filter(|a| host_of(*a) > 4)
        .collect();
    assert!(!monitors.is_empty());
    // Switch a goes dark: only outside monitors report, nobody in it
    // answers a probe.
    t.now += 30_000;
    let m0 = host_of(monitors[0]);
    t.report(m0, Message::HbDead { peer: addr(rep) });
    // Through the window and the probe deadline.
    let all = notices(&t.tick_for(20_000));
    assert!(all.contains(&Notice::CutOff(t.id(rep))), "{all:?}");
    assert!(all.iter().any(|n| matches!(
        n,
        Notice::SwitchFault { group, .. } if *group == GroupKey::Switch("sw-a".into())
    )));
    assert!(!all.iter().any(|n| matches!(n, Notice::Dead { .. })));
    // Every member of switch a is unreachable, one verdict names them.
    for n in 1..=4u8 {
        assert!(
            matches!(t.health(n), Health::Unreachable { .. }),
            "host{n}: {:?}",
            t.health(n)
        );
    }
    let fault = all
        .iter()
        .find_map(|n| match n {
            Notice::SwitchFault {
                nodes, reported, ..
            } => Some((nodes.len(), reported.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(fault.0, 4);
    assert!(fault.1.contains(&t.id(rep)));
    // The switch comes back: a member is heard (an HBDEAD about its
    // switch-mate, queued during the cut and resent now); the switch
    // is healed, every member must answer a probe.
    let other = (1..=4u8).find(|n| *n != rep).unwrap();
    let mate = (1..=4u8).find(|n| *n != rep && *n != other).unwrap();
    t.now += 10_000;
    let e = t.report(other, Message::HbDead { peer: addr(mate) });
    assert!(
        notices(&e)
            .iter()
            .any(|n| matches!(n, Notice::Healed { nodes, .. } if nodes.len() == 4)),
        "{e:?}"
    );
    assert!(matches!(
        t.health(rep),
        Health::Unreachable {
            probe_until_ms: Some(_),
            ..
        }
    ));
    // A second switch-mate's report about the same node, also made
    // during the cut, pairs with nothing.
    let third = (1..=4u8).find(|n| ![rep, other, mate].contains(n)).unwrap();
    let e = t.report(third, Message::HbDead { peer: addr(mate) });
    assert!(!notices(&e).iter().any(|n| matches!(n, Notice::Dead { .. })));
    assert!(t.d.counters().reports_across_cut >= 1);
    // Each answers its probe: back in service, nobody ever dead.
    for n in [rep, mate] {
        let probe =
            t.d.node(t.id(n))
                .unwrap()
                .out
                .inflight()
                .find(|(_, i)| *i == Instruction::Probe)
                .map(|(r, _)| *r)
                .expect("probed");
        let e = t.ack(addr(n), probe);
        assert!(
            notices(&e)
                .iter()
                .any(|x| matches!(x, Notice::Reconnected(i) if *i == t.id(n))),
            "{e:?}"
        );
    }
    for n in 1..=8u8 {
        assert_eq!(t.health(n), Health::Up, "host{n}");
    }
    // Later reports still made across the cut, once more: a probe, no
    // verdict; answered without a path fault.
    t.now += 1000;
    let e = t.report(5, Message::HbDead { peer: addr(other) });
    assert!(notices(&e).is_empty(), "{e:?}");
    t.settle();
    assert_eq!(t.health(other), Health::Up);
    // One dead time plus the window after the heal, reports count again.
    t.now += 40_000;
    let e = t.report(other, Message::HbDead { peer: addr(mate) });
    assert!(
        notices(&e)
            .iter()
            .any(|n| matches!(n, Notice::Suspected { .. })),
        "{e:?}"
    );
}

#[test]
fn a_dead_representative_whose_group_answers_is_confirmed() {
    let mut t = T::new();
    for n in 1..=6u8 {
        t.startup(n, u64::from(n));
        t.settle();
    }
    // One subnet group: the representatives are ring members too; a
    // report from a group neighbour plus a silent probe confirms.
    let rep = (1..=6u8).find(|n| t.d.topology().is_rep(t.id(*n))).unwrap();
    let watcher = t.d.topology().peers_of(t.id(rep))[0];
    let w = host_of(t.d.node(watcher).unwrap().addr);
    t.report(w, Message::HbDead { peer: addr(rep) });
    // The sampled members answer their probes.
    for n in 1..=6u8 {
        if n != rep {
            t.report(
                n,
                Message::HbBackAlive {
                    peer: addr(n),
                    elapsed_us: 0,
                },
            );
        }
    }
    // Through the window and the probe deadline.
    let all = notices(&t.tick_for(20_000));
    assert!(
        all.iter().any(|n| matches!(n, Notice::Dead { .. })),
        "{all:?}"
    );
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

#[test]
fn a_live_agent_declared_dead_is_moved_to_a_new_session_and_its_ring_reasserted() {
    let mut t = fleet(4);
    let mut nano = NanoInbound::default();
    for n in t.d.nodes() {
        if n.addr == addr(2) {
            // Everything it was sent so far was delivered, in order.
            for r in 1..n.out.next_request() {
                assert!(nano.deliver(ReqId {
                    session: 7,
                    request: r,
                    queue: 0
                }));
            }
        }
    }
    let old_peers = ring_peers(&t, t.id(2));
    // Node 2 is alive but both monitors call it dead (their heartbeats
    // from it were lost): declared dead. An instruction in flight to it
    // is dropped with its queue.
    t.report(1, Message::HbDead { peer: addr(2) });
    t.report(3, Message::HbDead { peer: addr(2) });
    // Its probe goes unanswered.
    t.tick_for(ANSWER_MS);
    assert!(matches!(t.health(2), Health::Dead(_)));
    // Its process still talks to the CMA: the verdict was wrong.
    t.now += 1000;
    let e = t.report(2, Message::HbDead { peer: addr(1) });
    assert!(notices(&e).contains(&Notice::Resurrected(t.id(2))), "{e:?}");
    let sent: Vec<(ReqId, Instruction)> = e
        .iter()
        .filter_map(|x| match x {
            Effect::Send {
                to,
                reqid,
                instruction,
                ..
            } if *to == addr(2) => Some((*reqid, instruction.clone())),
            _ => None,
        })
        .collect();
    // A new session from request 1, which the nanoprobe delivers at
    // once (it does not wait for the request ids dropped), and first
    // the STOP of whatever it heartbeated (rule 1), then its ring.
    assert_eq!(sent[0].0.session, 8);
    assert_eq!(sent[0].0.request, 1);
    assert!(nano.deliver(sent[0].0));
    match &sent[0].1 {
        Instruction::Heartbeat {
            start: false,
            peers,
        } => {
            for p in &old_peers {
                assert!(peers.contains(p), "{p} not stopped: {peers:?}");
            }
        }
        other => panic!("{other:?}"),
    }
    t.settle();
    assert_eq!(t.health(2), Health::Up);
    assert!(!ring_peers(&t, t.id(2)).is_empty());
    // Its ACKs of the new session count; one of the old session is
    // stray.
    let stray = t.d.counters().stray_ack;
    t.feed(
        addr(2),
        Some(ReqId {
            session: 7,
            request: 1,
            queue: 0,
        }),
        Message::Ack,
    );
    assert_eq!(t.d.counters().stray_ack, stray + 1);
}

#[test]
fn switch_discovery_is_asked_for_every_nic_with_carrier() {
    let mut t = T::new();
    let net = r#"{"data":{"eth0":{"carrier":true,"ipaddrs":{"10.0.0.1/24":{}}},"eth1":{"carrier":1,"ipaddrs":{}},"eth2":{"carrier":false},"lo":{"carrier":true,"ipaddrs":{"127.0.0.1/8":{}}},"lo2":{"carrier":true,"type":772}}}"#;
    let startup = |t: &mut T, wallclock: u64| {
        t.feed(
            addr(1),
            None,
            Message::Startup(Startup {
                hostname: "host1",
                listen: addr(1),
                wallclock_us: wallclock,
                netconfig: net,
                key: None,
                features: None,
            }),
        );
    };
    let asked = |t: &T| -> Vec<Instruction> {
        let n = t.d.node(t.id(1)).unwrap();
        n.out
            .inflight()
            .map(|x| x.1.clone())
            .filter(|i| matches!(i, Instruction::SwitchDiscovery(_)))
            .collect()
    };
    startup(&mut t, 1);
    // SETCONFIG, ACKSTARTUP, then the discovery: ACK one by one.
    for r in 1..=2 {
        t.ack(addr(1), r);
    }
    assert_eq!(
        asked(&t),
        vec![Instruction::SwitchDiscovery(vec![
            "eth0".into(),
            "eth1".into()
        ])]
    );
    t.settle();
    // A later netconfig names a new NIC: asked for that one only.
    let later =
        r#"{"discovertype":"netconfig","data":{"eth0":{"carrier":true},"eth3":{"carrier":true}}}"#;
    let e = t.report(
        1,
        Message::JsDiscovery {
            wallclock_us: None,
            json: later,
        },
    );
    assert_eq!(
        sends_to(&e, addr(1)),
        vec![Instruction::SwitchDiscovery(vec!["eth3".into()])]
    );
    t.settle();
    // A restart asks again.
    startup(&mut t, 2);
    t.ack(addr(1), 1);
    t.ack(addr(1), 2);
    assert_eq!(asked(&t).len(), 1);
    assert_eq!(
        switch_nics_of("not json"),
        Vec::<String>::new(),
        "garbage names no NIC"
    );
}

#[test]
fn connshut_resets_the_agent_and_is_answered_sequenced() {
    let mut t = fleet(2);
    let session = t.d.node(t.id(1)).unwrap().out.session(0);
    let e = t.report(1, Message::ConnShut);
    assert_eq!(sends_to(&e, addr(1)), vec![Instruction::ConnShut]);
    // Our side keeps its session: the CONNSHUT goes after what is in flight.
    assert_eq!(t.d.node(t.id(1)).unwrap().out.session(0), session);
    assert_eq!(t.d.node(t.id(1)).unwrap().inbound, None);
}

#[test]
fn a_startup_for_another_address_is_refused() {
    let mut t = fleet(2);
    // "host9" claims node 1's address from elsewhere.
    let e = t.feed(
        addr(9),
        None,
        Message::Startup(Startup {
            hostname: "host9",
            listen: addr(1),
            wallclock_us: 1,
            netconfig: "{}",
            key: None,
            features: None,
        }),
    );
    assert!(e.is_empty());
    assert_eq!(t.d.counters().startup_mismatch, 1);
    assert_eq!(t.health(1), Health::Up);
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

#[test]
fn a_clone_of_a_live_host_is_refused_once_the_host_answers() {
    let mut t = fleet(3);
    let e = clone_startup(&mut t, 99);
    // Nothing for the clone; the node where it is gets probed.
    assert!(sends_to(&e, addr(9)).is_empty());
    assert_eq!(sends_to(&e, addr(1)), vec![Instruction::Probe]);
    let probe = t.d.node(t.id(1)).unwrap().out.next_request() - 1;
    let e = t.ack(addr(1), probe);
    assert_eq!(
        notices(&e),
        vec![Notice::Conflict {
            node: t.id(1),
            kept: addr(1),
            refused: addr(9),
        }]
    );
    // Later STARTUPs of the clone change nothing, and say nothing.
    for k in 1..5 {
        t.now += 5_000 * k;
        let e = clone_startup(&mut t, 99 + k);
        assert!(e.is_empty(), "{e:?}");
    }
    let n = t.d.node(t.id(1)).unwrap();
    assert_eq!(
        (n.addr, n.health, n.conflict),
        (addr(1), Health::Up, Some(addr(9)))
    );
    assert_eq!(t.d.counters().name_conflicts, 5);
}

#[test]
fn a_host_that_moved_takes_its_node_once_the_old_address_stays_silent() {
    let mut t = fleet(3);
    let id = t.id(1);
    clone_startup(&mut t, 99);
    // Within the window: still waiting.
    t.now += 1;
    assert!(clone_startup(&mut t, 99).is_empty());
    t.now += t.d.fcfg.window_ms;
    let e = clone_startup(&mut t, 99);
    assert!(notices(&e).contains(&Notice::Restarted(id)));
    assert_eq!(t.d.node(id).unwrap().addr, addr(9));
    assert!(
        matches!(sends_to(&e, addr(9))[..], [Instruction::SetConfig(_)]),
        "{e:?}"
    );
}

#[test]
fn an_empty_or_overlong_host_name_is_refused_and_counted() {
    let mut t = T::new();
    for host in [String::new(), "h".repeat(HOSTNAME_MAX + 1)] {
        let e = t.feed(
            addr(1),
            None,
            Message::Startup(Startup {
                hostname: &host,
                listen: addr(1),
                wallclock_us: 1,
                netconfig: "{}",
                key: None,
                features: None,
            }),
        );
        assert!(e.is_empty());
    }
    assert_eq!(t.d.counters().bad_hostname, 2);
    assert!(t.d.nodes().is_empty());
}

#[test]
fn unknown_senders_and_peers_are_counted() {
    let mut t = fleet(2);
    t.feed(addr(50), None, Message::HbDead { peer: addr(1) });
    t.report(1, Message::HbDead { peer: addr(60) });
    t.ack(addr(1), 10_000);
    let c = t.d.counters();
    assert_eq!((c.unknown_sender, c.unknown_peer, c.stray_ack), (1, 1, 1));
}

#[test]
fn receiving_positions_are_kept_for_the_io_thread() {
    let mut t = fleet(2);
    t.report(
        1,
        Message::HbLate {
            peer: addr(2),
            elapsed_us: 5,
        },
    );
    let pos = t.d.inbound_positions();
    assert!(pos.iter().any(|(a, s, _)| *a == addr(1) && *s == 99));
}

#[test]
fn export_import_round_trip() {
    let mut t = fleet(5);
    t.report(1, Message::HbDead { peer: addr(2) });
    let back = Decider::import(&t.d.export()).unwrap();
    assert!(back == t.d);
    assert!(Decider::import(b"{not json").is_err());
}

#[test]
fn the_cheap_invariants_see_a_broken_node_and_handle_stops_on_it() {
    let mut t = fleet(4);
    assert_eq!(t.d.check_changed(&[]), Ok(()));
    let row = Effect::Row(Box::new(t.d.row(2)));
    assert_eq!(t.d.check_changed(std::slice::from_ref(&row)), Ok(()));
    // Node 2 taken out of its ring while in service.
    let key = t.d.topo.group_of(2).cloned().unwrap();
    let _ = t.d.topo.leave(2);
    assert!(t.d.check_changed(std::slice::from_ref(&row)).is_err());
    let _ = t.d.topo.join(2, key);
    assert_eq!(t.d.check_changed(std::slice::from_ref(&row)), Ok(()));
    // An index that lost a node.
    let a = t.d.nodes[2].addr;
    t.d.by_addr.remove(&a);
    assert!(t.d.check_changed(&[]).is_err());
    let d = t.d.clone();
    let stopped = std::panic::catch_unwind(move || {
        let mut d = d;
        d.handle(
            &Input {
                lsn: 1000,
                time_ms: 1,
                event: Event::Tick,
            },
            &mut Vec::new(),
        );
    });
    assert!(stopped.is_err(), "handle went on with a broken index");
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

#[test]
fn an_hbstate_matching_the_rings_changes_nothing() {
    let mut t = fleet(4);
    let peers: Vec<SocketAddr> = ring_peers(&t, t.id(1));
    let e = hbstate(&mut t, 1, &peers, &up(&peers));
    assert!(sends_to(&e, addr(1)).is_empty(), "{e:?}");
    assert_eq!(t.d.counters().audits, 1);
    assert_eq!(t.d.counters().drift, 0);
    let n = t.d.node(t.id(1)).unwrap();
    assert_eq!(n.last_state.as_ref().unwrap().sending, peers.len() as u32);
}

#[test]
fn drift_is_repaired_with_exactly_the_difference() {
    let mut t = fleet(6);
    let id = t.id(1);
    let peers: Vec<SocketAddr> = ring_peers(&t, id);
    let q = peers[1];
    let stranger = (2..=6).map(addr).find(|a| !peers.contains(a)).unwrap();
    // It lost p entirely, expects q without sending to it, and
    // heartbeats a node it should not.
    let e = hbstate(
        &mut t,
        1,
        &[stranger],
        &[(q, PeerStatus::Up), (stranger, PeerStatus::Up)],
    );
    // Every ring peer but q missing, q half, the stranger extra.
    let repairs = (peers.len() + 1) as u32;
    assert_eq!(notices(&e), vec![Notice::Drift { node: id, repairs }]);
    let mut got = sends_to(&e, addr(1));
    while let Some((r, _)) = t.d.node(id).unwrap().out.inflight().last().cloned() {
        let e = t.ack(addr(1), r);
        got.extend(sends_to(&e, addr(1)));
    }
    let n = t.d.node(id).unwrap();
    assert!(n.out.settled());
    assert_eq!(n.drift, 1);
    let missing: Vec<SocketAddr> = peers.iter().copied().filter(|&p| p != q).collect();
    let mut want = vec![
        Instruction::Heartbeat {
            start: false,
            peers: vec![stranger],
        },
        Instruction::Heartbeat {
            start: true,
            peers: missing,
        },
        Instruction::Half {
            send: true,
            start: true,
            peers: vec![q],
        },
    ];
    want.sort_by_key(|i| format!("{i:?}"));
    got.sort_by_key(|i| format!("{i:?}"));
    assert_eq!(got, want);
    // The next HBSTATE, taken after the repairs, matches.
    let e = hbstate(&mut t, 1, &peers, &up(&peers));
    assert!(sends_to(&e, addr(1)).is_empty(), "{e:?}");
    assert_eq!(t.d.counters().drift, 1);
}

#[test]
fn an_hbstate_older_than_the_instructions_in_flight_is_not_audited() {
    let mut t = fleet(3);
    // Node 4 joins (its SETCONFIG ACKed): node 1 is told about it, not
    // yet ACKed.
    t.startup(4, 104);
    t.ack(addr(4), 1);
    let id = t.id(1);
    let n = t.d.node(id).unwrap();
    let in_flight = !n.out.settled();
    let state = ReqId {
        session: 7,
        request: n.out.acked(),
        queue: 0,
    };
    let wallclock_us = n.incarnation;
    let e = t.report(
        1,
        Message::HbState(HbState {
            wallclock_us,
            applied: Some(state),
            expect: crate::classify::PeerStates::List(&[]),
            send: crate::classify::Peers::List(&[]),
        }),
    );
    if in_flight {
        assert!(sends_to(&e, addr(1)).is_empty(), "{e:?}");
        assert_eq!(t.d.counters().audits, 0);
        assert_eq!(t.d.counters().audits_deferred, 1);
    }
    // Another incarnation's state is never audited.
    t.settle();
    let e = t.report(
        1,
        Message::HbState(HbState {
            wallclock_us: 1,
            applied: None,
            expect: crate::classify::PeerStates::List(&[]),
            send: crate::classify::Peers::List(&[]),
        }),
    );
    assert!(sends_to(&e, addr(1)).is_empty());
    assert_eq!(t.d.counters().audits, 0);
}

#[test]
fn a_dead_peer_in_hbstate_counts_as_a_report() {
    let mut t = fleet(4);
    let id = t.id(1);
    let peers: Vec<SocketAddr> = ring_peers(&t, id);
    let victim = peers[0];
    let mut states = up(&peers);
    states[0].1 = PeerStatus::Dead;
    hbstate(&mut t, 1, &peers, &states);
    let v = t.d.node_at(victim).unwrap();
    assert!(
        matches!(t.d.node(v).unwrap().health, Health::Suspect { .. }),
        "{:?}",
        t.d.node(v).unwrap().health
    );
}

#[test]
fn resume_asks_the_agents_that_speak_hbstate() {
    let mut t = T::new();
    t.startup_with(1, 5, Some("hbstate,actionnak,stats"));
    t.startup(2, 6);
    t.settle();
    t.lsn += 1;
    let mut out = Vec::new();
    t.d.handle(
        &Input {
            lsn: t.lsn,
            time_ms: t.now,
            event: Event::Resume,
        },
        &mut out,
    );
    assert_eq!(sends_to(&out, addr(1)), vec![Instruction::StateRequest]);
    assert!(
        sends_to(&out, addr(2)).is_empty(),
        "a real nanoprobe is never asked"
    );
}

#[test]
fn a_refusal_is_kept_and_told() {
    let mut t = fleet(2);
    let id = t.id(1);
    let e = nak(&mut t, 1);
    assert!(notices(&e).contains(&Notice::Refused {
        node: id,
        code: 2,
        reason: "too many peers".into()
    }));
    assert_eq!(
        t.d.node(id).unwrap().refused,
        Some((2, "too many peers".into()))
    );
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

#[test]
fn refusals_are_retried_with_backoff_then_the_node_is_degraded() {
    let mut t = T::new();
    for n in 1..=5u8 {
        t.startup_with(n, 100 + u64::from(n), Some("hbstate,actionnak"));
        t.settle();
    }
    let id = t.id(1);
    // First refusal: an HBSTATEREQ 2 retransmit intervals (4 s) later.
    nak(&mut t, 1);
    assert!(t.d.node(id).unwrap().degraded.is_none());
    let e = t.tick(t.now + 3999);
    assert!(sends_to(&e, addr(1)).is_empty());
    let e = t.tick(t.now + 1);
    assert_eq!(sends_to(&e, addr(1)), vec![Instruction::StateRequest]);
    t.settle();
    // Second: 8 s.
    nak(&mut t, 1);
    let e = t.tick(t.now + 8000);
    assert_eq!(sends_to(&e, addr(1)), vec![Instruction::StateRequest]);
    t.settle();
    // Third: degraded, out of the rings; its ring closes around it.
    let e = nak(&mut t, 1);
    assert!(
        notices(&e)
            .iter()
            .any(|n| matches!(n, Notice::Degraded { node, .. } if *node == id))
    );
    let n = t.d.node(id).unwrap();
    assert!(n.degraded.as_deref().unwrap().contains("too many peers"));
    assert_eq!(n.health, Health::Up, "still in service");
    assert!(t.d.topology().group_of(id).is_none());
    t.settle();
    for m in 2..=5u8 {
        assert!(!ring_peers(&t, t.id(m)).contains(&addr(1)));
    }
    t.d.check().unwrap();
    // An HBSTATE from it now: it should heartbeat nobody.
    let e = hbstate(&mut t, 1, &[addr(2)], &up(&[addr(2)]));
    assert!(
        sends_to(&e, addr(1))
            .iter()
            .any(|i| matches!(i, Instruction::Heartbeat { start: false, .. }))
    );
    // A restart (new STARTUP) places it again, once it ACKs.
    t.startup_with(1, 999, Some("hbstate"));
    t.settle();
    assert!(t.d.node(id).unwrap().degraded.is_none());
    assert!(t.d.topology().group_of(id).is_some());
}

#[test]
fn subnet_of_reads_netconfig() {
    let j = r#"{"data":{"eth0":{"ipaddrs":{"192.0.2.2/24":{},"fd00::2/64":{}}}}}"#;
    assert_eq!(
        subnet_of(j, "192.0.2.2".parse().unwrap()),
        Some("192.0.2.0/24".into())
    );
    assert_eq!(
        subnet_of(j, "fd00::2".parse().unwrap()),
        Some("fd00::/64".into())
    );
    assert_eq!(subnet_of(j, "192.0.2.3".parse().unwrap()), None);
    assert_eq!(subnet_of("not json", "192.0.2.2".parse().unwrap()), None);
    let odd = r#"{"data":{"eth0":{"ipaddrs":{"192.0.2.2/99":{},"x/24":{}}}}}"#;
    assert_eq!(subnet_of(odd, "192.0.2.2".parse().unwrap()), None);
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

#[test]
fn an_unanswered_stranger_is_resent_with_back_off_then_given_up() {
    let mut t = fleet(3);
    let e = t.startup(9, 5);
    let first = sent_with_ids(&e, addr(9));
    assert_eq!(first.len(), 1, "its SETCONFIG");
    let start = t.now;
    // It never answers: the same request again and again, 2 s apart three
    // times, then backing off, then nothing.
    let mut times = vec![start];
    let mut all = Vec::new();
    while let Some(at) = t.d.next_deadline_ms().filter(|at| *at <= start + 600_000) {
        let e = t.tick(at);
        for x in sent_with_ids(&e, addr(9)) {
            assert_eq!(x, first[0], "the same instruction, the same request id");
            times.push(at - start);
        }
        all.extend(notices(&e));
    }
    times[0] = 0;
    assert_eq!(
        times,
        vec![
            0, 2000, 4000, 6000, 10_000, 18_000, 26_000, 34_000, 42_000, 50_000, 58_000, 66_000
        ]
    );
    let id = t.id(9);
    assert_eq!(
        all,
        vec![Notice::GaveUp {
            node: id,
            tries: 12
        }]
    );
    assert_eq!(t.d.counters().gave_up, 1);
    assert_eq!(t.d.counters().retransmits, 11);
    assert!(t.d.node(id).unwrap().gave_up);
    assert!(t.d.topology().group_of(id).is_none());
    assert!(t.d.node(id).unwrap().out.settled());
    // Its STARTUP again (the agent was only slow to be reachable): it is
    // greeted afresh, in a new session, and placed once it ACKs.
    let e = t.startup(9, 5);
    assert_eq!(notices(&e), vec![Notice::Reconnected(id)]);
    assert!(matches!(
        sends_to(&e, addr(9)).as_slice(),
        [Instruction::SetConfig(_)]
    ));
    t.settle();
    assert_eq!(t.health(9), Health::Up);
    assert!(t.d.topology().group_of(id).is_some());
    t.d.check().unwrap();
}

#[test]
fn a_ring_member_given_up_on_keeps_its_place_and_hears_its_ring_again() {
    let mut t = fleet(4);
    // A newcomer changes its neighbours' rings; one of them never ACKs.
    t.startup(5, 105);
    t.settle();
    t.startup(6, 106);
    let silent = (1..=5u8)
        .find(|n| t.d.node(t.id(*n)).unwrap().out.inflight().count() > 0)
        .or_else(|| {
            // Not yet promoted: ACK the newcomer so its ring goes out.
            let r = t.d.node(t.id(6)).unwrap().out.inflight().last().unwrap().0;
            t.ack(addr(6), r);
            (1..=5u8).find(|n| t.d.node(t.id(*n)).unwrap().out.inflight().count() > 0)
        })
        .expect("a neighbour of the newcomer was told something");
    let sid = t.id(silent);
    let peers_before: Vec<SocketAddr> =
        t.d.topology()
            .peers_of(sid)
            .iter()
            .map(|p| t.d.node(*p).unwrap().addr)
            .collect();
    let mut all = Vec::new();
    for _ in 0..200 {
        // Everyone else answers at once.
        for n in (1..=6u8).filter(|n| *n != silent) {
            if let Some((r, _)) =
                t.d.node(t.id(n))
                    .unwrap()
                    .out
                    .inflight()
                    .last()
                    .map(|x| (x.0, ()))
            {
                all.extend(notices(&t.ack(addr(n), r)));
            }
        }
        all.extend(notices(&t.tick_for(1000)));
    }
    assert!(
        all.contains(&Notice::GaveUp {
            node: sid,
            tries: 12
        }),
        "{all:?}"
    );
    // Nothing more goes to it, but it keeps its place: its monitors still
    // watch it.
    assert!(t.d.node(sid).unwrap().gave_up);
    assert_eq!(t.health(silent), Health::Up);
    assert!(t.d.topology().group_of(sid).is_some());
    let e = t.tick_for(600_000);
    assert!(sends_to(&e, addr(silent)).is_empty());
    // A ring change meanwhile is held, not sent.
    t.startup(7, 107);
    t.settle();
    assert!(t.d.node(sid).unwrap().out.inflight().next().is_none());
    // It speaks again: reachable, told (in a new session) to stop every
    // peer it may heartbeat, then to heartbeat its ring as it is now.
    let e = t.report(silent, Message::Stats { json: "{}" });
    assert_eq!(notices(&e), vec![Notice::Reconnected(sid)]);
    let mut told = sends_to(&e, addr(silent));
    match told.first() {
        Some(Instruction::Heartbeat {
            start: false,
            peers,
        }) => {
            for p in &peers_before {
                assert!(peers.contains(p), "{p} not stopped: {peers:?}");
            }
        }
        other => panic!("first a STOP, not {other:?}"),
    }
    while let Some(r) = t.d.node(sid).unwrap().out.inflight().last().map(|x| x.0) {
        let e = t.ack(addr(silent), r);
        told.extend(sends_to(&e, addr(silent)));
    }
    assert!(!t.d.node(sid).unwrap().gave_up);
    // What it was told since, in order, leaves it heartbeating exactly
    // its ring (whatever it heartbeated before).
    let mut heartbeats = std::collections::BTreeSet::new();
    for i in told {
        if let Instruction::Heartbeat { start, peers } = i {
            for p in peers {
                if start {
                    heartbeats.insert(p);
                } else {
                    heartbeats.remove(&p);
                }
            }
        }
    }
    let ring: std::collections::BTreeSet<SocketAddr> =
        t.d.topology()
            .peers_of(sid)
            .iter()
            .map(|p| t.d.node(*p).unwrap().addr)
            .collect();
    assert!(!ring.is_empty());
    assert_eq!(heartbeats, ring);
}

#[test]
fn hearing_from_an_agent_ends_the_back_off() {
    let mut t = fleet(2);
    let e = t.startup(9, 5);
    let setconfig = sent_with_ids(&e, addr(9));
    let start = t.now;
    t.tick_for(12_000);
    // Sent at 0, 2, 4, 6 and 10 s: the next would be at 18 s.
    assert_eq!(
        t.d.node(t.id(9))
            .unwrap()
            .out
            .retransmit_deadline(&t.d.config().retransmit_policy()),
        Some(start + 18_000)
    );
    // A datagram from it proves the path: the instruction goes again now.
    t.report(9, Message::Stats { json: "{}" });
    let e = t.tick(t.now);
    assert_eq!(sent_with_ids(&e, addr(9)), setconfig);
    // And then on the short interval again.
    assert_eq!(
        t.d.node(t.id(9))
            .unwrap()
            .out
            .retransmit_deadline(&t.d.config().retransmit_policy()),
        Some(t.now + 2000)
    );
}

#[test]
fn two_forged_monitors_do_not_kill_a_node_that_answers_its_probe() {
    let mut t = fleet(4);
    // Both of node 2's monitors "report" it in the same millisecond (their
    // source addresses are easy to forge).
    t.report(1, Message::HbDead { peer: addr(2) });
    let e = t.report(3, Message::HbDead { peer: addr(2) });
    assert!(notices(&e).is_empty(), "{:?}", notices(&e));
    assert!(matches!(
        t.health(2),
        Health::Suspect {
            agreed: Some(_),
            ..
        }
    ));
    // The real node ACKs its probe at once: alive, the reports were false.
    t.now += 2;
    let probe =
        t.d.node(t.id(2))
            .unwrap()
            .out
            .inflight()
            .find(|(_, i)| *i == Instruction::Probe)
            .map(|(r, _)| *r)
            .expect("probed at the first report");
    let e = t.ack(addr(2), probe);
    assert_eq!(t.health(2), Health::Up);
    assert!(
        notices(&e)
            .iter()
            .any(|n| matches!(n, Notice::PathFault { .. }))
    );
    assert!(
        !notices(&t.tick_for(60_000))
            .iter()
            .any(|n| matches!(n, Notice::Dead { .. }))
    );
    assert!(t.d.topology().group_of(t.id(2)).is_some());
    // Unanswered, the same two reports make a death half a second after
    // the first: within the window, so the detection target holds.
    t.report(1, Message::HbDead { peer: addr(2) });
    let first = t.now;
    t.report(3, Message::HbDead { peer: addr(2) });
    let e = t.tick_for(ANSWER_MS);
    assert!(notices(&e).iter().any(|n| matches!(
        n,
        Notice::Dead {
            cause: DeathCause::TwoMonitors { .. },
            ..
        }
    )));
    assert!(t.now - first <= t.d.fcfg.window_ms);
}
