// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A vhost-user front end that is also a virtio driver, with no VM.
//!
//! [`Session`] connects to a back end's Unix socket and does what QEMU does for a
//! `vhost-user-*-pci` device, in QEMU's order: `SET_OWNER`, `GET_FEATURES`,
//! `GET_PROTOCOL_FEATURES`/`SET_PROTOCOL_FEATURES`, `GET_QUEUE_NUM`,
//! `SET_BACKEND_REQ_FD`, `SET_FEATURES`, `SET_MEM_TABLE`, then per queue
//! `SET_VRING_NUM`, `SET_VRING_BASE`, `SET_VRING_ADDR` (the front end's own
//! virtual addresses, as the protocol requires), `SET_VRING_KICK`,
//! `SET_VRING_CALL` and `SET_VRING_ENABLE`. Guest memory is a memfd
//! ([`memory::GuestRam`]); the queues are driven by [`virtqueue::Virtqueue`].
//!
//! It speaks only vhost-user and virtio, so it can drive any back end; the
//! workspace's integration tests and benchmarks drive the real daemon binaries
//! through it.

pub mod memory;
pub mod process;
pub mod virtqueue;
pub mod vsock;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags,
};
pub use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserVirtioFeatures};
use vhost::{VhostBackend, VringConfigData};

pub use memory::GuestRam;
pub use virtqueue::{Chain, Next, RawDesc, Used, Virtqueue};

/// Errors of the test front end.
#[derive(Debug, Error)]
pub enum Error {
    /// Could not connect to the back end.
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A vhost-user request failed.
    #[error("vhost-user {request} failed")]
    Request {
        /// Which request.
        request: &'static str,
        /// Why.
        #[source]
        source: vhost::Error,
    },
    /// A vhost(-user) call failed.
    #[error("vhost error")]
    Vhost(#[source] vhost::Error),
    /// Guest memory could not be set up.
    #[error("cannot create guest memory")]
    Memory(#[source] std::io::Error),
    /// Guest memory access out of range.
    #[error("guest memory access at {0:#x} failed: {1}")]
    GuestAccess(u64, String),
    /// The bump allocator ran out.
    #[error("guest memory exhausted allocating {0} bytes")]
    OutOfGuestMemory(u64),
    /// Queue size not a power of two.
    #[error("queue size {0} is not a power of two")]
    BadQueueSize(u16),
    /// No free descriptors.
    #[error("no free descriptors")]
    QueueFull,
    /// Chain without buffers.
    #[error("a chain needs at least one buffer")]
    EmptyChain,
    /// The device used an id it was never given.
    #[error("device returned unknown used id {0}")]
    BadUsedId(u32),
    /// Waiting timed out.
    #[error("timed out waiting for the device")]
    Timeout,
    /// An eventfd operation failed.
    #[error("eventfd")]
    EventFd(#[source] std::io::Error),
    /// The device has fewer queues.
    #[error("device has no queue {0}")]
    NoSuchQueue(usize),
    /// State transfer I/O failed.
    #[error("device state transfer")]
    StateTransfer(#[source] std::io::Error),
}

fn req(request: &'static str) -> impl FnOnce(vhost::Error) -> Error {
    move |source| Error::Request { request, source }
}

/// How the front end sets up the device.
#[derive(Debug, Clone)]
pub struct Options {
    /// Guest RAM size.
    pub ram_size: usize,
    /// Queue size for every queue.
    pub queue_size: u16,
    /// Number of queues to set up (default: all the device reports, or 1).
    pub num_queues: Option<usize>,
    /// Feature bits the driver is willing to accept (intersected with the offer).
    pub accept_features: u64,
    /// Protocol features the front end is willing to use.
    pub accept_protocol: VhostUserProtocolFeatures,
    /// Open a backend-request channel if the device offers `BACKEND_REQ`.
    pub backend_req: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ram_size: 64 << 20,
            queue_size: 256,
            num_queues: None,
            accept_features: u64::MAX,
            accept_protocol: VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
                | VhostUserProtocolFeatures::BACKEND_REQ
                | VhostUserProtocolFeatures::DEVICE_STATE,
            backend_req: true,
        }
    }
}

/// One running connection to a back end.
pub struct Session {
    fe: Frontend,
    ram: Arc<GuestRam>,
    /// Features the device offered.
    pub device_features: u64,
    /// Features acknowledged.
    pub features: u64,
    /// Protocol features in use.
    pub protocol: VhostUserProtocolFeatures,
    /// Queues the device reports (`GET_QUEUE_NUM`), if `MQ`.
    pub max_queues: Option<u64>,
    queues: Vec<Virtqueue>,
    backend_channel: Option<UnixStream>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("features", &format_args!("{:#x}", self.features))
            .field("protocol", &self.protocol)
            .field("queues", &self.queues.len())
            .finish()
    }
}

/// The machine a benchmark runs on, for its report: CPU model, cores, kernel.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

/// How long the front end waits for any single back-end reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to `path`, retrying until `timeout` while the socket does not exist
/// yet. Replies that take longer than [`REPLY_TIMEOUT`] fail instead of hanging.
pub fn connect_frontend(
    path: &Path,
    max_queues: u64,
    timeout: Duration,
) -> Result<Frontend, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(sock) => {
                sock.set_read_timeout(Some(REPLY_TIMEOUT))
                    .map_err(Error::Memory)?;
                sock.set_write_timeout(Some(REPLY_TIMEOUT))
                    .map_err(Error::Memory)?;
                return Ok(Frontend::from_stream(sock, max_queues));
            }
            Err(e) if Instant::now() < deadline => {
                log::debug!("connect {}: {e}; retrying", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error::Connect {
                    path: path.into(),
                    source: e,
                })
            }
        }
    }
}

