// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The connection table and its limits.
//!
//! Connections live in slots (a slot is also the connection's epoll token,
//! after the device's fixed tokens). Everything that refers to connections
//! is bounded by the slot count, which [`Table::new`]'s limit caps:
//!
//! - the ports → slot map;
//! - two work lists, slots with control packets for the guest and slots with
//!   host data for it, each listing a slot at most once (whether a slot is
//!   listed is kept per slot, outside the connection, so a slot reused by a
//!   new connection is never listed twice);
//! - the timers: one wake-up time per slot (the end of a timed state, or
//!   the next connect attempt).
//!
//! Removing a connection frees all of it at once.
//!
//! The limit itself comes from the descriptors the process may open
//! ([`connection_limit`]): each connection holds one host socket.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use super::conn::Conn;

/// Most connections (established or not) per device; fewer when the
/// process may not open that many descriptors (see [`connection_limit`]).
pub const MAX_CONNECTIONS: usize = 4096;
/// Descriptors kept for the process itself (vhost-user sockets, logs, …).
const PROCESS_DESCRIPTORS: u64 = 32;
/// Descriptors kept for each VM besides its connections: its front end's
/// memory regions, queue eventfds and epoll, the listeners, timers.
const VM_DESCRIPTORS: u64 = 64;
/// How many connections each of `vms` VMs may have when the process may open
/// `nofile` descriptors: each connection holds one host socket, and what is
/// left after the process's and each VM's own descriptors is shared evenly,
/// up to [`MAX_CONNECTIONS`] (at least 1).
pub fn connection_limit(nofile: u64, vms: usize) -> usize {
    let vms = u64::try_from(vms.max(1)).unwrap_or(u64::MAX);
    let free = nofile
        .saturating_sub(PROCESS_DESCRIPTORS)
        .saturating_sub(VM_DESCRIPTORS.saturating_mul(vms));
    usize::try_from(free / vms)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
}

/// First port given to host-initiated connections.
pub const FIRST_HOST_PORT: u32 = 1 << 30;

/// Slots waiting for something, in order, each at most once.
#[derive(Debug, Default)]
struct Worklist {
    queue: VecDeque<usize>,
    listed: Vec<bool>,
}

impl Worklist {
    fn push(&mut self, slot: usize) {
        if self.listed.len() <= slot {
            self.listed.resize(slot + 1, false);
        }
        if !self.listed[slot] {
            self.listed[slot] = true;
            self.queue.push_back(slot);
        }
    }

    fn pop(&mut self) -> Option<usize> {
        let slot = self.queue.pop_front()?;
        if let Some(flag) = self.listed.get_mut(slot) {
            *flag = false;
        }
        Some(slot)
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.listed.clear();
    }

    fn len(&self) -> usize {
        self.queue.len()
    }
}

/// Every connection of one device.
#[derive(Debug)]
pub struct Table {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// (host port, guest port) → slot, for the connections the guest knows.
    by_key: HashMap<(u32, u32), usize>,
    control: Worklist,
    ready: Worklist,
    /// (when, slot), and each slot's entry.
    timers: BTreeSet<(Instant, usize)>,
    wakes: Vec<Option<Instant>>,
    max: usize,
    next_port: u32,
}

