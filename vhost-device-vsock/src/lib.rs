// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-vsock: virtio socket device (virtio 1.3, 5.10), hybrid style —
//! guest `AF_VSOCK` stream sockets whose host ends are Unix sockets.
//!
//! - [`args`]: the command line.
//! - [`virtio`]: wire format; [`request`]: packet checks and building.
//! - [`device`]: the queues and the connections, one concern per file (see
//!   its documentation).
//! - [`host`]: host sockets: the Unix-socket conventions, `AF_VSOCK`,
//!   non-blocking connects and accepts, descriptor limits.

pub mod args;
pub mod device;
pub mod host;
pub mod request;
pub mod virtio;

use std::sync::Arc;

use vhost_device_common::cli::SocketSource;
use vhost_device_common::daemon::{self, DeviceInfo};

/// Name and vhost-user back-end type.
pub const INFO: DeviceInfo = DeviceInfo {
    name: "vhost-device-vsock",
    kind: "vsock",
};

/// Run the daemon until SIGTERM/SIGINT or a host failure.
pub fn run(args: args::Args) -> Result<(), daemon::Error> {
    let args::Args { common, device } = args;
    let socket_option = common.sockets();
    // The host sockets are removed when the listeners drop, and again here in
    // case a connection outlived the shutdown grace period.
    let created = Arc::new(std::sync::Mutex::new(Vec::new()));
    let created_in_setup = created.clone();
    let result = daemon::run_with_sockets(&common, &INFO, move || {
        let vms = args::vms(device, socket_option.is_some())?;
        // Each connection holds a host socket: use every descriptor allowed.
        let nofile = host::raise_descriptor_limit()?;
        let sockets = match (&socket_option, vms.as_slice()) {
            (Some(s), [_]) if vms[0].socket.is_none() => {
                if common.socket_count > 1 {
                    return Err(
                        "--socket-count must be 1 for vsock: use --vm for several VMs".into(),
                    );
                }
                s.clone()
            }
            (None, [one]) if one.socket.is_none() => {
                return Err(
                    "one of --socket-path PATH or --socket-fd FD is required (or use --vm)".into(),
                )
            }
            _ => SocketSource::Paths(vms.iter().filter_map(|v| v.socket.clone()).collect()),
        };
        let mut registry = device::siblings::Registry::default();
        let mut listeners = Vec::new();
        for vm in &vms {
            let forward = vm
                .forward_listen
                .iter()
                .map(|&port| {
                    host::listen_vsock(port).map(|fd| device::ForwardListener { fd, port })
                })
                .collect::<Result<Vec<_>, _>>()?;
            registry.add(Arc::new(device::siblings::Mailbox::new(
                vm.guest_cid,
                vm.groups.clone(),
            )?));
            // Bound once for the life of the process, like the vhost-user
            // socket; the file is removed when the daemon ends.
            listeners.push(device::Listeners {
                uds: Arc::new(host::UdsListener::bind(&vm.uds_path)?),
                forward: Arc::new(forward),
            });
            vhost_device_common::lock(&created_in_setup).push(vm.uds_path.clone());
        }
        let registry = Arc::new(registry);
        let max_connections = device::connection_limit(nofile, vms.len());
        log::info!("up to {max_connections} connections per VM (open file limit {nofile})");
        let factory = move |index: u32| {
            let i = index as usize;
            match (vms.get(i), listeners.get(i)) {
                (Some(vm), Some(l)) => {
                    device::VsockDevice::new(vm, l.clone(), registry.clone(), max_connections)
                }
                _ => Err("no VM for this socket".into()),
            }
        };
        Ok((sockets, factory))
    });
    for path in vhost_device_common::lock(&created).iter() {
        let _ = std::fs::remove_file(path);
    }
    result
}
