//! Our agent: a nanoprobe speaking WIRE.md, as a sans-IO state machine.
//!
//! [`Agent`] holds one agent's whole protocol state and never touches a
//! socket or a clock: the caller passes each arriving datagram and the time
//! (ms on any monotonic clock), calls [`Agent::tick`] at
//! [`Agent::next_deadline_ms`], and sends what [`Agent::drain`] returns.
//! `cma agent` drives one over a real socket ([`run`]); `cma fleet` drives
//! thousands on one event loop (`crate::fleet`, a harness of its own). The
//! agent is a pure client: it knows the wire protocol, not the CMA's
//! internals.
//!
//! What it does, in the order of a life:
//! - STARTUP (host name, listen address, WALLCLOCK = start time, netconfig
//!   JSON) at once and every `startup_every_ms` until it has both SETCONFIG
//!   and ACKSTARTUP; SETCONFIG's `cmafail`/`cmadisc` say where reports go.
//! - Once joined: SWDISCOVER with an LLDP frame naming its switch, when it
//!   was told one.
//! - Obeys SENDHB, EXPECTHB, SENDEXPECTHB and their STOP forms as a real
//!   nanoprobe does (clientlib/hbsender.c, hblistener.c): every start adds
//!   a *sender*, even for a peer already heartbeated, and each stop removes
//!   one; *listeners* are a set: a start replaces the peer's listener (its
//!   clock starts afresh), one stop removes it; a stop for an unknown peer
//!   changes nothing. The CMA's reliable layer makes each instruction count
//!   once, and the CMA must name a peer at most once (DESIGN.md rule 8).
//! - Heartbeats every `repeat`; a watched peer silent for `timeout` is
//!   reported HBDEAD, heard again HBBACKALIVE; a heartbeat that arrives more
//!   than `warn` after the previous one is reported HBLATE with how late; a
//!   heartbeat from a peer it does not watch is reported HBMARTIAN (at most
//!   once per peer per `MARTIAN_EVERY_MS`).
//! - Answers PING with PONG and SEQPING with SEQPONG.
//! - Its reports are sequenced FrameSets: one connection per CMA address,
//!   the protocol's window and 2 s retransmission ([`Outbound`]), its
//!   session from its start time.
//! - ACKs every sequenced FrameSet it delivers, after obeying it; a
//!   duplicate gets the last ACK again and is not obeyed twice.
//! - [`Agent::shutdown`]: HBSHUTDOWN, then CONNSHUT once that is
//!   acknowledged; done when the CMA ACKed both or sent its own CONNSHUT,
//!   or after `shutdown_wait_ms`.

pub mod netconfig;
pub mod run;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use crate::classify::switch::lldp_frame;
use crate::classify::{
    Classified, EncodeOptions, FrameSetType, HbParams, HbState, Message, PeerState, PeerStates,
    PeerStatus, Peers, ReqId, Startup, SwDiscover, classify_all, encode,
};
use crate::reliable::{ConnKey, Inbound, Outbound, OutboundConfig, Verdict, normalize};

/// A heartbeat from an unwatched peer is reported at most this often per peer.
pub const MARTIAN_EVERY_MS: u64 = 10_000;

/// The extensions this agent announces in STARTUP (docs/wire-extensions.md).
pub const FEATURES: &str = "hbstate,actionnak,stats";

/// At most this many peers to heartbeat, and as many to watch; an
/// instruction beyond it is refused with ACTIONNAK (code 2).
pub const MAX_PEERS: usize = 64;

/// ACTIONNAK codes.
pub mod nak {
    /// A peer address the agent cannot use.
    pub const BAD_ADDRESS: u64 = 1;
    /// A resource limit.
    pub const LIMIT: u64 = 2;
    /// Not supported.
    pub const UNSUPPORTED: u64 = 3;
}

/// The switch an agent says it hangs off (sent as SWDISCOVER with an LLDP frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchId {
    /// LLDP chassis id.
    pub chassis: String,
    /// LLDP port id (the switch port).
    pub port: String,
    /// The interface it was "captured" on.
    pub interface: String,
    /// Source MAC of the frame.
    pub mac: [u8; 6],
}

