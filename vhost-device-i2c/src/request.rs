// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Parsing requests, grouping them into transfers, answering them.
//!
//! virtio 1.3, 5.16.6: a request is `virtio_i2c_out_hdr`, an optional buffer
//! and a status byte. A Linux `i2c_transfer` of N messages arrives as N
//! requests, queued in order, all but the last with
//! `VIRTIO_I2C_FLAGS_FAIL_NEXT`: a **group**. The device runs a group as one
//! transfer (one `I2C_RDWR`: repeated START between the messages, one STOP at
//! the end) and answers every request with its own status:
//!
//! ```text
//!   requests  r0 r1 r2 r3      (r0..r2 have FAIL_NEXT, r3 does not)
//!   transfer  [m0 m1 m2 m3]    -> completed 2 (m2 not acknowledged)
//!   status    OK OK ERR ERR    (r3 never ran)
//! ```
//!
//! A request that cannot run — malformed, an address not in the device's
//! list, an address on another host adapter than the group's first — stops
//! the group there, as a NACK would: the requests before it run as one
//! transfer, it and the rest of the group are ERR (5.16.6.2: "fail the next
//! request instead of attempting to execute it"). If the last request of a
//! group that failed still had FAIL_NEXT (a group cut short because the
//! driver had queued no more), the failure carries over to the next requests
//! up to the end of their group.
//!
//! This module is pure: it sees `Reader`/`Writer` and the device's address
//! routes, never a vring or an adapter.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use vhost_device_common::queue::{Reader, Writer};

use crate::host::{Msg, MAX_MSGS, MAX_MSG_LEN};
use crate::virtio::{OutHdr, MSG_ERR, MSG_OK, VIRTIO_I2C_FLAGS_FAIL_NEXT, VIRTIO_I2C_FLAGS_M_RD};

/// A target address, decoded from `virtio_i2c_out_hdr.addr` (5.16.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Address {
    /// A 7-bit address (A6..A0 in bits 7:1).
    Seven(u8),
    /// A 10-bit address (A9..A8 in bits 2:1 after the `11110` prefix in
    /// bits 7:3, A7..A0 in bits 15:8). Linux never sends one; this daemon
    /// answers them ERR.
    Ten(u16),
}

impl Address {
    /// Decode the wire field; `None` for an encoding the spec does not allow
    /// (bit 0 set, or high bits with a 7-bit address).
    pub fn decode(raw: u16) -> Option<Self> {
        if raw & 1 != 0 {
            return None;
        }
        let low = raw & 0xff;
        if low & 0xf8 == 0xf0 {
            // 11110 A9 A8 0, then A7..A0 in the high byte.
            return Some(Address::Ten(((low >> 1) & 0x3) << 8 | raw >> 8));
        }
        if raw >> 8 != 0 {
            return None;
        }
        u8::try_from(low >> 1).ok().map(Address::Seven)
    }
}

/// What one well-formed request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write these bytes (empty: a zero-length write, SMBus quick).
    Write(Vec<u8>),
    /// Read this many bytes (0: a zero-length read).
    Read(usize),
}

/// A request the device can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its target.
    pub addr: Address,
    /// Its direction and data.
    pub op: Op,
}

/// Why a request cannot run (a guest error: answered ERR).
#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invalid {
    /// Fewer than 8 device-readable bytes.
    #[error("request shorter than its 8-byte header")]
    ShortHeader,
    /// No device-writable byte for the status.
    #[error("request has no device-writable status byte")]
    NoStatus,
    /// `M_RD` disagrees with the buffer's direction (5.16.6.2).
    #[error("{} request with {readable} device-readable and {writable} device-writable buffer bytes", if *read { "read" } else { "write" })]
    Direction {
        /// `M_RD` was set.
        read: bool,
        /// Readable bytes after the header.
        readable: usize,
        /// Writable bytes before the status.
        writable: usize,
    },
    /// Longer than `I2C_RDWR` allows.
    #[error("message of {0} bytes (at most {MAX_MSG_LEN})")]
    TooLong(usize),
    /// An address encoding the spec does not allow.
    #[error("malformed address field {0:#06x}")]
    BadAddress(u16),
    /// The buffer could not be read from guest memory.
    #[error("cannot read the write buffer from guest memory")]
    Unreadable,
    /// The driver did not accept `VIRTIO_I2C_F_ZERO_LENGTH_REQUEST`, which
    /// the device must refuse (5.16.3).
    #[error("driver did not accept VIRTIO_I2C_F_ZERO_LENGTH_REQUEST")]
    FeatureNotAccepted,
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// `VIRTIO_I2C_FLAGS_FAIL_NEXT` (false when the header is unreadable).
    pub fail_next: bool,
    /// The message, or why there is none.
    pub message: Result<Message, Invalid>,
}

