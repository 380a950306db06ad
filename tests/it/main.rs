//! Integration tests, built as one test binary.

mod alloc;
mod bench;
mod codec;
mod daemon;
mod daemon_keys;
mod decode_cmd;
mod drops;
mod io_loop;
mod libsodium;
mod reliable;
mod sim;
mod support;
mod switch;
mod wal;
mod wal_crash;
