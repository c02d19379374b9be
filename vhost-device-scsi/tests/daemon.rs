// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The real `vhost-device-scsi` binary, driven over its socket by the test front end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vhost_device_test_frontend::process::DaemonProcess;
use vhost_device_test_frontend::{Chain, Options, Session};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-device-scsi");
const WAIT: Duration = Duration::from_secs(10);
const DATA: u64 = 1 << 20;

/// A SCSI initiator on one request queue.
struct Initiator {
    req: u64,
    resp: u64,
    data: u64,
    queue: usize,
}

#[derive(Debug)]
struct Reply {
    used: u32,
    sense_len: u32,
    resid: u32,
    status: u8,
    response: u8,
    sense: Vec<u8>,
    data: Vec<u8>,
}

impl Reply {
    fn key_asc(&self) -> (u8, u8) {
        (self.sense[2], self.sense[12])
    }
}

fn lun_addr(lun: u16) -> [u8; 8] {
    [1, 0, 0x40 | (lun >> 8) as u8, lun as u8, 0, 0, 0, 0]
}

impl Initiator {
    fn new(s: &Session, queue: usize) -> Self {
        Self {
            req: s.ram().alloc(DATA + 4096, 4096).unwrap(),
            resp: s.ram().alloc(4096, 4096).unwrap(),
            data: s.ram().alloc(DATA, 4096).unwrap(),
            queue,
        }
    }

    /// Post a command without waiting; returns the head.
    fn post(&self, s: &mut Session, addr: [u8; 8], cdb: &[u8], out: &[u8], in_len: u32) -> u16 {
        let head = self.add(s, addr, cdb, out, in_len);
        s.queue(self.queue).unwrap().kick().unwrap();
        head
    }

    /// Make a command available without kicking; returns the head.
    fn add(&self, s: &mut Session, addr: [u8; 8], cdb: &[u8], out: &[u8], in_len: u32) -> u16 {
        let mut req = Vec::new();
        req.extend_from_slice(&addr);
        req.extend_from_slice(&7u64.to_le_bytes());
        req.extend_from_slice(&[0, 0, 0]);
        let mut c = [0u8; 32];
        c[..cdb.len()].copy_from_slice(cdb);
        req.extend_from_slice(&c);
        req.extend_from_slice(out);
        s.ram().write(self.req, &req).unwrap();
        s.ram().write(self.resp, &[0xee; 108]).unwrap();
        let mut chain = Chain::new()
            .readable(self.req, u32::try_from(req.len()).unwrap())
            .writable(self.resp, 108);
        if in_len > 0 {
            chain = chain.writable(self.data, in_len);
        }
        s.queue(self.queue).unwrap().add(&chain).unwrap()
    }

    fn collect(&self, s: &mut Session, used: u32, in_len: u32) -> Reply {
        let r = s.ram().read(self.resp, 108).unwrap();
        Reply {
            used,
            sense_len: u32::from_le_bytes(r[0..4].try_into().unwrap()),
            resid: u32::from_le_bytes(r[4..8].try_into().unwrap()),
            status: r[10],
            response: r[11],
            sense: r[12..].to_vec(),
            data: s.ram().read(self.data, in_len as usize).unwrap(),
        }
    }

    fn cmd_at(&self, s: &mut Session, addr: [u8; 8], cdb: &[u8], out: &[u8], in_len: u32) -> Reply {
        let head = self.post(s, addr, cdb, out, in_len);
        let used = s
            .queue(self.queue)
            .unwrap()
            .wait_used(WAIT)
            .expect("command completes");
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].head, head);
        self.collect(s, used[0].len, in_len)
    }

    fn cmd(&self, s: &mut Session, lun: u16, cdb: &[u8], out: &[u8], in_len: u32) -> Reply {
        self.cmd_at(s, lun_addr(lun), cdb, out, in_len)
    }
}

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0x28, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

