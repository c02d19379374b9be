// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A minimal virtio-can driver (virtio 1.4, 5.20) over a [`Session`]: start
//! and stop the controller, send frames and read their results, keep the
//! receive queue filled and collect received frames. Used by the CLI's
//! `can-send`/`can-recv` (for example inside a VM with `vcan`) and by the
//! CAN daemon's integration tests.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::{Chain, Error, Session, Used};

/// Transmit queue.
pub const TXQ: usize = 0;
/// Receive queue.
pub const RXQ: usize = 1;
/// Control queue.
pub const CONTROLQ: usize = 2;
/// `VIRTIO_CAN_F_CAN_CLASSIC`.
pub const F_CAN_CLASSIC: u64 = 1 << 0;
/// `VIRTIO_CAN_F_CAN_FD`.
pub const F_CAN_FD: u64 = 1 << 1;
/// `VIRTIO_CAN_F_RTR_FRAMES`.
pub const F_RTR_FRAMES: u64 = 1 << 2;
/// `VIRTIO_CAN_F_LATE_TX_ACK`.
pub const F_LATE_TX_ACK: u64 = 1 << 3;
/// `VIRTIO_CAN_TX`.
pub const MSG_TX: u16 = 0x0001;
/// `VIRTIO_CAN_RX`.
pub const MSG_RX: u16 = 0x0101;
/// `VIRTIO_CAN_SET_CTRL_MODE_START`.
pub const MSG_START: u16 = 0x0201;
/// `VIRTIO_CAN_SET_CTRL_MODE_STOP`.
pub const MSG_STOP: u16 = 0x0202;
/// `VIRTIO_CAN_RESULT_OK`.
pub const RESULT_OK: u8 = 0;
/// `VIRTIO_CAN_FLAGS_EXTENDED`.
pub const FLAG_EXTENDED: u32 = 0x8000;
/// `VIRTIO_CAN_FLAGS_FD`.
pub const FLAG_FD: u32 = 0x4000;
/// `VIRTIO_CAN_FLAGS_RTR`.
pub const FLAG_RTR: u32 = 0x2000;
/// `sizeof(virtio_can_rx)` without data.
pub const HEADER: usize = 16;

/// A frame as the driver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Identifier.
    pub id: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The `length` field (for RTR: the requested length).
    pub length: u16,
    /// Data bytes (empty for RTR).
    pub data: Vec<u8>,
}

impl Frame {
    /// A data frame (FD if `fd`).
    pub fn data(id: u32, extended: bool, fd: bool, data: &[u8]) -> Self {
        let mut flags = 0;
        if extended {
            flags |= FLAG_EXTENDED;
        }
        if fd {
            flags |= FLAG_FD;
        }
        Self {
            id,
            flags,
            length: u16::try_from(data.len()).unwrap_or(u16::MAX),
            data: data.to_vec(),
        }
    }

    /// A remote transmission request for `length` bytes.
    pub fn remote(id: u32, extended: bool, length: u16) -> Self {
        Self {
            id,
            flags: FLAG_RTR | if extended { FLAG_EXTENDED } else { 0 },
            length,
            data: Vec::new(),
        }
    }

    /// `virtio_can_tx_out` bytes: header, then the data (for RTR, `length`
    /// zero bytes, as Linux sends them).
    pub fn tx_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + self.data.len());
        b.extend_from_slice(&MSG_TX.to_le_bytes());
        b.extend_from_slice(&self.length.to_le_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.id.to_le_bytes());
        if self.flags & FLAG_RTR != 0 {
            b.resize(b.len() + usize::from(self.length.min(8)), 0);
        } else {
            b.extend_from_slice(&self.data);
        }
        b
    }

    /// Parse a `virtio_can_rx` of `bytes` (the used length of the buffer).
    pub fn from_rx(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if u16_at(0) != MSG_RX {
            return None;
        }
        let length = u16_at(2);
        let flags = u32_at(8);
        let id = u32_at(12);
        let data = if flags & FLAG_RTR != 0 {
            Vec::new()
        } else {
            bytes.get(HEADER..HEADER + usize::from(length))?.to_vec()
        };
        Some(Self {
            id,
            flags,
            length,
            data,
        })
    }
}

