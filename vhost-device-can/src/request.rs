// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Requests and answers of the three queues, over virtio-queue's `Reader` and
//! `Writer` (virtio 1.4, 5.20.6). Pure: no vrings, no host.
//!
//! - txq: `virtio_can_tx_out` (header + `length` data bytes) in, `u8 result`
//!   out. [`parse_tx`] checks it against the negotiated features (5.20.6.2:
//!   a frame type that was not negotiated, an unknown flag, an identifier or
//!   length out of range is refused with NOT_OK and never sent). An RTR
//!   request carries `length` as the data length it asks for; its `sdu`
//!   bytes, if any, are not data and are not read.
//! - controlq: `le16 msg_type` in, `u8 result` out ([`parse_control`]).
//! - rxq: [`write_rx`] writes `virtio_can_rx`: header + data; for an RTR
//!   frame, `length` zero bytes (at most 8), because Linux checks the used
//!   length against 16 + length for those too.

use std::io::{self, Read, Write};

use thiserror::Error;
use vhost_device_common::queue::{Reader, Writer};

use crate::host::{CanFrame, FrameError};
use crate::virtio::{
    ControlOut, Features, FrameHeader, FLAGS_KNOWN, FLAG_EXTENDED, FLAG_FD, FLAG_RTR, HEADER_SIZE,
    MSG_RX, MSG_START, MSG_STOP, MSG_TX,
};

