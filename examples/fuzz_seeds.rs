//! Writes the fuzz seed corpora: `cargo run --example fuzz_seeds`.
//!
//! `fuzz/corpus/classify/`: the known HEARTBEAT vector, every datagram of
//! the real nanoprobe captures, and one FrameSet per message type from the
//! encoder (plain, SHA-1 and compressed variants). `fuzz/corpus/decode_pcap/`:
//! pcap files of those datagrams over each supported link type.
//! `fuzz/corpus/crypt/`: the encoder's FrameSets in clear and sealed with
//! `cma::crypt::fixture`'s keys (fixed nonces). Files are
//! named by the SHA-1 of their contents, as libFuzzer names its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cma::classify::{
    DigestKind, Discoveries, Discovery, EncodeOptions, FrameSetType, HbParams, HbState, Message,
    PeerState, PeerStates, PeerStatus, Peers, ReqId, Startup, SwDiscover, encode,
};
use sha1::{Digest, Sha1};

const HEARTBEAT_VECTOR: &str = "000100002c0000000100002201028855508aade16ec573d21e6a485dfd0a7624085c1a14b5ecdd6485de0c6839a40000000000";

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut datagrams = vec![hex::decode(HEARTBEAT_VECTOR).expect("vector is hex")];
    for file in ["handshake.tsv", "startup.tsv"] {
        let path = root.join("tests/data").join(file);
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines() {
            if let Some(h) = line.split('\t').nth(1) {
                datagrams.push(hex::decode(h).expect("capture lines are hex"));
            }
        }
    }
    datagrams.extend(encoded_messages());
    // Real LLDP/CDP frames (the fuzz target also feeds the switch parser).
    let switch_dir = root.join("tests/data/switch");
    let mut pcaps: Vec<_> = std::fs::read_dir(&switch_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pcaps.sort();
    let mut switch_frames = Vec::new();
    for p in pcaps {
        let data = std::fs::read(&p)?;
        if let Ok(capture) = cma::decode::read_pcap_frames(&data) {
            switch_frames.extend(capture.frames.into_iter().map(|(_, f)| f.to_vec()));
        }
    }
    let dir = root.join("fuzz/corpus/classify");
    for d in datagrams.iter().chain(&switch_frames) {
        write_named(&dir, d)?;
    }
    let dir = root.join("fuzz/corpus/decode_pcap");
    for (link, wrap) in [(101u32, None), (1, Some(ETHERNET)), (113, Some(SLL))] {
        let packets: Vec<Vec<u8>> = datagrams
            .iter()
            .take(12)
            .map(|d| udp_ipv4(d, wrap))
            .collect();
        write_named(&dir, &pcap(link, &packets))?;
    }
    // Encrypted FrameSets (the fixture's keys, fixed nonces) and their
    // clear originals, for `crypt`.
    let (_, id, shared) = cma::crypt::fixture();
    let dir = root.join("fuzz/corpus/crypt");
    let mut crypt_seeds = 0;
    for (i, d) in encoded_messages().iter().enumerate() {
        let mut sealed = Vec::new();
        let nonce = [i as u8; 24];
        if cma::crypt::seal_frameset_with_nonce(&id, "#CMA#00000", &shared, &nonce, d, &mut sealed)
            .is_ok()
        {
            write_named(&dir, &sealed)?;
            write_named(&dir, d)?;
            crypt_seeds += 2;
        }
    }
    let wal_seeds = wal_segments()?;
    let dir = root.join("fuzz/corpus/wal_recovery");
    for seed in &wal_seeds {
        write_named(&dir, seed)?;
    }
    println!(
        "wrote {} classify seeds, 3 pcap seeds, {} WAL seeds, {crypt_seeds} crypt seeds",
        datagrams.len(),
        wal_seeds.len()
    );
    Ok(())
}

