// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The real `vhost-device-rtc` binary, driven over its socket by the test
//! front end: every request, bad clock ids, alarms fired end to end,
//! notifications waiting for buffers and cancelled by a disable, malformed
//! chains, reconnects, signals, idle CPU, and device state moved between two
//! daemons with a held alarmq buffer and an armed alarm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use vhost_device_common::vhost::vhost_user::VhostUserFrontend;
use vhost_device_common::vhost::{VhostBackend, VringConfigData};
use vhost_device_rtc::host::linux::LinuxClock;
use vhost_device_rtc::host::{HostClock, Source};
use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::virtqueue::Virtqueue;
use vhost_device_test_frontend::virtqueue::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
use vhost_device_test_frontend::{Chain, Next, Options, RawDesc, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-rtc");
/// A safety bound for anything the daemon should do at once.
const WAIT: Duration = Duration::from_secs(10);
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

// Status codes and clock ids of the default set.
const OK: u8 = 0;
const EOPNOTSUPP: u8 = 2;
const ENODEV: u8 = 3;
const EINVAL: u8 = 4;
const UTC: u16 = 0;
const TAI: u16 = 1;
const MONOTONIC: u16 = 2;
const BOOTTIME: u16 = 3;

fn daemon(args: &[&str]) -> DaemonProcess {
    DaemonProcess::start(Path::new(BIN), args).expect("daemon starts")
}

/// The host's own reading of a clock, the way the daemon reads it.
fn host_now(source: Source) -> u64 {
    LinuxClock::open(source, 37).unwrap().now().unwrap()
}

fn msg(t: u16, body: &[u8]) -> Vec<u8> {
    let mut v = t.to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(body);
    v
}

fn clock_body(clock: u16) -> Vec<u8> {
    let mut v = clock.to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 6]);
    v
}

