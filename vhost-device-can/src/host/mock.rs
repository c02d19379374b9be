// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A scripted CAN host for unit tests: the test pushes what the "bus"
//! delivers and reads back what the device sent, through a [`MockHandle`].
//! An eventfd stands for the socket, readable while something is pending.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{CanFrame, CanHost, Received, Sent};

#[derive(Debug)]
struct Shared {
    incoming: VecDeque<Received>,
    sent: Vec<CanFrame>,
    blocked: bool,
    failing: Option<io::ErrorKind>,
    online: bool,
    link_up: bool,
}

/// The device's side.
#[derive(Debug)]
pub struct MockHost {
    shared: Arc<Mutex<Shared>>,
    ready: Arc<EventFd>,
    fd_capable: bool,
}

/// The test's side.
#[derive(Debug)]
pub struct MockHandle {
    shared: Arc<Mutex<Shared>>,
    ready: Arc<EventFd>,
}

impl MockHost {
    /// A host and the handle that scripts it.
    pub fn new(fd_capable: bool) -> io::Result<(Self, MockHandle)> {
        let shared = Arc::new(Mutex::new(Shared {
            incoming: VecDeque::new(),
            sent: Vec::new(),
            blocked: false,
            failing: None,
            online: false,
            link_up: true,
        }));
        let ready = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
        )?);
        let handle = MockHandle {
            shared: shared.clone(),
            ready: ready.clone(),
        };
        Ok((
            Self {
                shared,
                ready,
                fd_capable,
            },
            handle,
        ))
    }
}

impl MockHandle {
    /// Deliver `r` to the device.
    pub fn push(&self, r: Received) {
        vhost_device_common::lock(&self.shared)
            .incoming
            .push_back(r);
        let _ = self.ready.write(1);
    }

    /// Every frame the device sent so far.
    pub fn sent(&self) -> Vec<CanFrame> {
        vhost_device_common::lock(&self.shared).sent.clone()
    }

    /// Make sends report `WouldBlock` (or accept again).
    pub fn set_blocked(&self, blocked: bool) {
        vhost_device_common::lock(&self.shared).blocked = blocked;
    }

    /// Make sends fail with `kind` (or succeed again).
    pub fn set_failing(&self, kind: Option<io::ErrorKind>) {
        vhost_device_common::lock(&self.shared).failing = kind;
    }

    /// Whether the device said its controller is online.
    pub fn online(&self) -> bool {
        vhost_device_common::lock(&self.shared).online
    }

    /// Set what `link_up` reports.
    pub fn set_link_up(&self, up: bool) {
        vhost_device_common::lock(&self.shared).link_up = up;
    }
}

impl CanHost for MockHost {
    fn send(&mut self, frame: &CanFrame) -> io::Result<Sent> {
        let mut s = vhost_device_common::lock(&self.shared);
        if let Some(kind) = s.failing {
            return Err(io::Error::from(kind));
        }
        if s.blocked {
            return Ok(Sent::WouldBlock);
        }
        s.sent.push(*frame);
        Ok(Sent::Queued)
    }

    fn recv(&mut self) -> io::Result<Option<Received>> {
        let mut s = vhost_device_common::lock(&self.shared);
        let next = s.incoming.pop_front();
        if s.incoming.is_empty() {
            // Non-blocking: EAGAIN just means it was already clear.
            let _ = self.ready.read();
        }
        Ok(next)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    fn fd_capable(&self) -> bool {
        self.fd_capable
    }

    fn set_online(&mut self, online: bool) -> io::Result<()> {
        vhost_device_common::lock(&self.shared).online = online;
        Ok(())
    }

    fn link_up(&self) -> bool {
        vhost_device_common::lock(&self.shared).link_up
    }

    fn name(&self) -> String {
        "mock CAN host".into()
    }
}
