// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Real-time playback of the real `vhost-device-sound` binary, driven over
//! its socket by the test front end as Linux's virtio_snd drives it
//! (`cargo bench -p vhost-device-sound`; `cargo test --all-targets` runs it
//! once for 0.2 s per backend as a smoke test).
//!
//! Each backend plays `SND_BENCH_SECONDS` (default 10) of 48 kHz S16
//! stereo in 10 ms periods with a 4-period buffer: four periods are posted
//! before START (the driver's pre-buffering) and each one is re-posted as
//! soon as it completes, so four are always in flight. Backends: `null`,
//! `wav`, and `alsa` on the PCM named by `SND_BENCH_ALSA_PCM` when that is
//! set (with `ALSA_CONFIG_PATH` if the PCM needs a private configuration;
//! `benches/alsa-on-pipewire.sh` sets up a clocked one on a private
//! PipeWire). `SND_BENCH_BACKENDS=null,wav,alsa` picks a subset;
//! `SND_BENCH_SETTLE_MS` pauses between PREPARE and START;
//! `SND_BENCH_DUMP=PATH` writes each completion (ms after START, ideal ms,
//! latency_bytes) to `PATH.<backend>`.
//!
//! Reported:
//!
//! - **CPU**: the daemon's CPU time (every thread's, from
//!   `/proc/PID/task/*/schedstat`, in nanoseconds) per second of audio;
//! - **jitter**: when the driver saw period *k* complete against the ideal
//!   `(k + 1) × 10 ms` after it sent START (p50, p99, max), and how far the
//!   intervals between completions stray from 10 ms (p50, p99). On a busy
//!   machine this program itself is sometimes not scheduled long enough to
//!   keep the device fed; a clock-paced device then waits for the next
//!   period (an underrun) and its clock restarts, and the ideal restarts
//!   with it; for a host-paced one the host underruns and recovers on its
//!   own, so the ideal stays. Underruns are counted: a host-paced run with
//!   one is not a measure of latency_bytes;
//! - **latency_bytes**: its range, and how well it predicts when the
//!   completed audio is heard. For completion *k* seen at time *t*, the
//!   last completed byte is heard at `t + latency_bytes / byte_rate`; for a
//!   host that plays continuously that is `T0 + (k + 1) × 10 ms`, with
//!   `T0` when the host began playing. So `t + latency / rate − (k + 1) ×
//!   10 ms` must stay constant:
//!   - its median over the first completions is the implied `T0` (it
//!     cannot truly be before START: a negative one means latency_bytes is
//!     too small);
//!   - its median over the last completions minus that is how far the host
//!     fell behind during the run (it paused, and made up with silence);
//!   - each value's distance from the median of its 51 neighbours (p50,
//!     p99) is the error of the prediction, jitter of the driver's own
//!     wake-ups included; a step where the host fell behind counts only
//!     where it happens. The same is shown as if latency_bytes were 0.
//!
//!   For `null` and `wav` the host queue is empty by construction (a period
//!   completes when its last byte is due, and `T0` is START itself), so
//!   latency_bytes must be 0 (the smoke run checks it) and the error is
//!   the completion jitter. For a host-paced backend the true `T0` is not
//!   observable from here: only `T0 ≥ 0` and the error are checks.
//!
//! Prints Markdown tables with the machine it ran on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-sound");
const WAIT: Duration = Duration::from_secs(10);
const CONTROL: usize = 0;
const TX: usize = 2;
/// 10 ms of 48 kHz S16 stereo.
const PERIOD: u32 = 1920;
const PERIOD_MS: f64 = 10.0;
const BYTES_PER_MS: f64 = 192.0;
/// Messages in flight (the driver's buffer).
const DEPTH: usize = 4;
const OK: u32 = 0x8000;
const SET_PARAMS: u32 = 0x0101;
const PREPARE: u32 = 0x0102;
const RELEASE: u32 = 0x0103;
const START: u32 = 0x0104;
const STOP: u32 = 0x0105;

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn ctl(s: &mut Session, req: &[u8]) -> u32 {
    let r = s.ram().alloc(req.len() as u64, 8).unwrap();
    s.ram().write(r, req).unwrap();
    let w = s.ram().alloc(4, 8).unwrap();
    let vq = s.queue(CONTROL).unwrap();
    vq.add(
        &Chain::new()
            .readable(r, u32::try_from(req.len()).unwrap())
            .writable(w, 4),
    )
    .unwrap();
    vq.kick().unwrap();
    vq.wait_used(WAIT).unwrap();
    u32::from_le_bytes(s.ram().read(w, 4).unwrap().try_into().unwrap())
}

