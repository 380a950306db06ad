//! Switch rings, representatives and cuts.

use super::*;

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