/// One agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// HOSTNAME: the agent's identity at the CMA.
    pub hostname: String,
    /// The address announced in STARTUP (a wildcard: the CMA takes the source).
    pub listen: SocketAddr,
    /// Where STARTUP goes (and reports, until SETCONFIG says otherwise).
    pub cma: SocketAddr,
    /// WALLCLOCK: the process's start, µs since the epoch.
    pub wallclock_us: u64,
    /// Netconfig JSON for STARTUP's JSDISCOVER.
    pub netconfig: String,
    /// Switch to announce, if any.
    pub switch: Option<SwitchId>,
    /// STARTUP resend interval (WIRE.md: 5 s).
    pub startup_every_ms: u64,
    /// Reports: resend the oldest unacknowledged one this often (2 s).
    pub retransmit_ms: u64,
    /// Give up waiting for the CMA after this long in shutdown.
    pub shutdown_wait_ms: u64,
    /// ARP-table discovery JSON to send once joined (None: none).
    pub arp: Option<String>,
}

impl AgentConfig {
    /// Settings with the protocol's timers.
    pub fn new(hostname: String, listen: SocketAddr, cma: SocketAddr, wallclock_us: u64) -> Self {
        AgentConfig {
            hostname,
            listen,
            cma,
            wallclock_us,
            netconfig: "{}".into(),
            switch: None,
            startup_every_ms: 5000,
            retransmit_ms: 2000,
            shutdown_wait_ms: 10_000,
            arp: None,
        }
    }
}

/// A sequenced report waiting for its ACK (encoded when sent, with its REQID).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Report {
    HbDead(SocketAddr),
    HbLate(SocketAddr, u64),
    HbBackAlive(SocketAddr, u64),
    HbMartian(SocketAddr),
    HbShutdown,
    SwDiscover(Vec<u8>),
    ConnShut,
    /// A snapshot: last instruction applied, watched peers, sent-to peers.
    HbState(Option<ReqId>, Vec<PeerState>, Vec<SocketAddr>),
    ActionNak(ReqId, u64, String),
    Stats(String),
    Discovery(String),
}

/// What the agent has done, for progress lines and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounters {
    /// STARTUPs sent.
    pub startups: u64,
    /// HEARTBEATs sent.
    pub heartbeats_sent: u64,
    /// HEARTBEATs received from watched peers.
    pub heartbeats_heard: u64,
    /// Instructions obeyed (sequenced or not).
    pub instructions: u64,
    /// Duplicate instructions re-ACKed, not obeyed again.
    pub duplicates: u64,
    /// Reports queued (HBDEAD, HBLATE, ...).
    pub reports: u64,
    /// Report transmissions that were resends.
    pub resends: u64,
    /// Datagrams or FrameSets dropped: malformed, stale session, gap.
    pub dropped: u64,
    /// FrameSets of types we do not act on (ACKed when sequenced).
    pub ignored: u64,
    /// HBSTATE reports sent.
    pub hbstates: u64,
    /// Instructions refused with ACTIONNAK.
    pub naks: u64,
}

/// A peer we expect heartbeats from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watch {
    /// Last heartbeat (or the instruction's arrival), ms.
    last_ms: u64,
    /// Reported dead and not heard since.
    dead: bool,
    warn_ms: u64,
    timeout_ms: u64,
}

/// The phase of an agent's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Sending STARTUP; not yet both SETCONFIG and ACKSTARTUP.
    Joining,
    /// Configured and acknowledged.
    Joined,
    /// Shutting down: HBSHUTDOWN/CONNSHUT in flight.
    Leaving,
    /// Finished (the process may exit).
    Done,
}

/// The pre-encoded HEARTBEAT FrameSet (it has no varying field).
pub fn heartbeat_bytes() -> &'static [u8] {
    static HB: OnceLock<Vec<u8>> = OnceLock::new();
    HB.get_or_init(|| {
        let mut v = Vec::with_capacity(64);
        encode(&Message::Heartbeat, None, &EncodeOptions::default(), &mut v)
            .expect("a heartbeat fits");
        v
    })
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// The constant HEARTBEAT ([`heartbeat_bytes`]).
    Heartbeat(SocketAddr),
    /// Anything else, encoded.
    Bytes(SocketAddr, Vec<u8>),
}

impl Datagram {
    /// Destination.
    pub fn to(&self) -> SocketAddr {
        match self {
            Datagram::Heartbeat(a) | Datagram::Bytes(a, _) => *a,
        }
    }

    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Datagram::Heartbeat(_) => heartbeat_bytes(),
            Datagram::Bytes(_, b) => b,
        }
    }
}

