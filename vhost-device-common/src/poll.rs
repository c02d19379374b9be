// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Adaptive polling of a worker's rings after it has done work.
//!
//! Waking a sleeping worker costs several microseconds (the kick's eventfd
//! write, the scheduler, `epoll_wait` returning), which is most of the round
//! trip of a small request. So after a worker has served a batch it keeps
//! watching its rings for a short window before it goes back to `epoll_wait`,
//! with the driver's notifications suppressed meanwhile (virtio 1.3, 2.7.10:
//! with `VIRTIO_RING_F_EVENT_IDX` the device simply does not move
//! `avail_event` forward; without it, it sets `VRING_USED_F_NO_NOTIFY`). A
//! request posted during the window is taken without any kick or wake-up.
//!
//! The window tunes itself as QEMU's `poll-max-ns` (util/aio-posix.c) and
//! SPDK's pollers do: the runtime measures how long each worker stays idle
//! between the end of one piece of work and the arrival of the next (a
//! request found while polling, or any event of its epoll), and
//!
//! - leaves the window alone when the gap fell inside it (polling caught it,
//!   or would have);
//! - doubles it (starting at [`START`]) when the gap was longer than the
//!   window but no longer than the ceiling (a longer window would have caught
//!   it);
//! - halves it (to zero below [`START`]) when the gap was longer than the
//!   ceiling (polling cannot pay; QEMU's default drops to zero at once, which
//!   makes one late request undo all the growth).
//!
//! `--poll-us` is the ceiling; 0 turns polling off and the worker behaves as
//! it always did. Polling only ever follows real work — a chain taken off a
//! ring or a held chain completed — and a window ends at its deadline, so an
//! idle daemon sleeps in `epoll_wait` and uses no CPU. While it polls, the
//! worker also watches its own epoll (without consuming anything): a host
//! event, a kick of another queue or the exit event ends the window at once,
//! so polling never delays them.
//!
//! Before the worker sleeps it re-enables notifications on each of its rings
//! and then reads each avail index again (after a full fence): a request
//! posted just as the window closed is either seen there or finds
//! notifications enabled and kicks. No wake-up is lost.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The window a growing window starts from (QEMU starts at 4 µs as well):
/// a wake-up costs about as much, so shorter windows rarely pay.
pub const START: Duration = Duration::from_micros(4);

/// The largest `--poll-us` accepted (one second).
pub const MAX_POLL_US: u32 = 1_000_000;

/// The self-tuning length of a worker's poll window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    current: Duration,
    max: Duration,
}

impl Window {
    /// A window that starts closed and never exceeds `max` (zero: never
    /// polls).
    pub fn new(max: Duration) -> Self {
        Self {
            current: Duration::ZERO,
            max,
        }
    }

    /// A window that starts at `current` (at most `max`): for tests, and
    /// for a caller that knows its load.
    pub fn starting_at(current: Duration, max: Duration) -> Self {
        Self {
            current: current.min(max),
            max,
        }
    }

    /// How long the worker polls now.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The ceiling (`--poll-us`).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Work arrived `gap` after the worker finished the previous work.
    pub fn arrived(&mut self, gap: Duration) {
        if gap <= self.current || self.max.is_zero() {
            // Caught by polling (or it would have been): the sweet spot.
        } else if gap > self.max {
            self.current /= 2;
            if self.current < START {
                self.current = Duration::ZERO;
            }
        } else {
            self.current = if self.current.is_zero() {
                START
            } else {
                self.current.saturating_mul(2)
            }
            .min(self.max);
        }
    }
}

/// What the device did during one event while the runtime polls, shared with
/// the drains through
/// [`QueueContext::poll`](crate::queue::QueueContext::poll).
///
/// While it is set, a drain leaves the driver's notifications suppressed when
/// it ends (the runtime re-enables them before the worker sleeps) and counts
/// the chains it takes; completing a held chain counts too.
#[derive(Debug, Default)]
pub struct PollBatch {
    work: AtomicUsize,
}

impl PollBatch {
    /// Count `n` chains taken off a ring or completed.
    pub fn add_work(&self, n: usize) {
        self.work.fetch_add(n, Ordering::Relaxed);
    }

    /// Chains taken or completed so far.
    pub fn work(&self) -> usize {
        self.work.load(Ordering::Relaxed)
    }
}

