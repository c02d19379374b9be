// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The real `vhost-device-gpio` binary with simulated chips, driven over its
//! socket by the test front end's virtio-gpio driver, and over the chip's
//! control socket as the outside world.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use vhost_device_test_frontend::gpio::{msg, GpioDriver, Irq, F_IRQ};
use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::virtqueue::VRING_DESC_F_WRITE;
use vhost_device_test_frontend::{Chain, Next, Options, RawDesc, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-gpio");
const WAIT: Duration = Duration::from_secs(10);
const NAMES: &str = "sim:8:led,button,irq-a,irq-b,irq-c,,spare,last";

const NONE: u32 = 0;
const OUT: u32 = 1;
const IN: u32 = 2;
const VALID: u8 = 1;
const INVALID: u8 = 0;

fn daemon(args: &[&str]) -> DaemonProcess {
    DaemonProcess::start(Path::new(BIN), args).expect("daemon starts")
}

fn sim_daemon() -> DaemonProcess {
    daemon(&["--device-list", NAMES])
}

fn control_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".sim");
    PathBuf::from(s)
}

/// The simulated chip's control socket: the outside world.
struct Ctl(BufReader<UnixStream>);

impl Ctl {
    fn connect(d: &DaemonProcess) -> Self {
        Self::at(&control_path(&d.socket))
    }

    fn at(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("control socket");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Self(BufReader::new(s))
    }

    fn cmd(&mut self, text: &str) -> String {
        self.0
            .get_mut()
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    fn ok(&mut self, text: &str) -> String {
        let a = self.cmd(text);
        assert!(a.starts_with("ok"), "{text}: {a}");
        a
    }
}

fn driver(d: &DaemonProcess) -> GpioDriver {
    GpioDriver::new(Session::start(&d.socket, &Options::default()).expect("front end connects"))
        .unwrap()
}

fn ok(g: &mut GpioDriver, kind: u16, line: u16, value: u32) -> u8 {
    let r = g.request(kind, line, value).unwrap();
    assert_eq!(
        (r.status, r.len),
        (0, 2),
        "request {kind} line {line} value {value}"
    );
    r.value
}

fn err(g: &mut GpioDriver, kind: u16, line: u16, value: u32) {
    let r = g.request(kind, line, value).unwrap();
    assert_eq!(
        (r.status, r.len),
        (1, 2),
        "request {kind} line {line} value {value} accepted"
    );
}

/// A line no test gives an interrupt.
const FENCE_LINE: u16 = 7;

/// Every eventq buffer posted before has been taken by the device (held or
/// answered): a buffer for a line without an interrupt comes back INVALID at
/// once, and the device takes the queue's buffers in order.
fn fence(g: &mut GpioDriver) {
    g.arm(FENCE_LINE).unwrap();
    let irq = g.wait_irq(FENCE_LINE).unwrap();
    assert_eq!((irq.status, irq.len), (INVALID, 1), "fence");
}

/// Two request round trips (a weaker settle, for the 64-line test, which
/// has no free line for a fence).
fn settle(g: &mut GpioDriver) {
    ok(g, msg::GET_DIRECTION, 0, 0);
    ok(g, msg::GET_DIRECTION, 0, 0);
}

fn irq_valid(irq: Irq) {
    assert_eq!((irq.status, irq.len), (VALID, 1), "{irq:?}");
}

#[test]
fn config_space_and_names_come_from_the_simulated_chip() {
    let d = sim_daemon();
    let mut g = driver(&d);

    let (ngpio, size) = g.config().unwrap();
    let names = g.names().unwrap().expect("names");

    assert_eq!(ngpio, 8);
    assert_eq!(size, 41, "8 NUL-terminated names");
    assert_eq!(
        names,
        ["led", "button", "irq-a", "irq-b", "irq-c", "", "spare", "last"]
    );
    assert_ne!(
        g.session().features & F_IRQ,
        0,
        "VIRTIO_GPIO_F_IRQ not offered"
    );
}

#[test]
fn output_set_by_the_driver_is_driven_on_the_chip() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let mut ctl = Ctl::connect(&d);

