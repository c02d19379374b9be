// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device trait and its vhost-user adapter.
//!
//! A device crate implements [`VirtioDevice`]: its queues, features, config space,
//! and what to do when a queue is kicked or one of its host fds fires. The
//! [`DeviceBackend`] adapter turns it into a `vhost_user_backend::VhostUserBackend`
//! and supplies, once for every daemon:
//!
//! - the transport features every device offers (`VIRTIO_F_VERSION_1`,
//!   `VIRTIO_RING_F_EVENT_IDX`, `VIRTIO_RING_F_INDIRECT_DESC`,
//!   `VHOST_USER_F_PROTOCOL_FEATURES`) and the protocol features the library
//!   implements (`MQ`, `REPLY_ACK`, `CONFIGURE_MEM_SLOTS`, `CONFIG` when the
//!   device has a config space);
//! - a per-worker exit event, so each connection's workers end with it;
//! - bounds-checked `GET_CONFIG`/`SET_CONFIG`;
//! - the split between guest and host errors: any `Err` a device returns is a
//!   host failure; it is logged, the connection is closed and the daemon exits
//!   with that error ([`DeviceBackend::take_fatal`]).
//!
//! The adapter is built fresh for every front-end connection, so no device state
//! survives a disconnect.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserProtocolFeatures,
    VhostUserVirtioFeatures,
};
use vhost::vhost_user::Backend;
use vhost_user_backend::{ShutdownHandle, VhostUserBackend};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::GuestMemoryAtomic;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::config_space::{self, ConfigError};
use crate::error::{report, GuestErrorLog, HostError};
use crate::events::HostEvents;
use crate::queue::{GuestMemory, QueueContext, Vring};

/// Feature bits every device offers, on top of its own.
pub const TRANSPORT_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    | VhostUserVirtioFeatures::LOG_ALL.bits();

/// A virtio device served by a vhost-device daemon.
///
/// Methods take `&self`: a device with several worker threads keeps per-queue
/// locks inside; a simple device keeps one `Mutex` around its state.
pub trait VirtioDevice: Send + Sync + 'static {
    /// Number of virtqueues.
    fn num_queues(&self) -> usize;

    /// Largest queue size the device accepts.
    fn max_queue_size(&self) -> usize {
        1024
    }

    /// Device-specific feature bits (the transport bits are added by the adapter).
    fn features(&self) -> u64 {
        0
    }

    /// Extra vhost-user protocol features the device implements.
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::empty()
    }

    /// The front end acknowledged these features.
    fn acked_features(&self, _features: u64) {}

    /// The whole config space as the guest sees it (empty: no config space).
    fn config(&self) -> Vec<u8> {
        Vec::new()
    }

    /// A config-space write from the driver; refuse what is read-only.
    fn write_config(&self, offset: u32, data: &[u8]) -> Result<(), ConfigError> {
        Err(ConfigError::ReadOnly {
            offset,
            end: offset as usize + data.len(),
        })
    }

    /// Which queues each worker thread serves (bit `q` of entry `t` set: thread
    /// `t` serves queue `q`). Default: one thread serves all queues.
    fn queues_per_thread(&self) -> Vec<u64> {
        let n = self.num_queues().min(64);
        vec![if n == 64 { u64::MAX } else { (1u64 << n) - 1 }]
    }

    /// Called once per connection, before the front end is accepted, to put
    /// the device's host fds into the worker epolls.
    fn attach(&self, _events: HostEvents) -> io::Result<()> {
        Ok(())
    }

    /// Queue `queue` was kicked: drain it with [`crate::queue::drain`].
    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError>;

    /// A host fd registered under `token` fired. `vrings` are the vrings of the
    /// worker thread that owns the fd, indexed by global queue number where
    /// present (see [`DeviceBackend`]).
    fn host_event(
        &self,
        _ctx: &QueueContext<'_>,
        _token: u16,
        _events: EventSet,
        _vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        Ok(())
    }

    /// The backend-request channel, when `BACKEND_REQ` was negotiated.
    fn set_backend_req_fd(&self, _backend: Backend) {}

    /// The front end stops `queue` (`GET_VRING_BASE`): finish in-flight work.
    fn stop_vring(&self, _queue: usize) -> io::Result<()> {
        Ok(())
    }

    /// The front end reset the device.
    fn reset(&self) {}

    /// Device-state transfer (`VHOST_USER_PROTOCOL_F_DEVICE_STATE`).
    fn set_device_state_fd(
        &self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _file: File,
    ) -> io::Result<Option<File>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "device state transfer is not supported by this device",
        ))
    }

    /// Result of the last device-state transfer.
    fn check_device_state(&self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "device state transfer is not supported by this device",
        ))
    }
}

/// The vhost-user backend for one connection to one device.
pub struct DeviceBackend<D: VirtioDevice> {
    device: D,
    mem: GuestMemoryAtomic<GuestMemory>,
    masks: Vec<u64>,
    /// Queue numbers served by each worker, in the order of its vrings
    /// (derived from `masks` once, not on every event).
    thread_queues: Vec<Vec<usize>>,
    event_idx: AtomicBool,
    log: GuestErrorLog,
    fatal: Mutex<Option<HostError>>,
    shutdown: OnceLock<ShutdownHandle>,
    exit_consumers: Mutex<Vec<RawFd>>,
}

