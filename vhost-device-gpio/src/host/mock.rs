// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulated chip, `--device-list sim:LINES[:NAME,NAME,…]`.
//!
//! A [`SimChip`] lives as long as the daemon and stands for the outside world
//! of one device: the level each line is driven to from outside. Each
//! front-end connection attaches a [`SimHost`] to it, which claims lines as
//! the guest asks and sees the outside levels as inputs; when the
//! connection ends every line is released (the outside levels stay).
//!
//! Inputs are driven through a control socket ([`SimChip::serve_control`]),
//! one text command per line, each answered with one line starting `ok` or
//! `err`:
//!
//! | command | effect / answer |
//! |---|---|
//! | `set LINE 0\|1` | drive LINE low/high from outside; an edge the line's edge detection covers is reported to the device |
//! | `toggle LINE` | flip the outside level of LINE |
//! | `get LINE` | `ok line=3 name=btn dir=in\|out\|none value=0\|1 level=0\|1 edge=none\|rising\|falling\|both`; `value` is what the line carries (the output value of an output, else the outside level) |
//! | `wait LINE KEY=VALUE [MS]` | wait (default 10 s, at most 600 s) until `get`'s KEY (`dir`, `value`, `level`, `edge`) has VALUE; answers like `get`, or `err timeout …` |
//! | `sync [MS]` | wait until the device has looked at the chip's edges once more: every edge driven before has reached the device (`ok detached` when no front end is connected) |
//! | `info` | `ok lines=N names=a,b,,d` |
//!
//! For example `printf 'set 3 1\n' | socat - UNIX-CONNECT:/tmp/gpio.sock.sim`.
//! Edges are noted per line as flags (rising seen, falling seen) and the
//! attached connection's eventfd is signalled; the device's worker has that
//! eventfd in its epoll.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use vhost_device_common::control::{self, Client, Commands, ControlSocket};

use super::{EdgeDetect, Edges, GpioHost, LineMode};

#[derive(Clone, Copy, Debug)]
struct SimLine {
    /// Level driven from outside.
    level: bool,
    /// How the attached device claimed it.
    mode: LineMode,
    /// Edges not yet collected by the device.
    pending: Edges,
}

impl Default for SimLine {
    fn default() -> Self {
        Self {
            level: false,
            mode: LineMode::Released,
            pending: Edges::default(),
        }
    }
}

impl SimLine {
    fn value(&self) -> bool {
        match self.mode {
            LineMode::Output(v) => v,
            _ => self.level,
        }
    }

    fn dir(&self) -> &'static str {
        match self.mode {
            LineMode::Released => "none",
            LineMode::Input(_) => "in",
            LineMode::Output(_) => "out",
        }
    }

    fn edge(&self) -> EdgeDetect {
        match self.mode {
            LineMode::Input(e) => e,
            _ => EdgeDetect::None,
        }
    }
}

struct SimState {
    names: Vec<String>,
    lines: Vec<SimLine>,
    /// The attached connection (0: none) and its eventfd.
    owner: u64,
    next_owner: u64,
    notify: Option<Arc<EventFd>>,
    /// Lines with pending edges.
    dirty: BTreeSet<u16>,
    /// `sync` requests made, and how many of them the device has seen.
    sync_asked: u64,
    sync_seen: u64,
}

struct Shared {
    state: Mutex<SimState>,
    changed: Condvar,
}

/// A simulated GPIO chip: the outside world of one device.
#[derive(Clone)]
pub struct SimChip {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimChip")
            .field("lines", &self.lock().lines.len())
            .finish()
    }
}

impl SimChip {
    /// A chip with one line per name (empty names: unnamed lines), every
    /// line driven low from outside.
    pub fn new(names: Vec<String>) -> Self {
        let lines = vec![SimLine::default(); names.len()];
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(SimState {
                    names,
                    lines,
                    owner: 0,
                    next_owner: 1,
                    notify: None,
                    dirty: BTreeSet::new(),
                    sync_asked: 0,
                    sync_seen: 0,
                }),
                changed: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        vhost_device_common::lock(&self.shared.state)
    }

