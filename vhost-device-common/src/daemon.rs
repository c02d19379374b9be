// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The daemon lifecycle, shared by every device.
//!
//! [`run`] follows QEMU's "Backend program conventions" (`docs/interop/vhost-user.rst`):
//! it never daemonizes and keeps stdio, serves `--socket-path` or an inherited
//! `--socket-fd`, and answers `--print-capabilities`.
//!
//! Lifecycle of one socket:
//!
//! 1. The listener is bound once and kept for the life of the process, so there is
//!    never a window in which the socket path is missing. A stale socket file left
//!    by a dead daemon is replaced; a path where another daemon still listens, or
//!    that is not a socket, is a startup error.
//! 2. For each front end: a fresh device and backend are built (no state survives
//!    a disconnect), the front end is accepted and served until it disconnects,
//!    then the connection's workers are stopped and the next front end is accepted.
//!    A guest reboot or QEMU restart needs no daemon restart.
//! 3. SIGTERM or SIGINT closes every connection, stops every worker, removes the
//!    socket files this process created and returns within about a second.
//!
//! `READY=1` is sent to `$NOTIFY_SOCKET` (systemd `Type=notify`) once all sockets
//! listen. A host failure in a device ends that device's connection (logged with
//! its whole cause chain); the other devices of the process keep serving and the
//! socket accepts the next front end. A failure of the process itself (signals,
//! threads, a device that cannot be created) ends it with the whole cause chain.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
};
use thiserror::Error;
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::GuestMemoryAtomic;
use vmm_sys_util::eventfd::EventFd;

use crate::cli::{CommonArgs, SocketSource};
use crate::device::{DeviceBackend, VirtioDevice};
use crate::error::{report, HostError};
use crate::events::HostEvents;
use crate::proxy::Relay;

/// How long shutdown waits for connections and workers to end.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);

/// What a daemon tells the world about itself.
#[derive(Debug, Clone, Copy)]
pub struct DeviceInfo {
    /// Program name, used in thread names and logs (`vhost-device-rng`).
    pub name: &'static str,
    /// Back-end type as QEMU's `vhost-user.json` names it (`rng`, `vsock`, …).
    pub kind: &'static str,
}

impl DeviceInfo {
    /// The JSON printed by `--print-capabilities`.
    pub fn capabilities_json(&self) -> String {
        format!(
            "{{\n  \"type\": \"{}\",\n  \"features\": []\n}}\n",
            self.kind
        )
    }
}

/// `vhost_user_backend::Error` with its cause kept.
#[derive(Debug)]
pub struct DaemonError(pub vhost_user_backend::Error);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use vhost_user_backend::Error as E;
        match &self.0 {
            E::NewVhostUserHandler(_) => f.write_str("cannot create the vhost-user handler"),
            E::CreateBackendListener(_) => f.write_str("cannot accept a front end"),
            E::CreateBackendReqHandler(_) => f.write_str("cannot create the request handler"),
            E::CreateVhostUserListener(_) => f.write_str("cannot create the listener"),
            E::StartDaemon(_) => f.write_str("cannot start the connection thread"),
            E::WaitDaemon(_) => f.write_str("the connection thread panicked"),
            E::HandleRequest(_) => f.write_str("vhost-user request failed"),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use vhost_user_backend::Error as E;
        match &self.0 {
            E::NewVhostUserHandler(e) => Some(e),
            E::CreateBackendListener(e)
            | E::CreateBackendReqHandler(e)
            | E::CreateVhostUserListener(e)
            | E::HandleRequest(e) => Some(e),
            E::StartDaemon(e) => Some(e),
            E::WaitDaemon(_) => None,
        }
    }
}

