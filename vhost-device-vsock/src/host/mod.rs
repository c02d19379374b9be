// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host ends of guest connections: Unix sockets, in the "hybrid vsock"
//! convention.
//!
//! - Host to guest: a host program connects to `--uds-path` and writes
//!   `CONNECT <port>\n`; once the guest accepts, it reads `OK <host port>\n` and
//!   the socket carries the stream.
//! - Guest to host: a guest connection to CID 2, port P is a connection to the
//!   Unix socket `<uds-path>_P`, where a host program listens.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

/// The longest handshake line accepted (`CONNECT 4294967295\n` is 19 bytes).
pub const MAX_HANDSHAKE: usize = 32;

/// The listening socket for host programs; removes its file when dropped.
#[derive(Debug)]
pub struct UdsListener {
    /// The listener (non-blocking).
    pub listener: UnixListener,
    path: PathBuf,
}

impl UdsListener {
    /// Bind `path`, replacing a stale socket file but never a live socket
    /// nor anything that is not a socket (as the vhost-user socket is bound).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let listener = vhost_device_common::control::bind_replacing_stale(path).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::AlreadyExists => "; remove it or choose another --uds-path",
                _ => "",
            };
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}{hint}", path.display()),
            )
        })?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            path: path.into(),
        })
    }
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The host end of one connection: a non-blocking Unix stream or seqpacket socket.
#[derive(Debug)]
pub struct HostSocket {
    fd: OwnedFd,
    /// `SOCK_SEQPACKET` (message boundaries kept) rather than `SOCK_STREAM`.
    pub seqpacket: bool,
}

impl HostSocket {
    /// Receive into `buf`. For a seqpacket socket this is one message, and the
    /// returned length is the message's full length even when `buf` was too
    /// short (`MSG_TRUNC`). `Ok(0)` is end of stream.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let flags = if self.seqpacket {
            MsgFlags::MSG_TRUNC
        } else {
            MsgFlags::empty()
        };
        loop {
            match socket::recv(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf, flags) {
                Err(nix::errno::Errno::EINTR) => {}
                other => return other.map_err(io::Error::from),
            }
        }
    }

    /// Receive one whole message from a seqpacket socket, in a buffer of its
    /// own size (at most `limit` bytes: the rest of a longer message is
    /// dropped). Returns the message and its full length, or `None` at end
    /// of stream. An empty message is a message: the socket has
    /// `SO_PASSCRED` set (see [`connect_unix`]), so every message carries
    /// the sender's credentials and end of stream carries none.
    pub fn recv_message(&self, limit: usize) -> io::Result<Option<(Vec<u8>, usize)>> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        let full = loop {
            let mut cmsg = nix::cmsg_space!(libc::ucred);
            let mut iov = [std::io::IoSliceMut::new(&mut [])];
            match socket::recvmsg::<()>(
                fd,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
            ) {
                Ok(m) => {
                    let is_message = m.cmsgs().map_err(io::Error::from)?.next().is_some();
                    if !is_message && m.bytes == 0 {
                        return Ok(None);
                    }
                    break m.bytes;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        let mut buf = vec![0u8; full.min(limit)];
        let n = loop {
            match socket::recv(fd, &mut buf, MsgFlags::MSG_TRUNC) {
                Err(nix::errno::Errno::EINTR) => {}
                other => break other.map_err(io::Error::from)?,
            }
        };
        buf.truncate(n.min(limit));
        Ok(Some((buf, n)))
    }

    /// Send `buf` (one message on a seqpacket socket).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match socket::send(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                buf,
                MsgFlags::MSG_NOSIGNAL,
            ) {
                Err(nix::errno::Errno::EINTR) => {}
                other => return other.map_err(io::Error::from),
            }
        }
    }

    /// Make room in a seqpacket socket's send buffer for messages of up to
    /// `max` bytes; returns the longest message it now takes (Linux refuses
    /// a message over `SO_SNDBUF` less 32 bytes with `EMSGSIZE`, and caps
    /// the buffer at twice `net.core.wmem_max`).
    pub fn fit_messages(&self, max: usize) -> io::Result<usize> {
        const OVERHEAD: usize = 32;
        let have = socket::getsockopt(&self.fd, socket::sockopt::SndBuf)?;
        if have < max + OVERHEAD {
            // The kernel doubles the value asked for (bookkeeping overhead).
            socket::setsockopt(&self.fd, socket::sockopt::SndBuf, &(max + OVERHEAD))?;
        }
        let have = socket::getsockopt(&self.fd, socket::sockopt::SndBuf)?;
        Ok(have.saturating_sub(OVERHEAD).min(max))
    }

    /// Try a connect to the Unix socket at `path` again (after
    /// [`Progress::Backlog`]).
    pub fn connect_again(&self, path: &Path) -> io::Result<Progress> {
        let addr = UnixAddr::new(path)?;
        progress(socket::connect(
            std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            &addr,
        ))
    }

    /// The CID of an `AF_VSOCK` peer.
    pub fn peer_cid(&self) -> io::Result<u32> {
        let addr: socket::VsockAddr =
            socket::getpeername(std::os::fd::AsRawFd::as_raw_fd(&self.fd))?;
        Ok(addr.cid())
    }

    /// The pending error of a non-blocking connect (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let code =
            socket::getsockopt(&self.fd, socket::sockopt::SocketError).map_err(io::Error::from)?;
        Ok((code != 0).then(|| io::Error::from_raw_os_error(code)))
    }

    /// Half-close: no more receiving (the peer's writes fail).
    pub fn shutdown_read(&self) -> io::Result<()> {
        socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            socket::Shutdown::Read,
        )
        .map_err(io::Error::from)
    }

    /// Half-close: no more sending.
    pub fn shutdown_write(&self) -> io::Result<()> {
        socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            socket::Shutdown::Write,
        )
        .map_err(io::Error::from)
    }
}