    /// Attach a new device connection: every line starts released.
    pub fn attach(&self) -> io::Result<SimHost> {
        let event = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
        )?);
        let mut st = self.lock();
        let id = st.next_owner;
        st.next_owner += 1;
        st.owner = id;
        st.notify = Some(event.clone());
        release_all(&mut st);
        drop(st);
        self.shared.changed.notify_all();
        Ok(SimHost {
            chip: self.clone(),
            id,
            event,
        })
    }

    /// Drive `line` to `level` from outside.
    pub fn drive(&self, line: u16, level: bool) -> Result<(), String> {
        let mut st = self.lock();
        let l = st
            .lines
            .get_mut(usize::from(line))
            .ok_or_else(|| format!("no line {line}"))?;
        if l.level != level {
            l.level = level;
            if l.edge().covers(level) {
                if level {
                    l.pending.rising = true;
                } else {
                    l.pending.falling = true;
                }
                st.dirty.insert(line);
                if let Some(ev) = &st.notify {
                    // A full counter already wakes the reader.
                    let _ = ev.write(1);
                }
            }
        }
        drop(st);
        self.shared.changed.notify_all();
        Ok(())
    }

    fn describe(st: &SimState, line: u16) -> Result<String, String> {
        let l = st
            .lines
            .get(usize::from(line))
            .ok_or_else(|| format!("no line {line}"))?;
        Ok(format!(
            "line={line} name={} dir={} value={} level={} edge={}",
            st.names.get(usize::from(line)).map_or("", String::as_str),
            l.dir(),
            u8::from(l.value()),
            u8::from(l.level),
            l.edge().name()
        ))
    }

    /// The `get` answer for `line`, without `ok`.
    pub fn get(&self, line: u16) -> Result<String, String> {
        Self::describe(&self.lock(), line)
    }

    /// Wait until `key` of `line` (as `get` shows it) equals `value`.
    pub fn wait(
        &self,
        line: u16,
        key: &str,
        value: &str,
        timeout: Duration,
        client: &Client,
    ) -> Result<String, String> {
        if !["dir", "value", "level", "edge"].contains(&key) {
            return Err(format!("unknown key {key} (dir, value, level, edge)"));
        }
        let want = format!("{key}={value}");
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let now = Self::describe(&st, line)?;
            if now.split(' ').any(|f| f == want) {
                return Ok(now);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timeout waiting for {want}: {now}"));
            }
            st = client.wait_changed(&self.shared.changed, st, deadline)?;
        }
    }

    /// Wait until the attached device has looked at the chip's events once
    /// more: every edge driven before is then collected by the device.
    pub fn sync(&self, timeout: Duration, client: &Client) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        let Some(ev) = st.notify.clone() else {
            return Ok("detached".into());
        };
        st.sync_asked += 1;
        let want = st.sync_asked;
        let _ = ev.write(1);
        loop {
            if st.sync_seen >= want {
                return Ok(String::new());
            }
            if st.notify.is_none() {
                return Ok("detached".into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timeout: the device did not look at the chip".into());
            }
            st = client.wait_changed(&self.shared.changed, st, deadline)?;
        }
    }

    /// Run one control command (see the module docs); the answer line,
    /// without its newline.
    pub fn command(&self, text: &str) -> String {
        self.answer(text, &Client::detached())
    }

    /// Listen on `path` for control connections (see
    /// [`vhost_device_common::control`]).
    pub fn serve_control(&self, path: &Path) -> io::Result<ControlSocket> {
        ControlSocket::serve(path, "gpio-sim-control", Arc::new(self.clone()))
    }
}

