// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-sound`, its validation, and the device
//! topology it describes (streams, channel ranges, formats, rates).

use std::path::{Path, PathBuf};

use clap::Parser;
use thiserror::Error;
use vhost_device_common::cli::{parse_key_values, CommonArgs, KeyValueError, SocketSource};

use crate::virtio::{rate_bit, Direction, Format, RATES};

/// Most streams a device may have.
pub const MAX_STREAMS: usize = 64;

/// vhost-user virtio-sound daemon: plays and records a guest's audio in real
/// time through ALSA, PipeWire, WAV files or nothing.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the sound device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Which host audio backend serves the streams.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// Playback discarded, capture silence, paced in real time by a timer.
    #[default]
    Null,
    /// Playback written to WAV files, capture read from a WAV file (looped),
    /// paced in real time by a timer.
    Wav,
    /// A host ALSA PCM per stream.
    Alsa,
    /// A stream per PCM stream on the user's PipeWire.
    Pipewire,
}

/// Options of the sound device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// Host audio backend
    #[arg(long, value_enum, default_value_t = BackendKind::Null)]
    pub backend: BackendKind,

    /// A PCM stream: `output` or `input`, then optionally `,channels=N` (or
    /// MIN-MAX), `,formats=` of u8 s16 s24 s32 float joined by +, `,rates=` in
    /// Hz from 8000 to 192000 joined by +; repeat for more streams (default:
    /// one stereo output and one stereo input, every format and rate)
    #[arg(long = "stream", alias = "streams", value_name = "SPEC")]
    pub streams: Vec<String>,

    /// `wav` backend: directory for the playback files (`stream<N>.wav`)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub wav_dir: PathBuf,

    /// `wav` backend: WAV file that capture streams read, looped (default: silence)
    #[arg(long, value_name = "FILE")]
    pub wav_capture: Option<PathBuf>,

    /// `alsa` backend: PCM for playback streams
    #[arg(long, value_name = "PCM", default_value = "default")]
    pub alsa_playback: String,

    /// `alsa` backend: PCM for capture streams
    #[arg(long, value_name = "PCM", default_value = "default")]
    pub alsa_capture: String,

    /// `pipewire` backend: the node (name or serial) playback streams are
    /// linked to (`target.object`; default: the session manager's default
    /// sink)
    #[arg(long, value_name = "NODE")]
    pub pipewire_playback: Option<String>,

    /// `pipewire` backend: the node (name or serial) capture streams are
    /// linked to (`target.object`; default: the session manager's default
    /// source)
    #[arg(long, value_name = "NODE")]
    pub pipewire_capture: Option<String>,

    /// `pipewire` backend: the streams' node names are NAME-0, NAME-1, …
    #[arg(long, value_name = "NAME", default_value = "vhost-device-sound")]
    pub pipewire_name: String,

    /// `pipewire` backend: one more stream property, KEY=VALUE (repeat for
    /// more; set after the daemon's own, so it may override them), e.g.
    /// `node.latency=256/48000`
    #[arg(long, value_name = "KEY=VALUE")]
    pub pipewire_property: Vec<String>,

    /// Offer audio controls (VIRTIO_SND_F_CTLS): per stream volume and
    /// switch. Only with QEMU's `vhost-user-snd-pci,controls=on`
    #[arg(long)]
    pub controls: bool,

    /// With --controls: Unix socket through which the host reads and
    /// changes the controls (default: the device's socket path followed by
    /// `.ctl`; with --socket-count N > 1, PATH0 … PATH{N-1}; none with
    /// --socket-fd unless given)
    #[arg(long, value_name = "PATH", requires = "controls")]
    pub control_socket: Option<PathBuf>,
}

/// One PCM stream of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Playback or capture.
    pub direction: Direction,
    /// Fewest channels.
    pub channels_min: u8,
    /// Most channels.
    pub channels_max: u8,
    /// Supported formats.
    pub formats: Vec<Format>,
    /// Supported rates, in Hz.
    pub rates: Vec<u32>,
}

impl StreamSpec {
    /// The default stream: stereo, every format, 8 to 192 kHz.
    pub fn default_for(direction: Direction) -> Self {
        Self {
            direction,
            channels_min: 1,
            channels_max: 2,
            formats: Format::ALL.to_vec(),
            rates: RATES.iter().copied().filter(|&r| r >= 8000).collect(),
        }
    }

    /// The `formats` bit map of PCM_INFO.
    pub fn format_mask(&self) -> u64 {
        self.formats.iter().fold(0, |m, f| m | 1u64 << f.bit())
    }

