// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-rng`: a vhost-user virtio-rng daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_rng::args::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-rng", vhost_device_rng::run(args))
}
