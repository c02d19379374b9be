// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The CAN device: three queues and one host descriptor in one worker's epoll
//! (virtio 1.4, 5.20).
//!
//! Request flow:
//!
//! - **txq**: each request is checked ([`request::parse_tx`]) and, if the
//!   controller is started, handed to the host without blocking. Without
//!   `LATE_TX_ACK` it is answered OK as soon as the host took it; with it the
//!   chain is *held* until the host confirms the frame was on the bus (an
//!   echo), so requests complete in transmission order. When the host cannot
//!   take a frame now, the chain is held and every later one waits behind it;
//!   the host descriptor is then watched for writability. Bad frames and
//!   frames sent while stopped are answered NOT_OK and never sent.
//! - **rxq**: every buffer is held until a frame arrives for it — the device
//!   never returns an empty rx buffer. Frames received while no buffer is
//!   there wait in a FIFO of `--rx-fifo` frames; when it is full the oldest
//!   is dropped and counted.
//! - **controlq**: START/STOP through the [`controller::Controller`] state
//!   machine, answered once the transition is done; STOP first takes the
//!   confirmations the host already has, then answers the rest of the pending
//!   TX NOT_OK.
//! - **host events**: received frames, echoes and error frames. A bus-off
//!   stops the controller, sets `VIRTIO_CAN_S_CTRL_BUSOFF` and sends a
//!   config-change notification through the runtime's backend channel (after
//!   the device's lock is released: the front end reads the config before it
//!   answers). The config status is kept outside that lock for the same
//!   reason.
//!
//! A guest reset (a reboot, the driver unbound and bound again) is not
//! announced to a vhost-user back end: QEMU stops the rings
//! (`GET_VRING_BASE`) and later sets up new ones, as it also does around a
//! pause, where the driver still waits for the buffers the device holds. The
//! device tells the two apart by the rings: it remembers where each was
//! (descriptor table and next available index) after it last drained it; a
//! ring that comes back elsewhere (a new driver starts at index 0) is a new
//! driver's. Before anything is written or answered, the old driver's held
//! buffers — pointers into memory the new kernel now uses — are dropped, the
//! controller is stopped and the FIFO emptied.
//!
//! The device holds at most one chain per descriptor of each queue (the
//! runtime refuses a head held twice), so everything it keeps is bounded by
//! the queue sizes plus the RX FIFO.
//!
//! Live migration: the controller mode, the bus-off bit, the held rx buffers
//! and counters move; frames in flight do not. When its state is saved the
//! source leaves the bus (withdrawing what it has not transmitted yet), the
//! destination joins it when the state is loaded; TX requests not yet
//! confirmed are answered NOT_OK by the destination and frames waiting in
//! the RX FIFO are dropped, both counted: CAN is lossy by design, and a
//! frame must not be sent twice. If the migration fails and the front end
//! runs the source's queues again, the source rejoins the bus and answers
//! those requests NOT_OK itself.

pub mod controller;

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use serde::{Deserialize, Serialize};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::HostError;
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::{
    drain_chains, Completion, HeldChain, HeldHeads, QueueContext, Vring,
};
use vhost_device_common::vhost_user_backend::VringT;
use vhost_device_common::virtio_queue::QueueT;
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use crate::host::{CanFrame, CanHost, ErrorFrame, Received, Sent};
use crate::request::{self, Command};
use crate::virtio::{
    Features, CONTROL_QUEUE, HEADER_SIZE, MAX_QUEUE_SIZE, NUM_QUEUES, RESULT_NOT_OK, RESULT_OK,
    RX_QUEUE, TX_QUEUE,
};
use controller::{Controller, Effects, Mode};

/// Host-event token of the host's descriptor (socket or bus connection).
pub const TOKEN_HOST: u16 = 0;
/// Host-event token of the device's timer (rejoining the bus, work left
/// by a migration).
pub const TOKEN_TIMER: u16 = 1;

/// Default number of received frames kept while the driver has no rx buffer.
pub const DEFAULT_RX_FIFO: usize = 256;
/// Host events handled per wakeup; the epoll reports the rest at once.
const MAX_READS: usize = 256;
/// How soon to try again to rejoin the software bus.
const REJOIN_DELAY: Duration = Duration::from_millis(100);

