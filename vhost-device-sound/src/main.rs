// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-sound`: a vhost-user virtio-sound daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_sound::args::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-sound", vhost_device_sound::run(args))
}
