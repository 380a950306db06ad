//! The only code with threads and sockets: the io loop (`io`), its
//! `recvmmsg`/`sendmmsg` wrapper (`mmsg`), the daemon's threads (`daemon`:
//! log, sync, decider with outbound delivery, store), its metrics endpoint
//! (`metrics`), and whole-system benchmarks (`bench_recv`,
//! `bench_pipeline`).

pub mod bench_pipeline;
pub mod bench_recv;
pub mod daemon;
pub mod io;
pub mod metrics;
pub mod mmsg;
