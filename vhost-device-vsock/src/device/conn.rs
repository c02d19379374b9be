// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One connection: its state machine, its credit, and the guest bytes on
//! their way to the host socket (virtio 1.3, 5.10.6.3 "Buffer Space
//! Management", 5.10.6.5 "Stream Sockets", 5.10.6.6 "Seqpacket Sockets").
//!
//! Pure bookkeeping and the host socket's own I/O: no rings, no epoll.
//!
//! ```text
//!  host program ──► Handshake ──CONNECT <port>──┐
//!  forwarding listener ─────────────────────────┴► Requested ──RESPONSE──┐
//!  guest REQUEST ──► HostConnecting ──connected──────────────────────────┴► Established
//!
//!  Established ──guest SHUTDOWN(SEND)──────────────────────► GuestSendDone
//!  Established ──host EOF, or guest SHUTDOWN(RCV)──────────► HostSendDone
//!  Established ──guest SHUTDOWN(SEND|RCV)──────────────────► Closing
//!  GuestSendDone ──host EOF, or guest SHUTDOWN(RCV)────────► Closing
//!  HostSendDone ──guest SHUTDOWN(SEND)─────────────────────► Closing
//!  Closing ──guest data all written to the host socket─────► closed: host EOF, guest RST
//!
//!  any state ──guest RST, host socket error, timeout───────► closed (RST to the guest where due)
//! ```
//!
//! The spec's clean disconnect is SHUTDOWN with both flags answered by RST
//! (5.10.6.5). `Closing` is the time between the two: the guest's data that
//! the host program has not read yet is still written out, within the close
//! timeout, and only then is the host socket closed and the RST sent, so the
//! host program receives every byte the guest sent before its close, then
//! end of stream. A guest that gives up waiting and sends RST itself (Linux
//! does after 8 s) does not cut the data short: the connection is only
//! forgotten on the guest side and keeps writing until the timeout.
//!
//! `Handshake`, `Requested`, `HostConnecting` and `Closing` are timed (see
//! [`State::timeout`]); the others last as long as both sides want.
//!
//! Credit, guest to host: the device advertises `buf_alloc` bytes of buffer
//! and counts in `fwd_cnt` what it has passed on to the host socket; the guest
//! may have at most `buf_alloc - (tx_cnt - fwd_cnt)` bytes in flight, so the
//! device's buffer for a connection never exceeds `buf_alloc` however slow the
//! host reader is. Host to guest: the device sends at most the guest's
//! `peer_buf_alloc - (rx_cnt - peer_fwd_cnt)` bytes.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::host::HostSocket;
use crate::virtio::{Op, PacketHeader, SEQ_EOM, SHUTDOWN_RCV, SHUTDOWN_SEND};

/// Where a connection is in its life (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// A host program connected to `--uds-path`; its `CONNECT <port>\n`
    /// line is being read (so far: `line`).
    Handshake {
        /// The bytes of the line read so far.
        line: Vec<u8>,
    },
    /// The device sent REQUEST to the guest and waits for RESPONSE.
    Requested,
    /// The guest sent REQUEST; the device's connection to the host program
    /// is under way: an `AF_VSOCK` connect waiting for `EPOLLOUT`
    /// (`retry: None`), or a Unix socket whose listener's backlog is full,
    /// tried again after `retry`.
    HostConnecting {
        /// Delay before the next connect attempt, if the host listener was
        /// full.
        retry: Option<Duration>,
    },
    /// Data flows both ways.
    Established,
    /// Half-closed: the guest sends no more (SHUTDOWN with SEND); the host
    /// socket is shut down for writing once the guest's data is written.
    /// Host data still flows to the guest.
    GuestSendDone {
        /// The host socket has been shut down for writing.
        host_told: bool,
    },
    /// Half-closed: nothing more goes to the guest (the host program's end
    /// of stream, told to the guest as SHUTDOWN with SEND, or the guest's
    /// SHUTDOWN with RCV). Guest data still flows to the host.
    HostSendDone,
    /// Both directions are done: the guest's remaining data is written to the
    /// host socket, then the socket is closed and the guest gets RST.
    Closing {
        /// The guest already forgot the connection (it sent RST): no RST is
        /// due, and its ports may be used again.
        guest_gone: bool,
    },
}

