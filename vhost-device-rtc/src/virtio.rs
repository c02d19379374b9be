// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio RTC constants, wire structs and codes (virtio 1.4, 5.23 "RTC
//! Device"; Linux `include/uapi/linux/virtio_rtc.h`).
//!
//! Every request starts with [`ReqHead`] (8 bytes) and every response with
//! [`RespHead`] (8 bytes); the structs below are the parts that follow the
//! head. Everything is little-endian; reserved bytes are zero both ways.

use vhost_device_common::byte_valued;
use vhost_device_common::vm_memory::{Le16, Le64};

/// Device id of the RTC device (virtio 1.4, 5.23.1; Linux `VIRTIO_ID_CLOCK`).
pub const VIRTIO_ID_CLOCK: u32 = vhost_device_common::virtio_bindings::virtio_ids::VIRTIO_ID_CLOCK;

/// Feature bit: the device supports alarms, and the alarmq exists (5.23.3).
pub const VIRTIO_RTC_F_ALARM: u32 = 0;

/// Number of virtqueues (`requestq`, `alarmq`; 5.23.2). QEMU's
/// `vhost-user-rtc` always sets up both.
pub const NUM_QUEUES: usize = 2;
/// Index of the request queue.
pub const REQUEST_QUEUE: usize = 0;
/// Index of the alarm notification queue.
pub const ALARM_QUEUE: usize = 1;
/// Largest queue size offered (QEMU's `vhost-user-rtc` uses 1024).
pub const MAX_QUEUE_SIZE: usize = 1024;

/// Message types (5.23.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MsgType {
    /// `VIRTIO_RTC_REQ_READ`: read a clock.
    Read = 0x0001,
    /// `VIRTIO_RTC_REQ_READ_CROSS`: cross-timestamp a clock and a hardware counter.
    ReadCross = 0x0002,
    /// `VIRTIO_RTC_REQ_CFG`: number of clocks.
    Cfg = 0x1000,
    /// `VIRTIO_RTC_REQ_CLOCK_CAP`: type, smearing and flags of a clock.
    ClockCap = 0x1001,
    /// `VIRTIO_RTC_REQ_CROSS_CAP`: whether a clock can be cross-timestamped.
    CrossCap = 0x1002,
    /// `VIRTIO_RTC_REQ_READ_ALARM`: alarm time and enabled flag.
    ReadAlarm = 0x1003,
    /// `VIRTIO_RTC_REQ_SET_ALARM`: set time and enabled flag.
    SetAlarm = 0x1004,
    /// `VIRTIO_RTC_REQ_SET_ALARM_ENABLED`: enable or disable, keeping the time.
    SetAlarmEnabled = 0x1005,
}

impl TryFrom<u16> for MsgType {
    type Error = u16;

    fn try_from(v: u16) -> Result<Self, u16> {
        Ok(match v {
            0x0001 => Self::Read,
            0x0002 => Self::ReadCross,
            0x1000 => Self::Cfg,
            0x1001 => Self::ClockCap,
            0x1002 => Self::CrossCap,
            0x1003 => Self::ReadAlarm,
            0x1004 => Self::SetAlarm,
            0x1005 => Self::SetAlarmEnabled,
            other => return Err(other),
        })
    }
}

/// `VIRTIO_RTC_NOTIF_ALARM`, the only alarmq message type.
pub const NOTIF_ALARM: u16 = 0x2000;

/// Response status codes (5.23.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// `VIRTIO_RTC_S_OK`.
    Ok = 0,
    /// `VIRTIO_RTC_S_EOPNOTSUPP`: unknown message type or counter, or an
    /// implementation limit.
    EOpNotSupp = 2,
    /// `VIRTIO_RTC_S_ENODEV`: no such clock (or, for alarm requests, no alarm).
    ENoDev = 3,
    /// `VIRTIO_RTC_S_EINVAL`: values not allowed, or a buffer too small.
    EInval = 4,
    /// `VIRTIO_RTC_S_EIO`: any other failure.
    EIo = 5,
}

