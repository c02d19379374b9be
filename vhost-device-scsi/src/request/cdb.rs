// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! SCSI command emulation for a direct-access block device (SBC-3, SPC-4).
//!
//! [`execute`] runs one CDB against one [`Lun`], reading data-out from a
//! [`Reader`] and writing data-in to a [`Writer`], and returns the SCSI status,
//! sense data and how much data moved. Data moves in chunks of at most
//! [`CHUNK`] bytes through the caller's scratch buffer, so a large transfer
//! never needs a large host allocation.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use vhost_device_common::queue::{ChainBuffers, Reader, Writer};

use super::sense::{self, Sense};
use crate::host::BlockHost;

/// Largest piece of a transfer held in host memory at once.
pub const CHUNK: usize = 1 << 20;

/// Operation codes this target implements.
pub mod op {
    #![allow(missing_docs)]
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const VERIFY_10: u8 = 0x2f;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8a;
    pub const VERIFY_16: u8 = 0x8f;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    /// SERVICE ACTION IN(16) / READ CAPACITY(16).
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
    /// MAINTENANCE IN / REPORT SUPPORTED OPERATION CODES.
    pub const SA_REPORT_SUPPORTED_OPCODES: u8 = 0x0c;
}

/// One supported command: its operation code, service action (for commands
/// that have them) and CDB usage map (SPC-4, 6.35.3: byte 0 is the operation
/// code, every other bit is set when this target evaluates it), for REPORT
/// SUPPORTED OPERATION CODES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for operation codes that have them.
    pub service_action: Option<u8>,
    /// CDB usage data; its length is the CDB length.
    pub usage: &'static [u8],
}

const fn cmd(opcode: u8, service_action: Option<u8>, usage: &'static [u8]) -> Command {
    Command {
        opcode,
        service_action,
        usage,
    }
}

