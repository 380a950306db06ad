//! Reading a [`Message`] from a FrameSet's payload frames: each type's
//! frames, in order, each at most once, nothing unexpected.

use super::*;

/// Outcome of parsing a payload: the message and how many unknown frames
/// were skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The message.
    pub message: Message<'a>,
    /// Unknown frame types skipped.
    pub unknown_frames: u16,
}

/// Collects the frames of one payload and checks them against the type's
/// layout.
struct Walk<'a> {
    frames: FrameIter<'a>,
    end: usize,
    unknown: u16,
}

impl<'a> Walk<'a> {
    /// Next known frame, typed, with its view; unknown frames are skipped.
    fn next(&mut self) -> Result<Option<(FrameView<'a>, Frame<'a>)>, Dropped> {
        for f in self.frames.by_ref() {
            let f = f?;
            if is_structural(f.ftype) {
                return Err(Dropped::at(Drop::MisplacedFrame, f.offset));
            }
            match Frame::parse(f.ftype, f.value) {
                Ok(Frame::Unknown { .. }) => self.unknown = self.unknown.saturating_add(1),
                Ok(typed) => return Ok(Some((f, typed))),
                Err(reason) => return Err(Dropped::at(reason, f.offset)),
            }
        }
        Ok(None)
    }
}

/// Stores a singular frame's value, rejecting a second one.
fn once<T>(slot: &mut Option<T>, v: T, at: usize) -> Result<(), Dropped> {
    if slot.is_some() {
        return Err(Dropped::at(Drop::DuplicateFrame, at));
    }
    *slot = Some(v);
    Ok(())
}

/// SIG, CRYPTCURVE25519, COMPRESS and REQID stand only before the payload.
fn is_structural(ftype: u16) -> bool {
    matches!(
        FrameType::from_wire(ftype),
        Some(FrameType::Sig | FrameType::CryptCurve25519 | FrameType::Compress | FrameType::ReqId)
    )
}

fn unexpected(f: &FrameView<'_>) -> Dropped {
    Dropped::at(Drop::UnexpectedFrame, f.offset)
}

impl<'a> Message<'a> {
    /// The FrameSet type number of this message.
    pub fn fstype(&self) -> u16 {
        use FrameSetType as T;
        let t = match self {
            Message::Heartbeat => T::Heartbeat,
            Message::Ping => T::Ping,
            Message::Pong => T::Pong,
            Message::Startup(_) => T::Startup,
            Message::Ack => T::Ack,
            Message::ConnShut => T::ConnShut,
            Message::ConnNak => T::ConnNak,
            Message::HbDead { .. } => T::HbDead,
            Message::HbShutdown { .. } => T::HbShutdown,
            Message::HbLate { .. } => T::HbLate,
            Message::HbBackAlive { .. } => T::HbBackAlive,
            Message::HbMartian { .. } => T::HbMartian,
            Message::SwDiscover(_) => T::SwDiscover,
            Message::JsDiscovery { .. } => T::JsDiscovery,
            Message::RscOpReply { .. } => T::RscOpReply,
            Message::SeqPing => T::SeqPing,
            Message::SeqPong => T::SeqPong,
            Message::Heartbeats { kind, .. } | Message::StopHeartbeats { kind, .. } => *kind,
            Message::SetConfig { .. } => T::SetConfig,
            Message::IncrDebug => T::IncrDebug,
            Message::DecrDebug => T::DecrDebug,
            Message::Discover { stop: false, .. } => T::DoDiscover,
            Message::Discover { stop: true, .. } => T::StopDiscover,
            Message::RscOp { stop: false, .. } => T::DoRscOp,
            Message::RscOp { stop: true, .. } => T::StopRscOp,
            Message::AckStartup => T::AckStartup,
            Message::HbState(_) => T::HbState,
            Message::HbStateReq => T::HbStateReq,
            Message::ActionNak { .. } => T::ActionNak,
            Message::Stats { .. } => T::Stats,
            Message::Unknown { fstype, .. } => return *fstype,
        };
        t.to_wire()
    }

