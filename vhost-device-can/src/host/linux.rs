// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A SocketCAN interface through a raw `AF_CAN` socket
//! (Linux `Documentation/networking/can.rst`, "RAW Protocol Sockets").
//!
//! - The socket is non-blocking and bound to one interface; the device puts
//!   it into the worker epoll, so an idle device costs nothing.
//! - CAN FD is used when the interface's MTU is `CANFD_MTU` (72) or more
//!   (`SIOCGIFMTU`), never guessed from its name; `CAN_RAW_FD_FRAMES` then
//!   makes reads return 16-byte `can_frame`s or 72-byte `canfd_frame`s.
//! - `CAN_RAW_RECV_OWN_MSGS` returns every frame this socket sent once it was
//!   transmitted, marked `MSG_CONFIRM`: the confirmation `LATE_TX_ACK` waits
//!   for. Frames of other sockets on the same host arrive as usual.
//! - `CAN_RAW_ERR_FILTER` with `CAN_ERR_BUSOFF | CAN_ERR_RESTARTED` delivers
//!   the controller's bus-off and restart as error frames.
//! - `ENETDOWN` on a read means the interface went down; `ENOBUFS` on a
//!   write means its transmit queue is full: both make the frame NOT_OK
//!   rather than failing the device. Only an interface that disappears
//!   (`ENODEV`) ends the device's connection.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{CanFrame, CanHost, ErrorFrame, Received, Sent};

/// `sizeof(struct can_frame)`.
const CAN_MTU: usize = 16;
/// `sizeof(struct canfd_frame)`.
const CANFD_MTU: usize = 72;
const CAN_EFF_FLAG: u32 = 0x8000_0000;
const CAN_RTR_FLAG: u32 = 0x4000_0000;
const CAN_ERR_FLAG: u32 = 0x2000_0000;
const CAN_EFF_MASK: u32 = 0x1FFF_FFFF;
const CAN_SFF_MASK: u32 = 0x7FF;
const CANFD_FDF: u8 = 0x04;

/// A raw CAN socket bound to one interface.
#[derive(Debug)]
pub struct SocketCan {
    fd: OwnedFd,
    name: String,
    fd_capable: bool,
}

/// `sizeof(T)` as a `socklen_t` (our structs are far below 4 GiB).
fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn setsockopt_u32(fd: BorrowedFd<'_>, level: i32, name: i32, value: u32) -> io::Result<()> {
    // SAFETY: `value` lives for the call and its size is passed; the kernel
    // only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const u32).cast(),
            socklen::<u32>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An `ifreq` naming `name` (at most `IFNAMSIZ - 1` bytes, checked).
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: `ifreq` is a C struct of integers, arrays and a union of
    // those: all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not an interface name"),
        ));
    }
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

