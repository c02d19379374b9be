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
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-sound");
const WAIT: Duration = Duration::from_secs(10);
/// How long a test records at most, waiting for what was played to come
/// back (a second, unless the machine is very busy).
const RECORD_LIMIT: Duration = Duration::from_secs(30);
/// How long a loop that serves the queues waits for the device at a time
/// (it looks at the used rings in between, so a notification the device
/// suppressed or the loop consumed early costs no more than this).
const POLL: Duration = Duration::from_millis(5);

const CONTROL: usize = 0;
const TX: usize = 2;
const RX: usize = 3;
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
/// sink (`test-sink`, stereo, with monitor ports) in real time; a second
/// one (`other-sink`) is not the default.
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
    { name = libpipewire-module-rt flags = [ ifexists nofail ] }
    { name = libpipewire-module-protocol-native }
    { name = libpipewire-module-metadata }
    { name = libpipewire-module-spa-node-factory }
    { name = libpipewire-module-client-node }
    { name = libpipewire-module-access }
    { name = libpipewire-module-adapter }
    { name = libpipewire-module-link-factory }
    { name = libpipewire-module-session-manager }
    { name = libpipewire-module-client-device }
    { name = libpipewire-module-profiler }
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
            priority.session = 2000
            adapter.auto-port-config = { mode = dsp monitor = true position = preserve }
        }
    }
    { factory = adapter
        args = {
            factory.name     = support.null-audio-sink
            node.name        = other-sink
            media.class      = Audio/Sink
            object.linger    = true
            audio.position   = [ FL FR ]
            node.driver      = true
            priority.driver  = 20000
            priority.session = 1000
            adapter.auto-port-config = { mode = dsp monitor = true position = preserve }
        }
    }
]
"#;

/// A private headless PipeWire.
struct PipeWire {
    dir: tempfile::TempDir,
    child: Child,
    /// A session bus and WirePlumber, if asked for.
    session: Vec<Child>,
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
            session: Vec::new(),
            _turn: turn,
        };
        pw.wait_ready();
        pw
    }

    /// A PipeWire with a session manager, as on a desktop: a private
    /// D-Bus session bus and WirePlumber, which link streams by their
    /// `target.object` (or to the default sink and source).
    fn with_session_manager() -> Self {
        let mut pw = Self::start();
        let dir = pw.dir.path().to_path_buf();
        let bus = format!("unix:path={}", dir.join("bus").display());
        let dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={bus}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dbus.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start dbus-daemon ({e}); install Debian's dbus-daemon package (tools/setup does)")
            });
        pw.session.push(dbus);
        assert!(
            wait_until(WAIT, || dir.join("bus").exists()),
            "no session bus: {}",
            std::fs::read_to_string(dir.join("dbus.log")).unwrap_or_default()
        );
        let wireplumber = pw
            .command("wireplumber")
            .env("DBUS_SESSION_BUS_ADDRESS", &bus)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("wireplumber.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start wireplumber ({e}); install Debian's wireplumber package (tools/setup does)")
            });
        pw.session.push(wireplumber);
        let ready = wait_until(WAIT, || {
            pw.command("wpctl")
                .arg("status")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("WirePlumber"))
        });
        assert!(
            ready,
            "WirePlumber did not come up: {}",
            std::fs::read_to_string(dir.join("wireplumber.log")).unwrap_or_default()
        );
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
            self.pw_link(&["-i"]).is_some_and(|out| {
                out.contains("test-sink:playback_FR") && out.contains("other-sink:playback_FR")
            })
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
        // The backend's debug messages tell a starved driver (see
        // `check`) from a fault.
        cmd.env("RUST_LOG", "info,vhost_device_sound::host::pipewire=debug")
            .args(["--socket-path", "dev.sock", "--backend", "pipewire"])
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

    /// Whether port `from` is linked to port `to` (`node:port`).
    fn linked(&self, from: &str, to: &str) -> bool {
        self.pw_link(&["-l"]).is_some_and(|out| {
            let mut lines = out.lines();
            while let Some(line) = lines.next() {
                if line == from {
                    return lines
                        .take_while(|l| l.starts_with(' '))
                        .any(|l| l.trim_start().trim_start_matches("|->").trim() == to);
                }
            }
            false
        })
    }
}

