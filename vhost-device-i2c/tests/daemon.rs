// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The real `vhost-device-i2c` binary with its simulated adapter, driven over
//! its socket by the test front end's virtio-i2c driver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vhost_device_test_frontend::i2c::{I2cGuest, I2cMsg, I2cReply, MSG_ERR, MSG_OK};
use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::virtqueue::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
use vhost_device_test_frontend::{Next, Options, RawDesc, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-i2c");
const WAIT: Duration = Duration::from_secs(10);
/// EEPROM and sensor of the simulated adapter.
const EEPROM: u8 = 0x50;
const SENSOR: u8 = 0x1c;
const SIM: &str = "sim:0x50:0x1c";

fn daemon(args: &[&str]) -> DaemonProcess {
    DaemonProcess::start(Path::new(BIN), args).expect("daemon starts")
}

fn guest_with(d: &DaemonProcess, opts: &Options) -> I2cGuest {
    I2cGuest::new(Session::start(&d.socket, opts).expect("front end connects")).unwrap()
}

fn guest(d: &DaemonProcess) -> I2cGuest {
    guest_with(d, &Options::default())
}

fn xfer(g: &mut I2cGuest, msgs: &[I2cMsg]) -> Vec<I2cReply> {
    g.transfer(msgs, WAIT).expect("transfer completes")
}

fn statuses(replies: &[I2cReply]) -> Vec<u8> {
    replies.iter().map(|r| r.status).collect()
}

fn w(addr: u8, data: &[u8]) -> I2cMsg {
    I2cMsg::Write(addr, data.to_vec())
}

fn r(addr: u8, len: u32) -> I2cMsg {
    I2cMsg::Read(addr, len)
}

/// Read `len` EEPROM bytes from `at` (set the pointer, repeated START, read).
fn eeprom_read(g: &mut I2cGuest, at: u8, len: u32) -> Vec<u8> {
    let replies = xfer(g, &[w(EEPROM, &[at]), r(EEPROM, len)]);
    assert_eq!(statuses(&replies), vec![MSG_OK, MSG_OK]);
    replies[1].data.clone()
}

#[test]
fn eeprom_written_page_by_page_reads_back_across_page_boundaries() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);
    let pattern: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(7) ^ 0x5a).collect();

    for (page, chunk) in pattern.chunks(8).enumerate() {
        let mut data = vec![u8::try_from(page * 8).unwrap()];
        data.extend_from_slice(chunk);
        assert_eq!(statuses(&xfer(&mut g, &[w(EEPROM, &data)])), vec![MSG_OK]);
    }

    assert_eq!(eeprom_read(&mut g, 0x00, 32), pattern);
    assert_eq!(eeprom_read(&mut g, 0x05, 6), pattern[5..11].to_vec());
}

#[test]
fn eeprom_write_crossing_a_page_wraps_within_the_page() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    xfer(&mut g, &[w(EEPROM, &[0x0e, 0xa1, 0xa2, 0xa3])]);

    assert_eq!(
        eeprom_read(&mut g, 0x08, 8),
        vec![0xa3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa1, 0xa2]
    );
    assert_eq!(eeprom_read(&mut g, 0x10, 1), vec![0xff]);
}

#[test]
fn failure_in_the_middle_of_a_group_fails_it_and_the_rest_which_never_run() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    // Sensor register 0xfe is read-only: the sensor does not acknowledge.
    let replies = xfer(
        &mut g,
        &[
            w(SENSOR, &[0x10, 0xaa]),
            w(SENSOR, &[0xfe, 0x00]),
            w(EEPROM, &[0x00, 0x77]),
        ],
    );

    assert_eq!(statuses(&replies), vec![MSG_OK, MSG_ERR, MSG_ERR]);
    let sensor = xfer(&mut g, &[w(SENSOR, &[0x10]), r(SENSOR, 1)]);
    assert_eq!(
        sensor[1].data,
        vec![0xaa],
        "the request before the failure ran"
    );
    assert_eq!(
        eeprom_read(&mut g, 0x00, 1),
        vec![0xff],
        "the request after it must not run"
    );
}

