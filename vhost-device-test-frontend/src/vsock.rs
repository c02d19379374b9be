// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A minimal virtio-vsock guest driver (virtio 1.3, 5.10) over a [`Session`]:
//! enough to open one stream connection either way, move data within credit
//! and report a CRC-32 of it. Used by the CLI's `vsock-send`/`vsock-recv`, for
//! example to check a daemon's forwarding inside a VM that has `AF_VSOCK`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::{Chain, Error, Session};

const RX: usize = 0;
const TX: usize = 1;
const RX_BUF: u32 = 64 * 1024 + 44;
const GUEST_BUF: u32 = 256 * 1024;
/// Packet operations used here.
pub mod op {
    #![allow(missing_docs)]
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
}

/// A packet header (host byte order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Hdr {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub ty: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Hdr {
    /// The 44 wire bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(44);
        b.extend_from_slice(&self.src_cid.to_le_bytes());
        b.extend_from_slice(&self.dst_cid.to_le_bytes());
        b.extend_from_slice(&self.src_port.to_le_bytes());
        b.extend_from_slice(&self.dst_port.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.ty.to_le_bytes());
        b.extend_from_slice(&self.op.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.buf_alloc.to_le_bytes());
        b.extend_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Decode the first 44 bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let u64_at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
        let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
        let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
        Some(Hdr {
            src_cid: u64_at(0)?,
            dst_cid: u64_at(8)?,
            src_port: u32_at(16)?,
            dst_port: u32_at(20)?,
            len: u32_at(24)?,
            ty: u16_at(28)?,
            op: u16_at(30)?,
            flags: u32_at(32)?,
            buf_alloc: u32_at(36)?,
            fwd_cnt: u32_at(40)?,
        })
    }
}