impl Drop for PipeWire {
    fn drop(&mut self) {
        for child in self.session.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
    let mut at = text.len().saturating_sub(2_000_000);
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
    loopback(&pw, S16, 100);
}

#[test]
fn a_session_manager_links_the_streams_to_their_targets() {
    let pw = PipeWire::with_session_manager();
    with_retries(|| {
        // No auto-port-config and no pw-link: what a desktop user runs.
        // Both streams name the sink that is not the default: playback
        // plays into it, capture records its monitor.
        let mut cmd = pw.command(BIN);
        cmd.env("RUST_LOG", "info,vhost_device_sound::host::pipewire=debug")
            .args(["--socket-path", "dev.sock", "--backend", "pipewire"])
            .args(["--pipewire-playback", "other-sink"])
            .args(["--pipewire-capture", "other-sink"])
            .args(["--pipewire-property", "stream.capture.sink=true"]);
        let mut d = DaemonProcess::spawn(cmd).expect("daemon starts");
        let socket = d.socket.clone();
        d.wait_for_path(&socket, WAIT).expect("daemon listens");
        let mut p = Player::new(&d);
        assert_eq!(p.prepare_stream(0), OK);
        assert_eq!(p.prepare_stream(1), OK);
        for ch in ["FL", "FR"] {
            let (out, mon) = (
                format!("vhost-device-sound-0:output_{ch}"),
                format!("vhost-device-sound-1:input_{ch}"),
            );
            let sink = format!("other-sink:playback_{ch}");
            let monitor = format!("other-sink:monitor_{ch}");
            assert!(
                wait_until(WAIT, || pw.linked(&out, &sink) && pw.linked(&monitor, &mon)),
                "WirePlumber did not link {ch}: {:?}",
                pw.pw_link(&["-l"])
            );
        }
        let signal = S16.signal(S16.period() * 50, 0x2545_f491);

        let mut recorded = p.start_capture(32);
        recorded.extend(p.play_and_record(&signal, 12));
        p.record_until(&mut recorded, &signal);

        let recorded = S16.without_silence(&recorded);
        check(&pw, &d, contains(&recorded, &signal), || {
            format!(
                "the {} bytes played are not in the {} recorded ({})",
                signal.len(),
                recorded.len(),
                where_it_breaks(&recorded, &signal)
            )
        })
    });
}

#[test]
fn u8_s24_and_float_streams_come_back_exactly_too() {
    let pw = PipeWire::start();
    for format in [U8, S24, FLOAT] {
        loopback(&pw, format, 50);
    }
}

/// Play `periods` of a known signal in `format` on stream 0 into the null
/// sink while stream 1 records its monitor; every byte must come back in
/// order.
fn loopback(pw: &PipeWire, format: SampleFormat, periods: usize) {
    with_retries(|| {
        let d = pw.daemon(&[]);
        let mut p = Player::new(&d);
        p.format = format;
        // PREPARE makes the nodes; linking them before START loses nothing.
        assert_eq!(p.prepare_stream(0), OK);
        assert_eq!(p.prepare_stream(1), OK);
        link_loopback(pw);
        let signal = format.signal(format.period() * periods, 0x1234_5678);

        // Capture runs before playback starts, so nothing played is missed.
        let mut recorded = p.start_capture(32);
        recorded.extend(p.play_and_record(&signal, 12));
        p.record_until(&mut recorded, &signal);

        let recorded = format.without_silence(&recorded);
        check(pw, &d, contains(&recorded, &signal), || {
            format!(
                "{}: the {} bytes played are not in the {} recorded ({})",
                format.name,
                signal.len(),
                recorded.len(),
                where_it_breaks(&recorded, &signal)
            )
        })
    });
}

/// A sample format of the tests' 48 kHz stereo streams, and how to make a
/// signal in it that PipeWire's 32-bit float graph carries exactly (so
/// not S32, whose low 8 bits it does not keep).
#[derive(Debug, Clone, Copy)]
struct SampleFormat {
    name: &'static str,
    /// `VIRTIO_SND_PCM_FMT_*`.
    code: u8,
    /// Bytes per sample.
    bytes: usize,
    /// The sample of silence, a byte repeated.
    silence: u8,
    /// A sample from 32 random bits, never silence.
    sample: fn(u32) -> Vec<u8>,
}

const S16: SampleFormat = SampleFormat {
    name: "S16",
    code: 5,
    bytes: 2,
    silence: 0,
    sample: |r| (u16::try_from(r >> 16).unwrap() | 1).to_le_bytes().to_vec(),
};
const U8: SampleFormat = SampleFormat {
    name: "U8",
    code: 4,
    bytes: 1,
    silence: 0x80,
    // Odd, so never 0x80.
    sample: |r| vec![u8::try_from(r >> 24).unwrap() | 1],
};
const S24: SampleFormat = SampleFormat {
    name: "S24",
    code: 15,
    bytes: 4,
    silence: 0,
    // 24 bits in the low bytes, sign-extended as ALSA's S24_LE.
    sample: |r| {
        let v = i32::from_le_bytes(((r | 1) << 8).to_le_bytes()) >> 8;
        v.to_le_bytes().to_vec()
    },
};
const FLOAT: SampleFormat = SampleFormat {
    name: "FLOAT",
    code: 19,
    bytes: 4,
    silence: 0,
    // A 24-bit fraction in [-1, 1), exact in f32.
    sample: |r| {
        let v = i32::from_le_bytes(((r | 1) << 8).to_le_bytes()) >> 8;
        #[allow(clippy::cast_precision_loss)] // 24 bits fit f32's mantissa
        let f = v as f32 / 8_388_608.0;
        f.to_le_bytes().to_vec()
    },
};

impl SampleFormat {
    /// Bytes of a stereo frame.
    fn frame(self) -> usize {
        2 * self.bytes
    }

