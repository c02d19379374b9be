// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Packets: reading a driver's packet from a [`Reader`], checking it, and
//! writing the device's packets to a [`Writer`] (virtio 1.3, 5.10.6).
//!
//! Pure: no vrings and no sockets.

use std::io::{self, Read, Write};

use thiserror::Error;
use vhost_device_common::queue::{Reader, Writer};
use vhost_device_common::vm_memory::ByteValued;

use crate::virtio::{Op, PacketHeader, HOST_CID, TYPE_SEQPACKET, TYPE_STREAM};

/// Largest payload accepted in one packet from the driver, and sent in one
/// packet to it (Linux uses 64 KiB at most).
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// A packet the device refuses (a guest error).
#[derive(Debug, Error)]
pub enum Error {
    /// Shorter than its header.
    #[error("packet shorter than its header")]
    ShortHeader(#[source] io::Error),
    /// Wrong source CID.
    #[error("packet from CID {0}, not the guest's")]
    WrongSource(u64),
    /// Not addressed to the host.
    #[error("packet for CID {0}, not the host")]
    WrongDestination(u64),
    /// Unknown op.
    #[error("unknown operation {0}")]
    UnknownOp(u16),
    /// Unsupported socket type.
    #[error("unsupported socket type {0}")]
    UnsupportedType(u16),
    /// Payload longer than the buffer or the limit.
    #[error("payload of {len} bytes with {available} bytes in the buffer")]
    BadLength {
        /// Claimed length.
        len: u32,
        /// What the chain holds.
        available: usize,
    },
}

/// A checked packet from the driver: header, op and where its payload is.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    /// Raw header.
    pub hdr: PacketHeader,
    /// Decoded op.
    pub op: Op,
}

impl Packet {
    /// Guest port.
    pub fn src_port(&self) -> u32 {
        self.hdr.src_port.to_native()
    }
    /// Host port.
    pub fn dst_port(&self) -> u32 {
        self.hdr.dst_port.to_native()
    }
    /// Payload length.
    pub fn len(&self) -> u32 {
        self.hdr.len.to_native()
    }
    /// No payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Seqpacket rather than stream.
    pub fn is_seqpacket(&self) -> bool {
        self.hdr.type_.to_native() == TYPE_SEQPACKET
    }
}

/// Read and check a packet header. On error the caller answers with RST where
/// there is someone to answer (see [`rst_for`]).
pub fn parse(
    reader: &mut Reader<'_>,
    guest_cid: u64,
    seqpacket: bool,
) -> Result<Packet, (Error, Option<PacketHeader>)> {
    let hdr: PacketHeader = reader
        .read_obj()
        .map_err(|e| (Error::ShortHeader(e), None))?;
    let (src, dst) = (hdr.src_cid.to_native(), hdr.dst_cid.to_native());
    if src != guest_cid {
        return Err((Error::WrongSource(src), Some(hdr)));
    }
    if dst == src || dst < HOST_CID {
        return Err((Error::WrongDestination(dst), Some(hdr)));
    }
    let op = Op::try_from(hdr.op.to_native()).map_err(|o| (Error::UnknownOp(o), Some(hdr)))?;
    let ty = hdr.type_.to_native();
    if ty != TYPE_STREAM && !(seqpacket && ty == TYPE_SEQPACKET) {
        return Err((Error::UnsupportedType(ty), Some(hdr)));
    }
    let len = hdr.len.to_native();
    let available = reader.available_bytes();
    if (op == Op::Rw && (len > MAX_PAYLOAD || len as usize > available))
        || (op != Op::Rw && len != 0)
    {
        return Err((Error::BadLength { len, available }, Some(hdr)));
    }
    Ok(Packet { hdr, op })
}

/// Read a packet's payload into `out` (appending).
pub fn read_payload(reader: &mut Reader<'_>, len: u32, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.resize(start + len as usize, 0);
    reader.read_exact(&mut out[start..])
}

/// The RST that answers a refused packet `hdr` from the guest, or `None` when
/// no reply is due (an RST is never answered).
pub fn rst_for(hdr: &PacketHeader, guest_cid: u64) -> Option<PacketHeader> {
    if hdr.op.to_native() == u16::from(Op::Rst) {
        return None;
    }
    Some(PacketHeader {
        src_cid: HOST_CID.into(),
        dst_cid: guest_cid.into(),
        src_port: hdr.dst_port,
        dst_port: hdr.src_port,
        type_: hdr.type_,
        op: u16::from(Op::Rst).into(),
        ..PacketHeader::default()
    })
}

