// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device over scripted clocks: every request and status, alarms (in
//! the past, re-fire, disable, clock steps), monotonic readings, the
//! migration state, and the requestq on a real vring over test memory.

use super::*;
use crate::host::mock::{mock_clock, MockHandle};
use crate::host::HostConfig;
use vhost_device_common::testing::{TestQueue, BUFFERS};

const S: u64 = 1_000_000_000;
/// 2026-01-01 in ns since the epoch, a plausible wall-clock time.
const WALL: u64 = 1_767_225_600 * S;

struct Spec {
    clock_type: ClockType,
    source: Source,
    alarm: bool,
    now: u64,
}

fn spec(clock_type: ClockType, source: Source, now: u64) -> Spec {
    Spec {
        clock_type,
        source,
        alarm: true,
        now,
    }
}

fn config(s: &Spec) -> ClockConfig {
    ClockConfig {
        clock_type: s.clock_type,
        smearing: Smearing::Unspecified,
        host: HostConfig {
            source: s.source,
            tai_fallback_s: 37,
        },
        alarm: s.alarm,
    }
}

/// A device over mock clocks, with `VIRTIO_RTC_F_ALARM` negotiated when
/// `alarms`.
fn device_with(specs: Vec<Spec>, alarms: bool) -> (RtcDevice, Vec<MockHandle>) {
    let mut handles = Vec::new();
    let clocks = specs
        .iter()
        .map(|s| {
            let (c, h) = mock_clock(s.now, s.source.steps());
            handles.push(h);
            (config(s), Box::new(c) as Box<dyn HostClock>)
        })
        .collect();
    let dev = RtcDevice::with_clocks(clocks, alarms).unwrap();
    dev.acked_features(if alarms { 1 << VIRTIO_RTC_F_ALARM } else { 0 });
    (dev, handles)
}

/// The default set: utc-smeared (0), tai (1), monotonic (2), boottime (3).
fn device() -> (RtcDevice, Vec<MockHandle>) {
    device_with(
        vec![
            spec(ClockType::UtcSmeared, Source::Realtime, WALL),
            spec(ClockType::Tai, Source::Tai, WALL + 37 * S),
            spec(ClockType::Monotonic, Source::Monotonic, 100 * S),
            spec(ClockType::Monotonic, Source::Boottime, 200 * S),
        ],
        true,
    )
}

fn set_alarm(dev: &RtcDevice, clock: u16, time: u64, enabled: bool) -> Result<Response, Status> {
    dev.execute(Request::SetAlarm {
        clock,
        time,
        enabled,
    })
}

fn read(dev: &RtcDevice, clock: u16) -> u64 {
    match dev.execute(Request::Read { clock }) {
        Ok(Response::Read(v)) => v,
        other => panic!("READ {clock}: {other:?}"),
    }
}

// ---------------------------------------------------------------- requests

#[test]
fn cfg_reports_the_number_of_clocks() {
    let (dev, _) = device();

    assert_eq!(dev.execute(Request::Cfg), Ok(Response::Cfg(4)));
}

#[test]
fn read_returns_each_clocks_own_host_time() {
    let (dev, _) = device();

    let readings: Vec<u64> = (0..4).map(|c| read(&dev, c)).collect();

    assert_eq!(readings, vec![WALL, WALL + 37 * S, 100 * S, 200 * S]);
}

#[test]
fn every_request_naming_a_clock_past_the_last_is_enodev() {
    let (dev, _) = device();
    let requests = [
        Request::Read { clock: 4 },
        Request::ReadCross {
            clock: 4,
            counter: counter::X86_TSC,
        },
        Request::ClockCap { clock: 4 },
        Request::CrossCap {
            clock: 4,
            counter: counter::X86_TSC,
        },
        Request::ReadAlarm { clock: 4 },
        Request::SetAlarm {
            clock: u16::MAX,
            time: 0,
            enabled: true,
        },
        Request::SetAlarmEnabled {
            clock: 4,
            enabled: true,
        },
    ];

    for r in requests {
        assert_eq!(dev.execute(r), Err(Status::ENoDev), "{r:?}");
    }
}