    /// Parses the payload frames `payload` of a FrameSet of type `fstype`.
    /// `base` is the payload's offset, used in errors. An unknown `fstype`
    /// gives [`Message::Unknown`] (the caller decides whether that is
    /// acceptable).
    pub fn parse(fstype: u16, payload: &'a [u8], base: usize) -> Result<Parsed<'a>, Dropped> {
        let mut w = Walk {
            frames: FrameIter::new(payload, base),
            end: base + payload.len(),
            unknown: 0,
        };
        let Some(t) = FrameSetType::from_wire(fstype) else {
            // Still check that the frames are well-formed TLVs of valid values.
            while w.next()?.is_some() {}
            return Ok(Parsed {
                message: Message::Unknown {
                    fstype,
                    frames: payload,
                },
                unknown_frames: w.unknown,
            });
        };
        let message = Self::parse_known(t, payload, &mut w)?;
        Ok(Parsed {
            message,
            unknown_frames: w.unknown,
        })
    }

    /// The payload of a known FrameSet type as its message: one `match`
    /// arm per type, a table more than a procedure.
    fn parse_known(
        t: FrameSetType,
        payload: &'a [u8],
        w: &mut Walk<'a>,
    ) -> Result<Message<'a>, Dropped> {
        use FrameSetType as T;
        let missing = Dropped::at(Drop::MissingFrame, w.end);
        let message = match t {
            T::Heartbeat
            | T::Ping
            | T::Pong
            | T::Ack
            | T::ConnShut
            | T::ConnNak
            | T::SeqPing
            | T::SeqPong
            | T::IncrDebug
            | T::DecrDebug
            | T::AckStartup
            | T::HbStateReq => {
                if let Some((f, _)) = w.next()? {
                    return Err(unexpected(&f));
                }
                match t {
                    T::Heartbeat => Message::Heartbeat,
                    T::Ping => Message::Ping,
                    T::Pong => Message::Pong,
                    T::Ack => Message::Ack,
                    T::ConnShut => Message::ConnShut,
                    T::ConnNak => Message::ConnNak,
                    T::SeqPing => Message::SeqPing,
                    T::SeqPong => Message::SeqPong,
                    T::IncrDebug => Message::IncrDebug,
                    T::DecrDebug => Message::DecrDebug,
                    T::HbStateReq => Message::HbStateReq,
                    _ => Message::AckStartup,
                }
            }
            T::Startup => {
                let (mut host, mut listen, mut clock, mut json, mut keyid, mut key) =
                    (None, None, None, None, None, None);
                let mut features = None;
                while let Some((f, v)) = w.next()? {
                    match v {
                        Frame::Str(FrameType::Hostname, s) => once(&mut host, s, f.offset)?,
                        Frame::IpPort(a) => once(&mut listen, a, f.offset)?,
                        Frame::Int(FrameType::WallClock, c) => once(&mut clock, c, f.offset)?,
                        Frame::Str(FrameType::JsDiscover, s) => once(&mut json, s, f.offset)?,
                        Frame::Str(FrameType::KeyId, s) => once(&mut keyid, s, f.offset)?,
                        Frame::PubKey(k) => once(&mut key, k, f.offset)?,
                        Frame::Str(FrameType::Features, s) => once(&mut features, s, f.offset)?,
                        _ => return Err(unexpected(&f)),
                    }
                }
                let key = match (keyid, key) {
                    (Some(id), Some(k)) => Some((id, k)),
                    (None, None) => None,
                    _ => return Err(missing),
                };
                Message::Startup(Startup {
                    hostname: host.ok_or(missing)?,
                    listen: listen.ok_or(missing)?,
                    wallclock_us: clock.ok_or(missing)?,
                    netconfig: json.ok_or(missing)?,
                    key,
                    features,
                })
            }
            T::HbDead | T::HbMartian | T::HbLate | T::HbBackAlive => {
                let (mut peer, mut elapsed) = (None, None);
                let timed = matches!(t, T::HbLate | T::HbBackAlive);
                while let Some((f, v)) = w.next()? {
                    match v {
                        Frame::IpPort(a) => once(&mut peer, a, f.offset)?,
                        Frame::Int(FrameType::ElapsedTime, e) if timed => {
                            once(&mut elapsed, e, f.offset)?
                        }
                        _ => return Err(unexpected(&f)),
                    }
                }
                let peer = peer.ok_or(missing)?;
                let elapsed_us = elapsed.unwrap_or(0);
                match t {
                    T::HbDead => Message::HbDead { peer },
                    T::HbMartian => Message::HbMartian { peer },
                    T::HbLate => Message::HbLate { peer, elapsed_us },
                    _ => Message::HbBackAlive { peer, elapsed_us },
                }
            }
            T::JsDiscovery => {
                let (mut clock, mut json) = (None, None);
                while let Some((f, v)) = w.next()? {
                    match v {
                        Frame::Int(FrameType::WallClock, c) => once(&mut clock, c, f.offset)?,
                        Frame::Str(FrameType::JsDiscover, s) => once(&mut json, s, f.offset)?,
                        _ => return Err(unexpected(&f)),
                    }
                }
                Message::JsDiscovery {
                    wallclock_us: clock,
                    json: json.ok_or(missing)?,
                }
            }
            T::HbShutdown | T::RscOpReply | T::SetConfig | T::DoRscOp | T::StopRscOp => {
                let want = match t {
                    T::HbShutdown => FrameType::Hostname,
                    T::RscOpReply => FrameType::RscJsonReply,
                    T::SetConfig => FrameType::ConfigJson,
                    _ => FrameType::RscJson,
                };
                let mut text = None;
                while let Some((f, v)) = w.next()? {
                    match v {
                        Frame::Str(ft, s) if ft == want => once(&mut text, s, f.offset)?,
                        _ => return Err(unexpected(&f)),
                    }
                }
                let s = text.ok_or(missing)?;
                match t {
                    T::HbShutdown => Message::HbShutdown { hostname: s },
                    T::RscOpReply => Message::RscOpReply { json: s },
                    T::SetConfig => Message::SetConfig { json: s },
                    T::DoRscOp => Message::RscOp {
                        stop: false,
                        json: s,
                    },
                    _ => Message::RscOp {
                        stop: true,
                        json: s,
                    },
                }
            }
            T::SwDiscover => {
                let (mut clock, mut pkt, mut ifname, mut host, mut disc) =
                    (None, None, None, None, None);
                while let Some((f, v)) = w.next()? {
                    match v {
                        Frame::Int(FrameType::WallClock, c) => once(&mut clock, c, f.offset)?,
                        Frame::PktData(p) => once(&mut pkt, p, f.offset)?,
                        Frame::Str(FrameType::Interface, s) => once(&mut ifname, s, f.offset)?,
                        Frame::Str(FrameType::Hostname, s) => once(&mut host, s, f.offset)?,
                        Frame::Str(FrameType::DiscName, s) => once(&mut disc, s, f.offset)?,
                        _ => return Err(unexpected(&f)),
                    }
                }
                Message::SwDiscover(SwDiscover {
                    wallclock_us: clock.ok_or(missing)?,
                    pktdata: pkt.ok_or(missing)?,
                    interface: ifname.ok_or(missing)?,
                    hostname: host.ok_or(missing)?,
                    discname: disc.ok_or(missing)?,
                })
            }
            T::SendHb
            | T::ExpectHb
            | T::SendExpectHb
            | T::StopSendHb
            | T::StopExpectHb
            | T::StopSendExpectHb => {
                let with_params = matches!(t, T::SendHb | T::ExpectHb | T::SendExpectHb);
                let mut params = HbParams::default();
                let mut span: Option<(usize, usize)> = None;
                let base = w.end - payload.len();
                while let Some((f, v)) = w.next()? {
                    match v {
                        Frame::IpPort(_) => {
                            let start = span.map_or(f.offset, |s| s.0);
                            span = Some((start, f.offset + f.wire_len()));
                        }
                        // Parameters must precede the peers.
                        _ if span.is_some() || !with_params => return Err(unexpected(&f)),
                        Frame::Int(FrameType::HbInterval, x) => {
                            once(&mut params.interval_s, x, f.offset)?
                        }
                        Frame::Int(FrameType::HbDeadTime, x) => {
                            once(&mut params.deadtime_s, x, f.offset)?
                        }
                        Frame::Int(FrameType::HbWarnTime, x) => {
                            once(&mut params.warntime_s, x, f.offset)?
                        }
                        Frame::Str(FrameType::RscJson, s) => {
                            once(&mut params.rscjson, s, f.offset)?
                        }
                        _ => return Err(unexpected(&f)),
                    }
                }
                let (start, end) = span.ok_or(missing)?;
                let peers = Peers::Wire(&payload[start - base..end - base]);
                if with_params {
                    Message::Heartbeats {
                        kind: t,
                        params,
                        peers,
                    }
                } else {
                    Message::StopHeartbeats { kind: t, peers }
                }
            }
            T::HbState => {
                // WALLCLOCK, optional INSTRREQID, HBPEERSTATE..., IPPORT...
                let base = w.end - payload.len();
                let (mut clock, mut applied) = (None, None);
                let mut states: Option<(usize, usize)> = None;
                let mut sends: Option<(usize, usize)> = None;
                while let Some((f, v)) = w.next()? {
                    let end = f.offset + f.wire_len();
                    match v {
                        Frame::Int(FrameType::WallClock, c)
                            if states.is_none() && sends.is_none() =>
                        {
                            once(&mut clock, c, f.offset)?
                        }
                        Frame::InstrReqId(r) if states.is_none() && sends.is_none() => {
                            once(&mut applied, r, f.offset)?
                        }
                        Frame::PeerState(_) if sends.is_none() => {
                            states = Some((states.map_or(f.offset, |s| s.0), end))
                        }
                        Frame::IpPort(_) => sends = Some((sends.map_or(f.offset, |s| s.0), end)),
                        _ => return Err(unexpected(&f)),
                    }
                }
                let span = |s: Option<(usize, usize)>| {
                    s.map_or(&payload[..0], |(a, b)| &payload[a - base..b - base])
                };
                Message::HbState(HbState {
                    wallclock_us: clock.ok_or(missing)?,
                    applied,
                    expect: PeerStates::Wire(span(states)),
                    send: Peers::Wire(span(sends)),
                })
            }
            T::ActionNak => {
                let (mut instr, mut code, mut reason) = (None, None, None);
                while let Some((f, v)) = w.next()? {
                    match v {
                        Frame::InstrReqId(r) => once(&mut instr, r, f.offset)?,
                        Frame::Int(FrameType::CIntVal, c) => once(&mut code, c, f.offset)?,
                        Frame::Str(FrameType::CStringVal, s) => once(&mut reason, s, f.offset)?,
                        _ => return Err(unexpected(&f)),
                    }
                }
                Message::ActionNak {
                    instr: instr.ok_or(missing)?,
                    code: code.ok_or(missing)?,
                    reason: reason.unwrap_or(""),
                }
            }
            T::Stats => {
                let mut json = None;
                while let Some((f, v)) = w.next()? {
                    match v {
                        Frame::Str(FrameType::StatsJson, s) => once(&mut json, s, f.offset)?,
                        _ => return Err(unexpected(&f)),
                    }
                }
                Message::Stats {
                    json: json.ok_or(missing)?,
                }
            }
            T::DoDiscover | T::StopDiscover => {
                // Triples in order: DISCNAME, DISCINTERVAL, DISCJSON.
                let base = w.end - payload.len();
                let mut span: Option<(usize, usize)> = None;
                let mut expect = 0u8;
                while let Some((f, v)) = w.next()? {
                    let ok = matches!(
                        (expect, v),
                        (0, Frame::Str(FrameType::DiscName, _))
                            | (1, Frame::Int(FrameType::DiscInterval, _))
                            | (2, Frame::Str(FrameType::DiscJson, _))
                    );
                    if !ok {
                        return Err(unexpected(&f));
                    }
                    expect = (expect + 1) % 3;
                    let start = span.map_or(f.offset, |s| s.0);
                    span = Some((start, f.offset + f.wire_len()));
                }
                let (start, end) = span.ok_or(missing)?;
                if expect != 0 {
                    return Err(missing);
                }
                Message::Discover {
                    stop: t == T::StopDiscover,
                    list: Discoveries::Wire(&payload[start - base..end - base]),
                }
            }
        };
        Ok(message)
    }

