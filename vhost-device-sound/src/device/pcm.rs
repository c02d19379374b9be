// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One PCM stream: its state machine, parameters, the I/O messages it holds
//! and the clock that paces them.
//!
//! # State machine (virtio 1.3, 5.14.6.6.1 "PCM Command Lifecycle")
//!
//! | from \ command   | SET_PARAMS | PREPARE | START | STOP | RELEASE |
//! |------------------|------------|---------|-------|------|---------|
//! | initial, SET_PARAMS | ✓       | ✓       |       |      |         |
//! | PREPARE          | ✓          | ✓       | ✓     |      | ✓       |
//! | START            |            |         |       | ✓    |         |
//! | STOP             |            |         | ✓     |      | ✓       |
//! | RELEASE          | ✓          | ✓       |       |      |         |
//!
//! Any other command is answered `VIRTIO_SND_S_BAD_MSG` and changes nothing.
//! A stream starts with default parameters, so PREPARE from the initial
//! state works as the table allows.
//!
//! # I/O
//!
//! I/O messages of the stream's queue are held in arrival order while the
//! stream is prepared, started or stopped (playback buffers that come
//! before START are the driver's pre-buffering, 5.14.6.6.1 step 3) and are
//! answered `VIRTIO_SND_S_IO_ERR` in any other state. A message completes
//! when the host has consumed it (playback) or filled it (capture) — for a
//! clock-paced backend at the moment its last byte is due in real time
//! (5.14.6.8: the completion is the period-elapsed signal):
//!
//! `due(head) = anchor + (done + head.len) / byte_rate`
//!
//! where `anchor` is when the stream (re)started and `done` the bytes
//! completed since. When the queue runs dry while started (an underrun), the
//! clock waits instead of racing ahead: the next buffer re-anchors it. STOP
//! keeps how far into the head buffer the stream was, and START goes on from
//! there. RELEASE completes every held message before the control request
//! is answered (5.14.6.6.5).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use vhost_device_common::queue::HeldChain;

use crate::args::StreamSpec;
use crate::host::{PcmHost, PcmParams};
use crate::request::{Error, PcmCommand};
use crate::virtio::{pcm_features, Format, SetParams, RATES};

/// Largest `buffer_bytes` a driver may set (and so the most one I/O message
/// may carry).
pub const MAX_BUFFER_BYTES: u32 = 4 << 20;

/// Where a stream is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PcmState {
    /// No command yet.
    Initial,
    /// After SET_PARAMS.
    ParamsSet,
    /// After PREPARE.
    Prepared,
    /// After START: running.
    Started,
    /// After STOP: paused.
    Stopped,
    /// After RELEASE.
    Released,
}

impl PcmState {
    /// The state after `command`, or `None` if the table forbids it.
    pub fn after(self, command: PcmCommand) -> Option<PcmState> {
        use PcmCommand as C;
        use PcmState as S;
        match (self, command) {
            (S::Initial | S::ParamsSet | S::Prepared | S::Released, C::SetParams) => {
                Some(S::ParamsSet)
            }
            (S::Initial | S::ParamsSet | S::Prepared | S::Released, C::Prepare) => {
                Some(S::Prepared)
            }
            (S::Prepared | S::Stopped, C::Start) => Some(S::Started),
            (S::Started, C::Stop) => Some(S::Stopped),
            (S::Prepared | S::Stopped, C::Release) => Some(S::Released),
            _ => None,
        }
    }

    /// Whether I/O messages are held (rather than refused).
    pub fn takes_io(self) -> bool {
        matches!(
            self,
            PcmState::Prepared | PcmState::Started | PcmState::Stopped
        )
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            PcmState::Initial => "initial",
            PcmState::ParamsSet => "SET_PARAMS",
            PcmState::Prepared => "PREPARE",
            PcmState::Started => "START",
            PcmState::Stopped => "STOP",
            PcmState::Released => "RELEASE",
        }
    }
}

