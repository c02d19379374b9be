// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The real `vhost-device-can` binary on the software bus, driven over its
//! socket by the test front end's virtio-can driver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use vhost_device_can::host::bus::{self, BusClient, Role};
use vhost_device_can::host::{CanFrame, CanHost, ErrorFrame, Received};
use vhost_device_common::vhost::vhost_user::VhostUserFrontend;
use vhost_device_common::vhost::{VhostBackend, VringConfigData};
use vhost_device_test_frontend::can::{
    CanDriver, Frame, CONTROLQ, F_CAN_FD, F_LATE_TX_ACK, F_RTR_FRAMES, RESULT_OK, RXQ, TXQ,
};
use vhost_device_test_frontend::process::{wait_until, DaemonProcess, IDLE_TICKS_MAX, IDLE_WINDOW};
use vhost_device_test_frontend::virtqueue::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
use vhost_device_test_frontend::{
    BackendRequest, Chain, Next, Options, RawDesc, Session, Virtqueue,
};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-can");
const WAIT: Duration = Duration::from_secs(10);
const NOT_OK: u8 = 1;

/// A software bus in a private directory.
struct Bus {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn bus() -> Bus {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canbus");
    Bus { _dir: dir, path }
}

fn daemon(bus: &Bus, args: &[&str]) -> DaemonProcess {
    let mut all = vec!["--bus", bus.path.to_str().unwrap()];
    all.extend_from_slice(args);
    DaemonProcess::start(Path::new(BIN), all).expect("daemon starts")
}

fn driver_at(socket: &Path, opts: &Options) -> CanDriver {
    let s = Session::start(socket, opts).expect("front end connects");
    CanDriver::new(s, 16).unwrap()
}

/// A driver whose controller is started.
fn started_at(socket: &Path, opts: &Options) -> CanDriver {
    let mut d = driver_at(socket, opts);
    assert_eq!(d.start(WAIT).unwrap(), RESULT_OK, "START");
    d
}

fn started(d: &DaemonProcess) -> CanDriver {
    started_at(&d.socket, &Options::default())
}

fn without(features: u64) -> Options {
    Options {
        accept_features: !features,
        ..Options::default()
    }
}

fn f(s: &str) -> Frame {
    s.parse().unwrap()
}

/// A frame no device accepts (identifier too large): answered NOT_OK at
/// once, after every request before it was taken — a fence.
fn fence(d: &mut CanDriver) {
    let head = d.send(&Frame::data(0x800, false, false, &[])).unwrap();
    let (h, r) = d.wait_result(WAIT).expect("fence answered");
    assert_eq!(
        (h, r),
        (head, NOT_OK),
        "a request was answered before the fence"
    );
}

fn assert_alive(d: &mut DaemonProcess) {
    assert!(
        d.try_wait().unwrap().is_none(),
        "daemon died: {}",
        d.stderr_text()
    );
    assert!(!d.stderr_text().contains("panicked"), "{}", d.stderr_text());
}

#[test]
fn two_daemons_exchange_classic_fd_and_rtr_frames_both_ways() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = started(&a);
    let mut db = started(&b);
    let frames = [
        f("123#DEADBEEF"),
        f("1ABCDEF0#0102030405060708"),
        f("000#"),
        f(&format!("7FF##1{}", "A5".repeat(12))),
        f(&format!("12345678##0{}", "5A".repeat(64))),
        f("321#R4"),
        f("1FFFFFFF#R0"),
    ];

    for frame in &frames {
        assert_eq!(da.transmit(frame, WAIT).unwrap(), RESULT_OK, "{frame}");
        assert_eq!(&db.recv(WAIT).unwrap(), frame);
        assert_eq!(db.transmit(frame, WAIT).unwrap(), RESULT_OK, "{frame}");
        assert_eq!(&da.recv(WAIT).unwrap(), frame);
    }
}

