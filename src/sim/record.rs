//! What agents send the CMA (owned), and the decider's inputs as the log
//! holds them (for replay tests).

use super::*;

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
    pub(super) fn of(
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
pub(super) fn feed_live(
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
                        key: None,
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
    pub(super) fn with_message<R>(&self, f: impl FnOnce(Message<'_>) -> R) -> R {
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