    ok(&mut g, msg::SET_VALUE, 0, 1);
    ok(&mut g, msg::SET_DIRECTION, 0, OUT);
    assert!(ctl.ok("get 0").contains("dir=out value=1"));
    ok(&mut g, msg::SET_VALUE, 0, 0);

    assert!(ctl.ok("get 0").contains("value=0"));
    assert_eq!(ok(&mut g, msg::GET_DIRECTION, 0, 0), 1);
    assert_eq!(ok(&mut g, msg::GET_VALUE, 0, 0), 0);
}

#[test]
fn input_driven_on_the_chip_is_read_by_the_driver() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let mut ctl = Ctl::connect(&d);
    ok(&mut g, msg::SET_DIRECTION, 1, IN);

    ctl.ok("set 1 1");
    let high = ok(&mut g, msg::GET_VALUE, 1, 0);
    ctl.ok("set 1 0");
    let low = ok(&mut g, msg::GET_VALUE, 1, 0);

    assert_eq!((high, low), (1, 0));
}

#[test]
fn direction_none_releases_the_line() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let mut ctl = Ctl::connect(&d);
    ok(&mut g, msg::SET_DIRECTION, 6, OUT);

    ok(&mut g, msg::SET_DIRECTION, 6, NONE);

    assert!(ctl.ok("get 6").contains("dir=none"));
    assert_eq!(ok(&mut g, msg::GET_DIRECTION, 6, 0), 0);
    err(&mut g, msg::GET_VALUE, 6, 0);
}

#[test]
fn line_past_the_chip_is_an_error_for_every_request_type_and_the_queue_goes_on() {
    let d = sim_daemon();
    let mut g = driver(&d);

    for kind in 1..=6 {
        for line in [8, 9, u16::MAX] {
            err(&mut g, kind, line, 0);
        }
    }

    assert_eq!(ok(&mut g, msg::GET_DIRECTION, 7, 0), 0);
    assert!(
        d.stderr_text().contains("does not exist"),
        "{}",
        d.stderr_text()
    );
    assert!(!d.stderr_text().contains("panicked"));
}

#[test]
fn unknown_type_and_bad_values_are_errors() {
    let d = sim_daemon();
    let mut g = driver(&d);

    err(&mut g, 0, 0, 0);
    err(&mut g, 7, 0, 0);
    err(&mut g, 0xFFFF, 0, 0);
    err(&mut g, msg::SET_DIRECTION, 0, 3);
    err(&mut g, msg::SET_VALUE, 0, 2);
    err(&mut g, msg::SET_IRQ_TYPE, 0, 5);
    ok(&mut g, msg::SET_DIRECTION, 0, OUT);
    err(&mut g, msg::SET_IRQ_TYPE, 0, 1);
}