#[test]
fn failing_host_clock_is_eio() {
    let (dev, h) = device();
    h[0].set_failing(true);

    assert_eq!(dev.execute(Request::Read { clock: 0 }), Err(Status::EIo));
    assert_eq!(set_alarm(&dev, 0, WALL + S, true), Err(Status::EIo));
}

#[test]
fn monotonic_readings_never_go_backwards_even_when_the_host_clock_does() {
    let (dev, h) = device();
    let first = read(&dev, 2);
    h[2].step_to(50 * S);

    let second = read(&dev, 2);
    h[2].step_to(150 * S);
    let third = read(&dev, 2);

    assert_eq!(second, first, "monotonic clock went back");
    assert_eq!(third, 150 * S);
}

#[test]
fn wall_clock_follows_a_host_step_backwards() {
    let (dev, h) = device();
    read(&dev, 0);
    h[0].step_to(WALL - 3600 * S);

    assert_eq!(read(&dev, 0), WALL - 3600 * S);
}

#[test]
fn clock_cap_reports_type_and_alarm_flag() {
    let (dev, _) = device();

    let caps: Vec<_> = (0..4)
        .map(|clock| dev.execute(Request::ClockCap { clock }).unwrap())
        .collect();

    let expect = |t: ClockType| Response::ClockCap {
        clock_type: t as u8,
        smearing: 0,
        flags: FLAG_ALARM_CAP,
    };
    assert_eq!(
        caps,
        vec![
            expect(ClockType::UtcSmeared),
            expect(ClockType::Tai),
            expect(ClockType::Monotonic),
            expect(ClockType::Monotonic)
        ]
    );
}

#[test]
fn clock_cap_has_no_alarm_flag_without_the_feature_or_the_clocks_alarm() {
    let (dev, _) = device_with(vec![spec(ClockType::Utc, Source::Realtime, WALL)], false);
    let mut no_alarm = spec(ClockType::Utc, Source::Realtime, WALL);
    no_alarm.alarm = false;
    let (dev2, _) = device_with(vec![no_alarm], true);

    for d in [&dev, &dev2] {
        assert!(matches!(
            d.execute(Request::ClockCap { clock: 0 }),
            Ok(Response::ClockCap { flags: 0, .. })
        ));
    }
}

#[test]
fn smearing_variant_is_reported_only_for_a_utc_smeared_clock() {
    let mut smeared = config(&spec(ClockType::UtcSmeared, Source::Realtime, WALL));
    smeared.smearing = Smearing::NoonLinear;
    let mut other = config(&spec(ClockType::Utc, Source::Realtime, WALL));
    other.smearing = Smearing::NoonLinear;
    let clocks = [smeared, other]
        .into_iter()
        .map(|c| (c, Box::new(mock_clock(WALL, true).0) as Box<dyn HostClock>))
        .collect();
    let dev = RtcDevice::with_clocks(clocks, false).unwrap();

    let smear = |clock| match dev.execute(Request::ClockCap { clock }) {
        Ok(Response::ClockCap { smearing, .. }) => smearing,
        other => panic!("{other:?}"),
    };

    assert_eq!((smear(0), smear(1)), (1, 0));
}

#[test]
fn cross_cap_for_a_known_counter_is_ok_without_the_flag() {
    let (dev, _) = device();

    for counter in [counter::ARM_VCT, counter::X86_TSC] {
        assert_eq!(
            dev.execute(Request::CrossCap { clock: 0, counter }),
            Ok(Response::CrossCap(0))
        );
    }
}

#[test]
fn cross_cap_for_an_unknown_counter_is_eopnotsupp() {
    let (dev, _) = device();

    for counter in [2, 0xF0, 0xFE] {
        assert_eq!(
            dev.execute(Request::CrossCap { clock: 0, counter }),
            Err(Status::EOpNotSupp)
        );
    }
}

#[test]
fn read_cross_is_eopnotsupp() {
    let (dev, _) = device();

    assert_eq!(
        dev.execute(Request::ReadCross {
            clock: 0,
            counter: counter::X86_TSC
        }),
        Err(Status::EOpNotSupp)
    );
}

