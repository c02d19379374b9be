// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The I2C adapter device: one request queue, transfers on adapter threads.
//!
//! Request flow (virtio 1.3, 5.16.6; grouping in [`crate::request`]):
//!
//! 1. A kick drains the queue: every chain is parsed and **held**, in order,
//!    into `pending` (at most [`MAX_PENDING`]; the rest stays on the ring
//!    until there is room).
//! 2. With no transfer in flight, the next group is taken from `pending` and
//!    planned. If some of it can run, that part goes to its adapter's thread
//!    as one transfer ([`AdapterWorker`]) and the group is *in flight*;
//!    otherwise every request of the group is answered ERR at once.
//! 3. The adapter thread posts the outcome to the device's [`Mailbox`]; its
//!    eventfd fires in the worker epoll ([`TOKEN_DONE`]), and every request
//!    of the group is completed with its own status
//!    ([`QueueContext::complete`]) — in order, except that the first failed
//!    request goes last (`answer_order`: Linux frees a transfer at its
//!    first failure) — then the next group starts.
//!
//! So requests run strictly in order, one transfer per device at a time, and
//! the vring worker never waits for a bus. New chains are drained only on a
//! kick (and after the ring was left full): the Linux driver queues a whole
//! group before kicking. A group whose last request seen so far still has
//! FAIL_NEXT waits for the rest — for the next kick, or at most
//! [`GROUP_WAIT`]: a drain that came while the driver was still queuing (the
//! first transfer of a fresh connection met one in the i2c-stub test) must
//! not split a transfer, but a driver that could not queue all of it (its
//! ring was full: Linux then kicks once and waits) must get what it queued
//! run.
//!
//! A completion that meets a stopped queue (`GET_VRING_BASE`) is kept and
//! retried every [`RESTART_POLL`] by a timer ([`TOKEN_RETRY`]) until the queue
//! runs again or the state is saved. The migration state holds the
//! unpublished answers, the requests not yet run, whether a failure carries
//! over, and the memory of the device's simulated adapter; a transfer in
//! flight is waited for (at most [`SAVE_WAIT`]) so that no transfer runs
//! twice or is lost.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use serde::{Deserialize, Serialize};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::HostError;
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::{drain_chains, Completion, HeldChain, QueueContext, Vring};
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use crate::host::sim::SimState;
use crate::host::worker::{AdapterWorker, Job, Mailbox, Outcome};
use crate::request::{self, Reply, Request};
use crate::virtio::{
    MAX_QUEUE_SIZE, MSG_OK, NUM_QUEUES, REQUEST_QUEUE, VIRTIO_I2C_F_ZERO_LENGTH_REQUEST,
};

/// Host-event token of the mailbox eventfd (a transfer finished).
pub const TOKEN_DONE: u16 = 0;
/// Host-event token of the retry timer (answers waiting for a stopped queue,
/// or a group waiting for its last requests).
pub const TOKEN_RETRY: u16 = 1;
/// Most requests held before they run; bounds what a guest can make the
/// daemon keep (64 × 8 KiB).
pub const MAX_PENDING: usize = 64;
/// How long saving the state waits for a transfer in flight.
pub const SAVE_WAIT: Duration = Duration::from_secs(10);
/// How often answers are retried while the queue is stopped.
pub const RESTART_POLL: Duration = Duration::from_millis(50);
/// How long a group that still expects requests waits for them.
pub const GROUP_WAIT: Duration = Duration::from_millis(100);

/// Which host adapter serves each address of one device. Made once per
/// socket at startup and shared by the device of every connection to it.
#[derive(Debug, Default)]
pub struct Buses {
    routes: std::collections::BTreeMap<u8, usize>,
    workers: Vec<Arc<AdapterWorker>>,
    sim: Option<Arc<Mutex<SimState>>>,
}

impl Buses {
    /// `routes` maps each listed address to an index into `workers`; `sim`
    /// is the state of the device's simulated adapter, if it has one.
    pub fn new(
        routes: std::collections::BTreeMap<u8, usize>,
        workers: Vec<Arc<AdapterWorker>>,
        sim: Option<Arc<Mutex<SimState>>>,
    ) -> Self {
        Self {
            routes,
            workers,
            sim,
        }
    }

