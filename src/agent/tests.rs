//! The agent's state machine against a scripted CMA, on simulated time.

use super::*;
use crate::classify::classify;
use crate::classify::switch::parse_switch_frame;

const CMA: &str = "127.0.0.1:1984";

fn cma() -> SocketAddr {
    CMA.parse().unwrap()
}

fn me() -> SocketAddr {
    "127.0.0.2:1984".parse().unwrap()
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 1, n], 1984))
}

fn agent() -> Agent {
    let mut c = AgentConfig::new("host-a".into(), me(), cma(), 1_700_000_000_000_000);
    c.switch = Some(SwitchId {
        chassis: "sw-7".into(),
        port: "eth0".into(),
        interface: "eth0".into(),
        mac: [2, 0, 0, 0, 0, 2],
    });
    Agent::new(c, 0)
}

/// What the agent sent, decoded: (to, fstype, reqid, message debug text).
#[derive(Debug)]
struct Sent {
    to: SocketAddr,
    fstype: u16,
    reqid: Option<ReqId>,
    bytes: Vec<u8>,
}

fn sent(a: &mut Agent) -> Vec<Sent> {
    a.drain()
        .map(|d| {
            let c = classify(d.bytes()).expect("the agent sends valid FrameSets");
            Sent {
                to: d.to(),
                fstype: c.fstype,
                reqid: c.reqid,
                bytes: d.bytes().to_vec(),
            }
        })
        .collect()
}

fn of(v: &[Sent], t: FrameSetType) -> Vec<&Sent> {
    v.iter().filter(|s| s.fstype == t.to_wire()).collect()
}

/// The scripted CMA's sending side.
struct Cma {
    request: u64,
}

impl Cma {
    fn send(&mut self, a: &mut Agent, now: u64, m: &Message<'_>) -> ReqId {
        self.request += 1;
        let r = ReqId {
            session: 77,
            request: self.request,
            queue: 0,
        };
        self.resend(a, now, m, r);
        r
    }

    fn resend(&mut self, a: &mut Agent, now: u64, m: &Message<'_>, r: ReqId) {
        let mut b = Vec::new();
        encode(m, Some(r), &EncodeOptions::default(), &mut b).unwrap();
        a.on_datagram(now, cma(), &b);
    }
}

fn ack(a: &mut Agent, now: u64, r: ReqId) {
    let mut b = Vec::new();
    encode(&Message::Ack, Some(r), &EncodeOptions::default(), &mut b).unwrap();
    a.on_datagram(now, cma(), &b);
}

fn heartbeat(a: &mut Agent, now: u64, from: SocketAddr) {
    a.on_datagram(now, from, heartbeat_bytes());
}

fn sendexpect(peers: &[SocketAddr]) -> Message<'_> {
    Message::Heartbeats {
        kind: FrameSetType::SendExpectHb,
        params: HbParams {
            rscjson: Some(r#"{"repeat":1,"warn":2,"timeout":3}"#),
            ..HbParams::default()
        },
        peers: Peers::List(peers),
    }
}

/// Drains what the agent sent, ACKing its HBSTATE reports (a CMA that
/// audits); returns everything sent.
fn settle(a: &mut Agent, now: u64) -> Vec<Sent> {
    let mut all = Vec::new();
    loop {
        let out = sent(a);
        let states: Vec<ReqId> = of(&out, FrameSetType::HbState)
            .iter()
            .filter_map(|s| s.reqid)
            .collect();
        all.extend(out);
        if states.is_empty() {
            return all;
        }
        for r in states {
            ack(a, now, r);
        }
    }
}

/// An agent that has joined (and whose SWDISCOVER was ACKed).
fn joined() -> (Agent, Cma) {
    let mut a = agent();
    let mut c = Cma { request: 0 };
    a.tick(0);
    sent(&mut a);
    c.send(
        &mut a,
        10,
        &Message::SetConfig {
            json: r#"{"cmafail":"127.0.0.1:1984"}"#,
        },
    );
    c.send(&mut a, 10, &Message::AckStartup);
    // The first HBSTATE.
    let out = settle(&mut a, 10);
    assert_eq!(of(&out, FrameSetType::HbState).len(), 1);
    discover_switch(&mut a, &mut c, 11, "eth0");
    let out = sent(&mut a);
    let sw = of(&out, FrameSetType::SwDiscover);
    ack(&mut a, 11, sw[0].reqid.unwrap());
    settle(&mut a, 12);
    (a, c)
}

