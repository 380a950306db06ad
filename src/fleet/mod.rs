//! Many agents in one process on one event loop (`cma fleet`, and the
//! end-to-end tests): each agent has its own UDP socket on its own loopback
//! address (127.a.b.c), hangs off one of K simulated switches (announced by
//! SWDISCOVER), and can be killed (its socket closed: silence), restarted
//! (a new process: new WALLCLOCK, same address), shut down cleanly, or cut
//! off with its whole switch (datagrams between it and anything outside its
//! switch, the CMA included, are dropped in both directions).
//!
//! [`Fleet`] is the mechanism, driven by [`Fleet::step`]; [`run`] is the
//! `cma fleet` command: a fault script, a progress line and a final report,
//! with the CMA's view read from its database when one is at hand.
//!
//! A harness, not part of the agent: it drives [`crate::agent`] (a pure
//! client of the wire protocol) and watches the CMA only through the
//! read-only view of its database ([`crate::store::Store::open_read_only`],
//! what `cma nodes` reads).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::agent::netconfig::{synthetic, synthetic_server};
use crate::agent::{Agent, AgentConfig, Phase, SwitchId};
use crate::reliable::normalize;

/// The poll token of the shared socket.
const SHARED: usize = usize::MAX;

mod run;
mod shared;

pub use run::{Fault, FaultReport, FleetReport, RunOptions, parse_at, print_report, run};

/// A fleet's shape.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Agents.
    pub nodes: usize,
    /// The CMA.
    pub cma: SocketAddr,
    /// First agent address; the others follow it (must stay in 127.0.0.0/8).
    pub base: Ipv4Addr,
    /// UDP port of every agent (0: each its own ephemeral port). 1985 by
    /// default: a CMA on the same host bound to 0.0.0.0:1984 holds port
    /// 1984 on every loopback address.
    pub port: u16,
    /// Simulated switches; agents are spread over them in contiguous blocks.
    pub switches: usize,
    /// Probability that any datagram an agent sends is lost.
    pub loss: f64,
    /// Seed of the loss draws.
    pub seed: u64,
    /// Agents start this many per second (a burst of 10,000 STARTUPs only
    /// overflows socket buffers).
    pub join_rate: u64,
    /// Reports: retransmit interval, ms.
    pub retransmit_ms: u64,
    /// Host names are `{prefix}{index}`.
    pub name_prefix: String,
    /// Announce a real server's netconfig (~1.5 KB, six NICs) instead of
    /// one NIC's (~300 B).
    pub server_netconfig: bool,
    /// One socket for every agent (bound to the port on every address,
    /// each datagram sent from its agent's address with IP_PKTINFO), for
    /// fleets larger than the open-files limit allows (`port` 0: one the
    /// kernel picks).
    pub shared_socket: bool,
}

impl FleetConfig {
    /// `nodes` agents for the CMA at `cma`, on 127.1.0.1 and up, port 1985.
    pub fn new(nodes: usize, cma: SocketAddr) -> FleetConfig {
        FleetConfig {
            nodes,
            cma,
            base: Ipv4Addr::new(127, 1, 0, 1),
            port: 1985,
            switches: 1,
            loss: 0.0,
            seed: 1,
            join_rate: 2000,
            retransmit_ms: 2000,
            name_prefix: "fleet-".into(),
            server_netconfig: false,
            shared_socket: false,
        }
    }
}

/// What happened to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Running.
    Alive,
    /// Killed at this fleet time (ms): silent from then on.
    Killed(u64),
    /// Shut down cleanly at this time.
    ShutDown(u64),
}

struct Member {
    agent: Option<Agent>,
    /// Its own socket (unless the fleet shares one).
    sock: Option<UdpSocket>,
    /// Its address is open (with a shared socket: not killed).
    open: bool,
    addr: SocketAddr,
    switch: usize,
    fate: Fate,
    deadline: u64,
    /// Incarnations so far (restarts + 1).
    incarnation: u32,
}

/// Traffic counters.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FleetTraffic {
    /// Datagrams agents sent to the CMA.
    pub to_cma: u64,
    /// Datagrams agents received from the CMA.
    pub from_cma: u64,
    /// Heartbeats sent between agents.
    pub heartbeats: u64,
    /// Datagrams dropped by the loss draw or a partition.
    pub dropped: u64,
    /// Sends the kernel refused (buffer full).
    pub send_errors: u64,
}

