// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A vhost-user front end that is also a virtio driver, with no VM.
//!
//! [`Session`] connects to a back end's Unix socket and does what QEMU does for a
//! `vhost-user-*-pci` device, in QEMU's order: `SET_OWNER`, `GET_FEATURES`,
//! `GET_PROTOCOL_FEATURES`/`SET_PROTOCOL_FEATURES`, `GET_QUEUE_NUM`,
//! `SET_BACKEND_REQ_FD`, `SET_FEATURES`, `SET_MEM_TABLE`, then per queue
//! `SET_VRING_NUM`, `SET_VRING_BASE`, `SET_VRING_ADDR` (the front end's own
//! virtual addresses, as the protocol requires), `SET_VRING_CALL`,
//! `SET_VRING_KICK` and `SET_VRING_ENABLE`. (QEMU sends the kick before the
//! call; this front end sends the call first so that a ring which is still
//! enabled when it is restarted cannot run, and complete buffers, before its
//! call eventfd is set — see [`Session::restart_queues`].) Guest memory is a memfd
//! ([`memory::GuestRam`]); the queues are driven by [`virtqueue::Virtqueue`].
//!
//! Around that:
//!
//! - the back-end request channel is served on a thread of the session
//!   ([`backend_channel`]), with shared memory regions ([`shmem`]) and a
//!   shared-object table;
//! - dirty-page logging for migration ([`dirty_log`], [`Options::dirty_log`],
//!   [`Session::enable_dirty_log`], [`Session::dirty_pages`]);
//! - stopping and restarting queues, device-state save and load, and moving a
//!   running driver from one back end to another over the same guest memory
//!   ([`migration`], [`Session::migrate_to`]).
//!
//! It speaks only vhost-user and virtio, so it can drive any back end; the
//! workspace's integration tests and benchmarks drive the real daemon binaries
//! through it.

pub mod backend_channel;
pub mod can;
pub mod dirty_log;
pub mod gpio;
pub mod i2c;
pub mod memory;
pub mod migration;
pub mod process;
pub mod shmem;
pub mod sound;
pub mod virtqueue;
pub mod vsock;

use std::fs::File;
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

