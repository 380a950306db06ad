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

/// One socket for many loopback addresses: bound to a port on every
/// address, it learns each datagram's destination and sends from any
/// local address, with IP_PKTINFO.
mod shared {
    use std::io;
    use std::io::{IoSlice, IoSliceMut};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::os::fd::AsRawFd;

    use mio::net::UdpSocket;
    use nix::sys::socket::{
        ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg, setsockopt,
        sockopt,
    };

    fn nix_err(e: nix::Error) -> io::Error {
        io::Error::from_raw_os_error(e as i32)
    }

    pub(super) fn bind(port: u16) -> io::Result<UdpSocket> {
        let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
        setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(nix_err)?;
        // Every agent's traffic through one buffer: as large as allowed
        // (past rmem_max when privileged).
        if setsockopt(&s, sockopt::RcvBufForce, &(64 << 20)).is_err() {
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(64 << 20);
        }
        let _ = socket2::SockRef::from(&s).set_send_buffer_size(8 << 20);
        Ok(s)
    }

    /// Sends `data` to `to` from the loopback address `from`.
    pub(super) fn send_from(
        s: &UdpSocket,
        from: SocketAddr,
        data: &[u8],
        to: SocketAddr,
    ) -> io::Result<()> {
        let (IpAddr::V4(src), SocketAddr::V4(dst)) = (from.ip(), to) else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(src).to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let dest = SockaddrIn::from(dst);
        sendmsg(
            s.as_raw_fd(),
            &[IoSlice::new(data)],
            &[ControlMessage::Ipv4PacketInfo(&info)],
            MsgFlags::MSG_DONTWAIT,
            Some(&dest),
        )
        .map(|_| ())
        .map_err(nix_err)
    }

    /// One datagram: its length, its source and the address it was sent
    /// to.
    pub(super) fn recv(s: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, IpAddr)> {
        let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
        let mut iov = [IoSliceMut::new(buf)];
        let m = recvmsg::<SockaddrIn>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(nix_err)?;
        let mut to = None;
        for c in m.cmsgs().map_err(nix_err)? {
            if let ControlMessageOwned::Ipv4PacketInfo(i) = c {
                to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))));
            }
        }
        let from = m
            .address
            .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
            .ok_or_else(|| io::Error::other("no source address"))?;
        let to = to.ok_or_else(|| io::Error::other("no destination address"))?;
        Ok((m.bytes, from, to))
    }
}

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

/// A scripted fault: what, how many (or which switch), when (fleet ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill `count` agents.
    Kill {
        /// How many.
        count: usize,
        /// When, fleet ms.
        at_ms: u64,
    },
    /// Restart `count` agents (new incarnations).
    Restart {
        /// How many.
        count: usize,
        /// When, fleet ms.
        at_ms: u64,
    },
    /// Shut `count` agents down cleanly.
    Shutdown {
        /// How many.
        count: usize,
        /// When, fleet ms.
        at_ms: u64,
    },
    /// Cut switch `switch` off.
    Partition {
        /// Which switch.
        switch: usize,
        /// When, fleet ms.
        at_ms: u64,
    },
}

impl Fault {
    /// When it strikes.
    pub fn at_ms(&self) -> u64 {
        match *self {
            Fault::Kill { at_ms, .. }
            | Fault::Restart { at_ms, .. }
            | Fault::Shutdown { at_ms, .. }
            | Fault::Partition { at_ms, .. } => at_ms,
        }
    }
}

/// Parses `N@T` (T in seconds, or with an `ms`/`s`/`m` suffix).
pub fn parse_at(s: &str) -> Result<(usize, u64), String> {
    let (n, t) = s
        .split_once('@')
        .ok_or_else(|| format!("'{s}': expected COUNT@TIME, e.g. 10@60s"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("'{s}': '{n}' is not a count"))?;
    let t = t.trim();
    let (num, mult) = if let Some(v) = t.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1000.0)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60_000.0)
    } else {
        (t, 1000.0)
    };
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("'{s}': '{t}' is not a time"))?;
    Ok((n, (v * mult) as u64))
}

/// `cma fleet`'s options beyond the fleet's shape.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The fault script.
    pub faults: Vec<Fault>,
    /// Stop after this long (None: until SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// The daemon's data directory, to read its view of the fleet.
    pub data_dir: Option<PathBuf>,
    /// Print the final report as JSON.
    pub json: bool,
    /// Progress line every this often (None: none).
    pub progress: Option<Duration>,
    /// Agents shut down cleanly at the end (else they just stop).
    pub leave: bool,
}

/// Detection of one injected fault.
#[derive(Clone, Debug, Serialize)]
pub struct FaultReport {
    /// "kill", "restart", "shutdown", "partition".
    pub kind: &'static str,
    /// Host (or switch) it struck.
    pub target: String,
    /// Fleet time, ms.
    pub at_ms: u64,
    /// When the CMA's database showed the expected verdict, ms after the
    /// fault (dead for a kill, left for a shutdown, a switch fault for a
    /// partition, up again for a restart); None: not seen.
    pub seen_after_ms: Option<u64>,
}

