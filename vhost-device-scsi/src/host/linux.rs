// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An image file as a LUN: `preadv`/`pwritev` straight between the file and
//! guest memory (zero-copy), `fdatasync`, hole punching
//! (`fallocate(FALLOC_FL_PUNCH_HOLE)`) for UNMAP and WRITE SAME with UNMAP,
//! and QEMU-compatible OFD image locks.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fcntl, FcntlArg};
use vhost_device_common::queue::{ChainBuffers, Part};

use super::{BlockHost, LockError};

/// QEMU's image locking (its file-posix driver): a process holding
/// permission *p* takes a shared OFD lock on byte `100 + p`; one that does
/// not let others have *p* locks byte `200 + p`. Two users conflict when
/// one holds what the other does not share. Using the same bytes makes a
/// daemon and a QEMU (or `qemu-img`) see each other.
mod qemu_lock {
    /// First byte of the permissions held.
    pub const PERM_BASE: i64 = 100;
    /// First byte of the permissions not shared.
    pub const SHARED_BASE: i64 = 200;
    /// Reading with consistent data.
    pub const CONSISTENT_READ: i64 = 0;
    /// Writing.
    pub const WRITE: i64 = 1;
    /// Writing that does not change data.
    pub const WRITE_UNCHANGED: i64 = 2;
    /// Resizing.
    pub const RESIZE: i64 = 3;
}

/// Alignment of buffers, offsets and lengths for `O_DIRECT`.
pub const DIRECT_ALIGN: usize = 4096;

/// What `O_DIRECT` requires of I/O on one file (`statx` `STATX_DIOALIGN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectAlign {
    /// Alignment of file offsets and lengths: the host's logical block size.
    pub offset: u32,
    /// Alignment of memory buffers.
    pub memory: u32,
}

/// An image file.
#[derive(Debug)]
pub struct FileBlock {
    file: File,
    path: PathBuf,
    size: u64,
    thin: bool,
    direct: Option<DirectAlign>,
    read_only: bool,
    /// `RWF_NOWAIT` is not supported for reads (0) or writes (1).
    no_nowait: [AtomicBool; 2],
}

/// The `O_DIRECT` alignment of `file`, from `statx(STATX_DIOALIGN)` (Linux
/// 6.1), or, where the kernel does not report it, by trying reads of 512
/// bytes at offset 512 and into a buffer at 512 (EINVAL when misaligned).
fn direct_align(file: &File) -> io::Result<DirectAlign> {
    // SAFETY: all-zero bytes are a valid `statx` (plain integers).
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statx buffer; the path is an empty
    // C string with AT_EMPTY_PATH, so the call describes our descriptor.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut st,
        )
    };
    if rc == 0 && st.stx_mask & libc::STATX_DIOALIGN != 0 && st.stx_dio_offset_align != 0 {
        return Ok(DirectAlign {
            offset: st.stx_dio_offset_align,
            memory: st.stx_dio_mem_align.max(1),
        });
    }
    let (mut v, off) = aligned(2 * DIRECT_ALIGN);
    let misaligned =
        |r: io::Result<usize>| matches!(r, Err(e) if e.raw_os_error() == Some(libc::EINVAL));
    let offset = if misaligned(file.read_at(&mut v[off..off + 512], 512)) {
        4096
    } else {
        512
    };
    let len = offset as usize;
    let memory = if misaligned(file.read_at(&mut v[off + 512..off + 512 + len], 0)) {
        4096
    } else {
        512
    };
    Ok(DirectAlign { offset, memory })
}

/// A zeroed, `DIRECT_ALIGN`-aligned buffer of `len` bytes, carved out of a
/// slightly larger vector (no unsafe allocation needed).
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let v = vec![0u8; len + DIRECT_ALIGN];
    // Plain address arithmetic: `align_offset` may return `usize::MAX`.
    let off = (DIRECT_ALIGN - v.as_ptr().addr() % DIRECT_ALIGN) % DIRECT_ALIGN;
    (v, off)
}

