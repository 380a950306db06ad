//! The only code with threads and sockets: the io loop (`io`), its
//! `recvmmsg`/`sendmmsg` wrapper (`mmsg`), and whole-system benchmarks
//! (`bench_recv`). Later: the WAL sync thread, the decider driver and
//! outbound delivery.

pub mod bench_pipeline;
pub mod bench_recv;
pub mod daemon;
pub mod io;
pub mod metrics;
pub mod mmsg;