fn write10(lba: u32, blocks: u16, fua: bool) -> Vec<u8> {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    if fua {
        c[1] = 0x08;
    }
    c
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn daemon(args: &[&str]) -> DaemonProcess {
    DaemonProcess::start(Path::new(BIN), args).expect("daemon starts")
}

fn session(d: &DaemonProcess) -> Session {
    let opts = Options {
        ram_size: 32 << 20,
        ..Options::default()
    };
    Session::start(&d.socket, &opts).expect("front end connects")
}

fn image(dir: &Path, name: &str, size: u64) -> String {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn inquiry_reports_a_direct_access_disk() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd(&mut s, 0, &[0x12, 0, 0, 0, 96, 0], &[], 96);

    assert_eq!((r.response, r.status), (0, 0));
    assert_eq!(r.data[0], 0x00, "peripheral device type");
    assert_eq!(&r.data[8..16], b"VHOSTDEV");
    assert_eq!(r.resid, 96 - 36);
}

#[test]
fn read_capacity_reports_size_and_block_size() {
    let d = daemon(&["--lun", "mem:8M,block-size=4096"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd(
        &mut s,
        0,
        &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
        32,
    );

    assert_eq!(r.status, 0);
    assert_eq!(
        u64::from_be_bytes(r.data[0..8].try_into().unwrap()),
        8 * 256 - 1
    );
    assert_eq!(u32::from_be_bytes(r.data[8..12].try_into().unwrap()), 4096);
}

#[test]
fn pattern_written_over_the_whole_lun_reads_back() {
    let d = daemon(&["--lun", "mem:4M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    let chunk = 64 * 1024;
    let blocks = (chunk / 512) as u16;
    for k in 0..(4 << 20) / chunk {
        let data = pattern(chunk, k as u8);
        let r = i.cmd(
            &mut s,
            0,
            &write10((k * chunk / 512) as u32, blocks, false),
            &data,
            0,
        );
        assert_eq!((r.response, r.status), (0, 0), "write {k}");
    }
    for k in 0..(4 << 20) / chunk {
        let r = i.cmd(
            &mut s,
            0,
            &read10((k * chunk / 512) as u32, blocks),
            &[],
            chunk as u32,
        );
        assert_eq!(r.status, 0);
        assert!(r.data == pattern(chunk, k as u8), "chunk {k} differs");
        assert_eq!(r.used, 108 + chunk as u32);
    }
}

#[test]
fn written_data_is_in_the_image_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 1 << 20);
    let d = daemon(&["--lun", &img]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    let data = pattern(8192, 3);

    let r = i.cmd(&mut s, 0, &write10(10, 16, true), &data, 0);

    assert_eq!(r.status, 0);
    let file = std::fs::read(&img).unwrap();
    assert!(file[10 * 512..10 * 512 + 8192] == data[..]);
}

#[test]
fn read_only_lun_refuses_writes_with_data_protect() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "ro.img", 1 << 20);
    let spec = format!("{img},ro");
    let d = daemon(&["--lun", &spec]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd(&mut s, 0, &write10(0, 1, false), &[0xaa; 512], 0);
    let mode = i.cmd(&mut s, 0, &[0x1a, 0, 0x3f, 0, 64, 0], &[], 64);

    assert_eq!(r.status, 2);
    assert_eq!(r.key_asc(), (0x07, 0x27));
    assert_eq!(mode.data[2] & 0x80, 0x80, "MODE SENSE write-protect bit");
    assert_eq!(std::fs::read(&img).unwrap()[0], 0);
}

#[test]
fn lba_past_the_end_is_out_of_range() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd(&mut s, 0, &read10(2047, 2), &[], 1024);

    assert_eq!(r.status, 2);
    assert_eq!(r.key_asc(), (0x05, 0x21));
    assert_eq!(r.sense_len, 18);
}

#[test]
fn unknown_opcode_is_an_invalid_command_operation_code() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd(&mut s, 0, &[0xc7, 0, 0, 0, 0, 0], &[], 0);

    assert_eq!(r.status, 2);
    assert_eq!(r.key_asc(), (0x05, 0x20));
}

#[test]
fn bad_target_is_reported() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd_at(
        &mut s,
        [1, 5, 0x40, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0, 0, 0],
        &[],
        0,
    );
    let r2 = i.cmd_at(&mut s, [0; 8], &[0, 0, 0, 0, 0, 0], &[], 0);

    assert_eq!(r.response, 3, "BAD_TARGET");
    assert_eq!(r2.response, 3, "BAD_TARGET");
}

#[test]
fn absent_lun_answers_inquiry_with_qualifier_3() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let inq = i.cmd(&mut s, 4, &[0x12, 0, 0, 0, 36, 0], &[], 36);
    let tur = i.cmd(&mut s, 4, &[0, 0, 0, 0, 0, 0], &[], 0);

    assert_eq!(inq.data[0], 0x7f);
    assert_eq!(tur.key_asc(), (0x05, 0x25));
}