/// Seeds for `wal_recovery`: a count byte (segments - 1), then segment
/// files of a small log written by the real writer: one segment alone, two
/// in a row, and one with a torn last record.
fn wal_segments() -> std::io::Result<Vec<Vec<u8>>> {
    use cma::wal::{RecordKind, RecordMeta, SyncPolicy, Wal, WalConfig};
    let dir = tempfile::tempdir()?;
    let config = WalConfig {
        segment_size: 4096,
        sync: SyncPolicy::Inline {
            max_records: 4,
            max_delay_us: 1000,
        },
        ..WalConfig::new(dir.path())
    };
    {
        let (mut wal, _) = Wal::open(config).map_err(std::io::Error::other)?;
        for i in 0..40u64 {
            let meta = RecordMeta {
                kind: if i % 5 == 0 {
                    RecordKind::Tick
                } else {
                    RecordKind::FrameSet
                },
                time_ns: i * 1_000_000,
                peer: Some(SocketAddr::from(([10, 0, 0, (i % 250) as u8], 1984))),
            };
            wal.append(&meta, &vec![i as u8; (i * 7 % 100) as usize])
                .map_err(std::io::Error::other)?;
        }
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    names.sort();
    let mut segs: Vec<Vec<u8>> = names.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    // Clear the creation time (and fix the header's CRC) so that the seeds
    // are the same on every run.
    for s in &mut segs {
        s[32..40].fill(0);
        let crc = crc32c::crc32c(&s[..60]);
        s[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    let mut seeds = Vec::new();
    for s in &segs {
        let mut one = vec![0u8];
        one.extend_from_slice(s);
        seeds.push(one);
    }
    if segs.len() >= 2 {
        let mut two = vec![1u8];
        two.extend_from_slice(&segs[0]);
        two.extend_from_slice(&segs[1]);
        seeds.push(two);
    }
    if let Some(last) = segs.last() {
        let mut torn = vec![0u8];
        torn.extend_from_slice(last);
        let used = torn.iter().rposition(|b| *b != 0).unwrap_or(0);
        torn[used.saturating_sub(20)..=used].fill(0);
        seeds.push(torn);
    }
    Ok(seeds)
}

fn encoded_messages() -> Vec<Vec<u8>> {
    let peer: SocketAddr = "10.0.0.2:1984".parse().expect("literal address");
    let peers = [
        "10.0.0.3:1984".parse().expect("literal"),
        "[fd00::4]:1984".parse().expect("literal"),
    ];
    let key = [5u8; 32];
    let discoveries = [Discovery {
        name: "os",
        interval_s: 0,
        json: "{}",
    }];
    let states = [
        PeerState {
            peer: peers[0],
            status: PeerStatus::Up,
            since_ms: 800,
        },
        PeerState {
            peer: peers[1],
            status: PeerStatus::Dead,
            since_ms: 31_000,
        },
    ];
    let big = format!("{{\"data\":\"{}\"}}", "netconfig ".repeat(3000));
    let params = HbParams {
        rscjson: Some(r#"{"repeat":1,"warn":5,"timeout":30}"#),
        ..HbParams::default()
    };
    let messages = [
        Message::Heartbeat,
        Message::Ping,
        Message::Pong,
        Message::Startup(Startup {
            hostname: "node1",
            listen: "[::ffff:10.0.0.1]:1984".parse().expect("literal"),
            wallclock_us: 1_795_614_845_375_833,
            netconfig: r#"{"instance":"netconfig"}"#,
            key: Some(("node1", &key)),
            features: Some("hbstate,actionnak,stats"),
        }),
        Message::Ack,
        Message::ConnShut,
        Message::ConnNak,
        Message::HbDead { peer },
        Message::HbShutdown { hostname: "node1" },
        Message::HbLate {
            peer,
            elapsed_us: 2_500_000,
        },
        Message::HbBackAlive {
            peer,
            elapsed_us: 0,
        },
        Message::HbMartian { peer },
        Message::SwDiscover(SwDiscover {
            wallclock_us: 1,
            pktdata: &[
                0x01, 0x80, 0xc2, 0, 0, 0x0e, 2, 0, 0, 0, 0, 1, 0x88, 0xcc, 0, 0,
            ],
            interface: "eth0",
            hostname: "node1",
            discname: "lldp",
        }),
        Message::JsDiscovery {
            wallclock_us: Some(1),
            json: &big,
        },
        Message::RscOpReply { json: "{}" },
        Message::SeqPing,
        Message::SeqPong,
        Message::Heartbeats {
            kind: FrameSetType::SendExpectHb,
            params,
            peers: Peers::List(&peers),
        },
        Message::Heartbeats {
            kind: FrameSetType::SendHb,
            params: HbParams {
                interval_s: Some(1),
                ..HbParams::default()
            },
            peers: Peers::List(&peers),
        },
        Message::StopHeartbeats {
            kind: FrameSetType::StopSendExpectHb,
            peers: Peers::List(&peers),
        },
        Message::SetConfig {
            json: r#"{"cmaaddr":"127.0.0.1:1984"}"#,
        },
        Message::IncrDebug,
        Message::DecrDebug,
        Message::Discover {
            stop: false,
            list: Discoveries::List(&discoveries),
        },
        Message::Discover {
            stop: true,
            list: Discoveries::List(&discoveries),
        },
        Message::RscOp {
            stop: false,
            json: "{}",
        },
        Message::AckStartup,
        Message::HbState(HbState {
            wallclock_us: 1_795_614_845_375_833,
            applied: Some(ReqId {
                session: 9,
                request: 4,
                queue: 0,
            }),
            expect: PeerStates::List(&states),
            send: Peers::List(&peers[..2]),
        }),
        Message::HbStateReq,
        Message::ActionNak {
            instr: ReqId {
                session: 9,
                request: 5,
                queue: 0,
            },
            code: 2,
            reason: "too many peers",
        },
        Message::Stats {
            json: r#"{"heartbeats_sent":10}"#,
        },
    ];
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let reqid = (m.fstype() >= 16).then_some(ReqId {
            session: 7,
            request: i as u64 + 1,
            queue: 0,
        });
        for digest in [DigestKind::Sha256, DigestKind::Sha1] {
            let mut bytes = Vec::new();
            let opts = EncodeOptions {
                digest,
                ..EncodeOptions::default()
            };
            encode(m, reqid, &opts, &mut bytes).expect("seed messages fit a datagram");
            out.push(bytes);
        }
    }
    out
}

const ETHERNET: &[u8] = &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
const SLL: &[u8] = &[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];

/// An IPv4/UDP packet on loopback (checksums zero: allowed for UDP/IPv4).
fn udp_ipv4(payload: &[u8], link_header: Option<&[u8]>) -> Vec<u8> {
    let mut p = link_header.unwrap_or_default().to_vec();
    let total = (20 + 8 + payload.len()) as u16;
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2]);
    p.extend_from_slice(&1985u16.to_be_bytes());
    p.extend_from_slice(&1984u16.to_be_bytes());
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn pcap(linktype: u32, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&[2, 0, 4, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    for p in packets {
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    f
}

fn write_named(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(hex::encode(Sha1::digest(bytes))), bytes)
}
