//! `cma decode`: turns datagrams into JSON (or readable text) for people
//! debugging a fleet.
//!
//! Every FrameSet of a datagram becomes one JSON object: its type, length,
//! SIG verdict, REQID, each frame (type, length, offset, decoded value), and
//! the classifier's verdict (accepted, or the drop reason with its byte
//! offset). Frames are shown even when the FrameSet is dropped, as far as
//! they can be walked. Input comes from hex strings or a classic pcap file
//! (UDP on any port; Ethernet, Linux cooked and raw IP link types).

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{Map, Value, json};

use crate::classify::{
    self, AddrFrame, Drop, Frame, FrameIter, FrameSetView, FrameType, frame_type_name,
    frameset_type_name,
};

/// Decodes every FrameSet of `datagram`. `source` is copied into each object
/// (e.g. `{"line": 3}` or the pcap packet number and addresses).
pub fn decode_datagram(datagram: &[u8], source: &Value) -> Vec<Value> {
    decode_datagram_with(datagram, source, None)
}

/// [`decode_datagram`], decrypting CRYPTCURVE25519 FrameSets with `keys`
/// (`cma decode --keys DIR`): their plaintext frames are shown too.
pub fn decode_datagram_with(
    datagram: &[u8],
    source: &Value,
    keys: Option<&dyn classify::Opener>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    let verdicts: Vec<_> = classify::classify_all_with(datagram, keys).collect();
    let mut verdicts = verdicts.into_iter();
    while offset < datagram.len() {
        let Some(verdict) = verdicts.next() else {
            break;
        };
        let rest = &datagram[offset..];
        let mut obj = Map::new();
        obj.insert("source".into(), source.clone());
        obj.insert("offset".into(), json!(offset));
        let view = FrameSetView::new_checked(rest).ok();
        if let Some(v) = view {
            obj.insert("fstype".into(), json!(v.fstype()));
            obj.insert("fstype_name".into(), json!(frameset_type_name(v.fstype())));
            obj.insert("fslen".into(), json!(v.fslen()));
            obj.insert("flags".into(), json!(v.flags()));
            describe_frames(v, offset, &mut obj);
        }
        match verdict {
            Ok(c) => {
                obj.insert("verdict".into(), json!("accepted"));
                obj.insert("sequenced".into(), json!(c.is_sequenced()));
                obj.insert("band".into(), json!(format!("{:?}", c.band).to_lowercase()));
                if let Some(k) = &c.sender_key {
                    let mut frames = Vec::new();
                    if let Some(r) = c.reqid {
                        frames.push(json!({"type": "REQID", "session": r.session, "request": r.request, "queue": r.queue}));
                    }
                    for f in classify::FrameIter::new(c.payload(), 0).flatten() {
                        let value = classify::Frame::parse(f.ftype, f.value)
                            .map_or(Value::Null, |fr| frame_value(&fr));
                        frames.push(
                            json!({"type": classify::frame_type_name(f.ftype), "value": value}),
                        );
                    }
                    obj.insert(
                        "decrypted".into(),
                        json!({"sender_key": k.as_ref(), "frames": frames}),
                    );
                }
                if let Some(m) = c.malformed {
                    obj.insert(
                        "malformed".into(),
                        json!({"reason": m.reason.name(), "offset": m.offset, "inflated": m.inflated}),
                    );
                }
            }
            Err(d) => {
                obj.insert("verdict".into(), json!("dropped"));
                obj.insert(
                    "drop".into(),
                    json!({"reason": d.reason.name(), "offset": d.offset, "inflated": d.inflated}),
                );
            }
        }
        out.push(Value::Object(obj));
        match view {
            Some(v) => offset += v.wire_len(),
            None => break,
        }
    }
    out
}

