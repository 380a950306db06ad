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
#[cfg(test)]
mod model_agents;
pub mod outq;
pub mod ring;
pub mod topology;

/// A node's dense index in the decider's registry.
pub type NodeId = u32;
