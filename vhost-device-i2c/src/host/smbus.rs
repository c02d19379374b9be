// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest transfers onto SMBus-only adapters.
//!
//! The guest's virtio adapter offers `I2C_FUNC_I2C | I2C_FUNC_SMBUS_EMUL`, so
//! its SMBus calls arrive as plain message groups, built by Linux's SMBus
//! emulation (`i2c_smbus_xfer_emulated`). An adapter without
//! `I2C_FUNC_I2C` (i2c-stub, many PC SMBus controllers) refuses
//! `I2C_RDWR`, so each group is mapped back to the one SMBus command that
//! puts the same traffic on the bus (W*n*: a write of *n* bytes, R*n*: a
//! read, in one transaction):
//!
//! | group | SMBus command (first the adapter supports) |
//! |---|---|
//! | W0 / R0 | quick (write / read) |
//! | R1 | receive byte |
//! | W1 | send byte |
//! | W2 | write byte data; I2C block write of 1 |
//! | W3 | write word data; I2C block write of 2; block write of 1 |
//! | W*n*, 4 ≤ *n* ≤ 33 | I2C block write of *n*−1; block write if byte 1 is *n*−2 |
//! | W34 | block write (byte 1 must be 32) |
//! | W1 R1 | read byte data; I2C block read of 1 |
//! | W1 R2 | read word data; I2C block read of 2 |
//! | W1 R*n*, 3 ≤ *n* ≤ 32 | I2C block read of *n* |
//! | W3 R2 | process call |
//!
//! Anything else has no SMBus form and fails as a whole (SMBus block *read*
//! and block process call need the length from the client, which a virtio
//! request cannot express; Linux never sends them to a virtio adapter).
//! Commands with the same traffic are equivalent on a real client; a
//! simulation like i2c-stub that keeps words and bytes apart sees the
//! narrowest one.

use std::io;

use thiserror::Error;

use super::{func, Msg};

/// Largest SMBus block (`I2C_SMBUS_BLOCK_MAX`).
pub const BLOCK_MAX: usize = 32;

/// One `I2C_SMBUS` command. The first `u8` is the command (register) byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmbusOp {
    /// Quick: the read/write bit is the data.
    Quick {
        /// Read (else write) bit.
        read: bool,
    },
    /// Receive byte.
    ReceiveByte,
    /// Send byte.
    SendByte(u8),
    /// Read byte data.
    ReadByteData(u8),
    /// Write byte data.
    WriteByteData(u8, u8),
    /// Read word data.
    ReadWordData(u8),
    /// Write word data (little-endian on the bus).
    WriteWordData(u8, u16),
    /// Process call: write a word, read a word.
    ProcessCall(u8, u16),
    /// Block write: count byte, then the data.
    WriteBlockData(u8, Vec<u8>),
    /// I2C block read of this many bytes.
    ReadI2cBlock(u8, u8),
    /// I2C block write.
    WriteI2cBlock(u8, Vec<u8>),
}

/// What an SMBus command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmbusReply {
    /// Nothing (a write or quick).
    None,
    /// A byte.
    Byte(u8),
    /// A word.
    Word(u16),
    /// A block.
    Block(Vec<u8>),
}

/// A transfer with no SMBus form.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Unsupported {
    /// Not one client.
    #[error("the messages address more than one client")]
    MixedAddresses,
    /// No SMBus command has this traffic.
    #[error("no SMBus command sends {0}")]
    Pattern(String),
    /// The command exists but the adapter lacks it.
    #[error("{pattern} needs {needs}, which the adapter does not offer")]
    Function {
        /// The message pattern.
        pattern: String,
        /// Missing function.
        needs: &'static str,
    },
}

/// `W2 R1`-style description of a transfer.
pub fn pattern(msgs: &[Msg]) -> String {
    let parts: Vec<String> = msgs
        .iter()
        .map(|m| format!("{}{}", if m.read { 'R' } else { 'W' }, m.buf.len()))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(" ")
    }
}