fn cmd(s: &mut Session, code: u32) -> u32 {
    let mut req = le32(code).to_vec();
    req.extend_from_slice(&le32(0));
    ctl(s, &req)
}

/// CPU time of every thread of `pid`, in nanoseconds.
fn cpu_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One backend's run.
struct Run {
    /// When the driver saw each completion, from START.
    times_ms: Vec<f64>,
    /// When each completion was due: `(k + 1) × 10 ms` after START, or
    /// after the driver's last underrun (see [`play`]).
    ideal_ms: Vec<f64>,
    /// latency_bytes of each completion.
    latency: Vec<u32>,
    /// Times the driver (this program, starved on a busy machine) let the
    /// device's queue run dry.
    underruns: usize,
    cpu_ms_per_s: f64,
}

fn play(d: &DaemonProcess, periods: usize, clock_paced: bool) -> Run {
    let mut s = Session::start(&d.socket, &Options::default()).unwrap();
    let mut set = le32(SET_PARAMS).to_vec();
    for v in [0, PERIOD * 4, PERIOD, 0] {
        set.extend_from_slice(&le32(v));
    }
    set.extend_from_slice(&[2, 5, 7, 0]); // stereo, S16, 48 kHz
    assert_eq!(ctl(&mut s, &set), OK, "SET_PARAMS");
    assert_eq!(cmd(&mut s, PREPARE), OK, "PREPARE");
    // A host that needs time after PREPARE (a PipeWire stream that is
    // linked by an outside tool) gets it here, as an application that
    // fills its buffer before it starts would give it.
    std::thread::sleep(settle());

    let x = s.ram().alloc(4, 8).unwrap();
    s.ram().write(x, &le32(0)).unwrap();
    // A quiet tone, so a real sink gets real samples.
    let tone: Vec<u8> = (0..PERIOD / 2)
        .flat_map(|i| {
            let v = if (i / 2) % 48 < 24 { 1000i16 } else { -1000 };
            v.to_le_bytes()
        })
        .collect();
    let data = s.ram().alloc(u64::from(PERIOD), 8).unwrap();
    s.ram().write(data, &tone).unwrap();
    let post = |s: &mut Session| -> (u16, u64) {
        let st = s.ram().alloc(8, 8).unwrap();
        let vq = s.queue(TX).unwrap();
        let head = vq
            .add(
                &Chain::new()
                    .readable(x, 4)
                    .readable(data, PERIOD)
                    .writable(st, 8),
            )
            .unwrap();
        vq.kick().unwrap();
        (head, st)
    };
    let mut in_flight = VecDeque::new();
    for _ in 0..DEPTH {
        in_flight.push_back(post(&mut s));
    }
    let mut posted = DEPTH;
    let cpu_before = cpu_ns(d.pid());
    let start = Instant::now();
    assert_eq!(cmd(&mut s, START), OK, "START");
    let mut times_ms = Vec::with_capacity(periods);
    let mut ideal_ms = Vec::with_capacity(periods);
    let mut latency = Vec::with_capacity(periods);
    // The device's clock as the driver sees it: periods complete at
    // `anchor + n × 10 ms`; when the driver is so late that every posted
    // period has completed and the clock has passed the end of them, a
    // clock-paced device restarts the clock when the next period arrives
    // (an underrun: it waits rather than racing ahead), and so does this.
    // A host-paced one underruns in the host, which recovers on its own
    // schedule: the ideal stays, and the underrun shows in the numbers.
    let (mut anchor_ms, mut since_anchor) = (0.0f64, 0usize);
    let mut underruns = 0;
    while times_ms.len() < periods {
        let used = match s.queue(TX).unwrap().wait_used(WAIT) {
            Ok(u) => u,
            Err(e) => panic!(
                "no period completed after {} of {periods}: {e}\n{}",
                times_ms.len(),
                d.stderr_text()
            ),
        };
        let now = start.elapsed().as_secs_f64() * 1e3;
        let completed = used.len();
        for u in used {
            let (head, st) = in_flight.pop_front().unwrap();
            assert_eq!(u.head, head, "completions out of order");
            let status = s.ram().read(st, 8).unwrap();
            assert_eq!(
                u32::from_le_bytes(status[..4].try_into().unwrap()),
                OK,
                "I/O status"
            );
            latency.push(u32::from_le_bytes(status[4..8].try_into().unwrap()));
            times_ms.push(now);
            since_anchor += 1;
            ideal_ms.push(anchor_ms + since_anchor as f64 * PERIOD_MS);
        }
        let dry = in_flight.is_empty();
        for _ in 0..completed {
            if posted < periods {
                let at = start.elapsed().as_secs_f64() * 1e3;
                if dry
                    && posted == times_ms.len()
                    && at > anchor_ms + since_anchor as f64 * PERIOD_MS
                {
                    underruns += 1;
                    if clock_paced {
                        anchor_ms = at;
                        since_anchor = 0;
                    }
                }
                in_flight.push_back(post(&mut s));
                posted += 1;
            }
        }
    }
    let cpu = cpu_ns(d.pid()).saturating_sub(cpu_before);
    assert_eq!(cmd(&mut s, STOP), OK, "STOP");
    assert_eq!(cmd(&mut s, RELEASE), OK, "RELEASE");
    let audio_s = periods as f64 * PERIOD_MS / 1e3;
    Run {
        times_ms,
        ideal_ms,
        latency,
        underruns,
        cpu_ms_per_s: cpu as f64 / 1e6 / audio_s,
    }
}

