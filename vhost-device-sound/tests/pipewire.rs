// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `pipewire` backend against a real PipeWire: each test starts its
//! own headless `pipewire` daemon (a private `XDG_RUNTIME_DIR`, a minimal
//! configuration with a null sink that drives the graph, no session
//! manager), runs the real daemon binary on it, links the daemon's nodes
//! with `pw-link` and drives the daemon through the test front end.
//!
//! These tests need the `pipewire` and `pipewire-bin` packages
//! (`tools/setup` installs them); without them they fail, they do not skip.
#![cfg(feature = "pipewire")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::sound::SoundGuest;
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-sound");
const WAIT: Duration = Duration::from_secs(10);

const CONTROL: usize = 0;
const TX: usize = 2;
const OK: u32 = 0x8000;
const IO_ERR: u32 = 0x8003;
const SET_PARAMS: u32 = 0x0101;
const PREPARE: u32 = 0x0102;
const RELEASE: u32 = 0x0103;
const START: u32 = 0x0104;
const STOP: u32 = 0x0105;
/// 10 ms of 48 kHz S16 stereo.
const PERIOD: usize = 1920;
/// The largest quantum of the test graph, in bytes of 48 kHz S16 stereo.
const QUANTUM: usize = 1024 * 4;

/// Without a session manager nobody configures the stream nodes' ports;
/// this property makes PipeWire give them their channels' ports at once.
const PORTS: &str =
    "adapter.auto-port-config={ mode = dsp monitor = false control = false position = preserve }";

/// A graph of 48 kHz with quanta of at most 1024 frames, driven by a null
/// sink (`test-sink`, stereo, with monitor ports) in real time.
const CONFIG: &str = r#"
context.properties = {
    core.daemon = true
    core.name = pipewire-0
    default.clock.rate = 48000
    default.clock.quantum = 1024
    default.clock.min-quantum = 32
    default.clock.max-quantum = 1024
    support.dbus = false
}
context.spa-libs = {
    audio.convert.* = audioconvert/libspa-audioconvert
    support.*       = support/libspa-support
}
context.modules = [
    { name = libpipewire-module-protocol-native }
    { name = libpipewire-module-metadata }
    { name = libpipewire-module-spa-node-factory }
    { name = libpipewire-module-client-node }
    { name = libpipewire-module-access }
    { name = libpipewire-module-adapter }
    { name = libpipewire-module-link-factory }
]
context.objects = [
    { factory = adapter
        args = {
            factory.name     = support.null-audio-sink
            node.name        = test-sink
            media.class      = Audio/Sink
            object.linger    = true
            audio.position   = [ FL FR ]
            node.driver      = true
            priority.driver  = 30000
            adapter.auto-port-config = { mode = dsp monitor = true position = preserve }
        }
    }
]
"#;

/// A private headless PipeWire.
struct PipeWire {
    dir: tempfile::TempDir,
    child: Child,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One test with a PipeWire at a time: each runs its own daemon and graph
/// in real time, and several at once on a small machine would starve
/// each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl PipeWire {
    fn start() -> Self {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.conf"), CONFIG).unwrap();
        let child = Self::spawn(dir.path());
        let mut pw = Self {
            dir,
            child,
            _turn: turn,
        };
        pw.wait_ready();
        pw
    }