#[test]
fn malformed_chains_are_answered_and_the_queue_keeps_serving() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let ram = g.session().ram().clone();
    let req = ram.alloc(8, 8).unwrap();
    ram.write(req, &[2, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    let resp = ram.alloc(64, 8).unwrap();
    let end = ram.end();
    let cases: Vec<(&str, Chain, u32)> = vec![
        (
            "short request",
            Chain::new().readable(req, 4).writable(resp, 2),
            2,
        ),
        ("no response buffer", Chain::new().readable(req, 8), 0),
        (
            "one-byte response",
            Chain::new().readable(req, 8).writable(resp, 1),
            1,
        ),
        (
            "request split in bytes",
            Chain::new()
                .readable(req, 3)
                .readable(req + 3, 5)
                .writable(resp, 2),
            2,
        ),
        (
            "indirect",
            Chain::new().readable(req, 8).writable(resp, 2).indirect(),
            2,
        ),
        (
            "oversized response",
            Chain::new().readable(req, 8).writable(resp, 64),
            2,
        ),
    ];
    for (what, chain, len) in cases {
        let vq = g.session().queue(0).unwrap();
        let head = vq.add(&chain).unwrap();
        vq.kick().unwrap();
        let used = vq.wait_used(WAIT).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((used[0].head, used[0].len), (head, len), "{what}");
        assert_eq!(ok(&mut g, msg::GET_DIRECTION, 1, 0), 0, "after {what}");
    }
    let vq = g.session().queue(0).unwrap();
    let head = vq
        .add_raw(&[
            RawDesc {
                addr: end + 4096,
                len: 8,
                flags: 0,
                next: Next::Pos(1),
            },
            RawDesc {
                addr: resp,
                len: 2,
                flags: VRING_DESC_F_WRITE,
                next: Next::End,
            },
        ])
        .unwrap();
    vq.kick().unwrap();
    let used = vq.wait_used(WAIT).unwrap();
    assert_eq!(
        (used[0].head, used[0].len),
        (head, 0),
        "request outside memory"
    );
    // Names into a buffer too small: ERR, not a partial block.
    let r = g.request_with(msg::GET_LINE_NAMES, 0, 0, 10).unwrap();
    assert_eq!((r.status, r.len), (1, 2));
    assert_eq!(ok(&mut g, msg::GET_DIRECTION, 1, 0), 0);
    assert!(!d.stderr_text().contains("panicked"));
}

#[test]
fn edge_interrupt_fires_on_a_driven_edge_and_edges_latch_while_masked() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let mut ctl = Ctl::connect(&d);
    ok(&mut g, msg::SET_DIRECTION, 2, IN);
    ok(&mut g, msg::SET_IRQ_TYPE, 2, 1); // rising
    g.arm(2).unwrap();
    fence(&mut g);
    assert!(
        g.returned_irqs(Duration::ZERO).unwrap().is_empty(),
        "fired with no edge"
    );

    ctl.ok("set 2 1");
    irq_valid(g.wait_irq(2).unwrap());
    // Masked now: three pulses latch one edge.
    for _ in 0..3 {
        ctl.ok("set 2 0");
        ctl.ok("set 2 1");
    }
    g.arm(2).unwrap();
    irq_valid(g.wait_irq(2).unwrap());
    g.arm(2).unwrap();
    fence(&mut g);

    assert!(
        g.returned_irqs(Duration::ZERO).unwrap().is_empty(),
        "the latch counted edges"
    );
}

#[test]
fn falling_and_both_edges_fire_on_their_edges_only() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let mut ctl = Ctl::connect(&d);
    ok(&mut g, msg::SET_IRQ_TYPE, 3, 2); // falling
    ok(&mut g, msg::SET_IRQ_TYPE, 4, 3); // both
    g.arm(3).unwrap();
    g.arm(4).unwrap();
    fence(&mut g);

    ctl.ok("set 3 1");
    ctl.ok("set 4 1");
    irq_valid(g.wait_irq(4).unwrap());
    fence(&mut g);
    assert!(
        g.returned_irqs(Duration::ZERO).unwrap().is_empty(),
        "falling fired on a rise"
    );
    ctl.ok("set 3 0");
    irq_valid(g.wait_irq(3).unwrap());
    g.arm(4).unwrap();
    fence(&mut g);
    ctl.ok("set 4 0");
    irq_valid(g.wait_irq(4).unwrap());
}

#[test]
fn level_interrupt_fires_while_active_and_on_the_edge_into_it() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let mut ctl = Ctl::connect(&d);
    ok(&mut g, msg::SET_IRQ_TYPE, 4, 4); // level high
    ctl.ok("set 4 1");

    g.arm(4).unwrap();
    irq_valid(g.wait_irq(4).unwrap());
    g.arm(4).unwrap();
    irq_valid(g.wait_irq(4).unwrap()); // still active: fires again
    ctl.ok("set 4 0");
    g.arm(4).unwrap();
    fence(&mut g);
    assert!(
        g.returned_irqs(Duration::ZERO).unwrap().is_empty(),
        "inactive level fired"
    );
    ctl.ok("set 4 1");

    irq_valid(g.wait_irq(4).unwrap());
}

