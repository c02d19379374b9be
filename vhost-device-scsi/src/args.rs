// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-scsi` and its validation.

use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;
use vhost_device_common::cli::{parse_key_values, CommonArgs, KeyValueError};

/// Most request queues.
pub const MAX_QUEUES: u32 = 16;
/// Most LUNs.
pub const MAX_LUNS: usize = 256;

/// vhost-user virtio-scsi daemon: one target whose LUNs are image files.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the SCSI device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the SCSI device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// A LUN (repeat for LUN 1, 2, …): `IMAGE[,ro][,rotational][,block-size=512|4096][,direct][,serial=S]`.
    /// IMAGE `mem:SIZE` (e.g. mem:64M) is an in-memory LUN
    #[arg(long = "lun", value_name = "SPEC", required = true)]
    pub luns: Vec<String>,

    /// Number of request queues, each served by its own worker thread
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_QUEUES)))]
    pub num_queues: u32,

    /// Largest transfer in 512-byte sectors (advertised and enforced)
    #[arg(long, default_value_t = 0xffff, value_parser = clap::value_parser!(u32).range(8..=0x40_0000))]
    pub max_sectors: u32,

    /// Commands per LUN the driver may queue (advertised)
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cmd_per_lun: u32,

    /// How reads, writes and flushes reach image files: `io_uring` (many in
    /// flight per queue; falls back to `sync` where the kernel refuses it)
    /// or `sync` (one `preadv`/`pwritev` at a time per queue)
    #[arg(long, value_enum, default_value_t = Engine::IoUring)]
    pub engine: Engine,
}

/// The I/O engine.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// One synchronous `preadv`/`pwritev`/`fdatasync` at a time per queue.
    Sync,
    /// io_uring: every command of a queue in flight at once.
    #[default]
    #[value(name = "io_uring", alias = "io-uring", alias = "uring")]
    IoUring,
}

/// Where a LUN's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// An image file or block device.
    File(PathBuf),
    /// Memory of this many bytes.
    Memory(u64),
}

/// One validated `--lun`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunConfig {
    /// Data.
    pub image: Image,
    /// Open read-only and refuse writes.
    pub read_only: bool,
    /// Report rotating media.
    pub rotational: bool,
    /// 512 or 4096.
    pub block_size: u32,
    /// `O_DIRECT`.
    pub direct: bool,
    /// Unit serial number.
    pub serial: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// LUNs in order.
    pub luns: Vec<LunConfig>,
    /// Request queues.
    pub num_queues: u32,
    /// Largest transfer in sectors.
    pub max_sectors: u32,
    /// Commands per LUN.
    pub cmd_per_lun: u32,
    /// I/O engine.
    pub engine: Engine,
}

/// Invalid options.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// Bad `key=value` syntax.
    #[error("--lun {spec}")]
    Syntax {
        /// The option.
        spec: String,
        /// Why.
        #[source]
        source: KeyValueError,
    },
    /// Unknown key.
    #[error(
        "--lun {spec}: unknown option '{key}' (known: ro, rotational, block-size, direct, serial)"
    )]
    UnknownKey {
        /// The option.
        spec: String,
        /// The key.
        key: String,
    },
    /// Bad value.
    #[error("--lun {spec}: {what}")]
    BadValue {
        /// The option.
        spec: String,
        /// What is wrong.
        what: String,
    },
    /// Too many LUNs.
    #[error("at most {MAX_LUNS} LUNs are supported")]
    TooManyLuns,
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_lun(spec: &str) -> Result<LunConfig, ArgsError> {
    let items = parse_key_values(spec).map_err(|source| ArgsError::Syntax {
        spec: spec.into(),
        source,
    })?;
    let bad = |what: &str| ArgsError::BadValue {
        spec: spec.into(),
        what: what.into(),
    };
    let mut items = items.into_iter();
    let Some((first, None)) = items.next() else {
        return Err(bad("the image path must come first"));
    };
    let image = match first.strip_prefix("mem:") {
        Some(size) => Image::Memory(
            parse_size(size)
                .filter(|&s| s > 0)
                .ok_or_else(|| bad("mem:SIZE needs a size such as 64M"))?,
        ),
        None => Image::File(PathBuf::from(first)),
    };
    let mut lun = LunConfig {
        image,
        read_only: false,
        rotational: false,
        block_size: 512,
        direct: false,
        serial: None,
    };
    for (key, value) in items {
        match (key.as_str(), value) {
            ("ro", None) => lun.read_only = true,
            ("rotational", None) => lun.rotational = true,
            ("direct", None) => lun.direct = true,
            ("block-size", Some(v)) => {
                lun.block_size = match v.as_str() {
                    "512" => 512,
                    "4096" => 4096,
                    _ => return Err(bad("block-size must be 512 or 4096")),
                }
            }
            ("serial", Some(v)) => {
                if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad("serial must be 1 to 32 printable ASCII characters"));
                }
                lun.serial = Some(v);
            }
            ("ro" | "rotational" | "direct", Some(_)) | ("block-size" | "serial", None) => {
                return Err(bad(&format!(
                    "'{key}' takes {}",
                    if key == "block-size" || key == "serial" {
                        "a value"
                    } else {
                        "no value"
                    }
                )))
            }
            _ => {
                return Err(ArgsError::UnknownKey {
                    spec: spec.into(),
                    key,
                })
            }
        }
    }
    if let Image::Memory(size) = lun.image {
        if size % u64::from(lun.block_size) != 0 {
            return Err(bad("mem:SIZE must be a multiple of the block size"));
        }
    }
    Ok(lun)
}