fn m_read(clock: u16) -> Vec<u8> {
    msg(0x0001, &clock_body(clock))
}
fn m_read_cross(clock: u16, counter: u8) -> Vec<u8> {
    let mut b = clock_body(clock);
    b[2] = counter;
    msg(0x0002, &b)
}
fn m_cfg() -> Vec<u8> {
    msg(0x1000, &[])
}
fn m_clock_cap(clock: u16) -> Vec<u8> {
    msg(0x1001, &clock_body(clock))
}
fn m_cross_cap(clock: u16, counter: u8) -> Vec<u8> {
    let mut b = clock_body(clock);
    b[2] = counter;
    msg(0x1002, &b)
}
fn m_read_alarm(clock: u16) -> Vec<u8> {
    msg(0x1003, &clock_body(clock))
}
fn m_set_alarm(clock: u16, time: u64, enabled: bool) -> Vec<u8> {
    let mut b = time.to_le_bytes().to_vec();
    b.extend_from_slice(&clock.to_le_bytes());
    b.push(u8::from(enabled));
    b.extend_from_slice(&[0; 5]);
    msg(0x1004, &b)
}
fn m_set_alarm_enabled(clock: u16, enabled: bool) -> Vec<u8> {
    let mut b = clock_body(clock);
    b[2] = u8::from(enabled);
    msg(0x1005, &b)
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// A front end with a request buffer pair and alarmq buffers.
struct Client {
    s: Session,
    req: u64,
    resp: u64,
    /// alarmq buffers in flight, by head.
    alarm_bufs: HashMap<u16, u64>,
}

impl Client {
    fn new(d: &DaemonProcess) -> Self {
        Self::with_options(d, &Options::default())
    }

    fn with_options(d: &DaemonProcess, opts: &Options) -> Self {
        let s = Session::start(&d.socket, opts).expect("front end connects");
        let req = s.ram().alloc(256, 8).unwrap();
        let resp = s.ram().alloc(256, 8).unwrap();
        Self {
            s,
            req,
            resp,
            alarm_bufs: HashMap::new(),
        }
    }

    /// Send `request` with an `out`-byte response buffer; (used len, bytes written).
    fn call(&mut self, request: &[u8], out: u32) -> (u32, Vec<u8>) {
        self.call_chain(request, |c, req, resp| {
            c.readable(req, u32::try_from(request.len()).unwrap())
                .writable(resp, out)
        })
    }

    fn call_chain(
        &mut self,
        request: &[u8],
        build: impl FnOnce(Chain, u64, u64) -> Chain,
    ) -> (u32, Vec<u8>) {
        self.s.ram().write(self.req, request).unwrap();
        self.s.ram().write(self.resp, &[0xAA; 256]).unwrap();
        let chain = build(Chain::new(), self.req, self.resp);
        let vq = self.s.queue(0).unwrap();
        let head = vq.add(&chain).unwrap();
        vq.kick().unwrap();
        let used = vq.wait_used(WAIT).expect("request answered");
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].head, head);
        let len = used[0].len;
        (len, self.s.ram().read(self.resp, len as usize).unwrap())
    }

    /// An OK response of exactly `size` bytes: its body.
    fn ok(&mut self, request: &[u8], size: u32) -> Vec<u8> {
        let (len, out) = self.call(request, 64);
        assert_eq!(out.first(), Some(&OK), "status of {request:?}: {out:?}");
        assert_eq!(len, size, "used length of {request:?}");
        assert_eq!(&out[1..8], &[0; 7], "reserved bytes of the head");
        out[8..].to_vec()
    }

    /// The status of an error response (its used length must be the head's 8).
    fn status(&mut self, request: &[u8]) -> u8 {
        let (len, out) = self.call(request, 64);
        assert_eq!(len, 8, "used length of an error for {request:?}: {out:?}");
        out[0]
    }

    fn read(&mut self, clock: u16) -> u64 {
        le64(&self.ok(&m_read(clock), 16))
    }

    fn set_alarm(&mut self, clock: u16, time: u64, enabled: bool) {
        self.ok(&m_set_alarm(clock, time, enabled), 8);
    }

    /// Post `n` alarmq buffers of 16 bytes.
    fn post_alarm_buffers(&mut self, n: usize) {
        for _ in 0..n {
            let buf = self.s.ram().alloc(16, 8).unwrap();
            self.s.ram().write(buf, &[0xAA; 16]).unwrap();
            let vq = self.s.queue(1).unwrap();
            let head = vq.add(&Chain::new().writable(buf, 16)).unwrap();
            self.alarm_bufs.insert(head, buf);
        }
        self.s.queue(1).unwrap().kick().unwrap();
    }

    /// Wait until the device has taken `n` alarmq buffers off the ring (it
    /// publishes `avail_event` = `n` once it has seen them, EVENT_IDX).
    fn wait_taken(&mut self, n: u16) {
        let deadline = std::time::Instant::now() + WAIT;
        while self.s.queue(1).unwrap().avail_event().unwrap() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the device did not take the alarmq buffers"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Wait for alarm notifications: their clock ids, in order.
    fn notifications(&mut self, timeout: Duration) -> Vec<u16> {
        let used = self
            .s
            .queue(1)
            .unwrap()
            .wait_used(timeout)
            .expect("an alarm notification");
        used.iter()
            .map(|u| {
                assert_eq!(u.len, 16, "notification length");
                let buf = self.alarm_bufs.remove(&u.head).unwrap();
                let n = self.s.ram().read(buf, 16).unwrap();
                assert_eq!(&n[..2], &0x2000u16.to_le_bytes(), "msg_type");
                assert_eq!(&n[2..8], &[0; 6]);
                assert_eq!(&n[10..], &[0; 6]);
                u16::from_le_bytes([n[8], n[9]])
            })
            .collect()
    }

    /// No notification within `d` (for checks that something did not
    /// happen). A signal left over from notifications already taken may
    /// wake the wait early; only a used entry counts.
    fn no_notification(&mut self, d: Duration) -> bool {
        let vq = self.s.queue(1).unwrap();
        let deadline = std::time::Instant::now() + d;
        loop {
            if !vq.take_used().unwrap().is_empty() {
                return false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            vq.wait_call(left).unwrap();
        }
    }
}

// --------------------------------------------------------------- requests

#[test]
fn cfg_reports_the_four_default_clocks() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    let body = c.ok(&m_cfg(), 16);

    assert_eq!(body, [4, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn clock_cap_of_the_default_clocks_gives_types_and_alarms() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    let caps: Vec<Vec<u8>> = (0..4).map(|id| c.ok(&m_clock_cap(id), 16)).collect();

    // type, smearing, flags (ALARM_CAP), reserved
    assert_eq!(caps[0], [3, 0, 1, 0, 0, 0, 0, 0], "utc-smeared");
    assert_eq!(caps[1], [1, 0, 1, 0, 0, 0, 0, 0], "tai");
    assert_eq!(caps[2], [2, 0, 1, 0, 0, 0, 0, 0], "monotonic");
    assert_eq!(caps[3], [2, 0, 1, 0, 0, 0, 0, 0], "boottime");
}

#[test]
fn read_of_each_clock_is_taken_between_two_host_readings_of_that_clock() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    for (clock, source) in [
        (UTC, Source::Realtime),
        (TAI, Source::Tai),
        (MONOTONIC, Source::Monotonic),
        (BOOTTIME, Source::Boottime),
    ] {
        let before = host_now(source);
        let reading = c.read(clock);
        let after = host_now(source);

        assert!(
            before <= reading && reading <= after,
            "{source:?}: {before} <= {reading} <= {after} fails"
        );
    }
}

#[test]
fn tai_reads_the_tai_offset_ahead_of_utc() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    let utc = c.read(UTC);
    let tai = c.read(TAI);

    let offset = (tai - utc + S / 2) / S;
    let kernel = LinuxClock::kernel_tai_offset_s().unwrap();
    assert_eq!(offset, if kernel == 0 { 37 } else { kernel });
}

