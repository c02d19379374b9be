// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The sound device on the runtime's [`VirtioDevice`] trait.
//!
//! # Workers
//!
//! Three worker threads (`queues_per_thread`): the control and event queues
//! on the first, the tx queue on the second, the rx queue on the third, so a
//! stream's pacing never waits for a control request and playback never
//! waits for capture. Each stream has a timerfd in the epoll of its queue's
//! worker; a host-paced backend's readiness fd goes there too. The first
//! worker has an eventfd ("wake") that the others write when they have
//! something for it: a RELEASE whose I/O they returned, or an event.
//!
//! # Requests
//!
//! - control: parsed by [`crate::request`], answered at once, except
//!   RELEASE: that request is held, and the stream's worker is woken
//!   through the stream's timer. It first takes whatever the driver made
//!   available on the stream's queue (messages sent before the RELEASE
//!   whose kick it has not handled yet: on a busy machine the control
//!   worker can run first), then returns every held I/O message of the
//!   stream, and wakes the first worker, which then answers the RELEASE
//!   (5.14.6.6.5.1: never while I/O of the stream is pending);
//! - tx/rx: the `stream_id` is checked against the streams and the queue's
//!   direction; a message is held in its stream's FIFO (see [`pcm`]) and
//!   completed when due, so one stream never blocks another;
//! - event: buffers are held until the device has an event, never returned
//!   empty.
//!
//! Guest mistakes get their status (or used length 0) and the queue goes
//! on; only host failures (timers, eventfds, signalling) are errors.

pub mod controls;
pub mod mixer;
pub mod pcm;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use serde::{Deserialize, Serialize};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::HostError;
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::{
    drain_chains, Chain, Completion, HeldChain, QueueContext, Reader, Vring, Writer,
};
use vhost_device_common::vm_memory::ByteValued;
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use crate::args::Config;
use crate::host::sample::{apply_gain, Layout};
use crate::request::{self, Error, Items, PcmCommand, Request};
use crate::virtio::{
    code, ctl, CtlEvent, Direction, Event, Hdr, PcmStatus, PcmXfer, Status, CONTROL_QUEUE,
    EVENT_QUEUE, MAX_QUEUE_SIZE, NUM_QUEUES, RX_QUEUE, TX_QUEUE, VIRTIO_SND_F_CTLS,
};
use controls::Controls;
use mixer::{Mixer, Subscriber, Subscription};
use pcm::{Io, PcmState, Stream, MAX_BUFFER_BYTES};

/// Host-event token of the first worker's wake eventfd.
pub const TOKEN_WAKE: u16 = 0;
/// Most events kept while the driver gives no event buffers.
pub const MAX_PENDING_EVENTS: usize = 256;
/// How often a stream whose queue is stopped (migration) tries again.
const RETRY_NS: u64 = 50_000_000;

/// The token of stream `id`'s timer.
pub fn timer_token(id: u32) -> u16 {
    u16::try_from(1 + 2 * id).unwrap_or(u16::MAX)
}

/// The token of stream `id`'s host readiness fd.
pub fn ready_token(id: u32) -> u16 {
    u16::try_from(2 + 2 * id).unwrap_or(u16::MAX)
}

/// The worker thread that serves a stream's queue.
fn worker_of(direction: Direction) -> usize {
    match direction {
        Direction::Output => 1,
        Direction::Input => 2,
    }
}

/// The queue that carries a stream's I/O.
fn queue_of(direction: Direction) -> usize {
    match direction {
        Direction::Output => TX_QUEUE,
        Direction::Input => RX_QUEUE,
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
    })
}

fn arm_at(timer: &TimerFd, at_ns: u64) -> Result<(), HostError> {
    let at = at_ns.max(1);
    let ts = TimeSpec::new(
        i64::try_from(at / 1_000_000_000).unwrap_or(i64::MAX),
        i64::try_from(at % 1_000_000_000).unwrap_or(0),
    );
    timer.set(
        Expiration::OneShot(ts),
        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
    )?;
    Ok(())
}

