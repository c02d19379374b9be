// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-i2c constants and wire structs (virtio 1.3, 5.16 "I2C Adapter
//! Device"; Linux `include/uapi/linux/virtio_i2c.h`).
//!
//! A request is one descriptor chain: [`OutHdr`] (device-readable), then the
//! message buffer (device-readable for a write, device-writable for a read,
//! absent for a zero-length request), then one device-writable status byte
//! ([`MSG_OK`] or [`MSG_ERR`]). The device has no config space.

use vhost_device_common::vm_memory::{Le16, Le32};

/// Device id of the I2C adapter device.
pub const VIRTIO_ID_I2C_ADAPTER: u32 =
    vhost_device_common::virtio_bindings::virtio_ids::VIRTIO_ID_I2C_ADAPTER;

/// Number of virtqueues (`requestq`).
pub const NUM_QUEUES: usize = 1;

/// Index of the request queue.
pub const REQUEST_QUEUE: usize = 0;

/// Largest queue size offered to the front end (QEMU uses 4).
pub const MAX_QUEUE_SIZE: usize = 1024;

/// Feature bit: zero-length requests and the `M_RD` flag (5.16.3); the
/// device must offer it and reject drivers that do not accept it.
pub const VIRTIO_I2C_F_ZERO_LENGTH_REQUEST: u64 = 0;

/// `flags` bit 0: fail the next request of the group if this one fails.
pub const VIRTIO_I2C_FLAGS_FAIL_NEXT: u32 = 1 << 0;

/// `flags` bit 1: a read request (the buffer is device-writable).
pub const VIRTIO_I2C_FLAGS_M_RD: u32 = 1 << 1;

/// Status: the request succeeded.
pub const MSG_OK: u8 = 0;

/// Status: the request failed (or was not run because an earlier request of
/// its group failed).
pub const MSG_ERR: u8 = 1;

/// `struct virtio_i2c_out_hdr` (5.16.6.1), device-readable.
#[doc(alias = "virtio_i2c_out_hdr")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct OutHdr {
    /// The target address, encoded as in [`crate::request::Address::decode`].
    pub addr: Le16,
    /// Padding to a full dword.
    pub padding: Le16,
    /// `VIRTIO_I2C_FLAGS_*`.
    pub flags: Le32,
}
vhost_device_common::byte_valued!(OutHdr, 8);

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::vm_memory::ByteValued;

    #[test]
    fn out_hdr_is_little_endian_on_the_wire() {
        let hdr = OutHdr {
            addr: (0x50u16 << 1).into(),
            padding: 0.into(),
            flags: (VIRTIO_I2C_FLAGS_FAIL_NEXT | VIRTIO_I2C_FLAGS_M_RD).into(),
        };
        assert_eq!(hdr.as_slice(), &[0xA0, 0, 0, 0, 3, 0, 0, 0]);
    }
}