/// Why a daemon could not start or had to stop.
#[derive(Debug, Error)]
pub enum Error {
    /// The device's own options are invalid.
    #[error("invalid device configuration")]
    Setup(#[source] HostError),
    /// Neither `--socket-path` nor `--socket-fd` was given.
    #[error("one of --socket-path PATH or --socket-fd FD is required (see --help)")]
    NoSocket,
    /// Binding a socket path failed.
    #[error("cannot listen on {}", path.display())]
    Listen {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another process still listens on the path.
    #[error("{} is in use by another running daemon; stop it or choose another --socket-path", path.display())]
    SocketInUse {
        /// The path.
        path: PathBuf,
    },
    /// The path exists and is not a socket.
    #[error("{} exists and is not a socket; remove it or choose another --socket-path", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// An inherited descriptor is unusable.
    #[error("--socket-fd {fd} is not an open, listening Unix stream socket")]
    BadSocketFd {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Signal handling could not be set up.
    #[error("cannot set up signal handling")]
    Signals(#[source] io::Error),
    /// A thread could not be started.
    #[error("cannot start a thread")]
    Thread(#[source] io::Error),
    /// The device could not be created for a new connection.
    #[error("cannot create device {index}")]
    DeviceCreate {
        /// Socket index.
        index: u32,
        /// Why.
        #[source]
        source: HostError,
    },
    /// The device failed on the host side while serving.
    #[error("device {index} failed")]
    DeviceFailed {
        /// Socket index.
        index: u32,
        /// Why.
        #[source]
        source: HostError,
    },
    /// The vhost-user library failed on the host side.
    #[error("device {index}")]
    Daemon {
        /// Socket index.
        index: u32,
        /// Why.
        #[source]
        source: DaemonError,
    },
}

/// Turn the result of a daemon's `run` into the process exit status, printing
/// the whole cause chain of an error once on stderr.
pub fn exit_code<E: std::error::Error + 'static>(name: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// State shared by the serve threads and the main thread.
struct Shared {
    stop: EventFd,
    conns: Mutex<Vec<Option<ShutdownHandle>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        let fd = self.stop.as_raw_fd();
        // SAFETY: `self.stop` owns `fd` and outlives the borrow.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut fds = [PollFd::new(borrowed, PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    fn set_conn(&self, index: usize, handle: Option<ShutdownHandle>) {
        let mut conns = crate::lock(&self.conns);
        if let Some(slot) = conns.get_mut(index) {
            *slot = handle;
        }
    }

    fn begin_shutdown(&self) {
        let _ = self.stop.write(1);
        let conns = crate::lock(&self.conns);
        for handle in conns.iter().flatten() {
            handle.shutdown();
        }
    }
}

enum Event {
    Signal(Signal),
    Ended(Result<(), Error>),
}

/// Run a daemon: answer `--print-capabilities`, or bind the sockets and serve
/// devices made by the factory that `setup` returns until SIGTERM/SIGINT.
///
/// `setup` validates the device options once, before any socket is touched; the
/// factory it returns is called with the socket index for every new connection.
pub fn run<D, F, S>(common: &CommonArgs, info: &DeviceInfo, setup: S) -> Result<(), Error>
where
    D: VirtioDevice,
    F: Fn(u32) -> Result<D, HostError> + Send + Sync + 'static,
    S: FnOnce() -> Result<F, HostError>,
{
    let sockets = common.sockets();
    if sockets.is_none() && !common.print_capabilities {
        return Err(Error::NoSocket);
    }
    run_with_sockets(common, info, || {
        let factory = setup()?;
        Ok((sockets.ok_or("no socket")?, factory))
    })
}

/// Like [`run`], for daemons whose own options name the sockets (vsock's
/// `--vm socket=…`): `setup` returns the sockets together with the factory.
pub fn run_with_sockets<D, F, S>(
    common: &CommonArgs,
    info: &DeviceInfo,
    setup: S,
) -> Result<(), Error>
where
    D: VirtioDevice,
    F: Fn(u32) -> Result<D, HostError> + Send + Sync + 'static,
    S: FnOnce() -> Result<(SocketSource, F), HostError>,
{
    common.init_logging();
    if common.print_capabilities {
        print!("{}", info.capabilities_json());
        return Ok(());
    }
    // Block the termination signals before any thread starts (including
    // threads a device starts in `setup`), so that every thread inherits the
    // mask and only the signal thread receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| Error::Signals(io::Error::from(e)))?;

    let (sockets, factory) = setup().map_err(Error::Setup)?;
    let factory = Arc::new(factory);

    let mut created = Vec::new();
    let listeners = match &sockets {
        SocketSource::Paths(paths) => {
            let mut ls = Vec::new();
            for path in paths {
                let l = bind_path(path).inspect_err(|_| remove_paths(&created))?;
                created.push(path.clone());
                ls.push(l);
            }
            ls
        }
        SocketSource::Fds(fds) => fds
            .iter()
            .map(|&fd| adopt_fd(fd))
            .collect::<Result<_, _>>()?,
    };

    let shared = Arc::new(Shared {
        stop: EventFd::new(libc::EFD_CLOEXEC).map_err(Error::Signals)?,
        conns: Mutex::new(vec![None; listeners.len()]),
    });
    let (tx, rx) = mpsc::channel();

    let sig_tx = tx.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(sig) = signals.wait() {
                if sig_tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map_err(Error::Thread)?;

    let count = listeners.len();
    let poll = effective_poll(common.poll_max());
    for (index, listener) in listeners.into_iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let tx = tx.clone();
        let shared = shared.clone();
        let factory = factory.clone();
        let info = *info;
        thread::Builder::new()
            .name(format!("{}-{index}", info.kind))
            .spawn(move || {
                let result = serve(
                    index,
                    Listener::from(listener),
                    &*factory,
                    &info,
                    &shared,
                    poll,
                );
                let _ = tx.send(Event::Ended(result));
            })
            .map_err(Error::Thread)?;
    }
    drop(tx);

    log::info!(
        "{} listening on {}",
        info.name,
        match &sockets {
            SocketSource::Paths(p) => p
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            SocketSource::Fds(f) => f
                .iter()
                .map(|f| format!("fd {f}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    );
    sd_notify("READY=1");

    let mut result = Ok(());
    let mut running = count;
    while running > 0 {
        match rx.recv() {
            Ok(Event::Signal(sig)) => {
                log::info!("received {sig}, shutting down");
                break;
            }
            Ok(Event::Ended(r)) => {
                running -= 1;
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
            }
            Err(_) => break,
        }
    }
    sd_notify("STOPPING=1");
    shared.begin_shutdown();

    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while running > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Ended(r)) => {
                running -= 1;
                if let (Err(e), true) = (r, result.is_ok()) {
                    result = Err(e);
                }
            }
            Ok(Event::Signal(_)) => {}
            Err(_) => {
                log::warn!("{running} connection(s) did not end in time");
                break;
            }
        }
    }
    remove_paths(&created);
    result
}

/// The poll ceiling to use: `--poll-us`, unless the process can run on one
/// CPU only. There a polling worker only keeps the driver (or the thread
/// that produces its requests) from running until the window ends, and the
/// window would grow to the ceiling: every request would wait for it.
fn effective_poll(max: Duration) -> Duration {
    let cpus = thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if !max.is_zero() && cpus < 2 {
        log::info!("one CPU available: not polling (--poll-us ignored)");
        return Duration::ZERO;
    }
    max
}

/// Serve socket `index` until shutdown or a fatal device error.
fn serve<D, F>(
    index: u32,
    listener: Listener,
    factory: &F,
    info: &DeviceInfo,
    shared: &Shared,
    poll: Duration,
) -> Result<(), Error>
where
    D: VirtioDevice,
    F: Fn(u32) -> Result<D, HostError>,
{
    let slot = index as usize;
    let daemon_err = |e| Error::Daemon {
        index,
        source: DaemonError(e),
    };
    loop {
        if !wait_for_client(&listener, &shared.stop)? {
            return Ok(());
        }
        let Some(frontend) = listener.accept().map_err(|e| Error::Daemon {
            index,
            source: DaemonError(vhost_user_backend::Error::CreateBackendListener(e)),
        })?
        else {
            continue;
        };
        let mem = GuestMemoryAtomic::new(crate::queue::GuestMemory::new());
        let device = factory(index).map_err(|source| Error::DeviceCreate { index, source })?;
        let num_queues = device.num_queues();
        let backend = Arc::new(DeviceBackend::new(device, info.name, mem.clone()).with_poll(poll));
        let mut daemon =
            VhostUserDaemon::new(format!("{}-{index}", info.kind), backend.clone(), mem)
                .map_err(daemon_err)?;
        let handlers = daemon.get_epoll_handlers();
        let epolls: Vec<RawFd> = handlers.iter().map(|h| h.as_raw_fd()).collect();
        HostEvents::new(&epolls, num_queues)
            .and_then(|events| backend.device().attach(events))
            .and_then(|()| backend.watch_epolls(&epolls))
            .map_err(|e| Error::DeviceCreate {
                index,
                source: Box::new(e),
            })?;

        // vhost-user-backend serves one end of a private pair; the relay
        // copies the front end's messages to it (see `crate::proxy`).
        let (mut library, ours) = library_pair().map_err(Error::Thread)?;
        daemon.start(&mut library).map_err(daemon_err)?;
        drop(library);
        let channel = backend.backend_channel().clone();
        let relay = Relay::start(frontend, ours, move |sender| {
            channel.set_config_sender(sender);
        })
        .map_err(Error::Thread)?;
        if let Some(handle) = daemon.shutdown_handle() {
            backend.set_shutdown_handle(handle.clone());
            shared.set_conn(slot, Some(handle));
        }
        if shared.stopping() {
            daemon.request_shutdown();
        }
        log::info!("device {index}: front end connected");

        let result = daemon.wait();
        shared.set_conn(slot, None);
        for handler in &handlers {
            handler.send_exit_event();
        }
        drop(handlers);
        drop(daemon);
        relay.join();
        backend.release_exit_events();

        // A host failure ends this connection only: the other devices of the
        // process keep serving, and this socket accepts the next front end.
        if let Some(source) = backend.take_fatal() {
            let err = Error::DeviceFailed { index, source };
            log::error!("{}; waiting for the next front end", report(&err));
            continue;
        }
        match result {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                VhostUserError::Disconnected | VhostUserError::PartialMessage,
            )) => log::info!("device {index}: front end disconnected"),
            Err(e) => log::warn!(
                "device {index}: connection ended: {}",
                report(&DaemonError(e))
            ),
        }
    }
}

/// A connected socket pair whose first end comes out of a `Listener`, the
/// only way vhost-user-backend takes a connection. The listener lives in a
/// private directory (mode 0700) only until the pair is made.
fn library_pair() -> io::Result<(Listener, UnixStream)> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "vhost-device.{}.{}.{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    };
    let path = dir.join("c");
    let pair = UnixListener::bind(&path)
        .and_then(|l| Ok((Listener::from(l), UnixStream::connect(&path)?)));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    pair
}

/// Wait until a front end connects (true) or shutdown begins (false).
fn wait_for_client(listener: &Listener, stop: &EventFd) -> Result<bool, Error> {
    // SAFETY: both descriptors are owned by objects that outlive this call.
    let (lfd, sfd) = unsafe {
        (
            BorrowedFd::borrow_raw(listener.as_raw_fd()),
            BorrowedFd::borrow_raw(stop.as_raw_fd()),
        )
    };
    loop {
        let mut fds = [
            PollFd::new(lfd, PollFlags::POLLIN),
            PollFd::new(sfd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                if ready(&fds[1]) {
                    return Ok(false);
                }
                if ready(&fds[0]) {
                    return Ok(true);
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Signals(io::Error::from(e))),
        }
    }
}

/// Bind `path`, replacing a stale socket file but never a live one.
fn bind_path(path: &Path) -> Result<UnixListener, Error> {
    crate::control::bind_replacing_stale(path).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => Error::NotASocket { path: path.into() },
        io::ErrorKind::AddrInUse => Error::SocketInUse { path: path.into() },
        _ => Error::Listen {
            path: path.into(),
            source,
        },
    })
}

/// Take ownership of an inherited listening socket after checking what it is.
fn adopt_fd(fd: RawFd) -> Result<UnixListener, Error> {
    let bad = |source: io::Error| Error::BadSocketFd { fd, source };
    let errno = |e: nix::Error| bad(io::Error::from(e));
    // Is it open at all? (BorrowedFd must only wrap an open descriptor.)
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).map_err(errno)?;
    // SAFETY: `fd` was just checked to be open; we only borrow it to inspect it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let addr: SockaddrStorage = getsockname(fd).map_err(errno)?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err(bad(io::Error::other("not an AF_UNIX socket")));
    }
    if getsockopt(&borrowed, sockopt::SockType).map_err(errno)? != SockType::Stream {
        return Err(bad(io::Error::other("not a SOCK_STREAM socket")));
    }
    if !getsockopt(&borrowed, sockopt::AcceptConn).map_err(errno)? {
        return Err(bad(io::Error::other("socket is not listening")));
    }
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(errno)?;
    // SAFETY: the descriptor is an open, listening AF_UNIX stream socket handed to
    // this process on the command line; by that contract nothing else in the
    // process owns it, so the listener may take ownership and close it.
    Ok(unsafe { UnixListener::from_raw_fd(fd) })
}

fn remove_paths(paths: &[PathBuf]) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(p) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove {}: {e}", p.display());
            }
        }
    }
}

/// Send a state line to systemd's `$NOTIFY_SOCKET`, if set.
fn sd_notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = target.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(Path::new(OsStr::from_bytes(bytes))),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        log::warn!("cannot notify {}: {e}", target.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_name_the_backend_type() {
        let info = DeviceInfo {
            name: "vhost-device-x",
            kind: "rng",
        };
        assert!(info.capabilities_json().contains("\"type\": \"rng\""));
    }

    #[test]
    fn stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(bind_path(&path).is_ok());
    }

    #[test]
    fn live_socket_is_not_stolen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let _live = UnixListener::bind(&path).unwrap();
        assert!(matches!(bind_path(&path), Err(Error::SocketInUse { .. })));
    }

    #[test]
    fn regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(bind_path(&path), Err(Error::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[test]
    fn closed_fd_is_refused() {
        assert!(matches!(adopt_fd(987_654), Err(Error::BadSocketFd { .. })));
    }

    #[test]
    fn non_listening_socket_fd_is_refused() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        assert!(matches!(adopt_fd(fd), Err(Error::BadSocketFd { .. })));
    }
}