/// `cansend` syntax: `123#DEADBEEF`, `12345678#R4`, `123##1AABB` (FD).
impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flags & FLAG_EXTENDED != 0 {
            write!(f, "{:08X}#", self.id)?;
        } else {
            write!(f, "{:03X}#", self.id)?;
        }
        if self.flags & FLAG_RTR != 0 {
            return write!(f, "R{}", self.length);
        }
        if self.flags & FLAG_FD != 0 {
            f.write_str("#0")?;
        }
        self.data.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl FromStr for Frame {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not <id>#<hex>, <id>#R<len> or <id>##<flags><hex>");
        let (id, rest) = s.split_once('#').ok_or_else(bad)?;
        let extended = match id.len() {
            3 => false,
            8 => true,
            _ => return Err(bad()),
        };
        let id = u32::from_str_radix(id, 16).map_err(|_| bad())?;
        let hex = |h: &str| -> Result<Vec<u8>, String> {
            let h: String = h.chars().filter(|&c| c != '.').collect();
            if h.len() % 2 != 0 {
                return Err(bad());
            }
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| bad()))
                .collect()
        };
        if let Some(fd) = rest.strip_prefix('#') {
            let data = hex(fd.get(1..).ok_or_else(bad)?)?;
            return Ok(Frame::data(id, extended, true, &data));
        }
        if let Some(len) = rest.strip_prefix('R') {
            let len = if len.is_empty() {
                0
            } else {
                len.parse().map_err(|_| bad())?
            };
            return Ok(Frame::remote(id, extended, len));
        }
        Ok(Frame::data(id, extended, false, &hex(rest)?))
    }
}

/// A virtio-can driver.
pub struct CanDriver {
    s: Session,
    rx_size: u32,
    /// Posted rx buffers: head → address.
    rx: HashMap<u16, u64>,
    /// TX requests in flight: head → address of the result byte.
    tx: HashMap<u16, u64>,
    received: VecDeque<Frame>,
    results: VecDeque<(u16, u8)>,
}

impl std::fmt::Debug for CanDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanDriver")
            .field("rx_posted", &self.rx.len())
            .field("tx_in_flight", &self.tx.len())
            .finish()
    }
}

impl CanDriver {
    /// Take over a started session of a CAN device and post `rx_buffers`
    /// receive buffers (16 + 64 bytes with FD, else 16 + 8).
    pub fn new(session: Session, rx_buffers: usize) -> Result<Self, Error> {
        let fd = session.features & F_CAN_FD != 0;
        let mut d = Self {
            s: session,
            rx_size: u32::try_from(HEADER).unwrap_or(16) + if fd { 64 } else { 8 },
            rx: HashMap::new(),
            tx: HashMap::new(),
            received: VecDeque::new(),
            results: VecDeque::new(),
        };
        d.add_rx_buffers(rx_buffers)?;
        Ok(d)
    }

    /// Post `n` more receive buffers and kick.
    pub fn add_rx_buffers(&mut self, n: usize) -> Result<(), Error> {
        for _ in 0..n {
            let addr = self.s.ram().alloc(u64::from(self.rx_size), 8)?;
            self.post_rx(addr)?;
        }
        self.s.queue(RXQ)?.kick()
    }

    /// The session.
    pub fn session(&mut self) -> &mut Session {
        &mut self.s
    }

    /// Give the session back (the rings stay as they are).
    pub fn into_session(self) -> Session {
        self.s
    }

    fn post_rx(&mut self, addr: u64) -> Result<(), Error> {
        let head = self
            .s
            .queue(RXQ)?
            .add(&Chain::new().writable(addr, self.rx_size))?;
        self.rx.insert(head, addr);
        Ok(())
    }

