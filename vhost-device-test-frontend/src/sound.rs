// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A minimal virtio-snd driver (virtio 1.3, 5.14) for tests that run a sound
//! daemon's real host backend: play a known signal on one stream while
//! recording another, and find the played samples in the recording (for a
//! host loopback such as `snd-aloop`, where what is played on one PCM is
//! captured on the other).
//!
//! Streams are 48 kHz S16 stereo with 10 ms periods (or longer ones,
//! [`SoundGuest::with_period_ms`]); the buffer holds 4 periods, and more
//! messages than that may be in flight (the device holds them all in
//! order).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::{Chain, Error, Session};

const CONTROL: usize = 0;
const TX: usize = 2;
const RX: usize = 3;
/// Bytes per millisecond of 48 kHz S16 stereo.
const BYTES_PER_MS: u32 = 192;
/// The default period: 10 ms.
const PERIOD: u32 = 10 * BYTES_PER_MS;
/// Buffers in flight per stream: generous, as a debug build under TCG can
/// stall for tens of milliseconds.
const DEPTH: usize = 12;

/// What a loopback run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loopback {
    /// Bytes played.
    pub played: usize,
    /// Bytes recorded.
    pub recorded: usize,
    /// Where the played bytes start in the recording, if they are there
    /// whole and exact.
    pub offset: Option<usize>,
    /// Where the first played period starts in the recording, and how many
    /// bytes from there equal the played ones (to tell a gap from a
    /// corruption when `offset` is `None`).
    pub first_period: Option<(usize, usize)>,
}

/// A virtio-snd driver on a [`Session`] with all four queues.
#[derive(Debug)]
pub struct SoundGuest {
    s: Session,
    /// Bytes per period (and per message).
    period: u32,
}

