//! A deterministic simulation of a fleet around the [`Decider`]: seeded,
//! on a virtual clock, entirely in memory (it never opens a socket).
//!
//! Agents behave as WIRE.md describes a nanoprobe: STARTUP every 5 s until
//! configured, heartbeat counts that each SENDEXPECTHB raises and each STOP
//! lowers (no de-duplication), in-order delivery of sequenced instructions
//! with duplicate re-ACKs, one report in flight with a 2 s retransmit, and
//! HBDEAD after `dead_ms` of silence, HBBACKALIVE when heard again,
//! HBMARTIAN for unexpected heartbeats. The network between agents and the
//! CMA loses, duplicates, delays and so reorders datagrams; faults crash,
//! reboot and shut down nodes, cut a switch off, or break one direction of
//! one heartbeat path.
//!
//! Heartbeats themselves are modelled per path, not per datagram: a path
//! is either delivering or silent, and an agent reports a peer `dead_ms`
//! (plus or minus one interval of phase) after the path fell silent. Random
//! loss cannot silence a path: with 1 % loss, the chance of losing the 30
//! consecutive heartbeats of a dead time is 10^-60, so loss is applied to
//! the reports and instructions, where it matters.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::classify::switch::lldp_frame;
use crate::classify::{
    EncodeOptions, HbState, Logged, Message, PeerState, PeerStates, PeerStatus, Peers, ReqId,
    Startup, SwDiscover, classify, encode, write_logged,
};
use crate::decide::decider::{Decider, DeciderConfig, Effect, Event, Input, Notice};
use crate::decide::failure::Health;
use crate::decide::input::decide_logged;
use crate::decide::outq::Instruction;
use crate::decide::topology::GroupKey;

/// The CMA's address inside the simulation (never used on a network).
const CMA: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 255, 254)), 1984);
/// The reliable layer's retransmit interval.
const RETRANSMIT_MS: u64 = 2000;
/// A healed switch is checked this often until every agent settled.
const HEAL_CHECK_MS: u64 = 100;
/// Every agent of a healed switch matches its rings this long after the
/// heal at the latest: the CMA hears the switch again (a retransmit, up to
/// one interval), probes its members, and they answer; loss may cost a
/// few retransmits more.
pub const HEAL_SETTLE_MAX_MS: u64 = 5 * RETRANSMIT_MS;
/// How often a simulated switch sends LLDP.
const LLDP_PERIOD_MS: u64 = 5000;
/// STARTUP resend interval.
const STARTUP_RESEND_MS: u64 = 5000;

/// How many faults of each kind a run injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Nodes that crash for good.
    pub crash: usize,
    /// Nodes that crash and boot again 5-20 s later.
    pub reboot: usize,
    /// Nodes that shut down cleanly.
    pub shutdown: usize,
    /// Switches cut off from the rest for 45-60 s.
    pub partition: usize,
    /// Heartbeat paths broken in one direction for 40-60 s.
    pub link: usize,
    /// Agents that lose their heartbeat state (without a new STARTUP).
    pub wipe: usize,
    /// Agents frozen (SIGSTOP) for 45-60 s, then continuing with their
    /// state: declared dead meanwhile, they must be back in their rings
    /// soon after they resume.
    pub pause: usize,
}

impl Faults {
    /// Parses `crash=5,reboot=2,shutdown=1,partition=1,link=2` (any
    /// subset; `none` for none).
    pub fn parse(s: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        if s.trim() == "none" {
            return Ok(f);
        }
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("fault `{part}` is not kind=count"))?;
            let v: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("fault count `{v}` is not a number"))?;
            match k.trim() {
                "crash" => f.crash = v,
                "reboot" => f.reboot = v,
                "shutdown" => f.shutdown = v,
                "partition" => f.partition = v,
                "link" => f.link = v,
                "wipe" => f.wipe = v,
                "pause" => f.pause = v,
                other => {
                    return Err(format!(
                        "unknown fault `{other}` (crash, reboot, shutdown, partition, link, wipe, pause)"
                    ));
                }
            }
        }
        Ok(f)
    }

    fn total(&self) -> usize {
        self.crash
            + self.reboot
            + self.shutdown
            + self.partition
            + self.link
            + self.wipe
            + self.pause
    }
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Agents.
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Agents per switch.
    pub switch_size: usize,
    /// The first this many agents hang off small switches of 1, 2, ... 6
    /// agents in turn (groups of every size a ring treats specially), the
    /// rest off switches of `switch_size`.
    pub small_groups: usize,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram arrives twice.
    pub duplicate: f64,
    /// Datagram delay is uniform in 0.1 ms .. this (so datagrams reorder).
    pub max_delay_us: u64,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Dead time.
    pub dead_ms: u64,
    /// Faults to inject.
    pub faults: Faults,
    /// Check the decider's invariants after every ring change.
    pub check_invariants: bool,
    /// Keep every decider input (for replay tests).
    pub record_inputs: bool,
    /// Probability that an agent ACKs a ring instruction without carrying
    /// it out (a silently lost instruction).
    pub instr_loss: f64,
    /// Agents speak HBSTATE (ours) and send it this often, ms; 0: they
    /// behave as unmodified nanoprobes.
    pub state_interval_ms: u64,
    /// How long a partition lasts: drawn between these, ms, uniformly in
    /// the logarithm (as many of 1-10 s as of 1-10 min).
    pub partition_ms: (u64, u64),
    /// Probability that a partition takes the whole switch down (its
    /// members cannot reach one another either, as when a top-of-rack
    /// switch reboots) rather than only its uplink.
    pub switch_down: f64,
}

impl SimConfig {
    /// 1 s heartbeats, 30 s dead time, 1 % loss, 40 agents per switch.
    pub fn new(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            switch_size: 40,
            small_groups: 63,
            loss: 0.01,
            duplicate: 0.002,
            max_delay_us: 5000,
            heartbeat_ms: 1000,
            dead_ms: 30_000,
            faults: Faults::default(),
            check_invariants: true,
            record_inputs: false,
            instr_loss: 0.0,
            state_interval_ms: 0,
            partition_ms: (45_000, 60_000),
            switch_down: 0.5,
        }
    }

    fn startup_spread_ms(&self) -> u64 {
        (self.nodes as u64 / 20).max(10_000)
    }

    fn faults_from_ms(&self) -> u64 {
        self.startup_spread_ms() + 50_000
    }

    /// When the run ends: faults happen over two minutes after the fleet
    /// settled, then everything heals and settles again.
    pub fn end_ms(&self) -> u64 {
        self.faults_from_ms() + 120_000 + 150_000
    }
}

/// One decider input as the log holds it: a TICK, or a FrameSet's
/// classified record (`classify::Logged`), which replay reads the way the
/// daemon does.
#[derive(Clone, Debug)]
pub struct RecordedInput {
    /// LSN.
    pub lsn: u64,
    /// Log time, ms.
    pub time_ms: u64,
    /// Source (none for TICK).
    pub from: Option<SocketAddr>,
    /// The classified record (none for TICK).
    pub record: Option<Vec<u8>>,
}

impl RecordedInput {
    /// What the log thread would write for this input: the message
    /// encoded as an agent sends it, classified, and logged.
    fn of(
        lsn: u64,
        time_ms: u64,
        from: Option<SocketAddr>,
        reqid: Option<ReqId>,
        msg: Option<&AgentMsg>,
    ) -> RecordedInput {
        let record = msg.map(|msg| {
            let mut wire = Vec::new();
            msg.with_message(|m| encode(&m, reqid, &EncodeOptions::default(), &mut wire))
                .expect("the simulator's messages fit a datagram");
            let c = classify(&wire).expect("the simulator's messages are valid FrameSets");
            let mut record = Vec::new();
            write_logged(&c, &mut record);
            record
        });
        RecordedInput {
            lsn,
            time_ms,
            from,
            record,
        }
    }

    /// Feeds it to a decider, reading the record as the daemon does.
    pub fn replay(&self, d: &mut Decider, out: &mut Vec<Effect>) {
        match (self.from, &self.record) {
            (Some(from), Some(record)) => {
                let logged = Logged::parse(record).expect("records this build wrote");
                decide_logged(d, self.lsn, self.time_ms, from, &logged, out);
            }
            _ => d.handle(
                &Input {
                    lsn: self.lsn,
                    time_ms: self.time_ms,
                    event: Event::Tick,
                },
                out,
            ),
        }
    }
}

