// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The vsock device: the three queues, the host listeners and every
//! connection's host socket, all served by one worker thread that never
//! blocks.
//!
//! One concern per file:
//!
//! - [`conn`]: one connection, its state machine (virtio 1.3, 5.10.6.5) and
//!   credit, and its host socket's writes;
//! - [`table`]: the connection table and its limits (slots, ports, work
//!   lists, timers), every list bounded by the slots;
//! - [`tx`]: guest packets from the `tx` queue, each dispatched once to its
//!   connection (or a sibling VM, or answered with RST);
//! - [`rx`]: filling the driver's `rx` buffers: RSTs and control packets
//!   first, then sibling packets, then host data (stream and seqpacket);
//! - [`host_events`]: the host side in the worker's epoll: listeners, host
//!   sockets, the connect line of host programs, the timer;
//! - [`siblings`]: VMs of the same process reaching each other.
//!
//! This file: the device the runtime drives, `Muxer::settle` (after any
//! change to a connection, everything that follows from it: its host
//! socket's writes, the end of its close, its control packets and data for
//! the guest, its epoll events, its timer), and the event queue.
//!
//! A guest packet goes `tx` → [`conn::Conn`] → host socket; host data goes
//! host socket → [`host_events`] (readable) → [`rx`] → guest buffer.
//!
//! The `event` queue carries `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` (5.10.6.7)
//! to a new driver, so a guest that outlived a daemon or QEMU restart drops
//! its stale connections; the driver's other event buffers are held until
//! there is something to report (QEMU's `vhost-user-vsock` keeps the event
//! queue and sets up only `rx` and `tx`; a queue that is not set up is never
//! touched).

pub mod conn;
pub mod host_events;
pub mod rx;
pub mod siblings;
pub mod table;
pub mod tx;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use serde::{Deserialize, Serialize};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::{GuestErrorLog, HostError};
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::{
    drain_chains, Completion, HeldChain, QueueContext, Vring, Writer,
};
use vhost_device_common::vhost::vhost_user::VhostUserProtocolFeatures;
use vhost_device_common::vm_memory::ByteValued;
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use crate::args::Config as Args;
use crate::host::{self, UdsListener};
use crate::request;
use crate::virtio::{
    Config, Event, Op, PacketHeader, EVENT_QUEUE, EVENT_TRANSPORT_RESET, F_SEQPACKET, NUM_QUEUES,
    RX_QUEUE, TX_QUEUE,
};
use conn::{State, Timeout};
use siblings::{Mailbox, Registry};
use table::Table;
pub use table::{connection_limit, MAX_CONNECTIONS};

/// Most connection-less RSTs waiting for rx buffers.
pub const MAX_PENDING_RST: usize = 1024;
/// Queue size offered.
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Longest seqpacket message each way: a host message passed to the guest
/// whole (longer ones are truncated, and logged), and the most credit a
/// seqpacket connection gives the guest, so that each of its messages fits the
/// host socket's send buffer (also capped by `net.core.wmem_max`).
pub const MAX_SEQPACKET_MESSAGE: usize = 256 * 1024;
const TOKEN_LISTENER: u16 = 0;
const TOKEN_MAILBOX: u16 = 1;
const TOKEN_TIMER: u16 = 2;
/// Forwarding listeners take tokens from here, connections after them.
const FIRST_FORWARD_TOKEN: u16 = 3;
/// Size of a packet header.
const HDR: usize = std::mem::size_of::<PacketHeader>();

/// A host `AF_VSOCK` listener forwarded into the guest.
#[derive(Debug)]
pub struct ForwardListener {
    /// The listening socket (non-blocking).
    pub fd: OwnedFd,
    /// Its port, also the guest port connections go to.
    pub port: u32,
}

/// The host listeners of one VM, bound once at start and shared by every
/// device (front-end connection) of that VM.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// Host programs connect here (`--uds-path`).
    pub uds: Arc<UdsListener>,
    /// `--forward-listen` ports.
    pub forward: Arc<Vec<ForwardListener>>,
}

/// The device's options, for one VM.
#[derive(Debug)]
struct Settings {
    guest_cid: u64,
    uds: PathBuf,
    buf_alloc: u32,
    forward_cid: Option<u32>,
    forward_peers: Option<Vec<u32>>,
    connect_timeout: Duration,
    close_timeout: Duration,
}