impl Session {
    /// Connect to the back end at `path` and start the device with `opts`.
    pub fn start(path: &Path, opts: &Options) -> Result<Self, Error> {
        let mut fe = connect_frontend(path, 64, Duration::from_secs(5))?;
        fe.set_owner().map_err(req("SET_OWNER"))?;
        let device_features = fe.get_features().map_err(req("GET_FEATURES"))?;
        let mut protocol = VhostUserProtocolFeatures::empty();
        if device_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = fe
                .get_protocol_features()
                .map_err(req("GET_PROTOCOL_FEATURES"))?;
            protocol = offered & opts.accept_protocol;
            fe.set_protocol_features(protocol)
                .map_err(req("SET_PROTOCOL_FEATURES"))?;
        }
        let max_queues = if protocol.contains(VhostUserProtocolFeatures::MQ) {
            Some(fe.get_queue_num().map_err(req("GET_QUEUE_NUM"))?)
        } else {
            None
        };
        let mut backend_channel = None;
        if opts.backend_req && protocol.contains(VhostUserProtocolFeatures::BACKEND_REQ) {
            let (ours, theirs) = UnixStream::pair().map_err(Error::Memory)?;
            fe.set_backend_request_fd(&theirs)
                .map_err(req("SET_BACKEND_REQ_FD"))?;
            backend_channel = Some(ours);
        }
        let features = device_features & opts.accept_features;
        fe.set_features(features).map_err(req("SET_FEATURES"))?;

        let ram = Arc::new(GuestRam::new(opts.ram_size)?);
        fe.set_mem_table(&ram.regions()?)
            .map_err(req("SET_MEM_TABLE"))?;