/// The client and SMBus command for `msgs` on an adapter with `funcs`.
pub fn plan(msgs: &[Msg], funcs: u32) -> Result<(u8, SmbusOp), Unsupported> {
    let Some(first) = msgs.first() else {
        return Err(Unsupported::Pattern(pattern(msgs)));
    };
    if msgs.iter().any(|m| m.addr != first.addr) {
        return Err(Unsupported::MixedAddresses);
    }
    let has = |f: u32| funcs & f == f;
    let missing = |needs| Unsupported::Function {
        pattern: pattern(msgs),
        needs,
    };
    let none = || Unsupported::Pattern(pattern(msgs));
    let op = match msgs {
        [m] if m.buf.is_empty() => {
            if !has(func::SMBUS_QUICK) {
                return Err(missing("SMBus quick"));
            }
            SmbusOp::Quick { read: m.read }
        }
        [m] if m.read => {
            if m.buf.len() != 1 {
                return Err(none());
            }
            if !has(func::SMBUS_READ_BYTE) {
                return Err(missing("SMBus receive byte"));
            }
            SmbusOp::ReceiveByte
        }
        [m] => write_op(&m.buf, &has).ok_or_else(|| match m.buf.len() {
            1 => missing("SMBus send byte"),
            n if n <= BLOCK_MAX + 2 => missing("an SMBus write command of that length"),
            _ => none(),
        })?,
        [w, r] if !w.read && r.read && w.buf.len() == 1 => {
            let cmd = w.buf[0];
            match r.buf.len() {
                1 if has(func::SMBUS_READ_BYTE_DATA) => SmbusOp::ReadByteData(cmd),
                2 if has(func::SMBUS_READ_WORD_DATA) => SmbusOp::ReadWordData(cmd),
                n @ 1..=BLOCK_MAX if has(func::SMBUS_READ_I2C_BLOCK) => {
                    SmbusOp::ReadI2cBlock(cmd, u8::try_from(n).map_err(|_| none())?)
                }
                1..=BLOCK_MAX => return Err(missing("SMBus I2C block read")),
                _ => return Err(none()),
            }
        }
        [w, r] if !w.read && r.read && w.buf.len() == 3 && r.buf.len() == 2 => {
            if !has(func::SMBUS_PROC_CALL) {
                return Err(missing("SMBus process call"));
            }
            SmbusOp::ProcessCall(w.buf[0], u16::from_le_bytes([w.buf[1], w.buf[2]]))
        }
        _ => return Err(none()),
    };
    Ok((first.addr, op))
}

/// The SMBus write command for a single write of `buf`, if the adapter has one.
fn write_op(buf: &[u8], has: &dyn Fn(u32) -> bool) -> Option<SmbusOp> {
    let (&cmd, rest) = buf.split_first()?;
    let block = || {
        let (&count, data) = rest.split_first()?;
        (has(func::SMBUS_WRITE_BLOCK_DATA)
            && usize::from(count) == data.len()
            && (1..=BLOCK_MAX).contains(&data.len()))
        .then(|| SmbusOp::WriteBlockData(cmd, data.to_vec()))
    };
    let i2c_block = || {
        (has(func::SMBUS_WRITE_I2C_BLOCK) && (1..=BLOCK_MAX).contains(&rest.len()))
            .then(|| SmbusOp::WriteI2cBlock(cmd, rest.to_vec()))
    };
    match rest {
        [] => has(func::SMBUS_WRITE_BYTE).then_some(SmbusOp::SendByte(cmd)),
        [v] if has(func::SMBUS_WRITE_BYTE_DATA) => Some(SmbusOp::WriteByteData(cmd, *v)),
        [lo, hi] if has(func::SMBUS_WRITE_WORD_DATA) => {
            Some(SmbusOp::WriteWordData(cmd, u16::from_le_bytes([*lo, *hi])))
        }
        _ => i2c_block().or_else(block),
    }
}

