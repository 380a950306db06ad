//! The CMA's sending side towards one agent (hard-won rule 1): request ids,
//! the window of instructions in flight, and the coalesced queue behind it.
//! It lives in the decider's state and checkpoint, so that replay re-emits
//! an instruction with the same (session, request id) and an agent discards
//! it as a duplicate.
//!
//! Heartbeat instructions not yet sent are kept as net changes per peer
//! address: a SENDEXPECTHB cancelled by a later STOPSENDEXPECTHB for the
//! same peer is neither sent. Nothing is ever truncated.

use std::collections::VecDeque;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::reliable::{RetransmitPolicy, RetransmitTimer, Timeout};

/// Instructions in flight once the agent has ACKed anything (WIRE.md: a
/// window of 2); one until then.
pub const WINDOW: usize = 2;

/// An instruction for an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instruction {
    /// SETCONFIG with this CONFIGJSON.
    SetConfig(String),
    /// ACKSTARTUP.
    AckStartup,
    /// SENDEXPECTHB (`start`) or STOPSENDEXPECTHB about these peers, each
    /// named once (a real nanoprobe stacks a sender per start: DESIGN.md
    /// rule 8).
    Heartbeat {
        /// Start or stop.
        start: bool,
        /// The peers.
        peers: Vec<SocketAddr>,
    },
    /// A probe the agent obeys as a no-op and ACKs: STOPSENDHB naming an
    /// address it never heartbeats (the CMA's own).
    Probe,
    /// STOPSENDHB about these peers: a martian heartbeating a node that
    /// does not expect it.
    StopSending(Vec<SocketAddr>),
    /// A repair after an audit (HBSTATE): SENDHB/STOPSENDHB (`send`) or
    /// EXPECTHB/STOPEXPECTHB about these peers.
    Half {
        /// Sending (true) or expecting (false).
        send: bool,
        /// Start or stop.
        start: bool,
        /// The peers.
        peers: Vec<SocketAddr>,
    },
    /// HBSTATEREQ: send your HBSTATE (only to agents that announced it).
    StateRequest,
    /// DODISCOVER of type `#SWITCH` for these interfaces: a nanoprobe
    /// listens for LLDP/CDP on an interface only when told to, and answers
    /// with SWDISCOVER once it hears its switch.
    SwitchDiscovery(Vec<String>),
    /// CONNSHUT, sequenced like any instruction: the answer to an agent's
    /// own CONNSHUT, which a nanoprobe shutting down waits for and ACKs
    /// (its protocol machine logs an error for one without a REQID).
    ConnShut,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Pending {
    One(Instruction),
    /// Net heartbeat changes per peer (never zero).
    Hb(Vec<(SocketAddr, i32)>),
}

/// The queue towards one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutQueue {
    /// Sessions this queue moved on from (each reset starts the next,
    /// with request ids from 1): added to the CMA's session id.
    #[serde(default)]
    epoch: u32,
    next_request: u64,
    acked: u64,
    ever_acked: bool,
    inflight: VecDeque<(u64, Instruction)>,
    pending: VecDeque<Pending>,
    /// The retransmission of the oldest instruction in flight.
    #[serde(default)]
    timer: RetransmitTimer,
}

/// What the oldest instruction in flight needs at a given time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retransmit {
    /// Nothing now.
    Nothing,
    /// Send it again: (request id, instruction).
    Resend(u64, Instruction),
    /// The agent never ACKed it: stop.
    GiveUp,
}

impl Default for OutQueue {
    fn default() -> Self {
        OutQueue {
            epoch: 0,
            next_request: 1,
            acked: 0,
            ever_acked: false,
            inflight: VecDeque::new(),
            pending: VecDeque::new(),
            timer: RetransmitTimer::default(),
        }
    }
}

impl OutQueue {
    /// Queues an instruction that does not coalesce.
    pub fn push(&mut self, i: Instruction) {
        self.pending.push_back(Pending::One(i));
    }

    /// Is an equal instruction already waiting or in flight?
    pub fn holds(&self, i: &Instruction) -> bool {
        self.inflight.iter().any(|(_, x)| x == i)
            || self
                .pending
                .iter()
                .any(|p| matches!(p, Pending::One(x) if x == i))
    }

