// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The RTC device: the requestq, the alarmq, one alarm timer per clock, all
//! in the worker's epoll.
//!
//! - **requestq** (virtio 1.4, 5.23.6): every request is answered at once
//!   ([`request`] parses and encodes, [`RtcDevice::execute`] decides), in
//!   available order, so reads of one clock come back in order.
//! - **alarmq** (5.23.6.5, "Alarm Notifications"): the driver's buffers are
//!   *held* (taken off the ring, kept in arrival order) until an alarm
//!   expires; then the oldest is completed with a `VIRTIO_RTC_NOTIF_ALARM`.
//!   An expiration with no buffer free waits (one per clock, in expiry
//!   order) for the next buffer.
//! - **alarms** ([`alarm`]): one per clock, on a timerfd with an absolute
//!   time and `TFD_TIMER_CANCEL_ON_SET` ([`crate::host`]), registered in the
//!   worker epoll under the clock's token; when it fires or the host clock is
//!   stepped, the alarm is re-evaluated. A disable (or a new alarm time)
//!   drops the clock's undelivered notification before its request's buffer
//!   is used, as 5.23.6.5 requires.
//!
//! Monotonic clocks never go backwards: each reading is at least the last
//! one, and after a live migration a monotonic clock continues from the
//! source's last reading (the destination's own clock plus an offset).
//! UTC-like and TAI clocks are the destination host's clocks.
//!
//! When the front end has stopped the alarmq (`GET_VRING_BASE` during a
//! migration, or a paused VM), a notification cannot be delivered: a retry
//! timer (50 ms, backing off to 1 s) tries again until the queue runs.
//!
//! Alarms are not retained across a device reset (5.23.6.5 makes retention
//! optional): a reset disables them all, which also keeps one driver's
//! alarms from leaking into the next.
//!
//! QEMU does not tell a vhost-user back end when the guest resets the device
//! (a reboot, a driver unbound and bound again): it stops the rings
//! (`GET_VRING_BASE`) and later sets them up anew — as it also does around a
//! pause (`stop`/`cont`), where the driver still waits for the buffers the
//! device holds. The device tells the two apart by the rings themselves: it
//! remembers where each ring was (descriptor table address and next available
//! index) after it last drained it; a ring that comes back elsewhere (a fresh
//! driver starts at index 0, with new rings) is a new driver's, and the held
//! buffers — pointers into the old driver's memory — and the alarms are
//! dropped before anything is written or answered, so a rebooted guest never
//! gets a stale notification written into its memory or its used ring, nor
//! the old driver's alarms. Whichever ring the new driver uses first shows
//! it (its requests usually come first; the front end may set the alarmq up
//! a moment later).

pub mod alarm;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{
    ClockId as TimerClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags,
};
use serde::{Deserialize, Serialize};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::HostError;
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::{drain_chains, Chain, Completion, HeldChain, QueueContext, Vring};
use vhost_device_common::vhost_user_backend::VringT;
use vhost_device_common::virtio_queue::QueueT;
use vhost_device_common::vm_memory::ByteValued;
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use self::alarm::{Alarm, Notify, Outcome};
use crate::args::{ClockConfig, Config};
use crate::host::linux::OpenError;
use crate::host::{HostClock, Source, Timer, TimerEvent};
use crate::request::{self, Request, Response};
use crate::virtio::{
    counter, ClockType, NotifAlarm, Smearing, Status, ALARM_QUEUE, FLAG_ALARM_CAP,
    FLAG_ALARM_ENABLED, MAX_QUEUE_SIZE, NOTIF_ALARM, NUM_QUEUES, REQUEST_QUEUE, VIRTIO_RTC_F_ALARM,
};

/// Host-event token of the retry timer.
pub const TOKEN_RETRY: u16 = 0;
/// Host-event token of clock 0's alarm timer; clock `i` has `TOKEN_CLOCK0 + i`.
pub const TOKEN_CLOCK0: u16 = 1;

const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// One clock of the device.
struct Clock {
    config: ClockConfig,
    host: Box<dyn HostClock>,
    /// Added to the host reading: a monotonic clock continued from a
    /// migration source whose clock was ahead.
    offset: u64,
    /// The last reading handed out.
    last: u64,
    alarm: Alarm,
    /// An expiration waits for an alarmq buffer.
    pending: bool,
}

