// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Throughput and latency of the real `vhost-device-rng` binary, driven over its
//! socket by the test front end (`cargo bench -p vhost-device-rng`).
//!
//! Measures MB/s with 4 KiB and 64 KiB buffers at 1 and 8 requests in flight,
//! and the round-trip latency of a 64-byte request at depth 1, for the host
//! source `/dev/urandom` and for `--simulate` (which isolates the daemon's own
//! cost). Prints a Markdown table with the machine it ran on.
//! `RNG_BENCH_SECONDS` sets the time per throughput case (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-rng");

/// Keep `depth` requests of `size` bytes in flight for `secs`; returns MB/s.
fn throughput(s: &mut Session, size: u32, depth: usize, secs: Duration) -> f64 {
    let bufs: Vec<u64> = (0..depth)
        .map(|_| s.ram().alloc(u64::from(size), 4096).unwrap())
        .collect();
    let vq = s.queue(0).unwrap();
    let mut by_head = std::collections::HashMap::new();
    let old = vq.avail_index();
    for &b in &bufs {
        let head = vq.add(&Chain::new().writable(b, size)).unwrap();
        by_head.insert(head, b);
    }
    vq.kick_if_needed(old).unwrap();
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < secs {
        let used = vq.wait_used(Duration::from_secs(10)).unwrap();
        let old = vq.avail_index();
        let done: Vec<u64> = used
            .iter()
            .map(|u| {
                bytes += u64::from(u.len);
                by_head.remove(&u.head).unwrap()
            })
            .collect();
        for b in done {
            let head = vq.add(&Chain::new().writable(b, size)).unwrap();
            by_head.insert(head, b);
        }
        vq.kick_if_needed(old).unwrap();
    }
    let elapsed = start.elapsed();
    // Drain what is still in flight so the next case starts clean.
    while vq.in_flight() > 0 {
        vq.wait_used(Duration::from_secs(10)).unwrap();
    }
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

/// Round trips of one 64-byte request; returns (median, p99) in microseconds.
fn latency(s: &mut Session, rounds: usize) -> (f64, f64) {
    let buf = s.ram().alloc(64, 64).unwrap();
    let vq = s.queue(0).unwrap();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let old = vq.avail_index();
        vq.add(&Chain::new().writable(buf, 64)).unwrap();
        vq.kick_if_needed(old).unwrap();
        vq.wait_used(Duration::from_secs(10)).unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    (samples[rounds / 2], samples[rounds * 99 / 100])
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let secs = Duration::from_secs_f64(
        std::env::var("RNG_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if full { 2.0 } else { 0.05 }),
    );
    let rounds = if full { 5000 } else { 50 };
    println!(
        "vhost-device-rng benchmark on {}",
        vhost_device_test_frontend::machine_description()
    );
    println!();
    println!("| source | buffer | in flight | MB/s |");
    println!("|---|---|---|---|");
    let mut lat = Vec::new();
    for (name, args) in [("/dev/urandom", vec![]), ("--simulate", vec!["--simulate"])] {
        let d = DaemonProcess::start(Path::new(BIN), &args).unwrap();
        let mut s = Session::start(&d.socket, &Options::default()).unwrap();
        for size in [4096u32, 65536] {
            for depth in [1usize, 8] {
                let mbs = throughput(&mut s, size, depth, secs);
                println!("| {name} | {} KiB | {depth} | {mbs:.0} |", size / 1024);
            }
        }
        lat.push((name, latency(&mut s, rounds)));
    }
    println!();
    println!("| source | 64-byte request round trip, median | p99 |");
    println!("|---|---|---|");
    for (name, (p50, p99)) in lat {
        println!("| {name} | {p50:.1} µs | {p99:.1} µs |");
    }
}