    /// Queues heartbeat changes, merged into the unsent ones at the back
    /// of the queue (never into changes queued before another instruction:
    /// a repair such as EXPECTHB must keep its place relative to them, or a
    /// later STOP would overtake it).
    pub fn push_hb(&mut self, start: bool, peers: &[SocketAddr]) {
        let d = if start { 1 } else { -1 };
        if !matches!(self.pending.back(), Some(Pending::Hb(_))) {
            self.pending.push_back(Pending::Hb(Vec::new()));
        }
        let at = self.pending.len() - 1;
        let Pending::Hb(net) = &mut self.pending[at] else {
            unreachable!("position found an Hb entry")
        };
        for p in peers {
            // The topology emits net edges (a start only from none, a stop
            // only to none), so a start and a stop cancel and two of a
            // kind are one: an agent is never told about a peer twice.
            match net.iter().position(|(a, _)| a == p) {
                Some(i) => net[i].1 = (net[i].1 + d).clamp(-1, 1),
                None => net.push((*p, d)),
            }
        }
        net.retain(|(_, n)| *n != 0);
        if net.is_empty() {
            self.pending.remove(at);
        }
    }

    /// Moves instructions into the window, assigning request ids; returns
    /// the newly sent ones (sent at `now_ms`).
    pub fn promote(&mut self, now_ms: u64) -> Vec<(u64, Instruction)> {
        if self.inflight.is_empty() && !self.pending.is_empty() {
            self.timer.start(now_ms);
        }
        let window = if self.ever_acked { WINDOW } else { 1 };
        let mut sent = Vec::new();
        while self.inflight.len() < window {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            let i = match p {
                Pending::One(i) => i,
                Pending::Hb(net) => {
                    let mut stops = Vec::new();
                    // Entries are -1 or +1 (push_hb clamps).
                    let mut rest = Vec::new();
                    for (a, n) in net {
                        if n < 0 {
                            stops.push(a);
                        } else {
                            rest.push((a, n));
                        }
                    }
                    if stops.is_empty() {
                        Instruction::Heartbeat {
                            start: true,
                            peers: rest.into_iter().map(|(a, _)| a).collect(),
                        }
                    } else {
                        if !rest.is_empty() {
                            self.pending.push_front(Pending::Hb(rest));
                        }
                        Instruction::Heartbeat {
                            start: false,
                            peers: stops,
                        }
                    }
                }
            };
            let r = self.next_request;
            self.next_request += 1;
            self.inflight.push_back((r, i.clone()));
            sent.push((r, i));
        }
        sent
    }

    /// The agent ACKed through `request` (cumulative) at `now_ms`. Returns
    /// whether it covered anything in flight.
    pub fn on_ack(&mut self, request: u64, now_ms: u64) -> bool {
        if request >= self.next_request {
            // An ACK for something never sent: ignore it.
            return false;
        }
        self.ever_acked = true;
        self.acked = self.acked.max(request);
        let before = self.inflight.len();
        while self.inflight.front().is_some_and(|(r, _)| *r <= request) {
            self.inflight.pop_front();
        }
        if self.inflight.is_empty() && self.pending.is_empty() {
            // A settled agent holds no buffers: a million of them would.
            self.inflight = VecDeque::new();
            self.pending = VecDeque::new();
        }
        let covered = self.inflight.len() != before;
        if covered {
            // The next oldest gets its own timer from now (or the next
            // promotion starts one).
            if self.inflight.is_empty() {
                self.timer.stop();
            } else {
                self.timer.start(now_ms);
            }
        }
        covered
    }

    /// When the oldest instruction in flight needs attention (resend or
    /// give-up), log ms.
    pub fn retransmit_deadline(&self, p: &RetransmitPolicy) -> Option<u64> {
        if self.inflight.is_empty() {
            return None;
        }
        self.timer.deadline_ms(p)
    }

    /// Transmissions of the oldest instruction in flight so far.
    pub fn tries(&self) -> u32 {
        self.timer.tries()
    }

    /// What the oldest instruction in flight needs at `now_ms`. On a
    /// give-up nothing is dropped yet: the caller decides (see
    /// [`OutQueue::reset`]).
    pub fn poll_retransmit(&mut self, now_ms: u64, p: &RetransmitPolicy) -> Retransmit {
        let Some((r, i)) = self.inflight.front() else {
            self.timer.stop();
            return Retransmit::Nothing;
        };
        match self.timer.handle_timeout(now_ms, p) {
            Timeout::Resend => Retransmit::Resend(*r, i.clone()),
            Timeout::GiveUp => Retransmit::GiveUp,
            Timeout::Idle | Timeout::Wait(_) => Retransmit::Nothing,
        }
    }

