// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Requests from the device to the front end (the vhost-user "backend
//! request" channel, `VHOST_USER_PROTOCOL_F_BACKEND_REQ`).
//!
//! A device never writes vhost-user messages itself: it asks the runtime
//! through the [`BackendChannel`] in its [`QueueContext`](crate::queue::QueueContext)
//! (or a clone of it kept by a device thread), with typed calls:
//!
//! - [`BackendChannel::config_changed`] sends `VHOST_USER_BACKEND_CONFIG_CHANGE_MSG`,
//!   after the device changed its config space (CAN BusOff, a resized disk);
//!   the front end re-reads the config and interrupts the guest.
//! - [`BackendChannel::shmem_map`] / [`BackendChannel::shmem_unmap`] send
//!   `VHOST_USER_BACKEND_SHMEM_MAP`/`UNMAP`, mapping an fd into one of the
//!   device's VIRTIO shared memory regions (declared by
//!   [`VirtioDevice::shmem_regions`](crate::device::VirtioDevice::shmem_regions)).
//! - [`BackendChannel::shared_object_add`] / `_remove` / `_lookup` use the
//!   front end's UUID table of exported objects.
//!
//! With `REPLY_ACK` negotiated each call waits for the front end's answer and
//! reports a refusal as an error. A call made when the front end opened no
//! channel (or did not negotiate the feature the message needs) fails with
//! [`BackendError::NotNegotiated`]: the device decides whether that matters.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags, VhostUserSharedMsg};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

/// Why a backend request failed.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The front end opened no backend channel, or did not negotiate the
    /// protocol feature this message needs.
    #[error("the front end did not negotiate {0}")]
    NotNegotiated(&'static str),
    /// The message could not be sent, or the front end refused it.
    #[error("backend request {request} failed")]
    Failed {
        /// Which message.
        request: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Default)]
struct Inner {
    backend: Option<Backend>,
    config: Option<crate::proxy::ConfigChangeSender>,
}

/// The device's handle on the backend-request channel of one connection.
///
/// Cheap to clone; all clones talk over the same channel, one message at a
/// time.
#[derive(Clone, Default)]
pub struct BackendChannel {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for BackendChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = crate::lock(&self.inner);
        f.debug_struct("BackendChannel")
            .field("open", &inner.backend.is_some())
            .field("config_change", &inner.config.is_some())
            .finish()
    }
}

/// A 16-byte UUID naming a shared object.
pub type Uuid = [u8; 16];

fn uuid_msg(uuid: &Uuid) -> VhostUserSharedMsg {
    VhostUserSharedMsg {
        uuid: uuid::Uuid::from_bytes(*uuid),
    }
}

impl BackendChannel {
    /// A channel with nothing connected yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The front end sent `SET_BACKEND_REQ_FD` (the runtime calls this).
    pub(crate) fn set_backend(&self, backend: Backend) {
        crate::lock(&self.inner).backend = Some(backend);
    }

    /// The runtime found the channel's socket and can send config-change
    /// messages on it.
    pub(crate) fn set_config_sender(&self, sender: crate::proxy::ConfigChangeSender) {
        crate::lock(&self.inner).config = Some(sender);
    }

    /// Whether the front end opened a backend channel.
    pub fn is_open(&self) -> bool {
        crate::lock(&self.inner).backend.is_some()
    }

    fn call(
        &self,
        request: &'static str,
        f: impl FnOnce(&Backend) -> std::io::Result<u64>,
    ) -> Result<(), BackendError> {
        let inner = crate::lock(&self.inner);
        let backend = inner
            .backend
            .as_ref()
            .ok_or(BackendError::NotNegotiated("BACKEND_REQ"))?;
        f(backend)
            .map(|_| ())
            .map_err(|source| BackendError::Failed { request, source })
    }

    /// Tell the front end the config space changed.
    pub fn config_changed(&self) -> Result<(), BackendError> {
        let inner = crate::lock(&self.inner);
        let sender = inner
            .config
            .as_ref()
            .ok_or(BackendError::NotNegotiated("BACKEND_REQ"))?;
        sender.send().map_err(|source| BackendError::Failed {
            request: "CONFIG_CHANGE_MSG",
            source,
        })
    }

    /// Map `len` bytes of `fd` from `fd_offset` at `shm_offset` of shared
    /// memory region `shmid`.
    pub fn shmem_map(
        &self,
        shmid: u8,
        fd: BorrowedFd<'_>,
        fd_offset: u64,
        shm_offset: u64,
        len: u64,
        writable: bool,
    ) -> Result<(), BackendError> {
        let msg = VhostUserMMap {
            shmid,
            fd_offset,
            shm_offset,
            len,
            flags: if writable {
                VhostUserMMapFlags::WRITABLE.bits()
            } else {
                0
            },
            ..Default::default()
        };
        let raw = RawFdRef(fd.as_raw_fd());
        self.call("SHMEM_MAP", |b| b.shmem_map(&msg, &raw))
    }

    /// Unmap `len` bytes at `shm_offset` of shared memory region `shmid`.
    pub fn shmem_unmap(&self, shmid: u8, shm_offset: u64, len: u64) -> Result<(), BackendError> {
        let msg = VhostUserMMap {
            shmid,
            shm_offset,
            len,
            ..Default::default()
        };
        self.call("SHMEM_UNMAP", |b| b.shmem_unmap(&msg))
    }

    /// Add `uuid` to the front end's shared-object table (this back end exports it).
    pub fn shared_object_add(&self, uuid: &Uuid) -> Result<(), BackendError> {
        self.call("SHARED_OBJECT_ADD", |b| {
            b.shared_object_add(&uuid_msg(uuid))
        })
    }

    /// Remove `uuid` from the front end's shared-object table.
    pub fn shared_object_remove(&self, uuid: &Uuid) -> Result<(), BackendError> {
        self.call("SHARED_OBJECT_REMOVE", |b| {
            b.shared_object_remove(&uuid_msg(uuid))
        })
    }

    /// Ask the front end for the object `uuid`; it answers over `fd`.
    pub fn shared_object_lookup(
        &self,
        uuid: &Uuid,
        fd: BorrowedFd<'_>,
    ) -> Result<(), BackendError> {
        let raw = RawFdRef(fd.as_raw_fd());
        self.call("SHARED_OBJECT_LOOKUP", |b| {
            b.shared_object_lookup(&uuid_msg(uuid), &raw)
        })
    }
}

/// An fd number borrowed for one call (the vhost crate takes `&dyn AsRawFd`).
struct RawFdRef(std::os::fd::RawFd);

impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}
