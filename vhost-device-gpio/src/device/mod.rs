// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The virtio-gpio device (virtio 1.3, 5.18): the two queues, the host's
//! edge descriptors in the worker epoll, and migration.
//!
//! - `requestq` (0): every request is answered at once, in order, through
//!   [`lines::Lines::handle`]; a malformed chain or a refused request gets
//!   `VIRTIO_GPIO_STATUS_ERR` and the queue goes on.
//! - `eventq` (1): a buffer unmasks its line's interrupt. It is answered at
//!   once (latched edge, active level, interrupt disabled, a second buffer
//!   for the line, a bad buffer) or *held* ([`Chain::hold`](vhost_device_common::queue::Chain::hold)) until the
//!   interrupt fires or is disabled; held buffers are completed from
//!   [`VirtioDevice::host_event`] with [`QueueContext::complete`].
//! - Host events: the chip's edge descriptors are in the worker's epoll —
//!   one line request per line with an interrupt on a real chip (token
//!   `2 + line`), the simulated chip's eventfd (token 1) — so there is no
//!   thread per interrupt and no polling: an idle device with any number of
//!   armed lines uses no CPU. A line's descriptor is taken out of the epoll
//!   before a request may close it and put back after.
//! - Migration: the state holds every line in use (direction, latched
//!   output value, interrupt type, latched edge, held eventq buffer) and
//!   completions that could not be delivered while the queue was stopped.
//!   The destination claims the lines as saved and, once its queues run,
//!   fires what must fire (a latched edge, an active level). A one-shot
//!   timerfd (token 0) brings the worker back for that, and to retry a
//!   completion every 50 ms while the front end keeps the queue stopped.

pub mod lines;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use serde::{Deserialize, Serialize};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::HostError;
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::{drain, drain_chains, Completion, HeldChain, QueueContext, Vring};
use vhost_device_common::vm_memory::ByteValued;
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use crate::host::{names_block, GpioHost};
use crate::request;
use crate::virtio::{
    Config, IrqStatus, RequestType, EVENT_QUEUE, MAX_QUEUE_SIZE, NUM_QUEUES, REQUEST_QUEUE,
    VIRTIO_GPIO_F_IRQ,
};
use lines::{Answer, Lines, SavedLine};

/// Host-event token of the retry timer.
pub const TOKEN_TIMER: u16 = 0;
/// Host-event token of a chip-wide edge descriptor (the simulated chip).
pub const TOKEN_CHIP: u16 = 1;
/// Host-event token of line 0's edge descriptor; line `n` is this plus `n`.
pub const TOKEN_LINE_BASE: u16 = 2;

/// How often an undeliverable completion is retried while the front end
/// keeps the eventq stopped.
const RETRY: Duration = Duration::from_millis(50);

/// The live-migration state of a gpio device.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedState {
    /// Every line in use.
    pub lines: Vec<SavedLine<HeldChain>>,
    /// Eventq buffers answered but not yet delivered (queue stopped).
    pub deferred: Vec<(HeldChain, IrqStatus)>,
}

struct Inner {
    lines: Lines<HeldChain>,
    events: Option<HostEvents>,
    /// Lines whose edge descriptor is in the epoll, and that descriptor.
    watched: BTreeMap<u16, RawFd>,
    deferred: Vec<(HeldChain, IrqStatus)>,
    /// After a migration: look at every pending buffer once the queues run.
    recheck: bool,
    timer: TimerFd,
}

/// One virtio-gpio device (one per socket and front-end connection).
pub struct GpioDevice {
    inner: Mutex<Inner>,
    config: Vec<u8>,
}

/// A copy of a held chain for the saved state; the device keeps its own, so
/// the source still has it if the migration fails and the guest goes on here.
fn copy_held(h: &HeldChain) -> Result<HeldChain, postcard::Error> {
    postcard::from_bytes(&postcard::to_stdvec(h)?)
}

