// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `pipewire` backend: a PipeWire stream per PCM stream, host-paced by
//! the PipeWire graph's clock.
//!
//! PipeWire objects live on the thread that made them, and PipeWire calls
//! back from its own main loop, so each stream has one bounded thread that
//! owns a connection to the user's PipeWire (main loop, context, core) and,
//! between PREPARE and RELEASE, a `pw_stream` node. The stream's `process`
//! callback runs on libpipewire's data thread of that connection, inside
//! the graph cycle (`RT_PROCESS`), so a busy main loop cannot make it miss
//! a cycle. The vring worker never calls PipeWire; the sides share only a
//! byte ring and a few flags under a mutex (held for one copy at most),
//! and commands go to the thread through a `pipewire::channel` that wakes
//! its main loop:
//!
//! - playback: [`PcmHost::write`] puts a guest buffer into the ring when it
//!   fits (else `Ok(false)`: the worker keeps the buffer held). PipeWire's
//!   `process` callback, once per graph cycle, takes the quantum it asks
//!   for from the ring and then signals the eventfd
//!   ([`PcmHost::ready_fd`], in the worker's epoll), so the next guest
//!   buffer is taken as soon as PipeWire has consumed room for it: the
//!   graph's clock paces the guest, and a guest buffer completes when
//!   PipeWire has taken the audio before it.
//! - capture: `process` appends what the graph captured to the ring and
//!   signals; [`PcmHost::read`] takes a whole guest buffer once the ring
//!   holds one.
//!
//! The ring holds [`RING_PERIODS`] of the guest's periods plus one PipeWire
//! quantum (playback), or twice the guest's buffer and at least 250 ms
//! (capture). The stream asks for a quantum of one guest period, at least
//! [`MIN_LATENCY_MS`] and rounded up to a power of two as PipeWire's quanta
//! are (`node.latency`; see [`latency_frames`]): the graph's quantum is the
//! smallest any of its nodes asks for, and a guest with 5 ms periods
//! should not make the whole desktop's graph run at that pace, nor leave
//! the stream only 5 ms to answer each cycle. A playback cycle that finds
//! the ring short is padded with silence; if the guest's audio then goes
//! on without a STOP, that gap was an underrun and is reported as an xrun
//! (the end of playback is not one). A capture ring that overflows drops
//! the oldest bytes and reports an xrun, and so does a graph cycle the
//! stream's node missed (seen from the graph's clock).
//! `delay_bytes` (the guest's `latency_bytes`) is the ring plus what
//! PipeWire reports as queued and delayed in the graph.
//!
//! Nodes are named `NAME-N` (stream *N*, `NAME` from `--pipewire-name`) and
//! carry `target.object` when a target is given; linking them is the
//! session manager's job (WirePlumber), as for any PipeWire client.
//!
//! The thread connects at the stream's first PREPARE, which waits for that
//! (a local socket connect, bounded by 5 s); later commands never wait. A
//! PipeWire that cannot be reached fails PREPARE (`IO_ERR`) with a message
//! that says where the daemon looked; a PipeWire that goes away while
//! streams run fails their I/O (`IO_ERR`) until the next PREPARE, which
//! connects again.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use pipewire as pw;
use pw::spa;
use pw::spa::param::audio::AudioFormat;

use super::{silence, PcmHost, PcmParams};
use crate::virtio::{Direction, Format};

/// The default prefix of the node names.
pub const DEFAULT_NAME: &str = "vhost-device-sound";

/// Guest periods the playback ring holds (plus one PipeWire quantum).
pub const RING_PERIODS: usize = 4;

/// Most buffers one capture callback takes (PipeWire's own limit).
const MAX_BUFFERS: usize = 64;

/// How long PREPARE waits for a new connection to PipeWire (a local socket
/// connect; only the first PREPARE, or the first after PipeWire went away,
/// makes one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The SPA sample format of a stream format.
pub fn spa_format(format: Format) -> AudioFormat {
    match format {
        Format::U8 => AudioFormat::U8,
        Format::S16 => AudioFormat::S16LE,
        // virtio's S24 is ALSA's S24_LE: 24 bits in the low bytes of 32.
        Format::S24 => AudioFormat::S24_32LE,
        Format::S32 => AudioFormat::S32LE,
        Format::Float => AudioFormat::F32LE,
    }
}

