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
use vhost_device_common::virtio_queue::{Reader, Writer};
use vhost_device_common::vm_memory::ByteValued;

use crate::virtio::{ctrl, decode_lun, response, CmdReqHeader, CmdRespHeader, CtrlAnResp};
use cdb::{Lun, Outcome};

/// The one target and its LUNs.
#[derive(Debug)]
pub struct Target {
    /// LUNs, numbered from 0.
    pub luns: Vec<Lun>,
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

/// Serve one command request; returns the used length.
pub fn command(
    target: &Target,
    sizes: Sizes,
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
    scratch: &mut Vec<u8>,
) -> Result<u32, Error> {
    let hdr: CmdReqHeader = reader.read_obj().map_err(Error::ShortRequest)?;
    let mut cdb = vec![0u8; sizes.cdb];
    reader.read_exact(&mut cdb).map_err(Error::ShortRequest)?;
    let resp_len = CmdRespHeader::default().as_slice().len() + sizes.sense;
    if writer.available_bytes() < resp_len {
        return Err(Error::ShortResponse(writer.available_bytes()));
    }
    let mut data_in = writer
        .split_at(resp_len)
        .map_err(|e| Error::WriteResponse(io::Error::other(e)))?;
    let (in_len, out_len) = (data_in.available_bytes(), reader.available_bytes());

    let (mut resp, outcome) = match decode_lun(&hdr.lun) {
        Some((0, lun)) => {
            let outcome = match target.luns.get(usize::from(lun)) {
                _ if cdb[0] == cdb::op::REPORT_LUNS => report_luns(target, &cdb, &mut data_in),
                Some(unit) => cdb::execute(unit, &cdb, reader, &mut data_in, scratch),
                None => absent_lun(&cdb, &mut data_in),
            };
            (response::OK, outcome)
        }
        _ => (response::BAD_TARGET, Outcome::GOOD),
    };
    if outcome.overrun {
        resp = response::OVERRUN;
    }
    let written = data_in.bytes_written();
    let resid = if in_len > 0 {
        in_len - written
    } else {
        out_len - (out_len - reader.available_bytes())
    };
    let sense_bytes = outcome.sense.map(|s| s.fixed()).unwrap_or_default();
    let sense_len = if outcome.sense.is_some() {
        sense_bytes.len().min(sizes.sense)
    } else {
        0
    };
    let header = CmdRespHeader {
        sense_len: u32::try_from(sense_len).unwrap_or(0).into(),
        resid: u32::try_from(resid).unwrap_or(u32::MAX).into(),
        status_qualifier: 0.into(),
        status: outcome.status,
        response: resp,
    };
    writer.write_obj(header).map_err(Error::WriteResponse)?;
    let mut sense_area = vec![0u8; sizes.sense];
    sense_area[..sense_len].copy_from_slice(&sense_bytes[..sense_len]);
    writer
        .write_all(&sense_area)
        .map_err(Error::WriteResponse)?;
    Ok(u32::try_from(writer.bytes_written() + written).unwrap_or(u32::MAX))
}

fn read_u32(reader: &mut Reader<'_>) -> Result<u32, Error> {
    let mut b = [0u8; 4];
    reader.read_exact(&mut b).map_err(Error::ShortRequest)?;
    Ok(u32::from_le_bytes(b))
}

/// Serve one control request; returns the used length.
pub fn control(
    target: &Target,
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
) -> Result<u32, Error> {
    let kind = read_u32(reader)?;
    match kind {
        ctrl::T_TMF => {
            let subtype = read_u32(reader)?;
            let mut lun = [0u8; 8];
            reader.read_exact(&mut lun).map_err(Error::ShortRequest)?;
            let mut tag = [0u8; 8];
            reader.read_exact(&mut tag).map_err(Error::ShortRequest)?;
            let code = match decode_lun(&lun) {
                Some((0, l)) if usize::from(l) < target.luns.len() => match subtype {
                    // Commands run to completion before the next is taken, so
                    // there is never a task to abort or a task set to clear.
                    ctrl::TMF_ABORT_TASK
                    | ctrl::TMF_ABORT_TASK_SET
                    | ctrl::TMF_CLEAR_TASK_SET
                    | ctrl::TMF_I_T_NEXUS_RESET
                    | ctrl::TMF_LOGICAL_UNIT_RESET
                    | ctrl::TMF_QUERY_TASK
                    | ctrl::TMF_QUERY_TASK_SET => response::FUNCTION_COMPLETE,
                    _ => response::FUNCTION_REJECTED,
                },
                Some((0, _)) => response::INCORRECT_LUN,
                _ => response::BAD_TARGET,
            };
            writer.write_all(&[code]).map_err(Error::WriteResponse)?;
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
        }
        other => return Err(Error::UnknownControl(other)),
    }
    Ok(u32::try_from(writer.bytes_written()).unwrap_or(u32::MAX))
}
