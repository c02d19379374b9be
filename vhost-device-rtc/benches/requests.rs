// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! READ requests and alarm accuracy of the real `vhost-device-rtc` binary,
//! driven over its socket by the test front end (`cargo bench -p
//! vhost-device-rtc`).
//!
//! - READ round trips at depth 1 (one request in flight: post, kick, wait for
//!   the used entry), for each clock of the default set: requests per
//!   second, median and p99 latency; and READ throughput with 16 in flight.
//! - Alarm accuracy: an alarm 20 ms ahead on the monotonic and on the UTC
//!   clock; lateness = the host clock when the front end sees the
//!   notification minus the alarm time (so it includes the front end's own
//!   wake-up); median, p99 and the worst.
//!
//! Prints Markdown tables with the machine. `RTC_BENCH_SECONDS` sets the
//! time per throughput case (default 2), `RTC_BENCH_ALARMS` the alarms per
//! clock (default 200).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use vhost_device_rtc::host::linux::LinuxClock;
use vhost_device_rtc::host::{HostClock, Source};
use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-rtc");
const WAIT: Duration = Duration::from_secs(10);

fn read_msg(clock: u16) -> Vec<u8> {
    let mut v = 1u16.to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&clock.to_le_bytes());
    v.extend_from_slice(&[0; 6]);
    v
}

fn set_alarm_msg(clock: u16, time: u64) -> Vec<u8> {
    let mut v = 0x1004u16.to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&time.to_le_bytes());
    v.extend_from_slice(&clock.to_le_bytes());
    v.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
    v
}

/// One request slot: request and response buffers.
struct Slot {
    req: u64,
    resp: u64,
}

fn slot(s: &Session, msg: &[u8]) -> Slot {
    let req = s.ram().alloc(64, 64).unwrap();
    let resp = s.ram().alloc(64, 64).unwrap();
    s.ram().write(req, msg).unwrap();
    Slot { req, resp }
}

fn post(s: &mut Session, sl: &Slot, len: u32) {
    let vq = s.queue(0).unwrap();
    vq.add(&Chain::new().readable(sl.req, len).writable(sl.resp, 16))
        .unwrap();
}

/// `rounds` READs of `clock` one at a time: (requests/s, median µs, p99 µs).
fn depth1(s: &mut Session, clock: u16, rounds: usize) -> (f64, f64, f64) {
    let sl = slot(s, &read_msg(clock));
    let mut samples = Vec::with_capacity(rounds);
    let start = Instant::now();
    for _ in 0..rounds {
        let t = Instant::now();
        post(s, &sl, 16);
        let vq = s.queue(0).unwrap();
        vq.kick().unwrap();
        let used = vq.wait_used(WAIT).unwrap();
        assert_eq!(used[0].len, 16);
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let rate = rounds as f64 / start.elapsed().as_secs_f64();
    samples.sort_by(f64::total_cmp);
    (rate, samples[rounds / 2], samples[rounds * 99 / 100])
}

/// READs with `depth` in flight for `secs`: requests/s.
fn throughput(s: &mut Session, depth: usize, secs: Duration) -> f64 {
    // Every slot holds the same request, so any used entry frees one.
    let slots: Vec<Slot> = (0..depth).map(|_| slot(s, &read_msg(0))).collect();
    for sl in &slots {
        post(s, sl, 16);
    }
    s.queue(0).unwrap().kick().unwrap();
    let start = Instant::now();
    let mut done = 0u64;
    let mut next = 0usize;
    while start.elapsed() < secs {
        let used = s.queue(0).unwrap().wait_used(WAIT).unwrap();
        done += used.len() as u64;
        for _ in &used {
            let sl = &slots[next % depth];
            next += 1;
            post(s, sl, 16);
        }
        s.queue(0).unwrap().kick().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    while s.queue(0).unwrap().in_flight() > 0 {
        s.queue(0).unwrap().wait_used(WAIT).unwrap();
    }
    done as f64 / elapsed
}

/// `n` alarms 20 ms ahead on `clock`: lateness in µs (median, p99, max).
fn alarm_accuracy(s: &mut Session, clock: u16, source: Source, n: usize) -> (f64, f64, f64) {
    let mut host = LinuxClock::open(source, 37).unwrap();
    let buf = s.ram().alloc(16, 16).unwrap();
    let req = s.ram().alloc(64, 64).unwrap();
    let resp = s.ram().alloc(64, 64).unwrap();
    let mut late = Vec::with_capacity(n);
    for _ in 0..n {
        let aq = s.queue(1).unwrap();
        aq.add(&Chain::new().writable(buf, 16)).unwrap();
        aq.kick().unwrap();
        let at = host.now().unwrap() + 20_000_000;
        s.ram().write(req, &set_alarm_msg(clock, at)).unwrap();
        let vq = s.queue(0).unwrap();
        vq.add(&Chain::new().readable(req, 24).writable(resp, 8))
            .unwrap();
        vq.kick().unwrap();
        vq.wait_used(WAIT).unwrap();
        let used = s.queue(1).unwrap().wait_used(WAIT).unwrap();
        let now = host.now().unwrap();
        assert_eq!(used[0].len, 16);
        assert!(now >= at, "alarm {} ns early", at - now);
        late.push((now - at) as f64 / 1e3);
    }
    late.sort_by(f64::total_cmp);
    (late[n / 2], late[n * 99 / 100], late[n - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, full_value: f64, smoke: f64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if full { full_value } else { smoke })
    };
    let secs = Duration::from_secs_f64(env("RTC_BENCH_SECONDS", 2.0, 0.05));
    let alarms: usize = std::env::var("RTC_BENCH_ALARMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 200 } else { 3 });
    let rounds = if full { 20_000 } else { 50 };
    println!(
        "vhost-device-rtc benchmark on {}",
        vhost_device_test_frontend::machine_description()
    );
    let d = DaemonProcess::start(Path::new(BIN), Vec::<&str>::new()).unwrap();
    let mut s = Session::start(&d.socket, &Options::default()).unwrap();

    println!();
    println!("| READ, 1 in flight | requests/s | median | p99 |");
    println!("|---|---|---|---|");
    for (clock, name) in [
        (0, "UTC (realtime)"),
        (1, "TAI"),
        (2, "monotonic"),
        (3, "boot time"),
    ] {
        let (rate, p50, p99) = depth1(&mut s, clock, rounds);
        println!("| {name} | {rate:.0} | {p50:.1} µs | {p99:.1} µs |");
    }
    println!();
    println!("| READ, in flight | requests/s |");
    println!("|---|---|");
    for depth in [1usize, 16] {
        println!("| {depth} | {:.0} |", throughput(&mut s, depth, secs));
    }
    println!();
    println!("| alarm 20 ms ahead, lateness at the front end | median | p99 | max |");
    println!("|---|---|---|---|");
    for (clock, source, name) in [
        (2, Source::Monotonic, "monotonic"),
        (0, Source::Realtime, "UTC"),
    ] {
        let (p50, p99, max) = alarm_accuracy(&mut s, clock, source, alarms);
        println!("| {name} ({alarms} alarms) | {p50:.0} µs | {p99:.0} µs | {max:.0} µs |");
    }
}