/// The SPA channel positions of `channels` interleaved channels, in ALSA's
/// order (the device's channel maps): mono, FL FR, FL FR FC, FL FR RL RR,
/// … 7.1; channels beyond eight are AUX0, AUX1, ….
pub fn spa_positions(channels: u8) -> Vec<u32> {
    use spa::sys::*;
    let standard: &[u32] = match channels {
        1 => &[SPA_AUDIO_CHANNEL_MONO],
        2 => &[SPA_AUDIO_CHANNEL_FL, SPA_AUDIO_CHANNEL_FR],
        3 => &[
            SPA_AUDIO_CHANNEL_FL,
            SPA_AUDIO_CHANNEL_FR,
            SPA_AUDIO_CHANNEL_FC,
        ],
        4 => &[
            SPA_AUDIO_CHANNEL_FL,
            SPA_AUDIO_CHANNEL_FR,
            SPA_AUDIO_CHANNEL_RL,
            SPA_AUDIO_CHANNEL_RR,
        ],
        5 => &[
            SPA_AUDIO_CHANNEL_FL,
            SPA_AUDIO_CHANNEL_FR,
            SPA_AUDIO_CHANNEL_RL,
            SPA_AUDIO_CHANNEL_RR,
            SPA_AUDIO_CHANNEL_FC,
        ],
        _ => &[
            SPA_AUDIO_CHANNEL_FL,
            SPA_AUDIO_CHANNEL_FR,
            SPA_AUDIO_CHANNEL_RL,
            SPA_AUDIO_CHANNEL_RR,
            SPA_AUDIO_CHANNEL_FC,
            SPA_AUDIO_CHANNEL_LFE,
            SPA_AUDIO_CHANNEL_SL,
            SPA_AUDIO_CHANNEL_SR,
        ],
    };
    (0..u32::from(channels))
        .map(|i| {
            standard
                .get(i as usize)
                .copied()
                .unwrap_or(SPA_AUDIO_CHANNEL_AUX0 + i - 8)
        })
        .collect()
}

/// The shortest quantum a stream asks for.
pub const MIN_LATENCY_MS: u32 = 20;

/// The quantum a stream asks for (`node.latency`), in frames at its rate:
/// one guest period, at least [`MIN_LATENCY_MS`], rounded up to a power of
/// two.
pub fn latency_frames(params: &PcmParams) -> u32 {
    let period = params.period_bytes / params.frame_bytes().max(1);
    period
        .max(params.rate / (1000 / MIN_LATENCY_MS))
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
}

/// What a stream's node is called and where it wants to be linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// `node.name`.
    pub node_name: String,
    /// `target.object`: the node (name or serial) the session manager
    /// should link the stream to; `None` for its default.
    pub target: Option<String>,
    /// Playback or capture.
    pub direction: Direction,
    /// Stream id (for the description).
    pub id: u32,
    /// More properties (`--pipewire-property`), set last.
    pub extra: Vec<(String, String)>,
}

impl NodeSettings {
    /// The settings of stream `id` named after `name`.
    pub fn new(
        name: &str,
        id: u32,
        direction: Direction,
        target: Option<&str>,
        extra: &[(String, String)],
    ) -> Self {
        Self {
            node_name: format!("{name}-{id}"),
            target: target.map(str::to_string),
            direction,
            id,
            extra: extra.to_vec(),
        }
    }

    /// The stream's properties for `params`, in the order they are set (a
    /// later one wins).
    pub fn properties(&self, params: &PcmParams) -> Vec<(String, String)> {
        let (category, what) = match self.direction {
            Direction::Output => ("Playback", "playback"),
            Direction::Input => ("Capture", "capture"),
        };
        let mut p = vec![
            (*pw::keys::MEDIA_TYPE, "Audio".to_string()),
            (*pw::keys::MEDIA_CATEGORY, category.to_string()),
            (*pw::keys::APP_NAME, DEFAULT_NAME.to_string()),
            (*pw::keys::NODE_NAME, self.node_name.clone()),
            (
                *pw::keys::NODE_DESCRIPTION,
                format!("virtio-snd stream {} ({what})", self.id),
            ),
            (
                *pw::keys::MEDIA_NAME,
                format!("virtio-snd stream {} ({what})", self.id),
            ),
            (
                *pw::keys::NODE_LATENCY,
                format!("{}/{}", latency_frames(params), params.rate),
            ),
            (*pw::keys::AUDIO_CHANNELS, params.channels.to_string()),
        ];
        if let Some(target) = &self.target {
            p.push(("target.object", target.clone()));
        }
        p.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(self.extra.iter().cloned())
            .collect()
    }
}

/// Where libpipewire looks for the daemon, for messages.
fn remote_description() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let remote = var("PIPEWIRE_REMOTE").unwrap_or_else(|| "pipewire-0".to_string());
    if remote.starts_with('/') {
        return remote;
    }
    match var("PIPEWIRE_RUNTIME_DIR").or_else(|| var("XDG_RUNTIME_DIR")) {
        Some(dir) => format!("{dir}/{remote}"),
        None => format!("{remote} (neither PIPEWIRE_RUNTIME_DIR nor XDG_RUNTIME_DIR is set)"),
    }
}

/// The error for a PipeWire that cannot be reached, saying what to do.
fn connect_error(cause: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!(
            "cannot connect to PipeWire at {} ({cause}): is PipeWire running? Set \
             PIPEWIRE_RUNTIME_DIR or XDG_RUNTIME_DIR to the directory of its socket \
             (PIPEWIRE_REMOTE names the socket, default pipewire-0); as root or from a \
             service, XDG_RUNTIME_DIR=/run/user/<uid> of the user whose PipeWire to use",
            remote_description()
        ),
    )
}

