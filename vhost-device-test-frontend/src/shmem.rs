// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! VIRTIO Shared Memory Regions as the front end models them (virtio 1.3,
//! 2.10 "Shared Memory Regions"; vhost-user `VHOST_USER_BACKEND_SHMEM_MAP` and
//! `VHOST_USER_BACKEND_SHMEM_UNMAP`).
//!
//! A VM would reserve each region in guest-physical address space (a PCI BAR)
//! and map the back end's files into it. Here a region is a size plus a set of
//! non-overlapping mappings, each a real shared `mmap` of the file the back
//! end sent, at the file offset it asked for; a test reads and writes the
//! region through those mappings, so it sees exactly what the back end put in
//! the file.
//!
//! The rules follow vhost-user.rst: a mapping must lie inside a region that
//! exists and must not overlap an existing mapping ("Mapping over an already
//! existing map is not allowed and requests shall fail"); an unmap must name
//! exactly one whole mapping ("the given range shall correspond to the
//! entirety of a valid mapped region"). Offsets and lengths must be multiples
//! of the host page size, which is what `mmap` can honour.

use std::collections::BTreeMap;
use std::fs::File;

use thiserror::Error;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory, VolatileSlice};

/// Why a shared-memory request was refused.
#[derive(Debug, Error)]
pub enum ShmemError {
    /// No region with this id.
    #[error("no shared memory region {0}")]
    NoSuchRegion(u8),
    /// The range does not fit in the region.
    #[error(
        "range {offset:#x}+{len:#x} is outside shared memory region {shmid} of {size:#x} bytes"
    )]
    OutOfRange {
        /// Region id.
        shmid: u8,
        /// Offset in the region.
        offset: u64,
        /// Length.
        len: u64,
        /// Region size.
        size: u64,
    },
    /// An offset or length is not a multiple of the page size (or zero).
    #[error("offset {offset:#x}, file offset {fd_offset:#x} or length {len:#x} is not a non-zero multiple of the page size {page:#x}")]
    Unaligned {
        /// Offset in the region.
        offset: u64,
        /// Offset in the file.
        fd_offset: u64,
        /// Length.
        len: u64,
        /// Page size.
        page: u64,
    },
    /// The range overlaps an existing mapping.
    #[error("range {offset:#x}+{len:#x} of region {shmid} overlaps the mapping at {existing:#x}")]
    Overlap {
        /// Region id.
        shmid: u8,
        /// Offset in the region.
        offset: u64,
        /// Length.
        len: u64,
        /// Offset of the mapping it overlaps.
        existing: u64,
    },
    /// No mapping covers the range exactly (unmap) or at all (access).
    #[error("range {offset:#x}+{len:#x} of region {shmid} is not mapped")]
    NotMapped {
        /// Region id.
        shmid: u8,
        /// Offset in the region.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// The file is shorter than the part to map.
    #[error("file of {file_len:#x} bytes has no {len:#x} bytes at offset {fd_offset:#x}")]
    BeyondFile {
        /// Offset in the file.
        fd_offset: u64,
        /// Length.
        len: u64,
        /// File size.
        file_len: u64,
    },
    /// A write to a mapping the back end made read-only.
    #[error("mapping at {offset:#x} of region {shmid} is read-only")]
    ReadOnly {
        /// Region id.
        shmid: u8,
        /// Offset of the mapping.
        offset: u64,
    },
    /// The file could not be examined or mapped.
    #[error("cannot map the back end's file")]
    Map(#[source] std::io::Error),
}

impl ShmemError {
    /// The errno the front end answers the request with (any non-zero value
    /// means failure on the wire; these say why).
    pub fn errno(&self) -> i32 {
        match self {
            Self::NoSuchRegion(_) | Self::OutOfRange { .. } | Self::Unaligned { .. } => {
                libc::EINVAL
            }
            Self::Overlap { .. } => libc::EEXIST,
            Self::NotMapped { .. } => libc::ENOENT,
            Self::BeyondFile { .. } => libc::ENXIO,
            Self::ReadOnly { .. } => libc::EACCES,
            Self::Map(e) => e.raw_os_error().unwrap_or(libc::ENOMEM),
        }
    }
}

/// One mapping, as a test sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmemMapping {
    /// Offset in the region.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Offset in the back end's file.
    pub fd_offset: u64,
    /// Mapped read-write (else read-only).
    pub writable: bool,
}

struct Mapping {
    info: ShmemMapping,
    map: MmapRegion<()>,
}

/// The front end's shared memory regions, indexed by shmid.
#[derive(Default)]
pub struct SharedMemory {
    regions: BTreeMap<u8, BTreeMap<u64, Mapping>>,
    sizes: BTreeMap<u8, u64>,
    page: u64,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("sizes", &self.sizes)
            .field(
                "mappings",
                &self.regions.values().map(BTreeMap::len).sum::<usize>(),
            )
            .finish()
    }
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(p)) => u64::try_from(p).unwrap_or(4096),
        _ => 4096,
    }
}