/// Most iovecs per `preadv`/`pwritev` (the kernel's `UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// Piece size of a transfer that has to go through a host buffer.
const BOUNCE_CHUNK: usize = 1 << 20;

/// The iovecs of bytes `skip..skip + len` of `part` of `bufs`, into `out`.
/// Returns whether every buffer's address and length are multiples of
/// `align` (what `O_DIRECT` needs).
///
/// The pointers stay valid while `bufs` lives: it keeps the guest memory
/// mapped, and vm-memory's slices of mmap-backed memory are plain pointers
/// into that mapping.
pub fn iovecs(
    bufs: &ChainBuffers,
    part: Part,
    skip: usize,
    len: usize,
    align: usize,
    out: &mut Vec<libc::iovec>,
) -> io::Result<bool> {
    out.clear();
    let mut aligned = true;
    bufs.slices(part, skip, len, |s| {
        let base = s.ptr_guard_mut().as_ptr();
        aligned &= base.addr() % align == 0 && s.len() % align == 0;
        out.push(libc::iovec {
            iov_base: base.cast(),
            iov_len: s.len(),
        });
        Ok(())
    })?;
    Ok(aligned)
}

thread_local! {
    /// Each worker's iovec array, reused by every request.
    static IOV: RefCell<Vec<libc::iovec>> = const { RefCell::new(Vec::new()) };
}

/// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: deallocate, reading back as zeros.
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (off, l) = (
        i64::try_from(offset).map_err(io::Error::other)?,
        i64::try_from(len).map_err(io::Error::other)?,
    );
    // SAFETY: fallocate on a descriptor we own, with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            l,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
            .open(path)
            .map_err(|e| {
                if direct && e.raw_os_error() == Some(libc::EINVAL) {
                    io::Error::new(
                        e.kind(),
                        "the file system does not support O_DIRECT; drop ',direct'",
                    )
                } else {
                    e
                }
            })?;
        let meta = file.metadata()?;
        let direct = if direct {
            Some(direct_align(&file)?)
        } else {
            None
        };
        let size = if meta.is_file() {
            meta.len()
        } else {
            // A block device: its size is where the end is.
            use std::io::Seek;
            (&file).seek(io::SeekFrom::End(0))?
        };
        // Thin (UNMAP supported) only where holes can be punched: a regular
        // file on a file system that implements it. Probed past the end of
        // the file, where a hole changes nothing.
        let thin = meta.is_file() && !read_only && punch_hole(&file, size, 4096).is_ok();
        if meta.is_file() && !read_only && !thin {
            log::info!(
                "{}: the file system cannot punch holes; UNMAP is not offered",
                path.display()
            );
        }
        Ok(Self {
            file,
            path: path.into(),
            size,
            thin,
            direct,
            read_only,
            no_nowait: Default::default(),
        })
    }
}

impl FileBlock {
    /// With `O_DIRECT`, what the host requires of offsets, lengths and
    /// buffers; `None` for buffered I/O.
    pub fn direct_align(&self) -> Option<DirectAlign> {
        self.direct
    }

    /// Whether `buf` cannot be used for `O_DIRECT` as it is.
    fn misaligned(&self, buf: &[u8]) -> bool {
        self.direct.is_some_and(|a| {
            let m = a.memory as usize;
            buf.as_ptr().addr() % m != 0 || buf.len() % m != 0
        })
    }
}

