// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An image file as a LUN: `pread`/`pwrite`, `fdatasync`, and hole punching
//! (`fallocate(FALLOC_FL_PUNCH_HOLE)`) for UNMAP and WRITE SAME with UNMAP.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::BlockHost;

/// An image file.
#[derive(Debug)]
pub struct FileBlock {
    file: File,
    path: PathBuf,
    size: u64,
    thin: bool,
}

impl FileBlock {
    /// Open `path`, read-only or read-write, optionally with `O_DIRECT`.
    pub fn open(path: &Path, read_only: bool, direct: bool) -> io::Result<Self> {
        let mut flags = libc::O_CLOEXEC;
        if direct {
            flags |= libc::O_DIRECT;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(flags)
            .open(path)?;
        let meta = file.metadata()?;
        let size = if meta.is_file() {
            meta.len()
        } else {
            // A block device: its size is where the end is.
            use std::io::Seek;
            (&file).seek(io::SeekFrom::End(0))?
        };
        Ok(Self {
            file,
            path: path.into(),
            size,
            thin: meta.is_file() && !read_only,
        })
    }
}

impl BlockHost for FileBlock {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let (off, l) = (
            i64::try_from(offset).map_err(io::Error::other)?,
            i64::try_from(len).map_err(io::Error::other)?,
        );
        if self.thin {
            // SAFETY: fallocate on a descriptor we own, with plain integer arguments.
            let rc = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    l,
                )
            };
            if rc == 0 {
                return Ok(());
            }
        }
        // No hole punching here: write zeros so the range reads back as zeros.
        let zeros = vec![0u8; 64 * 1024];
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done).unwrap_or(zeros.len()).min(zeros.len());
            self.file.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn thin(&self) -> bool {
        self.thin
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}
