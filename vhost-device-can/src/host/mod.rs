// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The CAN bus the device is attached to.
//!
//! [`CanHost`] is the narrow, socket-shaped interface the device uses: send a
//! frame without blocking, receive what is pending, and one descriptor for
//! the worker's epoll. Three implementations:
//!
//! - [`linux::SocketCan`]: a raw `AF_CAN` socket bound to a host interface
//!   (`--device-list can0`);
//! - [`bus::BusClient`]: a member of the software bus (`--bus PATH`), a
//!   Unix-socket hub that several devices — of one daemon or of several —
//!   share, for hosts without kernel CAN and for tests and demos;
//! - [`mock::MockHost`]: scripted, for unit tests.
//!
//! [`CanFrame`] is the frame every backend speaks, checked on the way in
//! ([`CanFrame::check`]); it prints and parses in `cansend` syntax
//! (`123#DEADBEEF`, `12345678#R`, `123##1A0B`).

pub mod bus;
pub mod linux;
pub mod mock;

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::str::FromStr;

use thiserror::Error;

/// Largest standard (11-bit) identifier.
pub const SFF_MAX: u32 = 0x7FF;
/// Largest extended (29-bit) identifier.
pub const EFF_MAX: u32 = 0x1FFF_FFFF;
/// The data lengths a CAN FD frame can have: a DLC of 9…15 stands for these.
pub const FD_LENGTHS: [u8; 7] = [12, 16, 20, 24, 32, 48, 64];
/// `CAN_ERR_BUSOFF`: the controller went bus-off (`linux/can/error.h`).
pub const ERR_BUSOFF: u32 = 0x40;
/// `CAN_ERR_RESTARTED`: the controller restarted.
pub const ERR_RESTARTED: u32 = 0x100;
/// `CAN_ERR_CRTL`: controller problems (`data[1]` says which).
pub const ERR_CRTL: u32 = 0x04;

/// Whether `len` is a valid CAN FD data length.
pub fn is_fd_length(len: usize) -> bool {
    len <= 8 || FD_LENGTHS.iter().any(|&l| usize::from(l) == len)
}

/// A CAN frame: classic, FD, or a remote transmission request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CanFrame {
    /// Identifier: 11 bits, or 29 with `extended`.
    pub id: u32,
    /// 29-bit identifier.
    pub extended: bool,
    /// A CAN FD frame.
    pub fd: bool,
    /// A remote transmission request (classic only): `len` is the data length
    /// requested and the frame carries no data.
    pub rtr: bool,
    /// Data length (0…8 classic, 0…8 or one of [`FD_LENGTHS`] for FD).
    pub len: u8,
    /// The data; bytes past `len` are zero.
    pub data: [u8; 64],
}

impl Default for CanFrame {
    fn default() -> Self {
        Self {
            id: 0,
            extended: false,
            fd: false,
            rtr: false,
            len: 0,
            data: [0; 64],
        }
    }
}

/// Why a frame is not a valid CAN frame.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Identifier too large for its format.
    #[error("identifier {id:#x} does not fit in {} bits", if *.extended { 29 } else { 11 })]
    Id {
        /// The identifier.
        id: u32,
        /// Whether it was meant as an extended identifier.
        extended: bool,
    },
    /// Length impossible for the frame type.
    #[error("length {len} is not a valid {} length", if *.fd { "CAN FD (0…8, 12, 16, 20, 24, 32, 48, 64)" } else { "classic CAN (0…8)" })]
    Length {
        /// The length.
        len: usize,
        /// Whether the frame is FD.
        fd: bool,
    },
    /// RTR frames exist only in classic CAN.
    #[error("an RTR frame cannot be a CAN FD frame")]
    RtrFd,
}

impl CanFrame {
    /// A data frame (FD when `data` is longer than 8 bytes or `fd` is set).
    pub fn new(id: u32, extended: bool, fd: bool, data: &[u8]) -> Result<Self, FrameError> {
        let fd = fd || data.len() > 8;
        let len = u8::try_from(data.len()).map_err(|_| FrameError::Length {
            len: data.len(),
            fd,
        })?;
        let mut frame = Self {
            id,
            extended,
            fd,
            len,
            ..Self::default()
        };
        if data.len() > 64 {
            return Err(FrameError::Length {
                len: data.len(),
                fd,
            });
        }
        frame.data[..data.len()].copy_from_slice(data);
        frame.check()?;
        Ok(frame)
    }