/// Check SET_PARAMS against what the stream offers.
pub fn validate_params(id: u32, spec: &StreamSpec, p: &SetParams) -> Result<PcmParams, Error> {
    let bad = |why: String| Error::BadParams { stream: id, why };
    let format = Format::from_bit(p.format)
        .filter(|f| spec.formats.contains(f))
        .ok_or_else(|| bad(format!("format {} is not offered", p.format)))?;
    let rate = RATES
        .get(usize::from(p.rate))
        .copied()
        .filter(|r| spec.rates.contains(r))
        .ok_or_else(|| bad(format!("rate {} is not offered", p.rate)))?;
    if !(spec.channels_min..=spec.channels_max).contains(&p.channels) {
        return Err(bad(format!(
            "{} channels, not {} to {}",
            p.channels, spec.channels_min, spec.channels_max
        )));
    }
    let features = p.features.to_native();
    if features & !pcm_features::EVT_XRUNS != 0 {
        return Err(bad(format!("features {features:#x} are not offered")));
    }
    let (buffer, period) = (p.buffer_bytes.to_native(), p.period_bytes.to_native());
    if period == 0 || buffer < period || buffer > MAX_BUFFER_BYTES {
        return Err(bad(format!(
            "buffer {buffer} and period {period} bytes (period > 0, period <= buffer <= {MAX_BUFFER_BYTES})"
        )));
    }
    Ok(PcmParams {
        direction: spec.direction,
        channels: p.channels,
        format,
        rate,
        period_bytes: period,
        buffer_bytes: buffer,
        features,
    })
}

/// The parameters a stream has before any SET_PARAMS: S16 (or its first
/// format), 48 kHz (or its fastest rate), stereo if it can, 10 ms periods,
/// 4 of them.
pub fn default_params(spec: &StreamSpec) -> PcmParams {
    let format = if spec.formats.contains(&Format::S16) {
        Format::S16
    } else {
        spec.formats.first().copied().unwrap_or(Format::S16)
    };
    let rate = if spec.rates.contains(&48000) {
        48000
    } else {
        spec.rates.iter().copied().max().unwrap_or(48000)
    };
    let channels = 2u8.clamp(spec.channels_min, spec.channels_max);
    let mut p = PcmParams {
        direction: spec.direction,
        channels,
        format,
        rate,
        period_bytes: 0,
        buffer_bytes: 0,
        features: 0,
    };
    let period = u32::try_from(p.bytes_in(10_000_000)).unwrap_or(4096).max(1);
    p.period_bytes = period;
    p.buffer_bytes = period * 4;
    p
}

/// One held I/O message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Io {
    /// The chain.
    pub chain: HeldChain,
    /// Payload bytes (playback data, or capture room before the status).
    pub len: u32,
}

/// The real-time clock of a clock-paced stream (nanoseconds of
/// `CLOCK_MONOTONIC`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// When the stream (re)started, adjusted for the progress carried over.
    pub anchor_ns: u64,
    /// Bytes completed since the anchor.
    pub done: u64,
    /// While stopped: how far into the head buffer the stream was.
    pub carry_ns: u64,
}

impl Clock {
    /// When a head buffer of `len` bytes is due.
    pub fn due(&self, params: &PcmParams, len: u32) -> u64 {
        self.anchor_ns
            .saturating_add(params.duration_ns(self.done + u64::from(len)))
    }

    /// (Re)start at `now`, carrying the progress kept at STOP.
    pub fn start(&mut self, now: u64) {
        self.anchor_ns = now.saturating_sub(self.carry_ns);
        self.done = 0;
        self.carry_ns = 0;
    }

    /// Pause at `now` with a head buffer of `head` bytes (if any).
    pub fn stop(&mut self, params: &PcmParams, now: u64, head: Option<u32>) {
        let played = self
            .anchor_ns
            .checked_add(params.duration_ns(self.done))
            .map_or(0, |start_of_head| now.saturating_sub(start_of_head));
        self.carry_ns = head.map_or(0, |len| played.min(params.duration_ns(u64::from(len))));
    }

