// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `wav` backend: playback streams write WAV files, capture streams read
//! one (looped). Clock-paced, like [`super::null`]: the device hands over
//! each buffer when it is due, so the file holds exactly the samples the
//! guest played, and a capture delivers the file's samples in real time.
//!
//! A playback stream writes `<dir>/stream<N>.wav` from its first PREPARE;
//! further PREPAREs with the same format, channels and rate append to it
//! (ALSA prepares again after every pause or underrun); new parameters
//! start `stream<N>-1.wav`, `-2`, … The header's sizes are brought up to
//! date after every write, so the file is complete at any moment.
//!
//! Format (RIFF WAVE, "fmt " chunk): 8-bit unsigned, 16- and 32-bit signed
//! PCM and 32-bit float are written as such; S24 (24 bits in the low 3
//! bytes of 4) is written as 32-bit `WAVE_FORMAT_EXTENSIBLE` with 24 valid
//! bits, the samples moved to the top of the 32 bits as WAV requires. A
//! capture file of another format or channel count is converted; its rate
//! is not (it plays at the stream's rate, and a warning says so).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::sample::{convert, Layout};
use super::{silence, PcmHost, PcmParams};

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// The most a capture conversion reads at once.
const MAX_READ: usize = 1 << 20;

/// A WAV file's sample layout, channels and rate, and where its data lies.
#[derive(Debug)]
pub struct WavFile {
    file: File,
    /// Sample layout.
    pub layout: Layout,
    /// Channels.
    pub channels: u16,
    /// Frames per second.
    pub rate: u32,
    data_start: u64,
    data_len: u64,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl WavFile {
    /// Open and parse a WAV file.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut riff = [0u8; 12];
        file.read_exact(&mut riff)?;
        if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
            return Err(bad(format!("{} is not a RIFF WAVE file", path.display())));
        }
        let mut fmt: Option<(Layout, u16, u32)> = None;
        loop {
            let mut hdr = [0u8; 8];
            file.read_exact(&mut hdr)
                .map_err(|_| bad(format!("{} has no data chunk", path.display())))?;
            let len = u64::from(u32_at(&hdr, 4));
            match &hdr[0..4] {
                b"fmt " => {
                    if !(16..=64).contains(&len) {
                        return Err(bad("fmt chunk of a strange size"));
                    }
                    let mut body = vec![0u8; usize::try_from(len).unwrap_or(16)];
                    file.read_exact(&mut body)?;
                    let mut tag = u16_at(&body, 0);
                    let channels = u16_at(&body, 2);
                    let rate = u32_at(&body, 4);
                    let bits = u16_at(&body, 14);
                    if tag == WAVE_FORMAT_EXTENSIBLE && body.len() >= 26 {
                        tag = u16_at(&body, 24);
                    }
                    let layout = match (tag, bits) {
                        (WAVE_FORMAT_PCM, 8) => Layout::U8,
                        (WAVE_FORMAT_PCM, 16) => Layout::S16,
                        (WAVE_FORMAT_PCM, 24) => Layout::S24Packed,
                        (WAVE_FORMAT_PCM, 32) => Layout::S32,
                        (WAVE_FORMAT_IEEE_FLOAT, 32) => Layout::Float,
                        _ => {
                            return Err(bad(format!(
                                "{}: WAV format {tag} with {bits} bits is not supported",
                                path.display()
                            )))
                        }
                    };
                    if channels == 0 || rate == 0 {
                        return Err(bad("WAV file with no channels or no rate"));
                    }
                    fmt = Some((layout, channels, rate));
                    if len % 2 == 1 {
                        file.seek(SeekFrom::Current(1))?;
                    }
                }
                b"data" => {
                    let (layout, channels, rate) =
                        fmt.ok_or_else(|| bad("data chunk before the fmt chunk"))?;
                    let data_start = file.stream_position()?;
                    let size = file.metadata()?.len();
                    let frame = (layout.bytes() * usize::from(channels)) as u64;
                    let data_len = len.min(size.saturating_sub(data_start)) / frame * frame;
                    if data_len == 0 {
                        return Err(bad(format!("{} has no samples", path.display())));
                    }
                    return Ok(Self {
                        file,
                        layout,
                        channels,
                        rate,
                        data_start,
                        data_len,
                    });
                }
                _ => {
                    file.seek(SeekFrom::Current(i64::try_from(len + len % 2).unwrap_or(0)))?;
                }
            }
        }
    }

    /// Fill `buf` with the file's data from `*pos`, looping at the end.
    fn read_looped(&mut self, pos: &mut u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            if *pos >= self.data_len {
                *pos = 0;
            }
            let left = usize::try_from(self.data_len - *pos).unwrap_or(usize::MAX);
            let n = left.min(buf.len() - done);
            self.file
                .read_exact_at(&mut buf[done..done + n], self.data_start + *pos)?;
            *pos += n as u64;
            done += n;
        }
        Ok(())
    }
}