/// The final report.
#[derive(Clone, Debug, Serialize)]
pub struct FleetReport {
    /// Agents.
    pub nodes: usize,
    /// Seconds run.
    pub seconds: f64,
    /// Agents joined at the end.
    pub joined: usize,
    /// ms until every agent was joined and (with a database) in a ring.
    pub all_in_rings_ms: Option<u64>,
    /// Per injected fault.
    pub faults: Vec<FaultReport>,
    /// Nodes the CMA declared dead that were neither killed nor cut off.
    pub false_dead: Vec<String>,
    /// Switch-fault verdicts seen.
    pub switch_faults: u64,
    /// Datagrams between agents and the CMA (both ways) per node per minute.
    pub cma_packets_per_node_minute: f64,
    /// Traffic counters.
    pub traffic: FleetTraffic,
}

/// The CMA's view, read from its database.
#[derive(Default)]
struct CmaView {
    status: HashMap<String, String>,
    in_ring: usize,
    switch_faults: u64,
    events_after: u64,
}

impl CmaView {
    fn refresh(&mut self, store: &crate::store::Store) {
        if let Ok(nodes) = store.nodes() {
            self.in_ring = nodes
                .iter()
                .filter(|n| n.status == "up" && n.group.is_some())
                .count();
            self.status = nodes.into_iter().map(|n| (n.hostname, n.status)).collect();
        }
        while let Ok(ev) = store.events(self.events_after, 10_000) {
            let Some(last) = ev.last() else { break };
            self.events_after = last.lsn as u64;
            self.switch_faults += ev.iter().filter(|e| e.kind == "switch_fault").count() as u64;
            if ev.len() < 10_000 {
                break;
            }
        }
    }

    fn count(&self, status: &str) -> usize {
        self.status.values().filter(|s| *s == status).count()
    }
}

/// Runs `cma fleet`: builds the fleet, plays the fault script, prints
/// progress to stderr, and returns the report.
pub fn run(cfg: FleetConfig, opts: RunOptions, stop: Arc<AtomicBool>) -> io::Result<FleetReport> {
    let mut fleet = Fleet::new(cfg)?;
    let n = fleet.len();
    let mut faults = opts.faults.clone();
    faults.sort_by_key(|f| f.at_ms());
    let mut next_fault = 0;
    // Victims: distinct agents, spread over the fleet, never two at once
    // from the same place so that each death has a live monitor.
    let mut victims = (0..n).map(|k| (k * 7919 + n / 3) % n.max(1));
    let mut used = vec![false; n];
    let mut pick = |used: &mut Vec<bool>, fleet: &Fleet| -> Option<usize> {
        for v in victims.by_ref() {
            if !used[v] && fleet.fate(v) == Fate::Alive && !fleet.is_partitioned(fleet.switch_of(v))
            {
                used[v] = true;
                return Some(v);
            }
        }
        None
    };
    let mut reports: Vec<(FaultReport, Option<usize>)> = Vec::new();
    let db = opts.data_dir.as_ref().map(|d| crate::store::db_path(d));
    let mut store: Option<crate::store::Store> = None;
    let mut view = CmaView::default();
    let mut last_view = None::<Instant>;
    let mut last_progress = Instant::now();
    let mut all_in_rings_ms = None;
    let mut baseline_switch_faults = None;
    let begin = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| begin.elapsed() >= d) {
            break;
        }
        fleet.step(Duration::from_millis(50))?;
        let now = fleet.now_ms();
        while next_fault < faults.len() && faults[next_fault].at_ms() <= now {
            let f = faults[next_fault];
            next_fault += 1;
            match f {
                Fault::Kill { count, .. }
                | Fault::Restart { count, .. }
                | Fault::Shutdown { count, .. } => {
                    for _ in 0..count {
                        let Some(v) = pick(&mut used, &fleet) else {
                            break;
                        };
                        let kind = match f {
                            Fault::Kill { .. } => {
                                fleet.kill(v);
                                "kill"
                            }
                            Fault::Restart { .. } => {
                                fleet.restart(v)?;
                                "restart"
                            }
                            _ => {
                                fleet.shutdown(v);
                                "shutdown"
                            }
                        };
                        reports.push((
                            FaultReport {
                                kind,
                                target: fleet.hostname(v),
                                at_ms: now,
                                seen_after_ms: None,
                            },
                            Some(v),
                        ));
                    }
                }
                Fault::Partition { switch, .. } => {
                    fleet.partition(switch, true);
                    reports.push((
                        FaultReport {
                            kind: "partition",
                            target: format!("fleet-switch-{switch}"),
                            at_ms: now,
                            seen_after_ms: None,
                        },
                        None,
                    ));
                }
            }
        }
        // The CMA's view, four times a second.
        if let Some(path) = &db
            && last_view.is_none_or(|t| t.elapsed() >= Duration::from_millis(250))
        {
            last_view = Some(Instant::now());
            if store.is_none() && path.exists() {
                store = crate::store::Store::open_read_only(path).ok();
            }
            if let Some(s) = &store {
                view.refresh(s);
                let base = *baseline_switch_faults.get_or_insert(view.switch_faults);
                for (r, v) in reports
                    .iter_mut()
                    .filter(|(r, _)| r.seen_after_ms.is_none())
                {
                    let st = view.status.get(&r.target).map(String::as_str);
                    let seen = match r.kind {
                        "kill" => st == Some("dead"),
                        "shutdown" => st == Some("left"),
                        "restart" => {
                            st == Some("up")
                                && v.and_then(|i| fleet.agent(i))
                                    .is_some_and(|a| a.phase() == Phase::Joined)
                        }
                        _ => view.switch_faults > base,
                    };
                    if seen {
                        r.seen_after_ms = Some(now.saturating_sub(r.at_ms));
                    }
                }
            }
        }
        if all_in_rings_ms.is_none() {
            let joined = fleet.joined();
            let in_rings = if store.is_some() {
                view.in_ring
            } else {
                joined
            };
            if joined == n && in_rings >= n {
                all_in_rings_ms = Some(now);
            }
        }
        if let Some(every) = opts.progress
            && last_progress.elapsed() >= every
        {
            last_progress = Instant::now();
            let t = fleet.traffic();
            let mut line = format!(
                "t={:>6.1}s joined {}/{n}",
                now as f64 / 1000.0,
                fleet.joined()
            );
            if store.is_some() {
                line += &format!(
                    "  in rings {}  suspects {}  dead {}  left {}  unreachable {}  switch faults {}",
                    view.in_ring,
                    view.count("suspect") + view.count("disputed"),
                    view.count("dead"),
                    view.count("left"),
                    view.count("unreachable"),
                    view.switch_faults - baseline_switch_faults.unwrap_or(0),
                );
            }
            line += &format!("  cma pkts {}", t.to_cma + t.from_cma);
            eprintln!("{line}");
        }
    }
    let joined = fleet.joined();
    if opts.leave {
        fleet.shutdown_all();
        let wait = Instant::now() + Duration::from_secs(10);
        while !fleet.all_done() && Instant::now() < wait {
            fleet.step(Duration::from_millis(50))?;
        }
    }
    let seconds = begin.elapsed().as_secs_f64();
    let t = fleet.traffic();
    let killed_or_cut = |host: &str| {
        reports
            .iter()
            .any(|(r, _)| r.target == host && r.kind == "kill")
            || (0..n).any(|i| fleet.hostname(i) == host && fleet.is_partitioned(fleet.switch_of(i)))
    };
    let false_dead = view
        .status
        .iter()
        .filter(|(h, s)| *s == "dead" && !killed_or_cut(h))
        .map(|(h, _)| h.clone())
        .collect();
    Ok(FleetReport {
        nodes: n,
        seconds,
        joined,
        all_in_rings_ms,
        faults: reports.into_iter().map(|(r, _)| r).collect(),
        false_dead,
        switch_faults: view.switch_faults - baseline_switch_faults.unwrap_or(0),
        cma_packets_per_node_minute: (t.to_cma + t.from_cma) as f64
            / n.max(1) as f64
            / (seconds / 60.0).max(1e-9),
        traffic: t,
    })
}

