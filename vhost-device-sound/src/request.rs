// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Control and I/O messages: parsing what the driver sends, writing what the
//! device answers (virtio 1.3, 5.14.6). Pure: it sees bytes, a
//! [`Writer`] and the topology, never a vring.
//!
//! A control message is a device-readable request (a header with a code,
//! then the code's fields) and a device-writable response (a status, then
//! the code's payload). Item queries answer `count` structures with the
//! driver's `size` as the stride, truncated or zero-padded (5.14.6.1: "used
//! for backward compatibility"; Linux's `virtio_snd_ctl_info` is 96 bytes
//! on 64-bit guests).

use std::io::Write;

use thiserror::Error;
use vhost_device_common::queue::Writer;
use vhost_device_common::vm_memory::ByteValued;

use crate::args::StreamSpec;
use crate::virtio::{
    chmap, code, ChmapInfo, Direction, Hdr, ItemHdr, JackInfo, PcmInfo, QueryInfo, SetParams,
    Status, CTL_VALUE_SIZE,
};

/// The most request bytes read (a CTL_WRITE is 8 + 512).
pub const MAX_REQUEST: usize = 1024;
/// The largest item stride a query may ask for.
pub const MAX_ITEM_SIZE: u32 = 4096;

/// Why a control message cannot be served: each maps to a status.
#[derive(Debug, Error)]
pub enum Error {
    /// The request is shorter than its code requires.
    #[error("request {code:#06x} of {len} bytes is too short")]
    Short {
        /// Request code.
        code: u32,
        /// Bytes given.
        len: usize,
    },
    /// No request header at all.
    #[error("request without a header")]
    NoHeader,
    /// An unknown request code.
    #[error("unknown request code {0:#06x}")]
    UnknownCode(u32),
    /// An item id or range beyond the device's items.
    #[error("{what} {start}+{count} is beyond the {total} the device has")]
    OutOfRange {
        /// What kind of item.
        what: &'static str,
        /// First id.
        start: u32,
        /// Count.
        count: u32,
        /// How many exist.
        total: usize,
    },
    /// A query with a stride of 0 or above [`MAX_ITEM_SIZE`].
    #[error("query item size {0} is invalid")]
    BadItemSize(u32),
    /// The response does not fit the device-writable buffer.
    #[error("response of {need} bytes does not fit the {have}-byte buffer")]
    ResponseTooLarge {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// A PCM command in a state that does not allow it (5.14.6.6.1).
    #[error("stream {stream}: {command} is not allowed in state {state}")]
    BadTransition {
        /// Stream id.
        stream: u32,
        /// The command.
        command: &'static str,
        /// The state.
        state: &'static str,
    },
    /// SET_PARAMS with values the stream does not offer.
    #[error("stream {stream}: {why}")]
    BadParams {
        /// Stream id.
        stream: u32,
        /// What is wrong.
        why: String,
    },
    /// A feature the device does not implement (jack remapping, TLV
    /// writes, controls without `--controls`).
    #[error("{0} is not supported")]
    NotSupported(&'static str),
    /// The host could not do it (open a PCM, create a file).
    #[error("host failure on {0}")]
    Host(String, #[source] std::io::Error),
}

impl Error {
    /// The status the driver gets.
    pub fn status(&self) -> Status {
        match self {
            Error::NotSupported(_) => Status::NotSupp,
            Error::Host(..) => Status::IoErr,
            _ => Status::BadMsg,
        }
    }
}

/// Which items a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Items {
    /// Jacks.
    Jacks,
    /// PCM streams.
    Pcms,
    /// Channel maps.
    Chmaps,
    /// Control elements.
    Controls,
}

impl Items {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Items::Jacks => "jack",
            Items::Pcms => "stream",
            Items::Chmaps => "channel map",
            Items::Controls => "control",
        }
    }
}

