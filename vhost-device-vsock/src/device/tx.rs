// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest packets from the `tx` queue (virtio 1.3, 5.10.6.4, 5.10.6.5).
//!
//! Each packet is checked once ([`request::parse`]) and dispatched once: to
//! a sibling VM, to a new connection (REQUEST), or to its connection, whose
//! state machine ([`Conn`]) takes it; then
//! `Muxer::settle` does what follows (data to the host
//! socket, the end of a close, credit updates). Whatever the guest sends, the
//! answer is at most an RST: nothing here fails the device.

use std::io;
use std::time::{Duration, Instant};

use vhost_device_common::error::GuestErrorLog;
use vhost_device_common::queue::Reader;

use super::conn::{Conn, Origin, State};
use super::{Muxer, MAX_SEQPACKET_MESSAGE};
use crate::host::{self, Progress};
use crate::request::{self, Packet, MAX_PAYLOAD};
use crate::virtio::{Op, PacketHeader, HOST_CID};

/// First delay before connecting again to a host listener whose backlog is
/// full; it doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(10);
/// Longest delay between connect attempts.
pub const MAX_RETRY: Duration = Duration::from_millis(500);

impl Muxer {
    /// A packet on the tx queue.
    pub(super) fn on_tx(&mut self, reader: &mut Reader<'_>, log: &GuestErrorLog) {
        let pkt = match request::parse(reader, self.cfg.guest_cid, self.seqpacket) {
            Ok(p) => p,
            Err((e, hdr)) => {
                log.warn("bad packet", &e);
                if let Some(h) = hdr {
                    self.refuse(&h);
                }
                return;
            }
        };
        if pkt.hdr.dst_cid.to_native() != HOST_CID {
            self.forward_to_sibling(&pkt, reader, log);
            return;
        }
        let Some(slot) = self.table.find((pkt.dst_port(), pkt.src_port())) else {
            match pkt.op {
                Op::Request => self.guest_connect(&pkt),
                // An RST is never answered.
                Op::Rst => {}
                _ => self.answer_rst(&pkt.hdr),
            }
            return;
        };
        match pkt.op {
            Op::Rst => {
                let over = self.table.get_mut(slot).is_some_and(Conn::on_guest_rst);
                if over {
                    self.remove(slot);
                } else {
                    // Closing, with data still to write: the guest's side is
                    // gone, its ports free again, nothing more to tell it.
                    self.table.unbind(slot);
                    if let Some(c) = self.table.get_mut(slot) {
                        c.control.clear();
                    }
                    self.settle(slot);
                }
            }
            // A second REQUEST for a live connection.
            Op::Request => self.answer_rst(&pkt.hdr),
            _ => self.deliver_to_connection(slot, &pkt, reader, log),
        }
    }

    /// RST for a packet of no connection (never for an RST).
    fn answer_rst(&mut self, hdr: &PacketHeader) {
        if let Some(r) = request::rst_for(hdr, self.cfg.guest_cid) {
            self.queue_rst(r);
        }
    }

    /// A packet that failed the checks: it ends its connection if it has a
    /// live one (host socket and all), and is answered with RST.
    fn refuse(&mut self, h: &PacketHeader) {
        let own = h.src_cid.to_native() == self.cfg.guest_cid && h.dst_cid.to_native() == HOST_CID;
        let live = own
            .then(|| {
                self.table
                    .find((h.dst_port.to_native(), h.src_port.to_native()))
            })
            .flatten();
        match live {
            Some(slot) if h.op.to_native() == u16::from(Op::Rst) => self.remove(slot),
            Some(slot) => self.reset(slot),
            None => self.answer_rst(h),
        }
    }

