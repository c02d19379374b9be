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
//! soon as it completes, so four are always in flight. Every frame of
//! period *k* carries *k* (left, `k mod 32767 + 1`) and its index in the
//! period (right, 1 to 480): a quiet signal whose play-out a sink can
//! place. Backends:
//!
//! - `null` and `wav`, paced by the daemon's timer;
//! - `alsa` on the PCM named by `SND_BENCH_ALSA_PCM` when that is set
//!   (with `ALSA_CONFIG_PATH` if the PCM needs a private configuration;
//!   `benches/alsa-on-pipewire.sh` sets up a clocked one on a private
//!   PipeWire);
//! - `pipewire` (with the `pipewire` feature): a private headless PipeWire
//!   started as the integration tests start it (`tests/private_pipewire`),
//!   the daemon with `--backend pipewire` on it, its playback node linked
//!   with `pw-link` to the null sink that drives the graph and to an
//!   observer (`pipewire_observer`), a capture stream in this process that
//!   records when the graph played each period's last frame.
//!
//! `SND_BENCH_BACKENDS=null,wav,alsa,pipewire` picks a subset;
//! `SND_BENCH_SETTLE_MS` pauses between PREPARE and START;
//! `SND_BENCH_DUMP=PATH` writes each completion (ms after START, ideal ms,
//! latency_bytes, and for `pipewire` when the graph played the period's
//! last frame, ms after START) to `PATH.<backend>`. A host-paced run waits
//! after its last completion until the host has played what it holds, then
//! stops.
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
//!   the completion jitter. For `alsa` the true `T0` is not observable
//!   from here: only `T0 ≥ 0` and the error are checks;
//! - **observed play-out** (`pipewire` only): when PipeWire's graph played
//!   each period's last frame, by the graph's clock (the cycle's start,
//!   `CLOCK_MONOTONIC`, plus the frame's place in the quantum; see
//!   `pipewire_observer`). From it the true `T0` and how far the host fell
//!   behind, and `t + latency / rate − played` for every completion: the
//!   error of latency_bytes itself (p1, p50, p99, largest magnitude), with
//!   the silence the graph played inside the run, the xruns the daemon
//!   logged, the quantum, and how late the observer's own callback ran.
//!
//! Prints Markdown tables with the machine it ran on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "pipewire")]
mod pipewire_observer;
#[cfg(feature = "pipewire")]
#[path = "../tests/private_pipewire/mod.rs"]
mod private_pipewire;

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

/// Period `k`: a quiet signal that numbers every frame (left: the period,
/// right: the frame), so that a sink can tell which byte it plays.
fn period_data(k: usize) -> Vec<u8> {
    (0..u16::try_from(PERIOD / 4).unwrap())
        .flat_map(|f| {
            let left = i16::try_from(k % 32767 + 1).unwrap();
            let right = i16::try_from(f + 1).unwrap();
            left.to_le_bytes().into_iter().chain(right.to_le_bytes())
        })
        .collect()
}

/// `CLOCK_MONOTONIC`, ns (PipeWire's graph clock counts in it).
fn monotonic_ns() -> i64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
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
    /// START, in `CLOCK_MONOTONIC` ns.
    #[cfg_attr(not(feature = "pipewire"), allow(dead_code))]
    start_ns: i64,
}

