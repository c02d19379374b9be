// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-snd constants and wire structs (virtio 1.3, 5.14 "Sound Device";
//! the layouts of Linux's `include/uapi/linux/virtio_snd.h`).
//!
//! Every struct is `#[repr(C)]` of little-endian integer fields and made
//! `ByteValued` through the workspace's audited macro, which proves at compile
//! time that there is no padding.

use vhost_device_common::byte_valued;
use vhost_device_common::vm_memory::{Le16, Le32, Le64};

/// Device id of the sound device.
pub const VIRTIO_ID_SOUND: u32 = 25;

/// Feature bit: the device has control elements (5.14.3, virtio 1.3).
pub const VIRTIO_SND_F_CTLS: u64 = 1 << 0;

/// The control queue.
pub const CONTROL_QUEUE: usize = 0;
/// The event queue.
pub const EVENT_QUEUE: usize = 1;
/// The playback (output) data queue.
pub const TX_QUEUE: usize = 2;
/// The capture (input) data queue.
pub const RX_QUEUE: usize = 3;
/// Number of virtqueues.
pub const NUM_QUEUES: usize = 4;
/// Largest queue size offered.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// Request and event codes (5.14.6).
pub mod code {
    /// Query jack information.
    pub const JACK_INFO: u32 = 0x0001;
    /// Remap a jack.
    pub const JACK_REMAP: u32 = 0x0002;
    /// Query PCM stream information.
    pub const PCM_INFO: u32 = 0x0100;
    /// Set stream parameters.
    pub const PCM_SET_PARAMS: u32 = 0x0101;
    /// Prepare a stream.
    pub const PCM_PREPARE: u32 = 0x0102;
    /// Release a stream.
    pub const PCM_RELEASE: u32 = 0x0103;
    /// Start a stream.
    pub const PCM_START: u32 = 0x0104;
    /// Stop a stream.
    pub const PCM_STOP: u32 = 0x0105;
    /// Query channel maps.
    pub const CHMAP_INFO: u32 = 0x0200;
    /// Query control elements.
    pub const CTL_INFO: u32 = 0x0300;
    /// Query the items of an enumerated control.
    pub const CTL_ENUM_ITEMS: u32 = 0x0301;
    /// Read a control's value.
    pub const CTL_READ: u32 = 0x0302;
    /// Write a control's value.
    pub const CTL_WRITE: u32 = 0x0303;
    /// Read a control's metadata.
    pub const CTL_TLV_READ: u32 = 0x0304;
    /// Write a control's metadata.
    pub const CTL_TLV_WRITE: u32 = 0x0305;
    /// A metadata command.
    pub const CTL_TLV_COMMAND: u32 = 0x0306;

    /// Event: a jack was connected.
    pub const EVT_JACK_CONNECTED: u32 = 0x1000;
    /// Event: a jack was disconnected.
    pub const EVT_JACK_DISCONNECTED: u32 = 0x1001;
    /// Event: a period elapsed (shared-memory transport only).
    pub const EVT_PCM_PERIOD_ELAPSED: u32 = 0x1100;
    /// Event: an underrun or overrun.
    pub const EVT_PCM_XRUN: u32 = 0x1101;
    /// Event: a control element changed.
    pub const EVT_CTL_NOTIFY: u32 = 0x1200;
}

/// Status codes of responses (5.14.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0x8000,
    /// Malformed message or invalid parameters.
    BadMsg = 0x8001,
    /// Operation or parameters not supported.
    NotSupp = 0x8002,
    /// I/O error.
    IoErr = 0x8003,
}

impl Status {
    /// The little-endian wire value.
    pub fn wire(self) -> Le32 {
        (self as u32).into()
    }
}

/// Data flow direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// Playback (`VIRTIO_SND_D_OUTPUT`), data on the tx queue.
    Output,
    /// Capture (`VIRTIO_SND_D_INPUT`), data on the rx queue.
    Input,
}

impl Direction {
    /// The wire value.
    pub fn wire(self) -> u8 {
        match self {
            Direction::Output => 0,
            Direction::Input => 1,
        }
    }
}