#[test]
fn level_low_is_not_latched_while_masked() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let mut ctl = Ctl::connect(&d);
    ctl.ok("set 3 1");
    ok(&mut g, msg::SET_IRQ_TYPE, 3, 8); // level low
    ctl.ok("set 3 0");
    ctl.ok("set 3 1");

    g.arm(3).unwrap();
    fence(&mut g);
    assert!(
        g.returned_irqs(Duration::ZERO).unwrap().is_empty(),
        "a pulse was latched"
    );
    ctl.ok("set 3 0");
    irq_valid(g.wait_irq(3).unwrap());
}

#[test]
fn irq_type_none_returns_the_held_buffer_invalid() {
    let d = sim_daemon();
    let mut g = driver(&d);
    ok(&mut g, msg::SET_IRQ_TYPE, 2, 3);
    g.arm(2).unwrap();
    fence(&mut g);

    ok(&mut g, msg::SET_IRQ_TYPE, 2, 0);

    let irq = g.wait_irq(2).unwrap();
    assert_eq!((irq.status, irq.len), (INVALID, 1));
}

#[test]
fn buffer_for_a_disabled_line_is_returned_invalid_at_once() {
    let d = sim_daemon();
    let mut g = driver(&d);
    g.arm(5).unwrap();
    let irq = g.wait_irq(5).unwrap();
    assert_eq!((irq.status, irq.len), (INVALID, 1));
}

#[test]
fn second_buffer_for_a_line_is_invalid_and_the_first_stays_armed() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let mut ctl = Ctl::connect(&d);
    ok(&mut g, msg::SET_IRQ_TYPE, 2, 1);
    let first = g.arm(2).unwrap();
    fence(&mut g);

    let second = g.arm(2).unwrap();
    let bounced = g.wait_irq(2).unwrap();
    ctl.ok("set 2 1");
    let fired = g.wait_irq(2).unwrap();

    assert_ne!(first, second);
    assert_eq!((bounced.status, bounced.len), (INVALID, 1));
    irq_valid(fired);
    assert!(
        d.stderr_text().contains("second buffer"),
        "{}",
        d.stderr_text()
    );
}

#[test]
fn malformed_eventq_buffers_are_answered() {
    let d = sim_daemon();
    let mut g = driver(&d);
    let ram = g.session().ram().clone();
    let at = ram.alloc(16, 8).unwrap();
    ram.write(at, &[9, 0]).unwrap();
    let cases: Vec<(&str, Chain, u32)> = vec![
        (
            "line past the chip",
            Chain::new().readable(at, 2).writable(at + 8, 1),
            1,
        ),
        (
            "one readable byte",
            Chain::new().readable(at, 1).writable(at + 8, 1),
            1,
        ),
        ("no writable byte", Chain::new().readable(at, 2), 0),
        (
            "larger status buffer",
            Chain::new().readable(at, 2).writable(at + 8, 8),
            1,
        ),
    ];
    for (what, chain, len) in cases {
        let vq = g.session().queue(1).unwrap();
        let head = vq.add(&chain).unwrap();
        vq.kick().unwrap();
        let used = vq.wait_used(WAIT).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((used[0].head, used[0].len), (head, len), "{what}");
    }
    assert_eq!(ok(&mut g, msg::GET_DIRECTION, 0, 0), 0);
}

#[test]
fn irq_type_without_the_feature_is_refused() {
    let d = sim_daemon();
    let opts = Options {
        accept_features: !F_IRQ,
        ..Options::default()
    };
    let mut g = GpioDriver::new(Session::start(&d.socket, &opts).unwrap()).unwrap();
    err(&mut g, msg::SET_IRQ_TYPE, 2, 1);
}