/// One agent's protocol state.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    phase: Phase,
    configured: bool,
    acked_startup: bool,
    next_startup_ms: u64,
    /// SETCONFIG's `cmafail` (reports of deaths) and `cmadisc` (discovery).
    fail: SocketAddr,
    disc: SocketAddr,
    /// Receiving sides, per CMA address and queue.
    inbound: Vec<(ConnKey, Inbound)>,
    /// Sending sides, per destination.
    outbound: Vec<(SocketAddr, Outbound<Report>)>,
    session: u32,
    repeat_ms: u64,
    warn_ms: u64,
    timeout_ms: u64,
    /// Peers we heartbeat, with their instruction count.
    send: BTreeMap<SocketAddr, u32>,
    /// Peers we watch.
    expect: BTreeMap<SocketAddr, Watch>,
    next_hb_ms: Option<u64>,
    martians: BTreeMap<SocketAddr, u64>,
    leave_by_ms: u64,
    connshut_sent: bool,
    switch_sent: bool,
    /// The last CMA instruction delivered (HBSTATE's INSTRREQID).
    applied: Option<ReqId>,
    /// HBSTATE every this often (SETCONFIG `state_interval`, s); 0: never.
    state_every_ms: u64,
    next_state_ms: Option<u64>,
    /// STATS every this often (SETCONFIG `stats_interval`, s); 0: never.
    stats_every_ms: u64,
    next_stats_ms: Option<u64>,
    /// Heartbeat instructions changed: an HBSTATE is due.
    state_changed: bool,
    stats_due_from_join: bool,
    out: Vec<Datagram>,
    counters: AgentCounters,
}

