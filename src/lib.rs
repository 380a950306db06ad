//! cma: a Central Monitoring Authority for large server fleets.
//!
//! Agents (nanoprobes) heartbeat each other in rings and report to the CMA
//! over UDP using the Assimilation Project's wire protocol. See `README.md`
//! and `shared/DESIGN.md` for the architecture.

#![deny(unsafe_code)]
#![warn(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

pub mod agent;
pub mod bench;
pub mod classify;
pub mod config;
pub mod crypt;
pub mod decide;
pub mod decode;
pub mod engine;
pub mod fleet;
pub mod logger;
pub mod netconfig;
pub mod reliable;
pub mod ring_buffer;
pub mod sim;
pub mod store;
pub mod text;
pub mod views;
pub mod wal;
pub mod wal_tools;