/// Clock types (5.23.6.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum ClockType {
    /// `VIRTIO_RTC_CLOCK_UTC`: steps at leap seconds.
    Utc = 0,
    /// `VIRTIO_RTC_CLOCK_TAI`: atomic time, epoch 1970 TAI.
    Tai = 1,
    /// `VIRTIO_RTC_CLOCK_MONOTONIC`: never goes backwards.
    Monotonic = 2,
    /// `VIRTIO_RTC_CLOCK_UTC_SMEARED`: smears leap seconds (Linux makes a
    /// `/dev/rtc` only for this type).
    UtcSmeared = 3,
    /// `VIRTIO_RTC_CLOCK_UTC_MAYBE_SMEARED`: may smear or step.
    UtcMaybeSmeared = 4,
}

/// Leap-second smearing variants (5.23.6.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Smearing {
    /// `VIRTIO_RTC_SMEAR_UNSPECIFIED`.
    Unspecified = 0,
    /// `VIRTIO_RTC_SMEAR_NOON_LINEAR`: noon to noon, 1/86400.
    NoonLinear = 1,
    /// `VIRTIO_RTC_SMEAR_UTC_SLS`: the last 1000 s of the day, 0.1 %.
    UtcSls = 2,
}

/// Hardware counter ids (5.23.6.1.3).
pub mod counter {
    /// Arm `CNTVCT_EL0`.
    pub const ARM_VCT: u8 = 0;
    /// x86 TSC.
    pub const X86_TSC: u8 = 1;
    /// Invalid.
    pub const INVALID: u8 = 0xFF;
}

/// `VIRTIO_RTC_FLAG_ALARM_CAP` in a `CLOCK_CAP` response.
pub const FLAG_ALARM_CAP: u8 = 1 << 0;
/// `VIRTIO_RTC_FLAG_CROSS_CAP` in a `CROSS_CAP` response.
pub const FLAG_CROSS_CAP: u8 = 1 << 0;
/// `VIRTIO_RTC_FLAG_ALARM_ENABLED` in alarm requests and responses.
pub const FLAG_ALARM_ENABLED: u8 = 1 << 0;

/// Common request header.
#[doc(alias = "virtio_rtc_req_head")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ReqHead {
    /// Message type.
    pub msg_type: Le16,
    /// Zero.
    pub reserved: [u8; 6],
}
byte_valued!(ReqHead, 8);

/// Common response header.
#[doc(alias = "virtio_rtc_resp_head")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespHead {
    /// Status code.
    pub status: u8,
    /// Zero.
    pub reserved: [u8; 7],
}
byte_valued!(RespHead, 8);

/// Body of `READ`, `CLOCK_CAP` and `READ_ALARM` requests: a clock id.
#[doc(alias = "virtio_rtc_req_read")]
#[doc(alias = "virtio_rtc_req_clock_cap")]
#[doc(alias = "virtio_rtc_req_read_alarm")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ReqClock {
    /// Clock id.
    pub clock_id: Le16,
    /// Zero.
    pub reserved: [u8; 6],
}
byte_valued!(ReqClock, 8);

/// Body of `READ_CROSS` and `CROSS_CAP` requests.
#[doc(alias = "virtio_rtc_req_read_cross")]
#[doc(alias = "virtio_rtc_req_cross_cap")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ReqCross {
    /// Clock id.
    pub clock_id: Le16,
    /// Hardware counter id ([`counter`]).
    pub hw_counter: u8,
    /// Zero.
    pub reserved: [u8; 5],
}
byte_valued!(ReqCross, 8);

/// Body of a `SET_ALARM` request.
#[doc(alias = "virtio_rtc_req_set_alarm")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ReqSetAlarm {
    /// Alarm time in ns on the clock's scale.
    pub alarm_time: Le64,
    /// Clock id.
    pub clock_id: Le16,
    /// [`FLAG_ALARM_ENABLED`] or 0.
    pub flags: u8,
    /// Zero.
    pub reserved: [u8; 5],
}
byte_valued!(ReqSetAlarm, 16);