    fn spawn(dir: &Path) -> Child {
        let log = std::fs::File::create(dir.join("pipewire.log")).unwrap();
        let mut cmd = Command::new("pipewire");
        cmd.arg("-c")
            .arg(dir.join("test.conf"))
            .stdin(Stdio::null())
            .stderr(log);
        Self::env_of(dir, &mut cmd).spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start the pipewire daemon ({e}); install Debian's pipewire and \
                 pipewire-bin packages (tools/setup does)"
            )
        })
    }

    fn wait_ready(&mut self) {
        let ready = wait_until(WAIT, || {
            self.pw_link(&["-i"])
                .is_some_and(|out| out.contains("test-sink:playback_FR"))
        });
        assert!(ready, "PipeWire did not come up: {}", self.log());
        assert!(self.child.try_wait().unwrap().is_none(), "{}", self.log());
    }

    /// A new PipeWire in the same runtime directory, after [`Self::kill`].
    fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.dir.path());
        self.wait_ready();
    }

    fn env_of<'a>(dir: &Path, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("XDG_RUNTIME_DIR", dir)
            .env("PIPEWIRE_RUNTIME_DIR", dir)
            .env_remove("PIPEWIRE_REMOTE")
    }

    /// A command that talks to this PipeWire.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        Self::env_of(self.dir.path(), &mut cmd);
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pipewire.log")).unwrap_or_default()
    }

    /// `pw-link ARGS`: its output, or `None` if it failed.
    fn pw_link(&self, args: &[&str]) -> Option<String> {
        let out = self
            .command("pw-link")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("pw-link runs (Debian package pipewire-bin)");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Link port `from` to port `to` (`node:port`), waiting for them to
    /// exist.
    fn link(&self, from: &str, to: &str) {
        let linked = wait_until(WAIT, || self.pw_link(&[from, to]).is_some());
        assert!(
            linked,
            "cannot link {from} to {to}; ports: {:?} {:?}",
            self.pw_link(&["-o"]),
            self.pw_link(&["-i"])
        );
    }

    /// The sound daemon on this PipeWire.
    fn daemon(&self, extra: &[&str]) -> DaemonProcess {
        let mut cmd = self.command(BIN);
        cmd.args(["--socket-path", "dev.sock", "--backend", "pipewire"])
            .args(["--pipewire-property", PORTS])
            .args(extra);
        let mut d = DaemonProcess::spawn(cmd).expect("daemon starts");
        let socket = d.socket.clone();
        d.wait_for_path(&socket, WAIT).expect("daemon listens");
        d
    }

    /// Stop the daemon (as if it crashed or the user quit).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PipeWire {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The end of a log.
fn tail(text: &str) -> &str {
    let mut at = text.len().saturating_sub(20_000);
    while !text.is_char_boundary(at) {
        at += 1;
    }
    &text[at..]
}

fn session(d: &DaemonProcess) -> Session {
    Session::start(&d.socket, &Options::default()).expect("front end connects")
}

/// Link the daemon's playback stream (0) into the null sink and the sink's
/// monitor into its capture stream (1): a loopback through the graph.
fn link_loopback(pw: &PipeWire) {
    for ch in ["FL", "FR"] {
        pw.link(
            &format!("vhost-device-sound-0:output_{ch}"),
            &format!("test-sink:playback_{ch}"),
        );
        pw.link(
            &format!("test-sink:monitor_{ch}"),
            &format!("vhost-device-sound-1:input_{ch}"),
        );
    }
}

#[test]
fn a_signal_played_into_pipewire_comes_back_from_its_monitor_exactly() {
    let pw = PipeWire::start();
    let d = pw.daemon(&[]);
    let mut guest = SoundGuest::new(session(&d));
    // PREPARE makes the nodes; linking them before START loses nothing.
    guest.prepare(0).unwrap();
    guest.prepare(1).unwrap();
    link_loopback(&pw);

    let r = guest
        .loopback(0, 1, 100, 50, Duration::from_secs(60))
        .unwrap();

    assert!(
        r.offset.is_some(),
        "the {} bytes played are not in the {} recorded (first period at, equal bytes: {:?}); daemon: {}",
        r.played,
        r.recorded,
        r.first_period,
        tail(&d.stderr_text())
    );
}

/// A playback driver with the raw queue, for pacing and failures.
struct Player {
    s: Session,
    in_flight: VecDeque<(u16, u64)>,
    used: VecDeque<u16>,
}

impl Player {
    fn control(&mut self, req: &[u8]) -> u32 {
        let r = self.s.ram().alloc(req.len() as u64, 8).unwrap();
        self.s.ram().write(r, req).unwrap();
        let w = self.s.ram().alloc(4, 8).unwrap();
        let vq = self.s.queue(CONTROL).unwrap();
        vq.add(
            &Chain::new()
                .readable(r, u32::try_from(req.len()).unwrap())
                .writable(w, 4),
        )
        .unwrap();
        vq.kick().unwrap();
        vq.wait_used(WAIT).expect("control answered");
        u32::from_le_bytes(self.s.ram().read(w, 4).unwrap().try_into().unwrap())
    }

    fn new(d: &DaemonProcess) -> Self {
        Self {
            s: session(d),
            in_flight: VecDeque::new(),
            used: VecDeque::new(),
        }
    }

    /// SET_PARAMS (48 kHz S16 stereo, 10 ms periods, 4 of them) and
    /// PREPARE of stream 0.
    fn prepare(&mut self) -> u32 {
        let mut req = SET_PARAMS.to_le_bytes().to_vec();
        let period = u32::try_from(PERIOD).unwrap();
        for v in [0, period * 4, period, 0] {
            req.extend_from_slice(&v.to_le_bytes());
        }
        req.extend_from_slice(&[2, 5, 7, 0]);
        assert_eq!(self.control(&req), OK);
        self.cmd(PREPARE, 0)
    }

    fn cmd(&mut self, code: u32, stream: u32) -> u32 {
        let mut req = code.to_le_bytes().to_vec();
        req.extend_from_slice(&stream.to_le_bytes());
        self.control(&req)
    }

    fn tx(&mut self, data: &[u8]) {
        let x = self.s.ram().alloc(4, 8).unwrap();
        self.s.ram().write(x, &0u32.to_le_bytes()).unwrap();
        let d = self.s.ram().alloc(data.len() as u64, 8).unwrap();
        self.s.ram().write(d, data).unwrap();
        let st = self.s.ram().alloc(8, 8).unwrap();
        let vq = self.s.queue(TX).unwrap();
        let head = vq
            .add(
                &Chain::new()
                    .readable(x, 4)
                    .readable(d, u32::try_from(data.len()).unwrap())
                    .writable(st, 8),
            )
            .unwrap();
        vq.kick().unwrap();
        self.in_flight.push_back((head, st));
    }

    /// Wait for the next playback completion: its status.
    fn complete(&mut self) -> u32 {
        while self.used.is_empty() {
            let more = self.s.queue(TX).unwrap().wait_used(WAIT);
            self.used
                .extend(more.expect("playback completes").iter().map(|u| u.head));
        }
        let (head, st) = self.in_flight.pop_front().unwrap();
        assert_eq!(self.used.pop_front(), Some(head), "completed out of order");
        let b = self.s.ram().read(st, 4).unwrap();
        u32::from_le_bytes(b.try_into().unwrap())
    }
}

#[test]
fn playback_completes_at_the_graphs_pace_never_faster() {
    let pw = PipeWire::start();
    let d = pw.daemon(&[]);
    let mut p = Player::new(&d);
    assert_eq!(p.prepare(), OK);
    for ch in ["FL", "FR"] {
        pw.link(
            &format!("vhost-device-sound-0:output_{ch}"),
            &format!("test-sink:playback_{ch}"),
        );
    }
    let periods = 200;
    // What may be taken ahead of the graph's clock: the ring (4 periods
    // and a quantum), a quantum PipeWire holds queued, and the first
    // cycle's quantum taken at once, plus one quantum of rounding.
    let ahead = 4 * PERIOD + 4 * QUANTUM;
    let tone = vec![0x11u8; PERIOD];
    for _ in 0..4 {
        p.tx(&tone);
    }

    let start = Instant::now();
    assert_eq!(p.cmd(START, 0), OK);
    let mut times = Vec::new();
    for k in 0..periods {
        assert_eq!(p.complete(), OK, "period {k}");
        times.push(start.elapsed());
        if k + 4 < periods {
            p.tx(&tone);
        }
    }
    assert_eq!(p.cmd(STOP, 0), OK);

    // Completion k means the graph consumed all but `ahead` bytes of the
    // k + 1 periods sent: never earlier than that in real time.
    for (k, t) in times.iter().enumerate() {
        let consumed = ((k + 1) * PERIOD).saturating_sub(ahead) as u64;
        let floor = Duration::from_micros(consumed * 1_000_000 / 192_000);
        assert!(
            *t >= floor,
            "period {k} completed at {t:?}, before {floor:?}"
        );
    }
}

#[test]
fn pipewire_going_away_fails_io_not_the_daemon_and_prepare_reconnects() {
    let mut pw = PipeWire::start();
    let d = pw.daemon(&[]);
    let mut p = Player::new(&d);
    assert_eq!(p.prepare(), OK);
    let tone = vec![0x22u8; PERIOD];
    p.tx(&tone);
    assert_eq!(p.cmd(START, 0), OK);
    assert_eq!(p.complete(), OK, "the first buffer fits the ring at once");

    pw.kill();
    // The daemon sees the connection fail: playback answers IO_ERR.
    let mut statuses = Vec::new();
    let failed = wait_until(WAIT, || {
        p.tx(&tone);
        statuses.push(p.complete());
        statuses.last() == Some(&IO_ERR)
    });
    assert!(failed, "statuses after PipeWire ended: {statuses:x?}");

    // The guest recovers as Linux does; with PipeWire back, PREPARE
    // connects again.
    assert_eq!(p.cmd(STOP, 0), OK);
    assert_eq!(p.cmd(RELEASE, 0), OK);
    pw.restart();
    assert_eq!(p.cmd(PREPARE, 0), OK, "{}", d.stderr_text());
    assert_eq!(p.cmd(START, 0), OK);
    p.tx(&tone);
    assert_eq!(p.complete(), OK);
    assert!(
        d.stderr_text().contains("PipeWire connection failed"),
        "the failure is logged: {}",
        d.stderr_text()
    );
}

#[test]
fn without_pipewire_the_daemon_fails_at_startup_saying_what_to_do() {
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "dev.sock", "--backend", "pipewire"])
        .env("XDG_RUNTIME_DIR", empty.path())
        .env_remove("PIPEWIRE_RUNTIME_DIR")
        .env_remove("PIPEWIRE_REMOTE");
    let mut d = DaemonProcess::spawn(cmd).unwrap();

    let status = d.wait_timeout(WAIT).unwrap().expect("the daemon exits");

    let err = d.stderr_text();
    assert!(!status.success());
    assert!(err.contains("is PipeWire running"), "{err}");
    assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
    assert!(
        err.contains(&empty.path().join("pipewire-0").display().to_string()),
        "names the socket it tried: {err}"
    );
    assert!(!PathBuf::from(d.dir()).join("dev.sock").exists());
}