#[test]
fn reads_of_a_monotonic_clock_never_go_backwards() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    let readings: Vec<u64> = (0..200).map(|_| c.read(MONOTONIC)).collect();

    assert!(readings.windows(2).all(|w| w[0] <= w[1]), "{readings:?}");
}

#[test]
fn cross_cap_of_a_known_counter_is_ok_with_no_flag() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    for counter in [0u8, 1] {
        assert_eq!(c.ok(&m_cross_cap(UTC, counter), 16), [0; 8]);
    }
}

#[test]
fn unknown_counters_and_read_cross_are_eopnotsupp() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    assert_eq!(c.status(&m_cross_cap(UTC, 7)), EOPNOTSUPP);
    assert_eq!(c.status(&m_cross_cap(UTC, 0xF0)), EOPNOTSUPP);
    assert_eq!(c.status(&m_read_cross(UTC, 1)), EOPNOTSUPP);
}

#[test]
fn invalid_counter_is_einval() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    assert_eq!(c.status(&m_cross_cap(UTC, 0xFF)), EINVAL);
}

#[test]
fn alarm_requests_answer_with_their_exact_sizes() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    let at = host_now(Source::Realtime) + 3600 * S;

    c.set_alarm(UTC, at, true);
    let alarm = c.ok(&m_read_alarm(UTC), 24);
    c.ok(&m_set_alarm_enabled(UTC, false), 8);
    let after = c.ok(&m_read_alarm(UTC), 24);

    assert_eq!(le64(&alarm), at);
    assert_eq!(&alarm[8..], &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(le64(&after), at, "disabling changed the time");
    assert_eq!(after[8], 0);
}

#[test]
fn every_request_naming_a_missing_clock_is_enodev() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    for clock in [4u16, 1000, u16::MAX] {
        for request in [
            m_read(clock),
            m_read_cross(clock, 1),
            m_clock_cap(clock),
            m_cross_cap(clock, 1),
            m_read_alarm(clock),
            m_set_alarm(clock, 0, true),
            m_set_alarm_enabled(clock, true),
        ] {
            assert_eq!(c.status(&request), ENODEV, "{request:?}");
        }
    }
}

#[test]
fn unknown_message_type_is_eopnotsupp() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    for t in [0u16, 0x0003, 0x1006, 0x2000, 0xFFFF] {
        assert_eq!(c.status(&msg(t, &[0; 16])), EOPNOTSUPP, "type {t:#x}");
    }
}

#[test]
fn short_request_reserved_bytes_and_bad_flags_are_einval() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    let mut reserved = m_read(UTC);
    reserved[4] = 1;
    let mut flags = m_set_alarm(UTC, 0, true);
    flags[18] = 0x80;

    assert_eq!(c.status(&m_read(UTC)[..10]), EINVAL);
    assert_eq!(c.status(&m_set_alarm(UTC, 0, true)[..20]), EINVAL);
    assert_eq!(c.status(&[0x01]), EINVAL);
    assert_eq!(c.status(&reserved), EINVAL);
    assert_eq!(c.status(&flags), EINVAL);
}

#[test]
fn response_buffer_too_small_is_einval_in_the_head_that_fits() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    let (len, out) = c.call(&m_read_alarm(UTC), 16);
    let (len2, out2) = c.call(&m_read(UTC), 4);

    assert_eq!((len, out[0]), (8, EINVAL));
    assert_eq!((len2, out2), (4, vec![EINVAL, 0, 0, 0]));
}

