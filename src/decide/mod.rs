//! The decider: a pure, deterministic state machine over log records
//! (registry, switch-aware rings, failure disambiguation). It may use
//! `classify`'s types and nothing that does I/O.
//!
//! [`decider::Decider`] is the whole state and `handle(record) -> effects`;
//! it is built from [`ring::Ring`] (one heartbeat ring and the exact
//! instructions that keep it whole), [`topology::Topology`] (a ring per
//! switch or subnet group plus the top-level ring of representatives),
//! [`failure::Health`] (the failure state machine of one node) and
//! [`outq::OutQueue`] (the sending side towards one agent, rule 1).

pub mod decider;
pub mod failure;
pub mod idmap;
pub mod input;
#[cfg(test)]
mod model_agents;
pub mod outq;
pub mod ring;
pub mod topology;

/// A node's dense index in the decider's registry.
pub type NodeId = u32;

/// The hasher of the decider's indexes (address -> node, host -> node):
/// std's SipHash with a secret drawn once per data directory and kept in
/// the CONFIG record. Keyed, so a stranger cannot craft colliding keys;
/// the same on every replay, so even an iteration over an index would be
/// a function of the log (std's `RandomState` is neither).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexHasher(pub u64);

impl std::hash::BuildHasher for IndexHasher {
    type Hasher = std::hash::DefaultHasher;

    fn build_hasher(&self) -> Self::Hasher {
        use std::hash::Hasher;
        let mut h = std::hash::DefaultHasher::new();
        h.write_u64(self.0);
        h
    }
}

/// A fresh secret for [`IndexHasher`] (from std's per-process random keys).
pub fn random_index_key() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// A map from a node's key to its index, hashed with [`IndexHasher`].
pub type Index<K> = std::collections::HashMap<K, NodeId, IndexHasher>;