#[test]
fn alarm_requests_without_the_feature_are_enodev() {
    let (dev, _) = device_with(vec![spec(ClockType::Utc, Source::Realtime, WALL)], false);

    assert_eq!(
        dev.execute(Request::ReadAlarm { clock: 0 }),
        Err(Status::ENoDev)
    );
    assert_eq!(set_alarm(&dev, 0, WALL + S, true), Err(Status::ENoDev));
    assert_eq!(
        dev.execute(Request::SetAlarmEnabled {
            clock: 0,
            enabled: true
        }),
        Err(Status::ENoDev)
    );
}

#[test]
fn alarm_requests_for_a_clock_without_an_alarm_are_enodev() {
    let mut s = spec(ClockType::Utc, Source::Realtime, WALL);
    s.alarm = false;
    let (dev, _) = device_with(vec![s], true);

    assert_eq!(
        dev.execute(Request::ReadAlarm { clock: 0 }),
        Err(Status::ENoDev)
    );
    assert_eq!(set_alarm(&dev, 0, WALL + S, true), Err(Status::ENoDev));
}

#[test]
fn alarm_starts_disabled_at_time_zero() {
    let (dev, _) = device();

    assert_eq!(
        dev.execute(Request::ReadAlarm { clock: 0 }),
        Ok(Response::ReadAlarm { time: 0, flags: 0 })
    );
}

#[test]
fn set_alarm_is_read_back_and_arms_the_host_timer() {
    let (dev, h) = device();

    assert_eq!(set_alarm(&dev, 0, WALL + 5 * S, true), Ok(Response::Empty));

    assert_eq!(
        dev.execute(Request::ReadAlarm { clock: 0 }),
        Ok(Response::ReadAlarm {
            time: WALL + 5 * S,
            flags: FLAG_ALARM_ENABLED
        })
    );
    assert_eq!(h[0].timer(), Timer::At(WALL + 5 * S));
    assert!(dev.pending().is_empty());
}

#[test]
fn set_alarm_enabled_keeps_the_time() {
    let (dev, h) = device();
    set_alarm(&dev, 2, 150 * S, true).unwrap();

    dev.execute(Request::SetAlarmEnabled {
        clock: 2,
        enabled: false,
    })
    .unwrap();

    assert_eq!(
        dev.execute(Request::ReadAlarm { clock: 2 }),
        Ok(Response::ReadAlarm {
            time: 150 * S,
            flags: 0
        })
    );
    assert_eq!(h[2].timer(), Timer::Off);
}

// ------------------------------------------------------------------ alarms

#[test]
fn alarm_in_the_past_expires_at_once() {
    let (dev, _) = device();

    set_alarm(&dev, 0, WALL - S, true).unwrap();

    assert_eq!(dev.pending(), vec![0]);
}

#[test]
fn disabled_alarm_in_the_past_does_not_expire() {
    let (dev, _) = device();

    set_alarm(&dev, 0, WALL - S, false).unwrap();

    assert!(dev.pending().is_empty());
}

#[test]
fn alarm_expires_when_its_clock_reaches_the_time() {
    let (dev, h) = device();
    set_alarm(&dev, 3, 201 * S, true).unwrap();
    h[3].advance(S - 1);
    dev.clock_event(3).unwrap();
    assert!(dev.pending().is_empty(), "expired early");

    h[3].advance(1);
    dev.clock_event(3).unwrap();

    assert_eq!(dev.pending(), vec![3]);
    assert!(
        read(&dev, 3) >= 201 * S,
        "a read after the notification is before the alarm"
    );
}

#[test]
fn tai_alarm_fires_on_the_tai_scale() {
    let (dev, h) = device();
    let at = WALL + 37 * S + 10 * S;
    set_alarm(&dev, 1, at, true).unwrap();

    h[1].advance(10 * S);
    dev.clock_event(1).unwrap();

    assert_eq!(dev.pending(), vec![1]);
}

#[test]
fn alarm_re_fires_after_the_clock_steps_back_and_passes_it_again() {
    let (dev, h) = device();
    set_alarm(&dev, 0, WALL + S, true).unwrap();
    h[0].advance(S);
    dev.clock_event(0).unwrap();
    assert_eq!(dev.pending(), vec![0]);
    assert_eq!(h[0].timer(), Timer::WatchSteps);

    h[0].step_to(WALL);
    dev.clock_event(0).unwrap();
    assert!(dev.pending().is_empty(), "obsolete notification kept");
    assert_eq!(h[0].timer(), Timer::At(WALL + S));
    h[0].advance(S);
    dev.clock_event(0).unwrap();

    assert_eq!(dev.pending(), vec![0]);
}

