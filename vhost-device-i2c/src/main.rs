// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-i2c`: a vhost-user virtio-i2c daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_i2c::args::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-i2c", vhost_device_i2c::run(args))
}
