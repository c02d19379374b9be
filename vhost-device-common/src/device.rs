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
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserProtocolFeatures,
    VhostUserShMemConfig, VhostUserVirtioFeatures,
};
use vhost::vhost_user::Backend;
use vhost_user_backend::{ShutdownHandle, VhostUserBackend, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::backend::BackendChannel;
use crate::config_space::{self, ConfigError};
use crate::error::{report, GuestErrorLog, HostError};
use crate::events::HostEvents;
use crate::poll::{PollBatch, WorkerPoll};
use crate::queue::{GuestMemory, HeldHeads, QueueContext, Vring};
use crate::state;

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

    /// The front end stops `queue` (`GET_VRING_BASE`): finish every request
    /// already taken off the ring that is not held. Chains the device holds
    /// stay held (they are saved with the state when the front end migrates);
    /// [`QueueContext::complete`] gives them back while the queue is stopped.
    fn stop_vring(&self, _queue: usize) -> io::Result<()> {
        Ok(())
    }

    /// Like [`Self::stop_vring`], with a context in which the chains of
    /// `queue` that the device holds can still be completed
    /// ([`QueueContext::complete`] works although the ring no longer
    /// runs): for a device whose requests must all be answered before
    /// `GET_VRING_BASE` is (QEMU migrates vhost-user-scsi without a device
    /// state, so a request still held would be lost). Called instead of
    /// `stop_vring` once the queue's worker has seen an event; the default
    /// calls `stop_vring`.
    fn stop_queue(&self, _ctx: &QueueContext<'_>, queue: usize) -> Result<(), HostError> {
        Ok(self.stop_vring(queue)?)
    }

    /// The front end reset the device: drop every held chain and all
    /// per-driver state (the rings are gone).
    fn reset(&self) {}

    /// Sizes of the device's VIRTIO shared memory regions, by shmid
    /// (`GET_SHMEM_CONFIG`); empty when it has none.
    fn shmem_regions(&self) -> Vec<u64> {
        Vec::new()
    }

    /// The device's live-migration state: everything a destination daemon
    /// needs to continue where this one stopped, including the
    /// [`HeldChain`](crate::queue::HeldChain)s
    /// it keeps (they serialize as queue and head). `()` for a device with no
    /// state.
    type State: Serialize + DeserializeOwned + Send + 'static;

    /// Version of [`Self::State`]; bump it whenever the type changes. A
    /// destination refuses a state of another version.
    const STATE_VERSION: u16 = 1;

    /// Save the state. Called with every queue stopped (`GET_VRING_BASE`).
    fn save_state(&self) -> Result<Self::State, HostError>;

    /// Take over a saved state, before the queues start on the destination.
    fn load_state(&self, state: Self::State) -> Result<(), HostError>;
}

/// A state transfer running beside the vhost-user thread.
enum Transfer {
    Save(JoinHandle<io::Result<()>>),
    Load(JoinHandle<io::Result<Vec<u8>>>),
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
    name: String,
    held: HeldHeads,
    backend: BackendChannel,
    transfer: Mutex<Option<Transfer>>,
    /// Each queue's vring, once its worker has seen an event (for
    /// [`VirtioDevice::stop_queue`]).
    vrings: Vec<OnceLock<Vring>>,
    /// Per worker thread, its adaptive polling (empty: `--poll-us 0`).
    polls: Vec<Mutex<WorkerPoll>>,
}