    /// A buffer arrived to an empty queue at `now`: if the clock ran ahead
    /// of what was queued (an underrun), continue from now.
    pub fn resume_if_dry(&mut self, params: &PcmParams, now: u64) {
        let end_of_queued = self.anchor_ns.saturating_add(params.duration_ns(self.done));
        if end_of_queued < now {
            self.anchor_ns = now;
            self.done = 0;
        }
    }
}

/// One stream (device side).
pub struct Stream {
    /// Stream id.
    pub id: u32,
    /// What the stream offers.
    pub spec: StreamSpec,
    /// Lifecycle state.
    pub state: PcmState,
    /// Current parameters.
    pub params: PcmParams,
    /// The host side.
    pub host: Box<dyn PcmHost>,
    /// Held I/O messages, oldest first.
    pub io: VecDeque<Io>,
    /// Pacing clock (clock-paced hosts).
    pub clock: Clock,
    /// RELEASE requests waiting for the I/O to be returned.
    pub release_waiters: Vec<HeldChain>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("held", &self.io.len())
            .finish()
    }
}

impl Stream {
    /// A stream in its initial state.
    pub fn new(id: u32, spec: StreamSpec, host: Box<dyn PcmHost>) -> Self {
        Self {
            id,
            params: default_params(&spec),
            spec,
            state: PcmState::Initial,
            host,
            io: VecDeque::new(),
            clock: Clock::default(),
            release_waiters: Vec::new(),
        }
    }

    /// Whether the host paces the stream (else the device's clock does).
    pub fn host_paced(&self) -> bool {
        self.host.ready_fd().is_some()
    }

    /// Apply `command` to the state, or refuse it.
    pub fn transition(&mut self, command: PcmCommand) -> Result<PcmState, Error> {
        let next = self.state.after(command).ok_or(Error::BadTransition {
            stream: self.id,
            command: command.name(),
            state: self.state.name(),
        })?;
        Ok(std::mem::replace(&mut self.state, next))
    }

    /// Whether underrun/overrun events were selected.
    pub fn xrun_events(&self) -> bool {
        self.params.features & pcm_features::EVT_XRUNS != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{Direction, Hdr, ItemHdr};

    const ALL_STATES: [PcmState; 6] = [
        PcmState::Initial,
        PcmState::ParamsSet,
        PcmState::Prepared,
        PcmState::Started,
        PcmState::Stopped,
        PcmState::Released,
    ];
    const ALL_COMMANDS: [PcmCommand; 5] = [
        PcmCommand::SetParams,
        PcmCommand::Prepare,
        PcmCommand::Start,
        PcmCommand::Stop,
        PcmCommand::Release,
    ];

    /// The spec's table, row by row: which commands each state allows.
    fn allowed(state: PcmState) -> &'static [PcmCommand] {
        use PcmCommand as C;
        match state {
            PcmState::Initial | PcmState::ParamsSet => &[C::SetParams, C::Prepare],
            PcmState::Prepared => &[C::SetParams, C::Prepare, C::Start, C::Release],
            PcmState::Started => &[C::Stop],
            PcmState::Stopped => &[C::Start, C::Release],
            PcmState::Released => &[C::SetParams, C::Prepare],
        }
    }

    fn target(command: PcmCommand) -> PcmState {
        match command {
            PcmCommand::SetParams => PcmState::ParamsSet,
            PcmCommand::Prepare => PcmState::Prepared,
            PcmCommand::Start => PcmState::Started,
            PcmCommand::Stop => PcmState::Stopped,
            PcmCommand::Release => PcmState::Released,
        }
    }

    #[test]
    fn every_cell_of_the_state_table() {
        for state in ALL_STATES {
            for command in ALL_COMMANDS {
                let expected = allowed(state).contains(&command).then(|| target(command));
                assert_eq!(
                    state.after(command),
                    expected,
                    "{} in state {}",
                    command.name(),
                    state.name()
                );
            }
        }
    }

    #[test]
    fn io_is_held_only_while_prepared_started_or_stopped() {
        let takes: Vec<_> = ALL_STATES.into_iter().filter(|s| s.takes_io()).collect();
        assert_eq!(
            takes,
            vec![PcmState::Prepared, PcmState::Started, PcmState::Stopped]
        );
    }