/// PCM stream feature bits (5.14.6.6.2).
pub mod pcm_features {
    /// Shared memory allocated by the host (placeholder: never offered).
    pub const SHMEM_HOST: u32 = 1 << 0;
    /// Shared memory allocated by the guest (placeholder: never offered).
    pub const SHMEM_GUEST: u32 = 1 << 1;
    /// The device polls tx/rx (not offered: Linux would stop kicking).
    pub const MSG_POLLING: u32 = 1 << 2;
    /// Period events for shared memory (not offered).
    pub const EVT_SHMEM_PERIODS: u32 = 1 << 3;
    /// Underrun/overrun events.
    pub const EVT_XRUNS: u32 = 1 << 4;
}

/// Sample formats (5.14.6.6.2): the bit index in `formats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// Unsigned 8 bit.
    U8,
    /// Signed 16 bit little-endian.
    S16,
    /// Signed 24 bit in 32 bit little-endian (low-aligned).
    S24,
    /// Signed 32 bit little-endian.
    S32,
    /// IEEE float 32 bit little-endian.
    Float,
}

impl Format {
    /// Every format the device can offer.
    pub const ALL: [Format; 5] = [
        Format::U8,
        Format::S16,
        Format::S24,
        Format::S32,
        Format::Float,
    ];

    /// The `VIRTIO_SND_PCM_FMT_*` value.
    pub fn bit(self) -> u8 {
        match self {
            Format::U8 => 4,
            Format::S16 => 5,
            Format::S24 => 15,
            Format::S32 => 17,
            Format::Float => 19,
        }
    }

    /// The format of a `VIRTIO_SND_PCM_FMT_*` value, if the device knows it.
    pub fn from_bit(bit: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.bit() == bit)
    }

    /// Bytes per sample.
    pub fn bytes(self) -> u32 {
        match self {
            Format::U8 => 1,
            Format::S16 => 2,
            Format::S24 | Format::S32 | Format::Float => 4,
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Format::U8 => "u8",
            Format::S16 => "s16",
            Format::S24 => "s24",
            Format::S32 => "s32",
            Format::Float => "float",
        }
    }
}

/// Frame rates (5.14.6.6.2): index = `VIRTIO_SND_PCM_RATE_*`. Linux maps
/// only indices 0 to 12.
pub const RATES: [u32; 13] = [
    5512, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 64000, 88200, 96000, 176400, 192000,
];

/// The `VIRTIO_SND_PCM_RATE_*` index of `hz`, among those Linux maps.
pub fn rate_bit(hz: u32) -> Option<u8> {
    RATES
        .iter()
        .position(|&r| r == hz)
        .and_then(|i| u8::try_from(i).ok())
}

/// Channel positions (5.14.6.8.1), the ones the device uses.
pub mod chmap {
    /// Mono.
    pub const MONO: u8 = 2;
    /// Front left.
    pub const FL: u8 = 3;
    /// Front right.
    pub const FR: u8 = 4;
    /// Rear left.
    pub const RL: u8 = 5;
    /// Rear right.
    pub const RR: u8 = 6;
    /// Front center.
    pub const FC: u8 = 7;
    /// Low frequency effects.
    pub const LFE: u8 = 8;
    /// Side left.
    pub const SL: u8 = 9;
    /// Side right.
    pub const SR: u8 = 10;
    /// Undefined.
    pub const NONE: u8 = 0;
    /// Most channels a map has.
    pub const MAX: usize = 18;
}

/// Control element roles, types and access bits (5.14.6.9).
pub mod ctl {
    /// Role: volume.
    pub const ROLE_VOLUME: u32 = 1;
    /// Role: mute switch.
    pub const ROLE_MUTE: u32 = 2;
    /// Type: boolean.
    pub const TYPE_BOOLEAN: u32 = 0;
    /// Type: 32-bit integer.
    pub const TYPE_INTEGER: u32 = 1;
    /// Access: readable.
    pub const ACCESS_READ: u32 = 1 << 0;
    /// Access: writable.
    pub const ACCESS_WRITE: u32 = 1 << 1;
    /// Access: metadata readable.
    pub const ACCESS_TLV_READ: u32 = 1 << 4;
    /// Event mask: the value changed.
    pub const EVT_MASK_VALUE: u16 = 1 << 0;
    /// ALSA's `SNDRV_CTL_TLVT_DB_SCALE` (`include/uapi/sound/tlv.h`).
    pub const TLV_DB_SCALE: u32 = 1;
    /// In a dB-scale TLV: the minimum mutes.
    pub const TLV_DB_SCALE_MUTE: u32 = 0x10000;
}