#[test]
fn devices_of_one_daemon_share_its_bus() {
    let bus = bus();
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "dev.sock", "--socket-count", "2", "--bus"])
        .arg(&bus.path);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let paths: Vec<PathBuf> = (0..2)
        .map(|i| d.dir().join(format!("dev.sock{i}")))
        .collect();
    for p in &paths {
        d.wait_for_path(p, WAIT).unwrap();
    }
    let mut d0 = started_at(&paths[0], &Options::default());
    let mut d1 = started_at(&paths[1], &Options::default());

    assert_eq!(d0.transmit(&f("042#01"), WAIT).unwrap(), RESULT_OK);

    assert_eq!(d1.recv(WAIT).unwrap(), f("042#01"));
}

#[test]
fn host_side_member_of_the_bus_sees_guest_frames_and_reaches_the_guest() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let mut da = started(&a);
    let mut peer = BusClient::connect(&bus.path, Role::Node, true, WAIT).unwrap();
    peer.set_online(true).unwrap();

    assert_eq!(da.transmit(&f("0AA#55"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(
        peer.wait(WAIT).unwrap(),
        Some(Received::Frame("0AA#55".parse().unwrap()))
    );
    let back: CanFrame = "0BB#66".parse().unwrap();
    peer.send(&back).unwrap();

    assert_eq!(da.recv(WAIT).unwrap(), f("0BB#66"));
}

#[test]
fn late_tx_ack_answers_a_frame_only_once_another_node_acknowledged_it() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = started(&a);
    let head = da.send(&f("100#01")).unwrap();

    // Alone on the bus, nobody acknowledges: the request stays pending
    // while a later one (refused) is answered.
    fence(&mut da);
    let mut db = started(&b);

    assert_eq!(da.wait_result(WAIT).unwrap(), (head, RESULT_OK));
    assert_eq!(db.recv(WAIT).unwrap(), f("100#01"));
}

#[test]
fn without_late_tx_ack_a_frame_is_answered_when_enqueued() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let mut da = started_at(&a.socket, &without(F_LATE_TX_ACK));

    // Alone on the bus: nobody will acknowledge it, yet it is answered OK.
    assert_eq!(da.transmit(&f("100#01"), WAIT).unwrap(), RESULT_OK);
}

#[test]
fn tx_while_stopped_is_not_ok_and_never_reaches_the_bus() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = driver_at(&a.socket, &Options::default());
    let mut db = started(&b);

    assert_eq!(da.transmit(&f("001#01"), WAIT).unwrap(), NOT_OK);

    assert_eq!(da.start(WAIT).unwrap(), RESULT_OK);
    assert_eq!(da.transmit(&f("002#02"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(
        db.recv(WAIT).unwrap(),
        f("002#02"),
        "the stopped frame was sent"
    );
}

#[test]
fn stop_answers_pending_tx_not_ok_before_the_stop_itself() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let mut da = started(&a);
    let head = da.send(&f("200#02")).unwrap();
    fence(&mut da);

    assert_eq!(da.stop(WAIT).unwrap(), RESULT_OK);

    assert_eq!(da.take_results().unwrap(), vec![(head, NOT_OK)]);
    assert_eq!(da.transmit(&f("201#"), WAIT).unwrap(), NOT_OK);
}

#[test]
fn injected_bus_off_sets_the_status_notifies_and_fails_pending_tx_until_start() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let mut da = started(&a);
    assert_eq!(da.session().get_config(0, 2).unwrap(), vec![0, 0]);
    let head = da.send(&f("300#03")).unwrap();
    fence(&mut da);

    bus::inject(&bus.path, ErrorFrame::bus_off()).unwrap();

    assert_eq!(da.wait_result(WAIT).unwrap(), (head, NOT_OK));
    assert_eq!(
        da.session().wait_backend_request(WAIT).unwrap(),
        BackendRequest::ConfigChange
    );
    assert_eq!(da.session().get_config(0, 2).unwrap(), vec![1, 0]);
    assert_eq!(
        da.transmit(&f("301#"), WAIT).unwrap(),
        NOT_OK,
        "sent while bus-off"
    );

    assert_eq!(da.start(WAIT).unwrap(), RESULT_OK);

    assert_eq!(da.session().get_config(0, 2).unwrap(), vec![0, 0]);
    assert_eq!(da.session().config_changes(), 1, "START must not notify");
}