#[test]
fn disconnect_releases_every_line_and_the_next_front_end_is_served() {
    let d = sim_daemon();
    let mut ctl = Ctl::connect(&d);
    {
        let mut g = driver(&d);
        ok(&mut g, msg::SET_DIRECTION, 0, OUT);
        ok(&mut g, msg::SET_IRQ_TYPE, 2, 1);
        g.arm(2).unwrap();
        fence(&mut g);
    }
    ctl.ok("wait 0 dir=none 10000");
    ctl.ok("wait 2 edge=none 10000");

    let mut g = driver(&d);
    ok(&mut g, msg::SET_IRQ_TYPE, 2, 1);
    g.arm(2).unwrap();
    fence(&mut g);
    ctl.ok("set 2 1");
    irq_valid(g.wait_irq(2).unwrap());
}

#[test]
fn reconnects_leak_no_fds_or_threads() {
    let d = sim_daemon();
    let round = |d: &DaemonProcess| {
        let mut g = driver(d);
        ok(&mut g, msg::SET_IRQ_TYPE, 2, 1);
        g.arm(2).unwrap();
        fence(&mut g);
    };
    round(&d);
    std::thread::sleep(Duration::from_millis(100));
    let (fds, threads) = (d.fd_count().unwrap(), d.thread_count().unwrap());

    for _ in 0..30 {
        round(&d);
    }
    std::thread::sleep(Duration::from_millis(200));

    assert_eq!(d.fd_count().unwrap(), fds, "fd count grew");
    assert_eq!(d.thread_count().unwrap(), threads, "thread count grew");
}

#[test]
fn idle_device_with_64_armed_lines_uses_no_cpu() {
    let d = daemon(&["--device-list", "sim:64"]);
    let mut g = driver(&d);
    for line in 0..64 {
        ok(
            &mut g,
            msg::SET_IRQ_TYPE,
            line,
            if line % 2 == 0 { 3 } else { 4 },
        );
        g.arm(line).unwrap();
    }
    settle(&mut g);
    assert_eq!(g.armed().len(), 64);
    std::thread::sleep(Duration::from_millis(100));
    let before = d.cpu_ticks().unwrap();

    std::thread::sleep(Duration::from_millis(1500));

    let spent = d.cpu_ticks().unwrap() - before;
    assert!(spent <= 2, "idle daemon used {spent} ticks in 1.5 s");
    assert!(g.returned_irqs(Duration::ZERO).unwrap().is_empty());
}

#[test]
fn sigterm_ends_the_daemon_and_removes_both_sockets() {
    let mut d = sim_daemon();
    let mut g = driver(&d);
    ok(&mut g, msg::SET_IRQ_TYPE, 2, 1);
    g.arm(2).unwrap();
    let control = control_path(&d.socket);
    assert!(control.exists());

    d.signal(Signal::SIGTERM).unwrap();
    let status = d
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("daemon exits");

    assert!(status.success(), "{}", DaemonProcess::describe(status));
    assert!(!d.socket.exists(), "socket file left behind");
    assert!(!control.exists(), "control socket left behind");
}