#[test]
fn groups_failing_in_the_middle_answer_every_request_exactly_once() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    for _ in 0..200 {
        let replies = xfer(
            &mut g,
            &[
                w(SENSOR, &[0x10, 0xaa]),
                w(SENSOR, &[0xfe, 0x00]),
                w(EEPROM, &[0x00, 0x77]),
            ],
        );
        assert_eq!(statuses(&replies), vec![MSG_OK, MSG_ERR, MSG_ERR]);
        let probe = xfer(&mut g, &[w(SENSOR, &[0x10]), r(SENSOR, 1)]);
        assert_eq!(statuses(&probe), vec![MSG_OK, MSG_OK]);
    }

    // No used entry beyond the answers collected: none late, none twice.
    assert!(g.s.queue(0).unwrap().take_used().unwrap().is_empty());
}

/// Whether every request after the first failed one was used before it.
/// Linux's i2c-virtio stops waiting at the first failed request of a
/// transfer and frees all of them: a later request used after that one is
/// completed into freed memory (a guest oops seen in the e2e test).
fn first_failure_used_last(replies: &[I2cReply]) -> bool {
    let Some(first) = replies.iter().position(|r| r.status != MSG_OK) else {
        return true;
    };
    replies[first + 1..]
        .iter()
        .all(|r| r.used_order < replies[first].used_order)
}

#[test]
fn refused_second_message_is_used_after_the_third_as_linux_frees_the_transfer_there() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    // The e2e test's transfer: sensor register 0xfe refuses the write.
    let replies = xfer(
        &mut g,
        &[
            w(SENSOR, &[0x10, 0xaa]),
            w(SENSOR, &[0xfe, 0x00]),
            w(EEPROM, &[0x20, 0x77]),
            r(EEPROM, 1),
        ],
    );

    assert_eq!(statuses(&replies), vec![MSG_OK, MSG_ERR, MSG_ERR, MSG_ERR]);
    assert_eq!(replies[0].used_order, 0, "a success is answered in order");
    assert!(
        first_failure_used_last(&replies),
        "the first failed request was used before a later one: {replies:?}"
    );
}

#[test]
fn group_refused_at_its_first_request_uses_that_request_last() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    // i2cget of an unlisted client: SMBus read byte data, write then read.
    let replies = xfer(&mut g, &[w(0x52, &[0x00]), r(0x52, 1)]);

    assert_eq!(statuses(&replies), vec![MSG_ERR, MSG_ERR]);
    assert!(
        first_failure_used_last(&replies),
        "the first failed request was used before a later one: {replies:?}"
    );
}

#[test]
fn unlisted_address_in_a_group_stops_it_there() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    let replies = xfer(
        &mut g,
        &[
            w(EEPROM, &[0x20, 0x11]),
            w(0x33, &[0x00]),
            w(EEPROM, &[0x21, 0x22]),
        ],
    );

    assert_eq!(statuses(&replies), vec![MSG_OK, MSG_ERR, MSG_ERR]);
    assert_eq!(eeprom_read(&mut g, 0x20, 2), vec![0x11, 0xff]);
}

#[test]
fn zero_length_probe_finds_exactly_the_listed_addresses() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    let mut found = Vec::new();
    for addr in 0x03..=0x77u8 {
        let replies = xfer(&mut g, &[w(addr, &[])]);
        if replies[0].status == MSG_OK {
            found.push(addr);
        }
    }

    assert_eq!(found, vec![SENSOR, EEPROM]);
    assert_eq!(
        statuses(&xfer(&mut g, &[r(EEPROM, 0)])),
        vec![MSG_OK],
        "zero-length read"
    );
}

#[test]
fn address_not_listed_is_err_even_with_an_empty_message() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    assert_eq!(statuses(&xfer(&mut g, &[r(0x51, 1)])), vec![MSG_ERR]);
    assert_eq!(statuses(&xfer(&mut g, &[w(0x77, &[])])), vec![MSG_ERR]);
    assert!(!d.stderr_text().contains("WARN"), "{}", d.stderr_text());
}