/// Events waiting for buffers, and buffers waiting for events.
#[derive(Debug, Default)]
struct Events {
    buffers: VecDeque<HeldChain>,
    pending: VecDeque<[u8; 8]>,
}

/// A stream's part of the live-migration state.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedStream {
    /// Lifecycle state.
    pub state: PcmState,
    /// Parameters.
    pub params: crate::host::PcmParams,
    /// Held I/O, oldest first.
    pub io: Vec<Io>,
    /// Clock, with the progress into the head buffer.
    pub clock: pcm::Clock,
    /// RELEASE requests waiting for the I/O.
    pub release_waiters: Vec<HeldChain>,
}

/// The live-migration state of a sound device.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedState {
    /// Every stream, by id.
    pub streams: Vec<SavedStream>,
    /// Event buffers the driver gave.
    pub event_buffers: Vec<HeldChain>,
    /// Events not yet delivered.
    pub pending_events: Vec<[u8; 8]>,
    /// Control requests ready to be answered OK.
    pub answered: Vec<HeldChain>,
    /// Control values (empty without `--controls`).
    pub controls: Vec<i32>,
}

/// One virtio-sound device (one per socket and connection).
pub struct SoundDevice {
    streams: Vec<Mutex<Stream>>,
    timers: Vec<TimerFd>,
    jacks: Vec<Vec<u8>>,
    pcms: Vec<Vec<u8>>,
    chmaps: Vec<Vec<u8>>,
    /// The controls (`--controls`), shared with the host's control socket.
    mixer: Option<Arc<Mixer>>,
    /// How the mixer tells this connection about host-side changes.
    subscriber: Option<Arc<Subscriber>>,
    _subscription: Option<Subscription>,
    /// The driver accepted `VIRTIO_SND_F_CTLS` (so it takes CTL_NOTIFY).
    ctls_acked: AtomicBool,
    events: Mutex<Events>,
    /// Control requests (RELEASE) whose I/O is back: answer OK.
    answered: Mutex<Vec<HeldChain>>,
    wake: EventFd,
    /// Retries the first worker's deliveries while its queues are stopped.
    retry: TimerFd,
    host_events: Mutex<Option<HostEvents>>,
}

impl std::fmt::Debug for SoundDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoundDevice")
            .field("streams", &self.streams.len())
            .finish()
    }
}

/// What a control request came to.
enum Answer {
    /// Respond now.
    Now(Status, Vec<u8>),
    /// The chain is held (a RELEASE waiting for I/O).
    Held,
}