impl<D: VirtioDevice> DeviceBackend<D> {
    /// Wrap `device`, sharing `mem` with the vhost-user daemon.
    pub fn new(device: D, name: &str, mem: GuestMemoryAtomic<GuestMemory>) -> Self {
        let masks = device.queues_per_thread();
        let thread_queues = masks
            .iter()
            .map(|&mask| (0..64).filter(|q| mask & (1u64 << q) != 0).collect())
            .collect();
        Self {
            device,
            mem,
            masks,
            thread_queues,
            event_idx: AtomicBool::new(false),
            log: GuestErrorLog::new(name),
            fatal: Mutex::new(None),
            shutdown: OnceLock::new(),
            exit_consumers: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Remember how to close this connection when the device fails.
    pub fn set_shutdown_handle(&self, handle: ShutdownHandle) {
        let _ = self.shutdown.set(handle);
    }

    /// The host error that ended this connection, if any.
    pub fn take_fatal(&self) -> Option<HostError> {
        crate::lock(&self.fatal).take()
    }

    /// Close the workers' exit-event descriptors.
    ///
    /// vhost-user-backend 0.24 takes the consumer returned by `exit_event` with
    /// `into_raw_fd()` and never closes it, which would leak one descriptor per
    /// worker and connection. Call this only after the `VhostUserDaemon` that
    /// used this backend has been dropped (its workers are joined then).
    pub fn release_exit_events(&self) {
        let fds = std::mem::take(&mut *crate::lock(&self.exit_consumers));
        for fd in fds {
            // SAFETY: `fd` is the consumer end created in `exit_event`, whose
            // ownership the library released with `into_raw_fd()` right after the
            // call (VringEpollHandler::new) and never reclaims; the worker using it
            // has been joined, so nothing else refers to this descriptor.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    fn context<'a>(&'a self, vrings: &'a [Option<&'a Vring>]) -> QueueContext<'a> {
        QueueContext {
            mem: &self.mem,
            event_idx: self.event_idx.load(Ordering::Acquire),
            log: &self.log,
            vrings,
        }
    }

    fn fail(&self, err: HostError) -> io::Error {
        let text = report(&*err);
        log::error!("device failed: {text}");
        *crate::lock(&self.fatal) = Some(err);
        if let Some(handle) = self.shutdown.get() {
            handle.shutdown();
        }
        io::Error::other(text)
    }
}

impl<D: VirtioDevice> VhostUserBackend for DeviceBackend<D> {
    type Bitmap = crate::queue::Bitmap;
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        self.device.num_queues()
    }

    fn max_queue_size(&self) -> usize {
        self.device.max_queue_size()
    }

    fn features(&self) -> u64 {
        self.device.features() | TRANSPORT_FEATURES
    }

    fn acked_features(&self, features: u64) {
        self.device.acked_features(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        let mut f = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::LOG_SHMFD
            | self.device.protocol_features();
        if !self.device.config().is_empty() {
            f |= VhostUserProtocolFeatures::CONFIG;
        }
        f
    }

    fn reset_device(&self) {
        self.device.reset();
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Release);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        match config_space::read(&self.device.config(), offset, size) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.log.warn("config read refused", &e);
                Vec::new()
            }
        }
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // A refused write leaves the field unchanged (the driver sees that on
        // read-back). It must not be an error here: vhost-user-backend ends the
        // whole connection on any request error.
        if let Err(e) = self.device.write_config(offset, buf) {
            self.log.warn("config write refused", &e);
        }
        Ok(())
    }

    fn update_memory(&self, _mem: GuestMemoryAtomic<GuestMemory>) -> io::Result<()> {
        // `self.mem` is the same atomic the daemon updates.
        Ok(())
    }

    fn set_backend_req_fd(&self, backend: Backend) {
        self.device.set_backend_req_fd(backend);
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        self.masks.clone()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::CLOEXEC) {
            Ok(pair) => {
                crate::lock(&self.exit_consumers).push(pair.0.as_raw_fd());
                Some(pair)
            }
            Err(e) => {
                log::error!("cannot create a worker exit event: {e}");
                None
            }
        }
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        self.device.stop_vring(queue_index as usize)
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        let queues = self
            .thread_queues
            .get(thread_id)
            .map_or(&[][..], Vec::as_slice);
        let num_queues = self.device.num_queues();
        let mut by_queue: Vec<Option<&Vring>> = vec![None; num_queues];
        for (i, &q) in queues.iter().enumerate() {
            if let (Some(slot), Some(v)) = (by_queue.get_mut(q), vrings.get(i)) {
                *slot = Some(v);
            }
        }
        let ctx = self.context(&by_queue);
        // Queue events carry the queue's position among this worker's vrings
        // (vhost-user-backend registers kicks that way), not its number.
        let result = if usize::from(device_event) < num_queues {
            let local = usize::from(device_event);
            match (queues.get(local), vrings.get(local)) {
                (Some(&queue), Some(vring)) => self.device.process_queue(&ctx, queue, vring),
                _ => Ok(()),
            }
        } else if let Some(token) = HostEvents::token_of(num_queues, device_event) {
            self.device.host_event(&ctx, token, evset, &by_queue)
        } else {
            Ok(())
        };
        result.map_err(|e| self.fail(e))
    }

    fn set_device_state_fd(
        &self,
        direction: VhostTransferStateDirection,
        phase: VhostTransferStatePhase,
        file: File,
    ) -> io::Result<Option<File>> {
        self.device.set_device_state_fd(direction, phase, file)
    }

    fn check_device_state(&self) -> io::Result<()> {
        self.device.check_device_state()
    }
}
