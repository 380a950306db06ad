//! The decider: a pure, deterministic state machine over log records
//! (registry, switch-aware rings, failure disambiguation). It may use
//! `classify`'s types and nothing that does I/O.
//!
//! Built so far: [`ring::Ring`], one heartbeat ring and the exact
//! instructions that keep it whole as nodes join and leave. The registry,
//! switch groups and the top-level ring, the failure state machine and the
//! simulation are the decider issue's remaining work.

pub mod ring;

/// A node's dense index in the decider's registry.
pub type NodeId = u32;
