//! Reliable delivery of sequenced FrameSets (WIRE.md), as pure state
//! machines: no sockets, no clocks (time is passed in), no allocation per
//! packet once a connection exists. The CMA's io thread and decider and our
//! agent all drive the same code.
//!
//! - [`Inbound`]: the receiving half of one connection: delivers strictly in
//!   order, tells duplicates, replays and gaps apart, and produces the
//!   cumulative ACK only when the caller says a FrameSet is durable.
//! - [`Outbound`]: the sending half: assigns request ids in a session, keeps
//!   at most `window` FrameSets in flight, resends the oldest unacknowledged
//!   one every `retransmit_ms`, and drops everything a cumulative ACK covers.
//!
//! A connection is keyed by the peer's address and the REQID's queue id
//! ([`ConnKey`]).

mod inbound;
mod outbound;

use std::net::SocketAddr;

pub use inbound::{Inbound, Verdict};
pub use outbound::{Outbound, OutboundConfig, Transmit};

/// A connection: the peer's address and the queue id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// The peer (normalise IPv4-mapped addresses before building keys).
    pub peer: SocketAddr,
    /// REQID queue id (0 in practice).
    pub queue: u16,
}