/// Put what `op` returned into the read buffers of `msgs` (the transfer
/// [`plan`] mapped to it).
pub fn fill(msgs: &mut [Msg], op: &SmbusOp, reply: &SmbusReply) -> io::Result<()> {
    let bad = || io::Error::other(format!("unexpected SMBus reply {reply:?} to {op:?}"));
    let target = msgs.iter_mut().rev().find(|m| m.read && !m.buf.is_empty());
    match (op, reply, target) {
        (SmbusOp::ReceiveByte | SmbusOp::ReadByteData(_), SmbusReply::Byte(b), Some(m)) => {
            m.buf[0] = *b;
        }
        (SmbusOp::ReadWordData(_) | SmbusOp::ProcessCall(..), SmbusReply::Word(w), Some(m)) => {
            m.buf.copy_from_slice(&w.to_le_bytes());
        }
        (SmbusOp::ReadI2cBlock(_, n), SmbusReply::Block(data), Some(m)) => {
            if data.len() != usize::from(*n) || m.buf.len() != data.len() {
                return Err(io::Error::other(format!(
                    "short SMBus block read: {} of {n} bytes",
                    data.len()
                )));
            }
            m.buf.copy_from_slice(data);
        }
        (
            SmbusOp::Quick { .. }
            | SmbusOp::SendByte(_)
            | SmbusOp::WriteByteData(..)
            | SmbusOp::WriteWordData(..)
            | SmbusOp::WriteBlockData(..)
            | SmbusOp::WriteI2cBlock(..),
            SmbusReply::None,
            _,
        ) => {}
        _ => return Err(bad()),
    }
    Ok(())
}

/// The messages with the same bus traffic as `op` to `addr` (what Linux's
/// SMBus emulation sends), read buffers sized: for adapters that run SMBus
/// commands as plain transfers (the simulated one).
pub fn as_messages(addr: u8, op: &SmbusOp) -> Vec<Msg> {
    let w = |data: &[u8]| Msg::write(addr, data);
    let r = |len: usize| Msg::read(addr, len);
    match op {
        SmbusOp::Quick { read: true } => vec![r(0)],
        SmbusOp::Quick { read: false } => vec![w(&[])],
        SmbusOp::ReceiveByte => vec![r(1)],
        SmbusOp::SendByte(b) => vec![w(&[*b])],
        SmbusOp::ReadByteData(c) => vec![w(&[*c]), r(1)],
        SmbusOp::WriteByteData(c, v) => vec![w(&[*c, *v])],
        SmbusOp::ReadWordData(c) => vec![w(&[*c]), r(2)],
        SmbusOp::WriteWordData(c, v) => {
            let [lo, hi] = v.to_le_bytes();
            vec![w(&[*c, lo, hi])]
        }
        SmbusOp::ProcessCall(c, v) => {
            let [lo, hi] = v.to_le_bytes();
            vec![w(&[*c, lo, hi]), r(2)]
        }
        SmbusOp::WriteBlockData(c, data) => {
            let mut bytes = vec![*c, u8::try_from(data.len()).unwrap_or(u8::MAX)];
            bytes.extend_from_slice(data);
            vec![w(&bytes)]
        }
        SmbusOp::ReadI2cBlock(c, n) => vec![w(&[*c]), r(usize::from(*n))],
        SmbusOp::WriteI2cBlock(c, data) => {
            let mut bytes = vec![*c];
            bytes.extend_from_slice(data);
            vec![w(&bytes)]
        }
    }
}