#[test]
fn bus_off_reaches_every_device_of_the_bus() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = started(&a);
    let mut db = started(&b);

    bus::inject(&bus.path, ErrorFrame::bus_off()).unwrap();

    for d in [&mut da, &mut db] {
        assert_eq!(
            d.session().wait_backend_request(WAIT).unwrap(),
            BackendRequest::ConfigChange
        );
        assert_eq!(d.session().get_config(0, 2).unwrap(), vec![1, 0]);
    }
}

#[test]
fn features_and_config_space_are_offered_as_the_spec_numbers_them() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let classic = daemon(&bus, &["--no-fd"]);

    let mut da = driver_at(&a.socket, &Options::default());
    let mut dc = driver_at(&classic.socket, &Options::default());

    let bits = |d: &mut CanDriver| d.session().device_features & 0xF;
    assert_eq!(bits(&mut da), 0b1111);
    assert_eq!(bits(&mut dc), 0b1101, "--no-fd offers no FD (bit 1)");
    assert_eq!(da.session().get_config(0, 2).unwrap(), vec![0, 0]);
}

#[test]
fn classic_only_device_does_not_get_fd_frames_from_the_bus() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let classic = daemon(&bus, &["--no-fd"]);
    let mut da = started(&a);
    let mut dc = started(&classic);

    assert_eq!(
        da.transmit(&f("010##1112233445566778899AABBCC"), WAIT)
            .unwrap(),
        RESULT_OK
    );
    assert_eq!(da.transmit(&f("011#11"), WAIT).unwrap(), RESULT_OK);

    assert_eq!(dc.recv(WAIT).unwrap(), f("011#11"));
}

#[test]
fn rtr_frames_need_rtr_negotiated() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let mut da = started_at(&a.socket, &without(F_RTR_FRAMES | F_LATE_TX_ACK));

    assert_eq!(da.transmit(&f("123#R2"), WAIT).unwrap(), NOT_OK);
    assert_eq!(
        da.transmit(&f("123##0112233445566778899AABBCC"), WAIT)
            .unwrap(),
        RESULT_OK
    );
    drop(da);
    let mut classic = started_at(&a.socket, &without(F_CAN_FD | F_LATE_TX_ACK));
    assert_eq!(
        classic
            .transmit(&f("123##0112233445566778899AABBCC"), WAIT)
            .unwrap(),
        NOT_OK
    );
}

#[test]
fn received_frames_wait_in_a_bounded_fifo_and_the_oldest_are_dropped() {
    let bus = bus();
    // Through env(1): DaemonProcess sets RUST_LOG=info for what it runs.
    let mut cmd = Command::new("env");
    cmd.args(["RUST_LOG=vhost_device_can=debug,info", BIN])
        .args(["--socket-path", "dev.sock", "--rx-fifo", "2", "--bus"])
        .arg(&bus.path);
    let mut a = DaemonProcess::spawn(cmd).unwrap();
    let socket = a.dir().join("dev.sock");
    a.wait_for_path(&socket, WAIT).unwrap();
    let s = Session::start(&socket, &Options::default()).unwrap();
    let mut da = CanDriver::new(s, 0).unwrap();
    assert_eq!(da.start(WAIT).unwrap(), RESULT_OK);
    let mut peer = BusClient::connect(&bus.path, Role::Node, true, WAIT).unwrap();
    peer.set_online(true).unwrap();
    for id in 1..=5 {
        peer.send(&CanFrame::new(id, false, false, &[]).unwrap())
            .unwrap();
    }
    assert!(
        wait_until(WAIT, || a.stderr_text().matches("RX FIFO full").count()
            == 3),
        "{}",
        a.stderr_text()
    );

    da.add_rx_buffers(4).unwrap();

    let got = [da.recv(WAIT).unwrap(), da.recv(WAIT).unwrap()];
    assert_eq!(
        got,
        [f("004#"), f("005#")],
        "the oldest should have been dropped"
    );
}