impl<D: VirtioDevice> DeviceBackend<D> {
    /// Wrap `device`, sharing `mem` with the vhost-user daemon.
    pub fn new(device: D, name: &str, mem: GuestMemoryAtomic<GuestMemory>) -> Self {
        let masks = device.queues_per_thread();
        let thread_queues = masks
            .iter()
            .map(|&mask| (0..64).filter(|q| mask & (1u64 << q) != 0).collect())
            .collect();
        let held = HeldHeads::new(device.num_queues());
        let vrings = (0..device.num_queues()).map(|_| OnceLock::new()).collect();
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
            name: name.to_owned(),
            held,
            backend: BackendChannel::new(),
            transfer: Mutex::new(None),
            vrings,
            polls: Vec::new(),
        }
    }

    /// Let each worker poll its rings for up to `max` after it has done work
    /// (see [`crate::poll`]); zero (the default) never polls.
    pub fn with_poll(mut self, max: Duration) -> Self {
        self.polls = if max.is_zero() {
            Vec::new()
        } else {
            self.thread_queues
                .iter()
                .map(|queues| Mutex::new(WorkerPoll::new(max, queues.len())))
                .collect()
        };
        self
    }

    /// Set a polling worker's window as if it had grown to `window`.
    #[cfg(test)]
    fn set_poll_window(&self, thread: usize, window: Duration) {
        if let Some(p) = self.polls.get(thread) {
            let mut p = crate::lock(p);
            p.window = crate::poll::Window::starting_at(window, p.window.max());
        }
    }

    /// Give the polling workers their epoll descriptors (one per worker, in
    /// thread order), so that a window ends as soon as any other event of
    /// the worker is ready. Without them a window runs to its end.
    pub fn watch_epolls(&self, epoll_fds: &[RawFd]) -> io::Result<()> {
        for (poll, &fd) in self.polls.iter().zip(epoll_fds) {
            // SAFETY: the caller passes descriptors of live epoll instances
            // owned by the vring workers; we only borrow them to duplicate.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            crate::lock(poll).set_epoll(borrowed.try_clone_to_owned()?);
        }
        Ok(())
    }

    /// The device's backend-request channel (the daemon wires its
    /// config-change sender here).
    pub fn backend_channel(&self) -> &BackendChannel {
        &self.backend
    }

    /// The chains the device holds, per queue.
    pub fn held(&self) -> &HeldHeads {
        &self.held
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
            held: &self.held,
            backend: &self.backend,
            stopping: false,
            poll: None,
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
            | VhostUserProtocolFeatures::BACKEND_REQ
            | VhostUserProtocolFeatures::SHARED_OBJECT
            | VhostUserProtocolFeatures::DEVICE_STATE
            | self.device.protocol_features();
        if !self.device.config().is_empty() {
            f |= VhostUserProtocolFeatures::CONFIG;
        }
        if !self.device.shmem_regions().is_empty() {
            f |= VhostUserProtocolFeatures::SHMEM;
        }
        f
    }

    fn reset_device(&self) {
        self.device.reset();
        self.held.clear();
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
        self.backend.set_backend(backend);
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        let sizes = self.device.shmem_regions();
        if sizes.len() > 256 {
            return Err(io::Error::other("more than 256 shared memory regions"));
        }
        Ok(VhostUserShMemConfig::new(
            u32::try_from(sizes.len()).unwrap_or(0),
            &sizes,
        ))
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
        let queue = queue_index as usize;
        let Some(vring) = self.vrings.get(queue).and_then(OnceLock::get) else {
            return self.device.stop_vring(queue);
        };
        if !self.polls.is_empty() {
            // Its worker may have been polling it with the driver's
            // notifications suppressed, and will not touch a stopped ring
            // again: hand the ring over (to a migration destination, or to
            // this daemon when it restarts) with notifications on.
            if let Err(e) = vring.get_mut().enable_notification() {
                self.log.warn("cannot update the ring", &e);
            }
        }
        let mut by_queue: Vec<Option<&Vring>> = vec![None; self.device.num_queues()];
        by_queue[queue] = Some(vring);
        let ctx = QueueContext {
            stopping: true,
            ..self.context(&by_queue)
        };
        self.device
            .stop_queue(&ctx, queue)
            .map_err(|e| self.fail(e))
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
                if let Some(stash) = self.vrings.get(q) {
                    let _ = stash.get_or_init(|| v.clone());
                }
            }
        }
        let event = Event {
            id: device_event,
            set: evset,
            queues,
            vrings,
            by_queue: &by_queue,
        };
        let result = match self.polls.get(thread_id) {
            Some(poll) => self.polled_event(&mut crate::lock(poll), &event),
            None => self.dispatch(&self.context(&by_queue), &event),
        };
        result.map_err(|e| self.fail(e))
    }

    fn set_device_state_fd(
        &self,
        direction: VhostTransferStateDirection,
        phase: VhostTransferStatePhase,
        file: File,
    ) -> io::Result<Option<File>> {
        if phase != VhostTransferStatePhase::STOPPED {
            return Err(io::Error::other("only the STOPPED transfer phase exists"));
        }
        let mut slot = crate::lock(&self.transfer);
        if let Some(old) = slot.take() {
            log::warn!("a new state transfer replaces one that was never checked");
            drop(old);
        }
        let thread = thread::Builder::new().name(format!("{}-state", self.name));
        let transfer = match direction {
            VhostTransferStateDirection::SAVE => {
                let blob = self.save_blob().map_err(|e| {
                    let text = report(&*e);
                    log::error!("cannot save the device state: {text}");
                    io::Error::other(text)
                })?;
                log::info!("saving {} bytes of device state", blob.len());
                Transfer::Save(thread.spawn(move || {
                    let mut file = file;
                    file.write_all(&blob)
                })?)
            }
            VhostTransferStateDirection::LOAD => Transfer::Load(thread.spawn(move || {
                let mut blob = Vec::new();
                let limit = u64::try_from(state::MAX_STATE + 1).unwrap_or(u64::MAX);
                file.take(limit).read_to_end(&mut blob)?;
                Ok(blob)
            })?),
        };
        *slot = Some(transfer);
        Ok(None)
    }

    fn check_device_state(&self) -> io::Result<()> {
        let transfer = crate::lock(&self.transfer).take();
        let joined = |e: Box<dyn std::any::Any + Send>| {
            drop(e);
            io::Error::other("the state transfer thread panicked")
        };
        let result = match transfer {
            None => Err(io::Error::other("no device state transfer was started")),
            Some(Transfer::Save(t)) => t.join().map_err(joined).and_then(|r| r),
            Some(Transfer::Load(t)) => t.join().map_err(joined).and_then(|r| r).and_then(|blob| {
                self.load_blob(&blob)
                    .map_err(|e| io::Error::other(report(&*e)))
            }),
        };
        if let Err(e) = &result {
            log::error!("device state transfer failed: {e}");
        }
        result
    }
}

