//! Limits on what a stranger can make the CMA hold or do, applied by the
//! log thread before anything is logged. Registrations (a STARTUP from an
//! address not registered, or with a new WALLCLOCK) are rate-limited per
//! source network (/24 for IPv4, /64 for IPv6) by a token bucket, and the
//! number of registered addresses is capped: a STARTUP storm from forged
//! addresses fills neither the registry nor the rings. Inflation is
//! budgeted the same way, in bytes per source network per second: a flood
//! of small datagrams that inflate to megabytes costs its sender's budget,
//! not everyone's log thread. And when the log thread falls behind, one
//! source gets a bounded share of each pass ([`FairShare`]): a flood from
//! one address cannot stand between another's report and its ACK. Each
//! refusal is counted by the caller.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The source network of an address: its /24 (IPv4, and IPv4-mapped) or
/// its /64 (IPv6), as one number.
pub fn source_network(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4) >> 8),
            None => (u128::from(v6) >> 64) | (1 << 100),
        },
    }
}

/// Buckets kept at most; past this, full (idle) buckets are dropped, and
/// while none is, a network without a bucket is refused.
const BUCKETS_MAX: usize = 65_536;
/// The table is walked for full buckets at most this often.
const PRUNE_EVERY_NS: u64 = 100_000_000;

/// Registrations per source network.
pub type RegistrationLimiter = NetworkBuckets;

/// A token bucket per source network (registrations; inflated bytes).
#[derive(Debug)]
pub struct NetworkBuckets {
    per_s: f64,
    burst: f64,
    /// network -> (tokens, when last refilled, ns).
    buckets: HashMap<u128, (f64, u64)>,
    /// When full buckets were last dropped (at most every 100 ms: each
    /// time walks the table).
    pruned_ns: Option<u64>,
}

impl NetworkBuckets {
    /// `per_s` tokens per second per network, `burst` at once.
    pub fn new(per_s: u32, burst: u32) -> NetworkBuckets {
        NetworkBuckets {
            per_s: f64::from(per_s),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            pruned_ns: None,
        }
    }

    /// May `ip` register now (`now_ns`: a monotonic clock)? Takes a token.
    pub fn allow(&mut self, ip: IpAddr, now_ns: u64) -> bool {
        self.take(ip, 1, now_ns)
    }

    /// May `ip` spend `cost` tokens now? Takes them if so (a cost above
    /// the burst is never allowed).
    pub fn take(&mut self, ip: IpAddr, cost: u32, now_ns: u64) -> bool {
        let cost = f64::from(cost.max(1));
        let net = source_network(ip);
        if self.buckets.len() >= BUCKETS_MAX && !self.buckets.contains_key(&net) {
            if self
                .pruned_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= PRUNE_EVERY_NS)
            {
                self.prune(now_ns);
                self.pruned_ns = Some(now_ns);
            }
            if self.buckets.len() >= BUCKETS_MAX {
                // Full of networks still spending (forged sources from many
                // networks): a new one waits until some refill.
                return false;
            }
        }
        let (per_s, burst) = (self.per_s, self.burst);
        let b = self.buckets.entry(net).or_insert((burst, now_ns));
        let elapsed_s = now_ns.saturating_sub(b.1) as f64 / 1e9;
        b.0 = (b.0 + elapsed_s * per_s).min(burst);
        b.1 = b.1.max(now_ns);
        if b.0 >= cost {
            b.0 -= cost;
            true
        } else {
            false
        }
    }

    /// Drops the buckets that have refilled (as good as new).
    fn prune(&mut self, now_ns: u64) {
        let (per_s, burst) = (self.per_s, self.burst);
        self.buckets
            .retain(|_, b| b.0 + now_ns.saturating_sub(b.1) as f64 / 1e9 * per_s < burst);
    }

    /// Buckets held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// No bucket held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Each source's share of a busy pass of the log thread. A pass takes up
/// to 256 datagrams from the ring; when it finds that many waiting (the
/// log thread is behind), a source whose datagrams fill more than `share`
/// of them has the rest dropped before classify's cost, and counted. Its
/// sequenced FrameSets are retransmitted (nothing ACKed is lost); the
/// other sources of the pass go on at once. A pass that is not full costs
/// nothing here (no hashing): an unloaded CMA treats every datagram alike.
#[derive(Debug)]
pub struct FairShare {
    share: u32,
    busy: bool,
    /// Datagrams of this busy pass per source (at most a pass's worth).
    taken: HashMap<SocketAddr, u32>,
}

