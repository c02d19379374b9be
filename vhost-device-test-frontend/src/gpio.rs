// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A virtio-gpio driver (virtio 1.3, 5.18) on a [`Session`]: requests on
//! `requestq`, interrupt buffers on `eventq`, and a line-oriented command
//! shell ([`GpioDriver::command`]) for scripts.
//!
//! Requests are sent one at a time and waited for, as Linux does per line.
//! [`GpioDriver::arm`] posts a line's eventq buffer (2 readable bytes for the
//! line number, 1 writable status byte); [`GpioDriver::wait_irq`] collects
//! the buffers the device returned.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use std::path::Path;

use crate::{Chain, Error, Options, Session};

/// `requestq`.
pub const REQUEST_QUEUE: usize = 0;
/// `eventq`.
pub const EVENT_QUEUE: usize = 1;
/// `VIRTIO_GPIO_F_IRQ`.
pub const F_IRQ: u64 = 1;

/// Message types (5.18.6).
pub mod msg {
    /// GET_LINE_NAMES.
    pub const GET_LINE_NAMES: u16 = 1;
    /// GET_DIRECTION.
    pub const GET_DIRECTION: u16 = 2;
    /// SET_DIRECTION.
    pub const SET_DIRECTION: u16 = 3;
    /// GET_VALUE.
    pub const GET_VALUE: u16 = 4;
    /// SET_VALUE.
    pub const SET_VALUE: u16 = 5;
    /// SET_IRQ_TYPE.
    pub const SET_IRQ_TYPE: u16 = 6;
}

/// The device's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Status byte (0 OK, 1 ERR).
    pub status: u8,
    /// Value byte.
    pub value: u8,
    /// Used length.
    pub len: u32,
}

/// A returned eventq buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Irq {
    /// The line it was posted for.
    pub line: u16,
    /// Status byte (1 VALID, 0 INVALID).
    pub status: u8,
    /// Used length.
    pub len: u32,
}

/// A virtio-gpio driver.
#[derive(Debug)]
pub struct GpioDriver {
    s: Session,
    req: u64,
    resp: u64,
    /// Per line: its eventq request and status buffers.
    irq_bufs: BTreeMap<u16, u64>,
    /// Posted eventq buffers: head → line.
    posted: BTreeMap<u16, u16>,
    /// Returned eventq buffers not yet asked for.
    returned: VecDeque<Irq>,
    timeout: Duration,
}

/// The largest names block the driver reads.
const MAX_NAMES: u32 = 1 << 20;

impl GpioDriver {
    /// Drive the gpio device of `s` (which must have both queues).
    pub fn new(s: Session) -> Result<Self, Error> {
        let req = s.ram().alloc(8, 8)?;
        let resp = s.ram().alloc(u64::from(MAX_NAMES) + 1, 8)?;
        Ok(Self {
            s,
            req,
            resp,
            irq_bufs: BTreeMap::new(),
            posted: BTreeMap::new(),
            returned: VecDeque::new(),
            timeout: Duration::from_secs(10),
        })
    }

    /// The session.
    pub fn session(&mut self) -> &mut Session {
        &mut self.s
    }

    /// Give the session back.
    pub fn into_session(self) -> Session {
        self.s
    }

    /// Move the device to the back end at `path` ([`Session::migrate`]);
    /// posted eventq buffers stay posted, for the new back end to return.
    pub fn migrate(mut self, path: &Path, opts: &Options) -> Result<Self, Error> {
        self.s.migrate(path, opts)?;
        Ok(self)
    }

    /// How long each wait lasts at most.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// `ngpio` and `gpio_names_size` from the config space.
    pub fn config(&mut self) -> Result<(u16, u32), Error> {
        let c = self.s.get_config(0, 8)?;
        let b = |i: usize| c.get(i).copied().unwrap_or(0);
        Ok((
            u16::from_le_bytes([b(0), b(1)]),
            u32::from_le_bytes([b(4), b(5), b(6), b(7)]),
        ))
    }