/// The report as people read it.
pub fn print_report(r: &FleetReport, out: &mut impl io::Write) -> io::Result<()> {
    writeln!(out, "fleet: {} agents, {:.1} s", r.nodes, r.seconds)?;
    writeln!(out, "  joined at the end: {}", r.joined)?;
    match r.all_in_rings_ms {
        Some(ms) => writeln!(out, "  all in rings after: {:.1} s", ms as f64 / 1000.0)?,
        None => writeln!(out, "  all in rings: never")?,
    }
    for f in &r.faults {
        let seen = f
            .seen_after_ms
            .map(|ms| format!("seen after {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "not seen".into());
        writeln!(
            out,
            "  {:<9} {:<20} at {:>7.1} s  {seen}",
            f.kind,
            f.target,
            f.at_ms as f64 / 1000.0
        )?;
    }
    writeln!(out, "  false dead: {}", r.false_dead.len())?;
    writeln!(out, "  switch-fault verdicts: {}", r.switch_faults)?;
    writeln!(
        out,
        "  CMA packets per node per minute: {:.1}",
        r.cma_packets_per_node_minute
    )?;
    writeln!(
        out,
        "  traffic: to CMA {}, from CMA {}, heartbeats {}, dropped {}, send errors {}",
        r.traffic.to_cma,
        r.traffic.from_cma,
        r.traffic.heartbeats,
        r.traffic.dropped,
        r.traffic.send_errors
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_times_parse() {
        assert_eq!(parse_at("10@60"), Ok((10, 60_000)));
        assert_eq!(parse_at("2@1.5s"), Ok((2, 1500)));
        assert_eq!(parse_at("1@250ms"), Ok((1, 250)));
        assert_eq!(parse_at("3@2m"), Ok((3, 120_000)));
        assert!(parse_at("10").is_err());
        assert!(parse_at("x@1").is_err());
        assert!(parse_at("1@-1").is_err());
        assert!(parse_at("1@nan").is_err());
    }
}
