// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A scripted clock for tests: its time moves only when the test moves it.
//!
//! [`MockClock`] is what the device holds; [`MockHandle`] is what the test
//! keeps to advance or step the time and to look at the armed timer. The
//! timer behaves like a timerfd with `TFD_TIMER_CANCEL_ON_SET`: advancing
//! past the armed time reports [`TimerEvent::Expired`], setting a clock that
//! can step reports [`TimerEvent::Stepped`].

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use super::{HostClock, Timer, TimerEvent};

#[derive(Debug)]
struct Inner {
    now: u64,
    steps: bool,
    timer: Timer,
    event: TimerEvent,
    fail: bool,
}

/// The device's side of a scripted clock.
#[derive(Debug)]
pub struct MockClock {
    inner: Arc<Mutex<Inner>>,
}

/// The test's side of a scripted clock.
#[derive(Debug, Clone)]
pub struct MockHandle {
    inner: Arc<Mutex<Inner>>,
}

/// A clock at `now` ns; `steps`: whether it can be set (realtime-like).
pub fn mock_clock(now: u64, steps: bool) -> (MockClock, MockHandle) {
    let inner = Arc::new(Mutex::new(Inner {
        now,
        steps,
        timer: Timer::Off,
        event: TimerEvent::None,
        fail: false,
    }));
    (
        MockClock {
            inner: inner.clone(),
        },
        MockHandle { inner },
    )
}

impl MockHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        vhost_device_common::lock(&self.inner)
    }

    /// Let `ns` pass; fires the timer if its time is reached.
    pub fn advance(&self, ns: u64) {
        let mut i = self.lock();
        i.now = i.now.saturating_add(ns);
        if let Timer::At(at) = i.timer {
            if i.now >= at && i.event == TimerEvent::None {
                i.event = TimerEvent::Expired;
            }
        }
    }

    /// Set the clock to `ns` (a step, forwards or backwards). A clock that
    /// can step cancels its armed timer, as `TFD_TIMER_CANCEL_ON_SET` does.
    pub fn step_to(&self, ns: u64) {
        let mut i = self.lock();
        i.now = ns;
        if i.steps && i.timer != Timer::Off {
            i.event = TimerEvent::Stepped;
        }
    }

    /// The current time.
    pub fn now(&self) -> u64 {
        self.lock().now
    }

    /// The armed timer.
    pub fn timer(&self) -> Timer {
        self.lock().timer
    }

    /// Make reads fail from now on, or work again.
    pub fn set_failing(&self, fail: bool) {
        self.lock().fail = fail;
    }
}

impl HostClock for MockClock {
    fn now(&mut self) -> io::Result<u64> {
        let i = vhost_device_common::lock(&self.inner);
        if i.fail {
            return Err(io::Error::other("the scripted clock fails"));
        }
        Ok(i.now)
    }

    fn set_timer(&mut self, timer: Timer) -> io::Result<()> {
        let mut i = vhost_device_common::lock(&self.inner);
        i.timer = match timer {
            Timer::WatchSteps if !i.steps => Timer::Off,
            t => t,
        };
        // Re-arming clears what the old setting reported, as with a timerfd.
        i.event = match i.timer {
            Timer::At(at) if i.now >= at => TimerEvent::Expired,
            _ => TimerEvent::None,
        };
        Ok(())
    }

    fn timer_event(&mut self) -> io::Result<TimerEvent> {
        let mut i = vhost_device_common::lock(&self.inner);
        Ok(std::mem::replace(&mut i.event, TimerEvent::None))
    }

    fn timer_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn name(&self) -> String {
        "mock clock".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_past_the_armed_time_fires_once() {
        let (mut c, h) = mock_clock(100, true);
        c.set_timer(Timer::At(150)).unwrap();

        h.advance(49);
        assert_eq!(c.timer_event().unwrap(), TimerEvent::None);
        h.advance(1);

        assert_eq!(c.timer_event().unwrap(), TimerEvent::Expired);
        assert_eq!(c.timer_event().unwrap(), TimerEvent::None);
    }

    #[test]
    fn stepping_a_settable_clock_cancels_its_timer() {
        let (mut c, h) = mock_clock(100, true);
        c.set_timer(Timer::WatchSteps).unwrap();

        h.step_to(10);

        assert_eq!(c.timer_event().unwrap(), TimerEvent::Stepped);
        assert_eq!(c.now().unwrap(), 10);
    }

    #[test]
    fn a_clock_that_cannot_step_never_watches_steps() {
        let (mut c, h) = mock_clock(100, false);

        c.set_timer(Timer::WatchSteps).unwrap();

        assert_eq!(h.timer(), Timer::Off);
    }
}
