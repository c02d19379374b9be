// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-rtc` and its validation.
//!
//! `--clock TYPE[:SOURCE][,alarm=on|off][,smear=VARIANT]`, repeatable, lists
//! the device's clocks in clock-id order. Without any, the device has the
//! default set [`DEFAULT_CLOCKS`]: a UTC-smeared clock from `CLOCK_REALTIME`
//! (the one a Linux guest turns into `/dev/rtcN`; every clock also becomes
//! a `/dev/ptpN`), TAI, monotonic and boot time.

use clap::Parser;
use thiserror::Error;
use vhost_device_common::cli::{parse_key_values, CommonArgs, KeyValueError};

use crate::host::{HostConfig, Source};
use crate::virtio::{ClockType, Smearing};

/// The most clocks one device serves.
pub const MAX_CLOCKS: usize = 64;

/// TAI − UTC since 2017-01-01 (the last leap second), in seconds.
pub const TAI_OFFSET_S: u32 = 37;

/// The clocks of a device given no `--clock`.
pub const DEFAULT_CLOCKS: [&str; 4] = [
    "utc-smeared:realtime",
    "tai:tai",
    "monotonic:monotonic",
    "monotonic:boottime",
];

/// vhost-user virtio RTC daemon: host clocks as guest PTP clocks and a guest
/// /dev/rtc with alarms.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the RTC device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the RTC device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// The `--clock` values, in clock-id order (see the module docs).
    #[arg(
        long = "clock",
        value_name = "SPEC",
        help = "A clock, TYPE[:SOURCE][,alarm=on|off][,smear=VARIANT]; repeatable, in \
                clock-id order. TYPE: utc-smeared, utc, utc-maybe-smeared (SOURCE realtime), \
                tai (tai), monotonic (monotonic or boottime). VARIANT (utc-smeared only): \
                unspecified, noon-linear, utc-sls. Default: utc-smeared:realtime tai:tai \
                monotonic:monotonic monotonic:boottime"
    )]
    pub clocks: Vec<String>,

    /// Do not offer alarms (VIRTIO_RTC_F_ALARM): the guest's
    /// /dev/rtc then has no alarm
    #[arg(long)]
    pub no_alarm: bool,

    /// TAI − UTC in seconds, added to CLOCK_TAI while the host kernel has no
    /// TAI offset set (it has one when an NTP or PTP daemon set it)
    #[arg(long, value_name = "SECONDS", default_value_t = TAI_OFFSET_S)]
    pub tai_offset: u32,
}

/// One validated clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockConfig {
    /// What the guest is told the clock is.
    pub clock_type: ClockType,
    /// Smearing variant reported (only for UTC-smeared clocks).
    pub smearing: Smearing,
    /// The host clock behind it.
    pub host: HostConfig,
    /// Whether the clock has an alarm (when alarms are offered).
    pub alarm: bool,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The clocks, in clock-id order.
    pub clocks: Vec<ClockConfig>,
    /// Offer `VIRTIO_RTC_F_ALARM`.
    pub alarms: bool,
}

/// Invalid options.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// Malformed `key=value` list.
    #[error("--clock {spec}")]
    Syntax {
        /// The value.
        spec: String,
        /// Why.
        #[source]
        source: KeyValueError,
    },
    /// Unknown clock type.
    #[error("--clock {spec}: unknown clock type '{kind}' (utc-smeared, utc, utc-maybe-smeared, tai, monotonic)")]
    UnknownType {
        /// The value.
        spec: String,
        /// The type given.
        kind: String,
    },
    /// Unknown source.
    #[error("--clock {spec}: unknown source '{source_name}' (realtime, tai, monotonic, boottime)")]
    UnknownSource {
        /// The value.
        spec: String,
        /// The source given.
        source_name: String,
    },
    /// The source cannot honestly give that clock type.
    #[error("--clock {spec}: a {kind} clock cannot come from CLOCK_{} (use {expected})", .source_name.to_uppercase())]
    Mismatch {
        /// The value.
        spec: String,
        /// The type.
        kind: String,
        /// The source.
        source_name: String,
        /// Sources that fit.
        expected: &'static str,
    },
    /// An option the clock does not know, or a bad value.
    #[error("--clock {spec}: {what}")]
    BadOption {
        /// The value.
        spec: String,
        /// What is wrong.
        what: String,
    },
    /// Too many clocks.
    #[error("at most {MAX_CLOCKS} clocks, got {0}")]
    TooMany(usize),
}