    /// A remote transmission request for `len` bytes.
    pub fn remote(id: u32, extended: bool, len: u8) -> Result<Self, FrameError> {
        let frame = Self {
            id,
            extended,
            rtr: true,
            len,
            ..Self::default()
        };
        frame.check()?;
        Ok(frame)
    }

    /// Check the identifier range, the length for the frame type, and that
    /// an RTR frame is classic.
    pub fn check(&self) -> Result<(), FrameError> {
        let max = if self.extended { EFF_MAX } else { SFF_MAX };
        if self.id > max {
            return Err(FrameError::Id {
                id: self.id,
                extended: self.extended,
            });
        }
        if self.rtr && self.fd {
            return Err(FrameError::RtrFd);
        }
        let len = usize::from(self.len);
        let ok = if self.fd { is_fd_length(len) } else { len <= 8 };
        if !ok {
            return Err(FrameError::Length { len, fd: self.fd });
        }
        Ok(())
    }

    /// The data bytes the frame carries (none for an RTR frame).
    pub fn payload(&self) -> &[u8] {
        if self.rtr {
            &[]
        } else {
            &self.data[..usize::from(self.len).min(64)]
        }
    }

    /// Same frame on the wire: identifier, format, type and payload (used to
    /// match a bus echo with the request it confirms).
    pub fn same_as(&self, other: &CanFrame) -> bool {
        self.id == other.id
            && self.extended == other.extended
            && self.fd == other.fd
            && self.rtr == other.rtr
            && self.len == other.len
            && self.payload() == other.payload()
    }
}

impl fmt::Debug for CanFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `cansend` syntax: `123#11223344`, `1F334455#R2`, `123##1` + FD data.
impl fmt::Display for CanFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.extended {
            write!(f, "{:08X}#", self.id)?;
        } else {
            write!(f, "{:03X}#", self.id)?;
        }
        if self.rtr {
            return write!(f, "R{}", self.len);
        }
        if self.fd {
            f.write_str("#0")?;
        }
        for b in self.payload() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// Why a frame in `cansend` syntax could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseFrameError {
    /// No `#` between identifier and data.
    #[error("expected <id>#<data>, <id>#R[len] or <id>##<flags><data>")]
    Syntax,
    /// The identifier is not 3 (standard) or 8 (extended) hex digits.
    #[error("identifier '{0}' is not 3 (standard) or 8 (extended) hex digits")]
    Id(String),
    /// The data is not hex bytes.
    #[error("data '{0}' is not hex bytes")]
    Data(String),
    /// The frame is not valid.
    #[error("invalid frame")]
    Frame(#[source] FrameError),
}

fn hex_bytes(s: &str) -> Result<Vec<u8>, ParseFrameError> {
    let digits: String = s.chars().filter(|&c| c != '.').collect();
    if digits.len() % 2 != 0 {
        return Err(ParseFrameError::Data(s.into()));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| ParseFrameError::Data(s.into()))
        })
        .collect()
}

impl FromStr for CanFrame {
    type Err = ParseFrameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, rest) = s.split_once('#').ok_or(ParseFrameError::Syntax)?;
        let extended = match id.len() {
            3 => false,
            8 => true,
            _ => return Err(ParseFrameError::Id(id.into())),
        };
        let id = u32::from_str_radix(id, 16).map_err(|_| ParseFrameError::Id(id.into()))?;
        if let Some(fd) = rest.strip_prefix('#') {
            // One hex digit of FD flags (BRS, ESI), then the data.
            let mut chars = fd.chars();
            chars
                .next()
                .filter(char::is_ascii_hexdigit)
                .ok_or_else(|| ParseFrameError::Data(fd.into()))?;
            let data = hex_bytes(chars.as_str())?;
            return CanFrame::new(id, extended, true, &data).map_err(ParseFrameError::Frame);
        }
        if let Some(len) = rest.strip_prefix(['R', 'r']) {
            let len = if len.is_empty() {
                0
            } else {
                len.parse::<u8>()
                    .map_err(|_| ParseFrameError::Data(len.into()))?
            };
            return CanFrame::remote(id, extended, len).map_err(ParseFrameError::Frame);
        }
        let data = hex_bytes(rest)?;
        CanFrame::new(id, extended, false, &data).map_err(ParseFrameError::Frame)
    }
}

