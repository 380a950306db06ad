//! Whole-system benchmarks run by `cma bench`: each measures the daemon's
//! pieces against a bare reference on the same machine in one run
//! (shared/BENCH.md). Micro-benchmarks are in `benches/` (criterion).

pub mod ack;
pub mod checkpoint;
pub mod cli;
pub mod joins;
pub mod pipeline;
pub mod recv;
pub mod storm;
