// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The dirty-page log of guest memory, for live migration.
//!
//! Every guest memory region carries a [`DirtyLog`]. When the front end
//! starts migrating it hands over its log (`VHOST_USER_SET_LOG_BASE`, see
//! QEMU's `docs/interop/vhost-user.rst`, "Migration"), and vhost-user-backend
//! points each region's [`DirtyLog`] at its part of that log
//! ([`BitmapReplace::replace`]); from then on every write into guest memory
//! through vm-memory (the used ring, a [`Writer`](crate::queue::Writer),
//! [`ChainBuffers::mark_written`](crate::queue::ChainBuffers::mark_written))
//! sets the bit of its 4 KiB page.
//!
//! Until then a write costs one fence and one load: vhost-user-backend's own
//! `BitmapMmapRegion` takes a read lock for every write, and clones an `Arc`
//! for every slice of guest memory, which together cost about 5 % of the
//! CPU time of a cached 4 KiB read in the scsi daemon.
//!
//! Why a write that finds the log off need not be logged: the front end
//! copies all of guest memory once after `SET_LOG_BASE` has been answered,
//! and the handler answers only after [`DirtyLog::replace`] has turned the
//! log on (and fenced). The fence in [`Bitmap::mark_dirty`] orders the write
//! before the check, so a write that found the log off is visible to that
//! first copy.
//!
//! As with vhost-user-backend's own bitmap: a region the front end adds
//! while it logs starts with the log off until the next `SET_LOG_BASE`; the
//! log is never turned off again once on (the front end's log simply stops
//! being read); and offsets map to log pages relative to the region's
//! 4 KiB page, so regions are expected to start on a page (QEMU's do).

use std::io;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use vhost_user_backend::bitmap::{AtomicBitmapMmap, BitmapReplace, MemRegionBitmap, MmapLogReg};
use vm_memory::bitmap::{Bitmap, RefSlice, WithBitmapSlice};
use vm_memory::mmap::NewBitmap;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MmapRegion};

/// The log's page size (`VHOST_LOG_PAGE`).
const LOG_PAGE: usize = 4096;

/// One guest memory region's view of the front end's dirty log (off until
/// the front end hands one over).
#[derive(Debug, Default, Clone)]
pub struct DirtyLog {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    active: AtomicBool,
    log: RwLock<Option<RegionLog>>,
}

/// A region's pages in the front end's log: one bit per 4 KiB page.
#[derive(Debug)]
pub struct RegionLog {
    logmem: Arc<MmapLogReg>,
    /// Pages of the log before the region's first.
    first_page: usize,
    /// The region's pages.
    pages: usize,
}

impl MemRegionBitmap for RegionLog {
    fn new<R: GuestMemoryRegion>(region: &R, logmem: Arc<MmapLogReg>) -> io::Result<Self> {
        // The library's checks: an empty region, or one whose pages lie
        // beyond the log, is refused (so `mark` never indexes past it).
        AtomicBitmapMmap::new(region, Arc::clone(&logmem))?;
        let start = usize::try_from(region.start_addr().raw_value()).map_err(io::Error::other)?;
        let len = usize::try_from(region.len()).map_err(io::Error::other)?;
        Ok(Self {
            logmem,
            first_page: start / LOG_PAGE,
            pages: len / LOG_PAGE,
        })
    }
}

impl RegionLog {
    /// The bit of `page` (of the region): its byte in the log and its mask.
    fn bit(&self, page: usize) -> Option<(usize, u8)> {
        (page < self.pages).then(|| {
            let page = self.first_page + page;
            (page / 8, 1u8 << (page % 8))
        })
    }

    fn mark(&self, offset: usize, len: usize) {
        if len == 0 {
            return;
        }
        let first = offset / LOG_PAGE;
        let last = offset.saturating_add(len - 1) / LOG_PAGE;
        for page in first..=last {
            let Some((byte, mask)) = self.bit(page) else {
                break;
            };
            self.logmem[byte].fetch_or(mask, Ordering::Relaxed);
        }
    }

    fn dirty(&self, offset: usize) -> bool {
        self.bit(offset / LOG_PAGE)
            .is_some_and(|(byte, mask)| self.logmem[byte].load(Ordering::Relaxed) & mask != 0)
    }
}

impl DirtyLog {
    /// Whether the front end's log is on for this region.
    fn is_active(&self) -> bool {
        // Orders the caller's writes before the check (see the module docs).
        fence(Ordering::SeqCst);
        self.inner.active.load(Ordering::Relaxed)
    }
}

/// Whether the front end's log is on for any region of `mem`. After writes
/// into guest memory that did not go through vm-memory (the kernel's), false
/// means they need not be logged.
pub fn logging(mem: &GuestMemoryMmap<DirtyLog>) -> bool {
    mem.iter()
        .any(|region| MmapRegion::<DirtyLog>::bitmap(region).is_active())
}

impl Bitmap for DirtyLog {
    fn mark_dirty(&self, offset: usize, len: usize) {
        if !self.is_active() {
            return;
        }
        let log = self
            .inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = log.as_ref() {
            log.mark(offset, len);
        }
    }

    fn dirty_at(&self, offset: usize) -> bool {
        let log = self
            .inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        log.as_ref().is_some_and(|log| log.dirty(offset))
    }

    fn slice_at(&self, offset: usize) -> RefSlice<'_, Self> {
        RefSlice::new(self, offset)
    }
}

impl<'a> WithBitmapSlice<'a> for DirtyLog {
    type S = RefSlice<'a, Self>;
}

impl NewBitmap for DirtyLog {
    fn with_len(_len: usize) -> Self {
        Self::default()
    }
}

impl BitmapReplace for DirtyLog {
    type InnerBitmap = RegionLog;

    fn replace(&self, log: RegionLog) {
        let mut slot = self
            .inner
            .log
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(log);
        self.inner.active.store(true, Ordering::SeqCst);
        // The other half of the ordering argument (module docs): the flag is
        // visible before the answer to SET_LOG_BASE lets the front end copy.
        fence(Ordering::SeqCst);
    }
}

// The log itself (`MmapLogReg`) can only be made by vhost-user-backend's
// handler, so the log is tested through real daemons and the test front
// end's dirty log: rng `dirty_log_marks_every_page_the_device_wrote_and_no_other`
// (writes through vm-memory), scsi
// `read_from_an_image_marks_its_data_pages_in_the_dirty_log` (the kernel's
// writes, `mark_written`), testdev's migration tests, and e2e `migrate-scsi`.
