// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reading requests and writing responses (virtio 1.3, 5.18.6 and 5.18.7).
//! Pure: this module sees `Reader`s and `Writer`s, never a vring.
//!
//! Linux (`drivers/gpio/gpio-virtio.c`) checks used lengths exactly: a
//! response is exactly 2 bytes (`status`, `value`), a GET_LINE_NAMES
//! response exactly 1 + `gpio_names_size`, an eventq response exactly 1;
//! anything else leaves the line (or the chip's names) dead. So the writers
//! below write exactly that much however large the driver's buffer is, and a
//! buffer too small for it gets the error status alone (or nothing, used
//! length 0, when it has no writable byte at all).

use std::io::Write;

use thiserror::Error;
use vhost_device_common::queue::{Reader, Writer};

use crate::virtio::{
    IrqRequest, IrqStatus, RequestHeader, IRQ_RESPONSE_LEN, STATUS_ERR, STATUS_OK,
};

/// A request as the driver sent it (codes not yet checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// `VIRTIO_GPIO_MSG_*`.
    pub kind: u16,
    /// Line number.
    pub line: u16,
    /// Message-specific value.
    pub value: u32,
}

/// A malformed chain.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChainError {
    /// Fewer device-readable bytes than the request structure.
    #[error("request has {0} readable bytes, needs {1}")]
    ShortRequest(usize, usize),
}

/// Read the request header.
pub fn parse(reader: &mut Reader<'_>) -> Result<Request, ChainError> {
    let need = std::mem::size_of::<RequestHeader>();
    if reader.available_bytes() < need {
        return Err(ChainError::ShortRequest(reader.available_bytes(), need));
    }
    let h: RequestHeader = reader
        .read_obj()
        .map_err(|_| ChainError::ShortRequest(reader.available_bytes(), need))?;
    Ok(Request {
        kind: h.kind.into(),
        line: h.gpio.into(),
        value: h.value.into(),
    })
}

/// Read an eventq request (the line number).
pub fn parse_irq(reader: &mut Reader<'_>) -> Result<u16, ChainError> {
    let need = std::mem::size_of::<IrqRequest>();
    if reader.available_bytes() < need {
        return Err(ChainError::ShortRequest(reader.available_bytes(), need));
    }
    let r: IrqRequest = reader
        .read_obj()
        .map_err(|_| ChainError::ShortRequest(reader.available_bytes(), need))?;
    Ok(r.gpio.into())
}

