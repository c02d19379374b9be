// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-gpio` and its validation.

use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;
use vhost_device_common::cli::{CommonArgs, SocketSource};

use crate::host::ChipSpec;

/// vhost-user virtio-gpio daemon: serves host GPIO chips (libgpiod) or
/// simulated ones to guests.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the GPIO device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the GPIO device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// The chip of each device, one per socket, in socket order:
    /// /dev/gpiochipN, N, a chip label, or sim:LINES[:NAME,NAME,...] for a
    /// simulated chip (repeat the option or give several values)
    #[arg(
        short = 'l',
        long,
        value_name = "CHIP",
        num_args = 1..
    )]
    pub device_list: Vec<ChipSpec>,

    /// Control socket of the simulated chips (default: the device's socket
    /// path followed by `.sim`; with --socket-count N > 1, PATH0 … PATH{N-1})
    #[arg(long, value_name = "PATH")]
    pub sim_control: Option<PathBuf>,
}

/// Invalid options.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// Not one chip per socket.
    #[error("--device-list names {chips} chip(s) but there are {sockets} socket(s) (--socket-count); give one chip per device")]
    CountMismatch {
        /// Chips named.
        chips: usize,
        /// Sockets served.
        sockets: usize,
    },
    /// The same chip twice.
    #[error("chip {0} is named twice in --device-list; a chip can serve one device")]
    Duplicate(String),
    /// No chip named.
    #[error("--device-list CHIP is required (see --help)")]
    NoDevices,
    /// A simulated chip without a control path.
    #[error("a simulated chip needs --sim-control PATH with --socket-fd")]
    NoControlPath,
}

/// One device's chip, with where its simulated inputs are driven from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The chip.
    pub chip: ChipSpec,
    /// Control socket (simulated chips only).
    pub control: Option<PathBuf>,
}

/// Validated configuration: one entry per socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Devices in socket order.
    pub devices: Vec<DeviceConfig>,
}

fn suffixed(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Config {
    /// Check `args` against the sockets the daemon serves. Duplicates are
    /// found here by spelling; `lib::run` also compares the character
    /// devices the chips resolve to.
    pub fn new(args: DeviceArgs, sockets: Option<&SocketSource>) -> Result<Self, ArgsError> {
        if args.device_list.is_empty() {
            return Err(ArgsError::NoDevices);
        }
        let count = match sockets {
            Some(SocketSource::Paths(p)) => p.len(),
            Some(SocketSource::Fds(f)) => f.len(),
            None => args.device_list.len(),
        };
        if count != args.device_list.len() {
            return Err(ArgsError::CountMismatch {
                chips: args.device_list.len(),
                sockets: count,
            });
        }
        let mut seen = Vec::new();
        for chip in &args.device_list {
            if !matches!(chip, ChipSpec::Sim(_)) {
                if seen.contains(&chip) {
                    return Err(ArgsError::Duplicate(format!("{chip:?}")));
                }
                seen.push(chip);
            }
        }
        let devices = args
            .device_list
            .into_iter()
            .enumerate()
            .map(|(i, chip)| {
                let control = match (&chip, &args.sim_control, sockets) {
                    (ChipSpec::Sim(_), Some(p), _) if count > 1 => {
                        Some(suffixed(p, &i.to_string()))
                    }
                    (ChipSpec::Sim(_), Some(p), _) => Some(p.clone()),
                    (ChipSpec::Sim(_), None, Some(SocketSource::Paths(paths))) => {
                        paths.get(i).map(|p| suffixed(p, ".sim"))
                    }
                    (ChipSpec::Sim(_), None, _) => return Err(ArgsError::NoControlPath),
                    _ => None,
                };
                Ok(DeviceConfig { chip, control })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { devices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["vhost-device-gpio"].iter().chain(args))
    }

    fn config(args: &[&str]) -> Result<Config, ArgsError> {
        let a = parse(args).unwrap();
        Config::new(a.device, a.common.sockets().as_ref())
    }

    #[test]
    fn sim_chip_gets_a_control_socket_next_to_its_socket() {
        let c = config(&["--socket-path", "/tmp/g.sock", "-l", "sim:8"]).unwrap();
        assert_eq!(c.devices[0].control, Some("/tmp/g.sock.sim".into()));
    }

    #[test]
    fn several_devices_take_one_chip_each_in_socket_order() {
        let c = config(&[
            "--socket-path",
            "/tmp/g.sock",
            "--socket-count",
            "2",
            "--device-list",
            "/dev/gpiochip1",
            "sim:4:a,b",
        ])
        .unwrap();
        assert_eq!(c.devices[0].chip, ChipSpec::Path("/dev/gpiochip1".into()));
        assert_eq!(c.devices[0].control, None);
        assert_eq!(c.devices[1].control, Some("/tmp/g.sock1.sim".into()));
    }

    #[test]
    fn repeated_option_appends() {
        let c = config(&[
            "--socket-path",
            "/tmp/g.sock",
            "--socket-count",
            "2",
            "-l",
            "sim:1",
            "-l",
            "sim:2",
        ])
        .unwrap();
        assert_eq!(c.devices.len(), 2);
    }

    #[test]
    fn explicit_control_path_is_suffixed_for_several_devices() {
        let c = config(&[
            "--socket-path",
            "/tmp/g.sock",
            "--socket-count",
            "2",
            "--sim-control",
            "/run/ctl",
            "-l",
            "sim:1",
            "sim:1",
        ])
        .unwrap();
        assert_eq!(c.devices[1].control, Some("/run/ctl1".into()));
    }

    #[test]
    fn chip_count_must_match_socket_count() {
        assert_eq!(
            config(&["--socket-path", "/tmp/g.sock", "-l", "0", "1"]),
            Err(ArgsError::CountMismatch {
                chips: 2,
                sockets: 1
            })
        );
    }

    #[test]
    fn the_same_chip_twice_is_refused() {
        assert!(matches!(
            config(&["--socket-path", "/s", "--socket-count", "2", "-l", "3", "3"]),
            Err(ArgsError::Duplicate(_))
        ));
    }

    #[test]
    fn sim_chip_with_socket_fd_needs_a_control_path() {
        assert_eq!(
            config(&["--socket-fd", "3", "-l", "sim:2"]),
            Err(ArgsError::NoControlPath)
        );
    }

    #[test]
    fn device_list_is_required_and_checked() {
        assert_eq!(config(&["--socket-path", "/s"]), Err(ArgsError::NoDevices));
        assert!(parse(&["--socket-path", "/s", "-l", "sim:0"]).is_err());
    }
}