/// Connect: a main loop, a context and a core on this thread. `realtime`:
/// with libpipewire's `client-rt.conf`, whose `module-rt` gives the data
/// thread (where `process` runs) real-time priority where the system allows
/// it (RTKit, or `CAP_SYS_NICE`/`RLIMIT_RTPRIO`), as PipeWire's own players
/// have.
fn connect_core(
    realtime: bool,
) -> io::Result<(
    pw::main_loop::MainLoopRc,
    pw::context::ContextRc,
    pw::core::CoreRc,
)> {
    pw::init();
    let mainloop = pw::main_loop::MainLoopRc::new(None).map_err(io::Error::other)?;
    let props = realtime.then(|| {
        let mut p = pw::properties::PropertiesBox::new();
        p.insert("config.name", "client-rt.conf");
        p
    });
    let context = pw::context::ContextRc::new(&mainloop, props).map_err(io::Error::other)?;
    let core = context.connect_rc(None).map_err(|e| {
        // libpipewire leaves the reason of a failed connect in errno.
        let os = io::Error::last_os_error();
        match os.raw_os_error() {
            Some(n) if n != 0 => connect_error(&os),
            _ => connect_error(&e),
        }
    })?;
    Ok((mainloop, context, core))
}

/// Connect to PipeWire once, so that a daemon started without one says so
/// at startup rather than at the guest's first PREPARE.
pub fn check_connection() -> io::Result<()> {
    connect_core(false).map(drop)
}

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<u8>,
    /// Bumped at every PREPARE and RELEASE: a stream of an older
    /// generation (still in the thread's hands) touches nothing.
    generation: u64,
    direction: Option<Direction>,
    /// The guest's period, bytes.
    period: usize,
    /// Capture: the ring's bound.
    capture_cap: usize,
    /// Playback: the last quantum PipeWire asked for, bytes.
    quantum: usize,
    running: bool,
    /// Playback: data came since START.
    had_data: bool,
    /// Playback: a cycle found the ring short after data had come.
    starved: bool,
    xrun: bool,
    /// Bytes queued or delayed inside PipeWire.
    pw_delay: u32,
    /// The graph's clock at the last cycle, and how far it went in the one
    /// before (to see a cycle the stream missed).
    ticks: Option<u64>,
    tick_step: u64,
    failed: Option<String>,
}

impl Inner {
    /// The state after PREPARE with `params`.
    fn prepared(generation: u64, params: &PcmParams) -> Self {
        let period = usize::try_from(params.period_bytes).unwrap_or(usize::MAX);
        let buffer = usize::try_from(params.buffer_bytes).unwrap_or(period);
        Inner {
            generation,
            direction: Some(params.direction),
            period,
            // Capture: twice the guest's buffer, and at least a quarter of
            // a second, so that a late worker does not lose samples.
            capture_cap: buffer
                .max(period.saturating_mul(4))
                .saturating_mul(2)
                .max(usize::try_from(params.byte_rate() / 4).unwrap_or(usize::MAX)),
            ..Inner::default()
        }
    }

    fn cap(&self) -> usize {
        match self.direction {
            Some(Direction::Input) => self.capture_cap,
            _ => self
                .period
                .saturating_mul(RING_PERIODS)
                .saturating_add(self.quantum.max(self.period)),
        }
    }

    /// Playback: take a guest buffer if it fits.
    fn put(&mut self, data: &[u8]) -> bool {
        if !self.ring.is_empty() && self.ring.len() + data.len() > self.cap() {
            return false;
        }
        if self.starved && self.running {
            // PipeWire played silence between audio: an underrun.
            self.xrun = true;
            log::debug!("PipeWire playback: underrun");
        }
        self.starved = false;
        self.had_data = true;
        self.ring.extend(data);
        true
    }

    /// Capture: give a whole guest buffer if the ring holds one.
    fn take(&mut self, buf: &mut [u8]) -> bool {
        if self.ring.len() < buf.len() {
            return false;
        }
        let n = buf.len();
        for (dst, src) in buf.iter_mut().zip(self.ring.drain(..n)) {
            *dst = src;
        }
        true
    }

    /// Playback, one graph cycle: fill `out` (a whole number of frames of
    /// `frame` bytes) from the ring, the rest with `silence`.
    fn play(&mut self, out: &mut [u8], frame: usize, silence: u8) {
        let n = if self.running {
            (self.ring.len() / frame * frame).min(out.len())
        } else {
            0
        };
        for (dst, src) in out[..n].iter_mut().zip(self.ring.drain(..n)) {
            *dst = src;
        }
        out[n..].fill(silence);
        if self.running && n < out.len() && self.had_data {
            self.starved = true;
        }
        self.quantum = out.len();
    }

    /// A graph cycle at `ticks` of the graph's clock. A clock that went on
    /// more than half a cycle further than the cycle before is a cycle
    /// this stream's node missed (it did not run in time): PipeWire played
    /// silence for it, or dropped what it captured. That is an xrun.
    fn cycle(&mut self, ticks: u64) {
        if let Some(prev) = self.ticks {
            let step = ticks.wrapping_sub(prev);
            if self.running && self.tick_step > 0 && step > self.tick_step + self.tick_step / 2 {
                self.xrun = true;
                log::debug!(
                    "PipeWire: missed a graph cycle (the clock moved {step} ticks, not {})",
                    self.tick_step
                );
            }
            self.tick_step = step;
        }
        self.ticks = Some(ticks);
    }

