// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The software CAN bus: devices of one daemon or of several share a bus over
//! a Unix socket, on hosts with no kernel CAN (`--bus PATH`).
//!
//! # Shape
//!
//! A *hub* listens on `PATH` (a `SOCK_SEQPACKET` Unix socket, so every
//! message arrives whole) and every *member* connects to it: each device, and
//! the `vhost-device-can-bus` tool (`send`, `dump`, `inject`). There is no
//! hub to start by hand: the first process that needs the bus and finds
//! nobody listening becomes the hub, running it on a thread of its own for
//! the rest of its life. Who is hub is decided by an exclusive `flock` on
//! `PATH.lock`, which the kernel releases when that process ends; the members
//! then see their connection end, and the first to take the lock becomes the
//! new hub (a stale socket file is replaced, a live one never is).
//!
//! # Arbitration
//!
//! The hub serializes all traffic, so every member sees the frames in the
//! same order. Like a real bus, a frame is transmitted only when some *other*
//! node acknowledges it: a member is a node once it says so ([`Role::Node`])
//! and takes part while its controller is started ([`Message::State`]). A
//! frame sent while no other node is online waits in the hub (at most
//! [`MAX_QUEUED`] per member), as a real controller retransmits an
//! unacknowledged frame. When a frame is transmitted every other member gets
//! it and the sender gets an [`Message::Echo`], the confirmation
//! `LATE_TX_ACK` waits for. A member that goes offline withdraws the frames
//! it still has waiting (the controller aborted them). Monitors
//! ([`Role::Monitor`]) receive everything and acknowledge nothing.
//!
//! Error frames ([`Message::Error`], for example `CAN_ERR_BUSOFF`) sent by a
//! member are passed on to every other member at once: this is how tests and
//! demos inject a bus-off.
//!
//! A member that does not read is not waited for: frames for it beyond
//! [`MAX_OUTBOX`] are dropped (counted); CAN is lossy. Echoes are never
//! dropped, so a `LATE_TX_ACK` request is always answered.
//!
//! # Wire format
//!
//! Every message is [`MSG_SIZE`] bytes: kind, flags, length, version, a
//! little-endian `u32` (identifier or error class), 64 data bytes and 8
//! reserved zero bytes. Anything else is refused; a member sending garbage is
//! disconnected, a hub sending garbage is ignored message by message.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr};
use std::sync::Arc;
use thiserror::Error;

use super::{CanFrame, CanHost, ErrorFrame, Received, Sent};

/// Size of every bus message.
pub const MSG_SIZE: usize = 80;
/// Protocol version, in every message.
pub const VERSION: u8 = 1;
/// Frames a member may have waiting for acknowledgement in the hub.
pub const MAX_QUEUED: usize = 1024;
/// Messages the hub keeps for a member that is slow to read.
pub const MAX_OUTBOX: usize = 4096;
/// Members of one bus.
pub const MAX_MEMBERS: usize = 64;
/// How long [`BusClient::connect`] keeps trying while a hub is being elected.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const KIND_HELLO: u8 = 1;
const KIND_STATE: u8 = 2;
const KIND_FRAME: u8 = 3;
const KIND_ECHO: u8 = 4;
const KIND_ERROR: u8 = 5;

const FLAG_EXTENDED: u8 = 1;
const FLAG_FD: u8 = 2;
const FLAG_RTR: u8 = 4;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A controller: acknowledges other nodes' frames while online.
    Node,
    /// Listens only (a bus monitor, an injector of error frames).
    Monitor,
}

/// One message on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// First message of a member.
    Hello(Role),
    /// A node's controller started (`true`) or stopped.
    State(bool),
    /// A frame: from a member to be sent, from the hub as received.
    Frame(CanFrame),
    /// To the sender: its frame was transmitted.
    Echo(CanFrame),
    /// An error report.
    Error(ErrorFrame),
}

/// A message that is not valid.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// Wrong size.
    #[error("bus message of {0} bytes, expected {MSG_SIZE}")]
    Size(usize),
    /// Another protocol version.
    #[error("bus protocol version {0}, this is version {VERSION}")]
    Version(u8),
    /// Unknown kind or field value.
    #[error("malformed bus message (kind {0})")]
    Malformed(u8),
    /// The frame inside is not valid.
    #[error("invalid frame on the bus")]
    Frame(#[source] super::FrameError),
}