impl Clock {
    fn new(config: ClockConfig, host: Box<dyn HostClock>) -> Self {
        Self {
            config,
            host,
            offset: 0,
            last: 0,
            alarm: Alarm::default(),
            pending: false,
        }
    }

    /// A reading on the clock's scale; a monotonic clock never goes back.
    fn read(&mut self) -> io::Result<u64> {
        let raw = self.host.now()?.saturating_add(self.offset);
        let v = if self.config.clock_type == ClockType::Monotonic {
            raw.max(self.last)
        } else {
            raw
        };
        self.last = v;
        Ok(v)
    }

    /// Arm the host timer for `timer` (on the clock's scale).
    fn arm(&mut self, timer: Timer) -> io::Result<()> {
        self.host.set_timer(match timer {
            Timer::At(t) => Timer::At(t.saturating_sub(self.offset)),
            t => t,
        })
    }

    fn smearing(&self) -> u8 {
        match self.config.clock_type {
            ClockType::UtcSmeared => self.config.smearing as u8,
            _ => Smearing::Unspecified as u8,
        }
    }
}

/// Where the alarmq ring was after the device last took buffers from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingPosition {
    /// Guest address of its descriptor table.
    pub desc_table: u64,
    /// Its next available index.
    pub next_avail: u16,
}

impl RingPosition {
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
    clocks: Vec<Clock>,
    /// `VIRTIO_RTC_F_ALARM` is offered.
    offer_alarm: bool,
    /// `VIRTIO_RTC_F_ALARM` was negotiated.
    alarm_on: bool,
    /// Held alarmq buffers, oldest first.
    alarmq: VecDeque<HeldChain>,
    /// Clocks whose expiration waits for a buffer, in expiry order.
    pending: VecDeque<u16>,
    /// Where the alarmq was when the held buffers were taken.
    ring: Option<RingPosition>,
    /// Where the requestq was after its last drain.
    req_ring: Option<RingPosition>,
    events: Option<HostEvents>,
    retry: TimerFd,
    retry_delay: Duration,
}

/// A clock in the migration state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedClock {
    /// Its type (must match the destination's clock).
    pub clock_type: ClockType,
    /// Its host clock (must match too).
    pub source: Source,
    /// The alarm.
    pub alarm: Alarm,
    /// The last reading (a monotonic clock continues from it).
    pub last: u64,
}

/// The live-migration state of an RTC device: the alarms, the expirations
/// not yet delivered and the held alarmq buffers. Clock readings are not
/// in it: on the destination they are the destination host's (monotonic
/// clocks continue from the source's last reading).
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedState {
    /// The clocks, by id.
    pub clocks: Vec<SavedClock>,
    /// `VIRTIO_RTC_F_ALARM` was negotiated.
    pub alarm_on: bool,
    /// Clocks whose expiration waits for a buffer, in order.
    pub pending: Vec<u16>,
    /// Held alarmq buffers, oldest first.
    pub alarmq: Vec<HeldChain>,
    /// Where the alarmq was when they were taken (the destination's ring
    /// continues there).
    pub ring: Option<RingPosition>,
    /// Where the requestq was.
    pub req_ring: Option<RingPosition>,
}

/// A state the destination cannot take.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The two daemons serve different clocks.
    #[error("the saved state has clocks {saved}, this daemon serves {here}; start it with the same --clock options")]
    Clocks {
        /// The source's clocks.
        saved: String,
        /// This daemon's.
        here: String,
    },
    /// A clock id out of range in the pending list.
    #[error("the saved state names clock {0}, which does not exist")]
    NoSuchClock(u16),
}

fn describe(clocks: impl Iterator<Item = (ClockType, Source)>) -> String {
    let v: Vec<String> = clocks.map(|(t, s)| format!("{t:?}:{}", s.name())).collect();
    format!("[{}]", v.join(", "))
}

/// One virtio RTC device (one per socket and connection).
pub struct RtcDevice {
    state: Mutex<State>,
}