#[test]
fn report_luns_lists_every_lun() {
    let d = daemon(&["--lun", "mem:1M", "--lun", "mem:2M", "--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd(
        &mut s,
        0,
        &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
        256,
    );

    assert_eq!(r.status, 0);
    assert_eq!(u32::from_be_bytes(r.data[0..4].try_into().unwrap()), 24);
    assert_eq!(r.data[8 + 8 + 1], 1);
    assert_eq!(r.data[8 + 16 + 1], 2);
}

#[test]
fn short_buffers_are_answered_and_the_queue_keeps_serving() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    // Response buffer of 10 bytes: cannot hold the 108-byte response.
    s.ram().write(i.req, &[1, 0, 0x40, 0]).unwrap();
    let vq = s.queue(2).unwrap();
    vq.add(&Chain::new().readable(i.req, 51).writable(i.resp, 10))
        .unwrap();
    // Request shorter than its header.
    vq.add(&Chain::new().readable(i.req, 5).writable(i.resp, 108))
        .unwrap();
    // No device-readable part at all.
    vq.add(&Chain::new().writable(i.resp, 108)).unwrap();
    vq.kick().unwrap();
    let mut used = Vec::new();
    while used.len() < 3 {
        used.extend(vq.wait_used(WAIT).unwrap());
    }
    assert!(used.iter().all(|u| u.len == 0), "{used:?}");

    let r = i.cmd(&mut s, 0, &[0, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!((r.response, r.status), (0, 0));
}

#[test]
fn data_in_buffer_too_small_for_a_read_is_an_overrun() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd(&mut s, 0, &read10(0, 8), &[], 1024);

    assert_eq!(r.response, 1, "OVERRUN");
}

/// A short command on one queue completes while a long run of 32 MiB READs
/// (about 0.5 GiB) is still going on another: the queues do not wait for
/// each other.
#[test]
fn several_queues_serve_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _img) = long_read_daemon(dir.path());
    let mut s = big_session(&d);
    let short = Initiator::new(&s, 2);
    let data = s.ram().alloc(32 << 20, 4096).unwrap();
    let long: Vec<u16> = (1..16)
        .map(|tag| post_long_read(&mut s, tag, data))
        .collect();
    let deadline = std::time::Instant::now() + WAIT;
    while s.ram().read(data, 1).unwrap()[0] != 0x5a {
        assert!(
            std::time::Instant::now() < deadline,
            "the reads never started"
        );
        std::thread::yield_now();
    }

    let r = short.cmd(&mut s, 0, &read10(0, 8), &[], 4096);

    let long_done = s.queue(3).unwrap().take_used().unwrap();
    assert_eq!(r.status, 0);
    assert!(r.data.iter().all(|&b| b == 0x5a));
    assert!(
        long_done.len() < long.len(),
        "the short command waited for all the long READs: queues are serialised"
    );
    let mut used = long_done;
    while used.len() < long.len() {
        used.extend(s.queue(3).unwrap().wait_used(WAIT).unwrap());
    }
}

#[test]
fn unmap_punches_holes_in_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "thin.img", 4 << 20);
    let d = daemon(&["--lun", &img]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    let data = vec![0x5a; 1 << 20];
    assert_eq!(
        i.cmd(&mut s, 0, &write10(0, 2048, true), &data, 0).status,
        0
    );
    let before = std::fs::metadata(&img).unwrap().blocks();
    let mut params = vec![0u8, 22, 0, 16, 0, 0, 0, 0];
    params.extend_from_slice(&0u64.to_be_bytes());
    params.extend_from_slice(&2048u32.to_be_bytes());
    params.extend_from_slice(&[0; 4]);

    let r = i.cmd(&mut s, 0, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &params, 0);

    assert_eq!(r.status, 0);
    let after = std::fs::metadata(&img).unwrap().blocks();
    assert!(after + 1024 <= before, "blocks {before} -> {after}");
    let back = i.cmd(&mut s, 0, &read10(0, 8), &[], 4096);
    assert!(back.data.iter().all(|&b| b == 0));
}

#[test]
fn task_management_completes_and_notification_query_answers() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let req = s.ram().alloc(64, 8).unwrap();
    let resp = s.ram().alloc(64, 8).unwrap();
    let mut tmf = Vec::new();
    tmf.extend_from_slice(&0u32.to_le_bytes());
    tmf.extend_from_slice(&5u32.to_le_bytes()); // LOGICAL UNIT RESET
    tmf.extend_from_slice(&lun_addr(0));
    tmf.extend_from_slice(&0u64.to_le_bytes());
    s.ram().write(req, &tmf).unwrap();
    s.ram().write(resp, &[0xff]).unwrap();
    let vq = s.queue(0).unwrap();
    vq.add(&Chain::new().readable(req, 24).writable(resp, 1))
        .unwrap();
    vq.kick().unwrap();
    let used = vq.wait_used(WAIT).unwrap();
    assert_eq!(used[0].len, 1);
    assert_eq!(s.ram().read(resp, 1).unwrap()[0], 0, "FUNCTION COMPLETE");

    let mut an = Vec::new();
    an.extend_from_slice(&1u32.to_le_bytes());
    an.extend_from_slice(&lun_addr(0));
    an.extend_from_slice(&0xffu32.to_le_bytes());
    s.ram().write(req, &an).unwrap();
    let vq = s.queue(0).unwrap();
    vq.add(&Chain::new().readable(req, 16).writable(resp, 5))
        .unwrap();
    vq.kick().unwrap();
    let used = vq.wait_used(WAIT).unwrap();
    assert_eq!(used[0].len, 5);
    assert_eq!(s.ram().read(resp, 5).unwrap(), vec![0, 0, 0, 0, 0]);
}

#[test]
fn data_survives_a_front_end_reconnect() {
    let d = daemon(&["--lun", "mem:1M"]);
    let data = pattern(512, 9);
    {
        let mut s = session(&d);
        let i = Initiator::new(&s, 2);
        assert_eq!(i.cmd(&mut s, 0, &write10(5, 1, false), &data, 0).status, 0);
    }
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    let r = i.cmd(&mut s, 0, &read10(5, 1), &[], 512);
    assert!(r.data == data);
}