/// Feeds one input to a decider directly (the live run: no encoding).
fn feed_live(
    d: &mut Decider,
    lsn: u64,
    time_ms: u64,
    from: Option<SocketAddr>,
    reqid: Option<ReqId>,
    msg: Option<&AgentMsg>,
    out: &mut Vec<Effect>,
) {
    match (from, msg) {
        (Some(from), Some(msg)) => msg.with_message(|m| {
            d.handle(
                &Input {
                    lsn,
                    time_ms,
                    event: Event::Received {
                        from,
                        reqid,
                        message: m,
                    },
                },
                out,
            )
        }),
        _ => d.handle(
            &Input {
                lsn,
                time_ms,
                event: Event::Tick,
            },
            out,
        ),
    }
}

/// What an agent sends the CMA (owned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentMsg {
    /// STARTUP.
    Startup {
        /// Host name.
        hostname: String,
        /// Listen address.
        listen: SocketAddr,
        /// Incarnation.
        wallclock_us: u64,
        /// netconfig JSON.
        netconfig: String,
        /// It announces HBSTATE support.
        hbstate: bool,
    },
    /// HBSTATE: incarnation, last instruction applied, watched peers (and
    /// whether reported dead), peers heartbeated.
    HbState {
        /// Incarnation.
        wallclock_us: u64,
        /// Last CMA (session, request id) delivered.
        applied: Option<(u32, u64)>,
        /// Watched peers, dead or not.
        expect: Vec<(SocketAddr, bool)>,
        /// Peers it sends to.
        send: Vec<SocketAddr>,
    },
    /// HBDEAD.
    HbDead(SocketAddr),
    /// HBBACKALIVE.
    HbBackAlive(SocketAddr),
    /// HBMARTIAN.
    HbMartian(SocketAddr),
    /// HBSHUTDOWN.
    HbShutdown(String),
    /// SWDISCOVER with an LLDP frame.
    SwDiscover(Vec<u8>),
    /// ACK of a CMA instruction.
    Ack,
}

impl AgentMsg {
    fn with_message<R>(&self, f: impl FnOnce(Message<'_>) -> R) -> R {
        match self {
            AgentMsg::Startup {
                hostname,
                listen,
                wallclock_us,
                netconfig,
                hbstate,
            } => f(Message::Startup(Startup {
                hostname,
                listen: *listen,
                wallclock_us: *wallclock_us,
                netconfig,
                key: None,
                features: hbstate.then_some("hbstate"),
            })),
            AgentMsg::HbState {
                wallclock_us,
                applied,
                expect,
                send,
            } => {
                let states: Vec<PeerState> = expect
                    .iter()
                    .map(|&(peer, dead)| PeerState {
                        peer,
                        status: if dead {
                            PeerStatus::Dead
                        } else {
                            PeerStatus::Up
                        },
                        since_ms: 0,
                    })
                    .collect();
                f(Message::HbState(HbState {
                    wallclock_us: *wallclock_us,
                    applied: applied.map(|(session, request)| ReqId {
                        session,
                        request,
                        queue: 0,
                    }),
                    expect: PeerStates::List(&states),
                    send: Peers::List(send),
                }))
            }
            AgentMsg::HbDead(p) => f(Message::HbDead { peer: *p }),
            AgentMsg::HbBackAlive(p) => f(Message::HbBackAlive {
                peer: *p,
                elapsed_us: 0,
            }),
            AgentMsg::HbMartian(p) => f(Message::HbMartian { peer: *p }),
            AgentMsg::HbShutdown(h) => f(Message::HbShutdown { hostname: h }),
            AgentMsg::SwDiscover(frame) => f(Message::SwDiscover(SwDiscover {
                wallclock_us: 0,
                pktdata: frame,
                interface: "eth0",
                hostname: "",
                discname: "lldp",
            })),
            AgentMsg::Ack => f(Message::Ack),
        }
    }
}

/// What a run measured and found.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Crash -> confirmed dead, ms of simulated time, one per detected
    /// crash whose monitors (when it crashed) were all alive to report it.
    pub detection_ms: Vec<u64>,
    /// The same for crashes a monitor of which crashed too before it could
    /// report: one report at most, the probe decides.
    pub detection_lone_ms: Vec<u64>,
    /// Crashed nodes never declared dead.
    pub undetected: usize,
    /// Live, reachable nodes declared dead.
    pub false_dead: usize,
    /// Switch partitions injected (long enough to be seen).
    pub partitions: usize,
    /// Of them, named as a switch fault.
    pub partitions_named: usize,
    /// Agents frozen and resumed.
    pub pauses: usize,
    /// Of the frozen agents, declared dead while frozen (rightly).
    pub paused_dead: usize,
    /// Per resumed agent: the time until it had ACKed everything and
    /// matched its rings, ms.
    pub back_settle_ms: Vec<u64>,
    /// Partitions that healed, and per heal the time until every agent of
    /// the switch had ACKed everything sent to it and matched its rings,
    /// ms.
    pub heal_settle_ms: Vec<u64>,
    /// Path faults injected / named.
    pub links: usize,
    /// Path-fault verdicts.
    pub path_fault_verdicts: usize,
    /// Datagrams the CMA sent (instructions, retransmits, ACKs).
    pub cma_sent: u64,
    /// Datagrams agents sent the CMA.
    pub agents_sent: u64,
    /// CMA datagrams sent during the fault phase (per fault: see
    /// [`SimReport::summary`]).
    pub cma_sent_faults: u64,
    /// Faults injected.
    pub faults: usize,
    /// Decider inputs handled.
    pub decisions: u64,
    /// Wall time spent inside the decider, ns.
    pub decider_ns: u128,
    /// Events the simulation processed.
    pub sim_events: u64,
    /// Invariant violations and missed expectations, with times.
    pub failures: Vec<String>,
    /// A digest of every effect, in order (for determinism tests).
    pub effects_digest: u64,
    /// Every decider input, when recorded.
    pub inputs: Vec<RecordedInput>,
    /// Ring instructions agents ACKed without carrying out.
    pub instructions_lost: u64,
    /// Agents whose heartbeat state was wiped.
    pub wipes: u64,
    /// Settled agents compared with their rings (one sender and one
    /// listener per neighbour) after an ACK.
    pub ring_checks: u64,
    /// Audits (HBSTATE compared with the rings) that found drift.
    pub drift_repaired: u64,
    /// Audit-interval samples at which some settled agent's state differed
    /// from its rings (each counted once per agent and sample).
    pub drift_samples: u64,
    /// The most consecutive samples one drift lasted.
    pub longest_drift_samples: u32,
    /// The decider at the end.
    pub decider: Option<Decider>,
}

