// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The real `vhost-device-rng` binary, driven over its socket by the test front end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vhost_device_test_frontend::process::{wait_until, DaemonProcess, IDLE_TICKS_MAX, IDLE_WINDOW};
use vhost_device_test_frontend::virtqueue::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
use vhost_device_test_frontend::{Chain, Next, Options, RawDesc, Session, Used, LOG_PAGE_SIZE};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-rng");
const WAIT: Duration = Duration::from_secs(10);

fn daemon(args: &[&str]) -> DaemonProcess {
    DaemonProcess::start(Path::new(BIN), args).expect("daemon starts")
}

fn session(d: &DaemonProcess) -> Session {
    Session::start(&d.socket, &Options::default()).expect("front end connects")
}

/// Post one request of `len` writable bytes and wait for it.
fn request(s: &mut Session, chain: Chain) -> Used {
    let vq = s.queue(0).unwrap();
    let head = vq.add(&chain).unwrap();
    vq.kick().unwrap();
    let used = vq.wait_used(WAIT).expect("request completes");
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].head, head);
    used[0]
}

fn distinct_bytes(data: &[u8]) -> usize {
    data.iter().collect::<HashSet<_>>().len()
}

#[test]
fn entropy_is_delivered_and_not_constant() {
    let d = daemon(&[]);
    let mut s = session(&d);
    let a = s.ram().alloc(4096, 4096).unwrap();
    let b = s.ram().alloc(4096, 4096).unwrap();

    let ua = request(&mut s, Chain::new().writable(a, 4096));
    let ub = request(&mut s, Chain::new().writable(b, 4096));

    assert_eq!((ua.len, ub.len), (4096, 4096));
    let (da, db) = (
        s.ram().read(a, 4096).unwrap(),
        s.ram().read(b, 4096).unwrap(),
    );
    assert_ne!(da, db);
    assert!(distinct_bytes(&da) > 200, "first buffer looks constant");
}

#[test]
fn request_split_over_many_descriptors_is_filled_completely() {
    let d = daemon(&[]);
    let mut s = session(&d);
    let buf = s.ram().alloc(5000, 8).unwrap();

    let used = request(&mut s, Chain::new().writable_split(buf, 5000, 37));

    assert_eq!(used.len, 5000);
    assert!(distinct_bytes(&s.ram().read(buf, 5000).unwrap()) > 200);
}

#[test]
fn indirect_chain_is_filled() {
    let d = daemon(&[]);
    let mut s = session(&d);
    let buf = s.ram().alloc(3000, 8).unwrap();

    let used = request(&mut s, Chain::new().writable_split(buf, 3000, 5).indirect());

    assert_eq!(used.len, 3000);
}

#[test]
fn oversized_request_is_capped_at_64_kib() {
    let d = daemon(&[]);
    let mut s = session(&d);
    let buf = s.ram().alloc(1 << 20, 4096).unwrap();

    let used = request(&mut s, Chain::new().writable(buf, 1 << 20));

    assert_eq!(used.len, 64 * 1024);
}