    /// Capture, one graph cycle: keep what PipeWire captured.
    fn record(&mut self, data: &[u8]) {
        if !self.running {
            return;
        }
        self.ring.extend(data);
        let cap = self.cap();
        if self.ring.len() > cap {
            let extra = self.ring.len() - cap;
            self.ring.drain(..extra);
            self.xrun = true;
            log::debug!("PipeWire capture: the guest is late, {extra} bytes dropped");
        }
    }
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    ready: EventFd,
    /// The connection failed: the thread is ending, the next PREPARE
    /// connects again.
    lost: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        vhost_device_common::lock(&self.inner)
    }

    fn signal(&self) {
        let _ = self.ready.write(1);
    }

    /// A host failure: I/O fails with `why` until the next PREPARE.
    fn fail(&self, generation: Option<u64>, why: String) {
        let mut g = self.lock();
        if generation.is_some_and(|gen| gen != g.generation) {
            return;
        }
        if g.failed.is_none() {
            log::error!("{why}");
            g.failed = Some(why);
        }
        drop(g);
        self.signal();
    }
}

/// What the vring side asks of the PipeWire thread.
enum Command {
    /// A stream for these parameters, of this generation: the one there
    /// is if it has them (so its links stay), else a new one.
    Prepare(PcmParams, u64),
    /// Activate or pause the stream.
    Active(bool),
    /// Drop the stream.
    Release,
    /// Drop everything and end the thread.
    Quit,
}

struct Link {
    commands: pw::channel::Sender<Command>,
    thread: JoinHandle<()>,
}

/// One stream on the user's PipeWire.
pub struct PipewirePcm {
    node: NodeSettings,
    shared: Arc<Shared>,
    link: Option<Link>,
}

impl std::fmt::Debug for PipewirePcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipewirePcm")
            .field("node", &self.node)
            .finish()
    }
}

impl PipewirePcm {
    /// A stream with these node settings; it connects to PipeWire at its
    /// first PREPARE.
    pub fn new(node: NodeSettings) -> io::Result<Self> {
        Ok(Self {
            node,
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                ready: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
                lost: AtomicBool::new(false),
            }),
            link: None,
        })
    }

    /// Make sure a thread with a live connection runs: start one (and wait
    /// for its connect, at most [`CONNECT_TIMEOUT`]) if there is none or
    /// the last one ended (PipeWire went away).
    fn connect(&mut self) -> io::Result<()> {
        let alive = self.link.as_ref().is_some_and(|l| !l.thread.is_finished());
        if alive && !self.shared.lost.load(Ordering::Acquire) {
            return Ok(());
        }
        // A lost connection's thread is quitting: joining it is quick.
        self.stop_thread();
        self.shared.lost.store(false, Ordering::Release);
        let (commands, receiver) = pw::channel::channel();
        let (connected_tx, connected) = mpsc::sync_channel(1);
        let (node, shared) = (self.node.clone(), self.shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("snd-pw-{}", self.node.id))
            .spawn(move || run(&node, receiver, &connected_tx, &shared))?;
        match connected.recv_timeout(CONNECT_TIMEOUT) {
            Ok(Ok(())) => {
                self.link = Some(Link { commands, thread });
                Ok(())
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                // The thread ends when its connect returns and it sees Quit.
                let _ = commands.send(Command::Quit);
                Err(connect_error(&"no answer in time"))
            }
        }
    }

    fn send(&self, command: Command) -> io::Result<()> {
        let link = self.link.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "not connected to PipeWire")
        })?;
        link.commands.send(command).map_err(|_| {
            io::Error::new(io::ErrorKind::NotConnected, "the PipeWire thread has ended")
        })
    }

    fn stop_thread(&mut self) {
        if let Some(link) = self.link.take() {
            let _ = link.commands.send(Command::Quit);
            let _ = link.thread.join();
        }
    }

    fn failure(&self, g: &Inner) -> Option<io::Error> {
        g.failed
            .as_ref()
            .map(|e| io::Error::other(format!("PipeWire node '{}': {e}", self.node.node_name)))
    }
}

