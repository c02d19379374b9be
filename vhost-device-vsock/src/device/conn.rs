// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One stream connection and its credit accounting (virtio 1.3, 5.10.6.3).
//!
//! States:
//!
//! ```text
//! host program connects ──► Handshake ──CONNECT <port>──► Connecting ──RESPONSE──► Established
//! guest REQUEST ───────────────────────────────────────────────────────────────► Established
//! Established ──SHUTDOWN both / RST / host socket error──► (removed, RST sent where due)
//! ```
//!
//! Credit, guest to host: the device advertises `buf_alloc` bytes of buffer and
//! counts in `fwd_cnt` what it has passed on to the host socket; the guest may
//! have at most `buf_alloc - (tx_cnt - fwd_cnt)` bytes in flight, so the
//! device's buffer for a connection never exceeds `buf_alloc` however slow the
//! host reader is. Host to guest: the device sends at most the guest's
//! `peer_buf_alloc - (rx_cnt - peer_fwd_cnt)` bytes.

use std::collections::VecDeque;
use std::io;

use crate::host::HostSocket;
use crate::virtio::Op;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A host program connected; waiting for its `CONNECT <port>\n`.
    Handshake,
    /// REQUEST sent to the guest; waiting for RESPONSE.
    Connecting,
    /// The guest asked for a forwarded host `AF_VSOCK` connection that is
    /// still being made (non-blocking connect; waits for `EPOLLOUT`).
    HostConnecting,
    /// Data flows.
    Established,
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// Host end.
    pub stream: HostSocket,
    /// Life cycle state.
    pub state: State,
    /// Port on the host side (CID 2).
    pub host_port: u32,
    /// Port on the guest side.
    pub guest_port: u32,
    /// The daemon's own bytes for the host program (`OK <port>\n`), written
    /// before guest data and not counted as guest data forwarded.
    pub reply: VecDeque<u8>,
    /// Guest-to-host bytes not yet written to the host socket (stream).
    pub tx_buf: VecDeque<u8>,
    /// Complete guest messages not yet sent to the host socket (seqpacket).
    pub tx_msgs: VecDeque<Vec<u8>>,
    /// The guest message being assembled until its EOM (seqpacket).
    pub tx_partial: Vec<u8>,
    /// Host message being delivered to the guest, and how much of it went (seqpacket).
    /// (allocated per message, freed once delivered).
    pub rx_msg: Option<(Vec<u8>, usize)>,
    /// Our receive buffer size, advertised to the guest.
    pub buf_alloc: u32,
    /// Bytes passed on to the host (wrapping).
    pub fwd_cnt: u32,
    /// `fwd_cnt` last told to the guest.
    pub fwd_cnt_sent: u32,
    /// The guest's receive buffer size.
    pub peer_buf_alloc: u32,
    /// The guest's consumed count.
    pub peer_fwd_cnt: u32,
    /// Bytes sent to the guest (wrapping).
    pub rx_cnt: u32,
    /// The guest will send no more.
    pub guest_shut_send: bool,
    /// The guest will receive no more.
    pub guest_shut_rcv: bool,
    /// The host socket reached end of file.
    pub host_eof: bool,
    /// Control packets waiting for an rx buffer: (op, flags).
    pub control: VecDeque<(Op, u32)>,
    /// The host socket may have data (cleared on `WouldBlock`).
    pub readable: bool,
    /// Events currently registered in epoll (`None`: not registered).
    pub interest: Option<u32>,
    /// Partial handshake line.
    pub handshake: Vec<u8>,
}

impl Conn {
    /// A connection in `state` over `stream`.
    pub fn new(
        stream: HostSocket,
        state: State,
        host_port: u32,
        guest_port: u32,
        buf_alloc: u32,
    ) -> Self {
        Self {
            stream,
            state,
            host_port,
            guest_port,
            reply: VecDeque::new(),
            tx_buf: VecDeque::new(),
            tx_msgs: VecDeque::new(),
            tx_partial: Vec::new(),
            rx_msg: None,
            buf_alloc,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rx_cnt: 0,
            guest_shut_send: false,
            guest_shut_rcv: false,
            host_eof: false,
            control: VecDeque::new(),
            readable: false,
            interest: None,
            handshake: Vec::new(),
        }
    }

