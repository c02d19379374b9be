// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A LUN in memory (`--lun mem:SIZE`): for tests, demos and benchmarks of the
//! daemon without a file system. Contents are lost when the daemon exits.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

use vhost_device_common::queue::{ChainBuffers, Part};

use super::BlockHost;

/// Memory-backed blocks, optionally failing I/O for error-path tests.
#[derive(Debug)]
pub struct MemBlock {
    data: Mutex<Vec<u8>>,
    fail_io: bool,
    fail_next_flush: AtomicBool,
    write_errno: AtomicI32,
    thick: bool,
    fail_discard: bool,
}

impl MemBlock {
    /// `size` zeroed bytes.
    pub fn new(size: usize) -> Self {
        Self {
            data: Mutex::new(vec![0; size]),
            fail_io: false,
            fail_next_flush: AtomicBool::new(false),
            write_errno: AtomicI32::new(0),
            thick: false,
            fail_discard: false,
        }
    }

    /// A LUN without hole punching (a block device, say): not thin.
    pub fn thick(self) -> Self {
        Self {
            thick: true,
            ..self
        }
    }

    /// Every discard fails with EOPNOTSUPP.
    pub fn failing_discard(self) -> Self {
        Self {
            fail_discard: true,
            ..self
        }
    }

    /// The next flush fails with EIO (later ones succeed, as `fdatasync`
    /// does after the kernel dropped the pages it could not write).
    pub fn fail_next_flush(self) -> Self {
        self.fail_next_flush.store(true, Ordering::Release);
        self
    }

    /// Every write fails with `errno`.
    pub fn fail_writes_with(self, errno: i32) -> Self {
        self.write_errno.store(errno, Ordering::Release);
        self
    }

    /// A LUN whose reads, writes and flushes fail with EIO.
    pub fn failing(size: usize) -> Self {
        Self {
            fail_io: true,
            ..Self::new(size)
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.fail_io {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn range(&self, offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        match start.checked_add(len) {
            Some(end) if end <= size => Ok(start..end),
            _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
}

impl BlockHost for MemBlock {
    fn size(&self) -> u64 {
        vhost_device_common::lock(&self.data).len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check()?;
        let data = vhost_device_common::lock(&self.data);
        let r = self.range(offset, buf.len(), data.len())?;
        buf.copy_from_slice(&data[r]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        match self.write_errno.load(Ordering::Acquire) {
            0 => {}
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
        let mut data = vhost_device_common::lock(&self.data);
        let len = data.len();
        let r = self.range(offset, buf.len(), len)?;
        data[r].copy_from_slice(buf);
        Ok(())
    }

    fn read_into(
        &self,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()> {
        self.check()?;
        let data = vhost_device_common::lock(&self.data);
        let r = self.range(offset, len, data.len())?;
        let mut src = &data[r];
        bufs.slices(Part::Writable, skip, len, |s| {
            let (now, rest) = src.split_at(s.len().min(src.len()));
            s.copy_from(now);
            src = rest;
            Ok(())
        })
    }

    fn write_from(
        &self,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()> {
        self.check()?;
        match self.write_errno.load(Ordering::Acquire) {
            0 => {}
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
        let mut data = vhost_device_common::lock(&self.data);
        let size = data.len();
        let r = self.range(offset, len, size)?;
        let mut dst = &mut data[r];
        bufs.slices(Part::Readable, skip, len, |s| {
            let n = s.len().min(dst.len());
            let (now, rest) = std::mem::take(&mut dst).split_at_mut(n);
            s.copy_to(now);
            dst = rest;
            Ok(())
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.check()?;
        if self.fail_next_flush.swap(false, Ordering::AcqRel) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.thick || self.fail_discard {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        let mut data = vhost_device_common::lock(&self.data);
        let size = data.len();
        let r = self.range(
            offset,
            usize::try_from(len).map_err(io::Error::other)?,
            size,
        )?;
        data[r].fill(0);
        Ok(())
    }

    fn thin(&self) -> bool {
        !self.thick
    }

    fn name(&self) -> String {
        "memory".into()
    }
}
