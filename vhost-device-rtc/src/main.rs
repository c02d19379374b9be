// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-rtc`: a vhost-user virtio RTC daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_rtc::args::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-rtc", vhost_device_rtc::run(args))
}