/// Which timeout a state is subject to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Setting the connection up (handshake line, the guest's answer, the
    /// connect to the host program): `--connect-timeout` in all.
    Connect,
    /// Writing out the guest's data after its close: `--close-timeout`.
    Close,
}

impl State {
    /// The timeout the state is subject to, if any.
    pub fn timeout(&self) -> Option<Timeout> {
        match self {
            State::Handshake { .. } | State::Requested | State::HostConnecting { .. } => {
                Some(Timeout::Connect)
            }
            State::Closing { .. } => Some(Timeout::Close),
            State::Established | State::GuestSendDone { .. } | State::HostSendDone => None,
        }
    }

    /// Whether the guest knows of the connection (packets between the two
    /// are valid).
    pub fn guest_side_open(&self) -> bool {
        !matches!(
            self,
            State::Handshake { .. } | State::Closing { guest_gone: true }
        )
    }
}

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The guest (REQUEST to CID 2).
    Guest,
    /// A host program on `--uds-path`: it expects `OK <port>\n` once the
    /// guest has accepted.
    HostProgram,
    /// A host `AF_VSOCK` peer on a forwarding listener.
    Forwarded,
}

/// The credit counters of both sides (5.10.6.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credit {
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
}

impl Credit {
    /// Bytes the device may still send to the guest.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the guest should be told of freed buffer space: after a quarter
    /// of the buffer has drained since the last update.
    pub fn update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= self.buf_alloc / 4
    }

    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt = self
            .fwd_cnt
            .wrapping_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// Host end.
    pub sock: HostSocket,
    /// Life-cycle state.
    pub state: State,
    /// Who opened it.
    pub origin: Origin,
    /// Port on the host side (CID 2).
    pub host_port: u32,
    /// Port on the guest side.
    pub guest_port: u32,
    /// Credit of both sides.
    pub credit: Credit,
    /// The daemon's own bytes for the host program (`OK <port>\n`), written
    /// before guest data and not counted as guest data forwarded.
    reply: VecDeque<u8>,
    /// Guest-to-host bytes not yet written to the host socket (stream).
    tx_buf: VecDeque<u8>,
    /// Complete guest messages not yet sent to the host socket (seqpacket).
    tx_msgs: VecDeque<Vec<u8>>,
    /// The guest message being assembled until its EOM (seqpacket).
    tx_partial: Vec<u8>,
    /// The host message being delivered to the guest and how much of it went
    /// (seqpacket; allocated per message, freed once delivered).
    pub rx_msg: Option<(Vec<u8>, usize)>,
    /// Control packets waiting for an rx buffer: (op, flags).
    pub control: VecDeque<(Op, u32)>,
    /// The host socket may have data (set by epoll, cleared on `WouldBlock`).
    pub readable: bool,
    /// Events registered in epoll (`None`: not registered).
    pub interest: Option<u32>,
    /// When the current timed state ends, and which timeout it is.
    pub deadline: Option<(Timeout, Instant)>,
    /// When to try the host connect again (`HostConnecting` with a retry).
    pub retry_at: Option<Instant>,
}

impl Conn {
    /// A connection in `state` over `sock`.
    pub fn new(
        sock: HostSocket,
        state: State,
        origin: Origin,
        host_port: u32,
        guest_port: u32,
        buf_alloc: u32,
    ) -> Self {
        Self {
            sock,
            state,
            origin,
            host_port,
            guest_port,
            credit: Credit {
                buf_alloc,
                ..Credit::default()
            },
            reply: VecDeque::new(),
            tx_buf: VecDeque::new(),
            tx_msgs: VecDeque::new(),
            tx_partial: Vec::new(),
            rx_msg: None,
            control: VecDeque::new(),
            readable: false,
            interest: None,
            deadline: None,
            retry_at: None,
        }
    }