#[test]
fn config_space_reports_queues_and_honours_smaller_cdb_size() {
    let d = daemon(&["--lun", "mem:1M", "--num-queues", "2"]);
    let mut s = session(&d);
    let config = s.get_config(0, 36).unwrap();
    assert_eq!(u32::from_le_bytes(config[0..4].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(config[24..28].try_into().unwrap()), 32);

    let _ = s.set_config(24, &64u32.to_le_bytes());
    assert_eq!(
        u32::from_le_bytes(s.get_config(24, 4).unwrap()[..].try_into().unwrap()),
        32,
        "cdb_size 64 accepted"
    );
    s.set_config(24, &16u32.to_le_bytes()).unwrap();

    assert_eq!(
        u32::from_le_bytes(s.get_config(24, 4).unwrap()[..].try_into().unwrap()),
        16
    );
    // A request with a 16-byte CDB now works.
    let (req, resp) = (
        s.ram().alloc(64, 8).unwrap(),
        s.ram().alloc(128, 8).unwrap(),
    );
    let mut r = lun_addr(0).to_vec();
    r.extend_from_slice(&[0; 11]);
    r.extend_from_slice(&[0; 16]); // TEST UNIT READY
    s.ram().write(req, &r).unwrap();
    let vq = s.queue(2).unwrap();
    vq.add(&Chain::new().readable(req, 35).writable(resp, 108))
        .unwrap();
    vq.kick().unwrap();
    assert_eq!(vq.wait_used(WAIT).unwrap()[0].len, 108);
}

#[test]
fn image_size_not_a_multiple_of_the_block_size_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "odd.img", 1000);
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "s.sock", "--lun", &img]);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("exits");
    assert!(!status.success());
    assert!(
        d.stderr_text().contains("not a non-zero multiple"),
        "{}",
        d.stderr_text()
    );
}

#[test]
fn missing_image_is_a_startup_error_naming_it() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "s.sock", "--lun", "/nonexistent/disk.img"]);
    let mut d = DaemonProcess::spawn(cmd).unwrap();
    let status = d.wait_timeout(WAIT).unwrap().expect("exits");
    assert!(!status.success());
    assert!(
        d.stderr_text().contains("/nonexistent/disk.img"),
        "{}",
        d.stderr_text()
    );
}

/// Dirty and under-writeback pages of the page cache of `path`
/// (`cachestat`, Linux 6.5); `None` where the kernel lacks it.
fn unwritten_pages(path: &str) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let f = std::fs::File::open(path).unwrap();
    let range = Range { off: 0, len: 0 };
    let mut st = Stat::default();
    // SAFETY: cachestat reads `range` and writes `st`, both live and of the
    // kernel's layout; `f` is an open descriptor.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            &range as *const Range,
            &mut st as *mut Stat,
            0,
        )
    };
    (rc == 0).then_some(st.nr_dirty + st.nr_writeback)
}

/// SIGKILL does not drop the page cache, so data surviving a kill proves
/// nothing about the flush: the page cache itself must have no unwritten
/// pages of the image after SYNCHRONIZE CACHE (they were dirty before it).
#[test]
fn flushed_write_survives_the_daemon_being_killed() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = image(dir.path(), "k.img", 1 << 20);
    let mut d = daemon(&["--lun", &img]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    let data = pattern(4096, 77);
    assert_eq!(
        i.cmd(&mut s, 0, &write10(100, 8, false), &data, 0).status,
        0
    );
    let before = unwritten_pages(&img);

    let sync = i.cmd(&mut s, 0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0);

    assert_eq!(sync.status, 0);
    match (before, unwritten_pages(&img)) {
        (Some(before), Some(after)) => {
            assert!(before > 0, "the write left no dirty page: nothing to check");
            assert_eq!(after, 0, "SYNCHRONIZE CACHE left dirty pages");
        }
        _ => eprintln!("no cachestat on this kernel: flush not checked"),
    }
    d.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    d.wait_timeout(WAIT).unwrap().expect("killed");
    let file = std::fs::read(&img).unwrap();
    assert!(file[100 * 512..100 * 512 + 4096] == data[..]);
}

#[test]
fn fua_write_leaves_no_dirty_page() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = image(dir.path(), "fua.img", 1 << 20);
    let d = daemon(&["--lun", &img]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let r = i.cmd(&mut s, 0, &write10(8, 8, true), &pattern(4096, 1), 0);

    assert_eq!(r.status, 0);
    if let Some(n) = unwritten_pages(&img) {
        assert_eq!(n, 0, "FUA write completed before it was durable");
    }
}

