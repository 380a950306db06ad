//! Switch-aware rings: one ring per group (the switch a node hangs off, or
//! its subnet, or a default group), and a top-level ring of one
//! representative per group, two when the group has at least four members
//! so that one failure never cuts a group off. Most heartbeat traffic stays
//! behind an edge switch, and no node heartbeats more than four peers (two
//! in its group, two in the top ring).
//!
//! Every change returns the exact instructions for the agents (see
//! [`Ring`]); [`Topology::check`] verifies the invariants.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NodeId;
use super::idmap::IdMap;
use super::ring::{HbInstruction, Ring};

/// How nodes are grouped: the switch's chassis id, a subnet, or the default
/// group. Ordered, so that iteration (and so every decision) is
/// deterministic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GroupKey {
    /// Behind this switch (LLDP chassis id, CDP device id).
    Switch(String),
    /// In this subnet (e.g. `10.1.2.0/24`).
    Subnet(String),
    /// Nothing known.
    Default,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Group {
    ring: Ring,
    /// The members also in the top ring.
    reps: Vec<NodeId>,
}

/// All rings of the fleet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    #[serde(with = "super::idmap::pairs")]
    groups: BTreeMap<GroupKey, Group>,
    top: Ring,
    group_of: IdMap<GroupKey>,
    /// Counts changes (joins, moves, leaves).
    version: u64,
}

impl Topology {
    /// Places `n` in `group` (moving it if it was in another) and returns
    /// the instructions.
    pub fn join(&mut self, n: NodeId, group: GroupKey) -> Vec<HbInstruction> {
        self.version += 1;
        let mut out = Vec::new();
        if let Some(old) = self.group_of.get(&n) {
            if *old == group {
                return out;
            }
            // A move: the node lives on, so besides closing the gap behind
            // it, it must stop heartbeating its old peers itself.
            let old_peers = self.peers_of(n);
            out.extend(self.leave(n));
            if !old_peers.is_empty() {
                out.push(HbInstruction {
                    to: n,
                    start: false,
                    peers: old_peers,
                });
            }
        }
        let g = self.groups.entry(group.clone()).or_default();
        out.extend(g.ring.join(n));
        self.group_of.insert(n, group.clone());
        out.extend(self.rebalance(&group));
        out
    }

    /// Removes `n` (dead or gone) and returns the instructions.
    pub fn leave(&mut self, n: NodeId) -> Vec<HbInstruction> {
        let Some(key) = self.group_of.remove(&n) else {
            return Vec::new();
        };
        self.version += 1;
        let mut out = Vec::new();
        if let Some(g) = self.groups.get_mut(&key)
            && let Some(i) = g.reps.iter().position(|r| *r == n)
        {
            g.reps.remove(i);
            out.extend(self.top.leave(n));
        }
        if let Some(g) = self.groups.get_mut(&key) {
            out.extend(g.ring.leave(n));
        }
        out.extend(self.rebalance(&key));
        if self.groups.get(&key).is_some_and(|g| g.ring.is_empty()) {
            self.groups.remove(&key);
        }
        out
    }

    /// The group of `n`, if it is in a ring.
    pub fn group_of(&self, n: NodeId) -> Option<&GroupKey> {
        self.group_of.get(&n)
    }

    /// Every peer `n` heartbeats, with multiplicity (a representative whose
    /// group neighbour is also its top-ring neighbour is told twice).
    pub fn peers_of(&self, n: NodeId) -> Vec<NodeId> {
        let mut peers = Vec::new();
        if let Some(g) = self.group_of.get(&n).and_then(|k| self.groups.get(k)) {
            peers.extend(g.ring.neighbours(n));
        }
        peers.extend(self.top.neighbours(n));
        peers
    }

    /// A number that changes whenever the rings do.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Does `a` heartbeat `b` (in its group ring or the top ring)?
    pub fn adjacent(&self, a: NodeId, b: NodeId) -> bool {
        let same_group = match (self.group_of.get(&a), self.group_of.get(&b)) {
            (Some(ka), Some(kb)) if ka == kb => {
                self.groups.get(ka).is_some_and(|g| g.ring.adjacent(a, b))
            }
            _ => false,
        };
        same_group || self.top.adjacent(a, b)
    }

    /// Is `n` one of its group's representatives in the top ring?
    pub fn is_rep(&self, n: NodeId) -> bool {
        self.top.contains(n)
    }

    /// The ring of group `key`.
    pub fn group(&self, key: &GroupKey) -> Option<&Ring> {
        self.groups.get(key).map(|g| &g.ring)
    }

    /// Placed nodes.
    pub fn len(&self) -> usize {
        self.group_of.len()
    }

    /// Nobody placed.
    pub fn is_empty(&self) -> bool {
        self.group_of.is_empty()
    }

    /// The top-level ring.
    pub fn top(&self) -> &Ring {
        &self.top
    }

