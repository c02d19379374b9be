// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-gpio`: a vhost-user virtio-gpio daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_gpio::args::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-gpio", vhost_device_gpio::run(args))
}