/// Decodes a log record of kind CLASSIFIED (a [`classify::Logged`]): the
/// log thread's verdict, REQID and the frames it logged (verified, inflated).
pub fn decode_logged(record: &[u8]) -> Value {
    let l = match classify::Logged::parse(record) {
        Ok(l) => l,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let mut obj = Map::new();
    obj.insert("fstype".into(), json!(l.fstype));
    obj.insert("fstype_name".into(), json!(frameset_type_name(l.fstype)));
    obj.insert(
        "sig".into(),
        json!({"kind": l.digest.name(), "verdict": "ok"}),
    );
    obj.insert("compressed".into(), json!(l.compressed));
    obj.insert("encrypted".into(), json!(l.sender_key.is_some()));
    if let Some(k) = l.sender_key {
        obj.insert("sender_key".into(), json!(k));
    }
    obj.insert("sequenced".into(), json!(l.is_sequenced()));
    if let Some(r) = l.reqid {
        obj.insert(
            "reqid".into(),
            json!({"session": r.session, "request": r.request, "queue": r.queue}),
        );
    }
    obj.insert("verdict".into(), json!("accepted"));
    if let Some(m) = l.malformed {
        obj.insert(
            "malformed".into(),
            json!({"reason": m.reason.name(), "offset": m.offset, "inflated": m.inflated}),
        );
    }
    let mut frames = Vec::new();
    for f in FrameIter::new(l.payload(), 0) {
        match f {
            Ok(f) => frames.push(describe_frame(
                f.ftype,
                f.value,
                f.offset,
                Frame::parse(f.ftype, f.value),
            )),
            Err(d) => {
                frames.push(json!({"error": d.reason.name(), "offset": d.offset}));
                break;
            }
        }
    }
    obj.insert("frames".into(), Value::Array(frames));
    Value::Object(obj)
}

/// Walks the frames of a FrameSet for display, inflating a COMPRESS frame.
fn describe_frames(v: FrameSetView<'_>, base: usize, obj: &mut Map<String, Value>) {
    let mut frames = Vec::new();
    let mut inner = None;
    let mut it = FrameIter::new(v.frames(), base + classify::FRAMESET_HEADER_LEN);
    let mut first = true;
    while let Some(f) = it.next() {
        let f = match f {
            Ok(f) => f,
            Err(d) => {
                frames.push(json!({"error": d.reason.name(), "offset": d.offset}));
                break;
            }
        };
        let typed = Frame::parse(f.ftype, f.value);
        if first {
            if let Ok(Frame::Sig { kind, digest }) = typed {
                let mut mine = [0u8; 32];
                let mine = &mut mine[..kind.digest_len()];
                classify::compute_digest(kind, it.rest(), mine);
                let verdict = if mine == digest { "ok" } else { "mismatch" };
                obj.insert(
                    "sig".into(),
                    json!({"kind": kind.name(), "verdict": verdict}),
                );
            }
            first = false;
        }
        if let Ok(Frame::Compress {
            decompressed_size,
            data,
            ..
        }) = typed
        {
            inner = Some(classify::inflate(data, decompressed_size as usize));
        }
        if let Ok(Frame::ReqId(r)) = typed {
            obj.insert(
                "reqid".into(),
                json!({"session": r.session, "request": r.request, "queue": r.queue}),
            );
        }
        frames.push(describe_frame(f.ftype, f.value, f.offset, typed));
    }
    obj.insert("frames".into(), Value::Array(frames));
    match inner {
        Some(Ok(bytes)) => {
            let mut list = Vec::new();
            for f in FrameIter::new(&bytes, 0) {
                match f {
                    Ok(f) => {
                        let typed = Frame::parse(f.ftype, f.value);
                        if let Ok(Frame::ReqId(r)) = typed {
                            obj.insert(
                                "reqid".into(),
                                json!({"session": r.session, "request": r.request, "queue": r.queue}),
                            );
                        }
                        list.push(describe_frame(f.ftype, f.value, f.offset, typed));
                    }
                    Err(d) => {
                        list.push(json!({"error": d.reason.name(), "offset": d.offset}));
                        break;
                    }
                }
            }
            obj.insert("inflated_frames".into(), Value::Array(list));
        }
        Some(Err(reason)) => {
            obj.insert("inflate_error".into(), json!(reason.name()));
        }
        None => {}
    }
}

fn describe_frame(
    ftype: u16,
    value: &[u8],
    offset: usize,
    typed: Result<Frame<'_>, Drop>,
) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), json!(ftype));
    o.insert("name".into(), json!(frame_type_name(ftype)));
    o.insert("length".into(), json!(value.len()));
    o.insert("offset".into(), json!(offset));
    match typed {
        Ok(f) => {
            o.insert("value".into(), frame_value(&f));
            if let Frame::PktData(b) = f
                && let Ok(sw) = crate::classify::switch::parse_switch_frame(b)
            {
                o.insert(
                    "switch".into(),
                    json!({
                        "protocol": format!("{:?}", sw.protocol).to_lowercase(),
                        "chassis_id": sw.chassis_id,
                        "port_id": sw.port_id,
                        "system_name": sw.system_name,
                        "port_description": sw.port_description,
                        "management_address": sw.management_address.map(|a| a.to_string()),
                        "ttl_s": sw.ttl_s,
                    }),
                );
            }
        }
        Err(d) => {
            o.insert("error".into(), json!(d.name()));
            o.insert("raw".into(), json!(hex::encode(value)));
        }
    }
    Value::Object(o)
}

