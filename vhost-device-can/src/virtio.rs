// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-can constants and wire structs (virtio 1.4, 5.20 "CAN Device").
//!
//! Feature bits are the ratified numbering (5.20.3): `RTR_FRAMES` is bit 2
//! and `LATE_TX_ACK` bit 3. Headers from the RFC era (and the first
//! out-of-tree drivers) had these two swapped; the mainline Linux driver
//! uses the numbers below.

use vhost_device_common::byte_valued;
use vhost_device_common::vm_memory::{Le16, Le32};

/// Device id of the CAN device (virtio 1.4, 5 "Device Types").
pub const VIRTIO_ID_CAN: u32 = 36;

/// Number of virtqueues.
pub const NUM_QUEUES: usize = 3;
/// Index of the transmit queue (5.20.2).
pub const TX_QUEUE: usize = 0;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 1;
/// Index of the control queue.
pub const CONTROL_QUEUE: usize = 2;

/// Largest queue size offered to the front end.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// `VIRTIO_CAN_F_CAN_CLASSIC`: classic CAN frames, up to 8 data bytes.
pub const F_CAN_CLASSIC: u32 = 0;
/// `VIRTIO_CAN_F_CAN_FD`: CAN FD frames, up to 64 data bytes.
pub const F_CAN_FD: u32 = 1;
/// `VIRTIO_CAN_F_RTR_FRAMES`: remote transmission requests (classic only).
pub const F_RTR_FRAMES: u32 = 2;
/// `VIRTIO_CAN_F_LATE_TX_ACK`: a TX request is used only once its frame was
/// transmitted on the bus.
pub const F_LATE_TX_ACK: u32 = 3;

/// `VIRTIO_CAN_TX`: `msg_type` of a transmit request.
pub const MSG_TX: u16 = 0x0001;
/// `VIRTIO_CAN_RX`: `msg_type` of a received frame.
pub const MSG_RX: u16 = 0x0101;
/// `VIRTIO_CAN_SET_CTRL_MODE_START`.
pub const MSG_START: u16 = 0x0201;
/// `VIRTIO_CAN_SET_CTRL_MODE_STOP`.
pub const MSG_STOP: u16 = 0x0202;

/// `VIRTIO_CAN_RESULT_OK`.
pub const RESULT_OK: u8 = 0;
/// `VIRTIO_CAN_RESULT_NOT_OK` (a driver treats any other value the same).
pub const RESULT_NOT_OK: u8 = 1;

/// `VIRTIO_CAN_FLAGS_EXTENDED`: 29-bit identifier.
pub const FLAG_EXTENDED: u32 = 0x8000;
/// `VIRTIO_CAN_FLAGS_FD`: a CAN FD frame.
pub const FLAG_FD: u32 = 0x4000;
/// `VIRTIO_CAN_FLAGS_RTR`: a remote transmission request.
pub const FLAG_RTR: u32 = 0x2000;
/// Every flag the spec defines; a frame with another bit set is refused
/// like a frame of a type that was not negotiated (5.20.6.2).
pub const FLAGS_KNOWN: u32 = FLAG_EXTENDED | FLAG_FD | FLAG_RTR;

/// `VIRTIO_CAN_S_CTRL_BUSOFF`: bit 0 of the config `status`.
pub const STATUS_BUSOFF: u16 = 1 << 0;

/// Size of the config space (`struct virtio_can_config`).
pub const CONFIG_SIZE: usize = 2;

/// The header of `virtio_can_tx_out` and `virtio_can_rx` (5.20.6.2, 5.20.6.3):
/// the `sdu` of `length` bytes follows it.
#[doc(alias = "virtio_can_tx_out")]
#[doc(alias = "virtio_can_rx")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FrameHeader {
    /// [`MSG_TX`] or [`MSG_RX`].
    pub msg_type: Le16,
    /// Number of `sdu` bytes (for an RTR frame: the requested data length).
    pub length: Le16,
    /// Reserved for classic DLCs 9…15; written as 0, ignored when read.
    pub reserved_classic_dlc: u8,
    /// Padding; written as 0, ignored when read.
    pub padding: u8,
    /// Reserved for CAN XL; written as 0, ignored when read.
    pub reserved_xl_priority: Le16,
    /// `FLAG_*` bits.
    pub flags: Le32,
    /// 11- or 29-bit identifier; the 3 most significant bits are 0.
    pub can_id: Le32,
}
byte_valued!(FrameHeader, 16);

/// Size of [`FrameHeader`].
pub const HEADER_SIZE: usize = 16;

/// `virtio_can_control_out` (5.20.6.1).
#[doc(alias = "virtio_can_control_out")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ControlOut {
    /// [`MSG_START`] or [`MSG_STOP`].
    pub msg_type: Le16,
}
byte_valued!(ControlOut, 2);

/// The feature bits a driver acknowledged, with the dependencies of 5.20.3.1
/// applied: RTR frames need classic CAN, so RTR without CLASSIC counts as
/// not negotiated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Classic frames.
    pub classic: bool,
    /// CAN FD frames.
    pub fd: bool,
    /// RTR frames (classic only).
    pub rtr: bool,
    /// TX requests complete when the frame was on the bus.
    pub late_tx_ack: bool,
}

impl Features {
    /// From the acknowledged feature word.
    pub fn from_bits(bits: u64) -> Self {
        let has = |bit: u32| bits & (1u64 << bit) != 0;
        let classic = has(F_CAN_CLASSIC);
        Self {
            classic,
            fd: has(F_CAN_FD),
            rtr: classic && has(F_RTR_FRAMES),
            late_tx_ack: has(F_LATE_TX_ACK),
        }
    }

    /// The device feature bits for a device that supports FD or not.
    pub fn offer(fd_capable: bool) -> u64 {
        let mut bits = (1u64 << F_CAN_CLASSIC) | (1u64 << F_RTR_FRAMES) | (1u64 << F_LATE_TX_ACK);
        if fd_capable {
            bits |= 1u64 << F_CAN_FD;
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::vm_memory::ByteValued;

    #[test]
    fn ratified_bit_numbers_are_used() {
        assert_eq!((F_RTR_FRAMES, F_LATE_TX_ACK), (2, 3));
    }

    #[test]
    fn header_is_little_endian_in_spec_order() {
        let h = FrameHeader {
            msg_type: MSG_RX.into(),
            length: 8.into(),
            flags: FLAG_EXTENDED.into(),
            can_id: 0x1234_5678.into(),
            ..Default::default()
        };
        assert_eq!(
            h.as_slice(),
            &[1, 1, 8, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0x78, 0x56, 0x34, 0x12]
        );
    }

    #[test]
    fn rtr_without_classic_is_not_negotiated() {
        let f = Features::from_bits((1 << F_CAN_FD) | (1 << F_RTR_FRAMES));
        assert!(f.fd && !f.classic && !f.rtr);
    }

    #[test]
    fn fd_is_offered_only_when_capable() {
        assert_eq!(Features::offer(false) & (1 << F_CAN_FD), 0);
        assert_ne!(Features::offer(true) & (1 << F_CAN_FD), 0);
        let all = Features::from_bits(Features::offer(true));
        assert!(all.classic && all.fd && all.rtr && all.late_tx_ack);
    }
}
