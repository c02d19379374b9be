// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-rng: a virtio entropy device (virtio 1.3, 5.4 "Entropy Device").
//!
//! The device has one request queue. Each request is a device-writable buffer,
//! which the device fills with entropy from the host source (by default
//! `/dev/urandom`) and returns with the number of bytes written. The daemon caps
//! every request at [`request::MAX_REQUEST_BYTES`] and can rate-limit each device
//! (`--max-bytes` per `--period`); a request over quota is held (taken off the ring,
//! kept in order, saved with the migration state) and a
//! timer in the worker's epoll resumes it — the worker never sleeps.

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use vhost_device_common::daemon::{self, DeviceInfo};

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-rng",
    kind: "rng",
};

/// Run the daemon until SIGTERM/SIGINT or a host failure.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    daemon::run(&common, &INFO, move || {
        let config = args::Config::try_from(device)?;
        config.source.check()?;
        Ok(move |index| device::RngDevice::new(&config, index).map_err(Into::into))
    })
}
