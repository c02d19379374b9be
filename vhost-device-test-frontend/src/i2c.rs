// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A minimal virtio-i2c driver (virtio 1.3, 5.16) over a [`Session`]: it
//! queues one I2C transfer the way Linux's `i2c-virtio` does — one request
//! per message, all but the last with `VIRTIO_I2C_FLAGS_FAIL_NEXT`, one kick
//! — and collects every request's status and read data. Used by the CLI's
//! `i2c-transfer` (for example to drive a daemon's real backend inside a VM
//! that has `i2c-stub`), by integration tests and by benchmarks.

use std::time::Duration;

use crate::{Chain, Error, Session};

/// `VIRTIO_I2C_FLAGS_FAIL_NEXT`.
pub const FLAGS_FAIL_NEXT: u32 = 1;
/// `VIRTIO_I2C_FLAGS_M_RD`.
pub const FLAGS_M_RD: u32 = 2;
/// Status `VIRTIO_I2C_MSG_OK`.
pub const MSG_OK: u8 = 0;
/// Status `VIRTIO_I2C_MSG_ERR`.
pub const MSG_ERR: u8 = 1;
/// Requests one transfer may have here.
pub const MAX_MSGS: usize = 64;
/// Largest message buffer here.
pub const MAX_LEN: u32 = 8192;
/// Bytes of guest memory per request slot: header, buffer, status.
const SLOT: u64 = 16 + MAX_LEN as u64 + 16;

/// One message of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum I2cMsg {
    /// Write these bytes to the 7-bit address.
    Write(u8, Vec<u8>),
    /// Read this many bytes from the 7-bit address.
    Read(u8, u32),
}

impl I2cMsg {
    /// Parse one message of `i2ctransfer` syntax: `w3@0x50` or `r2@0x1c`
    /// (the data bytes of a write follow as separate words, see
    /// [`parse_transfer`]). Returns the message with an empty write buffer
    /// and its length.
    fn parse_head(word: &str) -> Option<(Self, u32)> {
        let mut chars = word.chars();
        let kind = chars.next()?;
        let (len, addr) = chars.as_str().split_once('@')?;
        let len: u32 = len.parse().ok()?;
        let addr = parse_u8(addr)?;
        match kind {
            'w' | 'W' => Some((I2cMsg::Write(addr, Vec::new()), len)),
            'r' | 'R' => Some((I2cMsg::Read(addr, len), len)),
            _ => None,
        }
    }
}

