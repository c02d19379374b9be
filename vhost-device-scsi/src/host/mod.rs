// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where a LUN's blocks live.
//!
//! [`BlockHost`] is the narrow, `pread`/`pwrite`-shaped host interface of one
//! LUN. [`linux::FileBlock`] is an image file (optionally `O_DIRECT`);
//! [`mock::MemBlock`] is memory, selectable from the command line
//! (`--lun mem:SIZE`) for tests and demos.

pub mod linux;
pub mod mock;
pub mod uring;

use std::io;
use std::os::fd::BorrowedFd;

use vhost_device_common::queue::ChainBuffers;

/// One LUN's storage.
pub trait BlockHost: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`; when this returns the data is in the
    /// file (the page cache at least).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Read `len` bytes at `offset` straight into bytes `skip..skip + len`
    /// of the writable part of a chain (zero-copy). The caller logs them in
    /// the dirty bitmap.
    fn read_into(
        &self,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()>;
    /// Write bytes `skip..skip + len` of the readable part of a chain
    /// straight to `offset` (zero-copy).
    fn write_from(
        &self,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()>;
    /// Like [`Self::read_into`] (`write`: [`Self::write_from`]), but only
    /// if it need not wait for the device (`RWF_NOWAIT`: the data is in the
    /// page cache, or the file system keeps it in memory): `Ok(false)`, with
    /// nothing moved, when it would wait, so that an asynchronous engine
    /// takes it instead.
    fn transfer_nowait(
        &self,
        _write: bool,
        _bufs: &ChainBuffers,
        _skip: usize,
        _len: usize,
        _offset: u64,
    ) -> io::Result<bool> {
        Ok(false)
    }
    /// The file, for an asynchronous engine (io_uring); `None` when the
    /// blocks are not in a file.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// With `O_DIRECT`: the alignment buffers need (memory, offset).
    fn dio_align(&self) -> Option<(usize, usize)> {
        None
    }
    /// Make everything written so far durable (`fdatasync`).
    fn flush(&self) -> io::Result<()>;
    /// Deallocate `len` bytes at `offset` so that they read back as zeros.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Whether [`Self::discard`] really frees space (reported in the
    /// provisioning VPD page).
    fn thin(&self) -> bool;
    /// A name for messages.
    fn name(&self) -> String;
    /// Take the image's lock (shared for a read-only LUN): fails when
    /// another process uses the image in a conflicting way.
    fn lock(&self) -> Result<(), LockError> {
        Ok(())
    }
    /// Drop the image's lock.
    fn unlock(&self) {}
}

/// The image could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds a conflicting lock.
    #[error("{path} is in use by another process (it {what}); is another vhost-device-scsi or a QEMU using the image?")]
    Conflict {
        /// The image.
        path: String,
        /// What the other process does.
        what: &'static str,
    },
    /// The lock call itself failed.
    #[error("cannot lock {path}")]
    Failed {
        /// The image.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
