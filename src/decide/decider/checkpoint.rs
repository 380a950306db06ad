//! The checkpoint: the decider's state as bytes and back, and what the
//! daemon needs from it at start (instructions in flight, receiving
//! positions).

use super::*;
use crate::decide::topology::{GroupParts, RingLinks};

impl Decider {
    /// Instructions sent and not yet ACKed: the daemon sends them once more
    /// when it starts (an agent discards a duplicate); their retransmission
    /// timers go on from the checkpoint.
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
            .filter(|n| !n.is_vacant())
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
        d.reindex();
        Ok(d)
    }
}

/// Groups changed since the last incremental checkpoint: bookkeeping, so
/// equal whatever it holds (a replayed decider equals the live one).
#[derive(Clone, Debug, Default)]
pub(super) struct UnsavedGroups(pub(super) BTreeSet<GroupKey>);

impl PartialEq for UnsavedGroups {
    fn eq(&self, _: &UnsavedGroups) -> bool {
        true
    }
}

impl Eq for UnsavedGroups {}

/// What changed since the last incremental checkpoint, as rows: the store
/// writes them in one transaction with the LSN they reflect. Rows are
/// JSON; group keys are their JSON text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointDelta {
    /// The last record the state reflects.
    pub lsn: u64,
    /// Everything that is not per node or per group (small: settings,
    /// counters, the top ring's first member, cut and healed groups).
    pub globals: Vec<u8>,
    /// Each changed node's row: its state and its ring links.
    pub nodes: Vec<(NodeId, Vec<u8>)>,
    /// Each changed group's row; `None`: the group is gone.
    pub groups: Vec<(String, Option<Vec<u8>>)>,
}

impl CheckpointDelta {
    /// Bytes of rows it writes.
    pub fn bytes(&self) -> usize {
        self.globals.len()
            + self.nodes.iter().map(|n| 8 + n.1.len()).sum::<usize>()
            + self
                .groups
                .iter()
                .map(|g| g.0.len() + g.1.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }
}

/// The rows of a whole checkpoint, as the store holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointRows {
    /// The last record the state reflects.
    pub lsn: u64,
    /// The globals row.
    pub globals: Vec<u8>,
    /// Every node's row, by id.
    pub nodes: Vec<(NodeId, Vec<u8>)>,
    /// Every group's row, by key text.
    pub groups: Vec<(String, Vec<u8>)>,
}

impl CheckpointRows {
    /// Applies a delta (as the store does).
    pub fn apply(&mut self, d: &CheckpointDelta) {
        self.lsn = d.lsn;
        self.globals.clone_from(&d.globals);
        let mut nodes: BTreeMap<NodeId, Vec<u8>> =
            std::mem::take(&mut self.nodes).into_iter().collect();
        for (id, row) in &d.nodes {
            nodes.insert(*id, row.clone());
        }
        self.nodes = nodes.into_iter().collect();
        let mut groups: BTreeMap<String, Vec<u8>> =
            std::mem::take(&mut self.groups).into_iter().collect();
        for (key, row) in &d.groups {
            match row {
                Some(r) => groups.insert(key.clone(), r.clone()),
                None => groups.remove(key),
            };
        }
        self.groups = groups.into_iter().collect();
    }
}

/// The globals row.
#[derive(Serialize, Deserialize)]
struct Globals {
    cfg: DeciderConfig,
    fcfg: FailureConfig,
    top_head: Option<NodeId>,
    version: u64,
    #[serde(with = "pairs")]
    cut_off: BTreeMap<GroupKey, Vec<NodeId>>,
    #[serde(with = "pairs")]
    agreed: BTreeMap<NodeId, NodeId>,
    #[serde(with = "pairs")]
    healed: BTreeMap<GroupKey, u64>,
    #[serde(with = "pairs")]
    recent_suspects: BTreeMap<GroupKey, Vec<(u64, NodeId)>>,
    #[serde(with = "pairs")]
    martian_repairs: BTreeMap<(NodeId, NodeId), u64>,
    now_ms: u64,
    last_lsn: u64,
    counters: Counters,
}

/// A node's row.
#[derive(Serialize)]
struct NodeRowOut<'a> {
    node: &'a Node,
    links: Option<RingLinks>,
}

#[derive(Deserialize)]
struct NodeRowIn {
    node: Node,
    links: Option<RingLinks>,
}

impl Decider {
    /// The rows that changed since the last call: nodes changed (their
    /// state or ring links), groups changed, and the globals. O(changes):
    /// this is what runs on the decider thread at every checkpoint.
    pub fn take_checkpoint(&mut self) -> CheckpointDelta {
        let ids = self.nodes.take_unsaved();
        let nodes = ids
            .into_iter()
            .map(|id| {
                let row = NodeRowOut {
                    node: &self.nodes[id as usize],
                    links: self.topo.links_of(id),
                };
                (id, serde_json::to_vec(&row).expect("a node row serialises"))
            })
            .collect();
        let groups = std::mem::take(&mut self.unsaved_groups.0)
            .into_iter()
            .map(|key| {
                let row = self
                    .topo
                    .group_parts(&key)
                    .map(|p| serde_json::to_vec(&p).expect("a group row serialises"));
                (group_row_key(&key), row)
            })
            .collect();
        CheckpointDelta {
            lsn: self.last_lsn,
            globals: self.globals_row(),
            nodes,
            groups,
        }
    }

