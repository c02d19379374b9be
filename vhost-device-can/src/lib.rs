// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-can: a virtio CAN controller (virtio 1.4, 5.20 "CAN Device";
//! device id 36).
//!
//! Each device is one CAN controller on one bus: a SocketCAN interface of the
//! host (`--device-list can0,…`, one per socket) or the software bus
//! (`--bus PATH`), which devices of one or several daemons share over a Unix
//! socket on hosts without kernel CAN. The device offers classic CAN, CAN FD
//! (when the bus carries it), RTR frames and late TX acknowledgement; it
//! reports bus-off through its config space and a config-change
//! notification. See [`device`] for the request flow and [`host::bus`] for
//! the software bus.

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use vhost_device_common::daemon::{self, DeviceInfo};

/// The virtio device id (virtio 1.4, 5 "Device Types").
pub const VIRTIO_DEVICE_ID: u32 = virtio::VIRTIO_ID_CAN;

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-can",
    kind: "can",
};

/// Run the daemon until SIGTERM/SIGINT or a host failure.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    let sockets = common.socket_count;
    let result = daemon::run(&common, &INFO, move || {
        let config = args::Config::new(device, sockets)?;
        config.check()?;
        Ok(move |index| {
            let host = config.host(index).open(config.allow_fd)?;
            Ok(device::CanDevice::new(host, config.rx_fifo)?)
        })
    });
    // The bus moves to another member when this process ends.
    host::bus::remove_hub_sockets();
    result
}