    /// Send one request with a `resp_len`-byte response buffer and wait.
    pub fn request_with(
        &mut self,
        kind: u16,
        line: u16,
        value: u32,
        resp_len: u32,
    ) -> Result<Reply, Error> {
        let mut bytes = [0u8; 8];
        bytes[0..2].copy_from_slice(&kind.to_le_bytes());
        bytes[2..4].copy_from_slice(&line.to_le_bytes());
        bytes[4..8].copy_from_slice(&value.to_le_bytes());
        self.s.ram().write(self.req, &bytes)?;
        self.s.ram().write(self.resp, &[0xEE, 0xEE])?;
        let (req, resp, timeout) = (self.req, self.resp, self.timeout);
        let vq = self.s.queue(REQUEST_QUEUE)?;
        let head = vq.add(
            &Chain::new()
                .readable(req, 8)
                .writable(resp, resp_len.min(MAX_NAMES + 1)),
        )?;
        vq.kick()?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let used = self.s.queue(REQUEST_QUEUE)?.wait_used(left)?;
            if let Some(u) = used.iter().find(|u| u.head == head) {
                let r = self.s.ram().read(resp, 2)?;
                return Ok(Reply {
                    status: r[0],
                    value: r[1],
                    len: u.len,
                });
            }
        }
    }

    /// Send one request with a 2-byte response buffer and wait.
    pub fn request(&mut self, kind: u16, line: u16, value: u32) -> Result<Reply, Error> {
        self.request_with(kind, line, value, 2)
    }

    /// GET_LINE_NAMES, split into names (`None` if the device refused).
    pub fn names(&mut self) -> Result<Option<Vec<String>>, Error> {
        let (_, size) = self.config()?;
        if size == 0 {
            return Ok(None);
        }
        let r = self.request_with(msg::GET_LINE_NAMES, 0, 0, size + 1)?;
        if r.status != 0 || r.len != size + 1 {
            return Ok(None);
        }
        let block = self.s.ram().read(self.resp + 1, size as usize)?;
        let mut names: Vec<String> = block
            .split(|&b| b == 0)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        names.pop();
        Ok(Some(names))
    }

    /// Post (and kick) the eventq buffer of `line`: unmask its interrupt.
    pub fn arm(&mut self, line: u16) -> Result<u16, Error> {
        let at = match self.irq_bufs.get(&line) {
            Some(&a) => a,
            None => {
                let a = self.s.ram().alloc(16, 8)?;
                self.irq_bufs.insert(line, a);
                a
            }
        };
        self.s.ram().write(at, &line.to_le_bytes())?;
        self.s.ram().write(at + 8, &[0xEE])?;
        let vq = self.s.queue(EVENT_QUEUE)?;
        let head = vq.add(&Chain::new().readable(at, 2).writable(at + 8, 1))?;
        vq.kick()?;
        self.posted.insert(head, line);
        Ok(head)
    }

    /// Posted eventq buffers not yet returned, by line.
    pub fn armed(&self) -> Vec<u16> {
        self.posted.values().copied().collect()
    }

    fn collect(&mut self, wait: Duration) -> Result<(), Error> {
        let used = match self.s.queue(EVENT_QUEUE)?.wait_used(wait) {
            Ok(u) => u,
            Err(Error::Timeout) => return Ok(()),
            Err(e) => return Err(e),
        };
        for u in used {
            let line = self
                .posted
                .remove(&u.head)
                .ok_or(Error::BadUsedId(u32::from(u.head)))?;
            let at = self.irq_bufs.get(&line).copied().unwrap_or(0);
            let status = self.s.ram().read(at + 8, 1)?[0];
            self.returned.push_back(Irq {
                line,
                status,
                len: u.len,
            });
        }
        Ok(())
    }

    /// Wait for the next returned eventq buffer of `line`.
    pub fn wait_irq(&mut self, line: u16) -> Result<Irq, Error> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(pos) = self.returned.iter().position(|i| i.line == line) {
                if let Some(irq) = self.returned.remove(pos) {
                    return Ok(irq);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            self.collect(left)?;
        }
    }

    /// Every eventq buffer returned within `wait` (which may be zero).
    pub fn returned_irqs(&mut self, wait: Duration) -> Result<Vec<Irq>, Error> {
        self.collect(wait)?;
        Ok(self.returned.drain(..).collect())
    }

    /// Run one shell command and return its answer line: `ok …` or
    /// `err …`. Commands:
    ///
    /// | command | answer |
    /// |---|---|
    /// | `info` | `ok ngpio=N names_size=S` |
    /// | `names` | `ok a,b,,d` |
    /// | `dir LINE none\|in\|out` | `ok` |
    /// | `getdir LINE` | `ok none\|in\|out` |
    /// | `set LINE 0\|1` | `ok` |
    /// | `get LINE` | `ok 0\|1` |
    /// | `irq LINE none\|rising\|falling\|both\|high\|low` | `ok` |
    /// | `arm LINE` | `ok` (posts the line's eventq buffer) |
    /// | `wait LINE` | `ok valid\|invalid` (the line's buffer came back) |
    /// | `peek` | `ok LINE:valid …`: buffers already returned, not waited for (kept for `wait`) |
    /// | `raw TYPE LINE VALUE` | `ok STATUS VALUE LEN` |
    ///
    /// A request the device refuses answers `err status 1`.
    pub fn command(&mut self, text: &str) -> String {
        match self.run_command(text) {
            Ok(s) if s.is_empty() => "ok".into(),
            Ok(s) => format!("ok {s}"),
            Err(e) => format!("err {e}"),
        }
    }

    fn checked(&mut self, kind: u16, line: u16, value: u32) -> Result<u8, String> {
        let r = self.request(kind, line, value).map_err(|e| e.to_string())?;
        if r.status != 0 {
            return Err(format!("status {}", r.status));
        }
        if r.len != 2 {
            return Err(format!("used length {}", r.len));
        }
        Ok(r.value)
    }

    fn run_command(&mut self, text: &str) -> Result<String, String> {
        let w: Vec<&str> = text.split_whitespace().collect();
        let num = |i: usize| -> Result<u32, String> {
            let s = w.get(i).ok_or("missing argument")?;
            s.parse().map_err(|_| format!("bad number {s}"))
        };
        let line = |i: usize| -> Result<u16, String> {
            u16::try_from(num(i)?).map_err(|_| "line out of range".to_string())
        };
        let word = |i: usize| w.get(i).copied().unwrap_or("");
        match word(0) {
            "info" => {
                let (n, size) = self.config().map_err(|e| e.to_string())?;
                Ok(format!("ngpio={n} names_size={size}"))
            }
            "names" => match self.names().map_err(|e| e.to_string())? {
                Some(n) => Ok(n.join(",")),
                None => Err("no names".into()),
            },
            "dir" => {
                let d = match word(2) {
                    "none" => 0,
                    "out" => 1,
                    "in" => 2,
                    other => return Err(format!("bad direction {other}")),
                };
                self.checked(msg::SET_DIRECTION, line(1)?, d)
                    .map(|_| String::new())
            }
            "getdir" => {
                let v = self.checked(msg::GET_DIRECTION, line(1)?, 0)?;
                Ok(match v {
                    0 => "none".into(),
                    1 => "out".into(),
                    2 => "in".into(),
                    other => format!("unknown-{other}"),
                })
            }
            "set" => self
                .checked(msg::SET_VALUE, line(1)?, num(2)?)
                .map(|_| String::new()),
            "get" => self
                .checked(msg::GET_VALUE, line(1)?, 0)
                .map(|v| v.to_string()),
            "irq" => {
                let t = match word(2) {
                    "none" => 0,
                    "rising" => 1,
                    "falling" => 2,
                    "both" => 3,
                    "high" => 4,
                    "low" => 8,
                    other => return Err(format!("bad irq type {other}")),
                };
                self.checked(msg::SET_IRQ_TYPE, line(1)?, t)
                    .map(|_| String::new())
            }
            "arm" => self
                .arm(line(1)?)
                .map(|_| String::new())
                .map_err(|e| e.to_string()),
            "wait" => {
                let irq = self.wait_irq(line(1)?).map_err(|e| e.to_string())?;
                if irq.len != 1 {
                    return Err(format!("used length {}", irq.len));
                }
                Ok(match irq.status {
                    1 => "valid".into(),
                    0 => "invalid".into(),
                    other => format!("status-{other}"),
                })
            }
            "peek" => {
                self.collect(Duration::ZERO).map_err(|e| e.to_string())?;
                Ok(self
                    .returned
                    .iter()
                    .map(|i| {
                        format!(
                            "{}:{}",
                            i.line,
                            if i.status == 1 { "valid" } else { "invalid" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" "))
            }
            "raw" => {
                let kind = u16::try_from(num(1)?).map_err(|_| "type out of range")?;
                let r = self
                    .request(kind, line(2)?, num(3)?)
                    .map_err(|e| e.to_string())?;
                Ok(format!("{} {} {}", r.status, r.value, r.len))
            }
            "" => Err("empty command".into()),
            other => Err(format!("unknown command {other}")),
        }
    }
}
