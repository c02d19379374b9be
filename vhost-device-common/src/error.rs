// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Error reporting.
//!
//! Two tiers, as everywhere in this workspace:
//!
//! - A *guest* error (a malformed or hostile request) is answered with the
//!   device's error status or used length 0 and logged through [`GuestErrorLog`],
//!   which rate-limits so that a guest cannot flood the host log.
//! - A *host* error ends the worker and the process; the binary prints its whole
//!   cause chain once, with [`report`].

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A boxed host-side error that ends a worker.
pub type HostError = Box<dyn StdError + Send + Sync + 'static>;

/// Render an error and all its causes as `outer: cause: root cause`.
pub fn report(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their source inline; do not print it twice.
        if !out.ends_with(&text) {
            let _ = write!(out, ": {text}");
        }
        source = cause.source();
    }
    out
}

/// How many guest errors are logged per window before the rest are counted.
const BURST: u32 = 10;
/// Length of the rate-limiting window.
const WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct LogWindow {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Rate-limited `warn!` for guest-caused errors.
///
/// At most ten messages per five seconds; the number suppressed is reported when
/// the next window opens.
#[derive(Debug)]
pub struct GuestErrorLog {
    device: String,
    window: Mutex<LogWindow>,
}

impl GuestErrorLog {
    /// A log whose messages are prefixed with `device`.
    pub fn new(device: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            window: Mutex::new(LogWindow {
                start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Log a guest error unless this window's burst is used up.
    /// Returns whether the message was written.
    pub fn warn(&self, what: &str, err: &(dyn StdError + 'static)) -> bool {
        let mut w = crate::lock(&self.window);
        let now = Instant::now();
        if now.duration_since(w.start) >= WINDOW {
            if w.suppressed > 0 {
                log::warn!(
                    "{}: {} further guest errors were not logged",
                    self.device,
                    w.suppressed
                );
            }
            *w = LogWindow {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged < BURST {
            w.logged += 1;
            log::warn!("{}: {what}: {}", self.device, report(err));
            true
        } else {
            w.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn report_prints_whole_chain() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(report(&err), "outer: inner");
    }

    #[test]
    fn guest_log_stops_after_burst() {
        let log = GuestErrorLog::new("test");
        let err = std::io::Error::other("bad");
        let written = (0..BURST + 5).filter(|_| log.warn("req", &err)).count();
        assert_eq!(written, BURST as usize);
    }
}
