// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-vsock` and its validation.

use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;
use vhost_device_common::cli::CommonArgs;

/// Smallest and largest per-connection receive buffer.
pub const BUFFER_RANGE: std::ops::RangeInclusive<u32> = 4096..=(16 << 20);

/// vhost-user virtio-vsock daemon: guest AF_VSOCK stream sockets whose host
/// ends are Unix sockets (the hybrid convention).
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the vsock device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the vsock device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// The guest's context id (3 or more)
    #[arg(long, value_name = "CID")]
    pub guest_cid: u64,

    /// Unix socket for host programs: connect and write "CONNECT <port>\n" to
    /// reach guest port <port>; guest connections to CID 2 port P go to PATH_P
    #[arg(long, value_name = "PATH")]
    pub uds_path: PathBuf,

    /// Receive buffer per connection, in bytes: how much the guest may send
    /// ahead of a slow host reader (the credit it is given)
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024)]
    pub buffer_size: u32,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Guest CID.
    pub guest_cid: u64,
    /// Host Unix socket path.
    pub uds_path: PathBuf,
    /// Per-connection receive buffer.
    pub buffer_size: u32,
}

/// Invalid options.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// Reserved CID.
    #[error("--guest-cid {0} is reserved (0 to 2, and 0xffffffff); use 3 or more")]
    ReservedCid(u64),
    /// Buffer out of range.
    #[error("--buffer-size must be between {} and {} bytes", BUFFER_RANGE.start(), BUFFER_RANGE.end())]
    BufferSize,
}

impl TryFrom<DeviceArgs> for Config {
    type Error = ArgsError;

    fn try_from(a: DeviceArgs) -> Result<Self, ArgsError> {
        if a.guest_cid < 3 || a.guest_cid >= u64::from(u32::MAX) {
            return Err(ArgsError::ReservedCid(a.guest_cid));
        }
        if !BUFFER_RANGE.contains(&a.buffer_size) {
            return Err(ArgsError::BufferSize);
        }
        Ok(Self {
            guest_cid: a.guest_cid,
            uds_path: a.uds_path,
            buffer_size: a.buffer_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let a = Args::try_parse_from(
            [
                "vhost-device-vsock",
                "--socket-path",
                "/tmp/s",
                "--uds-path",
                "/tmp/v",
            ]
            .iter()
            .chain(extra),
        )
        .map_err(|e| e.to_string())?;
        Config::try_from(a.device).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_cid_is_accepted() {
        assert_eq!(parse(&["--guest-cid", "3"]).unwrap().guest_cid, 3);
    }

    #[test]
    fn reserved_cids_are_refused() {
        for cid in ["0", "1", "2", "4294967295"] {
            assert!(
                parse(&["--guest-cid", cid])
                    .unwrap_err()
                    .contains("reserved"),
                "{cid}"
            );
        }
    }

    #[test]
    fn tiny_buffer_is_refused() {
        assert!(parse(&["--guest-cid", "3", "--buffer-size", "10"]).is_err());
    }
}