/// An OFD lock request on one byte.
fn flock(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: all-zero bytes are a valid `flock` (plain integers).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = i16::try_from(kind).unwrap_or(0);
    fl.l_whence = i16::try_from(libc::SEEK_SET).unwrap_or(0);
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

impl FileBlock {
    /// (permissions held, permissions not shared) of this LUN.
    fn lock_bytes(&self) -> (&'static [i64], &'static [i64]) {
        use qemu_lock::*;
        if self.read_only {
            // Others may read (and resize) but not write.
            (&[CONSISTENT_READ], &[WRITE])
        } else {
            (&[CONSISTENT_READ, WRITE, WRITE_UNCHANGED], &[WRITE, RESIZE])
        }
    }

    /// Whether another open file description locks `byte`.
    fn locked_by_other(&self, byte: i64) -> io::Result<bool> {
        let mut fl = flock(libc::F_WRLCK, byte);
        fcntl(self.file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut fl))?;
        Ok(i32::from(fl.l_type) != libc::F_UNLCK)
    }

    fn try_lock(&self) -> Result<(), LockError> {
        use qemu_lock::*;
        let failed = |source: io::Error| LockError::Failed {
            path: self.path.display().to_string(),
            source,
        };
        let (held, unshared) = self.lock_bytes();
        let bytes = held
            .iter()
            .map(|p| PERM_BASE + p)
            .chain(unshared.iter().map(|p| SHARED_BASE + p));
        for byte in bytes {
            fcntl(
                self.file.as_raw_fd(),
                FcntlArg::F_OFD_SETLK(&flock(libc::F_RDLCK, byte)),
            )
            .map_err(|e| failed(e.into()))?;
        }
        // Locked first, checked after: two starting at once both back off.
        let conflict = |what| LockError::Conflict {
            path: self.path.display().to_string(),
            what,
        };
        for &p in held {
            if self.locked_by_other(SHARED_BASE + p).map_err(failed)? {
                return Err(conflict(if p == WRITE {
                    "does not let others write"
                } else {
                    "does not let others read"
                }));
            }
        }
        for &p in unshared {
            if self.locked_by_other(PERM_BASE + p).map_err(failed)? {
                return Err(conflict(if p == WRITE {
                    "writes to it"
                } else {
                    "may resize it"
                }));
            }
        }
        Ok(())
    }
}

impl FileBlock {
    /// `preadv` (or `pwritev`) of bytes `skip..skip + len` of `bufs` at
    /// `offset`, resuming after short transfers; `None` when `O_DIRECT`
    /// cannot use the guest buffers as they are.
    fn vectored(
        &self,
        write: bool,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<Option<()>> {
        self.vectored_flags(write, bufs, skip, len, offset, 0)
    }

    /// [`Self::vectored`] with `preadv2`/`pwritev2` flags; with
    /// `RWF_NOWAIT`, `Ok(None)` when nothing could be moved without
    /// waiting (once some was, the rest is moved waiting).
    fn vectored_flags(
        &self,
        write: bool,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
        mut flags: libc::c_int,
    ) -> io::Result<Option<()>> {
        let align = self.direct.map_or(1, |a| a.memory as usize);
        let part = if write {
            Part::Readable
        } else {
            Part::Writable
        };
        IOV.with_borrow_mut(|iov| {
            let mut done = 0usize;
            while done < len {
                if !iovecs(bufs, part, skip + done, len - done, align, iov)? {
                    return Ok(None);
                }
                let n = libc::c_int::try_from(iov.len().min(IOV_MAX)).unwrap_or(1);
                let at = libc::off_t::try_from(offset + done as u64).map_err(io::Error::other)?;
                let fd = self.file.as_raw_fd();
                // SAFETY: the iovecs describe guest memory that `bufs` keeps
                // mapped for this call (see `iovecs`), readable or writable
                // as the chain's part is; the kernel only touches those bytes.
                let r = unsafe {
                    if write {
                        libc::pwritev2(fd, iov.as_ptr(), n, at, flags)
                    } else {
                        libc::preadv2(fd, iov.as_ptr(), n, at, flags)
                    }
                };
                match usize::try_from(r) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    Ok(n) => {
                        done += n;
                        flags = 0;
                    }
                    Err(_) => {
                        let e = io::Error::last_os_error();
                        match e.raw_os_error() {
                            Some(libc::EINTR) => {}
                            Some(libc::EAGAIN) if flags != 0 && done == 0 => return Ok(None),
                            _ => return Err(e),
                        }
                    }
                }
            }
            Ok(Some(()))
        })
    }