impl Drop for PipewirePcm {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A live stream on the PipeWire thread. The listeners go first, so they
/// are removed before the stream is destroyed.
struct Active {
    _listener: pw::stream::StreamListener<Process>,
    _watch: pw::stream::StreamListener<()>,
    stream: pw::stream::StreamRc,
    params: PcmParams,
    /// The generation the callbacks serve (see [`Inner::generation`]).
    generation: Arc<AtomicU64>,
    /// The stream reported an error.
    broken: Arc<AtomicBool>,
}

impl Drop for Active {
    fn drop(&mut self) {
        // Out of the graph first: after this the data thread calls no
        // `process`, so removing the listeners (next, as the fields drop)
        // races with nothing.
        let _ = self.stream.disconnect();
    }
}

impl Active {
    /// PREPARE again with the same parameters (as Linux does after every
    /// pause or underrun): keep the node, so that its links stay.
    fn reuse(&self, params: &PcmParams, generation: u64) -> bool {
        if self.broken.load(Ordering::Acquire) || self.params != *params {
            return false;
        }
        self.generation.store(generation, Ordering::Release);
        let _ = self.stream.set_active(false);
        let _ = self.stream.flush(false);
        true
    }
}

/// The PipeWire thread: connect, report, then serve commands and the
/// stream's callbacks until Quit or the connection fails.
fn run(
    node: &NodeSettings,
    commands: pw::channel::Receiver<Command>,
    connected: &mpsc::SyncSender<io::Result<()>>,
    shared: &Arc<Shared>,
) {
    let (mainloop, _context, core) = match connect_core(true) {
        Ok(v) => v,
        Err(e) => {
            let _ = connected.send(Err(e));
            return;
        }
    };
    let quit = {
        let weak = Rc::new(mainloop.downgrade());
        move || {
            if let Some(m) = weak.upgrade() {
                m.quit();
            }
        }
    };
    let _core_listener = {
        let (shared, quit) = (shared.clone(), quit.clone());
        core.add_listener_local()
            .error(move |id, _seq, res, message| {
                if id == pw::sys::PW_ID_CORE {
                    shared.lost.store(true, Ordering::Release);
                    let errno = io::Error::from_raw_os_error(res.saturating_neg());
                    shared.fail(
                        None,
                        format!("the PipeWire connection failed: {message} ({errno})"),
                    );
                    quit();
                }
            })
            .register()
    };
    let _ = connected.send(Ok(()));

    let current: Rc<RefCell<Option<Active>>> = Rc::default();
    let _commands = {
        let (current, shared, node, core) =
            (current.clone(), shared.clone(), node.clone(), core.clone());
        commands.attach(mainloop.loop_(), move |command| match command {
            Command::Prepare(params, generation) => {
                if current
                    .borrow()
                    .as_ref()
                    .is_some_and(|a| a.reuse(&params, generation))
                {
                    return;
                }
                current.borrow_mut().take();
                match open_stream(&core, &node, &params, generation, &shared) {
                    Ok(active) => *current.borrow_mut() = Some(active),
                    Err(e) => shared.fail(
                        Some(generation),
                        format!("cannot create PipeWire stream '{}': {e}", node.node_name),
                    ),
                }
            }
            Command::Active(on) => {
                if let Some(a) = &*current.borrow() {
                    if let Err(e) = a.stream.set_active(on) {
                        shared.fail(None, format!("PipeWire stream (de)activation: {e}"));
                    }
                }
            }
            Command::Release => {
                current.borrow_mut().take();
            }
            Command::Quit => {
                current.borrow_mut().take();
                quit();
            }
        })
    };
    mainloop.run();
    current.borrow_mut().take();
}

/// The stream's format: exactly the guest's (PipeWire converts to and from
/// the graph's).
fn format_pod(params: &PcmParams) -> Result<Vec<u8>, String> {
    let mut info = spa::param::audio::AudioInfoRaw::new();
    info.set_format(spa_format(params.format));
    info.set_rate(params.rate);
    info.set_channels(u32::from(params.channels));
    let mut position = [0; spa::param::audio::MAX_CHANNELS];
    for (slot, p) in position.iter_mut().zip(spa_positions(params.channels)) {
        *slot = p;
    }
    info.set_position(position);
    let object = spa::pod::Object {
        type_: spa::utils::SpaTypes::ObjectParamFormat.as_raw(),
        id: spa::param::ParamType::EnumFormat.as_raw(),
        properties: info.into(),
    };
    spa::pod::serialize::PodSerializer::serialize(
        io::Cursor::new(Vec::new()),
        &spa::pod::Value::Object(object),
    )
    .map(|(cursor, _)| cursor.into_inner())
    .map_err(|e| format!("format: {e:?}"))
}

fn open_stream(
    core: &pw::core::CoreRc,
    node: &NodeSettings,
    params: &PcmParams,
    generation: u64,
    shared: &Arc<Shared>,
) -> Result<Active, String> {
    let mut props = pw::properties::PropertiesBox::new();
    for (key, value) in node.properties(params) {
        props.insert(key, value);
    }
    let stream = pw::stream::StreamRc::new(core.clone(), &node.node_name, props)
        .map_err(|e| e.to_string())?;
    let generation = Arc::new(AtomicU64::new(generation));
    let broken = Arc::new(AtomicBool::new(false));
    // Two listeners, so that each one's data is touched by one thread:
    // state changes come on this thread, `process` on PipeWire's data
    // thread (RT_PROCESS).
    let watch = {
        let (shared, generation, broken) = (shared.clone(), generation.clone(), broken.clone());
        stream
            .add_local_listener_with_user_data(())
            .state_changed(move |_, (), _, new| {
                log::debug!("PipeWire stream: {new:?}");
                if let pw::stream::StreamState::Error(e) = new {
                    broken.store(true, Ordering::Release);
                    shared.fail(
                        Some(generation.load(Ordering::Acquire)),
                        format!("PipeWire stream error: {e}"),
                    );
                }
            })
            .register()
            .map_err(|e| e.to_string())?
    };
    let process = Process {
        shared: shared.clone(),
        generation: generation.clone(),
        params: *params,
        frame: usize::try_from(params.frame_bytes()).unwrap_or(4).max(1),
    };
    let listener = stream
        .add_local_listener_with_user_data(process)
        .process(|stream, p| p.process(stream))
        .register()
        .map_err(|e| e.to_string())?;
    let pod = format_pod(params)?;
    let mut pods = [spa::pod::Pod::from_bytes(&pod).ok_or("format: not a pod")?];
    let direction = match node.direction {
        Direction::Output => spa::utils::Direction::Output,
        Direction::Input => spa::utils::Direction::Input,
    };
    stream
        .connect(
            direction,
            None,
            pw::stream::StreamFlags::AUTOCONNECT
                | pw::stream::StreamFlags::MAP_BUFFERS
                | pw::stream::StreamFlags::RT_PROCESS
                | pw::stream::StreamFlags::INACTIVE,
            &mut pods,
        )
        .map_err(|e| e.to_string())?;
    Ok(Active {
        _listener: listener,
        _watch: watch,
        stream,
        params: *params,
        generation,
        broken,
    })
}

/// The state of one stream's `process` callback, which runs on
/// libpipewire's data thread of the stream's connection (`RT_PROCESS`): only
/// thread-safe parts.
struct Process {
    shared: Arc<Shared>,
    generation: Arc<AtomicU64>,
    params: PcmParams,
    frame: usize,
}

impl Process {
    /// One graph cycle: give PipeWire a quantum (playback) or take what it
    /// captured, then wake the worker.
    fn process(&mut self, stream: &pw::stream::Stream) {
        let (delay, ticks) = self.graph_time(stream);
        if let Some(ticks) = ticks {
            let mut g = self.shared.lock();
            if g.generation == self.generation.load(Ordering::Acquire) {
                g.cycle(ticks);
            }
        }
        match self.params.direction {
            // One quantum per cycle, as asked.
            Direction::Output => {
                self.one_buffer(stream, delay);
            }
            // Every buffer captured so far: a callback that came late may
            // find several, and one left behind would be late for good
            // (and PipeWire drops audio once all its buffers wait).
            Direction::Input => {
                for _ in 0..MAX_BUFFERS {
                    if !self.one_buffer(stream, delay) {
                        break;
                    }
                }
            }
        }
        self.shared.signal();
    }

