//! The decider: a pure, deterministic state machine over log records
//! (registry, switch-aware rings, failure disambiguation). Not built yet:
//! see the decider issue. It may use `classify`'s types and nothing that
//! does I/O.
