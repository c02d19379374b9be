// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Entropy from a host file or character device.
//!
//! The file is opened with `O_NONBLOCK`, so a source that has nothing to give
//! (a FIFO with no data, a slow hardware RNG) answers `WouldBlock` instead of
//! stalling the vring worker; the device then waits for the descriptor in its
//! epoll. A regular file never blocks and is not pollable.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::EntropySource;

/// A host file or device opened for non-blocking reads.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    path: PathBuf,
    pollable: bool,
}

impl FileSource {
    /// Open `path` read-only and non-blocking.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open rng source {}: {e}", path.display()),
                )
            })?;
        let kind = file.metadata()?.file_type();
        if kind.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("rng source {} is a directory", path.display()),
            ));
        }
        let pollable = kind.is_char_device() || kind.is_fifo() || kind.is_socket();
        Ok(Self {
            file,
            path: path.into(),
            pollable,
        })
    }
}

impl EntropySource for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pollable.then(|| self.file.as_fd())
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urandom_gives_bytes() {
        let mut src = FileSource::open(Path::new("/dev/urandom")).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(src.read(&mut buf).unwrap(), 64);
        assert!(src.ready_fd().is_some());
    }

    #[test]
    fn regular_file_ends_and_is_not_pollable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");
        std::fs::write(&path, [7u8; 10]).unwrap();
        let mut src = FileSource::open(&path).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(src.read(&mut buf).unwrap(), 10);
        assert_eq!(src.read(&mut buf).unwrap(), 0);
        assert!(src.ready_fd().is_none());
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let err = FileSource::open(Path::new("/nonexistent/rng")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rng"));
    }

    #[test]
    fn empty_fifo_would_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut src = FileSource::open(&path).unwrap();
        // Keep a writer open so that the FIFO reports "no data" rather than EOF.
        let _writer = OpenOptions::new().write(true).open(&path).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            src.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