impl From<UnixStream> for HostSocket {
    fn from(s: UnixStream) -> Self {
        Self {
            fd: OwnedFd::from(s),
            seqpacket: false,
        }
    }
}

impl AsFd for HostSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// How far a non-blocking connect got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Connected.
    Connected,
    /// Under way: wait for `EPOLLOUT`, then see [`HostSocket::take_error`].
    InProgress,
    /// The Unix listener's backlog is full (`EAGAIN`; a Unix socket never
    /// connects in the background): try again later with
    /// [`HostSocket::connect_again`].
    Backlog,
}

fn progress(result: nix::Result<()>) -> io::Result<Progress> {
    match result {
        Ok(()) | Err(nix::errno::Errno::EISCONN) => Ok(Progress::Connected),
        Err(nix::errno::Errno::EINPROGRESS | nix::errno::Errno::EALREADY) => {
            Ok(Progress::InProgress)
        }
        Err(nix::errno::Errno::EAGAIN) => Ok(Progress::Backlog),
        Err(e) => Err(e.into()),
    }
}

/// The Unix socket where the host program for guest port `port` listens:
/// `<uds_path>_<port>`.
pub fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut name = uds_path.as_os_str().to_owned();
    name.push(format!("_{port}"));
    PathBuf::from(name)
}

/// Start connecting, without blocking, to the host program listening at
/// `path`, with a stream or a seqpacket socket.
pub fn connect_unix(path: &Path, seqpacket: bool) -> io::Result<(HostSocket, Progress)> {
    let ty = if seqpacket {
        SockType::SeqPacket
    } else {
        SockType::Stream
    };
    let fd = socket::socket(
        AddressFamily::Unix,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if seqpacket {
        // Before anything can arrive: see `HostSocket::recv_message`.
        socket::setsockopt(&fd, socket::sockopt::PassCred, &true)?;
    }
    let sock = HostSocket { fd, seqpacket };
    let state = sock.connect_again(path)?;
    Ok((sock, state))
}

/// `VMADDR_CID_ANY`.
const CID_ANY: u32 = u32::MAX;

fn vsock_error(what: String, e: nix::Error) -> io::Error {
    let hint = if e == nix::errno::Errno::EAFNOSUPPORT {
        " (this host has no AF_VSOCK: load vhost_vsock or vsock_loopback)"
    } else {
        ""
    };
    io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}{hint}"))
}

