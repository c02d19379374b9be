// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-scsi requests (virtio 1.3, 5.6.6): command requests on the request
//! queues and task-management / asynchronous-notification requests on the
//! control queue. The SCSI commands themselves are in [`cdb`].
//!
//! Pure: sees a [`Reader`] and a [`Writer`], never a vring.

pub mod cdb;
pub mod sense;

use std::io::{self, Read, Write};

use thiserror::Error;
use vhost_device_common::queue::{Reader, Writer};
use vhost_device_common::vm_memory::ByteValued;

use crate::virtio::{
    ctrl, decode_lun, response, CmdReqHeader, CmdRespHeader, CtrlAnResp, CDB_SIZE, SENSE_SIZE,
};
use cdb::{Lun, Outcome};

/// The one target and its LUNs.
#[derive(Debug)]
pub struct Target {
    /// LUNs, numbered from 0.
    pub luns: Vec<Lun>,
}

impl Target {
    /// Take every LUN's image lock (the request rings start).
    pub fn acquire_all(&self) {
        for lun in &self.luns {
            lun.acquire();
        }
    }

    /// Drop every LUN's image lock (the request rings stopped).
    pub fn release_all(&self) {
        for lun in &self.luns {
            lun.release();
        }
    }
}

/// CDB and sense sizes currently in force (driver-writable config fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// `cdb_size`.
    pub cdb: usize,
    /// `sense_size`.
    pub sense: usize,
}