#[test]
fn sensor_answers_register_reads_as_smbus_would_ask() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);

    // Read byte data (W1 R1), read word data (W1 R2).
    let temp = xfer(&mut g, &[w(SENSOR, &[0x00]), r(SENSOR, 1)]);
    let ids = xfer(&mut g, &[w(SENSOR, &[0xfe]), r(SENSOR, 2)]);

    assert_eq!(temp[1].data, vec![0x19]);
    assert_eq!(ids[1].data, vec![0x49, 0x32]);
}

#[test]
fn queue_of_four_with_indirect_descriptors_works_as_qemu_sets_it_up() {
    let d = daemon(&["--device-list", SIM]);
    let opts = Options {
        queue_size: 4,
        ..Options::default()
    };
    let mut g = guest_with(&d, &opts);
    g.indirect = true;

    xfer(&mut g, &[w(EEPROM, &[0x30, 1, 2, 3, 4])]);
    let replies = xfer(
        &mut g,
        &[
            w(EEPROM, &[0x30]),
            r(EEPROM, 2),
            w(EEPROM, &[0x32]),
            r(EEPROM, 2),
        ],
    );

    assert_eq!(statuses(&replies), vec![MSG_OK; 4]);
    assert_eq!(
        (replies[1].data.clone(), replies[3].data.clone()),
        (vec![1, 2], vec![3, 4])
    );
}

#[test]
fn many_groups_queued_at_once_complete_in_order() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);
    let mut posted = Vec::new();

    for i in 0..20u8 {
        let slot = usize::from(i) * 2;
        posted.push(
            g.post_at(slot, &[w(EEPROM, &[0x40 + i, i]), w(EEPROM, &[0x40 + i])])
                .unwrap(),
        );
    }
    let all: Vec<_> = posted.concat();
    let replies = g.collect(&all, WAIT).unwrap();

    assert!(replies.iter().all(|r| r.status == MSG_OK));
    assert_eq!(eeprom_read(&mut g, 0x40, 20), (0..20u8).collect::<Vec<_>>());
}

#[test]
fn driver_refusing_the_zero_length_feature_gets_err() {
    let d = daemon(&["--device-list", SIM]);
    let opts = Options {
        accept_features: !1,
        ..Options::default()
    };
    let mut g = guest_with(&d, &opts);

    assert_eq!(statuses(&xfer(&mut g, &[r(EEPROM, 1)])), vec![MSG_ERR]);
}

/// Write an `OutHdr` for `addr` with `flags` into guest memory; returns its address.
fn header(g: &I2cGuest, addr: u8, flags: u32) -> u64 {
    let at = g.s.ram().alloc(8, 8).unwrap();
    let mut h = (u16::from(addr) << 1).to_le_bytes().to_vec();
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&flags.to_le_bytes());
    g.s.ram().write(at, &h).unwrap();
    at
}