/// One epoll event of a worker, with the worker's vrings.
struct Event<'a> {
    id: u16,
    set: EventSet,
    /// Queue number of each of the worker's vrings.
    queues: &'a [usize],
    vrings: &'a [Vring],
    by_queue: &'a [Option<&'a Vring>],
}

/// Whether the driver made buffers available on `vring` (whose avail index
/// is `avail` now) since the runtime last processed it, when the index was
/// `seen`. A ring the runtime never processed has new buffers when any are
/// not taken yet. Buffers a device leaves on the ring on purpose
/// (`Completion::Stop`, or a queue it serves only on host events) are not
/// new again.
fn posted_since(vring: &Vring, avail: u16, seen: Option<u16>) -> bool {
    match seen {
        Some(seen) => avail != seen,
        None => avail != vring.get_ref().get_queue().next_avail(),
    }
}

/// The avail index of a ring that runs (ready and enabled), else `None`.
fn running_avail(mem: &GuestMemoryAtomic<GuestMemory>, vring: &Vring) -> Option<u16> {
    let state = vring.get_ref();
    if !state.get_queue().ready() || !state.is_enabled() {
        return None;
    }
    state
        .get_queue()
        .avail_idx(&*mem.memory(), Ordering::Acquire)
        .ok()
        .map(|idx| idx.0)
}

impl<D: VirtioDevice> DeviceBackend<D> {
    /// Hand an event to the device.
    fn dispatch(&self, ctx: &QueueContext<'_>, event: &Event<'_>) -> Result<(), HostError> {
        let num_queues = self.device.num_queues();
        // Queue events carry the queue's position among this worker's vrings
        // (vhost-user-backend registers kicks that way), not its number.
        if usize::from(event.id) < num_queues {
            let local = usize::from(event.id);
            match (event.queues.get(local), event.vrings.get(local)) {
                (Some(&queue), Some(vring)) => self.device.process_queue(ctx, queue, vring),
                _ => Ok(()),
            }
        } else if let Some(token) = HostEvents::token_of(num_queues, event.id) {
            self.device
                .host_event(ctx, token, event.set, event.by_queue)
        } else {
            Ok(())
        }
    }

    /// Hand an event to the device on a worker that polls (see
    /// [`crate::poll`]): with the window open, notifications stay
    /// suppressed, and after real work the rings are polled until the window
    /// closes, work stops coming or another event is ready; then
    /// notifications are re-enabled and the rings looked at once more.
    fn polled_event(&self, p: &mut WorkerPoll, event: &Event<'_>) -> Result<(), HostError> {
        p.arrived(Instant::now());
        if p.window.current().is_zero() {
            let result = self.dispatch(&self.context(event.by_queue), event);
            p.idle_since = Some(Instant::now());
            return result;
        }
        // A kicked ring is processed now: what is posted from here on is
        // new to the poll loop and to the last look before sleeping. (The
        // other rings keep the index of their last processing: a request
        // already posted now, whose driver reads the suppression below and
        // does not kick, must still count as new.)
        if let (Some(seen), Some(vring)) = (
            p.seen.get_mut(usize::from(event.id)),
            event.vrings.get(usize::from(event.id)),
        ) {
            if let Some(avail) = running_avail(&self.mem, vring) {
                *seen = Some(avail);
            }
        }
        // Already during the event: a driver answered by a completion here
        // posts its next request at once.
        self.suppress_notifications(event.vrings);
        let batch = PollBatch::default();
        let ctx = QueueContext {
            poll: Some(&batch),
            ..self.context(event.by_queue)
        };
        let mut result = self.dispatch(&ctx, event);
        if batch.work() > 0 {
            p.last_work = Some(Instant::now());
        }
        // Poll after real work, and on an event that follows work within
        // a window (typically the kick of a request the poll already took,
        // sent before the driver saw notifications off), not otherwise.
        if result.is_ok() && p.worked_within_window(Instant::now()) {
            result = self.poll_rings(p, &ctx, &batch, event);
        }
        // Even after a failure (then without serving anything more): never
        // leave a ring with notifications off.
        let resumed = self.resume_notifications(p, event, result.is_ok());
        p.idle_since = Some(Instant::now());
        result.and(resumed)
    }

