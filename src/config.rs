//! The daemon's configuration: every limit and timer, in TOML. The
//! defaults are the commented file [`DEFAULT_CONFIG`] itself (what
//! `cma config --default` prints), parsed, so the documentation and the
//! defaults cannot drift apart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default configuration, with comments.
pub const DEFAULT_CONFIG: &str = r#"# cma: the Central Monitoring Authority's configuration.
# Every key is optional; a missing key takes the value shown here.

# UDP addresses the CMA listens on (nanoprobes send to port 1984).
listen = ["0.0.0.0:1984", "[::]:1984"]
# Where agents reach the CMA (SETCONFIG's cmaaddr/cmafail/cmadisc). Empty:
# the first listen address, with 127.0.0.1 for an unspecified one.
advertise = ""
# The write-ahead log and the SQLite database live here.
data_dir = "cma-data"
# error, warn, info, debug or trace.
log_level = "info"

[io]
# Socket receive buffer, bytes (root may exceed net.core.rmem_max).
rcvbuf_bytes = 8388608
# Ring buffer between the io thread and the log thread: slots and bytes per slot.
ring_slots = 16384
slot_bytes = 2048
# Datagrams per recvmmsg call.
batch = 64

[wal]
# Segment size, MiB (preallocated and pre-faulted ahead of use).
segment_mib = 64
# "batch": group commit on a sync thread, each msync covering everything
# written while the previous one ran; "always": sync every record inline
# (slow, for comparison); "none": never sync (tmpfs and benchmarks only:
# a machine crash loses acknowledged records).
sync = "batch"
# With "batch": records no agent waits on for an ACK (STARTUPs, TICKs) are
# made durable with the next record that is ACKed, or at most this many ms
# after they are written; what they cause (a SETCONFIG, a retransmission)
# waits for that. A STARTUP storm then costs a sync every lazy_sync_ms, not
# one per registration, and agents' ACKs do not queue behind them. 0: each
# is synced at once, like an ACKed record.
lazy_sync_ms = 20

[heartbeat]
# Handed to agents in SENDEXPECTHB: interval, late warning, dead time (ms).
interval_ms = 1000
warn_ms = 5000
dead_ms = 30000
# Agents that speak HBSTATE (ours) report their heartbeat state this often;
# the CMA compares it with their rings and repairs any drift.
state_interval_ms = 60000
# ... and send their statistics (STATS, `cma stats NODE`) this often; 0: never.
stats_interval_ms = 300000

[reliable]
# Resend the oldest unacknowledged instruction this often (ms): three times
# this far apart, then waiting twice as long each time (up to 4 intervals).
retransmit_ms = 2000
# Give up on an agent after this many transmissions of one instruction (at
# least 3; at 2 s, 12 tries give up 74 s after the first): the node is shown
# `unreachable` and its queue dropped, until it is heard from again.
give_up_after = 12
# The same for a node that has not ACKed its SETCONFIG yet (at least 2; at
# 2 s, 4 tries give up 10 s after the first): its registration is then
# forgotten. A real agent repeats its STARTUP every 5 s until it is
# configured, so it registers again; a STARTUP from a forged address draws
# 4 datagrams and holds a place under limits.max_nodes for 10 s.
join_give_up_after = 4

[decider]
# CPU to pin the decider thread to; -1: do not pin (the default on small
# machines: the io thread and the decider share the cores).
cpu = -1
# Busy-poll instead of parking: the log thread and the decider each keep a
# core busy and skip the ~40 us wake-ups. Only for hosts with cores to
# dedicate (pin the decider with `cpu`); on small machines it slows
# everything else.
spin = false
# A TICK record (the log's clock for deadlines) is appended only when a
# decider deadline is due, and at most once per this many ms.
tick_ms = 10

[store]
# Write the decider's checkpoint at most this often (ms) and release the
# log segments below it.
checkpoint_ms = 10000

[limits]
# Registrations (a STARTUP from an address not registered, or with a new
# WALLCLOCK) per second from one source network (a /24, or an IPv6 /64),
# and at once: a whole rack powering up registers in one go; a STARTUP
# storm from forged addresses does not fill the registry. Refused ones are
# dropped and counted (cma_registrations_limited_total); agents resend.
registrations_per_s = 256
registration_burst = 1024
# Registered addresses at most; STARTUPs from new addresses beyond are
# dropped and counted (cma_registrations_refused_total). A registration
# that never ACKs its SETCONFIG expires (reliable.join_give_up_after).
max_nodes = 1000000
# Bytes of compressed FrameSets inflated per second for one source network
# (a /24, or an IPv6 /64), and at once (at least 4 MiB, one FrameSet's
# largest): a flood of small datagrams that inflate to megabytes is dropped
# before it is inflated, from its senders' budget, and counted
# (cma_inflate_limited_total). What is inflated is also decided and stored
# (a FrameSet declaring more than 16 KiB is logged as it came, 2 KB, not its
# inflated megabytes), so the budget is also one network's share of the
# store's disk. Sequenced FrameSets dropped here are retransmitted by their
# senders, so a rack's boot-time discovery is delayed, not lost.
inflate_bytes_per_s = 4194304
inflate_burst_bytes = 8388608
# When the log thread finds more datagrams waiting than a pass takes (256),
# one source address may have this many of them handled; the rest of its
# datagrams in that pass are dropped unread and counted
# (cma_fair_share_total), and its senders retransmit. A flood from one
# address cannot stand between another agent's report and its ACK. 0: no
# limit. An unloaded CMA never applies it.
fair_share = 32

