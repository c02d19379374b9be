// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Host clocks through `clock_gettime(2)` and `timerfd_create(2)`.
//!
//! Each clock has one timerfd for its alarm, armed with an absolute time and
//! `TFD_TIMER_CANCEL_ON_SET`: when the host's wall clock is set (a step by
//! NTP, `date -s`, a leap second), `read` fails with `ECANCELED` and the
//! device re-evaluates the alarm (timerfd_create(2), "TFD_TIMER_CANCEL_ON_SET").
//!
//! `timerfd_create` refuses `CLOCK_TAI`, so a TAI clock's timer runs on
//! `CLOCK_REALTIME`: TAI time *t* is armed as realtime *t* − (TAI − UTC),
//! the offset taken from the two clocks read back to back (plus the
//! fallback when the kernel has none); a step (which is how the kernel
//! applies a changed TAI offset, too) re-arms it with the new offset.
//! Monotonic and boot-time clocks never step, so they need no step watch.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{
    ClockId as TimerClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags,
};
use nix::time::{clock_gettime, ClockId};

use super::{HostClock, Source, Timer, TimerEvent};

const NS_PER_S: u64 = 1_000_000_000;

/// A far-future absolute time for a timer that only watches for steps
/// (year 2286; the timer has to be armed for `TFD_TIMER_CANCEL_ON_SET` to
/// report anything).
const WATCH_ONLY_S: i64 = 10_000_000_000;

/// A Linux clock and its alarm timer.
#[derive(Debug)]
pub struct LinuxClock {
    source: Source,
    tai_fallback_s: u32,
    timer: TimerFd,
}

fn gettime(id: ClockId) -> io::Result<u64> {
    let ts = clock_gettime(id)?;
    let secs = u64::try_from(ts.tv_sec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "clock reads before 1970"))?;
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    secs.checked_mul(NS_PER_S)
        .and_then(|s| s.checked_add(nanos))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "clock beyond year 2554"))
}

fn clock_id(source: Source) -> ClockId {
    match source {
        Source::Realtime => ClockId::CLOCK_REALTIME,
        Source::Tai => ClockId::CLOCK_TAI,
        Source::Monotonic => ClockId::CLOCK_MONOTONIC,
        Source::Boottime => ClockId::CLOCK_BOOTTIME,
    }
}

fn timespec(ns: u64) -> TimeSpec {
    // At least 1 ns: an all-zero absolute time would disarm the timer.
    let ns = ns.max(1);
    let secs = i64::try_from(ns / NS_PER_S).unwrap_or(i64::MAX);
    let nanos = i64::try_from(ns % NS_PER_S).unwrap_or(0);
    TimeSpec::new(secs, nanos)
}

