// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A private, headless PipeWire for the `pipewire` backend's integration
//! tests (`tests/pipewire.rs`) and the pacing benchmark
//! (`benches/pacing.rs`, which includes this file with `#[path]`): its own
//! `XDG_RUNTIME_DIR` (a temporary directory), a minimal configuration whose
//! null sink drives a 48 kHz graph in real time, no session manager unless
//! asked for; the real daemon binary started on it, and `pw-link` to
//! connect nodes. Nothing system-wide is touched, and only the processes
//! started here are stopped.
//!
//! Needs the `pipewire` and `pipewire-bin` packages (and `wireplumber` and
//! `dbus-daemon` for [`PipeWire::with_session_manager`]); `tools/setup`
//! installs them. Without them [`PipeWire::start`] panics saying so.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vhost_device_test_frontend::process::{wait_until, DaemonProcess};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-sound");
/// How long anything here waits for PipeWire, a port or the daemon.
pub const WAIT: Duration = Duration::from_secs(10);
/// The largest quantum of the graph ([`CONFIG`]), in frames.
pub const MAX_QUANTUM: usize = 1024;

/// Without a session manager nobody configures the stream nodes' ports;
/// this property makes PipeWire give them their channels' ports at once.
pub const PORTS: &str =
    "adapter.auto-port-config={ mode = dsp monitor = false control = false position = preserve }";

/// A graph of 48 kHz with quanta of at most 1024 frames, driven by a null
/// sink (`test-sink`, stereo, with monitor ports) in real time; a second
/// one (`other-sink`) is not the default.
pub const CONFIG: &str = r#"
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
pub struct PipeWire {
    /// Its runtime directory (socket, configuration, logs).
    pub dir: tempfile::TempDir,
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
    pub fn start() -> Self {
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
    pub fn with_session_manager() -> Self {
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
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.dir.path());
        self.wait_ready();
    }

    fn env_of<'a>(dir: &Path, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("XDG_RUNTIME_DIR", dir)
            .env("PIPEWIRE_RUNTIME_DIR", dir)
            .env_remove("PIPEWIRE_REMOTE")
    }

    /// Its socket, for a client in this process (`remote.name`).
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("pipewire-0")
    }

    /// A command that talks to this PipeWire.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        Self::env_of(self.dir.path(), &mut cmd);
        cmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pipewire.log")).unwrap_or_default()
    }

    /// `pw-link ARGS`: its output, or `None` if it failed.
    pub fn pw_link(&self, args: &[&str]) -> Option<String> {
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
    pub fn link(&self, from: &str, to: &str) {
        let linked = wait_until(WAIT, || self.pw_link(&[from, to]).is_some());
        assert!(
            linked,
            "cannot link {from} to {to}; ports: {:?} {:?}",
            self.pw_link(&["-o"]),
            self.pw_link(&["-i"])
        );
    }

    /// The sound daemon on this PipeWire.
    pub fn daemon(&self, extra: &[&str]) -> DaemonProcess {
        let mut cmd = self.command(BIN);
        // The backend's debug messages ("the guest is late", "missed a
        // graph cycle") tell a starved driver from a fault.
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
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether port `from` is linked to port `to` (`node:port`).
    pub fn linked(&self, from: &str, to: &str) -> bool {
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