    /// Serve whatever the driver posts on the worker's rings until the
    /// window passes without work, or another event of the worker is ready.
    fn poll_rings(
        &self,
        p: &mut WorkerPoll,
        ctx: &QueueContext<'_>,
        batch: &PollBatch,
        event: &Event<'_>,
    ) -> Result<(), HostError> {
        let mut now = Instant::now();
        p.idle_since = Some(now);
        let mut deadline = now + p.window.current();
        loop {
            let mut worked = false;
            for (local, vring) in event.vrings.iter().enumerate() {
                let (Some(&queue), Some(&seen)) = (event.queues.get(local), p.seen.get(local))
                else {
                    continue;
                };
                let Some(avail) = running_avail(&self.mem, vring) else {
                    continue;
                };
                if !posted_since(vring, avail, seen) {
                    continue;
                }
                p.arrived(Instant::now());
                if let Some(slot) = p.seen.get_mut(local) {
                    *slot = Some(avail);
                }
                let before = batch.work();
                self.device.process_queue(ctx, queue, vring)?;
                worked |= batch.work() > before;
            }
            now = Instant::now();
            if worked {
                p.last_work = Some(now);
                p.idle_since = Some(now);
                deadline = now + p.window.current();
                continue;
            }
            if now >= deadline || p.events_pending() {
                return Ok(());
            }
            std::hint::spin_loop();
        }
    }

    /// Ask the driver not to kick any running ring of the worker: without
    /// EVENT_IDX, `VRING_USED_F_NO_NOTIFY`; with it, `avail_event` one behind
    /// the next index the device takes, so that no index the driver can
    /// still publish crosses it (virtio 1.3, 2.7.10). The drains while
    /// polling leave both alone; [`Self::resume_notifications`] undoes it.
    fn suppress_notifications(&self, vrings: &[Vring]) {
        let mem = self.mem.memory();
        for vring in vrings {
            let mut state = vring.get_mut();
            let q = state.get_queue();
            if !q.ready() {
                continue;
            }
            let result = if q.event_idx_enabled() {
                let behind = q.next_avail().wrapping_sub(1);
                let at = 4 + 8 * u64::from(q.size());
                match GuestAddress(q.used_ring()).checked_add(at) {
                    Some(addr) => mem
                        .store(behind.to_le(), addr, Ordering::Relaxed)
                        .map_err(virtio_queue::Error::GuestMemory),
                    None => Err(virtio_queue::Error::AddressOverflow),
                }
            } else {
                state.disable_notification()
            };
            if let Err(e) = result {
                self.log.warn("cannot update the ring", &e);
            }
        }
    }

    /// Re-enable the driver's notifications on every running ring of the
    /// worker, then look at each once more: what was posted while they were
    /// suppressed is served now (its kick may never come), if `serve`.
    fn resume_notifications(
        &self,
        p: &mut WorkerPoll,
        event: &Event<'_>,
        serve: bool,
    ) -> Result<(), HostError> {
        let ctx = self.context(event.by_queue);
        for (local, vring) in event.vrings.iter().enumerate() {
            let Some(&queue) = event.queues.get(local) else {
                continue;
            };
            let avail = {
                let mut state = vring.get_mut();
                if !state.get_queue().ready() {
                    continue;
                }
                // Sets avail_event to the next index (EVENT_IDX) or clears
                // VRING_USED_F_NO_NOTIFY, then a full fence.
                if let Err(e) = state.enable_notification() {
                    self.log.warn("cannot update the ring", &e);
                    continue;
                }
                if !state.is_enabled() {
                    continue;
                }
                state
                    .get_queue()
                    .avail_idx(&*self.mem.memory(), Ordering::Acquire)
                    .ok()
                    .map(|idx| idx.0)
            };
            let (Some(avail), Some(seen)) = (avail, p.seen.get_mut(local)) else {
                continue;
            };
            if serve && posted_since(vring, avail, *seen) {
                *seen = Some(avail);
                self.device.process_queue(&ctx, queue, vring)?;
            }
        }
        Ok(())
    }

