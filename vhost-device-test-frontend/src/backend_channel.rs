// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The front end's side of the back-end communication channel
//! (vhost-user.rst "Back-end communication", `VHOST_USER_SET_BACKEND_REQ_FD`).
//!
//! Once the channel is open a back end may send requests at any time, and
//! with `VHOST_USER_PROTOCOL_F_REPLY_ACK` it waits for the answer, often on
//! its worker thread. So [`BackendChannel`] serves the channel on a thread of
//! its own for the life of the session, answering every request:
//!
//! - `CONFIG_CHANGE_MSG`: counted and acknowledged;
//! - `SHMEM_MAP` / `SHMEM_UNMAP`: carried out on the session's
//!   [`SharedMemory`] (a real `mmap` of the back end's file), refused with a
//!   non-zero answer when the range is invalid or overlaps (see [`crate::shmem`]);
//! - `SHARED_OBJECT_ADD` / `REMOVE` / `LOOKUP`: kept in a UUID table; adding a
//!   UUID twice, or removing or looking up an unknown one, is refused.
//!   (vhost 0.18's front-end handler can answer only with a number, so a
//!   lookup cannot hand back a dma-buf descriptor.)
//! - anything else (`VRING_ERR`, `IOTLB_MSG`, …): refused.
//!
//! Every request the handler understood is recorded in arrival order, so a
//! test waits for it with [`BackendChannel::wait_request`] instead of sleeping.
//! Dropping the channel stops and joins the thread.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags, VhostUserSharedMsg};
use vhost::vhost_user::{FrontendReqHandler, HandlerResult, VhostUserFrontendReqHandler};
use vmm_sys_util::eventfd::EventFd;

use crate::shmem::{SharedMemory, ShmemError, ShmemMapping};
use crate::Error;

/// A request a back end sent on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendRequest {
    /// `VHOST_USER_BACKEND_CONFIG_CHANGE_MSG`: the config space changed.
    ConfigChange,
    /// `VHOST_USER_BACKEND_SHMEM_MAP`.
    ShmemMap {
        /// Region id.
        shmid: u8,
        /// Offset in the region.
        shm_offset: u64,
        /// Offset in the file sent with the request.
        fd_offset: u64,
        /// Length.
        len: u64,
        /// Read-write (else read-only).
        writable: bool,
    },
    /// `VHOST_USER_BACKEND_SHMEM_UNMAP`.
    ShmemUnmap {
        /// Region id.
        shmid: u8,
        /// Offset in the region.
        shm_offset: u64,
        /// Length.
        len: u64,
    },
    /// `VHOST_USER_BACKEND_SHARED_OBJECT_ADD`.
    SharedObjectAdd {
        /// The object's UUID.
        uuid: [u8; 16],
    },
    /// `VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE`.
    SharedObjectRemove {
        /// The object's UUID.
        uuid: [u8; 16],
    },
    /// `VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP`.
    SharedObjectLookup {
        /// The object's UUID.
        uuid: [u8; 16],
    },
}

#[derive(Debug, Default)]
struct State {
    received: VecDeque<BackendRequest>,
    config_changes: usize,
    refused: usize,
    shmem: SharedMemory,
    objects: BTreeSet<[u8; 16]>,
}

/// What the serving thread and the session share.
#[derive(Debug, Default)]
struct Served {
    state: Mutex<State>,
    arrived: Condvar,
}

impl Served {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Record `request`, answer with `result`, wake waiters.
    fn record(
        &self,
        mut state: MutexGuard<'_, State>,
        request: BackendRequest,
        result: Result<(), i32>,
    ) -> HandlerResult<u64> {
        state.received.push_back(request);
        if result.is_err() {
            state.refused += 1;
        }
        drop(state);
        self.arrived.notify_all();
        result
            .map(|()| 0)
            .map_err(std::io::Error::from_raw_os_error)
    }

    fn shmem_refused(what: &str, e: &ShmemError) -> i32 {
        log::warn!("refusing {what}: {e}");
        e.errno()
    }
}

impl VhostUserFrontendReqHandler for Served {
    fn handle_config_change(&self) -> HandlerResult<u64> {
        let mut state = self.lock();
        state.config_changes += 1;
        self.record(state, BackendRequest::ConfigChange, Ok(()))
    }