/// A request the device refuses (answered NOT_OK, never sent to the bus).
#[derive(Debug, Error)]
pub enum Error {
    /// Fewer device-readable bytes than the fixed part.
    #[error("request of {got} bytes is shorter than its {need}-byte header")]
    Short {
        /// Bytes the driver gave.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Not `VIRTIO_CAN_TX` on the transmit queue.
    #[error("msg_type {0:#06x} is not a transmit request")]
    TxType(u16),
    /// A flag the spec does not define (refused like an unnegotiated type).
    #[error("unknown flags {0:#x}")]
    Flags(u32),
    /// A frame type the driver did not negotiate.
    #[error("{0} frames were not negotiated")]
    NotNegotiated(&'static str),
    /// An identifier or length out of range.
    #[error("invalid frame")]
    Frame(#[source] FrameError),
    /// Fewer data bytes than `length` says.
    #[error("a {length}-byte frame with only {available} data bytes in the request")]
    ShortPayload {
        /// The frame's length.
        length: usize,
        /// Data bytes present.
        available: usize,
    },
    /// Unknown control message.
    #[error("unknown control message {0:#06x}")]
    ControlType(u16),
    /// Guest memory could not be read.
    #[error("cannot read the request")]
    Read(#[source] io::Error),
}

/// Check that `frame` is of a type the driver negotiated (5.20.6.2), for
/// both directions: a received frame of another type is not delivered.
pub fn negotiated(frame: &CanFrame, features: Features) -> Result<(), Error> {
    if frame.fd && !features.fd {
        return Err(Error::NotNegotiated("CAN FD"));
    }
    if !frame.fd && !features.classic {
        return Err(Error::NotNegotiated("classic CAN"));
    }
    if frame.rtr && !features.rtr {
        return Err(Error::NotNegotiated("RTR"));
    }
    Ok(())
}

/// Read and check a transmit request.
pub fn parse_tx(reader: &mut Reader<'_>, features: Features) -> Result<CanFrame, Error> {
    let got = reader.available_bytes();
    if got < HEADER_SIZE {
        return Err(Error::Short {
            got,
            need: HEADER_SIZE,
        });
    }
    let header: FrameHeader = reader
        .read_obj()
        .map_err(|e| Error::Read(io::Error::other(e)))?;
    let msg_type = u16::from(header.msg_type);
    if msg_type != MSG_TX {
        return Err(Error::TxType(msg_type));
    }
    let flags = u32::from(header.flags);
    if flags & !FLAGS_KNOWN != 0 {
        return Err(Error::Flags(flags & !FLAGS_KNOWN));
    }
    let fd = flags & FLAG_FD != 0;
    let length = usize::from(u16::from(header.length));
    let mut frame = CanFrame {
        id: u32::from(header.can_id),
        extended: flags & FLAG_EXTENDED != 0,
        fd,
        rtr: flags & FLAG_RTR != 0,
        len: u8::try_from(length)
            .map_err(|_| Error::Frame(FrameError::Length { len: length, fd }))?,
        ..CanFrame::default()
    };
    negotiated(&frame, features)?;
    frame.check().map_err(Error::Frame)?;
    if !frame.rtr {
        let available = reader.available_bytes();
        if available < length {
            return Err(Error::ShortPayload { length, available });
        }
        reader
            .read_exact(&mut frame.data[..length])
            .map_err(Error::Read)?;
    }
    Ok(frame)
}

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `VIRTIO_CAN_SET_CTRL_MODE_START`.
    Start,
    /// `VIRTIO_CAN_SET_CTRL_MODE_STOP`.
    Stop,
}

/// Read a control request.
pub fn parse_control(reader: &mut Reader<'_>) -> Result<Command, Error> {
    let got = reader.available_bytes();
    if got < std::mem::size_of::<ControlOut>() {
        return Err(Error::Short { got, need: 2 });
    }
    let out: ControlOut = reader
        .read_obj()
        .map_err(|e| Error::Read(io::Error::other(e)))?;
    match u16::from(out.msg_type) {
        MSG_START => Ok(Command::Start),
        MSG_STOP => Ok(Command::Stop),
        other => Err(Error::ControlType(other)),
    }
}

/// Write the one-byte `result`; the used length (0 when the driver gave no
/// device-writable byte: nothing can be answered).
pub fn write_result(writer: &mut Writer<'_>, result: u8) -> io::Result<u32> {
    if writer.available_bytes() == 0 {
        return Ok(0);
    }
    writer.write_all(&[result])?;
    Ok(1)
}

/// Bytes of `virtio_can_rx` for `frame`.
pub fn rx_size(frame: &CanFrame) -> usize {
    let data = if frame.rtr {
        usize::from(frame.len.min(8))
    } else {
        frame.payload().len()
    };
    HEADER_SIZE + data
}

/// Write `frame` as `virtio_can_rx`; the used length, or `None` when the
/// buffer is too small for it (nothing is written then).
pub fn write_rx(writer: &mut Writer<'_>, frame: &CanFrame) -> io::Result<Option<u32>> {
    let size = rx_size(frame);
    if writer.available_bytes() < size {
        return Ok(None);
    }
    let mut flags = 0;
    if frame.extended {
        flags |= FLAG_EXTENDED;
    }
    if frame.fd {
        flags |= FLAG_FD;
    }
    if frame.rtr {
        flags |= FLAG_RTR;
    }
    let header = FrameHeader {
        msg_type: MSG_RX.into(),
        length: u16::from(frame.len).into(),
        flags: flags.into(),
        can_id: frame.id.into(),
        ..FrameHeader::default()
    };
    writer
        .write_obj(header)
        .map_err(|e| io::Error::other(e.to_string()))?;
    if frame.rtr {
        writer.write_all(&[0u8; 8][..size - HEADER_SIZE])?;
    } else {
        writer.write_all(frame.payload())?;
    }
    Ok(u32::try_from(size).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{FrameHeader, F_CAN_CLASSIC, F_CAN_FD, F_LATE_TX_ACK, F_RTR_FRAMES};
    use vhost_device_common::queue::GuestMemory;
    use vhost_device_common::vm_memory::{ByteValued, Bytes, GuestAddress};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;

    const VRING_DESC_F_WRITE: u32 = 2;

    fn all() -> Features {
        Features::from_bits(
            (1 << F_CAN_CLASSIC) | (1 << F_CAN_FD) | (1 << F_RTR_FRAMES) | (1 << F_LATE_TX_ACK),
        )
    }

    fn classic_only() -> Features {
        Features::from_bits(1 << F_CAN_CLASSIC)
    }

    fn fd_only() -> Features {
        Features::from_bits(1 << F_CAN_FD)
    }

    fn tx_bytes(flags: u32, id: u32, length: u16, data: &[u8]) -> Vec<u8> {
        let h = FrameHeader {
            msg_type: MSG_TX.into(),
            length: length.into(),
            flags: flags.into(),
            can_id: id.into(),
            ..FrameHeader::default()
        };
        let mut v = h.as_slice().to_vec();
        v.extend_from_slice(data);
        v
    }

    /// Run `f` over a chain of `(bytes, writable)` buffers, each in its own
    /// descriptor; returns what `f` returned and the writable buffers' contents.
    fn with_chain<R>(
        bufs: &[(Vec<u8>, bool)],
        f: impl FnOnce(&mut Reader<'_>, &mut Writer<'_>) -> R,
    ) -> (R, Vec<Vec<u8>>) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut addr = 0x1_0000u64;
        let mut placed = Vec::new();
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .map(|(bytes, w)| {
                mem.write_slice(bytes, GuestAddress(addr)).unwrap();
                let len = u32::try_from(bytes.len()).unwrap();
                placed.push((addr, bytes.len(), *w));
                let d = SplitDescriptor::new(
                    addr,
                    len,
                    if *w {
                        u16::try_from(VRING_DESC_F_WRITE).unwrap()
                    } else {
                        0
                    },
                    0,
                );
                addr += 0x1000;
                RawDescriptor::from(d)
            })
            .collect();
        vq.build_desc_chain(&descs).unwrap();
        let mut q: vhost_device_common::virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut reader = Reader::new(&mem, chain.clone()).unwrap();
        let mut writer = Writer::new(&mem, chain).unwrap();
        let r = f(&mut reader, &mut writer);
        let written = placed
            .iter()
            .filter(|p| p.2)
            .map(|&(a, n, _)| {
                let mut v = vec![0; n];
                mem.read_slice(&mut v, GuestAddress(a)).unwrap();
                v
            })
            .collect();
        (r, written)
    }

    fn tx(bytes: Vec<u8>, features: Features) -> Result<CanFrame, Error> {
        with_chain(&[(bytes, false), (vec![0xFF], true)], |r, _| {
            parse_tx(r, features)
        })
        .0
    }

    #[test]
    fn classic_frame_is_read_with_its_data() {
        let f = tx(tx_bytes(0, 0x123, 4, &[1, 2, 3, 4]), all()).unwrap();
        assert_eq!(f, "123#01020304".parse().unwrap());
    }

    #[test]
    fn header_and_data_may_be_split_over_descriptors() {
        let bytes = tx_bytes(FLAG_EXTENDED, 0x1234_5678, 8, &[9; 8]);
        let (f, _) = with_chain(
            &[
                (bytes[..5].to_vec(), false),
                (bytes[5..19].to_vec(), false),
                (bytes[19..].to_vec(), false),
                (vec![0], true),
            ],
            |r, _| parse_tx(r, all()),
        );
        let f = f.unwrap();
        assert!(f.extended);
        assert_eq!((f.id, f.payload()), (0x1234_5678, &[9u8; 8][..]));
    }

    #[test]
    fn fd_frame_needs_fd_negotiated() {
        let bytes = tx_bytes(FLAG_FD, 0x10, 12, &[5; 12]);
        assert!(tx(bytes.clone(), all()).is_ok());
        assert!(matches!(
            tx(bytes, classic_only()),
            Err(Error::NotNegotiated("CAN FD"))
        ));
    }

    #[test]
    fn classic_frame_needs_classic_negotiated() {
        assert!(matches!(
            tx(tx_bytes(0, 0x10, 1, &[5]), fd_only()),
            Err(Error::NotNegotiated("classic CAN"))
        ));
    }

    #[test]
    fn rtr_frame_needs_rtr_negotiated_and_classic() {
        let bytes = tx_bytes(FLAG_RTR, 0x10, 4, &[]);
        assert!(matches!(
            tx(bytes.clone(), classic_only()),
            Err(Error::NotNegotiated("RTR"))
        ));
        let rtr_without_classic = Features::from_bits((1 << F_CAN_FD) | (1 << F_RTR_FRAMES));
        assert!(matches!(
            tx(bytes.clone(), rtr_without_classic),
            Err(Error::NotNegotiated(_))
        ));
        let f = tx(bytes, all()).unwrap();
        assert!(f.rtr && f.len == 4 && f.payload().is_empty());
    }

    #[test]
    fn rtr_request_with_its_zero_data_bytes_is_accepted_without_sending_them() {
        let f = tx(tx_bytes(FLAG_RTR, 0x10, 3, &[0; 3]), all()).unwrap();
        assert!(f.rtr && f.payload().is_empty());
    }

    #[test]
    fn rtr_fd_frame_is_refused() {
        assert!(matches!(
            tx(tx_bytes(FLAG_RTR | FLAG_FD, 0x10, 0, &[]), all()),
            Err(Error::Frame(FrameError::RtrFd))
        ));
    }

    #[test]
    fn unknown_flag_is_refused() {
        assert!(matches!(
            tx(tx_bytes(0x1, 0x10, 0, &[]), all()),
            Err(Error::Flags(1))
        ));
    }

    #[test]
    fn identifiers_out_of_range_are_refused() {
        assert!(tx(tx_bytes(0, 0x7FF, 0, &[]), all()).is_ok());
        assert!(matches!(
            tx(tx_bytes(0, 0x800, 0, &[]), all()),
            Err(Error::Frame(FrameError::Id { .. }))
        ));
        assert!(tx(tx_bytes(FLAG_EXTENDED, 0x1FFF_FFFF, 0, &[]), all()).is_ok());
        // SocketCAN's EFF flag in the identifier is not how virtio marks it.
        assert!(tx(tx_bytes(FLAG_EXTENDED, 0x8000_0001, 0, &[]), all()).is_err());
    }

    #[test]
    fn lengths_out_of_range_are_refused_per_frame_type() {
        assert!(tx(tx_bytes(0, 1, 9, &[0; 9]), all()).is_err());
        assert!(tx(tx_bytes(FLAG_RTR, 1, 9, &[]), all()).is_err());
        for len in 0..=70u16 {
            let fd = tx(
                tx_bytes(FLAG_FD, 1, len, &[0; 70][..usize::from(len)]),
                all(),
            );
            assert_eq!(
                fd.is_ok(),
                crate::host::is_fd_length(usize::from(len)),
                "FD length {len}"
            );
        }
        assert!(tx(tx_bytes(FLAG_FD, 1, 300, &[]), all()).is_err());
    }

    #[test]
    fn missing_data_bytes_are_refused() {
        assert!(matches!(
            tx(tx_bytes(0, 1, 8, &[1, 2, 3]), all()),
            Err(Error::ShortPayload {
                length: 8,
                available: 3
            })
        ));
    }

    #[test]
    fn short_header_and_wrong_type_are_refused() {
        assert!(matches!(
            tx(vec![1, 0, 0], all()),
            Err(Error::Short { got: 3, need: 16 })
        ));
        let mut bytes = tx_bytes(0, 1, 0, &[]);
        bytes[0] = 0x01;
        bytes[1] = 0x01;
        assert!(matches!(tx(bytes, all()), Err(Error::TxType(0x0101))));
    }

    #[test]
    fn control_messages_parse() {
        let ctl = |b: &[u8]| {
            with_chain(&[(b.to_vec(), false), (vec![0xFF], true)], |r, _| {
                parse_control(r)
            })
            .0
        };
        assert_eq!(ctl(&[0x01, 0x02]).unwrap(), Command::Start);
        assert_eq!(ctl(&[0x02, 0x02]).unwrap(), Command::Stop);
        assert!(matches!(
            ctl(&[0x03, 0x02]),
            Err(Error::ControlType(0x0203))
        ));
        assert!(matches!(ctl(&[0x01]), Err(Error::Short { got: 1, .. })));
    }

    #[test]
    fn result_is_one_byte_or_nothing_without_a_writable_buffer() {
        let (n, out) = with_chain(&[(vec![0], false), (vec![0xFF; 4], true)], |_, w| {
            write_result(w, 1).unwrap()
        });
        assert_eq!((n, out[0][0]), (1, 1));
        let (n, _) = with_chain(&[(vec![0], false)], |_, w| write_result(w, 0).unwrap());
        assert_eq!(n, 0);
    }

    #[test]
    fn received_frame_is_written_with_header_and_data() {
        let f: CanFrame = "1ABCDEF0#AABB".parse().unwrap();
        let (n, out) = with_chain(&[(vec![0xEE; 24], true)], |_, w| write_rx(w, &f).unwrap());
        assert_eq!(n, Some(18));
        let h = FrameHeader::from_slice(&out[0][..16]).unwrap();
        assert_eq!(u16::from(h.msg_type), MSG_RX);
        assert_eq!(u16::from(h.length), 2);
        assert_eq!(u32::from(h.flags), FLAG_EXTENDED);
        assert_eq!(u32::from(h.can_id), 0x1ABC_DEF0);
        assert_eq!(&out[0][16..18], &[0xAA, 0xBB]);
    }

    #[test]
    fn received_rtr_frame_gets_zero_data_bytes_for_its_length() {
        let f: CanFrame = "123#R6".parse().unwrap();
        let (n, out) = with_chain(&[(vec![0xEE; 24], true)], |_, w| write_rx(w, &f).unwrap());
        assert_eq!(n, Some(22));
        assert_eq!(&out[0][16..22], &[0; 6]);
        let h = FrameHeader::from_slice(&out[0][..16]).unwrap();
        assert_eq!((u16::from(h.length), u32::from(h.flags)), (6, FLAG_RTR));
    }

    #[test]
    fn received_frame_that_does_not_fit_is_not_written() {
        let f = CanFrame::new(1, false, true, &[1; 64]).unwrap();
        let (n, out) = with_chain(&[(vec![0xEE; 24], true)], |_, w| write_rx(w, &f).unwrap());
        assert_eq!(n, None);
        assert_eq!(out[0], vec![0xEE; 24]);
    }
}
