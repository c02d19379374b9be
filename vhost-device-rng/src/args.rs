// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-rng` and its validation.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use thiserror::Error;
use vhost_device_common::cli::CommonArgs;

use crate::host::SourceConfig;

/// Longest accepted rate-limit period.
pub const MAX_PERIOD_MS: u64 = 3_600_000;

/// vhost-user virtio-rng daemon: serves guest entropy from a host source.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the entropy device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the entropy device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// Host entropy source to read from (a character device, FIFO or file)
    #[arg(long, value_name = "PATH", default_value = "/dev/urandom")]
    pub rng_source: PathBuf,

    /// Serve deterministic pseudo-random bytes from SEED instead of a host source
    /// (for tests and demos; NOT entropy)
    #[arg(long, value_name = "SEED", num_args = 0..=1, default_missing_value = "1", conflicts_with = "rng_source")]
    pub simulate: Option<u64>,

    /// Give each device at most N bytes per --period (default: unlimited)
    #[arg(long, value_name = "N")]
    pub max_bytes: Option<u64>,

    /// Length of the rate-limit period in milliseconds
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000,
        requires = "max_bytes"
    )]
    pub period: u64,
}

/// A rate limit: at most `max_bytes` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Bytes per period.
    pub max_bytes: u64,
    /// Period.
    pub period: Duration,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where entropy comes from.
    pub source: SourceConfig,
    /// Optional rate limit, applied to each device separately.
    pub rate_limit: Option<RateLimit>,
}

/// Invalid options.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// `--max-bytes 0` would starve the guest forever.
    #[error("--max-bytes must be at least 1 (leave it out for no limit)")]
    ZeroMaxBytes,
    /// Period out of range.
    #[error("--period must be between 1 and {MAX_PERIOD_MS} ms, got {0}")]
    BadPeriod(u64),
}

impl TryFrom<DeviceArgs> for Config {
    type Error = ArgsError;

    fn try_from(args: DeviceArgs) -> Result<Self, Self::Error> {
        let rate_limit = match args.max_bytes {
            None => None,
            Some(0) => return Err(ArgsError::ZeroMaxBytes),
            Some(max_bytes) => {
                if args.period == 0 || args.period > MAX_PERIOD_MS {
                    return Err(ArgsError::BadPeriod(args.period));
                }
                Some(RateLimit {
                    max_bytes,
                    period: Duration::from_millis(args.period),
                })
            }
        };
        let source = match args.simulate {
            Some(seed) => SourceConfig::Simulated { seed },
            None => SourceConfig::File(args.rng_source),
        };
        Ok(Self { source, rate_limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(
            ["vhost-device-rng", "--socket-path", "/tmp/s"]
                .iter()
                .chain(args),
        )
    }

    #[test]
    fn defaults_read_urandom_without_limit() {
        let config = Config::try_from(parse(&[]).unwrap().device).unwrap();
        assert_eq!(config.source, SourceConfig::File("/dev/urandom".into()));
        assert_eq!(config.rate_limit, None);
    }

    #[test]
    fn max_bytes_and_period_make_a_rate_limit() {
        let args = parse(&["--max-bytes", "4096", "--period", "250"]).unwrap();
        let config = Config::try_from(args.device).unwrap();
        assert_eq!(
            config.rate_limit,
            Some(RateLimit {
                max_bytes: 4096,
                period: Duration::from_millis(250)
            })
        );
    }

    #[test]
    fn zero_max_bytes_is_rejected() {
        let args = parse(&["--max-bytes", "0"]).unwrap();
        assert_eq!(Config::try_from(args.device), Err(ArgsError::ZeroMaxBytes));
    }

    #[test]
    fn zero_period_is_rejected() {
        let args = parse(&["--max-bytes", "10", "--period", "0"]).unwrap();
        assert_eq!(Config::try_from(args.device), Err(ArgsError::BadPeriod(0)));
    }

    #[test]
    fn period_without_max_bytes_is_a_usage_error() {
        assert!(parse(&["--period", "10"]).is_err());
    }

    #[test]
    fn simulate_conflicts_with_rng_source() {
        assert!(parse(&["--simulate", "--rng-source", "/dev/random"]).is_err());
    }

    #[test]
    fn simulate_without_seed_uses_seed_one() {
        let config = Config::try_from(parse(&["--simulate"]).unwrap().device).unwrap();
        assert_eq!(config.source, SourceConfig::Simulated { seed: 1 });
    }
}
