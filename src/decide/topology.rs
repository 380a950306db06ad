//! Switch-aware rings: one ring per group (the switch a node hangs off, or
//! its subnet, or a default group), and a top-level ring of one
//! representative per group, two when the group has at least four members
//! so that one failure never cuts a group off. Most heartbeat traffic stays
//! behind an edge switch, and no node heartbeats more than four peers (two
//! in its group, two in the top ring).
//!
//! Every change returns the exact instructions for the agents, as *net
//! edges*: a real nanoprobe stacks heartbeat senders but keeps one listener
//! per address (WIRE.md, DESIGN.md rule 8), so a pair that two rings make
//! adjacent (a representative whose top-ring neighbour is also its group
//! neighbour) is one edge. An agent hears SENDEXPECTHB about a peer only
//! when the number of rings that want the pair goes 0 -> 1, and
//! STOPSENDEXPECTHB only on 1 -> 0. The rings' own instructions (see
//! [`Ring`]) are the per-ring changes; [`Topology`] sums them per ordered
//! pair and emits the change of presence. Representatives of one group are
//! chosen not to be group neighbours, so the top ring doubles no edge at
//! all. [`Topology::check`] verifies the invariants.

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

/// Where one node sits in the rings (see [`Topology::links_of`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingLinks {
    /// Its group.
    pub group: GroupKey,
    /// (predecessor, successor) in the group ring.
    pub links: (NodeId, NodeId),
    /// (predecessor, successor) in the top ring, for a representative.
    pub top: Option<(NodeId, NodeId)>,
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
    /// Nodes whose ring links may have changed since the last
    /// [`Topology::take_touched`] (empty between records).
    #[serde(skip)]
    touched: Vec<NodeId>,
    /// Groups whose representatives or first member may have changed (or
    /// that were created or removed) since the last
    /// [`Topology::take_touched_groups`] (empty between records).
    #[serde(skip)]
    touched_groups: Vec<GroupKey>,
}

/// What a checkpoint row holds of a group besides its members' links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupParts {
    /// The ring's first member.
    pub head: Option<NodeId>,
    /// The members also in the top ring.
    pub reps: Vec<NodeId>,
}

impl Topology {
    /// Places `n` in `group` (moving it if it was in another) and returns
    /// the instructions.
    pub fn join(&mut self, n: NodeId, group: GroupKey) -> Vec<HbInstruction> {
        if self.group_of.get(&n) == Some(&group) {
            return Vec::new();
        }
        self.version += 1;
        self.touched.push(n);
        self.touched_groups.push(group.clone());
        // A move: the node lives on, so besides closing the gap behind it,
        // it must stop heartbeating its old peers itself.
        let mut raw = self.detach(n, true);
        let alone = self.groups.len() <= 1;
        let g = self.groups.entry(group.clone()).or_default();
        raw.extend(g.ring.join(n));
        self.group_of.insert(n, group.clone());
        raw.extend(self.rebalance(&group));
        raw.extend(self.rebalance_all_if(alone));
        self.net(raw, None)
    }

    /// Removes `n` (dead or gone: it is told nothing) and returns the
    /// instructions for the others.
    pub fn leave(&mut self, n: NodeId) -> Vec<HbInstruction> {
        if !self.group_of.contains_key(&n) {
            return Vec::new();
        }
        self.version += 1;
        self.touched.push(n);
        let raw = self.detach(n, false);
        self.net(raw, Some(n))
    }

    /// The group of `n`, if it is in a ring.
    pub fn group_of(&self, n: NodeId) -> Option<&GroupKey> {
        self.group_of.get(&n)
    }