/// Play `periods` on stream 0 of `d`; `prepared` runs after PREPARE (to
/// link a PipeWire node).
fn play(d: &DaemonProcess, periods: usize, clock_paced: bool, prepared: &mut dyn FnMut()) -> Run {
    let mut s = Session::start(&d.socket, &Options::default()).unwrap();
    let mut set = le32(SET_PARAMS).to_vec();
    for v in [0, PERIOD * 4, PERIOD, 0] {
        set.extend_from_slice(&le32(v));
    }
    set.extend_from_slice(&[2, 5, 7, 0]); // stereo, S16, 48 kHz
    assert_eq!(ctl(&mut s, &set), OK, "SET_PARAMS");
    assert_eq!(cmd(&mut s, PREPARE), OK, "PREPARE");
    prepared();
    // A host that needs time after PREPARE (a PipeWire stream that is
    // linked by an outside tool) gets it here, as an application that
    // fills its buffer before it starts would give it.
    std::thread::sleep(settle());

    let x = s.ram().alloc(4, 8).unwrap();
    s.ram().write(x, &le32(0)).unwrap();
    // One buffer per message in flight: period k goes into slot k mod
    // DEPTH, whose previous period has completed (at most DEPTH in flight).
    let slots: Vec<u64> = (0..DEPTH)
        .map(|_| s.ram().alloc(u64::from(PERIOD), 8).unwrap())
        .collect();
    let post = |s: &mut Session, k: usize| -> (u16, u64) {
        let data = slots[k % DEPTH];
        s.ram().write(data, &period_data(k)).unwrap();
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
    for k in 0..DEPTH {
        in_flight.push_back(post(&mut s, k));
    }
    let mut posted = DEPTH;
    let cpu_before = cpu_ns(d.pid());
    let start = Instant::now();
    let start_ns = monotonic_ns();
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
                in_flight.push_back(post(&mut s, posted));
                posted += 1;
            }
        }
    }
    let cpu = cpu_ns(d.pid()).saturating_sub(cpu_before);
    if !clock_paced {
        // Let the host play what it holds before STOP drops it (as a
        // driver drains), so that the last periods are heard too.
        let queued_ms = latency.last().map_or(0.0, |&l| f64::from(l) / BYTES_PER_MS);
        std::thread::sleep(Duration::from_secs_f64((queued_ms + 100.0) / 1e3));
    }
    assert_eq!(cmd(&mut s, STOP), OK, "STOP");
    assert_eq!(cmd(&mut s, RELEASE), OK, "RELEASE");
    let audio_s = periods as f64 * PERIOD_MS / 1e3;
    Run {
        times_ms,
        ideal_ms,
        latency,
        underruns,
        cpu_ms_per_s: cpu as f64 / 1e6 / audio_s,
        start_ns,
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

/// What paces a backend.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pacing {
    /// The daemon's own timer (`null`, `wav`): latency_bytes is 0.
    Clock,
    /// ALSA's clock, on the PCM of `SND_BENCH_ALSA_PCM`.
    Alsa,
    /// A private PipeWire's graph clock (its null sink drives the graph).
    PipeWire,
}

struct Case {
    name: String,
    args: Vec<String>,
    pacing: Pacing,
}

/// Play-out as PipeWire's graph played it (the `pipewire` case), against
/// what latency_bytes predicted.
#[derive(Default)]
struct Observed {
    /// Periods whose last frame the graph was seen to play.
    seen: usize,
    /// For each completion, when its last frame was played (ms after
    /// START), if seen.
    played_ms: Vec<Option<f64>>,
    /// The median of `played − (k + 1) × 10 ms` over the first periods:
    /// when the host truly began playing, after START.
    host_start: f64,
    /// The same over the last periods, minus `host_start`.
    drift: f64,
    /// `t + latency / rate − played`: p1, p50, p99, and the largest
    /// magnitude.
    error: (f64, f64, f64, f64),
    /// The same with latency_bytes taken as 0 (`t − played`): p50.
    error_without: f64,
    /// Silence the graph played between the periods (ms).
    silence_ms: f64,
    /// The graph's quanta (frames, smallest and largest), and how many
    /// cycles carried the audio.
    quantum: (u32, u32),
    cycles: usize,
    /// Underruns and missed graph cycles the daemon logged.
    host_xruns: usize,
    /// How late the observer's own callback ran after its cycle began (ms,
    /// p50 and p99): scheduling, not part of the play-out times.
    observer_late: (f64, f64),
}