    /// The adapter index of `addr`, if it is listed.
    pub fn route(&self, addr: u8) -> Option<usize> {
        self.routes.get(&addr).copied()
    }

    /// The listed addresses.
    pub fn addresses(&self) -> impl Iterator<Item = u8> + '_ {
        self.routes.keys().copied()
    }
}

/// A held request not yet run.
#[derive(Debug)]
struct Pending {
    chain: HeldChain,
    req: Request,
}

/// The group being transferred.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    group: Vec<Pending>,
    run: usize,
}

struct State {
    pending: VecDeque<Pending>,
    in_flight: Option<InFlight>,
    /// Answers not yet on the used ring (the queue was stopped), in order.
    done: VecDeque<(HeldChain, Reply)>,
    /// A failed group ended with FAIL_NEXT: fail up to the next group end.
    earlier_failed: bool,
    /// Draining stopped at [`MAX_PENDING`] with chains left on the ring.
    backlog: bool,
    seq: u64,
    retry: TimerFd,
    /// A group at the end of `pending` waits for its last requests.
    partial_wait: bool,
    /// … and has waited long enough: run it as it is.
    partial_flush: bool,
}

/// The live-migration state of an I2C device.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedState {
    /// Answers not yet put on the used ring, in order.
    pub done: Vec<(HeldChain, Reply)>,
    /// Requests not yet run, in order, as parsed.
    pub pending: Vec<(HeldChain, Request)>,
    /// A failure carries over to the next requests.
    pub earlier_failed: bool,
    /// The memory of the device's simulated adapter.
    pub sim: Option<SimState>,
}

/// One virtio-i2c device (one per socket and connection).
pub struct I2cDevice {
    buses: Arc<Buses>,
    mailbox: Arc<Mailbox>,
    zero_length: AtomicBool,
    state: Mutex<State>,
}

/// A serialized copy of a held chain (the original stays with the device,
/// so that it keeps working if a migration is cancelled).
fn copy_chain(chain: &HeldChain) -> Result<HeldChain, HostError> {
    let bytes = postcard::to_stdvec(chain)?;
    Ok(postcard::from_bytes(&bytes)?)
}