/// DODISCOVER `#SWITCH` for `nic`, as the CMA sends it after joining.
fn discover_switch(a: &mut Agent, c: &mut Cma, now: u64, nic: &str) -> ReqId {
    let name = format!("_switch_{nic}");
    let json = crate::engine::daemon::switch_discovery_json(nic);
    let list = [crate::classify::Discovery {
        name: &name,
        interval_s: 0,
        json: &json,
    }];
    c.send(
        a,
        now,
        &Message::Discover {
            stop: false,
            list: crate::classify::Discoveries::List(&list),
        },
    )
}

#[test]
fn startup_repeats_every_5_s_until_configured_and_acknowledged() {
    let mut a = agent();
    let mut c = Cma { request: 0 };
    a.tick(0);
    let first = sent(&mut a);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].fstype, FrameSetType::Startup.to_wire());
    assert_eq!(first[0].to, cma());
    let m = classify(&first[0].bytes).unwrap();
    match m.message().unwrap() {
        Message::Startup(s) => {
            assert_eq!(s.hostname, "host-a");
            assert_eq!(s.listen, me());
            assert_eq!(s.wallclock_us, 1_700_000_000_000_000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.next_deadline_ms(), 5000);
    a.tick(4999);
    assert!(sent(&mut a).is_empty());
    a.tick(5000);
    let again = sent(&mut a);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, first[0].bytes, "resent byte for byte");
    // ACKSTARTUP alone is not enough: both are needed.
    let r = c.send(&mut a, 6000, &Message::AckStartup);
    let out = sent(&mut a);
    assert_eq!(of(&out, FrameSetType::Ack)[0].reqid, Some(r));
    assert_eq!(a.phase(), Phase::Joining);
    a.tick(10_000);
    assert_eq!(of(&sent(&mut a), FrameSetType::Startup).len(), 1);
    let r = c.send(&mut a, 10_500, &Message::SetConfig { json: "{}" });
    assert_eq!(a.phase(), Phase::Joined);
    let out = sent(&mut a);
    assert_eq!(of(&out, FrameSetType::Ack)[0].reqid, Some(r));
    // Joined: nothing about the switch until the CMA asks, as a
    // nanoprobe; a NIC it does not hang off is not answered.
    assert!(of(&out, FrameSetType::SwDiscover).is_empty());
    for st in of(&out, FrameSetType::HbState) {
        ack(&mut a, 10_550, st.reqid.unwrap());
    }
    discover_switch(&mut a, &mut c, 10_600, "eth1");
    assert!(of(&sent(&mut a), FrameSetType::SwDiscover).is_empty());
    discover_switch(&mut a, &mut c, 10_700, "eth0");
    let out = sent(&mut a);
    // Asked: the switch is announced, with a parseable LLDP frame.
    let sw = of(&out, FrameSetType::SwDiscover);
    assert_eq!(sw.len(), 1);
    let c = classify(&sw[0].bytes).unwrap();
    match c.message().unwrap() {
        Message::SwDiscover(s) => {
            let info = parse_switch_frame(s.pktdata).unwrap();
            assert_eq!(info.chassis_id, "sw-7");
            assert_eq!(s.hostname, "host-a");
        }
        other => panic!("{other:?}"),
    }
    a.tick(15_000);
    assert!(of(&sent(&mut a), FrameSetType::Startup).is_empty());
}