/// Parse one request. `writer` is not written (only its size is looked at);
/// `zero_length` says whether the driver accepted the mandatory feature.
pub fn parse(reader: &mut Reader<'_>, writer: &Writer<'_>, zero_length: bool) -> Request {
    let Ok(hdr) = reader.read_obj::<OutHdr>() else {
        return Request {
            fail_next: false,
            message: Err(Invalid::ShortHeader),
        };
    };
    let flags = u32::from(hdr.flags);
    Request {
        fail_next: flags & VIRTIO_I2C_FLAGS_FAIL_NEXT != 0,
        message: message(
            reader,
            writer,
            u16::from(hdr.addr),
            flags & VIRTIO_I2C_FLAGS_M_RD != 0,
            zero_length,
        ),
    }
}

fn message(
    reader: &mut Reader<'_>,
    writer: &Writer<'_>,
    raw_addr: u16,
    read: bool,
    zero_length: bool,
) -> Result<Message, Invalid> {
    let readable = reader.available_bytes();
    let Some(writable) = writer.available_bytes().checked_sub(1) else {
        return Err(Invalid::NoStatus);
    };
    let op = if read {
        if readable != 0 {
            return Err(Invalid::Direction {
                read,
                readable,
                writable,
            });
        }
        if writable > MAX_MSG_LEN {
            return Err(Invalid::TooLong(writable));
        }
        Op::Read(writable)
    } else {
        if writable != 0 {
            return Err(Invalid::Direction {
                read,
                readable,
                writable,
            });
        }
        if readable > MAX_MSG_LEN {
            return Err(Invalid::TooLong(readable));
        }
        let mut data = vec![0; readable];
        reader
            .read_exact(&mut data)
            .map_err(|_| Invalid::Unreadable)?;
        Op::Write(data)
    };
    if !zero_length {
        return Err(Invalid::FeatureNotAccepted);
    }
    let addr = Address::decode(raw_addr).ok_or(Invalid::BadAddress(raw_addr))?;
    Ok(Message { addr, op })
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// `MSG_OK` or `MSG_ERR`.
    pub status: u8,
    /// The bytes read (a successful read only).
    pub data: Vec<u8>,
}

impl Reply {
    /// A failed request.
    pub fn err() -> Self {
        Self {
            status: MSG_ERR,
            data: Vec::new(),
        }
    }

    /// A successful request that read `data` (empty for a write).
    pub fn ok(data: Vec<u8>) -> Self {
        Self {
            status: MSG_OK,
            data,
        }
    }
}

/// Write `reply` into the device-writable part of its chain: the data read
/// (if OK), then the status in the last byte. Returns the used length (0
/// when there is no room for a status).
pub fn respond(writer: &mut Writer<'_>, reply: &Reply) -> u32 {
    let Some(room) = writer.available_bytes().checked_sub(1) else {
        return 0;
    };
    let Ok(mut status) = writer.split_at(room) else {
        return 0;
    };
    let mut data_written = 0;
    if reply.status == MSG_OK && !reply.data.is_empty() {
        let n = reply.data.len().min(room);
        if writer.write_all(&reply.data[..n]).is_ok() {
            data_written = n;
        }
    }
    if status.write_all(&[reply.status]).is_err() {
        return 0;
    }
    u32::try_from(data_written + 1).unwrap_or(0)
}

/// How many requests from the front of `pending` form the next group: up to
/// and including the first without FAIL_NEXT, or all of them when the driver
/// has queued no more; at most [`MAX_MSGS`] + 1 (a longer group cannot be
/// one `I2C_RDWR` and is refused, see [`plan`]).
pub fn group_len<'a>(pending: impl IntoIterator<Item = &'a Request>) -> usize {
    let mut n = 0;
    for req in pending {
        n += 1;
        if !req.fail_next || n > MAX_MSGS {
            break;
        }
    }
    n
}