/// What the device counted (logged when the connection ends, migrated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// TX requests answered OK.
    pub tx_ok: u64,
    /// TX requests answered NOT_OK (refused, stopped, cancelled, failed).
    pub tx_not_ok: u64,
    /// TX requests in flight at a migration (answered NOT_OK there).
    pub tx_lost_in_migration: u64,
    /// Frames delivered to the driver.
    pub rx_delivered: u64,
    /// Frames dropped because the RX FIFO was full (oldest first).
    pub rx_overflow: u64,
    /// Frames received while the controller was stopped.
    pub rx_while_stopped: u64,
    /// Frames of a type the driver did not negotiate (FD on a classic
    /// driver, RTR without RTR_FRAMES).
    pub rx_not_negotiated: u64,
    /// Frames waiting in the RX FIFO at a migration, or at a STOP or bus-off.
    pub rx_flushed: u64,
    /// Bus-off events that stopped the controller.
    pub bus_offs: u64,
}

/// A TX request handed (or to be handed) to the host.
#[derive(Debug)]
struct Pending {
    chain: HeldChain,
    frame: CanFrame,
}

/// The live-migration state of a CAN device.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedState {
    /// Controller mode.
    pub mode: Mode,
    /// The bus-off bit of the config status.
    pub busoff: bool,
    /// TX requests and the result they get on the destination, oldest
    /// first: NOT_OK for every frame still in flight.
    pub tx: Vec<(HeldChain, u8)>,
    /// Rx buffers the driver gave, waiting for frames.
    pub rx_buffers: Vec<HeldChain>,
    /// Counters, including what the migration dropped.
    pub stats: Stats,
}

/// Where a ring was after the device last took buffers from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RingPosition {
    desc_table: u64,
    next_avail: u16,
}

impl RingPosition {
    /// Where `vring` is now (`None` while it is not running).
    fn of(vring: &Vring) -> Option<Self> {
        let state = vring.get_ref();
        let q = state.get_queue();
        q.ready().then(|| Self {
            desc_table: q.desc_table(),
            next_avail: q.next_avail(),
        })
    }
}

struct State {
    host: Box<dyn CanHost>,
    ctrl: Controller,
    /// TX requests the host could not take yet, oldest first.
    tx_waiting: VecDeque<Pending>,
    /// TX requests sent and waiting for their echo (LATE_TX_ACK), in order.
    tx_unacked: VecDeque<Pending>,
    /// Answers decided but not yet written (their queue was stopped).
    tx_answers: VecDeque<(HeldChain, u8)>,
    rx_buffers: VecDeque<HeldChain>,
    rx_fifo: VecDeque<CanFrame>,
    rx_fifo_max: usize,
    stats: Stats,
    events: Option<HostEvents>,
    host_registered: bool,
    watching_out: bool,
    rejoining: bool,
    /// Where each ring was after its last drain (guest reset detection).
    rings: [Option<RingPosition>; NUM_QUEUES],
    /// The state was saved for a migration: the controller left the bus
    /// and its frames in flight were withdrawn.
    saved: bool,
    timer: TimerFd,
}

/// One virtio-can device (one per socket and connection).
pub struct CanDevice {
    state: Mutex<State>,
    /// The config status, read by the vhost-user thread without the lock.
    status: AtomicU16,
    acked: AtomicU64,
    fd_capable: bool,
}

