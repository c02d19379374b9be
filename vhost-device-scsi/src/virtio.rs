// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-scsi wire format (virtio 1.3, 5.6 "SCSI Host Device").
//!
//! Queues: 0 `controlq`, 1 `eventq`, 2… `requestq`s. A request is a
//! device-readable [`CmdReqHeader`] followed by `cdb_size` CDB bytes and the
//! data-out buffer, then a device-writable [`CmdRespHeader`] followed by
//! `sense_size` sense bytes and the data-in buffer.

use vhost_device_common::byte_valued;
use vhost_device_common::virtio_bindings::virtio_scsi as vs;
use vhost_device_common::vm_memory::{Le16, Le32, Le64};

/// Device id.
pub const VIRTIO_ID_SCSI: u32 = 8;
/// Index of the control queue.
pub const CONTROL_QUEUE: usize = 0;
/// Index of the event queue.
pub const EVENT_QUEUE: usize = 1;
/// Index of the first request queue.
pub const FIRST_REQUEST_QUEUE: usize = 2;

/// Default and largest CDB size (`cdb_size` may be lowered by the driver).
pub const CDB_SIZE: u32 = vs::VIRTIO_SCSI_CDB_DEFAULT_SIZE;
/// Default and largest sense size.
pub const SENSE_SIZE: u32 = vs::VIRTIO_SCSI_SENSE_DEFAULT_SIZE;

/// Response codes (5.6.6.1).
pub mod response {
    // The spec's response codes are all below 256 (they travel in a u8).
    #![allow(missing_docs, clippy::cast_possible_truncation)]
    use super::vs;
    pub const OK: u8 = vs::VIRTIO_SCSI_S_OK as u8;
    pub const OVERRUN: u8 = vs::VIRTIO_SCSI_S_OVERRUN as u8;
    pub const BAD_TARGET: u8 = vs::VIRTIO_SCSI_S_BAD_TARGET as u8;
    pub const FAILURE: u8 = vs::VIRTIO_SCSI_S_FAILURE as u8;
    pub const FUNCTION_SUCCEEDED: u8 = vs::VIRTIO_SCSI_S_FUNCTION_SUCCEEDED as u8;
    pub const FUNCTION_REJECTED: u8 = vs::VIRTIO_SCSI_S_FUNCTION_REJECTED as u8;
    pub const FUNCTION_COMPLETE: u8 = vs::VIRTIO_SCSI_S_OK as u8;
    pub const INCORRECT_LUN: u8 = vs::VIRTIO_SCSI_S_INCORRECT_LUN as u8;
}

/// Control request types and task-management subtypes (5.6.6.2).
pub mod ctrl {
    #![allow(missing_docs)]
    use super::vs;
    pub const T_TMF: u32 = vs::VIRTIO_SCSI_T_TMF;
    pub const T_AN_QUERY: u32 = vs::VIRTIO_SCSI_T_AN_QUERY;
    pub const T_AN_SUBSCRIBE: u32 = vs::VIRTIO_SCSI_T_AN_SUBSCRIBE;
    pub const TMF_ABORT_TASK: u32 = vs::VIRTIO_SCSI_T_TMF_ABORT_TASK;
    pub const TMF_ABORT_TASK_SET: u32 = vs::VIRTIO_SCSI_T_TMF_ABORT_TASK_SET;
    pub const TMF_CLEAR_ACA: u32 = vs::VIRTIO_SCSI_T_TMF_CLEAR_ACA;
    pub const TMF_CLEAR_TASK_SET: u32 = vs::VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET;
    pub const TMF_I_T_NEXUS_RESET: u32 = vs::VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET;
    pub const TMF_LOGICAL_UNIT_RESET: u32 = vs::VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET;
    pub const TMF_QUERY_TASK: u32 = vs::VIRTIO_SCSI_T_TMF_QUERY_TASK;
    pub const TMF_QUERY_TASK_SET: u32 = vs::VIRTIO_SCSI_T_TMF_QUERY_TASK_SET;
}