/// A controller or bus error report (a SocketCAN error frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorFrame {
    /// `CAN_ERR_*` class bits.
    pub class: u32,
    /// Details, as in `linux/can/error.h`.
    pub data: [u8; 8],
}

impl ErrorFrame {
    /// The controller went bus-off.
    pub fn bus_off() -> Self {
        Self {
            class: ERR_BUSOFF,
            data: [0; 8],
        }
    }

    /// Whether it reports bus-off.
    pub fn is_bus_off(&self) -> bool {
        self.class & ERR_BUSOFF != 0
    }
}

/// Something the host has for the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A frame another node sent.
    Frame(CanFrame),
    /// A frame this device sent, now transmitted on the bus (the
    /// confirmation `LATE_TX_ACK` waits for).
    Echo(CanFrame),
    /// An error report.
    Error(ErrorFrame),
    /// The interface went down: nothing is transmitted until it is up again.
    LinkDown,
    /// The connection to the bus was lost; [`CanHost::reconnect`] rejoins it.
    Disconnected,
}

/// What became of a frame handed to [`CanHost::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued for transmission.
    Queued,
    /// The host cannot take it now; wait until [`CanHost::fd`] is writable.
    WouldBlock,
}

/// A CAN controller on the host.
pub trait CanHost: Send {
    /// Queue `frame` for transmission without blocking. `Err` means the frame
    /// cannot be sent (the interface is down, its queue is full): the device
    /// answers NOT_OK, it is not a failure of the device.
    fn send(&mut self, frame: &CanFrame) -> io::Result<Sent>;

    /// Take the next pending event without blocking (`Ok(None)`: nothing
    /// pending). `Err` is a host failure that ends the device's connection.
    fn recv(&mut self) -> io::Result<Option<Received>>;

    /// The descriptor to watch: readable when [`Self::recv`] has something,
    /// writable when [`Self::send`] can make progress after `WouldBlock`.
    fn fd(&self) -> BorrowedFd<'_>;

    /// Whether the host can carry CAN FD frames.
    fn fd_capable(&self) -> bool;

    /// The device's controller started (`true`) or stopped: whether it takes
    /// part in the bus (acknowledges other nodes' frames).
    fn set_online(&mut self, online: bool) -> io::Result<()>;

    /// Whether frames can be transmitted now (the interface is up).
    fn link_up(&self) -> bool;

    /// Whether messages wait for the host to take them (watch for
    /// writability, then call [`Self::flush`]).
    fn wants_write(&self) -> bool {
        false
    }

    /// Send what waits; `Ok(true)` when nothing is left.
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// Rejoin after [`Received::Disconnected`]: `Ok(true)` when joined (the
    /// descriptor has changed), `Ok(false)` to try again later.
    fn reconnect(&mut self) -> io::Result<bool> {
        Ok(false)
    }

    /// A name for log and error messages.
    fn name(&self) -> String;
}

/// Which bus a device is attached to, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostConfig {
    /// A SocketCAN interface.
    Interface(String),
    /// The software bus at this path.
    Bus(PathBuf),
}

impl HostConfig {
    /// Open the host side of one device.
    pub fn open(&self, allow_fd: bool) -> io::Result<Box<dyn CanHost>> {
        Ok(match self {
            HostConfig::Interface(name) => Box::new(linux::SocketCan::open(name, allow_fd)?),
            HostConfig::Bus(path) => Box::new(bus::BusClient::connect(
                path,
                bus::Role::Node,
                allow_fd,
                bus::CONNECT_TIMEOUT,
            )?),
        })
    }