    /// Take the guest's credit fields from a packet.
    pub fn update_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
    }

    /// Bytes the device may still send to the guest.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the guest sent more than its credit allows if `len` more bytes
    /// were buffered.
    pub fn would_overflow(&self, len: usize) -> bool {
        self.buffered() + len > self.buf_alloc as usize
    }

    /// Guest bytes held for the host socket.
    pub fn buffered(&self) -> usize {
        self.tx_buf.len() + self.tx_msgs.iter().map(Vec::len).sum::<usize>() + self.tx_partial.len()
    }

    /// Whether guest data waits for the host socket to accept it.
    pub fn has_pending_tx(&self) -> bool {
        !self.reply.is_empty() || !self.tx_buf.is_empty() || !self.tx_msgs.is_empty()
    }

    /// A socket type of the connection, as on the wire.
    pub fn wire_type(&self) -> u16 {
        if self.stream.seqpacket {
            crate::virtio::TYPE_SEQPACKET
        } else {
            crate::virtio::TYPE_STREAM
        }
    }

    /// Whether host data should be read and sent to the guest now.
    pub fn wants_host_data(&self) -> bool {
        match self.state {
            State::Handshake => true,
            State::Connecting | State::HostConnecting => false,
            State::Established => !self.host_eof && !self.guest_shut_rcv && self.peer_credit() > 0,
        }
    }

    /// Whether the guest should be told of freed buffer space: after a quarter
    /// of the buffer has drained since the last update.
    pub fn credit_update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= self.buf_alloc / 4
    }

    /// Write buffered guest data to the host socket until it would block.
    /// Returns the bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        while !self.reply.is_empty() {
            let (front, _) = self.reply.as_slices();
            match self.stream.send(front) {
                Ok(n) => {
                    self.reply.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        let mut total = 0;
        while let Some(msg) = self.tx_msgs.front() {
            match self.stream.send(msg) {
                Ok(_) => {
                    let n = msg.len();
                    self.tx_msgs.pop_front();
                    total += n;
                    self.fwd_cnt = self
                        .fwd_cnt
                        .wrapping_add(u32::try_from(n).unwrap_or(u32::MAX));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) => return Err(e),
            }
        }
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.send(front) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    total += n;
                    self.fwd_cnt = self
                        .fwd_cnt
                        .wrapping_add(u32::try_from(n).unwrap_or(u32::MAX));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// The header of a packet to the guest, counting `len` payload bytes as sent
    /// and the current `fwd_cnt` as told.
    pub fn header_to_guest(
        &mut self,
        guest_cid: u64,
        op: Op,
        flags: u32,
        len: u32,
    ) -> crate::virtio::PacketHeader {
        self.rx_cnt = self.rx_cnt.wrapping_add(len);
        self.fwd_cnt_sent = self.fwd_cnt;
        crate::request::header(
            guest_cid,
            self.wire_type(),
            self.host_port,
            self.guest_port,
            op,
            flags,
            len,
            self.buf_alloc,
            self.fwd_cnt,
        )
    }

    /// The host program closed its sending side: tell the guest.
    pub fn host_ended(&mut self) {
        self.host_eof = true;
        self.readable = false;
        self.push_control(Op::Shutdown, crate::virtio::SHUTDOWN_SEND);
    }

    /// Queue a control packet for the guest.
    pub fn push_control(&mut self, op: Op, flags: u32) {
        if op == Op::CreditUpdate && self.control.iter().any(|&(o, _)| o == Op::CreditUpdate) {
            return;
        }
        self.control.push_back((op, flags));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::net::UnixStream;

    fn conn(buf_alloc: u32) -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Conn::new(a.into(), State::Established, 1, 2, buf_alloc), b)
    }

    #[test]
    fn peer_credit_is_buffer_minus_bytes_in_flight() {
        let (mut c, _peer) = conn(1024);
        c.update_peer(1000, 0);
        c.rx_cnt = 600;
        assert_eq!(c.peer_credit(), 400);
        c.update_peer(1000, 600);
        assert_eq!(c.peer_credit(), 1000);
    }

    #[test]
    fn peer_credit_survives_counter_wraparound() {
        let (mut c, _peer) = conn(1024);
        c.update_peer(4096, u32::MAX - 100);
        c.rx_cnt = 200; // 301 bytes sent since the guest's count
        assert_eq!(c.peer_credit(), 4096 - 301);
    }

    #[test]
    fn guest_overrunning_its_credit_is_detected() {
        let (mut c, _peer) = conn(100);
        c.tx_buf.extend([0u8; 60]);
        assert!(!c.would_overflow(40));
        assert!(c.would_overflow(41));
    }

    #[test]
    fn flush_counts_forwarded_bytes_and_stops_when_the_reader_is_slow() {
        let (mut c, peer) = conn(1 << 22);
        c.tx_buf.extend(vec![7u8; 1 << 21]);
        let written = c.flush().unwrap();
        assert!(
            written > 0 && written < 1 << 21,
            "socket buffer should fill up: {written}"
        );
        assert_eq!(c.fwd_cnt as usize, written);
        assert_eq!(c.tx_buf.len(), (1 << 21) - written);
        drop(peer);
    }

    #[test]
    fn handshake_reply_is_not_counted_as_forwarded_guest_data() {
        let (mut c, peer) = conn(1024);
        c.reply.extend(b"OK 7\n");
        c.tx_buf.extend(b"data");
        c.flush().unwrap();
        assert_eq!(c.fwd_cnt, 4);
        let mut buf = [0u8; 9];
        std::io::Read::read_exact(&mut &peer, &mut buf).unwrap();
        assert_eq!(&buf, b"OK 7\ndata");
    }

    #[test]
    fn credit_update_is_due_after_a_quarter_of_the_buffer() {
        let (mut c, _peer) = conn(1000);
        c.fwd_cnt = 249;
        assert!(!c.credit_update_due());
        c.fwd_cnt = 250;
        assert!(c.credit_update_due());
    }

    #[test]
    fn no_host_data_is_wanted_without_credit_or_after_shutdown() {
        let (mut c, _peer) = conn(1000);
        c.update_peer(0, 0);
        assert!(!c.wants_host_data());
        c.update_peer(10, 0);
        assert!(c.wants_host_data());
        c.guest_shut_rcv = true;
        assert!(!c.wants_host_data());
    }

    #[test]
    fn credit_updates_are_not_queued_twice() {
        let (mut c, _peer) = conn(1000);
        c.push_control(Op::CreditUpdate, 0);
        c.push_control(Op::CreditUpdate, 0);
        assert_eq!(c.control.len(), 1);
    }
}