/// The header of a WAV file for `params`: (bytes, offset of the data size).
fn header(params: &PcmParams) -> (Vec<u8>, u64) {
    let channels = u16::from(params.channels);
    let (tag, bits, valid) = match params.format {
        crate::virtio::Format::U8 => (WAVE_FORMAT_PCM, 8u16, 8u16),
        crate::virtio::Format::S16 => (WAVE_FORMAT_PCM, 16, 16),
        crate::virtio::Format::S24 => (WAVE_FORMAT_EXTENSIBLE, 32, 24),
        crate::virtio::Format::S32 => (WAVE_FORMAT_PCM, 32, 32),
        crate::virtio::Format::Float => (WAVE_FORMAT_IEEE_FLOAT, 32, 32),
    };
    let block = channels * (bits / 8);
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&tag.to_le_bytes());
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&params.rate.to_le_bytes());
    fmt.extend_from_slice(&(params.rate * u32::from(block)).to_le_bytes());
    fmt.extend_from_slice(&block.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    if tag == WAVE_FORMAT_EXTENSIBLE {
        fmt.extend_from_slice(&22u16.to_le_bytes());
        fmt.extend_from_slice(&valid.to_le_bytes());
        fmt.extend_from_slice(&0u32.to_le_bytes()); // no speaker mask
                                                    // KSDATAFORMAT_SUBTYPE_PCM: {00000001-0000-0010-8000-00aa00389b71}
        fmt.extend_from_slice(&[
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38,
            0x9B, 0x71,
        ]);
    }
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(b"WAVE");
    h.extend_from_slice(b"fmt ");
    h.extend_from_slice(&u32::try_from(fmt.len()).unwrap_or(16).to_le_bytes());
    h.extend_from_slice(&fmt);
    h.extend_from_slice(b"data");
    let data_size_at = h.len() as u64;
    h.extend_from_slice(&0u32.to_le_bytes());
    (h, data_size_at)
}

/// A playback stream that writes WAV files.
#[derive(Debug)]
pub struct WavWriter {
    dir: PathBuf,
    id: u32,
    files_made: u32,
    current: Option<OpenWav>,
}

#[derive(Debug)]
struct OpenWav {
    file: File,
    path: PathBuf,
    params: PcmParams,
    data_size_at: u64,
    data_bytes: u64,
    scratch: Vec<u8>,
}

impl OpenWav {
    fn sizes_up_to_date(&mut self) -> io::Result<()> {
        let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX);
        let riff = u32::try_from(self.data_size_at + 4 - 8 + self.data_bytes).unwrap_or(u32::MAX);
        self.file.write_all_at(&riff.to_le_bytes(), 4)?;
        self.file
            .write_all_at(&data.to_le_bytes(), self.data_size_at)
    }
}

impl WavWriter {
    /// The WAV side of playback stream `id`, writing into `dir`.
    pub fn new(dir: &Path, id: u32) -> Self {
        Self {
            dir: dir.to_path_buf(),
            id,
            files_made: 0,
            current: None,
        }
    }

    fn same_format(a: &PcmParams, b: &PcmParams) -> bool {
        (a.format, a.channels, a.rate) == (b.format, b.channels, b.rate)
    }

    /// The file being written, if any.
    pub fn path(&self) -> Option<&Path> {
        self.current.as_ref().map(|c| c.path.as_path())
    }
}

