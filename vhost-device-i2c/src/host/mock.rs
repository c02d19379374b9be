// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A scripted adapter that records every call, for unit tests of the
//! request, grouping and SMBus code.
//!
//! Without a script, `I2C_RDWR` completes every message and fills read
//! buffers with `0xa0 + message index`; an SMBus read returns `0x5a`, `0x1234`
//! or `0, 1, 2, …`. [`Step`]s override the next calls in order.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use super::{I2cBus, Msg, SmbusOp, SmbusReply};

/// A call the adapter received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `I2C_RDWR` with these messages (as sent: read buffers zeroed).
    Rdwr(Vec<Msg>),
    /// `I2C_SLAVE` + `I2C_SMBUS`.
    Smbus(u8, SmbusOp),
    /// `I2C_SLAVE` at startup.
    Claim(u8),
}

/// What the next transfer call does.
#[derive(Debug)]
pub enum Step {
    /// `I2C_RDWR` completes only the first N messages.
    Complete(usize),
    /// The call fails with this errno.
    Fail(i32),
}

/// The shared log and script of a [`MockBus`].
#[derive(Debug, Default)]
pub struct Recorder {
    /// Calls so far.
    pub calls: Vec<Call>,
    /// Steps for the next transfer calls.
    pub script: VecDeque<Step>,
}

/// A scripted adapter.
#[derive(Debug, Clone)]
pub struct MockBus {
    funcs: u32,
    /// Log and script, shared with the test.
    pub recorder: Arc<Mutex<Recorder>>,
}

impl MockBus {
    /// An adapter that reports `funcs` from `I2C_FUNCS`.
    pub fn new(funcs: u32) -> Self {
        Self {
            funcs,
            recorder: Arc::default(),
        }
    }

    /// Add a step to the script.
    pub fn then(self, step: Step) -> Self {
        vhost_device_common::lock(&self.recorder)
            .script
            .push_back(step);
        self
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        vhost_device_common::lock(&self.recorder).calls.clone()
    }

    fn step(&self) -> Option<Step> {
        vhost_device_common::lock(&self.recorder).script.pop_front()
    }
}

impl I2cBus for MockBus {
    fn name(&self) -> String {
        "mock adapter".into()
    }

    fn funcs(&mut self) -> io::Result<u32> {
        Ok(self.funcs)
    }

    fn rdwr(&mut self, msgs: &mut [Msg]) -> io::Result<usize> {
        vhost_device_common::lock(&self.recorder)
            .calls
            .push(Call::Rdwr(msgs.to_vec()));
        let done = match self.step() {
            Some(Step::Fail(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            Some(Step::Complete(n)) => n.min(msgs.len()),
            None => msgs.len(),
        };
        for (i, m) in msgs.iter_mut().enumerate().take(done) {
            if m.read {
                let fill = 0xa0u8.wrapping_add(u8::try_from(i).unwrap_or(0));
                m.buf.fill(fill);
            }
        }
        Ok(done)
    }

    fn smbus(&mut self, addr: u8, op: &SmbusOp) -> io::Result<SmbusReply> {
        vhost_device_common::lock(&self.recorder)
            .calls
            .push(Call::Smbus(addr, op.clone()));
        if let Some(Step::Fail(errno)) = self.step() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(match op {
            SmbusOp::ReceiveByte | SmbusOp::ReadByteData(_) => SmbusReply::Byte(0x5a),
            SmbusOp::ReadWordData(_) | SmbusOp::ProcessCall(..) => SmbusReply::Word(0x1234),
            SmbusOp::ReadI2cBlock(_, n) => SmbusReply::Block((0..*n).collect()),
            _ => SmbusReply::None,
        })
    }

    fn claim(&mut self, addr: u8) -> io::Result<()> {
        vhost_device_common::lock(&self.recorder)
            .calls
            .push(Call::Claim(addr));
        Ok(())
    }
}