impl FairShare {
    /// `share` datagrams per source per busy pass (0: no limit).
    pub fn new(share: u32) -> FairShare {
        FairShare {
            share,
            busy: false,
            taken: HashMap::new(),
        }
    }

    /// A pass begins; `busy`: it found more waiting than it takes.
    pub fn begin(&mut self, busy: bool) {
        self.busy = busy && self.share > 0;
        if !self.taken.is_empty() {
            self.taken.clear();
        }
    }

    /// May `peer`'s next datagram of this pass be handled?
    pub fn admit(&mut self, peer: SocketAddr) -> bool {
        if !self.busy {
            return true;
        }
        let n = self.taken.entry(peer).or_insert(0);
        *n += 1;
        *n <= self.share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_share_of_a_busy_pass_only() {
        let mut f = FairShare::new(3);
        let a: SocketAddr = "10.0.0.1:1984".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1984".parse().unwrap();
        // A pass that is not full: everything.
        f.begin(false);
        assert!((0..100).all(|_| f.admit(a)));
        // A full pass: `a` floods, `b` sends two; `a` gets 3.
        f.begin(true);
        let mut got = (0, 0);
        for i in 0..50 {
            if f.admit(a) {
                got.0 += 1;
            }
            if i % 20 == 0 && f.admit(b) {
                got.1 += 1;
            }
        }
        assert_eq!(got, (3, 3));
        // The next pass starts afresh.
        f.begin(true);
        assert!(f.admit(a));
        // 0: no limit.
        let mut off = FairShare::new(0);
        off.begin(true);
        assert!((0..1000).all(|_| off.admit(a)));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_network_gets_its_burst_then_its_rate() {
        let mut l = RegistrationLimiter::new(2, 5);
        let s = 1_000_000_000;
        let allowed = (0..20)
            .filter(|i| l.allow(ip(&format!("10.1.2.{i}")), s))
            .count();
        assert_eq!(allowed, 5);
        // Another /24 has its own bucket.
        assert!(l.allow(ip("10.1.3.1"), s));
        // Half a second later: one more token.
        assert!(l.allow(ip("10.1.2.99"), s + 500_000_000));
        assert!(!l.allow(ip("10.1.2.99"), s + 500_000_000));
        // An IPv4-mapped address is its IPv4 network.
        assert_eq!(
            source_network(ip("::ffff:10.1.2.3")),
            source_network(ip("10.1.2.200"))
        );
        // IPv6 by /64.
        assert_eq!(
            source_network(ip("fd00::1")),
            source_network(ip("fd00::ffff"))
        );
        assert_ne!(
            source_network(ip("fd00::1")),
            source_network(ip("fd00:0:0:1::1"))
        );
    }

    #[test]
    fn bytes_are_spent_from_the_networks_budget() {
        let mut l = NetworkBuckets::new(1000, 4000);
        let s = 1_000_000_000;
        assert!(l.take(ip("10.1.2.3"), 3000, s));
        assert!(!l.take(ip("10.1.2.4"), 3000, s), "the /24 spent it");
        assert!(l.take(ip("10.1.2.4"), 1000, s));
        assert!(l.take(ip("10.9.9.9"), 3000, s), "another network");
        assert!(!l.take(ip("10.7.7.7"), 5000, s), "above the burst, never");
        // Three seconds later: refilled.
        assert!(l.take(ip("10.1.2.3"), 3000, s + 3_000_000_000));
    }

    #[test]
    fn idle_buckets_are_dropped_when_too_many() {
        let mut l = RegistrationLimiter::new(1000, 1);
        for i in 0..BUCKETS_MAX as u32 {
            l.allow(IpAddr::V4((i << 8).into()), 0);
        }
        assert_eq!(l.len(), BUCKETS_MAX);
        // While none has refilled, a new network is refused: the table
        // does not grow past its bound.
        assert!(!l.allow(ip("10.0.0.1"), 1));
        assert_eq!(l.len(), BUCKETS_MAX);
        // A second later they have all refilled: pruned on the next call.
        assert!(l.allow(ip("10.0.0.1"), 1_000_000_000));
        assert_eq!(l.len(), 1);
    }
}
