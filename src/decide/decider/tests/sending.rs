//! The sending side: new sessions, retransmission, give-up.

use super::*;

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
fn an_unanswered_stranger_is_resent_with_back_off_then_given_up() {
    let mut t = fleet(3);
    let e = t.startup(9, 5);
    let id = t.id(9);
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
    // Four times (`join_give_up_after`): it never ACKed anything.
    assert_eq!(times, vec![0, 2000, 4000, 6000]);
    // It never ACKed its SETCONFIG: forgotten, not kept unreachable.
    assert_eq!(
        all,
        vec![Notice::Forgotten {
            node: id,
            hostname: "host9".into(),
            addr: addr(9),
            tries: 4
        }]
    );
    assert_eq!(t.d.counters().gave_up, 1);
    assert_eq!(t.d.counters().forgotten, 1);
    assert_eq!(t.d.counters().retransmits, 3);
    assert!(t.d.node(id).unwrap().is_vacant());
    assert_eq!(t.d.node_at(addr(9)), None);
    assert!(t.d.topology().group_of(id).is_none());
    t.d.check().unwrap();
    // Its STARTUP again (the agent was only slow to be reachable): a new
    // registration, in the slot it had, placed once it ACKs.
    let e = t.startup(9, 5);
    assert_eq!(notices(&e), vec![Notice::Joined(id)]);
    assert!(matches!(
        sends_to(&e, addr(9)).as_slice(),
        [Instruction::SetConfig(_), ..]
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
    t.tick_for(7_000);
    // Sent at 0, 2, 4 and 6 s: backing off, the next (here, the give-up)
    // would be at 10 s.
    assert_eq!(
        t.d.node(t.id(9))
            .unwrap()
            .out
            .retransmit_deadline(&t.d.config().retransmit_policy()),
        Some(start + 10_000)
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