impl PcmHost for WavWriter {
    fn prepare(&mut self, params: &PcmParams) -> io::Result<()> {
        if let Some(cur) = &self.current {
            if Self::same_format(&cur.params, params) {
                return Ok(());
            }
        }
        let name = match self.files_made {
            0 => format!("stream{}.wav", self.id),
            n => format!("stream{}-{n}.wav", self.id),
        };
        let path = self.dir.join(name);
        let mut file = File::create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let (h, data_size_at) = header(params);
        file.write_all(&h)?;
        self.files_made += 1;
        log::info!("stream {}: writing {}", self.id, path.display());
        self.current = Some(OpenWav {
            file,
            path,
            params: *params,
            data_size_at,
            data_bytes: 0,
            scratch: Vec::new(),
        });
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

    fn write(&mut self, data: &[u8]) -> io::Result<bool> {
        let Some(cur) = self.current.as_mut() else {
            return Err(io::Error::other("write before prepare"));
        };
        let frame = usize::try_from(cur.params.frame_bytes())
            .unwrap_or(1)
            .max(1);
        let whole = &data[..data.len() / frame * frame];
        if cur.params.format == crate::virtio::Format::S24 {
            cur.scratch.resize(whole.len(), 0);
            convert(Layout::S24, 1, whole, Layout::S32, 1, &mut cur.scratch);
            cur.file.write_all(&cur.scratch)?;
        } else {
            cur.file.write_all(whole)?;
        }
        cur.data_bytes += whole.len() as u64;
        cur.sizes_up_to_date()?;
        Ok(true)
    }

    fn read(&mut self, _buf: &mut [u8]) -> io::Result<bool> {
        Err(io::Error::other("a playback stream cannot capture"))
    }

    fn name(&self) -> String {
        match self.path() {
            Some(p) => format!("WAV file {}", p.display()),
            None => format!("WAV playback stream {}", self.id),
        }
    }
}

/// A capture stream that reads a WAV file, looped (or silence without one).
#[derive(Debug)]
pub struct WavReader {
    path: Option<PathBuf>,
    id: u32,
    source: Option<WavFile>,
    pos: u64,
    params: Option<PcmParams>,
    scratch: Vec<u8>,
}

impl WavReader {
    /// The WAV side of capture stream `id`, reading `path` (silence if none).
    pub fn new(path: Option<&Path>, id: u32) -> Self {
        Self {
            path: path.map(Path::to_path_buf),
            id,
            source: None,
            pos: 0,
            params: None,
            scratch: Vec::new(),
        }
    }
}

impl PcmHost for WavReader {
    fn prepare(&mut self, params: &PcmParams) -> io::Result<()> {
        if self.source.is_none() {
            if let Some(path) = &self.path {
                let wav = WavFile::open(path)?;
                log::info!(
                    "stream {}: capturing from {} ({:?}, {} channels, {} Hz)",
                    self.id,
                    path.display(),
                    wav.layout,
                    wav.channels,
                    wav.rate
                );
                self.source = Some(wav);
            }
        }
        if let Some(src) = &self.source {
            if src.rate != params.rate {
                log::warn!(
                    "stream {}: the capture file has {} Hz, the guest records at {} Hz; it is not resampled",
                    self.id,
                    src.rate,
                    params.rate
                );
            }
        }
        self.params = Some(*params);
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
        Err(io::Error::other("a capture stream cannot play"))
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let Some(params) = self.params else {
            return Err(io::Error::other("read before prepare"));
        };
        let Some(src) = self.source.as_mut() else {
            buf.fill(silence(params.format));
            return Ok(true);
        };
        let to = Layout::of(params.format);
        let to_channels = usize::from(params.channels);
        if src.layout == to && usize::from(src.channels) == to_channels {
            src.read_looped(&mut self.pos, buf)?;
            return Ok(true);
        }
        let out_frame = to.bytes() * to_channels.max(1);
        let in_frame = src.layout.bytes() * usize::from(src.channels);
        let mut done = 0;
        while done + out_frame <= buf.len() {
            let frames = ((buf.len() - done) / out_frame)
                .min(MAX_READ / in_frame.max(1))
                .max(1);
            self.scratch.resize(frames * in_frame, 0);
            src.read_looped(&mut self.pos, &mut self.scratch)?;
            let end = done + frames * out_frame;
            convert(
                src.layout,
                usize::from(src.channels),
                &self.scratch,
                to,
                to_channels,
                &mut buf[done..end],
            );
            done = end;
        }
        buf[done..].fill(silence(params.format));
        Ok(true)
    }

