// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The entropy device: one request queue, a rate-limit timer and, for sources
//! that can run dry, a readiness watch — both in the worker's epoll.
//!
//! Request flow:
//!
//! 1. A kick drains the request queue ([`vhost_device_common::queue::drain`]);
//!    each chain is filled by [`request::fill`].
//! 2. When the quota is used up, the chain stays on the avail ring, draining
//!    stops and a one-shot timerfd is armed for the end of the window. When the
//!    source has nothing ready, the source's fd is watched (`EPOLLONESHOT`).
//! 3. When the timer or the source fires, the queue is drained again.
//!
//! A bad request (no writable bytes) is answered with used length 0 and the
//! queue goes on; a source that ends or fails is a host failure and ends the
//! daemon with a message naming the source.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::HostError;
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::{
    drain_chains, Completion, HeldChain, QueueContext, Vring, Writer,
};
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use crate::args::Config;
use crate::host::EntropySource;
use crate::request::{self, delay_until, Outcome, Quota, QuotaState};
use crate::virtio::{MAX_QUEUE_SIZE, NUM_QUEUES, REQUEST_QUEUE};

/// Host-event token of the rate-limit timer.
pub const TOKEN_TIMER: u16 = 0;
/// Host-event token of the source readiness watch.
pub const TOKEN_SOURCE: u16 = 1;

struct State {
    source: Box<dyn EntropySource>,
    quota: Option<Quota>,
    scratch: Vec<u8>,
    timer: TimerFd,
    events: Option<HostEvents>,
    source_watched: bool,
    /// Requests taken off the ring and not yet filled, oldest first.
    held: VecDeque<HeldChain>,
}

/// How often held requests are retried while the front end has the queue
/// stopped (during a migration, or a paused VM).
const RESTART_POLL: Duration = Duration::from_millis(50);

/// The live-migration state of an rng device.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedState {
    /// The rate limiter's window (see [`QuotaState`]); `None` without
    /// `--max-bytes`. A source has no state worth moving.
    pub quota: Option<QuotaState>,
    /// Requests waiting for the quota or the source, oldest first; the
    /// destination fills them.
    pub held: Vec<HeldChain>,
}

/// One virtio-rng device (one per socket and connection).
pub struct RngDevice {
    state: Mutex<State>,
}

impl RngDevice {
    /// A device for socket `index`, with a freshly opened source.
    pub fn new(config: &Config, index: u32) -> io::Result<Self> {
        Self::with_source(
            config.source.open(index)?,
            config.rate_limit.map(Quota::new),
        )
    }