/// Every supported command with the CDB bits it evaluates (the control byte's
/// NACA and LINK are not supported, so never evaluated).
pub const SUPPORTED: &[Command] = &[
    cmd(op::TEST_UNIT_READY, None, &[0x00, 0, 0, 0, 0, 0]),
    cmd(op::REQUEST_SENSE, None, &[0x03, 0, 0, 0, 0xff, 0]),
    cmd(op::READ_6, None, &[0x08, 0x1f, 0xff, 0xff, 0xff, 0]),
    cmd(op::WRITE_6, None, &[0x0a, 0x1f, 0xff, 0xff, 0xff, 0]),
    cmd(op::INQUIRY, None, &[0x12, 0x01, 0xff, 0xff, 0xff, 0]),
    cmd(op::MODE_SENSE_6, None, &[0x1a, 0, 0xff, 0xff, 0xff, 0]),
    cmd(op::START_STOP_UNIT, None, &[0x1b, 0, 0, 0, 0, 0]),
    cmd(
        op::PREVENT_ALLOW_MEDIUM_REMOVAL,
        None,
        &[0x1e, 0, 0, 0, 0, 0],
    ),
    cmd(
        op::READ_CAPACITY_10,
        None,
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ),
    cmd(
        op::READ_10,
        None,
        &[0x28, 0, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0],
    ),
    cmd(
        op::WRITE_10,
        None,
        &[0x2a, 0x08, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0],
    ),
    cmd(
        op::VERIFY_10,
        None,
        &[0x2f, 0x06, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0],
    ),
    cmd(
        op::SYNCHRONIZE_CACHE_10,
        None,
        &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ),
    cmd(
        op::WRITE_SAME_10,
        None,
        &[0x41, 0x08, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0],
    ),
    cmd(op::UNMAP, None, &[0x42, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0]),
    cmd(
        op::MODE_SENSE_10,
        None,
        &[0x5a, 0, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0],
    ),
    cmd(
        op::READ_16,
        None,
        &[
            0x88, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    cmd(
        op::WRITE_16,
        None,
        &[
            0x8a, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0,
        ],
    ),
    cmd(
        op::VERIFY_16,
        None,
        &[
            0x8f, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0,
        ],
    ),
    cmd(
        op::SYNCHRONIZE_CACHE_16,
        None,
        &[0x91, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ),
    cmd(
        op::WRITE_SAME_16,
        None,
        &[
            0x93, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0,
        ],
    ),
    cmd(
        op::SERVICE_ACTION_IN_16,
        Some(op::SA_READ_CAPACITY_16),
        &[
            0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    cmd(
        op::REPORT_LUNS,
        None,
        &[0xa0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
    ),
    cmd(
        op::MAINTENANCE_IN,
        Some(op::SA_REPORT_SUPPORTED_OPCODES),
        &[
            0xa3, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    cmd(
        op::READ_12,
        None,
        &[
            0xa8, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
    cmd(
        op::WRITE_12,
        None,
        &[
            0xaa, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
    ),
];

/// Recommended timeout reported with RCTD (seconds).
pub const RECOMMENDED_TIMEOUT_S: u32 = 30;

/// Largest UNMAP block-descriptor count accepted per command (VPD 0xB0).
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// Largest number of blocks one UNMAP may deallocate, all descriptors
/// together (VPD 0xB0 MAXIMUM UNMAP LBA COUNT). Only thin LUNs unmap, and
/// only by punching holes, so this bounds the work of one command.
pub const MAX_UNMAP_BLOCKS: u32 = 1 << 22;
/// Largest WRITE SAME, in bytes (VPD 0xB0 MAXIMUM WRITE SAME LENGTH, in
/// blocks of the LUN): the data may have to be written out block by block,
/// so this bounds how long one command holds its worker.
pub const MAX_WRITE_SAME_BYTES: u64 = 16 << 20;

/// One logical unit.
pub struct Lun {
    /// Storage.
    pub host: Box<dyn BlockHost>,
    /// Logical block size (512 or 4096).
    pub block_size: u32,
    /// Writes refused with DATA PROTECT.
    pub read_only: bool,
    /// Reported as rotating media (else solid state).
    pub rotational: bool,
    /// Unit serial number (VPD 0x80).
    pub serial: String,
    /// NAA 3 (locally assigned) identifier, 8 bytes (VPD 0x83).
    pub naa: u64,
    /// Largest transfer in blocks (from `max_sectors`).
    pub max_transfer_blocks: u32,
    /// A flush failed: the kernel may have dropped dirty pages it could not
    /// write back (and marked them clean), so no later flush may report
    /// success until the LUN is opened again (a daemon restart), as QEMU's
    /// file driver does.
    pub write_back_failed: AtomicBool,
    /// The image lock (see [`Lun::acquire`]).
    pub lock: LunLock,
}

/// Whether this daemon holds a LUN's image lock.
#[derive(Debug, Default)]
pub struct LunLock {
    held: AtomicBool,
    refused: AtomicBool,
    serial: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Lun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lun")
            .field("host", &self.host.name())
            .field("block_size", &self.block_size)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Lun {
    /// Number of logical blocks.
    pub fn blocks(&self) -> u64 {
        self.host.size() / u64::from(self.block_size)
    }

    /// Whether UNMAP is supported (and reported in VPD 0xB2 and READ
    /// CAPACITY(16)): a writable LUN whose host punches holes.
    pub fn thin(&self) -> bool {
        self.host.thin() && !self.read_only
    }

    /// Take the image lock if this daemon does not hold it yet; false (and
    /// an error logged once) while another process holds a conflicting one.
    /// Taken when the request rings start, and again by any command that
    /// finds it missing; dropped when they all stop ([`Lun::release`]), so
    /// that a live migration's destination daemon can take it over.
    pub fn acquire(&self) -> bool {
        if self.lock.held.load(Ordering::Acquire) {
            return true;
        }
        let _serial = vhost_device_common::lock(&self.lock.serial);
        if self.lock.held.load(Ordering::Acquire) {
            return true;
        }
        match self.host.lock() {
            Ok(()) => {
                self.lock.held.store(true, Ordering::Release);
                if self.lock.refused.swap(false, Ordering::AcqRel) {
                    log::info!("{}: image lock taken", self.host.name());
                }
                true
            }
            Err(e) => {
                if !self.lock.refused.swap(true, Ordering::AcqRel) {
                    log::error!(
                        "{}; commands to this LUN fail with NOT READY until it is free",
                        vhost_device_common::error::report(&e)
                    );
                }
                false
            }
        }
    }

    /// Drop the image lock (all request rings stopped, or the front end left).
    pub fn release(&self) {
        let _serial = vhost_device_common::lock(&self.lock.serial);
        if self.lock.held.swap(false, Ordering::AcqRel) {
            self.host.unlock();
        }
    }

    /// MAXIMUM WRITE SAME LENGTH in blocks.
    pub fn max_write_same_blocks(&self) -> u32 {
        u32::try_from(MAX_WRITE_SAME_BYTES / u64::from(self.block_size)).unwrap_or(u32::MAX)
    }
}

/// The result of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// SCSI status.
    pub status: u8,
    /// Sense data for CHECK CONDITION.
    pub sense: Option<Sense>,
    /// The data buffers were too small (virtio-scsi `OVERRUN`).
    pub overrun: bool,
}

impl Outcome {
    /// GOOD.
    pub const GOOD: Outcome = Outcome {
        status: sense::GOOD,
        sense: None,
        overrun: false,
    };

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Outcome {
            status: sense::CHECK_CONDITION,
            sense: Some(sense),
            overrun: false,
        }
    }

    /// The data buffers are too small (virtio-scsi `OVERRUN`).
    pub fn overrun() -> Self {
        Outcome {
            overrun: true,
            ..Outcome::GOOD
        }
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Length of the CDB for an opcode, from its group code (SPC-4, 4.2.5.1).
pub fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 6,
    }
}

/// Copy `data`, truncated to the allocation length `alloc`, to the data-in
/// buffer. A buffer smaller than that is the virtio `OVERRUN` response (what
/// fits is still transferred, and `resid` says how much that was).
pub fn reply(data_in: &mut Writer<'_>, data: &[u8], alloc: usize) -> Outcome {
    let wanted = data.len().min(alloc);
    let n = wanted.min(data_in.available_bytes());
    match data_in.write_all(&data[..n]) {
        Ok(()) if n == wanted => Outcome::GOOD,
        _ => Outcome::overrun(),
    }
}

/// Where a READ/WRITE/VERIFY addresses: (lba, blocks, fua).
fn rw_params(cdb: &[u8]) -> (u64, u32, bool) {
    let fua = cdb.get(1).is_some_and(|b| b & 0x08 != 0);
    match cdb[0] {
        op::READ_6 | op::WRITE_6 => {
            let lba =
                (u64::from(cdb[1] & 0x1f) << 16) | (u64::from(cdb[2]) << 8) | u64::from(cdb[3]);
            let len = if cdb[4] == 0 { 256 } else { u32::from(cdb[4]) };
            (lba, len, false)
        }
        op::READ_10 | op::WRITE_10 | op::VERIFY_10 | op::WRITE_SAME_10 => (
            u64::from(be32(&cdb[2..6])),
            u32::from(be16(&cdb[7..9])),
            fua,
        ),
        op::READ_12 | op::WRITE_12 => (u64::from(be32(&cdb[2..6])), be32(&cdb[6..10]), fua),
        _ => (be64(&cdb[2..10]), be32(&cdb[10..14]), fua),
    }
}

/// Check that `lba..lba+blocks` is inside the LUN.
fn in_range(lun: &Lun, lba: u64, blocks: u32) -> Result<(), Outcome> {
    match lba.checked_add(u64::from(blocks)) {
        Some(end) if end <= lun.blocks() => Ok(()),
        _ => Err(Outcome::check(sense::LBA_OUT_OF_RANGE)),
    }
}

fn io_error(lun: &Lun, what: &str, e: &io::Error, sense: Sense) -> Outcome {
    log::error!("{}: {what} failed: {e}", lun.host.name());
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return Outcome::check(sense::SPACE_ALLOCATION_FAILED);
    }
    Outcome::check(sense)
}

/// Execute `cdb` on `lun`: every command but those [`plan`] takes.
pub fn execute(
    lun: &Lun,
    cdb: &[u8],
    data_out: &mut Reader<'_>,
    data_in: &mut Writer<'_>,
    scratch: &mut Vec<u8>,
) -> Outcome {
    if cdb.is_empty() || cdb.len() < cdb_len(cdb[0]) {
        return Outcome::check(sense::INVALID_FIELD);
    }
    match cdb[0] {
        op::TEST_UNIT_READY | op::START_STOP_UNIT | op::PREVENT_ALLOW_MEDIUM_REMOVAL => {
            Outcome::GOOD
        }
        op::REQUEST_SENSE => reply(data_in, &sense::NO_SENSE.fixed(), usize::from(cdb[4])),
        op::INQUIRY => inquiry(lun, cdb, data_in),
        op::MODE_SENSE_6 | op::MODE_SENSE_10 => mode_sense(lun, cdb, data_in),
        op::READ_CAPACITY_10 => {
            let last = u32::try_from(lun.blocks().saturating_sub(1)).unwrap_or(u32::MAX);
            let mut d = [0u8; 8];
            d[0..4].copy_from_slice(&last.to_be_bytes());
            d[4..8].copy_from_slice(&lun.block_size.to_be_bytes());
            reply(data_in, &d, 8)
        }
        op::SERVICE_ACTION_IN_16 if cdb[1] & 0x1f == op::SA_READ_CAPACITY_16 => {
            let mut d = [0u8; 32];
            d[0..8].copy_from_slice(&lun.blocks().saturating_sub(1).to_be_bytes());
            d[8..12].copy_from_slice(&lun.block_size.to_be_bytes());
            if lun.thin() {
                d[14] = 0x80 | 0x40; // LBPME, LBPRZ
            }
            reply(data_in, &d, be32(&cdb[10..14]) as usize)
        }
        op::VERIFY_10 | op::VERIFY_16 => verify(lun, cdb, data_out, scratch),
        op::WRITE_SAME_10 | op::WRITE_SAME_16 => write_same(lun, cdb, data_out, scratch),
        op::UNMAP => unmap(lun, cdb, data_out),
        op::REPORT_LUNS => Outcome::check(sense::INVALID_OPCODE), // answered by the target
        op::MAINTENANCE_IN if cdb[1] & 0x1f == op::SA_REPORT_SUPPORTED_OPCODES => {
            report_opcodes(cdb, data_in)
        }
        op::SERVICE_ACTION_IN_16 | op::MAINTENANCE_IN => Outcome::check(sense::INVALID_FIELD),
        _ => Outcome::check(sense::INVALID_OPCODE),
    }
}

/// What an I/O engine does for READ, WRITE and SYNCHRONIZE CACHE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Read the medium into the data-in buffer.
    Read,
    /// Write the data-out buffer to the medium, then flush if `fua`.
    Write {
        /// Force unit access: durable before completion.
        fua: bool,
    },
    /// Make every completed write durable.
    Flush,
}

impl IoOp {
    /// Whether a flush ends the operation.
    pub fn flushes(self) -> bool {
        matches!(self, IoOp::Flush | IoOp::Write { fua: true })
    }
}

/// One validated data transfer (or flush) of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    /// What to do.
    pub op: IoOp,
    /// Byte offset on the medium.
    pub offset: u64,
    /// Bytes to move (0 for a flush).
    pub len: usize,
}

/// READ, WRITE and SYNCHRONIZE CACHE, validated into the [`Io`] an engine
/// carries out (`Some(Ok)`) or refused (`Some(Err)`); `None` for every
/// other command, which [`execute`] runs. `data_out` and `data_in` are the
/// sizes of the data buffers.
pub fn plan(lun: &Lun, cdb: &[u8], data_out: usize, data_in: usize) -> Option<Result<Io, Outcome>> {
    let op = match *cdb.first()? {
        op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => IoOp::Read,
        op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => IoOp::Write { fua: false },
        op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => IoOp::Flush,
        _ => return None,
    };
    if cdb.len() < cdb_len(cdb[0]) {
        return Some(Err(Outcome::check(sense::INVALID_FIELD)));
    }
    Some((|| {
        if op == IoOp::Flush {
            if lun.write_back_failed.load(Ordering::Acquire) {
                return Err(Outcome::check(sense::WRITE_ERROR));
            }
            return Ok(Io {
                op,
                offset: 0,
                len: 0,
            });
        }
        if op != IoOp::Read && lun.read_only {
            return Err(Outcome::check(sense::WRITE_PROTECTED));
        }
        let (lba, blocks, fua) = rw_params(cdb);
        let bytes = check_transfer(lun, lba, blocks)?;
        let len = usize::try_from(bytes).map_err(|_| Outcome::check(sense::INVALID_FIELD))?;
        let available = if op == IoOp::Read { data_in } else { data_out };
        if available < len {
            return Err(Outcome::overrun());
        }
        Ok(Io {
            op: if op == IoOp::Read {
                op
            } else {
                IoOp::Write { fua }
            },
            offset: lba * u64::from(lun.block_size),
            len,
        })
    })())
}

/// The SCSI outcome of an [`Io`]: `transfer` is the result of the data
/// transfer, `flush` of the flush that ends it (`None`: not attempted
/// because an earlier flush failed, see [`Lun::write_back_failed`]).
pub fn io_outcome(
    lun: &Lun,
    io: &Io,
    transfer: io::Result<()>,
    flush: Option<io::Result<()>>,
) -> Outcome {
    if let Err(e) = transfer {
        return match io.op {
            IoOp::Read => io_error(lun, "read", &e, sense::READ_ERROR),
            _ => io_error(lun, "write", &e, sense::WRITE_ERROR),
        };
    }
    if !io.op.flushes() {
        return Outcome::GOOD;
    }
    match flush {
        Some(Ok(())) => Outcome::GOOD,
        Some(Err(e)) => {
            lun.write_back_failed.store(true, Ordering::Release);
            log::error!(
                "{}: written data may be lost; every later flush of this LUN fails until the daemon restarts",
                lun.host.name()
            );
            io_error(lun, "flush", &e, sense::WRITE_ERROR)
        }
        None => Outcome::check(sense::WRITE_ERROR),
    }
}

/// Whether a flush may still be attempted (none failed before).
pub fn may_flush(lun: &Lun) -> bool {
    !lun.write_back_failed.load(Ordering::Acquire)
}

/// Carry out `io` now, on this thread (the synchronous engine): `skip` is
/// where the data starts in the chain's data buffers.
pub fn run_sync(lun: &Lun, io: &Io, bufs: &ChainBuffers, skip: usize) -> Outcome {
    let transfer = match io.op {
        IoOp::Read => lun
            .host
            .read_into(bufs, skip, io.len, io.offset)
            .and_then(|()| bufs.mark_written(skip, io.len)),
        IoOp::Write { .. } => lun.host.write_from(bufs, skip, io.len, io.offset),
        IoOp::Flush => Ok(()),
    };
    let flush = (transfer.is_ok() && io.op.flushes() && may_flush(lun)).then(|| lun.host.flush());
    io_outcome(lun, io, transfer, flush)
}

/// Standard INQUIRY data for a LUN, or for an absent one (peripheral qualifier 3).
pub fn standard_inquiry(present: bool) -> [u8; 36] {
    let mut d = [0u8; 36];
    d[0] = if present { 0x00 } else { 0x7f };
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HISUP, response data format 2
    d[4] = 31;
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(b"VHOSTDEV");
    d[16..32].copy_from_slice(b"vhost-device-scs");
    d[32..36].copy_from_slice(b"0.1 ");
    d
}

fn inquiry(lun: &Lun, cdb: &[u8], data_in: &mut Writer<'_>) -> Outcome {
    let alloc = usize::from(be16(&cdb[3..5]));
    let evpd = cdb[1] & 1 != 0;
    if !evpd {
        if cdb[2] != 0 {
            return Outcome::check(sense::INVALID_FIELD);
        }
        return reply(data_in, &standard_inquiry(true), alloc);
    }
    let page = cdb[2];
    let mut d = vec![0u8, page, 0, 0];
    match page {
        0x00 => d.extend_from_slice(&[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]),
        0x80 => d.extend_from_slice(lun.serial.as_bytes()),
        0x83 => {
            // NAA designator (binary, logical unit, type 3 NAA), 8 bytes:
            // NAA 3, locally assigned (SPC-4, 7.8.6.6.3).
            d.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
            d.extend_from_slice(&lun.naa.to_be_bytes());
            // T10 vendor ID designator, ASCII.
            let mut t10 = b"VHOSTDEV".to_vec();
            t10.extend_from_slice(lun.serial.as_bytes());
            d.extend_from_slice(&[0x02, 0x01, 0x00, u8::try_from(t10.len()).unwrap_or(u8::MAX)]);
            d.extend_from_slice(&t10[..t10.len().min(255)]);
        }
        0xb0 => {
            let mut p = [0u8; 0x3c];
            p[4..8].copy_from_slice(&lun.max_transfer_blocks.to_be_bytes()); // MAXIMUM TRANSFER LENGTH
            p[8..12].copy_from_slice(&lun.max_transfer_blocks.to_be_bytes()); // OPTIMAL TRANSFER LENGTH
            if lun.thin() {
                p[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
                p[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
            }
            // MAXIMUM WRITE SAME LENGTH
            p[32..40].copy_from_slice(&u64::from(lun.max_write_same_blocks()).to_be_bytes());
            d.extend_from_slice(&p);
        }
        0xb1 => {
            let mut p = [0u8; 0x3c];
            let rate: u16 = if lun.rotational { 7200 } else { 1 };
            p[0..2].copy_from_slice(&rate.to_be_bytes());
            d.extend_from_slice(&p);
        }
        0xb2 => {
            let thin = lun.thin();
            let mut p = [0u8; 4];
            if thin {
                p[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ
                p[2] = 0x02; // thin provisioned
            }
            d.extend_from_slice(&p);
        }
        _ => return Outcome::check(sense::INVALID_FIELD),
    }
    let len = u16::try_from(d.len() - 4).unwrap_or(u16::MAX);
    d[2..4].copy_from_slice(&len.to_be_bytes());
    reply(data_in, &d, alloc)
}

fn mode_sense(lun: &Lun, cdb: &[u8], data_in: &mut Writer<'_>) -> Outcome {
    let six = cdb[0] == op::MODE_SENSE_6;
    let page = cdb[2] & 0x3f;
    let changeable = cdb[2] >> 6 == 1;
    let subpage = cdb[3];
    if subpage != 0 && !(page == 0x3f && subpage == 0xff) {
        return Outcome::check(sense::INVALID_FIELD);
    }
    let caching = {
        let mut p = vec![0x08, 0x12];
        p.extend_from_slice(&[0u8; 0x12]);
        if !changeable {
            p[2] = 0x04; // WCE: writes are acknowledged before they are durable
        }
        p
    };
    let control = {
        let mut p = vec![0x0a, 0x0a];
        p.extend_from_slice(&[0u8; 0x0a]);
        p
    };
    let mut pages = Vec::new();
    match page {
        0x08 => pages.extend_from_slice(&caching),
        0x0a => pages.extend_from_slice(&control),
        0x3f => {
            pages.extend_from_slice(&caching);
            pages.extend_from_slice(&control);
        }
        _ => return Outcome::check(sense::INVALID_FIELD),
    }
    let device_specific = if lun.read_only { 0x80 } else { 0 } | 0x10; // WP, DPOFUA
    let mut d = if six {
        vec![0u8, 0, device_specific, 0]
    } else {
        vec![0u8, 0, 0, device_specific, 0, 0, 0, 0]
    };
    d.extend_from_slice(&pages);
    let alloc = if six {
        usize::from(cdb[4])
    } else {
        usize::from(be16(&cdb[7..9]))
    };
    if six {
        d[0] = u8::try_from(d.len() - 1).unwrap_or(u8::MAX);
    } else {
        let len = u16::try_from(d.len() - 2).unwrap_or(u16::MAX);
        d[0..2].copy_from_slice(&len.to_be_bytes());
    }
    reply(data_in, &d, alloc)
}

fn check_transfer(lun: &Lun, lba: u64, blocks: u32) -> Result<u64, Outcome> {
    if blocks > lun.max_transfer_blocks {
        return Err(Outcome::check(sense::INVALID_FIELD));
    }
    in_range(lun, lba, blocks)?;
    Ok(u64::from(blocks) * u64::from(lun.block_size))
}

/// Move `bytes` of the medium from `offset` in pieces of at most [`CHUNK`]
/// through `scratch`, calling `step(piece, medium offset)` for each.
fn chunked(
    offset: u64,
    bytes: u64,
    scratch: &mut Vec<u8>,
    mut step: impl FnMut(&mut [u8], u64) -> Result<(), Outcome>,
) -> Outcome {
    let (mut offset, mut left) = (offset, bytes);
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        if scratch.len() < n {
            scratch.resize(n, 0);
        }
        if let Err(o) = step(&mut scratch[..n], offset) {
            return o;
        }
        offset += n as u64;
        left -= n as u64;
    }
    Outcome::GOOD
}

fn verify(lun: &Lun, cdb: &[u8], data_out: &mut Reader<'_>, scratch: &mut Vec<u8>) -> Outcome {
    let (lba, blocks, _) = rw_params(cdb);
    let bytes = match check_transfer(lun, lba, blocks) {
        Ok(b) => b,
        Err(o) => return o,
    };
    match (cdb[1] >> 1) & 0x03 {
        0 => Outcome::GOOD, // medium check only: the image is always readable
        1 => {
            if (data_out.available_bytes() as u64) < bytes {
                return Outcome::overrun();
            }
            let mut theirs = vec![0u8; CHUNK.min(usize::try_from(bytes).unwrap_or(CHUNK))];
            chunked(
                lba * u64::from(lun.block_size),
                bytes,
                scratch,
                |ours, off| {
                    let theirs = &mut theirs[..ours.len()];
                    data_out
                        .read_exact(theirs)
                        .map_err(|_| Outcome::overrun())?;
                    lun.host
                        .read_at(ours, off)
                        .map_err(|e| io_error(lun, "read", &e, sense::READ_ERROR))?;
                    if let Some(i) = ours.iter().zip(theirs.iter()).position(|(a, b)| a != b) {
                        // INFORMATION: offset in the data-out buffer of the
                        // first byte that differs (SBC-3, 5.29).
                        let at = off - lba * u64::from(lun.block_size) + i as u64;
                        return Err(Outcome::check(
                            sense::MISCOMPARE
                                .with_information(u32::try_from(at).unwrap_or(u32::MAX)),
                        ));
                    }
                    Ok(())
                },
            )
        }
        _ => Outcome::check(sense::INVALID_FIELD),
    }
}

fn write_same(lun: &Lun, cdb: &[u8], data_out: &mut Reader<'_>, scratch: &mut Vec<u8>) -> Outcome {
    if lun.read_only {
        return Outcome::check(sense::WRITE_PROTECTED);
    }
    let unmap = cdb[1] & 0x08 != 0;
    let ndob = cdb[0] == op::WRITE_SAME_16 && cdb[1] & 0x01 != 0;
    let (lba, blocks, _) = rw_params(cdb);
    // A zero length means "to the end of the medium" (SBC-3, 5.42).
    let blocks = if blocks == 0 {
        u32::try_from(lun.blocks().saturating_sub(lba)).unwrap_or(u32::MAX)
    } else {
        blocks
    };
    if blocks > lun.max_write_same_blocks() {
        return Outcome::check(sense::INVALID_FIELD);
    }
    if let Err(o) = in_range(lun, lba, blocks) {
        return o;
    }
    let bs = lun.block_size as usize;
    let mut block = vec![0u8; bs];
    if !ndob && data_out.read_exact(&mut block).is_err() {
        return Outcome::overrun();
    }
    let offset = lba * u64::from(lun.block_size);
    let len = u64::from(blocks) * u64::from(lun.block_size);
    if unmap && lun.thin() && block.iter().all(|&b| b == 0) {
        match lun.host.discard(offset, len) {
            Ok(()) => return Outcome::GOOD,
            // The data must read back as zeros all the same: write them
            // (bounded by MAXIMUM WRITE SAME LENGTH).
            Err(e) => log::warn!(
                "{}: cannot punch a hole ({e}); writing zeros instead",
                lun.host.name()
            ),
        }
    }
    let per = (CHUNK / bs).max(1);
    if scratch.len() < per * bs {
        scratch.resize(per * bs, 0);
    }
    for chunk in scratch[..per * bs].chunks_mut(bs) {
        chunk.copy_from_slice(&block);
    }
    let mut done = 0u64;
    while done < u64::from(blocks) {
        let n = usize::try_from(u64::from(blocks) - done)
            .unwrap_or(per)
            .min(per);
        if let Err(e) = lun
            .host
            .write_at(&scratch[..n * bs], offset + done * bs as u64)
        {
            return io_error(lun, "write", &e, sense::WRITE_ERROR);
        }
        done += n as u64;
    }
    Outcome::GOOD
}

/// UNMAP (SBC-3, 5.28): only on thin LUNs (VPD 0xB2 LBPU), within the
/// limits of VPD 0xB0; every descriptor is checked before any is applied.
fn unmap(lun: &Lun, cdb: &[u8], data_out: &mut Reader<'_>) -> Outcome {
    if lun.read_only {
        return Outcome::check(sense::WRITE_PROTECTED);
    }
    if !lun.thin() {
        return Outcome::check(sense::INVALID_OPCODE);
    }
    let param_len = usize::from(be16(&cdb[7..9]));
    if param_len == 0 {
        return Outcome::GOOD;
    }
    if param_len < 8 {
        return Outcome::check(sense::PARAMETER_LIST_LENGTH);
    }
    if data_out.available_bytes() < param_len {
        // The driver's data-out buffer is shorter than the CDB says.
        return Outcome::overrun();
    }
    // At most 64 KiB (a 16-bit length).
    let mut params = vec![0u8; param_len];
    if data_out.read_exact(&mut params).is_err() {
        return Outcome::overrun();
    }
    // An incomplete last descriptor, in the descriptor data length or cut off
    // by the parameter list length, is ignored (SBC-3, 5.28.2).
    let desc_len = usize::from(be16(&params[2..4])).min(params.len() - 8) / 16 * 16;
    if desc_len / 16 > MAX_UNMAP_DESCRIPTORS as usize {
        return Outcome::check(sense::INVALID_PARAMETER);
    }
    let descs = || {
        params[8..8 + desc_len]
            .chunks_exact(16)
            .map(|d| (be64(&d[0..8]), be32(&d[8..12])))
    };
    let total: u64 = descs().map(|(_, blocks)| u64::from(blocks)).sum();
    if total > u64::from(MAX_UNMAP_BLOCKS) {
        return Outcome::check(sense::INVALID_PARAMETER);
    }
    // Validate every descriptor before touching the medium.
    for (lba, blocks) in descs() {
        if let Err(o) = in_range(lun, lba, blocks) {
            return o;
        }
    }
    let bs = u64::from(lun.block_size);
    for (lba, blocks) in descs().filter(|&(_, blocks)| blocks > 0) {
        if let Err(e) = lun.host.discard(lba * bs, u64::from(blocks) * bs) {
            return io_error(lun, "discard", &e, sense::WRITE_ERROR);
        }
    }
    Outcome::GOOD
}

/// The command timeouts descriptor (SPC-4, 6.35.4): no nominal time, the
/// recommended timeout.
fn timeouts_descriptor() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[0..2].copy_from_slice(&10u16.to_be_bytes());
    t[8..12].copy_from_slice(&RECOMMENDED_TIMEOUT_S.to_be_bytes());
    t
}

/// REPORT SUPPORTED OPERATION CODES (SPC-4, 6.35).
fn report_opcodes(cdb: &[u8], data_in: &mut Writer<'_>) -> Outcome {
    let alloc = be32(&cdb[6..10]) as usize;
    let rctd = cdb[2] & 0x80 != 0;
    let (requested_op, requested_sa) = (cdb[3], be16(&cdb[4..6]));
    let option = cdb[2] & 0x07;
    if option == 0 {
        let mut d = vec![0u8; 4];
        for c in SUPPORTED {
            let mut e = [0u8; 8];
            e[0] = c.opcode;
            if let Some(sa) = c.service_action {
                e[3] = sa;
                e[5] |= 0x01; // SERVACTV
            }
            if rctd {
                e[5] |= 0x02; // CTDP
            }
            e[6..8].copy_from_slice(&u16::try_from(c.usage.len()).unwrap_or(0).to_be_bytes());
            d.extend_from_slice(&e);
            if rctd {
                d.extend_from_slice(&timeouts_descriptor());
            }
        }
        let len = u32::try_from(d.len() - 4).unwrap_or(u32::MAX);
        d[0..4].copy_from_slice(&len.to_be_bytes());
        return reply(data_in, &d, alloc);
    }
    if option > 3 {
        return Outcome::check(sense::INVALID_FIELD);
    }
    // Whether the requested operation code has service actions here.
    let has_sa = SUPPORTED
        .iter()
        .any(|c| c.opcode == requested_op && c.service_action.is_some());
    let known = SUPPORTED.iter().any(|c| c.opcode == requested_op);
    let found = match option {
        // One operation code that must not have service actions.
        1 if has_sa => return Outcome::check(sense::INVALID_FIELD),
        1 => SUPPORTED.iter().find(|c| c.opcode == requested_op),
        // Operation code and service action: a code this target knows must
        // have them (an unknown one is reported as not supported).
        2 if known && !has_sa => return Outcome::check(sense::INVALID_FIELD),
        // Option 3: the service action counts only for codes that have them.
        _ => SUPPORTED.iter().find(|c| {
            c.opcode == requested_op
                && (!has_sa || c.service_action.map(u16::from) == Some(requested_sa))
        }),
    };
    let mut d = vec![0u8; 4];
    match found {
        Some(c) => {
            d[1] = 0x03; // supported, conforming to the standard
            if rctd {
                d[1] |= 0x80; // CTDP
            }
            d[2..4].copy_from_slice(&u16::try_from(c.usage.len()).unwrap_or(0).to_be_bytes());
            d.extend_from_slice(c.usage);
            if rctd {
                d.extend_from_slice(&timeouts_descriptor());
            }
        }
        None => d[1] = 0x01, // not supported
    }
    reply(data_in, &d, alloc)
}