impl Message {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[3] = VERSION;
        let frame = |b: &mut [u8; MSG_SIZE], kind: u8, f: &CanFrame| {
            b[0] = kind;
            b[1] = (if f.extended { FLAG_EXTENDED } else { 0 })
                | (if f.fd { FLAG_FD } else { 0 })
                | (if f.rtr { FLAG_RTR } else { 0 });
            b[2] = f.len;
            b[4..8].copy_from_slice(&f.id.to_le_bytes());
            let p = f.payload();
            b[8..8 + p.len()].copy_from_slice(p);
        };
        match self {
            Message::Hello(role) => {
                b[0] = KIND_HELLO;
                b[1] = u8::from(*role == Role::Monitor);
            }
            Message::State(online) => {
                b[0] = KIND_STATE;
                b[1] = u8::from(*online);
            }
            Message::Frame(f) => frame(&mut b, KIND_FRAME, f),
            Message::Echo(f) => frame(&mut b, KIND_ECHO, f),
            Message::Error(e) => {
                b[0] = KIND_ERROR;
                b[4..8].copy_from_slice(&e.class.to_le_bytes());
                b[8..16].copy_from_slice(&e.data);
            }
        }
        b
    }

    /// Parse and check a message.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        if b.len() != MSG_SIZE {
            return Err(ProtocolError::Size(b.len()));
        }
        if b[3] != VERSION {
            return Err(ProtocolError::Version(b[3]));
        }
        let kind = b[0];
        let word = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let bad = || ProtocolError::Malformed(kind);
        match kind {
            KIND_HELLO => match b[1] {
                0 => Ok(Message::Hello(Role::Node)),
                1 => Ok(Message::Hello(Role::Monitor)),
                _ => Err(bad()),
            },
            KIND_STATE => match b[1] {
                0 | 1 => Ok(Message::State(b[1] == 1)),
                _ => Err(bad()),
            },
            KIND_FRAME | KIND_ECHO => {
                let flags = b[1];
                if flags & !(FLAG_EXTENDED | FLAG_FD | FLAG_RTR) != 0 {
                    return Err(bad());
                }
                let mut f = CanFrame {
                    id: word,
                    extended: flags & FLAG_EXTENDED != 0,
                    fd: flags & FLAG_FD != 0,
                    rtr: flags & FLAG_RTR != 0,
                    len: b[2],
                    ..CanFrame::default()
                };
                f.check().map_err(ProtocolError::Frame)?;
                let n = f.payload().len();
                f.data[..n].copy_from_slice(&b[8..8 + n]);
                Ok(if kind == KIND_FRAME {
                    Message::Frame(f)
                } else {
                    Message::Echo(f)
                })
            }
            KIND_ERROR => {
                let mut data = [0u8; 8];
                data.copy_from_slice(&b[8..16]);
                Ok(Message::Error(ErrorFrame { class: word, data }))
            }
            _ => Err(bad()),
        }
    }
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// What one non-blocking send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendResult {
    Sent,
    /// The peer's buffer is full.
    Full,
    /// The peer is gone.
    Gone,
}