#[test]
fn dirty_log_marks_every_page_the_device_wrote_and_no_other() {
    let d = daemon(&[]);
    let opts = Options {
        dirty_log: true,
        ..Options::default()
    };
    let mut s = Session::start(&d.socket, &opts).unwrap();
    let page = |a: u64| a / LOG_PAGE_SIZE * LOG_PAGE_SIZE;
    let direct = s.ram().alloc(3 * LOG_PAGE_SIZE, LOG_PAGE_SIZE).unwrap();
    let split = s.ram().alloc(2 * LOG_PAGE_SIZE, LOG_PAGE_SIZE).unwrap();
    let untouched = s.ram().alloc(LOG_PAGE_SIZE, LOG_PAGE_SIZE).unwrap();
    let indirect = s.ram().alloc(LOG_PAGE_SIZE, LOG_PAGE_SIZE).unwrap();
    let (desc, avail, used) = s.queue(0).unwrap().addresses();
    // Before any request the device may already have published its avail
    // event (EVENT_IDX) in the used ring's page; nothing else is written.
    let early = s.take_dirty_pages().unwrap();
    assert!(
        early.iter().all(|&p| p == page(used)),
        "written before any request: {early:x?} (used ring at {used:x})"
    );

    // A buffer straddling three pages, one split over descriptors across a
    // page boundary, and one in an indirect table.
    let a = request(&mut s, Chain::new().writable(direct + 16, 2 * 4096));
    let b = request(&mut s, Chain::new().writable_split(split + 4000, 200, 3));
    let c = request(
        &mut s,
        Chain::new().writable_split(indirect, 64, 2).indirect(),
    );

    assert_eq!((a.len, b.len, c.len), (2 * 4096, 200, 64));
    let mut expected = vec![
        direct,
        direct + LOG_PAGE_SIZE,
        direct + 2 * LOG_PAGE_SIZE,
        split,
        split + LOG_PAGE_SIZE,
        indirect,
        page(used),
    ];
    expected.sort_unstable();
    let dirty = s.take_dirty_pages().unwrap();
    assert_eq!(dirty, expected, "buffers and the used ring, nothing else");
    for (what, addr) in [
        ("descriptors", desc),
        ("avail ring", avail),
        ("unused buffer", untouched),
    ] {
        assert!(!dirty.contains(&page(addr)), "{what} marked dirty");
    }
    // Taken pages are cleared; the next request marks its pages again.
    let again = request(&mut s, Chain::new().writable(untouched, 8));
    assert_eq!(again.len, 8);
    let mut expected = vec![untouched, page(used)];
    expected.sort_unstable();
    assert_eq!(s.dirty_pages().unwrap(), expected);
}

#[test]
fn works_without_event_idx() {
    let d = daemon(&[]);
    let opts = Options {
        accept_features: !(1u64 << 29),
        ..Options::default()
    };
    let mut s = Session::start(&d.socket, &opts).unwrap();
    let buf = s.ram().alloc(64, 8).unwrap();

    for _ in 0..20 {
        assert_eq!(request(&mut s, Chain::new().writable(buf, 64)).len, 64);
    }
}

#[test]
fn many_requests_in_flight_all_complete() {
    let d = daemon(&[]);
    let mut s = session(&d);
    let buf = s.ram().alloc(200 * 512, 4096).unwrap();
    let vq = s.queue(0).unwrap();
    for i in 0..200u64 {
        vq.add(&Chain::new().writable(buf + i * 512, 512)).unwrap();
    }
    vq.kick().unwrap();

    let mut done = 0;
    while done < 200 {
        let used = vq.wait_used(WAIT).unwrap();
        assert!(used.iter().all(|u| u.len == 512));
        done += used.len();
    }
    assert_eq!(vq.in_flight(), 0);
}

#[test]
fn quota_is_honoured_within_its_period() {
    let d = daemon(&["--max-bytes", "1000", "--period", "500"]);
    let mut s = session(&d);
    let buf = s.ram().alloc(3 * 1000, 8).unwrap();
    let vq = s.queue(0).unwrap();
    let start = Instant::now();
    for i in 0..3 {
        vq.add(&Chain::new().writable(buf + i * 1000, 1000))
            .unwrap();
    }
    vq.kick().unwrap();

    let mut arrivals = Vec::new();
    while arrivals.len() < 3 {
        for u in vq.wait_used(WAIT).unwrap() {
            arrivals.push((start.elapsed(), u.len));
        }
    }

    assert!(arrivals.iter().all(|&(_, len)| len == 1000), "{arrivals:?}");
    // Window k (k = 0, 1, 2) opens at least k periods after window 0, which
    // opens after `start`. Arrivals are measured from `start`, so a slow or
    // busy machine can only make them later, never make this fail; measuring
    // from the first arrival instead would fail whenever the test thread saw
    // the first completion late.
    for (k, &(at, _)) in arrivals.iter().enumerate() {
        let earliest = Duration::from_millis(500 * k as u64);
        assert!(
            at >= earliest,
            "request {k} served {at:?} after the start, before {earliest:?}"
        );
    }
}

/// A daemon serving two devices (`--socket-count 2`) with `args`, and
/// their socket paths once both listen.
fn two_devices(args: &[&str]) -> (DaemonProcess, Vec<std::path::PathBuf>) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "dev.sock", "--socket-count", "2"])
        .args(args);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let paths: Vec<_> = (0..2)
        .map(|i| d.dir().join(format!("dev.sock{i}")))
        .collect();
    for p in &paths {
        d.wait_for_path(p, WAIT).unwrap();
    }
    (d, paths)
}

