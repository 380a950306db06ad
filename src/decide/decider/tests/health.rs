//! Reports, probes and verdicts; martians.

use super::*;

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