impl SoundDevice {
    /// A device for `config`, with a fresh host side for each stream, and
    /// with `mixer`'s controls (`VIRTIO_SND_F_CTLS` is offered with them).
    pub fn new(config: &Config, mixer: Option<Arc<Mixer>>) -> io::Result<Self> {
        let mut streams = Vec::new();
        let mut timers = Vec::new();
        for (id, spec) in (0u32..).zip(&config.streams) {
            let host = config.backend.open(id, spec.direction)?;
            streams.push(Mutex::new(Stream::new(id, spec.clone(), host)));
            timers.push(TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )?);
        }
        let (jacks, pcms, chmaps) = request::topology_items(&config.streams, true);
        let subscriber = match &mixer {
            Some(_) => Some(Arc::new(Subscriber::new()?)),
            None => None,
        };
        let subscription = mixer
            .as_ref()
            .zip(subscriber.as_ref())
            .map(|(m, s)| m.subscribe(s.clone()));
        Ok(Self {
            streams,
            timers,
            jacks,
            pcms,
            chmaps,
            mixer,
            subscriber,
            _subscription: subscription,
            ctls_acked: AtomicBool::new(false),
            events: Mutex::new(Events::default()),
            answered: Mutex::new(Vec::new()),
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
            retry: TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )?,
            host_events: Mutex::new(None),
        })
    }

    fn stream(&self, id: u32) -> Option<MutexGuard<'_, Stream>> {
        self.streams.get(id as usize).map(vhost_device_common::lock)
    }

    fn poke(&self, id: u32) -> Result<(), HostError> {
        if let Some(t) = self.timers.get(id as usize) {
            arm_at(t, 1)?;
        }
        Ok(())
    }

    fn wake_control(&self) -> Result<(), HostError> {
        self.wake.write(1)?;
        Ok(())
    }

    /// Queue an event for the driver (any worker).
    fn push_event(&self, event: [u8; 8]) -> Result<(), HostError> {
        {
            let mut ev = vhost_device_common::lock(&self.events);
            if ev.pending.len() >= MAX_PENDING_EVENTS {
                log::warn!("the driver takes no events; dropping the oldest");
                ev.pending.pop_front();
            }
            ev.pending.push_back(event);
        }
        self.wake_control()
    }

    // ---- control queue ----

    fn serve_control(&self, ctx: &QueueContext<'_>, vring: &Vring) -> Result<(), HostError> {
        drain_chains(ctx, CONTROL_QUEUE, vring, |chain| {
            let mut bytes = Vec::new();
            (&mut chain.reader)
                .take(request::MAX_REQUEST as u64)
                .read_to_end(&mut bytes)
                .ok();
            let room = chain.writer.available_bytes();
            let answer = match request::parse(&bytes) {
                Ok(req) => self.execute(req, room, chain),
                Err(e) => Err(e),
            };
            match answer {
                Ok(Answer::Now(status, payload)) => Ok(Completion::Used(request::respond(
                    &mut chain.writer,
                    status,
                    &payload,
                ))),
                Ok(Answer::Held) => Ok(Completion::Held),
                Err(e) => {
                    ctx.log.warn("control request refused", &e);
                    Ok(Completion::Used(request::respond(
                        &mut chain.writer,
                        e.status(),
                        &[],
                    )))
                }
            }
        })?;
        Ok(())
    }

    fn mixer(&self) -> Result<&Mixer, Error> {
        self.mixer.as_deref().ok_or(Error::NotSupported(
            "controls (the daemon runs without --controls)",
        ))
    }

    fn controls(&self) -> Result<&Controls, Error> {
        Ok(&self.mixer()?.controls)
    }

    fn execute(&self, req: Request, room: usize, chain: &mut Chain<'_>) -> Result<Answer, Error> {
        let ok = |payload: Vec<u8>| Ok(Answer::Now(Status::Ok, payload));
        match req {
            Request::Query {
                items,
                start,
                count,
                size,
            } => {
                let infos;
                let all: &[Vec<u8>] = match items {
                    Items::Jacks => &self.jacks,
                    Items::Pcms => &self.pcms,
                    Items::Chmaps => &self.chmaps,
                    Items::Controls => {
                        infos = self.controls()?.infos();
                        &infos
                    }
                };
                ok(request::query_payload(
                    items, all, start, count, size, room,
                )?)
            }
            Request::JackRemap(id) => {
                if id as usize >= self.jacks.len() {
                    return Err(Error::OutOfRange {
                        what: "jack",
                        start: id,
                        count: 1,
                        total: self.jacks.len(),
                    });
                }
                Err(Error::NotSupported("jack remapping"))
            }
            Request::SetParams(p) => {
                let id = p.hdr.id.to_native();
                let mut s = self.stream_or_bad(id)?;
                let params = pcm::validate_params(id, &s.spec, &p)?;
                s.transition(PcmCommand::SetParams)?;
                s.params = params;
                ok(Vec::new())
            }
            Request::Pcm(command, id) => self.pcm_command(command, id, chain),
            Request::CtlEnumItems(id) => {
                self.controls()?.value(id)?;
                Err(Error::BadParams {
                    stream: 0,
                    why: format!("control {id} is not ENUMERATED"),
                })
            }
            Request::CtlRead(id) => ok(self.controls()?.read(id)?),
            Request::CtlWrite(id, value) => {
                self.mixer()?.guest_write(id, &value)?;
                ok(Vec::new())
            }
            Request::CtlTlvRead(id) => {
                let tlv = self.controls()?.tlv(id)?;
                // The TLV goes into the buffer after the status, as much as
                // fits (5.14.6.9.3).
                let fit = room.saturating_sub(4).min(tlv.len());
                ok(tlv[..fit].to_vec())
            }
            Request::CtlTlvWrite(id) => {
                self.controls()?.value(id)?;
                Err(Error::NotSupported("writing control metadata"))
            }
        }
    }

    fn stream_or_bad(&self, id: u32) -> Result<MutexGuard<'_, Stream>, Error> {
        self.stream(id).ok_or(Error::OutOfRange {
            what: "stream",
            start: id,
            count: 1,
            total: self.streams.len(),
        })
    }

    fn pcm_command(
        &self,
        command: PcmCommand,
        id: u32,
        chain: &mut Chain<'_>,
    ) -> Result<Answer, Error> {
        let mut s = self.stream_or_bad(id)?;
        let before = s.state;
        s.transition(command)?;
        let host = |r: io::Result<()>, what: &str| {
            r.map_err(|e| Error::Host(format!("{what} of stream {id}"), e))
        };
        let result = match command {
            PcmCommand::SetParams => Ok(()),
            PcmCommand::Prepare => {
                let params = s.params;
                let r = s.host.prepare(&params);
                host(r, "PREPARE")
            }
            PcmCommand::Start => {
                let r = s.host.start();
                s.clock.start(now_ns());
                host(r, "START")
            }
            PcmCommand::Stop => {
                let head = s.io.front().map(|io| io.len);
                let params = s.params;
                s.clock.stop(&params, now_ns(), head);
                let r = s.host.stop();
                host(r, "STOP")
            }
            PcmCommand::Release => {
                let r = s.host.release();
                s.clock = pcm::Clock::default();
                host(r, "RELEASE")
            }
        };
        if let Err(e) = result {
            // The host refused: the stream stays where it was.
            s.state = before;
            return Err(e);
        }
        // The stream's worker acts on the new state (pacing, returning I/O).
        let wake = |d: &Self| {
            d.poke(id)
                .map_err(|e| Error::Host(format!("timer of stream {id}"), io::Error::other(e)))
        };
        if command == PcmCommand::Release {
            // Answered by the stream's worker once every pending message is
            // back, including any still on the avail ring that the worker
            // has not seen yet (5.14.6.6.5.1).
            s.release_waiters.push(chain.hold());
            drop(s);
            wake(self)?;
            return Ok(Answer::Held);
        }
        drop(s);
        wake(self)?;
        Ok(Answer::Now(Status::Ok, Vec::new()))
    }

    /// Answer the RELEASE requests whose I/O is back, and deliver events
    /// (first worker).
    fn serve_wake(&self, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        let _ = self.wake.read();
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(
            std::os::fd::AsRawFd::as_raw_fd(&self.retry.as_fd()),
            &mut buf,
        );
        self.take_control_changes();
        let ready = std::mem::take(&mut *vhost_device_common::lock(&self.answered));
        let mut back = Vec::new();
        for held in ready {
            if let Some(h) = ctx.complete(held, |_, w| Ok(request::respond(w, Status::Ok, &[])))? {
                back.push(h);
            }
        }
        if !back.is_empty() {
            vhost_device_common::lock(&self.answered).extend(back);
            arm_at(&self.retry, now_ns() + RETRY_NS)?;
        }
        self.deliver_events(ctx)
    }

    /// Queue a CTL_NOTIFY for every control the host changed (first
    /// worker).
    fn take_control_changes(&self) {
        let Some(s) = &self.subscriber else { return };
        let ids = s.take();
        if ids.is_empty() || !self.ctls_acked.load(Ordering::Relaxed) {
            return;
        }
        let mut ev = vhost_device_common::lock(&self.events);
        for id in ids {
            let event = CtlEvent {
                hdr: Hdr {
                    code: code::EVT_CTL_NOTIFY.into(),
                },
                control_id: u16::try_from(id).unwrap_or(u16::MAX).into(),
                mask: ctl::EVT_MASK_VALUE.into(),
            };
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(event.as_slice());
            // The driver reads the value when told, so one pending notice
            // per control is enough: a host that ramps a volume while the
            // driver gives no event buffers does not push out other events.
            if ev.pending.contains(&bytes) {
                continue;
            }
            if ev.pending.len() >= MAX_PENDING_EVENTS {
                log::warn!("the driver takes no events; dropping the oldest");
                ev.pending.pop_front();
            }
            ev.pending.push_back(bytes);
        }
    }

    // ---- event queue ----

    fn serve_events(&self, ctx: &QueueContext<'_>, vring: &Vring) -> Result<(), HostError> {
        drain_chains(ctx, EVENT_QUEUE, vring, |chain| {
            if chain.writer.available_bytes() < std::mem::size_of::<Event>() {
                ctx.log.warn(
                    "event buffer too small",
                    &io::Error::other(format!("{} bytes", chain.writer.available_bytes())),
                );
                return Ok(Completion::Used(0));
            }
            vhost_device_common::lock(&self.events)
                .buffers
                .push_back(chain.hold());
            Ok(Completion::Held)
        })?;
        self.deliver_events(ctx)
    }

    fn deliver_events(&self, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        let mut ev = vhost_device_common::lock(&self.events);
        while !ev.pending.is_empty() {
            let Some(buffer) = ev.buffers.pop_front() else {
                break;
            };
            let event = ev.pending.front().copied().unwrap_or_default();
            match ctx.complete(buffer, |_, w| {
                w.write_all(&event)?;
                Ok(8)
            })? {
                Some(back) => {
                    ev.buffers.push_front(back);
                    arm_at(&self.retry, now_ns() + RETRY_NS)?;
                    break;
                }
                None => {
                    ev.pending.pop_front();
                }
            }
        }
        Ok(())
    }

    // ---- tx and rx queues ----

    fn serve_io(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        let direction = if queue == TX_QUEUE {
            Direction::Output
        } else {
            Direction::Input
        };
        let mut touched = Vec::new();
        drain_chains(ctx, queue, vring, |chain| {
            Ok(self.take_io(ctx, direction, chain, &mut touched))
        })?;
        for id in touched {
            self.pump(ctx, id)?;
        }
        Ok(())
    }

    /// One arriving I/O message: hold it in its stream, or answer its error.
    fn take_io(
        &self,
        ctx: &QueueContext<'_>,
        direction: Direction,
        chain: &mut Chain<'_>,
        touched: &mut Vec<u32>,
    ) -> Completion {
        let status_len = std::mem::size_of::<PcmStatus>();
        let room = chain.writer.available_bytes();
        if room < status_len {
            ctx.log.warn(
                "I/O message without room for its status",
                &io::Error::other(format!("{room} writable bytes")),
            );
            return Completion::Used(0);
        }
        let refuse = |chain: &mut Chain<'_>, why: String| {
            ctx.log.warn("I/O message refused", &io::Error::other(why));
            Completion::Used(write_status(&mut chain.writer, Status::IoErr, 0, &[]))
        };
        let Ok(xfer) = chain.reader.read_obj::<PcmXfer>() else {
            return refuse(chain, "no stream id".into());
        };
        let id = xfer.stream_id.to_native();
        let len = match direction {
            Direction::Output => chain.reader.available_bytes(),
            Direction::Input => room - status_len,
        };
        let Some(mut s) = self.stream(id) else {
            return refuse(chain, format!("stream {id} does not exist"));
        };
        if s.spec.direction != direction {
            return refuse(chain, format!("stream {id} is not on this queue"));
        }
        // A message that arrives while a RELEASE waits was pending when the
        // driver sent the RELEASE: it goes back with the held ones.
        if !s.state.takes_io() && s.release_waiters.is_empty() {
            return refuse(chain, format!("stream {id} is in state {}", s.state.name()));
        }
        let Ok(len) = u32::try_from(len) else {
            return refuse(chain, format!("{len}-byte buffer"));
        };
        if len > MAX_BUFFER_BYTES {
            return refuse(chain, format!("{len}-byte buffer is too large"));
        }
        if s.state == PcmState::Started && s.io.is_empty() && !s.host_paced() {
            let params = s.params;
            s.clock.resume_if_dry(&params, now_ns());
        }
        s.io.push_back(Io {
            chain: chain.hold(),
            len,
        });
        if !touched.contains(&id) {
            touched.push(id);
        }
        Completion::Held
    }

    /// Move stream `id` along on its worker: return I/O it may not hold,
    /// complete what is due, arm the timer for what comes next.
    fn pump(&self, ctx: &QueueContext<'_>, id: u32) -> Result<(), HostError> {
        let Some(mut guard) = self.stream(id) else {
            return Ok(());
        };
        let s = &mut *guard;
        let timer = &self.timers[id as usize];
        let gain = self.mixer.as_ref().map_or(1.0, |m| m.controls.gain(id));
        let mut xrun = false;

        if !s.state.takes_io() || !s.release_waiters.is_empty() {
            // Released (or new parameters): every held message goes back.
            while let Some(io) = s.io.pop_front() {
                if let Some(back) =
                    ctx.complete(io.chain, |_, w| Ok(write_status(w, Status::Ok, 0, &[])))?
                {
                    s.io.push_front(Io {
                        chain: back,
                        len: io.len,
                    });
                    arm_at(timer, now_ns() + RETRY_NS)?;
                    return Ok(());
                }
            }
            if !s.release_waiters.is_empty() {
                vhost_device_common::lock(&self.answered).append(&mut s.release_waiters);
                self.wake_control()?;
            }
        }
        if s.state != PcmState::Started {
            timer.unset()?;
            return Ok(());
        }
        let host_paced = s.host_paced();
        let now = now_ns();
        while let Some(head) = s.io.front() {
            let len = head.len;
            if !host_paced {
                let due = s.clock.due(&s.params, len);
                if due > now {
                    arm_at(timer, due)?;
                    break;
                }
            }
            let Some(io) = s.io.pop_front() else { break };
            let mut declined = false;
            let mut host_err = None;
            let params = s.params;
            let host = &mut s.host;
            let back = ctx.try_complete(io.chain, |reader, writer| {
                match transfer(host.as_mut(), &params, gain, reader, writer, len) {
                    Ok(Some(used)) => Ok(Some(used)),
                    Ok(None) => {
                        declined = true;
                        Ok(None)
                    }
                    Err(e) => {
                        let used = write_status(writer, Status::IoErr, 0, &[]);
                        host_err = Some(e);
                        Ok(Some(used))
                    }
                }
            })?;
            if let Some(e) = host_err {
                ctx.log.warn(&format!("stream {id}: host I/O failed"), &e);
            }
            xrun |= s.host.take_xrun();
            if let Some(back) = back {
                s.io.push_front(Io {
                    chain: back,
                    len: io.len,
                });
                if !declined {
                    // The queue is stopped (migration): try again later.
                    arm_at(timer, now + RETRY_NS)?;
                }
                break;
            }
            s.clock.done += u64::from(len);
        }
        if s.io.is_empty() && !host_paced {
            timer.unset()?;
        }
        if xrun && s.xrun_events() {
            let mut ev = [0u8; 8];
            ev[..4].copy_from_slice(&code::EVT_PCM_XRUN.to_le_bytes());
            ev[4..].copy_from_slice(&id.to_le_bytes());
            drop(guard);
            self.push_event(ev)?;
        }
        Ok(())
    }

    fn streams_of(&self, direction: Direction) -> Vec<u32> {
        (0u32..)
            .zip(&self.streams)
            .filter(|(_, s)| vhost_device_common::lock(s).spec.direction == direction)
            .map(|(id, _)| id)
            .collect()
    }
}