fn vsock_socket() -> nix::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

/// Start a non-blocking connection to host `AF_VSOCK` `cid:port`.
pub fn connect_vsock(cid: u32, port: u32) -> io::Result<(HostSocket, Progress)> {
    let what = || format!("AF_VSOCK {cid}:{port}");
    let fd = vsock_socket().map_err(|e| vsock_error(what(), e))?;
    let addr = socket::VsockAddr::new(cid, port);
    let state = match socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) => Progress::Connected,
        Err(nix::errno::Errno::EINPROGRESS) => Progress::InProgress,
        Err(e) => return Err(vsock_error(what(), e)),
    };
    Ok((
        HostSocket {
            fd,
            seqpacket: false,
        },
        state,
    ))
}

/// Listen on host `AF_VSOCK` `port`, any CID (non-blocking).
pub fn listen_vsock(port: u32) -> io::Result<OwnedFd> {
    let what = || format!("cannot listen on AF_VSOCK port {port}");
    let fd = vsock_socket().map_err(|e| vsock_error(what(), e))?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &socket::VsockAddr::new(CID_ANY, port),
    )
    .map_err(|e| vsock_error(what(), e))?;
    socket::listen(
        &fd,
        socket::Backlog::new(64).map_err(|e| vsock_error(what(), e))?,
    )
    .map_err(|e| vsock_error(what(), e))?;
    Ok(fd)
}

/// Accept one pending connection on a (non-blocking) listener of any family;
/// `None` when there is none.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<HostSocket>> {
    loop {
        match socket::accept4(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        ) {
            Ok(raw) => {
                return Ok(Some(HostSocket {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    fd: unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) },
                    seqpacket: false,
                }));
            }
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            // The peer gave up before it was accepted: next.
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Whether `e` says the process or the system is out of file descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A descriptor kept in reserve for [`accept_or_refuse`].
pub fn reserve_descriptor() -> io::Result<std::fs::File> {
    std::fs::File::open("/dev/null")
}

/// What [`accept_or_refuse`] did.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection.
    Socket(HostSocket),
    /// A connection was waiting but the process is out of descriptors: it
    /// was accepted and closed at once (the peer sees end of stream).
    Refused(io::Error),
    /// No connection is waiting.
    Nothing,
}

/// Accept the next connection waiting on a non-blocking `listener`.
///
/// Out of descriptors, the `reserve` descriptor is closed for a moment to
/// accept the connection and close it at once, so that the peer hears a
/// refusal instead of waiting in the backlog, and the level-triggered
/// listener does not fire again for it. `accept4` takes a descriptor before
/// it looks for a connection, so `EMFILE` alone does not say that one is
/// waiting: without one, [`Accepted::Nothing`]. An error (out of descriptors
/// with no reserve, or anything else) leaves the connection waiting: the
/// caller stops watching the listener until a descriptor is freed.
pub fn accept_or_refuse(
    listener: BorrowedFd<'_>,
    reserve: &mut Option<std::fs::File>,
) -> io::Result<Accepted> {
    match accept(listener) {
        Ok(Some(sock)) => Ok(Accepted::Socket(sock)),
        Ok(None) => Ok(Accepted::Nothing),
        Err(e) if out_of_descriptors(&e) && reserve.is_some() => {
            *reserve = None;
            let waiting = accept(listener);
            let refused = matches!(waiting, Ok(Some(_)));
            drop(waiting);
            *reserve = reserve_descriptor().ok();
            Ok(if refused {
                Accepted::Refused(e)
            } else {
                Accepted::Nothing
            })
        }
        Err(e) => Err(e),
    }
}

/// Raise the soft limit of open descriptors to the hard limit; returns the
/// limit now in force.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

