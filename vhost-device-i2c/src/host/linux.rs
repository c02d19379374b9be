// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Host I2C adapters through `/dev/i2c-N` (Linux `i2c-dev`).
//!
//! `I2C_RDWR` and the SMBus commands go through the `i2cdev` crate
//! (`LinuxI2CBus::transfer`, `LinuxI2CDevice`'s `smbus_*` calls, which set
//! the client with `I2C_SLAVE` — never `I2C_SLAVE_FORCE`: a client that a
//! host kernel driver has claimed is refused at startup). `I2C_FUNCS`, which
//! `i2cdev` does not offer, is a `nix` ioctl.
//!
//! Adapters are named by number or by their sysfs name
//! (`/sys/bus/i2c/devices/i2c-N/name`, matched exactly and uniquely).

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use i2cdev::core::{I2CDevice, I2CMessage, I2CTransfer};
use i2cdev::linux::{LinuxI2CBus, LinuxI2CDevice, LinuxI2CMessage};
use thiserror::Error;

use super::{I2cBus, Msg, SmbusOp, SmbusReply};
use crate::args::BusRef;

/// Where Linux lists I2C adapters and clients.
pub const SYSFS_I2C_DEVICES: &str = "/sys/bus/i2c/devices";

/// `I2C_FUNCS` (`include/uapi/linux/i2c-dev.h`): `unsigned long *` argument.
const I2C_FUNCS: libc::c_ulong = 0x0705;
nix::ioctl_read_bad!(i2c_funcs_ioctl, I2C_FUNCS, libc::c_ulong);

