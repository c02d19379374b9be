// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `alsa` backend: a host ALSA PCM per stream, host-paced.
//!
//! Each stream has one bounded thread that owns the PCM and does its I/O;
//! the vring worker never calls ALSA for data. Between them is a small byte
//! ring (two periods of the guest's stream):
//!
//! - playback: [`PcmHost::write`] puts a guest buffer into the ring when it
//!   fits (else `Ok(false)`: the worker keeps the buffer held); the thread
//!   writes the ring to the PCM, and after each write signals the eventfd
//!   ([`PcmHost::ready_fd`], in the worker's epoll), so the next buffer is
//!   taken as soon as ALSA has room. ALSA's clock paces the guest.
//! - capture: the thread reads periods from the PCM into the ring and
//!   signals; [`PcmHost::read`] takes a whole guest buffer once the ring
//!   holds one.
//!
//! ALSA's own buffer is 8 of the guest's periods, and playback starts when
//! it is full (start threshold), so a late worker does not underrun at once.
//! The PCM is opened non-blocking at PREPARE (so a busy device fails at once
//! instead of stalling the worker); the thread waits for readiness with
//! `snd_pcm_wait` (at most 20 ms at a time, so RELEASE, which joins the
//! thread, waits no longer than that). An underrun while the ring held data,
//! or an overrun, recovers the PCM and is reported as an xrun.
//! `delay_bytes` is the ring plus ALSA's `snd_pcm_delay`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use alsa::pcm::{Access, Format as AlsaFormat, HwParams, PCM};
use alsa::{Direction as AlsaDirection, ValueOr};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{PcmHost, PcmParams};
use crate::virtio::{Direction, Format};

/// How long the I/O thread waits for the PCM at a time.
const WAIT_MS: u32 = 20;

/// The ALSA sample format of a stream format.
pub fn alsa_format(format: Format) -> AlsaFormat {
    match format {
        Format::U8 => AlsaFormat::U8,
        Format::S16 => AlsaFormat::S16LE,
        Format::S24 => AlsaFormat::S24LE,
        Format::S32 => AlsaFormat::S32LE,
        Format::Float => AlsaFormat::FloatLE,
    }
}

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<u8>,
    cap: usize,
    running: bool,
    /// The thread must drop what ALSA holds (STOP) before going on.
    reset: bool,
    quit: bool,
    xrun: bool,
    alsa_delay: u32,
    failed: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        vhost_device_common::lock(&self.inner)
    }
}

/// One stream on a host ALSA PCM.
pub struct AlsaPcm {
    name: String,
    id: u32,
    direction: Direction,
    ready: Arc<EventFd>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AlsaPcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaPcm")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish()
    }
}

fn alsa_err(what: &str, e: alsa::Error) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl AlsaPcm {
    /// Stream `id` on the ALSA PCM `name`.
    pub fn new(name: &str, id: u32, direction: Direction) -> io::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            id,
            direction,
            ready: Arc::new(EventFd::from_flags(
                EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
            )?),
            shared: Arc::new(Shared::default()),
            thread: None,
        })
    }

    fn open(&self, params: &PcmParams) -> io::Result<(PCM, usize)> {
        let dir = match self.direction {
            Direction::Output => AlsaDirection::Playback,
            Direction::Input => AlsaDirection::Capture,
        };
        let ctx = |what: &str| format!("ALSA PCM '{}' {what}", self.name);
        let pcm = PCM::new(&self.name, dir, true).map_err(|e| alsa_err(&ctx("open"), e))?;
        let frame = u64::from(params.frame_bytes().max(1));
        let period = i64::try_from(u64::from(params.period_bytes) / frame).unwrap_or(1024);
        let period_frames;
        {
            let hw = HwParams::any(&pcm).map_err(|e| alsa_err(&ctx("hw params"), e))?;
            hw.set_access(Access::RWInterleaved)
                .map_err(|e| alsa_err(&ctx("interleaved access"), e))?;
            hw.set_format(alsa_format(params.format))
                .map_err(|e| alsa_err(&ctx(&format!("format {:?}", params.format)), e))?;
            hw.set_channels(u32::from(params.channels))
                .map_err(|e| alsa_err(&ctx(&format!("{} channels", params.channels)), e))?;
            hw.set_rate(params.rate, ValueOr::Nearest)
                .map_err(|e| alsa_err(&ctx(&format!("rate {}", params.rate)), e))?;
            period_frames = hw
                .set_period_size_near(period.max(1), ValueOr::Nearest)
                .map_err(|e| alsa_err(&ctx("period size"), e))?;
            hw.set_buffer_size_near(period_frames * 8)
                .map_err(|e| alsa_err(&ctx("buffer size"), e))?;
            pcm.hw_params(&hw)
                .map_err(|e| alsa_err(&ctx("set hw params"), e))?;
            let rate = hw.get_rate().map_err(|e| alsa_err(&ctx("rate"), e))?;
            if rate != params.rate {
                return Err(io::Error::other(ctx(&format!(
                    "has no rate {} (nearest {rate})",
                    params.rate
                ))));
            }
            // Playback starts once ALSA's buffer is full, not with the first
            // frame (which underruns at once when the guest is slow to
            // refill).
            let buffer = hw
                .get_buffer_size()
                .map_err(|e| alsa_err(&ctx("buffer size"), e))?;
            let sw = pcm
                .sw_params_current()
                .map_err(|e| alsa_err(&ctx("sw params"), e))?;
            let threshold = match self.direction {
                Direction::Output => buffer,
                Direction::Input => 1,
            };
            sw.set_start_threshold(threshold)
                .map_err(|e| alsa_err(&ctx("start threshold"), e))?;
            pcm.sw_params(&sw)
                .map_err(|e| alsa_err(&ctx("set sw params"), e))?;
        }
        let chunk = usize::try_from(period_frames).unwrap_or(1024).max(1)
            * usize::try_from(frame).unwrap_or(4);
        Ok((pcm, chunk))
    }

    fn stop_thread(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.lock().quit = true;
            self.shared.cond.notify_all();
            let _ = t.join();
        }
    }
}

