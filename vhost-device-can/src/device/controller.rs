// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The CAN controller's mode (virtio 1.4, 5.20.6.1 "Controller Mode" and
//! 5.20.6.4 "BusOff Indication"), as a pure state machine: the device asks
//! it what a control request or a bus-off means and carries out the
//! [`Effects`].
//!
//! "Initially the CAN controller is in the STOPPED state." Transitions:
//!
//! | in \ event | START | STOP | bus-off |
//! |---|---|---|---|
//! | STOPPED | STARTED, `BUSOFF` cleared before the request is used, no notification (5.20.6.1); NOT_OK and still STOPPED when the host link is down | STOPPED, OK | ignored (not on the bus) |
//! | STARTED | STARTED, OK | STOPPED: pending TX complete NOT_OK, undelivered RX dropped | STOPPED, `BUSOFF` set, config-change notification, pending TX NOT_OK (5.20.6.4) |
//!
//! While STOPPED, TX requests are answered NOT_OK without being sent and
//! received frames are not delivered. Control requests are handled in order
//! and each is used only once its transition is complete; ours complete at
//! once.

use serde::{Deserialize, Serialize};

use crate::request::Command;
use crate::virtio::{RESULT_NOT_OK, RESULT_OK, STATUS_BUSOFF};

/// Controller mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Not on the bus.
    #[default]
    Stopped,
    /// On the bus.
    Started,
}

/// What a transition asks the device to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// The control request's result.
    pub result: u8,
    /// Complete every pending TX request with NOT_OK.
    pub cancel_tx: bool,
    /// Drop received frames not yet delivered.
    pub flush_rx: bool,
    /// Tell the bus the controller went online (`Some(true)`) or offline.
    pub online: Option<bool>,
    /// Send a config-change notification.
    pub config_changed: bool,
}

/// The controller of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controller {
    mode: Mode,
    busoff: bool,
}

impl Controller {
    /// A controller in `mode`, with the bus-off bit as given (a migrated one).
    pub fn restored(mode: Mode, busoff: bool) -> Self {
        Self { mode, busoff }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether it is on the bus.
    pub fn started(&self) -> bool {
        self.mode == Mode::Started
    }

    /// Whether the last stop was a bus-off the driver has not restarted from.
    pub fn busoff(&self) -> bool {
        self.busoff
    }

    /// The config `status` field.
    pub fn status(&self) -> u16 {
        if self.busoff {
            STATUS_BUSOFF
        } else {
            0
        }
    }

    /// A control request; `link_up` says whether the host can transmit.
    pub fn command(&mut self, cmd: Command, link_up: bool) -> Effects {
        match (cmd, self.mode) {
            (Command::Start, Mode::Started) => Effects {
                result: RESULT_OK,
                ..Effects::default()
            },
            (Command::Start, Mode::Stopped) if !link_up => Effects {
                result: RESULT_NOT_OK,
                ..Effects::default()
            },
            (Command::Start, Mode::Stopped) => {
                self.mode = Mode::Started;
                self.busoff = false;
                Effects {
                    result: RESULT_OK,
                    online: Some(true),
                    ..Effects::default()
                }
            }
            (Command::Stop, Mode::Started) => {
                self.mode = Mode::Stopped;
                Effects {
                    result: RESULT_OK,
                    cancel_tx: true,
                    flush_rx: true,
                    online: Some(false),
                    ..Effects::default()
                }
            }
            (Command::Stop, Mode::Stopped) => Effects {
                result: RESULT_OK,
                cancel_tx: true,
                ..Effects::default()
            },
        }
    }

    /// The host reports bus-off (or its link went down).
    pub fn bus_off(&mut self) -> Effects {
        if self.mode == Mode::Stopped {
            return Effects {
                result: RESULT_OK,
                ..Effects::default()
            };
        }
        self.mode = Mode::Stopped;
        self.busoff = true;
        Effects {
            result: RESULT_OK,
            cancel_tx: true,
            flush_rx: true,
            online: Some(false),
            config_changed: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> Controller {
        let mut c = Controller::default();
        c.command(Command::Start, true);
        c
    }

    #[test]
    fn controller_starts_stopped_with_status_zero() {
        let c = Controller::default();
        assert_eq!((c.mode(), c.status()), (Mode::Stopped, 0));
    }

    #[test]
    fn start_goes_online() {
        let mut c = Controller::default();
        let e = c.command(Command::Start, true);
        assert_eq!((e.result, e.online), (RESULT_OK, Some(true)));
        assert!(c.started());
    }

    #[test]
    fn start_with_the_link_down_fails_and_stays_stopped() {
        let mut c = Controller::default();
        let e = c.command(Command::Start, false);
        assert_eq!((e.result, e.online), (RESULT_NOT_OK, None));
        assert!(!c.started());
    }

    #[test]
    fn start_while_started_is_ok_and_changes_nothing() {
        let mut c = started();
        let e = c.command(Command::Start, true);
        assert_eq!(e, Effects::default());
        assert!(c.started());
    }

    #[test]
    fn stop_cancels_pending_tx_and_goes_offline() {
        let mut c = started();
        let e = c.command(Command::Stop, true);
        assert_eq!(
            e,
            Effects {
                result: RESULT_OK,
                cancel_tx: true,
                flush_rx: true,
                online: Some(false),
                config_changed: false
            }
        );
        assert!(!c.started());
    }

    #[test]
    fn stop_while_stopped_is_ok() {
        let mut c = Controller::default();
        assert_eq!(c.command(Command::Stop, true).result, RESULT_OK);
        assert!(!c.started());
    }

    #[test]
    fn bus_off_stops_sets_the_status_bit_and_notifies() {
        let mut c = started();
        let e = c.bus_off();
        assert!(e.cancel_tx && e.config_changed && e.flush_rx);
        assert_eq!(e.online, Some(false));
        assert_eq!((c.mode(), c.status()), (Mode::Stopped, STATUS_BUSOFF));
    }

    #[test]
    fn bus_off_while_stopped_is_ignored() {
        let mut c = Controller::default();
        assert!(!c.bus_off().config_changed);
        assert_eq!(c.status(), 0);
    }

    #[test]
    fn successful_start_clears_bus_off_without_a_notification() {
        let mut c = started();
        c.bus_off();
        let e = c.command(Command::Start, true);
        assert!(!e.config_changed);
        assert_eq!(c.status(), 0);
        assert!(c.started());
    }

    #[test]
    fn failed_start_keeps_bus_off() {
        let mut c = started();
        c.bus_off();
        c.command(Command::Start, false);
        assert_eq!(c.status(), STATUS_BUSOFF);
    }

    #[test]
    fn stop_after_bus_off_keeps_the_bit() {
        let mut c = started();
        c.bus_off();
        c.command(Command::Stop, true);
        assert_eq!(c.status(), STATUS_BUSOFF);
    }
}