/// Body of a `SET_ALARM_ENABLED` request.
#[doc(alias = "virtio_rtc_req_set_alarm_enabled")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ReqSetAlarmEnabled {
    /// Clock id.
    pub clock_id: Le16,
    /// [`FLAG_ALARM_ENABLED`] or 0.
    pub flags: u8,
    /// Zero.
    pub reserved: [u8; 5],
}
byte_valued!(ReqSetAlarmEnabled, 8);

/// Body of a `READ` response.
#[doc(alias = "virtio_rtc_resp_read")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespRead {
    /// Reading in ns.
    pub clock_reading: Le64,
}
byte_valued!(RespRead, 8);

/// Body of a `CFG` response.
#[doc(alias = "virtio_rtc_resp_cfg")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespCfg {
    /// Number of clocks; valid ids are below it.
    pub num_clocks: Le16,
    /// Zero.
    pub reserved: [u8; 6],
}
byte_valued!(RespCfg, 8);

/// Body of a `CLOCK_CAP` response.
#[doc(alias = "virtio_rtc_resp_clock_cap")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespClockCap {
    /// [`ClockType`].
    pub clock_type: u8,
    /// [`Smearing`] (unspecified for every type but UTC_SMEARED).
    pub leap_second_smearing: u8,
    /// [`FLAG_ALARM_CAP`].
    pub flags: u8,
    /// Zero.
    pub reserved: [u8; 5],
}
byte_valued!(RespClockCap, 8);

/// Body of a `CROSS_CAP` response.
#[doc(alias = "virtio_rtc_resp_cross_cap")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespCrossCap {
    /// [`FLAG_CROSS_CAP`].
    pub flags: u8,
    /// Zero.
    pub reserved: [u8; 7],
}
byte_valued!(RespCrossCap, 8);

/// Body of a `READ_ALARM` response.
#[doc(alias = "virtio_rtc_resp_read_alarm")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespReadAlarm {
    /// Alarm time in ns.
    pub alarm_time: Le64,
    /// [`FLAG_ALARM_ENABLED`].
    pub flags: u8,
    /// Zero.
    pub reserved: [u8; 7],
}
byte_valued!(RespReadAlarm, 16);

/// An alarmq notification (header and body).
#[doc(alias = "virtio_rtc_notif_alarm")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct NotifAlarm {
    /// [`NOTIF_ALARM`].
    pub msg_type: Le16,
    /// Zero.
    pub reserved_head: [u8; 6],
    /// The clock whose alarm expired.
    pub clock_id: Le16,
    /// Zero.
    pub reserved: [u8; 6],
}
byte_valued!(NotifAlarm, 16);

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::vm_memory::ByteValued;

    #[test]
    fn set_alarm_has_time_before_clock_id() {
        let r = ReqSetAlarm {
            alarm_time: 0x0102_0304_0506_0708.into(),
            clock_id: 0x0A0B.into(),
            flags: 1,
            reserved: [0; 5],
        };
        assert_eq!(
            r.as_slice(),
            &[8, 7, 6, 5, 4, 3, 2, 1, 0x0B, 0x0A, 1, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn every_message_type_round_trips_and_others_are_refused() {
        for t in [
            MsgType::Read,
            MsgType::ReadCross,
            MsgType::Cfg,
            MsgType::ClockCap,
            MsgType::CrossCap,
            MsgType::ReadAlarm,
            MsgType::SetAlarm,
            MsgType::SetAlarmEnabled,
        ] {
            assert_eq!(MsgType::try_from(t as u16), Ok(t));
        }
        assert_eq!(MsgType::try_from(NOTIF_ALARM), Err(NOTIF_ALARM));
        assert_eq!(MsgType::try_from(0), Err(0));
    }

    #[test]
    fn device_id_is_seventeen() {
        assert_eq!(VIRTIO_ID_CLOCK, 17);
    }
}