/// A READ from an image file lands in guest memory through the kernel
/// (`preadv` or io_uring straight into the guest's pages), not through
/// vm-memory: with the dirty log on, those pages must still be logged, or a
/// migration would carry stale data.
#[test]
fn read_from_an_image_marks_its_data_pages_in_the_dirty_log() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = image(dir.path(), "log.img", 1 << 20);
    let d = daemon(&["--lun", &img]);
    let mut s = Session::start(
        &d.socket,
        &Options {
            ram_size: 32 << 20,
            dirty_log: true,
            ..Options::default()
        },
    )
    .unwrap();
    let i = Initiator::new(&s, 2);
    let page = |a: u64| a / 4096 * 4096;
    s.take_dirty_pages().unwrap();

    let r = i.cmd(&mut s, 0, &read10(0, 24), &[], 3 * 4096);

    assert_eq!(r.status, 0);
    let dirty = s.take_dirty_pages().unwrap();
    for p in [i.data, i.data + 4096, i.data + 8192, page(i.resp)] {
        assert!(dirty.contains(&p), "page {p:#x} not logged: {dirty:x?}");
    }
    assert!(!dirty.contains(&(i.data + 3 * 4096)), "{dirty:x?}");
}

#[test]
fn write_residual_counts_data_out_bytes_not_transferred() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let w = i.cmd(&mut s, 0, &write10(0, 1, false), &[1u8; 1536], 0);
    let r = i.cmd(&mut s, 0, &read10(0, 1), &[], 2048);

    assert_eq!((w.status, w.resid), (0, 1024));
    assert_eq!((r.status, r.resid), (0, 1536));
}

#[test]
fn write_with_too_little_data_out_is_an_overrun() {
    let d = daemon(&["--lun", "mem:1M"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);

    let w = i.cmd(&mut s, 0, &write10(0, 2, false), &[1u8; 512], 0);

    assert_eq!(w.response, 1, "OVERRUN");
}

/// Live migration runs a second daemon on the same image (the
/// destination's) while the first still serves the source: both start, but
/// only the one whose request rings run holds the image lock; the source
/// drops it when its rings stop (`GET_VRING_BASE`), the destination takes it
/// with its next command and sees everything the source wrote.
#[test]
fn two_daemons_serve_one_image_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 1 << 20);
    let (da, db) = (daemon(&["--lun", &img]), daemon(&["--lun", &img]));
    let (mut sa, mut sb) = (session(&da), session(&db));
    let (ia, ib) = (Initiator::new(&sa, 2), Initiator::new(&sb, 2));
    let (a, b) = (pattern(8192, 5), pattern(8192, 6));
    let r = ia.cmd(&mut sa, 0, &write10(100, 16, true), &a, 0);
    assert_eq!((r.response, r.status), (0, 0), "write through daemon A");
    let r = ib.cmd(&mut sb, 0, &read10(100, 16), &[], 8192);
    assert_eq!(r.key_asc(), (0x02, 0x04), "daemon B used a locked image");

    sa.stop_queue(2).unwrap();

    let r = ib.cmd(&mut sb, 0, &read10(100, 16), &[], 8192);
    assert_eq!((r.response, r.status), (0, 0), "read through daemon B");
    assert!(r.data == a, "daemon B does not see what daemon A wrote");
    let r = ib.cmd(&mut sb, 0, &write10(200, 16, true), &b, 0);
    assert_eq!((r.response, r.status), (0, 0), "write through daemon B");
    assert!(std::fs::read(&img).unwrap()[200 * 512..216 * 512] == b[..]);
}

#[test]
fn second_daemon_is_refused_an_image_another_daemon_writes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 1 << 20);
    let (da, db) = (daemon(&["--lun", &img]), daemon(&["--lun", &img]));
    let (mut sa, mut sb) = (session(&da), session(&db));
    let (ia, ib) = (Initiator::new(&sa, 2), Initiator::new(&sb, 2));
    assert_eq!(ia.cmd(&mut sa, 0, &[0; 6], &[], 0).status, 0);

    let r = ib.cmd(&mut sb, 0, &write10(0, 1, false), &[7; 512], 0);
    let inquiry = ib.cmd(&mut sb, 0, &[0x12, 0, 0, 0, 36, 0], &[], 36);

    assert_eq!(r.status, 2);
    assert_eq!(r.key_asc(), (0x02, 0x04), "NOT READY");
    assert_eq!(std::fs::read(&img).unwrap()[0], 0);
    assert_eq!(inquiry.status, 0, "identification still works");
    assert!(
        db.stderr_text().contains("in use by another process"),
        "{}",
        db.stderr_text()
    );
}

#[test]
fn read_only_luns_of_two_daemons_share_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 1 << 20);
    let spec = format!("{img},ro");
    let (da, db) = (daemon(&["--lun", &spec]), daemon(&["--lun", &spec]));
    let (mut sa, mut sb) = (session(&da), session(&db));
    let (ia, ib) = (Initiator::new(&sa, 2), Initiator::new(&sb, 2));

    let ra = ia.cmd(&mut sa, 0, &read10(0, 1), &[], 512);
    let rb = ib.cmd(&mut sb, 0, &read10(0, 1), &[], 512);

    assert_eq!((ra.status, rb.status), (0, 0));
}

