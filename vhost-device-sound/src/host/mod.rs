// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where a stream's audio goes and comes from.
//!
//! [`PcmHost`] is the narrow host interface of one PCM stream, shaped like a
//! non-blocking PCM: `prepare` with the parameters, `start`/`stop`, then whole
//! guest buffers through [`PcmHost::write`] (playback) or [`PcmHost::read`]
//! (capture). Two kinds exist:
//!
//! - **clock-paced** ([`null`], [`wav`]): the host never pushes back; the
//!   device's own timer hands over each buffer at the moment it is due in
//!   real time, and `write`/`read` always succeed at once;
//! - **host-paced** ([`alsa`], [`pipewire`]): the host has its own clock; `write`/`read`
//!   answer `Ok(false)` while there is no room (or no data) yet, and
//!   [`PcmHost::ready_fd`] becomes readable when that may have changed. The
//!   device puts that descriptor into its worker's epoll.
//!
//! No method may block.

#[cfg(feature = "alsa")]
pub mod alsa;
pub mod null;
#[cfg(feature = "pipewire")]
pub mod pipewire;
pub mod sample;
pub mod wav;

use std::io;
use std::os::fd::BorrowedFd;

use crate::args::BackendConfig;
use crate::virtio::{Direction, Format};

/// The parameters of a prepared stream (from SET_PARAMS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PcmParams {
    /// Playback or capture.
    pub direction: Direction,
    /// Channels per frame.
    pub channels: u8,
    /// Sample format.
    pub format: Format,
    /// Frames per second.
    pub rate: u32,
    /// The driver's period.
    pub period_bytes: u32,
    /// The driver's buffer.
    pub buffer_bytes: u32,
    /// Selected `VIRTIO_SND_PCM_F_*` bits.
    pub features: u32,
}

impl PcmParams {
    /// Bytes per frame.
    pub fn frame_bytes(&self) -> u32 {
        u32::from(self.channels) * self.format.bytes()
    }

    /// Bytes per second.
    pub fn byte_rate(&self) -> u64 {
        u64::from(self.frame_bytes()) * u64::from(self.rate)
    }

    /// Nanoseconds that `bytes` of audio last.
    pub fn duration_ns(&self, bytes: u64) -> u64 {
        let rate = self.byte_rate().max(1);
        u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX)
    }

    /// Bytes of audio that fit in `ns` nanoseconds.
    pub fn bytes_in(&self, ns: u64) -> u64 {
        u64::try_from(u128::from(ns) * u128::from(self.byte_rate()) / 1_000_000_000)
            .unwrap_or(u64::MAX)
    }
}

/// One stream's host side.
pub trait PcmHost: Send {
    /// Set the stream up for `params` (PREPARE). Called again after RELEASE
    /// or with new parameters.
    fn prepare(&mut self, params: &PcmParams) -> io::Result<()>;

    /// The stream runs (START).
    fn start(&mut self) -> io::Result<()>;

    /// The stream pauses (STOP); queued data stays.
    fn stop(&mut self) -> io::Result<()>;

    /// Free the host resources (RELEASE); queued data is dropped.
    fn release(&mut self) -> io::Result<()>;

    /// Playback: take this whole buffer. `Ok(false)`: no room now (host-paced
    /// only; nothing was taken).
    fn write(&mut self, data: &[u8]) -> io::Result<bool>;

    /// Capture: fill this whole buffer. `Ok(false)`: not enough captured yet
    /// (host-paced only; nothing was taken).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<bool>;

    /// Readable when a host-paced stream may take or give more; `None` for a
    /// clock-paced stream.
    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Clear the readiness signal (after `ready_fd` fired).
    fn clear_ready(&mut self) {}

    /// Bytes the host holds that the guest already counts as played (or, for
    /// capture, that the host captured and has not delivered yet).
    fn delay_bytes(&self) -> u32 {
        0
    }

    /// Whether an underrun or overrun happened since the last call.
    fn take_xrun(&mut self) -> bool {
        false
    }

    /// A name for logs.
    fn name(&self) -> String;
}

impl BackendConfig {
    /// A fresh host side for stream `id` (one per stream and connection).
    pub fn open(&self, id: u32, direction: Direction) -> io::Result<Box<dyn PcmHost>> {
        Ok(match self {
            BackendConfig::Null => Box::new(null::NullPcm::new(id)),
            BackendConfig::Wav { dir, capture } => match direction {
                Direction::Output => Box::new(wav::WavWriter::new(dir, id)),
                Direction::Input => Box::new(wav::WavReader::new(capture.as_deref(), id)),
            },
            #[cfg(feature = "alsa")]
            BackendConfig::Alsa { playback, capture } => {
                let name = match direction {
                    Direction::Output => playback,
                    Direction::Input => capture,
                };
                Box::new(alsa::AlsaPcm::new(name, id, direction)?)
            }
            #[cfg(not(feature = "alsa"))]
            BackendConfig::Alsa { .. } => {
                return Err(io::Error::other("this build has no ALSA backend"))
            }
            #[cfg(feature = "pipewire")]
            BackendConfig::Pipewire {
                name,
                playback,
                capture,
                properties,
            } => {
                let target = match direction {
                    Direction::Output => playback,
                    Direction::Input => capture,
                };
                Box::new(pipewire::PipewirePcm::new(pipewire::NodeSettings::new(
                    name,
                    id,
                    direction,
                    target.as_deref(),
                    properties,
                ))?)
            }
            #[cfg(not(feature = "pipewire"))]
            BackendConfig::Pipewire { .. } => {
                return Err(io::Error::other("this build has no PipeWire backend"))
            }
        })
    }

    /// Check at startup what can be checked without a guest (the capture
    /// WAV file, the connection to PipeWire), so a bad path or a missing
    /// PipeWire is reported before any socket exists.
    pub fn check(&self) -> io::Result<()> {
        match self {
            BackendConfig::Wav {
                capture: Some(path),
                ..
            } => {
                wav::WavFile::open(path)?;
            }
            #[cfg(feature = "pipewire")]
            BackendConfig::Pipewire { .. } => pipewire::check_connection()?,
            _ => {}
        }
        Ok(())
    }
}

/// The byte that means silence in `format`.
pub fn silence(format: Format) -> u8 {
    match format {
        Format::U8 => 0x80,
        _ => 0,
    }
}
