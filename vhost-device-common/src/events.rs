// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Host events in the worker epoll.
//!
//! A vring worker must never sleep or block. Whatever a device waits for on the
//! host — a timer, a socket, a GPIO line — is a file descriptor, and the device
//! puts it into its worker's epoll through [`HostEvents`]. When it fires, the
//! worker calls [`VirtioDevice::host_event`](crate::device::VirtioDevice::host_event)
//! with the device's own `token`.
//!
//! Tokens are small numbers chosen by the device; they are mapped above the ids
//! that vhost-user-backend reserves for queues and its exit event
//! (`num_queues + 1 + token`).

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use vmm_sys_util::epoll::EventSet;

/// Registers a device's host file descriptors with its worker threads' epolls.
///
/// Holds duplicates of the workers' epoll descriptors, so it stays valid for as
/// long as the device holds it, even while the workers shut down.
#[derive(Debug)]
pub struct HostEvents {
    epolls: Vec<Epoll>,
    base: u64,
}

fn flags(events: EventSet) -> EpollFlags {
    EpollFlags::from_bits_truncate(i32::from_ne_bytes(events.bits().to_ne_bytes()))
}

impl HostEvents {
    /// Build from the workers' epoll descriptors (one per worker thread, in
    /// thread order) for a device with `num_queues` queues.
    pub fn new(epoll_fds: &[RawFd], num_queues: usize) -> io::Result<Self> {
        let epolls = epoll_fds
            .iter()
            .map(|&fd| {
                // SAFETY: the caller passes descriptors of live epoll instances
                // owned by the vring workers; we only borrow them to duplicate.
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                borrowed.try_clone_to_owned().map(Epoll)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            epolls,
            base: num_queues as u64 + 1,
        })
    }

    /// The epoll data word for `token`.
    pub fn data(&self, token: u16) -> io::Result<u64> {
        let data = self.base + u64::from(token);
        // vhost-user-backend hands the data word back as a u16.
        if data > u64::from(u16::MAX) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(data)
    }

    /// The device token for an event id received by `handle_event`, if it is one.
    pub fn token_of(num_queues: usize, device_event: u16) -> Option<u16> {
        let base = u16::try_from(num_queues + 1).ok()?;
        device_event.checked_sub(base)
    }

    fn epoll(&self, thread: usize) -> io::Result<&Epoll> {
        self.epolls
            .get(thread)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// Watch `fd` for `events` on worker `thread`, reporting `token`.
    pub fn add(
        &self,
        thread: usize,
        fd: BorrowedFd<'_>,
        events: EventSet,
        token: u16,
    ) -> io::Result<()> {
        let ev = EpollEvent::new(flags(events), self.data(token)?);
        self.epoll(thread)?.add(fd, ev).map_err(io::Error::from)
    }

    /// Change the events watched on `fd`.
    pub fn modify(
        &self,
        thread: usize,
        fd: BorrowedFd<'_>,
        events: EventSet,
        token: u16,
    ) -> io::Result<()> {
        let mut ev = EpollEvent::new(flags(events), self.data(token)?);
        self.epoll(thread)?
            .modify(fd, &mut ev)
            .map_err(io::Error::from)
    }

    /// Stop watching `fd`.
    pub fn remove(&self, thread: usize, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll(thread)?.delete(fd).map_err(io::Error::from)
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.epolls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::epoll::EpollCreateFlags;
    use std::os::fd::AsRawFd;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn token_maps_above_reserved_ids() {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let events = HostEvents::new(&[ep.0.as_raw_fd()], 2).unwrap();
        let data = events.data(0).unwrap();
        assert_eq!(data, 3);
        assert_eq!(HostEvents::token_of(2, 3), Some(0));
        assert_eq!(HostEvents::token_of(2, 2), None);
    }

    #[test]
    fn registered_fd_fires_with_token() {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let events = HostEvents::new(&[ep.0.as_raw_fd()], 1).unwrap();
        let efd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        // SAFETY: efd outlives the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(efd.as_raw_fd()) };
        events.add(0, fd, EventSet::IN, 7).unwrap();
        efd.write(1).unwrap();
        let mut out = [EpollEvent::empty()];
        let n = ep.wait(&mut out, 1000u16).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            HostEvents::token_of(1, u16::try_from(out[0].data()).unwrap()),
            Some(7)
        );
    }

    #[test]
    fn unknown_thread_is_refused() {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let events = HostEvents::new(&[ep.0.as_raw_fd()], 1).unwrap();
        let efd = EventFd::new(0).unwrap();
        // SAFETY: efd outlives the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(efd.as_raw_fd()) };
        assert!(events.add(3, fd, EventSet::IN, 0).is_err());
    }
}
