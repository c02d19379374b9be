// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The runtime's floors through the real `vhost-device-testdev` binary and the
//! test front end: held requests, device state, backend requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{BackendRequest, Chain, Options, Session, Used};

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

/// Post a request without kicking (several go out with one kick).
fn post_quietly(s: &mut Session, command: &[u8]) -> u16 {
    let cmd = s.ram().alloc(command.len() as u64, 8).unwrap();
    s.ram().write(cmd, command).unwrap();
    let reply = s.ram().alloc(64, 8).unwrap();
    s.queue(0)
        .unwrap()
        .add(
            &Chain::new()
                .readable(cmd, u32::try_from(command.len()).unwrap())
                .writable(reply, 64),
        )
        .unwrap()
}

#[test]
fn requests_in_flight_at_a_migration_complete_exactly_once_by_source_or_destination() {
    let a = daemon();
    let b = daemon();
    let mut s = session(&a);
    let mut posted = Vec::new();
    for i in 0..24 {
        let cmd: &[u8] = if i % 3 == 0 { b"echo x" } else { b"hold" };
        posted.push(post_quietly(&mut s, cmd));
    }
    s.queue(0).unwrap().kick().unwrap();
    // Some were served on A (or none yet): collect what A answered so far.
    let mut seen: Vec<u16> = s
        .queue(0)
        .unwrap()
        .take_used()
        .unwrap()
        .iter()
        .map(|u| u.head)
        .collect();

    s.migrate(&b.socket, &Options::default())
        .expect("migrates to B");
    let (r, _) = post(&mut s, b"release");
    loop {
        let more = used(&mut s, 1);
        seen.extend(more.iter().map(|u| u.head));
        if more.iter().any(|u| u.head == r) {
            break;
        }
    }

    let mut expected = posted.clone();
    expected.push(r);
    let mut got = seen.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected, "a request was lost or completed twice");
}

#[test]
fn config_change_reaches_the_front_end_and_the_new_config_is_read() {
    let d = daemon();
    let mut s = session(&d);
    let before = s.get_config(0, 4).unwrap();

    let (_, at) = post(&mut s, b"config");
    let answer = used(&mut s, 1);

    assert_eq!(reply(&s, at, &answer[0]), b"ok");
    assert_eq!(
        s.wait_backend_request(WAIT).unwrap(),
        BackendRequest::ConfigChange
    );
    assert_eq!(s.config_changes(), 1);
    let after = s.get_config(0, 4).unwrap();
    assert_eq!(
        u32::from_le_bytes(after.try_into().unwrap()),
        u32::from_le_bytes(before.try_into().unwrap()) + 1
    );
}

#[test]
fn shared_memory_mapped_by_the_device_is_readable_by_the_front_end() {
    let d = daemon();
    let mut s = session(&d);

    let (_, at) = post(&mut s, b"map");
    let answer = used(&mut s, 1);

    assert_eq!(reply(&s, at, &answer[0]), b"ok");
    assert!(matches!(
        s.wait_backend_request(WAIT).unwrap(),
        BackendRequest::ShmemMap {
            shmid: 0,
            shm_offset: 0,
            len: 4096,
            writable: false,
            ..
        }
    ));
    let text = vhost_device_testdev::device::SHMEM_TEXT;
    let got = s
        .backend_channel()
        .unwrap()
        .shmem_read(0, 0, text.len())
        .unwrap();
    assert_eq!(got, text);
}

#[test]
fn shared_object_is_added_to_the_front_ends_table() {
    let d = daemon();
    let mut s = session(&d);

    let (_, at) = post(&mut s, b"share");
    let answer = used(&mut s, 1);

    assert_eq!(reply(&s, at, &answer[0]), b"ok");
    assert_eq!(
        s.backend_channel().unwrap().shared_objects(),
        vec![vhost_device_testdev::device::SHARED_UUID]
    );
}

#[test]
fn refused_state_leaves_the_source_serving_its_held_requests() {
    let a = daemon();
    let b = daemon();
    let mut s = session(&a);
    let held = post_quietly(&mut s, b"hold");
    let (e, _) = post(&mut s, b"echo y");
    assert_eq!(used(&mut s, 1)[0].head, e);
    s.stop_queues().unwrap();
    let mut blob = s.save_state().unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let mut incoming = Session::connect_incoming(&b.socket, &Options::default()).unwrap();

    assert!(
        incoming.load_state(&blob).is_err(),
        "corrupt state accepted"
    );

    assert!(b.stderr_text().contains("corrupt"), "{}", b.stderr_text());
    s.restart_queues().unwrap();
    let (r, at) = post(&mut s, b"release");
    let rest = used(&mut s, 2);
    assert_eq!(
        rest.iter().map(|u| u.head).collect::<Vec<_>>(),
        vec![held, r]
    );
    assert_eq!(reply(&s, at, &rest[1]), b"1");
}