impl RtcDevice {
    /// A device with the configured clocks, each freshly opened.
    pub fn new(config: &Config) -> Result<Self, HostError> {
        let clocks = config
            .clocks
            .iter()
            .map(|c| Ok((*c, c.host.open()?)))
            .collect::<Result<Vec<_>, OpenError>>()?;
        Ok(Self::with_clocks(clocks, config.alarms)?)
    }

    /// A device over the given host clocks (tests use scripted ones).
    pub fn with_clocks(
        clocks: Vec<(ClockConfig, Box<dyn HostClock>)>,
        offer_alarm: bool,
    ) -> io::Result<Self> {
        let retry = TimerFd::new(
            TimerClock::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Self {
            state: Mutex::new(State {
                clocks: clocks.into_iter().map(|(c, h)| Clock::new(c, h)).collect(),
                offer_alarm,
                alarm_on: false,
                alarmq: VecDeque::new(),
                pending: VecDeque::new(),
                ring: None,
                req_ring: None,
                events: None,
                retry,
                retry_delay: RETRY_FIRST,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        vhost_device_common::lock(&self.state)
    }

    /// Execute a parsed request: the response, or the error status.
    pub fn execute(&self, req: Request) -> Result<Response, Status> {
        self.lock().execute(req)
    }

    /// Clocks whose alarm expired and whose notification waits for an
    /// alarmq buffer, in expiry order.
    pub fn pending(&self) -> Vec<u16> {
        self.lock().pending.iter().copied().collect()
    }

    /// Number of alarmq buffers held.
    pub fn held_buffers(&self) -> usize {
        self.lock().alarmq.len()
    }

    /// The host timer event of clock `clock` (what `host_event` does, for
    /// tests without an epoll).
    pub fn clock_event(&self, clock: u16) -> Result<(), HostError> {
        self.lock().clock_event(usize::from(clock))
    }
}

impl State {
    fn execute(&mut self, req: Request) -> Result<Response, Status> {
        let n = self.clocks.len();
        let index = match req.clock() {
            Some(id) if usize::from(id) >= n => return Err(Status::ENoDev),
            Some(id) => usize::from(id),
            None => 0,
        };
        let alarm_on = self.alarm_on;
        match req {
            Request::Cfg => Ok(Response::Cfg(u16::try_from(n).unwrap_or(u16::MAX))),
            Request::Read { .. } => self.clocks[index].read().map(Response::Read).map_err(|e| {
                log::error!(
                    "cannot read host clock {}: {e}",
                    self.clocks[index].host.name()
                );
                Status::EIo
            }),
            Request::ClockCap { .. } => {
                let c = &self.clocks[index];
                Ok(Response::ClockCap {
                    clock_type: c.config.clock_type as u8,
                    smearing: c.smearing(),
                    flags: if alarm_on && c.config.alarm {
                        FLAG_ALARM_CAP
                    } else {
                        0
                    },
                })
            }
            // No cross-timestamping: the daemon cannot know the guest's view
            // of its counter. A known counter is answered "not supported"
            // (an error here would fail an arm64 guest's whole probe).
            Request::CrossCap { counter, .. } => match counter {
                counter::ARM_VCT | counter::X86_TSC => Ok(Response::CrossCap(0)),
                _ => Err(Status::EOpNotSupp),
            },
            Request::ReadCross { .. } => Err(Status::EOpNotSupp),
            Request::ReadAlarm { .. } => {
                let a = self.alarm_clock(index)?.alarm;
                Ok(Response::ReadAlarm {
                    time: a.time,
                    flags: if a.enabled { FLAG_ALARM_ENABLED } else { 0 },
                })
            }
            Request::SetAlarm { time, enabled, .. } => {
                let now = self.alarm_now(index)?;
                self.cancel_notification(index);
                let outcome = self.clocks[index].alarm.set(time, enabled, now);
                self.apply(index, outcome)
                    .map_err(|e| self.timer_failed(index, &e))?;
                Ok(Response::Empty)
            }
            Request::SetAlarmEnabled { enabled, .. } => {
                let now = self.alarm_now(index)?;
                self.cancel_notification(index);
                let outcome = self.clocks[index].alarm.set_enabled(enabled, now);
                self.apply(index, outcome)
                    .map_err(|e| self.timer_failed(index, &e))?;
                Ok(Response::Empty)
            }
        }
    }

    /// The clock, if alarm requests may use it (`ENODEV` otherwise, 5.23.6.5).
    fn alarm_clock(&mut self, index: usize) -> Result<&mut Clock, Status> {
        let on = self.alarm_on;
        match self.clocks.get_mut(index) {
            Some(c) if on && c.config.alarm => Ok(c),
            _ => Err(Status::ENoDev),
        }
    }

    fn alarm_now(&mut self, index: usize) -> Result<u64, Status> {
        let c = self.alarm_clock(index)?;
        c.read().map_err(|e| {
            log::error!("cannot read host clock {}: {e}", c.host.name());
            Status::EIo
        })
    }

    fn timer_failed(&self, index: usize, e: &io::Error) -> Status {
        log::error!(
            "cannot arm the alarm timer of clock {index} ({}): {e}",
            self.clocks[index].host.name()
        );
        Status::EIo
    }

    fn apply(&mut self, index: usize, outcome: Outcome) -> io::Result<()> {
        match outcome.notify {
            Notify::Send => self.queue_notification(index),
            Notify::Cancel => self.cancel_notification(index),
            Notify::Keep => {}
        }
        self.clocks[index].arm(outcome.timer)
    }

    fn queue_notification(&mut self, index: usize) {
        let c = &mut self.clocks[index];
        if !c.pending {
            c.pending = true;
            self.pending
                .push_back(u16::try_from(index).unwrap_or(u16::MAX));
        }
    }

    fn cancel_notification(&mut self, index: usize) {
        if std::mem::take(&mut self.clocks[index].pending) {
            self.pending.retain(|&c| usize::from(c) != index);
        }
    }

    /// The alarm timer of clock `index` fired or its clock was stepped.
    fn clock_event(&mut self, index: usize) -> Result<(), HostError> {
        let Some(c) = self.clocks.get_mut(index) else {
            return Ok(());
        };
        if c.host.timer_event()? == TimerEvent::None {
            return Ok(());
        }
        let now = c.read()?;
        let outcome = c.alarm.clock_changed(now);
        self.apply(index, outcome)?;
        Ok(())
    }

    /// Drop every alarm, notification and held buffer (a device reset).
    fn reset(&mut self, held: Option<&vhost_device_common::queue::HeldHeads>) {
        self.alarmq.clear();
        if let Some(held) = held {
            held.clear();
        }
        self.pending.clear();
        self.ring = None;
        self.req_ring = None;
        for c in &mut self.clocks {
            c.alarm = Alarm::default();
            c.pending = false;
            if let Err(e) = c.host.set_timer(Timer::Off) {
                log::warn!("cannot disarm the alarm timer of {}: {e}", c.host.name());
            }
        }
    }

    /// If a ring runs somewhere else than where the device last drained it,
    /// a new driver set it up: forget the old driver's buffers and alarms
    /// (see the module docs).
    fn check_rings(&mut self, ctx: &QueueContext<'_>) {
        let rings = [(REQUEST_QUEUE, self.req_ring), (ALARM_QUEUE, self.ring)];
        for (queue, was) in rings {
            let (Some(was), Some(vring)) = (was, ctx.vrings.get(queue).copied().flatten()) else {
                continue;
            };
            match RingPosition::of(vring) {
                Some(now) if now != was => {
                    log::info!(
                        "queue {queue} was set up anew (descriptors at {:#x}, index {}; they were at \
                         {:#x}, index {}): the guest reset the device; dropping {} held buffers and \
                         every alarm",
                        now.desc_table,
                        now.next_avail,
                        was.desc_table,
                        was.next_avail,
                        self.alarmq.len()
                    );
                    self.reset(Some(ctx.held));
                    return;
                }
                _ => {}
            }
        }
    }

    /// Complete held alarmq buffers with the waiting notifications.
    fn deliver(&mut self, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        self.check_rings(ctx);
        while let Some(&clock) = self.pending.front() {
            let Some(held) = self.alarmq.pop_front() else {
                break;
            };
            let mut written = false;
            let back = ctx.complete(held, |_, writer| {
                let notif = NotifAlarm {
                    msg_type: NOTIF_ALARM.into(),
                    clock_id: clock.into(),
                    ..NotifAlarm::default()
                };
                match std::io::Write::write_all(writer, notif.as_slice()) {
                    Ok(()) => written = true,
                    Err(e) => {
                        ctx.log.warn("cannot write an alarm notification", &e);
                    }
                }
                Ok(u32::try_from(writer.bytes_written()).unwrap_or(0))
            })?;
            if let Some(held) = back {
                // The queue is stopped: keep everything, look again later.
                self.alarmq.push_front(held);
                return self.arm_retry();
            }
            if written {
                self.pending.pop_front();
                self.clocks[usize::from(clock)].pending = false;
            }
        }
        self.retry_delay = RETRY_FIRST;
        Ok(())
    }

    fn arm_retry(&mut self) -> Result<(), HostError> {
        self.retry.set(
            Expiration::OneShot(TimeSpec::from_duration(self.retry_delay)),
            TimerSetTimeFlags::empty(),
        )?;
        self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
        Ok(())
    }

    /// Serve the request queue.
    fn serve_requests(&mut self, ctx: &QueueContext<'_>, vring: &Vring) -> Result<(), HostError> {
        // A driver that reset the device starts with requests: see that
        // before answering them from the old driver's alarms.
        self.check_rings(ctx);
        drain_chains(ctx, REQUEST_QUEUE, vring, |chain| {
            Ok(Completion::Used(self.answer(ctx, chain)))
        })?;
        self.req_ring = RingPosition::of(vring);
        self.deliver(ctx)
    }

    /// Answer one request; returns the used length.
    fn answer(&mut self, ctx: &QueueContext<'_>, chain: &mut Chain<'_>) -> u32 {
        let writer = &mut chain.writer;
        if writer.available_bytes() == 0 {
            ctx.log.warn(
                "request without a writable buffer",
                &io::Error::other(format!("head {}", chain.head())),
            );
            return 0;
        }
        let written = match request::parse(&mut chain.reader) {
            Err(e) => {
                ctx.log.warn("bad request", &e);
                request::write_status(writer, e.status())
            }
            Ok(req) if writer.available_bytes() < req.response_size() => {
                ctx.log.warn(
                    "response buffer too small",
                    &io::Error::other(format!(
                        "{req:?} needs {} bytes, the buffer has {}",
                        req.response_size(),
                        writer.available_bytes()
                    )),
                );
                request::write_status(writer, Status::EInval)
            }
            Ok(req) => match self.execute(req) {
                Ok(resp) => resp.write(writer),
                Err(status) => {
                    if status != Status::EIo {
                        log::debug!("{req:?}: {status:?}");
                    }
                    request::write_status(writer, status)
                }
            },
        };
        written.unwrap_or_else(|e| {
            ctx.log.warn("cannot write the response", &e);
            u32::try_from(writer.bytes_written()).unwrap_or(0)
        })
    }

    /// Take alarmq buffers.
    fn take_buffers(&mut self, ctx: &QueueContext<'_>, vring: &Vring) -> Result<(), HostError> {
        self.check_rings(ctx);
        drain_chains(ctx, ALARM_QUEUE, vring, |chain| {
            if chain.writer.available_bytes() < NotifAlarm::default().as_slice().len() {
                ctx.log.warn(
                    "alarmq buffer too small for a notification",
                    &io::Error::other(format!(
                        "head {}: {} writable bytes",
                        chain.head(),
                        chain.writer.available_bytes()
                    )),
                );
                return Ok(Completion::Used(0));
            }
            self.alarmq.push_back(chain.hold());
            Ok(Completion::Held)
        })?;
        self.ring = RingPosition::of(vring);
        self.deliver(ctx)
    }
}

impl VirtioDevice for RtcDevice {
    type State = SavedState;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        if self.lock().offer_alarm {
            1 << VIRTIO_RTC_F_ALARM
        } else {
            0
        }
    }

    fn acked_features(&self, features: u64) {
        let mut st = self.lock();
        st.alarm_on = st.offer_alarm && features & (1 << VIRTIO_RTC_F_ALARM) != 0;
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        let mut st = self.lock();
        events.add(0, st.retry.as_fd(), EventSet::IN, TOKEN_RETRY)?;
        for (i, c) in st.clocks.iter().enumerate() {
            if let Some(fd) = c.host.timer_fd() {
                let token = u16::try_from(i)
                    .ok()
                    .and_then(|i| i.checked_add(TOKEN_CLOCK0))
                    .ok_or_else(|| io::Error::other("too many clocks"))?;
                events.add(0, fd, EventSet::IN, token)?;
            }
        }
        st.events = Some(events);
        Ok(())
    }

    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        let mut st = self.lock();
        match queue {
            REQUEST_QUEUE => st.serve_requests(ctx, vring),
            ALARM_QUEUE => st.take_buffers(ctx, vring),
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
        let mut st = self.lock();
        if token == TOKEN_RETRY {
            let mut buf = [0u8; 8];
            // Non-blocking: EAGAIN only means it was already consumed.
            let _ = nix::unistd::read(st.retry.as_fd().as_raw_fd(), &mut buf);
        } else {
            st.clock_event(usize::from(token - TOKEN_CLOCK0))?;
        }
        st.deliver(ctx)
    }

    fn reset(&self) {
        let mut st = self.lock();
        // The runtime clears its own held set on a reset.
        st.reset(None);
        st.alarm_on = false;
    }

    fn save_state(&self) -> Result<SavedState, HostError> {
        let st = self.lock();
        Ok(SavedState {
            clocks: st
                .clocks
                .iter()
                .map(|c| SavedClock {
                    clock_type: c.config.clock_type,
                    source: c.config.host.source,
                    alarm: c.alarm,
                    last: c.last,
                })
                .collect(),
            alarm_on: st.alarm_on,
            pending: st.pending.iter().copied().collect(),
            alarmq: st.alarmq.iter().map(HeldChain::to_saved).collect(),
            ring: st.ring,
            req_ring: st.req_ring,
        })
    }

    fn load_state(&self, saved: SavedState) -> Result<(), HostError> {
        let mut st = self.lock();
        let here = st
            .clocks
            .iter()
            .map(|c| (c.config.clock_type, c.config.host.source));
        if !here
            .clone()
            .eq(saved.clocks.iter().map(|c| (c.clock_type, c.source)))
        {
            return Err(StateError::Clocks {
                saved: describe(saved.clocks.iter().map(|c| (c.clock_type, c.source))),
                here: describe(here),
            }
            .into());
        }
        if let Some(&bad) = saved
            .pending
            .iter()
            .find(|&&c| usize::from(c) >= st.clocks.len())
        {
            return Err(StateError::NoSuchClock(bad).into());
        }
        st.alarm_on = saved.alarm_on;
        for (c, s) in st.clocks.iter_mut().zip(&saved.clocks) {
            c.alarm = s.alarm;
            c.pending = false;
            if c.config.clock_type == ClockType::Monotonic {
                c.offset = s.last.saturating_sub(c.host.now()?);
                c.last = s.last;
            }
        }
        st.pending.clear();
        for &clock in &saved.pending {
            st.queue_notification(usize::from(clock));
        }
        st.alarmq = saved.alarmq.into();
        st.ring = saved.ring;
        st.req_ring = saved.req_ring;
        // The alarms on this host's clocks: arm them, and expire those whose
        // time passed while the guest moved.
        for i in 0..st.clocks.len() {
            let now = st.clocks[i].read()?;
            let outcome = st.clocks[i].alarm.clock_changed(now);
            st.apply(i, outcome)?;
        }
        if !st.pending.is_empty() {
            // Delivered once the front end runs the alarmq here.
            st.retry_delay = RETRY_FIRST;
            st.arm_retry()?;
        }
        log::info!(
            "loaded {} alarms, {} pending notifications, {} alarmq buffers",
            st.clocks.iter().filter(|c| c.alarm.enabled).count(),
            st.pending.len(),
            st.alarmq.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