    /// Every peer `n` heartbeats, once each (an edge two rings want is one
    /// edge), in ascending order.
    pub fn peers_of(&self, n: NodeId) -> Vec<NodeId> {
        let mut peers = Vec::with_capacity(4);
        if let Some(g) = self.group_of.get(&n).and_then(|k| self.groups.get(k)) {
            peers.extend(g.ring.neighbours(n));
        }
        peers.extend(self.top.neighbours(n));
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// How many rings make `a` heartbeat `b` (0, 1 or 2).
    pub fn multiplicity(&self, a: NodeId, b: NodeId) -> u32 {
        let group = self
            .group_of
            .get(&a)
            .and_then(|k| self.groups.get(k))
            .is_some_and(|g| g.ring.adjacent(a, b));
        u32::from(group) + u32::from(self.top.adjacent(a, b))
    }

    /// The nodes whose ring links may have changed since the last call
    /// (each once, ascending).
    pub fn take_touched(&mut self) -> Vec<NodeId> {
        let mut t = std::mem::take(&mut self.touched);
        t.sort_unstable();
        t.dedup();
        t
    }

    /// The groups whose parts may have changed since the last call (each
    /// once, in key order).
    pub fn take_touched_groups(&mut self) -> Vec<GroupKey> {
        let mut t = std::mem::take(&mut self.touched_groups);
        t.sort_unstable();
        t.dedup();
        t
    }

    /// A group's parts for a checkpoint row (`None`: no such group).
    pub fn group_parts(&self, key: &GroupKey) -> Option<GroupParts> {
        self.groups.get(key).map(|g| GroupParts {
            head: g.ring.first(),
            reps: g.reps.clone(),
        })
    }

    /// The top ring's first member.
    pub fn top_head(&self) -> Option<NodeId> {
        self.top.first()
    }

    /// Rebuilds the rings from a checkpoint's rows: every placed node's
    /// links, every group's parts, the top ring's first member and the
    /// version.
    pub fn from_parts(
        version: u64,
        top_head: Option<NodeId>,
        groups: Vec<(GroupKey, GroupParts)>,
        links: impl IntoIterator<Item = (NodeId, RingLinks)>,
    ) -> Topology {
        let mut rings: BTreeMap<GroupKey, IdMap<(NodeId, NodeId)>> = BTreeMap::new();
        let mut top = IdMap::default();
        let mut group_of = IdMap::default();
        for (n, l) in links {
            rings.entry(l.group.clone()).or_default().insert(n, l.links);
            if let Some(t) = l.top {
                top.insert(n, t);
            }
            group_of.insert(n, l.group);
        }
        let groups = groups
            .into_iter()
            .map(|(key, parts)| {
                let links = rings.remove(&key).unwrap_or_default();
                let g = Group {
                    ring: Ring::from_parts(links, parts.head),
                    reps: parts.reps,
                };
                (key, g)
            })
            .collect();
        Topology {
            groups,
            top: Ring::from_parts(top, top_head),
            group_of,
            version,
            touched: Vec::new(),
            touched_groups: Vec::new(),
        }
    }

    /// Where `n` sits: its group, its (predecessor, successor) there, and
    /// in the top ring when it is a representative. `None`: not placed.
    pub fn links_of(&self, n: NodeId) -> Option<RingLinks> {
        let key = self.group_of.get(&n)?;
        let group = self.groups.get(key)?.ring.links_of(n)?;
        Some(RingLinks {
            group: key.clone(),
            links: group,
            top: self.top.links_of(n),
        })
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
            let want = wanted_reps(g.ring.len(), self.groups.len());
            if g.reps.len() != want || g.reps.iter().any(|r| !g.ring.contains(*r)) {
                return Err(format!("group {key:?} has representatives {:?}", g.reps));
            }
            if let [a, b] = g.reps[..]
                && g.ring.adjacent(a, b)
            {
                return Err(format!(
                    "group {key:?}: representatives {a} and {b} are group neighbours"
                ));
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

    /// Takes `n` out of its group ring and the top ring, returning the
    /// rings' own instructions (not yet netted). A node that stays `alive`
    /// is told to stop its old peers; a dead one is told nothing.
    fn detach(&mut self, n: NodeId, alive: bool) -> Vec<HbInstruction> {
        let Some(key) = self.group_of.remove(&n) else {
            return Vec::new();
        };
        self.touched_groups.push(key.clone());
        let alone = self.groups.len() <= 1;
        let mut raw = Vec::new();
        if let Some(g) = self.groups.get_mut(&key)
            && let Some(i) = g.reps.iter().position(|r| *r == n)
        {
            g.reps.remove(i);
            raw.extend(if alive {
                self.top.step_down(n)
            } else {
                self.top.leave(n)
            });
        }
        if let Some(g) = self.groups.get_mut(&key) {
            raw.extend(if alive {
                g.ring.step_down(n)
            } else {
                g.ring.leave(n)
            });
        }
        raw.extend(self.rebalance(&key));
        if self.groups.get(&key).is_some_and(|g| g.ring.is_empty()) {
            self.groups.remove(&key);
        }
        raw.extend(self.rebalance_all_if(alone));
        raw
    }

    /// A lone group sends one representative (a top ring inside one group
    /// would only add a chord); from two groups on, a group of four or
    /// more sends two. When the number of groups crossed that line (the
    /// fleet had `alone` before the change), every group (there are at
    /// most two) is brought to its number.
    fn rebalance_all_if(&mut self, alone: bool) -> Vec<HbInstruction> {
        if alone == (self.groups.len() <= 1) {
            return Vec::new();
        }
        let keys: Vec<GroupKey> = self.groups.keys().cloned().collect();
        keys.iter().flat_map(|k| self.rebalance(k)).collect()
    }

    /// Turns the rings' instructions of one change into net edges: per
    /// ordered pair (agent, peer), the number of rings that want it now
    /// against before the change (now minus the change); START where it
    /// went from 0, STOP where it went to 0, nothing otherwise. `gone`
    /// (dead or departed) is told nothing.
    fn net(&mut self, raw: Vec<HbInstruction>, gone: Option<NodeId>) -> Vec<HbInstruction> {
        let mut delta: BTreeMap<(NodeId, NodeId), i32> = BTreeMap::new();
        for i in &raw {
            self.touched.push(i.to);
            self.touched.extend(&i.peers);
            for p in &i.peers {
                *delta.entry((i.to, *p)).or_default() += if i.start { 1 } else { -1 };
            }
        }
        // Per agent: (stops, starts).
        let mut per: BTreeMap<NodeId, (Vec<NodeId>, Vec<NodeId>)> = BTreeMap::new();
        for ((to, p), d) in delta {
            if d == 0 || Some(to) == gone {
                continue;
            }
            let now = self.multiplicity(to, p) as i32;
            let before = now - d;
            // Each ring's instructions are exact (Ring's tests), so a pair
            // is never stopped more often than it was started.
            assert!(
                (0..=2).contains(&before),
                "pair {to}->{p}: {before} rings before a change of {d}"
            );
            match (before > 0, now > 0) {
                (false, true) => per.entry(to).or_default().1.push(p),
                (true, false) => per.entry(to).or_default().0.push(p),
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(per.len());
        for (to, (stops, starts)) in per {
            if !stops.is_empty() {
                out.push(HbInstruction {
                    to,
                    start: false,
                    peers: stops,
                });
            }
            if !starts.is_empty() {
                out.push(HbInstruction {
                    to,
                    start: true,
                    peers: starts,
                });
            }
        }
        out
    }

    /// Brings group `key`'s representatives to the wanted number and moves
    /// the top ring along (the rings' own instructions, not yet netted).
    /// The first representative is the group's first member; the second
    /// sits two steps after it in the group ring, so that the two are never
    /// group neighbours (a group of four or more has such a member), and a
    /// pair that became neighbours through a leave between them is mended.
    fn rebalance(&mut self, key: &GroupKey) -> Vec<HbInstruction> {
        self.touched_groups.push(key.clone());
        let mut out = Vec::new();
        let groups = self.groups.len();
        let Some(g) = self.groups.get_mut(key) else {
            return out;
        };
        let want = wanted_reps(g.ring.len(), groups);
        while g.reps.len() > want {
            let Some(r) = g.reps.pop() else { break };
            // The representative stays in its group: it steps down.
            out.extend(self.top.step_down(r));
        }
        if let [a, b] = g.reps[..]
            && g.ring.adjacent(a, b)
        {
            g.reps.pop();
            out.extend(self.top.step_down(b));
        }
        if g.reps.is_empty()
            && want > 0
            && let Some(first) = g.ring.first()
        {
            g.reps.push(first);
            out.extend(self.top.join(first));
        }
        if g.reps.len() < want
            && let Some(&a) = g.reps.first()
            && let Some(c) = g.ring.successor(a).and_then(|s| g.ring.successor(s))
        {
            // want == 2 means at least four members: `c` is neither `a`
            // nor one of its neighbours.
            g.reps.push(c);
            out.extend(self.top.join(c));
        }
        out
    }
}

/// Representatives a group of `members` nodes sends to the top ring, in a
/// fleet of `groups` groups: one, or two from four members on where there
/// is another group to be watched from.
fn wanted_reps(members: usize, groups: usize) -> usize {
    match members {
        0 => 0,
        1..=3 => 1,
        _ if groups <= 1 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::model_agents::ModelAgents;

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
            let mut agents = ModelAgents::default();
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
        for n in 0..5 {
            t.join(n, GroupKey::Switch("a".into()));
        }
        // Alone, a group sends one.
        assert_eq!(t.top().len(), 1);
        let mut t = Topology::default();
        for n in 0..4 {
            t.join(n, GroupKey::Switch("a".into()));
        }
        for n in 10..12 {
            t.join(n, GroupKey::Switch("b".into()));
        }
        // Two representatives of "a" once there is another group, not
        // group neighbours.
        let mut top = t.top().members();
        top.sort_unstable();
        assert_eq!(top, &[0, 2, 10]);
        t.check().unwrap();
        t.leave(0);
        // Three left in "a": one representative.
        assert_eq!(t.top().len(), 2);
        t.check().unwrap();
    }

    #[test]
    fn a_pair_adjacent_in_two_rings_is_one_edge() {
        // A group of four beside another: two representatives. It shrinks
        // to three: one steps down; then to one. Each agent
        // must end with exactly one sender and one listener per neighbour.
        let mut t = Topology::default();
        let mut agents = ModelAgents::default();
        let mut live = vec![10];
        agents.apply(&t.join(10, GroupKey::Switch("b".into())));
        for n in 0..4 {
            agents.apply(&t.join(n, GroupKey::Switch("a".into())));
            live.push(n);
            t.check().unwrap();
            agents.assert_matches(&live, |n| t.peers_of(n));
        }
        for n in [2, 0, 1] {
            agents.apply(&t.leave(n));
            live.retain(|x| *x != n);
            t.check().unwrap();
            agents.assert_matches(&live, |n| t.peers_of(n));
        }
    }

    #[test]
    fn no_instruction_names_a_peer_twice() {
        let mut t = Topology::default();
        for n in 0..40 {
            let key = GroupKey::Switch(format!("s{}", n % 3));
            for i in t.join(n, key) {
                let mut p = i.peers.clone();
                p.sort_unstable();
                p.dedup();
                assert_eq!(p.len(), i.peers.len(), "{i:?}");
            }
        }
    }
}