fn used(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Write `bytes` if the writer has room for all of them; otherwise write
/// as many of `fallback` as fit. Returns the used length.
fn write_exact(writer: &mut Writer<'_>, bytes: &[u8], fallback: &[u8]) -> u32 {
    let room = writer.available_bytes();
    let out = if room >= bytes.len() {
        bytes
    } else {
        &fallback[..fallback.len().min(room)]
    };
    match writer.write_all(out) {
        Ok(()) => used(out.len()),
        Err(_) => used(writer.bytes_written()),
    }
}

/// Write a 2-byte response: OK with `value`, or ERR.
pub fn respond(writer: &mut Writer<'_>, result: Result<u8, ()>) -> u32 {
    let bytes = match result {
        Ok(v) => [STATUS_OK, v],
        Err(()) => [STATUS_ERR, 0],
    };
    write_exact(writer, &bytes, &[STATUS_ERR, 0])
}

/// Write the GET_LINE_NAMES response: OK and the names block, exactly
/// `1 + names.len()` bytes; a buffer too small gets ERR.
pub fn respond_names(writer: &mut Writer<'_>, names: &[u8]) -> u32 {
    if names.is_empty() || writer.available_bytes() < 1 + names.len() {
        return respond(writer, Err(()));
    }
    match writer
        .write_all(&[STATUS_OK])
        .and_then(|()| writer.write_all(names))
    {
        Ok(()) => used(1 + names.len()),
        Err(_) => used(writer.bytes_written()),
    }
}

/// Write an eventq response (exactly 1 byte).
pub fn respond_irq(writer: &mut Writer<'_>, status: IrqStatus) -> u32 {
    let n = write_exact(writer, &[status as u8], &[]);
    debug_assert!(n == 0 || n == IRQ_RESPONSE_LEN);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_device_common::queue::GuestMemory;
    use vhost_device_common::virtio_queue::desc::{
        split::Descriptor as SplitDescriptor, RawDescriptor,
    };
    use vhost_device_common::virtio_queue::mock::MockSplitQueue;
    use vhost_device_common::vm_memory::{Bytes, GuestAddress};

    const READ: u16 = 0;
    const WRITE: u16 = 2;

    /// Build a chain of (len, flags) buffers with `input` in the readable
    /// part, and run `f` on its Reader and Writer; returns (result, bytes
    /// written to the writable buffers).
    fn with_chain<R>(
        bufs: &[(u32, u16)],
        input: &[u8],
        f: impl FnOnce(&mut Reader<'_>, &mut Writer<'_>) -> R,
    ) -> (R, Vec<u8>) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let mut addr = 0x1_0000u64;
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(len, flags))| {
                let next = if i + 1 < bufs.len() { 1 } else { 0 };
                let d =
                    SplitDescriptor::new(addr, len, flags | next, u16::try_from(i + 1).unwrap());
                addr += 0x1000;
                RawDescriptor::from(d)
            })
            .collect();
        mem.write_slice(input, GuestAddress(0x1_0000)).unwrap();
        let chain = q.build_desc_chain(&descs).unwrap();
        let mut r = Reader::new(&mem, chain.clone()).unwrap();
        let mut w = Writer::new(&mem, chain).unwrap();
        let out = f(&mut r, &mut w);
        let mut written = Vec::new();
        for (i, &(len, flags)) in bufs.iter().enumerate() {
            if flags & WRITE != 0 {
                let mut b = vec![0u8; len as usize];
                mem.read_slice(&mut b, GuestAddress(0x1_0000 + 0x1000 * i as u64))
                    .unwrap();
                written.extend(b);
            }
        }
        (out, written)
    }

    #[test]
    fn request_is_parsed_little_endian() {
        let (req, _) = with_chain(
            &[(8, READ), (2, WRITE)],
            &[5, 0, 9, 0, 1, 0, 0, 0],
            |r, _| parse(r),
        );
        assert_eq!(
            req,
            Ok(Request {
                kind: 5,
                line: 9,
                value: 1
            })
        );
    }

    #[test]
    fn short_request_is_refused() {
        let (req, _) = with_chain(&[(6, READ), (2, WRITE)], &[0; 6], |r, _| parse(r));
        assert_eq!(req, Err(ChainError::ShortRequest(6, 8)));
    }

    #[test]
    fn request_split_over_descriptors_is_parsed() {
        // 3 + 5 readable bytes: the Reader joins them.
        let (req, _) = with_chain(&[(3, READ), (5, READ), (2, WRITE)], &[], |r, _| parse(r));
        assert!(req.is_ok());
    }

    #[test]
    fn response_is_exactly_two_bytes_in_a_larger_buffer() {
        let (n, out) = with_chain(&[(8, READ), (16, WRITE)], &[], |_, w| respond(w, Ok(1)));
        assert_eq!(n, 2);
        assert_eq!(&out[..3], &[STATUS_OK, 1, 0]);
    }

    #[test]
    fn one_byte_buffer_gets_the_error_status_alone() {
        let (n, out) = with_chain(&[(8, READ), (1, WRITE)], &[], |_, w| respond(w, Ok(1)));
        assert_eq!((n, out), (1, vec![STATUS_ERR]));
    }

    #[test]
    fn names_response_is_one_plus_size() {
        let (n, out) = with_chain(&[(8, READ), (1, WRITE), (8, WRITE)], &[], |_, w| {
            respond_names(w, b"a\0b\0")
        });
        assert_eq!(n, 5);
        assert_eq!(&out[..5], b"\0a\0b\0");
    }

    #[test]
    fn names_response_too_small_is_an_error() {
        let (n, out) = with_chain(&[(8, READ), (4, WRITE)], &[], |_, w| {
            respond_names(w, b"a\0b\0")
        });
        assert_eq!(n, 2);
        assert_eq!(&out[..2], &[STATUS_ERR, 0]);
    }

    #[test]
    fn irq_response_is_one_byte_or_nothing() {
        let (n, out) = with_chain(&[(2, READ), (4, WRITE)], &[], |_, w| {
            respond_irq(w, IrqStatus::Valid)
        });
        assert_eq!((n, out[0]), (1, 1));
        let (n, _) = with_chain(&[(2, READ)], &[], |_, w| respond_irq(w, IrqStatus::Valid));
        assert_eq!(n, 0);
    }

    #[test]
    fn irq_request_needs_two_readable_bytes() {
        let (line, _) = with_chain(&[(2, READ), (1, WRITE)], &[7, 1], |r, _| parse_irq(r));
        assert_eq!(line, Ok(0x107));
        let (line, _) = with_chain(&[(1, READ), (1, WRITE)], &[7], |r, _| parse_irq(r));
        assert!(line.is_err());
    }
}
