//! Numbers of the wire protocol: Frame types and FrameSet types, with their
//! names, as listed in `shared/spec/WIRE.md`.
//!
//! Both enums are closed lists of the values we understand; a value outside
//! them is carried as a plain `u16` by the callers (`Option::None` from
//! `from_wire`), never turned into a panic.

/// Declares a wire enum with its numbers, names and a checked conversion.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// Every value of this enum, in wire-number order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];

            /// The value for a wire number, or `None` if we do not know it.
            pub const fn from_wire(value: u16) -> Option<Self> {
                match value {
                    $( $value => Some(Self::$variant), )*
                    _ => None,
                }
            }

            /// The wire number.
            pub const fn to_wire(self) -> u16 {
                self as u16
            }

            /// The protocol's upper-case name (as in WIRE.md).
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                }
            }
        }
    };
}

wire_enum! {
    /// A Frame (TLV) type.
    pub enum FrameType {
        /// Last frame of every FrameSet, empty.
        End = 0 => "END",
        /// Digest of the rest of the FrameSet; always first.
        Sig = 1 => "SIG",
        /// Encryption header; the rest of the FrameSet is ciphertext.
        CryptCurve25519 = 2 => "CRYPTCURVE25519",
        /// zlib-compressed remainder of the FrameSet.
        Compress = 3 => "COMPRESS",
        /// Reliable-delivery request id.
        ReqId = 4 => "REQID",
        /// Opaque bytes (a captured Ethernet frame in SWDISCOVER).
        PktData = 6 => "PKTDATA",
        /// Agent start time, microseconds since the epoch.
        WallClock = 7 => "WALLCLOCK",
        /// Interface name.
        Interface = 8 => "INTERFACE",
        /// Host name.
        Hostname = 9 => "HOSTNAME",
        /// An IP address.
        IpAddr = 10 => "IPADDR",
        /// A MAC address.
        MacAddr = 11 => "MACADDR",
        /// A port number.
        PortNum = 12 => "PORTNUM",
        /// An IP address and port.
        IpPort = 13 => "IPPORT",
        /// Heartbeat interval, seconds.
        HbInterval = 14 => "HBINTERVAL",
        /// Heartbeat dead time, seconds.
        HbDeadTime = 15 => "HBDEADTIME",
        /// Heartbeat warning time, seconds.
        HbWarnTime = 16 => "HBWARNTIME",
        /// A path name.
        PathName = 17 => "PATHNAME",
        /// Discovery JSON (netconfig in STARTUP).
        JsDiscover = 19 => "JSDISCOVER",
        /// Configuration JSON (SETCONFIG).
        ConfigJson = 20 => "CONFIGJSON",
        /// A generic string value.
        CStringVal = 21 => "CSTRINGVAL",
        /// A generic integer value.
        CIntVal = 22 => "CINTVAL",
        /// How late a heartbeat was, microseconds.
        ElapsedTime = 23 => "ELAPSEDTIME",
        /// Discovery name.
        DiscName = 24 => "DISCNAME",
        /// Discovery interval, seconds.
        DiscInterval = 25 => "DISCINTERVAL",
        /// Discovery parameters JSON.
        DiscJson = 26 => "DISCJSON",
        /// Resource/heartbeat parameters JSON.
        RscJson = 27 => "RSCJSON",
        /// Resource operation reply JSON.
        RscJsonReply = 28 => "RSCJSONREPLY",
        /// Key id.
        KeyId = 29 => "KEYID",
        /// A Curve25519 public key, 32 bytes.
        PubKeyCurve25519 = 30 => "PUBKEYCURVE25519",
        /// Ours (docs/wire-extensions.md): one watched peer in HBSTATE:
        /// status, ms since last heard, IPPORT value.
        HbPeerState = 96 => "HBPEERSTATE",
        /// Ours: the REQID of a CMA instruction (the last one applied, in
        /// HBSTATE; the one refused, in ACTIONNAK).
        InstrReqId = 97 => "INSTRREQID",
        /// Ours: extensions an agent understands, comma-separated (STARTUP).
        Features = 98 => "FEATURES",
        /// Ours: statistics JSON (STATS).
        StatsJson = 99 => "STATSJSON",
    }
}

