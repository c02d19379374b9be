// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-testdev`: the runtime's test device.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_testdev::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-testdev", vhost_device_testdev::run(args))
}