/// Send one message without blocking.
fn send_msg(fd: BorrowedFd<'_>, msg: &[u8; MSG_SIZE]) -> io::Result<SendResult> {
    loop {
        match socket::send(
            fd.as_raw_fd(),
            msg,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(_) => return Ok(SendResult::Sent),
            Err(Errno::EAGAIN) => return Ok(SendResult::Full),
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => return Ok(SendResult::Gone),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What one non-blocking receive gave.
enum Recv {
    Message(Result<Message, ProtocolError>),
    Empty,
    Closed,
}

fn recv_msg(fd: BorrowedFd<'_>) -> io::Result<Recv> {
    // One byte more than a message, to see an oversized one.
    let mut buf = [0u8; MSG_SIZE + 1];
    loop {
        match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Ok(Recv::Closed),
            Ok(n) => return Ok(Recv::Message(Message::decode(&buf[..n]))),
            Err(Errno::EAGAIN) => return Ok(Recv::Empty),
            Err(Errno::EINTR) => {}
            Err(Errno::ECONNRESET) => return Ok(Recv::Closed),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connect to the hub at `path`, becoming the hub first if nobody holds the
/// bus: `Ok(None)` when another process is becoming the hub right now.
fn connect_once(path: &Path) -> io::Result<Option<OwnedFd>> {
    let addr = UnixAddr::new(path)?;
    let try_connect = || -> io::Result<Option<OwnedFd>> {
        let fd = seqpacket()?;
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => Ok(Some(fd)),
            Err(Errno::ENOENT | Errno::ECONNREFUSED | Errno::EAGAIN) => Ok(None),
            Err(e) => Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot connect to the CAN bus {}: {e}", path.display()),
            )),
        }
    };
    if let Some(fd) = try_connect()? {
        return Ok(Some(fd));
    }
    match Hub::bind(path)? {
        Some(hub) => {
            hub.spawn()?;
            try_connect()
        }
        None => Ok(None),
    }
}

/// Hub sockets this process created, removed by [`remove_hub_sockets`].
static HUB_PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remove the socket files of the hubs this process runs (at exit: the bus
/// then moves to another member).
pub fn remove_hub_sockets() {
    for path in vhost_device_common::lock(&HUB_PATHS).drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// The lock file that decides who is hub for `path`.
fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// The hub of one bus.
pub struct Hub {
    listener: OwnedFd,
    _lock: Flock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("path", &self.path).finish()
    }
}

/// Stops a hub started with [`Hub::spawn_stoppable`].
#[derive(Debug)]
pub struct HubHandle {
    stop: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HubHandle {
    /// Stop the hub and wait for its thread (its members see the bus end).
    pub fn stop(mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Hub {
    /// Become the hub of `path` if no process is: `Ok(None)` when another
    /// holds it. A stale socket file is replaced; a path that is not a
    /// socket is an error.
    pub fn bind(path: &Path) -> io::Result<Option<Self>> {
        let lock_file = lock_path(path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&lock_file)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open the CAN bus lock {}: {e}", lock_file.display()),
                )
            })?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(e.into()),
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; it cannot be a CAN bus",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = seqpacket()?;
        let bind = socket::bind(listener.as_raw_fd(), &UnixAddr::new(path)?)
            .and_then(|()| socket::listen(&listener, Backlog::new(64)?));
        bind.map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot listen on the CAN bus {}: {e}", path.display()),
            )
        })?;
        log::info!("CAN bus hub on {}", path.display());
        Ok(Some(Self {
            listener,
            _lock: lock,
            path: path.into(),
        }))
    }

    /// Run the hub on a thread for the rest of the process.
    pub fn spawn(self) -> io::Result<()> {
        let handle = self.spawn_with()?;
        // Detached: the hub serves as long as the process lives.
        std::mem::forget(handle);
        Ok(())
    }

    /// Run the hub on a thread until [`HubHandle::stop`].
    pub fn spawn_stoppable(self) -> io::Result<HubHandle> {
        self.spawn_with()
    }

    fn spawn_with(self) -> io::Result<HubHandle> {
        vhost_device_common::lock(&HUB_PATHS).push(self.path.clone());
        let stop = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let stop_fd = stop.clone();
        let thread = std::thread::Builder::new()
            .name("can-bus-hub".into())
            .spawn(move || {
                // Termination signals belong to the daemon's signal thread,
                // even when this thread was started before it blocked them.
                let mut signals = nix::sys::signal::SigSet::empty();
                signals.add(nix::sys::signal::Signal::SIGTERM);
                signals.add(nix::sys::signal::Signal::SIGINT);
                let _ = signals.thread_block();
                if let Err(e) = self.run(Some(stop_fd.as_fd())) {
                    log::error!("CAN bus hub {} failed: {e}", self.path.display());
                }
            })?;
        Ok(HubHandle {
            stop,
            thread: Some(thread),
        })
    }

    /// Serve until `stop` becomes readable (or forever without one).
    pub fn run(&self, stop: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut state = HubState::default();
        loop {
            let (stop_ready, listener_ready, ready) = {
                let mut fds = Vec::with_capacity(state.members.len() + 2);
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                if let Some(s) = stop {
                    fds.push(PollFd::new(s, PollFlags::POLLIN));
                }
                let base = fds.len();
                for m in &state.members {
                    let mut flags = PollFlags::POLLIN;
                    if !m.outbox.is_empty() {
                        flags |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(m.fd.as_fd(), flags));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                let fired = |f: &PollFd<'_>| f.revents().unwrap_or(PollFlags::empty());
                (
                    stop.is_some() && !fired(&fds[1]).is_empty(),
                    !fired(&fds[0]).is_empty(),
                    fds[base..].iter().map(fired).collect::<Vec<_>>(),
                )
            };
            if stop_ready {
                return Ok(());
            }
            for (i, revents) in ready.into_iter().enumerate() {
                if revents.is_empty() {
                    continue;
                }
                if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    state.read_member(i);
                }
            }
            if listener_ready {
                self.accept_all(&mut state);
            }
            state.arbitrate();
            state.flush_all();
            state.reap();
        }
    }

    fn accept_all(&self, state: &mut HubState) {
        loop {
            match socket::accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(raw) => {
                    // SAFETY: accept4 returned a new descriptor that nothing
                    // else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    if state.members.len() >= MAX_MEMBERS {
                        log::warn!("CAN bus is full ({MAX_MEMBERS} members); refusing one");
                        continue;
                    }
                    state.next_id += 1;
                    state.members.push(Member {
                        id: state.next_id,
                        fd,
                        node: false,
                        online: false,
                        outbox: VecDeque::new(),
                        queued: 0,
                        dead: false,
                    });
                    log::debug!("CAN bus: member {} joined", state.next_id);
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(_) => return,
            }
        }
    }
}

