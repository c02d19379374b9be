// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host side of the audio controls: one [`Mixer`] per device socket,
//! shared by the guest's connections and the host's control socket.
//!
//! The values outlive a front-end connection (a guest that reboots finds
//! the volume the host left), and a host program changes them through a
//! Unix socket of one-line text commands ([`Mixer::serve`]). A change made
//! on the host side is told to the connected driver with
//! `VIRTIO_SND_EVT_CTL_NOTIFY` (virtio 1.3, 5.14.6.9.4 "Control Element
//! Notifications"): the mixer records the control id for the connection's
//! device ([`Subscriber`]) and signals its eventfd, which is in the device's
//! first worker; that worker queues the event. A change the driver makes
//! itself is not echoed back (ALSA in the guest tells its own listeners).
//!
//! Commands (answers are one line, `ok …` or `err …`):
//!
//! | command | effect / answer |
//! |---|---|
//! | `list` | `ok 0=100 1=1 2=100 3=1`: every control id and its value |
//! | `get ID` | `ok id=0 stream=0 index=0 min=0 max=100 value=100 name=Playback Volume` |
//! | `set ID VALUE` | set the value from the host; `ok changed` (the driver is notified) or `ok unchanged` |
//! | `wait ID VALUE [MS]` | wait (default 10 s, at most 600 s) until the value is VALUE, then answer like `get`; `err timeout …` otherwise |
//! | `info` | `ok controls=4 guest=connected` (or `guest=none`) |
//!
//! The socket is the host's, but its clients are still held to bounds, so a
//! broken or hostile one cannot take it away from the others or stall the
//! device: at most [`MAX_CONTROL_CONNECTIONS`] at once, lines of at most
//! [`MAX_COMMAND`] bytes (a longer or non-UTF-8 line is answered `err` and
//! the connection closed), a client that does not read its answers is
//! dropped after [`WRITE_TIMEOUT`], a `wait` ends early when its client
//! hangs up, and a failing `accept` (out of descriptors) backs off instead
//! of spinning. The vring workers only ever take the mixer's locks for a
//! few instructions; nothing here waits while holding them.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::controls::{Controls, Kind, VOLUME_MAX};
use crate::request::Error;

/// Longest command line, newline included.
pub const MAX_COMMAND: u64 = 256;
/// Control connections served at once.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;
/// `wait` without a timeout.
const WAIT_DEFAULT: Duration = Duration::from_secs(10);
/// Longest `wait`.
const WAIT_MAX: Duration = Duration::from_secs(600);
/// How often a `wait` checks that its client is still there.
const HANGUP_CHECK: Duration = Duration::from_millis(250);
/// How long an answer may wait for a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (EMFILE does not go away by retrying).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a connected device needs to hear about host-side changes.
#[derive(Debug)]
pub struct Subscriber {
    /// Control ids the host changed since the device last looked.
    pending: Mutex<BTreeSet<u32>>,
    /// Readable when `pending` is not empty (in the device's first worker).
    wake: EventFd,
}

impl Subscriber {
    /// A subscriber with nothing pending.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            pending: Mutex::new(BTreeSet::new()),
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
        })
    }

    /// The eventfd to put into the worker's epoll.
    pub fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.wake)
    }

    /// Take the ids changed since the last call (and clear the eventfd).
    pub fn take(&self) -> Vec<u32> {
        let _ = self.wake.read();
        std::mem::take(&mut *vhost_device_common::lock(&self.pending))
            .into_iter()
            .collect()
    }

    fn changed(&self, id: u32) {
        vhost_device_common::lock(&self.pending).insert(id);
        if let Err(e) = self.wake.write(1) {
            log::warn!("cannot signal a control change to the device: {e}");
        }
    }
}

#[derive(Debug, Default)]
struct Listener {
    next: u64,
    current: Option<(u64, Arc<Subscriber>)>,
}

