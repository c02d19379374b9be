// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-vsock wire format (virtio 1.3, 5.10 "Socket Device").
//!
//! Queues: 0 `rx` (device to driver), 1 `tx` (driver to device), 2 `event`.
//! Every packet is a 44-byte [`PacketHeader`] followed by `len` payload bytes.

use vhost_device_common::byte_valued;
use vhost_device_common::vm_memory::{Le16, Le32, Le64};

/// Device id.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Receive queue (device to driver).
pub const RX_QUEUE: usize = 0;
/// Transmit queue (driver to device).
pub const TX_QUEUE: usize = 1;
/// Event queue.
pub const EVENT_QUEUE: usize = 2;
/// Number of queues.
pub const NUM_QUEUES: usize = 3;

/// The host's CID.
pub const HOST_CID: u64 = 2;

/// `VIRTIO_VSOCK_F_STREAM` (bit 0).
pub const F_STREAM: u64 = 1 << 0;

/// `VIRTIO_VSOCK_F_SEQPACKET` (bit 1).
pub const F_SEQPACKET: u64 = 1 << 1;

/// RW flag (seqpacket): end of message.
pub const SEQ_EOM: u32 = 1;
/// RW flag (seqpacket): end of record.
pub const SEQ_EOR: u32 = 2;

/// Socket type: stream.
pub const TYPE_STREAM: u16 = 1;
/// Socket type: seqpacket.
pub const TYPE_SEQPACKET: u16 = 2;

/// Packet operations (5.10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Connection request.
    Request,
    /// Connection accepted.
    Response,
    /// Reset: the connection is gone (or never was).
    Rst,
    /// No more receiving and/or sending (flags).
    Shutdown,
    /// Data.
    Rw,
    /// Here is my credit.
    CreditUpdate,
    /// Please send your credit.
    CreditRequest,
}

impl TryFrom<u16> for Op {
    type Error = u16;

    fn try_from(v: u16) -> Result<Self, u16> {
        Ok(match v {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            other => return Err(other),
        })
    }
}

impl From<Op> for u16 {
    fn from(op: Op) -> u16 {
        match op {
            Op::Request => 1,
            Op::Response => 2,
            Op::Rst => 3,
            Op::Shutdown => 4,
            Op::Rw => 5,
            Op::CreditUpdate => 6,
            Op::CreditRequest => 7,
        }
    }
}

/// SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// Event id: the transport was reset; the driver must drop its connections.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// `struct virtio_vsock_hdr`.
#[doc(alias = "virtio_vsock_hdr")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct PacketHeader {
    /// Source CID.
    pub src_cid: Le64,
    /// Destination CID.
    pub dst_cid: Le64,
    /// Source port.
    pub src_port: Le32,
    /// Destination port.
    pub dst_port: Le32,
    /// Payload length.
    pub len: Le32,
    /// Socket type.
    pub type_: Le16,
    /// Operation.
    pub op: Le16,
    /// Op-specific flags.
    pub flags: Le32,
    /// Sender's receive buffer size.
    pub buf_alloc: Le32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: Le32,
}
byte_valued!(PacketHeader, 44);

/// `struct virtio_vsock_event`.
#[doc(alias = "virtio_vsock_event")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct Event {
    /// Event id.
    pub id: Le32,
}
byte_valued!(Event, 4);

/// `struct virtio_vsock_config`.
#[doc(alias = "virtio_vsock_config")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct Config {
    /// The guest's CID.
    pub guest_cid: Le64,
}
byte_valued!(Config, 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_and_unknown_ops_are_refused() {
        for v in 1..=7u16 {
            assert_eq!(u16::from(Op::try_from(v).unwrap()), v);
        }
        assert_eq!(Op::try_from(0), Err(0));
        assert_eq!(Op::try_from(8), Err(8));
    }
}