#[test]
fn extra_space_on_both_sides_is_ignored() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    let mut request = m_cfg();
    request.extend_from_slice(&[0x55; 100]);

    let (len, out) = c.call(&request, 200);

    assert_eq!(len, 16);
    assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn request_split_over_many_descriptors_and_indirect_is_answered() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    let request = m_set_alarm(MONOTONIC, u64::MAX, false);

    let (len, out) = c.call_chain(&request, |ch, req, resp| {
        let mut ch = ch;
        for i in 0..6u64 {
            ch = ch.readable(req + i * 4, 4);
        }
        ch.writable_split(resp, 24, 5).indirect()
    });
    let (len2, out2) = c.call_chain(&m_read_alarm(MONOTONIC), |ch, req, resp| {
        ch.readable(req, 3)
            .readable(req + 3, 13)
            .writable_split(resp, 24, 24)
    });

    assert_eq!((len, out[0]), (8, OK));
    assert_eq!((len2, out2[0]), (24, OK));
    assert_eq!(le64(&out2[8..]), u64::MAX);
}

// ------------------------------------------------------------------ alarms

#[test]
fn alarm_fires_end_to_end_not_before_its_time() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(4);
    let at = c.read(MONOTONIC) + 100 * MS;

    c.set_alarm(MONOTONIC, at, true);
    let clocks = c.notifications(WAIT);
    let now = host_now(Source::Monotonic);

    assert_eq!(clocks, vec![MONOTONIC]);
    assert!(now >= at, "notified {} ns early", at - now);
    assert!(
        c.read(MONOTONIC) >= at,
        "a read after the notification is before the alarm"
    );
}

#[test]
fn alarm_of_every_clock_fires_including_tai_through_realtime() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(8);

    for clock in [UTC, TAI, MONOTONIC, BOOTTIME] {
        let at = c.read(clock) + 50 * MS;
        c.set_alarm(clock, at, true);
        assert_eq!(c.notifications(WAIT), vec![clock]);
        assert!(
            c.read(clock) >= at,
            "clock {clock} notified before its alarm"
        );
    }
}

#[test]
fn alarm_in_the_past_notifies_at_once() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(2);

    c.set_alarm(UTC, 1, true);

    assert_eq!(c.notifications(WAIT), vec![UTC]);
}

#[test]
fn expired_alarm_stays_enabled_and_fires_again_when_enabled_again() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(2);
    c.set_alarm(BOOTTIME, 1, true);
    assert_eq!(c.notifications(WAIT), vec![BOOTTIME]);

    let alarm = c.ok(&m_read_alarm(BOOTTIME), 24);
    c.ok(&m_set_alarm_enabled(BOOTTIME, true), 8);

    assert_eq!(alarm[8], 1, "the alarm disabled itself");
    assert_eq!(c.notifications(WAIT), vec![BOOTTIME]);
}

#[test]
fn notification_waits_for_a_buffer() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.set_alarm(TAI, 1, true);

    c.post_alarm_buffers(1);

    assert_eq!(c.notifications(WAIT), vec![TAI]);
}

#[test]
fn notifications_waiting_for_buffers_come_in_expiry_order_one_per_clock() {
    // BOOTTIME expires, UTC expires, BOOTTIME expires again: its first
    // notification is obsolete and the new one comes after UTC's.
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.set_alarm(BOOTTIME, 1, true);
    c.set_alarm(UTC, 1, true);
    c.ok(&m_set_alarm_enabled(BOOTTIME, true), 8);

    c.post_alarm_buffers(3);
    let mut got = c.notifications(WAIT);
    while got.len() < 2 {
        got.extend(c.notifications(WAIT));
    }

    assert_eq!(got, vec![UTC, BOOTTIME]);
    assert!(
        c.no_notification(Duration::from_millis(200)),
        "a third notification"
    );
}

#[test]
fn disable_cancels_a_pending_notification() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.set_alarm(UTC, 1, true);
    c.ok(&m_set_alarm_enabled(UTC, false), 8);

    c.post_alarm_buffers(1);
    // The next expiry proves the buffer was free: the disabled one never came.
    c.set_alarm(MONOTONIC, 1, true);

    assert_eq!(c.notifications(WAIT), vec![MONOTONIC]);
}

#[test]
fn new_future_alarm_time_cancels_a_pending_notification() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.set_alarm(UTC, 1, true);
    c.set_alarm(UTC, host_now(Source::Realtime) + 3600 * S, true);

    c.post_alarm_buffers(1);
    c.set_alarm(TAI, 1, true);

    assert_eq!(c.notifications(WAIT), vec![TAI]);
}

#[test]
fn disabled_alarm_does_not_fire_at_its_time() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(1);
    let at = c.read(MONOTONIC) + 50 * MS;
    c.set_alarm(MONOTONIC, at, true);
    c.ok(&m_set_alarm_enabled(MONOTONIC, false), 8);

    // Well past its time, another clock's expiry takes the only buffer.
    while host_now(Source::Monotonic) < at + 50 * MS {
        std::thread::sleep(Duration::from_millis(10));
    }
    c.set_alarm(BOOTTIME, 1, true);

    assert_eq!(c.notifications(WAIT), vec![BOOTTIME]);
}