impl Table {
    /// An empty table for at most `max` connections.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            control: Worklist::default(),
            ready: Worklist::default(),
            timers: BTreeSet::new(),
            wakes: Vec::new(),
            max,
            next_port: FIRST_HOST_PORT,
        }
    }

    /// Connections in the table.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// No connections.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The limit: no connection may be added.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max
    }

    /// The most connections at once.
    pub fn limit(&self) -> usize {
        self.max
    }

    /// Add a connection; its slot, or `None` when the table is full.
    pub fn insert(&mut self, conn: Conn) -> Option<usize> {
        if self.is_full() {
            return None;
        }
        if let Some(slot) = self.free.pop() {
            self.slots[slot] = Some(conn);
            return Some(slot);
        }
        self.slots.push(Some(conn));
        self.wakes.push(None);
        Some(self.slots.len() - 1)
    }

    /// The connection in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Conn> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// The connection in `slot`.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The slot of the connection between host port and guest port `key`.
    pub fn find(&self, key: (u32, u32)) -> Option<usize> {
        self.by_key.get(&key).copied()
    }

    /// Make the connection in `slot` findable by its ports.
    pub fn bind(&mut self, slot: usize) {
        if let Some(c) = self.get(slot) {
            let key = (c.host_port, c.guest_port);
            self.by_key.insert(key, slot);
        }
    }

    /// Make the connection in `slot` no longer findable by its ports (the
    /// guest forgot it; the ports may be used again).
    pub fn unbind(&mut self, slot: usize) {
        if let Some(c) = self.get(slot) {
            let key = (c.host_port, c.guest_port);
            if self.by_key.get(&key) == Some(&slot) {
                self.by_key.remove(&key);
            }
        }
    }

    /// Take the connection out of `slot`, with everything that refers to it.
    pub fn remove(&mut self, slot: usize) -> Option<Conn> {
        self.unbind(slot);
        self.set_wake(slot, None);
        let conn = self.slots.get_mut(slot).and_then(Option::take)?;
        self.free.push(slot);
        Some(conn)
    }

    /// Take every connection out.
    pub fn drain(&mut self) -> Vec<Conn> {
        let conns = self.slots.drain(..).flatten().collect();
        self.free.clear();
        self.by_key.clear();
        self.control.clear();
        self.ready.clear();
        self.timers.clear();
        self.wakes.clear();
        conns
    }

    /// List `slot` as having control packets for the guest.
    pub fn mark_control(&mut self, slot: usize) {
        if self.get(slot).is_some() {
            self.control.push(slot);
        }
    }

    /// The next slot listed with control packets.
    pub fn pop_control(&mut self) -> Option<usize> {
        self.control.pop()
    }

    /// Whether any slot is listed with control packets.
    pub fn has_control(&self) -> bool {
        self.control.len() > 0
    }

    /// List `slot` as having host data for the guest.
    pub fn mark_ready(&mut self, slot: usize) {
        if self.get(slot).is_some() {
            self.ready.push(slot);
        }
    }

    /// The next slot listed with host data.
    pub fn pop_ready(&mut self) -> Option<usize> {
        self.ready.pop()
    }

    /// Entries of both work lists (for tests: bounded by the slots).
    pub fn listed(&self) -> usize {
        self.control.len() + self.ready.len()
    }

    /// Wake `slot` up at `at` (`None`: never).
    pub fn set_wake(&mut self, slot: usize, at: Option<Instant>) {
        let Some(entry) = self.wakes.get_mut(slot) else {
            return;
        };
        if *entry == at {
            return;
        }
        if let Some(old) = entry.take() {
            self.timers.remove(&(old, slot));
        }
        if let Some(at) = at {
            self.timers.insert((at, slot));
        }
        *entry = at;
    }

    /// The earliest wake-up time.
    pub fn next_wake(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The slots due at `now` (their wake-ups are cleared).
    pub fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        while let Some(&(at, slot)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(entry) = self.wakes.get_mut(slot) {
                *entry = None;
            }
            due.push(slot);
        }
        due
    }

    /// A host port for a new host-initiated connection to `guest_port`.
    pub fn alloc_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let p = self.next_port;
            self.next_port = self.next_port.wrapping_add(1).max(FIRST_HOST_PORT);
            if !self.by_key.contains_key(&(p, guest_port)) {
                return p;
            }
        }
    }

    /// Every occupied slot.
    pub fn occupied(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&s| self.slots[s].is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::conn::{Origin, State};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn conn(host_port: u32, guest_port: u32) -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let c = Conn::new(
            a.into(),
            State::Established,
            Origin::Guest,
            host_port,
            guest_port,
            4096,
        );
        (c, b)
    }

    #[test]
    fn connection_limit_shares_the_descriptors_left_among_the_vms() {
        assert_eq!(connection_limit(1 << 20, 1), MAX_CONNECTIONS);
        assert_eq!(connection_limit(1024, 1), 1024 - 32 - 64);
        assert_eq!(connection_limit(1024, 4), (1024 - 32 - 4 * 64) / 4);
        assert_eq!(connection_limit(64, 2), 1, "never none");
    }

    #[test]
    fn connections_beyond_the_limit_are_refused() {
        let mut t = Table::new(2);
        let (a, _pa) = conn(1, 1);
        let (b, _pb) = conn(1, 2);
        let (c, _pc) = conn(1, 3);
        assert!(t.insert(a).is_some());
        assert!(t.insert(b).is_some());
        assert!(t.insert(c).is_none());
        assert!(t.is_full());
    }

    #[test]
    fn a_reused_slot_is_listed_once() {
        let mut t = Table::new(4);
        for round in 0..1000 {
            let (c, _peer) = conn(1, round);
            let slot = t.insert(c).unwrap();
            t.bind(slot);
            t.mark_control(slot);
            t.mark_ready(slot);
            t.remove(slot);
        }
        assert_eq!(t.listed(), 2, "one slot, listed once in each list");
        assert_eq!(t.pop_control(), Some(0));
        assert_eq!(t.pop_control(), None);
    }

    #[test]
    fn removing_a_connection_frees_its_ports_and_its_timer() {
        let mut t = Table::new(4);
        let (c, _peer) = conn(5, 6);
        let slot = t.insert(c).unwrap();
        t.bind(slot);
        let at = Instant::now() + Duration::from_secs(5);
        t.set_wake(slot, Some(at));
        assert_eq!(t.find((5, 6)), Some(slot));
        assert_eq!(t.next_wake(), Some(at));

        assert!(t.remove(slot).is_some());

        assert_eq!(t.find((5, 6)), None);
        assert_eq!(t.next_wake(), None);
        assert!(t.is_empty());
    }

    #[test]
    fn due_timers_come_in_order_and_only_when_due() {
        let mut t = Table::new(4);
        let now = Instant::now();
        let (a, _pa) = conn(1, 1);
        let (b, _pb) = conn(1, 2);
        let (sa, sb) = (t.insert(a).unwrap(), t.insert(b).unwrap());
        t.set_wake(sa, Some(now + Duration::from_secs(2)));
        t.set_wake(sb, Some(now + Duration::from_secs(1)));
        t.set_wake(sa, Some(now + Duration::from_secs(3)));

        assert!(t.due(now).is_empty());
        assert_eq!(t.due(now + Duration::from_secs(2)), vec![sb]);
        assert_eq!(t.due(now + Duration::from_secs(9)), vec![sa]);
        assert_eq!(t.next_wake(), None);
    }

    #[test]
    fn an_unbound_connection_frees_its_ports_for_a_new_one() {
        let mut t = Table::new(4);
        let (old, _po) = conn(5, 6);
        let (new, _pn) = conn(5, 6);
        let s_old = t.insert(old).unwrap();
        t.bind(s_old);
        t.unbind(s_old);
        let s_new = t.insert(new).unwrap();
        t.bind(s_new);

        t.remove(s_old);

        assert_eq!(t.find((5, 6)), Some(s_new), "the new one keeps the ports");
    }

    #[test]
    fn host_ports_skip_those_in_use() {
        let mut t = Table::new(4);
        let (c, _peer) = conn(FIRST_HOST_PORT, 9);
        let slot = t.insert(c).unwrap();
        t.bind(slot);
        assert_eq!(t.alloc_port(9), FIRST_HOST_PORT + 1);
        assert_eq!(t.alloc_port(10), FIRST_HOST_PORT + 2);
    }
}