    /// The `rates` bit map of PCM_INFO.
    pub fn rate_mask(&self) -> u64 {
        self.rates
            .iter()
            .filter_map(|&r| rate_bit(r))
            .fold(0, |m, b| m | 1u64 << b)
    }
}

/// Where the backend sends and takes audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// Nothing.
    Null,
    /// WAV files.
    Wav {
        /// Directory of the playback files.
        dir: PathBuf,
        /// Capture source, looped.
        capture: Option<PathBuf>,
    },
    /// ALSA PCMs.
    Alsa {
        /// Playback PCM name.
        playback: String,
        /// Capture PCM name.
        capture: String,
    },
    /// PipeWire streams.
    Pipewire {
        /// Node name prefix.
        name: String,
        /// Playback target node, if any.
        playback: Option<String>,
        /// Capture target node, if any.
        capture: Option<String>,
        /// More stream properties.
        properties: Vec<(String, String)>,
    },
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Host backend.
    pub backend: BackendConfig,
    /// Streams, by id.
    pub streams: Vec<StreamSpec>,
    /// Offer controls.
    pub controls: bool,
    /// `--control-socket`, as given.
    pub control_socket: Option<PathBuf>,
}

impl Config {
    /// The host control socket of each device (`--controls` only): the
    /// given path (suffixed with the device index when there are several),
    /// or the device's socket path followed by `.ctl`.
    pub fn control_sockets(&self, sockets: Option<&SocketSource>) -> Vec<Option<PathBuf>> {
        let suffixed = |p: &Path, suffix: &str| {
            let mut name = p.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let count = match sockets {
            Some(SocketSource::Paths(p)) => p.len(),
            Some(SocketSource::Fds(f)) => f.len(),
            None => 0,
        };
        (0..count)
            .map(|i| {
                if !self.controls {
                    return None;
                }
                match (&self.control_socket, sockets) {
                    (Some(p), _) if count > 1 => Some(suffixed(p, &i.to_string())),
                    (Some(p), _) => Some(p.clone()),
                    (None, Some(SocketSource::Paths(paths))) => {
                        paths.get(i).map(|p| suffixed(p, ".ctl"))
                    }
                    (None, _) => None,
                }
            })
            .collect()
    }
}

/// Invalid options.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// A `--stream` that is not `key=value,…`.
    #[error("--stream '{spec}'")]
    Syntax {
        /// The option.
        spec: String,
        /// Why.
        #[source]
        source: KeyValueError,
    },
    /// A `--stream` with a bad part.
    #[error("--stream '{spec}': {why}")]
    Stream {
        /// The option.
        spec: String,
        /// Why.
        why: String,
    },
    /// Too many streams.
    #[error("at most {MAX_STREAMS} streams, got {0}")]
    TooManyStreams(usize),
    /// A backend that this build lacks.
    #[error("this build has no {0} backend (cargo feature '{0}')")]
    NotBuilt(&'static str),
    /// A bad backend option.
    #[error("{0}")]
    Backend(String),
}

fn parse_channels(v: &str) -> Option<(u8, u8)> {
    let (lo, hi) = match v.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let n = v.parse().ok()?;
            (n, n)
        }
    };
    let max = u8::try_from(crate::virtio::chmap::MAX).unwrap_or(18);
    (1..=max).contains(&lo).then_some(())?;
    (lo..=max).contains(&hi).then_some((lo, hi))
}

fn parse_format(name: &str) -> Option<Format> {
    Format::ALL
        .into_iter()
        .find(|f| f.name() == name.to_ascii_lowercase())
}

/// Parse one `--stream` value.
pub fn parse_stream(spec: &str) -> Result<StreamSpec, ArgsError> {
    let bad = |why: String| ArgsError::Stream {
        spec: spec.to_string(),
        why,
    };
    let items = parse_key_values(spec).map_err(|source| ArgsError::Syntax {
        spec: spec.to_string(),
        source,
    })?;
    let mut items = items.into_iter();
    let direction = match items.next() {
        Some((d, None)) if d == "output" || d == "playback" => Direction::Output,
        Some((d, None)) if d == "input" || d == "capture" => Direction::Input,
        _ => return Err(bad("must start with 'output' or 'input'".into())),
    };
    let mut s = StreamSpec::default_for(direction);
    for (key, value) in items {
        let value = value.ok_or_else(|| bad(format!("'{key}' needs a value")))?;
        match key.as_str() {
            "channels" => {
                let (lo, hi) = parse_channels(&value)
                    .ok_or_else(|| bad(format!("channels '{value}': 1 to 18, or MIN-MAX")))?;
                s.channels_min = lo;
                s.channels_max = hi;
            }
            "formats" => {
                let mut formats = Vec::new();
                for name in value.split('+') {
                    let f = parse_format(name).ok_or_else(|| {
                        bad(format!("format '{name}': one of u8 s16 s24 s32 float"))
                    })?;
                    if !formats.contains(&f) {
                        formats.push(f);
                    }
                }
                s.formats = formats;
            }
            "rates" => {
                let mut rates = Vec::new();
                for r in value.split('+') {
                    let hz = r
                        .parse::<u32>()
                        .ok()
                        .filter(|&hz| hz >= 8000 && rate_bit(hz).is_some())
                        .ok_or_else(|| {
                            bad(format!(
                                "rate '{r}': one of 8000 11025 16000 22050 32000 44100 48000 64000 88200 96000 176400 192000"
                            ))
                        })?;
                    if !rates.contains(&hz) {
                        rates.push(hz);
                    }
                }
                s.rates = rates;
            }
            other => return Err(bad(format!("unknown option '{other}'"))),
        }
    }
    Ok(s)
}

