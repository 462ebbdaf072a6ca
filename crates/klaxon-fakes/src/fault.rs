//! Failure injection shared by the fakes: a runtime-switchable [`FailMode`] plus a counter of
//! "fail the next n requests" that takes precedence over it, and the [`Intake`] every fake
//! puts its requests through (count, then fault).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{FailMode, lock};

/// What a handler must do with the request it is about to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Serve it normally.
    Pass,
    /// Answer with this status and the provider's error shape, without looking at the request.
    Fail(u16),
    /// Sleep this long, then serve it normally.
    Delay(Duration),
}

/// The injected-failure settings of one fake.
#[derive(Debug)]
pub(crate) struct Faults {
    inner: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The standing mode, applied once `next_count` is exhausted.
    mode: FailMode,
    /// How many upcoming requests still fail with `next_status` (from `fail_next`).
    next_count: usize,
    /// The status those requests fail with.
    next_status: u16,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            inner: Mutex::new(State {
                mode: FailMode::None,
                next_count: 0,
                next_status: 500,
            }),
        }
    }
}

impl Faults {
    /// Replaces the standing mode.
    pub(crate) fn set(&self, mode: FailMode) {
        lock(&self.inner).mode = mode;
    }

    /// Makes the next `n` requests fail with `status`, then fall back to the standing mode.
    pub(crate) fn fail_next(&self, n: usize, status: u16) {
        let mut state = lock(&self.inner);
        state.next_count = n;
        state.next_status = status;
    }

    /// Decides the fate of one incoming request (consuming one `fail_next` slot if any is left).
    pub(crate) fn take(&self) -> Fault {
        let mut state = lock(&self.inner);
        if state.next_count > 0 {
            state.next_count -= 1;
            return Fault::Fail(state.next_status);
        }
        match state.mode {
            FailMode::None => Fault::Pass,
            FailMode::Status(code) => Fault::Fail(code),
            FailMode::Slow(delay) => Fault::Delay(delay),
        }
    }
}

/// What every fake keeps about the requests it is sent, whatever the answer: the injected
/// failures, and the counts behind its `requests()` and `count_429()`.
#[derive(Debug, Default)]
pub(crate) struct Intake {
    pub(crate) faults: Faults,
    /// Every request received, whatever the answer.
    pub(crate) requests: AtomicUsize,
    /// Every 429 answered (rate limits and injected failures alike).
    pub(crate) count_429: AtomicUsize,
}

impl Intake {
    /// Counts one incoming request and applies the injected fault: `Some(status)` when it must
    /// be answered with the provider's injected error for that status, `None` once it may be
    /// served (after the delay of a slow mode).
    pub(crate) async fn admit(&self) -> Option<u16> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        match self.faults.take() {
            Fault::Fail(code) => Some(code),
            Fault::Delay(delay) => {
                tokio::time::sleep(delay).await;
                None
            }
            Fault::Pass => None,
        }
    }

    /// Counts an answer that is not a success: a 429 shows in `count_429()`.
    pub(crate) fn answered(&self, status: u16) {
        if status == 429 {
            self.count_429.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_takes_precedence_then_mode_applies() {
        let faults = Faults::default();
        faults.set(FailMode::Slow(Duration::from_millis(5)));
        faults.fail_next(2, 503);
        assert_eq!(faults.take(), Fault::Fail(503));
        assert_eq!(faults.take(), Fault::Fail(503));
        assert_eq!(faults.take(), Fault::Delay(Duration::from_millis(5)));
        faults.set(FailMode::Status(502));
        assert_eq!(faults.take(), Fault::Fail(502));
        faults.set(FailMode::None);
        assert_eq!(faults.take(), Fault::Pass);
    }
}