fn parse_u8(s: &str) -> Option<u8> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parse an `i2ctransfer`-style description: `w2@0x1c 0x10 0x5a r1@0x1c`.
pub fn parse_transfer(words: &[String]) -> Result<Vec<I2cMsg>, String> {
    let mut msgs = Vec::new();
    let mut i = 0;
    while let Some(word) = words.get(i) {
        let (mut msg, len) = I2cMsg::parse_head(word)
            .ok_or_else(|| format!("'{word}' is not a message (w<len>@<addr> or r<len>@<addr>)"))?;
        i += 1;
        if let I2cMsg::Write(_, data) = &mut msg {
            for _ in 0..len {
                let b = words
                    .get(i)
                    .and_then(|w| parse_u8(w))
                    .ok_or_else(|| format!("{word} needs {len} data bytes"))?;
                data.push(b);
                i += 1;
            }
        }
        msgs.push(msg);
    }
    Ok(msgs)
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I2cReply {
    /// `MSG_OK` or `MSG_ERR` (or what else the device wrote).
    pub status: u8,
    /// The bytes read (reads only; as the device left them).
    pub data: Vec<u8>,
    /// The used length the device reported.
    pub used_len: u32,
    /// When the device used this request among the requests collected
    /// together (0: first). Linux's `i2c-virtio` stops waiting at the first
    /// failed request of a transfer and frees them all, so for Linux every
    /// later request of the transfer must be used before that one.
    pub used_order: usize,
}

/// The driver side of a virtio-i2c device.
pub struct I2cGuest {
    /// The front-end session.
    pub s: Session,
    /// Put each request's buffers in an indirect table (as Linux does on
    /// QEMU's 4-entry queue).
    pub indirect: bool,
    slots: u64,
}

/// A request posted and not yet collected.
#[derive(Debug, Clone, Copy)]
pub struct Posted {
    /// Its head descriptor.
    pub head: u16,
    slot: u64,
    read_len: u32,
}

impl I2cGuest {
    /// Take over `s` (queue 0 is the request queue).
    pub fn new(s: Session) -> Result<Self, Error> {
        let slots = s.ram().alloc(SLOT * MAX_MSGS as u64, 4096)?;
        Ok(Self {
            s,
            indirect: false,
            slots,
        })
    }

    /// Queue `msgs` as one group starting at slot `first` (each slot holds
    /// one request) and kick once. Nothing is waited for.
    pub fn post_at(&mut self, first: usize, msgs: &[I2cMsg]) -> Result<Vec<Posted>, Error> {
        let n = msgs.len();
        if n == 0 || first + n > MAX_MSGS {
            return Err(Error::QueueFull);
        }
        let mut posted = Vec::with_capacity(n);
        for (i, m) in msgs.iter().enumerate() {
            let slot = self.slots + SLOT * (first + i) as u64;
            let hdr = slot;
            let buf = slot + 16;
            let status = buf + u64::from(MAX_LEN);
            let (addr, mut flags, len) = match m {
                I2cMsg::Write(a, data) => (*a, 0, u32::try_from(data.len()).unwrap_or(MAX_LEN)),
                I2cMsg::Read(a, len) => (*a, FLAGS_M_RD, *len),
            };
            if len > MAX_LEN {
                return Err(Error::GuestAccess(buf, format!("message of {len} bytes")));
            }
            if i + 1 < n {
                flags |= FLAGS_FAIL_NEXT;
            }
            let mut h = Vec::with_capacity(8);
            h.extend_from_slice(&(u16::from(addr) << 1).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&flags.to_le_bytes());
            self.s.ram().write(hdr, &h)?;
            self.s.ram().write(status, &[0xee])?;
            let mut chain = Chain::new().readable(hdr, 8);
            match m {
                I2cMsg::Write(_, data) if !data.is_empty() => {
                    self.s.ram().write(buf, data)?;
                    chain = chain.readable(buf, len);
                }
                I2cMsg::Read(..) if len > 0 => chain = chain.writable(buf, len),
                _ => {}
            }
            chain = chain.writable(status, 1);
            if self.indirect {
                chain = chain.indirect();
            }
            let head = self.s.queue(0)?.add(&chain)?;
            posted.push(Posted {
                head,
                slot,
                read_len: if matches!(m, I2cMsg::Read(..)) {
                    len
                } else {
                    0
                },
            });
        }
        self.s.queue(0)?.kick()?;
        Ok(posted)
    }

    /// Wait until every request of `posted` is used; their replies in order.
    pub fn collect(
        &mut self,
        posted: &[Posted],
        timeout: Duration,
    ) -> Result<Vec<I2cReply>, Error> {
        // (used length, position in the order of use) of each request
        let mut used: Vec<Option<(u32, usize)>> = vec![None; posted.len()];
        let mut count = 0;
        let deadline = std::time::Instant::now() + timeout;
        while used.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            for u in self.s.queue(0)?.wait_used(left)? {
                match posted.iter().position(|p| p.head == u.head) {
                    Some(i) => used[i] = Some((u.len, count)),
                    None => return Err(Error::BadUsedId(u32::from(u.head))),
                }
                count += 1;
            }
        }
        posted
            .iter()
            .zip(used)
            .map(|(p, used)| {
                let buf = p.slot + 16;
                let (used_len, used_order) = used.unwrap_or_default();
                Ok(I2cReply {
                    status: self.s.ram().read(buf + u64::from(MAX_LEN), 1)?[0],
                    data: self.s.ram().read(buf, p.read_len as usize)?,
                    used_len,
                    used_order,
                })
            })
            .collect()
    }

    /// Run `msgs` as one transfer and wait for every reply.
    pub fn transfer(&mut self, msgs: &[I2cMsg], timeout: Duration) -> Result<Vec<I2cReply>, Error> {
        let posted = self.post_at(0, msgs)?;
        self.collect(&posted, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn i2ctransfer_syntax_is_parsed() {
        let msgs = parse_transfer(&words("w2@0x1c 0x10 0x5a r1@0x1c w0@28")).unwrap();
        assert_eq!(
            msgs,
            vec![
                I2cMsg::Write(0x1c, vec![0x10, 0x5a]),
                I2cMsg::Read(0x1c, 1),
                I2cMsg::Write(28, vec![]),
            ]
        );
    }

    #[test]
    fn missing_data_bytes_are_an_error() {
        assert!(parse_transfer(&words("w2@0x1c 0x10")).is_err());
        assert!(parse_transfer(&words("x1@0x1c")).is_err());
    }
}