[auth]
# Key directory, laid out as the nanoprobe's crypto.d ("" = DATA_DIR/keys).
# With a CMA key in it (`cma keys init`), nodes are authenticated with
# CRYPTCURVE25519: a node's key arrives in its STARTUP and is trusted on
# first use; everything else from it must be encrypted under that key, and
# everything sent to it is. Without one, the network must be trusted.
key_dir = ""
# Trust only the nanoprobe keys already in key_dir (`cma keys trust HOST`
# accepts one that was refused); false: trust a new host's key on first use.
require_known_keys = false
# With a CMA key, also admit nodes that announce no key (a fleet moving to
# keys). They are not authenticated; a keyed node's status never changes on
# their word.
allow_unkeyed = false

[metrics]
# Prometheus text metrics at http://ADDR/metrics; "" turns them off.
listen = "127.0.0.1:9184"
"#;

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Advertised CMA address ("" = derived).
    pub advertise: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log level.
    pub log_level: String,
    /// io thread.
    pub io: IoSection,
    /// The log.
    pub wal: WalSection,
    /// Heartbeat parameters.
    pub heartbeat: HeartbeatSection,
    /// Reliable delivery.
    pub reliable: ReliableSection,
    /// The decider thread.
    pub decider: DeciderSection,
    /// The store.
    pub store: StoreSection,
    /// Limits on strangers.
    pub limits: LimitsSection,
    /// Authentication.
    pub auth: AuthSection,
    /// Metrics.
    pub metrics: MetricsSection,
}

/// `[metrics]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// HTTP listen address, "" for none.
    pub listen: String,
}

/// `[io]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoSection {
    /// SO_RCVBUF.
    pub rcvbuf_bytes: usize,
    /// Ring slots.
    pub ring_slots: usize,
    /// Bytes per slot.
    pub slot_bytes: usize,
    /// recvmmsg batch.
    pub batch: usize,
}

/// `[wal]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSection {
    /// Segment size, MiB.
    pub segment_mib: usize,
    /// batch, always or none.
    pub sync: String,
    /// Longest wait before records nobody waits an ACK for are synced.
    pub lazy_sync_ms: u64,
}

/// `[heartbeat]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    /// Interval.
    pub interval_ms: u64,
    /// Late warning.
    pub warn_ms: u64,
    /// Dead time.
    pub dead_ms: u64,
    /// HBSTATE interval handed to agents that speak it.
    pub state_interval_ms: u64,
    /// STATS interval handed to agents that speak it.
    pub stats_interval_ms: u64,
}

/// `[reliable]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReliableSection {
    /// Retransmit interval.
    pub retransmit_ms: u64,
    /// Transmissions of one instruction before giving up on the agent.
    pub give_up_after: u32,
    /// The same before its first ACK (its registration is forgotten).
    pub join_give_up_after: u32,
}

/// `[decider]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeciderSection {
    /// CPU to pin to, -1 for none.
    pub cpu: i64,
    /// Busy-poll instead of parking.
    pub spin: bool,
    /// Shortest gap between TICK records.
    pub tick_ms: u64,
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Checkpoint interval.
    pub checkpoint_ms: u64,
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Registrations per second per source network.
    pub registrations_per_s: u32,
    /// Registrations at once per source network.
    pub registration_burst: u32,
    /// Registered addresses at most.
    pub max_nodes: usize,
    /// Inflated bytes per second per source network.
    pub inflate_bytes_per_s: u32,
    /// Inflated bytes at once per source network.
    pub inflate_burst_bytes: u32,
    /// Datagrams per source address in a log-thread pass that found more
    /// waiting than it takes (0: no limit).
    pub fair_share: u32,
}

/// `[auth]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Key directory ("" = DATA_DIR/keys).
    pub key_dir: PathBuf,
    /// Trust only keys already in the directory.
    pub require_known_keys: bool,
    /// Admit nodes without a key when the CMA has one.
    pub allow_unkeyed: bool,
}