/// Why a request did not run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// An earlier request with FAIL_NEXT failed.
    #[error("an earlier request of its group failed")]
    EarlierFailed,
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// 10-bit address.
    #[error("10-bit address {0:#05x} (not supported)")]
    TenBit(u16),
    /// Not in the device's list.
    #[error("address {0:#04x} is not in this device's list")]
    NotListed(u8),
    /// On another host adapter than the group's first message.
    #[error("address {0:#04x} is on another host adapter than the rest of its transfer")]
    OtherAdapter(u8),
    /// More than [`MAX_MSGS`] requests in one group.
    #[error("a group of more than {MAX_MSGS} requests")]
    GroupTooLong,
}

/// How a group runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The first `run` requests run as one transfer…
    pub run: usize,
    /// …on this adapter (index into the device's adapters), if `run > 0`…
    pub adapter: Option<usize>,
    /// …as these messages.
    pub msgs: Vec<Msg>,
    /// Why request `run` (and with it the rest) does not run, if it exists.
    pub refusal: Option<Refusal>,
}

/// Decide how `group` runs. `earlier_failed`: a failure carries over from
/// the previous group; `route` gives the adapter of a listed address.
pub fn plan(group: &[&Request], earlier_failed: bool, route: impl Fn(u8) -> Option<usize>) -> Plan {
    let refuse = |refusal| Plan {
        run: 0,
        adapter: None,
        msgs: Vec::new(),
        refusal: Some(refusal),
    };
    if earlier_failed {
        return refuse(Refusal::EarlierFailed);
    }
    if group.len() > MAX_MSGS {
        return refuse(Refusal::GroupTooLong);
    }
    let mut adapter = None;
    let mut msgs = Vec::with_capacity(group.len());
    let mut refusal = None;
    for req in group {
        let step = match &req.message {
            Err(e) => Err(Refusal::Invalid(e.clone())),
            Ok(Message {
                addr: Address::Ten(a),
                ..
            }) => Err(Refusal::TenBit(*a)),
            Ok(Message {
                addr: Address::Seven(a),
                op,
            }) => match route(*a) {
                None => Err(Refusal::NotListed(*a)),
                Some(ad) if adapter.is_some_and(|first| first != ad) => {
                    Err(Refusal::OtherAdapter(*a))
                }
                Some(ad) => {
                    adapter = Some(ad);
                    Ok(match op {
                        Op::Write(data) => Msg::write(*a, data),
                        Op::Read(len) => Msg::read(*a, *len),
                    })
                }
            },
        };
        match step {
            Ok(m) => msgs.push(m),
            Err(r) => {
                refusal = Some(r);
                break;
            }
        }
    }
    Plan {
        run: msgs.len(),
        adapter: if msgs.is_empty() { None } else { adapter },
        msgs,
        refusal,
    }
}