    /// Send a control request and wait for its result.
    pub fn control(&mut self, msg_type: u16, timeout: Duration) -> Result<u8, Error> {
        let req = self.s.ram().alloc(2, 2)?;
        self.s.ram().write(req, &msg_type.to_le_bytes())?;
        let res = self.s.ram().alloc(1, 1)?;
        self.s.ram().write(res, &[0xFF])?;
        let vq = self.s.queue(CONTROLQ)?;
        let head = vq.add(&Chain::new().readable(req, 2).writable(res, 1))?;
        vq.kick()?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let used = self.s.queue(CONTROLQ)?.wait_used(left)?;
            if let Some(u) = used.iter().find(|u| u.head == head) {
                if u.len < 1 {
                    return Err(Error::NoProgress(1));
                }
                return Ok(self.s.ram().read(res, 1)?[0]);
            }
        }
    }

    /// START the controller; its result.
    pub fn start(&mut self, timeout: Duration) -> Result<u8, Error> {
        self.control(MSG_START, timeout)
    }

    /// STOP the controller; its result.
    pub fn stop(&mut self, timeout: Duration) -> Result<u8, Error> {
        self.control(MSG_STOP, timeout)
    }

    /// Post a TX request for `frame` (no kick); its head.
    pub fn post(&mut self, frame: &Frame) -> Result<u16, Error> {
        self.post_bytes(&frame.tx_bytes())
    }

    /// Post a TX request of raw `virtio_can_tx_out` bytes (no kick).
    pub fn post_bytes(&mut self, bytes: &[u8]) -> Result<u16, Error> {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let out = self.s.ram().alloc(u64::from(len).max(1), 8)?;
        self.s.ram().write(out, bytes)?;
        let res = self.s.ram().alloc(1, 1)?;
        self.s.ram().write(res, &[0xFF])?;
        let head = self
            .s
            .queue(TXQ)?
            .add(&Chain::new().readable(out, len.max(1)).writable(res, 1))?;
        self.tx.insert(head, res);
        Ok(head)
    }

    /// Kick the transmit queue.
    pub fn kick_tx(&mut self) -> Result<(), Error> {
        self.s.queue(TXQ)?.kick()
    }

    /// Send `frame`: post and kick; its head.
    pub fn send(&mut self, frame: &Frame) -> Result<u16, Error> {
        let head = self.post(frame)?;
        self.kick_tx()?;
        Ok(head)
    }

    fn collect_tx(&mut self, used: Vec<Used>) -> Result<(), Error> {
        for u in used {
            let Some(res) = self.tx.remove(&u.head) else {
                return Err(Error::BadUsedId(u32::from(u.head)));
            };
            let result = if u.len == 0 {
                0xFF
            } else {
                self.s.ram().read(res, 1)?[0]
            };
            self.results.push_back((u.head, result));
        }
        Ok(())
    }

    /// TX results (head, result byte; 0xFF for used length 0) that arrived
    /// so far, without waiting.
    pub fn take_results(&mut self) -> Result<Vec<(u16, u8)>, Error> {
        let used = self.s.queue(TXQ)?.take_used()?;
        self.collect_tx(used)?;
        Ok(self.results.drain(..).collect())
    }

    /// Wait up to `timeout` for the next TX result.
    pub fn wait_result(&mut self, timeout: Duration) -> Result<(u16, u8), Error> {
        let deadline = Instant::now() + timeout;
        while self.results.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let used = self.s.queue(TXQ)?.wait_used(left)?;
            self.collect_tx(used)?;
        }
        self.results.pop_front().ok_or(Error::Timeout)
    }

    /// Send `frame` and wait for its result.
    pub fn transmit(&mut self, frame: &Frame, timeout: Duration) -> Result<u8, Error> {
        let head = self.send(frame)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (h, r) = self.wait_result(left)?;
            if h == head {
                return Ok(r);
            }
        }
    }

    fn collect_rx(&mut self, used: Vec<Used>) -> Result<(), Error> {
        // Every used head first: posting a buffer again may reuse the
        // descriptor index of a later entry of this batch.
        let mut done = Vec::with_capacity(used.len());
        for u in used {
            let Some(addr) = self.rx.remove(&u.head) else {
                return Err(Error::BadUsedId(u32::from(u.head)));
            };
            if u.len > self.rx_size {
                return Err(Error::UsedTooLong {
                    len: u.len,
                    capacity: self.rx_size,
                });
            }
            let bytes = self.s.ram().read(addr, u.len as usize)?;
            match Frame::from_rx(&bytes) {
                Some(f) => self.received.push_back(f),
                None => log::warn!("rx buffer with {} unusable bytes", u.len),
            }
            done.push(addr);
        }
        for addr in done {
            self.post_rx(addr)?;
        }
        self.s.queue(RXQ)?.kick()?;
        Ok(())
    }

    /// Wait up to `timeout` for the next received frame (the buffer is
    /// posted again).
    pub fn recv(&mut self, timeout: Duration) -> Result<Frame, Error> {
        let deadline = Instant::now() + timeout;
        while self.received.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let used = self.s.queue(RXQ)?.wait_used(left)?;
            self.collect_rx(used)?;
        }
        self.received.pop_front().ok_or(Error::Timeout)
    }

    /// Frames received so far, without waiting.
    pub fn take_received(&mut self) -> Result<Vec<Frame>, Error> {
        let used = self.s.queue(RXQ)?.take_used()?;
        self.collect_rx(used)?;
        Ok(self.received.drain(..).collect())
    }

    /// Rx buffers posted and not yet used.
    pub fn rx_posted(&self) -> usize {
        self.rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_print_in_cansend_syntax() {
        for s in ["123#DEADBEEF", "1ABCDEF0#R4", "7FF##0AABB", "000#"] {
            assert_eq!(s.parse::<Frame>().unwrap().to_string(), s);
        }
        assert!("12#00".parse::<Frame>().is_err());
    }

    #[test]
    fn rtr_request_carries_zero_data_bytes_for_its_length() {
        let b = Frame::remote(0x10, false, 3).tx_bytes();
        assert_eq!(b.len(), HEADER + 3);
        assert_eq!(&b[2..4], &[3, 0]);
    }

    #[test]
    fn rx_bytes_parse() {
        let mut b = vec![0x01, 0x01, 2, 0, 0, 0, 0, 0];
        b.extend_from_slice(&FLAG_EXTENDED.to_le_bytes());
        b.extend_from_slice(&0x1234u32.to_le_bytes());
        b.extend_from_slice(&[9, 8]);
        assert_eq!(
            Frame::from_rx(&b),
            Some(Frame::data(0x1234, true, false, &[9, 8]))
        );
        assert_eq!(Frame::from_rx(&b[..17]), None);
    }
}