#[test]
fn heartbeat_instructions_count_and_duplicates_are_reacked_not_obeyed() {
    let (mut a, mut c) = joined();
    let peers = [peer(1), peer(2)];
    let r = c.send(&mut a, 100, &sendexpect(&peers));
    a.tick(100);
    let out = sent(&mut a);
    assert_eq!(of(&out, FrameSetType::Ack)[0].reqid, Some(r));
    // The first heartbeats go out at once.
    let hbs: Vec<_> = of(&out, FrameSetType::Heartbeat)
        .iter()
        .map(|s| s.to)
        .collect();
    assert_eq!(hbs, peers);
    // A resend of the same instruction: ACKed again, not counted twice.
    c.resend(&mut a, 200, &sendexpect(&peers), r);
    let out = sent(&mut a);
    assert_eq!(of(&out, FrameSetType::Ack)[0].reqid, Some(r));
    assert_eq!(a.counters().duplicates, 1);
    assert_eq!(a.heartbeat_counts(), vec![(peer(1), 1, 1), (peer(2), 1, 1)]);
    // A second, distinct instruction for peer 1 stacks a second sender but
    // replaces the listener (as a nanoprobe does).
    c.send(&mut a, 300, &sendexpect(&peers[..1]));
    assert_eq!(a.heartbeat_counts()[0], (peer(1), 2, 1));
    let stop = Message::StopHeartbeats {
        kind: FrameSetType::StopSendExpectHb,
        peers: Peers::List(&peers),
    };
    c.send(&mut a, 400, &stop);
    // One stop: a sender left, nobody listening (the doubled edge's harm).
    assert_eq!(a.heartbeat_counts(), vec![(peer(1), 1, 0)]);
    assert_eq!(a.expecting().count(), 0);
    // Only send: STOPSENDHB leaves the watch.
    let stop_send = Message::StopHeartbeats {
        kind: FrameSetType::StopSendHb,
        peers: Peers::List(&peers[..1]),
    };
    c.send(&mut a, 500, &stop_send);
    assert!(a.heartbeat_counts().is_empty());
    assert_eq!(a.sending_to().count(), 0);
    // A stop for a peer it does not know changes nothing.
    c.send(&mut a, 550, &stop_send);
    assert!(a.heartbeat_counts().is_empty());
    // A gap in the CMA's request ids is dropped, not obeyed.
    sent(&mut a);
    let before = a.counters().instructions;
    c.request += 1;
    c.send(&mut a, 600, &stop);
    assert_eq!(a.counters().instructions, before);
    assert!(of(&sent(&mut a), FrameSetType::Ack).is_empty());
}

#[test]
fn heartbeats_go_out_every_repeat() {
    let (mut a, mut c) = joined();
    c.send(&mut a, 1000, &sendexpect(&[peer(1)]));
    settle(&mut a, 1000);
    let mut times = Vec::new();
    let mut now = 1000;
    while now < 5500 {
        now = a.next_deadline_ms().min(5500);
        heartbeat(&mut a, now, peer(1));
        a.tick(now);
        if !of(&sent(&mut a), FrameSetType::Heartbeat).is_empty() {
            times.push(now);
        }
    }
    assert_eq!(times, vec![1000, 2000, 3000, 4000, 5000]);
}

#[test]
fn silence_is_reported_dead_then_back_alive_and_late() {
    let (mut a, mut c) = joined();
    c.send(&mut a, 1000, &sendexpect(&[peer(1)]));
    settle(&mut a, 1000);
    heartbeat(&mut a, 1500, peer(1));
    // timeout 3 s after the last heartbeat.
    assert!(a.next_deadline_ms() <= 4500);
    a.tick(4499);
    let early = sent(&mut a);
    assert!(of(&early, FrameSetType::HbDead).is_empty(), "{early:?}");
    a.tick(4500);
    let out = sent(&mut a);
    let dead = of(&out, FrameSetType::HbDead);
    assert_eq!(dead.len(), 1);
    match classify(&dead[0].bytes).unwrap().message().unwrap() {
        Message::HbDead { peer: p } => assert_eq!(p, peer(1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.dead_peers().collect::<Vec<_>>(), vec![peer(1)]);
    // Not reported twice (a resend of the unACKed report is the same one).
    let reports = a.counters().reports;
    a.tick(9000);
    for s in of(&sent(&mut a), FrameSetType::HbDead) {
        assert_eq!(s.reqid, dead[0].reqid);
    }
    assert_eq!(a.counters().reports, reports);
    // Heard again: HBBACKALIVE (the window is 2 once the CMA has ACKed
    // something of this session, so it goes beside the unACKed HBDEAD).
    heartbeat(&mut a, 9500, peer(1));
    let out = sent(&mut a);
    let back = of(&out, FrameSetType::HbBackAlive);
    assert_eq!(back.len(), 1);
    match classify(&back[0].bytes).unwrap().message().unwrap() {
        Message::HbBackAlive {
            peer: p,
            elapsed_us,
        } => {
            assert_eq!(p, peer(1));
            assert_eq!(elapsed_us, 8_000_000);
        }
        other => panic!("{other:?}"),
    }
    ack(&mut a, 9700, back[0].reqid.unwrap());
    // 2.5 s later (warn 2 s, timeout 3 s): late.
    heartbeat(&mut a, 12_000, peer(1));
    let out = sent(&mut a);
    let late = of(&out, FrameSetType::HbLate);
    assert_eq!(late.len(), 1);
    assert_eq!(a.unacked_reports(), 1);
}

#[test]
fn reports_are_resent_until_acknowledged_one_at_a_time() {
    let (mut a, mut c) = joined();
    c.send(&mut a, 0, &sendexpect(&[peer(1), peer(2)]));
    settle(&mut a, 0);
    a.tick(3000);
    let out = sent(&mut a);
    // Two deaths, but one report in flight until the first ACK... the
    // window is 2 once something of the session was ACKed (SWDISCOVER was).
    let dead = of(&out, FrameSetType::HbDead);
    assert_eq!(dead.len(), 2);
    let r1 = dead[0].reqid.unwrap();
    a.tick(4999);
    assert!(of(&sent(&mut a), FrameSetType::HbDead).is_empty());
    a.tick(5000);
    let out = sent(&mut a);
    let again = of(&out, FrameSetType::HbDead);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].reqid, Some(r1));
    assert_eq!(again[0].bytes, dead[0].bytes);
    assert_eq!(a.counters().resends, 1);
    ack(&mut a, 5100, dead[1].reqid.unwrap());
    assert_eq!(a.unacked_reports(), 0);
}

