// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-sound: a virtio sound device (virtio 1.3, 5.14 "Sound
//! Device", device id 25) that a guest plays and records through in real
//! time.
//!
//! Four queues (control, event, tx, rx) on three workers; PCM streams with
//! the spec's state machine; I/O messages held per stream and completed at
//! the real-time rate, by the device's timer for the `null` and `wav`
//! backends and by the host's clock for `alsa` and `pipewire`; jacks,
//! channel maps and, with `--controls`, volume and switch controls applied
//! as software gain; live migration of stream states and held buffers.

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use std::sync::{Arc, Mutex};

use vhost_device_common::daemon::{self, DeviceInfo};

use device::controls::Controls;
use device::mixer::Mixer;

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-sound",
    kind: "sound",
};

/// The virtio device id (virtio 1.3, 5 "Device Types").
pub const VIRTIO_DEVICE_ID: u32 = virtio::VIRTIO_ID_SOUND;

/// Run the daemon until SIGTERM/SIGINT or a host failure.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    let sockets = common.sockets();
    // The control sockets' guards, kept (and their files removed) here.
    let guards = Arc::new(Mutex::new(Vec::new()));
    let kept = guards.clone();
    let result = daemon::run(&common, &INFO, move || {
        let config = args::Config::try_from(device)?;
        config.backend.check()?;
        let mut mixers = Vec::new();
        for path in config.control_sockets(sockets.as_ref()) {
            mixers.push(if config.controls {
                let mixer = Arc::new(Mixer::new(Controls::new(&config.streams)));
                if let Some(path) = path {
                    let guard = mixer.serve(&path).map_err(|e| {
                        format!(
                            "cannot listen on the control socket {}: {e}",
                            path.display()
                        )
                    })?;
                    log::info!("control socket: {}", path.display());
                    vhost_device_common::lock(&kept).push(guard);
                }
                Some(mixer)
            } else {
                None
            });
        }
        Ok(move |index: u32| {
            let mixer = mixers.get(index as usize).cloned().flatten();
            device::SoundDevice::new(&config, mixer).map_err(Into::into)
        })
    });
    vhost_device_common::lock(&guards).clear();
    result
}