/// The daemon takes QEMU's lock bytes, so QEMU's tools see it.
#[test]
fn qemu_io_sees_the_image_locked_while_the_rings_run() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        eprintln!("skipped: no qemu-io");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 1 << 20);
    let d = daemon(&["--lun", &img]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    assert_eq!(i.cmd(&mut s, 0, &[0; 6], &[], 0).status, 0);

    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 512", &img])
        .output()
        .unwrap();

    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lock"),
        "qemu-io wrote to a locked image: {text}"
    );
    assert_eq!(std::fs::read(&img).unwrap()[0], 0);
}

/// A loop device with 4 KiB logical blocks over `file`, detached on drop;
/// `None` where loop devices cannot be set up (not root, no loop driver).
struct LoopDevice {
    path: String,
}

impl LoopDevice {
    fn with_4k_blocks(file: &str) -> Option<Self> {
        let out = Command::new("losetup")
            .args(["--sector-size", "4096", "--find", "--show", file])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Self {
            path: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
    }
}

#[test]
fn direct_lun_with_smaller_blocks_than_the_host_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "4k.img", 1 << 20);
    let Some(dev) = LoopDevice::with_4k_blocks(&img) else {
        return;
    };
    let spec = format!("{},block-size=512,direct", dev.path);
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket-path", "s.sock", "--lun", &spec]);

    let mut d = DaemonProcess::spawn(cmd).unwrap();

    let status = d.wait_timeout(WAIT).unwrap().expect("daemon exits");
    assert!(!status.success());
    assert!(
        d.stderr_text().contains("aligned to 4096 bytes"),
        "{}",
        d.stderr_text()
    );
}

#[test]
fn direct_lun_on_a_host_with_4k_blocks_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "4k.img", 1 << 20);
    let Some(dev) = LoopDevice::with_4k_blocks(&img) else {
        return;
    };
    let spec = format!("{},block-size=4096,direct", dev.path);
    let d = daemon(&["--lun", &spec]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    let data = pattern(8192, 11);

    let w = i.cmd(&mut s, 0, &write10(3, 2, true), &data, 0);
    let r = i.cmd(&mut s, 0, &read10(3, 2), &[], 8192);

    assert_eq!((w.response, w.status), (0, 0), "{:?}", w.key_asc());
    assert_eq!((r.response, r.status), (0, 0), "{:?}", r.key_asc());
    assert!(r.data == data);
}

/// Post a TMF on the control queue; returns its response once answered.
fn tmf(s: &mut Session, subtype: u32, lun: u16, tag: u64) -> u8 {
    let req = s.ram().alloc(64, 8).unwrap();
    let resp = s.ram().alloc(64, 8).unwrap();
    let mut t = Vec::new();
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&subtype.to_le_bytes());
    t.extend_from_slice(&lun_addr(lun));
    t.extend_from_slice(&tag.to_le_bytes());
    s.ram().write(req, &t).unwrap();
    s.ram().write(resp, &[0xff]).unwrap();
    let vq = s.queue(0).unwrap();
    vq.add(&Chain::new().readable(req, 24).writable(resp, 1))
        .unwrap();
    vq.kick().unwrap();
    let used = vq.wait_used(WAIT).unwrap();
    assert_eq!(used[0].len, 1);
    s.ram().read(resp, 1).unwrap()[0]
}

/// A READ of 32 MiB on request queue 1 (the daemon's queue 3), in flight:
/// returns its head once its first bytes are in guest memory.
fn start_long_read(s: &mut Session, tag: u64) -> u16 {
    let (head, data) = long_read(s, tag, None);
    let deadline = std::time::Instant::now() + WAIT;
    while s.ram().read(data, 1).unwrap()[0] != 0x5a {
        assert!(
            std::time::Instant::now() < deadline,
            "the read never started"
        );
        std::thread::yield_now();
    }
    head
}

/// Another READ like [`start_long_read`]'s into the same `data` buffer,
/// without waiting.
fn post_long_read(s: &mut Session, tag: u64, data: u64) -> u16 {
    long_read(s, tag, Some(data)).0
}

/// Post a 32 MiB READ on queue 3 into `data` (or a new buffer); returns its
/// head and data address.
fn long_read(s: &mut Session, tag: u64, data: Option<u64>) -> (u16, u64) {
    let len: u32 = 32 << 20;
    let (req, resp) = (
        s.ram().alloc(64, 8).unwrap(),
        s.ram().alloc(128, 8).unwrap(),
    );
    let data = data.unwrap_or_else(|| s.ram().alloc(u64::from(len), 4096).unwrap());
    let mut r = lun_addr(0).to_vec();
    r.extend_from_slice(&tag.to_le_bytes());
    r.extend_from_slice(&[0, 0, 0]);
    let mut cdb = [0u8; 32];
    cdb[0] = 0x88; // READ(16) of the whole 32 MiB
    cdb[10..14].copy_from_slice(&(len / 512).to_be_bytes());
    r.extend_from_slice(&cdb);
    s.ram().write(req, &r).unwrap();
    let vq = s.queue(3).unwrap();
    let head = vq
        .add(
            &Chain::new()
                .readable(req, 51)
                .writable(resp, 108)
                .writable(data, len),
        )
        .unwrap();
    vq.kick().unwrap();
    (head, data)
}

