// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-rng constants (virtio 1.3, 5.4). The device has no config space, no
//! feature bits of its own and no wire structs: a request is just a
//! device-writable buffer.

/// Device id of the entropy device.
pub const VIRTIO_ID_RNG: u32 = vhost_device_common::virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

/// Number of virtqueues (`requestq`).
pub const NUM_QUEUES: usize = 1;

/// Index of the request queue.
pub const REQUEST_QUEUE: usize = 0;

/// Largest queue size offered to the front end.
pub const MAX_QUEUE_SIZE: usize = 1024;
