// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-vsock: virtio socket device (virtio 1.3, 5.10), hybrid style —
//! guest `AF_VSOCK` stream sockets whose host ends are Unix sockets.
//!
//! - [`virtio`]: wire format; [`request`]: packet checks and building.
//! - [`device`]: queues, connections and credit ([`device::conn`]).
//! - [`host`]: the Unix-socket conventions.

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use std::sync::Arc;

use vhost_device_common::daemon::{self, DeviceInfo};

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-vsock",
    kind: "vsock",
};

/// Run the daemon until SIGTERM/SIGINT or a host failure.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    let sockets = common.socket_count;
    daemon::run(&common, &INFO, move || {
        if sockets > 1 {
            return Err("--socket-count must be 1 for vsock: one guest per --uds-path".into());
        }
        let config = args::Config::try_from(device)?;
        // Bound once for the life of the process, like the vhost-user socket;
        // the file is removed when the daemon ends.
        let listener = Arc::new(host::UdsListener::bind(&config.uds_path)?);
        Ok(move |_index| Ok(device::VsockDevice::new(&config, listener.clone())))
    })
}