wire_enum! {
    /// A FrameSet type.
    pub enum FrameSetType {
        /// Agent to agent heartbeat.
        Heartbeat = 1 => "HEARTBEAT",
        /// Unsequenced ping.
        Ping = 2 => "PING",
        /// Unsequenced pong.
        Pong = 3 => "PONG",
        /// Agent start-up announcement.
        Startup = 4 => "STARTUP",
        /// Cumulative acknowledgement.
        Ack = 16 => "ACK",
        /// Close the connection.
        ConnShut = 17 => "CONNSHUT",
        /// Connection refused / cannot accept.
        ConnNak = 18 => "CONNNAK",
        /// A peer stopped heartbeating.
        HbDead = 26 => "HBDEAD",
        /// The reporter shuts down cleanly.
        HbShutdown = 27 => "HBSHUTDOWN",
        /// A peer's heartbeat was late.
        HbLate = 28 => "HBLATE",
        /// A peer was heard from again.
        HbBackAlive = 29 => "HBBACKALIVE",
        /// An unexpected peer heartbeats.
        HbMartian = 30 => "HBMARTIAN",
        /// Switch discovery (LLDP/CDP frame).
        SwDiscover = 31 => "SWDISCOVER",
        /// JSON discovery data.
        JsDiscovery = 32 => "JSDISCOVERY",
        /// Resource operation reply.
        RscOpReply = 33 => "RSCOPREPLY",
        /// Sequenced ping.
        SeqPing = 34 => "SEQPING",
        /// Sequenced pong.
        SeqPong = 35 => "SEQPONG",
        /// Send heartbeats to peers.
        SendHb = 64 => "SENDHB",
        /// Expect heartbeats from peers.
        ExpectHb = 65 => "EXPECTHB",
        /// Send to and expect from peers.
        SendExpectHb = 66 => "SENDEXPECTHB",
        /// Stop sending heartbeats.
        StopSendHb = 67 => "STOPSENDHB",
        /// Stop expecting heartbeats.
        StopExpectHb = 68 => "STOPEXPECTHB",
        /// Stop both.
        StopSendExpectHb = 69 => "STOPSENDEXPECTHB",
        /// Configuration for the agent.
        SetConfig = 70 => "SETCONFIG",
        /// Raise the agent's debug level.
        IncrDebug = 71 => "INCRDEBUG",
        /// Lower the agent's debug level.
        DecrDebug = 72 => "DECRDEBUG",
        /// Start discoveries.
        DoDiscover = 73 => "DODISCOVER",
        /// Stop discoveries.
        StopDiscover = 74 => "STOPDISCOVER",
        /// Start a resource operation.
        DoRscOp = 75 => "DORSCOP",
        /// Stop a resource operation.
        StopRscOp = 76 => "STOPRSCOP",
        /// The CMA has accepted the agent's STARTUP.
        AckStartup = 77 => "ACKSTARTUP",
        /// Ours: an agent's heartbeat state (docs/wire-extensions.md).
        HbState = 96 => "HBSTATE",
        /// Ours: the CMA asks an agent for HBSTATE.
        HbStateReq = 97 => "HBSTATEREQ",
        /// Ours: an agent could not carry out an instruction.
        ActionNak = 98 => "ACTIONNAK",
        /// Ours: an agent's statistics.
        Stats = 99 => "STATS",
    }
}

/// FrameSet types at or above this number take part in reliable delivery
/// when they carry a REQID frame.
pub const FIRST_SEQUENCED_TYPE: u16 = 16;

/// The name of a FrameSet type number, or `"UNKNOWN"`.
pub fn frameset_type_name(fstype: u16) -> &'static str {
    FrameSetType::from_wire(fstype).map_or("UNKNOWN", FrameSetType::name)
}

/// The name of a Frame type number, or `"UNKNOWN"`.
pub fn frame_type_name(ftype: u16) -> &'static str {
    FrameType::from_wire(ftype).map_or("UNKNOWN", FrameType::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for t in FrameType::ALL {
            assert_eq!(FrameType::from_wire(t.to_wire()), Some(*t));
        }
        for t in FrameSetType::ALL {
            assert_eq!(FrameSetType::from_wire(t.to_wire()), Some(*t));
        }
        assert_eq!(FrameType::from_wire(5), None);
        assert_eq!(FrameSetType::from_wire(5), None);
        assert_eq!(frameset_type_name(26), "HBDEAD");
        assert_eq!(frame_type_name(18), "UNKNOWN");
    }
}
