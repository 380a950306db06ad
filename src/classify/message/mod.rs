//! Typed messages: one variant per FrameSet type, parsed from the payload
//! frames (after SIG/COMPRESS/REQID, before END) and emitted back to them.
//!
//! Parsing checks each type's required frames, rejects known frames that the
//! type does not allow (a bit flipped in the unsigned header type field would
//! otherwise give a correctly signed FrameSet of another type), rejects
//! repeated singular frames, and skips unknown frame types (TLV lets us),
//! counting them. Lists (peers, discoveries) stay borrowed wire bytes that
//! are validated once and iterated without allocation.

use std::fmt;
use std::net::SocketAddr;

use super::error::{Drop, Dropped};
use super::frame::{Frame, PeerState, ReqId, parse_ipport};
use super::types::{FrameSetType, FrameType};
use super::view::{FrameIter, FrameView};

/// A list of peer addresses: borrowed IPPORT frames from the wire, or a
/// slice supplied by a sender.
#[derive(Clone, Copy)]
pub enum Peers<'a> {
    /// A validated run of frames whose IPPORT frames are the peers (other,
    /// unknown, frame types inside the run are skipped).
    Wire(&'a [u8]),
    /// Peers to encode.
    List(&'a [SocketAddr]),
}

impl<'a> Peers<'a> {
    /// The peers, in order.
    pub fn iter(&self) -> PeerIter<'a> {
        match *self {
            Peers::Wire(b) => PeerIter::Wire(FrameIter::new(b, 0)),
            Peers::List(l) => PeerIter::List(l.iter()),
        }
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No peers at all.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    fn emit(&self, out: &mut Vec<u8>) {
        for p in self.iter() {
            Frame::IpPort(p).emit(out);
        }
    }
}

/// Iterator over [`Peers`].
#[derive(Clone, Debug)]
pub enum PeerIter<'a> {
    /// Over wire frames.
    Wire(FrameIter<'a>),
    /// Over a slice.
    List(std::slice::Iter<'a, SocketAddr>),
}

impl Iterator for PeerIter<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            PeerIter::List(it) => it.next().copied(),
            PeerIter::Wire(it) => {
                // The run was validated when the message was parsed, so
                // frames fit and IPPORT values parse; anything else is an
                // unknown frame type to skip.
                for f in it.by_ref().flatten() {
                    if f.ftype == FrameType::IpPort.to_wire() {
                        return parse_ipport(f.value).ok();
                    }
                }
                None
            }
        }
    }
}

impl PartialEq for Peers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Peers<'_> {}

impl fmt::Debug for Peers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// HBSTATE's watched peers: borrowed HBPEERSTATE frames or a slice.
#[derive(Clone, Copy)]
pub enum PeerStates<'a> {
    /// A validated run of HBPEERSTATE frames.
    Wire(&'a [u8]),
    /// States to encode.
    List(&'a [PeerState]),
}

impl<'a> PeerStates<'a> {
    /// The states, in order.
    pub fn iter(&self) -> impl Iterator<Item = PeerState> + 'a {
        let (wire, list) = match *self {
            PeerStates::Wire(b) => (Some(FrameIter::new(b, 0)), None),
            PeerStates::List(l) => (None, Some(l.iter().copied())),
        };
        let wire = wire.map(|it| {
            // Validated at parse.
            it.flatten()
                .filter_map(|f| match Frame::parse(f.ftype, f.value) {
                    Ok(Frame::PeerState(p)) => Some(p),
                    _ => None,
                })
        });
        wire.into_iter().flatten().chain(list.into_iter().flatten())
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    fn emit(&self, out: &mut Vec<u8>) {
        for p in self.iter() {
            Frame::PeerState(p).emit(out);
        }
    }
}

impl PartialEq for PeerStates<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for PeerStates<'_> {}

impl fmt::Debug for PeerStates<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// HBSTATE payload (ours): what an agent heartbeats and watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HbState<'a> {
    /// The agent's incarnation (its STARTUP WALLCLOCK).
    pub wallclock_us: u64,
    /// The last CMA instruction it had applied when it took this state.
    pub applied: Option<ReqId>,
    /// Peers it watches, with what it knows of them.
    pub expect: PeerStates<'a>,
    /// Peers it sends heartbeats to.
    pub send: Peers<'a>,
}