/// The decoded value of a frame as JSON.
pub fn frame_value(f: &Frame<'_>) -> Value {
    match *f {
        Frame::End => Value::Null,
        Frame::Sig { kind, digest } => json!({"kind": kind.name(), "digest": hex::encode(digest)}),
        Frame::Crypt(h) => json!({
            "sender_key_id": h.sender_key_id,
            "receiver_key_id": h.receiver_key_id,
            "nonce": hex::encode(h.nonce),
            "mac": hex::encode(h.mac),
            "ciphertext_len": h.ciphertext.len(),
        }),
        Frame::Compress {
            method,
            decompressed_size,
            data,
        } => {
            json!({"method": method, "decompressed_size": decompressed_size, "compressed_len": data.len()})
        }
        Frame::ReqId(r) => json!({"session": r.session, "request": r.request, "queue": r.queue}),
        Frame::Int(_, v) => json!(v),
        Frame::Str(t, s) => {
            let is_json = matches!(
                t,
                FrameType::JsDiscover
                    | FrameType::ConfigJson
                    | FrameType::DiscJson
                    | FrameType::RscJson
                    | FrameType::RscJsonReply
                    | FrameType::StatsJson
            );
            match is_json
                .then(|| serde_json::from_str::<Value>(s).ok())
                .flatten()
            {
                Some(v) => v,
                None => json!(s),
            }
        }
        Frame::Addr(_, a) => json!(addr_text(&a)),
        Frame::IpPort(sa) => json!(sa.to_string()),
        Frame::PktData(b) => json!(hex::encode(b)),
        Frame::PubKey(k) => json!(hex::encode(k)),
        Frame::PeerState(p) => {
            json!({"peer": p.peer.to_string(), "status": p.status.name(), "since_ms": p.since_ms})
        }
        Frame::InstrReqId(r) => {
            json!({"session": r.session, "request": r.request, "queue": r.queue})
        }
        Frame::Unknown { value, .. } => json!(hex::encode(value)),
    }
}

fn addr_text(a: &AddrFrame<'_>) -> String {
    match a.ip() {
        Some(ip) => ip.to_string(),
        None => a
            .bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// Renders one decoded FrameSet object as readable text.
pub fn render_text(v: &Value) -> String {
    let mut s = String::new();
    let get = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let _ = write!(s, "{}", compact(&get("source")));
    match v.get("fstype_name") {
        Some(name) => {
            let _ = write!(
                s,
                " {} ({}) fslen {}",
                name.as_str().unwrap_or("?"),
                get("fstype"),
                get("fslen")
            );
        }
        None => s.push_str(" <no FrameSet header>"),
    }
    if let Some(sig) = v.get("sig") {
        let _ = write!(
            s,
            ", sig {} {}",
            str_of(&sig["kind"]),
            str_of(&sig["verdict"])
        );
    }
    if let Some(r) = v.get("reqid") {
        let _ = write!(
            s,
            ", reqid {}/{}/{}",
            r["session"], r["request"], r["queue"]
        );
    }
    match str_of(&get("verdict")) {
        "accepted" => {
            s.push_str(": accepted");
            if let Some(m) = v.get("malformed") {
                let _ = write!(
                    s,
                    " (malformed payload: {} at {})",
                    str_of(&m["reason"]),
                    m["offset"]
                );
            }
        }
        _ => {
            let d = get("drop");
            let inflated = if d["inflated"] == json!(true) {
                " of the inflated frames"
            } else {
                ""
            };
            let _ = write!(
                s,
                ": DROPPED {} at byte {}{}",
                str_of(&d["reason"]),
                d["offset"],
                inflated
            );
        }
    }
    s.push('\n');
    for (key, title) in [("frames", ""), ("inflated_frames", "inflated ")] {
        if let Some(Value::Array(frames)) = v.get(key) {
            for f in frames {
                if let Some(e) = f.get("error").filter(|_| f.get("type").is_none()) {
                    let _ = writeln!(s, "  {title}<{}> at {}", str_of(e), f["offset"]);
                    continue;
                }
                let value = match f.get("value") {
                    Some(v) => compact(v),
                    None => format!("<{}> {}", str_of(&f["error"]), str_of(&f["raw"])),
                };
                let _ = writeln!(
                    s,
                    "  {title}{} ({}) len {} @{}: {}",
                    str_of(&f["name"]),
                    f["type"],
                    f["length"],
                    f["offset"],
                    value
                );
            }
        }
    }
    if let Some(e) = v.get("inflate_error") {
        let _ = writeln!(s, "  inflate failed: {}", str_of(e));
    }
    s
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A UDP payload found in a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedDatagram {
    /// 1-based packet number in the file.
    pub packet: usize,
    /// UDP source.
    pub src: SocketAddr,
    /// UDP destination.
    pub dst: SocketAddr,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What a capture held besides UDP datagrams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    /// The UDP datagrams, in file order.
    pub datagrams: Vec<CapturedDatagram>,
    /// Packets that were not UDP (or were IP fragments or truncated).
    pub skipped: usize,
}

/// Why a capture file could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PcapError {
    /// Not a classic pcap file (bad magic or short header).
    NotPcap,
    /// A link type we do not decode.
    UnsupportedLinkType(i32),
    /// The file ends inside packet `packet`.
    Truncated {
        /// 1-based packet number.
        packet: usize,
    },
}

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PcapError::NotPcap => write!(f, "not a classic pcap file"),
            PcapError::UnsupportedLinkType(t) => write!(
                f,
                "unsupported link type {t} (Ethernet 1, raw IP 12/101/228/229, Linux cooked 113 are)"
            ),
            PcapError::Truncated { packet } => write!(f, "file ends inside packet {packet}"),
        }
    }
}

