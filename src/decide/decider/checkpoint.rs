//! The checkpoint: the decider's state as bytes and back, and what the
//! daemon needs from it at start (instructions in flight, receiving
//! positions).

use super::*;

impl Decider {
    /// Instructions sent and not yet ACKed, to seed the transport after a
    /// restart from a checkpoint.
    pub fn unacked(&self) -> Vec<Effect> {
        let mut out = Vec::new();
        for (id, n) in self.nodes.iter().enumerate() {
            for (r, i) in n.out.inflight() {
                out.push(self.send_effect(id as NodeId, *r, i.clone()));
            }
        }
        out
    }

    /// Every agent's receiving position, to seed the io thread's duplicate
    /// detection (rule 2).
    pub fn inbound_positions(&self) -> Vec<(SocketAddr, u32, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| n.inbound.map(|(s, r)| (n.addr, s, r)))
            .collect()
    }

    /// The whole state, for a checkpoint.
    pub fn export(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("decider state always serialises")
    }

    /// A decider from [`Decider::export`]'s bytes.
    pub fn import(bytes: &[u8]) -> Result<Decider, serde_json::Error> {
        let mut d: Decider = serde_json::from_slice(bytes)?;
        let key = IndexHasher(d.cfg.index_key);
        d.by_addr = Index::with_capacity_and_hasher(d.nodes.len(), key);
        d.by_host = Index::with_capacity_and_hasher(d.nodes.len(), key);
        for (i, n) in d.nodes.iter().enumerate() {
            d.by_addr.insert(n.addr, i as NodeId);
            d.by_host.insert(n.hostname.clone(), i as NodeId);
        }
        Ok(d)
    }
}
