// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Parsing requestq requests and writing their responses (virtio 1.4, 5.23.6).
//!
//! A request is the device-readable part of a chain: the 8-byte
//! [`ReqHead`] then the message's fields; the response goes into the
//! device-writable part: the 8-byte [`RespHead`] then the message's fields.
//! However the driver splits them over descriptors, [`Reader`] and
//! [`Writer`] present each as one stream. Extra space on either side is
//! ignored (5.23.6.1, device requirements).
//!
//! Status codes, as the device requirements of 5.23.6 stipulate:
//!
//! | condition | status |
//! |---|---|
//! | the head does not fit in the readable part | `EINVAL` |
//! | unknown `msg_type` | `EOPNOTSUPP` |
//! | the request does not fit in the readable part | `EINVAL` |
//! | reserved bytes not zero, flags not allowed, `hw_counter` = INVALID | `EINVAL` |
//! | the response does not fit in the writable part | `EINVAL` (the head, as much as fits) |
//! | not even the status byte fits | nothing written, used length 0 |
//! | `clock_id` ≥ the number of clocks | `ENODEV` |
//! | an alarm request without `VIRTIO_RTC_F_ALARM` or for a clock without an alarm | `ENODEV` |
//! | unknown `hw_counter`; `READ_CROSS` (no cross-timestamping) | `EOPNOTSUPP` |
//! | the host clock cannot be read | `EIO` |
//!
//! On `OK` the used length is exactly the response's size (Linux refuses any
//! other); on an error it is the head's 8 bytes.
//!
//! This module is pure: it sees a [`Reader`] and a [`Writer`], never a vring
//! or a clock.

use std::io::{self, Write};

use thiserror::Error;
use vhost_device_common::queue::{Reader, Writer};
use vhost_device_common::vm_memory::ByteValued;

use crate::virtio::{
    counter, MsgType, ReqClock, ReqCross, ReqHead, ReqSetAlarm, ReqSetAlarmEnabled, RespCfg,
    RespClockCap, RespCrossCap, RespHead, RespRead, RespReadAlarm, Status, FLAG_ALARM_ENABLED,
};

/// A parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `READ`.
    Read {
        /// Clock id.
        clock: u16,
    },
    /// `READ_CROSS`.
    ReadCross {
        /// Clock id.
        clock: u16,
        /// Hardware counter.
        counter: u8,
    },
    /// `CFG`.
    Cfg,
    /// `CLOCK_CAP`.
    ClockCap {
        /// Clock id.
        clock: u16,
    },
    /// `CROSS_CAP`.
    CrossCap {
        /// Clock id.
        clock: u16,
        /// Hardware counter.
        counter: u8,
    },
    /// `READ_ALARM`.
    ReadAlarm {
        /// Clock id.
        clock: u16,
    },
    /// `SET_ALARM`.
    SetAlarm {
        /// Clock id.
        clock: u16,
        /// Alarm time (ns).
        time: u64,
        /// Enable it.
        enabled: bool,
    },
    /// `SET_ALARM_ENABLED`.
    SetAlarmEnabled {
        /// Clock id.
        clock: u16,
        /// Enable or disable.
        enabled: bool,
    },
}

impl Request {
    /// The size of this request's OK response, head included.
    pub fn response_size(&self) -> usize {
        let body = match self {
            Request::Read { .. } => RespRead::SIZE,
            Request::ReadCross { .. } => RespRead::SIZE + 8,
            Request::Cfg => RespCfg::SIZE,
            Request::ClockCap { .. } => RespClockCap::SIZE,
            Request::CrossCap { .. } => RespCrossCap::SIZE,
            Request::ReadAlarm { .. } => RespReadAlarm::SIZE,
            Request::SetAlarm { .. } | Request::SetAlarmEnabled { .. } => 0,
        };
        RespHead::SIZE + body
    }

    /// The clock the request names, if any.
    pub fn clock(&self) -> Option<u16> {
        match *self {
            Request::Cfg => None,
            Request::Read { clock }
            | Request::ReadCross { clock, .. }
            | Request::ClockCap { clock }
            | Request::CrossCap { clock, .. }
            | Request::ReadAlarm { clock }
            | Request::SetAlarm { clock, .. }
            | Request::SetAlarmEnabled { clock, .. } => Some(clock),
        }
    }
}

