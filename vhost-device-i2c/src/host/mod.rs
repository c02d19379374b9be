// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host side: I2C adapters.
//!
//! [`I2cBus`] is the narrow, ioctl-shaped interface to one adapter
//! (`I2C_FUNCS`, `I2C_RDWR`, `I2C_SLAVE` + `I2C_SMBUS` on `/dev/i2c-N`).
//! Implementations: [`linux::LinuxBus`] (the `i2cdev` crate, plus `nix` for
//! `I2C_FUNCS`), [`sim::SimBus`] (a simulated adapter with EEPROMs and
//! sensors, selectable as `sim` in `--device-list`) and [`mock::MockBus`]
//! (records every call, for unit tests).
//!
//! [`Adapter`] puts one guest transfer — the messages of one request group —
//! onto a bus: as one `I2C_RDWR` on a full I2C adapter, or as the one SMBus
//! command with the same bus traffic on an SMBus-only adapter ([`smbus`]).
//! [`worker::AdapterWorker`] runs an adapter on its own thread, so a slow
//! bus never blocks a vring worker.

pub mod linux;
pub mod mock;
pub mod sim;
pub mod smbus;
pub mod worker;

use std::io;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use smbus::{SmbusOp, SmbusReply};

/// `I2C_FUNC_*` bits of `I2C_FUNCS` (Linux `include/uapi/linux/i2c.h`).
pub mod func {
    /// Plain I2C messages (`I2C_RDWR`).
    pub const I2C: u32 = 0x0000_0001;
    /// SMBus quick command.
    pub const SMBUS_QUICK: u32 = 0x0001_0000;
    /// SMBus receive byte.
    pub const SMBUS_READ_BYTE: u32 = 0x0002_0000;
    /// SMBus send byte.
    pub const SMBUS_WRITE_BYTE: u32 = 0x0004_0000;
    /// SMBus read byte data.
    pub const SMBUS_READ_BYTE_DATA: u32 = 0x0008_0000;
    /// SMBus write byte data.
    pub const SMBUS_WRITE_BYTE_DATA: u32 = 0x0010_0000;
    /// SMBus read word data.
    pub const SMBUS_READ_WORD_DATA: u32 = 0x0020_0000;
    /// SMBus write word data.
    pub const SMBUS_WRITE_WORD_DATA: u32 = 0x0040_0000;
    /// SMBus process call.
    pub const SMBUS_PROC_CALL: u32 = 0x0080_0000;
    /// SMBus block write.
    pub const SMBUS_WRITE_BLOCK_DATA: u32 = 0x0200_0000;
    /// I2C-style block read (command, then N bytes).
    pub const SMBUS_READ_I2C_BLOCK: u32 = 0x0400_0000;
    /// I2C-style block write (command, then N bytes).
    pub const SMBUS_WRITE_I2C_BLOCK: u32 = 0x0800_0000;
    /// What Linux's SMBus emulation over plain I2C offers.
    pub const SMBUS_EMUL: u32 = SMBUS_QUICK
        | SMBUS_READ_BYTE
        | SMBUS_WRITE_BYTE
        | SMBUS_READ_BYTE_DATA
        | SMBUS_WRITE_BYTE_DATA
        | SMBUS_READ_WORD_DATA
        | SMBUS_WRITE_WORD_DATA
        | SMBUS_PROC_CALL
        | SMBUS_WRITE_BLOCK_DATA
        | SMBUS_READ_I2C_BLOCK
        | SMBUS_WRITE_I2C_BLOCK;
}

/// Largest message `I2C_RDWR` accepts (Linux `i2c-dev`: 8192 bytes).
pub const MAX_MSG_LEN: usize = 8192;
/// Most messages in one `I2C_RDWR` (`I2C_RDWR_IOCTL_MAX_MSGS`).
pub const MAX_MSGS: usize = 42;

/// One I2C message of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    /// 7-bit client address.
    pub addr: u8,
    /// A read (the client sends `buf.len()` bytes); else a write of `buf`.
    pub read: bool,
    /// The bytes written, or room for (then the bytes of) a read.
    pub buf: Vec<u8>,
}

impl Msg {
    /// A write of `data` to `addr`.
    pub fn write(addr: u8, data: &[u8]) -> Self {
        Self {
            addr,
            read: false,
            buf: data.to_vec(),
        }
    }

    /// A read of `len` bytes from `addr`.
    pub fn read(addr: u8, len: usize) -> Self {
        Self {
            addr,
            read: true,
            buf: vec![0; len],
        }
    }
}

/// One host I2C adapter, as its `/dev/i2c-N` ioctls see it.
pub trait I2cBus: Send {
    /// A name for logs and errors (`/dev/i2c-3 (SMBus stub driver)`).
    fn name(&self) -> String;

    /// `I2C_FUNCS`: what the adapter can do ([`func`] bits).
    fn funcs(&mut self) -> io::Result<u32>;

    /// `I2C_RDWR`: run `msgs` as one combined transaction (repeated START
    /// between messages, one STOP at the end) and fill the read buffers.
    /// Returns how many messages completed, as the kernel does: fewer than
    /// `msgs.len()` means message *n* failed and the rest never ran.
    fn rdwr(&mut self, msgs: &mut [Msg]) -> io::Result<usize>;