/// The replies to a group of `len` requests whose first `completed` ran
/// (their messages, with what was read, in `msgs`).
pub fn replies(len: usize, completed: usize, msgs: &[Msg]) -> Vec<Reply> {
    (0..len)
        .map(|i| match msgs.get(i) {
            Some(m) if i < completed => Reply::ok(if m.read { m.buf.clone() } else { Vec::new() }),
            _ => Reply::err(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::queue::GuestMemory;
    use vhost_device_common::virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use vhost_device_common::virtio_queue::mock::MockSplitQueue;
    use vhost_device_common::virtio_queue::{Queue, QueueOwnedT};
    use vhost_device_common::vm_memory::{ByteValued, Bytes, GuestAddress};

    const HDR: u64 = 0x10_0000;
    const BUF: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;

    /// One buffer of a test chain.
    enum B {
        /// The header with this address field and flags.
        Hdr(u16, u32),
        /// Device-readable bytes.
        Out(Vec<u8>),
        /// Device-writable bytes.
        In(u32),
    }

    /// Build a chain from `bufs` and run `f` on its reader and writer.
    fn with_chain<R>(
        bufs: &[B],
        f: impl FnOnce(&mut Reader<'_>, &mut Writer<'_>) -> R,
    ) -> (R, GuestMemory) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut out_at = BUF;
        let mut in_at = STATUS;
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .map(|b| {
                let d = match b {
                    B::Hdr(addr, flags) => {
                        let hdr = OutHdr {
                            addr: (*addr).into(),
                            padding: 0.into(),
                            flags: (*flags).into(),
                        };
                        mem.write_slice(hdr.as_slice(), GuestAddress(HDR)).unwrap();
                        Descriptor::new(HDR, 8, 0, 0)
                    }
                    B::Out(data) => {
                        mem.write_slice(data, GuestAddress(out_at)).unwrap();
                        let d = Descriptor::new(out_at, u32::try_from(data.len()).unwrap(), 0, 0);
                        out_at += 0x1_0000;
                        d
                    }
                    B::In(len) => {
                        let d = Descriptor::new(in_at, *len, 2, 0);
                        in_at += 0x1_0000;
                        d
                    }
                };
                RawDescriptor::from(d)
            })
            .collect();
        vq.build_desc_chain(&descs).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut reader = Reader::new(&mem, chain.clone()).unwrap();
        let mut writer = Writer::new(&mem, chain).unwrap();
        let r = f(&mut reader, &mut writer);
        (r, mem.clone())
    }

    fn parse_chain(bufs: &[B]) -> Request {
        with_chain(bufs, |r, w| parse(r, w, true)).0
    }

    fn read_req(addr: u8, len: usize, fail_next: bool) -> Request {
        Request {
            fail_next,
            message: Ok(Message {
                addr: Address::Seven(addr),
                op: Op::Read(len),
            }),
        }
    }

    fn write_req(addr: u8, data: &[u8], fail_next: bool) -> Request {
        Request {
            fail_next,
            message: Ok(Message {
                addr: Address::Seven(addr),
                op: Op::Write(data.to_vec()),
            }),
        }
    }

    #[test]
    fn seven_bit_address_is_shifted_down() {
        assert_eq!(Address::decode(0x50 << 1), Some(Address::Seven(0x50)));
        assert_eq!(Address::decode(0x03 << 1), Some(Address::Seven(0x03)));
        assert_eq!(Address::decode(0x7f << 1), Some(Address::Seven(0x7f)));
    }

    #[test]
    fn ten_bit_address_is_decoded_from_prefix_and_high_byte() {
        // A9..A8 = 0b10, A7..A0 = 0x34: 0x234.
        let raw = 0x34 << 8 | 0b1111_0100;
        assert_eq!(Address::decode(raw), Some(Address::Ten(0x234)));
    }

    #[test]
    fn malformed_address_fields_are_refused() {
        assert_eq!(Address::decode(0x00a1), None, "bit 0 set");
        assert_eq!(
            Address::decode(0x01a0),
            None,
            "high byte with a 7-bit address"
        );
    }

    #[test]
    fn write_request_carries_its_bytes_and_flags() {
        let req = parse_chain(&[
            B::Hdr(0x50 << 1, VIRTIO_I2C_FLAGS_FAIL_NEXT),
            B::Out(vec![0x10, 0xaa, 0xbb]),
            B::In(1),
        ]);
        assert!(req.fail_next);
        assert_eq!(
            req.message,
            Ok(Message {
                addr: Address::Seven(0x50),
                op: Op::Write(vec![0x10, 0xaa, 0xbb])
            })
        );
    }

    #[test]
    fn read_request_length_is_the_writable_bytes_before_the_status() {
        let req = parse_chain(&[
            B::Hdr(0x50 << 1, VIRTIO_I2C_FLAGS_M_RD),
            B::In(16),
            B::In(1),
        ]);
        assert_eq!(req.message.unwrap().op, Op::Read(16));
    }

    #[test]
    fn read_buffer_and_status_in_one_descriptor_are_fine() {
        let req = parse_chain(&[B::Hdr(0x50 << 1, VIRTIO_I2C_FLAGS_M_RD), B::In(5)]);
        assert_eq!(req.message.unwrap().op, Op::Read(4));
    }

    #[test]
    fn zero_length_requests_have_no_buffer() {
        let w = parse_chain(&[B::Hdr(0x50 << 1, 0), B::In(1)]);
        let r = parse_chain(&[B::Hdr(0x50 << 1, VIRTIO_I2C_FLAGS_M_RD), B::In(1)]);
        assert_eq!(w.message.unwrap().op, Op::Write(vec![]));
        assert_eq!(r.message.unwrap().op, Op::Read(0));
    }

    #[test]
    fn read_flag_with_a_readable_buffer_is_a_direction_error() {
        let req = parse_chain(&[
            B::Hdr(0x50 << 1, VIRTIO_I2C_FLAGS_M_RD),
            B::Out(vec![1, 2]),
            B::In(1),
        ]);
        assert!(matches!(
            req.message,
            Err(Invalid::Direction {
                read: true,
                readable: 2,
                ..
            })
        ));
    }

    #[test]
    fn write_without_read_flag_but_a_writable_buffer_is_a_direction_error() {
        let req = parse_chain(&[B::Hdr(0x50 << 1, 0), B::In(4), B::In(1)]);
        assert!(matches!(
            req.message,
            Err(Invalid::Direction {
                read: false,
                writable: 4,
                ..
            })
        ));
    }

    #[test]
    fn short_header_and_missing_status_are_invalid() {
        let short = with_chain(&[B::Out(vec![0; 4]), B::In(1)], |r, w| parse(r, w, true)).0;
        assert_eq!(short.message, Err(Invalid::ShortHeader));
        assert!(!short.fail_next);
        let no_status = parse_chain(&[B::Hdr(0x50 << 1, 0), B::Out(vec![1])]);
        assert_eq!(no_status.message, Err(Invalid::NoStatus));
    }

    #[test]
    fn oversized_message_is_refused() {
        let req = parse_chain(&[
            B::Hdr(0x50 << 1, VIRTIO_I2C_FLAGS_M_RD),
            B::In(u32::try_from(MAX_MSG_LEN).unwrap() + 1),
            B::In(1),
        ]);
        assert_eq!(req.message, Err(Invalid::TooLong(MAX_MSG_LEN + 1)));
    }

    #[test]
    fn driver_without_the_mandatory_feature_is_refused() {
        let (req, _) = with_chain(&[B::Hdr(0x50 << 1, 0), B::In(1)], |r, w| parse(r, w, false));
        assert_eq!(req.message, Err(Invalid::FeatureNotAccepted));
    }

    #[test]
    fn ok_read_reply_fills_the_buffer_then_the_status() {
        let bufs = [B::Hdr(0x50 << 1, VIRTIO_I2C_FLAGS_M_RD), B::In(3), B::In(1)];
        let (used, mem) = with_chain(&bufs, |_, w| respond(w, &Reply::ok(vec![7, 8, 9])));
        assert_eq!(used, 4);
        let mut got = [0u8; 3];
        mem.read_slice(&mut got, GuestAddress(STATUS)).unwrap();
        assert_eq!(got, [7, 8, 9]);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(STATUS + 0x1_0000)).unwrap(),
            MSG_OK
        );
    }

    #[test]
    fn err_reply_writes_only_the_status() {
        let bufs = [B::Hdr(0x50 << 1, VIRTIO_I2C_FLAGS_M_RD), B::In(4)];
        let (used, mem) = with_chain(&bufs, |_, w| respond(w, &Reply::err()));
        assert_eq!(used, 1);
        let mut got = [0xffu8; 4];
        mem.read_slice(&mut got, GuestAddress(STATUS)).unwrap();
        assert_eq!(got, [0, 0, 0, MSG_ERR], "data bytes must be left alone");
    }

    #[test]
    fn reply_without_room_for_a_status_uses_nothing() {
        let (used, _) = with_chain(&[B::Hdr(0x50 << 1, 0)], |_, w| respond(w, &Reply::err()));
        assert_eq!(used, 0);
    }

    #[test]
    fn group_ends_at_the_first_request_without_fail_next() {
        let reqs = [
            write_req(0x50, &[0], true),
            read_req(0x50, 2, false),
            write_req(0x50, &[1], false),
        ];
        assert_eq!(group_len(&reqs), 2);
        assert_eq!(group_len(&reqs[2..]), 1);
    }

    #[test]
    fn group_cut_short_by_the_driver_is_what_was_queued() {
        let reqs = [write_req(0x50, &[0], true), read_req(0x50, 2, true)];
        assert_eq!(group_len(&reqs), 2);
    }

    #[test]
    fn group_length_is_capped_just_above_the_rdwr_limit() {
        let reqs: Vec<Request> = (0..100).map(|_| write_req(0x50, &[0], true)).collect();
        assert_eq!(group_len(&reqs), MAX_MSGS + 1);
    }

    fn route(a: u8) -> Option<usize> {
        match a {
            0x50 | 0x51 => Some(0),
            0x1c => Some(1),
            _ => None,
        }
    }

    #[test]
    fn whole_group_becomes_one_transfer() {
        let reqs = [write_req(0x50, &[0x10], true), read_req(0x50, 4, false)];
        let group: Vec<&Request> = reqs.iter().collect();

        let p = plan(&group, false, route);

        assert_eq!(p.run, 2);
        assert_eq!(p.adapter, Some(0));
        assert_eq!(p.msgs, vec![Msg::write(0x50, &[0x10]), Msg::read(0x50, 4)]);
        assert_eq!(p.refusal, None);
    }

    #[test]
    fn unlisted_address_in_the_middle_stops_the_group_there() {
        let reqs = [
            write_req(0x50, &[0], true),
            write_req(0x33, &[0], true),
            read_req(0x50, 1, false),
        ];
        let group: Vec<&Request> = reqs.iter().collect();

        let p = plan(&group, false, route);

        assert_eq!(p.run, 1);
        assert_eq!(p.refusal, Some(Refusal::NotListed(0x33)));
    }

    #[test]
    fn invalid_first_request_runs_nothing() {
        let bad = Request {
            fail_next: true,
            message: Err(Invalid::ShortHeader),
        };
        let reqs = [bad, read_req(0x50, 1, false)];
        let group: Vec<&Request> = reqs.iter().collect();

        let p = plan(&group, false, route);

        assert_eq!((p.run, p.adapter), (0, None));
        assert_eq!(p.refusal, Some(Refusal::Invalid(Invalid::ShortHeader)));
    }

    #[test]
    fn group_across_two_host_adapters_stops_at_the_second() {
        let reqs = [write_req(0x50, &[0], true), read_req(0x1c, 1, false)];
        let group: Vec<&Request> = reqs.iter().collect();

        let p = plan(&group, false, route);

        assert_eq!(p.run, 1);
        assert_eq!(p.refusal, Some(Refusal::OtherAdapter(0x1c)));
    }

    #[test]
    fn carried_failure_runs_nothing() {
        let reqs = [read_req(0x50, 1, false)];
        let group: Vec<&Request> = reqs.iter().collect();
        let p = plan(&group, true, route);
        assert_eq!(p.run, 0);
        assert_eq!(p.refusal, Some(Refusal::EarlierFailed));
    }

    #[test]
    fn ten_bit_address_is_refused() {
        let req = Request {
            fail_next: false,
            message: Ok(Message {
                addr: Address::Ten(0x234),
                op: Op::Write(vec![]),
            }),
        };
        assert_eq!(
            plan(&[&req], false, route).refusal,
            Some(Refusal::TenBit(0x234))
        );
    }

    #[test]
    fn overlong_group_is_refused_whole() {
        let reqs: Vec<Request> = (0..=MAX_MSGS)
            .map(|_| write_req(0x50, &[0], true))
            .collect();
        let group: Vec<&Request> = reqs.iter().collect();
        let p = plan(&group, false, route);
        assert_eq!(p.run, 0);
        assert_eq!(p.refusal, Some(Refusal::GroupTooLong));
    }

    #[test]
    fn partial_completion_fails_the_rest_and_keeps_what_was_read() {
        let mut msgs = vec![
            Msg::write(0x50, &[0]),
            Msg::read(0x50, 2),
            Msg::read(0x50, 1),
        ];
        msgs[1].buf = vec![5, 6];

        let r = replies(4, 2, &msgs);

        assert_eq!(r[0], Reply::ok(vec![]));
        assert_eq!(r[1], Reply::ok(vec![5, 6]));
        assert_eq!(r[2], Reply::err());
        assert_eq!(r[3], Reply::err());
    }
}