struct Member {
    id: u64,
    fd: OwnedFd,
    node: bool,
    online: bool,
    outbox: VecDeque<[u8; MSG_SIZE]>,
    /// Frames of this member waiting in the hub's queue.
    queued: usize,
    dead: bool,
}

impl Member {
    fn post(&mut self, msg: &Message, always: bool) -> bool {
        if always || self.outbox.len() < MAX_OUTBOX {
            self.outbox.push_back(msg.encode());
            true
        } else {
            false
        }
    }

    fn flush(&mut self) {
        while let Some(m) = self.outbox.front() {
            match send_msg(self.fd.as_fd(), m) {
                Ok(SendResult::Sent) => {
                    self.outbox.pop_front();
                }
                Ok(SendResult::Full) => return,
                Ok(SendResult::Gone) | Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }
}

#[derive(Default)]
struct HubState {
    members: Vec<Member>,
    /// Frames waiting to be transmitted, in arrival order: (sender, frame).
    queue: VecDeque<(u64, CanFrame)>,
    next_id: u64,
    dropped: u64,
}

impl HubState {
    fn read_member(&mut self, index: usize) {
        // A bounded number per round keeps one chatty member from starving
        // the others (poll reports it again).
        for _ in 0..256 {
            let Some(m) = self.members.get_mut(index) else {
                return;
            };
            if m.dead {
                return;
            }
            match recv_msg(m.fd.as_fd()) {
                Ok(Recv::Message(Ok(msg))) => self.handle(index, msg),
                Ok(Recv::Message(Err(e))) => {
                    log::warn!("CAN bus: member {} sent a bad message: {e}", m.id);
                    m.dead = true;
                }
                Ok(Recv::Empty) => return,
                Ok(Recv::Closed) | Err(_) => {
                    m.dead = true;
                    return;
                }
            }
        }
    }

    fn handle(&mut self, index: usize, msg: Message) {
        let Some(m) = self.members.get_mut(index) else {
            return;
        };
        let id = m.id;
        match msg {
            Message::Hello(role) => m.node = role == Role::Node,
            Message::State(online) => {
                m.online = online && m.node;
                if !m.online {
                    self.withdraw(id);
                }
            }
            Message::Frame(frame) => {
                if !m.online || m.queued >= MAX_QUEUED {
                    self.dropped += 1;
                    log::debug!("CAN bus: dropped {frame} of member {id}");
                } else {
                    m.queued += 1;
                    self.queue.push_back((id, frame));
                }
            }
            Message::Echo(_) => {}
            Message::Error(e) => {
                for other in self.members.iter_mut().filter(|o| o.id != id) {
                    if !other.post(&Message::Error(e), false) {
                        self.dropped += 1;
                    }
                }
            }
        }
    }

    /// Drop the frames member `id` still has waiting.
    fn withdraw(&mut self, id: u64) {
        let before = self.queue.len();
        self.queue.retain(|(sender, _)| *sender != id);
        self.dropped += (before - self.queue.len()) as u64;
        if let Some(m) = self.members.iter_mut().find(|m| m.id == id) {
            m.queued = 0;
        }
    }

    /// Transmit every waiting frame, in order, if another node acknowledges
    /// it: senders are online nodes, so that takes two online nodes.
    fn arbitrate(&mut self) {
        let online = self.members.iter().filter(|m| m.online && !m.dead).count();
        if online < 2 {
            return;
        }
        while let Some((sender, frame)) = self.queue.pop_front() {
            for m in self.members.iter_mut() {
                if m.id == sender {
                    m.queued = m.queued.saturating_sub(1);
                    m.post(&Message::Echo(frame), true);
                } else if !m.post(&Message::Frame(frame), false) {
                    self.dropped += 1;
                }
            }
        }
    }

    fn flush_all(&mut self) {
        for m in &mut self.members {
            m.flush();
        }
    }

    fn reap(&mut self) {
        let dead: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.dead)
            .map(|m| m.id)
            .collect();
        for id in dead {
            self.withdraw(id);
            log::debug!("CAN bus: member {id} left");
        }
        self.members.retain(|m| !m.dead);
    }
}

/// A member of the software bus.
pub struct BusClient {
    path: PathBuf,
    fd: OwnedFd,
    role: Role,
    allow_fd: bool,
    online: bool,
    /// False once the hub is gone, until [`CanHost::reconnect`].
    connected: bool,
    /// Messages the hub could not take yet, oldest first.
    backlog: VecDeque<[u8; MSG_SIZE]>,
}

impl std::fmt::Debug for BusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusClient")
            .field("path", &self.path)
            .field("role", &self.role)
            .field("online", &self.online)
            .finish()
    }
}