/// Everything of one device, behind one lock.
struct Muxer {
    cfg: Settings,
    table: Table,
    /// Connection-less RSTs for the guest (bounded by [`MAX_PENDING_RST`]).
    rst: VecDeque<PacketHeader>,
    events: Option<HostEvents>,
    /// The wake-ups of the connections' timed states.
    timer: TimerFd,
    /// What the timer is armed for.
    armed: Option<Instant>,
    /// A `TRANSPORT_RESET` is due.
    reset_pending: bool,
    /// Event buffers the driver posted, held until there is an event.
    event_buffers: VecDeque<HeldChain>,
    /// Header-only rx buffers: good for control packets only, held until
    /// there is one.
    header_only_rx: VecDeque<HeldChain>,
    seqpacket: bool,
    /// Payload in transit between guest memory and a host socket.
    scratch: Vec<u8>,
    mailbox: Arc<Mailbox>,
    registry: Arc<Registry>,
    /// A sibling's packet being delivered in rx-buffer-sized pieces: header,
    /// payload, bytes already delivered.
    sibling: Option<(PacketHeader, Vec<u8>, usize)>,
    listeners: Listeners,
    /// The first connection token (after the forwarding listeners).
    conn_base: u16,
    /// See [`host::accept_or_refuse`].
    reserve: Option<std::fs::File>,
    /// Listener tokens out of the epoll until a connection ends.
    paused: Vec<u16>,
    /// Rate-limited warnings about host-side refusals.
    host_log: GuestErrorLog,
}

impl Muxer {
    /// Queue a connection-less RST for the guest. A guest that floods bad
    /// packets without posting rx buffers cannot grow the queue without bound:
    /// past [`MAX_PENDING_RST`] further RSTs are dropped (the guest's own
    /// timeouts cover them).
    fn queue_rst(&mut self, h: PacketHeader) {
        if self.rst.len() < MAX_PENDING_RST {
            self.rst.push_back(h);
        }
    }

    /// The RST that tells the guest the connection in `slot` is gone.
    fn rst_of(&self, slot: usize) -> Option<PacketHeader> {
        let c = self.table.get(slot)?;
        c.state.guest_side_open().then(|| {
            request::header(
                self.cfg.guest_cid,
                c.wire_type(),
                c.host_port,
                c.guest_port,
                Op::Rst,
                0,
                0,
                0,
                0,
            )
        })
    }

    /// Forget the connection in `slot`: its host socket is closed (the host
    /// program sees end of stream) and everything referring to it goes.
    fn remove(&mut self, slot: usize) {
        let Some(conn) = self.table.remove(slot) else {
            return;
        };
        if conn.interest.is_some() {
            if let Some(ev) = &self.events {
                let _ = ev.remove(0, conn.sock.as_fd());
            }
        }
        drop(conn);
        if !self.paused.is_empty() || self.reserve.is_none() {
            self.resume_listeners();
        }
    }

    /// End the connection in `slot`, telling the guest (RST) if it knows of
    /// it.
    fn reset(&mut self, slot: usize) {
        if let Some(h) = self.rst_of(slot) {
            self.queue_rst(h);
        }
        self.remove(slot);
    }

    /// End every connection without a word to the driver (it is going away),
    /// and send the next one a `TRANSPORT_RESET`.
    fn close_all(&mut self) {
        for slot in self.table.occupied() {
            self.remove(slot);
        }
        drop(self.table.drain());
        self.rst.clear();
        self.sibling = None;
        self.mailbox.clear();
        self.reset_pending = true;
    }

    /// After anything changed the connection in `slot`: write what waits for
    /// its host socket, finish its close, plan its packets for the guest, and
    /// set its epoll events and its timer to what its state needs now.
    fn settle(&mut self, slot: usize) {
        let (connect_timeout, close_timeout) = (self.cfg.connect_timeout, self.cfg.close_timeout);
        let Some(c) = self.table.get_mut(slot) else {
            return;
        };
        if c.has_pending_tx() {
            if let Err(e) = c.flush() {
                log::debug!("host socket of port {} failed: {e}", c.host_port);
                self.reset(slot);
                return;
            }
        }
        c.tell_host_guest_done();
        if c.close_done() {
            // Every byte the guest sent is with the host program: close the
            // host socket (end of stream) and answer the guest's close.
            self.reset(slot);
            return;
        }
        if c.state.guest_side_open() && c.credit.update_due() {
            c.push_control(Op::CreditUpdate, 0);
        }
        let control = !c.control.is_empty();
        let data = c.has_host_data() && c.wants_host_data();
        // The timer: the end of a timed state (from when it was entered),
        // or the next connect attempt.
        let timeout = c.state.timeout();
        if c.deadline.map(|(t, _)| t) != timeout {
            c.deadline = timeout.map(|t| {
                let after = match t {
                    Timeout::Connect => connect_timeout,
                    Timeout::Close => close_timeout,
                };
                (t, Instant::now() + after)
            });
        }
        let wake = match (c.deadline, c.retry_at) {
            (Some((_, d)), Some(r)) => Some(d.min(r)),
            (d, r) => d.map(|(_, d)| d).or(r),
        };
        self.table.set_wake(slot, wake);
        if control {
            self.table.mark_control(slot);
        }
        if data {
            self.table.mark_ready(slot);
        }
        if let Err(e) = self.watch(slot) {
            log::warn!("cannot watch a host socket: {e}");
            self.reset(slot);
        }
    }