    /// A packet for a live connection.
    fn deliver_to_connection(
        &mut self,
        slot: usize,
        pkt: &Packet,
        reader: &mut Reader<'_>,
        log: &GuestErrorLog,
    ) {
        let Some(c) = self.table.get_mut(slot) else {
            return;
        };
        if c.wire_type() != pkt.hdr.type_.to_native() {
            self.reset(slot);
            return;
        }
        c.update_peer(pkt.hdr.buf_alloc.to_native(), pkt.hdr.fwd_cnt.to_native());
        let valid = match pkt.op {
            Op::Response => c.on_response(),
            Op::Rw => {
                if !c.accepts_guest_data() {
                    false
                } else if c.would_overflow(pkt.len() as usize) {
                    log.warn(
                        "guest exceeded its credit",
                        &io::Error::other(format!(
                            "{} bytes buffered, {} more",
                            c.buffered(),
                            pkt.len()
                        )),
                    );
                    false
                } else {
                    let len = pkt.len() as usize;
                    if self.scratch.len() < len {
                        self.scratch.resize(MAX_PAYLOAD as usize, 0);
                    }
                    let data = &mut self.scratch[..len];
                    match io::Read::read_exact(reader, data) {
                        Err(e) => {
                            log.warn("cannot read a packet's payload", &e);
                            false
                        }
                        Ok(()) if c.sock.seqpacket => {
                            c.guest_message_part(data, pkt.hdr.flags.to_native());
                            true
                        }
                        Ok(()) => match c.guest_stream_data(data) {
                            Ok(()) => true,
                            Err(e) => {
                                log::debug!("host socket of port {} failed: {e}", c.host_port);
                                false
                            }
                        },
                    }
                }
            }
            Op::CreditUpdate => true,
            Op::CreditRequest => {
                c.push_control(Op::CreditUpdate, 0);
                true
            }
            Op::Shutdown => c.on_guest_shutdown(pkt.hdr.flags.to_native()),
            Op::Request | Op::Rst => true,
        };
        if valid {
            self.settle(slot);
        } else {
            self.reset(slot);
        }
    }

    /// A guest REQUEST to the host: start connecting to the host program
    /// (never waiting for it); the guest hears RESPONSE once connected.
    fn guest_connect(&mut self, pkt: &Packet) {
        if self.table.is_full() {
            self.host_log.warn(
                "connection limit reached; refusing a guest connection",
                &io::Error::other(format!("{} connections", self.table.limit())),
            );
            self.answer_rst(&pkt.hdr);
            return;
        }
        let port = pkt.dst_port();
        let started = match self.cfg.forward_cid {
            Some(cid) if !pkt.is_seqpacket() => host::connect_vsock(cid, port),
            _ => host::connect_unix(&host::port_path(&self.cfg.uds, port), pkt.is_seqpacket()),
        };
        let (sock, progress) = match started {
            Ok(s) => s,
            Err(e) => {
                log::debug!("guest connect to port {port}: {e}");
                self.answer_rst(&pkt.hdr);
                return;
            }
        };
        // A guest seqpacket message must go to the host socket whole: the
        // credit offered is no larger than the longest message the socket
        // takes (the driver never sends a message beyond it).
        let buf_alloc = if sock.seqpacket {
            match sock.fit_messages(MAX_SEQPACKET_MESSAGE) {
                Ok(fit) => self
                    .cfg
                    .buf_alloc
                    .min(u32::try_from(fit).unwrap_or(u32::MAX)),
                Err(e) => {
                    log::debug!("guest connect to port {port}: {e}");
                    self.answer_rst(&pkt.hdr);
                    return;
                }
            }
        } else {
            self.cfg.buf_alloc
        };
        let mut c = Conn::new(
            sock,
            State::HostConnecting { retry: None },
            Origin::Guest,
            port,
            pkt.src_port(),
            buf_alloc,
        );
        c.update_peer(pkt.hdr.buf_alloc.to_native(), pkt.hdr.fwd_cnt.to_native());
        match progress {
            Progress::Connected => c.on_host_connected(),
            Progress::InProgress => {}
            Progress::Backlog => {
                c.state = State::HostConnecting {
                    retry: Some(FIRST_RETRY),
                };
                c.retry_at = Some(Instant::now() + FIRST_RETRY);
            }
        }
        let Some(slot) = self.table.insert(c) else {
            self.answer_rst(&pkt.hdr);
            return;
        };
        self.table.bind(slot);
        self.settle(slot);
    }

    /// A packet for another VM: into its mailbox if they share a group,
    /// otherwise RST.
    fn forward_to_sibling(&mut self, pkt: &Packet, reader: &mut Reader<'_>, log: &GuestErrorLog) {
        let mut payload = Vec::new();
        if pkt.op == Op::Rw {
            if let Err(e) = request::read_payload(reader, pkt.len(), &mut payload) {
                log.warn("cannot read a packet's payload", &e);
                return;
            }
        }
        let dst = pkt.hdr.dst_cid.to_native();
        let delivered = match self.registry.route(&self.mailbox, dst) {
            Some(to) => to.post(pkt.hdr, payload),
            None => {
                log.warn(
                    "packet for an unreachable CID",
                    &io::Error::other(format!("CID {dst}")),
                );
                false
            }
        };
        if !delivered {
            if let Some(mut r) = request::rst_for(&pkt.hdr, self.cfg.guest_cid) {
                r.src_cid = pkt.hdr.dst_cid;
                self.queue_rst(r);
            }
        }
    }
}
