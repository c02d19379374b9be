// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-device-sound: virtio sound (ALSA, PipeWire, null), device id 25.
//!
//! Not implemented yet: this crate only reserves its place in the workspace.
//! Its daemon will be built on `vhost-device-common` the way
//! `vhost-device-rng` is.

/// The virtio device id (virtio 1.3, 5 "Device Types").
pub const VIRTIO_DEVICE_ID: u32 = 25;