#[test]
fn unexpected_heartbeats_are_martians_at_most_every_10_s() {
    let (mut a, _) = joined();
    heartbeat(&mut a, 100, peer(9));
    heartbeat(&mut a, 200, peer(9));
    let out = sent(&mut a);
    let m = of(&out, FrameSetType::HbMartian);
    assert_eq!(m.len(), 1);
    ack(&mut a, 300, m[0].reqid.unwrap());
    heartbeat(&mut a, 5000, peer(9));
    assert!(of(&sent(&mut a), FrameSetType::HbMartian).is_empty());
    heartbeat(&mut a, 10_100, peer(9));
    assert_eq!(of(&sent(&mut a), FrameSetType::HbMartian).len(), 1);
}

#[test]
fn ping_is_answered_and_an_unknown_sequenced_type_never_acked() {
    let (mut a, mut c) = joined();
    let mut b = Vec::new();
    encode(&Message::Ping, None, &EncodeOptions::default(), &mut b).unwrap();
    a.on_datagram(0, peer(3), &b);
    let out = sent(&mut a);
    assert_eq!(of(&out, FrameSetType::Pong)[0].to, peer(3));
    // SEQPING, sequenced: a real nanoprobe neither answers nor ACKs it,
    // and holds back what follows.
    c.send(&mut a, 0, &Message::SeqPing);
    let out = sent(&mut a);
    assert!(of(&out, FrameSetType::SeqPong).is_empty());
    assert!(of(&out, FrameSetType::Ack).is_empty());
    c.send(&mut a, 0, &sendexpect(&[peer(1)]));
    assert!(of(&sent(&mut a), FrameSetType::Ack).is_empty());
    assert_eq!(a.sending_to().count(), 0);
}

#[test]
fn shutdown_sends_hbshutdown_then_connshut_and_finishes() {
    let (mut a, mut c) = joined();
    c.send(&mut a, 0, &sendexpect(&[peer(1)]));
    settle(&mut a, 0);
    a.shutdown(1000);
    assert_eq!(a.phase(), Phase::Leaving);
    let out = sent(&mut a);
    let s = of(&out, FrameSetType::HbShutdown);
    assert_eq!(s.len(), 1);
    match classify(&s[0].bytes).unwrap().message().unwrap() {
        Message::HbShutdown { hostname } => assert_eq!(hostname, "host-a"),
        other => panic!("{other:?}"),
    }
    // Still heartbeating until the CMA has it.
    a.tick(2000);
    assert_eq!(of(&sent(&mut a), FrameSetType::Heartbeat).len(), 1);
    ack(&mut a, 2100, s[0].reqid.unwrap());
    let out = sent(&mut a);
    let shut = of(&out, FrameSetType::ConnShut);
    assert_eq!(shut.len(), 1);
    a.tick(3000);
    assert!(of(&sent(&mut a), FrameSetType::Heartbeat).is_empty());
    ack(&mut a, 3100, shut[0].reqid.unwrap());
    assert_eq!(a.phase(), Phase::Done, "{a:?}");
    assert_eq!(a.next_deadline_ms(), u64::MAX);
}