/// A malformed request (always a guest error).
#[derive(Debug, Error)]
pub enum Error {
    /// The device-readable part is shorter than the header and CDB.
    #[error("request shorter than its header")]
    ShortRequest(#[source] io::Error),
    /// The device-writable part cannot hold the response header and sense.
    #[error("response buffer of {0} bytes is too small")]
    ShortResponse(usize),
    /// Writing the response failed.
    #[error("cannot write the response")]
    WriteResponse(#[source] io::Error),
    /// Unknown control request type.
    #[error("unknown control request type {0}")]
    UnknownControl(u32),
}

/// REPORT LUNS (SPC-4, 6.33): every LUN, in single-level peripheral or flat format.
fn report_luns(target: &Target, cdb: &[u8], data_in: &mut Writer<'_>) -> Outcome {
    if cdb.len() < 12 {
        return Outcome::check(sense::INVALID_FIELD);
    }
    let alloc = u32::from_be_bytes([cdb[6], cdb[7], cdb[8], cdb[9]]) as usize;
    if alloc < 16 {
        return Outcome::check(sense::INVALID_FIELD);
    }
    let mut d = vec![0u8; 8];
    for i in 0..target.luns.len() {
        let mut e = [0u8; 8];
        match u8::try_from(i) {
            Ok(small) => e[1] = small,
            Err(_) => {
                let i = u16::try_from(i).unwrap_or(0x3fff) & 0x3fff;
                e[0..2].copy_from_slice(&(0x4000 | i).to_be_bytes());
            }
        }
        d.extend_from_slice(&e);
    }
    let len = u32::try_from(d.len() - 8).unwrap_or(u32::MAX);
    d[0..4].copy_from_slice(&len.to_be_bytes());
    let n = d.len().min(alloc).min(data_in.available_bytes());
    match data_in.write_all(&d[..n]) {
        Ok(()) => Outcome::GOOD,
        Err(_) => Outcome::check(sense::INVALID_FIELD),
    }
}

/// A command to a LUN number that has no unit behind it (SPC-4, 6.6.2: INQUIRY
/// answers with peripheral qualifier 3).
fn absent_lun(cdb: &[u8], data_in: &mut Writer<'_>) -> Outcome {
    let write = |d: &[u8], alloc: usize, w: &mut Writer<'_>| {
        let n = d.len().min(alloc).min(w.available_bytes());
        let _ = w.write_all(&d[..n]);
        Outcome::GOOD
    };
    match cdb.first() {
        Some(&cdb::op::INQUIRY) if cdb.len() >= 6 => write(
            &cdb::standard_inquiry(false),
            usize::from(u16::from_be_bytes([cdb[3], cdb[4]])),
            data_in,
        ),
        Some(&cdb::op::REQUEST_SENSE) if cdb.len() >= 6 => write(
            &sense::LUN_NOT_SUPPORTED.fixed(),
            usize::from(cdb[4]),
            data_in,
        ),
        _ => Outcome::check(sense::LUN_NOT_SUPPORTED),
    }
}

/// Read a command request's header (addressing and tag).
pub fn command_header(reader: &mut Reader<'_>) -> Result<CmdReqHeader, Error> {
    reader.read_obj().map_err(Error::ShortRequest)
}

/// A command request after [`command`].
#[derive(Debug)]
pub enum Command {
    /// Answered: the used length.
    Done(u32),
    /// A data transfer or flush for an I/O engine; answer it with
    /// [`finish`] once it is done.
    Io(PendingIo),
}

/// A command waiting for its [`cdb::Io`].
#[derive(Debug, Clone, Copy)]
pub struct PendingIo {
    /// Index of the LUN.
    pub lun: usize,
    /// What to do.
    pub io: cdb::Io,
    /// Where the data starts in the chain's readable part (a write) or
    /// writable part (a read).
    pub skip: usize,
    in_len: usize,
    out_len: usize,
    sense: usize,
}

/// Write the response header and sense area; returns the bytes written.
fn respond(
    writer: &mut Writer<'_>,
    sense_size: usize,
    outcome: Outcome,
    response: u8,
    resid: usize,
) -> Result<usize, Error> {
    let sense_bytes = outcome.sense.map(|s| s.fixed()).unwrap_or_default();
    let sense_len = if outcome.sense.is_some() {
        sense_bytes.len().min(sense_size)
    } else {
        0
    };
    let header = CmdRespHeader {
        sense_len: u32::try_from(sense_len).unwrap_or(0).into(),
        resid: u32::try_from(resid).unwrap_or(u32::MAX).into(),
        status_qualifier: 0.into(),
        status: outcome.status,
        response: if outcome.overrun {
            response::OVERRUN
        } else {
            response
        },
    };
    writer.write_obj(header).map_err(Error::WriteResponse)?;
    let mut sense_area = [0u8; SENSE_SIZE as usize];
    sense_area[..sense_len].copy_from_slice(&sense_bytes[..sense_len]);
    writer
        .write_all(&sense_area[..sense_size.min(SENSE_SIZE as usize)])
        .map_err(Error::WriteResponse)?;
    Ok(writer.bytes_written())
}

/// Serve one command request whose header was read with
/// [`command_header`]: answered now, or handed back as I/O to carry out.
pub fn command(
    target: &Target,
    sizes: Sizes,
    hdr: &CmdReqHeader,
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
    scratch: &mut Vec<u8>,
) -> Result<Command, Error> {
    let mut cdb_buf = [0u8; CDB_SIZE as usize];
    let cdb = &mut cdb_buf[..sizes.cdb.min(CDB_SIZE as usize)];
    reader.read_exact(cdb).map_err(Error::ShortRequest)?;
    let cdb = &*cdb;
    let resp_len = CmdRespHeader::default().as_slice().len() + sizes.sense;
    if writer.available_bytes() < resp_len {
        return Err(Error::ShortResponse(writer.available_bytes()));
    }
    let mut data_in = writer
        .split_at(resp_len)
        .map_err(|e| Error::WriteResponse(io::Error::other(e)))?;
    let (in_len, out_len) = (data_in.available_bytes(), reader.available_bytes());

    let (resp, outcome) = match decode_lun(&hdr.lun) {
        Some((0, lun)) => {
            let index = usize::from(lun);
            let outcome = match target.luns.get(index) {
                _ if cdb[0] == cdb::op::REPORT_LUNS => report_luns(target, cdb, &mut data_in),
                // Only identification works while another process holds
                // the image (see `Lun::acquire`).
                Some(unit)
                    if !matches!(cdb[0], cdb::op::INQUIRY | cdb::op::REQUEST_SENSE)
                        && !unit.acquire() =>
                {
                    Outcome::check(sense::NOT_READY)
                }
                Some(unit) => match cdb::plan(unit, cdb, out_len, in_len) {
                    Some(Ok(io)) => {
                        return Ok(Command::Io(PendingIo {
                            lun: index,
                            io,
                            skip: if io.op == cdb::IoOp::Read {
                                resp_len
                            } else {
                                reader.bytes_read()
                            },
                            in_len,
                            out_len,
                            sense: sizes.sense,
                        }))
                    }
                    Some(Err(outcome)) => outcome,
                    None => cdb::execute(unit, cdb, reader, &mut data_in, scratch),
                },
                None => absent_lun(cdb, &mut data_in),
            };
            (response::OK, outcome)
        }
        _ => (response::BAD_TARGET, Outcome::GOOD),
    };
    let written = data_in.bytes_written();
    let resid = if in_len > 0 {
        in_len - written
    } else {
        reader.available_bytes()
    };
    let n = respond(writer, sizes.sense, outcome, resp, resid)?;
    Ok(Command::Done(
        u32::try_from(n + written).unwrap_or(u32::MAX),
    ))
}

/// Answer a [`PendingIo`] with the `outcome` of its I/O; `writer` is the
/// chain's writable part from its start. Returns the used length.
pub fn finish(p: &PendingIo, outcome: Outcome, writer: &mut Writer<'_>) -> Result<u32, Error> {
    let moved = if outcome.status == sense::GOOD {
        p.io.len
    } else {
        0
    };
    let read = if p.io.op == cdb::IoOp::Read { moved } else { 0 };
    let resid = if p.in_len > 0 {
        p.in_len - read
    } else {
        p.out_len - if p.io.op == cdb::IoOp::Read { 0 } else { moved }
    };
    let n = respond(writer, p.sense, outcome, response::OK, resid)?;
    Ok(u32::try_from(n + read).unwrap_or(u32::MAX))
}

/// Serve a command with the synchronous engine: the I/O runs now, straight
/// between the image and the guest buffers `bufs` of the chain.
pub fn command_sync(
    target: &Target,
    sizes: Sizes,
    hdr: &CmdReqHeader,
    chain: &mut vhost_device_common::queue::Chain<'_>,
    bufs: &mut vhost_device_common::queue::ChainBuffers,
    scratch: &mut Vec<u8>,
) -> Result<u32, Error> {
    match command(
        target,
        sizes,
        hdr,
        &mut chain.reader,
        &mut chain.writer,
        scratch,
    )? {
        Command::Done(n) => Ok(n),
        Command::Io(p) => {
            let outcome = match (target.luns.get(p.lun), chain.buffers(bufs)) {
                (Some(lun), Ok(())) => cdb::run_sync(lun, &p.io, bufs, p.skip),
                _ => Outcome::check(sense::READ_ERROR),
            };
            bufs.clear();
            finish(&p, outcome, &mut chain.writer)
        }
    }
}

fn read_u32(reader: &mut Reader<'_>) -> Result<u32, Error> {
    let mut b = [0u8; 4];
    reader.read_exact(&mut b).map_err(Error::ShortRequest)?;
    Ok(u32::from_le_bytes(b))
}

/// The commands a task management function covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The command with this tag on this LUN.
    Task {
        /// LUN.
        lun: u16,
        /// Tag of the command.
        tag: u64,
    },
    /// Every command of this LUN.
    Lun(u16),
    /// Every command of the target.
    Nexus,
}