    fn shared_object_add(&self, msg: &VhostUserSharedMsg) -> HandlerResult<u64> {
        let uuid = *msg.uuid.as_bytes();
        let mut state = self.lock();
        let result = if state.objects.insert(uuid) {
            Ok(())
        } else {
            Err(libc::EEXIST)
        };
        self.record(state, BackendRequest::SharedObjectAdd { uuid }, result)
    }

    fn shared_object_remove(&self, msg: &VhostUserSharedMsg) -> HandlerResult<u64> {
        let uuid = *msg.uuid.as_bytes();
        let mut state = self.lock();
        let result = if state.objects.remove(&uuid) {
            Ok(())
        } else {
            Err(libc::ENOENT)
        };
        self.record(state, BackendRequest::SharedObjectRemove { uuid }, result)
    }

    fn shared_object_lookup(
        &self,
        msg: &VhostUserSharedMsg,
        _fd: &dyn AsRawFd,
    ) -> HandlerResult<u64> {
        let uuid = *msg.uuid.as_bytes();
        let state = self.lock();
        let result = if state.objects.contains(&uuid) {
            Ok(())
        } else {
            Err(libc::ENOENT)
        };
        self.record(state, BackendRequest::SharedObjectLookup { uuid }, result)
    }

    fn shmem_map(&self, req: &VhostUserMMap, fd: &dyn AsRawFd) -> HandlerResult<u64> {
        let (shmid, shm_offset, fd_offset, len, flags) =
            (req.shmid, req.shm_offset, req.fd_offset, req.len, req.flags);
        let writable = flags & VhostUserMMapFlags::WRITABLE.bits() != 0;
        let request = BackendRequest::ShmemMap {
            shmid,
            shm_offset,
            fd_offset,
            len,
            writable,
        };
        // SAFETY: `fd` is the descriptor that came with the request; the
        // handler owns it for the duration of this call, longer than the borrow,
        // which only lives until it is duplicated here.
        let file = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) }
            .try_clone_to_owned()
            .map(File::from);
        let mut state = self.lock();
        let result = match file {
            Ok(file) => state
                .shmem
                .map(shmid, shm_offset, fd_offset, len, writable, file)
                .map_err(|e| Self::shmem_refused("SHMEM_MAP", &e)),
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EBADF)),
        };
        self.record(state, request, result)
    }

    fn shmem_unmap(&self, req: &VhostUserMMap) -> HandlerResult<u64> {
        let (shmid, shm_offset, len) = (req.shmid, req.shm_offset, req.len);
        let mut state = self.lock();
        let result = state
            .shmem
            .unmap(shmid, shm_offset, len)
            .map_err(|e| Self::shmem_refused("SHMEM_UNMAP", &e));
        self.record(
            state,
            BackendRequest::ShmemUnmap {
                shmid,
                shm_offset,
                len,
            },
            result,
        )
    }
}

/// The serving thread of one session's back-end channel.
pub struct BackendChannel {
    served: Arc<Served>,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BackendChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendChannel")
            .field("state", &*self.served.lock())
            .finish()
    }
}

fn is_disconnect(e: &vhost::vhost_user::Error) -> bool {
    use vhost::vhost_user::Error as E;
    matches!(
        e,
        E::Disconnected | E::PartialMessage | E::SocketBroken(_) | E::SocketError(_)
    )
}

fn serve(mut handler: FrontendReqHandler<Served>, served: &Served, stop: &EventFd) {
    loop {
        let ready = {
            // SAFETY: `handler` owns the channel socket and outlives this borrow,
            // which ends with the block.
            let channel = unsafe { BorrowedFd::borrow_raw(handler.as_raw_fd()) };
            // SAFETY: as above; `stop` is owned by the caller for the whole loop.
            let stop_fd = unsafe { BorrowedFd::borrow_raw(stop.as_raw_fd()) };
            let mut fds = [
                PollFd::new(channel, PollFlags::POLLIN),
                PollFd::new(stop_fd, PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false)),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("backend channel: poll: {e}");
                    return;
                }
            }
        };
        if ready.1 {
            return;
        }
        if !ready.0 {
            continue;
        }
        match handler.handle_request() {
            // A refusal was answered and recorded by `Served`.
            Ok(_) | Err(vhost::vhost_user::Error::ReqHandlerError(_)) => {}
            Err(e) if is_disconnect(&e) => {
                log::debug!("backend channel closed: {e}");
                return;
            }
            Err(e) => {
                // Already answered with an error when the back end asked for a reply.
                log::warn!("backend channel: refused a request: {e}");
                served.lock().refused += 1;
            }
        }
    }
}