impl SharedMemory {
    /// Regions of the given sizes: `sizes[i]` is region `i`; a size of 0
    /// means there is no region with that id.
    pub fn new(sizes: &[u64]) -> Self {
        let sizes: BTreeMap<u8, u64> = (0u8..=u8::MAX)
            .zip(sizes)
            .filter(|&(_, &size)| size > 0)
            .map(|(id, &size)| (id, size))
            .collect();
        Self {
            regions: sizes.keys().map(|&id| (id, BTreeMap::new())).collect(),
            sizes,
            page: page_size(),
        }
    }

    /// Region sizes by shmid.
    pub fn sizes(&self) -> &BTreeMap<u8, u64> {
        &self.sizes
    }

    fn check_range(&self, shmid: u8, offset: u64, len: u64) -> Result<(), ShmemError> {
        let size = *self
            .sizes
            .get(&shmid)
            .ok_or(ShmemError::NoSuchRegion(shmid))?;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(ShmemError::OutOfRange {
                shmid,
                offset,
                len,
                size,
            }),
        }
    }

    /// Map `len` bytes of `file` from `fd_offset` at `offset` of region `shmid`.
    pub fn map(
        &mut self,
        shmid: u8,
        offset: u64,
        fd_offset: u64,
        len: u64,
        writable: bool,
        file: File,
    ) -> Result<(), ShmemError> {
        self.check_range(shmid, offset, len)?;
        let page = self.page;
        if len == 0 || offset % page != 0 || fd_offset % page != 0 || len % page != 0 {
            return Err(ShmemError::Unaligned {
                offset,
                fd_offset,
                len,
                page,
            });
        }
        let mappings = self
            .regions
            .get_mut(&shmid)
            .ok_or(ShmemError::NoSuchRegion(shmid))?;
        // The mapping starting at or before `offset`, and the first after it,
        // are the only ones that can overlap (mappings never overlap each other).
        let before = mappings.range(..=offset).next_back();
        let after = mappings.range(offset..).next();
        for (&start, m) in before.into_iter().chain(after) {
            if start < offset + len && offset < start + m.info.len {
                return Err(ShmemError::Overlap {
                    shmid,
                    offset,
                    len,
                    existing: start,
                });
            }
        }
        // Touching a shared mapping past the end of its file raises SIGBUS:
        // refuse that here (the back end may send any file).
        let file_len = file.metadata().map_err(ShmemError::Map)?.len();
        if fd_offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(ShmemError::BeyondFile {
                fd_offset,
                len,
                file_len,
            });
        }
        let size = usize::try_from(len).map_err(|e| ShmemError::Map(std::io::Error::other(e)))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let map = MmapRegion::build(
            Some(FileOffset::new(file, fd_offset)),
            size,
            prot,
            libc::MAP_SHARED,
        )
        .map_err(|e| ShmemError::Map(std::io::Error::other(e)))?;
        mappings.insert(
            offset,
            Mapping {
                info: ShmemMapping {
                    offset,
                    len,
                    fd_offset,
                    writable,
                },
                map,
            },
        );
        Ok(())
    }

    /// Remove the mapping that covers exactly `offset`..`offset + len`.
    pub fn unmap(&mut self, shmid: u8, offset: u64, len: u64) -> Result<(), ShmemError> {
        self.check_range(shmid, offset, len)?;
        let mappings = self
            .regions
            .get_mut(&shmid)
            .ok_or(ShmemError::NoSuchRegion(shmid))?;
        match mappings.get(&offset) {
            Some(m) if m.info.len == len => {
                mappings.remove(&offset);
                Ok(())
            }
            _ => Err(ShmemError::NotMapped { shmid, offset, len }),
        }
    }

    /// The mappings of region `shmid`, by offset.
    pub fn mappings(&self, shmid: u8) -> Vec<ShmemMapping> {
        self.regions
            .get(&shmid)
            .map(|m| m.values().map(|m| m.info).collect())
            .unwrap_or_default()
    }

    /// The part of one mapping that holds `offset`..`offset + len`.
    fn slice(
        &self,
        shmid: u8,
        offset: u64,
        len: usize,
    ) -> Result<(&Mapping, VolatileSlice<'_>), ShmemError> {
        let not_mapped = ShmemError::NotMapped {
            shmid,
            offset,
            len: len as u64,
        };
        let mappings = self
            .regions
            .get(&shmid)
            .ok_or(ShmemError::NoSuchRegion(shmid))?;
        let (&start, m) = mappings.range(..=offset).next_back().ok_or(not_mapped)?;
        let within = usize::try_from(offset - start).map_err(|_| ShmemError::NotMapped {
            shmid,
            offset,
            len: len as u64,
        })?;
        let slice = m
            .map
            .get_slice(within, len)
            .map_err(|_| ShmemError::NotMapped {
                shmid,
                offset,
                len: len as u64,
            })?;
        Ok((m, slice))
    }

    /// Read `len` bytes at `offset` of region `shmid` (within one mapping).
    pub fn read(&self, shmid: u8, offset: u64, len: usize) -> Result<Vec<u8>, ShmemError> {
        let (_, slice) = self.slice(shmid, offset, len)?;
        let mut buf = vec![0u8; len];
        slice.copy_to(&mut buf[..]);
        Ok(buf)
    }

    /// Write `data` at `offset` of region `shmid` (within one writable mapping).
    pub fn write(&self, shmid: u8, offset: u64, data: &[u8]) -> Result<(), ShmemError> {
        let (m, slice) = self.slice(shmid, offset, data.len())?;
        if !m.info.writable {
            return Err(ShmemError::ReadOnly {
                shmid,
                offset: m.info.offset,
            });
        }
        slice.copy_from(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::io::Write;

    const PAGE: u64 = 4096;

    fn file_with(pages: u64) -> File {
        let mut f = File::from(memfd_create(c"shmem-test", MemFdCreateFlag::MFD_CLOEXEC).unwrap());
        let data: Vec<u8> = (0..pages * PAGE)
            .map(|i| u8::try_from(i / PAGE).unwrap())
            .collect();
        f.write_all(&data).unwrap();
        f
    }

    fn clone(f: &File) -> File {
        f.try_clone().unwrap()
    }

    #[test]
    fn mapped_file_is_read_at_its_file_offset() {
        let f = file_with(4);
        let mut shm = SharedMemory::new(&[16 * PAGE]);

        shm.map(0, 2 * PAGE, PAGE, 2 * PAGE, false, clone(&f))
            .unwrap();

        assert_eq!(shm.read(0, 2 * PAGE, 4).unwrap(), vec![1; 4]);
        assert_eq!(shm.read(0, 3 * PAGE, 4).unwrap(), vec![2; 4]);
        assert!(matches!(
            shm.read(0, 0, 4),
            Err(ShmemError::NotMapped { .. })
        ));
    }

    #[test]
    fn write_through_a_writable_mapping_reaches_the_file_and_read_only_refuses() {
        let f = file_with(2);
        let mut shm = SharedMemory::new(&[0, 8 * PAGE]);
        shm.map(1, 0, 0, PAGE, true, clone(&f)).unwrap();
        shm.map(1, PAGE, PAGE, PAGE, false, clone(&f)).unwrap();

        shm.write(1, 16, b"hello").unwrap();
        let refused = shm.write(1, PAGE, b"x");

        let mut back = [0u8; 5];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut back, 16).unwrap();
        assert_eq!(&back, b"hello");
        assert!(matches!(refused, Err(ShmemError::ReadOnly { .. })));
    }

    #[test]
    fn overlapping_out_of_range_unaligned_and_past_the_file_maps_are_refused() {
        let f = file_with(2);
        let mut shm = SharedMemory::new(&[8 * PAGE]);
        shm.map(0, 2 * PAGE, 0, 2 * PAGE, true, clone(&f)).unwrap();

        let cases = [
            (
                "overlap at start",
                shm.map(0, PAGE, 0, 2 * PAGE, true, clone(&f)),
            ),
            (
                "overlap inside",
                shm.map(0, 3 * PAGE, 0, PAGE, true, clone(&f)),
            ),
            (
                "past the region",
                shm.map(0, 7 * PAGE, 0, 2 * PAGE, true, clone(&f)),
            ),
            ("unknown region", shm.map(3, 0, 0, PAGE, true, clone(&f))),
            ("unaligned", shm.map(0, 100, 0, PAGE, true, clone(&f))),
            ("empty", shm.map(0, 0, 0, 0, true, clone(&f))),
            (
                "past the file",
                shm.map(0, 5 * PAGE, PAGE, 2 * PAGE, true, clone(&f)),
            ),
            (
                "offset overflow",
                shm.map(0, u64::MAX - PAGE + 1, 0, PAGE, true, clone(&f)),
            ),
        ];

        for (what, result) in cases {
            assert!(result.is_err(), "{what} was accepted");
        }
        assert_eq!(shm.mappings(0).len(), 1);
        // Adjacent mappings on both sides are fine.
        shm.map(0, PAGE, 0, PAGE, true, clone(&f)).unwrap();
        shm.map(0, 4 * PAGE, 0, PAGE, true, clone(&f)).unwrap();
        assert_eq!(shm.mappings(0).len(), 3);
    }

    #[test]
    fn unmap_must_name_a_whole_mapping() {
        let f = file_with(2);
        let mut shm = SharedMemory::new(&[8 * PAGE]);
        shm.map(0, 0, 0, 2 * PAGE, true, clone(&f)).unwrap();

        assert!(shm.unmap(0, 0, PAGE).is_err(), "part of a mapping");
        assert!(shm.unmap(0, PAGE, PAGE).is_err(), "middle of a mapping");
        shm.unmap(0, 0, 2 * PAGE).unwrap();
        assert!(shm.unmap(0, 0, 2 * PAGE).is_err(), "twice");
        assert!(shm.mappings(0).is_empty());
    }
}
