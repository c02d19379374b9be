// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The lines of one device: what each request does, and the interrupt rules.
//!
//! Generic over `H`, the held eventq buffer (a `HeldChain` in the daemon, a
//! plain number in the unit tests), so the rules are tested without vrings.
//!
//! # Line configuration (virtio 1.3, 5.18.6)
//!
//! A line starts with direction NONE and no state. SET_DIRECTION(IN/OUT)
//! claims the host line; SET_VALUE is accepted in any direction and latched,
//! and applied when the line is (or becomes) an output — Linux's
//! `direction_output` is SET_VALUE then SET_DIRECTION(OUT). SET_DIRECTION(NONE)
//! releases the host line and drops everything about it, its interrupt and
//! pending eventq buffer included (5.18.6.2.1: "MUST discard all state
//! information"). GET_VALUE needs a claimed line.
//!
//! # Interrupts (5.18.6.2 "Set IRQ Type", 5.18.7 "eventq Operation")
//!
//! An interrupt is *enabled* by SET_IRQ_TYPE ≠ NONE and *unmasked* by an
//! eventq buffer for its line; it fires only when both hold, and firing
//! returns the buffer VALID, which masks it again.
//!
//! ```text
//!            SET_IRQ_TYPE(t)                    buffer arrives
//!  disabled ────────────────▶ enabled, masked ──────────────────▶ enabled, unmasked
//!     ▲                          │   ▲  edge: latch (a flag)          │
//!     │  SET_IRQ_TYPE(NONE) /    │   └────── fires: buffer VALID ◀────┘
//!     │  SET_DIRECTION(NONE):    │           (edge, or level active)
//!     └── buffer INVALID ────────┘
//! ```
//!
//! - **Edge** (rising, falling, both): an edge while masked is latched — a
//!   flag, not a counter (5.18.6.2.1 "MUST latch an edge interrupt if the
//!   interrupt is enabled but still masked"); a buffer arriving with the
//!   latch set is returned VALID at once and clears it.
//! - **Level** (high, low): never latched ("MUST NOT latch a level
//!   interrupt"). The GPIO uAPI has edge events only, so a level interrupt
//!   is emulated: the host line reports edges into the active level; when a
//!   buffer arrives the line is read, and if it is at the active level the
//!   buffer is returned VALID at once (Linux's `handle_level_irq` re-queues
//!   the buffer after handling, so a still-active line fires again, as a
//!   level interrupt must); otherwise the next edge into the active level
//!   fires it.
//! - SET_IRQ_TYPE(NONE) drops the latch and returns the pending buffer
//!   INVALID. A change of type goes through NONE: the pending buffer is
//!   returned INVALID and the latch dropped before the new type applies.
//!   A buffer for a line whose interrupt is disabled is returned INVALID
//!   (Linux re-queues it once it has enabled the interrupt).
//! - One buffer per line: a second buffer for a line that already has one
//!   is returned INVALID and the first one stays.
//! - SET_IRQ_TYPE on an output line is an error; on a released line it
//!   claims the line as input.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::host::{EdgeDetect, GpioHost, LineMode};
use crate::request::Request;
use crate::virtio::{Direction, IrqStatus, IrqType, RequestType};

