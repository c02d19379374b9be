// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! I/O rates of the real `vhost-device-scsi` binary, driven over its socket by
//! the test front end (`cargo bench -p vhost-device-scsi`).
//!
//! The image lives on tmpfs (`/dev/shm`) so that the daemon, not a disk, is
//! measured: 4 KiB random reads and writes at queue depth 1 and 32, 1 MiB
//! sequential reads and writes at depth 4, the median latency, the
//! daemon's CPU time per I/O (from `/proc`) and the kicks per I/O (the
//! driver kicks only when the daemon asks for it). Then 4 KiB random reads from an
//! image on the machine's disk opened with `,direct`, at depth 1 and 32.
//!
//! `SCSI_BENCH_SECONDS` sets the time per case (default 2),
//! `SCSI_BENCH_ONLY` runs only the cases whose "name depth" contains it,
//! `SCSI_BENCH_SPIN` makes the driver poll its used ring instead of waiting
//! on the call eventfd,
//! `SCSI_BENCH_ENGINE` passes `--engine`, `SCSI_BENCH_POLL_US` passes
//! `--poll-us` (adaptive polling), `SCSI_BENCH_BIN` measures another
//! build of the daemon (an older one, for before/after numbers), and
//! `SCSI_BENCH_DISK_DIR` where the disk image goes (default: cargo's
//! target directory).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-scsi");
const LUN_BYTES: u64 = 256 << 20;

struct Slot {
    req: u64,
    resp: u64,
    data: u64,
}

