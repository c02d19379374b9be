// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The vsock device: the three queues, the host listener and every
//! connection's host socket, all served by one worker thread without blocking.
//!
//! - `tx` (driver to device): each packet is checked ([`request::parse`]) and
//!   applied to its connection ([`conn`]); data goes to the host socket, or
//!   into the connection's buffer (bounded by the credit given) when the host
//!   reader is slow.
//! - `rx` (device to driver): connection-less RSTs first, then each ready
//!   connection's control packets, then data read from its host socket within
//!   the guest's credit. When the guest has no rx buffers, connections wait in
//!   the ready list and the next rx kick resumes them.
//! - host sockets are in the worker's epoll, with `EPOLLIN` only while their
//!   data is wanted and `EPOLLOUT` only while guest data waits for them, so an
//!   idle or throttled connection costs nothing.
//! - `event`: `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` is sent at the start of
//!   every front-end connection, so a guest that outlived a daemon restart
//!   drops its stale connections — when the front end hands the event queue
//!   to the daemon at all (QEMU's `vhost-user-vsock` keeps it and sets up
//!   only `rx` and `tx`; a queue that is not set up is never touched).

pub mod conn;
pub mod siblings;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::{GuestErrorLog, HostError};
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::Writer;
use vhost_device_common::queue::{drain, drain_chains, Completion, HeldChain, QueueContext, Vring};
use vhost_device_common::vhost::vhost_user::VhostUserProtocolFeatures;
use vhost_device_common::vm_memory::ByteValued;
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use crate::args::Config as Args;
use crate::host::{self, UdsListener, MAX_HANDSHAKE};
use crate::request::{self, MAX_PAYLOAD};
use crate::virtio::{
    Config, Event, Op, PacketHeader, EVENT_QUEUE, EVENT_TRANSPORT_RESET, F_SEQPACKET, NUM_QUEUES,
    RX_QUEUE, SEQ_EOM, SEQ_EOR, SHUTDOWN_RCV, SHUTDOWN_SEND, TX_QUEUE,
};
use conn::{Conn, State};
use siblings::{Mailbox, Registry};

/// Most connections (established or not) per device; fewer when the
/// process may not open that many descriptors (see [`connection_limit`]).
pub const MAX_CONNECTIONS: usize = 4096;
/// Descriptors kept for the process itself (vhost-user sockets, logs, …).
const PROCESS_DESCRIPTORS: u64 = 32;
/// Descriptors kept for each VM besides its connections: its front end's
/// memory regions, queue eventfds and epoll, the listeners, timers.
const VM_DESCRIPTORS: u64 = 64;

/// How many connections each of `vms` VMs may have when the process may open
/// `nofile` descriptors: each connection holds one host socket, and what is
/// left after the process's and each VM's own descriptors is shared evenly,
/// up to [`MAX_CONNECTIONS`] (at least 1).
pub fn connection_limit(nofile: u64, vms: usize) -> usize {
    let vms = u64::try_from(vms.max(1)).unwrap_or(u64::MAX);
    let free = nofile
        .saturating_sub(PROCESS_DESCRIPTORS)
        .saturating_sub(VM_DESCRIPTORS.saturating_mul(vms));
    usize::try_from(free / vms)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
}
/// Most connection-less RSTs waiting for rx buffers.
pub const MAX_PENDING_RST: usize = 1024;
/// Queue size offered.
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Longest seqpacket message each way: a host message passed to the guest
/// whole (longer ones are truncated, and logged), and the most credit a
/// seqpacket connection gives the guest, so that each of its messages fits the
/// host socket's send buffer (also capped by `net.core.wmem_max`).
pub const MAX_SEQPACKET_MESSAGE: usize = 256 * 1024;
/// First port given to host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;
const TOKEN_LISTENER: u16 = 0;
const TOKEN_MAILBOX: u16 = 1;
/// Forwarding listeners take tokens from here, connections after them.
const FIRST_FORWARD_TOKEN: u16 = 2;
const HDR: usize = std::mem::size_of::<PacketHeader>();

struct Muxer {
    guest_cid: u64,
    uds: PathBuf,
    buf_alloc: u32,
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_key: HashMap<(u32, u32), usize>,
    /// Slots with something for the guest, each at most once: `in_ready`
    /// (indexed by slot, kept when a connection ends so that a reused slot is
    /// never listed twice) bounds the list by the number of slots.
    ready: VecDeque<usize>,
    in_ready: Vec<bool>,
    rst: VecDeque<PacketHeader>,
    events: Option<HostEvents>,
    next_port: u32,
    reset_pending: bool,
    /// Event buffers the driver posted, held until there is an event.
    event_buffers: VecDeque<HeldChain>,
    seqpacket: bool,
    scratch: Vec<u8>,
    mailbox: Arc<Mailbox>,
    registry: Arc<Registry>,
    /// A sibling's packet being delivered in rx-buffer-sized pieces: header,
    /// payload, bytes already delivered.
    sibling: Option<(PacketHeader, Vec<u8>, usize)>,
    /// Guest connections to the host go to host `AF_VSOCK` at this CID.
    forward_cid: Option<u32>,
    /// Host `AF_VSOCK` listeners forwarded into the guest: (listener, port).
    forward_listeners: Arc<Vec<(OwnedFd, u32)>>,
    /// The first connection token (after the forwarding listeners).
    conn_base: u16,
    /// Host programs connect here.
    listener: Arc<UdsListener>,
    /// Most connections at once.
    max_connections: usize,
    /// See [`Muxer::accept_next`].
    reserve: Option<std::fs::File>,
    /// Listener tokens out of the epoll until a connection ends.
    paused: Vec<u16>,
    /// Rate-limited warnings about host-side refusals.
    host_log: GuestErrorLog,
}