    fn set_params(channels: u8, format: u8, rate: u8, period: u32, buffer: u32) -> SetParams {
        SetParams {
            hdr: ItemHdr {
                hdr: Hdr { code: 0x101.into() },
                id: 0.into(),
            },
            buffer_bytes: buffer.into(),
            period_bytes: period.into(),
            features: 0.into(),
            channels,
            format,
            rate,
            padding: 0,
        }
    }

    #[test]
    fn offered_params_are_taken() {
        let spec = StreamSpec::default_for(Direction::Output);
        let p = validate_params(0, &spec, &set_params(2, 5, 7, 1920, 7680)).unwrap();
        assert_eq!((p.channels, p.format, p.rate), (2, Format::S16, 48000));
        assert_eq!(p.byte_rate(), 192_000);
    }

    #[test]
    fn params_outside_the_offer_are_refused() {
        let spec = StreamSpec {
            formats: vec![Format::S16],
            rates: vec![48000],
            ..StreamSpec::default_for(Direction::Output)
        };
        for (what, p) in [
            ("format", set_params(2, 17, 7, 64, 256)),
            ("unknown format", set_params(2, 63, 7, 64, 256)),
            ("rate", set_params(2, 5, 6, 64, 256)),
            ("rate index", set_params(2, 5, 200, 64, 256)),
            ("channels", set_params(3, 5, 7, 64, 256)),
            ("no channels", set_params(0, 5, 7, 64, 256)),
            ("zero period", set_params(2, 5, 7, 0, 256)),
            ("period above buffer", set_params(2, 5, 7, 512, 256)),
            ("huge buffer", set_params(2, 5, 7, 64, MAX_BUFFER_BYTES + 1)),
        ] {
            let err = validate_params(0, &spec, &p).unwrap_err();
            assert_eq!(err.status(), crate::virtio::Status::BadMsg, "{what}");
        }
        let mut shmem = set_params(2, 5, 7, 64, 256);
        shmem.features = pcm_features::SHMEM_HOST.into();
        assert!(validate_params(0, &spec, &shmem).is_err());
    }

    fn params_48k_s16_stereo() -> PcmParams {
        default_params(&StreamSpec::default_for(Direction::Output))
    }

    #[test]
    fn default_params_are_48k_s16_stereo_10ms_periods() {
        let p = params_48k_s16_stereo();
        assert_eq!((p.rate, p.format, p.channels), (48000, Format::S16, 2));
        assert_eq!((p.period_bytes, p.buffer_bytes), (1920, 7680));
    }

    #[test]
    fn buffers_fall_due_at_the_real_time_rate() {
        let p = params_48k_s16_stereo();
        let mut c = Clock::default();
        c.start(1_000);

        assert_eq!(c.due(&p, 1920), 1_000 + 10_000_000);
        c.done += 1920;
        assert_eq!(c.due(&p, 1920), 1_000 + 20_000_000);
    }

    #[test]
    fn stop_and_start_carry_the_progress_into_the_head_buffer() {
        let p = params_48k_s16_stereo();
        let mut c = Clock::default();
        c.start(0);
        c.stop(&p, 4_000_000, Some(1920));

        c.start(100_000_000);

        assert_eq!(c.due(&p, 1920), 106_000_000);
    }

    #[test]
    fn an_underrun_reanchors_instead_of_racing_ahead() {
        let p = params_48k_s16_stereo();
        let mut c = Clock::default();
        c.start(0);
        c.done = 1920;

        c.resume_if_dry(&p, 50_000_000);

        assert_eq!(c.due(&p, 1920), 60_000_000);
    }

    #[test]
    fn a_buffer_queued_in_time_keeps_the_clock() {
        let p = params_48k_s16_stereo();
        let mut c = Clock::default();
        c.start(0);
        c.done = 1920;

        c.resume_if_dry(&p, 5_000_000);

        assert_eq!(c.due(&p, 1920), 20_000_000);
    }
}