#[cfg(feature = "pipewire")]
fn observe(r: &Run, seen: &pipewire_observer::Seen, host_xruns: usize) -> Observed {
    // Period numbers wrap at 32767: unwrap them in the order seen.
    let mut played_ms = vec![None; r.times_ms.len()];
    let (mut base, mut last) = (0usize, 0u16);
    for end in &seen.ends {
        if end.number < last {
            base += 32767;
        }
        last = end.number;
        let k = base + usize::from(end.number) - 1;
        if let Some(slot) = played_ms.get_mut(k) {
            slot.get_or_insert((end.played_ns() - r.start_ns as f64) / 1e6);
        }
    }
    let known: Vec<usize> = (0..played_ms.len())
        .filter(|&k| played_ms[k].is_some())
        .collect();
    let played = |k: usize| played_ms[k].unwrap_or(f64::NAN);
    let start: Vec<f64> = known
        .iter()
        .map(|&k| played(k) - (k + 1) as f64 * PERIOD_MS)
        .collect();
    let error: Vec<f64> = known
        .iter()
        .map(|&k| r.times_ms[k] + f64::from(r.latency[k]) / BYTES_PER_MS - played(k))
        .collect();
    let without: Vec<f64> = known.iter().map(|&k| r.times_ms[k] - played(k)).collect();
    let late: Vec<f64> = seen
        .callback_late_ns
        .iter()
        .map(|&n| n as f64 / 1e6)
        .collect();
    let mut o = Observed {
        seen: known.len(),
        silence_ms: seen.silence_inside as f64 / 48.0,
        quantum: seen.quantum,
        cycles: seen.cycles,
        host_xruns,
        played_ms: played_ms.clone(),
        ..Observed::default()
    };
    if !known.is_empty() {
        o.host_start = ends(&start).0;
        o.drift = ends(&start).1 - ends(&start).0;
        o.error = (
            percentile(&error, 0.01),
            percentile(&error, 0.5),
            percentile(&error, 0.99),
            error.iter().fold(0.0, |m: f64, e| m.max(e.abs())),
        );
        o.error_without = percentile(&without, 0.5);
    }
    if !late.is_empty() {
        o.observer_late = (percentile(&late, 0.5), percentile(&late, 0.99));
    }
    o
}

/// The `pipewire` case: a private PipeWire (as the integration tests start
/// it), the daemon with `--backend pipewire` linked to its null sink, and
/// the observer linked to the daemon's node beside the sink.
#[cfg(feature = "pipewire")]
fn play_on_pipewire(periods: usize) -> (Run, Observed) {
    use pipewire_observer::{Observer, NODE};
    let pw = private_pipewire::PipeWire::start();
    let d = pw.daemon(&[]);
    let observer = Observer::start(&pw.socket());
    let r = play(&d, periods, false, &mut || {
        for ch in ["FL", "FR"] {
            let out = format!("vhost-device-sound-0:output_{ch}");
            pw.link(&out, &format!("test-sink:playback_{ch}"));
            pw.link(&out, &format!("{NODE}:input_{ch}"));
        }
    });
    let seen = observer.finish();
    let log = d.stderr_text();
    let xruns = log.matches("PipeWire playback: underrun").count()
        + log.matches("missed a graph cycle").count();
    let o = observe(&r, &seen, xruns);
    (r, o)
}