impl Commands for SimChip {
    fn run(&self, text: &str, client: &Client) -> Result<String, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let line = |i: usize| -> Result<u16, String> {
            let w = words.get(i).ok_or("missing line number")?;
            w.parse().map_err(|_| format!("bad line number {w}"))
        };
        match words.first().copied() {
            Some("set") => {
                let level = match words.get(2).copied() {
                    Some("0") => false,
                    Some("1") => true,
                    _ => return Err("usage: set LINE 0|1".into()),
                };
                self.drive(line(1)?, level)?;
                Ok(String::new())
            }
            Some("toggle") => {
                let n = line(1)?;
                let level = {
                    let st = self.lock();
                    st.lines
                        .get(usize::from(n))
                        .ok_or_else(|| format!("no line {n}"))?
                        .level
                };
                self.drive(n, !level)?;
                Ok(String::new())
            }
            Some("get") => self.get(line(1)?),
            Some("wait") => {
                let (key, value) = words
                    .get(2)
                    .and_then(|kv| kv.split_once('='))
                    .ok_or("usage: wait LINE KEY=VALUE [MS]")?;
                let timeout = control::wait_timeout(words.get(3).copied())?;
                self.wait(line(1)?, key, value, timeout, client)
            }
            Some("sync") => {
                let timeout = control::wait_timeout(words.get(1).copied())?;
                self.sync(timeout, client)
            }
            Some("info") => {
                let st = self.lock();
                Ok(format!(
                    "lines={} names={}",
                    st.lines.len(),
                    st.names.join(",")
                ))
            }
            Some(other) => Err(format!(
                "unknown command {other} (set, toggle, get, wait, sync, info)"
            )),
            None => Err("empty command".into()),
        }
    }
}

fn release_all(st: &mut SimState) {
    for l in &mut st.lines {
        l.mode = LineMode::Released;
        l.pending = Edges::default();
    }
    st.dirty.clear();
}

/// One connection's view of a [`SimChip`].
pub struct SimHost {
    chip: SimChip,
    id: u64,
    event: Arc<EventFd>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost").field("id", &self.id).finish()
    }
}

impl SimHost {
    /// The chip this connection is attached to.
    pub fn chip(&self) -> &SimChip {
        &self.chip
    }

    fn with_line<R>(
        &self,
        line: u16,
        f: impl FnOnce(&mut SimLine, &mut BTreeSet<u16>) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut st = self.chip.lock();
        if st.owner != self.id {
            return Err(io::Error::other(
                "the simulated chip was given to another connection",
            ));
        }
        let SimState { lines, dirty, .. } = &mut *st;
        let l = lines
            .get_mut(usize::from(line))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let r = f(l, dirty);
        drop(st);
        self.chip.shared.changed.notify_all();
        r
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        let mut st = self.chip.lock();
        if st.owner == self.id {
            st.owner = 0;
            st.notify = None;
            release_all(&mut st);
        }
        drop(st);
        self.chip.shared.changed.notify_all();
    }
}

impl GpioHost for SimHost {
    fn num_lines(&self) -> u16 {
        u16::try_from(self.chip.lock().lines.len()).unwrap_or(u16::MAX)
    }

    fn line_name(&self, line: u16) -> String {
        self.chip
            .lock()
            .names
            .get(usize::from(line))
            .cloned()
            .unwrap_or_default()
    }

    fn set_mode(&mut self, line: u16, mode: LineMode) -> io::Result<()> {
        self.with_line(line, |l, dirty| {
            let was = l.edge();
            l.mode = mode;
            if l.edge() != was {
                // A new edge configuration starts with nothing pending.
                l.pending = Edges::default();
                dirty.remove(&line);
            }
            Ok(())
        })
    }

    fn value(&mut self, line: u16) -> io::Result<bool> {
        self.with_line(line, |l, _| match l.mode {
            LineMode::Released => Err(io::Error::from_raw_os_error(libc::EPERM)),
            _ => Ok(l.value()),
        })
    }

