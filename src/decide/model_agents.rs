//! Test helper: agents whose heartbeat halves behave as the unmodified
//! nanoprobe's do (clientlib/hbsender.c, hblistener.c; WIRE.md "Its two
//! heartbeat halves count differently"): every start adds a *sender*, even
//! for a peer already heartbeated; *listeners* are a set, so one stop
//! removes the listener whatever the number of starts; a stop for a peer
//! with no sender is a no-op. The check wants exactly one sender and one
//! listener per ring neighbour: a doubled start followed by one stop (a
//! peer left unwatched, heartbeats nobody expects) fails it.

use std::collections::{BTreeMap, BTreeSet};

use super::NodeId;
use super::ring::HbInstruction;

/// What each agent heartbeats and watches.
#[derive(Default)]
pub(crate) struct ModelAgents {
    /// (agent, peer) -> senders.
    senders: BTreeMap<(NodeId, NodeId), u32>,
    /// (agent, peer) pairs with a listener.
    listeners: BTreeSet<(NodeId, NodeId)>,
}

impl ModelAgents {
    /// Applies SENDEXPECTHB / STOPSENDEXPECTHB instructions in order.
    pub(crate) fn apply(&mut self, list: &[HbInstruction]) {
        for i in list {
            for p in &i.peers {
                let k = (i.to, *p);
                if i.start {
                    *self.senders.entry(k).or_default() += 1;
                    self.listeners.insert(k);
                } else {
                    if let Some(n) = self.senders.get_mut(&k) {
                        *n -= 1;
                        if *n == 0 {
                            self.senders.remove(&k);
                        }
                    }
                    self.listeners.remove(&k);
                }
            }
        }
    }

    /// Asserts that every live agent has exactly one sender and one
    /// listener for each peer in `want(agent)` and nothing else. Departed
    /// agents are told nothing more and are not checked.
    pub(crate) fn assert_matches(&self, live: &[NodeId], want: impl Fn(NodeId) -> Vec<NodeId>) {
        let live: BTreeSet<NodeId> = live.iter().copied().collect();
        let mut expected = BTreeSet::new();
        for n in &live {
            for p in want(*n) {
                assert!(expected.insert((*n, p)), "agent {n} wants {p} twice");
            }
        }
        let senders: BTreeSet<(NodeId, NodeId)> = self
            .senders
            .iter()
            .filter(|(k, _)| live.contains(&k.0))
            .map(|(k, n)| {
                assert_eq!(*n, 1, "agent {} has {n} senders for {}", k.0, k.1);
                *k
            })
            .collect();
        let listeners: BTreeSet<(NodeId, NodeId)> = self
            .listeners
            .iter()
            .filter(|k| live.contains(&k.0))
            .copied()
            .collect();
        assert_eq!(senders, expected, "senders (agent, peer)");
        assert_eq!(listeners, expected, "listeners (agent, peer)");
    }
}
