// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-i2c` and its validation.
//!
//! `--device-list BUS:ADDR[:ADDR…][,BUS:ADDR[:ADDR…]…]` says which I2C
//! clients one guest may reach, and on which host adapters:
//!
//! - `BUS` is an adapter number (`3` for `/dev/i2c-3`), the name of an adapter
//!   as in `/sys/bus/i2c/devices/i2c-N/name` (it must match exactly one), or
//!   `sim`, a simulated adapter private to that device (24c02-style EEPROMs at
//!   0x50–0x57, register-file sensors elsewhere);
//! - each `ADDR` is a 7-bit client address, `0x03`–`0x77` (hex with `0x`,
//!   decimal without, as i2c-tools read them).
//!
//! The guest sees one virtual bus, so an address may appear only once in a
//! list even across adapters. With `--socket-count N` greater than 1 the
//! option is given N times: the i-th list is device i's, and no host client
//! may be in two lists (one guest must not reach another guest's clients).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use thiserror::Error;
use vhost_device_common::cli::CommonArgs;

/// Lowest address a guest may be given (0x00–0x02 are the general call,
/// CBUS and reserved addresses).
pub const MIN_ADDR: u8 = 0x03;
/// Highest address a guest may be given (0x78–0x7f are 10-bit prefixes and
/// reserved).
pub const MAX_ADDR: u8 = 0x77;
/// Longest accepted `--sim-delay`.
pub const MAX_SIM_DELAY_MS: u64 = 60_000;

/// vhost-user virtio-i2c daemon: gives a guest the listed clients of host I2C
/// adapters.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the I2C device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the I2C device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// The clients the guest may reach: `BUS:ADDR[:ADDR…][,BUS:ADDR…]`, where
    /// BUS is an adapter number, a unique adapter name or `sim`; give it once
    /// per device with --socket-count
    #[arg(long, short = 'l', value_name = "LIST")]
    pub device_list: Vec<DeviceList>,

    /// Make every transfer on a `sim` adapter take this long (to try a slow
    /// bus)
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub sim_delay: u64,
}

/// Which host adapter a list entry names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BusRef {
    /// `/dev/i2c-N`.
    Number(u32),
    /// The adapter whose sysfs `name` is exactly this.
    Name(String),
    /// A simulated adapter of this device.
    Sim,
}

impl fmt::Display for BusRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusRef::Number(n) => write!(f, "/dev/i2c-{n}"),
            BusRef::Name(name) => write!(f, "adapter '{name}'"),
            BusRef::Sim => f.write_str("sim"),
        }
    }
}

/// One `BUS:ADDR[:ADDR…]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEntry {
    /// The adapter.
    pub bus: BusRef,
    /// 7-bit client addresses, in the order given.
    pub addrs: Vec<u8>,
}

/// One device's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// Its entries, in the order given.
    pub entries: Vec<BusEntry>,
}

/// A bad `--device-list` or option combination.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// Empty list or entry.
    #[error("empty entry in the device list (expected BUS:ADDR[:ADDR…])")]
    EmptyEntry,
    /// An entry without addresses.
    #[error("'{0}' has no address (expected BUS:ADDR[:ADDR…])")]
    NoAddress(String),
    /// An address that is not a number.
    #[error("'{0}' is not an address (0x03-0x77, hex with 0x or decimal)")]
    BadAddress(String),
    /// An address outside 0x03–0x77.
    #[error("address {0:#04x} is out of range (0x03-0x77)")]
    AddressOutOfRange(u32),
    /// The same address twice in one device.
    #[error("address {0:#04x} is listed twice in one device list")]
    AddressListedTwice(u8),
    /// The same adapter twice in one device.
    #[error("{0} is listed twice in one device list; give all its addresses in one entry")]
    AdapterListedTwice(String),
    /// One host client in two devices' lists.
    #[error("address {addr:#04x} of {bus} is in the lists of device {first} and device {second}: one guest could reach another's client")]
    SharedClient {
        /// Adapter.
        bus: String,
        /// Address.
        addr: u8,
        /// First device.
        first: usize,
        /// Second device.
        second: usize,
    },
    /// No `--device-list`.
    #[error("--device-list is required (which I2C clients the guest may reach)")]
    NoList,
    /// List count does not match `--socket-count`.
    #[error("--socket-count {sockets} needs {sockets} --device-list options (one per device), got {lists}")]
    ListCount {
        /// Sockets.
        sockets: u32,
        /// Lists given.
        lists: usize,
    },
    /// `--sim-delay` too long.
    #[error("--sim-delay must be at most {MAX_SIM_DELAY_MS} ms, got {0}")]
    SimDelay(u64),
}