#[test]
fn malformed_chains_are_answered_and_the_queue_keeps_serving() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);
    let end = g.s.ram().end();
    let hdr_w = header(&g, EEPROM, 0);
    let hdr_r = header(&g, EEPROM, 2);
    let buf = g.s.ram().alloc(16 * 1024, 8).unwrap();
    let status = g.s.ram().alloc(8, 8).unwrap();
    let ro = |addr, len| RawDesc {
        addr,
        len,
        flags: 0,
        next: Next::End,
    };
    let wr = |addr, len| RawDesc {
        addr,
        len,
        flags: VRING_DESC_F_WRITE,
        next: Next::End,
    };
    let chain = |mut descs: Vec<RawDesc>| {
        let n = descs.len();
        for (i, d) in descs.iter_mut().enumerate().take(n - 1) {
            d.next = Next::Pos(i + 1);
        }
        descs
    };
    let table =
        g.s.queue(0)
            .unwrap()
            .write_indirect_table(&[RawDesc {
                addr: buf,
                len: 16,
                flags: VRING_DESC_F_INDIRECT,
                next: Next::End,
            }])
            .unwrap();
    // (what, descriptors, expected status byte if the chain has one)
    let cases: Vec<(&str, Vec<RawDesc>, Option<u8>)> = vec![
        (
            "header of 4 bytes",
            chain(vec![ro(hdr_w, 4), wr(status, 1)]),
            Some(MSG_ERR),
        ),
        (
            "no status byte",
            chain(vec![ro(hdr_w, 8), ro(buf, 4)]),
            None,
        ),
        (
            "write request with a writable buffer",
            chain(vec![ro(hdr_w, 8), wr(buf, 4), wr(status, 1)]),
            Some(MSG_ERR),
        ),
        (
            "read request with a readable buffer",
            chain(vec![ro(hdr_r, 8), ro(buf, 4), wr(status, 1)]),
            Some(MSG_ERR),
        ),
        (
            "read of 9000 bytes",
            chain(vec![ro(hdr_r, 8), wr(buf, 9000), wr(status, 1)]),
            Some(MSG_ERR),
        ),
        (
            "header outside guest memory",
            chain(vec![ro(end + 4096, 8), wr(status, 1)]),
            None,
        ),
        (
            "status outside guest memory",
            chain(vec![ro(hdr_w, 8), wr(u64::MAX - 8, 1)]),
            None,
        ),
        (
            "descriptor loop",
            vec![
                RawDesc {
                    next: Next::Pos(1),
                    ..ro(hdr_w, 8)
                },
                RawDesc {
                    next: Next::Pos(0),
                    ..wr(status, 1)
                },
            ],
            None,
        ),
        (
            "nested indirect table",
            vec![RawDesc {
                addr: table,
                len: 16,
                flags: VRING_DESC_F_INDIRECT,
                next: Next::End,
            }],
            None,
        ),
    ];

    for (what, descs, want) in cases {
        g.s.ram().write(status, &[0xee]).unwrap();
        let vq = g.s.queue(0).unwrap();
        let head = vq.add_raw(&descs).unwrap();
        vq.kick().unwrap();
        let used = vq
            .wait_used(WAIT)
            .unwrap_or_else(|e| panic!("{what}: not answered: {e}"));
        assert_eq!(used[0].head, head, "{what}");
        if let Some(s) = want {
            assert_eq!(g.s.ram().read(status, 1).unwrap()[0], s, "{what}");
            assert_eq!(used[0].len, 1, "{what}");
        }
        assert_eq!(eeprom_read(&mut g, 0x00, 1), vec![0xff], "after {what}");
    }
    assert!(!d.stderr_text().contains("panicked"), "{}", d.stderr_text());
}

#[test]
fn eeprom_keeps_its_contents_across_reconnects() {
    let d = daemon(&["--device-list", SIM]);
    {
        let mut g = guest(&d);
        xfer(&mut g, &[w(EEPROM, &[0x80, 0xde, 0xad])]);
    }

    let mut g = guest(&d);

    assert_eq!(eeprom_read(&mut g, 0x80, 2), vec![0xde, 0xad]);
}

#[test]
fn fifty_reconnects_leak_no_fds_or_threads() {
    let d = daemon(&["--device-list", SIM]);
    let once = |d: &DaemonProcess| {
        let mut g = guest(d);
        eeprom_read(&mut g, 0, 1);
    };
    once(&d);
    std::thread::sleep(Duration::from_millis(100));
    let (fds, threads) = (d.fd_count().unwrap(), d.thread_count().unwrap());

    for _ in 0..50 {
        once(&d);
    }
    std::thread::sleep(Duration::from_millis(200));

    assert_eq!(d.fd_count().unwrap(), fds, "fd count grew");
    assert_eq!(d.thread_count().unwrap(), threads, "thread count grew");
}