/// Sizes of wire structs, for the arithmetic above.
trait Size {
    const SIZE: usize;
}

impl<T: ByteValued> Size for T {
    const SIZE: usize = std::mem::size_of::<T>();
}

/// A request the device refuses before looking at any clock.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    /// The readable part is shorter than the head or the message.
    #[error("request of {have} bytes is shorter than the {need} bytes of its message")]
    TooShort {
        /// Bytes readable.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Unknown message type.
    #[error("unknown message type {0:#06x}")]
    UnknownType(u16),
    /// A reserved byte is not zero.
    #[error("reserved bytes of message {0:?} are not zero")]
    Reserved(MsgType),
    /// A flag bit that the message does not define.
    #[error("flags {flags:#04x} of message {msg:?} are not allowed")]
    Flags {
        /// Message type.
        msg: MsgType,
        /// The flags.
        flags: u8,
    },
    /// `hw_counter` is `VIRTIO_RTC_COUNTER_INVALID`.
    #[error("hardware counter 0xff (invalid)")]
    InvalidCounter,
}

impl Error {
    /// The status the driver gets.
    pub fn status(&self) -> Status {
        match self {
            Error::UnknownType(_) => Status::EOpNotSupp,
            Error::TooShort { .. }
            | Error::Reserved(_)
            | Error::Flags { .. }
            | Error::InvalidCounter => Status::EInval,
        }
    }
}

fn read_obj<T: ByteValued>(reader: &mut Reader<'_>) -> Result<T, Error> {
    let have = reader.available_bytes();
    reader.read_obj::<T>().map_err(|_| Error::TooShort {
        have,
        need: std::mem::size_of::<T>(),
    })
}

fn zero(bytes: &[u8], msg: MsgType) -> Result<(), Error> {
    if bytes.iter().all(|&b| b == 0) {
        Ok(())
    } else {
        Err(Error::Reserved(msg))
    }
}

fn check_counter(counter: u8) -> Result<u8, Error> {
    if counter == counter::INVALID {
        Err(Error::InvalidCounter)
    } else {
        Ok(counter)
    }
}

fn enabled(flags: u8, msg: MsgType) -> Result<bool, Error> {
    if flags & !FLAG_ALARM_ENABLED != 0 {
        return Err(Error::Flags { msg, flags });
    }
    Ok(flags & FLAG_ALARM_ENABLED != 0)
}

/// Parse the request in `reader`.
pub fn parse(reader: &mut Reader<'_>) -> Result<Request, Error> {
    let total = reader.available_bytes();
    let head: ReqHead = read_obj(reader)?;
    let msg = MsgType::try_from(head.msg_type.to_native()).map_err(Error::UnknownType)?;
    zero(&head.reserved, msg)?;
    let short = |e: Error| match e {
        Error::TooShort { need, .. } => Error::TooShort {
            have: total,
            need: need + ReqHead::SIZE,
        },
        e => e,
    };
    Ok(match msg {
        MsgType::Cfg => Request::Cfg,
        MsgType::Read | MsgType::ClockCap | MsgType::ReadAlarm => {
            let body: ReqClock = read_obj(reader).map_err(short)?;
            zero(&body.reserved, msg)?;
            let clock = body.clock_id.to_native();
            match msg {
                MsgType::Read => Request::Read { clock },
                MsgType::ClockCap => Request::ClockCap { clock },
                _ => Request::ReadAlarm { clock },
            }
        }
        MsgType::ReadCross | MsgType::CrossCap => {
            let body: ReqCross = read_obj(reader).map_err(short)?;
            zero(&body.reserved, msg)?;
            let clock = body.clock_id.to_native();
            let counter = check_counter(body.hw_counter)?;
            if msg == MsgType::ReadCross {
                Request::ReadCross { clock, counter }
            } else {
                Request::CrossCap { clock, counter }
            }
        }
        MsgType::SetAlarm => {
            let body: ReqSetAlarm = read_obj(reader).map_err(short)?;
            zero(&body.reserved, msg)?;
            Request::SetAlarm {
                clock: body.clock_id.to_native(),
                time: body.alarm_time.to_native(),
                enabled: enabled(body.flags, msg)?,
            }
        }
        MsgType::SetAlarmEnabled => {
            let body: ReqSetAlarmEnabled = read_obj(reader).map_err(short)?;
            zero(&body.reserved, msg)?;
            Request::SetAlarmEnabled {
                clock: body.clock_id.to_native(),
                enabled: enabled(body.flags, msg)?,
            }
        }
    })
}