impl I2cDevice {
    /// A device reaching the clients of `buses`.
    pub fn new(buses: Arc<Buses>) -> io::Result<Self> {
        let retry = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Self {
            buses,
            mailbox: Arc::new(Mailbox::new()?),
            zero_length: AtomicBool::new(false),
            state: Mutex::new(State {
                pending: VecDeque::new(),
                in_flight: None,
                done: VecDeque::new(),
                earlier_failed: false,
                backlog: false,
                seq: 0,
                retry,
                partial_wait: false,
                partial_flush: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        vhost_device_common::lock(&self.state)
    }

    /// Publish waiting answers, take new chains (if `drain`), start the next
    /// transfer, publish the answers of groups that failed without running.
    fn serve(
        &self,
        ctx: &QueueContext<'_>,
        vring: Option<&Vring>,
        drain: bool,
    ) -> Result<(), HostError> {
        let mut st = self.lock();
        let mut drain = drain;
        loop {
            if !self.publish(ctx, &mut st)? {
                return Ok(());
            }
            if drain {
                if let Some(vring) = vring {
                    self.drain(ctx, vring, &mut st)?;
                }
            }
            self.pump(ctx, &mut st)?;
            if !self.publish(ctx, &mut st)? {
                return Ok(());
            }
            // Chains left on a full ring get no kick: take them now, unless
            // a transfer runs (its completion comes back here).
            if !(st.backlog && st.in_flight.is_none() && vring.is_some()) {
                return Ok(());
            }
            drain = true;
        }
    }

    /// Hold every available chain (up to [`MAX_PENDING`]).
    fn drain(
        &self,
        ctx: &QueueContext<'_>,
        vring: &Vring,
        st: &mut State,
    ) -> Result<(), HostError> {
        let zero_length = self.zero_length.load(Ordering::Acquire);
        let pending = &mut st.pending;
        let stats = drain_chains(ctx, REQUEST_QUEUE, vring, |chain| {
            if pending.len() >= MAX_PENDING {
                return Ok(Completion::Stop);
            }
            let req = request::parse(&mut chain.reader, &chain.writer, zero_length);
            pending.push_back(Pending {
                chain: chain.hold(),
                req,
            });
            Ok(Completion::Held)
        })?;
        st.backlog = stats.stopped;
        Ok(())
    }

    /// Start the next group, unless one is in flight; answer groups that
    /// cannot run at all.
    fn pump(&self, ctx: &QueueContext<'_>, st: &mut State) -> Result<(), HostError> {
        while st.in_flight.is_none() && !st.pending.is_empty() {
            let n = request::group_len(st.pending.iter().map(|p| &p.req));
            let partial = n == st.pending.len()
                && n <= crate::host::MAX_MSGS
                && st.pending.back().is_some_and(|p| p.req.fail_next);
            if partial && !st.partial_flush {
                if !st.partial_wait {
                    st.partial_wait = true;
                    st.retry.set(
                        Expiration::OneShot(TimeSpec::from_duration(GROUP_WAIT)),
                        TimerSetTimeFlags::empty(),
                    )?;
                }
                return Ok(());
            }
            st.partial_wait = false;
            st.partial_flush = false;
            let group: Vec<Pending> = st.pending.drain(..n).collect();
            let reqs: Vec<&Request> = group.iter().map(|p| &p.req).collect();
            let plan = request::plan(&reqs, st.earlier_failed, |a| self.buses.route(a));
            match &plan.refusal {
                // A failure carried over is the guest's expectation, and an
                // address outside the list is what a NACK is on a real bus
                // (i2cdetect probes every address): not worth a warning.
                None | Some(request::Refusal::EarlierFailed) => {}
                Some(request::Refusal::NotListed(a)) => {
                    log::debug!("request to {a:#04x}, which is not in this device's list: ERR");
                }
                Some(refusal) => {
                    ctx.log.warn("request not run", refusal);
                }
            }
            let worker = plan.adapter.and_then(|i| self.buses.workers.get(i));
            match worker {
                Some(worker) if plan.run > 0 => {
                    st.seq += 1;
                    worker.submit(Job {
                        seq: st.seq,
                        msgs: plan.msgs,
                        reply: self.mailbox.clone(),
                    })?;
                    st.in_flight = Some(InFlight {
                        seq: st.seq,
                        group,
                        run: plan.run,
                    });
                }
                _ => Self::finish(st, group, 0, None),
            }
        }
        Ok(())
    }

    /// Turn a group's outcome into answers: the requests that succeeded in
    /// order, then those after the first failed one, and the first failed
    /// one last (see [`answer_order`]).
    fn finish(st: &mut State, group: Vec<Pending>, run: usize, outcome: Option<Outcome>) {
        let (completed, msgs) = match outcome {
            Some(Outcome { msgs, result, .. }) => match result {
                Ok(n) => (n.min(run), msgs),
                Err(e) => {
                    log::debug!(
                        "transfer failed: {}",
                        vhost_device_common::error::report(&e)
                    );
                    (0, msgs)
                }
            },
            None => (0, Vec::new()),
        };
        let len = group.len();
        st.earlier_failed = completed < len && group.last().is_some_and(|p| p.req.fail_next);
        let replies = request::replies(len, completed, &msgs);
        let mut answers: Vec<(HeldChain, Reply)> = group
            .into_iter()
            .zip(replies)
            .map(|(p, reply)| (p.chain, reply))
            .collect();
        answer_order(&mut answers);
        st.done.extend(answers);
    }

    /// Put waiting answers on the used ring; false if the queue is stopped
    /// (the retry timer is armed then).
    fn publish(&self, ctx: &QueueContext<'_>, st: &mut State) -> Result<bool, HostError> {
        while let Some((chain, reply)) = st.done.pop_front() {
            let back = ctx.complete(chain, |_, writer| Ok(request::respond(writer, &reply)))?;
            if let Some(chain) = back {
                st.done.push_front((chain, reply));
                st.retry.set(
                    Expiration::OneShot(TimeSpec::from_duration(RESTART_POLL)),
                    TimerSetTimeFlags::empty(),
                )?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Take the outcome of the transfer in flight, if it is there.
    fn collect(&self, st: &mut State, outcome: Outcome) {
        match st.in_flight.take() {
            Some(f) if f.seq == outcome.seq => Self::finish(st, f.group, f.run, Some(outcome)),
            other => {
                log::debug!("discarding the outcome of an earlier transfer");
                st.in_flight = other;
            }
        }
    }
}

/// Put the first failed answer of a group after the rest of the group.
///
/// Linux's `i2c-virtio` (`virtio_i2c_complete_reqs`) waits for the requests
/// of a transfer in order, stops at the first one that failed, and frees the
/// memory of all of them, also of those it did not wait for. A request of
/// the transfer that is used after that one makes its interrupt handler
/// `complete()` freed memory: a use-after-free that oopsed a guest when a
/// loaded host delayed this thread between two answers of a failed group.
/// So every later request of the group goes on the used ring before the
/// first failed one. A device "is not generally required to use buffers in
/// the same order in which they have been made available" (virtio 1.3, 2.6;
/// `VIRTIO_F_IN_ORDER` is never offered here); virtio-i2c asks for the
/// requests to be *processed* in order (5.16.6), which they still are.
fn answer_order(answers: &mut [(HeldChain, Reply)]) {
    if let Some(first_failed) = answers.iter().position(|(_, r)| r.status != MSG_OK) {
        answers[first_failed..].rotate_left(1);
    }
}

impl VirtioDevice for I2cDevice {
    type State = SavedState;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_I2C_F_ZERO_LENGTH_REQUEST
    }

    fn acked_features(&self, features: u64) {
        let accepted = features & (1 << VIRTIO_I2C_F_ZERO_LENGTH_REQUEST) != 0;
        if !accepted {
            log::warn!(
                "the driver did not accept VIRTIO_I2C_F_ZERO_LENGTH_REQUEST: every request will fail"
            );
        }
        self.zero_length.store(accepted, Ordering::Release);
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        events.add(0, self.mailbox.fd(), EventSet::IN, TOKEN_DONE)?;
        events.add(0, self.lock().retry.as_fd(), EventSet::IN, TOKEN_RETRY)?;
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
        self.serve(ctx, Some(vring), true)
    }

    fn host_event(
        &self,
        ctx: &QueueContext<'_>,
        token: u16,
        _events: EventSet,
        vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        let drain = {
            let mut st = self.lock();
            match token {
                TOKEN_DONE => {
                    self.mailbox.clear();
                    if let Some(outcome) = self.mailbox.take() {
                        self.collect(&mut st, outcome);
                    }
                }
                TOKEN_RETRY => {
                    st.partial_flush = st.partial_wait;
                    let mut buf = [0u8; 8];
                    // Non-blocking: EAGAIN means it was already consumed.
                    let _ = nix::unistd::read(st.retry.as_fd().as_raw_fd(), &mut buf);
                }
                _ => {}
            }
            st.backlog
        };
        self.serve(ctx, vrings.get(REQUEST_QUEUE).copied().flatten(), drain)
    }

    fn reset(&self) {
        let mut st = self.lock();
        st.pending.clear();
        st.done.clear();
        st.earlier_failed = false;
        st.backlog = false;
        st.partial_wait = false;
        st.partial_flush = false;
        // A transfer in flight still runs; keep its number so that no new
        // one starts before it ends (one per device), but drop its chains.
        if let Some(f) = st.in_flight.as_mut() {
            f.group.clear();
            f.run = 0;
        }
    }

    fn save_state(&self) -> Result<SavedState, HostError> {
        let mut st = self.lock();
        if let Some(seq) = st.in_flight.as_ref().map(|f| f.seq) {
            loop {
                let Some(outcome) = self.mailbox.wait(SAVE_WAIT) else {
                    return Err(format!(
                        "a transfer is still running after {} s; the state cannot be saved",
                        SAVE_WAIT.as_secs()
                    )
                    .into());
                };
                let ours = outcome.seq == seq;
                self.collect(&mut st, outcome);
                if ours {
                    break;
                }
            }
        }
        Ok(SavedState {
            done: st
                .done
                .iter()
                .map(|(c, r)| Ok((copy_chain(c)?, r.clone())))
                .collect::<Result<_, HostError>>()?,
            pending: st
                .pending
                .iter()
                .map(|p| Ok((copy_chain(&p.chain)?, p.req.clone())))
                .collect::<Result<_, HostError>>()?,
            earlier_failed: st.earlier_failed,
            sim: self
                .buses
                .sim
                .as_ref()
                .map(|s| vhost_device_common::lock(s).clone()),
        })
    }

    fn load_state(&self, state: SavedState) -> Result<(), HostError> {
        let mut st = self.lock();
        st.done = state.done.into();
        st.pending = state
            .pending
            .into_iter()
            .map(|(chain, req)| Pending { chain, req })
            .collect();
        st.earlier_failed = state.earlier_failed;
        match (&self.buses.sim, state.sim) {
            (Some(ours), Some(saved)) => {
                let mut ours = vhost_device_common::lock(ours);
                for (addr, chip) in saved.chips {
                    match ours.chips.get_mut(&addr) {
                        Some(slot) if slot.kind == chip.kind => *slot = chip,
                        _ => log::info!(
                            "the saved simulated client {addr:#04x} is not in this device's list; dropped"
                        ),
                    }
                }
            }
            (None, Some(_)) => {
                log::info!("this device has no simulated adapter; its saved memory is dropped")
            }
            _ => {}
        }
        drop(st);
        // Answer and run them as soon as the queue runs here.
        self.mailbox.kick();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::{Call, MockBus, Step};
    use crate::host::sim::SimBus;
    use crate::host::{func, Adapter, Msg};
    use crate::virtio::{
        OutHdr, MSG_ERR, MSG_OK, VIRTIO_I2C_FLAGS_FAIL_NEXT, VIRTIO_I2C_FLAGS_M_RD,
    };
    use std::collections::BTreeMap;
    use vhost_device_common::testing::{TestQueue, BUFFERS};
    use vhost_device_common::vm_memory::ByteValued;

    /// A device whose addresses 0x50 and 0x51 are on `bus`.
    fn device(bus: MockBus) -> I2cDevice {
        let worker = Arc::new(AdapterWorker::new(Adapter::new(Box::new(bus)).unwrap()));
        let routes = BTreeMap::from([(0x50, 0), (0x51, 0)]);
        let dev = I2cDevice::new(Arc::new(Buses::new(routes, vec![worker], None))).unwrap();
        dev.acked_features(1);
        dev
    }

    /// Requests as the Linux driver queues them.
    struct Driver {
        q: TestQueue,
        next: u64,
        statuses: Vec<u64>,
    }

    impl Driver {
        fn new() -> Self {
            Self {
                q: TestQueue::new(256, true).unwrap(),
                next: BUFFERS,
                statuses: Vec::new(),
            }
        }

        fn alloc(&mut self, len: u64) -> u64 {
            let at = self.next;
            self.next += len.max(1).next_multiple_of(0x100);
            at
        }

        /// Queue one request; returns the address of its buffer.
        fn add(&mut self, addr: u8, read: bool, data: &[u8], len: u32, fail_next: bool) -> u64 {
            let mut flags = if fail_next {
                VIRTIO_I2C_FLAGS_FAIL_NEXT
            } else {
                0
            };
            if read {
                flags |= VIRTIO_I2C_FLAGS_M_RD;
            }
            let hdr = OutHdr {
                addr: (u16::from(addr) << 1).into(),
                padding: 0.into(),
                flags: flags.into(),
            };
            let h = self.alloc(8);
            self.q.write_bytes(h, hdr.as_slice()).unwrap();
            let buf = self.alloc(u64::from(len));
            let status = self.alloc(1);
            self.q.fill(status, 1, 0xee).unwrap();
            let mut bufs = vec![(h, 8, false)];
            if len > 0 {
                if !read {
                    self.q.write_bytes(buf, data).unwrap();
                }
                bufs.push((buf, len, read));
            }
            bufs.push((status, 1, true));
            self.q.add(&bufs).unwrap();
            self.statuses.push(status);
            buf
        }

        fn write(&mut self, addr: u8, data: &[u8], fail_next: bool) -> u64 {
            self.add(
                addr,
                false,
                data,
                u32::try_from(data.len()).unwrap(),
                fail_next,
            )
        }

        fn read(&mut self, addr: u8, len: u32, fail_next: bool) -> u64 {
            self.add(addr, true, &[], len, fail_next)
        }

        fn status(&self, i: usize) -> u8 {
            self.q.read(self.statuses[i], 1).unwrap()[0]
        }

        fn statuses(&self) -> Vec<u8> {
            (0..self.statuses.len()).map(|i| self.status(i)).collect()
        }
    }

    /// Kick, then serve completions until `n` requests are used.
    fn run(dev: &I2cDevice, d: &Driver, n: usize) {
        let vrings = [Some(&d.q.vring)];
        let ctx = QueueContext {
            vrings: &vrings,
            ..d.q.context()
        };
        dev.process_queue(&ctx, REQUEST_QUEUE, &d.q.vring).unwrap();
        for _ in 0..200 {
            if d.q.used().unwrap().len() >= n {
                return;
            }
            // A transfer's outcome, or else the timer of a waiting group.
            if let Some(outcome) = dev.mailbox.wait(GROUP_WAIT) {
                dev.mailbox.post(outcome);
                dev.host_event(&ctx, TOKEN_DONE, EventSet::IN, &vrings)
                    .unwrap();
            } else {
                dev.host_event(&ctx, TOKEN_RETRY, EventSet::IN, &vrings)
                    .unwrap();
            }
        }
        panic!(
            "only {} of {n} requests completed",
            d.q.used().unwrap().len()
        );
    }

    fn rdwr_calls(bus: &MockBus) -> Vec<Vec<Msg>> {
        bus.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Rdwr(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn group_runs_as_one_rdwr_and_every_request_gets_its_status() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x50, &[0x10], true);
        let buf = d.read(0x50, 4, false);

        run(&dev, &d, 2);

        assert_eq!(
            rdwr_calls(&bus),
            vec![vec![Msg::write(0x50, &[0x10]), Msg::read(0x50, 4)]]
        );
        assert_eq!(d.statuses(), vec![MSG_OK, MSG_OK]);
        assert_eq!(d.q.read(buf, 4).unwrap(), vec![0xa1; 4]);
        let lens: Vec<u32> = d.q.used().unwrap().iter().map(|u| u.1).collect();
        assert_eq!(lens, vec![1, 5]);
    }

    #[test]
    fn partial_completion_fails_the_failed_request_and_the_rest_of_its_group_only() {
        let bus = MockBus::new(func::I2C).then(Step::Complete(1));
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x50, &[1], true);
        d.write(0x50, &[2], true);
        d.read(0x50, 1, false);
        d.write(0x51, &[3], false);

        run(&dev, &d, 4);

        assert_eq!(d.statuses(), vec![MSG_OK, MSG_ERR, MSG_ERR, MSG_OK]);
        assert_eq!(rdwr_calls(&bus).len(), 2, "the next group still runs");
    }

    #[test]
    fn host_error_fails_the_whole_group_and_the_device_goes_on() {
        let bus = MockBus::new(func::I2C).then(Step::Fail(libc::ENXIO));
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x50, &[1], true);
        d.read(0x50, 1, false);
        d.read(0x51, 1, false);

        run(&dev, &d, 3);

        assert_eq!(d.statuses(), vec![MSG_ERR, MSG_ERR, MSG_OK]);
    }

    #[test]
    fn unlisted_address_runs_the_requests_before_it_and_fails_the_rest() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x50, &[1], true);
        d.write(0x33, &[2], true);
        d.write(0x50, &[3], false);

        run(&dev, &d, 3);

        assert_eq!(rdwr_calls(&bus), vec![vec![Msg::write(0x50, &[1])]]);
        assert_eq!(d.statuses(), vec![MSG_OK, MSG_ERR, MSG_ERR]);
    }

    #[test]
    fn lone_unlisted_address_never_reaches_the_adapter() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x33, &[], false);

        run(&dev, &d, 1);

        assert!(bus.calls().is_empty());
        assert_eq!(d.statuses(), vec![MSG_ERR]);
    }