    fn name(&self) -> String {
        match &self.path {
            Some(p) => format!("WAV capture file {}", p.display()),
            None => format!("WAV capture stream {} (silence)", self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{Direction, Format};

    fn params(direction: Direction, format: Format, channels: u8) -> PcmParams {
        PcmParams {
            direction,
            channels,
            format,
            rate: 48000,
            period_bytes: 64,
            buffer_bytes: 256,
            features: 0,
        }
    }

    #[test]
    fn written_file_reads_back_with_the_same_samples() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WavWriter::new(dir.path(), 0);
        let p = params(Direction::Output, Format::S16, 2);
        w.prepare(&p).unwrap();
        let data: Vec<u8> = (0..64u8).collect();

        w.write(&data).unwrap();
        w.write(&data).unwrap();

        let mut f = WavFile::open(&dir.path().join("stream0.wav")).unwrap();
        assert_eq!((f.layout, f.channels, f.rate), (Layout::S16, 2, 48000));
        assert_eq!(f.data_len, 128);
        let mut back = vec![0u8; 128];
        f.read_looped(&mut 0, &mut back).unwrap();
        assert_eq!(&back[..64], &data[..]);
        assert_eq!(&back[64..], &data[..]);
    }

    #[test]
    fn prepare_with_the_same_format_appends_and_new_format_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WavWriter::new(dir.path(), 3);
        let p = params(Direction::Output, Format::S16, 2);
        w.prepare(&p).unwrap();
        w.write(&[1; 8]).unwrap();
        w.prepare(&p).unwrap();
        w.write(&[2; 8]).unwrap();

        w.prepare(&params(Direction::Output, Format::U8, 1))
            .unwrap();

        assert_eq!(
            WavFile::open(&dir.path().join("stream3.wav"))
                .unwrap()
                .data_len,
            16
        );
        assert_eq!(w.path().unwrap(), dir.path().join("stream3-1.wav"));
    }

    #[test]
    fn s24_is_written_as_32_bit_extensible_and_reads_back_as_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WavWriter::new(dir.path(), 0);
        w.prepare(&params(Direction::Output, Format::S24, 1))
            .unwrap();
        w.write(&[0xFF, 0xFF, 0xFF, 0x00, 0x01, 0x00, 0x00, 0x00])
            .unwrap();
        let mut r = WavReader::new(Some(&dir.path().join("stream0.wav")), 0);
        r.prepare(&params(Direction::Input, Format::S24, 1))
            .unwrap();
        let mut buf = [0u8; 8];

        r.read(&mut buf).unwrap();

        assert_eq!(buf, [0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn capture_loops_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WavWriter::new(dir.path(), 0);
        w.prepare(&params(Direction::Output, Format::U8, 1))
            .unwrap();
        w.write(&[1, 2, 3]).unwrap();
        let mut r = WavReader::new(Some(&dir.path().join("stream0.wav")), 1);
        r.prepare(&params(Direction::Input, Format::U8, 1)).unwrap();
        let mut buf = [0u8; 7];

        r.read(&mut buf).unwrap();

        assert_eq!(buf, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn capture_without_a_file_is_silence() {
        let mut r = WavReader::new(None, 1);
        r.prepare(&params(Direction::Input, Format::S16, 2))
            .unwrap();
        let mut buf = [7u8; 8];
        r.read(&mut buf).unwrap();
        assert_eq!(buf, [0; 8]);
    }

    #[test]
    fn a_file_that_is_not_wav_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wav");
        std::fs::write(&path, b"hello, this is not RIFF").unwrap();
        let err = WavFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("x.wav"), "{err}");
    }
}
