// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A real GPIO chip through libgpiod v2 (the kernel's GPIO character device,
//! uAPI v2).
//!
//! Each line the guest uses is one line request (`GPIO_V2_GET_LINE_IOCTL`),
//! made when the guest first sets its direction (or enables its interrupt)
//! and dropped when it sets the direction to NONE. Direction, output value
//! and edge detection changes reconfigure the request in place
//! (`GPIO_V2_LINE_SET_CONFIG_IOCTL`), so its descriptor — the one the
//! device's worker watches for edges — stays the same while the line is
//! claimed. Edge events are read only after a zero-timeout poll says some
//! are queued, so no call ever blocks. The kernel keeps up to 16 events per
//! line and drops the oldest on overflow; the device keeps flags, not counts,
//! so that loses nothing it needs.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libgpiod::chip::Chip;
use libgpiod::line::{self, Direction, Edge, EdgeKind, Value};
use libgpiod::request;
use thiserror::Error;

use super::{ChipSpec, EdgeDetect, Edges, GpioHost, LineMode};

/// The consumer name the daemon's line requests carry (`gpioinfo` shows it).
pub const CONSUMER: &str = "vhost-device-gpio";

/// Why a chip could not be found or opened.
#[derive(Debug, Error)]
pub enum ChipError {
    /// Opening or querying the chip failed.
    #[error("cannot open GPIO chip {}", path.display())]
    Open {
        /// Character device.
        path: PathBuf,
        /// Why.
        #[source]
        source: libgpiod::Error,
    },
    /// No chip has this label.
    #[error("no GPIO chip is labelled {0:?} (see gpiodetect)")]
    NoSuchLabel(String),
    /// Listing /dev failed.
    #[error("cannot list /dev for GPIO chips")]
    ListDev(#[source] io::Error),
    /// The chip has more lines than virtio-gpio can number.
    #[error("GPIO chip {} has {lines} lines; virtio-gpio numbers at most 65535", path.display())]
    TooManyLines {
        /// Character device.
        path: PathBuf,
        /// Its line count.
        lines: usize,
    },
}

fn libgpiod_io(e: libgpiod::Error) -> io::Error {
    match e {
        libgpiod::Error::OperationFailed(_, errno) => io::Error::from_raw_os_error(errno.0),
        other => io::Error::other(other),
    }
}

/// Find the character device of a chip given by path, number or label.
pub fn resolve(spec: &ChipSpec) -> Result<PathBuf, ChipError> {
    match spec {
        ChipSpec::Path(p) => Ok(p.clone()),
        ChipSpec::Number(n) => Ok(PathBuf::from(format!("/dev/gpiochip{n}"))),
        ChipSpec::Label(label) => {
            let mut paths: Vec<PathBuf> = std::fs::read_dir("/dev")
                .map_err(ChipError::ListDev)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("gpiochip"))
                })
                .collect();
            paths.sort();
            for path in paths {
                let Ok(chip) = Chip::open(&path) else {
                    continue;
                };
                if chip
                    .info()
                    .ok()
                    .is_some_and(|i| i.label().ok() == Some(label.as_str()))
                {
                    return Ok(path);
                }
            }
            Err(ChipError::NoSuchLabel(label.clone()))
        }
        ChipSpec::Sim(_) => Err(ChipError::NoSuchLabel("sim".into())),
    }
}

/// One connection's use of a real chip.
pub struct LibgpiodHost {
    chip: Chip,
    names: Vec<String>,
    requests: Vec<Option<LineRequest>>,
    buffer: request::Buffer,
}

struct LineRequest {
    request: request::Request,
    mode: LineMode,
}

impl std::fmt::Debug for LibgpiodHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibgpiodHost")
            .field("lines", &self.names.len())
            .finish()
    }
}

