// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Frames per second and round-trip latency of two real `vhost-device-can`
//! daemons on one software bus, each driven by the test front end's
//! virtio-can driver (`cargo bench -p vhost-device-can`); and the CPU an
//! idle daemon uses.
//!
//! - Throughput: one driver keeps `depth` TX requests in flight, the other
//!   keeps 256 rx buffers posted; frames/s as received, each way, for 8-byte
//!   classic and 64-byte FD frames, with and without `LATE_TX_ACK`. Every
//!   frame carries a sequence number, so losses are counted.
//! - Latency: ping-pong of one 8-byte frame (A sends, B answers as soon as
//!   it has it); median and p99 of the round trip.
//!
//! Prints Markdown tables with the machine it ran on. `CAN_BENCH_SECONDS`
//! sets the time per throughput case (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use vhost_device_test_frontend::can::{CanDriver, Frame, F_LATE_TX_ACK, RESULT_OK};
use vhost_device_test_frontend::process::{DaemonProcess, IDLE_WINDOW};
use vhost_device_test_frontend::{Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-can");
const WAIT: Duration = Duration::from_secs(10);

fn driver(d: &DaemonProcess, late: bool, rx: usize) -> CanDriver {
    let opts = Options {
        accept_features: if late { u64::MAX } else { !F_LATE_TX_ACK },
        queue_size: 512,
        ..Options::default()
    };
    let s = Session::start(&d.socket, &opts).unwrap();
    let mut c = CanDriver::new(s, rx).unwrap();
    assert_eq!(c.start(WAIT).unwrap(), RESULT_OK);
    c
}

fn frame(seq: u64, fd: bool) -> Frame {
    let mut data = vec![0u8; if fd { 64 } else { 8 }];
    data[..8].copy_from_slice(&seq.to_le_bytes());
    Frame::data(0x100, false, fd, &data)
}

/// `tx` sends for `secs` with `depth` in flight; `rx` counts. Returns
/// (frames/s received, frames lost).
fn throughput(
    tx: &mut CanDriver,
    rx: &mut CanDriver,
    fd: bool,
    depth: usize,
    secs: Duration,
) -> (f64, u64) {
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let mut seq = 0u64;
            for _ in 0..depth {
                tx.post(&frame(seq, fd)).unwrap();
                seq += 1;
            }
            tx.kick_tx().unwrap();
            let start = Instant::now();
            while start.elapsed() < secs {
                tx.wait_result(WAIT).unwrap();
                let done = 1 + tx.take_results().unwrap().len();
                for _ in 0..done {
                    tx.post(&frame(seq, fd)).unwrap();
                    seq += 1;
                }
                tx.kick_tx().unwrap();
            }
            // Let the last ones finish.
            let mut left = depth;
            while left > 0 {
                tx.wait_result(WAIT).unwrap();
                left -= 1;
            }
            seq
        });
        let mut got = 0u64;
        let mut expect = 0u64;
        let mut lost = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        loop {
            match rx.recv(Duration::from_millis(500)) {
                Ok(f) => {
                    let seq = u64::from_le_bytes(f.data[..8].try_into().unwrap());
                    lost += seq.saturating_sub(expect);
                    expect = seq + 1;
                    got += 1;
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                }
                Err(_) if sender.is_finished() => break,
                Err(_) => {}
            }
        }
        let sent = sender.join().unwrap();
        lost += sent.saturating_sub(expect);
        let elapsed = first.map_or(secs, |f| last.duration_since(f));
        (got as f64 / elapsed.as_secs_f64().max(1e-9), lost)
    })
}

/// Ping-pong rounds; (median, p99) round trip in microseconds.
fn latency(a: &mut CanDriver, b: &mut CanDriver, rounds: usize) -> (f64, f64) {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..rounds {
                let f = b.recv(WAIT).unwrap();
                b.send(&f).unwrap();
                b.take_results().unwrap();
            }
        });
        let mut samples = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let t = Instant::now();
            a.send(&frame(i as u64, false)).unwrap();
            a.recv(WAIT).unwrap();
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            a.take_results().unwrap();
        }
        samples.sort_by(f64::total_cmp);
        (samples[rounds / 2], samples[rounds * 99 / 100])
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let secs = Duration::from_secs_f64(
        std::env::var("CAN_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if full { 2.0 } else { 0.05 }),
    );
    let rounds = if full { 5000 } else { 50 };
    println!(
        "vhost-device-can benchmark on {}",
        vhost_device_test_frontend::machine_description()
    );
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let args = ["--bus", bus.to_str().unwrap()];
    let da = DaemonProcess::start(Path::new(BIN), args).unwrap();
    let db = DaemonProcess::start(Path::new(BIN), args).unwrap();

    println!();
    println!("| frames | LATE_TX_ACK | in flight | direction | frames/s | lost |");
    println!("|---|---|---|---|---|---|");
    for late in [false, true] {
        let mut a = driver(&da, late, 256);
        let mut b = driver(&db, late, 256);
        for fd in [false, true] {
            for depth in [1usize, 32] {
                for name in ["A → B", "B → A"] {
                    let (x, y) = if name == "A → B" {
                        (&mut a, &mut b)
                    } else {
                        (&mut b, &mut a)
                    };
                    let (fps, lost) = throughput(x, y, fd, depth, secs);
                    println!(
                        "| {} | {} | {depth} | {name} | {fps:.0} | {lost} |",
                        if fd { "FD 64 B" } else { "classic 8 B" },
                        if late { "on" } else { "off" },
                    );
                }
            }
        }
    }

    let mut a = driver(&da, true, 256);
    let mut b = driver(&db, true, 256);
    let (p50, p99) = latency(&mut a, &mut b, rounds);
    println!();
    println!("| round trip A → B → A, 8-byte frames, LATE_TX_ACK | median | p99 |");
    println!("|---|---|---|");
    println!("| software bus | {p50:.1} µs | {p99:.1} µs |");

    let window = if full {
        IDLE_WINDOW
    } else {
        Duration::from_millis(100)
    };
    let ticks = da.cpu_ticks_over(window).unwrap();
    println!();
    println!(
        "idle daemon (controller started, 256 rx buffers posted): {ticks} ticks of CPU in {window:?}"
    );
}