fn cdb(write: bool, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = if write { 0x8a } else { 0x88 };
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// What one case measured.
struct Measured {
    iops: f64,
    mbs: f64,
    /// Daemon CPU time per I/O, µs.
    cpu: f64,
    /// Median latency, µs.
    p50: f64,
    /// Kicks the driver had to send per I/O (it kicks only when the
    /// daemon asks: EVENT_IDX `avail_event`).
    kicks: f64,
}

/// The next used chains of the request queue: waiting on the call eventfd
/// (as a guest's interrupt handler), or with `spin` reading the used ring
/// until something is there (as a guest that polls its queue).
fn next_used(s: &mut Session, spin: bool) -> Vec<vhost_device_test_frontend::Used> {
    let vq = s.queue(2).unwrap();
    if !spin {
        return vq.wait_used(Duration::from_secs(10)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used = vq.take_used().unwrap();
        if !used.is_empty() {
            return used;
        }
        assert!(Instant::now() < deadline, "no completion in 10 s");
        std::hint::spin_loop();
    }
}

/// Keep `depth` commands of `size` bytes in flight for `secs`.
fn run_case(
    d: &DaemonProcess,
    s: &mut Session,
    write: bool,
    random: bool,
    size: u32,
    depth: usize,
    secs: Duration,
) -> Measured {
    let slots: Vec<Slot> = (0..depth)
        .map(|_| Slot {
            req: s.ram().alloc(u64::from(size) + 4096, 4096).unwrap(),
            resp: s.ram().alloc(128, 64).unwrap(),
            data: s.ram().alloc(u64::from(size), 4096).unwrap(),
        })
        .collect();
    let blocks = size / 512;
    let span = LUN_BYTES / u64::from(size);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut seq = 0u64;
    let mut next_lba = || {
        let unit = if random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % span
        } else {
            seq = (seq + 1) % span;
            seq
        };
        unit * u64::from(blocks)
    };
    let mut header = vec![1u8, 0, 0x40, 0, 0, 0, 0, 0];
    header.extend_from_slice(&[0; 11]);
    let post = |s: &mut Session, slot: &Slot, lba: u64| -> u16 {
        let mut req = header.clone();
        let mut c = [0u8; 32];
        c[..16].copy_from_slice(&cdb(write, lba, blocks));
        req.extend_from_slice(&c);
        s.ram().write(slot.req, &req).unwrap();
        let chain = if write {
            Chain::new()
                .readable(slot.req, req.len() as u32)
                .readable(slot.data, size)
                .writable(slot.resp, 108)
        } else {
            Chain::new()
                .readable(slot.req, req.len() as u32)
                .writable(slot.resp, 108)
                .writable(slot.data, size)
        };
        s.queue(2).unwrap().add(&chain).unwrap()
    };
    let mut by_head = HashMap::new();
    let mut posted = vec![Instant::now(); depth];
    let mut latencies = Vec::new();
    let old = s.queue(2).unwrap().avail_index();
    for (i, slot) in slots.iter().enumerate() {
        posted[i] = Instant::now();
        by_head.insert(post(s, slot, next_lba()), i);
    }
    s.queue(2).unwrap().kick_if_needed(old).unwrap();
    let cpu0 = d.cpu_ticks().unwrap();
    let start = Instant::now();
    let mut ios = 0u64;
    let mut kicks = 0u64;
    let spin = std::env::var_os("SCSI_BENCH_SPIN").is_some();
    while start.elapsed() < secs {
        let used = next_used(s, spin);
        let done: Vec<usize> = used
            .iter()
            .map(|u| by_head.remove(&u.head).unwrap())
            .collect();
        ios += done.len() as u64;
        let now = Instant::now();
        latencies.extend(done.iter().map(|&i| (now - posted[i]).as_secs_f64() * 1e6));
        let old = s.queue(2).unwrap().avail_index();
        for i in done {
            posted[i] = Instant::now();
            by_head.insert(post(s, &slots[i], next_lba()), i);
        }
        kicks += u64::from(s.queue(2).unwrap().kick_if_needed(old).unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (d.cpu_ticks().unwrap() - cpu0) as f64 * 1e6 / 100.0; // USER_HZ = 100
    while s.queue(2).unwrap().in_flight() > 0 {
        s.queue(2)
            .unwrap()
            .wait_used(Duration::from_secs(10))
            .unwrap();
    }
    let iops = ios as f64 / elapsed;
    latencies.sort_by(f64::total_cmp);
    let p50 = latencies.get(latencies.len() / 2).copied().unwrap_or(0.0);
    Measured {
        iops,
        mbs: iops * f64::from(size) / 1e6,
        cpu: cpu / ios.max(1) as f64,
        p50,
        kicks: kicks as f64 / ios.max(1) as f64,
    }
}

type Case = (&'static str, bool, bool, u32, usize);

/// Start the daemon on `lun` and run `cases` against it.
fn bench(lun: &str, cases: &[Case], secs: Duration) {
    let bin = std::env::var("SCSI_BENCH_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut args = vec!["--lun".to_string(), lun.to_string()];
    if let Ok(engine) = std::env::var("SCSI_BENCH_ENGINE") {
        args.extend(["--engine".to_string(), engine]);
    }
    if let Ok(poll) = std::env::var("SCSI_BENCH_POLL_US") {
        args.extend(["--poll-us".to_string(), poll]);
    }
    let d = DaemonProcess::start(Path::new(&bin), &args).unwrap();
    let opts = Options {
        ram_size: 256 << 20,
        num_queues: Some(3),
        // SCSI_BENCH_QUEUE_SIZE: 128 for daemons that offer no more.
        queue_size: std::env::var("SCSI_BENCH_QUEUE_SIZE")
            .ok()
            .and_then(|q| q.parse().ok())
            .unwrap_or(256),
        ..Options::default()
    };
    let mut s = Session::start(&d.socket, &opts).unwrap();
    let only = std::env::var("SCSI_BENCH_ONLY").unwrap_or_default();
    for &(name, write, random, size, depth) in cases {
        if !format!("{name} {depth}").contains(&only) {
            continue;
        }
        let m = run_case(&d, &mut s, write, random, size, depth, secs);
        println!(
            "| {name} | {depth} | {:.0} | {:.0} | {:.1} µs | {:.1} µs | {:.2} |",
            m.iops, m.mbs, m.p50, m.cpu, m.kicks
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs = Duration::from_secs_f64(
        std::env::var("SCSI_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if full { 2.0 } else { 0.05 }),
    );
    let shm = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::tempdir_in(shm).unwrap();
    let img = dir.path().join("bench.img");
    std::fs::write(&img, vec![0x11u8; LUN_BYTES as usize]).unwrap();
    let disk_dir = std::env::var("SCSI_BENCH_DISK_DIR")
        .unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_string());
    let disk_tmp = tempfile::tempdir_in(disk_dir).unwrap();
    let disk_img = disk_tmp.path().join("bench.img");
    std::fs::write(&disk_img, vec![0x22u8; LUN_BYTES as usize]).unwrap();

    println!(
        "vhost-device-scsi benchmark on {}, image on {shm}{}",
        vhost_device_test_frontend::machine_description(),
        std::env::var("SCSI_BENCH_ENGINE")
            .map(|e| format!(", --engine {e}"))
            .unwrap_or_default()
            + &std::env::var("SCSI_BENCH_POLL_US")
                .map(|p| format!(", --poll-us {p}"))
                .unwrap_or_default()
    );
    println!();
    println!(
        "| workload | queue depth | IOPS | MB/s | p50 latency | daemon CPU per I/O | kicks per I/O |"
    );
    println!("|---|---|---|---|---|---|---|");
    let cases = [
        ("4 KiB random read", false, true, 4096, 1),
        ("4 KiB random read", false, true, 4096, 32),
        ("4 KiB random write", true, true, 4096, 1),
        ("4 KiB random write", true, true, 4096, 32),
        ("1 MiB sequential read", false, false, 1 << 20, 4),
        ("1 MiB sequential write", true, false, 1 << 20, 4),
    ];
    bench(img.to_str().unwrap(), &cases, secs);
    let direct = [
        ("4 KiB random read, disk, direct", false, true, 4096, 1),
        ("4 KiB random read, disk, direct", false, true, 4096, 32),
    ];
    bench(
        &format!("{},direct", disk_img.to_str().unwrap()),
        &direct,
        secs,
    );
}