    /// `I2C_SLAVE` to `addr`, then `I2C_SMBUS` with `op`.
    fn smbus(&mut self, addr: u8, op: &SmbusOp) -> io::Result<SmbusReply>;

    /// Check at startup that `addr` may be used (`I2C_SLAVE` fails with
    /// `EBUSY` when a host kernel driver has claimed the client).
    fn claim(&mut self, _addr: u8) -> io::Result<()> {
        Ok(())
    }
}

/// Why a transfer failed as a whole.
#[derive(Debug, Error)]
pub enum TransferError {
    /// The host adapter failed (a NACK is `ENXIO`/`EREMOTEIO`, a timeout
    /// `ETIMEDOUT`, …).
    #[error("{adapter}: transfer failed")]
    Host {
        /// Adapter name.
        adapter: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An SMBus-only adapter cannot do this message pattern.
    #[error("{adapter} is SMBus-only and has no command for this transfer")]
    NoSmbusCommand {
        /// Adapter name.
        adapter: String,
        /// Why.
        #[source]
        source: smbus::Unsupported,
    },
}

/// An adapter and how transfers go onto it.
pub struct Adapter {
    bus: Box<dyn I2cBus>,
    funcs: u32,
    name: String,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("name", &self.name)
            .field("funcs", &format_args!("{:#010x}", self.funcs))
            .finish()
    }
}

impl Adapter {
    /// Take `bus` and ask what it can do.
    pub fn new(mut bus: Box<dyn I2cBus>) -> io::Result<Self> {
        let name = bus.name();
        let funcs = bus.funcs()?;
        Ok(Self { bus, funcs, name })
    }

    /// The adapter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `I2C_FUNCS` bits.
    pub fn funcs(&self) -> u32 {
        self.funcs
    }

    /// Whether transfers go out as SMBus commands.
    pub fn smbus_only(&self) -> bool {
        self.funcs & func::I2C == 0
    }

    /// See [`I2cBus::claim`].
    pub fn claim(&mut self, addr: u8) -> io::Result<()> {
        self.bus.claim(addr)
    }

    /// Run `msgs` as one transfer; read buffers are filled. Returns how many
    /// messages completed (all of them, or the ones before the failed one).
    pub fn transfer(&mut self, msgs: &mut [Msg]) -> Result<usize, TransferError> {
        // A lone zero-length message (a probe) goes out as SMBus quick where
        // the adapter offers it: many I2C controllers cannot send a
        // zero-length I2C_RDWR message (I2C_AQ_NO_ZERO_LEN) but do quick.
        let quick_probe =
            matches!(msgs, [m] if m.buf.is_empty()) && self.funcs & func::SMBUS_QUICK != 0;
        if !self.smbus_only() && !quick_probe {
            return self.bus.rdwr(msgs).map_err(|source| TransferError::Host {
                adapter: self.name.clone(),
                source,
            });
        }
        let (addr, op) =
            smbus::plan(msgs, self.funcs).map_err(|source| TransferError::NoSmbusCommand {
                adapter: self.name.clone(),
                source,
            })?;
        let reply = self
            .bus
            .smbus(addr, &op)
            .map_err(|source| TransferError::Host {
                adapter: self.name.clone(),
                source,
            })?;
        smbus::fill(msgs, &op, &reply).map_err(|source| TransferError::Host {
            adapter: self.name.clone(),
            source,
        })?;
        Ok(msgs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::mock::{Call, MockBus};
    use super::*;

    #[test]
    fn i2c_adapter_gets_one_rdwr_with_every_message() {
        let bus = MockBus::new(func::I2C | func::SMBUS_EMUL);
        let mut adapter = Adapter::new(Box::new(bus.clone())).unwrap();
        let mut msgs = [Msg::write(0x50, &[0]), Msg::read(0x50, 1)];

        assert_eq!(adapter.transfer(&mut msgs).unwrap(), 2);

        assert_eq!(
            bus.calls(),
            vec![Call::Rdwr(vec![Msg::write(0x50, &[0]), Msg::read(0x50, 1)])]
        );
    }

    #[test]
    fn probe_is_smbus_quick_where_the_adapter_offers_it() {
        let bus = MockBus::new(func::I2C | func::SMBUS_QUICK);
        let mut adapter = Adapter::new(Box::new(bus.clone())).unwrap();

        adapter.transfer(&mut [Msg::read(0x50, 0)]).unwrap();

        assert_eq!(
            bus.calls(),
            vec![Call::Smbus(0x50, SmbusOp::Quick { read: true })]
        );
    }

    #[test]
    fn probe_is_a_zero_length_rdwr_without_smbus_quick() {
        let bus = MockBus::new(func::I2C);
        let mut adapter = Adapter::new(Box::new(bus.clone())).unwrap();

        adapter.transfer(&mut [Msg::write(0x50, &[])]).unwrap();

        assert_eq!(bus.calls(), vec![Call::Rdwr(vec![Msg::write(0x50, &[])])]);
    }

    #[test]
    fn smbus_refusal_names_the_adapter() {
        let bus = MockBus::new(func::SMBUS_EMUL);
        let mut adapter = Adapter::new(Box::new(bus)).unwrap();

        let err = adapter.transfer(&mut [Msg::read(0x50, 5)]).unwrap_err();

        assert!(matches!(err, TransferError::NoSmbusCommand { .. }));
        assert!(err.to_string().contains("mock adapter"), "{err}");
    }
}
