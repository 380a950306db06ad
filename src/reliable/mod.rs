//! Reliable delivery of sequenced FrameSets (WIRE.md), as pure state
//! machines: no sockets, no clocks (time is passed in), no allocation per
//! packet once a connection exists. The CMA's log thread drives
//! [`Inbound`] for what agents send; our agent drives both halves, and the
//! simulator's agents use the same [`Outbound`] on virtual time. The CMA's
//! own sending half is the decider's per-agent queue (`decide::outq`:
//! coalescing, window, request ids), and both sending halves time their
//! retransmissions with one [`RetransmitTimer`].
//!
//! - [`Inbound`]: the receiving half of one connection: delivers strictly in
//!   order, tells duplicates, replays and gaps apart, and produces the
//!   cumulative ACK only when the caller says a FrameSet is durable.
//! - [`Outbound`]: the sending half: assigns request ids in a session, keeps
//!   at most `window` FrameSets in flight, resends the oldest unacknowledged
//!   one every `retransmit_ms`, and drops everything a cumulative ACK covers.
//! - [`RetransmitTimer`]: when the oldest unacknowledged FrameSet goes
//!   again, with back-off and give-up by [`RetransmitPolicy`].
//!
//! A connection is keyed by the peer's address and the REQID's queue id
//! ([`ConnKey`]).

mod inbound;
mod outbound;
mod retransmit;

use std::net::SocketAddr;

pub use inbound::{Inbound, Verdict};
pub use outbound::{Outbound, OutboundConfig, Transmit};
pub use retransmit::{RetransmitPolicy, RetransmitTimer, Timeout};

/// A connection: the peer's address and the queue id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// The peer, normalised by [`normalize`].
    pub peer: SocketAddr,
    /// REQID queue id (0 in practice).
    pub queue: u16,
}

impl ConnKey {
    /// The key for a peer address (normalised) and queue id.
    pub fn new(peer: SocketAddr, queue: u16) -> ConnKey {
        ConnKey {
            peer: normalize(peer),
            queue,
        }
    }
}

/// One identity per endpoint: a nanoprobe registers with the IPv4-mapped
/// form (`[::ffff:a.b.c.d]:p`) but reports peers in whatever form the CMA
/// used (WIRE.md), and datagrams arrive on IPv4 or dual-stack sockets. An
/// IPv4-mapped IPv6 address becomes the plain IPv4 one; IPv6 flow info and
/// scope are dropped (they are not part of a peer's identity on the wire).
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => SocketAddr::new((*a.ip()).into(), a.port()),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_and_plain_ipv4_are_one_identity() {
        let plain: SocketAddr = "10.1.2.3:1984".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:1984".parse().unwrap();
        assert_eq!(normalize(mapped), plain);
        assert_eq!(normalize(plain), plain);
        assert_eq!(ConnKey::new(mapped, 0), ConnKey::new(plain, 0));
        let v6: SocketAddr = "[fd00::1]:7".parse().unwrap();
        assert_eq!(normalize(v6), v6);
        assert_ne!(ConnKey::new(plain, 0), ConnKey::new(plain, 1));
    }
}