    /// Appends the payload frames (not SIG/REQID/END) to `out`.
    pub fn emit_payload(&self, out: &mut Vec<u8>) {
        match *self {
            Message::Heartbeat
            | Message::Ping
            | Message::Pong
            | Message::Ack
            | Message::ConnShut
            | Message::ConnNak
            | Message::SeqPing
            | Message::SeqPong
            | Message::IncrDebug
            | Message::DecrDebug
            | Message::AckStartup
            | Message::HbStateReq => {}
            Message::HbState(h) => {
                Frame::Int(FrameType::WallClock, h.wallclock_us).emit(out);
                if let Some(r) = h.applied {
                    Frame::InstrReqId(r).emit(out);
                }
                h.expect.emit(out);
                h.send.emit(out);
            }
            Message::ActionNak {
                instr,
                code,
                reason,
            } => {
                Frame::InstrReqId(instr).emit(out);
                Frame::Int(FrameType::CIntVal, code).emit(out);
                Frame::Str(FrameType::CStringVal, reason).emit(out);
            }
            Message::Stats { json } => Frame::Str(FrameType::StatsJson, json).emit(out),
            Message::Startup(s) => {
                Frame::Str(FrameType::Hostname, s.hostname).emit(out);
                Frame::IpPort(s.listen).emit(out);
                Frame::Int(FrameType::WallClock, s.wallclock_us).emit(out);
                Frame::Str(FrameType::JsDiscover, s.netconfig).emit(out);
                if let Some((id, key)) = s.key {
                    Frame::Str(FrameType::KeyId, id).emit(out);
                    Frame::PubKey(key).emit(out);
                }
                if let Some(f) = s.features {
                    Frame::Str(FrameType::Features, f).emit(out);
                }
            }
            Message::HbDead { peer } | Message::HbMartian { peer } => Frame::IpPort(peer).emit(out),
            Message::HbLate { peer, elapsed_us } | Message::HbBackAlive { peer, elapsed_us } => {
                // The C library omits ELAPSEDTIME when it is 0.
                if elapsed_us != 0 {
                    Frame::Int(FrameType::ElapsedTime, elapsed_us).emit(out);
                }
                Frame::IpPort(peer).emit(out);
            }
            Message::HbShutdown { hostname } => Frame::Str(FrameType::Hostname, hostname).emit(out),
            Message::SwDiscover(s) => {
                Frame::Int(FrameType::WallClock, s.wallclock_us).emit(out);
                Frame::PktData(s.pktdata).emit(out);
                Frame::Str(FrameType::Interface, s.interface).emit(out);
                Frame::Str(FrameType::Hostname, s.hostname).emit(out);
                Frame::Str(FrameType::DiscName, s.discname).emit(out);
            }
            Message::JsDiscovery { wallclock_us, json } => {
                if let Some(c) = wallclock_us {
                    Frame::Int(FrameType::WallClock, c).emit(out);
                }
                Frame::Str(FrameType::JsDiscover, json).emit(out);
            }
            Message::RscOpReply { json } => Frame::Str(FrameType::RscJsonReply, json).emit(out),
            Message::SetConfig { json } => Frame::Str(FrameType::ConfigJson, json).emit(out),
            Message::RscOp { json, .. } => Frame::Str(FrameType::RscJson, json).emit(out),
            Message::Heartbeats { params, peers, .. } => {
                if let Some(v) = params.interval_s {
                    Frame::Int(FrameType::HbInterval, v).emit(out);
                }
                if let Some(v) = params.deadtime_s {
                    Frame::Int(FrameType::HbDeadTime, v).emit(out);
                }
                if let Some(v) = params.warntime_s {
                    Frame::Int(FrameType::HbWarnTime, v).emit(out);
                }
                if let Some(s) = params.rscjson {
                    Frame::Str(FrameType::RscJson, s).emit(out);
                }
                peers.emit(out);
            }
            Message::StopHeartbeats { peers, .. } => peers.emit(out),
            Message::Discover { list, .. } => list.emit(out),
            Message::Unknown { frames, .. } => out.extend_from_slice(frames),
        }
    }
}