/// An adapter name that does not name exactly one adapter.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// No adapter has this name.
    #[error("no I2C adapter is named '{name}' (adapters: {available})")]
    NoSuchName {
        /// The name asked for.
        name: String,
        /// What there is, `N: name` each.
        available: String,
    },
    /// Several adapters have this name.
    #[error(
        "{count} I2C adapters are named '{name}' ({numbers}); give the adapter number instead"
    )]
    Ambiguous {
        /// The name asked for.
        name: String,
        /// How many.
        count: usize,
        /// Their numbers.
        numbers: String,
    },
    /// The sysfs directory cannot be read.
    #[error("cannot list I2C adapters in {}", dir.display())]
    Sysfs {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Every adapter listed in `sysfs` (`/sys/bus/i2c/devices`): number and name.
pub fn adapters(sysfs: &Path) -> Result<Vec<(u32, String)>, ResolveError> {
    let entries = match fs::read_dir(sysfs) {
        Ok(entries) => entries,
        // No I2C core, or no adapter ever registered: no adapters.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ResolveError::Sysfs {
                dir: sysfs.into(),
                source,
            })
        }
    };
    let mut found: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file_name = e.file_name();
            let n = file_name.to_str()?.strip_prefix("i2c-")?.parse().ok()?;
            let name = fs::read_to_string(e.path().join("name")).ok()?;
            Some((n, name.trim_end_matches('\n').to_owned()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The adapter number `bus` names (`sysfs` is `/sys/bus/i2c/devices`);
/// `None` for `sim`.
pub fn resolve(bus: &BusRef, sysfs: &Path) -> Result<Option<u32>, ResolveError> {
    let name = match bus {
        BusRef::Number(n) => return Ok(Some(*n)),
        BusRef::Sim => return Ok(None),
        BusRef::Name(name) => name,
    };
    let all = adapters(sysfs)?;
    let matches: Vec<u32> = all
        .iter()
        .filter(|(_, n)| n == name)
        .map(|&(num, _)| num)
        .collect();
    match matches.as_slice() {
        [one] => Ok(Some(*one)),
        [] => Err(ResolveError::NoSuchName {
            name: name.clone(),
            available: if all.is_empty() {
                "none".into()
            } else {
                all.iter()
                    .map(|(n, name)| format!("{n}: {name}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
        many => Err(ResolveError::Ambiguous {
            name: name.clone(),
            count: many.len(),
            numbers: many
                .iter()
                .map(|n| format!("i2c-{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `/dev/i2c-N`.
pub fn dev_path(n: u32) -> PathBuf {
    PathBuf::from(format!("/dev/i2c-{n}"))
}

/// One host adapter.
pub struct LinuxBus {
    path: PathBuf,
    label: String,
    bus: LinuxI2CBus,
    /// For SMBus commands: a second descriptor whose `I2C_SLAVE` is `client`.
    client: Option<(LinuxI2CDevice, u8)>,
}

impl std::fmt::Debug for LinuxBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxBus")
            .field("path", &self.path)
            .finish()
    }
}

/// An ioctl or open of a `/dev/i2c-N` that failed.
#[derive(Debug, Error)]
#[error("{what} {}", path.display())]
pub struct DevError {
    /// What was done.
    pub what: String,
    /// The device file.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

/// `e` as an `io::Error` of the same kind that names `path` and keeps `e`
/// as its cause.
fn with_path(path: &Path, what: impl Into<String>, e: impl Into<io::Error>) -> io::Error {
    let source: io::Error = e.into();
    io::Error::new(
        source.kind(),
        DevError {
            what: what.into(),
            path: path.into(),
            source,
        },
    )
}

impl LinuxBus {
    /// Open `/dev/i2c-N`; `sysfs` is where its name is read from.
    pub fn open(n: u32, sysfs: &Path) -> io::Result<Self> {
        let path = dev_path(n);
        let bus = LinuxI2CBus::new(&path).map_err(|e| with_path(&path, "cannot open", e))?;
        let name = fs::read_to_string(sysfs.join(format!("i2c-{n}")).join("name"))
            .map(|s| s.trim_end_matches('\n').to_owned())
            .unwrap_or_default();
        let label = if name.is_empty() {
            path.display().to_string()
        } else {
            format!("{} ({name})", path.display())
        };
        Ok(Self {
            path,
            label,
            bus,
            client: None,
        })
    }

    /// The SMBus descriptor, pointed at `addr`.
    fn client(&mut self, addr: u8) -> io::Result<&mut LinuxI2CDevice> {
        if let Some((dev, current)) = &mut self.client {
            if *current != addr {
                dev.set_slave_address(u16::from(addr))?;
                *current = addr;
            }
        } else {
            let dev = LinuxI2CDevice::new(&self.path, u16::from(addr))?;
            self.client = Some((dev, addr));
        }
        self.client
            .as_mut()
            .map(|(dev, _)| dev)
            .ok_or_else(|| io::Error::other("no SMBus descriptor"))
    }
}

impl I2cBus for LinuxBus {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn funcs(&mut self) -> io::Result<u32> {
        let mut funcs: libc::c_ulong = 0;
        // SAFETY: I2C_FUNCS writes one `unsigned long` through the pointer,
        // which points at `funcs`, alive for the call; the descriptor is the
        // open /dev/i2c-N this struct owns.
        unsafe { i2c_funcs_ioctl(self.bus.as_raw_fd(), &mut funcs) }
            .map_err(|e| with_path(&self.path, "I2C_FUNCS on", e))?;
        // The bits are defined within 32 bits.
        Ok(u32::try_from(funcs & 0xffff_ffff).unwrap_or(0))
    }

    fn rdwr(&mut self, msgs: &mut [Msg]) -> io::Result<usize> {
        let mut raw: Vec<LinuxI2CMessage<'_>> = msgs
            .iter_mut()
            .map(|m| {
                let msg = if m.read {
                    LinuxI2CMessage::read(&mut m.buf)
                } else {
                    LinuxI2CMessage::write(&m.buf)
                };
                msg.with_address(u16::from(m.addr))
            })
            .collect();
        let done = self.bus.transfer(&mut raw).map_err(io::Error::from)?;
        Ok(usize::try_from(done).unwrap_or(0))
    }

    fn smbus(&mut self, addr: u8, op: &SmbusOp) -> io::Result<SmbusReply> {
        let dev = self.client(addr)?;
        let reply = match op {
            SmbusOp::Quick { read } => dev.smbus_write_quick(*read).map(|()| SmbusReply::None),
            SmbusOp::ReceiveByte => dev.smbus_read_byte().map(SmbusReply::Byte),
            SmbusOp::SendByte(b) => dev.smbus_write_byte(*b).map(|()| SmbusReply::None),
            SmbusOp::ReadByteData(cmd) => dev.smbus_read_byte_data(*cmd).map(SmbusReply::Byte),
            SmbusOp::WriteByteData(cmd, v) => dev
                .smbus_write_byte_data(*cmd, *v)
                .map(|()| SmbusReply::None),
            SmbusOp::ReadWordData(cmd) => dev.smbus_read_word_data(*cmd).map(SmbusReply::Word),
            SmbusOp::WriteWordData(cmd, w) => dev
                .smbus_write_word_data(*cmd, *w)
                .map(|()| SmbusReply::None),
            SmbusOp::ProcessCall(cmd, w) => dev.smbus_process_word(*cmd, *w).map(SmbusReply::Word),
            SmbusOp::WriteBlockData(cmd, data) => dev
                .smbus_write_block_data(*cmd, data)
                .map(|()| SmbusReply::None),
            SmbusOp::ReadI2cBlock(cmd, n) => dev
                .smbus_read_i2c_block_data(*cmd, *n)
                .map(SmbusReply::Block),
            SmbusOp::WriteI2cBlock(cmd, data) => dev
                .smbus_write_i2c_block_data(*cmd, data)
                .map(|()| SmbusReply::None),
        };
        reply.map_err(io::Error::from)
    }

    fn claim(&mut self, addr: u8) -> io::Result<()> {
        match self.client(addr) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(with_path(
                &self.path,
                format!("client {addr:#04x} is claimed by a host kernel driver on"),
                e,
            )),
            Err(e) => Err(with_path(
                &self.path,
                format!("cannot select client {addr:#04x} (I2C_SLAVE) on"),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(adapters: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (entry, name) in adapters {
            let d = dir.path().join(entry);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn unique_name_resolves_to_its_number_and_clients_are_ignored() {
        let dir = sysfs(&[
            ("i2c-0", "i915 gmbus dpb"),
            ("i2c-7", "SMBus stub driver"),
            ("7-001c", "SMBus stub driver"),
        ]);
        let bus = BusRef::Name("SMBus stub driver".into());
        assert_eq!(resolve(&bus, dir.path()).unwrap(), Some(7));
    }

    #[test]
    fn unknown_name_lists_the_adapters() {
        let dir = sysfs(&[("i2c-0", "i915 gmbus dpb")]);
        let err = resolve(&BusRef::Name("nope".into()), dir.path()).unwrap_err();
        assert!(err.to_string().contains("0: i915 gmbus dpb"), "{err}");
    }

    #[test]
    fn ambiguous_name_is_refused_naming_both() {
        let dir = sysfs(&[("i2c-1", "dup"), ("i2c-2", "dup")]);
        let err = resolve(&BusRef::Name("dup".into()), dir.path()).unwrap_err();
        assert!(err.to_string().contains("i2c-1, i2c-2"), "{err}");
    }

    #[test]
    fn numbers_and_sim_need_no_lookup() {
        let missing = Path::new("/nonexistent");
        assert_eq!(resolve(&BusRef::Number(4), missing).unwrap(), Some(4));
        assert_eq!(resolve(&BusRef::Sim, missing).unwrap(), None);
    }

    #[test]
    fn missing_adapter_error_names_the_device_file() {
        let err = LinuxBus::open(987_654, Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("/dev/i2c-987654"), "{err}");
    }
}