/// `virtio_snd_config` with controls (16 bytes); without
/// `VIRTIO_SND_F_CTLS` the device shows only the first 12.
#[doc(alias = "virtio_snd_config")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Config {
    /// Number of jacks.
    pub jacks: Le32,
    /// Number of PCM streams.
    pub streams: Le32,
    /// Number of channel maps.
    pub chmaps: Le32,
    /// Number of control elements (with `VIRTIO_SND_F_CTLS`).
    pub controls: Le32,
}
byte_valued!(Config, 16);

/// `virtio_snd_hdr`: a request code or a response status.
#[doc(alias = "virtio_snd_hdr")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Hdr {
    /// Code or status.
    pub code: Le32,
}
byte_valued!(Hdr, 4);

/// `virtio_snd_query_info` (5.14.6.1).
#[doc(alias = "virtio_snd_query_info")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct QueryInfo {
    /// Request code.
    pub hdr: Hdr,
    /// First item.
    pub start_id: Le32,
    /// Number of items.
    pub count: Le32,
    /// Size of one item's structure (the stride of the answer).
    pub size: Le32,
}
byte_valued!(QueryInfo, 16);

/// A request header with an item id: `virtio_snd_{jack,pcm,chmap,ctl}_hdr`.
#[doc(alias = "virtio_snd_pcm_hdr")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ItemHdr {
    /// Request code.
    pub hdr: Hdr,
    /// Jack, stream, channel map or control id.
    pub id: Le32,
}
byte_valued!(ItemHdr, 8);

/// `virtio_snd_event`.
#[doc(alias = "virtio_snd_event")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Event {
    /// Event code.
    pub hdr: Hdr,
    /// Jack or stream id.
    pub data: Le32,
}
byte_valued!(Event, 8);

/// `virtio_snd_ctl_event`: note the 16-bit control id.
#[doc(alias = "virtio_snd_ctl_event")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CtlEvent {
    /// `VIRTIO_SND_EVT_CTL_NOTIFY`.
    pub hdr: Hdr,
    /// Control id.
    pub control_id: Le16,
    /// What changed.
    pub mask: Le16,
}
byte_valued!(CtlEvent, 8);

/// `virtio_snd_jack_info` (5.14.6.4.1).
#[doc(alias = "virtio_snd_jack_info")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct JackInfo {
    /// Function group node id.
    pub hda_fn_nid: Le32,
    /// Jack features (none).
    pub features: Le32,
    /// HDA pin default configuration.
    pub hda_reg_defconf: Le32,
    /// HDA pin capabilities.
    pub hda_reg_caps: Le32,
    /// 1: connected.
    pub connected: u8,
    /// Zero.
    pub padding: [u8; 7],
}
byte_valued!(JackInfo, 24);

/// `virtio_snd_pcm_info` (5.14.6.6.2).
#[doc(alias = "virtio_snd_pcm_info")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcmInfo {
    /// Function group node id.
    pub hda_fn_nid: Le32,
    /// Supported features.
    pub features: Le32,
    /// Supported formats.
    pub formats: Le64,
    /// Supported rates.
    pub rates: Le64,
    /// Direction.
    pub direction: u8,
    /// Fewest channels.
    pub channels_min: u8,
    /// Most channels.
    pub channels_max: u8,
    /// Zero.
    pub padding: [u8; 5],
}
byte_valued!(PcmInfo, 32);

/// `virtio_snd_pcm_set_params` (5.14.6.6.3).
#[doc(alias = "virtio_snd_pcm_set_params")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SetParams {
    /// Code and stream id.
    pub hdr: ItemHdr,
    /// Driver's buffer size.
    pub buffer_bytes: Le32,
    /// Driver's period size.
    pub period_bytes: Le32,
    /// Selected features.
    pub features: Le32,
    /// Channels.
    pub channels: u8,
    /// `VIRTIO_SND_PCM_FMT_*`.
    pub format: u8,
    /// `VIRTIO_SND_PCM_RATE_*`.
    pub rate: u8,
    /// Zero.
    pub padding: u8,
}
byte_valued!(SetParams, 24);