impl Muxer {
    /// Queue a connection-less RST for the guest. A guest that floods bad
    /// packets without posting rx buffers cannot grow the queue without bound:
    /// past [`MAX_PENDING_RST`] further RSTs are dropped (the guest's own
    /// timeouts cover them).
    fn queue_rst(&mut self, h: PacketHeader) {
        if self.rst.len() < MAX_PENDING_RST {
            self.rst.push_back(h);
        }
    }

    fn count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn insert(&mut self, conn: Conn) -> Option<usize> {
        if let Some(slot) = self.free.pop() {
            self.slots[slot] = Some(conn);
            return Some(slot);
        }
        if self.slots.len() >= self.max_connections {
            return None;
        }
        self.slots.push(Some(conn));
        Some(self.slots.len() - 1)
    }

    fn remove(&mut self, slot: usize) {
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if conn.interest.is_some() {
            if let Some(ev) = &self.events {
                let _ = ev.remove(0, conn.stream.as_fd());
            }
        }
        if self.by_key.get(&(conn.host_port, conn.guest_port)) == Some(&slot) {
            self.by_key.remove(&(conn.host_port, conn.guest_port));
        }
        self.free.push(slot);
        drop(conn);
        if !self.paused.is_empty() || self.reserve.is_none() {
            self.resume_listeners();
        }
    }