/// Parse a 7-bit address: `0x..` hex or decimal, 0x03–0x77.
pub fn parse_addr(text: &str) -> Result<u8, ArgsError> {
    let t = text.trim();
    let value = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    }
    .map_err(|_| ArgsError::BadAddress(text.to_owned()))?;
    match u8::try_from(value) {
        Ok(a) if (MIN_ADDR..=MAX_ADDR).contains(&a) => Ok(a),
        _ => Err(ArgsError::AddressOutOfRange(value)),
    }
}

impl FromStr for BusEntry {
    type Err = ArgsError;

    /// `BUS:ADDR[:ADDR…]`. An adapter name may itself contain `:`: the
    /// addresses are the longest run of `:`-separated numbers at the end.
    fn from_str(s: &str) -> Result<Self, ArgsError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ArgsError::EmptyEntry);
        }
        let parts: Vec<&str> = s.split(':').collect();
        let mut first_addr = parts.len();
        while first_addr > 1 && parse_addr(parts[first_addr - 1]).is_ok() {
            first_addr -= 1;
        }
        if first_addr == parts.len() {
            // No valid address at the end: say what is wrong with the last part.
            return match parts.last() {
                Some(last) if parts.len() > 1 && !last.trim().is_empty() => {
                    Err(parse_addr(last).err().unwrap_or(ArgsError::EmptyEntry))
                }
                _ => Err(ArgsError::NoAddress(s.to_owned())),
            };
        }
        let bus_text = parts[..first_addr].join(":");
        let bus_text = bus_text.trim();
        if bus_text.is_empty() {
            return Err(ArgsError::NoAddress(s.to_owned()));
        }
        let bus = if bus_text == "sim" {
            BusRef::Sim
        } else if let Ok(n) = bus_text.parse::<u32>() {
            BusRef::Number(n)
        } else {
            BusRef::Name(bus_text.to_owned())
        };
        let addrs = parts[first_addr..]
            .iter()
            .map(|a| parse_addr(a))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { bus, addrs })
    }
}

impl FromStr for DeviceList {
    type Err = ArgsError;