impl TryFrom<DeviceArgs> for Config {
    type Error = ArgsError;

    fn try_from(args: DeviceArgs) -> Result<Self, Self::Error> {
        if args.luns.len() > MAX_LUNS {
            return Err(ArgsError::TooManyLuns);
        }
        Ok(Self {
            luns: args
                .luns
                .iter()
                .map(|s| parse_lun(s))
                .collect::<Result<_, _>>()?,
            num_queues: args.num_queues,
            max_sectors: args.max_sectors,
            cmd_per_lun: args.cmd_per_lun,
            engine: args.engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let a = Args::try_parse_from(
            ["vhost-device-scsi", "--socket-path", "/tmp/s"]
                .iter()
                .chain(args),
        )
        .map_err(|e| e.to_string())?;
        Config::try_from(a.device).map_err(|e| e.to_string())
    }

    #[test]
    fn lun_options_are_parsed() {
        let c = parse(&[
            "--lun",
            "a.img,ro,rotational,block-size=4096,direct,serial=ABC",
        ])
        .unwrap();
        assert_eq!(
            c.luns[0],
            LunConfig {
                image: Image::File("a.img".into()),
                read_only: true,
                rotational: true,
                block_size: 4096,
                direct: true,
                serial: Some("ABC".into()),
            }
        );
    }

    #[test]
    fn memory_lun_takes_a_size() {
        let c = parse(&["--lun", "mem:64M", "--lun", "b.img"]).unwrap();
        assert_eq!(c.luns[0].image, Image::Memory(64 << 20));
        assert_eq!(c.luns[1].image, Image::File("b.img".into()));
    }

    #[test]
    fn odd_block_size_is_rejected() {
        assert!(parse(&["--lun", "a.img,block-size=1024"])
            .unwrap_err()
            .contains("512 or 4096"));
    }

    #[test]
    fn unknown_lun_option_is_named() {
        assert!(parse(&["--lun", "a.img,fast"])
            .unwrap_err()
            .contains("'fast'"));
    }

    #[test]
    fn at_least_one_lun_is_required() {
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn engine_defaults_to_io_uring_and_sync_can_be_chosen() {
        assert_eq!(parse(&["--lun", "a.img"]).unwrap().engine, Engine::IoUring);
        assert_eq!(
            parse(&["--lun", "a.img", "--engine", "sync"])
                .unwrap()
                .engine,
            Engine::Sync
        );
        assert!(parse(&["--lun", "a.img", "--engine", "aio"]).is_err());
    }

    #[test]
    fn queue_count_is_bounded() {
        assert!(parse(&["--lun", "a.img", "--num-queues", "0"]).is_err());
        assert!(parse(&["--lun", "a.img", "--num-queues", "17"]).is_err());
        assert_eq!(
            parse(&["--lun", "a.img", "--num-queues", "4"])
                .unwrap()
                .num_queues,
            4
        );
    }
}