/// Parse a complete handshake line (`CONNECT <port>\n`).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_suffix('\n')?.strip_prefix("CONNECT ")?;
    rest.trim_end_matches('\r').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_af_vsock_is_explained() {
        // The build host has no AF_VSOCK; where one exists this just listens.
        match listen_vsock(47_001) {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("AF_VSOCK"), "{e}"),
        }
    }

    #[test]
    fn connect_line_gives_the_port() {
        assert_eq!(parse_connect(b"CONNECT 1234\n"), Some(1234));
        assert_eq!(parse_connect(b"CONNECT 1234\r\n"), Some(1234));
    }

    #[test]
    fn malformed_connect_lines_are_refused() {
        for line in [
            &b"CONNECT\n"[..],
            b"connect 5\n",
            b"CONNECT 5",
            b"CONNECT -1\n",
            b"CONNECT 99999999999\n",
        ] {
            assert_eq!(parse_connect(line), None, "{line:?}");
        }
    }

    #[test]
    fn listener_refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        std::fs::write(&path, b"keep me").unwrap();

        let err = UdsListener::bind(&path).unwrap_err();

        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }

    #[test]
    fn listener_replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let live = UnixListener::bind(&path).unwrap();
        assert!(UdsListener::bind(&path).is_err(), "a live socket");
        drop(live); // the file stays: a stale socket

        let replaced = UdsListener::bind(&path).unwrap();

        assert!(UnixStream::connect(&path).is_ok());
        drop(replaced);
    }

    #[test]
    fn guest_port_maps_to_suffixed_path() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("v.sock");
        let _l = UnixListener::bind(dir.path().join("v.sock_52")).unwrap();
        let (_, state) = connect_unix(&port_path(&base, 52), false).unwrap();
        assert_eq!(state, Progress::Connected);
        assert!(connect_unix(&port_path(&base, 53), false).is_err());
    }

    #[test]
    fn connect_to_a_full_backlog_does_not_wait_and_completes_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full");
        let listener = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        socket::bind(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            &UnixAddr::new(&path).unwrap(),
        )
        .unwrap();
        socket::listen(&listener, socket::Backlog::new(0).unwrap()).unwrap();
        let _filler = UnixStream::connect(&path).unwrap();

        let (sock, state) = connect_unix(&path, false).unwrap();
        assert_eq!(state, Progress::Backlog);

        let accepted = socket::accept(std::os::fd::AsRawFd::as_raw_fd(&listener)).unwrap();
        assert_eq!(sock.connect_again(&path).unwrap(), Progress::Connected);
        nix::unistd::close(accepted).unwrap();
    }
}

#[cfg(test)]
mod seqpacket_tests {
    use super::*;

    #[test]
    fn seqpacket_messages_keep_boundaries_and_an_empty_one_is_not_end_of_stream() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("v.sock");
        let listener = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = UnixAddr::new(&dir.path().join("v.sock_9")).unwrap();
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&listener), &addr).unwrap();
        socket::listen(&listener, socket::Backlog::new(4).unwrap()).unwrap();
        let (client, _) = connect_unix(&port_path(&base, 9), true).unwrap();
        let server = socket::accept(std::os::fd::AsRawFd::as_raw_fd(&listener)).unwrap();
        let server = HostSocket {
            // SAFETY: accept returned a new descriptor that nothing else owns.
            fd: unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(server) },
            seqpacket: true,
        };
        server.send(b"one").unwrap();
        server.send(b"").unwrap();
        server.send(b"second message").unwrap();
        drop(server);

        assert_eq!(client.recv_message(64).unwrap(), Some((b"one".to_vec(), 3)));
        assert_eq!(
            client.recv_message(64).unwrap(),
            Some((Vec::new(), 0)),
            "an empty message"
        );
        assert_eq!(
            client.recv_message(4).unwrap(),
            Some((b"seco".to_vec(), 14)),
            "a message cut to the limit, with its full length"
        );
        assert_eq!(client.recv_message(64).unwrap(), None, "end of stream");
    }
}
