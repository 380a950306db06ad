//! Prometheus text metrics over HTTP (tiny_http, one thread): what the
//! threads publish in [`Metrics`], rendered on each `GET /metrics`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::classify::{Drop, frameset_type_name};
use crate::wal::Watermarks;

/// FrameSet types counted one by one (higher ones share the last bucket).
const TYPES: usize = 128;

/// Figures the decider thread refreshes now and then.
#[derive(Clone, Debug, Default)]
pub struct DeciderFigures {
    /// Nodes per status.
    pub nodes: Vec<(&'static str, u64)>,
    /// Group rings.
    pub groups: u64,
    /// Members of the top ring.
    pub top_ring: u64,
    /// recv -> decided, µs: (quantile, value).
    pub latency_us: Vec<(f64, u64)>,
    /// Latency samples.
    pub latency_count: u64,
}

/// Everything the daemon counts.
pub struct Metrics {
    /// Datagrams accepted by classify, by FrameSet type.
    pub by_type: [AtomicU64; TYPES],
    /// Datagrams dropped by classify, by reason.
    pub drops: [AtomicU64; Drop::COUNT],
    /// Sequenced duplicates re-ACKed, not logged again.
    pub duplicates: AtomicU64,
    /// Out-of-order or stale sequenced FrameSets dropped.
    pub out_of_order: AtomicU64,
    /// Kernel drops (SO_RXQ_OVFL).
    pub kernel_drops: AtomicU64,
    /// Ring-full drops.
    pub ring_full_drops: AtomicU64,
    /// Datagrams longer than a ring slot, passed whole (spill queue).
    pub spilled: AtomicU64,
    /// Datagrams longer than a ring slot, cut and dropped.
    pub truncated: AtomicU64,
    /// Datagrams received.
    pub received: AtomicU64,
    /// Records appended.
    pub appended: AtomicU64,
    /// Group commits and the records they made durable.
    pub syncs: AtomicU64,
    /// Records made durable.
    pub synced_records: AtomicU64,
    /// Largest group commit.
    pub max_batch: AtomicU64,
    /// ACKs sent.
    pub acks_sent: AtomicU64,
    /// Records decided.
    pub decided: AtomicU64,
    /// Instructions sent (first transmissions).
    pub instructions_sent: AtomicU64,
    /// Retransmissions.
    pub retransmits: AtomicU64,
    /// Agents the decider gave up on (an instruction never ACKed).
    pub gave_up: AtomicU64,
    /// Send errors.
    pub send_errors: AtomicU64,
    /// LSN the store reflects.
    pub stored_lsn: AtomicU64,
    /// Sequenced FrameSets under a session other than their connection's
    /// (not started by the sender's STARTUP or CONNSHUT), dropped.
    pub unknown_session: AtomicU64,
    /// FrameSets (but STARTUP) from addresses that never registered, dropped.
    pub unregistered: AtomicU64,
    /// Registrations over the per-network rate, dropped.
    pub registrations_limited: AtomicU64,
    /// Compressed FrameSets dropped uninflated: their source network's
    /// inflation budget was spent.
    pub inflate_limited: AtomicU64,
    /// Large compressed FrameSets dropped: the inflater held its most.
    pub inflate_busy: AtomicU64,
    /// Datagrams past their source's share of a busy log-thread pass.
    pub fair_share: AtomicU64,
    /// FrameSets logged as received that the decider classified again.
    pub reclassified: AtomicU64,
    /// Classified FrameSets too large for a log segment, dropped.
    pub too_large: AtomicU64,
    /// Sequenced FrameSets on a queue id above `QUEUE_ID_MAX`, dropped.
    pub queue_refused: AtomicU64,
    /// Sequenced FrameSets in clear text from a keyed address, dropped.
    pub auth_unencrypted: AtomicU64,
    /// Sequenced FrameSets from a keyed address under a key that is not
    /// one of its own, dropped.
    pub auth_wrong_key: AtomicU64,
    /// STARTUPs whose key was refused (changed, unknown, malformed), or
    /// without a key when `auth.allow_unkeyed` is off, dropped.
    pub auth_refused: AtomicU64,
    /// Instructions or ACKs not sent: the node's key is not in the key
    /// directory any more.
    pub auth_unsendable: AtomicU64,
    /// Registrations from new addresses past `limits.max_nodes`, dropped.
    pub registrations_refused: AtomicU64,
    /// Registrations forgotten: they never ACKed their SETCONFIG.
    pub forgotten: AtomicU64,
    /// 1 once a thread failed (the daemon stops; no more ACKs).
    pub failed: AtomicU64,
    /// ACKs not sent because a thread had failed.
    pub acks_withheld: AtomicU64,
    /// The decider's figures.
    pub decider: Mutex<DeciderFigures>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            by_type: std::array::from_fn(|_| AtomicU64::new(0)),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            duplicates: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            kernel_drops: AtomicU64::new(0),
            ring_full_drops: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            received: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            synced_records: AtomicU64::new(0),
            max_batch: AtomicU64::new(0),
            acks_sent: AtomicU64::new(0),
            decided: AtomicU64::new(0),
            instructions_sent: AtomicU64::new(0),
            retransmits: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            stored_lsn: AtomicU64::new(0),
            unknown_session: AtomicU64::new(0),
            unregistered: AtomicU64::new(0),
            registrations_limited: AtomicU64::new(0),
            inflate_limited: AtomicU64::new(0),
            inflate_busy: AtomicU64::new(0),
            fair_share: AtomicU64::new(0),
            reclassified: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            queue_refused: AtomicU64::new(0),
            auth_unencrypted: AtomicU64::new(0),
            auth_wrong_key: AtomicU64::new(0),
            auth_refused: AtomicU64::new(0),
            auth_unsendable: AtomicU64::new(0),
            registrations_refused: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            acks_withheld: AtomicU64::new(0),
            decider: Mutex::new(DeciderFigures::default()),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts an accepted datagram of `fstype`.
    pub fn accepted(&self, fstype: u16) {
        inc(&self.by_type[usize::from(fstype).min(TYPES - 1)]);
    }