    fn save_blob(&self) -> Result<Vec<u8>, HostError> {
        let state = self.device.save_state()?;
        Ok(state::encode(
            &self.name,
            D::STATE_VERSION,
            &self.held.snapshot(),
            &state,
        )?)
    }

    fn load_blob(&self, blob: &[u8]) -> Result<(), HostError> {
        let (held, state) = state::decode::<D::State>(&self.name, D::STATE_VERSION, blob)?;
        self.held.restore(&held)?;
        self.device.load_state(state)?;
        log::info!("loaded {} bytes of device state", blob.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use vhost_user_backend::VringT;

    /// A device that reports what the adapter asked of it.
    struct Probe {
        calls: Mutex<mpsc::Sender<String>>,
        fail: bool,
        saved: Mutex<u32>,
    }

    impl VirtioDevice for Probe {
        type State = u32;
        const STATE_VERSION: u16 = 7;

        fn num_queues(&self) -> usize {
            3
        }

        fn queues_per_thread(&self) -> Vec<u64> {
            vec![0b001, 0b110]
        }

        fn process_queue(
            &self,
            _ctx: &QueueContext<'_>,
            queue: usize,
            _vring: &Vring,
        ) -> Result<(), HostError> {
            let _ = crate::lock(&self.calls).send(format!("queue {queue}"));
            if self.fail {
                return Err("disk on fire".into());
            }
            Ok(())
        }

        fn host_event(
            &self,
            _ctx: &QueueContext<'_>,
            token: u16,
            _events: EventSet,
            vrings: &[Option<&Vring>],
        ) -> Result<(), HostError> {
            let present: Vec<usize> = (0..vrings.len()).filter(|&q| vrings[q].is_some()).collect();
            let _ = crate::lock(&self.calls).send(format!("token {token} vrings {present:?}"));
            Ok(())
        }

        fn stop_queue(&self, ctx: &QueueContext<'_>, queue: usize) -> Result<(), HostError> {
            let present = ctx.vrings.get(queue).is_some_and(Option::is_some);
            let _ = crate::lock(&self.calls).send(format!(
                "stop {queue} stopping {} vring {present}",
                ctx.stopping
            ));
            Ok(())
        }

        fn save_state(&self) -> Result<u32, HostError> {
            Ok(*crate::lock(&self.saved))
        }

        fn load_state(&self, state: u32) -> Result<(), HostError> {
            *crate::lock(&self.saved) = state;
            Ok(())
        }
    }

    fn backend(fail: bool, saved: u32) -> (DeviceBackend<Probe>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let mem = GuestMemoryAtomic::new(GuestMemory::new());
        let dev = Probe {
            calls: Mutex::new(tx),
            fail,
            saved: Mutex::new(saved),
        };
        (DeviceBackend::new(dev, "probe", mem), rx)
    }

    fn vrings(b: &DeviceBackend<Probe>, n: usize) -> Vec<Vring> {
        (0..n)
            .map(|_| Vring::new(b.mem.clone(), 16).unwrap())
            .collect()
    }

    #[test]
    fn kick_of_a_second_worker_reaches_the_device_as_its_queue_number() {
        let (b, rx) = backend(false, 0);
        let worker1 = vrings(&b, 2);

        // Worker 1 serves queues 1 and 2; its second vring is queue 2.
        b.handle_event(1, EventSet::IN, &worker1, 1).unwrap();

        assert_eq!(rx.try_recv().unwrap(), "queue 2");
    }

    #[test]
    fn host_event_token_reaches_the_device_with_the_workers_vrings() {
        let (b, rx) = backend(false, 0);
        let worker1 = vrings(&b, 2);
        let id = u16::try_from(b.device().num_queues() + 1 + 5).unwrap();

        b.handle_event(id, EventSet::IN, &worker1, 1).unwrap();

        assert_eq!(rx.try_recv().unwrap(), "token 5 vrings [1, 2]");
    }

    #[test]
    fn stop_of_a_queue_its_worker_served_gets_a_stopping_context_with_its_vring() {
        let (b, rx) = backend(false, 0);
        let worker1 = vrings(&b, 2);
        b.handle_event(1, EventSet::IN, &worker1, 1).unwrap();
        assert_eq!(rx.try_recv().unwrap(), "queue 2");

        VhostUserBackend::stop_vring(&b, 2).unwrap();

        assert_eq!(rx.try_recv().unwrap(), "stop 2 stopping true vring true");
    }

    #[test]
    fn stop_of_a_queue_never_served_calls_stop_vring() {
        let (b, rx) = backend(false, 0);

        VhostUserBackend::stop_vring(&b, 0).unwrap();

        assert!(rx.try_recv().is_err(), "stop_queue called without a vring");
    }

    #[test]
    fn device_failure_fails_the_event_and_is_kept_for_the_daemon_once() {
        let (b, _rx) = backend(true, 0);
        let worker0 = vrings(&b, 1);

        let result = b.handle_event(0, EventSet::IN, &worker0, 0);

        assert!(result.is_err());
        assert_eq!(b.take_fatal().unwrap().to_string(), "disk on fire");
        assert!(b.take_fatal().is_none());
    }

    #[test]
    fn migration_features_are_offered() {
        let (b, _rx) = backend(false, 0);

        assert_ne!(b.features() & VhostUserVirtioFeatures::LOG_ALL.bits(), 0);
        let p = b.protocol_features();
        assert!(p.contains(VhostUserProtocolFeatures::LOG_SHMFD));
        assert!(p.contains(VhostUserProtocolFeatures::DEVICE_STATE));
        assert!(p.contains(VhostUserProtocolFeatures::BACKEND_REQ));
        assert!(
            !p.contains(VhostUserProtocolFeatures::SHMEM),
            "no regions declared"
        );
    }

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        (File::from(r), File::from(w))
    }

    #[test]
    fn state_saved_by_one_backend_loads_into_another_through_pipes() {
        let (a, _ra) = backend(false, 4242);
        let (b, _rb) = backend(false, 0);
        let (mut rd, wr) = pipe();
        assert!(a
            .set_device_state_fd(
                VhostTransferStateDirection::SAVE,
                VhostTransferStatePhase::STOPPED,
                wr
            )
            .unwrap()
            .is_none());
        let mut blob = Vec::new();
        rd.read_to_end(&mut blob).unwrap();
        a.check_device_state().unwrap();
        let (rd, mut wr) = pipe();

        b.set_device_state_fd(
            VhostTransferStateDirection::LOAD,
            VhostTransferStatePhase::STOPPED,
            rd,
        )
        .unwrap();
        wr.write_all(&blob).unwrap();
        drop(wr);
        b.check_device_state().unwrap();

        assert_eq!(*crate::lock(&b.device().saved), 4242);
    }

    #[test]
    fn truncated_state_is_refused_at_check_and_nothing_is_applied() {
        let (b, _rb) = backend(false, 1);
        let (rd, mut wr) = pipe();
        b.set_device_state_fd(
            VhostTransferStateDirection::LOAD,
            VhostTransferStatePhase::STOPPED,
            rd,
        )
        .unwrap();
        wr.write_all(b"VHDSTATE\x01\x00").unwrap();
        drop(wr);

        assert!(b.check_device_state().is_err());
        assert_eq!(*crate::lock(&b.device().saved), 1);
    }

    #[test]
    fn check_without_a_transfer_is_an_error() {
        let (b, _rb) = backend(false, 1);

        assert!(b.check_device_state().is_err());
    }

    mod polling {
        use super::*;
        use crate::queue::{drain_chains, Completion, HeldChain};
        use crate::testing::{TestQueue, BUFFERS};
        use std::collections::VecDeque;
        use std::sync::Arc;

        type Hook = Box<dyn FnOnce(&mut TestQueue) + Send>;

        /// One queue, shared with the test: every chain is answered with
        /// one byte (or held, and completed by any host event). Hooks play
        /// the driver in the middle of an event, after the device's drain.
        struct Echo {
            q: Arc<Mutex<TestQueue>>,
            hold: bool,
            held: Mutex<Vec<HeldChain>>,
            /// Per `process_queue`: whether VRING_USED_F_NO_NOTIFY was set.
            suppressed: Mutex<Vec<bool>>,
            hooks: Mutex<VecDeque<Hook>>,
            /// Fail (a host error) after the next drain.
            fail: AtomicBool,
        }

        impl Echo {
            fn run_hook(&self) {
                let hook = crate::lock(&self.hooks).pop_front();
                if let Some(hook) = hook {
                    hook(&mut crate::lock(&self.q));
                }
            }
        }

        impl VirtioDevice for Echo {
            type State = ();

            fn num_queues(&self) -> usize {
                1
            }

            fn process_queue(
                &self,
                ctx: &QueueContext<'_>,
                _queue: usize,
                vring: &Vring,
            ) -> Result<(), HostError> {
                let flags = crate::lock(&self.q).used_flags()?;
                crate::lock(&self.suppressed).push(flags & 1 == 1);
                let mut held = crate::lock(&self.held);
                drain_chains(ctx, 0, vring, |chain| {
                    if self.hold {
                        held.push(chain.hold());
                        return Ok(Completion::Held);
                    }
                    chain.writer.write_all(&[7])?;
                    Ok(Completion::Used(1))
                })?;
                drop(held);
                self.run_hook();
                if self.fail.swap(false, Ordering::Relaxed) {
                    return Err("disk on fire".into());
                }
                Ok(())
            }

            fn host_event(
                &self,
                ctx: &QueueContext<'_>,
                _token: u16,
                _events: EventSet,
                _vrings: &[Option<&Vring>],
            ) -> Result<(), HostError> {
                let held = std::mem::take(&mut *crate::lock(&self.held));
                for chain in held {
                    ctx.complete(chain, |_, w| {
                        w.write_all(&[9])?;
                        Ok(1)
                    })?;
                }
                self.run_hook();
                Ok(())
            }

            fn save_state(&self) -> Result<(), HostError> {
                Ok(())
            }

            fn load_state(&self, _state: ()) -> Result<(), HostError> {
                Ok(())
            }
        }

        struct Rig {
            q: Arc<Mutex<TestQueue>>,
            vring: Vring,
            b: Arc<DeviceBackend<Echo>>,
        }

        /// A backend whose worker polls with its window open at `window`.
        fn rig(event_idx: bool, hold: bool, window: Duration) -> Rig {
            let q = TestQueue::new(16, event_idx).unwrap();
            let vring = q.vring.clone();
            let mem = q.mem.clone();
            let q = Arc::new(Mutex::new(q));
            let dev = Echo {
                q: q.clone(),
                hold,
                held: Mutex::new(Vec::new()),
                suppressed: Mutex::new(Vec::new()),
                hooks: Mutex::new(VecDeque::new()),
                fail: AtomicBool::new(false),
            };
            let b = DeviceBackend::new(dev, "echo", mem).with_poll(window.max(START_MAX));
            b.set_event_idx(event_idx);
            b.set_poll_window(0, window);
            Rig {
                q,
                vring,
                b: Arc::new(b),
            }
        }

        /// A ceiling that never limits the windows these tests open.
        const START_MAX: Duration = Duration::from_secs(3600);
        /// A window the tests wait out (no epoll ends it early).
        const SHORT: Duration = Duration::from_millis(20);

        impl Rig {
            fn post(&self) -> u16 {
                crate::lock(&self.q).add(&[(BUFFERS, 8, true)]).unwrap()
            }

            fn hook(&self, f: impl FnOnce(&mut TestQueue) + Send + 'static) {
                crate::lock(&self.b.device().hooks).push_back(Box::new(f));
            }

            fn event(&self, id: u16) {
                self.b
                    .handle_event(id, EventSet::IN, std::slice::from_ref(&self.vring), 0)
                    .unwrap();
            }

            /// Handle event `id` on another thread; whether it returned
            /// within a generous safety bound (else it polls on and on).
            fn event_returns(&self, id: u16) -> bool {
                let (tx, rx) = mpsc::channel();
                let (b, vring) = (self.b.clone(), self.vring.clone());
                thread::spawn(move || {
                    let r = b.handle_event(id, EventSet::IN, &[vring], 0);
                    let _ = tx.send(r.is_ok());
                });
                rx.recv_timeout(Duration::from_secs(10)) == Ok(true)
            }

            fn used_heads(&self) -> Vec<u32> {
                let q = crate::lock(&self.q);
                q.used().unwrap().iter().map(|u| u.0).collect()
            }

            fn suppressed(&self) -> Vec<bool> {
                crate::lock(&self.b.device().suppressed).clone()
            }
        }

        /// Post one chain from a hook; report whether the driver had to kick.
        fn post_in_hook(r: &Rig) -> mpsc::Receiver<(u16, bool)> {
            let (tx, rx) = mpsc::channel();
            r.hook(move |q| {
                let old = q.avail_index();
                let head = q.add(&[(BUFFERS + 0x100, 8, true)]).unwrap();
                let _ = tx.send((head, q.needs_kick(old).unwrap()));
            });
            rx
        }

        #[test]
        fn request_posted_while_the_worker_polls_is_served_without_a_kick() {
            let r = rig(false, false, SHORT);
            let a = r.post();
            let posted = post_in_hook(&r);

            r.event(0);

            let (b, kick) = posted.try_recv().unwrap();
            assert!(!kick, "notifications were on while polling");
            assert_eq!(r.used_heads(), vec![u32::from(a), u32::from(b)]);
            assert_eq!(
                r.suppressed(),
                vec![true, true],
                "not taken within the event, with notifications off"
            );
            let q = crate::lock(&r.q);
            assert_eq!(q.used_flags().unwrap(), 0, "notifications left off");
        }

        #[test]
        fn with_event_idx_polling_holds_avail_event_back_and_moves_it_before_sleeping() {
            let r = rig(true, false, SHORT);
            r.post();
            let posted = post_in_hook(&r);

            r.event(0);

            let (_, kick) = posted.try_recv().unwrap();
            assert!(!kick, "avail_event asked for a kick while polling");
            assert_eq!(r.used_heads().len(), 2);
            let mut q = crate::lock(&r.q);
            let old = q.avail_index();
            q.add(&[(BUFFERS, 8, true)]).unwrap();
            assert!(q.needs_kick(old).unwrap(), "a sleeping worker gets no kick");
        }

        #[test]
        fn request_posted_as_the_window_closes_is_served_by_the_last_look() {
            let r = rig(false, false, SHORT);
            let a = r.post();
            r.event(0);
            // The state at the end of a window: notifications suppressed,
            // the ring looked at last when it held `a`.
            r.vring.get_mut().disable_notification().unwrap();
            let old = crate::lock(&r.q).avail_index();
            let b = r.post();
            assert!(!crate::lock(&r.q).needs_kick(old).unwrap());
            let by_queue = [Some(&r.vring)];
            let event = Event {
                id: 0,
                set: EventSet::IN,
                queues: &[0],
                vrings: std::slice::from_ref(&r.vring),
                by_queue: &by_queue,
            };
            let mut p = crate::lock(&r.b.polls[0]);
            p.seen[0] = Some(old);

            r.b.resume_notifications(&mut p, &event, true).unwrap();

            assert_eq!(r.used_heads(), vec![u32::from(a), u32::from(b)]);
            assert_eq!(crate::lock(&r.q).used_flags().unwrap(), 0);
        }

        #[test]
        fn request_posted_just_before_a_host_event_that_suppresses_kicks_is_served() {
            // The driver makes a request available, then reads avail_event
            // only after the host event below has suppressed notifications:
            // it does not kick. The request was posted before the event
            // began, but the runtime never processed it.
            let r = rig(true, false, SHORT);
            let a = r.post();
            r.event(0);
            let b = r.post();

            r.event(2);

            assert_eq!(r.used_heads(), vec![u32::from(a), u32::from(b)]);
        }

        #[test]
        fn event_that_took_nothing_does_not_poll() {
            let r = rig(false, false, START_MAX);

            assert!(r.event_returns(0), "polled after an empty kick");

            assert_eq!(crate::lock(&r.q).used_flags().unwrap(), 0);
        }

        #[test]
        fn ready_epoll_event_ends_the_window() {
            use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
            use nix::sys::eventfd::{EfdFlags, EventFd};
            let r = rig(false, false, START_MAX);
            let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
            let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
            ep.add(&efd, EpollEvent::new(EpollFlags::EPOLLIN, 9))
                .unwrap();
            r.b.watch_epolls(&[ep.0.as_raw_fd()]).unwrap();
            r.post();
            efd.write(1).unwrap();

            assert!(r.event_returns(0), "polled on with an event ready");

            assert_eq!(r.used_heads().len(), 1);
        }

        #[test]
        fn completion_in_a_host_event_is_followed_by_polling() {
            let r = rig(false, true, SHORT);
            let a = r.post();
            r.event(0);
            assert_eq!(r.b.held().count(0), 1);
            let posted = post_in_hook(&r);

            r.event(2);

            let (_, kick) = posted.try_recv().unwrap();
            assert!(!kick, "notifications were on after the completion");
            assert_eq!(r.used_heads(), vec![u32::from(a)]);
            assert_eq!(r.b.held().count(0), 1, "the new request was not taken");
            assert_eq!(r.suppressed().last(), Some(&true), "not taken by the poll");
        }

        #[test]
        fn device_failure_while_polling_leaves_notifications_on() {
            let r = rig(false, false, SHORT);
            r.post();
            r.b.device().fail.store(true, Ordering::Relaxed);

            let result =
                r.b.handle_event(0, EventSet::IN, std::slice::from_ref(&r.vring), 0);

            assert!(result.is_err());
            assert_eq!(crate::lock(&r.q).used_flags().unwrap(), 0);
            assert_eq!(r.b.take_fatal().unwrap().to_string(), "disk on fire");
        }

        #[test]
        fn stopping_a_ring_turns_its_notifications_back_on() {
            let r = rig(false, false, SHORT);
            r.post();
            r.event(0);
            r.vring.get_mut().disable_notification().unwrap();
            r.vring.set_queue_ready(false);

            VhostUserBackend::stop_vring(&*r.b, 0).unwrap();

            assert_eq!(crate::lock(&r.q).used_flags().unwrap(), 0);
        }
    }
}
