// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where entropy comes from.
//!
//! [`EntropySource`] is the narrow, `read(2)`-shaped host interface the device
//! uses. [`linux::FileSource`] reads a host file or device without ever
//! blocking; [`mock::SimulatedSource`] produces deterministic bytes and is
//! selectable from the command line (`--simulate`); [`mock::ScriptedSource`]
//! plays back scripted results for tests.

pub mod linux;
pub mod mock;

use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

/// A host source of random bytes.
pub trait EntropySource: Send {
    /// Read up to `buf.len()` bytes, like `read(2)`: `Ok(0)` means the source
    /// has ended; `ErrorKind::WouldBlock` means no bytes are ready now.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// A descriptor that becomes readable when [`Self::read`] can make
    /// progress after `WouldBlock`; `None` if the source never blocks.
    fn ready_fd(&self) -> Option<BorrowedFd<'_>>;

    /// A name for log and error messages.
    fn name(&self) -> String;
}

/// Which source to open, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A host file or device.
    File(PathBuf),
    /// Deterministic pseudo-random bytes.
    Simulated {
        /// Generator seed.
        seed: u64,
    },
}

impl SourceConfig {
    /// Open a fresh source (one per device and connection).
    pub fn open(&self, index: u32) -> io::Result<Box<dyn EntropySource>> {
        Ok(match self {
            SourceConfig::File(path) => Box::new(linux::FileSource::open(path)?),
            SourceConfig::Simulated { seed } => Box::new(mock::SimulatedSource::new(
                seed.wrapping_add(u64::from(index)),
            )),
        })
    }

    /// Check at startup that the source can be opened, so that a bad path is
    /// reported before any socket is created.
    pub fn check(&self) -> Result<(), io::Error> {
        self.open(0).map(drop)
    }
}