impl Scope {
    /// Whether a command `(lun, tag)` is covered.
    pub fn covers(&self, lun: u16, tag: u64) -> bool {
        match *self {
            Scope::Task { lun: l, tag: t } => l == lun && t == tag,
            Scope::Lun(l) => l == lun,
            Scope::Nexus => true,
        }
    }
}

/// What a task management function asks of the device (virtio 1.3,
/// 5.6.6.2; the driver relies on "all requests related to the TMF have been
/// completed" when it is answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfAction {
    /// Answer at once with this response code.
    Answer(u8),
    /// Answer FUNCTION COMPLETE once every command in scope that is in
    /// flight (taken off its ring) has completed.
    WaitFor(Scope),
    /// Answer FUNCTION SUCCEEDED if a command in scope is in flight, else
    /// FUNCTION COMPLETE.
    Query(Scope),
}

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// A task management function: the device answers it (one response byte).
    Tmf(TmfAction),
    /// Answered already: the used length.
    Answered(u32),
}

fn read_u64(reader: &mut Reader<'_>) -> Result<u64, Error> {
    let mut b = [0u8; 8];
    reader.read_exact(&mut b).map_err(Error::ShortRequest)?;
    Ok(u64::from_le_bytes(b))
}

/// Serve one control request: asynchronous-notification requests are
/// answered here; task management is returned to the device, which knows
/// what is in flight.
pub fn control(
    target: &Target,
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
) -> Result<Control, Error> {
    let kind = read_u32(reader)?;
    match kind {
        ctrl::T_TMF => {
            let subtype = read_u32(reader)?;
            let mut lun = [0u8; 8];
            reader.read_exact(&mut lun).map_err(Error::ShortRequest)?;
            let tag = read_u64(reader)?;
            if writer.available_bytes() < 1 {
                return Err(Error::ShortResponse(writer.available_bytes()));
            }
            let action = match decode_lun(&lun) {
                Some((0, l)) if usize::from(l) < target.luns.len() => match subtype {
                    ctrl::TMF_ABORT_TASK => TmfAction::WaitFor(Scope::Task { lun: l, tag }),
                    ctrl::TMF_ABORT_TASK_SET
                    | ctrl::TMF_CLEAR_TASK_SET
                    | ctrl::TMF_LOGICAL_UNIT_RESET => TmfAction::WaitFor(Scope::Lun(l)),
                    ctrl::TMF_I_T_NEXUS_RESET => TmfAction::WaitFor(Scope::Nexus),
                    ctrl::TMF_QUERY_TASK => TmfAction::Query(Scope::Task { lun: l, tag }),
                    ctrl::TMF_QUERY_TASK_SET => TmfAction::Query(Scope::Lun(l)),
                    _ => TmfAction::Answer(response::FUNCTION_REJECTED),
                },
                Some((0, _)) => TmfAction::Answer(response::INCORRECT_LUN),
                _ => TmfAction::Answer(response::BAD_TARGET),
            };
            Ok(Control::Tmf(action))
        }
        ctrl::T_AN_QUERY | ctrl::T_AN_SUBSCRIBE => {
            let mut lun = [0u8; 8];
            reader.read_exact(&mut lun).map_err(Error::ShortRequest)?;
            let _requested = read_u32(reader)?;
            let code = match decode_lun(&lun) {
                Some((0, _)) => response::OK,
                _ => response::BAD_TARGET,
            };
            // No asynchronous events are supported: event_actual is 0.
            let resp = CtrlAnResp {
                event_actual: 0.into(),
                response: code,
            };
            writer.write_obj(resp).map_err(Error::WriteResponse)?;
            Ok(Control::Answered(
                u32::try_from(writer.bytes_written()).unwrap_or(u32::MAX),
            ))
        }
        other => Err(Error::UnknownControl(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MemBlock;
    use vhost_device_common::queue::{drain, drain_chains, ChainBuffers, Completion};
    use vhost_device_common::testing::{TestQueue, BUFFERS};

    const RESP: u64 = BUFFERS + 0x10_0000;
    const DATA: u64 = BUFFERS + 0x20_0000;
    const SIZES: Sizes = Sizes { cdb: 32, sense: 96 };

    fn target_with(host: MemBlock, block_size: u32) -> Target {
        Target {
            luns: vec![Lun {
                host: Box::new(host),
                block_size,
                read_only: false,
                rotational: false,
                serial: "SERIAL1".into(),
                naa: crate::device::naa_locally_assigned(1),
                max_transfer_blocks: 300,
                write_back_failed: Default::default(),
                lock: Default::default(),
            }],
        }
    }

    fn target() -> Target {
        target_with(MemBlock::new(1 << 20), 512)
    }

    struct Done {
        used: u32,
        resid: u32,
        status: u8,
        response: u8,
        sense: Vec<u8>,
        data: Vec<u8>,
    }

    fn run(target: &Target, cdb: &[u8], out: &[u8], in_len: u32) -> Done {
        let mut q = TestQueue::new(16, false).unwrap();
        let mut req = vec![1, 0, 0x40, 0, 0, 0, 0, 0];
        req.extend_from_slice(&[0; 11]);
        let mut c = [0u8; 32];
        c[..cdb.len()].copy_from_slice(cdb);
        req.extend_from_slice(&c);
        req.extend_from_slice(out);
        q.write_bytes(BUFFERS, &req).unwrap();
        let mut bufs = vec![
            (BUFFERS, u32::try_from(req.len()).unwrap(), false),
            (RESP, 108, true),
        ];
        if in_len > 0 {
            bufs.push((DATA, in_len, true));
        }
        q.add(&bufs).unwrap();
        let mut scratch = Vec::new();
        let mut bufs = ChainBuffers::default();
        drain_chains(&q.context(), 0, &q.vring, |chain| {
            let hdr = command_header(&mut chain.reader)?;
            Ok(Completion::Used(command_sync(
                target,
                SIZES,
                &hdr,
                chain,
                &mut bufs,
                &mut scratch,
            )?))
        })
        .unwrap();
        let resp = q.read(RESP, 108).unwrap();
        Done {
            used: q.used().unwrap()[0].1,
            resid: u32::from_le_bytes([resp[4], resp[5], resp[6], resp[7]]),
            status: resp[10],
            response: resp[11],
            sense: resp[12..30].to_vec(),
            data: q.read(DATA, in_len as usize).unwrap(),
        }
    }

    fn key_asc(d: &Done) -> (u8, u8) {
        (d.sense[2], d.sense[12])
    }

    #[test]
    fn vpd_page_list_names_every_page() {
        let d = run(&target(), &[0x12, 1, 0x00, 0, 64, 0], &[], 64);
        assert_eq!((d.response, d.status), (response::OK, 0));
        assert_eq!(&d.data[4..10], &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    }

    #[test]
    fn block_limits_page_reports_the_transfer_limit() {
        let d = run(&target(), &[0x12, 1, 0xb0, 0, 64, 0], &[], 64);
        assert_eq!(u32::from_be_bytes(d.data[8..12].try_into().unwrap()), 300);
    }

    #[test]
    fn unit_serial_page_has_the_serial() {
        let d = run(&target(), &[0x12, 1, 0x80, 0, 64, 0], &[], 64);
        assert_eq!(&d.data[4..11], b"SERIAL1");
    }

    #[test]
    fn unknown_vpd_page_is_an_invalid_field() {
        let d = run(&target(), &[0x12, 1, 0x42, 0, 64, 0], &[], 64);
        assert_eq!(key_asc(&d), (0x05, 0x24));
    }

    #[test]
    fn inquiry_residual_counts_bytes_not_transferred() {
        let d = run(&target(), &[0x12, 0, 0, 0, 255, 0], &[], 255);
        assert_eq!(d.resid, 255 - 36);
        assert_eq!(d.used, 108 + 36);
    }

    #[test]
    fn caching_mode_page_reports_write_cache_enabled() {
        let d = run(&target(), &[0x5a, 0, 0x08, 0, 0, 0, 0, 0, 64, 0], &[], 64);
        assert_eq!(d.status, 0);
        assert_eq!(d.data[8], 0x08, "page code");
        assert_eq!(d.data[10] & 0x04, 0x04, "WCE");
        assert_eq!(d.data[3] & 0x80, 0, "not write protected");
    }

    #[test]
    fn transfer_beyond_the_limit_is_an_invalid_field() {
        let d = run(
            &target(),
            &[0x28, 0, 0, 0, 0, 0, 0, 0x01, 0x90, 0],
            &[],
            400 * 512,
        );
        assert_eq!(key_asc(&d), (0x05, 0x24));
    }

    #[test]
    fn write_6_with_length_zero_writes_256_blocks() {
        let t = target();
        let d = run(&t, &[0x0a, 0, 0, 0, 0, 0], &vec![7u8; 256 * 512], 0);
        assert_eq!(d.status, 0);
        let back = run(&t, &[0x28, 0, 0, 0, 0, 255, 0, 0, 1, 0], &[], 512);
        assert_eq!(back.data, vec![7u8; 512]);
    }

    #[test]
    fn write_same_repeats_the_block() {
        let t = target();
        let d = run(&t, &[0x41, 0, 0, 0, 0, 10, 0, 0, 4, 0], &[9u8; 512], 0);
        assert_eq!(d.status, 0);
        let back = run(&t, &[0x28, 0, 0, 0, 0, 10, 0, 0, 4, 0], &[], 2048);
        assert_eq!(back.data, vec![9u8; 2048]);
    }

    #[test]
    fn write_same_with_unmap_zeroes_the_range() {
        let t = target();
        run(&t, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0], &[5u8; 4096], 0);
        let d = run(
            &t,
            &[0x93, 0x08 | 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0],
            &[],
            0,
        );
        assert_eq!(d.status, 0);
        let back = run(&t, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], &[], 4096);
        assert!(back.data.iter().all(|&b| b == 0));
    }

    #[test]
    fn verify_with_bytchk_detects_a_miscompare() {
        let t = target();
        run(&t, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[3u8; 512], 0);
        let same = run(&t, &[0x2f, 0x02, 0, 0, 0, 0, 0, 0, 1, 0], &[3u8; 512], 0);
        let differs = run(&t, &[0x2f, 0x02, 0, 0, 0, 0, 0, 0, 1, 0], &[4u8; 512], 0);
        assert_eq!(same.status, 0);
        assert_eq!(key_asc(&differs), (0x0e, 0x1d));
    }

    #[test]
    fn supported_opcode_query_answers_for_one_command() {
        let read16 = run(
            &target(),
            &[0xa3, 0x0c, 0x01, 0x88, 0, 0, 0, 0, 0, 64, 0, 0],
            &[],
            64,
        );
        let vendor = run(
            &target(),
            &[0xa3, 0x0c, 0x01, 0xc7, 0, 0, 0, 0, 0, 64, 0, 0],
            &[],
            64,
        );
        assert_eq!(read16.data[1] & 0x07, 0x03);
        assert_eq!(u16::from_be_bytes([read16.data[2], read16.data[3]]), 16);
        assert_eq!(vendor.data[1] & 0x07, 0x01);
    }

    #[test]
    fn all_supported_opcodes_are_listed() {
        let d = run(
            &target(),
            &[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0],
            &[],
            1024,
        );
        let len = u32::from_be_bytes(d.data[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, 8 * cdb::SUPPORTED.len());
    }

    fn rsoc(option: u8, opcode: u8, sa: u16) -> Done {
        let [sa_hi, sa_lo] = sa.to_be_bytes();
        run(
            &target(),
            &[0xa3, 0x0c, option, opcode, sa_hi, sa_lo, 0, 0, 4, 0, 0, 0],
            &[],
            1024,
        )
    }

    #[test]
    fn rsoc_option_1_for_a_command_with_service_actions_is_an_invalid_field() {
        let d = rsoc(1, 0x9e, 0);
        assert_eq!(key_asc(&d), (0x05, 0x24));
    }

    #[test]
    fn rsoc_option_2_for_a_command_without_service_actions_is_an_invalid_field() {
        let d = rsoc(2, 0x28, 0);
        assert_eq!(key_asc(&d), (0x05, 0x24));
    }

    #[test]
    fn rsoc_option_3_ignores_the_service_action_of_a_plain_command() {
        let read10 = rsoc(3, 0x28, 0x1234);
        let capacity16 = rsoc(3, 0x9e, 0x10);
        let other_sa = rsoc(3, 0x9e, 0x11);
        assert_eq!(read10.status, 0);
        assert_eq!(read10.data[1] & 0x07, 0x03);
        assert_eq!(capacity16.data[1] & 0x07, 0x03);
        assert_eq!(other_sa.data[1] & 0x07, 0x01, "READ CAPACITY SA 0x11");
    }

    #[test]
    fn rsoc_usage_map_shows_only_the_bits_the_target_evaluates() {
        let d = rsoc(1, 0x2a, 0);
        assert_eq!(
            &d.data[4..14],
            &[0x2a, 0x08, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0],
            "WRITE(10): FUA, LBA and length only"
        );
    }

    #[test]
    fn rsoc_rctd_appends_timeout_descriptors() {
        let one = rsoc(0x80 | 1, 0x28, 0);
        let all = rsoc(0x80, 0, 0);
        assert_eq!(one.data[1], 0x80 | 0x03, "CTDP");
        assert_eq!(&one.data[14..16], &[0, 10], "timeouts descriptor length");
        let len = u32::from_be_bytes(all.data[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, 20 * cdb::SUPPORTED.len());
        assert_eq!(all.data[4 + 5] & 0x02, 0x02, "CTDP of the first descriptor");
    }

    #[test]
    fn rsoc_reserved_reporting_option_is_an_invalid_field() {
        assert_eq!(key_asc(&rsoc(5, 0x28, 0)), (0x05, 0x24));
    }

    #[test]
    fn device_identification_is_an_8_byte_naa_3_designator() {
        let d = run(&target(), &[0x12, 1, 0x83, 0, 64, 0], &[], 64);
        assert_eq!(&d.data[4..8], &[0x01, 0x03, 0x00, 0x08]);
        assert_eq!(d.data[8] >> 4, 3, "NAA 3 (locally assigned)");
    }

    #[test]
    fn data_in_buffer_smaller_than_the_allocation_length_is_an_overrun() {
        let d = run(&target(), &[0x12, 0, 0, 0, 96, 0], &[], 20);
        assert_eq!(d.response, response::OVERRUN);
        assert_eq!(d.resid, 0, "the 20 bytes that fit are transferred");
    }

    #[test]
    fn verify_miscompare_reports_the_offset_of_the_first_difference() {
        let t = target();
        run(&t, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[3u8; 1024], 0);
        let mut theirs = vec![3u8; 1024];
        theirs[700] = 4;
        let d = run(&t, &[0x2f, 0x02, 0, 0, 0, 0, 0, 0, 2, 0], &theirs, 0);
        assert_eq!(key_asc(&d), (0x0e, 0x1d));
        assert_eq!(d.sense[0] & 0x80, 0x80, "VALID");
        assert_eq!(u32::from_be_bytes(d.sense[3..7].try_into().unwrap()), 700);
    }

    fn unmap_params(descs: &[(u64, u32)], extra: &[u8]) -> Vec<u8> {
        let desc_len = 16 * descs.len() + extra.len();
        let mut p = Vec::new();
        p.extend_from_slice(&u16::try_from(desc_len + 6).unwrap().to_be_bytes());
        p.extend_from_slice(&u16::try_from(desc_len).unwrap().to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        for &(lba, n) in descs {
            p.extend_from_slice(&lba.to_be_bytes());
            p.extend_from_slice(&n.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
        }
        p.extend_from_slice(extra);
        p
    }

    fn unmap_cdb(param_len: usize) -> [u8; 10] {
        let [hi, lo] = u16::try_from(param_len).unwrap().to_be_bytes();
        [0x42, 0, 0, 0, 0, 0, 0, hi, lo, 0]
    }

    #[test]
    fn unmap_ignores_an_incomplete_last_descriptor() {
        let t = target();
        run(&t, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[6u8; 512], 0);
        let params = unmap_params(&[(0, 1)], &[0; 8]);
        let d = run(&t, &unmap_cdb(params.len()), &params, 0);
        assert_eq!((d.response, d.status), (response::OK, 0));
        let back = run(&t, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 512);
        assert_eq!(back.data, vec![0u8; 512]);
    }

    #[test]
    fn unmap_beyond_the_maximum_unmap_lba_count_is_refused() {
        let params = unmap_params(&[(0, cdb::MAX_UNMAP_BLOCKS), (0, 1)], &[]);
        let d = run(&target(), &unmap_cdb(params.len()), &params, 0);
        assert_eq!(key_asc(&d), (0x05, 0x26));
    }

    #[test]
    fn unmap_with_more_descriptors_than_advertised_is_refused() {
        let descs = vec![(0u64, 1u32); cdb::MAX_UNMAP_DESCRIPTORS as usize + 1];
        let params = unmap_params(&descs, &[]);
        let d = run(&target(), &unmap_cdb(params.len()), &params, 0);
        assert_eq!(key_asc(&d), (0x05, 0x26));
    }

    #[test]
    fn unmap_on_a_lun_that_is_not_thin_is_an_invalid_opcode() {
        let t = target_with(MemBlock::new(1 << 20).thick(), 512);
        run(&t, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[6u8; 512], 0);
        let params = unmap_params(&[(0, 1)], &[]);

        let d = run(&t, &unmap_cdb(params.len()), &params, 0);

        assert_eq!(key_asc(&d), (0x05, 0x20));
        let back = run(&t, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 512);
        assert_eq!(back.data, vec![6u8; 512]);
    }

    #[test]
    fn lun_that_is_not_thin_reports_no_provisioning() {
        let t = target_with(MemBlock::new(1 << 20).thick(), 512);
        let vpd = run(&t, &[0x12, 1, 0xb2, 0, 64, 0], &[], 64);
        let cap = run(
            &t,
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            &[],
            32,
        );
        assert_eq!(vpd.data[5], 0, "LBPU, LBPWS, LBPWS10, LBPRZ");
        assert_eq!(vpd.data[6] & 0x07, 0, "provisioning type: full");
        assert_eq!(cap.data[14] & 0xc0, 0, "LBPME, LBPRZ");
    }

    #[test]
    fn thin_lun_reports_provisioning_bits() {
        let vpd = run(&target(), &[0x12, 1, 0xb2, 0, 64, 0], &[], 64);
        let cap = run(
            &target(),
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            &[],
            32,
        );
        assert_eq!(vpd.data[5], 0x80 | 0x40 | 0x20 | 0x04);
        assert_eq!(vpd.data[6] & 0x07, 0x02, "thin provisioned");
        assert_eq!(cap.data[14] & 0xc0, 0xc0, "LBPME, LBPRZ");
    }

    #[test]
    fn write_same_beyond_the_maximum_write_same_length_is_refused() {
        let t = target();
        let max = u32::try_from(cdb::MAX_WRITE_SAME_BYTES / 512).unwrap();
        let [a, b, c, d] = (max + 1).to_be_bytes();
        let mut c16 = [0u8; 16];
        c16[0] = 0x93;
        c16[1] = 0x08;
        c16[10..14].copy_from_slice(&[a, b, c, d]);

        let r = run(&t, &c16, &[0u8; 512], 0);

        assert_eq!(key_asc(&r), (0x05, 0x24));
        let vpd = run(&t, &[0x12, 1, 0xb0, 0, 64, 0], &[], 64);
        assert_eq!(
            u64::from_be_bytes(vpd.data[36..44].try_into().unwrap()),
            u64::from(max)
        );
    }

    #[test]
    fn write_same_with_unmap_writes_zeros_when_no_hole_can_be_punched() {
        let t = target_with(MemBlock::new(1 << 20).failing_discard(), 512);
        run(&t, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[5u8; 1024], 0);

        let d = run(&t, &[0x41, 0x08, 0, 0, 0, 0, 0, 0, 2, 0], &[0u8; 512], 0);

        assert_eq!(d.status, 0);
        let back = run(&t, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[], 1024);
        assert!(back.data.iter().all(|&b| b == 0));
    }

    #[test]
    fn unmap_data_out_shorter_than_the_parameter_list_is_an_overrun() {
        let params = unmap_params(&[(0, 1)], &[]);
        let d = run(&target(), &unmap_cdb(params.len() + 16), &params, 0);
        assert_eq!(d.response, response::OVERRUN);
    }

    #[test]
    fn host_read_failure_is_a_medium_error() {
        let t = target_with(MemBlock::failing(1 << 20), 512);
        let d = run(&t, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 512);
        assert_eq!(key_asc(&d), (0x03, 0x11));
    }

    const SYNC_CACHE: [u8; 10] = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn flush_failure_is_sticky_until_the_lun_is_reopened() {
        let t = target_with(MemBlock::new(1 << 20).fail_next_flush(), 512);
        let first = run(&t, &SYNC_CACHE, &[], 0);

        let second = run(&t, &SYNC_CACHE, &[], 0);

        assert_eq!(key_asc(&first), (0x03, 0x0c));
        assert_eq!(
            key_asc(&second),
            (0x03, 0x0c),
            "second flush reported success"
        );
    }

    #[test]
    fn fua_write_after_a_failed_flush_fails() {
        let t = target_with(MemBlock::new(1 << 20).fail_next_flush(), 512);
        run(&t, &SYNC_CACHE, &[], 0);

        let d = run(&t, &[0x2a, 0x08, 0, 0, 0, 0, 0, 0, 1, 0], &[1u8; 512], 0);

        assert_eq!(key_asc(&d), (0x03, 0x0c));
    }

    #[test]
    fn full_host_file_system_is_space_allocation_failed() {
        let t = target_with(MemBlock::new(1 << 20).fail_writes_with(libc::ENOSPC), 512);

        let d = run(&t, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[1u8; 512], 0);

        assert_eq!((d.sense[2], d.sense[12], d.sense[13]), (0x07, 0x27, 0x07));
    }

    #[test]
    fn request_sense_reports_no_sense() {
        let d = run(&target(), &[0x03, 0, 0, 0, 18, 0], &[], 18);
        assert_eq!(d.status, 0);
        assert_eq!(d.data[0], 0x70);
        assert_eq!(d.data[2], 0);
    }

    #[test]
    fn unmap_past_the_end_changes_nothing() {
        let t = target();
        run(&t, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[6u8; 512], 0);
        let mut params = vec![0, 38, 0, 32];
        params.extend_from_slice(&[0; 4]);
        params.extend_from_slice(&0u64.to_be_bytes());
        params.extend_from_slice(&1u32.to_be_bytes());
        params.extend_from_slice(&[0; 4]);
        params.extend_from_slice(&5000u64.to_be_bytes());
        params.extend_from_slice(&1u32.to_be_bytes());
        params.extend_from_slice(&[0; 4]);
        let d = run(&t, &[0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0], &params, 0);
        assert_eq!(key_asc(&d), (0x05, 0x21));
        let back = run(&t, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 512);
        assert_eq!(
            back.data,
            vec![6u8; 512],
            "first descriptor applied before validation"
        );
    }

    #[test]
    fn control_request_of_unknown_type_is_an_error() {
        let mut q = TestQueue::new(16, false).unwrap();
        q.write_bytes(BUFFERS, &9u32.to_le_bytes()).unwrap();
        q.add(&[(BUFFERS, 24, false), (RESP, 1, true)]).unwrap();
        let t = target();
        let mut err = None;
        drain(&q.context(), &q.vring, |r, w| {
            err = control(&t, r, w).err();
            Ok(Completion::Used(0))
        })
        .unwrap();
        assert!(matches!(err, Some(Error::UnknownControl(9))));
    }
}