/// Why a request was answered with `VIRTIO_GPIO_STATUS_ERR`.
#[derive(Debug, Error)]
pub enum Error {
    /// `gpio >= ngpio`.
    #[error("line {line} does not exist (the chip has {ngpio})")]
    NoSuchLine {
        /// Requested line.
        line: u16,
        /// Line count.
        ngpio: u16,
    },
    /// Unknown message type.
    #[error("unknown request type {0}")]
    UnknownType(u16),
    /// SET_DIRECTION with a value that is no direction.
    #[error("unknown direction {0}")]
    BadDirection(u32),
    /// SET_VALUE with a value other than 0 or 1.
    #[error("value {0} is not 0 or 1")]
    BadValue(u32),
    /// SET_IRQ_TYPE with an unknown type.
    #[error("unknown interrupt type {0}")]
    BadIrqType(u32),
    /// SET_IRQ_TYPE without `VIRTIO_GPIO_F_IRQ`.
    #[error("interrupts were not negotiated")]
    IrqNotNegotiated,
    /// SET_IRQ_TYPE on an output line.
    #[error("line {0} is an output; interrupts need an input")]
    IrqOnOutput(u16),
    /// SET_DIRECTION(OUT) on a line with an interrupt enabled.
    #[error("line {0} has an interrupt enabled; disable it before making it an output")]
    OutputWithIrq(u16),
    /// GET_VALUE on a line with direction NONE.
    #[error("line {0} is not in use (direction NONE)")]
    NotInUse(u16),
    /// GET_LINE_NAMES when the chip has no names.
    #[error("the chip has no line names")]
    NoNames,
    /// The host refused.
    #[error("line {line}: host GPIO {what} failed")]
    Host {
        /// Line.
        line: u16,
        /// What was attempted.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What a successful request answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// OK with this value byte.
    Value(u8),
    /// OK with the names block.
    Names,
}

/// The state of one line that is in use.
#[derive(Debug, Serialize, Deserialize)]
pub struct LineState<H> {
    /// Direction set by the driver.
    pub direction: Direction,
    /// Output value (latched while not an output).
    pub output: bool,
    /// Interrupt type; `None`: disabled.
    pub irq: IrqType,
    /// An edge arrived while masked (edge types only).
    pub latched: bool,
    /// The eventq buffer that unmasks the interrupt.
    pub pending: Option<H>,
}

impl<H> Default for LineState<H> {
    fn default() -> Self {
        Self {
            direction: Direction::None,
            output: false,
            irq: IrqType::None,
            latched: false,
            pending: None,
        }
    }
}

impl<H> LineState<H> {
    fn mode(&self) -> LineMode {
        match self.direction {
            Direction::None => LineMode::Released,
            Direction::In => LineMode::Input(edge_detect(self.irq)),
            Direction::Out => LineMode::Output(self.output),
        }
    }
}

/// The host edge detection that serves interrupt type `t`: level types
/// watch for the edge into their active level.
pub fn edge_detect(t: IrqType) -> EdgeDetect {
    match t {
        IrqType::None => EdgeDetect::None,
        IrqType::EdgeRising | IrqType::LevelHigh => EdgeDetect::Rising,
        IrqType::EdgeFalling | IrqType::LevelLow => EdgeDetect::Falling,
        IrqType::EdgeBoth => EdgeDetect::Both,
    }
}

/// A line as saved for migration.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedLine<H> {
    /// Line number.
    pub line: u16,
    /// Its state.
    pub state: LineState<H>,
}

/// Every line of one device, over its host chip.
pub struct Lines<H> {
    host: Box<dyn GpioHost>,
    ngpio: u16,
    names: Vec<u8>,
    irq_negotiated: bool,
    lines: BTreeMap<u16, LineState<H>>,
    done: Vec<(H, IrqStatus)>,
}

impl<H> std::fmt::Debug for Lines<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("ngpio", &self.ngpio)
            .field("in_use", &self.lines.len())
            .finish()
    }
}

impl<H> Lines<H> {
    /// The lines of `host`; `names` is its GET_LINE_NAMES block.
    pub fn new(host: Box<dyn GpioHost>, names: Vec<u8>) -> Self {
        Self {
            ngpio: host.num_lines(),
            host,
            names,
            irq_negotiated: false,
            lines: BTreeMap::new(),
            done: Vec::new(),
        }
    }

    /// Number of lines.
    pub fn ngpio(&self) -> u16 {
        self.ngpio
    }

    /// The GET_LINE_NAMES block.
    pub fn names(&self) -> &[u8] {
        &self.names
    }

    /// The host chip.
    pub fn host(&self) -> &dyn GpioHost {
        &*self.host
    }

    /// The host chip, mutably.
    pub fn host_mut(&mut self) -> &mut dyn GpioHost {
        &mut *self.host
    }

    /// Whether `VIRTIO_GPIO_F_IRQ` was negotiated.
    pub fn set_irq_negotiated(&mut self, yes: bool) {
        self.irq_negotiated = yes;
    }

    /// The state of `line`, if it is in use.
    pub fn line(&self, line: u16) -> Option<&LineState<H>> {
        self.lines.get(&line)
    }