#[test]
fn held_interrupts_and_line_state_move_to_a_second_daemon() {
    let a = sim_daemon();
    let b = sim_daemon();
    let mut ctl_a = Ctl::connect(&a);
    let mut ctl_b = Ctl::connect(&b);
    let mut g = driver(&a);
    // Line 0: output driving 1. Line 2: rising edge, buffer held. Line 3:
    // falling edge, masked, with a latched edge. Line 4: level high, buffer
    // held, and already high on the destination's chip.
    ok(&mut g, msg::SET_VALUE, 0, 1);
    ok(&mut g, msg::SET_DIRECTION, 0, OUT);
    ok(&mut g, msg::SET_IRQ_TYPE, 2, 1);
    g.arm(2).unwrap();
    ctl_a.ok("set 3 1");
    ok(&mut g, msg::SET_IRQ_TYPE, 3, 2);
    ctl_a.ok("set 3 0");
    ctl_a.ok("sync");
    ok(&mut g, msg::SET_IRQ_TYPE, 4, 4);
    g.arm(4).unwrap();
    fence(&mut g);
    assert!(g.returned_irqs(Duration::ZERO).unwrap().is_empty());
    ctl_b.ok("set 4 1");

    let mut g = g.migrate(&b.socket, &Options::default()).expect("migrates");

    assert!(
        ctl_b.ok("get 0").contains("dir=out value=1"),
        "output not claimed"
    );
    assert_eq!(ok(&mut g, msg::GET_VALUE, 0, 0), 1);
    assert!(
        ctl_b.ok("get 2").contains("edge=rising"),
        "edge detection not set"
    );
    irq_valid(g.wait_irq(4).unwrap()); // the level is active on B
    ctl_b.ok("set 2 1");
    irq_valid(g.wait_irq(2).unwrap()); // the held buffer, completed by B
    g.arm(3).unwrap();
    let latched = g.wait_irq(3);
    assert!(
        latched.is_ok(),
        "latched edge not delivered: A: {}\nB: {}",
        a.stderr_text(),
        b.stderr_text()
    );
    irq_valid(latched.unwrap()); // the edge latched on A
    assert!(
        ctl_a.ok("wait 0 dir=none 10000").contains("dir=none"),
        "A kept the line"
    );
}

#[test]
fn startup_errors_name_the_problem() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-l", "sim:2", "sim:2"], "socket"),
        (vec!["-l", "/dev/gpiochip-none"], "/dev/gpiochip-none"),
        (vec!["-l", "no-such-label"], "no-such-label"),
        (vec!["--socket-count", "2", "-l", "7", "7"], "twice"),
        (vec!["-l", "sim:0"], "1 to 1024"),
        (vec![], "--device-list"),
    ];
    for (args, needle) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(["--socket-path", "dev.sock"]).args(&args);
        let mut d = DaemonProcess::spawn(cmd).unwrap();
        let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");
        assert!(!status.success(), "{args:?} started");
        assert!(
            d.stderr_text().contains(needle),
            "{args:?}: {}",
            d.stderr_text()
        );
        assert!(!d.dir().join("dev.sock").exists(), "{args:?} left a socket");
    }
}

#[test]
fn each_socket_has_its_own_simulated_chip() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "dev.sock", "--socket-count", "2"])
        .args(["-l", "sim:2:x,y", "sim:3"]);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let dir = d.dir().to_owned();
    for i in 0..2 {
        d.wait_for_path(&dir.join(format!("dev.sock{i}")), WAIT)
            .unwrap();
    }
    let s0 = Session::start(&dir.join("dev.sock0"), &Options::default()).unwrap();
    let s1 = Session::start(&dir.join("dev.sock1"), &Options::default()).unwrap();
    let mut g0 = GpioDriver::new(s0).unwrap();
    let mut g1 = GpioDriver::new(s1).unwrap();

    assert_eq!(g0.config().unwrap().0, 2);
    assert_eq!(g1.config().unwrap().0, 3);
    ok(&mut g1, msg::SET_DIRECTION, 2, OUT);
    assert!(Ctl::at(&dir.join("dev.sock1.sim"))
        .ok("get 2")
        .contains("dir=out"));
    assert!(Ctl::at(&dir.join("dev.sock0.sim"))
        .ok("info")
        .contains("names=x,y"));
}

#[test]
fn print_capabilities_prints_backend_type() {
    let kind = vhost_device_test_frontend::process::capabilities_type(std::path::Path::new(BIN));

    assert_eq!(kind.unwrap(), "gpio");
}

#[test]
fn control_socket_answers_errors_and_waits() {
    let d = sim_daemon();
    let mut ctl = Ctl::connect(&d);
    assert!(ctl.cmd("set 99 1").starts_with("err"));
    assert!(ctl.cmd("bogus").starts_with("err"));
    assert!(ctl.cmd("wait 0 dir=out 10").starts_with("err timeout"));
    assert!(ctl.ok("info").contains("lines=8"));
}