impl Agent {
    /// A new agent at `now_ms`; its first STARTUP is due at once.
    pub fn new(cfg: AgentConfig, now_ms: u64) -> Agent {
        let session = (cfg.wallclock_us / 1_000_000) as u32;
        Agent {
            fail: cfg.cma,
            disc: cfg.cma,
            cfg,
            phase: Phase::Joining,
            configured: false,
            acked_startup: false,
            next_startup_ms: now_ms,
            inbound: Vec::new(),
            outbound: Vec::new(),
            session: session.max(1),
            repeat_ms: 1000,
            warn_ms: 5000,
            timeout_ms: 30_000,
            send: BTreeMap::new(),
            expect: BTreeMap::new(),
            next_hb_ms: None,
            martians: BTreeMap::new(),
            leave_by_ms: 0,
            connshut_sent: false,
            switch_sent: false,
            applied: None,
            state_every_ms: 60_000,
            next_state_ms: None,
            stats_every_ms: 300_000,
            next_stats_ms: None,
            state_changed: false,
            stats_due_from_join: false,
            out: Vec::new(),
            counters: AgentCounters::default(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Where its life is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// What it has done.
    pub fn counters(&self) -> AgentCounters {
        self.counters
    }

    /// Peers it heartbeats (each once, whatever the count).
    pub fn sending_to(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.send.keys().copied()
    }

    /// Peers it watches.
    pub fn expecting(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.expect.keys().copied()
    }

    /// Per peer: (peer, senders, listeners). More than one sender means a
    /// start took effect twice; listeners are 0 or 1.
    pub fn heartbeat_counts(&self) -> Vec<(SocketAddr, u32, u32)> {
        let mut m: BTreeMap<SocketAddr, (u32, u32)> = BTreeMap::new();
        for (&p, &c) in &self.send {
            m.entry(p).or_default().0 = c;
        }
        for &p in self.expect.keys() {
            m.entry(p).or_default().1 = 1;
        }
        m.into_iter().map(|(p, (s, e))| (p, s, e)).collect()
    }

    /// Watched peers currently reported dead.
    pub fn dead_peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.expect.iter().filter(|(_, w)| w.dead).map(|(&p, _)| p)
    }

    /// Reports not yet acknowledged.
    pub fn unacked_reports(&self) -> usize {
        self.outbound.iter().map(|(_, o)| o.len()).sum()
    }

    /// Takes the datagrams to send.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Datagram> {
        self.out.drain(..)
    }

    /// When [`Agent::tick`] next has something to do.
    pub fn next_deadline_ms(&self) -> u64 {
        if self.phase == Phase::Done {
            return u64::MAX;
        }
        let mut t = u64::MAX;
        if self.phase == Phase::Joining {
            t = t.min(self.next_startup_ms);
        }
        if self.phase == Phase::Leaving {
            t = t.min(self.leave_by_ms);
        }
        if let Some(h) = self.next_hb_ms {
            t = t.min(h);
        }
        if self.phase == Phase::Joined {
            for x in [self.next_state_ms, self.next_stats_ms]
                .into_iter()
                .flatten()
            {
                t = t.min(x);
            }
        }
        for w in self.expect.values().filter(|w| !w.dead) {
            t = t.min(w.last_ms.saturating_add(w.timeout_ms));
        }
        for (_, o) in &self.outbound {
            if let Some(r) = o.next_timeout_ms() {
                t = t.min(r);
            }
        }
        t
    }

    /// Does what is due at `now_ms`: STARTUP, heartbeats, deaths, resends.
    pub fn tick(&mut self, now_ms: u64) {
        match self.phase {
            Phase::Done => return,
            Phase::Joining if now_ms >= self.next_startup_ms => {
                self.send_startup();
                self.next_startup_ms = now_ms + self.cfg.startup_every_ms;
            }
            Phase::Leaving if now_ms >= self.leave_by_ms => {
                self.phase = Phase::Done;
                return;
            }
            _ => {}
        }
        if let Some(h) = self.next_hb_ms
            && now_ms >= h
        {
            for &p in self.send.keys() {
                self.out.push(Datagram::Heartbeat(p));
            }
            self.counters.heartbeats_sent += self.send.len() as u64;
            self.next_hb_ms = Some(h.saturating_add(self.repeat_ms).max(now_ms + 1));
        }
        let mut deaths = Vec::new();
        for (&p, w) in self.expect.iter_mut() {
            if !w.dead && now_ms >= w.last_ms.saturating_add(w.timeout_ms) {
                w.dead = true;
                deaths.push(p);
            }
        }
        for p in deaths {
            self.report(Report::HbDead(p));
        }
        if self.phase == Phase::Joined {
            if self.next_state_ms.is_some_and(|t| now_ms >= t) {
                self.state_changed = true;
            }
            if self.next_stats_ms.is_some_and(|t| now_ms >= t) {
                self.next_stats_ms = Some(now_ms + self.stats_every_ms);
                let json = self.stats_json();
                self.report(Report::Stats(json));
            }
        }
        self.flush(now_ms);
    }

    /// The agent's counters as STATS JSON.
    pub fn stats_json(&self) -> String {
        let c = &self.counters;
        serde_json::json!({
            "heartbeats_sent": c.heartbeats_sent,
            "heartbeats_heard": c.heartbeats_heard,
            "reports": c.reports,
            "resends": c.resends,
            "dropped": c.dropped,
            "instructions": c.instructions,
            "duplicates": c.duplicates,
            "naks": c.naks,
            "dead_peers": self.expect.values().filter(|w| w.dead).count(),
            "sending_to": self.send.len(),
            "expecting": self.expect.len(),
            "unacked_reports": self.unacked_reports(),
        })
        .to_string()
    }

    /// Test hook: the agent loses its heartbeat state (as if its process
    /// restarted without a new STARTUP). The next HBSTATE tells the CMA.
    pub fn wipe_heartbeat_state(&mut self) {
        self.send.clear();
        self.expect.clear();
        self.next_hb_ms = None;
    }

    /// Begins a clean shutdown (SIGTERM): HBSHUTDOWN, then CONNSHUT.
    pub fn shutdown(&mut self, now_ms: u64) {
        match self.phase {
            Phase::Leaving | Phase::Done => return,
            Phase::Joining => {
                // Nothing to tell a CMA that never took us in.
                self.phase = Phase::Done;
                return;
            }
            Phase::Joined => {}
        }
        self.phase = Phase::Leaving;
        self.leave_by_ms = now_ms + self.cfg.shutdown_wait_ms;
        self.report(Report::HbShutdown);
        self.flush(now_ms);
    }

    fn report(&mut self, r: Report) {
        self.counters.reports += 1;
        let to = match r {
            Report::SwDiscover(_) => self.disc,
            _ => self.fail,
        };
        self.queue(to, r);
    }

    fn queue(&mut self, to: SocketAddr, r: Report) {
        let cfg = OutboundConfig {
            window: 2,
            retransmit_ms: self.cfg.retransmit_ms,
        };
        let session = self.session;
        let i = match self.outbound.iter().position(|(a, _)| *a == to) {
            Some(i) => i,
            None => {
                self.outbound.push((to, Outbound::new(session, 0, cfg)));
                self.outbound.len() - 1
            }
        };
        self.outbound[i].1.push(r);
    }

    /// Puts due reports on the wire.
    fn flush(&mut self, now_ms: u64) {
        if self.phase == Phase::Joined {
            if self.stats_due_from_join {
                self.stats_due_from_join = false;
                self.next_stats_ms =
                    (self.stats_every_ms > 0).then(|| now_ms + self.stats_every_ms);
            }
            if self.state_changed {
                self.state_changed = false;
                self.queue_state(now_ms);
            }
        }
        let mut sends = Vec::new();
        for (to, o) in self.outbound.iter_mut() {
            for t in o.poll_transmit(now_ms) {
                if t.retransmit {
                    self.counters.resends += 1;
                }
                sends.push((*to, t.reqid, t.item.clone()));
            }
        }
        for (to, reqid, r) in sends {
            let hostname = self.cfg.hostname.clone();
            let wallclock_us = self.cfg.wallclock_us;
            let interface = self
                .cfg
                .switch
                .as_ref()
                .map(|s| s.interface.clone())
                .unwrap_or_default();
            let m = match &r {
                Report::HbDead(p) => Message::HbDead { peer: *p },
                Report::HbLate(p, e) => Message::HbLate {
                    peer: *p,
                    elapsed_us: *e,
                },
                Report::HbBackAlive(p, e) => Message::HbBackAlive {
                    peer: *p,
                    elapsed_us: *e,
                },
                Report::HbMartian(p) => Message::HbMartian { peer: *p },
                Report::HbShutdown => Message::HbShutdown {
                    hostname: &hostname,
                },
                Report::SwDiscover(frame) => Message::SwDiscover(SwDiscover {
                    wallclock_us,
                    pktdata: frame,
                    interface: &interface,
                    hostname: &hostname,
                    discname: "lldp",
                }),
                Report::ConnShut => Message::ConnShut,
                Report::HbState(applied, states, peers) => Message::HbState(HbState {
                    wallclock_us,
                    applied: *applied,
                    expect: PeerStates::List(states),
                    send: Peers::List(peers),
                }),
                Report::ActionNak(instr, code, why) => Message::ActionNak {
                    instr: *instr,
                    code: *code,
                    reason: why,
                },
                Report::Stats(json) => Message::Stats { json },
                Report::Discovery(json) => Message::JsDiscovery {
                    wallclock_us: Some(wallclock_us),
                    json,
                },
            };
            self.send_message(to, &m, Some(reqid));
        }
    }

    /// Queues an HBSTATE snapshot and schedules the next one.
    fn queue_state(&mut self, now_ms: u64) {
        self.next_state_ms = (self.state_every_ms > 0).then(|| now_ms + self.state_every_ms);
        let states = self
            .expect
            .iter()
            .map(|(&peer, w)| {
                let since = now_ms.saturating_sub(w.last_ms);
                PeerState {
                    peer,
                    status: if w.dead {
                        PeerStatus::Dead
                    } else if since > w.warn_ms {
                        PeerStatus::Late
                    } else {
                        PeerStatus::Up
                    },
                    since_ms: since.min(u64::from(u32::MAX)) as u32,
                }
            })
            .collect();
        let peers = self.send.keys().copied().collect();
        self.counters.hbstates += 1;
        self.report(Report::HbState(self.applied, states, peers));
    }

    fn send_startup(&mut self) {
        self.counters.startups += 1;
        let m = Message::Startup(Startup {
            hostname: &self.cfg.hostname,
            listen: self.cfg.listen,
            wallclock_us: self.cfg.wallclock_us,
            netconfig: &self.cfg.netconfig,
            key: None,
            features: Some(FEATURES),
        });
        let mut b = Vec::with_capacity(256 + self.cfg.netconfig.len());
        if encode(&m, None, &EncodeOptions::default(), &mut b).is_ok() {
            self.out.push(Datagram::Bytes(self.cfg.cma, b));
        }
    }

    fn ack(&mut self, to: SocketAddr, r: ReqId) {
        self.send_message(to, &Message::Ack, Some(r));
    }

    fn send_message(&mut self, to: SocketAddr, m: &Message<'_>, reqid: Option<ReqId>) {
        let mut b = Vec::with_capacity(96);
        if encode(m, reqid, &EncodeOptions::default(), &mut b).is_ok() {
            self.out.push(Datagram::Bytes(to, b));
        }
    }
}

mod receive;
#[cfg(test)]
mod tests;

/// The sequenced types a real nanoprobe obeys and ACKs (WIRE.md "What a
/// real nanoprobe obeys"), and HBSTATEREQ, which this agent announces;
/// anything else sent to it sequenced (SEQPING, a type it does not know)
/// is never ACKed.
fn obeys(m: &Message<'_>) -> bool {
    matches!(
        m,
        Message::Heartbeats { .. }
            | Message::StopHeartbeats { .. }
            | Message::SetConfig { .. }
            | Message::AckStartup
            | Message::IncrDebug
            | Message::DecrDebug
            | Message::Discover { .. }
            | Message::RscOp { .. }
            | Message::ConnShut
            | Message::HbStateReq
    )
}
