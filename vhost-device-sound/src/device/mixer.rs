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
//! The socket is the runtime's [`vhost_device_common::control`], which
//! holds its clients to bounds (connections, line length, clients that do
//! not read, waits of clients that hung up, failing accepts), so a broken
//! or hostile one cannot take it from the others or stall the device. The
//! vring workers only ever take the mixer's locks for a
//! few instructions; nothing here waits while holding them.

use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use vhost_device_common::control::{self, Client, Commands, ControlSocket};

use super::controls::{Controls, Kind, VOLUME_MAX};
use crate::request::Error;

/// What a connected device needs to hear about host-side changes.
#[derive(Debug)]
pub struct Subscriber {
    /// Control ids the host changed since the device last looked, each
    /// once, in the order of their first change (so at most one entry per
    /// control).
    pending: Mutex<Vec<u32>>,
    /// Readable when `pending` is not empty (in the device's first worker).
    wake: EventFd,
}

impl Subscriber {
    /// A subscriber with nothing pending.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            pending: Mutex::new(Vec::new()),
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
    }

    fn changed(&self, id: u32) {
        let mut pending = vhost_device_common::lock(&self.pending);
        if !pending.contains(&id) {
            pending.push(id);
        }
        drop(pending);
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
        client: &Client,
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
            l = client.wait_changed(&self.changed, l, deadline)?;
        }
    }

    /// Answer one command line (without the newline).
    pub fn command(&self, line: &str) -> String {
        self.answer(line, &Client::detached())
    }

    /// Listen on `path` for control connections (see
    /// [`vhost_device_common::control`]).
    pub fn serve(self: &Arc<Self>, path: &Path) -> io::Result<ControlSocket> {
        ControlSocket::serve(path, "snd-control", self.clone())
    }
}

impl Commands for Mixer {
    fn run(&self, line: &str, client: &Client) -> Result<String, String> {
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
                let timeout = control::wait_timeout(words.get(3).copied())?;
                self.wait(id(1)?, value(2)?, timeout, client)
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
    fn host_changes_are_told_once_each_in_the_order_they_were_made() {
        let m = mixer();
        let s = Arc::new(Subscriber::new().unwrap());
        let _sub = m.subscribe(s.clone());

        m.command("set 2 10");
        m.command("set 0 50");
        m.command("set 2 11");

        assert_eq!(s.take(), vec![2, 0]);
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

    #[test]
    fn the_control_socket_answers_the_mixer_commands() {
        use std::io::{BufRead, BufReader, Write};
        let m = mixer();
        let dir = tempfile::tempdir().unwrap();
        let sock = m.serve(&dir.path().join("c.ctl")).unwrap();
        let mut c = std::os::unix::net::UnixStream::connect(sock.path()).unwrap();

        c.write_all(b"set 2 40\nget 2\n").unwrap();

        let mut answers = BufReader::new(c).lines();
        assert_eq!(answers.next().unwrap().unwrap(), "ok changed");
        assert!(answers.next().unwrap().unwrap().contains(" value=40 "));
    }
}