/// A PCM command (5.14.6.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmCommand {
    /// SET_PARAMS.
    SetParams,
    /// PREPARE.
    Prepare,
    /// START.
    Start,
    /// STOP.
    Stop,
    /// RELEASE.
    Release,
}

impl PcmCommand {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            PcmCommand::SetParams => "SET_PARAMS",
            PcmCommand::Prepare => "PREPARE",
            PcmCommand::Start => "START",
            PcmCommand::Stop => "STOP",
            PcmCommand::Release => "RELEASE",
        }
    }
}

/// A parsed control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `*_INFO`: `count` items from `start`, `size` bytes apart.
    Query {
        /// Which items.
        items: Items,
        /// First id.
        start: u32,
        /// How many.
        count: u32,
        /// Stride of the answer.
        size: u32,
    },
    /// JACK_REMAP.
    JackRemap(u32),
    /// SET_PARAMS.
    SetParams(SetParams),
    /// PREPARE, START, STOP or RELEASE of a stream.
    Pcm(PcmCommand, u32),
    /// CTL_ENUM_ITEMS.
    CtlEnumItems(u32),
    /// CTL_READ.
    CtlRead(u32),
    /// CTL_WRITE with the value (`virtio_snd_ctl_value`, 512 bytes).
    CtlWrite(u32, Vec<u8>),
    /// CTL_TLV_READ.
    CtlTlvRead(u32),
    /// CTL_TLV_WRITE or CTL_TLV_COMMAND.
    CtlTlvWrite(u32),
}

/// Copy a `T` from the start of `bytes` (which need not be aligned).
fn obj<T: ByteValued + Default>(bytes: &[u8], code: u32) -> Result<T, Error> {
    let src = bytes.get(..std::mem::size_of::<T>()).ok_or(Error::Short {
        code,
        len: bytes.len(),
    })?;
    let mut t = T::default();
    t.as_mut_slice().copy_from_slice(src);
    Ok(t)
}

/// Parse a control request from its device-readable bytes.
pub fn parse(bytes: &[u8]) -> Result<Request, Error> {
    if bytes.len() < std::mem::size_of::<Hdr>() {
        return Err(Error::NoHeader);
    }
    let code = obj::<Hdr>(bytes, 0)?.code.to_native();
    let item = || obj::<ItemHdr>(bytes, code).map(|h| h.id.to_native());
    let query = |items| {
        obj::<QueryInfo>(bytes, code).map(|q| Request::Query {
            items,
            start: q.start_id.to_native(),
            count: q.count.to_native(),
            size: q.size.to_native(),
        })
    };
    match code {
        code::JACK_INFO => query(Items::Jacks),
        code::PCM_INFO => query(Items::Pcms),
        code::CHMAP_INFO => query(Items::Chmaps),
        code::CTL_INFO => query(Items::Controls),
        code::JACK_REMAP => item().map(Request::JackRemap),
        code::PCM_SET_PARAMS => obj::<SetParams>(bytes, code).map(Request::SetParams),
        code::PCM_PREPARE => item().map(|s| Request::Pcm(PcmCommand::Prepare, s)),
        code::PCM_START => item().map(|s| Request::Pcm(PcmCommand::Start, s)),
        code::PCM_STOP => item().map(|s| Request::Pcm(PcmCommand::Stop, s)),
        code::PCM_RELEASE => item().map(|s| Request::Pcm(PcmCommand::Release, s)),
        code::CTL_ENUM_ITEMS => item().map(Request::CtlEnumItems),
        code::CTL_READ => item().map(Request::CtlRead),
        code::CTL_WRITE => {
            let id = item()?;
            let value = bytes
                .get(8..8 + CTL_VALUE_SIZE)
                .ok_or(Error::Short {
                    code,
                    len: bytes.len(),
                })?
                .to_vec();
            Ok(Request::CtlWrite(id, value))
        }
        code::CTL_TLV_READ => item().map(Request::CtlTlvRead),
        code::CTL_TLV_WRITE | code::CTL_TLV_COMMAND => item().map(Request::CtlTlvWrite),
        other => Err(Error::UnknownCode(other)),
    }
}