impl std::error::Error for PcapError {}

/// Link types we decode.
const LINKTYPE_ETHERNET: i32 = 1;
const LINKTYPE_RAW_OPENBSD: i32 = 12;
const LINKTYPE_RAW: i32 = 101;
const LINKTYPE_LINUX_SLL: i32 = 113;
const LINKTYPE_IPV4: i32 = 228;
const LINKTYPE_IPV6: i32 = 229;

/// The link-layer frames of a classic pcap file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapFrames<'a> {
    /// The link type (1 Ethernet, 113 Linux cooked, ...).
    pub link: i32,
    /// Each frame with its 1-based packet number.
    pub frames: Vec<(usize, &'a [u8])>,
    /// The file ended inside a record after these frames.
    pub truncated: bool,
}

/// Reads the frames of a classic pcap file held in memory. Frames read
/// before a truncated last record are kept; the truncation is an error only
/// when no frame could be read.
pub fn read_pcap_frames(data: &[u8]) -> Result<PcapFrames<'_>, PcapError> {
    use pcap_parser::pcap::{
        parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
    };
    let (mut rest, header) = parse_pcap_header(data).map_err(|_| PcapError::NotPcap)?;
    let link = header.network.0;
    let mut frames = Vec::new();
    let mut truncated = false;
    while !rest.is_empty() {
        let packet = frames.len() + 1;
        let parsed = if header.is_modified_format() {
            parse_pcap_frame_modified(rest)
        } else if header.is_bigendian() {
            parse_pcap_frame_be(rest)
        } else {
            parse_pcap_frame(rest)
        };
        let Ok((next, block)) = parsed else {
            if frames.is_empty() {
                return Err(PcapError::Truncated { packet });
            }
            truncated = true;
            break;
        };
        rest = next;
        frames.push((packet, block.data));
    }
    Ok(PcapFrames {
        link,
        frames,
        truncated,
    })
}

/// Reads every UDP datagram of a classic pcap file held in memory. Packets
/// read before a truncation are kept: a truncated tail is reported only if
/// nothing was read.
pub fn read_pcap(data: &[u8]) -> Result<CaptureSummary, PcapError> {
    let PcapFrames {
        link,
        frames,
        truncated,
    } = read_pcap_frames(data)?;
    if ![
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_OPENBSD,
        LINKTYPE_RAW,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    ]
    .contains(&link)
    {
        return Err(PcapError::UnsupportedLinkType(link));
    }
    let mut summary = CaptureSummary {
        skipped: usize::from(truncated),
        ..CaptureSummary::default()
    };
    for (packet, data) in frames {
        match udp_of(link, data) {
            Some((src, dst, payload)) => summary.datagrams.push(CapturedDatagram {
                packet,
                src,
                dst,
                payload: payload.to_vec(),
            }),
            None => summary.skipped += 1,
        }
    }
    Ok(summary)
}