#[test]
fn without_the_alarm_feature_alarm_requests_are_enodev_and_no_clock_has_an_alarm() {
    let d = daemon(&["--no-alarm"]);
    let mut c = Client::new(&d);

    assert_eq!(c.s.device_features & 1, 0, "VIRTIO_RTC_F_ALARM offered");
    assert_eq!(c.ok(&m_clock_cap(UTC), 16)[2], 0);
    assert_eq!(c.status(&m_read_alarm(UTC)), ENODEV);
    assert_eq!(c.status(&m_set_alarm(UTC, 1, true)), ENODEV);
    assert_eq!(c.status(&m_set_alarm_enabled(UTC, true)), ENODEV);
}

#[test]
fn driver_that_declines_the_alarm_feature_gets_enodev() {
    let d = daemon(&[]);
    let opts = Options {
        accept_features: !1,
        ..Options::default()
    };
    let mut c = Client::with_options(&d, &opts);

    assert_eq!(c.ok(&m_clock_cap(UTC), 16)[2], 0);
    assert_eq!(c.status(&m_set_alarm(UTC, 1, true)), ENODEV);
}

#[test]
fn clock_without_an_alarm_answers_alarm_requests_with_enodev() {
    let d = daemon(&["--clock", "utc-smeared,alarm=off", "--clock", "monotonic"]);
    let mut c = Client::new(&d);

    assert_eq!(c.ok(&m_clock_cap(0), 16), [3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(c.status(&m_read_alarm(0)), ENODEV);
    assert_eq!(c.ok(&m_read_alarm(1), 24)[8], 0);
}

// ------------------------------------------------------- malformed chains

#[test]
fn malformed_chains_are_answered_and_the_queue_keeps_serving() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    let end = c.s.ram().end();
    let good = c.s.ram().alloc(64, 8).unwrap();
    let table =
        c.s.queue(0)
            .unwrap()
            .write_indirect_table(&[RawDesc {
                addr: good,
                len: 16,
                flags: VRING_DESC_F_INDIRECT,
                next: Next::End,
            }])
            .unwrap();
    let w = |addr, len| RawDesc {
        addr,
        len,
        flags: VRING_DESC_F_WRITE,
        next: Next::End,
    };
    let cases: Vec<(&str, Vec<RawDesc>)> = vec![
        ("address past the end of memory", vec![w(end + 4096, 64)]),
        ("buffer running off the end", vec![w(end - 16, 64)]),
        ("address that overflows", vec![w(u64::MAX - 8, 64)]),
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
    ];

    // On the alarmq a loop is cut at the queue size into a chain of 256
    // writable descriptors: a usable (if odd) buffer, held like any other.
    for (queue, what, descs) in cases
        .iter()
        .flat_map(|(w, d)| [(0usize, w, d), (1usize, w, d)])
        .filter(|(q, w, _)| !(*q == 1 && **w == "descriptor loop"))
    {
        let vq = c.s.queue(queue).unwrap();
        let head = vq.add_raw(descs).unwrap();
        vq.kick().unwrap();
        let used = vq
            .wait_used(WAIT)
            .unwrap_or_else(|e| panic!("queue {queue}, {what}: not answered: {e}"));
        assert_eq!(used[0].head, head, "{what}");
        assert!(
            used[0].len <= 8,
            "queue {queue}, {what}: used {}",
            used[0].len
        );
        assert_eq!(c.ok(&m_cfg(), 16)[0], 4, "after {what}");
    }
    assert_eq!(d.stderr_text().matches("panicked").count(), 0);
}

#[test]
fn random_requests_get_a_valid_status_and_the_daemon_keeps_serving() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let types = [
        0x0001u16, 0x0002, 0x1000, 0x1001, 0x1002, 0x1003, 0x1004, 0x1005, 0x2000, 0x4242,
    ];

    for _ in 0..500 {
        let r = next();
        let mut request: Vec<u8> = (0..(r % 33)).map(|_| (next() & 0xFF) as u8).collect();
        if request.len() >= 2 {
            let t = types[(r >> 8) as usize % types.len()];
            request[..2].copy_from_slice(&t.to_le_bytes());
            // Mostly valid clock ids and zero reserved bytes, so that requests
            // reach the clocks as well as the parser.
            if r & 0x1_0000 != 0 {
                for b in request.iter_mut().skip(2).take(6) {
                    *b = 0;
                }
                if request.len() >= 16 {
                    request[8] = (next() % 5) as u8;
                    request[9] = 0;
                    for b in request.iter_mut().skip(11).take(5) {
                        *b = 0;
                    }
                }
            }
        }
        if request.is_empty() {
            request.push(0);
        }
        let out = u32::try_from(next() % 33).unwrap();

        let (len, resp) = c.call(&request, out);

        assert!(len <= out, "{request:?}: used {len} of {out}");
        if len > 0 {
            assert!(
                [0, 2, 3, 4, 5].contains(&resp[0]),
                "{request:?}: status {}",
                resp[0]
            );
            if resp[0] != 0 {
                assert_eq!(len, out.min(8), "{request:?}: error length");
            }
        }
    }
    assert_eq!(c.ok(&m_cfg(), 16)[0], 4);
    assert_eq!(d.stderr_text().matches("panicked").count(), 0);
}