/// Build a device-to-driver header.
#[allow(clippy::too_many_arguments)]
pub fn header(
    guest_cid: u64,
    ty: u16,
    host_port: u32,
    guest_port: u32,
    op: Op,
    flags: u32,
    len: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
) -> PacketHeader {
    PacketHeader {
        src_cid: HOST_CID.into(),
        dst_cid: guest_cid.into(),
        src_port: host_port.into(),
        dst_port: guest_port.into(),
        len: len.into(),
        type_: ty.into(),
        op: u16::from(op).into(),
        flags: flags.into(),
        buf_alloc: buf_alloc.into(),
        fwd_cnt: fwd_cnt.into(),
    }
}

/// Write a packet (header and payload) to the driver's buffer; returns the
/// used length. The caller checks that it fits.
pub fn write(writer: &mut Writer<'_>, hdr: PacketHeader, payload: &[u8]) -> io::Result<u32> {
    writer.write_all(hdr.as_slice())?;
    writer.write_all(payload)?;
    u32::try_from(writer.bytes_written()).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::queue::{drain, Completion};
    use vhost_device_common::testing::{TestQueue, BUFFERS};

    const GUEST: u64 = 3;

    fn hdr(op: u16, ty: u16, len: u32) -> PacketHeader {
        PacketHeader {
            src_cid: GUEST.into(),
            dst_cid: HOST_CID.into(),
            src_port: 10.into(),
            dst_port: 20.into(),
            len: len.into(),
            type_: ty.into(),
            op: op.into(),
            ..PacketHeader::default()
        }
    }

    /// Parse the packet `bytes`, split into descriptors at `splits`.
    fn parse_bytes(bytes: &[u8], splits: &[usize], seqpacket: bool) -> Result<Packet, Error> {
        let mut q = TestQueue::new(16, false).unwrap();
        q.write_bytes(BUFFERS, bytes).unwrap();
        let mut bufs = Vec::new();
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&bytes.len())) {
            bufs.push((
                BUFFERS + start as u64,
                u32::try_from(end - start).unwrap(),
                false,
            ));
            start = end;
        }
        q.add(&bufs).unwrap();
        let mut out = None;
        drain(&q.context(), &q.vring, |r, _| {
            out = Some(parse(r, GUEST, seqpacket).map_err(|(e, _)| e));
            Ok(Completion::Used(0))
        })
        .unwrap();
        out.unwrap()
    }

    fn packet(h: PacketHeader, payload: &[u8]) -> Vec<u8> {
        let mut b = h.as_slice().to_vec();
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn header_split_across_descriptors_is_parsed() {
        let bytes = packet(hdr(5, TYPE_STREAM, 3), b"abc");
        let p = parse_bytes(&bytes, &[7, 30, 44], false).unwrap();
        assert_eq!(
            (p.op, p.len(), p.src_port(), p.dst_port()),
            (Op::Rw, 3, 10, 20)
        );
    }

    #[test]
    fn short_header_is_refused() {
        let bytes = packet(hdr(1, TYPE_STREAM, 0), &[]);
        assert!(matches!(
            parse_bytes(&bytes[..40], &[], false),
            Err(Error::ShortHeader(_))
        ));
    }

    #[test]
    fn length_beyond_the_buffer_is_refused() {
        let bytes = packet(hdr(5, TYPE_STREAM, 100), b"abc");
        assert!(matches!(
            parse_bytes(&bytes, &[], false),
            Err(Error::BadLength { len: 100, .. })
        ));
    }

    #[test]
    fn control_packet_with_payload_is_refused() {
        let bytes = packet(hdr(1, TYPE_STREAM, 3), b"abc");
        assert!(matches!(
            parse_bytes(&bytes, &[], false),
            Err(Error::BadLength { .. })
        ));
    }

    #[test]
    fn seqpacket_needs_the_feature() {
        let bytes = packet(hdr(1, TYPE_SEQPACKET, 0), &[]);
        assert!(matches!(
            parse_bytes(&bytes, &[], false),
            Err(Error::UnsupportedType(2))
        ));
        assert!(parse_bytes(&bytes, &[], true).is_ok());
    }

    #[test]
    fn packet_from_another_cid_is_refused() {
        let mut h = hdr(1, TYPE_STREAM, 0);
        h.src_cid = 9.into();
        assert!(matches!(
            parse_bytes(&packet(h, &[]), &[], false),
            Err(Error::WrongSource(9))
        ));
    }

    #[test]
    fn rst_is_never_answered_with_rst() {
        assert!(rst_for(&hdr(3, TYPE_STREAM, 0), GUEST).is_none());
        let r = rst_for(&hdr(1, TYPE_STREAM, 0), GUEST).unwrap();
        assert_eq!((r.src_port.to_native(), r.dst_port.to_native()), (20, 10));
    }
}