#[test]
fn shutdown_gives_up_after_the_wait_without_a_cma() {
    let (mut a, _) = joined();
    a.shutdown(0);
    a.tick(9_999);
    assert_eq!(a.phase(), Phase::Leaving);
    a.tick(10_000);
    assert_eq!(a.phase(), Phase::Done);
}

#[test]
fn garbage_is_counted_never_obeyed() {
    let (mut a, _) = joined();
    let before = a.counters();
    a.on_datagram(0, cma(), b"\x00\x01\x00\x00\x05garbage");
    a.on_datagram(0, cma(), &[]);
    let mut hb = heartbeat_bytes().to_vec();
    hb[20] ^= 1;
    a.on_datagram(0, peer(1), &hb);
    assert_eq!(a.counters().dropped, before.dropped + 2);
    assert_eq!(a.counters().instructions, before.instructions);
    assert!(sent(&mut a).is_empty());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Instr {
            kind: u8,
            peers: Vec<u8>,
            request: u8,
        },
        Heartbeat(u8),
        Ack(u8),
        Garbage(Vec<u8>),
        Tick(u16),
        Shutdown,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..8, proptest::collection::vec(0u8..6, 0..4), 0u8..40).prop_map(
                |(kind, peers, request)| Op::Instr {
                    kind,
                    peers,
                    request
                }
            ),
            (0u8..8).prop_map(Op::Heartbeat),
            (0u8..40).prop_map(Op::Ack),
            proptest::collection::vec(any::<u8>(), 0..80).prop_map(Op::Garbage),
            (0u16..5000).prop_map(Op::Tick),
            Just(Op::Shutdown),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any mix of instructions (in or out of order, repeated),
        /// heartbeats, ACKs, garbage and time never panics, and what the
        /// agent sends is always well-formed.
        #[test]
        fn any_sequence_is_handled(ops in proptest::collection::vec(op(), 1..60)) {
            let mut a = agent();
            let mut now = 0u64;
            let peers: Vec<SocketAddr> = (0..6).map(peer).collect();
            for o in ops {
                match o {
                    Op::Instr { kind, peers: p, request } => {
                        let list: Vec<SocketAddr> = p.iter().map(|&i| peers[i as usize]).collect();
                        let m = match kind {
                            0 => Message::SetConfig { json: r#"{"cmafail":"127.0.0.1:1984"}"# },
                            1 => Message::AckStartup,
                            2 => sendexpect(&list),
                            3 => Message::StopHeartbeats { kind: FrameSetType::StopSendExpectHb, peers: Peers::List(&list) },
                            4 => Message::StopHeartbeats { kind: FrameSetType::StopSendHb, peers: Peers::List(&list) },
                            5 => Message::Heartbeats { kind: FrameSetType::ExpectHb, params: HbParams::default(), peers: Peers::List(&list) },
                            6 => Message::ConnShut,
                            _ => Message::SeqPing,
                        };
                        let r = ReqId { session: 5, request: u64::from(request), queue: 0 };
                        let mut b = Vec::new();
                        encode(&m, Some(r), &EncodeOptions::default(), &mut b).unwrap();
                        a.on_datagram(now, cma(), &b);
                    }
                    Op::Heartbeat(i) => {
                        let from = peers.get(i as usize).copied().unwrap_or(cma());
                        heartbeat(&mut a, now, from);
                    }
                    Op::Ack(r) => {
                        let session = a.session;
                        ack(&mut a, now, ReqId { session, request: u64::from(r), queue: 0 });
                    }
                    Op::Garbage(g) => a.on_datagram(now, cma(), &g),
                    Op::Tick(dt) => {
                        now += u64::from(dt);
                        a.tick(now);
                    }
                    Op::Shutdown => a.shutdown(now),
                }
                for d in a.drain() {
                    prop_assert!(classify(d.bytes()).is_ok());
                }
                for (_, s, e) in a.heartbeat_counts() {
                    prop_assert!(s + e > 0);
                }
            }
        }
    }
}

