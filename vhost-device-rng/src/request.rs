// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Serving one entropy request, and the per-device rate limit.
//!
//! virtio 1.3, 5.4.6: "The driver places buffers on the request queue; the
//! device fills them with random bytes and returns the number written." Only the
//! device-writable part of a chain counts; however the driver splits it over
//! descriptors, the [`Writer`] presents it as one stream.
//!
//! This module is pure: it sees a [`Writer`], an [`EntropySource`] and the clock
//! value it is given, never a vring.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use thiserror::Error;
use vhost_device_common::queue::Writer;

use crate::args::RateLimit;
use crate::host::EntropySource;

/// The most bytes one request is given, however large its buffers; bounds the
/// host buffer and the time one request can hold the worker.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why a request was not (fully) served.
#[derive(Debug, Error)]
pub enum Error {
    /// The chain has no device-writable bytes (guest error).
    #[error("request has no device-writable buffer")]
    NoWritableBuffer,
    /// Writing to guest memory failed (guest error).
    #[error("cannot write entropy to guest memory")]
    GuestWrite(#[source] io::Error),
    /// The host source ended (host error).
    #[error("rng source {0} has ended; use a device such as /dev/urandom, not a finite file")]
    SourceEnded(String),
    /// The host source failed (host error).
    #[error("cannot read rng source {name}")]
    SourceRead {
        /// Source name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whether the guest caused this (answer and carry on) rather than the host.
    pub fn is_guest_error(&self) -> bool {
        matches!(self, Error::NoWritableBuffer | Error::GuestWrite(_))
    }
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This many bytes were written; complete the request.
    Filled(u32),
    /// The rate limit is used up until the given time; leave the request queued.
    OverQuota(Instant),
    /// The source has nothing ready; leave the request queued and wait for it.
    SourceNotReady,
}

/// A fixed-window byte quota: at most `max_bytes` in each window of `period`,
/// a window opening with the first request after the previous one closed.
#[derive(Debug, Clone)]
pub struct Quota {
    limit: RateLimit,
    window_start: Option<Instant>,
    used: u64,
}

impl Quota {
    /// A full quota.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            window_start: None,
            used: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.limit.period);
        if expired {
            self.window_start = Some(now);
            self.used = 0;
        }
    }

    /// Bytes still allowed in the window containing `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.limit.max_bytes.saturating_sub(self.used)
    }

    /// Record `bytes` served.
    pub fn consume(&mut self, bytes: u64) {
        self.used = self.used.saturating_add(bytes);
    }

    /// When the current window closes.
    pub fn refill_at(&self, now: Instant) -> Instant {
        self.window_start.map_or(now, |s| s + self.limit.period)
    }

    /// The quota's migratable state at `now`: what was used of the current
    /// window and how far into it we are. `Instant`s mean nothing on another
    /// host, so the window is saved relative to `now`.
    pub fn save(&self, now: Instant) -> QuotaState {
        QuotaState {
            used: self.used,
            window_elapsed_ns: self.window_start.map(|s| {
                u64::try_from(now.saturating_duration_since(s).as_nanos()).unwrap_or(u64::MAX)
            }),
        }
    }

    /// Continue a saved quota at `now`: the window closes as much later as
    /// it had left when it was saved, so a migration neither refills nor
    /// extends it. The limit itself is this daemon's `--max-bytes/--period`.
    pub fn restore(&mut self, state: &QuotaState, now: Instant) {
        self.used = state.used;
        self.window_start = state
            .window_elapsed_ns
            .map(|ns| now.checked_sub(Duration::from_nanos(ns)).unwrap_or(now));
    }
}

/// The rate limiter's live-migration state (see [`Quota::save`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuotaState {
    /// Bytes served in the current window.
    pub used: u64,
    /// How far into the window (none: no window open).
    pub window_elapsed_ns: Option<u64>,
}

