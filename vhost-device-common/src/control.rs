// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A host-side control socket of one-line text commands, for daemons whose
//! simulated or shared host state a host program drives (the gpio
//! simulated chip, the sound controls).
//!
//! A client writes a command line and reads one answer line, `ok …` or
//! `err …`. The device supplies the commands ([`Commands`]); this module
//! owns the socket and holds its clients to bounds, so a broken or hostile
//! one cannot take the socket from the others or stall the device:
//!
//! - at most [`MAX_CONNECTIONS`] clients at once; one more is answered
//!   `err too many control connections` and closed;
//! - lines of at most [`MAX_LINE`] bytes; a longer or non-UTF-8 line is
//!   answered `err` and the connection closed;
//! - a client that does not read its answers is dropped after
//!   [`WRITE_TIMEOUT`];
//! - a long `wait` command ends early when its client hangs up
//!   ([`Client::wait_changed`]); a client that only shut down its sending
//!   side (as `socat` does at the end of its input) still gets its answer;
//! - a failing `accept` (out of descriptors) is logged once and backs off
//!   instead of spinning.
//!
//! Each client is served on a thread of its own; the listener too.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, MutexGuard};
use std::time::{Duration, Instant};

/// Longest accepted command line, newline included.
pub const MAX_LINE: u64 = 256;
/// Most clients served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A client that does not take an answer within this time is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of a wait command that names none.
pub const WAIT_DEFAULT: Duration = Duration::from_secs(10);
/// Longest wait a command may ask for.
pub const WAIT_MAX: Duration = Duration::from_secs(600);
/// How often a waiting command looks whether its client hung up.
pub const HANGUP_CHECK: Duration = Duration::from_millis(250);
/// Pause after a failed `accept` before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The commands a device offers on its control socket.
pub trait Commands: Send + Sync + 'static {
    /// Run one command line (trimmed, without its newline): `Ok(text)` is
    /// answered `ok text` (`ok` when empty), `Err(text)` `err text`.
    fn run(&self, line: &str, client: &Client) -> Result<String, String>;

    /// The answer line to `line`, without its newline.
    fn answer(&self, line: &str, client: &Client) -> String {
        match self.run(line, client) {
            Ok(s) if s.is_empty() => "ok".into(),
            Ok(s) => format!("ok {s}"),
            Err(e) => format!("err {e}"),
        }
    }
}

/// The client a command comes from, for commands that wait.
#[derive(Debug, Default)]
pub struct Client {
    peer: Option<UnixStream>,
}

impl Client {
    /// A client that never hangs up (a command run in-process, or a test).
    pub fn detached() -> Self {
        Self::default()
    }

    /// Whether the client is gone: closed both ways. A client that only
    /// shut down its sending side still reads its answers.
    pub fn gone(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let Some(peer) = &self.peer else {
            return false;
        };
        let mut fds = [PollFd::new(peer.as_fd(), PollFlags::empty())];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
            && fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
    }

    /// Wait on `changed` until it is signalled, `deadline` passes or the
    /// client hangs up (looked at every [`HANGUP_CHECK`]). The guard comes
    /// back for the caller to look at its state again; a client that hung
    /// up is an error, which ends the command.
    pub fn wait_changed<'a, T>(
        &self,
        changed: &Condvar,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> Result<MutexGuard<'a, T>, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let guard = match changed.wait_timeout(guard, left.min(HANGUP_CHECK)) {
            Ok((g, _)) => g,
            Err(poisoned) => poisoned.into_inner().0,
        };
        if self.gone() {
            return Err("the client hung up".into());
        }
        Ok(guard)
    }
}

/// A wait command's optional timeout word, in milliseconds:
/// [`WAIT_DEFAULT`] when absent, at most [`WAIT_MAX`].
pub fn wait_timeout(word: Option<&str>) -> Result<Duration, String> {
    match word {
        None => Ok(WAIT_DEFAULT),
        Some(ms) => ms
            .parse()
            .map(|ms| Duration::from_millis(ms).min(WAIT_MAX))
            .map_err(|_| format!("bad timeout '{ms}'")),
    }
}

/// Bind a Unix socket at `path`, replacing a stale socket file (one that
/// nobody listens on) but never a live socket ([`io::ErrorKind::AddrInUse`])
/// nor anything that is not a socket ([`io::ErrorKind::AlreadyExists`]).
pub fn bind_replacing_stale(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if !is_socket {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another process", path.display()),
                ));
            }
            log::info!("replacing stale socket {}", path.display());
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

/// A control socket being served; dropping it removes the socket file (the
/// listener thread lives on, unreachable, until the process ends).
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Listen on `path` (see [`bind_replacing_stale`]) and serve `commands`
    /// to each client, on threads named after `name`.
    pub fn serve(path: &Path, name: &str, commands: Arc<dyn Commands>) -> io::Result<Self> {
        let listener = bind_replacing_stale(path)?;
        let client_name = format!("{name}-client");
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || listen(&listener, &client_name, &commands))?;
        Ok(Self { path: path.into() })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn listen(listener: &UnixListener, client_name: &str, commands: &Arc<dyn Commands>) {
    // The daemon takes SIGTERM/SIGINT on its own thread; this one may start
    // before they are blocked.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.add(nix::sys::signal::Signal::SIGINT);
    let _ = signals.thread_block();
    let active = Arc::new(AtomicUsize::new(0));
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
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = conn.write_all(b"err too many control connections\n");
            continue;
        }
        let commands = commands.clone();
        let active = active.clone();
        let spawned = std::thread::Builder::new()
            .name(client_name.into())
            .spawn(move || {
                let _ = serve_client(conn, &*commands);
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            log::warn!("control socket: cannot start a client thread: {e}");
        }
    }
}