        let event_idx =
            features & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
        let count = opts
            .num_queues
            .or(max_queues.and_then(|n| usize::try_from(n).ok()))
            .unwrap_or(1);
        let mut session = Self {
            fe,
            ram,
            device_features,
            features,
            protocol,
            max_queues,
            queues: Vec::new(),
            backend_channel,
        };
        for index in 0..count {
            let vq = Virtqueue::new(session.ram.clone(), opts.queue_size, event_idx)?;
            session.start_queue(index, &vq)?;
            session.queues.push(vq);
        }
        Ok(session)
    }

    fn start_queue(&mut self, index: usize, vq: &Virtqueue) -> Result<(), Error> {
        let (desc, avail, used) = vq.addresses();
        self.fe
            .set_vring_num(index, vq.size())
            .map_err(req("SET_VRING_NUM"))?;
        self.fe
            .set_vring_base(index, 0)
            .map_err(req("SET_VRING_BASE"))?;
        let config = VringConfigData {
            queue_max_size: vq.size(),
            queue_size: vq.size(),
            flags: 0,
            desc_table_addr: self.ram.host_addr(desc)?,
            used_ring_addr: self.ram.host_addr(used)?,
            avail_ring_addr: self.ram.host_addr(avail)?,
            log_addr: None,
        };
        self.fe
            .set_vring_addr(index, &config)
            .map_err(req("SET_VRING_ADDR"))?;
        self.fe
            .set_vring_kick(index, vq.kick_fd())
            .map_err(req("SET_VRING_KICK"))?;
        self.fe
            .set_vring_call(index, vq.call_fd())
            .map_err(req("SET_VRING_CALL"))?;
        if self.protocol_features_negotiated() {
            self.fe
                .set_vring_enable(index, true)
                .map_err(req("SET_VRING_ENABLE"))?;
        }
        Ok(())
    }

    fn protocol_features_negotiated(&self) -> bool {
        self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0
    }

    /// Guest RAM.
    pub fn ram(&self) -> &Arc<GuestRam> {
        &self.ram
    }

    /// Queue `index`.
    pub fn queue(&mut self, index: usize) -> Result<&mut Virtqueue, Error> {
        self.queues.get_mut(index).ok_or(Error::NoSuchQueue(index))
    }

    /// The backend-request channel, if one was opened.
    pub fn backend_channel(&self) -> Option<&UnixStream> {
        self.backend_channel.as_ref()
    }

    /// `VHOST_USER_GET_CONFIG`.
    pub fn get_config(&mut self, offset: u32, size: u32) -> Result<Vec<u8>, Error> {
        let buf = vec![0u8; size as usize];
        let (_, payload) = self
            .fe
            .get_config(offset, size, VhostUserConfigFlags::WRITABLE, &buf)
            .map_err(req("GET_CONFIG"))?;
        Ok(payload)
    }

    /// `VHOST_USER_SET_CONFIG`.
    pub fn set_config(&mut self, offset: u32, data: &[u8]) -> Result<(), Error> {
        self.fe
            .set_config(offset, VhostUserConfigFlags::WRITABLE, data)
            .map_err(req("SET_CONFIG"))
    }

    /// Stop queue `index` (`GET_VRING_BASE`); returns the device's next avail index.
    pub fn stop_queue(&mut self, index: usize) -> Result<u32, Error> {
        self.fe.get_vring_base(index).map_err(req("GET_VRING_BASE"))
    }

    /// `VHOST_USER_RESET_DEVICE` (the `RESET_DEVICE` protocol feature must be
    /// in use).
    pub fn reset_device(&mut self) -> Result<(), Error> {
        self.fe.reset_device().map_err(req("RESET_DEVICE"))
    }

    /// Start the device again on the same connection, as a front end does
    /// after a guest reboot (`GET_VRING_BASE` on every queue, perhaps
    /// `RESET_DEVICE`): acknowledge the same features again and set every
    /// queue up afresh, with new rings, from index 0.
    pub fn restart_queues(&mut self) -> Result<(), Error> {
        self.fe
            .set_features(self.features)
            .map_err(req("SET_FEATURES"))?;
        let event_idx =
            self.features & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
        for index in 0..self.queues.len() {
            let size = self.queues[index].size();
            let vq = Virtqueue::new(self.ram.clone(), size, event_idx)?;
            self.start_queue(index, &vq)?;
            self.queues[index] = vq;
        }
        Ok(())
    }

    /// Save the device state (queues must be stopped first).
    pub fn save_state(&mut self) -> Result<Vec<u8>, Error> {
        let (rd, wr) = nix::unistd::pipe().map_err(|e| Error::StateTransfer(e.into()))?;
        let other = self
            .fe
            .set_device_state_fd(
                VhostTransferStateDirection::SAVE,
                VhostTransferStatePhase::STOPPED,
                wr,
            )
            .map_err(req("SET_DEVICE_STATE_FD"))?;
        let mut data = Vec::new();
        let mut reader: std::fs::File = match other {
            Some(f) => f,
            None => std::fs::File::from(rd),
        };
        std::io::Read::read_to_end(&mut reader, &mut data).map_err(Error::StateTransfer)?;
        self.fe
            .check_device_state()
            .map_err(req("CHECK_DEVICE_STATE"))?;
        Ok(data)
    }

    /// Load device state saved by [`Self::save_state`].
    pub fn load_state(&mut self, data: &[u8]) -> Result<(), Error> {
        let (rd, wr): (OwnedFd, OwnedFd) =
            nix::unistd::pipe().map_err(|e| Error::StateTransfer(e.into()))?;
        let other = self
            .fe
            .set_device_state_fd(
                VhostTransferStateDirection::LOAD,
                VhostTransferStatePhase::STOPPED,
                rd,
            )
            .map_err(req("SET_DEVICE_STATE_FD"))?;
        let mut writer = match other {
            Some(f) => f,
            None => std::fs::File::from(
                wr.as_fd()
                    .try_clone_to_owned()
                    .map_err(Error::StateTransfer)?,
            ),
        };
        drop(wr);
        std::io::Write::write_all(&mut writer, data).map_err(Error::StateTransfer)?;
        drop(writer);
        self.fe
            .check_device_state()
            .map_err(req("CHECK_DEVICE_STATE"))
    }

    /// The raw vhost-user front end, for protocol-level tests.
    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.fe
    }
}
