// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-vsock`: a vhost-user virtio-vsock daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_vsock::args::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-vsock", vhost_device_vsock::run(args))
}
