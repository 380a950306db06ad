//! The registry's nodes, by id. Reading is free; every change goes through
//! [`Nodes::get_mut`] (or `push`), which marks the node for the next
//! incremental checkpoint: the checkpoint then writes only what changed,
//! and the compiler finds any change that would not be marked (there is
//! no `IndexMut`).

use serde::{Deserialize, Serialize};

use super::Node;
use crate::decide::NodeId;

/// Nodes by id, with the ids changed since the last checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Nodes {
    list: Vec<Node>,
    /// Changed since the last [`Nodes::take_unsaved`], once each.
    #[serde(skip)]
    unsaved: Vec<NodeId>,
    /// `unsaved` as a flag per node.
    #[serde(skip)]
    marked: Vec<bool>,
}

/// Equal when the nodes are: what is unsaved is bookkeeping.
impl PartialEq for Nodes {
    fn eq(&self, other: &Nodes) -> bool {
        self.list == other.list
    }
}

impl Eq for Nodes {}

impl std::ops::Deref for Nodes {
    type Target = [Node];

    fn deref(&self) -> &[Node] {
        &self.list
    }
}

impl Nodes {
    /// Nodes loaded whole (from a checkpoint): none unsaved.
    pub(crate) fn from_list(list: Vec<Node>) -> Nodes {
        let marked = vec![false; list.len()];
        Nodes {
            list,
            unsaved: Vec::new(),
            marked,
        }
    }

    /// Node `i`, to change it (marked unsaved).
    pub(crate) fn get_mut(&mut self, i: usize) -> &mut Node {
        self.mark(i);
        &mut self.list[i]
    }

    /// Adds a node (unsaved).
    pub(crate) fn push(&mut self, n: Node) {
        self.list.push(n);
        self.mark(self.list.len() - 1);
    }

    /// Marks node `i` unsaved (its ring links changed, say).
    pub(crate) fn mark(&mut self, i: usize) {
        if self.marked.len() < self.list.len() {
            self.marked.resize(self.list.len(), false);
        }
        if let Some(m) = self.marked.get_mut(i)
            && !*m
        {
            *m = true;
            self.unsaved.push(i as NodeId);
        }
    }

    /// Marks every node unsaved (a checkpoint from an older format).
    pub(crate) fn mark_all(&mut self) {
        for i in 0..self.list.len() {
            self.mark(i);
        }
    }

    /// The nodes changed since the last call, ascending; none after.
    pub(crate) fn take_unsaved(&mut self) -> Vec<NodeId> {
        let mut ids = std::mem::take(&mut self.unsaved);
        for &i in &ids {
            self.marked[i as usize] = false;
        }
        ids.sort_unstable();
        ids
    }
}
