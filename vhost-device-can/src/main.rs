// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-can`: a vhost-user virtio-can daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_can::args::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-can", vhost_device_can::run(args))
}
