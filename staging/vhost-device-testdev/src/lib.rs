// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-testdev: a small virtio device whose only purpose is to drive
//! every floor of the runtime through a real daemon binary — held requests,
//! live-migration state, and requests to the front end. It is not a device of
//! any specification; device crates copy none of it.
//!
//! One request queue. A request is a device-readable command, optionally
//! followed by a device-writable reply buffer (see [`request`]):
//!
//! | command | answer |
//! |---|---|
//! | `echo <bytes>` | the bytes, at once |
//! | `hold` | nothing yet: the request is held until a `release` |
//! | `release` | every held request completes (oldest first, used length 0), then this one, with the count as text |
//! | `config` | the config space's generation counter goes up by one and the front end is sent a config-change message; the answer is `ok` or the error |
//! | `map` | a page holding [`device::SHMEM_TEXT`] is mapped at offset 0 of shared memory region 0 (`SHMEM_MAP`); `ok` or the error |
//! | `share` | the shared object [`device::SHARED_UUID`] is added to the front end's table; `ok` or the error |
//!
//! Config space: one little-endian `u32`, the generation. One shared memory
//! region of [`device::SHMEM_SIZE`] bytes. The device state
//! carries the generation and the held requests, so a `release` on a
//! migration destination completes requests held on the source.

pub mod device;
pub mod request;

use clap::Parser;
use vhost_device_common::cli::CommonArgs;
use vhost_device_common::daemon::{self, DeviceInfo};

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-testdev",
    kind: "test",
};

/// Command line: only the options every daemon shares.
#[derive(Debug, Parser)]
#[command(version, about = "vhost-user test device for the vhost-device runtime")]
pub struct Args {
    /// Socket and logging options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(args: Args) -> Result<(), daemon::Error> {
    daemon::run(&args.common, &INFO, || {
        Ok(|_index| Ok(device::TestDevice::default()))
    })
}