#[test]
fn quota_applies_to_each_device_separately() {
    let (_d, paths) = two_devices(&["--max-bytes", "100", "--period", "60000"]);
    for p in &paths {
        let mut s = Session::start(p, &Options::default()).unwrap();
        let buf = s.ram().alloc(100, 8).unwrap();
        // Each device has its own full quota.
        assert_eq!(request(&mut s, Chain::new().writable(buf, 100)).len, 100);
    }
}

#[test]
fn failure_of_one_device_leaves_the_other_devices_of_the_process_serving() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("ten-bytes");
    std::fs::write(&seed, [1u8; 10]).unwrap();
    let (mut d, paths) = two_devices(&["--rng-source", seed.to_str().unwrap()]);
    let mut healthy = Session::start(&paths[1], &Options::default()).unwrap();
    let mut failing = Session::start(&paths[0], &Options::default()).unwrap();
    let buf = failing.ram().alloc(64, 8).unwrap();
    assert_eq!(
        request(&mut failing, Chain::new().writable(buf, 64)).len,
        10
    );

    // Device 0's source ends: a host failure of device 0 only.
    let vq = failing.queue(0).unwrap();
    vq.add(&Chain::new().writable(buf, 64)).unwrap();
    vq.kick().unwrap();
    assert!(
        wait_until(WAIT, || d.stderr_text().contains("device 0 failed")),
        "no failure logged: {}",
        d.stderr_text()
    );

    let buf = healthy.ram().alloc(64, 8).unwrap();
    assert_eq!(
        request(&mut healthy, Chain::new().writable(buf, 64)).len,
        10
    );
    assert!(d.try_wait().unwrap().is_none(), "the process ended");
}

#[test]
fn malformed_chains_are_answered_and_the_queue_keeps_serving() {
    let d = daemon(&[]);
    let mut s = session(&d);
    let end = s.ram().end();
    let good = s.ram().alloc(64, 8).unwrap();
    let table = {
        let vq = s.queue(0).unwrap();
        // An indirect table whose only entry is itself indirect (forbidden, 2.7.5.3.1).
        vq.write_indirect_table(&[RawDesc {
            addr: good,
            len: 16,
            flags: VRING_DESC_F_INDIRECT,
            next: Next::End,
        }])
        .unwrap()
    };
    let w = |addr, len| RawDesc {
        addr,
        len,
        flags: VRING_DESC_F_WRITE,
        next: Next::End,
    };
    let cases: Vec<(&str, Vec<RawDesc>)> = vec![
        (
            "address past the end of guest memory",
            vec![w(end + 4096, 64)],
        ),
        (
            "buffer running off the end of memory",
            vec![w(end - 16, 64)],
        ),
        ("address that overflows", vec![w(u64::MAX - 8, 64)]),
        (
            "device-readable buffer only",
            vec![RawDesc {
                flags: 0,
                ..w(good, 64)
            }],
        ),
        ("zero-length buffer", vec![w(good, 0)]),
        (
            "next index outside the table",
            vec![RawDesc {
                next: Next::Index(9999),
                ..w(good, 8)
            }],
        ),
        (
            "descriptor loop",
            vec![
                RawDesc {
                    next: Next::Pos(1),
                    ..w(good, 8)
                },
                RawDesc {
                    next: Next::Pos(0),
                    ..w(good, 8)
                },
            ],
        ),
        (
            "nested indirect table",
            vec![RawDesc {
                addr: table,
                len: 16,
                flags: VRING_DESC_F_INDIRECT,
                next: Next::End,
            }],
        ),
        (
            "indirect table of odd length",
            vec![RawDesc {
                addr: table,
                len: 15,
                flags: VRING_DESC_F_INDIRECT,
                next: Next::End,
            }],
        ),
    ];

    for (what, descs) in cases {
        let vq = s.queue(0).unwrap();
        let head = vq.add_raw(&descs).unwrap();
        vq.kick().unwrap();
        let used = vq
            .wait_used(WAIT)
            .unwrap_or_else(|e| panic!("{what}: not answered: {e}"));
        assert_eq!(used[0].head, head, "{what}");
        // A loop is cut off by the queue size and a dangling `next` ends the
        // chain, so those may get their valid buffers filled; the rest get nothing.
        match what {
            "descriptor loop" => assert!(used[0].len <= 4096, "{what}"),
            "next index outside the table" => assert!(used[0].len <= 8, "{what}"),
            _ => assert_eq!(used[0].len, 0, "{what}"),
        }
        assert_eq!(
            request(&mut s, Chain::new().writable(good, 64)).len,
            64,
            "after {what}"
        );
    }
    assert_eq!(d.stderr_text().matches("panicked").count(), 0);
}

