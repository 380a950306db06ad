//! The sending side: sockets by family, instructions encoded as the
//! nanoprobe expects them, and their retransmission until ACKed.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::metrics::Metrics as Counters;
use crate::classify::{
    Discoveries, Discovery, EncodeOptions, FrameSetType, HbParams, Message, Peers, ReqId, encode,
};
use crate::config::Config;
use crate::decide::decider::DeciderConfig;
use crate::decide::outq::Instruction;

/// The bound sockets to send from, by address family (looked up once, not
/// per datagram).
pub(super) struct SendSockets {
    pub(super) v4: Option<UdpSocket>,
    pub(super) v6: Option<UdpSocket>,
}

impl SendSockets {
    pub(super) fn new(list: Vec<UdpSocket>) -> SendSockets {
        let (mut v4, mut v6) = (None, None);
        for s in list {
            match s.local_addr() {
                Ok(a) if a.is_ipv4() => v4 = v4.or(Some(s)),
                Ok(_) => v6 = v6.or(Some(s)),
                Err(_) => {}
            }
        }
        SendSockets { v4, v6 }
    }

    pub(super) fn try_clone(&self) -> std::io::Result<SendSockets> {
        let c = |s: &Option<UdpSocket>| s.as_ref().map(|s| s.try_clone()).transpose();
        Ok(SendSockets {
            v4: c(&self.v4)?,
            v6: c(&self.v6)?,
        })
    }

    /// The socket of the destination's family (else whichever there is).
    pub(super) fn for_family(&self, v4: bool) -> Option<&UdpSocket> {
        let (mine, other) = if v4 {
            (&self.v4, &self.v6)
        } else {
            (&self.v6, &self.v4)
        };
        mine.as_ref().or(other.as_ref())
    }
}

/// Sends from the socket of the destination's family.
pub(super) fn send_to(sockets: &SendSockets, data: &[u8], to: SocketAddr, counters: &Counters) {
    let ok = sockets
        .for_family(to.is_ipv4())
        .is_some_and(|s| s.send_to(data, to).is_ok());
    if !ok {
        counters.send_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Encodes an instruction as the FrameSet an agent obeys.
pub fn encode_instruction(
    i: &Instruction,
    reqid: ReqId,
    cfg: &DeciderConfig,
    out: &mut Vec<u8>,
) -> Result<usize, crate::classify::EncodeError> {
    let rscjson = cfg.rscjson();
    let cma = [cfg.cma_addr];
    let nics: Vec<(String, String)> = match i {
        Instruction::SwitchDiscovery(devices) => devices
            .iter()
            .map(|d| (format!("_switch_{d}"), switch_discovery_json(d)))
            .collect(),
        _ => Vec::new(),
    };
    let triples: Vec<Discovery<'_>> = nics
        .iter()
        .map(|(name, json)| Discovery {
            name,
            interval_s: 0,
            json,
        })
        .collect();
    let m = match i {
        Instruction::SetConfig(json) => Message::SetConfig { json },
        Instruction::AckStartup => Message::AckStartup,
        Instruction::Heartbeat { start: true, peers } => Message::Heartbeats {
            kind: FrameSetType::SendExpectHb,
            params: HbParams {
                rscjson: Some(&rscjson),
                ..HbParams::default()
            },
            peers: Peers::List(peers),
        },
        Instruction::Heartbeat {
            start: false,
            peers,
        } => Message::StopHeartbeats {
            kind: FrameSetType::StopSendExpectHb,
            peers: Peers::List(peers),
        },
        Instruction::Probe => Message::StopHeartbeats {
            kind: FrameSetType::StopSendHb,
            peers: Peers::List(&cma),
        },
        Instruction::StopSending(peers) => Message::StopHeartbeats {
            kind: FrameSetType::StopSendHb,
            peers: Peers::List(peers),
        },
        Instruction::Half {
            send,
            start: true,
            peers,
        } => Message::Heartbeats {
            kind: if *send {
                FrameSetType::SendHb
            } else {
                FrameSetType::ExpectHb
            },
            params: HbParams {
                rscjson: Some(&rscjson),
                ..HbParams::default()
            },
            peers: Peers::List(peers),
        },
        Instruction::Half {
            send,
            start: false,
            peers,
        } => Message::StopHeartbeats {
            kind: if *send {
                FrameSetType::StopSendHb
            } else {
                FrameSetType::StopExpectHb
            },
            peers: Peers::List(peers),
        },
        Instruction::StateRequest => Message::HbStateReq,
        Instruction::ConnShut => Message::ConnShut,
        Instruction::SwitchDiscovery(_) => Message::Discover {
            stop: false,
            list: Discoveries::List(&triples),
        },
    };
    encode(&m, Some(reqid), &EncodeOptions::default(), out)
}

/// DISCJSON of a `#SWITCH` discovery on `device`: listen for LLDP and CDP
/// there (instance `_switch_DEVICE`, as a nanoprobe names it).
pub fn switch_discovery_json(device: &str) -> String {
    serde_json::json!({
        "type": "#SWITCH",
        "instance": format!("_switch_{device}"),
        "device": device,
        "swprotocols": ["lldp", "cdp"],
    })
    .to_string()
}

/// The sending half towards agents: what is in flight per address, resent
/// (the oldest) every retransmit interval until the decider sees its ACK.
pub(super) struct Transport {
    pub(super) sockets: SendSockets,
    pub(super) flights: HashMap<SocketAddr, Flight>,
    pub(super) retransmit: Duration,
}

pub(super) struct Flight {
    pub(super) queue: VecDeque<(u64, Vec<u8>)>,
    pub(super) last_sent: Instant,
}

impl Transport {
    pub(super) fn new(sockets: SendSockets, c: &Config) -> Transport {
        Transport {
            sockets,
            flights: HashMap::new(),
            retransmit: Duration::from_millis(c.reliable.retransmit_ms),
        }
    }

    pub(super) fn send(
        &mut self,
        to: SocketAddr,
        request: u64,
        bytes: Vec<u8>,
        counters: &Counters,
    ) {
        send_to(&self.sockets, &bytes, to, counters);
        counters.instructions_sent.fetch_add(1, Ordering::Relaxed);
        let f = self.flights.entry(to).or_insert_with(|| Flight {
            queue: VecDeque::new(),
            last_sent: Instant::now(),
        });
        if f.queue.is_empty() {
            f.last_sent = Instant::now();
        }
        f.queue.push_back((request, bytes));
    }

    pub(super) fn acked(&mut self, to: SocketAddr, acked: u64) {
        if let Some(f) = self.flights.get_mut(&to) {
            while f.queue.front().is_some_and(|(r, _)| *r <= acked) {
                f.queue.pop_front();
                f.last_sent = Instant::now();
            }
            if f.queue.is_empty() {
                self.flights.remove(&to);
            }
        }
    }

    pub(super) fn forget(&mut self, to: SocketAddr) {
        self.flights.remove(&to);
    }

    pub(super) fn retransmit_due(&mut self, counters: &Counters) {
        let now = Instant::now();
        for (to, f) in &mut self.flights {
            if now.duration_since(f.last_sent) >= self.retransmit
                && let Some((_, bytes)) = f.queue.front()
            {
                send_to(&self.sockets, bytes, *to, counters);
                counters.retransmits.fetch_add(1, Ordering::Relaxed);
                f.last_sent = now;
            }
        }
    }
}