    /// Serve one buffer; `false` if there was none.
    fn one_buffer(&mut self, stream: &pw::stream::Stream, delay: u32) -> bool {
        let Some(mut buffer) = stream.dequeue_buffer() else {
            return false;
        };
        let requested = usize::try_from(buffer.requested()).unwrap_or(0);
        let Some(data) = buffer.datas_mut().first_mut() else {
            return true;
        };
        let mut g = self.shared.lock();
        if g.generation != self.generation.load(Ordering::Acquire) {
            return true;
        }
        g.pw_delay = delay;
        match self.params.direction {
            Direction::Output => {
                let Some(out) = data.data() else {
                    return true;
                };
                let room = out.len() / self.frame * self.frame;
                let want = match requested {
                    0 => room,
                    n => n.saturating_mul(self.frame).min(room),
                };
                log::trace!(
                    "PipeWire playback cycle: {want} bytes asked, {} in the ring",
                    g.ring.len()
                );
                g.play(&mut out[..want], self.frame, silence(self.params.format));
                drop(g);
                let chunk = data.chunk_mut();
                *chunk.offset_mut() = 0;
                *chunk.stride_mut() = i32::try_from(self.frame).unwrap_or(0);
                *chunk.size_mut() = u32::try_from(want).unwrap_or(0);
            }
            Direction::Input => {
                let (offset, size) = (data.chunk().offset(), data.chunk().size());
                let Some(captured) = data.data() else {
                    return true;
                };
                let start = (offset as usize).min(captured.len());
                let end = start.saturating_add(size as usize).min(captured.len());
                log::trace!(
                    "PipeWire capture cycle: {} bytes, {} in the ring",
                    end - start,
                    g.ring.len()
                );
                g.record(&captured[start..end]);
                drop(g);
            }
        }
        true
    }

    /// Bytes PipeWire holds on the way to (or from) the device (what it
    /// has queued of ours plus the graph's delay, at most a second), and
    /// the graph's clock.
    fn graph_time(&self, stream: &pw::stream::Stream) -> (u32, Option<u64>) {
        let Ok(t) = stream.time() else {
            return (0, None);
        };
        let rate = t.rate();
        let ticks = u64::try_from(t.delay()).unwrap_or(0);
        let ns = if rate.denom > 0 {
            u64::try_from(
                u128::from(ticks) * 1_000_000_000 * u128::from(rate.num) / u128::from(rate.denom),
            )
            .unwrap_or(u64::MAX)
        } else {
            0
        };
        let bytes = self
            .params
            .bytes_in(ns)
            .saturating_add(t.queued())
            .min(self.params.byte_rate());
        (u32::try_from(bytes).unwrap_or(u32::MAX), Some(t.ticks()))
    }
}

impl PcmHost for PipewirePcm {
    fn prepare(&mut self, params: &PcmParams) -> io::Result<()> {
        self.connect()?;
        let generation = {
            let mut g = self.shared.lock();
            *g = Inner::prepared(g.generation + 1, params);
            g.generation
        };
        self.send(Command::Prepare(*params, generation))
    }

