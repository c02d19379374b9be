// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! When the PipeWire graph plays each period: a capture stream in the
//! benchmark's own process, linked to the daemon's playback node next to
//! the null sink, records for every frame that ends a period the graph
//! cycle that carried it and where in the cycle's quantum it was.
//!
//! Both inputs of the daemon's output port get the same buffer in the same
//! graph cycle: the observer depends only on the daemon's node. (Through
//! the sink's monitor the audio would reach it only after the sink, the
//! graph's driver, had taken it in, and the cycle it arrives in would have
//! to be assumed.) A cycle's time is the graph clock's (`pw_time.now`,
//! the driver's `clock.nsec`: when the null sink's timer started the
//! cycle, `CLOCK_MONOTONIC`), so the frame at `offset` of the quantum is
//! played at `now + offset / rate` by PipeWire's clock, however late this
//! process's callback runs. The benchmark's periods number their frames
//! (left channel: the period `k mod 32767 + 1`, right: the frame, 1 to
//! 480; never silence, and exact through PipeWire's float graph), so no
//! period can be taken for another. The node asks to be processed even
//! when unlinked (`node.always-process`), so it is running when the
//! daemon's stream starts: otherwise the graph's first cycle with audio
//! sometimes went by before the observer's node had started.
//!
//! By this clock a frame is played at the earliest moment any sink could
//! play it (a null sink has no buffer of its own; a sound card adds its
//! buffer, which PipeWire reports as the driver's delay).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pipewire as pw;
use pw::spa;

/// The observer's node name (its ports are `NAME:input_FL`, `NAME:input_FR`).
pub const NODE: &str = "bench-observer";
/// Frames of a benchmark period (10 ms at 48 kHz).
pub const PERIOD_FRAMES: u16 = 480;
const RATE: u32 = 48_000;

/// The end of one period as the graph played it.
#[derive(Debug, Clone, Copy)]
pub struct End {
    /// The period's left-channel number, `k mod 32767 + 1`.
    pub number: u16,
    /// When the graph cycle that carried it started (`CLOCK_MONOTONIC`, ns).
    pub cycle_ns: i64,
    /// Frames before it in that cycle's quantum.
    pub offset: u32,
}

impl End {
    /// When the period's last frame has been played, `CLOCK_MONOTONIC` ns.
    pub fn played_ns(&self) -> f64 {
        self.cycle_ns as f64 + f64::from(self.offset + 1) * 1e9 / f64::from(RATE)
    }
}

/// What the observer saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub ends: Vec<End>,
    /// Graph cycles that carried the benchmark's audio.
    pub cycles: usize,
    /// The quanta seen, in frames (smallest and largest).
    pub quantum: (u32, u32),
    /// Silent frames between the first and the last period frame seen:
    /// PipeWire played silence inside the run (the daemon's ring was empty).
    pub silence_inside: u64,
    silence_pending: u64,
    /// A period's frame has been seen.
    started: bool,
    /// How long after its cycle's start each callback ran, ns (this
    /// process's scheduling; does not enter the play-out times).
    pub callback_late_ns: Vec<i64>,
}

impl Seen {
    fn cycle(&mut self, now: i64, data: &[u8]) {
        let frames = u32::try_from(data.len() / 4).unwrap_or(u32::MAX);
        let mut audio = false;
        for (i, f) in data.chunks_exact(4).enumerate() {
            let left = i16::from_le_bytes([f[0], f[1]]);
            let right = i16::from_le_bytes([f[2], f[3]]);
            if left == 0 && right == 0 {
                if self.started {
                    self.silence_pending += 1;
                }
                continue;
            }
            self.started = true;
            audio = true;
            self.silence_inside += std::mem::take(&mut self.silence_pending);
            if right == i16::try_from(PERIOD_FRAMES).unwrap_or(i16::MAX) && left > 0 {
                self.ends.push(End {
                    number: left.unsigned_abs(),
                    cycle_ns: now,
                    offset: u32::try_from(i).unwrap_or(u32::MAX),
                });
            }
        }
        if audio {
            self.quantum = if self.cycles == 0 {
                (frames, frames)
            } else {
                (self.quantum.0.min(frames), self.quantum.1.max(frames))
            };
            self.cycles += 1;
        }
    }
}

/// The observer's thread; [`Observer::finish`] stops it.
pub struct Observer {
    quit: pw::channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Seen>>,
}

