//! One heartbeat ring: an ordered cycle of nodes, and the exact
//! instructions (WIRE.md) that keep every member heartbeating its two
//! neighbours as nodes join and leave.
//!
//! Agents do not de-duplicate heartbeat instructions (each SENDEXPECTHB adds
//! a sender, each STOP removes one), so every instruction here must take
//! effect exactly once; the tests apply them to agents that count.
//!
//! ```text
//!  members before   join N (between P and its successor Q)      leave D (neighbours P, Q)
//!  0                nothing                                      -
//!  1 {P}            N<->P                                        nothing
//!  2 {P,Q}          N<->P, N<->Q (the P-Q edge stays)            P stops D
//!  3                stop P<->Q; N<->P, N<->Q                     P, Q stop D (P-Q already an edge)
//!  4+               stop P<->Q; N<->P, N<->Q                     P, Q stop D; P<->Q
//! ```

use serde::{Deserialize, Serialize};

use super::NodeId;
use super::idmap::IdMap;

/// A heartbeat instruction for one agent about some peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HbInstruction {
    /// The agent told.
    pub to: NodeId,
    /// Start (SENDEXPECTHB) or stop (STOPSENDEXPECTHB).
    pub start: bool,
    /// The peers it is about.
    pub peers: Vec<NodeId>,
}

/// A ring of nodes in heartbeat order; the last member's successor is the
/// first. Stored as links (predecessor, successor) so that every operation
/// is O(1) however large the ring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    links: IdMap<(NodeId, NodeId)>,
    head: Option<NodeId>,
}

impl Ring {
    /// A ring from its parts (a checkpoint's rows): each member's
    /// (predecessor, successor), and the first member.
    pub fn from_parts(links: IdMap<(NodeId, NodeId)>, head: Option<NodeId>) -> Ring {
        Ring { links, head }
    }

    /// The members in ring order, from the first.
    pub fn members(&self) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(self.links.len());
        if let Some(h) = self.head {
            let mut n = h;
            loop {
                out.push(n);
                n = self.links[&n].1;
                if n == h {
                    break;
                }
            }
        }
        out
    }

    /// The first member.
    pub fn first(&self) -> Option<NodeId> {
        self.head
    }

    /// `n`'s (predecessor, successor), itself twice in a ring of 1.
    pub fn links_of(&self, n: NodeId) -> Option<(NodeId, NodeId)> {
        self.links.get(&n).copied()
    }

    /// The member after `n` (itself in a ring of 1).
    pub fn successor(&self, n: NodeId) -> Option<NodeId> {
        self.links.get(&n).map(|l| l.1)
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Is `n` a member?
    pub fn contains(&self, n: NodeId) -> bool {
        self.links.contains_key(&n)
    }

    /// The peers `n` heartbeats: none in a ring of 1, the other in a ring of
    /// 2, predecessor and successor otherwise.
    pub fn neighbours(&self, n: NodeId) -> Vec<NodeId> {
        let Some(&(p, q)) = self.links.get(&n) else {
            return Vec::new();
        };
        match self.links.len() {
            1 => Vec::new(),
            2 => vec![q],
            _ => vec![p, q],
        }
    }

    /// Is `m` one of the peers `n` heartbeats here?
    pub fn adjacent(&self, n: NodeId, m: NodeId) -> bool {
        n != m && self.links.get(&n).is_some_and(|&(p, q)| p == m || q == m)
    }

    /// Adds `n` after the last member (between it and the first) and
    /// returns the instructions. A member joining again gets nothing.
    pub fn join(&mut self, n: NodeId) -> Vec<HbInstruction> {
        if self.contains(n) {
            return Vec::new();
        }
        let k = self.links.len();
        let mut out = Vec::new();
        let Some(q) = self.head else {
            self.links.insert(n, (n, n));
            self.head = Some(n);
            return out;
        };
        let p = self.links[&q].0;
        match k {
            1 => {
                out.push(start(n, vec![p]));
                out.push(start(p, vec![n]));
            }
            _ => {
                if k >= 3 {
                    out.push(stop(p, vec![q]));
                    out.push(stop(q, vec![p]));
                }
                out.push(start(n, vec![p, q]));
                out.push(start(p, vec![n]));
                out.push(start(q, vec![n]));
            }
        }
        self.links.insert(n, (p, q));
        self.link_next(p, n);
        self.link_prev(q, n);
        out
    }

    /// Removes a node that stays alive (a representative stepping down, a
    /// node moving to another group): closes the gap and tells the node
    /// itself to stop heartbeating its neighbours here.
    pub fn step_down(&mut self, n: NodeId) -> Vec<HbInstruction> {
        let peers = self.neighbours(n);
        let mut out = self.leave(n);
        if !peers.is_empty() {
            out.push(stop(n, peers));
        }
        out
    }

    /// Removes `d` (dead or gone: it is told nothing) and returns the
    /// instructions that close the gap.
    pub fn leave(&mut self, d: NodeId) -> Vec<HbInstruction> {
        let Some((p, q)) = self.links.remove(&d) else {
            return Vec::new();
        };
        let k = self.links.len() + 1;
        let mut out = Vec::new();
        match k {
            1 => {
                self.head = None;
                return out;
            }
            2 => out.push(stop(q, vec![d])),
            _ => {
                out.push(stop(p, vec![d]));
                out.push(stop(q, vec![d]));
                if k >= 4 {
                    out.push(start(p, vec![q]));
                    out.push(start(q, vec![p]));
                }
            }
        }
        self.link_next(p, q);
        self.link_prev(q, p);
        if self.head == Some(d) {
            self.head = Some(q);
        }
        out
    }

    fn link_next(&mut self, n: NodeId, next: NodeId) {
        if let Some(l) = self.links.get_mut(&n) {
            l.1 = next;
        }
    }

    fn link_prev(&mut self, n: NodeId, prev: NodeId) {
        if let Some(l) = self.links.get_mut(&n) {
            l.0 = prev;
        }
    }

    /// Checks that the links form one cycle through every member.
    pub fn check(&self) -> Result<(), String> {
        let walked = self.members();
        if walked.len() != self.links.len() {
            return Err(format!(
                "ring walk finds {} of {} members",
                walked.len(),
                self.links.len()
            ));
        }
        for n in &walked {
            let (p, q) = self.links[n];
            if self.links.get(&q).map(|l| l.0) != Some(*n)
                || self.links.get(&p).map(|l| l.1) != Some(*n)
            {
                return Err(format!("ring links around {n} disagree"));
            }
        }
        Ok(())
    }
}

