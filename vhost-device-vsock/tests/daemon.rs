// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The real `vhost-device-vsock` binary, driven over its socket by the test
//! front end playing the guest's vsock driver, with host programs on Unix sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-vsock");
const CID: u64 = 3;
const WAIT: Duration = Duration::from_secs(10);
const RX: usize = 0;
const TX: usize = 1;
const EVT: usize = 2;
const RX_BUF: u32 = 64 * 1024 + 44;
const GUEST_BUF: u32 = 256 * 1024;

const REQUEST: u16 = 1;
const RESPONSE: u16 = 2;
const RST: u16 = 3;
const SHUTDOWN: u16 = 4;
const RW: u16 = 5;
const CREDIT_UPDATE: u16 = 6;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Hdr {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    ty: u16,
    op: u16,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Hdr {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(44);
        b.extend_from_slice(&self.src_cid.to_le_bytes());
        b.extend_from_slice(&self.dst_cid.to_le_bytes());
        b.extend_from_slice(&self.src_port.to_le_bytes());
        b.extend_from_slice(&self.dst_port.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.ty.to_le_bytes());
        b.extend_from_slice(&self.op.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.buf_alloc.to_le_bytes());
        b.extend_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    fn parse(b: &[u8]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
        Hdr {
            src_cid: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            dst_cid: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            ty: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

/// The guest side: a minimal vsock driver over the test front end.
struct Guest {
    s: Session,
    rx_heads: std::collections::HashMap<u16, u64>,
    tx: u64,
    inbox: VecDeque<(Hdr, Vec<u8>)>,
}

impl Guest {
    fn new(d: &DaemonProcess) -> Self {
        let opts = Options {
            ram_size: 64 << 20,
            queue_size: 256,
            ..Options::default()
        };
        let s = Session::start(&d.socket, &opts).unwrap();
        let rx_bufs: Vec<u64> = (0..64)
            .map(|_| s.ram().alloc(u64::from(RX_BUF), 4096).unwrap())
            .collect();
        let tx = s.ram().alloc(u64::from(RX_BUF), 4096).unwrap();
        let mut g = Guest {
            s,
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

    fn post_rx(&mut self, buf: u64) {
        let head = self
            .s
            .queue(RX)
            .unwrap()
            .add(&Chain::new().writable(buf, RX_BUF))
            .unwrap();
        self.rx_heads.insert(head, buf);
    }

    fn hdr(&self, src_port: u32, dst_port: u32, op: u16) -> Hdr {
        Hdr {
            src_cid: CID,
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
    fn send(&mut self, h: Hdr, payload: &[u8]) {
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
    fn poll_rx(&mut self, timeout: Duration) -> bool {
        let used = match self.s.queue(RX).unwrap().wait_used(timeout) {
            Ok(u) => u,
            Err(_) => return false,
        };
        let mut done = Vec::new();
        for u in used {
            let buf = self.rx_heads.remove(&u.head).unwrap();
            let data = self.s.ram().read(buf, u.len as usize).unwrap();
            let h = Hdr::parse(&data[..44]);
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
    fn recv(&mut self) -> (Hdr, Vec<u8>) {
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
    fn expect(&mut self, op: u16) -> (Hdr, Vec<u8>) {
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

fn daemon(dir: &Path, extra: &[&str]) -> (DaemonProcess, PathBuf) {
    let uds = dir.join("v.sock");
    let mut args = vec!["--guest-cid", "3", "--uds-path", uds.to_str().unwrap()];
    args.extend_from_slice(extra);
    (DaemonProcess::start(Path::new(BIN), &args).unwrap(), uds)
}

fn host_listener(uds: &Path, port: u32) -> UnixListener {
    UnixListener::bind(format!("{}_{port}", uds.display())).unwrap()
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

/// Guest connects to host port 1234; returns the accepted host stream.
fn guest_connect(
    g: &mut Guest,
    uds: &Path,
    listener: &UnixListener,
    guest_port: u32,
) -> UnixStream {
    let _ = uds;
    g.send(g.hdr(guest_port, 1234, REQUEST), &[]);
    let (h, _) = g.expect(RESPONSE);
    assert_eq!((h.src_port, h.dst_port, h.dst_cid), (1234, guest_port, CID));
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

#[test]
fn transport_reset_event_is_sent_to_a_new_driver() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _uds) = daemon(dir.path(), &[]);
    let mut g = Guest::new(&d);
    let ev = g.s.ram().alloc(8, 8).unwrap();
    let vq = g.s.queue(EVT).unwrap();
    vq.add(&Chain::new().writable(ev, 8)).unwrap();
    vq.kick().unwrap();
    let used = vq.wait_used(WAIT).unwrap();
    assert_eq!(used[0].len, 4);
    assert_eq!(g.s.ram().read(ev, 4).unwrap(), vec![0, 0, 0, 0]);
}

#[test]
fn guest_connection_reaches_the_host_listener_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &[]);
    let listener = host_listener(&uds, 1234);
    let mut g = Guest::new(&d);
    let mut host = guest_connect(&mut g, &uds, &listener, 5000);

    g.send(g.hdr(5000, 1234, RW), b"hello host");
    let mut buf = [0u8; 10];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello host");

    host.write_all(b"hello guest").unwrap();
    let (h, payload) = g.expect(RW);
    assert_eq!(payload, b"hello guest");
    assert_eq!(h.len, 11);

    g.send(g.hdr(5000, 1234, SHUTDOWN).with_flags(3), &[]);
    g.expect(RST);
    assert_eq!(host.read(&mut buf).unwrap(), 0, "host sees end of stream");
}

trait WithFlags {
    fn with_flags(self, f: u32) -> Self;
}
impl WithFlags for Hdr {
    fn with_flags(mut self, f: u32) -> Self {
        self.flags = f;
        self
    }
}

#[test]
fn host_program_connects_to_a_guest_port() {
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &[]);
    let mut g = Guest::new(&d);
    let mut host = UnixStream::connect(&uds).unwrap();
    host.set_read_timeout(Some(WAIT)).unwrap();
    host.write_all(b"CONNECT 7000\nearly data").unwrap();

    let (req, _) = g.expect(REQUEST);
    assert_eq!((req.dst_port, req.dst_cid, req.src_cid), (7000, CID, 2));
    let mut resp = g.hdr(7000, req.src_port, RESPONSE);
    resp.dst_port = req.src_port;
    g.send(resp, &[]);
    let mut line = String::new();
    BufReader::new(&host).read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", req.src_port));

    let (h, payload) = g.expect(RW);
    assert_eq!(payload, b"early data");
    assert_eq!(h.src_port, req.src_port);
    g.send(g.hdr(7000, req.src_port, RW), b"from guest");
    let mut buf = [0u8; 10];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from guest");
}

#[test]
fn connecting_to_a_port_nobody_listens_on_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _uds) = daemon(dir.path(), &[]);
    let mut g = Guest::new(&d);

    g.send(g.hdr(5001, 9999, REQUEST), &[]);

    let (h, _) = g.expect(RST);
    assert_eq!((h.src_port, h.dst_port), (9999, 5001));
}

#[test]
fn malformed_packets_are_reset_and_the_device_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &[]);
    let listener = host_listener(&uds, 1234);
    let mut g = Guest::new(&d);
    let cases: Vec<(&str, Hdr)> = vec![
        (
            "wrong source CID",
            Hdr {
                src_cid: 77,
                ..g.hdr(1, 1234, REQUEST)
            },
        ),
        (
            "not for the host",
            Hdr {
                dst_cid: 9,
                ..g.hdr(2, 1234, REQUEST)
            },
        ),
        ("unknown op", g.hdr(3, 1234, 42)),
        (
            "seqpacket type",
            Hdr {
                ty: 2,
                ..g.hdr(4, 1234, REQUEST)
            },
        ),
        ("data for no connection", g.hdr(5, 1234, RW)),
    ];
    for (what, h) in cases {
        let payload: &[u8] = if h.op == RW { b"x" } else { &[] };
        g.send(h, payload);
        let (r, _) = g.expect(RST);
        assert_eq!(r.dst_port, h.src_port, "{what}");
    }
    // A header that lies about its length, and a chain shorter than a header.
    let mut lying = g.hdr(6, 1234, RW).bytes();
    lying[24..28].copy_from_slice(&100_000u32.to_le_bytes());
    g.s.ram().write(g.tx, &lying).unwrap();
    let vq = g.s.queue(TX).unwrap();
    vq.add(&Chain::new().readable(g.tx, 44)).unwrap();
    vq.add(&Chain::new().readable(g.tx, 10)).unwrap();
    vq.kick().unwrap();
    let mut n = 0;
    while n < 2 {
        n += vq.wait_used(WAIT).unwrap().len();
    }
    let (r, _) = g.expect(RST);
    assert_eq!(r.dst_port, 6, "the lying header is refused");

    let mut host = guest_connect(&mut g, &uds, &listener, 7);
    g.send(g.hdr(7, 1234, RW), b"still works");
    let mut buf = [0u8; 11];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still works");
}

#[test]
fn guest_exceeding_its_credit_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &["--buffer-size", "65536"]);
    let listener = host_listener(&uds, 1234);
    let mut g = Guest::new(&d);
    let _host = guest_connect(&mut g, &uds, &listener, 8);
    // The host never reads: 4 MiB overruns any socket buffer plus 64 KiB of credit.
    let chunk = vec![1u8; 60 * 1024];
    let mut reset = false;
    for _ in 0..80 {
        g.send(g.hdr(8, 1234, RW), &chunk);
        g.poll_rx(Duration::from_millis(1));
        if g.inbox.iter().any(|(h, _)| h.op == RST) {
            reset = true;
            break;
        }
    }
    assert!(reset, "device kept buffering past the credit it gave");
}

#[test]
fn large_checksummed_transfers_flow_both_ways_within_credit() {
    const SIZE: usize = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &[]);
    let listener = host_listener(&uds, 1234);
    let mut g = Guest::new(&d);
    let host = guest_connect(&mut g, &uds, &listener, 9);

    // Guest to host, honouring the device's credit.
    let data = pattern(SIZE, 1);
    let expected = checksum(&data);
    let reader = {
        let mut h = host.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = vec![0u8; SIZE];
            h.read_exact(&mut got).unwrap();
            checksum(&got)
        })
    };
    let (mut peer_alloc, mut peer_fwd, mut sent) = (256 * 1024u32, 0u32, 0usize);
    while sent < SIZE {
        let credit = peer_alloc - (sent as u32).wrapping_sub(peer_fwd);
        if credit == 0 {
            let (h, _) = g.expect(CREDIT_UPDATE);
            peer_alloc = h.buf_alloc;
            peer_fwd = h.fwd_cnt;
            continue;
        }
        let n = (credit as usize).min(64 * 1024).min(SIZE - sent);
        g.send(g.hdr(9, 1234, RW), &data[sent..sent + n]);
        sent += n;
        while let Some((h, _)) = g.inbox.pop_front() {
            peer_alloc = h.buf_alloc;
            peer_fwd = h.fwd_cnt;
        }
    }
    assert_eq!(
        reader.join().unwrap(),
        expected,
        "guest to host data differs"
    );

    // Host to guest; the guest reports what it consumed.
    let data = pattern(SIZE, 2);
    let expected = checksum(&data);
    let writer = {
        let mut h = host.try_clone().unwrap();
        std::thread::spawn(move || h.write_all(&data).unwrap())
    };
    let mut got = Vec::with_capacity(SIZE);
    let mut fwd = 0u32;
    while got.len() < SIZE {
        let (h, payload) = g.recv();
        if h.op != RW {
            continue;
        }
        got.extend_from_slice(&payload);
        fwd = fwd.wrapping_add(payload.len() as u32);
        if got.len() % (64 * 1024) < payload.len() {
            let mut cu = g.hdr(9, 1234, CREDIT_UPDATE);
            cu.fwd_cnt = fwd;
            g.send(cu, &[]);
        }
    }
    writer.join().unwrap();
    assert_eq!(checksum(&got), expected, "host to guest data differs");
}

#[test]
fn host_half_close_reaches_the_guest_as_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &[]);
    let listener = host_listener(&uds, 1234);
    let mut g = Guest::new(&d);
    let host = guest_connect(&mut g, &uds, &listener, 10);

    host.shutdown(std::net::Shutdown::Write).unwrap();
    let (h, _) = g.expect(SHUTDOWN);
    assert_eq!(h.flags & 2, 2, "SEND flag");

    // The guest can still send to the host.
    g.send(g.hdr(10, 1234, RW), b"after");
    let mut buf = [0u8; 5];
    (&host).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after");
}