    /// Bytes of a 10 ms period.
    fn period(self) -> usize {
        480 * self.frame()
    }

    /// `bytes` of a pseudo-random signal without a silent sample.
    fn signal(self, bytes: usize, mut seed: u32) -> Vec<u8> {
        (0..bytes / self.bytes)
            .flat_map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (self.sample)(seed)
            })
            .collect()
    }

    /// `recorded` without its silent frames. The signals never have a
    /// silent sample, so this keeps every one of their frames; what it
    /// drops is the silence before and after them and any that PipeWire
    /// put between their frames when a host too busy to keep the graph fed
    /// underran (a loaded test machine). What remains must be the signal,
    /// every byte in order.
    fn without_silence(self, recorded: &[u8]) -> Vec<u8> {
        recorded
            .chunks(self.frame())
            .filter(|f| f.iter().any(|&b| b != self.silence))
            .flatten()
            .copied()
            .collect()
    }
}

/// What one attempt of a test that records came to.
enum Attempt {
    Passed,
    /// Audio was dropped because something did not get the CPU in time:
    /// the test's driver did not take captured audio (the daemon reports a
    /// capture overrun), or a stream's node missed a graph cycle (the
    /// daemon reports that too; PipeWire drops that cycle's audio). A busy
    /// machine, not a fault of the daemon's.
    Starved(String),
}

/// Pass if `ok`; else fail with `why`, unless the attempt was starved (see
/// [`Attempt::Starved`]).
fn check(pw: &PipeWire, d: &DaemonProcess, ok: bool, why: impl FnOnce() -> String) -> Attempt {
    if ok {
        return Attempt::Passed;
    }
    let log = d.stderr_text();
    let graph = pw.log();
    let why = format!(
        "{}; daemon: {}; PipeWire: {}",
        why(),
        tail(&log),
        tail(&graph)
    );
    if log.contains("the guest is late") || log.contains("missed a graph cycle") {
        return Attempt::Starved(why);
    }
    panic!("{why}")
}

/// Run `attempt` until it passes; an attempt whose driver was starved (a
/// machine too busy to feed a real-time stream) is tried again, at most
/// three times in all.
fn with_retries(mut attempt: impl FnMut() -> Attempt) {
    for n in 1..=3 {
        match attempt() {
            Attempt::Passed => return,
            Attempt::Starved(why) if n < 3 => {
                eprintln!("attempt {n}: the test's driver was starved, trying again: {why}");
            }
            Attempt::Starved(why) => panic!("starved three times; the last: {why}"),
        }
    }
}

