// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A minimal guest vsock driver over the test front end, shared by the
//! integration tests and the benchmark.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::time::{Duration, Instant};

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::vsock::VsockGuest;
use vhost_device_test_frontend::{Options, Session, VhostUserProtocolFeatures};

pub const CID: u64 = 3;
pub const WAIT: Duration = Duration::from_secs(10);
pub const RX: usize = 0;
pub const TX: usize = 1;
pub const EVT: usize = 2;
pub const REQUEST: u16 = 1;
pub const RESPONSE: u16 = 2;
pub const RST: u16 = 3;
pub const SHUTDOWN: u16 = 4;
pub const RW: u16 = 5;
pub const CREDIT_UPDATE: u16 = 6;

pub use vhost_device_test_frontend::vsock::Hdr;

/// The front-end options every test guest uses.
pub fn options() -> Options {
    Options {
        ram_size: 64 << 20,
        queue_size: 256,
        ..Options::default()
    }
}

/// The guest: the test front end's vsock driver, with panicking helpers for tests.
pub struct Guest(VsockGuest);

impl std::ops::Deref for Guest {
    type Target = VsockGuest;
    fn deref(&self) -> &VsockGuest {
        &self.0
    }
}

impl std::ops::DerefMut for Guest {
    fn deref_mut(&mut self) -> &mut VsockGuest {
        &mut self.0
    }
}

impl Guest {
    pub fn new(d: &DaemonProcess) -> Self {
        Self::with_features(d, u64::MAX)
    }

    /// A guest whose driver accepts only `features`.
    pub fn with_features(d: &DaemonProcess, features: u64) -> Self {
        Self::at(&d.socket, CID, features)
    }

    /// A guest with CID `cid` on the vhost-user socket `socket`.
    pub fn at(socket: &std::path::Path, cid: u64, features: u64) -> Self {
        Self::at_with_queues(socket, cid, features, None)
    }

    /// Like [`Self::at`], setting up only `queues` queues (QEMU sets up rx and
    /// tx only and keeps the event queue).
    pub fn at_with_queues(
        socket: &std::path::Path,
        cid: u64,
        features: u64,
        queues: Option<usize>,
    ) -> Self {
        let opts = Options {
            accept_features: features,
            num_queues: queues,
            ..options()
        };
        let s = Session::start(socket, &opts).unwrap();
        Guest(VsockGuest::new(s, cid).unwrap())
    }

    /// A guest that posts only `count` rx buffers (0: none).
    pub fn with_rx_buffers(d: &DaemonProcess, count: usize) -> Self {
        let s = Session::start(&d.socket, &options()).unwrap();
        Guest(VsockGuest::with_rx_buffers(s, CID, count).unwrap())
    }

    /// A guest whose front end also negotiates `RESET_DEVICE`.
    pub fn with_reset_device(d: &DaemonProcess) -> Self {
        let mut opts = options();
        opts.accept_protocol |= VhostUserProtocolFeatures::RESET_DEVICE;
        let s = Session::start(&d.socket, &opts).unwrap();
        Guest(VsockGuest::new(s, CID).unwrap())
    }

    /// The same front end restarting the device after its driver went away
    /// (a guest reboot): a fresh driver on new rings.
    pub fn reboot(self) -> Self {
        let Guest(VsockGuest { mut s, cid, .. }) = self;
        s.reboot_queues().unwrap();
        Guest(VsockGuest::new(s, cid).unwrap())
    }

    /// Send a packet on tx (payload split over two descriptors when non-empty).
    pub fn send(&mut self, h: Hdr, payload: &[u8]) {
        self.0.send(h, payload).expect("tx completes");
    }

    /// Collect whatever arrived on rx, reposting buffers.
    pub fn poll_rx(&mut self, timeout: Duration) -> bool {
        self.0.poll_rx(timeout).unwrap()
    }

    /// Wait for the next packet from the device.
    pub fn recv(&mut self) -> (Hdr, Vec<u8>) {
        self.0
            .recv(Instant::now() + WAIT)
            .expect("no packet from the device")
    }

    /// Wait for a packet with `op`, skipping credit updates.
    pub fn expect(&mut self, op: u16) -> (Hdr, Vec<u8>) {
        loop {
            let (h, p) = self.recv();
            if h.op == CREDIT_UPDATE && op != CREDIT_UPDATE {
                continue;
            }
            assert_eq!(h.op, op, "unexpected packet {h:?}");
            return (h, p);
        }
    }
}

pub trait WithFlags {
    fn with_flags(self, f: u32) -> Self;
}
impl WithFlags for Hdr {
    fn with_flags(mut self, f: u32) -> Self {
        self.flags = f;
        self
    }
}

pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The byte stream of [`pattern`], produced piece by piece.
pub struct PatternGen(u64);

impl PatternGen {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next `buf.len()` bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

/// [`checksum`], computed piece by piece.
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Add bytes.
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
