// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host clocks behind the device's clocks.
//!
//! [`HostClock`] is the narrow, syscall-shaped interface the device uses for
//! one clock: read it (`clock_gettime`), arm its alarm timer
//! (`timerfd_settime`, absolute, cancelled when the clock is set), and see
//! what the timer did (`read` on the timerfd). [`linux::LinuxClock`] is the
//! real one; `mock::MockClock` (tests, feature `mock`) is a scripted clock for tests, whose time
//! only moves when the test says so (steps, alarms in the past).

pub mod linux;
#[cfg(any(test, feature = "mock"))]
pub mod mock;

use std::io;
use std::os::fd::BorrowedFd;

use serde::{Deserialize, Serialize};

/// Where a clock's readings come from: a Linux clock id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// `CLOCK_REALTIME`: UTC as the host keeps it (NTP may slew or step it;
    /// the kernel steps it at leap seconds).
    Realtime,
    /// `CLOCK_TAI`: `CLOCK_REALTIME` plus the kernel's TAI offset (set by an
    /// NTP or PTP daemon; when nobody set it, the daemon adds its own
    /// `--tai-offset`).
    Tai,
    /// `CLOCK_MONOTONIC`: time since boot, not counting suspend.
    Monotonic,
    /// `CLOCK_BOOTTIME`: time since boot, counting suspend.
    Boottime,
}

impl Source {
    /// Every source, in command-line order.
    pub const ALL: [Source; 4] = [
        Source::Realtime,
        Source::Tai,
        Source::Monotonic,
        Source::Boottime,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Source::Realtime => "realtime",
            Source::Tai => "tai",
            Source::Monotonic => "monotonic",
            Source::Boottime => "boottime",
        }
    }

    /// Whether the host can set (step) this clock: only such clocks need to
    /// watch for steps.
    pub fn steps(self) -> bool {
        matches!(self, Source::Realtime | Source::Tai)
    }
}

/// What the alarm timer of a clock should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Nothing.
    Off,
    /// Fire when the clock reaches this time (ns, the clock's own scale), or
    /// when the clock is set.
    At(u64),
    /// Only report when the clock is set (a clock that can step back before
    /// an alarm that already expired; nothing for clocks that never step).
    WatchSteps,
}

/// What the alarm timer did since it was last asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// Nothing (a spurious wake-up).
    None,
    /// The armed time was reached.
    Expired,
    /// The clock was set (stepped); the timer is cancelled.
    Stepped,
}

/// One host clock, with its alarm timer.
pub trait HostClock: Send {
    /// The current time in ns on the clock's own scale (the Unix epoch for
    /// realtime and TAI, boot for monotonic and boottime).
    fn now(&mut self) -> io::Result<u64>;

    /// Arm, re-arm or disarm the alarm timer.
    fn set_timer(&mut self, timer: Timer) -> io::Result<()>;

    /// What the timer did since the last call; never blocks.
    fn timer_event(&mut self) -> io::Result<TimerEvent>;

    /// The descriptor that becomes readable when [`Self::timer_event`] has
    /// something to say (`None`: the owner polls, as tests do).
    fn timer_fd(&self) -> Option<BorrowedFd<'_>>;

    /// The host clock's name, for logs.
    fn name(&self) -> String;
}

/// How to open the host side of a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostConfig {
    /// The Linux clock.
    pub source: Source,
    /// TAI − UTC in seconds, added to `CLOCK_TAI` when the kernel's own TAI
    /// offset is 0 (nobody set it); only for [`Source::Tai`].
    pub tai_fallback_s: u32,
}

impl HostConfig {
    /// Open the clock and its timer.
    pub fn open(&self) -> Result<Box<dyn HostClock>, linux::OpenError> {
        Ok(Box::new(linux::LinuxClock::open(
            self.source,
            self.tai_fallback_s,
        )?))
    }
}