/// Serve one request: fill `writer` from `source` within `quota`.
///
/// `scratch` is the device's reusable host buffer (grown to at most
/// [`MAX_REQUEST_BYTES`]).
pub fn fill(
    writer: &mut Writer<'_>,
    source: &mut dyn EntropySource,
    quota: Option<&mut Quota>,
    scratch: &mut Vec<u8>,
    now: Instant,
) -> Result<Outcome, Error> {
    let want = writer.available_bytes().min(MAX_REQUEST_BYTES);
    if want == 0 {
        return Err(Error::NoWritableBuffer);
    }
    let mut quota = quota;
    let budget = match quota.as_deref_mut() {
        Some(q) => {
            let left = q.available(now);
            if left == 0 {
                return Ok(Outcome::OverQuota(q.refill_at(now)));
            }
            usize::try_from(left).unwrap_or(usize::MAX).min(want)
        }
        None => want,
    };
    if scratch.len() < budget {
        scratch.resize(budget, 0);
    }
    let got = match source.read(&mut scratch[..budget]) {
        Ok(0) => return Err(Error::SourceEnded(source.name())),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Outcome::SourceNotReady),
        Err(e) => {
            return Err(Error::SourceRead {
                name: source.name(),
                source: e,
            })
        }
    };
    writer
        .write_all(&scratch[..got])
        .map_err(Error::GuestWrite)?;
    if let Some(q) = quota {
        q.consume(got as u64);
    }
    // `got` is at most MAX_REQUEST_BYTES.
    Ok(Outcome::Filled(u32::try_from(got).unwrap_or(u32::MAX)))
}