    /// Groups with their rings, in key order.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupKey, &Ring)> {
        self.groups.iter().map(|(k, g)| (k, &g.ring))
    }

    /// Checks the invariants: every placed node is in exactly one group
    /// ring; representatives are members, one per group (two from four
    /// members on); the top ring holds exactly the representatives; nobody
    /// heartbeats more than four peers.
    pub fn check(&self) -> Result<(), String> {
        let mut placed = 0;
        let mut reps = Vec::new();
        for (key, g) in &self.groups {
            if g.ring.is_empty() {
                return Err(format!("empty group {key:?} kept"));
            }
            g.ring.check()?;
            for m in g.ring.members() {
                if self.group_of.get(&m) != Some(key) {
                    return Err(format!(
                        "node {m} in group ring {key:?} is indexed elsewhere"
                    ));
                }
            }
            placed += g.ring.len();
            let want = wanted_reps(g.ring.len());
            if g.reps.len() != want || g.reps.iter().any(|r| !g.ring.contains(*r)) {
                return Err(format!("group {key:?} has representatives {:?}", g.reps));
            }
            reps.extend(g.reps.iter().copied());
        }
        // Every ring member is indexed in its own group (above), so equal
        // counts mean the index holds nothing else: each node is in
        // exactly one group ring.
        if placed != self.group_of.len() {
            return Err("group index differs from the rings".into());
        }
        self.top.check()?;
        let mut top: Vec<NodeId> = self.top.members();
        top.sort_unstable();
        reps.sort_unstable();
        if top != reps {
            return Err(format!(
                "top ring {top:?} is not the representatives {reps:?}"
            ));
        }
        // Peers: at most two in a group ring, two more for members of the
        // top ring.
        let top_peers = self.top.len().saturating_sub(1).min(2);
        for (key, g) in &self.groups {
            let k = g.ring.len().saturating_sub(1).min(2) + top_peers * g.reps.len().min(1);
            if k > 4 {
                return Err(format!("group {key:?}: a node heartbeats {k} peers"));
            }
        }
        Ok(())
    }

    /// Brings group `key`'s representatives to the wanted number, in ring
    /// order, and moves the top ring along.
    fn rebalance(&mut self, key: &GroupKey) -> Vec<HbInstruction> {
        let mut out = Vec::new();
        let Some(g) = self.groups.get_mut(key) else {
            return out;
        };
        let want = wanted_reps(g.ring.len());
        while g.reps.len() > want {
            let Some(r) = g.reps.pop() else { break };
            // The representative stays in its group: it steps down.
            out.extend(self.top.step_down(r));
        }
        // Candidates in ring order from the first member; at most three
        // steps, whatever the group's size.
        let mut candidates = Vec::new();
        let mut at = g.ring.first();
        while let Some(m) = at {
            if candidates.len() + g.reps.len() >= want {
                break;
            }
            if !g.reps.contains(&m) {
                candidates.push(m);
            }
            at = g.ring.successor(m).filter(|s| Some(*s) != g.ring.first());
        }
        for c in candidates {
            g.reps.push(c);
            out.extend(self.top.join(c));
        }
        out
    }
}

/// Representatives a group of `members` nodes sends to the top ring.
fn wanted_reps(members: usize) -> usize {
    match members {
        0 => 0,
        1..=3 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::counting_agents::CountingAgents;

    #[test]
    fn random_joins_moves_and_leaves_keep_the_invariants() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..100 {
            let mut t = Topology::default();
            let mut agents = CountingAgents::default();
            let mut live: Vec<NodeId> = Vec::new();
            let mut next: NodeId = 0;
            for _ in 0..150 {
                let group = match rand(5) {
                    0 => GroupKey::Default,
                    1 => GroupKey::Subnet("10.0.1.0/24".into()),
                    s => GroupKey::Switch(format!("sw{s}")),
                };
                match rand(10) {
                    0..=5 => {
                        agents.apply(&t.join(next, group));
                        live.push(next);
                        next += 1;
                    }
                    6 if !live.is_empty() => {
                        // A node seen behind another switch moves.
                        let n = live[rand(live.len() as u64) as usize];
                        agents.apply(&t.join(n, group));
                    }
                    _ if !live.is_empty() => {
                        let n = live.swap_remove(rand(live.len() as u64) as usize);
                        let out = t.leave(n);
                        assert!(
                            out.iter().all(|i| i.to != n),
                            "the leaver gets no instruction"
                        );
                        agents.apply(&out);
                    }
                    _ => {}
                }
                t.check().unwrap();
                agents.assert_matches(&live, |n| t.peers_of(n));
            }
        }
    }

    #[test]
    fn big_groups_send_two_representatives() {
        let mut t = Topology::default();
        for n in 0..4 {
            t.join(n, GroupKey::Switch("a".into()));
        }
        for n in 10..12 {
            t.join(n, GroupKey::Switch("b".into()));
        }
        assert_eq!(t.top().members(), &[0, 1, 10]);
        t.check().unwrap();
        t.leave(0);
        // Three left in "a": one representative.
        assert_eq!(t.top().len(), 2);
        t.check().unwrap();
    }
}