#[test]
fn slow_transfer_leaves_the_worker_free_to_take_new_requests() {
    let d = daemon(&["--device-list", SIM, "--sim-delay", "3000"]);
    let mut g = guest(&d);

    let first = g.post_at(0, &[w(EEPROM, &[0x00, 0x01])]).unwrap();
    let second = g.post_at(1, &[w(EEPROM, &[0x01, 0x02])]).unwrap();
    // With EVENT_IDX the device publishes how far it has read the ring: both
    // requests are taken (and held) while the first transfer still runs.
    let vq = g.s.queue(0).unwrap();
    let deadline = Instant::now() + WAIT;
    while vq.avail_event().unwrap() != 2 {
        assert!(
            Instant::now() < deadline,
            "the worker did not take the second request"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        vq.take_used().unwrap().is_empty(),
        "a 3 s transfer completed at once"
    );

    let replies = g.collect(&[first[0], second[0]], WAIT).unwrap();

    assert_eq!(statuses(&replies), vec![MSG_OK, MSG_OK]);
}

#[test]
fn sigterm_during_a_slow_transfer_ends_the_daemon_without_waiting_for_it() {
    // The transfer would take a minute; the daemon must end long before.
    let mut d = daemon(&["--device-list", SIM, "--sim-delay", "60000"]);
    let mut g = guest(&d);
    g.post_at(0, &[w(EEPROM, &[0x00])]).unwrap();
    wait_until_taken(&mut g, 1);
    let socket = d.socket.clone();

    d.signal(Signal::SIGTERM).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");

    assert!(status.success(), "{}", DaemonProcess::describe(status));
    assert!(!socket.exists(), "socket file left behind");
}

/// Wait until the device has taken `n` requests off the ring (its avail
/// event, EVENT_IDX, has moved past them).
fn wait_until_taken(g: &mut I2cGuest, n: u16) {
    let deadline = Instant::now() + WAIT;
    while g.s.queue(0).unwrap().avail_event().unwrap() != n {
        assert!(
            Instant::now() < deadline,
            "the device never took the request"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn request_in_flight_at_a_migration_is_answered_once_by_the_destination() {
    let a = daemon(&["--device-list", SIM, "--sim-delay", "1000"]);
    let b = daemon(&["--device-list", SIM]);
    let mut g = guest(&a);
    let posted = g.post_at(0, &[w(EEPROM, &[0x00, 0x42])]).unwrap();
    wait_until_taken(&mut g, 1);

    g.s.migrate(&b.socket, &Options::default())
        .expect("migrates to B");
    let replies = g.collect(&posted, WAIT).expect("B answers A's request");

    assert_eq!(statuses(&replies), vec![MSG_OK]);
    assert_eq!(eeprom_read(&mut g, 0x00, 1), vec![0x42]);
}

#[test]
fn each_device_reaches_only_its_own_list() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "dev.sock", "--socket-count", "2"])
        .args(["--device-list", "sim:0x50", "--device-list", "sim:0x1c"]);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let paths: Vec<_> = (0..2)
        .map(|i| d.dir().join(format!("dev.sock{i}")))
        .collect();
    for p in &paths {
        d.wait_for_path(p, WAIT).unwrap();
    }
    let mut g0 = I2cGuest::new(Session::start(&paths[0], &Options::default()).unwrap()).unwrap();
    let mut g1 = I2cGuest::new(Session::start(&paths[1], &Options::default()).unwrap()).unwrap();

    let probe = |g: &mut I2cGuest, a| xfer(g, &[w(a, &[])])[0].status;

    assert_eq!(
        (probe(&mut g0, EEPROM), probe(&mut g0, SENSOR)),
        (MSG_OK, MSG_ERR)
    );
    assert_eq!(
        (probe(&mut g1, EEPROM), probe(&mut g1, SENSOR)),
        (MSG_ERR, MSG_OK)
    );
}

#[test]
fn startup_errors_name_the_problem_and_create_no_socket() {
    let cases: [(&[&str], &str); 5] = [
        (&["--device-list", "sim:0x99"], "out of range"),
        (&["--device-list", "sim:0x50:0x50"], "listed twice"),
        (&["--device-list", "99999:0x50"], "/dev/i2c-99999"),
        (
            &["--device-list", "no such adapter:0x50"],
            "no such adapter",
        ),
        (
            &["--device-list", "sim:0x50", "--socket-count", "2"],
            "one per device",
        ),
    ];
    for (args, want) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(["--socket-path", "x.sock"]).args(args);
        let mut d = DaemonProcess::spawn(cmd).unwrap();
        let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");
        assert!(!status.success(), "{args:?}");
        assert!(
            d.stderr_text().contains(want),
            "{args:?}: {}",
            d.stderr_text()
        );
        assert!(!d.dir().join("x.sock").exists(), "{args:?}");
        assert!(!d.dir().join("x.sock0").exists(), "{args:?}");
    }
}