    /// End every connection without a word to the driver (it is going away),
    /// and send the next one a `TRANSPORT_RESET`.
    fn close_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.remove(slot);
        }
        self.ready.clear();
        self.in_ready.clear();
        self.rst.clear();
        self.sibling = None;
        self.mailbox.clear();
        self.reset_pending = true;
    }

    /// Tell the guest the connection is gone and forget it.
    fn reset(&mut self, slot: usize) {
        if let Some(c) = self.slots.get(slot).and_then(Option::as_ref) {
            if c.state != State::Handshake {
                let h = request::header(
                    self.guest_cid,
                    c.wire_type(),
                    c.host_port,
                    c.guest_port,
                    Op::Rst,
                    0,
                    0,
                    0,
                    0,
                );
                self.queue_rst(h);
            }
        }
        self.remove(slot);
    }

    fn mark_ready(&mut self, slot: usize) {
        if self.slots.get(slot).is_some_and(Option::is_some) {
            if self.in_ready.len() <= slot {
                self.in_ready.resize(slot + 1, false);
            }
            if !self.in_ready[slot] {
                self.in_ready[slot] = true;
                self.ready.push_back(slot);
            }
        }
    }

    /// The next slot of the ready list.
    fn pop_ready(&mut self) -> Option<usize> {
        let slot = self.ready.pop_front()?;
        if let Some(flag) = self.in_ready.get_mut(slot) {
            *flag = false;
        }
        Some(slot)
    }

    /// Register exactly the events the connection needs now.
    fn sync(&mut self, slot: usize) -> Result<(), HostError> {
        let (Some(events), Some(c)) = (
            &self.events,
            self.slots.get_mut(slot).and_then(Option::as_mut),
        ) else {
            return Ok(());
        };
        let mut want = EventSet::empty();
        if c.wants_host_data() && !c.readable {
            want |= EventSet::IN;
        }
        if c.has_pending_tx() || c.state == State::HostConnecting {
            want |= EventSet::OUT;
        }
        let tok = u16::try_from(slot + usize::from(self.conn_base))
            .map_err(|_| "connection slot out of range")?;
        match (c.interest, want.is_empty()) {
            (None, true) => {}
            (Some(_), true) => {
                events.remove(0, c.stream.as_fd())?;
                c.interest = None;
            }
            (None, false) => {
                events.add(0, c.stream.as_fd(), want, tok)?;
                c.interest = Some(want.bits());
            }
            (Some(bits), false) if bits != want.bits() => {
                events.modify(0, c.stream.as_fd(), want, tok)?;
                c.interest = Some(want.bits());
            }
            (Some(_), false) => {}
        }
        Ok(())
    }

    fn alloc_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let p = self.next_port;
            self.next_port = self.next_port.wrapping_add(1).max(FIRST_HOST_PORT);
            if !self.by_key.contains_key(&(p, guest_port)) {
                return p;
            }
        }
    }

    /// A packet on the tx queue.
    fn on_tx(
        &mut self,
        reader: &mut vhost_device_common::queue::Reader<'_>,
        log: &GuestErrorLog,
    ) -> Result<(), HostError> {
        let pkt = match request::parse(reader, self.guest_cid, self.seqpacket) {
            Ok(p) => p,
            Err((e, hdr)) => {
                log.warn("bad packet", &e);
                let Some(h) = hdr else {
                    return Ok(());
                };
                // A refused packet of a live connection ends it, host socket and all.
                let live = (h.src_cid.to_native() == self.guest_cid
                    && h.dst_cid.to_native() == crate::virtio::HOST_CID)
                    .then(|| {
                        self.by_key
                            .get(&(h.dst_port.to_native(), h.src_port.to_native()))
                            .copied()
                    })
                    .flatten();
                match live {
                    // An RST is never answered, even a malformed one.
                    Some(slot) if h.op.to_native() == u16::from(Op::Rst) => self.remove(slot),
                    Some(slot) => self.reset(slot),
                    None => {
                        if let Some(r) = request::rst_for(&h, self.guest_cid) {
                            self.queue_rst(r);
                        }
                    }
                }
                return Ok(());
            }
        };
        if pkt.hdr.dst_cid.to_native() != crate::virtio::HOST_CID {
            return self.forward(&pkt, reader, log);
        }
        let key = (pkt.dst_port(), pkt.src_port());
        let slot = self.by_key.get(&key).copied();
        let refuse = |m: &mut Self| {
            if let Some(r) = request::rst_for(&pkt.hdr, m.guest_cid) {
                m.queue_rst(r);
            }
        };
        let Some(slot) = slot else {
            match pkt.op {
                Op::Request => self.guest_connect(&pkt)?,
                Op::Rst => {}
                _ => refuse(self),
            }
            return Ok(());
        };
        if pkt.op == Op::Rst {
            self.remove(slot);
            return Ok(());
        }
        if pkt.op == Op::Request {
            refuse(self);
            return Ok(());
        }
        let Some(c) = self.slots[slot].as_mut() else {
            return Ok(());
        };
        if c.wire_type() != pkt.hdr.type_.to_native() {
            self.reset(slot);
            return Ok(());
        }
        c.update_peer(pkt.hdr.buf_alloc.to_native(), pkt.hdr.fwd_cnt.to_native());
        match pkt.op {
            Op::Response => {
                if c.state != State::Connecting {
                    self.reset(slot);
                    return Ok(());
                }
                c.state = State::Established;
                // Only a Unix-socket host program that sent `CONNECT <port>`
                // expects the `OK` line; a forwarded AF_VSOCK peer does not.
                if !c.handshake.is_empty() {
                    c.reply.extend(format!("OK {}\n", c.host_port).bytes());
                }
                c.readable = true;
                self.after_write(slot);
                self.mark_ready(slot);
            }
            Op::Rw => {
                let len = pkt.len() as usize;
                if c.state != State::Established || c.guest_shut_send {
                    self.reset(slot);
                    return Ok(());
                }
                if c.would_overflow(len) {
                    log.warn(
                        "guest exceeded its credit",
                        &io::Error::other(format!("{} bytes buffered, {len} more", c.tx_buf.len())),
                    );
                    self.reset(slot);
                    return Ok(());
                }
                if c.stream.seqpacket {
                    request::read_payload(reader, pkt.len(), &mut c.tx_partial)?;
                    if pkt.hdr.flags.to_native() & SEQ_EOM != 0 {
                        let msg = std::mem::take(&mut c.tx_partial);
                        c.tx_msgs.push_back(msg);
                    }
                } else {
                    self.scratch.clear();
                    request::read_payload(reader, pkt.len(), &mut self.scratch)?;
                    if let Some(c) = self.slots[slot].as_mut() {
                        c.tx_buf.extend(self.scratch.iter());
                    }
                }
                self.after_write(slot);
            }
            Op::CreditUpdate => {
                self.mark_ready(slot);
            }
            Op::CreditRequest => {
                c.push_control(Op::CreditUpdate, 0);
                self.mark_ready(slot);
            }
            Op::Shutdown => {
                let flags = pkt.hdr.flags.to_native();
                c.guest_shut_rcv |= flags & SHUTDOWN_RCV != 0;
                c.guest_shut_send |= flags & SHUTDOWN_SEND != 0;
                if c.guest_shut_rcv && c.guest_shut_send {
                    // Both directions closed: pass on what is buffered, then
                    // close with RST, which the driver waits for.
                    let _ = c.flush();
                    self.reset(slot);
                    return Ok(());
                }
                self.after_write(slot);
            }
            Op::Request | Op::Rst => {}
        }
        self.sync(slot)
    }

    /// A packet for another VM: into its mailbox if they share a group,
    /// otherwise RST.
    fn forward(
        &mut self,
        pkt: &request::Packet,
        reader: &mut vhost_device_common::queue::Reader<'_>,
        log: &GuestErrorLog,
    ) -> Result<(), HostError> {
        let mut payload = Vec::new();
        if pkt.op == Op::Rw {
            request::read_payload(reader, pkt.len(), &mut payload)?;
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
            if let Some(mut r) = request::rst_for(&pkt.hdr, self.guest_cid) {
                r.src_cid = pkt.hdr.dst_cid;
                self.queue_rst(r);
            }
        }
        Ok(())
    }

    /// Deliver (a piece of) a sibling's packet into an rx buffer of `room` bytes.
    fn fill_from_sibling(
        &mut self,
        writer: &mut Writer<'_>,
        room: usize,
    ) -> Result<Option<u32>, HostError> {
        if self.sibling.is_none() {
            self.sibling = self.mailbox.take().map(|(h, p)| (h, p, 0));
        }
        let Some((orig, payload, off)) = self.sibling.take() else {
            return Ok(None);
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
        let used = request::write(writer, h, &payload[off..off + n])?;
        if !last {
            self.sibling = Some((orig, payload, off + n));
        }
        Ok(Some(used))
    }

    /// After guest data was buffered (or the guest shut down sending): write
    /// to the host, half-close when done, and plan a credit update.
    fn after_write(&mut self, slot: usize) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        match c.flush() {
            Ok(_) => {}
            Err(e) => {
                log::debug!("host socket of port {} failed: {e}", c.host_port);
                self.reset(slot);
                return;
            }
        }
        if !c.has_pending_tx() && c.guest_shut_send {
            let _ = c.stream.shutdown_write();
        }
        if c.credit_update_due() {
            c.push_control(Op::CreditUpdate, 0);
            self.mark_ready(slot);
        }
    }

    fn guest_connect(&mut self, pkt: &request::Packet) -> Result<(), HostError> {
        let reply_rst = |m: &mut Self| {
            if let Some(r) = request::rst_for(&pkt.hdr, m.guest_cid) {
                m.queue_rst(r);
            }
        };
        if self.count() >= self.max_connections {
            reply_rst(self);
            return Ok(());
        }
        let connected = match self.forward_cid {
            Some(cid) if !pkt.is_seqpacket() => host::connect_vsock(cid, pkt.dst_port()),
            _ => host::connect_port(&self.uds, pkt.dst_port(), pkt.is_seqpacket())
                .map(|s| (s, false)),
        };
        match connected {
            Ok((stream, pending)) => {
                let state = if pending {
                    State::HostConnecting
                } else {
                    State::Established
                };
                // A guest seqpacket message must go to the host socket whole:
                // the credit offered is no larger than the longest message the
                // socket takes (the driver never sends a message beyond it).
                let buf_alloc = if stream.seqpacket {
                    match stream.fit_messages(MAX_SEQPACKET_MESSAGE) {
                        Ok(fit) => self.buf_alloc.min(u32::try_from(fit).unwrap_or(u32::MAX)),
                        Err(e) => {
                            log::debug!("guest connect to port {}: {e}", pkt.dst_port());
                            reply_rst(self);
                            return Ok(());
                        }
                    }
                } else {
                    self.buf_alloc
                };
                let mut c = Conn::new(stream, state, pkt.dst_port(), pkt.src_port(), buf_alloc);
                c.update_peer(pkt.hdr.buf_alloc.to_native(), pkt.hdr.fwd_cnt.to_native());
                if !pending {
                    c.push_control(Op::Response, 0);
                    c.readable = true;
                }
                let Some(slot) = self.insert(c) else {
                    reply_rst(self);
                    return Ok(());
                };
                self.by_key.insert((pkt.dst_port(), pkt.src_port()), slot);
                self.mark_ready(slot);
                self.sync(slot)?;
            }
            Err(e) => {
                log::debug!("guest connect to port {}: {e}", pkt.dst_port());
                reply_rst(self);
            }
        }
        Ok(())
    }

    /// A host connection for the guest arrived on a forwarding listener.
    fn accept_forwarded(&mut self, index: usize) -> Result<(), HostError> {
        let listeners = self.forward_listeners.clone();
        let Some((listener, port)) = listeners.get(index) else {
            return Ok(());
        };
        let token = u16::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(FIRST_FORWARD_TOKEN))
            .ok_or("forwarding listener out of range")?;
        while let Some(sock) = self.accept_next(listener.as_fd(), token) {
            if self.count() >= self.max_connections {
                self.host_log.warn(
                    "connection limit reached; refusing a forwarded connection",
                    &io::Error::other(format!("{} connections", self.max_connections)),
                );
                continue;
            }
            let host_port = self.alloc_port(*port);
            let mut c = Conn::new(sock, State::Connecting, host_port, *port, self.buf_alloc);
            c.push_control(Op::Request, 0);
            if let Some(slot) = self.insert(c) {
                self.by_key.insert((host_port, *port), slot);
                self.mark_ready(slot);
                self.sync(slot)?;
            }
        }
        Ok(())
    }

    /// The next connection waiting on `listener` (registered under
    /// `token`), if any; connections refused for want of descriptors are
    /// logged and skipped ([`host::accept_or_refuse`]). When even that is
    /// impossible the listener leaves the epoll until a connection ends, so
    /// a full descriptor table never makes the worker spin.
    fn accept_next(
        &mut self,
        listener: std::os::fd::BorrowedFd<'_>,
        token: u16,
    ) -> Option<host::HostSocket> {
        loop {
            match host::accept_or_refuse(listener, &mut self.reserve) {
                Ok(host::Accepted::Socket(sock)) => return Some(sock),
                Ok(host::Accepted::Nothing) => return None,
                Ok(host::Accepted::Refused(e)) => {
                    self.host_log
                        .warn("out of file descriptors; refused a host connection", &e);
                }
                Err(e) => {
                    self.host_log.warn("cannot accept a host connection", &e);
                    self.pause_listener(listener, token);
                    return None;
                }
            }
        }
    }

    /// Take a listener out of the epoll until a connection ends.
    fn pause_listener(&mut self, listener: std::os::fd::BorrowedFd<'_>, token: u16) {
        if let Some(events) = &self.events {
            if !self.paused.contains(&token) && events.remove(0, listener).is_ok() {
                self.paused.push(token);
            }
        }
    }

    /// Put paused listeners back into the epoll (a connection ended, so a
    /// descriptor is free), and renew the reserve descriptor.
    fn resume_listeners(&mut self) {
        if self.reserve.is_none() {
            self.reserve = host::reserve_descriptor().ok();
        }
        let Some(events) = &self.events else {
            return;
        };
        for token in std::mem::take(&mut self.paused) {
            let fd = if token == TOKEN_LISTENER {
                Some(self.listener.listener.as_fd())
            } else {
                self.forward_listeners
                    .get(usize::from(token - FIRST_FORWARD_TOKEN))
                    .map(|(l, _)| l.as_fd())
            };
            if let Some(fd) = fd {
                if let Err(e) = events.add(0, fd, EventSet::IN, token) {
                    log::warn!("cannot watch a host listener again: {e}");
                }
            }
        }
    }

    /// Read a host program's `CONNECT <port>\n`, one byte at a time so that
    /// nothing after the line is consumed.
    fn read_handshake(&mut self, slot: usize) -> Result<(), HostError> {
        let Some(c) = self.slots[slot].as_mut() else {
            return Ok(());
        };
        let mut byte = [0u8; 1];
        loop {
            match c.stream.recv(&mut byte) {
                Ok(0) => {
                    self.remove(slot);
                    return Ok(());
                }
                Ok(_) => {
                    c.handshake.push(byte[0]);
                    if byte[0] == b'\n' {
                        break;
                    }
                    if c.handshake.len() >= MAX_HANDSHAKE {
                        self.remove(slot);
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return self.sync(slot);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(slot);
                    return Ok(());
                }
            }
        }
        let Some(port) = host::parse_connect(&c.handshake) else {
            self.remove(slot);
            return Ok(());
        };
        let host_port = self.alloc_port(port);
        let Some(c) = self.slots[slot].as_mut() else {
            return Ok(());
        };
        c.state = State::Connecting;
        c.guest_port = port;
        c.host_port = host_port;
        c.readable = false;
        c.push_control(Op::Request, 0);
        self.by_key.insert((host_port, port), slot);
        self.mark_ready(slot);
        self.sync(slot)
    }

    /// Fill one rx buffer, or ask to stop when there is nothing to send.
    fn fill_rx(
        &mut self,
        writer: &mut Writer<'_>,
        log: &GuestErrorLog,
    ) -> Result<Completion, HostError> {
        let room = writer.available_bytes();
        if room < HDR {
            log.warn(
                "rx buffer too small",
                &io::Error::other(format!("{room} bytes")),
            );
            return Ok(Completion::Used(0));
        }
        if let Some(h) = self.rst.pop_front() {
            return Ok(Completion::Used(request::write(writer, h, &[])?));
        }
        if let Some(used) = self.fill_from_sibling(writer, room)? {
            return Ok(Completion::Used(used));
        }
        while let Some(slot) = self.pop_ready() {
            let guest_cid = self.guest_cid;
            let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if let Some((op, flags)) = c.control.pop_front() {
                let h = c.header_to_guest(guest_cid, op, flags, 0);
                let n = request::write(writer, h, &[])?;
                self.mark_ready(slot);
                return Ok(Completion::Used(n));
            }
            if c.state == State::Handshake && c.readable {
                self.read_handshake(slot)?;
                continue;
            }
            if c.state == State::Established
                && c.readable
                && c.wants_host_data()
                && c.stream.seqpacket
            {
                let max = (c.peer_credit().min(MAX_PAYLOAD) as usize).min(room - HDR);
                if c.rx_msg.is_none() {
                    match c.stream.recv_message(MAX_SEQPACKET_MESSAGE) {
                        Ok(None) => {
                            c.host_ended();
                            self.mark_ready(slot);
                            self.sync(slot)?;
                            continue;
                        }
                        Ok(Some((msg, full))) => {
                            if full > MAX_SEQPACKET_MESSAGE {
                                log.warn(
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
                            self.sync(slot)?;
                            continue;
                        }
                        Err(e) => {
                            log::debug!("host socket of port {} failed: {e}", c.host_port);
                            self.reset(slot);
                            continue;
                        }
                    }
                }
                let Some((msg, off)) = c.rx_msg.take() else {
                    continue;
                };
                let left = msg.len() - off;
                let n = max.min(left);
                let flags = if n == left { SEQ_EOM | SEQ_EOR } else { 0 };
                let len = u32::try_from(n).unwrap_or(0);
                let h = c.header_to_guest(guest_cid, Op::Rw, flags, len);
                let used = request::write(writer, h, &msg[off..off + n])?;
                if n < left {
                    c.rx_msg = Some((msg, off + n));
                }
                self.mark_ready(slot);
                return Ok(Completion::Used(used));
            }
            if c.state == State::Established && c.readable && c.wants_host_data() {
                let max = (c.peer_credit().min(MAX_PAYLOAD) as usize).min(room - HDR);
                if self.scratch.len() < max {
                    self.scratch.resize(max, 0);
                }
                match c.stream.recv(&mut self.scratch[..max]) {
                    Ok(0) => {
                        c.host_ended();
                        self.mark_ready(slot);
                        self.sync(slot)?;
                    }
                    Ok(n) => {
                        let len = u32::try_from(n).unwrap_or(0);
                        let h = c.header_to_guest(guest_cid, Op::Rw, 0, len);
                        let used = request::write(writer, h, &self.scratch[..n])?;
                        self.mark_ready(slot);
                        return Ok(Completion::Used(used));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        c.readable = false;
                        self.sync(slot)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => self.mark_ready(slot),
                    Err(e) => {
                        log::debug!("host socket of port {} failed: {e}", c.host_port);
                        self.reset(slot);
                    }
                }
                continue;
            }
            self.sync(slot)?;
        }
        Ok(Completion::Stop)
    }

    /// Host programs connecting to `--uds-path`.
    fn accept(&mut self) -> Result<(), HostError> {
        let listener = self.listener.clone();
        while let Some(sock) = self.accept_next(listener.listener.as_fd(), TOKEN_LISTENER) {
            if self.count() >= self.max_connections {
                self.host_log.warn(
                    "connection limit reached; refusing a host connection",
                    &io::Error::other(format!("{} connections", self.max_connections)),
                );
                continue;
            }
            let mut c = Conn::new(sock, State::Handshake, 0, 0, self.buf_alloc);
            c.readable = true;
            if let Some(slot) = self.insert(c) {
                self.mark_ready(slot);
            }
        }
        Ok(())
    }

    fn on_host_event(&mut self, slot: usize, evset: EventSet) -> Result<(), HostError> {
        let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if c.state == State::HostConnecting {
            // The forwarded connect finished, one way or the other.
            match c.stream.take_error()? {
                None if evset.contains(EventSet::OUT) => {
                    c.state = State::Established;
                    c.push_control(Op::Response, 0);
                    c.readable = true;
                    self.mark_ready(slot);
                }
                None => {}
                Some(e) => {
                    log::debug!("forwarded connect to port {} failed: {e}", c.host_port);
                    self.reset(slot);
                    return Ok(());
                }
            }
            return self.sync(slot);
        }
        if evset.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
            c.readable = true;
            self.mark_ready(slot);
        }
        if evset.contains(EventSet::OUT) {
            self.after_write(slot);
        }
        self.sync(slot)
    }
}

/// What moves with a migration: the event buffers the driver gave the device
/// (held until there is an event to report).
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedState {
    /// Held event-queue chains.
    pub event_buffers: Vec<HeldChain>,
}

/// One vsock device (fresh per front-end connection).
pub struct VsockDevice {
    muxer: Mutex<Muxer>,
}

impl VsockDevice {
    /// A device for `args`, taking host connections from `listener` and the
    /// `forward_listeners`, and sibling packets from its mailbox in `registry`.
    pub fn new(
        args: &Args,
        listener: Arc<UdsListener>,
        registry: Arc<Registry>,
        forward_listeners: Arc<Vec<(OwnedFd, u32)>>,
        max_connections: usize,
    ) -> Result<Self, HostError> {
        let conn_base = u16::try_from(forward_listeners.len())
            .ok()
            .and_then(|n| n.checked_add(FIRST_FORWARD_TOKEN))
            .ok_or("too many forwarding listeners")?;
        let mailbox = registry
            .get(args.guest_cid)
            .ok_or("the VM has no mailbox in the registry")?;
        Ok(Self {
            muxer: Mutex::new(Muxer {
                guest_cid: args.guest_cid,
                uds: args.uds_path.clone(),
                buf_alloc: args.buffer_size,
                slots: Vec::new(),
                free: Vec::new(),
                by_key: HashMap::new(),
                ready: VecDeque::new(),
                in_ready: Vec::new(),
                rst: VecDeque::new(),
                events: None,
                next_port: FIRST_HOST_PORT,
                reset_pending: true,
                event_buffers: VecDeque::new(),
                seqpacket: false,
                scratch: Vec::new(),
                mailbox,
                registry,
                sibling: None,
                forward_cid: args.forward_cid,
                forward_listeners,
                conn_base,
                listener,
                max_connections,
                reserve: host::reserve_descriptor().ok(),
                paused: Vec::new(),
                host_log: GuestErrorLog::new("vhost-device-vsock host"),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Muxer> {
        vhost_device_common::lock(&self.muxer)
    }

    fn service(&self, m: &mut Muxer, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        if let Some(rx) = ctx.vrings.get(RX_QUEUE).copied().flatten() {
            drain(ctx, rx, |_, writer| m.fill_rx(writer, ctx.log))?;
        }
        if let Some(ev) = ctx.vrings.get(EVENT_QUEUE).copied().flatten() {
            m.send_transport_reset(ctx)?;
            drain_chains(ctx, EVENT_QUEUE, ev, |chain| {
                if !m.reset_pending {
                    // Kept until there is an event to report.
                    m.event_buffers.push_back(chain.hold());
                    return Ok(Completion::Held);
                }
                let used = write_transport_reset(&mut chain.writer, ctx.log);
                m.reset_pending = used == 0;
                Ok(Completion::Used(used))
            })?;
        }
        Ok(())
    }
}

/// Write `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` into an event buffer; the used
/// length, 0 when the buffer cannot take it (too small or device-readable: a
/// guest error).
fn write_transport_reset(writer: &mut Writer<'_>, log: &GuestErrorLog) -> u32 {
    let e = Event {
        id: EVENT_TRANSPORT_RESET.into(),
    };
    let room = writer.available_bytes();
    if room < e.as_slice().len() {
        log.warn(
            "event buffer too small",
            &io::Error::other(format!("{room} writable bytes")),
        );
        return 0;
    }
    match std::io::Write::write_all(writer, e.as_slice()) {
        Ok(()) => u32::try_from(writer.bytes_written()).unwrap_or(0),
        Err(err) => {
            log.warn("cannot write the event buffer", &err);
            0
        }
    }
}

impl Muxer {
    /// Complete held event buffers with a pending `TRANSPORT_RESET` until one
    /// takes it.
    fn send_transport_reset(&mut self, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        while self.reset_pending {
            let Some(held) = self.event_buffers.pop_front() else {
                return Ok(());
            };
            let mut used = 0;
            let back = ctx.complete(held, |_, writer| {
                used = write_transport_reset(writer, ctx.log);
                Ok(used)
            })?;
            if let Some(held) = back {
                // The event queue is stopped or served elsewhere: later.
                self.event_buffers.push_front(held);
                return Ok(());
            }
            self.reset_pending = used == 0;
        }
        Ok(())
    }
}

impl VirtioDevice for VsockDevice {
    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        F_SEQPACKET
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::RESET_DEVICE
    }

    /// `GET_VRING_BASE` of `rx` or `tx`: the driver is going away (a reboot,
    /// a paused or migrating VM). Every connection ends: its host socket is
    /// closed, so host programs see end of stream; the next driver gets a
    /// `TRANSPORT_RESET`. Held event buffers stay held.
    fn stop_vring(&self, queue: usize) -> io::Result<()> {
        if queue == RX_QUEUE || queue == TX_QUEUE {
            self.lock().close_all();
        }
        Ok(())
    }

    /// `RESET_DEVICE`: as [`Self::stop_vring`], and the held event buffers
    /// are gone with the rings.
    fn reset(&self) {
        let mut m = self.lock();
        m.close_all();
        m.event_buffers.clear();
    }

    fn acked_features(&self, features: u64) {
        self.lock().seqpacket = features & F_SEQPACKET != 0;
    }

    fn config(&self) -> Vec<u8> {
        let cfg = Config {
            guest_cid: self.lock().guest_cid.into(),
        };
        cfg.as_slice().to_vec()
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        let mut m = self.lock();
        events.add(0, m.listener.listener.as_fd(), EventSet::IN, TOKEN_LISTENER)?;
        // Packets siblings sent before this driver's transport reset are stale.
        m.mailbox.clear();
        events.add(0, m.mailbox.wake.as_fd(), EventSet::IN, TOKEN_MAILBOX)?;
        for (i, (l, _)) in m.forward_listeners.iter().enumerate() {
            let tok = u16::try_from(i)
                .ok()
                .and_then(|i| i.checked_add(FIRST_FORWARD_TOKEN));
            events.add(
                0,
                l.as_fd(),
                EventSet::IN,
                tok.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?,
            )?;
        }
        m.events = Some(events);
        Ok(())
    }

    /// Connections are bound to host sockets and cannot move to another
    /// daemon: only the driver's event buffers the device holds are saved.
    /// The destination completes the first of them with `TRANSPORT_RESET`
    /// (as kernel vhost-vsock does after a migration), so guest sockets see
    /// their connections reset and reconnect.
    type State = SavedState;
    const STATE_VERSION: u16 = 2;

    fn save_state(&self) -> Result<SavedState, HostError> {
        let mut m = self.lock();
        Ok(SavedState {
            event_buffers: m.event_buffers.drain(..).collect(),
        })
    }

    fn load_state(&self, state: SavedState) -> Result<(), HostError> {
        let mut m = self.lock();
        m.event_buffers = state.event_buffers.into();
        m.reset_pending = true;
        Ok(())
    }

    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        let mut m = self.lock();
        if queue == TX_QUEUE {
            drain(ctx, vring, |reader, _| {
                m.on_tx(reader, ctx.log)?;
                Ok(Completion::Used(0))
            })?;
        }
        self.service(&mut m, ctx)
    }

    fn host_event(
        &self,
        ctx: &QueueContext<'_>,
        token: u16,
        evset: EventSet,
        _vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        let mut m = self.lock();
        match token {
            TOKEN_LISTENER => m.accept()?,
            TOKEN_MAILBOX => {
                let _ = m.mailbox.wake.read();
            }
            t if t < m.conn_base => m.accept_forwarded(usize::from(t - FIRST_FORWARD_TOKEN))?,
            t => {
                let slot = usize::from(t - m.conn_base);
                m.on_host_event(slot, evset)?;
            }
        }
        self.service(&mut m, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::queue::HeldHeads;
    use vhost_device_common::testing::{TestQueue, BUFFERS};

    /// A device for CID 3 with its host socket in `dir`.
    fn device(dir: &std::path::Path) -> VsockDevice {
        let args = Args {
            guest_cid: 3,
            uds_path: dir.join("v.sock"),
            buffer_size: 64 * 1024,
            socket: None,
            groups: Vec::new(),
            forward_cid: None,
            forward_listen: Vec::new(),
        };
        let mut registry = Registry::default();
        registry.add(Arc::new(Mailbox::new(3, Vec::new()).unwrap()));
        let listener = Arc::new(UdsListener::bind(&args.uds_path).unwrap());
        VsockDevice::new(
            &args,
            listener,
            Arc::new(registry),
            Arc::new(Vec::new()),
            16,
        )
        .unwrap()
    }

    /// A context in which `q` is the event queue.
    fn event_context<'a>(
        q: &'a TestQueue,
        vrings: &'a [Option<&'a Vring>],
        held: &'a HeldHeads,
    ) -> QueueContext<'a> {
        QueueContext {
            vrings,
            held,
            ..q.context()
        }
    }

    #[test]
    fn connection_limit_shares_the_descriptors_left_among_the_vms() {
        assert_eq!(connection_limit(1 << 20, 1), MAX_CONNECTIONS);
        assert_eq!(connection_limit(1024, 1), 1024 - 32 - 64);
        assert_eq!(connection_limit(1024, 4), (1024 - 32 - 4 * 64) / 4);
        assert_eq!(connection_limit(64, 2), 1, "never none");
    }

    #[test]
    fn event_buffers_after_the_reset_are_held_and_move_with_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = TestQueue::new(16, false).unwrap();
        q.fill(BUFFERS, 16, 0xff).unwrap();
        let first = q.add(&[(BUFFERS, 8, true)]).unwrap();
        let second = q.add(&[(BUFFERS + 8, 8, true)]).unwrap();
        let vrings = [None, None, Some(&q.vring)];
        let held = HeldHeads::new(NUM_QUEUES);
        let source = device(dir.path());
        source
            .process_queue(&event_context(&q, &vrings, &held), EVENT_QUEUE, &q.vring)
            .unwrap();
        assert_eq!(q.used().unwrap(), vec![(u32::from(first), 4)]);
        assert_eq!(held.count(EVENT_QUEUE), 1, "the second buffer is held");

        // Through the runtime's envelope, into a second device on the same rings.
        let blob = vhost_device_common::state::encode(
            "vsock",
            2,
            &held.snapshot(),
            &source.save_state().unwrap(),
        )
        .unwrap();
        drop(source);
        let (heads, state) =
            vhost_device_common::state::decode::<SavedState>("vsock", 2, &blob).unwrap();
        let held = HeldHeads::new(NUM_QUEUES);
        held.restore(&heads).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let destination = device(dir2.path());
        destination.load_state(state).unwrap();
        destination
            .process_queue(&event_context(&q, &vrings, &held), EVENT_QUEUE, &q.vring)
            .unwrap();

        assert_eq!(
            q.used().unwrap(),
            vec![(u32::from(first), 4), (u32::from(second), 4)]
        );
        assert_eq!(
            q.read(BUFFERS + 8, 8).unwrap(),
            [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
    }
}