impl CanDevice {
    /// A device on `host`, keeping up to `rx_fifo_max` undelivered frames.
    pub fn new(host: Box<dyn CanHost>, rx_fifo_max: usize) -> io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let fd_capable = host.fd_capable();
        Ok(Self {
            state: Mutex::new(State {
                host,
                ctrl: Controller::default(),
                tx_waiting: VecDeque::new(),
                tx_unacked: VecDeque::new(),
                tx_answers: VecDeque::new(),
                rx_buffers: VecDeque::new(),
                rx_fifo: VecDeque::new(),
                rx_fifo_max: rx_fifo_max.max(1),
                stats: Stats::default(),
                events: None,
                host_registered: false,
                watching_out: false,
                rejoining: false,
                rings: [None; NUM_QUEUES],
                saved: false,
                timer,
            }),
            status: AtomicU16::new(0),
            acked: AtomicU64::new(0),
            fd_capable,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        vhost_device_common::lock(&self.state)
    }

    fn features(&self) -> Features {
        Features::from_bits(self.acked.load(Ordering::Acquire))
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// Run `f` on the locked state, then publish the config status and, if
    /// the state changed it unasked, notify the front end — after the lock
    /// is released.
    fn with_state<R>(
        &self,
        ctx: &QueueContext<'_>,
        f: impl FnOnce(&mut State, &mut Work<'_, '_>) -> Result<R, HostError>,
    ) -> Result<R, HostError> {
        let mut notify = false;
        let result = {
            let mut st = self.lock();
            let mut work = Work {
                ctx,
                features: self.features(),
                status: &self.status,
                notify: &mut notify,
            };
            let r = st.check_rings(&work).and_then(|()| f(&mut st, &mut work));
            let interest = st.sync_interest();
            r.and_then(|r| interest.map(|()| r))?
        };
        if notify {
            if let Err(e) = ctx.backend.config_changed() {
                log::warn!(
                    "cannot tell the front end about the bus-off: {}",
                    vhost_device_common::error::report(&e)
                );
            }
        }
        Ok(result)
    }
}

/// What one call needs besides the state.
struct Work<'c, 'a> {
    ctx: &'c QueueContext<'a>,
    features: Features,
    /// Where the config status is published.
    status: &'c AtomicU16,
    notify: &'c mut bool,
}

impl State {
    fn count(&mut self, result: u8) {
        if result == RESULT_OK {
            self.stats.tx_ok += 1;
        } else {
            self.stats.tx_not_ok += 1;
        }
    }

    /// Answer a TX request (keep the answer if its queue is stopped).
    fn answer_tx(
        &mut self,
        w: &Work<'_, '_>,
        chain: HeldChain,
        result: u8,
    ) -> Result<(), HostError> {
        match w.ctx.complete(chain, |_, writer| {
            Ok(request::write_result(writer, result)?)
        })? {
            Some(chain) => self.tx_answers.push_back((chain, result)),
            None => self.count(result),
        }
        Ok(())
    }

    /// Write the answers kept while the TX queue was stopped.
    fn flush_answers(&mut self, w: &Work<'_, '_>) -> Result<(), HostError> {
        while let Some((chain, result)) = self.tx_answers.pop_front() {
            match w.ctx.complete(chain, |_, writer| {
                Ok(request::write_result(writer, result)?)
            })? {
                Some(chain) => {
                    self.tx_answers.push_front((chain, result));
                    break;
                }
                None => self.count(result),
            }
        }
        Ok(())
    }

    /// Answer every TX request in flight with NOT_OK, oldest first.
    fn cancel_tx(&mut self, w: &Work<'_, '_>) -> Result<(), HostError> {
        let pending: Vec<Pending> = self
            .tx_unacked
            .drain(..)
            .chain(self.tx_waiting.drain(..))
            .collect();
        for p in pending {
            self.answer_tx(w, p.chain, RESULT_NOT_OK)?;
        }
        Ok(())
    }

    fn apply(&mut self, w: &mut Work<'_, '_>, e: Effects) -> Result<(), HostError> {
        // Before the control request is used, and before a notification
        // (5.20.6.1): the driver reads it as soon as it sees either.
        w.status.store(self.ctrl.status(), Ordering::Release);
        if e.cancel_tx {
            self.cancel_tx(w)?;
        }
        if e.flush_rx {
            self.stats.rx_flushed += self.rx_fifo.len() as u64;
            self.rx_fifo.clear();
        }
        if let Some(online) = e.online {
            self.host.set_online(online)?;
        }
        if e.config_changed {
            *w.notify = true;
        }
        Ok(())
    }

    /// A TX request with a valid frame, the controller started.
    fn transmit(&mut self, w: &Work<'_, '_>, frame: CanFrame) -> Result<Option<Sent>, HostError> {
        match self.host.send(&frame) {
            Ok(sent) => Ok(Some(sent)),
            Err(e) => {
                w.ctx.log.warn(
                    &format!("cannot send {frame} on the {}", self.host.name()),
                    &e,
                );
                Ok(None)
            }
        }
    }

    fn serve_tx(&mut self, w: &Work<'_, '_>, vring: &Vring) -> Result<(), HostError> {
        let late = w.features.late_tx_ack;
        drain_chains(w.ctx, TX_QUEUE, vring, |chain| {
            if chain.writer.available_bytes() == 0 {
                w.ctx.log.warn(
                    "TX request without a result byte",
                    &io::Error::other(format!("head {}", chain.head())),
                );
                return Ok(Completion::Used(0));
            }
            let result = match request::parse_tx(&mut chain.reader, w.features) {
                Err(e) => {
                    w.ctx.log.warn("refused CAN frame", &e);
                    RESULT_NOT_OK
                }
                Ok(_) if !self.ctrl.started() => RESULT_NOT_OK,
                Ok(frame) => {
                    let sent = if self.tx_waiting.is_empty() {
                        self.transmit(w, frame)?
                    } else {
                        // Behind others that wait: keep the order.
                        Some(Sent::WouldBlock)
                    };
                    match sent {
                        Some(Sent::Queued) if late => {
                            let chain = chain.hold();
                            self.tx_unacked.push_back(Pending { chain, frame });
                            return Ok(Completion::Held);
                        }
                        Some(Sent::WouldBlock) => {
                            let chain = chain.hold();
                            self.tx_waiting.push_back(Pending { chain, frame });
                            return Ok(Completion::Held);
                        }
                        Some(Sent::Queued) => RESULT_OK,
                        None => RESULT_NOT_OK,
                    }
                }
            };
            self.count(result);
            Ok(Completion::Used(request::write_result(
                &mut chain.writer,
                result,
            )?))
        })?;
        self.record(TX_QUEUE, vring);
        Ok(())
    }

    /// Hand waiting TX requests to the host, in order, while it takes them.
    fn send_waiting(&mut self, w: &Work<'_, '_>) -> Result<(), HostError> {
        while let Some(p) = self.tx_waiting.pop_front() {
            match self.transmit(w, p.frame)? {
                Some(Sent::WouldBlock) => {
                    self.tx_waiting.push_front(p);
                    break;
                }
                Some(Sent::Queued) if w.features.late_tx_ack => self.tx_unacked.push_back(p),
                Some(Sent::Queued) => self.answer_tx(w, p.chain, RESULT_OK)?,
                None => self.answer_tx(w, p.chain, RESULT_NOT_OK)?,
            }
        }
        Ok(())
    }

    fn serve_rx(&mut self, w: &Work<'_, '_>, vring: &Vring) -> Result<(), HostError> {
        drain_chains(w.ctx, RX_QUEUE, vring, |chain| {
            if chain.writer.available_bytes() < HEADER_SIZE {
                w.ctx.log.warn(
                    "rx buffer too small for any frame",
                    &io::Error::other(format!(
                        "{} bytes, at least {HEADER_SIZE} needed",
                        chain.writer.available_bytes()
                    )),
                );
                return Ok(Completion::Used(0));
            }
            self.rx_buffers.push_back(chain.hold());
            Ok(Completion::Held)
        })?;
        self.record(RX_QUEUE, vring);
        Ok(())
    }

    /// Put waiting frames into waiting rx buffers, oldest first.
    fn deliver_rx(&mut self, w: &Work<'_, '_>) -> Result<(), HostError> {
        while let (Some(frame), false) = (self.rx_fifo.front().copied(), self.rx_buffers.is_empty())
        {
            let Some(buffer) = self.rx_buffers.pop_front() else {
                break;
            };
            let mut fitted = false;
            let back = w.ctx.try_complete(buffer, |_, writer| {
                match request::write_rx(writer, &frame) {
                    Ok(Some(n)) => {
                        fitted = true;
                        Ok(Some(n))
                    }
                    Ok(None) => {
                        w.ctx.log.warn(
                            "rx buffer too small for a frame",
                            &io::Error::other(format!(
                                "{frame} needs {} bytes, the buffer has {}",
                                request::rx_size(&frame),
                                writer.available_bytes()
                            )),
                        );
                        Ok(Some(0))
                    }
                    Err(e) => {
                        w.ctx.log.warn("cannot write an rx buffer", &e);
                        Ok(Some(0))
                    }
                }
            })?;
            if let Some(buffer) = back {
                // The queue is stopped (migration): keep everything.
                self.rx_buffers.push_front(buffer);
                break;
            }
            if fitted {
                self.rx_fifo.pop_front();
                self.stats.rx_delivered += 1;
            }
        }
        Ok(())
    }

    fn receive(&mut self, w: &Work<'_, '_>, frame: CanFrame) {
        if !self.ctrl.started() {
            self.stats.rx_while_stopped += 1;
            return;
        }
        if request::negotiated(&frame, w.features).is_err() {
            self.stats.rx_not_negotiated += 1;
            return;
        }
        if self.rx_fifo.len() >= self.rx_fifo_max {
            if let Some(old) = self.rx_fifo.pop_front() {
                log::debug!("RX FIFO full: dropped {old}");
            }
            self.stats.rx_overflow += 1;
        }
        self.rx_fifo.push_back(frame);
    }

    fn echo(&mut self, w: &Work<'_, '_>, frame: CanFrame) -> Result<(), HostError> {
        // Echoes of frames already answered (cancelled) match nothing.
        if let Some(i) = self.tx_unacked.iter().position(|p| p.frame.same_as(&frame)) {
            if let Some(p) = self.tx_unacked.remove(i) {
                self.answer_tx(w, p.chain, RESULT_OK)?;
            }
        }
        Ok(())
    }

    fn bus_off(&mut self, w: &mut Work<'_, '_>, why: &str) -> Result<(), HostError> {
        let started = self.ctrl.started();
        let e = self.ctrl.bus_off();
        if started {
            log::warn!("{}: {why}: controller stopped (bus-off)", self.host.name());
            self.stats.bus_offs += 1;
        }
        self.apply(w, e)
    }

    fn error_frame(&mut self, w: &mut Work<'_, '_>, e: ErrorFrame) -> Result<(), HostError> {
        if e.is_bus_off() {
            return self.bus_off(w, "bus-off reported");
        }
        log::debug!("{}: error frame class {:#x}", self.host.name(), e.class);
        Ok(())
    }

    /// Take what the host has (bounded; the epoll reports the rest).
    fn poll_host(&mut self, w: &mut Work<'_, '_>) -> Result<(), HostError> {
        if !self.host_registered && self.events.is_some() {
            return Ok(());
        }
        for _ in 0..MAX_READS {
            match self.host.recv()? {
                None => break,
                Some(Received::Frame(f)) => self.receive(w, f),
                Some(Received::Echo(f)) => self.echo(w, f)?,
                Some(Received::Error(e)) => self.error_frame(w, e)?,
                Some(Received::LinkDown) => self.bus_off(w, "interface went down")?,
                Some(Received::Disconnected) => {
                    self.disconnected(w)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// The bus connection ended: frames sent and not yet confirmed are lost
    /// with it (answered NOT_OK); those not sent yet wait for the rejoin.
    fn disconnected(&mut self, w: &Work<'_, '_>) -> Result<(), HostError> {
        log::warn!("lost the {}; rejoining", self.host.name());
        if let (Some(events), true) = (&self.events, self.host_registered) {
            events.remove(0, self.host.fd())?;
        }
        self.host_registered = false;
        self.watching_out = false;
        for p in std::mem::take(&mut self.tx_unacked) {
            self.answer_tx(w, p.chain, RESULT_NOT_OK)?;
        }
        self.rejoin()
    }

    fn rejoin(&mut self) -> Result<(), HostError> {
        if self.host.reconnect()? {
            self.rejoining = false;
            self.register_host()?;
        } else {
            self.rejoining = true;
            self.arm_timer(REJOIN_DELAY)?;
        }
        Ok(())
    }

    fn register_host(&mut self) -> io::Result<()> {
        if let Some(events) = &self.events {
            events.add(0, self.host.fd(), EventSet::IN, TOKEN_HOST)?;
            self.host_registered = true;
            self.watching_out = false;
        }
        Ok(())
    }

    /// Watch for writability exactly while something waits to be sent.
    fn sync_interest(&mut self) -> Result<(), HostError> {
        let want = !self.tx_waiting.is_empty() || self.host.wants_write();
        if want == self.watching_out || !self.host_registered {
            return Ok(());
        }
        if let Some(events) = &self.events {
            let set = if want {
                EventSet::IN | EventSet::OUT
            } else {
                EventSet::IN
            };
            events.modify(0, self.host.fd(), set, TOKEN_HOST)?;
            self.watching_out = want;
        }
        Ok(())
    }

    fn arm_timer(&mut self, after: Duration) -> io::Result<()> {
        self.timer.set(
            Expiration::OneShot(TimeSpec::from_duration(after)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(())
    }

    fn clear_timer(&mut self) {
        // Non-blocking: EAGAIN just means it was already consumed.
        let _ = self.timer.wait();
    }

    /// Drop everything the driver gave or set (a device reset): held
    /// buffers, in the runtime too when `held` is given, the controller
    /// mode, undelivered frames.
    fn forget_driver(&mut self, held: Option<&HeldHeads>) {
        if self.ctrl.started() {
            if let Err(e) = self.host.set_online(false) {
                log::warn!("cannot leave the {}: {e}", self.host.name());
            }
        }
        self.ctrl = Controller::default();
        self.saved = false;
        self.rings = [None; NUM_QUEUES];
        self.tx_waiting.clear();
        self.tx_unacked.clear();
        self.tx_answers.clear();
        self.rx_buffers.clear();
        self.stats.rx_flushed += self.rx_fifo.len() as u64;
        self.rx_fifo.clear();
        if let Some(held) = held {
            held.clear();
        }
    }

    /// If a ring runs somewhere else than where the device last drained it,
    /// a new driver set it up: forget the old one (see the module docs).
    fn check_rings(&mut self, w: &Work<'_, '_>) -> Result<(), HostError> {
        for (queue, was) in self.rings.into_iter().enumerate() {
            let (Some(was), Some(vring)) = (was, w.ctx.vrings.get(queue).copied().flatten()) else {
                continue;
            };
            match RingPosition::of(vring) {
                Some(now) if now != was => {
                    log::info!(
                        "queue {queue} was set up anew (descriptors at {:#x}, index {}; they were at \
                         {:#x}, index {}): the guest reset the device; dropping {} held rx buffers \
                         and {} TX requests, the controller is stopped",
                        now.desc_table,
                        now.next_avail,
                        was.desc_table,
                        was.next_avail,
                        self.rx_buffers.len(),
                        self.tx_waiting.len() + self.tx_unacked.len() + self.tx_answers.len(),
                    );
                    self.forget_driver(Some(w.ctx.held));
                    w.status.store(0, Ordering::Release);
                    return Ok(());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Remember where `queue` is after a drain.
    fn record(&mut self, queue: usize, vring: &Vring) {
        if let Some(slot) = self.rings.get_mut(queue) {
            *slot = RingPosition::of(vring);
        }
    }

    /// The front end runs the queues again after a migration that failed:
    /// rejoin the bus; the frames in flight were withdrawn at the save, so
    /// they are answered NOT_OK here too.
    fn resume(&mut self, w: &Work<'_, '_>) -> Result<(), HostError> {
        if !self.saved {
            return Ok(());
        }
        self.saved = false;
        log::info!("queues restarted after a state save: back on the bus");
        self.cancel_tx(w)?;
        if self.ctrl.started() {
            self.host.set_online(true)?;
        }
        Ok(())
    }

    fn control(
        &mut self,
        w: &mut Work<'_, '_>,
        cmd: Result<Command, request::Error>,
    ) -> Result<u8, HostError> {
        let cmd = match cmd {
            Ok(cmd) => cmd,
            Err(e) => {
                w.ctx.log.warn("refused control request", &e);
                return Ok(RESULT_NOT_OK);
            }
        };
        if cmd == Command::Stop && self.ctrl.started() {
            // Frames the bus already confirmed complete OK, not NOT_OK.
            self.poll_host(w)?;
        }
        let link_up = self.host.link_up();
        let e = self.ctrl.command(cmd, link_up);
        if cmd == Command::Start && e.result != RESULT_OK {
            log::warn!("START refused: the {} is down", self.host.name());
        }
        self.apply(w, e)?;
        Ok(e.result)
    }
}

impl Drop for CanDevice {
    fn drop(&mut self) {
        let st = self.lock();
        let s = st.stats;
        log::info!(
            "{}: tx {} ok, {} not ok, {} lost in a migration; rx {} delivered, dropped {} (fifo full), \
             {} (stopped), {} (type not negotiated), {} (flushed); {} bus-off",
            st.host.name(),
            s.tx_ok,
            s.tx_not_ok,
            s.tx_lost_in_migration,
            s.rx_delivered,
            s.rx_overflow,
            s.rx_while_stopped,
            s.rx_not_negotiated,
            s.rx_flushed,
            s.bus_offs
        );
    }
}

impl VirtioDevice for CanDevice {
    type State = SavedState;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        Features::offer(self.fd_capable)
    }

    fn acked_features(&self, features: u64) {
        self.acked.store(features, Ordering::Release);
    }

    fn config(&self) -> Vec<u8> {
        self.status.load(Ordering::Acquire).to_le_bytes().to_vec()
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        let mut st = self.lock();
        events.add(0, st.timer.as_fd(), EventSet::IN, TOKEN_TIMER)?;
        st.events = Some(events);
        st.register_host()
    }

    fn reset(&self) {
        self.lock().forget_driver(None);
        self.status.store(0, Ordering::Release);
        self.acked.store(0, Ordering::Release);
    }

    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        self.with_state(ctx, |st, w| {
            st.resume(w)?;
            st.flush_answers(w)?;
            match queue {
                TX_QUEUE => st.serve_tx(w, vring),
                RX_QUEUE => {
                    st.serve_rx(w, vring)?;
                    st.deliver_rx(w)
                }
                CONTROL_QUEUE => {
                    let mut outcome = Ok(());
                    drain_chains(ctx, CONTROL_QUEUE, vring, |chain| {
                        if chain.writer.available_bytes() == 0 {
                            ctx.log.warn(
                                "control request without a result byte",
                                &io::Error::other(format!("head {}", chain.head())),
                            );
                            return Ok(Completion::Used(0));
                        }
                        let cmd = request::parse_control(&mut chain.reader);
                        match st.control(w, cmd) {
                            Ok(result) => Ok(Completion::Used(request::write_result(
                                &mut chain.writer,
                                result,
                            )?)),
                            Err(e) => {
                                outcome = Err(e);
                                Ok(Completion::Stop)
                            }
                        }
                    })?;
                    st.record(CONTROL_QUEUE, vring);
                    outcome
                }
                _ => Ok(()),
            }
        })
    }

    fn host_event(
        &self,
        ctx: &QueueContext<'_>,
        token: u16,
        events: EventSet,
        _vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        self.with_state(ctx, |st, w| {
            match token {
                TOKEN_HOST => {
                    if events.contains(EventSet::OUT) {
                        st.host.flush()?;
                        st.send_waiting(w)?;
                    }
                    if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
                        st.poll_host(w)?;
                    }
                }
                TOKEN_TIMER => {
                    st.clear_timer();
                    if st.rejoining {
                        st.rejoin()?;
                    }
                }
                _ => {}
            }
            st.flush_answers(w)?;
            st.deliver_rx(w)
        })
    }

    fn save_state(&self) -> Result<SavedState, HostError> {
        let mut st = self.lock();
        // Leave the bus until the queues run here again (a failed
        // migration): the destination takes over, and nothing this device
        // still has in flight may be transmitted now.
        if st.ctrl.started() && !st.saved {
            st.host.set_online(false)?;
        }
        st.saved = true;
        let mut stats = st.stats;
        // In flight: the destination answers them NOT_OK; never sent twice.
        let mut tx: Vec<(HeldChain, u8)> = st.tx_answers.iter().cloned().collect();
        let in_flight = st.tx_unacked.iter().chain(&st.tx_waiting);
        stats.tx_lost_in_migration += in_flight.clone().count() as u64;
        tx.extend(in_flight.map(|p| (p.chain.clone(), RESULT_NOT_OK)));
        stats.rx_flushed += st.rx_fifo.len() as u64;
        Ok(SavedState {
            mode: st.ctrl.mode(),
            busoff: st.ctrl.busoff(),
            tx,
            rx_buffers: st.rx_buffers.iter().cloned().collect(),
            stats,
        })
    }

    fn load_state(&self, state: SavedState) -> Result<(), HostError> {
        let mut st = self.lock();
        st.ctrl = Controller::restored(state.mode, state.busoff);
        if st.ctrl.started() {
            st.host.set_online(true)?;
        }
        st.tx_answers = state.tx.into();
        st.rx_buffers = state.rx_buffers.into();
        st.stats = state.stats;
        if !st.tx_answers.is_empty() {
            log::info!(
                "{} TX requests were in flight at the migration: answered NOT_OK",
                st.tx_answers.iter().filter(|t| t.1 != RESULT_OK).count()
            );
            // Answer them as soon as the queue runs here.
            st.arm_timer(Duration::from_millis(1))?;
        }
        self.status.store(st.ctrl.status(), Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
