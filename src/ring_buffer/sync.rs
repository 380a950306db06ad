//! The synchronisation primitives the ring uses: std's, or loom's when the
//! crate is built with `--cfg loom` for model checking.

#[cfg(not(loom))]
pub(super) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(super) use std::sync::{Arc, Mutex};
#[cfg(not(loom))]
pub(super) use std::thread::{Thread, current, park, park_timeout};

#[cfg(loom)]
pub(super) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(loom)]
pub(super) use loom::sync::{Arc, Mutex};
#[cfg(loom)]
pub(super) use loom::thread::{Thread, current, park};

/// loom has no timed park; a model never needs the timeout.
#[cfg(loom)]
pub(super) fn park_timeout(_: std::time::Duration) {
    park();
}
