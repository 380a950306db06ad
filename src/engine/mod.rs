//! The only code with threads and sockets, one room per thread as
//! DESIGN.md draws them: the io loop (`io`, with its `recvmmsg`/`sendmmsg`
//! wrapper `mmsg`), the log thread (`log_thread`), the sync thread
//! (`sync_thread`), the decider thread (`decide_thread`, fed by `feed`,
//! sending through `send`), the store thread (`store_thread`); `daemon`
//! starts them (recovery first) and stops them; `metrics` serves the
//! counters; `fatal` makes any thread's failure stop the daemon loudly.
//! The whole-system benchmarks live in `crate::bench`.

pub mod daemon;
mod decide_thread;
pub mod fatal;
mod feed;
mod inflater;
pub mod io;
pub mod limits;
mod log_thread;
pub mod metrics;
pub mod mmsg;
mod send;
mod store_thread;
mod sync_thread;