/// The audio controls of one device socket.
#[derive(Debug)]
pub struct Mixer {
    /// The elements and their values.
    pub controls: Controls,
    listener: Mutex<Listener>,
    changed: Condvar,
}

/// A device's registration with its [`Mixer`]; dropping it unregisters.
#[derive(Debug)]
pub struct Subscription {
    mixer: Arc<Mixer>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut l = vhost_device_common::lock(&self.mixer.listener);
        if l.current.as_ref().is_some_and(|(id, _)| *id == self.id) {
            l.current = None;
        }
    }
}

/// The listening control socket; the file goes when this is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Mixer {
    /// A mixer with these controls at their defaults.
    pub fn new(controls: Controls) -> Self {
        Self {
            controls,
            listener: Mutex::new(Listener::default()),
            changed: Condvar::new(),
        }
    }

    /// Tell `subscriber` about host-side changes until the returned guard
    /// is dropped (a newer subscription replaces an older one: one front
    /// end per socket).
    pub fn subscribe(self: &Arc<Self>, subscriber: Arc<Subscriber>) -> Subscription {
        let mut l = vhost_device_common::lock(&self.listener);
        l.next += 1;
        let id = l.next;
        l.current = Some((id, subscriber));
        Subscription {
            mixer: self.clone(),
            id,
        }
    }

    /// The driver wrote control `id` (CTL_WRITE); no notification.
    pub fn guest_write(&self, id: u32, value: &[u8]) -> Result<bool, Error> {
        // Under the listener lock, so a `wait` between its look at the
        // value and its sleep cannot miss the change.
        let l = vhost_device_common::lock(&self.listener);
        let changed = self.controls.write(id, value)?;
        drop(l);
        self.changed.notify_all();
        Ok(changed)
    }

    /// Restore a value (migration); no notification.
    pub fn restore(&self, id: u32, value: i32) -> Result<bool, Error> {
        let l = vhost_device_common::lock(&self.listener);
        let changed = self.controls.set(id, value)?;
        drop(l);
        self.changed.notify_all();
        Ok(changed)
    }

    /// The host sets control `id`; the connected driver is notified if the
    /// value changed. Returns whether it did.
    pub fn host_set(&self, id: u32, value: i32) -> Result<bool, Error> {
        // Under the listener lock, so a device that subscribes meanwhile
        // either sees the new value or is told about it.
        let l = vhost_device_common::lock(&self.listener);
        let changed = self.controls.set(id, value)?;
        if changed {
            if let Some((_, s)) = &l.current {
                s.changed(id);
            }
        }
        drop(l);
        self.changed.notify_all();
        Ok(changed)
    }

    fn describe(&self, id: u32) -> Result<String, Error> {
        let value = self.controls.value(id)?;
        let c = &self.controls.list[id as usize];
        let (max, name) = match (c.kind, c.direction) {
            (Kind::Volume, crate::virtio::Direction::Output) => (VOLUME_MAX, "Playback Volume"),
            (Kind::Switch, crate::virtio::Direction::Output) => (1, "Playback Switch"),
            (Kind::Volume, crate::virtio::Direction::Input) => (VOLUME_MAX, "Capture Volume"),
            (Kind::Switch, crate::virtio::Direction::Input) => (1, "Capture Switch"),
        };
        Ok(format!(
            "id={id} stream={} index={} min=0 max={max} value={value} name={name}",
            c.stream, c.index
        ))
    }

    fn wait(
        &self,
        id: u32,
        want: i32,
        timeout: Duration,
        gone: &dyn Fn() -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut l = vhost_device_common::lock(&self.listener);
        loop {
            let now = self.controls.value(id).map_err(|e| e.to_string())?;
            if now == want {
                drop(l);
                return self.describe(id).map_err(|e| e.to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "timeout: control {id} is {now} after {} ms",
                    timeout.as_millis()
                ));
            }
            l = match self.changed.wait_timeout(l, left.min(HANGUP_CHECK)) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
            if gone() {
                return Err("the client hung up".into());
            }
        }
    }

    /// Answer one command line (without the newline).
    pub fn command(&self, line: &str) -> String {
        self.command_from(line, &|| false)
    }

    /// Answer one command line of a client; `gone` tells whether the
    /// client hung up (a `wait` then ends early).
    fn command_from(&self, line: &str, gone: &dyn Fn() -> bool) -> String {
        match self.run(line, gone) {
            Ok(s) if s.is_empty() => "ok".into(),
            Ok(s) => format!("ok {s}"),
            Err(e) => format!("err {e}"),
        }
    }

    fn run(&self, line: &str, gone: &dyn Fn() -> bool) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize, what: &str| -> Result<i64, String> {
            let w = words.get(i).ok_or_else(|| format!("missing {what}"))?;
            w.parse().map_err(|_| format!("bad {what} '{w}'"))
        };
        let id = |i: usize| -> Result<u32, String> {
            u32::try_from(number(i, "control id")?).map_err(|_| "bad control id".to_string())
        };
        let value = |i: usize| -> Result<i32, String> {
            i32::try_from(number(i, "value")?).map_err(|_| "bad value".to_string())
        };
        match words.first().copied() {
            Some("list") => Ok(self
                .controls
                .values()
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{i}={v}"))
                .collect::<Vec<_>>()
                .join(" ")),
            Some("get") => self.describe(id(1)?).map_err(|e| e.to_string()),
            Some("set") => {
                let changed = self
                    .host_set(id(1)?, value(2)?)
                    .map_err(|e| e.to_string())?;
                Ok(if changed { "changed" } else { "unchanged" }.into())
            }
            Some("wait") => {
                let timeout = match words.get(3) {
                    Some(_) => Duration::from_millis(
                        u64::try_from(number(3, "timeout")?)
                            .map_err(|_| "bad timeout".to_string())?,
                    )
                    .min(WAIT_MAX),
                    None => WAIT_DEFAULT,
                };
                self.wait(id(1)?, value(2)?, timeout, gone)
            }
            Some("info") => {
                let guest = if vhost_device_common::lock(&self.listener).current.is_some() {
                    "connected"
                } else {
                    "none"
                };
                Ok(format!(
                    "controls={} guest={guest}",
                    self.controls.list.len()
                ))
            }
            Some(other) => Err(format!(
                "unknown command {other} (list, get, set, wait, info)"
            )),
            None => Err("empty command".into()),
        }
    }

    /// Listen on `path` for control connections, on a thread of its own
    /// (one more thread per connection, at most
    /// [`MAX_CONTROL_CONNECTIONS`]). A stale socket file is replaced; a
    /// live one is refused.
    pub fn serve(self: &Arc<Self>, path: &Path) -> io::Result<ControlSocket> {
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                let is_socket = std::fs::symlink_metadata(path)
                    .map(|m| m.file_type().is_socket())
                    .unwrap_or(false);
                if !is_socket || UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use", path.display()),
                    ));
                }
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            Err(e) => return Err(e),
        };
        let mixer = self.clone();
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("snd-control".into())
            .spawn(move || {
                let mut failing = false;
                for conn in listener.incoming() {
                    let mut conn = match conn {
                        Ok(c) => {
                            failing = false;
                            c
                        }
                        Err(e) => {
                            if !failing {
                                log::warn!("control socket: accept failed: {e}");
                                failing = true;
                            }
                            std::thread::sleep(ACCEPT_BACKOFF);
                            continue;
                        }
                    };
                    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONTROL_CONNECTIONS {
                        active.fetch_sub(1, Ordering::AcqRel);
                        let _ = conn.write_all(b"err too many control connections\n");
                        continue;
                    }
                    let mixer = mixer.clone();
                    let active = active.clone();
                    let spawned = std::thread::Builder::new()
                        .name("snd-control-client".into())
                        .spawn(move || {
                            mixer.serve_client(conn);
                            active.fetch_sub(1, Ordering::AcqRel);
                        });
                    if spawned.is_err() {
                        log::warn!("cannot start a control connection thread");
                    }
                }
            })?;
        Ok(ControlSocket { path: path.into() })
    }

    fn serve_client(&self, conn: UnixStream) {
        let Ok(mut out) = conn.try_clone() else {
            return;
        };
        if out.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
            return;
        }
        let probe = match conn.try_clone() {
            Ok(p) => p,
            Err(_) => return,
        };
        let gone = move || hung_up(&probe);
        let mut reader = BufReader::new(conn);
        loop {
            let mut line = String::new();
            match (&mut reader).take(MAX_COMMAND).read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let _ = out.write_all(b"err command is not UTF-8 text\n");
                    return;
                }
                Err(_) => return,
            }
            if !line.ends_with('\n') {
                let _ = out.write_all(b"err command too long\n");
                return;
            }
            let answer = self.command_from(line.trim(), &gone);
            if out.write_all(format!("{answer}\n").as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// Whether the peer of `conn` is gone: closed both ways (a client that
/// only shut down its sending side, as `socat` does at the end of its
/// input, still reads its answers).
fn hung_up(conn: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::StreamSpec;
    use crate::virtio::Direction;

    fn mixer() -> Arc<Mixer> {
        Arc::new(Mixer::new(Controls::new(&[
            StreamSpec::default_for(Direction::Output),
            StreamSpec::default_for(Direction::Input),
        ])))
    }

    #[test]
    fn a_host_change_is_pending_for_the_subscribed_device() {
        let m = mixer();
        let s = Arc::new(Subscriber::new().unwrap());
        let _sub = m.subscribe(s.clone());

        assert_eq!(m.command("set 2 40"), "ok changed");

        assert_eq!(s.take(), vec![2]);
        assert!(s.take().is_empty(), "told twice");
        assert_eq!(m.controls.value(2).unwrap(), 40);
    }

    #[test]
    fn an_unchanged_value_or_a_guest_write_is_not_notified() {
        let m = mixer();
        let s = Arc::new(Subscriber::new().unwrap());
        let _sub = m.subscribe(s.clone());

        assert_eq!(m.command("set 0 100"), "ok unchanged");
        m.guest_write(0, &50i32.to_le_bytes()).unwrap();

        assert!(s.take().is_empty());
    }

    #[test]
    fn a_dropped_subscription_is_no_longer_told() {
        let m = mixer();
        let s = Arc::new(Subscriber::new().unwrap());
        drop(m.subscribe(s.clone()));

        assert_eq!(m.command("set 1 0"), "ok changed");

        assert!(s.take().is_empty());
        assert_eq!(m.command("info"), "ok controls=4 guest=none");
    }

    #[test]
    fn only_the_newest_subscription_counts() {
        let m = mixer();
        let (old, new) = (
            Arc::new(Subscriber::new().unwrap()),
            Arc::new(Subscriber::new().unwrap()),
        );
        let old_sub = m.subscribe(old.clone());
        let _new_sub = m.subscribe(new.clone());
        drop(old_sub);

        m.command("set 3 0");

        assert!(old.take().is_empty());
        assert_eq!(new.take(), vec![3]);
    }

    #[test]
    fn commands_describe_list_and_refuse_bad_input() {
        let m = mixer();

        assert_eq!(
            m.command("get 0"),
            "ok id=0 stream=0 index=0 min=0 max=100 value=100 name=Playback Volume"
        );
        assert_eq!(m.command("list"), "ok 0=100 1=1 2=100 3=1");
        assert!(m.command("set 0 101").starts_with("err "));
        assert!(m.command("set 9 1").starts_with("err "));
        assert!(m.command("set x 1").starts_with("err bad control id"));
        assert!(m.command("frob").starts_with("err unknown command"));
        assert!(m.command("").starts_with("err empty"));
    }

    #[test]
    fn wait_returns_when_the_guest_writes_the_value() {
        let m = mixer();
        let writer = {
            let m = m.clone();
            std::thread::spawn(move || {
                m.guest_write(2, &7i32.to_le_bytes()).unwrap();
            })
        };

        let answer = m.command("wait 2 7 60000");

        writer.join().unwrap();
        assert!(answer.starts_with("ok id=2 "), "{answer}");
        assert!(answer.contains("value=7"), "{answer}");
    }

    #[test]
    fn wait_times_out_with_the_current_value() {
        let m = mixer();

        let answer = m.command("wait 0 5 1");

        assert_eq!(answer, "err timeout: control 0 is 100 after 1 ms");
    }

    fn served(m: &Arc<Mixer>) -> (tempfile::TempDir, ControlSocket) {
        let dir = tempfile::tempdir().unwrap();
        let sock = m.serve(&dir.path().join("c.ctl")).unwrap();
        (dir, sock)
    }

    fn try_ask(conn: &mut UnixStream, line: &[u8]) -> io::Result<String> {
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        // A refused connection may be closed before the line is written.
        let sent = conn.write_all(line);
        let mut answer = String::new();
        BufReader::new(conn).read_line(&mut answer)?;
        sent.map(|()| answer)
    }

    fn ask(conn: &mut UnixStream, line: &[u8]) -> String {
        try_ask(conn, line).unwrap()
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused_and_closed() {
        let m = mixer();
        let (_dir, sock) = served(&m);
        let mut c = UnixStream::connect(sock.path()).unwrap();

        let answer = ask(&mut c, b"set 0 \xff\xfe\n");

        assert_eq!(answer, "err command is not UTF-8 text\n");
        assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 0, "connection kept");
        assert_eq!(m.controls.value(0).unwrap(), 100);
    }

    #[test]
    fn an_overlong_line_is_refused_and_closed() {
        let m = mixer();
        let (_dir, sock) = served(&m);
        let mut c = UnixStream::connect(sock.path()).unwrap();
        let long = vec![b'x'; 4096];

        let answer = ask(&mut c, &long);

        assert_eq!(answer, "err command too long\n");
    }

    #[test]
    fn a_wait_answers_a_client_that_only_shut_down_its_sending_side() {
        let m = mixer();
        let (_dir, sock) = served(&m);
        let mut c = UnixStream::connect(sock.path()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c.write_all(b"wait 0 5 60000\n").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        // Let the wait see the half-closed socket before the change.
        std::thread::sleep(HANGUP_CHECK * 2);

        m.host_set(0, 5).unwrap();

        let mut answer = String::new();
        BufReader::new(c).read_line(&mut answer).unwrap();
        assert!(answer.starts_with("ok id=0 "), "{answer}");
    }

    #[test]
    fn waits_of_clients_that_hung_up_free_their_connections() {
        let m = mixer();
        let (_dir, sock) = served(&m);
        // Fill every connection with a long wait, then hang up.
        for _ in 0..MAX_CONTROL_CONNECTIONS {
            let mut c = UnixStream::connect(sock.path()).unwrap();
            c.write_all(b"wait 0 5 600000\n").unwrap();
            drop(c);
        }

        // A new client is served once the waits have noticed (well before
        // their 600 s); without that it is refused for ten minutes.
        let deadline = Instant::now() + Duration::from_secs(60);
        let answer = loop {
            let mut c = UnixStream::connect(sock.path()).unwrap();
            let answer = try_ask(&mut c, b"info\n").unwrap_or_else(|e| e.to_string());
            if answer.starts_with("ok") || Instant::now() > deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(50));
        };

        assert_eq!(answer, "ok controls=4 guest=none\n");
    }
}