#[test]
fn print_capabilities_prints_backend_type() {
    let kind = vhost_device_test_frontend::process::capabilities_type(std::path::Path::new(BIN));

    assert_eq!(kind.unwrap(), "i2c");
}

#[test]
fn idle_daemon_uses_no_cpu() {
    let d = daemon(&["--device-list", SIM]);
    let mut g = guest(&d);
    eeprom_read(&mut g, 0, 4);
    std::thread::sleep(Duration::from_millis(100));
    let before = d.cpu_ticks().unwrap();

    std::thread::sleep(Duration::from_millis(1500));

    let spent = d.cpu_ticks().unwrap() - before;
    assert!(spent <= 2, "idle daemon used {spent} ticks in 1.5 s");
}

/// Stop the queue of `g` and save its device state.
fn stop_and_save(g: &mut I2cGuest) -> Vec<u8> {
    g.s.stop_queue(0).unwrap();
    g.s.save_state().expect("state saved")
}

#[test]
fn eeprom_contents_move_to_a_second_daemon_with_the_device_state() {
    let a = daemon(&["--device-list", SIM]);
    let mut ga = guest(&a);
    xfer(&mut ga, &[w(EEPROM, &[0x10, 0xc0, 0xff, 0xee])]);
    let blob = stop_and_save(&mut ga);
    let b = daemon(&["--device-list", SIM]);
    let mut gb = guest(&b);

    gb.s.load_state(&blob).expect("destination takes the state");

    assert_eq!(eeprom_read(&mut gb, 0x10, 3), vec![0xc0, 0xff, 0xee]);
}

#[test]
fn state_saved_during_a_slow_transfer_includes_its_effect() {
    let a = daemon(&["--device-list", SIM, "--sim-delay", "1000"]);
    let mut ga = guest(&a);
    ga.post_at(0, &[w(EEPROM, &[0x00, 0x42])]).unwrap();
    // Wait until the device has taken the request (it is then in flight).
    wait_until_taken(&mut ga, 1);

    let blob = stop_and_save(&mut ga);
    let b = daemon(&["--device-list", SIM]);
    let mut gb = guest(&b);
    gb.s.load_state(&blob).unwrap();
    // The state also holds the answer to A's request, for A's ring; this
    // front end cannot move guest memory, so read back on a fresh
    // connection (the simulated EEPROM belongs to the socket).
    drop(gb);
    let mut fresh = guest(&b);

    assert_eq!(eeprom_read(&mut fresh, 0x00, 1), vec![0x42]);
}

#[test]
fn corrupt_state_is_refused_and_nothing_is_applied() {
    let a = daemon(&["--device-list", SIM]);
    let mut ga = guest(&a);
    xfer(&mut ga, &[w(EEPROM, &[0x00, 0x99])]);
    let mut blob = stop_and_save(&mut ga);
    let mid = blob.len() / 2;
    blob[mid] ^= 0xff;
    let b = daemon(&["--device-list", SIM]);
    let mut gb = guest(&b);

    assert!(gb.s.load_state(&blob).is_err());

    assert!(b.stderr_text().contains("corrupt"), "{}", b.stderr_text());
    assert_eq!(eeprom_read(&mut gb, 0x00, 1), vec![0xff]);
}