fn long_read_daemon(dir: &Path) -> (DaemonProcess, String) {
    long_read_daemon_with(dir, "io_uring")
}

fn long_read_daemon_with(dir: &Path, engine: &str) -> (DaemonProcess, String) {
    long_read_daemon_spec(dir, engine, "")
}

/// The image gets `options` (`,direct`, say) on its `--lun`.
fn long_read_daemon_spec(dir: &Path, engine: &str, options: &str) -> (DaemonProcess, String) {
    let img = dir.join("big.img");
    std::fs::write(&img, vec![0x5au8; 32 << 20]).unwrap();
    let img = img.to_str().unwrap().to_string();
    let spec = format!("{img}{options}");
    let d = daemon(&[
        "--lun",
        &spec,
        "--num-queues",
        "2",
        "--max-sectors",
        "65536",
        "--engine",
        engine,
    ]);
    (d, img)
}

fn big_session(d: &DaemonProcess) -> Session {
    let opts = Options {
        ram_size: 96 << 20,
        ..Options::default()
    };
    Session::start(&d.socket, &opts).unwrap()
}

#[test]
fn lun_reset_is_answered_only_after_the_commands_in_flight_on_other_queues() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _img) = long_read_daemon(dir.path());
    let mut s = big_session(&d);
    let head = start_long_read(&mut s, 42);

    let response = tmf(&mut s, 5, 0, 0); // LOGICAL UNIT RESET

    let done = s.queue(3).unwrap().take_used().unwrap();
    assert_eq!(response, 0, "FUNCTION COMPLETE");
    assert!(
        done.iter().any(|u| u.head == head),
        "LUN reset answered while its READ was still running"
    );
}

#[test]
fn lun_reset_waits_for_the_command_in_flight_with_the_sync_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _img) = long_read_daemon_with(dir.path(), "sync");
    let mut s = big_session(&d);
    let head = start_long_read(&mut s, 42);

    let response = tmf(&mut s, 5, 0, 0);

    let done = s.queue(3).unwrap().take_used().unwrap();
    assert_eq!(response, 0, "FUNCTION COMPLETE");
    assert!(done.iter().any(|u| u.head == head));
}

/// Live migration: GET_VRING_BASE is answered only once every request taken
/// off the ring is on the used ring (QEMU moves no in-flight requests).
fn stopping_a_queue_completes_the_io_in_flight(engine: &str) {
    // On the disk with O_DIRECT, so that the READ is really in flight (a
    // read from the page cache completes inside its submission).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (d, _img) = long_read_daemon_spec(dir.path(), engine, ",direct");
    let mut s = big_session(&d);
    let head = start_long_read(&mut s, 9);

    let next_avail = s.stop_queue(3).unwrap();

    let done = s.queue(3).unwrap().take_used().unwrap();
    assert_eq!(next_avail, 1);
    assert!(
        done.iter()
            .any(|u| u.head == head && u.len == 108 + (32 << 20)),
        "GET_VRING_BASE answered with the READ still in flight: {done:?}"
    );
}

/// Adaptive polling with I/O that completes later: io_uring on the disk
/// with O_DIRECT, so every READ completes through the worker's epoll and
/// `host_event`. A driver that kicks only when asked (no EVENT_IDX, so only
/// a polling worker ever asks it not to) reads one block at a time.
#[test]
fn polling_worker_serves_direct_reads_completed_through_its_epoll() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = dir.path().join("disk.img");
    let content = pattern(4 << 20, 3);
    std::fs::write(&img, &content).unwrap();
    let spec = format!("{},direct", img.to_str().unwrap());
    let d = daemon(&["--lun", &spec, "--poll-us", "1000"]);
    let opts = Options {
        ram_size: 32 << 20,
        accept_features: !(1 << 29), // VIRTIO_RING_F_EVENT_IDX
        ..Options::default()
    };
    let mut s = Session::start(&d.socket, &opts).unwrap();
    let i = Initiator::new(&s, 2);
    let mut skipped = 0;

    for k in 0..300u32 {
        let lba = (k * 97) % 8000;
        let old = s.queue(2).unwrap().avail_index();
        let head = i.add(&mut s, lun_addr(0), &read10(lba, 8), &[], 4096);
        if !s.queue(2).unwrap().kick_if_needed(old).unwrap() {
            skipped += 1;
        }
        let used = s.queue(2).unwrap().wait_used(WAIT).expect("READ answered");
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].head, head);
        let r = i.collect(&mut s, used[0].len, 4096);
        assert_eq!(r.status, 0, "READ at {lba}");
        let at = lba as usize * 512;
        assert!(r.data == content[at..at + 4096], "wrong data at LBA {lba}");
    }

    assert!(skipped > 0, "every READ of 300 needed a kick");
}