    fn start(&mut self) -> io::Result<()> {
        {
            let mut g = self.shared.lock();
            if let Some(e) = self.failure(&g) {
                return Err(e);
            }
            g.running = true;
            g.had_data = !g.ring.is_empty();
            g.starved = false;
            // The graph's clock went on while the stream was paused.
            g.ticks = None;
            g.tick_step = 0;
        }
        self.send(Command::Active(true))
    }

    fn stop(&mut self) -> io::Result<()> {
        self.shared.lock().running = false;
        // A stream whose PipeWire went away is stopped already.
        let _ = self.send(Command::Active(false));
        Ok(())
    }

    fn release(&mut self) -> io::Result<()> {
        {
            let mut g = self.shared.lock();
            *g = Inner {
                generation: g.generation + 1,
                ..Inner::default()
            };
        }
        let _ = self.send(Command::Release);
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<bool> {
        let mut g = self.shared.lock();
        if let Some(e) = self.failure(&g) {
            return Err(e);
        }
        Ok(g.put(data))
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut g = self.shared.lock();
        if let Some(e) = self.failure(&g) {
            return Err(e);
        }
        Ok(g.take(buf))
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.shared.ready.as_fd())
    }

    fn clear_ready(&mut self) {
        let _ = self.shared.ready.read();
    }

    fn delay_bytes(&self) -> u32 {
        let g = self.shared.lock();
        u32::try_from(g.ring.len())
            .unwrap_or(u32::MAX)
            .saturating_add(g.pw_delay)
    }

    fn take_xrun(&mut self) -> bool {
        std::mem::take(&mut self.shared.lock().xrun)
    }

    fn name(&self) -> String {
        format!(
            "PipeWire node '{}' (stream {})",
            self.node.node_name, self.node.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spa::sys::*;

    fn params(direction: Direction, period_bytes: u32) -> PcmParams {
        PcmParams {
            direction,
            channels: 2,
            format: Format::S16,
            rate: 48000,
            period_bytes,
            buffer_bytes: period_bytes * 4,
            features: 0,
        }
    }

    fn prop<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_format_maps_to_its_spa_format() {
        assert_eq!(spa_format(Format::U8), AudioFormat::U8);
        assert_eq!(spa_format(Format::S16), AudioFormat::S16LE);
        assert_eq!(spa_format(Format::S24), AudioFormat::S24_32LE);
        assert_eq!(spa_format(Format::S32), AudioFormat::S32LE);
        assert_eq!(spa_format(Format::Float), AudioFormat::F32LE);
    }

    #[test]
    fn channel_positions_follow_alsas_maps_and_extra_channels_are_aux() {
        assert_eq!(spa_positions(1), vec![SPA_AUDIO_CHANNEL_MONO]);
        assert_eq!(
            spa_positions(2),
            vec![SPA_AUDIO_CHANNEL_FL, SPA_AUDIO_CHANNEL_FR]
        );
        assert_eq!(
            spa_positions(6),
            vec![
                SPA_AUDIO_CHANNEL_FL,
                SPA_AUDIO_CHANNEL_FR,
                SPA_AUDIO_CHANNEL_RL,
                SPA_AUDIO_CHANNEL_RR,
                SPA_AUDIO_CHANNEL_FC,
                SPA_AUDIO_CHANNEL_LFE
            ]
        );
        let ten = spa_positions(10);
        assert_eq!(ten.len(), 10);
        assert_eq!(ten[7], SPA_AUDIO_CHANNEL_SR);
        assert_eq!(
            &ten[8..],
            &[SPA_AUDIO_CHANNEL_AUX0, SPA_AUDIO_CHANNEL_AUX0 + 1]
        );
    }

    #[test]
    fn every_stream_format_serializes_to_a_format_pod() {
        for format in Format::ALL {
            let p = PcmParams {
                format,
                channels: 18,
                ..params(Direction::Output, 1920)
            };
            let pod = format_pod(&p).unwrap();
            assert!(spa::pod::Pod::from_bytes(&pod).is_some(), "{format:?}");
        }
    }

    #[test]
    fn the_quantum_asked_for_is_a_period_at_least_20_ms_as_a_power_of_two() {
        // 10 ms periods: 480 frames, at least 960, so 1024.
        assert_eq!(latency_frames(&params(Direction::Output, 1920)), 1024);
        // 100 ms periods: 4800 frames, so 8192.
        assert_eq!(latency_frames(&params(Direction::Output, 19200)), 8192);
        let tiny = PcmParams {
            rate: 8000,
            ..params(Direction::Output, 4)
        };
        assert_eq!(latency_frames(&tiny), 256);
    }

    #[test]
    fn node_properties_name_the_stream_and_its_target_and_extras_win() {
        let plain = NodeSettings::new("vm1", 3, Direction::Input, None, &[]);
        let props = plain.properties(&params(Direction::Input, 1920));
        assert_eq!(prop(&props, "node.name"), Some("vm1-3"));
        assert_eq!(prop(&props, "media.category"), Some("Capture"));
        assert_eq!(prop(&props, "node.latency"), Some("1024/48000"));
        assert_eq!(prop(&props, "target.object"), None);

        let extra = [("node.latency".to_string(), "256/48000".to_string())];
        let aimed = NodeSettings::new("vm1", 0, Direction::Output, Some("hdmi"), &extra);
        let props = aimed.properties(&params(Direction::Output, 1920));
        assert_eq!(prop(&props, "target.object"), Some("hdmi"));
        assert_eq!(prop(&props, "media.category"), Some("Playback"));
        assert_eq!(prop(&props, "node.latency"), Some("256/48000"));
    }

    fn playback() -> Inner {
        let mut g = Inner::prepared(1, &params(Direction::Output, 8));
        g.running = true;
        g
    }

    #[test]
    fn the_playback_ring_takes_buffers_until_it_holds_its_periods_and_a_quantum() {
        let mut g = playback();
        // 4 periods of 8 bytes plus a quantum (a period until one is seen).
        for _ in 0..5 {
            assert!(g.put(&[1; 8]));
        }
        assert!(!g.put(&[1; 8]), "a full ring takes no more");
        assert_eq!(g.ring.len(), 40);

        let mut empty = playback();
        assert!(empty.put(&[1; 100]), "an empty ring takes any buffer");
    }

    #[test]
    fn a_cycle_plays_the_ring_then_silence() {
        let mut g = playback();
        assert!(g.put(&[1, 2, 3, 4, 5, 6, 7, 8]));
        let mut out = [9u8; 12];

        g.play(&mut out, 4, 0);

        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]);
        assert_eq!(g.quantum, 12);
        assert!(g.ring.is_empty());
    }

