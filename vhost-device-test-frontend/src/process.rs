// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Starting and watching a daemon process under test.
//!
//! [`DaemonProcess`] runs a daemon binary with a socket in a private temporary
//! directory, captures its stderr to a file, and exposes what the tests check
//! from `/proc`: open descriptors, threads and CPU time. The process is killed
//! when the value is dropped.
//!
//! Tests wait for events, with a generous bound only as a safety net
//! ([`wait_until`]). The one check that needs a window of time is "an idle
//! daemon uses no CPU": [`DaemonProcess::cpu_ticks_over`] watches it for
//! [`IDLE_WINDOW`] and tests allow [`IDLE_TICKS_MAX`] ticks, see there why.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long an idle-CPU check watches a daemon.
pub const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// CPU time, in clock ticks (`USER_HZ`, 1/100 s on Linux), an idle daemon may
/// be charged over [`IDLE_WINDOW`]: 10 ticks is 100 ms in 3 s, about 3% of one
/// core.
///
/// Why not 0: the kernel charges CPU time by sampling at each tick, so a
/// process that merely runs for a moment at the wrong instant is charged a
/// whole tick; and on a busy two-core CI machine a daemon still finishing the
/// work that came just before the window gets that work charged inside it. A
/// few ticks are noise. Why it is still meaningful: a worker that spins, or
/// that wakes itself in a loop (an eventfd left readable, a timer re-armed at
/// zero), runs for most of the window and is charged far more than 10 ticks.
pub const IDLE_TICKS_MAX: u64 = 10;

/// Poll `done` every 10 ms until it is true (returns true) or `timeout`
/// passes (returns false): for conditions only visible in `/proc`, such as
/// descriptor and thread counts settling after a disconnect. `timeout` is a
/// safety bound, not an expectation.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A daemon under test.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Child,
    dir: tempfile::TempDir,
    /// The (first) socket path passed with `--socket-path`.
    pub socket: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl DaemonProcess {
    /// Start `bin --socket-path <tmp>/dev.sock ARGS…` and wait until `wait_for`
    /// sockets exist (pass 0 to not wait).
    pub fn start<I, S>(bin: &Path, args: I) -> std::io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("dev.sock");
        let mut cmd = Command::new(bin);
        cmd.arg("--socket-path").arg(&socket).args(args);
        let mut me = Self::spawn_in(dir, socket, cmd)?;
        me.wait_for_path(&me.socket.clone(), Duration::from_secs(10))?;
        Ok(me)
    }

    /// Start an arbitrary command (its socket options are the caller's), in a
    /// fresh temporary directory that [`Self::dir`] returns.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("dev.sock");
        cmd.current_dir(dir.path());
        Self::spawn_in(dir, socket, cmd)
    }

    /// Start `bin ARGS…` with `fd` inherited as descriptor 3 (how systemd
    /// socket activation hands over a listening socket).
    pub fn spawn_with_fd3<I, S>(bin: &Path, fd: RawFd, args: I) -> std::io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        // SAFETY: between fork and exec the hook only calls the async-signal-safe
        // fcntl/dup2 on descriptors.
        unsafe {
            cmd.pre_exec(move || {
                let rc = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self::spawn(cmd)
    }

    fn spawn_in(
        dir: tempfile::TempDir,
        socket: PathBuf,
        mut cmd: Command,
    ) -> std::io::Result<Self> {
        let stderr = dir.path().join("stderr.log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr)?);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn()?;
        Ok(Self {
            child,
            dir,
            socket,
            stderr,
            status: None,
        })
    }

    /// The private temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait until `path` exists, or fail if the daemon exits first.
    pub fn wait_for_path(&mut self, path: &Path, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        while !path.exists() {
            if let Some(status) = self.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "daemon exited with {status} before creating {}: {}",
                    path.display(),
                    self.stderr_text()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "{} did not appear",
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Exit status if the process has ended.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Wait up to `timeout` for the process to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Send `signal`.
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        kill(Pid::from_raw(self.pid()), signal).map_err(std::io::Error::from)
    }

    /// Number of open file descriptors.
    pub fn fd_count(&self) -> std::io::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()))?.count())
    }

    /// Number of threads.
    pub fn thread_count(&self) -> std::io::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/task", self.pid()))?.count())
    }

    /// User plus system CPU time in clock ticks.
    pub fn cpu_ticks(&self) -> std::io::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(get(11) + get(12))
    }

    /// CPU ticks the process is charged during the next `window` (this call
    /// sleeps that long). Compare with [`IDLE_TICKS_MAX`] over [`IDLE_WINDOW`].
    pub fn cpu_ticks_over(&self, window: Duration) -> std::io::Result<u64> {
        let before = self.cpu_ticks()?;
        std::thread::sleep(window);
        Ok(self.cpu_ticks()?.saturating_sub(before))
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> std::io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        Ok(status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0))
    }

    /// Describe an exit status for assertions.
    pub fn describe(status: ExitStatus) -> String {
        match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "unknown".into(),
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The back-end type that `bin --print-capabilities` names (the `"type"` of
/// QEMU's `docs/interop/vhost-user.json`), checking that the command succeeds.
pub fn capabilities_type(bin: &Path) -> std::io::Result<String> {
    let out = Command::new(bin).arg("--print-capabilities").output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "--print-capabilities failed: {}",
            DaemonProcess::describe(out.status)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_once("\"type\": \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(kind, _)| kind.to_owned())
        .ok_or_else(|| std::io::Error::other(format!("no \"type\" in {text}")))
}
