// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Sample arithmetic: decoding a sample to a full-scale `i32`, encoding it
//! back, and software gain.
//!
//! Full scale means the sample's value shifted to the top of 32 bits (an
//! S16 sample `x` is `x << 16`), so that converting to a format as wide or
//! wider loses nothing. Float samples map [-1, 1) to the `i32` range.

/// How samples are laid out in memory (the stream formats, and what WAV
/// files hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Unsigned 8 bit.
    U8,
    /// Signed 16 bit little-endian.
    S16,
    /// Signed 24 bit in 3 bytes little-endian (WAV files only).
    S24Packed,
    /// Signed 24 bit low-aligned in 4 bytes (ALSA's and virtio's S24).
    S24,
    /// Signed 32 bit little-endian.
    S32,
    /// IEEE float 32 bit little-endian.
    Float,
}

impl Layout {
    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            Layout::U8 => 1,
            Layout::S16 => 2,
            Layout::S24Packed => 3,
            Layout::S24 | Layout::S32 | Layout::Float => 4,
        }
    }

    /// The layout of a stream format.
    pub fn of(format: crate::virtio::Format) -> Self {
        use crate::virtio::Format;
        match format {
            Format::U8 => Layout::U8,
            Format::S16 => Layout::S16,
            Format::S24 => Layout::S24,
            Format::S32 => Layout::S32,
            Format::Float => Layout::Float,
        }
    }
}

/// Decode one sample (`b.len() >= layout.bytes()`) to full scale.
pub fn decode(layout: Layout, b: &[u8]) -> i32 {
    let byte = |i: usize| b.get(i).copied().unwrap_or(0);
    match layout {
        Layout::U8 => (i32::from(byte(0)) - 128) << 24,
        Layout::S16 => i32::from(i16::from_le_bytes([byte(0), byte(1)])) << 16,
        Layout::S24Packed => i32::from_le_bytes([0, byte(0), byte(1), byte(2)]),
        Layout::S24 => i32::from_le_bytes([byte(0), byte(1), byte(2), 0]) << 8,
        Layout::S32 => i32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]),
        Layout::Float => {
            let f = f32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
            float_to_full(f64::from(f))
        }
    }
}

fn float_to_full(f: f64) -> i32 {
    let scaled = (f * 2_147_483_648.0).round();
    // The clamp keeps the value in range, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    let v = scaled.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
    v
}

/// Encode a full-scale sample into `out` (`out.len() >= layout.bytes()`).
pub fn encode(layout: Layout, v: i32, out: &mut [u8]) {
    let bytes = v.to_le_bytes();
    let put = |out: &mut [u8], src: &[u8]| {
        for (o, s) in out.iter_mut().zip(src) {
            *o = *s;
        }
    };
    match layout {
        Layout::U8 => put(out, &[bytes[3] ^ 0x80]),
        Layout::S16 => put(out, &bytes[2..4]),
        Layout::S24Packed => put(out, &bytes[1..4]),
        Layout::S24 => {
            let low = (v >> 8).to_le_bytes();
            put(out, &low);
        }
        Layout::S32 => put(out, &bytes),
        Layout::Float => {
            #[allow(clippy::cast_possible_truncation)]
            let f = (f64::from(v) / 2_147_483_648.0) as f32;
            put(out, &f.to_le_bytes());
        }
    }
}

/// Convert interleaved frames from one layout and channel count to
/// another. Missing channels repeat the source's (mono becomes both sides of
/// stereo); extra ones are dropped. `out` receives as many whole frames as
/// both sides have.
pub fn convert(
    from: Layout,
    from_channels: usize,
    input: &[u8],
    to: Layout,
    to_channels: usize,
    out: &mut [u8],
) {
    let (fc, tc) = (from_channels.max(1), to_channels.max(1));
    let in_frame = from.bytes() * fc;
    let out_frame = to.bytes() * tc;
    for (src, dst) in input
        .chunks_exact(in_frame)
        .zip(out.chunks_exact_mut(out_frame))
    {
        for ch in 0..tc {
            let s = ch % fc;
            let v = decode(from, &src[s * from.bytes()..]);
            encode(to, v, &mut dst[ch * to.bytes()..]);
        }
    }
}

/// Multiply every sample of `data` by `gain` (0 mutes), saturating.
pub fn apply_gain(layout: Layout, data: &mut [u8], gain: f64) {
    if gain == 1.0 {
        return;
    }
    for s in data.chunks_exact_mut(layout.bytes()) {
        let v = f64::from(decode(layout, s)) * gain;
        #[allow(clippy::cast_possible_truncation)]
        let v = v.round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
        encode(layout, v, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_round_trips_its_extremes() {
        for layout in [
            Layout::U8,
            Layout::S16,
            Layout::S24Packed,
            Layout::S24,
            Layout::S32,
        ] {
            for v in [i32::MIN, -(1 << 24), 0, 1 << 24, i32::MAX & !0xFF_FFFF] {
                let mut b = [0u8; 4];
                encode(layout, v, &mut b);
                assert_eq!(decode(layout, &b), v, "{layout:?} {v:#x}");
            }
        }
    }

    #[test]
    fn s24_is_low_aligned_and_sign_extended() {
        assert_eq!(decode(Layout::S24, &[0xFF, 0xFF, 0xFF, 0x00]), -256);
        let mut b = [0u8; 4];
        encode(Layout::S24, -256, &mut b);
        assert_eq!(b, [0xFF, 0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn u8_silence_is_0x80() {
        assert_eq!(decode(Layout::U8, &[0x80]), 0);
    }

    #[test]
    fn float_full_scale_is_one() {
        assert_eq!(decode(Layout::Float, &0.5f32.to_le_bytes()), 1 << 30);
        let mut b = [0u8; 4];
        encode(Layout::Float, -(1 << 30), &mut b);
        assert_eq!(f32::from_le_bytes(b), -0.5);
    }

    #[test]
    fn mono_s16_converts_to_stereo_s32_on_both_sides() {
        let input: Vec<u8> = [1000i16, -2000]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut out = [0u8; 16];
        convert(Layout::S16, 1, &input, Layout::S32, 2, &mut out);
        let samples: Vec<i32> = out
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            samples,
            vec![1000 << 16, 1000 << 16, -2000 << 16, -2000 << 16]
        );
    }

    #[test]
    fn half_gain_halves_and_unity_gain_is_exact() {
        let mut data = 1000i16.to_le_bytes().to_vec();
        apply_gain(Layout::S16, &mut data, 1.0);
        assert_eq!(data, 1000i16.to_le_bytes());
        apply_gain(Layout::S16, &mut data, 0.5);
        assert_eq!(data, 500i16.to_le_bytes());
    }

    #[test]
    fn gain_saturates() {
        let mut data = 30000i16.to_le_bytes().to_vec();
        apply_gain(Layout::S16, &mut data, 4.0);
        assert_eq!(data, i16::MAX.to_le_bytes());
    }
}