    /// Lines with an interrupt enabled.
    pub fn irq_lines(&self) -> impl Iterator<Item = u16> + '_ {
        self.lines
            .iter()
            .filter(|(_, s)| s.irq != IrqType::None)
            .map(|(&l, _)| l)
    }

    /// Eventq buffers to return now, with their status.
    pub fn take_done(&mut self) -> Vec<(H, IrqStatus)> {
        std::mem::take(&mut self.done)
    }

    fn check(&self, line: u16) -> Result<(), Error> {
        if line >= self.ngpio {
            return Err(Error::NoSuchLine {
                line,
                ngpio: self.ngpio,
            });
        }
        Ok(())
    }

    /// Serve one requestq request.
    pub fn handle(&mut self, req: Request) -> Result<Answer, Error> {
        let kind = RequestType::try_from(req.kind).map_err(Error::UnknownType)?;
        self.check(req.line)?;
        let line = req.line;
        match kind {
            RequestType::GetLineNames => {
                if self.names.is_empty() {
                    return Err(Error::NoNames);
                }
                Ok(Answer::Names)
            }
            RequestType::GetDirection => Ok(Answer::Value(
                self.lines
                    .get(&line)
                    .map_or(Direction::None, |s| s.direction) as u8,
            )),
            RequestType::SetDirection => {
                let dir = Direction::try_from(req.value).map_err(Error::BadDirection)?;
                self.set_direction(line, dir).map(|()| Answer::Value(0))
            }
            RequestType::GetValue => {
                let in_use = self
                    .lines
                    .get(&line)
                    .is_some_and(|s| s.direction != Direction::None);
                if !in_use {
                    return Err(Error::NotInUse(line));
                }
                let v = self.host.value(line).map_err(|source| Error::Host {
                    line,
                    what: "read",
                    source,
                })?;
                Ok(Answer::Value(u8::from(v)))
            }
            RequestType::SetValue => {
                let v = match req.value {
                    0 => false,
                    1 => true,
                    other => return Err(Error::BadValue(other)),
                };
                let st = self.lines.entry(line).or_default();
                if st.direction == Direction::Out {
                    self.host.set_value(line, v).map_err(|source| Error::Host {
                        line,
                        what: "write",
                        source,
                    })?;
                }
                st.output = v;
                Ok(Answer::Value(0))
            }
            RequestType::SetIrqType => {
                if !self.irq_negotiated {
                    return Err(Error::IrqNotNegotiated);
                }
                let t = IrqType::try_from(req.value).map_err(Error::BadIrqType)?;
                self.set_irq_type(line, t).map(|()| Answer::Value(0))
            }
        }
    }

    fn apply(&mut self, line: u16, mode: LineMode, what: &'static str) -> Result<(), Error> {
        self.host
            .set_mode(line, mode)
            .map_err(|source| Error::Host { line, what, source })
    }

    fn set_direction(&mut self, line: u16, dir: Direction) -> Result<(), Error> {
        match dir {
            Direction::None => {
                self.release(line);
                Ok(())
            }
            Direction::In | Direction::Out => {
                let st = self.lines.entry(line).or_default();
                if st.direction == dir {
                    return Ok(());
                }
                if dir == Direction::Out && st.irq != IrqType::None {
                    return Err(Error::OutputWithIrq(line));
                }
                let mode = match dir {
                    Direction::Out => LineMode::Output(st.output),
                    _ => LineMode::Input(edge_detect(st.irq)),
                };
                self.apply(line, mode, "claim")?;
                if let Some(st) = self.lines.get_mut(&line) {
                    st.direction = dir;
                }
                Ok(())
            }
        }
    }

    /// Release `line` and drop all its state; its pending buffer is returned
    /// INVALID.
    pub fn release(&mut self, line: u16) {
        if let Some(st) = self.lines.remove(&line) {
            if let Some(h) = st.pending {
                self.done.push((h, IrqStatus::Invalid));
            }
            if st.direction != Direction::None {
                if let Err(e) = self.host.set_mode(line, LineMode::Released) {
                    log::warn!("line {line}: cannot release the host line: {e}");
                }
            }
        }
    }

    /// Release every line (device reset, disconnect).
    pub fn release_all(&mut self) {
        let lines: Vec<u16> = self.lines.keys().copied().collect();
        for line in lines {
            self.release(line);
        }
    }

    fn disable_irq(&mut self, line: u16) -> Result<(), Error> {
        let Some(st) = self.lines.get_mut(&line) else {
            return Ok(());
        };
        if st.irq == IrqType::None {
            return Ok(());
        }
        st.irq = IrqType::None;
        st.latched = false;
        if let Some(h) = st.pending.take() {
            self.done.push((h, IrqStatus::Invalid));
        }
        if st.direction == Direction::In {
            self.apply(line, LineMode::Input(EdgeDetect::None), "edge detection")?;
        }
        Ok(())
    }

    fn set_irq_type(&mut self, line: u16, t: IrqType) -> Result<(), Error> {
        let current = self.lines.get(&line);
        if current.is_some_and(|s| s.direction == Direction::Out) {
            return Err(Error::IrqOnOutput(line));
        }
        let now = current.map_or(IrqType::None, |s| s.irq);
        if now == t {
            return Ok(());
        }
        // A change of type goes through NONE.
        self.disable_irq(line)?;
        if t == IrqType::None {
            return Ok(());
        }
        self.apply(line, LineMode::Input(edge_detect(t)), "edge detection")?;
        // Edges seen before the interrupt was enabled do not count.
        let _ = self.host.take_edges(line);
        let st = self.lines.entry(line).or_default();
        st.direction = Direction::In;
        st.irq = t;
        st.latched = false;
        Ok(())
    }

    /// Whether `line` is at the active level of its level interrupt
    /// (false for edge types, or if the line cannot be read).
    fn level_active(&mut self, line: u16, t: IrqType) -> bool {
        let want = match t {
            IrqType::LevelHigh => true,
            IrqType::LevelLow => false,
            _ => return false,
        };
        match self.host.value(line) {
            Ok(v) => v == want,
            Err(e) => {
                log::warn!("line {line}: cannot read the level: {e}");
                false
            }
        }
    }

    /// An eventq buffer for `line` arrived: it unmasks the interrupt.
    ///
    /// Returns the status to answer it with at once, or `None` after
    /// keeping it (`hold` is called only then).
    pub fn unmask(&mut self, line: u16, hold: impl FnOnce() -> H) -> Option<IrqStatus> {
        if line >= self.ngpio {
            return Some(IrqStatus::Invalid);
        }
        // Edges the host saw before this buffer came count as masked ones.
        self.collect_logged(line);
        let Some(st) = self.lines.get_mut(&line) else {
            return Some(IrqStatus::Invalid);
        };
        if st.irq == IrqType::None || st.pending.is_some() {
            return Some(IrqStatus::Invalid);
        }
        let t = st.irq;
        if t.is_level() {
            // Never latched: whatever edges came while masked are stale.
            let _ = self.host.take_edges(line);
            if self.level_active(line, t) {
                return Some(IrqStatus::Valid);
            }
        } else if st.latched {
            st.latched = false;
            log::debug!("line {line}: buffer arrived, latched edge fires");
            return Some(IrqStatus::Valid);
        }
        log::debug!("line {line}: buffer held");
        if let Some(st) = self.lines.get_mut(&line) {
            st.pending = Some(hold());
        }
        None
    }

    /// Collect the edges the host saw on `line` and apply them: fire the
    /// pending buffer, or latch (edge types). An error means the host's
    /// edge events for the line cannot be read.
    pub fn collect(&mut self, line: u16) -> io::Result<()> {
        let Some(t) = self.lines.get(&line).map(|s| s.irq) else {
            return Ok(());
        };
        if t == IrqType::None {
            return Ok(());
        }
        let edges = self.host.take_edges(line)?;
        let relevant = match edge_detect(t) {
            EdgeDetect::Rising => edges.rising,
            EdgeDetect::Falling => edges.falling,
            EdgeDetect::Both => edges.any(),
            EdgeDetect::None => false,
        };
        if !relevant {
            return Ok(());
        }
        if let Some(st) = self.lines.get_mut(&line) {
            if let Some(h) = st.pending.take() {
                log::debug!("line {line}: {edges:?}: interrupt fires");
                self.done.push((h, IrqStatus::Valid));
            } else if !t.is_level() {
                log::debug!("line {line}: {edges:?}: edge latched");
                st.latched = true;
            }
        }
        Ok(())
    }

    fn collect_logged(&mut self, line: u16) {
        if let Err(e) = self.collect(line) {
            log::warn!("line {line}: cannot read edge events: {e}");
        }
    }

    /// Fire a pending buffer that should fire now (a latched edge, a level
    /// line that is active): after a migration, when nothing else would.
    pub fn recheck(&mut self, line: u16) {
        self.collect_logged(line);
        let Some(st) = self.lines.get(&line) else {
            return;
        };
        if st.pending.is_none() {
            return;
        }
        let t = st.irq;
        let fire = if t.is_level() {
            self.level_active(line, t)
        } else {
            st.latched
        };
        if let Some(st) = self.lines.get_mut(&line) {
            if fire {
                st.latched = false;
                if let Some(h) = st.pending.take() {
                    self.done.push((h, IrqStatus::Valid));
                }
            }
        }
    }

    /// Every line in use, with its state, for migration; `copy` makes the
    /// saved form of a pending buffer (the device keeps its own).
    pub fn save<S>(&self, mut copy: impl FnMut(&H) -> S) -> Vec<SavedLine<S>> {
        self.lines
            .iter()
            .map(|(&line, s)| SavedLine {
                line,
                state: LineState {
                    direction: s.direction,
                    output: s.output,
                    irq: s.irq,
                    latched: s.latched,
                    pending: s.pending.as_ref().map(&mut copy),
                },
            })
            .collect()
    }

    /// Take over saved lines: claim each on the host as saved. Lines in use
    /// before are released first.
    pub fn load(&mut self, saved: Vec<SavedLine<H>>) -> Result<(), Error> {
        for s in &saved {
            self.check(s.line)?;
        }
        self.release_all();
        self.done.clear();
        for SavedLine { line, state } in saved {
            log::debug!(
                "line {line}: loaded {:?} {:?} latched {} pending {}",
                state.direction,
                state.irq,
                state.latched,
                state.pending.is_some()
            );
            self.apply(line, state.mode(), "claim")?;
            self.lines.insert(line, state);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::{SimChip, SimHost};
    use crate::virtio::STATUS_OK;

    fn setup(n: usize) -> (SimChip, Lines<u32>) {
        let chip = SimChip::new((0..n).map(|i| format!("l{i}")).collect());
        let host: SimHost = chip.attach().unwrap();
        let names = crate::host::names_block(&(0..n).map(|i| format!("l{i}")).collect::<Vec<_>>());
        let mut lines = Lines::new(Box::new(host), names);
        lines.set_irq_negotiated(true);
        (chip, lines)
    }

    fn req(kind: RequestType, line: u16, value: u32) -> Request {
        Request {
            kind: kind as u16,
            line,
            value,
        }
    }

    fn ok(lines: &mut Lines<u32>, kind: RequestType, line: u16, value: u32) -> u8 {
        match lines.handle(req(kind, line, value)) {
            Ok(Answer::Value(v)) => v,
            other => panic!("{kind:?} {line} {value}: {other:?}"),
        }
    }

    fn irq(lines: &mut Lines<u32>, line: u16, t: IrqType) {
        ok(lines, RequestType::SetIrqType, line, t as u32);
    }

    fn chip_get(chip: &SimChip, line: u16) -> String {
        chip.command(&format!("get {line}"))
    }

    // --- requests ---

    #[test]
    fn names_are_answered_when_the_chip_has_some() {
        let (_c, mut l) = setup(2);
        assert_eq!(
            l.handle(req(RequestType::GetLineNames, 0, 0)).unwrap(),
            Answer::Names
        );
        assert_eq!(l.names(), b"l0\0l1\0");
    }

    #[test]
    fn names_request_without_names_is_an_error() {
        let chip = SimChip::new(vec![String::new(); 2]);
        let mut l: Lines<u32> = Lines::new(Box::new(chip.attach().unwrap()), Vec::new());
        assert!(matches!(
            l.handle(req(RequestType::GetLineNames, 0, 0)),
            Err(Error::NoNames)
        ));
    }

    #[test]
    fn unused_line_has_direction_none() {
        let (_c, mut l) = setup(4);
        assert_eq!(
            ok(&mut l, RequestType::GetDirection, 3, 0),
            Direction::None as u8
        );
    }

    #[test]
    fn set_direction_in_claims_the_host_line_as_input() {
        let (c, mut l) = setup(4);
        ok(&mut l, RequestType::SetDirection, 1, Direction::In as u32);
        assert_eq!(
            ok(&mut l, RequestType::GetDirection, 1, 0),
            Direction::In as u8
        );
        assert!(chip_get(&c, 1).contains("dir=in"));
    }

    #[test]
    fn value_set_before_output_is_latched_and_applied_on_out() {
        let (c, mut l) = setup(4);
        ok(&mut l, RequestType::SetValue, 2, 1);
        assert!(chip_get(&c, 2).contains("dir=none"));

        ok(&mut l, RequestType::SetDirection, 2, Direction::Out as u32);

        assert!(chip_get(&c, 2).contains("dir=out value=1"));
        assert_eq!(ok(&mut l, RequestType::GetValue, 2, 0), 1);
    }

    #[test]
    fn set_value_on_an_output_drives_the_host_line() {
        let (c, mut l) = setup(4);
        ok(&mut l, RequestType::SetDirection, 0, Direction::Out as u32);
        ok(&mut l, RequestType::SetValue, 0, 1);
        assert!(chip_get(&c, 0).contains("value=1"));
        ok(&mut l, RequestType::SetValue, 0, 0);
        assert!(chip_get(&c, 0).contains("value=0"));
    }

    #[test]
    fn input_value_is_the_host_level() {
        let (c, mut l) = setup(4);
        ok(&mut l, RequestType::SetDirection, 3, Direction::In as u32);
        c.drive(3, true).unwrap();
        assert_eq!(ok(&mut l, RequestType::GetValue, 3, 0), 1);
    }

    #[test]
    fn get_value_of_an_unused_line_is_an_error() {
        let (_c, mut l) = setup(4);
        assert!(matches!(
            l.handle(req(RequestType::GetValue, 0, 0)),
            Err(Error::NotInUse(0))
        ));
    }

    #[test]
    fn direction_none_releases_the_line_and_forgets_its_latched_value() {
        let (c, mut l) = setup(4);
        ok(&mut l, RequestType::SetValue, 1, 1);
        ok(&mut l, RequestType::SetDirection, 1, Direction::Out as u32);

        ok(&mut l, RequestType::SetDirection, 1, Direction::None as u32);
        assert!(chip_get(&c, 1).contains("dir=none"));
        ok(&mut l, RequestType::SetDirection, 1, Direction::Out as u32);

        assert!(chip_get(&c, 1).contains("dir=out value=0"));
    }

    #[test]
    fn line_number_past_the_chip_is_an_error_for_every_type() {
        let (_c, mut l) = setup(4);
        for kind in 1..=6u16 {
            let r = l.handle(Request {
                kind,
                line: 4,
                value: 0,
            });
            assert!(
                matches!(r, Err(Error::NoSuchLine { line: 4, ngpio: 4 })),
                "type {kind}"
            );
        }
    }

    #[test]
    fn unknown_type_and_bad_values_are_errors() {
        let (_c, mut l) = setup(4);
        assert!(matches!(
            l.handle(Request {
                kind: 9,
                line: 0,
                value: 0
            }),
            Err(Error::UnknownType(9))
        ));
        assert!(matches!(
            l.handle(req(RequestType::SetDirection, 0, 3)),
            Err(Error::BadDirection(3))
        ));
        assert!(matches!(
            l.handle(req(RequestType::SetValue, 0, 2)),
            Err(Error::BadValue(2))
        ));
        assert!(matches!(
            l.handle(req(RequestType::SetIrqType, 0, 5)),
            Err(Error::BadIrqType(5))
        ));
    }

    #[test]
    fn irq_type_without_the_feature_is_an_error() {
        let (_c, mut l) = setup(4);
        l.set_irq_negotiated(false);
        assert!(matches!(
            l.handle(req(RequestType::SetIrqType, 0, 1)),
            Err(Error::IrqNotNegotiated)
        ));
    }

    #[test]
    fn irq_on_an_output_is_an_error_and_output_with_irq_too() {
        let (_c, mut l) = setup(4);
        ok(&mut l, RequestType::SetDirection, 0, Direction::Out as u32);
        assert!(matches!(
            l.handle(req(RequestType::SetIrqType, 0, 1)),
            Err(Error::IrqOnOutput(0))
        ));
        irq(&mut l, 1, IrqType::EdgeRising);
        assert!(matches!(
            l.handle(req(RequestType::SetDirection, 1, Direction::Out as u32)),
            Err(Error::OutputWithIrq(1))
        ));
    }

    #[test]
    fn irq_on_an_unused_line_claims_it_as_input_with_edge_detection() {
        let (c, mut l) = setup(4);
        irq(&mut l, 2, IrqType::LevelLow);
        assert!(chip_get(&c, 2).contains("dir=in"));
        assert!(chip_get(&c, 2).contains("edge=falling"));
        assert_eq!(STATUS_OK, 0);
    }

    // --- interrupts, rule by rule ---

    #[test]
    fn edge_while_unmasked_fires_the_pending_buffer() {
        let (c, mut l) = setup(4);
        irq(&mut l, 1, IrqType::EdgeRising);
        assert_eq!(l.unmask(1, || 7), None);

        c.drive(1, true).unwrap();
        l.collect(1).unwrap();

        assert_eq!(l.take_done(), vec![(7, IrqStatus::Valid)]);
    }

    #[test]
    fn edge_of_the_other_direction_does_not_fire() {
        let (c, mut l) = setup(4);
        irq(&mut l, 1, IrqType::EdgeFalling);
        c.drive(1, true).unwrap();
        assert_eq!(l.unmask(1, || 7), None);

        c.drive(1, true).unwrap();
        l.collect(1).unwrap();
        assert!(l.take_done().is_empty());
        c.drive(1, false).unwrap();
        l.collect(1).unwrap();
        assert_eq!(l.take_done(), vec![(7, IrqStatus::Valid)]);
    }

    #[test]
    fn both_edges_fire_on_either() {
        let (c, mut l) = setup(4);
        irq(&mut l, 0, IrqType::EdgeBoth);
        l.unmask(0, || 1);
        c.drive(0, true).unwrap();
        l.collect(0).unwrap();
        l.unmask(0, || 2);
        c.drive(0, false).unwrap();
        l.collect(0).unwrap();
        assert_eq!(
            l.take_done(),
            vec![(1, IrqStatus::Valid), (2, IrqStatus::Valid)]
        );
    }

    #[test]
    fn edges_while_masked_latch_one_flag_not_a_count() {
        let (c, mut l) = setup(4);
        irq(&mut l, 2, IrqType::EdgeRising);
        for _ in 0..3 {
            c.drive(2, true).unwrap();
            c.drive(2, false).unwrap();
            l.collect(2).unwrap();
        }

        let first = l.unmask(2, || 1);
        let second = l.unmask(2, || 2);

        assert_eq!(first, Some(IrqStatus::Valid), "latched edge not delivered");
        assert_eq!(second, None, "three edges were counted");
    }

    #[test]
    fn edges_not_yet_collected_when_the_buffer_arrives_count_as_latched() {
        let (c, mut l) = setup(4);
        irq(&mut l, 2, IrqType::EdgeRising);
        c.drive(2, true).unwrap();

        assert_eq!(l.unmask(2, || 1), Some(IrqStatus::Valid));
    }

    #[test]
    fn edges_before_the_interrupt_was_enabled_do_not_latch() {
        let (c, mut l) = setup(4);
        irq(&mut l, 2, IrqType::EdgeRising);
        c.drive(2, true).unwrap();
        irq(&mut l, 2, IrqType::None);
        c.drive(2, false).unwrap();

        irq(&mut l, 2, IrqType::EdgeRising);

        assert_eq!(l.unmask(2, || 1), None);
    }

    #[test]
    fn level_active_when_unmasked_fires_at_once_and_again_after_requeue() {
        let (c, mut l) = setup(4);
        irq(&mut l, 3, IrqType::LevelHigh);
        c.drive(3, true).unwrap();

        assert_eq!(l.unmask(3, || 1), Some(IrqStatus::Valid));
        assert_eq!(
            l.unmask(3, || 2),
            Some(IrqStatus::Valid),
            "still-active level did not re-fire"
        );
    }

    #[test]
    fn level_inactive_fires_on_the_edge_into_the_active_level() {
        let (c, mut l) = setup(4);
        irq(&mut l, 3, IrqType::LevelLow);
        c.drive(3, true).unwrap();
        assert_eq!(l.unmask(3, || 1), None);

        c.drive(3, false).unwrap();
        l.collect(3).unwrap();

        assert_eq!(l.take_done(), vec![(1, IrqStatus::Valid)]);
    }

    #[test]
    fn level_is_never_latched_while_masked() {
        let (c, mut l) = setup(4);
        irq(&mut l, 3, IrqType::LevelHigh);
        c.drive(3, true).unwrap();
        c.drive(3, false).unwrap();
        l.collect(3).unwrap();

        assert_eq!(
            l.unmask(3, || 1),
            None,
            "a level pulse while masked was latched"
        );
    }

    #[test]
    fn irq_type_none_returns_the_pending_buffer_invalid_and_drops_the_latch() {
        let (c, mut l) = setup(4);
        irq(&mut l, 1, IrqType::EdgeRising);
        l.unmask(1, || 5);
        irq(&mut l, 1, IrqType::None);
        assert_eq!(l.take_done(), vec![(5, IrqStatus::Invalid)]);

        irq(&mut l, 0, IrqType::EdgeRising);
        c.drive(0, true).unwrap();
        l.collect(0).unwrap();
        irq(&mut l, 0, IrqType::None);
        irq(&mut l, 0, IrqType::EdgeRising);
        assert_eq!(l.unmask(0, || 6), None, "latch survived NONE");
    }

    #[test]
    fn type_change_goes_through_none() {
        let (c, mut l) = setup(4);
        irq(&mut l, 1, IrqType::EdgeRising);
        l.unmask(1, || 5);

        irq(&mut l, 1, IrqType::EdgeFalling);

        assert_eq!(l.take_done(), vec![(5, IrqStatus::Invalid)]);
        assert!(chip_get(&c, 1).contains("edge=falling"));
        assert_eq!(l.line(1).unwrap().irq, IrqType::EdgeFalling);
    }

    #[test]
    fn same_type_again_keeps_the_pending_buffer() {
        let (_c, mut l) = setup(4);
        irq(&mut l, 1, IrqType::EdgeBoth);
        l.unmask(1, || 5);
        irq(&mut l, 1, IrqType::EdgeBoth);
        assert!(l.take_done().is_empty());
        assert_eq!(l.line(1).unwrap().pending, Some(5));
    }

    #[test]
    fn buffer_for_a_disabled_interrupt_is_returned_invalid() {
        let (_c, mut l) = setup(4);
        assert_eq!(l.unmask(1, || 5), Some(IrqStatus::Invalid));
        ok(&mut l, RequestType::SetDirection, 1, Direction::In as u32);
        assert_eq!(l.unmask(1, || 5), Some(IrqStatus::Invalid));
    }

    #[test]
    fn second_buffer_for_a_line_is_invalid_and_the_first_stays() {
        let (c, mut l) = setup(4);
        irq(&mut l, 1, IrqType::EdgeRising);
        assert_eq!(l.unmask(1, || 5), None);

        assert_eq!(l.unmask(1, || 6), Some(IrqStatus::Invalid));

        c.drive(1, true).unwrap();
        l.collect(1).unwrap();
        assert_eq!(l.take_done(), vec![(5, IrqStatus::Valid)]);
    }

    #[test]
    fn buffer_for_a_line_past_the_chip_is_invalid() {
        let (_c, mut l) = setup(4);
        assert_eq!(l.unmask(4, || 1), Some(IrqStatus::Invalid));
        assert_eq!(l.unmask(u16::MAX, || 1), Some(IrqStatus::Invalid));
    }

    #[test]
    fn direction_none_returns_the_pending_buffer_invalid() {
        let (c, mut l) = setup(4);
        irq(&mut l, 2, IrqType::LevelHigh);
        l.unmask(2, || 9);

        ok(&mut l, RequestType::SetDirection, 2, Direction::None as u32);

        assert_eq!(l.take_done(), vec![(9, IrqStatus::Invalid)]);
        assert!(
            chip_get(&c, 2).contains("dir=none edge=none") || chip_get(&c, 2).contains("edge=none")
        );
        assert!(l.line(2).is_none());
    }

    #[test]
    fn saved_lines_load_into_another_chip_with_their_pending_buffers() {
        let (c, mut l) = setup(4);
        ok(&mut l, RequestType::SetValue, 0, 1);
        ok(&mut l, RequestType::SetDirection, 0, Direction::Out as u32);
        irq(&mut l, 1, IrqType::EdgeRising);
        l.unmask(1, || 11);
        irq(&mut l, 2, IrqType::EdgeFalling);
        c.drive(2, true).unwrap();
        c.drive(2, false).unwrap();
        l.collect(2).unwrap();
        let saved = l.save(|h| *h);
        let (c2, mut l2) = setup(4);

        l2.load(saved).unwrap();

        assert!(chip_get(&c2, 0).contains("dir=out value=1"));
        assert!(chip_get(&c2, 1).contains("edge=rising"));
        c2.drive(1, true).unwrap();
        l2.collect(1).unwrap();
        assert_eq!(l2.take_done(), vec![(11, IrqStatus::Valid)]);
        assert_eq!(
            l2.unmask(2, || 12),
            Some(IrqStatus::Valid),
            "latch not migrated"
        );
    }

    #[test]
    fn saved_line_past_the_destination_chip_is_refused() {
        let (_c, mut l) = setup(8);
        irq(&mut l, 7, IrqType::EdgeRising);
        let saved = l.save(|h| *h);
        let (_c2, mut l2) = setup(4);
        assert!(l2.load(saved).is_err());
    }

    #[test]
    fn recheck_fires_an_active_level_after_load() {
        let (c, mut l) = setup(4);
        irq(&mut l, 1, IrqType::LevelHigh);
        l.unmask(1, || 3);
        c.drive(1, true).unwrap();
        l.recheck(1);
        assert_eq!(l.take_done(), vec![(3, IrqStatus::Valid)]);
    }
}
