// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One clock's alarm: when it expires, and what its timer must do.
//!
//! virtio 1.4, 5.23.6.5 "Alarm Operation". Initially the alarm time is 0 and
//! the alarm is disabled. While enabled, the alarm *expires* when
//!
//! 1. the clock progresses or steps from before the alarm time to it or past it,
//! 2. the driver sets an alarm time that is not in the future, enabling it,
//! 3. the driver enables it while the alarm time is not in the future,
//! 4. (on a device reset that retains alarms; this device does not retain them).
//!
//! It expires again at each such event until the driver disables it; it never
//! disables itself. An expiration becomes *obsolete* when the driver disables
//! the alarm or sets an alarm time, when the clock jumps back before the alarm
//! time, or when the alarm expires again: the device then drops the
//! notification it has not delivered yet (a new expiration queues a new one).
//!
//! [`Alarm`] is that state machine, pure: each transition takes the clock's
//! current reading and returns what to do with the notification
//! ([`Notify`]) and how to arm the clock's timer ([`Timer`]):
//!
//! | state (enabled, clock vs. time) | timer | on timer / step | on set / enable |
//! |---|---|---|---|
//! | disabled | off | — | evaluate |
//! | enabled, clock before time | at the time (and steps) | past: expire | past: expire |
//! | enabled, past, expired | steps only | back before time: obsolete, re-arm | past: expire again |

use serde::{Deserialize, Serialize};

use crate::host::Timer;

/// What happens to the clock's alarm notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// The alarm expired: queue a notification.
    Send,
    /// Any notification not yet delivered is obsolete: drop it.
    Cancel,
    /// Leave it as it is.
    Keep,
}

/// A transition's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The notification.
    pub notify: Notify,
    /// How to arm the timer (on the clock's scale).
    pub timer: Timer,
}

/// One clock's alarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// Alarm time in ns on the clock's scale.
    pub time: u64,
    /// Whether it is enabled.
    pub enabled: bool,
    /// The clock has been at or past `time` since the last expiration, so
    /// being past it is no new event.
    pub expired: bool,
}

impl Alarm {
    /// `SET_ALARM`: a new time and enabled flag; a time not in the future
    /// expires at once when enabled.
    pub fn set(&mut self, time: u64, enabled: bool, now: u64) -> Outcome {
        self.time = time;
        self.enabled = enabled;
        self.expired = false;
        self.evaluate(now, true)
    }

    /// `SET_ALARM_ENABLED`: keep the time; enabling while the time is not in
    /// the future expires at once (again, if it had expired before).
    pub fn set_enabled(&mut self, enabled: bool, now: u64) -> Outcome {
        self.enabled = enabled;
        self.expired = false;
        self.evaluate(now, true)
    }

    /// The timer fired, or the clock was stepped: `now` is the new reading.
    pub fn clock_changed(&mut self, now: u64) -> Outcome {
        self.evaluate(now, false)
    }

    /// Whether the alarm time is reached (the alarm is due, enabled or not).
    pub fn due(&self, now: u64) -> bool {
        now >= self.time
    }