    /// Register exactly the epoll events the connection in `slot` needs now.
    fn watch(&mut self, slot: usize) -> io::Result<()> {
        let tok = u16::try_from(slot + usize::from(self.conn_base))
            .map_err(|_| io::Error::other("connection slot out of range"))?;
        let (Some(events), Some(c)) = (&self.events, self.table.get_mut(slot)) else {
            return Ok(());
        };
        let mut want = EventSet::empty();
        let reading = match c.state {
            State::Handshake { .. } => true,
            _ => !c.readable && c.wants_host_data(),
        };
        if reading {
            want |= EventSet::IN;
        }
        if c.has_pending_tx() || c.state == (State::HostConnecting { retry: None }) {
            want |= EventSet::OUT;
        }
        match (c.interest, want.is_empty()) {
            (None, true) => {}
            (Some(_), true) => {
                events.remove(0, c.sock.as_fd())?;
                c.interest = None;
            }
            (None, false) => {
                events.add(0, c.sock.as_fd(), want, tok)?;
                c.interest = Some(want.bits());
            }
            (Some(bits), false) if bits != want.bits() => {
                events.modify(0, c.sock.as_fd(), want, tok)?;
                c.interest = Some(want.bits());
            }
            (Some(_), false) => {}
        }
        Ok(())
    }

    /// Arm the timer for the earliest connection wake-up (or disarm it).
    fn arm_timer(&mut self) -> Result<(), HostError> {
        let next = self.table.next_wake();
        if next == self.armed {
            return Ok(());
        }
        match next {
            Some(at) => {
                // Never zero: that would disarm the timer.
                let after = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(after)),
                    TimerSetTimeFlags::empty(),
                )?;
            }
            None => self.timer.unset()?,
        }
        self.armed = next;
        Ok(())
    }

    /// Everything that may have become possible: host data and packets into
    /// rx buffers, a `TRANSPORT_RESET` into an event buffer, the timer.
    fn service(&mut self, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        if let Some(rx) = ctx.vrings.get(RX_QUEUE).copied().flatten() {
            self.complete_header_only_rx(ctx)?;
            drain_chains(ctx, RX_QUEUE, rx, |chain| self.fill_rx(chain, ctx.log))?;
        }
        if let Some(ev) = ctx.vrings.get(EVENT_QUEUE).copied().flatten() {
            self.send_transport_reset(ctx)?;
            drain_chains(ctx, EVENT_QUEUE, ev, |chain| {
                if !self.reset_pending {
                    // Kept until there is an event to report.
                    self.event_buffers.push_back(chain.hold());
                    return Ok(Completion::Held);
                }
                let used = write_transport_reset(&mut chain.writer, ctx.log);
                self.reset_pending = used == 0;
                Ok(Completion::Used(used))
            })?;
        }
        self.arm_timer()
    }

    /// Complete held event buffers with a pending `TRANSPORT_RESET` until one
    /// takes it.
    fn send_transport_reset(&mut self, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        while self.reset_pending {
            let Some(held) = self.event_buffers.pop_front() else {
                return Ok(());
            };
            let mut used = 0;
            let back = ctx.complete(held, |_, writer| {
                used = write_transport_reset(writer, ctx.log);
                Ok(used)
            })?;
            if let Some(held) = back {
                // The event queue is stopped or served elsewhere: later.
                self.event_buffers.push_front(held);
                return Ok(());
            }
            self.reset_pending = used == 0;
        }
        Ok(())
    }
}