    fn from_str(s: &str) -> Result<Self, ArgsError> {
        let entries = s
            .split(',')
            .map(BusEntry::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen_addrs = Vec::new();
        let mut seen_buses = Vec::new();
        for e in &entries {
            if seen_buses.contains(&e.bus) {
                return Err(ArgsError::AdapterListedTwice(e.bus.to_string()));
            }
            seen_buses.push(e.bus.clone());
            for &a in &e.addrs {
                if seen_addrs.contains(&a) {
                    return Err(ArgsError::AddressListedTwice(a));
                }
                seen_addrs.push(a);
            }
        }
        Ok(Self { entries })
    }
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// One list per device (socket), in socket order.
    pub devices: Vec<DeviceList>,
    /// Latency of every transfer on a simulated adapter.
    pub sim_delay: Duration,
}

impl Config {
    /// Validate `args` for `socket_count` devices.
    pub fn new(args: DeviceArgs, socket_count: u32) -> Result<Self, ArgsError> {
        let lists = args.device_list.len();
        if lists == 0 {
            return Err(ArgsError::NoList);
        }
        if lists != socket_count as usize {
            return Err(ArgsError::ListCount {
                sockets: socket_count,
                lists,
            });
        }
        if args.sim_delay > MAX_SIM_DELAY_MS {
            return Err(ArgsError::SimDelay(args.sim_delay));
        }
        Ok(Self {
            devices: args.device_list,
            sim_delay: Duration::from_millis(args.sim_delay),
        })
    }
}

/// Refuse a host client that two devices would share. `devices[i]` lists
/// device i's adapters as (`key`, addresses), where equal keys are the same
/// host adapter (simulated adapters are private to each device and are left
/// out by the caller).
pub fn check_isolation(devices: &[Vec<(String, Vec<u8>)>]) -> Result<(), ArgsError> {
    let mut owner: Vec<(&str, u8, usize)> = Vec::new();
    for (dev, buses) in devices.iter().enumerate() {
        for (key, addrs) in buses {
            for &addr in addrs {
                if let Some(&(_, _, first)) = owner
                    .iter()
                    .find(|(k, a, d)| *k == key.as_str() && *a == addr && *d != dev)
                {
                    return Err(ArgsError::SharedClient {
                        bus: key.clone(),
                        addr,
                        first,
                        second: dev,
                    });
                }
                owner.push((key, addr, dev));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(
            ["vhost-device-i2c", "--socket-path", "/tmp/s"]
                .iter()
                .chain(args),
        )
    }

    fn list(s: &str) -> Result<DeviceList, ArgsError> {
        s.parse()
    }

    #[test]
    fn number_name_and_sim_adapters_are_recognised() {
        let l = list("3:0x50:0x51,SMBus stub driver:0x1c,sim:32").unwrap();
        assert_eq!(
            l.entries,
            vec![
                BusEntry {
                    bus: BusRef::Number(3),
                    addrs: vec![0x50, 0x51]
                },
                BusEntry {
                    bus: BusRef::Name("SMBus stub driver".into()),
                    addrs: vec![0x1c]
                },
                BusEntry {
                    bus: BusRef::Sim,
                    addrs: vec![0x20]
                },
            ]
        );
    }

    #[test]
    fn adapter_name_with_a_colon_keeps_it() {
        let l = list("DP-1 aux:ch 2:0x37").unwrap();
        assert_eq!(l.entries[0].bus, BusRef::Name("DP-1 aux:ch 2".into()));
        assert_eq!(l.entries[0].addrs, vec![0x37]);
    }

    #[test]
    fn entry_without_address_is_rejected() {
        assert_eq!(list("3"), Err(ArgsError::NoAddress("3".into())));
        assert_eq!(list("sim:"), Err(ArgsError::NoAddress("sim:".into())));
        assert_eq!(list(":0x50"), Err(ArgsError::NoAddress(":0x50".into())));
    }

    #[test]
    fn empty_entry_is_rejected() {
        assert_eq!(list("sim:0x50,"), Err(ArgsError::EmptyEntry));
    }

    #[test]
    fn address_out_of_range_is_rejected() {
        assert_eq!(list("sim:0x78"), Err(ArgsError::AddressOutOfRange(0x78)));
        assert_eq!(list("sim:0x02"), Err(ArgsError::AddressOutOfRange(2)));
        assert_eq!(
            list("sim:0x50:0x1ff"),
            Err(ArgsError::AddressOutOfRange(0x1ff))
        );
    }

    #[test]
    fn garbage_address_is_rejected() {
        assert_eq!(list("sim:0xzz"), Err(ArgsError::BadAddress("0xzz".into())));
    }

    #[test]
    fn address_twice_in_one_device_is_rejected_even_on_two_adapters() {
        assert_eq!(
            list("sim:0x50:0x50"),
            Err(ArgsError::AddressListedTwice(0x50))
        );
        assert_eq!(
            list("1:0x50,2:0x50"),
            Err(ArgsError::AddressListedTwice(0x50))
        );
    }

    #[test]
    fn adapter_twice_in_one_device_is_rejected() {
        assert!(matches!(
            list("1:0x50,1:0x51"),
            Err(ArgsError::AdapterListedTwice(_))
        ));
    }

    #[test]
    fn one_list_per_socket_is_required() {
        let args = parse(&["--device-list", "sim:0x50", "--socket-count", "2"]).unwrap();
        assert_eq!(
            Config::new(args.device, 2),
            Err(ArgsError::ListCount {
                sockets: 2,
                lists: 1
            })
        );
    }

    #[test]
    fn two_lists_for_two_sockets_are_accepted_in_order() {
        let args = parse(&["-l", "sim:0x50", "-l", "sim:0x51"]).unwrap();
        let config = Config::new(args.device, 2).unwrap();
        assert_eq!(config.devices[1].entries[0].addrs, vec![0x51]);
    }

    #[test]
    fn device_list_is_required() {
        let args = parse(&[]).unwrap();
        assert_eq!(Config::new(args.device, 1), Err(ArgsError::NoList));
    }

    #[test]
    fn bad_list_is_a_usage_error_naming_the_problem() {
        let err = parse(&["--device-list", "sim:0x99"]).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn overlong_sim_delay_is_rejected() {
        let args = parse(&["-l", "sim:0x50", "--sim-delay", "600000"]).unwrap();
        assert_eq!(
            Config::new(args.device, 1),
            Err(ArgsError::SimDelay(600_000))
        );
    }

    #[test]
    fn client_in_two_devices_is_refused_but_separate_addresses_are_fine() {
        let shared = vec![
            vec![("/dev/i2c-1".to_string(), vec![0x50, 0x51])],
            vec![("/dev/i2c-1".to_string(), vec![0x51])],
        ];
        assert!(matches!(
            check_isolation(&shared),
            Err(ArgsError::SharedClient {
                addr: 0x51,
                first: 0,
                second: 1,
                ..
            })
        ));
        let apart = vec![
            vec![("/dev/i2c-1".to_string(), vec![0x50])],
            vec![("/dev/i2c-1".to_string(), vec![0x51])],
        ];
        assert_eq!(check_isolation(&apart), Ok(()));
    }
}
