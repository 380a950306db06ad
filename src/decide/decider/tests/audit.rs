//! HBSTATE audits and refusals (ACTIONNAK).

use super::*;

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
