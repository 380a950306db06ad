//! `cma bench checkpoint`: what a checkpoint costs the decider thread, the
//! whole state serialised (the format before incremental rows) against the
//! rows changed since the last checkpoint, for a simulated registry.
//!
//! The registry: `nodes` agents, each a STARTUP from its own address with
//! a netconfig naming a /24 (so groups of 254), every instruction ACKed, so
//! the fleet is settled as in production. Then an interval's reports:
//! `reports` HBLATEs from nodes spread over the registry, each ACKed. For
//! both formats: the bytes written and the time the decider thread spends
//! producing them (its stall: it decides nothing meanwhile).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::classify::{Message, ReqId, Startup};
use crate::decide::decider::{Decider, DeciderConfig, Effect, Event, Input};

/// Settings.
#[derive(Clone, Debug)]
pub struct CheckpointBenchConfig {
    /// Registry size.
    pub nodes: usize,
    /// Reports between two checkpoints.
    pub reports: usize,
}

/// The figures.
#[derive(Clone, Debug, Default)]
pub struct CheckpointBenchResult {
    /// Registry size.
    pub nodes: usize,
    /// Seconds to build the registry.
    pub build_s: f64,
    /// The whole state: bytes, and ms to serialise it.
    pub whole: (usize, f64),
    /// The first incremental checkpoint (every row): bytes, ms.
    pub first_rows: (usize, f64),
    /// After `reports` reports: rows, bytes, ms.
    pub interval: (usize, usize, f64),
    /// Reports in the interval.
    pub reports: usize,
}

fn addr_of(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
        1984,
    )
}

struct Fleet {
    d: Decider,
    lsn: u64,
    now_ms: u64,
    effects: Vec<Effect>,
    /// Highest (session, request) sent to each node and not yet ACKed.
    unacked: Vec<Option<ReqId>>,
}

impl Fleet {
    fn feed(&mut self, from: SocketAddr, reqid: Option<ReqId>, m: Message<'_>) {
        self.lsn += 1;
        self.now_ms += 1;
        self.effects.clear();
        self.d.handle(
            &Input {
                lsn: self.lsn,
                time_ms: self.now_ms,
                event: Event::Received {
                    from,
                    reqid,
                    message: m,
                    key: None,
                },
            },
            &mut self.effects,
        );
        for e in &self.effects {
            if let Effect::Send { node, reqid, .. } = e {
                let slot = &mut self.unacked[*node as usize];
                if slot.is_none_or(|r| (r.session, r.request) < (reqid.session, reqid.request)) {
                    *slot = Some(*reqid);
                }
            }
        }
    }

    /// ACKs everything sent, until nothing more is sent.
    fn settle(&mut self) {
        loop {
            let pending: Vec<(usize, ReqId)> = self
                .unacked
                .iter_mut()
                .enumerate()
                .filter_map(|(i, r)| r.take().map(|r| (i, r)))
                .collect();
            if pending.is_empty() {
                return;
            }
            for (i, r) in pending {
                self.feed(addr_of(i), Some(r), Message::Ack);
            }
        }
    }
}

/// Runs the benchmark.
pub fn run(cfg: &CheckpointBenchConfig) -> CheckpointBenchResult {
    let t0 = Instant::now();
    let cma = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 255, 254)), 1984);
    let mut f = Fleet {
        d: Decider::new(DeciderConfig::new(cma, 1)),
        lsn: 0,
        now_ms: 1_000,
        effects: Vec::new(),
        unacked: vec![None; cfg.nodes],
    };
    for i in 0..cfg.nodes {
        let a = addr_of(i);
        let host = format!("node-{i:07}");
        let net = format!(
            "{{\"data\":{{\"eth0\":{{\"carrier\":true,\"ipaddrs\":{{\"{}/24\":{{}}}}}}}}}}",
            a.ip()
        );
        f.feed(
            a,
            None,
            Message::Startup(Startup {
                hostname: &host,
                listen: a,
                wallclock_us: 1,
                netconfig: &net,
                key: None,
                features: None,
            }),
        );
    }
    f.settle();
    let build_s = t0.elapsed().as_secs_f64();

    let t = Instant::now();
    let whole = f.d.export();
    let whole_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let first = f.d.take_checkpoint();
    let first_ms = t.elapsed().as_secs_f64() * 1e3;

    // An interval: reports from nodes spread over the registry, ACKed.
    let step = (cfg.nodes / cfg.reports.max(1)).max(1);
    for (request, k) in (1..).zip(0..cfg.reports) {
        let i = (k * step + k / cfg.nodes.max(1)) % cfg.nodes;
        let peer = addr_of((i + 1) % cfg.nodes);
        let r = ReqId {
            session: 7,
            request,
            queue: 0,
        };
        f.feed(
            addr_of(i),
            Some(r),
            Message::HbLate {
                peer,
                elapsed_us: 1_500_000,
            },
        );
    }
    f.settle();
    let t = Instant::now();
    let delta = f.d.take_checkpoint();
    let delta_ms = t.elapsed().as_secs_f64() * 1e3;
    CheckpointBenchResult {
        nodes: cfg.nodes,
        build_s,
        whole: (whole.len(), whole_ms),
        first_rows: (first.bytes(), first_ms),
        interval: (delta.nodes.len(), delta.bytes(), delta_ms),
        reports: cfg.reports,
    }
}

/// A table for people.
pub fn render(r: &CheckpointBenchResult) -> String {
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    format!(
        "registry: {} nodes in /24 groups, settled (built in {:.1} s)\n\
         whole state (the checkpoint before rows): {:.1} MiB, {:.1} ms on the decider thread\n\
         rows, first checkpoint (every row): {:.1} MiB, {:.1} ms\n\
         rows, after {} reports: {} node rows, {:.1} KiB, {:.3} ms on the decider thread\n\
         ratio whole / rows after the interval: {:.0}x bytes, {:.0}x stall\n",
        r.nodes,
        r.build_s,
        mib(r.whole.0),
        r.whole.1,
        mib(r.first_rows.0),
        r.first_rows.1,
        r.reports,
        r.interval.0,
        r.interval.1 as f64 / 1024.0,
        r.interval.2,
        r.whole.0 as f64 / r.interval.1.max(1) as f64,
        r.whole.1 / r.interval.2.max(1e-6),
    )
}

/// The result as JSON.
pub fn to_json(r: &CheckpointBenchResult) -> serde_json::Value {
    serde_json::json!({
        "nodes": r.nodes,
        "build_s": r.build_s,
        "whole": {"bytes": r.whole.0, "ms": r.whole.1},
        "rows_first": {"bytes": r.first_rows.0, "ms": r.first_rows.1},
        "rows_interval": {"reports": r.reports, "rows": r.interval.0, "bytes": r.interval.1, "ms": r.interval.2},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_registry_writes_only_what_an_interval_changed() {
        let r = run(&CheckpointBenchConfig {
            nodes: 600,
            reports: 10,
        });
        assert!(r.first_rows.0 > 0 && r.whole.0 > 0);
        // Ten reporters (and nothing else changed).
        assert_eq!(r.interval.0, 10);
        assert!(r.interval.1 < r.first_rows.0 / 20);
    }
}
