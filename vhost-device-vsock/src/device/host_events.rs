// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host side, in the worker's epoll: nothing here ever waits.
//!
//! - The `--uds-path` listener: a host program's connection starts in
//!   `Handshake`; its `CONNECT <port>\n` line is read here, a byte at a time
//!   so that nothing after the line is consumed, and turns it into a REQUEST
//!   to the guest.
//! - `--forward-listen` listeners: connections from the listed peers go to
//!   the guest as REQUESTs, others are closed.
//! - Host sockets: readable ones are listed for [`rx`](super::rx), writable
//!   ones written to, a finished `AF_VSOCK` connect is answered to the guest.
//! - The timer: connections whose timed state ran out (a handshake, a
//!   connect, a close) end; a connect to a full Unix listener is tried again.
//!
//! Out of descriptors, a host connection is refused (accepted and closed at
//! once) and a listener that cannot even do that leaves the epoll until a
//! connection ends: a full descriptor table never makes the worker spin.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use vhost_device_common::error::HostError;
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use super::conn::{Conn, Origin, State};
use super::tx::MAX_RETRY;
use super::{Muxer, FIRST_FORWARD_TOKEN, TOKEN_LISTENER, TOKEN_MAILBOX, TOKEN_TIMER};
use crate::host::{self, Accepted, HostSocket, Progress, MAX_HANDSHAKE};
use crate::virtio::Op;

impl Muxer {
    /// A host fd registered under `token` fired.
    pub(super) fn on_host_event(&mut self, token: u16, evset: EventSet) -> Result<(), HostError> {
        match token {
            TOKEN_LISTENER => self.accept_host_programs(),
            TOKEN_MAILBOX => {
                let _ = self.mailbox.wake.read();
            }
            TOKEN_TIMER => self.on_timer(),
            t if t < self.conn_base => {
                self.accept_forwarded(usize::from(t - FIRST_FORWARD_TOKEN))?;
            }
            t => self.on_socket_event(usize::from(t - self.conn_base), evset),
        }
        Ok(())
    }

    /// Host programs connecting to `--uds-path`.
    fn accept_host_programs(&mut self) {
        let listener = self.listeners.uds.clone();
        while let Some(sock) = self.accept_next(listener.listener.as_fd(), TOKEN_LISTENER) {
            if self.table.is_full() {
                self.refuse_at_limit("host");
                continue;
            }
            let c = Conn::new(
                sock,
                State::Handshake { line: Vec::new() },
                Origin::HostProgram,
                0,
                0,
                self.cfg.buf_alloc,
            );
            if let Some(slot) = self.table.insert(c) {
                self.settle(slot);
            }
        }
    }