/// Write `status` and then `payload` as the response; returns the used
/// length. If the payload does not fit, only a BAD_MSG status is written.
pub fn respond(writer: &mut Writer<'_>, status: Status, payload: &[u8]) -> u32 {
    let have = writer.available_bytes();
    if have < 4 {
        return 0;
    }
    let (status, payload) = if 4 + payload.len() > have {
        (Status::BadMsg, &[][..])
    } else {
        (status, payload)
    };
    let hdr = Hdr {
        code: status.wire(),
    };
    if writer.write_all(hdr.as_slice()).is_err() || writer.write_all(payload).is_err() {
        return 0;
    }
    u32::try_from(writer.bytes_written()).unwrap_or(0)
}

/// The payload of a query: `count` items from `start` of `all`, each
/// truncated or zero-padded to `size`.
pub fn query_payload(
    items: Items,
    all: &[Vec<u8>],
    start: u32,
    count: u32,
    size: u32,
    room: usize,
) -> Result<Vec<u8>, Error> {
    let range = || Error::OutOfRange {
        what: items.name(),
        start,
        count,
        total: all.len(),
    };
    let begin = usize::try_from(start).map_err(|_| range())?;
    let end = begin
        .checked_add(usize::try_from(count).map_err(|_| range())?)
        .ok_or_else(range)?;
    if end > all.len() {
        return Err(range());
    }
    if size == 0 || size > MAX_ITEM_SIZE {
        return Err(Error::BadItemSize(size));
    }
    let stride = usize::try_from(size).map_err(|_| Error::BadItemSize(size))?;
    let need = stride * (end - begin);
    if 4 + need > room {
        return Err(Error::ResponseTooLarge {
            need: 4 + need,
            have: room,
        });
    }
    let mut out = vec![0u8; need];
    for (slot, item) in out.chunks_exact_mut(stride).zip(&all[begin..end]) {
        let n = item.len().min(stride);
        slot[..n].copy_from_slice(&item[..n]);
    }
    Ok(out)
}

/// HDA pin default configuration of a stream's jack (HDA 7.3.3.31):
/// connectivity jack (31:30 = 0), location external rear (29:24 = 0x02),
/// default device Line Out or Line In (23:20), connection 1/8" (19:16 = 1),
/// association 1, sequence = stream.
pub fn jack_defconf(direction: Direction, stream: u32) -> u32 {
    let device = match direction {
        Direction::Output => 0x0,
        Direction::Input => 0x8,
    };
    (0x02 << 24) | (device << 20) | (0x1 << 16) | (0x1 << 4) | (stream & 0xF)
}

/// HDA pin capabilities (HDA 7.3.4.9): presence detect (bit 2), and output
/// (bit 4) or input (bit 5) capable.
pub fn jack_caps(direction: Direction) -> u32 {
    match direction {
        Direction::Output => (1 << 2) | (1 << 4),
        Direction::Input => (1 << 2) | (1 << 5),
    }
}

/// The encoded items of one kind (`*_info` structures), by id.
pub type ItemList = Vec<Vec<u8>>;