/// Write `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` into an event buffer; the used
/// length, 0 when the buffer cannot take it (too small or device-readable: a
/// guest error).
fn write_transport_reset(writer: &mut Writer<'_>, log: &GuestErrorLog) -> u32 {
    let e = Event {
        id: EVENT_TRANSPORT_RESET.into(),
    };
    let room = writer.available_bytes();
    if room < e.as_slice().len() {
        log.warn(
            "event buffer too small",
            &io::Error::other(format!("{room} writable bytes")),
        );
        return 0;
    }
    match std::io::Write::write_all(writer, e.as_slice()) {
        Ok(()) => u32::try_from(writer.bytes_written()).unwrap_or(0),
        Err(err) => {
            log.warn("cannot write the event buffer", &err);
            0
        }
    }
}

/// What moves with a migration: the event buffers the driver gave the device
/// (held until there is an event to report).
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedState {
    /// Held event-queue chains.
    pub event_buffers: Vec<HeldChain>,
}

/// One vsock device (fresh per front-end connection).
pub struct VsockDevice {
    muxer: Mutex<Muxer>,
}

impl VsockDevice {
    /// A device for `args`, taking host connections from `listeners`, and
    /// sibling packets from its mailbox in `registry`; at most
    /// `max_connections` at once.
    pub fn new(
        args: &Args,
        listeners: Listeners,
        registry: Arc<Registry>,
        max_connections: usize,
    ) -> Result<Self, HostError> {
        let conn_base = u16::try_from(listeners.forward.len())
            .ok()
            .and_then(|n| n.checked_add(FIRST_FORWARD_TOKEN))
            .ok_or("too many forwarding listeners")?;
        let mailbox = registry
            .get(args.guest_cid)
            .ok_or("the VM has no mailbox in the registry")?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Self {
            muxer: Mutex::new(Muxer {
                cfg: Settings {
                    guest_cid: args.guest_cid,
                    uds: args.uds_path.clone(),
                    buf_alloc: args.buffer_size,
                    forward_cid: args.forward_cid,
                    forward_peers: args.forward_peers.clone(),
                    connect_timeout: args.connect_timeout,
                    close_timeout: args.close_timeout,
                },
                table: Table::new(max_connections),
                rst: VecDeque::new(),
                events: None,
                timer,
                armed: None,
                reset_pending: true,
                event_buffers: VecDeque::new(),
                header_only_rx: VecDeque::new(),
                seqpacket: false,
                scratch: Vec::new(),
                mailbox,
                registry,
                sibling: None,
                listeners,
                conn_base,
                reserve: host::reserve_descriptor().ok(),
                paused: Vec::new(),
                host_log: GuestErrorLog::new("vhost-device-vsock host"),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Muxer> {
        vhost_device_common::lock(&self.muxer)
    }
}

impl VirtioDevice for VsockDevice {
    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        F_SEQPACKET
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::RESET_DEVICE
    }

    fn acked_features(&self, features: u64) {
        self.lock().seqpacket = features & F_SEQPACKET != 0;
    }

    fn config(&self) -> Vec<u8> {
        let cfg = Config {
            guest_cid: self.lock().cfg.guest_cid.into(),
        };
        cfg.as_slice().to_vec()
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        let mut m = self.lock();
        events.add(
            0,
            m.listeners.uds.listener.as_fd(),
            EventSet::IN,
            TOKEN_LISTENER,
        )?;
        // Packets siblings sent before this driver's transport reset are stale.
        m.mailbox.clear();
        events.add(0, m.mailbox.wake.as_fd(), EventSet::IN, TOKEN_MAILBOX)?;
        events.add(0, m.timer.as_fd(), EventSet::IN, TOKEN_TIMER)?;
        for (i, l) in m.listeners.forward.iter().enumerate() {
            let tok = u16::try_from(i)
                .ok()
                .and_then(|i| i.checked_add(FIRST_FORWARD_TOKEN));
            events.add(
                0,
                l.fd.as_fd(),
                EventSet::IN,
                tok.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?,
            )?;
        }
        m.events = Some(events);
        Ok(())
    }

    /// `GET_VRING_BASE` of `rx` or `tx`: the driver is going away (a reboot,
    /// a paused or migrating VM). Every connection ends: its host socket is
    /// closed, so host programs see end of stream; the next driver gets a
    /// `TRANSPORT_RESET`. Held event buffers stay held.
    fn stop_vring(&self, queue: usize) -> io::Result<()> {
        if queue == RX_QUEUE || queue == TX_QUEUE {
            let mut m = self.lock();
            m.close_all();
            // Header-only rx buffers belong to the stopped ring.
            m.header_only_rx.clear();
        }
        Ok(())
    }

    /// `RESET_DEVICE`: as [`Self::stop_vring`], and the held buffers are
    /// gone with the rings.
    fn reset(&self) {
        let mut m = self.lock();
        m.close_all();
        m.event_buffers.clear();
        m.header_only_rx.clear();
    }

    /// Connections are bound to host sockets and cannot move to another
    /// daemon: only the driver's event buffers the device holds are saved.
    /// The destination completes the first of them with `TRANSPORT_RESET`
    /// (as kernel vhost-vsock does after a migration), so guest sockets see
    /// their connections reset and reconnect.
    type State = SavedState;
    const STATE_VERSION: u16 = 2;

    fn save_state(&self) -> Result<SavedState, HostError> {
        let mut m = self.lock();
        Ok(SavedState {
            event_buffers: m.event_buffers.drain(..).collect(),
        })
    }

    fn load_state(&self, state: SavedState) -> Result<(), HostError> {
        let mut m = self.lock();
        m.event_buffers = state.event_buffers.into();
        m.reset_pending = true;
        Ok(())
    }

    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        let mut m = self.lock();
        if queue == TX_QUEUE {
            drain_chains(ctx, TX_QUEUE, vring, |chain| {
                m.on_tx(&mut chain.reader, ctx.log);
                Ok(Completion::Used(0))
            })?;
        }
        m.service(ctx)
    }

    fn host_event(
        &self,
        ctx: &QueueContext<'_>,
        token: u16,
        evset: EventSet,
        _vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        let mut m = self.lock();
        m.on_host_event(token, evset)?;
        m.service(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::queue::HeldHeads;
    use vhost_device_common::testing::{TestQueue, BUFFERS};

    /// A device for CID 3 with its host socket in `dir`.
    fn device(dir: &std::path::Path) -> VsockDevice {
        let args = Args {
            guest_cid: 3,
            uds_path: dir.join("v.sock"),
            buffer_size: 64 * 1024,
            socket: None,
            groups: Vec::new(),
            forward_cid: None,
            forward_listen: Vec::new(),
            forward_peers: None,
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(60),
        };
        let mut registry = Registry::default();
        registry.add(Arc::new(Mailbox::new(3, Vec::new()).unwrap()));
        let listeners = Listeners {
            uds: Arc::new(UdsListener::bind(&args.uds_path).unwrap()),
            forward: Arc::new(Vec::new()),
        };
        VsockDevice::new(&args, listeners, Arc::new(registry), 16).unwrap()
    }

    /// A context in which `q` is the event queue.
    fn event_context<'a>(
        q: &'a TestQueue,
        vrings: &'a [Option<&'a Vring>],
        held: &'a HeldHeads,
    ) -> QueueContext<'a> {
        QueueContext {
            vrings,
            held,
            ..q.context()
        }
    }

    #[test]
    fn event_buffers_after_the_reset_are_held_and_move_with_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = TestQueue::new(16, false).unwrap();
        q.fill(BUFFERS, 16, 0xff).unwrap();
        let first = q.add(&[(BUFFERS, 8, true)]).unwrap();
        let second = q.add(&[(BUFFERS + 8, 8, true)]).unwrap();
        let vrings = [None, None, Some(&q.vring)];
        let held = HeldHeads::new(NUM_QUEUES);
        let source = device(dir.path());
        source
            .process_queue(&event_context(&q, &vrings, &held), EVENT_QUEUE, &q.vring)
            .unwrap();
        assert_eq!(q.used().unwrap(), vec![(u32::from(first), 4)]);
        assert_eq!(held.count(EVENT_QUEUE), 1, "the second buffer is held");

        // Through the runtime's envelope, into a second device on the same rings.
        let blob = vhost_device_common::state::encode(
            "vsock",
            2,
            &held.snapshot(),
            &source.save_state().unwrap(),
        )
        .unwrap();
        drop(source);
        let (heads, state) =
            vhost_device_common::state::decode::<SavedState>("vsock", 2, &blob).unwrap();
        let held = HeldHeads::new(NUM_QUEUES);
        held.restore(&heads).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let destination = device(dir2.path());
        destination.load_state(state).unwrap();
        destination
            .process_queue(&event_context(&q, &vrings, &held), EVENT_QUEUE, &q.vring)
            .unwrap();

        assert_eq!(
            q.used().unwrap(),
            vec![(u32::from(first), 4), (u32::from(second), 4)]
        );
        assert_eq!(
            q.read(BUFFERS + 8, 8).unwrap(),
            [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
    }
}
