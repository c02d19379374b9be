// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-can` and its validation.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};
use thiserror::Error;
use vhost_device_common::cli::CommonArgs;

use crate::device::DEFAULT_RX_FIFO;
use crate::host::HostConfig;

/// Largest `--rx-fifo`.
pub const MAX_RX_FIFO: usize = 65_536;

/// vhost-user virtio-can daemon: a CAN controller on a SocketCAN interface or
/// on a software bus.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the CAN device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the CAN device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(group(ArgGroup::new("bus_kind").args(["device_list", "bus"])))]
pub struct DeviceArgs {
    /// SocketCAN interfaces, one per socket, in socket order (can0,vcan1)
    #[arg(long, value_name = "IF[,IF...]", value_delimiter = ',')]
    pub device_list: Vec<String>,

    /// Join the software CAN bus at PATH (a Unix socket; the first daemon
    /// on a path becomes its hub) instead of a SocketCAN interface; every
    /// device of this daemon joins it
    #[arg(long, value_name = "PATH", conflicts_with = "device_list")]
    pub bus: Option<PathBuf>,

    /// Do not offer CAN FD, even where the bus carries it
    #[arg(long)]
    pub no_fd: bool,

    /// Received frames kept per device while the driver has no rx buffer
    /// (the oldest is dropped beyond)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RX_FIFO)]
    pub rx_fifo: usize,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    hosts: Vec<HostConfig>,
    /// Offer CAN FD where the bus carries it.
    pub allow_fd: bool,
    /// RX FIFO size.
    pub rx_fifo: usize,
}

/// Invalid options.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// Not one interface per socket.
    #[error(
        "--device-list names {names} interface(s) for {sockets} socket(s); give one per socket"
    )]
    CountMismatch {
        /// Interfaces named.
        names: usize,
        /// Sockets served.
        sockets: u32,
    },
    /// Not an interface name.
    #[error("'{0}' is not an interface name (1 to 15 bytes, no '/', ':' or white space)")]
    BadName(String),
    /// Neither a bus nor interfaces.
    #[error("one of --device-list IF[,IF...] or --bus PATH is required (see --help)")]
    NoBus,
    /// FIFO size out of range.
    #[error("--rx-fifo must be between 1 and {MAX_RX_FIFO}, got {0}")]
    BadFifo(usize),
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

impl Config {
    /// Validate `args` for a daemon serving `sockets` sockets.
    pub fn new(args: DeviceArgs, sockets: u32) -> Result<Self, ArgsError> {
        if args.rx_fifo == 0 || args.rx_fifo > MAX_RX_FIFO {
            return Err(ArgsError::BadFifo(args.rx_fifo));
        }
        let hosts = match args.bus {
            Some(path) => vec![HostConfig::Bus(path)],
            None if args.device_list.is_empty() => return Err(ArgsError::NoBus),
            None => {
                if let Some(bad) = args.device_list.iter().find(|n| !valid_ifname(n)) {
                    return Err(ArgsError::BadName(bad.clone()));
                }
                if args.device_list.len() != sockets as usize {
                    return Err(ArgsError::CountMismatch {
                        names: args.device_list.len(),
                        sockets,
                    });
                }
                args.device_list
                    .into_iter()
                    .map(HostConfig::Interface)
                    .collect()
            }
        };
        Ok(Self {
            hosts,
            allow_fd: !args.no_fd,
            rx_fifo: args.rx_fifo,
        })
    }

    /// The bus of device `index`.
    pub fn host(&self, index: u32) -> &HostConfig {
        match self.hosts.as_slice() {
            [only] => only,
            hosts => &hosts[(index as usize).min(hosts.len() - 1)],
        }
    }

    /// Check every interface (or the bus) before any socket is created.
    pub fn check(&self) -> std::io::Result<()> {
        self.hosts.iter().try_for_each(HostConfig::check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(
            ["vhost-device-can", "--socket-path", "/tmp/s"]
                .iter()
                .chain(args),
        )
    }

    fn config(args: &[&str], sockets: u32) -> Result<Config, ArgsError> {
        Config::new(parse(args).unwrap().device, sockets)
    }

    #[test]
    fn one_interface_per_socket_in_order() {
        let c = config(&["--device-list", "can0,vcan1"], 2).unwrap();
        assert_eq!(c.host(0), &HostConfig::Interface("can0".into()));
        assert_eq!(c.host(1), &HostConfig::Interface("vcan1".into()));
        assert!(c.allow_fd);
        assert_eq!(c.rx_fifo, DEFAULT_RX_FIFO);
    }

    #[test]
    fn interface_count_must_match_the_sockets() {
        assert_eq!(
            config(&["--device-list", "can0"], 2),
            Err(ArgsError::CountMismatch {
                names: 1,
                sockets: 2
            })
        );
    }

    #[test]
    fn every_device_of_a_daemon_joins_its_bus() {
        let c = config(&["--bus", "/run/canbus", "--no-fd"], 3).unwrap();
        for i in 0..3 {
            assert_eq!(c.host(i), &HostConfig::Bus("/run/canbus".into()));
        }
        assert!(!c.allow_fd);
    }

    #[test]
    fn a_bus_or_interfaces_is_required_not_both() {
        assert_eq!(config(&[], 1), Err(ArgsError::NoBus));
        assert!(parse(&["--bus", "/b", "--device-list", "can0"]).is_err());
    }

    #[test]
    fn bad_interface_names_are_refused() {
        for bad in ["", "a/b", "0123456789abcdef", "can 0"] {
            assert_eq!(
                config(&["--device-list", bad], 1),
                Err(ArgsError::BadName(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rx_fifo_is_bounded() {
        assert_eq!(
            config(&["--bus", "/b", "--rx-fifo", "0"], 1),
            Err(ArgsError::BadFifo(0))
        );
        assert!(config(&["--bus", "/b", "--rx-fifo", "65537"], 1).is_err());
        assert_eq!(
            config(&["--bus", "/b", "--rx-fifo", "4"], 1)
                .unwrap()
                .rx_fifo,
            4
        );
    }
}
