// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Commands in flight on the request queues, for task management.
//!
//! A task management function (virtio 1.3, 5.6.6.2) may be answered only
//! when "all requests related to the TMF have been completed": the Linux
//! driver frees or reuses the buffers of the covered commands as soon as the
//! TMF completes. The control queue runs on its own worker while commands
//! run on the request queues' workers, so every command is registered here
//! from the moment its worker takes it off the ring until its completion is
//! on the used ring.
//!
//! States of a TMF that covers commands:
//!
//! 1. *received* — the control worker counts itself as waiting, then takes
//!    the set of covered commands in flight (counting first means a command
//!    that finishes meanwhile sees the waiter and wakes it);
//! 2. *waiting* — the chain is held; each request worker that finishes a
//!    command while anyone waits writes the wake eventfd, which the control
//!    worker polls in its epoll;
//! 3. *answered* — none of the covered commands is left: FUNCTION COMPLETE
//!    (or, for QUERY TASK / QUERY TASK SET, answered at once from the set).
//!
//! Commands the driver made available after the TMF was received are not
//! covered; nothing is aborted early, commands run to completion.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::request::Scope;

/// One command in flight.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    lun: u16,
    tag: u64,
}

/// A command covered by a TMF: its request queue and id.
pub type Covered = (usize, u64);

/// The commands in flight on every request queue.
#[derive(Debug)]
pub struct InFlight {
    queues: Vec<Mutex<Vec<Entry>>>,
    next_id: AtomicU64,
    waiting: AtomicUsize,
    wake: EventFd,
}

impl InFlight {
    /// Nothing in flight on `queues` request queues.
    pub fn new(queues: usize) -> io::Result<Self> {
        Ok(Self {
            queues: (0..queues).map(|_| Mutex::new(Vec::new())).collect(),
            next_id: AtomicU64::new(1),
            waiting: AtomicUsize::new(0),
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
        })
    }

    /// The eventfd written when a command finishes while a TMF waits.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// A command to `lun` with `tag` was taken off request queue `queue`;
    /// returns its id for [`Self::finish`].
    pub fn start(&self, queue: usize, lun: u16, tag: u64) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(q) = self.queues.get(queue) {
            vhost_device_common::lock(q).push(Entry { id, lun, tag });
        }
        id
    }

    /// Command `id` of `queue` is on the used ring.
    pub fn finish(&self, queue: usize, id: u64) {
        if let Some(q) = self.queues.get(queue) {
            let mut q = vhost_device_common::lock(q);
            if let Some(i) = q.iter().position(|e| e.id == id) {
                q.swap_remove(i);
            }
        }
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // A full counter still wakes the control worker.
            let _ = self.wake.write(1);
        }
    }

    /// Count a TMF as waiting (before [`Self::covered`]).
    pub fn wait_begin(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// A waiting TMF was answered.
    pub fn wait_end(&self) {
        let _ = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Consume the wake-ups.
    pub fn clear_wake(&self) {
        let _ = self.wake.read();
    }

    /// The commands in flight that `scope` covers.
    pub fn covered(&self, scope: Scope) -> Vec<Covered> {
        let mut out = Vec::new();
        for (k, q) in self.queues.iter().enumerate() {
            out.extend(
                vhost_device_common::lock(q)
                    .iter()
                    .filter(|e| scope.covers(e.lun, e.tag))
                    .map(|e| (k, e.id)),
            );
        }
        out
    }

    /// Whether any of `covered` is still in flight.
    pub fn any_left(&self, covered: &[Covered]) -> bool {
        covered.iter().any(|&(k, id)| {
            self.queues
                .get(k)
                .is_some_and(|q| vhost_device_common::lock(q).iter().any(|e| e.id == id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_reset_covers_the_luns_commands_on_every_queue() {
        let f = InFlight::new(2).unwrap();
        let a = f.start(0, 1, 10);
        let _other_lun = f.start(0, 2, 11);
        let b = f.start(1, 1, 12);

        let covered = f.covered(Scope::Lun(1));

        assert_eq!(covered, vec![(0, a), (1, b)]);
    }

    #[test]
    fn finished_commands_are_no_longer_covered() {
        let f = InFlight::new(1).unwrap();
        let a = f.start(0, 0, 7);
        let covered = f.covered(Scope::Task { lun: 0, tag: 7 });
        assert!(f.any_left(&covered));

        f.finish(0, a);

        assert!(!f.any_left(&covered));
    }

    #[test]
    fn finishing_while_a_tmf_waits_wakes_the_control_worker() {
        let f = InFlight::new(1).unwrap();
        let a = f.start(0, 0, 7);
        f.wait_begin();

        f.finish(0, a);

        assert_eq!(f.wake_fd().read().unwrap(), 1);
    }
}