fn serve_client(conn: UnixStream, commands: &dyn Commands) -> io::Result<()> {
    let mut out = conn.try_clone()?;
    out.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let client = Client {
        peer: Some(conn.try_clone()?),
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return out.write_all(b"err command is not UTF-8 text\n");
            }
            Err(e) => return Err(e),
        }
        if !line.ends_with('\n') {
            return out.write_all(b"err command too long\n");
        }
        let answer = commands.answer(line.trim(), &client);
        out.write_all(format!("{answer}\n").as_bytes())?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::Mutex;

    /// `set N`, `get`, `wait N [MS]`.
    #[derive(Default)]
    struct Counter {
        value: Mutex<u64>,
        changed: Condvar,
    }

    impl Commands for Counter {
        fn run(&self, line: &str, client: &Client) -> Result<String, String> {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| -> Result<u64, String> {
                words
                    .get(i)
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| "bad number".to_string())
            };
            match words.first().copied() {
                Some("set") => {
                    *crate::lock(&self.value) = number(1)?;
                    self.changed.notify_all();
                    Ok(String::new())
                }
                Some("get") => Ok(crate::lock(&self.value).to_string()),
                Some("wait") => {
                    let want = number(1)?;
                    let deadline = Instant::now() + wait_timeout(words.get(2).copied())?;
                    let mut v = crate::lock(&self.value);
                    while *v != want {
                        if Instant::now() >= deadline {
                            return Err("timeout".into());
                        }
                        v = client.wait_changed(&self.changed, v, deadline)?;
                    }
                    Ok(v.to_string())
                }
                _ => Err("unknown command".into()),
            }
        }
    }

    fn served() -> (tempfile::TempDir, Arc<Counter>, ControlSocket) {
        let dir = tempfile::tempdir().unwrap();
        let counter = Arc::new(Counter::default());
        let sock = ControlSocket::serve(&dir.path().join("ctl.sock"), "test-ctl", counter.clone())
            .unwrap();
        (dir, counter, sock)
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
    fn commands_are_answered_ok_or_err_line_by_line() {
        let (_dir, _c, sock) = served();
        let mut c = UnixStream::connect(sock.path()).unwrap();

        assert_eq!(ask(&mut c, b"set 7\n"), "ok\n");
        assert_eq!(ask(&mut c, b"get\n"), "ok 7\n");
        assert_eq!(ask(&mut c, b"frob\n"), "err unknown command\n");
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused_and_closed() {
        let (_dir, counter, sock) = served();
        let mut c = UnixStream::connect(sock.path()).unwrap();

        let answer = ask(&mut c, b"set \xff\xfe\n");

        assert_eq!(answer, "err command is not UTF-8 text\n");
        assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 0, "connection kept");
        assert_eq!(*crate::lock(&counter.value), 0);
    }

    #[test]
    fn an_overlong_line_is_refused_and_closed() {
        let (_dir, _c, sock) = served();
        let mut c = UnixStream::connect(sock.path()).unwrap();

        let answer = ask(&mut c, &[b'x'; 4096]);

        assert_eq!(answer, "err command too long\n");
    }

    #[test]
    fn one_client_more_than_the_limit_is_refused() {
        let (_dir, _c, sock) = served();
        let mut held: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| UnixStream::connect(sock.path()).unwrap())
            .collect();
        // Each is being served once it has had an answer.
        for c in &mut held {
            assert_eq!(ask(c, b"get\n"), "ok 0\n");
        }

        let mut extra = UnixStream::connect(sock.path()).unwrap();

        assert_eq!(
            try_ask(&mut extra, b"get\n").unwrap(),
            "err too many control connections\n"
        );
    }

    #[test]
    fn a_wait_answers_a_client_that_only_shut_down_its_sending_side() {
        let (_dir, counter, sock) = served();
        let mut c = UnixStream::connect(sock.path()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c.write_all(b"wait 5 60000\n").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        // Let the wait look at the half-closed socket before the change.
        std::thread::sleep(HANGUP_CHECK * 2);

        *crate::lock(&counter.value) = 5;
        counter.changed.notify_all();

        let mut answer = String::new();
        BufReader::new(c).read_line(&mut answer).unwrap();
        assert_eq!(answer, "ok 5\n");
    }

    #[test]
    fn waits_of_clients_that_hung_up_free_their_connections() {
        let (_dir, _c, sock) = served();
        // Fill every connection with a long wait, then hang up.
        for _ in 0..MAX_CONNECTIONS {
            let mut c = UnixStream::connect(sock.path()).unwrap();
            c.write_all(b"wait 5 600000\n").unwrap();
        }

        // A new client is served once the waits have noticed (well before
        // their 600 s); without that it is refused for ten minutes.
        let deadline = Instant::now() + Duration::from_secs(60);
        let answer = loop {
            let mut c = UnixStream::connect(sock.path()).unwrap();
            let answer = try_ask(&mut c, b"get\n").unwrap_or_else(|e| e.to_string());
            if answer.starts_with("ok") || Instant::now() > deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(answer, "ok 0\n");
    }

    #[test]
    fn a_live_socket_is_not_replaced_but_a_stale_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = UnixListener::bind(&path).unwrap();

        let err = bind_replacing_stale(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        drop(live);
        assert!(bind_replacing_stale(&path).is_ok());
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"keep").unwrap();

        let err = bind_replacing_stale(&path).unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }
}
