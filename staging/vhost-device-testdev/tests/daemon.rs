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

fn daemon_polling(poll_us: &str) -> DaemonProcess {
    DaemonProcess::start(Path::new(BIN), ["--poll-us", poll_us]).expect("daemon starts")
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
    migrate_with_requests_in_flight(daemon(), daemon());
}

#[test]
fn requests_in_flight_at_a_migration_between_polling_daemons_complete_exactly_once() {
    migrate_with_requests_in_flight(daemon_polling("100000"), daemon_polling("100000"));
}

fn migrate_with_requests_in_flight(a: DaemonProcess, b: DaemonProcess) {
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

/// `VIRTIO_RING_F_EVENT_IDX`.
const EVENT_IDX: u64 =
    1 << vhost_device_common::virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

fn session_with_event_idx(d: &DaemonProcess, event_idx: bool) -> Session {
    let opts = Options {
        accept_features: if event_idx { u64::MAX } else { !EVENT_IDX },
        ..Options::default()
    };
    let s = Session::start(&d.socket, &opts).expect("front end connects");
    assert_eq!(s.features & EVENT_IDX != 0, event_idx);
    s
}

/// Send `n` echo requests one at a time as a virtio driver does: post, then
/// kick only if the device asks for it (`avail_event` with EVENT_IDX, else
/// no `VRING_USED_F_NO_NOTIFY`), and wait for the answer. Returns how many
/// kicks the device let the driver skip. A lost wake-up leaves a request
/// unanswered, and the wait fails.
fn echo_one_at_a_time(s: &mut Session, n: usize) -> usize {
    echo_requests(s, n, false)
}

/// [`echo_one_at_a_time`], pausing 0–200 µs (varying) before each post.
fn echo_one_at_a_time_pausing(s: &mut Session, n: usize) -> usize {
    echo_requests(s, n, true)
}

fn echo_requests(s: &mut Session, n: usize, pause: bool) -> usize {
    let cmd = s.ram().alloc(7, 8).unwrap();
    s.ram().write(cmd, b"echo ok").unwrap();
    let reply = s.ram().alloc(64, 8).unwrap();
    let chain = Chain::new().readable(cmd, 7).writable(reply, 64);
    let mut skipped = 0;
    for i in 0..n {
        s.ram().write(reply, &[0; 2]).unwrap();
        if pause {
            let until = std::time::Instant::now() + Duration::from_micros(5 * (i as u64 % 41));
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let vq = s.queue(0).unwrap();
        let old = vq.avail_index();
        vq.add(&chain).unwrap();
        if !vq.kick_if_needed(old).unwrap() {
            skipped += 1;
        }
        let used = vq
            .wait_used(WAIT)
            .unwrap_or_else(|e| panic!("request {i} was not answered: {e}"));
        assert_eq!(used.len(), 1);
        assert_eq!(s.ram().read(reply, 2).unwrap(), b"ok", "request {i}");
    }
    skipped
}

/// Without EVENT_IDX only a polling worker ever asks the driver not to
/// kick (`VRING_USED_F_NO_NOTIFY`). With EVENT_IDX a driver may skip kicks
/// anyway (it reads `avail_event` before the drain that answered it has
/// moved it on, and the drain looks again), so kicks tell nothing there;
/// the runtime's unit tests cover `avail_event` while polling.
#[test]
fn requests_posted_while_the_daemon_polls_are_taken_without_a_kick() {
    let d = daemon_polling("100000");
    let mut s = session_with_event_idx(&d, false);

    let skipped = echo_one_at_a_time(&mut s, 300);

    assert!(skipped > 0, "every request of 300 needed a kick");
}

#[test]
fn no_request_is_lost_as_poll_windows_close() {
    // Windows around the length of a round trip close all the time; with
    // a varying pause before each post, posts race with the end of a
    // window again and again. A wake-up lost there leaves a request
    // unanswered.
    for poll_us in ["30", "60", "100", "150"] {
        let d = daemon_polling(poll_us);
        for event_idx in [true, false] {
            let mut s = session_with_event_idx(&d, event_idx);

            echo_one_at_a_time_pausing(&mut s, 3000);
        }
    }
}

#[test]
fn daemon_that_polled_uses_no_cpu_once_requests_stop() {
    use vhost_device_test_frontend::process::{IDLE_TICKS_MAX, IDLE_WINDOW};
    let d = daemon_polling("100000");
    let mut s = session_with_event_idx(&d, false);
    assert!(
        echo_one_at_a_time(&mut s, 300) > 0,
        "the daemon never polled"
    );
    // The last window (at most --poll-us) passes first.
    std::thread::sleep(Duration::from_millis(200));

    let spent = d.cpu_ticks_over(IDLE_WINDOW).unwrap();

    // See IDLE_TICKS_MAX for why a few ticks are allowed.
    assert!(
        spent <= IDLE_TICKS_MAX,
        "idle daemon used {spent} ticks in {IDLE_WINDOW:?}"
    );
}

#[test]
fn without_polling_every_request_needs_a_kick() {
    let d = daemon_polling("0");
    let mut s = session_with_event_idx(&d, false);

    let skipped = echo_one_at_a_time(&mut s, 300);

    assert_eq!(skipped, 0, "--poll-us 0 suppressed notifications");
}

#[test]
fn daemon_with_one_cpu_does_not_poll() {
    // A worker spinning on the only CPU keeps the driver from posting until
    // its window ends: the daemon turns polling off.
    let mut cmd = std::process::Command::new("taskset");
    cmd.args([
        "-c",
        "0",
        BIN,
        "--socket-path",
        "dev.sock",
        "--poll-us",
        "100000",
    ]);
    let mut d = DaemonProcess::spawn(cmd).expect("taskset starts the daemon");
    let socket = d.dir().join("dev.sock");
    d.wait_for_path(&socket, WAIT).expect("daemon listens");
    let opts = Options {
        accept_features: !EVENT_IDX,
        ..Options::default()
    };
    let mut s = Session::start(&socket, &opts).expect("front end connects");

    let skipped = echo_one_at_a_time(&mut s, 300);

    assert_eq!(skipped, 0, "a daemon on one CPU polled");
    assert!(d.stderr_text().contains("one CPU"), "{}", d.stderr_text());
}
