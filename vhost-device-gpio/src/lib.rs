// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-gpio: a virtio GPIO device (virtio 1.3, 5.18 "GPIO Device";
//! device id 41) over a host GPIO chip.
//!
//! Each socket serves one chip: a real one through libgpiod v2
//! ([`host::linux`]), or a simulated one ([`host::mock`]) whose inputs are
//! driven through a control socket. Requests are answered at once; interrupt
//! buffers are held until their line's edge or level fires
//! ([`device::lines`] has the rules), with the chip's edge descriptors in
//! the worker's epoll. Line configuration, latched edges and held eventq
//! buffers move with a live migration.

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vhost_device_common::daemon::{self, DeviceInfo};
use vhost_device_common::error::HostError;

use crate::host::linux::{self as gpiolinux, LibgpiodHost};
use crate::host::mock::SimChip;
use crate::host::ChipSpec;
use vhost_device_common::control::ControlSocket;

/// The virtio device id (virtio 1.3, 5 "Device Types").
pub const VIRTIO_DEVICE_ID: u32 = virtio::VIRTIO_ID_GPIO;

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-gpio",
    kind: "gpio",
};

/// The chip behind one socket, made once at startup.
#[derive(Debug, Clone)]
enum Chip {
    Real(PathBuf),
    Sim(SimChip),
}

/// Resolve and check every chip, start the control sockets of simulated
/// ones (their guards go into `controls`).
fn setup(
    config: args::Config,
    controls: &Mutex<Vec<ControlSocket>>,
) -> Result<Vec<Chip>, HostError> {
    let mut chips = Vec::new();
    let mut real: Vec<(PathBuf, PathBuf)> = Vec::new();
    for dev in config.devices {
        match dev.chip {
            ChipSpec::Sim(names) => {
                let chip = SimChip::new(names);
                let path = dev.control.ok_or("a simulated chip needs a control path")?;
                let guard = chip.serve_control(&path).map_err(|e| {
                    format!(
                        "cannot listen on the simulated chip's control socket {}: {e}",
                        path.display()
                    )
                })?;
                log::info!("simulated chip control socket: {}", path.display());
                vhost_device_common::lock(controls).push(guard);
                chips.push(Chip::Sim(chip));
            }
            spec => {
                let path = gpiolinux::resolve(&spec)?;
                let host = LibgpiodHost::open(&path)?;
                let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                if let Some((first, _)) = real.iter().find(|(_, c)| *c == canonical) {
                    return Err(format!(
                        "{} and {} are the same chip; a chip can serve one device",
                        first.display(),
                        path.display()
                    )
                    .into());
                }
                log::info!(
                    "chip {} ({} lines)",
                    host.path(),
                    host::GpioHost::num_lines(&host)
                );
                real.push((path.clone(), canonical));
                chips.push(Chip::Real(path));
            }
        }
    }
    Ok(chips)
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    let sockets = common.sockets();
    let controls = Arc::new(Mutex::new(Vec::new()));
    let guards = controls.clone();
    let result = daemon::run(&common, &INFO, move || {
        let config = args::Config::new(device, sockets.as_ref())?;
        let chips = setup(config, &guards)?;
        Ok(move |index: u32| -> Result<device::GpioDevice, HostError> {
            let chip = chips
                .get(index as usize)
                .ok_or_else(|| format!("no chip for device {index}"))?;
            let host: Box<dyn host::GpioHost> = match chip {
                Chip::Real(path) => Box::new(LibgpiodHost::open(path)?),
                Chip::Sim(sim) => Box::new(sim.attach()?),
            };
            Ok(device::GpioDevice::new(host)?)
        })
    });
    // Remove the control sockets.
    vhost_device_common::lock(&controls).clear();
    result
}