/// One discovery request: name, interval in seconds, parameters JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discovery<'a> {
    /// DISCNAME.
    pub name: &'a str,
    /// DISCINTERVAL, seconds (0: once).
    pub interval_s: u64,
    /// DISCJSON.
    pub json: &'a str,
}

/// A list of discovery triples, borrowed from the wire or supplied.
#[derive(Clone, Copy)]
pub enum Discoveries<'a> {
    /// A validated run of DISCNAME, DISCINTERVAL, DISCJSON triples.
    Wire(&'a [u8]),
    /// Triples to encode.
    List(&'a [Discovery<'a>]),
}

impl<'a> Discoveries<'a> {
    /// The triples, in order.
    pub fn iter(&self) -> impl Iterator<Item = Discovery<'a>> + 'a {
        let (wire, list) = match *self {
            Discoveries::Wire(b) => (Some(FrameIter::new(b, 0)), None),
            Discoveries::List(l) => (None, Some(l.iter().copied())),
        };
        let wire = wire.map(|it| {
            let mut known = it
                .flatten()
                .filter_map(|f| Frame::parse(f.ftype, f.value).ok());
            std::iter::from_fn(move || {
                // Validated at parse: complete triples in this order.
                let name = match known.next()? {
                    Frame::Str(FrameType::DiscName, s) => s,
                    _ => return None,
                };
                let interval_s = match known.next()? {
                    Frame::Int(FrameType::DiscInterval, v) => v,
                    _ => return None,
                };
                let json = match known.next()? {
                    Frame::Str(FrameType::DiscJson, s) => s,
                    _ => return None,
                };
                Some(Discovery {
                    name,
                    interval_s,
                    json,
                })
            })
        });
        wire.into_iter().flatten().chain(list.into_iter().flatten())
    }

    fn emit(&self, out: &mut Vec<u8>) {
        for d in self.iter() {
            Frame::Str(FrameType::DiscName, d.name).emit(out);
            Frame::Int(FrameType::DiscInterval, d.interval_s).emit(out);
            Frame::Str(FrameType::DiscJson, d.json).emit(out);
        }
    }
}

impl PartialEq for Discoveries<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Discoveries<'_> {}

impl fmt::Debug for Discoveries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Optional heartbeat parameters that precede the peers of SENDHB, EXPECTHB
/// and SENDEXPECTHB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HbParams<'a> {
    /// HBINTERVAL, seconds.
    pub interval_s: Option<u64>,
    /// HBDEADTIME, seconds.
    pub deadtime_s: Option<u64>,
    /// HBWARNTIME, seconds.
    pub warntime_s: Option<u64>,
    /// RSCJSON, e.g. `{"repeat":1,"warn":5,"timeout":30}`.
    pub rscjson: Option<&'a str>,
}

/// STARTUP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Startup<'a> {
    /// HOSTNAME.
    pub hostname: &'a str,
    /// IPPORT the agent is bound to (`::` or `0.0.0.0`: take the source).
    pub listen: SocketAddr,
    /// WALLCLOCK: the agent's start time, microseconds since the epoch.
    pub wallclock_us: u64,
    /// JSDISCOVER: netconfig JSON.
    pub netconfig: &'a str,
    /// KEYID and PUBKEYCURVE25519, when the agent announces a key.
    pub key: Option<(&'a str, &'a [u8; 32])>,
    /// FEATURES (ours): extensions the agent understands, comma-separated
    /// (`hbstate,actionnak,stats`). A real nanoprobe sends none.
    pub features: Option<&'a str>,
}

/// SWDISCOVER payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwDiscover<'a> {
    /// WALLCLOCK of the capture.
    pub wallclock_us: u64,
    /// The raw Ethernet frame (LLDP or CDP).
    pub pktdata: &'a [u8],
    /// INTERFACE it was captured on.
    pub interface: &'a str,
    /// HOSTNAME of the reporter.
    pub hostname: &'a str,
    /// DISCNAME.
    pub discname: &'a str,
}

