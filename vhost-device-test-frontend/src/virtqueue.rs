// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A split-virtqueue driver (virtio 1.3, 2.7 "Split Virtqueues").
//!
//! The rings live in [`GuestRam`]; the back end reaches them through the memory
//! table. The driver posts chains — well-formed ([`Chain`], direct or indirect,
//! split over as many descriptors as the test likes) or deliberately malformed
//! ([`RawDesc`]) — kicks the back end and collects used buffers, honouring
//! `VIRTIO_RING_F_EVENT_IDX` in both directions (2.7.7 and 2.7.10).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestRam;
use crate::Error;

/// Descriptor continues via `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Buffer is device-writable.
pub const VRING_DESC_F_WRITE: u16 = 2;
/// Buffer holds an indirect descriptor table.
pub const VRING_DESC_F_INDIRECT: u16 = 4;

const DESC_SIZE: u64 = 16;

/// One buffer of a well-formed chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (else device-readable).
    pub writable: bool,
}

/// A well-formed descriptor chain: device-readable buffers, then device-writable ones.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    buffers: Vec<Buffer>,
    indirect: bool,
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a device-readable buffer.
    pub fn readable(mut self, addr: u64, len: u32) -> Self {
        self.buffers.push(Buffer {
            addr,
            len,
            writable: false,
        });
        self
    }

    /// Append a device-writable buffer.
    pub fn writable(mut self, addr: u64, len: u32) -> Self {
        self.buffers.push(Buffer {
            addr,
            len,
            writable: true,
        });
        self
    }

    /// Append `len` device-writable bytes at `addr`, split into `pieces` descriptors.
    pub fn writable_split(mut self, addr: u64, len: u32, pieces: u32) -> Self {
        let pieces = pieces.clamp(1, len.max(1));
        let step = len / pieces;
        let mut off = 0;
        for i in 0..pieces {
            let l = if i + 1 == pieces { len - off } else { step };
            self = self.writable(addr + u64::from(off), l);
            off += l;
        }
        self
    }

    /// Place the buffers in an indirect descriptor table (2.7.5.3).
    pub fn indirect(mut self) -> Self {
        self.indirect = true;
        self
    }

    /// The buffers.
    pub fn buffers(&self) -> &[Buffer] {
        &self.buffers
    }
}

/// Where a raw descriptor's `next` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// No `VRING_DESC_F_NEXT`.
    End,
    /// The descriptor at this position of the same raw list (may point backwards: a loop).
    Pos(usize),
    /// This absolute descriptor-table index (may be out of range).
    Index(u16),
}

/// A descriptor written exactly as given, for malformed-chain tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    /// Guest-physical address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Flags other than `NEXT` (which follows from `next`).
    pub flags: u16,
    /// Link.
    pub next: Next,
}

/// A completed chain from the used ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor index (as returned by `add`).
    pub head: u16,
    /// Bytes the device wrote.
    pub len: u32,
}

/// Descriptors of a posted chain, and its indirect table (address, capacity).
type InFlight = (Vec<u16>, Option<(u64, u16)>);

/// The driver side of one split virtqueue.
#[derive(Debug)]
pub struct Virtqueue {
    ram: Arc<GuestRam>,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    free: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
    inflight: HashMap<u16, InFlight>,
    indirect_pool: Vec<(u64, u16)>,
    event_idx: bool,
    kick: EventFd,
    call: EventFd,
}

fn write_desc(
    ram: &GuestRam,
    table: u64,
    index: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) -> Result<(), Error> {
    let at = table + u64::from(index) * DESC_SIZE;
    let mut bytes = [0u8; 16];
    bytes[0..8].copy_from_slice(&addr.to_le_bytes());
    bytes[8..12].copy_from_slice(&len.to_le_bytes());
    bytes[12..14].copy_from_slice(&flags.to_le_bytes());
    bytes[14..16].copy_from_slice(&next.to_le_bytes());
    ram.write(at, &bytes)
}