impl Observer {
    /// Connect to the PipeWire at `socket` and make the capture node
    /// [`NODE`] (48 kHz S16 stereo, DSP ports, not linked).
    pub fn start(socket: &Path) -> Self {
        let sock = UnixStream::connect(socket).expect("observer connects to PipeWire");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (quit, quit_rx) = pw::channel::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let seen = seen.clone();
            std::thread::spawn(move || run(sock, &seen, quit_rx, &ready_tx))
        };
        ready_rx
            .recv()
            .expect("observer thread reports")
            .expect("observer stream");
        Self {
            quit,
            thread: Some(thread),
            seen,
        }
    }

    /// Stop and say what was seen.
    pub fn finish(mut self) -> Seen {
        let _ = self.quit.send(());
        if let Some(t) = self.thread.take() {
            t.join().expect("observer thread");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.quit.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn monotonic_ns() -> i64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
}

fn format_pod() -> Vec<u8> {
    let mut info = spa::param::audio::AudioInfoRaw::new();
    info.set_format(spa::param::audio::AudioFormat::S16LE);
    info.set_rate(RATE);
    info.set_channels(2);
    let mut position = [0; spa::param::audio::MAX_CHANNELS];
    position[0] = spa::sys::SPA_AUDIO_CHANNEL_FL;
    position[1] = spa::sys::SPA_AUDIO_CHANNEL_FR;
    info.set_position(position);
    let object = spa::pod::Object {
        type_: spa::utils::SpaTypes::ObjectParamFormat.as_raw(),
        id: spa::param::ParamType::EnumFormat.as_raw(),
        properties: info.into(),
    };
    spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &spa::pod::Value::Object(object),
    )
    .unwrap()
    .0
    .into_inner()
}

fn run(
    sock: UnixStream,
    seen: &Arc<Mutex<Seen>>,
    quit: pw::channel::Receiver<()>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) {
    pw::init();
    let mainloop = pw::main_loop::MainLoopRc::new(None).unwrap();
    let context = pw::context::ContextRc::new(&mainloop, None).unwrap();
    let core = context.connect_fd_rc(sock.into(), None).unwrap();
    let mut props = pw::properties::PropertiesBox::new();
    for (k, v) in [
        ("media.type", "Audio"),
        ("media.category", "Capture"),
        ("node.name", NODE),
        ("node.always-process", "true"),
        ("node.want-driver", "true"),
        (
            "adapter.auto-port-config",
            "{ mode = dsp monitor = false control = false position = preserve }",
        ),
    ] {
        props.insert(k, v);
    }
    let stream = pw::stream::StreamRc::new(core, NODE, props).unwrap();
    let _listener = {
        let seen = seen.clone();
        stream
            .add_local_listener_with_user_data(())
            .process(move |stream, ()| {
                let Some(mut buffer) = stream.dequeue_buffer() else {
                    return;
                };
                let Ok(time) = stream.time() else {
                    return;
                };
                let late = monotonic_ns() - time.now();
                let Some(d) = buffer.datas_mut().first_mut() else {
                    return;
                };
                let (offset, size) = (d.chunk().offset() as usize, d.chunk().size() as usize);
                let Some(bytes) = d.data() else {
                    return;
                };
                let start = offset.min(bytes.len());
                let end = start.saturating_add(size).min(bytes.len());
                let mut s = seen.lock().unwrap();
                let before = s.cycles;
                s.cycle(time.now(), &bytes[start..end]);
                if s.cycles > before {
                    s.callback_late_ns.push(late);
                }
            })
            .register()
            .unwrap()
    };
    let pod = format_pod();
    let mut pods = [spa::pod::Pod::from_bytes(&pod).unwrap()];
    if let Err(e) = stream.connect(
        spa::utils::Direction::Input,
        None,
        pw::stream::StreamFlags::MAP_BUFFERS | pw::stream::StreamFlags::RT_PROCESS,
        &mut pods,
    ) {
        let _ = ready.send(Err(e.to_string()));
        return;
    }
    let _quit = {
        let weak = mainloop.downgrade();
        quit.attach(mainloop.loop_(), move |()| {
            if let Some(m) = weak.upgrade() {
                m.quit();
            }
        })
    };
    let _ = ready.send(Ok(()));
    mainloop.run();
    let _ = stream.disconnect();
}