#[test]
fn alarmq_buffer_too_small_is_used_empty_and_the_next_one_is_notified() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    let small = c.s.ram().alloc(8, 8).unwrap();
    let vq = c.s.queue(1).unwrap();
    let head = vq.add(&Chain::new().writable(small, 15)).unwrap();
    vq.kick().unwrap();

    let used = vq.wait_used(WAIT).expect("the small buffer is returned");
    c.post_alarm_buffers(1);
    c.set_alarm(UTC, 1, true);

    assert_eq!((used[0].head, used[0].len), (head, 0));
    assert_eq!(c.notifications(WAIT), vec![UTC]);
}

#[test]
fn request_with_no_writable_buffer_is_used_empty() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);

    let (len, _) = c.call_chain(&m_cfg(), |ch, req, _| ch.readable(req, 8));

    assert_eq!(len, 0);
    assert_eq!(c.ok(&m_cfg(), 16)[0], 4);
}

#[test]
fn bogus_avail_head_does_not_kill_the_daemon() {
    let mut d = daemon(&[]);
    {
        let mut c = Client::new(&d);
        for q in 0..2 {
            let vq = c.s.queue(q).unwrap();
            vq.add_bogus_head(60_000).unwrap();
            vq.kick().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        d.try_wait().unwrap().is_none(),
        "daemon died: {}",
        d.stderr_text()
    );
    let mut c = Client::new(&d);
    assert_eq!(c.ok(&m_cfg(), 16)[0], 4);
}

#[test]
fn avail_index_far_ahead_does_not_make_the_daemon_spin() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    let (_, avail, _) = c.s.queue(1).unwrap().addresses();
    // 60000 buffers "available" on a 256-entry ring.
    c.s.ram()
        .write(avail + 2, &60_000u16.to_le_bytes())
        .unwrap();
    c.s.queue(1).unwrap().kick().unwrap();
    // The requestq still answers (same worker).
    assert_eq!(c.ok(&m_cfg(), 16)[0], 4);
    let before = d.cpu_ticks().unwrap();

    std::thread::sleep(Duration::from_secs(1));

    let spent = d.cpu_ticks().unwrap() - before;
    assert!(spent <= 1, "the daemon used {spent} ticks in 1 s");
}

// --------------------------------------------------- lifecycle, resources

#[test]
fn alarms_of_a_disconnected_front_end_do_not_reach_the_next() {
    let d = daemon(&[]);
    {
        let mut c = Client::new(&d);
        c.set_alarm(UTC, host_now(Source::Realtime) + 3600 * S, true);
        c.set_alarm(BOOTTIME, 1, true);
    }
    let mut c = Client::new(&d);

    assert_eq!(c.ok(&m_read_alarm(UTC), 24), [0; 16]);
    c.post_alarm_buffers(1);
    c.set_alarm(TAI, 1, true);
    assert_eq!(c.notifications(WAIT), vec![TAI]);
}

#[test]
fn hundred_reconnects_with_armed_alarms_leak_no_fds_or_threads() {
    let d = daemon(&[]);
    let round = |d: &DaemonProcess| {
        let mut c = Client::new(d);
        c.post_alarm_buffers(2);
        let at = c.read(MONOTONIC) + 3600 * S;
        c.set_alarm(MONOTONIC, at, true);
        assert_eq!(c.ok(&m_cfg(), 16)[0], 4);
    };
    round(&d);
    let (fds, threads) = settled(&d);

    for _ in 0..100 {
        round(&d);
    }

    // The last connection's teardown may still be under way: wait for the
    // counts to come back down (bounded), then compare.
    let deadline = std::time::Instant::now() + WAIT;
    let counts = || (d.fd_count().unwrap(), d.thread_count().unwrap());
    while counts() > (fds, threads) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (fds_after, threads_after) = counts();
    assert!(fds_after <= fds, "fd count grew from {fds} to {fds_after}");
    assert!(
        threads_after <= threads,
        "thread count grew from {threads} to {threads_after}"
    );
}