#[test]
fn bogus_avail_head_is_skipped_and_the_next_request_is_served() {
    let mut d = daemon(&[]);
    let mut s = session(&d);
    let buf = s.ram().alloc(64, 8).unwrap();
    let vq = s.queue(0).unwrap();
    vq.add_bogus_head(60_000).unwrap();
    let good = vq.add(&Chain::new().writable(buf, 64)).unwrap();

    vq.kick().unwrap();
    let used = vq
        .wait_used(WAIT)
        .expect("the request after the bogus head is served");

    assert_eq!(used.len(), 1);
    assert_eq!((used[0].head, used[0].len), (good, 64));
    assert!(
        d.try_wait().unwrap().is_none(),
        "daemon died: {}",
        d.stderr_text()
    );
}

#[test]
fn hundred_reconnects_leak_no_fds_or_threads() {
    let d = daemon(&[]);
    // A connected session that has completed a request: every setup message
    // has been handled, so the daemon holds exactly one connection's worth.
    let connected = |d: &DaemonProcess| {
        let mut s = session(d);
        let buf = s.ram().alloc(64, 8).unwrap();
        assert_eq!(request(&mut s, Chain::new().writable(buf, 64)).len, 64);
        s
    };
    let counts = |d: &DaemonProcess| (d.fd_count().unwrap(), d.thread_count().unwrap());
    drop(connected(&d));
    let probe = connected(&d);
    let baseline = counts(&d);
    drop(probe);

    for _ in 0..100 {
        drop(connected(&d));
    }
    let _probe = connected(&d);

    // The old connections are torn down before or while the probe is served:
    // wait for the counts to come back (the bound is only a safety net).
    let settled = wait_until(WAIT, || counts(&d) == baseline);
    assert!(
        settled,
        "fds and threads {:?}, {baseline:?} before the reconnects",
        counts(&d)
    );
}

#[test]
fn idle_daemon_uses_no_cpu() {
    let d = daemon(&["--max-bytes", "10", "--period", "100000"]);
    let mut s = session(&d);
    let buf = s.ram().alloc(64, 8).unwrap();
    assert_eq!(request(&mut s, Chain::new().writable(buf, 64)).len, 10);
    // A request parked on an exhausted quota must not spin either.
    let vq = s.queue(0).unwrap();
    vq.add(&Chain::new().writable(buf, 64)).unwrap();
    vq.kick().unwrap();

    let spent = d.cpu_ticks_over(IDLE_WINDOW).unwrap();

    // See IDLE_TICKS_MAX for why a few ticks are allowed.
    assert!(
        spent <= IDLE_TICKS_MAX,
        "idle daemon used {spent} ticks in {IDLE_WINDOW:?}"
    );
    assert!(vq.take_used().unwrap().is_empty(), "quota was not applied");
}

#[test]
fn sigterm_ends_the_daemon_with_a_connected_front_end_and_removes_the_socket() {
    let mut d = daemon(&[]);
    let _s = session(&d);
    let socket = d.socket.clone();

    d.signal(Signal::SIGTERM).unwrap();
    // How fast is a benchmark question; here only that it ends (WAIT is a
    // safety bound for a hung daemon).
    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");

    assert!(status.success(), "{}", DaemonProcess::describe(status));
    assert!(!socket.exists(), "socket file left behind");
}

#[test]
fn sigint_ends_an_idle_daemon() {
    let mut d = daemon(&[]);
    d.signal(Signal::SIGINT).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");
    assert!(status.success());
}

#[test]
fn inherited_socket_fd_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut d =
        DaemonProcess::spawn_with_fd3(Path::new(BIN), listener.as_raw_fd(), ["--socket-fd", "3"])
            .unwrap();

    let mut s = Session::start(&path, &Options::default()).unwrap();
    let buf = s.ram().alloc(64, 8).unwrap();
    assert_eq!(request(&mut s, Chain::new().writable(buf, 64)).len, 64);
    drop(s);
    d.signal(Signal::SIGTERM).unwrap();
    assert!(d.wait_timeout(WAIT).unwrap().is_some_and(|s| s.success()));
    // The daemon did not create the path, so it leaves it alone.
    assert!(path.exists());
}

