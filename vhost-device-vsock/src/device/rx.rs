// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Filling the driver's `rx` buffers (virtio 1.3, 5.10.6.4).
//!
//! Each buffer takes one packet, in this order:
//!
//! 1. control packets: connection-less RSTs, then each listed connection's
//!    own (REQUEST, RESPONSE, SHUTDOWN, CREDIT_UPDATE);
//! 2. a sibling VM's packet (cut to the buffer when it is larger);
//! 3. host data of a listed connection, within the guest's credit: the
//!    stream path reads what the buffer holds; the seqpacket path delivers
//!    one host message in as many packets as needed, the last flagged
//!    `EOM | EOR`.
//!
//! A buffer that holds a header and nothing more can carry control packets
//! only: it is held ([`Chain::hold`]) until one comes, and later buffers are
//! served meanwhile. With nothing to send, the buffers stay on the ring.
//! Writing into guest memory can only fail through the guest's fault: that
//! buffer gets used length 0, and a connection whose data was lost with it
//! is reset.

use std::io;

use vhost_device_common::error::{GuestErrorLog, HostError};
use vhost_device_common::queue::{Chain, Completion, QueueContext, Writer};

use super::{Muxer, HDR, MAX_SEQPACKET_MESSAGE};
use crate::request::{self, MAX_PAYLOAD};
use crate::virtio::{Op, SEQ_EOM, SEQ_EOR};

/// What one attempt to fill a buffer gave.
enum Fill {
    /// A packet of this many bytes was written.
    Used(u32),
    /// The guest's buffer could not take the packet (logged): it is
    /// returned with used length 0.
    Broken,
    /// Nothing to send of this kind.
    Nothing,
}

impl Fill {
    /// The completion of the buffer, unless there was nothing to send.
    fn completion(&self) -> Option<Completion> {
        match self {
            Fill::Used(n) => Some(Completion::Used(*n)),
            Fill::Broken => Some(Completion::Used(0)),
            Fill::Nothing => None,
        }
    }
}

impl Muxer {
    /// Fill one rx buffer.
    pub(super) fn fill_rx(
        &mut self,
        chain: &mut Chain<'_>,
        log: &GuestErrorLog,
    ) -> Result<Completion, HostError> {
        let room = chain.writer.available_bytes();
        if room < HDR {
            log.warn(
                "rx buffer too small",
                &io::Error::other(format!("{room} bytes")),
            );
            return Ok(Completion::Used(0));
        }
        loop {
            if let Some(done) = self.write_control(&mut chain.writer, log).completion() {
                return Ok(done);
            }
            if room == HDR {
                self.header_only_rx.push_back(chain.hold());
                return Ok(Completion::Held);
            }
            if let Some(done) = self
                .write_sibling(&mut chain.writer, room, log)
                .completion()
            {
                return Ok(done);
            }
            if let Some(done) = self
                .write_host_data(&mut chain.writer, room, log)
                .completion()
            {
                return Ok(done);
            }
            // Reading the host sockets may have ended connections: their
            // control packets (SHUTDOWN, RST) take this buffer.
            if self.rst.is_empty() && !self.table.has_control() {
                return Ok(Completion::Stop);
            }
        }
    }

    /// Put waiting control packets into held header-only buffers.
    pub(super) fn complete_header_only_rx(
        &mut self,
        ctx: &QueueContext<'_>,
    ) -> Result<(), HostError> {
        while !self.rst.is_empty() || self.table.has_control() {
            let Some(held) = self.header_only_rx.pop_front() else {
                return Ok(());
            };
            let back = ctx.try_complete(held, |_, writer| {
                Ok(match self.write_control(writer, ctx.log) {
                    Fill::Used(n) => Some(n),
                    Fill::Broken => Some(0),
                    Fill::Nothing => None,
                })
            })?;
            if let Some(held) = back {
                // Nothing after all, or the queue is stopped: later.
                self.header_only_rx.push_front(held);
                return Ok(());
            }
        }
        Ok(())
    }

    /// A connection-less RST, or the next listed connection's control packet.
    fn write_control(&mut self, writer: &mut Writer<'_>, log: &GuestErrorLog) -> Fill {
        if let Some(h) = self.rst.pop_front() {
            return written(request::write(writer, h, &[]), log);
        }
        let guest_cid = self.cfg.guest_cid;
        while let Some(slot) = self.table.pop_control() {
            let Some(c) = self.table.get_mut(slot) else {
                continue;
            };
            let Some((op, flags)) = c.control.pop_front() else {
                continue;
            };
            let h = c.header_to_guest(guest_cid, op, flags, 0);
            let more = !c.control.is_empty();
            let fill = written(request::write(writer, h, &[]), log);
            if more {
                self.table.mark_control(slot);
            }
            return fill;
        }
        Fill::Nothing
    }