/// Write the status (and, for capture, `data` before it) into an I/O
/// message's writable part; the status takes its last 8 bytes. Returns the
/// used length.
fn write_status(writer: &mut Writer<'_>, status: Status, latency: u32, data: &[u8]) -> u32 {
    let status_len = std::mem::size_of::<PcmStatus>();
    let room = writer.available_bytes();
    if room < status_len {
        return 0;
    }
    let Ok(mut tail) = writer.split_at(room - status_len) else {
        return 0;
    };
    let n = data.len().min(room - status_len);
    if writer.write_all(&data[..n]).is_err() {
        return 0;
    }
    let st = PcmStatus {
        status: status.wire(),
        latency_bytes: latency.into(),
    };
    if tail.write_all(st.as_slice()).is_err() {
        return 0;
    }
    u32::try_from(n + status_len).unwrap_or(0)
}

/// Hand one message to the host: playback data out, or capture data in.
/// `Ok(None)`: the host has no room (or no data) yet.
fn transfer(
    host: &mut dyn crate::host::PcmHost,
    params: &crate::host::PcmParams,
    gain: f64,
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
    len: u32,
) -> io::Result<Option<u32>> {
    let len = len as usize;
    let mut data = vec![0u8; len];
    let layout = Layout::of(params.format);
    match params.direction {
        Direction::Output => {
            reader.read_obj::<PcmXfer>().map_err(io::Error::other)?;
            reader.read_exact(&mut data)?;
            apply_gain(layout, &mut data, gain);
            if !host.write(&data)? {
                return Ok(None);
            }
            Ok(Some(write_status(
                writer,
                Status::Ok,
                host.delay_bytes(),
                &[],
            )))
        }
        Direction::Input => {
            if !host.read(&mut data)? {
                return Ok(None);
            }
            apply_gain(layout, &mut data, gain);
            Ok(Some(write_status(
                writer,
                Status::Ok,
                host.delay_bytes(),
                &data,
            )))
        }
    }
}