    #[test]
    fn failure_of_a_cut_short_group_carries_to_the_end_of_the_next() {
        let bus = MockBus::new(func::I2C).then(Step::Fail(libc::EIO));
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x50, &[1], true);
        run(&dev, &d, 1);
        d.read(0x50, 1, true);
        d.read(0x50, 1, false);
        d.read(0x50, 1, false);

        run(&dev, &d, 4);

        assert_eq!(d.statuses(), vec![MSG_ERR, MSG_ERR, MSG_ERR, MSG_OK]);
        assert_eq!(rdwr_calls(&bus).len(), 2);
    }

    #[test]
    fn direction_mismatch_is_err_and_the_queue_keeps_serving() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        // A write request (no M_RD) whose buffer is device-writable.
        let h = d.alloc(8);
        let hdr = OutHdr {
            addr: (0x50u16 << 1).into(),
            padding: 0.into(),
            flags: 0.into(),
        };
        d.q.write_bytes(h, hdr.as_slice()).unwrap();
        let b = d.alloc(4);
        let s = d.alloc(1);
        d.q.add(&[(h, 8, false), (b, 4, true), (s, 1, true)])
            .unwrap();
        d.statuses.push(s);
        d.read(0x50, 1, false);

        run(&dev, &d, 2);

        assert_eq!(d.statuses(), vec![MSG_ERR, MSG_OK]);
    }

    #[test]
    fn smbus_only_adapter_gets_the_smbus_command() {
        let bus = MockBus::new(func::SMBUS_EMUL);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x50, &[0x10], true);
        let buf = d.read(0x50, 2, false);

        run(&dev, &d, 2);

        assert_eq!(
            bus.calls(),
            vec![Call::Smbus(0x50, crate::host::SmbusOp::ReadWordData(0x10))]
        );
        assert_eq!(d.statuses(), vec![MSG_OK, MSG_OK]);
        assert_eq!(d.q.read(buf, 2).unwrap(), vec![0x34, 0x12]);
    }

    #[test]
    fn smbus_only_adapter_fails_a_pattern_it_cannot_express() {
        let bus = MockBus::new(func::SMBUS_EMUL);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.read(0x50, 3, false);

        run(&dev, &d, 1);

        assert!(bus.calls().is_empty());
        assert_eq!(d.statuses(), vec![MSG_ERR]);
    }

    #[test]
    fn driver_without_zero_length_feature_gets_err_for_everything() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        dev.acked_features(0);
        let mut d = Driver::new();
        d.read(0x50, 1, false);

        run(&dev, &d, 1);

        assert!(bus.calls().is_empty());
        assert_eq!(d.statuses(), vec![MSG_ERR]);
    }

    #[test]
    fn requests_beyond_the_pending_limit_wait_on_the_ring_and_are_served_later() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        let n = MAX_PENDING + 5;
        for _ in 0..n {
            d.read(0x50, 1, false);
        }

        run(&dev, &d, n);

        assert!(d.statuses().iter().all(|&s| s == MSG_OK));
        assert_eq!(rdwr_calls(&bus).len(), n);
    }

    /// Call the device as a worker does: a kick, or a host event.
    fn event(dev: &I2cDevice, d: &Driver, token: Option<u16>) {
        let vrings = [Some(&d.q.vring)];
        let ctx = QueueContext {
            vrings: &vrings,
            ..d.q.context()
        };
        match token {
            None => dev.process_queue(&ctx, REQUEST_QUEUE, &d.q.vring),
            Some(t) => dev.host_event(&ctx, t, EventSet::IN, &vrings),
        }
        .unwrap();
    }

    #[test]
    fn group_seen_half_queued_waits_for_the_kick_that_brings_the_rest() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x50, &[0x10], true);
        event(&dev, &d, None);
        assert!(bus.calls().is_empty(), "half a group was run");
        d.read(0x50, 2, false);

        run(&dev, &d, 2);

        assert_eq!(
            rdwr_calls(&bus),
            vec![vec![Msg::write(0x50, &[0x10]), Msg::read(0x50, 2)]]
        );
    }

    #[test]
    fn group_the_driver_could_not_finish_runs_when_its_wait_ends() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        d.write(0x50, &[0x10], true);
        d.read(0x50, 1, true);
        event(&dev, &d, None);
        assert!(dev.lock().retry.get().unwrap().is_some(), "no wait armed");

        event(&dev, &d, Some(TOKEN_RETRY));
        run(&dev, &d, 2);

        assert_eq!(rdwr_calls(&bus).len(), 1);
        assert_eq!(d.statuses(), vec![MSG_OK, MSG_OK]);
    }

    #[test]
    fn full_ring_of_requests_that_all_fail_at_once_is_answered_without_a_kick() {
        let bus = MockBus::new(func::I2C);
        let dev = device(bus.clone());
        let mut d = Driver::new();
        let n = MAX_PENDING + 30;
        for _ in 0..n {
            d.write(0x33, &[], false);
        }
        let vrings = [Some(&d.q.vring)];
        let ctx = QueueContext {
            vrings: &vrings,
            ..d.q.context()
        };

        dev.process_queue(&ctx, REQUEST_QUEUE, &d.q.vring).unwrap();

        assert_eq!(d.q.used().unwrap().len(), n);
        assert!(d.statuses().iter().all(|&s| s == MSG_ERR));
        assert!(bus.calls().is_empty());
    }

    #[test]
    fn answered_and_waiting_requests_move_with_the_state_and_none_runs_twice() {
        let bus_a = MockBus::new(func::I2C);
        let a = device(bus_a.clone());
        let mut d = Driver::new();
        d.write(0x50, &[0x01], false);
        let buf = d.read(0x50, 2, false);
        // The first transfer starts; the second request waits behind it.
        event(&a, &d, None);

        let saved = a.save_state().unwrap();
        let bytes = postcard::to_stdvec(&saved).unwrap();
        assert_eq!((saved.done.len(), saved.pending.len()), (1, 1));
        let bus_b = MockBus::new(func::I2C);
        let b = device(bus_b.clone());
        b.load_state(postcard::from_bytes(&bytes).unwrap()).unwrap();

        // The destination serves the same ring (guest memory moved with the guest).
        run(&b, &d, 2);

        assert_eq!(rdwr_calls(&bus_a), vec![vec![Msg::write(0x50, &[0x01])]]);
        assert_eq!(rdwr_calls(&bus_b), vec![vec![Msg::read(0x50, 2)]]);
        assert_eq!(d.statuses(), vec![MSG_OK, MSG_OK]);
        assert_eq!(d.q.read(buf, 2).unwrap(), vec![0xa0, 0xa0]);
    }

    #[test]
    fn sim_memory_moves_with_the_state() {
        let state = Arc::new(Mutex::new(SimState::new(&[0x50])));
        let bus = SimBus::new(state.clone(), Duration::ZERO, "sim".into());
        let worker = Arc::new(AdapterWorker::new(Adapter::new(Box::new(bus)).unwrap()));
        let buses = Arc::new(Buses::new(
            BTreeMap::from([(0x50, 0)]),
            vec![worker],
            Some(state),
        ));
        let a = I2cDevice::new(buses).unwrap();
        a.acked_features(1);
        let mut d = Driver::new();
        d.write(0x50, &[0x00, 0xab], false);
        run(&a, &d, 1);

        let saved = a.save_state().unwrap();
        let bytes = postcard::to_stdvec(&saved).unwrap();

        let other = Arc::new(Mutex::new(SimState::new(&[0x50])));
        let bus = SimBus::new(other.clone(), Duration::ZERO, "sim".into());
        let worker = Arc::new(AdapterWorker::new(Adapter::new(Box::new(bus)).unwrap()));
        let b = I2cDevice::new(Arc::new(Buses::new(
            BTreeMap::from([(0x50, 0)]),
            vec![worker],
            Some(other.clone()),
        )))
        .unwrap();
        b.load_state(postcard::from_bytes(&bytes).unwrap()).unwrap();

        assert_eq!(vhost_device_common::lock(&other).chips[&0x50].mem[0], 0xab);
    }
}