/// How long until `at`, at least one millisecond (a zero timerfd is disarmed).
pub fn delay_until(at: Instant, now: Instant) -> Duration {
    at.saturating_duration_since(now)
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::{ScriptedSource, SimulatedSource, Step};
    use vhost_device_common::queue::GuestMemory;
    use vhost_device_common::virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as VIRTQ_DESC_F_WRITE;
    use vhost_device_common::virtio_queue::desc::{
        split::Descriptor as SplitDescriptor, RawDescriptor,
    };
    use vhost_device_common::virtio_queue::mock::MockSplitQueue;
    use vhost_device_common::virtio_queue::QueueOwnedT;
    use vhost_device_common::vm_memory::GuestAddress;

    const LIMIT: RateLimit = RateLimit {
        max_bytes: 100,
        period: Duration::from_millis(50),
    };

    /// Guest memory with one chain of the given (len, writable) buffers.
    fn with_chain<R>(
        bufs: &[(u32, bool)],
        f: impl FnOnce(&mut Writer<'_>) -> R,
    ) -> (R, GuestMemory) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut addr = 0x10_0000u64;
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .map(|&(len, w)| {
                let d = SplitDescriptor::new(
                    addr,
                    len,
                    if w {
                        u16::try_from(VIRTQ_DESC_F_WRITE).unwrap()
                    } else {
                        0
                    },
                    0,
                );
                addr += 0x1_0000 + u64::from(len);
                RawDescriptor::from(d)
            })
            .collect();
        vq.build_desc_chain(&descs).unwrap();
        let mut q: vhost_device_common::virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut writer = Writer::new(&mem, chain).unwrap();
        let r = f(&mut writer);
        (r, mem.clone())
    }

    #[test]
    fn request_split_over_many_descriptors_is_filled_completely() {
        let mut src = SimulatedSource::new(1);
        let (out, _) = with_chain(&[(100, true), (1, true), (3000, true)], |w| {
            fill(w, &mut src, None, &mut Vec::new(), Instant::now()).unwrap()
        });
        assert_eq!(out, Outcome::Filled(3101));
    }

    #[test]
    fn oversized_request_is_capped() {
        let mut src = SimulatedSource::new(1);
        let (out, _) = with_chain(&[(0x8_0000, true), (0x8_0000, true)], |w| {
            fill(w, &mut src, None, &mut Vec::new(), Instant::now()).unwrap()
        });
        assert_eq!(
            out,
            Outcome::Filled(u32::try_from(MAX_REQUEST_BYTES).unwrap())
        );
    }

    #[test]
    fn read_only_chain_is_a_guest_error() {
        let mut src = SimulatedSource::new(1);
        let (err, _) = with_chain(&[(64, false)], |w| {
            fill(w, &mut src, None, &mut Vec::new(), Instant::now()).unwrap_err()
        });
        assert!(matches!(err, Error::NoWritableBuffer));
        assert!(err.is_guest_error());
    }

    #[test]
    fn ended_source_is_a_host_error_naming_the_source() {
        let mut src = ScriptedSource::new([Step::End]);
        let (err, _) = with_chain(&[(64, true)], |w| {
            fill(w, &mut src, None, &mut Vec::new(), Instant::now()).unwrap_err()
        });
        assert!(!err.is_guest_error());
        assert!(err.to_string().contains("scripted source"));
    }

    #[test]
    fn failing_source_is_a_host_error() {
        let mut src = ScriptedSource::new([Step::Fail(io::ErrorKind::PermissionDenied)]);
        let (err, _) = with_chain(&[(64, true)], |w| {
            fill(w, &mut src, None, &mut Vec::new(), Instant::now()).unwrap_err()
        });
        assert!(matches!(err, Error::SourceRead { .. }));
    }

    #[test]
    fn short_read_completes_with_what_was_read() {
        let mut src = ScriptedSource::new([Step::Bytes(10, 0xAA)]);
        let (out, _) = with_chain(&[(64, true)], |w| {
            fill(w, &mut src, None, &mut Vec::new(), Instant::now()).unwrap()
        });
        assert_eq!(out, Outcome::Filled(10));
    }

    #[test]
    fn source_not_ready_leaves_request_queued() {
        let mut src = ScriptedSource::new([Step::Fail(io::ErrorKind::WouldBlock)]);
        let (out, _) = with_chain(&[(64, true)], |w| {
            fill(w, &mut src, None, &mut Vec::new(), Instant::now()).unwrap()
        });
        assert_eq!(out, Outcome::SourceNotReady);
    }

    #[test]
    fn request_is_trimmed_to_remaining_quota() {
        let mut src = SimulatedSource::new(1);
        let mut quota = Quota::new(LIMIT);
        let now = Instant::now();
        let (out, _) = with_chain(&[(64, true)], |w| {
            fill(w, &mut src, Some(&mut quota), &mut Vec::new(), now).unwrap()
        });
        assert_eq!(out, Outcome::Filled(64));
        let (out, _) = with_chain(&[(64, true)], |w| {
            fill(w, &mut src, Some(&mut quota), &mut Vec::new(), now).unwrap()
        });
        assert_eq!(out, Outcome::Filled(36));
    }

    #[test]
    fn exhausted_quota_parks_until_window_ends() {
        let mut src = SimulatedSource::new(1);
        let mut quota = Quota::new(LIMIT);
        let now = Instant::now();
        quota.available(now);
        quota.consume(100);
        let (out, _) = with_chain(&[(64, true)], |w| {
            fill(w, &mut src, Some(&mut quota), &mut Vec::new(), now).unwrap()
        });
        assert_eq!(out, Outcome::OverQuota(now + LIMIT.period));
    }

    #[test]
    fn quota_refills_after_period() {
        let mut quota = Quota::new(LIMIT);
        let t0 = Instant::now();
        assert_eq!(quota.available(t0), 100);
        quota.consume(100);
        assert_eq!(quota.available(t0 + Duration::from_millis(49)), 0);
        assert_eq!(quota.available(t0 + Duration::from_millis(50)), 100);
    }

    #[test]
    fn delay_is_never_zero() {
        let now = Instant::now();
        assert_eq!(delay_until(now, now), Duration::from_millis(1));
    }
}