fn clock_type(name: &str) -> Option<ClockType> {
    Some(match name {
        "utc" => ClockType::Utc,
        "tai" => ClockType::Tai,
        "monotonic" => ClockType::Monotonic,
        "utc-smeared" => ClockType::UtcSmeared,
        "utc-maybe-smeared" => ClockType::UtcMaybeSmeared,
        _ => return None,
    })
}

/// The sources a clock type may come from; the first is the default.
fn sources_for(t: ClockType) -> (&'static [Source], &'static str) {
    match t {
        ClockType::Utc | ClockType::UtcSmeared | ClockType::UtcMaybeSmeared => {
            (&[Source::Realtime], "realtime")
        }
        ClockType::Tai => (&[Source::Tai], "tai"),
        ClockType::Monotonic => (
            &[Source::Monotonic, Source::Boottime],
            "monotonic or boottime",
        ),
    }
}

fn parse_clock(spec: &str, tai_offset: u32) -> Result<ClockConfig, ArgsError> {
    let items = parse_key_values(spec).map_err(|source| ArgsError::Syntax {
        spec: spec.into(),
        source,
    })?;
    let bad = |what: String| ArgsError::BadOption {
        spec: spec.into(),
        what,
    };
    let mut items = items.into_iter();
    let Some((first, None)) = items.next() else {
        return Err(bad("the first item must be TYPE[:SOURCE]".into()));
    };
    let (kind, source_name) = match first.split_once(':') {
        Some((k, s)) => (k, Some(s)),
        None => (first.as_str(), None),
    };
    let clock_type = clock_type(kind).ok_or_else(|| ArgsError::UnknownType {
        spec: spec.into(),
        kind: kind.into(),
    })?;
    let (allowed, expected) = sources_for(clock_type);
    let source = match source_name {
        None => allowed[0],
        Some(name) => {
            let s = Source::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| ArgsError::UnknownSource {
                    spec: spec.into(),
                    source_name: name.into(),
                })?;
            if !allowed.contains(&s) {
                return Err(ArgsError::Mismatch {
                    spec: spec.into(),
                    kind: kind.into(),
                    source_name: name.into(),
                    expected,
                });
            }
            s
        }
    };
    let mut alarm = true;
    let mut smearing = Smearing::Unspecified;
    for (key, value) in items {
        match (key.as_str(), value.as_deref()) {
            ("alarm", Some("on")) => alarm = true,
            ("alarm", Some("off")) => alarm = false,
            ("alarm", _) => return Err(bad("alarm=on or alarm=off".into())),
            ("smear", v) if clock_type == ClockType::UtcSmeared => {
                smearing = match v {
                    Some("unspecified") => Smearing::Unspecified,
                    Some("noon-linear") => Smearing::NoonLinear,
                    Some("utc-sls") => Smearing::UtcSls,
                    _ => {
                        return Err(bad(
                            "smear=unspecified, smear=noon-linear or smear=utc-sls".into()
                        ))
                    }
                }
            }
            ("smear", _) => {
                return Err(bad("only a utc-smeared clock has a smearing variant".into()))
            }
            (other, _) => return Err(bad(format!("unknown option '{other}' (alarm, smear)"))),
        }
    }
    Ok(ClockConfig {
        clock_type,
        smearing,
        host: HostConfig {
            source,
            tai_fallback_s: tai_offset,
        },
        alarm,
    })
}

impl TryFrom<DeviceArgs> for Config {
    type Error = ArgsError;