#[test]
fn step_forward_past_an_alarm_expires_it() {
    let (dev, h) = device();
    set_alarm(&dev, 0, WALL + 3600 * S, true).unwrap();

    h[0].step_to(WALL + 7200 * S);
    dev.clock_event(0).unwrap();

    assert_eq!(dev.pending(), vec![0]);
}

#[test]
fn enabling_an_expired_alarm_again_expires_it_again() {
    let (dev, _) = device();
    set_alarm(&dev, 2, 50 * S, true).unwrap();
    assert_eq!(dev.pending(), vec![2]);

    dev.execute(Request::SetAlarmEnabled {
        clock: 2,
        enabled: true,
    })
    .unwrap();

    assert_eq!(dev.pending(), vec![2], "one notification per clock");
}

#[test]
fn disable_cancels_a_pending_notification() {
    let (dev, _) = device();
    set_alarm(&dev, 0, WALL - S, true).unwrap();
    set_alarm(&dev, 2, 50 * S, true).unwrap();
    assert_eq!(dev.pending(), vec![0, 2]);

    dev.execute(Request::SetAlarmEnabled {
        clock: 0,
        enabled: false,
    })
    .unwrap();

    assert_eq!(dev.pending(), vec![2]);
}

#[test]
fn new_future_alarm_time_cancels_a_pending_notification() {
    let (dev, h) = device();
    set_alarm(&dev, 0, WALL - S, true).unwrap();

    set_alarm(&dev, 0, WALL + 60 * S, true).unwrap();

    assert!(dev.pending().is_empty());
    assert_eq!(h[0].timer(), Timer::At(WALL + 60 * S));
}

#[test]
fn spurious_timer_wake_up_changes_nothing() {
    let (dev, h) = device();
    set_alarm(&dev, 2, 150 * S, true).unwrap();

    dev.clock_event(2).unwrap();

    assert!(dev.pending().is_empty());
    assert_eq!(h[2].timer(), Timer::At(150 * S));
}

#[test]
fn reset_disables_alarms_and_drops_notifications() {
    let (dev, h) = device();
    set_alarm(&dev, 0, WALL - S, true).unwrap();
    set_alarm(&dev, 2, 150 * S, true).unwrap();

    dev.reset();
    dev.acked_features(1 << VIRTIO_RTC_F_ALARM);

    assert!(dev.pending().is_empty());
    assert_eq!(h[2].timer(), Timer::Off);
    assert_eq!(
        dev.execute(Request::ReadAlarm { clock: 2 }),
        Ok(Response::ReadAlarm { time: 0, flags: 0 })
    );
}

// --------------------------------------------------------------- migration

#[test]
fn saved_alarms_and_notifications_load_into_another_device() {
    let (a, _) = device();
    set_alarm(&a, 0, WALL + 60 * S, true).unwrap();
    set_alarm(&a, 2, 50 * S, true).unwrap();
    let saved = a.save_state().unwrap();
    let (b, hb) = device();

    b.load_state(saved).unwrap();

    assert_eq!(b.pending(), vec![2]);
    assert_eq!(hb[0].timer(), Timer::At(WALL + 60 * S));
    assert_eq!(
        b.execute(Request::ReadAlarm { clock: 0 }),
        Ok(Response::ReadAlarm {
            time: WALL + 60 * S,
            flags: FLAG_ALARM_ENABLED
        })
    );
}

#[test]
fn alarm_whose_time_passed_during_the_migration_expires_on_the_destination() {
    let (a, _) = device();
    set_alarm(&a, 0, WALL + S, true).unwrap();
    let saved = a.save_state().unwrap();
    let (b, hb) = device();
    hb[0].advance(2 * S);

    b.load_state(saved).unwrap();

    assert_eq!(b.pending(), vec![0]);
}