    /// Check at startup that the host side can be opened, so that a missing
    /// interface is reported before any socket is created; for the software
    /// bus, this makes the first daemon on a path its hub.
    pub fn check(&self) -> io::Result<()> {
        self.open(true).map(drop)
    }
}

impl fmt::Display for HostConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostConfig::Interface(name) => write!(f, "CAN interface {name}"),
            HostConfig::Bus(path) => write!(f, "software CAN bus {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CanFrame {
        s.parse().unwrap()
    }

    #[test]
    fn classic_frame_parses_and_prints_back() {
        let f = parse("123#DEADBEEF");
        assert_eq!(
            (f.id, f.extended, f.fd, f.rtr),
            (0x123, false, false, false)
        );
        assert_eq!(f.payload(), &[0xDE, 0xAD, 0xBE, 0xEF]);
        assert_eq!(f.to_string(), "123#DEADBEEF");
    }

    #[test]
    fn extended_identifier_has_eight_digits() {
        let f = parse("1F334455#1122");
        assert!(f.extended);
        assert_eq!(f.id, 0x1F33_4455);
        assert_eq!(f.to_string(), "1F334455#1122");
    }

    #[test]
    fn remote_request_carries_a_length_and_no_data() {
        let f = parse("123#R4");
        assert!(f.rtr);
        assert_eq!(f.len, 4);
        assert!(f.payload().is_empty());
        assert_eq!(f.to_string(), "123#R4");
    }

    #[test]
    fn fd_frame_with_flags_digit_parses() {
        let f = parse(&format!("123##1{}", "AB".repeat(12)));
        assert!(f.fd);
        assert_eq!(f.len, 12);
        assert_eq!(f.to_string(), format!("123##0{}", "AB".repeat(12)));
    }

    #[test]
    fn dots_between_bytes_are_allowed() {
        assert_eq!(parse("123#11.22.33").payload(), &[0x11, 0x22, 0x33]);
    }

    #[test]
    fn bad_text_is_refused_saying_why() {
        assert_eq!(
            "1234#00".parse::<CanFrame>(),
            Err(ParseFrameError::Id("1234".into()))
        );
        assert_eq!("123".parse::<CanFrame>(), Err(ParseFrameError::Syntax));
        assert!(matches!(
            "123#ABC".parse::<CanFrame>(),
            Err(ParseFrameError::Data(_))
        ));
        assert!(matches!(
            "800#00".parse::<CanFrame>(),
            Err(ParseFrameError::Frame(FrameError::Id { .. }))
        ));
        assert!(matches!(
            "123#112233445566778899".parse::<CanFrame>(),
            Err(ParseFrameError::Frame(FrameError::Length { .. })) | Ok(CanFrame { fd: true, .. })
        ));
    }

    #[test]
    fn fd_lengths_are_dlc_steps() {
        let ok: Vec<usize> = (0..=64).filter(|&l| is_fd_length(l)).collect();
        assert_eq!(
            ok,
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64]
        );
        assert!(CanFrame::new(1, false, true, &[0; 13]).is_err());
    }

    #[test]
    fn identifiers_are_checked_against_their_format() {
        assert!(CanFrame::new(SFF_MAX, false, false, &[]).is_ok());
        assert!(CanFrame::new(SFF_MAX + 1, false, false, &[]).is_err());
        assert!(CanFrame::new(EFF_MAX, true, false, &[]).is_ok());
        assert!(CanFrame::new(EFF_MAX + 1, true, false, &[]).is_err());
    }

    #[test]
    fn remote_fd_frame_is_invalid() {
        let f = CanFrame {
            rtr: true,
            fd: true,
            ..CanFrame::default()
        };
        assert_eq!(f.check(), Err(FrameError::RtrFd));
    }

    #[test]
    fn echo_matching_ignores_bytes_past_the_length() {
        let a = CanFrame::new(5, false, false, &[1, 2]).unwrap();
        let mut b = a;
        b.data[10] = 9;
        assert!(a.same_as(&b));
        b.data[1] = 3;
        assert!(!a.same_as(&b));
    }
}