/// The UDP source, destination and payload of one captured packet.
fn udp_of(link: i32, data: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = match link {
        LINKTYPE_ETHERNET => SlicedPacket::from_ethernet(data),
        LINKTYPE_LINUX_SLL => SlicedPacket::from_linux_sll(data),
        _ => SlicedPacket::from_ip(data),
    }
    .ok()?;
    let (src_ip, dst_ip): (std::net::IpAddr, std::net::IpAddr) = match sliced.net? {
        NetSlice::Ipv4(ip) => {
            if ip.payload().fragmented {
                return None;
            }
            (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            )
        }
        NetSlice::Ipv6(ip) => {
            if ip.payload().fragmented {
                return None;
            }
            (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            )
        }
        NetSlice::Arp(_) => return None,
    };
    match sliced.transport? {
        TransportSlice::Udp(u) => Some((
            SocketAddr::new(src_ip, u.source_port()),
            SocketAddr::new(dst_ip, u.destination_port()),
            u.payload(),
        )),
        _ => None,
    }
}

/// Parses one line of hex (whitespace, `:` and a leading `0x` allowed). For
/// the capture files' `NAME<TAB>hex[<TAB>...]` lines, the hex field is used.
pub fn parse_hex_line(line: &str) -> Result<Vec<u8>, String> {
    let line = line.trim();
    let field = if line.contains('\t') {
        line.split('\t').find(|f| is_hex(f)).unwrap_or(line)
    } else {
        line
    };
    let cleaned: String = field
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(&cleaned).map_err(|e| format!("not hex: {e}"))
}

fn is_hex(s: &str) -> bool {
    let s = s.trim();
    s.len() >= 2 && s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What `cma decode` reads.
#[derive(Clone, Debug)]
pub enum DecodeInput {
    /// Hex datagrams, one per item (arguments or stdin lines), numbered from 1.
    Hex(Vec<String>),
    /// The bytes of a classic pcap file.
    Pcap(Vec<u8>),
}

/// Counts from one `cma decode` run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// FrameSets shown.
    pub framesets: usize,
    /// FrameSets the classifier accepted.
    pub accepted: usize,
    /// Inputs that were not hex, or capture packets that were not UDP.
    pub skipped: usize,
}

/// Runs `cma decode`: writes one JSON object per line (or text with `text`)
/// per FrameSet to `out`, and a note per unreadable input line to `err`.
pub fn run_decode(
    input: DecodeInput,
    text: bool,
    keys: Option<&dyn classify::Opener>,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> std::io::Result<Result<DecodeStats, PcapError>> {
    let mut stats = DecodeStats::default();
    let mut show =
        |datagram: &[u8], source: Value, out: &mut dyn std::io::Write| -> std::io::Result<()> {
            for v in decode_datagram_with(datagram, &source, keys) {
                stats.framesets += 1;
                if v["verdict"] == json!("accepted") {
                    stats.accepted += 1;
                }
                if text {
                    out.write_all(render_text(&v).as_bytes())?;
                } else {
                    writeln!(out, "{v}")?;
                }
            }
            Ok(())
        };
    let mut skipped = 0;
    match input {
        DecodeInput::Hex(lines) => {
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() || line.trim_start().starts_with('#') {
                    continue;
                }
                match parse_hex_line(line) {
                    Ok(bytes) => show(&bytes, json!({"line": i + 1}), out)?,
                    Err(e) => {
                        skipped += 1;
                        writeln!(err, "input {}: {e}", i + 1)?;
                    }
                }
            }
        }
        DecodeInput::Pcap(data) => {
            let capture = match read_pcap(&data) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            skipped += capture.skipped;
            for d in &capture.datagrams {
                let source =
                    json!({"packet": d.packet, "src": d.src.to_string(), "dst": d.dst.to_string()});
                show(&d.payload, source, out)?;
            }
        }
    }
    stats.skipped = skipped;
    Ok(Ok(stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{EncodeOptions, Message, ReqId, classify, encode, write_logged};

    #[test]
    fn a_classified_log_record_decodes_to_its_type_reqid_and_frames() {
        let r = ReqId {
            session: 3,
            request: 9,
            queue: 0,
        };
        let peer = "10.0.0.2:1984".parse().unwrap();
        let mut wire = Vec::new();
        encode(
            &Message::HbDead { peer },
            Some(r),
            &EncodeOptions::default(),
            &mut wire,
        )
        .unwrap();
        let mut record = Vec::new();
        write_logged(&classify(&wire).unwrap(), &mut record);
        let v = decode_logged(&record);
        assert_eq!(v["fstype_name"], "HBDEAD");
        assert_eq!(v["reqid"]["request"], 9);
        let frames = v["frames"].as_array().unwrap();
        assert!(
            frames.iter().any(|f| f["value"] == "10.0.0.2:1984"),
            "{frames:?}"
        );
        assert!(decode_logged(&record[..10])["error"].is_string());
    }
}