pub use backend_channel::{BackendChannel, BackendRequest};
pub use dirty_log::{DirtyLog, LOG_PAGE_SIZE};
pub use memory::GuestRam;
pub use migration::{Incoming, MigrateError};
pub use shmem::{ShmemError, ShmemMapping};
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
    /// The back-end channel could not be set up.
    #[error("backend-request channel")]
    BackendChannel(#[source] std::io::Error),
    /// No back-end channel was opened (not offered, or not asked for).
    #[error("no backend-request channel is open")]
    NoBackendChannel,
    /// A shared memory access failed.
    #[error("shared memory")]
    Shmem(#[source] ShmemError),
    /// The back end does not offer what the front end needs.
    #[error("the back end does not offer {0}")]
    NotOffered(&'static str),
    /// Dirty-page logging is not enabled.
    #[error("dirty-page logging is not enabled")]
    NoDirtyLog,
    /// The operation needs the queue stopped.
    #[error("queue {0} is running; stop it first")]
    QueueRunning(usize),
    /// The operation needs the queue running.
    #[error("queue {0} is stopped")]
    QueueStopped(usize),
    /// `GET_VRING_BASE` answered with a value that is no split-ring index.
    #[error("queue {queue}: GET_VRING_BASE returned {base}, not a 16-bit ring index")]
    BadRingBase {
        /// Queue.
        queue: usize,
        /// What the back end returned.
        base: u32,
    },
    /// The destination back end lacks features the driver acknowledged.
    #[error("the destination does not offer feature bits {0:#x} the driver uses")]
    FeaturesMissing(u64),
    /// The device kept answering with nothing.
    #[error("the device answered {0} requests in a row with used length 0")]
    NoProgress(usize),
    /// A CAN request was answered with a result other than OK.
    #[error("CAN {what} answered with result {result} (not OK)")]
    CanNotOk {
        /// Which request.
        what: String,
        /// The result byte.
        result: u8,
    },
    /// The device claims to have written more than the buffer holds.
    #[error("the device reported {len} bytes written into a {capacity}-byte buffer")]
    UsedTooLong {
        /// Used length reported.
        len: u32,
        /// Buffer size.
        capacity: u32,
    },
}

fn req(request: &'static str) -> impl FnOnce(vhost::Error) -> Error {
    move |source| Error::Request { request, source }
}

/// `VHOST_F_LOG_ALL`: the back end logs its guest-memory writes.
const LOG_ALL: u64 = VhostUserVirtioFeatures::LOG_ALL.bits();

/// How the front end sets up the device.
#[derive(Debug, Clone)]
pub struct Options {
    /// Guest RAM size.
    pub ram_size: usize,
    /// Queue size for every queue.
    pub queue_size: u16,
    /// Number of queues to set up (default: all the device reports, or 1).
    pub num_queues: Option<usize>,
    /// Feature bits the driver is willing to accept (intersected with the
    /// offer). `VHOST_F_LOG_ALL` is not a driver feature and is ignored here:
    /// see [`Self::dirty_log`].
    pub accept_features: u64,
    /// Protocol features the front end is willing to use.
    pub accept_protocol: VhostUserProtocolFeatures,
    /// Open a backend-request channel if the device offers `BACKEND_REQ`.
    pub backend_req: bool,
    /// Sizes of the VIRTIO Shared Memory Regions by shmid (0: no region with
    /// that id), for `SHMEM_MAP` on the backend-request channel. `None`: ask
    /// the back end with `GET_SHMEM_CONFIG` when `SHMEM` is negotiated (what
    /// QEMU does), otherwise there are none.
    pub shmem_regions: Option<Vec<u64>>,
    /// Log dirty pages from the start: acknowledge `VHOST_F_LOG_ALL`, send
    /// `SET_LOG_BASE` with a memfd log after `SET_MEM_TABLE`, and set
    /// `VHOST_VRING_F_LOG` on every ring. Needs `LOG_ALL` and `LOG_SHMFD`.
    pub dirty_log: bool,
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
                | VhostUserProtocolFeatures::DEVICE_STATE
                | VhostUserProtocolFeatures::LOG_SHMFD
                | VhostUserProtocolFeatures::SHARED_OBJECT
                | VhostUserProtocolFeatures::SHMEM,
            backend_req: true,
            shmem_regions: None,
            dirty_log: false,
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
    /// Per queue: where it stopped (`GET_VRING_BASE`), `None` while it runs.
    stopped: Vec<Option<u16>>,
    channel: Option<BackendChannel>,
    log: Option<DirtyLog>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("features", &format_args!("{:#x}", self.features))
            .field("protocol", &self.protocol)
            .field("queues", &self.queues.len())
            .field("stopped", &self.stopped)
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

/// A connection that has negotiated protocol features and opened the
/// backend-request channel, but has not set up the device yet (no features,
/// memory or rings): the first half of [`Session::start`], and all a
/// migration destination does before the device state arrives.
struct Connection {
    fe: Frontend,
    device_features: u64,
    protocol: VhostUserProtocolFeatures,
    max_queues: Option<u64>,
    channel: Option<BackendChannel>,
}

impl Connection {
    /// `SET_OWNER`, `GET_FEATURES`, `GET_PROTOCOL_FEATURES`,
    /// `SET_PROTOCOL_FEATURES`, `GET_QUEUE_NUM`, `GET_SHMEM_CONFIG`,
    /// `SET_BACKEND_REQ_FD`, as far as the back end offers them.
    fn open(path: &Path, opts: &Options) -> Result<Self, Error> {
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
        let mut channel = None;
        if opts.backend_req && protocol.contains(VhostUserProtocolFeatures::BACKEND_REQ) {
            let shmem = match &opts.shmem_regions {
                Some(sizes) => sizes.clone(),
                None if protocol.contains(VhostUserProtocolFeatures::SHMEM) => {
                    let config = fe.get_shmem_config().map_err(req("GET_SHMEM_CONFIG"))?;
                    config.memory_sizes.to_vec()
                }
                None => Vec::new(),
            };
            let reply_ack = protocol.contains(VhostUserProtocolFeatures::REPLY_ACK);
            let (served, peer) = BackendChannel::start(&shmem, reply_ack)?;
            fe.set_backend_request_fd(&peer)
                .map_err(req("SET_BACKEND_REQ_FD"))?;
            channel = Some(served);
        }
        Ok(Self {
            fe,
            device_features,
            protocol,
            max_queues,
            channel,
        })
    }

    /// Check that the back end can log dirty pages into a shared memfd.
    fn check_logging(
        device_features: u64,
        protocol: VhostUserProtocolFeatures,
    ) -> Result<(), Error> {
        if device_features & LOG_ALL == 0 {
            return Err(Error::NotOffered("VHOST_F_LOG_ALL"));
        }
        if !protocol.contains(VhostUserProtocolFeatures::LOG_SHMFD) {
            return Err(Error::NotOffered("VHOST_USER_PROTOCOL_F_LOG_SHMFD"));
        }
        Ok(())
    }

    /// `SET_FEATURES`, `SET_MEM_TABLE` over `ram`, and with `VHOST_F_LOG_ALL`
    /// in `features` a fresh dirty log (`SET_LOG_BASE`). No rings yet.
    fn configure(self, ram: Arc<GuestRam>, features: u64) -> Result<Session, Error> {
        let Self {
            fe,
            device_features,
            protocol,
            max_queues,
            channel,
        } = self;
        fe.set_features(features).map_err(req("SET_FEATURES"))?;
        fe.set_mem_table(&ram.regions()?)
            .map_err(req("SET_MEM_TABLE"))?;
        let mut session = Session {
            fe,
            ram,
            device_features,
            features,
            protocol,
            max_queues,
            queues: Vec::new(),
            stopped: Vec::new(),
            channel,
            log: None,
        };
        if features & LOG_ALL != 0 {
            session.set_log_base()?;
        }
        Ok(session)
    }
}

/// Send queue `index`'s setup at ring position `base`: `SET_VRING_NUM`,
/// `SET_VRING_BASE`, `SET_VRING_ADDR` (with `VHOST_VRING_F_LOG` and the used
/// ring's guest address when logging), `SET_VRING_CALL`, `SET_VRING_KICK`,
/// and `SET_VRING_ENABLE` when protocol features were negotiated.
///
/// The call eventfd goes first: none of these messages is answered, and a
/// back end starts a ring as soon as it has the kick eventfd ("Ring states").
/// A ring restarted after `GET_VRING_BASE` is still enabled, so with the kick
/// first it could complete buffers made available while it was stopped before
/// the back end has read `SET_VRING_CALL`, and that notification would be lost.
fn start_vring(
    fe: &mut Frontend,
    ram: &GuestRam,
    features: u64,
    index: usize,
    vq: &Virtqueue,
    base: u16,
) -> Result<(), Error> {
    let (desc, avail, used) = vq.addresses();
    fe.set_vring_num(index, vq.size())
        .map_err(req("SET_VRING_NUM"))?;
    fe.set_vring_base(index, base)
        .map_err(req("SET_VRING_BASE"))?;
    let logging = features & LOG_ALL != 0;
    let config = VringConfigData {
        queue_max_size: vq.size(),
        queue_size: vq.size(),
        flags: if logging { dirty_log::VRING_F_LOG } else { 0 },
        desc_table_addr: ram.host_addr(desc)?,
        used_ring_addr: ram.host_addr(used)?,
        avail_ring_addr: ram.host_addr(avail)?,
        // The log is indexed by guest-physical address (vhost-user.rst
        // "Migration": `log_guest_addr`).
        log_addr: logging.then_some(used),
    };
    fe.set_vring_addr(index, &config)
        .map_err(req("SET_VRING_ADDR"))?;
    fe.set_vring_call(index, vq.call_fd())
        .map_err(req("SET_VRING_CALL"))?;
    fe.set_vring_kick(index, vq.kick_fd())
        .map_err(req("SET_VRING_KICK"))?;
    if features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
        fe.set_vring_enable(index, true)
            .map_err(req("SET_VRING_ENABLE"))?;
    }
    Ok(())
}

/// `SET_DEVICE_STATE_FD(LOAD)`, write `data` into the pipe, close it, then
/// `CHECK_DEVICE_STATE` (vhost-user.rst "Migrating back-end state"). The
/// back end's verdict wins over a write error (a back end that refuses the
/// data may close its end early).
fn load_device_state(fe: &mut Frontend, data: &[u8]) -> Result<(), Error> {
    let (rd, wr): (OwnedFd, OwnedFd) =
        nix::unistd::pipe().map_err(|e| Error::StateTransfer(e.into()))?;
    let other = fe
        .set_device_state_fd(
            VhostTransferStateDirection::LOAD,
            VhostTransferStatePhase::STOPPED,
            rd,
        )
        .map_err(req("SET_DEVICE_STATE_FD"))?;
    let mut writer = match other {
        Some(f) => f,
        None => File::from(
            wr.as_fd()
                .try_clone_to_owned()
                .map_err(Error::StateTransfer)?,
        ),
    };
    drop(wr);
    let written = std::io::Write::write_all(&mut writer, data).map_err(Error::StateTransfer);
    drop(writer);
    fe.check_device_state().map_err(req("CHECK_DEVICE_STATE"))?;
    written
}

/// Answers in a row with used length 0 after which [`Session::read_bytes`]
/// gives up: a device that keeps answering with nothing makes no progress.
pub const MAX_EMPTY_ANSWERS: usize = 8;

impl Session {
    /// Connect to the back end at `path` and start the device with `opts`.
    pub fn start(path: &Path, opts: &Options) -> Result<Self, Error> {
        let conn = Connection::open(path, opts)?;
        let mut features = conn.device_features & opts.accept_features & !LOG_ALL;
        if opts.dirty_log {
            Connection::check_logging(conn.device_features, conn.protocol)?;
            features |= LOG_ALL;
        }
        let ram = Arc::new(GuestRam::new(opts.ram_size)?);
        let count = opts
            .num_queues
            .or(conn.max_queues.and_then(|n| usize::try_from(n).ok()))
            .unwrap_or(1);
        let mut session = conn.configure(ram, features)?;
        let event_idx =
            features & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
        for index in 0..count {
            let vq = Virtqueue::new(session.ram.clone(), opts.queue_size, event_idx)?;
            start_vring(
                &mut session.fe,
                &session.ram,
                session.features,
                index,
                &vq,
                0,
            )?;
            session.queues.push(vq);
            session.stopped.push(None);
        }
        session.barrier()?;
        Ok(session)
    }

    /// Wait until the back end has handled every message sent so far.
    ///
    /// The front end sends no `NEED_REPLY` flag, so `SET_VRING_*` messages
    /// are not acknowledged; without this, a test could post to a queue
    /// whose kick the back end has not registered yet, or stop a queue
    /// (`GET_VRING_BASE`) before its worker ever saw the kick. The back end
    /// handles messages in order, so the reply to `GET_FEATURES` comes after
    /// all of them.
    pub fn barrier(&mut self) -> Result<(), Error> {
        self.fe.get_features().map_err(req("GET_FEATURES"))?;
        Ok(())
    }

    /// Guest RAM.
    pub fn ram(&self) -> &Arc<GuestRam> {
        &self.ram
    }

    /// Queue `index`.
    pub fn queue(&mut self, index: usize) -> Result<&mut Virtqueue, Error> {
        self.queues.get_mut(index).ok_or(Error::NoSuchQueue(index))
    }

    /// Number of queues set up.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The backend-request channel, if one was opened.
    pub fn backend_channel(&self) -> Option<&BackendChannel> {
        self.channel.as_ref()
    }

    /// Wait up to `timeout` for the next request the back end sent on the
    /// backend-request channel (oldest first; each is returned once).
    pub fn wait_backend_request(&self, timeout: Duration) -> Result<BackendRequest, Error> {
        self.channel
            .as_ref()
            .ok_or(Error::NoBackendChannel)?
            .wait_request(timeout)
    }

    /// `CONFIG_CHANGE_MSG`s the back end sent so far.
    pub fn config_changes(&self) -> usize {
        self.channel
            .as_ref()
            .map_or(0, BackendChannel::config_changes)
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

    fn set_log_base(&mut self) -> Result<(), Error> {
        let log = DirtyLog::new(self.ram.end())?;
        self.fe
            .set_log_base(0, Some(log.region()))
            .map_err(req("SET_LOG_BASE"))?;
        self.log = Some(log);
        Ok(())
    }

    /// Start logging dirty pages on a running session, as a front end does
    /// when migration begins: `SET_LOG_BASE` with a fresh memfd log,
    /// `SET_FEATURES` with `VHOST_F_LOG_ALL`, and `SET_VRING_ADDR` with
    /// `VHOST_VRING_F_LOG` for every running ring. Call it while the queues
    /// are idle: vhost-user-backend 0.24 re-reads the used index from guest
    /// memory on `SET_VRING_ADDR`, which races with a completion in flight.
    /// (Or log from the start with [`Options::dirty_log`].)
    pub fn enable_dirty_log(&mut self) -> Result<(), Error> {
        if self.log.is_some() {
            return Ok(());
        }
        Connection::check_logging(self.device_features, self.protocol)?;
        self.set_log_base()?;
        self.features |= LOG_ALL;
        self.fe
            .set_features(self.features)
            .map_err(req("SET_FEATURES"))?;
        for (index, vq) in self.queues.iter().enumerate() {
            if self.stopped.get(index).copied().flatten().is_some() {
                continue;
            }
            let (desc, avail, used) = vq.addresses();
            let config = VringConfigData {
                queue_max_size: vq.size(),
                queue_size: vq.size(),
                flags: dirty_log::VRING_F_LOG,
                desc_table_addr: self.ram.host_addr(desc)?,
                used_ring_addr: self.ram.host_addr(used)?,
                avail_ring_addr: self.ram.host_addr(avail)?,
                log_addr: Some(used),
            };
            self.fe
                .set_vring_addr(index, &config)
                .map_err(req("SET_VRING_ADDR"))?;
        }
        Ok(())
    }

    /// The dirty log, while logging.
    pub fn dirty_log(&self) -> Option<&DirtyLog> {
        self.log.as_ref()
    }

    /// Guest-physical addresses of the pages the back end marked dirty
    /// (one per [`LOG_PAGE_SIZE`] page), ascending.
    pub fn dirty_pages(&self) -> Result<Vec<u64>, Error> {
        self.log.as_ref().ok_or(Error::NoDirtyLog)?.dirty_pages()
    }

    /// Like [`Self::dirty_pages`], clearing the log as it is read.
    pub fn take_dirty_pages(&self) -> Result<Vec<u64>, Error> {
        self.log
            .as_ref()
            .ok_or(Error::NoDirtyLog)?
            .take_dirty_pages()
    }

    /// Stop queue `index` (`GET_VRING_BASE`); returns the device's next avail
    /// index, which the session remembers for [`Self::restart_queues`] and
    /// [`Self::migrate_to`].
    pub fn stop_queue(&mut self, index: usize) -> Result<u32, Error> {
        match self.stopped.get(index) {
            None => return Err(Error::NoSuchQueue(index)),
            Some(Some(_)) => return Err(Error::QueueStopped(index)),
            Some(None) => {}
        }
        let base = self
            .fe
            .get_vring_base(index)
            .map_err(req("GET_VRING_BASE"))?;
        let ring_base =
            u16::try_from(base).map_err(|_| Error::BadRingBase { queue: index, base })?;
        if let Some(slot) = self.stopped.get_mut(index) {
            *slot = Some(ring_base);
        }
        Ok(base)
    }

    /// Stop every running queue; returns each queue's ring position (the
    /// `last_avail` of `GET_VRING_BASE`), by queue index.
    pub fn stop_queues(&mut self) -> Result<Vec<u16>, Error> {
        for index in 0..self.queues.len() {
            if self.stopped.get(index).copied().flatten().is_none() {
                self.stop_queue(index)?;
            }
        }
        Ok(self.stopped.iter().map(|s| s.unwrap_or(0)).collect())
    }

    /// Where queue `index` stopped, if it is stopped.
    pub fn stopped_at(&self, index: usize) -> Option<u16> {
        self.stopped.get(index).copied().flatten()
    }

    /// Start every stopped queue again at the position it stopped at, with the
    /// same rings and eventfds, and kick it ("The back-end must start a ring
    /// upon receiving a kick", vhost-user.rst "Ring states"), so buffers made
    /// available meanwhile are seen. What a source does when a migration fails.
    pub fn restart_queues(&mut self) -> Result<(), Error> {
        let Self {
            fe,
            ram,
            features,
            queues,
            stopped,
            ..
        } = self;
        for (index, (vq, slot)) in queues.iter().zip(stopped.iter_mut()).enumerate() {
            if let Some(base) = *slot {
                start_vring(fe, ram, *features, index, vq, base)?;
                *slot = None;
                vq.kick()?;
            }
        }
        Ok(())
    }

    /// Save the device state (queues must be stopped first):
    /// `SET_DEVICE_STATE_FD(SAVE)`, read to end of file, `CHECK_DEVICE_STATE`.
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
        let mut reader: File = match other {
            Some(f) => f,
            None => File::from(rd),
        };
        let read = std::io::Read::read_to_end(&mut reader, &mut data).map_err(Error::StateTransfer);
        drop(reader);
        self.fe
            .check_device_state()
            .map_err(req("CHECK_DEVICE_STATE"))?;
        read?;
        Ok(data)
    }

    /// Load device state saved by [`Self::save_state`] into this back end.
    pub fn load_state(&mut self, data: &[u8]) -> Result<(), Error> {
        load_device_state(&mut self.fe, data)
    }

    /// Read `bytes` bytes from a device that fills device-writable buffers
    /// (virtio-rng, virtio 1.3 5.4): post one buffer for what is still
    /// missing on `queue`, wait up to `timeout` for it, repeat. Gives up
    /// after [`MAX_EMPTY_ANSWERS`] answers in a row with nothing in them.
    pub fn read_bytes(
        &mut self,
        queue: usize,
        bytes: u32,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let buf = self.ram.alloc(u64::from(bytes).max(1), 4096)?;
        let mut got = Vec::with_capacity(bytes as usize);
        let mut empty = 0;
        while got.len() < bytes as usize {
            let want = bytes - u32::try_from(got.len()).unwrap_or(bytes);
            let vq = self.queue(queue)?;
            let head = vq.add(&Chain::new().writable(buf, want))?;
            vq.kick()?;
            let used = vq.wait_used(timeout)?;
            for u in used.iter().filter(|u| u.head == head) {
                if u.len > want {
                    return Err(Error::UsedTooLong {
                        len: u.len,
                        capacity: want,
                    });
                }
                if u.len == 0 {
                    empty += 1;
                    if empty >= MAX_EMPTY_ANSWERS {
                        return Err(Error::NoProgress(empty));
                    }
                } else {
                    empty = 0;
                    got.extend(self.ram.read(buf, u.len as usize)?);
                }
            }
        }
        Ok(got)
    }

    /// The raw vhost-user front end, for protocol-level tests.
    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.fe
    }
}