impl BusClient {
    /// Join the bus at `path` as `role`, becoming its hub if there is none.
    /// Waits up to `timeout` while another process is becoming the hub.
    pub fn connect(path: &Path, role: Role, allow_fd: bool, timeout: Duration) -> io::Result<Self> {
        let deadline = Instant::now() + timeout;
        let fd = loop {
            if let Some(fd) = connect_once(path)? {
                break fd;
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no hub answers on the CAN bus {}", path.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut client = Self {
            path: path.into(),
            fd,
            role,
            allow_fd,
            online: false,
            connected: true,
            backlog: VecDeque::new(),
        };
        client.post(&Message::Hello(role))?;
        Ok(client)
    }

    /// Send a message, keeping it for later if the hub is behind.
    pub fn post(&mut self, msg: &Message) -> io::Result<()> {
        self.backlog.push_back(msg.encode());
        self.flush_backlog().map(drop)
    }

    /// Send what the hub could not take before; `Ok(true)` when all is
    /// sent. While the hub is gone everything waits for the next one.
    pub fn flush_backlog(&mut self) -> io::Result<bool> {
        while let Some(m) = self.backlog.front() {
            if !self.connected {
                return Ok(false);
            }
            match send_msg(self.fd.as_fd(), m)? {
                SendResult::Sent => {
                    self.backlog.pop_front();
                }
                SendResult::Full => return Ok(false),
                SendResult::Gone => self.connected = false,
            }
        }
        Ok(true)
    }

    /// Whether messages are waiting for the hub to take them.
    pub fn backlogged(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Wait up to `timeout` for the next message (for tools and tests).
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Option<Received>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.recv()? {
                return Ok(Some(r));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = u16::try_from(left.as_millis().min(10_000)).unwrap_or(10_000);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The bus path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CanHost for BusClient {
    fn send(&mut self, frame: &CanFrame) -> io::Result<Sent> {
        // Without a hub the frame waits for the next one (rejoining takes
        // a moment; the device holds the request meanwhile).
        if !self.flush_backlog()? {
            return Ok(Sent::WouldBlock);
        }
        match send_msg(self.fd.as_fd(), &Message::Frame(*frame).encode())? {
            SendResult::Sent => Ok(Sent::Queued),
            SendResult::Full => Ok(Sent::WouldBlock),
            SendResult::Gone => {
                self.connected = false;
                Ok(Sent::WouldBlock)
            }
        }
    }

    fn recv(&mut self) -> io::Result<Option<Received>> {
        loop {
            return match recv_msg(self.fd.as_fd())? {
                Recv::Empty => Ok(None),
                Recv::Closed => {
                    self.connected = false;
                    Ok(Some(Received::Disconnected))
                }
                Recv::Message(Ok(Message::Frame(f))) => Ok(Some(Received::Frame(f))),
                Recv::Message(Ok(Message::Echo(f))) => Ok(Some(Received::Echo(f))),
                Recv::Message(Ok(Message::Error(e))) => Ok(Some(Received::Error(e))),
                Recv::Message(Ok(other)) => {
                    log::debug!("CAN bus: ignoring {other:?} from the hub");
                    continue;
                }
                Recv::Message(Err(e)) => {
                    log::debug!("CAN bus: ignoring a bad message from the hub: {e}");
                    continue;
                }
            };
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn fd_capable(&self) -> bool {
        self.allow_fd
    }

    fn set_online(&mut self, online: bool) -> io::Result<()> {
        self.online = online;
        self.post(&Message::State(online))
    }

    fn link_up(&self) -> bool {
        true
    }

    fn wants_write(&self) -> bool {
        self.backlogged()
    }

    fn flush(&mut self) -> io::Result<bool> {
        self.flush_backlog()
    }

    fn reconnect(&mut self) -> io::Result<bool> {
        let Some(fd) = connect_once(&self.path)? else {
            return Ok(false);
        };
        self.fd = fd;
        self.connected = true;
        // A new hub knows nothing of this member: introduce it again.
        self.backlog.clear();
        self.post(&Message::Hello(self.role))?;
        if self.online {
            self.post(&Message::State(true))?;
        }
        log::info!("rejoined the CAN bus {}", self.path.display());
        Ok(true)
    }

    fn name(&self) -> String {
        format!("software CAN bus {}", self.path.display())
    }
}

/// Send an error frame to every other member of the bus at `path` (how
/// tests and demos inject a bus-off).
pub fn inject(path: &Path, error: ErrorFrame) -> io::Result<()> {
    let mut c = BusClient::connect(path, Role::Monitor, true, CONNECT_TIMEOUT)?;
    c.post(&Message::Error(error))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while !c.flush_backlog()? {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the CAN bus hub does not take messages",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn frame(s: &str) -> CanFrame {
        s.parse().unwrap()
    }

    fn node(path: &Path) -> BusClient {
        let mut c = BusClient::connect(path, Role::Node, true, WAIT).unwrap();
        c.set_online(true).unwrap();
        c
    }

    /// A bus with its own (stoppable) hub.
    fn bus() -> (tempfile::TempDir, PathBuf, HubHandle) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus");
        let hub = Hub::bind(&path)
            .unwrap()
            .unwrap()
            .spawn_stoppable()
            .unwrap();
        (dir, path, hub)
    }

    #[test]
    fn every_message_round_trips() {
        for m in [
            Message::Hello(Role::Node),
            Message::Hello(Role::Monitor),
            Message::State(true),
            Message::Frame(frame("123#DEADBEEF")),
            Message::Echo(frame("1ABCDEF0#R8")),
            Message::Frame(frame(&format!("7FF##1{}", "55".repeat(64)))),
            Message::Error(ErrorFrame::bus_off()),
        ] {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = Message::Frame(frame("123#00")).encode();
        assert_eq!(Message::decode(&good[..79]), Err(ProtocolError::Size(79)));
        let mut b = good;
        b[3] = 9;
        assert_eq!(Message::decode(&b), Err(ProtocolError::Version(9)));
        let mut b = good;
        b[0] = 77;
        assert_eq!(Message::decode(&b), Err(ProtocolError::Malformed(77)));
        let mut b = good;
        b[2] = 9; // classic frame of 9 bytes
        assert!(matches!(Message::decode(&b), Err(ProtocolError::Frame(_))));
        let mut b = good;
        b[4..8].copy_from_slice(&0x800u32.to_le_bytes());
        assert!(matches!(Message::decode(&b), Err(ProtocolError::Frame(_))));
    }

    #[test]
    fn frame_reaches_the_other_node_and_the_sender_gets_an_echo() {
        let (_d, path, hub) = bus();
        let mut a = node(&path);
        let mut b = node(&path);
        let f = frame("123#0102");

        assert_eq!(a.send(&f).unwrap(), Sent::Queued);

        assert_eq!(b.wait(WAIT).unwrap(), Some(Received::Frame(f)));
        assert_eq!(a.wait(WAIT).unwrap(), Some(Received::Echo(f)));
        hub.stop();
    }

    #[test]
    fn frame_waits_until_another_node_is_online_to_acknowledge_it() {
        let (_d, path, hub) = bus();
        let mut a = node(&path);
        let mut b = BusClient::connect(&path, Role::Node, true, WAIT).unwrap();
        let f = frame("321#AA");
        a.send(&f).unwrap();

        assert_eq!(a.wait(Duration::from_millis(200)).unwrap(), None);
        b.set_online(true).unwrap();

        assert_eq!(a.wait(WAIT).unwrap(), Some(Received::Echo(f)));
        assert_eq!(b.wait(WAIT).unwrap(), Some(Received::Frame(f)));
        hub.stop();
    }

    #[test]
    fn frames_withdrawn_by_going_offline_are_never_transmitted() {
        let (_d, path, hub) = bus();
        let mut a = node(&path);
        let mut b = BusClient::connect(&path, Role::Node, true, WAIT).unwrap();
        a.send(&frame("111#01")).unwrap();
        a.set_online(false).unwrap();
        a.set_online(true).unwrap();
        let second = frame("222#02");
        a.send(&second).unwrap();

        b.set_online(true).unwrap();

        assert_eq!(b.wait(WAIT).unwrap(), Some(Received::Frame(second)));
        assert_eq!(a.wait(WAIT).unwrap(), Some(Received::Echo(second)));
        hub.stop();
    }

    #[test]
    fn monitor_sees_frames_but_does_not_acknowledge() {
        let (_d, path, hub) = bus();
        let mut a = node(&path);
        let mut mon = BusClient::connect(&path, Role::Monitor, true, WAIT).unwrap();
        mon.set_online(true).unwrap();
        let f = frame("100#");
        a.send(&f).unwrap();
        assert_eq!(mon.wait(Duration::from_millis(200)).unwrap(), None);

        let _b = node(&path);

        assert_eq!(mon.wait(WAIT).unwrap(), Some(Received::Frame(f)));
        hub.stop();
    }

    #[test]
    fn injected_error_reaches_every_other_member() {
        let (_d, path, hub) = bus();
        let mut a = node(&path);
        let mut b = BusClient::connect(&path, Role::Node, true, WAIT).unwrap();

        inject(&path, ErrorFrame::bus_off()).unwrap();

        for c in [&mut a, &mut b] {
            assert_eq!(
                c.wait(WAIT).unwrap(),
                Some(Received::Error(ErrorFrame::bus_off()))
            );
        }
        hub.stop();
    }

    #[test]
    fn member_sending_garbage_is_disconnected_and_the_bus_goes_on() {
        let (_d, path, hub) = bus();
        let mut a = node(&path);
        let mut b = node(&path);
        let bad = seqpacket().unwrap();
        socket::connect(bad.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        socket::send(bad.as_raw_fd(), b"garbage", MsgFlags::empty()).unwrap();
        let f = frame("0AB#CD");

        a.send(&f).unwrap();

        assert_eq!(b.wait(WAIT).unwrap(), Some(Received::Frame(f)));
        // It may get the frame first (it joined before it was read); then
        // the end of the connection.
        let mut buf = [0u8; 100];
        let mut closed = false;
        for _ in 0..3 {
            let mut fds = [PollFd::new(bad.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
            if socket::recv(bad.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).unwrap() == 0 {
                closed = true;
                break;
            }
        }
        assert!(closed, "the bad member was not disconnected");
        hub.stop();
    }

    #[test]
    fn first_member_becomes_the_hub_and_a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus");
        // A socket file nobody listens on (a hub that died).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let mut a = node(&path);
        let mut b = node(&path);
        let f = frame("001#01");
        a.send(&f).unwrap();

        assert_eq!(b.wait(WAIT).unwrap(), Some(Received::Frame(f)));
    }

    #[test]
    fn members_rejoin_when_the_hub_ends() {
        let (_d, path, hub) = bus();
        let mut a = node(&path);
        let mut b = node(&path);

        hub.stop();
        assert_eq!(a.wait(WAIT).unwrap(), Some(Received::Disconnected));
        assert_eq!(b.wait(WAIT).unwrap(), Some(Received::Disconnected));
        // The first to rejoin becomes the hub (the old one released its lock).
        assert!(a.reconnect().unwrap());
        assert!(b.reconnect().unwrap());
        let f = frame("002#02");
        a.send(&f).unwrap();

        assert_eq!(b.wait(WAIT).unwrap(), Some(Received::Frame(f)));
    }

    #[test]
    fn path_that_is_not_a_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus");
        std::fs::write(&path, b"x").unwrap();

        let err = BusClient::connect(&path, Role::Node, true, WAIT).unwrap_err();

        assert!(err.to_string().contains("not a socket"), "{err}");
    }
}
