// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-rtc: a virtio RTC device (virtio 1.4, 5.23 "RTC Device";
//! device id 17).
//!
//! The device offers host clocks to the guest: the guest reads them on the
//! requestq, and may set one alarm per clock, whose expiry the device
//! reports on the alarmq. A Linux guest (`virtio_rtc`, 6.16) makes a PTP
//! clock (`/dev/ptpN`) of every clock and an RTC (`/dev/rtcN`, with alarms)
//! of the first UTC-smeared clock.
//!
//! - [`args`]: the command line (`--clock TYPE[:SOURCE]`, …) and its checks.
//! - [`virtio`]: the wire structs and codes.
//! - [`request`]: parsing requests and writing responses.
//! - [`device`]: the queues, the alarms and their timers, the migration state.
//! - [`host`]: the host clocks (`clock_gettime`, timerfd) and a scripted mock.

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use vhost_device_common::daemon::{self, DeviceInfo};

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-rtc",
    kind: "rtc",
};

/// Why a configured clock cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("clock {index} ({kind:?} from {source_name})")]
pub struct ClockError {
    /// Its clock id.
    pub index: usize,
    /// Its type.
    pub kind: virtio::ClockType,
    /// Its host clock.
    pub source_name: &'static str,
    /// Why.
    #[source]
    pub source: host::linux::OpenError,
}

/// Run the daemon until SIGTERM/SIGINT or a host failure.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    daemon::run(&common, &INFO, move || {
        let config = args::Config::try_from(device)?;
        // Every clock must be usable before a socket is made.
        for (index, c) in config.clocks.iter().enumerate() {
            c.host.open().map_err(|source| ClockError {
                index,
                kind: c.clock_type,
                source_name: c.host.source.name(),
                source,
            })?;
        }
        Ok(move |_index| device::RtcDevice::new(&config))
    })
}
