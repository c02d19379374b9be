// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Throughput, latency and footprint of the real `vhost-device-vsock` binary,
//! driven over its socket by the test front end playing the guest driver, with
//! host programs on Unix sockets (`cargo bench -p vhost-device-vsock`).
//!
//! Guest to host and host to guest Gbit/s with 1 and 16 connections, the round
//! trip of a 64-byte message, idle CPU and RSS with 1000 open connections.
//! `VSOCK_BENCH_MIB` sets the bytes per direction and case (default 512);
//! `VSOCK_BENCH_BIN` runs another daemon binary (an older build, to compare
//! the two under the same load).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

#[path = "../tests/guest/mod.rs"]
mod guest;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use guest::*;
use vhost_device_test_frontend::process::DaemonProcess;

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-vsock");

fn connect(g: &mut Guest, listener: &UnixListener, port: u32) -> UnixStream {
    g.send(g.hdr(port, 1234, REQUEST), &[]);
    g.expect(RESPONSE);
    listener.accept().unwrap().0
}

/// Guest to host over `conns`: returns Gbit/s.
fn guest_to_host(g: &mut Guest, hosts: Vec<UnixStream>, ports: &[u32], total: usize) -> f64 {
    let per = total / ports.len();
    let readers: Vec<_> = hosts
        .into_iter()
        .map(|mut h| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut got = 0;
                while got < per {
                    got += h.read(&mut buf).unwrap();
                }
            })
        })
        .collect();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut state: Vec<(u32, u32, usize)> = ports.iter().map(|_| (256 * 1024, 0, 0)).collect();
    let start = Instant::now();
    while state.iter().any(|s| s.2 < per) {
        for (i, &port) in ports.iter().enumerate() {
            let (alloc, fwd, sent) = state[i];
            if sent >= per {
                continue;
            }
            let credit = alloc - (sent as u32).wrapping_sub(fwd);
            let n = (credit as usize).min(chunk.len()).min(per - sent);
            if n > 0 {
                g.send(g.hdr(port, 1234, RW), &chunk[..n]);
                state[i].2 += n;
            }
        }
        g.poll_rx(Duration::from_millis(0));
        while let Some((h, _)) = g.inbox.pop_front() {
            if let Some(i) = ports.iter().position(|&p| p == h.dst_port) {
                state[i].0 = h.buf_alloc;
                state[i].1 = h.fwd_cnt;
            }
        }
        if state
            .iter()
            .all(|&(a, f, s)| s >= per || a == (s as u32).wrapping_sub(f))
        {
            g.poll_rx(Duration::from_millis(50));
        }
    }
    for r in readers {
        r.join().unwrap();
    }
    (per * ports.len()) as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// Host to guest over `conns`: returns Gbit/s and the host streams (kept open,
/// so that no SHUTDOWN interleaves with later cases).
fn host_to_guest(
    g: &mut Guest,
    hosts: Vec<UnixStream>,
    ports: &[u32],
    total: usize,
) -> (f64, Vec<UnixStream>) {
    let per = total / ports.len();
    let start = Instant::now();
    let writers: Vec<_> = hosts
        .into_iter()
        .map(|mut h| {
            std::thread::spawn(move || {
                let buf = vec![0xa5u8; 1 << 20];
                let mut sent = 0;
                while sent < per {
                    let n = buf.len().min(per - sent);
                    h.write_all(&buf[..n]).unwrap();
                    sent += n;
                }
                h
            })
        })
        .collect();
    let mut got: Vec<(usize, u32)> = ports.iter().map(|_| (0, 0)).collect();
    while got.iter().any(|&(n, _)| n < per) {
        let (h, payload) = g.recv();
        if h.op != RW {
            continue;
        }
        let i = ports.iter().position(|&p| p == h.dst_port).unwrap();
        got[i].0 += payload.len();
        got[i].1 = got[i].1.wrapping_add(payload.len() as u32);
        let mut cu = g.hdr(ports[i], 1234, CREDIT_UPDATE);
        cu.fwd_cnt = got[i].1;
        g.send(cu, &[]);
    }
    let secs = start.elapsed().as_secs_f64();
    let streams = writers.into_iter().map(|w| w.join().unwrap()).collect();
    (total as f64 * 8.0 / secs / 1e9, streams)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mib: usize = std::env::var("VSOCK_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 512 } else { 4 });
    let total = mib << 20;
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let bin = std::env::var_os("VSOCK_BENCH_BIN").unwrap_or_else(|| BIN.into());
    let d = DaemonProcess::start(
        Path::new(&bin),
        ["--guest-cid", "3", "--uds-path", uds.to_str().unwrap()],
    )
    .unwrap();
    let listener = UnixListener::bind(format!("{}_1234", uds.display())).unwrap();
    let mut g = Guest::new(&d);

    println!(
        "vhost-device-vsock benchmark on {}, {mib} MiB per case",
        vhost_device_test_frontend::machine_description()
    );
    println!();
    println!("| direction | connections | Gbit/s |");
    println!("|---|---|---|");
    let mut keep = Vec::new();
    for (conns, base) in [(1u32, 1000u32), (16, 2000)] {
        let ports: Vec<u32> = (base..base + conns).collect();
        let hosts: Vec<UnixStream> = ports
            .iter()
            .map(|&p| connect(&mut g, &listener, p))
            .collect();
        let clones: Vec<UnixStream> = hosts.iter().map(|h| h.try_clone().unwrap()).collect();
        let up = guest_to_host(&mut g, hosts, &ports, total);
        println!("| guest → host | {conns} | {up:.2} |");
        let (down, streams) = host_to_guest(&mut g, clones, &ports, total);
        keep.extend(streams);
        println!("| host → guest | {conns} | {down:.2} |");
    }

    // Round trip: guest sends 64 bytes, the host echoes them.
    let mut echo = connect(&mut g, &listener, 3000);
    let rounds = if full { 2000 } else { 20 };
    let mut samples = Vec::with_capacity(rounds);
    let mut fwd = 0u32;
    let mut buf = [0u8; 64];
    for _ in 0..rounds {
        let t = Instant::now();
        g.send(g.hdr(3000, 1234, RW), &buf);
        echo.read_exact(&mut buf).unwrap();
        echo.write_all(&buf).unwrap();
        let (_, p) = g.expect(RW);
        fwd = fwd.wrapping_add(p.len() as u32);
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    println!();
    println!(
        "64-byte round trip (guest → host → guest): median {:.1} µs, p99 {:.1} µs",
        samples[rounds / 2],
        samples[rounds * 99 / 100]
    );

    // Footprint with many open connections.
    let rss0 = d.rss_kib().unwrap();
    let n = if full { 1000 } else { 50 };
    let held: Vec<UnixStream> = (0..n)
        .map(|i| connect(&mut g, &listener, 10_000 + i))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let rss1 = d.rss_kib().unwrap();
    let cpu0 = d.cpu_ticks().unwrap();
    std::thread::sleep(Duration::from_secs(if full { 5 } else { 1 }));
    let idle = d.cpu_ticks().unwrap() - cpu0;
    println!(
        "{n} open idle connections: RSS {rss1} KiB ({} KiB more than before them), CPU while idle: {idle} ticks in {} s",
        rss1.saturating_sub(rss0),
        if full { 5 } else { 1 }
    );
    drop(held);
    drop(keep);
}