    /// (A piece of) a sibling's packet.
    fn write_sibling(&mut self, writer: &mut Writer<'_>, room: usize, log: &GuestErrorLog) -> Fill {
        if self.sibling.is_none() {
            self.sibling = self.mailbox.take().map(|(h, p)| (h, p, 0));
        }
        let Some((orig, payload, off)) = self.sibling.take() else {
            return Fill::Nothing;
        };
        let mut h = orig;
        let left = payload.len() - off;
        let n = left.min(room - HDR);
        let last = n == left;
        h.len = u32::try_from(n).unwrap_or(0).into();
        if !last {
            // Only the last piece of a message keeps EOM/EOR.
            h.flags = (h.flags.to_native() & !(SEQ_EOM | SEQ_EOR)).into();
        }
        let fill = written(request::write(writer, h, &payload[off..off + n]), log);
        if !last {
            self.sibling = Some((orig, payload, off + n));
        }
        fill
    }

    /// Host data of the next listed connection that has some.
    fn write_host_data(
        &mut self,
        writer: &mut Writer<'_>,
        room: usize,
        log: &GuestErrorLog,
    ) -> Fill {
        while let Some(slot) = self.table.pop_ready() {
            let Some(c) = self.table.get(slot) else {
                continue;
            };
            if !(c.has_host_data() && c.wants_host_data()) {
                continue;
            }
            let max = (c.credit.peer_credit().min(MAX_PAYLOAD) as usize).min(room - HDR);
            let fill = if c.sock.seqpacket {
                self.write_message_part(slot, writer, max, log)
            } else {
                self.write_stream_data(slot, writer, max, log)
            };
            if !matches!(fill, Fill::Nothing) {
                return fill;
            }
        }
        Fill::Nothing
    }

    /// Stream: read at most `max` bytes from the host socket into the buffer.
    fn write_stream_data(
        &mut self,
        slot: usize,
        writer: &mut Writer<'_>,
        max: usize,
        log: &GuestErrorLog,
    ) -> Fill {
        let guest_cid = self.cfg.guest_cid;
        if self.scratch.len() < max {
            self.scratch.resize(MAX_PAYLOAD as usize, 0);
        }
        let Some(c) = self.table.get_mut(slot) else {
            return Fill::Nothing;
        };
        match c.sock.recv(&mut self.scratch[..max]) {
            Ok(0) => c.on_host_eof(),
            Ok(n) => {
                let len = u32::try_from(n).unwrap_or(0);
                let h = c.header_to_guest(guest_cid, Op::Rw, 0, len);
                let fill = written(request::write(writer, h, &self.scratch[..n]), log);
                if let Fill::Broken = fill {
                    // Those bytes are lost: the stream is broken.
                    self.reset(slot);
                    return fill;
                }
                self.table.mark_ready(slot);
                return fill;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("host socket of port {} failed: {e}", c.host_port);
                self.reset(slot);
                return Fill::Nothing;
            }
        }
        self.settle(slot);
        Fill::Nothing
    }

    /// Seqpacket: the next piece of the host message under way, receiving
    /// the next message first if none is.
    fn write_message_part(
        &mut self,
        slot: usize,
        writer: &mut Writer<'_>,
        max: usize,
        log: &GuestErrorLog,
    ) -> Fill {
        let guest_cid = self.cfg.guest_cid;
        let Some(c) = self.table.get_mut(slot) else {
            return Fill::Nothing;
        };
        if c.rx_msg.is_none() {
            match c.sock.recv_message(MAX_SEQPACKET_MESSAGE) {
                Ok(None) => {
                    c.on_host_eof();
                    self.settle(slot);
                    return Fill::Nothing;
                }
                Ok(Some((msg, full))) => {
                    if full > MAX_SEQPACKET_MESSAGE {
                        self.host_log.warn(
                            "host message truncated",
                            &io::Error::other(format!(
                                "{full} bytes, limit {MAX_SEQPACKET_MESSAGE}"
                            )),
                        );
                    }
                    c.rx_msg = Some((msg, 0));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    self.settle(slot);
                    return Fill::Nothing;
                }
                Err(e) => {
                    log::debug!("host socket of port {} failed: {e}", c.host_port);
                    self.reset(slot);
                    return Fill::Nothing;
                }
            }
        }
        let Some((msg, off)) = c.rx_msg.take() else {
            return Fill::Nothing;
        };
        let left = msg.len() - off;
        let n = max.min(left);
        let flags = if n == left { SEQ_EOM | SEQ_EOR } else { 0 };
        let len = u32::try_from(n).unwrap_or(0);
        let h = c.header_to_guest(guest_cid, Op::Rw, flags, len);
        let fill = written(request::write(writer, h, &msg[off..off + n]), log);
        if let Fill::Broken = fill {
            // The message is lost: the connection is broken.
            self.reset(slot);
            return fill;
        }
        if n < left {
            c.rx_msg = Some((msg, off + n));
        }
        self.table.mark_ready(slot);
        fill
    }
}

/// The used length of a packet written into a guest buffer, or nothing
/// when the guest's buffer could not take it (logged).
fn written(result: io::Result<u32>, log: &GuestErrorLog) -> Fill {
    match result {
        Ok(n) => Fill::Used(n),
        Err(e) => {
            log.warn("cannot write an rx buffer", &e);
            Fill::Broken
        }
    }
}
