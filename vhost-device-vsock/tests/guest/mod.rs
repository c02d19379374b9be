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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session};

pub const CID: u64 = 3;
pub const WAIT: Duration = Duration::from_secs(10);
pub const RX: usize = 0;
pub const TX: usize = 1;
pub const EVT: usize = 2;
pub const RX_BUF: u32 = 64 * 1024 + 44;
pub const GUEST_BUF: u32 = 256 * 1024;

pub const REQUEST: u16 = 1;
pub const RESPONSE: u16 = 2;
pub const RST: u16 = 3;
pub const SHUTDOWN: u16 = 4;
pub const RW: u16 = 5;
pub const CREDIT_UPDATE: u16 = 6;

pub use vhost_device_test_frontend::vsock::Hdr;

/// The guest side: a minimal vsock driver over the test front end.
pub struct Guest {
    pub s: Session,
    /// This guest's CID.
    pub cid: u64,
    rx_heads: std::collections::HashMap<u16, u64>,
    pub tx: u64,
    pub inbox: VecDeque<(Hdr, Vec<u8>)>,
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
            ram_size: 64 << 20,
            queue_size: 256,
            accept_features: features,
            num_queues: queues,
            ..Options::default()
        };
        let s = Session::start(socket, &opts).unwrap();
        let rx_bufs: Vec<u64> = (0..64)
            .map(|_| s.ram().alloc(u64::from(RX_BUF), 4096).unwrap())
            .collect();
        let tx = s.ram().alloc(u64::from(RX_BUF), 4096).unwrap();
        let mut g = Guest {
            s,
            cid,
            rx_heads: Default::default(),
            tx,
            inbox: VecDeque::new(),
        };
        for b in rx_bufs {
            g.post_rx(b);
        }
        g.s.queue(RX).unwrap().kick().unwrap();
        g
    }

    pub fn post_rx(&mut self, buf: u64) {
        let head = self
            .s
            .queue(RX)
            .unwrap()
            .add(&Chain::new().writable(buf, RX_BUF))
            .unwrap();
        self.rx_heads.insert(head, buf);
    }

    pub fn hdr(&self, src_port: u32, dst_port: u32, op: u16) -> Hdr {
        Hdr {
            src_cid: self.cid,
            dst_cid: 2,
            src_port,
            dst_port,
            ty: 1,
            op,
            buf_alloc: GUEST_BUF,
            ..Hdr::default()
        }
    }

    /// Send a packet on tx (payload split over two descriptors when non-empty).
    pub fn send(&mut self, h: Hdr, payload: &[u8]) {
        let mut h = h;
        h.len = payload.len() as u32;
        let mut bytes = h.bytes();
        bytes.extend_from_slice(payload);
        self.s.ram().write(self.tx, &bytes).unwrap();
        let mut chain = Chain::new().readable(self.tx, 44);
        if !payload.is_empty() {
            let half = (payload.len() / 2) as u32;
            if half > 0 {
                chain = chain.readable(self.tx + 44, half);
            }
            chain = chain.readable(self.tx + 44 + u64::from(half), payload.len() as u32 - half);
        }
        let vq = self.s.queue(TX).unwrap();
        vq.add(&chain).unwrap();
        vq.kick().unwrap();
        vq.wait_used(WAIT).expect("tx completes");
    }

    /// Collect whatever arrived on rx, reposting buffers.
    pub fn poll_rx(&mut self, timeout: Duration) -> bool {
        let used = match self.s.queue(RX).unwrap().wait_used(timeout) {
            Ok(u) => u,
            Err(_) => return false,
        };
        let mut done = Vec::new();
        for u in used {
            let buf = self.rx_heads.remove(&u.head).unwrap();
            let data = self.s.ram().read(buf, u.len as usize).unwrap();
            let h = Hdr::parse(&data[..44]).unwrap();
            self.inbox.push_back((h, data[44..].to_vec()));
            done.push(buf);
        }
        // Repost only after every used head is accounted for: a reposted
        // buffer may take a descriptor index that a later used entry names.
        for buf in done {
            self.post_rx(buf);
        }
        self.s.queue(RX).unwrap().kick().unwrap();
        true
    }

    /// Wait for the next packet from the device.
    pub fn recv(&mut self) -> (Hdr, Vec<u8>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(p) = self.inbox.pop_front() {
                return p;
            }
            assert!(Instant::now() < deadline, "no packet from the device");
            self.poll_rx(Duration::from_millis(200));
        }
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
