// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-gpio wire format (virtio 1.3, 5.18 "GPIO Device"): constants, the
//! `#[repr(C)]` request, response and config structs, and typed codes.
//! Nothing else lives here.

use vhost_device_common::byte_valued;
use vhost_device_common::vm_memory::{Le16, Le32};

/// Device id (5.18.1).
pub const VIRTIO_ID_GPIO: u32 = 41;

/// Feature bit: the device supports interrupts on GPIO lines (5.18.3).
pub const VIRTIO_GPIO_F_IRQ: u32 = 0;

/// Queue count: `requestq` and `eventq` (5.18.2; `eventq` is used only with
/// `VIRTIO_GPIO_F_IRQ`, but QEMU always sets up both).
pub const NUM_QUEUES: usize = 2;
/// Index of `requestq`.
pub const REQUEST_QUEUE: usize = 0;
/// Index of `eventq`.
pub const EVENT_QUEUE: usize = 1;
/// Largest queue size offered.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// `struct virtio_gpio_config` (5.18.4).
#[doc(alias = "virtio_gpio_config")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Config {
    /// Number of lines.
    pub ngpio: Le16,
    /// Reserved, zero.
    pub padding: [u8; 2],
    /// Size of the GET_LINE_NAMES block; 0 when the device has no names.
    pub gpio_names_size: Le32,
}
byte_valued!(Config, 8);

/// `struct virtio_gpio_request` (5.18.6).
#[doc(alias = "virtio_gpio_request")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RequestHeader {
    /// One of `VIRTIO_GPIO_MSG_*`.
    pub kind: Le16,
    /// Line number.
    pub gpio: Le16,
    /// Message-specific value.
    pub value: Le32,
}
byte_valued!(RequestHeader, 8);

/// `struct virtio_gpio_response` (5.18.6).
#[doc(alias = "virtio_gpio_response")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResponseBytes {
    /// `VIRTIO_GPIO_STATUS_*`.
    pub status: u8,
    /// Message-specific value.
    pub value: u8,
}
byte_valued!(ResponseBytes, 2);

/// `struct virtio_gpio_irq_request` (5.18.7).
#[doc(alias = "virtio_gpio_irq_request")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IrqRequest {
    /// Line number.
    pub gpio: Le16,
}
byte_valued!(IrqRequest, 2);

/// Size of `struct virtio_gpio_irq_response` (one status byte): Linux
/// requires exactly this used length on the eventq.
pub const IRQ_RESPONSE_LEN: u32 = 1;
/// Size of `struct virtio_gpio_response`: Linux requires exactly this used
/// length for every request but GET_LINE_NAMES.
pub const RESPONSE_LEN: u32 = 2;

/// `VIRTIO_GPIO_STATUS_OK`.
pub const STATUS_OK: u8 = 0;
/// `VIRTIO_GPIO_STATUS_ERR`.
pub const STATUS_ERR: u8 = 1;

/// Message types (5.18.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RequestType {
    /// `VIRTIO_GPIO_MSG_GET_LINE_NAMES` (Linux: `GET_NAMES`).
    GetLineNames = 1,
    /// `VIRTIO_GPIO_MSG_GET_DIRECTION`.
    GetDirection = 2,
    /// `VIRTIO_GPIO_MSG_SET_DIRECTION`.
    SetDirection = 3,
    /// `VIRTIO_GPIO_MSG_GET_VALUE`.
    GetValue = 4,
    /// `VIRTIO_GPIO_MSG_SET_VALUE`.
    SetValue = 5,
    /// `VIRTIO_GPIO_MSG_SET_IRQ_TYPE` (Linux: `IRQ_TYPE`).
    SetIrqType = 6,
}

impl TryFrom<u16> for RequestType {
    type Error = u16;

    fn try_from(v: u16) -> Result<Self, u16> {
        Ok(match v {
            1 => Self::GetLineNames,
            2 => Self::GetDirection,
            3 => Self::SetDirection,
            4 => Self::GetValue,
            5 => Self::SetValue,
            6 => Self::SetIrqType,
            other => return Err(other),
        })
    }
}

/// Line directions (`VIRTIO_GPIO_DIRECTION_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Direction {
    /// Not in use: released, no state.
    #[default]
    None = 0,
    /// Output.
    Out = 1,
    /// Input.
    In = 2,
}

impl TryFrom<u32> for Direction {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            0 => Self::None,
            1 => Self::Out,
            2 => Self::In,
            other => return Err(other),
        })
    }
}

/// Interrupt trigger types (`VIRTIO_GPIO_IRQ_TYPE_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum IrqType {
    /// Disabled.
    #[default]
    None = 0,
    /// Rising edge.
    EdgeRising = 1,
    /// Falling edge.
    EdgeFalling = 2,
    /// Both edges.
    EdgeBoth = 3,
    /// High level.
    LevelHigh = 4,
    /// Low level.
    LevelLow = 8,
}

impl TryFrom<u32> for IrqType {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            0 => Self::None,
            1 => Self::EdgeRising,
            2 => Self::EdgeFalling,
            3 => Self::EdgeBoth,
            4 => Self::LevelHigh,
            8 => Self::LevelLow,
            other => return Err(other),
        })
    }
}

impl IrqType {
    /// Whether this is a level type (emulated: the GPIO uAPI has edges only).
    pub fn is_level(self) -> bool {
        matches!(self, Self::LevelHigh | Self::LevelLow)
    }
}

/// `VIRTIO_GPIO_IRQ_STATUS_*` (5.18.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum IrqStatus {
    /// The buffer is returned unused (interrupt disabled, or a bad buffer).
    Invalid = 0,
    /// The interrupt fired.
    Valid = 1,
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::vm_memory::ByteValued;

    #[test]
    fn request_header_is_little_endian_type_gpio_value() {
        let h = RequestHeader::from_slice(&[3, 0, 7, 0, 2, 0, 0, 0]).unwrap();
        assert_eq!(
            (u16::from(h.kind), u16::from(h.gpio), u32::from(h.value)),
            (3, 7, 2)
        );
    }

    #[test]
    fn config_layout_is_ngpio_padding_names_size() {
        let c = Config {
            ngpio: 0x0102.into(),
            padding: [0; 2],
            gpio_names_size: 0x0A0B_0C0D.into(),
        };
        assert_eq!(c.as_slice(), &[2, 1, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A]);
    }

    #[test]
    fn unknown_codes_are_refused() {
        assert_eq!(RequestType::try_from(7), Err(7));
        assert_eq!(RequestType::try_from(0), Err(0));
        assert_eq!(Direction::try_from(3), Err(3));
        assert_eq!(IrqType::try_from(5), Err(5));
        assert_eq!(IrqType::try_from(8), Ok(IrqType::LevelLow));
    }
}
