//! STARTUP, restarts, names and addresses, counters, export and invariants.

use super::*;

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
    // Nothing but: its source registered nothing.
    assert_eq!(split_forgets(&e), (vec![addr(9)], vec![]));
    assert_eq!(t.d.counters().startup_mismatch, 1);
    assert_eq!(t.health(1), Health::Up);
}

#[test]
fn a_clone_of_a_live_host_is_refused_once_the_host_answers() {
    let mut t = fleet(3);
    let e = clone_startup(&mut t, 99);
    // Nothing for the clone (its source registered nothing); the node
    // where it is gets probed.
    assert!(sends_to(&e, addr(9)).is_empty());
    assert_eq!(split_forgets(&e).0, vec![addr(9)]);
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
        assert_eq!(split_forgets(&e), (vec![addr(9)], vec![]), "{e:?}");
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
    assert_eq!(
        split_forgets(&clone_startup(&mut t, 99)),
        (vec![addr(9)], vec![])
    );
    t.now += t.d.fcfg.window_ms;
    let e = clone_startup(&mut t, 99);
    assert!(notices(&e).contains(&Notice::Restarted(id)));
    assert_eq!(t.d.node(id).unwrap().addr, addr(9));
    // The address it left is nobody's now.
    assert_eq!(split_forgets(&e).0, vec![addr(1)]);
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
        assert_eq!(split_forgets(&e), (vec![addr(1)], vec![]));
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

#[test]
fn forgotten_registrations_leave_slots_that_checkpoints_keep_and_joins_reuse() {
    let mut t = fleet(3);
    let mut rows = CheckpointRows::default();
    rows.apply(&t.d.take_checkpoint());
    // Two STARTUPs that never ACK (forged sources): given up, forgotten.
    t.startup(8, 108);
    t.startup(9, 109);
    let (a, b) = (t.id(8), t.id(9));
    let e = t.tick_for(600_000);
    let forgotten: Vec<(Option<NodeId>, SocketAddr)> = e
        .iter()
        .filter_map(|e| match e {
            Effect::Forget { node, addr, .. } => Some((*node, *addr)),
            _ => None,
        })
        .collect();
    assert_eq!(forgotten, vec![(Some(a), addr(8)), (Some(b), addr(9))]);
    assert!(t.d.node(a).unwrap().is_vacant() && t.d.node(b).unwrap().is_vacant());
    assert_eq!(t.d.node_at(addr(8)), None);
    t.d.check().unwrap();
    // The checkpoint keeps the vacant slots as such.
    rows.apply(&t.d.take_checkpoint());
    let back = Decider::from_rows(&rows).unwrap();
    assert!(back.equivalent(&t.d));
    // A newcomer (and the same host again) takes the lowest vacant slot,
    // live and rebuilt alike: the registry does not grow.
    let mut r = T {
        d: back,
        lsn: t.lsn,
        now: t.now,
        out: Vec::new(),
        keyed: false,
    };
    for x in [&mut t, &mut r] {
        assert_eq!(notices(&x.startup(7, 107)), vec![Notice::Joined(a.min(b))]);
        assert_eq!(notices(&x.startup(8, 118)), vec![Notice::Joined(a.max(b))]);
        assert_eq!(x.d.nodes().len(), 5);
        x.settle();
        assert!(x.d.topology().group_of(x.id(7)).is_some());
        x.d.check().unwrap();
    }
    assert!(r.d.equivalent(&t.d));
}