#[test]
fn socket_fd_that_is_not_a_listening_socket_is_refused() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let fd = OwnedFd::from(file);
    let mut d = DaemonProcess::spawn_with_fd3(Path::new(BIN), fd.as_raw_fd(), ["--socket-fd", "3"])
        .unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");
    assert!(!status.success());
    assert!(
        d.stderr_text().contains("--socket-fd 3"),
        "{}",
        d.stderr_text()
    );
    drop(fd);
}

#[test]
fn missing_source_is_a_startup_error_naming_the_path() {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--socket-path",
        "x.sock",
        "--rng-source",
        "/nonexistent/entropy",
    ]);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");

    assert!(!status.success());
    assert!(
        d.stderr_text().contains("/nonexistent/entropy"),
        "{}",
        d.stderr_text()
    );
    assert!(!d.dir().join("x.sock").exists());
}

#[test]
fn source_that_ends_closes_the_connection_and_the_socket_serves_the_next_front_end() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("ten-bytes");
    std::fs::write(&seed, [1u8; 10]).unwrap();
    let mut d = daemon(&["--rng-source", seed.to_str().unwrap()]);
    let mut s = session(&d);
    let buf = s.ram().alloc(64, 8).unwrap();
    assert_eq!(request(&mut s, Chain::new().writable(buf, 64)).len, 10);

    let vq = s.queue(0).unwrap();
    vq.add(&Chain::new().writable(buf, 64)).unwrap();
    vq.kick().unwrap();
    let deadline = Instant::now() + WAIT;
    while !d.stderr_text().contains("waiting for the next front end") {
        assert!(
            Instant::now() < deadline,
            "no failure logged: {}",
            d.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let err = d.stderr_text();
    assert!(err.contains("ten-bytes") && err.contains("ended"), "{err}");
    assert!(d.try_wait().unwrap().is_none(), "the process ended");
    assert!(
        s.stop_queue(0).is_err(),
        "the connection of the failed device stays open"
    );
    let mut next = session(&d);
    let buf = next.ram().alloc(64, 8).unwrap();
    assert_eq!(request(&mut next, Chain::new().writable(buf, 64)).len, 10);
}

#[test]
fn empty_fifo_source_parks_requests_until_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Hold the FIFO open for writing from the start (non-blocking open needs a reader,
    // so open read-write to avoid blocking here).
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let d = daemon(&["--rng-source", fifo.to_str().unwrap()]);
    let mut s = session(&d);
    let buf = s.ram().alloc(16, 8).unwrap();
    let vq = s.queue(0).unwrap();
    vq.add(&Chain::new().writable(buf, 16)).unwrap();
    vq.kick().unwrap();

    // While the FIFO is empty the request waits, and the daemon must not spin
    // (see IDLE_TICKS_MAX for the allowance).
    let spent = d.cpu_ticks_over(IDLE_WINDOW).unwrap();
    assert!(vq.take_used().unwrap().is_empty(), "served with no data");
    assert!(
        spent <= IDLE_TICKS_MAX,
        "spun while waiting for the source: {spent} ticks in {IDLE_WINDOW:?}"
    );

    std::io::Write::write_all(&mut writer, &[0x5A; 16]).unwrap();
    let used = vq.wait_used(WAIT).unwrap();

    assert_eq!(used[0].len, 16);
    assert_eq!(s.ram().read(buf, 16).unwrap(), vec![0x5A; 16]);
}

#[test]
fn print_capabilities_prints_backend_type() {
    let kind = vhost_device_test_frontend::process::capabilities_type(std::path::Path::new(BIN));

    assert_eq!(kind.unwrap(), "rng");
}

#[test]
fn second_daemon_on_a_live_socket_is_refused() {
    let d = daemon(&[]);
    let out = Command::new(BIN)
        .arg("--socket-path")
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

/// Use up most of a window's quota on `s` and return the state saved after
/// stopping the queue.
fn spend_and_save(s: &mut Session) -> Vec<u8> {
    let buf = s.ram().alloc(900, 8).unwrap();
    assert_eq!(request(s, Chain::new().writable(buf, 900)).len, 900);
    s.stop_queue(0).unwrap();
    s.save_state().expect("state saved")
}

#[test]
fn migrated_quota_keeps_the_window_spent_on_the_source() {
    let limit = ["--max-bytes", "1000", "--period", "3600000"];
    let a = daemon(&limit);
    let mut sa = session(&a);
    let blob = spend_and_save(&mut sa);
    let b = daemon(&limit);
    let mut sb = session(&b);

    sb.load_state(&blob).expect("destination takes the state");

    // 900 of 1000 bytes were spent in this hour on A: B serves 100 at most.
    let buf = sb.ram().alloc(4096, 8).unwrap();
    assert_eq!(request(&mut sb, Chain::new().writable(buf, 4096)).len, 100);
}

#[test]
fn corrupt_state_is_refused_and_the_source_keeps_serving() {
    let a = daemon(&[]);
    let mut sa = session(&a);
    let mut blob = spend_and_save(&mut sa);
    let mid = blob.len() / 2;
    blob[mid] ^= 0xFF;
    let b = daemon(&[]);
    let mut sb = session(&b);

    let refused = sb.load_state(&blob);

    assert!(refused.is_err(), "a corrupt state was accepted");
    assert!(b.stderr_text().contains("corrupt"), "{}", b.stderr_text());
    // The source is unharmed: it serves its next front end.
    drop(sa);
    let mut again = session(&a);
    let buf = again.ram().alloc(64, 8).unwrap();
    assert_eq!(request(&mut again, Chain::new().writable(buf, 64)).len, 64);
}

#[test]
fn state_of_another_device_type_is_refused_naming_it() {
    let a = daemon(&[]);
    let b = daemon(&[]);
    let mut sb = session(&b);
    let mut sa = session(&a);
    let mut blob = spend_and_save(&mut sa);
    // Same envelope, another device's name (same length keeps it well-formed
    // up to the checksum, which then no longer matches: either refusal names
    // the problem).
    let at = blob
        .windows(16)
        .position(|w| w == b"vhost-device-rng")
        .unwrap();
    blob[at..at + 16].copy_from_slice(b"vhost-device-xyz");

    assert!(sb.load_state(&blob).is_err());
    let log = b.stderr_text();
    assert!(
        log.contains("corrupt") || log.contains("vhost-device-xyz"),
        "{log}"
    );
}

#[test]
fn ready_is_sent_to_notify_socket_once_listening() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "dev.sock"])
        .env("NOTIFY_SOCKET", &notify);
    let d = DaemonProcess::spawn(cmd).unwrap();

    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("READY=1 arrives");

    assert_eq!(&buf[..n], b"READY=1");
    assert!(
        d.dir().join("dev.sock").exists(),
        "READY sent before the socket listens"
    );
}