    fn set_value(&mut self, line: u16, value: bool) -> io::Result<()> {
        self.with_line(line, |l, _| match l.mode {
            LineMode::Output(_) => {
                l.mode = LineMode::Output(value);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EPERM)),
        })
    }

    fn take_edges(&mut self, line: u16) -> io::Result<Edges> {
        self.with_line(line, |l, dirty| {
            dirty.remove(&line);
            Ok(std::mem::take(&mut l.pending))
        })
    }

    fn line_event_fd(&self, _line: u16) -> Option<BorrowedFd<'_>> {
        None
    }

    fn chip_event_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.event.as_fd())
    }

    fn chip_events(&mut self) -> io::Result<Vec<u16>> {
        match self.event.read() {
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        let mut st = self.chip.lock();
        if st.owner != self.id {
            return Ok(Vec::new());
        }
        // The device collects these lines next, holding its own lock, which
        // anything after a `sync` (a migration's save) needs too.
        st.sync_seen = st.sync_asked;
        let lines = st.dirty.iter().copied().collect();
        drop(st);
        self.chip.shared.changed.notify_all();
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;

    fn chip(n: usize) -> SimChip {
        SimChip::new(vec![String::new(); n])
    }

    #[test]
    fn input_reads_the_outside_level() {
        let c = chip(4);
        let mut h = c.attach().unwrap();
        h.set_mode(2, LineMode::Input(EdgeDetect::None)).unwrap();

        c.drive(2, true).unwrap();

        assert!(h.value(2).unwrap());
    }

    #[test]
    fn covered_edge_is_pending_and_signalled() {
        let c = chip(4);
        let mut h = c.attach().unwrap();
        h.set_mode(1, LineMode::Input(EdgeDetect::Rising)).unwrap();

        c.drive(1, true).unwrap();
        c.drive(1, false).unwrap();

        assert_eq!(h.chip_events().unwrap(), vec![1]);
        assert_eq!(
            h.take_edges(1).unwrap(),
            Edges {
                rising: true,
                falling: false
            }
        );
        assert!(h.chip_events().unwrap().is_empty());
    }

    #[test]
    fn output_drives_its_value_not_the_outside_level() {
        let c = chip(2);
        let mut h = c.attach().unwrap();
        c.drive(0, true).unwrap();
        h.set_mode(0, LineMode::Output(false)).unwrap();

        assert!(!h.value(0).unwrap());
        h.set_value(0, true).unwrap();
        assert_eq!(
            c.command("get 0"),
            "ok line=0 name= dir=out value=1 level=1 edge=none"
        );
    }

    #[test]
    fn dropping_the_connection_releases_every_line() {
        let c = chip(2);
        let mut h = c.attach().unwrap();
        h.set_mode(1, LineMode::Output(true)).unwrap();

        drop(h);

        assert!(c.command("get 1").contains("dir=none"));
    }

    #[test]
    fn a_new_connection_takes_the_chip_from_an_old_one() {
        let c = chip(2);
        let mut old = c.attach().unwrap();
        let _new = c.attach().unwrap();

        assert!(old.set_mode(0, LineMode::Output(true)).is_err());
    }

    #[test]
    fn commands_answer_ok_or_err() {
        let c = SimChip::new(vec!["led".into(), String::new()]);
        assert_eq!(c.command("set 1 1"), "ok");
        assert_eq!(c.command("toggle 1"), "ok");
        assert_eq!(c.command("info"), "ok lines=2 names=led,");
        assert!(c.command("set 9 1").starts_with("err no line 9"));
        assert!(c.command("set 1 2").starts_with("err usage"));
        assert!(c.command("frobnicate").starts_with("err unknown command"));
        assert!(c
            .command("wait 0 colour=red")
            .starts_with("err unknown key"));
    }

    #[test]
    fn wait_returns_once_the_device_changes_the_line() {
        let c = chip(2);
        let mut h = c.attach().unwrap();
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || c.command("wait 1 value=1 10000"))
        };

        h.set_mode(1, LineMode::Output(true)).unwrap();

        assert!(waiter.join().unwrap().starts_with("ok line=1"));
    }

    #[test]
    fn sync_returns_once_the_device_looked_at_the_chip() {
        let c = chip(2);
        let mut h = c.attach().unwrap();
        let syncer = {
            let c = c.clone();
            std::thread::spawn(move || c.command("sync 10000"))
        };
        while c.lock().sync_asked == 0 {
            std::thread::yield_now();
        }

        h.chip_events().unwrap();

        assert_eq!(syncer.join().unwrap(), "ok");
        drop(h);
        assert_eq!(c.command("sync"), "ok detached");
    }

    #[test]
    fn wait_times_out_with_the_current_state() {
        let c = chip(1);
        assert!(c.command("wait 0 dir=out 10").starts_with("err timeout"));
    }

    #[test]
    fn control_socket_serves_commands_and_is_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim");
        let c = chip(2);
        let guard = c.serve_control(&path).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"set 0 1\nget 0\n").unwrap();
        let mut r = BufReader::new(s);
        let mut a = String::new();
        r.read_line(&mut a).unwrap();
        let mut b = String::new();
        r.read_line(&mut b).unwrap();

        assert_eq!(a, "ok\n");
        assert!(b.contains("level=1"), "{b}");
        drop(guard);
        assert!(!path.exists());
    }
}