    #[test]
    fn a_gap_inside_playback_is_an_xrun_but_its_end_and_prebuffering_are_not() {
        let mut g = playback();
        let mut out = [0u8; 8];
        g.play(&mut out, 4, 0);
        assert!(!g.starved, "silence before the first data is no underrun");

        assert!(g.put(&[1; 8]));
        g.play(&mut out, 4, 0);
        g.play(&mut out, 4, 0);
        assert!(!g.xrun, "running dry at the end of playback is no underrun");

        assert!(g.put(&[1; 8]));
        assert!(g.xrun, "audio after silence: there was a gap");
    }

    #[test]
    fn a_graph_cycle_the_stream_missed_is_an_xrun() {
        let mut g = playback();
        for ticks in [1000, 2024, 3048, 4072] {
            g.cycle(ticks);
        }
        assert!(!g.xrun, "cycles of 1024 ticks");

        g.cycle(6120);

        assert!(g.xrun, "a cycle of 2048 ticks: one was missed");
        g.xrun = false;
        g.cycle(7144);
        assert!(!g.xrun, "one missed cycle is one xrun");
    }

    #[test]
    fn a_paused_stream_keeps_its_ring_and_plays_silence() {
        let mut g = playback();
        assert!(g.put(&[1; 8]));
        g.running = false;
        let mut out = [9u8; 8];

        g.play(&mut out, 4, 0x80);

        assert_eq!(out, [0x80; 8]);
        assert_eq!(g.ring.len(), 8);
        assert!(!g.starved);
    }

    #[test]
    fn capture_keeps_what_the_graph_gives_and_drops_the_oldest_when_late() {
        let mut g = Inner::prepared(1, &params(Direction::Input, 4));
        g.record(&[1; 4]);
        assert!(g.ring.is_empty(), "nothing is kept before START");
        g.running = true;
        // A quarter of a second of 48 kHz S16 stereo: 48000 bytes.
        assert_eq!(g.cap(), 48000);
        for i in 0..=12_000u32 {
            g.record(&i.to_le_bytes());
        }
        assert!(g.xrun);
        assert_eq!(g.ring.len(), 48000);
        let mut buf = [0u8; 4];
        assert!(g.take(&mut buf));
        assert_eq!(buf, 1u32.to_le_bytes(), "the oldest 4 bytes were dropped");
        let mut big = [0u8; 64_000];
        assert!(!g.take(&mut big), "only whole guest buffers are given");
    }

    #[test]
    fn a_stream_without_pipewire_fails_io_with_the_reason() {
        let mut pcm =
            PipewirePcm::new(NodeSettings::new("t", 0, Direction::Output, None, &[])).unwrap();
        pcm.shared.lock().failed = Some("the PipeWire connection failed".into());

        let err = pcm.write(&[0; 4]).unwrap_err();

        assert!(err.to_string().contains("connection failed"), "{err}");
        assert!(err.to_string().contains("'t-0'"), "{err}");
        assert!(pcm.stop().is_ok(), "a failed stream can still be stopped");
        assert!(pcm.release().is_ok());
        assert!(
            pcm.shared.lock().failed.is_none(),
            "RELEASE clears the failure"
        );
    }
}
