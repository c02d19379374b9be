// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-scsi: a virtio SCSI host (virtio 1.3, 5.6) with one target
//! whose LUNs are image files (or memory).
//!
//! - [`virtio`]: the virtio-scsi wire format and config space.
//! - [`request`]: virtio-scsi requests; [`request::cdb`] emulates the SCSI
//!   commands of a direct-access block device, [`request::sense`] the sense data.
//! - [`host`]: where blocks live (image file, memory).
//! - [`device`]: the queues — control, event, and one worker thread per request queue.

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use std::sync::Arc;

use vhost_device_common::daemon::{self, DeviceInfo};

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-scsi",
    kind: "scsi",
};

/// Run the daemon until SIGTERM/SIGINT or a host failure.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    let sockets = common.socket_count;
    daemon::run(&common, &INFO, move || {
        if sockets > 1 {
            return Err(
                "--socket-count must be 1: the LUNs belong to one target; run one daemon per guest"
                    .into(),
            );
        }
        let mut config = args::Config::try_from(device)?;
        if config.engine == args::Engine::IoUring && !host::uring::available() {
            log::warn!(
                "io_uring is not available here (kernel or seccomp policy): using --engine sync"
            );
            config.engine = args::Engine::Sync;
        }
        // LUNs are opened once: their data outlives any one front end.
        let target = Arc::new(device::open_target(&config)?);
        Ok(move |_index| Ok(device::ScsiDevice::new(target.clone(), &config)?))
    })
}
