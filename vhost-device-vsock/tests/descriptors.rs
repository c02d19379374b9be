// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Accepting host connections when the process is out of file descriptors.
//!
//! One test in its own process: it lowers that process's descriptor limit,
//! which a test sharing a process with others (or a whole daemon, whose
//! threads open descriptors of their own) could not do deterministically.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use vhost_device_vsock::host::{accept_or_refuse, reserve_descriptor, Accepted};

/// The lowest descriptor number not in use (what the next open would get).
fn lowest_free_descriptor() -> u64 {
    let probe = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    u64::try_from(std::os::fd::AsRawFd::as_raw_fd(&probe)).unwrap()
}

#[test]
fn connection_is_refused_with_eof_when_out_of_descriptors_and_nothing_waits_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut reserve = Some(reserve_descriptor().unwrap());
    let mut client = UnixStream::connect(&path).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // Not one descriptor more may be opened.
    let full = lowest_free_descriptor();
    setrlimit(Resource::RLIMIT_NOFILE, full, hard).unwrap();

    let first = accept_or_refuse(listener.as_fd(), &mut reserve);
    let second = accept_or_refuse(listener.as_fd(), &mut reserve);

    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    assert!(
        matches!(first, Ok(Accepted::Refused(ref e)) if e.raw_os_error() == Some(libc::EMFILE)),
        "{first:?}"
    );
    assert!(
        matches!(second, Ok(Accepted::Nothing)),
        "nothing else waits: {second:?}"
    );
    assert!(reserve.is_some(), "the reserve is taken again");
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).unwrap(), 0, "the peer sees EOF");
}