/// Why a host clock cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `clock_gettime` fails.
    #[error("cannot read host clock {0}")]
    Read(&'static str, #[source] io::Error),
    /// `timerfd_create` fails.
    #[error("cannot create an alarm timer (timerfd) for host clock {0}")]
    Timer(&'static str, #[source] io::Error),
}

impl LinuxClock {
    /// Open `source` with a non-blocking timerfd. Fails when the host
    /// cannot read the clock or make its timer.
    pub fn open(source: Source, tai_fallback_s: u32) -> Result<Self, OpenError> {
        gettime(clock_id(source)).map_err(|e| OpenError::Read(source.name(), e))?;
        let base = match source {
            Source::Realtime | Source::Tai => TimerClock::CLOCK_REALTIME,
            Source::Monotonic => TimerClock::CLOCK_MONOTONIC,
            Source::Boottime => TimerClock::CLOCK_BOOTTIME,
        };
        let timer = TimerFd::new(base, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .map_err(|e| OpenError::Timer(source.name(), e.into()))?;
        Ok(Self {
            source,
            tai_fallback_s,
            timer,
        })
    }

    /// The kernel's TAI − UTC in whole seconds (`CLOCK_TAI` − `CLOCK_REALTIME`,
    /// rounded; both are read within microseconds).
    pub fn kernel_tai_offset_s() -> io::Result<u64> {
        let rt = gettime(ClockId::CLOCK_REALTIME)?;
        let tai = gettime(ClockId::CLOCK_TAI)?;
        Ok(tai.saturating_sub(rt).saturating_add(NS_PER_S / 2) / NS_PER_S)
    }

    /// What this clock adds to `CLOCK_REALTIME`, in ns.
    fn offset_from_realtime(&self) -> io::Result<u64> {
        match self.source {
            Source::Tai => {
                let kernel = Self::kernel_tai_offset_s()?;
                let s = if kernel == 0 {
                    u64::from(self.tai_fallback_s)
                } else {
                    kernel
                };
                Ok(s * NS_PER_S)
            }
            _ => Ok(0),
        }
    }
}

impl HostClock for LinuxClock {
    fn now(&mut self) -> io::Result<u64> {
        match self.source {
            Source::Tai => {
                let kernel = Self::kernel_tai_offset_s()?;
                let t = gettime(ClockId::CLOCK_TAI)?;
                Ok(if kernel == 0 {
                    t.saturating_add(u64::from(self.tai_fallback_s) * NS_PER_S)
                } else {
                    t
                })
            }
            s => gettime(clock_id(s)),
        }
    }

    fn set_timer(&mut self, timer: Timer) -> io::Result<()> {
        let abs = TimerSetTimeFlags::TFD_TIMER_ABSTIME;
        let watch = abs | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET;
        match timer {
            Timer::Off => self.timer.unset()?,
            Timer::At(at) => {
                let at = at.saturating_sub(self.offset_from_realtime()?);
                let flags = if self.source.steps() { watch } else { abs };
                self.timer.set(Expiration::OneShot(timespec(at)), flags)?;
            }
            Timer::WatchSteps if self.source.steps() => {
                self.timer
                    .set(Expiration::OneShot(TimeSpec::new(WATCH_ONLY_S, 0)), watch)?;
            }
            Timer::WatchSteps => self.timer.unset()?,
        }
        Ok(())
    }

    fn timer_event(&mut self) -> io::Result<TimerEvent> {
        let mut buf = [0u8; 8];
        loop {
            return match nix::unistd::read(self.timer.as_fd().as_raw_fd(), &mut buf) {
                Ok(_) => Ok(TimerEvent::Expired),
                Err(Errno::ECANCELED) => Ok(TimerEvent::Stepped),
                Err(Errno::EAGAIN) => Ok(TimerEvent::None),
                Err(Errno::EINTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    fn timer_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.timer.as_fd())
    }

    fn name(&self) -> String {
        format!("CLOCK_{}", self.source.name().to_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
    }

    #[test]
    fn every_source_reads_a_plausible_time() {
        for s in Source::ALL {
            let mut c = LinuxClock::open(s, 37).unwrap();
            let t = c.now().unwrap();
            match s {
                // After 2020-01-01.
                Source::Realtime | Source::Tai => assert!(t > 1_577_836_800 * NS_PER_S, "{s:?}"),
                Source::Monotonic | Source::Boottime => assert!(t > 0, "{s:?}"),
            }
        }
    }

    #[test]
    fn tai_is_ahead_of_realtime_by_the_kernel_offset_or_the_fallback() {
        let mut rt = LinuxClock::open(Source::Realtime, 37).unwrap();
        let mut tai = LinuxClock::open(Source::Tai, 37).unwrap();
        let kernel = LinuxClock::kernel_tai_offset_s().unwrap();
        let expected = if kernel == 0 { 37 } else { kernel };

        let (a, b) = (rt.now().unwrap(), tai.now().unwrap());

        let diff = b.saturating_sub(a);
        assert!(
            diff >= expected * NS_PER_S && diff < (expected + 1) * NS_PER_S,
            "TAI - UTC = {diff} ns, expected {expected} s"
        );
    }

    #[test]
    fn timer_fires_at_an_absolute_time_on_every_source() {
        for s in Source::ALL {
            let mut c = LinuxClock::open(s, 37).unwrap();
            let at = c.now().unwrap() + 20_000_000;

            c.set_timer(Timer::At(at)).unwrap();

            assert!(
                wait_readable(c.timer_fd().unwrap(), Duration::from_secs(10)),
                "{s:?}"
            );
            assert_eq!(c.timer_event().unwrap(), TimerEvent::Expired, "{s:?}");
            assert!(c.now().unwrap() >= at, "{s:?} fired early");
        }
    }

    #[test]
    fn disarmed_timer_reports_nothing() {
        let mut c = LinuxClock::open(Source::Monotonic, 37).unwrap();
        let at = c.now().unwrap() + 10_000_000;
        c.set_timer(Timer::At(at)).unwrap();

        c.set_timer(Timer::Off).unwrap();

        assert!(!wait_readable(
            c.timer_fd().unwrap(),
            Duration::from_millis(50)
        ));
        assert_eq!(c.timer_event().unwrap(), TimerEvent::None);
    }

    #[test]
    fn the_farthest_alarm_a_guest_can_ask_for_is_armed_and_does_not_fire() {
        for s in Source::ALL {
            let mut c = LinuxClock::open(s, 37).unwrap();

            c.set_timer(Timer::At(u64::MAX)).unwrap();

            assert!(c.timer.get().unwrap().is_some(), "{s:?} not armed");
            assert_eq!(c.timer_event().unwrap(), TimerEvent::None, "{s:?}");
        }
    }

    #[test]
    fn watching_steps_on_a_wall_clock_arms_a_timer_that_does_not_fire() {
        let mut c = LinuxClock::open(Source::Tai, 37).unwrap();

        c.set_timer(Timer::WatchSteps).unwrap();

        assert!(c.timer.get().unwrap().is_some());
        assert_eq!(c.timer_event().unwrap(), TimerEvent::None);
    }

    #[test]
    fn watching_steps_on_a_clock_that_cannot_step_disarms() {
        let mut c = LinuxClock::open(Source::Boottime, 37).unwrap();

        c.set_timer(Timer::WatchSteps).unwrap();

        assert_eq!(c.timer.get().unwrap(), None);
    }
}