/// `virtio_snd_pcm_xfer`: the header of an I/O message.
#[doc(alias = "virtio_snd_pcm_xfer")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcmXfer {
    /// Stream id.
    pub stream_id: Le32,
}
byte_valued!(PcmXfer, 4);

/// `virtio_snd_pcm_status`: the last 8 device-writable bytes of an I/O message.
#[doc(alias = "virtio_snd_pcm_status")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcmStatus {
    /// `VIRTIO_SND_S_OK` or `VIRTIO_SND_S_IO_ERR`.
    pub status: Le32,
    /// Host-side queued bytes.
    pub latency_bytes: Le32,
}
byte_valued!(PcmStatus, 8);

/// `virtio_snd_chmap_info` (5.14.6.8.1).
#[doc(alias = "virtio_snd_chmap_info")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ChmapInfo {
    /// Function group node id.
    pub hda_fn_nid: Le32,
    /// Direction.
    pub direction: u8,
    /// Number of valid positions.
    pub channels: u8,
    /// Channel positions.
    pub positions: [u8; chmap::MAX],
}
byte_valued!(ChmapInfo, 24);

/// `virtio_snd_ctl_info` for INTEGER and BOOLEAN elements (5.14.6.9.1).
///
/// The C union that ends the structure holds `le64` members, so on a 64-bit
/// guest the structure is 96 bytes (the union starts at offset 72, padded to
/// 8), not the 92 its fields add up to; this struct spells the whole 96 bytes
/// out. The driver says which size it uses (`query_info.size`), and the
/// device uses that as the stride.
#[doc(alias = "virtio_snd_ctl_info")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct CtlInfo {
    /// Function group node id.
    pub hda_fn_nid: Le32,
    /// Role (`(role << 1) | direction`).
    pub role: Le32,
    /// Value type.
    pub type_: Le32,
    /// Access bits.
    pub access: Le32,
    /// Number of members of the value.
    pub count: Le32,
    /// Index of elements with the same name.
    pub index: Le32,
    /// NUL-terminated ASCII name.
    pub name: [u8; 44],
    /// Alignment of the union on 64-bit guests.
    pub pad: [u8; 4],
    /// `integer.min` (or the low half of `integer64.min`).
    pub min: Le32,
    /// `integer.max`.
    pub max: Le32,
    /// `integer.step`.
    pub step: Le32,
    /// The rest of the union.
    pub rest: [u8; 12],
}
byte_valued!(CtlInfo, 96);

impl Default for CtlInfo {
    fn default() -> Self {
        Self {
            hda_fn_nid: 0.into(),
            role: 0.into(),
            type_: 0.into(),
            access: 0.into(),
            count: 0.into(),
            index: 0.into(),
            name: [0; 44],
            pad: [0; 4],
            min: 0.into(),
            max: 0.into(),
            step: 0.into(),
            rest: [0; 12],
        }
    }
}

/// Size of `virtio_snd_ctl_value`.
pub const CTL_VALUE_SIZE: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::vm_memory::ByteValued;

    #[test]
    fn format_bits_are_the_uapi_values() {
        assert_eq!(Format::from_bit(5), Some(Format::S16));
        assert_eq!(Format::from_bit(19), Some(Format::Float));
        assert_eq!(Format::from_bit(0), None, "IMA ADPCM is not offered");
    }

    #[test]
    fn rate_bits_cover_what_linux_maps() {
        assert_eq!(rate_bit(48000), Some(7));
        assert_eq!(rate_bit(192000), Some(12));
        assert_eq!(rate_bit(12000), None);
    }

    #[test]
    fn ctl_info_is_96_bytes_with_the_union_at_72() {
        let info = CtlInfo {
            min: 0x1122_3344.into(),
            ..CtlInfo::default()
        };
        let bytes = info.as_slice();
        assert_eq!(bytes.len(), 96);
        assert_eq!(&bytes[72..76], &[0x44, 0x33, 0x22, 0x11]);
    }
}
