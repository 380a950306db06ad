//! The decider: a pure, deterministic state machine over log records
//! (registry, switch-aware rings, failure disambiguation). It may use
//! `classify`'s types and nothing that does I/O.
//!
//! Built so far: [`ring::Ring`], one heartbeat ring and the exact
//! instructions that keep it whole as nodes join and leave, and
//! [`topology::Topology`], a ring per switch (or subnet) group plus the
//! top-level ring of representatives. The registry, the failure state
//! machine, the checkpoint and the simulation are the decider issue's
//! remaining work.

#[cfg(test)]
mod counting_agents;
pub mod decider;
pub mod failure;
pub mod idmap;
pub mod outq;
pub mod ring;
pub mod topology;

/// A node's dense index in the decider's registry.
pub type NodeId = u32;