fn start(to: NodeId, peers: Vec<NodeId>) -> HbInstruction {
    HbInstruction {
        to,
        start: true,
        peers,
    }
}

fn stop(to: NodeId, peers: Vec<NodeId>) -> HbInstruction {
    HbInstruction {
        to,
        start: false,
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::model_agents::ModelAgents;

    #[test]
    fn joins_and_leaves_keep_every_agent_on_its_neighbours() {
        let mut x = 0x1234_5678u64;
        for _ in 0..200 {
            let mut ring = Ring::default();
            let mut agents = ModelAgents::default();
            let mut next: NodeId = 0;
            for _ in 0..60 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if ring.is_empty() || !x.is_multiple_of(3) {
                    let out = ring.join(next);
                    next += 1;
                    agents.apply(&out);
                } else {
                    let d = ring.members()[(x >> 8) as usize % ring.len()];
                    let out = ring.leave(d);
                    assert!(
                        out.iter().all(|i| i.to != d),
                        "the leaver gets no instruction"
                    );
                    agents.apply(&out);
                }
                ring.check().unwrap();
                agents.assert_matches(&ring.members(), |n| ring.neighbours(n));
                assert!(
                    ring.members()
                        .iter()
                        .all(|m| ring.neighbours(*m).len() <= 2)
                );
            }
        }
    }

    #[test]
    fn instructions_match_the_wire_table() {
        let mut r = Ring::default();
        assert!(r.join(1).is_empty());
        assert_eq!(r.join(2), vec![start(2, vec![1]), start(1, vec![2])]);
        assert_eq!(
            r.join(3),
            vec![start(3, vec![2, 1]), start(2, vec![3]), start(1, vec![3])]
        );
        assert_eq!(
            r.join(4),
            vec![
                stop(3, vec![1]),
                stop(1, vec![3]),
                start(4, vec![3, 1]),
                start(3, vec![4]),
                start(1, vec![4])
            ]
        );
        assert_eq!(
            r.leave(2),
            vec![
                stop(1, vec![2]),
                stop(3, vec![2]),
                start(1, vec![3]),
                start(3, vec![1])
            ]
        );
        assert_eq!(r.leave(1), vec![stop(4, vec![1]), stop(3, vec![1])]);
        assert_eq!(r.leave(3), vec![stop(4, vec![3])]);
        assert!(r.leave(4).is_empty());
        assert!(r.leave(4).is_empty());
    }
}