    /// Through an aligned host buffer, for guest buffers `O_DIRECT` cannot
    /// use.
    fn bounced(
        &self,
        write: bool,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()> {
        let (mut v, o) = aligned(BOUNCE_CHUNK.min(len));
        let mut done = 0usize;
        while done < len {
            let n = BOUNCE_CHUNK.min(len - done);
            let buf = &mut v[o..o + n];
            let at = offset + done as u64;
            if write {
                let mut filled = 0;
                bufs.slices(Part::Readable, skip + done, n, |s| {
                    filled += s.copy_to(&mut buf[filled..]);
                    Ok(())
                })?;
                self.file.write_all_at(buf, at)?;
            } else {
                self.file.read_exact_at(buf, at)?;
                let mut used = 0;
                bufs.slices(Part::Writable, skip + done, n, |s| {
                    s.copy_from(&buf[used..]);
                    used += s.len();
                    Ok(())
                })?;
            }
            done += n;
        }
        Ok(())
    }
}

impl BlockHost for FileBlock {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.misaligned(buf) {
            let (mut v, off) = aligned(buf.len());
            let bounce = &mut v[off..off + buf.len()];
            self.file.read_exact_at(bounce, offset)?;
            buf.copy_from_slice(bounce);
            return Ok(());
        }
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.misaligned(buf) {
            let (mut v, off) = aligned(buf.len());
            let bounce = &mut v[off..off + buf.len()];
            bounce.copy_from_slice(buf);
            return self.file.write_all_at(bounce, offset);
        }
        self.file.write_all_at(buf, offset)
    }

