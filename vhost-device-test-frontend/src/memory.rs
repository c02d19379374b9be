// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest RAM for a VM that does not exist.
//!
//! One memfd-backed, shared mapping stands for the guest's physical memory, as
//! QEMU's `memory-backend-memfd,share=on` does. Its file descriptor goes to the
//! back end with `VHOST_USER_SET_MEM_TABLE`; the front end reads and writes it
//! through vm-memory at guest-physical addresses. A bump allocator hands out
//! aligned areas for rings and buffers.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

use crate::Error;

/// Where guest RAM starts in guest-physical address space.
pub const RAM_BASE: u64 = 0x10_0000;

/// The guest's RAM.
#[derive(Debug)]
pub struct GuestRam {
    mem: GuestMemoryMmap<()>,
    next: AtomicU64,
    size: u64,
}

impl GuestRam {
    /// Create `size` bytes of shared guest RAM at [`RAM_BASE`].
    pub fn new(size: usize) -> Result<Self, Error> {
        let fd = memfd_create(c"vhost-test-guest-ram", MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(|e| Error::Memory(e.into()))?;
        let file = File::from(fd);
        file.set_len(size as u64).map_err(Error::Memory)?;
        let region = MmapRegion::from_file(FileOffset::new(file, 0), size)
            .map_err(|e| Error::Memory(std::io::Error::other(e)))?;
        let region = GuestRegionMmap::new(region, GuestAddress(RAM_BASE))
            .ok_or_else(|| Error::Memory(std::io::Error::other("guest region overflows")))?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| Error::Memory(std::io::Error::other(e)))?;
        Ok(Self {
            mem,
            next: AtomicU64::new(RAM_BASE),
            size: size as u64,
        })
    }

    /// First guest-physical address past the end of RAM.
    pub fn end(&self) -> u64 {
        RAM_BASE + self.size
    }

    /// Allocate `len` bytes aligned to `align` (a power of two).
    pub fn alloc(&self, len: u64, align: u64) -> Result<u64, Error> {
        let align = align.max(1);
        loop {
            let cur = self.next.load(Ordering::Relaxed);
            let start = cur.div_ceil(align) * align;
            let end = start.checked_add(len).ok_or(Error::OutOfGuestMemory(len))?;
            if end > self.end() {
                return Err(Error::OutOfGuestMemory(len));
            }
            if self
                .next
                .compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(start);
            }
        }
    }

    /// Write `data` at guest-physical `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), Error> {
        self.mem
            .write_slice(data, GuestAddress(addr))
            .map_err(|e| Error::GuestAccess(addr, e.to_string()))
    }

    /// Read `len` bytes at guest-physical `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, GuestAddress(addr))
            .map_err(|e| Error::GuestAccess(addr, e.to_string()))?;
        Ok(buf)
    }

    /// Write a little-endian value at `addr`.
    pub fn write_obj<T: vm_memory::ByteValued>(&self, addr: u64, val: T) -> Result<(), Error> {
        self.mem
            .write_obj(val, GuestAddress(addr))
            .map_err(|e| Error::GuestAccess(addr, e.to_string()))
    }

    /// Read a value at `addr`.
    pub fn read_obj<T: vm_memory::ByteValued>(&self, addr: u64) -> Result<T, Error> {
        self.mem
            .read_obj(GuestAddress(addr))
            .map_err(|e| Error::GuestAccess(addr, e.to_string()))
    }

    /// The front end's own virtual address for a guest-physical address (what
    /// `VHOST_USER_SET_VRING_ADDR` carries).
    pub fn host_addr(&self, addr: u64) -> Result<u64, Error> {
        self.mem
            .get_host_address(GuestAddress(addr))
            .map(|p| p as u64)
            .map_err(|e| Error::GuestAccess(addr, e.to_string()))
    }

    /// The regions to send with `VHOST_USER_SET_MEM_TABLE`.
    pub fn regions(&self) -> Result<Vec<VhostUserMemoryRegionInfo>, Error> {
        self.mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).map_err(Error::Vhost))
            .collect()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.mem.iter().map(|r| r.len()).sum()
    }
}