#[test]
fn malformed_requests_are_answered_and_every_queue_keeps_serving() {
    let bus = bus();
    let mut a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = started(&a);
    let mut db = started(&b);
    let end = da.session().ram().end();
    let good = da.session().ram().alloc(64, 8).unwrap();
    let w = |addr, len| RawDesc {
        addr,
        len,
        flags: VRING_DESC_F_WRITE,
        next: Next::End,
    };
    let r = |addr, len, next| RawDesc {
        addr,
        len,
        flags: 0,
        next,
    };
    // Bad frames get NOT_OK: (what, bytes).
    let header = |flags: u32, id: u32, len: u16| {
        let mut v = vec![1, 0];
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
        v
    };
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("short header", vec![1, 0, 0]),
        ("not a TX message", {
            let mut v = header(0, 1, 0);
            v[0] = 0x02;
            v[1] = 0x02;
            v
        }),
        ("unknown flag", header(0x1, 1, 0)),
        ("classic length 9", {
            let mut v = header(0, 1, 9);
            v.extend_from_slice(&[0; 9]);
            v
        }),
        ("FD length 13", {
            let mut v = header(0x4000, 1, 13);
            v.extend_from_slice(&[0; 13]);
            v
        }),
        ("data shorter than its length", {
            let mut v = header(0, 1, 8);
            v.extend_from_slice(&[0; 2]);
            v
        }),
        ("standard id over 11 bits", header(0, 0x800, 0)),
        (
            "id with SocketCAN flag bits",
            header(0x8000, 0xC000_0001, 0),
        ),
        ("RTR and FD", header(0x6000, 1, 0)),
    ];
    for (what, bytes) in refused {
        let head = da.post_bytes(&bytes).unwrap();
        da.kick_tx().unwrap();
        assert_eq!(da.wait_result(WAIT).unwrap(), (head, NOT_OK), "{what}");
    }
    // Broken chains on every queue get used length 0.
    let broken: Vec<(&str, usize, Vec<RawDesc>)> = vec![
        (
            "tx without a result byte",
            TXQ,
            vec![r(good, 16, Next::End)],
        ),
        (
            "tx past the end of memory",
            TXQ,
            vec![r(end + 4096, 16, Next::Pos(1)), w(good, 1)],
        ),
        (
            "tx with a descriptor loop",
            TXQ,
            vec![r(good, 16, Next::Pos(1)), r(good, 8, Next::Pos(0))],
        ),
        (
            "tx with a dangling next",
            TXQ,
            vec![r(good, 16, Next::Index(9999))],
        ),
        ("rx buffer of 8 bytes", RXQ, vec![w(good, 8)]),
        ("rx buffer outside memory", RXQ, vec![w(end + 4096, 80)]),
        (
            "control without a result byte",
            CONTROLQ,
            vec![r(good, 2, Next::End)],
        ),
        (
            "nested indirect table",
            CONTROLQ,
            vec![RawDesc {
                addr: good,
                len: 16,
                flags: VRING_DESC_F_INDIRECT,
                next: Next::End,
            }],
        ),
    ];
    for (what, queue, descs) in broken {
        let vq = da.session().queue(queue).unwrap();
        let head = vq.add_raw(&descs).unwrap();
        vq.kick().unwrap();
        let used = vq
            .wait_used(WAIT)
            .unwrap_or_else(|e| panic!("{what}: not answered: {e}"));
        assert_eq!((used[0].head, used[0].len), (head, 0), "{what}");
    }
    // Unknown control message: NOT_OK, the controller stays started.
    assert_eq!(da.control(0x0299, WAIT).unwrap(), NOT_OK);

    assert_eq!(da.transmit(&f("0CC#CC"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(db.recv(WAIT).unwrap(), f("0CC#CC"));
    assert_eq!(db.transmit(&f("0DD#DD"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(da.recv(WAIT).unwrap(), f("0DD#DD"));
    assert_alive(&mut a);
}

#[test]
fn bogus_avail_head_is_skipped_and_the_next_request_is_served() {
    let bus = bus();
    let mut a = daemon(&bus, &[]);
    let mut da = started_at(&a.socket, &without(F_LATE_TX_ACK));
    da.session()
        .queue(TXQ)
        .unwrap()
        .add_bogus_head(60_000)
        .unwrap();

    assert_eq!(da.transmit(&f("0EE#EE"), WAIT).unwrap(), RESULT_OK);
    assert_alive(&mut a);
}

#[test]
fn reconnects_leak_no_fds_or_threads_and_each_connection_starts_stopped() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let connected = |d: &DaemonProcess| {
        let mut da = driver_at(&d.socket, &without(F_LATE_TX_ACK));
        assert_eq!(
            da.transmit(&f("001#"), WAIT).unwrap(),
            NOT_OK,
            "not stopped"
        );
        assert_eq!(da.start(WAIT).unwrap(), RESULT_OK);
        assert_eq!(da.transmit(&f("001#"), WAIT).unwrap(), RESULT_OK);
        da
    };
    let counts = |d: &DaemonProcess| (d.fd_count().unwrap(), d.thread_count().unwrap());
    drop(connected(&a));
    let probe = connected(&a);
    let baseline = counts(&a);
    drop(probe);

    for _ in 0..30 {
        drop(connected(&a));
    }
    let _probe = connected(&a);

    assert!(
        wait_until(WAIT, || counts(&a) == baseline),
        "fds and threads {:?}, {baseline:?} before the reconnects",
        counts(&a)
    );
}

#[test]
fn idle_daemon_uses_no_cpu_with_rx_buffers_and_a_pending_frame() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let mut da = started(&a);
    da.send(&f("123#45")).unwrap();
    fence(&mut da);

    let spent = a.cpu_ticks_over(IDLE_WINDOW).unwrap();

    // See IDLE_TICKS_MAX for why a few ticks are allowed.
    assert!(
        spent <= IDLE_TICKS_MAX,
        "idle daemon used {spent} ticks in {IDLE_WINDOW:?}"
    );
    assert!(da.take_results().unwrap().is_empty());
}

#[test]
fn sigterm_ends_the_daemon_and_removes_its_sockets() {
    let bus = bus();
    let mut a = daemon(&bus, &[]);
    let _da = started(&a);
    assert!(bus.path.exists(), "the first daemon should be the hub");

    a.signal(Signal::SIGTERM).unwrap();
    let status = a.wait_timeout(WAIT).unwrap().expect("daemon exits");

    assert!(status.success(), "{}", DaemonProcess::describe(status));
    assert!(!a.socket.exists(), "socket file left behind");
    assert!(!bus.path.exists(), "bus socket left behind");
}

#[test]
fn bus_goes_on_when_the_daemon_that_was_its_hub_exits() {
    let bus = bus();
    let mut a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut db = started(&b);
    let pending = db.send(&f("400#04")).unwrap();
    fence(&mut db);

    a.signal(Signal::SIGTERM).unwrap();
    a.wait_timeout(WAIT).unwrap().expect("hub daemon exits");

    // The frame in flight went with the old hub.
    assert_eq!(db.wait_result(WAIT).unwrap(), (pending, NOT_OK));
    let c = daemon(&bus, &[]);
    let mut dc = started(&c);
    assert_eq!(db.transmit(&f("401#01"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(dc.recv(WAIT).unwrap(), f("401#01"));
    assert_eq!(dc.transmit(&f("402#02"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(db.recv(WAIT).unwrap(), f("402#02"));
}

#[test]
fn migrated_controller_stays_started_and_frames_in_flight_are_answered_not_ok() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let c = daemon(&bus, &[]);
    let mut da = started(&a);
    let in_flight = da.send(&f("500#05")).unwrap();
    fence(&mut da);

    da.session()
        .migrate(&b.socket, &Options::default())
        .expect("migrates to B");

    assert_eq!(da.wait_result(WAIT).unwrap(), (in_flight, NOT_OK));
    let mut dc = started(&c);
    // No START on B: the controller came with the state.
    assert_eq!(da.transmit(&f("501#01"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(
        dc.recv(WAIT).unwrap(),
        f("501#01"),
        "the frame in flight reached the bus after all"
    );
    // The rx buffers posted on A are filled by B.
    assert_eq!(dc.transmit(&f("502#02"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(da.recv(WAIT).unwrap(), f("502#02"));
    assert!(b.stderr_text().contains("in flight at the migration"));
}

#[test]
fn migrated_bus_off_status_is_kept() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = started(&a);
    bus::inject(&bus.path, ErrorFrame::bus_off()).unwrap();
    da.session().wait_backend_request(WAIT).unwrap();

    da.session()
        .migrate(&b.socket, &Options::default())
        .expect("migrates to B");

    assert_eq!(da.session().get_config(0, 2).unwrap(), vec![1, 0]);
    assert_eq!(da.transmit(&f("600#"), WAIT).unwrap(), NOT_OK, "stopped");
}

#[test]
fn failed_migration_leaves_the_source_on_the_bus() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = started(&a);
    let in_flight = da.send(&f("700#07")).unwrap();
    fence(&mut da);
    da.session().stop_queues().unwrap();
    let mut blob = da.session().save_state().unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let mut incoming = Session::connect_incoming(&b.socket, &Options::default()).unwrap();
    assert!(
        incoming.load_state(&blob).is_err(),
        "corrupt state accepted"
    );
    assert!(b.stderr_text().contains("corrupt"), "{}", b.stderr_text());

    da.session().restart_queues().unwrap();

    assert_eq!(da.wait_result(WAIT).unwrap(), (in_flight, NOT_OK));
    drop(incoming);
    let mut db = started(&b);
    assert_eq!(da.transmit(&f("701#01"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(db.recv(WAIT).unwrap(), f("701#01"));
}

#[test]
fn missing_interface_is_a_startup_error_naming_it() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "x.sock", "--device-list", "nocan9"]);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");

    assert!(!status.success());
    assert!(
        d.stderr_text().contains("nocan9 does not exist"),
        "{}",
        d.stderr_text()
    );
    assert!(!d.dir().join("x.sock").exists());
}

#[test]
fn interface_that_is_not_can_is_a_startup_error() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "x.sock", "--device-list", "lo"]);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");

    assert!(!status.success());
    let err = d.stderr_text();
    // Without AF_CAN (this host) the socket fails; with it, the bind does.
    assert!(
        err.contains("--bus PATH") || err.contains("is it a CAN interface"),
        "{err}"
    );
}

#[test]
fn print_capabilities_prints_backend_type() {
    let kind = vhost_device_test_frontend::process::capabilities_type(std::path::Path::new(BIN));

    assert_eq!(kind.unwrap(), "can");
}

#[test]
fn bus_tool_sends_dumps_and_injects() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let mut da = started(&a);
    let tool = env!("CARGO_BIN_EXE_vhost-device-can-bus");
    let dump = Command::new(tool)
        .arg("--bus")
        .arg(&bus.path)
        .args(["dump", "--count", "3", "--timeout", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Alone, the guest's frame waits for an acknowledgement: the dump's.
    assert_eq!(da.transmit(&f("0F2#F2"), WAIT).unwrap(), RESULT_OK);

    let sent = Command::new(tool)
        .arg("--bus")
        .arg(&bus.path)
        .args(["send", "0F0#F0", "0F1#R2"])
        .output()
        .unwrap();

    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(da.recv(WAIT).unwrap(), f("0F0#F0"));
    assert_eq!(da.recv(WAIT).unwrap(), f("0F1#R2"));
    let out = dump.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "0F2#F2\n0F0#F0\n0F1#R2\n"
    );
    let injected = Command::new(tool)
        .arg("--bus")
        .arg(&bus.path)
        .args(["inject", "busoff"])
        .status()
        .unwrap();
    assert!(injected.success());
    assert_eq!(
        da.session().wait_backend_request(WAIT).unwrap(),
        BackendRequest::ConfigChange
    );
}

/// What QEMU does when the guest resets the device (a reboot): stop every
/// ring (`GET_VRING_BASE`), then set up new ones from index 0, without telling
/// the back end anything else. Returns a driver on the new rings.
fn reset_rings(d: CanDriver) -> CanDriver {
    let mut s = d.into_session();
    let event_idx = s.features & (1 << 29) != 0;
    for i in 0..3 {
        s.stop_queue(i).unwrap();
        let vq = Virtqueue::new(s.ram().clone(), 256, event_idx).unwrap();
        let (desc, avail, used) = vq.addresses();
        let config = VringConfigData {
            queue_max_size: vq.size(),
            queue_size: vq.size(),
            flags: 0,
            desc_table_addr: s.ram().host_addr(desc).unwrap(),
            used_ring_addr: s.ram().host_addr(used).unwrap(),
            avail_ring_addr: s.ram().host_addr(avail).unwrap(),
            log_addr: None,
        };
        let fe = s.frontend();
        fe.set_vring_num(i, vq.size()).unwrap();
        fe.set_vring_base(i, 0).unwrap();
        fe.set_vring_addr(i, &config).unwrap();
        fe.set_vring_call(i, vq.call_fd()).unwrap();
        fe.set_vring_kick(i, vq.kick_fd()).unwrap();
        fe.set_vring_enable(i, true).unwrap();
        *s.queue(i).unwrap() = vq;
    }
    CanDriver::new(s, 16).unwrap()
}

#[test]
fn guest_reset_drops_the_old_drivers_buffers_and_the_new_one_starts_stopped() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = started(&a);
    let mut db = started(&b);
    let old = da.session().ram().alloc(80, 8).unwrap();
    da.session().ram().write(old, &[0xAA; 80]).unwrap();
    let vq = da.session().queue(RXQ).unwrap();
    vq.add(&Chain::new().writable(old, 80)).unwrap();
    vq.kick().unwrap();
    // A frame the old driver receives: its buffers are in use.
    assert_eq!(db.transmit(&f("050#05"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(da.recv(WAIT).unwrap(), f("050#05"));

    let mut fresh = reset_rings(da);

    assert_eq!(
        fresh.transmit(&f("051#"), WAIT).unwrap(),
        NOT_OK,
        "still started"
    );
    assert!(
        a.stderr_text().contains("set up anew"),
        "{}",
        a.stderr_text()
    );
    assert_eq!(fresh.start(WAIT).unwrap(), RESULT_OK);
    assert_eq!(db.transmit(&f("052#52"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(fresh.recv(WAIT).unwrap(), f("052#52"));
    assert_eq!(
        fresh.session().ram().read(old, 80).unwrap(),
        vec![0xAA; 80],
        "an old driver's buffer was written"
    );
}

#[test]
fn pause_and_resume_keeps_the_held_rx_buffers_and_the_started_controller() {
    let bus = bus();
    let a = daemon(&bus, &[]);
    let b = daemon(&bus, &[]);
    let mut da = started(&a);
    let mut db = started(&b);

    // QEMU's stop and cont: every ring stopped and started where it was.
    da.session().stop_queues().unwrap();
    da.session().restart_queues().unwrap();

    assert_eq!(db.transmit(&f("060#60"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(da.recv(WAIT).unwrap(), f("060#60"));
    assert_eq!(da.transmit(&f("061#61"), WAIT).unwrap(), RESULT_OK);
    assert_eq!(db.recv(WAIT).unwrap(), f("061#61"));
    assert!(!a.stderr_text().contains("set up anew"));
}
