//! ns per packet for `classify` (parse, digest check, validation) on the
//! four shapes that dominate a CMA's input; and, in the same run, what
//! CRYPTCURVE25519 adds: the HBDEAD opened with the CMA's keys
//! (`classify_with`), and an ACK sealed for a nanoprobe (the CMA's cost per
//! ACK and instruction to a keyed node).

use std::hint::black_box;

use cma::classify::{EncodeOptions, Message, ReqId, Startup, classify, encode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn packet(m: &Message<'_>, reqid: Option<ReqId>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(m, reqid, &EncodeOptions::default(), &mut out).expect("bench packets fit a datagram");
    out
}

fn bench(c: &mut Criterion) {
    let reqid = Some(ReqId {
        session: 1_600_000_000,
        request: 42,
        queue: 0,
    });
    let netconfig = format!("{{\"data\":\"{}\"}}", "n".repeat(1024 - 11));
    // Discovery JSON that compresses like real JSON does (repeated keys).
    let mut discovery = String::from("{\"data\":{");
    let mut i = 0;
    while discovery.len() < 30 * 1024 {
        discovery.push_str(&format!(
            "\"pkg{i}\":{{\"version\":\"1.{i}.{}\",\"arch\":\"amd64\"}},",
            i * 7 % 13
        ));
        i += 1;
    }
    discovery.push_str("\"end\":0}}");
    let cases = [
        ("heartbeat", packet(&Message::Heartbeat, None)),
        (
            "hbdead_reqid",
            packet(
                &Message::HbDead {
                    peer: "10.1.2.3:1984".parse().expect("literal"),
                },
                reqid,
            ),
        ),
        (
            "startup_1k_json",
            packet(
                &Message::Startup(Startup {
                    hostname: "node-0001.rack17.example",
                    listen: "[::ffff:10.1.2.4]:1984".parse().expect("literal"),
                    wallclock_us: 1_795_614_845_375_833,
                    netconfig: &netconfig,
                    key: None,
                    features: None,
                }),
                None,
            ),
        ),
        (
            "jsdiscovery_30k_compressed",
            packet(
                &Message::JsDiscovery {
                    wallclock_us: Some(1),
                    json: &discovery,
                },
                reqid,
            ),
        ),
    ];
    let mut g = c.benchmark_group("classify");
    for (name, bytes) in &cases {
        assert!(classify(bytes).is_ok(), "{name} must classify");
        g.throughput(Throughput::Elements(1));
        g.bench_function(*name, |b| {
            b.iter(|| classify(black_box(bytes)).map(|c| c.wire_len))
        });
    }
    g.finish();

    let (ring, id, shared) = cma::crypt::fixture();
    let hbdead = &cases[1].1;
    let mut sealed = Vec::new();
    cma::crypt::seal_frameset(&id, "#CMA#00000", &shared, hbdead, &mut sealed)
        .expect("the HBDEAD seals");
    let peer = ring.peer(&id).expect("the fixture trusts its probe");
    let ack = packet(&Message::Ack, reqid);
    let mut g = c.benchmark_group("crypt");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hbdead_reqid_clear", |b| {
        b.iter(|| classify(black_box(hbdead)).map(|c| c.wire_len))
    });
    g.bench_function("hbdead_reqid_opened", |b| {
        b.iter(|| cma::classify::classify_with(black_box(&sealed), Some(&ring)).map(|c| c.wire_len))
    });
    let mut out = Vec::with_capacity(256);
    g.bench_function("ack_sealed", |b| {
        b.iter(|| {
            out.clear();
            peer.seal(black_box(&ack), &mut out).map(|_| out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