#[cfg(not(feature = "pipewire"))]
fn play_on_pipewire(_periods: usize) -> (Run, Observed) {
    unreachable!("the pipewire case is only offered with the pipewire feature")
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
    let mut cases = vec![
        Case {
            name: "null".into(),
            args: vec![],
            pacing: Pacing::Clock,
        },
        Case {
            name: "wav".into(),
            args: vec![
                "--backend".into(),
                "wav".into(),
                "--wav-dir".into(),
                wav_dir,
            ],
            pacing: Pacing::Clock,
        },
    ];
    if let Ok(pcm) = std::env::var("SND_BENCH_ALSA_PCM") {
        cases.push(Case {
            name: format!("alsa `{pcm}`"),
            args: vec![
                "--backend".into(),
                "alsa".into(),
                "--alsa-playback".into(),
                pcm.clone(),
                "--alsa-capture".into(),
                pcm,
            ],
            pacing: Pacing::Alsa,
        });
    }
    let backends = std::env::var("SND_BENCH_BACKENDS").ok();
    let asked = |name: &str| {
        backends
            .as_deref()
            .is_some_and(|b| b.split(',').any(|o| o.trim() == name))
    };
    // Also in the smoke run: the case takes about 0.4 s (README).
    if cfg!(feature = "pipewire") {
        cases.push(Case {
            name: "pipewire".into(),
            args: vec![],
            pacing: Pacing::PipeWire,
        });
    } else if asked("pipewire") {
        println!("(no pipewire case: built without the pipewire feature)");
    }

    // SND_BENCH_BACKENDS: a comma-separated subset of null, wav, alsa,
    // pipewire.
    if backends.is_some() {
        cases.retain(|c| asked(c.name.split_whitespace().next().unwrap_or("")));
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
    let mut observed = Vec::new();
    for case in &cases {
        let (r, o) = if case.pacing == Pacing::PipeWire {
            let (r, o) = play_on_pipewire(periods);
            (r, Some(o))
        } else {
            let d = DaemonProcess::start(Path::new(BIN), &case.args).expect("daemon starts");
            let r = play(&d, periods, case.pacing == Pacing::Clock, &mut || {});
            (r, None)
        };
        let name = &case.name;
        assert_eq!(r.times_ms.len(), periods);
        match case.pacing {
            // A period completes when its last byte is due.
            Pacing::Clock => {
                assert!(r.latency.iter().all(|&l| l == 0), "{name}: latency_bytes");
            }
            // The host queues: latency_bytes is not 0 (not checked per
            // completion: a graph cycle can empty the ring between the
            // daemon's write and its reading of the delay).
            Pacing::PipeWire => {
                assert!(r.latency.iter().any(|&l| l > 0), "{name}: latency_bytes");
            }
            Pacing::Alsa => {}
        }
        if let Ok(dump) = std::env::var("SND_BENCH_DUMP") {
            // One line per completion: ms after START, ideal ms,
            // latency_bytes, and for pipewire when the graph played its
            // last frame (ms after START, `-` if not seen).
            let lines: String = (0..r.times_ms.len())
                .map(|k| {
                    let played = o
                        .as_ref()
                        .map(|o| o.played_ms[k].map_or(" -".into(), |p| format!(" {p:.3}")))
                        .unwrap_or_default();
                    format!(
                        "{:.3} {:.3} {}{played}\n",
                        r.times_ms[k], r.ideal_ms[k], r.latency[k]
                    )
                })
                .collect();
            let first = name.split_whitespace().next().unwrap_or("run");
            std::fs::write(format!("{dump}.{first}"), lines).unwrap();
        }
        if let Some(o) = o {
            observed.push((name.clone(), o));
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
    if observed.is_empty() {
        return;
    }
    println!();
    println!("Play-out observed on PipeWire's graph clock (see the README):");
    println!();
    println!("| backend | periods seen played | observed host start after START (ms) | observed host fell behind by (ms) | latency_bytes prediction − observed play-out p1 / p50 / p99 / max abs (ms) | with latency_bytes taken as 0, p50 (ms) | silence inside (ms) | host xruns | quantum (frames), cycles with audio | observer callback late p50 / p99 (ms) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, o) in &observed {
        println!(
            "| {name} | {} of {periods} | {:.2} | {:.2} | {:.2} / {:.2} / {:.2} / {:.2} | {:.2} | {:.1} | {} | {}–{}, {} | {:.2} / {:.2} |",
            o.seen,
            o.host_start,
            o.drift,
            o.error.0,
            o.error.1,
            o.error.2,
            o.error.3,
            o.error_without,
            o.silence_ms,
            o.host_xruns,
            o.quantum.0,
            o.quantum.1,
            o.cycles,
            o.observer_late.0,
            o.observer_late.1
        );
    }
}