impl SocketCan {
    /// Open a raw CAN socket on interface `name`. FD frames are used when the
    /// interface supports them and `allow_fd`.
    pub fn open(name: &str, allow_fd: bool) -> io::Result<Self> {
        let req = ifreq(name)?;
        // SAFETY: `ifr_name` is NUL-terminated (`ifreq` checks the length and
        // zero-fills) and lives for the call.
        let ifindex = unsafe { libc::if_nametoindex(req.ifr_name.as_ptr()) };
        if ifindex == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("CAN interface {name} does not exist ({e})"),
            ));
        }
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::PF_CAN,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::CAN_RAW,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot open a raw CAN socket ({e}); without kernel CAN support \
                     (AF_CAN, the can and can-raw modules) use --bus PATH for the software bus"
                ),
            ));
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut req = ifreq(name)?;
        // SAFETY: SIOCGIFMTU reads `ifr_name` and writes `ifr_ifru.ifru_mtu`
        // of the `ifreq` we own, for the duration of the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read the MTU of {name}: {e}"),
            ));
        }
        // SAFETY: SIOCGIFMTU succeeded, so the union holds the MTU.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        let fd_capable = allow_fd && usize::try_from(mtu).is_ok_and(|m| m >= CANFD_MTU);

        let sol = libc::SOL_CAN_RAW;
        if fd_capable {
            setsockopt_u32(fd.as_fd(), sol, libc::CAN_RAW_FD_FRAMES, 1)?;
        }
        setsockopt_u32(fd.as_fd(), sol, libc::CAN_RAW_RECV_OWN_MSGS, 1)?;
        setsockopt_u32(
            fd.as_fd(),
            sol,
            libc::CAN_RAW_ERR_FILTER,
            super::ERR_BUSOFF | super::ERR_RESTARTED,
        )?;

        // SAFETY: all zeroes is a valid `sockaddr_can` (integers and a union
        // of integer structs).
        let mut addr: libc::sockaddr_can = unsafe { mem::zeroed() };
        addr.can_family = libc::sa_family_t::try_from(libc::AF_CAN).unwrap_or_default();
        addr.can_ifindex = i32::try_from(ifindex).unwrap_or(0);
        // SAFETY: `addr` is a valid `sockaddr_can` whose size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_can).cast(),
                socklen::<libc::sockaddr_can>(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot bind a CAN socket to {name} (is it a CAN interface?): {e}"),
            ));
        }
        log::info!(
            "CAN interface {name}: MTU {mtu}, {}",
            if fd_capable {
                "CAN FD"
            } else {
                "classic CAN only"
            }
        );
        Ok(Self {
            fd,
            name: name.into(),
            fd_capable,
        })
    }

    fn interface_flags(&self) -> io::Result<libc::c_short> {
        let mut req = ifreq(&self.name)?;
        // SAFETY: SIOCGIFFLAGS reads `ifr_name` and writes
        // `ifr_ifru.ifru_flags` of the `ifreq` we own.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
        Ok(unsafe { req.ifr_ifru.ifru_flags })
    }
}

/// The bytes of `frame` as a `can_frame` or `canfd_frame`.
pub fn encode(frame: &CanFrame) -> ([u8; CANFD_MTU], usize) {
    let mut b = [0u8; CANFD_MTU];
    let mut id = frame.id;
    if frame.extended {
        id |= CAN_EFF_FLAG;
    }
    if frame.rtr {
        id |= CAN_RTR_FLAG;
    }
    b[0..4].copy_from_slice(&id.to_ne_bytes());
    b[4] = frame.len;
    let p = frame.payload();
    b[8..8 + p.len()].copy_from_slice(p);
    if frame.fd {
        b[5] = CANFD_FDF;
        (b, CANFD_MTU)
    } else {
        (b, CAN_MTU)
    }
}

/// What a read of `n` bytes from a raw CAN socket holds.
pub fn decode(b: &[u8]) -> Option<Received> {
    let fd = match b.len() {
        CAN_MTU => false,
        CANFD_MTU => true,
        _ => return None,
    };
    let raw_id = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    if raw_id & CAN_ERR_FLAG != 0 {
        let mut data = [0u8; 8];
        data.copy_from_slice(&b[8..16]);
        return Some(Received::Error(ErrorFrame {
            class: raw_id & CAN_EFF_MASK,
            data,
        }));
    }
    let extended = raw_id & CAN_EFF_FLAG != 0;
    let rtr = !fd && raw_id & CAN_RTR_FLAG != 0;
    let mut frame = CanFrame {
        id: raw_id & if extended { CAN_EFF_MASK } else { CAN_SFF_MASK },
        extended,
        fd,
        rtr,
        // An RTR frame's DLC can be up to 15 in `len8_dlc`; 8 is the most a
        // virtio-can frame can ask for.
        len: if rtr { b[4].min(8) } else { b[4] },
        ..CanFrame::default()
    };
    frame.check().ok()?;
    let n = frame.payload().len();
    frame.data[..n].copy_from_slice(&b[8..8 + n]);
    Some(Received::Frame(frame))
}

