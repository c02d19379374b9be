// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Transfers per second of the real `vhost-device-i2c` binary with its
//! simulated adapter, driven over its socket by the test front end
//! (`cargo bench -p vhost-device-i2c`).
//!
//! One transfer is what a register read is: a 1-byte write (the register)
//! and a 2-byte read, two requests linked by FAIL_NEXT, one kick, at depth 1
//! (the Linux driver waits for a transfer before it queues the next). Each
//! case runs with direct descriptors and with indirect tables (what Linux
//! does on QEMU's 4-entry queue). The simulated adapter costs next to
//! nothing, so this measures the daemon: parsing, the hand-off to the
//! adapter thread and back through the eventfd, and the answers. Prints a
//! Markdown table with the machine it ran on. `I2C_BENCH_SECONDS` sets the
//! time per case (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use vhost_device_test_frontend::i2c::{I2cGuest, I2cMsg, MSG_OK};
use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-i2c");

/// Run write+read transfers for `secs`; returns (transfers/s, median µs, p99 µs).
fn run(g: &mut I2cGuest, secs: Duration) -> (f64, f64, f64) {
    let msgs = [I2cMsg::Write(0x50, vec![0x10]), I2cMsg::Read(0x50, 2)];
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < secs {
        let t = Instant::now();
        let replies = g.transfer(&msgs, Duration::from_secs(10)).unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(replies.iter().all(|r| r.status == MSG_OK));
    }
    let rate = samples.len() as f64 / start.elapsed().as_secs_f64();
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    (rate, samples[n / 2], samples[(n * 99 / 100).min(n - 1)])
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let secs = Duration::from_secs_f64(
        std::env::var("I2C_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if full { 3.0 } else { 0.05 }),
    );
    println!(
        "vhost-device-i2c benchmark on {}",
        vhost_device_test_frontend::machine_description()
    );
    println!();
    println!("| descriptors | queue size | transfers/s | round trip, median | p99 |");
    println!("|---|---|---|---|---|");
    let d = DaemonProcess::start(Path::new(BIN), ["--device-list", "sim:0x50"]).unwrap();
    for (indirect, queue_size) in [(false, 256u16), (true, 4)] {
        let opts = Options {
            queue_size,
            ..Options::default()
        };
        let mut g = I2cGuest::new(Session::start(&d.socket, &opts).unwrap()).unwrap();
        g.indirect = indirect;
        let (rate, p50, p99) = run(&mut g, secs);
        println!(
            "| {} | {queue_size} | {rate:.0} | {p50:.1} µs | {p99:.1} µs |",
            if indirect { "indirect" } else { "direct" }
        );
    }
}
