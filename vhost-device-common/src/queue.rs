// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Draining a virtqueue.
//!
//! [`drain`] pops every available descriptor chain, hands the device a
//! virtio-queue [`Reader`] over its device-readable part and a [`Writer`] over its
//! device-writable part, and puts the chain on the used ring with the length the
//! device reports. Devices never see descriptors: the driver may split a buffer
//! over any number of descriptors, direct or indirect.
//!
//! With `VIRTIO_RING_F_EVENT_IDX` (virtio 1.3, 2.7.10 "Used Buffer Notification
//! Suppression" and 2.7.7.1) the device must re-check the ring after publishing
//! its avail event, or a buffer added in between would never be seen; `drain`
//! loops until `enable_notification` reports nothing new.
//!
//! A chain whose buffers lie outside guest memory is a guest error: it is logged
//! (rate-limited) and completed with used length 0, and draining goes on.

use vhost_user_backend::bitmap::BitmapMmapRegion;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

use crate::error::{GuestErrorLog, HostError};

/// The dirty-page bitmap every guest memory region carries: vhost-user-backend
/// points it at the front end's log (`SET_LOG_BASE`) during live migration, so
/// every write through vm-memory (used ring, `Writer`) is logged.
pub type Bitmap = BitmapMmapRegion;
/// The guest memory type shared by all daemons.
pub type GuestMemory = GuestMemoryMmap<Bitmap>;
/// A virtio-queue `Reader` over [`GuestMemory`] (reads are not logged).
pub type Reader<'a> = virtio_queue::Reader<'a, Bitmap>;
/// A virtio-queue `Writer` over [`GuestMemory`]: every write it makes is logged
/// in the dirty bitmap while the front end migrates.
pub type Writer<'a> = virtio_queue::Writer<'a, Bitmap>;
/// The vring type shared by all daemons.
pub type Vring = VringRwLock<GuestMemoryAtomic<GuestMemory>>;

/// What the device did with one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Put the chain on the used ring with this many bytes written.
    Used(u32),
    /// Leave the chain (and every later one) on the avail ring for now; the device
    /// will drain the queue again when it can make progress (for example when a
    /// rate-limit timer fires).
    Stop,
}

/// Everything a device needs to drain its queues.
pub struct QueueContext<'a> {
    /// Current guest memory.
    pub mem: &'a GuestMemoryAtomic<GuestMemory>,
    /// Whether `VIRTIO_RING_F_EVENT_IDX` was negotiated.
    pub event_idx: bool,
    /// Where guest errors are logged.
    pub log: &'a GuestErrorLog,
    /// The vrings of the current worker thread, indexed by queue number
    /// (`None` for queues another worker serves), for devices whose queues
    /// depend on each other (vsock answers on `rx` what arrives on `tx`).
    pub vrings: &'a [Option<&'a Vring>],
}

impl std::fmt::Debug for QueueContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueContext")
            .field("event_idx", &self.event_idx)
            .field("vrings", &self.vrings.len())
            .finish()
    }
}

/// What one [`drain`] call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainStats {
    /// Chains put on the used ring.
    pub completed: usize,
    /// Whether the device asked to stop with chains still pending.
    pub stopped: bool,
}

