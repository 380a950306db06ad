//! Test helper: agents that count heartbeat instructions as real
//! nanoprobes do (each start adds a sender, each stop removes one, nothing
//! is de-duplicated), to check that instructions take effect exactly once.

use std::collections::BTreeMap;

use super::NodeId;
use super::ring::HbInstruction;

/// (agent, peer) -> how many times the agent heartbeats the peer.
#[derive(Default)]
pub(crate) struct CountingAgents(BTreeMap<(NodeId, NodeId), i64>);

impl CountingAgents {
    /// Applies instructions in order.
    pub(crate) fn apply(&mut self, list: &[HbInstruction]) {
        for i in list {
            for p in &i.peers {
                *self.0.entry((i.to, *p)).or_default() += if i.start { 1 } else { -1 };
            }
        }
    }

    /// Asserts that every live agent heartbeats exactly `want(agent)` (a
    /// list with multiplicity). Departed agents are told nothing more and
    /// are not checked.
    pub(crate) fn assert_matches(&self, live: &[NodeId], want: impl Fn(NodeId) -> Vec<NodeId>) {
        let mut expected: BTreeMap<(NodeId, NodeId), i64> = BTreeMap::new();
        for n in live {
            for p in want(*n) {
                *expected.entry((*n, p)).or_default() += 1;
            }
        }
        for (k, v) in &self.0 {
            if live.contains(&k.0) {
                assert_eq!(
                    *v,
                    expected.get(k).copied().unwrap_or(0),
                    "agent {} about {}",
                    k.0,
                    k.1
                );
            }
        }
        for (k, v) in &expected {
            assert_eq!(
                self.0.get(k).copied().unwrap_or(0),
                *v,
                "agent {} about {}",
                k.0,
                k.1
            );
        }
    }
}
