// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-i2c: a virtio I2C adapter (virtio 1.3, 5.16 "I2C Adapter
//! Device", device id 34) onto host I2C adapters.
//!
//! The guest sees one I2C bus holding exactly the clients of its
//! `--device-list`, which may sit on several host adapters (`/dev/i2c-N`,
//! through the `i2cdev` crate) or on a simulated one (`sim`). A Linux
//! `i2c_transfer` of N messages arrives as N requests linked by FAIL_NEXT
//! and runs as one `I2C_RDWR`, every request with its own status
//! ([`request`]); on an SMBus-only adapter the message group is mapped to the
//! matching SMBus command ([`host::smbus`]). Transfers run on one thread per
//! adapter, so a slow bus never blocks a vring worker ([`device`]).

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use vhost_device_common::daemon::{self, DeviceInfo};

use crate::args::{check_isolation, ArgsError, BusRef, Config};
use crate::device::Buses;
use crate::host::linux::{self, LinuxBus, ResolveError};
use crate::host::sim::{SimBus, SimState};
use crate::host::worker::AdapterWorker;
use crate::host::Adapter;

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-i2c",
    kind: "i2c",
};

/// Why the daemon cannot start.
#[derive(Debug, Error)]
pub enum SetupError {
    /// Bad options.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// An adapter name that names no adapter, or several.
    #[error("device {device}")]
    Resolve {
        /// Device (socket) index.
        device: usize,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// An adapter cannot be opened or used.
    #[error("cannot use I2C adapter {adapter}")]
    Adapter {
        /// Which.
        adapter: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Open every adapter the lists name (each host adapter once, whoever lists
/// it), check that every listed client may be used, and give each device its
/// routes. `sysfs` is `/sys/bus/i2c/devices` (adapter names).
pub fn open_buses(config: &Config, sysfs: &Path) -> Result<Vec<Arc<Buses>>, SetupError> {
    // Resolve names to numbers; `None` is the device's simulated adapter.
    let mut resolved: Vec<Vec<(Option<u32>, Vec<u8>)>> = Vec::new();
    for (device, list) in config.devices.iter().enumerate() {
        let mut entries: Vec<(Option<u32>, Vec<u8>)> = Vec::new();
        for e in &list.entries {
            let n = linux::resolve(&e.bus, sysfs)
                .map_err(|source| SetupError::Resolve { device, source })?;
            if n.is_some() && entries.iter().any(|(m, _)| *m == n) {
                return Err(ArgsError::AdapterListedTwice(e.bus.to_string()).into());
            }
            entries.push((n, e.addrs.clone()));
        }
        resolved.push(entries);
    }
    let keyed: Vec<Vec<(String, Vec<u8>)>> = resolved
        .iter()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|(n, addrs)| n.map(|n| (BusRef::Number(n).to_string(), addrs.clone())))
                .collect()
        })
        .collect();
    check_isolation(&keyed)?;

    // One worker per host adapter, shared by the devices that list it.
    let mut host: BTreeMap<u32, Arc<AdapterWorker>> = BTreeMap::new();
    for entries in &resolved {
        for (n, _) in entries {
            let Some(n) = *n else { continue };
            if host.contains_key(&n) {
                continue;
            }
            let label = linux::dev_path(n).display().to_string();
            let bus = LinuxBus::open(n, sysfs).map_err(|source| SetupError::Adapter {
                adapter: label.clone(),
                source,
            })?;
            let mut adapter =
                Adapter::new(Box::new(bus)).map_err(|source| SetupError::Adapter {
                    adapter: label.clone(),
                    source,
                })?;
            for (m, addrs) in resolved.iter().flatten() {
                if *m == Some(n) {
                    for &a in addrs {
                        adapter.claim(a).map_err(|source| SetupError::Adapter {
                            adapter: label.clone(),
                            source,
                        })?;
                    }
                }
            }
            log::info!(
                "{}: {}",
                adapter.name(),
                if adapter.smbus_only() {
                    "SMBus only: transfers become SMBus commands"
                } else {
                    "I2C: transfers run as I2C_RDWR"
                }
            );
            host.insert(n, Arc::new(AdapterWorker::new(adapter)));
        }
    }

    let mut all = Vec::new();
    for (device, entries) in resolved.into_iter().enumerate() {
        let mut routes = BTreeMap::new();
        let mut workers = Vec::new();
        let mut sim = None;
        for (n, addrs) in entries {
            let worker = match n {
                Some(n) => host.get(&n).cloned().ok_or_else(|| SetupError::Adapter {
                    adapter: linux::dev_path(n).display().to_string(),
                    source: std::io::Error::other("not opened"),
                })?,
                None => {
                    let state = Arc::new(Mutex::new(SimState::new(&addrs)));
                    let bus = SimBus::new(state.clone(), config.sim_delay, format!("sim{device}"));
                    sim = Some(state);
                    let adapter =
                        Adapter::new(Box::new(bus)).map_err(|source| SetupError::Adapter {
                            adapter: "sim".into(),
                            source,
                        })?;
                    Arc::new(AdapterWorker::new(adapter))
                }
            };
            for a in addrs {
                routes.insert(a, workers.len());
            }
            workers.push(worker);
        }
        all.push(Arc::new(Buses::new(routes, workers, sim)));
    }
    Ok(all)
}

/// Run the daemon until SIGTERM/SIGINT or a host failure.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    let sockets = common.socket_count;
    daemon::run(&common, &INFO, move || {
        let config = Config::new(device, sockets)?;
        let buses = open_buses(&config, Path::new(linux::SYSFS_I2C_DEVICES))?;
        Ok(move |index: u32| {
            let b = buses
                .get(index as usize)
                .cloned()
                .ok_or_else(|| format!("no device list for socket {index}"))?;
            Ok(device::I2cDevice::new(b)?)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(lists: &[&str]) -> Config {
        Config {
            devices: lists.iter().map(|l| l.parse().unwrap()).collect(),
            sim_delay: Duration::ZERO,
        }
    }

    #[test]
    fn each_device_gets_its_own_sim_adapter() {
        let buses = open_buses(
            &config(&["sim:0x50", "sim:0x50"]),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(buses.len(), 2);
        assert_eq!(buses[0].route(0x50), Some(0));
        assert_eq!(buses[1].addresses().collect::<Vec<_>>(), vec![0x50]);
    }

    #[test]
    fn missing_adapter_is_a_startup_error_naming_it() {
        let err = open_buses(&config(&["999999:0x50"]), Path::new("/nonexistent")).unwrap_err();
        let text = vhost_device_common::error::report(&err);
        assert!(text.contains("/dev/i2c-999999"), "{text}");
    }

    #[test]
    fn unknown_adapter_name_is_a_startup_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_buses(&config(&["no such adapter:0x50"]), dir.path()).unwrap_err();
        assert!(matches!(err, SetupError::Resolve { device: 0, .. }));
    }

    #[test]
    fn host_client_in_two_lists_is_refused_before_opening_anything() {
        let err = open_buses(
            &config(&["7:0x50", "7:0x50:0x51"]),
            Path::new("/nonexistent"),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            SetupError::Args(ArgsError::SharedClient { .. })
        ));
    }
}