impl LibgpiodHost {
    /// Open the chip at `path` and read its line names.
    pub fn open(path: &Path) -> Result<Self, ChipError> {
        let open = |source| ChipError::Open {
            path: path.into(),
            source,
        };
        let chip = Chip::open(&path).map_err(open)?;
        let lines = chip.info().map_err(open)?.num_lines();
        if lines > usize::from(u16::MAX) {
            return Err(ChipError::TooManyLines {
                path: path.into(),
                lines,
            });
        }
        let names = (0..lines)
            .map(|o| {
                u32::try_from(o)
                    .ok()
                    .and_then(|o| chip.line_info(o).ok())
                    .and_then(|i| i.name().ok().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
        let buffer = request::Buffer::new(64).map_err(open)?;
        Ok(Self {
            chip,
            names,
            requests: (0..lines).map(|_| None).collect(),
            buffer,
        })
    }

    /// The chip's path as libgpiod reports it.
    pub fn path(&self) -> String {
        self.chip.path().unwrap_or("?").to_owned()
    }

    fn slot(&mut self, line: u16) -> io::Result<&mut Option<LineRequest>> {
        self.requests
            .get_mut(usize::from(line))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn claimed(&mut self, line: u16) -> io::Result<&mut LineRequest> {
        self.slot(line)?
            .as_mut()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// Line settings for `mode` on `offset`.
fn line_config(offset: u32, mode: LineMode) -> libgpiod::Result<line::Config> {
    let mut s = line::Settings::new()?;
    match mode {
        LineMode::Released => {}
        LineMode::Input(edge) => {
            s.set_direction(Direction::Input)?;
            s.set_edge_detection(match edge {
                EdgeDetect::None => None,
                EdgeDetect::Rising => Some(Edge::Rising),
                EdgeDetect::Falling => Some(Edge::Falling),
                EdgeDetect::Both => Some(Edge::Both),
            })?;
        }
        LineMode::Output(v) => {
            s.set_direction(Direction::Output)?;
            s.set_output_value(if v { Value::Active } else { Value::InActive })?;
        }
    }
    let mut c = line::Config::new()?;
    c.add_line_settings(&[offset], s)?;
    Ok(c)
}

impl GpioHost for LibgpiodHost {
    fn num_lines(&self) -> u16 {
        u16::try_from(self.names.len()).unwrap_or(u16::MAX)
    }

    fn line_name(&self, line: u16) -> String {
        self.names
            .get(usize::from(line))
            .cloned()
            .unwrap_or_default()
    }

    fn set_mode(&mut self, line: u16, mode: LineMode) -> io::Result<()> {
        let offset = u32::from(line);
        if mode == LineMode::Released {
            *self.slot(line)? = None;
            return Ok(());
        }
        let config = line_config(offset, mode).map_err(libgpiod_io)?;
        if let Some(req) = self.slot(line)?.as_mut() {
            req.request
                .reconfigure_lines(&config)
                .map_err(libgpiod_io)?;
            req.mode = mode;
            return Ok(());
        }
        let mut rc = request::Config::new().map_err(libgpiod_io)?;
        rc.set_consumer(CONSUMER).map_err(libgpiod_io)?;
        let request = self
            .chip
            .request_lines(Some(&rc), &config)
            .map_err(libgpiod_io)?;
        // Never block on a read: the worker reads only what poll reported,
        // and a non-blocking descriptor makes that hold even if it races.
        let fd = request.as_raw_fd();
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        *self.slot(line)? = Some(LineRequest { request, mode });
        Ok(())
    }

    fn value(&mut self, line: u16) -> io::Result<bool> {
        let req = self.claimed(line)?;
        Ok(req.request.value(u32::from(line)).map_err(libgpiod_io)? == Value::Active)
    }

    fn set_value(&mut self, line: u16, value: bool) -> io::Result<()> {
        let req = self.claimed(line)?;
        if !matches!(req.mode, LineMode::Output(_)) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        req.request
            .set_value(
                u32::from(line),
                if value {
                    Value::Active
                } else {
                    Value::InActive
                },
            )
            .map_err(libgpiod_io)?;
        req.mode = LineMode::Output(value);
        Ok(())
    }

    fn take_edges(&mut self, line: u16) -> io::Result<Edges> {
        let Self {
            requests, buffer, ..
        } = self;
        let req = requests
            .get_mut(usize::from(line))
            .and_then(Option::as_mut)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EPERM))?;
        let mut edges = Edges::default();
        // Bounded: the kernel queues at most 16 events per line; stop after
        // a few buffers in case edges keep arriving.
        for _ in 0..4 {
            if !req
                .request
                .wait_edge_events(Some(Duration::ZERO))
                .map_err(libgpiod_io)?
            {
                break;
            }
            let events = match buffer.read_edge_events(&req.request) {
                Ok(ev) => ev,
                Err(libgpiod::Error::OperationFailed(_, errno)) if errno.0 == libc::EAGAIN => break,
                Err(e) => return Err(libgpiod_io(e)),
            };
            for ev in events {
                match ev.map_err(libgpiod_io)?.event_type().map_err(libgpiod_io)? {
                    EdgeKind::Rising => edges.rising = true,
                    EdgeKind::Falling => edges.falling = true,
                }
            }
        }
        Ok(edges)
    }

    fn line_event_fd(&self, line: u16) -> Option<BorrowedFd<'_>> {
        let req = self.requests.get(usize::from(line))?.as_ref()?;
        if !matches!(req.mode, LineMode::Input(e) if e != EdgeDetect::None) {
            return None;
        }
        // SAFETY: the descriptor belongs to the line request, which lives
        // in `self` for at least as long as the returned borrow.
        Some(unsafe { BorrowedFd::borrow_raw(req.request.as_raw_fd()) })
    }

    fn chip_event_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn chip_events(&mut self) -> io::Result<Vec<u16>> {
        Ok(Vec::new())
    }
}