    /// The agent was heard from, or must be reached soon (a probe): a
    /// retransmission that backed off is due at once. Returns whether the
    /// deadline moved.
    pub fn rearm(&mut self, now_ms: u64, p: &RetransmitPolicy) -> bool {
        !self.inflight.is_empty() && self.timer.rearm(now_ms, p)
    }

    /// The highest request id the agent ACKed.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The request id the next instruction will get.
    pub fn next_request(&self) -> u64 {
        self.next_request
    }

    /// Instructions sent and not yet ACKed, oldest first.
    pub fn inflight(&self) -> impl Iterator<Item = &(u64, Instruction)> {
        self.inflight.iter()
    }

    /// Is a heartbeat change about `peer` not yet ACKed (queued or in
    /// flight)?
    pub fn unsettled_about(&self, peer: SocketAddr) -> bool {
        let about = |i: &Instruction| match i {
            Instruction::Heartbeat { peers, .. }
            | Instruction::Half { peers, .. }
            | Instruction::StopSending(peers) => peers.contains(&peer),
            _ => false,
        };
        self.inflight.iter().any(|(_, i)| about(i))
            || self.pending.iter().any(|p| match p {
                Pending::Hb(net) => net.iter().any(|(a, _)| *a == peer),
                Pending::One(i) => about(i),
            })
    }

    /// Every peer named by a heartbeat instruction not yet ACKed (in
    /// flight or queued, start or stop): what the agent may hold beyond
    /// what was settled.
    pub fn unsettled_peers(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        let mut add = |p: &SocketAddr| {
            if !out.contains(p) {
                out.push(*p);
            }
        };
        let named = |i: &Instruction| -> Vec<SocketAddr> {
            match i {
                Instruction::Heartbeat { peers, .. }
                | Instruction::Half { peers, .. }
                | Instruction::StopSending(peers) => peers.clone(),
                _ => Vec::new(),
            }
        };
        for (_, i) in &self.inflight {
            named(i).iter().for_each(&mut add);
        }
        for p in &self.pending {
            match p {
                Pending::Hb(net) => net.iter().for_each(|(a, _)| add(a)),
                Pending::One(i) => named(i).iter().for_each(&mut add),
            }
        }
        out
    }

    /// Nothing queued or in flight: every instruction sent was ACKed.
    pub fn settled(&self) -> bool {
        self.inflight.is_empty() && self.pending.is_empty()
    }

    /// Instructions waiting behind the window.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The agent closes the connection: what waits behind the window is
    /// moot, our CONNSHUT goes after what is in flight (dropping that would
    /// leave a gap the agent's receiving side waits on forever).
    pub fn close(&mut self) {
        self.pending.clear();
        if !self.holds(&Instruction::ConnShut) {
            self.push(Instruction::ConnShut);
        }
    }

    /// The agent is gone, or what was queued for it is dropped (declared
    /// dead, restarted, degraded): drop everything and move to a new
    /// session, whose request ids start at 1. A nanoprobe that still lives
    /// would otherwise wait forever for the request ids dropped here and
    /// hold back every later instruction; a higher session id makes it
    /// start its receiving side afresh (and a new process accepts any).
    pub fn reset(&mut self) {
        self.inflight.clear();
        self.pending.clear();
        self.timer.stop();
        self.ever_acked = false;
        self.epoch += 1;
        self.next_request = 1;
        self.acked = 0;
    }