/// One worker's polling state.
#[derive(Debug)]
pub struct WorkerPoll {
    /// The self-tuning window.
    pub window: Window,
    /// When the worker last finished an event or work (`None`: never).
    pub idle_since: Option<Instant>,
    /// When the worker last took or completed a chain (`None`: never).
    pub last_work: Option<Instant>,
    /// Per vring of the worker: the avail index read just before the
    /// runtime last processed it (a kick, the poll, the last look); `None`
    /// before the first time. A different index means the driver posted
    /// since. Never taken at other times: a request posted before the
    /// driver saw notifications suppressed, but not yet processed, must
    /// still count as new.
    pub seen: Vec<Option<u16>>,
    epoll: Option<OwnedFd>,
}

impl WorkerPoll {
    /// Polling with ceiling `max` for a worker with `vrings` vrings.
    pub fn new(max: Duration, vrings: usize) -> Self {
        Self {
            window: Window::new(max),
            idle_since: None,
            last_work: None,
            seen: vec![None; vrings],
            epoll: None,
        }
    }

    /// Watch `epoll` (a duplicate of the worker's epoll descriptor) while
    /// polling.
    pub fn set_epoll(&mut self, epoll: OwnedFd) {
        self.epoll = Some(epoll);
    }

    /// Work arrives now: tune the window by the idle gap before it.
    pub fn arrived(&mut self, now: Instant) {
        if let Some(since) = self.idle_since {
            let was_open = !self.window.current().is_zero();
            self.window.arrived(now.saturating_duration_since(since));
            match (was_open, self.window.current().is_zero()) {
                (false, false) => log::debug!(
                    "a worker polls its rings after work now (window {:?})",
                    self.window.current()
                ),
                (true, true) => log::debug!("a worker stops polling (requests too far apart)"),
                _ => {}
            }
        }
    }

    /// Whether the worker took or completed a chain less than one window
    /// before `now`: only then does it poll.
    pub fn worked_within_window(&self, now: Instant) -> bool {
        self.last_work
            .is_some_and(|t| now.saturating_duration_since(t) < self.window.current())
    }

    /// Whether the worker's epoll has an event ready (a kick, a host event,
    /// the exit event). Nothing is consumed: `poll` on an epoll descriptor
    /// only reports that `epoll_wait` would return at once.
    pub fn events_pending(&self) -> bool {
        let Some(epoll) = &self.epoll else {
            return false;
        };
        let mut fds = [PollFd::new(epoll.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn gap_a_longer_window_would_have_caught_grows_it_from_the_start_value() {
        let mut w = Window::new(MAX);

        w.arrived(us(10));
        assert_eq!(w.current(), START);
        w.arrived(us(10));
        assert_eq!(w.current(), us(8));
        w.arrived(us(10));
        assert_eq!(w.current(), us(16));
    }

    #[test]
    fn gap_inside_the_window_leaves_it_alone() {
        let mut w = Window::starting_at(us(16), MAX);

        w.arrived(us(16));
        w.arrived(us(3));

        assert_eq!(w.current(), us(16));
    }

    #[test]
    fn window_never_grows_past_the_ceiling() {
        let mut w = Window::starting_at(us(32), MAX);

        w.arrived(us(40));
        w.arrived(us(49));

        assert_eq!(w.current(), MAX);
    }

    #[test]
    fn gap_beyond_the_ceiling_halves_the_window_and_closes_it_below_the_start() {
        let mut w = Window::starting_at(us(50), MAX);

        w.arrived(Duration::from_millis(5));
        assert_eq!(w.current(), us(25));
        for _ in 0..3 {
            w.arrived(Duration::from_secs(1));
        }
        assert_eq!(w.current(), Duration::ZERO);
    }

    #[test]
    fn zero_ceiling_never_opens_the_window() {
        let mut w = Window::new(Duration::ZERO);

        for gap in [0, 1, 10, 1000] {
            w.arrived(us(gap));
        }

        assert_eq!(w.current(), Duration::ZERO);
    }

    #[test]
    fn first_arrival_of_a_worker_does_not_tune_the_window() {
        let mut p = WorkerPoll::new(MAX, 1);

        p.arrived(Instant::now());

        assert_eq!(p.window.current(), Duration::ZERO);
    }

    #[test]
    fn pending_epoll_event_is_seen_and_left_for_epoll_wait() {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
        ep.add(&efd, EpollEvent::new(EpollFlags::EPOLLIN, 7))
            .unwrap();
        let mut p = WorkerPoll::new(MAX, 1);
        p.set_epoll(ep.0.try_clone().unwrap());
        assert!(!p.events_pending());

        efd.write(1).unwrap();

        assert!(p.events_pending());
        let mut out = [EpollEvent::empty()];
        assert_eq!(
            ep.wait(&mut out, 0u16).unwrap(),
            1,
            "the event was consumed"
        );
        assert_eq!(out[0].data(), 7);
    }
}