/// CRC-32 (IEEE 802.3, as zlib's `crc32`), continued from `crc`.
pub fn crc32(mut crc: u32, data: &[u8]) -> u32 {
    crc = !crc;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The guest side of a vsock device.
pub struct VsockGuest {
    /// The front-end session.
    pub s: Session,
    /// This guest's CID.
    pub cid: u64,
    /// Posted rx buffers by head: guest address and length.
    rx_heads: HashMap<u16, (u64, u32)>,
    /// Guest address of the transmit buffer.
    pub tx: u64,
    /// Packets received and not yet consumed.
    pub inbox: VecDeque<(Hdr, Vec<u8>)>,
}

impl VsockGuest {
    /// Take over `s` as the guest with CID `cid`; posts 64 rx buffers.
    pub fn new(s: Session, cid: u64) -> Result<Self, Error> {
        Self::with_rx_buffers(s, cid, 64)
    }

    /// Like [`Self::new`], posting `count` rx buffers of 64 KiB + 44 bytes
    /// (0: none, for a driver that never gives the device a buffer).
    pub fn with_rx_buffers(s: Session, cid: u64, count: usize) -> Result<Self, Error> {
        let tx = s.ram().alloc(u64::from(RX_BUF), 4096)?;
        let mut g = Self {
            s,
            cid,
            rx_heads: HashMap::new(),
            tx,
            inbox: VecDeque::new(),
        };
        for _ in 0..count {
            let buf = g.s.ram().alloc(u64::from(RX_BUF), 4096)?;
            g.post_rx(buf, RX_BUF)?;
        }
        g.s.queue(RX)?.kick()?;
        Ok(g)
    }

    fn post_rx(&mut self, buf: u64, len: u32) -> Result<(), Error> {
        let head = self.s.queue(RX)?.add(&Chain::new().writable(buf, len))?;
        self.rx_heads.insert(head, (buf, len));
        Ok(())
    }

    /// Post one more rx buffer of `len` bytes and kick (after a used entry
    /// it is reposted with the same length).
    pub fn add_rx_buffer(&mut self, len: u32) -> Result<(), Error> {
        let buf = self.s.ram().alloc(u64::from(len.max(1)), 8)?;
        self.post_rx(buf, len)?;
        self.s.queue(RX)?.kick()
    }

    /// A stream header from this guest to the host (CID 2).
    pub fn hdr(&self, src_port: u32, dst_port: u32, op: u16) -> Hdr {
        Hdr {
            src_cid: self.cid,
            dst_cid: 2,
            src_port,
            dst_port,
            ty: 1,
            op,
            buf_alloc: GUEST_BUF,
            ..Hdr::default()
        }
    }

    /// Send a packet on tx and wait until the device has taken it. A payload
    /// is split over two descriptors, as drivers may do.
    pub fn send(&mut self, mut h: Hdr, payload: &[u8]) -> Result<(), Error> {
        let len = u32::try_from(payload.len()).map_err(|_| Error::QueueFull)?;
        h.len = len;
        let mut bytes = h.bytes();
        bytes.extend_from_slice(payload);
        self.s.ram().write(self.tx, &bytes)?;
        let mut chain = Chain::new().readable(self.tx, 44);
        let half = len / 2;
        if half > 0 {
            chain = chain.readable(self.tx + 44, half);
        }
        if len > half {
            chain = chain.readable(self.tx + 44 + u64::from(half), len - half);
        }
        let vq = self.s.queue(TX)?;
        vq.add(&chain)?;
        vq.kick()?;
        vq.wait_used(Duration::from_secs(10))?;
        Ok(())
    }

    /// Collect whatever arrives on rx within `timeout` into the inbox,
    /// reposting buffers; `false` if nothing arrived.
    pub fn poll_rx(&mut self, timeout: Duration) -> Result<bool, Error> {
        let used = match self.s.queue(RX)?.wait_used(timeout) {
            Ok(u) => u,
            Err(Error::Timeout) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut done = Vec::new();
        for u in used {
            let (buf, len) = self
                .rx_heads
                .remove(&u.head)
                .ok_or(Error::BadUsedId(u32::from(u.head)))?;
            let data = self.s.ram().read(buf, u.len.min(len) as usize)?;
            if let Some(h) = Hdr::parse(&data) {
                self.inbox.push_back((h, data[44..].to_vec()));
            }
            done.push((buf, len));
        }
        // Repost only after every used head is accounted for: a reposted
        // buffer may take a descriptor index that a later used entry names.
        for (buf, len) in done {
            self.post_rx(buf, len)?;
        }
        self.s.queue(RX)?.kick()?;
        Ok(true)
    }

    /// The next packet from the device, waiting until `deadline`.
    pub fn recv(&mut self, deadline: Instant) -> Result<(Hdr, Vec<u8>), Error> {
        loop {
            if let Some(p) = self.inbox.pop_front() {
                return Ok(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            self.poll_rx(left.min(Duration::from_millis(200)))?;
        }
    }

    /// Connect to host port `port` from `local`, send `bytes` pseudo-random
    /// bytes within credit, then shut down both ways; returns their CRC-32.
    pub fn send_to_host(
        &mut self,
        local: u32,
        port: u32,
        bytes: u64,
        timeout: Duration,
    ) -> Result<u32, Error> {
        let deadline = Instant::now() + timeout;
        self.send(self.hdr(local, port, op::REQUEST), &[])?;
        let (mut alloc, mut fwd) = loop {
            let (h, _) = self.recv(deadline)?;
            match h.op {
                op::RESPONSE => break (h.buf_alloc, h.fwd_cnt),
                op::RST => return Err(Error::Timeout),
                _ => {}
            }
        };
        let (mut sent, mut crc, mut x) = (0u64, 0u32, 0x9E37_79B9_7F4A_7C15u64);
        let mut chunk = vec![0u8; 64 * 1024];
        while sent < bytes {
            let in_flight = u32::try_from(sent & 0xffff_ffff)
                .unwrap_or(0)
                .wrapping_sub(fwd);
            let credit = alloc.saturating_sub(in_flight);
            if credit == 0 {
                let (h, _) = self.recv(deadline)?;
                if h.op == op::RST {
                    return Err(Error::Timeout);
                }
                alloc = h.buf_alloc;
                fwd = h.fwd_cnt;
                continue;
            }
            let n = usize::try_from(u64::from(credit).min(bytes - sent))
                .unwrap_or(0)
                .min(chunk.len());
            for b in &mut chunk[..n] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            crc = crc32(crc, &chunk[..n]);
            self.send(self.hdr(local, port, op::RW), &chunk[..n])?;
            sent += n as u64;
            while let Some((h, _)) = self.inbox.pop_front() {
                alloc = h.buf_alloc;
                fwd = h.fwd_cnt;
            }
        }
        // Wait until the host has consumed everything, then close.
        while fwd != u32::try_from(sent & 0xffff_ffff).unwrap_or(0) {
            let (h, _) = self.recv(deadline)?;
            alloc = h.buf_alloc;
            fwd = h.fwd_cnt;
            let _ = alloc;
        }
        self.send(
            Hdr {
                flags: 3,
                ..self.hdr(local, port, op::SHUTDOWN)
            },
            &[],
        )?;
        Ok(crc)
    }

    /// Wait for a host connection to guest port `port`, accept it, receive
    /// `bytes` bytes and return their CRC-32.
    pub fn recv_from_host(
        &mut self,
        port: u32,
        bytes: u64,
        timeout: Duration,
    ) -> Result<u32, Error> {
        let deadline = Instant::now() + timeout;
        let peer = loop {
            let (h, _) = self.recv(deadline)?;
            if h.op == op::REQUEST && h.dst_port == port {
                break h.src_port;
            }
        };
        self.send(self.hdr(port, peer, op::RESPONSE), &[])?;
        let (mut got, mut crc, mut fwd, mut since) = (0u64, 0u32, 0u32, 0usize);
        while got < bytes {
            let (h, p) = self.recv(deadline)?;
            match h.op {
                op::RW => {
                    crc = crc32(crc, &p);
                    got += p.len() as u64;
                    fwd = fwd.wrapping_add(u32::try_from(p.len()).unwrap_or(0));
                    since += p.len();
                    if since >= 64 * 1024 {
                        since = 0;
                        self.send(
                            Hdr {
                                fwd_cnt: fwd,
                                ..self.hdr(port, peer, op::CREDIT_UPDATE)
                            },
                            &[],
                        )?;
                    }
                }
                op::RST | op::SHUTDOWN if got < bytes => return Err(Error::Timeout),
                _ => {}
            }
        }
        Ok(crc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xcbf4_3926);
    }
}
