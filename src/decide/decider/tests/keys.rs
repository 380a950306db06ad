//! Identity bound to the key (DESIGN.md rule 9): what a forged source
//! address can no longer do to a keyed node.

use super::*;

/// `k` keyed agents in one subnet ring, settled.
fn keyed_fleet(k: u8) -> T {
    let mut t = T::new();
    t.keyed = true;
    for n in 1..=k {
        t.startup(n, 100 + u64::from(n));
        t.settle();
    }
    t
}

fn clear_report(t: &mut T, from: u8, m: Message<'_>) -> Vec<Effect> {
    t.lsn += 1;
    let r = ReqId {
        session: 99,
        request: t.lsn,
        queue: 0,
    };
    t.feed_keyed(addr(from), Some(r), m, None)
}

#[test]
fn forged_reports_from_both_monitors_kill_nobody() {
    let mut t = keyed_fleet(4);
    assert_eq!(t.d.key_of(t.id(2)), Some(key_of(2).as_str()));
    // Ring 1 2 3 4: 2 is watched by 1 and 3. Both "report" it in clear,
    // then under each other's keys.
    for (from, key) in [
        (1, None),
        (3, None),
        (1, Some(key_of(3))),
        (3, Some(key_of(1))),
    ] {
        t.lsn += 1;
        let r = ReqId {
            session: 99,
            request: t.lsn,
            queue: 0,
        };
        let e = t.feed_keyed(
            addr(from),
            Some(r),
            Message::HbDead { peer: addr(2) },
            key.as_deref(),
        );
        assert!(notices(&e).is_empty(), "{e:?}");
    }
    t.tick_for(60_000);
    assert_eq!(t.health(2), Health::Up);
    assert_eq!(t.d.counters().unauthenticated, 4);
    // The same reports under the monitors' own keys are heard.
    let e = t.report(1, Message::HbDead { peer: addr(2) });
    assert!(!notices(&e).is_empty());
}

#[test]
fn a_forged_shutdown_ack_or_connshut_changes_nothing() {
    let mut t = keyed_fleet(4);
    clear_report(&mut t, 2, Message::HbShutdown { hostname: "host2" });
    assert_eq!(t.health(2), Health::Up);
    // Something in flight to 2; a clear ACK of it does not settle it.
    t.report(1, Message::HbDead { peer: addr(2) });
    let (r, _) = *t.d.node(t.id(2)).unwrap().out.inflight().last().unwrap();
    let session = t.d.node(t.id(2)).unwrap().out.session(7);
    t.feed_keyed(
        addr(2),
        Some(ReqId {
            session,
            request: r,
            queue: 0,
        }),
        Message::Ack,
        None,
    );
    assert!(!t.d.node(t.id(2)).unwrap().out.settled());
    let inbound = t.d.node(t.id(3)).unwrap().inbound;
    clear_report(&mut t, 3, Message::ConnShut);
    assert_eq!(t.d.node(t.id(3)).unwrap().inbound, inbound);
    // Its own ACK, under its key, answers.
    t.ack(addr(2), r);
    assert!(t.d.node(t.id(2)).unwrap().out.settled());
}

#[test]
fn a_keyed_host_returns_only_under_its_key() {
    let mut t = keyed_fleet(3);
    let host = "host2";
    let net = "{}";
    let other = [9u8; 32];
    for key in [
        None,
        Some(("host2@@ffffffffffffffffffffffffffffffff", &other)),
    ] {
        t.feed_keyed(
            addr(2),
            None,
            Message::Startup(Startup {
                hostname: host,
                listen: addr(2),
                wallclock_us: 999,
                netconfig: net,
                key,
                features: None,
            }),
            None,
        );
        assert_eq!(t.d.node(t.id(2)).unwrap().incarnation, 102);
    }
    assert_eq!(t.d.counters().key_refused, 2);
}

#[test]
fn a_newcomer_cannot_take_a_live_keyed_nodes_address() {
    let mut t = keyed_fleet(3);
    let id2 = t.id(2);
    let forged = [5u8; 32];
    let intruder = || {
        Message::Startup(Startup {
            hostname: "intruder",
            listen: addr(2),
            wallclock_us: 1,
            netconfig: "{}",
            key: Some(("intruder@@00000000000000000000000000000005", &forged)),
            features: None,
        })
    };
    let e = t.feed_keyed(addr(2), None, intruder(), None);
    // The holder is probed, not replaced.
    assert_eq!(sends_to(&e, addr(2)), vec![Instruction::Probe]);
    assert_eq!(t.d.node_at(addr(2)), Some(id2));
    assert_eq!(t.health(2), Health::Up);
    // It answers under its key: the address stays its own.
    t.settle();
    t.tick_for(60_000);
    t.feed_keyed(addr(2), None, intruder(), None);
    assert_eq!(t.d.node_at(addr(2)), Some(id2));
    assert_eq!(t.health(2), Health::Up);
}

#[test]
fn unkeyed_monitors_cannot_report_a_keyed_node() {
    let mut t = T::new();
    // 1 and 3 without keys, 2 with one.
    for n in 1..=3u8 {
        t.keyed = n == 2;
        t.startup(n, 100 + u64::from(n));
        t.settle();
    }
    t.keyed = false;
    let e = t.report(1, Message::HbDead { peer: addr(2) });
    assert!(notices(&e).is_empty());
    assert_eq!(t.d.counters().unkeyed_reports, 1);
}