/// The daemon's fd and thread counts once a disconnect has been handled
/// (the same over 100 ms).
fn settled(d: &DaemonProcess) -> (usize, usize) {
    let deadline = std::time::Instant::now() + WAIT;
    let counts = || (d.fd_count().unwrap(), d.thread_count().unwrap());
    let mut last = counts();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = counts();
        if now == last || std::time::Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn daemon_with_armed_alarms_and_held_buffers_uses_no_cpu() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(16);
    for clock in [UTC, TAI, MONOTONIC, BOOTTIME] {
        let at = c.read(clock) + 3600 * S;
        c.set_alarm(clock, at, true);
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = d.cpu_ticks().unwrap();

    std::thread::sleep(Duration::from_secs(2));

    // A clock tick is 10 ms; one tick of slack for accounting granularity.
    let spent = d.cpu_ticks().unwrap() - before;
    assert!(spent <= 1, "idle daemon used {spent} ticks in 2 s");
}

#[test]
fn sigterm_ends_the_daemon_and_removes_the_socket() {
    let mut d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(1);
    let at = c.read(MONOTONIC) + 3600 * S;
    c.set_alarm(MONOTONIC, at, true);
    let socket = d.socket.clone();

    d.signal(Signal::SIGTERM).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");

    assert!(status.success(), "{}", DaemonProcess::describe(status));
    assert!(!socket.exists(), "socket file left behind");
}

#[test]
fn unusable_clock_options_are_a_startup_error_naming_the_clock() {
    let out = Command::new(BIN)
        .args([
            "--socket-path",
            "/tmp/never.sock",
            "--clock",
            "monotonic:realtime",
        ])
        .output()
        .unwrap();

    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("monotonic:realtime"), "{err}");
    assert!(!Path::new("/tmp/never.sock").exists());
}

#[test]
fn print_capabilities_names_the_rtc_type() {
    let kind = vhost_device_test_frontend::process::capabilities_type(std::path::Path::new(BIN));

    assert_eq!(kind.unwrap(), "rtc");
}

/// The vring configuration of `vq` for `SET_VRING_ADDR`.
fn vring_config(s: &Session, vq: &Virtqueue) -> VringConfigData {
    let (desc, avail, used) = vq.addresses();
    VringConfigData {
        queue_max_size: vq.size(),
        queue_size: vq.size(),
        flags: 0,
        desc_table_addr: s.ram().host_addr(desc).unwrap(),
        used_ring_addr: s.ram().host_addr(used).unwrap(),
        avail_ring_addr: s.ram().host_addr(avail).unwrap(),
        log_addr: None,
    }
}

/// Start ring `index` as `vq`, at `base`.
fn start_ring(s: &mut Session, index: usize, vq: &Virtqueue, base: u16) {
    let config = vring_config(s, vq);
    let fe = s.frontend();
    fe.set_vring_num(index, vq.size()).unwrap();
    fe.set_vring_base(index, base).unwrap();
    fe.set_vring_addr(index, &config).unwrap();
    fe.set_vring_kick(index, vq.kick_fd()).unwrap();
    fe.set_vring_call(index, vq.call_fd()).unwrap();
    fe.set_vring_enable(index, true).unwrap();
}

/// What QEMU does when the guest resets the device (a reboot): stop both
/// rings (`GET_VRING_BASE`), then set up new ones from index 0 — without
/// telling the back end anything else. Returns the new rings.
fn restart_rings(c: &mut Client) -> Vec<Virtqueue> {
    c.s.stop_queue(0).unwrap();
    c.s.stop_queue(1).unwrap();
    let event_idx = c.s.features & (1 << 29) != 0;
    (0..2)
        .map(|i| {
            let vq = Virtqueue::new(c.s.ram().clone(), 256, event_idx).unwrap();
            start_ring(&mut c.s, i, &vq, 0);
            vq
        })
        .collect()
}

/// One request on a ring of the test's own; the response bytes.
fn call_on(s: &Session, vq: &mut Virtqueue, m: &[u8], out: u32) -> Vec<u8> {
    let req = s.ram().alloc(64, 8).unwrap();
    let resp = s.ram().alloc(64, 8).unwrap();
    s.ram().write(req, m).unwrap();
    vq.add(
        &Chain::new()
            .readable(req, u32::try_from(m.len()).unwrap())
            .writable(resp, out),
    )
    .unwrap();
    vq.kick().unwrap();
    let used = vq
        .wait_used(WAIT)
        .expect("request answered on the new ring");
    s.ram().read(resp, used[0].len as usize).unwrap()
}