/// `SND_BENCH_SETTLE_MS`: pause between PREPARE and START (default 0).
fn settle() -> Duration {
    Duration::from_millis(
        std::env::var("SND_BENCH_SETTLE_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    )
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a rounded index
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Completions on either side that [`spread`] compares each one with.
const NEIGHBOURS: usize = 25;

/// p50 and p99 of how far each value is from the median of its
/// neighbourhood (itself and up to [`NEIGHBOURS`] on either side). A step
/// in the values (the host paused and resumed later: every later byte is
/// heard later) only counts where it happens, not for the rest of the run.
fn spread(v: &[f64]) -> (f64, f64) {
    let dev: Vec<f64> = (0..v.len())
        .map(|k| {
            let window = &v[k.saturating_sub(NEIGHBOURS)..(k + NEIGHBOURS + 1).min(v.len())];
            (v[k] - percentile(window, 0.5)).abs()
        })
        .collect();
    (percentile(&dev, 0.5), percentile(&dev, 0.99))
}

/// The median of the first and of the last `2 × NEIGHBOURS` values.
fn ends(v: &[f64]) -> (f64, f64) {
    let n = (2 * NEIGHBOURS).min(v.len());
    (percentile(&v[..n], 0.5), percentile(&v[v.len() - n..], 0.5))
}

struct Summary {
    lateness: (f64, f64, f64),
    interval: (f64, f64),
    latency_ms: (f64, f64, f64),
    /// The median of `t + latency / rate − (k + 1) × 10 ms` over the first
    /// completions: when the host began playing, after START, as
    /// latency_bytes implies.
    host_start: f64,
    /// The same over the last completions, minus `host_start`: how much
    /// later than at first the host plays (pauses it made up for with
    /// silence).
    drift: f64,
    playout: (f64, f64),
    playout_without: (f64, f64),
}

fn summarize(r: &Run) -> Summary {
    let ideal = |k: usize| r.ideal_ms[k];
    let lateness: Vec<f64> = (0..r.times_ms.len())
        .map(|k| r.times_ms[k] - ideal(k))
        .collect();
    let interval: Vec<f64> = r
        .times_ms
        .windows(2)
        .map(|w| (w[1] - w[0] - PERIOD_MS).abs())
        .collect();
    let latency_ms: Vec<f64> = r
        .latency
        .iter()
        .map(|&b| f64::from(b) / BYTES_PER_MS)
        .collect();
    let playout: Vec<f64> = (0..r.times_ms.len())
        .map(|k| r.times_ms[k] + latency_ms[k] - ideal(k))
        .collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    Summary {
        lateness: (
            percentile(&lateness, 0.5),
            percentile(&lateness, 0.99),
            max(&lateness),
        ),
        interval: (percentile(&interval, 0.5), percentile(&interval, 0.99)),
        latency_ms: (
            min(&latency_ms),
            percentile(&latency_ms, 0.5),
            max(&latency_ms),
        ),
        host_start: ends(&playout).0,
        drift: ends(&playout).1 - ends(&playout).0,
        playout: spread(&playout),
        playout_without: spread(&lateness),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // without it: a short smoke run that only checks that it works.
    let full = std::env::args().any(|a| a == "--bench");
    let seconds: f64 = std::env::var("SND_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 10.0 } else { 0.2 });
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped
    let periods = ((seconds * 1e3 / PERIOD_MS).round().clamp(2.0, 1e6)) as usize;
    let dir = tempfile::tempdir().unwrap();
    let wav_dir = dir.path().to_str().unwrap().to_string();
    let mut cases: Vec<(String, Vec<String>)> = vec![
        ("null".into(), vec![]),
        (
            "wav".into(),
            vec![
                "--backend".into(),
                "wav".into(),
                "--wav-dir".into(),
                wav_dir,
            ],
        ),
    ];
    if let Ok(pcm) = std::env::var("SND_BENCH_ALSA_PCM") {
        cases.push((
            format!("alsa `{pcm}`"),
            vec![
                "--backend".into(),
                "alsa".into(),
                "--alsa-playback".into(),
                pcm.clone(),
                "--alsa-capture".into(),
                pcm,
            ],
        ));
    }

    // SND_BENCH_BACKENDS: a comma-separated subset of null, wav, alsa.
    if let Ok(only) = std::env::var("SND_BENCH_BACKENDS") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        cases.retain(|(name, _)| {
            only.iter()
                .any(|o| name.split_whitespace().next() == Some(*o))
        });
    }
    println!(
        "vhost-device-sound pacing benchmark on {}",
        vhost_device_test_frontend::machine_description()
    );
    println!(
        "{:.1} s of 48 kHz S16 stereo per backend, 10 ms periods, {DEPTH} in flight{}",
        periods as f64 * PERIOD_MS / 1e3,
        if full { "" } else { " (smoke run)" }
    );
    let mut rows = Vec::new();
    for (name, args) in &cases {
        let d = DaemonProcess::start(Path::new(BIN), args).expect("daemon starts");
        let r = play(&d, periods, !name.starts_with("alsa"));
        assert_eq!(r.times_ms.len(), periods);
        if !name.starts_with("alsa") {
            // Clock-paced: a period completes when its last byte is due.
            assert!(r.latency.iter().all(|&l| l == 0), "{name}: latency_bytes");
        }
        if let Ok(dump) = std::env::var("SND_BENCH_DUMP") {
            // One line per completion: ms after START, ideal ms, latency_bytes.
            let lines: String = (0..r.times_ms.len())
                .map(|k| {
                    format!(
                        "{:.3} {:.3} {}\n",
                        r.times_ms[k], r.ideal_ms[k], r.latency[k]
                    )
                })
                .collect();
            let first = name.split_whitespace().next().unwrap_or("run");
            std::fs::write(format!("{dump}.{first}"), lines).unwrap();
        }
        rows.push((name.clone(), r.cpu_ms_per_s, r.underruns, summarize(&r)));
    }
    println!();
    println!("| backend | CPU ms per s of audio | completion − ideal p50 / p99 / max (ms) | interval − 10 ms p50 / p99 (ms) | driver underruns |");
    println!("|---|---|---|---|---|");
    for (name, cpu, underruns, s) in &rows {
        println!(
            "| {name} | {cpu:.2} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {underruns} |",
            s.lateness.0, s.lateness.1, s.lateness.2, s.interval.0, s.interval.1
        );
    }
    println!();
    println!("| backend | latency_bytes min / p50 / max (ms of audio) | implied host start after START (ms) | host fell behind by (ms) | play-out estimate error p50 / p99 (ms) | the same with latency_bytes taken as 0 |");
    println!("|---|---|---|---|---|---|");
    for (name, _, _, s) in &rows {
        println!(
            "| {name} | {:.2} / {:.2} / {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            s.latency_ms.0,
            s.latency_ms.1,
            s.latency_ms.2,
            s.host_start,
            s.drift,
            s.playout.0,
            s.playout.1,
            s.playout_without.0,
            s.playout_without.1
        );
    }
}
