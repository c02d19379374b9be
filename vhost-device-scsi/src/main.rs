// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-scsi`: a vhost-user virtio-scsi daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vhost_device_scsi::args::Args::parse();
    vhost_device_common::daemon::exit_code("vhost-device-scsi", vhost_device_scsi::run(args))
}