    /// A device reading from `source` (tests use scripted sources).
    pub fn with_source(source: Box<dyn EntropySource>, quota: Option<Quota>) -> io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Self {
            state: Mutex::new(State {
                source,
                quota,
                scratch: Vec::new(),
                timer,
                events: None,
                source_watched: false,
                held: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        vhost_device_common::lock(&self.state)
    }

    /// Serve the request queue: held requests first, in arrival order, then
    /// new ones. A request that cannot be filled now (quota used up, source
    /// empty) is held, and so is every later one until it is filled, so
    /// requests complete in order; the timer or the source's readiness brings
    /// us back.
    fn serve(&self, ctx: &QueueContext<'_>, vring: &Vring) -> Result<(), HostError> {
        let mut guard = self.lock();
        let State {
            source,
            quota,
            scratch,
            held,
            ..
        } = &mut *guard;
        let mut fill = |writer: &mut Writer<'_>, parked: &mut Option<Outcome>| match request::fill(
            writer,
            source.as_mut(),
            quota.as_mut(),
            scratch,
            Instant::now(),
        ) {
            Ok(Outcome::Filled(n)) => Ok(Some(n)),
            Ok(other) => {
                *parked = Some(other);
                Ok(None)
            }
            Err(e) if e.is_guest_error() => {
                ctx.log.warn("bad entropy request", &e);
                Ok(Some(u32::try_from(writer.bytes_written()).unwrap_or(0)))
            }
            Err(e) => Err(HostError::from(e)),
        };
        let mut parked = None;
        let mut stopped = false;
        while let Some(chain) = held.pop_front() {
            let mut asked = false;
            let back = ctx.try_complete(chain, |_, writer| {
                asked = true;
                fill(writer, &mut parked)
            })?;
            if let Some(chain) = back {
                held.push_front(chain);
                // Not asked: the queue is stopped (migration) or not ours.
                stopped = !asked;
                break;
            }
        }
        if !stopped {
            drain_chains(ctx, REQUEST_QUEUE, vring, |chain| {
                if held.is_empty() {
                    if let Some(n) = fill(&mut chain.writer, &mut parked)? {
                        return Ok(Completion::Used(n));
                    }
                }
                held.push_back(chain.hold());
                Ok(Completion::Held)
            })?;
        }
        match parked {
            Some(Outcome::OverQuota(at)) => guard.arm_timer(at)?,
            Some(Outcome::SourceNotReady) => guard.watch_source()?,
            _ if stopped => {
                // Look again once the front end restarts the queue.
                guard.arm_timer(Instant::now() + RESTART_POLL)?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl State {
    fn arm_timer(&mut self, at: Instant) -> Result<(), HostError> {
        let delay = delay_until(at, Instant::now());
        self.timer.set(
            Expiration::OneShot(TimeSpec::from_duration(delay)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(())
    }

    fn watch_source(&mut self) -> Result<(), HostError> {
        let (Some(events), Some(fd)) = (self.events.as_ref(), self.source.ready_fd()) else {
            return Err(format!(
                "rng source {} has no data and cannot be waited for",
                self.source.name()
            )
            .into());
        };
        let set = EventSet::IN | EventSet::ONE_SHOT;
        if self.source_watched {
            events.modify(0, fd, set, TOKEN_SOURCE)?;
        } else {
            events.add(0, fd, set, TOKEN_SOURCE)?;
            self.source_watched = true;
        }
        Ok(())
    }

    fn clear_timer(&mut self) {
        let mut buf = [0u8; 8];
        // Non-blocking: EAGAIN just means it was already consumed.
        let _ = nix::unistd::read(self.timer.as_fd().as_raw_fd(), &mut buf);
    }
}

impl VirtioDevice for RngDevice {
    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    /// The rate limiter's window and the requests waiting for it.
    type State = SavedState;

    fn save_state(&self) -> Result<SavedState, HostError> {
        let st = self.lock();
        Ok(SavedState {
            quota: st.quota.as_ref().map(|q| q.save(Instant::now())),
            // Clones: the source goes on if the migration fails.
            held: st.held.iter().cloned().collect(),
        })
    }

    fn load_state(&self, state: SavedState) -> Result<(), HostError> {
        let mut st = self.lock();
        st.held = state.held.into();
        if !st.held.is_empty() {
            // Serve them as soon as the queue runs here.
            st.arm_timer(Instant::now())?;
        }
        match (st.quota.as_mut(), state.quota) {
            (Some(q), Some(saved)) => q.restore(&saved, Instant::now()),
            // A limit on one side only: this daemon's own setting wins.
            (Some(_), None) | (None, Some(_)) => {
                log::info!("rate limit differs between source and destination; using this daemon's")
            }
            (None, None) => {}
        }
        Ok(())
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        let mut st = self.lock();
        events.add(0, st.timer.as_fd(), EventSet::IN, TOKEN_TIMER)?;
        st.events = Some(events);
        st.source_watched = false;
        Ok(())
    }

    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        if queue != REQUEST_QUEUE {
            return Ok(());
        }
        self.serve(ctx, vring)
    }

    fn host_event(
        &self,
        ctx: &QueueContext<'_>,
        token: u16,
        _events: EventSet,
        vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        if token == TOKEN_TIMER {
            self.lock().clear_timer();
        }
        match vrings.get(REQUEST_QUEUE).copied().flatten() {
            Some(vring) => self.serve(ctx, vring),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::RateLimit;
    use crate::host::mock::{ScriptedSource, SimulatedSource, Step};
    use vhost_device_common::testing::{TestQueue, BUFFERS};

    fn device(source: impl EntropySource + 'static, quota: Option<Quota>) -> RngDevice {
        RngDevice::with_source(Box::new(source), quota).unwrap()
    }

    #[test]
    fn read_only_request_is_answered_empty_and_the_next_is_served() {
        let dev = device(SimulatedSource::new(1), None);
        let mut q = TestQueue::new(16, true).unwrap();
        q.add(&[(BUFFERS, 64, false)]).unwrap();
        q.add(&[(BUFFERS + 0x100, 64, true)]).unwrap();

        dev.process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
            .unwrap();

        let lens: Vec<u32> = q.used().unwrap().iter().map(|u| u.1).collect();
        assert_eq!(lens, vec![0, 64]);
    }

    #[test]
    fn source_end_is_a_host_error() {
        let dev = device(ScriptedSource::new([Step::End]), None);
        let mut q = TestQueue::new(16, false).unwrap();
        q.add(&[(BUFFERS, 64, true)]).unwrap();

        let err = dev
            .process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
            .unwrap_err();

        assert!(err.to_string().contains("ended"));
    }

    #[test]
    fn over_quota_requests_are_held_in_order_and_the_timer_is_armed() {
        let limit = RateLimit {
            max_bytes: 10,
            period: Duration::from_secs(60),
        };
        let dev = device(SimulatedSource::new(1), Some(Quota::new(limit)));
        let mut q = TestQueue::new(16, false).unwrap();
        q.add(&[(BUFFERS, 64, true)]).unwrap();
        q.add(&[(BUFFERS + 0x100, 64, true)]).unwrap();

        dev.process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
            .unwrap();

        assert_eq!(
            q.used().unwrap().iter().map(|u| u.1).collect::<Vec<_>>(),
            vec![10]
        );
        assert_eq!(q.held.count(REQUEST_QUEUE), 1, "second request not held");
        assert_eq!(dev.lock().held.len(), 1);
        let armed = dev.lock().timer.get().unwrap();
        assert!(armed.is_some(), "rate-limit timer not armed");
    }

    #[test]
    fn source_without_data_and_without_fd_is_a_host_error() {
        let dev = device(
            ScriptedSource::new([Step::Fail(io::ErrorKind::WouldBlock)]),
            None,
        );
        let mut q = TestQueue::new(16, false).unwrap();
        q.add(&[(BUFFERS, 64, true)]).unwrap();

        let err = dev
            .process_queue(&q.context(), REQUEST_QUEUE, &q.vring)
            .unwrap_err();

        assert!(err.to_string().contains("cannot be waited for"));
    }
}