    /// The session of this queue: the CMA's session id plus one per
    /// reset.
    pub fn session(&self, base: u32) -> u32 {
        base.wrapping_add(self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 1984))
    }

    #[test]
    fn one_in_flight_until_the_first_ack_then_two() {
        let mut q = OutQueue::default();
        q.push(Instruction::SetConfig("{}".into()));
        q.push(Instruction::AckStartup);
        q.push(Instruction::Probe);
        q.push(Instruction::Probe);
        let s = q.promote(0);
        assert_eq!(s, vec![(1, Instruction::SetConfig("{}".into()))]);
        assert!(q.promote(0).is_empty());
        assert!(!q.on_ack(5, 0), "an ACK for a request never sent");
        assert!(q.on_ack(1, 0));
        let s = q.promote(0);
        assert_eq!(s.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 3]);
        // A duplicate ACK changes nothing.
        assert!(!q.on_ack(1, 0));
        assert!(q.on_ack(3, 0));
        assert_eq!(q.promote(0).len(), 1);
        assert_eq!(q.acked(), 3);
    }

    #[test]
    fn a_start_cancelled_by_a_stop_is_never_sent() {
        let mut q = OutQueue::default();
        q.push(Instruction::AckStartup);
        q.push_hb(true, &[a(1), a(2)]);
        q.push_hb(false, &[a(1)]);
        q.push_hb(false, &[a(3)]);
        assert!(q.unsettled_about(a(2)));
        assert!(!q.unsettled_about(a(1)));
        assert_eq!(q.promote(0), vec![(1, Instruction::AckStartup)]);
        q.on_ack(1, 0);
        assert_eq!(
            q.promote(0),
            vec![
                (
                    2,
                    Instruction::Heartbeat {
                        start: false,
                        peers: vec![a(3)]
                    }
                ),
                (
                    3,
                    Instruction::Heartbeat {
                        start: true,
                        peers: vec![a(2)]
                    }
                )
            ]
        );
        // Once sent, a change cannot be taken back: the stop goes out.
        q.push_hb(false, &[a(2)]);
        q.on_ack(3, 0);
        assert_eq!(
            q.promote(0),
            vec![(
                4,
                Instruction::Heartbeat {
                    start: false,
                    peers: vec![a(2)]
                }
            )]
        );
    }

    #[test]
    fn a_long_burst_coalesces_instead_of_growing_or_dropping() {
        let mut q = OutQueue::default();
        q.push(Instruction::Probe);
        for i in 0..1000u32 {
            let p = a((i % 7) as u8);
            q.push_hb(i % 2 == 0, &[p]);
        }
        assert!(q.pending_len() <= 2);
        // Counts as a real agent keeps them: the net change survives.
        q.promote(0);
        q.on_ack(1, 0);
        let mut net = std::collections::BTreeMap::new();
        for (_, i) in q.promote(0) {
            if let Instruction::Heartbeat { start, peers } = i {
                for p in peers {
                    *net.entry(p).or_insert(0) += if start { 1 } else { -1 };
                }
            }
        }
        let mut want = std::collections::BTreeMap::new();
        for i in 0..1000u32 {
            *want.entry(a((i % 7) as u8)).or_insert(0) += if i % 2 == 0 { 1 } else { -1 };
        }
        want.retain(|_, v| *v != 0);
        assert_eq!(net, want);
    }

    #[test]
    fn reset_starts_a_new_session_from_request_one() {
        let mut q = OutQueue::default();
        assert_eq!(q.session(100), 100);
        q.push(Instruction::Probe);
        q.push(Instruction::Probe);
        q.promote(0);
        q.on_ack(1, 0);
        q.promote(0);
        q.reset();
        assert_eq!(q.inflight().count(), 0);
        assert_eq!(q.session(100), 101);
        assert!(!q.on_ack(1, 0), "an ACK of the old session's request 1");
        q.push(Instruction::Probe);
        assert_eq!(q.promote(0)[0].0, 1);
        assert!(q.on_ack(1, 0));
    }

    #[test]
    fn a_change_never_overtakes_an_instruction_queued_before_it() {
        let mut q = OutQueue::default();
        q.push(Instruction::Probe);
        q.promote(0);
        // Behind the window: a start for 2, a repair about 1, then a stop
        // for 1. The stop must stay behind the repair.
        q.push_hb(true, &[a(2)]);
        q.push(Instruction::Half {
            send: false,
            start: true,
            peers: vec![a(1)],
        });
        q.push_hb(false, &[a(1)]);
        assert!(q.unsettled_about(a(1)));
        q.on_ack(1, 0);
        let mut sent = q.promote(0);
        q.on_ack(3, 0);
        sent.extend(q.promote(0));
        let order: Vec<Instruction> = sent.into_iter().map(|x| x.1).collect();
        assert_eq!(
            order,
            vec![
                Instruction::Heartbeat {
                    start: true,
                    peers: vec![a(2)]
                },
                Instruction::Half {
                    send: false,
                    start: true,
                    peers: vec![a(1)]
                },
                Instruction::Heartbeat {
                    start: false,
                    peers: vec![a(1)]
                },
            ]
        );
    }
}
