// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The io_uring engine: many I/Os in flight per request queue, straight
//! between the image and guest memory.
//!
//! Each request queue has its own ring, whose completions signal an eventfd
//! that sits in that queue's worker epoll. An I/O lives in a *slot* from
//! [`Uring::prepare`] to its completion in [`Uring::reap`]; the slot owns
//! the chain's [`ChainBuffers`] (which keep the guest memory mapped) and the
//! iovec array the kernel reads, so both outlive the I/O. A write with FUA
//! is a `WRITEV` linked to an `FSYNC(DATASYNC)`; SYNCHRONIZE CACHE an
//! `FSYNC` alone. Slots and iovec arrays are reused: no allocation per
//! request once the queue has reached its depth.
//!
//! Slot states: *free* → [`Uring::prepare`] (iovecs built; the device then
//! holds the chain) → [`Uring::launch`] (entries queued, sent by
//! [`Uring::submit`]) → every completion reaped → *free*.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use io_uring::{opcode, squeue, types, IoUring};
use nix::sys::eventfd::{EfdFlags, EventFd};
use vhost_device_common::queue::{ChainBuffers, Part};

use super::linux::{iovecs, IOV_MAX};
use crate::request::cdb::{Io, IoOp};

/// Submission queue entries per ring (two per request at most, for a queue
/// of up to 1024 entries; the completion queue is twice as large).
const ENTRIES: u32 = 1024;

/// What one finished I/O reports to [`Uring::reap`]'s callback.
#[derive(Debug)]
pub struct Finished<'a, T> {
    /// The device's token given to [`Uring::launch`].
    pub token: T,
    /// The chain's buffers (for the dirty log and a resumed short transfer).
    pub bufs: &'a ChainBuffers,
    /// Bytes moved by the transfer, or its error (`Ok(0)` for a flush).
    pub transfer: io::Result<usize>,
    /// The flush's result, if one was asked for.
    pub flush: Option<io::Result<()>>,
}

/// A slot's iovec array.
#[derive(Debug, Default)]
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the pointers point into guest memory that the same slot's
// `ChainBuffers` keeps mapped, in this process; which thread hands them to
// the kernel does not matter.
unsafe impl Send for IoVecs {}

#[derive(Debug)]
struct Slot<T> {
    bufs: ChainBuffers,
    iov: IoVecs,
    token: Option<T>,
    outstanding: u8,
    transfer: Option<io::Result<usize>>,
    flush: Option<io::Result<()>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            bufs: ChainBuffers::default(),
            iov: IoVecs::default(),
            token: None,
            outstanding: 0,
            transfer: None,
            flush: None,
        }
    }
}

/// An I/O whose slot is ready (see [`Uring::prepare`]).
#[derive(Debug)]
#[must_use]
pub struct Prepared(usize);

/// One request queue's ring.
pub struct Uring<T> {
    ring: IoUring,
    efd: EventFd,
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    in_flight: usize,
}

impl<T> std::fmt::Debug for Uring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

/// Entries queued before they go to the kernel while a drain still finds
/// requests: one `io_uring_enter` per batch, and the disk starts on the
/// first requests of a full queue while the daemon prepares the rest
/// (submitting all 32 of a queue at the end of the drain left the disk idle
/// meanwhile, and kept the whole queue in lockstep).
const SUBMIT_BATCH: usize = 4;

/// Whether the kernel lets this process use io_uring.
pub fn available() -> bool {
    IoUring::new(2).is_ok()
}

fn result(res: i32) -> io::Result<usize> {
    usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res))
}

