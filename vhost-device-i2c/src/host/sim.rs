// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A simulated I2C adapter (`sim` in `--device-list`), for demos, manual QEMU
//! runs and tests on hosts without I2C hardware.
//!
//! Each listed address holds one simulated client:
//!
//! - **0x50–0x57: a 24c02-style EEPROM**, 256 bytes, erased (0xff) at start.
//!   A write sets the address pointer from its first byte and stores the
//!   rest in *page-write* fashion: the pointer wraps within its 8-byte page,
//!   as the real part does. A read returns bytes from the pointer on,
//!   wrapping at the end of the array. A zero-length message (SMBus quick)
//!   is acknowledged.
//! - **Any other address: a register-file sensor**, 256 byte registers with
//!   an auto-incrementing pointer (wrapping at 0xff). Register 0x00 reads
//!   0x19 (25 °C), 0xfe and 0xff are the ids 0x49 and 0x32; registers
//!   0xf0–0xff are read-only, and a data byte written to one is *not
//!   acknowledged*: the transfer stops there, like a real client refusing a
//!   byte, which is how tests make a message in the middle of a group fail.
//!
//! A transfer runs the messages in order and stops at the first one that
//! fails, reporting how many completed (as `I2C_RDWR` does). The memory of a
//! simulated adapter lives as long as the daemon (a guest reboot keeps it,
//! like real EEPROM) and moves with the device state on migration.
//! `--sim-delay` makes every transfer take that long, to try a slow bus.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{func, smbus, I2cBus, Msg, SmbusOp, SmbusReply};

/// EEPROM page size (24c02: 8 bytes).
pub const EEPROM_PAGE: u8 = 8;
/// Addresses that hold EEPROMs.
pub const EEPROM_ADDRS: std::ops::RangeInclusive<u8> = 0x50..=0x57;
/// First read-only sensor register.
pub const SENSOR_READ_ONLY: u8 = 0xf0;
/// Sensor register 0x00 at start (temperature, °C).
pub const SENSOR_TEMP: u8 = 0x19;
/// Sensor ids at 0xfe and 0xff.
pub const SENSOR_IDS: [u8; 2] = [0x49, 0x32];

/// What kind of client sits at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChipKind {
    /// 24c02-style EEPROM.
    Eeprom,
    /// Register-file sensor.
    Sensor,
}

/// One simulated client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chip {
    /// Its kind.
    pub kind: ChipKind,
    /// Its 256 bytes.
    pub mem: Vec<u8>,
    /// The address pointer.
    pub ptr: u8,
}

impl Chip {
    /// A fresh client of `kind`.
    pub fn new(kind: ChipKind) -> Self {
        let mut mem = vec![0u8; 256];
        match kind {
            ChipKind::Eeprom => mem.fill(0xff),
            ChipKind::Sensor => {
                mem[0] = SENSOR_TEMP;
                mem[0xfe] = SENSOR_IDS[0];
                mem[0xff] = SENSOR_IDS[1];
            }
        }
        Self { kind, mem, ptr: 0 }
    }

    /// Run one message; false if the client did not acknowledge all of it.
    fn message(&mut self, msg: &mut Msg) -> bool {
        if msg.read {
            for b in &mut msg.buf {
                *b = self.mem.get(usize::from(self.ptr)).copied().unwrap_or(0xff);
                self.ptr = self.ptr.wrapping_add(1);
            }
            return true;
        }
        let Some((&first, data)) = msg.buf.split_first() else {
            return true;
        };
        self.ptr = first;
        for &b in data {
            let at = usize::from(self.ptr);
            match self.kind {
                ChipKind::Eeprom => {
                    if let Some(slot) = self.mem.get_mut(at) {
                        *slot = b;
                    }
                    let page = self.ptr & !(EEPROM_PAGE - 1);
                    self.ptr = page | (self.ptr.wrapping_add(1) & (EEPROM_PAGE - 1));
                }
                ChipKind::Sensor => {
                    if self.ptr >= SENSOR_READ_ONLY {
                        return false;
                    }
                    if let Some(slot) = self.mem.get_mut(at) {
                        *slot = b;
                    }
                    self.ptr = self.ptr.wrapping_add(1);
                }
            }
        }
        true
    }
}

/// The clients of one simulated adapter, by address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimState {
    /// Clients by 7-bit address.
    pub chips: BTreeMap<u8, Chip>,
}

impl SimState {
    /// Clients at `addrs`: EEPROMs at 0x50–0x57, sensors elsewhere.
    pub fn new(addrs: &[u8]) -> Self {
        let chips = addrs
            .iter()
            .map(|&a| {
                let kind = if EEPROM_ADDRS.contains(&a) {
                    ChipKind::Eeprom
                } else {
                    ChipKind::Sensor
                };
                (a, Chip::new(kind))
            })
            .collect();
        Self { chips }
    }

    /// Run `msgs` in order; how many completed.
    pub fn transfer(&mut self, msgs: &mut [Msg]) -> usize {
        for (i, m) in msgs.iter_mut().enumerate() {
            let acked = match self.chips.get_mut(&m.addr) {
                Some(chip) => chip.message(m),
                None => false,
            };
            if !acked {
                return i;
            }
        }
        msgs.len()
    }
}

/// A simulated adapter; its state is shared with the device that owns it
/// (for migration).
#[derive(Debug)]
pub struct SimBus {
    state: Arc<Mutex<SimState>>,
    delay: Duration,
    name: String,
}