impl Virtqueue {
    /// Lay out a queue of `size` entries (a power of two) in `ram`.
    pub fn new(ram: Arc<GuestRam>, size: u16, event_idx: bool) -> Result<Self, Error> {
        if size == 0 || !size.is_power_of_two() {
            return Err(Error::BadQueueSize(size));
        }
        let n = u64::from(size);
        let desc = ram.alloc(DESC_SIZE * n, 4096)?;
        let avail = ram.alloc(6 + 2 * n, 4096)?;
        let used = ram.alloc(6 + 8 * n, 4096)?;
        // Fresh memfd pages are zero: flags, indices and event words start at 0.
        let new_fd =
            || EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(Error::EventFd);
        Ok(Self {
            ram,
            size,
            desc,
            avail,
            used,
            free: (0..size).rev().collect(),
            avail_idx: 0,
            last_used: 0,
            inflight: HashMap::new(),
            indirect_pool: Vec::new(),
            event_idx,
            kick: new_fd()?,
            call: new_fd()?,
        })
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest-physical addresses of descriptor table, avail ring and used ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc, self.avail, self.used)
    }

    /// The kick eventfd (driver → device).
    pub fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    /// The call eventfd (device → driver).
    pub fn call_fd(&self) -> &EventFd {
        &self.call
    }

    /// Free descriptors.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Chains posted and not yet used.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    fn take_desc(&mut self, n: usize) -> Result<Vec<u16>, Error> {
        if n == 0 || self.free.len() < n {
            return Err(Error::QueueFull);
        }
        Ok((0..n).filter_map(|_| self.free.pop()).collect())
    }

    fn publish(&mut self, head: u16) -> Result<(), Error> {
        let slot = u64::from(self.avail_idx % self.size);
        self.ram
            .write_obj(self.avail + 4 + 2 * slot, head.to_le())?;
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.ram.write_obj(self.avail + 2, self.avail_idx.to_le())?;
        fence(Ordering::SeqCst);
        Ok(())
    }

    fn indirect_table(&mut self, n: u16) -> Result<(u64, u16), Error> {
        if let Some(pos) = self.indirect_pool.iter().position(|&(_, cap)| cap >= n) {
            return Ok(self.indirect_pool.swap_remove(pos));
        }
        let cap = n.next_power_of_two();
        Ok((self.ram.alloc(DESC_SIZE * u64::from(cap), 16)?, cap))
    }

    /// Post a well-formed chain; returns its head index. Does not kick.
    pub fn add(&mut self, chain: &Chain) -> Result<u16, Error> {
        let bufs = chain.buffers();
        if bufs.is_empty() {
            return Err(Error::EmptyChain);
        }
        let n = u16::try_from(bufs.len()).map_err(|_| Error::QueueFull)?;
        if chain.indirect {
            let (table, cap) = self.indirect_table(n)?;
            for (i, b) in (0u16..).zip(bufs) {
                let mut flags = if b.writable { VRING_DESC_F_WRITE } else { 0 };
                if i + 1 < n {
                    flags |= VRING_DESC_F_NEXT;
                }
                write_desc(&self.ram, table, i, b.addr, b.len, flags, i + 1)?;
            }
            let idx = self.take_desc(1)?;
            let head = idx[0];
            write_desc(
                &self.ram,
                self.desc,
                head,
                table,
                u32::from(n) * 16,
                VRING_DESC_F_INDIRECT,
                0,
            )?;
            self.inflight.insert(head, (idx, Some((table, cap))));
            self.publish(head)?;
            return Ok(head);
        }
        let idx = self.take_desc(bufs.len())?;
        for (i, b) in bufs.iter().enumerate() {
            let mut flags = if b.writable { VRING_DESC_F_WRITE } else { 0 };
            let next = idx.get(i + 1).copied();
            if next.is_some() {
                flags |= VRING_DESC_F_NEXT;
            }
            write_desc(
                &self.ram,
                self.desc,
                idx[i],
                b.addr,
                b.len,
                flags,
                next.unwrap_or(0),
            )?;
        }
        let head = idx[0];
        self.inflight.insert(head, (idx, None));
        self.publish(head)?;
        Ok(head)
    }

    /// Post raw descriptors exactly as given (malformed-chain tests); returns the head.
    pub fn add_raw(&mut self, descs: &[RawDesc]) -> Result<u16, Error> {
        let idx = self.take_desc(descs.len())?;
        for (i, d) in descs.iter().enumerate() {
            let (flags, next) = match d.next {
                Next::End => (d.flags & !VRING_DESC_F_NEXT, 0),
                Next::Pos(p) => (
                    d.flags | VRING_DESC_F_NEXT,
                    idx.get(p).copied().unwrap_or(u16::MAX),
                ),
                Next::Index(x) => (d.flags | VRING_DESC_F_NEXT, x),
            };
            write_desc(&self.ram, self.desc, idx[i], d.addr, d.len, flags, next)?;
        }
        let head = idx[0];
        self.inflight.insert(head, (idx, None));
        self.publish(head)?;
        Ok(head)
    }

    /// Write raw descriptors as an indirect table at a fresh address; returns it.
    pub fn write_indirect_table(&self, descs: &[RawDesc]) -> Result<u64, Error> {
        let table = self.ram.alloc(DESC_SIZE * descs.len().max(1) as u64, 16)?;
        for (i, d) in (0u16..).zip(descs) {
            let (flags, next) = match d.next {
                Next::End => (d.flags & !VRING_DESC_F_NEXT, 0),
                Next::Pos(p) => (
                    d.flags | VRING_DESC_F_NEXT,
                    u16::try_from(p).unwrap_or(u16::MAX),
                ),
                Next::Index(x) => (d.flags | VRING_DESC_F_NEXT, x),
            };
            write_desc(&self.ram, table, i, d.addr, d.len, flags, next)?;
        }
        Ok(table)
    }

    /// Publish a head index that the driver never wrote (an avail entry pointing
    /// anywhere, even past the table).
    pub fn add_bogus_head(&mut self, head: u16) -> Result<(), Error> {
        self.publish(head)
    }

    /// Kick the device unconditionally.
    pub fn kick(&self) -> Result<(), Error> {
        self.kick.write(1).map_err(Error::EventFd)
    }

    /// Kick only if the device asked for it (EVENT_IDX `avail_event`, or the
    /// `VRING_USED_F_NO_NOTIFY` flag without it). `old` is the avail index
    /// before the chains just posted ([`Self::avail_index`]).
    pub fn kick_if_needed(&self, old: u16) -> Result<bool, Error> {
        fence(Ordering::SeqCst);
        let need = if self.event_idx {
            let n = u64::from(self.size);
            let event = u16::from_le(self.ram.read_obj::<u16>(self.used + 4 + 8 * n)?);
            self.avail_idx.wrapping_sub(event).wrapping_sub(1) < self.avail_idx.wrapping_sub(old)
        } else {
            u16::from_le(self.ram.read_obj::<u16>(self.used)?) & 1 == 0
        };
        if need {
            self.kick()?;
        }
        Ok(need)
    }

    /// The next avail index the driver will publish.
    pub fn avail_index(&self) -> u16 {
        self.avail_idx
    }

    /// Collect every chain the device has put on the used ring since the last call.
    pub fn take_used(&mut self) -> Result<Vec<Used>, Error> {
        fence(Ordering::SeqCst);
        let used_idx = u16::from_le(self.ram.read_obj::<u16>(self.used + 2)?);
        fence(Ordering::SeqCst);
        let mut out = Vec::new();
        while self.last_used != used_idx {
            let slot = u64::from(self.last_used % self.size);
            let at = self.used + 4 + 8 * slot;
            let id = u32::from_le(self.ram.read_obj::<u32>(at)?);
            let len = u32::from_le(self.ram.read_obj::<u32>(at + 4)?);
            let head = u16::try_from(id).map_err(|_| Error::BadUsedId(id))?;
            let (descs, table) = self.inflight.remove(&head).ok_or(Error::BadUsedId(id))?;
            self.free.extend(descs);
            if let Some(t) = table {
                self.indirect_pool.push(t);
            }
            out.push(Used { head, len });
            self.last_used = self.last_used.wrapping_add(1);
        }
        if self.event_idx {
            // Ask for an interrupt as soon as the next buffer is used.
            let n = u64::from(self.size);
            self.ram
                .write_obj(self.avail + 4 + 2 * n, self.last_used.to_le())?;
            fence(Ordering::SeqCst);
        }
        Ok(out)
    }

    /// Wait up to `timeout` for at least one used chain.
    pub fn wait_used(&mut self, timeout: Duration) -> Result<Vec<Used>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let used = self.take_used()?;
            if !used.is_empty() {
                return Ok(used);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            self.wait_call(left)?;
        }
    }

    /// Wait up to `timeout` for the device to signal the call eventfd; true if it did.
    pub fn wait_call(&self, timeout: Duration) -> Result<bool, Error> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        // SAFETY: `self.call` owns the descriptor and outlives the borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.call.as_raw_fd()) };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => Ok(false),
            Ok(_) => {
                let _ = self.call.read();
                Ok(true)
            }
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::EventFd(e.into())),
        }
    }

    /// Whether the device suppresses notifications right now: with EVENT_IDX the
    /// `avail_event` word, otherwise the used-ring flags word.
    pub fn avail_event(&self) -> Result<u16, Error> {
        let n = u64::from(self.size);
        Ok(u16::from_le(
            self.ram.read_obj::<u16>(self.used + 4 + 8 * n)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(event_idx: bool) -> Virtqueue {
        let ram = Arc::new(GuestRam::new(1 << 20).unwrap());
        Virtqueue::new(ram, 8, event_idx).unwrap()
    }

    /// Play the device: put `head` on the used ring with `len`.
    fn device_uses(vq: &Virtqueue, slot: u16, head: u16, len: u32) {
        let at = vq.used + 4 + 8 * u64::from(slot);
        vq.ram.write_obj(at, u32::from(head).to_le()).unwrap();
        vq.ram.write_obj(at + 4, len.to_le()).unwrap();
        vq.ram.write_obj(vq.used + 2, (slot + 1).to_le()).unwrap();
    }

    #[test]
    fn split_chain_covers_every_byte_once() {
        let chain = Chain::new().writable_split(0x1000, 100, 7);
        assert_eq!(chain.buffers().len(), 7);
        assert_eq!(chain.buffers().iter().map(|b| b.len).sum::<u32>(), 100);
        assert_eq!(
            chain.buffers()[6].addr + u64::from(chain.buffers()[6].len),
            0x1000 + 100
        );
    }

    #[test]
    fn used_chain_returns_its_descriptors() {
        let mut vq = queue(false);
        let head = vq
            .add(&Chain::new().writable(0x10_0000, 4).writable(0x10_1000, 4))
            .unwrap();
        assert_eq!(vq.free_descriptors(), 6);

        device_uses(&vq, 0, head, 8);

        assert_eq!(vq.take_used().unwrap(), vec![Used { head, len: 8 }]);
        assert_eq!(vq.free_descriptors(), 8);
        assert_eq!(vq.in_flight(), 0);
    }

    #[test]
    fn unknown_used_id_is_reported() {
        let mut vq = queue(false);
        device_uses(&vq, 0, 5, 0);
        assert!(matches!(vq.take_used(), Err(Error::BadUsedId(5))));
    }

    #[test]
    fn full_queue_refuses_more_chains() {
        let mut vq = queue(false);
        let chain = Chain::new().writable(0x10_0000, 4);
        for _ in 0..8 {
            vq.add(&chain).unwrap();
        }
        assert!(matches!(vq.add(&chain), Err(Error::QueueFull)));
    }

    #[test]
    fn indirect_chain_uses_one_ring_descriptor() {
        let mut vq = queue(false);
        vq.add(&Chain::new().writable_split(0x10_0000, 64, 5).indirect())
            .unwrap();
        assert_eq!(vq.free_descriptors(), 7);
    }

    #[test]
    fn kick_is_skipped_when_the_device_asked_for_a_later_index() {
        let mut vq = queue(true);
        let old = vq.avail_index();
        vq.add(&Chain::new().writable(0x10_0000, 4)).unwrap();
        // Device published avail_event = 5: it wants a kick only past index 5.
        let n = u64::from(vq.size());
        vq.ram.write_obj(vq.used + 4 + 8 * n, 5u16.to_le()).unwrap();
        assert!(!vq.kick_if_needed(old).unwrap());
        // avail_event = 0: the chain just posted (index 0) crosses it.
        vq.ram.write_obj(vq.used + 4 + 8 * n, 0u16.to_le()).unwrap();
        assert!(vq.kick_if_needed(old).unwrap());
    }
}