#[test]
fn many_concurrent_connections_each_carry_their_own_data() {
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &[]);
    let listener = host_listener(&uds, 1234);
    let mut g = Guest::new(&d);
    let mut hosts = Vec::new();
    for port in 100..164 {
        hosts.push(guest_connect(&mut g, &uds, &listener, port));
    }
    for (i, port) in (100..164).enumerate() {
        g.send(g.hdr(port, 1234, RW), format!("conn {i}").as_bytes());
    }
    for (i, h) in hosts.iter_mut().enumerate() {
        let want = format!("conn {i}");
        let mut buf = vec![0u8; want.len()];
        h.read_exact(&mut buf).unwrap();
        assert_eq!(buf, want.as_bytes());
    }
}

#[test]
fn idle_daemon_with_open_connections_uses_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &[]);
    let listener = host_listener(&uds, 1234);
    let mut g = Guest::new(&d);
    let _hosts: Vec<UnixStream> = (200..210)
        .map(|p| guest_connect(&mut g, &uds, &listener, p))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let before = d.cpu_ticks().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let spent = d.cpu_ticks().unwrap() - before;
    assert!(spent <= 2, "idle daemon used {spent} ticks");
}

#[test]
fn reconnecting_front_end_gets_a_fresh_device() {
    let dir = tempfile::tempdir().unwrap();
    let (d, uds) = daemon(dir.path(), &[]);
    let listener = host_listener(&uds, 1234);
    {
        let mut g = Guest::new(&d);
        let _h = guest_connect(&mut g, &uds, &listener, 11);
    }
    let mut g = Guest::new(&d);
    // The same ports connect again: the old connection is gone.
    let mut host = guest_connect(&mut g, &uds, &listener, 11);
    g.send(g.hdr(11, 1234, RW), b"again");
    let mut buf = [0u8; 5];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again");
}

#[test]
fn reserved_guest_cid_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--socket-path", "s.sock", "--guest-cid", "2", "--uds-path"])
        .arg(dir.path().join("v"));
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("exits");
    assert!(!status.success());
    assert!(d.stderr_text().contains("reserved"), "{}", d.stderr_text());
}