/// An OK response's fields (the head is added when writing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// `READ`: the reading.
    Read(u64),
    /// `CFG`: the number of clocks.
    Cfg(u16),
    /// `CLOCK_CAP`.
    ClockCap {
        /// Clock type.
        clock_type: u8,
        /// Smearing variant.
        smearing: u8,
        /// Flags.
        flags: u8,
    },
    /// `CROSS_CAP`: flags.
    CrossCap(u8),
    /// `READ_ALARM`.
    ReadAlarm {
        /// Alarm time.
        time: u64,
        /// Flags.
        flags: u8,
    },
    /// `SET_ALARM`, `SET_ALARM_ENABLED`: the head only.
    Empty,
}

fn write_obj<T: ByteValued>(writer: &mut Writer<'_>, v: T) -> io::Result<()> {
    writer.write_all(v.as_slice())
}

impl Response {
    /// Write the OK head and the fields; returns the used length. The caller
    /// checked that the writable part holds [`Request::response_size`].
    pub fn write(&self, writer: &mut Writer<'_>) -> io::Result<u32> {
        let start = writer.bytes_written();
        write_obj(writer, RespHead::default())?;
        match *self {
            Response::Read(reading) => write_obj(
                writer,
                RespRead {
                    clock_reading: reading.into(),
                },
            )?,
            Response::Cfg(n) => write_obj(
                writer,
                RespCfg {
                    num_clocks: n.into(),
                    reserved: [0; 6],
                },
            )?,
            Response::ClockCap {
                clock_type,
                smearing,
                flags,
            } => write_obj(
                writer,
                RespClockCap {
                    clock_type,
                    leap_second_smearing: smearing,
                    flags,
                    reserved: [0; 5],
                },
            )?,
            Response::CrossCap(flags) => write_obj(
                writer,
                RespCrossCap {
                    flags,
                    reserved: [0; 7],
                },
            )?,
            Response::ReadAlarm { time, flags } => write_obj(
                writer,
                RespReadAlarm {
                    alarm_time: time.into(),
                    flags,
                    reserved: [0; 7],
                },
            )?,
            Response::Empty => {}
        }
        Ok(used(writer.bytes_written() - start))
    }
}

