// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The test front end against an in-process fake back end: the `read`
//! command's bound, the backend-request channel through a real vhost-user
//! connection, dirty logging, and migration between two back ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fake::{serve, Answer, Config};
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags, VhostUserSharedMsg};
use vhost::vhost_user::VhostUserFrontendReqHandler;
use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{
    BackendRequest, Chain, Error, Options, Session, LOG_PAGE_SIZE, MAX_EMPTY_ANSWERS,
};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-test-frontend");
/// A safety bound only: every wait below ends on an event.
const WAIT: Duration = Duration::from_secs(10);

fn session(socket: &Path) -> Session {
    Session::start(socket, &Options::default()).expect("front end connects")
}

/// Post one writable buffer of `len` bytes on queue 0, kick, wait for it.
fn request(s: &mut Session, buf: u64, len: u32) -> u32 {
    let vq = s.queue(0).unwrap();
    let head = vq.add(&Chain::new().writable(buf, len)).unwrap();
    vq.kick().unwrap();
    let used = vq.wait_used(WAIT).expect("request completes");
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].head, head);
    used[0].len
}

#[test]
fn read_command_fails_with_a_clear_error_when_the_device_answers_with_nothing() {
    let server = serve(Config {
        answer: Answer::Nothing,
        ..Config::default()
    });
    let mut cmd = Command::new(BIN);
    cmd.arg("--socket-path")
        .arg(&server.socket)
        .args(["read", "--bytes", "64"]);
    let mut run = DaemonProcess::spawn(cmd).unwrap();

    let status = run
        .wait_timeout(WAIT)
        .unwrap()
        .expect("read gives up instead of looping for ever");

    assert!(!status.success());
    let err = run.stderr_text();
    assert!(
        err.contains(&format!(
            "answered {MAX_EMPTY_ANSWERS} requests in a row with used length 0"
        )),
        "{err}"
    );
    assert_eq!(server.device.served(), MAX_EMPTY_ANSWERS as u64);
}

#[test]
fn read_bytes_collects_what_the_device_wrote() {
    let server = serve(Config::default());
    let mut s = session(&server.socket);

    let got = s.read_bytes(0, 100, WAIT).unwrap();

    assert_eq!(got, vec![0xAB; 100]);
}

#[test]
fn read_bytes_reports_no_progress() {
    let server = serve(Config {
        answer: Answer::Nothing,
        ..Config::default()
    });
    let mut s = session(&server.socket);

    let result = s.read_bytes(0, 16, WAIT);

    assert!(matches!(result, Err(Error::NoProgress(n)) if n == MAX_EMPTY_ANSWERS));
}

#[test]
fn backend_requests_over_the_session_channel_are_answered_and_recorded() {
    let server = serve(Config {
        shmem: vec![1 << 20],
        ..Config::default()
    });
    let s = session(&server.socket);
    let backend = server
        .device
        .backend(WAIT)
        .expect("channel sent to the back end");
    let file = {
        let f = tempfile::tempfile().unwrap();
        f.set_len(2 * LOG_PAGE_SIZE).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"from the back end", LOG_PAGE_SIZE).unwrap();
        f
    };
    let uuid = VhostUserSharedMsg {
        uuid: uuid::Uuid::from_bytes([9; 16]),
    };

    backend
        .shared_object_add(&uuid)
        .expect("front end acks the add");
    backend
        .shmem_map(
            &VhostUserMMap {
                shm_offset: 0x8000,
                fd_offset: LOG_PAGE_SIZE,
                len: LOG_PAGE_SIZE,
                flags: VhostUserMMapFlags::WRITABLE.bits(),
                ..VhostUserMMap::default()
            },
            &file,
        )
        .expect("front end acks the map");

    assert_eq!(
        s.wait_backend_request(WAIT).unwrap(),
        BackendRequest::SharedObjectAdd { uuid: [9; 16] }
    );
    assert!(matches!(
        s.wait_backend_request(WAIT).unwrap(),
        BackendRequest::ShmemMap {
            shm_offset: 0x8000,
            ..
        }
    ));
    let channel = s.backend_channel().unwrap();
    assert_eq!(
        channel.shmem_sizes(),
        vec![(0, 1 << 20)],
        "from GET_SHMEM_CONFIG"
    );
    assert_eq!(
        channel.shmem_read(0, 0x8000, 17).unwrap(),
        b"from the back end"
    );
}

#[test]
fn dirty_log_enabled_on_a_running_session_marks_exactly_the_pages_the_device_wrote() {
    let server = serve(Config::default());
    let mut s = session(&server.socket);
    let written = s.ram().alloc(3 * LOG_PAGE_SIZE, LOG_PAGE_SIZE).unwrap();
    let untouched = s.ram().alloc(LOG_PAGE_SIZE, LOG_PAGE_SIZE).unwrap();
    let (desc, avail, used) = s.queue(0).unwrap().addresses();
    s.enable_dirty_log().unwrap();

    // Two pages and a bit: the buffer spans three pages.
    assert_eq!(request(&mut s, written + 100, 2 * 4096), 2 * 4096);

    let dirty = s.take_dirty_pages().unwrap();
    let page = |a: u64| a / LOG_PAGE_SIZE * LOG_PAGE_SIZE;
    let mut expected = vec![
        written,
        written + LOG_PAGE_SIZE,
        written + 2 * LOG_PAGE_SIZE,
        page(used),
    ];
    expected.sort_unstable();
    assert_eq!(dirty, expected);
    assert!(!dirty.contains(&page(desc)) && !dirty.contains(&page(avail)));
    assert!(!dirty.contains(&untouched));
}

