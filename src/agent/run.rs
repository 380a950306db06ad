//! `cma agent`: one [`Agent`] on a real UDP socket, with the host's name
//! and netconfig; SIGTERM/SIGINT shuts it down cleanly.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::{Agent, AgentConfig, Phase, SwitchId, netconfig};

/// `cma agent`'s options.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The CMA.
    pub cma: SocketAddr,
    /// Where to listen (heartbeats and the CMA's instructions).
    pub listen: SocketAddr,
    /// Host name (None: the system's).
    pub hostname: Option<String>,
    /// Switch chassis id to announce (None: none).
    pub switch_id: Option<String>,
}

/// The system's host name.
pub fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Runs the agent until `stop` is set and its shutdown has finished.
pub fn run(opts: AgentOptions, stop: Arc<AtomicBool>) -> io::Result<()> {
    let mut sock = UdpSocket::bind(opts.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", opts.listen)))?;
    let bound = sock.local_addr()?;
    let hostname = opts.hostname.clone().unwrap_or_else(system_hostname);
    let wallclock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1);
    let mut c = AgentConfig::new(hostname.clone(), bound, opts.cma, wallclock);
    c.netconfig = netconfig::gather(&hostname);
    c.arp = netconfig::arp(&hostname);
    if let Some(chassis) = &opts.switch_id {
        // The simulated switch hangs off the first NIC the CMA will ask
        // about (DODISCOVER `#SWITCH`): one with carrier, not loopback.
        let nic = match crate::netconfig::switch_nics_of(&c.netconfig).first() {
            Some(n) => n.clone(),
            None => {
                log::warn!("no NIC with carrier: the CMA will not ask for switch {chassis}");
                "eth0".into()
            }
        };
        c.switch = Some(SwitchId {
            chassis: chassis.clone(),
            port: nic.clone(),
            interface: nic,
            mac: [2, 0, 0, 0, 0, 1],
        });
    }
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut agent = Agent::new(c, now());
    log::info!("agent {hostname} on {bound}, reporting to {}", opts.cma);
    let mut buf = vec![0u8; 65536];
    let mut last_phase = agent.phase();
    loop {
        if stop.load(Ordering::Relaxed) && matches!(agent.phase(), Phase::Joining | Phase::Joined) {
            log::info!("shutting down: HBSHUTDOWN to the CMA");
            agent.shutdown(now());
        }
        agent.tick(now());
        for d in agent.drain() {
            if let Err(e) = sock.send_to(d.bytes(), d.to()) {
                log::debug!("send to {}: {e}", d.to());
            }
        }
        if agent.phase() != last_phase {
            log::info!("{:?} -> {:?}", last_phase, agent.phase());
            last_phase = agent.phase();
        }
        if agent.phase() == Phase::Done {
            return Ok(());
        }
        // Wake for the next deadline, or at least every 200 ms to see a
        // signal (the flag is set from the handler).
        let wait = agent.next_deadline_ms().saturating_sub(now()).min(200);
        match poll.poll(&mut events, Some(Duration::from_millis(wait))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => agent.on_datagram(now(), from, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("recv: {e}");
                    break;
                }
            }
        }
    }
}
