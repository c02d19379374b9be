// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Sibling VMs: guests served by one process that may connect to each other.
//!
//! Each VM has a [`Mailbox`]. A packet a guest addresses to another VM's CID is
//! forwarded unchanged into that VM's mailbox when the two share a group, and
//! the mailbox's eventfd wakes the other VM's worker, which delivers it on its
//! rx queue. Credit is end to end between the two guests, so the mailbox only
//! holds what is in flight; it is bounded all the same, and a packet that
//! does not fit is answered with RST.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::virtio::PacketHeader;

/// Most bytes waiting in one VM's mailbox.
pub const MAX_MAILBOX_BYTES: usize = 8 << 20;

/// Packets on their way to one VM, and their size in bytes (kept together
/// under one lock, so clearing never races a post).
#[derive(Debug, Default)]
struct Queue {
    packets: VecDeque<(PacketHeader, Vec<u8>)>,
    bytes: usize,
}

/// Packets on their way to one VM.
#[derive(Debug)]
pub struct Mailbox {
    /// The VM's CID.
    pub cid: u64,
    /// Its groups.
    pub groups: Vec<String>,
    queue: Mutex<Queue>,
    /// Signalled when a packet arrives.
    pub wake: EventFd,
}

fn size_of_packet(payload: &[u8]) -> usize {
    payload.len() + std::mem::size_of::<PacketHeader>()
}

impl Mailbox {
    /// An empty mailbox.
    pub fn new(cid: u64, groups: Vec<String>) -> std::io::Result<Self> {
        Ok(Self {
            cid,
            groups,
            queue: Mutex::new(Queue::default()),
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
        })
    }

    /// Queue a packet; `false` when the mailbox is full.
    pub fn post(&self, hdr: PacketHeader, payload: Vec<u8>) -> bool {
        let size = size_of_packet(&payload);
        {
            let mut q = vhost_device_common::lock(&self.queue);
            if q.bytes + size > MAX_MAILBOX_BYTES {
                return false;
            }
            q.bytes += size;
            q.packets.push_back((hdr, payload));
        }
        let _ = self.wake.write(1);
        true
    }

    /// Take the oldest packet.
    pub fn take(&self) -> Option<(PacketHeader, Vec<u8>)> {
        let mut q = vhost_device_common::lock(&self.queue);
        let item = q.packets.pop_front();
        if let Some((_, p)) = &item {
            q.bytes -= size_of_packet(p);
        }
        item
    }

    /// Drop everything (the VM's driver was reset).
    pub fn clear(&self) {
        *vhost_device_common::lock(&self.queue) = Queue::default();
        let _ = self.wake.read();
    }
}

/// Every VM of the process.
#[derive(Debug, Default)]
pub struct Registry {
    vms: HashMap<u64, std::sync::Arc<Mailbox>>,
}

impl Registry {
    /// Add a VM.
    pub fn add(&mut self, mailbox: std::sync::Arc<Mailbox>) {
        self.vms.insert(mailbox.cid, mailbox);
    }

    /// The mailbox of `cid`, if that VM exists, is not `from`, and shares a
    /// group with it.
    pub fn route(&self, from: &Mailbox, cid: u64) -> Option<&Mailbox> {
        let to = self.vms.get(&cid)?;
        if to.cid == from.cid || !to.groups.iter().any(|g| from.groups.contains(g)) {
            return None;
        }
        Some(to)
    }

    /// The mailbox of `cid`.
    pub fn get(&self, cid: u64) -> Option<std::sync::Arc<Mailbox>> {
        self.vms.get(&cid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.add(Arc::new(Mailbox::new(3, vec!["a".into()]).unwrap()));
        r.add(Arc::new(
            Mailbox::new(4, vec!["a".into(), "b".into()]).unwrap(),
        ));
        r.add(Arc::new(Mailbox::new(5, vec!["b".into()]).unwrap()));
        r
    }

    #[test]
    fn vms_in_a_common_group_are_routed() {
        let r = registry();
        let three = r.get(3).unwrap();
        assert_eq!(r.route(&three, 4).map(|m| m.cid), Some(4));
    }

    #[test]
    fn vms_in_different_groups_are_isolated() {
        let r = registry();
        let three = r.get(3).unwrap();
        assert!(r.route(&three, 5).is_none());
        assert!(
            r.route(&three, 3).is_none(),
            "a VM does not route to itself"
        );
        assert!(r.route(&three, 99).is_none());
    }

    #[test]
    fn clearing_while_a_sibling_posts_keeps_the_byte_count_exact() {
        let m = Arc::new(Mailbox::new(3, vec![]).unwrap());
        let poster = {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    m.post(PacketHeader::default(), vec![0; 100]);
                    m.take();
                }
            })
        };
        for _ in 0..200_000 {
            m.clear();
        }
        poster.join().expect("no overflow in the byte count");
        m.clear();

        assert!(m.post(PacketHeader::default(), vec![0; MAX_MAILBOX_BYTES - 44]));
    }

    #[test]
    fn full_mailbox_refuses_packets() {
        let m = Mailbox::new(3, vec![]).unwrap();
        assert!(m.post(PacketHeader::default(), vec![0; MAX_MAILBOX_BYTES - 100]));
        assert!(!m.post(PacketHeader::default(), vec![0; 200]));
        m.take();
        assert!(m.post(PacketHeader::default(), vec![0; 200]));
    }
}