impl TryFrom<DeviceArgs> for Config {
    type Error = ArgsError;

    fn try_from(args: DeviceArgs) -> Result<Self, Self::Error> {
        let streams = if args.streams.is_empty() {
            vec![
                StreamSpec::default_for(Direction::Output),
                StreamSpec::default_for(Direction::Input),
            ]
        } else {
            args.streams
                .iter()
                .map(|s| parse_stream(s))
                .collect::<Result<Vec<_>, _>>()?
        };
        if streams.len() > MAX_STREAMS {
            return Err(ArgsError::TooManyStreams(streams.len()));
        }
        let backend = match args.backend {
            BackendKind::Null => BackendConfig::Null,
            BackendKind::Wav => BackendConfig::Wav {
                dir: args.wav_dir,
                capture: args.wav_capture,
            },
            BackendKind::Alsa => {
                if !cfg!(feature = "alsa") {
                    return Err(ArgsError::NotBuilt("alsa"));
                }
                BackendConfig::Alsa {
                    playback: args.alsa_playback,
                    capture: args.alsa_capture,
                }
            }
            BackendKind::Pipewire => {
                if !cfg!(feature = "pipewire") {
                    return Err(ArgsError::NotBuilt("pipewire"));
                }
                if args.pipewire_name.is_empty() {
                    return Err(ArgsError::Backend(
                        "--pipewire-name must not be empty".into(),
                    ));
                }
                let properties = args
                    .pipewire_property
                    .iter()
                    .map(|p| match p.split_once('=') {
                        Some((k, v)) if !k.trim().is_empty() => {
                            Ok((k.trim().to_string(), v.to_string()))
                        }
                        _ => Err(ArgsError::Backend(format!(
                            "--pipewire-property '{p}': KEY=VALUE"
                        ))),
                    })
                    .collect::<Result<_, _>>()?;
                BackendConfig::Pipewire {
                    name: args.pipewire_name,
                    playback: args.pipewire_playback.filter(|t| !t.is_empty()),
                    capture: args.pipewire_capture.filter(|t| !t.is_empty()),
                    properties,
                }
            }
        };
        Ok(Self {
            backend,
            streams,
            controls: args.controls,
            control_socket: args.control_socket,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(controls: bool, control_socket: Option<&str>) -> Config {
        Config::try_from(DeviceArgs {
            controls,
            control_socket: control_socket.map(PathBuf::from),
            ..DeviceArgs::default()
        })
        .unwrap()
    }

    #[test]
    fn control_sockets_default_to_the_socket_path_plus_ctl() {
        let paths = SocketSource::Paths(vec!["/run/a0".into(), "/run/a1".into()]);

        let got = config_with(true, None).control_sockets(Some(&paths));

        assert_eq!(
            got,
            vec![
                Some(PathBuf::from("/run/a0.ctl")),
                Some(PathBuf::from("/run/a1.ctl"))
            ]
        );
    }

    #[test]
    fn a_given_control_socket_is_suffixed_only_for_several_devices() {
        let one = SocketSource::Fds(vec![3]);
        let two = SocketSource::Fds(vec![3, 4]);
        let c = config_with(true, Some("/run/m"));

        assert_eq!(c.control_sockets(Some(&one)), vec![Some("/run/m".into())]);
        assert_eq!(
            c.control_sockets(Some(&two)),
            vec![Some("/run/m0".into()), Some("/run/m1".into())]
        );
    }

    #[test]
    fn no_control_socket_without_controls_or_a_path() {
        let fds = SocketSource::Fds(vec![3]);
        let paths = SocketSource::Paths(vec!["/run/a".into()]);

        assert_eq!(
            config_with(true, None).control_sockets(Some(&fds)),
            vec![None]
        );
        assert_eq!(
            config_with(false, None).control_sockets(Some(&paths)),
            vec![None]
        );
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(
            ["vhost-device-sound", "--socket-path", "/tmp/s"]
                .iter()
                .chain(args),
        )
    }

    fn config(args: &[&str]) -> Result<Config, ArgsError> {
        Config::try_from(parse(args).unwrap().device)
    }

    #[test]
    fn default_topology_is_one_stereo_output_and_one_stereo_input() {
        let c = config(&[]).unwrap();
        assert_eq!(c.backend, BackendConfig::Null);
        assert_eq!(c.streams.len(), 2);
        assert_eq!(c.streams[0].direction, Direction::Output);
        assert_eq!(c.streams[1].direction, Direction::Input);
        assert_eq!(
            (c.streams[0].channels_min, c.streams[0].channels_max),
            (1, 2)
        );
        assert!(!c.controls);
    }

    #[test]
    fn default_rates_are_8_to_192_khz_in_linux_mapped_bits() {
        let s = StreamSpec::default_for(Direction::Output);
        assert_eq!(s.rate_mask(), 0b1_1111_1111_1110);
    }

    #[test]
    fn stream_spec_sets_channels_formats_and_rates() {
        let s = parse_stream("input,channels=1-6,formats=s16+float,rates=44100+48000").unwrap();
        assert_eq!(s.direction, Direction::Input);
        assert_eq!((s.channels_min, s.channels_max), (1, 6));
        assert_eq!(s.formats, vec![Format::S16, Format::Float]);
        assert_eq!(s.format_mask(), 1 << 5 | 1 << 19);
        assert_eq!(s.rate_mask(), 1 << 6 | 1 << 7);
    }

    #[test]
    fn repeated_streams_keep_their_order() {
        let c = config(&[
            "--stream",
            "output",
            "--streams",
            "output,channels=1",
            "--stream",
            "input",
        ])
        .unwrap();
        let dirs: Vec<_> = c.streams.iter().map(|s| s.direction).collect();
        assert_eq!(
            dirs,
            vec![Direction::Output, Direction::Output, Direction::Input]
        );
        assert_eq!(c.streams[1].channels_max, 1);
    }

    #[test]
    fn bad_stream_specs_are_refused_naming_the_part() {
        for (spec, part) in [
            ("sideways", "output"),
            ("output,channels=0", "channels"),
            ("output,channels=3-2", "channels"),
            ("output,channels=19", "channels"),
            ("output,formats=s8", "s8"),
            ("output,rates=12000", "12000"),
            ("output,rates=5512", "5512"),
            ("output,volume=3", "volume"),
            ("output,channels", "needs a value"),
        ] {
            let err = parse_stream(spec).unwrap_err().to_string();
            assert!(err.contains(part), "{spec}: {err}");
        }
    }

    #[test]
    fn wav_backend_takes_its_paths() {
        let c = config(&[
            "--backend",
            "wav",
            "--wav-dir",
            "/out",
            "--wav-capture",
            "in.wav",
        ])
        .unwrap();
        assert_eq!(
            c.backend,
            BackendConfig::Wav {
                dir: "/out".into(),
                capture: Some("in.wav".into())
            }
        );
    }

    #[test]
    fn pipewire_backend_takes_its_targets_name_and_properties() {
        let c = config(&[
            "--backend",
            "pipewire",
            "--pipewire-playback",
            "hdmi-sink",
            "--pipewire-name",
            "vm1",
            "--pipewire-property",
            "node.latency=256/48000",
            "--pipewire-property",
            "a.b={ x = 1 }",
        ]);
        if !cfg!(feature = "pipewire") {
            assert_eq!(c.unwrap_err(), ArgsError::NotBuilt("pipewire"));
            return;
        }
        assert_eq!(
            c.unwrap().backend,
            BackendConfig::Pipewire {
                name: "vm1".into(),
                playback: Some("hdmi-sink".into()),
                capture: None,
                properties: vec![
                    ("node.latency".into(), "256/48000".into()),
                    ("a.b".into(), "{ x = 1 }".into())
                ],
            }
        );
    }

    #[test]
    #[cfg(feature = "pipewire")]
    fn pipewire_properties_without_a_key_and_an_empty_name_are_refused() {
        for bad in [
            &["--pipewire-property", "latency"][..],
            &["--pipewire-property", "=1"],
            &["--pipewire-name", ""],
        ] {
            let mut args = vec!["--backend", "pipewire"];
            args.extend_from_slice(bad);
            assert!(
                matches!(config(&args), Err(ArgsError::Backend(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn controls_are_off_unless_asked() {
        assert!(config(&["--controls"]).unwrap().controls);
    }
}