    /// Take the guest's credit fields from a packet.
    pub fn update_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.credit.peer_buf_alloc = buf_alloc;
        self.credit.peer_fwd_cnt = fwd_cnt;
    }

    /// The socket type, as on the wire.
    pub fn wire_type(&self) -> u16 {
        if self.sock.seqpacket {
            crate::virtio::TYPE_SEQPACKET
        } else {
            crate::virtio::TYPE_STREAM
        }
    }

    // ---- transitions (5.10.6.5) ----------------------------------------------

    /// The guest accepted a connection the device asked for. `false`: not
    /// expected now (the caller resets the connection).
    pub fn on_response(&mut self) -> bool {
        if self.state != State::Requested {
            return false;
        }
        self.state = State::Established;
        if self.origin == Origin::HostProgram {
            self.reply
                .extend(format!("OK {}\n", self.host_port).bytes());
        }
        self.readable = true;
        true
    }

    /// The connection to the host program is made: tell the guest.
    pub fn on_host_connected(&mut self) {
        self.state = State::Established;
        self.retry_at = None;
        self.push_control(Op::Response, 0);
        self.readable = true;
    }

    /// A guest SHUTDOWN with `flags`. `false`: not valid now.
    pub fn on_guest_shutdown(&mut self, flags: u32) -> bool {
        let send = flags & SHUTDOWN_SEND != 0;
        let rcv = flags & SHUTDOWN_RCV != 0;
        self.state = match (&self.state, send, rcv) {
            (State::Established, true, true)
            | (State::GuestSendDone { .. }, _, true)
            | (State::HostSendDone, true, _) => State::Closing { guest_gone: false },
            (State::Established, true, false) => State::GuestSendDone { host_told: false },
            (State::Established, false, true) => {
                // Nobody reads what the host program writes from now on: let
                // its writes fail rather than block.
                let _ = self.sock.shutdown_read();
                self.rx_msg = None;
                State::HostSendDone
            }
            (
                State::Established
                | State::GuestSendDone { .. }
                | State::HostSendDone
                | State::Closing { .. },
                _,
                _,
            ) => return true,
            (State::Handshake { .. } | State::Requested | State::HostConnecting { .. }, _, _) => {
                return false
            }
        };
        true
    }

    /// The host socket reached end of stream: the guest is told (SHUTDOWN
    /// with SEND) unless the connection is closing anyway.
    pub fn on_host_eof(&mut self) {
        self.readable = false;
        self.rx_msg = None;
        self.state = match self.state {
            State::Established => {
                self.push_control(Op::Shutdown, SHUTDOWN_SEND);
                State::HostSendDone
            }
            State::GuestSendDone { .. } => State::Closing { guest_gone: false },
            ref other => other.clone(),
        };
    }

    /// A guest RST. Returns whether the connection is over; a closing one
    /// goes on writing the guest's data to the host, forgotten by the guest.
    pub fn on_guest_rst(&mut self) -> bool {
        match self.state {
            State::Closing { .. } if self.has_pending_tx() => {
                self.state = State::Closing { guest_gone: true };
                false
            }
            _ => true,
        }
    }

    /// Whether the guest may send data now.
    pub fn accepts_guest_data(&self) -> bool {
        matches!(self.state, State::Established | State::HostSendDone)
    }

    /// Whether host data should go to the guest now (the host socket is
    /// read, within the guest's credit).
    pub fn wants_host_data(&self) -> bool {
        matches!(self.state, State::Established | State::GuestSendDone { .. })
            && self.credit.peer_credit() > 0
    }

    /// Whether there is host data to deliver: a message under way, or the
    /// socket may have some.
    pub fn has_host_data(&self) -> bool {
        self.readable || self.rx_msg.is_some()
    }

    /// Whether the connection is closing and everything is written: it can
    /// be closed.
    pub fn close_done(&self) -> bool {
        matches!(self.state, State::Closing { .. }) && !self.has_pending_tx()
    }

    // ---- guest to host -------------------------------------------------------

    /// Whether `len` more guest bytes would exceed the credit given.
    pub fn would_overflow(&self, len: usize) -> bool {
        self.buffered() + len > self.credit.buf_alloc as usize
    }

    /// Guest bytes held for the host socket.
    pub fn buffered(&self) -> usize {
        self.tx_buf.len() + self.tx_msgs.iter().map(Vec::len).sum::<usize>() + self.tx_partial.len()
    }

    /// Whether bytes wait for the host socket to accept them.
    pub fn has_pending_tx(&self) -> bool {
        !self.reply.is_empty() || !self.tx_buf.is_empty() || !self.tx_msgs.is_empty()
    }

    /// Guest stream data: written to the host socket at once if nothing is
    /// queued before it, the rest queued (bounded by the credit).
    pub fn guest_stream_data(&mut self, data: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        if !self.has_pending_tx() {
            sent = match self.sock.send(data) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            self.credit.forwarded(sent);
        }
        self.tx_buf.extend(&data[sent..]);
        Ok(())
    }

    /// A fragment of a guest seqpacket message; `flags` carry its EOM.
    pub fn guest_message_part(&mut self, data: &[u8], flags: u32) {
        self.tx_partial.extend_from_slice(data);
        if flags & SEQ_EOM != 0 {
            self.tx_msgs.push_back(std::mem::take(&mut self.tx_partial));
        }
    }

    /// Write queued bytes to the host socket until it would block. Returns
    /// the guest bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        while !self.reply.is_empty() {
            let (front, _) = self.reply.as_slices();
            match self.sock.send(front) {
                Ok(n) => {
                    self.reply.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        let mut total = 0;
        while let Some(msg) = self.tx_msgs.front() {
            match self.sock.send(msg) {
                Ok(_) => {
                    let n = msg.len();
                    self.tx_msgs.pop_front();
                    total += n;
                    self.credit.forwarded(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) => return Err(e),
            }
        }
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.sock.send(front) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    total += n;
                    self.credit.forwarded(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// After a flush: a guest that sends no more, with all its data written,
    /// has the host socket shut down for writing (the host program sees end
    /// of stream).
    pub fn tell_host_guest_done(&mut self) {
        if self.state == (State::GuestSendDone { host_told: false }) && !self.has_pending_tx() {
            let _ = self.sock.shutdown_write();
            self.state = State::GuestSendDone { host_told: true };
        }
    }

    // ---- host to guest -------------------------------------------------------

    /// The header of a packet to the guest, counting `len` payload bytes as
    /// sent and the current `fwd_cnt` as told.
    pub fn header_to_guest(
        &mut self,
        guest_cid: u64,
        op: Op,
        flags: u32,
        len: u32,
    ) -> PacketHeader {
        self.credit.rx_cnt = self.credit.rx_cnt.wrapping_add(len);
        self.credit.fwd_cnt_sent = self.credit.fwd_cnt;
        crate::request::header(
            guest_cid,
            self.wire_type(),
            self.host_port,
            self.guest_port,
            op,
            flags,
            len,
            self.credit.buf_alloc,
            self.credit.fwd_cnt,
        )
    }

    /// Queue a control packet for the guest (a credit update only once).
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

    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn conn(buf_alloc: u32) -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let c = Conn::new(a.into(), State::Established, Origin::Guest, 1, 2, buf_alloc);
        (c, b)
    }

    #[test]
    fn peer_credit_is_buffer_minus_bytes_in_flight() {
        let (mut c, _peer) = conn(1024);
        c.update_peer(1000, 0);
        c.credit.rx_cnt = 600;
        assert_eq!(c.credit.peer_credit(), 400);
        c.update_peer(1000, 600);
        assert_eq!(c.credit.peer_credit(), 1000);
    }

    #[test]
    fn peer_credit_survives_counter_wraparound() {
        let (mut c, _peer) = conn(1024);
        c.update_peer(4096, u32::MAX - 100);
        c.credit.rx_cnt = 200; // 301 bytes sent since the guest's count
        assert_eq!(c.credit.peer_credit(), 4096 - 301);
    }

    #[test]
    fn guest_overrunning_its_credit_is_detected() {
        let (mut c, _peer) = conn(100);
        c.tx_buf.extend([0u8; 60]);
        assert!(!c.would_overflow(40));
        assert!(c.would_overflow(41));
    }

    #[test]
    fn guest_data_beyond_a_slow_reader_is_queued_and_counted_as_it_goes() {
        let (mut c, peer) = conn(1 << 22);
        c.guest_stream_data(&vec![7u8; 1 << 21]).unwrap();
        let written = c.credit.fwd_cnt as usize;
        assert!(
            written > 0 && written < 1 << 21,
            "the socket buffer fills up: {written}"
        );
        assert_eq!(c.buffered(), (1 << 21) - written);
        drop(peer);
    }

    #[test]
    fn handshake_reply_is_not_counted_as_forwarded_guest_data() {
        let (mut c, mut peer) = conn(1024);
        c.state = State::Requested;
        c.origin = Origin::HostProgram;
        c.host_port = 7;
        assert!(c.on_response());

        c.guest_stream_data(b"data").unwrap();
        c.flush().unwrap();

        assert_eq!(c.credit.fwd_cnt, 4);
        let mut buf = [0u8; 9];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"OK 7\ndata");
    }

    #[test]
    fn credit_update_is_due_after_a_quarter_of_the_buffer() {
        let (mut c, _peer) = conn(1000);
        c.credit.fwd_cnt = 249;
        assert!(!c.credit.update_due());
        c.credit.fwd_cnt = 250;
        assert!(c.credit.update_due());
    }

    #[test]
    fn no_host_data_is_wanted_without_credit_or_after_the_guest_stops_receiving() {
        let (mut c, _peer) = conn(1000);
        c.update_peer(0, 0);
        assert!(!c.wants_host_data());
        c.update_peer(10, 0);
        assert!(c.wants_host_data());
        assert!(c.on_guest_shutdown(SHUTDOWN_RCV));
        assert_eq!(c.state, State::HostSendDone);
        assert!(!c.wants_host_data());
    }

    #[test]
    fn credit_updates_are_not_queued_twice() {
        let (mut c, _peer) = conn(1000);
        c.push_control(Op::CreditUpdate, 0);
        c.push_control(Op::CreditUpdate, 0);
        assert_eq!(c.control.len(), 1);
    }

    #[test]
    fn shutdown_both_ways_closes_and_closing_waits_for_the_data() {
        let (mut c, _peer) = conn(1 << 22);
        c.guest_stream_data(&vec![1u8; 1 << 21]).unwrap();

        assert!(c.on_guest_shutdown(SHUTDOWN_SEND | SHUTDOWN_RCV));

        assert_eq!(c.state, State::Closing { guest_gone: false });
        assert!(!c.close_done(), "data still waits for the host reader");
        assert!(!c.on_guest_rst(), "a guest RST does not cut it short");
        assert_eq!(c.state, State::Closing { guest_gone: true });
    }

    #[test]
    fn half_closes_from_each_side_make_a_close() {
        let (mut a, _pa) = conn(1000);
        assert!(a.on_guest_shutdown(SHUTDOWN_SEND));
        assert_eq!(a.state, State::GuestSendDone { host_told: false });
        a.on_host_eof();
        assert_eq!(a.state, State::Closing { guest_gone: false });
        assert!(a.close_done());

        let (mut b, _pb) = conn(1000);
        b.on_host_eof();
        assert_eq!(b.state, State::HostSendDone);
        assert_eq!(b.control.pop_front(), Some((Op::Shutdown, SHUTDOWN_SEND)));
        assert!(b.accepts_guest_data(), "the guest may still send");
        assert!(b.on_guest_shutdown(SHUTDOWN_SEND));
        assert_eq!(b.state, State::Closing { guest_gone: false });
    }

    #[test]
    fn host_socket_is_shut_for_writing_once_the_guest_data_is_out() {
        let (mut c, mut peer) = conn(1000);
        c.guest_stream_data(b"last words").unwrap();
        assert!(c.on_guest_shutdown(SHUTDOWN_SEND));

        c.tell_host_guest_done();

        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"last words");
        assert_eq!(c.state, State::GuestSendDone { host_told: true });
    }

    #[test]
    fn packets_before_the_connection_is_set_up_are_refused() {
        let (mut c, _peer) = conn(1000);
        c.state = State::Requested;
        assert!(!c.on_guest_shutdown(SHUTDOWN_SEND));
        assert!(!c.accepts_guest_data());
        c.state = State::HostConnecting { retry: None };
        assert!(!c.on_response());
    }

    #[test]
    fn seqpacket_fragments_make_one_message_at_eom() {
        let (mut c, _peer) = conn(1000);
        c.guest_message_part(b"ab", 0);
        assert!(!c.has_pending_tx());
        c.guest_message_part(b"c", SEQ_EOM);
        assert!(c.has_pending_tx());
        assert_eq!(c.buffered(), 3);
    }
}