impl GpioDevice {
    /// A device over `host`.
    pub fn new(host: Box<dyn GpioHost>) -> io::Result<Self> {
        let names: Vec<String> = (0..host.num_lines()).map(|l| host.line_name(l)).collect();
        let names = names_block(&names);
        let config = Config {
            ngpio: host.num_lines().into(),
            padding: [0; 2],
            gpio_names_size: u32::try_from(names.len()).unwrap_or(0).into(),
        };
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Self {
            inner: Mutex::new(Inner {
                lines: Lines::new(host, names),
                events: None,
                watched: BTreeMap::new(),
                deferred: Vec::new(),
                recheck: false,
                timer,
            }),
            config: config.as_slice().to_vec(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        vhost_device_common::lock(&self.inner)
    }

    /// Lines with an edge descriptor in the epoll (for tests).
    pub fn watched_lines(&self) -> Vec<u16> {
        self.lock().watched.keys().copied().collect()
    }
}

fn line_token(line: u16) -> Option<u16> {
    TOKEN_LINE_BASE.checked_add(line)
}

impl Inner {
    /// Take `line`'s descriptor out of the epoll (before a request may
    /// close it: a closed descriptor's number may come back for another
    /// line).
    fn unwatch(&mut self, line: u16) {
        if let (Some(fd), Some(events)) = (self.watched.remove(&line), self.events.as_ref()) {
            // SAFETY: `fd` is the line request's descriptor, still open: the
            // host closes it only after this (see `watch`).
            let _ = events.remove(0, unsafe { BorrowedFd::borrow_raw(fd) });
        }
    }

    /// Put `line`'s descriptor into the epoll if it has an interrupt.
    fn watch(&mut self, line: u16) -> Result<(), HostError> {
        let wanted = self
            .lines
            .line(line)
            .is_some_and(|s| s.irq != crate::virtio::IrqType::None);
        let Some(events) = self.events.as_ref() else {
            return Ok(());
        };
        let fd = match self.lines.host().line_event_fd(line) {
            Some(fd) if wanted => fd,
            _ => return Ok(()),
        };
        let token = line_token(line).ok_or("line number too large for an event token")?;
        events.add(0, fd, EventSet::IN, token)?;
        self.watched.insert(line, fd.as_raw_fd());
        Ok(())
    }

    fn unwatch_all(&mut self) {
        let lines: Vec<u16> = self.watched.keys().copied().collect();
        for line in lines {
            self.unwatch(line);
        }
    }

    fn arm(&mut self, after: Duration) -> Result<(), HostError> {
        self.timer.set(
            Expiration::OneShot(TimeSpec::from_duration(after)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(())
    }

    /// Deliver every answered eventq buffer; keep what the stopped queue
    /// gives back and retry it later.
    fn deliver(&mut self, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        let mut todo = std::mem::take(&mut self.deferred);
        todo.extend(self.lines.take_done());
        for (held, status) in todo {
            if let Some(back) = ctx.complete(held, |_, w| Ok(request::respond_irq(w, status)))? {
                self.deferred.push((back, status));
            }
        }
        if !self.deferred.is_empty() {
            self.arm(RETRY)?;
        }
        Ok(())
    }

    fn serve_requests(&mut self, ctx: &QueueContext<'_>, vring: &Vring) -> Result<(), HostError> {
        let ngpio = self.lines.ngpio();
        drain(ctx, vring, |reader, writer| {
            let req = match request::parse(reader) {
                Ok(r) => r,
                Err(e) => {
                    ctx.log.warn("malformed request", &e);
                    return Ok(Completion::Used(request::respond(writer, Err(()))));
                }
            };
            let reconfigures = req.line < ngpio
                && (req.kind == RequestType::SetDirection as u16
                    || req.kind == RequestType::SetIrqType as u16);
            if reconfigures {
                self.unwatch(req.line);
            }
            let result = self.lines.handle(req);
            if reconfigures {
                self.watch(req.line)?;
            }
            let used = match result {
                Ok(Answer::Value(v)) => request::respond(writer, Ok(v)),
                Ok(Answer::Names) => request::respond_names(writer, self.lines.names()),
                Err(e) => {
                    ctx.log.warn("request refused", &e);
                    request::respond(writer, Err(()))
                }
            };
            Ok(Completion::Used(used))
        })?;
        Ok(())
    }

    fn serve_events(&mut self, ctx: &QueueContext<'_>, vring: &Vring) -> Result<(), HostError> {
        let lines = &mut self.lines;
        drain_chains(ctx, EVENT_QUEUE, vring, |chain| {
            let line = match request::parse_irq(&mut chain.reader) {
                Ok(l) => l,
                Err(e) => {
                    ctx.log.warn("malformed eventq buffer", &e);
                    return Ok(Completion::Used(request::respond_irq(
                        &mut chain.writer,
                        IrqStatus::Invalid,
                    )));
                }
            };
            if chain.writer.available_bytes() == 0 {
                ctx.log.warn(
                    "eventq buffer without a writable byte",
                    &io::Error::other(format!("line {line}")),
                );
                return Ok(Completion::Used(0));
            }
            if line >= lines.ngpio() || lines.line(line).is_some_and(|s| s.pending.is_some()) {
                ctx.log.warn(
                    "eventq buffer refused",
                    &io::Error::other(format!(
                        "line {line}: {}",
                        if line >= lines.ngpio() {
                            "no such line"
                        } else {
                            "a second buffer for the line"
                        }
                    )),
                );
            }
            match lines.unmask(line, || chain.hold()) {
                Some(status) => Ok(Completion::Used(request::respond_irq(
                    &mut chain.writer,
                    status,
                ))),
                None => Ok(Completion::Held),
            }
        })?;
        Ok(())
    }

    fn collect(&mut self, line: u16) {
        if let Err(e) = self.lines.collect(line) {
            // Stop watching a descriptor that cannot be read, or it would
            // wake the worker forever.
            log::error!("line {line}: cannot read edge events, interrupts on it stop: {e}");
            self.unwatch(line);
        }
    }
}

impl VirtioDevice for GpioDevice {
    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_GPIO_F_IRQ
    }

    fn acked_features(&self, features: u64) {
        self.lock()
            .lines
            .set_irq_negotiated(features & (1 << VIRTIO_GPIO_F_IRQ) != 0);
    }

    fn config(&self) -> Vec<u8> {
        self.config.clone()
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        let mut st = self.lock();
        events.add(0, st.timer.as_fd(), EventSet::IN, TOKEN_TIMER)?;
        if let Some(fd) = st.lines.host().chip_event_fd() {
            events.add(0, fd, EventSet::IN, TOKEN_CHIP)?;
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
            REQUEST_QUEUE => st.serve_requests(ctx, vring)?,
            EVENT_QUEUE => st.serve_events(ctx, vring)?,
            _ => {}
        }
        st.deliver(ctx)
    }

    fn host_event(
        &self,
        ctx: &QueueContext<'_>,
        token: u16,
        _events: EventSet,
        _vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        let mut st = self.lock();
        match token {
            TOKEN_TIMER => {
                let mut buf = [0u8; 8];
                let _ = nix::unistd::read(st.timer.as_fd().as_raw_fd(), &mut buf);
                if std::mem::take(&mut st.recheck) {
                    let lines: Vec<u16> = st.lines.irq_lines().collect();
                    for line in lines {
                        st.lines.recheck(line);
                    }
                }
            }
            TOKEN_CHIP => {
                let lines = st.lines.host_mut().chip_events()?;
                for line in lines {
                    st.collect(line);
                }
            }
            t => {
                if let Some(line) = t.checked_sub(TOKEN_LINE_BASE) {
                    st.collect(line);
                }
            }
        }
        st.deliver(ctx)
    }

    fn reset(&self) {
        let mut st = self.lock();
        st.unwatch_all();
        st.lines.release_all();
        // The rings are gone: nothing to complete.
        drop(st.lines.take_done());
        st.deferred.clear();
        st.recheck = false;
    }

    type State = SavedState;

    fn save_state(&self) -> Result<SavedState, HostError> {
        let st = self.lock();
        let mut failed = None;
        let lines = st.lines.save(|h| match copy_held(h) {
            Ok(c) => Some(c),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        let lines = lines
            .into_iter()
            .map(|SavedLine { line, state }| SavedLine {
                line,
                state: lines::LineState {
                    direction: state.direction,
                    output: state.output,
                    irq: state.irq,
                    latched: state.latched,
                    pending: state.pending.flatten(),
                },
            })
            .collect();
        let deferred = st
            .deferred
            .iter()
            .map(|(h, s)| Ok((copy_held(h)?, *s)))
            .collect::<Result<_, postcard::Error>>()?;
        Ok(SavedState { lines, deferred })
    }

    fn load_state(&self, state: SavedState) -> Result<(), HostError> {
        let mut st = self.lock();
        st.unwatch_all();
        st.lines.load(state.lines)?;
        let lines: Vec<u16> = st.lines.irq_lines().collect();
        for line in lines {
            st.watch(line)?;
        }
        st.deferred = state.deferred;
        st.recheck = true;
        // Look as soon as the worker runs; the queues may not yet.
        st.arm(Duration::from_millis(1))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::SimChip;
    use crate::virtio::{Direction, IrqType};
    use vhost_device_common::testing::{TestQueue, BUFFERS};

    fn device(n: usize) -> (SimChip, GpioDevice) {
        let chip = SimChip::new((0..n).map(|i| format!("g{i}")).collect());
        let dev = GpioDevice::new(Box::new(chip.attach().unwrap())).unwrap();
        dev.acked_features(1 << VIRTIO_GPIO_F_IRQ);
        (chip, dev)
    }

    /// Post a request with a `resp_len`-byte response buffer on `q`.
    fn post(q: &mut TestQueue, at: u64, kind: u16, line: u16, value: u32, resp_len: u32) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&line.to_le_bytes());
        bytes.extend_from_slice(&value.to_le_bytes());
        q.write_bytes(at, &bytes).unwrap();
        q.add(&[(at, 8, false), (at + 0x100, resp_len, true)])
            .unwrap()
    }

    #[test]
    fn config_space_has_ngpio_and_names_size() {
        let (_c, dev) = device(3);
        // "g0\0g1\0g2\0" is 9 bytes.
        assert_eq!(dev.config(), vec![3, 0, 0, 0, 9, 0, 0, 0]);
    }

    #[test]
    fn requests_are_answered_with_exactly_two_bytes() {
        let (_c, dev) = device(4);
        let mut q = TestQueue::new(16, true).unwrap();
        post(
            &mut q,
            BUFFERS,
            RequestType::SetDirection as u16,
            1,
            Direction::Out as u32,
            64,
        );
        post(
            &mut q,
            BUFFERS + 0x1000,
            RequestType::GetDirection as u16,
            1,
            0,
            64,
        );
        post(&mut q, BUFFERS + 0x2000, 99, 1, 0, 64);

        dev.process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
            .unwrap();

        let lens: Vec<u32> = q.used().unwrap().iter().map(|u| u.1).collect();
        assert_eq!(lens, vec![2, 2, 2]);
        assert_eq!(
            q.read(BUFFERS + 0x1100, 2).unwrap(),
            vec![0, Direction::Out as u8]
        );
        assert_eq!(q.read(BUFFERS + 0x2100, 2).unwrap(), vec![1, 0]);
    }

    #[test]
    fn names_answer_is_one_plus_names_size() {
        let (_c, dev) = device(3);
        let mut q = TestQueue::new(16, false).unwrap();
        post(&mut q, BUFFERS, RequestType::GetLineNames as u16, 0, 0, 10);

        dev.process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
            .unwrap();

        assert_eq!(q.used().unwrap()[0].1, 10);
        assert_eq!(q.read(BUFFERS + 0x100, 10).unwrap(), b"\0g0\0g1\0g2\0");
    }

    #[test]
    fn short_request_gets_err_and_the_queue_goes_on() {
        let (_c, dev) = device(4);
        let mut q = TestQueue::new(16, false).unwrap();
        q.add(&[(BUFFERS, 4, false), (BUFFERS + 0x100, 2, true)])
            .unwrap();
        post(
            &mut q,
            BUFFERS + 0x1000,
            RequestType::GetDirection as u16,
            0,
            0,
            2,
        );

        dev.process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
            .unwrap();

        assert_eq!(q.used().unwrap().len(), 2);
        assert_eq!(q.read(BUFFERS + 0x100, 2).unwrap(), vec![1, 0]);
        assert_eq!(q.read(BUFFERS + 0x1100, 2).unwrap(), vec![0, 0]);
    }

    #[test]
    fn eventq_buffer_for_a_disabled_line_is_answered_invalid_at_once() {
        let (_c, dev) = device(4);
        let mut q = TestQueue::new(16, false).unwrap();
        q.write_bytes(BUFFERS, &[1, 0]).unwrap();
        q.fill(BUFFERS + 0x100, 1, 0xFF).unwrap();
        q.add(&[(BUFFERS, 2, false), (BUFFERS + 0x100, 1, true)])
            .unwrap();

        dev.process_queue(&q.context(), EVENT_QUEUE, &q.vring)
            .unwrap();

        assert_eq!(q.used().unwrap()[0].1, 1);
        assert_eq!(
            q.read(BUFFERS + 0x100, 1).unwrap(),
            vec![IrqStatus::Invalid as u8]
        );
    }

    #[test]
    fn eventq_buffer_for_an_armed_line_is_held() {
        let (_c, dev) = device(4);
        dev.lock()
            .lines
            .handle(request::Request {
                kind: RequestType::SetIrqType as u16,
                line: 2,
                value: IrqType::EdgeRising as u32,
            })
            .unwrap();
        let mut q = TestQueue::new(16, true).unwrap();
        q.write_bytes(BUFFERS, &[2, 0]).unwrap();
        q.add(&[(BUFFERS, 2, false), (BUFFERS + 0x100, 1, true)])
            .unwrap();

        dev.process_queue(&q.context(), EVENT_QUEUE, &q.vring)
            .unwrap();

        assert!(
            q.used().unwrap().is_empty(),
            "an armed line's buffer was answered"
        );
    }

    #[test]
    fn reset_releases_every_line() {
        let (c, dev) = device(4);
        let mut q = TestQueue::new(16, false).unwrap();
        post(
            &mut q,
            BUFFERS,
            RequestType::SetDirection as u16,
            3,
            Direction::Out as u32,
            2,
        );
        dev.process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
            .unwrap();
        assert!(c.command("get 3").contains("dir=out"));

        dev.reset();

        assert!(c.command("get 3").contains("dir=none"));
    }
}