#[test]
fn stopping_a_queue_completes_the_io_in_flight_on_io_uring() {
    stopping_a_queue_completes_the_io_in_flight("io_uring");
}

#[test]
fn stopping_a_queue_completes_the_io_in_flight_with_the_sync_engine() {
    stopping_a_queue_completes_the_io_in_flight("sync");
}

#[test]
fn sync_engine_reads_and_writes_an_image_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img", 1 << 20);
    let d = daemon(&["--lun", &img, "--engine", "sync"]);
    let mut s = session(&d);
    let i = Initiator::new(&s, 2);
    let data = pattern(65536, 4);

    let w = i.cmd(&mut s, 0, &write10(64, 128, true), &data, 0);
    let r = i.cmd(&mut s, 0, &read10(64, 128), &[], 65536);

    assert_eq!((w.status, r.status), (0, 0));
    assert!(r.data == data);
    assert!(std::fs::read(&img).unwrap()[64 * 512..64 * 512 + 65536] == data[..]);
}

#[test]
fn many_commands_in_flight_on_one_queue_all_complete_with_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let content: Vec<u8> = (0..(4u32 << 20) / 4)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    std::fs::write(&img, &content).unwrap();
    let d = daemon(&["--lun", img.to_str().unwrap()]);
    let mut s = session(&d);
    let n = 64u64;
    let (reqs, resps, datas) = (
        s.ram().alloc(64 * n, 64).unwrap(),
        s.ram().alloc(128 * n, 64).unwrap(),
        s.ram().alloc(4096 * n, 4096).unwrap(),
    );
    let vq_heads: Vec<u16> = (0..n)
        .map(|k| {
            let mut r = lun_addr(0).to_vec();
            r.extend_from_slice(&k.to_le_bytes());
            r.extend_from_slice(&[0, 0, 0]);
            let mut c = [0u8; 32];
            c[..10].copy_from_slice(&read10((k * 97 % 1000) as u32 * 8, 8));
            r.extend_from_slice(&c);
            s.ram().write(reqs + 64 * k, &r).unwrap();
            s.queue(2)
                .unwrap()
                .add(
                    &Chain::new()
                        .readable(reqs + 64 * k, 51)
                        .writable(resps + 128 * k, 108)
                        .writable(datas + 4096 * k, 4096),
                )
                .unwrap()
        })
        .collect();
    s.queue(2).unwrap().kick().unwrap();

    let mut used = Vec::new();
    while used.len() < n as usize {
        used.extend(s.queue(2).unwrap().wait_used(WAIT).unwrap());
    }

    for (k, head) in vq_heads.iter().enumerate() {
        let u = used.iter().find(|u| u.head == *head).unwrap();
        assert_eq!(u.len, 108 + 4096);
        let at = (k as u64 * 97 % 1000) as usize * 4096;
        let data = s.ram().read(datas + 4096 * k as u64, 4096).unwrap();
        assert!(data == content[at..at + 4096], "command {k}");
    }
}

#[test]
fn abort_task_is_answered_only_after_the_task_completed() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _img) = long_read_daemon(dir.path());
    let mut s = big_session(&d);
    let head = start_long_read(&mut s, 77);

    let response = tmf(&mut s, 0, 0, 77); // ABORT TASK

    let done = s.queue(3).unwrap().take_used().unwrap();
    assert_eq!(response, 0, "FUNCTION COMPLETE");
    assert!(
        done.iter().any(|u| u.head == head),
        "ABORT TASK answered while the task was still running"
    );
}

#[test]
fn query_task_set_with_nothing_in_flight_is_function_complete() {
    let d = daemon(&["--lun", "mem:1M", "--num-queues", "2"]);
    let mut s = session(&d);

    let response = tmf(&mut s, 7, 0, 0); // QUERY TASK SET

    assert_eq!(response, 0, "FUNCTION COMPLETE");
}

/// After I/O through the ring (a disk image with O_DIRECT) and the page
/// cache, the idle daemon sleeps: nothing spins on the ring's eventfd.
#[test]
fn idle_daemon_uses_no_cpu_after_io_on_the_ring() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let spec = format!("{},direct", image(dir.path(), "direct.img", 1 << 20));
    let cached = image(dir.path(), "cached.img", 1 << 20);
    let d = daemon(&["--lun", &spec, "--lun", &cached, "--num-queues", "2"]);
    let mut s = session(&d);
    for q in [2, 3] {
        let i = Initiator::new(&s, q);
        for lun in [0, 1] {
            let w = i.cmd(&mut s, lun, &write10(8, 8, true), &pattern(4096, 1), 0);
            let r = i.cmd(&mut s, lun, &read10(8, 8), &[], 4096);
            assert_eq!((w.status, r.status), (0, 0));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = d.cpu_ticks().unwrap();

    std::thread::sleep(Duration::from_millis(1500));

    let spent = d.cpu_ticks().unwrap() - before;
    assert!(spent <= 2, "idle daemon used {spent} ticks in 1.5 s");
}
