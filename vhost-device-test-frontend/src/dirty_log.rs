// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The dirty-page log a migrating front end shares with the back end
//! (vhost-user.rst "Migration", `VHOST_USER_SET_LOG_BASE` with
//! `VHOST_USER_PROTOCOL_F_LOG_SHMFD`).
//!
//! The log is a memfd holding one bit per 4 KiB page of guest-physical
//! address space, from address 0 to the end of guest RAM: the back end marks
//! page `addr / 0x1000` by setting bit `page % 8` of byte `page / 8`,
//! atomically, whenever it writes guest memory while `VHOST_F_LOG_ALL` is
//! acknowledged. The front end maps the same memfd and reads the bits back
//! (atomically too: the back end keeps setting them while we read).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use vhost::vhost_user::message::VhostUserVringAddrFlags;
use vhost::VhostUserDirtyLogRegion;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

use crate::Error;

/// Bytes of guest memory per log bit (`VHOST_LOG_PAGE`).
pub const LOG_PAGE_SIZE: u64 = 0x1000;

/// The `VHOST_VRING_F_LOG` flag of `SET_VRING_ADDR`: log writes to the used ring.
pub const VRING_F_LOG: u32 = VhostUserVringAddrFlags::VHOST_VRING_F_LOG.bits();

/// A shared dirty-page log.
pub struct DirtyLog {
    file: File,
    map: MmapRegion<()>,
}

impl std::fmt::Debug for DirtyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyLog")
            .field("bytes", &self.map.size())
            .finish()
    }
}

impl DirtyLog {
    /// A clear log covering guest-physical addresses `0..end`.
    pub fn new(end: u64) -> Result<Self, Error> {
        let pages = end.div_ceil(LOG_PAGE_SIZE);
        let bytes = pages.div_ceil(8).max(1);
        let fd = memfd_create(c"vhost-test-dirty-log", MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(|e| Error::Memory(e.into()))?;
        let file = File::from(fd);
        file.set_len(bytes).map_err(Error::Memory)?;
        let size = usize::try_from(bytes).map_err(|e| Error::Memory(std::io::Error::other(e)))?;
        let map_file = file.try_clone().map_err(Error::Memory)?;
        let map = MmapRegion::from_file(FileOffset::new(map_file, 0), size)
            .map_err(|e| Error::Memory(std::io::Error::other(e)))?;
        Ok(Self { file, map })
    }

    /// What `SET_LOG_BASE` carries: the memfd, its size and offset 0.
    pub fn region(&self) -> VhostUserDirtyLogRegion {
        VhostUserDirtyLogRegion {
            mmap_size: self.map.size() as u64,
            mmap_offset: 0,
            mmap_handle: self.file.as_raw_fd(),
        }
    }

    fn byte(&self, index: usize) -> Result<&AtomicU8, Error> {
        self.map
            .get_atomic_ref::<AtomicU8>(index)
            .map_err(|e| Error::GuestAccess(index as u64, e.to_string()))
    }

    fn collect(&self, clear: bool) -> Result<Vec<u64>, Error> {
        let mut pages = Vec::new();
        for index in 0..self.map.size() {
            let byte = self.byte(index)?;
            let bits = if clear {
                byte.swap(0, Ordering::AcqRel)
            } else {
                byte.load(Ordering::Acquire)
            };
            for bit in 0..8u64 {
                if bits & (1 << bit) != 0 {
                    pages.push((index as u64 * 8 + bit) * LOG_PAGE_SIZE);
                }
            }
        }
        Ok(pages)
    }

    /// Guest-physical addresses of the pages marked dirty, ascending.
    pub fn dirty_pages(&self) -> Result<Vec<u64>, Error> {
        self.collect(false)
    }

    /// Like [`Self::dirty_pages`], clearing each byte as it is read (a page
    /// marked in between is reported by the next call, never lost).
    pub fn take_dirty_pages(&self) -> Result<Vec<u64>, Error> {
        self.collect(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn log_covers_every_page_up_to_the_end_of_ram() {
        // 0x10_0000 + 64 MiB of RAM = 16640 pages = 2080 bytes of log.
        let log = DirtyLog::new(0x10_0000 + (64 << 20)).unwrap();

        assert_eq!(log.region().mmap_size, 2080);
    }

    #[test]
    fn bits_set_by_the_back_end_are_reported_as_page_addresses_and_taken() {
        let log = DirtyLog::new(1 << 20).unwrap();
        // Page 0, page 9 and page 255: bytes 0, 1 and 31.
        log.byte(0).unwrap().fetch_or(1, Ordering::Relaxed);
        log.byte(1).unwrap().fetch_or(1 << 1, Ordering::Relaxed);
        log.byte(31).unwrap().fetch_or(1 << 7, Ordering::Relaxed);

        let pages = log.take_dirty_pages().unwrap();

        assert_eq!(pages, vec![0, 9 * 4096, 255 * 4096]);
        assert!(log.dirty_pages().unwrap().is_empty());
    }
}
