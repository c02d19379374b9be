// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host ends of guest connections: Unix sockets, in the "hybrid vsock"
//! convention.
//!
//! - Host to guest: a host program connects to `--uds-path` and writes
//!   `CONNECT <port>\n`; once the guest accepts, it reads `OK <host port>\n` and
//!   the socket carries the stream.
//! - Guest to host: a guest connection to CID 2, port P is a connection to the
//!   Unix socket `<uds-path>_P`, where a host program listens.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest handshake line accepted (`CONNECT 4294967295\n` is 19 bytes).
pub const MAX_HANDSHAKE: usize = 32;

/// The listening socket for host programs; removes its file when dropped.
#[derive(Debug)]
pub struct UdsListener {
    /// The listener (non-blocking).
    pub listener: UnixListener,
    path: PathBuf,
}

impl UdsListener {
    /// Bind `path`, replacing a stale socket file but not a live one.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", path.display()),
            )
        })?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            path: path.into(),
        })
    }
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connect to the host program listening for guest port `port`.
pub fn connect_port(uds_path: &Path, port: u32) -> io::Result<UnixStream> {
    let mut name = uds_path.as_os_str().to_owned();
    name.push(format!("_{port}"));
    let stream = UnixStream::connect(PathBuf::from(name))?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Parse a complete handshake line (`CONNECT <port>\n`).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_suffix('\n')?.strip_prefix("CONNECT ")?;
    rest.trim_end_matches('\r').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_line_gives_the_port() {
        assert_eq!(parse_connect(b"CONNECT 1234\n"), Some(1234));
        assert_eq!(parse_connect(b"CONNECT 1234\r\n"), Some(1234));
    }

    #[test]
    fn malformed_connect_lines_are_refused() {
        for line in [
            &b"CONNECT\n"[..],
            b"connect 5\n",
            b"CONNECT 5",
            b"CONNECT -1\n",
            b"CONNECT 99999999999\n",
        ] {
            assert_eq!(parse_connect(line), None, "{line:?}");
        }
    }

    #[test]
    fn guest_port_maps_to_suffixed_path() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("v.sock");
        let _l = UnixListener::bind(dir.path().join("v.sock_52")).unwrap();
        assert!(connect_port(&base, 52).is_ok());
        assert!(connect_port(&base, 53).is_err());
    }
}