/// A configuration problem, with what to do about it.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Overlays `over` onto `base`, key by key (tables merge, values replace).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_toml("").expect("the embedded default configuration is valid")
    }
}

impl Config {
    /// The key directory (`auth.key_dir`, else DATA_DIR/keys).
    pub fn key_dir(&self) -> PathBuf {
        if self.auth.key_dir.as_os_str().is_empty() {
            self.data_dir.join("keys")
        } else {
            self.auth.key_dir.clone()
        }
    }

    /// The defaults overlaid with `text` (a TOML document, possibly partial).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut base: toml::Table = DEFAULT_CONFIG
            .parse()
            .map_err(|e| ConfigError(format!("embedded defaults: {e}")))?;
        let over: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("configuration is not valid TOML: {e}")))?;
        merge(&mut base, over);
        let c: Config = toml::Value::Table(base)
            .try_into()
            .map_err(|e| ConfigError(format!("configuration: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads a file (the defaults for every missing key).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError(what.to_string()));
        if self.listen.is_empty() {
            return bad("listen: at least one address is needed");
        }
        if !["batch", "always", "none"].contains(&self.wal.sync.as_str()) {
            return bad("wal.sync must be \"batch\", \"always\" or \"none\"");
        }
        if !(1..=1024).contains(&self.wal.segment_mib) {
            return bad("wal.segment_mib must be 1..=1024");
        }
        if self.wal.lazy_sync_ms > 1000 {
            return bad("wal.lazy_sync_ms must be 0..=1000");
        }
        if self.heartbeat.interval_ms == 0
            || self.heartbeat.dead_ms <= self.heartbeat.interval_ms
            || self.heartbeat.warn_ms > self.heartbeat.dead_ms
        {
            return bad("heartbeat: need 0 < interval_ms < dead_ms and warn_ms <= dead_ms");
        }
        if self.reliable.retransmit_ms < 100 {
            return bad("reliable.retransmit_ms must be at least 100");
        }
        if self.reliable.join_give_up_after < 2 {
            return bad("reliable.join_give_up_after must be at least 2");
        }
        if self.reliable.give_up_after < 3 {
            return bad("reliable.give_up_after must be at least 3 (a probe is sent three times)");
        }
        if !self.io.ring_slots.is_power_of_two() || self.io.ring_slots < 64 {
            return bad("io.ring_slots must be a power of two, at least 64");
        }
        if !(1500..=65536).contains(&self.io.slot_bytes) {
            return bad("io.slot_bytes must be 1500..=65536");
        }
        if self.decider.tick_ms == 0 || self.store.checkpoint_ms == 0 {
            return bad("decider.tick_ms and store.checkpoint_ms must be positive");
        }
        if self.limits.registration_burst == 0 || self.limits.max_nodes == 0 {
            return bad("limits.registration_burst and limits.max_nodes must be positive");
        }
        if self.limits.inflate_burst_bytes < crate::classify::MAX_DECOMPRESSED_LEN as u32
            || self.limits.inflate_bytes_per_s == 0
        {
            return bad(
                "limits.inflate_burst_bytes must be at least 4194304 (one FrameSet) and limits.inflate_bytes_per_s positive",
            );
        }
        if self.log_level.parse::<log::LevelFilter>().is_err() {
            return bad("log_level must be error, warn, info, debug or trace");
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return bad("metrics.listen must be empty or an ip:port");
        }
        if !self.advertise.is_empty() && self.advertise.parse::<SocketAddr>().is_err() {
            return bad("advertise must be empty or an ip:port");
        }
        Ok(())
    }
}

/// The level filter of a validated configuration.
pub fn level(c: &Config) -> log::LevelFilter {
    c.log_level.parse().unwrap_or(log::LevelFilter::Info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_match_the_documented_file() {
        let c = Config::default();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.wal.sync, "batch");
        assert_eq!(c.heartbeat.dead_ms, 30_000);
    }

    #[test]
    fn a_partial_file_overrides_only_its_keys() {
        let c = Config::from_toml("data_dir = \"/x\"\n[wal]\nsync = \"always\"\n").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.wal.sync, "always");
        assert_eq!(c.wal.segment_mib, 64);
    }

    #[test]
    fn bad_values_are_named() {
        for (text, what) in [
            ("[wal]\nsync = \"sometimes\"", "wal.sync"),
            ("listen = []", "listen"),
            ("[heartbeat]\ndead_ms = 10", "heartbeat"),
            ("[io]\nring_slots = 1000", "ring_slots"),
            ("bogus = 1", "bogus"),
            ("log_level = \"loud\"", "log_level"),
            ("not toml [", "TOML"),
        ] {
            let e = Config::from_toml(text).unwrap_err().0;
            assert!(e.contains(what), "{text}: {e}");
        }
    }
}