impl BackendChannel {
    /// Start serving a new channel with shared memory regions of `shmem_sizes`
    /// (by shmid; 0 = no such region). `reply_ack`: whether
    /// `VHOST_USER_PROTOCOL_F_REPLY_ACK` was negotiated (answers are sent only
    /// then, and only when the back end asks). Returns the channel and the
    /// back end's end of it, to send with `VHOST_USER_SET_BACKEND_REQ_FD`.
    pub fn start(shmem_sizes: &[u64], reply_ack: bool) -> Result<(Self, UnixStream), Error> {
        let served = Arc::new(Served {
            state: Mutex::new(State {
                shmem: SharedMemory::new(shmem_sizes),
                ..State::default()
            }),
            arrived: Condvar::new(),
        });
        let mut handler = FrontendReqHandler::new(served.clone())
            .map_err(|e| Error::Vhost(vhost::Error::VhostUserProtocol(e)))?;
        handler.set_reply_ack_flag(reply_ack);
        // SAFETY: the handler owns its end of the pair and lives until it is
        // moved into the thread below, after the duplicate is made.
        let peer = unsafe { BorrowedFd::borrow_raw(handler.get_tx_raw_fd()) }
            .try_clone_to_owned()
            .map(UnixStream::from)
            .map_err(Error::BackendChannel)?;
        let stop =
            Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(Error::EventFd)?);
        let thread = {
            let (served, stop) = (served.clone(), stop.clone());
            std::thread::Builder::new()
                .name("backend-channel".into())
                .spawn(move || serve(handler, &served, &stop))
                .map_err(Error::BackendChannel)?
        };
        Ok((
            Self {
                served,
                stop,
                thread: Some(thread),
            },
            peer,
        ))
    }

    /// Wait up to `timeout` for the next request not yet returned, oldest first.
    pub fn wait_request(&self, timeout: Duration) -> Result<BackendRequest, Error> {
        let deadline = Instant::now() + timeout;
        let mut state = self.served.lock();
        loop {
            if let Some(request) = state.received.pop_front() {
                return Ok(request);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            state = match self.served.arrived.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// `CONFIG_CHANGE_MSG`s received so far.
    pub fn config_changes(&self) -> usize {
        self.served.lock().config_changes
    }

    /// Requests answered with an error so far.
    pub fn refused(&self) -> usize {
        self.served.lock().refused
    }

    /// Sizes of the shared memory regions, by shmid.
    pub fn shmem_sizes(&self) -> Vec<(u8, u64)> {
        let state = self.served.lock();
        state.shmem.sizes().iter().map(|(&k, &v)| (k, v)).collect()
    }

    /// The current mappings of shared memory region `shmid`.
    pub fn shmem_mappings(&self, shmid: u8) -> Vec<ShmemMapping> {
        self.served.lock().shmem.mappings(shmid)
    }

    /// Read `len` bytes at `offset` of shared memory region `shmid`, through
    /// the back end's mapping.
    pub fn shmem_read(&self, shmid: u8, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        self.served
            .lock()
            .shmem
            .read(shmid, offset, len)
            .map_err(Error::Shmem)
    }

    /// Write `data` at `offset` of shared memory region `shmid`, through the
    /// back end's (writable) mapping.
    pub fn shmem_write(&self, shmid: u8, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.served
            .lock()
            .shmem
            .write(shmid, offset, data)
            .map_err(Error::Shmem)
    }

    /// The UUIDs in the shared-object table.
    pub fn shared_objects(&self) -> Vec<[u8; 16]> {
        self.served.lock().objects.iter().copied().collect()
    }
}

impl Drop for BackendChannel {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            log::error!("cannot stop the backend channel thread: {e}");
            return;
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the backend channel thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::io::{Read, Write};
    use vhost::vhost_user::Backend;

    const WAIT: Duration = Duration::from_secs(10);
    const PAGE: u64 = 4096;

    /// A channel with one 64 KiB shared memory region, and a fake back end on
    /// its other end that asks for a reply to every request.
    fn channel() -> (BackendChannel, Backend) {
        let (channel, peer) = BackendChannel::start(&[16 * PAGE], true).unwrap();
        let backend = Backend::from_stream(peer);
        backend.set_reply_ack_flag(true);
        backend.set_shmem_flag(true);
        backend.set_shared_object_flag(true);
        (channel, backend)
    }

    fn memfd(pages: u64, byte: u8) -> File {
        let mut f =
            File::from(memfd_create(c"backend-file", MemFdCreateFlag::MFD_CLOEXEC).unwrap());
        f.write_all(&vec![byte; usize::try_from(pages * PAGE).unwrap()])
            .unwrap();
        f
    }

    fn map(shm_offset: u64, fd_offset: u64, len: u64, writable: bool) -> VhostUserMMap {
        VhostUserMMap {
            shm_offset,
            fd_offset,
            len,
            flags: if writable {
                VhostUserMMapFlags::WRITABLE.bits()
            } else {
                0
            },
            ..VhostUserMMap::default()
        }
    }

    fn uuid(n: u8) -> VhostUserSharedMsg {
        VhostUserSharedMsg {
            uuid: uuid::Uuid::from_bytes([n; 16]),
        }
    }

    /// Send a raw request (vhost 0.18's `Backend` cannot send every message
    /// type) with NEED_REPLY and return the answer's u64.
    fn raw_request(stream: &mut UnixStream, request: u32, payload: &[u8]) -> (u32, u32, u64) {
        let mut msg = Vec::new();
        msg.extend_from_slice(&request.to_le_bytes());
        msg.extend_from_slice(&(0x1u32 | 0x8).to_le_bytes()); // version 1, NEED_REPLY
        msg.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        msg.extend_from_slice(payload);
        stream.write_all(&msg).unwrap();
        let mut reply = [0u8; 20];
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.read_exact(&mut reply).unwrap();
        let word = |at: usize| u32::from_le_bytes(reply[at..at + 4].try_into().unwrap());
        let value = u64::from_le_bytes(reply[12..20].try_into().unwrap());
        (word(0), word(4), value)
    }

    #[test]
    fn config_change_is_acked_counted_and_recorded() {
        let (channel, mut peer) = BackendChannel::start(&[], true).unwrap();

        let (request, flags, value) = raw_request(&mut peer, 2, &[]);

        assert_eq!(request, 2, "reply to CONFIG_CHANGE_MSG");
        assert_eq!(flags & 0x4, 0x4, "REPLY flag");
        assert_eq!(value, 0, "success");
        assert_eq!(
            channel.wait_request(WAIT).unwrap(),
            BackendRequest::ConfigChange
        );
        assert_eq!(channel.config_changes(), 1);
    }

    #[test]
    fn unsupported_request_is_answered_with_an_error() {
        let (channel, mut peer) = BackendChannel::start(&[], true).unwrap();

        // VHOST_USER_BACKEND_VRING_ERR with a vring state payload.
        let (_, _, value) = raw_request(&mut peer, 5, &[0u8; 8]);

        assert_ne!(value, 0);
        // The channel still works afterwards.
        assert_eq!(raw_request(&mut peer, 2, &[]).2, 0);
        assert_eq!(
            channel.wait_request(WAIT).unwrap(),
            BackendRequest::ConfigChange
        );
        assert_eq!(channel.refused(), 1);
    }

    #[test]
    fn shmem_map_maps_the_file_and_unmap_removes_it() {
        let (channel, backend) = channel();
        let file = memfd(4, 0xA5);

        backend
            .shmem_map(&map(2 * PAGE, PAGE, 2 * PAGE, true), &file)
            .expect("map acked");

        assert_eq!(
            channel.wait_request(WAIT).unwrap(),
            BackendRequest::ShmemMap {
                shmid: 0,
                shm_offset: 2 * PAGE,
                fd_offset: PAGE,
                len: 2 * PAGE,
                writable: true
            }
        );
        assert_eq!(channel.shmem_read(0, 3 * PAGE, 4).unwrap(), vec![0xA5; 4]);
        channel.shmem_write(0, 2 * PAGE, b"seen").unwrap();
        let mut back = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, PAGE).unwrap();
        assert_eq!(&back, b"seen", "front end writes reach the back end's file");

        backend
            .shmem_unmap(&map(2 * PAGE, 0, 2 * PAGE, false))
            .expect("unmap acked");

        assert!(matches!(
            channel.wait_request(WAIT).unwrap(),
            BackendRequest::ShmemUnmap { .. }
        ));
        assert!(channel.shmem_mappings(0).is_empty());
        assert!(channel.shmem_read(0, 3 * PAGE, 4).is_err());
    }

    #[test]
    fn shmem_requests_outside_the_region_overlapping_or_partial_are_refused() {
        let (channel, backend) = channel();
        let file = memfd(4, 1);
        backend
            .shmem_map(&map(0, 0, 2 * PAGE, false), &file)
            .unwrap();

        let refused = [
            backend
                .shmem_map(&map(PAGE, 0, PAGE, false), &file)
                .is_err(),
            backend
                .shmem_map(&map(15 * PAGE, 0, 2 * PAGE, false), &file)
                .is_err(),
            backend.shmem_unmap(&map(0, 0, PAGE, false)).is_err(),
            backend.shmem_unmap(&map(8 * PAGE, 0, PAGE, false)).is_err(),
        ];

        assert_eq!(
            refused, [true; 4],
            "overlap, past the region, partial, unmapped"
        );
        assert_eq!(channel.refused(), 4);
        assert_eq!(channel.shmem_mappings(0).len(), 1);
        for _ in 0..5 {
            channel.wait_request(WAIT).unwrap();
        }
    }

    #[test]
    fn shared_objects_are_added_looked_up_and_removed_once() {
        let (channel, backend) = channel();
        let fd = memfd(1, 0);

        let results = [
            backend.shared_object_add(&uuid(7)).is_ok(),
            backend.shared_object_add(&uuid(7)).is_ok(),
            backend.shared_object_lookup(&uuid(7), &fd).is_ok(),
            backend.shared_object_lookup(&uuid(8), &fd).is_ok(),
        ];
        let table = channel.shared_objects();
        let removed = [
            backend.shared_object_remove(&uuid(7)).is_ok(),
            backend.shared_object_remove(&uuid(7)).is_ok(),
        ];

        assert_eq!(results, [true, false, true, false]);
        assert_eq!(table, vec![[7u8; 16]]);
        assert_eq!(removed, [true, false]);
        assert_eq!(
            channel.wait_request(WAIT).unwrap(),
            BackendRequest::SharedObjectAdd { uuid: [7; 16] }
        );
        assert!(channel.shared_objects().is_empty());
    }

    #[test]
    fn requests_without_reply_ack_are_recorded_and_not_answered() {
        let (channel, peer) = BackendChannel::start(&[], false).unwrap();
        let backend = Backend::from_stream(peer);
        backend.set_shared_object_flag(true);

        backend.shared_object_add(&uuid(1)).unwrap();

        assert_eq!(
            channel.wait_request(WAIT).unwrap(),
            BackendRequest::SharedObjectAdd { uuid: [1; 16] }
        );
    }

    #[test]
    fn dropping_the_channel_stops_its_thread_while_the_back_end_stays_connected() {
        let (channel, peer) = BackendChannel::start(&[], true).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();

        std::thread::spawn(move || {
            drop(channel);
            let _ = done_tx.send(());
        });

        done_rx
            .recv_timeout(WAIT)
            .expect("drop returns once the thread has ended");
        drop(peer);
    }

    #[test]
    fn nothing_arrived_is_a_timeout() {
        let (channel, _peer) = BackendChannel::start(&[], true).unwrap();

        let result = channel.wait_request(Duration::from_millis(1));

        assert!(matches!(result, Err(Error::Timeout)));
    }
}
