// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The runtime's floors through the real `vhost-device-testdev` binary and the
//! test front end: held requests, device state, backend requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session, Used};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-testdev");
const WAIT: Duration = Duration::from_secs(10);

fn daemon() -> DaemonProcess {
    DaemonProcess::start(Path::new(BIN), Vec::<&str>::new()).expect("daemon starts")
}

fn session(d: &DaemonProcess) -> Session {
    Session::start(&d.socket, &Options::default()).expect("front end connects")
}

/// Post `command` with a 64-byte reply buffer; returns (head, reply address).
fn post(s: &mut Session, command: &[u8]) -> (u16, u64) {
    let cmd = s.ram().alloc(command.len() as u64, 8).unwrap();
    s.ram().write(cmd, command).unwrap();
    let reply = s.ram().alloc(64, 8).unwrap();
    let vq = s.queue(0).unwrap();
    let head = vq
        .add(
            &Chain::new()
                .readable(cmd, u32::try_from(command.len()).unwrap())
                .writable(reply, 64),
        )
        .unwrap();
    vq.kick().unwrap();
    (head, reply)
}

/// Wait until `n` more chains were used.
fn used(s: &mut Session, n: usize) -> Vec<Used> {
    let mut all = Vec::new();
    while all.len() < n {
        all.extend(s.queue(0).unwrap().wait_used(WAIT).expect("device answers"));
    }
    all
}

fn reply(s: &Session, at: u64, u: &Used) -> Vec<u8> {
    s.ram().read(at, u.len as usize).unwrap()
}

#[test]
fn held_requests_wait_while_later_requests_are_served() {
    let d = daemon();
    let mut s = session(&d);
    let (h1, _) = post(&mut s, b"hold");
    let (h2, _) = post(&mut s, b"hold");

    let (e, at) = post(&mut s, b"echo hi");
    let first = used(&mut s, 1);

    assert_eq!(first.len(), 1, "a held request was completed early");
    assert_eq!(first[0].head, e);
    assert_eq!(reply(&s, at, &first[0]), b"hi");

    let (r, at) = post(&mut s, b"release");
    let rest = used(&mut s, 3);
    let heads: Vec<u16> = rest.iter().map(|u| u.head).collect();
    assert_eq!(heads, vec![h1, h2, r], "held requests out of order");
    assert_eq!(reply(&s, at, &rest[2]), b"2");
}