impl Drop for AlsaPcm {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The I/O thread's loop.
fn run(
    pcm: PCM,
    direction: Direction,
    chunk: usize,
    frame: usize,
    shared: Arc<Shared>,
    ready: Arc<EventFd>,
) {
    let io = pcm.io_bytes();
    let mut buf = vec![0u8; chunk];
    let signal = || {
        let _ = ready.write(1);
    };
    loop {
        let n = {
            let mut g = shared.lock();
            loop {
                if g.quit {
                    return;
                }
                if g.reset {
                    g.reset = false;
                    let _ = pcm.drop();
                    let _ = pcm.prepare();
                }
                let has_work = g.running
                    && match direction {
                        Direction::Output => g.ring.len() >= frame,
                        Direction::Input => true,
                    };
                if has_work {
                    break;
                }
                g = match shared.cond.wait(g) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
            match direction {
                Direction::Output => {
                    let n = g.ring.len().min(chunk) / frame * frame;
                    for (dst, src) in buf.iter_mut().zip(g.ring.iter()) {
                        *dst = *src;
                    }
                    n
                }
                Direction::Input => chunk,
            }
        };
        let result = match direction {
            Direction::Output => io.writei(&buf[..n]),
            Direction::Input => {
                if pcm.state() == alsa::pcm::State::Prepared {
                    let _ = pcm.start();
                }
                io.readi(&mut buf[..n])
            }
        };
        match result {
            Ok(frames) => {
                let bytes = frames * frame;
                let delay = pcm
                    .delay()
                    .ok()
                    .and_then(|d| u32::try_from(d.max(0)).ok())
                    .unwrap_or(0)
                    .saturating_mul(u32::try_from(frame).unwrap_or(0));
                let mut g = shared.lock();
                g.alsa_delay = delay;
                match direction {
                    Direction::Output => {
                        let n = bytes.min(g.ring.len());
                        g.ring.drain(..n);
                    }
                    Direction::Input => {
                        g.ring.extend(&buf[..bytes]);
                        if g.ring.len() > g.cap {
                            let extra = g.ring.len() - g.cap;
                            g.ring.drain(..extra);
                            g.xrun = true;
                            log::debug!("ALSA capture: the guest is late, {extra} bytes dropped");
                        }
                    }
                }
                drop(g);
                signal();
            }
            Err(e) if e.errno() == libc::EAGAIN => {
                let _ = pcm.wait(Some(WAIT_MS));
            }
            Err(e) if e.errno() == libc::EPIPE || e.errno() == libc::ESTRPIPE => {
                log::debug!("ALSA {direction:?}: xrun ({e})");
                shared.lock().xrun = true;
                if pcm.recover(e.errno(), true).is_err() {
                    let _ = pcm.prepare();
                }
            }
            Err(e) => {
                log::error!("ALSA I/O failed: {e}");
                shared.lock().failed = Some(e.to_string());
                signal();
                return;
            }
        }
    }
}

impl PcmHost for AlsaPcm {
    fn prepare(&mut self, params: &PcmParams) -> io::Result<()> {
        self.stop_thread();
        let (pcm, chunk) = self.open(params)?;
        let frame = usize::try_from(params.frame_bytes()).unwrap_or(4).max(1);
        {
            let mut g = self.shared.lock();
            // Playback: two periods between the guest and ALSA, so that the
            // guest's buffers complete close to when they are played.
            // Capture: the guest's whole buffer and more, so that a late
            // worker does not lose samples.
            let period = usize::try_from(params.period_bytes)
                .unwrap_or(chunk)
                .max(chunk);
            let buffer = usize::try_from(params.buffer_bytes).unwrap_or(period);
            *g = Inner {
                cap: match self.direction {
                    Direction::Output => period * 2,
                    Direction::Input => buffer.max(period * 4) * 2,
                },
                ..Inner::default()
            };
        }
        let (shared, ready, direction) = (self.shared.clone(), self.ready.clone(), self.direction);
        self.thread = Some(
            std::thread::Builder::new()
                .name(format!("snd-alsa-{}", self.id))
                .spawn(move || run(pcm, direction, chunk, frame, shared, ready))?,
        );
        Ok(())
    }

    fn start(&mut self) -> io::Result<()> {
        self.shared.lock().running = true;
        self.shared.cond.notify_all();
        Ok(())
    }

    fn stop(&mut self) -> io::Result<()> {
        let mut g = self.shared.lock();
        g.running = false;
        g.reset = true;
        drop(g);
        self.shared.cond.notify_all();
        Ok(())
    }

    fn release(&mut self) -> io::Result<()> {
        self.stop_thread();
        *self.shared.lock() = Inner::default();
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<bool> {
        let mut g = self.shared.lock();
        if let Some(e) = &g.failed {
            return Err(io::Error::other(format!("ALSA PCM '{}': {e}", self.name)));
        }
        if !g.ring.is_empty() && g.ring.len() + data.len() > g.cap {
            return Ok(false);
        }
        g.ring.extend(data);
        drop(g);
        self.shared.cond.notify_all();
        Ok(true)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut g = self.shared.lock();
        if let Some(e) = &g.failed {
            return Err(io::Error::other(format!("ALSA PCM '{}': {e}", self.name)));
        }
        if g.ring.len() < buf.len() {
            return Ok(false);
        }
        let n = buf.len();
        for (dst, src) in buf.iter_mut().zip(g.ring.drain(..n)) {
            *dst = src;
        }
        Ok(true)
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.ready.as_fd())
    }

    fn clear_ready(&mut self) {
        let _ = self.ready.read();
    }

    fn delay_bytes(&self) -> u32 {
        let g = self.shared.lock();
        u32::try_from(g.ring.len())
            .unwrap_or(u32::MAX)
            .saturating_add(g.alsa_delay)
    }

    fn take_xrun(&mut self) -> bool {
        std::mem::take(&mut self.shared.lock().xrun)
    }

    fn name(&self) -> String {
        format!("ALSA PCM '{}' (stream {})", self.name, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(direction: Direction) -> PcmParams {
        PcmParams {
            direction,
            channels: 2,
            format: Format::S16,
            rate: 48000,
            period_bytes: 1920,
            buffer_bytes: 7680,
            features: 0,
        }
    }

    #[test]
    fn every_format_maps_to_its_alsa_format() {
        assert_eq!(alsa_format(Format::U8), AlsaFormat::U8);
        assert_eq!(alsa_format(Format::S16), AlsaFormat::S16LE);
        assert_eq!(alsa_format(Format::S24), AlsaFormat::S24LE);
        assert_eq!(alsa_format(Format::S32), AlsaFormat::S32LE);
        assert_eq!(alsa_format(Format::Float), AlsaFormat::FloatLE);
    }

    #[test]
    fn a_pcm_that_does_not_exist_fails_prepare_naming_it() {
        let mut pcm = AlsaPcm::new("hw:97,0", 0, Direction::Output).unwrap();
        let err = pcm.prepare(&params(Direction::Output)).unwrap_err();
        assert!(err.to_string().contains("hw:97,0"), "{err}");
    }

    #[test]
    fn the_null_pcm_takes_playback_and_gives_capture() {
        let mut out = AlsaPcm::new("null", 0, Direction::Output).unwrap();
        out.prepare(&params(Direction::Output)).unwrap();
        out.start().unwrap();
        assert!(out.write(&[0; 1920]).unwrap());
        out.release().unwrap();

        let mut inp = AlsaPcm::new("null", 1, Direction::Input).unwrap();
        inp.prepare(&params(Direction::Input)).unwrap();
        inp.start().unwrap();
        let mut buf = [1u8; 1920];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !inp.read(&mut buf).unwrap() {
            assert!(std::time::Instant::now() < deadline, "no capture data");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        inp.release().unwrap();
    }
}
