// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A vring over in-process guest memory, for queue-level tests of devices.
//!
//! [`TestQueue`] lays out a split virtqueue with virtio-queue's mock helpers,
//! wraps it in the same [`Vring`] type the daemons use, and lets a test post
//! chains, call [`crate::queue::drain`] (or a device's `process_queue`) and read
//! back the used ring — no sockets, no threads.

use std::fs::File;

use std::os::fd::AsFd;
use vhost_user_backend::VringT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::backend::BackendChannel;
use crate::error::GuestErrorLog;
use crate::queue::{GuestMemory, HeldHeads, QueueContext, Vring};

/// Size of the test guest memory.
pub const MEM_SIZE: u64 = 0x100_0000;
const MEM_SIZE_USIZE: usize = 0x100_0000;
/// Where test buffers may start (the rings live below).
pub const BUFFERS: u64 = 0x10_0000;

/// A split virtqueue in test memory.
pub struct TestQueue {
    raw: GuestMemory,
    /// The memory as the device sees it.
    pub mem: GuestMemoryAtomic<GuestMemory>,
    /// The vring as the device sees it.
    pub vring: Vring,
    /// Guest-error log for [`Self::context`].
    pub log: GuestErrorLog,
    /// Held chains, for [`Self::context`].
    pub held: HeldHeads,
    /// Backend channel (never connected), for [`Self::context`].
    pub backend: BackendChannel,
    size: u16,
    next_desc: u16,
    call: EventFd,
    event_idx: bool,
}

/// One buffer: address, length, device-writable.
pub type Buf = (u64, u32, bool);

/// Split-ring layout at guest address 0 (virtio 1.3, 2.7): descriptor table,
/// avail ring, used ring (4-byte aligned).
fn layout(size: u16) -> (u64, u64, u64) {
    let n = u64::from(size);
    let avail = 16 * n;
    let used = (avail + 6 + 2 * n).div_ceil(4) * 4;
    (0, avail, used)
}

/// Build a test failure message (test helpers must not panic silently).
fn fail(what: &str, e: impl std::fmt::Debug) -> String {
    format!("{what}: {e:?}")
}

impl TestQueue {
    /// A ready queue of `size` entries; `event_idx` as if negotiated.
    pub fn new(size: u16, event_idx: bool) -> Result<Self, String> {
        let raw = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE_USIZE)])
            .map_err(|e| fail("guest memory", e))?;
        let (desc, avail, used) = layout(size);
        let mem = GuestMemoryAtomic::new(raw.clone());
        let vring = Vring::new(mem.clone(), size).map_err(|e| fail("vring", e))?;
        vring.set_queue_size(size);
        vring
            .set_queue_info(desc, avail, used)
            .map_err(|e| fail("queue info", e))?;
        vring.set_queue_event_idx(event_idx);
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        let call = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).map_err(|e| fail("eventfd", e))?;
        let dup = call
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| fail("eventfd", e))?;
        vring.set_call(Some(File::from(dup)));
        Ok(Self {
            raw,
            mem,
            vring,
            log: GuestErrorLog::new("test"),
            held: HeldHeads::new(1),
            backend: BackendChannel::new(),
            size,
            next_desc: 0,
            call,
            event_idx,
        })
    }

    /// A context for `drain` or `process_queue`.
    pub fn context(&self) -> QueueContext<'_> {
        QueueContext {
            mem: &self.mem,
            event_idx: self.event_idx,
            log: &self.log,
            vrings: &[],
            held: &self.held,
            backend: &self.backend,
            stopping: false,
        }
    }

    fn write<T: vm_memory::ByteValued>(&self, addr: u64, val: T) -> Result<(), String> {
        self.raw
            .write_obj(val, GuestAddress(addr))
            .map_err(|e| fail("write", e))
    }

    fn read_u16(&self, addr: u64) -> Result<u16, String> {
        self.raw
            .read_obj::<u16>(GuestAddress(addr))
            .map(u16::from_le)
            .map_err(|e| fail("read", e))
    }

    /// Post a chain of `bufs`; returns its head index.
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, String> {
        let (desc, avail, _) = layout(self.size);
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = (usize::from(head) + i) % usize::from(self.size);
            let next =
                u16::try_from((index + 1) % usize::from(self.size)).map_err(|e| fail("next", e))?;
            let mut flags: u16 = if writable { 2 } else { 0 };
            if i + 1 < bufs.len() {
                flags |= 1;
            }
            let at = desc + 16 * index as u64;
            self.write(at, addr.to_le())?;
            self.write(at + 8, len.to_le())?;
            self.write(at + 12, flags.to_le())?;
            self.write(at + 14, next.to_le())?;
        }
        let idx = self.read_u16(avail + 2)?;
        self.write(avail + 4 + 2 * u64::from(idx % self.size), head.to_le())?;
        self.write(avail + 2, idx.wrapping_add(1).to_le())?;
        let n = u16::try_from(bufs.len()).map_err(|e| fail("chain length", e))?;
        self.next_desc = (head + n) % self.size;
        Ok(head)
    }

    /// Make `head` available again without building a chain (a driver bug or
    /// a hostile driver re-posting a buffer the device still holds).
    pub fn add_head_again(&mut self, head: u16) -> Result<(), String> {
        let (_, avail, _) = layout(self.size);
        let idx = self.read_u16(avail + 2)?;
        self.write(avail + 4 + 2 * u64::from(idx % self.size), head.to_le())?;
        self.write(avail + 2, idx.wrapping_add(1).to_le())
    }

    /// Write `data` at `addr`.
    pub fn write_bytes(&self, addr: u64, data: &[u8]) -> Result<(), String> {
        self.raw
            .write_slice(data, GuestAddress(addr))
            .map_err(|e| fail("write", e))
    }

    /// Fill `len` bytes at `addr` with `byte`.
    pub fn fill(&self, addr: u64, len: usize, byte: u8) -> Result<(), String> {
        self.raw
            .write_slice(&vec![byte; len], GuestAddress(addr))
            .map_err(|e| fail("write", e))
    }

    /// Read `len` bytes at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0; len];
        self.raw
            .read_slice(&mut buf, GuestAddress(addr))
            .map_err(|e| fail("read", e))?;
        Ok(buf)
    }

    /// Every used-ring entry so far, as (head, len).
    pub fn used(&self) -> Result<Vec<(u32, u32)>, String> {
        let (_, _, used) = layout(self.size);
        let idx = self.read_u16(used + 2)?;
        (0..idx)
            .map(|i| {
                let at = GuestAddress(used + 4 + 8 * u64::from(i % self.size));
                let id: u32 = self.raw.read_obj(at).map_err(|e| fail("used id", e))?;
                let len: u32 = self
                    .raw
                    .read_obj(GuestAddress(at.0 + 4))
                    .map_err(|e| fail("used len", e))?;
                Ok((u32::from_le(id), u32::from_le(len)))
            })
            .collect()
    }

    /// The `avail_event` word the device publishes with EVENT_IDX.
    pub fn avail_event(&self) -> Result<u16, String> {
        let (_, _, used) = layout(self.size);
        self.read_u16(used + 4 + 8 * u64::from(self.size))
    }

    /// Whether the device signalled the call eventfd since the last check.
    pub fn signalled(&self) -> bool {
        self.call.read().is_ok()
    }
}
