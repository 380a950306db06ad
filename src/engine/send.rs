//! The sending side: sockets by family, and instructions encoded as the
//! nanoprobe expects them and sent in batches (`sendmmsg`). When to send
//! again, and when to give up, is the decider's (`decide::outq`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;

use super::metrics::Metrics as Counters;
use crate::classify::{
    Discoveries, Discovery, EncodeOptions, FrameSetType, HbParams, Message, Peers, ReqId, encode,
};
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

/// Datagrams to send: (destination, its bytes in `buf`).
#[derive(Default)]
pub(super) struct Batch {
    buf: Vec<u8>,
    /// Scratch: an instruction before it is encrypted.
    clear: Vec<u8>,
    list: Vec<(SocketAddr, std::ops::Range<usize>)>,
}

impl Batch {
    /// Encodes an instruction into the batch.
    pub(super) fn push_instruction(
        &mut self,
        to: SocketAddr,
        i: &Instruction,
        reqid: ReqId,
        cfg: &DeciderConfig,
        key: Option<&crate::crypt::PeerKey>,
    ) -> Result<(), crate::classify::EncodeError> {
        let start = self.buf.len();
        let encoded = match key {
            None => encode_instruction(i, reqid, cfg, &mut self.buf),
            Some(k) => {
                self.clear.clear();
                encode_instruction(i, reqid, cfg, &mut self.clear).and_then(|n| {
                    k.seal(&self.clear, &mut self.buf)
                        .map(|_| n)
                        .map_err(|_| crate::classify::EncodeError::TooLarge { bytes: n })
                })
            }
        };
        match encoded {
            Ok(_) => {
                self.list.push((to, start..self.buf.len()));
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Nothing to send.
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Sends everything, `MMSG_BATCH_MAX` datagrams per `sendmmsg` from the
    /// socket of each destination's family, and empties the batch. What the
    /// socket refuses (its buffer full) is counted in `send_errors`: the
    /// decider's retransmission sends it again. Returns how many left.
    pub(super) fn send(&mut self, sockets: &SendSockets, counters: &Counters) -> u64 {
        use super::mmsg::{MMSG_BATCH_MAX, Outgoing, encode_sockaddr, send_batch};
        use std::os::fd::AsRawFd;
        let mut sent_total = 0u64;
        for v4 in [true, false] {
            let mine: Vec<&(SocketAddr, std::ops::Range<usize>)> = self
                .list
                .iter()
                .filter(|(a, _)| a.is_ipv4() == v4)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let Some(sock) = sockets.for_family(v4) else {
                counters
                    .send_errors
                    .fetch_add(mine.len() as u64, Ordering::Relaxed);
                continue;
            };
            for chunk in mine.chunks(MMSG_BATCH_MAX) {
                let addrs: Vec<([u8; crate::ring_buffer::SLOT_ADDR_LEN], u32)> = chunk
                    .iter()
                    .map(|(to, _)| {
                        let mut a = [0u8; crate::ring_buffer::SLOT_ADDR_LEN];
                        let len = encode_sockaddr(to, &mut a);
                        (a, len)
                    })
                    .collect();
                let msgs: Vec<Outgoing<'_>> = chunk
                    .iter()
                    .zip(&addrs)
                    .map(|((_, span), (a, len))| Outgoing {
                        data: &self.buf[span.clone()],
                        addr: a,
                        addr_len: *len,
                    })
                    .collect();
                let mut sent = 0;
                while sent < msgs.len() {
                    match send_batch(sock.as_raw_fd(), &msgs[sent..]) {
                        Ok(0) | Err(_) => {
                            counters
                                .send_errors
                                .fetch_add((msgs.len() - sent) as u64, Ordering::Relaxed);
                            break;
                        }
                        Ok(n) => sent += n,
                    }
                }
                sent_total += sent as u64;
            }
        }
        counters
            .instructions_sent
            .fetch_add(sent_total, Ordering::Relaxed);
        self.list.clear();
        self.buf.clear();
        sent_total
    }
}