    /// Counts a drop.
    pub fn dropped(&self, reason: Drop) {
        inc(&self.drops[reason as usize]);
    }

    /// All classify drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    /// All accepted datagrams.
    pub fn accepted_total(&self) -> u64 {
        self.by_type.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    /// The Prometheus text exposition.
    /// A flat list, a few lines per metric family.
    pub fn render(&self, wal: &Watermarks) -> String {
        let mut s = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        fn family(s: &mut String, name: &str, kind: &str, help: &str) -> String {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            name.to_string()
        }
        let n = family(
            &mut s,
            "cma_healthy",
            "gauge",
            "1 while every daemon thread runs; 0 once one failed (the daemon stops, no more ACKs).",
        );
        let _ = writeln!(s, "{n} {}", 1 - get(&self.failed).min(1));
        let n = family(
            &mut s,
            "cma_datagrams_total",
            "counter",
            "Datagrams accepted, by FrameSet type.",
        );
        let mut body = String::new();
        for (t, c) in self.by_type.iter().enumerate() {
            let v = get(c);
            if v > 0 {
                let _ = writeln!(body, "{n}{{type=\"{}\"}} {v}", frameset_type_name(t as u16));
            }
        }
        s.push_str(&body);
        let n = family(
            &mut s,
            "cma_drops_total",
            "counter",
            "Datagrams dropped by classify, by reason.",
        );
        for r in Drop::ALL {
            let _ = writeln!(
                s,
                "{n}{{reason=\"{}\"}} {}",
                r.name(),
                get(&self.drops[r as usize])
            );
        }
        for (name, help, v) in [
            (
                "cma_received_total",
                "Datagrams received.",
                get(&self.received),
            ),
            (
                "cma_kernel_drops_total",
                "Datagrams the kernel dropped (socket buffer full).",
                get(&self.kernel_drops),
            ),
            (
                "cma_ring_full_drops_total",
                "Datagrams dropped because the ring buffer was full.",
                get(&self.ring_full_drops),
            ),
            (
                "cma_spilled_total",
                "Datagrams longer than a ring slot, passed whole through the spill queue.",
                get(&self.spilled),
            ),
            (
                "cma_truncated_total",
                "Datagrams longer than a ring slot, cut and dropped (spill queue full).",
                get(&self.truncated),
            ),
            (
                "cma_duplicates_total",
                "Sequenced duplicates re-ACKed, not logged again.",
                get(&self.duplicates),
            ),
            (
                "cma_out_of_order_total",
                "Sequenced FrameSets out of order or from an old session, dropped.",
                get(&self.out_of_order),
            ),
            (
                "cma_wal_appended_total",
                "Records appended to the log.",
                get(&self.appended),
            ),
            ("cma_wal_syncs_total", "Group commits.", get(&self.syncs)),
            (
                "cma_wal_synced_records_total",
                "Records made durable by group commits.",
                get(&self.synced_records),
            ),
            (
                "cma_acks_sent_total",
                "ACKs sent (each after its FrameSet was durable).",
                get(&self.acks_sent),
            ),
            (
                "cma_unknown_session_total",
                "Sequenced FrameSets under a session their sender did not start (by STARTUP or CONNSHUT), dropped.",
                get(&self.unknown_session),
            ),
            (
                "cma_unregistered_total",
                "FrameSets other than STARTUP from addresses that never registered, dropped (no connection, no record).",
                get(&self.unregistered),
            ),
            (
                "cma_registrations_limited_total",
                "STARTUPs of new registrations over limits.registrations_per_s from one source network, dropped.",
                get(&self.registrations_limited),
            ),
            (
                "cma_queue_refused_total",
                "Sequenced FrameSets on a REQID queue id above 3 (nanoprobes use 0), dropped: no connection made.",
                get(&self.queue_refused),
            ),
            (
                "cma_auth_unencrypted_total",
                "Sequenced FrameSets in clear text from a keyed node's address (forged, or sent before it had the CMA's key), dropped.",
                get(&self.auth_unencrypted),
            ),
            (
                "cma_auth_wrong_key_total",
                "Sequenced FrameSets from a keyed node's address under another node's key, dropped.",
                get(&self.auth_wrong_key),
            ),
            (
                "cma_auth_refused_total",
                "STARTUPs refused for their key (changed, unknown with auth.require_known_keys, malformed) or for having none, dropped.",
                get(&self.auth_refused),
            ),
            (
                "cma_auth_unsendable_total",
                "Instructions and ACKs not sent: the node's key is no longer trusted.",
                get(&self.auth_unsendable),
            ),
            (
                "cma_too_large_total",
                "FrameSets whose classified record was larger than a log segment (wal.segment_mib), dropped.",
                get(&self.too_large),
            ),
            (
                "cma_inflate_limited_total",
                "Compressed FrameSets dropped before inflation: their source network spent limits.inflate_bytes_per_s.",
                get(&self.inflate_limited),
            ),
            (
                "cma_inflate_busy_total",
                "Large compressed FrameSets dropped uninflated: the inflater thread held as many as it may (its senders retransmit).",
                get(&self.inflate_busy),
            ),
            (
                "cma_fair_share_total",
                "Datagrams dropped unread past their source's share (limits.fair_share) of a log-thread pass that found more waiting than it takes (their senders retransmit).",
                get(&self.fair_share),
            ),
            (
                "cma_reclassified_total",
                "FrameSets logged as received (large inflations in clear) that the decider classified again, their classification not handed over (the handoff held its most).",
                get(&self.reclassified),
            ),
            (
                "cma_registrations_refused_total",
                "STARTUPs from new addresses past limits.max_nodes, dropped.",
                get(&self.registrations_refused),
            ),
            (
                "cma_registrations_forgotten_total",
                "Registrations forgotten: never ACKed their SETCONFIG (reliable.give_up_after transmissions: forged or unreachable STARTUPs), refused by the decider, or left by a node that moved. Their addresses count against limits.max_nodes no more.",
                get(&self.forgotten),
            ),
            (
                "cma_acks_withheld_total",
                "ACKs not sent because a daemon thread had failed.",
                get(&self.acks_withheld),
            ),
            (
                "cma_decided_total",
                "Records the decider handled.",
                get(&self.decided),
            ),
            (
                "cma_instructions_sent_total",
                "Instruction datagrams sent to agents (retransmissions included).",
                get(&self.instructions_sent),
            ),
            (
                "cma_retransmits_total",
                "Instructions retransmitted (not ACKed in time).",
                get(&self.retransmits),
            ),
            (
                "cma_gave_up_total",
                "Agents given up on: an instruction never ACKed after reliable.give_up_after transmissions.",
                get(&self.gave_up),
            ),
            (
                "cma_send_errors_total",
                "Datagrams that could not be sent.",
                get(&self.send_errors),
            ),
        ] {
            let n = family(&mut s, name, "counter", help);
            let _ = writeln!(s, "{n} {v}");
        }
        let d = self
            .decider
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, help, v) in [
            (
                "cma_wal_written_lsn",
                "LSN of the last record written.",
                wal.written_lsn(),
            ),
            (
                "cma_wal_durable_lsn",
                "LSN of the last durable record.",
                wal.durable_lsn(),
            ),
            (
                "cma_store_lsn",
                "LSN the database reflects.",
                get(&self.stored_lsn),
            ),
            (
                "cma_wal_max_batch",
                "Largest group commit, records.",
                get(&self.max_batch),
            ),
            ("cma_groups", "Group rings (switches, subnets).", d.groups),
            (
                "cma_top_ring_members",
                "Representatives in the top ring.",
                d.top_ring,
            ),
        ] {
            let n = family(&mut s, name, "gauge", help);
            let _ = writeln!(s, "{n} {v}");
        }
        let n = family(&mut s, "cma_nodes", "gauge", "Nodes by status.");
        for (status, v) in &d.nodes {
            let _ = writeln!(s, "{n}{{status=\"{status}\"}} {v}");
        }
        let n = family(
            &mut s,
            "cma_recv_to_decided_seconds",
            "summary",
            "From receipt of a datagram to its decision.",
        );
        for (q, v) in &d.latency_us {
            let _ = writeln!(s, "{n}{{quantile=\"{q}\"}} {}", *v as f64 / 1e6);
        }
        let _ = writeln!(s, "{n}_count {}", d.latency_count);
        s
    }
}

/// Serves `GET /metrics` on `addr` until the process ends; returns the
/// bound address.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    wal: Watermarks,
) -> Result<(SocketAddr, JoinHandle<()>), String> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| "metrics: not an IP listener".to_string())?;
    let h = std::thread::Builder::new()
        .name("cma-metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = if req.url() == "/metrics" {
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4"[..],
                    )
                    .expect("static header");
                    tiny_http::Response::from_string(metrics.render(&wal)).with_header(header)
                } else {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| format!("metrics thread: {e}"))?;
    Ok((bound, h))
}