    fn try_from(args: DeviceArgs) -> Result<Self, Self::Error> {
        let specs: Vec<String> = if args.clocks.is_empty() {
            DEFAULT_CLOCKS.iter().map(|s| (*s).to_string()).collect()
        } else {
            args.clocks
        };
        if specs.len() > MAX_CLOCKS {
            return Err(ArgsError::TooMany(specs.len()));
        }
        let clocks = specs
            .iter()
            .map(|s| parse_clock(s, args.tai_offset))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            clocks,
            alarms: !args.no_alarm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ArgsError> {
        let args = Args::try_parse_from(
            ["vhost-device-rtc", "--socket-path", "/tmp/s"]
                .iter()
                .chain(args),
        )
        .unwrap();
        Config::try_from(args.device)
    }

    fn types(c: &Config) -> Vec<(ClockType, Source)> {
        c.clocks
            .iter()
            .map(|c| (c.clock_type, c.host.source))
            .collect()
    }

    #[test]
    fn default_clocks_are_utc_smeared_tai_monotonic_and_boottime_with_alarms() {
        let c = config(&[]).unwrap();
        assert_eq!(
            types(&c),
            vec![
                (ClockType::UtcSmeared, Source::Realtime),
                (ClockType::Tai, Source::Tai),
                (ClockType::Monotonic, Source::Monotonic),
                (ClockType::Monotonic, Source::Boottime),
            ]
        );
        assert!(c.alarms);
        assert!(c.clocks.iter().all(|c| c.alarm));
        assert_eq!(c.clocks[1].host.tai_fallback_s, 37);
    }

    #[test]
    fn given_clocks_replace_the_default_set_in_order() {
        let c = config(&["--clock", "utc", "--clock", "monotonic:boottime"]).unwrap();
        assert_eq!(
            types(&c),
            vec![
                (ClockType::Utc, Source::Realtime),
                (ClockType::Monotonic, Source::Boottime)
            ]
        );
    }

    #[test]
    fn source_defaults_from_the_type() {
        let c = config(&["--clock", "tai", "--clock", "utc-maybe-smeared"]).unwrap();
        assert_eq!(
            types(&c),
            vec![
                (ClockType::Tai, Source::Tai),
                (ClockType::UtcMaybeSmeared, Source::Realtime)
            ]
        );
    }

    #[test]
    fn monotonic_clock_from_realtime_is_refused() {
        let e = config(&["--clock", "monotonic:realtime"]).unwrap_err();
        assert!(matches!(e, ArgsError::Mismatch { .. }));
        assert!(e.to_string().contains("monotonic or boottime"), "{e}");
    }

    #[test]
    fn utc_clock_from_tai_is_refused() {
        assert!(matches!(
            config(&["--clock", "utc:tai"]).unwrap_err(),
            ArgsError::Mismatch { .. }
        ));
    }

    #[test]
    fn unknown_type_and_source_are_named() {
        let e = config(&["--clock", "gps"]).unwrap_err();
        assert!(e.to_string().contains("'gps'"), "{e}");
        let e = config(&["--clock", "utc:ntp"]).unwrap_err();
        assert!(e.to_string().contains("'ntp'"), "{e}");
    }

    #[test]
    fn alarm_off_and_smearing_variant_are_taken() {
        let c = config(&["--clock", "utc-smeared,smear=noon-linear,alarm=off"]).unwrap();
        assert_eq!(c.clocks[0].smearing, Smearing::NoonLinear);
        assert!(!c.clocks[0].alarm);
    }

    #[test]
    fn smearing_of_a_clock_that_does_not_smear_is_refused() {
        assert!(config(&["--clock", "utc,smear=utc-sls"]).is_err());
    }

    #[test]
    fn unknown_clock_option_is_refused() {
        let e = config(&["--clock", "utc,fast"]).unwrap_err();
        assert!(e.to_string().contains("'fast'"), "{e}");
    }

    #[test]
    fn no_alarm_turns_the_feature_off() {
        assert!(!config(&["--no-alarm"]).unwrap().alarms);
    }

    #[test]
    fn tai_offset_reaches_the_tai_clock() {
        let c = config(&["--tai-offset", "38", "--clock", "tai"]).unwrap();
        assert_eq!(c.clocks[0].host.tai_fallback_s, 38);
    }

    #[test]
    fn too_many_clocks_are_refused() {
        let many: Vec<&str> = std::iter::repeat_n(["--clock", "utc"], MAX_CLOCKS + 1)
            .flatten()
            .collect();
        assert_eq!(
            config(&many).unwrap_err(),
            ArgsError::TooMany(MAX_CLOCKS + 1)
        );
    }
}