impl SimBus {
    /// An adapter over `state` whose transfers take `delay`.
    pub fn new(state: Arc<Mutex<SimState>>, delay: Duration, name: String) -> Self {
        Self { state, delay, name }
    }
}

impl I2cBus for SimBus {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn funcs(&mut self) -> io::Result<u32> {
        Ok(func::I2C | func::SMBUS_EMUL)
    }

    fn rdwr(&mut self, msgs: &mut [Msg]) -> io::Result<usize> {
        if !self.delay.is_zero() {
            // This runs on the adapter's own thread, never on a vring worker.
            std::thread::sleep(self.delay);
        }
        Ok(vhost_device_common::lock(&self.state).transfer(msgs))
    }

    fn smbus(&mut self, addr: u8, op: &SmbusOp) -> io::Result<SmbusReply> {
        // As Linux emulates SMBus on an I2C adapter: the same messages.
        let mut msgs = smbus::as_messages(addr, op);
        if self.rdwr(&mut msgs)? < msgs.len() {
            return Err(io::Error::from_raw_os_error(libc::ENXIO));
        }
        Ok(smbus::reply_from(op, &msgs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> SimState {
        SimState::new(&[0x50, 0x1c])
    }

    fn eeprom_read(s: &mut SimState, at: u8, len: usize) -> Vec<u8> {
        let mut msgs = [Msg::write(0x50, &[at]), Msg::read(0x50, len)];
        assert_eq!(s.transfer(&mut msgs), 2);
        msgs[1].buf.clone()
    }

    #[test]
    fn eeprom_starts_erased() {
        assert_eq!(eeprom_read(&mut sim(), 0, 4), vec![0xff; 4]);
    }

    #[test]
    fn eeprom_page_write_wraps_within_its_page() {
        let mut s = sim();
        let mut w = [Msg::write(0x50, &[0x06, 1, 2, 3, 4])];
        assert_eq!(s.transfer(&mut w), 1);
        // 0x06, 0x07, then back to 0x00 and 0x01 of the same page.
        assert_eq!(
            eeprom_read(&mut s, 0x00, 8),
            vec![3, 4, 0xff, 0xff, 0xff, 0xff, 1, 2]
        );
        assert_eq!(eeprom_read(&mut s, 0x08, 1), vec![0xff]);
    }

    #[test]
    fn eeprom_sequential_read_crosses_pages_and_wraps_at_the_end() {
        let mut s = sim();
        s.chips.get_mut(&0x50).unwrap().mem[0xff] = 0xaa;
        s.chips.get_mut(&0x50).unwrap().mem[0] = 0xbb;
        assert_eq!(eeprom_read(&mut s, 0xff, 2), vec![0xaa, 0xbb]);
    }

    #[test]
    fn read_without_address_continues_from_the_pointer() {
        let mut s = sim();
        let mut w = [Msg::write(0x50, &[0x10, 7, 8])];
        s.transfer(&mut w);
        let mut set = [Msg::write(0x50, &[0x10])];
        s.transfer(&mut set);
        let mut r = [Msg::read(0x50, 1)];
        s.transfer(&mut r);
        let mut r2 = [Msg::read(0x50, 1)];
        s.transfer(&mut r2);
        assert_eq!((r[0].buf[0], r2[0].buf[0]), (7, 8));
    }

    #[test]
    fn sensor_has_ids_and_temperature() {
        let mut s = sim();
        let mut msgs = [Msg::write(0x1c, &[0xfe]), Msg::read(0x1c, 2)];
        s.transfer(&mut msgs);
        assert_eq!(msgs[1].buf, SENSOR_IDS.to_vec());
        let mut msgs = [Msg::write(0x1c, &[0x00]), Msg::read(0x1c, 1)];
        s.transfer(&mut msgs);
        assert_eq!(msgs[1].buf, vec![SENSOR_TEMP]);
    }

    #[test]
    fn write_to_read_only_sensor_register_stops_the_transfer_there() {
        let mut s = sim();
        let mut msgs = [
            Msg::write(0x1c, &[0x10, 0xaa]),
            Msg::write(0x1c, &[0xfe, 0x00]),
            Msg::write(0x50, &[0x00, 0x77]),
        ];

        assert_eq!(s.transfer(&mut msgs), 1);

        assert_eq!(s.chips[&0x1c].mem[0x10], 0xaa, "the first message ran");
        assert_eq!(s.chips[&0x1c].mem[0xfe], SENSOR_IDS[0]);
        assert_eq!(
            s.chips[&0x50].mem[0], 0xff,
            "the third message must not run"
        );
    }

    #[test]
    fn absent_client_does_not_acknowledge() {
        let mut msgs = [Msg::write(0x33, &[])];
        assert_eq!(sim().transfer(&mut msgs), 0);
    }

    #[test]
    fn smbus_quick_probe_is_acknowledged_only_by_a_present_client() {
        let state = Arc::new(Mutex::new(SimState::new(&[0x50])));
        let mut bus = SimBus::new(state, Duration::ZERO, "sim".into());
        let quick = SmbusOp::Quick { read: false };

        assert_eq!(bus.smbus(0x50, &quick).unwrap(), SmbusReply::None);
        assert!(bus.smbus(0x51, &quick).is_err());
    }

    #[test]
    fn zero_length_messages_are_acknowledged() {
        let mut msgs = [Msg::write(0x50, &[]), Msg::read(0x1c, 0)];
        assert_eq!(sim().transfer(&mut msgs), 2);
    }
}