#[test]
fn requests_held_over_quota_move_with_a_migration_and_are_filled_exactly_once() {
    let a = daemon(&["--max-bytes", "100", "--period", "3600000"]);
    let b = daemon(&[]);
    let mut s = session(&a);
    let mut heads = Vec::new();
    for _ in 0..5 {
        let buf = s.ram().alloc(64, 8).unwrap();
        heads.push(
            s.queue(0)
                .unwrap()
                .add(&Chain::new().writable(buf, 64))
                .unwrap(),
        );
    }
    s.queue(0).unwrap().kick().unwrap();
    // A fills 64 + 36 bytes of its quota and holds the other three.
    let mut on_a = Vec::new();
    while on_a.len() < 2 {
        on_a.extend(s.queue(0).unwrap().wait_used(WAIT).expect("A answers"));
    }
    assert_eq!(on_a.iter().map(|u| u.len).collect::<Vec<_>>(), vec![64, 36]);

    s.migrate(&b.socket, &Options::default())
        .expect("migrates to B");
    let mut on_b = Vec::new();
    while on_b.len() < 3 {
        on_b.extend(
            s.queue(0)
                .unwrap()
                .wait_used(WAIT)
                .expect("B fills the held requests"),
        );
    }

    // B has no limit: each held request gets all 64 bytes, and no head twice.
    assert!(on_b.iter().all(|u| u.len == 64), "{on_b:?}");
    let mut all: Vec<u16> = on_a.iter().chain(&on_b).map(|u| u.head).collect();
    all.sort_unstable();
    heads.sort_unstable();
    assert_eq!(all, heads);
}