    /// A host connection for the guest arrived on forwarding listener
    /// `index`: from a listed peer, it goes to the guest at the listener's
    /// port.
    fn accept_forwarded(&mut self, index: usize) -> Result<(), HostError> {
        let listeners = self.listeners.forward.clone();
        let Some(l) = listeners.get(index) else {
            return Ok(());
        };
        let token = u16::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(FIRST_FORWARD_TOKEN))
            .ok_or("forwarding listener out of range")?;
        while let Some(sock) = self.accept_next(l.fd.as_fd(), token) {
            if let Some(peers) = &self.cfg.forward_peers {
                match sock.peer_cid() {
                    Ok(cid) if peers.contains(&cid) => {}
                    Ok(cid) => {
                        self.host_log.warn(
                            "refused a forwarded connection from an unlisted peer",
                            &io::Error::other(format!("CID {cid}, port {}", l.port)),
                        );
                        continue;
                    }
                    Err(e) => {
                        self.host_log.warn("cannot tell a forwarded peer's CID", &e);
                        continue;
                    }
                }
            }
            if self.table.is_full() {
                self.refuse_at_limit("forwarded");
                continue;
            }
            let host_port = self.table.alloc_port(l.port);
            let mut c = Conn::new(
                sock,
                State::Requested,
                Origin::Forwarded,
                host_port,
                l.port,
                self.cfg.buf_alloc,
            );
            c.push_control(Op::Request, 0);
            if let Some(slot) = self.table.insert(c) {
                self.table.bind(slot);
                self.settle(slot);
            }
        }
        Ok(())
    }

    fn refuse_at_limit(&self, what: &str) {
        self.host_log.warn(
            &format!("connection limit reached; refused a {what} connection"),
            &io::Error::other(format!("{} connections", self.table.limit())),
        );
    }

    /// The next connection waiting on `listener` (registered under
    /// `token`), if any; connections refused for want of descriptors are
    /// logged and skipped ([`host::accept_or_refuse`]). When even that is
    /// impossible the listener leaves the epoll until a connection ends.
    fn accept_next(&mut self, listener: BorrowedFd<'_>, token: u16) -> Option<HostSocket> {
        loop {
            match host::accept_or_refuse(listener, &mut self.reserve) {
                Ok(Accepted::Socket(sock)) => return Some(sock),
                Ok(Accepted::Nothing) => return None,
                Ok(Accepted::Refused(e)) => {
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
    fn pause_listener(&mut self, listener: BorrowedFd<'_>, token: u16) {
        if let Some(events) = &self.events {
            if !self.paused.contains(&token) && events.remove(0, listener).is_ok() {
                self.paused.push(token);
            }
        }
    }

    /// Put paused listeners back into the epoll (a connection ended, so a
    /// descriptor is free), and renew the reserve descriptor.
    pub(super) fn resume_listeners(&mut self) {
        if self.reserve.is_none() {
            self.reserve = host::reserve_descriptor().ok();
        }
        let Some(events) = &self.events else {
            return;
        };
        for token in std::mem::take(&mut self.paused) {
            let fd = if token == TOKEN_LISTENER {
                Some(self.listeners.uds.listener.as_fd())
            } else {
                self.listeners
                    .forward
                    .get(usize::from(token - FIRST_FORWARD_TOKEN))
                    .map(|l| l.fd.as_fd())
            };
            if let Some(fd) = fd {
                if let Err(e) = events.add(0, fd, EventSet::IN, token) {
                    log::warn!("cannot watch a host listener again: {e}");
                }
            }
        }
    }

    /// The host socket of the connection in `slot` is readable, writable, or
    /// failed.
    fn on_socket_event(&mut self, slot: usize, evset: EventSet) {
        let Some(c) = self.table.get_mut(slot) else {
            return;
        };
        match c.state {
            State::Handshake { .. } => {
                self.read_connect_line(slot);
                return;
            }
            State::HostConnecting { retry: None } => {
                // The AF_VSOCK connect finished, one way or the other.
                match c.sock.take_error() {
                    Ok(None) if evset.contains(EventSet::OUT) => c.on_host_connected(),
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => {
                        log::debug!("connect to host port {} failed: {e}", c.host_port);
                        self.reset(slot);
                        return;
                    }
                }
            }
            _ => {
                if evset.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
                    c.readable = true;
                }
            }
        }
        // Writable: `settle` writes what waits.
        self.settle(slot);
    }

    /// Read a host program's `CONNECT <port>\n`, one byte at a time so that
    /// nothing after the line is consumed; then ask the guest.
    fn read_connect_line(&mut self, slot: usize) {
        let Some(c) = self.table.get_mut(slot) else {
            return;
        };
        let State::Handshake { line } = &mut c.state else {
            return;
        };
        let mut byte = [0u8; 1];
        loop {
            match c.sock.recv(&mut byte) {
                Ok(0) => {
                    self.remove(slot);
                    return;
                }
                Ok(_) => {
                    line.push(byte[0]);
                    if byte[0] == b'\n' {
                        break;
                    }
                    if line.len() >= MAX_HANDSHAKE {
                        self.remove(slot);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(slot);
                    return;
                }
            }
        }
        let Some(port) = host::parse_connect(line) else {
            self.remove(slot);
            return;
        };
        let host_port = self.table.alloc_port(port);
        let Some(c) = self.table.get_mut(slot) else {
            return;
        };
        c.state = State::Requested;
        c.guest_port = port;
        c.host_port = host_port;
        c.push_control(Op::Request, 0);
        self.table.bind(slot);
        self.settle(slot);
    }

    /// The timer fired: end the connections whose time ran out, and try the
    /// connects that wait for room in a listener's backlog again.
    fn on_timer(&mut self) {
        // Nonblocking: clears the expiration count.
        let _ = self.timer.wait();
        self.armed = None;
        let now = Instant::now();
        for slot in self.table.due(now) {
            let Some(c) = self.table.get_mut(slot) else {
                continue;
            };
            if c.deadline.is_some_and(|(_, at)| at <= now) {
                if let State::Closing { .. } = c.state {
                    self.host_log.warn(
                        "guest data dropped: the host program did not read it within --close-timeout",
                        &io::Error::other(format!("{} bytes, host port {}", c.buffered(), c.host_port)),
                    );
                } else {
                    log::debug!("host port {} timed out in {:?}", c.host_port, c.state);
                }
                if matches!(c.state, State::Handshake { .. }) {
                    self.remove(slot);
                } else {
                    self.reset(slot);
                }
                continue;
            }
            if c.retry_at.is_some_and(|at| at <= now) {
                self.connect_again(slot, now);
            }
            self.settle(slot);
        }
    }

    /// Try again to connect to a Unix listener whose backlog was full.
    fn connect_again(&mut self, slot: usize, now: Instant) {
        let path = self
            .table
            .get(slot)
            .map(|c| host::port_path(&self.cfg.uds, c.host_port));
        let (Some(c), Some(path)) = (self.table.get_mut(slot), path) else {
            return;
        };
        let State::HostConnecting { retry: Some(delay) } = c.state else {
            c.retry_at = None;
            return;
        };
        match c.sock.connect_again(&path) {
            Ok(Progress::Connected) => c.on_host_connected(),
            Ok(Progress::InProgress) => {
                c.state = State::HostConnecting { retry: None };
                c.retry_at = None;
            }
            Ok(Progress::Backlog) => {
                let next = (delay * 2).min(MAX_RETRY);
                c.state = State::HostConnecting { retry: Some(next) };
                c.retry_at = Some(now + next);
            }
            Err(e) => {
                log::debug!("connect to host port {} failed: {e}", c.host_port);
                self.reset(slot);
            }
        }
    }
}