fn hbstate(s: &Sent) -> (Option<ReqId>, Vec<PeerState>, Vec<SocketAddr>, u64) {
    match classify(&s.bytes).unwrap().message().unwrap() {
        Message::HbState(h) => (
            h.applied,
            h.expect.iter().collect(),
            h.send.iter().collect(),
            h.wallclock_us,
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn startup_announces_the_extensions() {
    let mut a = agent();
    a.tick(0);
    let out = sent(&mut a);
    match classify(&out[0].bytes).unwrap().message().unwrap() {
        Message::Startup(s) => assert_eq!(s.features, Some(FEATURES)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hbstate_follows_every_change_the_request_and_the_interval() {
    let (mut a, mut c) = joined();
    // SETCONFIG sets the interval: 10 s.
    c.send(
        &mut a,
        20,
        &Message::SetConfig {
            json: r#"{"state_interval":10}"#,
        },
    );
    settle(&mut a, 20);
    let r = c.send(&mut a, 100, &sendexpect(&[peer(1), peer(2)]));
    let out = sent(&mut a);
    let st = of(&out, FrameSetType::HbState);
    assert_eq!(st.len(), 1);
    let (applied, states, send, wallclock) = hbstate(st[0]);
    assert_eq!(applied, Some(r));
    assert_eq!(wallclock, 1_700_000_000_000_000);
    assert_eq!(send, vec![peer(1), peer(2)]);
    assert_eq!(
        states
            .iter()
            .map(|p| (p.peer, p.status))
            .collect::<Vec<_>>(),
        vec![(peer(1), PeerStatus::Up), (peer(2), PeerStatus::Up)]
    );
    ack(&mut a, 101, st[0].reqid.unwrap());
    // Peer 2 falls silent: its status says so in the next one.
    heartbeat(&mut a, 3000, peer(1));
    a.tick(3100);
    let dead = of(&sent(&mut a), FrameSetType::HbDead)[0].reqid.unwrap();
    ack(&mut a, 3200, dead);
    let r = c.send(&mut a, 3300, &Message::HbStateReq);
    let out = sent(&mut a);
    let st = of(&out, FrameSetType::HbState);
    assert_eq!(st.len(), 1, "HBSTATEREQ is answered");
    let (applied, states, _, _) = hbstate(st[0]);
    assert_eq!(applied, Some(r));
    assert_eq!(states[0].status, PeerStatus::Up);
    assert_eq!(states[1].status, PeerStatus::Dead);
    assert_eq!(states[1].since_ms, 3200);
    ack(&mut a, 3400, st[0].reqid.unwrap());
    // The interval: 10 s after the last one.
    a.tick(13_299);
    assert!(of(&sent(&mut a), FrameSetType::HbState).is_empty());
    a.tick(13_300);
    assert_eq!(of(&sent(&mut a), FrameSetType::HbState).len(), 1);
}

#[test]
fn an_unusable_peer_is_refused_with_actionnak_and_the_rest_obeyed() {
    let (mut a, mut c) = joined();
    let bad: SocketAddr = "224.0.2.5:1984".parse().unwrap();
    let r = c.send(&mut a, 100, &sendexpect(&[peer(1), bad]));
    let out = settle(&mut a, 100);
    assert_eq!(of(&out, FrameSetType::Ack)[0].reqid, Some(r), "still ACKed");
    let nak = of(&out, FrameSetType::ActionNak);
    assert_eq!(nak.len(), 1);
    match classify(&nak[0].bytes).unwrap().message().unwrap() {
        Message::ActionNak {
            instr,
            code,
            reason,
        } => {
            assert_eq!(instr, r);
            assert_eq!(code, nak::BAD_ADDRESS);
            assert!(reason.contains("224.0.2.5"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.heartbeat_counts(), vec![(peer(1), 1, 1)]);
    assert_eq!(a.counters().naks, 1);
}

#[test]
fn a_wiped_state_shows_in_the_next_hbstate() {
    let (mut a, mut c) = joined();
    c.send(&mut a, 100, &sendexpect(&[peer(1)]));
    settle(&mut a, 100);
    a.wipe_heartbeat_state();
    assert!(a.heartbeat_counts().is_empty());
    // The default interval is 60 s.
    a.tick(60_100);
    let out = sent(&mut a);
    let st = of(&out, FrameSetType::HbState);
    assert_eq!(st.len(), 1);
    let (_, states, send, _) = hbstate(st[0]);
    assert!(states.is_empty() && send.is_empty());
}