    fn evaluate(&mut self, now: u64, driver_set: bool) -> Outcome {
        if !self.enabled {
            self.expired = false;
            return Outcome {
                notify: Notify::Cancel,
                timer: Timer::Off,
            };
        }
        if self.due(now) {
            let notify = if self.expired {
                Notify::Keep
            } else {
                self.expired = true;
                Notify::Send
            };
            return Outcome {
                notify,
                timer: Timer::WatchSteps,
            };
        }
        // Before the alarm time: an expiration still queued is obsolete when
        // the clock went back before it; a fresh setting already cancelled it.
        let notify = if self.expired && !driver_set {
            Notify::Cancel
        } else {
            Notify::Keep
        };
        self.expired = false;
        Outcome {
            notify,
            timer: Timer::At(self.time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_000;

    fn armed(time: u64, now: u64) -> Alarm {
        let mut a = Alarm::default();
        assert_eq!(a.set(time, true, now).timer, Timer::At(time));
        a
    }

    #[test]
    fn initial_alarm_is_disabled_at_time_zero() {
        assert_eq!(
            Alarm::default(),
            Alarm {
                time: 0,
                enabled: false,
                expired: false
            }
        );
    }

    #[test]
    fn future_alarm_arms_the_timer_and_does_not_expire() {
        let mut a = Alarm::default();

        let o = a.set(T, true, T - 1);

        assert_eq!(
            o,
            Outcome {
                notify: Notify::Keep,
                timer: Timer::At(T)
            }
        );
    }

    #[test]
    fn alarm_set_in_the_past_expires_at_once() {
        let mut a = Alarm::default();

        let o = a.set(T, true, T + 5);

        assert_eq!(
            o,
            Outcome {
                notify: Notify::Send,
                timer: Timer::WatchSteps
            }
        );
    }

    #[test]
    fn alarm_set_exactly_now_expires() {
        let mut a = Alarm::default();

        assert_eq!(a.set(T, true, T).notify, Notify::Send);
    }

    #[test]
    fn disabled_alarm_in_the_past_does_not_expire_and_disarms() {
        let mut a = Alarm::default();

        let o = a.set(T, false, T + 5);

        assert_eq!(
            o,
            Outcome {
                notify: Notify::Cancel,
                timer: Timer::Off
            }
        );
    }

    #[test]
    fn timer_reaching_the_time_expires_once() {
        let mut a = armed(T, 0);

        assert_eq!(a.clock_changed(T).notify, Notify::Send);
        assert_eq!(a.clock_changed(T + 1).notify, Notify::Keep);
    }

    #[test]
    fn early_timer_wake_up_re_arms_without_expiring() {
        let mut a = armed(T, 0);

        let o = a.clock_changed(T - 1);

        assert_eq!(
            o,
            Outcome {
                notify: Notify::Keep,
                timer: Timer::At(T)
            }
        );
    }

    #[test]
    fn expired_alarm_re_fires_after_the_clock_steps_back_and_passes_again() {
        let mut a = armed(T, 0);
        assert_eq!(a.clock_changed(T).notify, Notify::Send);

        let back = a.clock_changed(T - 100);
        let again = a.clock_changed(T);

        assert_eq!(
            back,
            Outcome {
                notify: Notify::Cancel,
                timer: Timer::At(T)
            }
        );
        assert_eq!(again.notify, Notify::Send);
    }

    #[test]
    fn step_forward_past_the_alarm_expires() {
        let mut a = armed(T, 0);

        assert_eq!(a.clock_changed(T * 50).notify, Notify::Send);
    }

    #[test]
    fn step_between_two_times_past_the_alarm_is_no_new_expiry() {
        let mut a = armed(T, 0);
        a.clock_changed(T);

        assert_eq!(a.clock_changed(T * 3).notify, Notify::Keep);
    }

    #[test]
    fn enabling_again_while_past_expires_again() {
        let mut a = armed(T, 0);
        a.clock_changed(T);

        assert_eq!(a.set_enabled(true, T + 1).notify, Notify::Send);
    }

    #[test]
    fn disabling_cancels_and_disarms_but_keeps_the_time() {
        let mut a = armed(T, 0);

        let o = a.set_enabled(false, 10);

        assert_eq!(
            o,
            Outcome {
                notify: Notify::Cancel,
                timer: Timer::Off
            }
        );
        assert_eq!(a.time, T);
        assert!(!a.enabled);
    }

    #[test]
    fn enabling_a_future_alarm_arms_it() {
        let mut a = Alarm::default();
        a.set(T, false, 0);

        assert_eq!(a.set_enabled(true, 0).timer, Timer::At(T));
    }

    #[test]
    fn setting_a_new_future_time_after_expiry_re_arms() {
        let mut a = armed(T, 0);
        a.clock_changed(T);

        let o = a.set(T * 2, true, T + 1);

        assert_eq!(
            o,
            Outcome {
                notify: Notify::Keep,
                timer: Timer::At(T * 2)
            }
        );
        assert!(!a.expired);
    }
}
