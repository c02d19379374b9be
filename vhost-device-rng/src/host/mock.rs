// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Simulated entropy sources.
//!
//! [`SimulatedSource`] is a deterministic generator (xorshift64*), selectable
//! with `--simulate[=SEED]` for demos and reproducible runs; it is not entropy.
//! [`ScriptedSource`] plays back a list of results, for unit tests of the
//! device's error paths.

use std::collections::VecDeque;
use std::io;
use std::os::fd::BorrowedFd;

use super::EntropySource;

/// Deterministic pseudo-random bytes.
#[derive(Debug, Clone)]
pub struct SimulatedSource {
    state: u64,
}

impl SimulatedSource {
    /// A generator started from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl EntropySource for SimulatedSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(buf.len())
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn name(&self) -> String {
        "simulated source".into()
    }
}

/// One scripted result of [`ScriptedSource::read`].
#[derive(Debug)]
pub enum Step {
    /// Fill up to this many bytes with the byte value.
    Bytes(usize, u8),
    /// Return this error.
    Fail(io::ErrorKind),
    /// End of source.
    End,
}

/// Plays back scripted reads; after the script, ends.
#[derive(Debug, Default)]
pub struct ScriptedSource {
    steps: VecDeque<Step>,
}

impl ScriptedSource {
    /// A source that plays back `steps` in order.
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
        }
    }
}

impl EntropySource for ScriptedSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.steps.pop_front() {
            Some(Step::Bytes(n, v)) => {
                let n = n.min(buf.len());
                buf[..n].fill(v);
                Ok(n)
            }
            Some(Step::Fail(kind)) => Err(io::Error::from(kind)),
            Some(Step::End) | None => Ok(0),
        }
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn name(&self) -> String {
        "scripted source".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_source_is_deterministic_per_seed() {
        let (mut a, mut b, mut c) = (
            SimulatedSource::new(5),
            SimulatedSource::new(5),
            SimulatedSource::new(6),
        );
        let (mut x, mut y, mut z) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        a.read(&mut x).unwrap();
        b.read(&mut y).unwrap();
        c.read(&mut z).unwrap();
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn simulated_source_is_not_constant() {
        let mut buf = [0u8; 4096];
        SimulatedSource::new(1).read(&mut buf).unwrap();
        let distinct = buf.iter().collect::<std::collections::HashSet<_>>().len();
        assert!(distinct > 200, "only {distinct} distinct byte values");
    }
}