    /// Marks everything unsaved: the next [`Decider::take_checkpoint`]
    /// writes every row (after a load from a whole-state checkpoint).
    pub fn mark_all_unsaved(&mut self) {
        self.nodes.mark_all();
        let keys: Vec<GroupKey> = self.topo.groups().map(|(k, _)| k.clone()).collect();
        self.unsaved_groups.0.extend(keys);
    }

    fn globals_row(&self) -> Vec<u8> {
        let g = Globals {
            cfg: self.cfg.clone(),
            fcfg: self.fcfg,
            top_head: self.topo.top_head(),
            version: self.topo.version(),
            cut_off: self.cut_off.clone(),
            agreed: self.agreed.clone(),
            healed: self.healed.clone(),
            recent_suspects: self.recent_suspects.clone(),
            martian_repairs: self.martian_repairs.clone(),
            now_ms: self.now_ms,
            last_lsn: self.last_lsn,
            counters: self.counters.clone(),
        };
        serde_json::to_vec(&g).expect("the globals serialise")
    }

    /// A decider from a checkpoint's rows. Deadlines are rebuilt from the
    /// nodes (each node's failure timer and refusal retry).
    pub fn from_rows(rows: &CheckpointRows) -> Result<Decider, String> {
        let g: Globals =
            serde_json::from_slice(&rows.globals).map_err(|e| format!("the globals row: {e}"))?;
        let mut list = Vec::with_capacity(rows.nodes.len());
        let mut links = Vec::new();
        for (i, (id, bytes)) in rows.nodes.iter().enumerate() {
            if *id as usize != i {
                return Err(format!("node rows skip from {i} to {id}"));
            }
            let r: NodeRowIn =
                serde_json::from_slice(bytes).map_err(|e| format!("node row {id}: {e}"))?;
            if let Some(l) = r.links {
                links.push((*id, l));
            }
            list.push(r.node);
        }
        let mut groups = Vec::with_capacity(rows.groups.len());
        for (key, bytes) in &rows.groups {
            let k: GroupKey =
                serde_json::from_str(key).map_err(|e| format!("group row {key}: {e}"))?;
            let p: GroupParts =
                serde_json::from_slice(bytes).map_err(|e| format!("group row {key}: {e}"))?;
            groups.push((k, p));
        }
        let topo = Topology::from_parts(g.version, g.top_head, groups, links);
        let mut deadlines = BTreeSet::new();
        for (i, n) in list.iter().enumerate() {
            if let Some(t) = n.health.deadline_ms(&g.fcfg) {
                deadlines.insert((t, i as NodeId));
            }
            if let Some(t) = n.nak_retry_at {
                deadlines.insert((t, i as NodeId));
            }
            if let Some(t) = n.out.retransmit_deadline(&g.cfg.retransmit_policy()) {
                deadlines.insert((t, i as NodeId));
            }
        }
        let key = IndexHasher(g.cfg.index_key);
        let mut d = Decider {
            cfg: g.cfg,
            fcfg: g.fcfg,
            nodes: Nodes::from_list(list),
            by_addr: Index::with_hasher(key),
            by_host: Index::with_hasher(key),
            topo,
            deadlines,
            cut_off: g.cut_off,
            agreed: g.agreed,
            healed: g.healed,
            recent_suspects: g.recent_suspects,
            martian_repairs: g.martian_repairs,
            now_ms: g.now_ms,
            last_lsn: g.last_lsn,
            counters: g.counters,
            dirty: Vec::new(),
            unsaved_groups: UnsavedGroups::default(),
            free: BTreeSet::new(),
        };
        d.reindex();
        d.check()
            .map_err(|e| format!("the checkpoint's rows are inconsistent: {e}"))?;
        Ok(d)
    }

    fn reindex(&mut self) {
        let key = IndexHasher(self.cfg.index_key);
        self.by_addr = Index::with_capacity_and_hasher(self.nodes.len(), key);
        self.by_host = Index::with_capacity_and_hasher(self.nodes.len(), key);
        self.free.clear();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.is_vacant() {
                self.free.insert(i as NodeId);
                continue;
            }
            self.by_addr.insert(n.addr, i as NodeId);
            self.by_host.insert(n.hostname.clone(), i as NodeId);
        }
    }

    /// The same decisions from here on as `other`: equal but for deadline
    /// entries that can no longer fire (a checkpoint does not keep them).
    pub fn equivalent(&self, other: &Decider) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.deadlines = a.live_deadlines();
        b.deadlines = b.live_deadlines();
        a == b
    }

    /// The deadline entries that still mean something when due.
    fn live_deadlines(&self) -> BTreeSet<(u64, NodeId)> {
        self.deadlines
            .iter()
            .filter(|(t, id)| {
                let n = &self.nodes[*id as usize];
                n.health.deadline_ms(&self.fcfg) == Some(*t)
                    || n.nak_retry_at == Some(*t)
                    || n.out.retransmit_deadline(&self.cfg.retransmit_policy()) == Some(*t)
            })
            .copied()
            .collect()
    }
}

/// A group key as the text of its checkpoint row.
pub fn group_row_key(key: &GroupKey) -> String {
    serde_json::to_string(key).expect("a group key serialises")
}