/// `struct virtio_scsi_req_cmd`, up to the CDB.
#[doc(alias = "virtio_scsi_cmd_req")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct CmdReqHeader {
    /// Addressing: 1, target, LUN (two bytes, flat space), 0…
    pub lun: [u8; 8],
    /// Command identifier.
    pub tag: Le64,
    /// Task attribute.
    pub task_attr: u8,
    /// SAM command priority.
    pub prio: u8,
    /// Command reference number.
    pub crn: u8,
}
byte_valued!(CmdReqHeader, 19);

/// `struct virtio_scsi_resp_cmd`, up to the sense data.
#[doc(alias = "virtio_scsi_cmd_resp")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct CmdRespHeader {
    /// Bytes of sense data written.
    pub sense_len: Le32,
    /// Data-buffer bytes not transferred.
    pub resid: Le32,
    /// Status qualifier.
    pub status_qualifier: Le16,
    /// SCSI status.
    pub status: u8,
    /// virtio-scsi response code.
    pub response: u8,
}
byte_valued!(CmdRespHeader, 12);

/// Task-management request.
#[doc(alias = "virtio_scsi_ctrl_tmf_req")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct CtrlTmfReq {
    /// `T_TMF`.
    pub type_: Le32,
    /// TMF subtype.
    pub subtype: Le32,
    /// Addressed LUN.
    pub lun: [u8; 8],
    /// Tag of the task (ABORT TASK, QUERY TASK).
    pub tag: Le64,
}
byte_valued!(CtrlTmfReq, 24);

/// Asynchronous-notification query or subscribe request.
#[doc(alias = "virtio_scsi_ctrl_an_req")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct CtrlAnReq {
    /// `T_AN_QUERY` or `T_AN_SUBSCRIBE`.
    pub type_: Le32,
    /// Addressed LUN.
    pub lun: [u8; 8],
    /// Events requested.
    pub event_requested: Le32,
}
byte_valued!(CtrlAnReq, 16);

/// Asynchronous-notification response.
#[doc(alias = "virtio_scsi_ctrl_an_resp")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct CtrlAnResp {
    /// Events supported (query) or subscribed (subscribe).
    pub event_actual: Le32,
    /// Response code.
    pub response: u8,
}
byte_valued!(CtrlAnResp, 5);

/// Device configuration (5.6.4).
#[doc(alias = "virtio_scsi_config")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct Config {
    /// Request queues.
    pub num_queues: Le32,
    /// Largest number of data segments per command.
    pub seg_max: Le32,
    /// Largest transfer, in 512-byte sectors.
    pub max_sectors: Le32,
    /// Commands per LUN the driver may queue.
    pub cmd_per_lun: Le32,
    /// Size of event-queue buffers.
    pub event_info_size: Le32,
    /// Sense size (driver-writable).
    pub sense_size: Le32,
    /// CDB size (driver-writable).
    pub cdb_size: Le32,
    /// Highest channel.
    pub max_channel: Le16,
    /// Highest target.
    pub max_target: Le16,
    /// Highest LUN.
    pub max_lun: Le32,
}
byte_valued!(Config, 36);

/// Offset of `sense_size` in [`Config`]; `sense_size` and `cdb_size` are the
/// only driver-writable fields.
pub const CONFIG_WRITABLE: std::ops::Range<usize> = 20..28;

/// Decode a virtio-scsi LUN address: `[1, target, lun_hi | 0x40, lun_lo, 0…]`.
/// Returns (target, lun), or `None` if the first byte is not 1.
pub fn decode_lun(lun: &[u8; 8]) -> Option<(u8, u16)> {
    if lun[0] != 1 {
        return None;
    }
    Some((lun[1], (u16::from(lun[2] & 0x3f) << 8) | u16::from(lun[3])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_addressing_decodes_flat_space() {
        assert_eq!(decode_lun(&[1, 0, 0x40, 5, 0, 0, 0, 0]), Some((0, 5)));
        assert_eq!(decode_lun(&[1, 2, 0, 0, 0, 0, 0, 0]), Some((2, 0)));
        assert_eq!(decode_lun(&[0; 8]), None);
    }
}
