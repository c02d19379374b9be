// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A vring over in-process guest memory, for queue-level tests of devices.
//!
//! [`TestQueue`] lays out a split virtqueue (virtio 1.3, 2.7) in test memory,
//! wraps it in the same [`Vring`] type the daemons use, and lets a test post
//! chains, call [`crate::queue::drain`] (or a device's `process_queue`) and read
//! back the used ring — no sockets, no threads.
//!
//! It is a small but correct driver: descriptors come from a free list and go
//! back to it only when their chain appears in the used ring (2.7.14 "Receiving
//! Used Buffers From The Device"), so an in-flight descriptor is never
//! overwritten; a full queue is an error instead. The avail and used indices
//! are free-running `u16` counters that wrap at 65536 (2.7.6, 2.7.8), and ring
//! slots are the index modulo the queue size, so a test can drive a queue
//! through any number of cycles.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{fence, Ordering};

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

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

/// A split virtqueue in test memory, driven from the driver's side.
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
    call: EventFd,
    event_idx: bool,
    /// Descriptor indices not part of any posted chain.
    free: Vec<u16>,
    /// Posted chains not yet seen in the used ring: head → its descriptors.
    in_flight: HashMap<u16, Vec<u16>>,
    /// The driver's copy of `avail->idx` (the next avail slot to fill).
    avail_idx: u16,
    /// The next used-ring entry the driver has not read yet.
    last_used: u16,
    /// Used entries already read (to recycle their descriptors) but not yet
    /// handed to the test by [`Self::take_used`].
    pending: Vec<(u32, u32)>,
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
    /// A ready queue of `size` entries (a power of two); `event_idx` as if
    /// negotiated.
    pub fn new(size: u16, event_idx: bool) -> Result<Self, String> {
        if !size.is_power_of_two() {
            return Err(format!("queue size {size} is not a power of two"));
        }
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
            call,
            event_idx,
            // Popped from the end: the first chains get indices 0, 1, 2, …
            free: (0..size).rev().collect(),
            in_flight: HashMap::new(),
            avail_idx: 0,
            last_used: 0,
            pending: Vec::new(),
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
            poll: None,
        }
    }

    fn write<T: vm_memory::ByteValued>(&self, addr: u64, val: T) -> Result<(), String> {
        self.raw
            .write_obj(val, GuestAddress(addr))
            .map_err(|e| fail("write", e))
    }

    fn read_obj<T: vm_memory::ByteValued>(&self, addr: u64) -> Result<T, String> {
        self.raw
            .read_obj::<T>(GuestAddress(addr))
            .map_err(|e| fail("read", e))
    }

    fn read_u16(&self, addr: u64) -> Result<u16, String> {
        self.read_obj::<u16>(addr).map(u16::from_le)
    }

    /// Post a chain of `bufs`; returns its head index.
    ///
    /// Descriptors of chains the device has already used are recycled first;
    /// if there are still not enough free descriptors the queue is full and
    /// this fails (complete some chains and try again).
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, String> {
        if bufs.is_empty() {
            return Err("a chain needs at least one buffer".into());
        }
        if self.free.len() < bufs.len() {
            self.reclaim()?;
        }
        if self.free.len() < bufs.len() {
            return Err(format!(
                "queue full: a chain of {} descriptors needs more than the {} free",
                bufs.len(),
                self.free.len()
            ));
        }
        let split = self.free.len() - bufs.len();
        let mut descs = self.free.split_off(split);
        descs.reverse();
        let (desc, avail, _) = layout(self.size);
        for (i, (&index, &(addr, len, writable))) in descs.iter().zip(bufs).enumerate() {
            let next = descs.get(i + 1).copied();
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            if next.is_some() {
                flags |= VRING_DESC_F_NEXT;
            }
            let at = desc + 16 * u64::from(index);
            self.write(at, addr.to_le())?;
            self.write(at + 8, len.to_le())?;
            self.write(at + 12, flags.to_le())?;
            self.write(at + 14, next.unwrap_or(0).to_le())?;
        }
        let head = descs[0];
        self.in_flight.insert(head, descs);
        let slot = u64::from(self.avail_idx % self.size);
        self.write(avail + 4 + 2 * slot, head.to_le())?;
        // The ring entry must be visible before the index that publishes it
        // (2.7.13.2).
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write(avail + 2, self.avail_idx.to_le())?;
        fence(Ordering::SeqCst);
        Ok(head)
    }

    /// Make `head` available again without building a chain (a driver bug or
    /// a hostile driver re-posting a buffer the device still holds).
    pub fn add_head_again(&mut self, head: u16) -> Result<(), String> {
        let (_, avail, _) = layout(self.size);
        let slot = u64::from(self.avail_idx % self.size);
        self.write(avail + 4 + 2 * slot, head.to_le())?;
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write(avail + 2, self.avail_idx.to_le())
    }

    /// Read the used-ring entries the driver has not seen yet, starting at
    /// `self.last_used`, up to `used->idx` (both wrap at 65536).
    fn unread_used(&self) -> Result<Vec<(u32, u32)>, String> {
        let (_, _, used) = layout(self.size);
        fence(Ordering::SeqCst);
        let idx = self.read_u16(used + 2)?;
        fence(Ordering::SeqCst);
        let count = idx.wrapping_sub(self.last_used);
        if count > self.size {
            return Err(format!(
                "used index moved {count} entries past the driver's, more than the queue size {}",
                self.size
            ));
        }
        (0..count)
            .map(|k| {
                let slot = self.last_used.wrapping_add(k) % self.size;
                let at = used + 4 + 8 * u64::from(slot);
                let id = u32::from_le(self.read_obj(at)?);
                let len = u32::from_le(self.read_obj(at + 4)?);
                Ok((id, len))
            })
            .collect()
    }

    /// Move new used entries to `pending` and return their descriptors to the
    /// free list.
    fn reclaim(&mut self) -> Result<(), String> {
        for (id, len) in self.unread_used()? {
            let head = u16::try_from(id)
                .ok()
                .filter(|h| self.in_flight.contains_key(h))
                .ok_or_else(|| format!("device used id {id}, which is not in flight"))?;
            if let Some(descs) = self.in_flight.remove(&head) {
                self.free.extend(descs);
            }
            self.pending.push((id, len));
            self.last_used = self.last_used.wrapping_add(1);
        }
        Ok(())
    }

    /// Take every chain the device has used since the last call, as
    /// (head, len), and free their descriptors. With EVENT_IDX the driver
    /// then asks to be notified of the next used buffer (`used_event`, 2.7.10).
    pub fn take_used(&mut self) -> Result<Vec<(u32, u32)>, String> {
        self.reclaim()?;
        if self.event_idx {
            let (_, avail, _) = layout(self.size);
            self.write(avail + 4 + 2 * u64::from(self.size), self.last_used.to_le())?;
            fence(Ordering::SeqCst);
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Every used-ring entry not yet taken with [`Self::take_used`], as
    /// (head, len), without taking them (for a test that never calls
    /// `take_used`: every entry so far).
    pub fn used(&self) -> Result<Vec<(u32, u32)>, String> {
        let mut all = self.pending.clone();
        all.extend(self.unread_used()?);
        Ok(all)
    }

    /// Descriptors not part of any posted chain (as of the last read of the
    /// used ring).
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Chains posted and not yet seen in the used ring.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
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

    /// The `avail_event` word the device publishes with EVENT_IDX.
    pub fn avail_event(&self) -> Result<u16, String> {
        let (_, _, used) = layout(self.size);
        self.read_u16(used + 4 + 8 * u64::from(self.size))
    }

    /// The used ring's `flags` word (bit 0: `VRING_USED_F_NO_NOTIFY`).
    pub fn used_flags(&self) -> Result<u16, String> {
        let (_, _, used) = layout(self.size);
        self.read_u16(used)
    }

    /// The avail index the driver publishes next.
    pub fn avail_index(&self) -> u16 {
        self.avail_idx
    }

    /// Whether a driver that has just made the chains since avail index
    /// `old` available must kick (virtio 1.3, 2.7.10: `avail_event` with
    /// EVENT_IDX, else `VRING_USED_F_NO_NOTIFY`), after a full fence.
    pub fn needs_kick(&self, old: u16) -> Result<bool, String> {
        fence(Ordering::SeqCst);
        if self.event_idx {
            let event = self.avail_event()?;
            let new = self.avail_idx;
            Ok(new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old))
        } else {
            Ok(self.used_flags()? & 1 == 0)
        }
    }

    /// Whether the device signalled the call eventfd since the last check.
    pub fn signalled(&self) -> bool {
        self.call.read().is_ok()
    }

    /// How many times the device signalled the call eventfd since the last
    /// check.
    pub fn signals(&self) -> u64 {
        self.call.read().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{drain, Completion};
    use std::io::Write;

    /// A fake device: fill every writable byte of every available chain and
    /// complete it with the length written; returns how many it completed.
    fn complete_all(q: &TestQueue) -> usize {
        drain(&q.context(), &q.vring, |_, w| {
            let n = w.available_bytes();
            w.write_all(&vec![0x5A; n])?;
            Ok(Completion::Used(u32::try_from(n)?))
        })
        .unwrap()
        .completed
    }

    fn buffers(first: u64, count: u32) -> Vec<Buf> {
        (0..u64::from(count))
            .map(|k| (first + 0x100 * k, 8, true))
            .collect()
    }

    #[test]
    fn four_entry_queue_survives_more_than_65536_cycles_of_avail_and_used_index() {
        for event_idx in [false, true] {
            let mut q = TestQueue::new(4, event_idx).unwrap();
            // Two chains per cycle, of 1 or 2 descriptors each, so free-list
            // indices end up in every order; 33 000 cycles = 66 000 chains.
            for cycle in 0..33_000u32 {
                let a_len = 1 + cycle % 2;
                let b_len = 1 + (cycle / 3) % 2;
                let a = q.add(&buffers(BUFFERS, a_len)).unwrap();
                let b = q.add(&buffers(BUFFERS + 0x1000, b_len)).unwrap();

                assert_eq!(complete_all(&q), 2, "cycle {cycle}");
                let used = q.take_used().unwrap();

                assert_eq!(
                    used,
                    vec![(u32::from(a), 8 * a_len), (u32::from(b), 8 * b_len)],
                    "cycle {cycle}, event_idx {event_idx}"
                );
                assert_eq!((q.free_descriptors(), q.in_flight()), (4, 0));
            }
            let (_, avail, used) = layout(4);
            let chains = (33_000u32 * 2) % 65536;
            assert_eq!(u32::from(q.read_u16(avail + 2).unwrap()), chains);
            assert_eq!(u32::from(q.read_u16(used + 2).unwrap()), chains);
        }
    }

    #[test]
    fn full_queue_refuses_a_chain_instead_of_reusing_in_flight_descriptors() {
        let mut q = TestQueue::new(4, false).unwrap();
        let heads: Vec<u16> = (0..4)
            .map(|k| q.add(&[(BUFFERS + 0x100 * k, 8, true)]).unwrap())
            .collect();

        let refused = q.add(&[(BUFFERS, 8, true)]);

        assert!(refused.unwrap_err().contains("queue full"));
        let mut sorted = heads.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "duplicate heads {heads:?}");
    }

    #[test]
    fn descriptors_of_used_chains_are_recycled_by_add() {
        let mut q = TestQueue::new(4, false).unwrap();
        let first: Vec<u16> = (0..4)
            .map(|_| q.add(&[(BUFFERS, 8, true)]).unwrap())
            .collect();
        complete_all(&q);

        let second: Vec<u16> = (0..4)
            .map(|_| q.add(&[(BUFFERS, 8, true)]).unwrap())
            .collect();
        complete_all(&q);

        let heads: Vec<u32> = q.take_used().unwrap().iter().map(|u| u.0).collect();
        let expected: Vec<u32> = first.iter().chain(&second).map(|&h| u32::from(h)).collect();
        assert_eq!(heads, expected);
        assert_eq!(q.free_descriptors(), 4);
    }

    #[test]
    fn chain_longer_than_the_queue_is_refused() {
        let mut q = TestQueue::new(4, false).unwrap();

        let refused = q.add(&buffers(BUFFERS, 5));

        assert!(refused.is_err());
        assert_eq!(q.free_descriptors(), 4);
    }

    #[test]
    fn used_id_that_was_never_posted_is_reported() {
        let mut q = TestQueue::new(4, false).unwrap();
        let (_, _, used) = layout(4);
        q.write(used + 4, 3u32.to_le()).unwrap();
        q.write(used + 2, 1u16.to_le()).unwrap();

        let err = q.take_used().unwrap_err();

        assert!(err.contains("not in flight"), "{err}");
    }
}