    fn read_into(
        &self,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()> {
        match self.vectored(false, bufs, skip, len, offset)? {
            Some(()) => Ok(()),
            None => self.bounced(false, bufs, skip, len, offset),
        }
    }

    fn write_from(
        &self,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()> {
        match self.vectored(true, bufs, skip, len, offset)? {
            Some(()) => Ok(()),
            None => self.bounced(true, bufs, skip, len, offset),
        }
    }

    fn transfer_nowait(
        &self,
        write: bool,
        bufs: &ChainBuffers,
        skip: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<bool> {
        // O_DIRECT always waits for the device.
        if self.direct.is_some() {
            return Ok(false);
        }
        let no_nowait = &self.no_nowait[usize::from(write)];
        if !no_nowait.load(Ordering::Relaxed) {
            match self.vectored_flags(write, bufs, skip, len, offset, libc::RWF_NOWAIT) {
                Ok(done) => return Ok(done.is_some()),
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    no_nowait.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        // A file system without RWF_NOWAIT (tmpfs; buffered writes on most):
        // a copy to or from the page cache, done here rather than on one of
        // io_uring's worker threads.
        self.vectored(write, bufs, skip, len, offset)?;
        Ok(true)
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn dio_align(&self) -> Option<(usize, usize)> {
        self.direct.map(|a| (a.memory as usize, a.offset as usize))
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.thin {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        punch_hole(&self.file, offset, len)
    }

    fn thin(&self) -> bool {
        self.thin
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn lock(&self) -> Result<(), LockError> {
        self.try_lock().inspect_err(|_| self.unlock())
    }

    fn unlock(&self) {
        let mut fl = flock(libc::F_UNLCK, qemu_lock::PERM_BASE);
        fl.l_len = qemu_lock::SHARED_BASE + 100 - qemu_lock::PERM_BASE;
        if let Err(e) = fcntl(self.file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
            log::warn!("{}: cannot unlock: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::queue::{drain_chains, Completion};
    use vhost_device_common::testing::{TestQueue, BUFFERS};

    /// The buffers of one chain of `bufs` (address, length, writable).
    fn chain_buffers(q: &mut TestQueue, bufs: &[(u64, u32, bool)]) -> ChainBuffers {
        q.add(bufs).unwrap();
        let mut out = ChainBuffers::default();
        drain_chains(&q.context(), 0, &q.vring, |chain| {
            chain.buffers(&mut out)?;
            Ok(Completion::Used(0))
        })
        .unwrap();
        out
    }

    fn image_with(dir: &Path, data: &[u8]) -> PathBuf {
        let path = dir.join("z.img");
        std::fs::write(&path, data).unwrap();
        path
    }

    #[test]
    fn read_into_reaches_guest_buffers_split_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let f = FileBlock::open(&image_with(dir.path(), &data), false, false).unwrap();
        let mut q = TestQueue::new(16, false).unwrap();
        let bufs = chain_buffers(
            &mut q,
            &[(BUFFERS, 100, true), (BUFFERS + 0x3000, 8000, true)],
        );

        f.read_into(&bufs, 4, 4096, 1024).unwrap();

        let mut back = q.read(BUFFERS + 4, 96).unwrap();
        back.extend(q.read(BUFFERS + 0x3000, 4000).unwrap());
        assert!(back == data[1024..1024 + 4096]);
    }

    #[test]
    fn write_from_takes_guest_buffers_split_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = image_with(dir.path(), &[0u8; 8192]);
        let f = FileBlock::open(&path, false, false).unwrap();
        let mut q = TestQueue::new(16, false).unwrap();
        q.write_bytes(BUFFERS, &[1u8; 10]).unwrap();
        q.write_bytes(BUFFERS + 0x2000, &[2u8; 4096]).unwrap();
        let bufs = chain_buffers(
            &mut q,
            &[(BUFFERS, 10, false), (BUFFERS + 0x2000, 4096, false)],
        );

        f.write_from(&bufs, 6, 512, 512).unwrap();

        let file = std::fs::read(&path).unwrap();
        assert_eq!(&file[512..516], &[1u8; 4]);
        assert!(file[516..1024].iter().all(|&b| b == 2));
    }

    #[test]
    fn misaligned_guest_buffers_with_o_direct_go_through_a_bounce_buffer() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        let Ok(f) = FileBlock::open(&image_with(dir.path(), &data), false, true) else {
            return; // no O_DIRECT here: covered by the test above
        };
        let mut q = TestQueue::new(16, false).unwrap();
        let bufs = chain_buffers(&mut q, &[(BUFFERS + 1, 4096, true)]);

        f.read_into(&bufs, 0, 4096, 4096).unwrap();

        assert!(q.read(BUFFERS + 1, 4096).unwrap() == data[4096..]);
    }

    #[test]
    fn transfer_nowait_serves_what_the_page_cache_holds() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![9u8; 8192];
        let f = FileBlock::open(&image_with(dir.path(), &data), false, false).unwrap();
        let mut q = TestQueue::new(16, false).unwrap();
        let bufs = chain_buffers(&mut q, &[(BUFFERS, 4096, true)]);

        let done = f.transfer_nowait(false, &bufs, 0, 4096, 0).unwrap();

        assert!(done, "a file just written is in the page cache");
        assert_eq!(q.read(BUFFERS, 4096).unwrap(), vec![9u8; 4096]);
    }

    #[test]
    fn direct_io_works_with_unaligned_buffers_or_is_refused_clearly() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let path = dir.path().join("d.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        match FileBlock::open(&path, false, true) {
            Ok(f) => {
                let data = vec![0x42u8; 4097];
                f.write_at(&data[1..], 8192).unwrap();
                let mut back = vec![0u8; 4097];
                f.read_at(&mut back[1..], 8192).unwrap();
                assert_eq!(back[1..], data[1..]);
            }
            Err(e) => assert!(e.to_string().contains("O_DIRECT"), "{e}"),
        }
    }

    #[test]
    fn discard_reads_back_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.img");
        std::fs::write(&path, vec![0xffu8; 1 << 16]).unwrap();
        let f = FileBlock::open(&path, false, false).unwrap();
        f.discard(4096, 8192).unwrap();
        let mut back = vec![1u8; 8192];
        f.read_at(&mut back, 4096).unwrap();
        assert!(back.iter().all(|&b| b == 0));
    }
}