#[test]
fn migration_moves_the_driver_the_ring_positions_and_the_device_state() {
    let a = serve(Config::default());
    let b = serve(Config {
        answer: Answer::Fill(0xCD),
        ..Config::default()
    });
    let mut s = session(&a.socket);
    let buf = s.ram().alloc(4096, 4096).unwrap();
    for _ in 0..5 {
        assert_eq!(request(&mut s, buf, 64), 64);
    }
    // Made available but never kicked: the source does not see it, so the
    // destination must pick it up from the ring position A stopped at.
    let pending = s
        .queue(0)
        .unwrap()
        .add(&Chain::new().writable(buf + 1024, 32))
        .unwrap();

    let mut s = s.migrate_to(&b.socket, &Options::default()).unwrap();

    let used = s.queue(0).unwrap().wait_used(WAIT).unwrap();
    assert_eq!((used[0].head, used[0].len), (pending, 32));
    assert_eq!(s.ram().read(buf + 1024, 32).unwrap(), vec![0xCD; 32]);
    assert_eq!(request(&mut s, buf, 64), 64);
    assert_eq!(s.ram().read(buf, 64).unwrap(), vec![0xCD; 64]);
    assert_eq!(
        a.device.served(),
        5,
        "the source served nothing after stopping"
    );
    assert_eq!(
        b.device.served(),
        5 + 2,
        "the count came over in the device state"
    );
}

#[test]
fn migrating_in_place_twice_keeps_one_session_value_working() {
    let a = serve(Config::default());
    let b = serve(Config {
        answer: Answer::Fill(0x11),
        ..Config::default()
    });
    let c = serve(Config {
        answer: Answer::Fill(0x22),
        ..Config::default()
    });
    let mut s = session(&a.socket);
    let buf = s.ram().alloc(4096, 4096).unwrap();
    assert_eq!(request(&mut s, buf, 8), 8);

    s.migrate(&b.socket, &Options::default()).unwrap();
    assert_eq!(request(&mut s, buf, 8), 8);
    s.migrate(&c.socket, &Options::default()).unwrap();
    assert_eq!(request(&mut s, buf, 8), 8);

    assert_eq!(s.ram().read(buf, 8).unwrap(), vec![0x22; 8]);
    let served = [a.device.served(), b.device.served(), c.device.served()];
    assert_eq!(served, [1, 2, 3], "each back end carried the count on");
}

#[test]
fn destination_refusing_a_corrupt_state_leaves_the_source_restartable() {
    let a = serve(Config::default());
    let b = serve(Config::default());
    let mut s = session(&a.socket);
    let buf = s.ram().alloc(4096, 4096).unwrap();
    assert_eq!(request(&mut s, buf, 64), 64);
    let mut incoming = Session::connect_incoming(&b.socket, &Options::default()).unwrap();
    let positions = s.stop_queues().unwrap();
    let mut state = s.save_state().unwrap();
    state[4] = 99; // an unknown version

    let refused = incoming.load_state(&state);

    assert!(
        matches!(
            refused,
            Err(Error::Request {
                request: "CHECK_DEVICE_STATE",
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(positions, vec![1]);
    s.restart_queues().unwrap();
    assert_eq!(s.stopped_at(0), None);
    assert_eq!(request(&mut s, buf, 64), 64);
    assert_eq!(a.device.served(), 2);
}

#[test]
fn restarted_queue_notifies_every_completion() {
    let a = serve(Config::default());
    let mut s = session(&a.socket);
    let buf = s.ram().alloc(4096, 4096).unwrap();

    // A ring stays enabled across GET_VRING_BASE, so if the back end got the
    // kick eventfd before the call eventfd it could complete a buffer before
    // it can notify. The race is narrow: go round many times, and posting
    // both while stopped and right after the restart.
    for cycle in 0..20 {
        s.stop_queues().unwrap();
        if cycle % 2 == 0 {
            let vq = s.queue(0).unwrap();
            vq.add(&Chain::new().writable(buf, 16)).unwrap();
            vq.kick().unwrap();
        }
        s.restart_queues().unwrap();
        let vq = s.queue(0).unwrap();
        if cycle % 2 == 1 {
            vq.add(&Chain::new().writable(buf, 16)).unwrap();
            vq.kick().unwrap();
        }

        let notified = vq.wait_call(WAIT).unwrap();

        assert!(notified, "cycle {cycle}: completion was not notified");
        assert_eq!(vq.take_used().unwrap().len(), 1, "cycle {cycle}");
    }
}

#[test]
fn failed_migrate_to_returns_the_stopped_source_which_carries_on_after_restart() {
    let a = serve(Config::default());
    let b = serve(Config {
        device_state: false,
        ..Config::default()
    });
    let mut s = session(&a.socket);
    let buf = s.ram().alloc(4096, 4096).unwrap();
    assert_eq!(request(&mut s, buf, 64), 64);

    let failed = s.migrate_to(&b.socket, &Options::default()).unwrap_err();

    assert!(
        matches!(failed.error, Error::NotOffered(_)),
        "{:?}",
        failed.error
    );
    let mut s = *failed.session;
    assert_eq!(s.stopped_at(0), Some(1));
    s.restart_queues().unwrap();
    assert_eq!(request(&mut s, buf, 64), 64);
    assert_eq!(a.device.served(), 2);
}

#[test]
fn resume_refuses_a_source_whose_queues_still_run() {
    let a = serve(Config::default());
    let b = serve(Config::default());
    let mut s = session(&a.socket);
    let incoming = Session::connect_incoming(&b.socket, &Options::default()).unwrap();

    let result = incoming.resume(&mut s);

    assert!(matches!(result, Err(Error::QueueRunning(0))));
    let buf = s.ram().alloc(64, 8).unwrap();
    assert_eq!(request(&mut s, buf, 64), 64, "the source is untouched");
}