impl<T> Uring<T> {
    /// A ring whose completions signal an eventfd.
    pub fn new() -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(2 * ENTRIES)
            .build(ENTRIES)?;
        let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        // Completions done inside the submission signal it too; the caller
        // reaps them at once and `reap` reads the eventfd first, so they
        // cost no extra wake-up.
        ring.submitter().register_eventfd(efd.as_fd().as_raw_fd())?;
        Ok(Self {
            ring,
            efd,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
        })
    }

    /// The eventfd the kernel signals on completions (for the worker epoll).
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }

    /// I/Os in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Get a slot ready for `io`: `fill` puts the chain's buffers in place,
    /// then the iovecs for the data at `skip` are built. `None` (nothing
    /// kept) when the buffers do not meet `align` for `O_DIRECT` or need
    /// more iovecs than one call takes: the caller does that I/O itself.
    pub fn prepare(
        &mut self,
        io: &Io,
        skip: usize,
        align: usize,
        fill: impl FnOnce(&mut ChainBuffers) -> io::Result<()>,
    ) -> io::Result<Option<Prepared>> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return Ok(None);
        };
        let built = fill(&mut slot.bufs).and_then(|()| {
            let part = match io.op {
                IoOp::Read => Part::Writable,
                _ => Part::Readable,
            };
            if io.op == IoOp::Flush {
                slot.iov.0.clear();
                return Ok(true);
            }
            iovecs(&slot.bufs, part, skip, io.len, align, &mut slot.iov.0)
                .map(|aligned| aligned && slot.iov.0.len() <= IOV_MAX)
        });
        match built {
            Ok(true) => Ok(Some(Prepared(index))),
            Ok(false) => {
                slot.bufs.clear();
                self.free.push(index);
                Ok(None)
            }
            Err(e) => {
                slot.bufs.clear();
                self.free.push(index);
                Err(e)
            }
        }
    }

    /// Queue a prepared I/O on `fd` (sent by [`Self::submit`]): the
    /// transfer, then, with `flush`, an `fdatasync` linked to it.
    pub fn launch(
        &mut self,
        prepared: Prepared,
        fd: BorrowedFd<'_>,
        io: &Io,
        flush: bool,
        token: T,
    ) -> io::Result<()> {
        let index = prepared.0;
        let user = |op: u64| (index as u64) << 1 | op;
        let fd = types::Fd(fd.as_raw_fd());
        let mut entries: [Option<squeue::Entry>; 2] = [None, None];
        let Some(slot) = self.slots.get_mut(index) else {
            return Err(io::Error::other("no such slot"));
        };
        let iov_len = u32::try_from(slot.iov.0.len()).unwrap_or(u32::MAX);
        entries[0] = match io.op {
            IoOp::Read => Some(
                opcode::Readv::new(fd, slot.iov.0.as_ptr(), iov_len)
                    .offset(io.offset)
                    .build()
                    .user_data(user(0)),
            ),
            IoOp::Write { .. } => Some(
                opcode::Writev::new(fd, slot.iov.0.as_ptr(), iov_len)
                    .offset(io.offset)
                    .build()
                    .user_data(user(0)),
            ),
            IoOp::Flush => None,
        };
        // A flush op always flushes; a FUA write only when `flush` says so.
        let want_flush = io.op == IoOp::Flush || (flush && io.op.flushes());
        if want_flush {
            if let Some(first) = entries[0].take() {
                entries[0] = Some(first.flags(squeue::Flags::IO_LINK));
            }
            entries[1] = Some(
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(user(1)),
            );
        }
        slot.outstanding = u8::from(entries[0].is_some()) + u8::from(want_flush);
        slot.transfer = (io.op == IoOp::Flush).then_some(Ok(0));
        slot.flush = None;
        slot.token = Some(token);
        let needed = entries.iter().flatten().count();
        let (len, capacity) = {
            let sq = self.ring.submission();
            (sq.len(), sq.capacity())
        };
        if capacity - len < needed {
            self.ring.submit()?;
        }
        for entry in entries.iter().flatten() {
            // SAFETY: the entries point at the slot's iovec array and,
            // through it, at guest memory the slot's `ChainBuffers` keeps
            // mapped; the slot is neither reused nor dropped until every
            // completion of these entries was reaped (`outstanding`), and
            // `Drop` waits for them.
            unsafe { self.ring.submission().push(entry) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        self.in_flight += 1;
        // The device starts on these while the drain prepares the next.
        if self.ring.submission().len() >= SUBMIT_BATCH {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Send every queued entry to the kernel.
    pub fn submit(&mut self) -> io::Result<()> {
        if !self.ring.submission().is_empty() {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Hand every finished I/O to `done` (its slot is free again after).
    /// `signalled`: called for the eventfd's event (always consume it);
    /// otherwise (right after a submission) nothing is done when nothing is
    /// in flight, which saves a system call per batch the page cache served.
    pub fn reap(&mut self, signalled: bool, mut done: impl FnMut(Finished<'_, T>)) {
        if !signalled && self.in_flight == 0 {
            return;
        }
        // Consumed before the completions are read: one posted meanwhile
        // signals again.
        let _ = self.efd.read();
        let Self {
            ring,
            slots,
            free,
            in_flight,
            ..
        } = self;
        for cqe in ring.completion() {
            let (user, res) = (cqe.user_data(), cqe.result());
            let index = usize::try_from(user >> 1).unwrap_or(usize::MAX);
            let Some(slot) = slots.get_mut(index) else {
                continue;
            };
            if user & 1 == 0 {
                slot.transfer = Some(result(res));
            } else {
                slot.flush = Some(result(res).map(|_| ()));
            }
            slot.outstanding = slot.outstanding.saturating_sub(1);
            if slot.outstanding > 0 {
                continue;
            }
            if let Some(token) = slot.token.take() {
                done(Finished {
                    token,
                    bufs: &slot.bufs,
                    transfer: slot
                        .transfer
                        .take()
                        .unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::ECANCELED))),
                    flush: slot.flush.take(),
                });
                *in_flight -= 1;
            }
            slot.bufs.clear();
            free.push(index);
        }
    }

    /// Wait until every I/O in flight finished, handing each to `done`.
    pub fn wait_all(&mut self, mut done: impl FnMut(Finished<'_, T>)) -> io::Result<()> {
        while self.in_flight > 0 {
            self.ring.submit_and_wait(1)?;
            self.reap(true, &mut done);
        }
        Ok(())
    }
}

impl<T> Drop for Uring<T> {
    fn drop(&mut self) {
        // The kernel may still write into guest memory the slots keep
        // mapped: wait for it before they go.
        if let Err(e) = self.wait_all(|_| {}) {
            log::error!("cannot wait for the I/O in flight: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::cdb::{Io, IoOp};
    use std::fs::File;
    use vhost_device_common::queue::{drain_chains, Completion};
    use vhost_device_common::testing::{TestQueue, BUFFERS};

    const READ: Io = Io {
        op: IoOp::Read,
        offset: 512,
        len: 512,
    };

    /// Launch `n` 512-byte reads of `file` into one buffer each, tokens
    /// 0..n, without calling `submit`.
    fn launch_reads(ring: &mut Uring<usize>, q: &mut TestQueue, file: &File, n: usize) {
        for i in 0..n {
            q.add(&[(BUFFERS + i as u64 * 0x1000, 512, true)]).unwrap();
        }
        let mut token = 0;
        drain_chains(&q.context(), 0, &q.vring, |chain| {
            let prepared = ring
                .prepare(&READ, 0, 1, |bufs| chain.buffers(bufs))?
                .ok_or("buffers refused")?;
            ring.launch(prepared, file.as_fd(), &READ, false, token)?;
            token += 1;
            Ok(Completion::Used(0))
        })
        .unwrap();
    }

    fn image() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.img");
        std::fs::write(&path, (0..8u8).flat_map(|b| [b; 512]).collect::<Vec<_>>()).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    #[test]
    fn full_batch_goes_to_the_kernel_before_the_drain_ends() {
        let (_dir, file) = image();
        let mut ring = Uring::new().unwrap();
        let mut q = TestQueue::new(64, false).unwrap();

        launch_reads(&mut ring, &mut q, &file, SUBMIT_BATCH);

        assert_eq!(ring.ring.submission().len(), 0, "batch still queued");
        ring.wait_all(|_| {}).unwrap();
    }

    #[test]
    fn partial_batch_waits_for_submit_and_every_read_completes() {
        let (_dir, file) = image();
        let mut ring = Uring::new().unwrap();
        let mut q = TestQueue::new(64, false).unwrap();
        launch_reads(&mut ring, &mut q, &file, SUBMIT_BATCH - 1);
        assert_eq!(ring.ring.submission().len(), SUBMIT_BATCH - 1);

        ring.submit().unwrap();
        let mut done = Vec::new();
        ring.wait_all(|f| done.push((f.token, f.transfer.unwrap())))
            .unwrap();

        done.sort_unstable();
        let expected: Vec<_> = (0..SUBMIT_BATCH - 1).map(|t| (t, 512)).collect();
        assert_eq!(done, expected);
        assert_eq!(q.read(BUFFERS, 512).unwrap(), vec![1u8; 512]);
    }
}