/// The jack, PCM and channel-map items of a topology: one of each per stream.
pub fn topology_items(streams: &[StreamSpec], xrun_events: bool) -> (ItemList, ItemList, ItemList) {
    let mut jacks = Vec::new();
    let mut pcms = Vec::new();
    let mut chmaps = Vec::new();
    for (id, s) in (0u32..).zip(streams) {
        let jack = JackInfo {
            hda_fn_nid: 0.into(),
            features: 0.into(),
            hda_reg_defconf: jack_defconf(s.direction, id).into(),
            hda_reg_caps: jack_caps(s.direction).into(),
            connected: 1,
            padding: [0; 7],
        };
        jacks.push(jack.as_slice().to_vec());
        let features = if xrun_events {
            crate::virtio::pcm_features::EVT_XRUNS
        } else {
            0
        };
        let pcm = PcmInfo {
            hda_fn_nid: 0.into(),
            features: features.into(),
            formats: s.format_mask().into(),
            rates: s.rate_mask().into(),
            direction: s.direction.wire(),
            channels_min: s.channels_min,
            channels_max: s.channels_max,
            padding: [0; 5],
        };
        pcms.push(pcm.as_slice().to_vec());
        let mut map = ChmapInfo {
            hda_fn_nid: 0.into(),
            direction: s.direction.wire(),
            channels: s.channels_max,
            positions: [chmap::NONE; chmap::MAX],
        };
        let positions: &[u8] = match s.channels_max {
            1 => &[chmap::MONO],
            2 => &[chmap::FL, chmap::FR],
            3 => &[chmap::FL, chmap::FR, chmap::FC],
            4 => &[chmap::FL, chmap::FR, chmap::RL, chmap::RR],
            5 => &[chmap::FL, chmap::FR, chmap::RL, chmap::RR, chmap::FC],
            6 => &[
                chmap::FL,
                chmap::FR,
                chmap::RL,
                chmap::RR,
                chmap::FC,
                chmap::LFE,
            ],
            _ => &[
                chmap::FL,
                chmap::FR,
                chmap::RL,
                chmap::RR,
                chmap::FC,
                chmap::LFE,
                chmap::SL,
                chmap::SR,
            ],
        };
        for (slot, p) in map.positions.iter_mut().zip(positions) {
            *slot = *p;
        }
        chmaps.push(map.as_slice().to_vec());
    }
    (jacks, pcms, chmaps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{Format, ItemHdr};

    fn bytes_of<T: ByteValued>(t: &T) -> Vec<u8> {
        t.as_slice().to_vec()
    }

    fn query(code: u32, start: u32, count: u32, size: u32) -> Vec<u8> {
        bytes_of(&QueryInfo {
            hdr: Hdr { code: code.into() },
            start_id: start.into(),
            count: count.into(),
            size: size.into(),
        })
    }

    #[test]
    fn every_query_code_parses_to_its_items() {
        for (code, items) in [
            (code::JACK_INFO, Items::Jacks),
            (code::PCM_INFO, Items::Pcms),
            (code::CHMAP_INFO, Items::Chmaps),
            (code::CTL_INFO, Items::Controls),
        ] {
            assert_eq!(
                parse(&query(code, 1, 2, 32)).unwrap(),
                Request::Query {
                    items,
                    start: 1,
                    count: 2,
                    size: 32
                }
            );
        }
    }

    #[test]
    fn pcm_commands_parse_with_their_stream() {
        for (code, cmd) in [
            (code::PCM_PREPARE, PcmCommand::Prepare),
            (code::PCM_START, PcmCommand::Start),
            (code::PCM_STOP, PcmCommand::Stop),
            (code::PCM_RELEASE, PcmCommand::Release),
        ] {
            let req = bytes_of(&ItemHdr {
                hdr: Hdr { code: code.into() },
                id: 7.into(),
            });
            assert_eq!(parse(&req).unwrap(), Request::Pcm(cmd, 7));
        }
    }

    #[test]
    fn every_short_request_is_bad_msg() {
        for code in [
            code::JACK_INFO,
            code::JACK_REMAP,
            code::PCM_INFO,
            code::PCM_SET_PARAMS,
            code::PCM_PREPARE,
            code::PCM_RELEASE,
            code::PCM_START,
            code::PCM_STOP,
            code::CHMAP_INFO,
            code::CTL_INFO,
            code::CTL_ENUM_ITEMS,
            code::CTL_READ,
            code::CTL_WRITE,
            code::CTL_TLV_READ,
        ] {
            let err = parse(&code.to_le_bytes()).unwrap_err();
            assert!(matches!(err, Error::Short { .. }), "{code:#x}: {err:?}");
            assert_eq!(err.status(), Status::BadMsg);
        }
    }

    #[test]
    fn no_header_and_unknown_codes_are_bad_msg() {
        assert!(matches!(parse(&[1, 0]).unwrap_err(), Error::NoHeader));
        let err = parse(&0x9999u32.to_le_bytes()).unwrap_err();
        assert!(matches!(err, Error::UnknownCode(0x9999)), "{err:?}");
        assert_eq!(err.status(), Status::BadMsg);
    }

    #[test]
    fn ctl_write_carries_its_512_byte_value() {
        let mut req = bytes_of(&ItemHdr {
            hdr: Hdr {
                code: code::CTL_WRITE.into(),
            },
            id: 3.into(),
        });
        req.extend_from_slice(&[9; 512]);
        assert_eq!(parse(&req).unwrap(), Request::CtlWrite(3, vec![9; 512]));
        assert!(parse(&req[..300]).is_err());
    }

    #[test]
    fn query_uses_the_drivers_stride_truncating_or_padding() {
        let all = vec![vec![1u8; 4], vec![2u8; 4], vec![3u8; 4]];

        let wide = query_payload(Items::Pcms, &all, 1, 2, 6, 100).unwrap();
        let narrow = query_payload(Items::Pcms, &all, 0, 3, 2, 100).unwrap();

        assert_eq!(wide, vec![2, 2, 2, 2, 0, 0, 3, 3, 3, 3, 0, 0]);
        assert_eq!(narrow, vec![1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn query_beyond_the_items_is_out_of_range() {
        let all = vec![vec![0u8; 4]; 2];
        for (start, count) in [(2, 1), (1, 2), (u32::MAX, 2), (0, u32::MAX)] {
            let err = query_payload(Items::Jacks, &all, start, count, 4, 1000).unwrap_err();
            assert!(matches!(err, Error::OutOfRange { .. }), "{start}+{count}");
        }
    }

    #[test]
    fn query_with_zero_or_huge_stride_or_too_little_room_is_refused() {
        let all = vec![vec![0u8; 4]; 2];
        assert!(matches!(
            query_payload(Items::Jacks, &all, 0, 1, 0, 1000),
            Err(Error::BadItemSize(0))
        ));
        assert!(query_payload(Items::Jacks, &all, 0, 1, 1 << 20, 1 << 21).is_err());
        assert!(matches!(
            query_payload(Items::Jacks, &all, 0, 2, 4, 11),
            Err(Error::ResponseTooLarge { need: 12, have: 11 })
        ));
    }

    #[test]
    fn topology_has_one_jack_pcm_and_chmap_per_stream() {
        let streams = vec![
            StreamSpec::default_for(Direction::Output),
            StreamSpec {
                channels_min: 1,
                channels_max: 1,
                formats: vec![Format::S16],
                ..StreamSpec::default_for(Direction::Input)
            },
        ];

        let (jacks, pcms, chmaps) = topology_items(&streams, true);

        assert_eq!((jacks.len(), pcms.len(), chmaps.len()), (2, 2, 2));
        let pcm = PcmInfo::from_slice(&pcms[1]).unwrap();
        assert_eq!(pcm.direction, 1);
        assert_eq!(pcm.formats.to_native(), 1 << 5);
        assert_eq!(pcm.features.to_native(), 1 << 4);
        let map = ChmapInfo::from_slice(&chmaps[0]).unwrap();
        assert_eq!(
            (map.channels, map.positions[0], map.positions[1]),
            (2, 3, 4)
        );
        assert_eq!(ChmapInfo::from_slice(&chmaps[1]).unwrap().positions[0], 2);
        let jack = JackInfo::from_slice(&jacks[1]).unwrap();
        assert_eq!((jack.hda_reg_defconf.to_native() >> 20) & 0xF, 0x8);
        assert_eq!(jack.connected, 1);
    }
}