/// Whether `signal` is in `recorded`, whole.
fn contains(recorded: &[u8], signal: &[u8]) -> bool {
    recorded.windows(signal.len()).any(|w| w == signal)
}

/// Where `signal`'s first kilobyte is in `recorded`, how far from there
/// the two agree, and what each holds where they part.
fn where_it_breaks(recorded: &[u8], signal: &[u8]) -> String {
    let head = &signal[..signal.len().min(1024)];
    let Some(first) = recorded.windows(head.len()).position(|w| w == head) else {
        return "its start is not there".into();
    };
    let same = recorded[first..]
        .iter()
        .zip(signal)
        .take_while(|(a, b)| a == b)
        .count();
    let around = |b: &[u8], at: usize| b[at.saturating_sub(8)..(at + 16).min(b.len())].to_vec();
    format!(
        "its start is at {first}, {same} bytes agree, then {:?} where {:?} was sent",
        around(recorded, first + same),
        around(signal, same)
    )
}

/// A playback driver with the raw queue, for pacing and failures.
struct Player {
    s: Session,
    in_flight: VecDeque<(u16, u64)>,
    used: VecDeque<u16>,
    rx: VecDeque<(u16, u64, u64)>,
    /// The streams' sample format (48 kHz stereo).
    format: SampleFormat,
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
            rx: VecDeque::new(),
            format: S16,
        }
    }

    /// SET_PARAMS (48 kHz S16 stereo, 10 ms periods, 4 of them) and
    /// PREPARE of stream 0.
    fn prepare(&mut self) -> u32 {
        self.prepare_stream(0)
    }

    fn prepare_stream(&mut self, id: u32) -> u32 {
        let mut req = SET_PARAMS.to_le_bytes().to_vec();
        let period = u32::try_from(self.format.period()).unwrap();
        for v in [id, period * 4, period, 0] {
            req.extend_from_slice(&v.to_le_bytes());
        }
        req.extend_from_slice(&[2, self.format.code, 7, 0]);
        assert_eq!(self.control(&req), OK);
        self.cmd(PREPARE, id)
    }

    /// Post a capture buffer of one period for stream 1.
    fn post_rx(&mut self) {
        let period = u32::try_from(self.format.period()).unwrap();
        let x = self.s.ram().alloc(4, 8).unwrap();
        self.s.ram().write(x, &1u32.to_le_bytes()).unwrap();
        let d = self.s.ram().alloc(u64::from(period), 8).unwrap();
        let st = self.s.ram().alloc(8, 8).unwrap();
        let vq = self.s.queue(RX).unwrap();
        let head = vq
            .add(
                &Chain::new()
                    .readable(x, 4)
                    .writable(d, period)
                    .writable(st, 8),
            )
            .unwrap();
        vq.kick().unwrap();
        self.rx.push_back((head, d, st));
    }

    /// What the capture buffers completed so far hold (each is posted
    /// again); does not wait.
    fn take_rx(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        for u in self.s.queue(RX).unwrap().take_used().unwrap() {
            let (head, d, st) = self.rx.pop_front().unwrap();
            assert_eq!(u.head, head, "captured out of order");
            let status = self.s.ram().read(st, 4).unwrap();
            assert_eq!(u32::from_le_bytes(status.try_into().unwrap()), OK);
            got.extend(self.s.ram().read(d, self.format.period()).unwrap());
            self.post_rx();
        }
        got
    }

    /// Start capture stream 1 with `depth` buffers and wait until it
    /// delivers (PipeWire runs it): what it delivered.
    fn start_capture(&mut self, depth: usize) -> Vec<u8> {
        for _ in 0..depth {
            self.post_rx();
        }
        assert_eq!(self.cmd(START, 1), OK);
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.take_rx();
            if !got.is_empty() {
                return got;
            }
            assert!(Instant::now() < deadline, "capture delivers nothing");
            let _ = self.s.queue(RX).unwrap().wait_call(POLL);
        }
    }

    /// Record from the started capture stream into `recorded` until it
    /// holds `signal` (silence aside), at most [`RECORD_LIMIT`].
    fn record_until(&mut self, recorded: &mut Vec<u8>, signal: &[u8]) {
        let deadline = Instant::now() + RECORD_LIMIT;
        let mut looked = 0;
        while Instant::now() < deadline {
            if recorded.len() >= looked + 20 * PERIOD {
                looked = recorded.len();
                if contains(&self.format.without_silence(recorded), signal) {
                    return;
                }
            }
            recorded.extend(self.take_rx());
            let _ = self.s.queue(RX).unwrap().wait_call(POLL);
        }
    }

    /// Play `signal` on stream 0 (in periods, `depth` in flight, the first
    /// ones before START) while recording the started capture stream: what
    /// was recorded meanwhile.
    fn play_and_record(&mut self, signal: &[u8], depth: usize) -> Vec<u8> {
        let chunks: Vec<&[u8]> = signal.chunks(self.format.period()).collect();
        let mut next = 0;
        while next < depth.min(chunks.len()) {
            self.tx(chunks[next]);
            next += 1;
        }
        assert_eq!(self.cmd(START, 0), OK);
        let mut recorded = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.in_flight.is_empty() {
            assert!(Instant::now() < deadline, "playback stalled");
            let used = self.s.queue(TX).unwrap().take_used().unwrap();
            self.used.extend(used.iter().map(|u| u.head));
            while !self.used.is_empty() {
                assert_eq!(self.complete(), OK);
                if next < chunks.len() {
                    self.tx(chunks[next]);
                    next += 1;
                }
            }
            recorded.extend(self.take_rx());
            let _ = self.s.queue(RX).unwrap().wait_call(POLL);
        }
        recorded
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

/// A 48 kHz S16 stereo WAV file with these samples.
fn write_wav(path: &Path, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap();
    let mut h = b"RIFF".to_vec();
    h.extend_from_slice(&(36 + len).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 0x0002_0001, 48000, 192_000, 0x0010_0004] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(b"data");
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(data);
    std::fs::write(path, h).unwrap();
}

#[test]
fn capture_delivers_what_another_pipewire_client_plays() {
    let pw = PipeWire::start();
    // Half a second of a known signal, never silence, played by pw-cat
    // into the null sink whose monitor the daemon records. pw-cat plays
    // once its first port is linked, so half a second of lead-in gives the
    // test time to link the second one; it does not play the end of its
    // last block, so the test looks for all but the last quantum.
    let signal = S16.signal(QUANTUM * 12, 0x9e37_79b9);
    let mut file = vec![0x55u8; 48000 * 4 / 2];
    file.extend_from_slice(&signal);
    let wav = pw.dir.path().join("known.wav");
    write_wav(&wav, &file);
    let signal = &signal[..signal.len() - QUANTUM];
    with_retries(|| {
        let d = pw.daemon(&["--stream", "output", "--stream", "input"]);
        let mut p = Player::new(&d);
        assert_eq!(p.prepare_stream(1), OK);
        for ch in ["FL", "FR"] {
            pw.link(
                &format!("test-sink:monitor_{ch}"),
                &format!("vhost-device-sound-1:input_{ch}"),
            );
        }
        let mut recorded = p.start_capture(32);
        let log = pw.dir.path().join("pw-cat.log");
        let mut player = pw
            .command("pw-cat")
            .args(["--playback", "-P"])
            .arg(format!(
                "{{ node.name = known {} }}",
                PORTS.replace('=', " = ")
            ))
            .arg(&wav)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("pw-cat runs (Debian package pipewire-bin)");
        // Keep taking capture buffers while pw-link runs (it may be slow).
        std::thread::scope(|scope| {
            let linking = scope.spawn(|| {
                for ch in ["FL", "FR"] {
                    pw.link(
                        &format!("known:output_{ch}"),
                        &format!("test-sink:playback_{ch}"),
                    );
                }
            });
            while !linking.is_finished() {
                recorded.extend(p.take_rx());
                let _ = p.s.queue(RX).unwrap().wait_call(POLL);
            }
            linking.join().unwrap();
        });

        p.record_until(&mut recorded, signal);

        let _ = player.kill();
        let _ = player.wait();
        let recorded = S16.without_silence(&recorded);
        check(&pw, &d, contains(&recorded, signal), || {
            format!(
                "the {} bytes pw-cat played are not in the {} recorded ({}); pw-cat: {}",
                signal.len(),
                recorded.len(),
                where_it_breaks(&recorded, signal),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    });
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