fn used(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Write an error head with `status`, as much of it as fits (nothing when
/// not even the status byte fits); returns the used length.
pub fn write_status(writer: &mut Writer<'_>, status: Status) -> io::Result<u32> {
    let head = RespHead {
        status: status as u8,
        reserved: [0; 7],
    };
    let n = writer.available_bytes().min(RespHead::SIZE);
    writer.write_all(&head.as_slice()[..n])?;
    Ok(used(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{ClockType, FLAG_ALARM_CAP};
    use vhost_device_common::queue::GuestMemory;
    use vhost_device_common::virtio_queue::desc::{
        split::Descriptor as SplitDescriptor, RawDescriptor,
    };
    use vhost_device_common::virtio_queue::mock::MockSplitQueue;
    use vhost_device_common::virtio_queue::QueueOwnedT;
    use vhost_device_common::vm_memory::{Bytes, GuestAddress};

    const VIRTQ_DESC_F_WRITE: u16 = 2;

    /// One chain: `request` split into readable pieces of `split` bytes,
    /// then `out` writable bytes; `f` gets its Reader and Writer; returns
    /// `f`'s result and the bytes written.
    fn with_chain<R>(
        request: &[u8],
        split: usize,
        out: u32,
        f: impl FnOnce(&mut Reader<'_>, &mut Writer<'_>) -> R,
    ) -> (R, Vec<u8>) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 64);
        let mut descs = Vec::new();
        let mut addr = 0x8_0000u64;
        for piece in request.chunks(split.max(1)) {
            mem.write_slice(piece, GuestAddress(addr)).unwrap();
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                addr,
                u32::try_from(piece.len()).unwrap(),
                0,
                0,
            )));
            addr += 0x1000;
        }
        let out_addr = addr;
        if out > 0 {
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                out_addr,
                out,
                VIRTQ_DESC_F_WRITE,
                0,
            )));
        }
        vq.build_desc_chain(&descs).unwrap();
        let mut q: vhost_device_common::virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut reader = Reader::new(&mem, chain.clone()).unwrap();
        let mut writer = Writer::new(&mem, chain).unwrap();
        let r = f(&mut reader, &mut writer);
        let n = writer.bytes_written();
        let mut written = vec![0u8; n];
        mem.read_slice(&mut written, GuestAddress(out_addr))
            .unwrap();
        (r, written)
    }

    fn req(msg: u16, body: &[u8]) -> Vec<u8> {
        let mut v = msg.to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 6]);
        v.extend_from_slice(body);
        v
    }

    fn clock_body(id: u16) -> Vec<u8> {
        let mut v = id.to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 6]);
        v
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Request, Error> {
        with_chain(bytes, 64, 8, |r, _| parse(r)).0
    }

    #[test]
    fn read_names_its_clock() {
        assert_eq!(
            parse_bytes(&req(0x0001, &clock_body(3))),
            Ok(Request::Read { clock: 3 })
        );
    }

    #[test]
    fn cfg_has_no_body() {
        assert_eq!(parse_bytes(&req(0x1000, &[])), Ok(Request::Cfg));
    }

    #[test]
    fn clock_cap_and_read_alarm_name_their_clock() {
        assert_eq!(
            parse_bytes(&req(0x1001, &clock_body(1))),
            Ok(Request::ClockCap { clock: 1 })
        );
        assert_eq!(
            parse_bytes(&req(0x1003, &clock_body(2))),
            Ok(Request::ReadAlarm { clock: 2 })
        );
    }

    #[test]
    fn cross_requests_carry_the_counter() {
        let body = [2, 0, counter::X86_TSC, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_bytes(&req(0x0002, &body)),
            Ok(Request::ReadCross {
                clock: 2,
                counter: 1
            })
        );
        assert_eq!(
            parse_bytes(&req(0x1002, &body)),
            Ok(Request::CrossCap {
                clock: 2,
                counter: 1
            })
        );
    }

    #[test]
    fn invalid_counter_is_einval() {
        let e = parse_bytes(&req(0x1002, &[0, 0, 0xFF, 0, 0, 0, 0, 0])).unwrap_err();
        assert_eq!(e, Error::InvalidCounter);
        assert_eq!(e.status(), Status::EInval);
    }

    #[test]
    fn set_alarm_reads_time_clock_and_flag() {
        let mut body = 0x1122_3344_5566_7788u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[5, 0, FLAG_ALARM_ENABLED, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_bytes(&req(0x1004, &body)),
            Ok(Request::SetAlarm {
                clock: 5,
                time: 0x1122_3344_5566_7788,
                enabled: true
            })
        );
    }

    #[test]
    fn set_alarm_enabled_reads_the_flag() {
        assert_eq!(
            parse_bytes(&req(0x1005, &[1, 0, 0, 0, 0, 0, 0, 0])),
            Ok(Request::SetAlarmEnabled {
                clock: 1,
                enabled: false
            })
        );
    }

    #[test]
    fn undefined_flag_bits_are_einval() {
        let e = parse_bytes(&req(0x1005, &[1, 0, 0x03, 0, 0, 0, 0, 0])).unwrap_err();
        assert!(matches!(e, Error::Flags { flags: 3, .. }));
        assert_eq!(e.status(), Status::EInval);
    }

    #[test]
    fn unknown_message_type_is_eopnotsupp() {
        let e = parse_bytes(&req(0x2000, &[])).unwrap_err();
        assert_eq!(e, Error::UnknownType(0x2000));
        assert_eq!(e.status(), Status::EOpNotSupp);
    }

    #[test]
    fn short_head_is_einval() {
        let e = parse_bytes(&[1, 0, 0]).unwrap_err();
        assert_eq!(e, Error::TooShort { have: 3, need: 8 });
        assert_eq!(e.status(), Status::EInval);
    }

    #[test]
    fn short_body_is_einval_counting_the_head() {
        let mut r = req(0x1004, &[0; 16]);
        r.truncate(20);
        assert_eq!(
            parse_bytes(&r).unwrap_err(),
            Error::TooShort { have: 20, need: 24 }
        );
    }

    #[test]
    fn reserved_bytes_in_head_or_body_are_einval() {
        let mut r = req(0x0001, &clock_body(0));
        r[7] = 1;
        assert_eq!(parse_bytes(&r).unwrap_err(), Error::Reserved(MsgType::Read));
        let mut r = req(0x0001, &clock_body(0));
        r[15] = 1;
        assert_eq!(parse_bytes(&r).unwrap_err().status(), Status::EInval);
    }

    #[test]
    fn request_split_byte_by_byte_parses_the_same() {
        let mut body = 77u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[9, 0, 1, 0, 0, 0, 0, 0]);
        let bytes = req(0x1004, &body);
        let (r, _) = with_chain(&bytes, 1, 8, |r, _| parse(r));
        assert_eq!(
            r,
            Ok(Request::SetAlarm {
                clock: 9,
                time: 77,
                enabled: true
            })
        );
    }

    #[test]
    fn extra_readable_bytes_are_ignored() {
        let mut bytes = req(0x0001, &clock_body(4));
        bytes.extend_from_slice(&[0xEE; 40]);
        assert_eq!(parse_bytes(&bytes), Ok(Request::Read { clock: 4 }));
    }

    #[test]
    fn response_sizes_match_the_spec() {
        let sizes = [
            (Request::Read { clock: 0 }, 16),
            (
                Request::ReadCross {
                    clock: 0,
                    counter: 0,
                },
                24,
            ),
            (Request::Cfg, 16),
            (Request::ClockCap { clock: 0 }, 16),
            (
                Request::CrossCap {
                    clock: 0,
                    counter: 0,
                },
                16,
            ),
            (Request::ReadAlarm { clock: 0 }, 24),
            (
                Request::SetAlarm {
                    clock: 0,
                    time: 0,
                    enabled: false,
                },
                8,
            ),
            (
                Request::SetAlarmEnabled {
                    clock: 0,
                    enabled: false,
                },
                8,
            ),
        ];
        for (r, n) in sizes {
            assert_eq!(r.response_size(), n, "{r:?}");
        }
    }

    #[test]
    fn read_response_is_ok_head_then_reading() {
        let (n, out) = with_chain(&[], 1, 64, |_, w| Response::Read(0x0102).write(w).unwrap());
        assert_eq!(n, 16);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn clock_cap_response_layout() {
        let (n, out) = with_chain(&[], 1, 16, |_, w| {
            Response::ClockCap {
                clock_type: ClockType::UtcSmeared as u8,
                smearing: 1,
                flags: FLAG_ALARM_CAP,
            }
            .write(w)
            .unwrap()
        });
        assert_eq!(n, 16);
        assert_eq!(&out[8..], &[3, 1, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn read_alarm_response_layout() {
        let (n, out) = with_chain(&[], 1, 24, |_, w| {
            Response::ReadAlarm { time: 5, flags: 1 }.write(w).unwrap()
        });
        assert_eq!(n, 24);
        assert_eq!(&out[8..], &[5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn empty_response_is_the_head_alone() {
        let (n, out) = with_chain(&[], 1, 64, |_, w| Response::Empty.write(w).unwrap());
        assert_eq!((n, out), (8, vec![0; 8]));
    }

    #[test]
    fn error_status_fills_what_fits_of_the_head() {
        let (n, out) = with_chain(&[], 1, 3, |_, w| write_status(w, Status::ENoDev).unwrap());
        assert_eq!((n, out), (3, vec![3, 0, 0]));
        let (n, out) = with_chain(&[], 1, 100, |_, w| write_status(w, Status::EIo).unwrap());
        assert_eq!((n, out), (8, vec![5, 0, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn no_writable_bytes_writes_no_status() {
        let (n, _) = with_chain(&[1], 1, 0, |_, w| write_status(w, Status::EInval).unwrap());
        assert_eq!(n, 0);
    }

    #[test]
    fn clock_of_each_request() {
        assert_eq!(Request::Cfg.clock(), None);
        assert_eq!(Request::ReadAlarm { clock: 7 }.clock(), Some(7));
    }
}