/// A typed FrameSet payload. The REQID (when any) travels beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// HEARTBEAT (1).
    Heartbeat,
    /// PING (2).
    Ping,
    /// PONG (3).
    Pong,
    /// STARTUP (4).
    Startup(Startup<'a>),
    /// ACK (16): the acknowledged REQID is the FrameSet's REQID.
    Ack,
    /// CONNSHUT (17).
    ConnShut,
    /// CONNNAK (18).
    ConnNak,
    /// HBDEAD (26): `peer` stopped heartbeating.
    HbDead {
        /// The silent peer.
        peer: SocketAddr,
    },
    /// HBSHUTDOWN (27): the reporter is shutting down cleanly.
    HbShutdown {
        /// The reporter's host name.
        hostname: &'a str,
    },
    /// HBLATE (28).
    HbLate {
        /// The late peer.
        peer: SocketAddr,
        /// How late, microseconds (0 when the frame was omitted).
        elapsed_us: u64,
    },
    /// HBBACKALIVE (29).
    HbBackAlive {
        /// The peer heard from again.
        peer: SocketAddr,
        /// How late, microseconds (0 when the frame was omitted).
        elapsed_us: u64,
    },
    /// HBMARTIAN (30).
    HbMartian {
        /// The unexpected peer.
        peer: SocketAddr,
    },
    /// SWDISCOVER (31).
    SwDiscover(SwDiscover<'a>),
    /// JSDISCOVERY (32).
    JsDiscovery {
        /// WALLCLOCK of the discovery run (a real nanoprobe sends it first).
        wallclock_us: Option<u64>,
        /// The discovery JSON.
        json: &'a str,
    },
    /// RSCOPREPLY (33).
    RscOpReply {
        /// The reply JSON.
        json: &'a str,
    },
    /// SEQPING (34).
    SeqPing,
    /// SEQPONG (35).
    SeqPong,
    /// SENDHB (64), EXPECTHB (65) or SENDEXPECTHB (66).
    Heartbeats {
        /// Which of the three.
        kind: FrameSetType,
        /// Parameters.
        params: HbParams<'a>,
        /// The peers.
        peers: Peers<'a>,
    },
    /// STOPSENDHB (67), STOPEXPECTHB (68) or STOPSENDEXPECTHB (69).
    StopHeartbeats {
        /// Which of the three.
        kind: FrameSetType,
        /// The peers.
        peers: Peers<'a>,
    },
    /// SETCONFIG (70).
    SetConfig {
        /// CONFIGJSON.
        json: &'a str,
    },
    /// INCRDEBUG (71).
    IncrDebug,
    /// DECRDEBUG (72).
    DecrDebug,
    /// DODISCOVER (73) or STOPDISCOVER (74).
    Discover {
        /// STOPDISCOVER rather than DODISCOVER.
        stop: bool,
        /// The triples.
        list: Discoveries<'a>,
    },
    /// DORSCOP (75) or STOPRSCOP (76).
    RscOp {
        /// STOPRSCOP rather than DORSCOP.
        stop: bool,
        /// RSCJSON.
        json: &'a str,
    },
    /// ACKSTARTUP (77).
    AckStartup,
    /// HBSTATE (96, ours).
    HbState(HbState<'a>),
    /// HBSTATEREQ (97, ours).
    HbStateReq,
    /// ACTIONNAK (98, ours): an instruction the agent could not carry out.
    ActionNak {
        /// The instruction's REQID.
        instr: ReqId,
        /// Error code (see docs/wire-extensions.md).
        code: u64,
        /// Why, for people.
        reason: &'a str,
    },
    /// STATS (99, ours).
    Stats {
        /// Counters as JSON.
        json: &'a str,
    },
    /// A sequenced FrameSet of a type we do not know; its payload frames.
    Unknown {
        /// Type number.
        fstype: u16,
        /// Payload frames (between REQID and END).
        frames: &'a [u8],
    },
}

mod parse;

pub use parse::Parsed;

#[cfg(test)]
mod tests;