/// Process all available chains of `vring` with `handle`.
///
/// `handle` returns [`Completion`] for a chain, or a host error that ends the
/// worker. Guest errors must be handled inside `handle` (answer with the
/// device's status and return `Completion::Used`).
pub fn drain<F>(
    ctx: &QueueContext<'_>,
    vring: &Vring,
    mut handle: F,
) -> Result<DrainStats, HostError>
where
    F: FnMut(&mut Reader<'_>, &mut Writer<'_>) -> Result<Completion, HostError>,
{
    let mem = ctx.mem.memory();
    let mut stats = DrainStats::default();
    let mut state = vring.get_mut();
    // A queue the front end never set up (QEMU keeps vsock's event queue to
    // itself, for example) has no rings to read: nothing to do.
    if !state.get_queue().ready() {
        return Ok(stats);
    }

    'outer: loop {
        if ctx.event_idx {
            if let Err(e) = state.disable_notification() {
                ctx.log.warn("cannot update the ring", &e);
                break;
            }
        }
        while let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) {
            let head = chain.head_index();
            let completion = match (Reader::new(&*mem, chain.clone()), Writer::new(&*mem, chain)) {
                (Ok(mut reader), Ok(mut writer)) => handle(&mut reader, &mut writer)?,
                (Err(e), _) | (_, Err(e)) => {
                    ctx.log.warn("malformed descriptor chain", &e);
                    Completion::Used(0)
                }
            };
            match completion {
                Completion::Used(len) => {
                    if let Err(e) = state.add_used(head, len) {
                        ctx.log.warn("cannot write the used ring", &e);
                        break 'outer;
                    }
                    stats.completed += 1;
                }
                Completion::Stop => {
                    state.get_queue_mut().go_to_previous_position();
                    stats.stopped = true;
                    break 'outer;
                }
            }
        }
        if !ctx.event_idx {
            break;
        }
        match state.enable_notification() {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                ctx.log.warn("cannot update the ring", &e);
                break;
            }
        }
    }

    if stats.completed > 0 {
        let notify = match state.needs_notification() {
            Ok(n) => n,
            Err(e) => {
                ctx.log.warn("cannot read the used event", &e);
                true
            }
        };
        if notify {
            state.signal_used_queue()?;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestQueue, BUFFERS, MEM_SIZE};
    use std::io::Write;

    fn write_all(w: &mut Writer<'_>, byte: u8) -> Result<Completion, HostError> {
        let n = w.available_bytes();
        w.write_all(&vec![byte; n])?;
        Ok(Completion::Used(u32::try_from(n)?))
    }

    #[test]
    fn every_chain_is_completed_with_the_reported_length() {
        let mut q = TestQueue::new(16, false).unwrap();
        let a = q.add(&[(BUFFERS, 100, true)]).unwrap();
        let b = q
            .add(&[(BUFFERS + 0x1000, 10, true), (BUFFERS + 0x2000, 20, true)])
            .unwrap();

        let stats = drain(&q.context(), &q.vring, |_, w| write_all(w, 0xAB)).unwrap();

        assert_eq!(stats.completed, 2);
        assert_eq!(
            q.used().unwrap(),
            vec![(u32::from(a), 100), (u32::from(b), 30)]
        );
        assert_eq!(q.read(BUFFERS + 0x2000, 20).unwrap(), vec![0xAB; 20]);
        assert!(q.signalled());
    }

    #[test]
    fn chain_outside_memory_is_completed_empty_and_draining_continues() {
        let mut q = TestQueue::new(16, false).unwrap();
        q.add(&[(MEM_SIZE + 0x1000, 64, true)]).unwrap();
        q.add(&[(BUFFERS, 8, true)]).unwrap();
        let mut calls = 0;

        drain(&q.context(), &q.vring, |_, w| {
            calls += 1;
            write_all(w, 1)
        })
        .unwrap();

        assert_eq!(calls, 1, "the handler must not see the malformed chain");
        let lens: Vec<u32> = q.used().unwrap().iter().map(|u| u.1).collect();
        assert_eq!(lens, vec![0, 8]);
    }

    #[test]
    fn stop_leaves_the_chain_for_the_next_drain() {
        let mut q = TestQueue::new(16, false).unwrap();
        q.add(&[(BUFFERS, 8, true)]).unwrap();

        let stats = drain(&q.context(), &q.vring, |_, _| Ok(Completion::Stop)).unwrap();
        assert!(stats.stopped);
        assert!(q.used().unwrap().is_empty());
        assert!(!q.signalled());

        let stats = drain(&q.context(), &q.vring, |_, w| write_all(w, 2)).unwrap();
        assert_eq!(stats.completed, 1);
        assert_eq!(q.used().unwrap().len(), 1);
    }

    #[test]
    fn event_idx_publishes_the_next_avail_index() {
        let mut q = TestQueue::new(16, true).unwrap();
        for i in 0..3 {
            q.add(&[(BUFFERS + i * 0x100, 8, true)]).unwrap();
        }

        drain(&q.context(), &q.vring, |_, w| write_all(w, 3)).unwrap();

        // The driver must kick for the 4th buffer: avail_event == 3.
        assert_eq!(q.avail_event().unwrap(), 3);
        assert_eq!(q.used().unwrap().len(), 3);
    }

    #[test]
    fn host_error_from_the_handler_is_returned() {
        let mut q = TestQueue::new(16, false).unwrap();
        q.add(&[(BUFFERS, 8, true)]).unwrap();

        let result = drain(&q.context(), &q.vring, |_, _| Err("disk on fire".into()));

        assert_eq!(result.unwrap_err().to_string(), "disk on fire");
    }

    #[test]
    fn queue_that_is_not_ready_is_left_alone() {
        let mut q = TestQueue::new(16, true).unwrap();
        q.add(&[(BUFFERS, 8, true)]).unwrap();
        q.vring.set_queue_ready(false);

        let stats = drain(&q.context(), &q.vring, |_, w| write_all(w, 1)).unwrap();

        assert_eq!(stats, DrainStats::default());
        assert!(q.used().unwrap().is_empty());
    }

    #[test]
    fn empty_queue_does_not_signal() {
        let q = TestQueue::new(16, false).unwrap();
        let stats = drain(&q.context(), &q.vring, |_, w| write_all(w, 0)).unwrap();
        assert_eq!(stats.completed, 0);
        assert!(!q.signalled());
    }
}