#[test]
fn monotonic_clock_continues_from_the_source_on_a_destination_that_is_behind() {
    let (a, ha) = device();
    ha[2].advance(900 * S);
    let on_source = read(&a, 2);
    set_alarm(&a, 2, on_source + 10 * S, true).unwrap();
    let saved = a.save_state().unwrap();
    let (b, hb) = device();

    b.load_state(saved).unwrap();

    let on_destination = read(&b, 2);
    assert!(
        on_destination >= on_source,
        "went back from {on_source} to {on_destination}"
    );
    // The destination's host clock is 900 s behind: its timer is armed there.
    assert_eq!(hb[2].timer(), Timer::At(100 * S + 10 * S));
    hb[2].advance(10 * S);
    b.clock_event(2).unwrap();
    assert_eq!(b.pending(), vec![2]);
}

#[test]
fn state_of_a_device_with_other_clocks_is_refused() {
    let (a, _) = device();
    let saved = a.save_state().unwrap();
    let (b, _) = device_with(vec![spec(ClockType::Utc, Source::Realtime, WALL)], true);

    let e = b.load_state(saved).unwrap_err();

    assert!(e.to_string().contains("--clock"), "{e}");
}

#[test]
fn state_naming_a_clock_that_does_not_exist_is_refused() {
    let (a, _) = device();
    let mut saved = a.save_state().unwrap();
    saved.pending.push(9);
    let (b, _) = device();

    assert!(b.load_state(saved).is_err());
}

// -------------------------------------------------------------- requestq

/// Post a request chain: `req` readable at BUFFERS, `out` writable bytes
/// at BUFFERS + 0x1000; process it; returns (used len, written bytes).
fn serve(dev: &RtcDevice, req: &[u8], out: u32) -> (u32, Vec<u8>) {
    let mut q = TestQueue::new(16, true).unwrap();
    q.write_bytes(BUFFERS, req).unwrap();
    let mut bufs = Vec::new();
    if !req.is_empty() {
        bufs.push((BUFFERS, u32::try_from(req.len()).unwrap(), false));
    }
    if out > 0 {
        bufs.push((BUFFERS + 0x1000, out, true));
    }
    q.add(&bufs).unwrap();

    dev.process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
        .unwrap();

    let used = q.used().unwrap();
    assert_eq!(used.len(), 1, "request not answered");
    let len = used[0].1;
    (len, q.read(BUFFERS + 0x1000, len as usize).unwrap())
}

fn msg(t: u16, body: &[u8]) -> Vec<u8> {
    let mut v = t.to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(body);
    v
}

#[test]
fn read_through_the_queue_is_ok_with_exactly_16_bytes() {
    let (dev, _) = device();

    let (len, out) = serve(&dev, &msg(0x0001, &[2, 0, 0, 0, 0, 0, 0, 0]), 64);

    assert_eq!(len, 16);
    assert_eq!(out[0], Status::Ok as u8);
    assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), 100 * S);
}

#[test]
fn enodev_through_the_queue_uses_the_head_alone() {
    let (dev, _) = device();

    let (len, out) = serve(&dev, &msg(0x0001, &[9, 0, 0, 0, 0, 0, 0, 0]), 64);

    assert_eq!(
        (len, out),
        (8, vec![Status::ENoDev as u8, 0, 0, 0, 0, 0, 0, 0])
    );
}

#[test]
fn unknown_message_through_the_queue_is_eopnotsupp() {
    let (dev, _) = device();

    let (len, out) = serve(&dev, &msg(0x7777, &[]), 16);

    assert_eq!((len, out[0]), (8, Status::EOpNotSupp as u8));
}

#[test]
fn response_buffer_too_small_is_einval_and_nothing_is_done() {
    let (dev, _) = device();
    let mut body = (WALL - S).to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 0]);

    let (len, out) = serve(&dev, &msg(0x1003, &[0; 8]), 12);
    let (len2, _) = serve(&dev, &msg(0x1004, &body), 7);

    assert_eq!((len, out[0]), (8, Status::EInval as u8));
    assert_eq!(len2, 7);
    assert!(dev.pending().is_empty(), "a refused SET_ALARM was executed");
}

#[test]
fn request_without_a_writable_buffer_is_used_with_length_zero() {
    let (dev, _) = device();

    let (len, _) = serve(&dev, &msg(0x1000, &[]), 0);

    assert_eq!(len, 0);
}

#[test]
fn request_without_a_readable_part_is_einval() {
    let (dev, _) = device();

    let (len, out) = serve(&dev, &[], 16);

    assert_eq!((len, out[0]), (8, Status::EInval as u8));
}