impl SimReport {
    /// Detection-time percentile (0..=100), ms.
    pub fn detection_percentile(&self, p: f64) -> Option<u64> {
        if self.detection_ms.is_empty() {
            return None;
        }
        let mut v = self.detection_ms.clone();
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let pct = |p| {
            self.detection_percentile(p)
                .map_or("-".into(), |v| format!("{:.1} s", v as f64 / 1000.0))
        };
        let _ = writeln!(
            s,
            "crashes detected {} (undetected {}), detection p50 {} p90 {} p99 {} max {}",
            self.detection_ms.len(),
            self.undetected,
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(100.0)
        );
        if !self.detection_lone_ms.is_empty() {
            let _ = writeln!(
                s,
                "crashes with a monitor crashed too (the probe decides) {}, max {:.1} s",
                self.detection_lone_ms.len(),
                *self.detection_lone_ms.iter().max().unwrap_or(&0) as f64 / 1000.0
            );
        }
        if !self.heal_settle_ms.is_empty() {
            let mut h = self.heal_settle_ms.clone();
            h.sort_unstable();
            let _ = writeln!(
                s,
                "switches healed {}: every agent matched its rings after p50 {} ms, max {} ms",
                h.len(),
                h[h.len() / 2],
                h[h.len() - 1]
            );
        }
        let _ = writeln!(
            s,
            "false dead {}, switch partitions named {}/{}, path-fault verdicts {} (links broken {})",
            self.false_dead,
            self.partitions_named,
            self.partitions,
            self.path_fault_verdicts,
            self.links
        );
        let _ = writeln!(
            s,
            "settled agents checked against their rings (one sender, one listener per neighbour): {}",
            self.ring_checks
        );
        let per_fault = if self.faults == 0 {
            0.0
        } else {
            self.cma_sent_faults as f64 / self.faults as f64
        };
        let _ = writeln!(
            s,
            "CMA sent {} datagrams, agents {}; {:.1} CMA datagrams per fault in the fault phase",
            self.cma_sent, self.agents_sent, per_fault
        );
        let rate = if self.decider_ns == 0 {
            0.0
        } else {
            self.decisions as f64 * 1e9 / self.decider_ns as f64
        };
        let _ = writeln!(
            s,
            "decider: {} inputs, {:.2} s of CPU, {:.0} inputs/s",
            self.decisions,
            self.decider_ns as f64 / 1e9,
            rate
        );
        for f in self.failures.iter().take(20) {
            let _ = writeln!(s, "FAILURE: {f}");
        }
        if self.instructions_lost + self.wipes + self.drift_repaired > 0 {
            let _ = writeln!(
                s,
                "audits: {} ring instructions lost, {} agents wiped, {} drifts repaired; drift seen at {} samples, longest {} samples in a row",
                self.instructions_lost,
                self.wipes,
                self.drift_repaired,
                self.drift_samples,
                self.longest_drift_samples
            );
        }
        s
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

struct Agent {
    addr: SocketAddr,
    switch: u32,
    alive: bool,
    incarnation: u64,
    configured: bool,
    acked_startup: bool,
    leaving: bool,
    /// Frozen: it neither sends, receives nor acts (SIGSTOP).
    paused: bool,
    /// Peer agent -> heartbeat senders (a multiset, like a nanoprobe's:
    /// every start adds one) and listeners (a set: a second start replaces
    /// the listener, one stop removes it; the count is always 1).
    send: Vec<(u32, i32)>,
    expect: Vec<(u32, i32)>,
    /// Silence watch per expected peer: (peer, silent since, token,
    /// reported dead).
    watch: Vec<Watch>,
    /// Receiving side for the CMA: last request id delivered.
    cma_in: Option<u64>,
    /// The CMA's session on its receiving side (0: none yet).
    cma_session: u32,
    /// Sending side towards the CMA.
    next_seq: u64,
    outq: VecDeque<(u64, AgentMsg)>,
    retx_gen: u64,
}

impl Agent {
    fn new(addr: SocketAddr, switch: u32) -> Agent {
        Agent {
            addr,
            switch,
            alive: false,
            incarnation: 0,
            configured: false,
            acked_startup: false,
            leaving: false,
            paused: false,
            send: Vec::new(),
            expect: Vec::new(),
            watch: Vec::new(),
            cma_in: None,
            cma_session: 0,
            next_seq: 1,
            outq: VecDeque::new(),
            retx_gen: 0,
        }
    }
}

#[derive(Clone, Copy)]
struct Watch {
    peer: u32,
    silent_since: Option<u64>,
    token: u64,
    reported: bool,
}

fn count(v: &[(u32, i32)], p: u32) -> i32 {
    v.iter().find(|x| x.0 == p).map_or(0, |x| x.1)
}

fn bump(v: &mut Vec<(u32, i32)>, p: u32, d: i32) {
    match v.iter().position(|x| x.0 == p) {
        Some(i) => {
            v[i].1 = (v[i].1 + d).max(0);
            if v[i].1 == 0 {
                v.swap_remove(i);
            }
        }
        None if d > 0 => v.push((p, d)),
        None => {}
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Start(u32),
    /// An agent's periodic HBSTATE.
    StateTimer(u32, u64),
    /// An agent loses its heartbeat state.
    Wipe(u32),
    /// An agent told to discover its switch hears an LLDP frame.
    Lldp(u32, u64),
    /// Compare every agent with its rings (one audit interval apart).
    Audit,
    StartupResend(u32, u64),
    /// A datagram reaches the CMA.
    AtCma {
        from: u32,
        inc: u64,
        pkt: Pkt,
    },
    /// A CMA instruction reaches an agent.
    AtAgent {
        to: u32,
        inc: u64,
        reqid: ReqId,
        instr: Instruction,
    },
    /// The CMA's ACK of an agent's report reaches it.
    AckAtAgent {
        to: u32,
        inc: u64,
        seq: u64,
    },
    CmaRetx(u32, u64),
    AgentRetx(u32, u64),
    EdgeCheck {
        a: u32,
        peer: u32,
        token: u64,
    },
    Martian {
        a: u32,
        peer: u32,
    },
    Tick,
    Crash(u32),
    Shutdown(u32),
    PartitionStart(u32, u8),
    PartitionEnd(u32),
    /// Is every agent of a healed switch settled and as its rings say?
    HealCheck {
        sw: u32,
        since: u64,
    },
    /// An agent freezes for this long.
    Pause(u32, u32),
    Unpause(u32),
    /// Is an agent that resumed settled and as its rings say?
    BackCheck {
        a: u32,
        since: u64,
    },
    LinkStart(u32, u32),
    LinkEnd(u32, u32),
}

#[derive(Clone, Debug)]
enum Pkt {
    Startup,
    Seq { seq: u64, msg: AgentMsg },
    Ack(ReqId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Crashed(u64),
    Busy,
    Leaving,
    /// Frozen from this time: its death is right, its return must be
    /// seen.
    Paused(u64),
}

struct Sim {
    /// Per crashed agent: the agents that watched it when it crashed.
    crash_monitors: Vec<Vec<u32>>,
    /// Per agent: the drift seen at the last audit sample and for how many
    /// samples in a row.
    drift_streak: HashMap<u32, (String, u32)>,
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    agents: Vec<Agent>,
    by_addr: HashMap<SocketAddr, u32>,
    /// Agents expecting heartbeats from each agent.
    watchers: Vec<Vec<u32>>,
    /// Per switch: 0 connected, 1 uplink cut, 2 down (members isolated).
    partitioned: Vec<u8>,
    /// When the run ends (after the last fault healed and settled).
    end: u64,
    /// Broken one-way heartbeat paths (from, to).
    broken: Vec<(u32, u32)>,
    decider: Decider,
    lsn: u64,
    tick_at: Option<u64>,
    /// The CMA's receiving side per agent: (incarnation, last seq).
    cma_in: Vec<(u64, u64)>,
    /// The CMA's transport: instructions sent and not ACKed, per agent.
    cma_out: Vec<VecDeque<(ReqId, Instruction)>>,
    cma_retx_gen: Vec<u64>,
    node_agent: Vec<u32>,
    fate: Vec<Option<Fate>>,
    /// Partitions in force: (switch, start, end).
    partitions: Vec<(u32, u64, u64)>,
    links: Vec<(u32, u32, u64, u64)>,
    named_partitions: Vec<bool>,
    report: SimReport,
    effects: Vec<Effect>,
    digest: u64,
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> SimReport {
    let mut sim = Sim::new(cfg);
    sim.schedule_faults();
    sim.run();
    sim.finish()
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let n = cfg.nodes;
        let layout = switch_layout(n, cfg.small_groups, cfg.switch_size);
        let switches = layout.last().map_or(0, |l| l.0 as usize + 1);
        let mut dcfg = DeciderConfig::new(CMA, 1);
        dcfg.heartbeat_ms = cfg.heartbeat_ms;
        dcfg.dead_ms = cfg.dead_ms;
        dcfg.retransmit_ms = RETRANSMIT_MS;
        let mut s = Sim {
            crash_monitors: vec![Vec::new(); n],
            drift_streak: HashMap::new(),
            rng: Rng(cfg.seed ^ 0x5eed_5eed_5eed_5eed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            agents: Vec::with_capacity(n),
            by_addr: HashMap::with_capacity(n),
            watchers: vec![Vec::new(); n],
            partitioned: vec![0; switches],
            end: cfg.end_ms(),
            broken: Vec::new(),
            decider: Decider::new(dcfg),
            lsn: 0,
            tick_at: None,
            cma_in: vec![(0, 0); n],
            cma_out: vec![VecDeque::new(); n],
            cma_retx_gen: vec![0; n],
            node_agent: Vec::with_capacity(n),
            fate: vec![None; n],
            partitions: Vec::new(),
            links: Vec::new(),
            named_partitions: Vec::new(),
            report: SimReport::default(),
            effects: Vec::new(),
            digest: DIGEST_SEED,
            cfg,
        };
        for (i, (sw, host)) in layout.into_iter().enumerate() {
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, (sw >> 8) as u8, sw as u8, host)),
                1984,
            );
            s.by_addr.insert(addr, i as u32);
            s.agents.push(Agent::new(addr, sw));
            let at = s.rng.below(s.cfg.startup_spread_ms());
            s.at(at, Ev::Start(i as u32));
        }
        s
    }

    fn at(&mut self, t: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.events[i] = Some(ev);
                i
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, slot)));
    }

    fn delay(&mut self) -> u64 {
        // Whole ms on the virtual clock; 0.1 .. max_delay_us.
        (100 + self.rng.below(self.cfg.max_delay_us.max(100))) / 1000
    }

    fn path_ok(&self, from: u32, to: u32) -> bool {
        let (a, b) = (&self.agents[from as usize], &self.agents[to as usize]);
        let (pa, pb) = (
            self.partitioned[a.switch as usize],
            self.partitioned[b.switch as usize],
        );
        (if a.switch == b.switch {
            pa != 2
        } else {
            pa == 0 && pb == 0
        }) && !self.broken.contains(&(from, to))
    }

    fn cma_ok(&self, a: u32) -> bool {
        self.partitioned[self.agents[a as usize].switch as usize] == 0
    }

    fn schedule_faults(&mut self) {
        let f = self.cfg.faults.clone();
        let n = self.cfg.nodes as u64;
        if n < 4 {
            return;
        }
        let from = self.cfg.faults_from_ms();
        let span = 120_000;
        let mut used = vec![false; self.cfg.nodes];
        let mut used_sw = vec![false; self.partitioned.len()];
        let (lo, hi) = self.cfg.partition_ms;
        let (lo, hi) = (lo.max(1) as f64, hi.max(lo.max(1)) as f64);
        let pick = |rng: &mut Rng, used: &mut Vec<bool>, used_sw: &[bool], agents: &[Agent]| {
            for _ in 0..1000 {
                let i = rng.below(n) as usize;
                if !used[i] && !used_sw[agents[i].switch as usize] {
                    used[i] = true;
                    return Some(i as u32);
                }
            }
            None
        };
        // Partitions first, on switches with at least two agents, and only
        // when there is more than one switch.
        if self.partitioned.len() > 1 {
            for _ in 0..f.partition {
                let sw = self.rng.below(self.partitioned.len() as u64) as u32;
                let members = self.agents.iter().filter(|a| a.switch == sw).count();
                if used_sw[sw as usize] || members < 2 {
                    continue;
                }
                used_sw[sw as usize] = true;
                let t = from + self.rng.below(span);
                let u = self.rng.below(1 << 20) as f64 / f64::from(1u32 << 20);
                let len = (lo * (hi / lo).powf(u)) as u64;
                let kind = if self.rng.chance(self.cfg.switch_down) {
                    2
                } else {
                    1
                };
                self.partitions.push((sw, t, t + len));
                self.named_partitions.push(false);
                self.at(t, Ev::PartitionStart(sw, kind));
                self.at(t + len, Ev::PartitionEnd(sw));
                self.end = self.end.max(t + len + 150_000);
                self.report.faults += 1;
            }
        }
        for kind in 0..4 {
            let k = [f.crash, f.reboot, f.shutdown, f.link][kind];
            for _ in 0..k {
                let Some(a) = pick(&mut self.rng, &mut used, &used_sw, &self.agents) else {
                    continue;
                };
                let t = from + self.rng.below(span);
                self.report.faults += 1;
                match kind {
                    0 => {
                        self.fate[a as usize] = Some(Fate::Crashed(t));
                        self.at(t, Ev::Crash(a));
                    }
                    1 => {
                        self.fate[a as usize] = Some(Fate::Busy);
                        self.at(t, Ev::Crash(a));
                        let back = t + 5000 + self.rng.below(15_000);
                        self.at(back, Ev::Start(a));
                    }
                    2 => {
                        self.fate[a as usize] = Some(Fate::Leaving);
                        self.at(t, Ev::Shutdown(a));
                    }
                    _ => {
                        // The peer is chosen when the fault starts (from
                        // the agent's current peers).
                        let len = 40_000 + self.rng.below(20_000);
                        self.at(t, Ev::LinkStart(a, len as u32));
                    }
                }
            }
        }
        for _ in 0..f.wipe {
            let Some(a) = pick(&mut self.rng, &mut used, &used_sw, &self.agents) else {
                continue;
            };
            let t = from + self.rng.below(span);
            self.report.faults += 1;
            self.at(t, Ev::Wipe(a));
        }
        for _ in 0..f.pause {
            let Some(a) = pick(&mut self.rng, &mut used, &used_sw, &self.agents) else {
                continue;
            };
            let t = from + self.rng.below(span);
            let len = 45_000 + self.rng.below(15_000);
            self.report.faults += 1;
            self.fate[a as usize] = Some(Fate::Paused(t));
            self.at(t, Ev::Pause(a, len as u32));
        }
        if self.cfg.state_interval_ms > 0 {
            self.at(from, Ev::Audit);
        }
        debug_assert!(self.report.faults <= f.total());
    }

    fn run(&mut self) {
        let end = self.end;
        while let Some(Reverse((t, _, slot))) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            let ev = self.events[slot].take().expect("scheduled event present");
            self.free.push(slot);
            self.report.sim_events += 1;
            self.step(ev);
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Start(a) => self.start(a),
            Ev::StateTimer(a, inc) => {
                let ag = &self.agents[a as usize];
                if ag.alive && ag.incarnation == inc && !ag.leaving {
                    self.agent_state(a);
                    let t = self.now + self.cfg.state_interval_ms;
                    self.at(t, Ev::StateTimer(a, inc));
                }
            }
            Ev::Wipe(a) => self.wipe(a),
            Ev::Lldp(a, inc) => {
                let ag = &self.agents[a as usize];
                if ag.alive && ag.incarnation == inc {
                    self.discover_switch(a);
                }
            }
            Ev::Audit => {
                self.audit_sample();
                let t = self.now + self.cfg.state_interval_ms;
                self.at(t, Ev::Audit);
            }
            Ev::StartupResend(a, inc) => {
                let ag = &self.agents[a as usize];
                if ag.alive && ag.incarnation == inc && !(ag.configured && ag.acked_startup) {
                    self.send_to_cma(a, Pkt::Startup);
                    self.at(self.now + STARTUP_RESEND_MS, Ev::StartupResend(a, inc));
                }
            }
            Ev::AtCma { from, inc, pkt } => self.at_cma(from, inc, pkt),
            Ev::AtAgent {
                to,
                inc,
                reqid,
                instr,
            } => self.at_agent(to, inc, reqid, instr),
            Ev::AckAtAgent { to, inc, seq } => {
                let ag = &mut self.agents[to as usize];
                if !ag.alive || ag.incarnation != inc || ag.paused {
                    return;
                }
                let before = ag.outq.len();
                while ag.outq.front().is_some_and(|(s, _)| *s <= seq) {
                    ag.outq.pop_front();
                }
                if ag.outq.len() != before {
                    if ag.leaving && ag.outq.is_empty() {
                        // HBSHUTDOWN delivered: the agent exits.
                        self.stop_agent(to);
                        return;
                    }
                    self.agent_send_head(to);
                }
            }
            Ev::CmaRetx(a, g) => {
                if self.cma_retx_gen[a as usize] != g {
                    return;
                }
                if let Some((r, i)) = self.cma_out[a as usize].front().cloned() {
                    self.cma_send(a, r, i);
                    self.at(self.now + RETRANSMIT_MS, Ev::CmaRetx(a, g));
                }
            }
            Ev::AgentRetx(a, g) => {
                let ag = &self.agents[a as usize];
                if !ag.alive || ag.retx_gen != g || ag.outq.is_empty() || ag.paused {
                    return;
                }
                self.agent_send_head(a);
            }
            Ev::EdgeCheck { a, peer, token } => {
                let ag = &mut self.agents[a as usize];
                if !ag.alive || ag.paused {
                    return;
                }
                let Some(w) = ag
                    .watch
                    .iter_mut()
                    .find(|w| w.peer == peer && w.token == token)
                else {
                    return;
                };
                if w.silent_since.is_some() && !w.reported {
                    w.reported = true;
                    let p = self.agents[peer as usize].addr;
                    self.agent_report(a, AgentMsg::HbDead(p));
                }
            }
            Ev::Martian { a, peer } => {
                if self.agents[a as usize].paused {
                    return;
                }
                if self.is_martian(a, peer) {
                    let p = self.agents[peer as usize].addr;
                    self.agent_report(a, AgentMsg::HbMartian(p));
                    self.at(self.now + 10_000, Ev::Martian { a, peer });
                }
            }
            Ev::Tick => {
                if self.tick_at == Some(self.now) {
                    self.tick_at = None;
                    self.decide(None, None, None);
                }
            }
            Ev::Crash(a) => {
                self.crash_monitors[a as usize] = self.watchers[a as usize].clone();
                self.stop_agent(a);
            }
            Ev::Shutdown(a) => {
                if self.agents[a as usize].alive {
                    self.agents[a as usize].leaving = true;
                    self.agent_report(a, AgentMsg::HbShutdown(format!("h{a}")));
                }
            }
            Ev::PartitionStart(sw, kind) => {
                self.partitioned[sw as usize] = kind;
                self.refresh_switch(sw);
            }
            Ev::PartitionEnd(sw) => {
                self.partitioned[sw as usize] = 0;
                self.refresh_switch(sw);
                let since = self.now;
                self.at(self.now + HEAL_CHECK_MS, Ev::HealCheck { sw, since });
            }
            Ev::HealCheck { sw, since } => self.heal_check(sw, since),
            Ev::Pause(a, len) => {
                if self.agents[a as usize].alive {
                    self.agents[a as usize].paused = true;
                    // Its heartbeats stop.
                    for w in self.watchers[a as usize].clone() {
                        self.refresh(w, a);
                    }
                    self.at(self.now + u64::from(len), Ev::Unpause(a));
                }
            }
            Ev::Unpause(a) => {
                self.agents[a as usize].paused = false;
                self.report.pauses += 1;
                // Its heartbeats resume, it sees its peers' again, and its
                // timers fire: what it queued goes out.
                for w in self.watchers[a as usize].clone() {
                    self.refresh(w, a);
                }
                // Peers it still heartbeats but that stopped expecting it
                // (its death closed the ring) see martians.
                let sends: Vec<u32> = self.agents[a as usize].send.iter().map(|x| x.0).collect();
                for b in sends {
                    self.refresh(b, a);
                }
                let peers: Vec<u32> = self.agents[a as usize].expect.iter().map(|x| x.0).collect();
                for b in peers {
                    self.refresh(a, b);
                }
                self.agent_send_head(a);
                let since = self.now;
                self.at(self.now + HEAL_CHECK_MS, Ev::BackCheck { a, since });
            }
            Ev::BackCheck { a, since } => self.back_check(a, since),
            Ev::LinkStart(a, len) => {
                // Break the path from one of a's expected peers to a.
                let ag = &self.agents[a as usize];
                if !ag.alive || ag.expect.is_empty() {
                    return;
                }
                let i = self.rng.below(ag.expect.len() as u64) as usize;
                let b = ag.expect[i].0;
                if self.fate[b as usize].is_some() {
                    return;
                }
                self.fate[b as usize] = Some(Fate::Busy);
                self.broken.push((b, a));
                self.links.push((b, a, self.now, self.now + u64::from(len)));
                self.report.links += 1;
                self.refresh(a, b);
                self.at(self.now + u64::from(len), Ev::LinkEnd(b, a));
            }
            Ev::LinkEnd(b, a) => {
                self.broken.retain(|x| *x != (b, a));
                self.refresh(a, b);
            }
        }
    }

    fn start(&mut self, a: u32) {
        let inc = 1_700_000_000_000_000 + self.now * 1000 + u64::from(a);
        let ag = &mut self.agents[a as usize];
        if ag.alive {
            return;
        }
        *ag = Agent {
            alive: true,
            incarnation: inc,
            ..Agent::new(ag.addr, ag.switch)
        };
        self.send_to_cma(a, Pkt::Startup);
        self.at(self.now + STARTUP_RESEND_MS, Ev::StartupResend(a, inc));
    }

    /// SWDISCOVER with the switch's LLDP frame (a nanoprobe reports its
    /// switch once the CMA asked it to listen on its NIC).
    fn discover_switch(&mut self, a: u32) {
        let sw = self.agents[a as usize].switch;
        let mac = [2, 0, 0, (sw >> 8) as u8, sw as u8, (a % 251) as u8];
        let frame = lldp_frame(mac, &format!("sw-{sw}"), &format!("p{a}"), "edge");
        self.agent_report(a, AgentMsg::SwDiscover(frame));
    }

    fn stop_agent(&mut self, a: u32) {
        let ag = &mut self.agents[a as usize];
        if !ag.alive {
            return;
        }
        ag.alive = false;
        ag.outq.clear();
        let sends: Vec<u32> = ag.send.iter().map(|x| x.0).collect();
        let expects: Vec<u32> = ag.expect.iter().map(|x| x.0).collect();
        for p in expects {
            self.watchers[p as usize].retain(|w| *w != a);
        }
        let watchers = self.watchers[a as usize].clone();
        for w in watchers {
            self.refresh(w, a);
        }
        let _ = sends;
    }

    /// Re-evaluates everything about a switch's agents after a partition
    /// change.
    fn refresh_switch(&mut self, sw: u32) {
        let members: Vec<u32> = (0..self.agents.len() as u32)
            .filter(|i| self.agents[*i as usize].switch == sw)
            .collect();
        for x in members {
            let watchers = self.watchers[x as usize].clone();
            for w in watchers {
                self.refresh(w, x);
            }
            let expects: Vec<u32> = self.agents[x as usize].expect.iter().map(|e| e.0).collect();
            for b in expects {
                self.refresh(x, b);
            }
        }
    }

    fn delivering(&self, b: u32, a: u32) -> bool {
        let bb = &self.agents[b as usize];
        bb.alive && !bb.paused && count(&bb.send, a) > 0 && self.path_ok(b, a)
    }

    fn is_martian(&self, a: u32, b: u32) -> bool {
        self.agents[a as usize].alive
            && self.delivering(b, a)
            && count(&self.agents[a as usize].expect, b) == 0
    }

    /// Re-evaluates agent `a`'s view of peer `b`'s heartbeats.
    fn refresh(&mut self, a: u32, b: u32) {
        if !self.agents[a as usize].alive {
            return;
        }
        let d = self.delivering(b, a);
        let now = self.now;
        let hb = self.cfg.heartbeat_ms;
        let expects = count(&self.agents[a as usize].expect, b) > 0;
        if !expects {
            if d {
                let t = now + self.rng.below(hb) + 1;
                self.at(t, Ev::Martian { a, peer: b });
            }
            return;
        }
        let ag = &mut self.agents[a as usize];
        let i = match ag.watch.iter().position(|w| w.peer == b) {
            Some(i) => i,
            None => {
                ag.watch.push(Watch {
                    peer: b,
                    silent_since: None,
                    token: 0,
                    reported: false,
                });
                ag.watch.len() - 1
            }
        };
        let w = &mut ag.watch[i];
        if d {
            if w.silent_since.take().is_some() && w.reported {
                w.reported = false;
                let p = self.agents[b as usize].addr;
                self.agent_report(a, AgentMsg::HbBackAlive(p));
            }
        } else if w.silent_since.is_none() {
            w.silent_since = Some(now);
            w.token += 1;
            let token = w.token;
            // The last heartbeat came up to one interval before; the agent
            // notices on its own tick, up to one interval after.
            let t = now + self.cfg.dead_ms - self.rng.below(hb) + self.rng.below(hb);
            self.at(t, Ev::EdgeCheck { a, peer: b, token });
        }
    }

    fn send_to_cma(&mut self, a: u32, pkt: Pkt) {
        self.report.agents_sent += 1;
        if !self.cma_ok(a) || self.rng.chance(self.cfg.loss) {
            return;
        }
        let inc = self.agents[a as usize].incarnation;
        let copies = if self.rng.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let t = self.now + self.delay();
            self.at(
                t,
                Ev::AtCma {
                    from: a,
                    inc,
                    pkt: pkt.clone(),
                },
            );
        }
    }

    fn agent_report(&mut self, a: u32, msg: AgentMsg) {
        let ag = &mut self.agents[a as usize];
        let seq = ag.next_seq;
        ag.next_seq += 1;
        ag.outq.push_back((seq, msg));
        if ag.outq.len() == 1 {
            self.agent_send_head(a);
        }
    }

    fn agent_send_head(&mut self, a: u32) {
        let ag = &mut self.agents[a as usize];
        if ag.paused {
            return;
        }
        let Some((seq, msg)) = ag.outq.front().cloned() else {
            return;
        };
        ag.retx_gen += 1;
        let g = ag.retx_gen;
        self.send_to_cma(a, Pkt::Seq { seq, msg });
        self.at(self.now + RETRANSMIT_MS, Ev::AgentRetx(a, g));
    }

    fn at_cma(&mut self, from: u32, inc: u64, pkt: Pkt) {
        let addr = self.agents[from as usize].addr;
        match pkt {
            Pkt::Startup => {
                let msg = AgentMsg::Startup {
                    hostname: format!("h{from}"),
                    listen: addr,
                    wallclock_us: inc,
                    netconfig: format!(
                        "{{\"data\":{{\"eth0\":{{\"carrier\":true,\"ipaddrs\":{{\"{}/24\":{{}}}}}}}}}}",
                        addr.ip()
                    ),
                    hbstate: self.cfg.state_interval_ms > 0,
                };
                self.decide(Some(addr), None, Some(msg));
            }
            Pkt::Seq { seq, msg } => {
                // The io thread's receiving half: in order, duplicates
                // re-ACKed, a new incarnation starts afresh.
                let st = &mut self.cma_in[from as usize];
                if st.0 != inc {
                    *st = (inc, 0);
                }
                if seq <= st.1 {
                    let last = st.1;
                    self.ack_agent(from, inc, last);
                    return;
                }
                if seq != st.1 + 1 {
                    return;
                }
                st.1 = seq;
                let reqid = ReqId {
                    session: inc as u32,
                    request: seq,
                    queue: 0,
                };
                self.decide(Some(addr), Some(reqid), Some(msg));
                // Durable at once in the model: ACK.
                self.ack_agent(from, inc, seq);
            }
            Pkt::Ack(r) => {
                let q = &mut self.cma_out[from as usize];
                while q
                    .front()
                    .is_some_and(|(x, _)| x.session == r.session && x.request <= r.request)
                {
                    q.pop_front();
                }
                self.decide(Some(addr), Some(r), Some(AgentMsg::Ack));
                self.check_settled_agent(from);
            }
        }
    }

    /// Once an agent has ACKed every instruction sent to it, it must have
    /// exactly one sender and one listener per ring neighbour and nothing
    /// else (DESIGN.md rule 8): checked after every ring change as soon as
    /// the agent has it. Not where instructions are lost or agents wiped on
    /// purpose (the audit's tests cover those).
    fn check_settled_agent(&mut self, a: u32) {
        if !self.cfg.check_invariants
            || self.cfg.instr_loss > 0.0
            || self.cfg.state_interval_ms > 0
            || self.cfg.faults.wipe > 0
        {
            return;
        }
        let Some(id) = self.decider.node_at(self.agents[a as usize].addr) else {
            return;
        };
        let n = &self.decider.nodes()[id as usize];
        let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
        if !n.out.settled() || !in_service || !self.agents[a as usize].alive {
            return;
        }
        self.report.ring_checks += 1;
        if let Some(p) = self.ring_mismatch(id) {
            self.fail(format!("h{a} after its last ACK: {p}"));
        }
    }

    /// How agent-of-node `id` differs from its rings (one sender and one
    /// listener per neighbour), if it does.
    fn ring_mismatch(&self, id: u32) -> Option<String> {
        let a = self.node_agent[id as usize];
        let ag = &self.agents[a as usize];
        let topo = self.decider.topology();
        let mut want: Vec<(u32, i32)> = Vec::new();
        if topo.group_of(id).is_some() {
            for p in topo.peers_of(id) {
                want.push((self.node_agent[p as usize], 1));
            }
        }
        let mut expect = ag.expect.clone();
        let mut send = ag.send.clone();
        want.sort_unstable();
        expect.sort_unstable();
        send.sort_unstable();
        (want != expect || want != send)
            .then(|| format!("h{a} sends {send:?} and expects {expect:?}, its rings say {want:?}"))
    }

    fn ack_agent(&mut self, to: u32, inc: u64, seq: u64) {
        self.report.cma_sent += 1;
        self.count_fault_phase();
        if !self.cma_ok(to) || self.rng.chance(self.cfg.loss) {
            return;
        }
        let t = self.now + self.delay();
        self.at(t, Ev::AckAtAgent { to, inc, seq });
    }

    fn count_fault_phase(&mut self) {
        let from = self.cfg.faults_from_ms();
        if self.now >= from && self.now < from + 180_000 {
            self.report.cma_sent_faults += 1;
        }
    }

    fn cma_send(&mut self, to: u32, reqid: ReqId, instr: Instruction) {
        self.report.cma_sent += 1;
        self.count_fault_phase();
        if !self.cma_ok(to) || self.rng.chance(self.cfg.loss) {
            return;
        }
        let inc = self.agents[to as usize].incarnation;
        let copies = if self.rng.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let t = self.now + self.delay();
            self.at(
                t,
                Ev::AtAgent {
                    to,
                    inc,
                    reqid,
                    instr: instr.clone(),
                },
            );
        }
    }

    fn at_agent(&mut self, to: u32, inc: u64, reqid: ReqId, instr: Instruction) {
        let ag = &mut self.agents[to as usize];
        if !ag.alive || ag.incarnation != inc || ag.paused {
            return;
        }
        // A nanoprobe's receiving side: the first session it sees is
        // adopted at any request id; an older one is dropped; a newer one
        // starts afresh at request 1 (fsqueue.c).
        let request = reqid.request;
        if ag.cma_session == 0 {
            ag.cma_session = reqid.session;
        } else if reqid.session < ag.cma_session {
            return;
        } else if reqid.session > ag.cma_session {
            ag.cma_session = reqid.session;
            ag.cma_in = Some(0);
        }
        match ag.cma_in {
            Some(last) if request <= last => {
                // A duplicate: ACK again, do not obey again.
                self.agent_ack(to, last);
                return;
            }
            Some(last) if request != last + 1 => return,
            _ => {}
        }
        ag.cma_in = Some(request);
        let was_ready = ag.configured && ag.acked_startup;
        let ring = matches!(
            instr,
            Instruction::Heartbeat { .. } | Instruction::Half { .. } | Instruction::StopSending(_)
        );
        let lost = ring && self.cfg.instr_loss > 0.0 && self.rng.chance(self.cfg.instr_loss);
        if lost {
            self.report.instructions_lost += 1;
        }
        match &instr {
            // ACKed below, never carried out.
            _ if lost => {}
            Instruction::SetConfig(_) => ag.configured = true,
            Instruction::AckStartup => ag.acked_startup = true,
            Instruction::Heartbeat { start, peers } => {
                self.change_heartbeats(to, peers, (true, true), *start);
            }
            Instruction::StopSending(peers) => {
                self.change_heartbeats(to, peers, (true, false), false);
            }
            Instruction::Half { send, start, peers } => {
                self.change_heartbeats(to, peers, (*send, !*send), *start);
            }
            // A nanoprobe hears its switch's next LLDP frame (every few
            // seconds) once it listens on the NIC.
            Instruction::SwitchDiscovery(nics) if nics.iter().any(|n| n == "eth0") => {
                let inc = ag.incarnation;
                let t = self.now + 1 + self.rng.below(LLDP_PERIOD_MS);
                self.at(t, Ev::Lldp(to, inc));
            }
            Instruction::SwitchDiscovery(_)
            | Instruction::Probe
            | Instruction::StateRequest
            | Instruction::ConnShut => {}
        }
        let ag = &self.agents[to as usize];
        let ready = ag.configured && ag.acked_startup;
        self.agent_ack(to, request);
        if self.cfg.state_interval_ms > 0 && ready {
            if !was_ready {
                // Its first HBSTATE at once, then every interval.
                self.agent_state(to);
                let t = self.now + self.cfg.state_interval_ms;
                self.at(t, Ev::StateTimer(to, inc));
            } else if ring || matches!(instr, Instruction::StateRequest) {
                self.agent_state(to);
            }
        }
    }

    /// Agent `to` starts (or stops) heartbeating and/or watching `peers`
    /// as a nanoprobe does (senders stack, listeners do not): `(send,
    /// expect)` say which.
    fn change_heartbeats(
        &mut self,
        to: u32,
        peers: &[SocketAddr],
        (send, expect): (bool, bool),
        start: bool,
    ) {
        let d = if start { 1 } else { -1 };
        let mut touched = Vec::new();
        for p in peers {
            let Some(&b) = self.by_addr.get(p) else {
                continue;
            };
            let ag = &mut self.agents[to as usize];
            if send {
                bump(&mut ag.send, b, d);
            }
            if expect {
                let before = count(&ag.expect, b);
                if start && before == 0 {
                    ag.expect.push((b, 1));
                } else if !start {
                    ag.expect.retain(|x| x.0 != b);
                }
                let after = count(&ag.expect, b);
                if before == 0 && after > 0 {
                    self.watchers[b as usize].push(to);
                } else if before > 0 && after == 0 {
                    self.watchers[b as usize].retain(|w| *w != to);
                    self.agents[to as usize].watch.retain(|w| w.peer != b);
                }
            }
            touched.push(b);
        }
        for b in touched {
            if expect {
                self.refresh(to, b);
            }
            self.refresh(b, to);
        }
    }

    /// Queues an HBSTATE with the agent's state as it is now.
    fn agent_state(&mut self, a: u32) {
        let ag = &self.agents[a as usize];
        let mut expect: Vec<(SocketAddr, bool)> = ag
            .expect
            .iter()
            .map(|&(b, _)| {
                let dead = ag.watch.iter().any(|w| w.peer == b && w.reported);
                (self.agents[b as usize].addr, dead)
            })
            .collect();
        expect.sort_unstable();
        let mut send: Vec<SocketAddr> = ag
            .send
            .iter()
            .map(|&(b, _)| self.agents[b as usize].addr)
            .collect();
        send.sort_unstable();
        let msg = AgentMsg::HbState {
            wallclock_us: ag.incarnation,
            applied: ag.cma_in.map(|r| (ag.cma_session, r)),
            expect,
            send,
        };
        self.agent_report(a, msg);
    }

    /// The agent forgets whom it heartbeats and watches (no STARTUP).
    fn wipe(&mut self, a: u32) {
        if !self.agents[a as usize].alive {
            return;
        }
        self.report.wipes += 1;
        let ag = &mut self.agents[a as usize];
        let sends: Vec<u32> = ag.send.drain(..).map(|x| x.0).collect();
        let expects: Vec<u32> = ag.expect.drain(..).map(|x| x.0).collect();
        ag.watch.clear();
        for b in expects {
            self.watchers[b as usize].retain(|w| *w != a);
            self.refresh(a, b);
        }
        for b in sends {
            self.refresh(b, a);
        }
    }

    /// What agent `a` heartbeats and watches, against its rings, as sets:
    /// `None` when they agree.
    fn drift_of(&self, id: usize) -> Option<String> {
        let a = self.node_agent[id];
        let ag = &self.agents[a as usize];
        let topo = self.decider.topology();
        let mut want: Vec<u32> = topo
            .peers_of(id as u32)
            .into_iter()
            .map(|p| self.node_agent[p as usize])
            .collect();
        want.sort_unstable();
        want.dedup();
        let mut send: Vec<u32> = ag.send.iter().map(|x| x.0).collect();
        let mut expect: Vec<u32> = ag.expect.iter().map(|x| x.0).collect();
        send.sort_unstable();
        expect.sort_unstable();
        (send != want || expect != want)
            .then(|| format!("sends {send:?} expects {expect:?}, its rings say {want:?}"))
    }

    /// One audit-interval sample: a settled agent (nothing in flight to
    /// it) whose state differs from its rings is drifting; the same drift
    /// seen at three samples in a row has outlived one audit interval
    /// (a drift starting just after a sample is seen at the next two).
    fn audit_sample(&mut self) {
        let mut seen = Vec::new();
        for (id, n) in self.decider.nodes().iter().enumerate() {
            let a = self.node_agent[id];
            let ag = &self.agents[a as usize];
            let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
            if !ag.alive || !in_service || ag.leaving || !n.out.settled() {
                continue;
            }
            if let Some(d) = self.drift_of(id) {
                seen.push((a, d));
            }
        }
        self.report.drift_samples += seen.len() as u64;
        let mut next = HashMap::new();
        for (a, d) in seen {
            let streak = match self.drift_streak.get(&a) {
                Some((prev, k)) if *prev == d => k + 1,
                _ => 1,
            };
            self.report.longest_drift_samples = self.report.longest_drift_samples.max(streak);
            if streak == 3 {
                self.fail(format!(
                    "h{a} drifted for more than one audit interval: {d}"
                ));
            }
            next.insert(a, (d, streak));
        }
        self.drift_streak = next;
    }

    fn agent_ack(&mut self, a: u32, request: u64) {
        let session = self.agents[a as usize].cma_session;
        self.send_to_cma(
            a,
            Pkt::Ack(ReqId {
                session,
                request,
                queue: 0,
            }),
        );
    }

    /// One decider input; then its effects.
    fn decide(&mut self, from: Option<SocketAddr>, reqid: Option<ReqId>, msg: Option<AgentMsg>) {
        self.lsn += 1;
        let mut effects = std::mem::take(&mut self.effects);
        effects.clear();
        let version = self.decider.topology().version();
        let t0 = Instant::now();
        feed_live(
            &mut self.decider,
            self.lsn,
            self.now,
            from,
            reqid,
            msg.as_ref(),
            &mut effects,
        );
        self.report.decider_ns += t0.elapsed().as_nanos();
        self.report.decisions += 1;
        if self.cfg.record_inputs {
            let rec = RecordedInput::of(self.lsn, self.now, from, reqid, msg.as_ref());
            self.report.inputs.push(rec);
        }
        for e in &effects {
            self.digest = fnv(self.digest, format!("{e:?}").as_bytes());
            match e {
                Effect::Send {
                    node,
                    reqid,
                    instruction,
                    ..
                } => {
                    let a = self.node_agent[*node as usize];
                    self.cma_out[a as usize].push_back((*reqid, instruction.clone()));
                    if self.cma_out[a as usize].len() == 1 {
                        self.cma_retx_gen[a as usize] += 1;
                        let g = self.cma_retx_gen[a as usize];
                        self.at(self.now + RETRANSMIT_MS, Ev::CmaRetx(a, g));
                    }
                    self.cma_send(a, *reqid, instruction.clone());
                }
                Effect::Forget { to } => {
                    if let Some(&a) = self.by_addr.get(to) {
                        self.cma_out[a as usize].clear();
                        self.cma_retx_gen[a as usize] += 1;
                    }
                }
                Effect::Notice(n) => self.notice(n),
                Effect::Row(_)
                | Effect::Ring { .. }
                | Effect::Discovery { .. }
                | Effect::Stats { .. } => {}
            }
        }
        self.effects = effects;
        if self.cfg.check_invariants
            && self.decider.topology().version() != version
            && let Err(e) = self.decider.check()
        {
            self.fail(format!("invariant: {e}"));
        }
        if let Some(d) = self.decider.next_deadline_ms()
            && self.tick_at.is_none_or(|t| d < t)
        {
            let d = d.max(self.now);
            self.tick_at = Some(d);
            self.at(d, Ev::Tick);
        }
    }

    fn notice(&mut self, n: &Notice) {
        match n {
            Notice::Joined(id) => {
                let addr = self.decider.node(*id).expect("joined node").addr;
                let a = self.by_addr[&addr];
                debug_assert_eq!(self.node_agent.len(), *id as usize);
                self.node_agent.push(a);
            }
            Notice::Dead { node, .. } => {
                let a = self.node_agent[*node as usize];
                let ag = &self.agents[a as usize];
                match self.fate[a as usize] {
                    Some(Fate::Paused(t)) if ag.paused => {
                        self.report.paused_dead += 1;
                        let _ = t;
                    }
                    Some(Fate::Crashed(t)) if !ag.alive => {
                        // Were its monitors at the crash alive to report it?
                        let lone = self.crash_monitors[a as usize]
                            .iter()
                            .any(|m| !self.agents[*m as usize].alive);
                        if lone {
                            self.report.detection_lone_ms.push(self.now - t);
                        } else {
                            self.report.detection_ms.push(self.now - t);
                        }
                        self.fate[a as usize] = None;
                    }
                    _ if !ag.alive => {}
                    _ => {
                        // Alive: whatever cut it off, a live node is never
                        // dead.
                        self.report.false_dead += 1;
                        let how = if self.cma_ok(a) {
                            "reachable"
                        } else {
                            "cut off"
                        };
                        self.fail(format!("live node h{a} ({how}) declared dead"));
                    }
                }
            }
            Notice::SwitchFault { group, .. } => {
                for (i, (sw, t0, t1)) in self.partitions.iter().enumerate() {
                    if *group == GroupKey::Switch(format!("sw-{sw}"))
                        && self.now >= *t0
                        && self.now <= *t1 + 10_000
                    {
                        self.named_partitions[i] = true;
                    }
                }
            }
            Notice::PathFault { .. } => self.report.path_fault_verdicts += 1,
            _ => {}
        }
    }

    fn fail(&mut self, what: String) {
        if self.report.failures.len() < 100 {
            self.report
                .failures
                .push(format!("seed {} t={} ms: {what}", self.cfg.seed, self.now));
        }
    }

    fn finish(mut self) -> SimReport {
        // Expectations at the end, after everything healed and settled.
        for (a, f) in self.fate.clone().iter().enumerate() {
            if let Some(Fate::Crashed(t)) = f {
                self.report.undetected += 1;
                self.fail(format!(
                    "h{a} crashed at {t} ms and was never declared dead"
                ));
            }
        }
        let seen_after = self.cfg.dead_ms + 15_000;
        for (i, (sw, t0, t1)) in self.partitions.clone().into_iter().enumerate() {
            if t1 - t0 < seen_after {
                // Over before any monitor could report it.
                continue;
            }
            self.report.partitions += 1;
            if self.named_partitions[i] {
                self.report.partitions_named += 1;
            } else {
                self.fail(format!(
                    "switch sw-{sw} cut off {t0}..{t1} ms was not named a switch fault"
                ));
            }
        }
        if let Err(e) = self.decider.check() {
            self.fail(format!("invariant at the end: {e}"));
        }
        if self.cfg.state_interval_ms > 0 {
            // Audits repair sets, not counts (HBSTATE has none): compare
            // what each agent does.
            let ids: Vec<usize> = (0..self.decider.nodes().len()).collect();
            let mut problems = Vec::new();
            for id in ids {
                let n = &self.decider.nodes()[id];
                let a = self.node_agent[id];
                let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
                if in_service != self.agents[a as usize].alive {
                    problems.push(format!("h{a}: decider says {:?}", n.health));
                } else if in_service && let Some(d) = self.drift_of(id) {
                    problems.push(format!("h{a} at the end: {d}"));
                }
            }
            for p in problems.into_iter().take(10) {
                self.fail(p);
            }
        } else {
            self.check_agents_match_rings();
        }
        self.report.drift_repaired = self.decider.counters().drift;
        self.report.effects_digest = self.digest;
        self.report.decider = Some(self.decider);
        self.report
    }

    /// After a heal: once every live agent of switch `sw` that the decider
    /// keeps in service has ACKed everything and matches its rings, the
    /// time is recorded; past [`HEAL_SETTLE_MAX_MS`] it is a failure.
    fn heal_check(&mut self, sw: u32, since: u64) {
        // Not where instructions are lost or agents wiped on purpose (the
        // audit's tests cover those).
        if self.partitioned[sw as usize] != 0
            || self.cfg.instr_loss > 0.0
            || self.cfg.state_interval_ms > 0
            || self.cfg.faults.wipe > 0
        {
            return;
        }
        let mut problem = None;
        for (id, n) in self.decider.nodes().iter().enumerate() {
            let a = self.node_agent[id];
            let ag = &self.agents[a as usize];
            let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
            if ag.switch != sw || !ag.alive || ag.leaving || self.fate[a as usize].is_some() {
                continue;
            }
            if !in_service {
                problem = Some(format!("h{a} is {:?}", n.health));
            } else if !n.out.settled() {
                problem = Some(format!("h{a} has instructions unACKed"));
            } else if let Some(p) = self.ring_mismatch(id as u32) {
                problem = Some(p);
            }
            if problem.is_some() {
                break;
            }
        }
        match problem {
            None => self.report.heal_settle_ms.push(self.now - since),
            Some(p) if self.now - since > HEAL_SETTLE_MAX_MS => {
                self.report.heal_settle_ms.push(self.now - since);
                self.fail(format!(
                    "switch sw-{sw} healed at {since} ms; {} ms later: {p}",
                    self.now - since
                ));
            }
            Some(_) => self.at(self.now + HEAL_CHECK_MS, Ev::HealCheck { sw, since }),
        }
    }

    /// After an agent resumed: once the decider has it in service, settled
    /// and matching its rings, the time is recorded; past
    /// [`HEAL_SETTLE_MAX_MS`] it is a failure (a wedged agent never gets
    /// there).
    fn back_check(&mut self, a: u32, since: u64) {
        let Some(id) = self.decider.node_at(self.agents[a as usize].addr) else {
            return;
        };
        let n = &self.decider.nodes()[id as usize];
        let problem = if matches!(n.health, Health::Dead(_) | Health::Left) {
            Some(format!("still {:?}", n.health))
        } else if !n.out.settled() {
            Some("instructions unACKed".to_string())
        } else {
            self.ring_mismatch(id)
        };
        match problem {
            None => {
                self.report.back_settle_ms.push(self.now - since);
                self.fate[a as usize] = None;
            }
            Some(p) if self.now - since > HEAL_SETTLE_MAX_MS => {
                self.report.back_settle_ms.push(self.now - since);
                self.fate[a as usize] = None;
                self.fail(format!(
                    "h{a} resumed at {since} ms; {} ms later: {p}",
                    self.now - since
                ));
            }
            Some(_) => self.at(self.now + HEAL_CHECK_MS, Ev::BackCheck { a, since }),
        }
    }

    /// Every live agent heartbeats exactly the peers its rings say, and
    /// every node the decider keeps in service is a live agent.
    fn check_agents_match_rings(&mut self) {
        let mut problems = Vec::new();
        for (id, n) in self.decider.nodes().iter().enumerate() {
            let a = self.node_agent[id];
            let ag = &self.agents[a as usize];
            let in_service = !matches!(n.health, Health::Dead(_) | Health::Left);
            if in_service != ag.alive {
                problems.push(format!(
                    "h{a}: decider says {:?}, agent alive={}",
                    n.health, ag.alive
                ));
                continue;
            }
            if !ag.alive {
                continue;
            }
            if let Some(p) = self.ring_mismatch(id as u32) {
                problems.push(p);
            }
        }
        for p in problems.into_iter().take(10) {
            self.fail(p);
        }
    }
}

/// (switch, host number from 1) of each agent: `small` agents on switches
/// of 1, 2, ... 6 agents in turn, then switches of `size`.
fn switch_layout(n: usize, small: usize, size: usize) -> Vec<(u32, u8)> {
    let size = size.clamp(1, 250);
    let small = small.min(n);
    let mut caps = Vec::new();
    let mut left = small;
    while left > 0 {
        let c = (caps.len() % 6 + 1).min(left);
        caps.push(c);
        left -= c;
    }
    left = n - small;
    while left > 0 {
        let c = size.min(left);
        caps.push(c);
        left -= c;
    }
    caps.iter()
        .enumerate()
        .flat_map(|(sw, &c)| (1..=c).map(move |h| (sw as u32, h as u8)))
        .collect()
}

/// Where [`effects_digest`] starts (the FNV-1a offset basis).
const DIGEST_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// The digest a run reports as `effects_digest`, of these effects in order.
pub fn effects_digest(effects: &[Effect]) -> u64 {
    effects
        .iter()
        .fold(DIGEST_SEED, |h, e| fnv(h, format!("{e:?}").as_bytes()))
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