impl VirtioDevice for SoundDevice {
    type State = SavedState;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn acked_features(&self, features: u64) {
        self.ctls_acked
            .store(features & VIRTIO_SND_F_CTLS != 0, Ordering::Relaxed);
    }

    fn features(&self) -> u64 {
        if self.mixer.is_some() {
            VIRTIO_SND_F_CTLS
        } else {
            0
        }
    }

    fn config(&self) -> Vec<u8> {
        let n = |v: usize| u32::try_from(v).unwrap_or(0);
        let mut cfg = Vec::with_capacity(16);
        cfg.extend_from_slice(&n(self.jacks.len()).to_le_bytes());
        cfg.extend_from_slice(&n(self.streams.len()).to_le_bytes());
        cfg.extend_from_slice(&n(self.chmaps.len()).to_le_bytes());
        if let Some(m) = &self.mixer {
            cfg.extend_from_slice(&n(m.controls.list.len()).to_le_bytes());
        }
        cfg
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        vec![
            (1 << CONTROL_QUEUE) | (1 << EVENT_QUEUE),
            1 << TX_QUEUE,
            1 << RX_QUEUE,
        ]
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        events.add(0, self.wake.as_fd(), EventSet::IN, TOKEN_WAKE)?;
        events.add(0, self.retry.as_fd(), EventSet::IN, TOKEN_WAKE)?;
        if let Some(s) = &self.subscriber {
            events.add(0, s.wake_fd(), EventSet::IN, TOKEN_WAKE)?;
        }
        for (id, (stream, timer)) in (0u32..).zip(self.streams.iter().zip(&self.timers)) {
            let s = vhost_device_common::lock(stream);
            let worker = worker_of(s.spec.direction);
            events.add(worker, timer.as_fd(), EventSet::IN, timer_token(id))?;
            if let Some(fd) = s.host.ready_fd() {
                events.add(worker, fd, EventSet::IN, ready_token(id))?;
            }
        }
        *vhost_device_common::lock(&self.host_events) = Some(events);
        Ok(())
    }

    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        match queue {
            CONTROL_QUEUE => self.serve_control(ctx, vring),
            EVENT_QUEUE => self.serve_events(ctx, vring),
            TX_QUEUE | RX_QUEUE => self.serve_io(ctx, queue, vring),
            _ => Ok(()),
        }
    }

    fn host_event(
        &self,
        ctx: &QueueContext<'_>,
        token: u16,
        _events: EventSet,
        _vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        if token == TOKEN_WAKE {
            return self.serve_wake(ctx);
        }
        let id = u32::from((token - 1) / 2);
        if token % 2 == 1 {
            if let Some(t) = self.timers.get(id as usize) {
                // Non-blocking: EAGAIN only means it was consumed already.
                let mut buf = [0u8; 8];
                let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&t.as_fd()), &mut buf);
            }
            let releasing = self
                .stream(id)
                .filter(|s| !s.release_waiters.is_empty())
                .map(|s| queue_of(s.spec.direction));
            if let Some(queue) = releasing {
                // The driver may have made messages available before its
                // RELEASE that this worker has not taken yet (the kick is
                // still on its way): take them now, so the RELEASE is
                // answered only after they are back too.
                if let Some(vring) = ctx.vrings.get(queue).copied().flatten() {
                    self.serve_io(ctx, queue, vring)?;
                }
            }
        } else if let Some(mut s) = self.stream(id) {
            s.host.clear_ready();
        }
        self.pump(ctx, id)
    }

    fn reset(&self) {
        for s in &self.streams {
            let mut s = vhost_device_common::lock(s);
            let _ = s.host.release();
            s.io.clear();
            s.release_waiters.clear();
            s.state = PcmState::Initial;
            s.clock = pcm::Clock::default();
        }
        for t in &self.timers {
            let _ = t.unset();
        }
        *vhost_device_common::lock(&self.events) = Events::default();
        vhost_device_common::lock(&self.answered).clear();
    }

    fn save_state(&self) -> Result<SavedState, HostError> {
        let now = now_ns();
        let mut streams = Vec::new();
        for s in &self.streams {
            let mut s = vhost_device_common::lock(s);
            let mut clock = s.clock;
            if s.state == PcmState::Started {
                let head = s.io.front().map(|io| io.len);
                clock.stop(&s.params, now, head);
            }
            streams.push(SavedStream {
                state: s.state,
                params: s.params,
                io: s.io.drain(..).collect(),
                clock,
                release_waiters: std::mem::take(&mut s.release_waiters),
            });
        }
        let mut ev = vhost_device_common::lock(&self.events);
        Ok(SavedState {
            streams,
            event_buffers: ev.buffers.drain(..).collect(),
            pending_events: ev.pending.drain(..).collect(),
            answered: std::mem::take(&mut *vhost_device_common::lock(&self.answered)),
            controls: self
                .mixer
                .as_ref()
                .map(|m| m.controls.values())
                .unwrap_or_default(),
        })
    }

    fn load_state(&self, state: SavedState) -> Result<(), HostError> {
        if state.streams.len() != self.streams.len() {
            return Err(format!(
                "the saved device has {} streams, this one {}",
                state.streams.len(),
                self.streams.len()
            )
            .into());
        }
        for (id, (saved, s)) in (0u32..).zip(state.streams.into_iter().zip(&self.streams)) {
            let mut s = vhost_device_common::lock(s);
            if saved.params.direction != s.spec.direction {
                return Err(format!("stream {id} has another direction here").into());
            }
            s.state = saved.state;
            s.params = saved.params;
            s.io = saved.io.into();
            s.clock = saved.clock;
            s.release_waiters = saved.release_waiters;
            if s.state.takes_io() {
                let params = s.params;
                s.host.prepare(&params)?;
            }
            if s.state == PcmState::Started {
                s.host.start()?;
                s.clock.start(now_ns());
            }
            drop(s);
            self.poke(id)?;
        }
        {
            let mut ev = vhost_device_common::lock(&self.events);
            ev.buffers = state.event_buffers.into();
            ev.pending = state.pending_events.into();
        }
        *vhost_device_common::lock(&self.answered) = state.answered;
        if let Some(m) = &self.mixer {
            for (id, v) in (0u32..).zip(state.controls) {
                m.restore(id, v)?;
            }
        }
        self.wake_control()?;
        Ok(())
    }
}

impl SoundDevice {
    /// Ids of the playback streams (for tests and tools).
    pub fn playback_streams(&self) -> Vec<u32> {
        self.streams_of(Direction::Output)
    }
}