#[test]
fn guest_reset_drops_the_old_drivers_buffers_and_alarms_and_writes_nothing_into_them() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(2);
    c.wait_taken(2);
    let at = c.read(MONOTONIC) + 3600 * S;
    c.set_alarm(MONOTONIC, at, true);
    let old: Vec<u64> = c.alarm_bufs.values().copied().collect();

    let mut rings = restart_rings(&mut c);
    // The new driver's first request, an alarm in the past, then a buffer.
    let alarm = call_on(&c.s, &mut rings[0], &m_read_alarm(MONOTONIC), 24);
    call_on(&c.s, &mut rings[0], &m_set_alarm(UTC, 1, true), 8);
    let buf = c.s.ram().alloc(16, 8).unwrap();
    let head = rings[1].add(&Chain::new().writable(buf, 16)).unwrap();
    rings[1].kick().unwrap();
    let used = rings[1]
        .wait_used(WAIT)
        .expect("a notification on the new ring");

    assert_eq!(
        &alarm[..],
        &[0; 24],
        "the old driver's alarm survived the reset"
    );
    assert_eq!((used[0].head, used[0].len), (head, 16));
    assert_eq!(c.s.ram().read(buf + 8, 2).unwrap(), UTC.to_le_bytes());
    for b in old {
        assert_eq!(
            c.s.ram().read(b, 16).unwrap(),
            [0xAA; 16],
            "an old buffer was written"
        );
    }
    assert!(
        d.stderr_text().contains("set up anew"),
        "{}",
        d.stderr_text()
    );
}

#[test]
fn pause_and_resume_keeps_the_held_buffers_and_the_alarm() {
    let d = daemon(&[]);
    let mut c = Client::new(&d);
    c.post_alarm_buffers(1);
    c.wait_taken(1);
    let at = c.read(BOOTTIME) + 300 * MS;
    c.set_alarm(BOOTTIME, at, true);

    // QEMU's stop and cont: stop both rings, start them again where they were.
    c.s.stop_queues().unwrap();
    c.s.restart_queues().unwrap();

    assert_eq!(c.notifications(WAIT), vec![BOOTTIME]);
    assert!(host_now(Source::Boottime) >= at);
}

// --------------------------------------------------------------- migration

#[test]
fn armed_alarm_and_held_buffer_move_to_another_daemon_and_fire_there() {
    let a = daemon(&[]);
    let b = daemon(&[]);
    let mut c = Client::new(&a);
    c.post_alarm_buffers(1);
    c.wait_taken(1);
    let at = c.read(MONOTONIC) + 500 * MS;
    c.set_alarm(MONOTONIC, at, true);

    c.s.migrate(&b.socket, &Options::default())
        .expect("migrates");
    let clocks = c.notifications(WAIT);

    assert_eq!(clocks, vec![MONOTONIC]);
    assert!(host_now(Source::Monotonic) >= at, "fired early");
    assert_eq!(le64(&c.ok(&m_read_alarm(MONOTONIC), 24)), at);
    assert!(b.stderr_text().contains("1 alarms"), "{}", b.stderr_text());
}

#[test]
fn notification_pending_on_the_source_is_delivered_by_the_destination() {
    let a = daemon(&[]);
    let b = daemon(&[]);
    let mut c = Client::new(&a);
    c.post_alarm_buffers(1);
    c.wait_taken(1);
    c.s.stop_queue(1).unwrap();
    // The alarm expires while the alarmq is stopped: the notification waits.
    c.set_alarm(TAI, 1, true);

    c.s.migrate(&b.socket, &Options::default())
        .expect("migrates");

    assert_eq!(c.notifications(WAIT), vec![TAI]);
}

#[test]
fn state_of_a_daemon_with_other_clocks_is_refused_and_the_source_carries_on() {
    let a = daemon(&[]);
    let b = daemon(&["--clock", "utc"]);
    let mut c = Client::new(&a);
    c.post_alarm_buffers(1);
    c.wait_taken(1);
    let at = c.read(MONOTONIC) + 300 * MS;
    c.set_alarm(MONOTONIC, at, true);

    let refused = c.s.migrate(&b.socket, &Options::default());
    c.s.restart_queues().unwrap();

    assert!(refused.is_err(), "a state of other clocks was accepted");
    assert!(b.stderr_text().contains("--clock"), "{}", b.stderr_text());
    // The source kept its held buffer and its alarm (it saved copies).
    assert_eq!(c.notifications(WAIT), vec![MONOTONIC]);
    assert!(host_now(Source::Monotonic) >= at);
}