/// What `op` returned, from the messages of [`as_messages`] after they ran.
pub fn reply_from(op: &SmbusOp, msgs: &[Msg]) -> SmbusReply {
    let read = msgs.last().filter(|m| m.read).map(|m| m.buf.as_slice());
    match (op, read) {
        (SmbusOp::ReceiveByte | SmbusOp::ReadByteData(_), Some(&[b])) => SmbusReply::Byte(b),
        (SmbusOp::ReadWordData(_) | SmbusOp::ProcessCall(..), Some(&[lo, hi])) => {
            SmbusReply::Word(u16::from_le_bytes([lo, hi]))
        }
        (SmbusOp::ReadI2cBlock(..), Some(data)) => SmbusReply::Block(data.to_vec()),
        _ => SmbusReply::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u32 = func::SMBUS_EMUL;
    /// i2c-stub's default functionality: no block write/read, no process call.
    const STUB: u32 = func::SMBUS_QUICK
        | func::SMBUS_READ_BYTE
        | func::SMBUS_WRITE_BYTE
        | func::SMBUS_READ_BYTE_DATA
        | func::SMBUS_WRITE_BYTE_DATA
        | func::SMBUS_READ_WORD_DATA
        | func::SMBUS_WRITE_WORD_DATA
        | func::SMBUS_READ_I2C_BLOCK
        | func::SMBUS_WRITE_I2C_BLOCK;

    fn w(data: &[u8]) -> Msg {
        Msg::write(0x1c, data)
    }

    fn r(len: usize) -> Msg {
        Msg::read(0x1c, len)
    }

    fn op(msgs: &[Msg], funcs: u32) -> Result<SmbusOp, Unsupported> {
        plan(msgs, funcs).map(|(addr, op)| {
            assert_eq!(addr, 0x1c);
            op
        })
    }

    #[test]
    fn zero_length_write_and_read_are_quick_commands() {
        assert_eq!(op(&[w(&[])], ALL), Ok(SmbusOp::Quick { read: false }));
        assert_eq!(op(&[r(0)], ALL), Ok(SmbusOp::Quick { read: true }));
    }

    #[test]
    fn single_byte_read_and_write_are_receive_and_send_byte() {
        assert_eq!(op(&[r(1)], ALL), Ok(SmbusOp::ReceiveByte));
        assert_eq!(op(&[w(&[0x42])], ALL), Ok(SmbusOp::SendByte(0x42)));
    }

    #[test]
    fn register_reads_are_byte_and_word_data() {
        assert_eq!(
            op(&[w(&[0x10]), r(1)], ALL),
            Ok(SmbusOp::ReadByteData(0x10))
        );
        assert_eq!(
            op(&[w(&[0x10]), r(2)], ALL),
            Ok(SmbusOp::ReadWordData(0x10))
        );
    }

    #[test]
    fn register_writes_are_byte_and_word_data() {
        assert_eq!(
            op(&[w(&[0x10, 0x5a])], ALL),
            Ok(SmbusOp::WriteByteData(0x10, 0x5a))
        );
        assert_eq!(
            op(&[w(&[0x10, 0x34, 0x12])], ALL),
            Ok(SmbusOp::WriteWordData(0x10, 0x1234))
        );
    }

    #[test]
    fn process_call_is_recognised() {
        assert_eq!(
            op(&[w(&[0x20, 0x01, 0x02]), r(2)], ALL),
            Ok(SmbusOp::ProcessCall(0x20, 0x0201))
        );
    }

    #[test]
    fn longer_register_read_is_an_i2c_block_read() {
        assert_eq!(
            op(&[w(&[0x00]), r(16)], ALL),
            Ok(SmbusOp::ReadI2cBlock(0x00, 16))
        );
    }

    #[test]
    fn longer_write_is_an_i2c_block_write() {
        assert_eq!(
            op(&[w(&[0x08, 1, 2, 3, 4])], STUB),
            Ok(SmbusOp::WriteI2cBlock(0x08, vec![1, 2, 3, 4]))
        );
    }

    #[test]
    fn block_write_is_used_when_the_adapter_lacks_i2c_block_write() {
        let funcs = func::SMBUS_WRITE_BLOCK_DATA;
        assert_eq!(
            op(&[w(&[0x08, 3, 7, 8, 9])], funcs),
            Ok(SmbusOp::WriteBlockData(0x08, vec![7, 8, 9]))
        );
        // Byte 1 is not the count of what follows: not a block write.
        assert!(op(&[w(&[0x08, 2, 7, 8, 9])], funcs).is_err());
    }

    #[test]
    fn narrow_commands_fall_back_to_i2c_block_transfers() {
        let funcs = func::SMBUS_READ_I2C_BLOCK | func::SMBUS_WRITE_I2C_BLOCK;
        assert_eq!(
            op(&[w(&[0x10, 0x5a])], funcs),
            Ok(SmbusOp::WriteI2cBlock(0x10, vec![0x5a]))
        );
        assert_eq!(
            op(&[w(&[0x10]), r(2)], funcs),
            Ok(SmbusOp::ReadI2cBlock(0x10, 2))
        );
    }

    #[test]
    fn patterns_without_an_smbus_form_are_refused() {
        for msgs in [
            vec![r(2)],
            vec![w(&[1]), w(&[2])],
            vec![r(1), w(&[1])],
            vec![w(&[1, 2]), r(1)],
            vec![w(&[1]), r(33)],
            vec![w(&[0; 40])],
            vec![w(&[1]), r(1), r(1)],
            vec![],
        ] {
            assert!(
                matches!(op(&msgs, ALL), Err(Unsupported::Pattern(_))),
                "{}",
                pattern(&msgs)
            );
        }
    }

    #[test]
    fn two_clients_in_one_transfer_are_refused() {
        let msgs = [w(&[1]), Msg::read(0x1d, 1)];
        assert_eq!(plan(&msgs, ALL), Err(Unsupported::MixedAddresses));
    }

    #[test]
    fn missing_function_is_named() {
        let err = op(&[w(&[0x20, 1, 2]), r(2)], STUB).unwrap_err();
        assert!(err.to_string().contains("process call"), "{err}");
        let err = op(&[w(&[])], func::SMBUS_READ_BYTE).unwrap_err();
        assert!(err.to_string().contains("quick"), "{err}");
    }

    #[test]
    fn replies_land_in_the_read_message() {
        let mut msgs = vec![w(&[0x10]), r(2)];
        fill(
            &mut msgs,
            &SmbusOp::ReadWordData(0x10),
            &SmbusReply::Word(0x1234),
        )
        .unwrap();
        assert_eq!(msgs[1].buf, vec![0x34, 0x12]);

        let mut msgs = vec![r(1)];
        fill(&mut msgs, &SmbusOp::ReceiveByte, &SmbusReply::Byte(7)).unwrap();
        assert_eq!(msgs[0].buf, vec![7]);
    }

    #[test]
    fn short_block_reply_is_an_error() {
        let mut msgs = vec![w(&[0xf8]), r(16)];
        let result = fill(
            &mut msgs,
            &SmbusOp::ReadI2cBlock(0xf8, 16),
            &SmbusReply::Block(vec![0; 8]),
        );
        assert!(result.is_err());
    }

    #[test]
    fn every_command_maps_back_to_itself_through_its_messages() {
        for op in [
            SmbusOp::Quick { read: true },
            SmbusOp::Quick { read: false },
            SmbusOp::ReceiveByte,
            SmbusOp::SendByte(3),
            SmbusOp::ReadByteData(4),
            SmbusOp::WriteByteData(4, 5),
            SmbusOp::ReadWordData(6),
            SmbusOp::WriteWordData(6, 0x0708),
            SmbusOp::ProcessCall(9, 0x0a0b),
            SmbusOp::ReadI2cBlock(0x10, 8),
            SmbusOp::WriteI2cBlock(0x10, vec![1, 2, 3]),
        ] {
            let msgs = as_messages(0x1c, &op);
            assert_eq!(plan(&msgs, ALL), Ok((0x1c, op.clone())), "{op:?}");
        }
    }

    #[test]
    fn replies_are_read_back_from_the_messages() {
        let mut msgs = as_messages(0x1c, &SmbusOp::ReadWordData(0));
        msgs[1].buf = vec![0x34, 0x12];
        assert_eq!(
            reply_from(&SmbusOp::ReadWordData(0), &msgs),
            SmbusReply::Word(0x1234)
        );
    }
}
