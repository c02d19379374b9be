// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shared plumbing for the vhost-device daemons.
//!
//! Every daemon in this workspace is a thin device crate on top of this one:
//!
//! - [`cli`]: the command-line options every daemon shares (`--socket-path`,
//!   `--socket-fd`, `--socket-count`, `--poll-us`, `-v`, `--print-capabilities`).
//! - [`daemon`]: the process lifecycle — listeners, one fresh device per front-end
//!   connection, reconnect, SIGTERM/SIGINT, `READY=1` notification.
//! - [`device`]: the narrow [`VirtioDevice`](device::VirtioDevice) trait a device
//!   implements, and the adapter that turns it into a `VhostUserBackend`.
//! - [`queue`]: draining a virtqueue with EVENT_IDX, through `Reader`/`Writer` only;
//!   holding chains and completing them later.
//! - [`state`]: the versioned, checked device-state blob of live migration.
//! - [`backend`]: typed requests to the front end (config change, shared memory).
//! - [`proxy`]: the control-channel relay that lets the runtime send config-change
//!   messages.
//! - [`events`]: putting a device's own fds (timers, sockets) into the worker epoll.
//! - [`poll`]: adaptive polling of a worker's rings after work (`--poll-us`).
//! - [`config_space`]: bounds-checked config-space reads and writes.
//! - [`wire`]: the one audited way to make a wire struct `ByteValued`.
//! - [`error`]: cause-chain reporting and rate-limited guest-error logging.
//! - `testing` (feature `test-utils`): a vring over mock guest memory for queue tests.
#![warn(missing_docs)]

pub mod backend;
pub mod cli;
pub mod config_space;
pub mod control;
pub mod daemon;
pub mod device;
pub mod dirty;
pub mod error;
pub mod events;
pub mod poll;
pub mod proxy;
pub mod queue;
pub mod state;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod wire;

/// Lock a mutex, recovering the data if a panicking thread poisoned it: a
/// daemon keeps serving rather than cascading one worker's panic.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

pub use vhost;
pub use vhost_user_backend;
pub use virtio_bindings;
pub use virtio_queue;
pub use vm_memory;
pub use vmm_sys_util;
