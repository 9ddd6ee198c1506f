//! Bounded polling, the only way tests wait for something to happen.
//!
//! Tests never sleep to synchronise: they poll a condition every [`POLL_INTERVAL`] until it
//! holds or a deadline passes, and fail with a message when it never holds.

use std::thread;
use std::time::{Duration, Instant};

/// The pause between two attempts of a poll.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Calls `check` until it returns `Some`, at most until `timeout` has passed.
///
/// `check` runs at least once, even with a zero timeout. Returns the first `Some` value, or
/// `None` when the deadline passed first.
pub(crate) fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Like [`poll_until`] for a plain condition: true as soon as `cond` holds, false on timeout.
pub(crate) fn poll_true(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll_until(timeout, || cond().then_some(())).is_some()
}