impl CanHost for SocketCan {
    fn send(&mut self, frame: &CanFrame) -> io::Result<Sent> {
        if frame.fd && !self.fd_capable {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not carry CAN FD frames", self.name),
            ));
        }
        let (buf, len) = encode(frame);
        loop {
            return match nix::unistd::write(self.fd.as_fd(), &buf[..len]) {
                Ok(n) if n == len => Ok(Sent::Queued),
                Ok(n) => Err(io::Error::other(format!("short CAN write of {n} bytes"))),
                Err(nix::errno::Errno::EAGAIN) => Ok(Sent::WouldBlock),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    fn recv(&mut self) -> io::Result<Option<Received>> {
        let mut buf = [0u8; CANFD_MTU];
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: all zeroes is a valid `msghdr` (null pointers, zero
            // lengths); the fields set below point at `iov` and `buf`, which
            // outlive the call.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            // SAFETY: `msg` describes one writable buffer of `buf.len()` bytes.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(None),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENETDOWN) => Ok(Some(Received::LinkDown)),
                    _ => Err(io::Error::new(
                        e.kind(),
                        format!("cannot read from CAN interface {}: {e}", self.name),
                    )),
                };
            }
            let n = usize::try_from(n).unwrap_or(0);
            let Some(received) = decode(&buf[..n]) else {
                log::debug!("{}: ignoring a {n}-byte read", self.name);
                continue;
            };
            return Ok(Some(match received {
                Received::Frame(f) if msg.msg_flags & libc::MSG_CONFIRM != 0 => Received::Echo(f),
                other => other,
            }));
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn fd_capable(&self) -> bool {
        self.fd_capable
    }

    fn set_online(&mut self, _online: bool) -> io::Result<()> {
        // The host interface's own state is the host's business; a stopped
        // device simply ignores what it receives.
        Ok(())
    }

    fn link_up(&self) -> bool {
        self.interface_flags()
            .map(|f| i32::from(f) & libc::IFF_UP != 0)
            .unwrap_or(false)
    }

    fn name(&self) -> String {
        format!("CAN interface {}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_named() {
        let err = SocketCan::open("nocan7", true).unwrap_err();
        assert!(err.to_string().contains("nocan7 does not exist"), "{err}");
    }

    #[test]
    fn classic_frame_encodes_as_can_frame() {
        let f: CanFrame = "1ABCDEF0#0102".parse().unwrap();
        let (b, len) = encode(&f);
        assert_eq!(len, CAN_MTU);
        assert_eq!(
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            0x1ABC_DEF0 | CAN_EFF_FLAG
        );
        assert_eq!((b[4], b[8], b[9]), (2, 1, 2));
        assert_eq!(decode(&b[..len]), Some(Received::Frame(f)));
    }

    #[test]
    fn fd_frame_encodes_as_canfd_frame_with_fdf() {
        let f = CanFrame::new(0x12, false, true, &[7; 20]).unwrap();
        let (b, len) = encode(&f);
        assert_eq!((len, b[4], b[5]), (CANFD_MTU, 20, CANFD_FDF));
        assert_eq!(decode(&b[..len]), Some(Received::Frame(f)));
    }

    #[test]
    fn remote_frame_sets_rtr_and_keeps_its_length() {
        let f: CanFrame = "123#R3".parse().unwrap();
        let (b, len) = encode(&f);
        assert_eq!(
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            0x123 | CAN_RTR_FLAG
        );
        assert_eq!(decode(&b[..len]), Some(Received::Frame(f)));
    }

    #[test]
    fn error_frame_decodes_its_class() {
        let mut b = [0u8; CAN_MTU];
        b[0..4].copy_from_slice(&(CAN_ERR_FLAG | super::super::ERR_BUSOFF).to_ne_bytes());
        b[4] = 8;
        assert_eq!(
            decode(&b),
            Some(Received::Error(ErrorFrame {
                class: super::super::ERR_BUSOFF,
                data: [0; 8]
            }))
        );
    }

    #[test]
    fn reads_of_other_sizes_or_bad_lengths_are_ignored() {
        assert_eq!(decode(&[0; 20]), None);
        let mut b = [0u8; CAN_MTU];
        b[4] = 9;
        assert_eq!(decode(&b), None);
    }
}
