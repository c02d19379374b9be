// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `null` backend: playback is discarded, capture is silence. It is
//! clock-paced (see [`super`]): the device's timer gives it each buffer when
//! it is due, so a guest plays and records in real time.

use std::io;

use super::{silence, PcmHost, PcmParams};
use crate::virtio::Format;

/// A stream that goes nowhere.
#[derive(Debug)]
pub struct NullPcm {
    id: u32,
    format: Format,
}

impl NullPcm {
    /// The null host side of stream `id`.
    pub fn new(id: u32) -> Self {
        Self {
            id,
            format: Format::S16,
        }
    }
}

impl PcmHost for NullPcm {
    fn prepare(&mut self, params: &PcmParams) -> io::Result<()> {
        self.format = params.format;
        Ok(())
    }

    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn stop(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn release(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn write(&mut self, _data: &[u8]) -> io::Result<bool> {
        Ok(true)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        buf.fill(silence(self.format));
        Ok(true)
    }

    fn name(&self) -> String {
        format!("null stream {}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::Direction;

    #[test]
    fn capture_is_silence_of_the_stream_format() {
        let mut pcm = NullPcm::new(0);
        pcm.prepare(&PcmParams {
            direction: Direction::Input,
            channels: 1,
            format: Format::U8,
            rate: 8000,
            period_bytes: 4,
            buffer_bytes: 8,
            features: 0,
        })
        .unwrap();
        let mut buf = [1u8; 4];

        assert!(pcm.read(&mut buf).unwrap());

        assert_eq!(buf, [0x80; 4]);
    }
}
