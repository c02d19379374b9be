// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Interrupt latency and request rate of the real `vhost-device-gpio`
//! binary with a simulated chip, driven over its socket by the test front
//! end's virtio-gpio driver (`cargo bench -p vhost-device-gpio`).
//!
//! - Interrupt latency: a line with a both-edges interrupt and its eventq
//!   buffer posted; the clock starts just before the `toggle` command is
//!   written to the chip's control socket and stops when the used buffer is
//!   seen. It includes the control socket round trip (the simulated "edge"),
//!   the worker's wake-up, the VALID completion and the driver's wake-up.
//! - Requests per second: GET_VALUE on an input line, one at a time (as
//!   Linux sends them per line) and 16 in flight.
//!
//! Prints Markdown tables with the machine it ran on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost_device_test_frontend::gpio::{msg, GpioDriver};
use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-gpio");

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 5000 } else { 50 };
    let secs = Duration::from_secs_f64(if full { 2.0 } else { 0.05 });
    println!(
        "vhost-device-gpio benchmark on {}",
        vhost_device_test_frontend::machine_description()
    );
    let d = DaemonProcess::start(Path::new(BIN), ["--device-list", "sim:8"]).unwrap();
    let mut ctl_path = d.socket.as_os_str().to_owned();
    ctl_path.push(".sim");
    let ctl = UnixStream::connect(&ctl_path).unwrap();
    let mut ctl_out = ctl.try_clone().unwrap();
    let mut ctl_in = BufReader::new(ctl);
    let mut g = GpioDriver::new(Session::start(&d.socket, &Options::default()).unwrap()).unwrap();

    // Interrupt latency.
    let r = g.request(msg::SET_IRQ_TYPE, 0, 3).unwrap();
    assert_eq!(r.status, 0);
    let mut samples = Vec::with_capacity(rounds);
    let mut answer = String::new();
    for _ in 0..rounds {
        g.arm(0).unwrap();
        // A fence: line 7 has no interrupt, so its buffer comes back at once,
        // after the device took line 0's (it takes the queue's buffers in
        // order): line 0 is unmasked before the edge.
        g.arm(7).unwrap();
        assert_eq!(g.wait_irq(7).unwrap().status, 0);
        let t = Instant::now();
        ctl_out.write_all(b"toggle 0\n").unwrap();
        let irq = g.wait_irq(0).unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!((irq.status, irq.len), (1, 1));
        answer.clear();
        ctl_in.read_line(&mut answer).unwrap();
    }
    samples.sort_by(f64::total_cmp);
    println!();
    println!("| interrupt: host edge to used eventq buffer | p50 | p99 | rounds |");
    println!("|---|---|---|---|");
    println!(
        "| both edges, simulated chip | {:.1} µs | {:.1} µs | {rounds} |",
        percentile(&samples, 50),
        percentile(&samples, 99)
    );

    // Requests per second.
    let r = g.request(msg::SET_DIRECTION, 1, 2).unwrap();
    assert_eq!(r.status, 0);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < secs {
        g.request(msg::GET_VALUE, 1, 0).unwrap();
        n += 1;
    }
    let depth1 = n as f64 / start.elapsed().as_secs_f64();
    let s = g.session();
    let depth = 16usize;
    let bufs: Vec<(u64, u64)> = (0..depth)
        .map(|_| {
            let req = s.ram().alloc(8, 8).unwrap();
            s.ram().write(req, &[4, 0, 1, 0, 0, 0, 0, 0]).unwrap();
            (req, s.ram().alloc(2, 8).unwrap())
        })
        .collect();
    let mut by_head = std::collections::HashMap::new();
    let vq = s.queue(0).unwrap();
    let old = vq.avail_index();
    for &(req, resp) in &bufs {
        let head = vq
            .add(&Chain::new().readable(req, 8).writable(resp, 2))
            .unwrap();
        by_head.insert(head, (req, resp));
    }
    vq.kick_if_needed(old).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < secs {
        let used = vq.wait_used(Duration::from_secs(10)).unwrap();
        let old = vq.avail_index();
        for u in used {
            assert_eq!(u.len, 2);
            n += 1;
            let (req, resp) = by_head.remove(&u.head).unwrap();
            let head = vq
                .add(&Chain::new().readable(req, 8).writable(resp, 2))
                .unwrap();
            by_head.insert(head, (req, resp));
        }
        vq.kick_if_needed(old).unwrap();
    }
    let deep = n as f64 / start.elapsed().as_secs_f64();
    while vq.in_flight() > 0 {
        vq.wait_used(Duration::from_secs(10)).unwrap();
    }
    println!();
    println!("| GET_VALUE requests | per second |");
    println!("|---|---|");
    println!("| 1 in flight | {depth1:.0} |");
    println!("| {depth} in flight | {deep:.0} |");
}