fn status_of(s: &Session, at: u64) -> Result<u32, Error> {
    let b = s.ram().read(at, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl SoundGuest {
    /// Drive the sound device of `s`.
    pub fn new(s: Session) -> Self {
        Self { s, period: PERIOD }
    }

    /// Use periods of `ms` milliseconds (1 to 1000) instead of 10: the host
    /// backend's buffers follow the guest's period, so longer periods give
    /// a slow machine more slack before an underrun.
    pub fn with_period_ms(mut self, ms: u32) -> Self {
        self.period = ms.clamp(1, 1000) * BYTES_PER_MS;
        self
    }

    /// Send a control request and return the response status.
    pub fn control(&mut self, req: &[u8]) -> Result<u32, Error> {
        let r = self.s.ram().alloc(req.len() as u64, 8)?;
        self.s.ram().write(r, req)?;
        let w = self.s.ram().alloc(4, 8)?;
        let vq = self.s.queue(CONTROL)?;
        vq.add(
            &Chain::new()
                .readable(r, u32::try_from(req.len()).unwrap_or(0))
                .writable(w, 4),
        )?;
        vq.kick()?;
        vq.wait_used(Duration::from_secs(10))?;
        status_of(&self.s, w)
    }

    fn command(&mut self, code: u32, stream: u32) -> Result<(), Error> {
        let mut req = code.to_le_bytes().to_vec();
        req.extend_from_slice(&stream.to_le_bytes());
        match self.control(&req)? {
            0x8000 => Ok(()),
            st => Err(Error::GuestAccess(
                u64::from(code),
                format!("status {st:#x}"),
            )),
        }
    }

    /// SET_PARAMS (48 kHz S16 stereo, 4 periods) and PREPARE.
    pub fn prepare(&mut self, stream: u32) -> Result<(), Error> {
        let mut req = 0x0101u32.to_le_bytes().to_vec();
        for v in [stream, self.period * 4, self.period, 0] {
            req.extend_from_slice(&v.to_le_bytes());
        }
        req.extend_from_slice(&[2, 5, 7, 0]);
        match self.control(&req)? {
            0x8000 => self.command(0x0102, stream),
            st => Err(Error::GuestAccess(0x0101, format!("status {st:#x}"))),
        }
    }

    fn post(
        &mut self,
        q: usize,
        stream: u32,
        data: Option<&[u8]>,
    ) -> Result<(u16, u64, u64), Error> {
        let x = self.s.ram().alloc(4, 8)?;
        self.s.ram().write(x, &stream.to_le_bytes())?;
        let d = self.s.ram().alloc(u64::from(self.period), 8)?;
        let st = self.s.ram().alloc(8, 8)?;
        let mut chain = Chain::new().readable(x, 4);
        chain = match data {
            Some(bytes) => {
                self.s.ram().write(d, bytes)?;
                chain.readable(d, u32::try_from(bytes.len()).unwrap_or(0))
            }
            None => chain.writable(d, self.period),
        };
        let vq = self.s.queue(q)?;
        let head = vq.add(&chain.writable(st, 8))?;
        vq.kick()?;
        Ok((head, d, st))
    }

    /// Play `periods` periods of a pseudo-random signal on `playback` while
    /// recording `capture` for `extra` periods longer; look for the signal
    /// in the recording.
    pub fn loopback(
        &mut self,
        playback: u32,
        capture: u32,
        periods: usize,
        extra: usize,
        timeout: Duration,
    ) -> Result<Loopback, Error> {
        let deadline = Instant::now() + timeout;
        let mut seed = 0x1234_5678u32;
        let period = self.period as usize;
        let signal: Vec<u8> = (0..periods * period / 2)
            .flat_map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                // Never silence, so the start is unambiguous.
                let v = u16::try_from(seed >> 16).unwrap_or(1) | 1;
                v.to_le_bytes()
            })
            .collect();
        let chunks: Vec<&[u8]> = signal.chunks(period).collect();
        self.prepare(capture)?;
        self.prepare(playback)?;
        let mut rx = VecDeque::new();
        for _ in 0..DEPTH {
            rx.push_back(self.post(RX, capture, None)?);
        }
        self.command(0x0104, capture)?;
        let mut tx = VecDeque::new();
        let mut next = 0;
        while next < DEPTH.min(chunks.len()) {
            tx.push_back(self.post(TX, playback, Some(chunks[next]))?);
            next += 1;
        }
        self.command(0x0104, playback)?;
        let mut recorded = Vec::new();
        let want = (periods + extra) * period;
        while recorded.len() < want || !tx.is_empty() {
            if Instant::now() > deadline {
                return Err(Error::Timeout);
            }
            for _ in self.s.queue(TX)?.take_used()? {
                let (_, _, st) = tx.pop_front().ok_or(Error::BadUsedId(0))?;
                if status_of(&self.s, st)? != 0x8000 {
                    return Err(Error::GuestAccess(st, "playback status".into()));
                }
                if next < chunks.len() {
                    tx.push_back(self.post(TX, playback, Some(chunks[next]))?);
                    next += 1;
                }
            }
            for u in self.s.queue(RX)?.take_used()? {
                let (_, d, st) = rx.pop_front().ok_or(Error::BadUsedId(0))?;
                if status_of(&self.s, st)? != 0x8000 {
                    return Err(Error::GuestAccess(st, "capture status".into()));
                }
                let n = (u.len as usize).saturating_sub(8).min(period);
                recorded.extend(self.s.ram().read(d, n)?);
                if recorded.len() < want {
                    rx.push_back(self.post(RX, capture, None)?);
                }
            }
            let _ = self.s.queue(RX)?.wait_call(Duration::from_millis(5))?;
        }
        let _ = self.command(0x0105, playback);
        let _ = self.command(0x0105, capture);
        let offset = recorded
            .windows(signal.len().max(1))
            .position(|w| w == signal.as_slice());
        let head = &signal[..signal.len().min(period)];
        let first_period = recorded
            .windows(head.len().max(1))
            .position(|w| w == head)
            .map(|at| {
                let same = recorded[at..]
                    .iter()
                    .zip(&signal)
                    .take_while(|(a, b)| a == b)
                    .count();
                (at, same)
            });
        Ok(Loopback {
            played: signal.len(),
            recorded: recorded.len(),
            offset,
            first_period,
        })
    }
}