/// The agents and their event loop.
pub struct Fleet {
    cfg: FleetConfig,
    poll: Poll,
    events: Events,
    members: Vec<Member>,
    by_addr: HashMap<SocketAddr, usize>,
    cma: SocketAddr,
    start: Instant,
    rng: u64,
    partitioned: Vec<bool>,
    /// The socket every agent shares, if the fleet shares one.
    shared: Option<UdpSocket>,
    started: usize,
    buf: Vec<u8>,
    traffic: FleetTraffic,
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Fleet {
    /// Binds every agent's socket (agents then start at `join_rate`).
    pub fn new(cfg: FleetConfig) -> io::Result<Fleet> {
        let base = u32::from(cfg.base);
        let last = base as u64 + cfg.nodes as u64;
        if cfg.base.octets()[0] != 127 || last > u32::from(Ipv4Addr::new(127, 255, 255, 254)) as u64
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "agent addresses must stay inside 127.0.0.0/8",
            ));
        }
        let poll = Poll::new()?;
        let mut members = Vec::with_capacity(cfg.nodes);
        let mut by_addr = HashMap::with_capacity(cfg.nodes);
        let switches = cfg.switches.max(1);
        let mut cfg = cfg;
        let shared = if cfg.shared_socket {
            let mut s = shared::bind(cfg.port)?;
            // Port 0: the one the kernel picked, every agent's.
            cfg.port = s.local_addr()?.port();
            poll.registry()
                .register(&mut s, Token(SHARED), Interest::READABLE)?;
            Some(s)
        } else {
            None
        };
        for i in 0..cfg.nodes {
            let ip = Ipv4Addr::from(base + i as u32);
            let (sock, addr) = if shared.is_some() {
                (None, SocketAddr::new(IpAddr::V4(ip), cfg.port))
            } else {
                let mut sock =
                    UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), cfg.port)).map_err(|e| {
                        io::Error::new(e.kind(), format!("bind {ip}:{}: {e}", cfg.port))
                    })?;
                let addr = sock.local_addr()?;
                poll.registry()
                    .register(&mut sock, Token(i), Interest::READABLE)?;
                (Some(sock), addr)
            };
            by_addr.insert(addr, i);
            members.push(Member {
                agent: None,
                sock,
                open: true,
                addr,
                switch: i * switches / cfg.nodes.max(1),
                fate: Fate::Alive,
                deadline: u64::MAX,
                incarnation: 0,
            });
        }
        Ok(Fleet {
            cma: normalize(cfg.cma),
            rng: cfg.seed | 1,
            partitioned: vec![false; switches],
            shared,
            cfg,
            poll,
            events: Events::with_capacity(1024),
            members,
            by_addr,
            start: Instant::now(),
            started: 0,
            buf: vec![0; 65536],
            traffic: FleetTraffic::default(),
        })
    }

    /// Fleet time, ms since [`Fleet::new`].
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Agents.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No agents.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Agent `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.members[i].addr
    }

    /// Agent `i`'s host name.
    pub fn hostname(&self, i: usize) -> String {
        format!("{}{i:05}", self.cfg.name_prefix)
    }

    /// Agent `i`'s switch.
    pub fn switch_of(&self, i: usize) -> usize {
        self.members[i].switch
    }

    /// Agent `i`'s state machine (None before it started or once killed).
    pub fn agent(&self, i: usize) -> Option<&Agent> {
        self.members[i].agent.as_ref()
    }

    /// What happened to agent `i`.
    pub fn fate(&self, i: usize) -> Fate {
        self.members[i].fate
    }

    /// Is switch `s` cut off?
    pub fn is_partitioned(&self, s: usize) -> bool {
        self.partitioned.get(s).copied().unwrap_or(false)
    }

    /// Traffic so far.
    pub fn traffic(&self) -> FleetTraffic {
        self.traffic
    }

    /// Agents that have joined (and are alive).
    pub fn joined(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.agent.as_ref().is_some_and(|a| a.phase() == Phase::Joined))
            .count()
    }

    /// Kills agent `i`: its socket closes, it says nothing more.
    pub fn kill(&mut self, i: usize) {
        let now = self.now_ms();
        let m = &mut self.members[i];
        if let Some(mut s) = m.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        m.open = false;
        m.agent = None;
        m.deadline = u64::MAX;
        m.fate = Fate::Killed(now);
    }

    /// Restarts agent `i` as a new process (new WALLCLOCK) at the same
    /// address. A killed agent comes back.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        let addr = self.members[i].addr;
        self.members[i].open = true;
        if self.members[i].sock.is_none() && self.shared.is_none() {
            let mut sock = UdpSocket::bind(addr)?;
            self.poll
                .registry()
                .register(&mut sock, Token(i), Interest::READABLE)?;
            self.members[i].sock = Some(sock);
        }
        self.members[i].fate = Fate::Alive;
        self.start_agent(i);
        Ok(())
    }

    /// Agent `i` shuts down cleanly (HBSHUTDOWN, CONNSHUT).
    pub fn shutdown(&mut self, i: usize) {
        let now = self.now_ms();
        if let Some(a) = self.members[i].agent.as_mut() {
            a.shutdown(now);
        }
        self.members[i].fate = Fate::ShutDown(now);
        self.after(i);
    }

    /// Test hook: agent `i` loses its heartbeat state (its process keeps
    /// running and does not send STARTUP); its next HBSTATE tells the CMA.
    pub fn wipe(&mut self, i: usize) {
        if let Some(a) = self.members[i].agent.as_mut() {
            a.wipe_heartbeat_state();
        }
        self.after(i);
    }

    /// Every live agent that can reach the CMA shuts down cleanly (those
    /// cut off with their switch could not say so).
    pub fn shutdown_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].fate == Fate::Alive && !self.is_partitioned(self.members[i].switch) {
                self.shutdown(i);
            }
        }
    }

    /// No agent is still leaving.
    pub fn all_done(&self) -> bool {
        self.members
            .iter()
            .all(|m| m.agent.as_ref().is_none_or(|a| a.phase() != Phase::Leaving))
    }

    /// Cuts switch `s` off (or reconnects it).
    pub fn partition(&mut self, s: usize, cut: bool) {
        if let Some(p) = self.partitioned.get_mut(s) {
            *p = cut;
        }
    }

    fn start_agent(&mut self, i: usize) {
        let now = self.now_ms();
        let hostname = self.hostname(i);
        let m = &mut self.members[i];
        m.incarnation += 1;
        // Distinct WALLCLOCKs even for restarts within one microsecond.
        let wallclock = wall_us() + u64::from(m.incarnation);
        let mut c = AgentConfig::new(hostname.clone(), m.addr, self.cfg.cma, wallclock);
        let mac = [
            2,
            0xf1,
            (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ];
        c.netconfig = if self.cfg.server_netconfig {
            synthetic_server(&hostname, "eth0", mac, m.addr, 8)
        } else {
            synthetic(&hostname, "eth0", mac, m.addr, 8)
        };
        c.retransmit_ms = self.cfg.retransmit_ms;
        c.switch = Some(SwitchId {
            chassis: format!("fleet-switch-{}", m.switch),
            port: format!("port-{i}"),
            interface: "eth0".into(),
            mac,
        });
        let mut a = Agent::new(c, now);
        a.tick(now);
        m.agent = Some(a);
        self.after(i);
    }

    fn draw_loss(&mut self) -> bool {
        if self.cfg.loss <= 0.0 {
            return false;
        }
        // xorshift64*: cheap, seeded, good enough for loss draws.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let r = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        r < self.cfg.loss
    }

    /// Would a datagram between member `i` and `other` cross a cut?
    fn cut(&self, i: usize, other: SocketAddr) -> bool {
        let s = self.members[i].switch;
        let other_switch = self.by_addr.get(&other).map(|&j| self.members[j].switch);
        let inside = |sw: Option<usize>| sw.is_some_and(|x| !self.partitioned[x]);
        if self.partitioned[s] {
            other_switch != Some(s)
        } else {
            // The other end's switch may be cut off.
            other_switch.is_some() && !inside(other_switch)
        }
    }

    /// Sends what agent `i` has to send and refreshes its deadline.
    fn after(&mut self, i: usize) {
        let Some(mut a) = self.members[i].agent.take() else {
            return;
        };
        for d in a.drain() {
            let to = normalize(d.to());
            if self.cut(i, to) || self.draw_loss() {
                self.traffic.dropped += 1;
                continue;
            }
            if to == self.cma {
                self.traffic.to_cma += 1;
            } else if matches!(d, crate::agent::Datagram::Heartbeat(_)) {
                self.traffic.heartbeats += 1;
            }
            let sent = match (&self.members[i].sock, &self.shared) {
                (Some(s), _) => s.send_to(d.bytes(), d.to()).is_ok(),
                (None, Some(s)) if self.members[i].open => {
                    shared::send_from(s, self.members[i].addr, d.bytes(), d.to()).is_ok()
                }
                _ => true,
            };
            if !sent {
                self.traffic.send_errors += 1;
            }
        }
        self.members[i].deadline = a.next_deadline_ms();
        self.members[i].agent = Some(a);
    }

    /// Waits up to `max_wait` for datagrams or the next deadline, handles
    /// what arrived and ticks what is due.
    pub fn step(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = self.now_ms();
        // Start agents at the join rate.
        let due = ((now as u128 * self.cfg.join_rate.max(1) as u128) / 1000 + 1) as usize;
        while self.started < self.members.len().min(due) {
            let i = self.started;
            self.started += 1;
            if self.members[i].fate == Fate::Alive && self.members[i].agent.is_none() {
                self.start_agent(i);
            }
        }
        let next = self
            .members
            .iter()
            .map(|m| m.deadline)
            .min()
            .unwrap_or(u64::MAX);
        let join_next = if self.started < self.members.len() {
            now + 1
        } else {
            u64::MAX
        };
        let wait = next
            .min(join_next)
            .saturating_sub(now)
            .min(max_wait.as_millis() as u64);
        match self
            .poll
            .poll(&mut self.events, Some(Duration::from_millis(wait)))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for i in ready {
            if i == SHARED {
                self.drain_shared();
            } else {
                self.drain_socket(i);
            }
        }
        let now = self.now_ms();
        for i in 0..self.members.len() {
            if self.members[i].deadline <= now {
                if let Some(a) = self.members[i].agent.as_mut() {
                    a.tick(now);
                }
                self.after(i);
            }
        }
        Ok(())
    }

    /// Everything waiting on the shared socket, each datagram to the agent
    /// whose address it was sent to.
    fn drain_shared(&mut self) {
        loop {
            let Some(s) = &self.shared else {
                return;
            };
            let (n, from, to) = match shared::recv(s, &mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let Some(&i) = self.by_addr.get(&SocketAddr::new(to, self.cfg.port)) else {
                continue;
            };
            if self.members[i].open {
                self.deliver(i, n, normalize(from));
            }
        }
    }

    fn drain_socket(&mut self, i: usize) {
        loop {
            let Some(s) = &self.members[i].sock else {
                return;
            };
            let (n, from) = match s.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors surface here on some kernels: keep reading.
                Err(_) => continue,
            };
            self.deliver(i, n, normalize(from));
        }
    }

    /// The `n` bytes in the buffer, from `from`, to agent `i`.
    fn deliver(&mut self, i: usize, n: usize, from: SocketAddr) {
        if self.cut(i, from) {
            self.traffic.dropped += 1;
            return;
        }
        if from == self.cma {
            self.traffic.from_cma += 1;
        }
        let now = self.now_ms();
        if let Some(a) = self.members[i].agent.as_mut() {
            a.on_datagram(now, from, &self.buf[..n]);
        }
        self.after(i);
    }

    /// Steps until `done(self)` holds or `deadline` passes; returns whether
    /// it held.
    pub fn run_until(
        &mut self,
        deadline: Duration,
        mut done: impl FnMut(&Fleet) -> bool,
    ) -> io::Result<bool> {
        let end = Instant::now() + deadline;
        loop {
            if done(self) {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            self.step(Duration::from_millis(20))?;
        }
    }
}
